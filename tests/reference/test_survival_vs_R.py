"""ketaoutcomes.models.km, .logrank, .cox and .concordance against R's survival package.

Two kinds of oracle:

* the digits R prints for coxph/survfit/survdiff on lung and rossi (copied
  into ``PRINTED`` below, checked to half a unit of the last printed digit), and
* full-precision R output in ``results/`` written by ``survival_reference.R``
  from the data in ``data/`` (see README.md). R is not needed to run these tests.

Tolerances (relative unless said otherwise):

* coefficients, standard errors, hazard ratios and CI limits: 1e-6. statsmodels
  iterates Newton-Raphson to convergence; R stops once the log-likelihood changes
  by less than 1e-9 relative, which leaves its coefficients ~1e-8 (relative) from
  the maximum (measured: at most 2e-8 on these fits).
* Wald p-values: 1e-5. p = 2 Phi(-|z|) magnifies a relative error in z by about
  z^2 (up to ~10 here), so R's 1e-8 stopping error shows as up to ~4e-7.
* log-likelihoods, LR/score statistics: 1e-9 (they are flat at the maximum).
* Wald statistic: 1e-6 (it moves with the coefficients).
* Kaplan-Meier, log-rank and concordance: 1e-12 (closed-form, no iteration),
  and the concordance pair counts exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from statsmodels.duration.hazard_regression import PHReg

from ketaoutcomes.models import cox_ph, kaplan_meier, logrank_test
from ketaoutcomes.models.concordance import concordance_counts, linear_predictor

HERE = Path(__file__).parent
DATA = HERE / "data"
RESULTS = HERE / "results"

REL_COEF = 1e-6
REL_P = 1e-5
REL_LIK = 1e-9
REL_EXACT = 1e-12


# ----------------------------------------------------------------------------- fixtures
def _read(name: str) -> pl.DataFrame:
    return pl.read_csv(DATA / name, null_values=["", "NA"])


@pytest.fixture(scope="module")
def lung() -> pl.DataFrame:
    return _read("lung.csv")


@pytest.fixture(scope="module")
def rossi() -> pl.DataFrame:
    return _read("rossi.csv")


@pytest.fixture(scope="module")
def lung_split() -> pl.DataFrame:
    return _read("lung_split.csv")


@pytest.fixture(scope="module")
def rossi_long() -> pl.DataFrame:
    return _read("rossi_long.csv")


def ref(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def printed(value: float, text: str) -> bool:
    """Does ``value`` print as ``text`` (within half a unit of its last digit)?"""
    mantissa = text.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(text.lower().split("e")[1]) if "e" in text.lower() else 0
    half_unit = 0.5 * 10.0 ** (exponent - decimals)
    return abs(value - float(text)) <= half_unit * (1 + 1e-9)


def row(result, term: str) -> dict:
    rows = result.summary.filter(pl.col("term") == term).to_dicts()
    assert len(rows) == 1, f"term {term!r} not in {result.summary['term'].to_list()}"
    return rows[0]


def assert_cox_matches(result, r: dict, term_map: dict[str, str] | None = None) -> None:
    """Compare a CoxResult with one results/cox_*.json at full precision."""
    term_map = term_map or {}
    assert result.n == r["n"]
    assert result.n_events == r["nevent"]
    assert result.n_dropped == r["n_dropped"]
    assert result.converged
    assert result.ties == r["ties"]
    ours = [term_map.get(t, t) for t in result.summary["term"].to_list()]
    assert ours == r["terms"]
    for term in result.summary["term"].to_list():
        got, rt = row(result, term), term_map.get(term, term)
        assert got["coef"] == pytest.approx(r["coef"][rt], rel=REL_COEF), term
        assert got["se"] == pytest.approx(r["se"][rt], rel=REL_COEF), term
        assert got["hr"] == pytest.approx(r["hr"][rt], rel=REL_COEF), term
        assert got["z"] == pytest.approx(r["z"][rt], rel=REL_COEF), term
        assert got["p_value"] == pytest.approx(r["p"][rt], rel=REL_P), term
        assert got["hr_lower"] == pytest.approx(r["hr_lower"][rt], rel=REL_COEF), term
        assert got["hr_upper"] == pytest.approx(r["hr_upper"][rt], rel=REL_COEF), term
    assert result.loglik == pytest.approx(r["loglik"], rel=REL_LIK)
    assert result.loglik_null == pytest.approx(r["loglik_null"], rel=REL_LIK)
    assert result.lr_chi2 == pytest.approx(r["lr_chi2"], rel=REL_LIK)
    assert result.lr_df == r["lr_df"]
    assert result.lr_p == pytest.approx(r["lr_p"], rel=REL_P)
    assert result.wald_chi2 == pytest.approx(r["wald_chi2"], rel=REL_COEF)
    assert result.score_chi2 == pytest.approx(r["score_chi2"], rel=REL_LIK)
    assert result.concordance == pytest.approx(r["concordance"], rel=REL_EXACT)


LUNG_COVS = ["age", "sex", "ph.ecog"]
ROSSI_COVS = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]


# ----------------------------------------------------------------------------- Cox
def test_cox_matches_R_lung(lung):
    """The md table for lung (Efron) to its printed digits, then R's full output."""
    res = cox_ph(lung, time="time", event="status", covariates=LUNG_COVS)
    assert (res.n, res.n_events, res.n_dropped) == (227, 164, 1)
    assert res.notes == ("1 row dropped for missing ph.ecog",)
    md = {
        "age": ("0.011067", "1.011128", "0.009267", "1.194", "0.232416", "0.9929", "1.0297"),
        "sex": ("-0.552612", "0.575445", "0.167739", "-3.294", "0.000986", "0.4142", "0.7994"),
        "ph.ecog": ("0.463728", "1.589991", "0.113577", "4.083", "4.45e-05", "1.2727", "1.9864"),
    }
    for term, (coef, hr, se, z, p, lo, hi) in md.items():
        got = row(res, term)
        assert printed(got["coef"], coef) and printed(got["hr"], hr) and printed(got["se"], se)
        assert printed(got["z"], z) and printed(got["p_value"], p)
        assert printed(got["hr_lower"], lo) and printed(got["hr_upper"], hi)
    assert printed(res.lr_chi2, "30.5") and res.lr_df == 3
    assert printed(res.wald_chi2, "29.93")
    assert printed(res.score_chi2, "30.5")
    assert printed(res.concordance, "0.637")
    assert_cox_matches(res, ref("cox_lung_efron.json"))


