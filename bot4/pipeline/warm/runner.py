"""Running warm jobs: spawned worker processes that die with their parent
(PR_SET_PDEATHSIG), each reporting on a queue which kernel it compiles; the parent
schedules the jobs (critical path first, as their ``after`` allow) and draws the progress
line (:class:`Progress`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time

from bot4.interrupts import children_block_sigint, ignore_in_child
from bot4.pipeline.warm import recipes
from bot4.pipeline.warm.catalogue import Job, _priority
from bot4.pipeline.warm.manifest import _write_manifest


def recipe(fn: str):
    """The function a job's ``fn`` names: one of :mod:`bot4.pipeline.warm.recipes`, or
    ``module:function`` of a layer above that made the job (the tools' replay jobs:
    ``bot4.warm.recipes``), imported where it runs."""
    if ":" not in fn:
        return getattr(recipes, fn)
    import importlib

    module, name = fn.split(":")
    return getattr(importlib.import_module(module), name)


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` ends, whatever ends it (a SIGTERM or SIGKILL
    to ``bot4 warm`` runs no ``finally``: the workers would compile on, then wait for
    tasks forever). Linux's PR_SET_PDEATHSIG; elsewhere nothing."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before the call
        os._exit(1)


def _quiet_gc() -> None:
    """Fewer cyclic garbage collections while compiling (issue 17). numba's IR and
    typing objects are cyclic and numerous, so Python's default thresholds ran ~30 full
    collections over the orders and hot cycle jobs, each scanning every object the
    imports made: 7.5 of 71 CPU-seconds (``gc.callbacks``, one process). Frozen imports
    and higher thresholds: 2.5 s, the jobs 0.95x the CPU, peak RSS 524 -> 572 MB; the
    worker collects once after each job instead. Compile processes only: the stage
    processes keep Python's defaults."""
    gc.freeze()  # what the imports made: never scanned again
    gc.set_threshold(10_000, 50, 1_000)


def _worker(wid: int, tasks, events, parent: int = 0) -> None:
    """A spawned worker: run jobs from ``tasks`` until None; report on ``events``."""
    ignore_in_child()  # Ctrl-C is the parent's (it starts us with SIGINT blocked)
    import logging
    import warnings

    if parent:
        _die_with_parent(parent)

    from numba.core import event

    from bot4 import nbcache

    devnull = os.open(os.devnull, os.O_WRONLY)  # stage logs and numba warnings would
    os.dup2(devnull, 1)  # tear the progress line: a failure comes back on `events`
    os.dup2(devnull, 2)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    depth = [0]
    compiled = [0]  # outermost compiles (cache misses) during the current job
    trace = _Trace(wid)

    class _Compiling(event.Listener):
        def on_start(self, ev) -> None:
            if depth[0] == 0:
                compiled[0] += 1
                events.put(("kernel", wid, nbcache.compiled_name(ev.data["dispatcher"])))
            depth[0] += 1
            trace.start(ev)

        def on_end(self, ev) -> None:
            depth[0] -= 1
            trace.end(ev)

    event.register("numba:compile", _Compiling())
    _quiet_gc()
    while True:
        job = tasks.get()
        if job is None:
            return
        events.put(("start", wid, job.name))
        trace.job = job.name
        t0 = time.monotonic()
        compiled[0] = 0
        try:
            n = recipe(job.fn)(*job.args)
            _write_manifest(job)
            events.put(("done", wid, job.name, n, time.monotonic() - t0, None, compiled[0]))
        except BaseException as exc:  # reported by the parent, one line
            text = str(exc).strip()
            msg = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
            events.put(("done", wid, job.name, 0, time.monotonic() - t0, msg, compiled[0]))
        gc.collect()  # the job's compile garbage, once, instead of during it


class _Trace:
    """Each compile's exclusive seconds (wall and this process's CPU, its callees'
    compiles subtracted), one JSON line per compile in ``$BOT4_WARM_PROFILE/worker-N.jsonl``
    when that variable names a directory (``perf/bench_warm.py --profile``); otherwise
    nothing is measured."""

    def __init__(self, wid: int) -> None:
        where = os.environ.get("BOT4_WARM_PROFILE")
        self.out = None
        self.job = ""
        self.stack: list[list] = []
        if where:
            with contextlib.suppress(OSError):
                os.makedirs(where, exist_ok=True)
                self.out = open(os.path.join(where, f"worker-{wid}-{os.getpid()}.jsonl"), "a")  # noqa: SIM115

    def start(self, ev) -> None:
        if self.out is not None:
            self.stack.append([time.perf_counter(), time.process_time(), 0.0, 0.0])

    def end(self, ev) -> None:
        if self.out is None or not self.stack:
            return
        import json

        from bot4 import nbcache

        t0, c0, child_t, child_c = self.stack.pop()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if self.stack:
            self.stack[-1][2] += dt
            self.stack[-1][3] += dc
        row = {
            "job": self.job,
            "kernel": nbcache.compiled_name(ev.data["dispatcher"]),
            "args": str(ev.data.get("args"))[:400],
            "wall_s": round(dt - child_t, 3),
            "cpu_s": round(dc - child_c, 3),
            "depth": len(self.stack),
        }
        self.out.write(json.dumps(row) + "\n")
        self.out.flush()


