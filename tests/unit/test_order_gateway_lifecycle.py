"""Order lifecycles through order_gateway and the exchange simulator (OUCH 4.2 over
SoupBinTCP on loopback TCP) equal the in-process venue's for the same ORDER records: enter,
partial fill, replace, self-trade prevention, cancel, reject, IOC fill.

The simulator matches with bot4's Venue, so what this checks is the wire path: ORDER ->
OUCH encoding, the exchange's OUCH handling, OUCH -> EXEC_REPORT decoding, ids, quantities
and states. One documented difference is excluded from the tables: a cancel of an order
that is no longer live is answered CANCEL_REJECTED by the in-process venue and ignored by
an OUCH exchange (as OUCH specifies); the OMS's order is terminal by then either way.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date
from types import SimpleNamespace

import numpy as np
import pytest

from bot4.gateways.exchange import Exchange, ExchangeConfig
from bot4.gateways.feed import Feed
from bot4.records import (
    ACTION_CANCEL,
    ACTION_NEW,
    ACTION_REPLACE,
    EXEC_REPORT,
    MARKET_DATA,
    MD_BOOK_ADD,
    ORDER,
    OT_LIMIT,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
    TIF_IOC,
)
from bot4.stages.order_gateway import OrderGatewayStage
from bot4.venue.matching import Venue

pytestmark = pytest.mark.timeout(300)
AMZN = 2
FIELDS = ("client_order_id", "order_id", "exec_type", "status", "cum_qty", "leaves_qty",
          "last_qty", "last_price", "prevented_qty", "side", "instrument")  # fmt: skip


def external_book() -> np.ndarray:
    md = np.zeros(2, MARKET_DATA)
    md["kind"], md["instrument"] = MD_BOOK_ADD, AMZN
    md["side"] = [SIDE_SELL, SIDE_BUY]
    md["price"] = [2_200_000, 2_190_000]
    md["qty"] = [100, 100]
    md["order_id"] = [1, 2]
    md["seq"] = [1, 2]
    return md


def order(seq, action, coid, side=SIDE_BUY, qty=0, price=0, orig=0, tif=TIF_DAY, oid=0):
    r = np.zeros(1, ORDER)
    r["seq"], r["action"], r["client_order_id"], r["orig_client_order_id"] = seq, action, coid, orig
    r["side"], r["qty"], r["limit_price"], r["tif"] = side, qty, price, tif
    r["instrument"], r["order_type"], r["order_id"] = AMZN, OT_LIMIT, oid
    r["ts_order_ns"] = seq * 1000
    return r


SCENARIO = [
    # buy 150 @ 220.00 against 100 offered: ACK, partial fill 100, rests 50
    order(10, ACTION_NEW, 101, SIDE_BUY, 150, 2_200_000, oid=11),
    # replace to a new id, same total 150, price 219.50: REPLACED, 50 open
    order(11, ACTION_REPLACE, 102, SIDE_BUY, 150, 2_195_000, orig=101, oid=11),
    # sell 30 @ 219.50 meets our own bid: self-trade prevention (cancel resting)
    order(12, ACTION_NEW, 103, SIDE_SELL, 30, 2_195_000, oid=12),
    # cancel the resting sell
    order(13, ACTION_CANCEL, 0, SIDE_SELL, orig=103, oid=12),
    # a zero quantity is rejected
    order(14, ACTION_NEW, 104, SIDE_BUY, 0, 2_190_000, oid=13),
    # IOC sell 100 @ 219.00 against the external bid: filled
    order(15, ACTION_NEW, 105, SIDE_SELL, 100, 2_190_000, tif=TIF_IOC, oid=14),
]


def table(reports: np.ndarray) -> list[tuple]:
    return [tuple(int(r[f]) for f in FIELDS) for r in reports]


def venue_table() -> list[list[tuple]]:
    v = Venue(instruments=16)
    v.on_market_data(external_book(), 1)
    out = np.zeros(64, EXEC_REPORT)
    steps = []
    for k, r in enumerate(SCENARIO):
        v.on_orders(r, 10 + k)
        n = v.release(out, 10 + k)
        steps.append(table(out[:n]))
    return steps


class _Waker:
    def wake(self) -> None:
        pass


def gateway(port: int, instance: str, session: int, **params) -> OrderGatewayStage:
    """An order_gateway stage for ``127.0.0.1:port`` outside a pipeline (no rings: the test
    calls ``process`` / ``emit``), set up and bound; ``open()`` connects it."""
    p = {"connect": f"127.0.0.1:{port}", "throttle": 0, "replay_quiet_ms": 5, **params}
    OrderGatewayStage.check_params(p)
    gw = OrderGatewayStage(SimpleNamespace(name="order_gateway", params=p),
                           [SimpleNamespace(type="ORDER")],
                           [SimpleNamespace(type="EXEC_REPORT")], instance)  # fmt: skip
    gw.session = session
    gw.setup()
    gw.bind(SimpleNamespace(outs=[SimpleNamespace(producer_position=0, capacity=8)]), _Waker())
    return gw


def gateway_table(tmp_path) -> tuple[list[list[tuple]], dict, np.ndarray]:
    import uvloop

    feed = Feed(np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(0, MARKET_DATA),
                np.zeros(0, np.int64), {"AMZN": AMZN}, date(2012, 6, 21))  # fmt: skip
    ex = Exchange(ExchangeConfig(lobster=[], ouch_port=0, rerequest_port=0), feed)
    ex.venue.on_market_data(external_book(), 1)
    steps: list[list[tuple]] = []
    raw: list[np.ndarray] = []

    async def main():
        server = asyncio.ensure_future(ex.serve())
        while getattr(ex, "ouch_port", None) is None:
            await asyncio.sleep(0.01)
        gw = gateway(ex.ouch_port, "lifecycle", 3, symbols=["AAPL", "AMZN"])
        await gw.open()
        deadline = time.monotonic() + 30
        while not gw.input_ready(0, time.monotonic_ns()):
            assert time.monotonic() < deadline, "gateway never logged in"
            await asyncio.sleep(0.005)
        out = np.zeros(64, EXEC_REPORT)
        counts = np.zeros(1, np.int64)
        seq = 1
        for r in SCENARIO:
            gw.process(0, r, [out], counts, seq)
            got = []
            quiet = time.monotonic() + 0.2  # answers come within one loop round trip
            while time.monotonic() < quiet:
                await asyncio.sleep(0.005)
                if gw.pending(0):
                    seq = gw.emit([out], counts, seq)
                    got.append(out[: counts[0]].copy())
                    quiet = time.monotonic() + 0.2
            reps = np.concatenate(got) if got else np.zeros(0, EXEC_REPORT)
            raw.append(reps)
            steps.append(table(reps))
        await gw.shut()
        server.cancel()
        return gw.summary()

    summary = uvloop.run(main())
    return steps, summary, np.concatenate(raw)


def test_order_lifecycles_over_ouch_equal_the_in_process_venues(tmp_path):
    want = venue_table()
    got, summary, raw = gateway_table(tmp_path)
    for k, (w, g) in enumerate(zip(want, got, strict=True)):
        assert g == w, f"step {k} ({int(SCENARIO[k]['action'][0])}): gateway {g} != venue {w}"
    # the scenario met every path it is about
    kinds = {row[2] for step in want for row in step}
    assert kinds >= {1, 2, 3, 4, 5, 7, 10}  # ACK, PARTIAL, FILL, CANCELLED, REJECTED, ...
    assert summary["errors"] == 0 and summary["sent"] == len(SCENARIO)
    # identity: executions carry the exchange's match number, the rest 2^63 | soup seq
    fills = raw[np.isin(raw["exec_type"], (2, 3))]
    assert (fills["exec_id"] < (1 << 63)).all() and (raw["venue"] == 1).all()
    others = raw[~np.isin(raw["exec_type"], (2, 3))]
    assert (others["exec_id"] >= (1 << 63)).all()
    assert len(set(raw["exec_id"].tolist())) == len(raw)


def test_throttle_holds_the_ring_once_the_bucket_is_spent():
    """``throttle`` orders/s per session, a token bucket: a batch may overdraw it once, then
    the gateway leaves its input ring alone (``input_ready`` false, counted) until the
    bucket refills (here 9 orders short at 2/s: 4.5 s, far beyond the next call)."""
    spec = SimpleNamespace(name="order_gateway", params={"throttle": 2})
    OrderGatewayStage.check_params(spec.params)
    gw = OrderGatewayStage(spec, [SimpleNamespace(type="ORDER")],
                           [SimpleNamespace(type="EXEC_REPORT")], "throttle")  # fmt: skip
    gw.session = 7
    gw.setup()
    gw.logged_in = gw.caught_up = True  # no exchange: what is sent goes nowhere
    assert gw.input_ready(0, time.monotonic_ns())
    batch = np.concatenate([order(k, ACTION_NEW, 400 + k, SIDE_BUY, 10, 2_190_000, oid=k)
                            for k in range(1, 11)])  # fmt: skip
    gw.process(0, batch, [np.zeros(64, EXEC_REPORT)], np.zeros(1, np.int64), 1)
    assert gw.summary()["sent"] == 10
    assert not gw.input_ready(0, time.monotonic_ns())
    assert gw.summary()["throttled"] == 1
