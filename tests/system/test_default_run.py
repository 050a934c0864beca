"""`bot4 run` on its built-in defaults: synthetic ticks become intents, orders and fills."""

from __future__ import annotations

import json
import subprocess

import pytest

from bot4.shm.segment import instance_segments
from tests.system.pipeline_util import BOT4

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


def test_default_run_turns_synthetic_ticks_into_intents_orders_and_fills(instance, tmp_path):
    report = tmp_path / "report.json"
    out = subprocess.run(
        [
            *BOT4,
            "run",
            "--duration",
            "4",
            "--instance",
            instance,
            "--quiet",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    st = json.loads(report.read_text())["stages"]
    assert st["md"]["records_out"] > 20_000  # ~20k ticks/s for 4 s
    assert st["signals"]["records_in"] == st["md"]["records_out"]  # drained: every tick seen
    assert 0 < st["signals"]["records_out"] < st["signals"]["records_in"]  # intents, selectively
    assert st["risk"]["records_out"] > 0 and st["orders"]["records_in"] == st["risk"]["records_out"]
    assert st["persistence"]["records_in"] == st["orders"]["records_in"]  # one fill per order
    assert all(s["state"] == "stopped" and s["restarts"] == 0 for s in st.values())
    assert not instance_segments(instance)
