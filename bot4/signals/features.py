"""The signals domain: the per-instrument feature state, its numba kernels and the
parameter and model files they read. The signals stage (``bot4.stages.signals``) builds
the state from its params and calls these kernels; the hot group's compiled duty cycle
(``bot4.stages.hotloop``) and the replay call the same kernels.

What is computed, per instrument, on every quote:

* mid, microprice, spread, order-book imbalance from the top of book (or, with
  ``imbalance_levels`` N > 1, over the best N levels of the md stage's ``book_level`` ring);
* the mid's log return r (basis points), EWMA returns at three half-lives (ticks),
  realised volatility (sqrt of an EWMA of r^2), and the GARCH(1,1) conditional variance
  updated recursively from calibrated parameters (``bot4 calibrate``);
* the feature vector x (``FEATURES``) rotated into decorrelated signals z = W (x - mean)
  by the orthogonaliser fitted offline — computed as a sum of W's columns so it
  vectorises across features without reassociating any reduction (results do not depend
  on the SIMD width);
* a linear model s = w0 + w . z, its weights memory-mapped from a model file; |s| above
  ``threshold`` (and the instrument's cooldown over) makes an intent: buy when s > 0 at
  the bid, sell when s < 0 at the ask (with ``cross``: buy at the ask, sell at the bid,
  taking liquidity), with a stop-loss ``stop_vols`` GARCH volatilities away (at least
  ``min_stop_ticks`` ticks, at most ``max_stop_bp``).

State is owned by the one process that runs the stage; nothing here allocates per record.
"""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import numpy as np
from numba import njit

from bot4.nbkit import unowned
from bot4.nbkit.hot import hot
from bot4.records import MD_QUOTE, OT_LIMIT, SIDE_BUY, SIDE_SELL, TIF_DAY

FEATURES = (
    "microprice_dev_bp",
    "spread_bp",
    "imbalance",
    "ewma_ret_fast_bp",
    "ewma_ret_mid_bp",
    "ewma_ret_slow_bp",
    "realised_vol_bp",
    "garch_vol_bp",
)
NF = len(FEATURES)
HALF_LIVES = (8.0, 32.0, 128.0)  # ticks
RV_HALF_LIFE = 64.0
PARAMS_VERSION = 1

# columns of the per-instrument state table (float64)
S_BID, S_BIDQ, S_ASK, S_ASKQ, S_MID, S_E0, S_E1, S_E2, S_RV, S_G2, S_EPS2, S_N, S_COOL = range(13)
S_DIMB = 13  # imbalance over ``imbalance_levels`` levels of the book_level input
S_DEPTH = 14  # 1.0 once S_DIMB is known: it then replaces the top-of-book imbalance
NSTATE = 15
# columns of the per-instrument GARCH table
G_OMEGA, G_ALPHA, G_BETA, G_MU = range(4)


def ewma_alpha(half_life: float) -> float:
    return 1.0 - 2.0 ** (-1.0 / half_life)


@njit(nogil=True, cache=True)
def update_features(st, g, inst, price, qty, side, cfg, x):
    """Apply one quote to instrument ``inst``'s state; write its features into ``x``.
    ``cfg``: the kernels' configuration (:func:`default_cfg`; its EWMA coefficients).

    Returns True when both sides are known (x is valid).
    """
    if not update_state(st, g, inst, price, qty, side, cfg):
        return False
    features_of(st, inst, x)
    return True