def test_cox_breslow_matches_R_lung(lung):
    res = cox_ph(lung, time="time", event="status", covariates=LUNG_COVS, ties="breslow")
    assert_cox_matches(res, ref("cox_lung_breslow.json"))


def test_cox_matches_R_rossi_efron(rossi):
    res = cox_ph(rossi, time="week", event="arrest", covariates=ROSSI_COVS)
    md = {
        "fin": ("-0.37942", "0.68426", "0.19138", "-1.983", "0.04742"),
        "age": ("-0.05744", "0.94418", "0.02200", "-2.611", "0.00903"),
        "race": ("0.31390", "1.36875", "0.30799", "1.019", "0.30812"),
        "wexp": ("-0.14980", "0.86088", "0.21222", "-0.706", "0.48029"),
        "mar": ("-0.43370", "0.64810", "0.38187", "-1.136", "0.25606"),
        "paro": ("-0.08487", "0.91863", "0.19576", "-0.434", "0.66461"),
        "prio": ("0.09150", "1.09581", "0.02865", "3.194", "0.00140"),
    }
    for term, (coef, hr, se, z, p) in md.items():
        got = row(res, term)
        assert printed(got["coef"], coef) and printed(got["hr"], hr) and printed(got["se"], se), term
        assert printed(got["z"], z) and printed(got["p_value"], p), term
    assert printed(res.lr_chi2, "33.27") and res.lr_df == 7
    assert_cox_matches(res, ref("cox_rossi_efron.json"))


def test_cox_breslow_matches_R_rossi(rossi):
    res = cox_ph(rossi, time="week", event="arrest", covariates=ROSSI_COVS, ties="breslow")
    assert printed(row(res, "fin")["coef"], "-0.37902")
    assert printed(row(res, "prio")["coef"], "0.09111")
    assert_cox_matches(res, ref("cox_rossi_breslow.json"))


