"""The tools' warm recipes (``bot4 warm --all``): the replay engine's kernels, at this
host's SIMD width and at the other one. Their jobs name them as
``bot4.warm.recipes:<function>`` (:func:`bot4.pipeline.warm.runner.recipe`); the
pipeline's recipes are :mod:`bot4.pipeline.warm.recipes`.
"""

from __future__ import annotations

import os
import sys


def _job_replay() -> int:
    from bot4.replay.engine import warm as warm_replay

    return warm_replay()


def _job_replay_width() -> int:
    """:func:`_job_replay` at the SIMD width the host does not use by default, in a child
    process: the width is fixed when numba is first imported (:mod:`bot4.simd`). The
    child's cache entries are keyed by that width, which this process cannot check, so
    the job is never counted warm; with its entries cached it only loads them."""
    import subprocess

    from bot4.simd import has_avx512

    env = dict(os.environ, BOT4_SIMD="512" if has_avx512() else "256")
    env.pop("NUMBA_CPU_FEATURES", None)
    env.pop("NUMBA_CPU_NAME", None)
    code = "from bot4.replay.engine import warm; print(warm())"
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        lines = (r.stderr or "").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit {r.returncode}")
    return int(r.stdout.split()[-1])
