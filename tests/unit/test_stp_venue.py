"""Self-trade prevention at the venue, at match time, with the exchanges' semantics.

The scenario tables are written from the exchanges' own documents (addresses on each
table); every cell — each report of the incoming order's transaction, in order, with its
status, quantities and prevented quantity, and the book after — must match. The property
test holds the venue kernel to a plain-list reference matcher written from the same
documents, on random books mixing our orders (two STP groups) with other participants'.

Quantities and prices are integers: Binance's examples (quantity 1.2, price 1.1) are
scaled by 10.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as hs

from bot4.records import (
    ACTION_NEW,
    ACTION_REPLACE,
    EXEC_ACK,
    EXEC_CANCELLED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_DELETE,
    ORDER,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NEW,
    OS_PARTIALLY_FILLED,
    OS_REJECTED,
    OT_LIMIT,
    OT_MARKET,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_BOTH,
    STP_CANCEL_NEW,
    STP_CANCEL_RESTING,
    STP_DECREMENT,
    STP_NONE,
    TIF_DAY,
    TIF_FOK,
    TIF_IOC,
)
from bot4.records.errors import Code
from bot4.records.stp import STP_PROFILES
from bot4.venue import Venue
from bot4.venue.matching import OWN_EXTERNAL, OWN_OURS

B, S = SIDE_BUY, SIDE_SELL
OURS, EXT = OWN_OURS, OWN_EXTERNAL
ST = int(Code.SELF_TRADE)
VREJ = int(Code.VENUE_REJECTED)
CN, CR, CB, DEC, DEFAULT = STP_CANCEL_NEW, STP_CANCEL_RESTING, STP_CANCEL_BOTH, STP_DECREMENT, 0

BINANCE_FAQ = "https://github.com/binance/binance-spot-api-docs/blob/master/faqs/stp_faq.md"
BINANCE_FAQ_WEB = "https://developers.binance.com/docs/binance-spot-api-docs/faqs/stp_faq"
COINBASE = "https://docs.cdp.coinbase.com/exchange/concepts/matching-engine"
CME_WIKI = "https://cmegroupclientsite.atlassian.net/wiki/spaces/EPICSANDBOX/pages/457640025"
CME_FAQ = (
    "https://www.cmegroup.com/solutions/market-access/globex/trade-on-globex/faq-self-match.html"
)
ISSUE = "issue 14 (the documented outcomes it lists)"


# --- building inputs and reading reports ------------------------------------------------------


def make_venue(profile: str) -> Venue:
    default, allowed = STP_PROFILES[profile]
    return Venue(instruments=2, capacity=512, levels=32, max_open=128, history=1024,
                 queue=4096, stp_default=default, stp_allowed=allowed)  # fmt: skip


def order(clid, side, px, qty, mode=DEFAULT, group=0, tif=TIF_DAY, market=False, seq=1):
    r = np.zeros(1, ORDER)
    r["seq"] = seq
    r["action"] = ACTION_NEW
    r["client_order_id"] = clid
    r["side"] = side
    r["limit_price"] = 0 if market else px
    r["qty"] = qty
    r["instrument"] = 1
    r["order_type"] = OT_MARKET if market else OT_LIMIT
    r["tif"] = tif
    r["stp_mode"] = mode
    r["stp_group"] = group
    return r


def replace_px(clid, px, seq=1):
    r = np.zeros(1, ORDER)
    r["seq"] = seq
    r["action"] = ACTION_REPLACE
    r["orig_client_order_id"] = clid
    r["limit_price"] = px
    r["instrument"] = 1
    return r


def md(kind, eid, side=B, px=0, qty=0, seq=1):
    r = np.zeros(1, MARKET_DATA)
    r["seq"] = seq
    r["kind"] = kind
    r["order_id"] = eid
    r["side"] = side
    r["price"] = px
    r["qty"] = qty
    r["instrument"] = 1
    return r


def rows(reports) -> list[tuple]:
    """(exec_type, client_order_id, status, last_qty, last_price, cum, leaves, reason,
    prevented_qty) of each report."""
    return [
        (int(r["exec_type"]), int(r["client_order_id"]), int(r["status"]), int(r["last_qty"]),
         int(r["last_price"]), int(r["cum_qty"]), int(r["leaves_qty"]), int(r["reason"]),
         int(r["prevented_qty"]))
        for r in reports
    ]  # fmt: skip


def R(et, clid, status, q=0, px=0, cum=0, leaves=0, reason=0, prevented=0):
    return (et, clid, status, q, px, cum, leaves, reason, prevented)


def ACK(clid, qty):
    return R(EXEC_ACK, clid, OS_NEW, leaves=qty)


def PART(clid, q, px, cum, leaves):
    return R(EXEC_PARTIAL_FILL, clid, OS_PARTIALLY_FILLED, q, px, cum, leaves)


def FILL(clid, q, px, cum):
    return R(EXEC_FILL, clid, OS_FILLED, q, px, cum)


def CXL(clid, cum=0):
    return R(EXEC_CANCELLED, clid, OS_CANCELLED, cum=cum)


def REJ(clid, reason):
    return R(EXEC_REJECTED, clid, OS_REJECTED, reason=reason)


def EXP(clid, prevented, cum=0):
    """EXEC_STP_EXPIRED: Binance EXPIRED_IN_MATCH, Coinbase / CME cancel by STP / SMP."""
    return R(EXEC_STP_EXPIRED, clid, OS_EXPIRED, cum=cum, reason=ST, prevented=prevented)


def DECR(clid, prevented, leaves, cum=0):
    """EXEC_STP_DECREMENTED: still working with ``leaves`` after ``prevented`` came off."""
    status = OS_PARTIALLY_FILLED if cum else OS_NEW
    return R(EXEC_STP_DECREMENTED, clid, status, cum=cum, leaves=leaves, reason=ST,
             prevented=prevented)  # fmt: skip


def ours(clid, side, px, qty, group=0, mode=DEFAULT):
    """Our resting order (placed as a NEW that crosses nothing)."""
    return ("ours", clid, side, px, qty, group, mode)


def ext(eid, side, px, qty):
    """Another participant's resting order (an order-level add)."""
    return ("ext", eid, side, px, qty)


