"""What ingest refuses to read: no input may hang, exhaust or lock the warehouse.

Every check here runs before a file is parsed and ends in one line (:class:`IngestError`) naming the
file and the limit; the limits are :data:`ketaoutcomes.contract.LIMITS` (docs/import-format.md,
"Limits"):

* **only regular files** (:func:`check_regular_file`): a FIFO, socket, device, folder, dangling
  symbolic link or link loop named like a table or a registry is refused from its ``lstat``/``stat``,
  never opened (opening a FIFO blocks until a writer comes; reading a device may never end). A
  symbolic link to a regular file inside the export folder is followed; one that leads out of the
  folder is refused (the export must hold what is loaded). Files are opened non-blocking and checked
  again on the open handle (:func:`open_regular`), so a file swapped for a FIFO after the listing
  cannot block either;
* **no compressed data** (:func:`sniff`): gzip, zstd, zlib, bzip2, xz, zip, 7z and lz4 by their magic
  bytes, whatever the file is named (polars would decompress gzip, zlib and zstd silently: a 50 KB
  file became 1 GB in memory); Parquet bytes under a .csv name;
* **columns, lines and values** (:func:`check_csv_limits`, :func:`check_parquet_limits`): at most
  ``max_columns`` columns, no name over ``max_name_bytes``; no CSV line and no value over ``max_line_bytes``; no nested Parquet column
  and no DELTA_BYTE_ARRAY encoding (its size in memory cannot be bounded before decoding);
* **expansion and memory**: the size of a file as text in memory is estimated before it is read (for
  Parquet from its footer and its dictionaries, without decoding the values); more than
  ``max_expansion`` times its size on disk is refused (a decompression bomb), and so is an export whose
  files together need more memory than the limit (:func:`memory_limit`, ``$KETAOUTCOMES_MEMORY_LIMIT``,
  by default 80% of the machine's memory). The limit is DuckDB's memory limit during the load too, and
  running out of memory anyway is the same kind of one-line refusal (:class:`MemoryBudget`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import duckdb
import polars as pl

from ketaoutcomes.contract import LIMITS, MEMORY_LIMIT_ENV, TABLES, FileLimits
from ketaoutcomes.ingest.errors import IngestError

__all__ = [
    "MemoryBudget",
    "ValueLengths",
    "check_csv_limits",
    "check_parquet_limits",
    "check_regular_file",
    "check_small_file",
    "check_table_file",
    "check_values",
    "duckdb_threads",
    "file_kind",
    "human_bytes",
    "machine_memory",
    "memory_limit",
    "memory_limit_source",
    "open_regular",
    "sniff",
]

#: Bytes a cell costs in memory besides its text (a polars string view).
CELL_BYTES = 16
#: Bytes a number, date or boolean takes as text at most (a timestamp: 26).
NON_TEXT_BYTES = 26
#: A file under this much text is never refused as expanded (a header-only Parquet file is mostly footer).
EXPANSION_FLOOR = 1 << 20

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words ("a FIFO (named pipe)", "a folder", ...)."""
    return "a regular file" if stat.S_ISREG(mode) else _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; 1048576 -> '1 MiB'; 2000 -> '1.95 KiB' (three significant digits)."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            text = f"{n:,.0f}" if unit == "bytes" else f"{n:.3g}"
            return f"{text} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _vanished(path: Path) -> str:
    return (f"{path}: disappeared while the export was being read (moved or deleted by another program?); "
            "load the export again once it is complete; nothing was loaded")


def _not_regular(path: Path, what: str) -> str:
    if what.endswith("a folder"):
        fix = ("the import format takes one file per table (e.g. patients.csv or patients.parquet), not a folder "
               "of parts: combine the parts into one file")
    else:
        fix = "copy the data into a regular file of that name (reading a pipe, socket or device may never end)"
    return f"{path}: {what}, not a regular file; {fix}; nothing was loaded"


