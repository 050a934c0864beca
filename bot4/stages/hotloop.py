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

The member steps (one batch of one input, as ``StageRunner._step``) are
``bot4.stages.hotsteps``. This module holds the compiled side only (numba's cache keys it by its imports); the
Python side that binds it to a group's members (``HotPath``: which groups qualify, packing
their state, copying the loop-state words in and out) is ``bot4.stages.hotpath``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from bot4.nbkit import unowned
from bot4.nbkit.hot import hot
from bot4.nbkit.inner import inner
from bot4.oms.state import C_EXEC_CONFLICT, C_RECON_MISMATCH
from bot4.risk.killswitch import check_staleness, poll_states
from bot4.shm.atomics import cpu_pause, load_relaxed, monotonic_ns, sched_yield
from bot4.shm.breakers import breaker_state_word
from bot4.shm.control import (
    PIPE_RUNNING,
    S_HEARTBEAT_NS,
    W_PIPE_STATE,
)
from bot4.shm.ring_layout import W_WAIT, WAIT_SPIN_PARK
from bot4.shm.ring_ops import (
    beat_consumer,
    beat_producer,
    wake_consumer,
    wake_producer,
)
from bot4.shm.trading_state import state_generation
from bot4.shm.waitv import announce, end_park, futex_waitv
from bot4.stages.hotsteps import (
    _IN0,
    _IN1,
    _ONE,
    L_WAKE_IN,
    L_WAKE_OUT,
    orders_step,
    risk_depth_step,
    risk_step,
    signals_depth_step,
    signals_step,
)

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
# What only reads (the stages' own counters and the risk panel in bot4 stats, logging,
# systemd's watchdog) runs beside the cycle on the group's housekeeping thread
# (bot4.stages.hotkeeper), which pokes the cycle (``T_POKE``) for SIGTERM; the deadline
# is a backstop (a round a minute: one tick in a minute may meet a cold round).
HOUSEKEEP_NS = 60_000_000_000
#: ``hot_cycle``'s ``timers`` words: risk's stale-data check interval (0: off) and next
#: due time, the next beat, the OMS's recon mismatches and exec-id conflicts last acted
#: on, the trading-state generation seen, the housekeeping thread's poke (non-zero:
#: return R_PENDING), then each breaker's word seen (``T_BRK + b``)
T_STALE_EVERY, T_STALE_DUE, T_BEAT_DUE, T_RECON, T_CONFLICT, T_GEN, T_POKE, T_BRK = range(8)
BEAT_NS = 100_000_000  # the cycle's heartbeats (bot4 stats flags one older than 1 s)
PARK_NS = 1_000_000  # longest park inside the cycle before it polls the state word again


def _borrow(part):
    """:func:`~bot4.nbkit.unowned` of an optional part of :func:`hot_cycle`'s arguments
    (a depth input's tuple), None where it is not wired. Called from Python (no
    compiled caller) it returns the part itself: nothing is reference counted there."""
    return part


@overload(_borrow)
def _borrow_impl(part):
    if isinstance(part, types.NoneType):
        return lambda part: part
    return lambda part: unowned(part)


@njit(nogil=True, cache=True, inline="always")
def _wake_ring(ls, word, bit, hdr, out):
    if ls[word] & (_ONE << np.uint64(bit)) and hdr[W_WAIT] == WAIT_SPIN_PARK:
        if out:
            wake_consumer(hdr)
        else:
            wake_producer(hdr)


@inner(_nrt=False)
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


@inner(_nrt=False)
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


@inner(_nrt=False)
def _states_moved(rs, timers):
    """Whether the trading-state generation or a breaker word differs from the one seen
    last (``timers[T_GEN]``, ``timers[T_BRK + b]``); updates what was seen. One load, plus one per
    breaker."""
    moved = False
    g = state_generation(rs.trading)
    if g != timers[T_GEN]:
        timers[T_GEN] = g
        moved = True
    for b in range(rs.brk_scope.shape[0]):
        w = np.int64(breaker_state_word(rs.brk, b))
        if w != timers[T_BRK + b]:
            timers[T_BRK + b] = w
            moved = True
    return moved


