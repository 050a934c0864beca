"""Full-topology replay: the real multi-process pipeline (``bot4.pipeline.supervisor``, as
``bot4 run`` starts it) with its md stage reading the recorded data, at the recorded pace
(``speed = 1``), faster (``speed = 10``) or as fast as the pipeline takes it (``speed =
0``, "max"). Latencies are measured here — every record's host stamps — not modelled.

The topology is the given one with two changes: the md stage's params name the data
(``DataSource.md_params``: source, path, LOBSTER snapshot) and the pace, and the
persistence stage journals into ``out/journal`` and loads no database (a backtest's
events are not the desk's). The venue fills on quote data by trade-
through unless the topology chooses (``quote_fill``), as in deterministic mode. The run
ends by itself: once the md stage has published every record and stopped, the supervisor
drains the pipeline (upstream first) and removes its shared segments. The report is then
built from the journal, like ``bot4 run``'s.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bot4.pipeline.supervisor import Supervisor
from bot4.pipeline.topology import Topology
from bot4.records import MD_QUOTE
from bot4.records.errors import Bot4Error, Code
from bot4.replay.progress import Progress
from bot4.replay.sources import DataSource
from bot4.replay.wiring import feed_sources
from bot4.shm import control as C
from bot4.stages import KINDS

__all__ = ["FullResult", "final_marks", "run_full"]


@dataclass
class FullResult:
    journal_dir: Path
    wall_s: float
    events: int
    stages: dict
    marks: dict[int, int]
    config: dict


def final_marks(source: DataSource) -> dict[int, int]:
    """The last mid (price units) per instrument of the data's quotes."""
    bid: dict[int, int] = {}
    ask: dict[int, int] = {}
    for c in source.chunks():
        q = c[(c["kind"] == MD_QUOTE) & (c["qty"] > 0) & (c["price"] > 0)]
        for side, d in ((1, bid), (-1, ask)):
            s = q[q["side"] == side]
            if len(s):
                inst = s["instrument"]
                # last occurrence per instrument
                rev = inst[::-1]
                u, idx = np.unique(rev, return_index=True)
                for i, k in zip(u.tolist(), idx.tolist(), strict=True):
                    d[int(i)] = int(s["price"][len(s) - 1 - k])
    return {i: (bid[i] + ask[i]) // 2 for i in bid if i in ask and ask[i] > bid[i]}


class _ReplaySupervisor(Supervisor):
    """Stops supervising once the md stage finished; shows progress from its counters."""

    def __init__(self, topology, md_name: str, total: int, progress, timeout_s: float, **kw):
        super().__init__(topology, **kw)
        self.md_name = md_name
        self.md_outputs = max(1, len(topology.outputs_of(md_name)))
        self.total = total
        self.progress = Progress(total, progress) if progress is not None else None
        self.timeout_s = timeout_s

    def _supervise(self) -> None:
        t0 = time.monotonic()
        md = next(s for s in self.slots if s.name == self.md_name)
        while not self.stop_requested and not self.halt_reason:
            for slot in self.slots:
                self._check(slot, False)
            self._look(time.monotonic())  # liveness from the ring cursors, as in bot4 run
            done = int(self.cb.stage(md.index)[C.S_RECORDS_OUT]) // self.md_outputs
            if self.progress is not None:
                self.progress.update(min(done, self.total))
            if md.finished:
                if self.progress is not None:
                    self.progress.done(self.total)
                return
            if time.monotonic() - t0 > self.timeout_s:
                self.halt_reason = f"replay did not finish within {self.timeout_s:g} s"
                return
            time.sleep(0.02)


def run_full(
    source: DataSource,
    out_dir: str | os.PathLike,
    topology: Topology,
    *,
    speed: float = 0.0,
    instance: str | None = None,
    progress=None,
    timeout_s: float = 3600.0,
) -> FullResult:
    """Run ``topology`` over ``source`` as separate processes; see the module docstring."""
    if source.md_params is None:
        raise Bot4Error(
            f"{source.kind} data cannot be read by the md stage: use --mode deterministic",
            Code.CONFIG_INVALID,
        )
    out = Path(out_dir)
    journal = out / "journal"
    if journal.exists() and any(journal.iterdir()):
        raise Bot4Error(f"{journal}: not empty; choose another --out", Code.CONFIG_INVALID)
    md = feed_sources(topology)
    if len(md) != 1 or not KINDS[md[0].kind].reads_recorded:
        raise Bot4Error(
            f"{topology.source}: a full replay needs exactly one stage of kind 'md'",
            Code.TOPOLOGY_INVALID,
        )
    stages = []
    for s in topology.stages:
        p = dict(s.params)
        if s is md[0]:
            keep = {k: p[k] for k in ("depth", "book_check") if k in p}  # the book's shape
            p = {**source.md_params, **keep, "speed": float(speed)}
        else:  # persistence into out/journal, the venue's quote fills (Stage.replay_params)
            p = KINDS[s.kind].replay_params(p, str(journal), False)
        stages.append(replace(s, params=p))
    inst = instance or f"rp{os.getpid()}"
    topo = Topology(inst, tuple(stages), topology.rings, topology.source)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        sup = _ReplaySupervisor(
            topo, md[0].name, source.total, progress, timeout_s, live=False, out=devnull
        )
        t0 = time.monotonic()
        code = sup.run()
        wall = time.monotonic() - t0
    finally:
        devnull.close()
    if code != 0 or sup.final.get("halted"):
        raise Bot4Error(
            f"full replay failed: {sup.final.get('halted') or f'exit {code}'}", Code.STAGE_DIED
        )
    figures = sup.final.get("stages", {})
    n_out = max(1, len(topo.outputs_of(md[0].name)))
    return FullResult(
        journal,
        wall,
        int(figures.get(md[0].name, {}).get("records_out", 0)) // n_out,
        figures,
        final_marks(source),
        {
            "mode": "full",
            "topology": topology.source,
            "speed": float(speed),
            "source": source.describe(),
        },
    )
