"""A pipeline's log under a simulated journald: the supervisor's and the stages' lines carry
the syslog priority of their level, as JSON lines with the events' fields; the restart
policy's halt exits 3.

The stderr of ``bot4 run`` is one end of a Unix stream socket with ``$JOURNAL_STREAM``
naming it, which is what systemd gives a unit; the test reads what journald would store."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from bot4.shm.segment import instance_segments
from tests.system.pipeline_util import BOT4, chain_topology

pytestmark = [pytest.mark.system, pytest.mark.timeout(200)]


def test_halting_pipeline_logs_restarts_as_warnings_and_the_halt_as_an_error_under_journald(
    instance, procs, tmp_path
):
    topo = tmp_path / "t.toml"
    # no sink log segments exist: the sink fails at attach, every time
    topo.write_text(chain_topology(instance, count=1000))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    st = os.fstat(theirs.fileno())
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", PYTHONUNBUFFERED="1")
    cmd = [*BOT4, "run", str(topo), "--quiet", "--no-db", "--max-restarts", "1"]
    try:
        p = subprocess.Popen(
            [*cmd, "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=theirs.fileno(),
            env=env,
            start_new_session=True,
        )
        p.group = True
        procs.add(p)
        theirs.close()
        ours.settimeout(180)
        chunks = []
        while b := ours.recv(65536):
            chunks.append(b)
        code = p.wait(timeout=60)
    finally:
        ours.close()
    lines = b"".join(chunks).decode().splitlines()
    assert code == 3, lines  # halted by the restart policy
    # every line went through bot4.logs: a priority, then one JSON object
    entries = []
    for ln in lines:
        assert ln[0] == "<" and ln[2] == ">", ln
        entries.append((int(ln[1]), json.loads(ln[3:])))
    by_event = {}
    for prio, doc in entries:
        by_event.setdefault(doc["event"], []).append((prio, doc))
    (restart,) = by_event["stage_restart"]
    assert restart[0] == 4 and restart[1]["level"] == "warning"
    assert restart[1]["process"] == "supervisor" and restart[1]["stage"] == "sink"
    assert restart[1]["restart"] == 1 and restart[1]["backoff_s"] > 0
    (halt,) = by_event["pipeline_halted"]
    assert halt[0] == 3 and "stage sink failed 2 times" in halt[1]["msg"]
    # the sink's own failure (its attach refused): one error entry per attempt
    fails = [(prio, d) for prio, d in entries if d["process"] == "sink" and d["level"] == "error"]
    assert len(fails) == 2 and all(prio == 3 for prio, _ in fails), fails
    assert all(d["event"] == "stage_failed" and "does not exist" in d["msg"] for _, d in fails)
    assert not instance_segments(instance)
