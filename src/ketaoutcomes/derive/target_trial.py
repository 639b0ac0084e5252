"""The cohort of a target trial, from the staged tables (pure): one row per eligible patient, with
time zero, the first start of a treatment arm, the outcome or censoring, and baseline covariates;
and the attrition of every eligibility rule.

The protocol is :class:`ketaoutcomes.protocol.TargetTrialProtocol` (a study's ``[target_trial]``);
docs/target-trial.md describes the design. Days are calendar days counted from time zero (a date):
a rating or session on the day after time zero is day 1.

Eligibility (each rule an attrition row, in this order). A *candidate* is a course on
``eligibility.failed_arm`` that ended (an ``end_date``) for one of ``failure_end_reasons``; its
``end_date`` is time zero. A patient stays while one of their candidates passes every rule so far;
the trial is their first candidate (by end date) that passes them all (``first_failure_only``):

1. a failed course (a candidate at all);
2. the failed course lasted at least ``min_course_days`` (``end_date - start_date``);
3. ``age_at_index`` in [``min_age``, ``max_age``] (unknown: excluded);
4. the records cover the washout: ``observation_start`` at or before time zero - ``washout_days``
   (unknown: kept, unless the study's ``cohort.require_known_lookback``);
5. no ketamine in the washout: no course on a ketamine arm (``is_ketamine`` in the registry) that
   started before time zero and ran into [time zero - ``washout_days``, time zero) (its end date in
   it or later, or no end date);
6. a baseline: the last rating of the study's instrument (``cohort.instrument``) dated in
   [time zero - ``baseline_window_days``, time zero];
7. for a remission outcome: the baseline above the remission threshold (not in remission already);
8. a value for every covariate of the protocol (``covariates``).

Outcome and follow-up. Follow-up ratings are those of the instrument dated in
(time zero, time zero + ``followup_days``]. The outcome (``protocol.outcome``) is the first of them
that qualifies, with the thresholds the ADTTE endpoints use (the study's ``[outcomes]`` values, else
the instruments registry's): response, a score at or below baseline x (1 - response_reduction);
remission, at or below remission_max. Without one, a patient is censored at the last follow-up
rating, ``end_reason`` "lost" when it is before day ``followup_days``; a patient rated on that day or
later is censored on day ``followup_days``, "administrative". No follow-up rating: censored at 0,
"lost".

Start of treatment. ``start_day`` is the day of the first session (the start date of a course
without sessions) of the first course on a treatment arm (``treatment_arms``, else every ketamine
arm of the registry) that starts on or after time zero and before the end of follow-up (the
censoring day above, whatever the outcome: a start after the outcome is still seen); null when
none. ``other_start_day``: the same for the first course on a ketamine arm that is not a treatment
arm (only when the protocol names ``treatment_arms``; else null), kept when it comes before
``start_day`` (or without one): such a start deviates from both strategies (models.ccw censors it,
weighted). Other courses (an SSRI switch) do not end follow-up: the strategies say what a deviation
is.

Negative-control outcomes (``negative_controls``), from the ``clinical_events`` table. For each,
``nc_<name>_time`` / ``nc_<name>_event``: the day of the patient's first event of one of its
``event_types`` dated in [day 1, end of follow-up], event 1; else the end of follow-up, event 0.
The end of follow-up is the censoring day above (the last follow-up rating or ``followup_days``),
whatever the outcome: a negative control is an outcome of its own, so a patient who reached the
primary outcome is still followed for it, up to the end of follow-up (as the simulator defines its
negative controls: :mod:`ketaoutcomes.simulate.ssri_failure`). Without clinical events (no table, or
an empty one) the columns are left out (the analysis reports the controls as not in the data); a
control none of whose codes occurs anywhere in a table that has rows is refused (a typo in the study,
or a vocabulary the export does not use: :func:`negative_control_problems`); one whose codes occur
but never after an eligible patient's time zero keeps zero events (the calibration counts it as
unusable).
"""

from __future__ import annotations

import polars as pl

from ketaoutcomes.derive.adsl import extra_covariate_values
from ketaoutcomes.derive.events import threshold
from ketaoutcomes.protocol import TargetTrialProtocol
from ketaoutcomes.registries import Registries
from ketaoutcomes.settings import StudySettings
from ketaoutcomes.suggest import did_you_mean

