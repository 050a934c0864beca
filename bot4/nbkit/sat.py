"""Saturating int64 arithmetic: a product or sum that would overflow clamps to
``±INT64_MAX`` instead of wrapping (a wrapped notional would pass a limit check).

``INT64_MIN`` is never produced: the clamp is symmetric, so ``-x`` of a result is safe.
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit.hot import hot

__all__ = ["INT64_MAX", "INT64_MIN", "add_sat", "mul_sat"]

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


@hot
def mul_sat(a, b):
    """a * b (int64), saturating at ±INT64_MAX instead of wrapping."""
    if a == 0 or b == 0:
        return np.int64(0)
    neg = (a < 0) != (b < 0)
    if a == INT64_MIN or b == INT64_MIN or abs(a) > INT64_MAX // abs(b):
        return -INT64_MAX if neg else INT64_MAX
    return a * b


@hot
def add_sat(a, b):
    """a + b (int64), saturating at ±INT64_MAX instead of wrapping.

    Tested before adding: numba emits signed adds as ``add nsw``, so LLVM may assume a sum
    never wraps and fold a test of the wrapped result's sign away."""
    if b > 0 and a > INT64_MAX - b:
        return INT64_MAX
    if b < 0 and a < -INT64_MAX - b:
        return -INT64_MAX
    return a + b
