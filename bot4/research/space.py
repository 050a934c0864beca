"""What a sweep varies: parameter keys, their values, and the topology a point gives.

A parameter key names one thing a replay takes:

* ``STAGE.PARAM`` — a param of a topology stage (``signals.threshold``, ``risk.max_position``,
  ``venue.maker_fee``): written into the topology, which is then validated as ``bot4 replay
  --topology`` would (a bad value is that run's error, not the sweep's);
* ``latency.NAME`` — a latency model (``feed``, ``order``, ``report``, ``compute``) in
  ``bot4 replay --latency`` syntax (``const:50us``, ``quantiles:0=30us,1=400us``, ...);
* ``seed`` — the seed of every latency draw; ``step`` — the simulated clock's step
  (a duration).

Values on the command line (``--grid KEY=V1,V2`` / ``--param KEY=DIST``):

* grid: a list separated by ``|`` when the text holds one, else by ``,`` (latency models
  contain commas: ``latency.order=const:30us|empirical:30us,40us``). Each value is typed:
  ``true``/``false``, an int, a float, else the text;
* random / Bayesian distributions: ``uniform:LO:HI``, ``loguniform:LO:HI``, ``int:LO:HI``
  (inclusive), ``choice:A|B|C`` (or commas).

A point (``{key: value}``) becomes a topology by :func:`topology_text`: the base topology
file's TOML with the stage params replaced, written back as TOML (``runs/KEY/topology.toml``)
so a run can be repeated with ``bot4 replay DATA --topology that-file``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from bot4.replay.points import (
    LATENCY_NAMES,
    RUN_KEYS,
    SpaceError,
    base_topology_text,
    check_key,
    dumps_toml,
    topology_text,
)

__all__ = [
    "LATENCY_NAMES",
    "RUN_KEYS",
    "Dist",
    "SpaceError",
    "base_topology_text",
    "check_key",
    "dumps_toml",
    "grid_points",
    "parse_dist",
    "parse_grid",
    "parse_value",
    "topology_text",
]


def parse_value(text: str) -> bool | int | float | str:
    """``true``/``false``, int, float, else the text itself (stripped)."""
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        return t
    return v if math.isfinite(v) else t


def _split(text: str) -> list[str]:
    parts = text.split("|") if "|" in text else text.split(",")
    out = [p.strip() for p in parts]
    if not all(out):
        raise SpaceError(f"empty value in {text!r}")
    return out


def parse_grid(spec: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` -> (key, typed values); latency values stay text."""
    key, eq, vals = spec.partition("=")
    key = key.strip()
    if not eq or not vals.strip():
        raise SpaceError(f"--grid {spec!r}: expected KEY=V1,V2,...")
    kind = check_key(key)
    values = _split(vals) if kind != "latency" or "|" in vals else [vals.strip()]
    typed = [v if kind == "latency" else parse_value(v) for v in values]
    if len(set(map(json.dumps, typed))) != len(typed):
        raise SpaceError(f"--grid {key}: a value is listed twice")
    return key, typed


@dataclass(frozen=True)
class Dist:
    """A distribution for random / Bayesian search: ``kind`` uniform | loguniform | int |
    choice; ``lo``/``hi`` (inclusive for int) or ``choices``."""

    key: str
    kind: str
    lo: float = 0.0
    hi: float = 0.0
    choices: tuple = ()

    def sample(self, rng) -> bool | int | float | str:
        """One draw from ``rng`` (a ``numpy.random.Generator``), as a plain Python value."""
        if self.kind == "uniform":
            return float(rng.uniform(self.lo, self.hi))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.lo), math.log(self.hi))))
        if self.kind == "int":
            return int(rng.integers(int(self.lo), int(self.hi) + 1))
        return self.choices[int(rng.integers(len(self.choices)))]

    def suggest(self, trial) -> bool | int | float | str:
        """The same distribution asked of an Optuna trial."""
        if self.kind == "uniform":
            return trial.suggest_float(self.key, self.lo, self.hi)
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, self.lo, self.hi, log=True)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.lo), int(self.hi))
        return trial.suggest_categorical(self.key, list(self.choices))


def parse_dist(spec: str) -> Dist:
    """``KEY=uniform:LO:HI`` | ``loguniform:LO:HI`` | ``int:LO:HI`` | ``choice:A|B``."""
    key, eq, rest = spec.partition("=")
    key = key.strip()
    kind, colon, args = rest.strip().partition(":")
    if not eq or not colon:
        raise SpaceError(
            f"--param {spec!r}: expected KEY=uniform:LO:HI, loguniform:LO:HI, int:LO:HI "
            "or choice:A|B"
        )
    k = check_key(key)
    if kind == "choice":
        vals = [v if k == "latency" else parse_value(v) for v in _split(args)]
        return Dist(key, "choice", choices=tuple(vals))
    if kind not in ("uniform", "loguniform", "int"):
        raise SpaceError(f"--param {key}: unknown distribution {kind!r}")
    lo_t, colon2, hi_t = args.partition(":")
    try:
        lo, hi = float(lo_t), float(hi_t)
    except ValueError:
        raise SpaceError(f"--param {key}: bounds {args!r} are not numbers") from None
    if not colon2 or not lo < hi or (kind == "loguniform" and lo <= 0):
        raise SpaceError(f"--param {key}: need LO < HI (and LO > 0 for loguniform)")
    if kind == "int" and (lo != int(lo) or hi != int(hi)):
        raise SpaceError(f"--param {key}: int bounds must be whole numbers")
    return Dist(key, kind, lo, hi)


def grid_points(axes: list[tuple[str, list]]) -> list[dict]:
    """Every combination of the axes, the last axis varying fastest (the order runs are
    listed in, whatever order they finish in)."""
    points: list[dict] = [{}]
    for key, values in axes:
        points = [{**p, key: v} for p in points for v in values]
    return points
