"""The bad-input corpora (tests/corpus/ and tests/adversarial/): every case produces exactly the
outcome its case.toml names.

A case is a folder of files laid over the clean TINY export (tests/conftest.py),
plus ``case.toml``; see tests/corpus/README.md for the format. tests/adversarial/ holds the
cases of issue 9 (identifiers anywhere, lost rows, limits) in the same format. Three outcomes:

* ``file_error``: an :class:`IngestError` naming the file, nothing written;
* ``phi``: a PHI error naming the file and the rule, never the identifier, nothing written;
* ``load``: per-file counts, the exact set of quarantine entries, checks on what was stored,
  and loading the same folder again changes nothing.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import hashlib
import io
import lzma
import os
import shutil
import signal
import socket
import struct
import tomllib
import zipfile
import zlib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.ingest import IngestError, IngestSummary, ingest_export
from ketaoutcomes.warehouse import fetch, read_connection, write_session
from tests.conftest import TINY, write_export

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
ADVERSARIAL = Path(__file__).resolve().parents[1] / "adversarial"
ROOTS = (CORPUS, ADVERSARIAL)
WHEN = dt.datetime(2026, 1, 1)
KINDS = ("file_error", "phi", "load")
CASE_KEYS = {"description", "base", "remove", "prior", "expect", "secrets", "make", "rollback"}
MAKE_KINDS = {"fifo", "directory", "dangling_symlink", "symlink", "append_lines", "gzip",
              "socket", "symlink_loop", "symlink_to", "symlink_inside", "compressed", "zstd_bomb", "columns",
              "long_value", "parquet"}
#: No case may take longer than this (a FIFO or a decompression bomb must not hang the suite).
CASE_TIME_LIMIT_S = 300
EXPECT_KEYS = {
    "file_error": {"kind", "file", "contains", "absent"},
    "phi": {"kind", "file", "rule", "secret"},
    "load": {"kind", "counts", "rules", "checks", "ignored_columns", "skipped", "not_in_reasons", "reasons_contain"},
}


def _cases() -> tuple[dict[str, dict], dict[str, Path]]:
    specs: dict[str, dict] = {}
    dirs: dict[str, Path] = {}
    for root in ROOTS:
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir()):
            if (d / "case.toml").is_file():
                assert d.name not in dirs, f"case {d.name} is in two corpora"
                specs[d.name] = tomllib.loads((d / "case.toml").read_text())
                dirs[d.name] = d
    return specs, dirs


CASES, CASE_DIRS = _cases()


def _ids(kind: str) -> list[str]:
    return [name for name, spec in CASES.items() if spec["expect"]["kind"] == kind]


# ---------------------------------------------------------------------------
# Building an export from a case, loading it, looking at the warehouse
# ---------------------------------------------------------------------------

def _make(dest: Path, item: dict) -> None:
    """One file the case cannot commit (a FIFO, a folder, a symlink, thousands of repeated lines,
    gzip bytes under a .csv name), made at run time in the export ``dest``."""
    target = dest / item["file"]
    kind = item["kind"]
    if kind == "fifo":
        target.unlink(missing_ok=True)
        os.mkfifo(target)
    elif kind == "directory":
        target.unlink(missing_ok=True)
        target.mkdir()
        (target / "part-0.csv").write_text("x\n1\n")
    elif kind == "dangling_symlink":
        target.unlink(missing_ok=True)
        target.symlink_to(dest.parent / "nowhere" / item["file"])
    elif kind == "symlink":  # a symlink to a regular file outside the export, holding this file's text
        outside = dest.parent / "outside" / item["file"]
        outside.parent.mkdir(exist_ok=True)
        outside.write_bytes(target.read_bytes())
        target.unlink()
        target.symlink_to(outside)
    elif kind == "append_lines":  # item["line"] (a data line) item["times"] times
        with open(target, "a", newline="") as fh:
            fh.write((item["line"] + item.get("newline", "\n")) * item["times"])
    elif kind == "gzip":  # the file's bytes gzip-compressed, the name kept; padded by repeat lines
        data = target.read_bytes() + (item.get("line", "") + "\n").encode() * item.get("times", 0)
        target.write_bytes(gzip.compress(data, mtime=0))
    else:
        _make_limits(dest, target, item)


def _zstd_frame(head: bytes, fill: bytes, blocks: int, tail: bytes) -> bytes:
    """A zstd frame written by hand (no zstd module needed): ``head`` as a raw block, ``fill`` (one byte)
    131,071 times per RLE block, ``blocks`` times, ``tail`` as a raw block; 4 bytes per 128 KiB."""
    def block(kind: int, size: int, last: bool) -> bytes:
        return struct.pack("<I", int(last) | kind << 1 | size << 3)[:3]

    size = len(head) + 131071 * blocks + len(tail)
    return (b"\x28\xb5\x2f\xfd\x80\x58" + struct.pack("<I", size) + block(0, len(head), False) + head
            + (block(1, 131071, False) + fill) * blocks + block(0, len(tail), True) + tail)


def _compress(data: bytes, fmt: str, name: str) -> bytes:
    if fmt == "gzip":
        return gzip.compress(data, mtime=0)
    if fmt == "bzip2":
        return bz2.compress(data)
    if fmt == "xz":
        return lzma.compress(data)
    if fmt == "zlib":
        return zlib.compress(data)
    if fmt == "zstd":
        return _zstd_frame(data, b"\n", 0, b"")
    if fmt == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(name, data)
        return buf.getvalue()
    raise AssertionError(fmt)


def _make_limits(dest: Path, target: Path, item: dict) -> None:
    """The kinds of part 5 (limits): files that would hang, exhaust memory or take forever."""
    kind = item["kind"]
    if kind == "socket":  # a Unix socket named like a table (bound from inside the folder: paths are long)
        target.unlink(missing_ok=True)
        cwd = os.getcwd()
        os.chdir(dest)
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(target.name)
        finally:
            os.chdir(cwd)
    elif kind == "symlink_loop":  # a link to itself
        target.unlink(missing_ok=True)
        target.symlink_to(target.name)
    elif kind == "symlink_to":  # a link to item["target"] (e.g. /dev/zero)
        target.unlink(missing_ok=True)
        target.symlink_to(item["target"])
    elif kind == "symlink_inside":  # the file moved into a subfolder of the export, linked by a relative path
        inner = dest / item.get("folder", "parts") / target.name
        inner.parent.mkdir(exist_ok=True)
        target.rename(inner)
        target.symlink_to(inner.relative_to(dest))
    elif kind == "compressed":  # item["format"]: gzip, bzip2, xz, zlib, zstd, zip; the name kept
        data = target.read_bytes() + (item.get("line", "") + "\n").encode() * item.get("times", 0)
        target.write_bytes(_compress(data, item["format"], target.name))
    elif kind == "zstd_bomb":  # a value of item["blocks"] x 128 KiB of item["fill"], 4 bytes per 128 KiB
        text, pad = target.read_text(), item["pad"] + "\n"  # pad lines: raw blocks of 8 KiB and more
        for n in range(400, 600):  # a frame without a NUL byte, as a sniff of the first 64 KiB would see
            frame = _zstd_frame((text + pad * n + item["prefix"]).encode(), item.get("fill", "A").encode(),
                                item["blocks"], (item["suffix"] + "\n" + pad * n).encode())
            if b"\0" not in frame:
                break
        target.write_bytes(frame)
    elif kind == "columns":  # item["count"] more columns x1..xN: in the header, and empty in every row
        lines = target.read_text().splitlines()
        extra = item["count"]
        lines = [lines[0] + "".join(f",x{i}" for i in range(1, extra + 1))] + [line + "," * extra for line in lines[1:]]
        target.write_text("\n".join(lines) + "\n")
    elif kind == "long_value":  # item["line"] with {value} = item["bytes"] bytes of item["piece"], appended
        piece = item.get("piece", "A")
        value = (piece * (item["bytes"] // len(piece) + 1))[: item["bytes"]]
        text = target.read_text()
        if item.get("header"):  # added to the end of the header line instead
            first, rest = text.split("\n", 1)
            target.write_text(first + item["line"].replace("{value}", value) + "\n" + rest)
        else:
            target.write_text(text + item["line"].replace("{value}", value) + "\n")
    elif kind == "parquet":
        _make_parquet(dest, target, item)
    else:  # pragma: no cover - checked by test_corpus_is_large_well_formed_and_small
        raise AssertionError(kind)


def _make_parquet(dest: Path, target: Path, item: dict) -> None:
    """item["from"] (a CSV of the export, removed) written as Parquet to item["file"], all text; with
    ``rows``: its first row repeated that many times through dictionary indices (a dictionary bomb),
    ``width``: the value of column item["wide"] made that many characters, ``extra_columns``: N more
    constant columns, ``nested``: a list column, ``delta``: text columns in DELTA_BYTE_ARRAY."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = dest / item["from"]
    table = pl.read_csv(src, infer_schema=False).to_arrow()
    src.unlink()
    if "rows" in item:
        idx = pa.array(np.zeros(item["rows"], dtype=np.int32))
        cols = {}
        for name in table.column_names:
            first = table.column(name)[0].as_py()
            if name == item.get("wide"):
                first = "A" * item["width"]
            cols[name] = pa.DictionaryArray.from_arrays(idx, pa.array([first], pa.string()))
        table = pa.table(cols)
    for i in range(1, item.get("extra_columns", 0) + 1):
        table = table.append_column(f"x{i}", pa.array(["1"] * table.num_rows))
    if item.get("nested"):
        table = table.append_column("tags", pa.array([[1, 2]] * table.num_rows, pa.list_(pa.int8())))
    options = {"compression": "zstd", "write_statistics": False, "data_page_size": 1 << 30}
    if item.get("delta"):
        text = [n for n in table.column_names
                if pa.types.is_string(table.schema.field(n).type) or pa.types.is_large_string(table.schema.field(n).type)]
        options.update(use_dictionary=False, column_encoding={n: "DELTA_BYTE_ARRAY" for n in text})
    target.unlink(missing_ok=True)
    pq.write_table(table, target, **options)


