"""``bot4.nbkit.inner``: a helper compiled without numba's CPython wrapper gives its
callers the same results, caches like ``@njit(cache=True)``, and refuses a call from
Python with a TypeError (numba alone would jump to a null entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

KERNELS = """
import numpy as np
from numba import njit
from bot4.nbkit.inner import inner

@inner
def add_state(st, k):
    a, b = st
    a[k] += b[k]
    return a[k]

@inner(inline="always")
def twice(x):
    return 2 * x

@njit(cache=True)
def entry(a, b):
    t = 0.0
    for k in range(a.shape[0]):
        t += add_state((a, b), k) + twice(k)
    return t
"""

RUN = """
import json, sys
import numpy as np
sys.path.insert(0, {d!r})
import kern
a, b = np.arange(4.0), np.ones(4)
out = {{"total": kern.entry(a, b), "a": a.tolist(),
        "hits": sum(kern.entry.stats.cache_hits.values())}}
try:
    kern.add_state((a, b), 0)
except TypeError as e:
    out["python_call"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.timeout(240)
def test_an_inner_helper_gives_the_same_results_caches_and_refuses_python(tmp_path):
    (tmp_path / "kern.py").write_text(textwrap.dedent(KERNELS))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    runs = []
    for _ in range(2):
        p = subprocess.run(
            [sys.executable, "-c", RUN.format(d=str(tmp_path))],
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
        )
        assert p.returncode == 0, p.stderr
        runs.append(json.loads(p.stdout))
    for r in runs:
        assert r["a"] == [1.0, 2.0, 3.0, 4.0]
        assert r["total"] == 1.0 + 2.0 + 3.0 + 4.0 + 2 * (0 + 1 + 2 + 3)
        assert "kern.add_state is compiled for other kernels only" in r["python_call"]
    assert runs[0]["hits"] == 0 and runs[1]["hits"] == 1  # the second process loaded it
