"""What a restarted orders stage knew: rebuilt from the persistence stage's journal.

The journal holds, for the session, every venue order the OMS sent (``order_events``:
ORDER records, NEW / CANCEL / REPLACE / QUERY / CANCEL_ALL) and every execution report it
received or generated (``exec_events``). Both come from the OMS's one sequence counter, so
sorting them by ``seq`` gives the order in which the OMS emitted them, whatever order
persistence read its two rings in. Replaying that history rebuilds:

* the **open orders** (``OPEN_ORDER`` rows for ``OrdersStage.restore_open_orders``, which
  then queries each at the venue before any new intent is taken: the venue's view wins,
  and a disagreement is flagged for an operator);
* every **client order id risk sent** this session (the duplicate check: an intent
  replayed after the restart is refused even when its id left the in-memory LRU);
* the highest OMS **order id** used (the counter continues above it);
* the venue **execution ids** received, each with its content hash
  (``bot4.records.identity``), so the restarted OMS still tells a repeated report (same
  content: dropped) from a reused id (different content: an identity conflict);
* the **net filled quantity** per instrument (the positions the fills made).

Only records of the current session count (``seq`` in the session's range, see
``bot4.paths``): a journal directory outlives sessions. The journal is read, never written.

What the OMS emitted but persistence had not yet journalled when the OMS died is still in
its output rings (``order_events``, ``exec_events``), between the consumer's and the
producer's position. :func:`unconsumed_records` copies it (read-only), and
:func:`rebuild_from_journal` takes it as ``pending``: the rebuild is then exact whatever
persistence's lag — waiting for persistence (:func:`wait_journalled`) is bounded, and a
rebuild that missed a fill or a close would make the venue's answers look like
disagreements. The rings are read *before* the journal: a record persistence releases in
between is in the journal by then (it journals before it releases), and a record found in
both is counted once (by ``seq``, unique per record type within the OMS's session).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot4.journal import JournalReader
from bot4.oms.book import OPEN_ORDER
from bot4.oms.states import (
    ST_ACKNOWLEDGED,
    ST_CANCEL_PENDING,
    ST_CANCEL_PENDING_PARTIAL,
    ST_CANCELLED,
    ST_EXPIRED,
    ST_FILLED,
    ST_PARTIALLY_FILLED,
    ST_PENDING,
    ST_REJECTED,
    ST_REPLACE_PENDING,
    ST_REPLACE_PENDING_PARTIAL,
)
from bot4.paths import SESSION_SEQ_SHIFT
from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    ACTION_REPLACE,
    EXEC_ACK,
    EXEC_BROKEN,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_EXPIRED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_REPORT,
    EXEC_STATUS,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    ORDER,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NEW,
    OS_PARTIALLY_FILLED,
    OS_PENDING_NEW,
    OS_REJECTED,
    RT_EXEC_REPORT,
    RT_ORDER,
    SIDE_BUY,
)
from bot4.records.identity import exec_content_hashes
from bot4.shm.segment import SegmentMissingError, segment_name
from bot4.shm.stats import RingReader

log = logging.getLogger("bot4.oms")

_TERMINAL = {ST_FILLED, ST_CANCELLED, ST_REJECTED, ST_EXPIRED}
_EXEC_TERMINAL = {
    EXEC_FILL: ST_FILLED,
    EXEC_CANCELLED: ST_CANCELLED,
    EXEC_REJECTED: ST_REJECTED,
    EXEC_EXPIRED: ST_EXPIRED,
    EXEC_STP_EXPIRED: ST_EXPIRED,  # the venue's self-trade prevention
}
_STATUS_STATE = {
    OS_PENDING_NEW: ST_PENDING,
    OS_NEW: ST_ACKNOWLEDGED,
    OS_PARTIALLY_FILLED: ST_PARTIALLY_FILLED,
    OS_FILLED: ST_FILLED,
    OS_CANCELLED: ST_CANCELLED,
    OS_REJECTED: ST_REJECTED,
    OS_EXPIRED: ST_EXPIRED,
}


@dataclass
class Recovered:
    """What the journal says the OMS had done in the session (see the module docstring)."""

    open_orders: np.ndarray  # OPEN_ORDER rows, state open
    risk_ids: np.ndarray  # uint64: every client order id risk sent that became an order
    max_order_id: int = 0
    #: venue exec ids received this session, oldest first, and their content hashes
    exec_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    exec_contents: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    net_filled: dict[int, int] = field(default_factory=dict)  # instrument -> shares, signed
    orders: int = 0  # venue orders replayed
    reports: int = 0  # execution reports replayed


def _working(o: dict) -> int:
    return ST_PARTIALLY_FILLED if o["cum_qty"] > 0 else ST_ACKNOWLEDGED


def session_range(session: int) -> tuple[int, int]:
    """[first, end) of the sequence numbers of ``session``."""
    lo = session << SESSION_SEQ_SHIFT
    return max(lo, 1), lo + (1 << SESSION_SEQ_SHIFT)


def rebuild_from_journal(
    journal_dir: str | Path, session: int, pending: list[np.ndarray] | None = None
) -> Recovered:
    """Replay the session's ORDER and EXEC_REPORT records of ``journal_dir`` (see module),
    with ``pending``: ORDER / EXEC_REPORT arrays not journalled yet (the OMS's output rings,
    :func:`unconsumed_records`, read before the journal); a pending record whose ``seq``
    the journal holds too counts once."""
    lo, hi = session_range(session)
    orders, execs = [], []
    p = Path(journal_dir)
    if p.is_dir():
        for _pos, rtype, recs in JournalReader(p):
            if rtype not in (RT_ORDER, RT_EXEC_REPORT):
                continue
            sel = recs[(recs["seq"] >= lo) & (recs["seq"] < hi)]
            if len(sel):
                (orders if rtype == RT_ORDER else execs).append(sel)
    for recs in pending or ():
        chunks = orders if recs.dtype == ORDER else execs
        seen = np.concatenate([c["seq"] for c in chunks]) if chunks else np.zeros(0, np.uint64)
        sel = recs[(recs["seq"] >= lo) & (recs["seq"] < hi)]
        sel = sel[~np.isin(sel["seq"], seen)]
        if len(sel):
            chunks.append(sel)
    venue = [c[c["exec_id"] != 0] for c in execs]
    venue_execs = np.concatenate(venue) if venue else np.zeros(0, EXEC_REPORT)
    venue_execs = venue_execs[np.argsort(venue_execs["seq"], kind="stable")]
    events = [(int(r["seq"]), 0, r) for chunk in orders for r in chunk]
    events += [(int(r["seq"]), 1, r) for chunk in execs for r in chunk]
    events.sort(key=lambda e: e[0])
    book: dict[int, dict] = {}  # venue client order id -> order
    risk_ids: list[int] = []
    net: dict[int, int] = {}
    max_oid = 0
    n_orders = n_reports = 0
    for _seq, kind, r in events:
        if kind == 0:
            n_orders += 1
            _apply_order(book, r, risk_ids)
            max_oid = max(max_oid, int(r["order_id"]))
        else:
            n_reports += 1
            et = int(r["exec_type"])
            if et in (EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_BROKEN) and int(r["last_qty"]) > 0:
                q = int(r["last_qty"])
                q = -q if et == EXEC_BROKEN else q  # a bust reverses the fill it names
                ins = int(r["instrument"])
                net[ins] = net.get(ins, 0) + (q if int(r["side"]) == SIDE_BUY else -q)
            _apply_report(book, r)
    live = list({id(o): o for o in book.values() if o["state"] not in _TERMINAL}.values())
    out = np.zeros(len(live), OPEN_ORDER)
    for i, o in enumerate(live):
        for k, v in o.items():
            out[i][k] = v
    return Recovered(
        open_orders=out,
        risk_ids=np.array(risk_ids, np.uint64),
        max_order_id=max_oid,
        exec_ids=venue_execs["exec_id"].copy(),
        exec_contents=exec_content_hashes(venue_execs),
        net_filled={k: v for k, v in net.items() if v},
        orders=n_orders,
        reports=n_reports,
    )


def _apply_order(book: dict[int, dict], r, risk_ids: list[int]) -> None:
    action = int(r["action"])
    if action == ACTION_NEW:
        cl = int(r["client_order_id"])
        risk_ids.append(cl)
        book[cl] = {
            "client_order_id": cl,
            "risk_client_order_id": cl,
            "alias_client_order_id": 0,
            "order_id": int(r["order_id"]),
            "ts_order_ns": int(r["ts_order_ns"]),
            "qty": int(r["qty"]),
            "cum_qty": 0,
            "leaves_qty": int(r["qty"]),
            "price": int(r["limit_price"]),
            "stop_price": int(r["stop_price"]),
            "instrument": int(r["instrument"]),
            "strategy": int(r["strategy"]),
            "side": int(r["side"]),
            "state": ST_PENDING,
            "order_type": int(r["order_type"]),
            "tif": int(r["tif"]),
        }
    elif action == ACTION_CANCEL:
        o = book.get(int(r["orig_client_order_id"]))
        if o is not None and o["state"] not in _TERMINAL:
            o["state"] = ST_CANCEL_PENDING_PARTIAL if o["cum_qty"] else ST_CANCEL_PENDING
    elif action == ACTION_REPLACE:
        orig = int(r["orig_client_order_id"])
        o = book.get(orig)
        if o is not None and o["state"] not in _TERMINAL:
            new = int(r["client_order_id"]) or orig
            if new != orig:
                book[new] = o  # reports may name either id until the venue answers
                o["alias_client_order_id"] = new
            if int(r["qty"]):
                o["qty"] = int(r["qty"])
                o["leaves_qty"] = max(0, o["qty"] - o["cum_qty"])
            if int(r["limit_price"]):
                o["price"] = int(r["limit_price"])
            o["state"] = ST_REPLACE_PENDING_PARTIAL if o["cum_qty"] else ST_REPLACE_PENDING
    elif action == ACTION_CANCEL_ALL:
        ins = int(r["instrument"])
        for o in book.values():
            if o["state"] not in _TERMINAL and (ins == 0 or o["instrument"] == ins):
                o["state"] = ST_CANCEL_PENDING_PARTIAL if o["cum_qty"] else ST_CANCEL_PENDING


def _apply_report(book: dict[int, dict], r) -> None:
    o = book.get(int(r["client_order_id"]))
    if o is None:
        return  # not a venue order of ours this session (a guard expiry before sending, ...)
    et = int(r["exec_type"])
    if et == EXEC_STATUS and int(r["exec_id"]) != 0:
        # the venue's answer to a query changed the OMS's order only where the OMS adopted
        # it, and then the OMS journalled a correction (exec_id 0) right after it
        # (bot4.oms.reconcile): that record carries the change
        return
    alias = o.get("alias_client_order_id", 0)
    if alias and et in (EXEC_REPLACED, EXEC_CANCEL_REJECTED):
        if et == EXEC_REPLACED:  # the venue knows the order by the new id from now on
            book.pop(o["client_order_id"], None)
            o["client_order_id"] = alias
        else:
            book.pop(alias, None)
        o["alias_client_order_id"] = 0
    if et in (EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_REPLACED, EXEC_STATUS, EXEC_STP_DECREMENTED):
        o["cum_qty"] = int(r["cum_qty"])
        o["leaves_qty"] = int(r["leaves_qty"])
    if et == EXEC_STP_DECREMENTED:  # the venue took prevented_qty off the order
        o["qty"] = o["cum_qty"] + o["leaves_qty"]
        if o["state"] == ST_PENDING:
            o["state"] = ST_ACKNOWLEDGED
    if et in _EXEC_TERMINAL:
        o["state"] = _EXEC_TERMINAL[et]
        o["leaves_qty"] = 0
    elif et == EXEC_ACK:
        if o["state"] == ST_PENDING:
            o["state"] = ST_ACKNOWLEDGED
    elif et in (EXEC_PARTIAL_FILL, EXEC_REPLACED, EXEC_CANCEL_REJECTED):
        if et == EXEC_PARTIAL_FILL and o["state"] in (ST_CANCEL_PENDING, ST_CANCEL_PENDING_PARTIAL):
            o["state"] = ST_CANCEL_PENDING_PARTIAL
        elif et == EXEC_PARTIAL_FILL and o["state"] in (
            ST_REPLACE_PENDING,
            ST_REPLACE_PENDING_PARTIAL,
        ):
            o["state"] = ST_REPLACE_PENDING_PARTIAL
        else:
            o["state"] = _working(o)
    elif et == EXEC_STATUS:
        o["state"] = _STATUS_STATE.get(int(r["status"]), o["state"])
        if o["state"] in _TERMINAL:
            o["leaves_qty"] = 0


def unconsumed_records(instance: str, ring: str, dtype: np.dtype) -> np.ndarray:
    """A copy of the records of ring ``ring`` of ``instance`` that its consumer has not
    released yet (oldest first), read-only; empty when the ring does not exist. Meant for
    the ring's producer while it is not running (a restart's setup): nobody else writes
    those slots, and a consumer only reads them."""
    from bot4.shm.ring_layout import HEADER_BYTES

    try:
        reader = RingReader(segment_name(instance, ring))
    except SegmentMissingError:
        return np.zeros(0, dtype)
    try:
        snap = reader.snapshot()
        if snap.depth == 0 or snap.depth > snap.capacity:
            return np.zeros(0, dtype)  # nothing, or positions no ring can hold
        slots = np.frombuffer(reader.segment.buf, dtype, snap.capacity, HEADER_BYTES)
        start = snap.consumer_position % snap.capacity
        out = np.take(slots, np.arange(start, start + snap.depth), mode="wrap")
        del slots
        return out
    finally:
        reader.close()


def wait_journalled(instance: str, rings: list[str], timeout_s: float = 3.0) -> bool:
    """Wait until persistence has consumed everything in ``rings`` (ring names of
    ``instance``); True if it has, False at the timeout (persistence down or slow: what
    is still in a ring is not in the journal yet). Read-only."""
    readers = []
    try:
        for name in rings:
            try:
                readers.append(RingReader(segment_name(instance, name)))
            except SegmentMissingError:
                continue
        deadline = time.monotonic() + timeout_s
        while True:
            if all(r.snapshot().depth == 0 for r in readers):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
    finally:
        for r in readers:
            r.close()
