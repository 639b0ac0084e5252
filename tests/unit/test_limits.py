"""Ingest's limits (src/ketaoutcomes/ingest/limits.py): only regular files, never opened when they are
not; no compressed data; columns, line and value length; expansion and memory. Each is a one-line
IngestError naming the file and the limit. The corpus (tests/adversarial/limit_*) runs the same
classes end to end; these tests pin the edges (exactly at a limit, one byte over, a line across
read blocks, CR-only line endings) and what the corpus cannot make (a file that vanishes or turns
into a FIFO while it is read, no read permission, a memory limit, DuckDB running out of memory)."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import signal
import socket
import stat
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import ketaoutcomes.ingest.load as load_module
import ketaoutcomes.pipeline as pipeline_module
from ketaoutcomes.cli import app
from ketaoutcomes.contract import LIMITS, MEMORY_LIMIT_ENV, FileLimits
from ketaoutcomes.ingest import IngestError, ingest_export
from ketaoutcomes.ingest.limits import (
    MemoryBudget,
    check_csv_limits,
    check_parquet_limits,
    check_regular_file,
    check_values,
    human_bytes,
    machine_memory,
    memory_limit,
    memory_limit_source,
    open_regular,
    sniff,
)
from ketaoutcomes.warehouse import write_session
from tests.conftest import write_export

WHEN = dt.datetime(2026, 1, 1)


@pytest.fixture(autouse=True)
def _no_hang():
    """Opening a FIFO blocks: a test that does so fails after 60 s instead of hanging the suite."""
    def _alarm(signum, frame):
        raise TimeoutError("blocked for 60 s: something opened a FIFO?")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------
# Only regular files
# ---------------------------------------------------------------------------

def _make(kind: str, folder: Path, name: str = "patients.csv") -> Path:
    path = folder / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(name)
        finally:
            os.chdir(cwd)
    elif kind == "folder":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to(folder / "missing.csv")
    elif kind == "loop":
        path.symlink_to(name)
    elif kind == "two-link loop":
        (folder / "b.csv").symlink_to(name)
        path.symlink_to("b.csv")
    elif kind == "device":
        path.symlink_to("/dev/null")
    elif kind == "link to a folder":
        (folder / "parts").mkdir()
        path.symlink_to("parts")
    elif kind == "link to a FIFO":
        os.mkfifo(folder / "pipe")
        path.symlink_to("pipe")
    return path


@pytest.mark.parametrize("kind,says", [
    ("fifo", "a FIFO (named pipe), not a regular file"),
    ("socket", "a socket, not a regular file"),
    ("folder", "a folder, not a regular file"),
    ("dangling", "which does not exist (a dangling link)"),
    ("loop", "a symbolic link that loops"),
    ("two-link loop", "a symbolic link that loops"),
    ("device", "a character device, not a regular file"),
    ("link to a folder", "a folder, not a regular file"),
    ("link to a FIFO", "a FIFO (named pipe), not a regular file"),
])
def test_a_file_that_is_not_regular_is_refused_by_its_stat_without_opening_it(tmp_path, monkeypatch, kind, says):
    path = _make(kind, tmp_path)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    with pytest.raises(IngestError) as info:
        check_regular_file(path, tmp_path)
    msg = one_line(info.value)
    assert msg.startswith(f"{path}: ") and says in msg, msg
    assert opened == [], "nothing may be opened to find out what a file is"


def test_a_symbolic_link_inside_the_export_is_followed_one_outside_is_refused(tmp_path):
    export, outside = tmp_path / "export", tmp_path / "elsewhere"
    (export / "parts").mkdir(parents=True)
    outside.mkdir()
    (export / "parts" / "p.csv").write_text("a\n1\n")
    (outside / "p.csv").write_text("a\n1\n")
    (export / "inside.csv").symlink_to("parts/p.csv")
    (export / "outside.csv").symlink_to(outside / "p.csv")
    assert stat.S_ISREG(check_regular_file(export / "inside.csv", export).st_mode)
    with pytest.raises(IngestError, match="outside the export folder; copy the file into the folder"):
        check_regular_file(export / "outside.csv", export)
    # Without a folder to stay in (open_regular, the hash), a link to a regular file is a regular file.
    assert stat.S_ISREG(check_regular_file(export / "outside.csv").st_mode)


def test_a_file_replaced_by_a_fifo_after_the_check_is_refused_on_the_open_handle(tmp_path, monkeypatch):
    """The window between stat and open: open_regular opens non-blocking and compares the handle."""
    path = tmp_path / "patients.csv"
    path.write_text("a\n1\n")
    before = os.stat(path)
    path.unlink()
    os.mkfifo(path)
    monkeypatch.setattr("ketaoutcomes.ingest.limits.check_regular_file", lambda p, root=None: before)
    with pytest.raises(IngestError, match="replaced by a FIFO"):
        open_regular(path)


def test_a_file_replaced_by_another_file_after_the_check_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "patients.csv"
    path.write_text("a\n1\n")
    before = os.stat(path)
    path.rename(tmp_path / "old.csv")  # kept: its inode is not reused
    path.write_text("b\n2\n")
    monkeypatch.setattr("ketaoutcomes.ingest.limits.check_regular_file", lambda p, root=None: before)
    with pytest.raises(IngestError, match="replaced by a regular file while the export was being read"):
        open_regular(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode: chmod 000 cannot be tested as root "
                    "(the next test covers the same path with the open refused)")
def test_a_file_without_read_permission_is_one_line(tmp_path):
    folder = write_export(tmp_path / "export")
    (folder / "courses.csv").chmod(0)
    with pytest.raises(IngestError) as info, write_session(tmp_path / "w.duckdb") as con:
        ingest_export(con, folder, loaded_at=WHEN)
    assert "courses.csv: cannot be read: permission denied" in one_line(info.value)


def test_permission_denied_on_open_is_one_line_also_as_root(tmp_path, monkeypatch):
    folder = write_export(tmp_path / "export")
    real_open = os.open

    def deny(path, flags, *a, **k):
        if str(path).endswith("courses.csv"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(IngestError) as info, write_session(tmp_path / "w.duckdb") as con:
        ingest_export(con, folder, loaded_at=WHEN)
    assert "courses.csv: cannot be read: permission denied" in one_line(info.value)
    assert not (tmp_path / "w.duckdb").exists()


def test_a_file_that_vanishes_between_listing_and_reading_is_one_line(tmp_path, monkeypatch):
    folder = write_export(tmp_path / "export")
    listed = load_module.find_export_files

    def list_then_delete(export_dir):
        found = listed(export_dir)  # the listing ingest works from; then the file goes
        (Path(export_dir) / "sessions.csv").unlink(missing_ok=True)
        monkeypatch.setattr(load_module, "find_export_files", lambda d: found)
        return found

    monkeypatch.setattr(load_module, "find_export_files", list_then_delete)
    with pytest.raises(IngestError) as info, write_session(tmp_path / "w.duckdb") as con:
        ingest_export(con, folder, loaded_at=WHEN)
    assert "sessions.csv: disappeared while the export was being read" in one_line(info.value)


def test_a_file_that_vanishes_after_its_check_while_it_is_parsed_is_one_line(tmp_path, monkeypatch):
    """The parser's own FileNotFoundError for the file being read becomes the same refusal."""
    folder = write_export(tmp_path / "export")
    checked = load_module.check_table_file

    def check_then_delete(path, table=None):
        size = checked(path, table)
        if table == "adverse_events":
            Path(path).unlink()
        return size

    monkeypatch.setattr(load_module, "check_table_file", check_then_delete)
    with pytest.raises(IngestError) as info, write_session(tmp_path / "w.duckdb") as con:
        ingest_export(con, folder, loaded_at=WHEN)
    assert "adverse_events.csv: disappeared while the export was being read" in one_line(info.value)


