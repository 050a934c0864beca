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
import subprocess
from importlib import resources

import pytest

from bot4.journal import JournalReader
from bot4.shm.segment import instance_segments
from tests.system.db_check import assert_exactly_once
from tests.system.pipeline_util import BOT4

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

CAPACITY = 64
WRAPS = 4  # every ring must carry at least this many times its capacity


def _small_ring_topology(instance: str, path) -> None:
    text = resources.files("bot4.config").joinpath("default.toml").read_text()
    text = re.sub(r"(?m)^capacity = \d+", f"capacity = {CAPACITY}", text)
    text = re.sub(r'(?m)^instance = ".*"', f'instance = "{instance}"', text)
    path.write_text(text)


@pytest.mark.parametrize("db", [True, False], ids=["db", "no-db"])
def test_default_pipeline_keeps_flowing_past_every_rings_wrap(
    db, instance, tmp_path, _pipeline_databases
):
    topo = tmp_path / "small.toml"
    _small_ring_topology(instance, topo)
    report = tmp_path / "report.json"
    cmd = [*BOT4, "run", str(topo), "--duration", "8", "--quiet", "--report", str(report)]
    if not db:
        cmd.append("--no-db")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=200, start_new_session=True)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
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
