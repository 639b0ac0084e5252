"""ketaoutcomes.models.weighted against R's survival package.

R output in ``results/weighted_*`` is written by ``weighted_reference.R`` (see
README.md); R is not needed to run these tests. The weights are
``w = 1 + (i % 3) / 2`` by 0-based row of ``data/lung.csv`` (1, 1.5, 2, ...),
stored with the data in ``results/weighted_lung_data.csv``.

Tolerances (relative):

* Cox coefficients, robust SEs, HRs, CI limits: 1e-6. The fit is iterated to the
  maximum; R stops ~1e-8 (up to 2e-7 in the stratified fit) short of it.
* Wald p-values: 1e-5 (see test_survival_vs_R.py); log-likelihoods: 1e-9.
* Kaplan-Meier (both variances) and RMST: 1e-12 (closed form).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models import cox_ph, kaplan_meier
from ketaoutcomes.models.weighted import restricted_mean, weighted_cox, weighted_kaplan_meier

HERE = Path(__file__).parent
RESULTS = HERE / "results"

REL_COEF = 1e-6
REL_P = 1e-5
REL_LIK = 1e-9
REL_EXACT = 1e-12
LUNG_COVS = ["age", "sex", "ph.ecog"]


def _csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, null_values=["", "NA"])


def ref(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


@pytest.fixture(scope="module")
def lung() -> pl.DataFrame:
    data = _csv(RESULTS / "weighted_lung_data.csv")
    # R fitted the committed lung.csv, with the documented weights
    base = _csv(HERE / "data" / "lung.csv")
    assert data.select(base.columns).equals(base)
    i = np.arange(data.height)
    assert np.array_equal(data["w"].to_numpy(), 1 + (i % 3) / 2)
    return data


@pytest.fixture(scope="module")
def lung_untied() -> pl.DataFrame:
    return _csv(RESULTS / "weighted_lung_untied_data.csv")


def row(result, term: str) -> dict:
    rows = result.summary.filter(pl.col("term") == term).to_dicts()
    assert len(rows) == 1
    return rows[0]


def assert_wcox_matches(res, r: dict) -> None:
    assert res.n == r["n"]
    assert res.n_events == r["nevent"]
    assert res.n_dropped == r["n_dropped"]
    assert res.converged
    assert res.ties == r["ties"] == "efron"
    assert list(res.terms) == r["terms"]
    for term in r["terms"]:
        got = row(res, term)
        assert got["coef"] == pytest.approx(r["coef"][term], rel=REL_COEF), term
        assert got["hr"] == pytest.approx(r["hr"][term], rel=REL_COEF), term
        assert got["se"] == pytest.approx(r["se_robust"][term], rel=REL_COEF), term
        assert got["z"] == pytest.approx(r["z"][term], rel=REL_COEF), term
        assert got["p_value"] == pytest.approx(r["p"][term], rel=REL_P), term
        assert got["hr_lower"] == pytest.approx(r["hr_lower"][term], rel=REL_COEF), term
        assert got["hr_upper"] == pytest.approx(r["hr_upper"][term], rel=REL_COEF), term
    assert res.loglik == pytest.approx(r["loglik"], rel=REL_LIK)
    assert res.loglik_null == pytest.approx(r["loglik_null"], rel=REL_LIK)
    assert res.lr_chi2 == pytest.approx(r["lr_chi2"], rel=REL_LIK)
    assert res.lr_df == r["lr_df"]
    assert res.wald_chi2 == pytest.approx(r["wald_chi2_robust"], rel=REL_COEF)
    assert res.score_chi2 is None and res.concordance is None
    assert any("robust (sandwich) variance; weights from" in note for note in res.notes)


# ----------------------------------------------------------------------------- weighted Cox
def test_weighted_cox_matches_R_lung(lung):
    """coxph(Surv(time, status) ~ age + sex + ph.ecog, weights = w, robust = TRUE, ties = "efron")."""
    res = weighted_cox(lung, time="time", event="status", covariates=LUNG_COVS, weights="w")
    assert_wcox_matches(res, ref("weighted_cox_lung.json"))
    assert res.notes[:2] == (
        "1 row dropped for missing ph.ecog",
        "robust (sandwich) variance; weights from w; each row its own cluster",
    )


def test_weighted_cox_strata_matches_R_lung(lung):
    """... ~ age + ph.ecog + strata(sex), weights = w, robust = TRUE."""
    res = weighted_cox(lung, time="time", event="status", covariates=["age", "ph.ecog"], weights="w", strata="sex")
    assert res.strata == "sex"
    assert_wcox_matches(res, ref("weighted_cox_lung_strata_sex.json"))


def test_weighted_cox_cluster_matches_R_lung(lung):
    """... weights = w, cluster = inst (inst is missing in one row, dropped as R does)."""
    res = weighted_cox(lung, time="time", event="status", covariates=LUNG_COVS, weights="w", cluster="inst")
    assert_wcox_matches(res, ref("weighted_cox_lung_cluster_inst.json"))
    assert "clustered on inst" in res.notes[1]


def test_weighted_cox_unit_weights_equal_cox_ph(lung):
    """All weights 1: cox_ph's coefficients and likelihood; the SE is R's robust one, not cox_ph's."""
    res = weighted_cox(lung, time="time", event="status", covariates=LUNG_COVS, weights="one")
    plain = cox_ph(lung, time="time", event="status", covariates=LUNG_COVS)
    r = ref("weighted_cox_lung_unit.json")
    assert_wcox_matches(res, r)
    for term in LUNG_COVS:
        assert row(res, term)["coef"] == pytest.approx(row(plain, term)["coef"], rel=1e-8)
        assert row(plain, term)["se"] == pytest.approx(r["se_naive"][term], rel=REL_COEF)
        assert row(res, term)["se"] != pytest.approx(row(plain, term)["se"], rel=1e-3)
    assert res.loglik == pytest.approx(plain.loglik, rel=1e-12)
    assert res.loglik_null == pytest.approx(plain.loglik_null, rel=1e-12)


