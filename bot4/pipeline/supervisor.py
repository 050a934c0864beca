"""Launcher and supervisor: ``bot4 run``.

Creates the topology's segments, starts one spawned, pinned process per stage, waits
until every stage reports running, then supervises:

* a stage process that exits unexpectedly is restarted after a backoff
  (0.1 s doubling to ``max_backoff``, 5 s); more than ``max_restarts`` restarts of one stage within
  ``restart_window`` seconds halts the pipeline with an error naming the stage;
* a stage whose heartbeat is older than its ``heartbeat_timeout`` is reported, SIGKILLed,
  reaped and restarted — a replacement never attaches while the old process can still
  wake up and write;
* SIGINT / SIGTERM (or ``--duration``): the pipeline state goes to ``draining``; sources
  stop; each stage drains its inputs once its upstream stages stopped (topology order)
  and exits; segments are unlinked (kept with ``keep_shm``); exit code 0.

Ownership in the control block: the supervisor writes the pipeline state, its pid and
each stage's pid / core / restarts / started ns; stages write everything else.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from bot4.pipeline.segments import create_segments, destroy_segments
from bot4.shm import control as C
from bot4.shm.control import ControlBlock
from bot4.shm.stats import instance_ring_snapshots

_CTX = mp.get_context("spawn")


def _stage_entry(topology, name: str) -> None:
    import ctypes

    from bot4.stages.loop import stage_main

    # a stage never outlives its supervisor: no orphan writer on a ring nobody supervises
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        sys.exit(3)

    sys.exit(stage_main(topology, name))


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


class Supervisor:
    def __init__(
        self,
        topology,
        *,
        keep_shm: bool = False,
        duration: float | None = None,
        live: bool | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        max_backoff: float = 5.0,
        start_timeout: float = 120.0,
        drain_timeout: float = 60.0,
        out=None,
    ) -> None:
        self.t = topology
        self.keep_shm = keep_shm
        self.duration = duration
        self.out = out or sys.stderr
        self.live = self.out.isatty() if live is None else live
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.max_backoff = max_backoff
        self.start_timeout = start_timeout
        self.drain_timeout = drain_timeout
        self.slots = [_Slot(s.name, s.index) for s in topology.stages]
        self.stop_requested = False
        self.halt_reason: str | None = None
        self.events: list[str] = []
        self.final: dict = {}

    # -- process management -----------------------------------------------------------------
    def _say(self, msg: str) -> None:
        self.events.append(msg)
        print(("\r\033[K" if self.live else "") + f"bot4: {msg}", file=self.out, flush=True)

    def _start(self, slot: _Slot) -> None:
        spec = self.t.stage(slot.name)
        p = _CTX.Process(
            target=_stage_entry, args=(self.t, slot.name), name=f"bot4-{slot.name}", daemon=False
        )
        p.start()
        slot.proc = p
        blk = self.cb.stage(slot.index)
        blk[C.S_PID] = p.pid
        blk[C.S_CORE] = spec.core
        blk[C.S_RESTARTS] = slot.restarts
        blk[C.S_STARTED_NS] = time.monotonic_ns()

    def _kill_and_reap(self, slot: _Slot) -> None:
        p = slot.proc
        if p is None:
            return
        if p.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        p.join()  # reaped: its pid can no longer be a live owner of a ring side

    def _schedule_restart(self, slot: _Slot, reason: str) -> None:
        self._kill_and_reap(slot)
        now = time.monotonic()
        slot.restart_times = [t for t in slot.restart_times if now - t < self.restart_window]
        if len(slot.restart_times) >= self.max_restarts:
            self.halt_reason = (
                f"stage {slot.name} failed {len(slot.restart_times) + 1} times within "
                f"{self.restart_window:g} s (last: {reason}); halting the pipeline"
            )
            return
        backoff = min(self.max_backoff, 0.1 * (2 ** len(slot.restart_times)))
        slot.restart_times.append(now)
        slot.restarts += 1
        slot.restart_at = now + backoff
        self._say(f"stage {slot.name} {reason}; restart {slot.restarts} in {backoff:.1f} s")

    def _check(self, slot: _Slot, draining: bool) -> None:
        if slot.finished:
            return
        if slot.restart_at is not None:
            if time.monotonic() >= slot.restart_at:
                slot.restart_at = None
                self._start(slot)
            return
        p = slot.proc
        blk = self.cb.stage(slot.index)
        state = int(blk[C.S_STATE])
        if p.exitcode is not None:
            if p.exitcode == 0 and state == C.STAGE_STOPPED:
                slot.finished = True
                return
            how = (
                f"exited with code {p.exitcode}"
                if p.exitcode >= 0
                else f"was killed by signal {-p.exitcode}"
            )
            self._schedule_restart(slot, how)
            return
        spec = self.t.stage(slot.name)
        beat = int(blk[C.S_HEARTBEAT_NS])
        started = int(blk[C.S_STARTED_NS])
        if state in (C.STAGE_RUNNING, C.STAGE_DRAINING) and beat >= started:
            age = (time.monotonic_ns() - beat) / 1e9
            if age > spec.heartbeat_timeout:
                self._schedule_restart(
                    slot,
                    f"stalled (no heartbeat for {age:.1f} s > {spec.heartbeat_timeout:g} s), killed",
                )

    # -- live line --------------------------------------------------------------------------
    def _live_line(self, dt: float) -> str:
        parts = []
        for slot in self.slots:
            blk = self.cb.stage(slot.index)
            n = int(blk[C.S_RECORDS_IN]) + (
                int(blk[C.S_RECORDS_OUT])
                if self.t.stage(slot.name).kind in ("synthetic-md", "test-source")
                else 0
            )
            rate = max(0, n - slot.last_records) / dt if dt > 0 else 0
            slot.last_records = n
            parts.append(f"{slot.name} {rate / 1000:,.1f}k/s")
        rings = instance_ring_snapshots(self.t.instance)
        fullest = max(rings, key=lambda r: r.depth / r.capacity, default=None)
        ring = (
            f"fullest {fullest.name.rsplit('.', 1)[-1]} {fullest.depth}/{fullest.capacity}"
            if fullest
            else ""
        )
        restarts = sum(s.restarts for s in self.slots)
        return " | ".join(parts) + f" | {ring} | restarts {restarts}"

    # -- main -------------------------------------------------------------------------------
    def run(self) -> int:
        create_segments(self.t)
        self.cb = ControlBlock(self.t.instance)
        self.cb.words[C.W_SUPERVISOR_PID] = os.getpid()
        self.cb.words[C.W_PIPE_STATE] = C.PIPE_STARTING
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        code = 0
        try:
            for slot in self.slots:
                self._start(slot)
            if not self._wait_running():
                code = 2
            else:
                self.cb.words[C.W_PIPE_STATE] = C.PIPE_RUNNING
                self._say(
                    f"pipeline {self.t.instance} running: {len(self.slots)} stages, {len(self.t.rings)} rings"
                )
                self._supervise()
                if self.halt_reason:
                    code = 2
            if self.halt_reason:
                self._say(f"error: {self.halt_reason}")
                self.cb.words[C.W_PIPE_STATE] = C.PIPE_STOPPED
                for slot in self.slots:
                    self._kill_and_reap(slot)
            else:
                self._drain()
            self.final = self._final_figures()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            for slot in self.slots:
                self._kill_and_reap(slot)
            self.cb.close()
            if not self.keep_shm:
                destroy_segments(self.t.instance)
        return code

    def _on_signal(self, signum, frame) -> None:
        self.stop_requested = True

    def _wait_running(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.stop_requested:
                return True
            for slot in self.slots:
                self._check(slot, False)
            if self.halt_reason:
                return False
            states = [int(self.cb.stage(s.index)[C.S_STATE]) for s in self.slots]
            if all(st in (C.STAGE_RUNNING, C.STAGE_STOPPED) for st in states):
                return True
            time.sleep(0.02)
        waiting = [
            s.name for s in self.slots if int(self.cb.stage(s.index)[C.S_STATE]) != C.STAGE_RUNNING
        ]
        self.halt_reason = (
            f"stages {waiting} did not report running within {self.start_timeout:g} s"
        )
        return False

    def _supervise(self) -> None:
        t0 = last = time.monotonic()
        while not self.stop_requested and not self.halt_reason:
            now = time.monotonic()
            if self.duration is not None and now - t0 >= self.duration:
                break
            for slot in self.slots:
                self._check(slot, False)
            if self._sources_finished():
                self._say("market data finished: draining the pipeline")
                break
            if self.live and now - last >= 1.0:
                print("\r\033[K" + self._live_line(now - last), end="", file=self.out, flush=True)
                last = now
            time.sleep(0.02)
        if self.live:
            print(file=self.out)

    def _sources_finished(self) -> bool:
        """Every source stage came to the end of its data and stopped (a recorded file, a
        journal, a synthetic ``count``): nothing more will enter the pipeline."""
        from bot4.stages import KINDS

        src = [s for s in self.slots if KINDS[self.t.stage(s.name).kind].source]
        return bool(src) and all(s.finished for s in src)

    def _drain(self) -> None:
        self.cb.words[C.W_PIPE_STATE] = C.PIPE_DRAINING
        deadline = time.monotonic() + self.drain_timeout
        while time.monotonic() < deadline and not self.halt_reason:
            for slot in self.slots:
                self._check(slot, True)
            if all(s.finished for s in self.slots):
                break
            time.sleep(0.02)
        else:
            if not self.halt_reason:
                stuck = [s.name for s in self.slots if not s.finished]
                self._say(
                    f"error: stages {stuck} did not drain within {self.drain_timeout:g} s; killed"
                )
        self.cb.words[C.W_PIPE_STATE] = C.PIPE_STOPPED

    def _final_figures(self) -> dict:
        stages = {}
        for slot in self.slots:
            blk = self.cb.stage(slot.index)
            stages[slot.name] = {
                "records_in": int(blk[C.S_RECORDS_IN]),
                "records_out": int(blk[C.S_RECORDS_OUT]),
                "restarts": slot.restarts,
                "state": C.STAGE_NAMES.get(int(blk[C.S_STATE]), "?"),
            }
        rings = {
            r.name.rsplit(".", 1)[-1]: r.as_dict() for r in instance_ring_snapshots(self.t.instance)
        }
        return {
            "instance": self.t.instance,
            "session": int(self.cb.words[C.W_SESSION]),
            "stages": stages,
            "rings": rings,
            "events": self.events,
            "halted": self.halt_reason,
        }
