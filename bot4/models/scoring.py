"""The numba scorer of every model kind (see :mod:`bot4.models.artifact` for the arrays).

``score(lin, roots, nodes, thr, leaf, z)`` is the per-tick step the signals kernel inlines;
it allocates nothing. Tree decisions follow LightGBM's ``NumericalDecision`` exactly:
a NaN becomes 0.0 unless the split's missing type is NaN; with missing type Zero a value
within +-1e-35f, and with missing type NaN a NaN, goes the default direction; otherwise
``x <= threshold`` goes left. Trees are summed in order from the linear part (0.0 for a
tree model), as LightGBM sums them, so the score is bit-equal to
``Booster.predict(raw_score=True)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float)
DEFAULT_LEFT = 2
MISSING_ZERO = 1
MISSING_NAN = 2


@njit(nogil=True, cache=True, inline="always")
def score(lin, roots, nodes, thr, leaf, z):
    """The model's score of the signal vector ``z`` (float64)."""
    s = 0.0
    if lin.shape[0] > 0:
        s = lin[0]
        for k in range(lin.shape[0] - 1):
            s += lin[k + 1] * z[k]
    for t in range(roots.shape[0]):
        node = roots[t]
        while node >= 0:
            v = z[nodes[node, 0]]
            dt = nodes[node, 3]
            mt = (dt >> 2) & 3
            if np.isnan(v) and mt != MISSING_NAN:
                v = 0.0
            if (mt == MISSING_ZERO and -ZERO_THRESHOLD <= v <= ZERO_THRESHOLD) or (
                mt == MISSING_NAN and np.isnan(v)
            ):
                node = nodes[node, 1] if dt & DEFAULT_LEFT else nodes[node, 2]
            elif v <= thr[node]:
                node = nodes[node, 1]
            else:
                node = nodes[node, 2]
        s += leaf[~node]
    return s


@njit(nogil=True, cache=True)
def score_rows(lin, roots, nodes, thr, leaf, Z, out):
    """``out[i] = score(..., Z[i])`` for every row (parity checks, benchmarks)."""
    for i in range(Z.shape[0]):
        out[i] = score(lin, roots, nodes, thr, leaf, Z[i])
    return out


def score_matrix(model, Z: np.ndarray) -> np.ndarray:
    """Scores of the rows of ``Z`` by a :class:`bot4.models.artifact.Model`."""
    Z = np.ascontiguousarray(Z, np.float64)
    return score_rows(*model.arrays, Z, np.empty(Z.shape[0]))
