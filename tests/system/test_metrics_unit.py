"""systemd/bot4-metrics.service: ``systemd-analyze verify`` accepts it beside the other
units, and its offline exposure score stays at most 4 (no systemd as PID 1 needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.system,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze"),
]

ROOT = Path(__file__).resolve().parents[2]
UNIT = "bot4-metrics.service"
INSTALLED_BOT4 = "/opt/bot4/venv/bin/bot4"
BOT4 = str(Path(sys.executable).with_name("bot4"))


def _analyze(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # verify refuses a unit whose binary does not exist: point it at this venv's bot4
    text = (ROOT / "systemd" / UNIT).read_text()
    assert INSTALLED_BOT4 in text
    (tmp_path / UNIT).write_text(text.replace(INSTALLED_BOT4, BOT4))
    return subprocess.run(
        ["systemd-analyze", *args, f"./{UNIT}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="", SYSTEMD_COLORS="0"),
    )


def test_exporter_unit_verifies_and_exposure_is_at_most_4(tmp_path):
    r = _analyze(tmp_path, "verify")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "bot4" not in out, out
    r = _analyze(tmp_path, "security", "--offline=true")
    m = re.search(r"Overall exposure level for bot4-metrics\.service: (\d+\.\d+)", r.stdout)
    if m is None and "offline" in r.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {r.stderr.strip()}")
    assert m, r.stdout + r.stderr
    assert float(m[1]) <= 4.0, r.stdout
