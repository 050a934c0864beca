"""A LOBSTER pair through the exchange simulator over ITCH 5.0 / MoldUDP64 (loopback UDP,
packets dropped) into ``md_gateway``, the gateway's book compared with LOBSTER's own
orderbook file after every message: ``bot4 exchange check`` and the tests.

One process, one uvloop: the simulator's servers and the gateway's socket on the same loop,
the gateway's duty cycle (``source_ready`` / ``generate``) driven here one message at a time
so its book can be read at every LOBSTER row. A row is compared on all its levels (a
superset of the issue's determinable rows: levels 1..N-1 of a level-N file, the top of a
level-1 file where the message does not empty the best level), since the simulator's feed
re-aligns the levels the messages cannot determine (:func:`bot4.gateways.feed.lobster_to_itch`);
the feed's own ``determinable_mismatches`` says whether the LOBSTER messages alone, from the
row before, rebuilt every determinable row (0 on every sample pair).
"""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

import numpy as np

from bot4.gateways.exchange import Exchange, ExchangeConfig, Faults
from bot4.gateways.feed import lobster_to_itch


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Waker:
    def wake(self) -> None:
        pass


async def _receive(stage, feed, orderbook, symbol_id, timeout_s, on_cycle=None):
    from bot4.marketdata.builder import top_kernel
    from bot4.records import MARKET_DATA, MD_QUOTE

    levels = orderbook.shape[1] // 4 if orderbook is not None else 1
    top = np.zeros(4 * levels, np.int64)
    out = np.zeros(8, MARKET_DATA)
    counts = np.zeros(1, np.int64)
    pos, seq, checked, mismatched, quotes, bad_parent = 0, 1, 0, [], 0, 0
    deadline = time.monotonic() + timeout_s
    book = stage.book
    while pos < feed.messages:
        if time.monotonic() > deadline:
            raise TimeoutError(f"stuck at sequence {pos + 1} of {feed.messages}")
        k = stage.source_ready(pos, time.monotonic_ns())
        if on_cycle is not None:
            on_cycle(stage, pos)
        if k == 0:
            await asyncio.sleep(0.001)
            continue
        for _ in range(k):
            n, seq = stage.generate(pos, 1, [out], counts, seq)
            recs = out[: counts[0]]
            quotes += int((recs["kind"] == MD_QUOTE).sum())
            bad_parent += int((recs["parent_seq"] != pos + 1).sum()) + (n != 1)
            row = int(feed.lobster_row[pos])
            if row >= 0 and orderbook is not None:
                top_kernel(book.px, book.qty, book.n, symbol_id, levels, top)
                checked += 1
                if not np.array_equal(top, orderbook[row]):
                    mismatched.append(row)
            pos += 1
    return {"checked": checked, "mismatched": mismatched, "quotes": quotes,
            "bad_parent": bad_parent}  # fmt: skip


def run_gateway(
    feed,
    symbols,
    orderbook=None,
    *,
    drop_every=100,
    rate=100_000.0,
    store=65536,
    timeout_s=600.0,
    group="",
    faults: Faults | None = None,
    instance: str = "check",
    params: dict | None = None,
    on_cycle=None,
):
    """Serve ``feed`` and receive it with an md_gateway for ``symbols``, one message at a
    time; with ``orderbook`` (one symbol), its book is compared with each LOBSTER row.
    ``faults`` replace ``drop_every``'s; ``params`` are added to the stage's; ``on_cycle
    (stage, position)`` is called after every ``source_ready``. Returns (exchange, stage,
    counts)."""
    import uvloop

    from bot4.stages.md_gateway import MdGatewayStage

    md_port, rr_port = free_udp_port(), free_udp_port()
    cfg = ExchangeConfig(
        lobster=[],
        md_to=[(group or "127.0.0.1", md_port)],
        rerequest_port=rr_port,
        ouch_port=0,
        rate=rate,
        heartbeat_s=0.05,
        faults=faults or Faults(drop_every=drop_every),
    )
    ex = Exchange(cfg, feed)
    params = {
        "listen": f"{group or '127.0.0.1'}:{md_port}",
        "rerequest": f"127.0.0.1:{rr_port}",
        "session": cfg.session,
        "symbols": list(symbols),
        "date": str(feed.day),
        "rerequest_ms": 5,
        "store": store,
        **(params or {}),
    }
    MdGatewayStage.check_params(params)
    spec = SimpleNamespace(name="md_gateway", params=params)
    stage = MdGatewayStage(spec, [], [SimpleNamespace(type="MARKET_DATA")], instance)
    stage.setup()
    stage.bind(None, _Waker())
    symbol_id = feed.symbols[symbols[0]]

    async def main():
        server = asyncio.ensure_future(ex.serve())
        while getattr(ex, "ouch_port", None) is None:
            if server.done():
                server.result()  # a bind error: raise it
            await asyncio.sleep(0.01)
        await stage.open()
        try:
            return await _receive(stage, feed, orderbook, symbol_id, timeout_s, on_cycle)
        finally:
            await stage.shut()
            server.cancel()

    return ex, stage, uvloop.run(main())


