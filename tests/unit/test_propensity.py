"""Propensity scores, weights, balance and the diagnostics gate (ketaoutcomes.models.propensity).

Each test says what it is checked against: a hand computation, numpy by hand,
a known property (randomisation balances covariates; overlap weights with a
logistic propensity score balance the model's covariates exactly), or the
confounding the synthetic-cohort generator builds in.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.propensity import (
    PropensityResult,
    fit_propensity,
    love_plot_data,
    preference_score,
)


# --------------------------------------------------------------------------- simulated data
def _frame(x: np.ndarray, g: np.ndarray, treated: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({
        "USUBJID": [f"P{i:05d}" for i in range(len(x))],
        "ARM": np.where(treated, "ketamine_iv", "ssri"),
        "X": x,
        "G": g,
    })


def _simulate(seed: int, beta_x: float, n: int = 4000, randomised: bool = False) -> pl.DataFrame:
    """X ~ N(0, 1), G in {a, b, c}; logit P(target) = -0.2 + beta_x X + 0.5 [G=b] - 0.5 [G=c]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    g = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    if randomised:
        p = np.full(n, 0.5)
    else:
        p = 1.0 / (1.0 + np.exp(-(-0.2 + beta_x * x + 0.5 * (g == "b") - 0.5 * (g == "c"))))
    return _frame(x, g, rng.uniform(size=n) < p)


def _fit(frame: pl.DataFrame, **kw) -> PropensityResult:
    return fit_propensity(frame, target="ketamine_iv", comparator="ssri", covariates=["X", "G"],
                          categorical=["G"], **kw)


def _row(result: PropensityResult, covariate: str) -> dict:
    return result.balance.filter(pl.col("covariate") == covariate).row(0, named=True)


# --------------------------------------------------------------------------- SMD formula
def test_smd_before_weighting_matches_a_hand_computation():
    """Tiny frame; means, sample variances (ddof=1) and SMDs worked out by hand."""
    frame = pl.DataFrame({
        "USUBJID": ["1", "2", "3", "4", "5", "6", "7"],
        "ARM": ["T", "T", "T", "C", "C", "C", "C"],
        "X": [1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 8.0],
        "SEX": ["F", "F", "M", "F", "M", "M", "M"],
    })
    r = fit_propensity(frame, target="T", comparator="C", covariates=["X", "SEX"], categorical=["SEX"])
    # X: target mean 2, var 1; comparator mean 5, var 20/3; pooled SD sqrt((1 + 20/3) / 2)
    x = _row(r, "X")
    assert x["mean_target_before"] == pytest.approx(2.0)
    assert x["mean_comparator_before"] == pytest.approx(5.0)
    assert x["sd_pooled"] == pytest.approx(math.sqrt(23 / 6))
    assert x["smd_before"] == pytest.approx(-3 / math.sqrt(23 / 6))
    # SEX[M]: target 0,0,1 (mean 1/3, var 1/3); comparator 0,1,1,1 (mean 3/4, var 1/4)
    m = _row(r, "SEX[M]")
    assert m["mean_target_before"] == pytest.approx(1 / 3)
    assert m["mean_comparator_before"] == pytest.approx(3 / 4)
    assert m["smd_before"] == pytest.approx((1 / 3 - 3 / 4) / math.sqrt((1 / 3 + 1 / 4) / 2))
    # reference level = most frequent (M: 4 of 7); every level still gets a balance row
    assert dict(r.reference_levels) == {"SEX": "M"}
    assert r.balance["covariate"].to_list() == ["X", "SEX[F]", "SEX[M]"]
    assert r.balance["in_model"].to_list() == [True, True, False]
    assert _row(r, "SEX[F]")["smd_before"] == pytest.approx(-m["smd_before"])
    assert (r.n_target, r.n_comparator) == (3, 4)


