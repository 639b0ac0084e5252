"""Reading one file of an export: once, streamed, into a Parquet file of text that DuckDB types.

No file is held in memory as a whole. :func:`read_text` streams a CSV (polars' reader, every
column as text) or a Parquet file (its values as text) into a scratch Parquet file, with
``_row_number`` (1-based, blank rows counted) and ``_c0_blank`` (the first column has no value: a
blank row, one with no value in any column, :func:`ketaoutcomes.ingest.text.drop_blank_rows`, has
none there, so only these rows are tested for being blank). Its columns are named by position
(``c0``, ``c1``, ...: a header may be anything). A second pass reads that file in batches for what
needs every value: the length of each value (:class:`ketaoutcomes.ingest.limits.ValueLengths`),
the PHI guard's candidate rows (:class:`ketaoutcomes.ingest.phi.PhiScan`: only rows a union
regex flags are kept) and the time-zone designators of timestamps
(:class:`ketaoutcomes.ingest.text.OffsetScan`). Typing, checks and the load then run in DuckDB on
the scratch file (:mod:`ketaoutcomes.ingest.typed`). Memory: a batch of rows at a time.

Line numbers: the line where a CSV row starts is the first data line plus the row number minus one
plus the line breaks inside the cells of the rows above it. Whether any cell may hold one is known
from the file's count of line ends (:meth:`ketaoutcomes.ingest.text.CsvText.breaks_in_cells_at_most`);
only then are the breaks counted, row by row, and only for the rows whose line is asked for
(:func:`line_numbers`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.ingest.errors import IngestError
from ketaoutcomes.ingest.limits import ValueLengths
from ketaoutcomes.ingest.phi import PhiAllowList, PhiFinding, PhiScan, header_labels, nonempty_rows
from ketaoutcomes.ingest.text import (
    BLANK_CHARS,
    LINE_NUMBER,
    ROW_NUMBER,
    CsvText,
    LineEndingError,
    OffsetScan,
    csv_source,
    parquet_text_exprs,
)
from ketaoutcomes.contract import TABLES
from ketaoutcomes.ingest.typed import present_sql

__all__ = ["BATCH_ROWS", "TextFile", "line_numbers", "read_text", "scratch_folder", "text_frame"]

#: Rows per batch of the second pass (and of :func:`text_frame`'s callers that stream).
BATCH_ROWS = 1 << 18
FIRST_BLANK = "_c0_blank"


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A new folder in the system's temporary folder for a read's scratch files, removed at the end.

    Removed with a few tries: when polars' streaming writer fails on a file it cannot read (a
    malformed CSV), its threads may still close their part of the scratch file just after the error
    has reached us, so a removal at once can find the folder not empty (seen once in 2,155 tests). A
    folder still there after the last try is left to the system's cleaning of its temporary folder
    rather than turning the error being reported, or a good load, into another one."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        for wait in (0.05, 0.2, 0.5, 1.0, 0.0):  # five tries, the pause after each
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                break
            time.sleep(wait)


@dataclass
class TextFile:
    """One file as read: where its text is (``parquet``) and what was learnt on the way."""

    path: Path
    parquet: Path
    headers: list[str]  # the header as written, trimmed (file order); column i is "c{i}" in ``parquet``
    is_csv: bool
    first_line: int | None  # the line of the first record (None for Parquet)
    rows_read: int = 0  # rows with a value (blank ones not counted)
    rows_blank: int = 0
    newlines: bool = False  # some cell may hold a line break (CSV: from the count of line ends)
    findings: list[PhiFinding] = field(default_factory=list)
    offsets: OffsetScan | None = None

    def ref(self, name: str) -> str | None:
        """The SQL column of header ``name`` in :meth:`source`, None when the file does not have it."""
        return f"c{self.headers.index(name)}" if name in self.headers else None

    def source(self) -> str:
        """SQL for the file's rows with a value (blank rows skipped), columns ``c0``... and ``_row_number``."""
        rows = f"SELECT * FROM read_parquet('{_sql_path(self.parquet)}')"
        if not self.rows_blank:
            return f"({rows})"
        # (AND: the cells are tested only on the rows whose first column is blank)
        blank = " AND ".join([FIRST_BLANK] + [f"{present_sql(f'c{i}')} IS NULL" for i in range(1, len(self.headers))])
        return f"({rows} WHERE NOT ({blank}))"


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _csv_header(head: bytes) -> list[str] | None:
    """The header row's names as written (polars renames duplicates, which would hide them)."""
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = head[: head.rfind(b"\n") + 1 or len(head)].decode("utf-8-sig", errors="replace")
    try:
        return next(csv.reader(io.StringIO(text)))
    except (csv.Error, StopIteration):
        return None


