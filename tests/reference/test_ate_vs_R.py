"""ketaoutcomes.models.ate (and .ate_nuisance) against R's riskRegression ``ate()`` 2022.11.28.

R output in ``results/ate_<case>.json`` (printed in ``results/ate_reference.log``) is written by
``ate_reference.R``; R is not needed to run these tests. Cases: survival's ``lung`` (female vs male,
covariates age and ph.ecog; days 90, 180, 365, horizon 365) as it is (26 tied death days, 3 tied
censoring days) and with its ties broken (time + i / 1000); and a synthetic cohort of this project
(``data/ate_synthetic.csv``, time to response of IV ketamine vs SSRI on whole days, the analysis's
propensity design; days 7, 14, 28, horizon 28). Models: Cox of the outcome and of censoring on the
treatment and the covariates (Efron ties), logistic propensity model; in the cases ``*_strata``, the Cox
models with a baseline hazard per arm (``strata(treat)``, ``stratify=True``: what the analysis fits;
synthetic: days 7, 14, 21, horizon 21, as the IV arm's follow-up ends at day 28).

What is compared, for the g-formula, IPTW (with IPCW) and AIPTW (with AIPCW): each arm's risk by each
day with its influence-function SE and Wald CI, the difference and ratio with theirs (and the
difference's p-value), and the restricted mean up to the horizon per arm and its difference with SEs
(R: ``ate()`` at every distinct time up to the horizon, curve and influence function integrated in
the script).

Tolerance: 1e-6 relative, with 1e-12 absolute for numbers near 0 (p-values of 1e-20). The agreement
is closer, 2e-11 relative at worst (estimates, SEs, differences, restricted means): what is left is
the convergence of R's Cox and glm fits, stopped at 1e-11 and 1e-14 relative changes of the
log-likelihood and deviance (ours go on to the maximum).

Ties. On the untied data both ``tie_handling`` choices must give R's numbers. On tied data R is
matched by ``tie_handling="riskRegression-2022.11.28"``, which reproduces two things that release does
with ties (ketaoutcomes.models.ate explains both): the coefficients' influence function without the
number of tied events (the test shows it is riskRegression's ``iidCox``, and not survival's
``dfbeta``, which the standard handling reproduces), and the augmentation integral over the repeated
censoring times (fixed upstream in 2024). With the standard handling the g-formula and IPTW estimates
are still R's (only their SEs move), and the AIPTW estimate moves by what the repeats added.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.ate import adjusted_curves
from ketaoutcomes.models.ate_nuisance import fit_cox_nuisance

HERE = Path(__file__).parent
RTOL, ATOL = 1e-6, 1e-12
RR = "riskRegression-2022.11.28"
CASES = {name: json.loads((HERE / "results" / f"ate_{name}.json").read_text())
         for name in ("lung_tied", "lung_untied", "synthetic", "lung_untied_strata", "synthetic_strata")}
TIED = ["lung_tied", "synthetic", "synthetic_strata"]


def _data(case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r = CASES[case]
    if case.startswith("synthetic"):
        d = pl.read_csv(HERE / "data" / "ate_synthetic.csv")
    else:
        d = pl.read_csv(HERE / "data" / "ate_lung.csv")
        if case.startswith("lung_untied"):
            d = d.with_columns(pl.col("time_untied").alias("time"))
    X = d.select(r["covariates"]).cast(pl.Float64).to_numpy()
    return d["time"].cast(pl.Float64).to_numpy(), d["status"].to_numpy() == 1, d["treat"].to_numpy() == 1, X


def _fit(case: str, tie_handling: str):
    r = CASES[case]
    time, status, treat, X = _data(case)
    res = adjusted_curves(time, status, treat, X, days=tuple(r["days"]), horizon=r["horizon"],
                          tie_handling=tie_handling, stratify=r["strata"])
    return res, res.table()


def _close(ours, theirs, what):
    np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float),
                               rtol=RTOL, atol=ATOL, err_msg=what)


def _check_against_R(case: str, tie_handling: str, estimators=("GFORMULA", "IPTW", "AIPTW")):
    r = CASES[case]
    res, table = _fit(case, tie_handling)
    days = r["days"]
    for e in estimators:
        rows = table.filter(pl.col("estimator") == e)
        for k, day in enumerate(days):
            row = rows.filter(pl.col("estimand") == f"risk_d{day:g}").row(0, named=True)
            for arm, col in (("1", "target"), ("0", "comparator")):
                m = next(x for x in r["mean_risk"]
                         if x["estimator"] == e and x["time"] == day and x["treatment"] == arm)
                _close([row[f"value_{col}"], row[f"se_{col}"]], [m["estimate"], m["se"]], f"{case} {e} {arm} {day}")
                # R's risk CI: Wald, clipped to [0, 1]
                z = 1.959963984540054
                lo, hi = max(m["estimate"] - z * m["se"], 0.0), min(m["estimate"] + z * m["se"], 1.0)
                _close([lo, hi], [m["lower"], m["upper"]], f"{case} {e} {arm} {day} CI as R computes it")
            dr = next(x for x in r["diff_risk"] if x["estimator"] == e and x["time"] == day)
            _close([row["difference"], row["se"], row["lower"], row["upper"], row["p_value"]],
                   [dr["estimate"], dr["se"], dr["lower"], dr["upper"], dr["p.value"]], f"{case} {e} diff {day}")
            rr = next(x for x in r["ratio_risk"] if x["estimator"] == e and x["time"] == day)
            _close([row["ratio"], row["ratio_se"], row["ratio_lower"], row["ratio_upper"]],
                   [rr["estimate"], rr["se"], rr["lower"], rr["upper"]], f"{case} {e} ratio {day}")
        rm = rows.filter(pl.col("estimand") == "rmst").row(0, named=True)
        x = r["rmst"][e]
        _close([rm["value_target"], rm["value_comparator"], rm["se_target"], rm["se_comparator"], rm["difference"],
                rm["se"]], [x["target"], x["comparator"], x["se_target"], x["se_comparator"], x["difference"], x["se"]],
               f"{case} {e} restricted mean")
    return res, table


@pytest.mark.parametrize("case", ["lung_untied", "lung_untied_strata"])
@pytest.mark.parametrize("tie_handling", ["standard", RR])
def test_untied_lung_matches_ate_with_either_tie_handling(case, tie_handling):
    _check_against_R(case, tie_handling)


@pytest.mark.parametrize("case", TIED)
def test_tied_data_match_riskregression_2022_with_its_tie_handling(case):
    _check_against_R(case, RR)


@pytest.mark.parametrize("case", TIED)
def test_coefficients_influence_functions_are_riskregression_s_and_survival_s_dfbeta(case):
    """riskRegression's iidCox IF of the coefficients (reproduced by its tie handling) is not the exact
    score residual with tied event times; the standard handling gives survival's dfbeta residuals."""
    r = CASES[case]
    time, status, treat, X = _data(case)
    Z, strata = (X, treat.astype(int)) if r["strata"] else (np.column_stack([treat.astype(float), X]), None)
    for status_of, key in ((status, "outcome"), (~status, "censoring")):
        std = next(iter(fit_cox_nuisance(time, status_of, Z, max_time=max(r["days"]), strata=strata).values()))
        rr = next(iter(fit_cox_nuisance(time, status_of, Z, max_time=max(r["days"]), strata=strata,
                                        tie_handling=RR).values()))
        np.testing.assert_allclose(std.iid_beta, np.asarray(r[f"dfbeta_{key}"]), rtol=RTOL, atol=1e-10)
        np.testing.assert_allclose(rr.iid_beta, np.asarray(r[f"iid_beta_{key}_riskregression"]), rtol=RTOL,
                                   atol=1e-10)
        assert np.max(np.abs(std.iid_beta - rr.iid_beta)) > 1e-4  # tied times: they differ
        _close(std.beta, r[f"coef_{key}"], f"{case} {key} coefficients")


