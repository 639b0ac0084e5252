"""The study specification: the shipped default file, hashing, and refused combinations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ketaoutcomes.settings import DEFAULT_STUDY_FILE, StudySettings, load_study


def test_default_study_file_is_the_default_settings():
    assert load_study(DEFAULT_STUDY_FILE) == StudySettings()
    assert load_study(DEFAULT_STUDY_FILE).settings_id == StudySettings().settings_id


def test_settings_id_changes_with_any_field_and_not_with_order(tmp_path):
    a = tmp_path / "a.toml"
    a.write_text('name = "x"\nmax_smd = 0.1\ninstrument = "MADRS"\n')
    b = tmp_path / "b.toml"
    b.write_text('instrument = "MADRS"\nname = "x"\nmax_smd = 0.1\n')
    assert load_study(a).settings_id == load_study(b).settings_id
    assert load_study(a).settings_id != StudySettings(name="x", max_smd=0.15).settings_id


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"confirm_min_days": 20, "confirm_max_days": 10}, "must not exceed confirm_max_days"),
        ({"arms": ["ketamine_iv"], "reference_arm": "ssri"}, "reference_arm 'ssri' must be one of arms"),
        ({"endpoints": ["TTRELAPS"]}, "TTRELAPS needs TTRESP: relapse is timed from the response"),
        ({"endpoints": []}, "at least one of"),
        ({"weighting": "overlap"}, "overlap weights are bounded by design"),
        ({"remission_max": 25, "relapse_min": 22}, "must be below relapse_min"),
        ({"time_at_risk_days": 10}, "leaves no room to confirm a relapse"),
        ({"equipoise_bounds": [0.7, 0.3]}, "0 < low < high < 1"),
        ({"covariates": ["age_at_index", "site"], "strata": "site"}, "unknown covariates"),
        ({"weighting": "stratification"}, "Input should be 'iptw', 'overlap' or 'matching'"),
        ({"weighting": "matching"}, "matching gives no weights to truncate"),
        ({"max_smd": 0}, "greater than 0"),
        ({"colour": "red"}, "colour: unknown setting"),
    ],
)
def test_impossible_combinations_are_refused_with_a_clear_message(tmp_path, fields, message):
    import json

    f = tmp_path / "s.json"
    f.write_text(json.dumps({"name": "bad", **fields}))
    with pytest.raises(ValueError, match="s.json") as info:
        load_study(f)
    assert message in str(info.value)


def test_overlap_weighting_without_truncation_is_fine():
    s = StudySettings(weighting="overlap", ps_truncation=None)
    assert s.propensity.weighting == "overlap"


def test_a_flat_study_file_from_before_the_groups_reads_as_the_nested_settings(tmp_path):
    """Study files written before the settings were grouped (every key at the top) keep working."""
    flat = Path(__file__).parent / "data" / "default_flat_v1.toml"
    assert load_study(flat) == StudySettings()
    mixed = tmp_path / "mixed.toml"
    mixed.write_text('weighting = "overlap"\nps_truncation_is_gone = 1\n')
    with pytest.raises(ValueError, match="ps_truncation_is_gone"):
        load_study(mixed)


def test_a_key_given_flat_and_in_its_group_is_refused(tmp_path):
    both = tmp_path / "both.toml"
    both.write_text('alpha = 0.1\n[models]\nalpha = 0.05\n')
    with pytest.raises(ValueError, match="alpha is given twice.*models.alpha"):
        load_study(both)


def test_every_setting_has_one_home():
    from ketaoutcomes.settings import GROUPS

    keys = [k for cls in GROUPS.values() for k in cls.model_fields]
    assert len(keys) == len(set(keys)), "a flat key must name one field of one group"
    assert not set(keys) & set(StudySettings.model_fields)


def test_updated_copies_are_validated():
    s = StudySettings().updated(weighting="matching", ps_truncation=None)
    assert s.propensity.weighting == "matching" and s.cohort == StudySettings().cohort
    with pytest.raises(ValueError, match="ps_truncation"):
        StudySettings().updated(weighting="overlap")


def test_model_defaults_are_the_study_defaults():
    """Constants that used to be loose in the models are study settings; a model's own defaults
    (for use on its own) stay equal to them."""
    from ketaoutcomes.models.modifiers import ModifierScales
    from ketaoutcomes.models.safety import CADSS_CUTOFF

    sec = StudySettings().secondary
    assert ModifierScales() == ModifierScales(sec.modifier_dose_step, sec.modifier_age_unit,
                                              sec.modifier_age_window_years, sec.modifier_min_events_per_stratum)
    assert CADSS_CUTOFF == sec.cadss_cutoff


@pytest.mark.parametrize("changes, hint", [
    ({"covariates": ["Age_at_index", "sex"]}, 'did you mean "age_at_index" for "Age_at_index"?'),
    ({"strata": "Site"}, 'did you mean "site" for "Site"?'),
    ({"endpoints": ["ttresp"]}, 'did you mean "TTRESP" for "ttresp"?'),
    ({"arms": ["ssri", "ketamine_iv"], "reference_arm": "SSRI"}, 'did you mean "ssri" for "SSRI"?'),
])
def test_a_near_miss_in_the_settings_gets_the_nearest_name(changes, hint):
    with pytest.raises(ValueError, match=re.escape(hint)):
        StudySettings(**changes)


@pytest.mark.parametrize(("text", "expected"), [
    ('[propensty]\nweighting = "overlap"\n', 'propensty: unknown setting; did you mean "propensity"?'),
    ('[propensity]\nweightin = "overlap"\n', 'propensity.weightin: unknown setting; did you mean "weighting"?'),
    ('weightin = "overlap"\n', 'weightin: unknown setting; did you mean "weighting"?'),
])
def test_a_misspelt_group_or_key_names_what_was_meant(tmp_path, text, expected):
    f = tmp_path / "typo.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_study(f)


# --------------------------------------------------------------------------- a trial's own covariates

TRIAL_COVARIATES = {"covariates": ["baseline_score", "employment", "years_in_education"],
                    "extra_covariates": {"employment": {"type": "categorical", "levels": ["employed", "student"]},
                                         "years_in_education": {"type": "numeric"}}}


def test_a_study_declares_the_trials_own_covariates_with_type_and_levels(tmp_path):
    f = tmp_path / "trial.toml"
    f.write_text('[models]\ncovariates = ["baseline_score", "employment", "years_in_education"]\n'
                 '[models.extra_covariates]\nemployment = { type = "categorical", levels = ["employed", "student"] }\n'
                 'years_in_education = { type = "numeric", label = "Years in education" }\n')
    study = load_study(f)
    extra = study.models.extra_covariates
    assert (extra["employment"].type, extra["employment"].levels) == ("categorical", ("employed", "student"))
    assert (extra["years_in_education"].type, extra["years_in_education"].label) == ("numeric", "Years in education")
    assert study.source == f"study file {f}"
    same = StudySettings.model_validate({"models": {**TRIAL_COVARIATES, "extra_covariates": {
        "employment": {"type": "categorical", "levels": ["employed", "student"]},
        "years_in_education": {"type": "numeric", "label": "Years in education"}}}})
    assert study == same and study.settings_id == same.settings_id  # where it was read from is not a setting
    assert same.source == "the study settings given"


@pytest.mark.parametrize(("models", "message"), [
    ({"covariates": ["employment"]}, "unknown covariates ['employment']; choose from"),
    ({"covariates": ["baseline_score"], "extra_covariates": {"employment": {"type": "numeric"}}},
     "extra covariate(s) ['employment'] declared but not in covariates"),
    ({"covariates": ["employment"], "extra_covariates": {"employment": {"type": "categorical"}}},
     "a categorical covariate lists its levels"),
    ({"covariates": ["employment"], "extra_covariates": {"employment": {"type": "categorical", "levels": ["a", "a"]}}},
     "a categorical covariate lists its levels"),
    ({"covariates": ["n"], "extra_covariates": {"n": {"type": "numeric", "levels": ["1"]}}},
     "a numeric covariate has no levels"),
    ({"covariates": ["employment"], "extra_covariates": {"employment": {"type": "ordinal", "levels": ["a", "b"]}}},
     "Input should be 'categorical' or 'numeric'"),
    ({"covariates": ["Sex"], "extra_covariates": {"Sex": {"type": "categorical", "levels": ["f", "m"]}}},
     "takes the name of a column of the import format or of the analysis datasets"),
    ({"covariates": ["work status"], "extra_covariates": {"work status": {"type": "numeric"}}},
     "a column name of patients.csv is letters, digits and underscores"),
    ({"covariates": ["sex", "sex"]}, "name a covariate twice"),
])
def test_a_declaration_that_cannot_be_right_is_refused(tmp_path, models, message):
    import json

    f = tmp_path / "s.json"
    f.write_text(json.dumps({"models": models}))
    with pytest.raises(ValueError, match="s.json") as info:
        load_study(f)
    assert message in str(info.value)


def test_the_first_dose_of_a_course_without_sessions_is_a_setting_with_two_values(tmp_path):
    assert StudySettings().cohort.first_dose_without_sessions == "start_of_day"
    assert StudySettings(first_dose_without_sessions="end_of_day").settings_id != StudySettings().settings_id
    f = tmp_path / "s.toml"
    f.write_text('[cohort]\nfirst_dose_without_sessions = "noon"\n')
    with pytest.raises(ValueError, match="Input should be 'start_of_day' or 'end_of_day'"):
        load_study(f)
