"""PostgreSQL: the embedded server, pools, migrations, the exactly-once journal loader,
two-phase commit with the ledger, and lock diagnostics.

Modules: :mod:`~bot4.db.server` (``EmbeddedPostgres``, ``resolve_dsns``) with
:mod:`~bot4.db.cluster` (its data directory), :mod:`~bot4.db.pool` (``make_pool``,
``DatabaseUnavailable``), :mod:`~bot4.db.migrate`
(``migrate``), :mod:`~bot4.db.loader` (``Loader``), :mod:`~bot4.db.twophase`
(``Coordinator``), :mod:`~bot4.db.locks` (``wait_graph``), :mod:`~bot4.db.cli`
(``bot4 db``). See ``docs/database.md``.

Importing this package imports none of them (psycopg included): the names below load
their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DatabaseUnavailable",
    "EmbeddedPostgres",
    "Loader",
    "make_pool",
    "migrate",
    "resolve_dsns",
    "wait_graph",
]

_HOME = {
    "DatabaseUnavailable": "bot4.db.pool",
    "EmbeddedPostgres": "bot4.db.server",
    "Loader": "bot4.db.loader",
    "make_pool": "bot4.db.pool",
    "migrate": "bot4.db.migrate",
    "resolve_dsns": "bot4.db.server",
    "wait_graph": "bot4.db.locks",
}


def __getattr__(name: str) -> Any:
    try:
        module = _HOME[name]
    except KeyError:
        raise AttributeError(f"module 'bot4.db' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)
