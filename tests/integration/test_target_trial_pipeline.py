"""A target-trial study through the pipeline: the SSRI-failure export (simulate --design ssri-failure)
-> ingest -> analyze -> report, in a scratch warehouse.

Checked against: the tables' contracts and the run's results_runs row (every results_tt_* table has
rows of this run and only this run's settings); analysis.target_trial run directly on the trial
cohort derived from the same staged tables (the stored effects are its effects); the rendered page
(the section, its protocol table and TARGET checklist with this run's numbers); and a study without
a target trial on the same warehouse, whose run writes no results_tt_* row.
"""

from __future__ import annotations

import pytest

from ketaoutcomes.analysis import trial_cohort
from ketaoutcomes.analysis.target_trial import target_trial_analysis
from ketaoutcomes.analysis.target_trial_tables import TT_CONTRACTS
from ketaoutcomes.analysis_inputs import analysis_inputs
from ketaoutcomes.pipeline import analyze_step, ingest_step, render_step
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import DEFAULT_STUDY_FILE, SimulationSettings, StudySettings, load_study
from ketaoutcomes.simulate.ssri_failure_export import write_ssri_failure_export
from ketaoutcomes.table_contract import conform
from ketaoutcomes.warehouse import fetch, read_connection


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ttp")
    shipped = load_study(DEFAULT_STUDY_FILE.parent / "ssri_failure.toml")
    study = shipped.model_copy(update={"target_trial": shipped.target_trial.model_copy(
        update={"bootstrap_replicates": 4})})
    sim = SimulationSettings(n_patients=400, seed=3, design="ssri_failure", target_trial=study.target_trial)
    db = tmp / "w.duckdb"
    ingest_step(db, write_ssri_failure_export(sim, tmp / "export", truth_patients=2000))
    run_id = analyze_step(db, study).details["run_id"]
    return tmp, db, study, run_id


def test_analyze_writes_every_target_trial_table_of_the_run(analysed):
    _, db, study, run_id = analysed
    con = read_connection(db)
    try:
        for name, contract in TT_CONTRACTS.items():
            stored = fetch(con, f"SELECT * FROM {name} WHERE run_id = ?", [run_id])
            assert stored.height > 0 and set(stored["settings_id"]) == {study.settings_id}, name
            conform(stored, contract)
        staged = analysis_inputs(con, study)
        effects = fetch(con, "SELECT * EXCLUDE (run_id, settings_id) FROM results_tt_effects WHERE run_id = ? "
                             "ORDER BY variant, outcome, day, measure", [run_id])
    finally:
        con.close()
    frame, attrition = trial_cohort(staged, registries=load_registries(), study=study)
    direct = target_trial_analysis(frame, attrition, protocol=study.target_trial, seed=study.random_seed)
    expected = direct.table("results_tt_effects").select(effects.columns).sort("variant", "outcome", "day", "measure")
    assert effects.equals(expected.cast(effects.schema))


def test_the_report_carries_the_section_with_this_runs_numbers(analysed):
    tmp, db, study, run_id = analysed
    out = render_step(db, study, tmp / "reports")
    html = (tmp / "reports" / f"ketaoutcomes-{study.name}.html").read_text()
    assert out.details["run_id"] == run_id and 'id="target-trial"' in html
    assert "Protocol: the target trial and its emulation" in html and "TARGET checklist" in html
    con = read_connection(db)
    try:
        rd = fetch(con, "SELECT estimate FROM results_tt_effects WHERE run_id = ? AND variant = 'ccw' AND "
                        "outcome = 'primary' AND measure = 'rd' AND day = 28", [run_id])["estimate"].item()
        n = fetch(con, "SELECT remaining FROM results_tt_attrition WHERE run_id = ? ORDER BY step_order DESC LIMIT 1",
                  [run_id])["remaining"].item()
    finally:
        con.close()
    assert f"{abs(100 * rd):.1f} percentage points" in html and f"({n:,} patients analysed)" in html
    # the study file's six negative controls, from the export's clinical_events: the calibration is
    # evaluated (at least 5 usable controls at every day) and shows calibrated numbers
    assert len(study.target_trial.negative_controls) == 6
    assert "not evaluable:" not in html and "(constant-error model)" in html


def test_a_study_without_a_target_trial_writes_none_of_its_tables(analysed):
    _, db, study, run_id = analysed
    plain = study.model_copy(update={"target_trial": None, "name": "plain"})
    other = analyze_step(db, StudySettings.model_validate(plain.model_dump())).details["run_id"]
    assert other != run_id
    con = read_connection(db)
    try:
        for name in TT_CONTRACTS:
            assert fetch(con, f"SELECT count(*) AS n FROM {name} WHERE run_id = ?", [other])["n"].item() == 0
            assert fetch(con, f"SELECT count(*) AS n FROM {name} WHERE run_id = ?", [run_id])["n"].item() > 0
    finally:
        con.close()


def test_a_warehouse_from_before_clinical_events_still_renders(analysed, tmp_path):
    """A warehouse last ingested before the optional clinical_events table existed has no
    stg_clinical_events: the report reads the data-quality checks of the tables it has."""
    import shutil

    import duckdb

    _, db, study, run_id = analysed
    old = tmp_path / "old.duckdb"
    shutil.copyfile(db, old)
    con = duckdb.connect(str(old))
    con.execute("DROP VIEW IF EXISTS latest_stg_clinical_events")
    con.execute("DROP VIEW stg_clinical_events")  # (a view of raw_clinical_events: one batch)
    con.close()
    out = render_step(old, study, tmp_path / "reports")
    assert out.details["run_id"] == run_id
    assert 'id="target-trial"' in (tmp_path / "reports" / f"ketaoutcomes-{study.name}.html").read_text()
