"""The REML criterion from per-group sums (ketaoutcomes.models.reml), checked against statsmodels.

* its log-likelihood equals statsmodels' ``MixedLM.loglike`` (REML, profiled) at several covariances,
  on the committed lme4 reference data, for both time scales;
* its analytic gradient equals central differences of it;
* the sums do not depend on the order of the rows;
* its maximum is one statsmodels' optimizer accepts at once (one evaluation, the same or a higher
  likelihood than statsmodels finds from its own start), and a singular design gives None.

The fit it starts (fit_trajectories) is checked against lme4 in tests/unit/test_trajectory.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams

from ketaoutcomes.models.reml import GroupSums, reml_gradient, reml_loglike, reml_optimum
from ketaoutcomes.models.trajectory import _design, _time

REF = Path(__file__).resolve().parents[1] / "reference" / "results"


def _arrays(time_terms: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = pl.read_csv(REF / "trajectory_data.csv").sort("USUBJID", "day")
    t = _time(d["day"].cast(pl.Float64).to_numpy(), time_terms)
    levels = ["ssri", *sorted(a for a in d["ARM"].unique().to_list() if a != "ssri")]
    X = _design(d["ARM"].to_numpy(), t, levels)
    return d["score"].cast(pl.Float64).to_numpy(), X, np.column_stack([np.ones_like(t), t]), d["USUBJID"].to_numpy()


def _statsmodels(y, X, Z, g) -> MixedLM:
    model = MixedLM(y, X, groups=g, exog_re=Z)
    model.reml, model.cov_pen, model.fe_pen, model._cov_sing = True, None, None, 0  # as fit() sets them
    return model


PSIS = [np.eye(2), np.array([[1.5, -0.2], [-0.2, 0.3]]), np.array([[0.05, 0.01], [0.01, 4.0]])]


@pytest.mark.parametrize("time_terms", ["log1p", "linear"])
def test_reml_loglike_equals_statsmodels_loglike(time_terms):
    y, X, Z, g = _arrays(time_terms)
    s, model = GroupSums.of(y, X, Z, g), _statsmodels(y, X, Z, g)
    for psi in PSIS:
        theirs = model.loglike(MixedLMParams.from_components(np.zeros(X.shape[1]), cov_re=psi))
        assert reml_loglike(s, psi) == pytest.approx(theirs, rel=1e-12), psi


def test_reml_gradient_equals_central_differences():
    y, X, Z, g = _arrays("log1p")
    s = GroupSums.of(y, X, Z, g)
    theta = np.array([1.2, -0.3, 0.5])  # L = [[1.2, 0], [-0.3, 0.5]]

    def ll(th):
        L = np.array([[th[0], 0.0], [th[1], th[2]]])
        return reml_loglike(s, L @ L.T)

    h = 1e-5
    numeric = np.array([(ll(theta + e) - ll(theta - e)) / (2 * h) for e in np.eye(3) * h])
    assert reml_gradient(s, theta) == pytest.approx(numeric, rel=1e-6)


def test_group_sums_do_not_depend_on_row_order():
    y, X, Z, g = _arrays("log1p")
    perm = np.random.default_rng(7).permutation(len(y))
    a, b = GroupSums.of(y, X, Z, g), GroupSums.of(y[perm], X[perm], Z[perm], g[perm])
    for psi in PSIS:
        assert reml_loglike(a, psi) == pytest.approx(reml_loglike(b, psi), rel=1e-13)


@pytest.mark.parametrize("time_terms", ["log1p", "linear"])
def test_reml_optimum_is_accepted_by_statsmodels_at_once(time_terms):
    y, X, Z, g = _arrays(time_terms)
    found = reml_optimum(GroupSums.of(y, X, Z, g))
    assert found is not None
    evaluations = [0]
    original = MixedLM.loglike

    def counted(self, *a, **k):
        evaluations[0] += 1
        return original(self, *a, **k)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MixedLM.loglike = counted
        try:
            warm = MixedLM(y, X, groups=g, exog_re=Z).fit(
                reml=True, method="lbfgs", start_params=MixedLMParams.from_components(found.beta, cov_re=found.psi))
            warm_evals, evaluations[0] = evaluations[0], 0
            cold = MixedLM(y, X, groups=g, exog_re=Z).fit(reml=True, method="lbfgs")
        finally:
            MixedLM.loglike = original
    assert warm.converged and cold.converged
    assert warm_evals <= 2 < evaluations[0], (warm_evals, evaluations[0])
    assert warm.llf >= cold.llf - 1e-9 * abs(cold.llf)  # at least as high a maximum as statsmodels' own
    assert found.loglike == pytest.approx(warm.llf, rel=1e-12)
    assert np.asarray(warm.cov_re) == pytest.approx(found.psi * found.scale, rel=1e-6)


def test_reml_optimum_of_a_singular_design_is_none():
    y, X, Z, g = _arrays("log1p")
    X = np.column_stack([X, X[:, 1]])  # a column twice: X'V^-1X is singular
    assert reml_optimum(GroupSums.of(y, X, Z, g)) is None


def test_a_failing_start_falls_back_to_statsmodels_own_start_and_says_so(monkeypatch):
    import ketaoutcomes.models.reml as reml
    from ketaoutcomes.models.trajectory import fit_trajectories

    def broken(_sums):
        raise RuntimeError("boom")

    monkeypatch.setattr(reml, "reml_optimum", broken)
    res = fit_trajectories(pl.read_csv(REF / "trajectory_data.csv"))
    assert res.converged
    assert any("statsmodels' own start used" in n and "RuntimeError: boom" in n for n in res.notes), res.notes