def run_scenario(profile, resting, incoming):
    v = make_venue(profile)
    for k, item in enumerate(resting):
        if item[0] == "ours":
            _, clid, side, px, qty, group, mode = item
            v.on_orders(order(clid, side, px, qty, mode, group, seq=k + 1), 0)
        else:
            _, eid, side, px, qty = item
            v.on_market_data(md(MD_BOOK_ADD, eid, side, px, qty, seq=k + 1), 0)
    before = rows(v.drain(0))
    assert all(r[0] == EXEC_ACK for r in before), before  # the book was built uncrossed
    v.on_orders(order(**incoming, seq=100), 0)
    got = rows(v.drain(0))
    assert v.counters()["reports_lost"] == 0
    return v, got


# --- scenario tables ---------------------------------------------------------------------------
# (name, profile, resting orders in arrival order, incoming order, reports, bids, asks after)

BINANCE = [  # BINANCE_FAQ / BINANCE_FAQ_WEB, "STP Examples", scenarios A-G (same account)
    ("A_none_orders_match", "none",
     [ours(1, B, 10, 10)], dict(clid=5, side=S, px=10, qty=10),
     [ACK(5, 10), FILL(1, 10, 10, 10), FILL(5, 10, 10, 10)],
     [], []),
    ("B_expire_maker_expires_every_maker_and_the_taker_rests", "binance",
     [ours(1, B, 12, 12), ours(2, B, 11, 13), ours(3, B, 10, 81)],
     dict(clid=5, side=S, px=10, qty=30, mode=CR),
     [ACK(5, 30), EXP(1, 12), EXP(2, 13), EXP(3, 81)],
     [], [(10, OURS, 5, 30)]),
    ("C_expire_taker_expires_the_taker_makers_remain", "binance",
     [ours(1, B, 12, 12), ours(2, B, 11, 13), ours(3, B, 10, 81)],
     dict(clid=5, side=S, px=10, qty=30, mode=CN),
     [ACK(5, 30), EXP(5, 30)],
     [(12, OURS, 1, 12), (11, OURS, 2, 13), (10, OURS, 3, 81)], []),
    ("D_expire_both_expires_both", "binance",
     [ours(1, B, 10, 10)], dict(clid=5, side=S, px=10, qty=30, mode=CB),
     [ACK(5, 30), EXP(1, 10), EXP(5, 30)],
     [], []),
    ("E_the_taker_mode_governs_not_the_makers", "binance",
     [ours(1, B, 10, 10, mode=CR)], dict(clid=5, side=S, px=10, qty=10, mode=CN),
     [ACK(5, 10), EXP(5, 10)],
     [(10, OURS, 1, 10)], []),
    ("F_market_expire_maker_maker_expires_taker_expires_for_liquidity", "binance",
     [ours(1, B, 10, 10)], dict(clid=5, side=S, px=0, qty=10, mode=CR, market=True),
     [ACK(5, 10), EXP(1, 10), CXL(5)],  # Binance: EXPIRED (no liquidity) = our IOC cancel
     [], []),
    ("G_decrement_both_prevented_2_the_taker_expires_the_maker_stays_new", "binance",
     [ours(1, B, 20, 60)], dict(clid=5, side=S, px=20, qty=20, mode=DEC),
     [ACK(5, 20), DECR(1, 20, leaves=40), EXP(5, 20)],
     [(20, OURS, 1, 40)], []),
    ("default_mode_is_expire_maker", "binance",
     [ours(1, B, 10, 10)], dict(clid=5, side=S, px=10, qty=10),
     [ACK(5, 10), EXP(1, 10)],
     [], [(10, OURS, 5, 10)]),
]  # fmt: skip

