"""Byte layout of an SPSC ring segment, computed once. All words are little-endian u64.

::

    byte   word  owner      field
    0      0     creator    magic "BOT4RING"
    8      1     creator    layout version
    16     2     creator    dtype fingerprint of the slot record
    24     3     creator    capacity (slots, power of two)
    32     4     creator    slot size (bytes)
    40     5     creator    wait strategy (WAIT_*)
    48     6     creator    backpressure policy (BP_*)
    56     7     creator    created at (ns, CLOCK_MONOTONIC)
    64     8     creator    initial position (positions start here; any u64)
    72     9     creator    record type id (bot4.records)
    128    16    producer   producer position    -- alone on a 128-byte line pair
    256    32    consumer   consumer position    -- alone on a 128-byte line pair
    384    48    producer   pid, (reserved x2), full waits, rejections, heartbeat ns,
                            cached consumer position, high-water depth (words 48..55)
    448    56    producer   own position, batches   (a 16-byte pair: words 56..57)
    512    64    consumer   pid, (reserved), batches, empty waits, high-water depth,
                            heartbeat ns, cached producer position (words 64..70)
    640    80    producer   data signal (futex word), producer parked flag (words 80..81)
    768    96    consumer   space signal (futex word), consumer parked flag (words 96..97)
    1024   -     producer   slots: capacity x slot size; slot i holds position p with
                            p & (capacity - 1) == i

Positions are u64 counters that only grow, compared only by difference (wrapping
arithmetic: crossing 2^63 or 2^64 is harmless). ``producer - consumer`` is the depth, in
[0, capacity]. Each owner writes only its own lines, so neither side's writes invalidate a
line the other side polls, except the one position it must read.

The producer keeps its own copy of its position next to its batch count, on a line the
consumer never reads, and publishes the position with one release store per commit: claims
read the copy, so the producer never loads the line the consumer polls while it waits for
data (loading it cost single-record streaming a quarter of its rate), and a commit is two
stores (the pair, with one 16-byte store, and the published position). The copy equals the
published position except inside a commit; the producer re-reads it from the published
position when it attaches (``ring.Producer``), so a producer killed mid-commit, or a
segment an earlier build wrote, resumes from what was published. The consumer's line is
polled by the producer only while the ring is full: the consumer reads and publishes its
position directly.

Records produced and consumed are not stored: they are ``position - initial position``
(``stats``). Words 49, 50 and 65 held per-commit records and batch counters in earlier
builds; they are reserved (never written, never read).
"""

from __future__ import annotations

MAGIC = int.from_bytes(b"BOT4RING", "little")
LAYOUT_VERSION = 1
HEADER_BYTES = 1024
HEADER_WORDS = HEADER_BYTES // 8

# identity (written once by the creator)
W_MAGIC = 0
W_VERSION = 1
W_FINGERPRINT = 2
W_CAPACITY = 3
W_SLOT_SIZE = 4
W_WAIT = 5
W_BACKPRESSURE = 6
W_CREATED_NS = 7
W_INITIAL_POSITION = 8
W_RECORD_TYPE = 9

# positions
W_PRODUCER_POSITION = 16
W_CONSUMER_POSITION = 32

# producer-owned counters
W_PRODUCER_PID = 48
# words 49, 50: reserved (records and batches of earlier builds; records = position - initial)
W_PRODUCER_FULL_WAITS = 51
W_PRODUCER_REJECTIONS = 52
W_PRODUCER_HEARTBEAT_NS = 53
W_PRODUCER_CACHED_CONSUMER = 54
# the depth the producer saw when it found the ring full (or rejected): stored only on that
# slow path, never per commit; readers show max(this, the consumer's high-water, depth)
W_PRODUCER_HIGH_WATER = 55
W_PRODUCER_OWN_POSITION = 56  # the producer's copy of its position (16-byte aligned pair)
W_PRODUCER_BATCHES = 57  # commits, counted with the own position in one store

# consumer-owned counters
W_CONSUMER_PID = 64
# word 65: reserved (records counter of earlier builds; records = position - initial)
W_CONSUMER_BATCHES = 66  # releases, counted by consumer_release
W_CONSUMER_EMPTY_WAITS = 67
W_CONSUMER_HIGH_WATER = 68
W_CONSUMER_HEARTBEAT_NS = 69
W_CONSUMER_CACHED_PRODUCER = 70

# parking (futex words: the waiter sleeps on the word the *other* side bumps)
W_DATA_SIGNAL = 80  # producer bumps after publishing while the consumer is parked
W_PRODUCER_PARKED = 81
W_SPACE_SIGNAL = 96  # consumer bumps after releasing while the producer is parked
W_CONSUMER_PARKED = 97

WAIT_BUSY_SPIN = 0
WAIT_SPIN_YIELD = 1
WAIT_SPIN_PARK = 2
WAIT_NAMES = {"busy-spin": WAIT_BUSY_SPIN, "yield": WAIT_SPIN_YIELD, "park": WAIT_SPIN_PARK}

BP_BLOCK = 0
BP_REJECT = 1
BACKPRESSURE_NAMES = {"block": BP_BLOCK, "reject": BP_REJECT}

SLOT_ALIGN = 64


def segment_bytes(capacity: int, slot_size: int) -> int:
    """Total bytes of a ring segment of ``capacity`` slots of ``slot_size`` bytes."""
    return HEADER_BYTES + capacity * slot_size


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0
