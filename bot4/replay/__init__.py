"""The replay harness: recorded market data through the same stages as live trading,
against the simulated venue, with a report (``bot4 replay``, docs/replay.md).

* :func:`replay` — one run, start to report (``bot4.replay.runner``);
* :class:`DeterministicReplay` — one process on a simulated clock (``bot4.replay.engine``);
* :func:`run_full` — the real multi-process pipeline (``bot4.replay.full``);
* :func:`open_source` / :class:`SyntheticSource` — checked, streamed input
  (``bot4.replay.sources``);
* :class:`LatencyConfig` and the models (``bot4.replay.latency``);
* :func:`report_from_journal` / :class:`Report` (``bot4.replay.report``);
* ``bot4.replay(...)`` itself — one replay as DataFrames for notebooks
  (``bot4.replay.notebook``; the parameter keys it shares with the sweep:
  ``bot4.replay.points``).
"""

import sys as _sys
import types as _types

from bot4.replay.engine import DeterministicReplay, ReplayResult
from bot4.replay.full import run_full
from bot4.replay.latency import (
    Constant,
    Empirical,
    LatencyConfig,
    LoadSpike,
    parse_latency,
)
from bot4.replay.report import Report, report_from_journal
from bot4.replay.report_metrics import equity_metrics
from bot4.replay.runner import ReplayOutcome, replay
from bot4.replay.sources import DataSource, ReplayInputError, SyntheticSource, open_source


class _CallableModule(_types.ModuleType):
    """``bot4.replay(...)`` — the notebook replay (:func:`bot4.replay.notebook.replay`),
    while ``bot4.replay`` stays this package."""

    def __call__(self, *args, **kwargs):
        from bot4.replay.notebook import replay as notebook_replay

        return notebook_replay(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "Constant",
    "DataSource",
    "DeterministicReplay",
    "Empirical",
    "LatencyConfig",
    "LoadSpike",
    "ReplayInputError",
    "ReplayOutcome",
    "ReplayResult",
    "Report",
    "SyntheticSource",
    "equity_metrics",
    "open_source",
    "parse_latency",
    "replay",
    "report_from_journal",
    "run_full",
]
