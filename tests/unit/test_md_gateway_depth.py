"""md_gateway's depth: BOOK_LEVEL updates from the books it builds from ITCH (issue 19's
"MARKET_DATA / book records"), as the md stage publishes a LOBSTER pair's depth."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bot4.gateways import itch, mold
from bot4.gateways.feed import lobster_to_itch
from bot4.records import BOOK_LEVEL, MARKET_DATA, MDF_LAST_IN_BATCH, SIDE_BUY, SIDE_SELL
from bot4.stages.base import ParamError
from bot4.stages.md_gateway import MdGatewayStage
from tests.data_paths import lobster_dir

pytestmark = pytest.mark.timeout(300)


def _stage(feed, symbol: str, depth: int) -> MdGatewayStage:
    outs = [SimpleNamespace(type="MARKET_DATA"), SimpleNamespace(type="BOOK_LEVEL")]
    st = MdGatewayStage(SimpleNamespace(name="md_gateway", params={
        "symbols": [symbol], "date": str(feed.day), "store": 1 << 18, "depth": depth}),
        [], outs, "test")  # fmt: skip
    st.setup()
    for _s, p in mold.packets(b"BOT4SIM   ", 1, feed.buf, feed.offsets, 0, feed.messages):
        st.on_packet(p)
    return st


def _run(st, n: int, step: int):
    """Generate ``n`` messages ``step`` at a time; yields (market data, levels) per call."""
    mo = st.max_out_per_in
    pos, seq = 0, 1
    while pos < n:
        k = min(step, n - pos)
        md, lv = np.zeros(mo * k, MARKET_DATA), np.zeros(mo * k, BOOK_LEVEL)
        counts = np.zeros(2, np.int64)
        used, nxt = st.generate(pos, k, [md, lv], counts, seq)
        assert used == k and nxt == seq + counts[0]
        yield md[: counts[0]], lv[: counts[1]]
        pos, seq = pos + k, nxt


@pytest.mark.parametrize(("pair", "symbol", "depth", "upto"),
                         [("aapl_level10_first999", "AAPL", 10, None),
                          ("amzn_level1", "AMZN", 5, 20_000)])  # fmt: skip
def test_published_depth_equals_the_gateways_book_after_every_message(pair, symbol, depth, upto):
    """One message per call: after each, the positions rebuilt from every BOOK_LEVEL so far
    equal the book's best ``depth`` levels a side (price, size, orders); each message's
    updates are flagged last-in-batch at its end and name its first record as parent. The
    same messages in one call publish the same updates."""
    feed = lobster_to_itch([f"{lobster_dir()}/{pair}"])
    n = min(feed.messages, upto or feed.messages)
    st = _stage(feed, symbol, depth)
    inst = int(st.sym_ids[0])
    held = {}  # (side, level) -> (price, qty, orders)
    every = []
    changed = 0
    for md, lv in _run(st, n, 1):
        if len(lv):
            changed += 1
            last = ((lv["flags"] & MDF_LAST_IN_BATCH) != 0).tolist()
            assert last == [False] * (len(lv) - 1) + [True]
            assert (lv["parent_seq"] == md["seq"][0]).all()
            assert (lv["instrument"] == inst).all()
        for r in lv:
            held[(int(r["side"]), int(r["level"]))] = (
                int(r["price"]),
                int(r["qty"]),
                int(r["orders"]),
            )
        every.append(lv)
        top = st.book.top(inst, depth).reshape(depth, 4)
        for side, (pc, qc) in ((SIDE_SELL, (0, 1)), (SIDE_BUY, (2, 3))):
            got = [held.get((side, k), (0, 0, 0))[:2] for k in range(depth)]
            want = [(int(r[pc]), int(r[qc])) if r[qc] > 0 else (0, 0) for r in top]
            assert got == want
    assert changed > n // 4
    seqs = np.concatenate(every)["seq"]
    assert (np.diff(seqs) == 1).all(), "BOOK_LEVEL seqs are consecutive"
    # orders per level: the book's own counts
    s = int(SIDE_BUY)
    b = st.book
    for k in range(min(depth, int(b.n[inst, 0]))):
        assert held[(s, k)][2] == int(b.cnt[inst, 0, b.n[inst, 0] - 1 - k])
    # the same messages in one call
    st2 = _stage(feed, symbol, depth)
    ((md2, lv2),) = list(_run(st2, n, n))
    one = np.concatenate(every)
    for a in (one, lv2):
        a["ts_recv_ns"] = 0
    assert lv2.tobytes() == one.tobytes()


def test_a_new_gateway_publishes_every_position_at_the_first_change():
    """A gateway starts with nothing published: an instrument's first book change
    publishes all 2 x depth positions, empty ones as zeros."""
    feed = lobster_to_itch([f"{lobster_dir()}/aapl_level10_first999"])
    st = _stage(feed, "AAPL", 10)
    first = next(lv for _md, lv in _run(st, feed.messages, 1) if len(lv))
    assert len(first) == 20
    assert sorted(zip(first["side"].tolist(), first["level"].tolist(), strict=True)) == sorted(
        (sd, k) for sd in (SIDE_BUY, SIDE_SELL) for k in range(10)
    )


@pytest.mark.parametrize("at", [1, 37, 500, 1000])
def test_a_restarted_gateway_publishes_what_an_uninterrupted_one_does(at):
    """A gateway restarted at position ``at`` rebuilds its books (and what it had
    published) from messages 1 .. at without publishing, then sends the very updates, seqs
    included, that one which never stopped sends after ``at``."""
    feed = lobster_to_itch([f"{lobster_dir()}/aapl_level10_first999"])
    n = feed.messages
    whole = _stage(feed, "AAPL", 10)
    per = list(_run(whole, n, 1))
    md_seq = int(per[at][0]["seq"][0]) if len(per[at][0]) else None
    want = np.concatenate([lv for _md, lv in per[at:]])
    again = _stage(feed, "AAPL", 10)
    assert again.source_ready(at, 0) > 0  # the restart: rebuild 1 .. at, nothing published
    assert again.counters["rebuilt"] == at
    mo = again.max_out_per_in
    md, lv = np.zeros(mo * (n - at), MARKET_DATA), np.zeros(mo * (n - at), BOOK_LEVEL)
    counts = np.zeros(2, np.int64)
    seq = md_seq if md_seq is not None else 1
    used, _ = again.generate(at, n - at, [md, lv], counts, seq)
    got = lv[: counts[1]].copy()
    assert used == n - at and len(got) == len(want) > 0
    for x in (got, want):
        x["ts_recv_ns"] = 0  # when the packets arrived
    if md_seq is not None:
        assert got.tobytes() == want.tobytes()
    else:  # message ``at`` made no record: compare all but the parents' numbering
        assert (got[["seq", "price", "qty", "side", "level", "orders"]]
                == want[["seq", "price", "qty", "side", "level", "orders"]]).all()  # fmt: skip


def test_depth_params_and_outputs_are_checked():
    assert MdGatewayStage.check_arity(0, 2, [], ["MARKET_DATA", "BOOK_LEVEL"]) is None
    err = MdGatewayStage.check_arity(0, 2, [], ["BOOK_LEVEL", "MARKET_DATA"])
    assert "output 0 must carry market_data" in err, err
    err = MdGatewayStage.check_arity(0, 2, [], ["MARKET_DATA", "ORDER"])
    assert "must carry market_data or book_level" in err
    with pytest.raises(ParamError, match="depth"):
        MdGatewayStage.check_params({"depth": 0})
    with pytest.raises(ParamError, match="cannot exceed levels"):
        MdGatewayStage.check_params({"depth": 20, "levels": 16})
    assert MdGatewayStage.out_per_in({"depth": 10}) == 20
    assert MdGatewayStage.out_per_in({}) == max(itch.MAX_RECORDS_PER_MESSAGE, 10)
