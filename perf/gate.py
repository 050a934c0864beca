"""The quick latency/throughput gate CI runs: bot4 rings against multiprocessing.Queue.

Usage::

    .venv/bin/python perf/gate.py               # ~30 s on a 2-core VM, exit 0 = every bound met
    .venv/bin/python perf/gate.py --scale 0.2   # shorter runs (noisier)
    .venv/bin/python perf/gate.py --rounds 7

Each subject in :data:`SUBJECTS` runs between two processes pinned to cores 0 and 1 (rings
busy-spin). A round measures every subject once, in the order of :data:`SUBJECTS` (so
baseline and candidates interleave: mp-queue, ring-numba, ring-python, mp-queue, ...);
after ``--rounds`` rounds (at least 5) the median of each metric per subject is taken and
each bound in :data:`BOUNDS` compares a ratio of medians with its minimum. The bounds are
about a third of the full targets that ``perf/bench_ring.py`` checks, so scheduler noise on
a shared VM does not fail CI while a real regression (a lost order of magnitude) does.

On failure the whole measurement is repeated once with fresh processes; if a bound still
fails the exit status is 1 (2 if a measurement itself broke). Segments are unlinked as soon
as both peers attach, and every ``/dev/shm/bot4.perf<pid>.*`` left is removed on any exit,
including ^C and SIGTERM.

Every bound is a ratio against a baseline measured in the same run on the same machine
(mp.Queue, numpy, a reference of comparable work), never against a fixed number of ns, so
the gate passes on a slower or busier machine of the same kind and fails on a lost order
of magnitude. Figures quoted by others (the risk path's advertised ns) are printed below
the bounds for information.

Each attempt's samples are written as pyperf JSON (``-o``, default
``perf/results/gate.json``: one benchmark per subject and metric, one run per round), so two
gate runs compare with ``python -m pyperf compare_to OLD.json NEW.json``. pyperf's value is
lower-is-better seconds: latencies in seconds, rates as seconds per record (``... per
record``), so a faster run reads "faster" for every metric.

Adding a benchmark (pipeline, signals kernel): give it a subject factory in ``SUBJECTS``
(an object with ``measure(metric) -> float`` and ``close()``) and its bounds in ``BOUNDS``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing import process as mp_process

import numpy as np
import ringbench as rb

# name -> (subject, metric, baseline, minimum ratio). The ratio is always "how many times
# better than the baseline": baseline/subject for latencies, subject/baseline for rates.
BOUNDS: dict[str, tuple[str, str, str, float]] = {
    "ring-numba one-way p50": ("ring-numba", "p50_ns", "mp-queue", 50.0),
    # a third of the 300x target would be 100x. The single-record stream is bimodal on
    # this VM (lock-step, one cross-core line transfer per record, or the producer ahead;
    # perf/README "Ring race"): 9-17 M rec/s, 32-75x mp-queue in eight gate runs of
    # 2026-12-06 (quiet, and in CI after the tests), so the old 50x sat between the modes
    # and failed by chance. 25x is below the lock-step mode: a regression guard (a 2x
    # slower ring fails in either mode); ringrace.py measures the ring against a reference
    "ring-numba records/s single": ("ring-numba", "single", "mp-queue", 25.0),
    "ring-numba records/s batched": ("ring-numba", "batched", "mp-queue", 7.0),
    "ring-python one-way p50": ("ring-python", "p50_ns", "mp-queue", 17.0),
    "ring-python records/s single": ("ring-python", "single", "mp-queue", 1.0),
    # three hops through bot4 stages (default park waits) vs the same chain on mp.Queue,
    # both fair (``pipebench``: sources paced by sleeping, nothing timed before every
    # process of the chain is up): 2.7x at p50 when the VM was loaded (216 vs 591 us);
    # quiet, both chains are dominated by waking a parked process on an idle vCPU (~50 us
    # per hop, futex for bot4, pipe for mp.Queue) and the ratio is 1.1-1.3x (137-160 vs
    # 161-198 us, seven runs of 2026-12-06), so 1.2x failed by chance. 0.8x guards against
    # a parked hop getting slower than mp.Queue's. (Those runs also found the tail: a
    # dedicated stage reported running before its start-up gc pass, so the first records
    # waited 30-65 ms behind it, p99 14-55 ms; fixed, p99 now 0.24-0.47 ms vs 0.5-0.7 ms)
    "pipeline 3-hop p50": ("pipeline-bot4", "p50_ns", "pipeline-mpq", 0.8),
    # tick-to-order of the default pipeline (md -> signals -> risk -> orders, 3 ring hops,
    # from the stamps on each order; md stamps as it publishes) vs the fair 3-hop mp.Queue
    # chain above. The default groups signals, risk and orders in one compiled duty cycle
    # on core 1 (docs/hotpath.md; idle yield, SCHED_OTHER); bot4 run keeps its supervisor
    # and PostgreSQL off that core. Measured 2026-12-07 on the 2-core VM: 54-78x (p50
    # 4.1-6.1 us against a 320-340 us chain; 36-40x before the cycle borrowed its arrays
    # and the Python round went to seconds); the gate's own run in CI: 36.4x on 6 December.
    # The bound, a third of its 20x target: 7x. Only another CPU-bound process on
    # core 1 brings the ratio under 1x (a SCHED_OTHER group then gets the core in
    # scheduler slices: 0.2-0.4x measured): nothing else runs while CI runs the gate
    "tick-to-order p50": ("tick-to-order", "p50_ns", "pipeline-mpq", 7.0),
    # the signals kernel (batches of 256) vs whole-array vectorised numpy on 200k quotes
    # (numpy's arrays stay in cache): measured ~4x here, 7-10x on 1 M quotes
    "signals kernel ticks/s": ("signals-numba", "ticks", "signals-numpy", 2.0),
    # risk-path kernels (``riskbench``), each against a reference of comparable work measured
    # in the same run on the same core (subject "risk-reference"), never against a fixed ns
    # figure: a constant bound passed here and failed on a busier machine of the same kind
    # (the breaker at 13 ns against <= 10 ns). Ratios are reference ns / kernel ns. Measured
    # here (2-core VM, medians of 5, three runs): risk check 8.4-9.8x faster than the same
    # checks in plain Python (~120-155 ns vs 1.0-1.5 us per intent), breaker check ~0.6x a
    # bare dependent load of its state word (~4.7 vs ~2.8 ns: its load-to-use chain is
    # longer than one load), order creation 1.2-1.8x faster than the same steps in plain
    # Python (~1.1 vs 1.3-1.9 us per order). The bounds
    # sit about 4x below those, so load and machine differences pass while a lost order of
    # magnitude fails. The advertised figures are printed below the table, for information.
    # 86cd0ff (issue 13, the RiskState namedtuple) made the risk check 3.2x slower (2.3-2.6x
    # its reference; the bound was 1.5x meanwhile): every helper handed the whole state
    # increfed/decrefed its 16 arrays per intent. check_intents now borrows the state once
    # (unowned views) and hands the per-intent helpers only the arrays they use: 5.9-9.5x
    # its reference against 1.3-1.8x for the tree before, interleaved (two sittings)
    "risk check per intent": ("risk-kernels", "risk_ns", "risk-reference", 2.5),
    # breaker: 12-14 ns (0.16x the load, a 4-7 % margin on 0.15x) until breaker_allow
    # borrowed its array: NRT_incref/NRT_decref calls around every call (the slow path's
    # call kept them). Now ~0.56 ns in riskbench's loop, 3.9x the dependent load: the
    # CLOSED test is a predicted branch, so the loop no longer waits on the load (a
    # throughput, as in check_intents' use). 1.0x: never slower than one dependent load
    "breaker check": ("risk-kernels", "breaker_ns", "risk-reference", 1.0),
    # order creation: 0.43-0.44x its reference (1.9 us per order) until orders_kernel and
    # execs_kernel borrowed the OMS state (44 arrays counted at every helper call); 1.03-1.13x
    # (770-850 ns) after, old and new interleaved. The bound stays 4x under that
    "order creation per order": ("risk-kernels", "order_ns", "risk-reference", 0.3),
}

# Printed under the bounds for information, never judged: how many times faster than the
# figure a comparable system advertises (``riskbench.ADVERTISED_NS``: < 10 us per risk
# check, < 100 ns per breaker check, < 100 us per order creation; raw figures, loop
# overhead included). name -> (subject, metric, riskbench.ADVERTISED_NS key)
INFO: dict[str, tuple[str, str, str]] = {
    "risk check per intent": ("risk-kernels", "risk_ns", "risk"),
    "breaker check": ("risk-kernels", "breaker_ns", "breaker"),
    "order creation per order": ("risk-kernels", "order_ns", "order"),
}

# metric -> (column title, lower is better, unit divisor, unit)
METRICS = {
    "p50_ns": ("one-way p50", True, 1e3, "us"),
    "p99_ns": ("p99", True, 1e3, "us"),
    "p999_ns": ("p99.9", True, 1e3, "us"),
    "single": ("records/s single", False, 1.0, ""),
    "batched": ("records/s batched", False, 1.0, ""),
    "ticks": ("ticks/s", False, 1.0, ""),
    "risk_ns": ("risk check", True, 1.0, "ns"),
    "breaker_ns": ("breaker check", True, 1.0, "ns"),
    "order_ns": ("order creation", True, 1.0, "ns"),
}
LATENCY_METRICS = ("p50_ns", "p99_ns", "p999_ns")

MIN_ROUNDS = 5
TIMEOUT_S = 30.0  # one measurement; they take well under a second
BUDGET_S = 200.0  # ring ~20-40 s, pipeline ~40 s, signals ~5 s, risk ~2 s per attempt, two attempts
DEFAULT_SCALE = 0.6  # of ringbench.RUN_LENGTHS: ~0.2-0.3 s per measurement
DEFAULT_OUTPUT = "perf/results/gate.json"


class RingSubject:
    """A mechanism of ``ringbench`` on two cores, measured with short runs."""

    def __init__(self, mechanism: str, scale: float) -> None:
        wait = "busy-spin" if mechanism in rb.RING_MECHANISMS else "-"
        self.pair = rb.Pair(rb.Setup(mechanism, wait, "two-cores"))
        self.pair.start()
        self.lengths = rb.run_lengths(mechanism, scale)
        self._latency: dict[str, float] | None = None

    def measure(self, metric: str) -> float:
        n_rt, n_single, n_batched = self.lengths
        if metric in LATENCY_METRICS:
            if metric == "p50_ns" or self._latency is None:
                self._latency = self.pair.latency(n_rt, timeout_s=TIMEOUT_S).percentiles
            return self._latency[metric]
        if metric == "single":
            return self.pair.stream(n_single, timeout_s=TIMEOUT_S).records_per_s
        if metric == "batched":
            return self.pair.stream(n_batched, batch=rb.BATCH, timeout_s=TIMEOUT_S).records_per_s
        raise KeyError(metric)

    def close(self) -> None:
        self.pair.close()


class PipelineSubject:
    """Three hops end to end (``pipebench``): bot4 stages with the default waits, or the
    same chain on multiprocessing.Queue; 5k records at 5k/s per measurement."""

    def __init__(self, which: str, scale: float) -> None:
        import pipebench

        self.fn = pipebench.bot4_chain if which == "bot4" else pipebench.mpqueue_chain
        self.n = max(1000, int(5000 * scale / DEFAULT_SCALE))
        self._latency: dict[str, float] | None = None

    def measure(self, metric: str) -> float:
        if metric == "p50_ns" or self._latency is None:
            self._latency = self.fn(self.n, 5000)
        return self._latency[metric]

    def close(self) -> None:
        pass


class SignalsSubject:
    """The signals kernel or its vectorised numpy twin (``sigbench``) on 200k quotes."""

    def __init__(self, which: str, scale: float) -> None:
        import sigbench

        from bot4.models.orthogonal import Orthogonaliser
        from bot4.signals.features import NF

        self.sb = sigbench
        self.recs = sigbench.make_quotes(200_000)
        ortho = Orthogonaliser.identity(NF)
        if which == "numba":
            nb = sigbench.NumbaSignals(ortho)
            nb.run(self.recs[:1000])
            self.fn = lambda: nb.run(self.recs)
        else:
            self.fn = lambda: sigbench.numpy_signals(self.recs, ortho)

    def measure(self, metric: str) -> float:
        return self.sb.ticks_per_second(self.fn, len(self.recs), repeat=2)

    def close(self) -> None:
        pass


class _SharedRiskBench:
    """One ``riskbench.RiskBench`` (segments ``rb<pid>.*``) for the kernel subject and its
    reference subject: same process, same breaker segment, set up once."""

    bench = None
    users = 0

    @classmethod
    def acquire(cls):
        if cls.bench is None:
            import riskbench

            riskbench.sweep_stale_segments()
            try:
                cls.bench = riskbench.RiskBench()  # unlinked by release()
            except riskbench.MeasureError as exc:
                raise rb.BenchError(f"risk kernels: {exc}") from exc
        cls.users += 1
        return cls.bench

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users <= 0 and cls.bench is not None:
            cls.bench.close()
            cls.bench = None
            cls.users = 0


class RiskKernelsSubject:
    """The risk-path kernels (``riskbench``), each in one ``@njit`` loop in this process:
    ns per intent of ``check_intents`` (batches of 64), per ``breaker_allow`` on a closed
    breaker, per order of ``orders_kernel`` (batches of 64). Raw figures, loop overhead
    included (``bench_risk.py`` reports them net of their baselines)."""

    # metric -> (riskbench loop, operations per measurement at the default scale)
    OPS = {
        "risk_ns": ("risk", 200_000),
        "breaker_ns": ("breaker", 5_000_000),
        "order_ns": ("order", 50_000),
    }

    def __init__(self, scale: float) -> None:
        import riskbench

        self.rk = riskbench
        self.scale = scale / DEFAULT_SCALE
        self.bench = _SharedRiskBench.acquire()

    def measure(self, metric: str) -> float:
        name, n_ops = self.OPS[metric]
        try:
            timed, _whole_loop = self.bench.ns_per_op(name, max(1000, int(n_ops * self.scale)))
        except self.rk.MeasureError as exc:
            raise rb.BenchError(f"risk kernels: {exc}") from exc
        return timed

    def close(self) -> None:
        if self.bench is not None:
            self.bench = None
            _SharedRiskBench.release()


class RiskReferenceSubject(RiskKernelsSubject):
    """The references of comparable work the risk kernels are bounded against
    (``riskbench.REFERENCE``), same units: the same risk checks and order creation in plain
    Python (ns per intent / per order, batches of 64) and a bare dependent acquire load of
    the breaker's state word (ns per load)."""

    OPS = {
        "risk_ns": ("py_risk", 40_000),
        "breaker_ns": ("load", 5_000_000),
        "order_ns": ("py_order", 40_000),
    }


