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
* :mod:`~ketaoutcomes.analysis.modifiers`: effect modifiers of the speed of response.

Before any of it, :mod:`~ketaoutcomes.analysis.checks` checks that the study fits the data (its arms,
instrument and covariates are there) and, after deriving, that the analysis population and every
arm of the study in it are not empty. Which models run on which endpoint is declared in
:mod:`ketaoutcomes.endpoints`;
:mod:`~ketaoutcomes.analysis.common` holds what the steps share.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from ketaoutcomes.analysis.checks import EmptyPopulation, StudyMismatch, check_population, check_study
from ketaoutcomes.analysis.common import StepResult, with_arm_labels
from ketaoutcomes.analysis.main import analyze
from ketaoutcomes.analysis.modifiers import modifier_analyses
from ketaoutcomes.analysis.propensity import preference_histogram
from ketaoutcomes.analysis.relapse import RELAPSE_STATES, relapse_analyses, relapse_status
from ketaoutcomes.analysis.secondary import secondary_analyses
from ketaoutcomes.derive import derive_all
from ketaoutcomes.derive.adsl import stored_adsl
from ketaoutcomes.registries import Registries
from ketaoutcomes.settings import StudySettings

__all__ = ["EmptyPopulation", "RELAPSE_STATES", "StepResult", "StudyMismatch", "analyze", "check_study",
           "modifier_analyses", "preference_histogram", "relapse_analyses", "relapse_status", "run_study",
           "secondary_analyses"]


def run_study(staged: Mapping[str, pl.DataFrame], *, registries: Registries, study: StudySettings) -> StepResult:
    """The whole analysis of one study on the staged tables (``patients``, ``courses``,
    ``sessions``, ``adverse_events``, ``mood_scores``): the analysis datasets (``ad_adsl``,
    ``ad_adtte``, ``results_attrition``) and every step's results, with all their notes in order.
    Every table with an ``arm`` code gains its ``arm_label`` from ``registries`` (those in force in
    the warehouse, an export's arms.csv included).

    Raises
    ------
    ketaoutcomes.analysis.checks.StudyMismatch
        Before deriving, when the study names an arm, instrument or covariate that the registries
        or the data do not have (:func:`~ketaoutcomes.analysis.checks.check_study`); after
        deriving, when no course is analysable or an arm of the study has none left
        (:class:`~ketaoutcomes.analysis.checks.EmptyPopulation`, naming the attrition rule).
    """
    check_study(study, registries, staged)
    d = derive_all(staged["patients"], staged["courses"], staged["sessions"], staged["mood_scores"],
                   registries=registries, study=study)
    check_population(study, d.adsl, d.attrition)
    derived = StepResult({"ad_adsl": stored_adsl(d.adsl, study), "ad_adtte": d.adtte,
                          "results_attrition": d.attrition}, d.notes)
    ketamine = [k for k, a in registries.arms.items() if a.is_ketamine]
    result = (derived
            + analyze(d.adsl, d.adtte, study=study, visits=d.visits)
            + secondary_analyses(d.adsl, staged["mood_scores"], staged["sessions"], staged["adverse_events"],
                                 staged["courses"], study=study)
            + relapse_analyses(d.adsl, d.adtte, staged["sessions"], study=study)
            + modifier_analyses(d.adsl, d.adtte, staged["sessions"], staged["courses"], study=study,
                                ketamine_arms=ketamine))
    return with_arm_labels(result, {k: a.label for k, a in registries.arms.items()})
