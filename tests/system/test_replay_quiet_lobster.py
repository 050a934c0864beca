"""Quiet steps (``bot4.replay.quiet``) over whole LOBSTER sample days: the same output
files, byte for byte, as the Python scheduler doing every step itself. The AMZN level-5
day is the one whose intents meet market data received at their own step's time after a
long gap (the risk stage reads that market data before its intents)."""

from __future__ import annotations

import pytest

import bot4.replay.engine as engine
from bot4.replay.runner import replay
from tests.data_paths import lobster_dir

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]


@pytest.mark.parametrize("name", ["AMZN_2012-06-21_5", "GOOG_2012-06-21_1"])
def test_lobster_day_quiet_equals_the_scheduler(tmp_path, monkeypatch, name):
    z = lobster_dir() / "zips" / f"LOBSTER_SampleFile_{name}.zip"
    if not z.exists():
        pytest.skip(f"{z} not present")
    outs = {}
    for quiet in (True, False):
        monkeypatch.setattr(engine, "QUIET_STEPS", quiet)
        d = tmp_path / ("quiet" if quiet else "python")
        replay(z, d, progress=None)
        outs[quiet] = {
            str(p.relative_to(d)): p.read_bytes()
            for p in sorted(d.rglob("*"))
            if p.is_file() and p.name not in ("run.json", "report.html")
        }
    assert outs[True].keys() == outs[False].keys()
    for k in outs[True]:
        assert outs[True][k] == outs[False][k], f"{k} differs"
