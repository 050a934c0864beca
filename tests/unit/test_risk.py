"""Pre-trade risk: every check with its exact decision, reason, checked and limit values;
REDUCING, the rate limit on a controlled clock, the daily loss and its local-time reset,
the kill switch, fills into positions and PnL, and the stage around the kernels.

Kernels run on process-local breaker and trading-state words laid out like the shared
segments, with the clock passed in. Prices are in units of $0.0001 (scale 10_000); the
reference of instrument 1 is the mid of 1_000_000 / 1_000_200, i.e. 1_000_100 ($100.01).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from bot4.records import (
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    DECISION_ACCEPT,
    DECISION_DENY,
    EXEC_ACK,
    EXEC_CANCELLED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPORT,
    MARKET_DATA,
    MD_QUOTE,
    MD_TRADE,
    ORDER,
    ORDER_INTENT,
    OS_CANCELLED,
    OS_FILLED,
    OS_NEW,
    OS_PARTIALLY_FILLED,
    OS_REJECTED,
    OT_LIMIT,
    OT_MARKET,
    RISK_DECISION,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
)
from bot4.records.errors import Code
from bot4.risk import create_risk_segments
from bot4.risk.book import RiskBook
from bot4.risk.layout import X_NEXT_RESET_NS
from bot4.risk.limits import RiskConfigError, RiskLimits, build_arrays, next_reset_utc_ns
from bot4.shm import breakers as B
from bot4.shm import trading_state as T
from bot4.shm.segment import Segment

INT64_MAX = 2**63 - 1
T0 = 10**12  # host monotonic ns at the start of every test
SEC = 1_000_000_000
RISK_ID = 4  # the risk stage's own producer id (its CANCEL_ALL ids)
SIGNALS_ID = 3  # the intents' producer id
BID, ASK, MID = 1_000_000, 1_000_200, 1_000_100

INSTRUMENTS = """
[[instrument]]
id = 1
symbol = "AAPL"
price_scale = 10000
tick_size = "0.01"

[[instrument]]
id = 2
symbol = "LOT"
price_scale = 10000
tick_size = "0.01"
lot_size = 100

[[instrument]]
id = 3
symbol = "DARK"
price_scale = 10000
tick_size = "0.01"

