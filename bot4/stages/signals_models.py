"""The signals stage with registry models: champion/challenger routing in the kernel,
shadow scoring after publication, hot swap at batch boundaries.

Used when a signals stage's params name ``model_slot`` (see docs/models.md); without it
the stage runs :func:`bot4.stages.signals.signals_kernel` exactly as before, so replays of
topologies that do not use the registry are unchanged byte for byte.

Routing, per quote that leaves the instrument out of cooldown and warm-up (``route``):

* ``champion`` — the champion decides;
* ``split`` (canary and A/B) — the challenger decides when ``splitmix64(key) % 10000 <
  pct_bp``, ``key`` the instrument (``split = instrument``) or the instrument and the
  quote's sequence number (``split = tick``): a pure function of the record, so a replay
  routes every tick the same way; the other ticks the champion decides. One cooldown per
  instrument, whoever decided (one position);
* ``shadow`` — the champion decides; the challenger is scored on every quote, but later:
  the kernel copies each quote's features into ``shadow_rows`` and :func:`shadow_kernel`
  scores them from the stage's ``pending`` hook, which the loop calls after it committed
  the batch's intents, so shadow scoring adds nothing to tick-to-order. The challenger has
  its own cooldown; its would-be intents go to the stage's shadow log, never to a ring.

Every intent carries the deciding model's registry id in ``model_version`` (risk copies
it into ``ORDER.model_id``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from numba import njit

from bot4.models.scoring import score
from bot4.nbkit import splitmix64
from bot4.records import MD_QUOTE, ORDER_INTENT, OT_LIMIT, SIDE_BUY, SIDE_SELL, TIF_DAY
from bot4.stages import signals as S

log = logging.getLogger("bot4.signals")

# route words (int64)
R_MODE, R_PCT_BP, R_SPLIT, R_CHAMPION, R_CHALLENGER = range(5)
NROUTE = 5
MODE_CHAMPION, MODE_SHADOW, MODE_SPLIT = 0, 1, 2
SPLIT_TICK, SPLIT_INSTRUMENT = 0, 1
# routed counters (int64)
RC_CHAMPION, RC_CHALLENGER, RC_SHADOW, RC_CHALLENGER_TICKS, RC_DECIDED_TICKS, RC_SHADOW_SCORED = (
    range(6)
)
NRC = 6
# shadow row meta columns (float64, after the NF features)
SM_INST, SM_SEQ, SM_TS_EVENT, SM_TS_RECV, SM_N, SM_BID, SM_ASK, SM_MID = range(8)
NSM = 8


@njit(nogil=True, cache=True, inline="always")
def to_challenger(route, inst, tick_seq):
    """True when the challenger decides this quote (split mode only)."""
    if route[R_MODE] != MODE_SPLIT:
        return False
    key = np.uint64(inst)
    if route[R_SPLIT] == SPLIT_TICK:
        key = (key << np.uint64(40)) ^ np.uint64(tick_seq)
    return splitmix64(key) % np.uint64(10000) < np.uint64(route[R_PCT_BP])


@njit(nogil=True, cache=True, inline="always")
def _intent(o, seq, parent, ts_event, ts_recv, now, inst, s, model_id, cfg, bid, ask, mid, t, vol):
    o.seq = seq
    o.parent_seq = parent
    o.ts_event_ns = ts_event
    o.ts_recv_ns = ts_recv
    o.ts_signal_ns = now
    o.instrument = inst
    o.strategy = 1
    o.order_type = OT_LIMIT
    o.tif = TIF_DAY
    o.qty = np.int64(cfg[5])
    o.signal_value = s
    o.model_version = np.uint32(model_id)
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


@njit(nogil=True, cache=True)
def signals_routed_kernel(
    inp, out, seq, st, g, mean, WT, champ, chall, route, cfg, tick, x, z, counters, rc,
    shadow_rows, now,
):  # fmt: skip
    """One batch, as ``signals_kernel`` with the decider chosen per quote by ``route``.
    ``champ`` / ``chall``: model array tuples (bot4.models.artifact). In shadow mode every
    quote past warm-up is copied to ``shadow_rows`` (features, then the ``SM_*`` meta).
    Returns (intents written, shadow rows written)."""
    n = 0
    ns = 0
    n_inst = st.shape[0]
    nf = x.shape[0]
    shadow = route[R_MODE] == MODE_SHADOW
    for i in range(inp.shape[0]):
        r = inp[i]
        inst = np.int64(r.instrument)
        if r.kind != MD_QUOTE:
            continue
        if inst <= 0 or inst >= n_inst or r.price <= 0 or r.qty < 0:
            counters[1] += 1
            continue
        counters[0] += 1
        if not S.update_state(
            st, g, inst, float(r.price), float(r.qty), r.side, cfg[0], cfg[1], cfg[2], cfg[3]
        ):
            continue
        if shadow and st[inst, S.S_N] >= cfg[10]:
            S.features_of(st, inst, x)
            row = shadow_rows[ns]
            for k in range(nf):
                row[k] = x[k]
            row[nf + SM_INST] = inst
            row[nf + SM_SEQ] = r.seq
            row[nf + SM_TS_EVENT] = r.ts_event_ns
            row[nf + SM_TS_RECV] = r.ts_recv_ns
            row[nf + SM_N] = st[inst, S.S_N]
            row[nf + SM_BID] = st[inst, S.S_BID]
            row[nf + SM_ASK] = st[inst, S.S_ASK]
            row[nf + SM_MID] = st[inst, S.S_MID]
            ns += 1
        if st[inst, S.S_COOL] > 0.0:
            st[inst, S.S_COOL] -= 1.0
            continue
        if st[inst, S.S_N] < cfg[10]:
            continue
        S.features_of(st, inst, x)
        S.orthogonalise(x, mean, WT, z)
        rc[RC_DECIDED_TICKS] += 1
        if to_challenger(route, inst, r.seq):
            rc[RC_CHALLENGER_TICKS] += 1
            s = score(chall[0], chall[1], chall[2], chall[3], chall[4], z)
            model_id = route[R_CHALLENGER]
        else:
            s = score(champ[0], champ[1], champ[2], champ[3], champ[4], z)
            model_id = route[R_CHAMPION]
        if abs(s) < cfg[4] or not np.isfinite(s):
            continue
        st[inst, S.S_COOL] = cfg[9]
        _intent(
            out[n], seq + n, r.seq, r.ts_event_ns, r.ts_recv_ns, now, r.instrument, s,
            model_id, cfg, st[inst, S.S_BID], st[inst, S.S_ASK], st[inst, S.S_MID],
            tick[inst], x[7],
        )  # fmt: skip
        if model_id == route[R_CHAMPION]:
            rc[RC_CHAMPION] += 1
        else:
            rc[RC_CHALLENGER] += 1
        n += 1
    counters[2] += n
    return n, ns


@njit(nogil=True, cache=True)
def shadow_kernel(
    rows, nrows, chall, model_id, cool, mean, WT, cfg, tick, x, z, log_out, n_log, now, rc
):
    """Score the challenger on the copied quotes, in order, with its own per-instrument
    cooldown ``cool``; would-be intents into ``log_out[n_log:]`` (seq: the shadow log's
    own count). Returns the new ``n_log`` (stops early when the log is full)."""
    nf = x.shape[0]
    for i in range(nrows):
        if n_log >= log_out.shape[0]:
            break
        row = rows[i]
        inst = np.int64(row[nf + SM_INST])
        if cool[inst] > 0.0:
            cool[inst] -= 1.0
            continue
        for k in range(nf):
            x[k] = row[k]
        S.orthogonalise(x, mean, WT, z)
        s = score(chall[0], chall[1], chall[2], chall[3], chall[4], z)
        rc[RC_SHADOW_SCORED] += 1
        if abs(s) < cfg[4] or not np.isfinite(s):
            continue
        cool[inst] = cfg[9]
        _intent(
            log_out[n_log], n_log + 1, np.uint64(row[nf + SM_SEQ]),
            np.int64(row[nf + SM_TS_EVENT]), np.int64(row[nf + SM_TS_RECV]), now, inst, s,
            model_id, cfg, row[nf + SM_BID], row[nf + SM_ASK], row[nf + SM_MID], tick[inst],
            x[7],
        )  # fmt: skip
        rc[RC_SHADOW] += 1
        n_log += 1
    return n_log


MODE_CODES = {
    "champion": MODE_CHAMPION,
    "shadow": MODE_SHADOW,
    "canary": MODE_SPLIT,
    "ab": MODE_SPLIT,
}
SHADOW_LOG = 8192  # shadow intents buffered before a flush to the shadow file


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
        nf = len(S.FEATURES)
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
        self.load()

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
            champ = self.registry.load(a.champion, S.FEATURES)
            chall = self.registry.load(a.challenger, S.FEATURES) if a.challenger else champ
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
        st = self.stage
        n, ns = signals_routed_kernel(
            batch, out, seq, st.st, st.g, st.mean, st.WT, self.champ, self.chall, self.route,
            st.cfg, st.tick, st.x, st.z, st.counters, self.rc, self.shadow_rows, st.clock(),
        )  # fmt: skip
        self.n_rows = ns
        return n

    def shadow_pass(self) -> None:
        """Score the quotes the last batch copied (the stage's ``pending`` hook: after the
        loop committed that batch's intents)."""
        self._score_shadow()
        if self.n_log >= SHADOW_LOG // 2:
            self.flush_shadow()

    def _score_shadow(self) -> None:
        st = self.stage
        if self.n_rows and self.route[R_MODE] == MODE_SHADOW:
            n0 = self.n_log
            self.n_log = shadow_kernel(
                self.shadow_rows, self.n_rows, self.chall, self.route[R_CHALLENGER], self.cool,
                st.mean, st.WT, st.cfg, st.tick, st.x, st.z, self.log, self.n_log, st.clock(),
                self.rc,
            )  # fmt: skip
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


def read_shadow_log(path: str | Path) -> np.ndarray:
    """The would-be intents a shadow challenger recorded (ORDER_INTENT records)."""
    data = Path(path).read_bytes()
    n = len(data) // ORDER_INTENT.itemsize
    return np.frombuffer(data[: n * ORDER_INTENT.itemsize], ORDER_INTENT).copy()


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
                reg.load(mid, S.FEATURES, prefault=False)
    except ModelError as exc:
        raise ParamError("model_slot", f"cannot be used: {exc}") from None
