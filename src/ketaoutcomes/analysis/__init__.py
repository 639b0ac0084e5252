"""The analysis of one study: staged tables in, result frames and notes out (pure).

:func:`run_study` is the whole analysis: derive the ADaM datasets (:mod:`ketaoutcomes.derive`),
then every step, each returning the same :class:`~ketaoutcomes.analysis.common.StepResult`
(tables keyed by warehouse name, and notes as records):

* :mod:`~ketaoutcomes.analysis.main`: per endpoint, Kaplan-Meier, log-rank, adjusted and naive
  Cox models, PH test, restricted mean time, the discrete-time sensitivity analysis, and the
  propensity-score comparison of each route with the reference arm
  (:mod:`~ketaoutcomes.analysis.propensity`: weights or matches, diagnostics, the gate);
* :mod:`~ketaoutcomes.analysis.secondary`: safety per session and patient, mood trajectories;
* :mod:`~ketaoutcomes.analysis.relapse`: maintenance as a time-varying exposure, cumulative
  incidence of relapse with stopping as a competing event;
* :mod:`~ketaoutcomes.analysis.modifiers`: effect modifiers of the speed of response;
* :mod:`~ketaoutcomes.analysis.target_trial`: when the study declares a target trial, its emulation
  by clone-censor-weighting on the trial cohort (:func:`trial_cohort`), with E-values, negative
  controls and empirical calibration (tables ``results_tt_*``).

Before any of it, :mod:`~ketaoutcomes.analysis.checks` checks that the study fits the data (its arms,
instrument and covariates are there) and, after deriving, that the analysis population and every
arm of the study in it are not empty. Which models run on which endpoint is declared in
:mod:`ketaoutcomes.endpoints`;
:mod:`~ketaoutcomes.analysis.common` holds what the steps share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import polars as pl

from ketaoutcomes.analysis.checks import EmptyPopulation, StudyMismatch, check_population, check_study
from ketaoutcomes.analysis.common import HandedOver, StepResult, Submit, release, run_now, with_arm_labels
from ketaoutcomes.analysis.main import analyze, analyze_handed_over
from ketaoutcomes.analysis.modifiers import modifier_analyses, modifier_doses
from ketaoutcomes.analysis.propensity import preference_histogram
from ketaoutcomes.analysis.relapse import RELAPSE_STATES, relapse_analyses, relapse_status
from ketaoutcomes.analysis.secondary import secondary_analyses
from ketaoutcomes.analysis.target_trial import target_trial_analysis
from ketaoutcomes.derive import derive_all
from ketaoutcomes.derive.adsl import stored_adsl
from ketaoutcomes.registries import Registries
from ketaoutcomes.settings import StudySettings

__all__ = ["EmptyPopulation", "HandedOver", "RELAPSE_STATES", "StepResult", "StudyMismatch", "analyze", "check_study",
           "modifier_analyses", "modifier_doses", "preference_histogram", "relapse_analyses", "relapse_status", "run_study",
           "secondary_analyses", "trial_cohort"]

#: The target trial's cohort: ``(staged, registries=, study=) -> (frame, attrition)``.
TrialCohort = Callable[..., tuple[pl.DataFrame, pl.DataFrame]]


def trial_cohort(staged: Mapping[str, pl.DataFrame], *, registries: Registries, study: StudySettings
                 ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The person-level frame of the study's target trial (one row per eligible patient at time
    zero) and its attrition, derived from the staged tables
    (:func:`ketaoutcomes.derive.target_trial.target_trial_cohort`; the first session of every course,
    ``first_sessions`` of :func:`ketaoutcomes.analysis_inputs.analysis_inputs`, when given; the
    clinical events, ``clinical_events``, for the negative-control outcomes when given)."""
    from ketaoutcomes.derive.target_trial import target_trial_cohort

    return target_trial_cohort(staged["patients"], staged["courses"], staged.get("first_sessions", staged["sessions"]),
                               staged["mood_scores"], registries=registries, study=study,
                               clinical_events=staged.get("clinical_events"))