class TickToOrderSubject:
    """Tick-to-order latency of the default pipeline (``ttobench``), from the stamps on the
    orders it sent. Starting six stage processes takes seconds, so the pipeline runs once,
    when the subject is made (~4 s of trading); the orders are split into consecutive
    slices, one per round, and each ``measure`` reports the next slice's percentiles."""

    def __init__(self, scale: float) -> None:
        import ttobench

        self.tb = ttobench
        # journal only: the transport's latency, not the database server's share of the
        # two cores (``python perf/ttobench.py`` prints both)
        self.lat = ttobench.run_default(4.0, db=False)["tick_to_order"]
        self.slices = np.array_split(self.lat, MIN_ROUNDS)
        self.k = 0
        self._p: dict[str, float] | None = None

    def measure(self, metric: str) -> float:
        if metric == "p50_ns" or self._p is None:
            self._p = self.tb.percentiles(self.slices[self.k % len(self.slices)])
            self.k += 1
        return self._p[metric]

    def close(self) -> None:
        pass


# subject name -> factory(scale). Measured in this order within a round.
SUBJECTS = {
    "mp-queue": lambda scale: RingSubject("mp-queue", scale),
    "ring-numba": lambda scale: RingSubject("ring-numba", scale),
    "ring-python": lambda scale: RingSubject("ring-python", scale),
    "pipeline-mpq": lambda scale: PipelineSubject("mpq", scale),
    "pipeline-bot4": lambda scale: PipelineSubject("bot4", scale),
    "tick-to-order": lambda scale: TickToOrderSubject(scale),
    "signals-numpy": lambda scale: SignalsSubject("numpy", scale),
    "signals-numba": lambda scale: SignalsSubject("numba", scale),
    "risk-reference": RiskReferenceSubject,
    "risk-kernels": RiskKernelsSubject,
}


