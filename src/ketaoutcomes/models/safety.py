"""Session-level safety by route: adverse-event and blood-pressure event rates per arm.

Pure functions: polars frames (the import tables ``sessions``,
``adverse_events``, ``courses``) in, a polars frame out.

Conventions (each is also commented where it is applied):

* **Unit.** :func:`session_safety` counts *sessions* (administrations or
  medication visits): ``events`` is the number of sessions with at least one
  event of the type, not the number of adverse-event rows. A session belongs to
  the arm of its course, and its cluster is the course's patient.
* **Events.**

  - ``dissociation``, ``nausea``, ``dizziness``, ``headache``, ``hypertension``:
    an adverse-event row of that ``ae_type`` (any severity), as recorded. The
    denominator is *every* session of the arm: the export cannot tell "no
    adverse event" from "not recorded", so a session without an AE row counts
    as a session without the event. ``dissociation`` (AE-based) is the primary
    dissociation outcome.
  - ``dissociation_cadss`` (secondary): CADSS total (``dissociation_score``)
    **> 4** (``cadss_cutoff``; a judgement: CADSS > 4 is the threshold for
    clinically relevant dissociation used in several ketamine studies; change
    it per study). Denominator: sessions with a CADSS score recorded.
  - ``bp_rise_40_25``: ``sbp_peak - sbp_pre >= 40`` or ``dbp_peak - dbp_pre >= 25``
    (inclusive). Denominator: sessions with all four of ``sbp_pre``,
    ``dbp_pre``, ``sbp_peak``, ``dbp_peak`` recorded.
  - ``bp_180_110``: ``sbp_peak >= 180`` or ``dbp_peak >= 110`` (inclusive).
    Denominator: the same sessions as ``bp_rise_40_25`` (pre and peak both
    recorded), so the two BP rows share one denominator.

* **Confidence intervals (per session).** Sessions of one patient are
  correlated (the same patient dissociates session after session), so the
  binomial variance ``p(1-p)/n`` is too small. The interval is a **Wilson
  interval on the effective sample size** ``n_eff = n / deff`` (Kish; Korn &
  Graubard 1998 for survey proportions), with the design effect
  ``deff = var_cluster / var_binomial``. ``var_cluster`` is the cluster-robust
  (sandwich, CR1) variance of the ratio estimator ``p = sum(y_i) / sum(m_i)``
  over patients ``i`` with ``y_i`` event sessions of ``m_i``:
  ``G / (G - 1) * sum((y_i - p m_i)^2) / n^2`` — the same number as the
  cluster-robust standard error of an intercept-only regression with
  ``cov_type="cluster"`` (groups = patient) in statsmodels. Why this and not a
  Wald interval from GEE / GLM: Wilson stays inside [0, 1] and is well behaved
  for rare events, which most AE types here are, and it needs no iterative fit
  per arm and event. ``deff`` is floored at 1 (never narrower than the
  binomial interval).
  When the rate is 0 or 1 the cluster variance is 0 and ``deff`` cannot be
  estimated; the interval then uses ``n_eff`` = number of patients (the most
  conservative case: sessions of one patient perfectly correlated), which still
  gives a finite upper bound for a zero rate (``note`` says so).
* **Per patient.** :func:`per_patient_safety`: share of patients (per arm) with
  at least one event session, among patients with at least one session in the
  denominator of that event; Wilson interval (patients are independent).
* **No data.** An arm with no session in an event's denominator (e.g. BP events
  on an arm whose vitals are not recorded) gets ``sessions = 0`` and null
  ``rate``/``lower``/``upper`` with a ``note``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

__all__ = [
    "AE_EVENTS",
    "BP_EVENTS",
    "CADSS_CUTOFF",
    "EVENT_DEFINITIONS",
    "SESSION_COLUMNS",
    "per_patient_safety",
    "safety_sessions",
    "safety_tables",
    "session_events",
    "session_safety",
    "wilson_interval",
]

#: Adverse-event types reported as recorded (ae_type values).
AE_EVENTS: tuple[str, ...] = ("dissociation", "nausea", "dizziness", "headache", "hypertension")
#: Derived blood-pressure events.
BP_EVENTS: tuple[str, ...] = ("bp_rise_40_25", "bp_180_110")
#: The blood-pressure columns the BP events read.
_VITALS = ("sbp_pre", "dbp_pre", "sbp_peak", "dbp_peak")
#: What the safety tables read of the sessions.
SESSION_COLUMNS = ("session_id", "course_id", *_VITALS, "dissociation_score")
#: CADSS total above this is counted as dissociation (secondary definition).
CADSS_CUTOFF = 4.0


def safety_sessions(sessions: pl.DataFrame) -> pl.DataFrame:
    """All that the safety tables read of ``sessions`` (:data:`SESSION_COLUMNS`, those it has: a missing
    one is then named by :func:`safety_tables`, as it would be on every column): what the secondary unit
    is handed."""
    return sessions.select([c for c in SESSION_COLUMNS if c in sessions.columns])

#: What each event row means and which sessions are its denominator.
EVENT_DEFINITIONS: dict[str, str] = {
    "dissociation": "adverse event 'dissociation' recorded (primary); denominator: all sessions",
    "nausea": "adverse event 'nausea' recorded; denominator: all sessions",
    "dizziness": "adverse event 'dizziness' recorded; denominator: all sessions",
    "headache": "adverse event 'headache' recorded; denominator: all sessions",
    "hypertension": "adverse event 'hypertension' recorded; denominator: all sessions",
    "dissociation_cadss": "CADSS total > cut-off (default 4; secondary); denominator: sessions with a CADSS score",
    "bp_rise_40_25": "sbp_peak - sbp_pre >= 40 or dbp_peak - dbp_pre >= 25; denominator: sessions with pre and peak SBP and DBP",
    "bp_180_110": "sbp_peak >= 180 or dbp_peak >= 110; denominator: sessions with pre and peak SBP and DBP",
}

_OUT_SCHEMA = {
    "arm": pl.String,
    "event": pl.String,
    "sessions": pl.Int64,
    "patients": pl.Int64,
    "events": pl.Int64,
    "rate": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
    "deff": pl.Float64,
    "n_eff": pl.Float64,
    "note": pl.String,
}

_PP_SCHEMA = {
    "arm": pl.String,
    "event": pl.String,
    "patients": pl.Int64,
    "patients_with_event": pl.Int64,
    "rate": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
    "note": pl.String,
}


def wilson_interval(events: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for ``events`` of ``n`` (``n`` may be an effective, non-integer size)."""
    if n <= 0:
        return (math.nan, math.nan)
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = events / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # exact 0 / 1 at the boundary (rounding otherwise leaves 1e-17)
    if events <= 0:
        lo = 0.0
    if events >= n:
        hi = 1.0
    return lo, hi


