"""A LOBSTER day served by the exchange simulator over ITCH 5.0 / MoldUDP64 (loopback UDP)
and received by ``md_gateway`` with packets dropped: every gap is recovered through the
re-request server, and the gateway's book equals LOBSTER's own orderbook file after every
message (levels 1..N of the file), so no message was lost or applied twice.

One process, one uvloop: the simulator's servers and the gateway's socket on the same loop,
the gateway's duty cycle (``source_ready`` / ``generate``) driven here one message at a time
so the book can be compared at every row.
"""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

import numpy as np
import pytest

from bot4.gateways.exchange import Exchange, ExchangeConfig, Faults
from bot4.gateways.feed import lobster_to_itch
from bot4.marketdata.book import book_top_kernel
from bot4.marketdata.lobster import read_pair
from bot4.records import MARKET_DATA, MD_QUOTE
from bot4.stages.md_gateway import MdGatewayStage

DATA = "/work/shared/data/lobster-2012-06-21"
pytestmark = pytest.mark.timeout(600)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Waker:
    def wake(self) -> None:
        pass


async def _receive(stage, ex, feed, orderbook, symbol_id):
    levels = orderbook.shape[1] // 4
    top = np.zeros(4 * levels, np.int64)
    out = np.zeros(MARKET_DATA.itemsize and 8, MARKET_DATA)
    counts = np.zeros(1, np.int64)
    pos, seq, checked, mismatched, quotes = 0, 1, 0, [], 0
    deadline = time.monotonic() + 300
    while pos < feed.messages:
        assert time.monotonic() < deadline, f"stuck at sequence {pos + 1}"
        k = stage.source_ready(pos, time.monotonic_ns())
        if k == 0:
            await asyncio.sleep(0.001)
            continue
        for _ in range(k):
            n, seq = stage.generate(pos, 1, [out], counts, seq)
            assert n == 1
            quotes += int((out[: counts[0]]["kind"] == MD_QUOTE).sum())
            assert (out[: counts[0]]["parent_seq"] == pos + 1).all()
            row = int(feed.lobster_row[pos])
            if row >= 0:
                keys, sizes, nlev = stage.books[0], stage.books[1], stage.books[2]
                book_top_kernel(keys[symbol_id], sizes[symbol_id], nlev[symbol_id], levels, top)
                checked += 1
                if not np.array_equal(top, orderbook[row]):
                    mismatched.append(row)
            pos += 1
    return checked, mismatched, quotes


@pytest.mark.parametrize(
    ("pair", "symbol", "drop_every", "rate", "store"),
    [
        ("aapl_level10_first999", "AAPL", 5, 50_000, 65536),
        ("amzn_level1", "AMZN", 100, 50_000, 65536),
        # flat out into a 1024-message store: the receiver cannot keep up, messages beyond
        # the store are dropped (UDP is not back-pressured) and fetched again
        ("amzn_level1", "AMZN", 100, 0, 1024),
    ],
)
def test_lobster_day_over_itch_with_dropped_packets_rebuilds_lobsters_book(
    pair, symbol, drop_every, rate, store
):
    import uvloop

    path = f"{DATA}/{pair}"
    feed = lobster_to_itch([path])
    _msgs, orderbook, _rep = read_pair(path)
    md_port, rr_port = free_udp_port(), free_udp_port()
    cfg = ExchangeConfig(
        lobster=[path],
        md_to=[("127.0.0.1", md_port)],
        rerequest_port=rr_port,
        ouch_port=0,
        rate=rate,
        heartbeat_s=0.05,
        faults=Faults(drop_every=drop_every),
    )
    ex = Exchange(cfg, feed)
    spec = SimpleNamespace(
        name="md_gateway",
        params={
            "listen": f"127.0.0.1:{md_port}",
            "rerequest": f"127.0.0.1:{rr_port}",
            "session": cfg.session,
            "symbols": [symbol],
            "date": str(feed.day),
            "rerequest_ms": 5,
            "store": store,
        },
    )
    MdGatewayStage.check_params(spec.params)
    stage = MdGatewayStage(spec, [], [SimpleNamespace(type="MARKET_DATA")], "test")
    stage.setup()
    stage.bind(None, _Waker())

    async def main():
        server = asyncio.ensure_future(ex.serve())
        while getattr(ex, "ouch_port", None) is None:
            await asyncio.sleep(0.01)
        await stage.open()
        try:
            return await _receive(stage, ex, feed, orderbook, feed.symbols[symbol])
        finally:
            await stage.shut()
            server.cancel()

    checked, mismatched, quotes = uvloop.run(main())
    s = stage.summary()
    assert ex.stats["dropped"] > 0 and s["gaps"] > 0 and s["requests"] > 0
    assert s["messages"] == feed.messages and s["next_seq"] == feed.messages + 1
    assert s["unknown_ref"] == 0 and s["bad_length"] == 0 and s["table_full"] == 0
    assert stage.table.counters()["delete_mismatch"] == 0
    assert checked == len(orderbook), "every LOBSTER row has a message boundary"
    assert mismatched == [], f"book differs from LOBSTER at rows {mismatched[:10]}"
    assert quotes > 0
    if store < 65536:
        assert s["ahead_dropped"] > 0, "the small store never overflowed"