def test_cox_strata_matches_R_lung(lung):
    """coxph(Surv(time, status) ~ age + ph.ecog + strata(sex))."""
    res = cox_ph(lung, time="time", event="status", covariates=["age", "ph.ecog"], strata="sex")
    assert res.strata == "sex"
    assert_cox_matches(res, ref("cox_lung_strata_sex.json"))


def test_cox_strata_breslow_matches_R_rossi_four_strata(rossi):
    """coxph(... ~ age + prio + strata(fin, race), ties = "breslow"): one column per stratum here."""
    frame = rossi.with_columns(fin_race=pl.format("{}/{}", "fin", "race"))
    res = cox_ph(frame, time="week", event="arrest", covariates=["age", "prio"], strata="fin_race", ties="breslow")
    assert_cox_matches(res, ref("cox_rossi_strata_fin_race_breslow.json"))


def test_cox_categorical_matches_R_lung_ecog_factor(lung):
    """R: relevel(factor(ph.ecog), ref = "1"), terms ecog0, ecog2, ecog3."""
    frame = lung.rename({"ph.ecog": "ecog"})
    res = cox_ph(frame, time="time", event="status", covariates=["age", "sex", "ecog"], categorical={"ecog": 1})
    assert res.summary["term"].to_list() == ["age", "sex", "ecog[0]", "ecog[2]", "ecog[3]"]
    term_map = {"ecog[0]": "ecog0", "ecog[2]": "ecog2", "ecog[3]": "ecog3"}
    assert_cox_matches(res, ref("cox_lung_ecog_factor_ref1.json"), term_map)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_entry_matches_R_counting_process(rossi_long, ties):
    """Time-varying employment in rossi: Surv(start, stop, arrest), 19,809 person-weeks.

    Every entry time (week j-1) is also an event time of other subjects, so this
    checks R's risk set rule entry < t <= stop at every boundary.
    """
    res = cox_ph(
        rossi_long,
        time="stop",
        event="arrest",
        entry="start",
        covariates=["fin", "age", "prio", "employed"],
        ties=ties,
    )
    assert res.entry == "start"
    assert_cox_matches(res, ref(f"cox_rossi_long_{ties}.json"))


def test_cox_entry_matches_R_lung_split(lung, lung_split):
    """A survSplit of lung at days 90/180/365 gives R's unsplit fit, and so must ours."""
    split = cox_ph(lung_split, time="time", event="status", entry="tstart", covariates=LUNG_COVS)
    assert_cox_matches(split, ref("cox_lung_split_efron.json"))
    whole = cox_ph(lung, time="time", event="status", covariates=LUNG_COVS)
    np.testing.assert_allclose(split.summary["coef"].to_numpy(), whole.summary["coef"].to_numpy(), rtol=1e-9)
    assert split.concordance == pytest.approx(whole.concordance, rel=REL_EXACT)


def test_plain_statsmodels_entry_rule_differs_from_R(rossi_long):
    """Why cox_ph shifts entry times: PHReg puts a row at risk from t >= entry, R from t > entry.

    Passing the split data straight to PHReg counts each subject twice at its
    split times and misses R's employed coefficient in the third digit; this is
    the regression test for the shift in ``_phreg``.
    """
    r = ref("cox_rossi_long_efron.json")
    X = rossi_long.select("fin", "age", "prio", "employed").to_numpy().astype(float)
    naive = PHReg(
        rossi_long["stop"].to_numpy().astype(float),
        X,
        status=rossi_long["arrest"].to_numpy(),
        entry=rossi_long["start"].to_numpy().astype(float),
        ties="efron",
    ).fit()
    assert abs(naive.params[3] - r["coef"]["employed"]) > 1e-3


