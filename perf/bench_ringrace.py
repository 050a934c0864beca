"""The ring race under pyperf: bot4's ring against the reference SPSC ring (``ringrace``).

    .venv/bin/python perf/bench_ringrace.py --fast                   # ~2 min
    .venv/bin/python perf/bench_ringrace.py -o perf/results/ringrace.json
    .venv/bin/python perf/bench_ringrace.py --fast --only single     # a subset (substring)
    .venv/bin/python -m pyperf compare_to old.json perf/results/ringrace.json

One pyperf benchmark per (kind, batch): ``ringrace/<kind>/single`` (one record per publish)
and ``ringrace/<kind>/batched`` (128). A value is one race of ``loops`` records between a
producer pinned to core 0 and a consumer pinned to core 1 (``ringrace.race``: forked, so
the kernels compiled by the worker are not loaded twice); pyperf calibrates ``loops`` and
reports the time per record. The parent prints records/s (1 / pyperf's median) and bot4 /
reference for single and batched against issue 15's targets (>= 0.8x, >= 0.95x).

pyperf runs the benchmarks one after the other, not interleaved: compare runs taken under
the same load, or use ``ringrace.py`` (interleaved rounds) for the ratio of one run.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyperf  # noqa: E402
import ringrace as rr  # noqa: E402

MEASUREMENTS = {"single": 1, "batched": rr.BATCHED}


def bench_name(kind: str, measurement: str) -> str:
    return f"ringrace/{kind}/{measurement}"


def time_race(loops: int, kind: str, batch: int) -> float:
    return rr.race(kind, batch, loops).seconds


def print_table(benches: dict[str, pyperf.Benchmark]) -> None:
    print()
    print(f"{'kind':<10}{'measurement':>12}{'M rec/s':>10}{'vs reference':>14}")
    for measurement in MEASUREMENTS:
        ref = benches.get(bench_name("reference", measurement))
        for kind in rr.KINDS:
            b = benches.get(bench_name(kind, measurement))
            if b is None:
                continue
            vs = f"{ref.median() / b.median():.2f}x" if ref is not None else "-"
            print(f"{kind:<10}{measurement:>12}{1e-6 / b.median():>10.1f}{vs:>14}")
    for measurement, batch in MEASUREMENTS.items():
        ref = benches.get(bench_name("reference", measurement))
        b4 = benches.get(bench_name("bot4", measurement))
        if ref is None or b4 is None:
            continue
        ratio = ref.median() / b4.median()
        need = rr.TARGETS[batch]
        print(
            f"target {measurement}: bot4 >= {need:g}x reference: {ratio:.2f}x "
            f"{'PASS' if ratio >= need else 'FAIL'}"
        )


def _add_worker_args(cmd: list[str], args) -> None:
    for s in args.only or ():
        cmd.extend(("--only", s))


def main() -> int:
    runner = pyperf.Runner(add_cmdline_args=_add_worker_args)
    runner.argparser.add_argument(
        "--only", action="append", help="run only benchmarks whose name contains this"
    )
    runner.metadata["ring_capacity"] = rr.CAPACITY
    args = runner.parse_args()
    parent = not args.worker
    if parent:
        rr.sweep_stale_segments()
        warm = rr.warm()
        if not args.quiet:
            print(f"kernels ready in {warm:.1f} s", flush=True)
    else:
        rr.warm()  # in the worker, before any race forks: the children inherit the code
    benches: dict[str, pyperf.Benchmark] = {}
    for measurement, batch in MEASUREMENTS.items():
        for kind in rr.KINDS:
            name = bench_name(kind, measurement)
            if args.only and not any(s in name for s in args.only):
                continue
            meta = {"ring_kind": kind, "ring_batch": batch}
            b = runner.bench_time_func(name, time_race, kind, batch, metadata=meta)
            if b is not None:
                benches[name] = b
    if parent:
        print_table(benches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
