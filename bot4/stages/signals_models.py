"""The signals stage with registry models (``model_slot``, docs/models.md): the registry
side (:class:`ModelRouter`: maps the slot's models, swaps at batch boundaries, runs the
shadow pass and writes the shadow log) and the slot check of ``validate``. The routing
kernels and their route words are in :mod:`bot4.signals.routing`."""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from bot4.records import ORDER_INTENT
from bot4.signals.features import FEATURES
from bot4.signals.routing import (  # noqa: F401  (re-exported)
    MODE_CHAMPION,
    MODE_CODES,
    MODE_SHADOW,
    MODE_SPLIT,
    NRC,
    NROUTE,
    NSM,
    R_CHALLENGER,
    R_CHAMPION,
    R_MODE,
    R_PCT_BP,
    R_SPLIT,
    RC_CHALLENGER,
    RC_CHALLENGER_TICKS,
    RC_CHAMPION,
    RC_DECIDED_TICKS,
    RC_SHADOW,
    RC_SHADOW_SCORED,
    SHADOW_LOG,
    SM_ASK,
    SM_BID,
    SM_INST,
    SM_MID,
    SM_N,
    SM_SEQ,
    SM_TS_EVENT,
    SM_TS_RECV,
    SPLIT_INSTRUMENT,
    SPLIT_TICK,
    RoutedState,
    read_shadow_log,
    shadow_kernel,
    signals_routed_kernel,
    to_challenger,
)

log = logging.getLogger("bot4.signals")


