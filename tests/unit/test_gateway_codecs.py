"""Wire codecs against golden bytes written from the specifications' layouts (ITCH 5.0,
MoldUDP64, SoupBinTCP 4.0, OUCH 4.2): big-endian, packed, the specified message lengths.

The fixtures are hex literals laid out field by field from the specification tables (not
produced by bot4's encoders), so a bug shared by the simulator's encoder and the gateway's
decoder cannot pass: each side is checked against the same independent bytes.
"""

from __future__ import annotations

import numpy as np
import pytest

from bot4.gateways import itch, mold, ouch, soup
from bot4.records import (
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_CROSS_TRADE,
    MD_QUOTE,
    MD_TRADE,
    MD_TRADING_HALT,
    MDF_HALT,
    SIDE_BUY,
    SIDE_SELL,
)

TS = 34_200_000_000_001  # 09:30:00.000000001, ns since midnight: 0x1f1aced9f001

# type | locate | tracking | timestamp(6) | body — one golden message per type
GOLDEN_ITCH = {
    # ref 1234567, 'B', 300 shares, "AMZN    ", $220.6400
    b"A": "41 0001 0002 1f1aced9f001 000000000012d687 42 0000012c 414d5a4e20202020 0021aac0",
    # ref, 100 shares executed, match 42
    b"E": "45 0001 0003 1f1aced9f001 000000000012d687 00000064 000000000000002a",
    # ref, 50 shares, match 43, printable 'Y', $220.6500
    b"C": "43 0001 0004 1f1aced9f001 000000000012d687 00000032 000000000000002b 59 0021ab24",
    # ref, 20 shares cancelled
    b"X": "58 0001 0005 1f1aced9f001 000000000012d687 00000014",
    b"D": "44 0001 0006 1f1aced9f001 000000000012d687",
    # ref -> new ref 7654321, 500 shares, $220.6300
    b"U": "55 0001 0007 1f1aced9f001 000000000012d687 000000000074cbb1 000001f4 0021aa5c",
    # ref 0, 'S', 77 shares, "AMZN", $220.6600, match 44
    b"P": "50 0001 0008 1f1aced9f001 0000000000000000 53 0000004d 414d5a4e20202020 0021ab88"
    " 000000000000002c",
    # 1000 shares (u64), "AMZN", $220.6000, match 45, cross type 'O'
    b"Q": "51 0001 0009 1f1aced9f001 00000000000003e8 414d5a4e20202020 0021a930"
    " 000000000000002d 4f",
    # "AMZN", state 'H', reserved ' ', reason "    "
    b"H": "48 0001 000a 1f1aced9f001 414d5a4e20202020 48 20 20202020",
    # "AMZN", category 'Q', FSI 'N', round lot 100, 'N', 'C', "Z ", 'P', 'N', 'N', '1', 'N',
    # leverage 0, inverse 'N'
    b"R": "52 0001 0000 1f1aced9f001 414d5a4e20202020 51 4e 00000064 4e 43 5a20 50 4e 4e 31 4e"
    " 00000000 4e",
    b"S": "53 0000 0000 1f1aced9f001 4f",
}