class WarmReport:
    """What :func:`run_jobs` did: entry points run, seconds, jobs done and failed."""

    def __init__(self) -> None:
        self.kernels = 0  # entry points run
        self.compiled = 0  # of which compiled (the others loaded from the cache)
        self.seconds = 0.0
        self.done: dict[str, float] = {}  # job name -> seconds in its worker
        self.failed: dict[str, str] = {}  # job name -> one-line reason


class Progress:
    """The progress display on ``stream``: one line redrawn in place on a terminal,
    plain lines (a job done, with what still compiles) otherwise, through ``say``."""

    def __init__(self, total: int, stream=None, live: bool | None = None, say=None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.say = say or (lambda msg: print(f"bot4: warm: {msg}", file=self.stream, flush=True))
        self.total = total
        self.done = 0
        self.t0 = time.monotonic()
        self.running: dict[int, list[str]] = {}  # worker -> [job, kernel]
        self._last = 0.0

    def _now(self) -> str:
        left = self.total - self.done
        return f"{self.done}/{self.total} done, {left} left, {time.monotonic() - self.t0:.0f} s"

    def _what(self) -> str:
        return "; ".join(
            f"{job}: {kernel.rpartition('.')[2]}" if kernel else job
            for job, kernel in self.running.values()
        )

    def event(self, ev: tuple) -> None:
        what, wid = ev[0], ev[1]
        if what == "start":
            self.running[wid] = [ev[2], ""]
        elif what == "kernel" and wid in self.running:
            self.running[wid][1] = ev[2]
        elif what == "done":
            self.running.pop(wid, None)
            self.done += 1
            _, _, name, _, secs, err, _ = ev
            if self.live:
                self._clear()
            if err is not None:
                self.say(f"{name}: failed: {err}")
            elif not self.live:
                running = ", ".join(j for j, _ in self.running.values()) or "-"
                self.say(f"[{self._now()}] {name}: {secs:.1f} s (compiling: {running})")
        self.draw()

    def draw(self, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        width = 200
        with contextlib.suppress(OSError, ValueError, AttributeError):
            width = os.get_terminal_size(self.stream.fileno()).columns or width  # 0: unknown
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        line = f"bot4: warm [{bar}] {self._now()} | {self._what()}"
        self.stream.write("\r\033[K" + line[: max(10, width - 1)])
        self.stream.flush()

    def _clear(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self._clear()


def default_jobs() -> int:
    """Worker processes by default: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_jobs(
    jobs: list[Job], workers: int | None = None, progress: Progress | None = None
) -> WarmReport:
    """Run ``jobs`` on ``workers`` spawned processes, in list order as their ``after``
    allow; every worker is ended (by pid) before this returns, also on KeyboardInterrupt.
    A job that raises is reported in ``failed``; a worker that dies fails its job and the
    others carry on."""
    import multiprocessing as mp
    import queue

    rep = WarmReport()
    t0 = time.monotonic()
    if not jobs:
        return rep
    workers = max(1, min(workers or default_jobs(), len(jobs)))
    ctx = mp.get_context("spawn")
    tasks, events = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(w, tasks, events, os.getpid()), name=f"bot4-warm-{w}")
        for w in range(workers)
    ]
    pending = sorted(jobs, key=lambda j: -_priority(j, jobs))
    names = {j.name for j in jobs}
    finished: set[str] = set()
    assigned: dict[int, str] = {}  # worker -> job it started
    idle = [workers]  # workers waiting for a job: one job each, so the order holds

    def dispatch() -> None:
        for j in list(pending):
            if idle[0] and all(a in finished or a not in names for a in j.after):
                tasks.put(j)
                pending.remove(j)
                idle[0] -= 1

    try:
        # the workers start with SIGINT blocked and ignore it before anything else
        # (bot4.interrupts): a Ctrl-C to the process group is this process's to
        # handle (it ends them by pid below), never a KeyboardInterrupt traceback on the
        # shared stderr from a worker still importing (seen under load)
        with children_block_sigint():
            for p in procs:
                p.start()
        dispatch()
        while len(finished) < len(jobs):
            try:
                ev = events.get(timeout=0.25)
            except queue.Empty:
                ev = None
            if ev is not None:
                if ev[0] == "start":
                    assigned[ev[1]] = ev[2]
                elif ev[0] == "done":
                    assigned.pop(ev[1], None)
                    idle[0] += 1
                    finished.add(ev[2])
                    rep.kernels += ev[3]
                    rep.compiled += ev[6]
                    if ev[5] is None:
                        rep.done[ev[2]] = ev[4]
                    else:
                        rep.failed[ev[2]] = ev[5]
                    dispatch()
                if progress is not None:
                    progress.event(ev)
                continue
            if progress is not None:
                progress.draw()
            for w, p in enumerate(procs):
                if p.exitcode is not None and w in assigned:  # died inside a job
                    name = assigned.pop(w)
                    finished.add(name)
                    reason = f"its worker process died (exit code {p.exitcode})"
                    rep.failed[name] = reason
                    if progress is not None:
                        progress.event(("done", w, name, 0, 0.0, reason, 0))
                    dispatch()
            if not any(p.is_alive() for p in procs):
                for j in pending + [j for j in jobs if j.name not in finished]:
                    if j.name not in finished:
                        finished.add(j.name)
                        rep.failed[j.name] = "not run: no worker process left"
                break
        for _ in procs:
            tasks.put(None)
        for p in procs:
            p.join(10)
    finally:
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, 9)
                p.join(5)
        tasks.close()
        events.close()
        if progress is not None:
            progress.close()
    rep.seconds = time.monotonic() - t0
    return rep
