"""Snapshot publishing: readers never block writers, writers never block readers, failures publish nothing."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pytest

from ketaoutcomes.warehouse import read_connection, write_session


def test_open_reader_does_not_block_a_writer_and_keeps_its_snapshot(tmp_path):
    db = tmp_path / "w.duckdb"
    with write_session(db) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    reader = read_connection(db)  # an analyst's open session
    with write_session(db) as con:  # a scheduled run writes meanwhile
        con.execute("INSERT INTO t VALUES (2)")
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # still the old snapshot
    fresh = read_connection(db)
    assert fresh.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    reader.close()
    fresh.close()


def test_reader_in_another_process_can_read_while_a_write_is_under_way(tmp_path):
    db = tmp_path / "w.duckdb"
    with write_session(db) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    with write_session(db) as con:
        con.execute("INSERT INTO t VALUES (2)")
        # a separate process (as DuckDB's own file locks are per process) reads now
        code = f"import duckdb; print(duckdb.connect({str(db)!r}, read_only=True).execute('SELECT count(*) FROM t').fetchone()[0])"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "1"


def test_failed_write_publishes_nothing_and_leaves_no_staging(tmp_path):
    db = tmp_path / "w.duckdb"
    with write_session(db) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    before = db.read_bytes()
    with pytest.raises(RuntimeError):
        with write_session(db) as con:
            con.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("boom")
    assert db.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_read_only_connection_refuses_writes(tmp_path):
    db = tmp_path / "w.duckdb"
    with write_session(db) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    con = read_connection(db)
    with pytest.raises(duckdb.Error):
        con.execute("DROP TABLE t")
    con.close()


def test_published_file_keeps_readable_permissions(tmp_path):
    """Staging files are private (mkstemp); the published snapshot must be readable as umask allows."""
    import os
    import stat

    db = tmp_path / "w.duckdb"
    old = os.umask(0o022)
    try:
        for _ in range(2):  # first creation, then a copy-and-publish
            with write_session(db) as con:
                con.execute("CREATE OR REPLACE TABLE t AS SELECT 1 AS x")
            assert stat.S_IMODE(db.stat().st_mode) == 0o644
        db.chmod(0o640)  # an owner's choice survives later writes
        with write_session(db) as con:
            con.execute("INSERT INTO t VALUES (2)")
        assert stat.S_IMODE(db.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_append_adds_columns_a_newer_version_writes(tmp_path):
    import polars as pl

    from ketaoutcomes.warehouse import append_frame, fetch

    db = tmp_path / "w.duckdb"
    with write_session(db) as con:
        append_frame(con, "results_x", pl.DataFrame({"run_id": ["a"], "hr": [1.5]}))
        append_frame(con, "results_x", pl.DataFrame({"run_id": ["b"], "hr": [2.0], "diagnostics": ["pass"]}))
        out = fetch(con, "SELECT * FROM results_x ORDER BY run_id")
    assert out.to_dicts() == [{"run_id": "a", "hr": 1.5, "diagnostics": None},
                              {"run_id": "b", "hr": 2.0, "diagnostics": "pass"}]


def test_fetch_binds_parameters_as_duckdb_would_without_importing_pandas(tmp_path):
    """fetch and fetch_rows bind str/int/bool/None (and lists of them) as a prepared statement's
    literals: the same rows as DuckDB's own binding, quotes and all, and no pandas import (DuckDB's
    Python binding imports it: 0.5-1 s that `report` with nothing changed should not pay); fetch_rows
    needs no pyarrow either."""
    code = """
import sys, duckdb
from ketaoutcomes.warehouse import fetch, fetch_rows, table_exists
con = duckdb.connect()
con.execute("CREATE TABLE t (s VARCHAR, n BIGINT, b BOOLEAN)")
con.execute("INSERT INTO t VALUES ('it''s', 1, true), ('a?b', 2, false), (NULL, 3, NULL), ('x', NULL, true)")
cases = [("SELECT n FROM t WHERE s = ? ORDER BY n", ["it's"]),
         ("SELECT n FROM t WHERE s = ? OR n = ? ORDER BY n", ["a?b", 3]),
         ("SELECT s FROM t WHERE b = ? AND ? IS NULL ORDER BY s", [True, None]),
         ("SELECT n FROM t WHERE list_contains(?, s) ORDER BY n", [["x", "it's", "nope"]]),
         ("SELECT count(*) AS c FROM t WHERE s = ?", ["'); DROP TABLE t; --"])]
