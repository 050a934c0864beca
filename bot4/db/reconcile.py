"""Journal against database: do they hold the same executions and the same positions?

The loader makes every journalled event land once; this checks, independently, that it
did — a second line of defence against an identity scheme that breaks (two executions
under one ``exec_id`` used to vanish this way, with the database agreeing with its own
ledger). For one journal, over the frames the database says it has loaded
(``load_positions.next_frame``, read in the same snapshot as the rest):

* **journal side**: its venue executions (``EXEC_REPORT`` with ``exec_id`` <> 0), each
  distinct (identity, content) once, identity being ``(venue, session, exec_id)`` as in
  the database (session: the OMS's ``seq >> 32``) — the same execution journalled twice (a
  batch written again after a restart) counts once, two executions under one id count twice
  (content: :mod:`bot4.records.identity`); their fills and the net filled quantity per
  instrument (buys minus sells, shares);
* **database side**: the ``exec_reports`` rows loaded from this journal (``src_journal``),
  their fills and net quantity per instrument, and the records of this journal kept in
  ``exec_conflicts`` or refused into ``rejected_rows``;
* **database inside**: ``positions`` against the fills of ``exec_reports`` (quantity and
  fill count per strategy and instrument), and the ledger (``ledger_entries`` in the
  ledger database when there is one): one set of legs per fill of ``exec_reports``, none
  kept in ``ledger_conflicts``.

Any difference — executions or fills counted differently, a net position apart, an id
carrying two executions, a conflict kept, positions or ledger disagreeing with the fills —
is listed in :attr:`Reconciliation.differences`; the callers fail loudly on it (``bot4 db
load`` and ``bot4 db status`` exit non-zero, the persistence stage logs ERROR and raises an
alarm). Limits: an execution is counted for the journal it was *first* loaded from, so the
same execution journalled under two journal ids reconciles in the first only; the database
inside checks cover every journal of the database (they are global tables).

:class:`Reconciler` reads the journal incrementally (each check reads only the frames
loaded since the previous one) and keeps one (id, content hash) pair per distinct
execution: 16 bytes each plus 16 for instrument and quantity. Read-only on both sides.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bot4.journal import JournalTail
from bot4.records.dtypes import EXEC_BROKEN, SIDE_BUY
from bot4.records.identity import exec_content_hashes
from bot4.records.types import RT_EXEC_REPORT

if TYPE_CHECKING:
    import psycopg

__all__ = ["LiveReconciler", "Reconciler", "Reconciliation", "reconcile"]

_EXECS = np.dtype(
    [
        ("venue", np.int64),
        ("session", np.int64),
        ("exec_id", np.uint64),
        ("content", np.int64),
        ("instrument", np.int64),
        ("signed", np.int64),
    ]
)  # one distinct execution, identified by (venue, session, exec_id) as in the database;
#    signed = +/- shares filled (0: not a fill)
_IDENTITY = ["venue", "session", "exec_id"]

_DB_SIDE_SQL = """
SELECT count(*), count(*) FILTER (WHERE last_qty > 0)
FROM exec_reports WHERE src_journal = %(j)s AND exec_id <> 0
"""
_DB_NET_SQL = """
SELECT instrument, sum(CASE WHEN (side > 0) <> (exec_type = 12) THEN last_qty ELSE -last_qty END)
FROM exec_reports WHERE src_journal = %(j)s AND exec_id <> 0 AND last_qty > 0
GROUP BY instrument
"""
_POSITIONS_SQL = """
SELECT strategy, instrument, p.qty, x.qty, p.fills, x.fills
FROM positions p
FULL JOIN (SELECT strategy, instrument, count(*) AS fills,
                  sum(CASE WHEN (side > 0) <> (exec_type = 12) THEN last_qty
                           ELSE -last_qty END) AS qty
           FROM exec_reports WHERE last_qty > 0 GROUP BY strategy, instrument) x
     USING (strategy, instrument)
