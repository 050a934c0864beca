"""Signals kernel benchmark (pyperf): ticks/s of the numba kernel against vectorised numpy,
and 256-bit against 512-bit vectors.

    .venv/bin/python perf/bench_signals.py --fast            # one table, ratios in the same run
    .venv/bin/python perf/bench_signals.py -o perf/results/signals.json

Each pyperf benchmark times one pass over the same 1 M synthetic quotes; the table prints
ticks/s, ns per tick and the ratio to numpy. The SIMD comparison re-runs the numba pass in
two child processes with BOT4_SIMD=256 and BOT4_SIMD=512 (numba's CPU features, see
bot4/simd.py), on hosts with AVX-512.
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyperf  # noqa: E402
import sigbench as sb  # noqa: E402

from bot4.models.orthogonal import Orthogonaliser  # noqa: E402
from bot4.stages import signals as S  # noqa: E402

N = 1_000_000


def _time(loops: int, fn) -> float:
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        fn()
    return pyperf.perf_counter() - t0


def simd_pass(mode: str) -> float:
    """ticks/s of the numba pass under BOT4_SIMD=mode, in a fresh process."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import sigbench as sb, bot4;"
        "from bot4.models.orthogonal import Orthogonaliser; from bot4.stages import signals as S;"
        f"r = sb.make_quotes({N}); nb = sb.NumbaSignals(Orthogonaliser.identity(S.NF)); nb.run(r[:1000]);"
        "print(bot4.SIMD_MODE, sb.ticks_per_second(lambda: nb.run(r), len(r), 5))"
    )
    env = dict(os.environ, BOT4_SIMD=mode)
    env.pop("NUMBA_CPU_FEATURES", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    got_mode, rate = out.stdout.split()
    return float(rate) if got_mode == mode else float("nan")


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["ticks_per_loop"] = N
    recs = sb.make_quotes(N)
    ortho = Orthogonaliser.identity(S.NF)
    nb = sb.NumbaSignals(ortho)
    nb.run(recs[:1000])
    b_numba = runner.bench_time_func(
        "signals numba (batches of 256)", _time, lambda: nb.run(recs), inner_loops=1
    )
    b_numpy = runner.bench_time_func(
        "signals numpy (vectorised, whole array)", _time, lambda: sb.numpy_signals(recs, ortho)
    )
    if runner.args.worker or b_numba is None or b_numpy is None:
        return
    t_nb, t_np = b_numba.median(), b_numpy.median()
    print()
    print(f"{'implementation':<44}{'ticks/s':>14}{'ns/tick':>10}{'vs numpy':>10}")
    for name, t in (
        ("numba kernel, batches of 256", t_nb),
        ("numpy vectorised, whole array", t_np),
    ):
        print(f"{name:<44}{N / t:>14,.0f}{t / N * 1e9:>10.1f}{t_np / t:>9.1f}x")
    from bot4.simd import has_avx512

    if has_avx512():
        r256, r512 = simd_pass("256"), simd_pass("512")
        print(f"{'numba, BOT4_SIMD=256':<44}{r256:>14,.0f}")
        print(f"{'numba, BOT4_SIMD=512':<44}{r512:>14,.0f}{'':>10}{r512 / r256:>9.2f}x of 256-bit")
    else:
        print("host has no AVX-512: 256 vs 512 not measured")


if __name__ == "__main__":
    main()
