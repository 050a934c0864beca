"""Unit tests of bot4.models.garch against the ``arch`` package (the model to compare with).

Parity, per series and mean model: our log-likelihood is at least arch's less 1e-6 relative
(equal, or a better optimum); parameters within 1e-3 of arch's where the likelihood is
well curved, persistence (alpha + beta) within 1e-3 where it is flat or near-integrated.
``python tests/unit/test_garch.py`` prints the parity table.
"""

from __future__ import annotations

import functools
import json
import math
import warnings

import numpy as np
import pytest
from arch import arch_model

from bot4.models.garch import (
    GARCH_VERSION,
    GarchFit,
    _neg_loglik_grad,
    fit_garch,
    garch_backcast,
    garch_loglik,
    garch_update,
    garch_variance,
    variance_bounds,
)

LOGLIK_RTOL = 1e-6
PARAM_ATOL = 1e-3
MEANS = ("zero", "constant")
ARCH_MEAN = {"zero": "Zero", "constant": "Constant"}

# name: (omega, alpha, beta, mu, student-t df or None, seed, compare) in percent returns;
# compare "params" checks each parameter, "persistence" only alpha + beta.
SIMULATED = {
    "well_conditioned": (0.05, 0.08, 0.90, 0.03, None, 1, "params"),
    "near_integrated": (0.01, 0.07, 0.929, 0.03, None, 2, "persistence"),
    "heavy_tailed_t4": (0.05, 0.08, 0.90, 0.03, 4, 3, "params"),
    "weakly_persistent": (0.2, 0.05, 0.30, 0.03, None, 4, "persistence"),
}
SERIES = (*SIMULATED, "sp500")
COMPARE = {**{k: v[-1] for k, v in SIMULATED.items()}, "sp500": "params"}


def simulate(n, omega, alpha, beta, mu, df, seed, burn=500):
    """Percent returns from a GARCH(1,1) with unit-variance Gaussian or Student-t shocks."""
    rng = np.random.default_rng(seed)
    if df is None:
        z = rng.standard_normal(n + burn)
    else:
        z = rng.standard_t(df, n + burn) / math.sqrt(df / (df - 2.0))
    s2 = omega / (1.0 - alpha - beta)
    out = np.empty(n + burn)
    for t in range(n + burn):
        e = math.sqrt(s2) * z[t]
        out[t] = mu + e
        s2 = omega + alpha * e * e + beta * s2
    return out[burn:]


@functools.cache
def returns(name):
    if name == "sp500":
        from arch.data import sp500

        data = sp500.load()
        r = 100 * data["Adj Close"].pct_change().dropna()
        return r.to_numpy(dtype=np.float64)
    omega, alpha, beta, mu, df, seed, _ = SIMULATED[name]
    return simulate(3000, omega, alpha, beta, mu, df, seed)


def arch_spec(r, mean):
    return arch_model(r, mean=ARCH_MEAN[mean], vol="GARCH", p=1, q=1, dist="normal", rescale=False)


@functools.cache
def arch_fit(name, mean):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return arch_spec(returns(name), mean).fit(disp="off")


@functools.cache
def our_fit(name, mean):
    return fit_garch(returns(name), mean)


def arch_params(res):
    p = res.params
    return np.array([p.get("mu", 0.0), p["omega"], p["alpha[1]"], p["beta[1]"]])


def our_params(fit):
    return np.array([fit.mu, fit.omega, fit.alpha, fit.beta])


def start_resids(r, mean):
    """The residuals arch builds its backcast from: r, or r less its sample mean."""
    return r - r.mean() if mean == "constant" else r


CASES = [(name, mean) for name in SERIES for mean in MEANS]
CASE_IDS = [f"{name}-{mean}" for name, mean in CASES]


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize(("name", "mean"), CASES, ids=CASE_IDS)
def test_loglik_at_least_arch(name, mean):
    ours, theirs = our_fit(name, mean), arch_fit(name, mean)
    assert ours.loglik >= theirs.loglikelihood - LOGLIK_RTOL * abs(theirs.loglikelihood)
    assert ours.converged
    assert ours.nobs == returns(name).shape[0]


