"""SIGKILL in the middle of a promotion or a rollback: afterwards the slot's assignment is
exactly the old one or the new one, and (after recovery) the events log says which."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from bot4.models.artifact import linear_model
from bot4.models.registry import KILL_ENV, Registry, promote, set_challenger
from bot4.stages import signals as S

pytestmark = pytest.mark.timeout(120)

#: the kill points (bot4.models.registry): before the rename, after it, after the event is
#: logged but before the generation word is stored
POINTS = ("before_commit", "after_commit", "after_event")


def setup_registry(root) -> Registry:
    reg = Registry(root)
    for k in (1.0, 2.0, 3.0):
        reg.register(
            linear_model(S.DEFAULT_MODEL * k, S.FEATURES), name=f"x{k:g}", features=S.FEATURES
        )
    promote(reg, "live", 1)
    set_challenger(reg, "live", 2, "canary", pct=10.0)
    return reg


def run_killed(root, point, *args):
    env = {**os.environ, KILL_ENV: point}
    cmd = [sys.executable, "-m", "bot4.models.cli", *args, "--registry", str(root),
           "--slot", "live", "--no-db"]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, timeout=60, text=True)
    return p


@pytest.mark.parametrize(
    "op, point",
    [("promote", "before_commit"), ("promote", "after_commit"), ("rollback", "after_event")],
)
def test_process_killed_mid_change_leaves_old_or_new_assignment(tmp_path, op, point):
    reg = setup_registry(tmp_path / "models")
    old = reg.assignment("live")
    n_events = len(reg.events())
    args = ["promote", "3"] if op == "promote" else ["rollback"]
    p = run_killed(reg.root, point, *args)
    assert p.returncode == -signal.SIGKILL, p.stderr
    a = reg.assignment("live")
    new_expected = {"promote": (3, 0, "champion"), "rollback": (1, 0, "champion")}[op]
    if point == "before_commit":
        assert a == old  # nothing committed: the old assignment, whole
    else:
        assert (a.champion, a.challenger, a.mode) == new_expected
        assert a.generation == old.generation + 1
    # no temporary file left where a reader looks; the slot file parses whole
    json.loads(reg.slot_path("live").read_text())
    reg.recover()
    evs = reg.events()
    ids = [e["id"] for e in evs]
    assert len(ids) == len(set(ids))  # each event once
    last = [e for e in evs if e["slot"] == "live"][-1]
    assert last["generation"] == a.generation
    if point == "before_commit":
        assert len(evs) == n_events
    else:
        assert last["event"] == ("champion" if op == "promote" else "rolled_back")
        assert last["id"] == a.event["id"]
    gen = np.fromfile(reg.gen_path("live"), np.uint64, 1)[0]
    assert gen == a.generation  # the word a running stage polls caught up too
