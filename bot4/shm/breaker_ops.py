"""The numba ops of the breaker segment (:mod:`bot4.shm.breakers`; the layout is
:mod:`bot4.shm.breaker_layout`).

Ownership. The config rows are written once by the creator (``create_breakers``) and only
read afterwards. Every word of a state block is multi-writer: all processes of the instance
record into the same breaker, by design, since no single process sees every failure. It is
safe because no state-block word is ever updated by a plain read-modify-write:

* the state word changes only by ``compare_exchange`` from the exact word read, and the
  epoch grows with every transition, so each transition is made by exactly one process and
  a process acting on a stale read fails its CAS instead of undoing a newer transition;
* the probe word packs in-flight, results, failures and the episode tag (the low bits of the
  HALF_OPEN epoch) into one word changed by CAS, so admissions and results are neither lost
  nor counted twice, and a word left from an older episode reads as zero;
* a bucket word packs its time-slot tag with its counts, so rotating a bucket to a new slot
  and counting into it is one CAS;
* the timestamps only move forward (CAS max) and are stamped *before* the transition that
  uses them, so whoever sees a state also sees its time;
* counters are CAS increments.

A process killed at any point leaves each word either before or after its CAS: there is no
lock and nothing half-written. A probe whose caller died is recovered by the probe timeout.
The one plain store is the window clear on closing; it happens before the closing CAS, and
racing it can only drop counts from a window that is being cleared anyway.

Hot path: ``breaker_allow`` on a CLOSED breaker is one acquire load of the state word,
which changes only on transitions (line 0); results in the CLOSED state write the window
buckets (line 1), so recording does not evict the word every ``allow`` reads.

Numba ops take ``words`` (the segment as u64) and the breaker index. ``breaker_allow`` /
``breaker_record`` judge a result by the state when it arrives; ``breaker_enter`` /
``breaker_exit`` carry a ticket from admission to result, so a late result of a call admitted
while CLOSED is never counted as a probe, and a probe from an older episode is ignored.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit.borrow import unowned
from bot4.nbkit.hot import hot
from bot4.shm.atomics import compare_exchange, load_acquire, store_relaxed
from bot4.shm.breaker_layout import (
    B_BUCKETS,
    B_DENIED,
    B_HALF_OPEN_NS,
    B_OPENED_NS,
    B_PROBE_ACTIVITY_NS,
    B_PROBE_BITS,
    B_PROBES,
    B_STATE,
    B_TRIPS,
    BLOCK_WORDS,
    C_BUCKET_NS,
    C_BUCKETS,
    C_CLOSE_PCT,
    C_COOLDOWN_NS,
    C_MAX_PROBES,
    C_MIN_CALLS,
    C_OPEN_PCT,
    C_PROBE_TIMEOUT_NS,
    C_PROBE_WINDOW,
    CLOSED,
    CNT_MASK,
    EPOCH_SHIFT,
    F_FORCED,
    FAIL_SHIFT,
    FLAGS_SHIFT,
    HALF_OPEN,
    M16,
    MAX_BUCKETS,
    MAX_PROBE_WINDOW,
    OPEN,
    PTAG_MASK,
    PTAG_SHIFT,
    STATE_MASK,
    T_CLOSED,
    T_PROBE,
    TAG_MASK,
    TAG_SHIFT,
    TICKET_ANY,
    W_COUNT,
)


@hot
def _block(words, i):
    return BLOCK_WORDS * (1 + np.int64(words[W_COUNT]) + i)


@hot
def _load(words, k):
    return np.int64(load_acquire(words, k))


@hot
def _add(words, k, n):
    while True:
        old = _load(words, k)
        if compare_exchange(words, k, old, old + n):
            return


@hot
def _store_max(words, k, value):
    while True:
        old = _load(words, k)
        if old >= value or compare_exchange(words, k, old, value):
            return


@hot
def _next_word(st, state, flags):
    return (((st >> EPOCH_SHIFT) + 1) << EPOCH_SHIFT) | (flags << FLAGS_SHIFT) | state


@hot
def _to_open(words, b, st, now_ns, flags):
    """CAS from exactly ``st`` to OPEN; opened_at is stamped first. True if this call did it."""
    _store_max(words, b + B_OPENED_NS, now_ns)
    if compare_exchange(words, b + B_STATE, st, _next_word(st, OPEN, flags)):
        if st & STATE_MASK != OPEN:
            _add(words, b + B_TRIPS, 1)
        return True
    return False


@hot
def _to_half_open(words, b, st, now_ns):
    _store_max(words, b + B_HALF_OPEN_NS, now_ns)
    _store_max(words, b + B_PROBE_ACTIVITY_NS, now_ns)
    return compare_exchange(words, b + B_STATE, st, _next_word(st, HALF_OPEN, 0))


@hot
def _to_closed(words, b, st):
    for j in range(MAX_BUCKETS):
        store_relaxed(words, b + B_BUCKETS + j, 0)
    return compare_exchange(words, b + B_STATE, st, _next_word(st, CLOSED, 0))


@hot
def _window_add(words, b, r, ok, now_ns):
    nb = np.int64(words[r + C_BUCKETS])
    slot = now_ns // np.int64(words[r + C_BUCKET_NS])
    tag = slot & TAG_MASK
    k = b + B_BUCKETS + slot % nb
    fail = 0 if ok else 1
    while True:
        old = _load(words, k)
        calls = 0
        fails = 0
        if (old >> TAG_SHIFT) == tag:
            calls = old & CNT_MASK
            fails = (old >> FAIL_SHIFT) & CNT_MASK
            if calls >= CNT_MASK:
                return  # saturated: the bucket keeps the rate of its first 2^20 - 1 calls
        new = (tag << TAG_SHIFT) | ((fails + fail) << FAIL_SHIFT) | (calls + 1)
        if compare_exchange(words, k, old, new):
            return


@hot
def _window_sum(words, b, r, now_ns):
    nb = np.int64(words[r + C_BUCKETS])
    cur = (now_ns // np.int64(words[r + C_BUCKET_NS])) & TAG_MASK
    calls = 0
    fails = 0
    for j in range(nb):
        w = _load(words, b + B_BUCKETS + j)
        if ((cur - (w >> TAG_SHIFT)) & TAG_MASK) < nb:
            calls += w & CNT_MASK
            fails += (w >> FAIL_SHIFT) & CNT_MASK
    return calls, fails


@hot
def _decide(words, b, r, st, results, fails, now_ns):
    """HALF_OPEN episode ``st`` with these probe counts: reopen, close, or keep probing."""
    n = np.int64(words[r + C_PROBE_WINDOW])
    allowed = np.int64(words[r + C_CLOSE_PCT]) * n // 100
    if fails > allowed:
        _to_open(words, b, st, now_ns, 0)
    elif results >= n:
        _to_closed(words, b, st)


@hot
def _admit_probe(words, b, r, st, now_ns):
    """1 admitted, 0 refused, -1 the state changed under us (caller re-reads it)."""
    tag = (st >> EPOCH_SHIFT) & PTAG_MASK
    k_max = np.int64(words[r + C_MAX_PROBES])
    n = np.int64(words[r + C_PROBE_WINDOW])
    while True:
        old = _load(words, b + B_PROBES)
        inflight = 0
        results = 0
        fails = 0
        if (old >> PTAG_SHIFT) == tag:
            inflight = old & M16
            results = (old >> 16) & M16
            fails = (old >> 32) & M16
        if inflight >= k_max or inflight + results >= n:
            _decide(words, b, r, st, results, fails, now_ns)
            timeout = np.int64(words[r + C_PROBE_TIMEOUT_NS])
            if now_ns - _load(words, b + B_PROBE_ACTIVITY_NS) >= timeout:
                _to_open(words, b, st, now_ns, 0)
            return 0
        new = (tag << PTAG_SHIFT) | (fails << 32) | (results << 16) | (inflight + 1)
        if compare_exchange(words, b + B_PROBES, old, new):
            _store_max(words, b + B_PROBE_ACTIVITY_NS, now_ns)
            return 1
        if _load(words, b + B_STATE) != st:
            return -1


@hot
def _probe_result(words, b, r, st, ok, now_ns):
    tag = (st >> EPOCH_SHIFT) & PTAG_MASK
    while True:
        old = _load(words, b + B_PROBES)
        inflight = 0
        results = 0
        fails = 0
        if (old >> PTAG_SHIFT) == tag:
            inflight = old & M16
            results = (old >> 16) & M16
            fails = (old >> 32) & M16
        k = results
        if inflight > 0:
            inflight -= 1
        if results < M16:
            results += 1
        if not ok:
            fails = min(fails + 1, M16)
        new = (tag << PTAG_SHIFT) | (fails << 32) | (results << 16) | inflight
        if compare_exchange(words, b + B_PROBES, old, new):
            break
        if _load(words, b + B_STATE) != st:
            return  # the episode ended while we tried: the result belongs to no episode
    _store_max(words, b + B_PROBE_ACTIVITY_NS, now_ns)
    if k < MAX_PROBE_WINDOW:
        bit = np.uint64(1) << np.uint64(k)
        while True:
            w = load_acquire(words, b + B_PROBE_BITS)
            nw = w & ~bit
            if not ok:
                nw |= bit
            if compare_exchange(words, b + B_PROBE_BITS, w, nw):
                break
    _decide(words, b, r, st, results, fails, now_ns)


@hot
def _enter_slow(words, i, b, st, now_ns):
    r = BLOCK_WORDS * (1 + i)
    while True:
        s = st & STATE_MASK
        if s == CLOSED:
            return ((st >> EPOCH_SHIFT) << 2) | T_CLOSED
        if s == OPEN:
            forced = (st >> FLAGS_SHIFT) & F_FORCED
            cooldown = np.int64(words[r + C_COOLDOWN_NS])
            if forced or now_ns - _load(words, b + B_OPENED_NS) < cooldown:
                _add(words, b + B_DENIED, 1)
                return 0
            _to_half_open(words, b, st, now_ns)
        else:
            got = _admit_probe(words, b, r, st, now_ns)
            if got > 0:
                return ((st >> EPOCH_SHIFT) << 2) | T_PROBE
            if got == 0:
                _add(words, b + B_DENIED, 1)
                return 0
        st = _load(words, b + B_STATE)


@hot
def breaker_enter(words, i, now_ns):
    """Ask breaker ``i`` to admit a call. Returns a ticket for ``breaker_exit`` (0 = refused).

    CLOSED: admitted. OPEN: refused until the cool-down is over, then the breaker goes
    HALF_OPEN and this call may be its first probe. HALF_OPEN: admitted as a probe while
    there is probe room. An admitted probe must be followed by ``breaker_exit`` (or
    ``breaker_release`` if the call is not made after all).
    """
    b = _block(words, i)
    st = _load(words, b + B_STATE)
    if st & STATE_MASK == CLOSED:
        return ((st >> EPOCH_SHIFT) << 2) | T_CLOSED
    return _enter_slow(words, i, b, st, now_ns)


@njit(nogil=True, cache=True)
def breaker_allow(words, i, now_ns):
    """True if a call may go through breaker ``i`` now (one acquire load when CLOSED).

    In HALF_OPEN a True admits a probe: the caller must report its outcome with
    ``breaker_record``.
    """
    w = unowned(words)  # borrowed: no NRT incref/decref (a lock add each) per call
    b = _block(w, i)
    st = _load(w, b + B_STATE)
    if st & STATE_MASK == CLOSED:
        return True
    return _enter_slow(w, i, b, st, now_ns) != 0


@hot
def breaker_exit(words, i, ticket, ok, now_ns):
    """Record the outcome of a call admitted with ``ticket`` (``TICKET_ANY``: no ticket).

    CLOSED now: counted into the window, which may open the breaker. HALF_OPEN now: a
    probe result if the ticket is a probe of this episode (or ``TICKET_ANY``), which may
    close or reopen it; otherwise ignored. OPEN now: ignored (a call admitted before the
    breaker opened).
    """
    if ticket == 0:
        return
    b = _block(words, i)
    r = BLOCK_WORDS * (1 + i)
    st = _load(words, b + B_STATE)
    s = st & STATE_MASK
    if s == CLOSED:
        _window_add(words, b, r, ok, now_ns)
        calls, fails = _window_sum(words, b, r, now_ns)
        if (
            calls >= np.int64(words[r + C_MIN_CALLS])
            and fails * 100 >= np.int64(words[r + C_OPEN_PCT]) * calls
        ):
            _to_open(words, b, st, now_ns, 0)
    elif s == HALF_OPEN:
        kind = ticket & 3
        if kind == TICKET_ANY or (kind == T_PROBE and (ticket >> 2) == (st >> EPOCH_SHIFT)):
            _probe_result(words, b, r, st, ok, now_ns)


@hot
def breaker_record(words, i, ok, now_ns):
    """Record the outcome of a call through breaker ``i``, judged by the state now."""
    breaker_exit(words, i, TICKET_ANY, ok, now_ns)


@hot
def breaker_release(words, i, ticket):
    """Give back a probe admitted with ``ticket`` whose call was not made (no result)."""
    if ticket & 3 != T_PROBE:
        return
    b = _block(words, i)
    tag = (ticket >> 2) & PTAG_MASK
    while True:
        old = _load(words, b + B_PROBES)
        if (old >> PTAG_SHIFT) != tag or old & M16 == 0:
            return
        if compare_exchange(words, b + B_PROBES, old, old - 1):
            return


@hot
def breaker_state_word(words, i):
    """The raw state word: state (byte 0), flags (byte 1), epoch (bits 16..62)."""
    return _load(words, _block(words, i) + B_STATE)


@njit(nogil=True, cache=True, inline="always")
def breaker_word_state(w):
    """CLOSED, OPEN or HALF_OPEN: the state byte of a breaker state word."""
    return w & STATE_MASK


@njit(nogil=True, cache=True, inline="always")
def breaker_word_epoch(w):
    """The epoch of a breaker state word: it moves at every transition, so an OPEN seen
    with a new epoch is a new trip."""
    return w >> EPOCH_SHIFT


@hot
def breaker_state(words, i):
    """CLOSED, OPEN or HALF_OPEN."""
    return breaker_state_word(words, i) & STATE_MASK


@njit(nogil=True, cache=True)
def breaker_trip(words, i, now_ns):
    """Operator trip: OPEN with the FORCED flag (no half-open until reset). Returns the
    previous state."""
    b = _block(words, i)
    while True:
        st = _load(words, b + B_STATE)
        if st & STATE_MASK == OPEN and (st >> FLAGS_SHIFT) & F_FORCED:
            return OPEN
        if _to_open(words, b, st, now_ns, F_FORCED):
            return st & STATE_MASK


@njit(nogil=True, cache=True)
def breaker_reset(words, i, now_ns):
    """Operator reset: CLOSED, FORCED cleared, window cleared. Returns the previous state."""
    b = _block(words, i)
    while True:
        st = _load(words, b + B_STATE)
        if _to_closed(words, b, st):
            return st & STATE_MASK
