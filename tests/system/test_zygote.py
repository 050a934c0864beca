"""`bot4 run`'s stage processes come from its zygote (``bot4.pipeline.zygote``), on the
four-stage chain (src -> a -> b -> sink; ``pipeline_util.chain_topology``).

Scenarios and the outcomes they allow:

* a run with the zygote (the default; ``BOT4_ZYGOTE`` unset): every stage process is a child of one zygote process,
  itself a child of the supervisor; the zygote SIGKILLed mid-run takes every stage with it, the supervisor
  restarts each (spawned now: children of the supervisor), the sink logs 1..N exactly
  once, in order, and a Ctrl-C then drains: exit 0, nothing left in /dev/shm;
* ``BOT4_ZYGOTE=0``: every stage process is a child of the supervisor;
* either way each stage process leads a session of its own.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from bot4.shm.segment import instance_segments
from tests.system.pipeline_util import chain_topology, stage_block, start_pipeline, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

STAGES = range(4)  # src, a, b, sink


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _own_sessions(pids: list[int], supervisor: int) -> None:
    """Each stage process leads a session of its own (``zygote.own_session``: the kernel's
    autogroup scheduling then treats each stage as one entity, not the whole pipeline)."""
    assert all(os.getsid(pid) == pid for pid in pids), [(pid, os.getsid(pid)) for pid in pids]
    assert os.getsid(supervisor) not in pids


def _wait(what: str, cond, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"pipeline exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


def _stop(p) -> tuple[int, str]:
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C as a terminal sends it
    out, _ = p.communicate(timeout=150)
    return p.returncode, out


def test_zygote_killed_mid_run_takes_its_stages_which_restart_spawned_and_lose_nothing(
    instance, procs, sink, tmp_path, monkeypatch
):
    monkeypatch.delenv("BOT4_ZYGOTE", raising=False)  # the default (zygote.enabled)
    log = sink(20_000_000)
    p = start_pipeline(tmp_path, chain_topology(instance, count=0, rate=50_000), procs)
    wait_running(instance)
    pids = [stage_block(instance, i)["pid"] for i in STAGES]
    zygotes = {_ppid(pid) for pid in pids}
    assert len(zygotes) == 1, zygotes
    zygote = zygotes.pop()
    assert zygote != p.pid and _ppid(zygote) == p.pid
    _own_sessions(pids, p.pid)
    _wait("records flow", lambda: log.count > 20_000, p)
    os.kill(zygote, signal.SIGKILL)

    def all_restarted() -> bool:
        blocks = [stage_block(instance, i) for i in STAGES]
        return all(b["pid"] not in pids and b["state"] == 2 for b in blocks)  # running

    _wait("every stage restarted", all_restarted, p)
    assert all(_ppid(stage_block(instance, i)["pid"]) == p.pid for i in STAGES)
    seen = log.count
    _wait("records flow again", lambda: log.count > seen + 20_000, p)
    _own_sessions([stage_block(instance, i)["pid"] for i in STAGES], p.pid)  # they run
    code, out = _stop(p)
    assert code == 0, out
    assert "Traceback" not in out, out
    assert not instance_segments(instance)
    ids = log.ids()
    assert np.array_equal(ids, np.arange(1, len(ids) + 1, dtype=np.uint64))


def test_without_the_zygote_stages_are_the_supervisors_children(
    instance, procs, tmp_path, monkeypatch
):
    monkeypatch.setenv("BOT4_ZYGOTE", "0")
    text = chain_topology(instance, count=0, rate=10_000)
    text = text.replace('params = { log = "sink", log_instance = "' + instance + 'x" }', "")
    p = start_pipeline(tmp_path, text.replace('kind = "test-sink"', 'kind = "count-sink"'), procs)
    wait_running(instance)
    pids = [stage_block(instance, i)["pid"] for i in STAGES]
    assert all(_ppid(pid) == p.pid for pid in pids)
    _own_sessions(pids, p.pid)
    code, out = _stop(p)
    assert code == 0, out
    assert not instance_segments(instance)
