"""Venue: exact reports for every order action and market data event, latency, fees,
cancel-on-disconnect, and the book against a sorted-list model (hypothesis)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    ACTION_QUERY,
    ACTION_REPLACE,
    EXEC_ACK,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_REPORT,
    EXEC_STATUS,
    EXEC_STP_EXPIRED,
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_QUOTE,
    MD_TRADE,
    MDF_SNAPSHOT,
    ORDER,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NEW,
    OS_NONE,
    OS_PARTIALLY_FILLED,
    OS_REJECTED,
    OT_LIMIT,
    OT_MARKET,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_IOC,
)
from bot4.records.errors import Code
from bot4.venue import Venue
from bot4.venue.matching import OWN_EXTERNAL, OWN_OURS

B, S = SIDE_BUY, SIDE_SELL
DUP = int(Code.DUPLICATE_ORDER)
TOO_LATE = int(Code.TOO_LATE_TO_CANCEL)
UNKNOWN = int(Code.UNKNOWN_ORDER)
SELF_TRADE = int(Code.SELF_TRADE)


# --- building inputs ---------------------------------------------------------------------------


def new(clid, side, px, qty, tif=TIF_DAY, inst=1, ot=OT_LIMIT):
    return ("o", dict(action=ACTION_NEW, client_order_id=clid, side=side, limit_price=px,
                      qty=qty, tif=tif, instrument=inst, order_type=ot))  # fmt: skip


def cancel(target, clid=0):
    return ("o", dict(action=ACTION_CANCEL, client_order_id=clid, orig_client_order_id=target))


def replace(target, clid=0, qty=0, px=0):
    return ("o", dict(action=ACTION_REPLACE, client_order_id=clid, orig_client_order_id=target,
                      qty=qty, limit_price=px))  # fmt: skip


def query(clid):
    return ("o", dict(action=ACTION_QUERY, client_order_id=clid))


def cancel_all(inst=0):
    return ("o", dict(action=ACTION_CANCEL_ALL, instrument=inst))


def md(kind, side, px, qty, oid=0, inst=1, flags=0):
    return ("m", dict(kind=kind, side=side, price=px, qty=qty, order_id=oid, instrument=inst,
                      flags=flags))  # fmt: skip


def add(oid, side, px, qty):
    return md(MD_BOOK_ADD, side, px, qty, oid)


def ex(oid, side, px, qty):
    return md(MD_BOOK_EXEC, side, px, qty, oid)


def apply(venue, steps, now=0, seq0=1):
    """Apply steps in order, each ORDER / MARKET_DATA record in its own kernel call."""
    for k, (what, fields) in enumerate(steps):
        rec = np.zeros(1, ORDER if what == "o" else MARKET_DATA)
        rec["seq"] = seq0 + k
        for name, value in fields.items():
            rec[name] = value
        if what == "o":
            rec["instrument"] = fields.get("instrument", 1)
            venue.on_orders(rec, now)
        else:
            venue.on_market_data(rec, now)


def feed(venue, steps, now=0, seq0=1):
    """Apply steps; the reports due at ``now`` as tuples (see ``rows``)."""
    apply(venue, steps, now, seq0)
    return rows(venue.drain(now))


def rows(reports):
    """(exec_type, client_order_id, status, last_qty, last_price, cum, leaves, reason, fee)"""
    return [
        (int(r["exec_type"]), int(r["client_order_id"]), int(r["status"]), int(r["last_qty"]),
         int(r["last_price"]), int(r["cum_qty"]), int(r["leaves_qty"]), int(r["reason"]),
         int(r["fee"]))
        for r in reports
    ]  # fmt: skip


def R(etype, clid, status, last_qty=0, last_px=0, cum=0, leaves=0, reason=0, fee=0):
    return (etype, clid, status, last_qty, last_px, cum, leaves, reason, fee)


def ACK(clid, qty):
    return R(EXEC_ACK, clid, OS_NEW, leaves=qty)


def PART(clid, q, px, cum, leaves, fee=0):
    return R(EXEC_PARTIAL_FILL, clid, OS_PARTIALLY_FILLED, q, px, cum, leaves, fee=fee)


def FILL(clid, q, px, cum, fee=0):
    return R(EXEC_FILL, clid, OS_FILLED, q, px, cum, 0, fee=fee)


def CXL(clid, cum=0, reason=0):
    return R(EXEC_CANCELLED, clid, OS_CANCELLED, cum=cum, reason=reason)


def STP_EXP(clid, cum=0):
    """Expired by self-trade prevention (the default mode cancels the resting order; the
    modes themselves are tests/unit/test_stp_venue.py)."""
    return R(EXEC_STP_EXPIRED, clid, OS_EXPIRED, cum=cum, reason=SELF_TRADE)


def venue(**kw):
    kw.setdefault("instruments", 4)
    kw.setdefault("capacity", 256)
    kw.setdefault("levels", 32)
    kw.setdefault("max_open", 64)
    kw.setdefault("history", 256)
    kw.setdefault("queue", 1024)
    return Venue(**kw)


OURS, EXT = OWN_OURS, OWN_EXTERNAL

# --- table: (name, steps, expected reports, expected bids, expected asks) ---------------------
# books as (price, owner, id, leaves) in priority order; None = not checked

CASES = [
    ("new_rests_and_is_acknowledged",
     [new(1, B, 1000, 100)],
     [ACK(1, 100)],
     [(1000, OURS, 1, 100)], []),
    ("crossing_order_fills_at_resting_external_price",
     [add(7, S, 1010, 300), new(1, B, 1020, 200)],
     [ACK(1, 200), FILL(1, 200, 1010, 200)],
     [], [(1010, EXT, 7, 100)]),
    ("partial_fill_then_rest_of_order_rests",
     [add(7, S, 1010, 100), new(1, B, 1010, 250)],
     [ACK(1, 250), PART(1, 100, 1010, 100, 150)],
     [(1010, OURS, 1, 150)], []),
    ("sweep_reports_one_fill_per_price_level",
     [add(7, S, 1010, 100), add(8, S, 1011, 100), add(9, S, 1011, 100), add(10, S, 1012, 5),
      new(1, B, 1011, 250)],
     [ACK(1, 250), PART(1, 100, 1010, 100, 150), FILL(1, 150, 1011, 250)],
     [], [(1011, EXT, 9, 50), (1012, EXT, 10, 5)]),
    ("ioc_remainder_is_cancelled",
     [add(7, S, 1010, 100), new(1, B, 1010, 150, TIF_IOC)],
     [ACK(1, 150), PART(1, 100, 1010, 100, 50), CXL(1, cum=100)],
     [], []),
    ("ioc_without_liquidity_is_cancelled_and_never_rests",
     [add(7, S, 1011, 100), new(1, B, 1010, 150, TIF_IOC)],
     [ACK(1, 150), CXL(1)],
     [], [(1011, EXT, 7, 100)]),
    ("fok_short_of_liquidity_is_cancelled_and_leaves_the_book_alone",
     [add(7, S, 1010, 100), add(8, S, 1012, 100), new(1, B, 1011, 150, TIF_FOK)],
     [ACK(1, 150), CXL(1)],
     [], [(1010, EXT, 7, 100), (1012, EXT, 8, 100)]),
    ("fok_with_enough_liquidity_fills_completely",
     [add(7, S, 1010, 100), add(8, S, 1011, 100), new(1, B, 1011, 150, TIF_FOK)],
     [ACK(1, 150), PART(1, 100, 1010, 100, 50), FILL(1, 50, 1011, 150)],
     [], [(1011, EXT, 8, 50)]),
    ("market_order_sweeps_and_cancels_the_rest",
     [add(7, S, 1010, 100), add(8, S, 1500, 10), new(1, B, 0, 200, TIF_DAY, ot=OT_MARKET)],
     [ACK(1, 200), PART(1, 100, 1010, 100, 100), PART(1, 10, 1500, 110, 90), CXL(1, cum=110)],
     [], []),
    ("gtc_rests_like_day",
     [new(1, S, 1010, 10, TIF_GTC)],
     [ACK(1, 10)],
     [], [(1010, OURS, 1, 10)]),
    ("cancel_live_then_again_then_unknown",
     [new(1, B, 1000, 100), cancel(1), cancel(1), cancel(99)],
     [ACK(1, 100), CXL(1), R(EXEC_CANCEL_REJECTED, 1, OS_CANCELLED, reason=TOO_LATE),
      R(EXEC_CANCEL_REJECTED, 99, OS_NONE, reason=UNKNOWN)],
     [], []),
    ("cancel_of_a_filled_order_is_too_late",
     [new(1, B, 1000, 100), add(7, S, 1000, 100), cancel(1)],
     [ACK(1, 100), FILL(1, 100, 1000, 100),
      R(EXEC_CANCEL_REJECTED, 1, OS_FILLED, cum=100, reason=TOO_LATE)],
     [], []),
    ("replace_qty_down_keeps_time_priority",
     [new(1, B, 1000, 100), add(7, B, 1000, 100), replace(1, qty=50)],
     [ACK(1, 100), R(EXEC_REPLACED, 1, OS_NEW, leaves=50)],
     [(1000, OURS, 1, 50), (1000, EXT, 7, 100)], []),
    ("replace_qty_up_loses_time_priority",
     [new(1, B, 1000, 100), add(7, B, 1000, 100), replace(1, qty=150)],
     [ACK(1, 100), R(EXEC_REPLACED, 1, OS_NEW, leaves=150)],
     [(1000, EXT, 7, 100), (1000, OURS, 1, 150)], []),
    ("replace_price_change_loses_time_priority",
     [new(1, B, 1000, 100), add(7, B, 1001, 100), replace(1, px=1001), replace(1, px=1000),
      add(8, B, 1000, 5), replace(1, px=1000, qty=100)],
     [ACK(1, 100), R(EXEC_REPLACED, 1, OS_NEW, leaves=100), R(EXEC_REPLACED, 1, OS_NEW, leaves=100),
      R(EXEC_REPLACED, 1, OS_NEW, leaves=100)],
     [(1001, EXT, 7, 100), (1000, OURS, 1, 100), (1000, EXT, 8, 5)], []),
    ("replace_to_a_crossing_price_trades",
     [add(7, S, 1010, 60), new(1, B, 1000, 100), replace(1, px=1010)],
     [ACK(1, 100), R(EXEC_REPLACED, 1, OS_NEW, leaves=100), PART(1, 60, 1010, 60, 40)],
     [(1010, OURS, 1, 40)], []),
    ("replace_under_a_new_client_id_retires_the_old_one",
     [new(1, B, 1000, 100), add(7, S, 1000, 30), replace(1, clid=2, qty=80), query(1), query(2),
      cancel(1)],
     [ACK(1, 100), PART(1, 30, 1000, 30, 70), R(EXEC_REPLACED, 2, OS_PARTIALLY_FILLED, cum=30, leaves=50),
      R(EXEC_STATUS, 1, OS_CANCELLED, cum=30), R(EXEC_STATUS, 2, OS_PARTIALLY_FILLED, cum=30, leaves=50),
      R(EXEC_CANCEL_REJECTED, 1, OS_CANCELLED, cum=30, reason=TOO_LATE)],
     [(1000, OURS, 2, 50)], []),
    ("replace_refused_for_duplicate_id_quantity_below_filled_and_unknown",
     [new(1, B, 1000, 100), new(2, B, 999, 10), add(7, S, 1000, 30), replace(1, clid=2),
      replace(1, qty=30), replace(5, qty=30)],
     [ACK(1, 100), ACK(2, 10), PART(1, 30, 1000, 30, 70),
      R(EXEC_CANCEL_REJECTED, 1, OS_PARTIALLY_FILLED, cum=30, leaves=70, reason=DUP),
      R(EXEC_CANCEL_REJECTED, 1, OS_PARTIALLY_FILLED, cum=30, leaves=70, reason=int(Code.INVALID_QTY)),
      R(EXEC_CANCEL_REJECTED, 5, OS_NONE, reason=UNKNOWN)],
     [(1000, OURS, 1, 70), (999, OURS, 2, 10)], []),
    ("duplicate_client_id_rejected_while_live_and_after_done",
     [new(1, B, 1000, 100), new(1, S, 1100, 5), cancel(1), new(1, B, 1000, 100)],
     [ACK(1, 100), R(EXEC_REJECTED, 1, OS_REJECTED, reason=DUP), CXL(1),
      R(EXEC_REJECTED, 1, OS_REJECTED, reason=DUP)],
     [], []),
    ("invalid_orders_rejected_with_their_reason",
     [new(1, B, 1000, 0), new(2, B, 0, 10), new(3, B, 1000, 10, inst=9), new(4, 0, 1000, 10),
      new(1, B, 1000, 10)],
     [R(EXEC_REJECTED, 1, OS_REJECTED, reason=int(Code.INVALID_QTY)),
      R(EXEC_REJECTED, 2, OS_REJECTED, reason=int(Code.NEGATIVE_PRICE)),
      R(EXEC_REJECTED, 3, OS_REJECTED, reason=int(Code.UNKNOWN_INSTRUMENT)),
      R(EXEC_REJECTED, 4, OS_REJECTED, reason=int(Code.VENUE_REJECTED)),
      R(EXEC_REJECTED, 1, OS_REJECTED, reason=DUP)],
     [], []),
    ("query_live_partial_done_rejected_and_unknown",
     [new(1, B, 1000, 100), new(2, B, 1001, 100), add(7, S, 1001, 40), new(3, S, 2000, 5),
      cancel(3), new(4, B, 1000, 0), query(1), query(2), query(3), query(4), query(5)],
     [ACK(1, 100), ACK(2, 100), PART(2, 40, 1001, 40, 60), ACK(3, 5), CXL(3),
      R(EXEC_REJECTED, 4, OS_REJECTED, reason=int(Code.INVALID_QTY)),
      R(EXEC_STATUS, 1, OS_NEW, leaves=100), R(EXEC_STATUS, 2, OS_PARTIALLY_FILLED, cum=40, leaves=60),
      R(EXEC_STATUS, 3, OS_CANCELLED), R(EXEC_STATUS, 4, OS_REJECTED),
      R(EXEC_STATUS, 5, OS_NONE, reason=UNKNOWN)],
     None, None),
    ("cancel_all_of_one_instrument_then_of_every_instrument",
     [new(1, B, 1000, 10), new(2, B, 1001, 10, inst=2), new(3, S, 1010, 10), new(4, B, 1001, 10),
      cancel_all(1), cancel_all(0), cancel_all(0)],
     [ACK(1, 10), ACK(2, 10), ACK(3, 10), ACK(4, 10), CXL(4), CXL(1), CXL(3), CXL(2)],
     [], []),
    ("external_quote_liquidity_fills_our_marketable_order",
     [md(MD_QUOTE, S, 1010, 300), md(MD_QUOTE, B, 1000, 300), new(1, B, 1010, 100)],
     [ACK(1, 100), FILL(1, 100, 1010, 100)],
     [(1000, 3, 0, 300)], [(1010, 3, 0, 200)]),
    ("our_bid_fills_only_after_the_volume_ahead_is_executed",
     [add(7, B, 1000, 100), new(1, B, 1000, 50), add(8, B, 1000, 100), ex(7, B, 1000, 60),
      ex(7, B, 1000, 40), ex(8, B, 1000, 30), ex(8, B, 1000, 70)],
     [ACK(1, 50), PART(1, 30, 1000, 30, 20), FILL(1, 20, 1000, 50)],
     [(1000, EXT, 8, 50)], []),
    ("cancel_ahead_moves_us_up_and_exec_of_older_unseen_order_does_not_fill",
     [add(7, B, 1000, 100), new(1, B, 1000, 50), ex(999, B, 1000, 80),
      md(MD_BOOK_CANCEL, B, 1000, 60, 7), md(MD_BOOK_DELETE, B, 1000, 40, 7), ex(999, B, 1000, 80)],
     [ACK(1, 50)],
     [(1000, OURS, 1, 50)], []),
    ("unseen_orders_come_from_the_snapshot_which_is_ahead_of_ours",
     [md(MD_BOOK_ADD, B, 1000, 300, flags=MDF_SNAPSHOT), new(1, B, 1000, 50), ex(999, B, 1000, 200),
      md(MD_BOOK_CANCEL, B, 1000, 60, 998), ex(997, B, 1000, 100), add(7, B, 1000, 10),
      ex(7, B, 1000, 10)],
     [ACK(1, 50), PART(1, 10, 1000, 10, 40)],
     [(1000, OURS, 1, 40), (1000, EXT, 7, 10)], []),
    ("execution_at_a_worse_price_fills_our_better_priced_order_first",
     [add(7, B, 1000, 100), new(1, B, 1001, 50), ex(7, B, 1000, 70)],
     [ACK(1, 50), FILL(1, 50, 1001, 50)],
     [(1000, EXT, 7, 80)], []),
    ("hidden_execution_fills_ours_only_ahead_of_displayed_orders",
     [new(1, B, 1000, 50), add(7, B, 1000, 100), new(2, B, 1000, 50),
      md(MD_BOOK_HIDDEN_EXEC, B, 1000, 500, 55)],
     [ACK(1, 50), ACK(2, 50), FILL(1, 50, 1000, 50)],
     [(1000, EXT, 7, 100), (1000, OURS, 2, 50)], []),
    ("external_add_crossing_our_resting_order_fills_it_at_our_price",
     [new(1, S, 1010, 100), add(7, B, 1015, 60)],
     [ACK(1, 100), PART(1, 60, 1010, 60, 40)],
     [], [(1010, OURS, 1, 40)]),
    ("quote_mode_our_bid_fills_after_the_quote_ahead_trades_away",
     [md(MD_QUOTE, B, 1000, 500), new(1, B, 1000, 100), md(MD_TRADE, S, 1000, 400),
      md(MD_QUOTE, B, 1000, 100), md(MD_TRADE, S, 1000, 150), md(MD_TRADE, 0, 1000, 60)],
     [ACK(1, 100), PART(1, 50, 1000, 50, 50), FILL(1, 50, 1000, 100)],
     [], []),
    ("self_trade_prevention_expires_our_resting_order_by_default",
     [new(1, S, 1010, 100), add(7, S, 1011, 100), new(2, B, 1011, 150)],
     [ACK(1, 100), ACK(2, 150), STP_EXP(1), PART(2, 100, 1011, 100, 50)],
     [(1011, OURS, 2, 50)], []),
    ("order_level_feed_replaces_the_quote_orders",
     [md(MD_QUOTE, S, 1010, 300), add(7, S, 1020, 10), md(MD_QUOTE, S, 1005, 300),
      new(1, B, 1020, 5)],
     [ACK(1, 5), FILL(1, 5, 1020, 5)],
     [], [(1020, EXT, 7, 5)]),
]  # fmt: skip


@pytest.mark.parametrize(("steps", "want", "bids", "asks"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_reports_and_book(steps, want, bids, asks):
    v = venue()
    assert feed(v, steps) == want
    if bids is not None:
        assert v.resting(1, B) == bids
        assert v.resting(1, S) == asks
    assert v.counters()["reports_lost"] == 0


def test_fees_maker_rebate_and_taker_fee_per_share():
    v = venue(maker_fee=-2, taker_fee=3)
    got = feed(v, [new(1, S, 1010, 100), add(7, B, 1010, 40), add(8, S, 1012, 100),
                   new(2, B, 1012, 90)])  # fmt: skip
    assert got == [
        ACK(1, 100), PART(1, 40, 1010, 40, 60, fee=-80),
        ACK(2, 90), STP_EXP(1, cum=40), FILL(2, 90, 1012, 90, fee=270),
    ]  # fmt: skip


def test_report_fields_stamps_ids_and_sequence():
    v = venue()
    o = np.zeros(2, ORDER)
    o["seq"] = [11, 12]
    o["action"] = ACTION_NEW
    o["client_order_id"] = [(3 << 48) | 1, (3 << 48) | 2]
    o["order_id"] = [501, 0]
    o["side"] = [S, B]
    o["qty"] = 10
    o["limit_price"] = [1000, 1000]
    o["instrument"] = 2
    o["strategy"] = 7
    o["order_type"] = OT_LIMIT
    o["tif"] = TIF_DAY
    o["ts_event_ns"] = [100, 200]
    o["ts_recv_ns"] = [110, 210]
    o["ts_order_ns"] = [120, 220]
    # ACK sell, ACK buy, the buy meets our own sell: STP expires the sell, the buy rests
    assert v.on_orders(o, 5_000) == 3
    out = np.zeros(16, EXEC_REPORT)
    n = v.release(out, 5_000, seq=40)
    r = out[:n]
    assert n == 3
    assert r["exec_type"].tolist() == [EXEC_ACK, EXEC_ACK, EXEC_STP_EXPIRED]
    assert r["client_order_id"].tolist() == [(3 << 48) | 1, (3 << 48) | 2, (3 << 48) | 1]
    assert r["seq"].tolist() == [40, 41, 42]
    assert r["exec_id"].tolist() == [40, 41, 42]  # an execution id is the report's seq
    assert r["parent_seq"].tolist() == [11, 12, 12]
    assert r["order_id"].tolist() == [501, 1, 501]  # echoed, or venue-assigned when 0
    assert r["ts_event_ns"].tolist() == [100, 200, 100]  # the venue's expiry: the order's own
    assert r["ts_recv_ns"].tolist() == [110, 210, 110]
    assert r["ts_order_ns"].tolist() == [120, 220, 120]
    assert (r["ts_venue_ns"] == 5_000).all()
    assert (r["instrument"] == 2).all() and (r["strategy"] == 7).all()
    assert r["side"].tolist() == [S, B, S]
    assert (r["venue"] == 0).all() and r["prevented_qty"].tolist() == [0, 0, 10]


def test_latency_holds_reports_until_due():
    v = venue(latency_ns=1_000)
    assert feed(v, [new(1, B, 1000, 10)], now=50) == []
    assert rows(v.drain(1_049)) == []
    feed(v, [new(2, B, 1000, 10)], now=600)
    assert rows(v.drain(1_050)) == [ACK(1, 10)]
    assert rows(v.drain(1_599)) == []
    assert rows(v.drain(1_600)) == [ACK(2, 10)]
    assert v.pending == 0


def test_release_is_bounded_by_the_output_and_keeps_order():
    v = venue()
    apply(v, [new(k, B, 1000 - k, 10) for k in range(1, 7)] + [cancel_all()])
    assert v.pending == 12
    out = np.zeros(5, EXEC_REPORT)
    seqs, exec_ids, calls = [], [], 0
    while (n := v.release(out, 0, len(seqs) + 1)) > 0:
        seqs += out[:n]["seq"].tolist()
        exec_ids += out[:n]["exec_id"].tolist()
        calls += 1
    assert calls == 3
    assert seqs == exec_ids == list(range(1, 13))


def test_cancel_on_disconnect_cancels_ours_with_their_own_stamps():
    v = venue()
    feed(v, [new(1, B, 1000, 10), new(2, S, 1010, 10, inst=3), add(7, B, 999, 10)])
    assert v.cancel_all_ours(9_999, reason=int(Code.STAGE_STALLED)) == 2
    got = v.drain(9_999)
    assert rows(got) == [
        CXL(1, reason=int(Code.STAGE_STALLED)),
        CXL(2, reason=int(Code.STAGE_STALLED)),
    ]
    assert got["parent_seq"].tolist() == [0, 0]
    assert v.live_orders == 0
    assert v.resting(1, B) == [(999, EXT, 7, 10)]


def test_full_queue_loses_reports_and_counts_them():
    v = venue(queue=2)
    apply(v, [new(1, B, 1000, 10), new(2, B, 1000, 10), new(3, B, 1000, 10)])
    assert v.pending == 2
    assert v.counters()["reports_lost"] == 1


def test_level_capacity_evicts_worst_external_level_never_ours():
    v = venue(levels=2)
    got = feed(v, [add(7, B, 1000, 10), add(8, B, 999, 10), add(9, B, 1001, 10),
                   new(1, B, 998, 5), new(2, B, 1002, 5), new(3, B, 1003, 5)])  # fmt: skip
    assert got == [ACK(1, 5), CXL(1, reason=int(Code.MAX_OPEN_ORDERS)), ACK(2, 5), ACK(3, 5)]
    assert v.resting(1, B) == [(1003, OURS, 3, 5), (1002, OURS, 2, 5)]
    assert v.counters()["levels_evicted"] == 3


# --- the stage ---------------------------------------------------------------------------------


def make_stage(instance="default", **params):
    from bot4.stages.venue import VenueStage

    spec = SimpleNamespace(name="venue", params=params, batch=64)
    ins = [SimpleNamespace(type="ORDER"), SimpleNamespace(type="MARKET_DATA")]
    outs = [SimpleNamespace(type="EXEC_REPORT")]
    stage = VenueStage(spec, ins, outs, instance)
    stage.setup()
    return stage


def order_batch(*steps):
    rec = np.zeros(len(steps), ORDER)
    for k, (_, fields) in enumerate(steps):
        rec[k]["seq"] = k + 1
        rec[k]["instrument"] = 1
        for name, value in fields.items():
            rec[k][name] = value
    return rec


def test_stage_processes_orders_and_market_data_into_reports():
    stage = make_stage(max_out_per_in=4, latency_ns=0)
    assert stage.max_out_per_in == 4
    out = [np.zeros(8, EXEC_REPORT)]
    counts = np.zeros(1, np.int64)
    seq = stage.process(0, order_batch(new(1, B, 1000, 10)), out, counts, 1)
    assert seq == 2 and counts[0] == 1 and out[0][0]["exec_type"] == EXEC_ACK
    m = np.zeros(1, MARKET_DATA)
    m[0] = (1, 0, 0, 0, 1000, 4, 7, 1, MD_BOOK_ADD, S, 0)
    seq = stage.process(1, m, out, counts, seq)
    assert seq == 3 and rows(out[0][:1]) == [PART(1, 4, 1000, 4, 6)]
    assert out[0][0]["seq"] == 2
    assert stage.summary()["live_orders"] == 1


def test_stage_exec_ids_are_its_seq_and_never_pass_the_session_range():
    from bot4.paths import SESSION_SEQ_SHIFT
    from bot4.records.errors import Bot4Error

    stage = make_stage(latency_ns=0)  # session 0: ids 1 .. 2^32
    out = [np.zeros(8, EXEC_REPORT)]
    counts = np.zeros(1, np.int64)
    start = 12_345  # a restarted stage resumes its numbering from its cursors
    seq = stage.process(
        0, order_batch(new(1, B, 1000, 10), new(2, S, 1010, 10)), out, counts, start
    )
    assert out[0][: counts[0]]["exec_id"].tolist() == [start, start + 1] and seq == start + 2
    last = 1 << SESSION_SEQ_SHIFT
    with pytest.raises(Bot4Error, match="exhausted"):
        stage.process(0, order_batch(new(3, B, 1000, 10)), out, counts, last - 2)


def test_stage_cancels_on_orders_stage_disconnect(instance):
    from bot4.shm import control as C
    from bot4.shm.segment import Segment, segment_name

    C.create_control(instance, 2, time.monotonic_ns())
    try:
        cb = C.ControlBlock(instance)
        blk = cb.stage(0)
        blk[C.S_HEARTBEAT_NS] = time.monotonic_ns()
        stage = make_stage(instance, orders_stage_index=0, disconnect_after_s=0.05)
        out = [np.zeros(64, EXEC_REPORT)]
        counts = np.zeros(1, np.int64)
        stage.process(0, order_batch(new(1, B, 1000, 10), new(2, S, 1010, 10)), out, counts, 1)
        assert counts[0] == 2
        time.sleep(0.1)
        seq = stage.poll(time.monotonic_ns(), out, counts, 3)
        assert seq == 5
        assert rows(out[0][:2]) == [CXL(1, reason=int(Code.STAGE_STALLED)),
                                    CXL(2, reason=int(Code.STAGE_STALLED))]  # fmt: skip
        assert stage.poll(time.monotonic_ns(), out, counts, 5) == 5  # once per silence
        blk[C.S_HEARTBEAT_NS] = time.monotonic_ns()
        stage.process(0, order_batch(new(3, B, 1000, 10)), out, counts, 5)
        assert not stage.disconnected and counts[0] == 1
        assert stage.summary()["disconnect_cancels"] == 2
        stage.on_drain()
        del blk
        cb.close()
    finally:
        Segment.unlink(segment_name(instance, C.CONTROL_SEGMENT))


# --- property: the book against a sorted-list model -----------------------------------------


class Model:
    """The venue's rules restated over plain lists, one instrument, order-level feed."""

    def __init__(self, maker_fee, taker_fee):
        self.book = {B: [], S: []}  # priority order: best price first, then arrival
        self.live = {}  # clid -> our resting order
        self.hist = {}  # clid -> (status, cum)
        self.ext = {}  # ext id -> external resting order
        self.out = []
        self.maker_fee, self.taker_fee = maker_fee, taker_fee

    # helpers
    def rest(self, o):
        q = self.book[o["side"]]
        better = (lambda a, b: a > b) if o["side"] == B else (lambda a, b: a < b)
        i = 0
        while i < len(q) and (q[i]["price"] == o["price"] or better(q[i]["price"], o["price"])):
            i += 1
        q.insert(i, o)

    def remove(self, o):
        self.book[o["side"]].remove(o)

    def retire(self, o, status):
        self.live.pop(o["clid"], None)
        self.hist[o["clid"]] = (status, o["cum"])

    def fill_report(self, o, q, px, fee):
        done = o["leaves"] == 0
        self.out.append(R(EXEC_FILL if done else EXEC_PARTIAL_FILL, o["clid"],
                          OS_FILLED if done else OS_PARTIALLY_FILLED, q, px, o["cum"],
                          o["leaves"], 0, fee * q))  # fmt: skip

    def take(self, aside, limit, qty, taker, at_limit="all", stop=None):
        opp = self.book[-aside]
        crosses = (lambda p: p <= limit) if aside == B else (lambda p: p >= limit)
        ours_taker = taker is not None and taker["owner"] == OURS
        rem = qty
        while rem > 0 and opp and crosses(opp[0]["price"]):
            px = opp[0]["price"]
            at_lim = px == limit
            if at_lim and at_limit == "none":
                break
            level_fill, done_here, i = 0, False, 0
            while rem > 0 and i < len(opp) and opp[i]["price"] == px:
                o = opp[i]
                if at_lim and at_limit == "front" and o["owner"] != OURS:
                    done_here = True
                    break
                if o["owner"] == OURS and ours_taker:  # the default STP mode: cancel resting
                    if level_fill:  # what the taker traded so far is reported first
                        taker["leaves"] -= level_fill
                        taker["cum"] += level_fill
                        self.fill_report(taker, level_fill, px, self.taker_fee)
                        level_fill = 0
                    opp.pop(i)
                    self.out.append(STP_EXP(o["clid"], o["cum"]))
                    self.retire(o, OS_EXPIRED)
                    continue
                f = min(rem, o["leaves"])
                o["leaves"] -= f
                rem -= f
                level_fill += f
                if o["owner"] == OURS:
                    o["cum"] += f
                    self.fill_report(o, f, px, self.maker_fee)
                    if o["leaves"] == 0:
                        opp.pop(i)
                        self.retire(o, OS_FILLED)
                    else:
                        i += 1
                elif o["leaves"] == 0:
                    opp.pop(i)
                    self.ext.pop(o["id"], None)
                else:
                    i += 1
                if at_lim and at_limit == "until" and o is stop:
                    done_here = True
                    break
            if taker is not None and level_fill:
                taker["leaves"] -= level_fill
                if ours_taker:
                    taker["cum"] += level_fill
                    self.fill_report(taker, level_fill, px, self.taker_fee)
            if done_here:
                break
        return rem

    def known(self, clid):
        return clid in self.live or clid in self.hist

    def answer(self, etype, clid, live_reason, done_reason):
        if clid in self.live:
            o = self.live[clid]
            st = OS_PARTIALLY_FILLED if o["cum"] else OS_NEW
            self.out.append(R(etype, clid, st, 0, 0, o["cum"], o["leaves"], live_reason))
        elif clid in self.hist:
            st, cum = self.hist[clid]
            self.out.append(R(etype, clid, st, 0, 0, cum, 0, done_reason))
        else:
            self.out.append(R(etype, clid, OS_NONE, reason=UNKNOWN))

    def work(self, o, tif):
        self.take(o["side"], o["price"], o["leaves"], o)
        if o["leaves"] == 0:
            self.retire(o, OS_FILLED)
        elif tif in (TIF_IOC, TIF_FOK):
            self.out.append(CXL(o["clid"], o["cum"]))
            self.retire(o, OS_CANCELLED)
        else:
            self.rest(o)

    # operations
    def new(self, clid, side, px, qty, tif):
        if self.known(clid):
            self.out.append(R(EXEC_REJECTED, clid, OS_REJECTED, reason=DUP))
            return
        o = dict(owner=OURS, clid=clid, side=side, price=px, qty=qty, leaves=qty, cum=0)
        self.live[clid] = o
        self.out.append(ACK(clid, qty))
        if tif == TIF_FOK:
            avail = sum(x["leaves"] for x in self.book[-side] if x["owner"] != OURS
                        and (x["price"] <= px if side == B else x["price"] >= px))  # fmt: skip
            if avail < qty:
                self.out.append(CXL(clid))
                self.retire(o, OS_CANCELLED)
                return
        self.work(o, tif)

    def cancel(self, clid):
        if clid not in self.live:
            self.answer(EXEC_CANCEL_REJECTED, clid, 0, TOO_LATE)
            return
        o = self.live[clid]
        self.remove(o)
        self.out.append(CXL(clid, o["cum"]))
        self.retire(o, OS_CANCELLED)

    def replace(self, clid, new_id, qty, px):
        if clid not in self.live:
            self.answer(EXEC_CANCEL_REJECTED, clid, 0, TOO_LATE)
            return
        o = self.live[clid]
        new_id = new_id or clid
        if new_id != clid and self.known(new_id):
            self.answer(EXEC_CANCEL_REJECTED, clid, DUP, TOO_LATE)
            return
        qty = qty or o["qty"]
        px = px or o["price"]
        if qty <= o["cum"]:
            self.answer(EXEC_CANCEL_REJECTED, clid, int(Code.INVALID_QTY), TOO_LATE)
            return
        if new_id != clid:
            self.hist[clid] = (OS_CANCELLED, o["cum"])
            del self.live[clid]
            o["clid"] = new_id
            self.live[new_id] = o
        status = OS_PARTIALLY_FILLED if o["cum"] else OS_NEW
        lose = px != o["price"] or qty > o["qty"]
        o["qty"], o["leaves"] = qty, qty - o["cum"]
        self.out.append(R(EXEC_REPLACED, new_id, status, 0, 0, o["cum"], o["leaves"]))
        if lose:
            self.remove(o)
            o["price"] = px
            self.work(o, TIF_DAY)

    def query(self, clid):
        self.answer(EXEC_STATUS, clid, 0, 0)

    def cancel_all(self):
        for side in (B, S):
            for o in [x for x in self.book[side] if x["owner"] == OURS]:
                self.remove(o)
                self.out.append(CXL(o["clid"], o["cum"]))
                self.retire(o, OS_CANCELLED)

    def ext_add(self, eid, side, px, qty):
        if eid in self.ext:
            self.remove(self.ext.pop(eid))
        o = dict(owner=EXT, id=eid, side=side, price=px, leaves=qty)
        self.take(side, px, qty, o)
        if o["leaves"]:
            self.rest(o)
            self.ext[eid] = o

    def ext_cancel(self, eid, qty):
        if eid not in self.ext:
            return
        o = self.ext[eid]
        if qty >= o["leaves"]:
            self.remove(self.ext.pop(eid))
        else:
            o["leaves"] -= qty

    def ext_delete(self, eid):
        if eid in self.ext:
            self.remove(self.ext.pop(eid))

    def ext_exec(self, eid, qty, side, px):
        if eid in self.ext:
            x = self.ext[eid]
            self.take(-x["side"], x["price"], qty, None, "until", x)
        else:
            self.take(-side, px, qty, None, "none")

    def hidden(self, side, px, qty):
        self.take(-side, px, qty, None, "front")

    def resting(self, side):
        return [(o["price"], o["owner"], o["clid"] if o["owner"] == OURS else o["id"], o["leaves"])
                for o in self.book[side]]  # fmt: skip


