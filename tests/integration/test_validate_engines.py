"""The validate step (GX metrics computed in DuckDB) stores exactly the rows GX's own pandas
engine gives on the same tables: same verdict, counts, percentages, example row numbers,
errors and details, rule for rule.

A small simulated cohort is ingested into a warehouse and validated by ``validate_step``; the
reference is ``validate_tables(..., engine="gx-pandas")`` on the staged tables fetched as
frames (how every validation ran before). Then the staged tables are corrupted in place, one
kind of error per rule family, with more than five failing rows where the order of the
example rows matters, NaN and nulls where missing-value semantics matter, and a duplicated
course_id with another arm (its first row decides the sessions' arm), and compared again.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from ketaoutcomes.contract import TABLE_ORDER
from ketaoutcomes.ingest.load import load_registries_from_warehouse
from ketaoutcomes.pipeline import ingest_step, simulate_step, validate_step
from ketaoutcomes.settings import SimulationSettings
from ketaoutcomes.validate import RESULT_SCHEMA, ValidationFailed, metrics, runner, validate_tables, validate_warehouse
from tests.conftest import query_db

SMALL = SimulationSettings(n_patients=300, seed=5)

# Each statement breaks rules of one family; several hit more than five rows.
CORRUPT = [
    # patients: a null required value, an implausible age (warning), a duplicated patient
    "UPDATE stg_patients SET site = NULL WHERE _row_number = 3",
    "UPDATE stg_patients SET age_at_index = 95 WHERE _row_number IN (2, 40)",
    "INSERT INTO stg_patients SELECT * FROM stg_patients WHERE _row_number = 7",
    # courses: an unknown arm, end before start, a course_id delivered twice with another arm
    "UPDATE stg_courses SET arm = 'tms' WHERE _row_number = 5",
    "UPDATE stg_courses SET end_date = start_date - 3 WHERE _row_number IN (6, 9)",
    "INSERT INTO stg_courses SELECT * REPLACE ('ketamine_oral' AS arm, 1000000 AS _row_number) FROM stg_courses "
    "WHERE course_id = (SELECT min(course_id) FROM stg_sessions)",
    # sessions: 12 doses far out of range, NaN doses, dates outside the course, an orphan,
    # a duplicated session id
    "UPDATE stg_sessions SET dose_mg = 5000 WHERE _row_number % 97 = 1 AND _row_number < 1200",
    "UPDATE stg_sessions SET dose_mg_per_kg = 'NaN'::DOUBLE, dissociation_score = 'NaN'::DOUBLE "
    "WHERE _row_number % 50 = 3",
    "UPDATE stg_sessions SET session_ts = session_ts - INTERVAL 400 DAY WHERE _row_number IN (11, 12)",
    "UPDATE stg_sessions SET session_ts = session_ts + INTERVAL 900 DAY WHERE _row_number = 13",
    "UPDATE stg_sessions SET course_id = 'C-ORPHAN-1' WHERE _row_number = 14",
    "UPDATE stg_sessions SET session_id = (SELECT session_id FROM stg_sessions WHERE _row_number = 15) "
    "WHERE _row_number = 16",
    "UPDATE stg_sessions SET sbp_peak = 300 WHERE _row_number BETWEEN 20 AND 31",
    # adverse events: an orphan, a value outside the allowed set
    "UPDATE stg_adverse_events SET session_id = 'S-ORPHAN-1' WHERE _row_number = 2",
    "UPDATE stg_adverse_events SET severity = 'fatal' WHERE _row_number = 3",
    # mood scores: out of range per instrument (many rows), NaN scores, a null id, an orphan,
    # a duplicated compound key
    "UPDATE stg_mood_scores SET total_score = total_score + 61 WHERE instrument = 'MADRS' AND _row_number % 9 = 0",
    "UPDATE stg_mood_scores SET si_item_score = 9 WHERE _row_number % 13 = 0",
    "UPDATE stg_mood_scores SET total_score = 'NaN'::DOUBLE WHERE _row_number IN (4, 5)",
    "UPDATE stg_mood_scores SET patient_id = NULL WHERE _row_number = 6",
    "UPDATE stg_mood_scores SET patient_id = 'P-ORPHAN-1' WHERE _row_number = 8",
    "INSERT INTO stg_mood_scores SELECT * REPLACE (_row_number + 1000000 AS _row_number) FROM stg_mood_scores "
    "WHERE _row_number IN (10, 11)",
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engines")
    simulate_step(SMALL, root / "export")
    db = root / "w.duckdb"
    ingest_step(db, root / "export")
    return db


def _reference(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """GX's own pandas engine on the staged tables, fetched as frames."""
    frames = {t: con.execute(f"SELECT * FROM stg_{t}").pl() for t in TABLE_ORDER}
    return validate_tables(frames, load_registries_from_warehouse(con), engine="gx-pandas").results


def _assert_same_rows(new: pl.DataFrame, ref: pl.DataFrame) -> None:
    assert new.columns == list(RESULT_SCHEMA) and ref.columns == list(RESULT_SCHEMA)
    assert new["rule_id"].to_list() == ref["rule_id"].to_list()
    for a, b in zip(new.iter_rows(named=True), ref.iter_rows(named=True)):
        assert a == b, a["rule_id"]


