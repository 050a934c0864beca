"""The stage processes of :class:`bot4.pipeline.supervisor.Supervisor`: starting them,
waiting for them to run, stopping them while they start, killing and reaping them.

Each stage (or each group of stages, shared mode) runs in one process, forked by the
zygote (:mod:`bot4.pipeline.zygote`: imported once, forked per stage) or, without one,
``spawn``-ed, whose body is :func:`bot4.pipeline.zygote.stage_entry`: SIGINT ignored from
its first instruction (the terminal's Ctrl-C is the supervisor's), ``PR_SET_PDEATHSIG``
so it never outlives the supervisor, then :func:`bot4.stages.entry.stage_main`. A process is always reaped after it is killed,
so its pid can no longer be a live owner of a ring side when its replacement attaches.

:class:`StageProcesses` is a part of ``Supervisor`` (whose ``__init__`` sets what it reads:
``t``, ``slots``, ``cb``, ``start_timeout``, ``stop_requested``, ``force_stop``,
``halt_reason``); the restart policy and the supervision loop stay in ``supervisor``. The
supervisor writes each stage's pid / core / restarts / started ns in the control block here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from bot4.interrupts import children_block_sigint
from bot4.pipeline.zygote import SPAWN, Forked
from bot4.pipeline.zygote import stage_entry as _stage_entry
from bot4.shm import control as C
from bot4.shm.owners import process_start

_CTX = SPAWN
STARTUP_STOP_S = 10.0  # stages asked to stop while starting are killed after this


def _send(p, sig: int) -> None:
    """``sig`` to stage process ``p`` unless it is gone: a forked one through its pidfd
    (the zygote reaps its children: their pids may be reused before the supervisor reads
    their exit), a spawned one by pid (unreaped until joined, so not reused)."""
    with contextlib.suppress(ProcessLookupError):
        if isinstance(p, Forked):
            p.send_signal(sig)
        else:
            os.kill(p.pid, sig)


@dataclass
class _Slot:
    name: str
    index: int
    proc: object = None
    restarts: int = 0
    restart_times: list = field(default_factory=list)
    restart_at: float | None = None
    finished: bool = False
    last_records: int = 0
    live_ring: str = ""  # ring name last written to the control block
    hb_blocked_on: str = ""  # stale heartbeat, but blocked on this full ring: said once


class StageProcesses:
    """Starting, waiting for, stopping and reaping the stage processes (see the module doc)."""

    def _members(self, slot: _Slot) -> list[_Slot]:
        """Every slot of the process ``slot`` runs in: its group's members, or itself."""
        g = self.t.group_of(slot.name)
        return [slot] if g is None else [s for s in self.slots if s.name in g.members]

    def _start(self, slot: _Slot) -> None:
        """Start the process of ``slot``'s unit (a stage, or its whole group): forked by
        the zygote (``bot4.pipeline.zygote``) when there is one, else spawned."""
        g = self.t.group_of(slot.name)
        unit = slot.name if g is None else g.name
        z = getattr(self, "zygote", None)
        p = z.fork(self.t, unit, self.start_timeout) if z is not None else None
        if p is None:
            p = _CTX.Process(
                target=_stage_entry, args=(self.t, unit), name=f"bot4-{unit}", daemon=False
            )
            with children_block_sigint():
                p.start()
        now = time.monotonic_ns()
        for m in self._members(slot):
            m.proc = p
            m.restart_at = None
            blk = self.cb.stage(m.index)
            blk[C.S_PID_START] = process_start(p.pid) or 0
            blk[C.S_PID] = p.pid
            blk[C.S_CORE] = self.t.stage(m.name).core
            blk[C.S_RESTARTS] = m.restarts
            blk[C.S_STARTED_NS] = now

    def _kill_and_reap(self, slot: _Slot) -> None:
        p = slot.proc
        if p is None:
            return
        if p.exitcode is None:
            _send(p, signal.SIGKILL)
        p.join()  # reaped: its pid can no longer be a live owner of a ring side

    def _wait_running(self) -> str:
        """``running`` once every stage runs, ``stopped`` when a signal came first,
        ``failed`` (with ``halt_reason``) when a stage kept failing or the start timed out."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.stop_requested:
                return "stopped"
            for slot in self.slots:
                self._check(slot, False)
            if self.halt_reason:
                return "failed"
            states = [int(self.cb.stage(s.index)[C.S_STATE]) for s in self.slots]
            if all(st in (C.STAGE_RUNNING, C.STAGE_STOPPED) for st in states):
                return "stopped" if self.stop_requested else "running"
            time.sleep(0.02)
        waiting = [
            s.name for s in self.slots if int(self.cb.stage(s.index)[C.S_STATE]) != C.STAGE_RUNNING
        ]
        self.halt_reason = (
            f"stages {waiting} did not report running within {self.start_timeout:g} s"
        )
        return "failed"

    def _stop_starting(self) -> None:
        """Stop a pipeline interrupted before every stage ran: no drain (nothing has
        flowed: sources hold while the pipeline starts) and no restarts. The pipeline state
        goes to ``stopped`` (a stage that reaches its loop leaves at once), every live
        process gets SIGTERM (one still importing ends there), and what is left after
        ``STARTUP_STOP_S`` or a second signal is killed."""
        self._say(
            "interrupted while starting: stopping the stages (no restarts)",
            logging.WARNING,
            "start_interrupted",
        )
        self.cb.words[C.W_PIPE_STATE] = C.PIPE_STOPPED
        procs = {id(s.proc): s.proc for s in self.slots if s.proc is not None}
        for p in procs.values():
            if p.exitcode is None:
                _send(p, signal.SIGTERM)
        deadline = time.monotonic() + STARTUP_STOP_S
        while any(p.exitcode is None for p in procs.values()):
            if self.force_stop or time.monotonic() >= deadline:
                left = sorted(s.name for s in self.slots if s.proc and s.proc.exitcode is None)
                why = "a second interrupt" if self.force_stop else f"{STARTUP_STOP_S:g} s"
                self._say(
                    f"stages {left} still starting after {why}: killed",
                    logging.WARNING,
                    "start_interrupted",
                    stages=left,
                )
                break
            time.sleep(0.02)
        for slot in self.slots:
            slot.restart_at = None
            self._kill_and_reap(slot)
