"""Trade busts (issue 19): an OUCH Broken Trade becomes an EXEC_BROKEN report in
order_gateway (matched to its execution by match number, published once across restarts),
the OMS marks it without reopening the order, risk reverses the fill (live and in the
rebuild from the journal alike), and the database's positions, ledger and reconciliation
read it as the reversal of the fill it names."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bot4.db.positions import Position, apply_fill
from bot4.gateways import ouch
from bot4.records import (
    ACTION_NEW,
    BROKEN_EXEC_ID_BIT,
    EXEC_ACK,
    EXEC_BROKEN,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REPORT,
    MARKET_DATA,
    MD_TRADE,
    ORDER,
    OS_FILLED,
    OS_PARTIALLY_FILLED,
    OT_LIMIT,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
)
from bot4.stages.order_gateway import OrderGatewayStage

AMZN = 2
PX = 2_200_000


# --- order_gateway: Broken Trade -> EXEC_BROKEN ------------------------------------------------
def _gateway(instance: str) -> OrderGatewayStage:
    p = {"connect": "127.0.0.1:1", "throttle": 0}
    OrderGatewayStage.check_params(p)
    gw = OrderGatewayStage(SimpleNamespace(name="order_gateway", params=p),
                           [SimpleNamespace(type="ORDER")],
                           [SimpleNamespace(type="EXEC_REPORT")], instance)  # fmt: skip
    gw.session = 3
    gw.setup()
    return gw


def _order(coid: int, side: int, qty: int) -> np.ndarray:
    r = np.zeros(1, ORDER)
    r["seq"], r["action"], r["client_order_id"], r["order_id"] = coid, ACTION_NEW, coid, coid
    r["side"], r["qty"], r["limit_price"], r["tif"] = side, qty, PX, TIF_DAY
    r["instrument"], r["order_type"], r["strategy"] = AMZN, OT_LIMIT, 5
    return r


def _session_messages() -> list[bytes]:
    """Sequenced OUCH messages of one day: order 95 accepted, filled 40 + 60 (matches 7, 8),
    then match 7 broken, an unknown match broken, and match 7 broken again."""
    tok = ouch.token_of(95)
    acc = ouch.message(ouch.ACCEPTED, type=b"A", token=tok, side=b"B", shares=100,
                       stock=b"AMZN", price=PX, order_state=b"L")  # fmt: skip
    e1 = ouch.message(ouch.EXECUTED, type=b"E", token=tok, shares=40, price=PX, match=7)
    e2 = ouch.message(ouch.EXECUTED, type=b"E", token=tok, shares=60, price=PX + 100, match=8)
    b7 = ouch.message(ouch.BROKEN_TRADE, type=b"B", token=tok, match=7, reason=b"E")
    b9 = ouch.message(ouch.BROKEN_TRADE, type=b"B", token=tok, match=9, reason=b"C")
    return [acc, e1, e2, b7, b9, b7]


def _run(gw: OrderGatewayStage, published_seq: int) -> np.ndarray:
    gw.published_seq = published_seq
    for m in _session_messages():
        gw._sequenced(m)
    return gw.outq[: gw.out_n].copy()


def test_broken_trade_becomes_one_exec_broken_for_the_execution_of_its_match_number():
    gw = _gateway("bust-gw")
    gw._remember(_order(95, SIDE_BUY, 100)[0])
    out = _run(gw, 0)
    assert out["exec_type"].tolist() == [EXEC_ACK, EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_BROKEN]
    b = out[-1]
    assert int(b["exec_id"]) == BROKEN_EXEC_ID_BIT | 7  # the broken execution, readable
    # the broken fill's quantity, price, side and order; the order not reopened
    assert (int(b["last_qty"]), int(b["last_price"]), int(b["side"])) == (40, PX, SIDE_BUY)
    assert (int(b["client_order_id"]), int(b["strategy"]), int(b["instrument"])) == (95, 5, AMZN)
    assert (int(b["cum_qty"]), int(b["leaves_qty"]), int(b["status"])) == (100, 0, OS_FILLED)
    assert int(b["parent_seq"]) == 4
    s = gw.summary()
    assert (s["broken_trades"], s["unknown_busts"], s["repeated_busts"]) == (1, 1, 1)


def test_a_restarted_gateway_publishes_the_bust_once():
    """A restart replays the session from sequence 1 and publishes what comes after the
    last report on its output ring: the bust if the kill came before it, nothing if after."""
    for last, want in ((3, [EXEC_BROKEN]), (4, []), (6, [])):
        gw = _gateway(f"bust-restart-{last}")
        gw._remember(_order(95, SIDE_BUY, 100)[0])
        out = _run(gw, last)
        assert out["exec_type"].tolist() == want, last
        if want:
            assert int(out[0]["exec_id"]) == BROKEN_EXEC_ID_BIT | 7
        assert gw.summary()["broken_trades"] == 1  # matched during the replay all the same


# --- the OMS: counted, forwarded, the order not reopened ----------------------------------------
def test_oms_marks_a_bust_and_forwards_it_without_reopening_the_order():
    from bot4.oms import states as S
    from tests.unit.test_oms import Driver, FakeVenue, _state, cid, make_stage, order

    st, v = make_stage(), FakeVenue()
    d = Driver(st, v)
    a, b = cid(1, 1), cid(1, 2)
    d.send(order(a, qty=100), order(b, qty=100))
    d.run()
    fa = v.fill(a, 100)
    fb = v.fill(b, 30)
    d.run()

    def bust(fill):
        r = fill.copy()
        r["exec_type"] = EXEC_BROKEN
        r["exec_id"] = BROKEN_EXEC_ID_BIT | int(fill["exec_id"][0])
        r["seq"] = 1000 + int(fill["exec_id"][0])
        return r

    d.q[1].extend([bust(fa), bust(fb)])
    d.run()
    fills = d.all(1)
    busts = fills[fills["exec_type"] == EXEC_BROKEN]
    assert busts["client_order_id"].tolist() == [a, b]
    assert busts["last_qty"].tolist() == [100, 30]
    assert _state(st, a) == S.ST_FILLED  # closed stays closed
    assert _state(st, b) == S.ST_PARTIALLY_FILLED
    slot = st.oms.book.slots[int(np.flatnonzero(st.oms.book.slots["client_order_id"] == b)[0])]
    assert (int(slot["cum_qty"]), int(slot["leaves_qty"])) == (30, 70)
    c = st.summary()["counters"]
    assert (c["broken_fills"], c["illegal_transitions"], c["exec_id_conflicts"]) == (2, 0, 0)
    assert len(d.all(3)[d.all(3)["exec_type"] == EXEC_BROKEN]) == 2  # to persistence
    d.q[1].append(bust(fa))  # the same bust again: a duplicate like any report
    d.run()
    c = st.summary()["counters"]
    assert (c["broken_fills"], c["duplicate_execs"]) == (2, 1)


# --- risk: the fill reversed, live and rebuilt --------------------------------------------------
def _risk():
    from bot4.spec import RingSpec, StageSpec
    from bot4.stages.risk import RiskStage

    spec = StageSpec(name="risk", kind="risk", core=0, index=0, params={"shared": False})
    ins = [
        RingSpec(f"i{k}", "a", "risk", t, 8, 2, 0, False)
        for k, t in enumerate(("ORDER_INTENT", "EXEC_REPORT", "MARKET_DATA"))
    ]
    outs = [RingSpec("o0", "risk", "b", "ORDER", 8, 2, 0, False)]
    st = RiskStage(spec, ins, outs, "bust-risk")
    st.setup()
    return st


def _fill(seq, side, qty, px, exec_id, et=EXEC_FILL):
    r = np.zeros(1, EXEC_REPORT)
    r["seq"], r["exec_type"], r["exec_id"] = seq, et, exec_id
    r["instrument"], r["side"], r["last_qty"], r["last_price"] = AMZN, side, qty, px
    r["status"] = OS_FILLED if et == EXEC_FILL else OS_PARTIALLY_FILLED
    r["client_order_id"] = 1000 + seq
    return r


def _book_after(records) -> dict:
    st = _risk()
    scratch = np.zeros(16, ORDER)
    for r in records:
        st.book.fills(r, scratch, 0, st.clock())
    md = np.zeros(1, MARKET_DATA)
    md["kind"], md["instrument"], md["price"], md["qty"], md["seq"] = MD_TRADE, AMZN, PX, 1, 1
    st.book.market_data(md, scratch, 0, st.clock())
    p = st.book.positions()[AMZN]
    return {**p, "pnl": p["realised"] + p["unrealised"], "summary": st.summary()}


@pytest.mark.parametrize("broken", [0, 1, 2])
def test_risk_reverses_a_broken_fill_to_the_position_and_pnl_without_it(broken):
    """Buy 100 @ 219, sell 60 @ 221, buy 30 @ 220.5; bust one of them: position, and PnL
    marked at 220, equal the book that never had the broken fill (average cost: only the
    realised / unrealised split differs where the bust reverses an opening fill)."""
    fills = [
        _fill(1, SIDE_BUY, 100, 2_190_000, 11),
        _fill(2, SIDE_SELL, 60, 2_210_000, 12),
        _fill(3, SIDE_BUY, 30, 2_205_000, 13),
    ]
    bust = fills[broken].copy()
    bust["exec_type"] = EXEC_BROKEN
    bust["exec_id"] = BROKEN_EXEC_ID_BIT | int(bust["exec_id"][0])
    bust["seq"] = 9
    got = _book_after([*fills, bust])
    want = _book_after([f for k, f in enumerate(fills) if k != broken])
    assert got["position"] == want["position"]
    assert got["pnl"] == want["pnl"]
    assert got["summary"]["broken_fills"] == 1


def test_risk_rebuild_from_the_journal_applies_the_busts_as_live(tmp_path):
    """``applied_fills`` (what a restarted risk re-applies) keeps the busts, in seq order:
    the rebuilt book equals the live one."""
    from bot4.journal import JournalWriter
    from bot4.oms.recovery import session_range
    from bot4.stages.risk import applied_fills

    lo, _ = session_range(3)
    recs = np.concatenate(
        [
            _fill(1, SIDE_BUY, 100, 2_190_000, 11),
            _fill(2, SIDE_SELL, 60, 2_210_000, 12),
            _fill(3, SIDE_BUY, 30, 2_205_000, 13),
        ]
    )
    bust = recs[0:1].copy()
    bust["exec_type"], bust["exec_id"], bust["seq"] = EXEC_BROKEN, BROKEN_EXEC_ID_BIT | 11, 4
    recs = np.concatenate([recs, bust])
    recs["seq"] += lo
    w = JournalWriter(tmp_path / "j", fsync="none")
    w.append(recs)
    w.close()
    got = applied_fills("bust-rebuild-none", "fills", "exec_events", tmp_path / "j", 3)
    assert got["exec_type"].tolist() == [EXEC_FILL] * 3 + [EXEC_BROKEN]
    live = _book_after([r[None] for r in recs])
    rebuilt = _book_after([got])
    for k in ("position", "cost", "realised", "pnl"):
        assert rebuilt[k] == live[k], k
    assert live["position"] == -30


# --- the database: positions, ledger legs, reconciliation ---------------------------------------
def test_db_position_reversal_agrees_with_risk():
    """The loader's average-cost positions (bot4.db.positions) with a bust equal those
    without the broken fill in quantity and cost; ``fills`` counts the bust row."""
    rows = [(SIDE_BUY, 100, 2_190_000), (SIDE_SELL, 60, 2_210_000), (SIDE_BUY, 30, 2_205_000)]
    for broken in range(3):
        p, q = Position(), Position()
        for k, (side, qty, px) in enumerate(rows):
            apply_fill(p, side, qty, px, 0, k, 0)
            if k != broken:
                apply_fill(q, side, qty, px, 0, k, 0)
        side, qty, px = rows[broken]
        apply_fill(p, side, qty, px, 0, BROKEN_EXEC_ID_BIT | broken, 0, broken=True)
        assert (p.qty, p.bought, p.sold, p.fills) == (q.qty, q.bought, q.sold, 4)
        # realised + what the rest is worth at 220.00: the same money
        assert p.realised + (p.qty * PX - p.cost) == q.realised + (q.qty * PX - q.cost)


def test_ledger_legs_of_a_bust_are_the_opposite_fills():
    """The COPY path's legs of a bust = the legs of the opposite fill (other side, fee given
    back) under the bust's own exec_id: debit and credit of the broken fill swapped."""
    from bot4.db.encoding import Instruments
    from bot4.db.rows import Part, ledger_stream
    from bot4.records import DEFAULT_INSTRUMENTS

    inst = Instruments(DEFAULT_INSTRUMENTS)
    where = (np.zeros(1, np.int64), np.zeros(1, np.int64))
    bust = _fill(1, SIDE_BUY, 100, PX, 11)
    bust["exec_type"], bust["exec_id"], bust["fee"] = EXEC_BROKEN, BROKEN_EXEC_ID_BIT | 11, 25
    opposite = bust.copy()
    opposite["exec_type"], opposite["side"], opposite["fee"] = EXEC_FILL, SIDE_SELL, -25
    got, n = ledger_stream(Part(bust, *where), inst, b"j")
    want, m = ledger_stream(Part(opposite, *where), inst, b"j")
    assert n == m == 3
    assert b"".join(map(bytes, got)) == b"".join(map(bytes, want))


