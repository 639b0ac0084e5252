"""The propensity model (ketaoutcomes.models.ps_model, and fit_propensity around it) against R:
glmnet 4.1-6 for the ridge fit, glm for the unpenalised one.

R output in ``results/ps_ridge_glmnet.json`` and the data in ``data/ps_ridge_data.csv`` are
written by ``ps_ridge_reference.R`` (its header says how to regenerate); R is not needed to run
these tests. The data (900 patients, simulated in R) have sex U on the comparator arm only, so the
unpenalised model is quasi-separated and the ridge model is not.

* Ridge: ``glmnet(X, treat, family = "binomial", alpha = 0, lambda = 1 / (n v), standardize =
  TRUE, thresh = 1e-20)`` for prior variances v = 0.1, 1, 10 (the default) and 25. glmnet's objective
  -(1/n) loglik + lambda/2 |b|^2 on columns standardised with the SD of divisor n is ours times
  1/n, so the maxima are the same point. Tolerance: 1e-9 on fitted probabilities; 1e-7 absolute
  on coefficients (glmnet's coordinate descent stops short on the nearly separated sex U
  coefficient with v = 25: 7e-8 off; v = 1 agrees to 4e-10).
* Unpenalised: ``glm(treat ~ x1 + x2 + site + sexM, binomial)``, sex U counted as F: what
  fit_propensity(model="logistic") fits once the rare-level rule leaves U out (16 of 900 patients,
  1.8% < 2%). Tolerance 1e-9.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.propensity import fit_propensity
from ketaoutcomes.models.ps_model import fit_ps_model

HERE = Path(__file__).parent
R = json.loads((HERE / "results" / "ps_ridge_glmnet.json").read_text())
VERSIONS = json.loads((HERE / "results" / "ps_ridge_versions.json").read_text())


@pytest.fixture(scope="module")
def data() -> pl.DataFrame:
    d = pl.read_csv(HERE / "data" / "ps_ridge_data.csv")
    return d.with_columns(pl.format("P{}", pl.col("row")).alias("USUBJID"),
                          pl.when(pl.col("treat") == 1).then(pl.lit("T")).otherwise(pl.lit("C")).alias("ARM"))


def _design(d: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """R's model.matrix columns (x1, x2, siteB.., sexM, sexU) from the data."""
    cols = []
    for c in columns:
        if c in ("x1", "x2"):
            cols.append(d[c].cast(pl.Float64).to_numpy())
        else:
            var, level = c[:-1], c[-1]
            cols.append((d[var] == level).cast(pl.Float64).to_numpy())
    return np.column_stack(cols)


def test_versions_are_recorded():
    assert VERSIONS["glmnet"] == "4.1.6" and VERSIONS["R"].startswith("R version 4.2.2")


@pytest.mark.parametrize("case", ["ridge_v0.1", "ridge_v1", "ridge_v10", "ridge_v25"])
def test_ridge_ps_model_matches_R_glmnet_alpha0(data, case):
    ref = R[case]
    fit = fit_ps_model(data["treat"].to_numpy(), _design(data, ref["columns"]), model="ridge",
                       variance=ref["variance"])
    assert fit.converged
    np.testing.assert_allclose(fit.coef, ref["coef"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(fit.ps, ref["ps"], rtol=0, atol=1e-9)


def test_fit_propensity_ridge_scores_match_R_glmnet_with_every_level_in_the_model(data):
    """The whole path: dummies with the most frequent level as reference (site A, sex F), the
    separated sex U kept in (min_level_prevalence=0): glmnet's fitted probabilities, a finite fit."""
    r = fit_propensity(data, target="T", comparator="C", covariates=["x1", "x2", "site", "sex"],
                       categorical=["site", "sex"], model="ridge", min_level_prevalence=0)
    assert dict(r.reference_levels) == {"site": "A", "sex": "F"} and r.converged and r.levels_left_out == ()
    assert r.scores["USUBJID"].to_list() == data["USUBJID"].to_list()
    assert R["ridge_v10"]["variance"] == 10  # the default prior variance
    np.testing.assert_allclose(r.scores["ps"].to_numpy(), R["ridge_v10"]["ps"], rtol=0, atol=1e-9)


def test_fit_propensity_logistic_leaves_the_rare_level_out_and_matches_R_glm(data):
    """Sex U (16 of 900, 1.8%) is below the 2% default: left out of the model (counted with F) and
    of the gate; the unpenalised fit then is R's glm without a sex U term. Kept in, the same
    unpenalised model does not converge (quasi-separation) and the gate fails for that."""
    r = fit_propensity(data, target="T", comparator="C", covariates=["x1", "x2", "site", "sex"],
                       categorical=["site", "sex"], model="logistic")
    assert r.levels_left_out == (("sex[U]", 16),) and r.converged
    np.testing.assert_allclose(r.scores["ps"].to_numpy(), R["logistic"]["ps"], rtol=0, atol=1e-9)
    u = r.balance.filter(pl.col("covariate") == "sex[U]").row(0, named=True)
    assert u["in_gate"] is False and u["in_model"] is False and u["mean_target_before"] == 0.0
    kept = fit_propensity(data, target="T", comparator="C", covariates=["x1", "x2", "site", "sex"],
                          categorical=["site", "sex"], model="logistic", min_level_prevalence=0)
    assert not kept.converged and not kept.diagnostics_passed
    assert any("did not converge" in reason for reason in kept.gate_reasons), kept.gate_reasons
