"""meta_steps does not grow without bound (issue 9, part 6, point 7): a run identical to an
earlier one (a nightly ingest of files already loaded, a re-validation of unchanged data) counts
itself on that row instead of adding one; a run that differs still gets its own row."""

from __future__ import annotations

import duckdb

from ketaoutcomes.pipeline import ingest_step, validate_step
from tests.conftest import TINY, query_db, write_export


def steps(db):
    return query_db(db, "SELECT step, status, runs, seq, started_at, first_started_at, details FROM meta_steps "
                        "ORDER BY seq")


def test_twenty_no_op_ingests_leave_meta_steps_the_same_size(tmp_path, tiny_export):
    db = tmp_path / "w.duckdb"
    ingest_step(db, tiny_export)
    first = ingest_step(db, tiny_export)  # the first no-op: a row saying every file was skipped
    assert not first.ran
    size = query_db(db, "SELECT count(*) n FROM meta_steps")["n"][0]
    assert size == 2
    for _ in range(20):
        assert not ingest_step(db, tiny_export).ran
    assert query_db(db, "SELECT count(*) n FROM meta_steps")["n"][0] == size
    rows = steps(db)
    no_op = rows.filter(rows["details"].str.contains('"skipped": true'))
    assert no_op["runs"].to_list() == [21]
    assert no_op["first_started_at"][0] <= no_op["started_at"][0]
    assert no_op["seq"][0] == rows["seq"].max()  # it is the latest step run


def test_a_revalidation_of_unchanged_data_counts_on_its_row(tmp_path, tiny_export):
    db = tmp_path / "w.duckdb"
    ingest_step(db, tiny_export)
    for _ in range(3):
        validate_step(db)  # forced: runs the suites again, on the same data and code
    assert query_db(db, "SELECT count(*) n FROM meta_steps")["n"][0] == 2
    rows = steps(db)
    assert rows["step"].to_list() == ["ingest", "validate"] and rows["runs"].to_list() == [1, 3]


def test_a_run_that_differs_gets_its_own_row(tmp_path, tiny_export):
    db = tmp_path / "w.duckdb"
    ingest_step(db, tiny_export)
    validate_step(db)
    later = dict(TINY)
    later["mood_scores.csv"] = TINY["mood_scores.csv"].replace("P3,2024-03-06 10:00,MADRS,30", "P3,2024-03-06 10:00,MADRS,28")
    ingest_step(db, write_export(tmp_path / "later", {"mood_scores.csv": later["mood_scores.csv"]}))
    validate_step(db)
    rows = steps(db)
    assert rows["step"].to_list() == ["ingest", "validate", "ingest", "validate"]
    assert rows["runs"].to_list() == [1, 1, 1, 1] and rows["seq"].to_list() == [1, 2, 3, 4]


def test_a_warehouse_written_before_the_counter_gets_its_columns(tmp_path, tiny_export):
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE meta_steps (step VARCHAR NOT NULL, run_id VARCHAR NOT NULL, fingerprint VARCHAR NOT "
                "NULL, settings_id VARCHAR, status VARCHAR NOT NULL, code_version VARCHAR NOT NULL, started_at "
                "TIMESTAMP NOT NULL, seconds DOUBLE NOT NULL, details VARCHAR)")
    con.execute("INSERT INTO meta_steps VALUES ('ingest', 'r', 'f', NULL, 'ok', 'old', TIMESTAMP '2026-01-01', 1, '{}')")
    con.close()
    ingest_step(db, tiny_export)
    rows = steps(db)
    assert rows["runs"].to_list() == [1, 1] and rows["seq"].to_list() == [1, None]  # the old row has no order