rows = [fetch_rows(con, sql, params) for sql, params in cases]
print("PYARROW", "pyarrow" in sys.modules)
got = [fetch(con, sql, params).to_dicts() for sql, params in cases]
assert rows == got, (rows, got)
assert table_exists(con, "t") and not table_exists(con, "it's")
print("PANDAS", "pandas" in sys.modules)
want = [con.execute(sql, params).pl().to_dicts() for sql, params in cases]
assert got == want, (got, want)
assert got[0] == [{"n": 1}] and got[3] == [{"n": 1}, {"n": None}] and got[4] == [{"c": 0}]
print("OK")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PYARROW", "False", "PANDAS", "False", "OK"]


def test_fetch_owned_gives_fetchs_frame_in_one_chunk_of_its_own_in_batches_or_empty():
    """Checked against fetch (DuckDB's .pl()) on the same query: the same frame, values, types, nulls
    and order, read in several batches, one batch, or none; and one chunk (copied out of the batches)."""
    from ketaoutcomes.warehouse import fetch, fetch_owned

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT i AS n, 'p' || (i % 7) AS s, CASE WHEN i % 5 = 0 THEN NULL ELSE i / 3 END AS x, "
                "TIMESTAMP '2026-01-01' + to_minutes(i) AS ts, i % 2 = 0 AS b, DATE '2026-01-01' + (i % 30)::INT AS d "
                "FROM range(2500) r(i)")
    for sql, params in [("SELECT * FROM t", None), ("SELECT * FROM t WHERE s = ?", ["p3"]),
                        ("SELECT * FROM t WHERE s = ?", ["nobody"])]:
        want = fetch(con, sql, params)
        for rows in (1000, 100_000):
            got = fetch_owned(con, sql, params, batch_rows=rows)
            assert got.schema == want.schema and got.equals(want) and got.n_chunks() == 1
    assert fetch_owned(con, "SELECT * FROM t WHERE s = ?", ["nobody"]).is_empty()


def test_frames_written_in_arrow_batches_keep_every_row_and_its_order(tmp_path):
    """append_frame, replace_table and write_table hand DuckDB a frame in batches of DUCKDB_ROW_GROUP (so
    that it writes on every thread): checked against the frame itself, for a frame of several batches
    (one chunk and many), into a new table and appended to one that holds rows, read back in the
    table's stored order (no ORDER BY)."""
    import numpy as np
    import polars as pl

    from ketaoutcomes.table_contract import TableContract, col
    from ketaoutcomes.warehouse import DUCKDB_ROW_GROUP, append_frame, fetch, registered, replace_table, write_table

    rng = np.random.default_rng(7)
    n = 2 * DUCKDB_ROW_GROUP + 4321

    def frame(run: str) -> pl.DataFrame:
        x = rng.normal(size=n)
        return pl.DataFrame({"run_id": run, "k": rng.permutation(n).astype(np.int64), "x": x,
                             "s": pl.Series([None if v < -2 else f"v{v:.3f}" for v in x], dtype=pl.String)})

    first, b = frame("a"), frame("b")
    second = pl.concat([b[: n // 2], b[n // 2:]], rechunk=False)
    assert second.n_chunks() > 1
    contract = TableContract("results_t", "rows", (col("run_id", "VARCHAR", False, "run"), col("k", "BIGINT", False, "k"),
                                                    col("x", "DOUBLE", True, "x"), col("s", "VARCHAR", True, "s")),
                             key=("run_id", "k"))
    with write_session(tmp_path / "w.duckdb") as con:
        for f in (first, second):
            append_frame(con, "appended", f)
            assert write_table(con, contract, f) == n
        replace_table(con, "replaced", second)
        con.execute("CHECKPOINT")
        both = pl.concat([first, second])
        assert fetch(con, "SELECT * FROM appended").equals(both)
        assert fetch(con, "SELECT run_id, k, x, s FROM results_t").equals(both)
        assert fetch(con, "SELECT * FROM replaced").equals(second)
        with pytest.raises(duckdb.Error), registered(con, "_gone", first):
            con.execute("SELECT nothing FROM _gone")
        with pytest.raises(duckdb.CatalogException):
            con.execute("SELECT * FROM _gone")