def test_weighted_cox_no_ties_matches_R(lung_untied):
    res = weighted_cox(lung_untied, time="time", event="status", covariates=LUNG_COVS, weights="w")
    assert_wcox_matches(res, ref("weighted_cox_lung_untied.json"))


def _lifelines_robust_se(frame: pl.DataFrame) -> dict[str, float]:
    from lifelines import CoxPHFitter

    pdf = frame.select("time", "status", *LUNG_COVS, "w").drop_nulls().to_pandas()
    cph = CoxPHFitter().fit(
        pdf, "time", "status", weights_col="w", robust=True,
        fit_options={"precision": 1e-11, "r_precision": 1e-15},
    )  # fmt: skip
    return cph.standard_errors_.to_dict()


def test_lifelines_robust_se_equals_R_only_without_ties(lung, lung_untied):
    """Why weighted_cox computes the sandwich itself.

    lifelines 0.30.3 ``CoxPHFitter(robust=True)`` builds the sandwich from score
    residuals that ignore ties (rows in time-then-event order, each as its own
    time). Without tied times that is R's robust = TRUE; with lung's ties it is off
    by about 1e-4 (relative), and it is not Breslow's residuals at the Efron
    estimate either (R's reconstruction of that, ``se_lifelines_like``, is off by
    about 1.4e-3).
    """
    r = ref("weighted_cox_lung_untied.json")
    for term, se in _lifelines_robust_se(lung_untied).items():
        assert se == pytest.approx(r["se_robust"][term], rel=REL_COEF), term
    r = ref("weighted_cox_lung.json")
    for term, se in _lifelines_robust_se(lung).items():
        rel = abs(se / r["se_robust"][term] - 1)
        assert 1e-5 < rel < 1e-3, (term, rel)
        assert abs(se / r["se_lifelines_like"][term] - 1) > 1e-3


def test_weighted_cox_rejects_bad_weights(lung):
    bad = lung.with_columns(w=pl.when(pl.int_range(pl.len()) == 0).then(0.0).otherwise(pl.col("w")))
    with pytest.raises(ValueError, match="must be finite and > 0"):
        weighted_cox(bad, time="time", event="status", covariates=LUNG_COVS, weights="w")
    with pytest.raises(ValueError, match="1 = event, 0 = censored"):
        weighted_cox(lung.with_columns(status=pl.col("status") + 1), time="time", event="status",
                     covariates=LUNG_COVS, weights="w")  # fmt: skip


