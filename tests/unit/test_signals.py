"""Signals: features against plain numpy references, orthogonalisation, intents, SIMD, allocation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bot4.models.orthogonal import fit_orthogonaliser
from bot4.records import MARKET_DATA, MD_QUOTE, MD_TRADE, ORDER_INTENT, SIDE_BUY, SIDE_SELL
from bot4.stages import signals as S


def quotes(n=6000, seed=3, n_inst=2):
    """Random-walk top-of-book quotes, one side per record, for instruments 1..n_inst."""
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, MARKET_DATA)
    mids = np.full(n_inst + 1, 1_000_000.0)
    for i in range(n):
        inst = 1 + i % n_inst
        mids[inst] *= np.exp(rng.normal(0, 3e-4))
        half = 100 * rng.integers(1, 4)
        side = SIDE_BUY if rng.random() < 0.5 else SIDE_SELL
        px = (
            (int(mids[inst] / 100) * 100) - half
            if side == SIDE_BUY
            else (int(mids[inst] / 100) * 100) + half
        )
        rec[i] = (i + 1, 0, i, i, px, 100 * rng.integers(1, 30), 0, inst, MD_QUOTE, side, 0)
    trades = rec[::50].copy()
    trades["kind"] = MD_TRADE
    return np.sort(np.concatenate([rec, trades]), order="seq", kind="stable")


def reference_features(recs, g, n_inst=6):
    """Straightforward per-tick Python/numpy reference of every feature."""
    a = [S.ewma_alpha(h) for h in S.HALF_LIVES] + [S.ewma_alpha(S.RV_HALF_LIFE)]
    book = {i: [0.0, 0.0, 0.0, 0.0] for i in range(n_inst)}
    state = {
        i: {"mid": 0.0, "e": [0.0, 0.0, 0.0], "rv": 0.0, "g2": 0.0, "eps2": 0.0}
        for i in range(n_inst)
    }
    rows, insts = [], []
    for r in recs:
        if r["kind"] != MD_QUOTE:
            continue
        i = int(r["instrument"])
        b = book[i]
        if r["side"] > 0:
            b[0], b[1] = float(r["price"]), float(r["qty"])
        else:
            b[2], b[3] = float(r["price"]), float(r["qty"])
        bid, bq, ask, aq = b
        if min(b) <= 0 or ask <= bid:
            continue
        s = state[i]
        mid = (bid + ask) / 2
        ret = np.log(mid / s["mid"]) * 1e4 if s["mid"] > 0 else 0.0
        s["mid"] = mid
        s["e"] = [e + ak * (ret - e) for e, ak in zip(s["e"], a[:3], strict=True)]
        s["rv"] += a[3] * (ret * ret - s["rv"])
        om, al, be, mu = g[i]
        s["g2"] = om / (1 - al - be) if s["g2"] <= 0 else om + al * s["eps2"] + be * s["g2"]
        s["eps2"] = (ret - mu) ** 2
        micro = (bid * aq + ask * bq) / (bq + aq)
        rows.append(
            [
                (micro - mid) / mid * 1e4,
                (ask - bid) / mid * 1e4,
                (bq - aq) / (bq + aq),
                *s["e"],
                np.sqrt(s["rv"]),
                np.sqrt(s["g2"]),
            ]
        )
        insts.append(i)
    return np.array(rows), np.array(insts)


def kernel_features(recs, g):
    st = np.zeros((6, S.NSTATE))
    X = np.zeros((len(recs), S.NF))
    insts = np.zeros(len(recs), np.int64)
    n = S.features_kernel(recs, st, g, S.default_cfg(), X, insts)
    return X[:n], insts[:n]


def test_features_match_a_plain_reference_on_the_same_ticks():
    recs = quotes()
    g = S.default_garch(6)
    g[1] = (0.2, 0.1, 0.85, 0.01)
    X, insts = kernel_features(recs, g)
    R, rinsts = reference_features(recs, g)
    assert X.shape == R.shape and X.shape[0] > 4000
    assert np.array_equal(insts, rinsts)
    np.testing.assert_allclose(X, R, rtol=1e-9, atol=1e-12)


def test_orthogonalised_signals_have_identity_covariance_on_the_fitting_data():
    X, _ = kernel_features(quotes(), S.default_garch(6))
    assert np.abs(np.corrcoef(X[:, 3], X[:, 4])[0, 1]) > 0.3  # raw features are correlated
    for method in ("pca", "qr", "ica"):
        o = fit_orthogonaliser(X, method)
        Z = o.apply(X)
        np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(S.NF), atol=1e-6, err_msg=method)
        np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-9)


def test_kernel_orthogonalisation_equals_the_matrix_product():
    X, _ = kernel_features(quotes(n=500), S.default_garch(6))
    o = fit_orthogonaliser(X, "pca")
    z = np.zeros(S.NF)
    WT = np.ascontiguousarray(o.W.T)
    for row in X[:50]:
        S.orthogonalise(row, o.mean, WT, z)
        np.testing.assert_allclose(z, o.W @ (row - o.mean), rtol=1e-12, atol=1e-12)


def make_stage(**params):
    from bot4.pipeline.topology import RingSpec, StageSpec

    spec = StageSpec(name="signals", kind="signals", core=0, index=0, params=params)
    st = S.SignalsStage(
        spec,
        [RingSpec("t", "md", "signals", "MARKET_DATA", 8, 2, 0, False)],
        [RingSpec("i", "signals", "risk", "ORDER_INTENT", 8, 2, 0, False)],
    )
    st.setup()
    return st


def test_intents_join_the_touch_with_a_stop_on_the_losing_side():
    st = make_stage(threshold=0.05, cooldown=5, warmup=5)
    recs = quotes(n=4000)
    out = np.zeros(len(recs), ORDER_INTENT)
    counts = np.zeros(1, np.int64)
    st.process(0, recs, [out], counts, 1)
    n = int(counts[0])
    assert n > 10
    o = out[:n]
    assert np.array_equal(o["seq"], np.arange(1, n + 1))
    buys, sells = o[o["side"] == SIDE_BUY], o[o["side"] == SIDE_SELL]
    assert len(buys) and len(sells)
    assert np.all(buys["stop_price"] < buys["limit_price"]) and np.all(
        sells["stop_price"] > sells["limit_price"]
    )
    assert np.all(np.abs(o["limit_price"] - o["stop_price"]) <= 0.02 * o["limit_price"] + 100)
    assert np.all(o["limit_price"] % 100 == 0) and np.all(o["stop_price"] % 100 == 0)  # on the tick
    assert np.all(np.abs(o["signal_value"]) >= 0.05)
    assert st.summary()["intents"] == n


def test_cross_takes_liquidity_at_the_far_touch_with_the_same_decisions():
    """``cross``: the same intents, a buy at the ask and a sell at the bid."""
    runs = []
    for cross in (False, True):
        st = make_stage(threshold=0.05, cooldown=5, warmup=5, cross=cross)
        recs = quotes(n=4000)
        out = np.zeros(len(recs), ORDER_INTENT)
        counts = np.zeros(1, np.int64)
        st.process(0, recs, [out], counts, 1)
        runs.append(out[: int(counts[0])])
    touch, far = runs
    assert len(touch) > 10 and np.array_equal(touch["side"], far["side"])
    buy = touch["side"] == SIDE_BUY
    assert np.all(far["limit_price"][buy] > touch["limit_price"][buy])  # ask > bid
    assert np.all(far["limit_price"][~buy] < touch["limit_price"][~buy])


ALLOC_PROBE = """
import numpy as np
from numba import njit
from numba.core.runtime import rtsys
from tests.unit.test_signals import make_stage, quotes
from bot4.records import ORDER_INTENT
from bot4.stages.signals import signals_kernel

