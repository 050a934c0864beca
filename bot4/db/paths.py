"""How one batch's rows get in: the loader's four paths (:data:`bot4.db.loader.MODES`).

A batch of at most ``small_batch`` (128) loadable records takes

- **pipeline**: the ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` statements read
  two-dimensional array parameters (one per record type), sent with psycopg's pipeline mode: BEGIN, the INSERTs
  and the positions read in one round trip; positions, the fenced advance and COMMIT (or
  PREPARE) in the next; the ledger branch runs on its server meanwhile. When the loader
  knows every position the batch's fills move (from its own last commit), the positions go
  in the first round trip too, written by ``bot4_positions_cas`` (**one trip**).

A bigger batch tries, in order:

- **fast**: one binary COPY per table straight into the real tables, rows encoded with
  numpy (:mod:`bot4.db.encoding`); with a separate ledger database its COPY runs alongside
  on a helper thread. Taken when the batch collides with nothing: any identity already
  present or any refused row makes a COPY fail, the transaction is rolled back, and the
  batch is redone in
- **dedupe**: each record type is COPYed into the loader's UNLOGGED staging table
  (``bot4_stage.<type>_<journal hash>_<layout hash>``; TEMP tables cannot be used: PREPARE
  TRANSACTION refuses them) and moved with the same ``INSERT ... ON CONFLICT DO NOTHING``
  as the pipeline path.

In the ON CONFLICT paths the executions INSERT returns the fills it inserted, and only
those move positions and get ledger legs, so a fill loaded twice counts once. Should the
database refuse a row (integrity 23xxx or data 22xxx error), the batch is redone in

- **isolate**: staging, each INSERT under a savepoint, bisecting a refused range down to
  the rows the database refuses; those go to ``rejected_rows`` and the rest commits.

:class:`BatchPaths` is a part of :class:`bot4.db.loader.Loader` (it uses the loader's
instruments, coordinator, hooks and stats); it is not used on its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bot4.db.conflicts import exec_conflicts_sql
from bot4.db.encoding import write_chunks
from bot4.db.positions import (
    CAS_MISS,
    POSITIONS_CAS_SQL,
    POSITIONS_READ_SQL,
    POSITIONS_WRITE_SQL,
    cas_params,
    position_keys,
    positions_from_rows,
    positions_moved,
)
from bot4.db.rows import (
    LAYOUTS,
    LEDGER_COLUMNS,
    LEDGER_SQL,
    REJECT_SQL,
    TABLES,
    Batch,
    Outcome,
    Part,
    Table,
    creates_order,
    fills_of,
    inserted,
    ledger_stream,
    table_stream,
)
from bot4.db.twophase import Branches
from bot4.records.errors import Code
from bot4.records.types import RT_EXEC_REPORT, RT_OPERATOR_ACTION, RT_ORDER

if TYPE_CHECKING:
    import psycopg

__all__ = ["ROW_ERROR_CLASSES", "BatchPaths"]

log = logging.getLogger("bot4.db.loader")  # the loader's log: its lines name the journal

ROW_ERROR_CLASSES = ("22", "23")  # data exception, integrity constraint violation
MAX_CONFLICTS_LOGGED = 10  # identity conflicts logged one by one per batch (all are kept)
_BEGIN = "BEGIN ISOLATION LEVEL SERIALIZABLE"


class BatchPaths:
    """The batch paths of :class:`bot4.db.loader.Loader` (see the module docstring)."""

    # --- dispatch, and the COPY paths (fast, dedupe, isolate) -----------------------------

    def _attempt(
        self, ev: psycopg.Connection, lg: psycopg.Connection | None, batch: Batch, mode: str
    ) -> Outcome:
        if mode == "pipeline":
            return self._attempt_pipelined(ev, lg, batch)
        parts, unknown = self._split_unknown(batch)
        ledger_branch = None
        with self._branches(ev, lg, batch) as txn:
            try:
                if mode == "fast" and lg is not None and RT_EXEC_REPORT in parts:
                    execs = parts[RT_EXEC_REPORT]
                    fills = execs.take(execs.records["last_qty"] > 0)
                    if len(fills):  # known before the events COPY: the ledger runs alongside
                        ledger_branch = self._executor().submit(self._ledger_fast_branch, lg, fills)
                ev.execute(_BEGIN)
                out = self._load_events(ev, batch, parts, unknown, mode)
                fills = out.fills
                if fills is not None:
                    out.moved = self._move_positions(ev, fills)
                self._advance(ev, batch, one_phase=lg is None or fills is None)
                if ledger_branch is not None:
                    out.ledger_rows, out.ledger_conflicts = ledger_branch.result()
                elif fills is not None:
                    if lg is not None:
                        lg.execute(_BEGIN)
                    out.ledger_rows, out.ledger_conflicts = self._write_ledger(
                        lg if lg is not None else ev, fills, mode
                    )
            except BaseException:
                if ledger_branch is not None:
                    with contextlib.suppress(BaseException):
                        ledger_branch.result()  # lg is ours again only when the branch is done
                raise
            self._hook("before-commit")
            if lg is None or fills is None:
                self._commit_one_phase(ev)
                self._hook("committed")
                return out
            txn.prepare_ledger(lg)
            self._hook("prepared-ledger")
            txn.queue_decision(ev, len(fills))
            txn.commit(ev, lg)
            self._decided()
            return out

    def _report_conflicts(self, out: Outcome) -> None:
        """A committed batch kept identity conflicts: count, log at ERROR, alarm."""
        n, legs = len(out.conflicts), out.ledger_conflicts
        self.stats.conflicts += n
        self.stats.ledger_conflicts += legs
        for exec_id, frame, idx, differs, kj, kf, ki in out.conflicts[:MAX_CONFLICTS_LOGGED]:
            log.error(
                "journal %s: frame %d record %d: exec_id %s already holds another execution "
                "(%s:%d[%d]; differs in %s): kept in exec_conflicts, not loaded",
                self.journal_id, frame, idx, exec_id, kj, kf, ki, ", ".join(differs),
            )  # fmt: skip
        if n > MAX_CONFLICTS_LOGGED:
            log.error("journal %s: %d more exec_id conflicts in exec_conflicts", self.journal_id,
                      n - MAX_CONFLICTS_LOGGED)  # fmt: skip
        if legs:
            log.error(
                "journal %s: %d ledger legs met a different leg under their (exec_id, leg): "
                "kept in ledger_conflicts, not entered",
                self.journal_id,
                legs,
            )
        if self.alarm is not None:
            self.alarm(Code.EXEC_ID_CONFLICT, n + legs)

    def _executor(self):
        if self._pool_executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool_executor = ThreadPoolExecutor(1, thread_name_prefix="bot4-ledger")
        return self._pool_executor

    def _ledger_fast_branch(self, lg: psycopg.Connection, fills: Part) -> tuple[int, int]:
        lg.execute(_BEGIN)
        return self._write_ledger(lg, fills, "fast")

    def _split_unknown(self, batch: Batch) -> tuple[dict[int, Part], dict[int, Part]]:
        """The batch's records by type, split into those the loader can convert and those
        naming an instrument it has no scale for."""
        parts: dict[int, Part] = {}
        unknown: dict[int, Part] = {}
        for rtype, part in batch.parts.items():
            keep = self._check_instruments(rtype, part.records)
            if not keep.all():
                unknown[rtype] = part.take(~keep)
                part = part.take(keep)
            if len(part):
                parts[rtype] = part
        return parts, unknown

    def _load_events(
        self,
        ev: psycopg.Connection,
        batch: Batch,
        parts: dict[int, Part],
        unknown: dict[int, Part],
        mode: str,
    ) -> Outcome:
        out = Outcome(staged=sum(len(p) for p in batch.parts.values()))
        with ev.cursor() as cur:
            for rtype, part in unknown.items():
                cur.executemany(REJECT_SQL, self._unknown_rows(rtype, part))
                out.rejected += cur.rowcount
        fast = {rt for rt in parts if mode == "fast" and all(t.fast for t in TABLES[rt])}
        staged = [rt for rt in parts if rt not in fast]
        if staged:
            ev.execute(f"TRUNCATE {', '.join(self._stage_table(rt) for rt in staged)}")
        with ev.cursor() as cur:
            for rtype, part in parts.items():
                if rtype in fast:
                    for table in TABLES[rtype]:
                        which = table.route(part.records)
                        rows = part if which is None else part.take(which)
                        if len(rows):
                            with cur.copy(table.copy_sql()) as cp:
                                write_chunks(
                                    cp, table_stream(table, rows, self._inst, self._journal_bytes)
                                )
                            out.inserted += len(rows)
                    if rtype == RT_EXEC_REPORT:
                        fills = part.take(part.records["last_qty"] > 0)
                        out.fills = fills if len(fills) else None
                    continue
                stage = self._stage_table(rtype)
                with cur.copy(f"COPY {stage} FROM STDIN (FORMAT BINARY)") as cp:
                    write_chunks(cp, LAYOUTS[rtype].encode(part))
                for table in TABLES[rtype]:
                    sql = table.insert_sql(f"{stage} s")
                    if mode == "isolate":
                        n, rows, refused = self._insert_isolating(
                            cur, sql, table, part, 0, len(part)
                        )
                    else:
                        (n, rows), refused = self._insert(cur, sql, table, 0, len(part)), 0
                    out.inserted += n
                    out.rejected += refused
                    if table.rtype == RT_EXEC_REPORT:
                        out.fills = fills_of(batch, part, rows)
                        sql = exec_conflicts_sql(table.columns, f"{stage} s")
                        cur.execute(sql, {"journal": self.journal_id, "lo": 0, "hi": len(part)})
                        out.conflicts = cur.fetchall()
        return out

    def _insert(self, cur, sql: str, table: Table, lo: int, hi: int) -> tuple[int, list]:
        """``table``'s INSERT over staged rows ``[lo, hi)``: (rows inserted, the (frame,
        index) of the inserted fills)."""
        cur.execute(sql, {"journal": self.journal_id, "lo": lo, "hi": hi})
        return inserted(cur, table)

    def _insert_isolating(
        self, cur, sql: str, table: Table, part: Part, lo: int, hi: int
    ) -> tuple[int, list, int]:
        """Insert staged rows ``[lo, hi)`` under a savepoint; when the database refuses the
        range, bisect it down to the single rows it refuses and store those in
        ``rejected_rows``. Returns (inserted, inserted fills, rejected)."""
        from psycopg import errors

        if lo >= hi:
            return 0, [], 0
        cur.execute("SAVEPOINT bot4_rows")
        try:
            n, rows = self._insert(cur, sql, table, lo, hi)
        except errors.Error as exc:
            if (exc.sqlstate or "")[:2] not in ROW_ERROR_CLASSES:
                raise
            cur.execute("ROLLBACK TO SAVEPOINT bot4_rows")
            cur.execute("RELEASE SAVEPOINT bot4_rows")
            if hi - lo == 1:
                reason = f"{table.name}: {exc.diag.message_primary or exc}"
                row = self._reject_row(part, lo, table.rtype, Code.CONSTRAINT_VIOLATION, reason)
                cur.execute(REJECT_SQL, (*row[:5], exc.sqlstate, *row[6:]))
                return 0, [], cur.rowcount
            mid = (lo + hi) // 2
            a = self._insert_isolating(cur, sql, table, part, lo, mid)
            b = self._insert_isolating(cur, sql, table, part, mid, hi)
            return a[0] + b[0], a[1] + b[1], a[2] + b[2]
        cur.execute("RELEASE SAVEPOINT bot4_rows")
        return n, rows, 0

    def _reject_row(self, part: Part, k: int, rtype: int, code: Code, reason: str) -> tuple:
        """A ``rejected_rows`` parameter tuple for record ``k`` of ``part`` (sqlstate None)."""
        return (
            self.journal_id, int(part.frames[k]), int(part.idx[k]), rtype, int(code), None,
            reason, part.records[k : k + 1].tobytes(),
        )  # fmt: skip

    def _unknown_rows(self, rtype: int, part: Part) -> list[tuple]:
        """``rejected_rows`` parameters of records naming an instrument the loader has no
        scale for."""
        return [
            self._reject_row(
                part,
                k,
                rtype,
                Code.UNKNOWN_INSTRUMENT,
                f"instrument {int(part.records['instrument'][k])} not in the loader's table",
            )  # fmt: skip
            for k in range(len(part))
        ]

    def _check_instruments(self, rtype: int, records: np.ndarray) -> np.ndarray:
        """Mask of records whose instrument the loader can convert (CANCEL_ALL: 0 = all)."""
        if rtype == RT_OPERATOR_ACTION:
            return np.ones(len(records), dtype=bool)
        known = self._inst.known(records["instrument"])
        if rtype == RT_ORDER:
            creates = creates_order(records["action"])
            known |= (records["instrument"] == 0) & ~creates
        return known

    def _move_positions(self, ev: psycopg.Connection, fills: Part) -> dict:
        """Apply the batch's inserted fills, in journal order, to their positions; the
        positions moved."""
        rows = ev.execute(POSITIONS_READ_SQL, position_keys(fills)).fetchall()
        current = positions_from_rows(rows, self._inst)
        self._hook("positions-read")
        rows, moved = positions_moved(current, fills, self._inst)
        with ev.cursor() as cur:
            cur.executemany(POSITIONS_WRITE_SQL, rows)
        return moved

    def _write_ledger(self, conn: psycopg.Connection, fills: Part, mode: str) -> tuple[int, int]:
        """The double-entry legs of ``fills`` (2 or 3 each): (legs inserted, legs kept in
        ``ledger_conflicts``; the COPY path fails on any existing key instead)."""
        if mode == "fast":
            buf, n = ledger_stream(fills, self._inst, self._journal_bytes)
            cols = ", ".join(LEDGER_COLUMNS)
            copy = f"COPY ledger_entries ({cols}) FROM STDIN (FORMAT BINARY)"
            with conn.cursor() as cur, cur.copy(copy) as cp:
                write_chunks(cp, buf)
            return n, 0
        stage = self._stage_table(RT_EXEC_REPORT)
        conn.execute(f"TRUNCATE {stage}")
        with conn.cursor() as cur:
            with cur.copy(f"COPY {stage} FROM STDIN (FORMAT BINARY)") as cp:
                write_chunks(cp, LAYOUTS[RT_EXEC_REPORT].encode(fills))
            cur.execute(LEDGER_SQL.format(source=f"{stage} s"), {"journal": self.journal_id})
            rows, kept = cur.fetchone()
            return int(rows), int(kept)

    def _advance_params(self, batch: Batch) -> dict:
        """Parameters of the fenced advance of the load position over ``batch`` (the
        database refuses, SQLSTATE B4001, unless the position is at its first frame)."""
        return {
            "journal": self.journal_id,
            "first": batch.first,
            "end": batch.end,
            "records": batch.records,
            "created": self._created_ns,
        }

    # --- the pipelined paths (small batches) ----------------------------------------------

    def _attempt_pipelined(
        self, ev: psycopg.Connection, lg: psycopg.Connection | None, batch: Batch
    ) -> Outcome:
        """A small batch in the fewest round trips (psycopg pipeline mode; one round trip
        per pipeline block, whose exit is the sync).

        Events database: BEGIN, the INSERTs from array parameters (ON CONFLICT DO
        NOTHING) and the positions read; then the positions, the ledger (same database),
        the fenced advance and COMMIT or PREPARE (:meth:`_last_trip`). A batch without a
        fill needs only the first round trip, which then ends in the advance and COMMIT.
        When the loader knows every position the fills move, :meth:`_attempt_one_trip`
        first.
        """
        from psycopg import errors

        parts, unknown = self._split_unknown(batch)
        execs = parts.get(RT_EXEC_REPORT)
        maybe = None if execs is None else execs.take(execs.records["last_qty"] > 0)
        if maybe is not None and not len(maybe):
            maybe = None
        if self.one_trip and maybe is not None:
            r = maybe.records
            keys = zip(r["strategy"].tolist(), r["instrument"].tolist(), strict=True)
            if all(k in self._known for k in keys):
                try:
                    return self._attempt_one_trip(ev, lg, batch, parts, unknown, maybe)
                except errors.Error as exc:
                    if exc.sqlstate != CAS_MISS:
                        raise
                    self.stats.cas_misses += 1  # rolled back: the two-round-trip way
                    self._known = {}
        out = Outcome(staged=sum(len(p) for p in batch.parts.values()))
        with self._branches(ev, lg, batch) as txn:
            if maybe is None:
                self._hook("before-commit")  # nothing sent yet: one round trip follows
            with ev.pipeline():
                collect = self._queue_rows(ev, batch, parts, unknown, out)
                if maybe is not None:
                    read = ev.cursor()
                    read.execute(POSITIONS_READ_SQL, position_keys(maybe))
                else:  # no fill: nothing below depends on the results
                    self._advance(ev, batch, one_phase=True)
                    self._commit_one_phase(ev)
            collect()
            if maybe is None:
                self._hook("committed")
                return out
            current = positions_from_rows(read.fetchall(), self._inst)
            fills = out.fills
            if fills is not None:
                self._hook("positions-read")
            self._hook("before-commit")

            def positions() -> None:
                rows, out.moved = positions_moved(current, fills, self._inst)
                ev.cursor().executemany(POSITIONS_WRITE_SQL, rows)

            return self._last_trip(ev, lg, batch, txn, out, fills, positions if fills else None)

    def _attempt_one_trip(
        self,
        ev: psycopg.Connection,
        lg: psycopg.Connection | None,
        batch: Batch,
        parts: dict[int, Part],
        unknown: dict[int, Part],
        fills: Part,
    ) -> Outcome:
        """A small batch with fills whose positions this loader knows, in one round trip
        on the events database: BEGIN, the INSERTs, the positions computed from the known
        ones and written by ``bot4_positions_cas`` (which refuses, SQLSTATE B4003, unless
        every fill was inserted by this transaction and every position is still the known
        one), the ledger (same database), the advance and COMMIT or PREPARE. With a ledger
        database its branch, computed from every fill of the batch, is sent first and
        PREPAREd meanwhile; the decision and both COMMIT PREPAREDs follow as in the
        two-round-trip path. A B4003 rolls everything back (nothing was decided) and
        propagates: the caller redoes the batch the two-round-trip way."""
        out = Outcome(staged=sum(len(p) for p in batch.parts.values()))
        with self._branches(ev, lg, batch) as txn:
            cas, out.moved = cas_params(self._known, fills, self._inst)
            self._hook("positions-read")  # known, not yet written: nothing sent
            self._hook("before-commit")
            collect: list[Callable[[], None]] = []

            def rows_and_positions() -> None:
                collect.append(self._queue_rows(ev, batch, parts, unknown, out))
                ev.execute(POSITIONS_CAS_SQL, cas)

            out = self._last_trip(
                ev, lg, batch, txn, out, fills, rows_and_positions, lambda: collect[0]()
            )
        self.stats.one_trip_batches += 1
        return out

    def _last_trip(
        self,
        ev: psycopg.Connection,
        lg: psycopg.Connection | None,
        batch: Batch,
        txn: Branches,
        out: Outcome,
        fills: Part | None,
        queue: Callable[[], None] | None,
        collect: Callable[[], None] | None = None,
    ) -> Outcome:
        """The last round trip of a pipelined batch, and with fills and a ledger database
        the two-phase commit (:class:`bot4.db.twophase.Branches`). With a ledger database
        the ledger branch, whole (BEGIN, the legs of ``fills``, PREPARE), is sent first and
        runs on its server while the events statements travel: ``queue()`` (the caller's
        statements: positions, or the rows and the positions CAS), the ledger (one
        database), the fenced advance, and COMMIT — or, two-phase, the decision row;
        ``collect()`` then reads the caller's results. Two-phase, once the ledger branch is
        prepared: the events COMMIT (the commit point), then the ledger's COMMIT PREPARED."""
        two_phase = lg is not None and fills is not None
        ledger = None
        with contextlib.ExitStack() as flights:
            if two_phase:
                flights.enter_context(lg.pipeline())
                lg.execute(_BEGIN)
                ledger = self._queue_ledger(lg, fills)
                txn.prepare_ledger(lg)
            with ev.pipeline():
                if queue is not None:
                    queue()
                if fills is not None and lg is None:
                    ledger = self._queue_ledger(ev, fills)
                self._advance(ev, batch, one_phase=not two_phase)
                if two_phase:
                    txn.queue_decision(ev, len(fills))
                else:
                    self._commit_one_phase(ev)
            if collect is not None:
                collect()
            if not two_phase:
                if ledger is not None:
                    out.ledger_rows, out.ledger_conflicts = ledger.fetchone()
                self._hook("committed")
                return out
        out.ledger_rows, out.ledger_conflicts = ledger.fetchone()
        self._hook("prepared-ledger")
        txn.commit(ev, lg)
        self._decided()
        return out

    def _decided(self) -> None:
        """A two-phase batch committed on both databases: its decision row stays until
        :meth:`_maybe_prune` deletes it."""
        self.stats.twophase += 1
        self._decisions += 1

    def _queue_rows(
        self,
        conn: psycopg.Connection,
        batch: Batch,
        parts: dict[int, Part],
        unknown: dict[int, Part],
        out: Outcome,
    ) -> Callable[[], None]:
        """Queue (pipeline mode) BEGIN, the ``rejected_rows`` of records naming an unknown
        instrument, the ON CONFLICT INSERTs of ``parts`` from array parameters and the
        executions' conflict check; returns the function that reads their results into
        ``out`` once the pipeline has synced."""
        conn.execute(_BEGIN)
        rejects = []
        for rtype, part in unknown.items():
            cur = conn.cursor()
            cur.executemany(REJECT_SQL, self._unknown_rows(rtype, part))
            rejects.append(cur)
        inserts, conflicts = [], None
        for rtype, part in parts.items():
            layout = LAYOUTS[rtype]
            params = layout.array_params(part)
            params.update(journal=self.journal_id, lo=0, hi=len(part))
            for table in TABLES[rtype]:
                which = table.route(part.records)
                if which is not None and not which.any():
                    continue  # no rows for this table: no statement
                cur = conn.cursor()
                cur.execute(table.insert_sql(layout.array_source()), params)
                inserts.append((table, part, cur))
                if table.rtype == RT_EXEC_REPORT:
                    conflicts = conn.cursor()
                    conflicts.execute(
                        exec_conflicts_sql(table.columns, layout.array_source()), params
                    )

        def collect() -> None:
            out.rejected = sum(c.rowcount for c in rejects)
            for table, part, cur in inserts:
                n, rows = inserted(cur, table)
                out.inserted += n
                if table.rtype == RT_EXEC_REPORT:
                    out.fills = fills_of(batch, part, rows)
                    out.conflicts = conflicts.fetchall()

        return collect

    def _queue_ledger(self, conn: psycopg.Connection, fills: Part):
        """Queue the ledger INSERT of ``fills`` from array parameters (pipeline mode); its cursor."""
        layout = LAYOUTS[RT_EXEC_REPORT]
        params = layout.array_params(fills)
        params["journal"] = self.journal_id
        cur = conn.cursor()
        cur.execute(LEDGER_SQL.format(source=layout.array_source()), params)
        return cur
