"""The exchange simulator's restart fault: the exchange goes down (every OUCH connection
closed, its servers closed) and comes back on the same ports with its day intact;
order_gateway reconnects by itself, logs in at its next expected sequence number, reports
the resting order the exchange cancelled on disconnect, and trades again — every order
entered once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date

import numpy as np
import pytest

from bot4.gateways.exchange import Exchange, ExchangeConfig, Faults
from bot4.gateways.feed import Feed
from bot4.records import (
    ACTION_NEW,
    EXEC_ACK,
    EXEC_CANCELLED,
    EXEC_FILL,
    EXEC_REPORT,
    MARKET_DATA,
    SIDE_BUY,
)
from tests.unit.test_order_gateway_lifecycle import AMZN, external_book, gateway, order

pytestmark = pytest.mark.timeout(120)


def test_exchange_restart_gateway_reconnects_and_trades_again():
    import uvloop

    feed = Feed(np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(0, MARKET_DATA),
                np.zeros(0, np.int64), {"AMZN": AMZN}, date(2012, 6, 21))  # fmt: skip
    faults = Faults(restart_after=0.5, restart_pause=0.3)
    ex = Exchange(ExchangeConfig(lobster=[], ouch_port=0, rerequest_port=0, faults=faults), feed)
    ex.venue.on_market_data(external_book(), 1)
    reports: list[np.ndarray] = []

    async def main():
        server = asyncio.ensure_future(ex.serve())
        while getattr(ex, "ouch_port", None) is None:
            await asyncio.sleep(0.01)
        gw = gateway(ex.ouch_port, "restart", 5)
        await gw.open()
        out = np.zeros(64, EXEC_REPORT)
        counts = np.zeros(1, np.int64)
        seq = 1

        async def until(cond, what, timeout=20.0):
            nonlocal seq
            deadline = time.monotonic() + timeout
            while not cond():
                assert time.monotonic() < deadline, what
                await asyncio.sleep(0.005)
                if gw.pending(0):
                    seq = gw.emit([out], counts, seq)
                    reports.append(out[: counts[0]].copy())

        def ready():
            return gw.input_ready(0, time.monotonic_ns())

        def got(coid, et):
            return any(((r["client_order_id"] == coid) & (r["exec_type"] == et)).any()
                       for r in reports)  # fmt: skip

        await until(ready, "gateway never logged in")
        # rests below the offer: live at the exchange when it goes down
        gw.process(0, order(1, ACTION_NEW, 201, SIDE_BUY, 50, 2_190_000, oid=21), [out], counts, 1)
        await until(lambda: got(201, EXEC_ACK), "no ACK before the restart")
        await until(lambda: ex.stats["restarts"] == 1 and not ex.down, "no restart")
        await until(lambda: gw.summary()["logins"] >= 2 and ready(), "no login after the restart")
        await until(lambda: got(201, EXEC_CANCELLED), "cancel on disconnect not reported")
        # takes the offer after the restart: the exchange trades again
        gw.process(0, order(2, ACTION_NEW, 202, SIDE_BUY, 50, 2_200_000, oid=22), [out], counts, 1)
        await until(lambda: got(202, EXEC_FILL), "no fill after the restart")
        await gw.shut()
        server.cancel()
        return gw.summary()

    summary = uvloop.run(main())
    print(ex.summary(), summary)
    assert ex.stats["restarts"] == 1 and ex.stats["enters"] == 2
    assert ex.stats["duplicate_tokens"] == 0 and ex.stats["errors"] == 0
    assert summary["errors"] == 0 and summary["bad_frames"] == 0
    assert summary["disconnects"] >= 1 and summary["logins"] >= 2
    allr = np.concatenate(reports)
    assert len(set(allr["exec_id"].tolist())) == len(allr), "a report published twice"


def test_gateway_flags_an_exchange_that_lost_its_day():
    """A new exchange process under the same session name (its message log empty) answers
    the gateway's login at 1 while it expects 2: counted ``session_resets``, logged."""
    import uvloop

    def exchange():
        feed = Feed(np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(0, MARKET_DATA),
                    np.zeros(0, np.int64), {"AMZN": AMZN}, date(2012, 6, 21))  # fmt: skip
        ex = Exchange(ExchangeConfig(lobster=[], ouch_port=port, rerequest_port=0), feed)
        ex.venue.on_market_data(external_book(), 1)
        return ex

    port = 0

    async def main():
        nonlocal port
        first = exchange()
        server = asyncio.ensure_future(first.serve())
        while getattr(first, "ouch_port", None) is None:
            await asyncio.sleep(0.01)
        port = first.ouch_port
        gw = gateway(port, "reset", 6)
        await gw.open()
        out = np.zeros(64, EXEC_REPORT)
        counts = np.zeros(1, np.int64)
        deadline = time.monotonic() + 20
        while not gw.input_ready(0, time.monotonic_ns()):
            assert time.monotonic() < deadline, "gateway never logged in"
            await asyncio.sleep(0.005)
        gw.process(0, order(1, ACTION_NEW, 301, SIDE_BUY, 50, 2_190_000, oid=31), [out], counts, 1)
        while gw.summary()["next_expected"] < 2:  # the ACK
            assert time.monotonic() < deadline, "no ACK"
            await asyncio.sleep(0.005)
        # the exchange process ends; a new one (an empty day) takes its port
        first.server.close()
        for a in first.accounts.values():
            a.conn.transport.close()
        server.cancel()
        second = exchange()
        server = asyncio.ensure_future(second.serve())
        while gw.summary()["logins"] < 2:
            assert time.monotonic() < deadline + 20, "no login to the new exchange"
            await asyncio.sleep(0.01)
        await gw.shut()
        server.cancel()
        return gw.summary()

    summary = uvloop.run(main())
    print(summary)
    assert summary["session_resets"] == 1 and summary["errors"] == 0
