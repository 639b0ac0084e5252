"""Property tests of ingest on randomly corrupted exports (hypothesis).

Start from a clean export (TINY, a 100-patient simulated export, or TINY with
tables as Parquet), corrupt it (bad cells, deleted / repeated / conflicting rows,
shuffled / dropped / renamed columns, truncation, stray quotes / commas /
newlines / bytes, another encoding), ingest it, and check:

* the only exception ever raised is an :class:`IngestError` (a PHI error counts as
  one), with a one-line message; the warehouse is then exactly as before;
* otherwise, for every file, rows read = rows loaded + rows quarantined, and rows
  read = the number of data rows Python's ``csv`` module finds in the file
  (counted independently, when the file decodes as UTF-8 and its line ends are not
  lone CRs mixed with LFs), less the blank ones (no value in any column), which are
  skipped and counted apart; every row number loaded or quarantined is a record of
  the file;
* the warehouse is consistent: meta_batches, raw_ and quarantine agree with the
  summary, stg_ keys are unique, required values present, allowed values and
  registries, score and dose ranges respected, references resolve, no age 91-120;
* ingesting the same folder again changes nothing.

Bounded and reproducible: ``derandomize=True`` (same examples on every run),
no example database, a few dozen examples per test.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ketaoutcomes.contract import TABLE_ORDER, TABLES
from ketaoutcomes.ingest import IngestError, IngestSummary, ingest_export
from ketaoutcomes.settings import SimulationSettings
from ketaoutcomes.simulate.cohort import simulate_frames
from ketaoutcomes.warehouse import ensure_schema, fetch
from tests.conftest import TINY

WHEN = dt.datetime(2026, 1, 1)

SETTINGS = dict(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# ---------------------------------------------------------------------------
# Clean exports: {file name: bytes}
# ---------------------------------------------------------------------------


def _tiny() -> dict[str, bytes]:
    return {name: text.encode() for name, text in TINY.items()}


def _simulated() -> dict[str, bytes]:
    frames = simulate_frames(SimulationSettings(n_patients=100, seed=7))
    out = {}
    for table in frames:  # (the route cohort: every table but the optional clinical_events)
        buf = io.BytesIO()
        frames[table].write_csv(buf, datetime_format="%Y-%m-%d %H:%M:%S", date_format="%Y-%m-%d", null_value="")
        out[f"{table}.csv"] = buf.getvalue()
    return out


def _tiny_parquet() -> dict[str, bytes]:
    """TINY with patients and sessions as typed Parquet (what an export tool writes)."""
    out = _tiny()
    for name in ("patients.csv", "sessions.csv"):
        buf = io.BytesIO()
        pl.read_csv(io.BytesIO(out.pop(name)), try_parse_dates=True).write_parquet(
            buf, compression="uncompressed", statistics=False)
        out[name.replace(".csv", ".parquet")] = buf.getvalue()
    return out


BASES: dict[str, Callable[[], dict[str, bytes]]] = {"tiny": _tiny, "simulated": _simulated, "parquet": _tiny_parquet}
_cache: dict[str, dict[str, bytes]] = {}


def base_export(name: str) -> dict[str, bytes]:
    if name not in _cache:
        _cache[name] = BASES[name]()
    return dict(_cache[name])


# ---------------------------------------------------------------------------
# Corruptions
# ---------------------------------------------------------------------------

NASTY = [
    "", " ", "   ", "NaN", "inf", "-inf", "1e400", "-1", "0", "3.5", "99999999999", "2024-13-45", "2024-02-30",
    "2024-01-08 25:00", "forty", "maybe", "P9", "C9", "S9", "X", "MADRS", "ketamine_iv", "ssri", "null", "NULL",
    "N/A", "\ufeff", "\x00", "é", "日本", "'", '"', ",", ";", "\n", "\t", "0x10", "1_000", "1,5", "+5", " 45 ",
]
# Cell text: no CR (a lone CR is a line break to Python's csv module, not to every reader).
cell_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=12),
)
STRAY = [b'"', b",", b"\n", b"\r\n", b"\r", b"\x00", b"\xff", b"\xef\xbb\xbf", b'""', b',"', b"\n\n"]
#: Records that hold no value: skipped as blank rows (an empty line, spaces and tabs, only commas).
BLANK_RECORDS = [[], ["   "], ["\t"], ["", "", ""], [" ", "", "\t "]]


def _parse(data: bytes) -> list[list[str]] | None:
    """CSV records of a file, or None if it does not decode as UTF-8 or csv rejects it."""
    try:
        text = data.decode("utf-8-sig")
        return list(csv.reader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error):
        return None


def _write(rows: list[list[str]], crlf: bool = False) -> bytes:
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n" if crlf else "\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def _row_op(draw, rows: list[list[str]], log: list[str], name: str) -> list[list[str]]:
    """A corruption that keeps the file valid CSV (header + records); appended to ``log``."""
    header, body = rows[0], rows[1:]
    op = draw(st.sampled_from(["cell", "cell", "cell", "delete", "repeat", "conflict", "shuffle_columns",
                               "drop_column", "rename_column", "extra_column", "short_row", "swap_cells",
                               "shuffle_rows", "header_only", "blank_rows"]))
    if op in ("cell", "delete", "repeat", "conflict", "short_row", "swap_cells") and not body:
        return rows
    if op == "cell":
        for _ in range(draw(st.integers(1, 3))):
            r = draw(st.integers(0, len(body) - 1))
            if body[r]:
                c = draw(st.integers(0, len(body[r]) - 1))
                body[r][c] = v = draw(cell_text)
                log.append(f"{name}: row {r + 1} {header[c] if c < len(header) else c} = {v!r}")
    elif op == "delete":
        r = draw(st.integers(0, len(body) - 1))
        del body[r]
        log.append(f"{name}: row {r + 1} deleted")
    elif op == "repeat":
        r, at = draw(st.integers(0, len(body) - 1)), draw(st.integers(0, len(body)))
        body.insert(at, list(body[r]))
        log.append(f"{name}: row {r + 1} repeated as row {at + 1}")
    elif op == "conflict":  # same key, different content
        r = draw(st.integers(0, len(body) - 1))
        copy = list(body[r])
        if len(copy) > 1:
            c = draw(st.integers(1, len(copy) - 1))
            copy[c] = draw(cell_text)
            col = header[c] if c < len(header) else c
            log.append(f"{name}: row {r + 1} repeated at the end with {col} = {copy[c]!r}")
        body.append(copy)
    elif op == "shuffle_columns":
        perm = draw(st.permutations(range(len(header))))
        log.append(f"{name}: columns in order {perm}")
        return [[r[i] if i < len(r) else "" for i in perm] for r in rows]
    elif op == "drop_column":
        j = draw(st.integers(0, len(header) - 1))
        log.append(f"{name}: column {header[j]} dropped")
        return [[v for i, v in enumerate(r) if i != j] for r in rows]
    elif op == "rename_column":
        j = draw(st.integers(0, len(header) - 1))
        new = draw(st.sampled_from(["", "x", header[0].upper(), " " + header[-1]]))
        log.append(f"{name}: column {header[j]} renamed {new!r}")
        header[j] = new
    elif op == "extra_column":
        col = draw(st.sampled_from(["note", "extra", header[0]]))
        values = [draw(cell_text) for _ in body]
        log.append(f"{name}: extra column {col!r} = {values!r}")
        return [rows[0] + [col]] + [r + [v] for r, v in zip(body, values)]
    elif op == "short_row":
        r = draw(st.integers(0, len(body) - 1))
        k = draw(st.integers(0, len(body[r])))
        body[r] = body[r][:k]
        log.append(f"{name}: row {r + 1} cut to {k} fields")
    elif op == "swap_cells":  # a value from another row of the same column: duplicate keys, wrong references
        c = draw(st.integers(0, len(header) - 1))
        a, b = draw(st.integers(0, len(body) - 1)), draw(st.integers(0, len(body) - 1))
        if c < len(body[a]) and c < len(body[b]):
            body[a][c] = body[b][c]
            log.append(f"{name}: row {a + 1} {header[c]} = row {b + 1}'s ({body[b][c]!r})")
    elif op == "shuffle_rows":
        perm = draw(st.permutations(range(len(body))))
        body = [body[i] for i in perm]
        log.append(f"{name}: rows shuffled")
    elif op == "header_only":
        body = []
        log.append(f"{name}: every data row deleted")
    elif op == "blank_rows":
        for _ in range(draw(st.integers(1, 3))):
            at, blank = draw(st.integers(0, len(body))), draw(st.sampled_from(BLANK_RECORDS))
            body.insert(at, list(blank))
            log.append(f"{name}: blank record {blank!r} inserted as row {at + 1}")
    return [header] + body


def _byte_op(draw, data: bytes, log: list[str], name: str) -> bytes:
    """A corruption of the bytes: the file may no longer be valid CSV, UTF-8 or Parquet."""
    op = draw(st.sampled_from(["truncate", "stray", "stray", "overwrite", "encoding", "crlf", "cr", "bom"]))
    if op == "truncate":
        k = draw(st.integers(0, len(data)))
        log.append(f"{name}: cut at byte {k} of {len(data)}")
        return data[:k]
    if op == "stray":
        i, junk = draw(st.integers(0, len(data))), draw(st.sampled_from(STRAY))
        log.append(f"{name}: {junk!r} inserted at byte {i}")
        return data[:i] + junk + data[i:]
    if op == "overwrite":
        if not data:
            return data
        i, junk = draw(st.integers(0, len(data) - 1)), draw(st.binary(min_size=1, max_size=4))
        log.append(f"{name}: bytes {i}.. overwritten with {junk!r}")
        return data[:i] + junk + data[i + len(junk):]
    if op == "encoding":
        text = data.decode("utf-8", errors="replace")
        accent = draw(st.booleans())
        if accent:  # a non-ASCII value, which another encoding writes differently
            i = text.find("\n") + 1
            text = text[:i] + text[i:].replace(",", "ö,", 1) if i else text
        enc = draw(st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-8-sig"]))
        log.append(f"{name}: re-encoded {enc}" + (" with an ö" if accent else ""))
        return text.encode(enc, errors="replace")
    if op == "crlf":
        log.append(f"{name}: CRLF")
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if op == "cr":  # classic Mac line ends
        log.append(f"{name}: CR")
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r")
    log.append(f"{name}: UTF-8 BOM added")
    return b"\xef\xbb\xbf" + data


class Export:
    """A corrupted export; its repr (what hypothesis prints for a failing example) is the
    list of corruptions applied, not the bytes."""

    def __init__(self, base: str, files: dict[str, bytes], log: list[str]) -> None:
        self.base, self.files, self.log = base, files, log

    def __repr__(self) -> str:
        return f"Export({self.base!r}: " + "; ".join(self.log) + ")"


@st.composite
def corrupted(draw, base: str, *, byte_ops: bool = True) -> Export:
    """A clean export with 1-3 corruptions."""
    files = base_export(base)
    log: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(files)))
        rows = _parse(files[name]) if name.endswith(".csv") else None
        if rows and (not byte_ops or draw(st.integers(0, 2)) > 0):
            crlf = draw(st.integers(0, 5)) == 0
            files[name] = _write(_row_op(draw, rows, log, name), crlf=crlf)
            if crlf:
                log.append(f"{name}: CRLF")
        elif byte_ops:
            files[name] = _byte_op(draw, files[name], log, name)
    return Export(base, files, log)


# ---------------------------------------------------------------------------
# The independent count and the warehouse checks
# ---------------------------------------------------------------------------

def csv_data_rows(data: bytes) -> int | None:
    """Data rows (records after the header, blank ones left out) as Python's csv module counts
    them, or None when that count is not a fair reference (not UTF-8, lone CRs beside LFs, a NUL,
    csv rejects it)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if "\x00" in text or ("\r" in text.replace("\r\n", "") and "\n" in text):
        return None
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        return None
    while records and records[0] == []:  # blank lines before the header are not rows
        records.pop(0)
    return len([r for r in records[1:] if any(c.strip(" \t") for c in r)])