def check_pair(
    path: str,
    *,
    drop_every: int = 100,
    rate: float = 100_000.0,
    store: int = 65536,
    timeout_s: float = 600.0,
    group: str = "",
) -> dict:
    """Serve the pair ``path`` (directory, zip or file) and receive it; returns the counts.
    ``ok`` is true when every LOBSTER row was reached at a message boundary and the book
    equalled it there, every message was decoded once, no reference was unknown, packets
    were dropped and recovered, and the feed needed no correction on a determinable row.
    ``group``: a multicast group address to publish to and join on 127.0.0.1 (unicast to
    127.0.0.1 otherwise)."""

    from bot4.marketdata.lobster import read_pair
    from bot4.records import DEFAULT_INSTRUMENTS

    feed = lobster_to_itch([path])
    _msgs, orderbook, _rep = read_pair(path)
    (symbol,) = feed.symbols
    t0 = time.monotonic()
    ex, stage, got = run_gateway(feed, [symbol], orderbook, drop_every=drop_every, rate=rate,
                                 store=store, timeout_s=timeout_s, group=group)  # fmt: skip
    s = stage.summary()
    rows = len(orderbook)
    res = {
        "pair": str(path),
        "symbol": symbol,
        "instrument": DEFAULT_INSTRUMENTS.id_of(symbol),
        "levels": orderbook.shape[1] // 4,
        "rows": rows,
        "rows_checked": got["checked"],
        "rows_mismatched": len(got["mismatched"]),
        "first_mismatches": got["mismatched"][:10],
        "determinable_rows": feed.counts["determinable_rows"],
        "determinable_mismatches": feed.counts["determinable_mismatches"],
        "feed_corrections": feed.counts["corrections"],
        "messages": feed.messages,
        "decoded": s["messages"],
        "packets": ex.stats["packets"],
        "packets_dropped": ex.stats["dropped"],
        "gaps": s["gaps"],
        "requests": s["requests"],
        "resent": ex.stats["resent"],
        "duplicates": s["duplicates"],
        "ahead_dropped": s["ahead_dropped"],
        "unknown_ref": s["unknown_ref"],
        "bad_length": s["bad_length"],
        "delete_mismatch": stage.book.counters()["delete_mismatch"],
        "bad_parent": got["bad_parent"],
        "quotes": got["quotes"],
        "seconds": round(time.monotonic() - t0, 1),
    }
    res["ok"] = bool(
        res["rows_checked"] == rows
        and res["rows_mismatched"] == 0
        and res["determinable_mismatches"] == 0
        and res["decoded"] == feed.messages
        and s["next_seq"] == feed.messages + 1
        and res["unknown_ref"] == 0
        and res["bad_length"] == 0
        and res["delete_mismatch"] == 0
        and res["bad_parent"] == 0
        # a pair shorter than drop_every packets has nothing dropped
        and (ex.stats["packets"] < drop_every or (res["packets_dropped"] > 0 and res["gaps"] > 0))
    )
    return res


def check_synthetic(messages: int = 20_000, instruments: int = 3, *, drop_every: int = 100,
                    rate: float = 100_000.0, seed: int = 1) -> dict:  # fmt: skip
    """A synthetic day (:func:`bot4.gateways.feed.synthetic_to_itch`) through the simulator
    into md_gateway for every instrument: every message decoded once, and each
    instrument's top of book at the end equals the one the feed's own records (the venue's
    copy, built without the ITCH bytes) leave."""
    from bot4.gateways.feed import synthetic_to_itch
    from bot4.records import MD_BOOK_ADD, MD_BOOK_DELETE, SIDE_BUY

    feed = synthetic_to_itch(messages, instruments, seed)
    syms = list(feed.symbols)
    ex, stage, got = run_gateway(feed, syms, drop_every=drop_every, rate=rate)
    live: dict[int, tuple] = {}
    for r in feed.venue_md:
        if int(r["kind"]) == MD_BOOK_ADD:
            live[int(r["order_id"])] = (int(r["instrument"]), int(r["side"]), int(r["price"]),
                                        int(r["qty"]))  # fmt: skip
        elif int(r["kind"]) == MD_BOOK_DELETE:
            live.pop(int(r["order_id"]), None)
    top = np.zeros(4, np.int64)
    tops_equal = True
    for inst in feed.symbols.values():
        want = np.zeros(4, np.int64)
        for side, c, best in ((-SIDE_BUY, 0, min), (SIDE_BUY, 2, max)):
            px = [o[2] for o in live.values() if o[0] == inst and o[1] == side]
            if px:
                want[c] = best(px)
                want[c + 1] = sum(o[3] for o in live.values()
                                  if o[0] == inst and o[1] == side and o[2] == want[c])  # fmt: skip
        top[:] = stage.book.top(inst, 1)
        tops_equal &= bool(np.array_equal(top[want > 0], want[want > 0]))
    s = stage.summary()
    res = {"messages": feed.messages, "decoded": s["messages"], "gaps": s["gaps"],
           "packets_dropped": ex.stats["dropped"], "unknown_ref": s["unknown_ref"],
           "bad_parent": got["bad_parent"], "quotes": got["quotes"], "tops_equal": tops_equal,
           "delete_mismatch": stage.book.counters()["delete_mismatch"]}  # fmt: skip
    res["ok"] = bool(res["decoded"] == feed.messages and res["unknown_ref"] == 0 and tops_equal
                     and res["bad_parent"] == 0 and res["delete_mismatch"] == 0)  # fmt: skip
    return res