def test_cli_refuses_a_fifo_before_taking_the_writer_lock(tmp_path, monkeypatch):
    """Into a warehouse that exists: the folder is checked before write_session, so a FIFO named
    like a table or a registry never keeps the writer lock (nor blocks at all)."""
    db = tmp_path / "w.duckdb"
    with write_session(db) as con:
        ingest_export(con, write_export(tmp_path / "first"), loaded_at=WHEN)
    for name in ("patients.csv", "arms.csv", "phi_allowlist.toml"):
        folder = write_export(tmp_path / name.replace(".", "_"))
        (folder / name).unlink(missing_ok=True)
        os.mkfifo(folder / name)

        def no_lock(*a, **k):
            raise AssertionError("the writer lock was taken")

        monkeypatch.setattr(pipeline_module, "write_session", no_lock)
        res = CliRunner().invoke(app, ["ingest", str(folder), "--db", str(db)])
        monkeypatch.undo()
        assert res.exit_code == 1, res.output
        lines = [x for x in res.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and f"{name}: a FIFO (named pipe), not a regular file" in lines[0], res.stderr


def test_report_with_an_export_whose_arms_csv_is_a_fifo_does_not_hang(tmp_path):
    """report --export reads the export's registries before any step (the study check): not a FIFO's."""
    folder = write_export(tmp_path / "export")
    os.mkfifo(folder / "arms.csv")
    res = CliRunner().invoke(app, ["report", "--export", str(folder), "--db", str(tmp_path / "w.duckdb"),
                                   "--out", str(tmp_path / "reports")])
    assert res.exit_code == 1, res.output
    lines = [x for x in res.stderr.splitlines() if x.strip() and x.startswith("error:")]
    assert len(lines) == 1 and "arms.csv: a FIFO (named pipe)" in lines[0], res.stderr


# ---------------------------------------------------------------------------
# Compressed data and Parquet by their magic bytes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("head,fmt", [
    (gzip.compress(b"a,b\n1,2\n", mtime=0), "gzip"),  # mtime 0: the same bytes (and test id) in every process
    (b"\x28\xb5\x2f\xfd\x20\x08", "zstd"),
    (b"BZh91AY&SY\x00", "bzip2"),
    (b"\xfd7zXZ\x00\x00", "xz"),
    (b"PK\x03\x04\x14\x00", "zip"),
    (b"PK\x05\x06\x00\x00", "zip"),
    (b"7z\xbc\xaf\x27\x1c\x00", "7z"),
    (b"\x04\x22\x4d\x18\x64", "lz4"),
    (b"\x78\x9c\x4b\x4c", "zlib"),
    (b"\x78\xda\x4b\x4c", "zlib"),
    (b"PAR1\x15\x04", "parquet"),
])
def test_sniff_names_the_format(head, fmt):
    assert sniff(head)[0] == fmt


