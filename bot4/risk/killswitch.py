"""The kill switch, stale-data halts and the daily-loss guard: the risk kernels that act
on trading states (see :mod:`bot4.risk.checks` for the rules they implement).

Every function takes the process's :class:`~bot4.risk.layout.RiskState` (``st``). The
trading-state and breaker words are shared (multi-writer by compare-exchange); everything
else in ``st`` is this process's own.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit.hot import hot
from bot4.records import ACTION_CANCEL_ALL
from bot4.risk.layout import (
    A_BREAKER_HALTS,
    A_DAILY_HALT,
    A_DAILY_LOSS,
    A_FEED_GONE_NS,
    A_RISK_PRODUCER,
    C_CANCEL_ALL,
    C_FEED_GONE,
    C_RESETS,
    C_STALE,
    C_STALE_RELAXED,
    COID_PRODUCER_SHIFT,
    COID_SEQ_MASK,
    I_MD_NS,
    I_STALE,
    L_BREAKER,
    L_STALE_NS,
    R_BREAKER_OPEN,
    R_DAILY_LOSS,
    R_STALE_FEED,
    X_DAY_START,
    X_FEED_GONE,
    X_LAST_MD_NS,
    X_LAST_RESET_NS,
    X_NEXT_RESET_NS,
    X_PENDING,
    X_REALISED,
    X_TS_GEN,
    X_UNREALISED,
)
from bot4.shm.breakers import OPEN as BRK_OPEN
from bot4.shm.breakers import breaker_state_word, breaker_word_epoch, breaker_word_state
from bot4.shm.trading_state import (
    ACTIVE,
    HALTED,
    REDUCING,
    SRC_RISK,
    raise_state,
    relax_state,
    state_generation,
    state_word,
    word_reason,
    word_source,
    word_state,
)

# constants handed to the trading-state kernels go as int64 scalars, not bare: numba
# compiles a callee once per distinct literal argument (docs/compile.md)
_i = np.int64
_I0 = np.int64(0)

__all__ = [
    "after_batch",
    "check_staleness",
    "clear_order",
    "daily_guard",
    "daily_guard_of",
    "daily_loss",
    "emit_cancels",
    "is_stale_halt",
    "maybe_reset",
    "md_arrived",
    "poll_states",
    "stale_halt",
]


@njit(nogil=True, cache=True)
def daily_loss(st):
    """Loss since the last daily reset (realised + unrealised), price units."""
    a = st.acct
    return a[X_DAY_START] - (a[X_REALISED] + a[X_UNREALISED])


@hot
def daily_guard_of(acct, alim, trading):
    """:func:`daily_guard` on the three arrays it reads (the per-intent check's form: a
    helper handed the whole state binds every one of its arrays)."""
    loss = acct[X_DAY_START] - (acct[X_REALISED] + acct[X_UNREALISED])
    halt = alim[A_DAILY_HALT]
    if halt > 0 and loss >= halt:
        raise_state(trading, _I0, _i(HALTED), _i(R_DAILY_LOSS), _i(SRC_RISK))
    limit = alim[A_DAILY_LOSS]
    if limit > 0 and loss >= limit:
        raise_state(trading, _I0, _i(REDUCING), _i(R_DAILY_LOSS), _i(SRC_RISK))
    return loss


@hot
def daily_guard(st):
    """Escalate global trading if the loss since the reset reached a limit; returns the loss."""
    return daily_guard_of(st.acct, st.alim, st.trading)


@hot
def maybe_reset(st, now_ns):
    """Apply the scheduled daily reset once ``now_ns`` passed it."""
    a = st.acct
    nxt = a[X_NEXT_RESET_NS]
    if nxt > 0 and now_ns >= nxt:
        a[X_DAY_START] = a[X_REALISED] + a[X_UNREALISED]
        a[X_LAST_RESET_NS] = nxt
        a[X_NEXT_RESET_NS] = 0
        relax_state(st.trading, _I0, _i(REDUCING), _i(R_DAILY_LOSS), _i(SRC_RISK), _i(ACTIVE))
        st.counters[C_RESETS] += 1


@hot
def is_stale_halt(w):
    """The state word is exactly the halt the stale-data rule sets (HALTED, stale, risk)."""
    return word_state(w) == HALTED and word_reason(w) == R_STALE_FEED and word_source(w) == SRC_RISK


@hot
def stale_halt(trading, target):
    """Halt ``target`` for stale data; returns its stale flag: 1 + the state to relax to."""
    w = state_word(trading, target)
    prev = raise_state(trading, target, _i(HALTED), _i(R_STALE_FEED), _i(SRC_RISK))
    if prev == REDUCING and word_state(w) == REDUCING:
        by_daily_loss = word_reason(w) == R_DAILY_LOSS and word_source(w) == SRC_RISK
        if not by_daily_loss:  # nothing would re-assert it: keep it
            return 1 + REDUCING
    return 1 + ACTIVE


@hot
def md_arrived(st, inst, now_ns):
    """Stamp a market-data arrival for ``inst``; end its stale episode and a feed-gone one."""
    t = max(now_ns, np.int64(1))
    st.inst[inst, I_MD_NS] = t
    if t > st.acct[X_LAST_MD_NS]:
        st.acct[X_LAST_MD_NS] = t
    f = st.inst[inst, I_STALE]
    if f != 0:
        st.inst[inst, I_STALE] = 0
        if relax_state(st.trading, inst, _i(HALTED), _i(R_STALE_FEED), _i(SRC_RISK), f - 1):
            st.counters[C_STALE_RELAXED] += 1
    g = st.acct[X_FEED_GONE]
    if g != 0:
        st.acct[X_FEED_GONE] = 0
        if relax_state(st.trading, _I0, _i(HALTED), _i(R_STALE_FEED), _i(SRC_RISK), g - 1):
            st.counters[C_STALE_RELAXED] += 1


@hot
def check_staleness(st, now_ns):
    """Halt the instruments whose market data stopped (``L_STALE_NS``) and global trading if
    all of it stopped (``A_FEED_GONE_NS``); returns the stale episodes started now. The
    CANCEL_ALLs follow from the kill switch at the next poll."""
    started = 0
    ilim = st.ilim
    for inst in range(1, min(ilim.shape[0], st.seen.shape[0])):
        lim = ilim[inst, L_STALE_NS]
        last = st.inst[inst, I_MD_NS]
        if lim <= 0 or last == 0 or st.inst[inst, I_STALE] != 0 or now_ns - last <= lim:
            continue
        st.inst[inst, I_STALE] = stale_halt(st.trading, inst)
        st.counters[C_STALE] += 1
        started += 1
    gone = st.alim[A_FEED_GONE_NS]
    last = st.acct[X_LAST_MD_NS]
    if gone > 0 and last > 0 and st.acct[X_FEED_GONE] == 0 and now_ns - last > gone:
        st.acct[X_FEED_GONE] = stale_halt(st.trading, _I0)
        st.counters[C_FEED_GONE] += 1
        started += 1
    return started


@hot
def poll_states(st):
    """Breakers newly OPEN halt what they guard (``breaker_action = "halt"``); targets that
    became HALTED queue a CANCEL_ALL. Returns the CANCEL_ALLs queued."""
    trading = st.trading
    seen = st.seen
    if st.alim[A_BREAKER_HALTS] != 0:
        for b in range(st.brk_scope.shape[0]):
            if st.brk_scope[b] < 0:
                continue
            w = breaker_state_word(st.brk, b)
            epoch = breaker_word_epoch(w)
            if breaker_word_state(w) != BRK_OPEN or epoch == st.brk_seen[b]:
                continue
            st.brk_seen[b] = epoch
            if st.brk_scope[b] == 1:
                raise_state(trading, _I0, _i(HALTED), _i(R_BREAKER_OPEN), _i(SRC_RISK))
            else:
                for inst in range(1, seen.shape[0]):
                    if st.ilim[inst, L_BREAKER] == b:
                        raise_state(trading, inst, _i(HALTED), _i(R_BREAKER_OPEN), _i(SRC_RISK))
    gen = state_generation(trading)
    if gen == st.acct[X_TS_GEN]:
        return st.acct[X_PENDING]
    st.acct[X_TS_GEN] = gen
    for t in range(seen.shape[0]):
        w = state_word(trading, t)
        if w == seen[t]:
            continue
        seen[t] = w
        if word_state(w) == HALTED and st.pend[t] == 0:
            st.pend[t] = 1
            st.acct[X_PENDING] += 1
    return st.acct[X_PENDING]


@hot
def clear_order(o):
    """Zero every field of an ORDER slot the writers below do not set (ring slots are
    reused: nothing of an earlier record may leak)."""
    o.parent_seq = 0
    o.ts_event_ns = 0
    o.ts_recv_ns = 0
    o.ts_signal_ns = 0
    o.ts_order_ns = 0
    o.orig_client_order_id = 0
    o.order_id = 0
    o.qty = 0
    o.limit_price = 0
    o.stop_price = 0
    o.strategy = 0
    o.side = 0
    o.order_type = 0
    o.tif = 0
    o.stp_mode = 0
    o.stp_group = 0
    o.model_id = 0
    for j in range(o.reserved.shape[0]):
        o.reserved[j] = 0
    for j in range(o.reserved2.shape[0]):
        o.reserved2[j] = 0


@hot
def emit_cancels(st, out, n, end, s, now_ns):
    """Write queued CANCEL_ALLs into ``out[n:end]``, numbered from ``s``; returns (n, s)
    after them."""
    if st.acct[X_PENDING] == 0:
        return n, s
    pend = st.pend
    producer = np.uint64(st.alim[A_RISK_PRODUCER]) << np.uint64(COID_PRODUCER_SHIFT)
    for t in range(pend.shape[0]):
        if n >= end:
            break
        if pend[t] == 0:
            continue
        o = out[n]
        clear_order(o)
        o.seq = s
        o.client_order_id = producer | np.uint64(s & COID_SEQ_MASK)
        o.ts_risk_ns = now_ns
        o.instrument = t
        o.action = ACTION_CANCEL_ALL
        pend[t] = 0
        st.acct[X_PENDING] -= 1
        st.counters[C_CANCEL_ALL] += 1
        n += 1
        s += 1
        if t == 0:  # cancels every instrument: the per-instrument ones are covered
            for u in range(1, pend.shape[0]):
                if pend[u] != 0:
                    pend[u] = 0
                    st.acct[X_PENDING] -= 1
            break
    return n, s


@hot
def after_batch(st, out_orders, seq, now_ns):
    """What every batch that moves PnL or state ends with: the daily-loss guard, the state
    poll, and the CANCEL_ALLs they call for; returns the number of orders written."""
    daily_guard(st)
    poll_states(st)
    n, _ = emit_cancels(st, out_orders, _I0, out_orders.shape[0], seq, now_ns)
    return n
