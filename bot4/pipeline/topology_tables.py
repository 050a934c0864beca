"""The topology file's tables checked one value at a time: the names and key sets, typed
values (:func:`typed`), the ``[log]`` table and the ``[[group]]`` tables, and
:class:`TopologyError`, which every check raises. :mod:`bot4.pipeline.topology` builds the
:class:`~bot4.pipeline.topology.Topology` from them."""

from __future__ import annotations

import re
from typing import Any

from bot4.records.errors import Bot4Error, Code
from bot4.spec import GroupSpec

NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,48}$")
TOP_KEYS = {"instance", "stage", "ring", "group", "log"}
LOG_KEYS = {"level", "format"}
GROUP_KEYS = {
    "name", "members", "core", "idle", "heartbeat_timeout", "realtime", "priority", "mlock",
}  # fmt: skip
STAGE_KEYS = {
    "name", "kind", "core", "wait", "heartbeat_timeout", "stall_timeout", "start_timeout",
    "realtime", "priority", "mlock", "batch", "params",
}  # fmt: skip
RING_KEYS = {"name", "from", "to", "type", "capacity", "wait", "backpressure", "feedback"}


class TopologyError(Bot4Error):
    """A topology file is invalid; ``source``, ``key`` and ``reason`` say where and why."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}", Code.TOPOLOGY_INVALID)
        self.source, self.key, self.reason = source, key, reason


def choice(src: str, key: str, value: Any, names: dict[str, int]) -> int:
    if value not in names:
        raise TopologyError(src, key, f"{value!r} is not one of {', '.join(names)}")
    return names[value]


def typed(src: str, key: str, value: Any, typ: type | tuple) -> Any:
    if isinstance(value, bool) and typ is not bool and typ != (int, float):
        raise TopologyError(src, key, f"expected {getattr(typ, '__name__', typ)}, got a boolean")
    if not isinstance(value, typ):
        raise TopologyError(src, key, f"expected {getattr(typ, '__name__', typ)}, got {value!r}")
    return value


def table_where(source: str, kind: str, i: int, table: Any, keys: set[str]) -> str:
    """Check entry ``i`` of the ``[[kind]]`` tables is a table with only ``keys``; returns
    where it is for messages (``stage[3] (md)``, or ``stage[3]`` while it has no name)."""
    where = f"{kind}[{i}]"
    typed(source, where, table, dict)
    if isinstance(table.get("name"), str):
        where = f"{kind}[{i}] ({table['name']})"
    for k in table:
        if k not in keys:
            raise TopologyError(source, f"{where}.{k}", "unknown key")
    return where


def parse_log(source: str, raw: Any) -> tuple[str | None, str | None]:
    """The ``[log]`` table: ``level`` and ``format`` as :mod:`bot4.logs` names them."""
    from bot4.logs import LogConfigError, check_format, check_level

    raw = typed(source, "log", raw, dict)
    for k in raw:
        if k not in LOG_KEYS:
            raise TopologyError(source, f"log.{k}", "unknown key (allowed: level, format)")
    try:
        level = check_level(raw["level"], "level") if "level" in raw else None
        fmt = check_format(raw["format"], "format") if "format" in raw else None
    except LogConfigError as exc:
        key, _, reason = str(exc).partition(": ")
        raise TopologyError(source, f"log.{key}", reason) from None
    return level, fmt


def priority_of(source: str, where: str, table: dict) -> int:
    """``priority``: a SCHED_FIFO priority, 1..99 (Linux's range)."""
    prio = typed(source, f"{where}.priority", table.get("priority", 50), int)
    if not 1 <= prio <= 99:
        raise TopologyError(source, f"{where}.priority", f"must be in 1..99, got {prio}")
    return prio


def unusable(exc: Exception) -> str:
    """One line for a value a kind's checks did not expect (never a traceback)."""
    text = " ".join(str(exc).split())[:200]
    if isinstance(exc, Bot4Error):
        return text
    return f"cannot be used ({type(exc).__name__}: {text})" if text else type(exc).__name__


def parse_groups(source: str, raw: Any, cpus: int) -> tuple[GroupSpec, ...]:
    """The ``[[group]]`` tables; members are checked against the stages by the caller."""
    from bot4.stages.idle import IDLE_NAMES

    out: list[GroupSpec] = []
    seen: dict[str, str] = {}
    for i, g in enumerate(typed(source, "group", raw, list)):
        where = table_where(source, "group", i, g, GROUP_KEYS)
        for req in ("name", "members", "core"):
            if req not in g:
                raise TopologyError(source, f"{where}.{req}", "missing")
        name = typed(source, f"{where}.name", g["name"], str)
        if not NAME_RE.match(name):
            raise TopologyError(source, f"{where}.name", f"must match {NAME_RE.pattern}")
        if any(o.name == name for o in out):
            raise TopologyError(source, f"{where}.name", "declared twice")
        members = typed(source, f"{where}.members", g["members"], list)
        if not members:
            raise TopologyError(source, f"{where}.members", "a group needs at least one member")
        for m in members:
            typed(source, f"{where}.members", m, str)
            if m in seen:
                raise TopologyError(
                    source, f"{where}.members", f"stage {m!r} is already in group {seen[m]!r}"
                )
            seen[m] = name
        if len(set(members)) != len(members):
            raise TopologyError(source, f"{where}.members", "a stage is listed twice")
        core = typed(source, f"{where}.core", g["core"], int)
        if not 0 <= core < cpus:
            raise TopologyError(
                source,
                f"{where}.core",
                f"core {core} does not exist on this machine (cores 0..{cpus - 1})",
            )
        idle = typed(source, f"{where}.idle", g.get("idle", "backoff"), str)
        if idle not in IDLE_NAMES:
            raise TopologyError(
                source, f"{where}.idle", f"{idle!r} is not one of {', '.join(IDLE_NAMES)}"
            )
        hb = g.get("heartbeat_timeout", 5.0)
        hb = float(typed(source, f"{where}.heartbeat_timeout", hb, (int, float)))
        if not hb > 0 or hb != hb or hb == float("inf"):
            raise TopologyError(source, f"{where}.heartbeat_timeout", "must be a positive number")
        out.append(
            GroupSpec(
                name=name,
                members=tuple(members),
                core=core,
                idle=idle,
                heartbeat_timeout=hb,
                realtime=typed(source, f"{where}.realtime", g.get("realtime", False), bool),
                priority=priority_of(source, where, g),
                mlock=typed(source, f"{where}.mlock", g.get("mlock", False), bool),
            )
        )
    return tuple(out)
