"""ketaoutcomes.models.cox_engine without R: against statsmodels' PHReg (the previous engine), against
the definition of case weights (duplicated rows), and its score residuals against refits with one
row's weight nudged (the derivative they are). The comparison with R is tests/reference/test_cox_engine_vs_R.py.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from statsmodels.duration.hazard_regression import PHReg

from ketaoutcomes.models import cox_ph
from ketaoutcomes.models.cox_engine import fit_cox, partial_likelihood, risk_sets, robust_variance, score_residuals


def _data(seed: int = 1, n: int = 400, p: int = 3, strata: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    X[:, -1] = rng.integers(0, 2, n)
    time = np.ceil(rng.exponential(10, n))  # whole days: many ties
    status = (rng.uniform(size=n) < 0.7).astype(int)
    s = rng.integers(0, strata, n)
    entry = np.where(rng.uniform(size=n) < 0.3, np.floor((time - 1) * rng.uniform(size=n)), 0.0)
    w = rng.uniform(0.3, 3.0, n)
    return X, time, status, s, entry, w


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("with_strata", [False, True])
@pytest.mark.parametrize("with_entry", [False, True])
def test_likelihood_score_information_match_statsmodels_phreg(ties, with_strata, with_entry):
    X, time, status, s, entry, _ = _data()
    strata = s if with_strata else None
    e = entry if with_entry else None
    # PHReg counts a row at risk from t >= entry, R (and the engine) from t > entry: shift its entry by 1 ulp
    ref = PHReg(time, X, status=status, strata=strata, ties=ties, entry=None if e is None else np.nextafter(e, np.inf))
    rs = risk_sets(time, status, X, entry=e, strata=strata, ties=ties)
    for beta in (np.zeros(3), np.array([0.3, -0.2, 0.5])):
        ll, u, info = partial_likelihood(rs, beta)
        assert ll == pytest.approx(ref.loglike(beta), rel=1e-12)
        np.testing.assert_allclose(u, ref.score(beta), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(info, -ref.hessian(beta), rtol=1e-10)
    fit = fit_cox(rs)
    sm = ref.fit()
    np.testing.assert_allclose(fit.beta, sm.params, rtol=1e-10)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.var)), sm.bse, rtol=1e-10)


def test_many_strata_match_statsmodels_phreg():
    X, time, status, s, _, _ = _data(seed=3, n=3000, strata=200)
    rs = risk_sets(time, status, X, strata=s)
    ref = PHReg(time, X, status=status, strata=s, ties="efron")
    beta = np.array([0.1, 0.2, -0.3])
    ll, u, info = partial_likelihood(rs, beta)
    assert ll == pytest.approx(ref.loglike(beta), rel=1e-12)
    np.testing.assert_allclose(info, -ref.hessian(beta), rtol=1e-10)


def test_breslow_weight_two_equals_a_duplicated_row():
    """Case weights by definition: with Breslow ties a row of weight 2 is the row twice."""
    X, time, status, s, entry, _ = _data(seed=4, n=200)
    w = np.where(np.arange(200) % 3 == 0, 2.0, 1.0)
    dup = np.concatenate([np.arange(200), np.flatnonzero(w == 2)])
    beta = np.array([0.2, -0.1, 0.4])
    a = partial_likelihood(risk_sets(time, status, X, entry=entry, strata=s, weights=w, ties="breslow"), beta)
    b = partial_likelihood(
        risk_sets(time[dup], status[dup], X[dup], entry=entry[dup], strata=s[dup], ties="breslow"), beta
    )
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-10)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_score_residuals_sum_to_the_score(ties):
    X, time, status, s, entry, w = _data(seed=5)
    rs = risk_sets(time, status, X, entry=entry, strata=s, weights=w, ties=ties)
    beta = np.array([0.3, 0.1, -0.4])
    _, u, _ = partial_likelihood(rs, beta)
    np.testing.assert_allclose((w[:, None] * score_residuals(rs, beta)).sum(axis=0), u, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("with_entry", [False, True])
def test_dfbeta_is_the_derivative_of_the_estimate_in_a_rows_weight(ties, with_entry):
    """``w_i r_i V`` (what the robust variance sums) is d beta / d log w_i: refit with one row's weight
    nudged by 1e-6 (relative) and compare, for a death in a tied group, a censored row and a late entry."""
    X, time, status, s, entry, w = _data(seed=6, n=300)
    e = entry if with_entry else None
    rs = risk_sets(time, status, X, entry=e, strata=s, weights=w, ties=ties)
    fit = fit_cox(rs)
    dfbeta = (w[:, None] * score_residuals(rs, fit.beta)) @ fit.var
    tied_death = int(np.flatnonzero((status == 1) & (np.bincount(time.astype(int))[time.astype(int)] > 2))[0])
    rows = [tied_death, int(np.flatnonzero(status == 0)[0]), int(np.flatnonzero(entry > 0)[0])]
    h = 1e-6
    for i in rows:
        w2 = w.copy()
        w2[i] *= 1 + h
        moved = fit_cox(risk_sets(time, status, X, entry=e, strata=s, weights=w2, ties=ties)).beta
        np.testing.assert_allclose((moved - fit.beta) / h, dfbeta[i], rtol=1e-4, atol=1e-9)


def test_robust_variance_clusters_sum_rows():
    X, time, status, s, _, w = _data(seed=7)
    rs = risk_sets(time, status, X, strata=s, weights=w)
    fit = fit_cox(rs)
    d = (w[:, None] * score_residuals(rs, fit.beta)) @ fit.var
    cluster = np.arange(len(time)) // 4
    summed = np.add.reduceat(d, np.arange(0, len(time), 4), axis=0)
    np.testing.assert_allclose(robust_variance(rs, fit.beta, fit.var, cluster), summed.T @ summed, rtol=1e-12)
    np.testing.assert_allclose(robust_variance(rs, fit.beta, fit.var), d.T @ d, rtol=1e-12)


def test_monotone_likelihood_is_not_converged_as_in_R():
    """x orders the deaths exactly: the estimate is infinite. R (survival 3.5-3) warns "Ran out of
    iterations and did not converge" and "one or more coefficients may be infinite"; so do the
    result's flag and notes."""
    rng = np.random.default_rng(0)
    t = np.arange(1, 201, dtype=float)
    frame = pl.DataFrame({"t": t, "e": np.ones(200, dtype=int), "x": -t / 10, "z": rng.normal(size=200)})
    res = cox_ph(frame, time="t", event="e", covariates=["x", "z"])
    assert not res.converged
    assert "Newton-Raphson did not converge in 20 iterations" in res.notes
    assert any("very large coefficient(s) ['x']" in n for n in res.notes)
    assert res.summary["coef"][0] > 15


