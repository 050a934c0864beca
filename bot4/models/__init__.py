"""Statistical models calibrated offline whose parameters the signals kernel applies per tick.

Each model is one module: a frozen parameter record with a versioned ``to_dict`` /
``from_dict``, a Python fitting function, and the small njit kernels the hot path calls.

* :mod:`bot4.models.garch` — GARCH(1,1) conditional variance, fitted by maximum likelihood
  to match the ``arch`` package; :func:`garch_update` is the per-tick step.
"""

from bot4.models.garch import (
    GARCH_VERSION,
    GarchFit,
    fit_garch,
    garch_backcast,
    garch_loglik,
    garch_update,
    garch_variance,
    gaussian_loglik,
    variance_bounds,
)

__all__ = [
    "GARCH_VERSION",
    "GarchFit",
    "fit_garch",
    "garch_backcast",
    "garch_loglik",
    "garch_update",
    "garch_variance",
    "gaussian_loglik",
    "variance_bounds",
]
