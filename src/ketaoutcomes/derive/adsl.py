"""ADSL (one row per patient's index course) and the attrition table (pure).

Conventions (each a :class:`~ketaoutcomes.settings.StudySettings` field where a study may differ):

* **Index course**: a patient's first treatment course (by start date, then
  course id). Later courses are not analysed; they end the index course's
  follow-up (a new treatment is an intercurrent event).
* **New user**: the index course is the first course in the records, so it is a
  new use of every arm when the records reach back at least ``washout_days``
  before it (LOOKBACK = course start - ``patients.observation_start``); a patient
  whose records start later was possibly exposed just before and is excluded. An
  unknown look-back (no observation_start) is kept and counted in a note, unless
  ``require_known_lookback``.
* **First dose** (TRTSDTM): the course's first session; a course without
  sessions starts at 00:00 of its start date, or with
  ``cohort.first_dose_without_sessions = "end_of_day"`` at the end of it (a rating
  that day is then baseline, not follow-up).
* **Covariates**: a patient without a value in a covariate or the strata of the
  study is excluded (an attrition row); a trial's own covariates
  (``models.extra_covariates``) are read from the patients file's kept columns
  (``_extra``) and typed as declared (checked before: ketaoutcomes.analysis.checks).
* **Follow-up end**: the start of the patient's next course, or the day after
  ``end_date`` when ``end_reason`` is ``switched`` or ``new_antidepressant``.
  Otherwise ratings after the course ended still count (a response seen at a
  follow-up visit is a response).
* **Baseline** (BASE): the *last* rating of the study instrument in
  [first dose - window, first dose]; not the worst (regression to the mean).
"""

from __future__ import annotations

import polars as pl

from ketaoutcomes.contract import EXTRA_COLUMN
from ketaoutcomes.settings import StudySettings

__all__ = ["COVARIATE_COLUMNS", "INTERCURRENT_END_REASONS", "attrition_hint", "attrition_table", "baseline_rating",
           "derive_adsl", "extra_covariate_values", "first_dose_without_sessions", "stored_adsl"]

#: Study-setting covariate names -> ADSL column names.
COVARIATE_COLUMNS = {
    "age_at_index": "AGE",
    "sex": "SEX",
    "baseline_score": "BASE",
    "prior_failed_trials": "PRIORFAIL",
    "diagnosis": "DIAGNOSIS",
    "weight_kg": "WEIGHT",
    "site": "SITEID",
}


INTERCURRENT_END_REASONS = ("switched", "new_antidepressant")


def first_dose_without_sessions(start_date: pl.Expr, study: StudySettings) -> pl.Expr:
    """The first dose of a course without sessions: 00:00 of its start date, or its last
    microsecond (``cohort.first_dose_without_sessions = "end_of_day"``)."""
    start = start_date.cast(pl.Datetime("us"))
    if study.cohort.first_dose_without_sessions == "end_of_day":
        return start + pl.duration(days=1) - pl.duration(microseconds=1)
    return start


def extra_covariate_values(patients: pl.DataFrame, study: StudySettings) -> pl.DataFrame:
    """``patients`` with a column per extra covariate of the study (``models.extra_covariates``),
    read from the kept columns (EXTRA_COLUMN, JSON text) and typed as declared: text for a
    categorical, Float64 for a numeric (a value that is not a number is null here; the study check
    refuses it before anything is derived)."""
    extras = study.models.extra_covariates
    if not extras:
        return patients
    if EXTRA_COLUMN not in patients.columns:
        patients = patients.with_columns(pl.lit(None, dtype=pl.String).alias(EXTRA_COLUMN))
    cols = []
    for name, spec in extras.items():
        text = pl.col(EXTRA_COLUMN).str.json_path_match(f"$.{name}")
        cols.append((text.cast(pl.Float64, strict=False) if spec.type == "numeric" else text).alias(name))
    return patients.with_columns(cols)


def stored_adsl(adsl: pl.DataFrame, study: StudySettings) -> pl.DataFrame:
    """ADSL as ``ad_adsl`` stores it: the study's extra covariates (columns named by the export, not
    declared in the table's contract) folded into one JSON column, EXTRACOV."""
    extras = [n for n in study.models.extra_covariates if n in adsl.columns]
    if not extras:
        return adsl.with_columns(pl.lit(None, dtype=pl.String).alias("EXTRACOV"))
    return adsl.with_columns(pl.struct(extras).struct.json_encode().alias("EXTRACOV")).drop(extras)