def test_collinear_covariates_raise():
    """R would report the aliased coefficient as NA; cox_ph refuses, as it did with statsmodels."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=100)
    frame = pl.DataFrame({"t": rng.exponential(size=100), "e": np.ones(100, dtype=int), "x": x, "x2": 2 * x})
    with pytest.raises(np.linalg.LinAlgError, match="collinear"):
        cox_ph(frame, time="t", event="e", covariates=["x", "x2"])


def test_ties_must_be_known():
    X, time, status, *_ = _data()
    with pytest.raises(ValueError, match="ties"):
        risk_sets(time, status, X, ties="exact")


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_estimate_is_the_maximum_not_just_Rs_stopping_point(ties):
    """R stops when the log-likelihood changes by < 1e-9 (relative), ~1e-8 short of the maximum; the
    engine goes on: a further Newton step from its estimate moves nothing beyond rounding."""
    X, time, status, s, entry, w = _data(seed=8)
    for kw in ({}, {"strata": s}, {"entry": entry, "strata": s}, {"weights": w}):
        fit = fit_cox(risk_sets(time, status, X, ties=ties, **kw))
        assert fit.converged
        step = fit.var @ fit.score
        assert np.all(np.abs(step) <= 1e-12 * (1 + np.abs(fit.beta))), (kw.keys(), step)


def test_concordance_false_skips_harrells_c_only():
    """cox_ph(concordance=False): no C (None), every other part of the fit bit for bit the same."""
    rng = np.random.default_rng(11)
    n = 400
    frame = pl.DataFrame({"t": rng.integers(1, 30, n).astype(float), "e": rng.integers(0, 2, n),
                          "x": rng.normal(size=n), "g": rng.choice(["a", "b", "c"], n), "s": rng.integers(0, 2, n)})
    kw = dict(time="t", event="e", covariates=["x", "g"], categorical={"g": "a"}, strata="s")
    full, fast = cox_ph(frame, **kw), cox_ph(frame, **kw, concordance=False)
    assert full.concordance is not None and 0 < full.concordance < 1
    assert fast.concordance is None
    assert full.summary.equals(fast.summary)
    for attr in ("n", "n_events", "loglik", "loglik_null", "lr_chi2", "lr_df", "lr_p", "wald_chi2", "score_chi2",
                 "converged", "notes"):
        assert getattr(full, attr) == getattr(fast, attr), attr
