"""Matching: an aggressor takes liquidity in price-time order; self-trade prevention;
the trade-through fill model; what an order of ours does after it is accepted.


**Matching.** An incoming order (ours, an external add, a quote) first takes liquidity
from the opposite side in price-time order at prices better than or equal to its limit;
fills are at the resting order's price; what is left rests (DAY / GTC), or is cancelled
(IOC, market); FOK fills completely or is cancelled without touching the book. The book is
therefore never crossed. Our taker gets one fill report per price level it trades at
(the fills of one level are summed, so a sweep reports at most one line per level); each
of our resting makers gets one report per fill. External orders trading against each other
produce no report.

**Self-trade prevention** (``docs/stp.md``), at match time, with the exchanges' semantics:
when our taker meets our own resting order of the same ``stp_group``, the *taker's* mode
(``ORDER.stp_mode``; 0 = the venue's default, ``v[V_STP_DEFAULT]``) is applied to that
resting order, the one actually met in price-time order: liquidity of others (and of our
other groups) ahead of it or at better prices trades first. ``STP_CANCEL_RESTING`` expires
the resting order and the taker goes on; ``STP_CANCEL_NEW`` expires the taker's remaining
quantity (the resting order stays); ``STP_CANCEL_BOTH`` expires both; ``STP_DECREMENT``
reduces both by the smaller leaves, expiring the one that reaches 0 (both when equal), and
the taker goes on with what it has left. An expiry is reported ``EXEC_STP_EXPIRED``
(status EXPIRED, leaves 0), a reduction ``EXEC_STP_DECREMENTED`` (still live, leaves and
qty reduced), each with ``prevented_qty`` and reason ``Code.SELF_TRADE``, resting order
first; neither is a fill. The resting order's own mode is ignored. A FOK taker counts only
what would fill (prevented quantity does not). Market data never carries our orders, so
the market-data paths (external aggressors, quote and order-level fills of our resting
orders) have no self-trade to prevent.
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit.hot import hot
from bot4.records import (
    EXEC_CANCELLED,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_BOTH,
    STP_CANCEL_NEW,
    STP_CANCEL_RESTING,
    STP_NONE,
    TIF_FOK,
    TIF_IOC,
)
from bot4.venue.book import (
    _alloc,
    _append,
    _discard_external,
    _release_slot,
    _resize,
    _unlink,
)
from bot4.venue.layout import (
    ASK,
    AT_LIMIT_ALL,
    AT_LIMIT_FRONT,
    AT_LIMIT_NONE,
    AT_LIMIT_SNAPSHOT,
    AT_LIMIT_UNTIL,
    BID,
    BK_QUOTE,
    LH,
    LK,
    LQ,
    OWN_OURS,
    OWN_QUOTE,
    OWN_SNAPSHOT,
    R_MAX_OPEN,
    R_OK,
    RF_STP_EXPIRED,
    S_EXT_DROPPED,
    S_EXT_TRADED,
    S_OWN_TRADED,
    S_STP_MATCHES,
    V_MAKER_FEE,
    V_TAKER_FEE,
)
from bot4.venue.reports import (
    _report_fill,
    _report_own,
    _report_stp,
    _retire,
)


@hot
def _crosses(aside, px, limit):
    return px <= limit if aside == SIDE_BUY else px >= limit


@hot
def _take(st, b, aggressor, at_limit, stop, now, pseq):
    """An aggressor ``(aside, limit, qty, taker)`` (int64 each) of side ``aside`` takes up
    to ``qty`` shares at prices crossing ``limit`` from book ``b``, best price first, in
    time order within a price.

    ``taker`` is the aggressor's pool slot (ours: reports, self-trade prevention;
    external: no reports) or -1 for an execution seen in market data. ``at_limit`` says
    how far into the level at the limit price it may go (AT_LIMIT_*; ``stop`` is the
    named order of AT_LIMIT_UNTIL). Returns the shares left untraded.

    Self-trade prevention: when our taker with a mode other than ``STP_NONE`` meets our
    resting order of its ``stp_group``, :func:`_prevent` applies the taker's mode to that
    order (the one actually met, in priority order; liquidity ahead of it has traded); the
    taker's fills of the level so far are reported first. An expired taker stops here.
    """
    aside, limit, qty, taker = aggressor
    pool = st.pool
    levels = st.levels
    nlev = st.nlev
    v = st.v
    ms = ASK if aside == SIDE_BUY else BID
    ours_taker = taker >= 0 and pool[taker].owner == OWN_OURS
    stp_mode = pool[taker].stp_mode if ours_taker else STP_NONE
    stp_group = pool[taker].stp_group if ours_taker else np.uint32(0)
    rem = qty
    while rem > 0 and nlev[b, ms] > 0:
        j = nlev[b, ms] - 1
        key = levels[b, ms, j, LK]
        px = key if ms == BID else -key
        if not _crosses(aside, px, limit):
            break
        at_lim = px == limit
        if at_lim and at_limit == AT_LIMIT_NONE:
            break
        done_here = False
        level_fill = np.int64(0)
        m = levels[b, ms, j, LH]
        while m >= 0 and rem > 0:
            o = pool[m]
            nxt = o.next
            if at_lim and (
                (at_limit == AT_LIMIT_FRONT and o.owner != OWN_OURS)
                or (at_limit == AT_LIMIT_SNAPSHOT and o.owner != OWN_SNAPSHOT)
            ):
                done_here = True
                break
            if stp_mode != STP_NONE and o.owner == OWN_OURS and o.stp_group == stp_group:
                if level_fill > 0:
                    _taker_fill(st, taker, level_fill, px, now, pseq)
                    level_fill = np.int64(0)
                rem = _prevent(st, m, taker, stp_mode, now, pseq)
                if rem == 0:
                    done_here = True
                    break
                m = nxt
                continue
            f = min(rem, o.leaves)
            o.leaves -= f
            levels[b, ms, j, LQ] -= f
            rem -= f
            level_fill += f
            if o.owner == OWN_OURS:
                o.cum_qty += f
                if ours_taker:
                    v[S_OWN_TRADED] += f
                _report_fill(st, now, pseq, m, f, px, v[V_MAKER_FEE])
                if o.leaves == 0:
                    _unlink(st, m)
                    _retire(st, m, np.int64(OS_FILLED))
            else:
                if not ours_taker:
                    v[S_EXT_TRADED] += f
                if o.leaves == 0:
                    _unlink(st, m)
                    _discard_external(st, m)
            if at_lim and at_limit == AT_LIMIT_UNTIL and m == stop:
                done_here = True
                break
            m = nxt
        if taker >= 0 and level_fill > 0:
            if ours_taker:
                _taker_fill(st, taker, level_fill, px, now, pseq)
            else:
                pool[taker].leaves -= level_fill
        if done_here:
            break
    return rem


@hot
def _taker_fill(st, taker, qty, px, now, pseq):
    """Our taker in slot ``taker`` filled ``qty`` shares at ``px``: book it, report it."""
    t = st.pool[taker]
    t.leaves -= qty
    t.cum_qty += qty
    _report_fill(st, now, pseq, taker, qty, px, st.v[V_TAKER_FEE])


@hot
def _stp_expire_resting(st, m, prevented, now, pseq):
    """Our resting order in slot ``m`` expires by self-trade prevention."""
    _unlink(st, m)
    _report_stp(st, now, pseq, m, np.int64(EXEC_STP_EXPIRED), prevented)
    _retire(st, m, np.int64(OS_EXPIRED))


@hot
def _stp_expire_taker(st, taker, prevented, now, pseq):
    """Our taker in slot ``taker`` (not resting) expires: reported now, retired EXPIRED by
    its caller (``RF_STP_EXPIRED``)."""
    t = st.pool[taker]
    t.leaves = 0
    t.flags |= RF_STP_EXPIRED
    _report_stp(st, now, pseq, taker, np.int64(EXEC_STP_EXPIRED), prevented)


@hot
def _prevent(st, m, taker, mode, now, pseq):
    """Our taker (slot ``taker``, mode ``mode``) meets our resting order in slot ``m`` of
    its STP group: a prevented match. Reports go resting order first, then taker. Returns
    what the taker has left (0: it expired, matching stops).

    ``STP_CANCEL_RESTING``: the resting order expires (prevented = its leaves), the taker
    goes on. ``STP_CANCEL_NEW``: the taker expires (prevented = its leaves), the resting
    order stays untouched. ``STP_CANCEL_BOTH``: both expire. ``STP_DECREMENT``: both are
    reduced by ``d = min(both leaves)`` (their ``qty`` too, so ``leaves = qty - cum``
    holds); one that reaches 0 expires (both when equal), the other is reported
    ``EXEC_STP_DECREMENTED``; the taker goes on if it has shares left."""
    pool = st.pool
    o = pool[m]
    t = pool[taker]
    st.v[S_STP_MATCHES] += 1
    if mode == STP_CANCEL_RESTING:
        _stp_expire_resting(st, m, o.leaves, now, pseq)
        return t.leaves
    if mode == STP_CANCEL_NEW:
        _stp_expire_taker(st, taker, t.leaves, now, pseq)
        return np.int64(0)
    if mode == STP_CANCEL_BOTH:
        _stp_expire_resting(st, m, o.leaves, now, pseq)
        _stp_expire_taker(st, taker, t.leaves, now, pseq)
        return np.int64(0)
    d = min(o.leaves, t.leaves)  # STP_DECREMENT
    if d == o.leaves:
        _stp_expire_resting(st, m, d, now, pseq)
    else:
        _resize(st, m, o.leaves - d)
        o.qty -= d
        _report_stp(st, now, pseq, m, np.int64(EXEC_STP_DECREMENTED), d)
    if d == t.leaves:
        t.qty -= d
        _stp_expire_taker(st, taker, d, now, pseq)
        return np.int64(0)
    t.leaves -= d
    t.qty -= d
    _report_stp(st, now, pseq, taker, np.int64(EXEC_STP_DECREMENTED), d)
    return t.leaves


@hot
def _through(st, b, aside, limit, qty, now, pseq):
    """Trade-through fills (``QF_TRADE_THROUGH``): an aggressor of side ``aside`` at price
    ``limit`` fills our resting orders on the other side at prices strictly better than
    ``limit`` (ours only: other participants' liquidity is neither consumed nor in the way),
    best price first, time order within a price, at our price, up to ``qty`` shares.
    Returns the shares left."""
    pool = st.pool
    levels = st.levels
    nlev = st.nlev
    v = st.v
    ms = ASK if aside == SIDE_BUY else BID
    rem = qty
    j = nlev[b, ms] - 1
    while j >= 0 and rem > 0:
        key = levels[b, ms, j, LK]
        px = key if ms == BID else -key
        if (ms == BID and px <= limit) or (ms == ASK and px >= limit):
            break
        m = levels[b, ms, j, LH]
        while m >= 0 and rem > 0:
            o = pool[m]
            nxt = o.next
            if o.owner == OWN_OURS:
                f = min(rem, o.leaves)
                o.leaves -= f
                o.cum_qty += f
                levels[b, ms, j, LQ] -= f
                rem -= f
                _report_fill(st, now, pseq, m, f, px, v[V_MAKER_FEE])
                if o.leaves == 0:
                    _unlink(st, m)  # an emptied level goes; the worse ones keep their index
                    _retire(st, m, np.int64(OS_FILLED))
            m = nxt
        j -= 1
    return rem


@hot
def _quote_through(st, b, side, price, qty, now, pseq):
    """A new quote order in ``QF_TRADE_THROUGH`` mode: fill ours strictly through its price
    completely, drop the opposite quote order it touches or crosses, rest it unmatched.
    Returns its slot or -1."""
    books = st.books
    v = st.v
    _through(st, b, np.int64(side), price, np.int64(2**62), now, pseq)
    opp = books[b, BK_QUOTE + (ASK if side == SIDE_BUY else BID)]
    if opp >= 0:
        op = st.pool[opp].price
        if (side == SIDE_BUY and op <= price) or (side == SIDE_SELL and op >= price):
            _unlink(st, opp)
            _discard_external(st, opp)
    m = _alloc(st)
    if m < 0:
        v[S_EXT_DROPPED] += 1
        return -1
    o = st.pool[m]
    o.price = price
    o.leaves = qty
    o.qty = qty
    o.ext_id = 0
    o.instrument = b
    o.side = side
    o.owner = OWN_QUOTE
    if not _append(st, m):
        v[S_EXT_DROPPED] += 1
        _release_slot(st, m)
        return -1
    return m


@hot
def _available(st, b, aside, limit, want, mode, group):
    """Shares our aggressor (STP ``mode``, ``group``) could *fill* up to ``limit``, in
    priority order (stops counting at ``want``): prevented quantity is not filled. Our
    resting orders of ``group`` are skipped under ``STP_CANCEL_RESTING`` (they would
    expire) and end the count under the other modes (the taker expires or is
    decremented there); under ``STP_NONE``, and for other groups, they are liquidity."""
    pool = st.pool
    levels = st.levels
    nlev = st.nlev
    ms = ASK if aside == SIDE_BUY else BID
    total = 0
    for j in range(nlev[b, ms] - 1, -1, -1):
        key = levels[b, ms, j, LK]
        px = key if ms == BID else -key
        if not _crosses(aside, px, limit):
            break
        m = levels[b, ms, j, LH]
        while m >= 0:
            o = pool[m]
            if mode != STP_NONE and o.owner == OWN_OURS and o.stp_group == group:
                if mode != STP_CANCEL_RESTING:
                    return total
            else:
                total += o.leaves
                if total >= want:
                    return total
            m = o.next
    return total


@hot
def _work(st, m, tif, now, pseq):
    """Our order in slot ``m`` (not resting) trades what it can, then rests or ends."""
    o = st.pool[m]
    b = np.int64(o.instrument)
    _take(
        st,
        b,
        (np.int64(o.side), o.price, o.leaves, m),
        np.int64(AT_LIMIT_ALL),
        np.int64(-1),
        now,
        pseq,
    )
    if o.leaves == 0:
        _retire(st, m, OS_EXPIRED if o.flags & RF_STP_EXPIRED else OS_FILLED)
        return
    reason = R_OK
    if tif != TIF_IOC and tif != TIF_FOK:
        if _append(st, m):
            return
        reason = R_MAX_OPEN
    _report_own(st, now, pseq, m, np.int64(EXEC_CANCELLED), np.int64(OS_CANCELLED), reason)
    _retire(st, m, np.int64(OS_CANCELLED))
