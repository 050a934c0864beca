"""The orders stage's restart: what the journal says we had done, and reconciling it.

:class:`OrdersRestart`, mixed into :class:`bot4.stages.orders.OrdersStage` (whose
``setup`` makes the attributes it uses: ``oms``, ``recon*``, ``query_*``, ``trading``,
``halted_for``, ...): the rebuild from the journal on a restart within the session
(``bot4.oms.recovery``), the snapshot restore, the queries and their answers, and the
Stage hooks that carry them.

Restart reconciliation: an OMS that starts with open orders (``restore_open_orders``, from
the snapshot ``book_open`` gives; storing it is the persistence issue) sends
``ACTION_QUERY`` for each and holds new intents in their ring until every ``EXEC_STATUS``
answer is back, or ``reconcile_timeout_ms`` passed: then intents flow again (risk counts
the restored orders as open) and the unanswered are asked again, ``RECON_ATTEMPTS``
rounds in all; silence alone halts nothing (``reconcile_unanswered``). Each answer, late
ones included, is judged by ``bot4.oms.reconcile``: a request of ours still in flight is
no difference; a difference that leaves the position known (the venue does not know the
order, closed or resized it unreported) is adopted, with a correction report (``exec_id``
0, ``EXEC_STATUS``, reason ``RECONCILE_MISMATCH``) to risk and the journal, counted
``reconcile_adopted``; fills that differ, or a finished order working at the venue, mark
the instrument as needing an operator (``summary()["needs_operator"]``) and HALT it, the
venue's view adopted as well.

Hooks beyond ``Stage``: ``input_ready(i, now_ns)`` (False: leave input i in its ring),
``pending(now_ns)`` and ``emit(outs, counts, seq)`` (records the stage sends outside an
input batch: the queries, the drain's CANCEL_ALL). The loop must call them; see the
report accompanying this module.
"""

from __future__ import annotations

import logging

import numpy as np

from bot4.logs import log_event
from bot4.oms.book import (
    F_AWAIT_STATUS,
    book_add,
    open_order,
)
from bot4.oms.emit import emit_cancel_all, emit_queries
from bot4.oms.lru import lru_put
from bot4.oms.state import (
    C_RECON_ADOPTED,
    C_RECON_MISMATCH,
    C_RECON_OUTSTANDING,
    C_RECON_UNANSWERED,
    I_NEXT_ORDER_ID,
)
from bot4.oms.states import IS_OPEN
from bot4.records import (
    EXEC_REPORT,
    ORDER,
)
from bot4.records.errors import Code
from bot4.shm.trading_state import HALTED, SRC_OMS, W_INSTRUMENTS, raise_state

log = logging.getLogger("bot4.stage")

# the stage's restart reconciliation (Python: input_ready / pending / emit)
RECON_READY = 0  # taking intents
RECON_QUERYING = 1  # queries to send
RECON_WAITING = 2  # queries sent, answers outstanding
RECON_ATTEMPTS = 3  # query rounds (one per reconcile_timeout_ms) before giving up on answers