COINBASE_CASES = [  # COINBASE: "Self-Trade Prevention" (dc default, co, cn, cb)
    ("dc_default_resting_smaller_cancelled_taker_decremented", "coinbase",
     [ours(1, S, 100, 3)], dict(clid=5, side=B, px=100, qty=5),
     [ACK(5, 5), EXP(1, 3), DECR(5, 3, leaves=2)],
     [(100, OURS, 5, 2)], []),
    ("dc_taker_smaller_cancelled_resting_decremented", "coinbase",
     [ours(1, S, 100, 5)], dict(clid=5, side=B, px=100, qty=3),
     [ACK(5, 3), DECR(1, 3, leaves=2), EXP(5, 3)],
     [], [(100, OURS, 1, 2)]),
    ("dc_same_size_cancel_both", "coinbase",
     [ours(1, S, 100, 4)], dict(clid=5, side=B, px=100, qty=4, mode=DEC),
     [ACK(5, 4), EXP(1, 4), EXP(5, 4)],
     [], []),
    ("co_cancels_the_resting_order_in_full_and_the_taker_continues", "coinbase",
     [ours(1, S, 100, 5), ext(7, S, 100, 4)], dict(clid=5, side=B, px=100, qty=6, mode=CR),
     [ACK(5, 6), EXP(1, 5), PART(5, 4, 100, 4, 2)],
     [(100, OURS, 5, 2)], []),
    ("cn_cancels_the_taker_in_full_the_resting_order_remains", "coinbase",
     [ours(1, S, 100, 5), ext(7, S, 101, 4)], dict(clid=5, side=B, px=101, qty=6, mode=CN),
     [ACK(5, 6), EXP(5, 6)],
     [], [(100, OURS, 1, 5), (101, EXT, 7, 4)]),
    ("cn_liquidity_at_a_better_price_trades_first", "coinbase",
     [ext(7, S, 99, 4), ours(1, S, 100, 5)], dict(clid=5, side=B, px=100, qty=6, mode=CN),
     [ACK(5, 6), PART(5, 4, 99, 4, 2), EXP(5, 2, cum=4)],
     [], [(100, OURS, 1, 5)]),
    ("cb_cancels_both_immediately", "coinbase",
     [ours(1, S, 100, 5)], dict(clid=5, side=B, px=100, qty=6, mode=CB),
     [ACK(5, 6), EXP(1, 5), EXP(5, 6)],
     [], []),
    ("the_taker_instruction_takes_precedence_over_the_resting_one", "coinbase",
     [ours(1, S, 100, 5, mode=CN)], dict(clid=5, side=B, px=100, qty=5, mode=CR),
     [ACK(5, 5), EXP(1, 5)],
     [(100, OURS, 5, 5)], []),
]  # fmt: skip

