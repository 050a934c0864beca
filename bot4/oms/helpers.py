"""What the OMS kernels share: the record writers, closing an order, the borrowed state.

:func:`_report` (an OMS-generated report about risk's ORDER), :func:`_venue_msg` (a venue
message about one of our open orders), :func:`_close` (an order reached a terminal state)
and :func:`borrowed` (the state object with every array an unowned view, for one kernel
call), used by the input kernels (:mod:`bot4.oms.from_risk`, :mod:`bot4.oms.from_venue`)
and the records sent outside an input batch (:mod:`bot4.oms.emit`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit import unowned
from bot4.oms.book import (
    F_AWAIT_STATUS,
    Book,
    book_remove,
)
from bot4.oms.lru import (
    Lru,
    lru_put,
)
from bot4.oms.state import (
    C_FORWARDED,
    C_GENERATED,
    C_RECON_OUTSTANDING,
    Oms,
)
from bot4.oms.states import ST_NEW

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