@pytest.mark.parametrize(("name", "mean"), CASES, ids=CASE_IDS)
def test_parameters_match_arch(name, mean):
    ours, theirs = our_params(our_fit(name, mean)), arch_params(arch_fit(name, mean))
    if COMPARE[name] == "params":
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=PARAM_ATOL)
    else:
        assert abs((ours[2] + ours[3]) - (theirs[2] + theirs[3])) <= PARAM_ATOL
    if mean == "zero":
        assert ours[0] == 0.0


@pytest.mark.parametrize(("name", "mean"), CASES, ids=CASE_IDS)
def test_reported_loglik_is_archs_likelihood_at_our_parameters(name, mean):
    fit = our_fit(name, mean)
    params = our_params(fit) if mean == "constant" else our_params(fit)[1:]
    fixed = arch_spec(returns(name), mean).fix(params)
    assert fit.loglik == pytest.approx(fixed.loglikelihood, rel=1e-10)


@pytest.mark.parametrize(("name", "mean"), CASES, ids=CASE_IDS)
def test_backcast_matches_arch(name, mean):
    r = returns(name)
    resids = start_resids(r, mean)
    theirs = arch_spec(r, mean).volatility.backcast(resids)
    assert garch_backcast(resids) == pytest.approx(theirs, rel=1e-12)
    assert our_fit(name, mean).backcast == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize(("name", "mean"), CASES, ids=CASE_IDS)
def test_variance_path_matches_arch(name, mean):
    r = returns(name)
    res = arch_fit(name, mean)
    mu, omega, alpha, beta = arch_params(res)
    eps = r - mu
    sigma2 = garch_variance(
        eps, omega, alpha, beta, garch_backcast(start_resids(r, mean)), np.empty_like(eps)
    )
    np.testing.assert_allclose(
        sigma2, np.asarray(res.conditional_volatility) ** 2, rtol=1e-9, atol=0
    )


def test_variance_bounds_match_arch():
    r = returns("sp500")
    theirs = arch_spec(r, "zero").volatility.variance_bounds(r)
    np.testing.assert_allclose(variance_bounds(r), theirs, rtol=1e-12, atol=0)


def test_backcast_of_short_series_uses_every_observation():
    r = np.array([1.0, -2.0, 0.5])
    w = 0.94 ** np.arange(3)
    assert garch_backcast(r) == pytest.approx(float(np.sum(w * r**2) / w.sum()), rel=1e-15)
    assert garch_backcast(r) == pytest.approx(
        arch_spec(r, "zero").volatility.backcast(r), rel=1e-15
    )


# --------------------------------------------------------------------------- kernels


def test_per_tick_update_reproduces_the_batch_path_exactly():
    r = returns("well_conditioned")
    fit = our_fit("well_conditioned", "constant")
    path = fit.variance_path(r)
    state, last_eps2 = fit.backcast, fit.backcast
    for t in range(r.shape[0]):
        state = garch_update(state, last_eps2, fit.omega, fit.alpha, fit.beta)
        assert state == path[t]
        last_eps2 = (r[t] - fit.mu) ** 2


def test_loglik_kernel_matches_gaussian_formula():
    r = returns("heavy_tailed_t4")
    sigma2 = np.empty_like(r)
    ll = garch_loglik(r, 0.05, 0.08, 0.9, garch_backcast(r), sigma2)
    expected = -0.5 * np.sum(np.log(2 * np.pi) + np.log(sigma2) + r**2 / sigma2)
    assert ll == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "theta",
    [(0.03, 0.05, 0.08, 0.9), (-0.2, 0.3, 0.2, 0.5), (0.0, 0.01, 0.01, 0.98)],
)
def test_analytic_gradient_matches_central_differences(theta):
    r = returns("well_conditioned")
    resids = r - r.mean()
    bc, vb = garch_backcast(resids), variance_bounds(resids)
    sigma2, grad, scratch = np.empty_like(r), np.empty(4), np.empty(4)
    _neg_loglik_grad(r, theta, bc, vb, sigma2, grad)
    for i in range(4):
        h = 1e-6 * max(1.0, abs(theta[i]))
        up, dn = list(theta), list(theta)
        up[i] += h
        dn[i] -= h
        fd = (
            _neg_loglik_grad(r, tuple(up), bc, vb, sigma2, scratch)
            - _neg_loglik_grad(r, tuple(dn), bc, vb, sigma2, scratch)
        ) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-4)


