"""Stage groups (shared mode): several stages in one process on one core (issue 15).

Scenarios and the outcomes they allow:

* a group of three stages (relay, relay, sink) behind a source carries N records: the
  sink logs 1..N, each once, in order; exit 0; both relays report N records.
* the group process SIGKILLed three times mid-flow: the supervisor restarts the group
  (every member's restart count is 3) and every member resumes exactly: 1..N once, in
  order.
* SIGTERM drains a group: exit 0, every member stopped, every record the source emitted
  reaches the sink.
* the default topology on one core only (every stage, groups included, pinned to core 0)
  runs, keeps trading and drains with exit 0, leaving no record unread on any ring (the
  fills the orders stage forwards while its shutdown CANCEL_ALL is answered included).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from importlib import resources

import numpy as np
import pytest

from bot4.pipeline.topology import TopologyError, load_topology, parse_topology
from bot4.shm.segment import instance_segments, segment_name
from bot4.shm.stats import RingReader
from tests.system.pipeline_util import (
    BOT4,
    LoggedPopen,
    chain_topology,
    stage_block,
    start_pipeline,
    wait_running,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

GROUP = """
[[group]]
name = "g"
members = ["a", "b", "sink"]
core = 1
idle = "{idle}"
"""


def _grouped_chain(instance, idle="backoff", **kw) -> str:
    """The test chain with a, b and sink in group g: the members' own cores go (the
    group's core is theirs)."""
    blocks = chain_topology(instance, **kw).split("[[stage]]")
    for i, b in enumerate(blocks):
        if re.search(r'name = "(a|b|sink)"', b):
            blocks[i] = re.sub(r"(?m)^core = \d+\n", "", b)
    return "[[stage]]".join(blocks) + GROUP.format(idle=idle)


def _stop(p, sig=signal.SIGTERM, timeout=120):
    os.kill(p.pid, sig)
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


@pytest.mark.parametrize("idle", ["backoff", "park"])
def test_group_of_three_stages_carries_records_exactly_once_in_order(
    idle, instance, procs, sink, tmp_path
):
    n = 1_000_000
    log = sink(n + 2)
    p = start_pipeline(tmp_path, _grouped_chain(instance, idle, count=n), procs)
    log.wait_for(n, 240, p)
    code, out = _stop(p)
    assert code == 0, out
    assert np.array_equal(log.ids(), np.arange(1, n + 1, dtype=np.uint64))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stages"]["a"]["records_in"] == n and report["stages"]["b"]["records_out"] == n
    assert all(s["state"] == "stopped" for s in report["stages"].values())
    # one process for the three members
    assert "group g" not in out or "restart" not in out


def test_group_sigkilled_three_times_every_member_resumes_exactly(instance, procs, sink, tmp_path):
    n = 1_500_000
    log = sink(n + 2)
    p = start_pipeline(tmp_path, _grouped_chain(instance, count=n, rate=300_000, batch=64), procs)
    wait_running(instance)
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    kills = 0
    while kills < 3:
        time.sleep(float(rng.uniform(0.3, 0.9)))
        a = stage_block(instance, 1)
        if a["state"] != 2:
            continue
        pids = {stage_block(instance, i)["pid"] for i in (1, 2, 3)}
        assert len(pids) == 1, f"group members in different processes: {pids}"
        os.kill(a["pid"], signal.SIGKILL)
        kills += 1
        deadline = time.monotonic() + 60
        while any(
            stage_block(instance, i)["restarts"] < kills or stage_block(instance, i)["state"] != 2
            for i in (1, 2, 3)
        ):
            assert time.monotonic() < deadline, "killed group was not restarted"
            time.sleep(0.05)
    assert log.count < n, "the stream ended before the kills: make it longer"
    log.wait_for(n, 200, p)
    time.sleep(0.3)  # anything duplicated would arrive now
    code, out = _stop(p)
    assert code == 0, out
    ids = log.ids()
    assert len(ids) == len(np.unique(ids)), "records delivered twice"
    assert np.array_equal(ids, np.arange(1, n + 1, dtype=np.uint64))
    report = json.loads((tmp_path / "report.json").read_text())
    assert [report["stages"][m]["restarts"] for m in ("a", "b", "sink")] == [3, 3, 3]


