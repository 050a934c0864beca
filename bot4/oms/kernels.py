"""The OMS kernels: risk's orders and the venue's reports through our order state.

What the orders stage (:mod:`bot4.stages.orders`, whose module doc has the rings,
identity, self-trade prevention and restart rules) does per record, as numba kernels over
the one state object :data:`bot4.oms.state.Oms`: :func:`orders_kernel` (input 0, ORDER
from risk), :func:`execs_kernel` (input 1, EXEC_REPORT from the venue),
:func:`emit_queries` and :func:`emit_cancel_all` (records sent outside an input batch),
:func:`mark_cancel_all`. Each returns counts and the next ``seq``; none allocates. The
stage class calls them, and so does the hot group's compiled cycle
(``bot4.stages.hotloop``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit import unowned
from bot4.oms.book import (
    B_FREE,
    F_AWAIT_STATUS,
    F_STP,
    Book,
    book_add,
    book_drop_alias,
    book_find,
    book_rekey,
    book_remove,
    book_set_alias,
)
from bot4.oms.lru import (
    Lru,
    lru_contains,
    lru_get,
    lru_peek,
    lru_put,
)
from bot4.oms.reconcile import (
    V_AGREE,
    V_HALT,
    V_IN_FLIGHT,
    closed_order_verdict,
    open_order_verdict,
)
from bot4.oms.state import (
    C_BAD_ACTION,
    C_BAD_EXEC,
    C_BOOK_FULL,
    C_BROKEN_FILLS,
    C_CANCEL_ALL,
    C_CANCEL_ALL_MARKED,
    C_CANCEL_SENT,
    C_DUPLICATE_EXEC,
    C_DUPLICATE_INTENT,
    C_EXEC_CONFLICT,
    C_EXECS,
    C_FORWARDED,
    C_GENERATED,
    C_ILLEGAL,
    C_INTENTS,
    C_INVALID,
    C_NEW_SENT,
    C_QUERIES_SENT,
    C_RECON_ADOPTED,
    C_RECON_MISMATCH,
    C_RECON_OUTSTANDING,
    C_REPLACE_SENT,
    C_STATUS,
    C_STP_AMENDED,
    C_STP_EXPIRED,
    C_STP_FALLBACK,
    C_STP_MAKER_CANCEL,
    C_STP_MAKER_DECREMENT,
    C_UNKNOWN_ORDER,
    C_VENUE_STP_DECREMENTED,
    C_VENUE_STP_EXPIRED,
    I_NEXT_ALIAS,
    I_NEXT_ORDER_ID,
    OMS_PRODUCER,
    R_DUPLICATE_ORDER,
    R_INVALID_QTY,
    R_MALFORMED,
    R_MAX_OPEN_ORDERS,
    R_RECONCILE_MISMATCH,
    R_SELF_TRADE,
    R_UNKNOWN_INSTRUMENT,
    STP_AT_CLIENT,
    STP_AT_VENUE,
    Oms,
)
from bot4.oms.states import (
    EV_CANCEL_REQUEST,
    EV_EXPIRE,
    EV_REJECT,
    EV_REPLACE_REQUEST,
    EV_SEND,
    EVENT_OF_EXEC,
    IS_TERMINAL,
    ST_CANCELLED,
    ST_NEW,
    ST_REJECTED,
    STATUS_OF,
    state_from_status,
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
    ACTION_QUERY,
    ACTION_REPLACE,
    EXEC_BROKEN,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_EXPIRED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_STATUS,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    OS_EXPIRED,
    OS_NONE,
    OS_PENDING_NEW,
    OS_REJECTED,
    OT_MARKET,
    OT_STOP,
    OT_STOP_LIMIT,
    SIDE_BUY,
    SIDE_SELL,
)
from bot4.records.identity import exec_content_hash

# Constants handed to another kernel go as numpy scalars (``_i(EXEC_ACK)``, ``_I0``), never
# bare: numba types a bare constant argument as ``Literal[int](value)`` and compiles the
# callee (and what it passes the value on to) once per distinct value, and a counter that
# starts at a bare ``0`` compiles the callees of the loop twice (docs/compile.md). The
# scalar types are those of the non-constant callers (``transition``: uint8 state, int8
# event; ``lru_put``: int64 value), so each helper has one signature.
_i = np.int64
_I0 = np.int64(0)
_U0 = np.uint64(0)
_ST_NEW = np.uint8(ST_NEW)


# --- record writers ---------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def _report(out, k, seq, r, order_id, exec_type, status, leaves, reason, now, st):
    """An OMS-generated report about risk's ORDER ``r`` (exec_id 0, no venue time)."""
    out[k] = st.zero_exec[0]
    e = out[k]
    e.seq = seq
    e.parent_seq = r.seq
    e.ts_event_ns = r.ts_event_ns
    e.ts_recv_ns = r.ts_recv_ns
    e.ts_order_ns = now
    e.client_order_id = r.client_order_id
    e.order_id = order_id
    e.leaves_qty = leaves
    e.instrument = r.instrument
    e.reason = reason
    e.strategy = r.strategy
    e.side = r.side
    e.exec_type = exec_type
    e.status = status
    st.ctr[C_GENERATED] += 1
    st.ctr[C_FORWARDED] += 1