def test_weighted_smd_and_weights_match_numpy_by_hand():
    """IPTW weights recomputed from ps (stabilised), weighted means by np.average,
    denominator the unweighted pooled SD by np.var(ddof=1), ESS by its formula."""
    frame = _simulate(seed=3, beta_x=0.8, n=1500)
    r = _fit(frame)
    s = r.scores
    t = s["treated"].to_numpy() == 1
    ps, w = s["ps"].to_numpy(), s["weight"].to_numpy()
    share = t.mean()
    expected_w = np.minimum(np.where(t, share / ps, (1 - share) / (1 - ps)), 10.0)
    np.testing.assert_allclose(w, expected_w, rtol=1e-12)
    x = frame["X"].to_numpy()  # scores keep the frame's row order (no rows dropped here)
    assert s["USUBJID"].to_list() == frame["USUBJID"].to_list()
    sd = math.sqrt((np.var(x[t], ddof=1) + np.var(x[~t], ddof=1)) / 2)
    smd_after = (np.average(x[t], weights=w[t]) - np.average(x[~t], weights=w[~t])) / sd
    row = _row(r, "X")
    assert row["mean_target_after"] == pytest.approx(np.average(x[t], weights=w[t]), rel=1e-12)
    assert row["smd_after"] == pytest.approx(smd_after, rel=1e-10)
    gb = (frame["G"].to_numpy() == "b").astype(float)
    sd_b = math.sqrt((np.var(gb[t], ddof=1) + np.var(gb[~t], ddof=1)) / 2)
    assert _row(r, "G[b]")["smd_after"] == pytest.approx(
        (np.average(gb[t], weights=w[t]) - np.average(gb[~t], weights=w[~t])) / sd_b, rel=1e-10)
    assert r.ess_target == pytest.approx(w[t].sum() ** 2 / (w[t] ** 2).sum())
    assert r.ess_comparator == pytest.approx(w[~t].sum() ** 2 / (w[~t] ** 2).sum())
    assert r.max_abs_smd_after == pytest.approx(r.balance["smd_after"].abs().max())


def test_overlap_weights_are_one_minus_ps_and_ps():
    """Overlap weights against their definition; never truncated."""
    r = _fit(_simulate(seed=4, beta_x=1.0, n=800), weighting="overlap")
    s = r.scores
    expected = np.where(s["treated"].to_numpy() == 1, 1 - s["ps"].to_numpy(), s["ps"].to_numpy())
    np.testing.assert_allclose(s["weight"].to_numpy(), expected)
    assert r.truncation is None and r.n_truncated == 0


# --------------------------------------------------------------------------- simulations
def test_randomised_simulation_has_high_equipoise_small_smds_and_passes():
    """Arm independent of covariates (n=4000): randomisation balances them, so SMDs
    are small before and after, preference scores sit near 0.5, the gate passes."""
    r = _fit(_simulate(seed=1, beta_x=0.0, randomised=True))
    assert r.converged
    assert r.equipoise > 0.8
    assert r.balance["smd_before"].abs().max() < 0.1
    assert r.max_abs_smd_after < 0.1
    assert r.diagnostics_passed and r.gate_reasons == ()


def test_confounded_simulation_iptw_restores_balance_and_passes():
    """Treatment probability strongly depends on X (log-OR 1 per SD): SMD before is
    large; IPTW with the correctly specified model brings it well below 0.1."""
    r = _fit(_simulate(seed=0, beta_x=1.0))
    assert r.converged
    assert _row(r, "X")["smd_before"] > 0.3
    assert r.max_abs_smd_after < 0.05
    assert r.equipoise >= 0.2
    assert r.diagnostics_passed, r.gate_reasons


def test_strong_confounder_lowers_equipoise_and_the_gate_fails_with_that_reason():
    """Log-OR 5 per SD: most preference scores are near 0 or 1; equipoise < 20%."""
    r = _fit(_simulate(seed=0, beta_x=5.0))
    assert r.equipoise < 0.2
    assert not r.diagnostics_passed
    assert any(reason.startswith("equipoise ") and "< 20%" in reason for reason in r.gate_reasons), r.gate_reasons
    # equipoise is the share of preference scores within [0.3, 0.7]
    pref = r.scores["preference"].to_numpy()
    assert r.equipoise == pytest.approx(np.mean((pref >= 0.3) & (pref <= 0.7)))


