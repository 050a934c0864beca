"""The machine's own tail: how often a compiled busy loop on one core loses the core.

A numba loop reads the clock back to back for ``--seconds`` and records every gap
between two reads longer than 10 µs: time the core spent elsewhere (interrupts, kernel
work, another task, or the hypervisor running something else on the vCPU). Nothing of
bot4's runs in the loop, so what it reports is the floor under any in-group hop's tail
on that core: a hop of a few µs that overlaps a gap waits for it.

    taskset -c 1 .venv/bin/python perf/jitter.py --seconds 10

Measured on this 2-core VM, core 1 kept for it (IRQs and unbound workqueues on core 0,
7 December): 367 gaps > 10 µs a second, 56 > 50 µs, 9 > 100 µs, max 359 µs; 1.4 % of the
time. See docs/hotpath.md, "The tail".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot4.shm.atomics import monotonic_ns  # noqa: E402


@njit(cache=False)
def spin(dur_ns, min_gap_ns, out):
    """Read the clock for ``dur_ns``; each gap > ``min_gap_ns`` into ``out`` as (start
    offset, length) ns. Returns how many."""
    t0 = monotonic_ns()
    last = t0
    n = 0
    while True:
        t = monotonic_ns()
        if t - last > min_gap_ns and n < out.shape[0]:
            out[n, 0] = last - t0
            out[n, 1] = t - last
            n += 1
        last = t
        if t - t0 > dur_ns:
            return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args(argv)
    out = np.zeros((1_000_000, 2), np.int64)
    spin(1000, 10_000, out)  # compile
    n = spin(int(a.seconds * 1e9), 10_000, out)
    g = out[:n, 1] / 1e3
    per_s = 1 / a.seconds
    print(
        f"gaps > 10 us: {n * per_s:.0f}/s, > 50 us: {(g > 50).sum() * per_s:.0f}/s, "
        f"> 100 us: {(g > 100).sum() * per_s:.1f}/s, max {g.max() if n else 0:.0f} us; "
        f"{g.sum() / 1e4 / a.seconds:.2f} % of the time"
    )


if __name__ == "__main__":
    main()
