"""Signals stage: ticks in, order intents out, in one allocation-free numba kernel.

Per instrument (state in preallocated arrays indexed by instrument id), on every quote:

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

Restart state: the top of book, EWMAs, realised and GARCH variances restart empty and
warm up again over the first ticks (``warmup`` ticks before any intent).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from numba import njit

from bot4.logs import log_event
from bot4.records import MD_QUOTE, OT_LIMIT, SIDE_BUY, SIDE_SELL, TIF_DAY
from bot4.stages.base import ParamError, Stage, check_number, check_type

log = logging.getLogger("bot4.stage")

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
def update_features(st, g, inst, price, qty, side, a_fast, a_mid, a_slow, a_rv, x):
    """Apply one quote to instrument ``inst``'s state; write its features into ``x``.

    Returns True when both sides are known (x is valid).
    """
    if not update_state(st, g, inst, price, qty, side, a_fast, a_mid, a_slow, a_rv):
        return False
    features_of(st, inst, x)
    return True


@njit(nogil=True, cache=True, inline="always")
def update_state(st, g, inst, price, qty, side, a_fast, a_mid, a_slow, a_rv):
    """The state part of :func:`update_features` (no ``x``); True when both sides are
    known."""
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


@njit(nogil=True, cache=True)
def _depth_imbalance(dq, st, inst):
    b = 0.0
    a = 0.0
    for j in range(dq.shape[2]):
        b += dq[inst, 0, j]
        a += dq[inst, 1, j]
    if a + b > 0.0:
        st[inst, S_DIMB] = (b - a) / (b + a)
        st[inst, S_DEPTH] = 1.0


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
def orthogonalise(x, mean, WT, z):
    """z = W (x - mean), as a sum of W's columns (WT is W transposed): lanes are features,
    no reduction is reassociated, so any SIMD width gives identical bits."""
    for k in range(z.shape[0]):
        z[k] = 0.0
    for j in range(x.shape[0]):
        d = x[j] - mean[j]
        for k in range(z.shape[0]):
            z[k] += WT[j, k] * d


@njit(nogil=True, cache=True)
def signals_kernel(inp, out, seq, st, g, mean, WT, model, cfg, tick, x, z, counters, now):
    """One batch: MARKET_DATA in, ORDER_INTENT out. Returns the number of intents.

    cfg: [a_fast, a_mid, a_slow, a_rv, threshold, qty, stop_vols, min_stop_ticks,
    max_stop_bp, cooldown, warmup, model_version, cross]; counters: [quotes, skipped,
    intents];
    ``now``: the stage clock (ns) stamped as ``ts_signal_ns``.
    """
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
        if not update_state(
            st, g, inst, float(r.price), float(r.qty), r.side, cfg[0], cfg[1], cfg[2], cfg[3]
        ):
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
        o.seq = seq + n
        o.parent_seq = r.seq
        o.ts_event_ns = r.ts_event_ns
        o.ts_recv_ns = r.ts_recv_ns
        o.ts_signal_ns = now
        o.instrument = r.instrument
        o.strategy = 1
        o.order_type = OT_LIMIT
        o.tif = TIF_DAY
        o.qty = np.int64(cfg[5])
        o.signal_value = s
        o.model_version = np.uint32(cfg[11])
        mid = st[inst, S_MID]
        t = tick[inst]
        dist = max(cfg[6] * x[7] * mid / 1e4, cfg[7] * t)
        dist = min(dist, cfg[8] * mid / 1e4)
        dist_units = np.int64(np.ceil(dist / t)) * t
        cross = cfg[12] != 0.0
        if s > 0:
            o.side = SIDE_BUY
            o.limit_price = np.int64(st[inst, S_ASK] if cross else st[inst, S_BID])
            o.stop_price = o.limit_price - dist_units
        else:
            o.side = SIDE_SELL
            o.limit_price = np.int64(st[inst, S_BID] if cross else st[inst, S_ASK])
            o.stop_price = o.limit_price + dist_units
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
        if update_features(
            st, g, inst, float(r.price), float(r.qty), r.side, cfg[0], cfg[1], cfg[2], cfg[3], x
        ):
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


class SignalsStage(Stage):
    """params: ``params_file`` (bot4 calibrate output), ``model_file`` (.npy weights),
    ``model_version``, ``threshold`` (1.0), ``qty`` (100), ``stop_vols`` (3),
    ``min_stop_ticks`` (2), ``max_stop_bp`` (200), ``cooldown`` (50 ticks), ``warmup`` (20),
    ``cross`` (false: intents join the touch; true: they take liquidity at the far touch);
    registry models (docs/models.md): ``model_slot`` (the registry slot whose champion and
    challenger decide, instead of ``model_file``), ``model_registry`` (default
    ``$BOT4_DATA_DIR/models``), ``model_watch`` (true: pick up a new assignment at a batch
    boundary; false: the one at start for the whole run), ``rollout`` (a table: the
    automatic rollback and canary ramp of ``bot4 replay``, keys ``horizon``,
    ``min_trades``, ``checkpoint_trades``, ``max_checkpoints``, ``alpha``, ``enabled``;
    bot4.models.rollout); ``imbalance_levels`` (1: the
    imbalance feature is the top of book's; N > 1: it is (bid - ask) / (bid + ask) over the
    best N levels of the optional second input, the md stage's ``book_level`` ring, once
    that input has delivered them)."""

    kind = "signals"
    arity = (1, 2, 1, 1)
    input_types = ("MARKET_DATA", "BOOK_LEVEL")
    output_types = ("ORDER_INTENT",)
    restart_state = "top of book, depth, EWMAs, realised and GARCH variance restart empty (warm-up)"
    params_keys = frozenset(
        {
            "params_file",
            "model_file",
            "model_version",
            "threshold",
            "qty",
            "stop_vols",
            "min_stop_ticks",
            "max_stop_bp",
            "cooldown",
            "warmup",
            "cross",
            "model_registry",
            "model_slot",
            "model_watch",
            "rollout",
            "imbalance_levels",
        }
    )

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        check_type(params, "params_file", str, "a path string")
        check_type(params, "model_file", str, "a path string")
        check_number(params, "model_version", integer=True, lo=0)
        for key in ("threshold", "stop_vols", "min_stop_ticks", "max_stop_bp", "cooldown"):
            check_number(params, key, lo=0)
        check_number(params, "qty", lo=1)
        check_number(params, "warmup", lo=0)
        check_type(params, "cross", bool, "true or false")
        check_type(params, "model_registry", str, "a directory path string")
        check_type(params, "model_slot", str, "a slot name")
        check_type(params, "model_watch", bool, "true or false")
        check_number(params, "imbalance_levels", integer=True, lo=1, hi=255)
        if "rollout" in params:
            from bot4.models.rollout import ROLLOUT_KEYS

            r = params["rollout"]
            if not isinstance(r, dict) or set(r) - ROLLOUT_KEYS:
                raise ParamError(
                    "rollout",
                    f"a table with keys among {', '.join(sorted(ROLLOUT_KEYS))}, got {r!r}",
                )
            for key in ROLLOUT_KEYS - {"enabled", "alpha"}:
                check_number(r, key, integer=True, lo=1)
            check_number(r, "alpha", lo=0, hi=1)
            check_type(r, "enabled", bool, "true or false")
        if "model_slot" in params and "model_file" in params:
            raise ParamError("model_slot", "give model_slot (registry) or model_file, not both")

    @classmethod
    def validate(cls, params):
        """The parameter file and the model weights load (they are small: read whole)."""
        from bot4.records import DEFAULT_INSTRUMENTS

        table = DEFAULT_INSTRUMENTS
        symbols = {int(i): table.symbol_of(i) for i in table.ids}
        for key, load in (
            ("params_file", lambda f: load_params(f, symbols, int(max(table.ids)) + 1)),
            ("model_file", load_model),
        ):
            path = params.get(key)
            if not path:
                continue
            if not Path(path).is_file():
                raise ParamError(key, f"{path}: no such file")
            try:
                load(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                msg = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
                raise ParamError(key, f"cannot be used: {msg}") from None
        if params.get("model_slot"):
            from bot4.stages.signals_models import check_slot

            check_slot(params.get("model_registry"), params["model_slot"])

    def setup(self) -> None:
        from bot4.records import DEFAULT_INSTRUMENTS

        p = self.params
        table = DEFAULT_INSTRUMENTS
        n_inst = int(max(table.ids)) + 1
        self.st = np.zeros((n_inst, NSTATE))
        self.tick = np.ones(n_inst)
        symbols = {}
        for iid in table.ids:
            self.tick[iid] = float(table.tick_size(iid))
            symbols[int(iid)] = table.symbol_of(iid)
        self.g, ortho = load_params(p.get("params_file"), symbols, n_inst)
        self.mean = np.ascontiguousarray(ortho.mean)
        self.WT = np.ascontiguousarray(ortho.W.T)
        self.model = load_model(p.get("model_file"))
        self.cfg = np.array(
            [
                ewma_alpha(HALF_LIVES[0]),
                ewma_alpha(HALF_LIVES[1]),
                ewma_alpha(HALF_LIVES[2]),
                ewma_alpha(RV_HALF_LIFE),
                float(p.get("threshold", 1.0)),
                float(p.get("qty", 100)),
                float(p.get("stop_vols", 3.0)),
                float(p.get("min_stop_ticks", 2)),
                float(p.get("max_stop_bp", 200)),
                float(p.get("cooldown", 50)),
                float(p.get("warmup", 20)),
                float(p.get("model_version", 1)),
                1.0 if p.get("cross", False) else 0.0,
            ]
        )
        self.x = np.zeros(NF)
        self.z = np.zeros(NF)
        self.counters = np.zeros(3, np.int64)
        # depth feature: sizes per level of the book_level input (input 1), if wired
        self.dq = np.zeros((n_inst, 2, int(p.get("imbalance_levels", 1))))
        self.depth_on = len(self.inputs) > 1 and self.dq.shape[2] > 1
        self.depth_updates = 0
        self.router = None
        if p.get("model_slot"):
            from bot4.stages.signals_models import ModelRouter

            self.router = ModelRouter(
                self, p.get("model_registry"), p["model_slot"], p.get("model_watch", True)
            )

    def process(self, i, batch, outs, counts, seq):
        if i == 1:  # book_level: depth state only, no intents
            if self.depth_on:
                self.depth_updates += depth_kernel(batch, self.dq, self.st)
            counts[0] = 0
            return seq
        if self.router is not None:
            n = self.router.process(batch, outs[0], seq)
            counts[0] = n
            return seq + n
        n = signals_kernel(
            batch,
            outs[0],
            seq,
            self.st,
            self.g,
            self.mean,
            self.WT,
            self.model,
            self.cfg,
            self.tick,
            self.x,
            self.z,
            self.counters,
            self.clock(),
        )
        counts[0] = n
        return seq + n

    def pending(self, now_ns: int) -> int:
        if self.router is not None and self.router.n_rows:
            self.router.shadow_pass()  # after the loop committed the batch's intents
        return 0

    def on_drain(self) -> None:
        """Shutdown policy: flush the shadow log; logs the summary."""
        if self.router is not None:
            self.router.flush_shadow()
        log_event(log, logging.INFO, "stage_summary", "signals summary", summary=self.summary())

    def summary(self) -> dict:
        q, skipped, intents = (int(v) for v in self.counters)
        out = {"quotes": q, "skipped": skipped, "intents": intents}
        if self.depth_on:
            out["depth_updates"] = self.depth_updates
        if self.router is not None:
            out.update(self.router.summary())
        return out
