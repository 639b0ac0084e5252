"""The propensity model (ketaoutcomes.models.ps_model): the ridge fit and the rare-level rule.

Each test says what it is checked against: the penalised likelihood maximised independently by
scipy.optimize, the fit's own optimality conditions (the penalised score equations), the
unpenalised maximum likelihood as the penalty vanishes, or hand-worked cases. The comparison with
R's glmnet is tests/reference/test_ps_ridge_vs_R.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from ketaoutcomes.models.ps_model import fit_ps_model, rare_levels


def _data(seed: int = 1, n: int = 700):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(50, 12, size=n)                       # an age-like scale
    x2 = rng.poisson(3, size=n).astype(float)
    site = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    X = np.column_stack([x1, x2, site == 1, site == 2]).astype(float)
    eta = -0.4 + 0.04 * (x1 - 50) + 0.2 * (x2 - 3) + 0.6 * (site == 1) - 0.5 * (site == 2)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
    return y, X


def _scipy_ridge(y: np.ndarray, X: np.ndarray, variance: float) -> np.ndarray:
    """The penalised log-likelihood written out again and maximised by BFGS, on the raw scale:
    loglik(a + X c) - sum_j (c_j sd_j)^2 / (2 v), sd with divisor n; returns (a, c)."""
    sd = X.std(axis=0)

    def negative(theta):
        eta = theta[0] + X @ theta[1:]
        return -(np.sum(y * eta - np.logaddexp(0, eta)) - np.sum((theta[1:] * sd) ** 2) / (2 * variance))

    def gradient(theta):
        eta = theta[0] + X @ theta[1:]
        r = y - 1 / (1 + np.exp(-eta))
        return -np.r_[r.sum(), X.T @ r - theta[1:] * sd**2 / variance]

    res = optimize.minimize(negative, np.zeros(X.shape[1] + 1), jac=gradient, method="BFGS",
                            options={"gtol": 1e-10, "maxiter": 10_000})
    return res.x


@pytest.mark.parametrize("variance", [0.05, 1.0, 10.0])
def test_ridge_matches_the_penalised_likelihood_maximised_by_scipy(variance):
    y, X = _data()
    fit = fit_ps_model(y, X, model="ridge", variance=variance)
    assert fit.converged and fit.iterations < 30
    np.testing.assert_allclose(fit.coef, _scipy_ridge(y, X, variance), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fit.ps, 1 / (1 + np.exp(-(fit.coef[0] + X @ fit.coef[1:]))), rtol=1e-12)


def test_ridge_solves_its_penalised_score_equations():
    """Optimality: with z the standardised columns and b their coefficients, sum (y - p) = 0 and
    z'(y - p) = b / v. In words: overlap weights (1 - p on the target, p on the comparator) balance
    each standardised covariate up to b / v, no longer exactly as for the unpenalised fit."""
    y, X = _data(seed=3)
    v = 0.5
    fit = fit_ps_model(y, X, model="ridge", variance=v)
    z = (X - X.mean(axis=0)) / X.std(axis=0)
    b = fit.coef[1:] * X.std(axis=0)
    r = y - fit.ps
    assert abs(r.sum()) < 1e-8
    np.testing.assert_allclose(z.T @ r, b / v, atol=1e-8)


def test_ridge_tends_to_the_maximum_likelihood_fit_as_the_variance_grows():
    y, X = _data(seed=4)
    mle = fit_ps_model(y, X, model="logistic")
    loose = fit_ps_model(y, X, model="ridge", variance=1e6)
    tight = fit_ps_model(y, X, model="ridge", variance=1e-3)
    np.testing.assert_allclose(loose.coef, mle.coef, rtol=1e-4, atol=1e-6)
    # a strong penalty shrinks every slope towards 0 (the intercept is not penalised)
    assert np.all(np.abs(tight.coef[1:]) < np.abs(mle.coef[1:]))
    assert abs(tight.ps.mean() - y.mean()) < 1e-8


def test_ridge_is_finite_where_maximum_likelihood_runs_off_to_infinity():
    """A level held only by the comparator arm (quasi-complete separation)."""
    y, X = _data(seed=5)
    rare = np.zeros(len(y))
    rare[np.flatnonzero(y == 0)[:9]] = 1.0
    X = np.column_stack([X, rare])
    mle = fit_ps_model(y, X, model="logistic")
    ridge = fit_ps_model(y, X, model="ridge", variance=10.0)
    assert not mle.converged
    assert ridge.converged and np.all(np.isfinite(ridge.coef)) and -15 < ridge.coef[-1] < -1
    assert np.all((ridge.ps > 0) & (ridge.ps < 1))


def test_fit_options_are_checked_and_a_constant_column_is_a_fit_that_says_why():
    y, X = _data()
    with pytest.raises(ValueError):
        fit_ps_model(y, X, model="lasso")
    with pytest.raises(ValueError):
        fit_ps_model(y, X, variance=0)
    bad = fit_ps_model(y, np.column_stack([X, np.ones(len(y))]))
    assert bad.ps is None and not bad.converged and "could not be fitted" in bad.notes[0]
    no_columns = fit_ps_model(y, np.empty((len(y), 0)))
    assert no_columns.converged and np.allclose(no_columns.ps, y.mean())


# --------------------------------------------------------------------------- rare levels
def test_rare_levels_are_left_out_rarest_first_while_together_below_the_threshold():
    """Worked by hand, 1,000 patients, threshold 2%: U (9) then X (10) together 1.9% < 2%; adding
    Y (11) would make 3%."""
    counts = {"F": 600, "M": 370, "U": 9, "X": 10, "Y": 11}
    assert rare_levels(counts, "F", 0.02) == ["U", "X"]
    assert rare_levels(counts, "F", 0.0) == []
    assert rare_levels(counts, "F", 0.019) == ["U"]      # 0.9% alone; with X 1.9% is not below 1.9%
    # ties by label: A before B (together 1%, so a 1% threshold leaves out A alone)
    assert rare_levels({"A": 5, "B": 5, "C": 990}, "C", 0.011) == ["A", "B"]
    assert rare_levels({"A": 5, "B": 5, "C": 990}, "C", 0.01) == ["A"]
    # the reference level is never left out
    assert rare_levels({"A": 990, "B": 10}, "A", 0.49) == ["B"]
    # many small levels (60 sites of 1.7%): only the first fits under 2% in total, not all of them
    sites = {f"S{i:02d}": 17 for i in range(60)} | {"S99": 0}
    assert rare_levels({k: v for k, v in sites.items() if v}, "S00", 0.02) == ["S01"]