@njit(nogil=True, cache=True, inline="always")
def update_state(st, g, inst, price, qty, side, cfg):
    """The state part of :func:`update_features` (no ``x``); True when both sides are
    known. ``cfg[0:4]``: the EWMA coefficients (fast, mid, slow returns; realised
    variance)."""
    a_fast, a_mid, a_slow, a_rv = cfg[0], cfg[1], cfg[2], cfg[3]
    if side > 0:
        st[inst, S_BID] = price
        st[inst, S_BIDQ] = qty
    else:
        st[inst, S_ASK] = price
        st[inst, S_ASKQ] = qty
    bid = st[inst, S_BID]
    ask = st[inst, S_ASK]
    bq = st[inst, S_BIDQ]
    aq = st[inst, S_ASKQ]
    if bid <= 0.0 or ask <= 0.0 or bq <= 0.0 or aq <= 0.0 or ask <= bid:
        return False
    mid = 0.5 * (bid + ask)
    last = st[inst, S_MID]
    r = 0.0
    if last > 0.0 and mid != last:  # an unchanged mid: log(1) = +0, the same r
        r = np.log(mid / last) * 1e4
    st[inst, S_MID] = mid
    st[inst, S_E0] += a_fast * (r - st[inst, S_E0])
    st[inst, S_E1] += a_mid * (r - st[inst, S_E1])
    st[inst, S_E2] += a_slow * (r - st[inst, S_E2])
    st[inst, S_RV] += a_rv * (r * r - st[inst, S_RV])
    # GARCH(1,1) recursion on r - mu (bp): sigma2 <- omega + alpha eps^2 + beta sigma2
    if st[inst, S_G2] <= 0.0:
        st[inst, S_G2] = g[inst, G_OMEGA] / max(1e-12, 1.0 - g[inst, G_ALPHA] - g[inst, G_BETA])
    else:
        st[inst, S_G2] = (
            g[inst, G_OMEGA]
            + g[inst, G_ALPHA] * st[inst, S_EPS2]
            + g[inst, G_BETA] * st[inst, S_G2]
        )
    eps = r - g[inst, G_MU]
    st[inst, S_EPS2] = eps * eps
    st[inst, S_N] += 1.0
    return True


@njit(nogil=True, cache=True, inline="always")
def features_of(st, inst, x):
    """The features of instrument ``inst``'s state (both sides known) into ``x``."""
    bid = st[inst, S_BID]
    ask = st[inst, S_ASK]
    bq = st[inst, S_BIDQ]
    aq = st[inst, S_ASKQ]
    mid = st[inst, S_MID]
    micro = (bid * aq + ask * bq) / (bq + aq)
    x[0] = (micro - mid) / mid * 1e4
    x[1] = (ask - bid) / mid * 1e4
    x[2] = st[inst, S_DIMB] if st[inst, S_DEPTH] > 0.0 else (bq - aq) / (bq + aq)
    x[3] = st[inst, S_E0]
    x[4] = st[inst, S_E1]
    x[5] = st[inst, S_E2]
    x[6] = np.sqrt(st[inst, S_RV])
    x[7] = np.sqrt(st[inst, S_G2])


@hot
def _depth_imbalance(dq, st, inst):
    b = 0.0
    a = 0.0
    for j in range(dq.shape[2]):
        b += dq[inst, 0, j]
        a += dq[inst, 1, j]
    if a + b > 0.0:
        st[inst, S_DIMB] = (b - a) / (b + a)
        st[inst, S_DEPTH] = 1.0


@hot
def depth_kernel(levels, dq, st):
    """Apply BOOK_LEVEL records to ``dq`` (n_inst, 2, N): bid / ask size per position,
    positions >= N ignored; then each touched instrument's imbalance over the N levels,
    (bid - ask) / (bid + ask), into ``st[:, S_DIMB]`` (``S_DEPTH`` set), once per run of
    its records. Returns the records applied."""
    n = 0
    n_inst = dq.shape[0]
    depth = dq.shape[2]
    pending = -1  # instrument whose imbalance is not summed yet
    for k in range(levels.shape[0]):
        r = levels[k]
        inst = np.int64(r.instrument)
        if inst <= 0 or inst >= n_inst or r.level >= depth or r.side == 0:
            continue
        if pending >= 0 and pending != inst:
            _depth_imbalance(dq, st, pending)
        dq[inst, 0 if r.side > 0 else 1, r.level] = float(r.qty)
        pending = inst
        n += 1
    if pending >= 0:
        _depth_imbalance(dq, st, pending)
    return n


@hot
def orthogonalise(x, mean, WT, z):
    """z = W (x - mean), as a sum of W's columns (WT is W transposed): lanes are features,
    no reduction is reassociated, so any SIMD width gives identical bits."""
    for k in range(z.shape[0]):
        z[k] = 0.0
    for j in range(x.shape[0]):
        d = x[j] - mean[j]
        for k in range(z.shape[0]):
            z[k] += WT[j, k] * d