def test_stored_results_equal_the_pandas_engine_on_the_cohort(warehouse):
    validate_step(warehouse)
    stored = query_db(warehouse, "SELECT * EXCLUDE (run_id, fingerprint) FROM validation_results")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        ref = _reference(con)
    finally:
        con.close()
    assert ref["success"].all()  # the simulated cohort is clean
    _assert_same_rows(stored.cast(RESULT_SCHEMA), ref)


def _corrupt(con: duckdb.DuckDBPyConnection) -> None:
    """Apply CORRUPT to the staged tables: first made tables (a one-batch load leaves each a view of
    its raw_<table>, as a warehouse with later batches has them), then changed in place."""
    for t in TABLE_ORDER:
        if con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [f"stg_{t}"]).fetchone()[0]:
            con.execute(f"CREATE TABLE _stg AS SELECT * FROM stg_{t}")
            con.execute(f"DROP VIEW stg_{t}")
            con.execute(f"ALTER TABLE _stg RENAME TO stg_{t}")
    for sql in CORRUPT:
        con.execute(sql)


def test_every_failure_equals_the_pandas_engine_on_corrupted_tables(warehouse, tmp_path):
    db = tmp_path / "bad.duckdb"
    db.write_bytes(warehouse.read_bytes())
    con = duckdb.connect(str(db))
    _corrupt(con)
    con.close()
    with pytest.raises(ValidationFailed) as info:
        validate_step(db)
    stored = query_db(db, "SELECT * EXCLUDE (run_id, fingerprint) FROM validation_results").cast(RESULT_SCHEMA)
    con = duckdb.connect(str(db), read_only=True)
    try:
        ref = _reference(con)
        again = validate_warehouse(con, load_registries_from_warehouse(con)).results
    finally:
        con.close()
    _assert_same_rows(stored, ref)
    _assert_same_rows(again, ref)
    failed = set(ref.filter(~pl.col("success"))["rule_id"])
    # every family was hit, so the comparison covers each kind of metric
    assert {
        "patients.key_unique", "patients.site.not_null", "patients.age_at_index.plausible_range",
        "courses.key_unique", "courses.arm.registry", "courses.end_date.not_before_start",
        "sessions.key_unique", "sessions.course_id.reference", "sessions.session_ts.not_before_course_start",
        "sessions.session_ts.not_after_course_end", "sessions.sbp_peak.plausible_range",
        "adverse_events.session_id.reference", "adverse_events.severity.allowed",
        "mood_scores.key_unique", "mood_scores.patient_id.not_null", "mood_scores.patient_id.reference",
        "mood_scores.total_score.range_per_instrument.MADRS",
    } <= failed, sorted(failed)
    assert any(r.startswith("sessions.dose_mg.range_per_arm.") for r in failed)
    assert any(r.startswith("mood_scores.si_item_score.range_per_instrument.") for r in failed)
    madrs = ref.filter(pl.col("rule_id") == "mood_scores.total_score.range_per_instrument.MADRS").row(0, named=True)
    assert madrs["unexpected_count"] > 5 and len(madrs["example_row_numbers"].split(", ")) == 5
    _assert_same_rows(info.value.result.results, ref)  # what the step raised is what it stored


class _CountingConnection:
    """A DuckDB connection that records how many rows each query hands back to Python."""

    def __init__(self, con: duckdb.DuckDBPyConnection, fetched: list[tuple[int, str]] | None = None):
        self.con = con
        self.fetched: list[tuple[int, str]] = [] if fetched is None else fetched

    def cursor(self):  # the key counts run ahead on a cursor: its rows are counted too
        return _CountingConnection(self.con.cursor(), self.fetched)

    def close(self):
        self.con.close()

    def execute(self, sql: str, params: list | None = None):
        outer = self
        res = self.con.execute(sql, params or [])

        class _Result:
            def fetchall(self):
                rows = res.fetchall()
                outer.fetched.append((len(rows), sql))
                return rows

            def fetchone(self):
                row = res.fetchone()
                outer.fetched.append((1, sql))
                return row

            def pl(self):
                frame = res.pl()
                outer.fetched.append((frame.height, sql))
                return frame

        return _Result()


