"""The runtime end to end: `bot4 run` on small topologies, with kills, stalls and stops.

Scenarios and the outcomes they allow:

* chain of four processes: the sink logs ids 1..N, each once, in order; exit 0.
* middle stage SIGKILLed while records flow (several times): restarted each time; the
  sink still logs 1..N exactly once, in order.
* SIGTERM mid-stream: exit 0; the sink logs exactly what the source published
  (1..M, M from the report); nothing of the instance is left in /dev/shm.
* a stage stopped with SIGSTOP: reported as stalled, SIGKILLed, reaped, restarted;
  the records still arrive exactly once.
* a stage that cannot start: bounded restarts, then the pipeline halts with an error
  naming it, exit code 3.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from bot4.shm.segment import instance_segments
from tests.seeds import seeded_rng
from tests.system.pipeline_util import (
    chain_topology,
    stage_block,
    start_pipeline,
    wait_running,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


def stop(p, sig=signal.SIGTERM, timeout=120):
    os.kill(p.pid, sig)
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


def test_four_process_chain_delivers_five_million_records_in_order(instance, procs, sink, tmp_path):
    n = 5_000_000
    log = sink(n + 2)
    p = start_pipeline(tmp_path, chain_topology(instance, count=n), procs)
    log.wait_for(n, 240, p)
    code, out = stop(p)
    assert code == 0, out
    ids = log.ids()
    assert len(ids) == n
    assert np.array_equal(ids, np.arange(1, n + 1, dtype=np.uint64))  # every record once, in order
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stages"]["a"]["records_in"] == n and report["stages"]["b"]["records_out"] == n
    assert not instance_segments(instance)


def test_middle_stage_sigkilled_while_records_flow_is_restarted_and_sink_sees_each_once(
    instance, procs, sink, tmp_path
):
    n = 1_500_000
    log = sink(n + 2)
    p = start_pipeline(tmp_path, chain_topology(instance, count=n, rate=300_000, batch=64), procs)
    wait_running(instance)
    rng, _seed = seeded_rng("middle stage kill times")
    kills = 0
    while kills < 3:
        time.sleep(float(rng.uniform(0.4, 1.0)))
        a = stage_block(instance, 1)
        if a["state"] != 2:  # not (yet again) running
            continue
        os.kill(a["pid"], signal.SIGKILL)
        kills += 1
        deadline = time.monotonic() + 60
        while (
            stage_block(instance, 1)["restarts"] < kills or stage_block(instance, 1)["state"] != 2
        ):
            assert time.monotonic() < deadline, "killed stage was not restarted"
            time.sleep(0.05)
    assert log.count < n, "the stream ended before the kills: make it longer"
    log.wait_for(n, 200, p)
    time.sleep(0.3)  # anything duplicated would arrive now
    code, out = stop(p)
    assert code == 0, out
    ids = log.ids()
    dup = len(ids) - len(np.unique(ids))
    assert dup == 0, f"{dup} records delivered twice"
    assert np.array_equal(ids, np.arange(1, n + 1, dtype=np.uint64))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stages"]["a"]["restarts"] == 3


def test_sigterm_mid_stream_drains_every_record_produced_before_the_stop(
    instance, procs, sink, tmp_path
):
    log = sink(20_000_000)
    p = start_pipeline(
        tmp_path, chain_topology(instance, count=0, rate=500_000, spin_us=200, capacity=8192), procs
    )
    wait_running(instance)
    time.sleep(2.0)
    code, out = stop(p)
    assert code == 0, out
    report = json.loads((tmp_path / "report.json").read_text())
    produced = report["stages"]["src"]["records_out"]
    ids = log.ids()
    assert produced > 100_000
    assert len(ids) == produced  # everything the source published reached the sink
    assert np.array_equal(ids, np.arange(1, produced + 1, dtype=np.uint64))
    assert not instance_segments(instance)


def test_stage_stopped_with_sigstop_is_detected_killed_and_restarted(
    instance, procs, sink, tmp_path
):
    # 300 k at 100 k/s: the source is still publishing when a is stopped (0.5 s in), and
    # blocks on the full r1 until a's replacement reads again
    n = 300_000
    log = sink(n + 2)
    p = start_pipeline(
        tmp_path, chain_topology(instance, count=n, rate=100_000, hb=1.0, batch=64), procs
    )
    wait_running(instance)
    time.sleep(0.5)
    a = stage_block(instance, 1)
    os.kill(a["pid"], signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while stage_block(instance, 1)["restarts"] < 1:
        assert time.monotonic() < deadline, "stall not detected"
        time.sleep(0.05)
    # the stopped process was killed and reaped before its replacement attached
    with pytest.raises(ProcessLookupError):
        os.kill(a["pid"], 0)
    assert stage_block(instance, 1)["pid"] != a["pid"]
    log.wait_for(n, 120, p)
    time.sleep(0.3)
    code, out = stop(p)
    assert code == 0, out
    assert "stalled (no heartbeat" in out
    assert np.array_equal(log.ids(), np.arange(1, n + 1, dtype=np.uint64))


def test_stage_that_keeps_failing_halts_the_pipeline_with_a_clear_error(instance, procs, tmp_path):
    # no sink log segments exist: the sink fails at attach, every time. Two restarts are
    # enough to show the bound (the default policy's five only add process starts)
    p = start_pipeline(tmp_path, chain_topology(instance, count=1000), procs, "--max-restarts", "2")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 3, out  # halted by the restart policy
    assert "error: stage sink failed" in out and "halting the pipeline" in out
    assert not instance_segments(instance)