WHERE p.qty IS DISTINCT FROM x.qty OR p.fills IS DISTINCT FROM x.fills
ORDER BY strategy, instrument
"""
_LEDGER_SQL = """
SELECT (SELECT count(*) FROM (SELECT DISTINCT {identity} FROM ledger_entries) f),
       (SELECT count(*) FROM (SELECT 1 FROM ledger_entries GROUP BY {identity}
                              HAVING sum(debit) <> sum(credit)) u),
       {conflicts}
"""


@dataclass
class Reconciliation:
    """One check of one journal against the database (see the module docstring)."""

    journal_id: str
    frames: int  # journal frames compared: [0, frames) = what the database loaded
    journal: dict = field(default_factory=dict)  # executions, ids, fills, net
    database: dict = field(default_factory=dict)  # executions, fills, net, conflicts, rejected
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        """One line for people."""
        j, d = self.journal, self.database
        head = (
            f"reconciliation of journal {self.journal_id} (frames 0..{self.frames - 1}): "
            f"journal {j.get('executions', 0):,} executions / {j.get('fills', 0):,} fills, "
            f"database {d.get('executions', 0):,} / {d.get('fills', 0):,}"
        )
        if self.ok:
            return head + ", net positions equal: OK"
        return head + ": DIFFER: " + "; ".join(self.differences)

    def as_dict(self) -> dict:
        doc = asdict(self)
        doc["ok"] = self.ok
        for side in ("journal", "database"):
            doc[side]["net"] = {str(k): v for k, v in doc[side].get("net", {}).items()}
        return doc


class Reconciler:
    """Reconciles ``journal_dir`` (loaded under ``journal_id``, default the directory's
    name) with a database, check after check, reading only new journal frames each time.
    One thread at a time."""

    def __init__(self, journal_dir: str | os.PathLike, journal_id: str | None = None) -> None:
        self.journal_dir = Path(journal_dir)
        self.journal_id = journal_id or self.journal_dir.resolve().name
        self._next = 0  # journal frames read so far
        self._execs = np.zeros(0, _EXECS)  # distinct executions of frames [0, _next)
        self._tail = None

    def _read_journal(self, upto: int) -> str | None:
        """Take the frames [_next, upto); a difference text if the journal has fewer."""
        if upto < self._next:  # the database went back (replaced): start over
            self._next, self._execs = 0, np.zeros(0, _EXECS)
            self._close_tail()
        if self._tail is None or self._tail.next_frame != self._next:
            self._close_tail()
            self._tail = JournalTail(self.journal_dir, self._next)
        parts = [self._execs]
        while self._next < upto:
            frames = self._tail.read(1 << 20, max_frames=upto - self._next)
            if not frames:
                break
            for _index, rtype, recs in frames:
                if rtype == RT_EXEC_REPORT:
                    parts.append(_distinct(recs[recs["exec_id"] != 0]))
            self._next = self._tail.next_frame
        self._execs = np.unique(np.concatenate(parts)) if len(parts) > 1 else self._execs
        if self._next < upto:
            return (
                f"the journal ends at frame {self._next} but the database loaded up to frame "
                f"{upto}: frames are missing from the journal"
            )
        return None

    def _close_tail(self) -> None:
        if self._tail is not None:
            self._tail.close()
            self._tail = None

    def close(self) -> None:
        self._close_tail()

    def check(
        self, events: psycopg.Connection, ledger: psycopg.Connection | None = None
    ) -> Reconciliation:
        """Compare the journal with the events database (``events``, autocommit) and the
        ledger (``ledger``: its own database; None: ``ledger_entries`` in ``events``, if
        there). The database side is read in one REPEATABLE READ snapshot."""
        with _snapshot(events):
            upto, db = self._database_side(events)
        rec = Reconciliation(self.journal_id, upto, database=db)
        missing = self._read_journal(upto)
        ex = self._execs
        fills = ex[ex["signed"] != 0]
        ids = len(np.unique(ex[_IDENTITY]))
        net: dict[int, int] = {}
        for ins, q in zip(fills["instrument"].tolist(), fills["signed"].tolist(), strict=True):
            net[ins] = net.get(ins, 0) + q
        rec.journal = {
            "executions": len(ex),
            "ids": ids,
            "fills": len(fills),
            "net": {k: v for k, v in sorted(net.items()) if v},
        }
        diff = rec.differences
        if missing:
            diff.append(missing)
        if len(ex) > ids:
            diff.append(
                f"{len(ex) - ids} execution ids carry two or more executions in the journal"
            )
        if db["executions"] != len(ex):
            diff.append(
                f"executions: journal {len(ex):,}, database {db['executions']:,} "
                f"({db['conflicts']} kept in exec_conflicts, {db['rejected']} in rejected_rows)"
            )
        if db["fills"] != len(fills):
            diff.append(f"fills: journal {len(fills):,}, database {db['fills']:,}")
        for ins in sorted(set(rec.journal["net"]) | set(db["net"])):
            a, b = rec.journal["net"].get(ins, 0), db["net"].get(ins, 0)
            if a != b:
                diff.append(f"instrument {ins} net position: journal {a:+,}, database {b:+,}")
        if db["conflicts"]:
            diff.append(f"{db['conflicts']} executions of this journal kept in exec_conflicts")
        for s, i, pq, xq, pf, xf in db.pop("positions_apart"):
            diff.append(
                f"positions row strategy {s} instrument {i}: qty {pq} / fills {pf}, but its "
                f"executions add up to qty {xq} / fills {xf}"
            )
        self._check_ledger(rec, events, ledger)
        return rec

    def _database_side(self, ev: psycopg.Connection) -> tuple[int, dict]:
        j = {"j": self.journal_id}
        row = ev.execute(
            "SELECT next_frame FROM load_positions WHERE journal_id = %(j)s", j
        ).fetchone()
        upto = int(row[0]) if row else 0
        n, fills = ev.execute(_DB_SIDE_SQL, j).fetchone()
        net = {int(i): int(q) for i, q in ev.execute(_DB_NET_SQL, j).fetchall() if int(q)}
        conflicts = 0
        if _exists(ev, "exec_conflicts"):
            conflicts = ev.execute(
                "SELECT count(*) FROM exec_conflicts WHERE src_journal = %(j)s", j
            ).fetchone()[0]
        rejected = ev.execute(
            "SELECT count(*) FROM rejected_rows WHERE src_journal = %(j)s AND record_type = %(t)s",
            {**j, "t": RT_EXEC_REPORT},
        ).fetchone()[0]
        apart = ev.execute(_POSITIONS_SQL).fetchall()
        fills_all = ev.execute("SELECT count(*) FROM exec_reports WHERE last_qty > 0").fetchone()
        return upto, {
            "executions": int(n),
            "fills": int(fills),
            "net": dict(sorted(net.items())),
            "conflicts": int(conflicts),
            "rejected": int(rejected),
            "fills_all_journals": int(fills_all[0]),
            "positions_apart": apart,
        }

    @staticmethod
    def _check_ledger(
        rec: Reconciliation, ev: psycopg.Connection, lg: psycopg.Connection | None
    ) -> None:
        conn = lg if lg is not None else ev
        if not _exists(conn, "ledger_entries"):
            return
        conflicts = (
            "(SELECT count(*) FROM ledger_conflicts)" if _exists(conn, "ledger_conflicts") else "0"
        )
        identity = "exec_id"  # a ledger before its migration 0003
        if _has_column(conn, "ledger_entries", "exec_session"):
            identity = "venue, exec_session, exec_id"
        sql = _LEDGER_SQL.format(conflicts=conflicts, identity=identity)
        fills, unbalanced, kept = conn.execute(sql).fetchone()
        want = rec.database["fills_all_journals"]
        rec.database["ledger"] = {"fills": int(fills), "unbalanced": int(unbalanced),
                                  "conflicts": int(kept)}  # fmt: skip
        if fills != want:
            rec.differences.append(f"ledger: legs for {fills:,} fills, executions hold {want:,}")
        if unbalanced:
            rec.differences.append(f"ledger: {unbalanced} fills with unbalanced legs")
        if kept:
            rec.differences.append(f"ledger: {kept} legs kept in ledger_conflicts")


def _distinct(execs: np.ndarray) -> np.ndarray:
    """The distinct executions of EXEC_REPORT records (exec_id <> 0)."""
    out = np.zeros(len(execs), _EXECS)
    out["venue"] = execs["venue"]
    out["session"] = (execs["seq"] >> np.uint64(32)).astype(np.int64)
    out["exec_id"] = execs["exec_id"]
    out["content"] = exec_content_hashes(execs)
    out["instrument"] = execs["instrument"]
    qty = execs["last_qty"].astype(np.int64)
    qty = np.where(execs["exec_type"] == EXEC_BROKEN, -qty, qty)  # a bust reverses its fill
    out["signed"] = np.where(execs["side"] == SIDE_BUY, qty, -qty)
    return np.unique(out)


def _has_column(conn: psycopg.Connection, table: str, column: str) -> bool:
    return bool(
        conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attname = %s AND NOT attisdropped)",
            (table, column),
        ).fetchone()[0]
    )


def _exists(conn: psycopg.Connection, table: str) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0])


@contextlib.contextmanager
def _snapshot(conn: psycopg.Connection):
    """One read-only REPEATABLE READ transaction on an autocommit connection."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


