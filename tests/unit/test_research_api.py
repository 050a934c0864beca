"""The notebook API: ``bot4.replay(...)`` gives the same numbers as the replay runner with
the same topology, as DataFrames that agree with the report; ``bot4.sweep(...)`` returns
the table, the best points and the failed runs."""

from __future__ import annotations

import pytest

import bot4
from tests.data_paths import lobster_dir

pd = pytest.importorskip(
    "pandas",
    reason="the research extra (pip install -e .[research]) is not installed; CI installs it via the test extra",
)


def fixture() -> str:
    return str(lobster_dir() / "aapl_level10_first999")


def test_bot4_replay_frames_agree_with_the_report(tmp_path):
    r = bot4.replay(
        fixture(),
        out=tmp_path / "r",
        params={"signals.threshold": 0.5, "latency.order": "const:80us"},
        seed=7,
    )
    doc = r.doc
    assert doc["run"]["latency"]["order"] == "const:80000ns" and doc["run"]["seed"] == 7
    f = r.fills
    assert len(f) == doc["summary"]["fills"] > 0
    assert str(f["time"].dt.tz) == "America/New_York"
    assert f["time"].iloc[0].strftime("%Y-%m-%d %H:%M").startswith("2012-06-21 09:3")
    # the position column is the running sum of signed fills, per symbol
    signed = (f["side"] * f["qty"]).groupby(f["symbol"]).cumsum()
    assert (signed == f["position"]).all()
    end = {s: p["position"] for s, p in doc["positions"].items()}
    assert f.groupby("symbol")["position"].last().to_dict() == end
    t = r.trades
    assert len(t) == doc["summary"]["round_trips"]
    assert (t["pnl"] > 0).sum() == doc["summary"]["winning_round_trips"]
    e = r.equity
    assert e["equity"].iloc[-1] == pytest.approx(float(doc["summary"]["total_pnl"]))
    assert (e["drawdown"] <= 0).all()
    assert r.metrics["fills"] == len(f) and r.html_path.is_file()
    assert "tearsheet" in r._repr_html_()


def test_bot4_sweep_returns_the_table_best_points_and_failures(tmp_path):
    s = bot4.sweep(
        fixture(),
        grid={"signals.threshold": [0.5, 1.0], "signals.qty": [100, 0]},
        out=tmp_path / "s",
        serial=True,
    )
    assert len(s.table) == 4 and len(s.failed) == 2 and len(s.ok) == 2
    best = s.best(2)
    assert list(best["failed"]) == [0, 0] and best["total_pnl"].iloc[0] >= best["total_pnl"].iloc[1]
    key = s.ok["key"].iloc[0]
    assert (s.run_dir(key) / "report.html").is_file() and s.report_path.is_file()
    assert "bot4 sweep" in s._repr_html_()