CME = [  # CME_WIKI / CME_FAQ: SMP ID (our stp_group), tag 8000 on the aggressor, FIFO
    ("no_tag_8000_cancels_the_resting_order", "cme",
     [ours(1, S, 100, 5)], dict(clid=5, side=B, px=100, qty=5),
     [ACK(5, 5), EXP(1, 5)],
     [(100, OURS, 5, 5)], []),
    ("tag_8000_cancel_newest_cancels_the_aggressor", "cme",
     [ours(1, S, 100, 5)], dict(clid=5, side=B, px=100, qty=5, mode=CN),
     [ACK(5, 5), EXP(5, 5)],
     [], [(100, OURS, 1, 5)]),
    ("fifo_only_orders_that_would_have_executed", "cme",
     [ext(7, S, 100, 5), ours(1, S, 100, 5)], dict(clid=5, side=B, px=100, qty=5),
     [ACK(5, 5), FILL(5, 5, 100, 5)],
     [], [(100, OURS, 1, 5)]),
    ("resting_cancelled_and_the_incoming_order_continues", "cme",
     [ours(1, S, 100, 3), ext(7, S, 101, 4)], dict(clid=5, side=B, px=101, qty=5),
     [ACK(5, 5), EXP(1, 3), PART(5, 4, 101, 4, 1)],
     [(101, OURS, 5, 1)], []),
    ("another_smp_id_is_not_prevented", "cme",
     [ours(1, S, 100, 5, group=2)], dict(clid=5, side=B, px=100, qty=5, group=1),
     [ACK(5, 5), FILL(1, 5, 100, 5), FILL(5, 5, 100, 5)],
     [], []),
    ("no_decrement_on_globex", "cme",
     [ours(1, S, 100, 5)], dict(clid=5, side=B, px=100, qty=5, mode=DEC),
     [REJ(5, VREJ)],
     [], [(100, OURS, 1, 5)]),
    ("no_cancel_both_on_globex", "cme",
     [ours(1, S, 100, 5)], dict(clid=5, side=B, px=100, qty=5, mode=CB),
     [REJ(5, VREJ)],
     [], [(100, OURS, 1, 5)]),
]  # fmt: skip

ISSUE_CASES = [  # ISSUE: foreign liquidity ahead of / better than ours still trades
    *[(f"foreign_10_ahead_of_our_4_buy_10_fills_10_{name}", "binance",
       [ext(7, S, 100, 10), ours(1, S, 100, 4)], dict(clid=5, side=B, px=100, qty=10, mode=m),
       [ACK(5, 10), FILL(5, 10, 100, 10)],
       [], [(100, OURS, 1, 4)])
      for name, m in (("cn", CN), ("cr", CR), ("cb", CB), ("dec", DEC))],
    ("decrement_ours_4_foreign_3_ours_5_buy_10_fills_3_leaves_ours_at_2", "binance",
     [ours(1, S, 100, 4), ext(7, S, 100, 3), ours(2, S, 100, 5)],
     dict(clid=5, side=B, px=100, qty=10, mode=DEC),
     [ACK(5, 10), EXP(1, 4), DECR(5, 4, leaves=6), PART(5, 3, 100, 3, 3), DECR(2, 3, leaves=2),
      EXP(5, 3, cum=3)],
     [], [(100, OURS, 2, 2)]),
    ("cancel_both_only_the_order_met_and_the_taker", "binance",
     [ours(1, S, 100, 3), ours(2, S, 101, 3)], dict(clid=5, side=B, px=101, qty=10, mode=CB),
     [ACK(5, 10), EXP(1, 3), EXP(5, 10)],
     [], [(101, OURS, 2, 3)]),
    ("fok_counts_only_what_fills_cancel_resting_skips_ours", "binance",
     [ext(7, S, 100, 3), ours(1, S, 100, 5), ext(8, S, 100, 4)],
     dict(clid=5, side=B, px=100, qty=5, mode=CR, tif=TIF_FOK),
     [ACK(5, 5), PART(5, 3, 100, 3, 2), EXP(1, 5), FILL(5, 2, 100, 5)],
     [], [(100, EXT, 8, 2)]),
    ("fok_cancel_new_stops_counting_at_ours_and_touches_nothing", "binance",
     [ext(7, S, 100, 3), ours(1, S, 100, 5), ext(8, S, 100, 4)],
     dict(clid=5, side=B, px=100, qty=5, mode=CN, tif=TIF_FOK),
     [ACK(5, 5), CXL(5)],
     [], [(100, EXT, 7, 3), (100, OURS, 1, 5), (100, EXT, 8, 4)]),
    ("ioc_decrement_remainder_cancelled_after_the_decrement", "coinbase",
     [ours(1, S, 100, 2)], dict(clid=5, side=B, px=100, qty=5, tif=TIF_IOC),
     [ACK(5, 5), EXP(1, 2), DECR(5, 2, leaves=3), CXL(5)],
     [], []),
]  # fmt: skip