def run_study(staged: Mapping[str, pl.DataFrame], *, registries: Registries, study: StudySettings,
              submit: Submit = run_now, check: Mapping[str, pl.DataFrame] | None = None,
              cohort: TrialCohort = trial_cohort,
              publish: Callable[[StepResult], None] | None = None) -> StepResult:
    """The whole analysis of one study on the staged tables (``patients``, ``courses``,
    ``sessions``, ``adverse_events``, ``mood_scores``): the analysis datasets (``ad_adsl``,
    ``ad_adtte``, ``results_attrition``) and every step's results, with all their notes in order.
    Every table with an ``arm`` code gains its ``arm_label`` from ``registries`` (those in force in
    the warehouse, an export's arms.csv included).

    Derivation runs here; the analysis is a fan-out of units of work, each a pure function of frames
    (the secondary, relapse and modifier steps, and :func:`~ketaoutcomes.analysis.main.analyze`'s per
    endpoint and per endpoint and route), run by ``submit`` (default: here, one after the other) and
    put together in a fixed order: the result is the same, table for table and row for row, however
    they ran (docs/scaling.md).

    A study with a ``target_trial`` also gets its emulation (``results_tt_*``) on the trial cohort
    ``cohort(staged, registries=, study=)`` returns (:func:`trial_cohort`, the derivation, by
    default); a study without one writes none of those tables.

    ``staged`` as :class:`~ketaoutcomes.analysis.common.HandedOver` is the analysis's to own: each table
    is taken out of it once nothing still to start reads it (a plain mapping is left as it is).
    ``staged`` may hold only what the analysis uses (``ketaoutcomes.analysis_inputs``: the ratings of
    the study's instrument, the sessions of index courses); ``check``, what the study is checked
    against (the arms and instruments in the data, the patients), defaults to ``staged``; as
    :class:`~ketaoutcomes.analysis.common.HandedOver` it is emptied once the study is checked.

    ``publish``, when given, is handed the analysis datasets (``ad_adsl``, ``ad_adtte``,
    ``results_attrition``; no notes) as soon as they are derived, before any unit starts, and they are
    left out of the result (their notes stay in it): the caller stores them then (the pipeline, in its
    write session), and the analysis need not hold them until the last unit is done.

    Raises
    ------
    ketaoutcomes.analysis.checks.StudyMismatch
        Before deriving, when the study names an arm, instrument or covariate that the registries
        or the data do not have (:func:`~ketaoutcomes.analysis.checks.check_study`); after
        deriving, when no course is analysable or an arm of the study has none left
        (:class:`~ketaoutcomes.analysis.checks.EmptyPopulation`, naming the attrition rule).
    """
    check_study(study, registries, staged if check is None else check)
    if check is not None:
        release(check)  # a HandedOver check: its frames (the patients, at a million some 70 MB) go now
    d = derive_all(staged["patients"], staged["courses"], staged["sessions"], staged["mood_scores"],
                   registries=registries, study=study)
    check_population(study, d.adsl, d.attrition)
    derived = StepResult({"ad_adsl": stored_adsl(d.adsl, study), "ad_adtte": d.adtte,
                          "results_attrition": d.attrition}, d.notes)
    labels = {k: a.label for k, a in registries.arms.items()}
    if publish is not None:
        publish(with_arm_labels(StepResult(derived.tables), labels))
        derived = StepResult({}, derived.notes)
    ketamine = [k for k, a in registries.arms.items() if a.is_ketamine]
    # what the modifier unit reads of the sessions: one row per course
    doses = modifier_doses(staged["sessions"], staged["courses"], study)
    # each step unit is handed only what it reads of the sessions (on Dask, a file its worker reads whole:
    # at a million patients the ten million sessions of every column held two workers at 2-3 GB at once)
    from ketaoutcomes.derive.maintenance import maintenance_sessions
    from ketaoutcomes.models.safety import safety_sessions

    secondary = submit(secondary_analyses, adsl=d.adsl, scores=staged["mood_scores"],
                       sessions=safety_sessions(staged["sessions"]), adverse_events=staged["adverse_events"],
                       courses=staged["courses"], study=study)
    relapse = submit(relapse_analyses, adsl=d.adsl, adtte=d.adtte, sessions=maintenance_sessions(staged["sessions"]),
                     study=study)
    trial = None if study.target_trial is None else cohort(staged, registries=registries, study=study)
    # nothing still to start reads the staged tables: a HandedOver mapping gives them up here
    release(staged)
    others = [secondary, relapse,
              submit(modifier_analyses, adsl=d.adsl, adtte=d.adtte, doses=doses, study=study, ketamine_arms=ketamine)]
    if trial is not None:
        frame, attrition = trial
        others.append(submit(target_trial_analysis, frame=frame, attrition=attrition, protocol=study.target_trial,
                             seed=study.random_seed))
        del frame, attrition, trial
    # the analysis datasets go to the endpoint units' step, which drops them once it has their model frames
    handed = HandedOver(adsl=d.adsl, adtte=d.adtte, visits=d.visits)
    del d
    result = derived + analyze_handed_over(handed, study=study, submit=submit)
    for step in others:
        result = result + step.result()
    return with_arm_labels(result, labels)
