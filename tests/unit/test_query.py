"""`query` is read-only for real: one allowed statement, on a connection that reaches nothing but
the warehouse's tables, and a --csv that never lands on the warehouse's own files.

Every route below once exited 0 and wrote or read what it should not (issue 9): each now exits
non-zero with a one-line error, and the warehouse's bytes and the folders around it are unchanged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.query import QueryRefused, query_connection, write_query_csv
from ketaoutcomes.warehouse import write_session
from tests.conftest import write_export

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One warehouse made by `ingest` from the tiny export, copied afresh for each test."""
    root = tmp_path_factory.mktemp("built")
    db = root / "ketaoutcomes.duckdb"
    res = runner.invoke(app, ["ingest", str(write_export(root / "export")), "--db", str(db)])
    assert res.exit_code == 0, res.output
    return db


@pytest.fixture
def wh(built, tmp_path) -> Path:
    folder = tmp_path / "warehouse"
    folder.mkdir()
    db = folder / built.name
    shutil.copyfile(built, db)
    (folder / (db.name + ".lock")).touch()  # as a writer leaves it
    return db


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"") for p in sorted(root.rglob("*"))}


def run(db: Path, *args: str):
    return runner.invoke(app, ["query", *args, "--db", str(db)])


def assert_refused(db: Path, *args: str, says: str = "") -> str:
    """Exit non-zero, one line starting with 'error:', no traceback; nothing under tmp changed."""
    root = db.parent.parent
    before = _tree(root)
    res = run(db, *args)
    assert res.exit_code != 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert says in res.output, res.output
    assert "Traceback" not in res.output
    assert _tree(root) == before  # warehouse bytes unchanged, no file written or removed
    return res.output


# ---------------------------------------------------------------------------
# Statements: only one, and only SELECT / WITH / DESCRIBE / SHOW / SUMMARIZE / EXPLAIN of those
# ---------------------------------------------------------------------------

def test_copy_onto_the_warehouse_is_refused(wh):
    assert_refused(wh, f"COPY (SELECT 'x') TO '{wh}'", says="COPY refused")


def test_copy_to_another_file_is_refused(wh):
    out = wh.parent.parent / "out.csv"
    assert_refused(wh, f"COPY (SELECT 'x') TO '{out}'", says="COPY refused")
    assert not out.exists()


def test_export_database_is_refused(wh):
    out = wh.parent.parent / "exported"
    assert_refused(wh, f"EXPORT DATABASE '{out}'", says="EXPORT refused")
    assert not out.exists()


def test_attach_is_refused(wh):
    other = wh.parent.parent / "other.duckdb"
    assert_refused(wh, f"ATTACH '{other}' AS other", says="ATTACH refused")
    assert not other.exists()


def test_use_detach_attach_drop_in_one_call_is_refused(wh):
    sql = f"USE memory; DETACH warehouse; ATTACH '{wh}' AS w; DROP TABLE w.stg_patients"
    assert_refused(wh, sql, says="4 statements (USE; DETACH; ATTACH; DROP) refused")


@pytest.mark.parametrize("sql", [
    "SET threads = 1", "RESET threads", "USE memory", "PRAGMA version", "PRAGMA show_tables", "PRAGMA enable_profiling",
    "CREATE TABLE t AS SELECT 1", "INSERT INTO stg_patients (patient_id) VALUES ('X')", "UPDATE stg_patients SET site = 'Z'",
    "DELETE FROM stg_patients", "DROP TABLE stg_patients", "ALTER TABLE stg_patients ADD COLUMN x INT",
    "CALL pragma_version()", "CHECKPOINT", "LOAD httpfs", "INSTALL httpfs", "DETACH warehouse", "IMPORT DATABASE '/'",
    "SELECT 1; SELECT 2", "PIVOT stg_patients ON site USING count(*)", "", "  ;  ",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'", "EXPLAIN (ANALYZE) COPY (SELECT 1) TO 'x.csv'",
    "EXPLAIN ANALYZE PRAGMA version", "EXPLAIN ANALYZE WITH x AS (SELECT 1) INSERT INTO stg_patients (patient_id) SELECT 1",
])
def test_anything_but_one_read_only_statement_is_refused(wh, sql):
    out = assert_refused(wh, sql)
    assert "query runs one read-only statement: SELECT" in out  # names what is allowed


