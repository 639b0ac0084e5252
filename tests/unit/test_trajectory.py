"""Mood-trajectory mixed model (ketaoutcomes.models.trajectory).

* recovery of known fixed effects and variance components on data simulated
  here from the model itself (600 patients, log1p time);
* predicted means at day 0 are the intercepts; the figure renders;
* degenerate data give ``converged = False`` without raising;
* :func:`trajectory_data` on a hand-built case (baseline at day 0, FUENDTM and
  horizon cut-offs, ANLFL);
* on the package's synthetic cohort, ketamine IV is lower than SSRI at day 7;
* fixed effects and variance components equal lme4::lmer (REML) on a small committed data set
  (tests/reference/trajectory_reference.R writes the reference), to 1e-7 (1e-6 the standard
  errors, 2e-5 the variances).
"""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.trajectory import (
    TrajectoryResult,
    fit_trajectories,
    trajectory_data,
    trajectory_patients,
)
from ketaoutcomes.report.figures import trajectory_figure

REF = Path(__file__).resolve().parents[1] / "reference" / "results"

# Generating model: score = b0[arm] + u0 + (b1[arm] + u1) * log1p(day) + e
TRUE_FIXED = {
    "(Intercept)": 30.0,
    "ARM[ketamine_iv]": 0.5,
    "log1p(day)": -3.0,
    "ARM[ketamine_iv]:log1p(day)": -2.0,
}
TRUE_G = np.array([[16.0, -1.2], [-1.2, 1.44]])  # sd 4 and 1.2, correlation -0.25
TRUE_SIGMA2 = 9.0
VISITS = np.array([0, 1, 3, 7, 14, 21, 28, 42, 56], dtype=float)


def simulate_mixed(n_per_arm: int = 300, seed: int = 20240601) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(TRUE_G)
    rows = []
    for arm in ("ssri", "ketamine_iv"):
        b0 = TRUE_FIXED["(Intercept)"] + (TRUE_FIXED["ARM[ketamine_iv]"] if arm != "ssri" else 0.0)
        b1 = TRUE_FIXED["log1p(day)"] + (TRUE_FIXED["ARM[ketamine_iv]:log1p(day)"] if arm != "ssri" else 0.0)
        for i in range(n_per_arm):
            u0, u1 = chol @ rng.standard_normal(2)
            keep = rng.random(VISITS.size) > 0.15  # missing completely at random
            keep[0] = True
            for day in VISITS[keep]:
                t = math.log1p(day)
                score = b0 + u0 + (b1 + u1) * t + rng.normal(0.0, math.sqrt(TRUE_SIGMA2))
                rows.append((f"{arm}-{i:03d}", arm, float(day), score))
    return pl.DataFrame(rows, schema=["USUBJID", "ARM", "day", "score"], orient="row")


@pytest.fixture(scope="module")
def sim_fit() -> tuple[pl.DataFrame, TrajectoryResult]:
    data = simulate_mixed()
    return data, fit_trajectories(data)


# --------------------------------------------------------------------------- recovery
def test_fixed_effects_recovered_within_their_cis(sim_fit):
    _, res = sim_fit
    assert res.converged, res.notes
    assert res.n_patients == 600
    fixed = {r["term"]: r for r in res.fixed.iter_rows(named=True)}
    assert list(fixed) == list(TRUE_FIXED)
    for term, truth in TRUE_FIXED.items():
        r = fixed[term]
        assert r["lower"] <= truth <= r["upper"], (term, truth, r)
        assert r["lower"] < r["coef"] < r["upper"]
        assert r["z"] == pytest.approx(r["coef"] / r["se"])


def test_variance_components_roughly_recovered(sim_fit):
    _, res = sim_fit
    vc = dict(res.random_effects_cov.iter_rows())
    assert vc["var_intercept"] == pytest.approx(TRUE_G[0, 0], rel=0.25)
    assert vc["var_slope"] == pytest.approx(TRUE_G[1, 1], rel=0.3)
    assert vc["cov_intercept_slope"] == pytest.approx(TRUE_G[0, 1], abs=0.8)
    assert vc["var_residual"] == pytest.approx(TRUE_SIGMA2, rel=0.1)
    assert vc["corr_intercept_slope"] == pytest.approx(
        vc["cov_intercept_slope"] / math.sqrt(vc["var_intercept"] * vc["var_slope"])
    )


