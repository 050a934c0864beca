"""Restart reconciliation (``bot4.oms.reconcile``): what a restarted OMS does with the
venue's answers to its status queries, and the rebuild it compares them with.

* the rule, cell by cell: a request in flight is no disagreement; an order the venue does
  not know, or closed / resized without a report we saw, is adopted with a correction to
  risk and the journal; fills that differ, or a finished order still working, halt;
* through the stage: a restarted venue that forgot every order halts nothing, a finished
  order working at the venue halts its instrument, a cancel in flight stays pending;
* the rebuild takes what is still in the OMS's output rings, and follows the corrections.
"""

from __future__ import annotations

import numpy as np
import pytest

from bot4.oms import states as S
from bot4.oms.reconcile import (
    V_ADOPT,
    V_AGREE,
    V_HALT,
    V_IN_FLIGHT,
    closed_order_verdict,
    open_order_verdict,
)
from bot4.oms.recovery import rebuild_from_journal
from bot4.records import (
    ACTION_CANCEL,
    ACTION_NEW,
    EXEC_REPORT,
    EXEC_STATUS,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NEW,
    OS_NONE,
    OS_PARTIALLY_FILLED,
    OS_REJECTED,
)
from bot4.records.errors import Code
from bot4.shm.trading_state import (
    ACTIVE,
    HALTED,
    SRC_OMS,
    init_trading_state,
    state_word,
    trading_bytes,
)
from tests.unit.test_oms import (
    Driver,
    FakeVenue,
    _journal_outputs,
    _session_with_open_orders,
    _state,
    cid,
    make_stage,
    order,
)

ACK, PART, CXL_P, CXL_PP, REP_P, PEND = (
    S.ST_ACKNOWLEDGED,
    S.ST_PARTIALLY_FILLED,
    S.ST_CANCEL_PENDING,
    S.ST_CANCEL_PENDING_PARTIAL,
    S.ST_REPLACE_PENDING,
    S.ST_PENDING,
)


# (our state, cum, leaves) vs (venue status, cum, leaves) -> verdict
@pytest.mark.parametrize(
    "ours, venue, want",
    [
        ((ACK, 0, 100), (OS_NEW, 0, 100), V_AGREE),
        ((PART, 40, 60), (OS_PARTIALLY_FILLED, 40, 60), V_AGREE),
        # a request of ours sent after the query: its answer follows the STATUS
        ((CXL_P, 0, 100), (OS_NEW, 0, 100), V_IN_FLIGHT),
        ((CXL_PP, 40, 60), (OS_PARTIALLY_FILLED, 40, 60), V_IN_FLIGHT),
        ((REP_P, 0, 100), (OS_NEW, 0, 100), V_IN_FLIGHT),
        ((PEND, 0, 100), (OS_NEW, 0, 100), V_IN_FLIGHT),
        # the position is known: adopt
        ((ACK, 0, 100), (OS_NONE, 0, 0), V_ADOPT),  # a restarted venue forgot it
        ((PART, 40, 60), (OS_NONE, 0, 0), V_ADOPT),  # our fills stand
        ((ACK, 0, 100), (OS_CANCELLED, 0, 0), V_ADOPT),  # closed unreported
        ((PART, 40, 60), (OS_EXPIRED, 40, 0), V_ADOPT),
        ((ACK, 0, 100), (OS_REJECTED, 0, 0), V_ADOPT),
        ((CXL_P, 0, 100), (OS_CANCELLED, 0, 0), V_ADOPT),  # its CANCELLED lost
        ((ACK, 0, 100), (OS_NEW, 0, 70), V_ADOPT),  # resized (an STP decrement) unreported
        # genuine disagreements: a fill one side lacks
        ((ACK, 0, 100), (OS_PARTIALLY_FILLED, 10, 90), V_HALT),
        ((PART, 40, 60), (OS_FILLED, 100, 0), V_HALT),
        ((PART, 40, 60), (OS_PARTIALLY_FILLED, 30, 70), V_HALT),
        ((CXL_P, 0, 100), (OS_PARTIALLY_FILLED, 50, 50), V_HALT),  # no in-flight excuse
    ],
)
def test_open_order_verdict(ours, venue, want):
    assert open_order_verdict(*ours, *venue) == want


@pytest.mark.parametrize(
    "ours, venue, want",
    [
        (S.ST_CANCELLED, OS_CANCELLED, V_AGREE),
        (S.ST_FILLED, OS_FILLED, V_AGREE),
        (S.ST_FILLED, OS_NONE, V_AGREE),  # a restarted venue forgot it
        (S.ST_CANCELLED, OS_NEW, V_HALT),  # finished here, working there
        (S.ST_CANCELLED, OS_PARTIALLY_FILLED, V_HALT),
        (S.ST_CANCELLED, OS_FILLED, V_HALT),  # a fill we never saw
    ],
)
def test_closed_order_verdict(ours, venue, want):
    assert closed_order_verdict(ours, venue) == want