class LiveReconciler:
    """A :class:`Reconciler` with its own connections, for a loader that keeps running (the
    persistence stage's loader thread, ``bot4 db load --follow``): :meth:`maybe_check` runs
    a check at most every ``every_s`` seconds, :meth:`check` now. Connections are opened on
    first use and reopened after a failure (``DatabaseUnavailable`` propagates)."""

    def __init__(
        self,
        journal_dir: str | os.PathLike,
        dsn: str,
        ledger_dsn: str | None = None,
        journal_id: str | None = None,
        every_s: float = 30.0,
    ) -> None:
        self.reconciler = Reconciler(journal_dir, journal_id)
        self.dsn, self.ledger_dsn, self.every_s = dsn, ledger_dsn, every_s
        self._conns: list = []
        self._due = 0.0
        self.last: Reconciliation | None = None

    def maybe_check(self) -> Reconciliation | None:
        """A check if ``every_s`` passed since the last one, else None."""
        import time

        now = time.monotonic()
        if now < self._due:
            return None
        return self.check()

    def check(self) -> Reconciliation:
        import time

        import psycopg

        from bot4.db.pool import db_errors

        self._due = time.monotonic() + self.every_s
        try:
            with db_errors(f"reconcile {self.reconciler.journal_id}"):
                if not self._conns:
                    for d in (self.dsn, self.ledger_dsn):
                        if d is not None:
                            self._conns.append(
                                psycopg.connect(d, autocommit=True, connect_timeout=5)
                            )
                ev = self._conns[0]
                lg = self._conns[1] if len(self._conns) > 1 else None
                self.last = self.reconciler.check(ev, lg)
                return self.last
        except BaseException:
            self._close_conns()
            raise

    def _close_conns(self) -> None:
        for c in self._conns:
            with contextlib.suppress(Exception):
                c.close()
        self._conns = []

    def close(self) -> None:
        self._close_conns()
        self.reconciler.close()


def reconcile(
    journal_dir: str | os.PathLike,
    dsn: str,
    ledger_dsn: str | None = None,
    journal_id: str | None = None,
) -> Reconciliation:
    """One check of ``journal_dir`` against the databases at ``dsn`` / ``ledger_dsn``
    (connection failures raise ``DatabaseUnavailable``)."""
    import psycopg

    from bot4.db.pool import db_errors

    r = Reconciler(journal_dir, journal_id)
    try:
        with (
            db_errors(f"reconcile {r.journal_id}"),
            psycopg.connect(dsn, autocommit=True, connect_timeout=5) as ev,
        ):
            if ledger_dsn is None:
                return r.check(ev)
            with psycopg.connect(ledger_dsn, autocommit=True, connect_timeout=5) as lg:
                return r.check(ev, lg)
    finally:
        r.close()
