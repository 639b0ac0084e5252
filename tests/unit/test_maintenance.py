"""Counting-process rows of the relapse endpoint with maintenance as a time-varying
exposure, checked by hand against the conventions in derive/maintenance.py:
a session on day d covers (d, d + W]; covers merge; a session on or before the response
day covers from day 0; an event on a session day counts as unexposed."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ketaoutcomes.derive.maintenance import maintenance_sessions, relapse_counting_process

R0 = dt.datetime(2024, 5, 1, 10, 0)  # response time of every hand-built responder


def relapse(rows: list[tuple[str, float, int]]) -> pl.DataFrame:
    return pl.DataFrame({
        "USUBJID": [r[0] for r in rows], "COURSEID": [f"C{r[0]}" for r in rows], "ARM": ["iv"] * len(rows),
        "STARTDT": [R0] * len(rows), "AVAL": [float(r[1]) for r in rows], "CNSR": [r[2] for r in rows],
    })


def sessions(days: dict[str, list[int]], phase: str = "maintenance") -> pl.DataFrame:
    rows = [(f"C{p}", R0 + dt.timedelta(days=d, hours=3), phase) for p, ds in days.items() for d in ds]
    return pl.DataFrame(rows, schema=["course_id", "session_ts", "phase"], orient="row")


def intervals(out: pl.DataFrame, pid: str) -> list[tuple[float, float, int, int]]:
    return [(a, b, m, e) for a, b, m, e in out.filter(pl.col("USUBJID") == pid)
            .select("TSTART", "TSTOP", "MAINT", "EVENT").iter_rows()]


def test_sessions_switch_exposure_on_for_w_days_and_merge():
    out, notes = relapse_counting_process(
        relapse([("P1", 60, 0), ("P5", 70, 1)]), sessions({"P1": [10, 24], "P5": [5, 50]}), exposure_days=35)
    # P1: covers (10, 45] and (24, 59] merge into (10, 59]; relapse on day 60 off maintenance
    assert intervals(out, "P1") == [(0, 10, 0, 0), (10, 59, 1, 0), (59, 60, 0, 1)]
    # P5: a 45-day gap (> 35) leaves two periods; censored on day 70 while exposed
    assert intervals(out, "P5") == [(0, 5, 0, 0), (5, 40, 1, 0), (40, 50, 0, 0), (50, 70, 1, 0)]
    assert notes == []


def test_session_before_response_covers_from_day_0_and_event_on_a_session_day_is_unexposed():
    out, _ = relapse_counting_process(
        relapse([("P2", 30, 1), ("P4", 20, 0)]), sessions({"P2": [-1], "P4": [20]}), exposure_days=35)
    assert intervals(out, "P2") == [(0, 30, 1, 0)]
    assert intervals(out, "P4") == [(0, 20, 0, 1)]


def test_induction_sessions_are_not_maintenance_and_no_time_at_risk_gives_no_rows():
    out, notes = relapse_counting_process(
        relapse([("P1", 40, 0), ("P3", 0, 3)]), sessions({"P1": [3, 6]}, phase="induction"), exposure_days=35)
    assert intervals(out, "P1") == [(0, 40, 0, 1)]
    assert out.filter(pl.col("USUBJID") == "P3").is_empty()
    assert notes == ["relapse model: 1 responder(s) without a rating after the response (no time at risk) "
                     "contribute no rows"]


def test_follow_up_is_conserved_and_one_event_per_relapse():
    rel = relapse([(f"P{i}", 10 + 7 * i, i % 2) for i in range(30)])
    ses = sessions({f"P{i}": list(range(i % 5, 10 + 7 * i, 9 + i % 4)) for i in range(0, 30, 2)})
    out, _ = relapse_counting_process(rel, ses, exposure_days=14)
    tot = out.group_by("USUBJID").agg((pl.col("TSTOP") - pl.col("TSTART")).sum().alias("t"),
                                      pl.col("EVENT").sum().alias("e"))
    merged = rel.join(tot, on="USUBJID")
    assert (merged["t"] == merged["AVAL"]).all()
    assert (merged["e"] == (merged["CNSR"] == 0).cast(pl.Int64)).all()
    assert (out["TSTART"] < out["TSTOP"]).all()


def test_exposure_days_must_be_positive():
    with pytest.raises(ValueError, match="exposure_days must be at least 1"):
        relapse_counting_process(relapse([("P1", 5, 0)]), sessions({}), exposure_days=0)


def test_the_maintenance_sessions_alone_give_the_same_rows_as_every_session():
    """What the relapse unit is handed (maintenance_sessions: the maintenance rows' course, time and
    phase) gives the same counting-process rows and notes as every session with every column."""
    every = pl.concat([
        sessions({"P1": [10, 24], "P5": [5, 50], "P2": [-1]}),
        sessions({"P1": [3, 6], "P5": [1]}, phase="induction"),
    ]).with_columns(pl.lit(30.0).alias("dose_mg"), pl.int_range(pl.len()).cast(pl.String).alias("session_id"))
    kept = maintenance_sessions(every)
    assert kept.columns == ["course_id", "session_ts", "phase"] and kept.height == 5
    rel = relapse([("P1", 60, 0), ("P5", 70, 1), ("P2", 30, 1)])
    full, notes = relapse_counting_process(rel, every, exposure_days=35)
    assert full.height > 3
    got, got_notes = relapse_counting_process(rel, kept, exposure_days=35)
    assert got.equals(full) and got_notes == notes
