"""What every ADTTE derivation shares, and the registry of derivations (pure).

Conventions:

* **Time**: AVAL = ADT - STARTDT in calendar days (ADaM), so times tie at day
  level (fast Cox fits) and a rating three days after the first dose is day 3.
  A rating later on the day of the first dose is day 0; it still counts, since
  it comes after the origin (statsmodels and R accept events at time 0).
* **Censoring** is at the last rating that was seen (the only times at which
  the absence of an event is known), with CNSR (:mod:`ketaoutcomes.derive.cnsr`)
  saying why follow-up ended.

Each endpoint declared in :mod:`ketaoutcomes.endpoints` has one derivation function,
registered here with :func:`derivation`: it takes an :class:`EndpointInput` and returns
:class:`EndpointRows` (the ADTTE rows, the endpoint's own narrowing of the analysis
population, each step an attrition row, and notes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import polars as pl

from ketaoutcomes.derive.cnsr import CNSR
from ketaoutcomes.endpoints import ENDPOINTS
from ketaoutcomes.notes import Note
from ketaoutcomes.registries import Instrument
from ketaoutcomes.settings import StudySettings

__all__ = ["ADTTE_COLUMNS", "DERIVATIONS", "EndpointInput", "EndpointRows", "assessment_days", "days",
           "derivation", "first_event", "followup_ratings", "instrument_pct", "threshold"]

ADTTE_COLUMNS = [
    "STUDYID", "USUBJID", "COURSEID", "ARM", "PARAMCD", "PARAM", "STARTDT", "ADT", "AVAL", "AVALU",
    "CNSR", "EVNTDESC", "CNSDTDSC", "EVSCORE",
]


@dataclass(frozen=True)
class EndpointInput:
    """What a derivation works from.

    Attributes
    ----------
    adsl : DataFrame
        Every index course (ADSL).
    pop : DataFrame
        The analysis population (ANLFL = 'Y'): STUDYID, USUBJID, COURSEID, ARM, STARTDT (the
        first dose), FUENDTM, ICEREAS, BASE.
    ratings : DataFrame
        Ratings of the study instrument after the first dose and inside follow-up: USUBJID,
        assessed_at, total_score.
    scores : DataFrame
        The whole ``mood_scores`` table (for endpoints on another item or instrument).
    instrument : Instrument
        The study instrument's registry entry.
    study : StudySettings
    derived : mapping of str to DataFrame
        Rows (with their origin columns) of the endpoints derived before this one, by code, in
        registry order: an endpoint that ``requires`` another reads it here.
    """

    adsl: pl.DataFrame
    pop: pl.DataFrame
    ratings: pl.DataFrame
    scores: pl.DataFrame
    instrument: Instrument
    study: StudySettings
    derived: Mapping[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def response_reduction(self) -> float:
        return threshold(self.study, self.instrument, "response_reduction")

    @property
    def remission_max(self) -> float:
        return threshold(self.study, self.instrument, "remission_max")

    @property
    def relapse_min(self) -> float:
        return threshold(self.study, self.instrument, "relapse_min")


def threshold(study: StudySettings, instrument: Instrument, name: str) -> float:
    """An endpoint threshold (``response_reduction``, ``remission_max``, ``relapse_min``): the
    study's (``[outcomes]``) when it sets one, else the instrument's registry value."""
    value = getattr(study.outcomes, name)
    return value if value is not None else getattr(instrument, name)


@dataclass(frozen=True)
class EndpointRows:
    """What a derivation returns.

    Attributes
    ----------
    rows : DataFrame
        ADTTE rows (at least :data:`ADTTE_COLUMNS`; origin columns may stay for endpoints
        derived from this one).
    population : tuple of (rule, DataFrame)
        The endpoint's own narrowing of the analysis population, in order: each rule and the
        courses (USUBJID, ARM) left after it. Each becomes an attrition row.
    notes : tuple of Note
    """

    rows: pl.DataFrame
    population: tuple[tuple[str, pl.DataFrame], ...] = ()
    notes: tuple[Note, ...] = ()


Derivation = Callable[[EndpointInput], EndpointRows]

#: Endpoint code -> its derivation function (filled by :func:`derivation`).
DERIVATIONS: dict[str, Derivation] = {}


def derivation(code: str) -> Callable[[Derivation], Derivation]:
    """Register the decorated function as the derivation of endpoint ``code`` (declared in
    :mod:`ketaoutcomes.endpoints`)."""
    if code not in ENDPOINTS:
        raise ValueError(f"endpoint {code!r} is not declared in ketaoutcomes.endpoints; declare it there first")

    def register(fn: Derivation) -> Derivation:
        if code in DERIVATIONS:
            raise ValueError(f"endpoint {code} has two derivations: {DERIVATIONS[code].__module__} and {fn.__module__}")
        DERIVATIONS[code] = fn
        return fn

    return register


def days(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    """Calendar days between the dates of two timestamps (ADaM: AVAL = ADT - STARTDT)."""
    return (later.dt.date() - earlier.dt.date()).dt.total_days().cast(pl.Float64)


def first_event(
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
    r = ratings.join(origin, on="USUBJID", how="inner")
    beyond = pl.DataFrame(schema={"USUBJID": pl.String, "_beyond": pl.Boolean})
    if tar_days is not None:
        inside = pl.col("assessed_at") <= pl.col("STARTDT") + pl.duration(days=tar_days)
        beyond = r.filter(~inside).group_by("USUBJID").agg(pl.lit(True).alias("_beyond"))
        r = r.filter(inside)
    # the earliest qualifying rating and the latest rating of each patient, by their times (a patient's
    # ratings of one instrument have distinct times: the staged key), without sorting every rating
    first_ev = r.filter(qualifies).group_by("USUBJID").agg(
        pl.col("assessed_at").min().alias("_ev"),
        pl.col("total_score").get(pl.col("assessed_at").arg_min()).alias("_evscore"))
    last = r.group_by("USUBJID").agg(pl.col("assessed_at").max().alias("_last"))
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
        days(pl.col("ADT"), pl.col("STARTDT")).alias("AVAL"),
        pl.lit("DAYS").alias("AVALU"),
        pl.when(pl.col("CNSR") == 0).then(pl.lit(evntdesc)).alias("EVNTDESC"),
        pl.col("CNSR").replace_strict(CNSR, return_dtype=pl.String).alias("CNSDTDSC"),
        pl.col("_evscore").alias("EVSCORE"),
    )


def followup_ratings(pop: pl.DataFrame, scores: pl.DataFrame, instrument: str) -> pl.DataFrame:
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
    v = (followup_ratings(pop, scores, instrument)
         .select("USUBJID", days(pl.col("assessed_at"), pl.col("STARTDT")).alias("ADY"))
         .sort("USUBJID", "ADY"))
    # the distinct (USUBJID, ADY) pairs, in order: once sorted, a pair repeats on adjacent rows only, so
    # comparing each row with the one before is unique() without hashing ten million rows at scale
    return v.filter(pl.col("USUBJID").ne_missing(pl.col("USUBJID").shift(1))
                    | pl.col("ADY").ne_missing(pl.col("ADY").shift(1)))


def instrument_pct(reduction: float) -> str:
    return f">= {reduction * 100:g}%"
