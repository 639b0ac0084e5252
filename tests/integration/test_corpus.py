"""The bad-input corpus (tests/corpus/): every case produces exactly the outcome its case.toml names.

A case is a folder of files laid over the clean TINY export (tests/conftest.py),
plus ``case.toml``; see tests/corpus/README.md for the format. Three outcomes:

* ``file_error``: an :class:`IngestError` naming the file, nothing written;
* ``phi``: a PHI error naming the file and the rule, never the identifier, nothing written;
* ``load``: per-file counts, the exact set of quarantine entries, checks on what was stored,
  and loading the same folder again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.ingest import IngestError, IngestSummary, ingest_export
from ketaoutcomes.warehouse import fetch, read_connection, write_session
from tests.conftest import TINY, write_export

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
WHEN = dt.datetime(2026, 1, 1)
KINDS = ("file_error", "phi", "load")
CASE_KEYS = {"description", "base", "remove", "prior", "expect"}
EXPECT_KEYS = {
    "file_error": {"kind", "file", "contains", "absent"},
    "phi": {"kind", "file", "rule", "secret"},
    "load": {"kind", "counts", "rules", "checks", "ignored_columns", "skipped", "not_in_reasons", "reasons_contain"},
}


def _cases() -> dict[str, dict]:
    return {d.name: tomllib.loads((d / "case.toml").read_text()) for d in sorted(CORPUS.iterdir())
            if (d / "case.toml").is_file()}


CASES = _cases()


def _ids(kind: str) -> list[str]:
    return [name for name, spec in CASES.items() if spec["expect"]["kind"] == kind]


# ---------------------------------------------------------------------------
# Building an export from a case, loading it, looking at the warehouse
# ---------------------------------------------------------------------------

def build_export(name: str, dest: Path) -> Path:
    """The export a case describes: TINY (unless base = "none"), minus ``remove``, plus the case's files."""
    spec, src = CASES[name], CORPUS / name
    if spec.get("base", "tiny") == "tiny":
        write_export(dest)
    else:
        dest.mkdir(parents=True)
    for fname in spec.get("remove", []):
        (dest / fname).unlink()
    for f in src.iterdir():
        if f.is_file() and f.name != "case.toml":
            shutil.copyfile(f, dest / f.name)
    return dest


def build_prior(name: str, dest: Path) -> Path:
    """A first delivery named by the case's ``prior``: a subfolder of the case laid over TINY."""
    write_export(dest)
    for f in (CORPUS / name / CASES[name]["prior"]).iterdir():
        shutil.copyfile(f, dest / f.name)
    return dest


def ingest(db: Path, folder: Path) -> IngestSummary:
    with write_session(db) as con:
        return ingest_export(con, folder, loaded_at=WHEN)


_CLEAN: dict[str, bytes] = {}


def load_prior(name: str, db: Path, tmp: Path) -> None:
    """The warehouse ``db`` as it is after the case's prior delivery (the clean TINY export if it
    names none). Loading TINY is done once and the warehouse file copied: it is the same every time."""
    prior = CASES[name].get("prior", "tiny")
    if prior != "tiny":
        ingest(db, build_prior(name, tmp / "prior"))
        return
    if not _CLEAN:
        ingest(tmp / "clean.duckdb", write_export(tmp / "clean"))
        _CLEAN["db"] = (tmp / "clean.duckdb").read_bytes()
    db.write_bytes(_CLEAN["db"])


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content_hash(db: Path) -> str:
    """Order-independent hash of every table in the warehouse."""
    con = read_connection(db)
    try:
        names = sorted(r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall())
        h = hashlib.sha256()
        for n in names:
            frame = fetch(con, f'SELECT * FROM "{n}"')
            h.update(n.encode() + b"\0" + frame.sort(frame.columns).write_csv().encode())
        return h.hexdigest()
    finally:
        con.close()


def _no_staging_left(folder: Path) -> None:
    assert not [p.name for p in folder.glob(".*.staging-*")], "a discarded write session left its staging file"


# ---------------------------------------------------------------------------
# The corpus itself is well formed
# ---------------------------------------------------------------------------