@pytest.mark.parametrize("head", [b"patient_id,site\n", b"x,y\n1,2\n", b"BZh is a name,x\n", b"xylophone,a\n",
                                  b"\xef\xbb\xbfpatient_id\n", b"PK,site\n", b""])
def test_sniff_leaves_text_alone(head):
    assert sniff(head) is None


def test_compressed_csv_is_refused_before_it_is_decompressed(tmp_path):
    path = tmp_path / "mood_scores.csv"
    path.write_bytes(gzip.compress(b"patient_id,assessed_at\n" + b"P1,2024-01-01\n" * 100_000))
    with pytest.raises(IngestError) as info:
        check_csv_limits(path)
    assert one_line(info.value) == (
        f"{path}: gzip-compressed data; decompress it first (gunzip) and load the plain file (compressed files "
        "are not read: their size once decompressed is unknown until it is too late); nothing was loaded")


# ---------------------------------------------------------------------------
# CSV: columns, lines, values, expansion
# ---------------------------------------------------------------------------

SMALL = FileLimits(max_columns=5, max_line_bytes=1000, max_expansion=1_000)


def test_columns_up_to_the_limit_load_one_more_is_refused(tmp_path):
    path = tmp_path / "patients.csv"
    path.write_text("a,b,c,d,e\n1,2,3,4,5\n")
    check_csv_limits(path, SMALL)
    path.write_text("a,b,c,d,e,f\n1,2,3,4,5,6\n")
    with pytest.raises(IngestError, match=r"6 columns; the limit is 5 columns per file"):
        check_csv_limits(path, SMALL)
    path.write_text('a,"b,c",d,e,f\n')  # a quoted comma is not a column
    check_csv_limits(path, SMALL)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("lines_before", [0, 1, 2, 3, 5])
