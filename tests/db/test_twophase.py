"""Two-phase commit: a loader killed at each named point of the protocol (the ledger branch
prepared; the events branch committed with its decision row; both committed) or inside
pruning; the next loader resolves what is in doubt (commit if the events database holds the
decision, else record an abort and roll back) and both databases agree: every fill is in
both or in neither, then everything lands once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bot4.db.loader import Loader
from bot4.db.twophase import Coordinator, parse_gid
from tests.db.conftest import (
    exec_ids,
    ledger_check,
    ledger_exec_ids,
    load_counts,
    make_flow,
    query,
    write_flow,
)

pytestmark = pytest.mark.timeout(90)

ALLOWED = {
    # crash point -> ({(in doubt on events, in doubt on ledger)}, what recovery does). Only
    # the ledger branch is ever prepared; the events branch commits in one phase with its
    # decision row (events migration 0009), the commit point.
    "prepared-ledger": ({(0, 1)}, "rolled_back"),
    "decided": ({(0, 1)}, "committed"),
}


def in_doubt(dsn: str) -> list[str]:
    return [
        r[0]
        for r in query(dsn, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
    ]


def run_loader(
    jdir, ev, lg, journal_id, crash_at=None, batch_records=40, small_batch=128, procs=None,
    timeout=60,
):  # fmt: skip
    env = dict(os.environ)
    env.pop("BOT4_DB_CRASH_AT", None)
    if crash_at:
        env["BOT4_DB_CRASH_AT"] = crash_at
    cmd = [
        sys.executable, "-m", "bot4.db.cli", "load", str(jdir), "--dsn", ev, "--ledger-dsn", lg,
        "--journal-id", journal_id, "--batch-records", str(batch_records),
        "--small-batch", str(small_batch),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if procs is not None:
        procs.add(proc)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


def assert_databases_agree(ev: str, lg: str) -> None:
    """Every fill in the events database has balanced ledger legs, and nothing else does."""
    assert sorted(exec_ids(ev)) == sorted(ledger_exec_ids(lg))
    assert ledger_check(lg)["unbalanced"] == 0


@pytest.mark.parametrize("small_batch", [128, 0], ids=["pipelined", "copy"])
@pytest.mark.parametrize("point", list(ALLOWED))
def test_crash_between_prepare_and_commit_prepared_is_resolved_on_restart(
    point, small_batch, tmp_path, dbs, procs
):
    ev, lg = dbs
    jdir = tmp_path / "j"
    flow = make_flow(60, seed=21)
    write_flow(jdir, flow, frame_size=8)
    code, out = run_loader(
        jdir, ev, lg, "tp", crash_at=f"{point}:2", small_batch=small_batch, procs=procs
    )
    assert code == -signal.SIGKILL, out  # killed in the second batch's two-phase commit
    allowed, action = ALLOWED[point]
    doubt_e, doubt_l = in_doubt(ev), in_doubt(lg)
    assert (len(doubt_e), len(doubt_l)) in allowed
    gids = doubt_e + doubt_l
    assert len({parse_gid(g).first_frame for g in gids}) == (1 if gids else 0)
    with Loader(jdir, ev, lg, journal_id="tp", batch_records=40) as loader:
        done = loader.recover()
        assert sorted(done[action]) == sorted(gids)
        assert not done["committed" if action == "rolled_back" else "rolled_back"]
        assert in_doubt(ev) == [] and in_doubt(lg) == []
        assert_databases_agree(ev, lg)  # both agree after recovery, before any reload
        batches_in = 2 if action == "committed" else 1
        assert len(exec_ids(ev, where="true")) > 0
        assert query(ev, "SELECT batches FROM load_positions")[0][0] == batches_in
        loader.load_available()
    assert_databases_agree(ev, lg)
    counts = load_counts(ev)
    assert counts["exec_reports"] == len(flow.execs) and counts["orders"] == 60
    assert sorted(exec_ids(ev)) == sorted(map(int, flow.fills["exec_id"]))


def test_next_load_resolves_in_doubt_transactions_before_loading(tmp_path, dbs, procs):
    """No explicit recover(): load_available resolves first (an in-doubt transaction holds
    the load position's row lock, loading past it would block), then loads the rest."""
    ev, lg = dbs
    jdir = tmp_path / "j"
    flow = make_flow(40, seed=22)
    write_flow(jdir, flow, frame_size=8)
    code, _ = run_loader(jdir, ev, lg, "tp2", crash_at="decided:1", procs=procs)
    assert code == -signal.SIGKILL
    assert len(in_doubt(ev)) == 0 and len(in_doubt(lg)) == 1
    with Loader(jdir, ev, lg, journal_id="tp2", batch_records=40) as loader:
        loader.load_available()
        assert loader.stats.recovered_commits == 1
    assert in_doubt(ev) == [] and in_doubt(lg) == []
    assert_databases_agree(ev, lg)
    assert sorted(exec_ids(ev)) == sorted(map(int, flow.fills["exec_id"]))


def test_coordinator_decides_durably_and_leaves_other_journals_alone(tmp_path, dbs):
    ev, _ = dbs
    import psycopg

    coord = Coordinator(tmp_path / "c", "jx")
    decided, undecided = coord.new_token(), coord.new_token()
    coord.decide_commit(decided, 10, 20, 3)
    gid = coord.gid(decided, 10, 20, "e")
    assert parse_gid(gid).token == decided and parse_gid(gid).end_frame == 20
    assert parse_gid("someone:else") is None
    coord.close()
    coord = Coordinator(tmp_path / "c", "jx")  # reopened: the decision is on disk
    assert coord.decisions == 1
    assert coord.committed(decided) and not coord.committed(undecided)
    with psycopg.connect(ev, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        for token, value in ((decided, 1), (undecided, 2)):
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (%s)", (value,))
            conn.execute(f"PREPARE TRANSACTION '{coord.gid(token, 10, 20, 'e')}'")
        other = Coordinator(tmp_path / "other", "jy")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (3)")
        conn.execute(f"PREPARE TRANSACTION '{other.gid(other.new_token(), 0, 1, 'e')}'")
        res = coord.resolve(conn)
        assert len(res.committed) == 1 and len(res.rolled_back) == 1
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
        assert len(other.in_doubt(conn)) == 1  # another journal's: not ours to decide
        other.resolve(conn)
        other.close()
    coord.close()


# --- pruning the decision log ---------------------------------------------------------------

PRUNE_SCRIPT = """
import os, signal, sys
from bot4.db.loader import Loader
jdir, ev, lg, point, small = sys.argv[1:6]
def hook(p):
    if p == point and loader.stats.pruned_decisions:  # only after the log was pruned
        os.kill(os.getpid(), signal.SIGKILL)
loader = Loader(jdir, ev, lg, journal_id="pr", batch_records=40, small_batch=int(small),
                prune_after=1, hook=hook)
loader.load_available(max_batches=2)  # two two-phase batches, then the log is dropped
assert loader.stats.twophase == 2 and loader.stats.pruned_decisions == 2, loader.stats
loader.load_available()  # killed at `point` in its first batch (or while pruning again)
sys.exit(3)
"""

PRUNE_POINTS = [*ALLOWED, "committed-ledger", "pruning"]


@pytest.mark.parametrize("small_batch", [128, 0], ids=["pipelined", "copy"])
@pytest.mark.parametrize("point", PRUNE_POINTS)
def test_pruned_decision_log_keeps_every_decision_recovery_needs(
    point, small_batch, tmp_path, dbs, procs
):
    """The log is pruned after every call (prune_after=1); the loader is then SIGKILLed at
    each named two-phase point of the next batch, or inside the next pruning (segments
    gone, no fresh log yet). Recovery still finds the decision of a decided transaction,
    both databases agree, and every event lands once."""
    ev, lg = dbs
    jdir = tmp_path / "j"
    flow = make_flow(60, seed=23)
    write_flow(jdir, flow, frame_size=8)
    proc = procs.add(
        subprocess.Popen(
            [sys.executable, "-c", PRUNE_SCRIPT, str(jdir), ev, lg, point, str(small_batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out.decode(errors="replace")
    doubt_e, doubt_l = in_doubt(ev), in_doubt(lg)
    if point in ALLOWED:
        allowed, action = ALLOWED[point]
        assert (len(doubt_e), len(doubt_l)) in allowed
    else:  # both committed (and, at "pruning", the log already gone): nothing in doubt
        assert (doubt_e, doubt_l) == ([], [])
        action = "committed"
    with Loader(jdir, ev, lg, journal_id="pr", batch_records=40, prune_after=1) as loader:
        done = loader.recover()
        assert sorted(done[action]) == sorted(doubt_e + doubt_l)
        assert in_doubt(ev) == [] and in_doubt(lg) == []
        assert_databases_agree(ev, lg)
        loader.load_available()
        # its own decisions, and the dead process's last one when it was still in the log
        two = loader.stats.twophase
        assert loader.stats.pruned_decisions in (two, two + 1)
        assert two > 0 or point == "pruning"  # killed pruning after the last batch
        assert loader.stats.recovered_commits == len(done["committed"])
    assert_databases_agree(ev, lg)
    counts = load_counts(ev)
    assert counts["exec_reports"] == len(flow.execs) and counts["orders"] == 60
    assert sorted(exec_ids(ev)) == sorted(map(int, flow.fills["exec_id"]))


def test_a_decision_whose_commit_did_not_finish_is_not_pruned(tmp_path, dbs):
    """A batch fails after its decision (the events branch committed with its decision
    row, the ledger branch still prepared): the call raises and the decision row stays;
    the next call commits the ledger branch by recovery, and only then, with every decided
    transaction committed on both databases, deletes the journal's decision rows."""
    ev, lg = dbs
    jdir = tmp_path / "j"
    flow = make_flow(40, seed=24)
    write_flow(jdir, flow, frame_size=8)

    class Boom(Exception):
        pass

    def hook(point: str) -> None:
        if point == "decided" and fail:
            fail.pop()
            raise Boom(point)

    fail = [True]
    decisions = "SELECT token, committed FROM bot4_txn_decisions WHERE journal_id = 'np'"
    with Loader(jdir, ev, lg, journal_id="np", batch_records=40, prune_after=1, hook=hook) as ld:
        with pytest.raises(Boom):
            ld.load_available()
        assert ld.stats.pruned_decisions == 0
        assert len(in_doubt(ev)) == 0 and len(in_doubt(lg)) == 1
        token = parse_gid(in_doubt(lg)[0]).token
        assert query(ev, decisions) == [(token, True)]  # durable, in the events database
        ld.load_available()
        assert ld.stats.recovered_commits == 1
        assert ld.stats.pruned_decisions == ld.stats.twophase + 1  # the recovered one too
    assert query(ev, decisions) == []
    assert in_doubt(ev) == [] and in_doubt(lg) == []
    assert_databases_agree(ev, lg)
    assert sorted(exec_ids(ev)) == sorted(map(int, flow.fills["exec_id"]))


def test_recovery_records_an_abort_so_a_late_decision_cannot_commit(tmp_path, dbs):
    """Presumed abort with a record: a ledger branch prepared and no decision row is rolled
    back, and recovery leaves a committed = false row under its token first, so an events
    COMMIT still in flight (its connection lost to the loader) cannot decide it after."""
    ev, lg = dbs
    jdir = tmp_path / "j"
    write_flow(jdir, make_flow(20, seed=25), frame_size=8)
    with Loader(jdir, ev, lg, journal_id="ab") as loader:
        loader.load_available(max_batches=0)  # schema in place
    import psycopg

    from bot4.db.twophase import DECIDE_SQL

    coord = Coordinator(tmp_path / "c", "ab")
    token = coord.new_token()
    with psycopg.connect(lg, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute(f"PREPARE TRANSACTION '{coord.gid(token, 0, 1, 'l')}'")
    coord.close()
    with Loader(jdir, ev, lg, journal_id="ab", coordinator_dir=tmp_path / "c") as loader:
        done = loader.recover()
    assert len(done["rolled_back"]) == 1 and done["committed"] == []
    assert query(ev, f"SELECT committed FROM bot4_txn_decisions WHERE token = {token}") == [
        (False,)
    ]
    with (
        psycopg.connect(ev, autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        conn.execute(DECIDE_SQL, (token, "ab", 0, 1, 1, 0))  # the late decision is refused
