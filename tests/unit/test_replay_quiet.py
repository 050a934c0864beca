"""Quiet steps (``bot4.replay.quiet``): the event-exact loop's steps where only the risk
stage has work, run many per kernel call, leave the same journal bytes, stage summaries,
marks and step count as the Python scheduler doing every step itself. Fixed scenarios:
synthetic quotes and trades (random feed latencies, a compute latency per hop, a small
journal batch so the sink's batches fall inside the kernel's runs); slices of a LOBSTER
day (long quiet gaps: staleness checks, references going old between intents)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bot4.replay.engine as engine
from bot4.replay.engine import DeterministicReplay
from bot4.replay.latency import LatencyConfig
from bot4.replay.sources import DataSource, SyntheticSource, open_source
from tests.data_paths import lobster_dir

LAT = LatencyConfig.from_specs(["feed=quantiles:0=5us,0.5=20us,1=200us", "compute=const:2us"])


def _run(source, out: Path, quiet: bool, latency=None, seed: int = 1):
    eng = DeterministicReplay(source, out, latency=latency, seed=seed)
    eng.quiet_steps = quiet
    r = eng.run()
    journal = {p.name: p.read_bytes() for p in sorted(r.journal_dir.iterdir())}
    summaries = dict(r.summaries)
    summaries["persistence"] = {k: v for k, v in summaries["persistence"].items() if k != "journal"}
    times, mids = r.mark_series
    marks = (times.tolist(), {k: v.tolist() for k, v in mids.items()})
    return eng, (journal, summaries, marks, r.marks, r.events, r.steps)


def _same(src, tmp_path, latency=None):
    q_eng, q = _run(src(), tmp_path / "quiet", True, latency)
    _p_eng, p = _run(src(), tmp_path / "python", False, latency)
    assert q_eng.quiet is not None and q_eng.quiet.calls > 0
    assert q[0] and q[0].keys() == p[0].keys()
    for name in q[0]:
        assert q[0][name] == p[0][name], f"journal file {name} differs"
    assert q[1:] == p[1:]
    return q


@pytest.mark.parametrize("sink_batch", [64, 4096])
def test_synthetic_quiet_equals_the_scheduler(tmp_path, monkeypatch, sink_batch):
    monkeypatch.setattr(engine, "SINK_BATCH", sink_batch)
    src = lambda: SyntheticSource(60_000, instruments=3, seed=11, dt_ns=1_000)  # noqa: E731
    q = _same(src, tmp_path, LAT)
    assert q[1]["signals"]["intents"] > 300 and q[1]["venue"]["fills"] > 0


@pytest.mark.parametrize(("name", "lo", "hi"), [("AMZN_2012-06-21_5", 36_000, 48_000),
                                                 ("GOOG_2012-06-21_1", 0, 12_000)])  # fmt: skip
def test_lobster_quiet_equals_the_scheduler(tmp_path, name, lo, hi):
    z = lobster_dir() / "zips" / f"LOBSTER_SampleFile_{name}.zip"
    if not z.exists():
        pytest.skip(f"{z} not present")
    data = np.concatenate(list(open_source(z).chunks()))[lo:hi]

    def src():
        return DataSource(
            "lobster", str(z), len(data), int(data["ts_event_ns"][0]),
            int(data["ts_event_ns"][-1]), None, None, data,
        )  # fmt: skip

    q = _same(src, tmp_path)
    assert q[1]["signals"]["intents"] > 0