@njit(nogil=True, cache=True)
def _venue_msg(out, k, seq, parent, st, s, action, client_order_id, qty, now):
    """A venue message about our open order in slot ``s``; stamps copied from ``parent``
    (the record that caused it) when given."""
    o = st.book.slots[s]
    out[k] = st.zero_order[0]
    v = out[k]
    v.seq = seq
    if parent.shape[0]:
        p = parent[0]
        v.parent_seq = p.seq
        v.ts_event_ns = p.ts_event_ns
        v.ts_recv_ns = p.ts_recv_ns
        v.ts_signal_ns = p.ts_signal_ns
        v.ts_risk_ns = p.ts_risk_ns
    v.ts_order_ns = now
    v.client_order_id = client_order_id
    v.orig_client_order_id = o.client_order_id
    v.order_id = o.order_id
    v.qty = qty
    v.limit_price = o.price
    v.stop_price = o.stop_price
    v.instrument = o.instrument
    v.strategy = o.strategy
    v.side = o.side
    v.order_type = o.order_type
    v.tif = o.tif
    v.action = action


@njit(nogil=True, cache=True)
def _close(st, s, state):
    """Order in slot ``s`` reached terminal ``state``: remember it by every id it had."""
    o = st.book.slots[s]
    lru_put(st.seen, o.risk_client_order_id, state)
    if o.client_order_id != o.risk_client_order_id:
        lru_put(st.seen, o.client_order_id, state)
    if o.alias_client_order_id != 0:
        lru_put(st.seen, o.alias_client_order_id, state)
    if o.flags & F_AWAIT_STATUS:
        st.ctr[C_RECON_OUTSTANDING] -= 1  # its closing report answers the query
    book_remove(st.book, s)