def test_corpus_is_large_well_formed_and_small():
    assert len(CASES) >= 45
    for name, spec in CASES.items():
        assert set(spec) <= CASE_KEYS, (name, set(spec) - CASE_KEYS)
        assert spec.get("description"), name
        kind = spec["expect"]["kind"]
        assert kind in KINDS, (name, kind)
        assert set(spec["expect"]) <= EXPECT_KEYS[kind], (name, set(spec["expect"]) - EXPECT_KEYS[kind])
        assert spec.get("base", "tiny") in ("tiny", "none"), name
        for fname in spec.get("remove", []):
            assert fname in TINY, (name, fname)
        prior = spec.get("prior")
        assert prior is None or prior == "tiny" or (CORPUS / name / prior).is_dir(), name
        if kind == "load":
            for table, row, rule, column in spec["expect"].get("rules", []):
                assert isinstance(row, int) and row >= 1 and rule and column, (name, table)
    assert {k for k in KINDS} == {s["expect"]["kind"] for s in CASES.values()}
    readme = (CORPUS / "README.md").read_text()
    assert not [n for n in CASES if f"`{n}`" not in readme], "every case is listed in tests/corpus/README.md"
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert size < 1_000_000, size


def test_corpus_covers_every_quarantine_rule():
    rules = {r[2] for s in CASES.values() for r in s["expect"].get("rules", [])}
    assert rules >= {
        "type", "key_missing", "required_missing", "not_allowed", "unknown_arm", "unknown_instrument",
        "score_out_of_range", "si_item_out_of_range", "dose_implausible", "before_course_start",
        "after_course_end", "end_before_start", "orphan", "duplicate_conflict", "duplicate_exact",
    }


# ---------------------------------------------------------------------------
# Whole-file errors and PHI: a clear error, nothing written
# ---------------------------------------------------------------------------

def _check_error(name: str, exc: BaseException) -> str:
    expect = CASES[name]["expect"]
    msg = str(exc)
    if expect["kind"] == "phi":
        from ketaoutcomes.ingest.phi import PhiError

        assert isinstance(exc, IngestError) and isinstance(exc, PhiError), f"{type(exc).__name__}: {msg}"
        assert expect["rule"] in msg, msg
        chain = [exc, exc.__cause__, exc.__context__]
        leaks = [repr(e) for e in chain if e is not None and expect["secret"] in (str(e) + repr(e))]
        assert not leaks, "the identifier itself must never appear in an error message"
    else:
        assert isinstance(exc, IngestError), f"{type(exc).__name__} is not an IngestError: {msg}"
        for text in expect.get("contains", []):
            assert text.casefold() in msg.casefold(), f"{text!r} not in {msg!r}"
        for text in expect.get("absent", []):
            assert text not in msg, f"the message quotes the file's content ({text!r}): {msg!r}"
    if "file" in expect:
        assert expect["file"] in msg, msg
    assert "\n" not in msg.strip(), f"the message is not one line: {msg!r}"
    return msg


@pytest.mark.parametrize("name", _ids("file_error") + _ids("phi"))
def test_error_case_names_the_file_and_writes_nothing(name, tmp_path):
    folder = build_export(name, tmp_path / "export")

    # Into a new warehouse: the error, and no warehouse file appears.
    fresh = tmp_path / "fresh" / "w.duckdb"
    with pytest.raises(Exception) as info:
        ingest(fresh, folder)
    _check_error(name, info.value)
    assert not fresh.exists()
    _no_staging_left(fresh.parent)

    # Into a warehouse that holds a delivery already: the same error, not one byte changed.
    db = tmp_path / "w.duckdb"
    load_prior(name, db, tmp_path)
    before = file_sha(db), content_hash(db)
    with pytest.raises(Exception) as info:
        ingest(db, folder)
    _check_error(name, info.value)
    assert (file_sha(db), content_hash(db)) == before
    _no_staging_left(tmp_path)


# ---------------------------------------------------------------------------
# Loads: counts, the exact quarantine, stored values, idempotence
# ---------------------------------------------------------------------------

