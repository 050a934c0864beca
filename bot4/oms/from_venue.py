"""The OMS kernels of input 1: EXEC_REPORT records from the venue through our order state.

:func:`execs_kernel`: duplicate and conflicting execution ids, the state machine per
report, trade busts, and the EXEC_STATUS answers of restart reconciliation
(``bot4.oms.reconcile``), over the one state object :data:`bot4.oms.state.Oms`. It
returns counts and the next ``seq``; it does not allocate. The orders stage
(:mod:`bot4.stages.orders`) calls it, and so does the hot group's compiled cycle
(``bot4.stages.hotloop``).
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit import unowned
from bot4.nbkit.hot import hot
from bot4.oms.book import (
    F_AWAIT_STATUS,
    F_STP,
    book_drop_alias,
    book_find,
    book_rekey,
)
from bot4.oms.helpers import _I0, _close
from bot4.oms.lru import (
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
    C_BAD_EXEC,
    C_BROKEN_FILLS,
    C_DUPLICATE_EXEC,
    C_EXEC_CONFLICT,
    C_EXECS,
    C_FORWARDED,
    C_GENERATED,
    C_ILLEGAL,
    C_RECON_ADOPTED,
    C_RECON_MISMATCH,
    C_RECON_OUTSTANDING,
    C_STATUS,
    C_UNKNOWN_ORDER,
    C_VENUE_STP_DECREMENTED,
    C_VENUE_STP_EXPIRED,
    I_NEXT_ORDER_ID,
    R_RECONCILE_MISMATCH,
)
from bot4.oms.states import (
    EVENT_OF_EXEC,
    IS_TERMINAL,
    ST_CANCELLED,
    STATUS_OF,
    state_from_status,
    transition_counted,
)
from bot4.records import (
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
    OS_NONE,
)
from bot4.records.identity import exec_content_hash


# --- input 1: execution reports from the venue ----------------------------------------------
@hot
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


@hot
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


@hot
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


@hot
def _on_broken(st, r):
    """A trade bust (EXEC_BROKEN): the order's state and filled quantity stay as they are
    (a venue does not reopen a busted order); counted, and forwarded to risk (which
    reverses the fill) under the client order id risk knows the order by."""
    st.ctr[C_BROKEN_FILLS] += 1
    s = book_find(st.book, r.client_order_id)
    if s >= 0:
        return r.last_qty > 0, st.book.slots[s].risk_client_order_id
    return r.last_qty > 0, r.client_order_id


@hot
def execs_kernel(batch, fills, events, keep_events, seq, st):
    """Venue reports -> risk (``fills``) and persistence (``events`` if ``keep_events``).
    Returns ``(n_fills, n_events, next seq)``; a forwarded report and its event copy share
    their ``seq``."""
    # helpers bind views: the state's 44 arrays are not reference-counted at every
    # helper call (1.9 us per order before)
    st = unowned(st)
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
