"""The target-trial analysis (analysis.target_trial) on a person-level trial frame made from the
SSRI-failure simulator by an adapter to derive.target_trial's interface (age -> age_at_index,
male -> sex M/F, severity -> baseline_score, prior_episodes -> prior_failed_trials,
ketamine_start_day -> start_day, response -> time/event, nc<i> -> nc_<name>_*; the adapter of
scripts/tt_calibration_check.py).

Checked against: the tables' contracts (table_contract.conform); models.ccw run directly on the
same patients (estimates, bootstrap SEs and intervals, curves, weights, counts, starts);
models.evalues and models.calibration applied by hand to the table's own numbers; the attrition
arithmetic for a patient with a missing covariate; and run_study's seam for the trial cohort.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ketaoutcomes.analysis.target_trial import PRIMARY, code_covariates, target_trial_analysis
from ketaoutcomes.analysis.target_trial_tables import TT_CONTRACTS
from ketaoutcomes.models.calibration import calibrate_ci, calibrate_p, fit_null
from ketaoutcomes.models.ccw import ccw_analysis
from ketaoutcomes.models.evalues import evalue
from ketaoutcomes.protocol import NegativeControlOutcome, TargetTrialProtocol
from ketaoutcomes.simulate.ssri_failure import NegativeControl, SSRIFailureParameters, simulate_ssri_failure
from ketaoutcomes.table_contract import conform

N, B, SEED = 300, 8, 11
ATTRITION = pl.DataFrame({"step": ["patients in the data", "SSRI course ended in non-response", "adult at time zero"],
                          "excluded": [None, 6, 4], "remaining": [N + 10, N + 4, N]},
                         schema={"step": pl.String, "excluded": pl.Int64, "remaining": pl.Int64})


def _script():
    path = Path(__file__).resolve().parents[2] / "scripts" / "tt_calibration_check.py"
    spec = importlib.util.spec_from_file_location("tt_calibration_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: derive.target_trial's frame from simulate_ssri_failure's (scripts/tt_calibration_check.py's adapter).
adapter = _script().trial_frame


NC_NAMES = ["nc_a", "nc_b", "nc_c", "nc_d", "nc_e", "nc_f"]
NC_PARAMS = SSRIFailureParameters(negative_controls=tuple(
    NegativeControl(rate_per_day=0.006 + 0.002 * i, per_severity_sd=0.3 * (i % 3 - 1), per_prior=0.1 * i)
    for i in range(len(NC_NAMES))))


def protocol(names: list[str] = (), **kw) -> TargetTrialProtocol:
    return TargetTrialProtocol(bootstrap_replicates=B, negative_controls=tuple(NegativeControlOutcome(name=n)
                                                                              for n in names), **kw)


@functools.cache
def controlled_run():
    """The analysis of a cohort with six negative controls (shared with test_report_target_trial)."""
    frame = adapter(simulate_ssri_failure(N, seed=SEED, params=NC_PARAMS), NC_NAMES)
    return frame, target_trial_analysis(frame, ATTRITION, protocol=protocol(NC_NAMES), seed=SEED)


@pytest.fixture(scope="module")
def plain():
    frame = adapter(simulate_ssri_failure(N, seed=SEED))
    return frame, target_trial_analysis(frame, ATTRITION, protocol=protocol(), seed=SEED)


@pytest.fixture(scope="module")
def with_controls():
    return controlled_run()


def test_every_table_is_written_and_meets_its_contract(plain):
    _, res = plain
    assert set(res.tables) == set(TT_CONTRACTS)
    for name, frame in res.tables.items():
        tagged = frame.with_columns(pl.lit("r").alias("run_id"), pl.lit("s").alias("settings_id"))
        assert conform(tagged, TT_CONTRACTS[name]).height == frame.height > 0, name


def test_ccw_estimates_are_models_ccw_run_directly(plain):
    """Same numbers as models.ccw on the coded frame: point estimates, bootstrap SE, percentile limits,
    replicates; curves, weights, counts and start distribution."""
    frame, res = plain
    p = protocol()
    coded = code_covariates(frame, p.covariates)
    direct = ccw_analysis(coded.frame, time="time", event="event", start="start_day", covariates=list(coded.columns),
                          grace_days=p.grace_days, days=p.risk_days, horizon=p.rmst_horizon_days,
                          truncation=p.truncation, stabilised=p.stabilised, bootstrap_replicates=B, seed=SEED,
                          variants=("ccw", "naive"))
    effects = res.table("results_tt_effects")
    for variant in ("ccw", "naive"):
        ours = (effects.filter((pl.col("variant") == variant) & (pl.col("outcome") == PRIMARY))
                .select(direct[variant].effects.columns))
        assert_frame_equal(ours, direct[variant].effects, check_dtypes=False)
        curves = res.table("results_tt_curves").filter(pl.col("variant") == variant).drop("variant")
        assert_frame_equal(curves, direct[variant].curves, check_dtypes=False)
        counts = res.table("results_tt_counts").filter(pl.col("variant") == variant).drop("variant")
        assert_frame_equal(counts, direct[variant].counts, check_dtypes=False)
    assert_frame_equal(res.table("results_tt_weights").drop("variant"), direct["ccw"].weights, check_dtypes=False)
    assert_frame_equal(res.table("results_tt_starts"), direct["ccw"].start_distribution, check_dtypes=False)
    # the sex indicator is in the model, as sex_M (F the reference level)
    assert res.table("results_tt_covariates")["covariate"].to_list() == [
        "age_at_index", "sex_M", "baseline_score", "prior_failed_trials"]
    assert coded.frame["_x_sex_M"].to_list() == (frame["sex"] == "M").cast(pl.Float64).to_list()


def test_e_values_are_those_of_the_ccw_risk_ratios(plain):
    _, res = plain
    rr = res.table("results_tt_effects").filter((pl.col("measure") == "rr"))
    ccw = rr.filter(pl.col("variant") == "ccw")
    assert ccw.height == 3
    for r in ccw.iter_rows(named=True):
        e = evalue(r["estimate"], r["lower"], r["upper"], scale="risk_ratio")
        assert r["e_value"] == pytest.approx(e.point) and r["e_value_ci"] == pytest.approx(e.ci)
    assert rr.filter(pl.col("variant") == "naive")["e_value"].is_null().all()
    other = res.table("results_tt_effects").filter(pl.col("measure") != "rr")
    assert other["e_value"].is_null().all()


def test_a_patient_with_a_missing_covariate_is_excluded_and_counted(plain):
    frame, _ = plain
    holed = frame.with_columns(pl.when(pl.int_range(pl.len()) < 3).then(None).otherwise(pl.col("baseline_score"))
                               .alias("baseline_score"),
                               pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("sex")).alias("sex"))
    res = target_trial_analysis(holed, ATTRITION, protocol=protocol(), seed=SEED)
    att = res.table("results_tt_attrition")
    assert att.head(3).select("step", "excluded", "remaining").equals(ATTRITION)
    last = att.row(-1, named=True)
    assert (last["excluded"], last["remaining"]) == (4, N - 4)
    assert "baseline_score (3)" in last["step"] and "sex (1)" in last["step"]
    counts = res.table("results_tt_counts").filter(pl.col("variant") == "ccw")
    assert counts["clones"].to_list() == [N - 4, N - 4]
    assert any("4 patient(s) excluded for a missing covariate" in n.text for n in res.notes)


def test_without_negative_controls_calibration_is_not_evaluable_and_withheld(plain):
    _, res = plain
    cal = res.table("results_tt_calibration")
    assert cal["role"].to_list() == ["primary"] * 3 and cal["n_usable"].to_list() == [0, 0, 0]
    assert set(cal["status"]) == {"not_evaluable"}
    for c in ("null_mean", "null_sd", "ease", "p_calibrated", "rr_calibrated", "rr_calibrated_lower",
              "rr_calibrated_upper"):
        assert cal[c].is_null().all(), c
    assert cal["log_rr"].is_not_null().all() and cal["se"].is_not_null().all()


def test_declared_controls_absent_from_the_data_are_not_evaluable(plain):
    frame, _ = plain
    res = target_trial_analysis(frame, ATTRITION, protocol=protocol(NC_NAMES[:5]), seed=SEED)
    cal = res.table("results_tt_calibration")
    primary = cal.filter(pl.col("role") == "primary")
    assert set(primary["status"]) == {"not_evaluable"} and primary["p_calibrated"].is_null().all()
    assert primary["n_controls"].to_list() == [5, 5, 5] and primary["n_usable"].to_list() == [0, 0, 0]
    assert any("not in the trial data" in n.text for n in res.notes)


def test_with_enough_negative_controls_the_primary_is_calibrated(with_controls):
    """Each control goes through the same CCW (its rows in results_tt_effects); the null, p and CI are
    models.calibration's on the table's own log RRs and SEs."""
    _, res = with_controls
    cal = res.table("results_tt_calibration")
    eff = res.table("results_tt_effects")
    assert set(eff["outcome"]) == {PRIMARY, *NC_NAMES}
    for day in (7, 28, 56):
        at = cal.filter(pl.col("day") == day)
        ncs = at.filter(pl.col("role") == "negative_control")
        assert sorted(ncs["outcome"]) == sorted(NC_NAMES)
        rr = eff.filter((pl.col("measure") == "rr") & (pl.col("day") == day) & (pl.col("outcome") != PRIMARY))
        assert dict(zip(rr["outcome"], rr["estimate"].log())) == pytest.approx(dict(zip(ncs["outcome"], ncs["log_rr"])))
        usable = ncs.filter(pl.col("usable"))
        p = at.filter(pl.col("role") == "primary").row(0, named=True)
        assert p["n_usable"] == usable.height >= 5 and p["status"] in ("pass", "fail")
        null = fit_null(usable["log_rr"].to_list(), usable["se"].to_list())
        assert (p["null_mean"], p["null_sd"]) == pytest.approx((null.mean, null.sd))
        assert p["p_calibrated"] == pytest.approx(calibrate_p(null, p["log_rr"], p["se"]))
        lo, hi = calibrate_ci(null, p["log_rr"], p["se"], 0.05)
        assert (p["rr_calibrated_lower"], p["rr_calibrated_upper"]) == pytest.approx((math.exp(lo), math.exp(hi)))
        assert p["error_model"] == "constant"


def test_a_high_systematic_error_fails_the_gate_but_keeps_its_numbers(with_controls):
    frame, _ = with_controls
    res = target_trial_analysis(frame, ATTRITION, protocol=protocol(NC_NAMES, max_ease=0.001), seed=SEED)
    p = res.table("results_tt_calibration").filter(pl.col("role") == "primary")
    assert set(p["status"]) == {"fail"} and p["p_calibrated"].is_not_null().all()
    assert all(r.startswith("expected absolute systematic error") for r in p["reason"])


def test_run_study_runs_the_target_trial_through_its_cohort_seam(plain, monkeypatch):
    """run_study calls the trial cohort (derive.target_trial by default) and submits the analysis; the
    rest of the study's analysis is stubbed out here (it has its own tests)."""
    import ketaoutcomes.analysis as analysis
    from ketaoutcomes.analysis.common import StepResult
    from ketaoutcomes.registries import load_registries
    from ketaoutcomes.settings import StudySettings

    frame, res = plain
    for name in ("check_study", "check_population"):
        monkeypatch.setattr(analysis, name, lambda *a, **k: None)
    monkeypatch.setattr(analysis, "derive_all", lambda *a, **k: type("D", (), dict(
        adsl=pl.DataFrame({"ANLFL": []}), adtte=pl.DataFrame(), attrition=pl.DataFrame(), notes=(), visits=None))())
    monkeypatch.setattr(analysis, "stored_adsl", lambda adsl, study: adsl)
    for name in ("secondary_analyses", "relapse_analyses", "modifier_analyses", "analyze_handed_over"):
        monkeypatch.setattr(analysis, name, lambda *a, **k: StepResult())
    monkeypatch.setattr(analysis, "modifier_doses", lambda *a, **k: None)
    staged = {t: pl.DataFrame() for t in ("patients", "courses", "sessions", "adverse_events", "mood_scores")}
    seen = []

    def cohort(staged_, *, registries, study):
        seen.append(study.name)
        return frame, ATTRITION

    study = StudySettings(name="tt", target_trial=protocol(), random_seed=SEED)
    out = analysis.run_study(staged, registries=load_registries(), study=study, cohort=cohort)
    assert seen == ["tt"]
    for name in TT_CONTRACTS:
        assert_frame_equal(out.table(name), res.table(name))
    none = analysis.run_study(staged, registries=load_registries(), study=StudySettings(name="plain"), cohort=cohort)
    assert seen == ["tt"] and not set(none.tables) & set(TT_CONTRACTS)


