"""Execution identity: what makes two execution reports *the same execution*.

An execution is identified by its venue's execution id (``EXEC_REPORT.exec_id``; see
``docs/protocol.md``, identities, for how the simulated venue keeps it unique for the life
of the data). Every identity boundary — the OMS's duplicate check, the journal loader, the
ledger — treats a repeated id in one of two ways:

* the same **content** (:data:`EXEC_CONTENT_FIELDS` equal): the same execution delivered
  twice (a journal frame written again after a restart, a reload): an idempotent no-op;
* different content: an **identity conflict** — two executions under one id. It is an
  error: counted, logged, kept, alarmed; never dropped as a duplicate.

Content is what the execution *is*: the order it belongs to, its type and status, the
instrument, strategy, side, quantities, price, fee and reason. Sequence numbers and
timestamps are not content: the OMS renumbers what it forwards, and the same report relayed
twice keeps its economics but not its ``seq``.

:func:`exec_content_hash` (numba, one record) and :func:`exec_content_hashes` (numpy, an
array) compute the same 64-bit hash of the content fields, for the places that keep a hash
instead of the record (the OMS's LRU of seen ids, the loader's reconciliation). The
database compares the columns themselves.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["EXEC_CONTENT_FIELDS", "exec_content_hash", "exec_content_hashes"]

#: EXEC_REPORT fields compared between two reports under one ``exec_id`` (in hash order)
EXEC_CONTENT_FIELDS = (
    "client_order_id",
    "order_id",
    "exec_type",
    "status",
    "reason",
    "instrument",
    "strategy",
    "side",
    "last_qty",
    "last_price",
    "cum_qty",
    "leaves_qty",
    "fee",
)

_SEED = np.uint64(0x6578656331643421)  # "exec1d4!"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(nogil=True, cache=True, inline="always")
def _mix(h, x):
    """One splitmix64 round over ``h ^ x`` (uint64, wrapping)."""
    z = (h ^ x) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(nogil=True, cache=True, _nrt=False)  # bot4.nbkit.hot (records sit below the kit)
def exec_content_hash(r) -> np.int64:
    """64-bit hash of ``r``'s :data:`EXEC_CONTENT_FIELDS` (an EXEC_REPORT record), as an
    int64 (the OMS keeps it as an LRU value). Signed fields enter by their int64 bit
    pattern, so it equals :func:`exec_content_hashes` of the same record."""
    h = _SEED
    h = _mix(h, np.uint64(r.client_order_id))
    h = _mix(h, np.uint64(r.order_id))
    h = _mix(h, np.uint64(np.int64(r.exec_type)))
    h = _mix(h, np.uint64(np.int64(r.status)))
    h = _mix(h, np.uint64(np.int64(r.reason)))
    h = _mix(h, np.uint64(np.int64(r.instrument)))
    h = _mix(h, np.uint64(np.int64(r.strategy)))
    h = _mix(h, np.uint64(np.int64(r.side)))
    h = _mix(h, np.uint64(r.last_qty))
    h = _mix(h, np.uint64(r.last_price))
    h = _mix(h, np.uint64(r.cum_qty))
    h = _mix(h, np.uint64(r.leaves_qty))
    h = _mix(h, np.uint64(r.fee))
    return np.int64(h)


def exec_content_hashes(records: np.ndarray) -> np.ndarray:
    """:func:`exec_content_hash` of every record of an EXEC_REPORT array (int64[n])."""
    h = np.full(len(records), _SEED, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in EXEC_CONTENT_FIELDS:
            col = records[name]
            x = col.view(np.uint64) if col.dtype.itemsize == 8 else col.astype(np.int64)
            z = (h ^ x.astype(np.uint64, copy=False)) + _GOLDEN
            z = (z ^ (z >> np.uint64(30))) * _M1
            z = (z ^ (z >> np.uint64(27))) * _M2
            h = z ^ (z >> np.uint64(31))
    return h.view(np.int64)
