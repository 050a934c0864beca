"""`bot4 record` captures a market data source into a journal, and the md stage replays that
journal: the replayed ticks are the recorded ones, in order, none lost or repeated."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.records import RT_MARKET_DATA
from bot4.shm.segment import instance_segments
from tests.system.pipeline_util import BOT4, start_pipeline

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

FIELDS = ["ts_event_ns", "price", "qty", "order_id", "instrument", "kind", "side", "flags"]


def md_of(journal) -> np.ndarray:
    parts = [r for _p, t, r in JournalReader(journal) if t == RT_MARKET_DATA]
    return np.concatenate(parts)


def test_recorded_synthetic_ticks_replay_through_the_md_stage(instance, procs, tmp_path):
    rec = tmp_path / "rec"
    out = subprocess.run(
        [*BOT4, "record", "--count", "6000", "--rate", "50000", "--out", str(rec)]
        + ["--instance", instance, "--quiet"],
        capture_output=True,
        text=True,
        timeout=180,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "recorded 6,000 market data records" in out.stdout
    recorded = md_of(rec)
    assert len(recorded) == 6000 and len(np.unique(recorded["seq"])) == 6000
    assert not instance_segments(instance)

    again = tmp_path / "again"
    topo = f"""
instance = "{instance}"
[[stage]]
name = "md"
kind = "md"
core = 0
params = {{ source = "journal", path = "{rec}" }}
[[stage]]
name = "sink"
kind = "persistence"
core = 1
params = {{ dir = "{again}" }}
[[ring]]
name = "ticks"
from = "md"
to = "sink"
type = "market_data"
capacity = 4096
"""
    p = start_pipeline(tmp_path, topo, procs)
    log, _ = p.communicate(timeout=180)
    assert p.returncode == 0, log
    replayed = md_of(again)
    assert len(replayed) == len(recorded)
    for f in FIELDS:
        assert np.array_equal(replayed[f], recorded[f]), f
    assert not instance_segments(instance)


def test_replaying_a_journal_without_market_data_is_a_clear_error(instance, procs, tmp_path):
    empty = tmp_path / "nothing"
    topo = f"""
instance = "{instance}"
[[stage]]
name = "md"
kind = "md"
core = 0
params = {{ source = "journal", path = "{empty}" }}
[[stage]]
name = "sink"
kind = "count-sink"
core = 1
[[ring]]
name = "ticks"
from = "md"
to = "sink"
type = "market_data"
capacity = 4096
"""
    p = start_pipeline(tmp_path, topo, procs)
    log, _ = p.communicate(timeout=180)
    assert p.returncode != 0
    assert f"{empty}: no such journal directory" in log
    assert not instance_segments(instance)
