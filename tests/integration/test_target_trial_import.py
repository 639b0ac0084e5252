"""The SSRI-failure cohort survives the trip through the import format (issue 11, part 2).

simulate_ssri_failure's person-level cohort -> an import-format export (simulate --design
ssri-failure) -> ingest into a scratch warehouse (the pipeline's ingest step) -> the staged tables
-> derive.target_trial.target_trial_cohort. Checked against the simulated cohort itself
(truth_latent.parquet): every patient is eligible, and per patient the ketamine start day and arm,
the response day or censoring day, the event flag, the covariates and each negative control's day
and event flag (from clinical_events, the study's six controls) are exactly the simulated ones.
"""

from __future__ import annotations

import polars as pl
import pytest

from ketaoutcomes.derive.target_trial import nc_columns, target_trial_cohort
from ketaoutcomes.pipeline import ingest_step
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import DEFAULT_STUDY_FILE, SimulationSettings, load_study
from ketaoutcomes.simulate.ssri_failure_export import write_ssri_failure_export
from ketaoutcomes.warehouse import fetch, read_connection


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tt")
    study = load_study(DEFAULT_STUDY_FILE.parent / "ssri_failure.toml")
    sim = SimulationSettings(n_patients=300, seed=5, design="ssri_failure", target_trial=study.target_trial)
    export = write_ssri_failure_export(sim, tmp / "export", truth_patients=2000)
    db = tmp / "w.duckdb"
    # the simulator's own truth files are known, not reported as files outside the import format
    assert ingest_step(db, export).details["ignored_files"] == []
    con = read_connection(db)
    try:
        staged = {t: fetch(con, f"SELECT * FROM stg_{t}") for t in ("patients", "courses", "sessions", "mood_scores",
                                                                     "clinical_events")}
        quarantined = fetch(con, "SELECT count(*) AS n FROM quarantine")["n"][0]
    finally:
        con.close()
    frame, attrition = target_trial_cohort(staged["patients"], staged["courses"], staged["sessions"],
                                           staged["mood_scores"], registries=load_registries(), study=study,
                                           clinical_events=staged["clinical_events"])
    without, _ = target_trial_cohort(staged["patients"], staged["courses"], staged["sessions"],
                                     staged["mood_scores"], registries=load_registries(), study=study)
    assert staged["clinical_events"].height > 0
    return frame, attrition, pl.read_parquet(export / "truth_latent.parquet"), quarantined, without


def test_every_simulated_patient_is_eligible_and_nothing_is_quarantined(round_trip):
    frame, attrition, truth, quarantined, _ = round_trip
    assert quarantined == 0
    assert attrition["remaining"].to_list() == [300] * attrition.height
    assert attrition["excluded"].to_list()[1:] == [0] * (attrition.height - 1)
    assert frame["patient_id"].to_list() == truth["patient_id"].to_list()


def test_start_outcome_and_covariates_are_the_simulated_ones(round_trip):
    frame, _, truth, _, _ = round_trip
    j = frame.join(truth, on="patient_id", how="inner")
    assert j.height == 300
    assert j["start_day"].eq_missing(j["ketamine_start_day"]).all()
    assert j["start_arm"].eq_missing(j["ketamine_arm"]).all()
    assert (j["time"] == j["response_time"]).all() and (j["event"] == j["response_event"]).all()
    assert (j["time_zero"] == j["time_zero_right"]).all()
    assert (j["baseline_score"] == j["severity"]).all() and (j["age_at_index"] == j["age"]).all()
    assert (j["prior_failed_trials"] == j["prior_episodes"]).all()
    assert j.select((pl.col("sex") == pl.when(pl.col("male") == 1).then(pl.lit("M")).otherwise(pl.lit("F"))).all()).item()
    assert (j["failed_course_id"] == j["patient_id"].str.replace("P", "C") + "-1").all()
    # censoring reasons: administrative exactly when followed to the protocol's end, lost before it
    cens = j.filter(pl.col("event") == 0)
    assert (cens["end_reason"] == pl.Series(["administrative" if d == 90 else "lost" for d in cens["followup_days"]])).all()
    assert set(j.filter(pl.col("event") == 1)["end_reason"]) == {"outcome"}
    # the cohort is varied enough for the check to mean something
    assert 0 < j["start_day"].null_count() < 300 and 0 < j["event"].sum() < 300 and (j["end_reason"] == "lost").any()


def test_negative_controls_are_the_simulated_ones(round_trip):
    """Each of the study's negative controls (nc1..nc6: event_type its name in clinical_events, among
    noise the derivation must not count: other types, control types on or before time zero and after
    the end of follow-up) gives back the simulated day and event flag of every patient; followed to
    the end of follow-up whatever the response."""
    frame, _, truth, _, without = round_trip
    names = [nc.name for nc in load_study(DEFAULT_STUDY_FILE.parent / "ssri_failure.toml").target_trial.negative_controls]
    assert len(names) >= 6
    j = frame.join(truth, on="patient_id", how="inner")
    for name in names:
        t, e = nc_columns(name)
        assert frame.schema[t] == pl.Int64 and frame.schema[e] == pl.Int8
        assert (j[t] == j[f"{name}_time"]).all() and (j[e] == j[f"{name}_event"]).all(), name
        assert 0 < j[e].sum() < j.height, name  # events and censorings both
        # a patient who responded is still followed for the control, to the end of follow-up
        censored_after_response = j.filter((pl.col(e) == 0) & (pl.col("event") == 1))
        assert censored_after_response.height and (censored_after_response[t] == censored_after_response["followup_days"]).all()
    # without clinical events: the same frame, no negative-control columns
    assert without.equals(frame.select(without.columns)) and not any(c.startswith("nc_") for c in without.columns)