def _trading(st):
    words = np.zeros(trading_bytes(15) // 8, np.uint64)
    init_trading_state(words, 15, 0)
    st.trading = words
    return words


def _halted(words, ins):
    w = int(state_word(words, ins))
    return (w & 0xFF, (w >> 8) & 0xFFFF, (w >> 24) & 0xFF) == (
        HALTED,
        int(Code.RECONCILE_MISMATCH),
        SRC_OMS,
    )


def _status(cl, status, cum, leaves, inst=1, exec_id=9000):
    e = np.zeros(1, EXEC_REPORT)
    e["seq"] = exec_id
    e["exec_id"] = exec_id
    e["client_order_id"] = cl
    e["exec_type"] = EXEC_STATUS
    e["status"] = status
    e["cum_qty"] = cum
    e["leaves_qty"] = leaves
    e["instrument"] = inst
    return e


def test_a_restarted_venue_that_forgot_our_orders_halts_nothing(tmp_path):
    v = FakeVenue()
    snap, next_id, (a, b) = _session_with_open_orders(v)  # a part filled, b working
    v.orders.clear()  # the venue restarted: its book is gone, its exec ids go on
    st = make_stage()
    words = _trading(st)
    d = Driver(st, v)
    st.restore_open_orders(snap, next_id)
    d.send(order(cid(1, 3)))
    d.run()
    s = st.summary()
    assert s["needs_operator"] == {} and not _halted(words, 1) and not _halted(words, 2)
    assert int(state_word(words, 1)) & 0xFF == ACTIVE
    c = s["counters"]
    assert (c["reconcile_adopted"], c["reconcile_mismatches"]) == (2, 0)
    assert _state(st, a) == S.ST_CANCELLED and _state(st, b) == S.ST_CANCELLED
    # risk hears both closed (its open quantity freed), a's fills untouched
    fixes = d.all(1)[d.all(1)["exec_type"] == EXEC_STATUS]
    assert [(int(f["client_order_id"]), int(f["status"])) for f in fixes] == [
        (a, OS_CANCELLED),
        (b, OS_CANCELLED),
    ]
    assert [int(f["cum_qty"]) for f in fixes] == [40, 0] and (fixes["last_qty"] == 0).all()
    assert (fixes["exec_id"] == 0).all() and (fixes["reason"] == Code.RECONCILE_MISMATCH).all()
    # the journal gets the venue's answers and the corrections, each once
    ev = d.all(3)
    assert int((ev["exec_type"] == EXEC_STATUS).sum()) == 4
    assert len(np.unique(ev["seq"])) == len(ev)
    assert d.all(0)[-1]["action"] == ACTION_NEW  # trading goes on


def test_a_finished_order_working_at_the_venue_still_halts():
    v = FakeVenue()
    snap, next_id, (a, b) = _session_with_open_orders(v)
    v.answer_queries = False
    st = make_stage()
    words = _trading(st)
    d = Driver(st, v)
    st.restore_open_orders(snap, next_id)
    d.run()
    d.q[1].append(_status(a, OS_PARTIALLY_FILLED, 40, 60, exec_id=9001))
    d.q[1].append(_status(b, OS_NEW, 0, 50, inst=2, exec_id=9002))
    d.run()
    assert not st.reconciling
    d.send(order(cid(1, 9), action=ACTION_CANCEL, orig=b))
    d.run()
    assert _state(st, b) == S.ST_CANCELLED
    # a STATUS saying b still works: we hold it finished, the venue does not
    d.q[1].append(_status(b, OS_NEW, 0, 50, inst=2, exec_id=9003))
    d.run()
    s = st.summary()
    assert s["needs_operator"] == {2: 1} and s["counters"]["reconcile_mismatches"] == 1
    st._halt_disagreeing()
    assert _halted(words, 2) and not _halted(words, 1)


def test_a_cancel_in_flight_is_no_disagreement():
    v = FakeVenue()
    snap, next_id, (a, b) = _session_with_open_orders(v)
    i = int(np.flatnonzero(snap["client_order_id"] == b)[0])
    snap["state"][i] = S.ST_CANCEL_PENDING  # the old OMS sent a cancel after its query
    v.answer_queries = False
    st = make_stage()
    words = _trading(st)
    d = Driver(st, v)
    st.restore_open_orders(snap, next_id)
    d.run()
    # the answer to the old query, older than the cancel: b still working there
    d.q[1].append(_status(a, OS_PARTIALLY_FILLED, 40, 60, exec_id=9001))
    d.q[1].append(_status(b, OS_NEW, 0, 50, inst=2, exec_id=9002))
    d.run()
    s = st.summary()
    assert not st.reconciling and s["needs_operator"] == {}
    assert s["counters"]["reconcile_adopted"] == 0 and not _halted(words, 2)
    assert _state(st, b) == S.ST_CANCEL_PENDING  # its answer follows
    assert len(d.all(1)) == 0  # nothing to tell risk


def test_the_rebuild_takes_what_persistence_has_not_journalled(tmp_path):
    v = FakeVenue()
    st = make_stage()
    d = Driver(st, v)
    ids = [cid(1, k) for k in range(1, 7)]
    d.send(*(order(c, qty=100, inst=1 + k % 2) for k, c in enumerate(ids)))
    d.run()
    v.fill(ids[0], 40)
    v.fill(ids[1], 100)
    d.run()
    _journal_outputs(d, tmp_path / "all")
    full = rebuild_from_journal(tmp_path / "all", 0)
    # persistence journalled the first half of each ring; the rest (and one record it
    # journalled just before we looked) is still in the rings
    orders, execs = d.all(2), d.all(3)
    ko, ke = len(orders) // 2, len(execs) // 2
    d.out[2], d.out[3] = [orders[:ko]], [execs[:ke]]
    _journal_outputs(d, tmp_path / "half")
    part = rebuild_from_journal(tmp_path / "half", 0)
    got = rebuild_from_journal(tmp_path / "half", 0, [orders[ko - 1 :], execs[ke - 1 :]])
    assert part.orders < full.orders  # the journal alone misses some
    assert (got.orders, got.reports) == (full.orders, full.reports)
    assert np.array_equal(np.sort(got.open_orders, order="client_order_id"),
                          np.sort(full.open_orders, order="client_order_id"))  # fmt: skip
    assert got.exec_ids.tolist() == full.exec_ids.tolist()
    assert got.net_filled == full.net_filled == {1: 40, 2: 100}


def test_the_rebuild_follows_the_corrections(tmp_path):
    v = FakeVenue()
    st1 = make_stage()
    d1 = Driver(st1, v)
    a, b = cid(1, 1), cid(1, 2)
    d1.send(order(a, qty=100), order(b, qty=50, inst=2))
    d1.run()
    v.fill(a, 40)
    d1.run()
    v.orders[b].update(leaves=0, status=OS_CANCELLED)  # b went away unreported
    st2 = make_stage()
    d2 = Driver(st2, v)
    d2.seq = d1.seq  # a restarted stage continues its sequence numbers
    st2.restore_open_orders(st1.open_orders(), int(st1.oms.ids[0]))
    d2.run()
    assert _state(st2, b) == S.ST_CANCELLED and _state(st2, a) == S.ST_PARTIALLY_FILLED
    for j in (2, 3):
        d1.out[j] += d2.out[j]
    _journal_outputs(d1, tmp_path / "j")
    rec = rebuild_from_journal(tmp_path / "j", 0)
    # the venue's answers alone change nothing in the rebuild; the correction closes b
    assert [int(x) for x in rec.open_orders["client_order_id"]] == [a]
    assert [int(x) for x in st2.open_orders()["client_order_id"]] == [a]
    assert int(rec.open_orders["cum_qty"][0]) == 40


def test_unconsumed_records_are_what_the_consumer_has_not_released_across_the_wrap():
    import uuid

    from bot4.oms.recovery import unconsumed_records
    from bot4.shm import Segment, segment_name
    from bot4.shm.ring import Consumer, Producer, create_ring

    instance = f"g{uuid.uuid4().hex[:10]}"
    name = segment_name(instance, "exec_events")
    create_ring(name, EXEC_REPORT, 8)
    try:
        assert len(unconsumed_records(instance, "nope", EXEC_REPORT)) == 0
        with Producer(name, EXEC_REPORT) as p, Consumer(name, EXEC_REPORT) as c:
            recs = np.zeros(11, EXEC_REPORT)
            recs["seq"] = np.arange(1, 12)
            assert p.push_many(recs[:6]) == 6
            c.release(len(c.peek(5)))  # persistence journalled and released 5
            assert unconsumed_records(instance, "exec_events", EXEC_REPORT)["seq"].tolist() == [6]
            assert p.push_many(recs[6:]) == 5  # slots 6, 7, 0, 1, 2: across the wrap
            got = unconsumed_records(instance, "exec_events", EXEC_REPORT)
            assert got["seq"].tolist() == [6, 7, 8, 9, 10, 11]
            while c.depth:
                c.release(len(c.peek(6)))  # a peek stops at the wrap
            assert len(unconsumed_records(instance, "exec_events", EXEC_REPORT)) == 0
    finally:
        Segment.unlink(name)