def check_regular_file(path: Path, root: Path | None = None) -> os.stat_result:
    """The ``stat`` of ``path``, a regular file (or a symbolic link to one inside ``root``).

    Nothing is opened: a FIFO would block the open, a device could be read forever.

    Raises
    ------
    IngestError
        A FIFO, socket, device or folder; a dangling symbolic link or a link loop; a link to a file
        outside ``root``; a file that disappeared. One line naming the file and what it is.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise IngestError(_vanished(path)) from None
    except OSError as exc:
        raise IngestError(f"{path}: cannot be examined ({exc.strerror}); nothing was loaded") from None
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise IngestError(f"{path}: a symbolic link to {target}, which does not exist (a dangling link); put "
                              "the file itself in the export folder; nothing was loaded") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise IngestError(f"{path}: a symbolic link that loops (it leads back to itself); put the file itself "
                                  "in the export folder; nothing was loaded") from None
            raise IngestError(f"{path}: a symbolic link to {target}, which cannot be followed ({exc.strerror}); "
                              "put the file itself in the export folder; nothing was loaded") from None
        if not stat.S_ISREG(st.st_mode):
            raise IngestError(_not_regular(path, f"a symbolic link to {target}, {file_kind(st.st_mode)}"))
        if root is not None:
            real, folder = path.resolve(), Path(root).resolve()
            if not real.is_relative_to(folder):
                raise IngestError(
                    f"{path}: a symbolic link to {real}, outside the export folder; copy the file into the folder "
                    f"(cp -L), so that the export holds what is loaded; nothing was loaded")
    if not stat.S_ISREG(st.st_mode):
        raise IngestError(_not_regular(path, file_kind(st.st_mode)))
    return st


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading in binary, after :func:`check_regular_file`; non-blocking, and checked
    again on the open handle (a file swapped for a FIFO or another file after the check is refused)."""
    path = Path(path)
    st = check_regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise IngestError(_vanished(path)) from None
    except PermissionError:
        raise IngestError(f"{path}: cannot be read: permission denied; let the user who runs ingest read it "
                          f"(chmod a+r {path.name}) and load again; nothing was loaded") from None
    except OSError as exc:
        raise IngestError(f"{path}: cannot be opened ({exc.strerror}); nothing was loaded") from None
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise IngestError(f"{path}: replaced by {file_kind(now.st_mode)} while the export was being read; load the "
                          "export again once nothing else is writing to it; nothing was loaded")
    return os.fdopen(fd, "rb")


# ---------------------------------------------------------------------------
# What the bytes are
# ---------------------------------------------------------------------------

_COMPRESSED = (
    (b"\x1f\x8b", "gzip", "gunzip"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"\xfd7zXZ\x00", "xz", "unxz"),
    (b"PK\x03\x04", "zip", "unzip"),
    (b"PK\x05\x06", "zip", "unzip"),
    (b"7z\xbc\xaf\x27\x1c", "7z", "7z x"),
    (b"\x04\x22\x4d\x18", "lz4", "unlz4"),
)
_ZLIB_SECOND = (0x01, 0x5E, 0x9C, 0xDA)


def sniff(head: bytes) -> tuple[str, str] | None:
    """(format, the command that undoes it) when ``head`` starts like compressed data, ("parquet", "")
    for Parquet bytes, else None. zlib is recognised as polars does (0x78 then 0x01, 0x5e, 0x9c, 0xda:
    polars would inflate it)."""
    for magic, fmt, command in _COMPRESSED:
        if head.startswith(magic):
            return fmt, command
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bzip2", "bunzip2"
    if len(head) >= 2 and head[0] == 0x78 and head[1] in _ZLIB_SECOND:
        return "zlib", "a zlib decompressor"
    if head.startswith(b"PAR1"):
        return "parquet", ""
    return None


