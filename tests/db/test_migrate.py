"""Migrations: applied once, in order, each with its record; concurrent migrators apply each
migration exactly once; a changed or unknown applied migration is refused."""

from __future__ import annotations

import threading

import psycopg
import pytest

from bot4.db.migrate import (
    Migration,
    MigrationError,
    applied_migrations,
    load_migrations,
    migrate,
    pending_migrations,
)
from tests.db.conftest import query, scalar

pytestmark = pytest.mark.timeout(60)

EVENT_TABLES = {
    "instruments", "load_positions", "orders", "order_actions", "exec_reports",
    "risk_decisions", "operator_actions", "positions", "model_events", "rejected_rows",
    "exec_conflicts", "bot4_txn_decisions",
}  # fmt: skip


def tables(dsn: str) -> set[str]:
    rows = query(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r[0] for r in rows}


def test_shipped_migrations_are_versioned_from_one():
    for scope in ("events", "ledger"):
        ms = load_migrations(scope)
        assert [m.version for m in ms] == list(range(1, len(ms) + 1))
        assert all(m.sql.strip() for m in ms)


def test_migrations_apply_once_and_record_themselves(new_db):
    dsn = new_db()
    done = migrate(dsn, ("events",))
    assert [str(m) for m in done] == [
        "events 0001_events",
        "events 0002_exec_conflicts",
        "events 0003_stp_reports",
        "events 0004_model_registry",
        "events 0005_sweep_runs",
        "events 0006_execution_identity",
        "events 0007_model_attribution",
        "events 0008_positions_cas",
        "events 0009_txn_decisions",
        "events 0010_trade_busts",
    ]
    assert EVENT_TABLES | {"schema_migrations"} <= tables(dsn)
    assert migrate(dsn, ("events",)) == []  # idempotent
    rows = [(a.scope, a.version, a.name) for a in applied_migrations(psycopg.connect(dsn))]
    assert rows == [
        ("events", 1, "events"),
        ("events", 2, "exec_conflicts"),
        ("events", 3, "stp_reports"),
        ("events", 4, "model_registry"),
        ("events", 5, "sweep_runs"),
        ("events", 6, "execution_identity"),
        ("events", 7, "model_attribution"),
        ("events", 8, "positions_cas"),
        ("events", 9, "txn_decisions"),
        ("events", 10, "trade_busts"),
    ]
    # the ledger scope can join the same database (ledger without two-phase commit)
    assert [str(m) for m in migrate(dsn, ("ledger",))] == [
        "ledger 0001_ledger",
        "ledger 0002_ledger_conflicts",
        "ledger 0003_execution_identity",
    ]
    assert "ledger_entries" in tables(dsn)


def test_concurrent_migrators_apply_each_migration_exactly_once(new_db):
    dsn = new_db()
    results: list[list[Migration]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            barrier.wait()
            results.append(migrate(dsn, ("events", "ledger")))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    applied = sorted(str(m) for r in results for m in r)
    assert applied == [  # once, by one of them
        "events 0001_events",
        "events 0002_exec_conflicts",
        "events 0003_stp_reports",
        "events 0004_model_registry",
        "events 0005_sweep_runs",
        "events 0006_execution_identity",
        "events 0007_model_attribution",
        "events 0008_positions_cas",
        "events 0009_txn_decisions",
        "events 0010_trade_busts",
        "ledger 0001_ledger",
        "ledger 0002_ledger_conflicts",
        "ledger 0003_execution_identity",
    ]
    assert scalar(dsn, "SELECT count(*) FROM schema_migrations") == 13


def test_changed_applied_migration_is_refused(new_db):
    dsn = new_db()
    migrate(dsn, ("events",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(MigrationError, match="must not change"):
            pending_migrations(conn, ("events",))
    with pytest.raises(MigrationError):
        migrate(dsn, ("events",))


def test_database_newer_than_the_code_is_refused(new_db):
    dsn = new_db()
    migrate(dsn, ("events",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (scope, version, name, checksum) "
            "VALUES ('events', 99, 'future', 'x')"
        )
    with pytest.raises(MigrationError, match="newer than the code"):
        migrate(dsn, ("events",))


def test_a_failing_migration_leaves_nothing_applied(new_db, monkeypatch):
    dsn = new_db()
    bad = Migration("events", 1, "broken", "CREATE TABLE half (x int); SELECT 1/0;")
    monkeypatch.setattr("bot4.db.migrate.load_migrations", lambda scope: [bad])
    with pytest.raises(MigrationError, match="0001_broken"):
        migrate(dsn, ("events",))
    assert "half" not in tables(dsn)
    assert scalar(dsn, "SELECT count(*) FROM schema_migrations") == 0