# --- input 0: orders from risk --------------------------------------------------------------
@njit(nogil=True, cache=True)
def _on_new(batch, i, venue, fills, nv, nf, seq, now, st):
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
        _report(fills, nf, seq, r, _U0, _i(EXEC_REJECTED), _i(OS_REJECTED), _I0, reason, now, st)
        return nv, nf + 1, seq + 1
    oid = st.ids[I_NEXT_ORDER_ID]
    st.ids[I_NEXT_ORDER_ID] += np.uint64(1)
    if book.meta[B_FREE] == 0:
        transition_counted(st.table, _ST_NEW, np.int8(EV_REJECT), st.illegal)
        lru_put(st.seen, cl, _i(ST_REJECTED))
        st.ctr[C_BOOK_FULL] += 1
        _report(
            fills, nf, seq, r, oid, _i(EXEC_REJECTED), _i(OS_REJECTED), _I0, _i(R_MAX_OPEN_ORDERS),
            now, st,
        )  # fmt: skip
        return nv, nf + 1, seq + 1
    qty = r.qty
    n_act = 0
    outcome = OUT_NONE
    guard = st.stp_where[0] == STP_AT_CLIENT
    if guard and r.order_type != OT_STOP and r.order_type != OT_STOP_LIMIT:
        is_market = r.order_type == OT_MARKET or r.limit_price == 0
        n_act, qty, outcome = guard_plan(
            book,
            st.table,
            np.int64(r.instrument),
            r.side,
            r.limit_price,
            is_market,
            r.qty,
            st.policy[r.strategy],
            st.plan_makers,
            st.plan_actions,
            st.plan_amounts,
        )
    if outcome == OUT_FALLBACK:
        st.ctr[C_STP_FALLBACK] += 1
    for k in range(n_act):
        s = st.plan_makers[k]
        m = book.slots[s]
        m.flags |= F_STP
        if st.plan_actions[k] == A_CANCEL:
            m.state = transition_counted(st.table, m.state, np.int8(EV_CANCEL_REQUEST), st.illegal)
            _venue_msg(
                venue, nv, seq, batch[i : i + 1], st, s, _i(ACTION_CANCEL), m.client_order_id,
                m.leaves_qty, now,
            )  # fmt: skip
            st.ctr[C_STP_MAKER_CANCEL] += 1
            st.ctr[C_CANCEL_SENT] += 1
        else:
            alias = (np.uint64(OMS_PRODUCER) << np.uint64(48)) | st.ids[I_NEXT_ALIAS]
            st.ids[I_NEXT_ALIAS] += np.uint64(1)
            m.state = transition_counted(st.table, m.state, np.int8(EV_REPLACE_REQUEST), st.illegal)
            book_set_alias(book, s, alias)
            _venue_msg(
                venue, nv, seq, batch[i : i + 1], st, s, _i(ACTION_REPLACE), alias,
                m.qty - st.plan_amounts[k], now,
            )  # fmt: skip
            st.ctr[C_STP_MAKER_DECREMENT] += 1
            st.ctr[C_REPLACE_SENT] += 1
        nv += 1
        seq += 1
    if qty == 0:
        state = transition_counted(st.table, _ST_NEW, np.int8(EV_EXPIRE), st.illegal)
        lru_put(st.seen, cl, state)
        st.ctr[C_STP_EXPIRED] += 1
        _report(
            fills, nf, seq, r, oid, _i(EXEC_EXPIRED), _i(OS_EXPIRED), _I0, _i(R_SELF_TRADE), now, st
        )
        return nv, nf + 1, seq + 1
    if qty < r.qty:
        st.ctr[C_STP_AMENDED] += 1
        _report(
            fills, nf, seq, r, oid, _i(EXEC_REPLACED), _i(OS_PENDING_NEW), qty, _i(R_SELF_TRADE),
            now, st,
        )  # fmt: skip
        nf += 1
        seq += 1
    state = transition_counted(st.table, _ST_NEW, np.int8(EV_SEND), st.illegal)
    lru_put(st.seen, cl, _I0)  # open: the book has it
    book_add(
        book, cl, cl, oid, r.instrument, r.side, r.limit_price, r.stop_price, qty, 0,
        r.strategy, r.order_type, r.tif, state, now,
    )  # fmt: skip
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


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
def _lru_view(m):
    return Lru(
        unowned(m.tab), unowned(m.keys), unowned(m.vals), unowned(m.prv), unowned(m.nxt),
        unowned(m.meta),
    )  # fmt: skip


