"""Two-phase commit across the events and the ledger database: gids, the decision, and the
resolution of in-doubt transactions.

Protocol of one load transaction that carries fills (driven by :mod:`bot4.db.loader`
through :class:`Branches`; events migration 0009):

1. the ledger branch (BEGIN, legs, ``PREPARE TRANSACTION``) is sent first and runs on its
   server while the events branch's statements (rows, positions, load position, and the
   decision row ``bot4_txn_decisions(token, committed = true)``) travel;
2. once the ledger branch is prepared, the events branch COMMITs (synchronously): its rows
   and its decision row become durable together in one WAL flush. **This is the commit
   point**: from here the transaction *will* commit on both databases, whatever crashes.
   A failure before it rolls back both branches: nothing was decided;
3. ``COMMIT PREPARED`` on the ledger database.

Presumed abort, recorded: a prepared ledger branch whose token has no decision row was
never decided. :func:`decision_of` first inserts a ``committed = false`` row under the
token (``ON CONFLICT DO NOTHING``: an events transaction whose decision INSERT is still
uncommitted makes it wait, and one that comes later fails on it), then rolls the branch
back; a token that already holds a row follows it. :meth:`Coordinator.resolve` applies this
to every prepared transaction of its journal found in ``pg_prepared_xacts`` of a database
(run on start, and after any failure during steps 1-3). Both databases therefore agree: a
fill is in both or in neither. Compared with a decision log of its own (a file, fsynced,
between the PREPAREs and the COMMIT PREPAREDs: three durable writes one after the other),
the events branch is never prepared, and its commit is the decision.

Gids: ``bot4:<journal_id>:<first>-<end>:<token>:<db>`` with the journal frame range
``[first, end)``, a random 63-bit ``token`` (hex) naming this attempt, and ``db`` ``l``
(ledger; ``e``, events, in transactions of earlier versions): gids are unique per
*cluster*, and both databases may share a server. A retried batch gets a new token, so a
stale decision can never commit a later attempt.

Pruning. A decision row is needed only while its ledger branch may still be prepared. Once
every transaction the loader decided since its last successful recovery committed on both
databases, and that recovery resolved every in-doubt branch of the journal, every row of
the journal is dead and the loader deletes them (:data:`PRUNE_SQL`, every ``prune_after``
decisions).

The :class:`Coordinator` keeps the directory (by default ``<journal dir>/coordinator``)
with an exclusive ``flock`` on ``coordinator.lock`` for its whole life, which makes it —
hence the loader — the only one of its journal: a second loader of the same journal fails
to open it. Its decision log there (a journal, fsync ``always``) is where versions before
events migration 0009 recorded their decisions: recovery still honours a commit decision
found in it, and the loader drops the log once it is dead (:meth:`Coordinator.prune`:
segments unlinked last first, the directory synced, a fresh log; the lock held
throughout).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bot4.journal import JournalReader, JournalWriter
from bot4.records.dtypes import TXN_COMMIT, TXN_DECISION
from bot4.records.errors import Bot4Error, Code

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_PRUNE_AFTER",
    "LOCK_NAME",
    "DECIDE_SQL",
    "PRUNE_SQL",
    "Branches",
    "Coordinator",
    "ParsedGid",
    "Resolution",
    "decision_of",
    "finish",
    "parse_gid",
    "prepare",
    "rollback_quietly",
]

DEFAULT_PRUNE_AFTER = 1024  # decisions in the log before the loader prunes it (~130 KB)
LOCK_NAME = "coordinator.lock"

_GID_RE = re.compile(
    r"^bot4:(?P<journal>[^:]+):(?P<first>\d+)-(?P<end>\d+):(?P<token>[0-9a-f]{16}):(?P<db>[el])$"
)


@dataclass(frozen=True, slots=True)
class ParsedGid:
    journal_id: str
    first_frame: int
    end_frame: int
    token: int
    db: str


def parse_gid(gid: str) -> ParsedGid | None:
    """The parts of a bot4 gid, or None for a gid that is not ours."""
    m = _GID_RE.match(gid)
    if m is None:
        return None
    return ParsedGid(
        journal_id=m.group("journal"),
        first_frame=int(m.group("first")),
        end_frame=int(m.group("end")),
        token=int(m.group("token"), 16),
        db=m.group("db"),
    )


@dataclass(slots=True)
class Resolution:
    """What :meth:`Coordinator.resolve` did on one database: gids committed, rolled back."""

    committed: list[str]
    rolled_back: list[str]


class Coordinator:
    """Decision log and in-doubt resolution for the load transactions of one journal.

    ``directory``: the decision log (created if missing; exclusively locked while open).
    ``journal_id``: the journal whose transactions this coordinator decides (its gids).
    ``prune_after``: decisions in the log from which :meth:`should_prune` says yes.
    Not thread-safe: the loader's thread owns it.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        journal_id: str,
        prune_after: int = DEFAULT_PRUNE_AFTER,
    ) -> None:
        self.directory = Path(directory)
        self.journal_id = journal_id
        self.prefix = f"bot4:{journal_id}:"
        self.prune_after = max(1, prune_after)
        self.pruned = 0  # decisions dropped by prune() since this coordinator opened
        self._writer: JournalWriter | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise Bot4Error(
                f"{self.directory}: decision log already open by another writer (a loader of journal "
                f"{journal_id})",
                Code.CONFIG_INVALID,
            ) from None
        try:
            self._writer = JournalWriter(self.directory, fsync="always")
        except BaseException:
            self.close()
            raise
        self._committed: set[int] | None = None  # tokens with TXN_COMMIT, read lazily
        self._record = np.zeros(1, TXN_DECISION)

    def new_token(self) -> int:
        """A fresh random 63-bit transaction token."""
        return secrets.randbits(63) | 1

    def gid(self, token: int, first_frame: int, end_frame: int, db: str) -> str:
        """The gid of one database's branch (``db`` ``"e"`` or ``"l"``) of a transaction."""
        return f"{self.prefix}{first_frame}-{end_frame}:{token:016x}:{db}"

    def decide_commit(self, token: int, first_frame: int, end_frame: int, fills: int) -> None:
        """Durably record the commit decision (one frame, fdatasync'ed before returning).
        Call only after every branch is prepared, before the first COMMIT PREPARED."""
        r = self._record
        r[0] = 0
        r["seq"] = self._writer.next_frame + 1
        r["ts_ns"] = time.time_ns()
        r["first_frame"] = first_frame
        r["end_frame"] = end_frame
        r["token"] = token
        r["fills"] = fills
        r["decision"] = TXN_COMMIT
        self._writer.append(r)
        if self._committed is not None:
            self._committed.add(token)

    def committed(self, token: int) -> bool:
        """Whether the log holds a commit decision for ``token`` (reads the log once)."""
        if self._committed is None:
            tokens: set[int] = set()
            for _index, _rtype, records in JournalReader(self.directory):
                done = records[records["decision"] == TXN_COMMIT]
                tokens.update(int(t) for t in done["token"])
            self._committed = tokens
        return token in self._committed

    def in_doubt(self, conn: psycopg.Connection) -> list[str]:
        """Gids of this journal's prepared transactions in ``conn``'s database, oldest first."""
        rows = conn.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() "
            "AND left(gid, length(%s)) = %s ORDER BY prepared",
            (self.prefix, self.prefix),
        ).fetchall()
        return [r[0] for r in rows]

    def resolve(
        self, conn: psycopg.Connection, decide: Callable[[ParsedGid], bool] | None = None
    ) -> Resolution:
        """Commit (decided) or roll back (presumed abort) every in-doubt transaction of this
        journal in ``conn``'s database. ``conn`` must be in autocommit mode. A transaction
        is decided by this log, or else by ``decide`` (the events database's decision
        rows, :func:`decision_of`), which must also make sure nothing decides it later."""
        from psycopg import errors

        done = Resolution([], [])
        for gid in self.in_doubt(conn):
            parsed = parse_gid(gid)
            commit = parsed is not None and (
                self.committed(parsed.token) or (decide is not None and decide(parsed))
            )
            with contextlib.suppress(errors.UndefinedObject):  # finished meanwhile
                finish(conn, gid, commit)
                (done.committed if commit else done.rolled_back).append(gid)
        return done

    @property
    def decisions(self) -> int:
        """Decisions in the log (frames of its journal)."""
        return self._writer.next_frame if self._writer is not None else 0

    def should_prune(self) -> bool:
        """Whether the log has reached ``prune_after`` decisions."""
        return self.decisions >= self.prune_after

    def prune(self, hook: Callable[[str], None] | None = None) -> int:
        """Drop every decision in the log; the number dropped.

        Call only when no decision in the log is needed any more: every transaction it
        decided is committed on both databases (see the module docstring). ``hook`` is
        called with ``"pruning"`` once the segments are gone and before the fresh log
        exists (a crash point for the tests).
        """
        if self._writer is None:
            raise ValueError("decision log is closed")
        dropped = self._writer.next_frame
        self._writer.close()
        self._writer = None
        segments = sorted(self.directory.glob("journal-*.bj4"), reverse=True)
        for path in segments:  # last first: a crash leaves a readable prefix
            path.unlink()
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._committed = set()
        if hook is not None:
            hook("pruning")
        self._writer = JournalWriter(self.directory, fsync="always")
        self.pruned += dropped
        return dropped

    def close(self) -> None:
        """Close the log and release its lock. Idempotent."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _statement(verb: str, gid: str):
    from psycopg import sql

    # utility statements take no bind parameters: the gid goes in as a quoted literal
    return sql.SQL("{} {}").format(sql.SQL(verb), sql.Literal(gid))


def prepare(conn: psycopg.Connection, gid: str) -> None:
    """``PREPARE TRANSACTION gid`` of the transaction open on ``conn``."""
    conn.execute(_statement("PREPARE TRANSACTION", gid))


def finish(conn: psycopg.Connection, gid: str, commit: bool) -> None:
    """``COMMIT PREPARED`` / ``ROLLBACK PREPARED`` a prepared transaction of ``conn``'s
    database (from any session)."""
    conn.execute(_statement("COMMIT PREPARED" if commit else "ROLLBACK PREPARED", gid))


class Branches:
    """One load transaction with fills and a separate ledger database: its token, the ledger
    branch's gid, the decision and the second phase, with the loader's crash points
    (``hook``): ``prepared-ledger``, ``decided``, ``committed-ledger``.

    Only the ledger branch is prepared (:meth:`prepare_ledger`). The events branch carries
    the decision (:meth:`queue_decision`: a ``bot4_txn_decisions`` row, events migration
    0009) and commits in one phase once the ledger branch is prepared: that COMMIT is the
    commit point (:meth:`commit`), then COMMIT PREPARED on the ledger. A failure before the
    COMMIT was sent is undone by :meth:`undo` (both rolled back); one while its outcome is
    unknown (the connection lost during the COMMIT) is left to recovery, which finds the
    decision row or records an abort in its place (:func:`decision_of`).
    """

    def __init__(
        self, coord: Coordinator, first: int, end: int, hook: Callable[[str], None]
    ) -> None:
        self.coord = coord
        self.first, self.end = first, end
        self.hook = hook
        self.token = coord.new_token()
        self.gid = coord.gid(self.token, first, end, "l")
        self.sent: list[tuple[psycopg.Connection, str]] = []
        self.committing = False  # the events COMMIT was sent
        self.decided = False  # ... and succeeded

    def prepare_ledger(self, lg: psycopg.Connection) -> None:
        """``PREPARE TRANSACTION`` of the ledger branch (sent, in pipeline mode)."""
        self.sent.append((lg, self.gid))
        prepare(lg, self.gid)

    def queue_decision(self, ev: psycopg.Connection, fills: int) -> None:
        """The decision row, in the events branch (queued in pipeline mode), and a
        synchronous COMMIT for it whatever the session's default."""
        ev.execute(
            DECIDE_SQL,
            (self.token, self.coord.journal_id, self.first, self.end, fills, time.time_ns()),
        )
        ev.execute("SET LOCAL synchronous_commit TO ON")

    def commit(self, ev: psycopg.Connection, lg: psycopg.Connection) -> None:
        """The ledger branch prepared, the events branch done: COMMIT the events branch
        (its decision row with it: the commit point, one WAL flush), then COMMIT PREPARED
        the ledger branch."""
        self.committing = True
        ev.execute("COMMIT")
        self.decided = True
        self.hook("decided")
        finish(lg, self.gid, True)
        self.hook("committed-ledger")

    def undo(self, ev: psycopg.Connection, lg: psycopg.Connection, exc: BaseException) -> bool:
        """The transaction failed before its decision: roll back both branches, the ledger
        one prepared or not. False when that is not certain to be right or done — the
        events COMMIT was sent and its outcome is unknown, or a prepared branch could not
        be reached: recovery decides (from the decision row) and finishes."""
        from psycopg import errors

        if self.committing and not (
            isinstance(exc, errors.Error) and exc.sqlstate is not None and not ev.broken
        ):
            return False  # the COMMIT may have taken effect: only recovery can tell
        for conn in (ev, lg):
            rollback_quietly(conn)
        done = True
        for conn, gid in self.sent:
            try:
                finish(conn, gid, False)
            except errors.UndefinedObject:
                pass  # not prepared (its PREPARE failed or never ran)
            except Exception:
                done = False
        return done


