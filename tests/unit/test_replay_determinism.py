"""Same data, topology, latency models and seed: byte-identical journals and identical
report JSON, run after run (in one process here; across SIMD widths in
tests/system/test_replay_simd.py)."""

from __future__ import annotations

import hashlib

from bot4.replay.latency import LatencyConfig
from bot4.replay.runner import replay
from bot4.replay.sources import SyntheticSource

LAT = LatencyConfig.from_specs(
    [
        "feed=quantiles:0=5us,0.5=20us,0.99=80us,1=200us",
        "order=spike(base=(empirical:30us,40us,55us),window=1ms,threshold=20,per_event=500ns,"
        "prob=0.02,spike=300us)",
        "compute=const:2us",
    ]
)


def run(tmp_path, name, seed=3):
    out = tmp_path / name
    o = replay(
        SyntheticSource(60_000, instruments=3, seed=11, dt_ns=2_000),
        out,
        latency=LAT,
        seed=seed,
        progress=None,
    )
    files = sorted((out / "journal").iterdir())
    return o, {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_two_runs_give_byte_identical_journals_and_reports(tmp_path):
    a, ja = run(tmp_path, "a")
    b, jb = run(tmp_path, "b")
    assert ja and ja == jb
    assert a.json_path.read_bytes() == b.json_path.read_bytes()
    assert a.html_path.read_bytes() == b.html_path.read_bytes()
    s = a.report.doc["summary"]
    assert s["fills"] > 0 and s["orders"] > 0
    lat = a.report.doc["latency"]["order_to_venue"]
    assert lat["min_ns"] >= 30_000 and lat["max_ns"] > 55_000  # the spikes under load


def test_another_seed_draws_other_latencies(tmp_path):
    a, ja = run(tmp_path, "a", seed=3)
    c, jc = run(tmp_path, "c", seed=4)
    assert ja != jc
    assert (
        a.report.doc["latency"]["order_to_venue"]["mean_ns"]
        != c.report.doc["latency"]["order_to_venue"]["mean_ns"]
    )
