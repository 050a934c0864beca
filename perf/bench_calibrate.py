"""GARCH(1,1) calibration time: ``bot4.models.garch.fit_garch`` against ``arch``.

Usage::

    .venv/bin/python perf/bench_calibrate.py            # pyperf defaults (~1 min)
    .venv/bin/python perf/bench_calibrate.py --fast     # fewer worker processes
    .venv/bin/python perf/bench_calibrate.py -o calib.json

Both fit the same 3000-point percent-return series (GARCH(1,1) with omega 0.05, alpha 0.08,
beta 0.9, Gaussian shocks, seed 1) with a constant mean; arch as
``arch_model(r, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
.fit(disp="off")``, model construction included. ``fit_garch`` runs SLSQP from up to
five starting points (later ones stop once they reach the first one's optimum) where arch
runs it once, so the ratio compares whole calibrations, not optimiser steps. The numba
kernels are compiled (or loaded from the cache) before timing starts. The last line printed
is the ratio of times, arch / bot4, by mean and by median (> 1: bot4 is faster).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyperf
from arch import arch_model

from bot4.models.garch import fit_garch

NOBS = 3000
OMEGA, ALPHA, BETA, MU = 0.05, 0.08, 0.90, 0.03  # percent returns
SEED = 1


def simulate(n: int = NOBS, seed: int = SEED, burn: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n + burn)
    s2 = OMEGA / (1.0 - ALPHA - BETA)
    out = np.empty(n + burn)
    for t in range(n + burn):
        e = math.sqrt(s2) * z[t]
        out[t] = MU + e
        s2 = OMEGA + ALPHA * e * e + BETA * s2
    return out[burn:]


def fit_arch(r: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return arch_model(
            r, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False
        ).fit(disp="off")


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = f"GARCH(1,1) MLE on {NOBS} percent returns, constant mean"
    r = simulate()
    fit_garch(r, "constant")  # compile or load the numba kernels outside the timing
    ours = runner.bench_func("fit_garch", fit_garch, r, "constant")
    theirs = runner.bench_func("arch_model.fit", fit_arch, r)
    if runner.args.worker or ours is None or theirs is None:
        return
    print(
        f"ratio arch / bot4: {theirs.mean() / ours.mean():.2f}x (mean), "
        f"{theirs.median() / ours.median():.2f}x (median)"
    )


if __name__ == "__main__":
    main()