sides = hs.sampled_from([B, S])
prices = hs.integers(97, 103)
qtys = hs.integers(1, 20)
picks = hs.integers(
    0, 6
)  # 0 = the latest client id issued, 1 = the one before, ...; beyond: unknown
eids = hs.integers(1, 8)
OPS = {
    "new": hs.tuples(hs.just("new"), hs.sampled_from([-1, -1, -1, -1, -1, 0, 3]), sides, prices, qtys,
                     hs.sampled_from([TIF_DAY, TIF_DAY, TIF_GTC, TIF_IOC, TIF_FOK])),
    "cancel": hs.tuples(hs.just("cancel"), picks),
    "replace": hs.tuples(hs.just("replace"), picks, hs.sampled_from([None, None, -1, 0, 1]),
                         hs.integers(0, 25), hs.one_of(hs.just(0), prices)),
    "query": hs.tuples(hs.just("query"), picks),
    "cancel_all": hs.tuples(hs.just("cancel_all")),
    "ext_add": hs.tuples(hs.just("ext_add"), eids, sides, prices, qtys),
    "ext_cancel": hs.tuples(hs.just("ext_cancel"), eids, qtys),
    "ext_delete": hs.tuples(hs.just("ext_delete"), eids),
    "ext_exec": hs.tuples(hs.just("ext_exec"), eids, qtys, sides, prices),
    "hidden": hs.tuples(hs.just("hidden"), sides, prices, qtys),
}  # fmt: skip
WEIGHTS = dict(new=6, cancel=2, replace=3, query=1, cancel_all=1, ext_add=6, ext_cancel=1,
               ext_delete=1, ext_exec=3, hidden=1)  # fmt: skip
