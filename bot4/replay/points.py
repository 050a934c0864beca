"""The parameter keys a replay takes and the topology a point of them gives: what
``bot4.replay(...)`` (:mod:`bot4.replay.notebook`) and the sweep (:mod:`bot4.research.space`,
whose docstring describes the keys and their values) share.

* ``STAGE.PARAM`` — a param of a topology stage, written into the topology;
* ``latency.NAME`` — a latency model (``feed``, ``order``, ``report``, ``compute``);
* ``seed``, ``step`` — the run's seed and the simulated clock's step.

A point (``{key: value}``) becomes a topology by :func:`topology_text`: the base topology
file's TOML with the stage params replaced, written back as TOML.
"""

from __future__ import annotations

import json
import math
import tomllib
from importlib import resources
from pathlib import Path

__all__ = [
    "LATENCY_NAMES",
    "RUN_KEYS",
    "SpaceError",
    "base_topology_text",
    "check_key",
    "dumps_toml",
    "topology_text",
]

LATENCY_NAMES = ("feed", "order", "report", "compute")
RUN_KEYS = ("seed", "step")


class SpaceError(ValueError):
    """A parameter key or value the sweep cannot use (said before any run starts)."""


def check_key(key: str) -> str:
    """A key's kind: ``stage``, ``latency`` or ``run``; SpaceError for anything else."""
    if key in RUN_KEYS:
        return "run"
    head, dot, tail = key.partition(".")
    if not dot or not head or not tail:
        raise SpaceError(f"parameter {key!r}: expected STAGE.PARAM, latency.NAME, seed or step")
    if head == "latency":
        if tail not in LATENCY_NAMES:
            raise SpaceError(f"parameter {key!r}: latency names are {', '.join(LATENCY_NAMES)}")
        return "latency"
    return "stage"


def base_topology_text(path: str | None) -> tuple[str, str]:
    """(TOML text, source name) of the topology a sweep starts from (default: packaged)."""
    if path is None:
        return resources.files("bot4.config").joinpath("default.toml").read_text(), (
            "bot4/config/default.toml"
        )
    try:
        return Path(path).read_text(), str(path)
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read the topology: {exc.strerror}") from None


def topology_text(base: str, point: dict) -> str:
    """The base topology TOML with every ``STAGE.PARAM`` of ``point`` set (other keys are
    not topology keys). Raises SpaceError for a stage the topology does not have."""
    data = tomllib.loads(base)
    stages = {s.get("name"): s for s in data.get("stage", [])}
    for key, value in point.items():
        if check_key(key) != "stage":
            continue
        name, _dot, param = key.partition(".")
        if name not in stages:
            raise SpaceError(f"parameter {key!r}: no stage {name!r} in the topology")
        stages[name].setdefault("params", {})[param] = value
    return dumps_toml(data)


# --- a small TOML writer for what a topology holds --------------------------------------


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_k(k)} = {_scalar(x)}" for k, x in v.items()) + " }"
    raise SpaceError(f"cannot write {type(v).__name__} into a topology")


def _k(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def dumps_toml(data: dict) -> str:
    """TOML text of ``data``: top-level scalars, then tables, then arrays of tables (whose
    nested dicts are written inline); loads back to an equal dict."""
    lines: list[str] = []
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    arrays = {
        k: v
        for k, v in data.items()
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)
    }
    for k, v in data.items():
        if k not in tables and k not in arrays:
            lines.append(f"{_k(k)} = {_scalar(v)}")
    for k, v in tables.items():
        lines += ["", f"[{_k(k)}]"] + [f"{_k(a)} = {_scalar(b)}" for a, b in v.items()]
    for k, items in arrays.items():
        for item in items:
            lines += ["", f"[[{_k(k)}]]"] + [f"{_k(a)} = {_scalar(b)}" for a, b in item.items()]
    return "\n".join(lines) + "\n"
