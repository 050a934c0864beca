"""The trading chain end to end on the default topology: md, signals, risk, orders, venue.

* positions risk keeps equal the net of the fills persistence receives, per instrument,
  and the venue filled what they add up to;
* the orders stage SIGKILLed twice mid-stream: restarted each time; the venue never sees
  an order twice (no duplicate client order id reaches it) and, at shutdown, nothing of
  ours rests at the venue (the drain's cancel-all).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from bot4.records import DEFAULT_INSTRUMENTS
from bot4.shm import control as C
from bot4.shm.segment import instance_segments
from tests.seeds import seeded_rng
from tests.system.pipeline_util import BOT4, stage_block, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


def _int_keys(x):
    """JSON has string keys only: the summaries' instrument ids come back as ints."""
    if isinstance(x, dict):
        return {(int(k) if k.isdigit() else k): _int_keys(v) for k, v in x.items()}
    return x


def summary(log: str, stage: str, marker: str) -> dict:
    """The fields of a stage's ``stage_summary`` event in the text log (bot4.logs renders
    them as ``summary=<JSON>``). The line's process is the stage's, or its group's (the
    default topology runs signals, risk and orders in group ``hot``): the marker names the
    stage."""
    m = re.findall(rf"[\w-]+\[\d+\] INFO {marker}  summary=(\{{.*\}})", log)
    assert m, f"no '{marker}' line from {stage} in the log"
    return _int_keys(json.loads(m[-1]))


def replacement_running(instance: str, index: int, killed_pid: int, restarts: int) -> bool:
    """The stage's replacement process attached (it wrote its own pid) and reports running.
    The state word alone is not enough: a SIGKILLed stage leaves RUNNING in it, so a
    restart counted but not yet started would pass for a running one."""
    cb = C.ControlBlock(instance, readonly=True)
    b = cb.stage(index)
    ok = (
        int(b[C.S_RESTARTS]) >= restarts
        and int(b[C.S_PID_SEEN]) not in (0, killed_pid)
        and int(b[C.S_STATE]) == C.STAGE_RUNNING
    )
    del b
    cb.close()
    return ok


def start(instance, tmp_path, duration):
    p = subprocess.Popen(
        [
            *BOT4,
            "run",
            "--instance",
            instance,
            "--quiet",
            "--duration",
            str(duration),
            "--report",
            str(tmp_path / "r.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    p.group = True
    return p


def test_positions_equal_the_net_of_the_fills(instance, procs, tmp_path):
    p = procs.add(start(instance, tmp_path, 6))
    log, _ = p.communicate(timeout=200)
    assert p.returncode == 0, log
    risk = summary(log, "risk", "risk summary")
    sink = summary(log, "persistence", "summary")
    venue = summary(log, "venue", "venue summary")
    net = {DEFAULT_INSTRUMENTS.symbol_of(k): v for k, v in sink["net_filled"].items()}
    positions = {sym: p["position"] for sym, p in risk["positions"].items() if p["position"]}
    assert venue["fills"] > 0 and net, "the default pipeline traded nothing"
    assert positions == net
    assert venue["live_orders"] == 0 and not instance_segments(instance)


def test_orders_stage_sigkilled_mid_stream_sends_no_order_twice(instance, procs, tmp_path):
    p = procs.add(start(instance, tmp_path, 14))
    wait_running(instance)
    rng, _seed = seeded_rng("orders stage kill times")
    for k in (1, 2):
        time.sleep(float(rng.uniform(1.5, 3.0)))
        o = stage_block(instance, 3)  # orders
        os.kill(o["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not replacement_running(instance, 3, o["pid"], k):
            assert time.monotonic() < deadline, "orders stage not restarted"
            time.sleep(0.05)
    log, _ = p.communicate(timeout=200)
    assert p.returncode == 0, log
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stages"]["orders"]["restarts"] == 2
    venue = summary(log, "venue", "venue summary")
    assert venue["orders_in"] > 0 and venue["rejects"] == 0  # no client order id twice
    assert venue["live_orders"] == 0  # resting orders cancelled at shutdown
    # each restarted OMS rebuilt what it had done from the journal before taking intents
    rebuilt = re.findall(
        r"restarted mid-session; rebuilt from the journal  recovered=(\{.*\})", log
    )
    assert len(rebuilt) == 2, log[-3000:]
    assert all(json.loads(r)["client_ids"] > 0 for r in rebuilt)
    orders = summary(log, "orders", "orders summary")
    assert orders["recovered"]["orders"] >= json.loads(rebuilt[0])["orders"]
    assert not instance_segments(instance)


@pytest.mark.xfail(
    strict=False,
    reason="known race (issue 15, open): SIGKILL of the hot group can leave risk's rebuilt "
    "position one fill off the fills persistence saw (CI 2026-12-06: AMZN +100 extra; an "
    "earlier run one fill short): the rebuild reads the journal, which lags the in-group "
    "fills ring cursor. Passes most runs; kept running so a fix shows as XPASS",
)
def test_risk_stage_sigkilled_mid_stream_rebuilds_positions_from_the_journal(
    instance, procs, tmp_path
):
    p = procs.add(start(instance, tmp_path, 12))
    wait_running(instance)
    for k in (1, 2):
        time.sleep(2.0)
        killed = stage_block(instance, 2)["pid"]  # risk
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not replacement_running(instance, 2, killed, k):
            assert time.monotonic() < deadline, "risk stage not restarted"
            time.sleep(0.05)
    log, _ = p.communicate(timeout=200)
    assert p.returncode == 0, log
    risk = summary(log, "risk", "risk summary")
    sink = summary(log, "persistence", "summary")
    assert risk["recovered"] and risk["recovered"]["fills"] > 0  # the last one rebuilt
    assert len(re.findall(r"risk: restarted mid-session; \d+ fills re-applied", log)) == 2
    net = {DEFAULT_INSTRUMENTS.symbol_of(k): v for k, v in sink["net_filled"].items()}
    # persistence's counts cover its own process (never restarted here): the whole run
    positions = {sym: p["position"] for sym, p in risk["positions"].items() if p["position"]}
    assert positions == net
