"""The OMS records sent outside an input batch: :func:`emit_queries` (a restarted OMS's
ACTION_QUERY per restored order) and :func:`emit_cancel_all` (an operator's or the
stage's CANCEL_ALL), over the one state object :data:`bot4.oms.state.Oms`. Each returns
the next ``seq``; none allocates. Called by the orders stage (:mod:`bot4.stages.orders`).
"""

from __future__ import annotations

from numba import njit

from bot4.nbkit.hot import hot
from bot4.oms.book import F_AWAIT_STATUS
from bot4.oms.from_risk import mark_cancel_all
from bot4.oms.helpers import _I0, _i, _venue_msg
from bot4.oms.state import (
    C_CANCEL_ALL,
    C_QUERIES_SENT,
)
from bot4.records import (
    ACTION_CANCEL_ALL,
    ACTION_QUERY,
)


# --- records sent outside an input batch ----------------------------------------------------
@hot
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
        _venue_msg(out, n, seq + n, none, st, s, (_i(ACTION_QUERY), o.client_order_id, o.qty), now)
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