def _unreadable(path: Path, exc: BaseException, is_csv: bool) -> IngestError:
    # The reader's own message is not shown: it can quote the file's content.
    text = str(exc).lower()
    if is_csv and ("utf-8" in text or "utf8" in text or isinstance(exc, UnicodeDecodeError)):
        problem = "not UTF-8 encoded; re-export it as CSV in UTF-8"
    elif is_csv:
        problem = ("malformed CSV (for example an unterminated quote, or rows with more fields than the header); "
                   "check the file was not cut short or hand-edited into a broken state")
    else:
        problem = "not a complete Parquet file (truncated or corrupt); export it again"
    return IngestError(f"{path}: cannot be read ({type(exc).__name__}): {problem}")


def read_text(path: Path, scratch: Path, *, table: str, allow: PhiAllowList,
              check_lengths: bool = True) -> TextFile:
    """Stream ``path`` into ``scratch`` (a Parquet file of text, see the module's note) and scan it.

    ``table``: the contract table (or registry) the file holds, for the PHI guard and, for a table,
    the time zones of its timestamps; ``check_lengths``: hold every value to the limit of a line.

    Raises
    ------
    IngestError
        Empty, unreadable, not UTF-8, truncated, malformed; a header used twice or a reserved
        column name; a value longer than the limit (after the file was read through).
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: the file is empty (0 bytes); re-export it with a header row")
    is_csv = path.suffix.lower() == ".csv"
    if is_csv:
        try:
            csv_text = csv_source(path)
        except LineEndingError as exc:
            raise IngestError(f"{path}: {exc}") from None
        head = csv_text.head
        if b"\x00" in head:
            raise IngestError(f"{path}: not a UTF-8 text file (it has NUL bytes: UTF-16 or binary); "
                              "re-export it as CSV in UTF-8")
    try:
        if is_csv:
            # Every column as text: typing happens per row later, so one bad cell
            # quarantines one row instead of failing the file.
            source = csv_text.source if isinstance(csv_text.source, Path) else io.BytesIO(csv_text.source)
            lf = pl.scan_csv(source, infer_schema=False, encoding="utf8", raise_if_empty=True)
        else:
            lf = pl.scan_parquet(path)
            lf = lf.with_columns(parquet_text_exprs(lf.collect_schema()))
        names = lf.collect_schema().names()
        positional = [f"c{i}" for i in range(len(names))]
        lf = lf.rename(dict(zip(names, positional)))
        # (the first column only: testing every cell of every row for a blank row took a quarter of this pass)
        first_blank = _blank_cell(positional[0]) if positional else pl.lit(False)
        lf = lf.with_row_index(ROW_NUMBER, offset=1).with_columns(pl.col(ROW_NUMBER).cast(pl.Int64),
                                                                  first_blank.alias(FIRST_BLANK))
        lf.sink_parquet(scratch, compression="lz4", statistics=False)
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes the same clear error
        raise _unreadable(path, exc, is_csv) from None
    if is_csv:
        header = _csv_header(head)
        if header is not None and len(header) == len(names):
            names = header  # as written: polars renames duplicates, which would hide them
    stripped = [c.strip().lstrip("\ufeff").strip() for c in names]
    _check_header(path, stripped)
    # The line where the first record starts: after the header (and any line breaks in its names).
    first_line = csv_text.header_line + 1 + sum(n.count("\n") for n in names) if is_csv else None
    tf = TextFile(path, scratch, stripped, is_csv, first_line)
    _scan(tf, table, allow, check_lengths, csv_text if is_csv else None)
    return tf


def _check_header(path: Path, stripped: list[str]) -> None:
    seen: dict[str, list[int]] = {}
    for i, c in enumerate(stripped):
        seen.setdefault(c, []).append(i)
    dup = [at for at in seen.values() if len(at) > 1]
    if dup:
        labels = header_labels(stripped)
        shown = ", ".join(labels[at[0]] if not labels[at[0]].startswith("#") else
                          " and ".join(f"#{i + 1}" for i in at) for at in dup)
        raise IngestError(f"{path}: column(s) {shown} appear more than once in the header "
                          "(after trimming spaces; #N: the column at position N, its header not shown); "
                          "keep one of each")
    for reserved in (ROW_NUMBER, LINE_NUMBER):
        if reserved in stripped:
            raise IngestError(f"{path}: a column is named {reserved}, which is reserved; rename it")


def _blank_cell(column: str) -> pl.Expr:
    """The cell holds no value: null, empty, or white space only (:data:`BLANK_CHARS`)."""
    return pl.col(column).cast(pl.String).str.strip_chars(BLANK_CHARS).fill_null("") == ""


def _blank_row(tf: TextFile) -> pl.Expr:
    """The row holds no value in any column (:func:`ketaoutcomes.ingest.text.drop_blank_rows`)."""
    return pl.all_horizontal([pl.col(FIRST_BLANK)] + [_blank_cell(f"c{i}") for i in range(1, len(tf.headers))])


def _with_a_value(tf: TextFile) -> pl.LazyFrame:
    """The scratch file's rows with a value (blank rows skipped)."""
    lf = pl.scan_parquet(tf.parquet)
    return lf.filter(~_blank_row(tf)) if tf.rows_blank else lf