def _refuse_sniffed(path: Path, head: bytes) -> None:
    found = sniff(head)
    if found is None:
        return
    fmt, command = found
    if fmt == "parquet":
        if path.suffix.lower() == ".parquet":
            return
        raise IngestError(f"{path}: holds Parquet data, not CSV; name it {path.stem}.parquet; nothing was loaded")
    raise IngestError(f"{path}: {fmt}-compressed data; decompress it first ({command}) and load the plain file "
                      "(compressed files are not read: their size once decompressed is unknown until it is too "
                      "late); nothing was loaded")


# ---------------------------------------------------------------------------
# CSV: header, lines, values
# ---------------------------------------------------------------------------

def _too_many_columns(path: Path, n: int, limits: FileLimits) -> IngestError:
    return IngestError(f"{path}: {n:,} columns; the limit is {limits.max_columns:,} columns per file (the import "
                       "format has at most 14; other columns are not stored): drop the columns that are not in "
                       "docs/import-format.md; nothing was loaded")


def _long_line(path: Path, line: int, limits: FileLimits) -> IngestError:
    return IngestError(f"{path}: line {line:,} is longer than {human_bytes(limits.max_line_bytes)}, the limit of one "
                       "line (a missing line break, or binary data?); fix the file; nothing was loaded")


def _too_expanded(path: Path, text: int, size: int, limits: FileLimits, why: str, at_least: bool) -> IngestError:
    return IngestError(
        f"{path}: would take {'at least' if at_least else 'about'} {human_bytes(text)} in memory as text, "
        f"{text / max(size, 1):,.0f}{'+' if at_least else ''} times its "
        f"{human_bytes(size)} on disk; the limit is {limits.max_expansion:,} times ({why}); nothing was loaded")


def _check_expansion(path: Path, text: int, size: int, limits: FileLimits, why: str, at_least: bool = False) -> None:
    if text > limits.max_expansion * max(size, 1) and text > EXPANSION_FLOOR:
        raise _too_expanded(path, text, size, limits, why, at_least)


def _header_names(first_line: bytes) -> list[str]:
    text = first_line.decode("utf-8", errors="replace").lstrip("\ufeff")
    try:
        return next(csv.reader(io.StringIO(text)))
    except (csv.Error, StopIteration):
        return text.split(",")


def _check_names(path: Path, names: list[str], limits: FileLimits) -> None:
    """At most ``max_columns`` names, none longer than ``max_name_bytes`` (named by position: a long
    "name" is usually data swallowed by a stray quote, or an identifier)."""
    if len(names) > limits.max_columns:
        raise _too_many_columns(path, len(names), limits)
    for position, name in enumerate(names, start=1):
        n = len(name.encode("utf-8", errors="replace"))
        if n > limits.max_name_bytes:
            raise IngestError(f"{path}: the name of column {position} is {n:,} bytes long; the limit is "
                              f"{limits.max_name_bytes:,} bytes (a quote or line break missing in the header?); fix "
                              "the header; nothing was loaded")