def golden(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_itch_message_lengths_are_the_specifications():
    for t, text in GOLDEN_ITCH.items():
        assert len(golden(text)) == itch.MESSAGE_LENGTHS[t], t
        assert itch.DTYPES[t].itemsize == itch.MESSAGE_LENGTHS[t], t
    assert itch.MESSAGE_LENGTHS[b"F"] == 40 and itch.MESSAGE_LENGTHS[b"I"] == 50


def _gen(t, **kw):
    g = np.zeros(1, itch.GENERIC)
    g["type"], g["locate"], g["ts"], g["stock"] = t, 1, TS, b"AMZN    "
    for k, v in kw.items():
        g[k] = v
    return g


def test_itch_encoder_writes_the_golden_bytes():
    cases = {
        b"A": _gen(b"A", ref=1234567, side=b"B", shares=300, price=2206400),
        b"E": _gen(b"E", ref=1234567, shares=100, match=42),
        b"C": _gen(b"C", ref=1234567, shares=50, match=43, code=b"Y", price=2206500),
        b"X": _gen(b"X", ref=1234567, shares=20),
        b"D": _gen(b"D", ref=1234567),
        b"U": _gen(b"U", ref=1234567, new_ref=7654321, shares=500, price=2206300),
        b"P": _gen(b"P", side=b"S", shares=77, price=2206600, match=44),
        b"Q": _gen(b"Q", shares=1000, price=2206000, match=45, code=b"O"),
        b"H": _gen(b"H", code=b"H"),
        b"R": _gen(b"R"),
        b"S": _gen(b"S", code=b"O", locate=0, stock=b""),
    }
    tracking = {b"A": 2, b"E": 3, b"C": 4, b"X": 5, b"D": 6, b"U": 7, b"P": 8, b"Q": 9, b"H": 10}
    for t, g in cases.items():
        buf, offsets = itch.encode(g)
        want = bytearray(golden(GOLDEN_ITCH[t]))
        want[3:5] = b"\0\0"  # the encoder leaves tracking numbers 0
        got = buf.tobytes()
        assert len(got) == itch.MESSAGE_LENGTHS[t]
        assert got == bytes(want), (t, got.hex(), bytes(want).hex())
        assert tracking.get(t, 0) >= 0


class _Store:
    """A message store and books as md_gateway keeps them, for the decoder: the kernels
    get plain tuples, as md_gateway passes them (the named tuples would be another
    signature, compiled here and nowhere else: 30 s on a CI machine whose cache
    ``bot4 warm --all`` filled)."""

    def __init__(self, cap=64):
        self.store = mold.new_store(cap)
        self.store_t = tuple(self.store)
        self.msgs, self.lens, self.seqs = self.store.msgs, self.store.lens, self.store.seqs
        self.recvs, self.have, self.res = self.store.recvs, self.store.have, self.store.res
        self.book, self.last_q = itch.new_books(5, 64, 64)
        self.locate = np.zeros(1 << 16, np.int64)
        self.stats = np.zeros(len(itch.DECODER_STATS), np.int64)
        self.next = 1

    def packet(self, seq0: int, messages: list[bytes]) -> bytes:
        body = b"".join(len(m).to_bytes(2, "big") + m for m in messages)
        return mold.header(b"TEST      ", seq0, len(messages)) + body

    def ingest(self, pkt: bytes, recv: int = 7) -> None:
        _s, seq0, count = mold.parse_header(pkt)
        body = np.frombuffer(pkt, np.uint8, offset=mold.HEADER_BYTES)
        mold.mold_ingest_kernel(body, seq0, count, self.store_t, self.next, recv)

    def decode(self, count: int) -> np.ndarray:
        out = itch.decode_scratch(count)
        b = self.book
        b.reserve(count)
        dec = itch.decoder_state(self.locate, np.array([itch.stock_key("AMZN")], np.uint64),
                                 np.array([2], np.int64), self.last_q, self.stats, b)  # fmt: skip
        n = itch.itch_decode_kernel(self.store_t, self.next, count, 1_000, out, 100, dec, True)
        mold.mold_release_kernel(self.have, self.next, count)
        self.next += count
        return out[:n]


def test_itch_decoder_reads_the_golden_bytes_into_records():
    s = _Store()
    order = [b"S", b"R", b"H", b"A", b"E", b"C", b"X", b"U", b"P", b"Q", b"D"]
    msgs = [golden(GOLDEN_ITCH[t]) for t in order]
    # the U replaced 1234567 by 7654321: the final D deletes the new reference
    msgs[-1] = msgs[-1][:11] + (7654321).to_bytes(8, "big")
    s.ingest(s.packet(1, msgs))
    recs = s.decode(len(msgs))
    kinds = [(int(r["kind"]), int(r["parent_seq"])) for r in recs]
    assert s.stats[itch.DS_MESSAGES] == len(msgs) and s.stats[itch.DS_UNKNOWN_REF] == 0
    assert (recs["ts_event_ns"] == 1_000 + TS).all() and (recs["ts_recv_ns"] == 7).all()
    assert (recs["instrument"] == 2).all()
    assert (recs["seq"] == 100 + np.arange(len(recs))).all()
    by_seq = {}
    for r in recs:
        by_seq.setdefault(int(r["parent_seq"]), []).append(r)
    halt = by_seq[3][0]
    assert halt["kind"] == MD_TRADING_HALT and halt["flags"] & MDF_HALT
    add = by_seq[4][0]
    assert (add["kind"], add["side"], add["price"], add["qty"], add["order_id"]) == (
        MD_BOOK_ADD, SIDE_BUY, 2206400, 300, 1234567)  # fmt: skip
    assert [int(r["kind"]) for r in by_seq[4][1:]] == [MD_QUOTE]  # the bid appeared
    ex = by_seq[5]
    assert (ex[0]["kind"], ex[0]["price"], ex[0]["qty"]) == (MD_BOOK_EXEC, 2206400, 100)
    assert (ex[1]["kind"], ex[1]["side"], ex[1]["qty"]) == (MD_TRADE, SIDE_SELL, 100)
    cp = by_seq[6]
    assert cp[0]["kind"] == MD_BOOK_EXEC and cp[0]["price"] == 2206400  # the book's level
    assert cp[1]["kind"] == MD_TRADE and cp[1]["price"] == 2206500  # the print's price
    assert by_seq[7][0]["kind"] == MD_BOOK_CANCEL and by_seq[7][0]["qty"] == 20
    rep = by_seq[8]
    assert (rep[0]["kind"], rep[0]["order_id"], rep[0]["qty"]) == (MD_BOOK_DELETE, 1234567, 130)
    assert (rep[1]["kind"], rep[1]["order_id"], rep[1]["qty"], rep[1]["price"]) == (
        MD_BOOK_ADD, 7654321, 500, 2206300)  # fmt: skip
    assert by_seq[9][0]["kind"] == MD_BOOK_HIDDEN_EXEC and by_seq[9][0]["side"] == SIDE_SELL
    assert by_seq[10][0]["kind"] == MD_CROSS_TRADE and by_seq[10][0]["qty"] == 1000
    d = by_seq[11]
    assert (d[0]["kind"], d[0]["qty"]) == (MD_BOOK_DELETE, 500)
    assert d[-1]["kind"] == MD_QUOTE and d[-1]["qty"] == 0  # the bid side emptied
    assert len(s.book) == 0
    assert 1 not in by_seq and 2 not in by_seq  # S and R make no record
    assert sorted(set(k for _, k in kinds)) == list(range(3, 12))


def test_itch_decoder_drops_malformed_messages_and_counts_them():
    s = _Store()
    s.ingest(s.packet(1, [golden(GOLDEN_ITCH[b"R"])]))
    s.decode(1)
    bad = [
        golden(GOLDEN_ITCH[b"A"])[:-1],  # truncated add
        b"Z" + bytes(20),  # unknown type
        golden(GOLDEN_ITCH[b"E"]),  # execution of a reference never added
        bytes(0),  # empty
    ]
    s.ingest(s.packet(2, bad))
    assert s.have[2:6].all()
    recs = s.decode(4)
    assert len(recs) == 0
    st = dict(zip(itch.DECODER_STATS, s.stats.tolist(), strict=True))
    assert st["bad_length"] == 1 and st["unknown_type"] == 2 and st["unknown_ref"] == 1


def test_moldudp64_header_is_20_bytes_big_endian():
    want = golden("424f543453494d202020 00000000000003e8 0002")  # "BOT4SIM   ", 1000, 2
    assert mold.header(mold.session_bytes("BOT4SIM"), 1000, 2) == want
    assert mold.parse_header(want) == (b"BOT4SIM   ", 1000, 2)
    assert mold.request(b"BOT4SIM   ", 1000, 2) == want
    with pytest.raises(ValueError):
        mold.parse_header(want[:19])


def test_moldudp64_packets_ingest_in_any_order_with_duplicates_counted():
    s = _Store(cap=16)
    m = [golden(GOLDEN_ITCH[b"S"])] * 6
    p1, p2 = s.packet(1, m[:3]), s.packet(4, m[3:])
    s.ingest(p2)  # later packet first: a gap at 1..3
    assert mold.mold_contiguous_kernel(s.have, s.seqs, 1, 100) == 0
    s.ingest(p1)
    s.ingest(p1)  # duplicate
    assert mold.mold_contiguous_kernel(s.have, s.seqs, 1, 100) == 6
    assert s.res[mold.IN_STORED] == 6 and s.res[mold.IN_DUPLICATE] == 3
    s.ingest(s.packet(40, m[:1]))  # beyond the 16-slot window
    assert s.res[mold.IN_AHEAD] == 1
    trunc = s.packet(7, m[:2])[:-3]
    s.ingest(trunc)
    assert s.res[mold.IN_TRUNCATED] == 1 and s.res[mold.IN_STORED] == 7  # the whole one kept
    hb = mold.header(b"TEST      ", 9, mold.HEARTBEAT_COUNT)
    assert mold.parse_header(hb)[2] == 0
    end = mold.header(b"TEST      ", 9, mold.END_OF_SESSION)
    assert end[-2:] == b"\xff\xff"


def test_moldudp64_packer_splits_at_the_payload_limit():
    g = np.concatenate([_gen(b"D", ref=i) for i in range(1, 101)])
    buf, offsets = itch.encode(g)
    pk = mold.packets(b"TEST      ", 1, buf, offsets, 0, 100, max_payload=200)
    assert sum(mold.parse_header(p)[2] for _, p in pk) == 100
    assert all(len(p) - mold.HEADER_BYTES <= 200 for _, p in pk)
    assert [s for s, _ in pk] == [1 + 9 * i for i in range(len(pk))]  # 9 x 21 B per packet


# --- SoupBinTCP 4.0 -----------------------------------------------------------------------------


def test_soupbintcp_login_packets_match_the_layout():
    # length 47 | 'L' | "bot4  " | "secret    " | "BOT4SIM   " | 19 spaces + "1"
    login = golden(
        "002f 4c 626f74342020 73656372657420202020 424f543453494d202020"
        " 2020202020202020202020202020202020202031"
    )
    assert soup.login_request("bot4", "secret", "BOT4SIM", 1) == login
    assert soup.parse_login_request(login[3:]) == ("bot4", "secret", "BOT4SIM", 1)
    # length 31 | 'A' | "BOT4SIM   " | 18 spaces + "42"
    acc = golden("001f 41 424f543453494d202020 2020202020202020202020202020202020203432")
    assert soup.login_accepted("BOT4SIM", 42) == acc
    assert soup.parse_login_accepted(acc[3:]) == ("BOT4SIM", 42)
    assert soup.packet(soup.SERVER_HEARTBEAT) == b"\x00\x01H"
    assert soup.packet(soup.CLIENT_HEARTBEAT) == b"\x00\x01R"
    assert soup.packet(soup.LOGOUT_REQUEST) == b"\x00\x01O"


def test_soupbintcp_framer_reassembles_and_refuses_bad_lengths():
    f = soup.Framer(max_packet=64)
    stream = soup.packet(soup.SEQUENCED, b"abc") + soup.packet(soup.SERVER_HEARTBEAT)
    got = []
    for i in range(len(stream)):  # one byte at a time
        got += f.feed(stream[i : i + 1])
    assert got == [(soup.SEQUENCED, b"abc"), (soup.SERVER_HEARTBEAT, b"")]
    with pytest.raises(soup.FrameError):
        soup.Framer(max_packet=64).feed(b"\x00\x00")  # length 0
    with pytest.raises(soup.FrameError):
        soup.Framer(max_packet=64).feed(b"\x01\x00S")  # 256 > 64: oversized
    with pytest.raises(ValueError):
        soup.parse_login_request(b"short")


# --- OUCH 4.2 -------------------------------------------------------------------------------------

TOKEN = "303030303030303030303030324e"  # "0000000000002N" = client order id 95
TOKEN2 = "303030303030303030303030324f"  # "0000000000002O" = 96
T8 = "00001f1aced9f000"  # 34200 s in ns, 8 bytes
GOLDEN_OUCH_IN = {
    # 'O' token 'B' 100 "AMZN    " $220.6400 tif 99999 "BOT4" 'Y' 'A' 'N' min 0 'N' 'N'
    b"O": f"4f {TOKEN} 42 00000064 414d5a4e20202020 0021aac0 0001869f 424f5434 59 41 4e"
    " 00000000 4e 4e",
    # 'U' token new-token 60 shares $220.6500 tif 99999 'Y' 'N' min 0
    b"U": f"55 {TOKEN} {TOKEN2} 0000003c 0021ab24 0001869f 59 4e 00000000",
    b"X": f"58 {TOKEN} 00000000",
}
GOLDEN_OUCH_OUT = {
    b"A": f"41 {T8} {TOKEN} 42 00000064 414d5a4e20202020 0021aac0 0001869f 424f5434 59"
    " 0000000000000309 41 4e 00000000 4e 4c 20",
    b"E": f"45 {T8} {TOKEN} 00000028 0021aac0 52 0000000000989681",
    b"C": f"43 {T8} {TOKEN} 0000003c 55",
    b"J": f"4a {T8} {TOKEN} 53",
    b"D": f"44 {T8} {TOKEN} 0000003c 51 0000003c 00000000 20",
    b"U": f"55 {T8} {TOKEN2} 42 0000003c 414d5a4e20202020 0021ab24 0001869f 424f5434 59"
    f" 0000000000000309 41 4e 00000000 4e 4c {TOKEN} 20",
    b"I": f"49 {T8} {TOKEN}",
    b"B": f"42 {T8} {TOKEN} 0000000000989681 45",
    b"S": f"53 {T8} 53",
}


def test_ouch_tokens_are_base36_client_order_ids():
    assert ouch.token_of(95) == b"0000000000002N"
    assert ouch.coid_of(b"0000000000002N") == 95
    big = (1 << 64) - 1
    assert len(ouch.token_of(big)) == 14 and ouch.coid_of(ouch.token_of(big)) == big
    coid = (1 << 48) | 123456789
    assert ouch.coid_of(ouch.token_of(coid)) == coid
    with pytest.raises(ValueError):
        ouch.token_of(0)


def test_ouch_inbound_messages_match_the_layout():
    for t, text in GOLDEN_OUCH_IN.items():
        assert len(golden(text)) == ouch.LENGTHS[(b"in", t)]
    enter = ouch.message(
        ouch.ENTER, type=b"O", token=ouch.token_of(95), side=b"B", shares=100, stock=b"AMZN",
        price=2206400, tif=99999, firm=b"BOT4", display=b"Y", capacity=b"A", iso=b"N",
        min_qty=0, cross_type=b"N", customer_type=b"N",
    )  # fmt: skip
    assert enter == golden(GOLDEN_OUCH_IN[b"O"])
    rep = ouch.message(ouch.REPLACE, type=b"U", token=ouch.token_of(95), new_token=ouch.token_of(96),
                       shares=60, price=2206500, tif=99999, display=b"Y", iso=b"N")  # fmt: skip
    assert rep == golden(GOLDEN_OUCH_IN[b"U"])
    assert ouch.message(ouch.CANCEL, type=b"X", token=ouch.token_of(95)) == golden(
        GOLDEN_OUCH_IN[b"X"]
    )
    m = ouch.decode(b"in", golden(GOLDEN_OUCH_IN[b"O"]))
    assert (int(m["shares"]), int(m["price"]), bytes(m["stock"])) == (100, 2206400, b"AMZN    ")


def test_ouch_outbound_messages_decode_from_the_layout():
    for t, text in GOLDEN_OUCH_OUT.items():
        raw = golden(text)
        assert len(raw) == ouch.LENGTHS[(b"out", t)], t
        m = ouch.decode(b"out", raw)
        assert int(m["ts"]) == 34_200_000_000_000
        if t != b"S":
            assert bytes(m["token"]) in (ouch.token_of(95), ouch.token_of(96))
    a = ouch.decode(b"out", golden(GOLDEN_OUCH_OUT[b"A"]))
    assert (int(a["order_ref"]), bytes(a["order_state"]), int(a["price"])) == (777, b"L", 2206400)
    e = ouch.decode(b"out", golden(GOLDEN_OUCH_OUT[b"E"]))
    assert (int(e["shares"]), int(e["match"]), bytes(e["liquidity"])) == (40, 10_000_001, b"R")
    u = ouch.decode(b"out", golden(GOLDEN_OUCH_OUT[b"U"]))
    assert bytes(u["prev_token"]) == ouch.token_of(95) and int(u["shares"]) == 60
    d = ouch.decode(b"out", golden(GOLDEN_OUCH_OUT[b"D"]))
    assert (int(d["decrement"]), bytes(d["reason"]), int(d["prevented"])) == (60, b"Q", 60)


def test_ouch_broken_trade_matches_the_specifications_layout():
    """OUCH 4.2 Broken Trade: type 'B', timestamp(8), order token(14), match number(8),
    reason(1: E clearly erroneous, C consent, S supervisory, X external) = 32 bytes; the
    fixture is written from that layout, so the encoder (the simulator's) and the decoder
    (the gateway's) are each held to it."""
    raw = golden(GOLDEN_OUCH_OUT[b"B"])
    assert len(raw) == 32 == ouch.BROKEN_TRADE.itemsize
    assert raw[0:1] == b"B" and raw[9:23] == ouch.token_of(95)
    assert int.from_bytes(raw[23:31], "big") == 10_000_001 and raw[31:32] == b"E"
    b = ouch.decode(b"out", raw)
    assert (int(b["match"]), bytes(b["reason"]), int(b["ts"])) == (
        10_000_001,
        b"E",
        34_200_000_000_000,
    )
    enc = ouch.message(ouch.BROKEN_TRADE, type=b"B", ts=34_200_000_000_000,
                       token=ouch.token_of(95), match=10_000_001, reason=ouch.BROKEN_ERRONEOUS)  # fmt: skip
    assert enc == raw
    assert {ouch.BROKEN_ERRONEOUS, ouch.BROKEN_CONSENT, ouch.BROKEN_SUPERVISORY,
            ouch.BROKEN_EXTERNAL} == {b"E", b"C", b"S", b"X"}  # fmt: skip


# ITCH 5.0 Broken Trade: type 'B', locate, tracking, timestamp(6), match number(8) = 19 bytes
GOLDEN_ITCH_B = "42 0001 000c 1f1aced9f001 000000000000002a"


def test_itch_broken_trade_is_counted_and_leaves_the_book_alone():
    """md_gateway's decoder on an ITCH Broken Trade (match 42, after an add and its
    execution): no record, counted as a known type that makes none, the book unchanged."""
    assert len(golden(GOLDEN_ITCH_B)) == itch.MESSAGE_LENGTHS[b"B"] == 19
    s = _Store()
    msgs = [golden(GOLDEN_ITCH[t]) for t in (b"R", b"A", b"E")]
    s.ingest(s.packet(1, msgs))
    s.decode(len(msgs))
    before = (len(s.book), s.stats.copy())
    s.ingest(s.packet(4, [golden(GOLDEN_ITCH_B)]))
    recs = s.decode(1)
    assert len(recs) == 0 and len(s.book) == before[0] == 1
    st = dict(zip(itch.DECODER_STATS, (s.stats - before[1]).tolist(), strict=True))
    assert st["messages"] == 1 and st["ignored"] == 1
    assert sum(st.values()) == 2  # nothing else moved: no bad length, no unknown reference


def test_ouch_decode_refuses_unknown_types_and_wrong_lengths():
    with pytest.raises(ValueError):
        ouch.decode(b"out", golden(GOLDEN_OUCH_OUT[b"E"])[:-1])
    with pytest.raises(ValueError):
        ouch.decode(b"out", b"Z" + bytes(30))
    with pytest.raises(ValueError):
        ouch.decode(b"in", b"")


# Add Order with MPID attribution: ref 12345678, 'S', 200 shares, "AMZN", $220.6600, "GSCS"
GOLDEN_F = (
    "46 0001 000b 1f1aced9f001 0000000000bc614e 53 000000c8 414d5a4e20202020 0021ab88 47534353"
)


def test_itch_decoder_reads_an_add_with_mpid_attribution():
    s = _Store()
    f = golden(GOLDEN_F)
    assert len(f) == itch.MESSAGE_LENGTHS[b"F"] == 40
    s.ingest(s.packet(1, [golden(GOLDEN_ITCH[b"R"]), f]))
    recs = s.decode(2)
    add, quote = recs[0], recs[1]
    assert (add["kind"], add["side"], add["price"], add["qty"], add["order_id"]) == (
        MD_BOOK_ADD, SIDE_SELL, 2206600, 200, 12345678)  # fmt: skip
    assert (add["parent_seq"], add["instrument"]) == (2, 2)
    assert (quote["kind"], quote["side"], quote["price"], quote["qty"]) == (
        MD_QUOTE, SIDE_SELL, 2206600, 200)  # fmt: skip
    assert len(s.book) == 1 and s.stats[itch.DS_MESSAGES] == 2


@pytest.mark.parametrize("slice_", [777, 1 << 30])
def test_md_gateway_decodes_a_backlog_in_slices_as_in_one_call(monkeypatch, slice_):
    # a backlog (a burst, a restart) is decoded DECODE_SLICE messages per kernel call, the
    # order map grown for that many adds each time, not for the whole backlog: the records
    # and counters are those of one call, and the map stays near the live orders' size
    from types import SimpleNamespace

    from bot4.gateways.feed import lobster_to_itch
    from bot4.records import MARKET_DATA
    from bot4.stages.md_gateway import MdGatewayStage
    from tests.data_paths import lobster_dir

    feed = lobster_to_itch([f"{lobster_dir()}/amzn_level1"])
    n = feed.messages
    outs = {}
    for size in (4096, slice_):
        monkeypatch.setattr(MdGatewayStage, "DECODE_SLICE", size)
        st = MdGatewayStage(SimpleNamespace(name="md_gateway", params={
            "symbols": ["AMZN"], "date": str(feed.day), "store": 1 << 17}),
            [], [SimpleNamespace(type="MARKET_DATA")], "test")  # fmt: skip
        st.setup()
        for _s, p in mold.packets(b"BOT4SIM   ", 1, feed.buf, feed.offsets, 0, n):
            st.on_packet(p)
        out = np.zeros(itch.MAX_RECORDS_PER_MESSAGE * n, MARKET_DATA)
        k = st.source_ready(0, 0)
        used, seq = st.generate(0, k, [out], np.zeros(1, np.int64), 1)
        assert (k, used) == (n, n)
        d = dict(zip(itch.DECODER_STATS, st.dstats.tolist(), strict=True))
        assert d["table_full"] == 0 and d["messages"] == n and seq == 1 + d["records"]
        recs = out[: d["records"]]
        assert (recs["ts_recv_ns"] > 0).all()
        recs["ts_recv_ns"] = 0  # when the packets arrived: differs between the two feeds
        outs[size] = (recs.tobytes(), d, st.book.otab.shape[0], len(st.book))
    (a, da, rows_a, live), (b, db, rows_b, _) = outs[4096], outs[slice_]
    assert a == b and da == db
    assert rows_a <= 4 * (live + 4096), (rows_a, live)
    if slice_ > n:
        assert rows_b >= n, "one call sizes the map for the whole backlog"