def test_a_line_of_the_limit_passes_one_byte_more_is_refused_wherever_blocks_split_it(tmp_path, newline, lines_before):
    """Lines of 333 bytes first move the long line across the 1000-byte read blocks; a line's length
    does not count its line break; its line number is right with LF, CRLF and CR-only line endings."""
    path = tmp_path / "sessions.csv"
    filler = ("x" * 333 + newline) * lines_before
    path.write_bytes(("a" + newline + filler + "y" * 1000 + newline + "z" + newline).encode())
    check_csv_limits(path, SMALL)
    path.write_bytes(("a" + newline + filler + "y" * 1001 + newline + "z" + newline).encode())
    with pytest.raises(IngestError) as info:
        check_csv_limits(path, SMALL)
    assert f"line {2 + lines_before:,} is longer than 1,000 bytes" in one_line(info.value)
    assert "yyyy" not in str(info.value)


def test_a_long_last_line_without_a_line_break_and_a_long_header_are_refused(tmp_path):
    path = tmp_path / "courses.csv"
    path.write_text("a,b\n" + "1," + "y" * 1200)
    with pytest.raises(IngestError, match="line 2 is longer"):
        check_csv_limits(path, SMALL)
    path.write_text("a" * 1200 + "\n1\n")
    with pytest.raises(IngestError, match="line 1 is longer"):
        check_csv_limits(path, SMALL)


def test_many_short_cr_only_lines_are_not_one_long_line(tmp_path):
    path = tmp_path / "mood_scores.csv"
    path.write_bytes(b"a,b\r" + b"1,2\r" * 10_000)
    assert check_csv_limits(path, SMALL) == path.stat().st_size + 10_000 * 2 * 16


def test_text_size_counts_every_cell_and_short_rows_are_an_expansion(tmp_path):
    path = tmp_path / "mood_scores.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6")  # the last row has no line break
    assert check_csv_limits(path) == path.stat().st_size + 2 * 3 * 16
    # 1,000 columns and rows of one byte: polars pads each to 1,000 cells (16 bytes each).
    path.write_text(",".join(f"c{i}" for i in range(1000)) + "\n" + "x\n" * 200_000)
    with pytest.raises(IngestError) as info:
        check_csv_limits(path)
    assert "times its" in one_line(info.value) and "the limit is 1,000 times" in str(info.value)


def test_a_value_over_the_limit_is_named_by_row_and_column_never_by_its_content(tmp_path):
    frame = pl.DataFrame({"_row_number": [1, 2, 3], "ae_type": ["nausea", "y" * 1001, "x"],
                          "Jane Doe": ["a", "b", "z" * 1001]})
    with pytest.raises(IngestError) as info:
        check_values(frame, Path("adverse_events.csv"), "adverse_events", SMALL)
    assert "row 2, column ae_type: a value of 1,001 bytes" in one_line(info.value)
    with pytest.raises(IngestError) as info:
        check_values(frame.drop("ae_type"), Path("adverse_events.csv"), "adverse_events", SMALL)
    msg = one_line(info.value)
    assert "row 3, column 1 (not in the import format)" in msg and "Jane" not in msg and "zzz" not in msg
    check_values(frame.with_columns(pl.lit("ok").alias("ae_type"), pl.lit("ok").alias("Jane Doe")), Path("x.csv"),
                 "adverse_events", SMALL)


# ---------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------

def _parquet(path: Path, table: pa.Table, **options) -> Path:
    pq.write_table(table, path, **options)
    return path


