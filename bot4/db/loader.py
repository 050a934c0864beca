"""The journal loader: journal frames into PostgreSQL, exactly once.

A :class:`Loader` owns one journal (``journal_id``, default the directory's name) and moves
its ORDER, EXEC_REPORT, RISK_DECISION and OPERATOR_ACTION records into the events database
(other record types are passed over). Fills also become double-entry ledger rows in the
ledger database, under two-phase commit (:mod:`bot4.db.twophase`).

Exactly once. The events database stores, per journal, the first frame not yet loaded
(``load_positions.next_frame``). Each :meth:`Loader.load_available` starts there, reads
the frames after it (:class:`JournalTail`, incrementally) and groups consecutive frames
into batches of at most ``batch_records`` loadable records (a bigger frame is a batch of
its own). One batch is one SERIALIZABLE transaction (two with a separate ledger database)
that inserts the batch's rows, moves ``positions`` by the batch's *inserted* fills, writes
their ledger legs and advances ``load_positions`` to the end of the batch, fenced on the
value it started from. Only a committed transaction moves the position, together with the
rows: after a crash anywhere the batch is either loaded with the position after it, or
absent with the position before it, and loading resumes from there.

Identity (each row is inserted at most once): orders ``(client_order_id, order_id)``;
other order requests ``(client_order_id, order_id, action, seq)``; executions the venue's
``exec_id`` (reports the OMS made itself, exec_id 0: ``(client_order_id, order_id,
exec_type, seq)``); risk decisions ``(intent_producer, intent_seq)``; operator actions
``(who, seq, ts_ns)``; ledger legs ``(exec_id, leg)``. A repeated execution id or ledger
key with the same content is a no-op; with different content it is an identity conflict
(:mod:`bot4.db.conflicts`): the record is kept in ``exec_conflicts`` / ``ledger_conflicts``,
counted (``stats.conflicts``, ``stats.ledger_conflicts``), logged at ERROR and passed to
``alarm`` — never dropped as a duplicate.
How rows get in: :mod:`bot4.db.paths` (pipeline, one trip, fast COPY, dedupe through
staging, isolate); the row specs and the COPY encoding behind them: :mod:`bot4.db.rows`,
:mod:`bot4.db.encoding`; positions: :mod:`bot4.db.positions`. Records naming an instrument
the loader has no scale for are rejected before any INSERT or COPY
(``Code.UNKNOWN_INSTRUMENT``), in every mode. Every path writes identical rows (the tests
compare them). Prices and money become NUMERIC in currency, exactly: ``units /
price_scale`` with the scale's decimal places. One batch's commit (its mode, retries and
counters): :mod:`bot4.db.commit`.

Failures:

- serialization failure or deadlock (SQLSTATE 40001, 40P01): the whole batch is retried
  in the same mode, up to :data:`MAX_RETRIES` times, after a full-jitter exponential
  backoff (``uniform(0, min(1 s, 20 ms * 2**attempt))``); then
  :class:`LoadRetriesExhausted`;
- connection loss, server shutdown, pool or lock timeout: :class:`DatabaseUnavailable`.
  The failed batch committed nothing (or, past the two-phase decision, will be completed
  by recovery); the journal keeps everything, and the next call first resolves in-doubt
  two-phase transactions, then resumes from the database's position.

``guard`` (optional): a callable returning a context manager, entered once around
"connect, recover, set up, read the position" and once around each batch (its retries
included), e.g. ``functools.partial(breakers.guard, handle)`` for the "db" circuit
breaker: a call that raises counts as a failure, one that completes as a success; a
refusal (``BreakerOpenError``) propagates before any database work.

Threads: a Loader is used by one thread at a time (e.g. the persistence stage's background
thread) while the stage keeps appending to the journal; it never writes the journal.
Crash test hook: ``BOT4_DB_CRASH_AT=<point>[:<n>]`` SIGKILLs the process the n-th time
(default 1st) it reaches ``point`` (:data:`HOOK_POINTS`); ``hook=`` is called at every
point with its name.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import random
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from bot4.db.commit import (
    MAX_RETRIES,
    BatchCommit,
    LoaderStats,
    LoadPositionConflict,
    LoadRetriesExhausted,
)
from bot4.db.encoding import Instruments
from bot4.db.paths import BatchPaths
from bot4.db.pool import DatabaseUnavailable, db_errors, make_pool
from bot4.db.positions import Position, apply_fill
from bot4.db.rows import LOADED_TYPES, Batch
from bot4.db.session import Session
from bot4.db.twophase import (
    DEFAULT_PRUNE_AFTER,
    PRUNE_SQL,
    Branches,
    Coordinator,
    decision_of,
)
from bot4.journal import TornTail
from bot4.journal.tail import JournalBehindDatabase, JournalTail, journal_created_ns
from bot4.records.errors import Bot4Error, Code
from bot4.records.instruments import DEFAULT_INSTRUMENTS, InstrumentTable

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = [
    "DEFAULT_BATCH_RECORDS",
    "HOOK_POINTS",
    "LOADED_TYPES",
    "MAX_RETRIES",
    "MODES",
    "DatabaseUnavailable",
    "JournalBehindDatabase",
    "LoadPositionConflict",
    "LoadRetriesExhausted",
    "Loader",
    "LoaderStats",
    "Position",
    "apply_fill",
    "journal_created_ns",
]

log = logging.getLogger(__name__)

DEFAULT_BATCH_RECORDS = 4096  # loadable records per transaction (a bigger frame goes alone)
SMALL_BATCH_RECORDS = 128  # up to this many loadable records: the pipelined path
MODES = ("pipeline", "fast", "dedupe", "isolate")

HOOK_POINTS = (
    "positions-read",  # positions of the batch's fills read, not yet written
    "before-commit",  # every statement done, nothing prepared or committed
    "committed",  # single-database commit done
    "prepared-ledger",  # two-phase: ledger branch prepared, events branch not committed
    "decided",  # events branch committed with its decision row, ledger branch prepared
    "committed-ledger",  # both committed
)
_JOURNAL_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


# --- the loader -----------------------------------------------------------------------------


class Loader(Session, BatchPaths, BatchCommit):
    """Loads one journal into the events (and ledger) database, exactly once.

    ``journal_dir``: the journal (read only; it may not exist yet). ``dsn``: the events
    database; ``ledger_dsn``: the ledger database (None: the ledger tables live in the
    events database, one transaction, no two-phase commit). ``journal_id``: the journal's
    name in the database (default: the directory's name; 1-64 of ``A-Za-z0-9_.-``).
    ``instruments``: gives each price its scale (default ``DEFAULT_INSTRUMENTS``).
    ``batch_records``: loadable records per transaction. ``small_batch``: batches of at
    most this many loadable records take the pipelined path (0: never). ``fast_path``: try
    the direct COPY first for bigger ones (False: staging + ON CONFLICT).
    ``coordinator_dir``: the coordinator's directory, its lock (one loader per journal) and
    the decision log of earlier versions (default ``<journal_dir>/coordinator``).
    ``guard``, ``hook``: see the module docstring.
    ``pool_timeout``: seconds a checkout waits for a connection. ``synchronous_commit``:
    wait for the WAL flush of one-database commits too (default False: the journal is the
    durable copy; see :meth:`_commit_one_phase`). Two-phase transactions always flush:
    PREPARE and COMMIT PREPARED ignore the setting, and the events COMMIT carrying the
    decision sets it on. ``prune_after``: decision rows (``bot4_txn_decisions``) the loader
    leaves before a call that completed every transaction it decided deletes them.

    The constructor does not touch the database (it may be down); the first
    :meth:`load_available` or :meth:`recover` resolves in-doubt transactions, applies the
    migrations, registers the instruments and creates the staging tables.
    """

    def __init__(
        self,
        journal_dir: str | os.PathLike,
        dsn: str,
        ledger_dsn: str | None = None,
        *,
        journal_id: str | None = None,
        instruments: InstrumentTable | None = None,
        batch_records: int = DEFAULT_BATCH_RECORDS,
        fast_path: bool = True,
        guard: Callable[[], AbstractContextManager] | None = None,
        hook: Callable[[str], None] | None = None,
        alarm: Callable[[Code, int], None] | None = None,
        coordinator_dir: str | os.PathLike | None = None,
        pool_timeout: float = 3.0,
        small_batch: int = SMALL_BATCH_RECORDS,
        synchronous_commit: bool = False,
        prune_after: int = DEFAULT_PRUNE_AFTER,
        one_trip: bool = True,
    ) -> None:
        self.journal_dir = Path(journal_dir)
        self.journal_id = journal_id or self.journal_dir.resolve().name
        if not _JOURNAL_ID_RE.match(self.journal_id):
            raise Bot4Error(
                f"journal id {self.journal_id!r}: use 1-64 of A-Z a-z 0-9 _ . -",
                Code.CONFIG_INVALID,
            )
        if batch_records < 1:
            raise ValueError("batch_records must be >= 1")
        self.batch_records = batch_records
        self.small_batch = small_batch
        self.synchronous_commit = synchronous_commit
        self.one_trip = one_trip
        # positions as this loader last committed them; a batch whose fills move only
        # these is sent in one round trip (bot4_positions_cas checks them); emptied by any
        # failure, a refused CAS and recovery
        self._known: dict[tuple[int, int], Position] = {}
        self.guard = guard
        self.hook = hook
        self.alarm = alarm
        self.stats = LoaderStats()
        self.two_phase = ledger_dsn is not None
        self._inst = Instruments(instruments or DEFAULT_INSTRUMENTS)
        self.fast_path = fast_path and self._inst.copy_ok
        self._key = hashlib.sha1(self.journal_id.encode()).hexdigest()[:10]
        self._journal_bytes = self.journal_id.encode()
        self._crash = _crash_point()
        self._crash_seen = 0
        self._events: ConnectionPool | None = None
        self._ledger: ConnectionPool | None = None
        self._tail: JournalTail | None = None
        self._coord = Coordinator(
            coordinator_dir or self.journal_dir / "coordinator", self.journal_id, prune_after
        )
        app = f"bot4-loader:{self.journal_id}"[:63]
        try:
            self._events = make_pool(
                dsn, name="bot4-events", application_name=app, timeout=pool_timeout
            )
            if ledger_dsn is not None:
                self._ledger = make_pool(
                    ledger_dsn, name="bot4-ledger", application_name=app, timeout=pool_timeout
                )
        except BaseException:
            self.close()
            raise
        self._ready = False
        self._recover_needed = True
        self._created_ns: int | None = None
        self._pool_executor = None  # one thread: the ledger branch of fast batches
        self._position: int | None = None  # committed position, while nothing failed
        self._held: tuple | None = None  # (events, ledger) connections between calls
        self._decisions = 0  # decision rows this loader may have left (see _maybe_prune)

    def _hook(self, point: str) -> None:
        if self.hook is not None:
            self.hook(point)
        if self._crash is not None and point == self._crash[0]:
            self._crash_seen += 1
            if self._crash_seen >= self._crash[1]:
                log.warning("BOT4_DB_CRASH_AT: killing the loader at %s", point)
                os.kill(os.getpid(), signal.SIGKILL)

    def _guarded(self) -> AbstractContextManager:
        return self.guard() if self.guard is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def _branches(
        self, ev: psycopg.Connection, lg: psycopg.Connection | None, batch: Batch
    ) -> Iterator[Branches]:
        """One attempt at ``batch``'s transaction (its two-phase branches, if any): a
        failure before the decision rolls back whatever was begun or prepared; after it,
        or when a prepared branch could not be rolled back, recovery finishes the job."""
        txn = Branches(self._coord, batch.first, batch.end, self._hook)
        try:
            yield txn
        except BaseException as exc:
            if txn.decided or not txn.undo(ev, lg, exc):
                self._recover_needed = True
            raise

    # --- public API -------------------------------------------------------------------------

    def recover(self) -> dict[str, list[str]]:
        """Resolve this journal's in-doubt two-phase transactions on both databases from
        the decisions (commit if decided, else record an abort and roll back): the gids
        committed and rolled back. DatabaseUnavailable if a database cannot be reached."""
        with self._guarded(), self._connections() as (ev, lg):
            return self._recover(ev, lg)

    def _recover(
        self, ev: psycopg.Connection, lg: psycopg.Connection | None
    ) -> dict[str, list[str]]:
        done: dict[str, list[str]] = {"committed": [], "rolled_back": []}
        with db_errors(f"journal {self.journal_id}: recover"):
            decide = None
            if (
                lg is not None
                and ev.execute("SELECT to_regclass('bot4_txn_decisions') IS NOT NULL").fetchone()[0]
            ):
                decide = functools.partial(decision_of, ev, self.journal_id)
            for conn in (ev, lg) if lg is not None else (ev,):
                res = self._coord.resolve(conn, decide)
                done["committed"] += res.committed
                done["rolled_back"] += res.rolled_back
        self._known = {}  # another process may have moved positions since
        self._decisions += len(done["committed"]) + len(done["rolled_back"])
        self.stats.recovered_commits += len(done["committed"])
        self.stats.recovered_rollbacks += len(done["rolled_back"])
        if done["committed"]:
            self._position = None  # a batch landed: read the position again
        if done["committed"] or done["rolled_back"]:
            log.warning(
                "journal %s: in-doubt transactions resolved: committed %s, rolled back %s",
                self.journal_id,
                done["committed"],
                done["rolled_back"],
            )
        self._recover_needed = False
        return done

    @property
    def torn_tail(self) -> TornTail | None:
        """Where the last :meth:`load_available` stopped short of the end of the journal: a
        frame still being appended, or torn by a crash (the writer truncates it when it
        next opens the journal); None when it read every byte."""
        return self._tail.torn_tail if self._tail is not None else None

    @property
    def loaded_frame(self) -> int | None:
        """The first journal frame not loaded, as this loader last knew it without asking
        the database (None before it read the position, or after an error): for metrics."""
        return self._position

    def position(self) -> int:
        """The first journal frame the events database has not loaded (0 if none)."""
        with self._connections() as (ev, _lg), db_errors(f"journal {self.journal_id}: position"):
            return self._read_position(ev, check=False)

    def load_available(self, max_batches: int | None = None) -> int:
        """Load every complete frame after the database's position, in at most
        ``max_batches`` transactions; returns the journal records of the committed batches
        (0: nothing new). Raises DatabaseUnavailable, LoadRetriesExhausted,
        BreakerOpenError (from ``guard``) or journal errors; batches committed before the
        error stay committed."""
        loaded = 0
        try:
            with contextlib.ExitStack() as stack:
                with self._guarded():  # one call: connect, recover, set up, read position
                    ev, lg = stack.enter_context(self._connections())
                    if self._recover_needed:
                        self._recover(ev, lg)
                    with db_errors(f"journal {self.journal_id}: setup"):
                        if not self._ready:
                            self._setup(ev, lg)
                        if self._position is None or self._recover_needed:
                            self._position = self._read_position(ev)
                        position = self._position
                if self._created_ns is None:
                    self._created_ns = journal_created_ns(self.journal_dir)
                tail = self._tail_at(position)
                batches = 0
                while max_batches is None or batches < max_batches:
                    frames = tail.read(self.batch_records)
                    if not frames:
                        break
                    batch = Batch.of(frames)
                    self._commit_batch(ev, lg, batch)  # guarded per batch
                    loaded += batch.records
                    batches += 1
                self._maybe_prune(ev)
        except BaseException as exc:
            if isinstance(exc, DatabaseUnavailable):
                self.stats.unavailable += 1
            self._recover_needed = True
            self._position = None
            self._known = {}
            self._drop_tail()
            raise
        return loaded

    def follow(
        self,
        stop: threading.Event,
        poll_s: float = 0.05,
        max_backoff_s: float = 5.0,
        batches_per_call: int = 16,
        caught_up: Callable[[], None] | None = None,
    ) -> None:
        """Load until ``stop`` is set: the loop of the persistence stage's loader thread.

        Calls :meth:`load_available` (at most ``batches_per_call`` transactions at a time,
        so ``stop`` is seen within that many batches), waits ``poll_s`` seconds when there
        was nothing new. While the database is unavailable, retries are exhausted or the
        guard refuses (breaker open), it waits with exponential backoff and jitter,
        ``poll_s`` doubling up to ``max_backoff_s``, and tries again: the journal keeps
        everything meanwhile. Anything else (a corrupt journal, a configuration error)
        propagates. ``caught_up`` (optional) is called on this thread whenever a call finds
        nothing new after one that loaded something (and once at the first catch-up): the
        database then holds the journal up to the tail (e.g. to reconcile the two).
        """
        delay = poll_s
        fresh = True
        while not stop.is_set():
            try:
                n = self.load_available(max_batches=batches_per_call)
            except (DatabaseUnavailable, LoadRetriesExhausted) as exc:
                self._backoff_note(exc)
            except Bot4Error as exc:
                if exc.code != Code.BREAKER_OPEN:
                    raise
                self._backoff_note(exc)
            else:
                delay = poll_s
                if n:
                    fresh = True
                elif fresh and caught_up is not None:
                    fresh = False
                    caught_up()
                if n == 0:
                    stop.wait(poll_s)
                continue
            stop.wait(random.uniform(delay / 2, delay))
            delay = min(max_backoff_s, delay * 2)

    def _backoff_note(self, exc: BaseException) -> None:
        self.stats.backoffs += 1
        if self.stats.backoffs == 1 or self.stats.backoffs % 100 == 0:
            log.warning("journal %s: loading deferred (%d so far): %s", self.journal_id,
                        self.stats.backoffs, exc)  # fmt: skip

    def _maybe_prune(self, ev: psycopg.Connection) -> None:
        """Delete the journal's decision rows once there are ``prune_after`` of them and
        none is needed: the last recovery resolved every in-doubt branch of the journal,
        and every two-phase batch since then committed on both databases (any failure sets
        ``_recover_needed``). The crash point ``pruning`` is reached with the DELETE done,
        not committed. A decision log file of an earlier version (decisions appended to
        ``coordinator/``) is dropped on the same condition."""
        if self._recover_needed:
            return
        if self._coord.should_prune():
            self.stats.pruned_decisions += self._coord.prune(self._hook)
        if self._decisions < self._coord.prune_after:
            return
        with db_errors(f"journal {self.journal_id}: prune decisions"):
            ev.execute("BEGIN")
            n = ev.execute(PRUNE_SQL, (self.journal_id,)).rowcount
            self._hook("pruning")
            ev.execute("COMMIT")
        self._decisions = 0
        self.stats.pruned_decisions += n

    def _tail_at(self, position: int) -> JournalTail:
        if self._tail is None:
            self._tail = JournalTail(self.journal_dir, position)
        elif self._tail.next_frame != position:
            self._tail.seek(position)
        return self._tail

    def _drop_tail(self) -> None:
        """After a failed batch the tail is ahead of the database: re-seek next time."""
        if self._tail is not None:
            self._tail.close()
            self._tail = None

    def close(self) -> None:
        """Close the pools and the decision log; a prepared, undecided transaction is
        left for the next recovery. Idempotent."""
        if getattr(self, "_held", None) is not None:
            self._release()
        for pool in (self._events, self._ledger):
            if pool is not None:
                with contextlib.suppress(Exception):
                    pool.close(timeout=2.0)
        self._events = self._ledger = None
        if getattr(self, "_pool_executor", None) is not None:
            self._pool_executor.shutdown(wait=True)
            self._pool_executor = None
        self._coord.close()
        self._drop_tail()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _crash_point() -> tuple[str, int] | None:
    spec = os.environ.get("BOT4_DB_CRASH_AT", "").strip()
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    if point not in HOOK_POINTS:
        raise Bot4Error(
            f"BOT4_DB_CRASH_AT={spec!r}: point must be one of {', '.join(HOOK_POINTS)}",
            Code.CONFIG_INVALID,
        )
    return point, max(1, int(nth or 1))