def batches(tf: TextFile, columns: Collection[str] | None = None) -> Iterator[pl.DataFrame]:
    """The file's rows with a value, a batch at a time: ``_row_number`` and its columns by header
    (``columns``: only these headers)."""
    wanted = [h for h in tf.headers if columns is None or h in columns]
    names = {f"c{tf.headers.index(h)}": h for h in wanted}
    lf = _with_a_value(tf).select(ROW_NUMBER, *names).rename(names)
    yield from lf.collect_batches(chunk_size=BATCH_ROWS)


def _scan(tf: TextFile, table: str, allow: PhiAllowList, check_lengths: bool, csv_text: CsvText | None) -> None:
    """The second pass: value lengths, PHI candidates, time zones; blank rows counted."""
    lf = pl.scan_parquet(tf.parquet)
    rows, first_blank = lf.select(pl.len(), pl.col(FIRST_BLANK).sum()).collect().row(0)
    # Only a row whose first column is blank can be blank: the rest of its cells are read for those only.
    tf.rows_blank = lf.filter(pl.col(FIRST_BLANK)).filter(_blank_row(tf)).select(pl.len()).collect().item() \
        if first_blank else 0
    tf.rows_read = rows - tf.rows_blank
    if csv_text is not None:
        tf.newlines = csv_text.breaks_in_cells_at_most(tf.first_line, rows) > 0
    phi = PhiScan(tf.headers, table=table, file=str(tf.path), allow=allow)
    lengths = ValueLengths(tf.headers) if check_lengths else None
    tf.offsets = OffsetScan(table) if table in TABLES else None
    for batch in batches(tf):
        if lengths is not None:
            lengths.add(batch)
        phi.add(batch)
        if tf.offsets is not None:
            tf.offsets.add(batch)
    if lengths is not None:
        lengths.check(tf.path, table if table in TABLES else None)

    def nonempty(column: str) -> int:
        return sum(nonempty_rows(b[column]) for b in batches(tf, [column]))

    tf.findings = phi.findings(nonempty)


def text_frame(tf: TextFile) -> pl.DataFrame:
    """The whole file as text (rows with a value): ``_row_number`` and its columns by header. For
    a small file (the patients table, a registry) or a test: this is the frame the reader avoids."""
    names = {f"c{i}": h for i, h in enumerate(tf.headers)}
    return _with_a_value(tf).select(ROW_NUMBER, *names).rename(names).collect()


def line_numbers(con: duckdb.DuckDBPyConnection, tf: TextFile, rows: pl.Series) -> pl.DataFrame:
    """``_row_number`` and ``_line_number`` (the line of the file where the row starts; null for
    Parquet) of ``rows``."""
    rows = rows.cast(pl.Int64).unique().sort()
    if tf.first_line is None:
        return pl.DataFrame({ROW_NUMBER: rows, LINE_NUMBER: pl.Series([None] * rows.len(), dtype=pl.Int64)})
    if not tf.newlines or not rows.len():
        return pl.DataFrame({ROW_NUMBER: rows, LINE_NUMBER: rows + (tf.first_line - 1)})
    # the line breaks inside each row's cells (a CRLF is one; a lone CR, content in a cell, none)
    breaks = " + ".join(f"coalesce(length(c{i}) - length(replace(c{i}, chr(10), '')), 0)"
                        for i in range(len(tf.headers))) or "0"
    con.register("_rows_in", pl.DataFrame({ROW_NUMBER: rows}).to_arrow())
    try:
        return pl.from_arrow(con.execute(
            f"SELECT {ROW_NUMBER}, CAST({LINE_NUMBER} AS BIGINT) AS {LINE_NUMBER} FROM ("
            f"SELECT {ROW_NUMBER}, {tf.first_line} + {ROW_NUMBER} - 1 + coalesce(sum({breaks}) OVER (ORDER BY "
            f"{ROW_NUMBER} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS {LINE_NUMBER} "
            f"FROM read_parquet('{_sql_path(tf.parquet)}')) SEMI JOIN _rows_in USING ({ROW_NUMBER}) "
            f"ORDER BY {ROW_NUMBER}").arrow())
    finally:
        con.unregister("_rows_in")
