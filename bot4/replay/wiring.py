"""The deterministic replay's wiring (``bot4.replay.engine``): the topology's stages built
with the params each kind runs with in a backtest (``Stage.replay_params``: risk unshared,
the venue on the exchange's clock, persistence into ``out/journal``) and, for a stage
deciding with a registry slot (``Stage.routes_models``), the replay's own registry copy;
the one market data source stage (``Stage.replay_feed``) replaced by the feed, and a
channel per ring (a delay line for orders to the exchange, ``Stage.exchange``, its
reports and feedback rings; a direct ring otherwise). A mixin of
:class:`~bot4.replay.engine.DeterministicReplay`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from bot4.pipeline.topology import RingSpec, StageSpec
from bot4.records import RECORD_TYPES
from bot4.records.errors import Bot4Error, Code
from bot4.replay.channels import _Delay, _Direct
from bot4.stages import KINDS
from bot4.stages.base import Stage

__all__ = ["WiringMixin", "feed_sources"]


def feed_sources(topology) -> list[StageSpec]:
    """The market data source stages of ``topology`` a replay stands in for with its feed."""
    return [s for s in topology.stages if KINDS[s.kind].replay_feed]


@dataclass
class _Node:
    name: str
    kind: str
    stage: object
    hop: int  # position in topology order (1 = first after the source)
    inputs: list = field(default_factory=list)  # channel per input ring, or "feed"/"vfeed"
    outputs: list = field(default_factory=list)  # channel per output ring
    order: list = field(default_factory=list)  # input indices in reading order
    plan: list = field(default_factory=list)  # (input index, 0 feed | 1 vfeed | 2 ring, ch)
    has_pending: bool = False  # the stage sends records of its own (pending / emit)
    venue_inputs: tuple = (None, None)  # the venue: (order input, market data input)
    sink: bool = False  # no outputs (persistence): fed in batches of SINK_BATCH records
    ahead: bool = False  # event-exact: reads the whole feed ahead of time (signals)
    window_input: int = -1  # event-exact: its feed input, applied a window at a time (risk)
    off: int = 0  # event-exact: the constant compute latency of the hops up to it (ns)
    first: list = field(default_factory=list)  # event-exact: rings read before its feed
    trigger: tuple = (None, None)  # event-exact: (time, first event at or after it) cached
    seq: int = 1
    counts: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    now: int = 0
    calls: int = 0
    records_in: int = 0
    records_out: int = 0


class WiringMixin:
    """The stages and channels of a run (see the module doc)."""

    # -- wiring -------------------------------------------------------------------------------
    def _spec(self, s: StageSpec) -> StageSpec:
        cls = KINDS[s.kind]
        p = cls.replay_params(dict(s.params), str(self.journal_dir), True)
        if cls.routes_models(p):
            from bot4.replay.models import local_registry

            p = local_registry(p, self.out_dir)  # the replay's own registry copy
        return replace(s, params=p)

    def _build(self) -> None:
        t = self.topology
        sources = feed_sources(t)
        if len(sources) != 1:
            raise Bot4Error(
                f"{t.source}: a replay needs exactly one market data source stage, found "
                f"{[s.name for s in sources]}",
                Code.TOPOLOGY_INVALID,
            )
        self.src_name = sources[0].name
        if self.journal_dir.exists() and any(self.journal_dir.iterdir()):
            raise Bot4Error(
                f"{self.journal_dir}: not empty; a replay writes a fresh journal (choose --out)",
                Code.CONFIG_INVALID,
            )
        order = [n for n in t.order() if n != self.src_name]
        self.nodes: dict[str, _Node] = {}
        for hop, name in enumerate(order, start=1):
            spec = self._spec(t.stage(name))
            cls = KINDS[spec.kind]
            stage = cls(spec, t.inputs_of(name), t.outputs_of(name), t.instance)
            stage.clock = self.clock
            stage.wall_clock = self.clock
            self.nodes[name] = _Node(name, spec.kind, stage, hop)
        self.channels: dict[str, object] = {}
        for r in t.rings:
            if r.producer == self.src_name:
                if r.type != "MARKET_DATA":  # the harness's feed is market data only
                    raise Bot4Error(
                        f"ring {r.name!r}: the deterministic replay feeds only market_data "
                        f"rings from the source, not {r.type.lower()} (the md stage's depth: "
                        "use --mode full, or leave the ring out)",
                        Code.CONFIG_INVALID,
                    )
                continue
            self.channels[r.name] = self._channel(r)
        for node in self.nodes.values():
            ins = t.inputs_of(node.name)
            for r in ins:
                if r.producer == self.src_name:
                    node.inputs.append("vfeed" if type(node.stage).exchange else "feed")
                else:
                    node.inputs.append(self.channels[r.name])
            node.outputs = [self.channels[r.name] for r in t.outputs_of(node.name)]
            delayed = [i for i, c in enumerate(node.inputs) if isinstance(c, _Delay)]
            md = [i for i, c in enumerate(node.inputs) if c in ("feed", "vfeed")]
            rest = [i for i in range(len(ins)) if i not in delayed and i not in md]
            node.order = delayed + md + rest
            node.plan = [
                (i, 0 if node.inputs[i] == "feed" else 1 if node.inputs[i] == "vfeed" else 2,
                 node.inputs[i])
                for i in node.order
            ]  # fmt: skip
            node.has_pending = type(node.stage).pending is not Stage.pending
            node.sink = not node.outputs and all(c not in ("feed", "vfeed") for c in node.inputs)
            node.counts = np.zeros(max(4, len(node.outputs)), np.int64)
        for node in self.nodes.values():
            node.venue_inputs = (
                next((i for i, c in enumerate(node.inputs) if isinstance(c, _Delay)), None),
                next((i for i, c in enumerate(node.inputs) if c in ("feed", "vfeed")), None),
            )
        self.delays = [c for c in self.channels.values() if isinstance(c, _Delay)]
        self.venue = next((n for n in self.nodes.values() if type(n.stage).exchange), None)
        self.rollout = None  # a signals stage with model_slot: its automatic rollout
        for node in self.nodes.values():
            if type(node.stage).routes_models(node.stage.spec.params):
                if self.rollout is not None:
                    raise Bot4Error(
                        f"{t.source}: a replay runs the automatic rollout of one signals "
                        "stage with model_slot",
                        Code.TOPOLOGY_INVALID,
                    )
                from bot4.replay.models import ReplayRollout

                self.rollout = ReplayRollout(self, node)

    def _channel(self, r: RingSpec):
        dtype = RECORD_TYPES[r.type]
        prod = KINDS[self.topology.stage(r.producer).kind]
        cons = KINDS[self.topology.stage(r.consumer).kind]
        if r.type == "ORDER" and cons.exchange:
            ch = _Delay(dtype, self.latency.order, self.rng_order, "ts_order_ns", 0)
            ch.load_of = self._load_at
            return ch
        if r.type == "EXEC_REPORT" and prod.exchange:
            vlat = int(self.topology.stage(r.producer).params.get("latency_ns", 0))
            ch = _Delay(dtype, self.latency.report_model, self.rng_report, "ts_venue_ns", vlat)
            ch.load_of = self._load_at
            return ch
        if r.feedback:
            return _Delay(dtype, None, None, None, 0)
        return _Direct(dtype)