def check_csv_limits(path: Path, limits: FileLimits = LIMITS) -> int:
    """Refuse a CSV file that is compressed (or Parquet), has too many columns or a line too long;
    return the bytes it takes in memory as text (its size plus a cell's overhead per cell).

    One pass over the file in blocks no longer than a line may be, counting line breaks (``\\n``, or
    ``\\r`` in a file with CR-only line endings): a too-long line always spans a block boundary."""
    path = Path(path)
    block = min(1 << 20, limits.max_line_bytes)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        _refuse_sniffed(path, fh.read(16))
        fh.seek(0)
        breaks = 0  # line breaks so far
        run = 0  # bytes since the last line break
        header = bytearray()
        columns = None
        brk = None
        last = b""
        while chunk := fh.read(block):
            if brk is None:  # CR-only line endings if the first block has \r but no \n
                brk = b"\r" if b"\r" in chunk and b"\n" not in chunk else b"\n"
            first = chunk.find(brk)
            if first < 0:
                run += len(chunk)
                if columns is None:
                    header += chunk
                if run > limits.max_line_bytes + 1:  # + 1: a CRLF's \r may end this block
                    raise _long_line(path, breaks + 1, limits)
                last = chunk[-1:]
                continue
            # the length of the line ending here, without its line break (a CRLF's \r is part of it)
            cr = (chunk[first - 1:first] if first else last) == b"\r" and brk == b"\n"
            if run + first - cr > limits.max_line_bytes:
                raise _long_line(path, breaks + 1, limits)
            if columns is None:
                header += chunk[:first]
                names = _header_names(bytes(header))
                _check_names(path, names, limits)
                columns = len(names)
            breaks += chunk.count(brk)
            run = len(chunk) - chunk.rfind(brk) - 1
            last = chunk[-1:]
    if run - (last == b"\r") > limits.max_line_bytes:  # the last line, without a line break
        raise _long_line(path, breaks + 1, limits)
    if columns is None:  # one line, no line break
        names = _header_names(bytes(header))
        _check_names(path, names, limits)
        columns = len(names)
    rows = max(breaks - 1 + (1 if last and last != brk else 0), 0)
    text = size + rows * columns * CELL_BYTES
    _check_expansion(path, text, size, limits, "rows far shorter than the header: a damaged file?")
    return text


def _value_column(name: str, position: int, table: str | None) -> str:
    known = table is not None and name in TABLES[table].column_names
    return f"column {name}" if known else f"column {position} (not in the import format)"


class ValueLengths:
    """The longest value of each column of a file read in batches (:meth:`add`, in row order), and
    the first row over the limit; :meth:`check` is :func:`check_values` on them."""

    def __init__(self, columns: list[str], limits: FileLimits = LIMITS):
        self.columns = [c for c in columns if c != "_row_number"]
        self.limits = limits
        self.longest: dict[str, int | None] = dict.fromkeys(self.columns)
        self.first_row: dict[str, int | None] = dict.fromkeys(self.columns)
        self.rows = 0

    def add(self, frame: pl.DataFrame) -> None:
        cols = [c for c in self.columns if c in frame.columns and frame.schema[c] == pl.String]
        if not cols or frame.height == 0:
            return
        self.rows += frame.height
        for name, n in zip(cols, frame.select(pl.col(cols).str.len_bytes().max()).row(0)):
            if n is None:
                continue
            if self.longest[name] is None or n > self.longest[name]:
                self.longest[name] = n
            if n > self.limits.max_line_bytes and self.first_row[name] is None and "_row_number" in frame.columns:
                self.first_row[name] = frame.filter(pl.col(name).str.len_bytes() > self.limits.max_line_bytes)[
                    "_row_number"][0]

    def check(self, path: Path, table: str | None = None) -> None:
        for position, name in enumerate(self.columns, start=1):
            n = self.longest[name]
            if n is not None and n > self.limits.max_line_bytes:
                row = self.first_row[name]
                where = f"row {row:,}, " if row is not None else ""
                raise IngestError(
                    f"{path}: {where}{_value_column(name, position, table)}: a value of {human_bytes(n)}; the limit "
                    f"is {human_bytes(self.limits.max_line_bytes)} per value (a quote left open swallows the lines "
                    "after it); fix the file; nothing was loaded")


def check_values(frame: pl.DataFrame, path: Path, table: str | None = None, limits: FileLimits = LIMITS) -> None:
    """Refuse a file with a value longer than a line may be (in CSV, a quoted value can span lines:
    a quote left open swallows the rest of the file). The message names the row and the column (by
    position unless it is a column of the import format: a column name can be an identifier)."""
    cols = [c for c in frame.columns if c != "_row_number" and frame.schema[c] == pl.String]
    lengths = ValueLengths(cols, limits)
    lengths.add(frame)
    lengths.check(path, table)


