"""bot4 sweep end to end on a local Ray (2 CPUs): a 2x2 grid whose points with qty 0 the
topology refuses (failed rows with their error, in the table and the report) runs twice,
the second time with the data shipped through Ray's object store and the driver SIGKILLed
mid-way (with Ray's processes, which share its process group) and started again: the
restart runs only the runs that had not finished, and both tables are identical (modulo
wall times and worker ids) and equal to a serial sweep's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

import bot4
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


def run(cmd, timeout=240) -> subprocess.CompletedProcess:
    """``cmd`` in a session of its own: Ray's processes (gcs, raylet, agents, workers) join
    the driver's process group, so one killpg ends everything it started, also on a
    timeout."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == 0, stderr
    return subprocess.CompletedProcess(cmd, 0, stdout, stderr)


GRID = ["--grid", "signals.threshold=0.5,1.5", "--grid", "signals.qty=100,0"]


def sweep(out, *extra, timeout=240) -> subprocess.CompletedProcess:
    return run([*BOT4, "sweep", fixture(), *GRID, "--out", str(out), "--quiet", *extra], timeout)


def table(out):
    """The table without host facts, nor code_version: each sweep process names the working
    tree as it finds it, and other work may edit bot4/ between two sweeps of this test (a
    clean checkout, as in CI, gives equal versions; tests/unit covers the version)."""
    t = pd.read_parquet(out / "results.parquet")
    assert t["code_version"].str.startswith(bot4.__version__ + "+g").all()
    return t[[c for c in t.columns if c not in (*VOLATILE, "code_version")]]


def kill_after_rows(cmd, out, rows: int) -> int:
    """Start ``cmd``, SIGKILL its process group once ``out``'s table has ``rows`` rows;
    the rows it left."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if len(pd.read_parquet(out / "results.parquet")) >= rows:
                    break
            except Exception:  # noqa: BLE001 - not written yet, or caught mid-rename
                pass
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return len(pd.read_parquet(out / "results.parquet"))


def test_grid_on_local_ray_killed_and_resumed_gives_identical_tables_with_failed_runs(tmp_path):
    a = sweep(tmp_path / "a", "--cpus", "2")
    assert "4 runs (2 ok, 2 failed); ran 4 now" in a.stdout and "Ray start" in a.stdout, a.stdout
    ta = table(tmp_path / "a")
    assert list(ta["run"]) == [0, 1, 2, 3] and (ta[ta["status"] == "ok"]["fills"] > 0).all()
    bad = ta[ta["p:signals.qty"] == 0]
    assert (bad["status"] == "failed").all() and bad["error"].str.contains("params.qty").all()
    assert (ta[ta["p:signals.qty"] == 100]["status"] == "ok").all()
    assert "Failed runs (2)" in (tmp_path / "a" / "report.html").read_text()
    workers = pd.read_parquet(tmp_path / "a" / "results.parquet")["worker"]
    assert not workers.str.endswith(f":{os.getpid()}").any()  # ran in Ray's workers

    # again, the data through the object store, the driver killed after its first row
    cmd = [*BOT4, "sweep", fixture(), *GRID, "--out", str(tmp_path / "b"), "--quiet",
           "--cpus", "2", "--ship-data"]  # fmt: skip
    before = kill_after_rows(cmd, tmp_path / "b", 1)
    assert 1 <= before <= 4
    b = run(cmd)
    assert f"ran {4 - before} now, {before} already done" in b.stdout, b.stdout
    assert ta.equals(table(tmp_path / "b"))

    sweep(tmp_path / "s", "--serial")
    assert ta.equals(table(tmp_path / "s"))  # Ray or not: the same runs, the same results
    again = sweep(tmp_path / "a", "--cpus", "2")
    assert "ran 0 now, 4 already done" in again.stdout and "Ray start" not in again.stdout
