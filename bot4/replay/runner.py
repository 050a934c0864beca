"""One replay, start to report: check the input, run it (deterministic or full topology),
build the report from the journal, write ``report.json`` / ``report.html`` and
``run.json`` (wall-clock figures of this run: kept out of the report so the report is
reproducible)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from bot4.pipeline.topology import Topology, load_topology
from bot4.replay.latency import LatencyConfig
from bot4.replay.report import Report, report_from_journal
from bot4.replay.sources import DataSource, open_source

__all__ = ["ReplayOutcome", "replay"]


@dataclass
class ReplayOutcome:
    """``report`` (also written to ``out_dir``), ``run`` (the wall-clock facts written to
    ``run.json``) and the paths written."""

    report: Report
    run: dict
    out_dir: Path
    json_path: Path
    html_path: Path


def replay(
    data: str | os.PathLike | DataSource,
    out_dir: str | os.PathLike,
    *,
    mode: str = "deterministic",
    topology: str | os.PathLike | Topology | None = None,
    latency: LatencyConfig | None = None,
    seed: int = 1,
    speed: float = 0.0,
    step_ns: int = 0,
    max_batch: int = 4096,
    interval_ns: int = 60_000_000_000,
    progress=sys.stderr,
    timeout_s: float = 3600.0,
) -> ReplayOutcome:
    """Replay ``data`` (a path: see :func:`bot4.replay.sources.open_source`, or a source)
    through ``topology`` (default: the packaged one) and report into ``out_dir``.

    ``mode``: ``deterministic`` (one process, simulated clock, ``latency`` / ``seed`` /
    ``step_ns`` / ``max_batch`` apply) or ``full`` (the real multi-process pipeline, the md
    stage reading the file at ``speed``: 0 = as fast as it goes, 1 = recorded pace).
    Input problems raise :class:`bot4.replay.sources.ReplayInputError` before any work."""
    source = data if isinstance(data, DataSource) else open_source(data)
    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "deterministic":
        from bot4.replay.engine import DeterministicReplay

        eng = DeterministicReplay(
            source,
            out,
            topology=topo,
            latency=latency,
            seed=seed,
            step_ns=step_ns,
            max_batch=max_batch,
            interval_ns=interval_ns,
            progress=progress,
        )
        res = eng.run()
        report = report_from_journal(
            res.journal_dir,
            marks=res.mark_series,
            interval_ns=interval_ns,
            span_ns=(res.first_ns, res.last_ns),
            run={
                **res.config,
                "events": res.events,
                "steps": res.steps,
                "stages": _stable(res.summaries),
            },
        )
        if res.models is not None:  # a signals stage with model_slot (bot4.replay.models)
            report.doc["models"] = res.models
        run = {
            "mode": mode,
            "events": res.events,
            "steps": res.steps,
            "wall_s": res.wall_s,
            "source_s": res.source_s,
            "events_per_s": res.events / res.wall_s if res.wall_s > 0 else None,
            "events_per_s_excluding_source": (
                res.events / (res.wall_s - res.source_s) if res.wall_s > res.source_s else None
            ),
        }
    elif mode == "full":
        from bot4.replay.full import run_full

        res = run_full(source, out, topo, speed=speed, progress=progress, timeout_s=timeout_s)
        report = report_from_journal(
            res.journal_dir,
            marks=res.marks,
            interval_ns=interval_ns,
            run=res.config,
        )
        run = {"mode": mode, "wall_s": res.wall_s, "stages": res.stages, "events": res.events}
    else:
        raise ValueError(f"replay mode must be deterministic or full, not {mode!r}")
    j, h = report.write(out)
    (out / "run.json").write_bytes(orjson.dumps(run, option=orjson.OPT_INDENT_2) + b"\n")
    return ReplayOutcome(report, run, out, j, h)


def _stable(summaries: dict) -> dict:
    """Stage summaries without what depends on the host (paths, host-clock histograms)."""
    out = {}
    for name, s in summaries.items():
        s = dict(s)
        for k in ("journal", "tick_to_order_latency"):
            s.pop(k, None)
        out[name] = s
    return out