__all__ = ["ATTRITION_SCHEMA", "FRAME_SCHEMA", "PATIENT_COVARIATES", "TargetTrialMismatch", "nc_columns",
           "negative_control_problems", "protocol_problems", "target_trial_cohort", "treatment_arms"]

#: The columns every frame has (then the study's extra covariates and other patient covariates).
FRAME_SCHEMA: dict[str, pl.DataType] = {
    "patient_id": pl.String, "time_zero": pl.Date, "failed_course_id": pl.String, "start_day": pl.Int64,
    "start_arm": pl.String, "other_start_day": pl.Int64, "time": pl.Int64, "event": pl.Int8, "end_reason": pl.String,
    "age_at_index": pl.Int64, "sex": pl.String, "baseline_score": pl.Float64, "prior_failed_trials": pl.Int64,
}
ATTRITION_SCHEMA: dict[str, pl.DataType] = {"step": pl.String, "excluded": pl.Int64, "remaining": pl.Int64}
#: Patient columns a protocol may name as covariates (with ``baseline_score`` and declared extras).
PATIENT_COVARIATES = ("age_at_index", "sex", "prior_failed_trials", "diagnosis", "weight_kg", "site")


class TargetTrialMismatch(ValueError):
    """The protocol names an arm, instrument or covariate the registries or the study do not have."""


def treatment_arms(protocol: TargetTrialProtocol, registries: Registries) -> tuple[str, ...]:
    """The arms whose start is "starting treatment": the protocol's, else every ketamine arm."""
    return protocol.treatment_arms or tuple(a for a, arm in registries.arms.items() if arm.is_ketamine)


def protocol_problems(study: StudySettings, registries: Registries) -> list[str]:
    """What in the study's ``[target_trial]`` does not fit the registries (and the study), one
    sentence each naming the field; empty when it fits (or the study declares no target trial)."""
    protocol = study.target_trial
    if protocol is None:
        return []
    arms, problems = registries.arms, []
    failed = protocol.eligibility.failed_arm
    if failed not in arms:
        problems.append(f'target_trial.eligibility.failed_arm "{failed}" is not an arm of the registry'
                        + did_you_mean(failed, arms))
    elif arms[failed].is_ketamine:
        problems.append(f'target_trial.eligibility.failed_arm "{failed}" is a ketamine arm: a course on it would '
                        "be ketamine in the washout of its own trial")
    for arm in protocol.treatment_arms:
        if arm not in arms:
            problems.append(f'target_trial.treatment_arms: "{arm}" is not an arm of the registry' + did_you_mean(arm, arms))
        elif not arms[arm].is_ketamine:
            problems.append(f'target_trial.treatment_arms: "{arm}" is not a ketamine arm (is_ketamine in the arms '
                            'registry); the comparator is "no ketamine"')
    if not protocol.treatment_arms and not any(a.is_ketamine for a in arms.values()):
        problems.append("target_trial.treatment_arms is empty and the arms registry has no ketamine arm: name the arms")
    if study.cohort.instrument not in registries.instruments:
        problems.append(f'cohort.instrument "{study.cohort.instrument}" (the outcome\'s instrument) is not in the '
                        "instruments registry" + did_you_mean(study.cohort.instrument, registries.instruments))
    known = [*PATIENT_COVARIATES, "baseline_score", *study.models.extra_covariates]
    for cov in protocol.covariates:
        if cov not in known:
            problems.append(f'target_trial.covariates: "{cov}" is not a patient column, baseline_score or an extra '
                            "covariate of [models.extra_covariates]" + did_you_mean(cov, known))
    return problems


def nc_columns(name: str) -> tuple[str, str]:
    """The time and event columns of negative control ``name`` in the trial's frame."""
    return f"nc_{name}_time", f"nc_{name}_event"