@njit(nogil=True, cache=True, inline="always")
def intent_stamp(o, seq, parent, ts_event, ts_recv, now, inst, model_id):
    """An intent's identity and stamps: its own ``seq``, the quote's (``parent``) and the
    quote's event / receive times and the signal time ``now`` (ns)."""
    o.seq = seq
    o.parent_seq = parent
    o.ts_event_ns = ts_event
    o.ts_recv_ns = ts_recv
    o.ts_signal_ns = now
    o.instrument = inst
    o.strategy = 1
    o.order_type = OT_LIMIT
    o.tif = TIF_DAY
    o.model_version = np.uint32(model_id)


@njit(nogil=True, cache=True, inline="always")
def intent_price(o, s, cfg, bid, ask, mid, t, vol):
    """An intent's side, qty, limit and stop from the signal ``s`` and the quote: ``bid``,
    ``ask``, ``mid`` and the tick ``t`` in price units, ``vol`` the realised vol (bp)."""
    o.qty = np.int64(cfg[5])
    o.signal_value = s
    dist = max(cfg[6] * vol * mid / 1e4, cfg[7] * t)
    dist = min(dist, cfg[8] * mid / 1e4)
    dist_units = np.int64(np.ceil(dist / t)) * t
    cross = cfg[12] != 0.0
    if s > 0:
        o.side = SIDE_BUY
        o.limit_price = np.int64(ask if cross else bid)
        o.stop_price = o.limit_price - dist_units
    else:
        o.side = SIDE_SELL
        o.limit_price = np.int64(bid if cross else ask)
        o.stop_price = o.limit_price + dist_units


#: The signals kernel's state (one named tuple, issue 13): the per-instrument state ``st``
#: (rows by instrument id), the GARCH parameters ``g``, the orthogonalisation's ``mean``
#: and ``WT``, the model's weights, ``cfg`` (see :func:`signals_kernel`), the tick sizes,
#: two feature scratch vectors ``x`` and ``z`` and the counters. Owned by the stage
#: (``SignalsStage.kernel_state``); the arrays are the stage's, not copies.
SignalsState = namedtuple("SignalsState", "st g mean WT model cfg tick x z counters")


@hot
def signals_kernel(inp, out, seq, sig, now):
    """One batch: MARKET_DATA in, ORDER_INTENT out. Returns the number of intents.

    ``sig``: the stage's :class:`SignalsState`. Its cfg: [a_fast, a_mid, a_slow, a_rv,
    threshold, qty, stop_vols, min_stop_ticks, max_stop_bp, cooldown, warmup,
    model_version, cross]; counters: [quotes, skipped, intents];
    ``now``: the stage clock (ns) stamped as ``ts_signal_ns``.
    """
    st, g, mean, WT, model, cfg, tick, x, z, counters = unowned(sig)
    n = 0
    n_inst = st.shape[0]
    for i in range(inp.shape[0]):
        r = inp[i]
        inst = np.int64(r.instrument)
        if r.kind != MD_QUOTE:
            continue
        if inst <= 0 or inst >= n_inst or r.price <= 0 or r.qty < 0:
            counters[1] += 1
            continue
        counters[0] += 1
        if not update_state(st, g, inst, float(r.price), float(r.qty), r.side, cfg):
            continue
        if st[inst, S_COOL] > 0.0:
            st[inst, S_COOL] -= 1.0
            continue
        if st[inst, S_N] < cfg[10]:
            continue
        # the features and score only matter once cooldown and warm-up are over (x, z:
        # scratch)
        features_of(st, inst, x)
        orthogonalise(x, mean, WT, z)
        s = model[0]
        for k in range(z.shape[0]):
            s += model[k + 1] * z[k]
        if abs(s) < cfg[4] or not np.isfinite(s):
            continue
        st[inst, S_COOL] = cfg[9]
        o = out[n]
        intent_stamp(o, seq + n, r.seq, r.ts_event_ns, r.ts_recv_ns, now, r.instrument, cfg[11])
        intent_price(o, s, cfg, st[inst, S_BID], st[inst, S_ASK], st[inst, S_MID], tick[inst], x[7])
        n += 1
    counters[2] += n
    return n


