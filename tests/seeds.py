"""Seeds for randomised tests: a fresh one per run, printed, or ``$BOT4_TEST_SEED`` to replay.

pytest shows a failing test's captured output, so the printed seed is next to the failure;
``BOT4_TEST_SEED=<seed> pytest -k <test>`` runs it again with the same draws.
"""

from __future__ import annotations

import os
import secrets

import numpy as np


def seeded_rng(what: str) -> tuple[np.random.Generator, int]:
    """``(generator, seed)`` for the test ``what``; the seed is printed."""
    seed = int(os.environ.get("BOT4_TEST_SEED") or secrets.randbits(32))
    print(f"{what}: seed {seed} (replay with BOT4_TEST_SEED={seed})")
    return np.random.default_rng(seed), seed
