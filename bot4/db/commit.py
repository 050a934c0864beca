"""One batch of :class:`bot4.db.loader.Loader` committed: the path it takes first (few
rows: pipelined; else the direct COPY or staging), the escalation when rows are refused
(fast -> dedupe -> isolate), whole-batch retries on serialization failures and deadlocks
(full-jitter exponential backoff, up to :data:`MAX_RETRIES`), and the counters it moves
(:class:`LoaderStats`).

:class:`BatchCommit` is a part of :class:`~bot4.db.loader.Loader` (it uses the loader's
stats, guard and position, and :class:`~bot4.db.paths.BatchPaths`' ``_attempt``).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from bot4.db.encoding import SlowPathNeeded
from bot4.db.paths import ROW_ERROR_CLASSES
from bot4.db.pool import db_errors
from bot4.db.rows import FENCED, Batch
from bot4.records.errors import Bot4Error, Code

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "MAX_RETRIES",
    "BatchCommit",
    "LoadPositionConflict",
    "LoadRetriesExhausted",
    "LoaderStats",
]

MAX_RETRIES = 3  # whole-batch retries on 40001 / 40P01
BACKOFF_BASE_S = 0.02
BACKOFF_CAP_S = 1.0


class LoadPositionConflict(Bot4Error):
    """The stored load position moved under this loader: another loader of the same
    journal id ran against this database."""

    code = Code.CONFIG_INVALID


class LoadRetriesExhausted(Bot4Error):
    """A batch kept failing with serialization failures or deadlocks; retry later."""

    code = Code.SERIALIZATION_FAILURE


@dataclass
class LoaderStats:
    """Counters of one Loader (written by its thread only; read by anyone)."""

    batches: int = 0  # committed load transactions
    frames: int = 0  # journal frames in committed batches
    records: int = 0  # journal records in committed batches (every type)
    staged: int = 0  # loadable records in committed batches
    inserted: int = 0  # rows inserted into the event tables
    duplicates: int = 0  # loadable records whose identity was already there
    rejected: int = 0  # records stored in rejected_rows
    fills: int = 0  # fills inserted (positions and ledger moved by them)
    ledger_rows: int = 0  # ledger legs inserted
    conflicts: int = 0  # executions kept in exec_conflicts: their id holds another execution
    ledger_conflicts: int = 0  # ledger legs kept in ledger_conflicts (unlike the leg there)
    twophase: int = 0  # batches committed with two-phase commit
    pipelined_batches: int = 0  # small batches committed by the pipelined ON CONFLICT path
    fast_batches: int = 0  # batches committed by direct COPY
    dedupe_batches: int = 0  # batches committed through staging + ON CONFLICT
    isolations: int = 0  # batches committed with refused rows isolated by savepoints
    retries: int = 0  # whole-batch retries after 40001 / 40P01
    serialization_failures: int = 0
    deadlocks: int = 0
    unavailable: int = 0  # DatabaseUnavailable raised
    backoffs: int = 0  # follow(): waits after a failed call (database down, breaker open)
    recovered_commits: int = 0  # in-doubt branches committed by recovery
    recovered_rollbacks: int = 0  # in-doubt branches rolled back by recovery
    pruned_decisions: int = 0  # two-phase decision rows deleted (both branches committed)
    one_trip_batches: int = 0  # small batches with fills sent in one round trip (positions CAS)
    cas_misses: int = 0  # one-round-trip attempts refused (B4003) and redone in two
    skipped: int = 0  # records of types the loader does not load (market data, ...)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class BatchCommit:
    """One batch committed (see the module docstring)."""

    def _commit_batch(
        self, ev: psycopg.Connection, lg: psycopg.Connection | None, batch: Batch
    ) -> None:
        from psycopg import errors

        loadable = sum(len(p) for p in batch.parts.values())
        if loadable <= self.small_batch:
            mode = "pipeline"  # few rows: fewest round trips
        else:
            mode = "fast" if self.fast_path else "dedupe"
        attempt = 0
        where = f"journal {self.journal_id}: frames {batch.first}..{batch.end - 1}"
        with self._guarded():
            while True:
                try:
                    with db_errors(where):
                        out = self._attempt(ev, lg, batch, mode)
                    break
                except SlowPathNeeded:
                    mode = "dedupe"
                except (errors.SerializationFailure, errors.DeadlockDetected) as exc:
                    self._known = {}  # another transaction moved something: read again
                    deadlock = isinstance(exc, errors.DeadlockDetected)
                    if deadlock:
                        self.stats.deadlocks += 1
                    else:
                        self.stats.serialization_failures += 1
                    if attempt >= MAX_RETRIES:
                        code = Code.DEADLOCK_DETECTED if deadlock else Code.SERIALIZATION_FAILURE
                        raise LoadRetriesExhausted(
                            f"{where}: failed {attempt + 1} times: {exc}", code
                        ) from exc
                    attempt += 1
                    self.stats.retries += 1
                    time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))
                except errors.Error as exc:
                    if exc.sqlstate == FENCED:
                        raise LoadPositionConflict(
                            f"{where}: the load position moved under this loader: another "
                            "loader of this journal id writes to this database"
                        ) from exc
                    if mode == "isolate" or (exc.sqlstate or "")[:2] not in ROW_ERROR_CLASSES:
                        raise
                    mode = "dedupe" if mode == "fast" else "isolate"
        s = self.stats
        s.batches += 1
        s.frames += batch.end - batch.first
        s.records += batch.records
        s.staged += out.staged
        s.inserted += out.inserted
        s.rejected += out.rejected
        conflicts = len(out.conflicts)
        s.duplicates += out.staged - out.inserted - out.rejected - conflicts
        if conflicts or out.ledger_conflicts:
            self._report_conflicts(out)
        s.fills += 0 if out.fills is None else len(out.fills)
        if out.moved:
            self._known.update(out.moved)
        s.ledger_rows += out.ledger_rows
        s.skipped += batch.records - out.staged
        if mode == "pipeline":
            s.pipelined_batches += 1
        elif mode == "fast":
            s.fast_batches += 1
        elif mode == "dedupe":
            s.dedupe_batches += 1
        else:
            s.isolations += 1
        self._position = batch.end