def derive_adsl(
    patients: pl.DataFrame,
    courses: pl.DataFrame,
    sessions: pl.DataFrame,
    scores: pl.DataFrame,
    *,
    study: StudySettings,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One row per patient's index course, and the attrition table.

    Returns
    -------
    adsl : DataFrame
        USUBJID, COURSEID, ARM, SITEID, SEX, AGE, PRIORFAIL, DIAGNOSIS, WEIGHT,
        TRTSDTM, FUENDTM, ICEREAS, DCREAS (the course's end_reason), LOOKBACK
        (days of records before the course start; null if unknown), NEWUSFL
        ('Y' new user, 'N' not, null unknown), BASE, BASEDTM, CONSSRI, CONBENZO,
        NSESS, NMAINT, NPOST, ANLFL ('Y': in the analysis population, i.e. a new
        user on a study arm with a baseline and at least one rating after the first dose).
    attrition : DataFrame
        step, rule, arm, n_remaining, n_excluded: counts per arm after each rule.
    """
    study_arms = set(study.cohort.arms) if study.cohort.arms else None
    courses = courses.sort("patient_id", "start_date", "course_id")
    # a patient's courses are neighbours once sorted: the next course and the first one are read off the
    # rows beside them (the same as a window over patient_id, which took 1.8 s of this function at 1M)
    pid = pl.col("patient_id")
    courses = courses.with_columns(
        pl.when(pid.eq_missing(pid.shift(-1))).then(pl.col("start_date").shift(-1)).alias("_next_start"),
        (~pid.eq_missing(pid.shift(1)) | (pl.int_range(pl.len()) == 0)).alias("_first_course"),
    )
    first_dose = sessions.group_by("course_id").agg(
        pl.col("session_ts").min().alias("_first_session"),
        pl.len().alias("NSESS"),
        (pl.col("phase") == "maintenance").sum().alias("NMAINT"),
    )
    idx = (
        courses.filter(pl.col("_first_course"))
        .join(first_dose, on="course_id", how="left")
        .with_columns(
            pl.coalesce("_first_session", first_dose_without_sessions(pl.col("start_date"), study)).alias("TRTSDTM"),
            pl.col("NSESS").fill_null(0),
            pl.col("NMAINT").fill_null(0),
        )
    )
    ice_end = pl.when(pl.col("end_reason").is_in(INTERCURRENT_END_REASONS)).then(
        (pl.col("end_date") + pl.duration(days=1)).cast(pl.Datetime("us"))
    )
    next_start = pl.col("_next_start").cast(pl.Datetime("us"))
    idx = idx.with_columns(
        pl.min_horizontal(ice_end, next_start).alias("FUENDTM"),
        pl.when(next_start.is_not_null() & (ice_end.is_null() | (next_start <= ice_end)))
        .then(pl.lit("new course"))
        .when(ice_end.is_not_null())
        .then(pl.col("end_reason"))
        .alias("ICEREAS"),
    )

    # Baseline: last rating of the instrument in [first dose - window, first dose].
    inst = scores.filter(pl.col("instrument") == study.cohort.instrument)
    base = baseline_rating(inst, idx.select("patient_id", "TRTSDTM"), key="patient_id", origin="TRTSDTM",
                           window_days=study.cohort.baseline_window_days).select(
        "patient_id", pl.col("total_score").alias("BASE"), pl.col("assessed_at").alias("BASEDTM"))
    post = (
        inst.join(idx.select("patient_id", "TRTSDTM", "FUENDTM"), on="patient_id", how="inner")
        .filter(
            (pl.col("assessed_at") > pl.col("TRTSDTM"))
            & (pl.col("FUENDTM").is_null() | (pl.col("assessed_at") < pl.col("FUENDTM")))
        )
        .group_by("patient_id")
        .agg(pl.len().alias("NPOST"))
    )
    if "observation_start" not in patients.columns:  # optional in the contract
        patients = patients.with_columns(pl.lit(None, dtype=pl.Date).alias("observation_start"))
    patients = extra_covariate_values(patients, study)
    extras = list(study.models.extra_covariates)
    adsl = (
        idx.join(patients, on="patient_id", how="left")
        .join(base, on="patient_id", how="left")
        .join(post, on="patient_id", how="left")
        .with_columns(pl.col("NPOST").fill_null(0))
        .select(
            pl.lit(study.name).alias("STUDYID"),
            pl.col("patient_id").alias("USUBJID"),
            pl.col("course_id").alias("COURSEID"),
            pl.col("arm").alias("ARM"),
            pl.col("site").alias("SITEID"),
            pl.col("sex").alias("SEX"),
            pl.col("age_at_index").alias("AGE"),
            pl.col("prior_failed_trials").alias("PRIORFAIL"),
            pl.col("diagnosis").alias("DIAGNOSIS"),
            pl.col("weight_kg").alias("WEIGHT"),
            "TRTSDTM",
            "FUENDTM",
            "ICEREAS",
            pl.col("end_reason").alias("DCREAS"),
            (pl.col("start_date") - pl.col("observation_start")).dt.total_days().cast(pl.Int32).alias("LOOKBACK"),
            pl.lit(study.cohort.instrument).alias("PARAMINS"),
            "BASE",
            "BASEDTM",
            pl.col("concomitant_ssri").alias("CONSSRI"),
            pl.col("concomitant_benzodiazepine").alias("CONBENZO"),
            "NSESS",
            "NMAINT",
            "NPOST",
            *extras,
        )
    )
    adsl = adsl.with_columns(
        pl.when(pl.col("LOOKBACK").is_null()).then(None)
        .when(pl.col("LOOKBACK") >= study.cohort.washout_days).then(pl.lit("Y")).otherwise(pl.lit("N"))
        .alias("NEWUSFL")
    )
    in_arm = pl.lit(True) if study_arms is None else pl.col("ARM").is_in(sorted(study_arms))
    new_user = (pl.col("NEWUSFL") == "Y") if study.cohort.require_known_lookback else (pl.col("NEWUSFL") != "N").fill_null(True)
    has_base = pl.col("BASE").is_not_null()
    # A value in every covariate and the strata of the study (baseline_score: the baseline rule).
    known = [c for c in (*study.models.covariates, *([study.models.strata] if study.models.strata else []))
             if c != "baseline_score"]
    has_cov = pl.all_horizontal([pl.col(COVARIATE_COLUMNS.get(c, c)).is_not_null() for c in known] or [pl.lit(True)])
    # Analysis population (like a trial's full analysis set): a baseline and at
    # least one rating after the first dose; the attrition table counts both rules.
    has_post = pl.col("NPOST") > 0
    adsl = adsl.with_columns(
        pl.when(in_arm & new_user & has_cov & has_base & has_post).then(pl.lit("Y")).otherwise(pl.lit("N"))
        .alias("ANLFL")
    )

    # Attrition: each rule narrows the previous population; counts per arm.
    n_patients = patients.select(pl.col("patient_id").n_unique()).item()
    steps: list[tuple[str, pl.DataFrame | None, int | None]] = [
        (RULE_PATIENTS, None, n_patients),
        (RULE_COURSE, adsl, None),
    ]
    pop = adsl
    if study_arms is not None:
        pop = pop.filter(in_arm)
        steps.append((f"{RULE_ARM} ({', '.join(sorted(study_arms))})", pop, None))
    unknown = "; unknown look-back excluded" if study.cohort.require_known_lookback else "; unknown look-back kept"
    pop = pop.filter(new_user)
    steps.append((f"{RULE_NEW_USER}: records cover >= {study.cohort.washout_days} d before the index course "
                  f"(washout){unknown}", pop, None))
    if known:
        pop = pop.filter(has_cov)
        steps.append((f"{RULE_COVARIATES} ({', '.join(known)})", pop, None))
    pop = pop.filter(has_base)
    same_day = (" (a course without sessions: first dose = the end of its start date)"
                if study.cohort.first_dose_without_sessions == "end_of_day" else "")
    steps.append(
        (f"{RULE_BASELINE} {study.cohort.instrument} in [first dose - {study.cohort.baseline_window_days} d, first dose]"
         f"{same_day}", pop, None)
    )
    steps.append((f"{RULE_POST} {study.cohort.instrument} rating after the first dose", pop.filter(has_post), None))
    attrition = attrition_table(steps)
    return adsl, attrition


# The analysis population's rules (the start of each ``results_attrition.rule``), and what to check
# when one leaves no course (:func:`attrition_hint`).
RULE_PATIENTS = "patients in the export"
RULE_COURSE = "with a treatment course (index course = first course)"
RULE_ARM = "index course on a study arm"
RULE_NEW_USER = "new user"
RULE_COVARIATES = "a value in every covariate and the strata of the study"
RULE_BASELINE = "baseline"
RULE_POST = "at least one"
_HINTS = {
    RULE_PATIENTS: "load an export with patients (rows refused at ingest are in table quarantine)",
    RULE_COURSE: "check courses.csv (rows refused at ingest are in table quarantine)",
    RULE_ARM: "check cohort.arms against the arms of the index courses in stg_courses",
    RULE_NEW_USER: "check patients.observation_start and cohort.washout_days (and cohort.require_known_lookback)",
    RULE_COVARIATES: "check the covariates and strata of the study (models.covariates, models.strata) against "
                     "patients.csv: a patient without a value in one of them is excluded",
    RULE_BASELINE: "check the instrument and the baseline window (cohort.instrument, cohort.baseline_window_days; "
                   "for courses without sessions also cohort.first_dose_without_sessions: a rating on the start date "
                   "is baseline only with \"end_of_day\")",
    RULE_POST: "check the instrument (cohort.instrument) and the ratings after the first dose in mood_scores",
}


def attrition_hint(rule: str) -> str:
    """What to check when the analysis population's attrition rule ``rule`` leaves no course."""
    for start, hint in _HINTS.items():
        if rule.startswith(start):
            return hint
    return "check the study settings against the data"


def baseline_rating(ratings: pl.DataFrame, origins: pl.DataFrame, *, key: str, origin: str, window_days: int
                    ) -> pl.DataFrame:
    """Each ``key``'s baseline rating: its *last* row of ``ratings`` (``key``, ``assessed_at``, ...)
    in [``origin`` - ``window_days``, ``origin``] (``origins`` has ``key`` and ``origin``), not the
    worst one (regression to the mean). Keys without one are absent."""
    window = pl.duration(days=window_days)
    return (
        ratings.join(origins.select(key, origin), on=key, how="inner")
        .filter((pl.col("assessed_at") <= pl.col(origin)) & (pl.col("assessed_at") >= pl.col(origin) - window))
        .sort(key, "assessed_at")
        .group_by(key)
        .agg(pl.all().exclude(key).last())
    )


def attrition_table(steps: list[tuple[str, pl.DataFrame | None, int | None]]) -> pl.DataFrame:
    """One row per rule and arm (and ``(all)``): how many remain after each rule and how many it
    excluded. ``steps`` are ``(rule, population after it, None)``, or ``(rule, None, total)`` for a
    count without arms; each population narrows the one before."""
    rows = []
    prev: dict[str, int] = {}
    for i, (rule, frame, total) in enumerate(steps, start=1):
        if frame is None:
            rows.append({"step": i, "rule": rule, "arm": "(all)", "n_remaining": total, "n_excluded": None})
            continue
        counts = dict(frame.group_by("ARM").len().iter_rows())
        arms = sorted(set(counts) | set(prev))
        for arm in arms:
            n = counts.get(arm, 0)
            rows.append({
                "step": i, "rule": rule, "arm": arm, "n_remaining": n,
                "n_excluded": (prev[arm] - n) if arm in prev else None,
            })
        n_all = frame.height
        p_all = sum(prev.values()) if prev else None
        rows.append({"step": i, "rule": rule, "arm": "(all)", "n_remaining": n_all,
                     "n_excluded": (p_all - n_all) if p_all is not None else None})
        prev = counts
    return pl.DataFrame(rows, schema={"step": pl.Int32, "rule": pl.String, "arm": pl.String,
                                      "n_remaining": pl.Int64, "n_excluded": pl.Int64})
