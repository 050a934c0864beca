"""Operator actions (`bot4 halt|resume|breaker`) on a running default pipeline reach the
persistence stage's journal: who, what, old and new state, in the order they were taken,
each once; the risk stage logs each change at its level, persistence who made it."""

from __future__ import annotations

import signal
import subprocess

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.records import OPERATOR_ACTION, RT_OPERATOR_ACTION
from bot4.shm.segment import instance_segments
from tests.system.pipeline_util import BOT4, wait_running
from tests.system.test_trading_e2e import start

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


def test_operator_actions_are_journalled_once_in_order(instance, procs, tmp_path):
    p = procs.add(start(instance, tmp_path, 900))  # stopped by SIGINT below
    wait_running(instance)
    cmds = [
        ["halt", "AAPL", "--note", "first"],
        ["resume", "AAPL", "--note", "second"],
        ["breaker", "trip", "db", "--note", "third"],
        ["breaker", "reset", "db", "--note", "fourth"],
    ]
    for c in cmds:
        out = subprocess.run(
            [*BOT4, *c, "--instance", instance], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "not logged" not in out.stderr
    p.send_signal(signal.SIGINT)  # drain and stop
    log, _ = p.communicate(timeout=200)
    assert p.returncode == 0, log
    acts = [
        r
        for _pos, rtype, recs in JournalReader(tmp_path / "bot4-data" / "journal" / instance)
        if rtype == RT_OPERATOR_ACTION
        for r in recs
    ]
    assert len(acts) == len(cmds)
    assert np.asarray(acts).dtype == OPERATOR_ACTION
    assert [bytes(a["note"]).rstrip(b"\0") for a in acts] == [
        b"first",
        b"second",
        b"third",
        b"fourth",
    ]
    assert [int(a["seq"]) for a in acts] == [1, 2, 3, 4]
    assert all(bytes(a["who"]).rstrip(b"\0") for a in acts)  # who did it
    halt, resume = acts[0], acts[1]
    assert int(halt["new_state"]) != int(resume["new_state"])
    assert int(resume["old_state"]) == int(halt["new_state"])
    # the log: the risk stage saw each change at its level (bot4/stages/state_log.py), and
    # persistence named who made it once journalled
    lines = log.splitlines()

    def seen(stage: str, level: str, text: str) -> bool:
        # logged by the stage's process, or its group's (``hot`` runs risk by default)
        procs = (f"{stage}[", "hot[")
        return any(
            any(p in ln for p in procs) and f"] {level} " in ln and text in ln for ln in lines
        )

    assert seen("risk", "WARNING", "trading instrument 1 (AAPL): active -> halted by operator")
    assert seen("risk", "INFO", "trading instrument 1 (AAPL): halted -> active by operator")
    assert seen("risk", "WARNING", "breaker db: closed -> open (operator trip: open until reset)")
    assert seen("risk", "INFO", "breaker db: open -> closed")
    who = bytes(acts[0]["who"]).rstrip(b"\0").decode()
    for text in ("halt instrument 1 (first)", "resume instrument 1 (second)",
                 "breaker trip breaker 1 (third)", "breaker reset breaker 1 (fourth)"):  # fmt: skip
        assert seen("persistence", "WARNING", f"operator {who}: {text}"), text
    assert not instance_segments(instance)
