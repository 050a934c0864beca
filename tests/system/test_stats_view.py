"""`bot4 stats` against a running pipeline: every stage and ring, read-only."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest

from bot4.shm.segment import Segment, instance_segments
from bot4.shm.stats import RingReader
from tests.system.pipeline_util import BOT4, start_pipeline, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

TOPO = """
instance = "{instance}"

[[stage]]
name = "src"
kind = "test-source"
core = 0
params = {{ rate = 50000 }}

[[stage]]
name = "sink"
kind = "count-sink"
core = 1

[[ring]]
name = "ticks"
from = "src"
to = "sink"
type = "market_data"
capacity = 1024
"""


def test_stats_json_lists_every_stage_and_ring_of_a_running_instance(instance, procs, tmp_path):
    p = start_pipeline(tmp_path, TOPO.format(instance=instance), procs)
    wait_running(instance)
    # records flowing (a fixed 0.5 s saw none consumed yet on a loaded machine)
    reader = RingReader(f"/bot4.{instance}.ticks")
    deadline = time.monotonic() + 60
    while reader.snapshot().consumed == 0:
        assert time.monotonic() < deadline, "no record consumed within 60 s"
        time.sleep(0.05)
    reader.close()
    ident = Segment.attach(f"/bot4.{instance}.ticks", readonly=True)
    before = hashlib.sha256(bytes(ident.buf[:128])).hexdigest()
    out = subprocess.run(
        [*BOT4, "stats", "--instance", instance, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert snap["pipeline"] == "running"
    assert [s["state"] for s in snap["stages"]] == ["running", "running"]
    assert all(s["pid"] > 0 and s["heartbeat_age_ns"] < 5e9 for s in snap["stages"])
    (ring,) = snap["rings"]
    assert ring["name"] == f"/bot4.{instance}.ticks" and ring["capacity"] == 1024
    assert ring["produced"] >= ring["consumed"] > 0 and 0 <= ring["depth"] <= 1024
    assert (
        ring["producer_pid"] == snap["stages"][0]["pid"]
        and ring["consumer_pid"] == snap["stages"][1]["pid"]
    )
    table = subprocess.run(
        [*BOT4, "stats", "--instance", instance, "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0 and "ticks" in table.stdout and "running" in table.stdout
    # the readers never wrote: the identity line is unchanged and no pid of theirs is recorded
    assert hashlib.sha256(bytes(ident.buf[:128])).hexdigest() == before
    ident.close()
    p.terminate()
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    assert not instance_segments(instance)
