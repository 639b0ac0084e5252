"""ketaoutcomes.models.cox_engine (and cox_ph, weighted_cox on top of it) against R's coxph.

Oracle: ``results/cox_engine_*.json``, written by ``cox_engine_reference.R`` from
``data/cox_engine_sim.csv`` (2,000 simulated rows; R is not needed to run these
tests). Every fit has 4 covariates and is run with Efron and with Breslow ties:
whole-day times (143 distinct times for 1,411 events), continuous times (no ties),
both with ``strata(site)``, counting-process rows ``Surv(tstart, tday, status)``
with strata, and case weights with the robust variance (``robust = TRUE``, and
``cluster = cl`` with strata).

Tolerances (relative): coefficients, standard errors (model-based and robust),
Wald statistics: 1e-6 (R stops ~1e-8 short of the maximum, the engine goes to it);
log-likelihoods, LR and score statistics: 1e-9 (flat at the maximum; the score
test is at zero, no iteration involved); concordance 1e-12 and its pair counts
exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models import cox_ph
from ketaoutcomes.models.common import level_codes
from ketaoutcomes.models.concordance import concordance_counts, linear_predictor
from ketaoutcomes.models.cox_engine import fit_cox, risk_sets, robust_variance
from ketaoutcomes.models.weighted import weighted_cox

HERE = Path(__file__).parent
RESULTS = HERE / "results"
COVS = ["x1", "x2", "x3", "x4"]
REL_COEF = 1e-6
REL_LIK = 1e-9

LABELS = sorted(p.stem.removeprefix("cox_engine_") for p in RESULTS.glob("cox_engine_*.json")
                if p.stem != "cox_engine_versions")
UNWEIGHTED = [x for x in LABELS if not x.startswith("weighted")]
WEIGHTED_EFRON = [x for x in LABELS if x.startswith("weighted") and x.endswith("efron")]


@pytest.fixture(scope="module")
def sim() -> pl.DataFrame:
    return pl.read_csv(HERE / "data" / "cox_engine_sim.csv")


def ref(label: str) -> dict:
    return json.loads((RESULTS / f"cox_engine_{label}.json").read_text())


def spec(r: dict) -> dict:
    """The columns of an R formula ``Surv([tstart, ]time, status) ~ x1 + ... [+ strata(site)]``."""
    surv = r["formula"].split("~")[0]
    return {
        "time": "tday" if "tday" in surv else "time",
        "entry": "tstart" if "tstart" in surv else None,
        "strata": "site" if "strata(site)" in r["formula"] else None,
        "weights": r["weights"],
        "cluster": r["cluster"],
    }


def test_reference_covers_what_was_asked():
    """Efron and Breslow; ties and continuous times; strata; entry; weights with robust SEs."""
    assert len(LABELS) == 16
    for ties in ("efron", "breslow"):
        for kind in ("tied", "continuous", "tied_strata", "continuous_strata", "entry_strata", "weighted_tied",
                     "weighted_continuous", "weighted_tied_strata_cluster"):
            assert f"{kind}_{ties}" in LABELS
    assert ref("tied_efron")["nevent"] == 1411
    versions = json.loads((RESULTS / "cox_engine_versions.json").read_text())
    assert versions["survival_version"] == "3.5.3"


@pytest.mark.parametrize("label", LABELS)
def test_engine_matches_R_coxph(sim, label):
    r = ref(label)
    c = spec(r)
    X = sim.select(COVS).to_numpy().astype(float)
    rs = risk_sets(
        sim[c["time"]].to_numpy().astype(float), sim["status"].to_numpy(), X,
        entry=None if c["entry"] is None else sim[c["entry"]].to_numpy().astype(float),
        strata=None if c["strata"] is None else sim[c["strata"]].to_numpy(),
        weights=None if c["weights"] is None else sim[c["weights"]].to_numpy(),
        ties=r["ties"],
    )  # fmt: skip
    fit = fit_cox(rs)
    assert fit.converged
    assert fit.iterations == r["iter"]  # same path and stopping rule as coxfit6/agfit4
    np.testing.assert_allclose(fit.beta, [r["coef"][t] for t in COVS], rtol=REL_COEF)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.var)), [r["se"][t] for t in COVS], rtol=REL_COEF)
    np.testing.assert_allclose(fit.var.ravel(order="F"), r["var"], rtol=REL_COEF)
    assert fit.loglik == pytest.approx(r["loglik"], rel=REL_LIK)
    assert fit.loglik_init == pytest.approx(r["loglik_null"], rel=REL_LIK)
    assert 2 * (fit.loglik - fit.loglik_init) == pytest.approx(r["lr_chi2"], rel=REL_LIK)
    score = fit.score_init @ np.linalg.solve(fit.information_init, fit.score_init)
    assert score == pytest.approx(r["score_chi2"], rel=REL_LIK)
    if r["robust"]:
        cluster = None if r["cluster"] is None else sim[r["cluster"]].to_numpy()
        rob = robust_variance(rs, fit.beta, fit.var, cluster)
        np.testing.assert_allclose(np.sqrt(np.diag(rob)), [r["se_robust"][t] for t in COVS], rtol=REL_COEF)
        np.testing.assert_allclose(rob.ravel(order="F"), r["var_robust"], rtol=REL_COEF, atol=1e-12)
        wald = fit.beta @ np.linalg.solve(rob, fit.beta)
    else:
        wald = fit.beta @ np.linalg.solve(fit.var, fit.beta)
    assert wald == pytest.approx(r["wald_chi2"], rel=REL_COEF)


@pytest.mark.parametrize("label", UNWEIGHTED)
def test_cox_ph_matches_R_coxph_on_simulated_data(sim, label):
    r = ref(label)
    c = spec(r)
    res = cox_ph(sim, time=c["time"], event="status", covariates=COVS, strata=c["strata"], entry=c["entry"],
                 ties=r["ties"])
    assert (res.n, res.n_events, res.n_dropped) == (r["n"], r["nevent"], 0)
    assert res.converged and res.notes == ()
    got = res.summary.to_dicts()
    assert [g["term"] for g in got] == r["terms"]
    for g in got:
        assert g["coef"] == pytest.approx(r["coef"][g["term"]], rel=REL_COEF)
        assert g["se"] == pytest.approx(r["se"][g["term"]], rel=REL_COEF)
    assert res.loglik == pytest.approx(r["loglik"], rel=REL_LIK)
    assert res.loglik_null == pytest.approx(r["loglik_null"], rel=REL_LIK)
    assert res.lr_chi2 == pytest.approx(r["lr_chi2"], rel=REL_LIK)
    assert res.lr_df == r["lr_df"]
    assert res.score_chi2 == pytest.approx(r["score_chi2"], rel=REL_LIK)
    assert res.wald_chi2 == pytest.approx(r["wald_chi2"], rel=REL_COEF)
    assert res.concordance == pytest.approx(r["concordance"], rel=1e-12)


@pytest.mark.parametrize("label", WEIGHTED_EFRON)
def test_weighted_cox_matches_R_coxph_robust(sim, label):
    r = ref(label)
    c = spec(r)
    res = weighted_cox(sim, time=c["time"], event="status", covariates=COVS, weights="w", strata=c["strata"],
                       cluster=c["cluster"])
    assert (res.n, res.n_events) == (r["n"], r["nevent"])
    assert res.converged
    for g in res.summary.to_dicts():
        assert g["coef"] == pytest.approx(r["coef"][g["term"]], rel=REL_COEF)
        assert g["se"] == pytest.approx(r["se_robust"][g["term"]], rel=REL_COEF)
    assert res.loglik == pytest.approx(r["loglik"], rel=REL_LIK)
    assert res.loglik_null == pytest.approx(r["loglik_null"], rel=REL_LIK)
    assert res.lr_chi2 == pytest.approx(r["lr_chi2"], rel=REL_LIK)
    assert res.wald_chi2 == pytest.approx(r["wald_chi2"], rel=REL_COEF)


@pytest.mark.parametrize("label", UNWEIGHTED)
def test_concordance_pair_counts_match_R_on_simulated_data(sim, label):
    """Harrell's C pair counts equal coxph$concordance exactly (linear predictor from R's coefficients):
    2,000 rows with heavy ties in time, strata and delayed entry."""
    r = ref(label)
    c = spec(r)
    lp = linear_predictor(sim.select(COVS).to_numpy().astype(float), np.array([r["coef"][t] for t in COVS]))
    counts = concordance_counts(
        sim[c["time"]].to_numpy().astype(float), sim["status"].to_numpy(), lp,
        entry=None if c["entry"] is None else sim[c["entry"]].to_numpy().astype(float),
        strata=None if c["strata"] is None else level_codes(sim[c["strata"]])[0],
    )  # fmt: skip
    assert counts == r["pairs"]
