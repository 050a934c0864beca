"""Execution identity across stage restarts, end to end with the database on.

The venue is SIGKILLed mid-run, then the orders stage, then both back to back, while the
default pipeline trades and loads into PostgreSQL. Afterwards:

* no execution id carries two different executions in the journal (a restarted venue
  continues its ids, it does not reuse them);
* every journalled execution is in the database exactly once, with balanced ledger legs,
  nothing rejected and no identity conflict kept;
* the database's positions equal the net of the journal's fills per instrument;
* the OMS dropped nothing: every report it read from the venue is in the journal (its
  ``exec_events`` copy), and fills the restarted venue made after the kill are among them;
* the reconciliation the loader ran at the end of loading found no difference, and
  ``bot4 db load`` (again: nothing new) and ``bot4 db status`` agree (exit 0).

Bounded: a few seconds of trading (issue 11: the default pipeline may stall after ~25 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.records import RT_EXEC_REPORT, SIDE_BUY
from tests.conftest import query
from tests.system.db_check import assert_exactly_once
from tests.system.pipeline_util import BOT4, LoggedPopen, stage_block, wait_running
from tests.system.test_trading_e2e import trade_on

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

ORDERS, VENUE = 3, 4  # stage indexes in the default topology
RUNNING = 2
CONTENT = (
    "client_order_id", "order_id", "exec_type", "status", "reason", "instrument", "strategy",
    "side", "last_qty", "last_price", "cum_qty", "leaves_qty", "fee",
)  # fmt: skip


def start_run(instance, tmp_path):
    p = LoggedPopen(
        [*BOT4, "run", "--instance", instance, "--quiet", "--duration", "120"]
        + ["--max-restarts", "20", "--max-backoff", "0.2", "--report", str(tmp_path / "r.json")],
        tmp_path / "pipeline.log",
        start_new_session=True,
    )
    p.group = True
    return p


def kill(instance: str, index: int) -> None:
    os.kill(stage_block(instance, index)["pid"], signal.SIGKILL)


def wait_restarted(instance: str, index: int, restarts: int) -> None:
    """Wait until the supervisor has stage ``index`` running again after its kills."""
    deadline = time.monotonic() + 60
    while True:
        b = stage_block(instance, index)
        if b["restarts"] >= restarts and b["state"] == RUNNING:
            return
        assert time.monotonic() < deadline, f"stage {index} not restarted after its kill"
        time.sleep(0.02)


def journal_executions(journal) -> dict[int, set[tuple]]:
    """Venue executions of the journal: exec id -> the distinct contents seen under it."""
    out: dict[int, set[tuple]] = {}
    for _pos, rtype, recs in JournalReader(journal):
        if rtype != RT_EXEC_REPORT:
            continue
        for r in recs[recs["exec_id"] != 0]:
            out.setdefault(int(r["exec_id"]), set()).add(
                (*(int(r[f]) for f in CONTENT), int(r["ts_venue_ns"]))
            )
    return out


def late_fill_journalled(journal, since_ns: int) -> bool:
    """The journal (read beside its live writer) holds a venue fill made at ``since_ns`` or
    later."""
    for _pos, rtype, recs in JournalReader(journal):
        if rtype == RT_EXEC_REPORT and np.any(
            (recs["exec_id"] != 0) & (recs["last_qty"] > 0) & (recs["ts_venue_ns"] > since_ns)
        ):
            return True
    return False


def test_venue_and_orders_sigkilled_mid_run_no_execution_lost_or_merged(
    instance, procs, tmp_path, _pipeline_databases
):
    dsn, ledger = _pipeline_databases
    p = procs.add(start_run(instance, tmp_path))
    wait_running(instance)
    journal = tmp_path / "bot4-data" / "journal" / instance
    # each kill once the pipeline has traded since the last (re)start, awaited rather than
    # slept: whatever a loaded machine's pace, every kill lands mid-stream
    trade_on(instance)
    kill(instance, VENUE)
    wait_restarted(instance, VENUE, 1)
    venue_back_ns = time.monotonic_ns()
    deadline = time.monotonic() + 90  # a fill of the restarted venue journalled (see below)
    while not late_fill_journalled(journal, venue_back_ns):
        assert time.monotonic() < deadline, "no fill of the restarted venue within 90 s"
        time.sleep(0.1)
    trade_on(instance)
    kill(instance, ORDERS)
    wait_restarted(instance, ORDERS, 1)
    trade_on(instance)
    kill(instance, VENUE)
    kill(instance, ORDERS)
    wait_restarted(instance, ORDERS, 2)
    wait_restarted(instance, VENUE, 2)
    trade_on(instance)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=120)
    assert p.returncode == 0, log[-4000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stages"]["venue"]["restarts"] == 2, report["stages"]
    assert report["stages"]["orders"]["restarts"] == 2, report["stages"]

    execs = journal_executions(journal)
    merged = {k: v for k, v in execs.items() if len(v) > 1}
    assert not merged, f"{len(merged)} exec ids carry two executions, e.g. {next(iter(merged))}"

    got = assert_exactly_once(journal, dsn, ledger)
    assert got["fills"] > 0
    assert query(dsn, "SELECT count(*) FROM exec_conflicts")[0][0] == 0

    net: dict[int, int] = {}
    late_fills = 0
    for contents in execs.values():
        (c,) = contents
        row = dict(zip(CONTENT, c, strict=False))
        if row["last_qty"] > 0:
            signed = row["last_qty"] if row["side"] == SIDE_BUY else -row["last_qty"]
            net[row["instrument"]] = net.get(row["instrument"], 0) + signed
            late_fills += c[-1] > venue_back_ns
    db_net = {
        int(i): int(q)
        for i, q in query(dsn, "SELECT instrument, sum(qty) FROM positions GROUP BY instrument")
    }
    assert {k: v for k, v in db_net.items() if v} == {k: v for k, v in net.items() if v}

    # the OMS forwarded every venue report it read to the journal: none dropped as a repeat
    ring = report["rings"]["venue_execs"]
    assert ring["consumer_position"] == len(execs), (ring, len(execs))
    assert late_fills > 0, "no fill of the restarted venue reached the journal"

    # the persistence stage reconciled journal and database at drain, and they agreed
    assert f"reconciliation of journal {instance}" in log, log[-4000:]
    assert "DIFFER" not in log and "ALARM" not in log, log[-4000:]
    # the restarted OMSs found orders the restarted venue had forgotten: adopted, no halt
    assert "venue and OMS disagree" not in log and "halted by oms" not in log, log[-4000:]
    for cmd in (["db", "load", str(journal)], ["db", "status"]):
        r = subprocess.run(
            [*BOT4, *cmd, "--dsn", dsn, "--ledger-dsn", ledger],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, (cmd, r.stdout[-3000:], r.stderr[-3000:])
        assert "net positions equal: OK" in r.stdout, r.stdout[-3000:]
