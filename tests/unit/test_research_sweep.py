"""bot4 sweep's planning and driver, in one process (``executor="serial"``; the Ray path is
tests/system/test_sweep_ray.py): parameter parsing, the topology a point gives, run keys,
a failed run kept with its error, resume after lost rows, every run's metrics equal to a
plain replay, seeded random and Bayesian search, and walk-forward selection."""

from __future__ import annotations

import json
import tomllib

import pytest

from bot4.research.runs import RunSpec, metrics_of
from bot4.research.space import (
    SpaceError,
    base_topology_text,
    dumps_toml,
    grid_points,
    parse_dist,
    parse_grid,
    topology_text,
)
from bot4.research.sweep import SweepConfig, _Planner, run_sweep
from bot4.research.table import VOLATILE, ResultsTable
from tests.data_paths import lobster_dir

pytest.importorskip(
    "pandas",
    reason="the research extra (pip install -e .[research]) is not installed; CI installs it via the test extra",
)


def fixture() -> str:
    return str(lobster_dir() / "aapl_level10_first999")


def test_grid_values_are_typed_and_latency_models_keep_their_commas():
    assert parse_grid("signals.threshold=0.5,1,2") == ("signals.threshold", [0.5, 1, 2])
    assert parse_grid("signals.cross=true,false") == ("signals.cross", [True, False])
    assert parse_grid("latency.order=const:30us|empirical:30us,40us") == (
        "latency.order",
        ["const:30us", "empirical:30us,40us"],
    )
    assert parse_grid("latency.order=empirical:30us,40us") == (
        "latency.order",
        ["empirical:30us,40us"],
    )
    for bad in ("threshold=1", "latency.wire=1us", "signals.qty=", "signals.qty=1,1"):
        with pytest.raises(SpaceError):
            parse_grid(bad)
    d = parse_dist("risk.max_position=int:100:1000")
    assert (d.kind, d.lo, d.hi) == ("int", 100, 1000)
    with pytest.raises(SpaceError):
        parse_dist("signals.threshold=loguniform:0:1")
    pts = grid_points([("a.x", [1, 2]), ("b.y", ["p", "q"])])
    assert pts == [
        {"a.x": 1, "b.y": "p"},
        {"a.x": 1, "b.y": "q"},
        {"a.x": 2, "b.y": "p"},
        {"a.x": 2, "b.y": "q"},
    ]


def test_a_point_changes_only_its_stage_params_in_the_topology():
    base, _ = base_topology_text(None)
    data = tomllib.loads(base)
    assert tomllib.loads(dumps_toml(data)) == data  # the writer round-trips a topology
    out = tomllib.loads(topology_text(base, {"signals.threshold": 0.25, "seed": 3}))
    sig = next(s for s in out["stage"] if s["name"] == "signals")
    want = next(s for s in data["stage"] if s["name"] == "signals")
    assert sig["params"] == {**want["params"], "threshold": 0.25}
    assert [s for s in out["stage"] if s["name"] != "signals"] == [
        s for s in data["stage"] if s["name"] != "signals"
    ]
    with pytest.raises(SpaceError, match="no stage 'nosuch'"):
        topology_text(base, {"nosuch.x": 1})


def test_the_run_key_is_what_determines_the_result():
    base, _ = base_topology_text(None)
    a = RunSpec(0, "d.csv", {"signals.threshold": 1.0}, base, data_bytes=10)
    assert a.key == RunSpec(7, "d.csv", {"signals.threshold": 1.0}, base, data_bytes=10).key
    others = [
        RunSpec(0, "e.csv", {"signals.threshold": 1.0}, base, data_bytes=10),
        RunSpec(0, "d.csv", {"signals.threshold": 2.0}, base, data_bytes=10),
        RunSpec(0, "d.csv", {"signals.threshold": 1.0}, base, data_bytes=11),
        RunSpec(0, "d.csv", {"signals.threshold": 1.0}, base, {"order": "80us"}, data_bytes=10),
        RunSpec(0, "d.csv", {"signals.threshold": 1.0, "seed": 2}, base, data_bytes=10),
    ]
    assert len({a.key, *(o.key for o in others)}) == 6


