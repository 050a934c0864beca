"""The venue's market-data kernels take a fast path for quote-mode records that touch no
order of ours (on the unpacked state arrays). Held here to the reference — every record
through ``_md_one`` — on random streams of quotes, prints, order-level events and our
orders resting in their way: the same state arrays, word for word, and the same reports,
in both quote-fill models, on both clocks, with small level and pool capacities (level
eviction, dropped quote orders)."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.records import (
    ACTION_CANCEL,
    ACTION_NEW,
    EXEC_REPORT,
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_EXEC,
    MD_QUOTE,
    MD_TRADE,
    ORDER,
    OT_LIMIT,
    SIDE_BUY,
    SIDE_NONE,
    SIDE_SELL,
    TIF_DAY,
    TIF_IOC,
)
from bot4.venue.matching import (
    QF_QUEUE,
    QF_TRADE_THROUGH,
    Venue,
    _md_reference_kernel,
    venue_md_event_time_kernel,
    venue_md_kernel,
    venue_order_kernel,
    venue_release_kernel,
)


def _md_batch(rng, n, t0, n_inst=3):
    """Quotes around a random-walk mid per instrument, prints at and through the touch
    (known and unknown aggressor), empty quotes, bad records, and order-level events on
    the last instrument."""
    md = np.zeros(n, MARKET_DATA)
    mids = _md_batch.mids
    for k in range(n):
        inst = int(rng.integers(1, n_inst + 2))  # n_inst + 1: an unknown book
        r = md[k]
        r["seq"] = t0 + k
        r["ts_event_ns"] = t0 + k if rng.random() > 0.02 else 0
        r["instrument"] = inst
        i = min(inst, n_inst) - 1
        mids[i] += int(rng.choice([-100, 0, 0, 0, 100]))
        mids[i] = max(mids[i], 10_000)
        side = SIDE_BUY if rng.random() < 0.5 else SIDE_SELL
        u = rng.random()
        if inst == n_inst and u < 0.5:  # order-level events on one book
            oid = int(rng.integers(1, 40))
            r["kind"] = [MD_BOOK_ADD, MD_BOOK_CANCEL, MD_BOOK_EXEC][int(rng.integers(0, 3))]
            r["order_id"] = oid
            r["side"] = side
            r["price"] = (
                mids[i] + (-50 if side == SIDE_BUY else 50) + 100 * int(rng.integers(-2, 3))
            )
            r["qty"] = 100 * int(rng.integers(1, 5))
        elif u < 0.8:
            r["kind"] = MD_QUOTE
            r["side"] = side if rng.random() > 0.01 else SIDE_NONE
            r["price"] = mids[i] + (-50 if side == SIDE_BUY else 50)
            r["qty"] = 100 * int(rng.integers(0, 6))  # 0: the side empties
        else:
            r["kind"] = MD_TRADE
            r["side"] = side if rng.random() > 0.2 else SIDE_NONE
            px = mids[i] + (50 if side == SIDE_BUY else -50)
            r["price"] = px + int(rng.choice([-100, 0, 0, 100]))
            r["qty"] = 100 * int(rng.integers(0, 4))
    return md


def _orders(rng, n, t0, clid0, live):
    o = np.zeros(n, ORDER)
    for k in range(n):
        r = o[k]
        r["seq"] = t0 + k
        r["ts_order_ns"] = t0 + k
        if live and rng.random() < 0.3:
            r["action"] = ACTION_CANCEL
            r["orig_client_order_id"] = live.pop(int(rng.integers(0, len(live))))
            continue
        clid = clid0 + k
        inst = int(rng.integers(1, 4))
        side = SIDE_BUY if rng.random() < 0.5 else SIDE_SELL
        mid = _md_batch.mids[inst - 1]
        r["action"] = ACTION_NEW
        r["client_order_id"] = clid
        r["instrument"] = inst
        r["side"] = side
        r["order_type"] = OT_LIMIT
        r["tif"] = TIF_DAY if rng.random() < 0.9 else TIF_IOC
        r["limit_price"] = mid + 100 * int(rng.integers(-3, 3)) + (-50 if side == SIDE_BUY else 50)
        r["qty"] = 100 * int(rng.integers(1, 8))
        live.append(clid)
    return o


def _state_equal(a, b):
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.tobytes() == y.tobytes(), f"state array {k} differs"


@pytest.mark.parametrize("quote_fill", [QF_TRADE_THROUGH, QF_QUEUE])
@pytest.mark.parametrize("event_time", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_md_fast_path_equals_the_reference(quote_fill, event_time, seed):
    rng = np.random.default_rng(seed)
    _md_batch.mids = [1_000_000, 2_000_000, 3_000_000]
    kw = dict(instruments=3, capacity=256, levels=4, queue=1 << 12, quote_fill=quote_fill)
    fast, ref = Venue(**kw), Venue(**kw)
    kernel = venue_md_event_time_kernel if event_time else venue_md_kernel
    out_f = np.zeros(4096, EXEC_REPORT)
    out_r = np.zeros(4096, EXEC_REPORT)
    live: list[int] = []
    t = 1
    reports = 0
    for step in range(300):
        md = _md_batch(rng, int(rng.integers(1, 40)), t)
        now = t + 10_000
        n_f = kernel(fast.state, md, now)
        n_r = _md_reference_kernel(ref.state, md, now, event_time)
        assert n_f == n_r
        t += len(md)
        if step % 3 == 0:
            orders = _orders(rng, int(rng.integers(1, 6)), t, 1000 * (step + 1), live)
            venue_order_kernel(fast.state, orders, now)
            venue_order_kernel(ref.state, orders, now)
        _state_equal(fast.state, ref.state)
        k_f = venue_release_kernel(fast.state, out_f, now + 1, 1)
        k_r = venue_release_kernel(ref.state, out_r, now + 1, 1)
        assert out_f[:k_f].tobytes() == out_r[:k_r].tobytes()
        reports += k_f
    c = fast.counters()
    assert reports > 100 and c["fills"] > 10 and c["md_in"] > 4000
    assert c["ext_dropped"] + c["levels_evicted"] > 0  # the small capacities were reached
