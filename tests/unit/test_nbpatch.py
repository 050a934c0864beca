"""``bot4.nbpatch``: numba's ``inline='always'`` inliner patched to copy a callee's IR with
one memo: it is applied in every process that imports bot4, can be turned off
(``BOT4_NUMBA_PATCH=0``), and the machine code it gives is the code numba gives unpatched
(nested inline helpers, a loop, a tuple argument; the default topology's 210 kernels were
compared the same way, docs/compile.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

KERNELS = """
import numpy as np
from numba import njit

@njit(inline="always")
def _leaf(a, k):
    if a[k] > 0:
        return a[k] * 2
    return -a[k]

@njit(inline="always")
def _mid(st, k):
    a, b = st
    x = _leaf(a, k) + _leaf(b, k)
    for j in range(k):
        x += _leaf(a, j)
    return x

@njit
def entry(a, b):
    t = 0
    for k in range(a.shape[0]):
        t += _mid((a, b), k) + _leaf(b, k)
    return t
"""

RUN = """
import json, sys
import numpy as np
import bot4
from bot4 import nbpatch
import kernels_np
a = np.arange(-5, 5, dtype=np.int64)
r = kernels_np.entry(a, a[::-1].copy())
cres = next(iter(kernels_np.entry.overloads.values()))
print(json.dumps({"applied": nbpatch.applied, "result": int(r),
                  "asm": cres.library.get_asm_str()}))
"""


def _run(tmp_path, flag: str) -> dict:
    env = dict(os.environ, BOT4_NUMBA_PATCH=flag, NUMBA_CACHE_DIR=str(tmp_path / f"c{flag}"))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", RUN], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_patched_inliner_gives_numbas_machine_code(tmp_path):
    (tmp_path / "kernels_np.py").write_text(textwrap.dedent(KERNELS))
    on, off = _run(tmp_path, "1"), _run(tmp_path, "0")
    assert on["applied"] and not off["applied"]
    assert on["result"] == off["result"]
    assert on["asm"] == off["asm"]


def test_unknown_source_is_left_alone():
    from bot4 import nbpatch

    class Worker:
        def inline_ir(self, caller_ir, block, i, callee_ir, callee_freevars, arg_typs=None):
            return None

    class Module:
        InlineWorker = Worker
        __file__ = __file__
        __dict__ = {}

    before = nbpatch.applied
    nbpatch.applied = False
    try:
        assert nbpatch.apply(Module) is False
        assert Worker.inline_ir.__name__ == "inline_ir" and not hasattr(
            Worker.inline_ir, "_bot4_patched"
        )
    finally:
        nbpatch.applied = before