def _check_warehouse(con, summary: IngestSummary, expect: dict) -> None:
    """The quarantine entries, meta_batches, raw_ rows and stored values of one load."""
    files = {f.table: f for f in summary.files}

    # The quarantine entries of this load, exactly (a multiset: no entry twice).
    batches = [f.batch_id for f in summary.files if not f.skipped]
    qu = fetch(con, "SELECT * FROM quarantine WHERE list_contains(?, batch_id)", [batches])
    got = sorted((r["table_name"], r["row_number"], r["rule"], r["column_name"]) for r in qu.iter_rows(named=True))
    want = sorted(tuple(r) for r in expect.get("rules", []))
    assert got == want

    # Per file: the warehouse agrees with the summary.
    for f in summary.files:
        if f.skipped:
            continue
        mb = fetch(con, "SELECT rows_read, rows_loaded, rows_quarantined, table_name FROM meta_batches "
                       "WHERE batch_id = ?", [f.batch_id])
        assert mb.rows() == [(f.rows_read, f.rows_loaded, f.rows_quarantined, f.table)]
        raw = fetch(con, f"SELECT count(*) n FROM raw_{f.table} WHERE _batch_id = ?", [f.batch_id])["n"][0]
        assert raw == f.rows_loaded
        bad_rows = qu.filter(qu["batch_id"] == f.batch_id)["row_number"]
        assert bad_rows.n_unique() == f.rows_quarantined
        assert bad_rows.is_between(1, f.rows_read).all()
        assert (qu.filter(qu["batch_id"] == f.batch_id)["table_name"] == f.table).all()

    for table, cols in expect.get("ignored_columns", {}).items():
        assert list(files[table].ignored_columns) == cols
    for secret in expect.get("not_in_reasons", []):
        assert not [r for r in qu["reason"] if secret in r], f"a reason quotes the value {secret!r}"
    for table, row, text in expect.get("reasons_contain", []):
        reasons = qu.filter((qu["table_name"] == table) & (qu["row_number"] == row))["reason"].to_list()
        assert any(text in r for r in reasons), (table, row, reasons)
    for sql, value in expect.get("checks", []):
        assert fetch(con, sql).item() == value, sql


@pytest.mark.parametrize("name", _ids("load"))
def test_load_case_quarantines_exactly_what_the_manifest_says(name, tmp_path):
    expect = CASES[name]["expect"]
    folder = build_export(name, tmp_path / "export")
    db = tmp_path / "w.duckdb"
    if "prior" in CASES[name]:
        load_prior(name, db, tmp_path)
    summary = ingest(db, folder)
    files = {f.table: f for f in summary.files}
    assert len(files) == len(summary.files), "one FileLoad per table"

    # Counts: the tables named in the manifest exactly, every other file loads whole.
    got_counts = {t: [f.rows_read, f.rows_loaded, f.rows_quarantined] for t, f in files.items()}
    want_counts = {t: (expect["counts"][t] if t in expect.get("counts", {}) else [f.rows_read, f.rows_read, 0])
                   for t, f in files.items()}
    assert got_counts == want_counts
    assert set(expect.get("counts", {})) <= set(files), "a table named in counts was not loaded"
    for f in summary.files:
        assert f.rows_read == f.rows_loaded + f.rows_quarantined, f
    assert sorted(t for t, f in files.items() if f.skipped) == sorted(expect.get("skipped", []))

    con = read_connection(db)
    try:
        _check_warehouse(con, summary, expect)
    finally:
        con.close()

    # The same folder again changes nothing.
    before = content_hash(db)
    again = ingest(db, folder)
    assert all(f.skipped for f in again.files) and not again.changed
    assert content_hash(db) == before


# ---------------------------------------------------------------------------
# The command line on a few cases: exit 1, one line, no traceback, no identifier
# ---------------------------------------------------------------------------

CLI_CASES = ["file_missing_required_column_site", "file_truncated_parquet", "file_latin1",
             "file_no_import_files", "phi_email_in_extra_column", "phi_ssn"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_error_is_one_line_exit_1(name, tmp_path):
    folder = build_export(name, tmp_path / "export")
    db = tmp_path / "w.duckdb"
    res = CliRunner().invoke(app, ["ingest", str(folder), "--db", str(db)])
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    expect = CASES[name]["expect"]
    if "file" in expect:
        assert expect["file"] in lines[0]
    if expect["kind"] == "phi":
        assert expect["rule"] in lines[0]
        assert expect["secret"] not in res.output
    assert not db.exists()


def test_cli_quarantine_case_exits_0_and_reports_the_counts(tmp_path):
    folder = build_export("type_integer_word", tmp_path / "export")
    res = CliRunner().invoke(app, ["ingest", str(folder), "--db", str(tmp_path / "w.duckdb")])
    assert res.exit_code == 0, res.output
    assert "patients.csv: loaded (4 read = 3 loaded + 1 quarantined)" in res.output
    assert "forty" not in res.output