def build_export(name: str, dest: Path) -> Path:
    """The export a case describes: TINY (unless base = "none"), minus ``remove``, plus the case's
    files, plus the files its ``make`` list builds."""
    spec, src = CASES[name], CASE_DIRS[name]
    if spec.get("base", "tiny") == "tiny":
        write_export(dest)
    else:
        dest.mkdir(parents=True)
    for fname in spec.get("remove", []):
        (dest / fname).unlink()
    for f in src.iterdir():
        if f.is_file() and f.name != "case.toml":
            shutil.copyfile(f, dest / f.name)
    for item in spec.get("make", []):
        _make(dest, item)
    return dest


def _priors(name: str) -> list[str]:
    """The deliveries loaded before the case, in order: ``prior`` is one ("tiny" or a subfolder of
    the case) or a list of them (a sequence of deliveries, e.g. ["tiny", "v2"])."""
    prior = CASES[name].get("prior", "tiny")
    return [prior] if isinstance(prior, str) else list(prior)


def build_prior(name: str, dest: Path, sub: str | None = None) -> Path:
    """A delivery named by the case's ``prior``: a subfolder of the case laid over TINY."""
    write_export(dest)
    for f in (CASE_DIRS[name] / (sub or CASES[name]["prior"])).iterdir():
        shutil.copyfile(f, dest / f.name)
    return dest


