"""analysis.checks: the study against the registries and the data, and the population after deriving."""

from __future__ import annotations

import polars as pl
import pytest

from ketaoutcomes.analysis.checks import EmptyPopulation, StudyMismatch, check_population, check_study, study_problems
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import StudySettings

REG = load_registries()


def staged(arms=("ssri", "ketamine_iv"), instruments=("MADRS",), weight=(70.0, None)) -> dict[str, pl.DataFrame]:
    return {"courses": pl.DataFrame({"arm": list(arms)}, schema={"arm": pl.String}),
            "mood_scores": pl.DataFrame({"instrument": list(instruments)}, schema={"instrument": pl.String}),
            "patients": pl.DataFrame({"patient_id": ["P1", "P2"], "site": ["A", "B"], "sex": ["F", "M"],
                                      "age_at_index": [40, 50], "prior_failed_trials": [1, 2],
                                      "diagnosis": ["MDD", "MDD"], "weight_kg": list(weight)},
                                     schema_overrides={"weight_kg": pl.Float64})}


def test_the_default_study_fits_the_default_registries_and_data():
    assert study_problems(StudySettings(), REG) == []
    assert study_problems(StudySettings(), REG, staged()) == []


def test_names_are_matched_ignoring_case_and_every_problem_is_on_one_line():
    study = StudySettings(reference_arm="SSRI", instrument="madrs")
    with pytest.raises(StudyMismatch) as info:
        check_study(study, REG)
    msg = str(info.value)
    assert msg == ('study: reference_arm "SSRI" is not an arm of the registry; did you mean "ssri"?; '
                   'instrument "madrs" is not in the instruments registry; did you mean "MADRS"?')


def test_a_name_with_no_near_match_lists_the_choices():
    (problem,) = study_problems(StudySettings(arms=("ssri", "ect")), REG)
    assert problem.startswith('arm "ect" is not an arm of the registry (choose from esketamine_intranasal, ')


def test_the_data_must_have_the_arms_the_instrument_and_the_covariates():
    study = StudySettings(arms=("ssri", "ketamine_im"), covariates=("age_at_index", "weight_kg"))
    problems = study_problems(study, REG, staged(instruments=("PHQ9",), weight=(None, None)))
    assert problems == [
        'arm "ketamine_im" has no course in the data (arms with courses: ketamine_iv, ssri); did you mean "ketamine_iv"?',
        'instrument "MADRS" has no ratings in the data (instruments rated: PHQ9); set cohort.instrument',
        'covariate "weight_kg" has no value in the data (patients.weight_kg is empty for every patient); '
        "leave it out of models.covariates",
    ]
    assert study_problems(StudySettings(), REG, staged(arms=())) == [
        "the data has no treatment course (nothing loaded, or every course quarantined: see table quarantine)"]


def _attrition(rows: list[tuple[int, str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"step": pl.Int32, "rule": pl.String, "arm": pl.String, "n_remaining": pl.Int64},
                        orient="row").with_columns(pl.lit(None, dtype=pl.String).alias("paramcd"))


def test_population_checks_name_the_rule_that_emptied_it():
    adsl = pl.DataFrame({"ARM": ["ssri", "ketamine_iv"]})
    rows = [(1, "patients in the export", "(all)", 2), (2, "with a treatment course (index course = first course)", "ssri", 1),
            (2, "with a treatment course (index course = first course)", "ketamine_iv", 1),
            (2, "with a treatment course (index course = first course)", "(all)", 2),
            (3, "new user: records cover >= 180 d", "ssri", 0), (3, "new user: records cover >= 180 d", "ketamine_iv", 1),
            (3, "new user: records cover >= 180 d", "(all)", 1)]
    with pytest.raises(EmptyPopulation, match=r'^analysis: arm "ssri": no course left after "new user: records cover '
                                              r'>= 180 d" \(1 -> 0\); check patients.observation_start'):
        check_population(StudySettings(), adsl, _attrition(rows))
    check_population(StudySettings(reference_arm="ketamine_iv", arms=("ketamine_iv",)), adsl, _attrition(rows))
    with pytest.raises(EmptyPopulation, match=r'^analysis: no course at all \("patients in the export": 0\)'):
        check_population(StudySettings(), adsl.clear(), _attrition([(1, "patients in the export", "(all)", 0)]))


def test_a_reference_arm_with_no_index_course_is_an_error():
    adsl = pl.DataFrame({"ARM": ["ketamine_iv"]})
    rows = [(1, "patients in the export", "(all)", 1), (2, "with a treatment course", "ketamine_iv", 1),
            (2, "with a treatment course", "(all)", 1)]
    with pytest.raises(EmptyPopulation, match=r'arm "ssri" has no index course'):
        check_population(StudySettings(), adsl, _attrition(rows))
