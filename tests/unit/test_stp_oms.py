"""The venue's self-trade prevention reports through the OMS and risk: order state, leaves,
terminal states, what reaches risk, and that an STP report is never a fill.

The orders stage runs with the real venue kernel behind it (in process, as the stage loop
would drive them), other participants' orders coming from order-level market data."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.oms import states as S
from bot4.oms.book import book_find
from bot4.records import (
    ACTION_CANCEL,
    EXEC_ACK,
    EXEC_PARTIAL_FILL,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    MARKET_DATA,
    MD_BOOK_ADD,
    OS_EXPIRED,
    OS_NEW,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_RESTING,
    STP_DECREMENT,
)
from bot4.stages.base import ParamError
from bot4.stages.orders import OrdersStage
from bot4.venue import Venue
from tests.unit.test_oms import PX, Driver, _state, cid, make_stage, order
from tests.unit.test_risk import Desk, instruments_file  # noqa: F401  (a fixture)

B, SL = SIDE_BUY, SIDE_SELL


class RealVenue:
    """The venue kernel behind the orders stage's Driver: ``on_order`` / ``take``."""

    def __init__(self, **kw) -> None:
        self.v = Venue(instruments=4, capacity=256, levels=16, max_open=64, history=256, **kw)
        self.received: list[np.ndarray] = []

    def on_order(self, rec) -> None:
        self.received.append(rec.copy())
        self.v.on_orders(rec.reshape(1), 0)

    def foreign(self, eid, side, px, qty) -> None:
        r = np.zeros(1, MARKET_DATA)
        r["kind"], r["order_id"], r["side"], r["price"], r["qty"] = MD_BOOK_ADD, eid, side, px, qty
        r["instrument"] = 1
        self.v.on_market_data(r, 0)

    def take(self) -> list[np.ndarray]:
        return [r.reshape(1) for r in self.v.drain(0)]


def test_orders_carry_the_mode_and_group_of_the_params():
    st, v = make_stage(stp_mode="cancel_resting", stp_by_strategy={"2": "decrement"},
                       stp_group=7), RealVenue()  # fmt: skip
    d = Driver(st, v)
    d.send(order(cid(1, 1), strategy=1), order(cid(1, 2), strategy=2, px=PX - 100))
    d.run()
    got = [(int(r["stp_mode"]), int(r["stp_group"])) for r in v.received]
    assert got == [(STP_CANCEL_RESTING, 7), (STP_DECREMENT, 7)]
    assert st.summary()["stp"] == "venue"


def test_venue_default_sends_zero_and_the_client_guard_sends_zero_too():
    for params in ({}, {"stp": "client", "stp_mode": "cancel_both"}, {"stp": "none"}):
        st, v = make_stage(**params), RealVenue()
        d = Driver(st, v)
        d.send(order(cid(1, 1)))
        d.run()
        assert int(v.received[0]["stp_mode"]) == 0, params


