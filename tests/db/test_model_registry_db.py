"""The model registry's PostgreSQL mirror: models and lifecycle events land once (also
after a SIGKILL between the file commit and the database), registered models are
immutable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psycopg
import pytest

from bot4.db.models import PgMirror, fetch_events
from bot4.models.artifact import linear_model
from bot4.models.registry import KILL_ENV, Registry, promote, set_challenger
from bot4.stages import signals as S
from tests.db.conftest import scalar

pytestmark = pytest.mark.timeout(120)


def test_models_and_events_are_mirrored_once(tmp_path, new_db):
    dsn = new_db()
    reg = Registry(tmp_path / "models", PgMirror(dsn))
    for k in (1.0, 2.0):
        reg.register(
            linear_model(S.DEFAULT_MODEL * k, S.FEATURES), name=f"x{k:g}", features=S.FEATURES
        )
    promote(reg, "s", 1)
    set_challenger(reg, "s", 2, "ab", pct=20.0, why="try it")
    assert reg.mirror_error is None
    reg.recover()  # sends everything again: nothing new
    reg.recover()
    assert scalar(dsn, "SELECT count(*) FROM model_registry") == 2
    evs = fetch_events(dsn)
    assert [(e["model"], e["event"]) for e in evs] == [
        (1, "registered"), (2, "registered"), (1, "champion"), (2, "ab")]  # fmt: skip
    assert [e["id"].replace("-", "") for e in evs] == [e["id"] for e in reg.events()]
    assert evs[-1]["why"] == "try it" and evs[-1]["details"]["pct"] == 20.0
    with pytest.raises(psycopg.DatabaseError, match="immutable"), psycopg.connect(dsn) as c:
        c.execute("UPDATE model_registry SET name = 'other' WHERE model_id = 1")


def test_sigkill_after_the_file_commit_lands_the_event_once_in_the_database(tmp_path, new_db):
    dsn = new_db()
    reg = Registry(tmp_path / "models", PgMirror(dsn))
    for k in (1.0, 2.0):
        reg.register(
            linear_model(S.DEFAULT_MODEL * k, S.FEATURES), name=f"x{k:g}", features=S.FEATURES
        )
    promote(reg, "s", 1)
    cmd = [sys.executable, "-m", "bot4.models.cli", "promote", "2", "--registry", str(reg.root),
           "--slot", "s", "--dsn", dsn]  # fmt: skip
    p = subprocess.run(
        cmd, env={**os.environ, KILL_ENV: "after_commit"}, capture_output=True, timeout=60
    )
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert reg.assignment("s").champion == 2  # committed in the files
    before = [(e["model"], e["event"]) for e in fetch_events(dsn)]
    assert before[-1] == (1, "champion")  # model 2's promotion is not in the database yet
    reg.recover()  # any later command does this
    evs = fetch_events(dsn)
    assert [(e["model"], e["event"]) for e in evs][-1] == (2, "champion")
    assert sum(e["event"] == "champion" for e in evs) == 2  # model 1's and model 2's, once each
    assert evs[-1]["generation"] == reg.assignment("s").generation
