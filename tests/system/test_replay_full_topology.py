"""Full-topology replay: the real multi-process pipeline, the md stage reading a LOBSTER
file at 25 times the recorded pace (its 49 s in 2 s), ending by itself once the file is
published; the report comes from the persistence stage's journal. Every stage process is
reaped and no shared-memory segment of the instance is left (the ``instance`` fixture
checks)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from bot4.pipeline.topology import load_topology
from bot4.replay.full import run_full
from bot4.replay.report import report_from_journal
from bot4.replay.sources import open_source
from bot4.shm.segment import instance_segments
from tests.data_paths import lobster_dir

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


def test_full_topology_replay_of_a_lobster_file_reports_and_cleans_up(instance, tmp_path):
    src = open_source(
        lobster_dir() / "aapl_level10_first999" / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
    )
    res = run_full(src, tmp_path / "out", load_topology(None), speed=25.0, instance=instance,
                   timeout_s=180)  # fmt: skip
    assert res.events == src.total  # every record published to every md output
    assert all(s["state"] == "stopped" and s["restarts"] == 0 for s in res.stages.values())
    assert res.stages["signals"]["records_in"] == src.total
    assert res.stages["persistence"]["records_in"] > 0
    rep = report_from_journal(res.journal_dir, marks=res.marks, run=res.config)
    den = rep.doc["denials"]
    assert den["decisions"] > 0 and sum(den["by_reason"].values()) == den["total"]
    assert res.marks.get(1, 0) > 0  # AAPL's last mid
    assert not mp.active_children()  # every stage process reaped
    assert not instance_segments(instance)
    # latencies are measured here: host stamps, microseconds to milliseconds
    t2o = rep.doc["latency"]["tick_to_order"]
    if t2o["count"]:
        assert 0 < t2o["p50_ns"] < 5_000_000_000