@pytest.fixture(autouse=True)
def _time_limit():
    """A case that hangs (a FIFO read, a decompression bomb) fails instead of stalling CI."""
    def _alarm(signum, frame):
        raise TimeoutError(f"a corpus case ran for over {CASE_TIME_LIMIT_S} s")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIME_LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def stored_secrets(db: Path, secrets: list[str]) -> list[str]:
    """Where any of ``secrets`` sits in the warehouse: every column of every table and view
    (cast to text, so digits typed into a number column are found too) and every column name."""
    if not db.exists() or not secrets:
        return []
    con = read_connection(db)
    try:
        found = []
        columns: dict[str, list[str]] = {}
        for table, column in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = current_database()"
        ).fetchall():
            columns.setdefault(table, []).append(column)
        for table, names in columns.items():  # one query per table: every column x secret counted
            pairs = [(c, s) for c in names for s in secrets]
            found += [f"name of {table}.{c}" for c, s in pairs
                      if s.casefold() in c.casefold() or s.casefold() in table.casefold()]
            counts = con.execute(
                "SELECT " + ", ".join(f'count_if(contains(lower(CAST("{c}" AS VARCHAR)), ?))' for c, _ in pairs)
                + f' FROM "{table}"', [s.casefold() for _, s in pairs]).fetchone()
            found += [f"{table}.{c} ({hits} rows)" for (c, _), hits in zip(pairs, counts) if hits]
        return found
    finally:
        con.close()


