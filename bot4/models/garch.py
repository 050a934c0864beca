"""GARCH(1,1) with Gaussian errors: calibrated offline, updated per tick in the signals kernel.

Model, for returns ``r[t]`` and residuals ``eps[t] = r[t] - mu``::

    sigma2[t] = omega + alpha * eps[t-1]**2 + beta * sigma2[t-1]
    loglik    = -0.5 * sum(log(2*pi) + log(sigma2[t]) + eps[t]**2 / sigma2[t])

The fit reproduces ``arch.arch_model(r, mean="Zero"|"Constant", vol="GARCH", p=1, q=1,
dist="normal", rescale=False).fit()`` (arch 8.0):

* **start of the recursion** — at ``t = 0`` both "previous" values (``eps[-1]**2`` and
  ``sigma2[-1]``) are the *backcast*: the exponentially weighted mean of the first
  ``tau = min(75, nobs)`` squared residuals, weights ``0.94**i`` normalised to sum to 1.
  So ``sigma2[0] = omega + (alpha + beta) * backcast``, not the backcast itself;
* **the backcast is fixed** — computed once from the starting residuals (``r`` for the zero
  mean, ``r - mean(r)`` for the constant mean) and not re-computed as ``mu`` moves;
* **variance bounds** — while fitting, each ``sigma2[t]`` is kept inside arch's loose
  per-period bounds (EWMA variance / 1e6 .. * 1e6, see :func:`variance_bounds`), which only
  bind at absurd parameter values and keep the likelihood finite along the way;
* **constraints** — ``omega`` in ``[1e-8 v, 10 v]`` (``v`` = mean squared starting
  residual), ``alpha, beta`` in ``[0, 1]``, ``alpha + beta <= 1`` (an integrated fit is
  allowed, as in arch). SLSQP may end a hair outside; arch reports that point (``alpha +
  beta`` up to ~1e-7 above 1, a log-likelihood ~1e-8 relative higher than feasible), this
  module projects it back onto the constraints first;
* **optimiser** — SLSQP, as arch, but with the analytic gradient and from several starts:
  arch's own (the best of its 16-point grid) and the best point of each other persistence
  level, see :func:`_starting_values`. The highest log-likelihood wins, so the result is
  arch's optimum or a better one where the likelihood has several local maxima.

Units: whatever the returns are in. The fit is scale-equivariant: returns times ``c`` give
``mu`` times ``c``, ``omega`` times ``c**2``, the same ``alpha`` and ``beta``, and a
log-likelihood lower by ``nobs * log(c)``. arch users usually pass *percent* returns; fractions
work as well, because the optimiser runs on the returns times a power of two (exact in binary
floating point) chosen to bring their variance near 1, and everything reported — parameters,
backcast, log-likelihood — is mapped back exactly and evaluated on the returns as given.

Kernels (``@njit(nogil=True, cache=True)``) take preallocated output arrays and allocate
nothing; setup, validation and the optimiser stay in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

GARCH_VERSION = 1  # "garch_version" of the parameter file written by GarchFit.to_dict
MEANS = ("zero", "constant")
LOG_2PI = math.log(2.0 * math.pi)

BACKCAST_TAU = 75  # observations in the backcast window (arch)
EWMA_LAMBDA = 0.94  # decay of the backcast weights and of the variance-bound EWMA (arch)
SV_ALPHAS = (0.01, 0.05, 0.1, 0.2)  # arch's starting-value grid: alpha
SV_PERSISTENCE = (0.5, 0.7, 0.9, 0.98)  # ... times alpha + beta
SV_LOW_PERSISTENCE = 0.2  # an extra level for the low-persistence basin (not in arch's grid)
FTOL = 1e-12  # SLSQP tolerance on the mean negative log-likelihood per observation
MAXITER = 500  # SLSQP iterations per start (a well-posed fit takes 10-40)
SAME_BASIN = 1e-2  # a later start within this of the incumbent (every coordinate) is dropped


# --------------------------------------------------------------------------- kernels


@njit(nogil=True, cache=True)
def garch_update(state_sigma2, last_eps2, omega, alpha, beta):
    """One step of the recursion: ``sigma2[t]`` from ``sigma2[t-1]`` and ``eps[t-1]**2``.

    The per-tick update of the signals kernel; same units as the fit (variance of returns).
    """
    return omega + alpha * last_eps2 + beta * state_sigma2


@njit(nogil=True, cache=True)
def garch_variance(eps, omega, alpha, beta, backcast, sigma2):
    """Fill ``sigma2`` (len(eps)) with the conditional variances of residuals ``eps``.

    ``backcast`` stands in for both ``eps[-1]**2`` and ``sigma2[-1]``. No bounds are applied:
    this is the model's own path (arch's ``conditional_volatility**2`` wherever its bounds
    do not bind, i.e. at any sensible parameters). Returns ``sigma2``.
    """
    prev_eps2 = backcast
    prev_sigma2 = backcast
    for t in range(eps.shape[0]):
        s2 = omega
        s2 += alpha * prev_eps2
        s2 += beta * prev_sigma2
        sigma2[t] = s2
        prev_eps2 = eps[t] * eps[t]
        prev_sigma2 = s2
    return sigma2


@njit(nogil=True, cache=True)
def gaussian_loglik(eps, sigma2):
    """Gaussian log-likelihood of residuals ``eps`` given their variances ``sigma2``."""
    acc = 0.0
    for t in range(eps.shape[0]):
        acc += LOG_2PI + math.log(sigma2[t]) + eps[t] * eps[t] / sigma2[t]
    return -0.5 * acc


@njit(nogil=True, cache=True)
def garch_loglik(eps, omega, alpha, beta, backcast, sigma2):
    """Log-likelihood of the unbounded GARCH(1,1) path; ``sigma2`` is filled as a by-product."""
    garch_variance(eps, omega, alpha, beta, backcast, sigma2)
    return gaussian_loglik(eps, sigma2)


@njit(nogil=True, cache=True)
def _neg_loglik_grad(y, theta, backcast, var_bounds, sigma2, grad):
    """Negative log-likelihood at ``theta = (mu, omega, alpha, beta)`` (a tuple of floats)
    and its gradient.

    Residuals are ``y - mu``; each variance goes through arch's bounds check (below the lower
    bound: the bound; above the upper bound ``u``: ``u + log(s2 / u)``), differentiated
    alongside. ``grad`` (4,) receives d/d(mu, omega, alpha, beta); the backcast does not
    depend on ``mu``. One pass, no allocation.
    """
    mu, omega, alpha, beta = theta
    prev_eps = 0.0
    prev_eps2 = backcast
    prev_sigma2 = backcast
    d_mu = 0.0
    d_om = 0.0
    d_al = 0.0
    d_be = 0.0
    g_mu = 0.0
    g_om = 0.0
    g_al = 0.0
    g_be = 0.0
    acc = 0.0
    for t in range(y.shape[0]):
        raw = omega
        raw += alpha * prev_eps2
        raw += beta * prev_sigma2
        r_mu = beta * d_mu
        if t > 0:
            r_mu += -2.0 * alpha * prev_eps
        r_om = 1.0 + beta * d_om
        r_al = prev_eps2 + beta * d_al
        r_be = prev_sigma2 + beta * d_be
        lo = var_bounds[t, 0]
        hi = var_bounds[t, 1]
        if raw < lo:
            s2 = lo
            d_mu = 0.0
            d_om = 0.0
            d_al = 0.0
            d_be = 0.0
        elif raw > hi:
            if raw > 1.7976931348623157e308:
                s2 = hi + 1000.0
                d_mu = 0.0
                d_om = 0.0
                d_al = 0.0
                d_be = 0.0
            else:
                s2 = hi + math.log(raw / hi)
                d_mu = r_mu / raw
                d_om = r_om / raw
                d_al = r_al / raw
                d_be = r_be / raw
        else:
            s2 = raw
            d_mu = r_mu
            d_om = r_om
            d_al = r_al
            d_be = r_be
        sigma2[t] = s2
        e = y[t] - mu
        e2 = e * e
        inv = 1.0 / s2
        acc += LOG_2PI + math.log(s2) + e2 * inv
        w = 0.5 * inv * (1.0 - e2 * inv)
        g_mu += w * d_mu - e * inv
        g_om += w * d_om
        g_al += w * d_al
        g_be += w * d_be
        prev_eps = e
        prev_eps2 = e2
        prev_sigma2 = s2
    grad[0] = g_mu
    grad[1] = g_om
    grad[2] = g_al
    grad[3] = g_be
    return 0.5 * acc


# --------------------------------------------------------------------------- setup


def garch_backcast(resids: np.ndarray) -> float:
    """arch's ``GARCH.backcast``: EWMA (0.94) of the first ``min(75, n)`` squared residuals.

    Written as arch writes it, so the value is the same to the last bit.
    """
    resids = np.asarray(resids, dtype=np.float64)
    tau = min(BACKCAST_TAU, resids.shape[0])
    w = EWMA_LAMBDA ** np.arange(tau)
    w = w / sum(w)
    return float(np.sum((np.absolute(resids[:tau]) ** 2.0) * w))


def variance_bounds(resids: np.ndarray) -> np.ndarray:
    """arch's per-period bounds on the conditional variance while fitting, shape (n, 2).

    An EWMA (0.94) variance ``v[t]`` started at the backcast gives ``[v / 1e6, v * 1e6]``,
    then the lower bound is raised to at least ``var(resids) / 1e8`` and the upper bound
    held within ``[1 + max(resids**2), 1e7 * (1 + max(resids**2))]``.
    """
    resids = np.ascontiguousarray(resids, dtype=np.float64)
    nobs = resids.shape[0]
    tau = min(BACKCAST_TAU, nobs)
    w = EWMA_LAMBDA ** np.arange(tau)
    w = w / sum(w)
    ewma = np.zeros(nobs)
    garch_variance(resids, 0.0, 1.0 - EWMA_LAMBDA, EWMA_LAMBDA, w.dot(resids[:tau] ** 2.0), ewma)
    bounds = np.vstack((ewma / 1e6, ewma * 1e6)).T
    max_sq = float(np.max(resids**2.0))
    lower, upper = float(np.var(resids)) / 1e8, 1e7 * (1.0 + max_sq)
    bounds[bounds[:, 0] < lower, 0] = lower
    bounds[bounds[:, 1] < 1.0 + max_sq, 1] = 1.0 + max_sq
    bounds[bounds[:, 1] > upper, 1] = upper
    return np.ascontiguousarray(bounds)


@dataclass(frozen=True)
class GarchFit:
    """Calibrated GARCH(1,1) parameters, in the units of the returns that were fitted.

    ``mu`` (return units; 0.0 for the zero mean), ``omega`` (return units squared),
    ``alpha``, ``beta`` (dimensionless), ``loglik`` (Gaussian, at these parameters, with
    arch's variance bounds), ``backcast`` (return units squared: ``eps[-1]**2`` and
    ``sigma2[-1]`` for the first observation), ``nobs`` (returns fitted), ``converged``
    (the optimiser's own success flag for the kept run).
    """

    mu: float
    omega: float
    alpha: float
    beta: float
    loglik: float
    backcast: float
    nobs: int
    converged: bool

    @property
    def persistence(self) -> float:
        """``alpha + beta``: how slowly a variance shock decays (1.0 = integrated)."""
        return self.alpha + self.beta

    @property
    def unconditional_variance(self) -> float:
        """``omega / (1 - alpha - beta)``; ``inf`` for an integrated fit."""
        gap = 1.0 - self.persistence
        return self.omega / gap if gap > 0.0 else math.inf

    def variance_path(self, returns: np.ndarray) -> np.ndarray:
        """Conditional variances of ``returns`` under these parameters (unbounded recursion)."""
        eps = np.ascontiguousarray(returns, dtype=np.float64) - self.mu
        return garch_variance(
            eps, self.omega, self.alpha, self.beta, self.backcast, np.empty_like(eps)
        )

    def to_dict(self) -> dict:
        """The versioned parameter file: plain JSON/TOML-able scalars."""
        return {
            "garch_version": GARCH_VERSION,
            "model": "GARCH(1,1)",
            "dist": "normal",
            "mu": float(self.mu),
            "omega": float(self.omega),
            "alpha": float(self.alpha),
            "beta": float(self.beta),
            "loglik": float(self.loglik),
            "backcast": float(self.backcast),
            "nobs": int(self.nobs),
            "converged": bool(self.converged),
        }

    @classmethod
    def from_dict(cls, d: dict) -> GarchFit:
        """Read a parameter file written by :meth:`to_dict`; validates version and ranges."""
        version = d.get("garch_version")
        if version != GARCH_VERSION:
            raise ValueError(f"garch parameter file version {version!r}: expected {GARCH_VERSION}")
        fit = cls(
            mu=float(d["mu"]),
            omega=float(d["omega"]),
            alpha=float(d["alpha"]),
            beta=float(d["beta"]),
            loglik=float(d["loglik"]),
            backcast=float(d["backcast"]),
            nobs=int(d["nobs"]),
            converged=bool(d["converged"]),
        )
        values = (fit.mu, fit.omega, fit.alpha, fit.beta, fit.backcast)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"garch parameters must be finite: {d!r}")
        if not (
            fit.omega > 0.0 and fit.alpha >= 0.0 and fit.beta >= 0.0 and fit.persistence <= 1.0
        ):
            raise ValueError(
                "garch parameters out of range (need omega > 0, alpha >= 0, beta >= 0, "
                f"alpha + beta <= 1): {d!r}"
            )
        return fit


def _starting_values(resids: np.ndarray, backcast: float, var_bounds: np.ndarray) -> list:
    """Starting (omega, alpha, beta) points: arch's own start, then one per persistence level.

    arch scores its 16-point grid (alpha x persistence, omega from variance targeting) by
    log-likelihood and starts from the best point only. The likelihood can have more than one
    local maximum — typically a persistent one and a low-persistence, ARCH-like one — and
    the grid's best point tends to sit in the persistent basin. So the optimiser also starts
    from the best alpha at every other persistence level, plus a low level (0.2) that arch's
    grid lacks.
    """
    target = float(np.mean(np.absolute(resids) ** 2.0))
    sigma2 = np.empty_like(resids)
    grad = np.empty(4)
    levels = []
    for agb in (*SV_PERSISTENCE, SV_LOW_PERSISTENCE):
        level = []
        for alpha in SV_ALPHAS:
            sv = ((1.0 - agb) * target, alpha, agb - alpha)
            level.append(
                (_neg_loglik_grad(resids, (0.0, *sv), backcast, var_bounds, sigma2, grad), sv)
            )
        levels.append(min(level, key=lambda s: s[0]))
    arch_start = min(levels[: len(SV_PERSISTENCE)], key=lambda s: s[0])
    return [arch_start[1]] + [s[1] for s in levels if s is not arch_start]


def fit_garch(returns: np.ndarray, mean: str = "zero") -> GarchFit:
    """Maximum-likelihood GARCH(1,1) with Gaussian errors, as arch fits it (see module doc).

    ``returns``: 1-d, finite, at least 2 values, not all equal; any units (see module doc).
    ``mean``: ``"zero"`` (``eps = returns``) or ``"constant"`` (``eps = returns - mu``, ``mu``
    estimated). SLSQP with the analytic gradient runs from each of :func:`_starting_values`
    (arch's own start first); the highest log-likelihood is kept.
    """
    from scipy.optimize import minimize

    if mean not in MEANS:
        raise ValueError(f"garch mean {mean!r}: expected one of {MEANS}")
    y = np.array(returns, dtype=np.float64)  # a private, writable, contiguous copy
    if y.ndim != 1 or y.shape[0] < 2:
        raise ValueError(f"garch returns must be 1-d with at least 2 values, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("garch returns must be finite")
    nobs = y.shape[0]
    has_mu = mean == "constant"
    mu0 = float(np.mean(y)) if has_mu else 0.0
    resids0 = y - mu0
    var0 = float(np.var(resids0))
    if not var0 > 0.0:
        raise ValueError("garch returns have zero variance")

    # Optimise on returns * 2**k with variance near 1: binary scaling is exact, so the
    # scaled residuals, backcast and bounds are the originals times 2**k, bit for bit.
    scale = math.ldexp(1.0, -round(math.log2(var0) / 2.0))
    ys = y * scale
    rs0 = ys - mu0 * scale
    backcast_s = garch_backcast(rs0)
    var_bounds_s = variance_bounds(rs0)
    v = float(np.mean(np.absolute(rs0) ** 2.0))

    sigma2 = np.empty(nobs)
    grad = np.empty(4)
    first = 0 if has_mu else 1  # x is (mu, omega, alpha, beta) or (omega, alpha, beta)

    def objective(x):
        mu = x[0] if has_mu else 0.0
        theta = (mu, x[-3], x[-2], x[-1])
        nll = _neg_loglik_grad(ys, theta, backcast_s, var_bounds_s, sigma2, grad)
        return nll / nobs, grad[first:] / nobs

    c = np.zeros(4 - first)
    c[-2:] = -1.0
    constraints = [{"type": "ineq", "fun": lambda x: 1.0 + c @ x, "jac": lambda x: c}]
    bounds = [(-np.inf, np.inf)] * (1 - first) + [(1e-8 * v, 10.0 * v), (0.0, 1.0), (0.0, 1.0)]
    lo, hi = np.array(bounds).T

    best = None
    joined = [False]

    def joined_incumbent(intermediate_result):
        # A later start that walks into the incumbent's neighbourhood would only find its
        # optimum again; stopping it there keeps multi-start at about the cost of two runs.
        if best is not None and np.max(np.abs(intermediate_result.x - best[1])) < SAME_BASIN:
            joined[0] = True
            raise StopIteration

    for sv in _starting_values(rs0, backcast_s, var_bounds_s):
        joined[0] = False
        x0 = np.array(((mu0 * scale,) if has_mu else ()) + sv)
        opt = minimize(
            objective,
            x0,
            jac=True,
            method="SLSQP",
            bounds=bounds,
            constraints=constraints,
            callback=joined_incumbent,
            options={"ftol": FTOL, "maxiter": MAXITER},
        )
        if joined[0]:
            continue
        x = np.clip(opt.x, lo, hi)
        if x[-2] + x[-1] > 1.0:
            x[-1] = 1.0 - x[-2]
            while x[-2] + x[-1] > 1.0:
                x[-1] = np.nextafter(x[-1], 0.0)
        fun = objective(x)[0]
        if np.isfinite(fun) and (best is None or fun < best[0]):
            best = (fun, x, bool(opt.success))
    if best is None:
        raise RuntimeError("garch fit failed from every starting value")
    _, x, converged = best

    mu = float(x[0]) / scale if has_mu else 0.0
    omega = float(x[-3]) / (scale * scale)
    alpha, beta = float(x[-2]), float(x[-1])
    backcast = garch_backcast(resids0)
    nll = _neg_loglik_grad(
        y, (mu, omega, alpha, beta), backcast, variance_bounds(resids0), sigma2, grad
    )
    return GarchFit(
        mu=mu,
        omega=omega,
        alpha=alpha,
        beta=beta,
        loglik=-float(nll),
        backcast=backcast,
        nobs=nobs,
        converged=converged,
    )
