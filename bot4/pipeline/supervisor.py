"""Launcher and supervisor: ``bot4 run``.

Creates the topology's segments, starts one spawned, pinned process per stage, waits
until every stage reports running, then supervises:

* a stage process that exits unexpectedly is restarted after a backoff
  (0.1 s doubling to ``max_backoff``, 5 s); more than ``max_restarts`` restarts of one stage within
  ``restart_window`` seconds halts the pipeline with an error naming the stage;
* a stage whose heartbeat is older than its ``heartbeat_timeout`` is reported, SIGKILLed,
  reaped and restarted — a replacement never attaches while the old process can still
  wake up and write — unless the ring cursors show it blocked on a full output ring
  (backpressure: it waits for its consumer, and is never killed for that);
* liveness from the ring cursors (:mod:`bot4.pipeline.liveness`, every 100 ms): a stage
  whose input has records, whose outputs have room, and whose input position does not move
  for its ``stall_timeout`` is stalled: named with the ring, killed, reaped and restarted
  like a dead stage (it counts towards ``max_restarts``); a pipeline in which no ring
  moves while some hold records and every stage is alive and running (a deadlock through
  full rings) halts. The verdicts go to the control block for ``bot4 stats``;
* SIGINT / SIGTERM (or ``--duration``): the pipeline state goes to ``draining``; sources
  stop; each stage drains its inputs once its upstream stages stopped (topology order)
  and exits; segments are unlinked (kept with ``keep_shm``); exit code 0. Stage processes
  ignore SIGINT from their first instruction (inherited ``SIG_IGN``), so a terminal's
  Ctrl-C, which reaches the whole process group, is the supervisor's alone. A signal
  while the stages are still starting stops them (SIGTERM, then SIGKILL after
  ``STARTUP_STOP_S``) without restarts: nothing has flowed yet (sources hold until every
  stage runs). A second signal stops at once: every stage killed, exit code 130.

Exit codes of :meth:`Supervisor.run`: 0 stopped and drained; 1 the drain did not finish
within ``drain_timeout`` (the stages left were killed); 3 halted (a stage failed or stalled
more than ``max_restarts`` times, the pipeline stalled, or the start failed); 130 a second
interrupt stopped it without draining. (2 is argparse's: a usage error never gets here.)

What it says goes through :mod:`bot4.logs` (text ``bot4: ...``, JSON lines, journald
priorities), each line with its level and an event name: ``stage_restart`` and
``stage_blocked``, ``start_interrupted`` (warning); ``pipeline_halted``, ``drain_timeout``,
``drain_aborted`` (error); ``pipeline_running``, ``sources_finished``, ``pipeline_draining``,
``pipeline_drained`` (info).

Ownership in the control block: the supervisor writes the pipeline state, its pid, the
pipeline's stuck-since time and each stage's pid / core / restarts / started ns and
liveness words; stages write everything else.

Starting, waiting for, stopping and reaping the stage processes is
:mod:`bot4.pipeline.processes` (``StageProcesses``, a base of ``Supervisor``); the restart
policy, the heartbeat and liveness checks, the drain and the live line are here.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

from bot4 import interrupts, logs
from bot4.pipeline import corecheck
from bot4.pipeline.liveness import CursorReader, ProgressWatch, Verdict
from bot4.pipeline.processes import StageProcesses, _Slot
from bot4.pipeline.segments import create_segments, destroy_segments
from bot4.pipeline.zygote import Zygote
from bot4.pipeline.zygote import take as take_zygote
from bot4.records.errors import EXIT_INPUT_REFUSED, Code
from bot4.shm import control as C
from bot4.shm.control import ControlBlock
from bot4.shm.owners import self_start
from bot4.shm.stats import instance_ring_snapshots

LOOK_EVERY_S = 0.1  # ring cursors are read this often for the liveness verdicts
EXIT_DRAIN_FAILED, EXIT_HALTED, EXIT_FORCED = 1, 3, 130
_LOG = logging.getLogger("bot4.supervisor")


class Supervisor(StageProcesses):
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
        ignore_stops_after: bool = False,
        cores: set[int] | None = None,
    ) -> None:
        self.t = topology
        # where this process runs once the kernels are warm (bot4 run passes the cores off
        # the tick-to-order path, bot4.cli_pipeline.service_cores): its 50 Hz liveness
        # rounds (~0.2 ms of Python each) otherwise land on the hot group's core
        self.cores = cores
        # a command that ends when run() returns ignores SIGINT/SIGTERM from the end of
        # run() on: a stop request that races the pipeline's own end (systemd's stop as
        # market data finishes) then changes nothing, instead of killing the process
        # mid-teardown, or during the interpreter's finalization (which puts Python-level
        # handlers back to the default action), and losing the run's exit code
        self.ignore_stops_after = ignore_stops_after
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
        self.force_stop = False
        self.signals = 0
        self.halt_reason: str | None = None
        self.cursors: CursorReader | None = None
        self.watch: ProgressWatch | None = None
        self.verdicts: dict[str, Verdict] = {}
        self._next_look = 0.0
        self.events: list[str] = []
        self.log_cfg = logs.resolve(topology=topology)  # the stages resolve the same way
        self._fmt = logs.formatter(self.log_cfg, "supervisor", stream=self.out, tool=True)
        self.final: dict = {}
        self.zygote: Zygote | None = None

    # -- process management -----------------------------------------------------------------
    def _say(self, msg: str, level: int = logging.INFO, event: str | None = None, **fields) -> None:
        """One line of the supervisor's log on ``out`` (bot4.logs: ``bot4: ...`` text or a
        JSON line, the journald priority under systemd); kept in ``events`` whatever the
        configured level."""
        self.events.append(msg)
        if level < self.log_cfg.levelno:
            return
        extra = {"event": event, "fields": fields}
        line = self._fmt.format(
            _LOG.makeRecord(_LOG.name, level, "", 0, msg, (), None, extra=extra)
        )
        print(("\r\033[K" if self.live else "") + line, file=self.out, flush=True)

    def _schedule_restart(self, slot: _Slot, reason: str) -> None:
        """Kill and reap ``slot``'s process, then restart it (with its whole group) after
        a backoff, or halt the pipeline when it failed too often."""
        self._kill_and_reap(slot)
        g = self.t.group_of(slot.name)
        what = f"stage {slot.name}" if g is None else f"group {g.name} (member {slot.name})"
        now = time.monotonic()
        slot.restart_times = [t for t in slot.restart_times if now - t < self.restart_window]
        if len(slot.restart_times) >= self.max_restarts:
            self.halt_reason = (
                f"{what} failed {len(slot.restart_times) + 1} times within "
                f"{self.restart_window:g} s (last: {reason}); halting the pipeline"
            )
            return
        backoff = min(self.max_backoff, 0.1 * (2 ** len(slot.restart_times)))
        slot.restart_times.append(now)
        for m in self._members(slot):
            m.restarts += 1
            m.restart_at = now + backoff
        self._say(
            f"{what} {reason}; restart {slot.restarts} in {backoff:.1f} s",
            logging.WARNING,
            "stage_restart",
            stage=slot.name,
            restart=slot.restarts,
            backoff_s=round(backoff, 3),
        )

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
            if p.exitcode == EXIT_INPUT_REFUSED:
                # its input cannot be used: a restart would read the same file (the
                # stage's own error line says why); the pipeline stops, said once
                self._kill_and_reap(slot)
                self.halt_reason = (
                    f"stage {slot.name} cannot use its input (exit {EXIT_INPUT_REFUSED}, "
                    "its error line above says why): not restarted; halting the pipeline"
                )
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
        if not draining and not (state == C.STAGE_RUNNING and beat >= started):
            # restarted but not running yet: recovering from its journal can take seconds,
            # hanging for ever must not (the restart policy counts it). The first start is
            # bounded by the pipeline's own start timeout (``_wait_running``).
            waited = (time.monotonic_ns() - started) / 1e9
            if (
                slot.restarts > 0
                and state not in (C.STAGE_DRAINING, C.STAGE_STOPPED)
                and waited > spec.start_timeout
            ):
                self._schedule_restart(
                    slot,
                    f"did not report running within {spec.start_timeout:g} s of its start "
                    f"(start_timeout); killed",
                )
            return
        # a draining stage runs its shutdown policy (persistence waits for its loader to
        # catch up, without beating): the drain timeout bounds it, not the heartbeat
        if state == C.STAGE_RUNNING and not draining and beat >= started:
            age = (time.monotonic_ns() - beat) / 1e9
            if age <= spec.heartbeat_timeout:
                slot.hb_blocked_on = ""
                return
            v = self.verdicts.get(slot.name)
            if v is not None and v.state == C.LIVE_BLOCKED:
                # waiting for room on a full output ring is backpressure, not a stall: its
                # consumer (slow, stopped, restarting) is the one to watch
                if slot.hb_blocked_on != v.ring:
                    slot.hb_blocked_on = v.ring
                    self._say(
                        f"stage {slot.name}: no heartbeat for {age:.1f} s while its output ring "
                        f"'{v.ring}' is full ({v.records} records): blocked, not killed",
                        logging.WARNING,
                        "stage_blocked",
                        stage=slot.name,
                        ring=v.ring,
                    )
                return
            if age > spec.heartbeat_timeout:
                self._schedule_restart(
                    slot,
                    f"stalled (no heartbeat for {age:.1f} s > {spec.heartbeat_timeout:g} s), killed",
                )

    # -- live line --------------------------------------------------------------------------
    def _live_line(self, dt: float) -> str:
        from bot4.stages import KINDS

        parts = []
        for slot in self.slots:
            blk = self.cb.stage(slot.index)
            # a source has no input: its rate is what it publishes (the stage kind says so)
            n = int(blk[C.S_RECORDS_IN]) + (
                int(blk[C.S_RECORDS_OUT]) if KINDS[self.t.stage(slot.name).kind].source else 0
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
        # the stages' zygote imports what they import while this process checks the cache
        # and creates the segments (bot4.pipeline.zygote)
        self.zygote = take_zygote()
        try:
            self._warm()  # on every core this process may use: warm compiles in parallel
            allowed = os.sched_getaffinity(0)
            if self.cores and self.cores != allowed:
                corecheck.pin_process(0, self.cores)  # the stages pin themselves
                if self.zygote is not None:
                    self.zygote.pin(self.cores)
            try:
                return self._run()
            finally:
                if self.cores and self.cores != allowed:
                    corecheck.pin_process(0, allowed)
        finally:
            if self.zygote is not None:
                self.zygote.close()

    def _run(self) -> int:
        create_segments(self.t, say=self._say)  # refuses a live instance, replaces a dead one's
        self.cb = ControlBlock(self.t.instance)
        self.cb.words[C.W_SUPERVISOR_START] = self_start()  # (pid, start): pids are reused
        self.cb.words[C.W_SUPERVISOR_PID] = os.getpid()
        self.cb.words[C.W_PIPE_STATE] = C.PIPE_STARTING
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        if interrupts.pending():
            # a Ctrl-C before this handler was raised as KeyboardInterrupt where something
            # swallowed it (a weakref callback, seen): it still stops the run
            self._on_signal(signal.SIGINT, None)
        code = 0
        try:
            self.cursors = CursorReader(self.t.instance, [r.name for r in self.t.rings])
            self.watch = ProgressWatch.for_topology(self.t)
            for slot in self.slots:
                # a group's process starts once, for all members; none after a stop request
                if slot.proc is None and not self.stop_requested:
                    self._start(slot)
            started = self._wait_running()
            if started == "stopped":
                self._stop_starting()
                code = EXIT_FORCED if self.force_stop else 0
            elif started == "running":
                self.cb.words[C.W_PIPE_STATE] = C.PIPE_RUNNING
                self._say(
                    f"pipeline {self.t.instance} running: {len(self.slots)} stages, {len(self.t.rings)} rings",
                    event="pipeline_running",
                )
                self._supervise()
            if self.halt_reason:
                code = EXIT_HALTED
                self._say(self.halt_reason, logging.ERROR, "pipeline_halted")
                self.cb.words[C.W_PIPE_STATE] = C.PIPE_STOPPED
                for slot in self.slots:
                    self._kill_and_reap(slot)
            elif started == "running":
                drained = self._drain()
                if self.halt_reason:
                    code = EXIT_HALTED
                    self._say(self.halt_reason, logging.ERROR, "pipeline_halted")
                elif self.force_stop:
                    code = EXIT_FORCED
                elif not drained:
                    code = EXIT_DRAIN_FAILED
                elif behind := self._database_behind():
                    code = EXIT_DRAIN_FAILED
                    self._say(
                        f"drained, but stage {behind} left the database behind the journal "
                        "(its error line above says how far): the rest loads at the next start",
                        logging.ERROR,
                        "database_behind",
                        stage=behind,
                    )
            self.final = self._final_figures()
            self.final["exit_code"] = code
        finally:
            if self.ignore_stops_after:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            else:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, old_term)
            for slot in self.slots:
                self._kill_and_reap(slot)
            if self.cursors is not None:
                self.cursors.close()
            self.cb.close()
            if not self.keep_shm:
                destroy_segments(self.t.instance)
        return code

    def _warm(self) -> None:
        """Compile what the stages would otherwise each compile at once on every core
        (and past ``start_timeout``) before any starts, in parallel with a progress line
        (``bot4.pipeline.warm.ensure_warm``); a few ms when the cache has everything."""
        from bot4.pipeline.warm import ensure_warm

        ensure_warm(
            self.t, stream=self.out, live=self.live, say=lambda m: self._say(m, event="warm")
        )

    def _on_signal(self, signum, frame) -> None:
        """The first SIGINT/SIGTERM asks for a drain (or a stop while starting); a second
        one stops at once."""
        self.signals += 1
        self.stop_requested = True
        if self.signals > 1:
            self.force_stop = True

    def _supervise(self) -> None:
        t0 = last = time.monotonic()
        # who else runs on the cores one process has to itself (bot4.pipeline.corecheck):
        # sampled now and WINDOW_S later, one warning per shared core
        shared = corecheck.sample() if corecheck.exclusive_cores(self.t) else None
        while not self.stop_requested and not self.halt_reason:
            now = time.monotonic()
            if self.duration is not None and now - t0 >= self.duration:
                break
            if shared is not None and now - t0 >= corecheck.WINDOW_S:
                for line in corecheck.report(self.t, shared, corecheck.sample(), os.getpid()):
                    self._say(line, logging.WARNING, "core_shared")
                shared = None
            for slot in self.slots:
                self._check(slot, False)
            self._look(now)
            if self._sources_finished():
                self._say("market data finished: draining the pipeline", event="sources_finished")
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

    def _drain(self) -> bool:
        """Drain once: True when every stage stopped by itself within ``drain_timeout``
        (stalled stages are restarted meanwhile, as while running); False when the time
        ran out or a second signal came (the stages left are killed by the caller)."""
        self.cb.words[C.W_PIPE_STATE] = C.PIPE_DRAINING
        t0 = time.monotonic()
        deadline = t0 + self.drain_timeout
        drained = False
        self._say(
            f"draining (at most {self.drain_timeout:g} s)",
            event="pipeline_draining",
            timeout_s=self.drain_timeout,
        )
        while not self.halt_reason:
            if all(s.finished for s in self.slots):
                drained = True
                self._say(
                    f"drained in {time.monotonic() - t0:.1f} s",
                    logging.INFO,
                    "pipeline_drained",
                    drain_s=round(time.monotonic() - t0, 3),
                )
                break
            if self.force_stop:
                stuck = [s.name for s in self.slots if not s.finished]
                self._say(
                    f"second interrupt: stages {stuck} killed without draining",
                    logging.ERROR,
                    "drain_aborted",
                    stages=stuck,
                )
                break
            if time.monotonic() >= deadline:
                stuck = [s.name for s in self.slots if not s.finished]
                self._say(
                    f"stages {stuck} did not drain within {self.drain_timeout:g} s; killed",
                    logging.ERROR,
                    "drain_timeout",
                    stages=stuck,
                )
                break
            for slot in self.slots:
                self._check(slot, True)
            self._look(time.monotonic())
            time.sleep(0.02)
        self.cb.words[C.W_PIPE_STATE] = C.PIPE_STOPPED
        return drained

    # -- liveness from ring cursors ----------------------------------------------------------
    def _running_and_beating(self, slot: _Slot, now_ns: int) -> bool:
        p = slot.proc
        if slot.finished or slot.restart_at is not None or p is None or p.exitcode is not None:
            return False
        blk = self.cb.stage(slot.index)
        if int(blk[C.S_STATE]) != C.STAGE_RUNNING:
            return False
        beat, started = int(blk[C.S_HEARTBEAT_NS]), int(blk[C.S_STARTED_NS])
        spec = self.t.stage(slot.name)
        return beat >= started and (now_ns - beat) / 1e9 <= spec.heartbeat_timeout

    def _look(self, now: float) -> None:
        """Read every ring's cursors (every ``LOOK_EVERY_S``), publish the verdicts, and act
        on a stage stuck longer than its ``stall_timeout`` (restart policy) or a pipeline
        in which nothing moves while rings hold records (halt)."""
        if self.cursors is None or self.watch is None or now < self._next_look:
            return
        self._next_look = now + LOOK_EVERY_S
        now_ns = time.monotonic_ns()
        by_name = {s.name: s for s in self.slots}
        fresh = {s.name: self._running_and_beating(s, now_ns) for s in self.slots}
        ready = all(fresh[s.name] for s in self.slots if not s.finished)
        watched = [r.name for r in self.t.rings if not by_name[r.consumer].finished]
        self.verdicts, since, held = self.watch.observe(self.cursors.read(), now, ready, watched)
        self._publish_liveness(since)
        for slot in self.slots:
            if not fresh[slot.name]:
                # starting (a restart recovering from its journal can take seconds), dead,
                # restarting, draining or not beating: its stall clock starts once it runs
                self.watch.reset(slot.name)
        for slot in self.slots:
            v = self.verdicts[slot.name]
            if self.halt_reason or not fresh[slot.name] or v.state != C.LIVE_STUCK:
                continue
            spec = self.t.stage(slot.name)
            stuck = v.stuck_for(now)
            if stuck > spec.stall_timeout:
                self._schedule_restart(
                    slot,
                    f"stalled: input ring '{v.ring}' has {v.records} records, outputs have room, "
                    f"no progress for {stuck:.1f} s; killed",
                )
                self.watch.reset(slot.name)
        limit = max(s.stall_timeout for s in self.t.stages)
        if since is not None and not self.halt_reason and now - since > limit:
            rings = ", ".join(f"'{r}' ({n} records)" for r, n in held[:4])
            self.halt_reason = (
                f"pipeline stalled: no ring moved for {now - since:.1f} s while {rings} "
                f"{'holds' if len(held) == 1 else 'hold'} records and every stage is alive "
                f"(waiting on each other's full rings); halting"
            )

    def _publish_liveness(self, since: float | None) -> None:
        """The verdicts into the supervisor's control-block words (``bot4 stats``)."""
        for slot in self.slots:
            v = self.verdicts[slot.name]
            blk = self.cb.stage(slot.index)
            blk[C.S_LIVENESS] = v.state
            blk[C.S_STUCK_SINCE_NS] = int(v.since * 1e9) if v.since is not None else 0
            blk[C.S_LIVE_RECORDS] = v.records
            if v.ring != slot.live_ring:
                C.write_live_ring(blk, v.ring)
                slot.live_ring = v.ring
        self.cb.words[C.W_PIPE_STUCK_SINCE_NS] = int(since * 1e9) if since is not None else 0

    def _database_behind(self) -> str | None:
        """The stage whose database loader had not caught up with its journal when it
        stopped (its ``DB_BEHIND_AT_EXIT`` alarm, raised last at its drain), if any."""
        for slot in self.slots:
            if int(self.cb.stage(slot.index)[C.S_ALARM_CODE]) == Code.DB_BEHIND_AT_EXIT:
                return slot.name
        return None

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
            "liveness": {
                name: {
                    "state": C.LIVE_NAMES[v.state],
                    "ring": v.ring,
                    "records": v.records,
                }
                for name, v in self.verdicts.items()
            },
        }
