"""The consumers of the md stage's rebuilt books: the risk stage's liquidity check and its
halt on an inconsistent book (``MDF_BOOK_STALE``), and the signals stage's imbalance over
N levels (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.pipeline.topology import RingSpec, StageSpec
from bot4.records import (
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    BOOK_LEVEL,
    DECISION_ACCEPT,
    DECISION_DENY,
    MARKET_DATA,
    MD_QUOTE,
    MDF_BOOK_STALE,
    ORDER,
    ORDER_INTENT,
    RISK_DECISION,
    SIDE_BUY,
    SIDE_SELL,
)
from bot4.records.errors import Code
from bot4.shm import trading_state as T
from bot4.stages.risk import RiskStage
from bot4.stages.signals import S_DEPTH, S_DIMB, depth_kernel, features_of

BID, ASK = 1_000_000, 1_000_200
INSTRUMENTS = """
[[instrument]]
id = 1
symbol = "AAPL"
price_scale = 10000
tick_size = "0.01"
"""


@pytest.fixture
def risk(tmp_path):
    path = tmp_path / "instruments.toml"
    path.write_text(INSTRUMENTS)
    params = {
        "instruments_file": str(path),
        "shared": False,
        "max_tracked_orders": 16,
        "max_open_orders_total": 5,
        "rate_per_s": 0,
        "max_book_take_pct": 50,
        "breakers": [{"name": "venue"}],
    }
    spec = StageSpec(name="risk", kind="risk", core=0, index=4, batch=8, params=params)
    types = ("ORDER_INTENT", "EXEC_REPORT", "MARKET_DATA", "BOOK_LEVEL")
    ins = [RingSpec(f"i{k}", "x", "risk", t, 8, 2, 0, k == 1) for k, t in enumerate(types)]
    outs = [
        RingSpec(f"o{k}", "risk", "y", t, 8, 2, 0, False)
        for k, t in enumerate(("ORDER", "RISK_DECISION"))
    ]
    st = RiskStage(spec, ins, outs, "unit")
    st.setup()
    st.clock = lambda: 10**12
    return st


def _run(st, i, batch):
    outs = [np.zeros(32, ORDER), np.zeros(32, RISK_DECISION)]
    counts = np.zeros(2, np.int64)
    st.process(i, batch, outs, counts, 1)
    return outs[0][: counts[0]], outs[1][: counts[1]]


def _quotes(flags=0):
    md = np.zeros(2, MARKET_DATA)
    md["instrument"] = 1
    md["kind"] = MD_QUOTE
    md["side"] = [SIDE_BUY, SIDE_SELL]
    md["price"] = [BID, ASK]
    md["qty"] = 100
    md["flags"] = flags
    return md


def _levels(rows):
    lv = np.zeros(len(rows), BOOK_LEVEL)
    for k, (side, level, qty) in enumerate(rows):
        lv[k]["instrument"] = 1
        lv[k]["side"] = side
        lv[k]["level"] = level
        lv[k]["qty"] = qty
        lv[k]["price"] = ASK + 100 * level if side == SIDE_SELL else BID - 100 * level
    return lv


def _buy(qty, seq):
    it = np.zeros(1, ORDER_INTENT)
    it["seq"] = seq
    it["instrument"] = 1
    it["side"] = SIDE_BUY
    it["qty"] = qty
    it["limit_price"] = BID
    it["stop_price"] = BID - 5_000
    it["strategy"] = 1
    return it


def test_an_order_larger_than_its_share_of_the_visible_book_is_denied(risk):
    _run(risk, 2, _quotes())
    _, d = _run(risk, 0, _buy(100, 1))
    assert d["decision"][0] == DECISION_DENY and d["reason"][0] == Code.BOOK_LIQUIDITY
    assert (int(d["checked_value"][0]), int(d["limit_value"][0])) == (100, 0)  # no depth yet
    _run(risk, 3, _levels([(SIDE_SELL, 0, 100), (SIDE_SELL, 1, 60), (SIDE_BUY, 0, 900)]))
    _, d = _run(risk, 0, _buy(100, 2))
    assert d["reason"][0] == Code.BOOK_LIQUIDITY
    assert (int(d["checked_value"][0]), int(d["limit_value"][0])) == (100, 80)  # 50% of 160
    _run(risk, 3, _levels([(SIDE_SELL, 1, 100)]))  # level 1 grew: 200 visible
    o, d = _run(risk, 0, _buy(100, 3))
    assert d["decision"][0] == DECISION_ACCEPT and o["action"][0] == ACTION_NEW


def test_a_flagged_inconsistent_book_halts_the_instrument_until_it_is_consistent(risk):
    _run(risk, 2, _quotes())
    assert T.state_of(risk.book.trading, 1) == T.ACTIVE
    o, _ = _run(risk, 2, _quotes(MDF_BOOK_STALE))
    assert T.state_of(risk.book.trading, 1) == T.HALTED
    assert [int(x["instrument"]) for x in o if x["action"] == ACTION_CANCEL_ALL] == [1]
    _run(risk, 2, _quotes(MDF_BOOK_STALE))  # one halt per episode
    assert risk.book.stale()["book_stale_episodes"] == 1
    _, d = _run(risk, 0, _buy(1, 1))
    assert d["reason"][0] == Code.STATE_HALTED
    _run(risk, 2, _quotes())
    assert T.state_of(risk.book.trading, 1) == T.ACTIVE


def test_signals_imbalance_over_n_levels_replaces_the_top_of_book_one():
    st = np.zeros((3, 15))
    st[1, :4] = [BID, 100.0, ASK, 300.0]  # bid, bid qty, ask, ask qty
    st[1, 4] = 0.5 * (BID + ASK)
    x = np.zeros(8)
    features_of(st, 1, x)
    assert x[2] == pytest.approx((100 - 300) / 400)  # top of book
    dq = np.zeros((3, 2, 3))
    lv = _levels([(SIDE_BUY, 0, 100), (SIDE_BUY, 1, 500), (SIDE_SELL, 0, 300), (SIDE_BUY, 3, 9)])
    assert depth_kernel(lv, dq, st) == 3  # level 3 is beyond the 3 levels used
    assert st[1, S_DEPTH] == 1.0 and st[1, S_DIMB] == pytest.approx((600 - 300) / 900)
    features_of(st, 1, x)
    assert x[2] == pytest.approx(1 / 3)
