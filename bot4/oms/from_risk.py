"""The OMS kernels of input 0: ORDER records from risk through our order state.

:func:`orders_kernel` (NEW with the client-side self-trade prevention guard, CANCEL,
CANCEL_ALL) and :func:`mark_cancel_all`, over the one state object
:data:`bot4.oms.state.Oms`; what the orders stage (:mod:`bot4.stages.orders`, whose module
doc has the rings, identity and self-trade prevention rules;
:mod:`bot4.stages.orders_restart` has the restart's) does per record. Each returns counts
and the next ``seq``; none allocates. The stage class calls them, and so does the hot
group's compiled cycle (``bot4.stages.hotloop``).
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit import copy_terms, unowned
from bot4.nbkit.hot import hot
from bot4.oms.book import (
    B_FREE,
    F_STP,
    book_claim,
    book_commit,
    book_find,
    book_set_alias,
)
from bot4.oms.helpers import _I0, _ST_NEW, _U0, _i, _report, _venue_msg
from bot4.oms.lru import (
    lru_contains,
    lru_put,
)
from bot4.oms.state import (
    C_BAD_ACTION,
    C_BOOK_FULL,
    C_CANCEL_ALL,
    C_CANCEL_ALL_MARKED,
    C_CANCEL_SENT,
    C_DUPLICATE_INTENT,
    C_ILLEGAL,
    C_INTENTS,
    C_INVALID,
    C_NEW_SENT,
    C_REPLACE_SENT,
    C_STP_AMENDED,
    C_STP_EXPIRED,
    C_STP_FALLBACK,
    C_STP_MAKER_CANCEL,
    C_STP_MAKER_DECREMENT,
    C_UNKNOWN_ORDER,
    I_NEXT_ALIAS,
    I_NEXT_ORDER_ID,
    OMS_PRODUCER,
    R_DUPLICATE_ORDER,
    R_INVALID_QTY,
    R_MALFORMED,
    R_MAX_OPEN_ORDERS,
    R_SELF_TRADE,
    R_UNKNOWN_INSTRUMENT,
    STP_AT_CLIENT,
    STP_AT_VENUE,
)
from bot4.oms.states import (
    EV_CANCEL_REQUEST,
    EV_EXPIRE,
    EV_REJECT,
    EV_REPLACE_REQUEST,
    EV_SEND,
    ST_REJECTED,
    transition_counted,
)
from bot4.oms.stp_guard import (
    A_CANCEL,
    OUT_FALLBACK,
    OUT_NONE,
    guard_plan,
)
from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    ACTION_REPLACE,
    EXEC_EXPIRED,
    EXEC_REJECTED,
    EXEC_REPLACED,
    OS_EXPIRED,
    OS_PENDING_NEW,
    OS_REJECTED,
    OT_STOP,
    OT_STOP_LIMIT,
    SIDE_BUY,
    SIDE_SELL,
)


# --- input 0: orders from risk --------------------------------------------------------------
@hot
def _open(book, r, cl, oid, qty, state, now):
    """Our new order for risk's ORDER ``r`` into the book: client order id ``cl`` (risk's
    id too), OMS order id ``oid``, ``qty`` after the guard, order ``state``, sent at
    ``now`` (ns)."""
    s = book_claim(book, np.int64(r.instrument))
    if s < 0:
        return
    o = book.slots[s]
    o.client_order_id = cl
    o.risk_client_order_id = cl
    o.order_id = oid
    o.ts_order_ns = now
    copy_terms(o, r)  # the terms of risk's ORDER; the quantity after the guard below
    o.qty = qty
    o.cum_qty = 0
    o.leaves_qty = qty
    o.price = r.limit_price
    o.state = state
    book_commit(book, s)


@hot
def _on_new(batch, i, venue, fills, cur, now, st):
    """A NEW from risk (``batch[i]``): refused (a report into ``fills[nf]``), or past the
    client guard into the book and to the venue (``venue[nv]``, with the guard's cancels
    / replaces before it). ``cur``: the kernel's cursors ``(nv, nf, seq)``; returns them
    moved on. The batch and index, not a one-record slice (building the slice per order
    cost ~4 % of order creation, perf/riskbench.py)."""
    nv, nf, seq = cur
    r = batch[i]
    book = st.book
    cl = r.client_order_id
    reason = 0
    if r.qty <= 0:
        reason = R_INVALID_QTY
    elif cl == 0 or (r.side != SIDE_BUY and r.side != SIDE_SELL):
        reason = R_MALFORMED
    elif r.instrument == 0 or r.instrument >= book.head.shape[0]:
        reason = R_UNKNOWN_INSTRUMENT
    elif lru_contains(st.seen, cl) or book_find(book, cl) >= 0:
        reason = R_DUPLICATE_ORDER
    if reason != 0:
        st.ctr[C_DUPLICATE_INTENT if reason == R_DUPLICATE_ORDER else C_INVALID] += 1
        _report(fills, nf, seq, r, _U0, (_i(EXEC_REJECTED), _i(OS_REJECTED), _I0, reason), now, st)
        return nv, nf + 1, seq + 1
    oid = st.ids[I_NEXT_ORDER_ID]
    st.ids[I_NEXT_ORDER_ID] += np.uint64(1)
    if book.meta[B_FREE] == 0:
        transition_counted(st.table, _ST_NEW, np.int8(EV_REJECT), st.illegal)
        lru_put(st.seen, cl, _i(ST_REJECTED))
        st.ctr[C_BOOK_FULL] += 1
        what = (_i(EXEC_REJECTED), _i(OS_REJECTED), _I0, _i(R_MAX_OPEN_ORDERS))
        _report(fills, nf, seq, r, oid, what, now, st)
        return nv, nf + 1, seq + 1
    qty = r.qty
    n_act = 0
    outcome = OUT_NONE
    guard = st.stp_where[0] == STP_AT_CLIENT
    if guard and r.order_type != OT_STOP and r.order_type != OT_STOP_LIMIT:
        plan = (st.plan_makers, st.plan_actions, st.plan_amounts)
        n_act, qty, outcome = guard_plan(book, st.table, r, st.policy[r.strategy], plan)
    if outcome == OUT_FALLBACK:
        st.ctr[C_STP_FALLBACK] += 1
    for k in range(n_act):
        s = st.plan_makers[k]
        m = book.slots[s]
        m.flags |= F_STP
        if st.plan_actions[k] == A_CANCEL:
            m.state = transition_counted(st.table, m.state, np.int8(EV_CANCEL_REQUEST), st.illegal)
            msg = (_i(ACTION_CANCEL), m.client_order_id, m.leaves_qty)
            _venue_msg(venue, nv, seq, batch[i : i + 1], st, s, msg, now)
            st.ctr[C_STP_MAKER_CANCEL] += 1
            st.ctr[C_CANCEL_SENT] += 1
        else:
            alias = (np.uint64(OMS_PRODUCER) << np.uint64(48)) | st.ids[I_NEXT_ALIAS]
            st.ids[I_NEXT_ALIAS] += np.uint64(1)
            m.state = transition_counted(st.table, m.state, np.int8(EV_REPLACE_REQUEST), st.illegal)
            book_set_alias(book, s, alias)
            msg = (_i(ACTION_REPLACE), alias, m.qty - st.plan_amounts[k])
            _venue_msg(venue, nv, seq, batch[i : i + 1], st, s, msg, now)
            st.ctr[C_STP_MAKER_DECREMENT] += 1
            st.ctr[C_REPLACE_SENT] += 1
        nv += 1
        seq += 1
    if qty == 0:
        state = transition_counted(st.table, _ST_NEW, np.int8(EV_EXPIRE), st.illegal)
        lru_put(st.seen, cl, state)
        st.ctr[C_STP_EXPIRED] += 1
        what = (_i(EXEC_EXPIRED), _i(OS_EXPIRED), _I0, _i(R_SELF_TRADE))
        _report(fills, nf, seq, r, oid, what, now, st)
        return nv, nf + 1, seq + 1
    if qty < r.qty:
        st.ctr[C_STP_AMENDED] += 1
        what = (_i(EXEC_REPLACED), _i(OS_PENDING_NEW), qty, _i(R_SELF_TRADE))
        _report(fills, nf, seq, r, oid, what, now, st)
        nf += 1
        seq += 1
    state = transition_counted(st.table, _ST_NEW, np.int8(EV_SEND), st.illegal)
    lru_put(st.seen, cl, _I0)  # open: the book has it
    _open(book, r, cl, oid, qty, state, now)
    venue[nv] = r
    v = venue[nv]
    v.seq = seq
    v.parent_seq = r.seq
    v.ts_order_ns = now
    v.order_id = oid
    v.orig_client_order_id = 0
    v.qty = qty
    if v.stp_mode == 0 and st.stp_where[0] == STP_AT_VENUE:
        v.stp_mode = st.stp_mode[r.strategy]
    if v.stp_group == 0:
        v.stp_group = st.stp_group[0]
    st.ctr[C_NEW_SENT] += 1
    return nv + 1, nf, seq + 1


@hot
def mark_cancel_all(st, instrument):
    """Apply a CANCEL_ALL of ``instrument`` (0 = all) to local state: every open order that
    can take a cancel request goes cancel-pending. Returns how many did."""
    book = st.book
    n = 0
    for s in range(book.slots.shape[0]):
        o = book.slots[s]
        if o.state == 0 or (instrument != 0 and o.instrument != instrument):
            continue
        nxt = st.table[o.state, EV_CANCEL_REQUEST]  # a probe: already-pending is no error
        if nxt >= 0:
            o.state = nxt
            n += 1
    st.ctr[C_CANCEL_ALL_MARKED] += n
    return n


@hot
def orders_kernel(batch, venue, fills, seq, st, now):
    """Orders from risk -> venue messages (``venue``) and generated reports (``fills``),
    stamped ``ts_order_ns = now`` (the stage clock, ns). Returns ``(n_venue, n_fills, next
    seq)``."""
    # helpers bind views: the state's 44 arrays are not reference-counted at every
    # helper call (1.9 us per order before)
    st = unowned(st)
    nv = _I0
    nf = _I0
    for i in range(batch.shape[0]):
        r = batch[i]
        st.ctr[C_INTENTS] += 1
        a = r.action
        if a == ACTION_NEW:
            nv, nf, seq = _on_new(batch, i, venue, fills, (nv, nf, seq), now, st)
        elif a == ACTION_CANCEL_ALL:
            venue[nv] = r
            v = venue[nv]
            v.seq = seq
            v.parent_seq = r.seq
            v.ts_order_ns = now
            nv += 1
            seq += 1
            st.ctr[C_CANCEL_ALL] += 1
            mark_cancel_all(st, np.int64(r.instrument))
        elif a == ACTION_CANCEL:
            s = book_find(st.book, r.orig_client_order_id)
            if s < 0:
                st.ctr[C_UNKNOWN_ORDER] += 1
                continue
            o = st.book.slots[s]
            nxt = transition_counted(st.table, o.state, np.int8(EV_CANCEL_REQUEST), st.illegal)
            if nxt < 0:
                st.ctr[C_ILLEGAL] += 1
                continue
            o.state = nxt
            msg = (_i(ACTION_CANCEL), o.client_order_id, o.leaves_qty)
            _venue_msg(venue, nv, seq, batch[i : i + 1], st, s, msg, now)
            st.ctr[C_CANCEL_SENT] += 1
            nv += 1
            seq += 1
        else:
            st.ctr[C_BAD_ACTION] += 1
    return nv, nf, seq