def test_no_table_is_fetched_only_counts_and_five_example_rows(warehouse, tmp_path):
    db = tmp_path / "bad.duckdb"
    db.write_bytes(warehouse.read_bytes())
    con = duckdb.connect(str(db))
    _corrupt(con)
    counting = _CountingConnection(con)
    result = validate_warehouse(counting, load_registries_from_warehouse(con))
    # the values of the row conditions' columns in the data, NULL included
    groups = max(con.execute("SELECT count(DISTINCT arm) + 1 FROM stg_courses").fetchone()[0],
                 con.execute("SELECT count(DISTINCT instrument) + 1 FROM stg_mood_scores").fetchone()[0])
    con.close()
    assert not result.passed and counting.fetched
    # a count row per table and value of the row conditions' column (an arm, an instrument; and
    # NULL), a row per uniqueness rule, five example rows per failed rule at most, and an empty
    # row set for each table's column types
    counts = [(n, sql) for n, sql in counting.fetched if " GROUP BY " in sql and " HAVING " not in sql]
    assert counts and max(n for n, _ in counts) <= groups, counts
    assert max(n for n, sql in counting.fetched if (n, sql) not in counts) <= 5, max(counting.fetched)
    n_failed = result.failures.height
    t = len(TABLE_ORDER)  # every import table, the optional clinical_events included (empty here)
    # table lookups and schemas; counts (and the exact counts of ranges their extremes do not show
    # unbroken); keys (a compound key's hash check and exact count); examples
    assert len(counting.fetched) <= t * 2 + 2 * t + t + 1 + n_failed


def test_grouped_counts_equal_each_count_in_full_on_corrupted_tables(warehouse, tmp_path, monkeypatch):
    """Each count read from the one grouped query (a count under an arm or instrument read in its
    group; a range from its column's minimum and maximum, else counted exactly) equals the count's
    own SQL run alone over the table, on tables broken in every family."""
    db = tmp_path / "bad.duckdb"
    db.write_bytes(warehouse.read_bytes())
    con = duckdb.connect(str(db))
    _corrupt(con)
    checked: list[tuple[str, str, int]] = []
    run_counts = metrics._run_counts

    def both(query, t, counts, values, errors):
        run_counts(query, t, counts, values, errors)
        assert not errors, errors
        for mid, c in counts.items():
            alone = con.execute(f"SELECT {c.full} FROM ({t.domain(c.derived)}) d").fetchone()[0]
            assert values[mid] == alone, (t.table, c.full)
            checked.append((t.table, c.full, alone))

    monkeypatch.setattr(metrics, "_run_counts", both)
    validate_warehouse(con, load_registries_from_warehouse(con))
    con.close()
    # the kinds of count that the grouping changes were all there, and some were not 0
    assert any("_ko_arm" in full and n for _, full, n in checked)  # a count under an arm
    assert any("instrument" in full and n for _, full, n in checked)  # under an instrument
    assert any("NOT (d.\"dose_mg\" >=" in full and n for _, full, n in checked)  # a broken range, exactly
    assert any("NOT (d.\"total_score\" >=" in full and not n for _, full, n in checked)  # a range kept
    assert {t for t, _, _ in checked} >= {"patients", "courses", "sessions", "adverse_events", "mood_scores"}


def test_key_queries_predict_every_key_count_evaluate_table_asks_for(warehouse, monkeypatch):
    """The uniqueness queries started before Great Expectations is imported are the ones its
    expectations then ask for: none is run for nothing, none is run twice."""
    made: list[metrics.Prefetch] = []

    class Spy(metrics.Prefetch):
        def __init__(self, con, queries):
            self.predicted = list(queries)
            super().__init__(con, self.predicted)
            made.append(self)

    monkeypatch.setattr(runner, "Prefetch", Spy)
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
        result = validate_warehouse(con, load_registries_from_warehouse(con))
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == threads  # given back
    finally:
        con.close()
    (spy,) = made
    key_rules = result.results.filter(pl.col("rule_id").str.ends_with(".key_unique") & pl.col("error").is_null())
    assert len(spy.predicted) == key_rules.height >= len(TABLE_ORDER) - 1
    assert spy.unused == set()


def test_prefetch_answers_its_queries_runs_others_and_gives_threads_back(tmp_path):
    con = duckdb.connect(str(tmp_path / "p.duckdb"))
    con.execute("SET threads = 2")
    con.execute("CREATE TABLE t AS SELECT range AS x FROM range(10)")
    with metrics.Prefetch(con, ["SELECT count(*) FROM t", "SELECT * FROM missing_table"]) as prefetch:
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 1  # one core for the import
        assert prefetch.fetch("SELECT count(*) FROM t") == [(10,)]
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 2
        with pytest.raises(duckdb.CatalogException, match="missing_table"):
            prefetch.fetch("SELECT * FROM missing_table")  # its own error, when asked for
        assert prefetch.fetch("SELECT max(x) FROM t") == [(9,)]  # not prefetched: run on con
        assert prefetch.unused == set()
    with metrics.Prefetch(con, ["SELECT 1"]):
        pass  # left before any fetch: the threads are given back all the same
    assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 2
    con.close()


def test_equal_key_hashes_are_counted_exactly(warehouse, monkeypatch):
    """A compound key's hash check that finds equal hashes (as a collision would, on keys that
    differ) is not the count: the exact GROUP BY is, and here it finds no duplicate."""
    monkeypatch.setattr(metrics._Table, "unique_check_sql", lambda self, spec: "SELECT 1")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        result = validate_warehouse(con, load_registries_from_warehouse(con), tables=["mood_scores"])
    finally:
        con.close()
    row = result.results.filter(pl.col("rule_id") == "mood_scores.key_unique").row(0, named=True)
    assert row["success"] and row["unexpected_count"] == 0 and row["error"] is None
