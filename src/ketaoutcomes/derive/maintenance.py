"""Relapse with maintenance as a time-varying exposure: counting-process rows (pure).

Among responders (ADTTE ``TTRELAPS``: time from the response rating to a
confirmed relapse), whether a patient is *on maintenance* changes over
follow-up: maintenance sessions (``sessions.phase == 'maintenance'``) start some
time after the response and may stop. Treating "ever had maintenance" as a
baseline covariate would count the days before the first maintenance session
as maintained time (immortal-time bias, which flatters maintenance), so the
exposure is time-varying instead:

* **Day scale.** Day ``d`` of a session is its calendar date minus the response
  date (the same calendar-day scale as AVAL).
* **Exposure.** A maintenance session on day ``d`` covers ``(d, d + W]`` with
  ``W = maintenance_exposure_days`` (default 35: the 1-4 week gaps between
  maintenance sessions plus a margin). Overlapping covers merge. A session on or
  before the response day covers from day 0. An event on the day of a session
  counts as unexposed: the session had not yet been given when the day began
  (the interval is ``(start, stop]``).
* **Rows.** Each responder's follow-up ``(0, AVAL]`` is split where the exposure
  switches on or off: ``TSTART < TSTOP``, ``MAINT`` 0/1, and ``EVENT`` 1 only on
  the last row of a patient with a relapse (CNSR 0). A responder with AVAL 0 (no
  rating after the response, CNSR 3) is at risk for no time and has no rows; the
  count is returned as a note.

This is R's ``tmerge``/``survSplit`` layout; a Cox model fitted on it with
``entry = TSTART`` (``Surv(tstart, tstop, event)``) gives the relapse hazard
ratio of being on maintenance at that moment.
"""

from __future__ import annotations

import polars as pl

from ketaoutcomes.derive.cnsr import cnsr_to_event

__all__ = ["SESSION_COLUMNS", "maintenance_sessions", "relapse_counting_process"]


#: What :func:`relapse_counting_process` reads of the sessions (see :func:`maintenance_sessions`).
SESSION_COLUMNS = ("course_id", "session_ts", "phase")


def maintenance_sessions(sessions: pl.DataFrame) -> pl.DataFrame:
    """All that :func:`relapse_counting_process` reads of ``sessions``: the maintenance sessions' course,
    time and phase, in their order (its result is the same from these rows as from all of them). What
    the relapse unit is handed: at a million patients a fraction of the ten million sessions. Without
    a ``phase`` column, the columns it reads that are there (the relapse model then names what is
    missing, as it would on every session)."""
    present = [c for c in SESSION_COLUMNS if c in sessions.columns]
    if "phase" not in present:
        return sessions.select(present)
    return sessions.filter(pl.col("phase") == "maintenance").select(present)


def relapse_counting_process(
    relapse: pl.DataFrame, sessions: pl.DataFrame, *, exposure_days: int
) -> tuple[pl.DataFrame, list[str]]:
    """Counting-process rows of the relapse endpoint with the time-varying MAINT exposure.

    Parameters
    ----------
    relapse : polars.DataFrame
        ADTTE rows of ``TTRELAPS`` (USUBJID, COURSEID, STARTDT = response time,
        AVAL, CNSR), plus any columns to carry along (covariates).
    sessions : polars.DataFrame
        The import table ``sessions`` (course_id, session_ts, phase).
    exposure_days : int
        Days a maintenance session covers after it.

    Returns
    -------
    rows : polars.DataFrame
        The ``relapse`` columns plus TSTART, TSTOP, MAINT (Int8) and EVENT (Int8),
        one row per interval, sorted by USUBJID and TSTART.
    notes : list of str
    """
    if exposure_days < 1:
        raise ValueError(f"exposure_days must be at least 1, not {exposure_days}")
    notes: list[str] = []
    subj = relapse.with_columns(cnsr_to_event(pl.col("CNSR")).cast(pl.Int8).alias("_event"))
    no_time = subj.filter(pl.col("AVAL") <= 0).height
    if no_time:
        notes.append(f"relapse model: {no_time} responder(s) without a rating after the response "
                     "(no time at risk) contribute no rows")
    subj = subj.filter(pl.col("AVAL") > 0)
    maint = (
        sessions.filter(pl.col("phase") == "maintenance")
        .select(pl.col("course_id").alias("COURSEID"), pl.col("session_ts").dt.date().alias("_sdate"))
        .join(subj.select("USUBJID", "COURSEID", "STARTDT", "AVAL"), on="COURSEID", how="inner")
        .with_columns(
            pl.max_horizontal((pl.col("_sdate") - pl.col("STARTDT").dt.date()).dt.total_days(), pl.lit(0))
            .cast(pl.Float64).alias("_d"))
        .filter(pl.col("_d") < pl.col("AVAL"))
        .select("USUBJID", "_d")
        .unique()
        .sort("USUBJID", "_d")
    )
    # merge the covers (d, d + W] into on-periods: a new period starts after a gap
    w = float(exposure_days)
    periods = (
        maint.with_columns(
            (pl.col("_d") > pl.col("_d").shift(1).over("USUBJID") + w).fill_null(True).alias("_new"))
        .with_columns(pl.col("_new").cast(pl.Int32).cum_sum().over("USUBJID").alias("_period"))
        .group_by("USUBJID", "_period")
        .agg(pl.col("_d").min().alias("_on"), (pl.col("_d").max() + w).alias("_off"))
    )
    cuts = pl.concat([
        subj.select("USUBJID", pl.lit(0.0).alias("_t")),
        subj.select("USUBJID", pl.col("AVAL").cast(pl.Float64).alias("_t")),
        periods.select("USUBJID", pl.col("_on").alias("_t")),
        periods.select("USUBJID", pl.col("_off").alias("_t")),
    ])
    spans = (
        cuts.join(subj.select("USUBJID", "AVAL"), on="USUBJID")
        .filter((pl.col("_t") >= 0) & (pl.col("_t") <= pl.col("AVAL")))
        .select("USUBJID", "_t").unique().sort("USUBJID", "_t")
        .with_columns(pl.col("_t").shift(-1).over("USUBJID").alias("TSTOP"))
        .filter(pl.col("TSTOP").is_not_null())
        .rename({"_t": "TSTART"})
        .with_columns(((pl.col("TSTART") + pl.col("TSTOP")) / 2).alias("_mid"))
    )
    on = (
        spans.join(periods, on="USUBJID", how="inner")
        .filter((pl.col("_on") < pl.col("_mid")) & (pl.col("_mid") < pl.col("_off")))
        .select("USUBJID", "TSTART").unique().with_columns(pl.lit(1, dtype=pl.Int8).alias("MAINT"))
    )
    rows = (
        spans.join(on, on=["USUBJID", "TSTART"], how="left")
        .with_columns(pl.col("MAINT").fill_null(0))
        .join(subj, on="USUBJID", how="inner")
        .with_columns(
            ((pl.col("_event") == 1) & (pl.col("TSTOP") == pl.col("AVAL"))).cast(pl.Int8).alias("EVENT"))
        .sort("USUBJID", "TSTART")
    )
    return rows.select(*relapse.columns, "TSTART", "TSTOP", "MAINT", "EVENT"), notes