def _cfg(tmp_path, name, **kw) -> SweepConfig:
    base = dict(
        data=[fixture()],
        out=str(tmp_path / name),
        grid=[("signals.qty", [100, 0]), ("latency.order", ["const:30us", "const:90us"])],
        executor="serial",
    )
    base.update(kw)
    return SweepConfig(**base)


def test_serial_grid_keeps_a_failed_run_resumes_and_equals_plain_replays(tmp_path):
    from bot4.pipeline.topology import load_topology
    from bot4.replay.latency import LatencyConfig
    from bot4.replay.runner import replay

    out = run_sweep(_cfg(tmp_path, "a"))
    t = out.table
    assert list(t["run"]) == [0, 1, 2, 3] and out.ran == 4 and out.skipped == 0
    bad = t[t["p:signals.qty"] == 0]
    assert list(bad["status"]) == ["failed", "failed"]  # qty 0: the topology refuses it
    assert all("params.qty" in e for e in bad["error"])
    # the error names paths relative to OUT: another OUT gives the same text
    assert all(e.startswith(f"TopologyError: runs/{k}/topology.toml") for e, k in
               zip(bad["error"], bad["key"], strict=True))  # fmt: skip
    ok = t[t["status"] == "ok"]
    assert len(ok) == 2 and (ok["fills"] > 0).all()
    html = (out.out_dir / "report.html").read_text()
    assert "Failed runs (2)" in html and "params.qty" in html

    # each run's metrics equal a plain replay of its topology, latency and seed
    for _, r in ok.iterrows():
        run_dir = out.out_dir / "runs" / r["key"]
        plain = replay(
            fixture(),
            tmp_path / f"plain-{r['key']}",
            topology=load_topology(run_dir / "topology.toml"),
            latency=LatencyConfig.from_specs({"order": json.loads(r["params"])["latency.order"]}),
            seed=int(r["seed"]),
            progress=None,
        )
        got = {k: r[k] for k in metrics_of(plain.report.doc)}
        assert got == pytest.approx(metrics_of(plain.report.doc), nan_ok=True)
        assert "--topology runs/" in r["command"] and "--latency order=const:" in r["command"]

    # a sweep killed after two runs left two rows: the restart runs only the other two
    table = ResultsTable(out.out_dir)
    for key in list(table.rows)[1:3]:
        del table.rows[key]
    table.write()
    again = run_sweep(_cfg(tmp_path, "a"))
    assert (again.ran, again.skipped) == (2, 2)
    cols = [c for c in t.columns if c not in VOLATILE]
    assert again.table[cols].equals(t[cols])
    # nothing left: a third start runs nothing
    assert run_sweep(_cfg(tmp_path, "a")).ran == 0


def test_random_and_bayes_points_repeat_with_their_seed(tmp_path):
    dists = [parse_dist("signals.threshold=uniform:0.2:2"), parse_dist("signals.qty=int:50:200")]
    plan = _Planner(_cfg(tmp_path, "r", search="random", grid=[], dists=dists, trials=5))
    again = _Planner(_cfg(tmp_path, "r", search="random", grid=[], dists=dists, trials=5))
    other = _Planner(
        _cfg(tmp_path, "r", search="random", grid=[], dists=dists, trials=5, sample_seed=1)
    )
    assert plan.points() == again.points() != other.points()
    assert all(50 <= p["signals.qty"] <= 200 for p in plan.points())

    pytest.importorskip("optuna")
    kw = dict(search="bayes", grid=[], dists=dists[:1], trials=4, batch=2, sample_seed=5)
    a = run_sweep(_cfg(tmp_path, "b1", **kw))
    b = run_sweep(_cfg(tmp_path, "b2", **kw))
    cols = [c for c in a.table.columns if c not in VOLATILE]
    assert a.trials == 4 and len(a.table) == 4
    assert a.table[cols].equals(b.table[cols])  # same seed and batch: the same trials
    # resumed: the sampler is told the finished runs again and asks the same points
    c = run_sweep(_cfg(tmp_path, "b1", **kw))
    assert c.ran == 0 and c.table[cols].equals(a.table[cols])


