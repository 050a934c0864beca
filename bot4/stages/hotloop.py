"""The compiled duty cycle of the hot path group: signals -> risk -> orders (issue 15).

``GroupRunner`` (``bot4.stages.group``) hands its members' rounds to :func:`hot_cycle`,
which runs them back to back in numba without returning to the interpreter between
batches. One round is one batch from every input of every member:

    signals   ticks (md) [, depth (md)]                     -> intents
    risk      intents, fills, risk_md (md) [, depth (md)]   -> orders, decisions
    orders    orders, venue_execs (venue)                   -> venue_orders, fills,
                                                               order_events, exec_events

the order path first (signals' ticks, risk's intents, orders' orders; then risk's fills
and market data, orders' venue reports; then signals' and risk's depth inputs, the md
stage's BOOK_LEVEL rings, where wired: ``sdep`` / ``rdep``, None otherwise, one compiled
specialisation per wiring), so a tick crosses the two in-group hops
(intents, orders) within the round it arrived in: an in-group hop is a function call and
a hand-off through the ring's slots, no scheduler. Per batch a step does exactly what ``StageRunner._step`` does, in the same
order — peek the input; claim ``k * max_out_per_in`` contiguous slots on every output;
call the stage's kernel with the stage's state; write the member's cursor buffer in its
control-block slot (generation last, release store); commit the outputs; release the
input — so a group killed anywhere resumes every member exactly, through the same
``StageRunner.recover``. Commits and releases never fence: a ring whose two ends are
both in the group has nobody sleeping on it, and a parked process outside the group is
woken by :func:`_wake_peers` once per ring, after the order path of the round (the
venue's order and persistence's events) and at its end — not between two in-group steps,
where a futex wake of persistence sat inside the risk -> orders hop.

The cycle returns to Python (the caller then runs one ordinary round of every member:
housekeeping, heartbeats, the stages' ``pending``/``emit`` hooks, drain, logging):

* ``R_DEADLINE`` — at ``deadline_ns`` (the caller passes now + ``HOUSEKEEP_NS``, 5 s, or
  half systemd's watchdog interval if sooner),
  after the first round without work, at most ``HOUSEKEEP_NS`` later (the Python round
  never holds up a batch in flight): every stay in compiled code is bounded, so signals,
  SIGTERM and the supervisor still work;
* ``R_STATE`` — the pipeline state word (control block, shared memory) left RUNNING;
* ``R_IDLE`` — ``spin_ns`` passed without work and ``park`` is off;
* ``R_BAIL`` — a step needs the Python path: an output without ``max_out_per_in``
  contiguous slots (full, or at the wrap point where the loop copies across the wrap);
* ``R_PENDING`` — risk has CANCEL_ALLs queued (``bot4.risk.killswitch.poll_states``, run
  after every round: the kill switch, a halting breaker, stale data): its
  ``pending``/``emit`` hook sends them at once; or the OMS counted a late reconciliation
  disagreement or an exec-id conflict: the orders stage's ``after_reports`` acts on it.

While idle inside the cycle it spins with PAUSE (or ``sched_yield`` when ``yield_idle``)
for ``spin_ns``, then, with ``park``, sleeps on every input ring fed from outside the
group at once (``futex_waitv``, ``bot4.shm.waitv``) until a producer publishes, the
deadline or ``PARK_NS`` (1 ms; then it reads the state word and parks again): a wake-up
reaches the kernels without the interpreter.

Member loop state ``ls`` (u64, ``LS_WORDS``, owned by the group process): the mirror of
``StageRunner``'s generation, next buffer, next sequence number and input cursors, copied
in before a call and back after it, plus the records and batches done by the call.
Kernel ``now`` arguments come from ``CLOCK_MONOTONIC`` (``atomics.monotonic_ns``), the
clock the stages use live; the replay drives the same kernels through
``Stage.process`` with its simulated clock and never comes here.

This module holds the compiled side only (numba's cache keys it by its imports); the
Python side that binds it to a group's members (``HotPath``: which groups qualify, packing
their state, copying the loop-state words in and out) is ``bot4.stages.hotpath``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from bot4.nbkit import unowned
from bot4.oms.from_risk import orders_kernel
from bot4.oms.from_venue import execs_kernel
from bot4.oms.state import C_EXEC_CONFLICT, C_RECON_MISMATCH
from bot4.risk.checks import check_intents
from bot4.risk.killswitch import check_staleness, poll_states
from bot4.risk.positions import apply_book_levels, apply_fills, apply_market_data
from bot4.shm.atomics import cpu_pause, load_relaxed, monotonic_ns, sched_yield, store_release
from bot4.shm.breakers import breaker_state_word
from bot4.shm.control import (
    C_CURSOR,
    C_GEN,
    C_NEXT_SEQ,
    C_VALID_AT,
    PIPE_RUNNING,
    S_BATCHES,
    S_CURSOR_A,
    S_CURSOR_B,
    S_HEARTBEAT_NS,
    S_RECORDS_IN,
    S_RECORDS_OUT,
    W_PIPE_STATE,
)
from bot4.shm.ring_layout import W_CAPACITY, W_PRODUCER_OWN_POSITION, W_WAIT, WAIT_SPIN_PARK
from bot4.shm.ring_ops import (
    beat_consumer,
    beat_producer,
    consumer_peek,
    consumer_release_nowake,
    producer_claim,
    producer_commit_nowake,
    wake_consumer,
    wake_producer,
)
from bot4.shm.trading_state import state_generation
from bot4.shm.waitv import announce, end_park, futex_waitv
from bot4.signals.features import depth_kernel, signals_kernel

R_DEADLINE, R_STATE, R_IDLE, R_BAIL, R_PENDING = 0, 1, 2, 3, 4
# longest stay in compiled code before the members' Python round. The round is ~40 us
# when the interpreter is warm but ~2.5 ms (p50; ~4 ms p99) after 0.5 s of compiled
# spinning (its code and data are out of the caches: to_python alone, a loop over ~30
# ints, took 0.2-0.6 ms; measured per part in default runs), plus ~20-30 us re-entering
# (~110 array arguments unboxed), and a tick arriving meanwhile waits for it: at 5 ms,
# 50 ms and 0.5 s that was the tick-to-order p99 / p99.9 (every slow tick of a 0.5 s run
# overlapped a round). What must be prompt is done in the cycle: the kill switch and
# halting breakers (poll_states, R_PENDING), risk's stale-data check (``timers``), the
# OMS's late disagreements and exec-id conflicts, trading-state and breaker changes for
# risk's state log (R_PENDING), the pipeline state
# (R_STATE), heartbeats and the control block's record counters (``_beat``, ``_done``).
# The round keeps what seconds are fine for: the stages' own counters and the risk panel
# in bot4 stats, logging, and systemd's watchdog (``HotPath.run`` comes back at half its
# interval if that is sooner).
HOUSEKEEP_NS = 5_000_000_000
BEAT_NS = 100_000_000  # the cycle's heartbeats (bot4 stats flags one older than 1 s)
PARK_NS = 1_000_000  # longest park inside the cycle before it polls the state word again

# loop-state words of one member (u64)
L_GEN, L_NEXT_BUF, L_NEXT_SEQ, L_BATCHES, L_REC_IN, L_REC_OUT = range(6)
L_CUR = 8  # input cursors, one word per input
L_WAKE_OUT = 12  # bit j: output j (consumer outside the group) committed, not yet woken
L_WAKE_IN = 13  # bit i: input i (producer outside the group) released, not yet woken
LS_WORDS = 16

_ONE = np.uint64(1)
# Input indices and flags handed to the step kernels are numpy scalars, not bare constants:
# numba compiles a callee once per distinct literal argument, and each of orders_step,
# risk_step and (through orders_step) the OMS's execs_kernel tree was compiled twice,
# ~7 s of the cold warm's critical path (docs/compile.md). One branch on ``i`` per batch
# is what the shared copy costs at run time.
_IN0 = np.int64(0)
_IN1 = np.int64(1)
_KEEP_EVENTS = np.bool_(True)  # the orders stage's type for keep_events (a Python bool)


# The risk member carries the risk book's state (``RiskBook.st``, one named tuple of
# arrays: bot4.risk) and the step calls its kernels with it.
def _risk_state(book):
    return book.st


def _borrow(part):
    """:func:`~bot4.nbkit.unowned` of an optional part of :func:`hot_cycle`'s arguments
    (a depth input's tuple), None where it is not wired (compiled code only)."""
    raise NotImplementedError("compiled code only")


@overload(_borrow)
def _borrow_impl(part):
    if isinstance(part, types.NoneType):
        return lambda part: part
    return lambda part: unowned(part)


@njit(nogil=True, cache=True, inline="always")
def _index(hdr, pos):
    return np.int64(pos & (hdr[W_CAPACITY] - _ONE))


@njit(nogil=True, cache=True, inline="always")
def _buffer(ls):
    """Offset of the cursor buffer this batch writes (the one not written last time)."""
    return S_CURSOR_A if ls[L_NEXT_BUF] == 0 else S_CURSOR_B


@njit(nogil=True, cache=True, inline="always")
def _seal(blk, base, ls, next_seq):
    """Finish the cursor buffer at ``base``: next sequence number, then the generation
    with a release store (the buffer counts only once its generation is written)."""
    blk[base + C_NEXT_SEQ] = np.uint64(next_seq)
    gen = ls[L_GEN] + _ONE
    ls[L_GEN] = gen
    store_release(blk, base + C_GEN, gen)
    ls[L_NEXT_BUF] ^= _ONE
    ls[L_NEXT_SEQ] = np.uint64(next_seq)


@njit(nogil=True, cache=True, inline="always")
def _commit(ls, j, hdr, n, wake):
    """Publish ``n`` records on output ``j``. A consumer outside the group is woken later,
    once per ring, by :func:`_wake_peers` (one fence per round, not per commit, and none
    on the tick's path between two in-group steps)."""
    if n > 0:
        producer_commit_nowake(hdr, n)
        if wake:
            ls[L_WAKE_OUT] |= _ONE << np.uint64(j)


@njit(nogil=True, cache=True, inline="always")
def _release(ls, i, hdr, k, wake):
    consumer_release_nowake(hdr, k)
    if wake:
        ls[L_WAKE_IN] |= _ONE << np.uint64(i)


@njit(nogil=True, cache=True, inline="always")
def _wake_ring(ls, word, bit, hdr, out):
    if ls[word] & (_ONE << np.uint64(bit)) and hdr[W_WAIT] == WAIT_SPIN_PARK:
        if out:
            wake_consumer(hdr)
        else:
            wake_producer(hdr)


@njit(nogil=True, cache=True)
def _wake_peers(sig, risk, oms, sdep, rdep):
    """Wake the processes outside the group that sleep on a ring the members committed
    to or released since the last call (``ring_ops``: a caller that publishes with the
    ``nowake`` calls wakes each ring once before it idles, waits or returns; a sleeper
    is woken at most one round late, never lost). ``sdep``, ``rdep``: the depth inputs
    of signals and risk, None where not wired."""
    ls = sig[0]
    if ls[L_WAKE_OUT] | ls[L_WAKE_IN]:
        ih, _isl, oh, _osl = sig[4]
        _wake_ring(ls, L_WAKE_IN, 0, ih, False)
        if sdep is not None:
            _wake_ring(ls, L_WAKE_IN, 1, sdep[0], False)
        _wake_ring(ls, L_WAKE_OUT, 0, oh, True)
        ls[L_WAKE_OUT] = 0
        ls[L_WAKE_IN] = 0
    ls = risk[0]
    if ls[L_WAKE_OUT] | ls[L_WAKE_IN]:
        h0, _s0, h1, _s1, h2, _s2, oh0, _os0, oh1, _os1 = risk[4]
        _wake_ring(ls, L_WAKE_IN, 0, h0, False)
        _wake_ring(ls, L_WAKE_IN, 1, h1, False)
        _wake_ring(ls, L_WAKE_IN, 2, h2, False)
        if rdep is not None:
            _wake_ring(ls, L_WAKE_IN, 3, rdep[0], False)
        _wake_ring(ls, L_WAKE_OUT, 0, oh0, True)
        _wake_ring(ls, L_WAKE_OUT, 1, oh1, True)
        ls[L_WAKE_OUT] = 0
        ls[L_WAKE_IN] = 0
    ls = oms[0]
    if ls[L_WAKE_OUT] | ls[L_WAKE_IN]:
        h0, _s0, h1, _s1, oh0, _os0, oh1, _os1, oh2, _os2, oh3, _os3 = oms[4]
        _wake_ring(ls, L_WAKE_IN, 0, h0, False)
        _wake_ring(ls, L_WAKE_IN, 1, h1, False)
        _wake_ring(ls, L_WAKE_OUT, 0, oh0, True)
        _wake_ring(ls, L_WAKE_OUT, 1, oh1, True)
        _wake_ring(ls, L_WAKE_OUT, 2, oh2, True)
        _wake_ring(ls, L_WAKE_OUT, 3, oh3, True)
        ls[L_WAKE_OUT] = 0
        ls[L_WAKE_IN] = 0


@njit(nogil=True, cache=True, inline="always")
def _done(ls, blk, k, n_out):
    """Count a batch: the loop-state deltas the members' Python mirrors take in
    (``HotPath.to_python``), and the control block's totals ``bot4 stats`` reads, kept
    live between the (rare) Python rounds, which write the same totals again."""
    ls[L_BATCHES] += _ONE
    ls[L_REC_IN] += np.uint64(k)
    ls[L_REC_OUT] += np.uint64(n_out)
    blk[S_BATCHES] += _ONE
    blk[S_RECORDS_IN] += np.uint64(k)
    blk[S_RECORDS_OUT] += np.uint64(n_out)


# --- signals: input 0 ticks -> output 0 intents; optional input 1 depth ---------------------
@njit(nogil=True, cache=True)
def signals_step(m, batch, dep):
    """One batch of the signals member's ticks; records read, 0 when empty, -1 to bail.
    ``dep``: the depth input (:func:`signals_depth_step`), None where it is not wired
    (the branch is compiled out)."""
    ls, blk, wake_in, wake_out, rings, state = m
    ih, isl, oh, osl = rings
    st, g, mean, WT, model, cfg, tick, x, z, counters = state
    p, k = consumer_peek(ih, batch)
    if k == 0:
        return 0
    c0, g0 = producer_claim(oh, k)
    if g0 < 1:
        return -1
    k = min(k, g0)
    ix = _index(ih, p)
    o0 = _index(oh, c0)
    seq = np.int64(ls[L_NEXT_SEQ])
    n = signals_kernel(
        isl[ix : ix + k], osl[o0 : o0 + g0], seq, st, g, mean, WT, model, cfg, tick, x, z,
        counters, monotonic_ns(),
    )  # fmt: skip
    ls[L_CUR] = p + np.uint64(k)
    base = _buffer(ls)
    blk[base + C_CURSOR] = ls[L_CUR]
    if dep is not None:  # every input's cursor: the buffer is the whole truth
        blk[base + C_CURSOR + 1] = ls[L_CUR + 1]
    blk[base + C_VALID_AT] = c0 + np.uint64(n)
    _seal(blk, base, ls, seq + n)
    _commit(ls, 0, oh, n, wake_out[0])
    _release(ls, 0, ih, k, wake_in[0])
    _done(ls, blk, k, n)
    return k


@njit(nogil=True, cache=True)
def signals_depth_step(m, dep, batch):
    """One batch of the signals member's depth input (1, BOOK_LEVEL; ``SignalsStage.process``
    for input 1): the depth state only, no output, so no claim and never a bail. Its
    cursor buffer still says everything ``StageRunner.recover`` reads: every input's
    cursor, the output's unchanged ``valid_at`` (its producer position), ``next_seq``.
    ``dep``: (ring header, slots, ``dq``, depth feature on, records applied (counter),
    park address)."""
    ls, blk, wake_in, _wake_out, rings, state = m
    _ih, _isl, oh, _osl = rings
    dh, dsl, dq, on, applied, _addr = dep
    p, k = consumer_peek(dh, batch)
    if k == 0:
        return 0
    ix = _index(dh, p)
    if on:
        applied[0] += depth_kernel(dsl[ix : ix + k], dq, state[0])
    ls[L_CUR + 1] = p + np.uint64(k)
    base = _buffer(ls)
    blk[base + C_CURSOR] = ls[L_CUR]
    blk[base + C_CURSOR + 1] = ls[L_CUR + 1]
    blk[base + C_VALID_AT] = oh[W_PRODUCER_OWN_POSITION]
    _seal(blk, base, ls, ls[L_NEXT_SEQ])
    _release(ls, 1, dh, k, wake_in[1])
    _done(ls, blk, k, 0)
    return k


# --- risk: inputs 0 intents, 1 fills, 2 market data, optional 3 depth -> outputs 0 orders,
# 1 decisions
@njit(nogil=True, cache=True)
def risk_step(m, i, batch, dep):
    """One batch of the risk member's input ``i`` (0-2); records read, 0 when empty, -1 to
    bail. ``dep``: the depth input (:func:`risk_depth_step`), None where it is not wired."""
    ls, blk, wake_in, wake_out, rings, rs = m
    h0, s0, h1, s1, h2, s2, oh0, os0, oh1, os1 = rings
    ih = h0 if i == 0 else (h1 if i == 1 else h2)
    p, k = consumer_peek(ih, batch)
    if k == 0:
        return 0
    c0, g0 = producer_claim(oh0, k * 2)  # max_out_per_in 2: an order and a decision
    c1, g1 = producer_claim(oh1, k * 2)
    if g0 < 2 or g1 < 2:
        return -1
    k = min(k, g0 // 2, g1 // 2)
    ix = _index(ih, p)
    x0 = _index(oh0, c0)
    x1 = _index(oh1, c1)
    out_o = os0[x0 : x0 + g0]
    seq = np.int64(ls[L_NEXT_SEQ])
    now = monotonic_ns()
    n_d = 0
    if i == 0:
        n_o, n_d = check_intents(rs, s0[ix : ix + k], out_o, os1[x1 : x1 + g1], seq, now)
    elif i == 1:
        n_o = apply_fills(rs, s1[ix : ix + k], out_o, seq, now)
    else:
        n_o = apply_market_data(rs, s2[ix : ix + k], out_o, seq, now)
    ls[L_CUR + i] = p + np.uint64(k)
    base = _buffer(ls)
    for j in range(3):
        blk[base + C_CURSOR + j] = ls[L_CUR + j]
    if dep is not None:
        blk[base + C_CURSOR + 3] = ls[L_CUR + 3]
    blk[base + C_VALID_AT] = c0 + np.uint64(n_o)
    blk[base + C_VALID_AT + 1] = c1 + np.uint64(n_d)
    _seal(blk, base, ls, seq + n_o + n_d)
    _commit(ls, 0, oh0, n_o, wake_out[0])
    _commit(ls, 1, oh1, n_d, wake_out[1])
    _release(ls, i, ih, k, wake_in[i])
    _done(ls, blk, k, n_o + n_d)
    return k


@njit(nogil=True, cache=True)
def risk_depth_step(m, dep, batch):
    """One batch of the risk member's depth input (3, BOOK_LEVEL: the liquidity check's
    book, ``RiskBook.book_levels``): no output, no claim, never a bail; the cursor buffer
    as :func:`signals_depth_step` writes it. ``dep``: (ring header, slots, park address)."""
    ls, blk, wake_in, _wake_out, rings, rs = m
    _h0, _s0, _h1, _s1, _h2, _s2, oh0, _os0, oh1, _os1 = rings
    dh, dsl, _addr = dep
    p, k = consumer_peek(dh, batch)
    if k == 0:
        return 0
    ix = _index(dh, p)
    apply_book_levels(rs, dsl[ix : ix + k])
    ls[L_CUR + 3] = p + np.uint64(k)
    base = _buffer(ls)
    for j in range(4):
        blk[base + C_CURSOR + j] = ls[L_CUR + j]
    blk[base + C_VALID_AT] = oh0[W_PRODUCER_OWN_POSITION]
    blk[base + C_VALID_AT + 1] = oh1[W_PRODUCER_OWN_POSITION]
    _seal(blk, base, ls, ls[L_NEXT_SEQ])
    _release(ls, 3, dh, k, wake_in[3])
    _done(ls, blk, k, 0)
    return k


# --- orders: inputs 0 orders, 1 venue reports -> venue, fills, order and exec events --------
@njit(nogil=True, cache=True)
def orders_step(m, i, batch, mo):
    """One batch of the orders member's input ``i`` (``mo`` = its ``max_out_per_in``);
    records read, 0 when empty, -1 to bail."""
    ls, blk, wake_in, wake_out, rings, oms = m
    h0, s0, h1, s1, oh0, os0, oh1, os1, oh2, os2, oh3, os3 = rings
    ih = h0 if i == 0 else h1
    p, k = consumer_peek(ih, batch)
    if k == 0:
        return 0
    want = k * mo
    c0, g0 = producer_claim(oh0, want)
    c1, g1 = producer_claim(oh1, want)
    c2, g2 = producer_claim(oh2, want)
    c3, g3 = producer_claim(oh3, want)
    if g0 < mo or g1 < mo or g2 < mo or g3 < mo:
        return -1
    k = min(k, g0 // mo, g1 // mo, g2 // mo, g3 // mo)
    ix = _index(ih, p)
    x0 = _index(oh0, c0)
    x1 = _index(oh1, c1)
    x2 = _index(oh2, c2)
    x3 = _index(oh3, c3)
    venue = os0[x0 : x0 + g0]
    fills = os1[x1 : x1 + g1]
    events = os3[x3 : x3 + g3]
    seq = np.int64(ls[L_NEXT_SEQ])
    n0 = 0
    n2 = 0
    if i == 0:
        nv, nf, nseq = orders_kernel(s0[ix : ix + k], venue, fills, seq, oms, monotonic_ns())
        copies = os2[x2 : x2 + g2]
        for r in range(nv):
            copies[r] = venue[r]
        for r in range(nf):
            events[r] = fills[r]
        n0 = nv
        n2 = nv
        n3 = nf
    else:
        nf, n3, nseq = execs_kernel(s1[ix : ix + k], fills, events, _KEEP_EVENTS, seq, oms)
    ls[L_CUR + i] = p + np.uint64(k)
    base = _buffer(ls)
    blk[base + C_CURSOR] = ls[L_CUR]
    blk[base + C_CURSOR + 1] = ls[L_CUR + 1]
    blk[base + C_VALID_AT] = c0 + np.uint64(n0)
    blk[base + C_VALID_AT + 1] = c1 + np.uint64(nf)
    blk[base + C_VALID_AT + 2] = c2 + np.uint64(n2)
    blk[base + C_VALID_AT + 3] = c3 + np.uint64(n3)
    _seal(blk, base, ls, nseq)
    _commit(ls, 0, oh0, n0, wake_out[0])
    _commit(ls, 1, oh1, nf, wake_out[1])
    _commit(ls, 2, oh2, n2, wake_out[2])
    _commit(ls, 3, oh3, n3, wake_out[3])
    _release(ls, i, ih, k, wake_in[i])
    _done(ls, blk, k, n0 + nf + n2 + n3)
    return k


@njit(nogil=True, cache=True)
def _park(sig, risk, oms, waiters, addrs, deadline_ns, sdep, rdep):
    """Sleep on every input ring fed from outside the group (``futex_waitv``) until a
    producer publishes or ``deadline_ns``; at once when one of them holds a record.
    ``addrs``: the data-signal addresses of the inputs in member order (signals 0; risk
    0, 1, 2; orders 0, 1); a depth input's is in its tuple (``sdep``, ``rdep``: last),
    ``waiters`` has room for every input."""
    s_in = sig[2]
    r_in = risk[2]
    o_in = oms[2]
    sr = sig[4]
    rr = risk[4]
    orr = oms[4]
    n = np.int64(0)  # not a bare 0: announce would compile for Literal[int](0) too
    ok = True
    if s_in[0]:
        ok = announce(sr[0], waiters, n, addrs[0])
        n += 1
    if ok and r_in[0]:
        ok = announce(rr[0], waiters, n, addrs[1])
        n += 1
    if ok and r_in[1]:
        ok = announce(rr[2], waiters, n, addrs[2])
        n += 1
    if ok and r_in[2]:
        ok = announce(rr[4], waiters, n, addrs[3])
        n += 1
    if ok and o_in[0]:
        ok = announce(orr[0], waiters, n, addrs[4])
        n += 1
    if ok and o_in[1]:
        ok = announce(orr[2], waiters, n, addrs[5])
        n += 1
    if sdep is not None and ok and s_in[1]:
        ok = announce(sdep[0], waiters, n, sdep[5])
        n += 1
    if rdep is not None and ok and r_in[3]:
        ok = announce(rdep[0], waiters, n, rdep[2])
        n += 1
    if ok and n > 0:
        futex_waitv(waiters, n, deadline_ns)
    if s_in[0]:
        end_park(sr[0])
    if r_in[0]:
        end_park(rr[0])
    if r_in[1]:
        end_park(rr[2])
    if r_in[2]:
        end_park(rr[4])
    if o_in[0]:
        end_park(orr[0])
    if o_in[1]:
        end_park(orr[2])
    if sdep is not None and s_in[1]:
        end_park(sdep[0])
    if rdep is not None and r_in[3]:
        end_park(rdep[0])


@njit(nogil=True, cache=True)
def _states_moved(rs, timers):
    """Whether the trading-state generation or a breaker word differs from the one seen
    last (``timers[5]``, ``timers[6 + b]``); updates what was seen. One load, plus one per
    breaker."""
    moved = False
    g = state_generation(rs.trading)
    if g != timers[5]:
        timers[5] = g
        moved = True
    for b in range(rs.brk_scope.shape[0]):
        w = np.int64(breaker_state_word(rs.brk, b))
        if w != timers[6 + b]:
            timers[6 + b] = w
            moved = True
    return moved


@njit(nogil=True, cache=True)
def _beat(sig, risk, oms, sd, rd, now):
    """What ``StageRunner._housekeep`` beats, from the cycle (every ``BEAT_NS``): each
    member's heartbeat in its control-block slot (the supervisor's liveness, timeout 5 s)
    and its rings' consumer/producer heartbeats (ages in ``bot4 stats``)."""
    t = np.uint64(now)
    sig[1][S_HEARTBEAT_NS] = t
    risk[1][S_HEARTBEAT_NS] = t
    oms[1][S_HEARTBEAT_NS] = t
    ih, _isl, oh, _osl = sig[4]
    beat_consumer(ih)
    beat_producer(oh)
    h0, _s0, h1, _s1, h2, _s2, oh0, _os0, oh1, _os1 = risk[4]
    beat_consumer(h0)
    beat_consumer(h1)
    beat_consumer(h2)
    beat_producer(oh0)
    beat_producer(oh1)
    g0, _t0, g1, _t1, p0, _u0, p1, _u1, p2, _u2, p3, _u3 = oms[4]
    beat_consumer(g0)
    beat_consumer(g1)
    beat_producer(p0)
    beat_producer(p1)
    beat_producer(p2)
    beat_producer(p3)
    if sd is not None:
        beat_consumer(sd[0])
    if rd is not None:
        beat_consumer(rd[0])


@njit(nogil=True, cache=True)
def hot_cycle(
    sig, risk, oms, words, batches, oms_mo, deadline_ns, spin_ns, yld, park, waiters, addrs,
    timers, sdep, rdep,
):  # fmt: skip
    """Rounds of the signals, risk and orders members until a return condition (module
    docstring). ``batches``: each member's batch size (records per input per round);
    ``words``: the control block's words; ``park``: after ``spin_ns`` without work, sleep
    on the external inputs (:func:`_park`) until data or the deadline instead of
    returning ``R_IDLE``; ``timers``: int64 ``[stale_every, stale check due, beat due,
    recon mismatches seen, exec-id conflicts seen, trading-state generation seen, then
    each breaker's word seen]`` (ns; risk's stale-data check runs here every
    ``stale_every`` when it is > 0; the group's process owns the array);
    ``sdep``, ``rdep``: the depth inputs of signals
    (:func:`signals_depth_step`) and risk (:func:`risk_depth_step`), each None where it
    is not wired: numba compiles one ``hot_cycle`` per wiring, and a None's branches are
    pruned at compile time (the default wiring's rounds are what they were without
    them). Returns ``(reason, records read)``."""
    # every array borrowed once (bot4.nbkit.unowned): without it each round paid an NRT
    # incref and decref (a lock add each) per array a step unpacked or passed on, ~2/3 of
    # the group's samples (perf, default run) and the length of an idle round, which is
    # what a tick arriving from md waits for on average
    sig = unowned(sig)
    risk = unowned(risk)
    oms = unowned(oms)
    words = unowned(words)
    batches = unowned(batches)
    waiters = unowned(waiters)
    addrs = unowned(addrs)
    timers = unowned(timers)
    # a new name: numba prunes the branches of an argument that is None, not of a
    # variable assigned in the function
    sd = _borrow(sdep)
    rd = _borrow(rdep)
    total = 0
    idle_since = np.int64(0)
    while True:
        work = 0
        # the order path first (ticks -> intents -> orders), then the other inputs: a
        # tick's order leaves before the round applies fills and market data
        for k in range(6):
            if k == 0:
                r = signals_step(sig, batches[0], sd)
            elif k == 1:
                r = risk_step(risk, _IN0, batches[1], rd)
            elif k == 2:
                r = orders_step(oms, _IN0, batches[2], oms_mo)
            elif k < 5:
                r = risk_step(risk, np.int64(k - 2), batches[1], rd)
            else:
                r = orders_step(oms, _IN1, batches[2], oms_mo)
            if r < 0:
                _wake_peers(sig, risk, oms, sd, rd)
                return R_BAIL, total + work
            work += r
            if k == 2:  # the order went to the venue: wake it (and persistence) now
                _wake_peers(sig, risk, oms, sd, rd)
        # the depth inputs last, like fills and market data: they write no output (never
        # a bail) and move only state the next tick's batch reads
        if sdep is not None:
            work += signals_depth_step(sig, sd, batches[0])
        if rdep is not None:
            work += risk_depth_step(risk, rd, batches[1])
        _wake_peers(sig, risk, oms, sd, rd)
        total += work
        if load_relaxed(words, W_PIPE_STATE) != PIPE_RUNNING:
            return R_STATE, total
        now = monotonic_ns()
        if now >= timers[2]:
            timers[2] = now + BEAT_NS
            _beat(sig, risk, oms, sd, rd, now)
        # risk's stale-data check (RiskStage.pending's, same kernel), so the Python round
        # need not come this often; the stage logs the episodes it started from its
        # counters
        if timers[0] > 0 and now >= timers[1]:
            timers[1] = now + timers[0]
            check_staleness(risk[5], now)
        # the kill switch, a breaker or stale data halted something: its CANCEL_ALLs go
        # out from the risk member's Python hook now, not at the next deadline (one load
        # when nothing changed; breakers only where breaker_action = "halt")
        if poll_states(risk[5]) > 0:
            return R_PENDING, total
        # the OMS found a late reconciliation disagreement or an exec-id conflict: the
        # orders stage halts the instrument or alarms from Python now (after_reports)
        ctr = oms[5].ctr
        if ctr[C_RECON_MISMATCH] != timers[3] or ctr[C_EXEC_CONFLICT] != timers[4]:
            timers[3] = ctr[C_RECON_MISMATCH]
            timers[4] = ctr[C_EXEC_CONFLICT]
            return R_PENDING, total
        # a trading state or a breaker changed (operator, another stage): risk's state log
        # records the transition now, not only the net change at the next deadline
        if _states_moved(risk[5], timers):
            return R_PENDING, total
        # housekeeping waits for a round without work (a batch in flight is not held up
        # by the members' Python round), at most one more HOUSEKEEP_NS
        if now >= deadline_ns and (work == 0 or now - deadline_ns >= HOUSEKEEP_NS):
            return R_DEADLINE, total
        if work:
            idle_since = 0
            continue
        if idle_since == 0:
            idle_since = now
        elif now - idle_since >= spin_ns:
            if not park:
                return R_IDLE, total
            _park(sig, risk, oms, waiters, addrs, min(deadline_ns, now + PARK_NS), sd, rd)
            continue
        if yld:
            sched_yield()
        else:
            cpu_pause()
