"""bot4 sweep end to end: a 2x2 grid on a local Ray (2 CPUs) twice gives identical tables
(modulo wall times and worker ids) whose metrics equal the serial runs'; a sweep SIGKILLed
mid-way and started again runs only the runs that had not finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bot4.research.table import VOLATILE
from tests.data_paths import lobster_dir

pytestmark = pytest.mark.system
pd = pytest.importorskip(
    "pandas",
    reason="the research extra (pip install -e .[research]) is not installed; CI installs it via the test extra",
)
pytest.importorskip(
    "ray",
    reason="the research extra (pip install -e .[research]) is not installed; CI installs it via the test extra",
)

BOT4 = [sys.executable, "-m", "bot4.cli"]


def fixture() -> str:
    return str(lobster_dir() / "aapl_level10_first999")


def sweep(out, *extra, timeout=240) -> subprocess.CompletedProcess:
    grid = ["--grid", "signals.threshold=0.5,1.5", "--grid", "latency.order=const:30us|const:90us"]
    p = subprocess.run(
        [*BOT4, "sweep", fixture(), *grid, "--out", str(out), "--quiet", *extra],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p


def table(out):
    t = pd.read_parquet(out / "results.parquet")
    return t[[c for c in t.columns if c not in VOLATILE]]


def test_grid_on_local_ray_twice_gives_identical_tables_equal_to_serial_runs(tmp_path):
    a = sweep(tmp_path / "a", "--cpus", "2")
    assert "4 runs (4 ok, 0 failed); ran 4 now" in a.stdout, a.stdout
    assert "Ray start" in a.stdout
    sweep(tmp_path / "b", "--cpus", "2")
    ta, tb = table(tmp_path / "a"), table(tmp_path / "b")
    assert len(ta) == 4 and (ta["status"] == "ok").all() and (ta["fills"] > 0).all()
    assert ta.equals(tb)
    workers = pd.read_parquet(tmp_path / "a" / "results.parquet")["worker"]
    assert not workers.str.endswith(f":{os.getpid()}").any()  # ran in Ray's workers
    sweep(tmp_path / "s", "--serial")
    assert ta.equals(table(tmp_path / "s"))  # Ray or not: the same runs, the same results
    again = sweep(tmp_path / "a", "--cpus", "2")
    assert "ran 0 now, 4 already done" in again.stdout and "Ray start" not in again.stdout


def test_sweep_killed_midway_reruns_only_unfinished_runs(tmp_path):
    out = tmp_path / "k"
    grid = ["--grid", "signals.threshold=0.25,0.5,1,1.5,2,3"]
    cmd = [*BOT4, "sweep", fixture(), *grid, "--out", str(out), "--serial", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 200
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.parquet").exists():
                try:
                    done = len(pd.read_parquet(out / "results.parquet"))
                except Exception:  # noqa: BLE001 - caught between write and rename: retry
                    done = 0
                if done >= 2:
                    break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = len(pd.read_parquet(out / "results.parquet"))
    assert 1 <= before <= 6
    p = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    assert f"ran {6 - before} now, {before} already done" in p.stdout, p.stdout
    t = pd.read_parquet(out / "results.parquet")
    assert len(t) == 6 and (t["status"] == "ok").all() and list(t["run"]) == list(range(6))
