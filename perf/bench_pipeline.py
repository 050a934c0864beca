"""Pipeline benchmark: end-to-end latency and throughput through three hops
(source -> relay -> relay -> sink, four processes), bot4 stages with the default waits
against the same chain on multiprocessing.Queue, in the same run; plus one hop with
busy-spin on two dedicated cores.

    .venv/bin/python perf/bench_pipeline.py                 # table + perf/results/pipeline.json
    .venv/bin/python perf/bench_pipeline.py --rounds 5 --latency-records 40000

Every record's latency is kept: the JSON is a pyperf BenchmarkSuite (one benchmark per
mechanism and metric, one value per round, readable by ``python -m pyperf show`` and
``compare_to``), with the per-round percentiles in each run's metadata. pyperf's value is
lower-is-better seconds: ``p50_ns`` in seconds, throughput as ``s_per_record`` (1 /
records/s; records/s stays in the metadata).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pipebench as pb  # noqa: E402
import pyperf  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-records", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=10_000, help="records/s for the latency runs")
    ap.add_argument("--throughput-records", type=int, default=500_000)
    ap.add_argument(
        "-o",
        "--output",
        default=os.path.join(os.path.dirname(__file__), "results", "pipeline.json"),
    )
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {}
    subjects = {
        "bot4 3 hops (park)": lambda n, rate: pb.bot4_chain(n, rate),
        "mp.Queue 3 hops": lambda n, rate: pb.mpqueue_chain(n, rate),
        "bot4 1 hop busy-spin, 2 cores": lambda n, rate: pb.one_hop_busy_spin(n, rate),
    }
    for _ in range(args.rounds):
        for name, fn in subjects.items():  # interleaved: baseline and candidates alternate
            lat = fn(args.latency_records, args.rate)
            thr = (
                fn(args.throughput_records, 0)
                if "busy" not in name
                else {"records_per_s": float("nan")}
            )
            runs.setdefault(name, []).append(
                {k: lat[k] for k in ("p50_ns", "p99_ns", "p999_ns")}
                | {"records_per_s": thr["records_per_s"]}
            )
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
    }
    base = med["mp.Queue 3 hops"]
    print(
        f"{'mechanism':<32}{'p50 us':>9}{'p99 us':>10}{'p99.9 us':>10}{'records/s':>13}{'p50 vs mpq':>12}{'rate vs mpq':>12}"
    )
    for name, m in med.items():
        print(
            f"{name:<32}{m['p50_ns'] / 1e3:>9.1f}{m['p99_ns'] / 1e3:>10.1f}{m['p999_ns'] / 1e3:>10.1f}"
            f"{m['records_per_s']:>13,.0f}{base['p50_ns'] / m['p50_ns']:>11.1f}x{m['records_per_s'] / base['records_per_s']:>11.1f}x"
        )
    suite = []
    for name, rs in runs.items():
        # pyperf's value is lower-is-better seconds: p50 in seconds, throughput as seconds
        # per record (1 / records/s), so `pyperf compare_to` calls a faster run faster
        for metric, label in (("p50_ns", "p50_ns"), ("records_per_s", "s_per_record")):
            values = [r[metric] / 1e9 if metric == "p50_ns" else 1.0 / r[metric] for r in rs]
            if any(v != v or v <= 0 for v in values):
                continue
            prs = [
                pyperf.Run(
                    [v],
                    metadata={
                        "name": f"{name} {label}",
                        "unit": "second",
                        **{k: float(r[k]) for k in r},
                    },
                    collect_metadata=False,
                )
                for v, r in zip(values, rs, strict=True)
            ]
            suite.append(pyperf.Benchmark(prs))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    pyperf.BenchmarkSuite(suite).dump(args.output, replace=True)
    print(f"pyperf results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