def warehouse_hash(con: duckdb.DuckDBPyConnection) -> str:
    names = sorted(r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall())
    h = hashlib.sha256()
    for n in names:
        frame = fetch(con, f'SELECT * FROM "{n}"')
        h.update(n.encode() + b"\0" + frame.sort(frame.columns).write_csv().encode())
    return h.hexdigest()


def _event(what: str) -> None:
    """Count an outcome in hypothesis' statistics (``--hypothesis-show-statistics``); a no-op outside @given."""
    try:
        event(what)
    except InvalidArgument:
        pass


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    return con.execute(sql, params or []).fetchone()[0]


def assert_consistent(con: duckdb.DuckDBPyConnection, summary: IngestSummary, files: dict[str, bytes]) -> None:
    for f in summary.files:
        assert f.rows_read == f.rows_loaded + f.rows_quarantined, f
        name = Path(f.source_file).name
        if name.endswith(".csv") and not f.skipped:
            expected = csv_data_rows(files[name])
            if expected is not None:
                _event("row count compared with the csv module")
                assert f.rows_read == expected, f"{name}: {f.rows_read} rows read, the csv module finds {expected}"
        if f.skipped:
            continue
        assert _scalar(con, "SELECT rows_read || '/' || rows_loaded || '/' || rows_quarantined FROM meta_batches "
                            "WHERE batch_id = ?", [f.batch_id]) == f"{f.rows_read}/{f.rows_loaded}/{f.rows_quarantined}"
        assert _scalar(con, f"SELECT count(*) FROM raw_{f.table} WHERE _batch_id = ?", [f.batch_id]) == f.rows_loaded
        n_bad, lo, hi = con.execute(
            "SELECT count(DISTINCT row_number), min(row_number), max(row_number) FROM quarantine WHERE batch_id = ?",
            [f.batch_id]).fetchone()
        assert n_bad == f.rows_quarantined, f
        records = f.rows_read + f.rows_blank  # row numbers count blank rows too
        assert n_bad == 0 or (1 <= lo and hi <= records), (f, lo, hi)
        loaded_rows = {r[0] for r in con.execute(
            f"SELECT _row_number FROM raw_{f.table} WHERE _batch_id = ?", [f.batch_id]).fetchall()}
        bad_rows = {r[0] for r in con.execute(
            "SELECT row_number FROM quarantine WHERE batch_id = ?", [f.batch_id]).fetchall()}
        assert not loaded_rows & bad_rows, "a row both loaded and quarantined"
        assert len(loaded_rows | bad_rows) == f.rows_read, "every row is loaded or quarantined"
        assert loaded_rows | bad_rows <= set(range(1, records + 1)), "a row number that is no record of the file"

    for table in TABLE_ORDER:
        spec = TABLES[table]
        key = ", ".join(f'"{k}"' for k in spec.key)
        dup = f"SELECT count(*) FROM (SELECT {key} FROM stg_{table} GROUP BY ALL HAVING count(*) > 1)"
        assert _scalar(con, dup) == 0, f"stg_{table}: a key twice"
        for col in spec.columns:
            if col.required:
                assert _scalar(con, f'SELECT count(*) FROM stg_{table} WHERE "{col.name}" IS NULL') == 0, (
                    f"stg_{table}.{col.name}: required value missing")
            if col.allowed:
                assert _scalar(con, f'SELECT count(*) FROM stg_{table} WHERE NOT list_contains(?, "{col.name}")',
                               [list(col.allowed)]) == 0, f"stg_{table}.{col.name}: value not allowed"
            if col.registry:
                ref, rk = ("ref_arms", "arm") if col.registry == "arms" else ("ref_instruments", "instrument")
                outside = f'SELECT count(*) FROM stg_{table} WHERE "{col.name}" NOT IN (SELECT {rk} FROM {ref})'
                assert _scalar(con, outside) == 0, f"stg_{table}.{col.name}: not in {ref}"
        for r in spec.references:
            assert _scalar(con, f'SELECT count(*) FROM stg_{table} WHERE "{r.column}" NOT IN '
                                f'(SELECT "{r.to_column}" FROM stg_{r.to_table})') == 0, (
                f"stg_{table}.{r.column}: a reference that does not resolve")
    # Safe Harbor: no real age over 89 is stored (90 stands for 90 and over; a typo like 450 is left for
    # the range checks, see ketaoutcomes.ingest.phi.AGE_MAX_REAL).
    assert _scalar(con, "SELECT count(*) FROM stg_patients WHERE age_at_index BETWEEN 91 AND 120") == 0
    assert _scalar(con, "SELECT count(*) FROM stg_mood_scores m JOIN ref_instruments i USING (instrument) "
                        "WHERE m.total_score NOT BETWEEN i.score_min AND i.score_max") == 0
    assert _scalar(con, "SELECT count(*) FROM stg_sessions s JOIN stg_courses c USING (course_id) "
                        "JOIN ref_arms a USING (arm) WHERE s.dose_mg NOT BETWEEN a.dose_min_mg AND a.dose_max_mg") == 0