def test_walk_forward_trades_each_windows_best_point_on_the_next(tmp_path):
    from bot4.replay.sources import SyntheticSource, write_parquet

    windows = []
    for k in range(3):  # three "days" of a synthetic quote-and-trade stream
        p = tmp_path / f"day{k}.parquet"
        write_parquet(p, SyntheticSource(20_000, instruments=1, seed=40 + k, dt_ns=50_000).chunks())
        windows.append(str(p))
    cfg = _cfg(
        tmp_path,
        "wf",
        data=windows,
        grid=[("signals.threshold", [0.5, 2.0])],
        walk_forward=True,
    )
    out = run_sweep(cfg)
    t, wf = out.table, out.walkforward
    assert len(t) == 6 and (t["status"] == "ok").all()
    assert list(wf["window"]) == [0, 1]
    for _, w in wf.iterrows():
        ins = t[t["data"] == w["in_sample"]]
        best = ins[ins["total_pnl"] == ins["total_pnl"].max()].sort_values("run").iloc[0]
        assert w["params"] == best["params"]
        assert w["in_sample_objective"] == best["total_pnl"]
        oos = t[(t["data"] == w["out_of_sample"]) & (t["params"] == best["params"])].iloc[0]
        assert w["out_of_sample_objective"] == oos["total_pnl"]
        assert w["out_of_sample_key"] == oos["key"]
    assert "Walk-forward" in (out.out_dir / "report.html").read_text()


