"""The aggregated cloglog fit of the discrete-time analysis (ketaoutcomes.models.grouped_glm) against
the row-level GLM it replaces: statsmodels' binomial GLM with a cloglog link on the expanded
person-period rows, and the HC1 cluster sandwich computed from its per-row scores (R's
``sandwich::vcovCL``; the R reference of the whole analysis is tests/reference/test_diagnostics_vs_R.py).
Here a covariate changes within a subject, so one cluster holds several patterns (a path the R case,
with covariates fixed per subject, does not take)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from ketaoutcomes.models.diagnostics import discrete_time_cox


def _person_period(n: int = 400, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        arm = int(rng.integers(0, 2))
        t = 0.0
        for _ in range(int(rng.integers(1, 8))):
            length = float(rng.choice([7.0, 14.0]))
            stop = t + length
            on = int(stop > 21)  # a time-varying covariate: on treatment after day 21
            p = 1 - np.exp(-np.exp(-4.0 + 0.5 * arm + 0.3 * on) * length)
            ev = int(rng.uniform() < p)
            rows.append((f"S{i:04d}", t, stop, length, ev, int((t + stop) / 2 // 28), arm, on))
            t = stop
            if ev:
                break
    return pl.DataFrame(rows, schema=["USUBJID", "start", "stop", "length", "event", "band", "arm", "on"],
                        orient="row")


def test_aggregated_fit_equals_row_level_glm_and_cluster_sandwich():
    pp = _person_period()
    pp = pp.filter(pl.col("band").is_in(pp.filter(pl.col("event") == 1)["band"].unique().implode()))
    res = discrete_time_cox(pp, covariates=["arm", "on"], id_col="USUBJID")

    bands = sorted(pp["band"].unique().to_list())
    B = np.column_stack([(pp["band"].to_numpy() == b).astype(float) for b in bands])
    X = np.column_stack([B, pp["arm"].to_numpy(), pp["on"].to_numpy()]).astype(float)
    y = pp["event"].to_numpy().astype(float)
    offset = np.log(pp["length"].to_numpy())
    model = sm.GLM(y, X, family=sm.families.Binomial(link=sm.families.links.CLogLog()), offset=offset)
    fit = model.fit(tol=1e-14, maxiter=200)
    np.testing.assert_allclose(res.summary["coef"].to_numpy(), fit.params[-2:], rtol=1e-8)
    np.testing.assert_allclose(res.bands["coef"].to_numpy(), fit.params[:-2], rtol=1e-8)
    np.testing.assert_allclose(res.summary["se_model"].to_numpy(), fit.bse[-2:], rtol=1e-8)

    eta = X @ fit.params + offset
    link = model.family.link
    mu, dmu = link.inverse(eta), link.inverse_deriv(eta)
    score = X * ((y - mu) * dmu / model.family.variance(mu))[:, None]
    _, groups = np.unique(pp["USUBJID"].to_numpy(), return_inverse=True)
    G = groups.max() + 1
    per = np.zeros((G, X.shape[1]))
    np.add.at(per, groups, score)
    bread = np.asarray(fit.cov_params())
    n, k = X.shape
    se = np.sqrt(np.diag(bread @ per.T @ per @ bread * G / (G - 1) * (n - 1) / (n - k)))
    np.testing.assert_allclose(res.summary["se"].to_numpy(), se[-2:], rtol=1e-7)
    assert res.n_rows == pp.height and res.n_subjects == G and res.n_events == int(y.sum())


def test_covariates_per_subject_give_the_fit_of_covariates_on_every_row():
    """``subjects`` (the covariates once per subject, the analysis's way: the rows carry none) gives the
    fit of the same covariates copied to every person-period row; a subject twice is refused."""
    pp = _person_period(seed=11)
    pp = pp.filter(pl.col("band").is_in(pp.filter(pl.col("event") == 1)["band"].unique().implode()))
    subjects = pp.group_by("USUBJID").agg(pl.col("arm").first()).sort("USUBJID").with_columns(
        (pl.col("USUBJID").str.slice(1).cast(pl.Int64) % 7).cast(pl.Float64).alias("score"))
    rows = pp.join(subjects.select("USUBJID", "score"), on="USUBJID")
    a = discrete_time_cox(rows, covariates=["arm", "score"], id_col="USUBJID")
    b = discrete_time_cox(pp.select("USUBJID", "band", "length", "event"), covariates=["arm", "score"],
                          id_col="USUBJID", subjects=subjects)
    for col in ("coef", "se", "se_model"):
        np.testing.assert_allclose(b.summary[col].to_numpy(), a.summary[col].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.bands["coef"].to_numpy(), a.bands["coef"].to_numpy(), rtol=1e-12)
    assert (b.n_rows, b.n_subjects, b.n_events) == (a.n_rows, a.n_subjects, a.n_events)
    with pytest.raises(ValueError, match="one row per subject"):
        discrete_time_cox(pp, covariates=["arm"], id_col="USUBJID", subjects=pl.concat([subjects, subjects.head(1)]))
