"""Fuzzed frames on both protocols: truncated, wrong length, unknown type, garbage,
oversized. Allowed outcomes: the datagram / message is dropped and counted, or the session
is ended and counted; never an exception, never a malformed record published.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import numpy as np

from bot4.gateways import itch, mold, ouch, soup
from bot4.gateways.exchange import Exchange, ExchangeConfig, OuchConnection
from bot4.gateways.feed import Feed
from bot4.records import EXEC_REPORT, MARKET_DATA
from bot4.stages.md_gateway import MdGatewayStage
from bot4.stages.order_gateway import OrderGatewayStage
from tests.seeds import seeded_rng

SESSION = b"FUZZ      "


class _Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def _message(rng) -> bytes:
    """A random message: a real type with random content and sometimes a wrong length, an
    unknown type, or noise."""
    roll = rng.random()
    types = list(itch.MESSAGE_LENGTHS)
    t = types[int(rng.integers(len(types)))]
    n = itch.MESSAGE_LENGTHS[t]
    if roll < 0.15:
        n = int(rng.integers(0, 80))  # wrong length (also over the 64-byte slot)
    body = rng.integers(0, 256, max(0, n - 1), dtype=np.uint8).tobytes()
    if roll > 0.9:
        return rng.integers(0, 256, int(rng.integers(0, 60)), dtype=np.uint8).tobytes()
    if t in (b"A", b"F", b"P") and n >= 20:  # a plausible side byte half the time
        body = body[:18] + (b"B" if rng.random() < 0.5 else b"S") + body[19:]
    return (t + body)[:n] if n else b""


def test_md_gateway_survives_fuzzed_datagrams_and_publishes_only_wellformed_records():
    rng, _seed = seeded_rng("md_gateway fuzz")
    spec = SimpleNamespace(
        name="md_gateway",
        params={"session": SESSION.decode().strip(), "symbols": ["AMZN"], "store": 1024},
    )
    st = MdGatewayStage(spec, [], [SimpleNamespace(type="MARKET_DATA")], "fuzz")
    st.setup()
    st.locate_map[:] = 2  # every locate is AMZN: random messages reach the book code
    seq = 1
    for _ in range(3000):
        roll = rng.random()
        if roll < 0.1:  # pure garbage, any length, also shorter than the header
            pkt = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        else:
            msgs = [_message(rng) for _ in range(int(rng.integers(1, 6)))]
            body = b"".join(len(m).to_bytes(2, "big") + m for m in msgs)
            count = len(msgs)
            if roll < 0.2:
                body = body[: int(rng.integers(0, len(body) + 1))]  # truncated
            if roll > 0.95:
                count = int(rng.integers(0, 0x10000))  # lying count (heartbeat / end too)
            pkt = mold.header(SESSION, seq, count) + body
            seq += len(msgs)
        st.on_packet(pkt)
    out = np.zeros(4 * 4096, MARKET_DATA)
    counts = np.zeros(1, np.int64)
    pos, rseq, published = 0, 1, []
    for _ in range(10_000):
        k = st.source_ready(pos, 0)
        if k == 0:
            # skip the hole a re-request would fill (no server here)
            hole = int(mold.mold_hole_kernel(st.have, st.seqs, pos + 1, st.cap))
            if pos + 1 + hole >= st.known_end or hole == 0:
                break
            pos += hole
            st.next_seq_in = pos + 1
            continue
        k = min(k, 4096)
        n, rseq = st.generate(pos, k, [out], counts, rseq)
        published.append(out[: counts[0]].copy())
        pos += n
    recs = np.concatenate(published) if published else np.zeros(0, MARKET_DATA)
    s = st.summary()
    print({k: v for k, v in s.items() if not isinstance(v, dict)})
    assert s["messages"] > 0 and s["bad_packets"] > 0
    assert s["bad_length"] + s["unknown_type"] > 0
    assert len(recs) > 0
    assert set(recs["kind"].tolist()) <= set(range(1, 10))
    assert (recs["instrument"] == 2).all()
    assert set(recs["side"].tolist()) <= {-1, 0, 1}
    assert (recs["seq"] == np.arange(1, len(recs) + 1)).all()


def _gateway(tmp_path) -> OrderGatewayStage:
    spec = SimpleNamespace(name="order_gateway", params={"symbols": ["AMZN"]})
    gw = OrderGatewayStage(spec, [SimpleNamespace(type="ORDER")],
                           [SimpleNamespace(type="EXEC_REPORT")], "fuzz")  # fmt: skip
    gw.session = 1
    gw.setup()
    return gw


def test_order_gateway_survives_fuzzed_streams(tmp_path):
    rng, _seed = seeded_rng("order_gateway fuzz")
    gw = _gateway(tmp_path)
    ended = 0
    for _ in range(400):
        proto = SimpleNamespace(transport=_Transport(), framer=soup.Framer())
        gw.proto = proto
        gw.logged_in = rng.random() < 0.7
        chunks = []
        for _ in range(int(rng.integers(1, 8))):
            roll = rng.random()
            if roll < 0.3:  # a sequenced OUCH message of a random known type, random body
                t = list(ouch.OUTBOUND)[int(rng.integers(len(ouch.OUTBOUND)))]
                n = ouch.OUTBOUND[t].itemsize + (
                    0 if rng.random() < 0.7 else int(rng.integers(-5, 5))
                )
                payload = t + rng.integers(0, 256, max(0, n - 1), dtype=np.uint8).tobytes()
                chunks.append(soup.packet(soup.SEQUENCED, payload))
            elif roll < 0.5:
                chunks.append(
                    soup.packet(int(rng.integers(0, 256)), b"x" * int(rng.integers(0, 40)))
                )
            elif roll < 0.6:
                chunks.append(soup.packet(soup.LOGIN_ACCEPTED, rng.bytes(int(rng.integers(0, 40)))))
            else:  # garbage, oversized lengths included
                chunks.append(
                    rng.integers(0, 256, int(rng.integers(1, 50)), dtype=np.uint8).tobytes()
                )
        gw.on_data(proto, b"".join(chunks))
        ended += proto.transport.closed
    s = gw.summary()
    print(s)
    assert ended > 0 and s["bad_frames"] > 0 and s["errors"] == 0
    assert gw.out_n == 0  # no order of ours: nothing may be published from noise
    out = np.zeros(4, EXEC_REPORT)
    assert gw.emit([out], np.zeros(1, np.int64), 1) == 1


def test_exchange_ends_sessions_on_fuzzed_streams_and_keeps_serving():
    rng, _seed = seeded_rng("exchange fuzz")
    feed = Feed(np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(0, MARKET_DATA),
                np.zeros(0, np.int64), {"AMZN": 2}, date(2012, 6, 21))  # fmt: skip
    ex = Exchange(ExchangeConfig(lobster=[]), feed)
    login = soup.login_request("fuzz", "", "", 1)
    dropped = 0
    for _ in range(300):
        c = OuchConnection(ex)
        c.transport = _Transport()
        c.hb = SimpleNamespace(cancel=lambda: None)
        data = login if rng.random() < 0.7 else b""
        for _ in range(int(rng.integers(1, 6))):
            roll = rng.random()
            if roll < 0.4:
                t = list(ouch.INBOUND)[int(rng.integers(len(ouch.INBOUND)))]
                n = ouch.INBOUND[t].itemsize + (
                    0 if rng.random() < 0.6 else int(rng.integers(-5, 5))
                )
                body = t + rng.integers(0, 256, max(0, n - 1), dtype=np.uint8).tobytes()
                data += soup.packet(soup.UNSEQUENCED, body)
            else:
                data += rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
        c.data_received(data)
        dropped += c.closed
        c.connection_lost(None)
    print(ex.summary())
    assert dropped > 0 and ex.stats["bad_frames"] > 0 and ex.stats["errors"] == 0
    # still serving: a clean session enters an order
    c = OuchConnection(ex)
    c.transport = _Transport()
    c.hb = SimpleNamespace(cancel=lambda: None)
    enter = ouch.message(ouch.ENTER, type=b"O", token=ouch.token_of(7), side=b"B", shares=10,
                         stock=b"AMZN", price=2_200_000, tif=99999)  # fmt: skip
    before = ex.stats["enters"]
    c.data_received(login + soup.packet(soup.UNSEQUENCED, enter))
    frames = soup.Framer().feed(bytes(c.transport.written))
    assert not c.closed and ex.stats["enters"] == before + 1
    assert frames[0][0] == soup.LOGIN_ACCEPTED
    assert any(t == soup.SEQUENCED and p[:1] == b"A" and ouch.token_of(7) in p for t, p in frames)
