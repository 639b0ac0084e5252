"""The secondary model of effect modifiers of the speed of response (TTRESP) (pure)."""

from __future__ import annotations

import polars as pl

from ketaoutcomes.analysis.common import ModelTerms, StepResult, model_frame
from ketaoutcomes.derive import COVARIATE_COLUMNS
from ketaoutcomes.endpoints import ENDPOINTS
from ketaoutcomes.notes import Note
from ketaoutcomes.settings import StudySettings

__all__ = ["modifier_analyses", "modifier_doses"]


def _runs(study: StudySettings) -> bool:
    return "TTRESP" in study.outcomes.endpoints and ENDPOINTS["TTRESP"].runs("modifiers")


def modifier_doses(sessions: pl.DataFrame, courses: pl.DataFrame, study: StudySettings) -> pl.DataFrame | None:
    """What :func:`modifier_analyses` reads of the staged sessions: each course's induction dose
    (:func:`ketaoutcomes.models.modifiers.course_dose`, one row per course, the typical dose of an arm
    over every staged course of it); None when the study has no effect-modifier model."""
    from ketaoutcomes.models.modifiers import course_dose

    return course_dose(sessions, courses.select("course_id", "arm")) if _runs(study) else None


def modifier_analyses(adsl: pl.DataFrame, adtte: pl.DataFrame, doses: pl.DataFrame | None, *,
                      study: StudySettings, ketamine_arms: list[str]) -> StepResult:
    """The documented secondary model of effect modifiers of time to response
    (:mod:`ketaoutcomes.models.modifiers`): route x sex / benzodiazepine / age interaction tests
    with subgroup HRs, and dose, concomitant SSRI or benzodiazepine, age and sex within ketamine
    routes. Exploratory: p-values are not adjusted for multiplicity.

    ``doses``: each course's induction dose, :func:`modifier_doses` of the staged sessions and courses
    (one row per course, where the sessions are millions of rows)."""
    from ketaoutcomes.models.modifiers import ModifierScales, effect_modifiers

    if not _runs(study):
        return StepResult()
    if doses is None:
        raise ValueError("modifier_analyses: the study has an effect-modifier model and needs doses "
                         "(modifier_doses of the staged sessions and courses)")
    frame = model_frame(adsl, adtte, "TTRESP")
    arms = [a for a in ketamine_arms if a in set(frame["ARM"].unique().to_list()) and a != study.cohort.reference_arm]
    if not ketamine_arms or not set(ketamine_arms) & set(frame["ARM"].unique().to_list()):
        # (the model is of the registry's ketamine routes: none in this study, nothing to say about it)
        return StepResult(notes=(Note("effect modifiers: not fitted; the model is defined for the drug of the "
                                      "default registry's arms (its dose, sex, age and concomitant medication), and "
                                      "no arm of this study gives it", step="modifiers", severity="info"),))
    if frame.is_empty() or not arms or study.cohort.reference_arm not in frame["ARM"].unique().to_list():
        return StepResult(notes=(Note("effect modifiers: no ketamine route or no reference arm among the analysed "
                                      "courses; not fitted", step="modifiers", severity="warning"),))
    frame = frame.join(doses, on="COURSEID", how="left")
    adjust = [COVARIATE_COLUMNS[c] for c in study.models.covariates if c in ("baseline_score", "prior_failed_trials")]
    strata = ModelTerms.of(study).strata
    sec = study.secondary
    res = effect_modifiers(frame, reference_arm=study.cohort.reference_arm, ketamine_arms=arms, strata=strata,
                           adjust=adjust, alpha=study.models.alpha, min_events=study.models.min_events_per_arm,
                           scales=ModifierScales(dose_step=sec.modifier_dose_step, age_unit=sec.modifier_age_unit,
                                                 age_window_years=sec.modifier_age_window_years,
                                                 min_events_per_stratum=sec.modifier_min_events_per_stratum))
    out = {"results_modifiers_subgroups": res.subgroups, "results_modifiers_interactions": res.interactions,
           "results_modifiers_ketamine": res.within_ketamine}
    return StepResult(out, tuple(Note(f"effect modifiers: {n}", step="modifiers") for n in res.notes))
