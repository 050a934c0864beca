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
by difference, so positions may start anywhere, including just below 2^64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.shm.atomics import (
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
    W_CONSUMER_RECORDS,
    W_DATA_SIGNAL,
    W_PRODUCER_BATCHES,
    W_PRODUCER_CACHED_CONSUMER,
    W_PRODUCER_FULL_WAITS,
    W_PRODUCER_HEARTBEAT_NS,
    W_PRODUCER_PARKED,
    W_PRODUCER_POSITION,
    W_PRODUCER_RECORDS,
    W_PRODUCER_REJECTIONS,
    W_SPACE_SIGNAL,
    W_WAIT,
    WAIT_SPIN_PARK,
)
from bot4.shm.wait import idle_consumer, idle_producer

_ONE = np.uint64(1)


@njit(nogil=True, cache=True)
def producer_claim(hdr, n):
    """Up to ``n`` free contiguous slots: ``(position, count)``; count 0 when full."""
    cap = hdr[W_CAPACITY]
    pos = load_relaxed(hdr, W_PRODUCER_POSITION)
    want = np.uint64(n)
    space = cap - (pos - hdr[W_PRODUCER_CACHED_CONSUMER])
    if space < want:
        cons = load_acquire(hdr, W_CONSUMER_POSITION)
        store_relaxed(hdr, W_PRODUCER_CACHED_CONSUMER, cons)
        space = cap - (pos - cons)
    to_wrap = cap - (pos & (cap - _ONE))
    count = min(want, space, to_wrap)
    return pos, np.int64(count)


@njit(nogil=True, cache=True)
def producer_room(hdr, n):
    """Up to ``n`` free slots *across* the wrap: ``(position, count)``; count 0 when full.

    For a producer that needs more slots than remain before the wrap point (a stage
    emitting several records per input): it writes ``count`` slots starting at
    ``slots[position & mask]`` and continuing at index 0 (``Producer.write_wrapped``),
    then publishes them with one ``producer_commit``.
    """
    cap = hdr[W_CAPACITY]
    pos = load_relaxed(hdr, W_PRODUCER_POSITION)
    want = np.uint64(n)
    space = cap - (pos - hdr[W_PRODUCER_CACHED_CONSUMER])
    if space < want:
        cons = load_acquire(hdr, W_CONSUMER_POSITION)
        store_relaxed(hdr, W_PRODUCER_CACHED_CONSUMER, cons)
        space = cap - (pos - cons)
    return pos, np.int64(min(want, space))


@njit(nogil=True, cache=True)
def producer_commit(hdr, count):
    """Publish ``count`` claimed slots (release store); wakes a parked consumer."""
    c = np.uint64(count)
    pos = load_relaxed(hdr, W_PRODUCER_POSITION) + c
    # the records counter moves before the position (the release store orders it): a
    # reader that loads the consumer's counter first never sees consumed > produced
    store_relaxed(hdr, W_PRODUCER_RECORDS, hdr[W_PRODUCER_RECORDS] + c)
    store_release(hdr, W_PRODUCER_POSITION, pos)
    store_relaxed(hdr, W_PRODUCER_BATCHES, hdr[W_PRODUCER_BATCHES] + _ONE)
    if hdr[W_WAIT] == WAIT_SPIN_PARK:
        wake_consumer(hdr)


@njit(nogil=True, cache=True)
def wake_consumer(hdr):
    """After publishing: wake the consumer if it sleeps (parking rings). The fence orders
    the position store before the load of the parked flag (see ``wait``)."""
    fence_seq_cst()
    if load_acquire(hdr, W_CONSUMER_PARKED) != 0:
        store_release(hdr, W_DATA_SIGNAL, hdr[W_DATA_SIGNAL] + _ONE)
        futex_wake(hdr, W_DATA_SIGNAL, 1)


@njit(nogil=True, cache=True)
def consumer_peek(hdr, n):
    """Up to ``n`` readable contiguous slots: ``(position, count)``; count 0 when empty."""
    cap = hdr[W_CAPACITY]
    pos = load_relaxed(hdr, W_CONSUMER_POSITION)
    want = np.uint64(n)
    avail = hdr[W_CONSUMER_CACHED_PRODUCER] - pos
    if avail < want:
        prod = load_acquire(hdr, W_PRODUCER_POSITION)
        store_relaxed(hdr, W_CONSUMER_CACHED_PRODUCER, prod)
        avail = prod - pos
        if avail > hdr[W_CONSUMER_HIGH_WATER]:
            store_relaxed(hdr, W_CONSUMER_HIGH_WATER, avail)
    to_wrap = cap - (pos & (cap - _ONE))
    count = min(want, avail, to_wrap)
    return pos, np.int64(count)


@njit(nogil=True, cache=True)
def consumer_release(hdr, count):
    """Hand ``count`` read slots back to the producer (release store); wakes a parked producer."""
    c = np.uint64(count)
    pos = load_relaxed(hdr, W_CONSUMER_POSITION) + c
    store_release(hdr, W_CONSUMER_POSITION, pos)
    store_relaxed(hdr, W_CONSUMER_RECORDS, hdr[W_CONSUMER_RECORDS] + c)
    store_relaxed(hdr, W_CONSUMER_BATCHES, hdr[W_CONSUMER_BATCHES] + _ONE)
    if hdr[W_WAIT] == WAIT_SPIN_PARK:
        wake_producer(hdr)


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
def beat_producer(hdr):
    store_relaxed(hdr, W_PRODUCER_HEARTBEAT_NS, monotonic_ns())


@njit(nogil=True, cache=True)
def beat_consumer(hdr):
    store_relaxed(hdr, W_CONSUMER_HEARTBEAT_NS, monotonic_ns())


@njit(nogil=True, cache=True)
def claim_owner(hdr, word, expected_pid, pid):
    """Compare-and-swap the owner pid word: True if ``expected_pid`` was replaced by ``pid``."""
    return compare_exchange(hdr, word, expected_pid, pid)