@njit(nogil=True, cache=True)
def features_kernel(inp, st, g, cfg, X, insts):
    """Feature rows for every quote that leaves both sides known (calibration, tests):
    row k of ``X`` and its instrument id ``insts[k]``. Returns the number of rows."""
    x = np.empty(X.shape[1])
    n = 0
    n_inst = st.shape[0]
    for i in range(inp.shape[0]):
        r = inp[i]
        inst = np.int64(r.instrument)
        if r.kind != MD_QUOTE or inst <= 0 or inst >= n_inst or r.price <= 0 or r.qty < 0:
            continue
        if update_features(st, g, inst, float(r.price), float(r.qty), r.side, cfg, x):
            X[n, :] = x
            insts[n] = inst
            n += 1
    return n


@njit(nogil=True, cache=True)
def returns_kernel(inp, book, R, insts):
    """Mid log returns (bp) per quote that leaves both sides known, in tick time, the
    series ``update_features`` feeds its GARCH recursion. ``book``: (n_inst, 3) bid, ask,
    last mid. Returns the number of returns written."""
    n = 0
    for i in range(inp.shape[0]):
        r = inp[i]
        inst = np.int64(r.instrument)
        if r.kind != MD_QUOTE or inst <= 0 or inst >= book.shape[0] or r.price <= 0:
            continue
        if r.side > 0:
            book[inst, 0] = r.price
        else:
            book[inst, 1] = r.price
        if book[inst, 0] <= 0 or book[inst, 1] <= book[inst, 0]:
            continue
        mid = 0.5 * (book[inst, 0] + book[inst, 1])
        if book[inst, 2] > 0:
            R[n] = np.log(mid / book[inst, 2]) * 1e4
            insts[n] = inst
            n += 1
        book[inst, 2] = mid
    return n


def default_cfg() -> np.ndarray:
    """The EWMA coefficients in the layout ``signals_kernel`` and ``features_kernel`` read."""
    cfg = np.zeros(13)
    cfg[0:4] = [
        ewma_alpha(HALF_LIVES[0]),
        ewma_alpha(HALF_LIVES[1]),
        ewma_alpha(HALF_LIVES[2]),
        ewma_alpha(RV_HALF_LIFE),
    ]
    return cfg


def default_garch(n: int) -> np.ndarray:
    g = np.zeros((n, 4))
    g[:, G_OMEGA] = 0.05
    g[:, G_ALPHA] = 0.05
    g[:, G_BETA] = 0.9
    return g


def load_params(path: str | None, symbols: dict[int, str], n_inst: int):
    """(garch table, orthogonaliser) from a ``bot4 calibrate`` file, or defaults."""
    from bot4.models.orthogonal import Orthogonaliser

    g = default_garch(n_inst)
    ortho = Orthogonaliser.identity(NF)
    if not path:
        return g, ortho
    doc = json.loads(Path(path).read_text())
    if doc.get("bot4_params_version") != PARAMS_VERSION:
        raise ValueError(
            f"{path}: bot4_params_version {doc.get('bot4_params_version')!r}, expected {PARAMS_VERSION}"
        )
    if tuple(doc.get("features", ())) != FEATURES:
        raise ValueError(
            f"{path}: fitted on features {doc.get('features')}, this build computes {list(FEATURES)}"
        )
    for iid, sym in symbols.items():
        p = doc.get("garch", {}).get(sym)
        if p and iid < n_inst:
            g[iid] = (p["omega"], p["alpha"], p["beta"], p.get("mu", 0.0))
    if "orthogonaliser" in doc:
        ortho = Orthogonaliser.from_dict(doc["orthogonaliser"])
    return g, ortho


DEFAULT_MODEL = np.array([0.0, 0.6, 0.0, 1.5, -0.8, 0.0, 0.0, 0.0, 0.0])  # bias, then per signal


def load_model(path: str | None) -> np.ndarray:
    """Linear model weights [bias, w_1..w_F], memory-mapped read-only from a ``.npy`` file."""
    if not path:
        return DEFAULT_MODEL.copy()
    w = np.load(path, mmap_mode="r")
    if w.dtype != np.float64 or w.shape != (NF + 1,):
        raise ValueError(
            f"{path}: model weights must be float64 of shape ({NF + 1},), got {w.dtype} {w.shape}"
        )
    return w
