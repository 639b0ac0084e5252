"""The SSRI-failure cohort as an import-format export (ketaoutcomes.simulate.ssri_failure_export),
checked against the person-level cohort it encodes (simulate_ssri_failure of the same seed) and the
contract; the choice of design in SimulationSettings, the simulate command and report's embedded
default for a target-trial study."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.contract import TABLE_ORDER, polars_schema
from ketaoutcomes.protocol import TargetTrialProtocol
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import SimulationSettings, load_study
from ketaoutcomes.simulate.ssri_failure import SSRIFailureParameters, simulate_ssri_failure
from ketaoutcomes.simulate.ssri_failure_export import (
    SimulationProtocolError,
    parameters_for,
    ssri_failure_tables,
    write_ssri_failure_export,
)
from ketaoutcomes.settings import DEFAULT_STUDY_FILE

SIM = SimulationSettings(n_patients=300, seed=11, design="ssri_failure")
STUDY_FILE = DEFAULT_STUDY_FILE.parent / "ssri_failure.toml"


@pytest.fixture(scope="module")
def tables():
    return ssri_failure_tables(SIM)


def test_default_simulation_settings_keep_their_id_and_json():
    # the id before design/target_trial existed (a changed id would make every default cohort's stamp stale)
    assert SimulationSettings().settings_id == "e8aa7335ca43"
    assert "design" not in SimulationSettings().canonical_json()
    assert SIM.settings_id != SimulationSettings().settings_id
    assert SimulationSettings.model_validate(json.loads(SIM.canonical_json())) == SIM
    with pytest.raises(ValueError, match="target_trial is a setting of the ssri_failure design"):
        SimulationSettings(target_trial=TargetTrialProtocol())
    # a study's synthetic cohort (report's and the pipeline flow's embedded default)
    study = load_study(STUDY_FILE)
    assert SimulationSettings.for_study(study, seed=4) == SimulationSettings(
        seed=4, design="ssri_failure", target_trial=study.target_trial)
    assert SimulationSettings.for_study(load_study(None), seed=4) == SimulationSettings(seed=4)


def test_tables_have_the_contract_columns_and_the_person_level_cohort_of_the_seed(tables):
    frames, person = tables
    assert list(frames) == list(TABLE_ORDER)
    for name, frame in frames.items():
        assert dict(frame.schema) == polars_schema(name), name
    same = simulate_ssri_failure(300, 11, SSRIFailureParameters(followup_days=90))
    assert person.drop("patient_id", "time_zero", "ketamine_arm").equals(same.drop("patient_id"))
    assert person["patient_id"][:2].to_list() == ["P0000001", "P0000002"]


def test_history_encodes_the_failure_the_start_and_the_ratings(tables):
    frames, person = tables
    c, s, m, pt = frames["courses"], frames["sessions"], frames["mood_scores"], frames["patients"]
    t0 = dict(zip(person["patient_id"], person["time_zero"]))
    failed = c.filter(pl.col("course_id").str.ends_with("-1")).sort("patient_id")
    assert failed.height == 300 and set(failed["end_reason"]) == {"non_response"} and set(failed["arm"]) == {"ssri"}
    assert failed["end_date"].to_list() == person["time_zero"].to_list()
    assert ((failed["end_date"] - failed["start_date"]).dt.total_days().to_list()
            == person["ssri_course_days"].to_list())
    # observation_start covers the washout before the failed course
    obs = pt.join(failed, on="patient_id").select((pl.col("start_date") - pl.col("observation_start")).dt.total_days())
    assert obs.to_series().min() >= 180
    # a starter's ketamine course starts (first session) on time zero + ketamine_start_day
    ketamine_arms = {a for a, arm in load_registries().arms.items() if arm.is_ketamine}
    ket = c.filter(pl.col("arm").is_in(list(ketamine_arms)))
    first = s.group_by("course_id").agg(pl.col("session_ts").min().dt.date().alias("first"))
    ket = ket.join(first, on="course_id")
    assert (ket["first"] == ket["start_date"]).all()
    starts = person.filter(pl.col("ketamine_start_day").is_not_null())
    got = {r["patient_id"]: (r["start_date"] - t0[r["patient_id"]]).days for r in ket.iter_rows(named=True)}
    assert got == dict(zip(starts["patient_id"], starts["ketamine_start_day"]))
    assert len(set(ket["arm"])) > 2  # a seeded draw among the ketamine arms
    # ratings: the baseline on time zero is the severity; first at or below half of it = the response day
    days = m.join(person.select("patient_id", "time_zero", "severity", "response_time", "response_event",
                                "followup_days"), on="patient_id").with_columns(
        (pl.col("assessed_at").dt.date() - pl.col("time_zero")).dt.total_days().alias("day"))
    base = days.filter(pl.col("day") == 0)
    assert (base["total_score"] == base["severity"]).all() and base.height == 300
    after = days.filter(pl.col("day") > 0)
    hit = after.filter(pl.col("total_score") <= pl.col("severity") * 0.5).group_by("patient_id").agg(
        pl.col("day").min().alias("hit"))
    ev = person.filter(pl.col("response_event") == 1)
    assert dict(zip(hit["patient_id"], hit["hit"])) == dict(zip(ev["patient_id"], ev["response_time"]))
    last = after.group_by("patient_id").agg(pl.col("day").max().alias("last"))
    assert dict(zip(last["patient_id"], last["last"])) == dict(zip(person["patient_id"], person["followup_days"]))


def test_a_treatment_arm_missing_from_the_registry_is_refused_in_one_line():
    sim = SimulationSettings(n_patients=100, design="ssri_failure",
                             target_trial=TargetTrialProtocol(treatment_arms=("ketamine_nasal",)))
    with pytest.raises(SimulationProtocolError, match=r"^target_trial.treatment_arms \['ketamine_nasal'\] are not"):
        ssri_failure_tables(sim)


def test_export_is_reproducible_and_its_truth_is_the_protocols(tmp_path):
    protocol = TargetTrialProtocol(grace_days=14, risk_days=(7, 21), rmst_horizon_days=42, followup_days=60)
    sim = SimulationSettings(n_patients=100, seed=3, design="ssri_failure", target_trial=protocol)
    a, b = write_ssri_failure_export(sim, tmp_path / "a", truth_patients=2000), \
        write_ssri_failure_export(sim, tmp_path / "b", truth_patients=2000)
    for f in sorted(p.name for p in a.iterdir()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    truth = json.loads((a / "truth.json").read_text())
    st = truth["strategy_truth"]
    assert (st["grace_days"], st["days"], st["horizon"]) == (14, [7, 21], 42)
    assert truth["settings_id"] == sim.settings_id
    latent = pl.read_parquet(a / "truth_latent.parquet")
    assert latent["followup_days"].max() <= 60 and latent.height == 100


def test_simulate_command_writes_the_ssri_failure_design(tmp_path):
    out = tmp_path / "x"
    res = CliRunner().invoke(app, ["simulate", "--design", "ssri-failure", "--patients", "100", "--out", str(out),
                                   "--study", str(STUDY_FILE)])
    assert res.exit_code == 0, res.output
    truth = json.loads((out / "truth.json").read_text())
    assert truth["design"] == "ssri_failure" and truth["settings"]["target_trial"]["grace_days"] == 30
    res = CliRunner().invoke(app, ["simulate", "--design", "ssri", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "routes or ssri-failure" in res.output


def test_report_of_a_target_trial_study_simulates_the_ssri_failure_cohort(tmp_path, monkeypatch):
    # report's embedded default: the plan it runs is captured (the analysis is another step's business)
    import ketaoutcomes.pipeline as pipeline

    seen = {}

    def run_report(db, study, *, sim, **kw):
        seen["sim"], seen["study"] = sim, study
        return [pipeline.StepOutcome("render", True, "", {"report_path": "r.html"})]

    monkeypatch.setattr(pipeline, "run_report", run_report)
    monkeypatch.setenv("KETAOUTCOMES_HOME", str(tmp_path))
    res = CliRunner().invoke(app, ["report", "--study", str(STUDY_FILE)])
    assert res.exit_code == 0, res.output
    study = load_study(STUDY_FILE)
    assert seen["sim"] == SimulationSettings(design="ssri_failure", target_trial=study.target_trial)
    assert pipeline.synthetic_export_dir(seen["sim"]).name.startswith("n2000-seed")
    res = CliRunner().invoke(app, ["report"])
    assert res.exit_code == 0 and seen["sim"] == SimulationSettings()


def test_the_simulated_negative_controls_are_the_protocol_s_and_their_events_in_clinical_events(tables):
    """Without declared controls the six defaults (event types nc1..nc6); with declared ones, one a
    control, named as it, its event type the first of its event_types, the hazards the defaults' in
    turn. clinical_events carries each patient's simulated event inside follow-up on its day."""
    assert parameters_for(TargetTrialProtocol()) == SSRIFailureParameters()
    protocol = TargetTrialProtocol(negative_controls=[{"name": "fracture"}, {"name": "infection",
                                                                             "event_types": ["uti", "pneumonia"]}])
    p = parameters_for(protocol)
    assert p.negative_control_names == ["fracture", "infection"]
    assert [nc.event_type for nc in p.negative_controls] == ["fracture", "uti"]
    default = SSRIFailureParameters().negative_controls
    assert p.negative_controls[1].rate_per_day == default[1].rate_per_day
    with pytest.raises(SimulationProtocolError, match="not 'response'"):
        parameters_for(TargetTrialProtocol(outcome="remission", negative_controls=[{"name": "response"}]))
    frames, person = tables
    events = (frames["clinical_events"].join(person.select("patient_id", "time_zero"), on="patient_id")
              .select("patient_id", "event_type", (pl.col("event_date") - pl.col("time_zero")).dt.total_days().alias("day")))
    for name in SSRIFailureParameters().negative_control_names:
        seen = person.filter(pl.col(f"{name}_event") == 1).select("patient_id", pl.col(f"{name}_time").alias("day"))
        assert seen.height and seen.join(events.filter(pl.col("event_type") == name), on=["patient_id", "day"],
                                         how="anti").height == 0, name
    assert "other_visit" in set(events["event_type"])  # noise no control counts