def test_walk_forward_calibrate_trades_window_k_plus_1_with_window_ks_fit(tmp_path):
    import hashlib
    import io

    from bot4.calibrate import calibrate
    from bot4.replay.sources import SyntheticSource, write_parquet

    windows = []
    for k, n in enumerate((20_000, 20_000, 20_000, 60)):  # the 4th: too few returns to fit
        p = tmp_path / f"day{k}.parquet"
        write_parquet(p, SyntheticSource(n, instruments=1, seed=50 + k, dt_ns=50_000).chunks())
        windows.append(str(p))
    cfg = _cfg(
        tmp_path,
        "wfc",
        data=windows[:3],
        grid=[("signals.threshold", [0.5, 2.0])],
        walk_forward=True,
        walk_forward_calibrate=True,
    )
    out = run_sweep(cfg)
    t, wf = out.table, out.walkforward
    # in sample: 2 points x windows 0, 1 (each with its own fit); out of sample: 2 runs
    assert len(t) == 6 and (t["status"] == "ok").all(), t[["data", "error"]]
    assert list(wf["window"]) == [0, 1]
    fits = []
    for _, w in wf.iterrows():
        k = int(w["window"])
        text = (out.out_dir / w["params_file"]).read_bytes()
        assert hashlib.sha256(text).hexdigest() == w["params_sha256"]
        direct = calibrate(windows[k])  # a direct `bot4 calibrate` of the in-sample window
        doc = json.loads(text)
        assert doc["garch"] == json.loads(json.dumps(direct["garch"]))
        assert doc["orthogonaliser"] == json.loads(json.dumps(direct["orthogonaliser"]))
        fits.append(w["params_sha256"])
        oos = t[t["key"] == w["out_of_sample_key"]].iloc[0]
        assert oos["data"] == windows[k + 1] == w["out_of_sample"]
        assert (oos["params_file"], oos["params_sha256"]) == (w["params_file"], w["params_sha256"])
        topo = tomllib.loads((out.out_dir / "runs" / oos["key"] / "topology.toml").read_text())
        sig = next(st for st in topo["stage"] if st["name"] == "signals")
        assert sig["params"]["params_file"] == str((out.out_dir / w["params_file"]).resolve())
        on_k = t[t["data"] == windows[k]]  # window k's 2 in-sample runs, on its own fit
        ins = on_k[on_k["key"] != (wf.iloc[k - 1]["out_of_sample_key"] if k else None)]
        assert len(ins) == 2 and set(ins["params_sha256"]) == {w["params_sha256"]}
    assert fits[0] != fits[1]  # window 1's out-of-sample run is not traded on its own fit
    assert wf.iloc[0]["params_file"] in (out.out_dir / "report.html").read_text()
    # resumed: nothing runs again, no window is fitted again
    log = io.StringIO()
    again = run_sweep(_cfg(**{**cfg.__dict__, "progress": log}, tmp_path=tmp_path, name="wfc"))
    assert again.ran == 0 and "calibrated:" not in log.getvalue()
    assert log.getvalue().count("calibration found") == 2
    # Bayesian search: window 0's trials and window 1's out-of-sample run use window 0's fit
    by = run_sweep(
        _cfg(
            tmp_path,
            "wfc-bayes",
            data=windows[:2],
            search="bayes",
            grid=[],
            dists=[parse_dist("signals.threshold=uniform:0.5:2")],
            trials=2,
            batch=1,
            walk_forward=True,
            walk_forward_calibrate=True,
        )
    )
    assert len(by.table) == 3 and (by.table["status"] == "ok").all()
    assert set(by.table["params_sha256"]) == {fits[0]}  # the same window, the same bytes
    assert by.walkforward.iloc[0]["out_of_sample_status"] == "ok"
    # a window that cannot be fitted: its runs are failed rows with the calibration's error
    bad = run_sweep(
        _cfg(
            tmp_path,
            "wfc-bad",
            data=[windows[3], windows[0]],
            grid=[("signals.threshold", [1.0])],
            walk_forward=True,
            walk_forward_calibrate=True,
        )
    )
    row = bad.table.iloc[0]
    assert len(bad.table) == 1 and row["status"] == "failed"
    assert "fewer than 100 mid returns" in row["error"] and "calibration of window" in row["error"]
    assert bad.walkforward.iloc[0]["calibration_error"] in row["error"]
    assert bad.walkforward.iloc[0]["out_of_sample_key"] is None
    for kw, said in (
        ({"walk_forward": False}, "needs --walk-forward"),
        ({"grid": [("signals.params_file", ["a", "b"])]}, "cannot be swept"),
    ):
        with pytest.raises(SpaceError, match=said):
            run_sweep(_cfg(**{**cfg.__dict__, **kw}, tmp_path=tmp_path, name="wfc"))


def test_without_ray_the_sweep_says_which_extra_in_one_line(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from bot4.cli import main\n"
        f"sys.exit(main(['sweep', {fixture()!r}, '--grid', 'signals.threshold=1', "
        f"'--out', {str(tmp_path / 'o')!r}]))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith("bot4: error: running sweeps (bot4 sweep, bot4.sweep) needs the "
                           "optional 'research' extra")  # fmt: skip
    assert not (tmp_path / "o" / "results.parquet").exists()