@dataclass
class Verdict:
    name: str
    ratio: float
    bound: float

    @property
    def ok(self) -> bool:
        return self.ratio >= self.bound


def metrics_needed() -> dict[str, list[str]]:
    """subject -> metrics to measure (bounds' metrics; p99/p99.9 come with every p50)."""
    need: dict[str, list[str]] = {}
    for subject, metric, baseline, _ in BOUNDS.values():
        for who in (baseline, subject):
            ms = need.setdefault(who, [])
            extra = LATENCY_METRICS if metric == "p50_ns" else (metric,)
            ms.extend(m for m in extra if m not in ms)
    return {s: need[s] for s in SUBJECTS if s in need}


def run_once(
    rounds: int, scale: float, samples_out: dict | None = None
) -> dict[str, dict[str, float]]:
    """Medians per subject and metric over ``rounds`` interleaved rounds; every sample
    into ``samples_out`` (subject -> metric -> values) when given."""
    need = metrics_needed()
    subjects = {}
    try:
        for name in need:
            subjects[name] = SUBJECTS[name](scale)
        samples: dict[str, dict[str, list[float]]] = {
            s: {m: [] for m in ms} for s, ms in need.items()
        }
        for _ in range(rounds):
            for name, metrics in need.items():
                for metric in metrics:
                    samples[name][metric].append(subjects[name].measure(metric))
    finally:
        for subject in subjects.values():
            subject.close()
    if samples_out is not None:
        samples_out.clear()
        samples_out.update(samples)
    return {s: {m: statistics.median(v) for m, v in ms.items()} for s, ms in samples.items()}