# ---------------------------------------------------------------------------
# Parquet: footer, encodings, dictionaries
# ---------------------------------------------------------------------------

def _not_parquet(path: Path, exc: BaseException | None = None) -> IngestError:
    kind = f" ({type(exc).__name__})" if exc is not None else ""
    return IngestError(f"{path}: cannot be read{kind}: not a complete Parquet file (truncated or corrupt); "
                       "export it again")


def _same_file(fh: BinaryIO, path: Path) -> str:
    """A path that opens the file behind ``fh`` even if ``path`` was replaced since (Linux: /proc/self/fd)."""
    proc = Path(f"/proc/self/fd/{fh.fileno()}")
    return str(proc) if proc.exists() else str(path)


def check_parquet_limits(path: Path, table: str | None = None, limits: FileLimits = LIMITS) -> int:
    """Refuse a Parquet file with too many or nested columns, a DELTA_BYTE_ARRAY-encoded column, a value
    longer than the limit, or text far larger than the file; return the bytes it takes in memory as text.

    Read from the footer, then each text column as dictionary indices (memory: the dictionary and 4
    bytes a row), so a dictionary bomb (one 1 KB value, 4.5 million rows, 60 KB on disk) is refused
    before it is decoded into gigabytes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        _refuse_sniffed(path, fh.read(16))
        fh.seek(0)
        # pyarrow reads its own handle to the file just checked (a Python file object makes its I/O
        # threads call back into Python, which crashed the interpreter at exit now and then).
        source = _same_file(fh, path)
        try:
            meta = pq.ParquetFile(source).metadata
            schema = meta.schema.to_arrow_schema()
        except Exception as exc:  # noqa: BLE001 - any footer that does not parse is the same error
            raise _not_parquet(path, exc) from None
        n_cols = len(schema)
        if n_cols > limits.max_columns or meta.num_columns > limits.max_columns:
            raise _too_many_columns(path, max(n_cols, meta.num_columns), limits)
        names = schema.names
        _check_names(path, names, limits)
        for position, f in enumerate(schema, start=1):
            if pa.types.is_nested(f.type):
                where = f"column {f.name}" if table and f.name in TABLES[table].column_names \
                    else f"column {position} (not in the import format)"
                raise IngestError(f"{path}: {where} is a nested Parquet type ({f.type}); the import format takes flat "
                                  "columns (text, numbers, booleans, dates): drop it or flatten it; nothing was loaded")

        def is_text(t: pa.DataType) -> bool:
            t = t.value_type if pa.types.is_dictionary(t) else t
            return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) \
                or pa.types.is_large_binary(t) or pa.types.is_string_view(t) or pa.types.is_binary_view(t)

        text_cols = [i for i, f in enumerate(schema) if is_text(f.type)]
        rows = meta.num_rows
        fixed = rows * n_cols * CELL_BYTES + rows * (n_cols - len(text_cols)) * NON_TEXT_BYTES
        stored = 0
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            for c in range(group.num_columns):
                chunk = group.column(c)
                stored += chunk.total_uncompressed_size
                if "DELTA_BYTE_ARRAY" in chunk.encodings:
                    where = f"column {names[c]}" if table and names[c] in TABLES[table].column_names \
                        else f"column {c + 1} (not in the import format)"
                    raise IngestError(
                        f"{path}: {where} is stored in the DELTA_BYTE_ARRAY encoding, which ingest does not read (its "
                        "size in memory cannot be known before decoding); write the file with dictionary or plain "
                        "encoding (the default of pyarrow, pandas, polars, DuckDB and Spark); nothing was loaded")
        why = "a decompression bomb?"
        _check_expansion(path, fixed + stored, size, limits, why, at_least=True)
        text = fixed
        try:
            reader = pq.ParquetFile(source, read_dictionary=[names[i] for i in text_cols])
            for rg in range(meta.num_row_groups):
                for i in text_cols:
                    for arr in reader.reader.read_row_group(rg, column_indices=[i]).column(0).chunks:
                        if pa.types.is_dictionary(arr.type):
                            lengths = pc.binary_length(arr.dictionary)
                            total = pc.sum(pc.take(lengths, arr.indices)).as_py() or 0
                        else:
                            lengths = pc.binary_length(arr)
                            total = pc.sum(lengths).as_py() or 0
                        longest = pc.max(lengths).as_py() or 0
                        if longest > limits.max_line_bytes:
                            where = f"column {names[i]}" if table and names[i] in TABLES[table].column_names \
                                else f"column {i + 1} (not in the import format)"
                            raise IngestError(
                                f"{path}: {where}: a value of {human_bytes(longest)}; the limit is "
                                f"{human_bytes(limits.max_line_bytes)} per value; nothing was loaded")
                        text += total
                        _check_expansion(path, text, size, limits, why, at_least=True)
        except (IngestError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a page that does not decode: the file is damaged
            raise _not_parquet(path, exc) from None
    return text


def check_table_file(path: Path, table: str | None = None, limits: FileLimits = LIMITS) -> int:
    """:func:`check_csv_limits` or :func:`check_parquet_limits` by the file's suffix: the bytes it takes in
    memory as text."""
    if Path(path).suffix.lower() == ".parquet":
        return check_parquet_limits(path, table, limits)
    return check_csv_limits(path, limits)


def check_small_file(path: Path, root: Path | None = None, limits: FileLimits = LIMITS) -> None:
    """arms.csv, instruments.csv, phi_allowlist.toml: a regular file (:func:`check_regular_file`), not
    compressed, at most ``max_small_file_bytes`` (a few rows each)."""
    path = Path(path)
    check_regular_file(path, root)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        _refuse_sniffed(path, fh.read(16))
    if size > limits.max_small_file_bytes:
        raise IngestError(f"{path}: {human_bytes(size)}, more than the {human_bytes(limits.max_small_file_bytes)} "
                          "this file may be (it holds a few rows); is it the right file? nothing was loaded")
    if path.suffix.lower() == ".csv":
        check_csv_limits(path, limits)


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory() -> int | None:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower (None if unknown)."""
    try:
        total: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    for name in _CGROUP_LIMITS:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[kmgt]i?b|b)\s*$", re.IGNORECASE)


