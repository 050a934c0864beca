"""What the OMS kernels share: the record writers and closing an order.

:func:`_report` (an OMS-generated report about risk's ORDER), :func:`_venue_msg` (a venue
message about one of our open orders) and :func:`_close` (an order reached a terminal
state), used by the input kernels (:mod:`bot4.oms.from_risk`, :mod:`bot4.oms.from_venue`)
and the records sent outside an input batch (:mod:`bot4.oms.emit`).
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit import copy_terms
from bot4.nbkit.hot import hot
from bot4.oms.book import (
    F_AWAIT_STATUS,
    book_remove,
)
from bot4.oms.lru import (
    lru_put,
)
from bot4.oms.state import (
    C_FORWARDED,
    C_GENERATED,
    C_RECON_OUTSTANDING,
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
@hot
def _report(out, k, seq, r, order_id, what, now, st):
    """An OMS-generated report about risk's ORDER ``r`` (exec_id 0, no venue time) into
    ``out[k]``; ``what`` = ``(exec_type, status, leaves, reason)``, int64 each."""
    exec_type, status, leaves, reason = what
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


@hot
def _venue_msg(out, k, seq, parent, st, s, msg, now):
    """A venue message about our open order in slot ``s`` into ``out[k]``: ``msg`` =
    ``(action, client_order_id, qty)`` (int64, uint64, int64); stamps copied from
    ``parent`` (the record that caused it) when given."""
    action, client_order_id, qty = msg
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
    copy_terms(v, o)  # the slot's terms; the message's own quantity below
    v.qty = qty
    v.limit_price = o.price
    v.action = action


@hot
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
