"""Champion/challenger routing in the signals kernel: equivalence with the plain kernel,
shadow never trades, A/B and canary fractions, determinism, hot swap at a batch boundary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot4.models.artifact import linear_model
from bot4.models.registry import Registry, promote, rollback, set_challenger
from bot4.records import ORDER_INTENT
from bot4.stages import signals as S
from bot4.stages.signals_models import read_shadow_log
from tests.unit.test_signals import make_stage, quotes

PARAMS = {"threshold": 0.05, "cooldown": 5, "warmup": 5}


def other_weights() -> np.ndarray:
    w = S.DEFAULT_MODEL.copy()
    w[1:] = -w[1:]  # the opposite opinion: different intents on the same ticks
    w[4] = 0.9
    return w


@pytest.fixture
def reg(tmp_path):
    r = Registry(tmp_path / "models")
    a = r.register(linear_model(S.DEFAULT_MODEL, S.FEATURES), name="default", features=S.FEATURES)
    b = r.register(linear_model(other_weights(), S.FEATURES), name="other", features=S.FEATURES)
    assert (a["id"], b["id"]) == (1, 2)
    promote(r, "sig", 1)
    return r


def run(stage, recs, batch=256):
    """The stage over ``recs`` in batches, as the loop calls it (process, then pending)."""
    stage.clock = lambda: 0  # ts_signal_ns: compare decisions, not timings
    out = np.zeros(len(recs), ORDER_INTENT)
    counts = np.zeros(1, np.int64)
    n, seq = 0, 1
    for i in range(0, len(recs), batch):
        b = recs[i : i + batch]
        seq = stage.process(0, b, [out[n : n + len(b)]], counts, seq)
        n += int(counts[0])
        stage.pending(0)
    stage.on_drain()
    return out[:n]


def routed(reg, **kw):
    return make_stage(**PARAMS, model_slot="sig", model_registry=str(reg.root), **kw)


def test_champion_only_routing_makes_the_plain_kernels_intents_with_the_model_id(reg):
    recs = quotes(n=6000)
    plain = run(make_stage(**PARAMS), recs)
    got = run(routed(reg), recs)
    assert len(plain) > 50
    assert np.array_equal(plain["model_version"], np.ones(len(plain)))  # the default id
    assert set(got["model_version"]) == {1}  # registry id 1 happens to be the same number
    assert got.tobytes() == plain.tobytes()


def test_shadow_challenger_is_scored_but_never_trades(reg):
    recs = quotes(n=6000)
    champion = run(routed(reg), recs)
    set_challenger(reg, "sig", 2, "shadow")
    st = routed(reg)
    got = run(st, recs)
    assert got.tobytes() == champion.tobytes()  # every intent is the champion's
    summ = st.summary()
    assert summ["shadow_intents"] > 10 and summ["shadow_scored"] > summ["shadow_intents"]
    shadow = read_shadow_log(summ["shadow_log"])
    assert len(shadow) == summ["shadow_intents"]
    assert set(shadow["model_version"]) == {2}
    # its would-be intents are its own decisions: not the champion's on the same ticks
    assert set(shadow["parent_seq"]) != set(champion["parent_seq"])


@pytest.mark.parametrize("split", ["tick", "instrument"])
def test_ab_split_fraction_matches_configuration_and_replays_identically(reg, split):
    recs = quotes(n=20000, n_inst=5)
    set_challenger(reg, "sig", 2, "ab", pct=30.0, split=split)
    a, b = routed(reg), routed(reg)
    ia, ib = run(a, recs), run(b, recs)
    assert ia.tobytes() == ib.tobytes()  # deterministic: a pure function of the records
    s = a.summary()
    n, k = s["decided_ticks"], s["challenger_ticks"]
    if split == "tick":
        tol = 4 * math.sqrt(n * 0.3 * 0.7)  # binomial, 4 sigma
        assert abs(k - 0.3 * n) < tol, (k, n)
    else:  # whole instruments: each one is all-challenger or all-champion
        by = {}
        for o in ia:
            by.setdefault(int(o["instrument"]), set()).add(int(o["model_version"]))
        assert all(len(v) == 1 for v in by.values()), by
    assert set(ia["model_version"]) <= {1, 2}
    assert s["champion_intents"] + s["challenger_intents"] == len(ia)


def test_new_assignment_is_picked_up_at_a_batch_boundary_without_restart(reg):
    recs = quotes(n=8000)
    st = routed(reg)
    out = np.zeros(len(recs), ORDER_INTENT)
    counts = np.zeros(1, np.int64)
    n, seq, swap_at = 0, 1, 4000
    first_after = None
    for i in range(0, len(recs), 200):
        if i == swap_at:
            set_challenger(reg, "sig", 2, "canary", pct=100.0)  # the whole flow to 2
            first_after = n
        b = recs[i : i + 200]
        seq = st.process(0, b, [out[n : n + len(b)]], counts, seq)
        n += int(counts[0])
    o = out[:n]
    assert first_after and 0 < first_after < n
    assert set(o["model_version"][:first_after]) == {1}
    assert set(o["model_version"][first_after:]) == {2}
    assert np.array_equal(o["seq"], np.arange(1, n + 1))  # nothing lost or repeated
    assert st.summary()["model_swaps"] == 1
    rollback(reg, "sig", why="test")
    seq = st.process(0, recs[:0], [out[:0]], counts, seq)
    assert st.router.route[0] == 0  # champion only again
