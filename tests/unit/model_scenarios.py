"""Replay scenarios for the model rollout: a market whose next move the book imbalance
predicts, a registry with the default linear model and challengers, a topology that
routes through a registry slot. Used by tests/unit/test_model_replay.py."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from bot4.models.artifact import linear_model
from bot4.models.registry import Registry, promote, set_challenger
from bot4.pipeline.topology import load_topology
from bot4.records import MARKET_DATA, MD_QUOTE, MDF_SYNTHETIC, SIDE_BUY, SIDE_SELL
from bot4.replay.latency import LatencyConfig
from bot4.replay.sources import DataSource
from bot4.stages import signals as S

T0 = 1_340_285_400_000_000_000  # 2012-06-21 13:30 UTC
TICK = 100  # price units (1 cent)
LATENCY = LatencyConfig.from_specs(
    ["feed=const:5us", "order=const:20us", "report=const:20us", "compute=const:1us"]
)


def imbalance_market(
    cycles: int,
    seed: int,
    *,
    p: float = 0.9,
    instruments: int = 2,
    dt_ns: int = 1_000_000,
    big: int = 2000,
    small: int = 200,
) -> DataSource:
    """``cycles`` rounds over ``instruments`` instruments of two quotes each: the mid moves
    one tick, then both sides are quoted around it with sizes whose imbalance (big on the
    bid: up) announces the next move, right with probability ``p``. The side that moves
    first is quoted first, so the book is locked (no decision) until the second quote:
    each decision sees the whole signal. Events every ``dt_ns``."""
    rng = np.random.default_rng(seed)
    n = cycles * instruments * 2
    out = np.zeros(n, MARKET_DATA)
    mids = np.array([100 * 10_000 * (1 + i) + 50 for i in range(instruments)], np.int64)
    sig = rng.choice([-1, 1], instruments)
    k = 0
    for _c in range(cycles):
        for i in range(instruments):
            move = sig[i] if rng.random() < p else -sig[i]
            mids[i] += move * TICK
            sig[i] = rng.choice([-1, 1])
            bq, aq = (big, small) if sig[i] > 0 else (small, big)
            first = SIDE_BUY if move > 0 else SIDE_SELL
            for side in (first, -first):
                r = out[k]
                r["ts_event_ns"] = T0 + k * dt_ns
                r["instrument"] = i + 1
                r["kind"] = MD_QUOTE
                r["flags"] = MDF_SYNTHETIC
                r["side"] = side
                r["price"] = mids[i] - 50 if side == SIDE_BUY else mids[i] + 50
                r["qty"] = bq if side == SIDE_BUY else aq
                k += 1
    return DataSource("synthetic", None, n, T0, int(out["ts_event_ns"][-1]), _data=out)


def registry(root: Path, challenger: str = "equal") -> Registry:
    """Model 1: the default linear model (champion; its imbalance weight reads the signal);
    model 2: ``equal`` (the same weights) or ``worse``: momentum only (the fast EWMA
    return, which this market makes independent of the next move), so it crosses the
    spread on no information: worse by construction (markout about -half spread against
    the champion's + (2p - 1) tick - half spread)."""
    reg = Registry(root)
    w = S.DEFAULT_MODEL.copy()
    reg.register(linear_model(w, S.FEATURES), name="default", features=S.FEATURES)
    w2 = w.copy()
    if challenger == "worse":
        w2[:] = 0.0
        w2[1 + S.FEATURES.index("ewma_ret_fast_bp")] = 5.0
    reg.register(linear_model(w2, S.FEATURES), name=challenger, features=S.FEATURES)
    promote(reg, "sig", 1)
    return reg


def challenge(reg: Registry, mode: str, **kw) -> None:
    set_challenger(reg, "sig", 2, mode, features=S.FEATURES, **kw)


ROLLOUT = {"horizon": 1, "min_trades": 30, "checkpoint_trades": 30, "max_checkpoints": 10}


def topology(
    tmp: Path, reg_root: Path, rollout: dict | None = None, slot: bool = True, qty: int = 100
):
    """The default topology with the signals stage on the registry slot ``sig`` (or, with
    ``slot`` false, the plain default model), crossing the spread (each intent fills at
    once; ``qty`` above the small side's 200 leaves the rest resting), no cooldown, and risk
    limits far above this market's positions."""
    text = resources.files("bot4.config").joinpath("default.toml").read_text()
    r = rollout if rollout is not None else ROLLOUT
    table = "{ " + ", ".join(f"{k} = {v}" for k, v in r.items()) + " }"
    sig = f"threshold = 0.5, qty = {qty}, cooldown = 0, cross = true"
    if slot:
        sig += f', model_slot = "sig", model_registry = "{reg_root}", rollout = {table}'
    text = text.replace(
        "params = { threshold = 1.0, qty = 100, cooldown = 50 }", f"params = {{ {sig} }}"
    )
    text = text.replace(
        "max_position = 1000 }",
        "max_position = 1000000, rate_per_s = 0, max_open_orders = 1000, "
        'max_open_orders_total = 2000, max_tracked_orders = 4096, max_gross = "1000000000", '
        'max_notional = "100000000", daily_loss_limit = "1000000000", '
        'daily_loss_halt = "1000000000", max_order_qty = 1000000 }',
    )
    p = tmp / "topology.toml"
    p.write_text(text)
    return load_topology(p)
