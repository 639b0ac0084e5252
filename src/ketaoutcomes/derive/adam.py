"""Analysis datasets from the staged tables: ADSL, ADTTE and attrition (pure).

:func:`derive_all` derives ADSL (:mod:`~ketaoutcomes.derive.adsl`), then each endpoint of the
study in the order of :data:`ketaoutcomes.endpoints.ENDPOINTS` with the derivation registered for
it (:mod:`~ketaoutcomes.derive.response`, :mod:`~ketaoutcomes.derive.relapse`,
:mod:`~ketaoutcomes.derive.suicidal_ideation`; see :mod:`~ketaoutcomes.derive.events` for the
shared conventions). Every exclusion is an attrition row: the analysis population's rules first,
then each endpoint's own narrowing of it (``paramcd`` names the endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ketaoutcomes.derive.adsl import attrition_table, derive_adsl
from ketaoutcomes.derive.events import ADTTE_COLUMNS, DERIVATIONS, EndpointInput, assessment_days, followup_ratings
from ketaoutcomes.endpoints import ENDPOINTS
from ketaoutcomes.notes import Note
from ketaoutcomes.registries import Registries
from ketaoutcomes.settings import StudySettings

__all__ = ["DeriveResult", "derive_adtte", "derive_all"]


@dataclass(frozen=True)
class DeriveResult:
    adsl: pl.DataFrame
    adtte: pl.DataFrame
    attrition: pl.DataFrame
    notes: tuple[Note, ...] = ()
    #: Assessment days of the analysed courses (see :func:`~ketaoutcomes.derive.events.assessment_days`).
    visits: pl.DataFrame = field(default_factory=pl.DataFrame)


def derive_adtte(
    adsl: pl.DataFrame, scores: pl.DataFrame, *, registries: Registries, study: StudySettings
) -> tuple[pl.DataFrame, list[tuple[str, tuple[tuple[str, pl.DataFrame], ...]]], list[Note]]:
    """ADTTE rows of the study's endpoints on the analysis population (ANLFL = 'Y').

    Returns the rows (sorted by PARAMCD, USUBJID), each endpoint's population steps
    ``(code, ((rule, courses left), ...))`` and notes.
    """
    if study.cohort.instrument not in registries.instruments:
        raise ValueError(
            f"study instrument {study.cohort.instrument!r} is not in the instruments registry "
            f"({', '.join(sorted(registries.instruments))}); add it to instruments.csv or change the study"
        )
    pop = adsl.filter(pl.col("ANLFL") == "Y").select(
        "STUDYID", "USUBJID", "COURSEID", "ARM", pl.col("TRTSDTM").alias("STARTDT"), "FUENDTM", "ICEREAS", "BASE"
    )
    ratings = followup_ratings(pop, scores, study.cohort.instrument).select("USUBJID", "assessed_at", "total_score")
    derived: dict[str, pl.DataFrame] = {}
    populations: list[tuple[str, tuple[tuple[str, pl.DataFrame], ...]]] = []
    notes: list[Note] = []
    for code in (c for c in ENDPOINTS if c in study.outcomes.endpoints):  # registry order: required endpoints first
        out = DERIVATIONS[code](EndpointInput(adsl=adsl, pop=pop, ratings=ratings, scores=scores,
                                              instrument=registries.instruments[study.cohort.instrument], study=study,
                                              derived=dict(derived)))
        derived[code] = out.rows
        if out.population:
            populations.append((code, out.population))
        notes += out.notes
    adtte = pl.concat([f.select(ADTTE_COLUMNS) for f in derived.values()], how="vertical_relaxed")
    return adtte.sort("PARAMCD", "USUBJID"), populations, notes


def _with_endpoint_populations(attrition: pl.DataFrame, adsl: pl.DataFrame,
                               populations: list[tuple[str, tuple[tuple[str, pl.DataFrame], ...]]]) -> pl.DataFrame:
    """The analysis population's attrition, then each endpoint's own steps after it (counted against
    the analysis population), numbered on; ``paramcd`` is null for the analysis population's rules."""
    frames = [attrition.with_columns(pl.lit(None, dtype=pl.String).alias("paramcd"))]
    pop = adsl.filter(pl.col("ANLFL") == "Y")
    step = int(attrition["step"].max())
    for code, steps in populations:
        part = attrition_table([("analysis population", pop, None), *((rule, f, None) for rule, f in steps)])
        part = part.filter(pl.col("step") > 1).with_columns(
            (pl.col("step") + step - 1).cast(pl.Int32), pl.lit(code).alias("paramcd"))
        step += len(steps)
        frames.append(part)
    return pl.concat(frames, how="vertical_relaxed")


def derive_all(
    patients: pl.DataFrame,
    courses: pl.DataFrame,
    sessions: pl.DataFrame,
    scores: pl.DataFrame,
    *,
    registries: Registries,
    study: StudySettings,
) -> DeriveResult:
    """ADSL, ADTTE and attrition from the staged tables."""
    missing = [c for c in study.outcomes.endpoints if c not in DERIVATIONS]
    if missing:  # a declared endpoint without a derivation would silently have no rows
        raise ValueError(f"endpoint(s) {missing} are declared in ketaoutcomes.endpoints but have no derivation "
                         "(register one with ketaoutcomes.derive.events.derivation)")
    adsl, attrition = derive_adsl(patients, courses, sessions, scores, study=study)
    adtte, populations, notes = derive_adtte(adsl, scores, registries=registries, study=study)
    cohort_notes = []
    n_unknown = adsl.filter(pl.col("NEWUSFL").is_null()).height
    if n_unknown:
        cohort_notes.append(Note(
            f"new-user rule: {n_unknown} course(s) without observation_start (look-back unknown) were "
            + ("excluded (require_known_lookback)" if study.cohort.require_known_lookback else
               "kept; set require_known_lookback = true to exclude them"),
            step="derive", severity="warning" if study.cohort.require_known_lookback else "info"))
    n_after = adsl.filter(pl.col("LOOKBACK") < 0).height
    if n_after:
        cohort_notes.append(Note(
            f"new-user rule: {n_after} patient(s) whose observation_start lies after the start of their "
            "first course (a data error in the export: the records must cover the course) were excluded "
            "as not known to be new users", step="derive", severity="warning"))
    attrition = _with_endpoint_populations(attrition, adsl, populations)
    visits = assessment_days(adsl, scores, instrument=study.cohort.instrument)
    return DeriveResult(adsl=adsl, adtte=adtte, attrition=attrition, notes=(*cohort_notes, *notes), visits=visits)
