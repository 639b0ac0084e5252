"""The run record a report carries (ketaoutcomes.report.record) and the row comparison of `reproduce`
(ketaoutcomes.reproduce.compare_rows), on small frames built here.

Checked against numpy.nextafter (a double one unit in the last place away), signed zeros, NaN and
null, string boundaries, and pages edited by hand; the end-to-end checks on a real report are in
tests/integration/test_reproduce.py.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.report.record import (
    RECORD_OPEN,
    RecordError,
    embed_record,
    read_record,
    record_script,
    table_digest,
)
from ketaoutcomes.reproduce import NOT_COMPARED, compare_rows


def results() -> pl.DataFrame:
    return pl.DataFrame({
        "paramcd": ["TTRESP", "TTRESP", "TTREM"], "term": ["a", "b", "a"], "hr": [0.5, 1.25, 2.0],
        "n": [10, 20, 30], "note": ["x", None, "z"],
        "at": [dt.datetime(2024, 1, 1), None, dt.datetime(2024, 1, 3, 12)],
    })


def nudged(frame: pl.DataFrame, column: str, row: int) -> pl.DataFrame:
    """``frame`` with the double at (row, column) moved one ulp up."""
    values = frame[column].to_numpy().copy()
    values[row] = np.nextafter(values[row], np.inf)
    return frame.with_columns(pl.Series(column, values))


def test_the_digest_does_not_depend_on_row_or_column_order():
    f = results()
    shuffled = f[[2, 0, 1]].select(list(reversed(f.columns)))
    assert table_digest(shuffled) == table_digest(f)
    assert table_digest(f)["rows"] == 3 and set(table_digest(f)["columns"]) == set(f.columns)


def test_one_ulp_changes_the_digest_of_its_column_and_no_other():
    before, after = table_digest(results()), table_digest(nudged(results(), "hr", 1))
    assert [c for c in before["columns"] if before["columns"][c] != after["columns"][c]] == ["hr"]


@pytest.mark.parametrize(("a", "b"), [([0.0], [-0.0]), ([None], [0.0]), ([None, 1.0], [0.0, 1.0])])
def test_signed_zero_and_null_are_told_apart(a, b):
    assert table_digest(pl.DataFrame({"x": a}, schema={"x": pl.Float64})) != \
        table_digest(pl.DataFrame({"x": b}, schema={"x": pl.Float64}))


def test_the_same_nan_is_the_same_and_string_boundaries_count():
    nan = pl.DataFrame({"x": [float("nan")]})
    assert table_digest(nan) == table_digest(nan.clone())
    assert table_digest(pl.DataFrame({"s": ["ab", "c"]})) != table_digest(pl.DataFrame({"s": ["a", "bc"]}))
    assert table_digest(pl.DataFrame({"s": ["", "a"]})) != table_digest(pl.DataFrame({"s": [None, "a"]}))


PAGE = ("<!DOCTYPE html>\n<html><head><title>t</title>\n" + record_script()
        + "\n</head><body><p>HR 0.81 (0.70 to 0.93)</p></body></html>\n")
RECORD = {"record": 1, "run_id": "r1", "study": "default", "settings_id": "s1",
          "settings_json": '{"name":"default"}', "code_version": "0.1.0", "data_fingerprint": "d1",
          "warehouse": "/w.duckdb", "batches": [{"batch_id": "patients-1", "sha256": "ab", "rows": 3}],
          "results": {"results_cox": table_digest(results())}}


def test_a_record_embedded_is_read_back_whole():
    page = embed_record(PAGE, RECORD)
    got = read_record(page)
    assert {k: v for k, v in got.items() if k != "digest"} == RECORD and len(got["digest"]) == 64
    assert page.count(RECORD_OPEN) == 1 and embed_record(PAGE, RECORD) == page  # the same record, the same bytes


def test_no_value_can_close_the_record_element():
    record = {**RECORD, "study": "x</script><script>alert(1)</script><!--"}
    page = embed_record(PAGE, record)
    assert page.count("</script>") == 1 and "<script>alert" not in page
    assert read_record(page)["study"] == record["study"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p.replace("0.81", "0.80"), "was edited after it was rendered"),
    (lambda p: p.replace('"run_id":"r1"', '"run_id":"r2"'), "was edited after it was rendered"),
    (lambda p: p.replace('"rows":3', '"rows":4', 1), "was edited after it was rendered"),
    (lambda p: p[:p.index(RECORD_OPEN)] + p[p.index("</script>") + 9:], "has no run record"),
    (lambda p: p.replace('"warehouse":', '"where":'), "lacks warehouse"),
    (lambda p: p.replace('{"batches"', '["batches"', 1), "not a JSON object"),
    (lambda p: p.replace("</head>", RECORD_OPEN + "{}</script></head>"), "more than one run record"),
])
def test_an_edited_page_or_record_is_refused_in_one_line(edit, message):
    page = embed_record(PAGE, RECORD)
    edited = edit(page)
    assert edited != page
    with pytest.raises(RecordError, match=message) as info:
        read_record(edited, name="r.html")
    assert "\n" not in str(info.value) and str(info.value).startswith("r.html")


def test_rows_that_differ_by_one_ulp_are_named_by_key_and_column():
    key = ("paramcd", "term")
    assert compare_rows("results_cox", results(), results()[[2, 0, 1]], key) is None
    said = compare_rows("results_cox", results(), nudged(results(), "hr", 1), key)
    assert said == "1 of 3 rows differ (first: column hr at paramcd=TTRESP, term=b; 1 ulp apart)"
    two = nudged(nudged(nudged(results(), "hr", 1), "hr", 0), "hr", 0)  # (TTRESP, a) by 2 ulps, (TTRESP, b) by 1
    assert compare_rows("results_cox", results(), two, key) == (
        "2 of 3 rows differ (first: column hr at paramcd=TTRESP, term=a; 2 ulps apart)")


def test_rows_of_a_patient_level_table_are_named_by_position_not_by_value():
    said = compare_rows("ad_adsl", results(), nudged(results(), "hr", 0), ("paramcd", "term"))
    assert said == "1 of 3 rows differ (first: column hr at row 2 in order of paramcd, term; 1 ulp apart)"
    assert "TTRESP" not in said


def test_missing_rows_columns_and_types_are_named():
    f = results()
    assert compare_rows("results_cox", f, f[:2], ("paramcd", "term")) == (
        "1 stored row(s) missing from the new run and 0 new row(s) not in the stored run (first: paramcd=TTREM, term=a)")
    assert compare_rows("results_cox", f, f.with_columns(pl.lit(1.0).alias("se")), ()) == \
        "column(s) se only in the new run"
    assert compare_rows("results_cox", f, f.with_columns(pl.lit(None, pl.Float64).alias("se")), ()) is None
    assert compare_rows("results_cox", f, f.with_columns(pl.col("n").cast(pl.Float64)), ()) == \
        "column n is Int64 in the stored run, Float64 in the new one"
    assert compare_rows("results_cox", f, f.with_columns(pl.col("n").cast(pl.Int32)), ()) is None
    assert compare_rows("results_cox", f, f.with_columns(pl.Series("note", ["x", "y", "z"])), ()) == \
        "1 of 3 rows differ (first: column note at row 3; stored null, new a value)"  # no key: rows in canonical order
    zero = pl.DataFrame({"x": [0.0]})
    assert compare_rows("results_rmst", zero, pl.DataFrame({"x": [-0.0]})) == \
        "1 of 1 rows differ (first: column x at row 1; 0.0 and -0.0)"


def test_only_the_columns_said_not_to_be_compared_are_left_out():
    run = pl.DataFrame({"run_id": ["a"], "settings_id": ["s"], "settings_json": ["{}"], "code_version": ["1"],
                        "started_at": [dt.datetime(2024, 1, 1)], "seconds": [1.5], "notes": ["[]"]})
    other = run.with_columns(pl.lit("b").alias("run_id"), pl.lit("2").alias("code_version"),
                             pl.lit(dt.datetime(2025, 1, 1)).alias("started_at"), pl.lit(9.0).alias("seconds"))
    assert compare_rows("results_runs", run, other) is None
    assert compare_rows("results_runs", run, run.with_columns(pl.lit('["x"]').alias("notes"))) is not None
    # started_at and seconds are left out of results_runs only: elsewhere they are data
    assert compare_rows("results_km", run, other) is not None
    assert set(NOT_COMPARED) == {"run_id", "settings_id", "results_runs.started_at", "results_runs.seconds",
                                 "results_runs.code_version"}


def test_the_record_is_json_a_browser_can_read_from_the_page():
    page = embed_record(PAGE, RECORD)
    start = page.index(RECORD_OPEN) + len(RECORD_OPEN)
    assert json.loads(page[start:page.index("</script>", start)])["run_id"] == "r1"


def test_non_finite_values_are_named_by_kind_only():
    nan, one = pl.DataFrame({"x": [float("nan")]}), pl.DataFrame({"x": [1.0]})
    assert compare_rows("results_rmst", nan, nan.clone()) is None  # the same NaN is the same bits
    assert compare_rows("results_rmst", nan, one) == "1 of 1 rows differ (first: column x at row 1; stored NaN, new a finite number)"
