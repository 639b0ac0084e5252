"""The study specification: the shipped default file, hashing, and refused combinations."""

from __future__ import annotations

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
        ({"colour": "red"}, "Extra inputs are not permitted"),
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
    assert s.weighting == "overlap"