def test_sigterm_drains_a_group_in_topology_order(instance, procs, sink, tmp_path):
    log = sink(2_000_000)
    p = start_pipeline(tmp_path, _grouped_chain(instance, rate=200_000), procs)
    wait_running(instance)
    log.wait_for(50_000, 60, p)
    code, out = _stop(p)
    assert code == 0, out
    report = json.loads((tmp_path / "report.json").read_text())
    emitted = report["stages"]["src"]["records_out"]
    assert emitted >= 50_000
    assert np.array_equal(log.ids(), np.arange(1, emitted + 1, dtype=np.uint64))
    assert all(s["state"] == "stopped" for s in report["stages"].values())
    assert not instance_segments(instance)


def _produced(instance: str, ring: str) -> int:
    """Records ``ring`` has carried so far (a read-only snapshot)."""
    r = RingReader(segment_name(instance, ring))
    try:
        return r.snapshot().produced
    finally:
        r.close()


def test_default_topology_runs_on_one_core(instance, procs, tmp_path):
    text = resources.files("bot4.config").joinpath("default.toml").read_text()
    text = re.sub(r"(?m)^core = \d+", "core = 0", text)
    text = re.sub(r'(?m)^instance = ".*"', f'instance = "{instance}"', text)
    topo = tmp_path / "one-core.toml"
    topo.write_text(text)
    cap = next(r.capacity for r in load_topology(topo).rings if r.name == "ticks")
    report = tmp_path / "report.json"
    # the duration is only a bound: the run is stopped once the ticks ring has wrapped twice
    # and risk has sent orders (what the checks below need), not after a fixed 6 s
    p = procs.add(
        LoggedPopen(
            ["taskset", "-c", "0", *BOT4, "run", str(topo), "--duration", "150", "--quiet"]
            + ["--no-db", "--report", str(report)],
            tmp_path / "pipeline.log",
            start_new_session=True,
        )
    )
    p.group = True
    wait_running(instance)
    deadline = time.monotonic() + 120
    while not (_produced(instance, "ticks") > 2 * cap and _produced(instance, "orders") > 0):
        assert p.poll() is None, p.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no ticks past the wrap and orders within 120 s"
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)  # drain and stop
    log, _ = p.communicate(timeout=150)
    assert p.returncode == 0, log
    final = json.loads(report.read_text())
    assert final["halted"] is None
    assert final["stages"]["orders"]["records_in"] > 0
    assert final["rings"]["ticks"]["produced"] > cap  # past the first wrap
    assert all(s["state"] == "stopped" for s in final["stages"].values())
    # the drain read everything: risk (in the group, before orders) still reads the fills
    # ring while orders cancels what rests and forwards the venue's CANCELLED reports
    left = {k: r["depth"] for k, r in final["rings"].items() if r["depth"]}
    assert not left, f"records left unread after the drain: {left}"
    assert not instance_segments(instance)


@pytest.mark.parametrize(
    "group, problem",
    [
        ('name = "g"\nmembers = ["nope"]\ncore = 0', "stage 'nope' does not exist"),
        ('name = "g"\nmembers = []\ncore = 0', "at least one member"),
        ('name = "g"\nmembers = ["a"]\ncore = 64', "does not exist on this machine"),
        ('name = "g"\nmembers = ["a"]\ncore = 0\nidle = "nap"', "not one of"),
        ('name = "a"\nmembers = ["b"]\ncore = 0', "a stage has this name"),
        ('name = "g"\nmembers = ["a"]\ncore = 0\ncolour = 1', "unknown key"),
    ],
)
def test_group_topology_errors_name_the_key(group, problem):
    import tomllib

    text = chain_topology("t") + "\n[[group]]\n" + group + "\n"
    with pytest.raises(TopologyError) as e:
        parse_topology(tomllib.loads(text), "t.toml", cpu_count=2)
    assert problem in str(e.value) and str(e.value).startswith("t.toml: group")


def test_group_member_in_two_groups_or_on_another_core_is_refused():
    import tomllib

    two = chain_topology("t") + '[[group]]\nname = "g"\nmembers = ["a"]\ncore = 1\n'
    two += '[[group]]\nname = "h"\nmembers = ["a"]\ncore = 1\n'
    with pytest.raises(TopologyError, match="already in group 'g'"):
        parse_topology(tomllib.loads(two), "t.toml", cpu_count=2)
    other = chain_topology("t", a_core=1) + '[[group]]\nname = "g"\nmembers = ["a"]\ncore = 0\n'
    with pytest.raises(TopologyError, match="member of a group on core 0"):
        parse_topology(tomllib.loads(other), "t.toml", cpu_count=2)
