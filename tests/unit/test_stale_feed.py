"""Stale market data cascades to what it protects, and no further (the risk stage on a
controlled clock), and ``bot4 stats`` shows breakers and trading states.

Scenarios are tables of steps on one risk stage (process-local breaker and trading-state
words, ``stale_after_ms`` 2000 and ``feed_gone_after_ms`` 5000 unless a case says
otherwise). Each step happens at a time in ms after T0 and is checked for the CANCEL_ALLs
the stage sent during it (instrument ids, 0 = all) and then for the trading states of
global + instruments 1..4 as a string: A(ctive), R(educing), H(alted).

Steps: ``md`` (quotes for the listed instruments on input 2), ``tick`` (the loop's idle
turn: ``pending(now)``, then ``emit`` if anything is pending), ``halt`` / ``reduce`` /
``resume`` (what the operator CLI does: ``set`` with source operator), ``fill`` (a fill
of an order risk does not know: ``arg`` = (qty, price) bought on instrument 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from bot4.ops_stats import snapshot
from bot4.ops_stats_view import render
from bot4.pipeline.topology import RingSpec, StageSpec
from bot4.records import (
    ACTION_CANCEL_ALL,
    EXEC_FILL,
    EXEC_REPORT,
    MARKET_DATA,
    MD_QUOTE,
    ORDER,
    ORDER_INTENT,
    OS_FILLED,
    RISK_DECISION,
    SIDE_BUY,
    SIDE_SELL,
)
from bot4.records.errors import Code
from bot4.risk import create_risk_segments
from bot4.risk.checks import R_STALE_FEED
from bot4.shm import breakers as B
from bot4.shm import trading_state as T
from bot4.shm.segment import Segment
from bot4.stages.risk import RiskStage

T0 = 10**12  # host monotonic ns at the start of every scenario
MS = 1_000_000
BID, ASK = 1_000_000, 1_000_200

INSTRUMENTS = """
[[instrument]]
id = 1
symbol = "AAPL"
price_scale = 10000
tick_size = "0.01"

[[instrument]]
id = 2
symbol = "MSFT"
price_scale = 10000
tick_size = "0.01"

[[instrument]]
id = 3
symbol = "DARK"
price_scale = 10000
tick_size = "0.01"

