"""Journal against database: a clean load reconciles; executions merged under one id, a fill
gone from the database, positions apart from their executions and an incomplete journal
are each reported as differences; checks are incremental."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from bot4.db.loader import Loader
from bot4.db.reconcile import Reconciler, reconcile
from bot4.journal import JournalWriter
from bot4.records import SIDE_BUY
from tests.db.conftest import make_flow, query, write_flow

pytestmark = pytest.mark.timeout(120)

SEED = 31


def _net(fills: np.ndarray) -> dict[int, int]:
    net: dict[int, int] = {}
    for r in fills:
        q = int(r["last_qty"]) * (1 if int(r["side"]) == SIDE_BUY else -1)
        net[int(r["instrument"])] = net.get(int(r["instrument"]), 0) + q
    return {k: v for k, v in sorted(net.items()) if v}


def _load(jdir, ev, lg=None, jid="r"):
    with Loader(jdir, ev, lg, journal_id=jid) as loader:
        loader.load_available()


def test_a_clean_load_reconciles_with_journal_and_ledger(tmp_path, dbs):
    ev, lg = dbs
    flow = make_flow(80, seed=SEED)
    write_flow(tmp_path / "j", flow)
    _load(tmp_path / "j", ev, lg)
    rec = reconcile(tmp_path / "j", ev, lg, journal_id="r")
    assert rec.ok, rec.differences
    assert rec.journal["executions"] == rec.database["executions"] == len(flow.execs)
    assert rec.journal["fills"] == len(flow.fills)
    assert rec.journal["net"] == rec.database["net"] == _net(flow.fills)
    assert rec.database["ledger"] == {"fills": len(flow.fills), "unbalanced": 0, "conflicts": 0}
    assert rec.summary().endswith("OK")


def test_two_executions_under_one_id_fail_the_reconciliation(tmp_path, new_db):
    """The issue-12 failure: a restarted venue reused ids; the database keeps one execution
    per id and agrees with its own positions, the journal holds both."""
    ev = new_db()
    flow = make_flow(40, seed=SEED + 1)
    jdir = tmp_path / "j"
    write_flow(jdir, flow)
    reused = flow.fills[:5].copy()
    reused["client_order_id"] += np.uint64(77)
    reused["side"] = -reused["side"]
    with JournalWriter(jdir, fsync="none") as w:
        w.append(reused)
    _load(jdir, ev)
    rec = reconcile(jdir, ev, journal_id="r")
    assert not rec.ok
    text = "; ".join(rec.differences)
    assert "5 execution ids carry two or more executions in the journal" in text
    assert f"executions: journal {len(flow.execs) + 5:,}, database {len(flow.execs):,}" in text
    assert "5 kept in exec_conflicts" in text
    assert "net position" in text
    assert rec.journal["net"] == _net(np.concatenate([flow.fills, reused]))
    assert rec.database["net"] == _net(flow.fills)
    assert "DIFFER" in rec.summary()


def test_a_fill_missing_from_the_database_or_positions_apart_are_differences(tmp_path, new_db):
    ev = new_db()
    flow = make_flow(30, seed=SEED + 2)
    write_flow(tmp_path / "j", flow)
    _load(tmp_path / "j", ev)
    gone = int(flow.fills[0]["exec_id"])
    with psycopg.connect(ev, autocommit=True) as conn:
        conn.execute("DELETE FROM exec_reports WHERE exec_id = %s", (gone,))
        conn.execute("UPDATE positions SET qty = qty + 1 WHERE instrument = 2")
    rec = reconcile(tmp_path / "j", ev, journal_id="r")
    text = "; ".join(rec.differences)
    assert f"fills: journal {len(flow.fills)}, database {len(flow.fills) - 1}" in text
    assert f"instrument {int(flow.fills[0]['instrument'])} net position" in text
    assert "positions row strategy" in text and "instrument 2" in text
    assert "ledger: legs for" in text  # the ledger still has the vanished fill's legs


def test_checks_read_the_journal_incrementally_and_notice_missing_frames(tmp_path, new_db):
    ev = new_db()
    jdir = tmp_path / "j"
    a, b = make_flow(20, seed=SEED + 3), make_flow(20, start=20, seed=SEED + 3)
    write_flow(jdir, a)
    _load(jdir, ev)
    r = Reconciler(jdir, "r")
    try:
        with psycopg.connect(ev, autocommit=True) as conn:
            first = r.check(conn)
            assert first.ok and first.journal["executions"] == len(a.execs)
            write_flow(jdir, b)
            assert r.check(conn).journal["executions"] == len(a.execs)  # b not loaded yet
            _load(jdir, ev)
            second = r.check(conn)
            assert second.ok and second.journal["executions"] == len(a.execs) + len(b.execs)
            assert second.frames > first.frames
    finally:
        r.close()
    # the database says it loaded more frames than the journal has
    with psycopg.connect(ev, autocommit=True) as conn:
        conn.execute("UPDATE load_positions SET next_frame = next_frame + 3")
    rec = reconcile(jdir, ev, journal_id="r")
    assert any("frames are missing from the journal" in d for d in rec.differences)
    assert query(ev, "SELECT count(*) FROM exec_conflicts")[0][0] == 0
