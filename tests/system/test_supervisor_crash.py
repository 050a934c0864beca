"""Start-up after a supervisor crash, and an instance that is still alive.

Scenarios and the outcomes they allow:

* the supervisor of a running pipeline is SIGKILLed (its stages die with it, its segments
  stay, the supervisor is left a zombie until reaped): the next `bot4 run` of the instance
  says in one line that the dead run's segments are replaced, runs, and exits 0 with the
  sink having received its records; nothing of the instance is left in /dev/shm.
* a second `bot4 run` (or `bot4 shm destroy`) of an instance whose supervisor is alive: refused,
  exit 1, with a message naming the live supervisor's pid and no hint to destroy anything;
  the running pipeline is untouched and stops cleanly afterwards.
* a segment name pre-created by another user (``nobody``): creation is refused with a
  message naming that user; the foreign segment is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess

import posix_ipc
import pytest

from bot4.shm.segment import instance_segments, segment_name, segment_owner
from tests.system.pipeline_util import BOT4, SinkLog, chain_topology, start_pipeline, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


@pytest.fixture
def sink(instance):
    s = SinkLog(instance, 1 << 16)
    yield s
    s.close()


def run_again(tmp_path, text: str, timeout: float = 200) -> subprocess.CompletedProcess:
    topo = tmp_path / "again.toml"
    topo.write_text(text)
    return subprocess.run(
        [*BOT4, "run", str(topo), "--quiet"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def test_supervisor_sigkilled_next_run_replaces_the_dead_instance_and_runs(
    instance, procs, sink, tmp_path
):
    p = start_pipeline(tmp_path, chain_topology(instance, rate=2000), procs)
    wait_running(instance)
    sink.wait_for(200, 120, p)
    os.kill(p.pid, signal.SIGKILL)  # not reaped yet: a zombie must count as dead too
    left = instance_segments(instance)
    assert segment_name(instance, "control") in left
    before = sink.count

    out = run_again(tmp_path, chain_topology(instance, count=500))
    p.wait(10)
    assert out.returncode == 0, out.stdout + out.stderr
    notices = [ln for ln in out.stderr.splitlines() if "left by a dead run" in ln]
    assert len(notices) == 1, out.stderr
    assert f"supervisor pid {p.pid}, gone" in notices[0] and "replaced" in notices[0]
    assert sink.count >= before + 500  # the new session's records all arrived
    assert not instance_segments(instance)


def test_live_instance_is_refused_without_a_hint_to_destroy_it(instance, procs, sink, tmp_path):
    p = start_pipeline(tmp_path, chain_topology(instance, rate=1000), procs)
    wait_running(instance)
    segments = instance_segments(instance)

    out = run_again(tmp_path, chain_topology(instance, count=10), timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("bot4: error: instance ") and "is running" in err
    assert f"pid {p.pid}" in err
    assert "destroy" not in out.stderr

    gone = subprocess.run(
        [*BOT4, "shm", "destroy", "--instance", instance],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode == 1 and "is running" in gone.stderr, gone.stderr
    assert instance_segments(instance) == segments  # nothing unlinked under it

    n = sink.count
    sink.wait_for(n + 100, 60, p)  # the live pipeline still flows
    p.send_signal(signal.SIGTERM)
    log, _ = p.communicate(timeout=120)
    assert p.returncode == 0, log
    assert not instance_segments(instance)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_segment_name_squatted_by_another_user_is_refused_naming_them(instance, tmp_path):
    import pwd

    nobody = pwd.getpwnam("nobody")
    name = segment_name(instance, "r1")
    pid = os.fork()
    if pid == 0:  # the squatter: another local user creating the name first, mode 0666
        code = 1
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o666, size=64).close_fd()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    try:
        assert segment_owner(name) == nobody.pw_uid
        topo = tmp_path / "t.toml"
        topo.write_text(chain_topology(instance, count=10))
        out = subprocess.run(
            [*BOT4, "shm", "create", "--topology", str(topo)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 1, out.stdout + out.stderr
        err = out.stderr.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert f"{name}: already exists and belongs to nobody" in err
        assert segment_owner(name) == nobody.pw_uid  # theirs, left alone
        assert instance_segments(instance) == [name]  # ours were all unlinked again
    finally:
        posix_ipc.unlink_shared_memory(name)