def pyperf_seconds(metric: str, value: float) -> float:
    """A sample in pyperf's slot, which is lower-is-better seconds: latencies (ns) as
    seconds, rates (per second) as seconds per record (1 / rate), so ``pyperf compare_to``
    calls a faster run faster for every metric."""
    if METRICS[metric][1]:  # every lower-is-better metric is measured in ns
        return value * 1e-9
    return 1.0 / value if value > 0 else math.inf


def write_pyperf(path: str, samples: dict[str, dict[str, list[float]]], meta: dict) -> None:
    """The samples as a pyperf BenchmarkSuite at ``path`` (``python -m pyperf show`` and
    ``python -m pyperf compare_to OLD NEW`` read it): one benchmark per subject and metric
    (``"<subject> <metric>"``, metrics in seconds as :func:`pyperf_seconds`), one run per
    interleaved round."""
    import os

    import pyperf

    benches = []
    for subject, metrics in samples.items():
        for metric, values in metrics.items():
            vals = [pyperf_seconds(metric, v) for v in values]
            if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
                continue
            name = f"{subject} {metric if METRICS[metric][1] else metric + ' per record'}"
            runs = [
                pyperf.Run(
                    [v],
                    metadata={"name": name, "unit": "second", "loops": 1, **meta},
                    collect_metadata=False,
                )
                for v in vals
            ]
            benches.append(pyperf.Benchmark(runs))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pyperf.BenchmarkSuite(benches).dump(path, replace=True)


