"""Report metrics on hand-computed series: Sharpe, Sortino, drawdown, profit factor, hit
rate, denials by reason, latency percentiles — exact expected numbers."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from bot4.journal import JournalWriter
from bot4.records import (
    ACTION_NEW,
    DECISION_ACCEPT,
    DECISION_DENY,
    EXEC_ACK,
    EXEC_FILL,
    EXEC_REPORT,
    ORDER,
    RISK_DECISION,
)
from bot4.records.errors import Code
from bot4.replay.report import report_from_journal
from bot4.replay.report_metrics import PERIODS_PER_YEAR_NS, equity_metrics, latency_stats

MIN = 60_000_000_000


def test_equity_metrics_on_a_hand_computed_series():
    # equity 0, 100, 50, 150, 120 -> returns 100, -50, 100, -30
    m = equity_metrics([0, 100, 50, 150, 120], 1, MIN)
    mean = 30.0
    sd = math.sqrt((70**2 + 80**2 + 70**2 + 60**2) / 3)  # sample: 6600
    down = math.sqrt((50**2 + 30**2) / 4)  # RMS of the negative returns, target 0
    assert m["intervals"] == 4
    assert m["mean_return"] == mean
    assert m["stdev_return"] == pytest.approx(math.sqrt(6600), rel=1e-15)
    assert m["sharpe"] == pytest.approx(mean / sd, rel=1e-15)
    assert m["sharpe"] == pytest.approx(0.369274472937998, rel=1e-12)
    assert m["sortino"] == pytest.approx(mean / down, rel=1e-15)
    assert m["sortino"] == pytest.approx(1.0289915108550531, rel=1e-12)
    ann = math.sqrt(PERIODS_PER_YEAR_NS / MIN)  # 252 sessions x 390 minutes
    assert m["periods_per_year"] == 98_280
    # 4 returns over 4 minutes: an annualised figure would be noise scaled by sqrt(98,280)
    assert m["sharpe_annualised"] is None and m["sortino_annualised"] is None
    assert m["annualised_note"].startswith("not meaningful: 4 returns over 240 s")
    assert m["max_drawdown_units"] == 50  # 100 -> 50
    # an hour of minute returns is enough: annualised = per interval x sqrt(periods a year)
    hour = [0]
    for i in range(60):
        hour.append(hour[-1] + (100 if i % 3 else -50))
    h = equity_metrics(hour, 1, MIN)
    assert h["intervals"] == 60 and h["annualised_note"] is None
    assert h["sharpe_annualised"] == pytest.approx(h["sharpe"] * ann, rel=1e-15)
    assert h["sortino_annualised"] == pytest.approx(h["sortino"] * ann, rel=1e-15)


def test_equity_metrics_edge_cases():
    flat = equity_metrics([0, 0, 0], 10_000, MIN)
    assert flat["sharpe"] is None and flat["sortino"] is None and flat["max_drawdown_units"] == 0
    losing = equity_metrics([-5, -20], 1, MIN)  # the peak is the start, 0
    assert losing["max_drawdown_units"] == 20
    assert equity_metrics([7], 1, MIN)["sharpe"] is None


def test_latency_stats_percentiles_and_log2_buckets():
    s = latency_stats(np.array([1_000, 2_000, 3_000, 4_000, 100_000]))
    # HdrHistogram's values (bot4.shm.histogram): the highest value of the value's bucket,
    # 2 significant figures (3000 shares [2992, 3007], 100000 [99840, 100351])
    assert (s["count"], s["p50_ns"], s["p90_ns"], s["max_ns"]) == (5, 3_007, 100_351, 100_351)
    assert s["mean_ns"] == 22_000 and s["min_ns"] == 1_000
    hist = {b["lo_ns"]: b["count"] for b in s["histogram"] if b["count"]}
    assert hist == {512: 1, 1024: 1, 2048: 2, 65536: 1}


def _fill(exec_id, side, qty, px, t, fee=0):
    e = np.zeros(1, EXEC_REPORT)
    e["exec_id"], e["side"], e["last_qty"], e["last_price"], e["fee"] = exec_id, side, qty, px, fee
    e["exec_type"], e["instrument"], e["ts_venue_ns"], e["seq"] = EXEC_FILL, 1, t, exec_id
    return e


def test_report_from_journal_round_trips_denials_latency_and_duplicates(tmp_path):
    t0 = 1_340_285_400_000_000_000
    fills = np.concatenate(
        [
            _fill(1, 1, 100, 1_000_000, t0 + 1 * MIN),  # long 100 @ 100
            _fill(2, -1, 100, 1_010_000, t0 + 2 * MIN),  # flat: +1.00 x 100
            _fill(3, -1, 50, 1_010_000, t0 + 3 * MIN),  # short 50 @ 101
            _fill(4, 1, 50, 1_030_000, t0 + 4 * MIN),  # flat: -2.00 x 50
            _fill(5, 1, 10, 1_000_000, t0 + 5 * MIN),  # open: long 10 @ 100
        ]
    )
    ack = np.zeros(2, EXEC_REPORT)
    ack["exec_type"], ack["exec_id"] = EXEC_ACK, [6, 7]
    ack["ts_order_ns"], ack["ts_venue_ns"] = [100, 200], [150, 280]
    orders = np.zeros(3, ORDER)
    orders["action"], orders["ts_recv_ns"], orders["ts_order_ns"] = (
        ACTION_NEW,
        1_000,
        [1_500, 2_000, 9_000],
    )
    dec = np.zeros(5, RISK_DECISION)
    dec["decision"] = [
        DECISION_ACCEPT,
        DECISION_DENY,
        DECISION_DENY,
        DECISION_DENY,
        DECISION_ACCEPT,
    ]
    dec["reason"] = [0, Code.RATE_LIMIT, Code.POSITION_LIMIT, Code.RATE_LIMIT, 0]
    with JournalWriter(tmp_path / "j", fsync="none") as w:
        w.append(fills)
        w.append(fills[1:2])  # a batch journaled twice (restart): counted once
        w.append(ack)
        w.append(orders)
        w.append(dec)
    marks = {1: 1_005_000}  # final mark 100.50
    rep = report_from_journal(tmp_path / "j", marks=marks, span_ns=(t0, t0 + 6 * MIN))
    s = rep.doc["summary"]
    assert s["fills"] == 5
    assert s["realised"] == "0.0000"  # +100.00 - 100.00
    assert s["unrealised"] == "5.0000"  # 10 x (100.50 - 100.00)
    assert (s["round_trips"], s["winning_round_trips"], s["hit_rate"]) == (2, 1, 0.5)
    assert s["profit_factor"] == 1.0
    assert s["max_drawdown"] == "100.0000"  # +100 after trip 1, 0 after trip 2
    assert rep.doc["denials"] == {
        "total": 3,
        "decisions": 5,
        "by_reason": {"RATE_LIMIT": 2, "POSITION_LIMIT": 1},
    }
    lat = rep.doc["latency"]
    assert (lat["tick_to_order"]["p50_ns"], lat["tick_to_order"]["max_ns"]) == (1_003, 8_031)
    assert (lat["order_to_venue"]["min_ns"], lat["order_to_venue"]["max_ns"]) == (50, 80)
    eq = rep.doc["equity"]["equity_units"]
    # minute grid: start, then after each fill; marked at the last fill price between fills
    assert eq == [0, 0, 1_000_000, 1_000_000, 0, 0, 50_000]
    doc = orjson.loads(rep.to_json())
    assert doc["summary"] == s
    html = rep.to_html()
    assert "<script" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    # the tearsheet plots every fill once on the price panel (3 buys, 2 sells) and keeps
    # the configuration out of the way, in a collapsed section at the end
    assert html.count('class="fill buy"') == 3 and html.count('class="fill sell"') == 2
    assert html.index("<h2>Summary") < html.index("<details><summary>Run configuration")
    # round trips closed: long 100 @ 100 -> 101 (+100.00), short 50 @ 101 -> 103 (-100.00)
    assert [(t["side"], t["pnl"]) for t in rep.trades] == [(1, 1_000_000), (-1, -1_000_000)]
    assert rep.doc["trade_stats"]["max_winner"] == "100.0000"
    assert rep.doc["trade_stats"]["max_loser"] == "-100.0000"
    assert [f["position"] for f in rep.fills] == [100, 0, -50, 0, 10]


def test_the_tearsheet_names_event_exact_time_not_a_zero_step():
    from bot4.replay.tearsheet import _step_label

    assert _step_label({"step_ns": 0}) == ", event-exact time"
    assert _step_label({"step_ns": 1_000_000}) == ", step 1ms"
    assert _step_label({}) == ""
