"""Replay benchmark (pyperf): events/s of the deterministic harness through the full chain
(signals, risk, orders, venue, persistence) on a synthetic stream, parsing excluded and
included, against hftbacktest on the same events when it is installed; then the peak
RSS of one run at two sizes (the data is streamed, so memory stays flat).

    .venv/bin/python perf/bench_replay.py --fast                     # 1 M events
    .venv/bin/python perf/bench_replay.py --fast --events 10000000   # the issue's size
    .venv/bin/python perf/bench_replay.py -o perf/results/replay.json

One pyperf benchmark per measurement of ``replaybench`` (see its docstring); each value
is one whole run (``loops`` = 1, ``inner_loops`` = events), so pyperf reports time per
event. ``memory`` times the harness alone (the generator's time subtracted), ``parquet``
the whole run from the file. The table (parent only) turns the medians into events/s,
compares with hftbacktest and the issue's target (4.5 M events/s), and lists the peak RSS
of fresh processes replaying 1 M and ``--events`` events.
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyperf  # noqa: E402
import replaybench as rb  # noqa: E402

TARGET = 4.5e6  # events/s: hftbacktest's figure on this machine (issue 7)
_cache: dict = {}


def _time_memory(loops: int, n: int, step: int) -> float:
    total = 0.0
    for _ in range(loops):
        r = rb.run_replay(rb.source(n), step)
        total += r["wall_s"] - r["source_s"]
    return total


def _time_parquet(loops: int, n: int, step: int) -> float:
    p = rb.parquet_file(n)
    total = 0.0
    for _ in range(loops):
        total += rb.run_replay(rb.open_source(p), step)["wall_s"]
    return total


def _time_hft(loops: int, n: int) -> float:
    if "ev" not in _cache:
        _cache["ev"] = rb.hft_events(n)
        rb.run_hftbacktest([e[:20_000] for e in _cache["ev"]])
    total = 0.0
    for _ in range(loops):
        total += rb.run_hftbacktest(_cache["ev"])["wall_s"]
    return total


def _add_worker_args(cmd: list[str], args) -> None:
    cmd.extend(("--events", str(args.events), "--step", str(args.step)))


def _rss(n: int) -> float:
    out = subprocess.run(
        [sys.executable, rb.__file__, "--rss", str(n)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[0])


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=_add_worker_args, processes=3, values=1, warmups=1)
    runner.argparser.add_argument("--events", type=int, default=1_000_000)
    runner.argparser.add_argument("--step", type=int, default=rb.STEP_NS)
    args = runner.parse_args()
    n, step = args.events, args.step
    runner.metadata["replay_events"] = n
    runner.metadata["replay_step_ns"] = step
    runner.metadata["replay_dt_ns"] = rb.DT_NS
    if not args.worker:
        rb.run_replay(rb.source(20_000), step)  # compile / load every kernel once
        rb.parquet_file(n)
    res = {
        "memory": runner.bench_time_func(
            f"replay: {n:,} events, full chain, parsing excluded", _time_memory, n, step,
            inner_loops=n,
        ),
        "parquet": runner.bench_time_func(
            f"replay: {n:,} events, full chain, Parquet parsing included", _time_parquet, n,
            step, inner_loops=n,
        ),
    }  # fmt: skip
    try:
        import hftbacktest  # noqa: F401

        hn = min(n, 2_000_000)
        res["hftbacktest"] = runner.bench_time_func(
            f"hftbacktest: {hn:,} events, market maker", _time_hft, hn, inner_loops=hn
        )
    except ImportError:
        pass
    if args.worker or any(b is None for b in res.values()):
        return
    print()
    print(f"{'measurement':<44}{'ns/event':>10}{'M events/s':>12}{'vs target':>11}")
    for b in res.values():
        ns = b.median() * 1e9
        rate = 1e9 / ns
        print(f"{b.get_name():<44}{ns:>10.1f}{rate / 1e6:>12.2f}{rate / TARGET:>10.2f}x")
    print(f"target: {TARGET / 1e6:.1f} M events/s (hftbacktest's figure on this machine)")
    sizes = sorted({1_000_000, n})
    rss = {s: _rss(s) for s in sizes}
    print(
        "peak RSS of one replay: " + ", ".join(f"{s:,} events {v:.0f} MB" for s, v in rss.items())
    )


if __name__ == "__main__":
    main()