@njit(nogil=True, cache=True)
def borrowed(st):
    """``st`` with every array an :func:`~bot4.nbkit.unowned` view, for the rest of one
    kernel call (its caller holds the arrays). The helpers take the state (44 arrays with
    the book, its index and the three LRUs) and numba counts references on every array of it at
    every helper call (NRT_incref/decref, a lock add each): 1.9 us per order before
    (issue 13's state object; the risk check had the same, 176632d)."""
    b = st.book
    book = Book(
        unowned(b.slots), unowned(b.nxt), unowned(b.prv), unowned(b.head), unowned(b.tail),
        unowned(b.free), unowned(b.meta), _lru_view(b.index),
    )  # fmt: skip
    return Oms(
        unowned(st.table), unowned(st.illegal), unowned(st.ctr), unowned(st.ids), book,
        _lru_view(st.seen), _lru_view(st.execs), _lru_view(st.exec_conflicts),
        unowned(st.policy), unowned(st.needs_operator), unowned(st.plan_makers),
        unowned(st.plan_actions), unowned(st.plan_amounts), unowned(st.zero_order),
        unowned(st.zero_exec), unowned(st.stp_where), unowned(st.stp_mode),
        unowned(st.stp_group),
    )  # fmt: skip


@njit(nogil=True, cache=True)
def orders_kernel(batch, venue, fills, seq, st, now):
    """Orders from risk -> venue messages (``venue``) and generated reports (``fills``),
    stamped ``ts_order_ns = now`` (the stage clock, ns). Returns ``(n_venue, n_fills, next
    seq)``."""
    st = borrowed(st)  # helpers bind views: no reference counting per call
    nv = _I0
    nf = _I0
    for i in range(batch.shape[0]):
        r = batch[i]
        st.ctr[C_INTENTS] += 1
        a = r.action
        if a == ACTION_NEW:
            nv, nf, seq = _on_new(batch, i, venue, fills, nv, nf, seq, now, st)
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
            _venue_msg(
                venue, nv, seq, batch[i : i + 1], st, s, _i(ACTION_CANCEL), o.client_order_id,
                o.leaves_qty, now,
            )  # fmt: skip
            st.ctr[C_CANCEL_SENT] += 1
            nv += 1
            seq += 1
        else:
            st.ctr[C_BAD_ACTION] += 1
    return nv, nf, seq


# --- input 1: execution reports from the venue ----------------------------------------------
@njit(nogil=True, cache=True)
def _closed_status(st, r):
    """An EXEC_STATUS for an order not open here: finished (its end in the LRU) or
    unknown. A finished order working at the venue, or ended otherwise, is a genuine
    disagreement (``bot4.oms.reconcile``)."""
    found, v = lru_get(st.seen, r.client_order_id)
    if not (found and IS_TERMINAL[v]):
        st.ctr[C_UNKNOWN_ORDER] += 1
        return
    if closed_order_verdict(v, r.status) == V_HALT:
        st.ctr[C_RECON_MISMATCH] += 1
        if r.instrument < st.needs_operator.shape[0]:
            st.needs_operator[r.instrument] += 1


@njit(nogil=True, cache=True)
def _on_status(st, r, fills, events, keep_events, nf, ne, seq):
    """An EXEC_STATUS answer (restart reconciliation, ``bot4.oms.reconcile``): journalled
    as received; where the venue's view is adopted, a correction follows it to risk and to
    the journal (``exec_id`` 0, reason RECONCILE_MISMATCH, the adopted status, cum and
    leaves, ``last_qty`` 0) and the order takes that view; a genuine disagreement also
    marks the instrument for an operator. Returns ``(nf, ne, seq)``."""
    st.ctr[C_STATUS] += 1
    if keep_events:
        events[ne] = r
        ev = events[ne]
        ev.seq = seq
        ev.parent_seq = r.seq
        ne += 1
        seq += 1
    s = book_find(st.book, r.client_order_id)
    if s < 0:
        _closed_status(st, r)
        return nf, ne, seq
    o = st.book.slots[s]
    if o.flags & F_AWAIT_STATUS:
        o.flags &= ~np.uint8(F_AWAIT_STATUS)
        st.ctr[C_RECON_OUTSTANDING] -= 1
    verdict = open_order_verdict(
        o.state, o.cum_qty, o.leaves_qty, r.status, r.cum_qty, r.leaves_qty
    )
    if verdict in (V_AGREE, V_IN_FLIGHT):
        return nf, ne, seq
    if verdict == V_HALT:
        st.ctr[C_RECON_MISMATCH] += 1
        st.needs_operator[o.instrument] += 1
    else:
        st.ctr[C_RECON_ADOPTED] += 1
    if r.status == OS_NONE:  # the venue does not know it: it rests nowhere, our fills stand
        want = ST_CANCELLED
        cum = o.cum_qty
    else:
        want = state_from_status(r.status, r.cum_qty)
        cum = r.cum_qty
    leaves = np.int64(0) if IS_TERMINAL[want] else r.leaves_qty
    fills[nf] = r
    f = fills[nf]
    f.seq = seq
    f.parent_seq = r.seq
    f.exec_id = 0
    f.exec_type = EXEC_STATUS
    f.status = STATUS_OF[want]
    f.reason = R_RECONCILE_MISMATCH
    f.cum_qty = cum
    f.leaves_qty = leaves
    f.last_qty = 0
    f.last_price = 0
    f.fee = 0
    f.prevented_qty = 0
    f.client_order_id = o.client_order_id
    f.order_id = o.order_id
    f.instrument = o.instrument
    f.strategy = o.strategy
    f.side = o.side
    if keep_events:
        events[ne] = fills[nf]
        ne += 1
    f.client_order_id = o.risk_client_order_id
    nf += 1
    seq += 1
    st.ctr[C_GENERATED] += 1
    st.ctr[C_FORWARDED] += 1
    o.state = want
    o.cum_qty = cum
    o.leaves_qty = leaves
    if IS_TERMINAL[want]:
        _close(st, s, want)
    return nf, ne, seq


