"""The target-trial protocol (ketaoutcomes.protocol): validated, hashed with the study, and
invisible to the id of a study that declares none."""

from __future__ import annotations

import json

import pytest

from ketaoutcomes.protocol import TargetTrialProtocol
from ketaoutcomes.settings import DEFAULT_STUDY_FILE, StudySettings, load_study

DEFAULT_TT = DEFAULT_STUDY_FILE.parent / "ssri_failure.toml"


def test_a_study_without_a_protocol_keeps_its_id_and_json():
    study = StudySettings()
    assert "target_trial" not in json.loads(study.canonical_json())
    # the JSON of a run stored before protocols existed reads back to the same settings and id
    again = StudySettings.model_validate(json.loads(study.canonical_json()))
    assert again.target_trial is None and again.settings_id == study.settings_id


def test_an_empty_target_trial_table_declares_the_default_trial_and_changes_the_id(tmp_path):
    path = tmp_path / "tt.toml"
    path.write_text("[target_trial]\n")
    study = load_study(path)
    assert study.target_trial == TargetTrialProtocol()
    assert study.target_trial.grace_days == 30 and study.target_trial.eligibility.failed_arm == "ssri"
    assert study.settings_id != StudySettings().settings_id
    assert json.loads(study.canonical_json())["target_trial"]["grace_days"] == 30
    # any protocol field is part of the id
    assert study.updated(target_trial={"grace_days": 14}).settings_id != study.settings_id


@pytest.mark.parametrize("table, message", [
    ("grace_days = 90", "grace_days (90) must end before followup_days (90)"),
    ("risk_days = [28, 7]", "risk_days [28, 7] must be increasing"),
    ("risk_days = [7, 120]", "risk_days go to day 120, past followup_days (90)"),
    ("rmst_horizon_days = 100", "rmst_horizon_days (100) is past followup_days (90)"),
    ("truncation = 0.3", "truncation"),
    ("treatment_arms = ['ssri']", "treatment_arms include the failed arm 'ssri'"),
    ("negative_controls = [{name = 'fracture'}, {name = 'fracture'}]", "repeat a name: ['fracture']"),
    ("negative_controls = [{name = 'Fracture!'}]", "must be lower case letters"),
    ("negative_controls = [{name = 'fracture', event_types = []}]", "negative control 'fracture': event_types is empty"),
    ("negative_controls = [{name = 'fracture', event_types = [' fx']}]", "event_types: ' fx' is not a code"),
    ("negative_controls = [{name = 'fracture', event_types = ['fx', 'fx']}]", "event_types repeat a code"),
    ("grace_day = 30", 'target_trial.grace_day: unknown setting; did you mean "grace_days"?'),
    ("after_grace = 'model'", "target_trial.after_grace: Input should be 'outcome_model' or 'last_day_weights'"),
    ("eligibility = {washout = 3}", 'target_trial.eligibility.washout: unknown setting; did you mean "washout_days"?'),
    ("eligibility = {min_age = 70, max_age = 60}", "min_age (70) is above max_age (60)"),
    ("eligibility = {failure_end_reasons = ['bored']}", "failure_end_reasons"),
])
def test_a_wrong_protocol_is_refused_in_one_line_naming_the_field(tmp_path, table, message):
    path = tmp_path / "bad.toml"
    path.write_text(f"[target_trial]\n{table}\n")
    with pytest.raises(ValueError) as err:
        load_study(path)
    text = str(err.value)
    assert message in text and "\n" not in text and str(path) in text


def test_a_negative_control_counts_its_name_unless_it_names_its_event_types(tmp_path):
    path = tmp_path / "nc.toml"
    path.write_text("[target_trial]\nnegative_controls = [{name = 'fracture'}, "
                    "{name = 'infection', event_types = ['uti', 'pneumonia']}]\n")
    study = load_study(path)
    fracture, infection = study.target_trial.negative_controls
    assert fracture.event_types == ("fracture",) and infection.event_types == ("uti", "pneumonia")
    # the codes are part of the study's id
    other = study.updated(target_trial={"negative_controls": [{"name": "fracture", "event_types": ["fx"]},
                                                              {"name": "infection", "event_types": ["uti", "pneumonia"]}]})
    assert other.settings_id != study.settings_id


def test_study_check_names_a_protocol_arm_not_in_the_registry_before_anything_runs(tmp_path):
    """`study FILE` (and analyze's check before deriving) refuses a [target_trial] that does not fit
    the registries, in one line naming the field and the nearest arm."""
    from typer.testing import CliRunner

    from ketaoutcomes.analysis.checks import StudyMismatch, check_study
    from ketaoutcomes.cli import app
    from ketaoutcomes.registries import load_registries

    path = tmp_path / "tt.toml"
    path.write_text('[target_trial]\ntreatment_arms = ["ketamine_ivv"]\n')
    with pytest.raises(StudyMismatch, match='target_trial.treatment_arms: "ketamine_ivv" is not an arm of the '
                                            'registry; did you mean "ketamine_iv"'):
        check_study(load_study(path), load_registries())
    res = CliRunner().invoke(app, ["study", str(path)])
    assert res.exit_code == 1 and 'did you mean "ketamine_iv"' in res.output
    check_study(load_study(DEFAULT_TT), load_registries())  # the shipped target-trial study fits
