"""Data-quality summary of a load (OHDSI DQD categories): counts, thresholds, and a check
that cannot run is an error, never a pass."""

from __future__ import annotations

import polars as pl

from ketaoutcomes.ingest import rules
from ketaoutcomes.ingest.rules import dq_checks, empty_problems


def frames():
    text = pl.DataFrame({"_row_number": [1, 2, 3, 4], "patient_id": ["P1", "P2", "P3", "P4"],
                         "site": ["A"] * 4, "sex": ["F", "M", "F", "F"], "age_at_index": ["40", "50", "x", "60"],
                         "prior_failed_trials": ["1", "2", "3", "4"], "diagnosis": ["MDD"] * 4,
                         "weight_kg": ["70", "400", None, "65"]})
    typed = text.with_columns(pl.col("age_at_index").cast(pl.Int32, strict=False),
                              pl.col("prior_failed_trials").cast(pl.Int32),
                              pl.col("weight_kg").cast(pl.Float64))
    problems = pl.DataFrame({"_row_number": [3], "column_name": ["age_at_index"], "rule": ["type"],
                             "reason": ["age_at_index is not a whole number"]}, schema=empty_problems().schema)
    return text, typed, problems


def test_counts_thresholds_and_categories():
    text, typed, problems = frames()
    dq = dq_checks("patients", rows_read=4, text=text, typed=typed, problems=problems)
    row = dq.filter(pl.col("check_id") == "patients.age_at_index.type").row(0, named=True)
    assert (row["category"], row["rows_tested"], row["rows_failing"], row["status"]) == ("conformance", 4, 1, "fail")
    w = dq.filter(pl.col("check_id") == "patients.weight_kg.range").row(0, named=True)
    # one of three recorded weights outside 30-300 kg: 33% > the 1% threshold
    assert (w["category"], w["rows_tested"], w["rows_failing"], w["threshold_pct"], w["status"]) == (
        "plausibility", 3, 1, 1.0, "fail")
    ok = dq.filter(pl.col("check_id") == "patients.sex.not_allowed").row(0, named=True)
    assert (ok["rows_failing"], ok["status"]) == (0, "pass")
    assert set(dq["category"]) == {"conformance", "completeness", "plausibility"}


def test_a_check_that_cannot_run_is_an_error_not_a_pass(monkeypatch):
    def boom(*args):
        raise RuntimeError("range data unavailable")

    monkeypatch.setattr(rules, "_range_checks", boom)
    text, typed, problems = frames()
    dq = dq_checks("patients", rows_read=4, text=text, typed=typed, problems=problems)
    err = dq.filter(pl.col("status") == "error")
    assert err.height == 1 and "RuntimeError: range data unavailable" in err["error"][0]
    assert not dq.filter(pl.col("check_id").str.ends_with(".range")).height  # nothing passed in its place