@pytest.mark.parametrize("reader", ["read_text", "read_blob", "read_csv", "sniff_csv", "glob", "replacement scan"])
def test_files_outside_the_warehouse_cannot_be_read(wh, reader):
    outside = wh.parent.parent / "secret.csv"
    outside.write_text("name,ssn\nAda,123-45-6789\n")
    # a file of its own, a system file, the warehouse file itself (a replacement scan needs a .csv name)
    for path in [outside] if reader == "replacement scan" else [outside, Path("/etc/passwd"), wh]:
        if not path.exists():
            continue
        sql = f"FROM '{path}'" if reader == "replacement scan" else f"SELECT * FROM {reader}('{path}')"
        out = assert_refused(wh, sql, says="query reads only the warehouse's tables")
        assert "123-45-6789" not in out and "root:" not in out


# ---------------------------------------------------------------------------
# The connection itself: a statement that slipped past the check still reaches nothing
# ---------------------------------------------------------------------------

def test_the_connection_refuses_files_attach_and_settings_even_without_the_check(wh, tmp_path):
    before = wh.read_bytes()
    con = query_connection(wh)
    try:
        assert con.execute("SELECT count(*) FROM stg_patients").fetchone()[0] == 3
        for sql in [f"COPY (SELECT 'x') TO '{wh}'", f"COPY (SELECT 'x') TO '{tmp_path / 'o.csv'}'",
                    f"EXPORT DATABASE '{tmp_path / 'exp'}'", f"ATTACH '{tmp_path / 'n.duckdb'}' AS n",
                    "SELECT * FROM read_text('/etc/passwd')", f"SELECT * FROM glob('{tmp_path}/*')",
                    "SET enable_external_access = true", "RESET enable_external_access", "SET lock_configuration = false",
                    "SET disabled_filesystems = ''", "SET temp_directory = '/tmp'", "INSTALL httpfs", "LOAD httpfs",
                    "DROP TABLE raw_patients", "DROP VIEW stg_patients"]:
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        # The in-place route: leave the warehouse, detach it, attach the same file read-write.
        con.execute("USE memory")
        con.execute("DETACH warehouse")
        with pytest.raises(duckdb.Error):
            con.execute(f"ATTACH '{wh}' AS w")
        with pytest.raises(duckdb.Error):
            con.execute(f"ATTACH '{wh}' AS w (READ_WRITE)")
    finally:
        con.close()
    assert wh.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouse"]


def test_a_query_runs_while_a_writer_holds_the_lock(wh):
    """The sandbox is still the snapshot reader: it takes no lock and sees the published file."""
    with write_session(wh) as con:
        con.execute("DELETE FROM raw_patients")  # (stg_patients: a view of it)
        res = run(wh, "SELECT count(*) AS n FROM stg_patients")
        assert res.exit_code == 0 and "│ 3 " in res.output, res.output
    res = run(wh, "SELECT count(*) AS n FROM stg_patients")
    assert res.exit_code == 0 and "│ 0 " in res.output, res.output


# ---------------------------------------------------------------------------
# --csv never lands on the warehouse's own files, and is written whole or not at all
# ---------------------------------------------------------------------------

def test_csv_onto_the_warehouse_is_refused(wh):
    assert_refused(wh, "SELECT 1", "--csv", str(wh), says="--csv")


def test_csv_onto_the_lock_file_is_refused(wh):
    assert_refused(wh, "SELECT 1", "--csv", str(wh.parent / (wh.name + ".lock")), says="warehouse's own file")


def test_csv_through_a_symlink_to_the_warehouse_is_refused(wh):
    link = wh.parent.parent / "result.csv"
    link.symlink_to(wh)
    assert_refused(wh, "SELECT 1", "--csv", str(link), says="warehouse's own file")
    assert link.is_symlink()


