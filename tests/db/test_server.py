"""The embedded server and DSN resolution: both databases, two-phase commit enabled, start /
stop / adopt, and failures that name the data directory and the log."""

from __future__ import annotations

import pytest

from bot4.db.server import EVENTS_DB, LEDGER_DB, EmbeddedPostgres, ServerStartError, resolve_dsns
from bot4.records import Code
from tests.db.conftest import scalar

pytestmark = pytest.mark.timeout(60)


def test_embedded_server_has_both_databases_and_two_phase_commit(embedded_pg):
    assert embedded_pg.running
    for db in (EVENTS_DB, LEDGER_DB):
        dsn = embedded_pg.dsn(db)
        assert scalar(dsn, "SELECT current_database()") == db
        assert int(scalar(dsn, "SHOW max_prepared_transactions")) >= 64
        assert scalar(dsn, "SHOW listen_addresses") == ""  # Unix socket only


def test_stopped_server_keeps_prepared_transactions_and_starts_again(embedded_pg, new_db):
    dsn = new_db()
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("PREPARE TRANSACTION 'bot4:test:stop'")
    embedded_pg.stop()
    assert not embedded_pg.running
    embedded_pg.stop()  # idempotent
    embedded_pg.start()
    assert embedded_pg.running
    assert scalar(dsn, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'bot4:test:stop'") == 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("COMMIT PREPARED 'bot4:test:stop'")
    assert scalar(dsn, "SELECT count(*) FROM t") == 1


def test_second_object_adopts_the_running_server(embedded_pg):
    other = EmbeddedPostgres(embedded_pg.data_dir)
    other.start()
    assert not other.started  # adopted, not restarted
    assert other.pid == embedded_pg.pid
    assert other.dsn(EVENTS_DB) == embedded_pg.dsn(EVENTS_DB)


def test_start_failure_names_data_dir_and_log(pg_tmp):
    data = pg_tmp / "broken"
    data.mkdir()
    (data / "PG_VERSION").write_text("18\n")  # looks initialised, is not a cluster
    server = EmbeddedPostgres(data, start_timeout=10)
    with pytest.raises(ServerStartError) as err:
        server.start()
    assert err.value.code == Code.DB_UNAVAILABLE
    assert str(data) in str(err.value)
    assert "server.log" in str(err.value)


def test_dsn_resolution_prefers_arguments_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BOT4_DSN", "dbname=from_env")
    monkeypatch.setenv("BOT4_LEDGER_DSN", "dbname=ledger_env")
    assert resolve_dsns("dbname=a", "dbname=b") == ("dbname=a", "dbname=b", None)
    assert resolve_dsns() == ("dbname=from_env", "dbname=ledger_env", None)
    monkeypatch.delenv("BOT4_LEDGER_DSN")
    assert resolve_dsns() == ("dbname=from_env", None, None)  # ledger in the events db
    monkeypatch.delenv("BOT4_DSN")
    dsn, ledger, server = resolve_dsns(data_dir=tmp_path / "pg", start=False)
    assert server is not None and not server.running  # described, not started
    assert server.data_dir == (tmp_path / "pg").absolute()
    assert f"dbname={EVENTS_DB}" in dsn and f"dbname={LEDGER_DB}" in ledger


def test_default_data_dir_follows_bot4_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BOT4_DATA_DIR", str(tmp_path / "data"))
    assert EmbeddedPostgres().data_dir == (tmp_path / "data" / "pg").absolute()
