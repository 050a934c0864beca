"""OMS: the state table cell by cell, the LRU against OrderedDict, self-trade prevention
policy by policy, identity (duplicate intents and executions), the OMS against its table
(random event sequences), and the orders stage end to end against an in-process venue."""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as hs

from bot4.oms import states as S
from bot4.oms.book import book_add, book_find, book_list, book_new, open_order
from bot4.oms.lru import (
    M_EVICTIONS,
    M_ZERO,
    lru_contains,
    lru_get,
    lru_items,
    lru_new,
    lru_peek,
    lru_put,
    lru_remove,
)
from bot4.oms.state import OMS_PRODUCER
from bot4.oms.stp_guard import (
    A_CANCEL,
    A_DECREMENT,
    GUARD_CANCEL_BOTH,
    GUARD_CANCEL_NEW,
    GUARD_CANCEL_RESTING,
    GUARD_DECREMENT_BOTH,
    OUT_APPLIED,
    OUT_FALLBACK,
    OUT_NONE,
    guard_plan,
    parse_guard_policy,
)
from bot4.pipeline.topology import RingSpec, StageSpec
from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    ACTION_QUERY,
    ACTION_REPLACE,
    EXEC_ACK,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_EXPIRED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_REPORT,
    EXEC_STATUS,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    ORDER,
    OS_CANCELLED,
    OS_FILLED,
    OS_NEW,
    OS_NONE,
    OS_PARTIALLY_FILLED,
    OT_LIMIT,
    OT_MARKET,
    RECORD_TYPES,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
    TIF_IOC,
)
from bot4.records.errors import Code
from bot4.records.identity import exec_content_hashes
from bot4.stages import orders as O
from bot4.stages import orders_restart as OR
from bot4.stages.orders import OrdersStage

B, SL = SIDE_BUY, SIDE_SELL
PX = 1_000_000  # $100 at scale 1e4


def cid(producer: int, n: int) -> int:
    return (producer << 48) | n


# --- 1. the transition table, cell by cell ----------------------------------------------------
# written out independently of bot4.oms.states.LEGAL: state -> {event: next state}
EXPECTED = {
    "NONE": {},
    "NEW": {"SEND": "PENDING", "REJECT": "REJECTED", "EXPIRE": "EXPIRED"},
    "PENDING": {
        "ACK": "ACKNOWLEDGED", "PARTIAL_FILL": "PARTIALLY_FILLED", "FILL": "FILLED",
        "CANCEL_REQUEST": "CANCEL_PENDING", "REJECT": "REJECTED", "EXPIRE": "EXPIRED",
        "STP_DECREMENT": "ACKNOWLEDGED",
    },
    "ACKNOWLEDGED": {
        "PARTIAL_FILL": "PARTIALLY_FILLED", "FILL": "FILLED", "CANCEL_REQUEST": "CANCEL_PENDING",
        "CANCELLED": "CANCELLED", "EXPIRE": "EXPIRED", "REPLACE_REQUEST": "REPLACE_PENDING",
        "STP_DECREMENT": "ACKNOWLEDGED",
    },
    "PARTIALLY_FILLED": {
        "PARTIAL_FILL": "PARTIALLY_FILLED", "FILL": "FILLED",
        "CANCEL_REQUEST": "CANCEL_PENDING_PARTIAL", "CANCELLED": "CANCELLED", "EXPIRE": "EXPIRED",
        "REPLACE_REQUEST": "REPLACE_PENDING_PARTIAL", "STP_DECREMENT": "PARTIALLY_FILLED",
    },
    "CANCEL_PENDING": {
        "ACK": "CANCEL_PENDING", "PARTIAL_FILL": "CANCEL_PENDING_PARTIAL", "FILL": "FILLED",
        "CANCELLED": "CANCELLED", "REJECT": "REJECTED", "EXPIRE": "EXPIRED",
        "CANCEL_REJECTED": "ACKNOWLEDGED", "STP_DECREMENT": "CANCEL_PENDING",
    },
    "CANCEL_PENDING_PARTIAL": {
        "PARTIAL_FILL": "CANCEL_PENDING_PARTIAL", "FILL": "FILLED", "CANCELLED": "CANCELLED",
        "EXPIRE": "EXPIRED", "CANCEL_REJECTED": "PARTIALLY_FILLED",
        "STP_DECREMENT": "CANCEL_PENDING_PARTIAL",
    },
    "REPLACE_PENDING": {
        "PARTIAL_FILL": "REPLACE_PENDING_PARTIAL", "FILL": "FILLED", "CANCELLED": "CANCELLED",
        "EXPIRE": "EXPIRED", "CANCEL_REJECTED": "ACKNOWLEDGED", "REPLACED": "ACKNOWLEDGED",
        "STP_DECREMENT": "REPLACE_PENDING",
    },
    "REPLACE_PENDING_PARTIAL": {
        "PARTIAL_FILL": "REPLACE_PENDING_PARTIAL", "FILL": "FILLED", "CANCELLED": "CANCELLED",
        "EXPIRE": "EXPIRED", "CANCEL_REJECTED": "PARTIALLY_FILLED",
        "REPLACED": "PARTIALLY_FILLED", "STP_DECREMENT": "REPLACE_PENDING_PARTIAL",
    },
    "FILLED": {"CANCEL_REJECTED": "FILLED"},
    "CANCELLED": {"CANCEL_REJECTED": "CANCELLED"},
    "REJECTED": {"CANCEL_REJECTED": "REJECTED"},
    "EXPIRED": {"CANCEL_REJECTED": "EXPIRED"},
}  # fmt: skip


def test_state_ids_match_os_status_where_one_exists():
    assert [S.STATE_NAMES[i] for i in range(10)] == [
        "NONE", "PENDING", "ACKNOWLEDGED", "PARTIALLY_FILLED", "FILLED", "CANCEL_PENDING",
        "CANCELLED", "REPLACE_PENDING", "REJECTED", "EXPIRED",
    ]  # fmt: skip
    assert list(S.STATUS_OF[:10]) == list(range(10))
    assert list(S.STATUS_OF[10:]) == [1, 5, 7]  # NEW -> PENDING_NEW, partial pendings
    assert set(EXPECTED) == set(S.STATE_NAMES)


def test_transition_table_every_cell_legal_or_refused_and_counted():
    st_id = {n: i for i, n in enumerate(S.STATE_NAMES)}
    ev_id = {n: i for i, n in enumerate(S.EVENT_NAMES)}
    illegal = np.zeros(S.N_EVENTS, np.int64)
    want_illegal = np.zeros(S.N_EVENTS, np.int64)
    n_legal = 0
    for sname, row in EXPECTED.items():
        for ename in S.EVENT_NAMES:
            s, e = st_id[sname], ev_id[ename]
            got = S.transition_counted(S.TABLE, s, e, illegal)
            assert got == S.transition(S.TABLE, s, e) == S.TABLE[s, e]
            if ename in row:
                assert got == st_id[row[ename]], (sname, ename)
                n_legal += 1
            else:
                assert got == -1, (sname, ename, S.STATE_NAMES[got])
                want_illegal[e] += 1
            assert np.array_equal(illegal, want_illegal), (sname, ename)
    assert n_legal == len(S.LEGAL) == int((S.TABLE >= 0).sum())
    # out of range is illegal, never an index error
    assert S.transition(S.TABLE, S.N_STATES, 0) == -1
    assert S.transition(S.TABLE, 0, S.N_EVENTS) == -1


def test_terminal_states_take_no_fill():
    for s in np.flatnonzero(S.IS_TERMINAL):
        for e in (S.EV_ACK, S.EV_PARTIAL_FILL, S.EV_FILL, S.EV_CANCELLED, S.EV_SEND):
            assert S.TABLE[s, e] == -1


