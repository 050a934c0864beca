"""The hot group's compiled duty cycle with depth wired into signals (issues 15, 18).

The default topology with the md stage reading a LOBSTER day (AMZN, 5 levels, 100x the
recorded pace) and its ``book_level`` ring wired into signals (``imbalance_levels = 5``).
Outcomes allowed:

* the group runs the compiled cycle with the depth input (its log line names the wiring,
  at every start), reads records with it, and the pipeline trades (fills at the venue);
* the group SIGKILLed twice mid-flow (seeded moments): the supervisor restarts it, every
  member resumes exactly: no risk decision journalled twice (by ``seq``), no order sent
  twice (the venue rejects none), risk's positions equal the net of the fills; after the
  drain no ring holds a record (the depth ring included) and no segment is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from importlib import resources

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.records import DEFAULT_INSTRUMENTS, RT_RISK_DECISION
from bot4.shm.segment import instance_segments
from tests.data_paths import lobster_dir
from tests.seeds import seeded_rng
from tests.system.pipeline_util import stage_block, wait_running
from tests.system.test_trading_e2e import replacement_running, start, summary, trade_on

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

HOT = 2  # stage index of risk (a member of the hot group) in the default topology
WIRING = "compiled duty cycle (signals ticks, depth; risk intents, fills, market data; orders"


def depth_topology(tmp_path, speed: int = 100) -> str:
    """The packaged default topology, md reading a LOBSTER day with its depth wired into
    signals (``imbalance_levels = 5``)."""
    z = lobster_dir() / "zips" / "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip"
    text = resources.files("bot4.config").joinpath("default.toml").read_text()
    text, n = re.subn(
        r'params = \{ source = "synthetic"[^}]*\}',
        f'params = {{ source = "lobster", path = "{z}", depth = 5, speed = {speed} }}',
        text,
    )
    assert n == 1, "no synthetic md stage in the default topology"
    text, n = re.subn(
        r"params = \{ threshold = 1.0, qty = 100, cooldown = 50 \}",
        "params = { threshold = 1.0, qty = 100, cooldown = 50, imbalance_levels = 5 }",
        text,
    )
    assert n == 1, "the default signals params changed: update this test"
    text += '\n[[ring]]\nname = "depth"\nfrom = "md"\nto = "signals"\ntype = "book_level"\n'
    text += "capacity = 8192\n"
    path = tmp_path / "depth.toml"
    path.write_text(text)
    return str(path)


def test_depth_into_signals_runs_compiled_and_a_killed_group_resumes_exactly(
    instance, procs, tmp_path
):
    p = procs.add(start(instance, tmp_path, 600, depth_topology(tmp_path), "--no-db"))
    wait_running(instance)
    rng, _seed = seeded_rng("hot group (depth) kill moments")
    kills = 2
    for k in range(1, kills + 1):
        trade_on(instance, reports=10)  # orders and fills since the (re)start
        time.sleep(float(rng.uniform(0.3, 1.5)))
        killed = stage_block(instance, HOT)["pid"]
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while not replacement_running(instance, HOT, killed, k):
            assert time.monotonic() < deadline, "hot group not restarted"
            time.sleep(0.02)
    trade_on(instance, reports=10)  # trading after the last restart
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)  # drain and stop (the duration is only a bound)
    log, _ = p.communicate(timeout=200)
    assert p.returncode == 0, log[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [report["stages"][m]["restarts"] for m in ("signals", "risk", "orders")] == [kills] * 3
    # the compiled cycle with the depth input, at the first start and at each restart
    assert log.count(WIRING) == kills + 1, log[-3000:]
    read = [int(n) for n in re.findall(r"compiled duty cycle read (\d+) records", log)]
    assert len(read) == 1 and read[0] > 0  # the last process's, at its drain
    sig = summary(log, "signals", "signals summary")
    assert sig["depth_updates"] > 0 and sig["intents"] > 0
    venue = summary(log, "venue", "venue summary")
    assert venue["fills"] > 0, "nothing traded"
    assert venue["rejects"] == 0  # no client order id twice
    # exactly once across the kills: no decision twice, positions = net of the fills
    decisions = [
        recs["seq"].copy()
        for _pos, rtype, recs in JournalReader(tmp_path / "bot4-data" / "journal" / instance)
        if rtype == RT_RISK_DECISION
    ]
    seqs = np.concatenate(decisions)
    assert len(seqs) > 0 and len(np.unique(seqs)) == len(seqs), "a decision emitted twice"
    risk = summary(log, "risk", "risk summary")
    sink = summary(log, "persistence", "summary")
    net = {DEFAULT_INSTRUMENTS.symbol_of(k): v for k, v in sink["net_filled"].items()}
    positions = {sym: q["position"] for sym, q in risk["positions"].items() if q["position"]}
    assert positions == net
    left = {k: r["depth"] for k, r in report["rings"].items() if r["depth"]}
    assert not left, f"records left unread after the drain: {left}"
    assert report["rings"]["depth"]["produced"] > 0
    assert not instance_segments(instance)