def test_overlap_weights_balance_the_model_covariates_exactly():
    """Known property: with a logistic PS fitted by maximum likelihood (intercept
    included), overlap weights make the weighted means of every model covariate
    equal between arms (the score equations); the reference level follows. (The
    ridge fit's score equations carry the penalty: tests/unit/test_ps_model.py.)"""
    r = _fit(_simulate(seed=5, beta_x=1.5), weighting="overlap", model="logistic")
    assert r.converged
    assert r.balance["smd_before"].abs().max() > 0.3
    np.testing.assert_allclose(r.balance["smd_after"].to_numpy(), 0.0, atol=1e-8)
    assert r.diagnostics_passed


def test_separation_does_not_crash_and_fails_the_gate():
    """A covariate that perfectly predicts treatment: no exception. Unpenalised: not
    converged (or extreme scores), the gate fails and says why. Ridge: a finite fit
    whose scores still order the arms perfectly: the gate fails for no overlap."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=300)
    frame = _frame(x, rng.choice(["a", "b"], size=300), x > 0)
    r = _fit(frame, model="logistic")
    assert not r.converged
    ps = r.scores["ps"].to_numpy()
    assert np.isnan(ps).all() or ps.min() < 1e-6 or ps.max() > 1 - 1e-6
    assert not r.diagnostics_passed
    assert any("did not converge" in reason for reason in r.gate_reasons), r.gate_reasons
    ridge = _fit(frame)
    assert ridge.converged and np.isfinite(ridge.scores["ps"].to_numpy()).all()
    assert not ridge.diagnostics_passed and not any("converge" in reason for reason in ridge.gate_reasons)
    assert any(reason.startswith("max |SMD| after weighting") and "(X" in reason for reason in ridge.gate_reasons)
    # on X alone the ridge scores are monotone in X, so they order the arms perfectly: no overlap
    alone = fit_propensity(frame, target="ketamine_iv", comparator="ssri", covariates=["X"])
    assert alone.converged and not alone.diagnostics_passed
    assert "no overlap: the propensity scores separate the arms completely" in alone.gate_reasons, alone.gate_reasons


def test_quasi_separation_by_a_category_seen_in_one_arm_only_fails_the_gate():
    """Every G=c patient (20%, not a rare level) is on the target arm (quasi-complete
    separation). Unpenalised: no convergence. Ridge: a finite fit, and the gate fails
    for the real reason: no comparator patient has G=c, so no weighting balances it."""
    rng = np.random.default_rng(8)
    n = 600
    x = rng.normal(size=n)
    g = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    treated = np.where(g == "c", True, rng.uniform(size=n) < 0.5)
    r = _fit(_frame(x, g, treated), model="logistic")
    assert not r.converged
    assert not r.diagnostics_passed
    assert any("did not converge" in reason for reason in r.gate_reasons)
    ridge = _fit(_frame(x, g, treated))
    assert ridge.converged and not ridge.diagnostics_passed
    assert _row(ridge, "G[c]")["mean_comparator_after"] == 0.0
    assert any(reason.startswith("max |SMD| after weighting") and "G[c]" in reason for reason in ridge.gate_reasons), \
        ridge.gate_reasons


def test_too_few_patients_is_a_diagnostic_that_could_not_be_computed():
    """One comparator patient: no model can be fitted; the gate fails, nothing raises."""
    frame = _simulate(seed=9, beta_x=0.0, n=50, randomised=True)
    frame = pl.concat([frame.filter(pl.col("ARM") == "ketamine_iv"), frame.filter(pl.col("ARM") == "ssri").head(1)])
    r = _fit(frame)
    assert not r.diagnostics_passed and not r.converged
    assert r.equipoise is None and r.max_abs_smd_after is None
    assert any("could not be computed" in reason for reason in r.gate_reasons), r.gate_reasons
    nobody = _fit(frame.filter(pl.col("ARM") == "other arm"))
    assert not nobody.diagnostics_passed and nobody.scores.height == 0


def test_truncation_counts_and_caps_the_stabilised_weights():
    """Strong confounding: stabilised weights above the cap (recomputed from ps by
    hand) are counted and set to the cap; none exceeds it; without a cap they do."""
    frame = _simulate(seed=2, beta_x=3.0, n=2000)
    r = _fit(frame, truncation=5.0)
    s = r.scores
    t, ps = s["treated"].to_numpy() == 1, s["ps"].to_numpy()
    raw = np.where(t, t.mean() / ps, (1 - t.mean()) / (1 - ps))
    assert r.n_truncated == int((raw > 5.0).sum()) > 0
    assert s["weight"].max() <= 5.0
    assert r.truncation == 5.0
    assert any(f"{r.n_truncated} stabilised IPTW weights truncated at 5" in note for note in r.notes)
    untruncated = _fit(frame, truncation=None)
    assert untruncated.n_truncated == 0 and untruncated.scores["weight"].max() > 5.0


# --------------------------------------------------------------------------- preference score
def test_preference_score_matches_the_formula_on_a_hand_case():
    """logit(pref) = logit(ps) - logit(P), worked by hand:
    ps=0.8, P=0.5 -> 0.8; ps=0.5, P=0.8 -> 1/(1+4) = 0.2; ps=0.75, P=0.25 -> 9/10."""
    np.testing.assert_allclose(preference_score(np.array([0.8]), 0.5), [0.8])
    np.testing.assert_allclose(preference_score(np.array([0.5]), 0.8), [0.2])
    np.testing.assert_allclose(preference_score(np.array([0.75]), 0.25), [0.9])
    np.testing.assert_allclose(preference_score(np.array([0.0, 1.0]), 0.3), [0.0, 1.0])


def test_result_preference_scores_use_the_share_treated():
    r = _fit(_simulate(seed=6, beta_x=1.0, n=1000))
    s = r.scores
    share = r.n_target / (r.n_target + r.n_comparator)
    ps = s["ps"].to_numpy()
    odds = (ps / (1 - ps)) / (share / (1 - share))
    np.testing.assert_allclose(s["preference"].to_numpy(), odds / (1 + odds), rtol=1e-12)


# --------------------------------------------------------------------------- gate and inputs
def test_gate_names_every_covariate_over_the_threshold_worst_first():
    """The reason names the worst covariate with the max |SMD|, then every other one at or above
    the threshold with its |SMD| (worked out here from the balance table)."""
    r = _fit(_simulate(seed=0, beta_x=1.0), max_smd=1e-12)
    ranked = r.balance.sort(pl.col("smd_after").abs(), descending=True)
    worst, *others = ranked["covariate"].to_list()
    also = ", ".join(f"{c} {abs(v):.3g}" for c, v in ranked.select("covariate", "smd_after").rows()[1:])
    assert not r.diagnostics_passed and others
    assert f"max |SMD| after weighting {r.max_abs_smd_after:.3g} >= 1e-12 ({worst}; also {also})" in r.gate_reasons


def test_missing_covariates_are_dropped_and_counted():
    frame = _simulate(seed=10, beta_x=0.5, n=500).with_columns(
        pl.when(pl.int_range(pl.len()) < 7).then(None).otherwise(pl.col("X")).alias("X"),
        pl.when(pl.int_range(pl.len()) == 100).then(None).otherwise(pl.col("G")).alias("G"),
    )
    r = _fit(frame)
    assert r.n_dropped == 8
    assert r.n_target + r.n_comparator == 492 == r.scores.height
    assert any("8 rows dropped for missing covariates (X: 7, G: 1)" in note for note in r.notes)


def test_other_arms_are_ignored_and_bad_options_raise():
    frame = _simulate(seed=11, beta_x=0.5, n=400)
    other = frame.head(50).with_columns(pl.lit("ketamine_im").alias("ARM"))
    r = _fit(pl.concat([frame, other]))
    assert r.scores.height == 400 and set(r.scores["ARM"]) == {"ketamine_iv", "ssri"}
    with pytest.raises(ValueError):
        _fit(frame, weighting="stratification")
    with pytest.raises(ValueError):
        fit_propensity(frame, target="ssri", comparator="ssri", covariates=["X"])
    with pytest.raises(ValueError):  # a text column must be declared categorical
        fit_propensity(frame, target="ketamine_iv", comparator="ssri", covariates=["X", "G"])
    with pytest.raises(KeyError):
        fit_propensity(frame, target="ketamine_iv", comparator="ssri", covariates=["NOPE"])


def test_love_plot_data_stacks_balance_rows_with_labels():
    a = _fit(_simulate(seed=12, beta_x=0.5, n=500))
    b = _fit(_simulate(seed=13, beta_x=0.5, n=500), weighting="overlap")
    out = love_plot_data([a, b])
    assert out.height == a.balance.height + b.balance.height
    assert out.filter(pl.col("weighting") == "overlap")["covariate"].to_list() == b.balance["covariate"].to_list()
    assert set(out["target"]) == {"ketamine_iv"} and set(out["comparator"]) == {"ssri"}
    np.testing.assert_allclose(out["abs_smd_after"].to_numpy(), np.abs(out["smd_after"].to_numpy()))
    empty = love_plot_data([])
    assert empty.height == 0 and "smd_after" in empty.columns


# --------------------------------------------------------------------------- synthetic cohort
def test_synthetic_cohort_priorfail_is_confounded_ketamine_iv_vs_ssri():
    """The generator makes ketamine more likely with more prior failed trials, so
    PRIORFAIL is imbalanced before weighting (max |SMD| after and equipoise are
    reported, not asserted)."""
    from ketaoutcomes.derive import derive_all
    from ketaoutcomes.registries import load_registries
    from ketaoutcomes.settings import SimulationSettings, StudySettings
    from ketaoutcomes.simulate import simulate_frames

    frames = simulate_frames(SimulationSettings(n_patients=3000, seed=2))
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=StudySettings())
    adsl = d.adsl.filter(pl.col("ANLFL") == "Y")
    r = fit_propensity(adsl, target="ketamine_iv", comparator="ssri",
                       covariates=["AGE", "SEX", "BASE", "PRIORFAIL", "SITEID"], categorical=["SEX", "SITEID"])
    assert r.converged
    assert _row(r, "PRIORFAIL")["smd_before"] > 0.3
    assert {"AGE", "BASE", "PRIORFAIL", "SEX[M]", "SITEID[S02]"} <= set(r.balance["covariate"])
    print(f"ketamine_iv vs ssri: max |SMD| after = {r.max_abs_smd_after:.4f}, equipoise = {r.equipoise:.3f}, "
          f"PRIORFAIL SMD before = {_row(r, 'PRIORFAIL')['smd_before']:.3f}")


# --------------------------------------------------------------------------- SMD standard error, balance_alpha
def test_smd_se_after_unit_weights_matches_the_closed_form():
    """With every weight 1 (matching), CohortMethod's IPTW variance reduces to
    ((n_t - 1) var_t / n_t^2 + (n_c - 1) var_c / n_c^2) / sd^2: checked by hand with numpy."""
    frame = _simulate(3, beta_x=0.0, n=600, randomised=True)
    res = _fit(frame, weighting="matching", truncation=None, caliper=None)
    matched = frame.join(res.scores.filter(pl.col("weight").is_not_null()).select("USUBJID"), on="USUBJID")
    x_t = matched.filter(pl.col("ARM") == "ketamine_iv")["X"].to_numpy()
    x_c = matched.filter(pl.col("ARM") == "ssri")["X"].to_numpy()
    row = _row(res, "X")
    num = (len(x_t) - 1) * x_t.var(ddof=1) / len(x_t) ** 2 + (len(x_c) - 1) * x_c.var(ddof=1) / len(x_c) ** 2
    assert math.isclose(row["smd_se_after"], math.sqrt(num) / row["sd_pooled"], rel_tol=1e-12)
    from scipy import stats
    assert math.isclose(row["smd_p_after"], stats.norm.sf((abs(row["smd_after"]) - 0.1) / row["smd_se_after"]),
                        rel_tol=1e-12)


def test_balance_alpha_fails_only_covariates_significantly_above_the_threshold():
    """Randomised assignment, 400 patients, matching: X's |SMD| after matching is 0.18 by chance with
    this seed; the strict rule fails it, the Hripcsak et al. (2025) test does not (p ~ 0.2). A strongly
    confounded sample matched without a caliper keeps a real imbalance, which fails both."""
    rng = np.random.default_rng(2)
    n = 400
    treated = rng.uniform(size=n) < 0.5
    rare = np.where(rng.uniform(size=n) < 0.03, "U", "F")
    frame = pl.DataFrame({"USUBJID": [f"P{i}" for i in range(n)], "ARM": np.where(treated, "ketamine_iv", "ssri"),
                          "X": rng.normal(size=n), "G": rare})
    # the unpenalised model with every level (G = U is 7 of 400, 1.75%), as this seed was chosen for
    kw = dict(weighting="matching", truncation=None, model="logistic", min_level_prevalence=0)
    strict = _fit(frame, **kw)
    assert not strict.diagnostics_passed and strict.gate_reasons == ("max |SMD| after matching 0.18 >= 0.1 (X)",)
    lenient = _fit(frame, balance_alpha=0.05, **kw)
    assert lenient.diagnostics_passed, lenient.gate_reasons
    assert 0.05 / 3 < _row(lenient, "X")["smd_p_after"] < 0.5

    confounded = _simulate(5, beta_x=2.5, n=4000)
    res = _fit(confounded, weighting="matching", truncation=None, caliper=None, balance_alpha=0.05)
    assert not res.diagnostics_passed
    assert any(r.startswith("|SMD| after matching significantly above 0.1 (p < 0.05/4, Bonferroni) for X")
               for r in res.gate_reasons), res.gate_reasons


# --------------------------------------------------------------------------- rare levels, ridge by default
def _with_rare_level(seed: int, n: int = 2000, n_rare: int = 18, rare_arm: str | None = None) -> pl.DataFrame:
    """The default cohort's situation: a sex-like covariate S with F, M and U, U on 18 of 2,000
    patients; with ``rare_arm``, every U patient is on that arm."""
    rng = np.random.default_rng(seed)
    frame = _simulate(seed, beta_x=0.8, n=n)
    s = rng.choice(["F", "M"], size=n, p=[0.62, 0.38]).astype(object)
    pool = np.arange(n) if rare_arm is None else np.flatnonzero(frame["ARM"].to_numpy() == rare_arm)
    s[rng.choice(pool, size=n_rare, replace=False)] = "U"
    return frame.with_columns(pl.Series("S", s.astype(str)))


def _fit_s(frame: pl.DataFrame, **kw) -> PropensityResult:
    return fit_propensity(frame, target="ketamine_iv", comparator="ssri", covariates=["X", "G", "S"],
                          categorical=["G", "S"], **kw)


def test_a_rare_level_is_left_out_of_model_and_gate_but_still_reported():
    """U on 18 of 2,000 patients, all of them on the comparator arm: no weighting can balance it
    (the target arm has none). Below min_level_prevalence (2%) it leaves the model and the gate,
    the other covariates decide, and the note names it with its count. With the rule off (0), S[U]
    counts in the gate, and the unpenalised model does not converge (quasi-separation), as
    sublingual ketamine's model did on the default cohort."""
    frame = _with_rare_level(seed=21, rare_arm="ssri")
    r = _fit_s(frame)
    assert r.model == "ridge" and r.converged
    assert r.levels_left_out == (("S[U]", 18),)
    u = _row(r, "S[U]")
    assert (u["in_model"], u["in_gate"], u["mean_target_before"]) == (False, False, 0.0)
    assert abs(u["smd_after"]) > 0.1
    assert r.diagnostics_passed, r.gate_reasons
    gated = r.balance.filter(pl.col("in_gate"))
    # the gate checks the model's coding: F together with U, and M
    assert set(r.balance["covariate"]) - set(gated["covariate"]) == {"S[U]"}
    assert {"S[F or U]", "S[M]"} <= set(gated["covariate"]) and "S[F]" not in r.balance["covariate"]
    f_or_u = _row(r, "S[F or U]")
    assert f_or_u["smd_after"] == pytest.approx(-_row(r, "S[M]")["smd_after"], rel=1e-12)
    assert f_or_u["mean_comparator_before"] == pytest.approx(1 - _row(r, "S[M]")["mean_comparator_before"])
    assert r.max_abs_smd_after == pytest.approx(gated["smd_after"].abs().max())
    assert any("left out of the propensity model and the balance gate: S[U] (18 patients, 0.9%)" in note
               for note in r.notes), r.notes
    kept = _fit_s(frame, min_level_prevalence=0)
    assert kept.levels_left_out == () and _row(kept, "S[U]")["in_gate"] and _row(kept, "S[U]")["in_model"]
    assert kept.max_abs_smd_after == pytest.approx(kept.balance["smd_after"].abs().max())
    unpenalised = _fit_s(frame, min_level_prevalence=0, model="logistic")
    assert not unpenalised.converged and not unpenalised.diagnostics_passed