[[instrument]]
id = 4
symbol = "MSFT"
price_scale = 10000
tick_size = "0.01"
"""

BASE = {
    "max_order_qty": 1_000,
    "max_notional": "90000",  # 900_000_000 units
    "max_position": 2_000,
    "max_open_orders": 3,
    "price_band_bp": 500,
    "max_gross": "400000",
    "max_open_orders_total": 5,
    "max_tracked_orders": 16,
    "daily_loss_limit": "1000",  # 10_000_000 units
    "max_stop_bp": 300,
    "rate_per_s": 0,
    "max_reference_age_s": 1.0,
    "intent_producer": SIGNALS_ID,
    "strategies": {"2": {"stop_loss_required": False}},
    "breakers": [{"name": "venue", "min_calls": 4, "cooldown_ns": 1_000}],
}


@pytest.fixture(scope="module")
def instruments_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("risk") / "instruments.toml"
    path.write_text(INSTRUMENTS)
    return str(path)


class Desk:
    """A risk book on local shared-state words, with a hand-driven clock."""

    def __init__(self, instruments_file: str, **params) -> None:
        self.limits = RiskLimits.from_params(
            {**BASE, "instruments_file": instruments_file, **params}
        )
        arrays = build_arrays(self.limits, self.limits.instrument_table(), risk_producer=RISK_ID)
        self.brk = B.local_breakers(self.limits.breakers, 0)
        self.ts = np.zeros(T.trading_bytes(4) // 8, np.uint64)
        T.init_trading_state(self.ts, 4, 0)
        self.book = RiskBook(arrays, self.brk, self.ts, self.limits.max_tracked_orders)
        self.now = T0
        self.seq = 1
        self.intent_seq = 0
        self.orders: list = []  # every ORDER the book emitted

    def _orders(self, out, n) -> np.ndarray:
        got = out[:n].copy()
        self.orders.extend(got)
        return got

    def quote(self, inst: int = 1, bid: int = BID, ask: int = ASK) -> np.ndarray:
        md = np.zeros(2, MARKET_DATA)
        md["instrument"] = inst
        md["kind"] = MD_QUOTE
        md["side"] = [SIDE_BUY, SIDE_SELL]
        md["price"] = [bid, ask]
        md["qty"] = [100 if bid else 0, 100 if ask else 0]
        md["ts_recv_ns"] = self.now
        return self.market_data(md)

    def market_data(self, md) -> np.ndarray:
        out = np.zeros(8, ORDER)
        n = self.book.market_data(md, out, self.seq, self.now)
        self.seq += n
        return self._orders(out, n)

    def intents(self, *specs: dict, room: int | None = None):
        it = np.zeros(len(specs), ORDER_INTENT)
        for k, spec in enumerate(specs):
            self.intent_seq += 1
            fields = {
                "seq": self.intent_seq,
                "ts_event_ns": 11,
                "ts_recv_ns": 22,
                "ts_signal_ns": 33,
                "instrument": 1,
                "side": SIDE_BUY,
                "qty": 100,
                "limit_price": BID,
                "stop_price": 990_000,
                "strategy": 1,
                "order_type": OT_LIMIT,
                "tif": TIF_DAY,
                **spec,
            }
            for f, v in fields.items():
                it[k][f] = v
        out = np.zeros(room if room is not None else 2 * len(specs), ORDER)
        dec = np.zeros(len(specs), RISK_DECISION)
        n_o, n_d = self.book.check(it, out, dec, self.seq, self.now)
        self.seq += n_o + n_d
        return dec[:n_d].copy(), self._orders(out, n_o)

    def intent(self, **spec):
        dec, orders = self.intents(spec)
        return dec[0], orders

    def execs(self, *specs: dict) -> np.ndarray:
        ex = np.zeros(len(specs), EXEC_REPORT)
        for k, spec in enumerate(specs):
            for f, v in spec.items():
                ex[k][f] = v
        out = np.zeros(8, ORDER)
        n = self.book.fills(ex, out, self.seq, self.now)
        self.seq += n
        return self._orders(out, n)

    def fill(self, inst=1, side=SIDE_BUY, qty=100, px=BID, fee=0, coid=0, status=OS_FILLED):
        """A fill report; ``coid`` 0 = an order risk does not know (moves the position only)."""
        return self.execs(
            {
                "client_order_id": coid,
                "instrument": inst,
                "side": side,
                "last_qty": qty,
                "last_price": px,
                "fee": fee,
                "exec_type": EXEC_FILL if status == OS_FILLED else EXEC_PARTIAL_FILL,
                "status": status,
            }
        )

    def pos(self, inst: int = 1) -> dict:
        return self.book.positions()[inst]


def outcome(d) -> tuple:
    decision = {DECISION_ACCEPT: "ACCEPT", DECISION_DENY: "DENY"}[int(d["decision"])]
    return decision, Code(int(d["reason"])).name, int(d["checked_value"]), int(d["limit_value"])


ACCEPT = ("ACCEPT", "OK", 0, 0)


def deny(reason: str, checked: int, limit: int) -> tuple:
    return ("DENY", reason, checked, limit)


@pytest.fixture
def desk(instruments_file) -> Desk:
    d = Desk(instruments_file)
    d.quote(1)
    d.quote(2)
    d.quote(4)
    return d


# --- every check, one intent on a fresh desk -------------------------------------------------


def long_position(d: Desk, qty: int, inst: int = 1) -> None:
    d.fill(inst=inst, qty=qty)


def case(name, spec, expected, setup=None, **params):
    return pytest.param(spec, expected, setup, params, id=name)


def halt(target):
    return lambda d: T.set_state(d.ts, target, T.HALTED, 0, T.SRC_OPERATOR)


SELL = {"side": SIDE_SELL, "limit_price": ASK}
CASES = [
    case("accepted", {}, ACCEPT),
    case("unknown instrument", {"instrument": 99}, deny("UNKNOWN_INSTRUMENT", 99, 0)),
    case("no side", {"side": 0}, deny("MALFORMED_ROW", 0, 0)),
    case("zero qty", {"qty": 0}, deny("INVALID_QTY", 0, 0)),
    case("negative limit", {"limit_price": -5}, deny("NEGATIVE_PRICE", -5, 0)),
    case("max order qty", {"qty": 1_001}, deny("MAX_ORDER_QTY", 1_001, 1_000)),
    case("max order qty, under", {"qty": 900}, ACCEPT),
    case("lot", {"instrument": 2, "qty": 150}, deny("QTY_NOT_LOT_MULTIPLE", 150, 100)),
    case("lot, multiple", {"instrument": 2, "qty": 200}, ACCEPT),
    case("no reference", {"instrument": 3}, deny("NO_REFERENCE_PRICE", 0, 0)),
    case(
        "stale reference",
        {},
        deny("NO_REFERENCE_PRICE", SEC + 1, SEC),
        lambda d: setattr(d, "now", d.now + SEC + 1),
    ),
    case("reference just fresh", {}, ACCEPT, lambda d: setattr(d, "now", d.now + SEC)),
    # band: 500 bp of 1_000_100 = 50_005 units
    case(
        "price band above",
        {"limit_price": MID + 50_006, "stop_price": MID},
        deny("PRICE_BAND", 50_006, 50_005),
    ),
    case("price band at edge", {"limit_price": MID + 50_005, "stop_price": MID + 20_000}, ACCEPT),
    case(
        "price band below",
        {"limit_price": MID - 50_006, "stop_price": 900_000},
        deny("PRICE_BAND", 50_006, 50_005),
    ),
    case("no band, no reference needed", {"instrument": 3}, ACCEPT, price_band_bp=0),
    # notional: 90_000 $ = 900_000_000 units
    case("max notional", {"qty": 901}, deny("MAX_NOTIONAL", 901_000_000, 900_000_000)),
    case(
        "max notional overflowing int64",
        {"qty": 2**30, "limit_price": 2**40, "stop_price": 2**40 - 1},
        deny("MAX_NOTIONAL", INT64_MAX, 900_000_000),
        max_order_qty=2**31,
        price_band_bp=0,
        max_stop_bp=0,
    ),
    case(
        "market order valued at the reference",
        {"order_type": OT_MARKET, "limit_price": 0, "qty": 900},
        deny("MAX_NOTIONAL", 900 * MID, 900_000_000),
    ),
    case("market order", {"order_type": OT_MARKET, "limit_price": 0}, ACCEPT),
    case(
        "market order needs a reference even without a band",
        {"order_type": OT_MARKET, "limit_price": 0, "instrument": 3},
        deny("NO_REFERENCE_PRICE", 0, 0),
        price_band_bp=0,
    ),
    case("stop missing", {"stop_price": 0}, deny("STOP_LOSS_MISSING", 0, 0)),
    case("stop not required for strategy 2", {"stop_price": 0, "strategy": 2}, ACCEPT),
    case("stop at a buy's entry", {"stop_price": BID}, deny("STOP_LOSS_WRONG_SIDE", BID, BID)),
    case(
        "stop below a sell's entry",
        {**SELL, "stop_price": ASK - 1},
        deny("STOP_LOSS_WRONG_SIDE", ASK - 1, ASK),
    ),
    # 300 bp of 1_000_000 = 30_000; of 1_000_200 = 30_006
    case("stop too far", {"stop_price": BID - 30_001}, deny("STOP_LOSS_TOO_FAR", 30_001, 30_000)),
    case("stop at the max distance", {"stop_price": BID - 30_000}, ACCEPT),
    case(
        "sell stop too far",
        {**SELL, "stop_price": ASK + 30_007},
        deny("STOP_LOSS_TOO_FAR", 30_007, 30_006),
    ),
    case(
        "market order's stop against the reference",
        {"order_type": OT_MARKET, "limit_price": 0, "stop_price": MID},
        deny("STOP_LOSS_WRONG_SIDE", MID, MID),
    ),
    case(
        "a reducing order needs no stop",
        {**SELL, "stop_price": 0, "qty": 500},
        ACCEPT,
        lambda d: long_position(d, 500),
    ),
    case(
        "a wrong-side stop is refused even on a reducing order",
        {**SELL, "stop_price": ASK - 100, "qty": 500},
        deny("STOP_LOSS_WRONG_SIDE", ASK - 100, ASK),
        lambda d: long_position(d, 500),
    ),
    # position: worst case counts open orders on the order's side
    case(
        "position limit long",
        {"qty": 501},
        deny("POSITION_LIMIT", 2_001, 2_000),
        lambda d: long_position(d, 1_500),
    ),
    case("position limit long, at", {"qty": 500}, ACCEPT, lambda d: long_position(d, 1_500)),
    case(
        "position limit counts open buys",
        {"qty": 101},
        deny("POSITION_LIMIT", 2_001, 2_000),
        lambda d: (long_position(d, 1_500), d.intent(qty=400)),
    ),
    case(
        "position limit short counts open sells",
        {**SELL, "stop_price": ASK + 100, "qty": 101},
        deny("POSITION_LIMIT", 2_001, 2_000),
        lambda d: (
            d.fill(side=SIDE_SELL, qty=1_800),
            d.intent(**SELL, stop_price=ASK + 100, qty=100),
        ),
    ),
    case(
        "selling out of a long is no short risk",
        {**SELL, "stop_price": 0, "qty": 800},
        ACCEPT,
        lambda d: long_position(d, 1_900),
    ),
    # gross 250_000 $: 1_500 + 900 marked at 1_000_100 = 2_400_240_000, +100 is over
    case(
        "gross limit",
        {"instrument": 4, "qty": 100},
        deny("GROSS_LIMIT", 2_500 * MID, 2_500_000_000),
        lambda d: (long_position(d, 1_500), long_position(d, 900, inst=4)),
        max_gross="250000",
    ),
    case(
        "max open orders per instrument",
        {},
        deny("MAX_OPEN_ORDERS", 4, 3),
        lambda d: d.intents({}, {}, {}),
    ),
    case(
        "max open orders account-wide",
        {"instrument": 4},
        deny("MAX_OPEN_ORDERS", 6, 5),
        lambda d: d.intents({}, {}, {}, {"instrument": 4}, {"instrument": 4}),
    ),
    case(
        "duplicate client order id",
        {},
        deny("DUPLICATE_ORDER", 1, 0),
        lambda d: (d.intent(), setattr(d, "intent_seq", 0)),
    ),
    case(
        "breaker open",
        {},
        deny("BREAKER_OPEN", B.OPEN, 0),
        lambda d: B.breaker_trip(d.brk, 0, d.now),
    ),
    case(
        "breaker of another instrument",
        {},
        ACCEPT,
        lambda d: B.breaker_trip(d.brk, 1, d.now),
        instruments={"MSFT": {"breaker": 1}},
        breakers=[{"name": "a"}, {"name": "b"}],
    ),
    case("global HALTED", {}, deny("STATE_HALTED", T.HALTED, 0), halt(0)),
    case("instrument HALTED", {}, deny("STATE_HALTED", T.HALTED, 0), halt(1)),
    case("another instrument HALTED", {"instrument": 4}, ACCEPT, halt(1)),
]


@pytest.mark.parametrize(("spec", "expected", "setup", "params"), CASES)
def test_each_check_decides_with_exact_values(instruments_file, spec, expected, setup, params):
    d = Desk(instruments_file, **params)
    for inst in (1, 2, 4):
        d.quote(inst)
    if setup is not None:
        setup(d)
    dec, orders = d.intent(**spec)
    assert outcome(dec) == expected
    new = [o for o in orders if o["action"] == ACTION_NEW]
    assert len(new) == (1 if expected == ACCEPT else 0)


def test_gross_limit_lets_exposure_reducing_orders_through(instruments_file) -> None:
    d = Desk(instruments_file, max_gross="250000")
    d.quote(1)
    d.quote(4)
    long_position(d, 1_500)
    long_position(d, 900, inst=4)
    assert outcome(d.intent(instrument=4, qty=97)[0]) == ACCEPT  # 2_497_249_700 <= 2.5e9
    assert outcome(d.intent(instrument=4, qty=3)[0]) == deny(
        "GROSS_LIMIT", 2_500_250_000, 2_500_000_000
    )
    sell = {"side": SIDE_SELL, "limit_price": ASK, "stop_price": 0, "qty": 100}
    assert outcome(d.intent(**sell)[0]) == ACCEPT


def test_decision_and_order_records_carry_identity_stamps_and_sequence(desk: Desk) -> None:
    desk.fill(qty=50)
    seq0 = desk.seq
    dec, orders = desk.intents({}, {"qty": 1_001})
    assert list(dec["seq"]) == [seq0, seq0 + 2] and list(orders["seq"]) == [seq0 + 1]
    a, b = dec
    assert (int(a["intent_seq"]), int(a["parent_seq"]), int(a["intent_producer"])) == (
        1,
        1,
        SIGNALS_ID,
    )
    assert (int(a["ts_event_ns"]), int(a["ts_recv_ns"]), int(a["ts_signal_ns"])) == (11, 22, 33)
    assert int(a["ts_risk_ns"]) == T0
    assert (int(a["position"]), int(a["exposure"])) == (50, 150 * BID)
    assert (int(a["qty"]), int(a["limit_price"]), int(a["stop_price"])) == (100, BID, 990_000)
    assert (int(b["decision"]), int(b["reason"])) == (DECISION_DENY, Code.MAX_ORDER_QTY)
    o = orders[0]
    assert int(o["client_order_id"]) == (SIGNALS_ID << 48) | 1
    assert (int(o["order_id"]), int(o["orig_client_order_id"]), int(o["ts_order_ns"])) == (0, 0, 0)
    assert (int(o["action"]), int(o["ts_risk_ns"]), int(o["parent_seq"])) == (ACTION_NEW, T0, 1)
    assert (int(o["qty"]), int(o["limit_price"]), int(o["stop_price"])) == (100, BID, 990_000)
    assert (int(o["side"]), int(o["order_type"]), int(o["tif"]), int(o["strategy"])) == (
        SIDE_BUY,
        OT_LIMIT,
        TIF_DAY,
        1,
    )
    assert not o["reserved"].any() and not a["reserved"].any()
    assert desk.book.decision_counts() == {"ACCEPTED": 1, "MAX_ORDER_QTY": 1}


# --- REDUCING ---------------------------------------------------------------------------------

REDUCING_CASES = [
    # (position, open sells before REDUCING, order side, qty, expected)
    (0, 0, SIDE_BUY, 100, deny("STATE_REDUCING", 100, 0)),
    (0, 0, SIDE_SELL, 100, deny("STATE_REDUCING", 100, 0)),
    (500, 0, SIDE_BUY, 100, deny("STATE_REDUCING", 100, 0)),
    (500, 0, SIDE_SELL, 500, ACCEPT),
    (500, 0, SIDE_SELL, 501, deny("STATE_REDUCING", 501, 500)),
    (500, 300, SIDE_SELL, 200, ACCEPT),
    (500, 300, SIDE_SELL, 201, deny("STATE_REDUCING", 501, 500)),
    (-500, 0, SIDE_BUY, 500, ACCEPT),
    (-500, 0, SIDE_BUY, 600, deny("STATE_REDUCING", 600, 500)),
    (-500, 0, SIDE_SELL, 1, deny("STATE_REDUCING", 1, 0)),
]


@pytest.mark.parametrize("target", [0, 1], ids=["global", "instrument"])
@pytest.mark.parametrize(("pos", "open_sells", "side", "qty", "expected"), REDUCING_CASES)
def test_reducing_lets_only_position_reducing_orders_through(
    desk: Desk, target, pos, open_sells, side, qty, expected
) -> None:
    if pos:
        desk.fill(side=SIDE_BUY if pos > 0 else SIDE_SELL, qty=abs(pos))
    sell = {"side": SIDE_SELL, "limit_price": ASK, "stop_price": 0}
    if open_sells:
        assert outcome(desk.intent(**sell, qty=open_sells)[0]) == ACCEPT
    T.set_state(desk.ts, target, T.REDUCING, 0, T.SRC_OPERATOR)
    spec = sell if side == SIDE_SELL else {"stop_price": 0}
    assert outcome(desk.intent(**spec, qty=qty)[0]) == expected
    # another instrument: reducing only if the whole desk is
    other = desk.intent(instrument=4)[0]
    assert outcome(other) == (deny("STATE_REDUCING", 100, 0) if target == 0 else ACCEPT)


# --- rate limit -------------------------------------------------------------------------------


def test_rate_limit_token_bucket_with_a_controlled_clock(instruments_file) -> None:
    ms = 1_000_000
    d = Desk(
        instruments_file,
        rate_per_s=10,  # one order per 100 ms
        burst=3,
        max_open_orders=20,
        max_open_orders_total=20,
        max_tracked_orders=64,
        max_reference_age_s=0,
        strategies={"2": {"rate_per_s": 1, "burst": 1}},
    )
    d.quote()
    got = [outcome(x) for x in d.intents({}, {}, {}, {})[0]]
    assert got == [ACCEPT] * 3 + [deny("RATE_LIMIT", 400 * ms, 300 * ms)]
    assert outcome(d.intent(strategy=2)[0]) == ACCEPT  # its own bucket
    assert outcome(d.intent(strategy=2)[0]) == deny("RATE_LIMIT", 2_000 * ms, 1_000 * ms)
    d.now += 99 * ms
    assert outcome(d.intent()[0]) == deny("RATE_LIMIT", 301 * ms, 300 * ms)
    d.now += 1 * ms  # denied intents took no token: one is back after 100 ms
    assert outcome(d.intent()[0]) == ACCEPT
    assert outcome(d.intent()[0]) == deny("RATE_LIMIT", 400 * ms, 300 * ms)
    d.now += 10_000 * ms  # a long pause refills to the burst, not beyond
    assert [outcome(x) for x in d.intents({}, {}, {}, {})[0]] == [ACCEPT] * 3 + [
        deny("RATE_LIMIT", 400 * ms, 300 * ms)
    ]
    # other checks deny before the bucket is asked: they take no token either
    d.now += 300 * ms
    assert outcome(d.intent(qty=1_001)[0])[1] == "MAX_ORDER_QTY"
    assert [outcome(x) for x in d.intents({}, {}, {})[0]] == [ACCEPT] * 3


# --- daily loss ---------------------------------------------------------------------------------


def test_daily_loss_crossing_puts_trading_in_reducing(desk: Desk) -> None:
    desk.fill(qty=1_000, px=BID)  # long 1000 at 100.00; mark 100.01: +100_000 units
    assert desk.book.daily_pnl() == 100_000
    desk.quote(bid=989_901, ask=990_101)  # mid 990_001: loss 9_999_000 < 10_000_000
    assert desk.book.daily_pnl() == -9_999_000
    assert T.state_of(desk.ts, 0) == T.ACTIVE
    desk.quote(bid=989_900, ask=990_100)  # mid 990_000: loss 10_000_000, the limit
    assert T.state_of(desk.ts, 0) == T.REDUCING
    w = int(T.state_word(desk.ts, 0))
    assert ((w >> 8) & 0xFFFF, (w >> 24) & 0xFF) == (Code.DAILY_LOSS, T.SRC_RISK)
    low = {"limit_price": 989_900, "stop_price": 980_000}
    assert outcome(desk.intent(**low)[0]) == deny("STATE_REDUCING", 100, 0)
    sell = {"side": SIDE_SELL, "limit_price": 990_100, "stop_price": 0, "qty": 400}
    assert outcome(desk.intent(**sell)[0]) == ACCEPT
    # an operator resumes while the loss stands: the next order adding exposure is refused
    # by the daily-loss rule itself, which puts trading back in REDUCING
    T.set_state(desk.ts, 0, T.ACTIVE, 0, T.SRC_OPERATOR)
    assert outcome(desk.intent(**low)[0]) == deny("DAILY_LOSS", 10_000_000, 10_000_000)
    assert T.state_of(desk.ts, 0) == T.REDUCING
    assert desk.orders[-1]["action"] == ACTION_NEW  # REDUCING cancels nothing


def test_realised_losses_count_and_a_hard_limit_halts_and_cancels(instruments_file) -> None:
    d = Desk(instruments_file, daily_loss_halt="2000")
    d.quote()
    d.fill(qty=1_000, px=1_020_000)
    d.fill(side=SIDE_SELL, qty=1_000, px=1_000_000)  # realised -20_000_000
    assert d.pos()["realised"] == -20_000_000
    assert T.state_of(d.ts, 0) == T.HALTED
    assert [(int(o["action"]), int(o["instrument"])) for o in d.orders] == [(ACTION_CANCEL_ALL, 0)]


def test_daily_reset_at_the_scheduled_instant_clears_only_its_own_reducing(desk: Desk) -> None:
    desk.fill(qty=1_000, px=1_010_100)  # mark 1_000_100: loss 10_000_000
    desk.quote()
    assert T.state_of(desk.ts, 0) == T.REDUCING
    desk.book.schedule_reset(T0 + 5 * SEC)
    desk.now = T0 + 5 * SEC - 1
    desk.quote()
    assert outcome(desk.intent()[0]) == deny("STATE_REDUCING", 100, 0)
    assert not desk.book.reset_due
    desk.now = T0 + 5 * SEC
    desk.quote()
    assert desk.book.reset_due and desk.book.daily_pnl() == 0
    assert T.state_of(desk.ts, 0) == T.ACTIVE
    assert outcome(desk.intent()[0]) == ACCEPT
    # a REDUCING an operator set survives the reset
    T.set_state(desk.ts, 0, T.REDUCING, 0, T.SRC_OPERATOR)
    desk.book.schedule_reset(T0 + 10 * SEC)
    desk.now = T0 + 10 * SEC
    desk.quote()
    assert desk.book.reset_due and T.state_of(desk.ts, 0) == T.REDUCING


def utc_ns(*args) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * SEC


@pytest.mark.parametrize(
    ("after", "tz", "hhmm", "expected"),
    [
        # an ordinary summer day in New York (EDT, UTC-4)
        (utc_ns(2024, 6, 3, 16, 0), "America/New_York", "17:00", utc_ns(2024, 6, 3, 21, 0)),
        (utc_ns(2024, 6, 3, 21, 0), "America/New_York", "17:00", utc_ns(2024, 6, 4, 21, 0)),
        (utc_ns(2024, 6, 3, 21, 0) - 1, "America/New_York", "17:00", utc_ns(2024, 6, 3, 21, 0)),
        # spring forward on 2024-03-10: the day is 23 hours long
        (utc_ns(2024, 3, 9, 22, 0), "America/New_York", "17:00", utc_ns(2024, 3, 10, 21, 0)),
        # fall back on 2024-11-03: 25 hours
        (utc_ns(2024, 11, 2, 21, 0), "America/New_York", "17:00", utc_ns(2024, 11, 3, 22, 0)),
        # 02:30 does not exist on 2024-03-10: taken at the pre-jump offset, 03:30 EDT
        (utc_ns(2024, 3, 10, 0, 0), "America/New_York", "02:30", utc_ns(2024, 3, 10, 7, 30)),
        # 01:30 happens twice on 2024-11-03: the first time (EDT)
        (utc_ns(2024, 11, 3, 0, 0), "America/New_York", "01:30", utc_ns(2024, 11, 3, 5, 30)),
        # midnight in Tokyo (UTC+9, no DST), across a UTC date
        (utc_ns(2024, 6, 3, 16, 0), "Asia/Tokyo", "00:00", utc_ns(2024, 6, 4, 15, 0)),
        (utc_ns(2024, 3, 31, 0, 30), "Europe/London", "01:30", utc_ns(2024, 3, 31, 1, 30)),
    ],
)
def test_next_reset_is_the_configured_local_wall_time(after, tz, hhmm, expected) -> None:
    assert next_reset_utc_ns(after, tz, hhmm) == expected


def test_resets_across_dst_are_23_and_25_hours_apart() -> None:
    def gaps(start):
        t, out = start, []
        for _ in range(3):
            nxt = next_reset_utc_ns(t, "America/New_York", "17:00")
            out.append((nxt - t) // (3600 * SEC))
            t = nxt
        return out

    assert gaps(utc_ns(2024, 3, 8, 22, 0)) == [24, 23, 24]
    assert gaps(utc_ns(2024, 11, 1, 21, 0)) == [24, 25, 24]


def test_stage_schedules_the_reset_in_host_monotonic_time(monkeypatch, instruments_file) -> None:
    from bot4.stages import risk as R

    wall = utc_ns(2024, 3, 9, 22, 0) + SEC  # just after Saturday's 17:00 EST reset
    monkeypatch.setattr(R.time, "time_ns", lambda: wall)
    monkeypatch.setattr(R.time, "monotonic_ns", lambda: T0)
    st = make_stage(instruments_file)
    assert int(st.book.acct[X_NEXT_RESET_NS]) == T0 + 23 * 3600 * SEC - SEC


# --- kill switch ------------------------------------------------------------------------------


def actions(orders) -> list[tuple[int, int]]:
    return [(int(o["action"]), int(o["instrument"])) for o in orders]


def test_halt_emits_cancel_all_before_denying(desk: Desk) -> None:
    desk.intent()
    T.set_state(desk.ts, 1, T.HALTED, 0, T.SRC_OPERATOR)
    seq0 = desk.seq
    dec, orders = desk.intents({}, {"instrument": 4})
    assert [outcome(x) for x in dec] == [deny("STATE_HALTED", T.HALTED, 0), ACCEPT]
    assert actions(orders) == [(ACTION_CANCEL_ALL, 1), (ACTION_NEW, 4)]
    c = orders[0]
    assert (int(c["seq"]), int(c["client_order_id"])) == (seq0, (RISK_ID << 48) | seq0)
    assert (int(c["ts_risk_ns"]), int(c["qty"]), int(c["side"])) == (T0, 0, 0)
    assert list(dec["seq"]) == [seq0 + 1, seq0 + 2] and int(orders[1]["seq"]) == seq0 + 3
    # nothing new to cancel: no second CANCEL_ALL
    assert actions(desk.intents({})[1]) == []
    # halting again sends it again; a global halt covers every instrument with one
    T.set_state(desk.ts, 1, T.HALTED, 0, T.SRC_OPERATOR)
    T.set_state(desk.ts, 4, T.HALTED, 0, T.SRC_OPERATOR)
    T.set_state(desk.ts, 0, T.HALTED, 0, T.SRC_OPERATOR)
    assert actions(desk.intents({"instrument": 4})[1]) == [(ACTION_CANCEL_ALL, 0)]


def test_cancel_alls_wait_for_room_and_go_out_with_later_batches(desk: Desk) -> None:
    desk.quote(3)
    for inst in (1, 2, 4):
        T.set_state(desk.ts, inst, T.HALTED, 0, T.SRC_OPERATOR)
    free = {"instrument": 3, "stop_price": 0, "strategy": 2}
    dec, orders = desk.intents(free, room=1)
    assert actions(orders) == [(ACTION_NEW, 3)]  # the one slot is the intent's
    assert desk.book.poll() == 3
    got = desk.intents(free, room=2)[1]
    assert actions(got) == [(ACTION_CANCEL_ALL, 1), (ACTION_NEW, 3)]
    assert actions(desk.market_data(np.zeros(0, MARKET_DATA))) == [
        (ACTION_CANCEL_ALL, 2),
        (ACTION_CANCEL_ALL, 4),
    ]
    assert desk.book.poll() == 0


def test_kill_switch_from_fills_and_market_data_batches(desk: Desk) -> None:
    T.set_state(desk.ts, 2, T.HALTED, 0, T.SRC_OPERATOR)
    assert actions(desk.fill(qty=1)) == [(ACTION_CANCEL_ALL, 2)]
    T.set_state(desk.ts, 4, T.HALTED, 0, T.SRC_OPERATOR)
    assert actions(desk.quote()) == [(ACTION_CANCEL_ALL, 4)]


def test_breaker_opened_by_rejects_denies_then_recovers_through_probes(desk: Desk) -> None:
    ids = [int(desk.intent()[1][0]["client_order_id"]) for _ in range(3)]
    ids += [int(desk.intent(instrument=4)[1][0]["client_order_id"]) for _ in range(2)]
    rej = {"exec_type": EXEC_REJECTED, "status": OS_REJECTED, "instrument": 1}
    desk.execs(*({**rej, "client_order_id": c} for c in ids[:4]))
    assert B.breaker_state(desk.brk, 0) == B.OPEN
    assert outcome(desk.intent(instrument=4)[0]) == deny("BREAKER_OPEN", B.OPEN, 0)
    assert T.state_of(desk.ts, 0) == T.ACTIVE  # breaker_action "deny": no halt
    assert desk.pos()["open_orders"] == 0
    desk.now += 1_000  # cool-down over: the next order is a probe, acked
    dec, orders = desk.intent(instrument=4)
    assert outcome(dec) == ACCEPT and B.breaker_state(desk.brk, 0) == B.HALF_OPEN
    ack = {"exec_type": EXEC_ACK, "status": OS_NEW, "instrument": 4, "leaves_qty": 100}
    desk.execs({**ack, "client_order_id": int(orders[0]["client_order_id"])})
    assert B.snapshot(desk.brk, desk.now)[0]["probe_results"] == "."


def test_breaker_action_halt_halts_and_cancels(instruments_file) -> None:
    d = Desk(instruments_file, breaker_action="halt")
    d.quote()
    ids = [int(d.intent()[1][0]["client_order_id"]) for _ in range(3)]
    rej = {"exec_type": EXEC_REJECTED, "status": OS_REJECTED, "instrument": 1}
    assert actions(d.execs(*({**rej, "client_order_id": c} for c in ids))) == []
    B.breaker_record(d.brk, 0, False, d.now)  # the 4th failure, seen by another process
    assert actions(d.quote()) == [(ACTION_CANCEL_ALL, 0)]
    w = int(T.state_word(d.ts, 0))
    assert (w & 0xFF, (w >> 8) & 0xFFFF) == (T.HALTED, Code.BREAKER_OPEN)
    assert actions(d.quote()) == []  # one halt per opening


def test_breaker_guarding_some_instruments_halts_only_those(instruments_file) -> None:
    d = Desk(
        instruments_file,
        breaker_action="halt",
        instruments={"MSFT": {"breaker": 1}, "LOT": {"breaker": 1}},
        breakers=[{"name": "venue"}, {"name": "gateway"}],
    )
    d.quote()
    assert B.breaker_trip(d.brk, 1, d.now) == B.CLOSED
    assert actions(d.quote()) == [(ACTION_CANCEL_ALL, 2), (ACTION_CANCEL_ALL, 4)]
    assert [int(T.state_of(d.ts, t)) for t in range(5)] == [0, 0, 2, 0, 2]
    assert outcome(d.intent()[0]) == ACCEPT


# --- fills into positions and PnL ---------------------------------------------------------------

FILLS = [
    # side, qty, price, fee -> position, cost, realised (fees deducted)
    (SIDE_BUY, 100, 1_000_000, 0, 100, 100_000_000, 0),
    (SIDE_BUY, 50, 1_010_000, 0, 150, 150_500_000, 0),
    (SIDE_SELL, 60, 1_020_000, 0, 90, 90_300_000, 1_000_000),  # releases 60/150 of cost
    (SIDE_SELL, 120, 1_000_000, 1_234, -30, -30_000_000, 698_766),  # through flat to short
    (SIDE_BUY, 30, 990_000, 0, 0, 0, 998_766),
    (SIDE_BUY, 1, 100, 0, 1, 100, 998_766),  # pro rata with truncation:
    (SIDE_BUY, 2, 101, 0, 3, 302, 998_766),
    (SIDE_SELL, 1, 101, 0, 2, 202, 998_767),  # released 100 (of 100.67)
    (SIDE_SELL, 2, 101, 0, 0, 0, 998_767),  # the round trip is exact: +1
]


def test_fills_update_position_cost_and_realised_pnl_exactly(desk: Desk) -> None:
    for side, qty, px, fee, pos, cost, realised in FILLS:
        desk.fill(side=side, qty=qty, px=px, fee=fee)
        p = desk.pos()
        assert (p["position"], p["cost"], p["realised"]) == (pos, cost, realised), (qty, px)
    assert desk.pos()["fees"] == 1_234
    assert desk.book.daily_pnl() == 998_767


def test_unrealised_pnl_marks_to_the_reference(desk: Desk) -> None:
    desk.fill(qty=100, px=1_000_000)
    desk.fill(side=SIDE_SELL, qty=300, px=1_000_000, inst=4)
    assert (desk.pos()["unrealised"], desk.pos(4)["unrealised"]) == (10_000, -30_000)
    desk.quote(bid=1_010_000, ask=1_010_200)
    trade = np.zeros(1, MARKET_DATA)
    trade[0] = (9, 0, 0, desk.now, 995_000, 10, 0, 4, MD_TRADE, SIDE_BUY, 0)
    desk.quote(inst=4, bid=0, ask=0)  # no quotes left: the last trade is the reference
    desk.market_data(trade)
    assert (desk.pos()["unrealised"], desk.pos(4)["unrealised"]) == (1_010_000, 1_500_000)
    assert desk.book.daily_pnl() == 2_510_000


def test_open_quantities_follow_acks_partial_fills_cancels_and_rejects(desk: Desk) -> None:
    ids = [int(desk.intent(qty=q)[1][0]["client_order_id"]) for q in (100, 200, 300)]
    assert (desk.pos()["open_buy"], desk.pos()["open_orders"]) == (600, 3)
    a, b, c = ids
    desk.execs(
        {"client_order_id": a, "exec_type": EXEC_ACK, "status": OS_NEW, "leaves_qty": 100},
        {
            "client_order_id": a,
            "exec_type": EXEC_PARTIAL_FILL,
            "status": OS_PARTIALLY_FILLED,
            "side": SIDE_BUY,
            "last_qty": 30,
            "last_price": BID,
            "leaves_qty": 70,
        },
        {"client_order_id": b, "exec_type": EXEC_CANCELLED, "status": OS_CANCELLED},
    )
    p = desk.pos()
    assert (p["position"], p["open_buy"], p["open_orders"]) == (30, 370, 2)
    desk.execs(
        {"client_order_id": c, "exec_type": EXEC_REJECTED, "status": OS_REJECTED},
        {
            "client_order_id": a,
            "exec_type": EXEC_FILL,
            "status": OS_FILLED,
            "side": SIDE_BUY,
            "last_qty": 70,
            "last_price": BID,
        },
    )
    p = desk.pos()
    assert (p["position"], p["open_buy"], p["open_orders"], p["realised"]) == (100, 0, 0, 0)
    # the first answer of each order fed the breaker: ack ok, cancel nothing, reject failure
    snap = B.snapshot(desk.brk, desk.now)[0]
    assert (snap["window_calls"], snap["window_failures"]) == (2, 1)


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_position": "10"}, "max_position: '10' must be an integer"),
        ({"max_notional": 1.5}, "write money as a decimal string"),
        ({"colour": 1}, "colour: unknown key"),
        ({"instruments": {"TSLA": {}}}, "instruments.TSLA: not an instrument"),
        ({"instruments": {"AAPL": {"max_posn": 1}}}, "instruments.AAPL: unknown key(s) max_posn"),
        ({"strategies": {"x": {}}}, "strategies.x: strategy keys are integer ids"),
        ({"breaker_action": "panic"}, "breaker_action"),
        ({"daily_reset": "25:00"}, "daily_reset"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"max_tracked_orders": 100}, "power of two"),
        ({"breaker": 3}, "breaker: 3 but only 2 breakers"),
        ({"breakers": [{"open_failure_pct": 30}]}, "hysteresis"),
    ],
)
def test_bad_params_name_the_key(params, message) -> None:
    with pytest.raises(RiskConfigError) as err:
        RiskLimits.from_params(params)
    assert message in str(err.value)
    assert err.value.code == Code.CONFIG_INVALID


def test_params_turn_into_kernel_arrays() -> None:
    from bot4.risk import limits as L

    lim = RiskLimits.from_params(
        {
            "max_position": 700,
            "max_notional": "1234.5678",
            "instruments": {"MSFT": {"max_position": 50, "breaker": -1}, "2": {"price_band_bp": 0}},
            "strategies": {"3": {"rate_per_s": 4, "burst": 2, "stop_loss_required": False}},
        }
    )
    a = build_arrays(lim, lim.instrument_table(), risk_producer=7)
    assert list(a.ilim[1, [L.L_KNOWN, L.L_MAX_POSITION, L.L_MAX_NOTIONAL, L.L_BREAKER]]) == [
        1,
        700,
        12_345_678,
        0,
    ]
    assert (a.ilim[4, L.L_MAX_POSITION], a.ilim[4, L.L_BREAKER], a.ilim[2, L.L_BAND_BP]) == (
        50,
        -1,
        0,
    )
    assert a.ilim[0, L.L_KNOWN] == 0 and a.slim.shape == (4, L.NS)
    assert list(a.slim[3]) == [0, 500, 250_000_000, 2]
    assert list(a.slim[0]) == list(a.slim[1]) == [1, 500, 10_000_000, 20]
    assert (a.alim[L.A_RISK_PRODUCER], a.alim[L.A_DAILY_LOSS]) == (7, 250_000_000)
    # breaker 0 guards some instruments, not MSFT; the db breaker (always present) guards none
    assert list(a.breaker_scope) == [0, -1]


# --- the stage ------------------------------------------------------------------------------------


def make_stage(instruments_file, shared=False, instance="unit", outputs=2, **params):
    from bot4.pipeline.topology import RingSpec, StageSpec
    from bot4.stages.risk import RiskStage

    p = {**BASE, "instruments_file": instruments_file, "shared": shared, **params}
    spec = StageSpec(name="risk", kind="risk", core=0, index=RISK_ID, batch=8, params=p)
    ins = [
        RingSpec(f"i{k}", "x", "risk", t, 8, 2, 0, k == 1)
        for k, t in enumerate(("ORDER_INTENT", "EXEC_REPORT", "MARKET_DATA"))
    ]
    outs = [
        RingSpec(f"o{k}", "risk", "y", t, 8, 2, 0, False)
        for k, t in enumerate(("ORDER", "RISK_DECISION")[:outputs])
    ]
    st = RiskStage(spec, ins, outs, instance)
    st.setup()
    return st


def test_stage_arity_and_types() -> None:
    from bot4.stages.risk import RiskStage

    assert RiskStage.max_out_per_in == 2
    ok = ["ORDER_INTENT", "EXEC_REPORT", "MARKET_DATA"], ["ORDER", "RISK_DECISION"]
    assert RiskStage.check_arity(3, 2, *ok) is None
    assert RiskStage.check_arity(2, 1, ok[0][:2], ok[1][:1]) is None
    assert "2..4 input" in RiskStage.check_arity(1, 1, ok[0][:1], ["ORDER"])
    assert "must carry market_data" in RiskStage.check_arity(
        3, 1, ["ORDER_INTENT", "EXEC_REPORT", "ORDER"], ["ORDER"]
    )


def test_stage_on_shared_segments_with_an_operator_halt(instance, instruments_file) -> None:
    names = create_risk_segments(instance, 1, 4)
    try:
        st = make_stage(instruments_file, shared=True, instance=instance)
        outs = [np.zeros(16, ORDER), np.zeros(16, RISK_DECISION)]
        counts = np.zeros(2, np.int64)
        md = np.zeros(2, MARKET_DATA)
        md["instrument"], md["kind"], md["side"] = 1, MD_QUOTE, [SIDE_BUY, SIDE_SELL]
        md["price"], md["qty"] = [BID, ASK], 100
        md["ts_recv_ns"] = 0  # stamped on arrival
        assert st.process(2, md, outs, counts, 1) == 1
        it = np.zeros(2, ORDER_INTENT)
        it["seq"], it["instrument"], it["side"], it["qty"] = [1, 2], 1, SIDE_BUY, 100
        it["limit_price"], it["stop_price"], it["strategy"] = BID, 990_000, 1
        assert st.process(0, it, outs, counts, 1) == 5
        assert list(counts) == [2, 2]
        assert list(outs[1]["seq"][:2]) == [1, 3] and list(outs[0]["seq"][:2]) == [2, 4]
        with T.TradingState(instance) as ts:  # what `bot4 halt` does
            assert ts.set(0, T.HALTED, 0) == T.ACTIVE
        assert st.pending(0) == 1
        counts[:] = 9
        assert st.emit(outs, counts, 5) == 6
        assert list(counts) == [1, 0] and actions(outs[0][:1]) == [(ACTION_CANCEL_ALL, 0)]
        assert st.process(0, it[:1], outs, counts, 6) == 7  # decision only: HALTED
        assert int(outs[1][0]["reason"]) == Code.STATE_HALTED
        summary = st.summary()
        assert summary["cancel_all_sent"] == 1
        assert summary["decisions"] == {"ACCEPTED": 2, "STATE_HALTED": 1}
        del st
    finally:
        for n in names:
            Segment.unlink(n)


def test_stage_without_segments_or_decisions_output(instance, instruments_file) -> None:
    with pytest.raises(Exception) as err:
        make_stage(instruments_file, shared=True, instance=instance)
    assert err.value.code == Code.SEGMENT_MISSING
    st = make_stage(instruments_file, outputs=1)
    outs = [np.zeros(4, ORDER)]
    counts = np.zeros(1, np.int64)
    it = np.zeros(2, ORDER_INTENT)
    it["seq"], it["instrument"], it["qty"], it["side"] = [1, 2], 3, 100, SIDE_BUY
    assert st.process(0, it, outs, counts, 10) == 12  # two decisions, nowhere to go
    assert counts[0] == 0


def test_risk_panel_copies_positions_pnl_and_limits_for_the_metrics_segment(desk: Desk) -> None:
    """What the risk stage publishes (bot4.shm.metrics risk panel), read back as the
    operator tools read it: amounts in currency, each limit's utilisation."""
    from bot4.ops_stats import risk_view
    from bot4.shm import metrics as M

    desk.fill(qty=100, px=1_000_000, fee=50)
    desk.intent(qty=200)  # an open buy of 200 shares
    account, rows = desk.book.panel()
    assert account.shape == (M.RISK_ACCOUNT_WORDS,) and rows.shape[1] == M.RISK_ROW_WORDS
    words = M.init_metrics(np.zeros(M.TOTAL_WORDS, np.uint64), None, 1, (), risk_writer=2)
    M.publish_risk(words, desk.book.arrays.price_scale, account, rows)
    view = risk_view(M.risk_panel(words), now_ns=int(words[M.RISK_BASE + M.R_UPDATED_NS]))
    p = desk.pos()
    one = view["instruments"]["1"]
    assert (one["position"], one["open_buy"], one["open_orders"]) == (100, 200, 1)
    assert one["realised"] == p["realised"] / 10_000 and one["fees"] == 50 / 10_000
    assert one["utilisation"]["position"] == 300 / 2_000  # worst case with the open buy
    assert one["utilisation"]["open_orders"] == pytest.approx(1 / 3, abs=1e-6)
    assert view["limits"]["daily_loss"] == 1000.0 and view["limits"]["open_orders"] == 5
    assert view["utilisation"]["open_orders"] == 1 / 5
    assert view["daily_pnl"] == desk.book.daily_pnl() / 10_000
    assert set(view["instruments"]) == {str(i) for i in np.flatnonzero(desk.book.arrays.ilim[:, 0])}