_PRELOADED: dict[str, bytes] = {}


def _connect(tmp: Path, *, preload: bool) -> duckdb.DuckDBPyConnection:
    """A warehouse for one example: empty, or holding the clean TINY export (a later delivery
    lands on top of it). The preloaded one is made once and copied."""
    if not preload:
        con = duckdb.connect()
        ensure_schema(con)
        return con
    if not _PRELOADED:
        with tempfile.TemporaryDirectory() as base:
            db, clean = Path(base) / "w.duckdb", Path(base) / "clean"
            clean.mkdir()
            for name, data in _tiny().items():
                (clean / name).write_bytes(data)
            con = duckdb.connect(str(db))
            ensure_schema(con)
            ingest_export(con, clean, loaded_at=WHEN)
            con.execute("CHECKPOINT")
            con.close()
            _PRELOADED["db"] = db.read_bytes()
    (tmp / "w.duckdb").write_bytes(_PRELOADED["db"])
    return duckdb.connect(str(tmp / "w.duckdb"))


def check_ingest(files: dict[str, bytes], log: object, *, preload: bool = False, twice: bool = True) -> str | None:
    """Ingest a corrupted export and check every property.

    Returns None when it loaded, else the IngestError's message. ``twice``: also load the
    same folder a second time and check nothing changes.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        con = _connect(tmp, preload=preload)
        try:
            folder = tmp / "export"
            folder.mkdir()
            for name, data in files.items():
                (folder / name).write_bytes(data)
            before = warehouse_hash(con)
            try:
                summary = ingest_export(con, folder, loaded_at=WHEN)
            except IngestError as exc:
                msg = str(exc)
                _event("whole-file error")
                assert msg and "\n" not in msg.strip(), f"not one line: {msg!r} ({log})"
                assert warehouse_hash(con) == before, f"an error left the warehouse changed ({log}): {msg}"
                return msg
            assert_consistent(con, summary, files)
            _event("loaded, rows quarantined" if any(f.rows_quarantined for f in summary.files) else "loaded whole")
            if twice:
                after = warehouse_hash(con)
                again = ingest_export(con, folder, loaded_at=WHEN)
                assert all(f.skipped for f in again.files), log
                assert warehouse_hash(con) == after, f"the same folder twice changed the warehouse ({log})"
            return None
        finally:
            con.close()


def run(files: dict[str, bytes], log: object, **kwargs) -> str | None:
    """:func:`check_ingest`, failing the property on any exception but an IngestError.
    BaseException too: a reader panic (pyo3 PanicException) is not an Exception."""
    try:
        return check_ingest(files, log, **kwargs)
    except (AssertionError, KeyboardInterrupt, pytest.fail.Exception):
        raise
    except BaseException as exc:  # noqa: BLE001 - the property: nothing but IngestError escapes
        pytest.fail(f"{type(exc).__name__} escaped ingest ({log}): {str(exc)[:500]}")


# ---------------------------------------------------------------------------
# The properties
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("base", sorted(BASES))
def test_clean_exports_load_whole(base):
    files = base_export(base)
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        con = duckdb.connect()
        ensure_schema(con)
        summary = ingest_export(con, Path(tmp), loaded_at=WHEN)
        assert_consistent(con, summary, files)
        con.close()
    assert {f.table: f.rows_quarantined for f in summary.files} == {t: 0 for t in TABLE_ORDER if any(Path(n).stem == t for n in files)}


@settings(max_examples=30, **SETTINGS)  # derandomized: the same 30 each run (the corpus keeps past finds)
@given(case=corrupted("tiny"), preload=st.booleans())
def test_corrupted_tiny_export(case, preload):
    run(case.files, case, preload=preload)


@settings(max_examples=30, **SETTINGS)
@given(case=corrupted("tiny", byte_ops=False))
def test_row_level_corruption_fails_the_file_only_for_its_columns(case):
    """Corruptions that keep a valid UTF-8 CSV fail a file only for its columns (a required one
    missing or repeated, a header that looks like PHI, a timestamp column in UTC or mixing times with
    and without an offset), a NUL byte (taken for UTF-16 or binary), or an id that is not a
    pseudonymous id (the PHI guard refuses the export: it could be a record number or a name); every
    other problem is per row."""
    msg = run(case.files, case, twice=False)
    findings = re.findall(r"column [^:]+: (?:value|column_name)\.", msg or "")
    id_refusal = bool(findings) and all(re.match(r"column \w+_id: value\.", f) for f in findings)
    column_level = ("required column", "column_name.", "NUL", "twice", "duplicate", "more than once", "UTC")
    assert msg is None or id_refusal or any(s in msg for s in column_level), f"{msg} ({case})"


@settings(max_examples=12, phases=(Phase.explicit, Phase.generate), **SETTINGS)  # no shrinking: slow here
@given(case=corrupted("simulated"))
def test_corrupted_simulated_export(case):
    run(case.files, case)


@settings(max_examples=25, phases=(Phase.explicit, Phase.generate), **SETTINGS)
@given(case=corrupted("parquet"))
def test_corrupted_parquet_export(case):
    run(case.files, case, twice=False)