def test_a_trial_nobody_starts_in_is_refused_in_one_line(plain):
    """No start in the grace period: nobody follows "start", and no start model can be fitted. The error
    is a StudyMismatch (the CLI prints its one line and exits non-zero) saying how many patients and
    what to check."""
    from ketaoutcomes.analysis.checks import StudyMismatch

    frame, _ = plain
    nobody = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("start_day"))
    with pytest.raises(StudyMismatch) as err:
        target_trial_analysis(nobody, ATTRITION, protocol=protocol(), seed=SEED)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"target trial: none of the {N} eligible patients started ketamine "
                                              "within the 30-day grace period")
    with pytest.raises(StudyMismatch, match=r"no covariate column\(s\) \['baseline_score'\]"):
        target_trial_analysis(frame.drop("baseline_score"), ATTRITION, protocol=protocol(), seed=SEED)


def test_a_trial_without_eligible_patients_names_the_rule_that_left_none(plain):
    from ketaoutcomes.analysis.checks import StudyMismatch

    frame, _ = plain
    attrition = pl.DataFrame({"step": ["patients in the data", "age at index in [89, 90]"], "excluded": [None, 310],
                              "remaining": [310, 0]}, schema=ATTRITION.schema)
    with pytest.raises(StudyMismatch, match=r"^target trial: no eligible patient: the rule 'age at index in \[89, 90\]' "
                                            r"excluded the last 310 patient\(s\); check"):
        target_trial_analysis(frame.head(0), attrition, protocol=protocol(), seed=SEED)