TABLES = [("binance", BINANCE), ("coinbase", COINBASE_CASES), ("cme", CME), ("issue", ISSUE_CASES)]
ALL = [(f"{t}/{c[0]}", *c[1:]) for t, cases in TABLES for c in cases]


@pytest.mark.parametrize(("profile", "resting", "incoming", "want", "bids", "asks"),
                         [c[1:] for c in ALL], ids=[c[0] for c in ALL])  # fmt: skip
def test_documented_scenarios(profile, resting, incoming, want, bids, asks):
    v, got = run_scenario(profile, resting, incoming)
    assert got == want
    own = sum(r[3] for r in got if r[1] != incoming["clid"])  # our makers our taker filled
    assert v.counters()["own_traded_qty"] == own
    assert v.resting(1, B) == bids
    assert v.resting(1, S) == asks


def test_a_replace_that_crosses_takes_under_the_order_mode_or_the_replace_mode():
    v = make_venue("binance")
    v.on_orders(order(1, S, 101, 5), 0)
    v.on_orders(order(2, B, 100, 5, mode=CN), 0)
    v.drain(0)
    v.on_orders(replace_px(2, 101), 0)  # stp_mode 0 on the replace: the order keeps CN
    assert rows(v.drain(0)) == [R(EXEC_REPLACED, 2, OS_NEW, leaves=5), EXP(2, 5)]
    v.on_orders(order(3, B, 100, 5, mode=CN), 0)
    v.drain(0)
    rep = replace_px(3, 101)
    rep["stp_mode"] = DEC
    v.on_orders(rep, 0)
    assert rows(v.drain(0)) == [R(EXEC_REPLACED, 3, OS_NEW, leaves=5), EXP(1, 5), EXP(3, 5)]
    assert v.counters()["stp_matches"] == 2 and v.counters()["stp_prevented_qty"] == 15


def test_stage_profiles_and_default_param():
    from bot4.stages.base import ParamError
    from bot4.stages.venue import VenueStage, stp_settings

    assert stp_settings({}) == STP_PROFILES["binance"]
    assert stp_settings({"stp_profile": "coinbase"})[0] == STP_DECREMENT
    assert stp_settings({"stp_profile": "cme"}) == (CR, (CN, CR))
    assert stp_settings({"stp_profile": "binance", "stp_default": "cancel_new"})[0] == CN
    assert stp_settings({"stp_profile": "cme", "stp_default": "none"})[0] == STP_NONE
    with pytest.raises(ParamError, match="stp_default"):
        VenueStage.check_params({"stp_profile": "cme", "stp_default": "decrement"})
    with pytest.raises(ParamError, match="stp_profile"):
        VenueStage.check_params({"stp_profile": "nyse"})


# --- property: the kernel against a reference matcher written from the documents ---------------


