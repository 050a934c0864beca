"""The layout of the breaker segment ``/bot4.<instance>.breakers`` (:mod:`bot4.shm.breakers`):
word offsets, field masks, states and tickets, shared by the Python side and the numba ops
(:mod:`bot4.shm.breaker_ops`).

Layout (little-endian u64 words; ``count`` breakers, breaker ``i``)::

    byte                    word               owner      field
    0                       0..3               creator    magic "BOT4BRKR", layout version,
                                                          count, created ns
    128 + 128*i             16*(1+i)           creator    config row of breaker i, read-only:
      +0 .. +8                                            min_calls, open_failure_pct,
                                                          close_failure_pct, cooldown_ns,
                                                          max_probes, probe_window,
                                                          bucket_ns, buckets, probe_timeout_ns
      +96 (words +12..+15)                                name, ASCII, NUL padded (32 bytes)
    128*(1+count+i)         16*(1+count+i)     any (CAS)  state block of breaker i:
      line 0  +0                                          state word: state (byte 0),
                                                          flags (byte 1: FORCED), epoch (bits 16..62)
              +1                                          opened_at ns        (CAS max)
              +2                                          half_open_at ns     (CAS max)
              +3                                          probe word: failures (bits 32..47),
                                                          results (16..31), in flight (0..15),
                                                          episode tag (48..62)
              +4                                          probe outcome bits: bit k = probe k
                                                          of the episode failed
              +5                                          last probe activity ns (CAS max)
              +6, +7                                      trips, calls denied (CAS counters)
      line 1  +8 .. +15                                   rolling window, one word per bucket:
                                                          slot tag (bits 40..62), failures
                                                          (20..39), calls (0..19)
"""

MAGIC = int.from_bytes(b"BOT4BRKR", "little")
LAYOUT_VERSION = 1
BREAKERS_SEGMENT = "breakers"
HEADER_BYTES = 128
BLOCK_BYTES = 128
BLOCK_WORDS = BLOCK_BYTES // 8

W_MAGIC, W_VERSION, W_COUNT, W_CREATED_NS = range(4)

# config row, words from 16 * (1 + i)
C_MIN_CALLS = 0
C_OPEN_PCT = 1
C_CLOSE_PCT = 2
C_COOLDOWN_NS = 3
C_MAX_PROBES = 4
C_PROBE_WINDOW = 5
C_BUCKET_NS = 6
C_BUCKETS = 7
C_PROBE_TIMEOUT_NS = 8
C_NAME = 12
NAME_BYTES = 32

# state block, words from 16 * (1 + count + i)
B_STATE = 0
B_OPENED_NS = 1
B_HALF_OPEN_NS = 2
B_PROBES = 3
B_PROBE_BITS = 4
B_PROBE_ACTIVITY_NS = 5
B_TRIPS = 6
B_DENIED = 7
B_BUCKETS = 8
MAX_BUCKETS = 8
MAX_PROBE_WINDOW = 64

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half-open"}
F_FORCED = 1  # flags byte: opened by an operator, stays open until reset

STATE_MASK = 0xFF
FLAGS_SHIFT = 8
EPOCH_SHIFT = 16
M16 = 0xFFFF
PTAG_SHIFT = 48
PTAG_MASK = 0x7FFF
CNT_MASK = (1 << 20) - 1
FAIL_SHIFT = 20
TAG_SHIFT = 40
TAG_MASK = (1 << 23) - 1

# tickets from breaker_enter: (epoch << 2) | kind; 0 = refused
T_CLOSED = 1
T_PROBE = 2
TICKET_ANY = 3  # breaker_record: judge the result by the state when it arrives