def test_state_from_status():
    assert S.state_from_status(OS_NEW, 0) == S.ST_ACKNOWLEDGED
    assert S.state_from_status(5, 0) == S.ST_CANCEL_PENDING
    assert S.state_from_status(5, 3) == S.ST_CANCEL_PENDING_PARTIAL
    assert S.state_from_status(7, 3) == S.ST_REPLACE_PENDING_PARTIAL
    assert S.state_from_status(OS_FILLED, 9) == S.ST_FILLED
    assert S.state_from_status(OS_NONE, 0) == -1
    assert S.state_from_status(42, 0) == -1


# --- 2. the LRU against OrderedDict -----------------------------------------------------------
KEYS = hs.one_of(hs.integers(0, 12), hs.sampled_from([2**64 - 1, 2**63, 2**48 + 5]))
OPS = hs.lists(
    hs.one_of(
        hs.tuples(hs.just("put"), KEYS, hs.integers(-(2**40), 2**40)),
        hs.tuples(hs.just("get"), KEYS),
        hs.tuples(hs.just("peek"), KEYS),
        hs.tuples(hs.just("contains"), KEYS),
        hs.tuples(hs.just("remove"), KEYS),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(cap=hs.integers(1, 9), ops=OPS)
def test_lru_matches_ordereddict(cap, ops):
    lru = lru_new(cap)
    model: OrderedDict[int, int] = OrderedDict()  # least recent first
    evictions = 0
    for op in ops:
        k = np.uint64(op[1])
        key = op[1]
        if op[0] == "put":
            res = lru_put(lru, k, op[2])
            if key in model:
                assert res == 1
                model.move_to_end(key)
            elif len(model) == cap:
                assert res == 2
                model.popitem(last=False)
                evictions += 1
            else:
                assert res == 0
            model[key] = op[2]
        elif op[0] == "get":
            found, v = lru_get(lru, k)
            assert found == (key in model)
            if found:
                assert v == model[key]
                model.move_to_end(key)
        elif op[0] == "peek":
            found, v = lru_peek(lru, k)
            assert found == (key in model) and (not found or v == model[key])
        elif op[0] == "contains":
            assert lru_contains(lru, k) == (key in model)
        else:
            assert lru_remove(lru, k) == (key in model)
            model.pop(key, None)
        assert lru_items(lru) == list(reversed(model.items()))
        assert int(lru.meta[M_EVICTIONS]) == evictions
        assert int((lru.tab[:, 0] != 0).sum()) + (int(lru.meta[M_ZERO]) >= 0) == len(model)


def test_lru_long_churn_keeps_probe_chains_intact():
    rng = np.random.default_rng(7)
    lru = lru_new(64)
    model: OrderedDict[int, int] = OrderedDict()
    for _ in range(20000):
        key = int(rng.integers(0, 200))
        if rng.random() < 0.3:
            assert lru_remove(lru, np.uint64(key)) == (key in model)
            model.pop(key, None)
        else:
            lru_put(lru, np.uint64(key), key)
            model[key] = key
            model.move_to_end(key)
            if len(model) > 64:
                model.popitem(last=False)
    assert lru_items(lru) == list(reversed(model.items()))
    for key in range(200):
        assert lru_contains(lru, np.uint64(key)) == (key in model)


# --- 3. self-trade prevention: the plan, table-driven ------------------------------------------
ACK, PEN, PF = S.ST_ACKNOWLEDGED, S.ST_PENDING, S.ST_PARTIALLY_FILLED
CP, RP = S.ST_CANCEL_PENDING, S.ST_REPLACE_PENDING

# makers: (side, price, qty, cum, state, order_type, tif, instrument); slots are 0, 1, ...
# incoming: (side, price, qty, market); want: (outcome, qty_after, [(maker, action, amount)])
STP_CASES = [
    # one maker
    ("no cross", [(SL, PX + 100, 50, 0, ACK)], (B, PX, 30, False), GUARD_CANCEL_BOTH,
     (OUT_NONE, 30, [])),
    ("cancel new", [(SL, PX, 50, 0, ACK)], (B, PX, 30, False), GUARD_CANCEL_NEW,
     (OUT_APPLIED, 0, [])),
    ("cancel resting", [(SL, PX, 50, 0, ACK)], (B, PX, 30, False), GUARD_CANCEL_RESTING,
     (OUT_APPLIED, 30, [(0, A_CANCEL, 50)])),
    ("cancel both", [(SL, PX, 50, 0, ACK)], (B, PX, 30, False), GUARD_CANCEL_BOTH,
     (OUT_APPLIED, 0, [(0, A_CANCEL, 50)])),
    ("decrement: taker smaller", [(SL, PX, 50, 0, ACK)], (B, PX, 30, False), GUARD_DECREMENT_BOTH,
     (OUT_APPLIED, 0, [(0, A_DECREMENT, 30)])),
    ("decrement: taker larger", [(SL, PX, 30, 0, ACK)], (B, PX, 50, False), GUARD_DECREMENT_BOTH,
     (OUT_APPLIED, 20, [(0, A_CANCEL, 30)])),
    ("decrement: equal", [(SL, PX, 30, 0, ACK)], (B, PX, 30, False), GUARD_DECREMENT_BOTH,
     (OUT_APPLIED, 0, [(0, A_CANCEL, 30)])),
    ("decrement: partially filled maker", [(SL, PX, 100, 40, PF)], (B, PX, 50, False),
     GUARD_DECREMENT_BOTH, (OUT_APPLIED, 0, [(0, A_DECREMENT, 50)])),
    ("sell taker vs buy maker", [(B, PX, 50, 0, ACK)], (SL, PX - 100, 80, False),
     GUARD_DECREMENT_BOTH, (OUT_APPLIED, 30, [(0, A_CANCEL, 50)])),
    ("buy maker below a sell limit", [(B, PX - 100, 50, 0, ACK)], (SL, PX, 80, False),
     GUARD_CANCEL_BOTH, (OUT_NONE, 80, [])),
    ("market taker crosses any price", [(SL, PX + 900, 50, 0, ACK)], (B, 0, 10, True),
     GUARD_CANCEL_RESTING, (OUT_APPLIED, 10, [(0, A_CANCEL, 50)])),
    # several makers, in matching priority (price, then time)
    ("several: resting all cancelled", [
        (SL, PX + 200, 10, 0, ACK), (SL, PX, 20, 0, ACK), (SL, PX + 100, 30, 0, ACK),
        (SL, PX + 300, 40, 0, ACK)],
     (B, PX + 200, 5, False), GUARD_CANCEL_RESTING,
     (OUT_APPLIED, 5, [(1, A_CANCEL, 20), (2, A_CANCEL, 30), (0, A_CANCEL, 10)])),
    ("several: both", [(SL, PX, 20, 0, ACK), (SL, PX, 30, 0, ACK)], (B, PX, 5, False),
     GUARD_CANCEL_BOTH, (OUT_APPLIED, 0, [(0, A_CANCEL, 20), (1, A_CANCEL, 30)])),
    ("several: decrement walks the book", [
        (SL, PX + 200, 50, 0, ACK), (SL, PX, 20, 0, ACK), (SL, PX + 100, 30, 0, ACK)],
     (B, PX + 200, 60, False), GUARD_DECREMENT_BOTH,
     (OUT_APPLIED, 0, [(1, A_CANCEL, 20), (2, A_CANCEL, 30), (0, A_DECREMENT, 10)])),
    ("several: decrement, taker outlives them", [
        (SL, PX, 20, 0, ACK), (SL, PX + 100, 30, 0, PF)], (B, PX + 100, 80, False),
     GUARD_DECREMENT_BOTH, (OUT_APPLIED, 30, [(0, A_CANCEL, 20), (1, A_CANCEL, 30)])),
    ("several: decrement stops where the taker runs out", [
        (SL, PX, 20, 0, ACK), (SL, PX, 30, 0, PEN)], (B, PX, 20, False),
     GUARD_DECREMENT_BOTH, (OUT_APPLIED, 0, [(0, A_CANCEL, 20)])),
    ("time priority at one price", [(SL, PX, 20, 0, ACK), (SL, PX, 30, 0, ACK)],
     (B, PX, 25, False), GUARD_DECREMENT_BOTH,
     (OUT_APPLIED, 0, [(0, A_CANCEL, 20), (1, A_DECREMENT, 5)])),
    # what is skipped, what forces the fallback
    ("cancel-pending maker is skipped", [(SL, PX, 20, 0, CP)], (B, PX, 5, False),
     GUARD_CANCEL_BOTH, (OUT_NONE, 5, [])),
    ("same side, other instrument, IOC and market makers ignored", [
        (B, PX, 20, 0, ACK), (SL, PX, 20, 0, ACK, OT_LIMIT, TIF_DAY, 2),
        (SL, PX, 20, 0, PEN, OT_LIMIT, TIF_IOC), (SL, 0, 20, 0, PEN, OT_MARKET)],
     (B, PX, 5, False), GUARD_CANCEL_BOTH, (OUT_NONE, 5, [])),
    ("unacknowledged maker: cancel is fine", [(SL, PX, 20, 0, PEN)], (B, PX, 5, False),
     GUARD_CANCEL_RESTING, (OUT_APPLIED, 5, [(0, A_CANCEL, 20)])),
    ("unacknowledged maker: no replace -> fallback", [(SL, PX, 20, 0, PEN)],
     (B, PX, 5, False), GUARD_DECREMENT_BOTH, (OUT_FALLBACK, 0, [])),
    ("replace in flight -> fallback", [(SL, PX, 20, 0, RP)], (B, PX, 50, False),
     GUARD_CANCEL_RESTING, (OUT_FALLBACK, 0, [])),
    ("more makers than actions -> fallback", [(SL, PX, 1, 0, ACK)] * 4, (B, PX, 50, False),
     GUARD_CANCEL_RESTING, (OUT_FALLBACK, 0, [])),
    ("more makers, but the taker is used up first", [(SL, PX, 10, 0, ACK)] * 4,
     (B, PX, 15, False), GUARD_DECREMENT_BOTH,
     (OUT_APPLIED, 0, [(0, A_CANCEL, 10), (1, A_DECREMENT, 5)])),
]  # fmt: skip


def _book_with(makers):
    book = book_new(16, 4)
    for k, m in enumerate(makers):
        side, px, qty, cum, state = m[:5]
        ot, tif, inst = (list(m[5:]) + [OT_LIMIT, TIF_DAY, 1][len(m) - 5 :])[:3]
        s = book_add(
            book,
            open_order(
                client_order_id=100 + k, risk_client_order_id=100 + k, order_id=k + 1,
                instrument=inst, side=side, price=px, qty=qty, cum_qty=cum,
                leaves_qty=qty - cum, strategy=1, order_type=ot, tif=tif, state=state,
            ),
        )  # fmt: skip
        assert s == k
    return book


@pytest.mark.parametrize(
    "name,makers,incoming,policy,want", STP_CASES, ids=[c[0] for c in STP_CASES]
)
def test_guard_plan(name, makers, incoming, policy, want):
    book = _book_with(makers)
    side, px, qty, market = incoming
    r = np.zeros(1, ORDER)[0]
    r["instrument"], r["side"], r["limit_price"], r["qty"] = 1, side, px, qty
    r["order_type"] = OT_MARKET if market else OT_LIMIT
    cap = 3
    mk, act, amt = np.zeros(cap, np.int64), np.zeros(cap, np.int8), np.zeros(cap, np.int64)
    n, after, outcome = guard_plan(book, S.TABLE, r, policy, (mk, act, amt))
    got = [(int(mk[k]), int(act[k]), int(amt[k])) for k in range(n)]
    assert (outcome, after, got) == want


def test_book_lists_are_in_matching_priority():
    book = _book_with([(SL, PX + 100, 1, 0, ACK), (SL, PX, 1, 0, ACK), (SL, PX + 100, 1, 0, ACK),
                       (B, PX - 100, 1, 0, ACK), (B, PX - 50, 1, 0, ACK), (B, PX - 100, 1, 0, ACK)])  # fmt: skip
    assert book_list(book, 1, SL) == [1, 0, 2]
    assert book_list(book, 1, B) == [4, 3, 5]


def test_parse_policy_names():
    assert parse_guard_policy("CancelNew") == GUARD_CANCEL_NEW
    assert parse_guard_policy("cancel_resting") == GUARD_CANCEL_RESTING
    assert parse_guard_policy("cancel-both") == GUARD_CANCEL_BOTH
    assert parse_guard_policy("DecrementBoth") == GUARD_DECREMENT_BOTH
    assert parse_guard_policy("decrement") == GUARD_DECREMENT_BOTH
    with pytest.raises(ValueError):
        parse_guard_policy("cancel_oldest")


# --- the stage, driven as the loop drives it ----------------------------------------------------
def make_stage(outputs: int = 4, **params) -> OrdersStage:
    base = dict(max_open_orders=64, max_instrument=15, seen_capacity=256, exec_capacity=256)
    base.update(params)
    spec = StageSpec(name="orders", kind="orders", core=0, index=0, params=base)
    ins = [
        RingSpec("orders", "risk", "orders", "ORDER", 64, 2, 0, False),
        RingSpec("venue_execs", "venue", "orders", "EXEC_REPORT", 64, 2, 0, True),
    ]
    outs = [
        RingSpec("venue_orders", "orders", "venue", "ORDER", 64, 2, 0, False),
        RingSpec("fills", "orders", "risk", "EXEC_REPORT", 64, 2, 0, True),
        RingSpec("order_events", "orders", "persistence", "ORDER", 64, 2, 0, False),
        RingSpec("exec_events", "orders", "persistence", "EXEC_REPORT", 64, 2, 0, False),
    ][:outputs]
    assert (
        OrdersStage.check_arity(2, outputs, [r.type for r in ins], [r.type for r in outs]) is None
    )
    st = OrdersStage(spec, ins, outs, "test")
    st.setup()
    return st


_risk_seq = [0]


def order(cl, side=B, qty=100, px=PX, inst=1, strategy=1, action=ACTION_NEW, orig=0,
          ot=OT_LIMIT, tif=TIF_DAY) -> np.ndarray:  # fmt: skip
    """An ORDER as risk sends it."""
    _risk_seq[0] += 1
    r = np.zeros(1, ORDER)
    r["seq"] = _risk_seq[0]
    r["ts_event_ns"] = 11
    r["ts_recv_ns"] = 22
    r["ts_signal_ns"] = 33
    r["ts_risk_ns"] = 44
    r["client_order_id"] = cl
    r["orig_client_order_id"] = orig
    r["qty"] = qty
    r["limit_price"] = 0 if ot == OT_MARKET else px
    r["instrument"] = inst
    r["strategy"] = strategy
    r["side"] = side
    r["order_type"] = ot
    r["tif"] = tif
    r["action"] = action
    return r


class FakeVenue:
    """An in-process venue: acknowledges, cancels, replaces, answers queries and CANCEL_ALL
    at once; fills when told. Echoes our order_id; exec ids are monotonic."""

    def __init__(self) -> None:
        self.orders: dict[int, dict] = {}
        self.out: list[np.ndarray] = []
        self.exec_id = 0
        self.answer_queries = True
        self.received: list[np.ndarray] = []

    def report(self, o, et, status, last_qty=0, last_px=0, reason=0, cl=None):
        self.exec_id += 1
        e = np.zeros(1, EXEC_REPORT)
        e["seq"] = self.exec_id
        e["ts_venue_ns"] = time.monotonic_ns()
        e["exec_id"] = self.exec_id
        e["client_order_id"] = o["cl"] if cl is None else cl
        e["order_id"] = o.get("oid", 0)
        e["last_qty"] = last_qty
        e["last_price"] = last_px
        e["cum_qty"] = o.get("cum", 0)
        e["leaves_qty"] = o.get("leaves", 0)
        e["instrument"] = o.get("inst", 0)
        e["strategy"] = o.get("strategy", 0)
        e["side"] = o.get("side", 0)
        e["exec_type"] = et
        e["status"] = status
        e["reason"] = reason
        self.out.append(e)
        return e

    def on_order(self, rec) -> None:
        self.received.append(rec.copy())
        a = int(rec["action"])
        cl, orig = int(rec["client_order_id"]), int(rec["orig_client_order_id"])
        if a == ACTION_NEW:
            o = dict(cl=cl, oid=int(rec["order_id"]), inst=int(rec["instrument"]),
                     side=int(rec["side"]), qty=int(rec["qty"]), px=int(rec["limit_price"]),
                     strategy=int(rec["strategy"]), cum=0, leaves=int(rec["qty"]),
                     status=OS_NEW)  # fmt: skip
            self.orders[cl] = o
            self.report(o, EXEC_ACK, OS_NEW)
        elif a in (ACTION_CANCEL, ACTION_REPLACE):
            o = self.orders.get(orig)
            if o is None or o["status"] not in (OS_NEW, OS_PARTIALLY_FILLED):
                self.report(o or {"cl": orig}, EXEC_CANCEL_REJECTED, o["status"] if o else 0,
                            reason=Code.TOO_LATE_TO_CANCEL, cl=cl)  # fmt: skip
            elif a == ACTION_CANCEL:
                o.update(leaves=0, status=OS_CANCELLED)
                self.report(o, EXEC_CANCELLED, OS_CANCELLED)
            else:
                o.update(cl=cl, qty=int(rec["qty"]), leaves=int(rec["qty"]) - o["cum"])
                self.orders[cl] = o
                self.report(o, EXEC_REPLACED, o["status"])
        elif a == ACTION_QUERY:
            if not self.answer_queries:
                return
            o = self.orders.get(cl)
            if o is None:
                self.report({"cl": cl}, EXEC_STATUS, OS_NONE, reason=Code.UNKNOWN_ORDER)
            else:
                self.report(o, EXEC_STATUS, o["status"])
        elif a == ACTION_CANCEL_ALL:
            inst = int(rec["instrument"])
            for o in list(self.orders.values()):
                live = o["status"] in (OS_NEW, OS_PARTIALLY_FILLED)
                if live and o["cl"] in self.orders and (inst == 0 or o["inst"] == inst):
                    o.update(leaves=0, status=OS_CANCELLED)
                    self.report(o, EXEC_CANCELLED, OS_CANCELLED)

    def fill(self, cl, qty, px=None):
        o = self.orders[cl]
        o["cum"] += qty
        o["leaves"] -= qty
        o["status"] = OS_FILLED if o["leaves"] == 0 else OS_PARTIALLY_FILLED
        et = EXEC_FILL if o["leaves"] == 0 else EXEC_PARTIAL_FILL
        return self.report(o, et, o["status"], qty, o["px"] if px is None else px)

    def take(self) -> list[np.ndarray]:
        out, self.out = self.out, []
        return out


def _cat(parts, dtype):
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


class Driver:
    """Does what the stage loop does with the orders stage, in process: per step, first the
    unprompted records (``pending``/``emit``), then each input whose ``input_ready`` allows,
    in batches of ``batch``; outputs sized ``len(batch) * max_out_per_in``. Venue messages
    go to the fake venue, whose reports queue up on input 1."""

    def __init__(self, stage: OrdersStage, venue: FakeVenue | None = None, batch=16, room=4):
        self.st, self.venue, self.batch, self.room = stage, venue, batch, room
        self.seq = 1
        self.q: list[list[np.ndarray]] = [[], []]
        self.out: list[list[np.ndarray]] = [[] for _ in stage.outputs]
        self.dtypes = [RECORD_TYPES[r.type] for r in stage.outputs]

    def _collect(self, views, counts):
        got = [v[: int(c)].copy() for v, c in zip(views, counts, strict=False)]
        for j, g in enumerate(got):
            self.out[j].append(g)
        if self.venue is not None:
            for rec in got[0]:
                self.venue.on_order(rec)
            self.q[1].extend(self.venue.take())
        return got

    def process(self, i, batch):
        n = len(batch) * self.st.max_out_per_in
        views = [np.zeros(n, dt) for dt in self.dtypes]
        counts = np.zeros(len(views), np.int64)
        self.seq = self.st.process(i, batch, views, counts, self.seq)
        return self._collect(views, counts)

    def emit(self):
        views = [np.zeros(self.room, dt) for dt in self.dtypes]
        counts = np.zeros(len(views), np.int64)
        self.seq = self.st.emit(views, counts, self.seq)
        return self._collect(views, counts)

    def step(self) -> int:
        now = self.st.clock()  # the stage's clock: the loop passes the same instant
        did = 0
        if self.venue is not None:
            self.q[1].extend(self.venue.take())
        if self.st.pending(now):
            self.emit()
            did += 1
        for i, dt in ((0, ORDER), (1, EXEC_REPORT)):
            if self.q[i] and self.st.input_ready(i, now):
                b = _cat(self.q[i][: self.batch], dt)
                del self.q[i][: self.batch]
                self.process(i, b)
                did += 1
        return did

    def run(self, max_steps=50) -> None:
        for _ in range(max_steps):
            if not self.step():
                return

    def send(self, *recs) -> None:
        self.q[0].extend(recs)

    def drain(self) -> None:
        """The shutdown policy as the loop runs it: on_drain, then emit until done."""
        self.st.on_drain()
        while self.st.pending(self.st.clock()):
            self.emit()

    def all(self, j):
        return _cat(self.out[j], self.dtypes[j])


def _state(stage, cl):
    s = book_find(stage.oms.book, np.uint64(cl))
    if s >= 0:
        return int(stage.oms.book.slots["state"][s])
    found, v = lru_peek(stage.oms.seen, np.uint64(cl))
    return int(v) if found else -1


# --- 4. end to end ----------------------------------------------------------------------------
def test_new_ack_partial_fill_end_to_end():
    st, v = make_stage(), FakeVenue()
    d = Driver(st, v)
    cl = cid(1, 7)
    r = order(cl, qty=100)
    d.send(r)
    d.run()
    vo = d.all(0)
    assert len(vo) == 1 and vo[0]["action"] == ACTION_NEW and vo[0]["order_id"] == 1
    assert vo[0]["client_order_id"] == cl and vo[0]["qty"] == 100
    assert vo[0]["parent_seq"] == r["seq"][0] and vo[0]["ts_order_ns"] > 0
    assert (vo[0]["ts_event_ns"], vo[0]["ts_risk_ns"]) == (11, 44)
    assert _state(st, cl) == S.ST_ACKNOWLEDGED
    assert len(d.all(1)) == 0  # an ack changes neither position nor open quantity
    v.fill(cl, 40)
    d.run()
    assert _state(st, cl) == S.ST_PARTIALLY_FILLED
    v.fill(cl, 60)
    d.run()
    fills = d.all(1)
    assert [(f["exec_type"], f["last_qty"], f["cum_qty"], f["leaves_qty"]) for f in fills] == [
        (EXEC_PARTIAL_FILL, 40, 40, 60),
        (EXEC_FILL, 60, 100, 0),
    ]
    assert all(f["client_order_id"] == cl and f["order_id"] == 1 for f in fills)
    assert _state(st, cl) == S.ST_FILLED and st.oms.book.meta[2] == 0
    # persistence gets what was sent and everything received; copies share seq
    assert np.array_equal(d.all(2), vo)
    ev = d.all(3)
    assert list(ev["exec_type"]) == [EXEC_ACK, EXEC_PARTIAL_FILL, EXEC_FILL]
    assert list(ev["seq"][1:]) == list(fills["seq"])
    seqs = list(vo["seq"]) + list(ev["seq"])
    assert len(set(seqs)) == len(seqs) and d.seq == max(seqs) + 1
    c = st.summary()["counters"]
    assert (c["new_sent"], c["forwarded_to_risk"], c["illegal_transitions"]) == (1, 2, 0)


def test_two_outputs_only_and_warm_style_zero_records():
    st = make_stage(outputs=2)
    d = Driver(st, FakeVenue())
    d.send(order(cid(1, 1)))
    d.run()
    assert len(d.all(0)) == 1
    # bot4 warm feeds zeroed records: ignored and counted, nothing written
    zo, ze = np.zeros(2, ORDER), np.zeros(2, EXEC_REPORT)
    assert [len(x) for x in d.process(0, zo)] == [0, 0]
    assert [len(x) for x in d.process(1, ze)] == [0, 0]
    c = st.summary()["counters"]
    assert (c["bad_actions"], c["bad_execs"]) == (2, 2)


def test_duplicate_intent_never_yields_a_second_venue_order():
    st, v = make_stage(), FakeVenue()
    d = Driver(st, v)
    cl = cid(3, 9)
    d.send(order(cl), order(cl))  # same batch
    d.run()
    d.send(order(cl, qty=5))  # later, while the first is open
    d.run()
    v.fill(cl, 100)
    d.run()
    d.send(order(cl))  # after it closed
    d.run()
    news = [r for r in d.all(0) if r["action"] == ACTION_NEW]
    assert len(news) == 1 and len(v.orders) == 1
    dups = [f for f in d.all(1) if f["reason"] == Code.DUPLICATE_ORDER]
    assert len(dups) == 3
    assert all(f["exec_type"] == EXEC_REJECTED and f["order_id"] == 0 for f in dups)
    assert all(f["client_order_id"] == cl for f in dups)
    assert st.summary()["counters"]["duplicate_intents"] == 3
    assert _state(st, cl) == S.ST_FILLED  # the original is untouched


def test_duplicate_exec_id_dropped_and_counted():
    st, v = make_stage(), FakeVenue()
    d = Driver(st, v)
    cl = cid(1, 1)
    d.send(order(cl, qty=100))
    d.run()
    f = v.fill(cl, 30)  # queued by the venue
    d.q[1].extend(v.take() + [f.copy()])  # and once more in the same batch
    d.run()
    d.q[1].append(f.copy())  # again, in a later batch
    d.run()
    fills = d.all(1)
    assert len(fills) == 1 and fills[0]["last_qty"] == 30
    assert len(d.all(3)) == 2  # ack + the one fill
    c = st.summary()["counters"]
    assert c["duplicate_execs"] == 2 and c["illegal_transitions"] == 0
    assert int(st.oms.book.slots["cum_qty"][book_find(st.oms.book, np.uint64(cl))]) == 30


def test_reused_exec_id_with_other_content_is_a_conflict_processed_never_dropped():
    st, v = make_stage(), FakeVenue()
    d = Driver(st, v)
    a, b = cid(1, 1), cid(1, 2)
    d.send(order(a, qty=100), order(b, qty=100, inst=2))
    d.run()
    first = v.fill(a, 30)
    d.run()
    reused = v.fill(b, 40)  # a restarted venue numbering from where it began: same exec id
    reused["exec_id"] = first["exec_id"]
    d.run()
    assert [int(f["last_qty"]) for f in d.all(1)] == [30, 40]  # both fills reach risk
    assert [int(f["last_qty"]) for f in d.all(3) if f["last_qty"]] == [30, 40]  # and journal
    c = st.summary()["counters"]
    assert (c["exec_id_conflicts"], c["duplicate_execs"]) == (1, 0)
    assert st.summary()["alarms"] == 1
    assert int(st.oms.book.slots["cum_qty"][book_find(st.oms.book, np.uint64(b))]) == 40
    d.q[1].extend([reused.copy(), first.copy()])  # each delivered again: repeats, not news
    d.run()
    c = st.summary()["counters"]
    assert (c["exec_id_conflicts"], c["duplicate_execs"]) == (1, 2)
    assert len(d.all(1)) == 2 and st.summary()["alarms"] == 1


def test_order_ids_monotonic_and_continue_above_seen():
    st, v = make_stage(first_order_id=10), FakeVenue()
    d = Driver(st, v)
    d.send(order(cid(1, 1)), order(cid(1, 2)))
    d.run()
    assert list(d.all(0)["order_id"]) == [10, 11]
    stray = v.report({"cl": cid(9, 9), "oid": 500}, EXEC_CANCELLED, OS_CANCELLED)
    d.run()
    d.send(order(cid(1, 3)))
    d.run()
    assert d.all(0)["order_id"][-1] == 501
    assert st.summary()["counters"]["unknown_order"] == 1
    # an unknown order's cancel still reaches risk (it may know the order)
    assert d.all(1)["exec_id"][-1] == stray["exec_id"][0]


def test_illegal_event_refused_counted_but_fill_still_forwarded():
    st, v = make_stage(), FakeVenue()
    d = Driver(st, v)
    cl = cid(1, 1)
    d.send(order(cl, qty=10))
    d.run()
    ack2 = v.report(v.orders[cl], EXEC_ACK, OS_NEW)  # a second ack: illegal in ACKNOWLEDGED
    v.fill(cl, 10)
    d.run()
    v.report(v.orders[cl], EXEC_PARTIAL_FILL, OS_PARTIALLY_FILLED, 3, PX)  # after FILLED
    d.run()
    s = st.summary()
    assert s["illegal"] == {"ACK": 1, "PARTIAL_FILL": 1}
    assert s["counters"]["illegal_transitions"] == 2
    assert [int(f["last_qty"]) for f in d.all(1)] == [10, 3]  # the venue's fills are the position
    assert ack2["exec_id"][0] in d.all(3)["exec_id"]


def test_risk_cancel_and_kill_switch_cancel_all():
    st, v = make_stage(), FakeVenue()
    d = Driver(st, v)
    a, b, c = cid(1, 1), cid(1, 2), cid(1, 3)
    d.send(order(a), order(b, side=SL, px=PX + 500), order(c, inst=2))
    d.run()
    d.send(order(0, action=ACTION_CANCEL, orig=a))
    d.run()
    assert _state(st, a) == S.ST_CANCELLED
    d.send(order(0, action=ACTION_CANCEL_ALL, inst=1))
    d.run()
    vo = d.all(0)
    assert [int(x) for x in vo["action"]] == [ACTION_NEW] * 3 + [ACTION_CANCEL, ACTION_CANCEL_ALL]
    assert vo[3]["orig_client_order_id"] == a and vo[3]["order_id"] == 1
    assert vo[4]["instrument"] == 1
    assert _state(st, b) == S.ST_CANCELLED and _state(st, c) == S.ST_ACKNOWLEDGED
    assert [int(f["client_order_id"]) for f in d.all(1)] == [a, b]
    # a cancel of what is already closed is refused and counted, not sent
    d.send(order(0, action=ACTION_CANCEL, orig=c), order(0, action=ACTION_CANCEL, orig=c))
    d.run()
    assert st.summary()["illegal"] == {"CANCEL_REQUEST": 1}
    assert st.summary()["counters"]["cancel_all_marked"] == 1


def test_cancel_all_on_drain():
    st, v = make_stage(), FakeVenue()
    d = Driver(st, v)
    cls = [cid(1, k) for k in range(1, 4)]
    d.send(*[order(x, inst=1 + k % 2) for k, x in enumerate(cls)])
    d.run()
    v.fill(cls[0], 30)
    d.run()
    assert st.oms.book.meta[2] == 3 and st.pending(0) == 0
    d.drain()
    last = d.all(0)[-1]
    assert last["action"] == ACTION_CANCEL_ALL and last["instrument"] == 0
    assert np.array_equal(d.all(2)[-1:], d.all(0)[-1:])
    assert {_state(st, x) for x in cls} == {S.ST_CANCEL_PENDING, S.ST_CANCEL_PENDING_PARTIAL}
    d.run()  # the venue's answers (the next OMS would read them)
    assert {_state(st, x) for x in cls} == {S.ST_CANCELLED}
    assert st.oms.book.meta[2] == 0
    cancels = [f for f in d.all(1) if f["exec_type"] == EXEC_CANCELLED]
    assert sorted(int(f["client_order_id"]) for f in cancels) == cls


# --- 5. self-trade prevention through the stage: the client-side guard (stp = "client") ----
STAGE_STP = [
    # policy, maker qty, taker qty -> venue messages after the taker, reports to risk
    ("cancel_new", 50, 30, [], [(EXEC_EXPIRED, "t", 0)]),
    ("cancel_resting", 50, 30, [(ACTION_CANCEL, "m", 50), (ACTION_NEW, "t", 30)], []),
    ("cancel_both", 50, 30, [(ACTION_CANCEL, "m", 50)], [(EXEC_EXPIRED, "t", 0)]),
    ("decrement_both", 50, 30, [(ACTION_REPLACE, "a", 20)], [(EXEC_EXPIRED, "t", 0)]),
    ("decrement_both", 30, 50, [(ACTION_CANCEL, "m", 30), (ACTION_NEW, "t", 20)],
     [(EXEC_REPLACED, "t", 20)]),
    ("decrement_both", 30, 30, [(ACTION_CANCEL, "m", 30)], [(EXEC_EXPIRED, "t", 0)]),
]  # fmt: skip


@pytest.mark.parametrize("policy,mq,tq,want_venue,want_risk", STAGE_STP)
def test_stp_through_the_stage(policy, mq, tq, want_venue, want_risk):
    st, v = make_stage(stp="client", stp_by_strategy={"2": policy}), FakeVenue()
    d = Driver(st, v)
    maker, taker = cid(1, 1), cid(2, 1)
    d.send(order(maker, side=SL, qty=mq, strategy=1))
    d.run()
    n0, n3 = len(d.all(0)), len(d.all(3))
    d.process(0, order(taker, side=B, qty=tq, px=PX + 100, strategy=2))
    vo = d.all(0)[n0:]
    alias = [int(r["client_order_id"]) for r in vo if r["action"] == ACTION_REPLACE]
    ids = {"m": maker, "t": taker, "a": alias[0] if alias else -1}
    assert [(int(r["action"]), int(r["client_order_id"]), int(r["qty"])) for r in vo] == [
        (a, ids[w], q) for a, w, q in want_venue
    ]
    for r in vo:
        if r["action"] in (ACTION_CANCEL, ACTION_REPLACE):
            assert r["orig_client_order_id"] == maker and r["order_id"] == 1
    rk = d.all(1)
    assert [(int(f["exec_type"]), int(f["client_order_id"]), int(f["leaves_qty"])) for f in rk] == [
        (e, ids[w], q) for e, w, q in want_risk
    ]
    assert all(f["reason"] == Code.SELF_TRADE and f["order_id"] == 2 for f in rk)
    assert np.array_equal(d.all(3)[n3:], rk)
    if alias:
        assert alias[0] >> 48 == OMS_PRODUCER
    # the venue's answers settle the maker
    d.run()
    if policy == "decrement_both" and mq > tq:
        assert _state(st, alias[0]) == S.ST_ACKNOWLEDGED
        s = book_find(st.oms.book, np.uint64(alias[0]))
        assert int(st.oms.book.slots["leaves_qty"][s]) == mq - tq
        assert book_find(st.oms.book, np.uint64(maker)) == -1  # known by the new id only
        risk_side = d.all(1)[-1]  # the venue's REPLACED reaches risk under risk's id
        assert (risk_side["exec_type"], risk_side["client_order_id"]) == (EXEC_REPLACED, maker)
    elif any(a == ACTION_CANCEL for a, _, _ in want_venue):
        assert _state(st, maker) == S.ST_CANCELLED
    else:
        assert _state(st, maker) == S.ST_ACKNOWLEDGED


def test_stp_guard_default_policy_is_cancel_new_and_fallback_counts():
    st, v = make_stage(stp="client", stp_by_strategy={"2": "decrement"}), FakeVenue()
    d = Driver(st, v)
    d.send(order(cid(1, 1), side=SL, qty=50))
    d.run()
    d.send(order(cid(1, 2), side=B, qty=10, strategy=1))  # strategy 1: default CancelNew
    d.run()
    assert st.summary()["counters"]["guard_expired_incoming"] == 1
    d.process(0, order(cid(1, 3), side=SL, qty=50, px=PX + 100))  # a second maker, not acked
    d.process(0, order(cid(2, 1), side=B, qty=60, px=PX + 100, strategy=2))
    c = st.summary()["counters"]
    assert c["guard_fallbacks"] == 1 and c["guard_expired_incoming"] == 2
    assert st.summary()["stp"] == "client"
    assert st.summary()["stp_mode"] == "venue_default"  # = CancelNew for the guard


# --- 6. the OMS against its table: random event sequences -------------------------------------
EXEC_EVENTS = {
    EXEC_ACK: S.EV_ACK, EXEC_PARTIAL_FILL: S.EV_PARTIAL_FILL, EXEC_FILL: S.EV_FILL,
    EXEC_CANCELLED: S.EV_CANCELLED, EXEC_REJECTED: S.EV_REJECT, EXEC_EXPIRED: S.EV_EXPIRE,
    EXEC_CANCEL_REJECTED: S.EV_CANCEL_REJECTED, EXEC_REPLACED: S.EV_REPLACED,
    EXEC_STP_EXPIRED: S.EV_EXPIRE, EXEC_STP_DECREMENTED: S.EV_STP_DECREMENT,
}  # fmt: skip
CHANGES_OPEN = {EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_CANCELLED, EXEC_REJECTED, EXEC_EXPIRED,
                EXEC_REPLACED, EXEC_STP_EXPIRED, EXEC_STP_DECREMENTED}  # fmt: skip
# venue events weighted up: requests push most orders into a pending state quickly
STEP = hs.sampled_from(
    [("exec", et) for et in sorted(EXEC_EVENTS)] * 3
    + [("exec", EXEC_ACK)] * 3
    + [("cancel",), ("cancel_all",), ("stp",), ("stp",), ("stp",), ("dup",)]
)


@settings(max_examples=400, deadline=None)
@given(steps=hs.lists(STEP, max_size=30))
def test_oms_follows_its_table(steps):
    st = make_stage(stp="client", stp_by_strategy={"2": "decrement_both"})
    d = Driver(st)
    x = cid(1, 1)
    d.process(0, order(x, side=B, qty=1000))
    T = S.TABLE
    m = int(T[S.ST_NEW, S.EV_SEND])
    cur, alias, leaves, cum = x, 0, 1000, 0
    illegal = np.zeros(S.N_EVENTS, np.int64)
    exec_id, last, n_taker, unknown = 0, None, 0, 0
    for step in steps:
        closed = bool(S.IS_TERMINAL[m])
        n_fills = len(d.all(1))
        n_venue = len(d.all(0))
        if step[0] in ("exec", "dup"):
            if step[0] == "dup":
                if last is None:
                    continue
                rep = last.copy()
                d.process(1, rep)
                assert len(d.all(1)) == n_fills  # dropped
                continue
            et = step[1]
            ev = EXEC_EVENTS[et]
            exec_id += 1
            rep = np.zeros(1, EXEC_REPORT)
            rep["seq"] = rep["exec_id"] = exec_id
            rep["client_order_id"] = alias if (et == EXEC_REPLACED and alias) else cur
            rep["order_id"] = 1
            rep["instrument"], rep["side"], rep["exec_type"] = 1, B, et
            lq, c2, l2 = 0, cum, leaves
            if et == EXEC_PARTIAL_FILL:
                lq, c2, l2 = 1, cum + 1, leaves - 1
            elif et == EXEC_FILL:
                lq, c2, l2 = leaves, cum + leaves, 0
            elif et in (EXEC_REPLACED, EXEC_STP_DECREMENTED):
                l2 = leaves - 1
            rep["last_qty"], rep["cum_qty"], rep["leaves_qty"] = lq, c2, l2
            last = rep
            d.process(1, rep)
            nxt = int(T[m, ev])
            if nxt < 0:
                illegal[ev] += 1
                fwd = lq > 0
            else:
                fwd = (et in CHANGES_OPEN) and not closed
                if not closed:
                    m = nxt
                    if et in (EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_REPLACED, EXEC_STP_DECREMENTED):
                        cum, leaves = c2, l2
                    if et == EXEC_REPLACED:
                        cur, alias = alias, 0
                    if et == EXEC_CANCEL_REJECTED:
                        alias = 0
            assert len(d.all(1)) == n_fills + fwd, (step, S.STATE_NAMES[m])
        elif step[0] == "cancel":
            d.process(0, order(0, action=ACTION_CANCEL, orig=cur))
            sent = not closed and T[m, S.EV_CANCEL_REQUEST] >= 0
            if closed:
                unknown += 1
            elif not sent:
                illegal[S.EV_CANCEL_REQUEST] += 1
            else:
                m = int(T[m, S.EV_CANCEL_REQUEST])
            assert len(d.all(0)) == n_venue + sent
            if sent:
                assert d.all(0)[-1]["action"] == ACTION_CANCEL
        elif step[0] == "cancel_all":
            d.process(0, order(0, action=ACTION_CANCEL_ALL))
            if not closed and T[m, S.EV_CANCEL_REQUEST] >= 0:
                m = int(T[m, S.EV_CANCEL_REQUEST])
        else:  # an incoming sell of 1 from a DecrementBoth strategy crosses x
            n_taker += 1
            d.process(0, order(cid(2, n_taker), side=SL, qty=1, strategy=2))
            vo = d.all(0)[n_venue:]
            pending_cancel = m in (S.ST_CANCEL_PENDING, S.ST_CANCEL_PENDING_PARTIAL)
            if closed or pending_cancel:
                assert [int(r["action"]) for r in vo] == [ACTION_NEW]  # nothing to cross
            else:
                ev = S.EV_CANCEL_REQUEST if leaves == 1 else S.EV_REPLACE_REQUEST
                if T[m, ev] < 0:
                    assert len(vo) == 0  # fallback: the taker expires, x untouched
                else:
                    m = int(T[m, ev])
                    assert len(vo) == 1
                    if ev == S.EV_REPLACE_REQUEST:
                        assert (
                            vo[0]["action"] == ACTION_REPLACE and vo[0]["qty"] == cum + leaves - 1
                        )
                        alias = int(vo[0]["client_order_id"])
            if S.IS_TERMINAL[m]:
                alias = 0
        assert _state(st, cur) == m, (step, S.STATE_NAMES[_state(st, cur)], S.STATE_NAMES[m])
        event(f"reached {S.STATE_NAMES[m]}")
        assert np.array_equal(st.oms.illegal, illegal), step
    assert st.summary()["counters"]["unknown_order"] == unknown


# --- 7. restart reconciliation --------------------------------------------------------------
def _session_with_open_orders(v):
    """A first OMS that leaves two open orders (one part filled); its snapshot."""
    st = make_stage()
    d = Driver(st, v)
    a, b = cid(1, 1), cid(1, 2)
    d.send(order(a, qty=100), order(b, side=SL, px=PX + 500, qty=50, inst=2))
    d.run()
    v.fill(a, 40)
    d.run()
    return st.open_orders(), int(st.oms.ids[O.I_NEXT_ORDER_ID]), (a, b)


def test_reconciliation_holds_intents_until_every_status_is_back():
    v = FakeVenue()
    snap, next_id, (a, b) = _session_with_open_orders(v)
    assert len(snap) == 2
    st = make_stage()
    d = Driver(st, v, room=1)  # one query per emit: the hold spans several steps
    assert st.restore_open_orders(snap, next_id) == 2 and st.reconciling
    new = order(cid(1, 3), qty=5)
    d.send(new)
    d.step()
    assert d.q[0] and st.reconciling  # held in its ring
    assert [int(r["action"]) for r in d.all(0)] == [ACTION_QUERY]
    d.run()
    vo = d.all(0)
    assert [int(r["action"]) for r in vo] == [ACTION_QUERY, ACTION_QUERY, ACTION_NEW]
    assert [int(r["client_order_id"]) for r in vo[:2]] == [a, b]
    assert vo[2]["order_id"] == next_id  # continues above the snapshot
    assert not st.reconciling and not d.q[0]
    s = st.summary()
    assert s["needs_operator"] == {} and s["counters"]["reconcile_mismatches"] == 0
    assert s["counters"]["status_reports"] == 2 and s["counters"]["unheld_intents"] == 0
    assert len(d.all(1)) == 0  # status answers are not position changes
    v.fill(a, 60)  # the restored order lives on
    d.run()
    assert _state(st, a) == S.ST_FILLED and d.all(1)[-1]["cum_qty"] == 100


def test_reconciliation_mismatch_marks_instrument_for_an_operator():
    v = FakeVenue()
    snap, next_id, (a, b) = _session_with_open_orders(v)
    v.fill(a, 10)  # while no OMS ran: this report was lost with the old process
    v.orders[b].update(leaves=0, status=OS_CANCELLED)  # and b went away unreported
    v.take()
    st = make_stage()
    d = Driver(st, v)
    st.restore_open_orders(snap, next_id)
    d.send(order(cid(1, 3)))
    d.run()
    s = st.summary()
    # a's lost fill puts the position in doubt: an operator; b's unreported cancel does
    # not (nothing filled): adopted, and risk told (bot4.oms.reconcile)
    assert s["needs_operator"] == {1: 1}
    c = s["counters"]
    assert (c["reconcile_mismatches"], c["reconcile_adopted"]) == (1, 1) and not st.reconciling
    sl = st.oms.book.slots[book_find(st.oms.book, np.uint64(a))]
    assert (int(sl["cum_qty"]), int(sl["leaves_qty"])) == (50, 50)  # the venue's view
    assert _state(st, b) == S.ST_CANCELLED
    fixes = d.all(1)[d.all(1)["exec_type"] == EXEC_STATUS]
    assert [(int(f["client_order_id"]), int(f["status"]), int(f["leaves_qty"])) for f in fixes] == [
        (a, OS_PARTIALLY_FILLED, 50),
        (b, OS_CANCELLED, 0),
    ]
    assert (fixes["exec_id"] == 0).all() and (fixes["reason"] == Code.RECONCILE_MISMATCH).all()
    assert d.all(0)[-1]["action"] == ACTION_NEW


def test_reconciliation_timeout_releases_and_marks_unanswered():
    v = FakeVenue()
    snap, next_id, (a, b) = _session_with_open_orders(v)
    v.answer_queries = False
    st = make_stage(reconcile_timeout_ms=30)
    # a simulated clock: 30 ms of wall time can pass inside one d.run() on a loaded machine
    now = [time.monotonic_ns()]
    st.clock = lambda: now[0]
    words = np.zeros(1, np.uint64)  # no trading words: nothing may be halted anyway
    d = Driver(st, v)
    st.restore_open_orders(snap, next_id)
    d.send(order(cid(1, 3)))
    d.run(5)
    assert st.reconciling and d.q[0]  # held until the first timeout
    for _ in range(OR.RECON_ATTEMPTS - 1):
        now[0] += 40_000_000
        d.run(5)  # a timeout: intents flow again, the unanswered are asked again
        d.run(5)  # (the loop polls pending() every cycle; the driver stops at an idle step)
        assert st.reconciling and not d.q[0]
    queries = [r for r in d.all(0) if r["action"] == ACTION_QUERY]
    assert [int(r["client_order_id"]) for r in queries] == [a, b] * OR.RECON_ATTEMPTS
    assert ACTION_NEW in d.all(0)["action"] and st.summary()["counters"]["unheld_intents"] == 0
    now[0] += 40_000_000
    d.run()
    assert not st.reconciling
    s = st.summary()
    # silence is no disagreement: counted, nothing halted
    assert s["counters"]["reconcile_unanswered"] == 2 and s["needs_operator"] == {}
    assert not words.any()
    # a late answer is still judged: a's fill the venue has and we do not halts its instrument
    v.answer_queries = True
    v.fill(a, 10)
    v.take()
    d.q[1].append(v.report(v.orders[a], EXEC_STATUS, OS_PARTIALLY_FILLED))
    d.run()
    assert st.summary()["needs_operator"] == {1: 1}


def test_cold_restart_has_nothing_to_reconcile():
    st = make_stage()
    assert st.restore_open_orders(np.zeros(0, st.open_orders().dtype)) == 0
    assert not st.reconciling and st.pending(0) == 0 and st.input_ready(0, 0)


def test_intents_handed_in_while_reconciling_are_counted():
    v = FakeVenue()
    snap, next_id, _ = _session_with_open_orders(v)
    st = make_stage()
    st.restore_open_orders(snap, next_id)
    d = Driver(st, v)
    d.process(0, order(cid(1, 9)))  # a loop without input_ready
    assert st.summary()["counters"]["unheld_intents"] == 1


def test_restored_order_closing_before_its_query_is_not_queried():
    v = FakeVenue()
    snap, next_id, (a, b) = _session_with_open_orders(v)
    st = make_stage()
    d = Driver(st, v)
    st.restore_open_orders(snap, next_id)
    f = v.fill(a, 60)
    v.take()
    d.process(1, f)  # a's last fill was still unread in venue_execs
    assert _state(st, a) == S.ST_FILLED and d.all(1)[-1]["client_order_id"] == a
    d.send(order(cid(1, 3)))
    d.run()
    queries = [int(r["client_order_id"]) for r in d.all(0) if r["action"] == ACTION_QUERY]
    assert queries == [b]
    s = st.summary()
    assert not st.reconciling and s["needs_operator"] == {}
    assert s["counters"]["reconcile_outstanding"] == 0 and d.all(0)[-1]["action"] == ACTION_NEW


# -- restart from the journal (bot4.oms.recovery) -------------------------------------------


def _journal_outputs(d: Driver, path) -> None:
    """What persistence would journal of a driven stage: order_events and exec_events, in
    frames as the loop hands them over (one frame per batch)."""
    from bot4.journal import JournalWriter

    with JournalWriter(path, fsync="none") as w:
        for j in (2, 3):
            for chunk in d.out[j]:
                if len(chunk):
                    w.append(chunk)


def test_journal_replay_rebuilds_the_oms_book_it_came_from(tmp_path):
    from bot4.oms.recovery import rebuild_from_journal

    v = FakeVenue()
    st = make_stage()
    d = Driver(st, v)
    ids = [cid(1, k) for k in range(1, 6)]
    d.send(*(order(c, qty=100, inst=1 + k % 2) for k, c in enumerate(ids)))
    d.run()
    v.fill(ids[0], 40)  # partially filled, open
    v.fill(ids[1], 100)  # filled, closed
    d.run()
    d.send(order(cid(1, 6), action=ACTION_CANCEL, orig=ids[2]))  # cancelled, closed
    d.run()
    _journal_outputs(d, tmp_path / "j")
    rec = rebuild_from_journal(tmp_path / "j", 0)
    want = st.open_orders()
    assert (
        sorted(int(x) for x in rec.open_orders["client_order_id"])
        == sorted(int(x) for x in want["client_order_id"])
        == [ids[0], ids[3], ids[4]]
    )
    by_id = {int(r["client_order_id"]): r for r in rec.open_orders}
    for w in want:
        r = by_id[int(w["client_order_id"])]
        for f in (
            "order_id",
            "qty",
            "cum_qty",
            "leaves_qty",
            "price",
            "instrument",
            "side",
            "state",
        ):
            assert int(r[f]) == int(w[f]), f
    assert sorted(int(x) for x in rec.risk_ids) == ids
    assert rec.max_order_id == int(st.oms.ids[O.I_NEXT_ORDER_ID]) - 1
    assert rec.net_filled == {1: 40, 2: 100}
    venue_reports = d.all(3)[d.all(3)["exec_id"] != 0]
    assert rec.exec_ids.tolist() == venue_reports["exec_id"].tolist()
    assert rec.exec_contents.tolist() == exec_content_hashes(venue_reports).tolist()
    # the same journal read for another session holds nothing of it
    assert rebuild_from_journal(tmp_path / "j", 1).orders == 0


def test_a_restarted_oms_refuses_journalled_intents_and_reconciles_their_orders(tmp_path):
    from bot4.oms.recovery import rebuild_from_journal

    v = FakeVenue()
    st = make_stage(seen_capacity=2)  # the old ids left this LRU long ago
    d = Driver(st, v)
    ids = [cid(1, k) for k in range(1, 5)]
    d.send(*(order(c) for c in ids))
    d.run()
    _journal_outputs(d, tmp_path / "j")
    rec = rebuild_from_journal(tmp_path / "j", 0)
    st2 = make_stage()
    for c in rec.risk_ids:
        OR.lru_put(st2.oms.seen, np.uint64(c), 0)
    assert st2.restore_open_orders(rec.open_orders, rec.max_order_id + 1) == 4
    d2 = Driver(st2, v)
    d2.send(order(ids[0]), order(cid(1, 5)))  # a replayed intent, then a new one
    d2.run()
    vo = d2.all(0)
    assert [int(r["action"]) for r in vo] == [ACTION_QUERY] * 4 + [ACTION_NEW]
    assert int(vo[-1]["client_order_id"]) == cid(1, 5)  # only the new intent is sent
    dup = [r for r in d2.all(1) if int(r["reason"]) == Code.DUPLICATE_ORDER]
    assert [int(r["client_order_id"]) for r in dup] == [ids[0]]
    assert st2.summary()["needs_operator"] == {}


def test_a_restarted_oms_tells_journalled_repeats_from_reused_exec_ids(tmp_path):
    from bot4.oms.recovery import rebuild_from_journal

    v = FakeVenue()
    st = make_stage()
    d = Driver(st, v)
    a, b = cid(1, 1), cid(1, 2)
    d.send(order(a, qty=100), order(b, qty=100))
    d.run()
    first = v.fill(a, 30)
    d.run()
    _journal_outputs(d, tmp_path / "j")
    rec = rebuild_from_journal(tmp_path / "j", 0)
    st2 = make_stage()
    st2.restore_open_orders(rec.open_orders, rec.max_order_id + 1)
    st2.restore_exec_ids(rec.exec_ids, rec.exec_contents)
    d2 = Driver(st2, v)
    d2.run()  # queries answered
    before = len(d2.all(1))
    d2.q[1].append(first.copy())  # the old fill again: a repeat
    reused = v.fill(b, 40)
    reused["exec_id"] = first["exec_id"]  # a new fill under the old id: a conflict
    d2.run()
    c = st2.summary()["counters"]
    assert (c["duplicate_execs"], c["exec_id_conflicts"]) == (1, 1)
    assert [int(f["last_qty"]) for f in d2.all(1)[before:]] == [40]


def test_reconciliation_mismatch_halts_the_instrument_until_an_operator_acts():
    from bot4.shm.trading_state import (
        ACTIVE,
        HALTED,
        SRC_OMS,
        init_trading_state,
        state_word,
        trading_bytes,
    )

    v = FakeVenue()
    snap, next_id, (a, b) = _session_with_open_orders(v)
    v.fill(a, 10)  # lost with the old process: instrument 1 disagrees
    v.take()
    st = make_stage()
    words = np.zeros(trading_bytes(15) // 8, np.uint64)
    init_trading_state(words, 15, 0)
    st.trading = words
    d = Driver(st, v)
    st.restore_open_orders(snap, next_id)
    d.run()
    w1, w2 = int(state_word(words, 1)), int(state_word(words, 2))
    assert (w1 & 0xFF, (w1 >> 8) & 0xFFFF, (w1 >> 24) & 0xFF) == (
        HALTED,
        int(Code.RECONCILE_MISMATCH),
        SRC_OMS,
    )
    assert w2 & 0xFF == ACTIVE  # instrument 2 agreed: untouched