def test_levels_left_out_together_stay_below_the_threshold_and_a_common_level_is_kept():
    """Prevalence is counted over the two arms compared. 18 U of 2,000 (0.9%) goes at 2%; at 0.5%
    it stays. A covariate whose every non-reference level is left out is constant in the model's
    coding: its gated row (F or U) is 1 for everybody, SMD 0."""
    frame = _with_rare_level(seed=22)
    assert _fit_s(frame).levels_left_out == (("S[U]", 18),)
    assert _fit_s(frame, min_level_prevalence=0.005).levels_left_out == ()
    two = frame.with_columns(pl.when(pl.col("S") == "U").then(pl.lit("U")).otherwise(pl.lit("F")).alias("S"))
    r = _fit_s(two)
    assert r.levels_left_out == (("S[U]", 18),)
    s_rows = r.balance.filter(pl.col("variable") == "S")
    assert s_rows.select("covariate", "in_gate").rows() == [("S[F or U]", True), ("S[U]", False)]
    assert _row(r, "S[F or U]")["smd_after"] == 0.0
    assert _row(r, "G[b]")["in_gate"] and _row(r, "X")["in_gate"]


def test_balance_alpha_counts_only_the_rows_in_the_gate():
    """Weights capped at 1 leave X's imbalance (SMD 0.6 before) in place, significantly above 0.1;
    S[U] (left out) is neither tested nor counted in the Bonferroni correction."""
    frame = _with_rare_level(seed=23, rare_arm="ssri")
    r = _fit_s(frame, balance_alpha=0.05, truncation=1.0)
    k = r.balance.filter(pl.col("in_gate")).height
    assert k == r.balance.height - 1
    assert any(f"(p < 0.05/{k}, Bonferroni)" in reason for reason in r.gate_reasons), r.gate_reasons
    assert all("S[U]" not in reason for reason in r.gate_reasons)


def test_new_options_are_checked():
    frame = _simulate(seed=11, beta_x=0.5, n=400)
    for bad in ({"model": "firth"}, {"ridge_variance": 0.0}, {"min_level_prevalence": 0.5},
                {"min_level_prevalence": -0.1}):
        with pytest.raises(ValueError):
            _fit(frame, **bad)


@pytest.mark.parametrize("weighting", ["iptw", "overlap", "matching"])
def test_without_balance_the_scores_and_weights_are_the_same_and_no_table_is_made(weighting):
    """What a bootstrap replicate asks for (balance=False): the same scores, weights and matches as
    the full fit, checked against it; only the balance table and its gate are left out."""
    frame = _simulate(seed=3, beta_x=1.5, n=1500)
    full, lean = _fit(frame, weighting=weighting), _fit(frame, weighting=weighting, balance=False)
    assert full.balance.height > 0 and lean.balance.height == 0
    assert lean.balance.schema == full.balance.schema
    assert lean.scores.equals(full.scores, null_equal=True)
    assert lean.max_abs_smd_after is None and full.max_abs_smd_after is not None
    assert (lean.equipoise, lean.ess_target, lean.n_truncated) == (full.equipoise, full.ess_target, full.n_truncated)
