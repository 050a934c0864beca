"""Signals kernel measurements: the numba kernel against plain vectorised numpy.

Both compute the same per-tick features (mid, microprice deviation, spread, imbalance,
EWMA returns at three half-lives, realised vol, GARCH(1,1) variance), rotate them with the
same orthogonaliser and apply the same linear model, on the same synthetic quotes.

* ``numba``: ``signals_kernel`` over batches of 256 ticks, as the stage calls it;
* ``numpy``: whole-array vectorised numpy/scipy (EWMAs and the GARCH recursion as linear
  filters with ``scipy.signal.lfilter``) — numpy's best case, one call for everything.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.signal import lfilter

from bot4.models.orthogonal import Orthogonaliser
from bot4.records import MARKET_DATA, MD_QUOTE, ORDER_INTENT, SIDE_BUY, SIDE_SELL
from bot4.stages import signals as S

N_INST = 3


def make_quotes(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, MARKET_DATA)
    inst = rng.integers(1, N_INST + 1, n)
    steps = rng.normal(0, 3e-4, n)
    mids = np.zeros(n)
    for i in range(1, N_INST + 1):
        m = inst == i
        mids[m] = 1_000_000.0 * np.exp(np.cumsum(steps[m]))
    side = np.where(rng.random(n) < 0.5, SIDE_BUY, SIDE_SELL)
    half = 100 * rng.integers(1, 4, n)
    base = (mids // 100) * 100
    rec["price"] = np.where(side == SIDE_BUY, base - half, base + half)
    rec["qty"] = 100 * rng.integers(1, 30, n)
    rec["instrument"] = inst
    rec["kind"] = MD_QUOTE
    rec["side"] = side
    rec["seq"] = np.arange(1, n + 1)
    return rec


class NumbaSignals:
    def __init__(self, ortho: Orthogonaliser) -> None:
        self.st = np.zeros((N_INST + 3, S.NSTATE))
        self.g = S.default_garch(N_INST + 3)
        self.mean = np.ascontiguousarray(ortho.mean)
        self.WT = np.ascontiguousarray(ortho.W.T)
        self.model = S.DEFAULT_MODEL.copy()
        self.cfg = S.default_cfg()
        self.cfg[4:12] = [
            1e9,
            100,
            3,
            2,
            200,
            50,
            20,
            1,
        ]  # threshold 1e9: features only, no intents
        self.tick = np.full(N_INST + 3, 100.0)
        self.x = np.zeros(S.NF)
        self.z = np.zeros(S.NF)
        self.counters = np.zeros(3, np.int64)
        self.out = np.zeros(256, ORDER_INTENT)
        self.state = S.SignalsState(self.st, self.g, self.mean, self.WT, self.model, self.cfg,
                                    self.tick, self.x, self.z, self.counters)  # fmt: skip

    def run(self, recs: np.ndarray, batch: int = 256) -> None:
        self.st[:] = 0
        for i in range(0, len(recs), batch):
            S.signals_kernel(recs[i : i + batch], self.out, 1, self.state, 0)


def numpy_signals(recs: np.ndarray, ortho: Orthogonaliser, g=(0.05, 0.05, 0.9, 0.0)) -> np.ndarray:
    """Vectorised numpy: the same features, signals and model score for every valid quote."""
    om, al, be, mu = g
    out_rows = []
    for i in range(1, N_INST + 1):
        r = recs[recs["instrument"] == i]
        is_bid = r["side"] > 0
        idx = np.arange(len(r))
        last_bid = np.maximum.accumulate(np.where(is_bid, idx, -1))
        last_ask = np.maximum.accumulate(np.where(~is_bid, idx, -1))
        ok = (last_bid >= 0) & (last_ask >= 0)
        bid = r["price"][last_bid].astype(float)
        ask = r["price"][last_ask].astype(float)
        bq = r["qty"][last_bid].astype(float)
        aq = r["qty"][last_ask].astype(float)
        ok &= (ask > bid) & (bq > 0) & (aq > 0)
        bid, ask, bq, aq = bid[ok], ask[ok], bq[ok], aq[ok]
        mid = 0.5 * (bid + ask)
        ret = np.zeros_like(mid)
        ret[1:] = np.log(mid[1:] / mid[:-1]) * 1e4
        cols = [
            (bid * aq + ask * bq) / (bq + aq) / mid * 1e4 - 1e4,
            (ask - bid) / mid * 1e4,
            (bq - aq) / (bq + aq),
        ]
        for h in S.HALF_LIVES:
            a = S.ewma_alpha(h)
            cols.append(lfilter([a], [1, -(1 - a)], ret))
        a = S.ewma_alpha(S.RV_HALF_LIFE)
        cols.append(np.sqrt(lfilter([a], [1, -(1 - a)], ret * ret)))
        eps2 = (ret - mu) ** 2
        s0 = om / (1 - al - be)
        drive = np.full_like(ret, om)
        drive[1:] += al * eps2[:-1]
        drive[0] = s0
        cols.append(np.sqrt(lfilter([1.0], [1.0, -be], drive)))
        out_rows.append(np.column_stack(cols))
    X = np.vstack(out_rows)
    Z = (X - ortho.mean) @ ortho.W.T
    return S.DEFAULT_MODEL[0] + Z @ S.DEFAULT_MODEL[1:]


def ticks_per_second(fn, n: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best
