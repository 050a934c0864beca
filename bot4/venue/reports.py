"""Reports on our orders, the history of finished ones, and the delay queue.

**Reports** go to the delay queue, never straight out: ``venue_release_kernel`` copies
those due (``ts_venue_ns + latency_ns <= now``) into an output array, oldest first, as many
as fit, numbering them with the caller's ``seq``. One input may therefore produce any
number of reports (a sweep, a cancel-all) while every call stays within its output room.
A report of a request (ACK, REJECTED, CANCELLED, REPLACED, CANCEL_REJECTED, STATUS) copies
the request's ``ts_event_ns`` / ``ts_recv_ns`` / ``ts_order_ns``; a fill or a cancellation
the venue initiates copies those of the order it reports on. ``parent_seq`` is the ``seq``
of the input record (ORDER or MARKET_DATA) that caused the report (0 for cancel-on-
disconnect). ``exec_id`` is assigned at release: it is the report's ``seq`` (the caller's
numbering of the venue's output), so a venue stage's execution ids are as unique as its
output sequence numbers — session-scoped and continued across restarts by the stage loop's
cursors (``docs/protocol.md``, identities). ``order_id`` echoes the order's ``order_id``
(OMS-assigned) or, when that is 0, a venue-assigned id from 1.

Ownership: the arrays belong to the one process (the venue stage, or a replay) that calls
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit.hot import hot
from bot4.nbkit.stamps import copy_stamps
from bot4.nbkit.u64map import map_delete, map_find
from bot4.records import (
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_STP_EXPIRED,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NEW,
    OS_PARTIALLY_FILLED,
)
from bot4.venue.book import (
    _map_set,
    _release_slot,
)
from bot4.venue.layout import (
    R_OK,
    R_SELF_TRADE,
    S_FILLED_QTY,
    S_FILLS,
    S_REJECTS,
    S_REPORTS,
    S_REPORTS_LOST,
    S_STP_DECREMENTED,
    S_STP_EXPIRED,
    S_STP_PREVENTED_QTY,
    V_HIST_NEXT,
    V_LATENCY,
    V_LIVE_OURS,
    V_Q_HEAD,
    V_Q_TAIL,
)


@hot
def _claim(st, now, pseq, etype, status, reason):
    """Queue slot of a new report with the venue's fields set and every amount zero; -1
    when the queue is full (the report is lost, and counted)."""
    queue = st.queue
    v = st.v
    cap = queue.shape[0]
    tail = v[V_Q_TAIL]
    if tail - v[V_Q_HEAD] >= cap:
        v[S_REPORTS_LOST] += 1
        return -1
    v[V_Q_TAIL] = tail + 1
    v[S_REPORTS] += 1
    if etype == EXEC_REJECTED:
        v[S_REJECTS] += 1
    k = tail & (cap - 1)
    e = queue[k]
    e.seq = 0
    e.parent_seq = pseq
    e.ts_venue_ns = now
    e.exec_id = 0  # assigned at release
    e.exec_type = etype
    e.status = status
    e.reason = reason
    e.last_qty = 0
    e.last_price = 0
    e.fee = 0
    return k


@hot
def _report(st, now, pseq, x, stamps, what, cum, leaves):
    """Queue a report on order ``x`` (an ORDER, RESTING or DONE record: ids, side,
    instrument, strategy) with the stamps of ``stamps`` (ORDER or RESTING); ``what`` =
    ``(exec_type, status, reason)``, int64 each. Returns the queue slot (to add a fill's
    amounts) or -1."""
    etype, status, reason = what
    k = _claim(st, now, pseq, etype, status, reason)
    if k >= 0:
        e = st.queue[k]
        e.client_order_id = x.client_order_id
        e.order_id = x.order_id
        e.side = x.side
        e.instrument = x.instrument
        e.strategy = x.strategy
        copy_stamps(e, stamps)
        e.cum_qty = cum
        e.leaves_qty = leaves
    return k


@hot
def _report_own(st, now, pseq, m, etype, status, reason):
    """Queue a report on our order in pool slot ``m``, with its own stamps."""
    o = st.pool[m]
    leaves = 0 if status in (OS_CANCELLED, OS_FILLED) else o.leaves
    return _report(st, now, pseq, o, o, (etype, status, reason), o.cum_qty, leaves)


@hot
def _report_fill(st, now, pseq, m, qty, price, fee_per_share):
    """Queue the fill of ``qty`` shares at ``price`` of our order in slot ``m`` (its
    cum_qty / leaves already updated)."""
    done = st.pool[m].leaves == 0
    etype = EXEC_FILL if done else EXEC_PARTIAL_FILL
    k = _report_own(
        st, now, pseq, m, etype, OS_FILLED if done else OS_PARTIALLY_FILLED, np.int64(R_OK)
    )
    if k >= 0:
        e = st.queue[k]
        e.last_qty = qty
        e.last_price = price
        e.fee = fee_per_share * qty
    v = st.v
    v[S_FILLS] += 1
    v[S_FILLED_QTY] += qty


@hot
def _live_status(cum):
    return OS_PARTIALLY_FILLED if cum > 0 else OS_NEW


@hot
def _report_stp(st, now, pseq, m, etype, prevented):
    """Queue a self-trade prevention report on our order in slot ``m`` (its leaves / qty
    already reduced): ``EXEC_STP_EXPIRED`` (status EXPIRED, leaves 0) or
    ``EXEC_STP_DECREMENTED`` (still live), ``prevented_qty`` = the shares this event took
    off the order, reason ``SELF_TRADE``, no fill, no fee."""
    o = st.pool[m]
    expired = etype == EXEC_STP_EXPIRED
    status = OS_EXPIRED if expired else _live_status(o.cum_qty)
    leaves = 0 if expired else o.leaves
    k = _report(st, now, pseq, o, o, (etype, status, np.int64(R_SELF_TRADE)), o.cum_qty, leaves)
    if k >= 0:
        st.queue[k].prevented_qty = prevented
    v = st.v
    v[S_STP_EXPIRED if expired else S_STP_DECREMENTED] += 1
    v[S_STP_PREVENTED_QTY] += prevented


@hot
def _hist_add(st, x, cum, qty, price, status):
    """Remember a finished order of ours (ids, side, instrument, strategy from record
    ``x``), forgetting the oldest remembered one; maps its client order id there."""
    hist = st.hist
    v = st.v
    h = v[V_HIST_NEXT]
    v[V_HIST_NEXT] = (h + 1) % hist.shape[0]
    e = hist[h]
    code = -(h + 1)
    if e.client_order_id != 0:
        i = map_find(st.ours, e.client_order_id)
        if i >= 0 and st.ours[i, 1] == code:
            map_delete(st.ours, i)
    e.client_order_id = x.client_order_id
    e.order_id = x.order_id
    e.cum_qty = cum
    e.qty = qty
    e.price = price
    e.instrument = x.instrument
    e.strategy = x.strategy
    e.side = x.side
    e.status = status
    _map_set(st.ours, x.client_order_id, code)


@hot
def _retire(st, m, status):
    """Our order in slot ``m`` (unlinked) is done: into the history, slot freed."""
    o = st.pool[m]
    _hist_add(st, o, o.cum_qty, o.qty, o.price, status)
    st.v[V_LIVE_OURS] -= 1
    _release_slot(st, m)


def next_release_ns(st) -> int:
    """When the oldest undelivered report becomes due (ns, the kernels' clock), or -1 when
    the delay queue is empty. Python (a replay's scheduler), not a kernel."""
    v = st.v
    head, tail = int(v[V_Q_HEAD]), int(v[V_Q_TAIL])
    if head >= tail:
        return -1
    q = st.queue
    return int(q["ts_venue_ns"][head & (q.shape[0] - 1)]) + int(v[V_LATENCY])


@hot
def venue_release_kernel(st, out, now_ns, seq):
    """Move the reports due at ``now_ns`` (oldest first, as many as ``out`` holds) into
    ``out``, numbering them ``seq, seq + 1, ...``; a report's ``exec_id`` is its ``seq``.
    Returns how many were moved."""
    queue = st.queue
    v = st.v
    mask = queue.shape[0] - 1
    lat = v[V_LATENCY]
    head = v[V_Q_HEAD]
    tail = v[V_Q_TAIL]
    n = 0
    while head < tail and n < out.shape[0]:
        e = queue[head & mask]
        if e.ts_venue_ns + lat > now_ns:
            break
        out[n] = e
        out[n].seq = seq + n
        out[n].exec_id = seq + n
        head += 1
        n += 1
    v[V_Q_HEAD] = head
    return n