class OrdersRestart:
    """Restart recovery and reconciliation of :class:`~bot4.stages.orders.OrdersStage`
    (module doc); a mixin, no state of its own."""

    # -- restart: what the journal says we had done ----------------------------------------
    def _journal_dir(self):
        """The journal of the persistence stage that reads our ``order_events`` output."""
        from bot4.paths import data_dir

        reader = self.topology.stage(self.outputs[2].consumer)
        return reader.params.get("dir") or data_dir() / "journal" / self.instance

    def _recover_from_journal(self) -> None:
        """A restart within the session: rebuild open orders, every client order id used
        and the order id counter from the journal (``bot4.oms.recovery``), then reconcile
        the open orders with the venue before taking new intents. A first start in the
        session finds nothing of the session in the journal and does nothing."""
        from bot4.oms.recovery import rebuild_from_journal, unconsumed_records

        # what persistence has not journalled yet is still in our output rings: read them
        # first (then the journal), so the rebuild misses nothing whatever its lag
        pending = [
            unconsumed_records(self.instance, self.outputs[2].name, ORDER),
            unconsumed_records(self.instance, self.outputs[3].name, EXEC_REPORT),
        ]
        rec = rebuild_from_journal(self._journal_dir(), self.session, pending)
        if not rec.orders:
            return
        st = self.oms
        for cl in rec.risk_ids:
            lru_put(st.seen, np.uint64(cl), 0)
        self.restore_exec_ids(rec.exec_ids, rec.exec_contents)
        n = self.restore_open_orders(rec.open_orders, rec.max_order_id + 1)
        self.recovered = {
            "orders": rec.orders,
            "reports": rec.reports,
            "client_ids": len(rec.risk_ids),
            "open_orders": n,
            "from_rings": int(sum(len(x) for x in pending)),
        }
        log_event(
            log,
            logging.WARNING,
            "stage_recovered",
            "orders: restarted mid-session; rebuilt from the journal",
            recovered=self.recovered,
        )

    def _halt_disagreeing(self) -> None:
        """Instruments whose venue view genuinely disagreed with ours (``bot4.oms.reconcile``)
        stay HALTED until an operator resumes them (``bot4 resume``); each disagreement is
        acted on once (a late answer halts then, not again for earlier ones)."""
        self.mismatches_seen = int(self.oms.ctr[C_RECON_MISMATCH])
        new = np.flatnonzero(self.oms.needs_operator > self.halted_for)
        self.halted_for[:] = self.oms.needs_operator
        if self.trading is None:
            return
        for ins in new:
            if ins < 1 or ins > int(self.trading[W_INSTRUMENTS]):
                continue
            raise_state(self.trading, int(ins), HALTED, int(Code.RECONCILE_MISMATCH), SRC_OMS)
            log.error(
                "orders: instrument %d: venue and OMS disagree after the restart; HALTED until "
                "an operator resumes it",
                ins,
            )

    # -- restart reconciliation ------------------------------------------------------------
    def restore_open_orders(self, open_orders: np.ndarray, next_order_id: int = 0) -> int:
        """Load a snapshot of open orders (``OPEN_ORDER`` rows, as ``book_open`` returns them)
        and start reconciling: one ACTION_QUERY each, new intents held until answered.
        Call after ``setup`` and before the first batch. Returns how many were restored."""
        st = self.oms
        slots = []
        for row in open_orders:
            state = int(row["state"])
            if not IS_OPEN[state]:
                continue
            rec = open_order(
                client_order_id=row["client_order_id"],
                risk_client_order_id=row["risk_client_order_id"] or row["client_order_id"],
                order_id=row["order_id"], instrument=row["instrument"], side=row["side"],
                price=row["price"], stop_price=row["stop_price"], qty=row["qty"],
                cum_qty=row["cum_qty"], leaves_qty=row["leaves_qty"], strategy=row["strategy"],
                order_type=row["order_type"], tif=row["tif"], state=state,
                ts_order_ns=row["ts_order_ns"],
            )  # fmt: skip
            s = book_add(st.book, rec)
            if s < 0:
                raise ValueError(
                    f"snapshot order {int(row['client_order_id'])}: book full or instrument "
                    f"{int(row['instrument'])} outside the book"
                )
            st.book.slots["flags"][s] |= F_AWAIT_STATUS  # until its EXEC_STATUS, or it closes
            lru_put(st.seen, np.uint64(st.book.slots["risk_client_order_id"][s]), 0)
            slots.append(s)
            st.ids[I_NEXT_ORDER_ID] = max(int(st.ids[I_NEXT_ORDER_ID]), int(row["order_id"]) + 1)
        st.ids[I_NEXT_ORDER_ID] = max(int(st.ids[I_NEXT_ORDER_ID]), int(next_order_id))
        self.query_slots = np.array(slots, np.int64)
        self.query_next = 0
        self.recon_attempt = 1
        self.intents_open = False
        if slots:
            self.recon = RECON_QUERYING
            st.ctr[C_RECON_OUTSTANDING] += len(slots)
            log.info("orders: %d open orders restored; reconciling before new intents", len(slots))
        return len(slots)

    def restore_exec_ids(self, exec_ids: np.ndarray, contents: np.ndarray) -> None:
        """Remember venue exec ids received before a restart with their content hashes
        (``bot4.records.identity``), oldest first; the most recent ``exec_capacity`` stay.
        A repeat of one is then dropped as a duplicate, a reuse with other content is a
        conflict, across the restart as within a process."""
        keep = len(self.oms.execs.keys)
        for exec_id, content in zip(exec_ids[-keep:], contents[-keep:], strict=True):
            lru_put(self.oms.execs, np.uint64(exec_id), np.int64(content))

    @property
    def reconciling(self) -> bool:
        return self.recon != RECON_READY

    def _finish_reconcile(self, now_ns: int) -> None:
        st = self.oms
        if self.recon == RECON_WAITING and st.ctr[C_RECON_OUTSTANDING] > 0:
            if now_ns < self.recon_deadline_ns:
                return
            sl = st.book.slots
            late = (sl["state"] != 0) & ((sl["flags"] & F_AWAIT_STATUS) != 0)
            if self.recon_attempt < RECON_ATTEMPTS and late.any():
                # a slow venue (a loaded host, a venue restarting: it may have lost its
                # answers) is no disagreement: take new intents meanwhile (risk counts the
                # restored orders as open) and ask again
                self.recon_attempt += 1
                self.intents_open = True
                self.query_slots = np.flatnonzero(late).astype(np.int64)
                self.query_next = 0
                self.recon = RECON_QUERYING
                log.warning(
                    "orders: %d queries unanswered after %.0f ms; taking new intents, asking "
                    "again (attempt %d of %d)",
                    int(late.sum()), self.reconcile_timeout_ns / 1e6, self.recon_attempt,
                    RECON_ATTEMPTS,
                )  # fmt: skip
                return
            sl["flags"][late] &= ~np.uint8(F_AWAIT_STATUS)
            st.ctr[C_RECON_UNANSWERED] += int(late.sum())
            st.ctr[C_RECON_OUTSTANDING] = 0
            log.warning(
                "orders: %d queries unanswered after %d attempts: those orders keep the "
                "journal's state, their reports apply as they come, a late answer is still "
                "judged",
                int(late.sum()),
                RECON_ATTEMPTS,
            )
        if self.recon == RECON_WAITING:
            self.recon = RECON_READY
            self._halt_disagreeing()
            adopted = int(st.ctr[C_RECON_ADOPTED])
            if adopted:
                log.warning(
                    "orders: the venue's view of %d orders adopted (it did not know them, or "
                    "closed or resized them unreported; fills agree): corrections sent to risk "
                    "and the journal, trading goes on",
                    adopted,
                )
            log.info("orders: reconciled; taking new intents")

    def input_ready(self, i: int, now_ns: int) -> bool:
        """False while new intents (input 0) must stay in their ring: reconciling, until
        every answer is back or the first ``reconcile_timeout_ms`` passed."""
        if i != 0 or self.recon == RECON_READY:
            return True
        self._finish_reconcile(now_ns)
        return self.recon == RECON_READY or self.intents_open

    def pending(self, now_ns: int) -> int:
        """How many records the stage has to send outside an input batch (a reconciliation
        timeout is also noticed here, whether or not intents are waiting)."""
        if self.recon == RECON_WAITING and now_ns >= self.recon_deadline_ns:
            self._finish_reconcile(now_ns)
        n = len(self.query_slots) - self.query_next if self.recon == RECON_QUERYING else 0
        return n + (1 if self.drain_cancel_all else 0)

    def emit(self, outs, counts, seq: int) -> int:
        """Write up to ``len(outs[0])`` pending records (queries, then the drain's
        CANCEL_ALL) to output 0 and their copies to output 2; next seq."""
        counts[:] = 0
        now = self.clock()
        room = len(outs[0]) if self.n_out < 3 else min(len(outs[0]), len(outs[2]))
        n = 0
        if self.recon == RECON_QUERYING:
            k = min(room, len(self.query_slots) - self.query_next)
            n, seq = emit_queries(self.oms, self.query_slots, self.query_next, k, outs[0], seq, now)
            self.query_next += k
            if self.query_next == len(self.query_slots):
                self.recon = RECON_WAITING
                self.recon_deadline_ns = now + self.reconcile_timeout_ns
        if self.drain_cancel_all and n < room:
            seq = emit_cancel_all(self.oms, outs[0][n : n + 1], seq, 0, now)
            self.drain_cancel_all = False
            self.drain_cancel_sent = True
            n += 1
        counts[0] = n
        if self.n_out > 2:
            outs[2][:n] = outs[0][:n]
            counts[2] = n
        return seq
