"""Signals stage: ticks in, order intents out, in one allocation-free numba kernel
(``bot4.signals.features``: what is computed and how; ``bot4.signals.routing``: registry
models). This module is the stage: params -> state -> kernel calls -> summary.

Restart state: the top of book, EWMAs, realised and GARCH variances restart empty and
warm up again over the first ticks (``warmup`` ticks before any intent).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bot4.logs import log_event
from bot4.signals.features import (  # noqa: F401  (re-exported: the stage's public names)
    DEFAULT_MODEL,
    FEATURES,
    G_ALPHA,
    G_BETA,
    G_MU,
    G_OMEGA,
    HALF_LIVES,
    NF,
    NSTATE,
    PARAMS_VERSION,
    RV_HALF_LIFE,
    S_ASK,
    S_ASKQ,
    S_BID,
    S_BIDQ,
    S_COOL,
    S_DEPTH,
    S_DIMB,
    S_E0,
    S_E1,
    S_E2,
    S_EPS2,
    S_G2,
    S_MID,
    S_N,
    S_RV,
    SignalsState,
    default_cfg,
    default_garch,
    depth_kernel,
    ewma_alpha,
    features_kernel,
    features_of,
    load_model,
    load_params,
    orthogonalise,
    returns_kernel,
    signals_kernel,
    update_features,
    update_state,
)
from bot4.stages.base import ParamError, Stage, check_number, check_type

log = logging.getLogger("bot4.stage")


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
    def routes_models(cls, params):
        return bool(params.get("model_slot"))

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
        n = signals_kernel(batch, outs[0], seq, self.kernel_state(), self.clock())
        counts[0] = n
        return seq + n

    def hot_tables(self) -> SignalsState:
        return self.kernel_state()

    def kernel_state(self) -> SignalsState:
        """The kernel's state object over this stage's arrays (built per call: a model
        reload replaces ``model``)."""
        return SignalsState(self.st, self.g, self.mean, self.WT, self.model, self.cfg,
                            self.tick, self.x, self.z, self.counters)  # fmt: skip

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