@pytest.mark.parametrize("name", ["relative", "dangling symlink to the lock", "hard link", "staging file", "wal", "via symlinked folder"])
def test_csv_onto_the_warehouse_by_any_other_path_is_refused(wh, name, monkeypatch):
    root = wh.parent.parent
    if name == "relative":
        monkeypatch.chdir(root)
        target = Path("warehouse") / ".." / "warehouse" / wh.name
    elif name == "dangling symlink to the lock":
        (wh.parent / (wh.name + ".lock")).unlink()
        target = root / "lock.csv"
        target.symlink_to(wh.parent / (wh.name + ".lock"))
    elif name == "hard link":
        target = root / "hard.csv"
        os.link(wh, target)
    elif name == "staging file":
        target = wh.parent / f".{wh.name}.staging-abc123"
    elif name == "wal":
        target = wh.parent / (wh.name + ".wal")
    else:
        (root / "alias").symlink_to(wh.parent)
        target = root / "alias" / wh.name
    assert_refused(wh, "SELECT 1", "--csv", str(target), says="warehouse's own file")


def test_csv_is_written_whole(wh):
    out = wh.parent.parent / "patients.csv"
    out.write_text("old\n")
    out.chmod(0o640)
    res = run(wh, "SELECT patient_id, site FROM stg_patients ORDER BY patient_id", "--csv", str(out))
    assert res.exit_code == 0, res.output
    assert out.read_text() == "patient_id,site\nP1,A\nP2,A\nP3,B\n"
    assert out.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode
    assert sorted(p.name for p in out.parent.iterdir()) == ["patients.csv", "warehouse"]  # no temporary file left


def test_a_failed_csv_write_leaves_no_file(wh, monkeypatch):
    import polars as pl

    def fail_half_way(self, fh, *args, **kwargs):
        fh.write(b"patient_id,site\nP1,")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_csv", fail_half_way)
    out = wh.parent.parent / "patients.csv"
    assert_refused(wh, "SELECT patient_id, site FROM stg_patients", "--csv", str(out), says="No space left on device")
    assert not out.exists()
    frame = pl.DataFrame({"a": [1]})
    with pytest.raises(OSError):
        write_query_csv(wh, frame, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["warehouse"]


def test_write_query_csv_checks_its_target_itself(wh):
    import polars as pl

    before = wh.read_bytes()
    with pytest.raises(QueryRefused):
        write_query_csv(wh, pl.DataFrame({"a": [1]}), wh)
    assert wh.read_bytes() == before


# ---------------------------------------------------------------------------
# What analysts do keeps working, with DuckDB's whole message and untruncated text
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "expect"), [
    ("SELECT arm FROM stg_courses ORDER BY arm", "esketamine_intranasal"),
    ("WITH c AS (SELECT arm FROM stg_courses) SELECT count(*) AS n_courses FROM c", "n_courses"),
    ("FROM stg_patients SELECT patient_id ORDER BY 1", "P3"),
    ("DESCRIBE stg_patients", "prior_failed_trials"),
    ("SHOW TABLES", "stg_patients"),
    ("SUMMARIZE stg_patients", "approx_unique"),
    ("EXPLAIN SELECT * FROM stg_patients", "physical_plan"),
    ("EXPLAIN ANALYZE SELECT * FROM stg_patients", "analyzed_plan"),
    ("/* the latest loads */\nSELECT table_name FROM meta_batches ORDER BY load_seq;", "mood_scores"),
])
def test_read_only_statements_work(wh, sql, expect):
    before = wh.read_bytes()
    res = run(wh, sql)
    assert res.exit_code == 0, res.output
    assert expect in res.output
    assert wh.read_bytes() == before


def test_a_misspelled_column_gets_duckdbs_whole_message(wh):
    res = run(wh, "SELECT pateint_id FROM stg_patients")
    assert res.exit_code == 1 and res.output.startswith("error: Binder Error")
    assert "Candidate bindings" in res.output and '"patient_id"' in res.output  # DuckDB's second line
    assert "Traceback" not in res.output
    res = run(wh, "SELECT * FROM stg_patient")
    assert res.exit_code == 1 and 'Did you mean "stg_patients"' in res.output


def test_long_text_is_printed_in_full_unless_asked(wh):
    sql = "SELECT repeat('abcdefghij', 30) || '<END>' AS long_text, 'x' AS other"
    res = run(wh, sql)
    assert res.exit_code == 0 and "abcdefghij" * 30 + "<END>" in res.output, res.output
    res = run(wh, sql, "--max-width", "12")
    assert res.exit_code == 0 and "<END>" not in res.output and "abcdefghijab…" in res.output
    res = run(wh, "SELECT ['one', 'two', 'three', 'four', 'five'] AS items")  # polars shows 3 items by default
    assert res.exit_code == 0 and '"five"' in res.output, res.output
