"""``bot4 replay`` as a user runs it (through ``python -m bot4.replay.cli`` until the
subcommand is registered in ``bot4.cli``): an input problem is a one-line error and exit
code 1 before any work; a replay prints its summary and writes the report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.data_paths import lobster_dir

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]
CLI = [sys.executable, "-m", "bot4.replay.cli"]


def test_input_problem_is_a_clear_error_before_any_work(tmp_path):
    bad = tmp_path / "ticks.csv"
    bad.write_text(
        "ts_event_ns,symbol,kind,side,price,qty\n"
        "2000,AAPL,quote,bid,100.00,100\n1000,AAPL,quote,ask,100.01,100\n"
    )
    p = subprocess.run([*CLI, str(bad), "--out", str(tmp_path / "o")], capture_output=True,
                       text=True, timeout=100)  # fmt: skip
    assert p.returncode == 1
    assert p.stderr.startswith("bot4: error: ") and "timestamps not sorted" in p.stderr
    assert not (tmp_path / "o").exists()  # nothing was started


def test_replay_prints_a_summary_and_writes_the_report(tmp_path):
    data = lobster_dir() / "aapl_level10_first999"
    out = tmp_path / "o"
    p = subprocess.run(
        [*CLI, str(data), "--out", str(out), "--latency", "order=const:80us", "--seed", "7"],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "replayed 1,663 events (deterministic)" in p.stdout
    assert "report:" in p.stdout and "100.0%" in p.stderr  # the progress line ended
    doc = json.loads((out / "report.json").read_text())
    assert doc["run"]["latency"]["order"] == "const:80000ns" and doc["run"]["seed"] == 7
    html = (out / "report.html").read_text()
    fills = doc["summary"]["fills"]
    assert fills > 0 and html.count('class="fill ') == fills  # every fill on the price panel
    assert (out / "trades.csv").is_file() and (out / "fills.csv").read_text().count(
        "\n"
    ) == fills + 1
    assert (out / "journal").is_dir() and (out / "run.json").is_file()