def test_starts_outside_the_treatment_arms_are_censored_noted_and_refused_by_last_day_weights(plain):
    """A frame with other_start_day (derive.target_trial's column for a ketamine start on an arm outside
    target_trial.treatment_arms, before any start on them): the analysis passes it to models.ccw (the
    estimates equal models.ccw run directly with other_start), counts the patients in a note, and
    after_grace = "last_day_weights", which cannot censor them, is refused in one line."""
    from ketaoutcomes.analysis.checks import StudyMismatch

    frame, _ = plain
    outside = (pl.col("baseline_score") > 31) & (pl.col("start_day") % 2 == 0)
    moved = frame.with_columns(pl.when(outside).then(pl.col("start_day")).alias("other_start_day"),
                               pl.when(outside).then(None).otherwise(pl.col("start_day")).alias("start_day"))
    n = moved.filter((pl.col("other_start_day") < pl.col("time")) & (pl.col("other_start_day") <= 30)).height
    assert n > 5
    res = target_trial_analysis(moved, ATTRITION, protocol=protocol(), seed=SEED)
    assert any(f"{n} patient(s) started ketamine on an arm outside target_trial.treatment_arms" in note.text
               for note in res.notes)
    coded = code_covariates(moved, protocol().covariates)
    direct = ccw_analysis(coded.frame, time="time", event="event", start="start_day", covariates=list(coded.columns),
                          other_start="other_start_day")["ccw"].effects
    got = res.table("results_tt_effects").filter((pl.col("variant") == "ccw") & (pl.col("outcome") == PRIMARY))
    assert got["estimate"].to_list() == direct["estimate"].to_list()
    with pytest.raises(StudyMismatch) as err:
        target_trial_analysis(moved, ATTRITION, protocol=protocol(after_grace="last_day_weights"), seed=SEED)
    assert "\n" not in str(err.value) and 'use after_grace = "outcome_model"' in str(err.value)
