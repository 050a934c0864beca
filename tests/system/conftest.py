"""System tests: every pipeline a test starts loads into fresh databases of the session's
PostgreSQL (``BOT4_DSN`` / ``BOT4_LEDGER_DSN`` point there), so `bot4 run` never starts an
embedded server of its own per test, and no test sees another's rows."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _pipeline_databases(dbs, monkeypatch) -> tuple[str, str]:
    monkeypatch.setenv("BOT4_DSN", dbs[0])
    monkeypatch.setenv("BOT4_LEDGER_DSN", dbs[1])
    return dbs
