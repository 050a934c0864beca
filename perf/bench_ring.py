"""The full ring benchmark under pyperf: latency and throughput of bot4 rings vs queues.

Usage::

    .venv/bin/python perf/bench_ring.py --fast                           # ~6 min
    .venv/bin/python perf/bench_ring.py -o perf/results/ring.json        # default rigour
    .venv/bin/python perf/bench_ring.py --rigorous -o perf/results/ring.json
    .venv/bin/python perf/bench_ring.py --fast --only two-cores          # a subset (substring)
    .venv/bin/python -m pyperf compare_to old.json perf/results/ring.json

Every (placement, mechanism, wait, measurement) is one pyperf benchmark run with
``Runner.bench_time_func``: each pyperf worker process starts its own two pinned peer
processes (``ringbench.Pair``) and runs ``loops`` iterations of the measurement, where one
loop is one round trip (latency) or one record (throughput). pyperf's value is therefore the
mean one-way latency (round trip / 2) or the time per record.

Every round trip of every non-calibration, non-warmup worker run is also kept in a
log-bucketed histogram (``ringbench.Histogram``) that workers write to a scratch directory;
the parent merges them into a sidecar next to the ``-o`` file (``ring.json`` ->
``ring.hist.json``) and takes one-way p50/p99/p99.9 from it.

At the end the parent prints one table (mechanism x one-way p50/p99/p99.9, records/s
single, records/s batched, ratios against mp-queue measured on the same placement in the
same run) and checks :data:`TARGETS` on the two-core rows.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile

import pyperf
import ringbench as rb

# Rows of the table: (placement, mechanism, wait). Busy-spin only with a core per process.
ROWS = [
    ("two-cores", "ring-numba", "busy-spin"),
    ("two-cores", "ring-python", "busy-spin"),
    ("two-cores", "mp-queue", "-"),
    ("two-cores", "faster-fifo", "-"),
    ("one-core", "ring-numba", "yield"),
    ("one-core", "ring-numba", "park"),
    ("one-core", "ring-python", "yield"),
    ("one-core", "ring-python", "park"),
    ("one-core", "mp-queue", "-"),
]
MEASUREMENTS = ("latency", "single", "batched")
BASELINE = "mp-queue"

# Full targets, two cores: (mechanism, metric, minimum ratio vs mp-queue). Latency ratios
# are mp-queue / mechanism (how many times lower), rates mechanism / mp-queue.
TARGETS = [
    ("ring-numba", "p50_ns", 150.0),
    ("ring-numba", "single", 300.0),
    ("ring-numba", "batched", 20.0),
    ("ring-python", "p50_ns", 50.0),
    ("ring-python", "single", 3.0),
]
METRIC_NAMES = {
    "p50_ns": "one-way p50",
    "single": "records/s single",
    "batched": "records/s batched",
}


def bench_name(placement: str, mechanism: str, wait: str, measurement: str) -> str:
    wait_part = "" if wait == "-" else f"/{wait}"
    return f"{placement}/{mechanism}{wait_part}/{measurement}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


# ----------------------------------------------------------------------------------------
# worker side: one pair per process, histograms written after every timed call

_pairs: dict[rb.Setup, rb.Pair] = {}
_hist: dict[str, rb.Histogram] = {}
_calls: dict[str, int] = {}


def _pair(setup: rb.Setup) -> rb.Pair:
    pair = _pairs.get(setup)
    if pair is None or not pair.procs:
        pair = _pairs[setup] = rb.Pair(setup)
        pair.start()
    return pair


def _close_pairs() -> None:
    for pair in _pairs.values():
        pair.close()
    _pairs.clear()


def _keep_round_trips(runner: pyperf.Runner, name: str, lat: rb.Latency) -> None:
    args = runner.args
    if args.calibrate_loops or args.recalibrate_loops or not args.sidecar_dir:
        return
    _calls[name] = _calls.get(name, 0) + 1
    if args.worker and _calls[name] <= (args.warmups or 0):
        return  # pyperf discards warmup values; so do we
    _hist[name] = _hist.get(name, rb.Histogram()).merge(lat.histogram())
    part = os.path.join(args.sidecar_dir, f"{_slug(name)}.{os.getpid()}.json")
    with open(part, "w") as f:
        json.dump({"name": name, **_hist[name].to_json()}, f)


def time_latency(loops: int, runner: pyperf.Runner, name: str, setup: rb.Setup) -> float:
    lat = _pair(setup).latency(loops)
    _keep_round_trips(runner, name, lat)
    return float(lat.rt_ns.sum()) / 2e9


def time_stream(loops: int, setup: rb.Setup, batch: int) -> float:
    return _pair(setup).stream(loops, batch=batch).seconds


# ----------------------------------------------------------------------------------------
# parent side: sidecar and table


def merged_histograms(sidecar_dir: str) -> dict[str, rb.Histogram]:
    out: dict[str, rb.Histogram] = {}
    for path in sorted(glob.glob(os.path.join(sidecar_dir, "*.json"))):
        with open(path) as f:
            d = json.load(f)
        out[d["name"]] = out.get(d["name"], rb.Histogram()).merge(rb.Histogram.from_json(d))
    return out


def sidecar_path(output: str) -> str:
    root, ext = os.path.splitext(output)
    return f"{root}.hist{ext or '.json'}"


def _us(ns: float | None) -> str:
    return "-" if ns is None or math.isnan(ns) else f"{ns / 1e3:,.2f}"


def _rate(r: float | None) -> str:
    return "-" if r is None or math.isnan(r) else f"{r:,.0f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.1f}x"


def collect(benches: dict[str, pyperf.Benchmark], hists: dict[str, rb.Histogram]) -> dict:
    """(placement, mechanism, wait) -> {p50_ns, p99_ns, p999_ns, single, batched}."""
    res: dict = {}
    for placement, mechanism, wait in ROWS:
        row: dict[str, float] = {}
        h = hists.get(bench_name(placement, mechanism, wait, "latency"))
        if h is not None and h.count:
            row.update(h.one_way())
        for m in ("single", "batched"):
            b = benches.get(bench_name(placement, mechanism, wait, m))
            if b is not None:
                row[m] = 1.0 / b.median()
        res[(placement, mechanism, wait)] = row
    return res


def ratio(row: dict, base: dict, metric: str) -> float:
    a, b = row.get(metric), base.get(metric)
    if not a or not b:
        return math.nan
    return b / a if metric.endswith("_ns") else a / b


def print_table(res: dict) -> None:
    head = [
        "placement",
        "mechanism",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "rec/s single",
        "rec/s batched",
        "p50 vs mpq",
        "single vs mpq",
        "batched vs mpq",
    ]
    rows = [head]
    for placement, mechanism, wait in ROWS:
        row = res[(placement, mechanism, wait)]
        if not row:
            continue
        base = res.get((placement, BASELINE, "-"), {})
        rows.append(
            [
                placement,
                mechanism + ("" if wait == "-" else f" {wait}"),
                _us(row.get("p50_ns")),
                _us(row.get("p99_ns")),
                _us(row.get("p999_ns")),
                _rate(row.get("single")),
                _rate(row.get("batched")),
                _ratio(ratio(row, base, "p50_ns")),
                _ratio(ratio(row, base, "single")),
                _ratio(ratio(row, base, "batched")),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for k, r in enumerate(rows):
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join(cells))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def check_targets(res: dict) -> bool:
    base = res.get(("two-cores", BASELINE, "-"), {})
    ok_all = True
    print()
    print("targets (two cores, rings busy-spin, vs mp-queue in this run):")
    for mechanism, metric, need in TARGETS:
        r = ratio(res.get(("two-cores", mechanism, "busy-spin"), {}), base, metric)
        if math.isnan(r):
            verdict = "SKIP (not measured)"
        else:
            verdict = "PASS" if r >= need else "FAIL"
            ok_all &= r >= need
        what = METRIC_NAMES[metric] + (" (x lower)" if metric.endswith("_ns") else " (x higher)")
        print(f"  {mechanism:12s} {what:29s} {_ratio(r):>9s}  needs >= {need:g}x  {verdict}")
    return ok_all


# ----------------------------------------------------------------------------------------


def _add_worker_args(cmd: list[str], args) -> None:
    cmd.extend(("--sidecar-dir", args.sidecar_dir))
    for s in args.only or ():
        cmd.extend(("--only", s))


def main() -> int:
    runner = pyperf.Runner(processes=10, add_cmdline_args=_add_worker_args)
    runner.argparser.add_argument("--sidecar-dir", help=argparse.SUPPRESS)
    runner.argparser.add_argument(
        "--only", action="append", help="run only benchmarks whose name contains this (repeatable)"
    )
    args = runner.parse_args()
    parent = not args.worker
    scratch = None
    if parent and not args.sidecar_dir:
        scratch = args.sidecar_dir = tempfile.mkdtemp(prefix="bot4-ringbench-")
    try:
        if parent:
            rb.sweep_stale_segments()
            warm = rb.warm_numba_cache()
            if not args.quiet:
                print(f"numba kernels ready in {warm:.1f} s", flush=True)
        benches: dict[str, pyperf.Benchmark] = {}
        for placement, mechanism, wait in ROWS:
            setup = rb.Setup(mechanism, wait, placement)
            for measurement in MEASUREMENTS:
                name = bench_name(placement, mechanism, wait, measurement)
                if args.only and not any(s in name for s in args.only):
                    continue
                loop = {
                    "latency": "one round trip (value = round trip / 2)",
                    "single": "one record, sent and read one at a time",
                    "batched": f"one record, sent and read in batches of {rb.BATCH}",
                }[measurement]
                meta = {
                    "ring_placement": placement,
                    "ring_mechanism": mechanism,
                    "ring_wait": wait,
                    "ring_measurement": measurement,
                    "ring_loop": loop,
                }
                if measurement == "latency":
                    b = runner.bench_time_func(
                        name, time_latency, runner, name, setup, metadata=meta
                    )
                else:
                    batch = rb.BATCH if measurement == "batched" else 1
                    b = runner.bench_time_func(name, time_stream, setup, batch, metadata=meta)
                if b is not None:
                    benches[name] = b
        _close_pairs()
        if not parent:
            return 0
        hists = merged_histograms(args.sidecar_dir)
        if args.output:
            path = sidecar_path(args.output)
            with open(path, "w") as f:
                json.dump({name: h.to_json() for name, h in sorted(hists.items())}, f, indent=1)
            print(f"\nround-trip histograms: {path}")
        print()
        print(
            "one-way latency (us) from every round trip; records/s = 1 / pyperf median time per record"
        )
        print_table(collect(benches, hists))
        check_targets(collect(benches, hists))
        return 0
    finally:
        _close_pairs()
        rb.sweep_segments()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