@njit(nogil=True, cache=True)
def _apply_exec(st, r):
    """Apply one (non-duplicate) report; returns (forward to risk, client order id for risk)."""
    book = st.book
    et = r.exec_type
    cl = r.client_order_id
    changes_open = et in (
        EXEC_PARTIAL_FILL,
        EXEC_FILL,
        EXEC_CANCELLED,
        EXEC_REJECTED,
        EXEC_EXPIRED,
        EXEC_REPLACED,
        EXEC_STP_EXPIRED,
        EXEC_STP_DECREMENTED,
    )
    s = book_find(book, cl)
    ev = EVENT_OF_EXEC[et]
    if s < 0:
        found, v = lru_get(st.seen, cl)
        if found and IS_TERMINAL[v]:
            if transition_counted(st.table, v, ev, st.illegal) < 0:
                st.ctr[C_ILLEGAL] += 1
            return r.last_qty > 0, cl
        st.ctr[C_UNKNOWN_ORDER] += 1
        return changes_open, cl
    o = book.slots[s]
    risk_cl = o.risk_client_order_id
    nxt = transition_counted(st.table, o.state, ev, st.illegal)
    if nxt < 0:
        st.ctr[C_ILLEGAL] += 1
        return r.last_qty > 0, risk_cl
    o.state = nxt
    if et in (EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_REPLACED, EXEC_STP_DECREMENTED):
        o.cum_qty = r.cum_qty
        o.leaves_qty = r.leaves_qty
    if et == EXEC_STP_DECREMENTED:
        o.qty = r.cum_qty + r.leaves_qty  # the venue took prevented_qty off the order
    if et == EXEC_REPLACED:
        o.qty = r.cum_qty + r.leaves_qty
        book_rekey(book, s)
        o.flags &= ~np.uint8(F_STP)
    elif et == EXEC_CANCEL_REJECTED:
        book_drop_alias(book, s)
        o.flags &= ~np.uint8(F_STP)
    if IS_TERMINAL[nxt]:
        _close(st, s, nxt)
    return changes_open, risk_cl


@njit(nogil=True, cache=True)
def _on_broken(st, r):
    """A trade bust (EXEC_BROKEN): the order's state and filled quantity stay as they are
    (a venue does not reopen a busted order); counted, and forwarded to risk (which
    reverses the fill) under the client order id risk knows the order by."""
    st.ctr[C_BROKEN_FILLS] += 1
    s = book_find(st.book, r.client_order_id)
    if s >= 0:
        return r.last_qty > 0, st.book.slots[s].risk_client_order_id
    return r.last_qty > 0, r.client_order_id


