"""``bot4 db`` actions end to end: migrate, load, status, recover, server."""

from __future__ import annotations

import json

import psycopg
import pytest

from bot4.db import cli
from tests.db.conftest import load_counts, make_flow, write_flow

pytestmark = pytest.mark.timeout(60)


def test_migrate_load_status(tmp_path, dbs, capsys):
    ev, lg = dbs
    args = ["--dsn", ev, "--ledger-dsn", lg]
    assert cli.main(["migrate", *args]) == 0
    assert (
        "events: applied 10: events 0001_events, events 0002_exec_conflicts, "
        "events 0003_stp_reports, events 0004_model_registry, events 0005_sweep_runs, "
        "events 0006_execution_identity, events 0007_model_attribution, "
        "events 0008_positions_cas, events 0009_txn_decisions, events 0010_trade_busts"
    ) in (capsys.readouterr().out)
    assert cli.main(["migrate", *args]) == 0
    assert "up to date" in capsys.readouterr().out
    flow = make_flow(30)
    write_flow(tmp_path / "j", flow)
    assert cli.main(["load", str(tmp_path / "j"), *args, "--journal-id", "cli"]) == 0
    assert f"{len(flow):,} records" in capsys.readouterr().out
    assert load_counts(ev)["orders"] == 30
    assert cli.main(["status", *args]) == 0
    out = capsys.readouterr().out
    assert "journal cli: next frame" in out and "orders 30" in out
    assert f"ledger: {len(flow.fills)} fills, 0 unbalanced" in out
    assert cli.main(["status", *args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["events"]["rows"]["risk_decisions"] == 30
    assert doc["events"]["load_positions"][0]["journal"] == "cli"


def test_status_fails_on_in_doubt_transactions_and_recover_clears_them(tmp_path, dbs, capsys):
    ev, lg = dbs
    args = ["--dsn", ev, "--ledger-dsn", lg]
    assert cli.main(["migrate", *args]) == 0
    with psycopg.connect(ev, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO model_events (model, version, event, ts_ns) VALUES ('m', 1, 'registered', 1)"
        )
        conn.execute("PREPARE TRANSACTION 'bot4:j:0-1:00000000000000ff:e'")
    capsys.readouterr()
    assert cli.main(["status", *args]) == 1
    assert "IN DOUBT (1): bot4:j:0-1:00000000000000ff:e" in capsys.readouterr().out
    (tmp_path / "j").mkdir()
    assert cli.main(["recover", str(tmp_path / "j"), *args, "--journal-id", "j"]) == 0
    assert "rolled back 1" in capsys.readouterr().out  # never decided: presumed abort
    assert cli.main(["status", *args]) == 0


def test_read_only_actions_do_not_start_the_embedded_server(tmp_path, capsys):
    data = tmp_path / "pg"
    assert cli.main(["status", "--data-dir", str(data)]) == 1
    assert "not running" in capsys.readouterr().err
    assert not data.exists() or not (data / "postmaster.pid").exists()
    assert cli.main(["server", "status", "--data-dir", str(data)]) == 0
    assert "stopped" in capsys.readouterr().out


def test_bot4_db_parser_registers_on_a_subparsers_object():
    import argparse

    p = argparse.ArgumentParser(prog="bot4")
    sub = p.add_subparsers(dest="cmd", required=True)
    cli.add_parser(sub)
    args = p.parse_args(["db", "locks", "--dsn", "dbname=x", "--all"])
    assert args.fn is cli.cmd_db and args.db_action == "locks" and args.all


def test_load_and_status_reconcile_and_fail_loudly_on_a_reused_exec_id(tmp_path, dbs, capsys):
    import numpy as np

    from bot4.journal import JournalWriter

    ev, lg = dbs
    args = ["--dsn", ev, "--ledger-dsn", lg]
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_flow(good, make_flow(20, seed=4))
    assert cli.main(["load", str(good), *args]) == 0
    assert "reconciliation of journal good" in capsys.readouterr().out
    assert cli.main(["status", *args, "--journal", str(good)]) == 0
    assert "net positions equal: OK" in capsys.readouterr().out
    # another journal whose venue reused ids: two executions under one id
    flow = make_flow(20, start=100, seed=5)
    reused = flow.fills[:3].copy()
    reused["last_qty"] += 5
    write_flow(bad, flow)
    with JournalWriter(bad, fsync="none") as w:
        w.append(reused)
    assert cli.main(["load", str(bad), *args]) == cli.LOAD_EXIT_DIFFER
    out, err = capsys.readouterr()
    assert "3 executions and 0 ledger legs reuse an id" in err and "DIFFER" in out
    assert cli.main(["status", *args, "--journal", str(good), "--journal", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "IDENTITY CONFLICTS: 3 rows" in out and out.count("DIFFER") == 1
    assert cli.main(["status", *args, "--journal", str(bad), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["events"]["rows"]["exec_conflicts"] == 3
    (rec,) = doc["reconciliation"]
    assert not rec["ok"] and rec["journal"]["executions"] == len(flow.execs) + 3
    assert np.int64(rec["database"]["executions"]) == len(flow.execs)
