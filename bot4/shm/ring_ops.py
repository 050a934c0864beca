"""The SPSC ring's hot path as numba functions, callable from kernels and from Python.

A ring is handed to numba as two arrays over one segment: ``hdr``, the header as a 1-D
``uint64`` array (words in ``ring_layout``), and ``slots``, the structured array of
``capacity`` records. Every function here is ``nogil`` and allocation-free.

Protocol (claim, then publish — a half-written slot is never visible):

* producer: ``producer_claim(hdr, n)`` -> ``(position, count)``, ``count`` in [0, n] free
  slots starting at ``slots[position & mask]``, never crossing the wrap point (a second
  claim continues at index 0); write them; ``producer_commit(hdr, count)`` publishes them
  with one release store. ``producer_room(hdr, n)`` counts free slots across the wrap, for
  a producer that must place a group of records that does not fit before it.
* consumer: ``consumer_peek(hdr, n)`` -> ``(position, count)`` readable slots, same rules;
  read them; ``consumer_release(hdr, count)`` hands them back with one release store.

Each side caches the other's position in its own counter line and reloads it (acquire)
only when the cached value says it cannot proceed. All arithmetic on positions is u64 and
by difference, so positions may start anywhere, including just below 2^64. Positions more
than ``capacity`` apart can only come from a damaged segment: a claim then finds no room
and a peek no records (nothing is overwritten, no phantom record is read), and while the
damage lasts the stage's housekeeping stops it with ``RING_POSITIONS_CORRUPT``.

The producer reads its position from its own copy (``W_PRODUCER_OWN_POSITION``), never
from the published word the consumer polls, and a commit is two stores: the own position
and the batch count together (``add_pair``, one 16-byte store) and the published position
(release). The consumer, whose position line the producer reads only when the ring is
full, reads and publishes its position as before and counts its batch in its own line. No
records counter (records are the position's distance from the initial position, which
``stats`` computes). On parking rings only, a full fence and a load of the other side's
``parked`` word (``wake_consumer``). In the like-for-like race against a bare SPSC ring
(``perf/ringrace.py``) single-record streaming runs at about the reference's rate; each
extra load of the polled line or extra producer store per commit cost a visible share of
it (see ``ring_layout``). Nothing here may make numba reference-count
``hdr``: an incref/decref pair is a ``lock``-prefixed instruction, a full barrier that waits
for every pending slot store to reach the other core, once per call. Numba prunes the pair
only when the array's last use is on every path, so ``producer_claim``, ``producer_room``
and ``consumer_peek`` read ``hdr`` once more after their slow-path branch (inspect a
caller's assembly for ``NRT_incref`` after editing them: ``perf/ringrace.py --asm``).

A caller that commits many times before it idles (a compiled duty cycle) may publish with
``producer_commit_nowake`` / ``consumer_release_nowake`` and call ``wake_consumer`` /
``wake_producer`` once per ring before it idles, waits or returns: one fence per cycle
instead of one per commit. A sleeper is then woken at most one cycle late, never lost,
provided the caller always makes that call before it stops publishing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit.hot import hot
from bot4.shm.atomics import (
    add_pair,
    compare_exchange,
    fence_seq_cst,
    futex_wake,
    load_acquire,
    load_relaxed,
    monotonic_ns,
    store_relaxed,
    store_release,
)
from bot4.shm.ring_layout import (
    W_CAPACITY,
    W_CONSUMER_BATCHES,
    W_CONSUMER_CACHED_PRODUCER,
    W_CONSUMER_EMPTY_WAITS,
    W_CONSUMER_HEARTBEAT_NS,
    W_CONSUMER_HIGH_WATER,
    W_CONSUMER_PARKED,
    W_CONSUMER_POSITION,
    W_DATA_SIGNAL,
    W_PRODUCER_CACHED_CONSUMER,
    W_PRODUCER_FULL_WAITS,
    W_PRODUCER_HEARTBEAT_NS,
    W_PRODUCER_HIGH_WATER,
    W_PRODUCER_OWN_POSITION,
    W_PRODUCER_PARKED,
    W_PRODUCER_POSITION,
    W_PRODUCER_REJECTIONS,
    W_SPACE_SIGNAL,
    W_WAIT,
    WAIT_SPIN_PARK,
)
from bot4.shm.wait import idle_consumer, idle_producer

_ONE = np.uint64(1)


@hot
def producer_claim(hdr, n):
    """Up to ``n`` free contiguous slots: ``(position, count)``; count 0 when full."""
    pos = hdr[W_PRODUCER_OWN_POSITION]
    want = np.uint64(n)
    cons = hdr[W_PRODUCER_CACHED_CONSUMER]
    if hdr[W_CAPACITY] - (pos - cons) < want:
        fresh = load_acquire(hdr, W_CONSUMER_POSITION)
        if pos - fresh <= hdr[W_CAPACITY]:  # a damaged word is never acted on (no room)
            cons = fresh
            store_relaxed(hdr, W_PRODUCER_CACHED_CONSUMER, cons)
    cap = hdr[W_CAPACITY]  # a use of hdr after the branch: see the module docstring
    to_wrap = cap - (pos & (cap - _ONE))
    return pos, np.int64(min(want, cap - (pos - cons), to_wrap))


@hot
def producer_room(hdr, n):
    """Up to ``n`` free slots *across* the wrap: ``(position, count)``; count 0 when full.

    For a producer that needs more slots than remain before the wrap point (a stage
    emitting several records per input): it writes ``count`` slots starting at
    ``slots[position & mask]`` and continuing at index 0 (``Producer.write_wrapped``),
    then publishes them with one ``producer_commit``.
    """
    pos = hdr[W_PRODUCER_OWN_POSITION]
    want = np.uint64(n)
    cons = hdr[W_PRODUCER_CACHED_CONSUMER]
    if hdr[W_CAPACITY] - (pos - cons) < want:
        fresh = load_acquire(hdr, W_CONSUMER_POSITION)
        if pos - fresh <= hdr[W_CAPACITY]:  # a damaged word is never acted on (no room)
            cons = fresh
            store_relaxed(hdr, W_PRODUCER_CACHED_CONSUMER, cons)
    cap = hdr[W_CAPACITY]  # a use of hdr after the branch: see the module docstring
    return pos, np.int64(min(want, cap - (pos - cons)))


@hot
def producer_commit_nowake(hdr, count):
    """Publish ``count`` claimed slots (release store) and count the batch; never wakes.
    The own position and the batch count move first (one store), then the published one.

    The caller calls ``wake_consumer`` before it idles (see the module docstring)."""
    store_release(hdr, W_PRODUCER_POSITION, add_pair(hdr, W_PRODUCER_OWN_POSITION, count, _ONE))


@njit(nogil=True, cache=True)
def producer_commit(hdr, count):
    """Publish ``count`` claimed slots (release store); wakes a parked consumer."""
    producer_commit_nowake(hdr, count)
    if hdr[W_WAIT] == WAIT_SPIN_PARK:
        wake_consumer(hdr)


@hot
def wake_consumer(hdr):
    """After publishing: wake the consumer if it sleeps (parking rings). The fence orders
    the position store before the load of the parked flag (see ``wait``)."""
    fence_seq_cst()
    if load_acquire(hdr, W_CONSUMER_PARKED) != 0:
        store_release(hdr, W_DATA_SIGNAL, hdr[W_DATA_SIGNAL] + _ONE)
        futex_wake(hdr, W_DATA_SIGNAL, 1)


@hot
def consumer_peek(hdr, n):
    """Up to ``n`` readable contiguous slots: ``(position, count)``; count 0 when empty."""
    pos = load_relaxed(hdr, W_CONSUMER_POSITION)
    want = np.uint64(n)
    prod = hdr[W_CONSUMER_CACHED_PRODUCER]
    if prod - pos < want:
        fresh = load_acquire(hdr, W_PRODUCER_POSITION)
        if fresh - pos <= hdr[W_CAPACITY]:  # a damaged word is never cached nor acted on
            prod = fresh
            store_relaxed(hdr, W_CONSUMER_CACHED_PRODUCER, prod)
            if prod - pos > hdr[W_CONSUMER_HIGH_WATER]:
                store_relaxed(hdr, W_CONSUMER_HIGH_WATER, prod - pos)
    cap = hdr[W_CAPACITY]  # a use of hdr after the branch: see the module docstring
    avail = prod - pos
    if avail > cap:  # this side's own word damaged: no phantom records, ever
        avail = np.uint64(0)
    to_wrap = cap - (pos & (cap - _ONE))
    return pos, np.int64(min(want, avail, to_wrap))


@hot
def consumer_release_nowake(hdr, count):
    """Hand ``count`` read slots back (release store) and count the batch; never wakes.

    The caller calls ``wake_producer`` before it idles (see the module docstring)."""
    pos = load_relaxed(hdr, W_CONSUMER_POSITION) + np.uint64(count)
    store_release(hdr, W_CONSUMER_POSITION, pos)
    store_relaxed(hdr, W_CONSUMER_BATCHES, hdr[W_CONSUMER_BATCHES] + _ONE)


@njit(nogil=True, cache=True)
def consumer_release(hdr, count):
    """Hand ``count`` read slots back to the producer (release store); wakes a parked producer."""
    consumer_release_nowake(hdr, count)
    if hdr[W_WAIT] == WAIT_SPIN_PARK:
        wake_producer(hdr)


@hot
def wake_producer(hdr):
    """After releasing: wake the producer if it sleeps on a full ring (parking rings)."""
    fence_seq_cst()
    if load_acquire(hdr, W_PRODUCER_PARKED) != 0:
        store_release(hdr, W_SPACE_SIGNAL, hdr[W_SPACE_SIGNAL] + _ONE)
        futex_wake(hdr, W_SPACE_SIGNAL, 1)


@njit(nogil=True, cache=True)
def try_push(hdr, slots, record):
    """Copy ``record`` into the ring; False (and nothing written) when full."""
    pos, count = producer_claim(hdr, 1)
    if count == 0:
        return False
    slots[pos & (hdr[W_CAPACITY] - _ONE)] = record
    producer_commit(hdr, 1)
    return True


@njit(nogil=True, cache=True)
def try_pop(hdr, slots, out, i):
    """Copy the oldest record into ``out[i]``; False when empty."""
    pos, count = consumer_peek(hdr, 1)
    if count == 0:
        return False
    out[i] = slots[pos & (hdr[W_CAPACITY] - _ONE)]
    consumer_release(hdr, 1)
    return True


@njit(nogil=True, cache=True)
def wait_claim(hdr, n, timeout_ns):
    """Claim like ``producer_claim``, idling with the ring's strategy while full.

    Gives up after ``timeout_ns`` (count 0) so the caller can beat and read its control
    block. Counts one full wait per episode, not per idle step.
    """
    pos, count = producer_claim(hdr, n)
    if count > 0 or n == 0:  # asking for nothing (a stage priming its kernels) never waits
        return pos, count
    store_relaxed(hdr, W_PRODUCER_FULL_WAITS, hdr[W_PRODUCER_FULL_WAITS] + _ONE)
    note_high_water(hdr, pos)
    strategy = hdr[W_WAIT]
    deadline = monotonic_ns() + timeout_ns
    cap = hdr[W_CAPACITY]
    # a producer that found the ring full resumes once an eighth of it is free (or what it
    # asked for): claiming each slot the moment it frees would run both sides in lock-step,
    # fighting over the consumer's line once per record
    resume = min(cap, max(np.uint64(n), cap >> np.uint64(3)))
    i = 0
    while True:
        idle_producer(hdr, strategy, i, hdr[W_PRODUCER_CACHED_CONSUMER])
        i += 1
        free = cap - (pos - load_acquire(hdr, W_CONSUMER_POSITION))
        if free >= resume:
            return producer_claim(hdr, n)
        if (i & 63) == 0 and monotonic_ns() >= deadline:
            return producer_claim(hdr, n)


@njit(nogil=True, cache=True)
def wait_peek(hdr, n, timeout_ns):
    """Peek like ``consumer_peek``, idling with the ring's strategy while empty."""
    pos, count = consumer_peek(hdr, n)
    if count > 0 or n == 0:
        return pos, count
    store_relaxed(hdr, W_CONSUMER_EMPTY_WAITS, hdr[W_CONSUMER_EMPTY_WAITS] + _ONE)
    strategy = hdr[W_WAIT]
    deadline = monotonic_ns() + timeout_ns
    i = 0
    while True:
        idle_consumer(hdr, strategy, i, pos)
        i += 1
        pos, count = consumer_peek(hdr, n)
        if count > 0 or ((i & 63) == 0 and monotonic_ns() >= deadline):
            return pos, count


