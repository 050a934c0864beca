"""The risk book's market-data kernel stamps arrivals once per instrument and batch and
computes references and marks once per instrument, from the batch's last price (the
replay feeds it batches of thousands of records). Held here to the record-by-record
loop it replaced (below, on the same helpers) on random streams with open positions and
stale-data episodes: the same positions, marks, counters, trading states and orders."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from bot4.records import (
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_CROSS_TRADE,
    MD_QUOTE,
    MD_TRADE,
    ORDER,
    SIDE_BUY,
    SIDE_NONE,
    SIDE_SELL,
)
from bot4.risk.killswitch import after_batch, maybe_reset, md_arrived
from bot4.risk.layout import C_MD, I_ASK, I_BID, I_LAST_TRADE, I_REF, I_REF_NS, L_KNOWN
from bot4.risk.positions import remark
from tests.unit.test_risk import Desk, instruments_file  # noqa: F401 (fixture)


@njit
def reference(st, md, out_orders, seq, now_ns):
    """``apply_market_data`` as it was: every record stamps, references and marks."""
    maybe_reset(st, now_ns)
    inst_st = st.inst
    for k in range(md.shape[0]):
        r = md[k]
        inst = np.int64(r.instrument)
        if inst <= 0 or inst >= st.ilim.shape[0] or st.ilim[inst, L_KNOWN] == 0:
            continue
        md_arrived(st, inst, now_ns)
        kind = r.kind
        if kind == MD_QUOTE:
            px = r.price if r.qty > 0 and r.price > 0 else 0
            if r.side > 0:
                inst_st[inst, I_BID] = px
            elif r.side < 0:
                inst_st[inst, I_ASK] = px
            else:
                continue
        elif kind in (MD_TRADE, MD_CROSS_TRADE, MD_BOOK_EXEC, MD_BOOK_HIDDEN_EXEC):
            if r.price <= 0:
                continue
            inst_st[inst, I_LAST_TRADE] = r.price
        else:
            continue
        bid = inst_st[inst, I_BID]
        ask = inst_st[inst, I_ASK]
        ref = (bid + ask) // 2 if bid > 0 and ask > bid else inst_st[inst, I_LAST_TRADE]
        inst_st[inst, I_REF] = ref
        inst_st[inst, I_REF_NS] = r.ts_recv_ns if r.ts_recv_ns > 0 else now_ns
        st.counters[C_MD] += 1
        remark(st, inst)
    return after_batch(st, out_orders, seq, now_ns)


def reference_md(d: Desk, md) -> None:
    out = np.zeros(8, ORDER)
    n = reference(d.book.st, md, out, d.seq, d.now)
    d.seq += n
    d._orders(out, n)


def _batch(rng, n, now):
    md = np.zeros(n, MARKET_DATA)
    md["instrument"] = rng.choice([1, 2, 3, 4, 9], n)  # 9: not configured
    md["kind"] = rng.choice([MD_QUOTE] * 6 + [MD_TRADE, MD_BOOK_EXEC, MD_BOOK_ADD], n)
    md["side"] = rng.choice([SIDE_BUY, SIDE_SELL, SIDE_BUY, SIDE_SELL, SIDE_NONE], n)
    md["price"] = 1_000_000 + 100 * rng.integers(-20, 21, n)
    md["price"][rng.random(n) < 0.03] = 0
    md["qty"] = 100 * rng.integers(0, 4, n)
    md["ts_recv_ns"] = np.where(rng.random(n) < 0.1, 0, now - rng.integers(0, 1000, n))
    return md


def _same(a: Desk, b: Desk):
    assert a.book.inst.tobytes() == b.book.inst.tobytes()
    assert a.book.acct.tobytes() == b.book.acct.tobytes()
    assert a.book.counters.tobytes() == b.book.counters.tobytes()
    assert a.ts.tobytes() == b.ts.tobytes()
    assert np.array(a.orders, ORDER).tobytes() == np.array(b.orders, ORDER).tobytes()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_market_data_batches_equal_record_by_record(instruments_file, seed):  # noqa: F811
    rng = np.random.default_rng(seed)
    params = {"stale_after_ms": 5, "feed_gone_after_ms": 20}
    a, b = Desk(instruments_file, **params), Desk(instruments_file, **params)
    for d in (a, b):
        d.quote(1)
        d.quote(4)
        d.fill(inst=1, qty=300)
        d.fill(inst=4, side=SIDE_SELL, qty=200)
    for _ in range(200):
        gap = int(rng.choice([1_000, 10_000, 3_000_000, 30_000_000]))
        a.now += gap
        b.now += gap
        if rng.random() < 0.3:  # stale-data halts, ended by the next records
            a.book.staleness(a.now)
            b.book.staleness(b.now)
        md = _batch(rng, int(rng.integers(0, 60)), a.now)
        a.market_data(md)
        reference_md(b, md)
        _same(a, b)
    assert a.book.inst[1, 0] == 300 and a.book.inst[4, 0] == -200
    st = a.book.stale()
    assert st["stale_episodes"] > 0 and st["relaxed"] > 0 and a.book.counters[C_MD] > 1000
