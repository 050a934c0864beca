"""Where the shared LOBSTER samples are, and what to do when they are not there.

CI has ``../shared`` beside its clone, so tests that use the data never skip there: with
``CI=true`` a missing folder fails the test. Elsewhere they skip, saying why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LOBSTER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lobster-2012-06-21"


def lobster_dir() -> Path:
    if not LOBSTER.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                f"LOBSTER sample data missing at {LOBSTER} (CI must have ../shared beside its clone)"
            )
        pytest.skip(
            f"LOBSTER sample data not found at {LOBSTER} (expected ../shared beside the clone)"
        )
    return LOBSTER
