"""Each LOBSTER sample day (AAPL, AMZN, GOOG, 2012-06-21, level 1) replays end to end
through the default chain — md feed, signals, risk, orders, venue in order mode on the
real adds / cancels / executions, persistence — in deterministic mode, and reports.

Asserted for each: orders were placed and filled; the report's positions equal the net of
the fills in the journal and the risk stage's positions; its realised PnL equals the risk
stage's to the unit; denials by reason add up to the denials; the HTML holds its plots."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.records import EXEC_FILL, EXEC_PARTIAL_FILL, RT_EXEC_REPORT
from bot4.replay.runner import replay
from tests.data_paths import lobster_dir

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


def journal_net(journal) -> dict[int, int]:
    net: dict[int, int] = {}
    seen = set()
    for _pos, rtype, recs in JournalReader(journal):
        if rtype != RT_EXEC_REPORT:
            continue
        for r in recs:
            if r["exec_type"] in (EXEC_PARTIAL_FILL, EXEC_FILL) and r["last_qty"] > 0:
                assert int(r["exec_id"]) not in seen
                seen.add(int(r["exec_id"]))
                net[int(r["instrument"])] = net.get(int(r["instrument"]), 0) + int(
                    r["last_qty"]
                ) * int(r["side"])
    return net


@pytest.mark.parametrize("ticker", ["AAPL", "AMZN", "GOOG"])
def test_lobster_day_replays_through_the_full_chain_and_reports(ticker, tmp_path):
    z = lobster_dir() / "zips" / f"LOBSTER_SampleFile_{ticker}_2012-06-21_1.zip"
    out = replay(z, tmp_path / "out", progress=None)
    doc = out.report.doc
    s = doc["summary"]
    stages = doc["run"]["stages"]
    assert doc["run"]["source"]["kind"] == "lobster"
    assert doc["run"]["events"] > 100_000  # every message, its trades and quotes
    venue = stages["venue"]
    assert venue["ext_added"] > 20_000 and venue["md_ignored"] > 0  # order mode: quotes ignored
    assert s["orders"] > 100 and s["fills"] > 100, s  # the default strategy trades the day
    assert venue["fills"] == s["fills"]
    net = journal_net(out.out_dir / "journal")
    pos = {p["instrument"]: p["position"] for p in doc["positions"].values()}
    assert pos == net  # positions are the net of the fills
    risk = stages["risk"]["positions"]  # instruments with a position, orders or PnL
    assert set(risk) == set(doc["positions"]) == {ticker}
    for sym, p in doc["positions"].items():
        assert p["position"] == risk[sym]["position"]
        assert Decimal(p["realised"]) == Decimal(risk[sym]["realised"]) / 10_000
        assert Decimal(p["fees"]) == Decimal(risk[sym]["fees"]) / 10_000
    den = doc["denials"]
    assert sum(den["by_reason"].values()) == den["total"] <= den["decisions"]
    decisions = stages["risk"]["decisions"]
    assert den["decisions"] == sum(decisions.values())
    assert den["total"] == sum(v for k, v in decisions.items() if k != "ACCEPTED")
    assert stages["venue"]["live_orders"] == 0  # the OMS's drain cancelled what rested
    lat = doc["latency"]["tick_to_order"]
    assert lat["count"] == s["orders"] and 0 <= lat["p50_ns"] <= 100_000  # one step at most
    assert doc["metrics"]["intervals"] >= 380  # a 6.5 h session in minutes
    assert np.isfinite(doc["metrics"]["max_drawdown_units"])
    html = out.html_path.read_text()
    # the tearsheet's panels: price with our quotes and fills, position, equity and
    # drawdown, the latency histograms
    for h2 in ("Price, our quotes and fills", "Position", "Equity and drawdown", "Latency"):
        assert f"<h2>{h2}</h2>" in html, h2
    assert html.count("<svg") == 6 and ticker in html
