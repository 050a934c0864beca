"""A stage's alarm words in the control block, raised from the stage's own process.

An alarm is an integrity error that trading goes on through but an operator must look at
(an execution id carrying two executions, the journal and the database disagreeing). It is
logged at ERROR by whoever raises it and counted in the stage's control-block block
(``S_ALARMS``, ``S_ALARM_CODE``: ``bot4.shm.control``), where ``bot4 stats`` shows it.

Ownership: the words belong to the stage's process; :class:`StageAlarms` serialises the
threads of that process (the persistence stage raises from its loader thread).
"""

from __future__ import annotations

import logging
import threading

from bot4.records.errors import Code
from bot4.shm import control as C
from bot4.shm.segment import SegmentMissingError

log = logging.getLogger("bot4.stage")


class StageAlarms:
    """Alarm counter of stage ``index`` of ``instance``. Without a control block (a stage
    driven by a test or the replay harness) alarms are only counted here (``count``)."""

    def __init__(self, instance: str, index: int | None) -> None:
        self._lock = threading.Lock()
        self._cb = None
        self._blk = None
        self.count = 0
        if index is None:
            return
        try:
            self._cb = C.ControlBlock(instance)
            self._blk = self._cb.stage(index)
        except (SegmentMissingError, ValueError, IndexError):
            self._cb = self._blk = None

    def raise_alarm(self, code: Code, n: int = 1) -> int:
        """Count ``n`` alarms of ``code``; the stage's count this session (this process's
        when there is no control block)."""
        with self._lock:
            self.count += n
            if self._blk is None:
                return self.count
            return C.raise_alarm(self._blk, int(code), n)

    def close(self) -> None:
        with self._lock:
            self._blk = None
            if self._cb is not None:
                self._cb.close()
                self._cb = None