def test_a_dictionary_bomb_is_refused_from_its_dictionary_without_decoding_it(tmp_path):
    """One 10 KB value, 2 million rows: 20 GB as text. Only the dictionary and the indices are read."""
    idx = pa.array([0] * 2_000_000, pa.int32())
    bomb = pa.table({"patient_id": pa.DictionaryArray.from_arrays(idx, pa.array(["P1"])),
                     "site": pa.DictionaryArray.from_arrays(idx, pa.array(["A" * 10_000]))})
    path = _parquet(tmp_path / "patients.parquet", bomb, compression="zstd")
    assert path.stat().st_size < 200_000
    with pytest.raises(IngestError) as info:
        check_parquet_limits(path, "patients")
    assert "times its" in one_line(info.value) and "a decompression bomb?" in info.value.args[0]


def test_a_parquet_file_of_ordinary_data_passes_and_its_text_size_counts_every_cell(tmp_path):
    table = pa.table({"patient_id": ["P1", "P2", None], "site": ["A", "B", "A"], "age_at_index": [40, 50, 60]})
    path = _parquet(tmp_path / "patients.parquet", table)
    # 3 rows x 3 cells x 16 + 1 number column x 3 x 26 + the text: P1 P2 A B A
    assert check_parquet_limits(path, "patients") == 3 * 3 * 16 + 3 * 26 + 4 + 3


@pytest.mark.parametrize("use_dictionary", [True, False])
def test_a_parquet_value_over_the_limit_is_refused(tmp_path, use_dictionary):
    table = pa.table({"patient_id": ["P1", "P2"], "site": ["A", "B" * 1001]})
    path = _parquet(tmp_path / "patients.parquet", table, use_dictionary=use_dictionary)
    with pytest.raises(IngestError, match=r"column site: a value of 1,001 bytes; the limit is 1,000 bytes per value"):
        check_parquet_limits(path, "patients", SMALL)


def test_parquet_nested_delta_and_wide_files_are_refused(tmp_path):
    base = {"patient_id": ["P1"], "site": ["A"]}
    nested = _parquet(tmp_path / "n.parquet", pa.table({**base, "Jane Doe": pa.array([{"a": 1}])}))
    with pytest.raises(IngestError) as info:
        check_parquet_limits(nested, "patients")
    assert "column 3 (not in the import format) is a nested Parquet type" in one_line(info.value)
    assert "Jane" not in str(info.value)
    delta = _parquet(tmp_path / "d.parquet", pa.table(base), use_dictionary=False,
                     column_encoding={"site": "DELTA_BYTE_ARRAY"})
    with pytest.raises(IngestError, match="column site is stored in the DELTA_BYTE_ARRAY encoding"):
        check_parquet_limits(delta, "patients")
    wide = _parquet(tmp_path / "w.parquet", pa.table({f"c{i}": ["1"] for i in range(6)}))
    with pytest.raises(IngestError, match="6 columns; the limit is 5 columns per file"):
        check_parquet_limits(wide, None, SMALL)


def test_a_damaged_parquet_file_is_the_usual_error(tmp_path):
    good = _parquet(tmp_path / "patients.parquet", pa.table({"patient_id": ["P1"] * 1000}))
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(IngestError, match="not a complete Parquet file"):
        check_parquet_limits(cut)
    text = tmp_path / "text.parquet"
    text.write_text("patient_id\nP1\n")
    with pytest.raises(IngestError, match="not a complete Parquet file"):
        check_parquet_limits(text)
    gz = tmp_path / "gz.parquet"
    gz.write_bytes(gzip.compress(good.read_bytes()))
    with pytest.raises(IngestError, match="gzip-compressed data"):
        check_parquet_limits(gz)


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("8GB", 8 * 10**9), ("8 gb", 8 * 10**9), ("512MiB", 512 * 2**20), ("1.5GiB", int(1.5 * 2**30)),
    ("100000B", 100_000), ("2tb", 2 * 10**12),
])
def test_memory_limit_reads_sizes(text, expected):
    assert memory_limit({MEMORY_LIMIT_ENV: text}) == expected


def test_memory_limit_defaults_to_a_share_of_the_machine_and_takes_percentages():
    total = machine_memory()
    assert total is not None and total > 0
    assert memory_limit({}) == int(total * LIMITS.default_memory_share)
    assert memory_limit({MEMORY_LIMIT_ENV: "50%"}) == int(total * 0.5)


