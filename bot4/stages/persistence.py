"""Persistence stage, first part: every event record it reads is in the journal before its
input ring position moves.

Each input batch becomes one journal frame (``bot4.journal``); with ``fsync = "batch"``
(default) the frame is fdatasync'ed before ``process`` returns, and the stage loop
releases the input only after ``process`` returns — so a record the ring no longer holds
is on disk, and survives a power loss. On start the journal writer truncates a torn tail.

params: ``dir`` (default ``$BOT4_DATA_DIR/journal/<instance>``, ``$BOT4_DATA_DIR``
defaulting to ``./bot4-data``), ``fsync`` (``always`` | ``batch`` | ``none``),
``max_mb`` (segment file size, 64).

Not yet: loading the journal into PostgreSQL exactly once (the persistence issue's
database part). A persistence stage killed between writing a frame and releasing its
input writes that batch again after the restart; the database loader's identity keys
(orders by ``client_order_id:order_id``, executions by ``exec_id``, decisions by producer
and sequence) are what make the database exactly once.

Restart state: the counts and histogram of the summary cover one process only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bot4.journal import JournalWriter
from bot4.paths import data_dir
from bot4.records import OPERATOR_ACTION
from bot4.shm.operator_log import OperatorLog
from bot4.shm.segment import SegmentMissingError
from bot4.stages.standins import CountSink

log = logging.getLogger("bot4.stage")

OPLOG_POLL_NS = 5_000_000  # operator actions are journalled within 5 ms


class PersistenceStage(CountSink):
    kind = "persistence"
    restart_state = "summary counts cover one process; the journal itself survives everything"

    def setup(self) -> None:
        super().setup()
        p = self.params
        self.dir = Path(p.get("dir") or data_dir() / "journal" / self.instance)
        self.writer = JournalWriter(
            self.dir,
            fsync=p.get("fsync", "batch"),
            max_bytes=int(p.get("max_mb", 64)) << 20,
            clock=self.wall_clock,  # replay: simulated, so its journal is byte-identical
        )
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
        try:
            self.oplog = OperatorLog(self.instance)
        except SegmentMissingError:
            log.info(
                "no operator log for instance %s: operator actions not journalled", self.instance
            )

    def _take_operator_actions(self) -> int:
        """Journal what operators did (``bot4 breaker|halt|reduce|resume``), then release it
        from the operator log: an action is on disk before the log forgets it."""
        n = self.oplog.read(self.op_buf)
        if n:
            self.writer.append(self.op_buf[:n])
            self.writer.flush()
            self.frames += 1
            self.op_actions += n
        self.oplog.release()
        return n

    def pending(self, now_ns: int) -> int:
        if self.oplog is not None and now_ns >= self._op_due:
            self._op_due = now_ns + OPLOG_POLL_NS
            self._take_operator_actions()
        return 0

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
        }

    def on_drain(self) -> None:
        if self.oplog is not None:
            while self._take_operator_actions():
                pass
            self.oplog.close()
        self.writer.close()
        super().on_drain()