def _require(frame: pl.DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}")


def _sessions_with_events(sessions: pl.DataFrame, adverse_events: pl.DataFrame, courses: pl.DataFrame,
                          ae_types: Sequence[str], keys: Sequence[str] = ("patient_id", "arm"),
                          lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
    """The sessions of ``courses`` with the courses' ``keys`` (their ``patient_id`` and ``arm``), and a
    column per AE type present (True where the session has an AE of that type, False or null where not);
    a LazyFrame with ``lazy``."""
    _require(sessions, "sessions", list(SESSION_COLUMNS))
    _require(adverse_events, "adverse_events", ["session_id", "ae_type"])
    _require(courses, "courses", ["course_id", "patient_id", "arm"])
    s = sessions.lazy() if lazy else sessions
    s = s.select("session_id", "course_id", *_VITALS, "dissociation_score").join(
        courses.lazy().select("course_id", *keys) if lazy else courses.select("course_id", *keys),
        on="course_id", how="inner" if keys else "semi")
    # one row per session with an AE of the types: a column per type present, True where the session has one
    ae = adverse_events.filter(pl.col("ae_type").is_in(list(ae_types)))
    found = set(ae.get_column("ae_type").unique().to_list())
    present = [t for t in ae_types if t in found]
    ae = ae.group_by("session_id").agg((pl.col("ae_type") == t).any().alias(t) for t in present)
    return s.join(ae.lazy() if lazy else ae, on="session_id", how="left")


def session_events(
    sessions: pl.DataFrame,
    adverse_events: pl.DataFrame,
    courses: pl.DataFrame,
    *,
    ae_types: Sequence[str] = AE_EVENTS,
    cadss_cutoff: float = CADSS_CUTOFF,
) -> pl.DataFrame:
    """Long frame: one row per session and event with ``arm``, ``patient_id``, ``session_id``, ``event``, ``y`` (bool).

    Only sessions that are in the event's denominator appear (e.g. BP events only
    where pre and peak SBP and DBP are all recorded). Sessions whose course is not
    in ``courses`` are dropped (ingest's foreign-key check keeps them out anyway).
    """
    s = _sessions_with_events(sessions, adverse_events, courses, ae_types)
    keys = ["arm", "patient_id", "session_id"]
    parts = []
    for t in ae_types:
        # denominator: every session (no AE row = no event, see module docstring)
        y = pl.col(t).fill_null(False) if t in s.columns else pl.lit(False)
        parts.append(s.select(*keys, pl.lit(t).alias("event"), y.alias("y")))
    cad = s.filter(pl.col("dissociation_score").is_not_null())
    parts.append(cad.select(*keys, pl.lit("dissociation_cadss").alias("event"),
                            (pl.col("dissociation_score") > cadss_cutoff).alias("y")))
    bp = s.filter(pl.all_horizontal(pl.col(c).is_not_null() for c in ("sbp_pre", "dbp_pre", "sbp_peak", "dbp_peak")))
    rise = ((pl.col("sbp_peak") - pl.col("sbp_pre")) >= 40) | ((pl.col("dbp_peak") - pl.col("dbp_pre")) >= 25)
    high = (pl.col("sbp_peak") >= 180) | (pl.col("dbp_peak") >= 110)
    parts.append(bp.select(*keys, pl.lit("bp_rise_40_25").alias("event"), rise.alias("y")))
    parts.append(bp.select(*keys, pl.lit("bp_180_110").alias("event"), high.alias("y")))
    return pl.concat(parts, how="vertical_relaxed")


def _event_order(ae_types: Sequence[str]) -> list[str]:
    return [*ae_types, "dissociation_cadss", *BP_EVENTS]


def _per_patient_counts(sessions: pl.DataFrame, adverse_events: pl.DataFrame, courses: pl.DataFrame, *,
                        ae_types: Sequence[str], cadss_cutoff: float) -> pl.DataFrame:
    """:func:`session_events` summed per patient: ``arm``, ``event``, ``patient_id``, ``m`` (the
    patient's sessions in the event's denominator, > 0) and ``yy`` (those with the event); by event,
    and sorted by arm and patient within an event (the patients' order is fixed; the long frame is not
    sorted: that sort of some 14 rows per patient took 20 s at a million patients).

    Counted in one pass over the sessions, one pair of columns per event, without the long frame
    (a row per session and event: some 14 times the sessions, gigabytes at a million patients)."""
    # counted per course first, then the courses' counts summed per patient and arm (integers: the same
    # counts): the patient's id and arm are not copied onto every session (millions at a million patients)
    s = _sessions_with_events(sessions, adverse_events, courses, ae_types, keys=(), lazy=True).drop("session_id")
    cad = pl.col("dissociation_score").is_not_null()
    bp = pl.all_horizontal(pl.col(c).is_not_null() for c in ("sbp_pre", "dbp_pre", "sbp_peak", "dbp_peak"))
    rise = ((pl.col("sbp_peak") - pl.col("sbp_pre")) >= 40) | ((pl.col("dbp_peak") - pl.col("dbp_pre")) >= 25)
    high = (pl.col("sbp_peak") >= 180) | (pl.col("dbp_peak") >= 110)
    # per event: the sessions in its denominator and those with the event, as 0/1 (None: every session)
    counted = pl.len().alias("_n")
    denominators: dict[str, pl.Expr | None] = {t: None for t in ae_types}  # no AE row = no event
    hits = {t: pl.col(t).fill_null(False) if t in s.collect_schema().names() else pl.lit(False) for t in ae_types}
    denominators |= {"dissociation_cadss": cad, BP_EVENTS[0]: bp, BP_EVENTS[1]: bp}
    hits |= {"dissociation_cadss": pl.col("dissociation_score") > cadss_cutoff, BP_EVENTS[0]: rise,
             BP_EVENTS[1]: high}
    events = _event_order(ae_types)

    def total(x: pl.Expr | None) -> pl.Expr:
        return counted if x is None else x.fill_null(False).cast(pl.UInt32).sum()

    counts = [f"{x}{i}" for x in "my" for i in range(len(events))]
    wide = s.group_by("course_id").agg(
        *(total(denominators[e]).alias(f"m{i}") for i, e in enumerate(events)),
        *(total(hits[e] if denominators[e] is None else denominators[e] & hits[e]).alias(f"y{i}")
          for i, e in enumerate(events))).collect(engine="streaming")
    wide = (wide.join(courses.select("course_id", "patient_id", "arm"), on="course_id", how="inner")
            .group_by("arm", "patient_id").agg(pl.col(counts).sum()).sort("arm", "patient_id"))
    return pl.concat([
        wide.select("arm", pl.lit(e).alias("event"), "patient_id", pl.col(f"m{i}").alias("m"),
                    pl.col(f"y{i}").alias("yy")).filter(pl.col("m") > 0)
        for i, e in enumerate(events)])


def _cluster_rate(y_i: np.ndarray, m_i: np.ndarray, alpha: float) -> dict:
    """Rate, cluster-robust Wilson interval and design effect from per-patient counts."""
    n, e, g = math.fsum(m_i), math.fsum(y_i), len(m_i)
    p = e / n
    note = None
    if 0 < e < n:
        # CR1 sandwich variance of the ratio estimator sum(y)/sum(m) (clusters = patients)
        # math.fsum: exactly rounded whatever the order of the patients (polars' group_by gives them in
        # an arbitrary order, and np.sum's pairwise sum then moved the last digit from run to run)
        var_cl = (g / (g - 1) if g > 1 else 1.0) * math.fsum((y_i - p * m_i) ** 2) / (n * n)
        var_bin = p * (1 - p) / n
        deff = max(1.0, var_cl / var_bin)
        n_eff = n / deff
    else:
        deff = n / g
        n_eff = float(g)
        note = (f"rate {'0' if e == 0 else '1'}: design effect not estimable, interval uses the number of "
                f"patients ({g}) as the effective sample size (conservative)")
    lo, hi = wilson_interval(p * n_eff, n_eff, alpha)
    return dict(rate=p, lower=lo, upper=hi, deff=deff, n_eff=n_eff, note=note)


def session_safety(
    sessions: pl.DataFrame,
    adverse_events: pl.DataFrame,
    courses: pl.DataFrame,
    *,
    alpha: float = 0.05,
    ae_types: Sequence[str] = AE_EVENTS,
    cadss_cutoff: float = CADSS_CUTOFF,
) -> pl.DataFrame:
    """Per-session event rates per arm with cluster-robust (patient) Wilson intervals.

    Returns
    -------
    DataFrame
        One row per arm and event (events in the order ``ae_types``,
        ``dissociation_cadss``, ``bp_rise_40_25``, ``bp_180_110``): ``arm``,
        ``event``, ``sessions`` (denominator), ``patients`` (clusters in the
        denominator), ``events`` (sessions with >= 1 event), ``rate``,
        ``lower``, ``upper`` (``1 - alpha`` interval), ``deff`` (design effect
        used), ``n_eff``, ``note`` (why an interval is conservative or missing).
        See the module docstring for definitions and the interval method.
    """
    _check_alpha(alpha)
    counts = _per_patient_counts(sessions, adverse_events, courses, ae_types=ae_types, cadss_cutoff=cadss_cutoff)
    return _session_table(counts, _arms(sessions, courses), alpha, ae_types)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _arms(sessions: pl.DataFrame, courses: pl.DataFrame) -> list[str]:
    """The arms of ``courses`` with sessions."""
    return sorted(courses.join(sessions.select("course_id").unique(), on="course_id", how="semi")
                  .get_column("arm").unique().to_list())


def _session_table(per_patient: pl.DataFrame, arms: list[str], alpha: float, ae_types: Sequence[str]) -> pl.DataFrame:
    """:func:`session_safety`'s rows from the counts per patient (sorted: group_by's order is not
    fixed, and the interval's sums over patients must not change with it)."""
    rows = []
    parts = per_patient.partition_by("arm", "event", as_dict=True)  # in their order, as a filter would
    for arm in arms:
        for ev in _event_order(ae_types):
            sub = parts.get((arm, ev), per_patient.clear())
            if sub.height == 0:
                rows.append(dict(arm=arm, event=ev, sessions=0, patients=0, events=0, rate=None, lower=None,
                                 upper=None, deff=None, n_eff=None,
                                 note="no session with the data this event needs: rate not estimable"))
                continue
            m_i = sub.get_column("m").to_numpy().astype(float)
            y_i = sub.get_column("yy").to_numpy().astype(float)
            r = _cluster_rate(y_i, m_i, alpha)
            rows.append(dict(arm=arm, event=ev, sessions=int(m_i.sum()), patients=sub.height,
                             events=int(y_i.sum()), **r))
    return pl.DataFrame(rows, schema=_OUT_SCHEMA)


def per_patient_safety(
    sessions: pl.DataFrame,
    adverse_events: pl.DataFrame,
    courses: pl.DataFrame,
    *,
    alpha: float = 0.05,
    ae_types: Sequence[str] = AE_EVENTS,
    cadss_cutoff: float = CADSS_CUTOFF,
) -> pl.DataFrame:
    """Share of patients per arm with at least one event session, with a Wilson interval.

    Denominator per event: patients with at least one session in that event's
    session-level denominator (a patient on two arms counts once in each).
    Columns: ``arm``, ``event``, ``patients``, ``patients_with_event``, ``rate``,
    ``lower``, ``upper``, ``note``.
    """
    _check_alpha(alpha)
    counts = _per_patient_counts(sessions, adverse_events, courses, ae_types=ae_types, cadss_cutoff=cadss_cutoff)
    return _patient_table(counts, _arms(sessions, courses), alpha, ae_types)


def _patient_table(per_patient: pl.DataFrame, arms: list[str], alpha: float, ae_types: Sequence[str]) -> pl.DataFrame:
    """:func:`per_patient_safety`'s rows from the counts per patient."""
    pp = per_patient.with_columns((pl.col("yy") > 0).alias("any"))
    parts = pp.partition_by("arm", "event", as_dict=True)
    rows = []
    for arm in arms:
        for ev in _event_order(ae_types):
            sub = parts.get((arm, ev), pp.clear())
            n = sub.height
            if n == 0:
                rows.append(dict(arm=arm, event=ev, patients=0, patients_with_event=0, rate=None, lower=None,
                                 upper=None, note="no patient with the data this event needs: rate not estimable"))
                continue
            k = int(sub.get_column("any").sum())
            lo, hi = wilson_interval(k, n, alpha)
            rows.append(dict(arm=arm, event=ev, patients=n, patients_with_event=k, rate=k / n, lower=lo, upper=hi,
                             note=None))
    return pl.DataFrame(rows, schema=_PP_SCHEMA)


def safety_tables(
    sessions: pl.DataFrame,
    adverse_events: pl.DataFrame,
    courses: pl.DataFrame,
    *,
    alpha: float = 0.05,
    ae_types: Sequence[str] = AE_EVENTS,
    cadss_cutoff: float = CADSS_CUTOFF,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`session_safety` and :func:`per_patient_safety` together, from one pass over the
    sessions (the analysis's: at a million patients a pass is millions of sessions)."""
    _check_alpha(alpha)
    counts = _per_patient_counts(sessions, adverse_events, courses, ae_types=ae_types, cadss_cutoff=cadss_cutoff)
    arms = _arms(sessions, courses)
    return _session_table(counts, arms, alpha, ae_types), _patient_table(counts, arms, alpha, ae_types)
