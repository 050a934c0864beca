"""Compile numba kernels ahead of the stages, in parallel, into numba's on-disk cache.

Stage processes start with the spawn method and would otherwise all compile the same
kernels at the same moment (seconds to minutes each, on every core). ``bot4 warm`` (and
``bot4 run`` itself, for a topology whose kernels are not cached yet: see
:func:`ensure_warm`) runs each kernel once on small inputs of every record type it handles.

Work is cut into **jobs**, one per distinct stage (kind and ring types) of the topology,
one for the ring operations of its ring types, and a few for what only tools use (the
replay engine, the LOBSTER readers, the latency histogram): :func:`jobs_for` (a topology)
and :func:`all_jobs` (every kind and record type, for CI and tools). A stage kind that
is slow to compile and has several inputs (the venue) is split into one job per input,
after a job running its ``setup`` alone, so its two kernel trees compile on two cores.

:func:`run_jobs` runs them longest first on ``jobs`` spawned worker processes (default:
the CPUs this process may use). numba's compiler holds a process-wide lock, so threads
would not help; processes share the cache through files, and concurrent writers of one
function's index are serialised by ``bot4.nbcache`` (numba's own update of the index is
not safe across processes). Each worker says on a queue which kernel it is compiling, and
the parent draws a progress line on stderr (what compiles, how many jobs are left,
elapsed time), redrawn in place on a terminal and as plain lines otherwise.

A job that completed writes a **manifest** under the cache root,
``.warm/<job id>.json``: the key directory of every kernel module its process looked a
kernel up in (this job's and, conservatively, earlier jobs' of the same worker).
The job is warm while every one of those still exists under its current key
(``bot4.nbcache``: source, imports, toolchain, CPU), so :func:`ensure_warm` knows without
starting a process that nothing needs compiling (a few ms), and an edit re-runs exactly
the jobs whose kernels' sources changed. The job id covers the job and this file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from bot4.records import RECORD_TYPES

#: record types that travel on rings (TXN_DECISION lives only in the 2PC decision log)
RING_TYPES = {k: v for k, v in RECORD_TYPES.items() if k != "TXN_DECISION"}

#: rough cold-compile seconds per stage kind (this 2-core VM, lightly loaded), for
#: longest-first scheduling only (measured with perf/bench_warm.py: orders 58 s, hot path
#: cycle 43 s, risk 27 s, the venue 51 s in its three jobs since its kernels compile once
#: per signature, no longer once per literal argument value: docs/compile.md)
KIND_WEIGHT = {"venue": 50.0, "orders": 60.0, "risk": 30.0, "md_gateway": 8.0}
#: kinds whose inputs compile as separate jobs after one running the setup alone (their
#: kernel trees per input are independent and about as long as a whole other stage)
SPLIT_KINDS = frozenset({"venue"})
MANIFEST_DIR = ".warm"


@dataclass(frozen=True)
class Job:
    """One unit of warm work, run in a worker process.

    ``name`` is what the progress line shows; ``fn`` a function of this module called with
    ``args``; ``weight`` the expected cold seconds (longest first); ``after``: names of jobs
    that must be done before this one starts (their kernels then load from the cache).
    """

    name: str
    fn: str
    args: tuple = ()
    weight: float = 1.0
    after: tuple[str, ...] = field(default=(), compare=False)

    @property
    def ident(self) -> str:
        """Stable id of what this job compiles (its manifest's file name)."""
        import hashlib

        h = hashlib.sha256(repr((self.fn, self.args, _own_digest())).encode())
        return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _own_digest() -> str:
    import hashlib

    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --- what to compile ------------------------------------------------------------------------


def _stage_jobs(
    kind: str, ins: tuple[str, ...], outs: tuple[str, ...], params: tuple = ()
) -> list[Job]:
    """The jobs of one stage kind with these input and output record types and these
    kernel-selecting ``params`` (``(key, value)`` pairs, see :func:`_kernel_params`)."""
    label = kind
    if ins or outs:
        label += f" ({','.join(t.lower() for t in ins) or '-'} -> "
        label += f"{','.join(t.lower() for t in outs) or '-'})"
    w = KIND_WEIGHT.get(kind, 2.0)
    if kind not in SPLIT_KINDS or len(ins) < 2:
        return [Job(f"stage {label}", "_job_stage", (kind, ins, outs, None, params), w)]
    first = Job(f"stage {kind} setup", "_job_stage", (kind, ins, outs, (), params), w * 0.05)
    return [first] + [
        Job(
            f"stage {kind} input {k} ({t.lower()})",
            "_job_stage",
            (kind, ins, outs, (k,), params),
            w * 0.5,
            after=(first.name,),
        )
        for k, t in enumerate(ins)
    ]


def jobs_for(topology) -> list[Job]:
    """What the stage processes of ``topology`` run: each distinct stage (kind, input and
    output record types), the ring operations of its ring types, the depth kernels if a
    ring carries BOOK_LEVEL records, the LOBSTER/file readers if a market data stage reads
    recorded data. Longest first."""
    jobs: list[Job] = []
    seen = set()
    for s in topology.stages:
        ins = tuple(r.type for r in topology.inputs_of(s.name))
        outs = tuple(r.type for r in topology.outputs_of(s.name))
        if s.kind in ("persistence", "count-sink"):  # persistence runs count-sink's kernels
            key = ("count-sink", ins, ())
        else:
            key = (s.kind, ins, outs, _kernel_params(s.kind, s.params))
        if key not in seen:
            seen.add(key)
            jobs += _stage_jobs(*key)
        if s.kind == "persistence" and "operator log" not in seen:
            seen.add("operator log")
            jobs.append(Job("operator log", "_job_operator_log", (), 1.0))
        recorded = s.kind == "md" and s.params.get("source", "synthetic") != "synthetic"
        if recorded and "marketdata" not in seen:
            seen.add("marketdata")
            jobs.append(Job("market data readers", "_job_marketdata", (), 15.0))
    for g in topology.groups:
        stage_jobs = [j for j in jobs if j.fn == "_job_stage"]
        kinds = [topology.stage(m).kind for m in g.members]
        if "hot path" not in seen and kinds == ["signals", "risk", "orders"]:
            seen.add("hot path")  # bot4.stages.hotloop.HOT_KINDS, wired as the default
            after = tuple(j.name for j in stage_jobs if j.args[0] in kinds)
            jobs.append(Job("hot path group cycle", "_job_hot_path", (), 45.0, after=after))
    types = sorted({r.type for r in topology.rings})
    if types:
        jobs.append(
            Job(
                f"ring operations ({len(types)} types)",
                "_job_rings",
                tuple(types),
                1.0 * len(types),
            )
        )
    if "BOOK_LEVEL" in types:
        jobs.append(Job("depth kernels", "_job_depth", (), 1.0))
    return _longest_first(jobs)


def all_jobs() -> list[Job]:
    """Every kernel bot4 has: every stage kind (relay and count-sink for every record
    type), every ring type's ring operations, the depth and histogram kernels, the
    market data readers, the hot path group's cycle, the default topology's jobs, then
    a short replay through the default topology."""
    from bot4.stages import KINDS

    jobs: list[Job] = []
    for kind in KINDS:
        if kind == "persistence":
            continue  # count-sink's kernels plus a journal file: nothing else to compile
        ins, outs = _default_types(kind)
        if kind == "relay":
            jobs += [j for t in RING_TYPES for j in _stage_jobs(kind, (t,), (t,))]
        else:
            jobs += _stage_jobs(kind, ins, outs, _kernel_params(kind, {}))
    jobs += [
        Job(f"ring operations ({len(RING_TYPES)} types)", "_job_rings", tuple(RING_TYPES), 9.0),
        Job("market data readers", "_job_marketdata", (), 15.0),
        Job("depth kernels", "_job_depth", (), 1.0),
        Job("latency histogram", "_job_histogram", (), 0.5),
        Job("operator log", "_job_operator_log", (), 1.0),
    ]
    hot = ("signals", "risk", "orders")
    after = tuple(j.name for j in jobs if j.fn == "_job_stage" and j.args[0] in hot)
    jobs.append(Job("hot path group cycle", "_job_hot_path", (), 45.0, after=after))
    # and the default topology's own jobs, so that its first `bot4 run` finds them warm
    from bot4.pipeline.topology import load_topology

    have = {j.ident for j in jobs}
    names = {j.name for j in jobs}
    for j in jobs_for(load_topology(None)):
        if j.ident not in have:
            name = j.name if j.name not in names else f"{j.name} (default topology)"
            after = tuple(a if a not in names else f"{a} (default topology)" for a in j.after)
            jobs.append(Job(name, j.fn, j.args, j.weight, after))
    # the replay's kernels at the other SIMD width a host offers (512-bit vectors where it
    # has AVX-512, else 256): numba's cache keys them apart, and the suite's SIMD-width
    # test replays at both (tests/system/test_replay_simd.py). Independent of the jobs
    # above (its own cache entries), so it starts with them
    jobs.append(Job("replay engine (other SIMD width)", "_job_replay_width", (), 60.0))
    jobs = _longest_first(jobs)
    # the replay runs the default topology's stages in-process: after they are cached
    jobs.append(Job("replay engine", "_job_replay", (), 2.0, after=tuple(j.name for j in jobs)))
    return jobs


def _kernel_params(kind: str, params: dict) -> tuple:
    """The params of a stage that choose which kernels it calls, as ``(key, value)``
    pairs for its warm job (the others stay at their defaults: a warm job must not read
    files or attach segments a param names)."""
    if kind == "risk":
        return (("shared", False),)  # process-local state: no shared segments to attach
    keys = {"venue": ("md_time", "disconnect_after_s")}.get(kind, ())
    return tuple((k, params[k]) for k in keys if k in params)


def _longest_first(jobs: list[Job]) -> list[Job]:
    return sorted(jobs, key=lambda j: -j.weight)


def _priority(job: Job, jobs: list[Job]) -> float:
    """Expected seconds from ``job``'s start to the end of the longest chain of jobs
    waiting for it (critical path first: the venue's setup before a longer lone job)."""
    after = [_priority(j, jobs) for j in jobs if job.name in j.after]
    return job.weight + max(after, default=0.0)


def _default_types(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A kind's input and output record types without a topology (from its arity)."""
    from bot4.stages import KINDS

    cls = KINDS[kind]
    if kind == "count-sink":
        return tuple(RING_TYPES), ()
    in_types = list(cls.input_types or ())
    out_types = list(cls.output_types or ())
    lo_i, hi_i, lo_o, hi_o = cls.arity
    ins = in_types[: max(hi_i, 0)] if hi_i else []
    outs = (out_types * max(lo_o, 1))[: max(lo_o, 1)] if hi_o else []
    return tuple(ins), tuple(outs)


# --- the jobs (run in worker processes; each returns how many entry points it ran) -----


def _job_stage(kind: str, ins: tuple, outs: tuple, only: tuple | None, params: tuple = ()) -> int:
    """Set up stage ``kind`` (with ``params``) on process-local rings of these types, hand
    it a two-record batch on each input (``only``: on these inputs; ``()``: setup alone),
    then what the stage loop calls besides: ``pending``/``emit``, and again after
    ``on_drain``. A venue is set up as in a live topology (watching the orders stage's
    heartbeat: its market data and release kernels are the live ones, not the replay's)
    unless ``disconnect_after_s`` is 0."""
    from bot4.pipeline.topology import RingSpec, StageSpec
    from bot4.stages import KINDS

    if kind == "test-sink":
        from bot4.stages.testing import _sink_kernel

        md = np.zeros(2, RECORD_TYPES["MARKET_DATA"])
        _sink_kernel(md, np.zeros(8, np.uint64), np.zeros(8, np.uint64))
        return 1
    cls = KINDS[kind]
    p = dict(params)
    spec = StageSpec(name="warm", kind=kind, core=0, index=0, params=p)
    rin = [RingSpec(f"i{k}", "a", "warm", t, 8, 2, 0, False) for k, t in enumerate(ins)]
    rout = [RingSpec(f"o{k}", "warm", "b", t, 8, 2, 0, False) for k, t in enumerate(outs)]
    st = cls(spec, rin, rout, "warm")
    st.setup()
    if kind == "venue" and float(p.get("disconnect_after_s", 2.0)) > 0:
        st.heartbeat = np.zeros(1, np.uint64)  # a live venue's; 0: "not started yet"
    views = [np.zeros(8, RECORD_TYPES[t]) for t in outs]
    counts = np.zeros(max(1, len(outs)), np.int64)
    if only == ():
        return 1
    if st.source:
        st.generate(0, 2, views, counts, 1)
        if getattr(st, "stamp_on_publish", False) and all(t == "MARKET_DATA" for t in outs):
            from bot4.stages.publish import warm as warm_publish  # md's live publish call

            warm_publish(len(outs))
    else:
        for k, t in enumerate(ins):
            if only is not None and k not in only:
                continue
            batch = np.zeros(2, RECORD_TYPES[t])
            batch["seq"] = [1, 2]
            st.process(k, batch, views, counts, 1)
    for seq in (3, 5):
        st.pending(0)
        st.emit(views, counts, seq)
        st.on_drain()
    return 1


def _job_rings(*types: str) -> int:
    """Every ring operation a stage loop calls, on a real 8-slot ring of each type."""
    from bot4.shm import Consumer, Producer, Segment, create_ring, segment_name
    from bot4.shm import ring_ops as ops
    from bot4.shm.multipark import announce_park, end_park
    from bot4.shm.ring_layout import WAIT_SPIN_PARK

    n = 0
    inst = f"warm{os.getpid()}"
    for rtype in types:
        dt = RING_TYPES[rtype]
        name = segment_name(inst, rtype.lower().replace("_", "-"))
        Segment.unlink(name)
        create_ring(name, dt, 8, wait=WAIT_SPIN_PARK)
        try:
            with Producer(name, dt) as p, Consumer(name, dt) as c:
                rec = np.zeros((), dt)[()]
                ops.try_push(p.hdr, p.slots, rec)
                ops.push_wait(p.hdr, p.slots, rec, 1000)
                out = np.zeros(1, dt)
                ops.try_pop(c.hdr, c.slots, out, 0)
                ops.wait_peek(c.hdr, 1, 1000)
                ops.wait_claim(p.hdr, 1, 1000)
                ops.producer_room(p.hdr, 2)
                v = p.claim(2)
                p.commit(len(v))
                v = c.peek(8)
                c.release(len(v))
                ops.wait_peek(c.hdr, 1, 1000)  # empty: exercises the idle path
                ops.count_rejection(p.hdr, 0)
                p.beat()
                c.beat()
                announce_park(c.hdr, np.uint64(0))  # a stage parking on several inputs
                end_park(c.hdr)
                n += 14
        finally:
            Segment.unlink(name)
    return n


def _job_hot_path() -> int:
    """The compiled duty cycle of a signals -> risk -> orders group
    (``bot4.stages.hotloop``), for the default wiring; after those stages' own jobs, so
    their kernels load from the cache."""
    from bot4.stages import hotloop

    return hotloop.warm()


def _job_operator_log() -> int:
    """What persistence runs on the instance's operator log (``bot4.shm.operator_log``):
    read, release, and the newest record (``bot4 stats``), on a temporary log."""
    from bot4.records import OPERATOR_ACTION
    from bot4.shm import Segment
    from bot4.shm.operator_log import OperatorLog, create_operator_log

    inst = f"warm{os.getpid()}"
    name = create_operator_log(inst, 8)
    try:
        log = OperatorLog(inst)
        try:
            log.read(np.zeros(4, OPERATOR_ACTION))
            log.release()
            log.last()
        finally:
            log.close()
    finally:
        Segment.unlink(name)
    return 3


def _job_marketdata() -> int:
    import bot4.marketdata

    return bot4.marketdata.warm()


def _job_depth() -> int:
    """The depth kernels only a topology with book_level rings calls (issue 18)."""
    from bot4.records import BOOK_LEVEL
    from bot4.signals.features import NSTATE, depth_kernel
    from bot4.stages.marketdata import _emit_levels

    lv = np.zeros(2, BOOK_LEVEL)
    lv["instrument"], lv["side"] = 1, 1
    _emit_levels(lv, lv.copy(), 0, 1, 1, 0, 1, 0)
    depth_kernel(lv, np.zeros((2, 2, 2)), np.zeros((2, NSTATE)))
    return 2


def _job_histogram() -> int:
    """The latency histogram's kernels the replay report and perf call (the metrics
    recorder's are warmed with the count-sink stage)."""
    from bot4.shm import histogram as H

    h = H.new()
    H.record_many(h, np.array([1, 1_000], np.int64))
    H.record_many_latency(h, np.array([5, 0], np.int64), np.array([1, 1], np.int64))
    return 2


def _job_replay() -> int:
    from bot4.replay.engine import warm as warm_replay

    return warm_replay()


def _job_replay_width() -> int:
    """:func:`_job_replay` at the SIMD width the host does not use by default, in a child
    process: the width is fixed when numba is first imported (:mod:`bot4.simd`). The
    child's cache entries are keyed by that width, which this process cannot check, so
    the job is never counted warm; with its entries cached it only loads them."""
    import subprocess

    from bot4.simd import has_avx512

    env = dict(os.environ, BOT4_SIMD="512" if has_avx512() else "256")
    env.pop("NUMBA_CPU_FEATURES", None)
    env.pop("NUMBA_CPU_NAME", None)
    code = "from bot4.replay.engine import warm; print(warm())"
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        lines = (r.stderr or "").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit {r.returncode}")
    return int(r.stdout.split()[-1])


# --- manifests ---------------------------------------------------------------------------


def _manifest_path(job: Job):
    from bot4 import nbcache

    return nbcache.cache_root() / MANIFEST_DIR / f"{job.ident}.json"


def _write_manifest(job: Job) -> None:
    """Record the key directories this process has looked kernels up in (best effort)."""
    import json
    from pathlib import Path

    from bot4 import nbcache

    dirs = {Path(d).name.rpartition("-")[0]: d for d in sorted(nbcache.used_paths)}
    path = _manifest_path(job)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"job": job.name, "modules": dirs}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def is_warm(job: Job) -> bool:
    """Whether ``job`` completed under the current keys of every kernel module it loaded
    (their directories still there): nothing of it would compile now."""
    import json
    from pathlib import Path

    from bot4 import nbcache

    if job.fn == "_job_replay_width":
        return False  # its keys are another width's (see the job)
    try:
        mods = json.loads(_manifest_path(job).read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for module, path in mods.items():
        if nbcache.module_file(module) is None:
            return False
        p = Path(path)
        if p.name != nbcache.key_of(module).dirname or not (p / nbcache.INFO_NAME).is_file():
            return False
    return True


# --- running them ----------------------------------------------------------------------


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


def _worker(wid: int, tasks, events, parent: int = 0) -> None:
    """A spawned worker: run jobs from ``tasks`` until None; report on ``events``."""
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

    class _Compiling(event.Listener):
        def on_start(self, ev) -> None:
            if depth[0] == 0:
                compiled[0] += 1
                events.put(("kernel", wid, nbcache.compiled_name(ev.data["dispatcher"])))
            depth[0] += 1

        def on_end(self, ev) -> None:
            depth[0] -= 1

    event.register("numba:compile", _Compiling())
    while True:
        job = tasks.get()
        if job is None:
            return
        events.put(("start", wid, job.name))
        t0 = time.monotonic()
        compiled[0] = 0
        try:
            n = globals()[job.fn](*job.args)
            _write_manifest(job)
            events.put(("done", wid, job.name, n, time.monotonic() - t0, None, compiled[0]))
        except BaseException as exc:  # reported by the parent, one line
            text = str(exc).strip()
            msg = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
            events.put(("done", wid, job.name, 0, time.monotonic() - t0, msg, compiled[0]))


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


def ensure_warm(
    topology, *, workers: int | None = None, stream=None, live=None, say=None
) -> WarmReport | None:
    """Before a pipeline's stages start: compile what ``topology`` runs and is not cached
    yet, on ``workers`` processes, with the progress display; None when everything is
    warm (the manifests say so; no process is started)."""
    cold = cold_jobs(jobs_for(topology))
    if not cold:
        return None
    from bot4 import nbcache

    say = say or (lambda msg: print(f"bot4: {msg}", file=stream or sys.stderr, flush=True))
    n = min(workers or default_jobs(), len(cold))
    say(
        f"numba kernels of {len(cold)} parts of this topology not known to be cached "
        f"({', '.join(j.name for j in cold)}): compiling them on {n} processes before the "
        f"stages start (cache {nbcache.cache_root()}; `bot4 warm` does this ahead of time)"
    )
    progress = Progress(len(cold), stream=stream, live=live, say=lambda m: say(f"warm: {m}"))
    rep = run_jobs(cold, n, progress)
    say(
        f"warm: {len(rep.done)} parts ready in {rep.seconds:.1f} s "
        f"({rep.compiled} kernels compiled, the rest loaded from the cache)"
    )
    for name, why in rep.failed.items():
        say(f"warm: {name}: {why} (the stage compiles what it needs itself)")
    return rep


def cold_jobs(jobs: list[Job]) -> list[Job]:
    """The jobs that are not warm, their ``after`` limited to jobs still to run."""
    cold = [j for j in jobs if not is_warm(j)]
    names = {j.name for j in cold}
    return [
        Job(j.name, j.fn, j.args, j.weight, tuple(a for a in j.after if a in names)) for j in cold
    ]


def warm() -> int:
    """Compile (or load from cache) every kernel in this process, one job after another;
    returns how many entry points ran (for tools that want a warm node, e.g. research)."""
    n = 0
    for j in all_jobs():
        n += globals()[j.fn](*j.args)
    return n


def warm_command(topology, *, workers: int | None = None, force: bool = False) -> int:
    """``bot4 warm``: ``topology``'s jobs (None: every job), those not warm unless
    ``force``, with the progress display on stderr; one summary line on stdout, one
    ``bot4: error:`` line per failed job (exit 1)."""
    from bot4 import nbcache

    jobs = all_jobs() if topology is None else jobs_for(topology)
    what = "every kernel" if topology is None else topology.source
    todo = jobs if force else cold_jobs(jobs)
    n = min(workers or default_jobs(), max(1, len(todo)))
    if todo:
        print(
            f"bot4: warm: {what}: {len(todo)} of {len(jobs)} jobs to run on {n} processes "
            f"(cache {nbcache.cache_root()})",
            file=sys.stderr,
            flush=True,
        )
    rep = run_jobs(todo, n, Progress(len(todo)))
    print(
        f"warmed {what}: {len(jobs) - len(todo)} jobs already warm, {len(rep.done)} run in "
        f"{rep.seconds:.1f} s ({rep.compiled} kernels compiled, the rest loaded; cache "
        f"{nbcache.cache_root()})"
    )
    for name, why in rep.failed.items():
        print(f"bot4: error: warm: {name}: {why}", file=sys.stderr)
    return 1 if rep.failed else 0