[[instrument]]
id = 4
symbol = "IBM"
price_scale = 10000
tick_size = "0.01"
"""

BASE = {
    "max_tracked_orders": 16,
    "max_open_orders_total": 5,
    "daily_loss_limit": "1000",  # 10_000_000 units
    "rate_per_s": 0,
    "breakers": [{"name": "venue"}],
}
LETTER = {T.ACTIVE: "A", T.REDUCING: "R", T.HALTED: "H"}


@pytest.fixture(scope="module")
def instruments_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("stale") / "instruments.toml"
    path.write_text(INSTRUMENTS)
    return str(path)


class Rig:
    """A risk stage with a hand-driven clock; records every CANCEL_ALL it sends."""

    def __init__(self, instruments_file: str, shared: bool = False, instance: str = "unit", **p):
        params = {**BASE, "instruments_file": instruments_file, "shared": shared, **p}
        spec = StageSpec(name="risk", kind="risk", core=0, index=4, batch=8, params=params)
        ins = [
            RingSpec(f"i{k}", "x", "risk", t, 8, 2, 0, k == 1)
            for k, t in enumerate(("ORDER_INTENT", "EXEC_REPORT", "MARKET_DATA"))
        ]
        outs = [
            RingSpec(f"o{k}", "risk", "y", t, 8, 2, 0, False)
            for k, t in enumerate(("ORDER", "RISK_DECISION"))
        ]
        self.stage = RiskStage(spec, ins, outs, instance)
        self.stage.setup()
        self.now = T0
        self.stage.clock = lambda: self.now
        self.seq = 1
        self.outs = [np.zeros(32, ORDER), np.zeros(32, RISK_DECISION)]
        self.counts = np.zeros(2, np.int64)

    @property
    def ts(self) -> np.ndarray:
        return self.stage.book.trading

    def _cancels(self) -> list[int]:
        got = self.outs[0][: self.counts[0]]
        return [int(o["instrument"]) for o in got if o["action"] == ACTION_CANCEL_ALL]

    def md(self, insts) -> list[int]:
        md = np.zeros(2 * len(insts), MARKET_DATA)
        md["instrument"] = np.repeat(insts, 2)
        md["kind"] = MD_QUOTE
        md["side"] = [SIDE_BUY, SIDE_SELL] * len(insts)
        md["price"] = [BID, ASK] * len(insts)
        md["qty"] = 100
        self.seq = self.stage.process(2, md, self.outs, self.counts, self.seq)
        return self._cancels()

    def tick(self) -> list[int]:
        self.counts[:] = 0
        if self.stage.pending(self.now) > 0:
            self.seq = self.stage.emit(self.outs, self.counts, self.seq)
        return self._cancels()

    def fill(self, qty_px) -> list[int]:
        qty, px = qty_px
        ex = np.zeros(1, EXEC_REPORT)
        ex["instrument"], ex["side"], ex["last_qty"], ex["last_price"] = 1, SIDE_BUY, qty, px
        ex["exec_type"], ex["status"] = EXEC_FILL, OS_FILLED
        self.seq = self.stage.process(1, ex, self.outs, self.counts, self.seq)
        return self._cancels()

    def operator(self, state: int, target: int) -> list[int]:
        T.set_state(self.ts, target, state, 0, T.SRC_OPERATOR)
        return []

    def step(self, action: str, arg) -> list[int]:
        if action == "md":
            return self.md(arg)
        if action == "tick":
            return self.tick()
        if action == "fill":
            return self.fill(arg)
        state = {"halt": T.HALTED, "reduce": T.REDUCING, "resume": T.ACTIVE}[action]
        return self.operator(state, arg)

    def states(self) -> str:
        return "".join(LETTER[int(T.state_of(self.ts, t))] for t in range(5))


def scenario(name, steps, **params):
    return pytest.param(steps, params, id=name)


# (at ms, action, arg, CANCEL_ALLs sent during the step, states afterwards)
SCENARIOS = [
    scenario(
        "one instrument goes stale: only it is halted and cancelled",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (1_000, "md", [1, 4], [], "AAAAA"),
            (1_900, "tick", None, [], "AAAAA"),
            (2_001, "md", [1, 4], [], "AAAAA"),  # 2 is 2001 ms old: evaluated at the tick
            (2_050, "tick", None, [2], "AAHAA"),
            (2_500, "tick", None, [], "AAHAA"),  # one halt per episode
            (3_000, "md", [1, 4], [], "AAHAA"),
        ],
    ),
    scenario(
        "everything goes stale: instruments, then global when the feed is gone",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (2_050, "tick", None, [1, 2, 4], "AHHAH"),
            (4_900, "tick", None, [], "AHHAH"),
            (5_050, "tick", None, [0], "HHHAH"),
            (9_000, "tick", None, [], "HHHAH"),
        ],
    ),
    scenario(
        "data resumes: back to ACTIVE, what resumes and nothing else",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (5_050, "tick", None, [0], "HHHAH"),  # one CANCEL_ALL for all covers them
            (6_000, "md", [2], [], "AHAAH"),  # any data ends feed-gone
            (6_100, "md", [1, 4], [], "AAAAA"),
            (8_050, "tick", None, [2], "AAHAA"),  # a new episode halts again
            (8_150, "tick", None, [1, 4], "AHHAH"),
            (8_200, "md", [1, 2, 4], [], "AAAAA"),
        ],
    ),
    scenario(
        "an operator halt before the data goes stale is not relaxed by resuming data",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (100, "halt", 2, [], "AAHAA"),
            (200, "tick", None, [2], "AAHAA"),  # the operator's kill switch
            (1_500, "md", [1, 4], [], "AAHAA"),
            (2_100, "tick", None, [], "AAHAA"),  # stale, already halted: no second cancel
            (3_000, "md", [2], [], "AAHAA"),
            (3_100, "tick", None, [], "AAHAA"),
        ],
    ),
    scenario(
        "an operator halt over a stale halt is not relaxed by resuming data",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (1_500, "md", [1, 4], [], "AAAAA"),
            (2_100, "tick", None, [2], "AAHAA"),
            (2_200, "halt", 2, [], "AAHAA"),
            (2_300, "md", [1, 2, 4], [2], "AAHAA"),  # halting again cancels again
            (2_400, "tick", None, [], "AAHAA"),
        ],
    ),
    scenario(
        "an operator global halt is not relaxed when the feed comes back",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (5_050, "tick", None, [0], "HHHAH"),
            (5_100, "halt", 0, [], "HHHAH"),
            (5_200, "md", [1, 2, 4], [0], "HAAAA"),
        ],
    ),
    scenario(
        "an operator resume during a stale episode is respected until the next one",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (1_500, "md", [1, 4], [], "AAAAA"),
            (2_100, "tick", None, [2], "AAHAA"),
            (2_200, "resume", 2, [], "AAAAA"),
            (3_000, "tick", None, [], "AAAAA"),
            (3_050, "md", [1, 2, 4], [], "AAAAA"),
            (5_100, "tick", None, [1, 2, 4], "AHHAH"),
        ],
    ),
    scenario(
        "instruments that never had data are not halted for staleness",
        [
            (0, "tick", None, [], "AAAAA"),
            (9_000, "tick", None, [], "AAAAA"),  # no data ever: no feed to be gone
            (9_500, "md", [1], [], "AAAAA"),
            (10_500, "md", [1], [], "AAAAA"),
            (11_600, "tick", None, [], "AAAAA"),
            (13_000, "tick", None, [1], "AHAAA"),
            (15_400, "tick", None, [], "AHAAA"),
            (15_600, "tick", None, [0], "HHAAA"),
        ],
    ),
    scenario(
        "evaluated at most every 50 ms",
        [
            (0, "md", [1], [], "AAAAA"),
            (1_990, "tick", None, [], "AAAAA"),  # evaluated: next at 2040
            (2_010, "tick", None, [], "AAAAA"),  # stale, not evaluated yet
            (2_040, "tick", None, [1], "AHAAA"),
        ],
    ),
    scenario(
        "disabled with 0",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (60_000, "tick", None, [], "AAAAA"),
        ],
        stale_after_ms=0,
        feed_gone_after_ms=0,
    ),
    scenario(
        "per-instrument threshold",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (2_100, "tick", None, [1, 4], "AHAAH"),
            (4_000, "tick", None, [], "AHAAH"),
            (4_100, "md", [1, 4], [], "AAAAA"),
            (10_100, "tick", None, [1, 2, 4], "AHHAH"),
        ],
        instruments={"MSFT": {"stale_after_ms": 10_000}},
        feed_gone_after_ms=0,
    ),
    scenario(
        "an operator REDUCING under a stale halt comes back as REDUCING",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (100, "reduce", 2, [], "AARAA"),
            (1_500, "md", [1, 4], [], "AARAA"),
            (2_100, "tick", None, [2], "AAHAA"),
            (2_200, "md", [2], [], "AARAA"),
        ],
    ),
    scenario(
        "the daily-loss REDUCING under a feed-gone halt is re-asserted by its own rule",
        [
            (0, "md", [1, 2, 4], [], "AAAAA"),
            (100, "fill", (1_000, 1_020_000), [], "RAAAA"),  # 20_000_000 below the mid
            (5_200, "tick", None, [0], "HHHAH"),
            (5_300, "md", [1, 2, 4], [], "RAAAA"),
        ],
        feed_gone_after_ms=5_000,
    ),
]


@pytest.mark.parametrize(("steps", "params"), SCENARIOS)
def test_stale_market_data_cascade(instruments_file, steps, params) -> None:
    rig = Rig(instruments_file, **params)
    for at_ms, action, arg, cancels, states in steps:
        rig.now = T0 + at_ms * MS
        got = rig.step(action, arg)
        assert (got, rig.states()) == (cancels, states), (at_ms, action, arg)


def test_stale_halts_carry_source_risk_and_their_reason(instruments_file) -> None:
    rig = Rig(instruments_file)
    rig.md([1, 2])
    rig.now += 5_001 * MS
    assert rig.tick() == [0]  # instruments and global at once: one for all
    for t in (0, 1, 2):
        w = int(T.state_word(rig.ts, t))
        assert (w & 0xFF, (w >> 8) & 0xFFFF, (w >> 24) & 0xFF) == (
            T.HALTED,
            R_STALE_FEED,
            T.SRC_RISK,
        )
    assert R_STALE_FEED == Code.MARKET_DATA_STALE
    summary = rig.stage.summary()["stale"]
    assert summary == {
        "instruments": ["AAPL", "MSFT"],
        "feed_gone": True,
        "stale_episodes": 2,
        "feed_gone_episodes": 1,
        "relaxed": 0,
        "book_stale_episodes": 0,
    }
    it = np.zeros(1, ORDER_INTENT)
    it["seq"], it["instrument"], it["side"], it["qty"], it["strategy"] = 1, 3, SIDE_BUY, 100, 1
    it["limit_price"], it["stop_price"] = BID, 990_000
    rig.stage.process(0, it, rig.outs, rig.counts, rig.seq)
    assert int(rig.outs[1][0]["reason"]) == Code.STATE_HALTED  # the feed is gone: all halted
    rig.md([1])
    assert rig.states() == "AAHAA" and rig.stage.summary()["stale"]["relaxed"] == 2


def test_a_feed_gap_flag_from_md_gateway_halts_at_once_until_md_gateway_clears_it(
    instruments_file,
) -> None:
    """md_gateway's FEED_GAP flag (docs/gateways.md) is a trading-state word like the
    operator's: risk cancels the instrument's orders at its next poll and denies its
    intents; data arriving meanwhile does not end it (only md_gateway relaxes its flag)."""
    rig = Rig(instruments_file)
    rig.md([1, 2])
    flag = (T.HALTED, int(Code.FEED_GAP), T.SRC_MD_GATEWAY)
    assert T.raise_state(rig.ts, 1, *flag) == T.ACTIVE
    assert rig.tick() == [1]  # CANCEL_ALL for the flagged instrument, at once
    it = np.zeros(1, ORDER_INTENT)
    it["seq"], it["instrument"], it["side"], it["qty"], it["strategy"] = 1, 1, SIDE_BUY, 100, 1
    it["limit_price"], it["stop_price"] = BID, 990_000
    rig.counts[:] = 0
    rig.stage.process(0, it, rig.outs, rig.counts, rig.seq)
    assert int(rig.outs[1][0]["reason"]) == Code.STATE_HALTED
    rig.md([1, 2])
    assert rig.states() == "AHAAA"  # risk's stale rule does not relax another's halt
    assert T.relax_state(rig.ts, 1, *flag, T.ACTIVE)
    assert rig.states() == "AAAAA"


def test_a_restarted_stage_adopts_stale_halts_and_ends_them_when_data_resumes(
    instance, instruments_file
) -> None:
    names = create_risk_segments(instance, 1, 4)
    try:
        rig = Rig(instruments_file, shared=True, instance=instance)
        rig.md([1, 2])
        rig.now += 5_001 * MS
        assert rig.tick() == [0]
        del rig  # the stage dies; the states stay in shared memory
        again = Rig(instruments_file, shared=True, instance=instance)
        assert again.states() == "HHHAA"
        again.now += 10_000 * MS
        assert again.tick() == [0]  # a HALTED state found at start is swept again
        assert again.states() == "HHHAA"  # no arrival times yet: nothing more halts
        again.md([2])
        assert again.states() == "AHAAA"
        with T.TradingState(instance, readonly=True) as ts:
            assert [ts.get(t) for t in range(5)] == [0, 2, 0, 0, 0]
        del again
    finally:
        for n in names:
            Segment.unlink(n)


def test_stale_params_are_validated() -> None:
    from bot4.risk.limits import RiskConfigError, RiskLimits

    with pytest.raises(RiskConfigError, match="stale_after_ms"):
        RiskLimits.from_params({"stale_after_ms": -1})
    with pytest.raises(RiskConfigError, match="feed_gone_after_ms"):
        RiskLimits.from_params({"feed_gone_after_ms": -5})
    with pytest.raises(RiskConfigError, match="must be an integer"):
        RiskLimits.from_params({"stale_after_ms": 1.5})


# --- bot4 stats: breakers and trading states --------------------------------------------------


def test_stats_shows_breakers_and_trading_states(instance) -> None:
    configs = [B.BreakerConfig(name="venue"), B.BreakerConfig(name="gateway")]
    names = create_risk_segments(instance, 2, 4, configs)
    try:
        with B.Breakers(instance) as brk:
            assert brk.trip("gateway") == B.CLOSED
        with T.TradingState(instance) as ts:
            ts.set(3, T.HALTED, int(Code.STATE_HALTED))
            ts.set(4, T.REDUCING, int(Code.DAILY_LOSS), T.SRC_RISK)
            ts.set(4, T.ACTIVE)
        snap = snapshot(instance)
        assert [(b["name"], b["state"], b["forced"], b["trips"]) for b in snap["breakers"]] == [
            ("venue", "closed", False, 0),
            ("gateway", "open", True, 1),
        ]
        assert set(snap["breakers"][0]) == {
            "index",
            "name",
            "state",
            "forced",
            "window_calls",
            "window_failures",
            "trips",
            "denied",
        }
        tr = snap["trading"]
        assert tr["n_instruments"] == 4
        assert tr["global"] == {"state": "active", "reason": "-", "source": "-", "changes": 0}
        assert tr["instruments"] == [
            {
                "instrument": 3,
                "state": "halted",
                "reason": "STATE_HALTED",
                "source": "operator",
                "changes": 1,
            },
            {"instrument": 4, "state": "active", "reason": "-", "source": "operator", "changes": 2},
        ]
        from bot4.ops_stats import to_json

        assert b'"gateway"' in to_json(snap)
        text = render(snap)
        lines = text.splitlines()
        gateway = next(ln for ln in lines if "gateway" in ln)
        assert "open (forced)" in gateway
        inst3 = next(ln for ln in lines if ln.startswith("instrument 3"))
        assert "halted" in inst3 and "STATE_HALTED" in inst3 and "operator" in inst3
        assert any(ln.startswith("global") and "active" in ln for ln in lines)
    finally:
        for n in names:
            Segment.unlink(n)


def test_stats_attaches_breakers_and_trading_read_only(instance, monkeypatch) -> None:
    from bot4 import ops_stats

    names = create_risk_segments(instance, 1, 2)
    seen = []
    real = Segment.attach

    def spy(name, *, readonly=False, min_size=0):
        seen.append((name, readonly))
        return real(name, readonly=readonly, min_size=min_size)

    monkeypatch.setattr(Segment, "attach", staticmethod(spy))
    try:
        snap = ops_stats.snapshot(instance)
        assert snap["breakers"] and snap["trading"] is not None
        assert seen and all(ro for _, ro in seen)
        assert {n for n, _ in seen} >= set(names)
    finally:
        for n in names:
            Segment.unlink(n)


def test_stats_without_risk_segments(instance) -> None:
    snap = snapshot(instance)
    assert snap["breakers"] == [] and snap["trading"] is None
    assert "breaker" not in render(snap) and "trading" not in render(snap)
