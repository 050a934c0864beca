"""Persistence stage: every event record it reads is in the journal before its input ring
position moves, and a loader thread moves the journal into PostgreSQL exactly once.

Each input batch becomes one journal frame (``bot4.journal``); with ``fsync = "batch"``
(default) the frame is fdatasync'ed before ``process`` returns, and the stage loop
releases the input only after ``process`` returns — so a record the ring no longer holds
is on disk, and survives a power loss. On start the journal writer truncates a torn tail
(an append a crash cut short); any other damage at the journal's end (a bit flip, the zeroed
payload a power loss can leave under an intact header) makes the stage refuse to start with
one ERROR line naming the file and offset (exit 2) until ``bot4 journal repair DIR``.
Operator actions (the operator log) are journalled the same way.

Database. With a DSN (param ``dsn``, else ``$BOT4_DSN``, which ``bot4 run`` sets, starting
the embedded server when none is given; ``ledger_dsn`` / ``$BOT4_LEDGER_DSN`` likewise) a
thread of this process runs :meth:`bot4.db.loader.Loader.follow`: it reads the journal
behind the writer and loads it in SERIALIZABLE batches that store the journal position
they reached, so the database holds every event exactly once whatever is killed when
(:mod:`bot4.db.loader`). The journal is the hand-off: the stage loop never waits for the
database, so a database outage neither stops nor slows trading. Each load transaction
runs through the instance's ``db`` circuit breaker (when a shared risk stage made the
breaker segment): it opens after repeated failures, and the loader then backs off until
the breaker's cool-down lets a probe through; the backlog lands when the database returns.
At drain the loader gets ``drain_db_s`` (10) seconds to catch up; what it could not load
stays in the journal and loads at the next start (same journal id). A loader that stops —
the journal damaged or with a gap (a segment missing or renumbered), a misconfiguration —
logs one ERROR line and raises a stage alarm with the error's code (``JOURNAL_GAP``,
``JOURNAL_CRC``, ...; :mod:`bot4.stages.alarms`, shown by ``bot4 stats``); it never waits at
the damage, and trading goes on, journalled.

params: ``dir`` (default ``$BOT4_DATA_DIR/journal/<instance>``, ``$BOT4_DATA_DIR``
defaulting to ``./bot4-data``), ``fsync`` (``always`` | ``batch`` | ``none``),
``max_mb`` (segment file size, 64), ``database`` (true; false: journal only), ``dsn``,
``ledger_dsn``, ``drain_db_s``.

Reconciliation and alarms. Whenever the loader thread has caught up with the journal (at
most every ``RECONCILE_EVERY_S`` seconds) and once more at drain, it reconciles the journal
with the database (``bot4.db.reconcile``: executions, fills and net positions per
instrument, positions and ledger against the executions); a difference is logged at ERROR
and raised as a stage alarm (``DB_RECONCILE_DIFFERENCE``, ``bot4 stats``). Identity
conflicts the loader keeps (an ``exec_id`` carrying another execution) raise an alarm
(``EXEC_ID_CONFLICT``) too.

A persistence stage killed between writing a frame and releasing its input writes that
batch again after the restart; the loader's identity keys (orders by
``client_order_id:order_id``, executions by ``exec_id``, decisions by producer and
sequence) make the database exactly once all the same.

Restart state: the counts and histogram of the summary cover one process only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from bot4.journal import FSYNC_POLICIES, JournalCorrupt, JournalWriter
from bot4.logs import log_event
from bot4.paths import data_dir
from bot4.records import OPERATOR_ACTION
from bot4.records.errors import Code
from bot4.shm import metrics as M
from bot4.shm.operator_log import OperatorLog
from bot4.shm.segment import SegmentMissingError
from bot4.stages.alarms import StageAlarms
from bot4.stages.base import check_choice, check_number, check_type
from bot4.stages.standins import CountSink

log = logging.getLogger("bot4.stage")
_OP_NAMES = {1: "breaker trip", 2: "breaker reset", 3: "halt", 4: "reduce", 5: "resume"}
_TARGET_NAMES = {1: "breaker", 2: "instrument", 3: "global"}


def _log_operator_action(rec) -> None:
    """Who changed what, once it is journalled (WARNING ``operator_action``): the risk stage
    logs the state change itself (``breaker_transition``, ``trading_state``); this line
    names the operator, from the audit record."""

    def text(b: bytes) -> str:
        return b.decode("ascii", "replace").rstrip("\x00")

    action = _OP_NAMES.get(int(rec["action"]), str(int(rec["action"])))
    kind = _TARGET_NAMES.get(int(rec["target_kind"]), str(int(rec["target_kind"])))
    who, note = text(rec["who"]), text(rec["note"])
    log_event(
        log,
        logging.WARNING,
        "operator_action",
        "operator %s: %s %s %d%s",
        who,
        action,
        kind,
        int(rec["target"]),
        f" ({note})" if note else "",
        who=who,
        action=action,
        target_kind=kind,
        target=int(rec["target"]),
        old_state=int(rec["old_state"]),
        new_state=int(rec["new_state"]),
        note=note,
    )


OPLOG_POLL_NS = 5_000_000  # operator actions are journalled within 5 ms
RECONCILE_EVERY_S = 30.0  # journal-vs-database reconciliation while loading, at most this often


class PersistenceStage(CountSink):
    kind = "persistence"
    drains_last = True
    warm_as = "count-sink"  # its kernels are count-sink's, plus a journal file
    restart_state = "summary counts cover one process; the journal itself survives everything"
    params_keys = frozenset(
        {"dir", "fsync", "max_mb", "database", "dsn", "ledger_dsn", "drain_db_s"}
    )

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        check_type(params, "dir", str, "a directory path")
        check_choice(params, "fsync", FSYNC_POLICIES)
        check_number(params, "max_mb", integer=True, lo=1)
        check_type(params, "database", bool, "true or false")
        check_type(params, "dsn", str, "a connection string")
        check_type(params, "ledger_dsn", str, "a connection string")
        check_number(params, "drain_db_s", lo=0)

    @classmethod
    def journal_dir(cls, params, instance: str) -> Path:
        """``params.dir``, else ``$BOT4_DATA_DIR/journal/<instance>``."""
        return Path(params.get("dir") or data_dir() / "journal" / instance)

    @classmethod
    def uses_database(cls, params) -> bool:
        return bool(params.get("database", True))

    @classmethod
    def replay_params(cls, params, journal_dir, deterministic):
        params["dir"] = journal_dir
        if deterministic:
            params["fsync"] = "none"
        params["database"] = False  # a backtest's events stay in its own journal
        return params

    @classmethod
    def warm_parts(cls, params):
        return ("operator log", "database breaker")

    def setup(self) -> None:
        super().setup()
        p = self.params
        self.dir = self.journal_dir(p, self.instance)
        try:
            self.writer = JournalWriter(
                self.dir,
                fsync=p.get("fsync", "batch"),
                max_bytes=int(p.get("max_mb", 64)) << 20,
                clock=self.wall_clock,  # replay: simulated, so its journal is byte-identical
            )
        except JournalCorrupt as exc:  # refused, never truncated: an operator decides
            log.error("persistence: journal refused: %s", exc)
            raise SystemExit(2) from None
        if self.writer.truncated_bytes:
            log.warning(
                "journal %s: torn tail of %d bytes truncated at start",
                self.dir,
                self.writer.truncated_bytes,
            )
        self.frames = 0
        self.op_actions = 0
        self.oplog = None
        self.op_buf = np.zeros(256, OPERATOR_ACTION)
        self._op_due = 0
        self.loader = None
        self.loader_error: str | None = None
        self.alarms = StageAlarms(
            self.instance, self.spec.index if self.topology is not None else None
        )
        if p.get("database", True):
            self._start_loader()
        try:
            self.oplog = OperatorLog(self.instance)
        except SegmentMissingError:
            log.info(
                "no operator log for instance %s: operator actions not journalled", self.instance
            )

    # -- the database loader (a thread of this process) ----------------------------------
    def _start_loader(self) -> None:
        p = self.params
        dsn = p.get("dsn") or os.environ.get("BOT4_DSN")
        if not dsn:
            log.info("persistence: no database configured (BOT4_DSN): journal only")
            return
        from bot4.db.loader import Loader

        ledger = p.get("ledger_dsn") or os.environ.get("BOT4_LEDGER_DSN") or None
        self.loader = Loader(self.dir, dsn, ledger, guard=self._db_guard(), alarm=self._alarm)
        from bot4.db.reconcile import LiveReconciler

        self.reconciler = LiveReconciler(self.dir, dsn, ledger, every_s=RECONCILE_EVERY_S)
        self.reconciled: bool | None = None  # the last reconciliation's verdict
        self._stop_loading = threading.Event()
        self._loader_thread = threading.Thread(
            target=self._load_forever, name="db-loader", daemon=True
        )
        self._loader_thread.start()

    def _db_guard(self):
        """The instance's ``db`` breaker as a guard factory, or None without one."""
        from bot4.shm.breakers import Breakers, UnknownBreakerError, guard

        try:
            self.breakers = Breakers(self.instance)
            handle = self.breakers.handle("db")
        except (SegmentMissingError, UnknownBreakerError):
            return None
        return lambda: guard(handle)

    def _load_forever(self) -> None:
        try:
            self.loader.follow(self._stop_loading, caught_up=self._reconcile)
        except Exception as exc:  # a damaged journal, a gap, a misconfiguration: keep trading
            self.loader_error = f"{type(exc).__name__}: {exc}"
            code = getattr(exc, "code", Code.INTERNAL_ERROR)
            total = self.alarms.raise_alarm(code)
            log.error(
                "persistence: database loader stopped (alarm %d, code %d): %s",
                total,
                int(code),
                self.loader_error,
            )

    def _alarm(self, code: Code, n: int) -> None:
        """The loader kept identity conflicts (it logged them): the stage's alarm."""
        self.alarms.raise_alarm(code, n)

    def _reconcile(self, final: bool = False) -> None:
        """Journal against database (``bot4.db.reconcile``) when the loader has caught up:
        at most every ``RECONCILE_EVERY_S`` seconds, and once more at drain (``final``). A
        difference is logged at ERROR at every check and raised as an alarm when it
        appears; a database that cannot be reached only postpones the check."""
        try:
            rec = self.reconciler.check() if final else self.reconciler.maybe_check()
        except Exception as exc:  # database down, journal unreadable: the loader says why
            log.warning("persistence: reconciliation not run: %s", exc)
            return
        if rec is None:
            return
        if rec.ok:
            if final or not self.reconciled:
                log.info("persistence: %s", rec.summary())
            self.reconciled = True
            return
        if self.reconciled is not False:
            self.alarms.raise_alarm(Code.DB_RECONCILE_DIFFERENCE)
        self.reconciled = False
        log.error("persistence: %s", rec.summary())

    def _finish_loading(self) -> None:
        """At drain: let the loader catch up with the journal. It waits as long as the
        loader keeps advancing, and gives up after ``drain_db_s`` seconds without progress
        (the supervisor's drain timeout bounds the whole wait): a loaded machine loads
        slowly but completely. Whatever is still behind stays in the journal, loads at the
        next start or with ``bot4 db load``, and is raised as the ``DB_BEHIND_AT_EXIT``
        alarm, which makes ``bot4 run`` exit 1 (a partial database is not a success)."""
        patience = float(self.params.get("drain_db_s", 10.0))
        deadline = time.monotonic() + patience
        end = self.writer.next_frame
        behind = None
        while time.monotonic() < deadline and self.loader_error is None:
            try:
                now_behind = end - self.loader.position()
            except Exception as exc:  # database down: the journal keeps the rest
                now_behind = f"unknown ({exc})"
            if now_behind == 0:
                behind = 0
                break
            if isinstance(now_behind, int) and (not isinstance(behind, int) or now_behind < behind):
                deadline = time.monotonic() + patience  # it advanced: wait on
            behind = now_behind
            time.sleep(0.05)
        self._stop_loading.set()
        self._loader_thread.join(timeout=30)
        if not self._loader_thread.is_alive():  # the reconciler is the loader thread's
            self._reconcile(final=True)
            self.reconciler.close()
            with contextlib.suppress(Exception):  # the last batch may have landed meanwhile
                behind = end - self.loader.position()
        if behind:
            log.error(
                "persistence: database %s frames behind the journal at exit; they load at "
                "the next start or with `bot4 db load %s`",
                behind,
                self.dir,
            )
            self.alarms.raise_alarm(Code.DB_BEHIND_AT_EXIT)
        self.db_behind = behind
        self._publish_lag()
        self.loader.close()

    def _take_operator_actions(self) -> int:
        """Journal what operators did (``bot4 breaker|halt|reduce|resume``), then release it
        from the operator log: an action is on disk before the log forgets it."""
        n = self.oplog.read(self.op_buf)
        if n:
            self.writer.append(self.op_buf[:n])
            self.writer.flush()
            self.frames += 1
            self.op_actions += n
            for rec in self.op_buf[:n]:
                _log_operator_action(rec)
        self.oplog.release()
        return n

    def pending(self, now_ns: int) -> int:
        if now_ns >= self._op_due:
            self._op_due = now_ns + OPLOG_POLL_NS
            if self.oplog is not None:
                self._take_operator_actions()
            self._publish_lag()
        return 0

    def _publish_lag(self) -> None:
        """The journal's next frame and what the loader has loaded, into the metrics
        segment (when this stage is its recorder): ``bot4 stats`` and the exporter show the
        loader's lag in frames. Written by this process only (the loader's figure is the
        loader thread's own cached position, read without asking the database)."""
        if self.metrics_seg is None:
            return
        w = self.metrics
        w[M.W_JOURNAL_NEXT_FRAME] = self.writer.next_frame
        if self.loader is not None:
            loaded = self.loader.loaded_frame
            if loaded is not None:
                w[M.W_LOADED_FRAME_PLUS1] = loaded + 1

    def process(self, i, batch, outs, counts, seq):
        if batch.shape[0]:
            self.writer.append(batch)
            self.writer.flush()  # per the fsync policy, before the loop releases the input
            self.frames += 1
        return super().process(i, batch, outs, counts, seq)

    def summary(self) -> dict:
        return {
            **super().summary(),
            "journal": str(self.dir),
            "frames": self.frames,
            "operator_actions": self.op_actions,
            "database": None
            if self.loader is None
            else {
                **self.loader.stats.as_dict(),
                "behind_frames": getattr(self, "db_behind", None),
                "reconciled": self.reconciled,
                "error": self.loader_error,
            },
        }

    def on_drain(self) -> None:
        if self.oplog is not None:
            while self._take_operator_actions():
                pass
            self.oplog.close()
            self.oplog = None
        if self.loader is not None:
            self.writer.flush()
            self._finish_loading()
        self.writer.close()
        super().on_drain()