@njit
def many(k, recs, out, sig):
    n = 0
    for _ in range(k):
        n += signals_kernel(recs, out, 1, sig, 0)
    return n

s = make_stage(threshold=0.05)
recs = quotes(n=2000)
out = np.zeros(len(recs), ORDER_INTENT)
args = (recs, out, s.kernel_state())
many(1, *args)  # compile: may allocate
# the call itself (boxing arguments) allocates the same amount whatever k is, so compare
# a short run with a long one: the kernels' own allocations would grow with k
a0 = rtsys.get_allocation_stats(); many(1, *args); a1 = rtsys.get_allocation_stats()
many(500, *args); a2 = rtsys.get_allocation_stats()
print(a1.alloc - a0.alloc, a2.alloc - a1.alloc, a1.mi_alloc - a0.mi_alloc, a2.mi_alloc - a1.mi_alloc, int(s.counters[2]))
"""


@pytest.mark.timeout(300)
def test_kernel_allocates_nothing_in_steady_state():
    # numba counts its runtime allocations only when NUMBA_NRT_STATS is set at import
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", ALLOC_PROBE],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    short, long, mi_short, mi_long = (int(v) for v in out.stdout.split()[:4])
    intents = int(out.stdout.split()[4])
    assert intents > 500  # the kernel did real work over 500 batches
    assert (long, mi_long) == (short, mi_short)  # flat: nothing per batch, per tick or per intent


@pytest.mark.skipif(
    not __import__("bot4.simd").simd.has_avx512(),
    reason="host has no AVX-512 (avx512f): no zmm registers to look for",
)
@pytest.mark.timeout(300)
def test_512_bit_setting_puts_the_kernel_on_zmm_registers(tmp_path):
    code = textwrap.dedent(
        """
        import numpy as np, bot4
        from bot4.stages import signals as S
        z = np.zeros(S.NF); x = np.ones(S.NF); W = np.ones((S.NF, S.NF))
        S.orthogonalise(x, x, W, z)
        asm = S.orthogonalise.inspect_asm(S.orthogonalise.signatures[0])
        print(bot4.SIMD_MODE, "zmm" in asm)
        """
    )
    env = dict(os.environ, BOT4_SIMD="512", NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_CPU_FEATURES", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["512", "True"]