class Reference:
    """One instrument, price-time priority, the documented STP rules over plain lists."""

    def __init__(self, profile):
        self.default, allowed = STP_PROFILES[profile]
        self.allowed = set(allowed)
        self.book = {B: [], S: []}  # priority order
        self.live = {}  # clid -> our order
        self.ext = {}  # eid -> external order
        self.out = []

    def rest(self, o):
        q = self.book[o["side"]]
        ahead = (lambda p: p >= o["price"]) if o["side"] == B else (lambda p: p <= o["price"])
        i = 0
        while i < len(q) and ahead(q[i]["price"]):
            i += 1
        q.insert(i, o)

    def status(self, o):
        return OS_PARTIALLY_FILLED if o["cum"] else OS_NEW

    def fill(self, o, q, px):
        o["leaves"] -= q
        o["cum"] += q
        done = o["leaves"] == 0
        self.out.append(R(EXEC_FILL if done else EXEC_PARTIAL_FILL, o["clid"],
                          OS_FILLED if done else OS_PARTIALLY_FILLED, q, px, o["cum"],
                          o["leaves"]))  # fmt: skip

    def expire(self, o, prevented):
        o["leaves"] = 0
        self.out.append(EXP(o["clid"], prevented, o["cum"]))
        self.live.pop(o["clid"], None)

    def decrement(self, o, d):
        o["leaves"] -= d
        o["qty"] -= d
        self.out.append(DECR(o["clid"], d, o["leaves"], o["cum"]))

    def crosses(self, side, limit, px):
        return px <= limit if side == B else px >= limit

    def prevented(self, taker, o):
        return (taker["mode"] != STP_NONE and o["owner"] == OURS
                and o["group"] == taker["group"])  # fmt: skip

    def new(self, clid, side, px, qty, tif, mode, group, market):
        if mode != STP_NONE and mode not in self.allowed:
            self.out.append(REJ(clid, VREJ))
            return
        limit = (2**62 if side == B else 0) if market else px
        if market and tif != TIF_FOK:
            tif = TIF_IOC
        o = dict(owner=OURS, clid=clid, side=side, price=limit, qty=qty, leaves=qty, cum=0,
                 group=group, mode=mode or self.default)  # fmt: skip
        self.live[clid] = o
        self.out.append(ACK(clid, qty))
        if tif == TIF_FOK:
            fillable = 0
            for x in self.book[-side]:
                if not self.crosses(side, limit, x["price"]):
                    break
                if self.prevented(o, x):
                    if o["mode"] != CR:
                        break  # the taker expires or is decremented here: no more fills
                    continue  # expired, skipped
                fillable += x["leaves"]
            if fillable < qty:
                self.out.append(CXL(clid))
                del self.live[clid]
                return
        self.work(o, tif)

    def work(self, o, tif):
        self.take(o)
        if o["leaves"] == 0:
            self.live.pop(o["clid"], None)
        elif tif in (TIF_IOC, TIF_FOK):
            self.out.append(CXL(o["clid"], o["cum"]))
            del self.live[o["clid"]]
        else:
            self.rest(o)

    def take(self, t):
        """Our taker ``t``: its fills are reported once per price level, and before any
        prevention report (what it traded so far)."""
        opp = self.book[-t["side"]]
        while t["leaves"] > 0 and opp and self.crosses(t["side"], t["price"], opp[0]["price"]):
            px = opp[0]["price"]
            traded = 0
            for o in [x for x in opp if x["price"] == px]:
                avail = t["leaves"] - traded
                if avail == 0:
                    break
                if self.prevented(t, o):
                    if traded:
                        self.fill(t, traded, px)
                        traded = 0
                    mode = t["mode"]
                    if mode in (CR, CB):
                        opp.remove(o)
                        self.expire(o, o["leaves"])
                    if mode in (CN, CB):
                        self.expire(t, t["leaves"])
                        return
                    if mode == DEC:
                        d = min(o["leaves"], t["leaves"])
                        if d == o["leaves"]:
                            opp.remove(o)
                            self.expire(o, d)
                        else:
                            self.decrement(o, d)
                        if d == t["leaves"]:
                            t["qty"] -= d
                            self.expire(t, d)
                            return
                        self.decrement(t, d)
                    continue
                f = min(avail, o["leaves"])
                traded += f
                if o["owner"] == OURS:
                    self.fill(o, f, px)
                    if o["leaves"] == 0:
                        opp.remove(o)
                        self.live.pop(o["clid"])
                else:
                    o["leaves"] -= f
                    if o["leaves"] == 0:
                        opp.remove(o)
                        self.ext.pop(o["id"])
            if traded:
                self.fill(t, traded, px)

    def ext_add(self, eid, side, px, qty):
        if eid in self.ext:
            old = self.ext.pop(eid)
            self.book[old["side"]].remove(old)
        x = dict(owner=EXT, id=eid, side=side, price=px, leaves=qty)
        opp = self.book[-side]
        while x["leaves"] and opp and self.crosses(side, px, opp[0]["price"]):
            o = opp[0]
            f = min(x["leaves"], o["leaves"])
            x["leaves"] -= f
            if o["owner"] == OURS:
                self.fill(o, f, o["price"])
                if o["leaves"] == 0:
                    opp.pop(0)
                    self.live.pop(o["clid"])
            else:
                o["leaves"] -= f
                if o["leaves"] == 0:
                    opp.pop(0)
                    self.ext.pop(o["id"])
        if x["leaves"]:
            self.rest(x)
            self.ext[eid] = x

    def ext_delete(self, eid):
        if eid in self.ext:
            x = self.ext.pop(eid)
            self.book[x["side"]].remove(x)

    def replace(self, clid, px):
        o = self.live[clid]
        self.out.append(R(EXEC_REPLACED, clid, self.status(o), cum=o["cum"], leaves=o["leaves"]))
        if px != o["price"]:
            self.book[o["side"]].remove(o)
            o["price"] = px
            self.work(o, TIF_DAY)

    def resting(self, side):
        return [(o["price"], o["owner"], o["clid"] if o["owner"] == OURS else o["id"],
                 o["leaves"]) for o in self.book[side]]  # fmt: skip


