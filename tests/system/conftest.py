"""System tests: every pipeline a test starts loads into fresh databases of the session's
PostgreSQL (``BOT4_DSN`` / ``BOT4_LEDGER_DSN`` point there), so `bot4 run` never starts an
embedded server of its own per test, and no test sees another's rows."""

from __future__ import annotations

import pytest

from bot4.shm.segment import instance_segments
from tests.system.pipeline_util import SinkLog


@pytest.fixture(autouse=True)
def _pipeline_databases(dbs, monkeypatch) -> tuple[str, str]:
    monkeypatch.setenv("BOT4_DSN", dbs[0])
    monkeypatch.setenv("BOT4_LEDGER_DSN", dbs[1])
    return dbs


@pytest.fixture
def sink(instance):
    """``sink(words)``: a sink log (``SinkLog``) closed, and checked gone, after the test."""
    logs = []

    def make(words):
        s = SinkLog(instance, words)
        logs.append(s)
        return s

    yield make
    for s in logs:
        s.close()
    assert not instance_segments(instance + "x")