# --------------------------------------------------------------------------- fit API


def test_fit_on_returns_times_a_power_of_two_is_exactly_equivariant():
    r = returns("well_conditioned")
    pct, scaled = our_fit("well_conditioned", "constant"), fit_garch(r * 2.0**-7, "constant")
    assert scaled.mu * 2.0**7 == pct.mu
    assert scaled.omega * 4.0**7 == pct.omega
    assert (scaled.alpha, scaled.beta) == (pct.alpha, pct.beta)
    assert scaled.backcast * 4.0**7 == pct.backcast
    assert scaled.loglik == pytest.approx(pct.loglik + r.shape[0] * 7 * math.log(2.0), rel=1e-13)


def test_fit_on_fractions_matches_fit_on_percent():
    r = returns("well_conditioned")
    pct, frac = our_fit("well_conditioned", "constant"), fit_garch(r / 100.0, "constant")
    # The optimiser path differs (1/100 is not a power of two): equal to its tolerance,
    # far inside the standard errors (mu ~1e-2, omega ~1e-2, alpha and beta ~1e-2).
    assert frac.mu * 100.0 == pytest.approx(pct.mu, abs=1e-5)
    assert frac.omega * 1e4 == pytest.approx(pct.omega, abs=1e-5)
    assert frac.alpha == pytest.approx(pct.alpha, abs=1e-5)
    assert frac.beta == pytest.approx(pct.beta, abs=1e-5)
    assert frac.backcast * 1e4 == pytest.approx(pct.backcast, rel=1e-12)
    assert frac.loglik == pytest.approx(pct.loglik + r.shape[0] * math.log(100.0), rel=1e-10)


def test_parameter_file_round_trips_through_json():
    fit = our_fit("sp500", "constant")
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["garch_version"] == GARCH_VERSION == 1
    assert GarchFit.from_dict(d) == fit
    assert fit.persistence == fit.alpha + fit.beta
    assert fit.unconditional_variance == pytest.approx(fit.omega / (1 - fit.persistence))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"garch_version": 2}, "version"),
        ({"omega": 0.0}, "out of range"),
        ({"alpha": 0.6, "beta": 0.5}, "out of range"),
        ({"beta": float("nan")}, "finite"),
    ],
)
def test_parameter_file_rejects_bad_versions_and_ranges(change, match):
    d = {**our_fit("well_conditioned", "zero").to_dict(), **change}
    with pytest.raises(ValueError, match=match):
        GarchFit.from_dict(d)


@pytest.mark.parametrize(
    ("r", "mean", "match"),
    [
        (np.ones(100), "zero", "zero variance"),
        (np.array([1.0, np.nan, 2.0]), "zero", "finite"),
        (np.ones((10, 2)), "zero", "1-d"),
        (np.arange(10.0), "ar1", "mean"),
    ],
)
def test_fit_rejects_bad_input(r, mean, match):
    with pytest.raises(ValueError, match=match):
        fit_garch(r, mean)


if __name__ == "__main__":
    print(
        f"{'series':20s} {'mean':9s} {'rel loglik (ours-arch)/|arch|':>30s} {'max |dparam|':>13s} {'|dpersist|':>11s}"
    )
    for name, mean in CASES:
        ours, theirs = our_fit(name, mean), arch_fit(name, mean)
        a, b = arch_params(theirs), our_params(ours)
        rel = (ours.loglik - theirs.loglikelihood) / abs(theirs.loglikelihood)
        print(
            f"{name:20s} {mean:9s} {rel:+30.3e} {np.max(np.abs(a - b)):13.2e} "
            f"{abs(a[2] + a[3] - b[2] - b[3]):11.2e}"
        )