def test_reconciliation_counts_a_bust_with_the_opposite_sign():
    from bot4.db.reconcile import _distinct

    fill = _fill(1, SIDE_BUY, 100, PX, 11)
    bust = fill.copy()
    bust["exec_type"], bust["exec_id"] = EXEC_BROKEN, BROKEN_EXEC_ID_BIT | 11
    d = _distinct(np.concatenate([fill, bust]))
    assert sorted(d["signed"].tolist()) == [-100, 100]


def test_model_attribution_reverses_a_busted_fill_of_the_models_order():
    """The rollout's per-model sub-positions (bot4.models.rollout): a bust takes the
    model's fill back (position and PnL as without it), once however often it is read."""
    from bot4.models.rollout import Attribution

    o = np.zeros(2, ORDER)
    o["action"], o["client_order_id"], o["model_id"], o["instrument"] = ACTION_NEW, [11, 12], 2, 3
    fills = np.concatenate([_fill(1, SIDE_BUY, 100, 1000, 77), _fill(2, SIDE_SELL, 40, 1010, 78)])
    fills["client_order_id"], fills["instrument"], fills["fee"] = [11, 12], 3, [5, 3]
    bust = fills[:1].copy()
    bust["exec_type"], bust["exec_id"] = EXEC_BROKEN, BROKEN_EXEC_ID_BIT | 77
    a, b = Attribution(1), Attribution(1)
    a.on_orders(o)
    b.on_orders(o)
    a.on_reports(fills)
    a.on_reports(bust)
    a.on_reports(bust)  # a journal's copy: once
    b.on_reports(fills[1:])
    marks = {3: 1020}
    ta, tb = a.subs.totals(marks)[2], b.subs.totals(marks)[2]
    assert ta["positions"] == tb["positions"] == {3: -40}
    assert ta["pnl"] == tb["pnl"] and ta["fills"] == 3
