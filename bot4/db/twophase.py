"""Two-phase commit across the events and the ledger database: gids, the coordinator's
decision log, and the resolution of in-doubt transactions.

Protocol of one load transaction that carries fills (driven by :mod:`bot4.db.loader`):

1. both transactions do their work (events: rows, positions, load position; ledger: legs);
2. ``PREPARE TRANSACTION`` on the events database, then on the ledger database. A failure
   here rolls back whatever was prepared; nothing is decided yet;
3. the coordinator appends a ``TXN_DECISION`` (``TXN_COMMIT``) record to its decision log
   and fsyncs it (:meth:`Coordinator.decide_commit`). This is the commit point: from here
   the transaction *will* commit on both databases, whatever crashes;
4. ``COMMIT PREPARED`` on the events database, then on the ledger database.

Presumed abort: a prepared transaction whose token has no ``TXN_COMMIT`` in the log was
never decided, so it is rolled back. :meth:`Coordinator.resolve` applies this to every
prepared transaction of its journal found in ``pg_prepared_xacts`` of a database (run on
start, and after any failure between steps 2 and 4). Both databases therefore agree: a
fill is in both or in neither.

Gids: ``bot4:<journal_id>:<first>-<end>:<token>:<db>`` with the journal frame range
``[first, end)``, a random 63-bit ``token`` (hex) naming this attempt, and ``db`` ``e``
(events) or ``l`` (ledger): gids are unique per *cluster*, and both databases may share a
server. A retried batch gets a new token, so a stale decision can never commit a later
attempt.

The decision log is a journal (``bot4.journal``, fsync ``always``) in its own directory,
by default ``<journal dir>/coordinator``. The coordinator holds an exclusive ``flock`` on
``coordinator.lock`` in that directory for its whole life, which makes it — hence the
loader — the only one of its journal: a second loader of the same journal fails to open it.

Pruning. A decision is needed only while a branch it decides may still be prepared. Once
both databases have committed every decided transaction (the loader knows: each of its
two-phase batches since its last successful recovery completed both COMMIT PREPAREDs, and
that recovery resolved every in-doubt branch of the journal), the whole log is dead, and
:meth:`Coordinator.prune` drops it: the log's writer closes, its segment files are unlinked
from the last to the first (a crash in between leaves a readable prefix of dead decisions,
or nothing), the directory is synced, and a fresh log starts at frame 0. The lock file is
held throughout, so no other coordinator can slip in while the log is reopened.
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
    "Branches",
    "Coordinator",
    "ParsedGid",
    "Resolution",
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

    def resolve(self, conn: psycopg.Connection) -> Resolution:
        """Commit (decided) or roll back (presumed abort) every in-doubt transaction of this
        journal in ``conn``'s database. ``conn`` must be in autocommit mode."""
        from psycopg import errors

        done = Resolution([], [])
        for gid in self.in_doubt(conn):
            parsed = parse_gid(gid)
            commit = parsed is not None and self.committed(parsed.token)
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
    """One load transaction's two branches, events (``e``) and ledger (``l``): its token
    and gids, the PREPAREs sent, the decision and the second phase, with the loader's crash
    points (``hook``): ``prepared-events``, ``prepared-ledger``, ``decided``,
    ``committed-events``, ``committed-ledger``.

    Before :meth:`commit` has recorded the decision, a failure is undone by :meth:`undo`
    (both branches rolled back, prepared or not); after it, recovery completes it.
    """

    def __init__(
        self, coord: Coordinator, first: int, end: int, hook: Callable[[str], None]
    ) -> None:
        self.coord = coord
        self.first, self.end = first, end
        self.hook = hook
        self.token = coord.new_token()
        self.gids = {db: coord.gid(self.token, first, end, db) for db in "el"}
        self.sent: list[tuple[psycopg.Connection, str]] = []
        self.decided = False

    def prepare(self, conn: psycopg.Connection, db: str) -> None:
        """``PREPARE TRANSACTION`` of branch ``db`` on ``conn`` (sent, in pipeline mode)."""
        self.sent.append((conn, self.gids[db]))
        prepare(conn, self.gids[db])

    def prepare_both(self, ev: psycopg.Connection, lg: psycopg.Connection) -> None:
        """First phase: both PREPAREs sent before either is awaited (on one server their
        WAL flushes can share a sync). ``prepared-events`` is reached when the events
        branch is prepared, the ledger's PREPARE then in flight; ``prepared-ledger`` when
        both are."""
        with lg.pipeline():
            with ev.pipeline():
                self.prepare(lg, "l")
                self.prepare(ev, "e")
            self.hook("prepared-events")
        self.hook("prepared-ledger")

    def commit(self, ev: psycopg.Connection, lg: psycopg.Connection, fills: int) -> None:
        """Both branches prepared: record the decision durably (the commit point), then
        COMMIT PREPARED on both databases at once. ``committed-events`` is reached when the
        events branch is committed (the ledger's in flight), ``committed-ledger`` when both
        are."""
        self.coord.decide_commit(self.token, self.first, self.end, fills)
        self.decided = True
        self.hook("decided")
        with lg.pipeline():
            with ev.pipeline():
                finish(lg, self.gids["l"], True)
                finish(ev, self.gids["e"], True)
            self.hook("committed-events")
        self.hook("committed-ledger")

    def undo(self, conns: tuple[psycopg.Connection | None, ...]) -> bool:
        """A transaction failed before its decision: roll back both branches, prepared or
        not. False when a prepared branch could not be reached (left to presumed abort at
        the next recovery)."""
        from psycopg import errors

        for conn in conns:
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
