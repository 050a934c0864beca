"""Sweep throughput: the same replays one after the other in one process vs fanned out on a
local Ray (issue 20). Quick look, not a pyperf benchmark: one sitting, other work on the
machine shows in the figures.

    python perf/sweepbench.py                       # GOOG level-1 day, 6 thresholds
    python perf/sweepbench.py --runs 8 --cpus 2 DATA

Prints, for each executor: wall seconds, runs per minute, the sum of the runs' own wall
times (inside the worker), Ray's start-up, and Ray's overhead per run = (wall - start-up -
sum of run times / CPUs) / runs (scheduling, argument and result transfer, a worker's
first import). Both sweeps start from a warm numba cache (``bot4 warm``); the first Ray
runs still pay each worker's import and cache load.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (
    ROOT.parent / "shared/data/lobster-2012-06-21/zips/LOBSTER_SampleFile_GOOG_2012-06-21_1.zip"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="*", default=[str(DEFAULT)])
    ap.add_argument("--runs", type=int, default=6, help="grid points (signals.threshold)")
    ap.add_argument("--cpus", type=int, default=None, help="Ray CPUs (default: all)")
    a = ap.parse_args()
    from bot4.research.sweep import SweepConfig, run_sweep

    values = [round(0.25 + 0.25 * i, 2) for i in range(a.runs)]
    tmp = Path(tempfile.mkdtemp(prefix="bot4-sweepbench-"))
    try:
        rows = []
        for ex in ("serial", "ray"):
            cfg = SweepConfig(
                data=a.data,
                out=str(tmp / ex),
                grid=[("signals.threshold", values)],
                executor=ex,
                num_cpus=a.cpus,
            )
            t0 = time.perf_counter()
            out = run_sweep(cfg)
            wall = time.perf_counter() - t0
            t = out.table
            n = len(t)
            inside = float(t["wall_s"].sum())
            cpus = 1 if ex == "serial" else (a.cpus or __import__("os").cpu_count())
            over = (wall - out.startup_s - inside / cpus) / n if ex == "ray" else None
            rows.append((ex, n, int((t["status"] == "ok").sum()), wall, 60 * n / wall,
                         inside, out.startup_s, over))  # fmt: skip
        print(f"{'executor':8} {'runs':>4} {'ok':>3} {'wall s':>7} {'runs/min':>8} "
              f"{'sum run s':>9} {'start s':>7} {'overhead/run s':>14}")  # fmt: skip
        for ex, n, ok, wall, rpm, inside, start, over in rows:
            o = "-" if over is None else f"{over:.2f}"
            print(f"{ex:8} {n:>4} {ok:>3} {wall:>7.1f} {rpm:>8.1f} {inside:>9.1f} "
                  f"{start:>7.1f} {o:>14}")  # fmt: skip
        print(f"speed-up {rows[0][3] / rows[1][3]:.2f}x on {rows[1][0]} with "
              f"{a.cpus or 'all'} CPUs")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
