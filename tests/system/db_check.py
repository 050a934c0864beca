"""Exactly once, checked: what a journal holds against what the databases hold.

The checks live in :mod:`bot4.db.journal_check` (``perf/soak.py`` prints the same ones);
this module turns them into assertions for the system tests.
"""

from __future__ import annotations

from pathlib import Path

from bot4.db.journal_check import exactly_once_problems, journal_identities

__all__ = ["assert_exactly_once", "journal_identities"]


def assert_exactly_once(journal: Path, dsn: str, ledger_dsn: str) -> dict[str, int]:
    """Every event of the journal is in the events database once (row counts equal the
    distinct identities, the constraints forbid a second copy), every fill has balanced
    ledger legs, nothing was rejected; returns the counts."""
    figures, problems = exactly_once_problems(journal, dsn, ledger_dsn)
    assert not problems, problems
    return figures