class ModelRouter:
    """The registry side of a signals stage: maps the slot's models, keeps the route
    words, polls the slot's generation word at batch boundaries and swaps, runs the shadow
    pass, writes the shadow log. Owned by one stage process."""

    def __init__(self, stage, registry_root: str | None, slot: str, watch: bool) -> None:
        from bot4.models.registry import GenerationWatch, Registry

        self.stage = stage
        self.registry = Registry(registry_root)
        self.slot = slot
        self.watch = GenerationWatch(self.registry.gen_path(slot)) if watch else None
        self.route = np.zeros(NROUTE, np.int64)
        self.rc = np.zeros(NRC, np.int64)
        self.generation = -1
        self.swaps = 0
        self.last_load_ns = 0
        nf = len(FEATURES)
        self.shadow_rows = np.zeros((int(getattr(stage.spec, "batch", 0) or 1024), nf + NSM))
        self.n_rows = 0
        self.cool = np.zeros(stage.st.shape[0])
        self.log = np.zeros(SHADOW_LOG, ORDER_INTENT)
        self.n_log = 0
        self.shadow_written = 0
        #: callable(intents) or None: sees each shadow pass's would-be intents (a replay's
        #: rollout evaluates them, bot4/replay/models.py)
        self.on_shadow = None
        self.shadow_path = (
            self.registry.root / "shadow" / f"{stage.instance}.{stage.spec.name}.{slot}.intents"
        )
        self.state = self.rs = None  # the kernels' RoutedState (_bind)
        self.load()

    def _bind(self) -> None:
        """(Re)build the kernels' state object: the stage's arrays (fixed after its
        setup) and the router's current ones."""
        s = self.stage
        self.state = RoutedState(
            s.st, s.g, s.mean, s.WT, s.cfg, s.tick, s.x, s.z, s.counters, self.route, self.rc,
            self.champ, self.chall, self.shadow_rows, self.cool, self.log,
        )  # fmt: skip
        self.rs = tuple(self.state)  # what the kernels get (RoutedState's doc: why)

    # -- assignment ------------------------------------------------------------------
    def load(self) -> None:
        """Map the slot's current assignment (called at setup and on a generation change;
        between batches). A model that fails to load keeps the old assignment (logged)."""
        from bot4.models.artifact import ModelError

        t0 = time.perf_counter_ns()
        a = self.registry.assignment(self.slot)
        if not a.champion:
            if self.generation < 0:
                raise ModelError(
                    f"model slot {self.slot!r} of {self.registry.root} has no champion "
                    "(bot4 models promote ID)"
                )
            return
        try:
            champ = self.registry.load(a.champion, FEATURES)
            chall = self.registry.load(a.challenger, FEATURES) if a.challenger else champ
        except ModelError:
            if self.generation < 0:
                raise
            log.error("signals: generation %d of slot %s not loaded, keeping %d", a.generation,
                      self.slot, self.generation, exc_info=False)  # fmt: skip
            self.generation = a.generation  # do not retry every batch; the next change will
            return
        self.flush_shadow()
        self.champ, self.chall = champ.arrays, chall.arrays
        self._keep = (champ, chall)  # the mappings live as long as their views are in use
        self.route[R_MODE] = MODE_CODES[a.mode] if a.challenger else MODE_CHAMPION
        self.route[R_PCT_BP] = int(round(a.pct * 100))
        self.route[R_SPLIT] = SPLIT_INSTRUMENT if a.split == "instrument" else SPLIT_TICK
        self.route[R_CHAMPION] = a.champion
        self.route[R_CHALLENGER] = a.challenger or a.champion
        self._bind()
        if self.generation >= 0:
            self.swaps += 1
            log.info("signals: slot %s generation %d: champion %d, challenger %d (%s %.2f%%)",
                     self.slot, a.generation, a.champion, a.challenger, a.mode, a.pct)  # fmt: skip
        self.generation = a.generation
        self.last_load_ns = time.perf_counter_ns() - t0

    def poll(self) -> None:
        """One load of the generation word; a change reloads (at this batch boundary)."""
        if self.watch is not None and self.watch.read() != self.generation:
            self.load()

    # -- per batch -------------------------------------------------------------------
    def process(self, batch, out, seq) -> int:
        self.poll()
        if self.n_rows:
            self.shadow_pass()
        if len(batch) > self.shadow_rows.shape[0]:
            self.shadow_rows = np.zeros((len(batch), self.shadow_rows.shape[1]))
            self._bind()
        n, ns = signals_routed_kernel(batch, out, seq, self.rs, self.stage.clock())
        self.n_rows = ns
        return n

    def shadow_pass(self) -> None:
        """Score the quotes the last batch copied (the stage's ``pending`` hook: after the
        loop committed that batch's intents)."""
        self._score_shadow()
        if self.n_log >= SHADOW_LOG // 2:
            self.flush_shadow()

    def _score_shadow(self) -> None:
        if self.n_rows and self.route[R_MODE] == MODE_SHADOW:
            n0 = self.n_log
            self.n_log = shadow_kernel(self.rs, self.n_rows, self.n_log, self.stage.clock())
            if self.on_shadow is not None and self.n_log > n0:
                self.on_shadow(self.log[n0 : self.n_log])
        self.n_rows = 0

    def flush_shadow(self) -> None:
        """Append the buffered would-be intents to the shadow file (raw ORDER_INTENT
        records); rare: every SHADOW_LOG/2 intents, at a swap, at the drain."""
        self._score_shadow()
        if not self.n_log:
            return
        self.shadow_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.shadow_path, "ab") as f:
            f.write(self.log[: self.n_log].tobytes())
            os.fsync(f.fileno())
        self.shadow_written += self.n_log
        self.n_log = 0

    def summary(self) -> dict:
        return {
            "model_slot": self.slot,
            "model_generation": int(self.generation),
            "model_swaps": self.swaps,
            "champion": int(self.route[R_CHAMPION]),
            "challenger": int(self.route[R_CHALLENGER]) if self.route[R_MODE] else 0,
            "champion_intents": int(self.rc[RC_CHAMPION]),
            "challenger_intents": int(self.rc[RC_CHALLENGER]),
            "challenger_ticks": int(self.rc[RC_CHALLENGER_TICKS]),
            "decided_ticks": int(self.rc[RC_DECIDED_TICKS]),
            "shadow_scored": int(self.rc[RC_SHADOW_SCORED]),
            "shadow_intents": int(self.rc[RC_SHADOW]),
            "shadow_log": str(self.shadow_path) if self.shadow_written else "",
        }


def check_slot(registry_root: str | None, slot: str) -> None:
    """``validate`` of a signals stage with ``model_slot``: the slot has a champion and
    every model it names maps, validates and has this build's feature schema."""
    from bot4.models.artifact import ModelError
    from bot4.models.registry import Registry
    from bot4.stages.base import ParamError

    reg = Registry(registry_root)
    try:
        a = reg.assignment(slot)
        if not a.champion:
            raise ModelError(
                f"slot {slot!r} of {reg.root} has no champion (bot4 models promote ID)"
            )
        for mid in (a.champion, a.challenger):
            if mid:
                reg.load(mid, FEATURES, prefault=False)
    except ModelError as exc:
        raise ParamError("model_slot", f"cannot be used: {exc}") from None
