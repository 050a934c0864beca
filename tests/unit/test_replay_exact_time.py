"""Event-exact time: the deterministic replay's default run (``step_ns = 0``: market data
applied a window at a time between events, a step at each event's own time) leaves the
same journal bytes, stage summaries and marks as a run stepping every nanosecond, where
each record is handled at its own time by construction. Fixed scenarios: synthetic
quotes and trades with random feed latencies, load-driven order latencies and a compute
latency per hop; the start of a LOBSTER day (order-level events, the venue in order
mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot4.records.errors import Bot4Error
from bot4.replay.engine import DeterministicReplay
from bot4.replay.latency import LatencyConfig
from bot4.replay.sources import DataSource, SyntheticSource, open_source
from tests.data_paths import lobster_dir

LAT = LatencyConfig.from_specs(
    [
        "feed=quantiles:0=5us,0.5=20us,0.99=80us,1=200us",
        "order=spike(base=(empirical:30us,40us,55us),window=1ms,threshold=20,per_event=500ns,"
        "prob=0.02,spike=300us)",
        "report=quantiles:0=10us,1=90us",
        "compute=const:2us",
    ]
)


def _run(source, out: Path, step_ns: int, latency=None, seed: int = 3):
    r = DeterministicReplay(source, out, step_ns=step_ns, latency=latency, seed=seed).run()
    journal = {p.name: p.read_bytes() for p in sorted(r.journal_dir.iterdir())}
    summaries = dict(r.summaries)
    summaries["persistence"] = {k: v for k, v in summaries["persistence"].items() if k != "journal"}
    times, mids = r.mark_series
    return r, journal, summaries, (times.tolist(), {k: v.tolist() for k, v in mids.items()})


def _same(a, b):
    ra, ja, sa, ma = a
    rb, jb, sb, mb = b
    assert ja and ja.keys() == jb.keys()
    for name in ja:
        assert ja[name] == jb[name], f"journal file {name} differs"
    assert sa == sb
    assert ra.marks == rb.marks and ma == mb
    assert ra.events == rb.events
    assert ra.steps < rb.steps  # the windows did the work of many 1 ns steps


def test_synthetic_exact_equals_1ns_step(tmp_path):
    src = lambda: SyntheticSource(20_000, instruments=3, seed=11, dt_ns=2_000)  # noqa: E731
    exact = _run(src(), tmp_path / "exact", 0, LAT)
    fine = _run(src(), tmp_path / "ns", 1, LAT)
    _same(exact, fine)
    s = exact[2]
    assert s["venue"]["fills"] > 0 and s["signals"]["intents"] > 100


def test_lobster_start_exact_equals_1ns_step(tmp_path):
    z = lobster_dir() / "zips" / "LOBSTER_SampleFile_AMZN_2012-06-21_1.zip"
    if not z.exists():
        pytest.skip(f"{z} not present")
    full = open_source(z)
    data = np.concatenate(list(full.chunks()))[:12_000]

    def src():
        return DataSource(
            "lobster", str(z), len(data), int(data["ts_event_ns"][0]),
            int(data["ts_event_ns"][-1]), None, None, data,
        )  # fmt: skip

    exact = _run(src(), tmp_path / "exact", 0)
    fine = _run(src(), tmp_path / "ns", 1)
    _same(exact, fine)
    v = exact[2]["venue"]
    assert v["ext_added"] > 1000 and exact[2]["signals"]["intents"] > 0


def test_exact_time_refuses_a_random_compute_latency(tmp_path):
    lat = LatencyConfig.from_specs(["compute=empirical:1us,3us"])
    with pytest.raises(Bot4Error, match="constant compute latency"):
        DeterministicReplay(SyntheticSource(100), tmp_path, latency=lat)
    DeterministicReplay(SyntheticSource(100), tmp_path / "s", latency=lat, step_ns=1_000)
