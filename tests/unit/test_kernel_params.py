"""The house rule of issue 13: no numba kernel in bot4/ takes more than 8 parameters
(kernels take named state objects, not loose arrays). tools/kernel_params.py reads the
sources with ast; it found two kernels over the limit that landed after the rule (a CSV
line reader and a book helper), so the suite now holds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_kernel_takes_more_than_eight_parameters():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "kernel_params.py"), "--fail"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("0 kernel(s) over 8 parameters")


def test_the_tool_finds_a_wide_kernel(tmp_path):
    """The check can fail: a module with a 9-parameter njit function is reported."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import kernel_params
    finally:
        sys.path.pop(0)
    (tmp_path / "bot4").mkdir()
    (tmp_path / "bot4" / "wide.py").write_text(
        "from numba import njit\n\n\n@njit\ndef k(a, b, c, d, e, f, g, h, i):\n    pass\n"
    )
    found = kernel_params.wide_kernels(tmp_path, 8)
    assert [(n, name) for n, _path, _line, name in found] == [(9, "k")]
