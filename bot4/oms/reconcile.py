"""Restart reconciliation: what the OMS makes of the venue's answer to a status query.

A restarted orders stage rebuilds its open orders from the journal and the records still in
its own output rings (``bot4.oms.recovery``), then sends ``ACTION_QUERY`` for each. The
venue answers ``EXEC_STATUS`` with the order's status, cumulative and open quantity.

What a difference can mean. Queries travel on ``venue_orders`` behind everything we sent
before them, and the venue handles that ring in order; its reports reach us on one ring in
the order it produced them. So when a STATUS is read, every report the venue produced
before it has been applied, and the venue has handled every request of ours sent before
the query. A request sent *after* the query (by a process that was killed while its query
was out) is the one thing still in flight: our state may be a pending request
(cancel / replace / new) while the venue shows the order as it was. That is the in-flight
allowance below; the venue's answer to the request follows the STATUS on the same ring.

Everything else is a real difference, of two kinds:

* the venue's view contradicts nothing we know about our **fills**: it does not know the
  order (``OS_NONE``: a restarted venue forgets its book), it closed the order or
  changed its open quantity without a report we saw. The position is not in doubt, so the
  venue's view is **adopted**: the OMS takes it and sends a correction (an
  ``EXEC_STATUS`` it generates, ``exec_id`` 0, reason ``RECONCILE_MISMATCH``, the adopted
  status / cum / leaves, ``last_qty`` 0) to risk, which frees the open quantity, and to
  ``exec_events``, so the journal (and a later restart) and the database follow. Counted
  ``reconcile_adopted``, logged at WARNING; trading goes on.
* a **genuine disagreement**: the venue's cumulative quantity differs from ours (a fill one
  side has and the other not: the position is in doubt), or an order we hold finished is
  still working at the venue, or finished otherwise than we recorded. The venue's view is
  adopted as well (correction sent), the instrument is marked for an operator and the stage
  HALTs it (``RECONCILE_MISMATCH``, source ``oms``) until ``bot4 resume``.

Silence is neither: a venue that does not answer (a loaded host, a venue restarting) holds
new intents for one ``reconcile_timeout_ms`` only; the OMS then asks again while intents
flow, and judges a late answer when it comes (``bot4.stages.orders_restart``).

The rule is written once here, as two small kernels the OMS calls per STATUS, and as the
table ``docs/protocol.md`` shows.
"""

from __future__ import annotations

from bot4.nbkit.hot import hot
from bot4.oms.states import (
    IS_TERMINAL,
    ST_CANCEL_PENDING,
    ST_CANCEL_PENDING_PARTIAL,
    ST_NEW,
    ST_PENDING,
    ST_REPLACE_PENDING,
    ST_REPLACE_PENDING_PARTIAL,
    STATUS_OF,
)
from bot4.records import (
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NONE,
    OS_REJECTED,
)

__all__ = [
    "V_ADOPT",
    "V_AGREE",
    "V_HALT",
    "V_IN_FLIGHT",
    "VERDICT_NAMES",
    "closed_order_verdict",
    "open_order_verdict",
]

V_AGREE = 0  # the venue's view is ours
V_IN_FLIGHT = 1  # a request of ours is on its way: keep our state, its answer follows
V_ADOPT = 2  # a difference that leaves the position known: take the venue's view
V_HALT = 3  # fills differ, or a finished order works: take the venue's view and halt

VERDICT_NAMES = {V_AGREE: "agree", V_IN_FLIGHT: "in_flight", V_ADOPT: "adopt", V_HALT: "halt"}


@hot
def _venue_final(status) -> bool:
    return status in (OS_FILLED, OS_CANCELLED, OS_REJECTED, OS_EXPIRED)


@hot
def open_order_verdict(state, cum_qty, leaves_qty, v_status, v_cum_qty, v_leaves_qty) -> int:
    """Verdict on the venue's STATUS (``v_*``: ``OS_*`` status, cum, leaves) for an order the
    OMS holds open in ``state`` (``bot4.oms.states``) with ``cum_qty`` / ``leaves_qty``.

    ======================================  =========================================
    venue says                              verdict
    ======================================  =========================================
    OS_NONE (order unknown)                 ADOPT: it rests nowhere; our fills stand
    cum differs from ours                   HALT: a fill one side lacks
    finished (filled, cancelled, ...)       ADOPT: closed without a report we saw
    working, we have a request pending      IN_FLIGHT: the request's answer follows
    working, leaves differ from ours        ADOPT: resized without a report we saw
    working, same status and leaves         AGREE
    ======================================  =========================================
    """
    if v_status == OS_NONE:
        return V_ADOPT
    if v_cum_qty != cum_qty:
        return V_HALT
    if _venue_final(v_status):
        return V_ADOPT
    if state in (
        ST_PENDING,
        ST_NEW,
        ST_CANCEL_PENDING,
        ST_CANCEL_PENDING_PARTIAL,
        ST_REPLACE_PENDING,
        ST_REPLACE_PENDING_PARTIAL,
    ):
        return V_IN_FLIGHT
    if v_leaves_qty != leaves_qty:
        return V_ADOPT
    if STATUS_OF[state] == v_status:
        return V_AGREE
    return V_ADOPT  # working either way, same quantities: a status word we did not see


@hot
def closed_order_verdict(state, v_status) -> int:
    """Verdict on the venue's STATUS for an order the OMS has finished in terminal
    ``state`` (its open-order row is gone: no quantities to compare). The venue not
    knowing it (``OS_NONE``: a restarted venue) or reporting the same end is AGREE; the
    order working at the venue, or ending otherwise (filled where we saw it cancelled),
    is HALT."""
    if v_status == OS_NONE:
        return V_AGREE
    if IS_TERMINAL[state] and STATUS_OF[state] == v_status:
        return V_AGREE
    return V_HALT