@njit(nogil=True, cache=True)
def execs_kernel(batch, fills, events, keep_events, seq, st):
    """Venue reports -> risk (``fills``) and persistence (``events`` if ``keep_events``).
    Returns ``(n_fills, n_events, next seq)``; a forwarded report and its event copy share
    their ``seq``."""
    st = borrowed(st)  # helpers bind views: no reference counting per call
    nf = _I0
    ne = _I0
    for i in range(batch.shape[0]):
        r = batch[i]
        st.ctr[C_EXECS] += 1
        if r.exec_type == 0 or r.exec_type > EXEC_BROKEN:
            st.ctr[C_BAD_EXEC] += 1
            continue
        if r.exec_id != 0:
            content = exec_content_hash(r)
            found, first = lru_peek(st.execs, r.exec_id)
            if not found:
                lru_put(st.execs, r.exec_id, content)
            elif first == content:
                st.ctr[C_DUPLICATE_EXEC] += 1
                continue
            else:  # two executions under one id: an error, processed and never dropped
                pair = np.uint64(r.exec_id) ^ np.uint64(content)
                if lru_contains(st.exec_conflicts, pair):
                    st.ctr[C_DUPLICATE_EXEC] += 1  # this conflicting report, again
                    continue
                lru_put(st.exec_conflicts, pair, _I0)
                st.ctr[C_EXEC_CONFLICT] += 1
        if r.order_id >= st.ids[I_NEXT_ORDER_ID]:
            st.ids[I_NEXT_ORDER_ID] = r.order_id + np.uint64(1)
        if r.exec_type == EXEC_STATUS:
            nf, ne, seq = _on_status(st, r, fills, events, keep_events, nf, ne, seq)
            continue
        if r.exec_type == EXEC_BROKEN:
            fwd, risk_cl = _on_broken(st, r)
        else:
            fwd, risk_cl = _apply_exec(st, r)
        if r.exec_type == EXEC_STP_EXPIRED:
            st.ctr[C_VENUE_STP_EXPIRED] += 1
        elif r.exec_type == EXEC_STP_DECREMENTED:
            st.ctr[C_VENUE_STP_DECREMENTED] += 1
        if not (fwd or keep_events):
            continue
        if keep_events:
            events[ne] = r
            ev = events[ne]
            ev.seq = seq
            ev.parent_seq = r.seq
            ne += 1
        if fwd:
            fills[nf] = r
            f = fills[nf]
            f.seq = seq
            f.parent_seq = r.seq
            f.client_order_id = risk_cl
            nf += 1
            st.ctr[C_FORWARDED] += 1
        seq += 1
    return nf, ne, seq


# --- records sent outside an input batch ----------------------------------------------------
@njit(nogil=True, cache=True)
def emit_queries(st, slots, start, k, out, seq, now):
    """ACTION_QUERY for the orders of ``slots[start : start + k]`` still awaiting one (a
    restored order may have closed, its slot even been reused, before its query went out)
    into ``out``, stamped ``now``; returns ``(records written, next seq)``."""
    none = st.zero_order[:0]
    n = _I0
    for j in range(k):
        s = slots[start + j]
        o = st.book.slots[s]
        if o.state == 0 or not (o.flags & F_AWAIT_STATUS):
            continue
        _venue_msg(out, n, seq + n, none, st, s, _i(ACTION_QUERY), o.client_order_id, o.qty, now)
        n += 1
    st.ctr[C_QUERIES_SENT] += n
    return n, seq + n


@njit(nogil=True, cache=True)
def emit_cancel_all(st, out, seq, instrument, now):
    """One ACTION_CANCEL_ALL of ``instrument`` (0 = all) into ``out[0]``, stamped ``now``
    and applied to local state; next seq."""
    out[0] = st.zero_order[0]
    v = out[0]
    v.seq = seq
    v.ts_order_ns = now
    v.instrument = instrument
    v.action = ACTION_CANCEL_ALL
    st.ctr[C_CANCEL_ALL] += 1
    mark_cancel_all(st, instrument)
    return seq + 1
