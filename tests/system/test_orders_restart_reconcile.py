"""The orders stage SIGKILLed mid-flow, three times, with orders resting at the venue and
the database on: trading goes on after every restart, nothing is lost or sent twice.

The default pipeline, with the venue's cancel-on-disconnect off (``disconnect_after_s =
0``), so the orders resting at the venue when the OMS dies are still there when its
replacement starts: every restart rebuilds them from the journal and its output rings,
queries each at the venue while reports and requests are in flight, and must find them
in agreement (``bot4.oms.reconcile``). Before, every difference — however it arose — halted
the instruments until an operator resumed them. Afterwards:

* three restarts, each reconciled with real answers (EXEC_STATUS from the venue) and no
  instrument halted by the OMS; after each restart the replacement sends new orders;
* no client order id reached the venue twice (journal, and the venue's own count);
* every journalled event is in the database exactly once, the database's positions equal
  the journal's fills, and the loader's reconciliation at the end found no difference.

Bounded: a few seconds of trading, each kill once the (replacement) OMS has traded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from importlib import resources

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.records import ACTION_NEW, ACTION_QUERY, EXEC_STATUS, OS_NONE, RT_EXEC_REPORT, RT_ORDER
from tests.system.db_check import assert_exactly_once
from tests.system.pipeline_util import BOT4, LoggedPopen, stage_block, wait_running
from tests.system.test_trading_e2e import replacement_running, summary, trade_on

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

ORDERS = 3  # stage index in the default topology
KILLS = 3


def topology(path) -> str:
    """The packaged default with the venue's cancel-on-disconnect off."""
    text = resources.files("bot4.config").joinpath("default.toml").read_text()
    old = "params = { latency_ns = 50000 }"
    assert text.count(old) == 1
    path.write_text(text.replace(old, "params = { latency_ns = 50000, disconnect_after_s = 0 }"))
    return str(path)


def new_order_journalled(journal, since_ns: int) -> bool:
    """The journal (read beside its live writer) holds an order sent at ``since_ns`` or later."""
    for _pos, rtype, recs in JournalReader(journal):
        if rtype == RT_ORDER and np.any(
            (recs["action"] == ACTION_NEW) & (recs["ts_order_ns"] >= since_ns)
        ):
            return True
    return False


def test_orders_stage_sigkilled_with_orders_resting_reconciles_and_trades_on(
    instance, procs, tmp_path, _pipeline_databases
):
    dsn, ledger = _pipeline_databases
    p = LoggedPopen(
        [*BOT4, "run", topology(tmp_path / "t.toml"), "--instance", instance, "--quiet"]
        + ["--duration", "120", "--max-restarts", "10", "--max-backoff", "0.2"]
        + ["--report", str(tmp_path / "r.json")],
        tmp_path / "pipeline.log",
        start_new_session=True,
    )
    p.group = True
    procs.add(p)
    wait_running(instance)
    journal = tmp_path / "bot4-data" / "journal" / instance
    trade_on(instance)  # orders sent and resting at the venue
    time.sleep(0.5)
    windows = []  # (replacement running, next kill) in CLOCK_MONOTONIC ns, as ts_order_ns
    for k in range(1, KILLS + 1):
        killed = stage_block(instance, ORDERS)["pid"]
        kill_ns = time.monotonic_ns()
        if windows:
            windows[-1][1] = kill_ns
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while not replacement_running(instance, ORDERS, killed, k):
            assert time.monotonic() < deadline, "orders stage not restarted"
            time.sleep(0.02)
        windows.append([time.monotonic_ns(), 0])
        # the replacement reconciled and sends new orders (the assertion below, awaited):
        # then trade on a little, so that the next kill finds orders of its resting
        deadline = time.monotonic() + 90
        while not new_order_journalled(journal, windows[-1][0]):
            assert time.monotonic() < deadline, f"no new order after restart {k} within 90 s"
            time.sleep(0.1)
        time.sleep(0.5)
    windows[-1][1] = time.monotonic_ns()
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=150)
    assert p.returncode == 0, log[-4000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stages"]["orders"]["restarts"] == KILLS, report["stages"]

    # every restart rebuilt and reconciled; nothing disagreed, no instrument halted by it
    assert log.count("restarted mid-session; rebuilt from the journal") == KILLS, log[-4000:]
    assert log.count("orders: reconciled; taking new intents") >= 1, log[-4000:]
    assert "venue and OMS disagree" not in log and "halted by oms" not in log, log[-4000:]

    sent, answers = [], []
    for _pos, rtype, recs in JournalReader(journal):
        if rtype == RT_ORDER:
            sent.append(recs)
        elif rtype == RT_EXEC_REPORT:
            answers.append(recs[(recs["exec_type"] == EXEC_STATUS) & (recs["exec_id"] != 0)])
    sent, answers = np.concatenate(sent), np.concatenate(answers)
    queries = sent[sent["action"] == ACTION_QUERY]
    # the restarted OMSs had orders resting, asked the venue, and the venue knew them
    assert 0 < len(answers) <= len(queries), (len(queries), len(answers))
    assert (answers["status"] != OS_NONE).all()

    # trading went on: each replacement sent new orders before the next kill / the end
    new = sent[sent["action"] == ACTION_NEW]
    for lo, hi in windows:
        n = int(((new["ts_order_ns"] >= lo) & (new["ts_order_ns"] < hi)).sum())
        assert n > 0, f"no order sent between a restart and the next kill: {windows}"

    # no client order id reached the venue twice
    assert len(np.unique(new["client_order_id"])) == len(new)
    venue = summary(log, "venue", "venue summary")
    assert venue["rejects"] == 0 and venue["live_orders"] == 0

    # nothing lost or loaded twice: journal against the databases
    got = assert_exactly_once(journal, dsn, ledger)
    assert got["fills"] > 0
    assert f"reconciliation of journal {instance}" in log and "DIFFER" not in log, log[-4000:]
    r = subprocess.run(
        [*BOT4, "db", "status", "--dsn", dsn, "--ledger-dsn", ledger, "--journal", str(journal)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "net positions equal: OK" in r.stdout, r.stdout[-3000:]
