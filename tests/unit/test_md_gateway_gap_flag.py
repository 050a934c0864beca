"""A MoldUDP64 gap flags md_gateway's instruments to risk at once, through the trading-state
segment (risk's kernels read ``effective_state``), and clears them when it is recovered.

The simulator drops packets and answers every re-request 300 ms late
(``rerequest_delay_ms``), so each gap stays open far longer than the gateway's
``gap_flag_ms`` (20 ms): while it is open the instruments are HALTED with reason
``FEED_GAP`` and source ``md_gateway``; after the feed is fully recovered they are ACTIVE
again. An instrument the operator halted before is left halted (not flagged, not cleared).
Every message is still decoded once.
"""

from __future__ import annotations

import logging

import pytest

from bot4.gateways.bookcheck import run_gateway
from bot4.gateways.exchange import Faults
from bot4.gateways.feed import synthetic_to_itch
from bot4.records.errors import Code
from bot4.shm import trading_state as T
from bot4.shm.segment import Segment, segment_name

pytestmark = pytest.mark.timeout(300)


def test_gap_with_delayed_rerequest_flags_instruments_to_risk_until_recovered(instance, caplog):
    feed = synthetic_to_itch(4000, 3, 1)
    syms = list(feed.symbols)
    ids = [feed.symbols[s] for s in syms]
    operator_halted = ids[-1]
    T.create_trading_state(instance, max(ids))
    ts = T.TradingState(instance)
    seen: dict[int, set] = {i: set() for i in ids}
    flagged_while_hole = []

    def watch(stage, pos):
        for i in ids:
            w = int(T.state_word(ts.words, i))
            seen[i].add((int(T.word_state(w)), int(T.word_reason(w)), int(T.word_source(w))))
        if stage.flagged:  # what risk's kernels read: the instrument trades HALTED
            assert all(int(T.effective_state(ts.words, i)) == T.HALTED for i in ids)
            flagged_while_hole.append(stage.known_end > pos + 1)

    try:
        ts.set(operator_halted, T.HALTED, 0, T.SRC_OPERATOR)
        caplog.set_level(logging.INFO, logger="bot4.stage")
        faults = Faults(drop_every=40, rerequest_delay_ms=300)
        ex, stage, got = run_gateway(
            feed, syms, faults=faults, instance=instance, params={"gap_flag_ms": 20},
            rate=20_000, timeout_s=120, on_cycle=watch,
        )  # fmt: skip
        s = stage.summary()
        print(s, ex.stats)
        assert ex.stats["dropped"] > 0 and s["gaps"] > 0
        assert s["messages"] == feed.messages and s["next_seq"] == feed.messages + 1
        flag = (T.HALTED, int(Code.FEED_GAP), T.SRC_MD_GATEWAY)
        assert s["gap_flags"] >= 1 and stage.counter_values()[-1] == s["gap_flags"]
        for i in ids[:-1]:
            assert flag in seen[i], f"instrument {i} never flagged: {seen[i]}"
            assert int(T.state_of(ts.words, i)) == T.ACTIVE  # cleared after recovery
        assert flag not in seen[operator_halted]  # the operator's halt is not touched
        assert int(T.state_word(ts.words, operator_halted)) & 0xFFFFFFFF == T.HALTED | (
            T.SRC_OPERATOR << T.SOURCE_SHIFT
        )
        assert flagged_while_hole and any(flagged_while_hole)
        text = caplog.text
        assert "md_gateway: gap at sequences" in text and "HALTED for risk (FEED_GAP)" in text
        assert "FEED_GAP flag cleared" in text
    finally:
        ts.close()
        Segment.unlink(segment_name(instance, T.TRADING_SEGMENT))


def _stage(instance, symbols):
    from types import SimpleNamespace

    from bot4.stages.md_gateway import MdGatewayStage

    params = {"symbols": symbols, "gap_flag_ms": 10, "store": 1024}
    spec = SimpleNamespace(name="md_gateway", params=params)
    stage = MdGatewayStage(spec, [], [SimpleNamespace(type="MARKET_DATA")], instance)
    stage.setup()
    stage.bind(None, None)
    return stage


def test_gap_flag_rules_by_hand(instance):
    """The rules on a stage driven by hand (no network): a hole that moves on is not
    flagged; one stalled 10 ms is, once (not again every cycle when nothing changed,
    every instrument being halted already); it clears only when the messages known at the
    flag have arrived; a restarted gateway adopts the flags and holds them through its
    rebuild."""
    ms = 1_000_000
    T.create_trading_state(instance, 8)
    ts = T.TradingState(instance)
    try:
        g = _stage(instance, ["AAPL", "MSFT"])
        ids = g.flag_ids
        assert ids and g.trading is not None
        g.known_end = 101
        for t in range(0, 50, 5):  # progress every 5 ms: never stalled
            g._watch_gap(t * ms, 10 + t)
        assert not g.flag_on and g.counters["gap_flags"] == 0
        g._watch_gap(60 * ms, 70)
        g._watch_gap(71 * ms, 70)  # 11 ms without progress
        assert g.flag_on and g.counters["gap_flags"] == 1
        assert all(int(T.state_of(ts.words, i)) == T.HALTED for i in ids)
        g.known_end = 201  # more of the feed arrives while the hole is stalled: held longer
        g._watch_gap(80 * ms, 70)
        g._watch_gap(81 * ms, 150)  # the hole moved on, 150..200 still to come
        assert g.flag_on
        g._watch_gap(82 * ms, 201)  # everything known at the flag is in: cleared
        assert not g.flag_on and all(int(T.state_of(ts.words, i)) == T.ACTIVE for i in ids)
        # every instrument halted by the operator: one episode counted, nothing changed
        for i in ids:
            ts.set(i, T.HALTED, 0, T.SRC_OPERATOR)
        g.known_end = 301
        for t in range(100, 200, 5):
            g._watch_gap(t * ms, 250)
        assert g.counters["gap_flags"] == 2 and g.flagged == {}
        g._watch_gap(300 * ms, 301)
        assert all(int(T.word_source(T.state_word(ts.words, i))) == T.SRC_OPERATOR for i in ids)
        # a flag left by a killed gateway: adopted, held through the rebuild, then cleared
        for i in ids:
            ts.set(i, T.ACTIVE, 0, T.SRC_OPERATOR)
            T.raise_state(ts.words, i, T.HALTED, int(Code.FEED_GAP), T.SRC_MD_GATEWAY)
        g.trading.close()
        h = _stage(instance, ["AAPL", "MSFT"])
        assert h.flag_on and set(h.flagged) == set(ids)
        h.warm_to, h.known_end, h.flag_end = 500, 500, max(h.flag_end, 500)
        h._watch_gap(1 * ms, 200)  # rebuilding: 200..499 still to come
        assert h.flag_on
        h._watch_gap(2 * ms, 500)
        assert not h.flag_on and all(int(T.state_of(ts.words, i)) == T.ACTIVE for i in ids)
        h.trading.close()
    finally:
        ts.close()
        Segment.unlink(segment_name(instance, T.TRADING_SEGMENT))