@pytest.mark.parametrize("case", TIED)
def test_standard_tie_handling_keeps_R_s_gformula_and_iptw_estimates_on_tied_data(case):
    r = CASES[case]
    _, table = _fit(case, "standard")
    for e in ("GFORMULA", "IPTW"):
        for row in table.filter((pl.col("estimator") == e) & (pl.col("measure") == "risk")).iter_rows(named=True):
            for arm, col in (("1", "target"), ("0", "comparator")):
                m = next(x for x in r["mean_risk"]
                         if x["estimator"] == e and x["time"] == row["day"] and x["treatment"] == arm)
                _close(row[f"value_{col}"], m["estimate"], f"{case} {e} {arm} {row['day']}")
    # the AIPTW estimate differs by what R's repeated censoring times added (not by more than a few %)
    aiptw = table.filter((pl.col("estimator") == "AIPTW") & (pl.col("measure") == "risk"))
    ours = aiptw["value_comparator"].to_numpy()
    theirs = np.array([next(x["estimate"] for x in r["mean_risk"] if x["estimator"] == "AIPTW" and x["time"] == d
                            and x["treatment"] == "0") for d in r["days"]])
    assert np.max(np.abs(ours / theirs - 1)) > 1e-4 and np.max(np.abs(ours / theirs - 1)) < 0.05
