"""Topology files (TOML): which stages run, on which core, joined by which rings.

::

    instance = "default"            # segment namespace: /bot4.<instance>.*

    [[stage]]
    name = "md"                     # unique; [A-Za-z0-9_-]
    kind = "synthetic-md"           # a registered stage kind (bot4.stages.KINDS)
    core = 0                        # CPU the process is pinned to
    wait = "park"                   # idle strategy when it has no work: busy-spin|yield|park
    heartbeat_timeout = 5.0         # s without a heartbeat before the supervisor kills it
    stall_timeout = 5.0             # s stuck (an input has records, outputs have room, the
                                    # input does not move) before the supervisor kills it
    start_timeout = 120.0           # s a restarted process has to report running
    realtime = false                # opt-in SCHED_FIFO at `priority` (off by default)
    priority = 50
    mlock = false                   # opt-in mlockall
    batch = 256                     # max input records per kernel call
    params = { rate = 20000 }       # kind-specific

    [[ring]]
    name = "ticks"
    from = "md"                     # the one producer stage
    to = "signals"                  # the one consumer stage
    type = "market_data"            # record type (bot4.records.RECORD_TYPES)
    capacity = 4096                 # slots, a power of two
    wait = "park"                   # busy-spin|yield|park
    backpressure = "block"          # block|reject
    feedback = false                # true: this ring closes a cycle on purpose

    [[group]]                       # shared mode: these stages run in one process
    name = "hot"                    # unique among stages and groups
    members = ["signals", "risk", "orders"]
    core = 1                        # the group's core (members' own `core` may be omitted)
    idle = "backoff"                # busy-spin|yield|park|backoff (bot4.stages.idle)
    heartbeat_timeout = 5.0, realtime, priority, mlock   # as for a stage, per process

    [log]                           # every process of the pipeline (bot4.logs)
    level = "info"                  # debug|info|warning|error; $BOT4_LOG_LEVEL and
    format = "text"                 # text|json      --log-level/--log-format win

Every problem is a :class:`TopologyError` naming the file, the key and the reason.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from bot4.pipeline.topology_tables import (
    NAME_RE,
    RING_KEYS,
    STAGE_KEYS,
    TOP_KEYS,
    TopologyError,
    choice,
    parse_groups,
    parse_log,
    priority_of,
    table_where,
    typed,
    unusable,
)
from bot4.records import RECORD_TYPES
from bot4.records.errors import Bot4Error, Code
from bot4.shm.ring_layout import BACKPRESSURE_NAMES, WAIT_NAMES, is_power_of_two
from bot4.spec import GroupSpec, RingSpec, StageSpec


class UnknownStageError(Bot4Error, KeyError):
    """A stage name the topology does not have (a KeyError too, for older callers)."""

    code = Code.TOPOLOGY_INVALID

    def __str__(self) -> str:  # KeyError's would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Topology:
    instance: str
    stages: tuple[StageSpec, ...]
    rings: tuple[RingSpec, ...]
    source: str
    groups: tuple[GroupSpec, ...] = ()
    log_level: str | None = None  # [log] level / format: bot4.logs.resolve's third choice
    log_format: str | None = None

    def group(self, name: str) -> GroupSpec | None:
        """The group called ``name`` (None if ``name`` is not a group)."""
        for g in self.groups:
            if g.name == name:
                return g
        return None

    def group_of(self, stage: str) -> GroupSpec | None:
        """The group ``stage`` belongs to (None: it runs in a process of its own)."""
        for g in self.groups:
            if stage in g.members:
                return g
        return None

    def units(self) -> list[tuple[str, tuple[str, ...]]]:
        """Processes of this topology: ``(name, member stages)``, a group or one stage,
        in the order of ``stages`` (a group at its first member)."""
        out, seen = [], set()
        for s in self.stages:
            g = self.group_of(s.name)
            if g is None:
                out.append((s.name, (s.name,)))
            elif g.name not in seen:
                seen.add(g.name)
                out.append((g.name, g.members))
        return out

    def unit_core(self, name: str) -> int:
        """The core process ``name`` of :meth:`units` is pinned to (a group's, or its
        stage's)."""
        g = self.group(name)
        return g.core if g is not None else self.stage(name).core

    def pinned_cores(self) -> set[int]:
        """The cores a process of this topology (a stage or a group) is pinned to."""
        return {self.unit_core(name) for name, _members in self.units()}

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.stages)
        raise UnknownStageError(f"{self.source}: no stage named {name!r} (stages: {known})")

    def inputs_of(self, name: str) -> list[RingSpec]:
        return [r for r in self.rings if r.consumer == name]

    def outputs_of(self, name: str) -> list[RingSpec]:
        return [r for r in self.rings if r.producer == name]

    def journalled_twin(self, ring: str) -> tuple[RingSpec, Path] | None:
        """Where the records of ``ring`` are journalled: its producer writes each of them
        under the same ``seq`` to another ring of the same record type too, whose consumer
        journals what it reads (its kind's ``journal_dir``). Returns that ring and the
        journal directory (the last such ring of the producer), or None. A restarted stage
        rebuilds what it had consumed from there (the risk stage's fills)."""
        from bot4.stages import KINDS

        r = next((x for x in self.rings if x.name == ring), None)
        if r is None:
            return None
        for twin in reversed(self.outputs_of(r.producer)):
            if twin.type != r.type or twin.name == r.name:
                continue
            sink = self.stage(twin.consumer)
            d = KINDS[sink.kind].journal_dir(sink.params, self.instance)
            if d is not None:
                return twin, d
        return None

    def order(self) -> list[str]:
        """Stage names upstream-first (topological order ignoring feedback rings)."""
        return _toposort(self)

    def with_instance(self, instance: str) -> Topology:
        return replace(self, instance=instance)


