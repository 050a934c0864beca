"""The notebook API: ``bot4.replay(...)`` and ``bot4.sweep(...)`` returning result objects.

>>> import bot4
>>> r = bot4.replay("GOOG_2012-06-21_..._message_1.csv", params={"signals.threshold": 0.8})
>>> r.metrics["total_pnl"], r.fills.head(), r.trades, r.equity.plot(x="time", y="equity")
>>> s = bot4.sweep(["day1.zip", "day2.zip"], grid={"signals.threshold": [0.5, 1, 2]})
>>> s.best(5), s.table, s.failed

Tables are pandas DataFrames: pandas is what notebooks, Optuna and Ray already hand
around (and arch, which bot4 calibrate uses, depends on it), it reads and writes the
sweep's Parquet through pyarrow, and one more frame library (polars) would be one more
dependency for the same rows; ``DataFrame`` converts to polars with ``polars.from_pandas``
when wanted. Prices and money are floats in currency in these frames (the report's exact
decimal text is in ``.doc``); times are tz-aware timestamps on the exchange's clock
(New York) beside the raw ``ts_ns``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bot4.replay.notebook import ReplayRun, duration_ns, latency_dict, replay

__all__ = ["ReplayRun", "SweepResult", "replay", "sweep"]


@dataclass
class SweepResult:
    """A sweep's results: ``table`` (one row per run, plan order), ``walkforward`` (or
    None), ``report_path``, ``table_path``, ``trials``, ``ran`` / ``skipped`` (this call),
    and the :class:`bot4.research.sweep.SweepOutcome` as ``outcome``."""

    outcome: object

    def __getattr__(self, name):
        return getattr(self.outcome, name)

    def best(self, n: int = 10):
        """The ``n`` best points by the objective's mean over their data files."""
        return self.outcome.best(n)

    @property
    def ok(self):
        return self.outcome.ok()

    @property
    def failed(self):
        return self.outcome.failed()

    def run_dir(self, key: str) -> Path:
        """The directory of run ``key``: topology.toml, journal, report.html, trades.csv."""
        return Path(self.outcome.out_dir) / "runs" / key

    def _repr_html_(self) -> str:
        from html import escape

        t = self.table
        n_ok = int((t["status"] == "ok").sum()) if len(t) else 0
        return (
            f"<b>bot4 sweep</b>: {len(t)} runs, {n_ok} ok, {len(t) - n_ok} failed, "
            f'{self.trials} trials; <a href="{escape(str(self.report_path))}">report</a>'
            + self.best(5).to_html(index=False)
        )


def sweep(
    data: str | os.PathLike | list,
    *,
    grid: dict | None = None,
    params: dict | None = None,
    search: str | None = None,
    trials: int = 20,
    sample_seed: int = 0,
    batch: int | None = None,
    out: str | os.PathLike | None = None,
    topology: str | os.PathLike | None = None,
    latency: dict | list | None = None,
    interval: int | str = "60s",
    walk_forward: bool = False,
    walk_forward_calibrate: bool = False,
    objective: str = "total_pnl",
    minimize: bool = False,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    ship_data: bool = False,
    serial: bool = False,
    retry_failed: bool = False,
    heat: tuple[str, str] | None = None,
    dsn: str | None = None,
    progress: bool = False,
) -> SweepResult:
    """Run a sweep (``bot4 sweep``; docs/research.md) and return a :class:`SweepResult`.

    ``grid``: ``{"signals.threshold": [0.5, 1, 2], "latency.order": ["const:30us"]}``;
    ``params``: distributions for random / Bayesian search, ``{"signals.threshold":
    "uniform:0.2:2", "risk.max_position": "int:100:1000"}``; ``search`` defaults to grid
    without ``params``, else random. ``out`` (default: a new temporary directory) is where
    a second call resumes. ``walk_forward_calibrate``: ``--walk-forward-calibrate``.
    ``serial``: no Ray, one run after another in this process."""
    import sys

    from bot4.research.space import parse_dist, parse_grid
    from bot4.research.sweep import SweepConfig, run_sweep

    files = [str(data)] if isinstance(data, str | os.PathLike) else [str(d) for d in data]
    axes = []
    for k, vals in (grid or {}).items():
        key, _ = parse_grid(f"{k}=0")  # the key's check; values kept as given
        axes.append((key, list(vals)))
    dists = [parse_dist(f"{k}={v}") for k, v in (params or {}).items()]
    cfg = SweepConfig(
        data=files,
        out=str(out) if out is not None else tempfile.mkdtemp(prefix="bot4-sweep-"),
        search=search or ("random" if dists else "grid"),
        grid=axes,
        dists=dists,
        trials=trials,
        sample_seed=sample_seed,
        batch=batch,
        topology=None if topology is None else str(topology),
        latency=latency_dict(latency),
        interval_ns=duration_ns(interval),
        walk_forward=walk_forward,
        walk_forward_calibrate=walk_forward_calibrate,
        objective=objective,
        direction="min" if minimize else "max",
        executor="serial" if serial else "ray",
        ray_address=ray_address,
        num_cpus=num_cpus,
        ship_data=ship_data,
        retry_failed=retry_failed,
        heat=heat,
        dsn=dsn,
        progress=sys.stderr if progress else None,
    )
    return SweepResult(run_sweep(cfg))