def memory_limit(env: Mapping[str, str] | None = None, limits: FileLimits = LIMITS) -> int | None:
    """Bytes an ingest may use: ``$KETAOUTCOMES_MEMORY_LIMIT`` (``8GB``, ``512MiB``, ``50%`` of the
    machine's memory), else ``default_memory_share`` of :func:`machine_memory`; None if unknown.

    Raises
    ------
    IngestError
        The variable holds something that is not a size.
    """
    env = os.environ if env is None else env
    text = env.get(MEMORY_LIMIT_ENV, "").strip()
    if not text:
        total = machine_memory()
        return None if total is None else int(total * limits.default_memory_share)
    m = _SIZE.match(text)
    if m is None or float(m.group(1)) <= 0 or (m.group(2) == "%" and float(m.group(1)) > 100):
        raise IngestError(f"{MEMORY_LIMIT_ENV}={text!r} is not a memory size; write it like 8GB, 512MiB or 50% (of "
                          "this machine's memory)")
    number, unit = float(m.group(1)), m.group(2).lower()
    if unit == "%":
        total = machine_memory()
        if total is None:
            raise IngestError(f"{MEMORY_LIMIT_ENV}={text!r}: this machine's memory is unknown; give a size like 8GB")
        return int(total * number / 100)
    return int(number * _UNITS[unit])


def memory_limit_source(env: Mapping[str, str] | None = None, limits: FileLimits = LIMITS) -> str:
    """Where :func:`memory_limit` comes from, as a message says it: the variable as set, or the default."""
    env = os.environ if env is None else env
    text = env.get(MEMORY_LIMIT_ENV, "").strip()
    if text:
        return f"{MEMORY_LIMIT_ENV}={text}"
    return f"the default, {limits.default_memory_share:.0%} of this machine's memory"