def _toposort(t: Topology) -> list[str]:
    indeg = {s.name: 0 for s in t.stages}
    for r in t.rings:
        if not r.feedback:
            indeg[r.consumer] += 1
    ready = [s.name for s in t.stages if indeg[s.name] == 0]
    out = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for r in t.rings:
            if r.producer == n and not r.feedback:
                indeg[r.consumer] -= 1
                if indeg[r.consumer] == 0:
                    ready.append(r.consumer)
    return out


MAX_RING_BYTES = 1 << 32  # one ring's slots: beyond this it is a typo, not a buffer


def _reserved_segment_names() -> frozenset[str]:
    """Names of the segments an instance has besides its rings: a ring may not take one
    (its creation would collide with them, or they with it)."""
    from bot4.shm.breakers import BREAKERS_SEGMENT
    from bot4.shm.control import CONTROL_SEGMENT
    from bot4.shm.metrics import METRICS_SEGMENT
    from bot4.shm.operator_log import OPERATOR_SEGMENT
    from bot4.shm.trading_state import TRADING_SEGMENT

    return frozenset(
        {CONTROL_SEGMENT, OPERATOR_SEGMENT, BREAKERS_SEGMENT, TRADING_SEGMENT, METRICS_SEGMENT}
    )


def parse_topology(
    data: dict, source: str = "<topology>", *, cpu_count: int | None = None
) -> Topology:
    """Validate a parsed TOML document and build the :class:`Topology`."""
    from bot4.stages import KINDS  # kinds register themselves; imported late on purpose
    from bot4.stages.base import ParamError

    cpus = cpu_count if cpu_count is not None else len(os.sched_getaffinity(0))
    for k in data:
        if k not in TOP_KEYS:
            raise TopologyError(
                source, k, "unknown key (allowed: instance, stage, ring, group, log)"
            )
    log_level, log_format = parse_log(source, data.get("log", {}))
    instance = typed(source, "instance", data.get("instance", "default"), str)
    if not NAME_RE.match(instance):
        raise TopologyError(source, "instance", f"{instance!r} must match {NAME_RE.pattern}")
    raw_stages = typed(source, "stage", data.get("stage", []), list)
    if not raw_stages:
        raise TopologyError(source, "stage", "no stages declared")
    groups = parse_groups(source, data.get("group", []), cpus)
    group_core = {m: g.core for g in groups for m in g.members}
    stages: list[StageSpec] = []
    names: set[str] = set()
    for i, st in enumerate(raw_stages):
        where = table_where(source, "stage", i, st, STAGE_KEYS)
        for req in ("name", "kind", "core"):
            grouped = isinstance(st.get("name"), str) and st["name"] in group_core
            if req not in st and not (req == "core" and grouped):
                raise TopologyError(source, f"{where}.{req}", "missing")
        name = typed(source, f"{where}.name", st["name"], str)
        where = f"stage[{i}] ({name})"
        if not NAME_RE.match(name):
            raise TopologyError(source, f"{where}.name", f"must match {NAME_RE.pattern}")
        if name in names:
            raise TopologyError(source, f"{where}.name", "declared twice")
        names.add(name)
        kind = typed(source, f"{where}.kind", st["kind"], str)
        if kind not in KINDS:
            raise TopologyError(
                source,
                f"{where}.kind",
                f"unknown stage kind {kind!r} (known: {', '.join(sorted(KINDS))})",
            )
        if name in group_core and st.get("core", group_core[name]) != group_core[name]:
            raise TopologyError(
                source,
                f"{where}.core",
                f"member of a group on core {group_core[name]}: omit core or give the group's",
            )
        core = typed(source, f"{where}.core", st.get("core", group_core.get(name)), int)
        if not 0 <= core < cpus:
            raise TopologyError(
                source,
                f"{where}.core",
                f"core {core} does not exist on this machine (cores 0..{cpus - 1})",
            )
        batch = typed(source, f"{where}.batch", st.get("batch", 256), int)
        if not 1 <= batch <= 65536:
            raise TopologyError(source, f"{where}.batch", "must be in 1..65536")
        hb = float(
            typed(
                source, f"{where}.heartbeat_timeout", st.get("heartbeat_timeout", 5.0), (int, float)
            )
        )
        if not 0 < hb < float("inf"):  # NaN too: it would never time out
            raise TopologyError(source, f"{where}.heartbeat_timeout", "must be a positive number")
        stall = float(
            typed(source, f"{where}.stall_timeout", st.get("stall_timeout", 5.0), (int, float))
        )
        if not 0 < stall < float("inf"):
            raise TopologyError(source, f"{where}.stall_timeout", "must be a positive number")
        start_to = float(
            typed(source, f"{where}.start_timeout", st.get("start_timeout", 120.0), (int, float))
        )
        if not 0 < start_to < float("inf"):
            raise TopologyError(source, f"{where}.start_timeout", "must be a positive number")
        params = dict(typed(source, f"{where}.params", st.get("params", {}), dict))
        try:
            KINDS[kind].check_params(params)
        except ParamError as exc:
            raise TopologyError(source, f"stage {name}: params.{exc.key}", exc.reason) from None
        except Exception as exc:  # a value of a shape the kind's checks did not expect
            raise TopologyError(source, f"stage {name}: params", unusable(exc)) from None
        stages.append(
            StageSpec(
                name=name,
                kind=kind,
                core=core,
                index=i,
                wait=choice(source, f"{where}.wait", st.get("wait", "park"), WAIT_NAMES),
                heartbeat_timeout=hb,
                realtime=typed(source, f"{where}.realtime", st.get("realtime", False), bool),
                priority=priority_of(source, where, st),
                mlock=typed(source, f"{where}.mlock", st.get("mlock", False), bool),
                batch=batch,
                params=params,
                stall_timeout=stall,
                start_timeout=start_to,
            )
        )
    rings: list[RingSpec] = []
    ring_names: set[str] = set()
    reserved = _reserved_segment_names()
    for i, rg in enumerate(typed(source, "ring", data.get("ring", []), list)):
        where = table_where(source, "ring", i, rg, RING_KEYS)
        for req in ("name", "from", "to", "type", "capacity"):
            if req not in rg:
                raise TopologyError(source, f"{where}.{req}", "missing")
        name = typed(source, f"{where}.name", rg["name"], str)
        where = f"ring[{i}] ({name})"
        if not NAME_RE.match(name) or name in reserved:
            raise TopologyError(
                source,
                f"{where}.name",
                f"must match {NAME_RE.pattern} and not be one of {', '.join(sorted(reserved))} "
                "(the instance's own segments)",
            )
        if name in ring_names:
            raise TopologyError(
                source,
                f"{where}.name",
                "declared twice: a ring has exactly one producer and one consumer",
            )
        ring_names.add(name)
        for end, what in (("from", "producer"), ("to", "consumer")):
            v = rg[end]
            if isinstance(v, list):
                if len(v) != 1:
                    raise TopologyError(
                        source,
                        f"{where}.{end}",
                        f"a ring has exactly one {what}, got {len(v)}: {v}",
                    )
                v = v[0]
            typed(source, f"{where}.{end}", v, str)
            if v not in names:
                raise TopologyError(source, f"{where}.{end}", f"stage {v!r} does not exist")
        prod = rg["from"][0] if isinstance(rg["from"], list) else rg["from"]
        cons = rg["to"][0] if isinstance(rg["to"], list) else rg["to"]
        if prod == cons:
            raise TopologyError(source, f"{where}.to", "a ring cannot loop a stage onto itself")
        rtype = typed(source, f"{where}.type", rg["type"], str)
        if rtype.upper() not in RECORD_TYPES:
            raise TopologyError(
                source,
                f"{where}.type",
                f"unknown record type {rtype!r} (known: {', '.join(k.lower() for k in RECORD_TYPES)})",
            )
        cap = typed(source, f"{where}.capacity", rg["capacity"], int)
        if not is_power_of_two(cap):
            raise TopologyError(source, f"{where}.capacity", f"{cap} is not a power of two")
        size = cap * RECORD_TYPES[rtype.upper()].itemsize
        if size > MAX_RING_BYTES:
            raise TopologyError(
                source,
                f"{where}.capacity",
                f"{cap} slots of {RECORD_TYPES[rtype.upper()].itemsize} bytes is "
                f"{size / 2**30:.1f} GiB; at most {MAX_RING_BYTES >> 30} GiB per ring",
            )
        pst = next(s for s in stages if s.name == prod)
        try:
            need = int(KINDS[pst.kind].out_per_in(pst.params))
        except Exception:  # noqa: BLE001 - check_params passed; a kind that cannot say needs 1
            need = 1
        if cap < need:
            raise TopologyError(
                source,
                f"{where}.capacity",
                f"{cap} slots, but one input of stage {prod!r} ({pst.kind}) may produce {need} "
                "records and a claim never spans more than the ring: it would stall for good",
            )
        rings.append(
            RingSpec(
                name=name,
                producer=prod,
                consumer=cons,
                type=rtype.upper(),
                capacity=cap,
                wait=choice(source, f"{where}.wait", rg.get("wait", "park"), WAIT_NAMES),
                backpressure=choice(
                    source,
                    f"{where}.backpressure",
                    rg.get("backpressure", "block"),
                    BACKPRESSURE_NAMES,
                ),
                feedback=typed(source, f"{where}.feedback", rg.get("feedback", False), bool),
            )
        )
    for g in groups:
        where = f"group ({g.name})"
        if g.name in names:
            raise TopologyError(source, f"{where}.name", "a stage has this name")
        for m in g.members:
            if m not in names:
                raise TopologyError(source, f"{where}.members", f"stage {m!r} does not exist")
    t = Topology(instance, tuple(stages), tuple(rings), source, groups, log_level, log_format)
    order = _toposort(t)
    if len(order) != len(stages):
        stuck = sorted(set(names) - set(order))
        cyc = [
            r.name for r in rings if not r.feedback and r.producer in stuck and r.consumer in stuck
        ]
        raise TopologyError(
            source,
            "ring",
            f"cycle through stages {stuck} via rings {cyc} not declared as feedback (set feedback = true on the ring that closes it)",
        )
    for s in stages:
        kind = KINDS[s.kind]
        n_in, n_out = len(t.inputs_of(s.name)), len(t.outputs_of(s.name))
        problem = kind.check_arity(
            n_in,
            n_out,
            [r.type for r in t.inputs_of(s.name)],
            [r.type for r in t.outputs_of(s.name)],
        )
        if problem:
            raise TopologyError(source, f"stage[{s.index}] ({s.name})", problem)
        problem = kind.check_in_topology(s.params, t)  # params naming other stages
        if problem:
            raise TopologyError(source, f"stage[{s.index}] ({s.name})", problem)
    return t


def load_topology(
    path: str | os.PathLike | None = None, *, instance: str | None = None
) -> Topology:
    """Load and validate a topology file; ``None`` loads the packaged default."""
    if path is None:
        text = resources.files("bot4.config").joinpath("default.toml").read_text()
        source = "bot4/config/default.toml"
    else:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text()
        except OSError as exc:
            raise TopologyError(source, "-", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(source, "-", f"not valid TOML: {exc}") from None
    t = parse_topology(data, source)
    return t.with_instance(instance) if instance else t