def ingest(db: Path, folder: Path) -> IngestSummary:
    with write_session(db) as con:
        return ingest_export(con, folder, loaded_at=WHEN)


_CLEAN: dict[str, bytes] = {}


def load_prior(name: str, db: Path, tmp: Path) -> None:
    """The warehouse ``db`` as it is after the case's prior delivery (the clean TINY export if it
    names none). Loading TINY is done once and the warehouse file copied: it is the same every time."""
    priors = _priors(name)
    if priors != ["tiny"] or "rollback" in CASES[name]:
        loads = [ingest(db, write_export(tmp / f"prior{i}") if sub == "tiny" else build_prior(name, tmp / f"prior{i}", sub))
                 for i, sub in enumerate(priors)]
        if "rollback" in CASES[name]:  # `rollback` to before the first batch of that prior delivery
            from ketaoutcomes.ingest.rollback import apply_rollback, plan_rollback

            mine = [f.batch_id for f in (*loads[CASES[name]["rollback"]].files, *loads[CASES[name]["rollback"]].registries)
                    if not f.skipped]
            with write_session(db) as con:
                first = fetch(con, "SELECT batch_id FROM meta_batches WHERE list_contains(?, batch_id) ORDER BY "
                                   "load_seq LIMIT 1", [mine])["batch_id"].item()
                apply_rollback(con, plan_rollback(con, first), at=WHEN)
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
    adversarial = [n for n, d in CASE_DIRS.items() if d.parent == ADVERSARIAL]
    assert len(adversarial) >= 60, f"issue 9 asks for 60 adversarial cases; there are {len(adversarial)}"
    for name, spec in CASES.items():
        assert set(spec) <= CASE_KEYS, (name, set(spec) - CASE_KEYS)
        assert spec.get("description"), name
        kind = spec["expect"]["kind"]
        assert kind in KINDS, (name, kind)
        assert set(spec["expect"]) <= EXPECT_KEYS[kind], (name, set(spec["expect"]) - EXPECT_KEYS[kind])
        assert spec.get("base", "tiny") in ("tiny", "none"), name
        for fname in spec.get("remove", []):
            assert fname in TINY, (name, fname)
        for prior in _priors(name) if "prior" in spec else []:
            assert prior == "tiny" or (CASE_DIRS[name] / prior).is_dir(), name
        if "rollback" in spec:  # the index of a prior delivery, rolled back before the case's export
            assert "prior" in spec and spec["rollback"] in range(len(_priors(name))), name
        assert all(isinstance(x, str) and len(x) >= 4 for x in spec.get("secrets", [])), name
        for item in spec.get("make", []):
            assert item.get("kind") in MAKE_KINDS and item.get("file"), (name, item)
        if kind == "load":
            for table, row, rule, column in spec["expect"].get("rules", []):
                first, last = (row, row) if isinstance(row, int) else row
                assert isinstance(first, int) and isinstance(last, int) and 1 <= first <= last and rule and column, \
                    (name, table)
    assert {k for k in KINDS} == {s["expect"]["kind"] for s in CASES.values()}
    for root in ROOTS:
        readme = (root / "README.md").read_text()
        missing = [n for n, d in CASE_DIRS.items() if d.parent == root and f"`{n}`" not in readme]
        assert not missing, f"every case is listed in {root.name}/README.md: {missing}"
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        assert size < 1_000_000, (root.name, size)


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
        secrets = [expect["secret"], *CASES[name].get("secrets", [])]
        leaks = [repr(e) for e in chain if e is not None and any(x in (str(e) + repr(e)) for x in secrets)]
        assert not leaks, "the identifier itself must never appear in an error message"
    else:
        assert isinstance(exc, IngestError), f"{type(exc).__name__} is not an IngestError: {msg}"
        for text in [*expect.get("absent", []), *CASES[name].get("secrets", [])]:
            chain = [exc, exc.__cause__, exc.__context__]
            assert not [e for e in chain if e is not None and text in (str(e) + repr(e))], \
                f"the error (or its cause) quotes the file's content ({text!r})"
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

    # Into a new warehouse: the error, and no warehouse file appears (content refused because a
    # rollback removed it is refused only where a rollback did).
    if "rollback" not in CASES[name]:
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