def test_predicted_day0_equals_intercepts_and_grid(sim_fit):
    _, res = sim_fit
    coef = dict(zip(res.fixed["term"], res.fixed["coef"], strict=True))
    pred = res.predicted
    day0 = dict(pred.filter(pl.col("day") == 0).select("arm", "mean").iter_rows())
    assert day0["ssri"] == pytest.approx(coef["(Intercept)"])
    assert day0["ketamine_iv"] == pytest.approx(coef["(Intercept)"] + coef["ARM[ketamine_iv]"])
    # the intercept's CI is the day-0 band of the reference arm
    ssri0 = pred.filter((pl.col("arm") == "ssri") & (pl.col("day") == 0)).row(0, named=True)
    icpt = res.fixed.filter(pl.col("term") == "(Intercept)").row(0, named=True)
    assert ssri0["lower"] == pytest.approx(icpt["lower"]) and ssri0["upper"] == pytest.approx(icpt["upper"])
    assert sorted(pred["day"].unique().to_list()) == [0, 1, 2, 3, 7, 14, 21, 28, 42, 56]
    assert (pred["lower"] < pred["mean"]).all() and (pred["mean"] < pred["upper"]).all()
    # day 56 of ketamine IV: model mean at log1p(56)
    k56 = pred.filter((pl.col("arm") == "ketamine_iv") & (pl.col("day") == 56))["mean"].item()
    t = math.log1p(56)
    expected = sum(coef.values()) - (coef["log1p(day)"] + coef["ARM[ketamine_iv]:log1p(day)"]) * (1 - t)
    assert k56 == pytest.approx(expected)


def test_notes_state_the_mar_assumption(sim_fit):
    _, res = sim_fit
    assert any("MAR" in n for n in res.notes)


def test_linear_time_option_and_bad_arguments(sim_fit):
    data, _ = sim_fit
    small = data.filter(pl.col("USUBJID").str.slice(-3).cast(pl.Int64) < 60)
    lin = fit_trajectories(small, time_terms="linear")
    assert lin.fixed["term"].to_list() == ["(Intercept)", "ARM[ketamine_iv]", "day", "ARM[ketamine_iv]:day"]
    assert lin.time_terms == "linear"
    with pytest.raises(ValueError, match="time_terms"):
        fit_trajectories(small, time_terms="sqrt")
    with pytest.raises(ValueError, match="reference_arm"):
        fit_trajectories(small, reference_arm="placebo")
    other = fit_trajectories(small, reference_arm="ketamine_iv")
    assert other.fixed["term"][1] == "ARM[ssri]"


def test_figure_is_png_data_uri(sim_fit):
    _, res = sim_fit
    uri = trajectory_figure(res, {"ssri": ("SSRI", "#1f77b4"), "ketamine_iv": ("Ketamine IV", "#d62728")})
    assert uri.startswith("data:image/png;base64,") and len(uri) > 1000


