"""Wait strategies: what a ring side does when it cannot make progress.

A strategy is a numba function of the idle iteration count, so the same code idles a
kernel's own loop and the Python outer loop of a stage (see Agrona's IdleStrategy, the
Disruptor's WaitStrategy):

* ``busy-spin`` — PAUSE and re-check. Lowest latency, burns its core: only for machines
  with a core per stage. On one shared core a busy-spinning pair hands off once per
  scheduler tick (milliseconds).
* ``yield`` — spin ``SPIN_TRIES`` times (PAUSE, ~25 ns each here), then ``sched_yield``
  each iteration.
* ``park`` — spin, yield ``YIELD_TRIES`` times, then sleep on a futex in the segment until
  the other side signals (or ``PARK_TIMEOUT_NS`` passes, so the loop still beats its
  heartbeat and reads the control block). The sleeper announces itself in its ``parked``
  word; the other side pays a fence and a load per publish on parking rings only.

Lost wake-ups are impossible: the sleeper stores ``parked = 1``, fences, re-checks the
position; the signaller stores the position, fences, loads ``parked``. At least one of
the two sees the other's store (Dekker), and the futex compares the signal word it read
before announcing, so a signal between the check and the sleep returns at once.
"""

from __future__ import annotations

from numba import njit

from bot4.shm.atomics import (
    cpu_pause,
    fence_seq_cst,
    futex_wait,
    load_acquire,
    sched_yield,
    store_release,
)
from bot4.shm.ring_layout import (
    W_CONSUMER_PARKED,
    W_CONSUMER_POSITION,
    W_DATA_SIGNAL,
    W_PRODUCER_PARKED,
    W_PRODUCER_POSITION,
    W_SPACE_SIGNAL,
    WAIT_BUSY_SPIN,
    WAIT_SPIN_YIELD,
)

SPIN_TRIES = 8  # ~0.2 us of PAUSE: a waiter sharing its core gives it up quickly
YIELD_TRIES = 16
PARK_TIMEOUT_NS = 2_000_000


@njit(nogil=True, cache=True)
def park_consumer(hdr, position, timeout_ns):
    """Sleep until the producer moves past ``position`` (or ``timeout_ns``)."""
    sig = load_acquire(hdr, W_DATA_SIGNAL)
    store_release(hdr, W_CONSUMER_PARKED, 1)
    fence_seq_cst()
    if load_acquire(hdr, W_PRODUCER_POSITION) == position:
        futex_wait(hdr, W_DATA_SIGNAL, sig, timeout_ns)
    store_release(hdr, W_CONSUMER_PARKED, 0)


@njit(nogil=True, cache=True)
def park_producer(hdr, full_at_consumer, timeout_ns):
    """Sleep until the consumer moves past ``full_at_consumer`` (or ``timeout_ns``)."""
    sig = load_acquire(hdr, W_SPACE_SIGNAL)
    store_release(hdr, W_PRODUCER_PARKED, 1)
    fence_seq_cst()
    if load_acquire(hdr, W_CONSUMER_POSITION) == full_at_consumer:
        futex_wait(hdr, W_SPACE_SIGNAL, sig, timeout_ns)
    store_release(hdr, W_PRODUCER_PARKED, 0)


@njit(nogil=True, cache=True)
def idle_consumer(hdr, strategy, iteration, position):
    """One idle step of a consumer that found the ring empty at ``position``."""
    if strategy == WAIT_BUSY_SPIN or iteration < SPIN_TRIES:
        cpu_pause()
    elif strategy == WAIT_SPIN_YIELD or iteration < SPIN_TRIES + YIELD_TRIES:
        sched_yield()
    else:
        park_consumer(hdr, position, PARK_TIMEOUT_NS)


@njit(nogil=True, cache=True)
def idle_producer(hdr, strategy, iteration, consumer_position):
    """One idle step of a producer that found the ring full (consumer at ``consumer_position``)."""
    if strategy == WAIT_BUSY_SPIN or iteration < SPIN_TRIES:
        cpu_pause()
    elif strategy == WAIT_SPIN_YIELD or iteration < SPIN_TRIES + YIELD_TRIES:
        sched_yield()
    else:
        park_producer(hdr, consumer_position, PARK_TIMEOUT_NS)