def judge(medians: dict[str, dict[str, float]]) -> list[Verdict]:
    out = []
    for name, (subject, metric, baseline, bound) in BOUNDS.items():
        a, b = medians[subject][metric], medians[baseline][metric]
        lower_better = METRICS[metric][1]
        ratio = (b / a if lower_better else a / b) if a > 0 and b > 0 else math.nan
        out.append(Verdict(f"{name} vs {baseline}", ratio, bound))
    return out


def _fmt(metric: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    _, _, div, unit = METRICS[metric]
    if unit:
        return f"{value / div:,.2f} {unit}"
    return f"{value:,.0f}"


def print_table(medians: dict[str, dict[str, float]], verdicts: list[Verdict], title: str) -> None:
    cols = [m for m in METRICS if any(m in ms for ms in medians.values())]
    rows = [["mechanism", *[METRICS[m][0] for m in cols]]]
    rows += [[s, *[_fmt(m, ms.get(m)) for m in cols]] for s, ms in medians.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(title)
    for k, r in enumerate(rows):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print()
    name_w = max(len(v.name) for v in verdicts)
    print(f"{'bound'.ljust(name_w)}  {'ratio':>9}  {'needs':>8}  result")
    print(f"{'-' * name_w}  {'-' * 9}  {'-' * 8}  ------")
    for v in verdicts:
        print(
            f"{v.name.ljust(name_w)}  {v.ratio:>8.1f}x  {'>= ' + format(v.bound, 'g') + 'x':>8}  {'PASS' if v.ok else 'FAIL'}"
        )


def print_info(medians: dict[str, dict[str, float]]) -> None:
    """The ``INFO`` lines whose subject was measured (information, not bounds)."""
    import riskbench

    rows = [
        (name, subject, metric, riskbench.ADVERTISED_NS[key])
        for name, (subject, metric, key) in INFO.items()
        if metric in medians.get(subject, {})
    ]
    if not rows:
        return
    print()
    print("information, not bounds: x faster than a comparable system's advertised figure")
    for name, subject, metric, figure in rows:
        value = medians[subject][metric]
        ratio = figure / value if value > 0 else math.nan
        print(
            f"  {name} vs advertised {_fmt(metric, figure)}: {ratio:,.1f}x ({_fmt(metric, value)})"
        )


def _terminate(signum, frame):
    if _HELD[0] is not None:  # kernels compiling or loading, a peer starting: act right after
        _HELD[0].append(signum)
        return
    if signum == signal.SIGALRM:  # the budget ran out: say so (exit 142 alone says nothing)
        print(
            f"gate: the {_BUDGET[0]:g} s budget ran out before a result (a machine this "
            "loaded cannot be measured; --budget raises it): no verdict, no pyperf results",
            file=sys.stderr,
            flush=True,
        )
    raise SystemExit(128 + signum)


_BUDGET = [BUDGET_S]  # this run's --budget, for the message above
#: signals that arrived while held (a list while the kernels compile or load or a peer
#: process starts, else None)
_HELD: list[list[int] | None] = [None]


@contextlib.contextmanager
def _holding_signals():
    """Note SIGTERM / SIGHUP / SIGALRM instead of acting on them inside the block, then act
    on the first one right after it (nested blocks: the outermost acts)."""
    if _HELD[0] is not None:
        yield
        return
    _HELD[0] = []
    try:
        yield
    finally:
        held, _HELD[0] = _HELD[0], None
    if held:
        _terminate(held[0], None)


def _start_holding_signals(start):
    """``multiprocessing`` process start with the stop signals held: raised in the middle
    of a spawn, the budget's SystemExit cut the child's start-up data short, and the child
    printed an ``EOFError: Ran out of input`` traceback (test_gate_pyperf's one-second
    budget, by chance). Started whole, the peer is ended by the bench's clean-up."""

    def start_held(self):
        with _holding_signals():
            return start(self)

    return start_held


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rounds", type=int, default=MIN_ROUNDS, help=f"interleaved rounds (>= {MIN_ROUNDS})"
    )
    ap.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="run-length scale")
    ap.add_argument("--no-retry", action="store_true", help="fail on the first failing attempt")
    ap.add_argument(
        "--budget", type=float, default=BUDGET_S, help="seconds for the whole gate (hard stop)"
    )
    ap.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        help="pyperf JSON of the last attempt's samples, for `python -m pyperf compare_to` "
        "(lower is better everywhere: rates stored as seconds per record) (%(default)s)",
    )
    args = ap.parse_args(argv)
    rounds = max(args.rounds, MIN_ROUNDS)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, _terminate)
    mp_process.BaseProcess.start = _start_holding_signals(mp_process.BaseProcess.start)
    _BUDGET[0] = args.budget
    signal.alarm(max(1, int(args.budget)))  # a hung peer ends the gate (exit 142), cleaned up
    t_start = time.monotonic()
    try:
        stale = rb.sweep_stale_segments()
        if stale:
            print(f"removed segments of dead benchmark runs: {', '.join(stale)}", file=sys.stderr)
        # A signal handler that raises inside numba's compiler lands in an LLVM ctypes
        # callback, which swallows it and leaves a half-built library ("no compiled object
        # yet"), or mid-way through a ring's set-up: while kernels compile or load, the
        # handler only notes the signal, which acts right after. (Blocking the signals with
        # pthread_sigmask did not hold: a process-directed SIGALRM went to another thread,
        # whose C handler still queued the Python handler for the main thread.)
        with _holding_signals():
            warm = rb.warm_numba_cache()
        print(f"numba kernels ready in {warm:.1f} s")
        attempts = 1 if args.no_retry else 2
        scale = args.scale
        for attempt in range(1, attempts + 1):
            t = time.monotonic()
            samples: dict = {}
            try:
                medians = run_once(rounds, scale, samples)
            except rb.BenchError as exc:
                print(f"attempt {attempt}: measurement failed: {exc}", file=sys.stderr)
                if attempt == attempts:
                    return 2
                continue
            took = time.monotonic() - t
            verdicts = judge(medians)
            print()
            print_table(
                medians,
                verdicts,
                f"attempt {attempt}: median of {rounds} interleaved rounds, two cores "
                f"(cores 0 and 1), rings busy-spin, scale {scale:g}, {took:.1f} s",
            )
            print_info(medians)
            if args.output:
                write_pyperf(args.output, samples, {"gate_attempt": attempt, "scale": scale})
                print(f"pyperf results: {args.output}")
            print()
            if all(v.ok for v in verdicts):
                print(f"gate PASS in {time.monotonic() - t_start:.1f} s")
                return 0
            if attempt < attempts:
                # A loaded machine stretches fixed-length runs: fit the retry in the budget.
                left = args.budget - (time.monotonic() - t_start) - 5.0
                if left < 0.3 * took:
                    print(f"gate: no time left in the {args.budget:g} s budget to retry")
                    break
                scale *= min(1.0, left / (1.2 * took))
                print(
                    f"gate: a bound failed; retrying once with fresh processes (scale {scale:.2g})\n"
                )
        print(f"gate FAIL in {time.monotonic() - t_start:.1f} s")
        return 1
    finally:
        signal.alarm(0)
        left = rb.sweep_segments()
        if left:
            print(f"removed stale segments: {', '.join(left)}", file=sys.stderr)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("gate interrupted", file=sys.stderr)
        sys.exit(130)