# --------------------------------------------------------------------------- degenerate
def test_degenerate_data_does_not_converge_and_does_not_raise():
    # only baseline ratings: f(day) is constant 0, the slope terms are not estimable
    only_day0 = pl.DataFrame(
        {
            "USUBJID": [f"P{i}" for i in range(20)],
            "ARM": ["ssri", "ketamine_iv"] * 10,
            "day": [0.0] * 20,
            "score": [float(20 + i % 5) for i in range(20)],
        }
    )
    res = fit_trajectories(only_day0)
    assert res.converged is False
    assert res.fixed["coef"].null_count() == 4
    assert res.notes and any("rank deficient" in n for n in res.notes)
    assert trajectory_figure(res, {}).startswith("data:image/png;base64,")

    # identical scores everywhere: zero variance, the optimizers cannot find a finite REML maximum
    flat = pl.DataFrame(
        {
            "USUBJID": [f"P{i // 3}" for i in range(60)],
            "ARM": ["ssri" if (i // 3) % 2 else "ketamine_iv" for i in range(60)],
            "day": [float(d) for _ in range(20) for d in (0, 7, 14)],
            "score": [25.0] * 60,
        }
    )
    res = fit_trajectories(flat)  # must not raise
    assert isinstance(res, TrajectoryResult)
    assert res.converged is False
    assert any("no optimizer converged" in n for n in res.notes)
    assert sum("did not converge" in n for n in res.notes) == 4  # every optimizer was tried

    empty = fit_trajectories(only_day0.clear())
    assert empty.converged is False and empty.n_ratings == 0


def test_nonconvergence_falls_back_and_reports(sim_fit):
    data, _ = sim_fit
    small = data.filter(pl.col("USUBJID").str.slice(-3).cast(pl.Int64) < 40)
    res = fit_trajectories(small, optimizers=("no-such-optimizer",))
    assert res.converged is False
    assert any("no-such-optimizer" in n for n in res.notes)
    fallback = fit_trajectories(small, optimizers=("no-such-optimizer", "lbfgs"))
    assert fallback.converged and fallback.optimizer == "lbfgs"
    assert any("after no-such-optimizer" in n for n in fallback.notes)


def test_missing_values_dropped_and_counted(sim_fit):
    data, _ = sim_fit
    small = data.filter(pl.col("USUBJID").str.slice(-3).cast(pl.Int64) < 40)
    holed = small.with_columns(pl.when(pl.int_range(pl.len()) < 5).then(None).otherwise(pl.col("score")).alias("score"))
    res = fit_trajectories(holed)
    assert res.n_ratings == small.height - 5
    assert any("5 rating(s)" in n for n in res.notes)


# --------------------------------------------------------------------------- trajectory_data
def _dt(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_trajectory_data_hand_built():
    adsl = pl.DataFrame(
        {
            "USUBJID": ["P1", "P2", "P3"],
            "ARM": ["ketamine_iv", "ssri", "ssri"],
            "TRTSDTM": [_dt("2024-01-08 09:00"), _dt("2024-02-01 00:00"), _dt("2024-03-01 00:00")],
            "FUENDTM": [_dt("2024-01-20 00:00"), None, None],
            "BASE": [30.0, 28.0, 25.0],
            "ANLFL": ["Y", "Y", "N"],
        }
    )
    s = [
        # P1: two pre-dose ratings (the later one is baseline), one too early for the window
        ("P1", "2023-12-01 10:00", "MADRS", 99),
        ("P1", "2024-01-02 10:00", "MADRS", 33),
        ("P1", "2024-01-08 08:00", "MADRS", 30),
        ("P1", "2024-01-08 21:00", "MADRS", 24),  # 12 h after first dose -> day 0.5
        ("P1", "2024-01-09 09:00", "QIDS", 10),  # other instrument
        ("P1", "2024-01-11 09:00", "MADRS", 20),  # day 3
        ("P1", "2024-01-20 00:00", "MADRS", 15),  # at FUENDTM: excluded (half-open)
        ("P1", "2024-01-25 09:00", "MADRS", 12),  # after FUENDTM
        # P2: baseline at the first dose itself, horizon cuts at day 56
        ("P2", "2024-02-01 00:00", "MADRS", 28),
        ("P2", "2024-03-28 00:00", "MADRS", 18),  # day 56: kept
        ("P2", "2024-03-28 12:00", "MADRS", 17),  # day 56.5: dropped
        # P3 not analysed
        ("P3", "2024-03-01 00:00", "MADRS", 25),
        ("P3", "2024-03-08 00:00", "MADRS", 20),
    ]
    scores = pl.DataFrame(
        {
            "patient_id": [r[0] for r in s],
            "assessed_at": [_dt(r[1]) for r in s],
            "instrument": [r[2] for r in s],
            "total_score": [r[3] for r in s],
        }
    )
    out = trajectory_data(adsl, scores, instrument="MADRS", horizon_days=56)
    assert out.columns == ["USUBJID", "ARM", "day", "week", "score", "BASE", "baseline"]
    p1 = out.filter(pl.col("USUBJID") == "P1")
    assert p1["day"].to_list() == [0.0, 0.5, 3.0]
    assert p1["score"].to_list() == [30.0, 24.0, 20.0]
    assert p1["baseline"].to_list() == [True, False, False]
    assert p1["week"].to_list() == pytest.approx([0.0, 0.5 / 7, 3 / 7])
    p2 = out.filter(pl.col("USUBJID") == "P2")
    assert p2["day"].to_list() == [0.0, 56.0]
    assert p2["score"].to_list() == [28.0, 18.0]
    assert "P3" not in out["USUBJID"].to_list()
    # a shorter horizon drops P2's day-56 rating
    short = trajectory_data(adsl, scores, instrument="MADRS", horizon_days=28)
    assert short.filter(pl.col("USUBJID") == "P2")["day"].to_list() == [0.0]


def test_trajectory_patients_and_the_rows_of_some_patients():
    """The pairs (ARM, USUBJID) with rows, found without building the rows, and the rows of chosen
    patients alone: checked against the whole data set built by ``trajectory_data``."""
    adsl = pl.DataFrame({
        "USUBJID": ["P1", "P2", "P3", "P4", "P5"],
        "ARM": ["ketamine_iv", "ssri", "ssri", "ketamine_iv", "ssri"],
        "TRTSDTM": [_dt("2024-01-08 09:00")] * 5,
        "FUENDTM": [None, None, None, _dt("2024-01-10 00:00"), None],
        "BASE": [30.0, 28.0, 25.0, 27.0, 26.0],
        "ANLFL": ["Y", "Y", "N", "Y", "Y"],
    })
    s = [
        ("P1", "2024-01-08 08:00", 30), ("P1", "2024-01-09 09:00", 25),
        ("P2", "2024-01-07 09:00", 28), ("P2", "2024-01-20 09:00", 20),
        ("P3", "2024-01-08 08:00", 25), ("P3", "2024-01-09 09:00", 20),  # not analysed
        ("P4", "2024-01-12 09:00", 20),  # only after FUENDTM: no row
        ("P5", "2024-01-08 08:00", None), ("P5", "2024-05-01 09:00", 20),  # null baseline, past the horizon
    ]
    scores = pl.DataFrame({"patient_id": [r[0] for r in s], "assessed_at": [_dt(r[1]) for r in s],
                           "instrument": ["MADRS"] * len(s), "total_score": [r[2] for r in s]},
                          schema_overrides={"total_score": pl.Int64})
    whole = trajectory_data(adsl, scores, instrument="MADRS")
    pairs = trajectory_patients(adsl, scores, instrument="MADRS")
    assert pairs.rows() == [("ketamine_iv", "P1"), ("ssri", "P2")]
    assert pairs.equals(whole.select("ARM", "USUBJID").unique().sort("ARM", "USUBJID"))
    for chosen in (["P2"], ["P1", "P2"], ["P4", "P9"], []):
        some = trajectory_data(adsl, scores, instrument="MADRS", patients=pl.DataFrame({"USUBJID": chosen},
                                                                                       schema={"USUBJID": pl.String}))
        assert some.equals(whole.filter(pl.col("USUBJID").is_in(chosen))), chosen


# --------------------------------------------------------------------------- synthetic cohort
@pytest.mark.slow
def test_synthetic_cohort_ketamine_iv_faster_than_ssri():
    from ketaoutcomes.derive import derive_all
    from ketaoutcomes.registries import load_registries
    from ketaoutcomes.settings import SimulationSettings, StudySettings
    from ketaoutcomes.simulate import simulate_frames

    frames = simulate_frames(SimulationSettings(n_patients=1000, seed=1))
    study = StudySettings()
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=study)
    data = trajectory_data(d.adsl, frames["mood_scores"], instrument=study.cohort.instrument)
    n_anl = d.adsl.filter(pl.col("ANLFL") == "Y").height
    assert data["USUBJID"].n_unique() == n_anl  # every analysed course has a post-baseline rating
    res = fit_trajectories(data)
    assert res.converged, res.notes
    day7 = dict(res.predicted.filter(pl.col("day") == 7).select("arm", "mean").iter_rows())
    assert day7["ketamine_iv"] < day7["ssri"], day7


# --------------------------------------------------------------------------- lme4 reference
def _read_ref(name: str) -> dict[str, dict[str, float]]:
    with (REF / name).open() as fh:
        return {r[next(iter(r))]: {k: float(v) for k, v in list(r.items())[1:]} for r in csv.DictReader(fh)}


@pytest.mark.parametrize("time_terms", ["log1p", "linear"])
def test_fixed_effects_match_lmer_reml(time_terms):
    path = REF / f"trajectory_lmer_{time_terms}.csv"
    # committed beside the test; regenerate with Rscript tests/reference/trajectory_reference.R
    assert path.exists(), f"missing lme4 reference {path}"
    data = pl.read_csv(REF / "trajectory_data.csv")
    res = fit_trajectories(data, time_terms=time_terms)
    assert res.converged, res.notes
    ref = _read_ref(path.name)
    got = {r["term"]: r for r in res.fixed.iter_rows(named=True)}
    assert set(got) == set(ref)
    for term, r in ref.items():
        # statsmodels started at the REML maximum of models.reml: within 1e-8 of lmer here (from its own
        # start, statsmodels stopped 2e-6 away, and 5e-4 in the variances)
        assert got[term]["coef"] == pytest.approx(r["coef"], rel=1e-7, abs=1e-8), term
        assert got[term]["se"] == pytest.approx(r["se"], rel=1e-6), term
    vc_ref = _read_ref(f"trajectory_lmer_{time_terms}_varcorr.csv")
    vc = dict(res.random_effects_cov.iter_rows())
    for comp in ("var_intercept", "var_slope", "cov_intercept_slope", "var_residual"):
        assert vc[comp] == pytest.approx(vc_ref[comp]["estimate"], rel=2e-5, abs=1e-8), comp


def test_remembered_fixed_effects_give_statsmodels_fit_to_the_last_bit(sim_fit):
    """The MixedLM that answers the optimizer's second GLS step of an iteration from the first: checked
    against statsmodels' own MixedLM on the same data (every estimate bit for bit, fewer passes)."""
    import warnings

    from statsmodels.regression.mixed_linear_model import MixedLM

    from ketaoutcomes.models.trajectory import _design, _mixedlm

    data, _ = sim_fit
    d = data.filter(pl.col("USUBJID").str.slice(-3).cast(pl.Int64) < 60).sort("USUBJID", "day")
    t = np.log1p(d["day"].to_numpy())
    X = _design(d["ARM"].to_numpy(), t, ["ssri", "ketamine_iv"])
    Z = np.column_stack([np.ones_like(t), t])
    args = (d["score"].to_numpy(), X)
    fits, passes = [], []
    for cls in (MixedLM, _mixedlm()):
        model = cls(*args, groups=d["USUBJID"].to_numpy(), exog_re=Z)
        n = [0]  # passes of statsmodels' GLS step (get_fe_params)
        original = MixedLM.get_fe_params

        def counted(self, *a, _n=n, **k):
            _n[0] += 1
            return original(self, *a, **k)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MixedLM.get_fe_params = counted
            try:
                fits.append(model.fit(reml=True, method="lbfgs"))
            finally:
                MixedLM.get_fe_params = original
        passes.append(n[0])
    plain, remembered = fits
    for attr in ("fe_params", "cov_re", "scale", "bse_fe", "llf"):
        assert np.array_equal(np.asarray(getattr(plain, attr)), np.asarray(getattr(remembered, attr))), attr
    assert passes[1] < 0.6 * passes[0], passes