@pytest.mark.parametrize(
    "label",
    [
        "lung_efron",
        "lung_breslow",
        "rossi_efron",
        "rossi_breslow",
        "lung_strata_sex",
        "rossi_strata_fin_race_breslow",
        "lung_ecog_factor_ref1",
        "lung_split_efron",
        "rossi_long_efron",
        "rossi_long_breslow",
    ],
)
def test_concordance_pair_counts_match_R(label, lung, rossi, lung_split, rossi_long):
    """Concordant/discordant/tied pair counts equal R's coxph$concordance exactly.

    The linear predictor is taken from R's own coefficients, so this checks the
    pair counting alone (strata, delayed entry, ties in x and y).
    """
    r = ref(f"cox_{label}.json")
    frames = {"lung": lung, "rossi": rossi, "lung_split": lung_split, "rossi_long": rossi_long}
    name = next(k for k in sorted(frames, key=len, reverse=True) if label.startswith(k))
    frame = frames[name]
    if name == "lung_split" or name == "lung":
        frame = frame.drop_nulls(["ph.ecog"])
    if "ecog_factor" in label:
        frame = frame.with_columns(
            ecog0=(pl.col("ph.ecog") == 0).cast(pl.Float64),
            ecog2=(pl.col("ph.ecog") == 2).cast(pl.Float64),
            ecog3=(pl.col("ph.ecog") == 3).cast(pl.Float64),
        )
    time_col = {"lung": "time", "rossi": "week", "lung_split": "time", "rossi_long": "stop"}[name]
    event_col = {"lung": "status", "rossi": "arrest", "lung_split": "status", "rossi_long": "arrest"}[name]
    entry = None
    if name == "lung_split":
        entry = frame["tstart"].to_numpy().astype(float)
    if name == "rossi_long":
        entry = frame["start"].to_numpy().astype(float)
    strata = None
    if label == "lung_strata_sex":
        strata = frame["sex"].to_numpy()
    if label == "rossi_strata_fin_race_breslow":
        strata = (frame["fin"] * 2 + frame["race"]).to_numpy()
    X = frame.select(r["terms"]).to_numpy().astype(float)
    lp = linear_predictor(X, np.array([r["coef"][t] for t in r["terms"]]))
    counts = concordance_counts(
        frame[time_col].to_numpy().astype(float),
        frame[event_col].to_numpy(),
        lp,
        entry=entry,
        strata=strata,
    )
    assert counts == {
        "concordant": r["concordant"],
        "discordant": r["discordant"],
        "tied_x": r["tied_x"],
        "tied_y": r["tied_y"],
        "tied_xy": r["tied_xy"],
    }


# ----------------------------------------------------------------------------- Kaplan-Meier
def _r_group(label: str) -> str:
    return label.split("=", 1)[1] if "=" in label else label


def _assert_km_table(result, r_table: pl.DataFrame) -> None:
    got = result.table
    exp = r_table.with_columns(pl.col("strata").map_elements(_r_group, return_dtype=pl.String))
    assert got.height == exp.height
    assert got["group"].to_list() == exp["strata"].to_list()
    for ours, theirs in [("time", "time"), ("n_risk", "n_risk"), ("n_event", "n_event"), ("n_censor", "n_censor")]:
        np.testing.assert_array_equal(got[ours].to_numpy().astype(float), exp[theirs].to_numpy().astype(float))
    for ours, theirs in [("survival", "surv"), ("lower", "lower"), ("upper", "upper")]:
        a = got[ours].to_numpy().astype(float)  # null -> NaN
        b = exp[theirs].cast(pl.Float64).to_numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"NA pattern of {ours}")
        np.testing.assert_allclose(a, b, rtol=REL_EXACT, atol=0, equal_nan=True, err_msg=ours)


def _assert_km_medians(result, r_medians: pl.DataFrame) -> None:
    got = result.medians
    exp = r_medians.with_columns(pl.col("strata").map_elements(_r_group, return_dtype=pl.String))
    assert got["group"].to_list() == exp["strata"].to_list()
    assert got["n"].to_list() == exp["n"].to_list()
    assert got["events"].to_list() == exp["events"].to_list()
    for ours, theirs in [("median", "median"), ("median_lower", "lcl"), ("median_upper", "ucl")]:
        assert got[ours].to_list() == exp[theirs].cast(pl.Float64).to_list(), ours


@pytest.mark.parametrize("conf_type", ["log", "log-log", "plain"])
def test_km_survival_ci_matches_R_lung(lung, conf_type):
    """summary(survfit(Surv(time, status) ~ sex, conf.type = ...), censored = TRUE), every row."""
    res = kaplan_meier(lung, time="time", event="status", group="sex", conf_type=conf_type)
    assert res.conf_type == conf_type
    _assert_km_table(res, pl.read_csv(RESULTS / f"km_lung_sex_{conf_type}.csv", null_values=[""]))
    _assert_km_medians(res, pl.read_csv(RESULTS / f"km_lung_sex_{conf_type}_medians.csv", null_values=[""]))


