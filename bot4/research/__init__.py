"""Research at scale: parameter sweeps over recorded data, run on Ray, compared in one
report, and the notebook API (docs/research.md).

* :func:`run_sweep` / :class:`SweepConfig` — plan, run what is missing, collect
  (``bot4.research.sweep``);
* :class:`RunSpec` / :func:`run_one` — one deterministic replay with one parameter point
  (``bot4.research.runs``);
* :class:`RayExecutor` — where runs execute (``bot4.research.executor``);
* :class:`ResultsTable` — the Parquet results table (``bot4.research.table``);
* ``bot4.research.api`` — ``bot4.replay(...)`` and ``bot4.sweep(...)`` for notebooks.

Heavy dependencies (ray, optuna, pandas) are the ``research`` extra, imported where used.
"""

from bot4.research.runs import RunSpec, run_one
from bot4.research.sweep import SweepConfig, SweepOutcome, run_sweep

__all__ = ["RunSpec", "SweepConfig", "SweepOutcome", "run_one", "run_sweep"]