DECIDE_SQL = (
    "INSERT INTO bot4_txn_decisions (token, journal_id, first_frame, end_frame, fills, "
    "committed, decided_ns) VALUES (%s, %s, %s, %s, %s, true, %s)"
)
_ABORT_SQL = (
    "INSERT INTO bot4_txn_decisions (token, journal_id, first_frame, end_frame, fills, "
    "committed, decided_ns) VALUES (%s, %s, %s, %s, 0, false, %s) "
    "ON CONFLICT (token) DO NOTHING RETURNING token"
)
PRUNE_SQL = "DELETE FROM bot4_txn_decisions WHERE journal_id = %s"


def decision_of(ev: psycopg.Connection, journal_id: str, gid: ParsedGid) -> bool:
    """Whether the events database decided to commit the transaction of ``gid``; when
    nothing decided it, records that it is rolled back (a ``committed = false`` row), so
    an events COMMIT still in flight can no longer decide it: its decision row would meet
    that one (and an uncommitted decision row makes this INSERT wait for its outcome).
    ``ev`` in autocommit mode."""
    row = ev.execute(
        _ABORT_SQL, (gid.token, journal_id, gid.first_frame, gid.end_frame, time.time_ns())
    ).fetchone()
    if row is not None:
        return False
    got = ev.execute(
        "SELECT committed FROM bot4_txn_decisions WHERE token = %s", (gid.token,)
    ).fetchone()
    return bool(got[0])


def rollback_quietly(conn: psycopg.Connection | None) -> None:
    """Roll back an open transaction on ``conn`` (no-op when idle or broken)."""
    if conn is None or conn.closed or conn.broken:
        return
    from psycopg.pq import TransactionStatus

    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        # rollback(), not execute("ROLLBACK"): psycopg then also drops its prepared
        # statements on both sides (DEALLOCATE ALL), so a pipeline an error cut short (a
        # Parse the server skipped) cannot leave its cache naming statements the session
        # does not have
        with contextlib.suppress(Exception):
            conn.rollback()
