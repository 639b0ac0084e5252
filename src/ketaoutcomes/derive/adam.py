"""Analysis datasets: ADSL (one row per analysed course), attrition, ADTTE.

Pure functions: polars frames in, frames out. Conventions (each a
:class:`~ketaoutcomes.settings.StudySettings` field where a study may differ):

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
  sessions starts at 00:00 of its start date.
* **Follow-up end**: the start of the patient's next course, or the day after
  ``end_date`` when ``end_reason`` is ``switched`` or ``new_antidepressant``.
  Otherwise ratings after the course ended still count (a response seen at a
  follow-up visit is a response).
* **Baseline** (BASE): the *last* rating of the study instrument in
  [first dose - window, first dose]; not the worst (regression to the mean).
* **Time**: AVAL = ADT - STARTDT in calendar days (ADaM), so times tie at day
  level (fast Cox fits) and a rating three days after the first dose is day 3.
  A rating later on the day of the first dose is day 0; it still counts, since
  it comes after the origin (statsmodels and R accept events at time 0).
* **Censoring** is at the last rating that was seen (the only times at which
  the absence of an event is known), with CNSR saying why follow-up ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ketaoutcomes.derive.cnsr import CNSR
from ketaoutcomes.registries import Instrument, Registries
from ketaoutcomes.settings import StudySettings

__all__ = ["CNSR", "COVARIATE_COLUMNS", "DeriveResult", "derive_adsl", "derive_adtte", "derive_all"]

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


@dataclass(frozen=True)
class DeriveResult:
    adsl: pl.DataFrame
    adtte: pl.DataFrame
    attrition: pl.DataFrame
    notes: tuple[str, ...] = ()
    #: Assessment days of the analysed courses (see :func:`assessment_days`).
    visits: pl.DataFrame = field(default_factory=pl.DataFrame)


def _days(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    """Calendar days between the dates of two timestamps (ADaM: AVAL = ADT - STARTDT)."""
    return (later.dt.date() - earlier.dt.date()).dt.total_days().cast(pl.Float64)


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
    study_arms = set(study.arms) if study.arms else None
    courses = courses.sort("patient_id", "start_date", "course_id")
    courses = courses.with_columns(
        pl.col("start_date").shift(-1).over("patient_id").alias("_next_start"),
        pl.int_range(pl.len()).over("patient_id").alias("_course_seq"),
    )
    first_dose = sessions.group_by("course_id").agg(
        pl.col("session_ts").min().alias("_first_session"),
        pl.len().alias("NSESS"),
        (pl.col("phase") == "maintenance").sum().alias("NMAINT"),
    )
    idx = (
        courses.filter(pl.col("_course_seq") == 0)
        .join(first_dose, on="course_id", how="left")
        .with_columns(
            pl.coalesce("_first_session", pl.col("start_date").cast(pl.Datetime("us"))).alias("TRTSDTM"),
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
    inst = scores.filter(pl.col("instrument") == study.instrument)
    window = pl.duration(days=study.baseline_window_days)
    base = (
        inst.join(idx.select("patient_id", "TRTSDTM"), on="patient_id", how="inner")
        .filter((pl.col("assessed_at") <= pl.col("TRTSDTM")) & (pl.col("assessed_at") >= pl.col("TRTSDTM") - window))
        .sort("patient_id", "assessed_at")
        .group_by("patient_id")
        .agg(pl.col("total_score").last().alias("BASE"), pl.col("assessed_at").last().alias("BASEDTM"))
    )
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
            pl.lit(study.instrument).alias("PARAMINS"),
            "BASE",
            "BASEDTM",
            pl.col("concomitant_ssri").alias("CONSSRI"),
            pl.col("concomitant_benzodiazepine").alias("CONBENZO"),
            "NSESS",
            "NMAINT",
            "NPOST",
        )
    )
    adsl = adsl.with_columns(
        pl.when(pl.col("LOOKBACK").is_null()).then(None)
        .when(pl.col("LOOKBACK") >= study.washout_days).then(pl.lit("Y")).otherwise(pl.lit("N"))
        .alias("NEWUSFL")
    )
    in_arm = pl.lit(True) if study_arms is None else pl.col("ARM").is_in(sorted(study_arms))
    new_user = (pl.col("NEWUSFL") == "Y") if study.require_known_lookback else (pl.col("NEWUSFL") != "N").fill_null(True)
    has_base = pl.col("BASE").is_not_null()
    # Analysis population (like a trial's full analysis set): a baseline and at
    # least one rating after the first dose; the attrition table counts both rules.
    has_post = pl.col("NPOST") > 0
    adsl = adsl.with_columns(
        pl.when(in_arm & new_user & has_base & has_post).then(pl.lit("Y")).otherwise(pl.lit("N")).alias("ANLFL")
    )

    # Attrition: each rule narrows the previous population; counts per arm.
    n_patients = patients.select(pl.col("patient_id").n_unique()).item()
    steps: list[tuple[str, pl.DataFrame | None, int | None]] = [
        ("patients in the export", None, n_patients),
        ("with a treatment course (index course = first course)", adsl, None),
    ]
    pop = adsl
    if study_arms is not None:
        pop = pop.filter(in_arm)
        steps.append((f"index course on a study arm ({', '.join(sorted(study_arms))})", pop, None))
    unknown = "; unknown look-back excluded" if study.require_known_lookback else "; unknown look-back kept"
    pop = pop.filter(new_user)
    steps.append((f"new user: records cover >= {study.washout_days} d before the index course "
                  f"(washout){unknown}", pop, None))
    pop = pop.filter(has_base)
    steps.append(
        (f"baseline {study.instrument} in [first dose - {study.baseline_window_days} d, first dose]", pop, None)
    )
    steps.append((f"at least one {study.instrument} rating after the first dose", pop.filter(has_post), None))
    attrition = _attrition(steps)
    return adsl, attrition


def _attrition(steps: list[tuple[str, pl.DataFrame | None, int | None]]) -> pl.DataFrame:
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


def _thresholds(instr: Instrument, study: StudySettings) -> tuple[float, float, float]:
    reduction = study.response_reduction if study.response_reduction is not None else instr.response_reduction
    remission = study.remission_max if study.remission_max is not None else instr.remission_max
    relapse = study.relapse_min if study.relapse_min is not None else instr.relapse_min
    return reduction, remission, relapse


def _first_event(
    origin: pl.DataFrame, ratings: pl.DataFrame, qualifies: pl.Expr, *, paramcd: str, param: str, evntdesc: str,
    tar_days: int | None = None,
) -> pl.DataFrame:
    """Time from STARTDT to the first rating that ``qualifies``; else censored at the last rating.

    ``origin`` has USUBJID, COURSEID, ARM, STARTDT, ICEREAS (+ whatever
    ``qualifies`` needs); ``ratings`` has USUBJID, assessed_at, total_score, only
    the ratings inside follow-up and after STARTDT. With ``tar_days``, ratings
    later than STARTDT + tar_days are out of the time at risk (CNSR 5 when they
    exist and no event came before).
    """
    r = ratings.join(origin, on="USUBJID", how="inner").sort("USUBJID", "assessed_at")
    beyond = pl.DataFrame(schema={"USUBJID": pl.String, "_beyond": pl.Boolean})
    if tar_days is not None:
        inside = pl.col("assessed_at") <= pl.col("STARTDT") + pl.duration(days=tar_days)
        beyond = r.filter(~inside).group_by("USUBJID").agg(pl.lit(True).alias("_beyond"))
        r = r.filter(inside)
    first_ev = r.filter(qualifies).group_by("USUBJID").agg(pl.col("assessed_at").first().alias("_ev"),
                                                           pl.col("total_score").first().alias("_evscore"))
    last = r.group_by("USUBJID").agg(pl.col("assessed_at").last().alias("_last"))
    out = (origin.join(first_ev, on="USUBJID", how="left").join(last, on="USUBJID", how="left")
           .join(beyond, on="USUBJID", how="left"))
    cnsr = (
        pl.when(pl.col("_ev").is_not_null()).then(0)
        .when(pl.col("_last").is_null()).then(3)
        .when(pl.col("_beyond").fill_null(False)).then(5)
        .when(pl.col("ICEREAS").is_not_null()).then(2)
        .otherwise(1)
    )
    out = out.with_columns(cnsr.cast(pl.Int32).alias("CNSR"))
    adt = pl.when(pl.col("CNSR") == 0).then("_ev").when(pl.col("CNSR") == 3).then("STARTDT").otherwise("_last")
    return out.with_columns(
        pl.lit(paramcd).alias("PARAMCD"),
        pl.lit(param).alias("PARAM"),
        adt.alias("ADT"),
    ).with_columns(
        _days(pl.col("ADT"), pl.col("STARTDT")).alias("AVAL"),
        pl.lit("DAYS").alias("AVALU"),
        pl.when(pl.col("CNSR") == 0).then(pl.lit(evntdesc)).alias("EVNTDESC"),
        pl.col("CNSR").replace_strict(CNSR, return_dtype=pl.String).alias("CNSDTDSC"),
        pl.col("_evscore").alias("EVSCORE"),
    )


def _relapse(
    responders: pl.DataFrame, ratings: pl.DataFrame, *, threshold: float, study: StudySettings, instrument: str
) -> pl.DataFrame:
    """TTRELAPS: from the response rating to the first confirmed relapse rating.

    A rating >= threshold at t1 is a relapse if the next rating taken at least
    ``confirm_min_days`` after t1 is also >= threshold and lies no later than
    ``confirm_max_days`` after t1, and no rating in between fell below the
    threshold (SUSTAIN-1: two consecutive assessments 5-15 days apart). The
    event date is t1.
    """
    r = (
        ratings.join(responders.select("USUBJID", "STARTDT"), on="USUBJID", how="inner")
        .filter(pl.col("assessed_at") > pl.col("STARTDT"))
        .sort("USUBJID", "assessed_at")
        .with_columns((pl.col("total_score") >= threshold).alias("_high"))
        .with_columns(
            # time of the next rating below threshold, strictly after this one
            pl.when(~pl.col("_high")).then(pl.col("assessed_at")).shift(-1).over("USUBJID").alias("_nl_shift"),
        )
        .with_columns(pl.col("_nl_shift").backward_fill().over("USUBJID").alias("_next_low"))
    )
    # backward_fill of the shifted series gives, for row i, the first low rating at a row > i.
    r = r.with_columns((pl.col("assessed_at") + pl.duration(days=study.confirm_min_days)).alias("_confirm_from"))
    cand = r.select("USUBJID", pl.col("assessed_at").alias("_t2"), pl.col("_high").alias("_high2")).sort(
        "USUBJID", "_t2"
    )
    r = r.sort("_confirm_from").join_asof(
        cand.sort("_t2"), left_on="_confirm_from", right_on="_t2", by="USUBJID", strategy="forward",
        check_sortedness=False,  # sorted globally by the key, hence within every USUBJID
    ).sort("USUBJID", "assessed_at")
    confirmed = (
        pl.col("_high")
        & pl.col("_t2").is_not_null()
        & (pl.col("_t2") <= pl.col("assessed_at") + pl.duration(days=study.confirm_max_days))
        & pl.col("_high2")
        & (pl.col("_next_low").is_null() | (pl.col("_next_low") > pl.col("_t2")))
    )
    r = r.with_columns(confirmed.alias("_confirmed"))
    r_for_events = r.select("USUBJID", "assessed_at", "total_score", "_confirmed", "_high")
    out = _first_event(
        responders, r_for_events.drop("_high"), pl.col("_confirmed"),
        paramcd="TTRELAPS", param=f"Time from response to confirmed relapse ({instrument} >= {threshold:g})",
        evntdesc=f"relapse: {instrument} >= {threshold:g}, confirmed {study.confirm_min_days}-{study.confirm_max_days} days later",
        tar_days=study.time_at_risk_days,
    )
    last_high = r.sort("USUBJID", "assessed_at").group_by("USUBJID").agg(pl.col("_high").last().alias("_last_high"))
    out = out.join(last_high, on="USUBJID", how="left").with_columns(
        pl.when((pl.col("CNSR") == 1) & pl.col("_last_high").fill_null(False)).then(4).otherwise(pl.col("CNSR"))
        .cast(pl.Int32).alias("CNSR")
    )
    return out.with_columns(pl.col("CNSR").replace_strict(CNSR, return_dtype=pl.String).alias("CNSDTDSC"))


ADTTE_COLUMNS = [
    "STUDYID", "USUBJID", "COURSEID", "ARM", "PARAMCD", "PARAM", "STARTDT", "ADT", "AVAL", "AVALU",
    "CNSR", "EVNTDESC", "CNSDTDSC", "EVSCORE",
]


def derive_adtte(
    adsl: pl.DataFrame, scores: pl.DataFrame, *, registries: Registries, study: StudySettings
) -> tuple[pl.DataFrame, list[str]]:
    """ADTTE rows for TTRESP, TTREM and TTRELAPS on the analysis population."""
    if study.instrument not in registries.instruments:
        raise ValueError(
            f"study instrument {study.instrument!r} is not in the instruments registry "
            f"({', '.join(sorted(registries.instruments))}); add it to instruments.csv or change the study"
        )
    instr = registries.instruments[study.instrument]
    reduction, remission, relapse = _thresholds(instr, study)
    notes: list[str] = []
    pop = adsl.filter(pl.col("ANLFL") == "Y").select(
        "STUDYID", "USUBJID", "COURSEID", "ARM", pl.col("TRTSDTM").alias("STARTDT"), "FUENDTM", "ICEREAS", "BASE"
    )
    ratings = _followup_ratings(pop, scores, study.instrument).select("USUBJID", "assessed_at", "total_score")
    resp = _first_event(
        pop, ratings, pl.col("total_score") <= pl.col("BASE") * (1 - reduction),
        paramcd="TTRESP", param=f"Time to response ({instrument_pct(reduction)} reduction in {study.instrument})",
        evntdesc=f"response: {study.instrument} <= {1 - reduction:g} x baseline", tar_days=study.time_at_risk_days,
    )
    rem_pop = pop.filter(pl.col("BASE") > remission)
    n_already = pop.height - rem_pop.height
    if n_already:
        notes.append(f"TTREM: {n_already} course(s) left out because baseline {study.instrument} was already <= {remission:g}")
    rem = _first_event(
        rem_pop, ratings, pl.col("total_score") <= remission,
        paramcd="TTREM", param=f"Time to remission ({study.instrument} <= {remission:g})",
        evntdesc=f"remission: {study.instrument} <= {remission:g}", tar_days=study.time_at_risk_days,
    )
    responders = resp.filter(pl.col("CNSR") == 0).select(
        "STUDYID", "USUBJID", "COURSEID", "ARM", pl.col("ADT").alias("STARTDT"), "FUENDTM", "ICEREAS"
    )
    rel = _relapse(responders, ratings, threshold=relapse, study=study, instrument=study.instrument)
    frames = [f.select(ADTTE_COLUMNS) for code, f in (("TTRESP", resp), ("TTREM", rem), ("TTRELAPS", rel))
              if code in study.endpoints]
    return pl.concat(frames, how="vertical_relaxed").sort("PARAMCD", "USUBJID"), notes


def _followup_ratings(pop: pl.DataFrame, scores: pl.DataFrame, instrument: str) -> pl.DataFrame:
    """Ratings of ``instrument`` after the first dose (``pop.STARTDT``) and before follow-up ends."""
    return (
        scores.filter(pl.col("instrument") == instrument)
        .select(pl.col("patient_id").alias("USUBJID"), "assessed_at", "total_score")
        .join(pop.select("USUBJID", "STARTDT", "FUENDTM"), on="USUBJID", how="inner")
        .filter(
            (pl.col("assessed_at") > pl.col("STARTDT"))
            & (pl.col("FUENDTM").is_null() | (pl.col("assessed_at") < pl.col("FUENDTM")))
        )
    )


def assessment_days(adsl: pl.DataFrame, scores: pl.DataFrame, *, instrument: str) -> pl.DataFrame:
    """The assessment grid of each analysed course: USUBJID, ADY (calendar days from the first
    dose, as AVAL) of every rating of ``instrument`` inside follow-up. The visits between which an
    event was first seen bound its true time (the interval-censored sensitivity analysis)."""
    pop = adsl.filter(pl.col("ANLFL") == "Y").select("USUBJID", pl.col("TRTSDTM").alias("STARTDT"), "FUENDTM")
    return (
        _followup_ratings(pop, scores, instrument)
        .select("USUBJID", _days(pl.col("assessed_at"), pl.col("STARTDT")).alias("ADY"))
        .unique().sort("USUBJID", "ADY")
    )


def instrument_pct(reduction: float) -> str:
    return f">= {reduction * 100:g}%"


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
    adsl, attrition = derive_adsl(patients, courses, sessions, scores, study=study)
    adtte, notes = derive_adtte(adsl, scores, registries=registries, study=study)
    n_after = adsl.filter(pl.col("LOOKBACK") < 0).height
    if n_after:
        notes.insert(0, f"new-user rule: {n_after} patient(s) whose observation_start lies after the start of their "
                        "first course (a data error in the export: the records must cover the course) were excluded "
                        "as not known to be new users")
    n_unknown = adsl.filter(pl.col("NEWUSFL").is_null()).height
    if n_unknown:
        notes.insert(0, f"new-user rule: {n_unknown} course(s) without observation_start (look-back unknown) were "
                        + ("excluded (require_known_lookback)" if study.require_known_lookback else
                           "kept; set require_known_lookback = true to exclude them"))
    if "TTSIRES" in study.endpoints:
        from ketaoutcomes.derive.suicidal_ideation import derive_si_resolution

        if "si_item_score" not in scores.columns:  # optional in the contract: absent means not recorded
            scores = scores.with_columns(pl.lit(None, dtype=pl.Float64).alias("si_item_score"))
        si, si_attrition = derive_si_resolution(adsl, scores, instrument=study.instrument, study=study)
        adtte = pl.concat([adtte, si.select(adtte.columns)], how="vertical_relaxed").sort("PARAMCD", "USUBJID")
        # the secondary endpoint's own population, after the analysis population's rules
        offset = int(attrition["step"].max())
        attrition = pl.concat([attrition, si_attrition.filter(pl.col("step") > 1).with_columns(
            (pl.col("step") + offset - 1).cast(pl.Int32),
            ("suicidal-ideation endpoint (TTSIRES): " + pl.col("rule")).alias("rule"),
        ).select(attrition.columns)], how="vertical_relaxed")
    visits = assessment_days(adsl, scores, instrument=study.instrument)
    return DeriveResult(adsl=adsl, adtte=adtte, attrition=attrition, notes=tuple(notes), visits=visits)
