"""A sweep: plan the runs, execute the ones not yet done, collect, compare.

Search (``search``):

* ``grid`` — every combination of the ``grid`` axes (``KEY=[values]``);
* ``random`` — ``trials`` points drawn from ``dists`` with ``numpy.random.default_rng(
  sample_seed)`` (times the grid axes, if any): the same seed draws the same points;
* ``bayes`` — Optuna's TPE sampler seeded with ``sample_seed``, asked ``batch`` points at a
  time (default: the CPUs available), each point run on every in-sample data file and told
  the mean objective in the order asked; failed points are told as failed. Same seed and
  batch: the same points, run for run, including after a resume (finished runs are read
  back from the table and told again).

Each point runs on every data file given (days x instruments). With ``walk_forward`` the
files are consecutive windows in the order given (day 1, day 2, ...): the point that is
best on window k (the ``objective`` metric, ``direction`` max or min) is traded on window
k+1, out of sample. Grid and random search run every point on every window, so the
out-of-sample run is one of them; Bayesian search optimises on each window k alone and
runs the chosen point on k+1 afterwards. With ``walk_forward_calibrate`` each in-sample
window k is also calibrated (``bot4 calibrate``: GARCH + orthogonaliser;
``bot4.research.calib``) and the fitted file is the ``signals.params_file`` of window k's
in-sample runs and of window k+1's out-of-sample run; the last window then has no
in-sample runs of its own. The walk-forward table is
``OUT/walkforward.parquet`` and a section of the comparison report.

Reproducible: every run is a deterministic replay, rows are kept in plan order, and the
table's only host-dependent columns are ``wall_s`` and ``worker``. Resumable: rows are
written as runs finish; a second start of the same sweep into the same OUT runs only the
keys that are missing (``retry_failed`` also reruns failed ones).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot4.research.calib import WindowCalibration, calibrate_window, calibration_fields
from bot4.research.runs import (
    DEFAULT_INTERVAL_NS,
    METRICS,
    RunSpec,
    code_version,
    data_identity,
)
from bot4.research.space import (
    Dist,
    SpaceError,
    base_topology_text,
    grid_points,
    topology_text,
)
from bot4.research.table import ResultsTable

__all__ = ["SweepConfig", "SweepOutcome", "run_sweep"]

SEARCHES = ("grid", "random", "bayes")


@dataclass
class SweepConfig:
    """Everything a sweep is (module docstring). ``latency``: fixed models NAME -> text;
    ``executor``: ``ray`` or ``serial`` (one process, no Ray: the comparison baseline)."""

    data: list[str]
    out: str
    search: str = "grid"
    grid: list[tuple[str, list]] = field(default_factory=list)
    dists: list[Dist] = field(default_factory=list)
    trials: int = 20
    sample_seed: int = 0
    batch: int | None = None
    topology: str | None = None
    latency: dict = field(default_factory=dict)
    interval_ns: int = DEFAULT_INTERVAL_NS
    walk_forward: bool = False
    walk_forward_calibrate: bool = False
    objective: str = "total_pnl"
    direction: str = "max"
    executor: str = "ray"
    ray_address: str | None = None
    num_cpus: int | None = None
    ship_data: bool = False
    warm: bool = False
    retry_failed: bool = False
    heat: tuple[str, str] | None = None
    best: int = 10
    dsn: str | None = None
    progress: object = None  # a stream for one line per finished run (None: quiet)

    def check(self) -> None:
        if not self.data:
            raise SpaceError("no data files")
        for d in self.data:
            if not Path(d).exists():
                raise SpaceError(f"{d}: no such file or directory")
        if self.search not in SEARCHES:
            raise SpaceError(f"search must be one of {', '.join(SEARCHES)}")
        if self.search == "grid" and self.dists:
            raise SpaceError("distributions (--param) need --search random or bayes")
        if self.search != "grid" and not self.dists:
            raise SpaceError(f"--search {self.search} needs at least one --param KEY=DIST")
        if self.search == "grid" and not self.grid:
            raise SpaceError("a grid sweep needs at least one --grid KEY=V1,V2")
        if self.objective not in METRICS:
            raise SpaceError(f"objective must be a metric: {', '.join(METRICS)}")
        if self.direction not in ("max", "min"):
            raise SpaceError("direction must be max or min")
        if self.walk_forward and len(self.data) < 2:
            raise SpaceError("walk-forward needs at least two data files (windows)")
        if self.walk_forward_calibrate:
            self._check_calibrate()
        if self.trials < 1:
            raise SpaceError("trials must be >= 1")
        keys = [k for k, _ in self.grid] + [d.key for d in self.dists]
        if len(set(keys)) != len(keys):
            raise SpaceError("a parameter is given twice")

    def _check_calibrate(self) -> None:
        import tomllib

        if not self.walk_forward:
            raise SpaceError("--walk-forward-calibrate needs --walk-forward")
        if "signals.params_file" in [k for k, _ in self.grid] + [d.key for d in self.dists]:
            raise SpaceError(
                "--walk-forward-calibrate sets signals.params_file: it cannot be swept too"
            )
        stages = tomllib.loads(base_topology_text(self.topology)[0]).get("stage", [])
        if "signals" not in {st.get("name") for st in stages}:
            raise SpaceError(
                "--walk-forward-calibrate: the topology has no stage named 'signals' to "
                "take the params_file"
            )


@dataclass
class SweepOutcome:
    """What a sweep leaves: the results table (a pandas DataFrame in plan order), the
    walk-forward table (None without walk-forward), paths, and counts. ``ran``: runs
    executed now; ``skipped``: runs found done in the table."""

    out_dir: Path
    table: object
    walkforward: object
    report_path: Path
    table_path: Path
    ran: int
    skipped: int
    trials: int
    wall_s: float
    startup_s: float
    config: SweepConfig

    def ok(self):
        return self.table[self.table["status"] == "ok"]

    def failed(self):
        return self.table[self.table["status"] == "failed"]

    def best(self, n: int = 10):
        """The ``n`` best points by the mean objective over their data files."""
        from bot4.research.compare import rank_points

        return rank_points(self.table, self.config.objective, self.config.direction).head(n)


#: seconds between two rewrites of the results table (and database writes) while runs
#: finish: a rewrite costs O(rows) (66 ms at 12 rows, 0.5 s at 5,000 on this VM under load),
#: so writing after every row would make the driver the bottleneck of a large cluster. The
#: first row is written at once; a kill loses at most this much of finished rows (they rerun)
WRITE_EVERY_S = 1.0


class _Driver:
    """Runs specs (skipping done keys), writes rows as they arrive (at most every
    :data:`WRITE_EVERY_S`, and once more when the runs are done)."""

    def __init__(self, cfg: SweepConfig, table: ResultsTable, executor) -> None:
        self.cfg = cfg
        self.table = table
        self.executor = executor
        self.ran = 0
        self.skipped = 0
        self.planned: set[str] = set()
        self.db = None
        self.writes = 0
        self._last_write = -math.inf
        self._unsent: list[dict] = []
        if cfg.dsn:
            from bot4.records.errors import Bot4Error
            from bot4.research.db import SweepDB

            try:
                self.db = SweepDB(cfg.dsn, sweep=str(Path(cfg.out).resolve()))
            except Bot4Error as exc:  # unreachable or refused: the Parquet table still is
                print(f"bot4: warning: sweep rows go to results.parquet only: {exc}",
                      file=sys.stderr)  # fmt: skip

    def run(self, specs: list[RunSpec]) -> None:
        todo = []
        for s in specs:
            if s.key in self.planned:  # planned before in this sweep (an OOS lookup)
                continue
            self.planned.add(s.key)
            if self.table.done(s.key, retry_failed=self.cfg.retry_failed):
                self.skipped += 1
                self.table.rows[s.key]["run"] = s.index  # this plan's order
            else:
                todo.append(s)
        if not todo:
            return
        total = len(todo)
        done = [0]

        def on_row(row: dict) -> None:
            self.table.add(row)
            self._unsent.append(row)
            if time.monotonic() - self._last_write >= WRITE_EVERY_S:
                self.flush()
            self.ran += 1
            done[0] += 1
            if self.cfg.progress is not None:
                err = f"  {row['error']}" if row["status"] != "ok" else ""
                obj = row.get(self.cfg.objective)
                print(
                    f"[{done[0]}/{total}] {row['status']:6} {row['key']} {row['data']} "
                    f"{row['params']} {self.cfg.objective}={obj}{err}",
                    file=self.cfg.progress,
                    flush=True,
                )

        try:
            if self.executor is None:
                from bot4.research.executor import run_serial

                run_serial(todo, self.cfg.out, on_row)
            else:
                self.executor.run(todo, self.cfg.out, on_row)
        finally:  # also on Ctrl-C / SIGTERM: the rows that finished are kept
            if self._unsent:
                self.flush()

    def flush(self) -> None:
        """Rewrite the table and send the rows not yet in the database."""
        self.table.write()
        if self.db is not None:
            self.db.write(self._unsent)
        self._unsent = []
        self.writes += 1
        self._last_write = time.monotonic()


def _objective(rows: list[dict], metric: str) -> float | None:
    """Mean of ``metric`` over ``rows`` (one point's runs); None if any failed or is null."""
    vals = []
    for r in rows:
        v = r.get(metric) if r.get("status") == "ok" else None
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        vals.append(float(v))
    return math.fsum(vals) / len(vals) if vals else None


class _Planner:
    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        self.base, _src = base_topology_text(cfg.topology)
        self.bytes = {d: data_identity(d)["bytes"] for d in cfg.data}
        self.next_index = 0
        self._topo_cache: dict[str, str] = {}

    def spec(
        self, data: str, point: dict, *, new: bool = True, cal: WindowCalibration | None = None
    ) -> RunSpec:
        """The run of ``point`` on ``data``; ``new=False``: a lookup (no plan index taken);
        ``cal``: the calibration whose file is the run's ``signals.params_file``."""
        key = json.dumps(point, sort_keys=True)
        if key not in self._topo_cache:
            self._topo_cache[key] = topology_text(self.base, point)
        s = RunSpec(
            index=self.next_index,
            data=data,
            point=dict(point),
            topology_toml=self._topo_cache[key],
            latency=dict(self.cfg.latency),
            interval_ns=self.cfg.interval_ns,
            data_bytes=self.bytes[data],
            **calibration_fields(cal, "params_error"),
        )
        if new:
            self.next_index += 1
        return s

    def points(self) -> list[dict]:
        """Grid or random points (not Bayesian: those come from the sampler)."""
        base = grid_points(self.cfg.grid)
        if self.cfg.search == "grid":
            return base
        rng = np.random.default_rng(self.cfg.sample_seed)
        draws = [{d.key: d.sample(rng) for d in self.cfg.dists} for _ in range(self.cfg.trials)]
        return [{**b, **d} for d in draws for b in base]


def _bayes(
    cfg: SweepConfig,
    planner: _Planner,
    driver: _Driver,
    windows: list[str],
    cal: WindowCalibration | None = None,
) -> list:
    """One Optuna study over ``windows`` (in-sample files; ``cal``: their calibration);
    returns its points in the order asked."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=cfg.sample_seed)
    study = optuna.create_study(
        sampler=sampler, direction="maximize" if cfg.direction == "max" else "minimize"
    )
    batch = cfg.batch or (driver.executor.cpus() if driver.executor is not None else 1)
    grid = grid_points(cfg.grid)
    points: list[dict] = []
    asked = 0
    while asked < cfg.trials:
        n = min(batch, cfg.trials - asked)
        trials = [study.ask() for _ in range(n)]
        tp = []
        for t in trials:
            sampled = {d.key: d.suggest(t) for d in cfg.dists}
            tp.append([{**g, **sampled} for g in grid])
        specs = {
            id(t): [[planner.spec(w, p, cal=cal) for w in windows] for p in pts]
            for t, pts in zip(trials, tp, strict=True)
        }
        driver.run([s for t in trials for group in specs[id(t)] for s in group])
        for t, pts in zip(trials, tp, strict=True):
            vals = []
            for group in specs[id(t)]:
                vals.append(_objective([driver.table.rows[s.key] for s in group], cfg.objective))
            if any(v is None for v in vals):
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(t, math.fsum(vals) / len(vals))
            points.extend(pts)
        asked += n
    return points


def _walk_forward(
    cfg: SweepConfig, planner: _Planner, driver: _Driver, in_sample: dict, cals: dict
):
    """The walk-forward table: for each window k, the best point on k (``in_sample[k]``:
    that window's points) traded on k+1 (with window k's calibration ``cals[k]``, if any)."""
    import pandas as pd

    rows = driver.table.rows
    sign = 1.0 if cfg.direction == "max" else -1.0
    out = []
    oos_specs = []
    picks = []
    for k in range(len(cfg.data) - 1):
        win, nxt = cfg.data[k], cfg.data[k + 1]
        best, best_v, n_ok = None, None, 0
        for p in in_sample[k]:
            s = planner.spec(win, p, new=False, cal=cals.get(k))
            v = _objective([rows[s.key]], cfg.objective) if s.key in rows else None
            if v is None:
                continue
            n_ok += 1
            if best_v is None or sign * v > sign * best_v:
                best, best_v = p, v
        picks.append((k, win, nxt, best, best_v, n_ok, len(in_sample[k])))
        if best is not None:
            oos_specs.append(planner.spec(nxt, best, cal=cals.get(k)))
    driver.run(oos_specs)
    for k, win, nxt, best, best_v, n_ok, n in picks:
        oos_row = None
        if best is not None:
            s = planner.spec(nxt, best, new=False, cal=cals.get(k))
            oos_row = rows.get(s.key)
        cal = cals.get(k)
        out.append(
            {
                "window": k,
                "in_sample": win,
                "out_of_sample": nxt,
                "params": json.dumps(best, sort_keys=True) if best is not None else None,
                "trials": n,
                "trials_ok": n_ok,
                "in_sample_objective": best_v,
                "out_of_sample_objective": (
                    _objective([oos_row], cfg.objective) if oos_row is not None else None
                ),
                "out_of_sample_key": oos_row["key"] if oos_row is not None else None,
                "out_of_sample_status": oos_row["status"] if oos_row is not None else None,
                **calibration_fields(cal, "calibration_error"),
            }
        )
    return pd.DataFrame(out)


def _calibrate_windows(cfg: SweepConfig) -> dict[int, WindowCalibration]:
    """Window k's calibration for every in-sample window (fitted now or read back)."""
    cals = {}
    for k, d in enumerate(cfg.data[:-1]):
        cal, fitted = calibrate_window(cfg.out, d, retry_failed=cfg.retry_failed)
        cals[k] = cal
        if cfg.progress is not None:
            what = "calibrated" if fitted else "calibration found"
            res = cal.error if cal.error else f"{cal.file} sha256 {cal.sha256[:16]}"
            print(f"{what}: window {k} {d}: {res}", file=cfg.progress, flush=True)
    return cals


def run_sweep(cfg: SweepConfig) -> SweepOutcome:
    """Plan, run what is missing, write ``results.parquet``, ``walkforward.parquet`` (with
    walk-forward), ``sweep.json`` and ``report.html`` into ``cfg.out``."""
    t0 = time.perf_counter()
    cfg.check()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    planner = _Planner(cfg)
    table = ResultsTable(out)
    stale = {r["code_version"] for r in table.rows.values()} - {code_version()}
    if stale and cfg.progress is not None:
        print(
            f"bot4: warning: {out}: runs made by code {', '.join(sorted(stale))} are kept "
            f"(now {code_version()}); use a new --out to rerun them",
            file=sys.stderr,
        )
    executor = None
    startup_s = 0.0
    if cfg.executor == "ray":
        from bot4.research.executor import RayExecutor

        executor = RayExecutor(
            cfg.ray_address, cfg.num_cpus, ship_data=cfg.ship_data, warm=cfg.warm
        )
    elif cfg.executor != "serial":
        raise SpaceError("executor must be ray or serial")
    wf = None
    trials = 0
    driver = _Driver(cfg, table, executor)
    try:
        if executor is not None:
            executor.__enter__()
        cals = _calibrate_windows(cfg) if cfg.walk_forward_calibrate else {}
        if cfg.search == "bayes":
            windows = cfg.data[:-1] if cfg.walk_forward else cfg.data
            if cfg.walk_forward:
                in_sample = {
                    k: _bayes(cfg, planner, driver, [w], cals.get(k)) for k, w in enumerate(windows)
                }
                trials = cfg.trials * len(windows)
            else:
                in_sample = {0: _bayes(cfg, planner, driver, windows)}
                trials = cfg.trials
        else:
            pts = planner.points()
            trials = len(pts)
            if cals:  # window k with its own calibration; the last one is out of sample only
                windows = list(enumerate(cfg.data[:-1]))
                driver.run([planner.spec(d, p, cal=cals[k]) for p in pts for k, d in windows])
            else:
                driver.run([planner.spec(d, p) for p in pts for d in cfg.data])
            in_sample = dict.fromkeys(range(len(cfg.data)), pts)
        if cfg.walk_forward:
            wf = _walk_forward(cfg, planner, driver, in_sample, cals)
    finally:
        if executor is not None:
            startup_s = executor.startup_s
            executor.__exit__(None, None, None)
        if driver.db is not None:
            driver.db.close()
    table_path = table.write()
    df = table.frame()
    if wf is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pandas(wf, preserve_index=False), out / "walkforward.parquet")
    meta = {
        "search": cfg.search,
        "trials": trials,
        "data": cfg.data,
        "grid": [[k, v] for k, v in cfg.grid],
        "params": [d.__dict__ for d in cfg.dists],
        "sample_seed": cfg.sample_seed,
        "topology": cfg.topology,
        "latency": cfg.latency,
        "interval_ns": cfg.interval_ns,
        "walk_forward": cfg.walk_forward,
        "walk_forward_calibrate": cfg.walk_forward_calibrate,
        "objective": cfg.objective,
        "direction": cfg.direction,
        "code_version": code_version(),
    }
    (out / "sweep.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    from bot4.research.compare import write_report

    report = write_report(out, df, wf, meta, heat=cfg.heat, best=cfg.best)
    return SweepOutcome(
        out_dir=out,
        table=df,
        walkforward=wf,
        report_path=report,
        table_path=table_path,
        ran=driver.ran,
        skipped=driver.skipped,
        trials=trials,
        wall_s=time.perf_counter() - t0,
        startup_s=startup_s,
        config=cfg,
    )