@dataclass
class MemoryBudget:
    """The memory of one ingest: the files read so far as text, against :func:`memory_limit`.

    Use :meth:`guard` around the load: running out of memory anyway (DuckDB's limit, Python's or
    Arrow's ``MemoryError``) and a file that disappears while it is read become a one-line
    :class:`IngestError` naming the file being read or checked (:attr:`current`)."""

    limit: int | None
    #: Where the limit comes from, for the messages ("KETAOUTCOMES_MEMORY_LIMIT=8GB", or the default).
    source: str = ""
    limits: FileLimits = LIMITS
    text: int = 0
    current: Path | None = None
    files: list[tuple[str, int]] = field(default_factory=list)

    def admit(self, path: Path, text_bytes: int) -> None:
        """Count one more file held in memory; refuse the export when they need more than the limit."""
        self.current = Path(path)
        self.text += text_bytes
        self.files.append((Path(path).name, text_bytes))
        need = int(self.text * self.limits.memory_per_text_byte)
        if self.limit is not None and need > self.limit:
            held = ", ".join(f"{n} {human_bytes(b)}" for n, b in self.files)
            raise IngestError(
                f"{path}: the export needs about {human_bytes(need)} of memory to load (its files as text: {held}; "
                f"about {self.limits.memory_per_text_byte:g} times that while checking), more than the limit of "
                f"{human_bytes(self.limit)}{self._source()}; set {MEMORY_LIMIT_ENV} higher (e.g. {MEMORY_LIMIT_ENV}="
                f"{-(-need // 1024**3)}GiB) if the machine has the memory; nothing was loaded")

    def configure(self, con: duckdb.DuckDBPyConnection) -> None:
        """Give DuckDB the same limit (it spills to disk, or fails with an out-of-memory error)."""
        if self.limit is not None:
            con.execute(f"SET memory_limit = '{max(self.limit, 1 << 20)}B'")

    def _out_of_memory(self, detail: str) -> IngestError:
        where = f"{self.current}: " if self.current is not None else ""
        limit = human_bytes(self.limit) if self.limit is not None else "none set"
        return IngestError(f"{where}ran out of memory while loading ({detail}; the limit is {limit}{self._source()}); "
                           f"set {MEMORY_LIMIT_ENV} higher if the machine has the memory; nothing was loaded")

    def _source(self) -> str:
        return f" ({self.source})" if self.source else ""

    @contextlib.contextmanager
    def guard(self) -> Iterator[MemoryBudget]:
        try:
            yield self
        except duckdb.OutOfMemoryException:
            raise self._out_of_memory("DuckDB") from None
        except MemoryError as exc:
            raise self._out_of_memory(type(exc).__name__) from None
        except FileNotFoundError as exc:
            if self.current is not None and exc.filename is not None and Path(exc.filename) == self.current:
                raise IngestError(_vanished(self.current)) from None
            raise
        except PermissionError as exc:
            if self.current is not None and exc.filename is not None and Path(exc.filename) == self.current:
                raise IngestError(f"{self.current}: cannot be read: permission denied; let the user who runs ingest "
                                  "read it and load again; nothing was loaded") from None
            raise


@contextlib.contextmanager
def duckdb_threads(con: duckdb.DuckDBPyConnection, n: int | None) -> Iterator[None]:
    """DuckDB's ``threads`` set to ``n`` for the block (unchanged when None), and back after it."""
    if n is None:
        yield
        return
    was = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.execute(f"SET threads = {int(n)}")
    try:
        yield
    finally:
        with contextlib.suppress(duckdb.Error):  # (an invalidated connection: its error is the one to see)
            con.execute(f"SET threads = {int(was)}")
