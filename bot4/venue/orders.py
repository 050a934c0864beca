"""Our orders: NEW, CANCEL, REPLACE, QUERY and CANCEL_ALL, and cancel-on-disconnect.

**Our orders** (``venue_order_kernel``). NEW is acknowledged first, then trades. It is
rejected (nothing after) for a client order id of 0 or one the venue remembers (live or
finished: ``DUPLICATE_ORDER``), an unknown instrument, a side other than buy / sell, a
quantity <= 0, a limit price <= 0, a stop order or an STP mode the venue does not allow
(``VENUE_REJECTED``), and when ours or the pool are at capacity (``MAX_OPEN_ORDERS``).
``TIF_NONE`` counts as DAY; ``OT_MARKET`` is an IOC (or FOK) without a price limit. DAY and
GTC orders never expire here (no session clock). CANCEL names ``orig_client_order_id``, and
its report carries that id. REPLACE names ``orig_client_order_id`` and the new
``client_order_id`` (0 = keep the id), the new total ``qty`` including what has filled (0 =
unchanged; refused with ``INVALID_QTY`` unless above the filled quantity) and
``limit_price`` (0 = unchanged); the order loses its time priority on a price change or a
quantity increase, and trades at once if the new price crosses (under its STP mode: the
REPLACE's ``stp_mode`` if set, else the order's; the ``stp_group`` is the order's). A new
id retires the old one: it is remembered as CANCELLED with its fills, so a cancel of it is
TOO_LATE. QUERY names ``client_order_id`` (or ``orig_client_order_id`` when that is 0) and
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit.hot import hot
from bot4.nbkit.stamps import copy_stamps
from bot4.nbkit.u64map import map_find
from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    ACTION_QUERY,
    ACTION_REPLACE,
    EXEC_ACK,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_STATUS,
    OS_CANCELLED,
    OS_NEW,
    OS_NONE,
    OS_REJECTED,
    OT_LIMIT,
    OT_MARKET,
    OT_NONE,
    SIDE_BUY,
    SIDE_SELL,
    STP_DECREMENT,
    STP_NONE,
    TIF_DAY,
    TIF_FOK,
    TIF_IOC,
    TIF_NONE,
)
from bot4.venue.book import (
    _alloc,
    _map_set,
    _resize,
    _unlink,
)
from bot4.venue.layout import (
    _MARKET_BUY_LIMIT,
    LH,
    OWN_OURS,
    R_DUPLICATE,
    R_INVALID_QTY,
    R_MAX_OPEN,
    R_NEGATIVE_PRICE,
    R_OK,
    R_TOO_LATE,
    R_UNKNOWN_INSTRUMENT,
    R_UNKNOWN_ORDER,
    R_VENUE_REJECTED,
    S_ORDERS_IN,
    S_REPORTS,
    V_FREE_TOP,
    V_LIVE_OURS,
    V_MAX_OPEN,
    V_ORDER_ID,
    V_STP_ALLOWED,
    V_STP_DEFAULT,
)
from bot4.venue.match import (
    _available,
    _work,
)
from bot4.venue.reports import (
    _hist_add,
    _live_status,
    _report,
    _report_own,
    _retire,
)


@hot
def _reject(st, now, r, reason, remember):
    """REJECTED for request ``r``; remembered (so a repeat is a duplicate) if asked."""
    _report(
        st,
        now,
        r.seq,
        r,
        r,
        (np.int64(EXEC_REJECTED), np.int64(OS_REJECTED), reason),
        np.int64(0),
        np.int64(0),
    )
    if remember:
        _hist_add(st, r, np.int64(0), r.qty, r.limit_price, np.int64(OS_REJECTED))


@hot
def _on_new(st, r, now):
    pool = st.pool
    v = st.v
    nbooks = st.nlev.shape[0]
    clid = r.client_order_id
    if clid == 0:
        _reject(st, now, r, np.int64(R_VENUE_REJECTED), np.bool_(False))
        return
    if map_find(st.ours, clid) >= 0:
        _reject(st, now, r, np.int64(R_DUPLICATE), np.bool_(False))
        return
    tif = r.tif if r.tif != TIF_NONE else TIF_DAY
    limit = r.limit_price
    reason = R_OK
    if r.instrument == 0 or r.instrument >= nbooks:
        reason = R_UNKNOWN_INSTRUMENT
    elif r.side != SIDE_BUY and r.side != SIDE_SELL:
        reason = R_VENUE_REJECTED
    elif r.qty <= 0:
        reason = R_INVALID_QTY
    elif tif > TIF_FOK:
        reason = R_VENUE_REJECTED
    elif r.order_type == OT_MARKET:
        limit = _MARKET_BUY_LIMIT if r.side == SIDE_BUY else np.int64(0)
        if tif != TIF_FOK:
            tif = TIF_IOC
    elif r.order_type != OT_LIMIT and r.order_type != OT_NONE:
        reason = R_VENUE_REJECTED
    elif limit <= 0:
        reason = R_NEGATIVE_PRICE
    stp = r.stp_mode if r.stp_mode != STP_NONE else v[V_STP_DEFAULT]
    if reason == R_OK and not _stp_allowed(v, r.stp_mode):
        reason = R_VENUE_REJECTED
    if reason == R_OK and (v[V_FREE_TOP] == 0 or v[V_LIVE_OURS] >= v[V_MAX_OPEN]):
        reason = R_MAX_OPEN
    if reason != R_OK:
        _reject(st, now, r, reason, np.bool_(True))
        return
    m = _alloc(st)
    o = pool[m]
    o.price = limit
    o.leaves = r.qty
    o.qty = r.qty
    o.client_order_id = clid
    if r.order_id != 0:
        o.order_id = r.order_id
    else:
        v[V_ORDER_ID] += 1
        o.order_id = np.uint64(v[V_ORDER_ID])
    copy_stamps(o, r)
    o.instrument = r.instrument
    o.strategy = r.strategy
    o.side = r.side
    o.tif = tif
    o.owner = OWN_OURS
    o.stp_mode = stp
    o.stp_group = r.stp_group
    _map_set(st.ours, clid, m)
    v[V_LIVE_OURS] += 1
    _report_own(st, now, r.seq, m, np.int64(EXEC_ACK), np.int64(OS_NEW), np.int64(R_OK))
    b = np.int64(r.instrument)
    if tif == TIF_FOK and (
        _available(st, b, np.int64(o.side), limit, o.leaves, o.stp_mode, o.stp_group) < o.leaves
    ):
        _report_own(
            st, now, r.seq, m, np.int64(EXEC_CANCELLED), np.int64(OS_CANCELLED), np.int64(R_OK)
        )
        _retire(st, m, np.int64(OS_CANCELLED))
        return
    _work(st, m, np.int64(tif), now, r.seq)


@hot
def _stp_allowed(v, mode):
    """May an order carry STP ``mode``? 0 (the venue's default) always may."""
    if mode == STP_NONE:
        return True
    if mode > STP_DECREMENT:
        return False
    return (v[V_STP_ALLOWED] >> np.int64(mode)) & 1 == 1


@hot
def _live_slot(st, clid):
    """Pool slot of our live order ``clid``, or -1."""
    i = map_find(st.ours, clid)
    if i < 0 or st.ours[i, 1] < 0:
        return -1
    return st.ours[i, 1]


@hot
def _answer(st, now, r, target, etype, reason_live, reason_done, reason_unknown):
    """Report ``etype`` on ``target`` as the venue knows it, answering request ``r``: a
    live order (``reason_live``), a finished one (``reason_done``; leaves 0) or an unknown
    id (status OS_NONE, ``reason_unknown``, ids and side from the request)."""
    i = map_find(st.ours, target)
    if i < 0:
        k = _report(
            st,
            now,
            r.seq,
            r,
            r,
            (etype, np.int64(OS_NONE), reason_unknown),
            np.int64(0),
            np.int64(0),
        )
        if k >= 0:
            st.queue[k].client_order_id = target
        return
    val = st.ours[i, 1]
    if val < 0:
        h = st.hist[-val - 1]
        _report(
            st, now, r.seq, h, r, (etype, np.int64(h.status), reason_done), h.cum_qty, np.int64(0)
        )
        return
    o = st.pool[val]
    _report(
        st, now, r.seq, o, r, (etype, _live_status(o.cum_qty), reason_live), o.cum_qty, o.leaves
    )


@hot
def _on_cancel(st, r, now):
    target = r.orig_client_order_id
    m = _live_slot(st, target)
    if m < 0:
        _answer(
            st,
            now,
            r,
            target,
            np.int64(EXEC_CANCEL_REJECTED),
            np.int64(R_OK),
            np.int64(R_TOO_LATE),
            np.int64(R_UNKNOWN_ORDER),
        )
        return
    o = st.pool[m]
    _unlink(st, m)
    _report(
        st,
        now,
        r.seq,
        o,
        r,
        (np.int64(EXEC_CANCELLED), np.int64(OS_CANCELLED), np.int64(R_OK)),
        o.cum_qty,
        np.int64(0),
    )
    _retire(st, m, np.int64(OS_CANCELLED))


@hot
def _refuse_replace(st, now, r, target, reason):
    _answer(
        st,
        now,
        r,
        target,
        np.int64(EXEC_CANCEL_REJECTED),
        reason,
        np.int64(R_TOO_LATE),
        np.int64(R_UNKNOWN_ORDER),
    )


@hot
def _on_replace(st, r, now):
    target = r.orig_client_order_id
    m = _live_slot(st, target)
    if m < 0:
        _refuse_replace(st, now, r, target, np.int64(R_OK))
        return
    o = st.pool[m]
    new_id = r.client_order_id if r.client_order_id != 0 else target
    if new_id != target and map_find(st.ours, new_id) >= 0:
        _refuse_replace(st, now, r, target, np.int64(R_DUPLICATE))
        return
    qty = r.qty if r.qty > 0 else o.qty
    price = r.limit_price if r.limit_price > 0 else o.price
    if qty <= o.cum_qty:
        _refuse_replace(st, now, r, target, np.int64(R_INVALID_QTY))
        return
    if not _stp_allowed(st.v, r.stp_mode):
        _refuse_replace(st, now, r, target, np.int64(R_VENUE_REJECTED))
        return
    if r.stp_mode != STP_NONE:
        o.stp_mode = r.stp_mode
    if new_id != target:
        _hist_add(st, o, o.cum_qty, o.qty, o.price, np.int64(OS_CANCELLED))
        _map_set(st.ours, new_id, m)
        o.client_order_id = new_id
    copy_stamps(o, r)
    status = _live_status(o.cum_qty)
    if price != o.price or qty > o.qty:
        _unlink(st, m)
        o.price = price
        o.qty = qty
        o.leaves = qty - o.cum_qty
        _report_own(st, now, r.seq, m, np.int64(EXEC_REPLACED), status, np.int64(R_OK))
        _work(st, m, np.int64(o.tif), now, r.seq)
        return
    _resize(st, m, qty - o.cum_qty)
    o.qty = qty
    _report_own(st, now, r.seq, m, np.int64(EXEC_REPLACED), status, np.int64(R_OK))


@hot
def _on_query(st, r, now):
    target = r.client_order_id if r.client_order_id != 0 else r.orig_client_order_id
    _answer(
        st,
        now,
        r,
        target,
        np.int64(EXEC_STATUS),
        np.int64(R_OK),
        np.int64(R_OK),
        np.int64(R_UNKNOWN_ORDER),
    )


@hot
def _cancel_ours(st, m, now, pseq, reason, stamps, own_stamps):
    """Cancel our resting order in slot ``m``; the report carries the stamps of record
    ``stamps``, or the order's own (``own_stamps``)."""
    o = st.pool[m]
    _unlink(st, m)
    if own_stamps:
        _report(
            st,
            now,
            pseq,
            o,
            o,
            (np.int64(EXEC_CANCELLED), np.int64(OS_CANCELLED), reason),
            o.cum_qty,
            np.int64(0),
        )
    else:
        _report(
            st,
            now,
            pseq,
            o,
            stamps,
            (np.int64(EXEC_CANCELLED), np.int64(OS_CANCELLED), reason),
            o.cum_qty,
            np.int64(0),
        )
    _retire(st, m, np.int64(OS_CANCELLED))


@hot
def _cancel_all(st, inst, now, pseq, reason, stamps, own_stamps):
    """Cancel every resting order of ours in book ``inst`` (0 = every book), book by book,
    bids then asks, best level first, time order within a level (see _cancel_ours for the
    stamps). Returns the number cancelled."""
    pool = st.pool
    levels = st.levels
    nlev = st.nlev
    n = 0
    lo = 1 if inst == 0 else inst
    hi = nlev.shape[0] if inst == 0 else min(inst + 1, nlev.shape[0])
    for b in range(lo, hi):
        for s in range(2):
            for j in range(nlev[b, s] - 1, -1, -1):
                m = levels[b, s, j, LH]
                while m >= 0:
                    nxt = pool[m].next
                    if pool[m].owner == OWN_OURS:
                        _cancel_ours(st, m, now, pseq, reason, stamps, own_stamps)
                        n += 1
                    m = nxt
    return n


@hot
def venue_order_kernel(st, orders, now_ns):
    """Handle ORDER records in order (NEW, CANCEL, REPLACE, QUERY, CANCEL_ALL); reports
    go to the delay queue. Returns the number of reports queued."""
    v = st.v
    before = v[S_REPORTS]
    for i in range(orders.shape[0]):
        r = orders[i]
        v[S_ORDERS_IN] += 1
        a = r.action
        if a == ACTION_NEW:
            _on_new(st, r, now_ns)
        elif a == ACTION_CANCEL:
            _on_cancel(st, r, now_ns)
        elif a == ACTION_REPLACE:
            _on_replace(st, r, now_ns)
        elif a == ACTION_QUERY:
            _on_query(st, r, now_ns)
        elif a == ACTION_CANCEL_ALL:
            _cancel_all(
                st, np.int64(r.instrument), now_ns, r.seq, np.int64(R_OK), r, np.bool_(False)
            )
        else:
            _reject(st, now_ns, r, np.int64(R_VENUE_REJECTED), np.bool_(False))
    return v[S_REPORTS] - before


@njit(nogil=True, cache=True)
def venue_cancel_all_kernel(st, instrument, now_ns, reason):
    """Cancel every resting order of ours (``instrument`` 0 = all books), e.g. when the
    orders stage stops beating. Reports carry ``reason``, each order's own stamps and
    ``parent_seq`` 0. Returns the number of orders cancelled."""
    return _cancel_all(st, instrument, now_ns, np.uint64(0), reason, st.pool[0], np.bool_(True))