@njit(nogil=True, cache=True)
def push_wait(hdr, slots, record, timeout_ns):
    """Blocking push (backpressure ``block``): waits for room up to ``timeout_ns``."""
    pos, count = wait_claim(hdr, 1, timeout_ns)
    if count == 0:
        return False
    slots[pos & (hdr[W_CAPACITY] - _ONE)] = record
    producer_commit(hdr, 1)
    return True


@njit(nogil=True, cache=True)
def count_rejection(hdr, n):
    """Backpressure ``reject``: the producer was told; count it in its own line."""
    store_relaxed(hdr, W_PRODUCER_REJECTIONS, hdr[W_PRODUCER_REJECTIONS] + np.uint64(n))
    if n > 0:
        note_high_water(hdr, hdr[W_PRODUCER_OWN_POSITION])


@njit(nogil=True, cache=True)
def note_high_water(hdr, pos):
    """Producer, on its full path only (a full wait or a rejection, never per commit): the
    depth it sees, from its cached consumer position, into its own high-water word."""
    depth = pos - hdr[W_PRODUCER_CACHED_CONSUMER]
    if depth <= hdr[W_CAPACITY] and depth > hdr[W_PRODUCER_HIGH_WATER]:
        store_relaxed(hdr, W_PRODUCER_HIGH_WATER, depth)


@hot
def beat_producer(hdr):
    store_relaxed(hdr, W_PRODUCER_HEARTBEAT_NS, monotonic_ns())


@hot
def beat_consumer(hdr):
    store_relaxed(hdr, W_CONSUMER_HEARTBEAT_NS, monotonic_ns())


@njit(nogil=True, cache=True)
def claim_owner(hdr, word, expected_pid, pid):
    """Compare-and-swap the owner pid word: True if ``expected_pid`` was replaced by ``pid``."""
    return compare_exchange(hdr, word, expected_pid, pid)