def _expand(rules: list) -> list[tuple]:
    """The manifest's quarantine entries, one per row: a row given as [first, last] stands for
    every row of that range (thousands of repeated lines made at run time)."""
    out = []
    for table, row, rule, column in rules:
        first, last = (row, row) if isinstance(row, int) else row
        out += [(table, r, rule, column) for r in range(first, last + 1)]
    return out


def _check_warehouse(con, summary: IngestSummary, expect: dict) -> None:
    """The quarantine entries, meta_batches, raw_ rows and stored values of one load."""
    files = {f.table: f for f in summary.files}

    # The quarantine entries of this load, exactly (a multiset: no entry twice).
    batches = [f.batch_id for f in summary.files if not f.skipped]
    qu = fetch(con, "SELECT * FROM quarantine WHERE list_contains(?, batch_id)", [batches])
    got = sorted((r["table_name"], r["row_number"], r["rule"], r["column_name"]) for r in qu.iter_rows(named=True))
    want = sorted(_expand(expect.get("rules", [])))
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
        assert bad_rows.is_between(1, f.rows_read + f.rows_blank).all()  # row numbers count blank rows
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
    assert not stored_secrets(db, CASES[name].get("secrets", [])), "a planted identifier was stored"

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


def _secrets(name: str) -> list[str]:
    expect = CASES[name]["expect"]
    return [*CASES[name].get("secrets", []), *([expect["secret"]] if "secret" in expect else [])]


@pytest.mark.parametrize("name", [n for n in CASES if _secrets(n) or CASE_DIRS[n].parent == ADVERSARIAL])
def test_cli_ingest_and_validate_never_print_or_store_a_planted_identifier(name, tmp_path):
    """Every adversarial case (and every case that plants an identifier) through the command line:
    the exit code its kind implies, no traceback, one error line, and the planted identifiers in
    neither the output nor any column of the warehouse; for a load that plants identifiers, also
    after `validate` has run (validation is the slow part, so only where it can leak something)."""
    folder = build_export(name, tmp_path / "export")
    db = tmp_path / "w.duckdb"
    secrets = _secrets(name)
    if "rollback" in CASES[name]:  # the history the case is about: its priors, then the rollback
        load_prior(name, db, tmp_path)
    before = file_sha(db) if db.exists() else None
    res = CliRunner().invoke(app, ["ingest", str(folder), "--db", str(db)])
    kind = CASES[name]["expect"]["kind"]
    assert res.exit_code == (0 if kind == "load" else 1), res.output
    assert isinstance(res.exception, (SystemExit, type(None))), repr(res.exception)
    assert "Traceback" not in res.output
    output = res.output
    if kind != "load":
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
        assert (file_sha(db) if db.exists() else None) == before  # nothing created or changed
    elif secrets:
        res2 = CliRunner().invoke(app, ["validate", "--db", str(db)])
        assert "Traceback" not in res2.output and isinstance(res2.exception, (SystemExit, type(None)))
        output += res2.output  # (Result.output has no setter)
    assert not [s for s in secrets if s in output], "a planted identifier was printed"
    assert not stored_secrets(db, secrets), "a planted identifier was stored"