# ----------------------------------------------------------------------------- weighted KM
@pytest.mark.parametrize("variance", ["robust", "greenwood"])
def test_weighted_km_matches_R_lung(lung, variance):
    """survfit(Surv(time, status) ~ sex, weights = w, robust = TRUE / FALSE): every distinct time."""
    km = weighted_kaplan_meier(lung, time="time", event="status", weights="w", group="sex", variance=variance)
    r = _csv(RESULTS / f"weighted_km_lung_sex_{variance}.csv")
    tab = km.table
    assert tab.height == r.height
    assert tab["group"].to_list() == [s.removeprefix("sex=") for s in r["strata"].to_list()]
    assert np.array_equal(tab["time"].to_numpy(), r["time"].to_numpy().astype(float))
    for ours, theirs in [
        ("n_risk", "n_risk"), ("n_event", "n_event"), ("n_censor", "n_censor"), ("survival", "surv"),
        ("std_err", "std_err"), ("lower", "lower"), ("upper", "upper"),
    ]:  # fmt: skip
        a, b = tab[ours].to_numpy().astype(float), r[theirs].to_numpy().astype(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), ours
        np.testing.assert_allclose(a, b, rtol=REL_EXACT, atol=0, err_msg=ours)
    rt = _csv(RESULTS / f"weighted_km_lung_sex_{variance}_table.csv")
    med = km.medians
    assert med["n"].to_list() == rt["records"].to_list()
    np.testing.assert_allclose(med["events"].to_numpy(), rt["events"].to_numpy(), rtol=REL_EXACT)
    for ours, theirs in [("median", "median"), ("median_lower", "lcl"), ("median_upper", "ucl")]:
        assert med[ours].to_list() == [float(x) for x in rt[theirs].to_list()], ours
    assert variance in ("robust", "greenwood") and any(
        ("infinitesimal jackknife" if variance == "robust" else "Greenwood") in note for note in km.notes
    )


def test_weighted_km_default_is_robust_and_unit_weights_equal_kaplan_meier(lung):
    default = weighted_kaplan_meier(lung, time="time", event="status", weights="w", group="sex")
    robust = weighted_kaplan_meier(lung, time="time", event="status", weights="w", group="sex", variance="robust")
    assert default.table.equals(robust.table)
    # unit weights, Greenwood: kaplan_meier exactly (up to dtypes of the counts)
    unit = weighted_kaplan_meier(lung, time="time", event="status", weights="one", group="sex", variance="greenwood")
    plain = kaplan_meier(lung, time="time", event="status", group="sex")
    for col in ("time", "n_risk", "n_event", "survival", "lower", "upper"):
        np.testing.assert_allclose(
            unit.table[col].to_numpy().astype(float), plain.table[col].to_numpy().astype(float), rtol=1e-13
        )


# ----------------------------------------------------------------------------- RMST
def test_rmst_matches_R_lung(lung):
    """print(survfit(Surv(time, status) ~ sex, data = lung), rmean = 365): rmean and se(rmean)."""
    out = restricted_mean(kaplan_meier(lung, time="time", event="status", group="sex"), horizon=365)
    r = _csv(RESULTS / "weighted_rmst_lung_sex.csv")
    assert out["group"].to_list() == ["1", "2"]
    np.testing.assert_allclose(out["rmst"].to_numpy(), r["rmean"].to_numpy(), rtol=REL_EXACT)
    np.testing.assert_allclose(out["se"].to_numpy(), r["se_rmean"].to_numpy(), rtol=REL_EXACT)
    # printed digits: 241.5 (10.4) and 297.5 (10.8)
    assert [round(x, 1) for x in out["rmst"]] == [241.5, 297.5]
    z = 1.959963984540054
    np.testing.assert_allclose(out["lower"].to_numpy(), (out["rmst"] - z * out["se"]).to_numpy(), rtol=1e-14)
    assert out["horizon"].to_list() == [365.0, 365.0]


def test_rmst_horizon_beyond_last_time_matches_R(lung):
    km = kaplan_meier(lung, time="time", event="status")
    r = _csv(RESULTS / "weighted_rmst_lung_all.csv")
    for horizon, rmean, se in r.iter_rows():
        out = restricted_mean(km, horizon=float(horizon))
        assert out["rmst"].item() == pytest.approx(rmean, rel=REL_EXACT)
        assert out["se"].item() == pytest.approx(se, rel=REL_EXACT)


@pytest.mark.parametrize("variance", ["robust", "greenwood"])
def test_rmst_of_weighted_km_matches_R(lung, variance):
    """R's survmean uses the weighted counts whatever the variance of the curve."""
    km = weighted_kaplan_meier(lung, time="time", event="status", weights="w", group="sex", variance=variance)
    out = restricted_mean(km, horizon=365)
    rt = _csv(RESULTS / f"weighted_km_lung_sex_{variance}_table.csv")
    np.testing.assert_allclose(out["rmst"].to_numpy(), rt["rmean"].to_numpy(), rtol=REL_EXACT)
    np.testing.assert_allclose(out["se"].to_numpy(), rt["se_rmean"].to_numpy(), rtol=REL_EXACT)


def test_rmst_short_horizon_and_errors(lung):
    km = kaplan_meier(lung, time="time", event="status")
    out = restricted_mean(km, horizon=1.0)  # before the first time: the whole box at S = 1
    assert out["rmst"].item() == 1.0 and out["se"].item() == 0.0
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="horizon"):
            restricted_mean(km, horizon=bad)