def test_km_median_ci_matches_R_lung_by_sex(lung):
    """The md's survfit table: n, events, median, 0.95 LCL, 0.95 UCL by sex."""
    res = kaplan_meier(lung, time="time", event="status", group="sex")
    assert res.medians.rows() == [
        ("1", 138, 112, 270.0, 212.0, 310.0),
        ("2", 90, 53, 426.0, 348.0, 550.0),
    ]


@pytest.mark.parametrize(
    ("label", "data", "time", "event", "group"),
    [
        ("lung_all", "lung.csv", "time", "status", None),
        ("lung_ecog", "lung.csv", "time", "status", "ph.ecog"),
        ("rossi_fin", "rossi.csv", "week", "arrest", "fin"),
        ("edge", "km_edge.csv", "time", "status", "group"),
    ],
)
def test_km_matches_R_other_curves(label, data, time, event, group):
    """Single curve, four groups (one with a single subject), medians not reached,
    and R's median rule at its edges (curve flat at 0.5, curve ending at 0.5, no events)."""
    res = kaplan_meier(_read(data), time=time, event=event, group=group)
    _assert_km_table(res, pl.read_csv(RESULTS / f"km_{label}_log.csv", null_values=[""]))
    _assert_km_medians(res, pl.read_csv(RESULTS / f"km_{label}_log_medians.csv", null_values=[""]))


def test_km_median_not_reached_in_rossi_fin_groups(rossi):
    res = kaplan_meier(rossi, time="week", event="arrest", group="fin")
    assert res.medians["median"].null_count() == 2


# ----------------------------------------------------------------------------- log-rank
def _assert_logrank(result, r: dict) -> None:
    assert result.groups["group"].to_list() == [_r_group(g) for g in r["groups"]]
    assert result.groups["n"].to_list() == r["n"]
    np.testing.assert_allclose(result.groups["observed"].to_numpy(), r["observed"], rtol=0, atol=0)
    np.testing.assert_allclose(result.groups["expected"].to_numpy(), r["expected"], rtol=REL_EXACT)
    assert result.chi2 == pytest.approx(r["chisq"], rel=REL_EXACT)
    assert result.df == r["df"]
    assert result.p_value == pytest.approx(r["p"], rel=1e-10)


def test_logrank_matches_R_lung_by_sex(lung):
    res = logrank_test(lung, time="time", event="status", group="sex")
    obs = res.groups["observed"].to_list()
    exp = res.groups["expected"].to_list()
    assert obs == [112, 53]
    assert printed(exp[0], "91.6") and printed(exp[1], "73.4")
    assert printed(res.chi2, "10.3") and res.df == 1 and printed(res.p_value, "0.001")
    _assert_logrank(res, ref("logrank_lung_sex.json"))


def test_logrank_matches_R_rossi_fin(rossi):
    res = logrank_test(rossi, time="week", event="arrest", group="fin")
    assert printed(res.chi2, "3.8") and printed(res.p_value, "0.05")
    _assert_logrank(res, ref("logrank_rossi_fin.json"))


def test_logrank_matches_R_lung_four_groups(lung):
    """survdiff(Surv(time, status) ~ ph.ecog): 3 df, one group of a single subject."""
    res = logrank_test(lung, time="time", event="status", group="ph.ecog")
    assert res.n_dropped == 1
    _assert_logrank(res, ref("logrank_lung_ecog.json"))


def test_logrank_stratified_matches_R_lung(lung):
    """survdiff(Surv(time, status) ~ sex + strata(ph.ecog))."""
    res = logrank_test(lung, time="time", event="status", group="sex", strata="ph.ecog")
    _assert_logrank(res, ref("logrank_lung_sex_strata_ecog.json"))


# ----------------------------------------------------------------------------- provenance
def test_reference_files_record_R_versions():
    v = ref("versions.json")
    assert v["survival_version"] == "3.5.3"
    assert v["r_version"].startswith("R version 4.2.2")
    assert math.isfinite(ref("cox_lung_efron.json")["loglik"])
