"""bot4 warm (bot4/pipeline/warm/, bot4/warm/): only what a topology runs, in parallel worker processes, a
manifest per job so a warm cache is known without compiling, and a process that
compiles says so once."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap

import pytest

from bot4 import warm
from bot4.pipeline.topology import load_topology
from bot4.pipeline.warm import catalogue


def test_default_topology_jobs_are_its_stages_and_ring_types_only():
    jobs = warm.jobs_for(load_topology(None))
    names = [j.name for j in jobs]
    assert len(names) == len(set(names))
    kinds = {j.args[0] for j in jobs if j.fn == "_job_stage"}
    assert kinds == {"md", "signals", "risk", "orders", "venue", "count-sink"}  # persistence
    # the stage loops' ring operations (header words: one signature for every type), not
    # the single-record Python API's record-typed ones, which no stage calls
    (rings,) = [j for j in jobs if j.fn == "_job_ring_loop"]
    assert rings.args == () and "_job_rings" not in {j.fn for j in jobs}
    assert not {"_job_replay", "_job_marketdata", "_job_histogram"} & {j.fn for j in jobs}
    assert "_job_operator_log" in {j.fn for j in jobs}  # what persistence reads
    assert "_job_db_breaker" in {j.fn for j in jobs}  # what its database loader calls
    (hot,) = [j for j in jobs if j.fn == "_job_hot_path"]  # the [[group]] hot
    assert {n.split()[1] for n in hot.after} == {"signals", "risk", "orders"}
    # the venue's two inputs compile on two workers, after its setup alone
    venue = [j for j in jobs if j.args[:1] == ("venue",)]
    setup = [j for j in venue if j.args[3] == ()]
    assert len(setup) == 1 and len(venue) == 3
    assert all(j.after == (setup[0].name,) for j in venue if j is not setup[0])
    # critical path first: the orders stage, then the hot path cycle that waits for it, is
    # the longest chain; the venue's setup goes before either of its halves
    first = max(jobs, key=lambda j: catalogue._priority(j, jobs))
    assert first.args[:1] == ("orders",) and hot.name in {j.name for j in jobs}
    assert catalogue._priority(setup[0], jobs) > max(j.weight for j in venue if j is not setup[0])


def test_the_database_breaker_job_compiles_what_the_loader_calls_through_its_breaker():
    from bot4.pipeline.warm import recipes
    from bot4.shm import breaker_ops

    assert recipes._job_db_breaker() == 2
    # guard() calls both from Python: a first `bot4 run` compiled breaker_exit in the
    # loader thread at its first batch before this job existed
    assert breaker_ops.breaker_enter.signatures and breaker_ops.breaker_exit.signatures


def test_the_hot_path_job_follows_the_topologys_depth_wiring():
    """One job, for the wiring the group runs: the default topology's is the default
    specialisation only; book_level into signals and / or risk, that one's."""
    import re
    import tomllib
    from importlib import resources

    from bot4.pipeline.topology import parse_topology

    default = resources.files("bot4.config").joinpath("default.toml").read_text()
    (hot,) = [j for j in warm.jobs_for(load_topology(None)) if j.fn == "_job_hot_path"]
    assert hot.args == () and hot.name == "hot path group cycle"
    ring = (
        '\n[[ring]]\nname = "{n}"\nfrom = "md"\nto = "{to}"\ntype = "book_level"\ncapacity = 1024\n'
    )
    for to, want in (
        (("signals",), (True, False)),
        (("risk",), (False, True)),
        (("signals", "risk"), (True, True)),
    ):
        text = default + "".join(ring.format(n=f"d_{t}", to=t) for t in to)
        jobs = warm.jobs_for(parse_topology(tomllib.loads(text), "t.toml"))
        (hot,) = [j for j in jobs if j.fn == "_job_hot_path"]
        assert hot.args == want and re.search(r"\(depth: [a-z, ]+\)$", hot.name)
    names = [j.name for j in warm.all_jobs() if j.fn == "_job_hot_path"]
    assert names == ["hot path group cycle", "hot path group cycle (depth: signals)"]