@pytest.mark.parametrize("text", ["lots", "8", "0GB", "150%", "-1GB", "8 GBs"])
def test_a_memory_limit_that_is_not_a_size_is_one_line_naming_the_variable(text):
    with pytest.raises(IngestError) as info:
        memory_limit({MEMORY_LIMIT_ENV: text})
    assert one_line(info.value).startswith(f"{MEMORY_LIMIT_ENV}={text!r} is not a memory size; write it like 8GB")


def test_the_budget_refuses_when_the_files_held_need_more_than_the_limit():
    budget = MemoryBudget(limit=1000)
    budget.admit(Path("patients.csv"), 300)
    with pytest.raises(IngestError) as info:
        budget.admit(Path("sessions.csv"), 200)
    msg = one_line(info.value)
    assert msg.startswith("sessions.csv: the export needs about 1.22 KiB of memory to load")
    assert "patients.csv 300 bytes, sessions.csv 200 bytes" in msg and "more than the limit of 1,000 bytes" in msg
    assert f"set {MEMORY_LIMIT_ENV} higher" in msg


def test_an_export_over_the_memory_limit_is_refused_with_nothing_written_also_by_the_cli(tmp_path, monkeypatch):
    folder = write_export(tmp_path / "export")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2KB")
    with pytest.raises(IngestError) as info, write_session(tmp_path / "w.duckdb") as con:
        ingest_export(con, folder, loaded_at=WHEN)
    assert f"more than the limit of 1.95 KiB ({MEMORY_LIMIT_ENV}=2KB)" in one_line(info.value)  # 2,000 bytes
    assert not (tmp_path / "w.duckdb").exists()
    res = CliRunner().invoke(app, ["ingest", str(folder), "--db", str(tmp_path / "w.duckdb")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "the export needs about" in lines[0] and MEMORY_LIMIT_ENV in lines[0], res.stderr
    assert not (tmp_path / "w.duckdb").exists()


def test_a_bad_memory_limit_is_refused_by_the_cli_before_anything_is_created(tmp_path, monkeypatch):
    folder = write_export(tmp_path / "export")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "a lot")
    res = CliRunner().invoke(app, ["ingest", str(folder), "--db", str(tmp_path / "wh" / "w.duckdb")])
    assert res.exit_code == 1
    assert res.stderr.strip().startswith(f"error: {MEMORY_LIMIT_ENV}='a lot' is not a memory size")
    assert not (tmp_path / "wh").exists()


def test_the_memory_limit_is_duckdbs_during_the_load(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "300MiB")
    folder = write_export(tmp_path / "export")
    with write_session(tmp_path / "w.duckdb") as con:
        ingest_export(con, folder, loaded_at=WHEN)
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "300.0 MiB"


@pytest.mark.parametrize("error", [duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate 256 KiB"),
                                   MemoryError(), pa.ArrowMemoryError("malloc of size 1 GiB failed")])
def test_running_out_of_memory_anyway_is_one_line_naming_the_file(tmp_path, monkeypatch, error):
    folder = write_export(tmp_path / "export")

    def boom(con, source, refs, table, *args):  # typing sessions (in DuckDB) runs out of memory
        if table == "sessions":
            raise error
        return real(con, source, refs, table, *args)

    real = load_module.type_rows
    monkeypatch.setattr(load_module, "type_rows", boom)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "4GiB")
    with pytest.raises(IngestError) as info, write_session(tmp_path / "w.duckdb") as con:
        ingest_export(con, folder, loaded_at=WHEN)
    msg = one_line(info.value)
    assert msg.startswith(f"{folder / 'sessions.csv'}: ran out of memory while loading")
    assert f"the limit is 4 GiB ({MEMORY_LIMIT_ENV}=4GiB)" in msg and f"set {MEMORY_LIMIT_ENV} higher" in msg
    assert not (tmp_path / "w.duckdb").exists()


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 999, 1024, 1536, 1 << 20, 5 * 1024**3)] == \
        ["0 bytes", "999 bytes", "1 KiB", "1.5 KiB", "1 MiB", "5 GiB"]


