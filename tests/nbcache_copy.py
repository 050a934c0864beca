"""A copy of the bot4 package with a numba cache of its own, for the cache-key tests: a
child process imports the copy (PYTHONPATH first), runs a script and prints one JSON line
of what it saw (cache paths, hits, misses), so a test can edit a file of the copy and watch
which kernels recompile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bot4


def copy_package(tmp_path: Path) -> tuple[Path, Path]:
    """(the folder holding the copied ``bot4`` package, an empty cache folder)."""
    src = tmp_path / "src"
    shutil.copytree(
        Path(bot4.__file__).parent, src / "bot4", ignore=shutil.ignore_patterns("__pycache__")
    )
    return src, tmp_path / "cache"


def run_in_copy(pkg_parent: Path, cache: Path, child: str, timeout: float = 300) -> dict:
    """Run ``child`` (Python source) against the copy; its last stdout line, parsed."""
    env = dict(os.environ, PYTHONPATH=str(pkg_parent), NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run(
        [sys.executable, "-c", child],
        env=env,
        cwd=pkg_parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])