def negative_control_problems(protocol: TargetTrialProtocol, clinical_events: pl.DataFrame | None) -> list[str]:
    """The negative controls none of whose ``event_types`` occurs in ``clinical_events`` (any
    patient, any date), one sentence each naming the control and the nearest codes in the data;
    empty when the table has no rows (no clinical events delivered: nothing to compare with)."""
    if clinical_events is None or clinical_events.height == 0:
        return []
    present = set(clinical_events["event_type"].drop_nulls().unique().to_list())
    problems = []
    for nc in protocol.negative_controls:
        if not present & set(nc.event_types):
            codes = ", ".join(f'"{c}"' for c in nc.event_types)
            problems.append(f"target_trial.negative_controls: {nc.name!r} counts event_type {codes}, which no row of "
                            "clinical_events has" + did_you_mean(nc.event_types[0], sorted(present))
                            + " (fix the study's event_types, or leave the control out)")
    return problems


def _days(later: pl.Expr, time_zero: pl.Expr) -> pl.Expr:
    return (later.cast(pl.Date) - time_zero).dt.total_days().cast(pl.Int64)


def target_trial_cohort(patients: pl.DataFrame, courses: pl.DataFrame, sessions: pl.DataFrame | None,
                        mood_scores: pl.DataFrame, *, registries: Registries, study: StudySettings,
                        clinical_events: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The trial's cohort (module doc) and its attrition. ``sessions`` may be None (an export
    without sessions: a course starts on its start date). ``clinical_events`` (``patient_id``,
    ``event_date``, ``event_type``; None or empty: none delivered) gives the negative controls.

    Returns
    -------
    frame : DataFrame
        One row per eligible patient, sorted by ``patient_id``: :data:`FRAME_SCHEMA` (``start_day``
        and ``start_arm`` null without a start; ``time`` the day of the outcome or of censoring;
        ``event`` 1/0; ``end_reason`` "outcome", "administrative" or "lost"), then the study's extra
        covariates (``models.extra_covariates``) and any other patient column the protocol names, then
        ``nc_<name>_time`` (Int64) and ``nc_<name>_event`` (Int8) of each negative control, in the
        protocol's order, when there are clinical events.
    attrition : DataFrame
        ``step``, ``excluded``, ``remaining`` (patients), in order; the first row counts the patients
        in the data (``excluded`` null).

    Raises
    ------
    TargetTrialMismatch
        The study has no ``[target_trial]``, or it does not fit the registries (one line naming
        each field: :func:`protocol_problems`), or a negative control counts codes the clinical
        events never have (:func:`negative_control_problems`).
    """
    protocol = study.target_trial
    if protocol is None:
        raise TargetTrialMismatch(f"{study.source} declares no [target_trial]: there is no trial to derive")
    problems = protocol_problems(study, registries) + negative_control_problems(protocol, clinical_events)
    if problems:
        raise TargetTrialMismatch(f"target trial of {study.source}: " + "; ".join(problems))
    el = protocol.eligibility
    instrument = registries.instruments[study.cohort.instrument]
    extras = list(study.models.extra_covariates)
    others = [c for c in protocol.covariates if c in PATIENT_COVARIATES and c not in FRAME_SCHEMA]
    pats = extra_covariate_values(patients, study).select(
        "patient_id", "observation_start", "age_at_index", "sex", "prior_failed_trials", *others, *extras)

    cand = (courses.filter((pl.col("arm") == el.failed_arm) & pl.col("end_reason").is_in(list(el.failure_end_reasons))
                           & pl.col("end_date").is_not_null())
            .select("patient_id", pl.col("course_id").alias("failed_course_id"), "start_date",
                    pl.col("end_date").alias("time_zero"))
            .join(pats, on="patient_id", how="inner"))
    steps: list[tuple[str, pl.DataFrame]] = []

    def keep(rule: str, mask: pl.Expr) -> None:
        nonlocal cand
        cand = cand.filter(mask)
        steps.append((rule, cand))

    steps.append((f"a course on {el.failed_arm} ended for {' or '.join(el.failure_end_reasons)} (time zero: its "
                  "end date)", cand))
    keep(f"the failed course lasted at least {el.min_course_days} days",
         _days(pl.col("time_zero"), pl.col("start_date")) >= el.min_course_days)
    keep(f"age at index in [{el.min_age}, {el.max_age}]", pl.col("age_at_index").is_between(el.min_age, el.max_age))
    covered = pl.col("observation_start") <= pl.col("time_zero") - pl.duration(days=el.washout_days)
    keep(f"records cover the {el.washout_days} days before time zero (patients.observation_start"
         + (")" if study.cohort.require_known_lookback else "; unknown: kept)"),
         covered.fill_null(not study.cohort.require_known_lookback))
    ketamine = [a for a, arm in registries.arms.items() if arm.is_ketamine]
    before = (courses.filter(pl.col("arm").is_in(ketamine)).select("patient_id", "start_date",
                                                                    pl.col("end_date").alias("_end"))
              .join(cand.select("patient_id", "failed_course_id", "time_zero"), on="patient_id", how="inner")
              .filter((pl.col("start_date") < pl.col("time_zero"))
                      & (pl.col("_end").is_null()
                         | (pl.col("_end") >= pl.col("time_zero") - pl.duration(days=el.washout_days))))
              .select("failed_course_id").unique())
    keep(f"no ketamine course in the {el.washout_days} days before time zero",
         ~pl.col("failed_course_id").is_in(before["failed_course_id"]))
    ratings = (mood_scores.filter(pl.col("instrument") == study.cohort.instrument)
               .select("patient_id", "assessed_at", "total_score"))
    base = (ratings.join(cand.select("patient_id", "failed_course_id", "time_zero"), on="patient_id", how="inner")
            .with_columns(_days(pl.col("assessed_at"), pl.col("time_zero")).alias("_day"))
            .filter(pl.col("_day").is_between(-el.baseline_window_days, 0))
            .sort("failed_course_id", "assessed_at")
            .group_by("failed_course_id").agg(pl.col("total_score").last().cast(pl.Float64).alias("baseline_score")))
    cand = cand.join(base, on="failed_course_id", how="left")
    keep(f"a baseline {study.cohort.instrument} rating in the {el.baseline_window_days} days up to time zero",
         pl.col("baseline_score").is_not_null())
    remission = threshold(study, instrument, "remission_max")
    if protocol.outcome == "remission":
        keep(f"baseline {study.cohort.instrument} above the remission threshold {remission:g} (not in remission)",
             pl.col("baseline_score") > remission)
    keep(f"a value of every covariate of the protocol ({', '.join(protocol.covariates)})",
         pl.all_horizontal([pl.col(c).is_not_null() for c in protocol.covariates]) if protocol.covariates
         else pl.lit(True))
    trial = cand.sort("patient_id", "time_zero", "failed_course_id").unique("patient_id", keep="first", maintain_order=True)

    attrition = _attrition(patients.height, steps)
    frame = _follow(trial, ratings, courses, sessions, study, protocol, registries, instrument, others, extras)
    if clinical_events is not None and clinical_events.height and protocol.negative_controls:
        frame = _negative_controls(frame, clinical_events, protocol)
    return frame.drop("_end"), attrition


def _attrition(n_patients: int, steps: list[tuple[str, pl.DataFrame]]) -> pl.DataFrame:
    rows = [{"step": "patients in the data", "excluded": None, "remaining": n_patients}]
    for rule, frame in steps:
        n = frame["patient_id"].n_unique()
        rows.append({"step": rule, "excluded": rows[-1]["remaining"] - n, "remaining": n})
    return pl.DataFrame(rows, schema=ATTRITION_SCHEMA)


def _follow(trial: pl.DataFrame, ratings: pl.DataFrame, courses: pl.DataFrame, sessions: pl.DataFrame | None,
            study: StudySettings, protocol: TargetTrialProtocol, registries: Registries, instrument,
            others: list[str], extras: list[str]) -> pl.DataFrame:
    """Outcome, censoring and start of treatment of each patient's trial (module doc)."""
    F = protocol.followup_days
    after = (ratings.join(trial.select("patient_id", "time_zero", "baseline_score"), on="patient_id", how="inner")
             .with_columns(_days(pl.col("assessed_at"), pl.col("time_zero")).alias("_day"))
             .filter(pl.col("_day") >= 1))
    if protocol.outcome == "response":
        qualifies = pl.col("total_score") <= pl.col("baseline_score") * (1 - threshold(study, instrument,
                                                                                        "response_reduction"))
    else:
        qualifies = pl.col("total_score") <= threshold(study, instrument, "remission_max")
    inside = after.filter(pl.col("_day") <= F)
    first = inside.filter(qualifies).group_by("patient_id").agg(pl.col("_day").min().alias("_event_day"))
    seen = after.group_by("patient_id").agg(pl.col("_day").max().alias("_last"))
    arms = list(treatment_arms(protocol, registries))
    outside = [a for a, arm in registries.arms.items() if arm.is_ketamine and a not in arms]
    if sessions is None:
        sessions = pl.DataFrame(schema={"course_id": pl.String, "session_ts": pl.Datetime("us")})
    first_dose = sessions.group_by("course_id").agg(pl.col("session_ts").min().cast(pl.Date).alias("_dose"))
    out = (trial.join(first, on="patient_id", how="left").join(seen, on="patient_id", how="left")
           .with_columns(pl.min_horizontal(pl.col("_last").fill_null(0), pl.lit(F)).alias("_end")))

    def first_start(on: list[str]) -> pl.DataFrame:
        """Per patient, the day and arm of the first course on one of ``on`` in [time zero, end)."""
        return (courses.filter(pl.col("arm").is_in(on)).join(first_dose, on="course_id", how="left")
                .select("patient_id", "arm", "course_id", pl.coalesce("_dose", "start_date").alias("_first"))
                .join(trial.select("patient_id", "time_zero"), on="patient_id", how="inner")
                .with_columns(_days(pl.col("_first"), pl.col("time_zero")).alias("_start"))
                .filter(pl.col("_start") >= 0)
                .join(out.select("patient_id", "_end"), on="patient_id").filter(pl.col("_start") < pl.col("_end"))
                .sort("patient_id", "_start", "course_id").group_by("patient_id", maintain_order=True)
                .agg(pl.col("_start").first().alias("start_day"), pl.col("arm").first().alias("start_arm")))

    other = first_start(outside).select("patient_id", pl.col("start_day").alias("other_start_day"))
    out = (out.join(first_start(arms), on="patient_id", how="left").join(other, on="patient_id", how="left")
           .with_columns(pl.when(pl.col("start_day").is_null() | (pl.col("other_start_day") < pl.col("start_day")))
                         .then(pl.col("other_start_day")).alias("other_start_day"))).with_columns(
        pl.col("_event_day").is_not_null().cast(pl.Int8).alias("event"),
        pl.coalesce("_event_day", "_end").alias("time"),
        pl.when(pl.col("_event_day").is_not_null()).then(pl.lit("outcome"))
        .when(pl.col("_end") >= F).then(pl.lit("administrative")).otherwise(pl.lit("lost")).alias("end_reason"),
    )
    cols = [pl.col(c).cast(t) for c, t in FRAME_SCHEMA.items()]
    return out.select(*cols, *others, *extras, pl.col("_end").cast(pl.Int64)).sort("patient_id")


def _negative_controls(frame: pl.DataFrame, clinical_events: pl.DataFrame, protocol: TargetTrialProtocol
                       ) -> pl.DataFrame:
    """``nc_<name>_time`` / ``nc_<name>_event`` of each negative control (module doc); ``frame``
    has ``_end``, the end of follow-up."""
    days = (clinical_events.select("patient_id", "event_date", "event_type")
            .join(frame.select("patient_id", "time_zero", "_end"), on="patient_id", how="inner")
            .with_columns(_days(pl.col("event_date"), pl.col("time_zero")).alias("_day"))
            .filter(pl.col("_day").is_between(1, pl.col("_end"))))
    for nc in protocol.negative_controls:
        t, e = nc_columns(nc.name)
        first = (days.filter(pl.col("event_type").is_in(list(nc.event_types))).group_by("patient_id")
                 .agg(pl.col("_day").min().alias("_nc")))
        frame = (frame.join(first, on="patient_id", how="left")
                 .with_columns(pl.coalesce("_nc", "_end").cast(pl.Int64).alias(t),
                               pl.col("_nc").is_not_null().cast(pl.Int8).alias(e)).drop("_nc"))
    return frame.sort("patient_id")