def test_the_code_version_names_the_code_not_unrelated_commits(tmp_path):
    import subprocess

    from bot4.research.runs import version_of_checkout

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    assert version_of_checkout(tmp_path, "1.0") == "1.0"  # not a checkout
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "bot4").mkdir()
    (tmp_path / "bot4" / "a.py").write_text("x = 1\n")
    git("add", "bot4")
    git("commit", "-q", "-m", "code")
    clean = version_of_checkout(tmp_path, "1.0")
    assert clean.startswith("1.0+g") and "dirty" not in clean
    (tmp_path / "README").write_text("docs\n")
    git("add", "README")
    git("commit", "-q", "-m", "docs")
    assert version_of_checkout(tmp_path, "1.0") == clean  # a docs commit is the same code
    (tmp_path / "bot4" / "a.py").write_text("x = 2\n")
    one = version_of_checkout(tmp_path, "1.0")
    (tmp_path / "bot4" / "a.py").write_text("x = 3\n")
    two = version_of_checkout(tmp_path, "1.0")
    assert one.startswith(clean + "-dirty.") and two.startswith(clean + "-dirty.") and one != two
    (tmp_path / "bot4" / "a.py").write_text("x = 1\n")
    (tmp_path / "bot4" / "new.py").write_text("y = 1\n")  # untracked code counts too
    assert version_of_checkout(tmp_path, "1.0").startswith(clean + "-dirty.")


def test_a_refused_ray_address_says_how_to_send_the_token(monkeypatch):
    pytest.importorskip(
        "ray", reason="the research extra (ray) is not installed; CI installs it via the test extra"
    )
    from bot4.research.executor import RayExecutor

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    e = RayExecutor("10.0.0.1:6379")
    line = e._start_error(ConnectionError("Failed to connect\nto Ray cluster"))
    assert line.startswith("could not connect to the Ray cluster at 10.0.0.1:6379: Failed to")
    assert "RAY_AUTH_MODE=token" in line and "\n" not in line
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # set already: the cause lies elsewhere
    assert "RAY_AUTH_MODE" not in e._start_error(ConnectionError("refused"))


def test_the_driver_rewrites_the_table_at_most_every_interval(tmp_path, monkeypatch):
    import bot4.research.sweep as sw

    writes = []
    real = ResultsTable.write

    def counting(self):
        writes.append(len(self.rows))
        return real(self)

    monkeypatch.setattr(ResultsTable, "write", counting)
    monkeypatch.setattr(sw, "WRITE_EVERY_S", 1e9)  # rows arrive faster than the interval
    out = run_sweep(_cfg(tmp_path, "w"))
    # the first row at once, the other three together when the runs are done, then the
    # sweep's final write: nothing lost, three rewrites instead of five
    assert writes == [1, 4, 4] and len(out.table) == 4
    writes.clear()
    monkeypatch.setattr(sw, "WRITE_EVERY_S", 0.0)
    run_sweep(_cfg(tmp_path, "w0"))
    assert writes == [1, 2, 3, 4, 4]


def test_a_run_whose_worker_dies_is_a_failed_row_with_rays_error(monkeypatch):
    """The executor's side of a dead worker (out of memory, a signal), with a stand-in for
    Ray: ray.get raises for that run, the row says so on one line, the other run is ok."""
    import types

    from bot4.research.executor import RayExecutor

    base, _ = base_topology_text(None)
    specs = [RunSpec(i, fixture(), {"signals.threshold": t}, base) for i, t in enumerate((1, 2))]
    refs = {}

    class Task:
        def remote(self, spec, out_root, shipped):
            refs[len(refs)] = spec
            return len(refs) - 1

    def get(ref):
        if refs[ref].index == 0:
            raise RuntimeError("The worker died unexpectedly\n(SIGKILL, out of memory)")
        return {**refs[ref].base_row(), "status": "ok"}

    fake = types.SimpleNamespace(
        is_initialized=lambda: True,
        remote=lambda **kw: lambda fn: Task(),
        wait=lambda r, num_returns: (r[:1], r[1:]),
        get=get,
    )
    monkeypatch.setitem(__import__("sys").modules, "ray", fake)
    rows = []
    RayExecutor(None).run(specs, "unused", rows.append)
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert rows[0]["error"] == (
        "RuntimeError: The worker died unexpectedly (SIGKILL, out of memory)"
    )