def test_the_limits_are_documented_where_a_user_looks():
    """README, ingest --help and the data dictionary state the limits in force (docs/import-format.md is
    generated; a test elsewhere keeps it equal to the generator)."""
    from ketaoutcomes.docs import data_dictionary

    root = Path(__file__).resolve().parents[2]
    readme = " ".join(root.joinpath("README.md").read_text().split())
    dictionary = " ".join(data_dictionary().split())
    help_text = " ".join(CliRunner().invoke(app, ["ingest", "--help"], terminal_width=200).output.split())
    columns, line = f"{LIMITS.max_columns:,} columns", human_bytes(LIMITS.max_line_bytes)
    for text in (readme, dictionary, help_text):
        assert columns in text and line in text and MEMORY_LIMIT_ENV in text
        assert f"{LIMITS.default_memory_share:.0%} of the machine's" in text
    assert f"{LIMITS.max_expansion:,} times" in readme and f"{LIMITS.max_expansion:,} times" in dictionary
    assert f"about {LIMITS.memory_per_text_byte:g} times its files' size as text" in dictionary
    assert "## Limits" in dictionary and "(#limits)" in dictionary


def test_duckdb_out_of_memory_for_real_is_one_line(tmp_path, monkeypatch):
    """A limit the export's text fits in, but DuckDB cannot check its rows in: DuckDB's own
    out-of-memory error, turned into the refusal."""
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1MB")
    folder = write_export(tmp_path / "export")
    with pytest.raises(IngestError) as info, write_session(tmp_path / "w.duckdb") as con:
        ingest_export(con, folder, loaded_at=WHEN)
    msg = one_line(info.value)
    assert msg.startswith(f"{folder / 'patients.csv'}: ran out of memory while loading (DuckDB; the limit is 977 KiB "
                          f"({MEMORY_LIMIT_ENV}=1MB))"), msg
    assert not (tmp_path / "w.duckdb").exists()


def test_the_default_memory_limit_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    budget = MemoryBudget(limit=100, source=memory_limit_source())
    with pytest.raises(IngestError, match=r"more than the limit of 100 bytes \(the default, 80% of this machine's "
                                          r"memory\)"):
        budget.admit(Path("patients.csv"), 100)


def test_the_allow_list_and_registries_are_small_plain_files(tmp_path):
    from ketaoutcomes.ingest.limits import check_small_file

    allow = tmp_path / "phi_allowlist.toml"
    allow.write_text("[columns]\n" + '"patients.site" = "clinic code"\n' * 40_000)
    with pytest.raises(IngestError, match=r"phi_allowlist.toml: 1.\d+ MiB, more than the 1 MiB this file may be"):
        check_small_file(allow, tmp_path)
    allow.write_bytes(gzip.compress(b"[columns]\n"))
    with pytest.raises(IngestError, match="gzip-compressed data"):
        check_small_file(allow, tmp_path)
    arms = tmp_path / "arms.csv"
    arms.write_text(",".join(f"c{i}" for i in range(1001)) + "\n")
    with pytest.raises(IngestError, match="1,001 columns"):
        check_small_file(arms, tmp_path)


def test_a_column_name_over_the_limit_is_refused_by_position_in_csv_and_parquet(tmp_path):
    """The PHI guard's scan of a name grows with its length squared (50 KB: 65 s): names are bounded."""
    name = "N" * (LIMITS.max_name_bytes + 1)
    csv_path = tmp_path / "patients.csv"
    csv_path.write_text(f"patient_id,{'n' * LIMITS.max_name_bytes}\nP1,1\n")
    check_csv_limits(csv_path)
    csv_path.write_text(f"patient_id,{name}\nP1,1\n")
    with pytest.raises(IngestError) as info:
        check_csv_limits(csv_path)
    assert f"the name of column 2 is {LIMITS.max_name_bytes + 1:,} bytes long" in one_line(info.value)
    assert "NNNN" not in str(info.value)
    pq_path = _parquet(tmp_path / "patients.parquet", pa.table({"patient_id": ["P1"], name: ["1"]}))
    with pytest.raises(IngestError, match="the name of column 2 is 257 bytes long"):
        check_parquet_limits(pq_path, "patients")