@inner(_nrt=False)
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


@hot
def hot_cycle(sig, risk, oms, arrays, how, sdep, rdep):
    """Rounds of the signals, risk and orders members until a return condition (module
    docstring). ``arrays``: the cycle's own arrays, ``(words, batches, waiters, addrs,
    timers)`` (:meth:`bot4.stages.hotpath.HotPath.cycle_arrays`, owned by the group's
    process): the control block's words; each member's batch size (records per input per
    round); room for the park's futex_waitv entries and their data-signal addresses
    (:func:`_park`); int64 ``timers`` laid out by the ``T_*`` offsets (ns; risk's
    stale-data check runs here every ``timers[T_STALE_EVERY]`` when it is > 0; the
    housekeeping thread writes ``T_POKE``). ``how``: this call's ``(deadline_ns,
    spin_ns, yld, park, oms_mo)``: the deadline (ns, monotonic), the spin before idling
    (ns), ``sched_yield`` between empty rounds, ``park``: after ``spin_ns`` without work,
    sleep on the external inputs until data or the deadline instead of returning
    ``R_IDLE``, and the orders member's ``max_out_per_in``. ``sdep``, ``rdep``: the depth
    inputs of signals (:func:`signals_depth_step`) and risk (:func:`risk_depth_step`),
    each None where it is not wired: numba compiles one ``hot_cycle`` per wiring, and a
    None's branches are pruned at compile time (the default wiring's rounds are what they
    were without them; why they stay separate arguments). Returns ``(reason, records
    read)``."""
    # every array borrowed once (bot4.nbkit.unowned): without it each round paid an NRT
    # incref and decref (a lock add each) per array a step unpacked or passed on; the
    # whole tree is also compiled without reference counting (bot4.nbkit.hot)
    sig = unowned(sig)
    risk = unowned(risk)
    oms = unowned(oms)
    words, batches, waiters, addrs, timers = unowned(arrays)
    deadline_ns, spin_ns, yld, park, oms_mo = how
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
        if now >= timers[T_BEAT_DUE]:
            timers[T_BEAT_DUE] = now + BEAT_NS
            _beat(sig, risk, oms, sd, rd, now)
        # risk's stale-data check (RiskStage.pending's, same kernel), so the Python round
        # need not come this often; the stage logs the episodes it started from its
        # counters
        if timers[T_STALE_EVERY] > 0 and now >= timers[T_STALE_DUE]:
            timers[T_STALE_DUE] = now + timers[T_STALE_EVERY]
            check_staleness(risk[5], now)
        # the kill switch, a breaker or stale data halted something: its CANCEL_ALLs go
        # out from the risk member's Python hook now, not at the next deadline (one load
        # when nothing changed; breakers only where breaker_action = "halt")
        if poll_states(risk[5]) > 0:
            return R_PENDING, total
        # the OMS found a late reconciliation disagreement or an exec-id conflict: the
        # orders stage halts the instrument or alarms from Python now (after_reports)
        ctr = oms[5].ctr
        if ctr[C_RECON_MISMATCH] != timers[T_RECON] or ctr[C_EXEC_CONFLICT] != timers[T_CONFLICT]:
            timers[T_RECON] = ctr[C_RECON_MISMATCH]
            timers[T_CONFLICT] = ctr[C_EXEC_CONFLICT]
            return R_PENDING, total
        # a trading state or a breaker changed (operator, another stage): risk's state log
        # records the transition now, not only the net change at the next deadline
        if _states_moved(risk[5], timers):
            return R_PENDING, total
        # the group's housekeeping thread wants the members' Python (SIGTERM, its own
        # failure: bot4.stages.hotkeeper); the caller clears the word
        if timers[T_POKE]:
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