def test_all_jobs_cover_every_kind_and_record_type_and_the_replay_runs_last():
    from bot4.stages import KINDS

    jobs = warm.all_jobs()
    kinds = {j.args[0] for j in jobs if j.fn == "_job_stage"}
    assert kinds == set(KINDS) - {"persistence"}
    relayed = {j.args[1] for j in jobs if j.args[:1] == ("relay",)}
    assert relayed == {(t,) for t in warm.RING_TYPES}
    assert jobs[-1].fn == "bot4.warm.recipes:_job_replay" and set(jobs[-1].after) == {
        j.name for j in jobs[:-1]
    }


@pytest.mark.timeout(300)
def test_a_process_that_compiles_says_so_once_and_a_cached_load_says_nothing(tmp_path):
    code = textwrap.dedent(
        """
        from bot4 import nbcache
        nbcache.notice_cold(lambda m: print("COLD", m))
        from bot4.risk import accounting
        accounting.pro_rata(10, 1, 3)
        accounting.pro_rata(10.0, 1, 3)  # a second compile: still one line
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    lines = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
        )
        assert out.returncode == 0, out.stderr
        lines.append([ln for ln in out.stdout.splitlines() if ln.startswith("COLD")])
    assert len(lines[0]) == 1 and ".accounting.pro_rata " in lines[0][0]
    assert str(tmp_path) in lines[0][0]
    assert lines[1] == []


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


@pytest.mark.timeout(240)
def test_ctrl_c_ends_a_compiling_warm_with_one_line_and_exit_130(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while the workers are
    compiling from an empty cache: one line, exit 130, no traceback, the workers gone,
    and the warm did not run to its end (no summary line)."""
    import signal
    import time

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    p = subprocess.Popen(
        [sys.executable, "-m", "bot4.cli", "warm", "-j", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: set[int] = set()
    try:
        # compiling: both workers (and multiprocessing's resource tracker) are there
        deadline = time.monotonic() + 120
        while len(seen) < 3 and p.poll() is None and time.monotonic() < deadline:
            seen.update(_children(p.pid))
            time.sleep(0.1)
        assert p.poll() is None and len(seen) >= 3, f"no workers seen: {seen}"
        time.sleep(2.0)  # inside numba's compiler by now (an empty cache: ~30 s to go)
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 130, err
        assert "Traceback" not in err, err
        assert err.rstrip().splitlines()[-1] == "bot4: interrupted", err
        assert "warmed " not in out, out  # it stopped before the end
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{c}") for c in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [c for c in seen if os.path.exists(f"/proc/{c}")]
        assert not left, f"worker processes left: {left}"
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        for c in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c, signal.SIGKILL)


@pytest.mark.timeout(240)
def test_a_sigterm_to_a_compiling_warm_takes_its_workers_with_it(tmp_path):
    """SIGTERM (or SIGKILL) to `bot4 warm` alone runs no `finally`: the workers must not
    compile on and then wait for tasks forever (PR_SET_PDEATHSIG)."""
    import signal
    import time

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    p = subprocess.Popen(
        [sys.executable, "-m", "bot4.cli", "warm", "-j", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(seen) < 3 and p.poll() is None and time.monotonic() < deadline:
            seen.update(_children(p.pid))
            time.sleep(0.1)
        assert p.poll() is None and len(seen) >= 3, f"no workers seen: {seen}"
        time.sleep(2.0)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == -signal.SIGTERM
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{c}") for c in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [c for c in seen if os.path.exists(f"/proc/{c}")]
        assert not left, f"worker processes left: {left}"
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        for c in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c, signal.SIGKILL)


def test_progress_says_what_compiles_how_many_are_left_and_the_time_so_far():
    """The plain progress lines (stderr not a terminal, a supervisor's log) and the line
    redrawn in place on a terminal: the job done, jobs done and left, seconds elapsed,
    and what each worker is compiling (job and kernel)."""
    import io
    import re

    plain = io.StringIO()
    p = warm.Progress(3, stream=plain, live=False)
    p.event(("start", 0, "stage orders"))
    p.event(("start", 1, "stage venue setup"))
    p.event(("kernel", 0, "bot4.oms.from_risk.orders_kernel"))
    p.event(("done", 1, "stage venue setup", 1, 2.5, None, 4))
    p.event(("done", 0, "stage orders", 1, 9.0, "RuntimeError: boom", 1))
    lines = plain.getvalue().splitlines()
    assert re.fullmatch(
        r"bot4: warm: \[1/3 done, 2 left, \d+ s\] stage venue setup: 2\.5 s "
        r"\(compiling: stage orders\)",
        lines[0],
    ), lines
    assert lines[1] == "bot4: warm: stage orders: failed: RuntimeError: boom", lines
    live = io.StringIO()
    p = warm.Progress(4, stream=live, live=True)
    p.event(("start", 0, "hot path group cycle"))
    p.event(("kernel", 0, "bot4.stages.hotloop.hot_cycle"))
    p.draw(force=True)
    last = live.getvalue().split("\r\033[K")[-1]
    assert re.fullmatch(
        r"bot4: warm \[\.{20}\] 0/4 done, 4 left, \d+ s \| hot path group cycle: hot_cycle",
        last,
    ), last
    p.close()
    assert live.getvalue().endswith("\r\033[K")  # the line is cleared at the end


def test_a_stage_job_runs_what_the_stage_runs_as_it_stops(monkeypatch):
    """A stage's warm job ends with its ``summary`` (logged as the stage stops): risk's
    calls ``daily_loss`` (through ``daily_pnl``), which the first default run after a
    warm compiled there."""
    from bot4.pipeline.warm import recipes
    from bot4.risk.book import RiskBook

    called = []
    orig = RiskBook.daily_pnl
    monkeypatch.setattr(RiskBook, "daily_pnl", lambda self: called.append(1) or orig(self))
    ins, outs = ("ORDER_INTENT", "EXEC_REPORT", "MARKET_DATA"), ("ORDER", "RISK_DECISION")
    assert recipes._job_stage("risk", ins, outs, None, (("shared", False),)) == 1
    assert called == [1]


@pytest.mark.timeout(300)
def test_bot4_warm_profile_has_each_compile_with_its_own_seconds(tmp_path, monkeypatch):
    """``BOT4_WARM_PROFILE``: every worker writes one JSON line per compile (job, kernel,
    argument types, wall and CPU seconds without its callees' compiles, nesting depth);
    a second run finds the cache warm and compiles, so writes, nothing."""
    import json

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    monkeypatch.setenv("BOT4_WARM_PROFILE", str(tmp_path / "prof"))
    job = warm.Job("latency histogram", "_job_histogram", (), 0.5)
    rep = warm.run_jobs([job], 1)
    assert rep.failed == {} and rep.compiled >= 2, vars(rep)
    rows = [
        json.loads(ln)
        for f in (tmp_path / "prof").glob("worker-0-*.jsonl")
        for ln in f.read_text().splitlines()
    ]
    kernels = {r["kernel"] for r in rows}
    assert {"bot4.shm.histogram.record_many", "bot4.shm.histogram.record_many_latency"} <= kernels
    for r in rows:
        assert r["job"] == "latency histogram" and r["cpu_s"] >= 0 and r["wall_s"] >= 0
        assert r["depth"] >= 0 and r["args"]
    assert any(r["depth"] > 0 for r in rows)  # callees' compiles are lines of their own
    n = len(rows)
    rep = warm.run_jobs([job], 1)
    assert rep.failed == {} and rep.compiled == 0
    after = sum(
        len(f.read_text().splitlines()) for f in (tmp_path / "prof").glob("worker-0-*.jsonl")
    )
    assert after == n
