"""The default pipeline past the first wrap of every ring (issue 11).

The default run stalled for good ~25 s after start: a stage emitting several records per
input (risk 2, orders 8, venue 16) claimed contiguous slots, and with fewer than that left
before the wrap point the claim never grew. Here every ring of the default topology is
shrunk to 64 slots, so each wraps many times within seconds, with the database on and off;
records must keep flowing on every ring and the pipeline must drain and exit 0.
"""

from __future__ import annotations

import json
import re
import signal
import time
import tomllib
from importlib import resources

import pytest

from bot4.journal import JournalReader
from bot4.shm.segment import instance_segments, segment_name
from bot4.shm.stats import RingReader
from tests.system.db_check import assert_exactly_once
from tests.system.pipeline_util import BOT4, LoggedPopen, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

CAPACITY = 64
WRAPS = 4  # every ring must carry at least this many times its capacity


def _small_ring_topology(instance: str, path) -> None:
    text = resources.files("bot4.config").joinpath("default.toml").read_text()
    text = re.sub(r"(?m)^capacity = \d+", f"capacity = {CAPACITY}", text)
    text = re.sub(r'(?m)^instance = ".*"', f'instance = "{instance}"', text)
    path.write_text(text)


def _rings_carried(instance: str, rings: list[str], records: int) -> bool:
    """Every ring has carried at least ``records`` records (read-only snapshots)."""
    for name in rings:
        r = RingReader(segment_name(instance, name))
        try:
            if r.snapshot().produced < records:
                return False
        finally:
            r.close()
    return True


@pytest.mark.parametrize("db", [True, False], ids=["db", "no-db"])
def test_default_pipeline_keeps_flowing_past_every_rings_wrap(
    db, instance, procs, tmp_path, _pipeline_databases
):
    topo = tmp_path / "small.toml"
    _small_ring_topology(instance, topo)
    rings = [r["name"] for r in tomllib.loads(topo.read_text())["ring"]]
    report = tmp_path / "report.json"
    # the duration is only a bound: the run is stopped once every ring has carried what the
    # check below asks (WRAPS times its capacity; counts only grow), not after a fixed 8 s
    # most of which it did not need. A flow stalled for good fails the wait instead.
    cmd = [*BOT4, "run", str(topo), "--duration", "150", "--quiet", "--report", str(report)]
    if not db:
        cmd.append("--no-db")
    p = procs.add(LoggedPopen(cmd, tmp_path / "pipeline.log", start_new_session=True))
    p.group = True
    wait_running(instance)
    deadline = time.monotonic() + 120
    while not _rings_carried(instance, rings, WRAPS * CAPACITY):
        assert p.poll() is None, p.communicate()[0][-4000:]
        assert time.monotonic() < deadline, f"the rings did not all wrap {WRAPS} times in 120 s"
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)  # drain and stop
    log, _ = p.communicate(timeout=150)
    assert p.returncode == 0, log
    final = json.loads(report.read_text())
    assert final["halted"] is None, log
    # the run's warnings and errors first: a restart's reason must survive pytest's
    # truncation of a long assertion message
    alerts = "\n".join(ln for ln in log.splitlines() if " WARNING " in ln or " ERROR " in ln)
    for name, st in final["stages"].items():
        assert st["state"] == "stopped" and st["restarts"] == 0, (name, st, alerts, log)
    feedback = {"fills", "venue_execs"}  # replies after their reader drained may remain
    for name, ring in final["rings"].items():
        # drained: every record produced was consumed
        assert name in feedback or ring["depth"] == 0, (name, ring)
        assert ring["produced"] >= WRAPS * CAPACITY, (
            f"ring {name} carried {ring['produced']} records, < {WRAPS} wraps: {log}"
        )
    journal = tmp_path / "bot4-data" / "journal" / instance
    rep = JournalReader(journal).verify()
    assert rep.ok and rep.torn_tail is None
    assert sum(rep.records.values()) == final["stages"]["persistence"]["records_in"]
    if db:
        got = assert_exactly_once(journal, *_pipeline_databases)
        assert got["fills"] >= WRAPS * CAPACITY // 2
    assert not instance_segments(instance)
