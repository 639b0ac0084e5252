"""The spine end to end without Prefect: simulate -> ingest -> validate -> analyze -> render."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ketaoutcomes.pipeline import AnalysisNotReady, analyze_step, ingest_step, run_report, simulate_step, validate_step
from ketaoutcomes.settings import SimulationSettings, StudySettings
from ketaoutcomes.validate import ValidationFailed
from tests.conftest import query_db

SMALL = SimulationSettings(n_patients=300, seed=5)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "small"
    simulate_step(SMALL, out)
    return out


q = query_db


def test_report_runs_every_step_then_only_what_is_stale(tmp_path, export):
    db, reports = tmp_path / "w.duckdb", tmp_path / "reports"
    first = run_report(db, StudySettings(), export_dir=export, reports_dir=reports)
    assert [o.step for o in first] == ["ingest", "validate", "analyze", "render"] and all(o.ran for o in first)
    report = Path(first[-1].details["report_path"])
    assert report.exists() and report.stat().st_size > 50_000
    html = report.read_text()
    assert "Kaplan" in html and "Hazard" in html and "Target HR (observed grid)" in html
    assert "Data quality of the loads in force" in html and "Could not run" in html
    assert "Model checks and secondary analyses" in html and "Safety per session by route" in html
    saved = json.loads((reports / "ketaoutcomes-default.settings.json").read_text())
    assert saved["settings_id"] == StudySettings().settings_id

    second = run_report(db, StudySettings(), export_dir=export, reports_dir=reports)
    assert [o.ran for o in second] == [False, False, False, False]  # the report is current too

    # a changed study setting re-runs the analysis only
    third = run_report(db, StudySettings(name="remission12", remission_max=12), reports_dir=reports)
    assert [(o.step, o.ran) for o in third] == [("validate", False), ("analyze", True), ("render", True)]
    runs = q(db, "SELECT settings_id FROM results_runs")
    assert runs.height == 2
    # both studies' analysis datasets are kept, each under its run
    assert q(db, "SELECT count(DISTINCT run_id) n FROM ad_adtte")["n"][0] == 2

    # back to the first study: nothing is stale (its report, another file, is current), and it shows its own run
    fourth = run_report(db, StudySettings(), reports_dir=reports)
    assert [(o.step, o.ran) for o in fourth] == [("validate", False), ("analyze", False), ("render", False)]
    assert fourth[-1].details["run_id"] == first[2].details["run_id"]


def test_results_carry_settings_and_batches(tmp_path, export):
    db = tmp_path / "w.duckdb"
    run_report(db, StudySettings(), export_dir=export, reports_dir=tmp_path / "r")
    run = q(db, "SELECT * FROM results_runs").row(0, named=True)
    batches = q(db, "SELECT batch_id FROM meta_batches ORDER BY load_seq")["batch_id"].to_list()
    assert run["batches"].split(",") == batches
    assert json.loads(run["settings_json"])["cohort"]["reference_arm"] == "ssri"
    cox = q(db, "SELECT * FROM results_cox WHERE model = 'adjusted' AND paramcd = 'TTRESP'")
    assert set(cox["run_id"]) == {run["run_id"]} and set(cox["settings_id"]) == {run["settings_id"]}
    arms = {t for t in cox["term"] if t.startswith("ARM[")}
    assert "ARM[ketamine_iv]" in arms and "ARM[ssri]" not in arms  # SSRI is the reference
    assert (cox["hr_lower"] < cox["hr"]).all() and (cox["hr"] < cox["hr_upper"]).all()
    att = q(db, "SELECT * FROM results_attrition WHERE arm = '(all)' AND paramcd IS NULL ORDER BY step")
    assert att["n_remaining"][0] == SMALL.n_patients
    adsl = q(db, "SELECT count(*) n FROM ad_adsl WHERE ANLFL = 'Y'")["n"][0]
    assert att["n_remaining"][-1] == adsl  # the analysis population's last rule
    # checks and secondary analyses are stored with the run
    for table in ("results_ph", "results_rmst", "results_safety", "results_trajectory"):
        assert q(db, f"SELECT count(*) n FROM {table} WHERE run_id = '{run['run_id']}'")["n"][0] > 0, table
    si = q(db, "SELECT count(*) n FROM ad_adtte WHERE PARAMCD = 'TTSIRES'")["n"][0]
    assert si > 0


def test_critical_validation_failure_stops_the_analysis(tmp_path, export):
    """Rows that break the contract never load (quarantine), so validation guards what ingest
    cannot see: here a later delivery narrows the MADRS range in the registry, and scores
    already in the warehouse no longer fit it."""
    db = tmp_path / "w.duckdb"
    ingest_step(db, export)
    validate_step(db)
    later = tmp_path / "later"
    later.mkdir()
    shutil.copy(export / "patients.csv", later / "patients.csv")  # unchanged: skipped
    (later / "instruments.csv").write_text(
        "instrument,label,rater,score_min,score_max,response_reduction,remission_max,relapse_min\n"
        "MADRS,MADRS capped at 30 by this study,clinician,0,30,0.5,10,22\n"
    )
    ingest_step(db, later)
    n_high = q(db, "SELECT count(*) n FROM stg_mood_scores WHERE instrument = 'MADRS' AND total_score > 30")["n"][0]
    assert n_high > 0
    with pytest.raises(ValidationFailed) as info:
        validate_step(db)
    msg = info.value.result.message()
    assert "mood_scores" in msg and "range_per_instrument.MADRS" in msg and f"{n_high:,} of" in msg
    stored = q(db, "SELECT count(*) n FROM validation_results WHERE NOT success AND severity = 'critical'")
    assert stored["n"][0] >= 1  # results are stored even though the step failed
    with pytest.raises(AnalysisNotReady, match="failed validation"):
        analyze_step(db, StudySettings())


def test_truth_file_states_the_hazard_ratios_and_observed_grid_estimands(export):
    truth = json.loads((export / "truth.json").read_text())
    assert truth["seed"] == SMALL.seed and truth["response"]["hr_arm"]["ssri"] == 1.0
    est = truth["estimands_observed_grid"]["TTRESP"]
    assert set(est) == {"adjusted", "naive", "marginal_pair", "marginal_treated"}
    iv = est["adjusted"]["ketamine_iv"]
    assert iv["lower"] < iv["hr"] < iv["upper"]
    # worked out on a thread while the export was written: the same as on its own, after it
    from ketaoutcomes.truth import observed_grid_estimands

    assert truth["estimands_observed_grid"] == json.loads(json.dumps(observed_grid_estimands(SMALL)))


def test_tiny_cohort_with_near_separated_arm_does_not_crash():
    """200 patients, seed 3: an arm with very few events gives a huge SE (found by the flow tests:
    math.exp overflowed). The interval must come out unbounded, not crash."""
    from ketaoutcomes.analysis import analyze
    from ketaoutcomes.derive import derive_all
    from ketaoutcomes.registries import load_registries
    from ketaoutcomes.simulate import simulate_frames

    frames = simulate_frames(SimulationSettings(n_patients=200, seed=3))
    study = StudySettings()
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=study)
    res = analyze(d.adsl, d.adtte, study=study)
    assert res.table("results_cox").height > 0
    upper = res.table("results_cox")["hr_upper"].drop_nulls()
    assert (upper > 0).all()


def test_failed_diagnostics_are_stored_and_withheld_in_the_report(tmp_path, export):
    """The gate (endpoints.md): an estimate whose diagnostics fail is marked in the results
    table and never shown as a clean result."""
    db, reports = tmp_path / "w.duckdb", tmp_path / "r"
    strict = StudySettings(name="strict", min_equipoise=0.99)
    out = run_report(db, strict, export_dir=export, reports_dir=reports)
    ps = q(db, "SELECT * FROM results_ps WHERE paramcd = 'TTRESP'")
    assert ps.height >= 1 and set(ps["diagnostics"]) == {"fail"}
    assert all("equipoise" in r for r in ps["gate_reasons"])
    w = q(db, "SELECT * FROM results_cox WHERE model = 'iptw' AND paramcd = 'TTRESP'")
    assert set(w["diagnostics"]) == {"fail"}
    html = Path(out[-1].details["report_path"]).read_text()
    assert html.count("withheld: fails diagnostics") >= ps.height
    bal = q(db, "SELECT * FROM results_balance WHERE paramcd = 'TTRESP'")
    assert {"smd_before", "smd_after", "covariate"} <= set(bal.columns) and bal.height > 0


def test_arm_added_by_the_exports_arms_csv_is_shown_by_its_label(tmp_path, export):
    """The report labels arms from the registries in force in the warehouse (ref_arms), so an arm an
    export adds through its arms.csv is shown by its label, not its code."""
    import polars as pl

    from ketaoutcomes.registries import load_registries

    delivery = tmp_path / "export"
    shutil.copytree(export, delivery)
    sub = load_registries().arms["ketamine_sublingual"].model_dump()
    pl.DataFrame([{**sub, "arm": "ketamine_buccal", "label": "Ketamine buccal (from arms.csv)"}]).write_csv(
        delivery / "arms.csv")
    courses = pl.read_csv(delivery / "courses.csv", infer_schema=False)
    courses.with_columns(pl.col("arm").replace("ketamine_sublingual", "ketamine_buccal")).write_csv(
        delivery / "courses.csv")
    db = tmp_path / "w.duckdb"
    out = run_report(db, StudySettings(), export_dir=delivery, reports_dir=tmp_path / "r")
    n = q(db, "SELECT count(*) n FROM ad_adsl WHERE ARM = 'ketamine_buccal' AND ANLFL = 'Y'")["n"][0]
    assert n > 0
    html = Path(out[-1].details["report_path"]).read_text()
    assert '<th class="num">Ketamine buccal (from arms.csv)</th>' in html  # the cohort table's column
    assert ">ketamine_buccal<" not in html  # never shown by its code alone
    # the shipped arms keep their labels and order (the reference arm first)
    head = html[html.index('id="cohort"'):html.index('id="attrition"')]
    cols = [head.index(f'<th class="num">{label}</th>') for label in
            ("SSRI", "Ketamine IV", "Ketamine IM", "Esketamine intranasal", "Ketamine oral",
             "Ketamine buccal (from arms.csv)")]
    assert cols == sorted(cols)


def test_trajectory_sample_is_capped_seeded_and_said():
    """The mixed model's cost grows with patients: beyond the study's cap it runs on a seeded sample,
    the same every time, and the notes say so."""
    from ketaoutcomes.analysis import secondary_analyses
    from ketaoutcomes.derive import derive_all
    from ketaoutcomes.registries import load_registries
    from ketaoutcomes.simulate import simulate_frames

    frames = simulate_frames(SimulationSettings(n_patients=600, seed=4))
    study = StudySettings(trajectory_max_patients_per_arm=60)
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=study)
    runs = [secondary_analyses(d.adsl, frames["mood_scores"], frames["sessions"], frames["adverse_events"],
                               frames["courses"], study=study) for _ in range(2)]
    assert runs[0].table("results_trajectory").equals(runs[1].table("results_trajectory"))
    assert any("random sample of at most 60 patients per arm (seed" in n.text for n in runs[0].notes)
    # the sample is drawn before the ratings are built; checked against drawing it from the whole data
    # set (as it was drawn before): the same patients, so the same fit to the last bit
    import polars as pl

    from ketaoutcomes.models.trajectory import fit_trajectories, trajectory_data
    whole = trajectory_data(d.adsl, frames["mood_scores"], instrument=study.cohort.instrument,
                            horizon_days=study.models.rmst_horizon_days,
                            baseline_window_days=study.cohort.baseline_window_days)
    per_arm = whole.group_by("ARM").agg(pl.col("USUBJID").unique().sort())
    sizes = per_arm["USUBJID"].list.len().to_list()
    assert max(sizes) > 60 and min(sizes) < 60  # arms over the cap and under it
    keep = per_arm.with_columns(pl.col("USUBJID").list.sample(
        n=pl.min_horizontal(pl.col("USUBJID").list.len(), pl.lit(60)), seed=study.random_seed)).explode("USUBJID")
    sampled = whole.join(keep.select("USUBJID"), on="USUBJID", how="semi")
    old = fit_trajectories(sampled, reference_arm=study.cohort.reference_arm, alpha=study.models.alpha)
    assert old.n_patients == sum(min(n, 60) for n in sizes)
    assert runs[0].table("results_trajectory").drop("converged").equals(old.predicted)
    assert runs[0].table("results_trajectory_fixed").equals(old.fixed)
    assert runs[0].table("results_safety").height > 0