def test_decrement_at_the_venue_through_the_oms_and_to_risk():
    """Issue 14's case: ours 4, foreign 3, ours 5 at one price, buy 10 with DECREMENT: the
    exchanges fill 3, expire our first order and the taker, and leave our second at 2."""
    st, v = make_stage(stp_mode="decrement"), RealVenue()
    d = Driver(st, v)
    m1, m2, t = cid(1, 1), cid(1, 2), cid(1, 3)
    d.send(order(m1, side=SL, qty=4))
    d.run()
    v.foreign(7, SL, PX, 3)
    d.send(order(m2, side=SL, qty=5))
    d.run()
    n = len(d.all(1))
    d.send(order(t, side=B, qty=10))
    d.run()
    risk = d.all(1)[n:]
    got = [(int(r["exec_type"]), int(r["client_order_id"]), int(r["last_qty"]),
            int(r["cum_qty"]), int(r["leaves_qty"]), int(r["prevented_qty"])) for r in risk]  # fmt: skip
    assert got == [
        (EXEC_STP_EXPIRED, m1, 0, 0, 0, 4),
        (EXEC_STP_DECREMENTED, t, 0, 0, 6, 4),
        (EXEC_PARTIAL_FILL, t, 3, 3, 3, 0),
        (EXEC_STP_DECREMENTED, m2, 0, 0, 2, 3),
        (EXEC_STP_EXPIRED, t, 0, 3, 0, 3),
    ]  # the ACK does not change open quantity: not forwarded
    assert _state(st, m1) == _state(st, t) == S.ST_EXPIRED  # terminal, closed
    assert book_find(st.oms.book, np.uint64(m1)) == -1 == book_find(st.oms.book, np.uint64(t))
    s = book_find(st.oms.book, np.uint64(m2))
    slot = st.oms.book.slots[s]
    assert (int(slot["state"]), int(slot["leaves_qty"]), int(slot["qty"])) == (
        S.ST_ACKNOWLEDGED, 2, 2)  # fmt: skip
    c = st.summary()["counters"]
    assert (c["venue_stp_expired"], c["venue_stp_decremented"]) == (2, 2)
    assert st.summary()["illegal"] == {}
    assert np.array_equal(d.all(3)[-len(risk) :], risk)  # journalled as received
    # a cancel of the decremented order asks for its reduced leaves and closes it
    d.send(order(0, action=ACTION_CANCEL, orig=m2))
    d.run()
    assert _state(st, m2) == S.ST_CANCELLED


def test_stp_decrement_keeps_pending_requests_and_acknowledges_a_pending_order():
    T = S.TABLE
    for st in (S.ST_ACKNOWLEDGED, S.ST_PARTIALLY_FILLED, S.ST_CANCEL_PENDING,
               S.ST_CANCEL_PENDING_PARTIAL, S.ST_REPLACE_PENDING, S.ST_REPLACE_PENDING_PARTIAL):  # fmt: skip
        assert T[st, S.EV_STP_DECREMENT] == st
    assert T[S.ST_PENDING, S.EV_STP_DECREMENT] == S.ST_ACKNOWLEDGED
    for st in (S.ST_FILLED, S.ST_CANCELLED, S.ST_EXPIRED, S.ST_REJECTED, S.ST_NEW):
        assert T[st, S.EV_STP_DECREMENT] == -1
    assert S.EVENT_OF_EXEC[EXEC_STP_EXPIRED] == S.EV_EXPIRE
    assert S.EVENT_OF_EXEC[EXEC_STP_DECREMENTED] == S.EV_STP_DECREMENT


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"stp": "cancel_new"}, "stp"),  # the guard's policy moved to stp_mode
        ({"stp_mode": "expire_maker"}, "stp_mode"),
        ({"stp_by_strategy": {"2": "cancel_oldest"}}, "stp_by_strategy.2"),
        ({"stp_group": -1}, "stp_group"),
    ],
)
def test_bad_stp_params_name_the_key(params, key):
    with pytest.raises(ParamError, match=key):
        OrdersStage.check_params(params)


def test_risk_open_quantity_follows_stp_reports_and_the_position_only_fills(
    instruments_file,  # noqa: F811
):
    desk = Desk(instruments_file)
    desk.quote(1)
    a = int(desk.intent(qty=100)[1][0]["client_order_id"])
    b = int(desk.intent(qty=200)[1][0]["client_order_id"])
    assert (desk.pos()["open_buy"], desk.pos()["open_orders"]) == (300, 2)
    desk.execs(
        {"client_order_id": a, "exec_type": EXEC_ACK, "status": OS_NEW, "leaves_qty": 100},
        {
            "client_order_id": a,
            "exec_type": EXEC_STP_DECREMENTED,
            "status": OS_NEW,
            "leaves_qty": 60,
            "prevented_qty": 40,
            "side": B,
        },  # fmt: skip
        {
            "client_order_id": b,
            "exec_type": EXEC_STP_EXPIRED,
            "status": OS_EXPIRED,
            "prevented_qty": 200,
            "side": B,
        },  # fmt: skip
    )
    p = desk.pos()
    assert (p["position"], p["open_buy"], p["open_orders"]) == (0, 60, 1)
