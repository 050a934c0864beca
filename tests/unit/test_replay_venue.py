"""Fill realism of the simulated venue as the replay uses it.

* order-level data (LOBSTER-style adds, cancels, executions): our resting order at price p
  behind 300 shares fills only once those 300 shares are executed or cancelled;
* quote-level data (quotes and trade prints): with ``quote_fill = trade_through`` a touch
  never fills, a print or a quote strictly through our price does; the queue model fills on
  a touch once the displayed size ahead traded;
* fees and rebates (maker / taker, per share) and partial fills reach PnL in the report,
  to the unit.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from bot4.journal import JournalWriter
from bot4.records import (
    ACTION_NEW,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_QUOTE,
    MD_TRADE,
    ORDER,
    OT_LIMIT,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
)
from bot4.replay.report import report_from_journal
from bot4.venue.matching import QF_QUEUE, QF_TRADE_THROUGH, Venue

P = 1_000_000  # $100.0000


def md(kind, side, price, qty, order_id=0):
    r = np.zeros(1, MARKET_DATA)
    r["kind"], r["side"], r["price"], r["qty"] = kind, side, price, qty
    r["order_id"], r["instrument"], r["seq"] = order_id, 1, 1
    return r


def order(cl, side, price, qty):
    o = np.zeros(1, ORDER)
    o["client_order_id"], o["order_id"], o["side"], o["limit_price"] = cl, cl, side, price
    o["qty"], o["instrument"], o["action"] = qty, 1, ACTION_NEW
    o["order_type"], o["tif"], o["seq"] = OT_LIMIT, TIF_DAY, cl
    return o


class Feed:
    """A venue plus the reports it has released, fed one record at a time."""

    def __init__(self, **kw):
        self.v = Venue(**kw)
        self.t = 1_000
        self.reports = []

    def _drain(self):
        out = self.v.drain(self.t)
        self.reports.extend(out)
        return [r for r in out if r["last_qty"] > 0]

    def md(self, *a):
        self.t += 1_000
        self.v.on_market_data(md(*a), self.t)
        return self._drain()

    def send(self, *a):
        self.t += 1_000
        self.v.on_orders(order(*a), self.t)
        return self._drain()


def test_order_level_fills_only_after_the_300_shares_ahead_are_gone():
    f = Feed()
    assert f.md(MD_BOOK_ADD, SIDE_BUY, P, 100, 11) == []  # A: 100 ahead of us
    assert f.md(MD_BOOK_ADD, SIDE_BUY, P, 200, 12) == []  # B: 200 ahead of us
    assert f.send(1, SIDE_BUY, P, 100) == []  # ours, behind 300
    assert f.v.resting(1, SIDE_BUY)[2][1:] == (1, 1, 100)
    assert f.md(MD_BOOK_EXEC, SIDE_BUY, P, 100, 11) == []  # A executed: 200 ahead
    assert f.md(MD_BOOK_CANCEL, SIDE_BUY, P, 150, 12) == []  # B cancels 150: 50 ahead
    assert f.md(MD_BOOK_EXEC, SIDE_BUY, P, 30, 12) == []  # B executes 30: 20 ahead
    assert f.md(MD_BOOK_DELETE, SIDE_BUY, P, 20, 12) == []  # B gone: nothing ahead
    assert f.md(MD_BOOK_ADD, SIDE_BUY, P, 100, 13) == []  # C joins behind us
    fills = f.md(MD_BOOK_EXEC, SIDE_BUY, P, 60, 13)  # an execution "of C" reaches us first
    assert [(int(r["last_qty"]), int(r["last_price"])) for r in fills] == [(60, P)]
    assert fills[0]["exec_type"] == EXEC_PARTIAL_FILL and fills[0]["leaves_qty"] == 40


def test_order_level_snapshot_volume_is_ahead_of_ours():
    from bot4.records import MDF_SNAPSHOT

    f = Feed()
    snap = md(MD_BOOK_ADD, SIDE_BUY, P, 300)
    snap["flags"] = MDF_SNAPSHOT  # the initial book: anonymous, older than anything of ours
    f.t += 1_000
    f.v.on_market_data(snap, f.t)
    assert f.send(1, SIDE_BUY, P, 100) == []
    assert f.md(MD_BOOK_EXEC, SIDE_BUY, P, 200, 99) == []  # unknown id: from the snapshot
    assert f.md(MD_BOOK_DELETE, SIDE_BUY, P, 100, 98) == []  # snapshot at p now empty
    f.md(MD_BOOK_ADD, SIDE_BUY, P, 50, 14)
    fills = f.md(MD_BOOK_EXEC, SIDE_BUY, P, 100, 14)
    assert [int(r["last_qty"]) for r in fills] == [100]


def quotes(f, bid, ask, size=500):
    f.md(MD_QUOTE, SIDE_BUY, bid, size)
    f.md(MD_QUOTE, SIDE_SELL, ask, size)


def test_trade_through_touch_never_fills_through_does():
    f = Feed(quote_fill=QF_TRADE_THROUGH)
    quotes(f, P, P + 100)
    assert f.send(1, SIDE_BUY, P, 200) == []
    assert f.md(MD_TRADE, SIDE_SELL, P, 1_000) == []  # a print at our price: touch
    assert f.md(MD_QUOTE, SIDE_SELL, P, 300) == []  # the ask comes down to us: touch
    fills = f.md(MD_TRADE, SIDE_SELL, P - 100, 50)  # a print through our price
    assert [(int(r["last_qty"]), int(r["last_price"])) for r in fills] == [(50, P)]
    fills = f.md(MD_QUOTE, SIDE_SELL, P - 100, 300)  # the ask moves through us
    assert [(int(r["last_qty"]), int(r["exec_type"])) for r in fills] == [(150, EXEC_FILL)]
    assert f.v.live_orders == 0


def test_unknown_aggressor_print_through_fills_either_side():
    f = Feed(quote_fill=QF_TRADE_THROUGH)
    quotes(f, P, P + 300)
    f.send(1, SIDE_SELL, P + 200, 100)
    fills = f.md(MD_TRADE, 0, P + 250, 70)  # side unknown: through our ask
    assert [int(r["last_qty"]) for r in fills] == [70]


def test_queue_model_fills_on_a_touch_once_the_size_ahead_traded():
    f = Feed(quote_fill=QF_QUEUE)
    quotes(f, P, P + 100)
    f.send(1, SIDE_BUY, P, 200)
    assert f.md(MD_TRADE, SIDE_SELL, P, 400) == []  # 500 displayed ahead of us
    fills = f.md(MD_TRADE, SIDE_SELL, P, 300)  # 100 more ahead, then 200 of ours
    assert [int(r["last_qty"]) for r in fills] == [200]


def test_fees_rebates_and_partial_fills_reach_pnl_exactly(tmp_path):
    f = Feed(quote_fill=QF_TRADE_THROUGH, maker_fee=-2, taker_fee=3)
    quotes(f, P, P + 100)
    f.send(1, SIDE_BUY, P, 100)
    a = f.md(MD_TRADE, SIDE_SELL, P - 100, 60)  # partial: 60 maker, rebate 2/share
    b = f.md(MD_TRADE, SIDE_SELL, P - 100, 40)  # the rest
    assert [(int(r["last_qty"]), int(r["fee"])) for r in a + b] == [(60, -120), (40, -80)]
    f.md(MD_QUOTE, SIDE_BUY, P + 300, 500)  # someone bids 100.03
    c = f.send(2, SIDE_SELL, P + 300, 100)  # we hit it: taker, 3/share
    assert [(int(r["last_qty"]), int(r["last_price"]), int(r["fee"])) for r in c] == [
        (100, P + 300, 300)
    ]
    # a second trip, short: sold 50 at 100.01 (maker), bought back at 100.03 (taker)
    quotes(f, P, P + 100)
    f.send(3, SIDE_SELL, P + 100, 50)
    d = f.md(MD_TRADE, SIDE_BUY, P + 200, 50)  # through our ask: maker
    f.md(MD_QUOTE, SIDE_SELL, P + 300, 500)
    e = f.send(4, SIDE_BUY, P + 300, 50)  # taker
    assert [int(r["last_qty"]) for r in d + e] == [50, 50]
    reports = np.array(f.reports)
    with JournalWriter(tmp_path / "j", fsync="none") as w:
        w.append(reports)
    rep = report_from_journal(tmp_path / "j")
    s = rep.doc["summary"]
    # trip 1: 100 x (100.03 - 100.00) = 30_000 units, fees -120 - 80 + 300 = 100
    # trip 2: 50 x (100.01 - 100.03) = -10_000 units, fees -100 + 150 = 50
    trip1, trip2 = 30_000 - 100, -10_000 - 50
    assert Decimal(s["realised"]) == Decimal(trip1 + trip2) / 10_000
    assert Decimal(s["fees"]) == Decimal(100 + 50) / 10_000
    assert s["fills"] == 5 and s["partial_fills"] == 1
    assert s["round_trips"] == 2 and s["hit_rate"] == 0.5
    assert s["profit_factor"] == pytest.approx(trip1 / -trip2, rel=1e-15)
    assert rep.doc["positions"]["AAPL"]["position"] == 0
    assert s["turnover"] == str(
        (Decimal(100 * P + 100 * (P + 300) + 50 * (P + 100) + 50 * (P + 300)) / 10_000).quantize(
            Decimal("0.0001")
        )
    )