ops = hs.sampled_from([k for k, w in WEIGHTS.items() for _ in range(w)]).flatmap(OPS.get)


def concrete(ops_list):
    """Client ids for the abstract ops: a pick names an id issued earlier (-1 = a fresh id,
    None = keep the id on replace), so cancels, replaces, queries and duplicates mostly
    meet orders that exist."""
    issued = []

    def pick(k):
        if k == -1:
            issued.append(1000 + len(issued))
            return issued[-1]
        return issued[-1 - k % len(issued)] if issued and k < 6 else 999

    out = []
    for op in ops_list:
        kind, *a = op
        if kind == "new":
            out.append((kind, pick(a[0]), *a[1:]))
        elif kind in ("cancel", "query"):
            out.append((kind, pick(a[0])))
        elif kind == "replace":
            target = pick(a[0])
            out.append((kind, target, 0 if a[1] is None else pick(a[1]), a[2], a[3]))
        else:
            out.append(op)
    return out


def step_of(op):
    kind, *a = op
    if kind == "new":
        return new(a[0], a[1], a[2], a[3], a[4])
    if kind == "cancel":
        return cancel(a[0])
    if kind == "replace":
        return replace(a[0], clid=a[1], qty=a[2], px=a[3])
    if kind == "query":
        return query(a[0])
    if kind == "cancel_all":
        return cancel_all()
    if kind == "ext_add":
        return add(a[0], a[1], a[2], a[3])
    if kind == "ext_cancel":
        return md(MD_BOOK_CANCEL, B, 0, a[1], a[0])
    if kind == "ext_delete":
        return md(MD_BOOK_DELETE, B, 0, 0, a[0])
    if kind == "ext_exec":
        return ex(a[0], a[2], a[3], a[1])
    return md(MD_BOOK_HIDDEN_EXEC, a[0], a[1], a[2])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(ops, min_size=10, max_size=60))
def test_book_matches_sorted_list_model(seq):
    v = venue(maker_fee=-1, taker_fee=2, history=4096)
    model = Model(-1, 2)
    for k, op in enumerate(concrete(seq)):
        got = feed(v, [step_of(op)], seq0=k + 1)
        model.out = []
        getattr(model, op[0])(*op[1:])
        assert got == model.out, f"step {k} {op}"
        assert v.resting(1, B) == model.resting(B), f"bids after step {k} {op}"
        assert v.resting(1, S) == model.resting(S), f"asks after step {k} {op}"
    assert v.live_orders == len(model.live)
    assert v.counters()["reports_lost"] == 0