sides = hs.sampled_from([B, S])
prices = hs.integers(98, 102)
qtys = hs.integers(1, 10)
OPS = {
    "new": hs.tuples(hs.just("new"), sides, prices, qtys,
                     hs.sampled_from([TIF_DAY, TIF_DAY, TIF_DAY, TIF_IOC, TIF_FOK]),
                     hs.sampled_from([DEFAULT, DEFAULT, CN, CR, CB, DEC]),
                     hs.sampled_from([0, 0, 0, 1]), hs.sampled_from([False] * 9 + [True])),
    "ext_add": hs.tuples(hs.just("ext_add"), hs.integers(1, 12), sides, prices, qtys),
    "ext_delete": hs.tuples(hs.just("ext_delete"), hs.integers(1, 12)),
    "replace": hs.tuples(hs.just("replace"), hs.integers(0, 20), prices),
}  # fmt: skip
WEIGHTS = dict(new=5, ext_add=5, ext_delete=1, replace=1)
ops = hs.sampled_from([k for k, w in WEIGHTS.items() for _ in range(w)]).flatmap(OPS.get)


@seed(20240614)  # fixed: a failure reproduces run to run (hypothesis prints the example)
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.sampled_from(sorted(STP_PROFILES)), hs.lists(ops, min_size=5, max_size=50))
def test_kernel_equals_the_reference_and_never_self_trades(profile, seq):
    v = make_venue(profile)
    ref = Reference(profile)
    groups, modes, qty0 = {}, {}, {}
    prevented: dict[int, int] = {}
    clid = 0
    for k, op in enumerate(seq):
        kind, *a = op
        ref.out = []
        if kind == "new":
            side, px, qty, tif, mode, group, market = a
            clid += 1
            groups[clid], qty0[clid] = group, qty
            modes[clid] = mode or STP_PROFILES[profile][0]
            v.on_orders(order(clid, side, px, qty, mode, group, tif, market, seq=k + 1), 0)
            ref.new(clid, side, px, qty, tif, mode, group, market)
            taker = clid
        elif kind == "replace":
            live = sorted(ref.live)
            if not live:
                continue
            target = live[a[0] % len(live)]
            v.on_orders(replace_px(target, a[1], seq=k + 1), 0)
            ref.replace(target, a[1])
            taker = target
        elif kind == "ext_add":
            v.on_market_data(md(MD_BOOK_ADD, a[0], a[1], a[2], a[3], seq=k + 1), 0)
            ref.ext_add(*a)
            taker = None
        else:
            v.on_market_data(md(MD_BOOK_DELETE, a[0], seq=k + 1), 0)
            ref.ext_delete(*a)
            taker = None
        got = rows(v.drain(0))
        assert got == ref.out, f"step {k} {op}"
        assert v.resting(1, B) == ref.resting(B), f"bids after step {k} {op}"
        assert v.resting(1, S) == ref.resting(S), f"asks after step {k} {op}"
        for r in got:
            prevented[r[1]] = prevented.get(r[1], 0) + r[8]
            if taker is not None and r[1] != taker and r[0] in (EXEC_FILL, EXEC_PARTIAL_FILL):
                # a maker of ours filled by our taker: never within one STP group
                assert groups[r[1]] != groups[taker] or modes[taker] == STP_NONE, (k, op, r)
    assert v.counters()["reports_lost"] == 0
    # conservation: a working order's shares are filled, prevented or still working
    for c, o in ref.live.items():
        assert o["cum"] + prevented.get(c, 0) + o["leaves"] == qty0[c], c
