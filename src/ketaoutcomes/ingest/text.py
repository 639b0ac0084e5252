"""Conventions of the import format below the level of a cell: line endings, blank rows,
line numbers, and time-zone offsets in timestamps.

* **Line endings.** A CSV file's lines may end in LF, CRLF, or (classic Mac OS, Excel's
  "CSV (Macintosh)") a lone CR. LF and CRLF may be mixed (every reader agrees where those
  lines end). A file whose lines all end in a lone CR is read with its line ends turned into LF
  (:func:`csv_source`). A file that mixes lone CRs with LF or CRLF line ends is refused: a lone
  CR there may be a line end or a stray character in a cell, and guessing wrong splits or joins
  rows. Line breaks inside a quoted cell are the cell's content, whatever they are.
* **Blank rows.** A row with no value in any column (an empty line, a line of spaces or tabs or
  other white space, a line of nothing but commas, a row of nulls in Parquet) is not a row: it is skipped and
  counted in ``meta_batches.rows_blank``, not in rows read (:func:`drop_blank_rows`).
* **Row and line numbers.** ``row_number`` counts every record after the header, blank ones
  included, so row N of a file is line N + 1 in an editor (the header is line 1) and row N + 1
  in a spreadsheet, unless a quoted cell above it holds a line break; ``line_number`` is the
  line where the row starts, counted in the file itself (empty lines before the header and
  line breaks inside quoted cells included).
* **Time-zone offsets.** Timestamps are the clinic's local wall-clock time. A time written
  with a UTC offset (``2024-01-08T09:00:00+02:00``, ``-0500``, ``+01``) is stored as the
  wall-clock time written (09:00), the offset dropped and noted in ``meta_batches.notes``: the
  offset says in which zone that local time was read, and the day a dose or a rating fell on in
  the clinic is what the analysis counts from (course start dates are local dates). A time in
  UTC (``Z``, ``UTC``, ``GMT``, ``-00:00``) is not the clinic's local time, and a column that
  mixes times with and without an offset leaves it unknown which of them are local: both refuse
  the file (:func:`offset_problem`). An offset out of range (beyond -12:00..+14:00, or minutes
  past 59) makes the cell a ``type`` problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ketaoutcomes.contract import TABLES, WHITESPACE

__all__ = [
    "BLANK_CHARS",
    "CsvText",
    "LineEndingError",
    "OffsetError",
    "OffsetScan",
    "TZ_PATTERN",
    "LINE_NUMBER",
    "ROW_NUMBER",
    "csv_source",
    "drop_blank_rows",
    "offset_note",
    "offset_problem",
    "parquet_as_text",
    "parquet_text_exprs",
    "timestamp_sql",
    "with_line_numbers",
]

_CHUNK = 1 << 20
#: A record separator outside quotes, or a quoted field (which may hold any byte but an unpaired
#: quote). A quote opens a quoted field only at the start of a field.
_TOKENS = re.compile(rb'(?<![^,\r\n])"(?:[^"]|"")*"|\r\n|\r|\n')


class LineEndingError(ValueError):
    """A file mixes lone-CR line ends with LF or CRLF ones; the message says where (no content)."""


class OffsetError(ValueError):
    """A timestamp column holds UTC times, or mixes times with and without an offset."""


@dataclass(frozen=True)
class CsvText:
    """What to hand the CSV reader: the path itself, or the file's bytes with lone-CR line ends
    made LF; ``head`` is the first 64 KiB as the reader sees them; ``header_line`` is the line of
    the file where the header is (after any empty lines, which the reader skips); ``line_ends``:
    how many line ends the file has (CRLF, lone CR and lone LF, inside quoted cells too), and
    ``ends_with_line_end``: whether its last byte ends a line (see :meth:`breaks_in_cells_at_most`)."""

    source: Path | bytes
    head: bytes
    line_endings: str  # "LF", "CRLF", "LF and CRLF", "CR" or "none"
    header_line: int
    line_ends: int
    ends_with_line_end: bool

    def breaks_in_cells_at_most(self, first_line: int, records: int) -> int:
        """At most how many line breaks the cells of the file's ``records`` rows (blank ones too) hold,
        the first of them starting on line ``first_line``: every line end of the file is the end of
        a line before the first record, of a record (all but the last, which may end the file with
        none) or one inside a cell. 0 or less: no cell holds a line break, so each record starts on
        the line after the one before it."""
        return self.line_ends - (first_line - 1) - records + (0 if self.ends_with_line_end else 1)


def _counts(path: Path) -> tuple[int, int, int, bool]:
    """CRLF, lone CR and lone LF counts of a file, read in blocks (quotes not considered), and
    whether its last byte is a line end."""
    crlf = cr = lf = 0
    last_cr = False
    last = b""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            if last_cr and block.startswith(b"\n"):
                crlf += 1
            n_cr = block.count(b"\r")
            if n_cr:  # most files have no CR at all: one pass over the block instead of two
                crlf += block.count(b"\r\n")
                cr += n_cr
            lf += block.count(b"\n")
            last_cr = block.endswith(b"\r")
            last = block[-1:]
    return crlf, cr - crlf, lf - crlf, last in (b"\r", b"\n")


def _line_of(data: bytes, offset: int) -> int:
    """1-based line of ``offset``, counting every CRLF, lone CR and lone LF as one line end."""
    part = data[:offset]
    return part.count(b"\n") + part.count(b"\r") - part.count(b"\r\n") + 1


def _leading_empty_lines(head: bytes) -> int:
    text = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    m = re.match(rb"(?:\r\n|\n)*", text)
    return m.group().count(b"\n") if m else 0


def csv_source(path: Path) -> CsvText:
    """The CSV file as the reader should see it (see the module's note on line endings).

    Raises
    ------
    LineEndingError
        Lone-CR line ends mixed with LF or CRLF ones outside quoted cells.
    """
    path = Path(path)
    crlf, lone_cr, lone_lf, ends_line = _counts(path)
    line_ends = crlf + lone_cr + lone_lf
    kind = {(False, False): "none", (True, False): "LF", (False, True): "CRLF", (True, True): "LF and CRLF"}[
        (lone_lf > 0, crlf > 0)]
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    # The usual case, or not text at all (NUL bytes: UTF-16 or binary, which the reader refuses as such).
    if lone_cr == 0 or b"\x00" in head:
        return CsvText(path, head, kind, 1 + _leading_empty_lines(head), line_ends, ends_line)
    data = path.read_bytes()
    ends = {"\r": None, "\n": None, "\r\n": None}
    for m in _TOKENS.finditer(data):
        tok = m.group()
        if tok.startswith(b'"'):
            continue
        key = tok.decode()
        if ends[key] is None:
            ends[key] = m.start()
            if ends["\r"] is not None and (ends["\n"] is not None or ends["\r\n"] is not None):
                break  # mixed: enough to say where
    if ends["\r"] is None:  # every lone CR is inside a quoted cell: content, not a line end
        return CsvText(path, data[: 1 << 16], kind, 1 + _leading_empty_lines(data[: 1 << 16]), line_ends,
                       ends_line)
    others = [(o, k) for k, o in ends.items() if k != "\r" and o is not None]
    if others:
        other_at, other = min(others)
        raise LineEndingError(
            f"mixed line endings: line {_line_of(data, ends[chr(13)])} ends with a lone CR (classic Mac) but line "
            f"{_line_of(data, other_at)} with {'CRLF' if other == chr(13) + chr(10) else 'LF'}, so where rows end "
            "is ambiguous; save the file again with one kind of line ending (CRLF or LF)")
    # Every line end outside quotes is a lone CR: make those LF (quoted cells keep their bytes).
    converted = _TOKENS.sub(lambda m: m.group() if m.group().startswith(b'"') else b"\n", data)
    return CsvText(converted, converted[: 1 << 16], "CR", 1 + _leading_empty_lines(converted[: 1 << 16]), line_ends,
                   ends_line)


#: What a blank row may hold besides separators.
BLANK_CHARS = WHITESPACE
#: Columns ingest adds to a file's text frame (reserved: a file may not use these names).
ROW_NUMBER, LINE_NUMBER = "_row_number", "_line_number"


def with_line_numbers(frame: pl.DataFrame, first_line: int | None) -> pl.DataFrame:
    """``frame`` (every column of a file as text, plus ``_row_number``) with ``_line_number``: the
    line of the file where each record starts. ``first_line`` is the line of the first record
    (None for Parquet, which has no lines: the column is null)."""
    if first_line is None:
        return frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(LINE_NUMBER))
    texts = [pl.col(c).cast(pl.String) for c in frame.columns if c != ROW_NUMBER]
    inside = pl.sum_horizontal([t.str.count_matches("\n", literal=True).fill_null(0).cast(pl.Int64) for t in texts])
    return frame.with_columns((pl.lit(first_line, dtype=pl.Int64) + pl.col(ROW_NUMBER).cast(pl.Int64) - 1
                               + inside.cum_sum() - inside).alias(LINE_NUMBER))


def drop_blank_rows(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """``frame`` without its blank rows (no value in any column: every cell null, empty, or white
    space, :data:`ketaoutcomes.contract.WHITESPACE`), and how many there were. ``_row_number`` and
    ``_line_number`` are not values."""
    texts = [pl.col(c).cast(pl.String) for c in frame.columns if c not in (ROW_NUMBER, LINE_NUMBER)]
    if not texts:
        return frame, 0
    kept = frame.with_columns(
        pl.all_horizontal([t.str.strip_chars(BLANK_CHARS).fill_null("") == "" for t in texts]).alias("_blank")
    ).filter(~pl.col("_blank")).drop("_blank")
    return kept, frame.height - kept.height


# ---------------------------------------------------------------------------
# Time-zone offsets
# ---------------------------------------------------------------------------

#: A timestamp with a zone designator after its time of day: group 1 the wall-clock part, group 2
#: the designator (Z, UTC, GMT, or a signed offset +HH, +HHMM, +HH:MM). Case-insensitive.
TZ_PATTERN = r"^(.*\d:\d\d(?::\d\d(?:[.,]\d+)?)?)\s*([zZ]|[uU][tT][cC]|[gG][mM][tT]|[+-]\d\d(?::?\d\d)?)$"
_UTC = r"^([zZ]|[uU][tT][cC]|[gG][mM][tT]|-00(:?00)?)$"
#: A zone designator (or a zone name) left in a value that :data:`TZ_PATTERN` does not match: the
#: value does not convert (DuckDB would drop it without a word).
_STRAY = r"[+]|[zZ]$|\s[A-Za-z]"
#: The widest real UTC offsets.
_OFFSET_MIN_MINUTES, _OFFSET_MAX_MINUTES = -12 * 60, 14 * 60


def timestamp_sql(v: str, zoned: bool = True) -> str:
    """DuckDB SQL for the TIMESTAMP value of the (trimmed, possibly null) text ``v``: the
    wall-clock time written, a valid numeric offset dropped. A zone designator DuckDB would drop
    without a word is handled here, so an out-of-range offset does not convert.

    ``zoned=False``: the column has no cell with a zone designator (:meth:`OffsetScan.unzoned`:
    polars' :data:`TZ_PATTERN`, whose ``\\d`` and ``\\s`` are Unicode, matched none, so DuckDB's
    ASCII-only RE2 matches none either), so the first branch is left out; and the test for a stray
    designator, a regex, runs only on a value holding a letter or a '+' (without one it cannot
    match): the same values, without the two regexes per cell."""
    if not zoned:
        return (f"CASE WHEN (lower({v}) <> upper({v}) OR contains({v}, '+')) AND regexp_matches({v}, '{_STRAY}') "
                f"THEN NULL ELSE TRY_CAST({v} AS TIMESTAMP) END")
    wall = f"regexp_extract({v}, '{TZ_PATTERN}', 1)"
    zone = f"regexp_extract({v}, '{TZ_PATTERN}', 2)"
    sign = f"CASE WHEN starts_with({zone}, '-') THEN -1 ELSE 1 END"
    digits = f"replace(substr({zone}, 2), ':', '')"
    minutes = (f"{sign} * (CAST(substr({digits}, 1, 2) AS INTEGER) * 60 "
               f"+ coalesce(TRY_CAST(NULLIF(substr({digits}, 3, 2), '') AS INTEGER), 0))")
    valid = (f"(regexp_matches({zone}, '{_UTC}') OR (coalesce(TRY_CAST(NULLIF(substr({digits}, 3, 2), '') AS INTEGER), 0) < 60 "
             f"AND {minutes} BETWEEN {_OFFSET_MIN_MINUTES} AND {_OFFSET_MAX_MINUTES}))")
    # The wall-clock part must carry no zone of its own ('... +02:00 +03:00').
    plain = f"NOT regexp_matches({wall}, '{_STRAY}')"
    return (f"CASE WHEN regexp_matches({v}, '{TZ_PATTERN}') THEN "
            f"CASE WHEN {valid} AND {plain} THEN TRY_CAST({wall} AS TIMESTAMP) END "
            f"WHEN regexp_matches({v}, '{_STRAY}') THEN NULL "
            f"ELSE TRY_CAST({v} AS TIMESTAMP) END")


def _zones(frame: pl.DataFrame, column: str) -> tuple[pl.DataFrame, pl.Series]:
    """Of the present cells of ``column``: those with a zone designator (``_row_number``, ``_zone``
    and whether it is a valid offset, ``_valid``: a numeric one within -12:00..+14:00), and the
    ``_row_number`` of those without one (most cells: the offset is worked out for the others only)."""
    v = pl.col(column).str.strip_chars(WHITESPACE)
    zone = pl.col("_zone")
    digits = zone.str.slice(1).str.replace(":", "", literal=True)
    hours = digits.str.slice(0, 2).cast(pl.Int64, strict=False)
    mins = digits.str.slice(2, 2).replace("", None).cast(pl.Int64, strict=False).fill_null(0)
    total = pl.when(zone.str.starts_with("-")).then(-1).otherwise(1) * (hours * 60 + mins)
    z = frame.select("_row_number", v.alias("_v")).filter(pl.col("_v").fill_null("") != "").select(
        "_row_number", pl.col("_v").str.extract(TZ_PATTERN, 2).alias("_zone"))
    zoned = z.filter(zone.is_not_null()).with_columns(
        (zone.str.contains(r"^[+-]") & ~zone.str.contains(_UTC) & (mins < 60)
         & total.is_between(_OFFSET_MIN_MINUTES, _OFFSET_MAX_MINUTES)).fill_null(False).alias("_valid"))
    return zoned, (z if zoned.is_empty() else z.filter(zone.is_null()))["_row_number"]


#: Parquet time zones that are UTC itself (a UTC-normalised timestamp, not a local one).
_UTC_ZONES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Zulu", "Etc/Zulu", "Universal",
                        "Etc/Universal", "Etc/GMT0", "Etc/GMT+0", "Etc/GMT-0", "GMT0", "Greenwich", "Etc/Greenwich"})


def parquet_text_exprs(schema: Mapping[str, pl.DataType]) -> list[pl.Expr]:
    """Each column of a typed Parquet file (its ``schema``) as text. A timestamp with a time zone keeps
    it visible: a local zone as its offset (``+01:00``), UTC as ``Z`` (so :func:`offset_problem`
    refuses it as it does in CSV)."""
    out = []
    for name, dtype in schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime) and dtype.time_zone in _UTC_ZONES:
            out.append((col.dt.replace_time_zone(None).cast(pl.String) + "Z").alias(name))
        else:
            out.append(col.cast(pl.String))
    return out


def parquet_as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """A typed Parquet frame as text (:func:`parquet_text_exprs`)."""
    return frame.with_columns(parquet_text_exprs(frame.schema))


class OffsetScan:
    """The time-zone designators of ``table``'s timestamp columns, gathered a batch of rows at a time
    (:meth:`add`, text with ``_row_number``): the cells with a designator and a count of those
    without; :meth:`problem` and :meth:`note` are :func:`offset_problem` and :func:`offset_note`."""

    def __init__(self, table: str):
        self.table = table
        self.zoned: dict[str, list[pl.DataFrame]] = {}
        self.without: dict[str, tuple[int, int | None]] = {}

    def add(self, frame: pl.DataFrame) -> None:
        for col in TABLES[self.table].columns:
            if col.dtype != "TIMESTAMP" or col.name not in frame.columns:
                continue
            zoned, none = _zones(frame, col.name)
            self.zoned.setdefault(col.name, []).append(zoned)
            n, first = self.without.get(col.name, (0, None))
            if none.len():
                first = none.min() if first is None else min(first, none.min())
            self.without[col.name] = (n + none.len(), first)

    def unzoned(self) -> frozenset[str]:
        """The timestamp columns scanned in which no cell has a zone designator
        (:func:`timestamp_sql` types them with ``zoned=False``)."""
        return frozenset(name for name, parts in self.zoned.items() if not any(p.height for p in parts))

    def _zoned(self, column: str) -> pl.DataFrame:
        return pl.concat(self.zoned[column], how="vertical")

    def problem(self) -> str | None:
        for name in self.zoned:
            z = self._zoned(name)
            utc = z.filter(pl.col("_zone").str.contains(_UTC))
            if utc.height:
                return (f"column {name} holds times in UTC (Z, UTC, GMT or -00:00; {utc.height:,} row(s), first row "
                        f"{utc['_row_number'].min()}), but timestamps are the clinic's local time and the day of a "
                        "dose or rating depends on it; export the local time, without an offset or with the local "
                        "one (2024-01-08T09:00:00+02:00)")
            without, first = self.without[name]
            if z.height and without:
                return (f"column {name} mixes times with a UTC offset ({z.height:,} row(s), first row "
                        f"{z['_row_number'].min()}) and without one ({without:,} row(s), first row "
                        f"{first}), so which of them are the clinic's local time is unknown; "
                        "export every time the same way (the local time, with or without its offset)")
        return None

    def note(self) -> str | None:
        notes = []
        for name in self.zoned:
            z = self._zoned(name).filter(pl.col("_valid"))
            if z.height:
                shown = sorted(z["_zone"].unique().to_list())
                more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
                notes.append(f"{name}: {z.height:,} time(s) with a UTC offset ({', '.join(shown[:3])}{more}) read "
                             "as the local time written, offset dropped")
        return "; ".join(notes) or None


def offset_problem(frame: pl.DataFrame, table: str) -> str | None:
    """What is wrong with the time zones of ``table``'s timestamp columns in ``frame`` (text,
    with ``_row_number``), as a sentence without any cell value; None if nothing is."""
    scan = OffsetScan(table)
    scan.add(frame)
    return scan.problem()


def offset_note(frame: pl.DataFrame, table: str) -> str | None:
    """A note for ``meta_batches.notes`` when timestamps carried offsets (dropped), else None."""
    scan = OffsetScan(table)
    scan.add(frame)
    return scan.note()
