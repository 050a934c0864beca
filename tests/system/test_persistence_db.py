"""The persistence stage and PostgreSQL under the default pipeline, end to end.

* the persistence stage SIGKILLed 12 times at random moments while trading goes on (mid
  journal append, mid load transaction, mid two-phase commit — wherever it is): at the
  end every event of the journal is in the events database exactly once and every fill
  has balanced ledger legs in the ledger database (the loader killed at each named point
  of its commit protocol is tests/db/test_crash.py's);
* the database stopped for several seconds mid-run: the "db" breaker opens, trading goes
  on at its pace (persistence's input rings never filled: no full-waits, no rejections),
  the breaker closes once the database is back, and the backlog lands exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from importlib import resources

import pytest

from bot4.shm.breakers import Breakers
from tests.conftest import create_database, drop_database
from tests.seeds import seeded_rng
from tests.system.db_check import assert_exactly_once
from tests.system.pipeline_util import BOT4, LoggedPopen, stage_block, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

PERSISTENCE = 5  # stage index in the default topology
EVENT_RINGS = ("decisions", "order_events", "exec_events")


def start_run(instance, tmp_path, *extra):
    p = LoggedPopen(
        [*BOT4, "run", "--instance", instance, "--quiet", "--duration", "240"]
        + ["--report", str(tmp_path / "r.json"), *extra],
        tmp_path / "pipeline.log",
        start_new_session=True,
    )
    p.group = True
    return p


def stop_run(p) -> tuple[str, dict]:
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=180)
    assert p.returncode == 0, log[-4000:]
    return log, json.loads(p.report_path.read_text())


def patient_drain_topology(tmp_path, drain_db_s: float) -> str:
    """The packaged default topology with persistence's ``drain_db_s`` set."""
    text = resources.files("bot4.config").joinpath("default.toml").read_text()
    old = 'params = { fsync = "batch" }'
    assert text.count(old) == 1, "the default persistence params changed: update this test"
    path = tmp_path / "topology.toml"
    path.write_text(text.replace(old, f'params = {{ fsync = "batch", drain_db_s = {drain_db_s} }}'))
    return str(path)


def test_persistence_sigkilled_12_times_loads_every_event_exactly_once(
    instance, procs, tmp_path, _pipeline_databases
):
    p = procs.add(start_run(instance, tmp_path, "--max-restarts", "100", "--max-backoff", "0.2"))
    p.report_path = tmp_path / "r.json"
    wait_running(instance)
    rng, _seed = seeded_rng("persistence kill times")
    # 12 kills (20 before): each restart costs a process start, and a stage that journals
    # and loads continuously is mid-append or mid-load at nearly any moment, so 12 random
    # moments hit those as 20 did; kills at the named points of the loader's commit
    # protocol are tests/db/test_crash.py's
    kills = 12
    for k in range(1, kills + 1):
        time.sleep(float(rng.uniform(0.05, 0.5)))
        os.kill(stage_block(instance, PERSISTENCE)["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            b = stage_block(instance, PERSISTENCE)
            if b["restarts"] >= k and b["state"] == 2:  # restarted and running again
                break
            assert time.monotonic() < deadline, f"persistence not restarted after kill {k}"
            time.sleep(0.02)
    time.sleep(1.0)  # trade on a little after the last restart
    log, report = stop_run(p)
    assert report["stages"]["persistence"]["restarts"] == kills
    assert all(s["restarts"] == 0 for n, s in report["stages"].items() if n != "persistence")
    journal = tmp_path / "bot4-data" / "journal" / instance
    got = assert_exactly_once(journal, *_pipeline_databases)
    assert got["orders"] > 0 and got["fills"] > 0


@pytest.fixture
def outage_databases(outage_server, monkeypatch):
    """Events and ledger databases on a server the test may stop (see ``outage_server``)."""
    admin = outage_server.dsn("postgres")
    names = [f"s_{uuid.uuid4().hex[:10]}", f"s_{uuid.uuid4().hex[:10]}_l"]
    dsns = [create_database(admin, n) for n in names]
    monkeypatch.setenv("BOT4_DSN", dsns[0])
    monkeypatch.setenv("BOT4_LEDGER_DSN", dsns[1])
    yield dsns
    if not outage_server.running:
        outage_server.start()
    for n in names:
        drop_database(admin, n)


def db_breaker_state(instance) -> str:
    with Breakers(instance, readonly=True) as brk:
        return next(b["state"] for b in brk.snapshot() if b["name"] == "db")


def wait_breaker(instance, state, timeout) -> None:
    deadline = time.monotonic() + timeout
    while db_breaker_state(instance) != state:
        assert time.monotonic() < deadline, f"db breaker not {state} within {timeout} s"
        time.sleep(0.1)


def test_database_outage_mid_run_loses_nothing_and_trading_keeps_pace(
    instance, procs, tmp_path, outage_server, outage_databases
):
    p = procs.add(start_run(instance, tmp_path))
    p.report_path = tmp_path / "r.json"
    wait_running(instance)
    time.sleep(2.0)
    signals_before = stage_block(instance, 1)["records_out"]
    outage_server.stop()
    t_down = time.monotonic()
    wait_breaker(instance, "open", 30)  # the loader's failures opened it
    time.sleep(max(0.0, 6.0 - (time.monotonic() - t_down)))  # several seconds down
    during = stage_block(instance, 1)["records_out"] - signals_before
    outage_server.start()
    wait_breaker(instance, "closed", 60)  # probes succeeded: closed again
    time.sleep(1.0)  # trade on a little with the database back (the drain loads the rest)
    log, report = stop_run(p)
    assert during > 0, "trading stopped while the database was down"
    for ring in EVENT_RINGS:
        r = report["rings"][ring]
        assert (r["full_waits"], r["rejections"]) == (0, 0), (ring, r)
    assert all(s["restarts"] == 0 for s in report["stages"].values())
    journal = tmp_path / "bot4-data" / "journal" / instance
    got = assert_exactly_once(journal, *outage_databases)
    assert got["orders"] > 0 and got["fills"] > 0
    assert "loading deferred" in log  # the loader said it was waiting for the database


def test_run_stopped_with_the_database_down_exits_1_and_db_load_completes_it(
    instance, procs, tmp_path, outage_server, outage_databases
):
    """A drain that leaves the database behind the journal is a partial result: `bot4 run`
    says how far behind, exits 1, and `bot4 db load` later loads the rest exactly once.

    The database stays down through the drain, so the loader never advances and the drain
    gives it up after ``drain_db_s`` without progress: 1 s here (the default's 10 s would
    only be waited out)."""
    p = procs.add(start_run(instance, tmp_path, patient_drain_topology(tmp_path, 1.0)))
    wait_running(instance)
    time.sleep(2.0)
    outage_server.stop()
    wait_breaker(instance, "open", 30)
    time.sleep(1.0)  # events journalled while the database is down
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=180)
    assert p.returncode == 1, log[-4000:]
    assert "frames behind the journal at exit" in log, log[-4000:]
    assert "left the database behind the journal" in log, log[-4000:]
    assert "Traceback" not in log
    outage_server.start()
    journal = tmp_path / "bot4-data" / "journal" / instance
    load = subprocess.run(
        [*BOT4, "db", "load", str(journal)], capture_output=True, text=True, timeout=180
    )
    assert load.returncode == 0, load.stdout + load.stderr
    got = assert_exactly_once(journal, *outage_databases)
    assert got["orders"] > 0 and got["fills"] > 0
