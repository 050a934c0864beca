"""Sweep throughput: the same replays one after the other in one process vs fanned out on a
local Ray (issue 20). Quick look, not a pyperf benchmark: one sitting, other work on the
machine shows in the figures.

    python perf/sweepbench.py                       # GOOG level-1 day, 6 thresholds
    python perf/sweepbench.py --runs 8 --cpus 2 DATA
    python perf/sweepbench.py --runs 8 --rounds 2     # ABBA order: drift in the load shows

Prints, for each executor (serial; Ray with 1 CPU; Ray with ``--cpus``): wall seconds,
runs per minute, the sum of the runs' own wall times (inside the worker), Ray's start-up,
and Ray's overhead per run = (wall - start-up - sum of run times / CPUs) / runs
(scheduling, argument and result transfer, a worker's first import). Ray with one CPU runs
the replays one at a time as the serial baseline does, so its ratio to serial is Ray's
cost without the cores' share in it; the last lines give each Ray row's runs/min over all
rounds as a multiple of serial's, with and without Ray's start-up. All sweeps start from a warm numba cache (``bot4 warm``); the first
Ray runs still pay each worker's import and cache load. The load average is printed before
and after: on a machine shared with other work, parallel runs gain only what the other
work leaves of the cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (
    ROOT.parent / "shared/data/lobster-2012-06-21/zips/LOBSTER_SampleFile_GOOG_2012-06-21_1.zip"
)


def _sweep(data, out, values, ex: str, cpus: int) -> tuple:
    """One sweep; (name, runs, ok, wall s, sum of run times s, start-up s, overhead/run s)."""
    from bot4.research.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(data=data, out=str(out), grid=[("signals.threshold", values)],
                      executor=ex, num_cpus=cpus)  # fmt: skip
    t0 = time.perf_counter()
    res = run_sweep(cfg)
    wall = time.perf_counter() - t0
    t = res.table
    n, inside = len(t), float(t["wall_s"].sum())
    over = (wall - res.startup_s - inside / cpus) / n if ex == "ray" else None
    name = ex if ex == "serial" else f"ray x{cpus}"
    return name, n, int((t["status"] == "ok").sum()), wall, inside, res.startup_s, over


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="*", default=[str(DEFAULT)])
    ap.add_argument("--runs", type=int, default=6, help="grid points (signals.threshold)")
    ap.add_argument("--cpus", type=int, default=None, help="Ray CPUs (default: all)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat, every other round in reverse order"
    )
    a = ap.parse_args()

    values = [round(0.25 + 0.25 * i, 2) for i in range(a.runs)]
    plan = [("serial", 1), ("ray", 1), ("ray", a.cpus or os.cpu_count())]
    tmp = Path(tempfile.mkdtemp(prefix="bot4-sweepbench-"))
    try:
        print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        print(f"{'round':>5} {'executor':8} {'runs':>4} {'ok':>3} {'wall s':>7} {'runs/min':>8} "
              f"{'sum run s':>9} {'start s':>7} {'overhead/run s':>14}")  # fmt: skip
        total: dict[str, list[float]] = {}
        for r in range(a.rounds):
            for ex, cpus in plan if r % 2 == 0 else plan[::-1]:
                out = tmp / f"{r}-{ex}{cpus}"
                name, n, ok, wall, inside, start, over = _sweep(a.data, out, values, ex, cpus)
                shutil.rmtree(out, ignore_errors=True)
                o = "-" if over is None else f"{over:.2f}"
                print(f"{r:>5} {name:8} {n:>4} {ok:>3} {wall:>7.1f} {60 * n / wall:>8.1f} "
                      f"{inside:>9.1f} {start:>7.1f} {o:>14}", flush=True)  # fmt: skip
                w = total.setdefault(name, [0.0, 0.0])
                w[0] += wall
                w[1] += wall - start
        serial = total["serial"][0]
        for name, (wall, no_start) in total.items():
            if name != "serial":
                print(f"{name}: {serial / wall:.2f}x the serial runs/min over all rounds "
                      f"({serial / no_start:.2f}x without Ray's start-up)")  # fmt: skip
        print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
