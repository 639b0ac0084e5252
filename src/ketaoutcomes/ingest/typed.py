"""Typing one file's rows in DuckDB: text in, the contract's types out, with the row problems
``type``, ``key_missing`` and ``required_missing``.

The text comes from the scratch Parquet file of :mod:`ketaoutcomes.ingest.read` (or, for the
patients file, whose ages are capped first, a frame); the typed rows go to another scratch Parquet
file, read as a temporary view, that the checks read and the load copies into ``raw_<table>`` with
``INSERT ... SELECT`` (:mod:`ketaoutcomes.ingest.load`): the rows to load never pass through Python.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.contract import TABLES, WHITESPACE, Column
from ketaoutcomes.ingest.text import timestamp_sql
from ketaoutcomes.warehouse import DUCKDB_ROW_GROUP, fetch

__all__ = ["TYPE_WORDS", "present_sql", "type_rows", "typed_expr"]


def present_sql(ref: str) -> str:
    """SQL for the text of column ``ref`` without the white space around it; null when nothing else
    is left. A value that starts and ends with a printable ASCII character is its own trimmed
    value: trimming it (DuckDB's TRIM with the 25 characters of
    :data:`ketaoutcomes.contract.WHITESPACE`) costs ten times more and is skipped."""
    return (f"CASE WHEN ord({ref}[1]) BETWEEN 33 AND 126 AND ord({ref}[-1]) BETWEEN 33 AND 126 THEN {ref} "
            f"ELSE NULLIF(trim({ref}, '{WHITESPACE}'), '') END")


def typed_expr(col: Column, ref: str, zoned: bool = True) -> tuple[str, str]:
    """SQL for the typed value of ``col`` (its text in column ``ref``) and for 'the value is present
    but does not convert'.

    A cell of white space only is missing, like an empty one, and white space around a value is
    not part of it (:data:`ketaoutcomes.contract.WHITESPACE`: tabs, line breaks and no-break
    spaces too, which DuckDB's TRIM keeps). TRY_CAST alone is not strict enough: DuckDB rounds
    '3.5' to INTEGER 4 and truncates a DATE's time part, so integers must be whole and dates must
    carry no time of day. ``zoned=False``: a TIMESTAMP column with no zone designator in any cell
    (:func:`ketaoutcomes.ingest.text.timestamp_sql`).
    """
    v = present_sql(ref)
    if col.dtype == "INTEGER":
        d = f"TRY_CAST({v} AS DOUBLE)"
        typed = f"CASE WHEN {d} = floor({d}) AND abs({d}) < 2147483647 THEN CAST({d} AS INTEGER) END"
    elif col.dtype == "DOUBLE":
        d = f"TRY_CAST({v} AS DOUBLE)"
        typed = f"CASE WHEN isfinite({d}) THEN {d} END"
    elif col.dtype == "DATE":
        ts = f"TRY_CAST({v} AS TIMESTAMP)"
        typed = f"CASE WHEN CAST({ts} AS TIME) = TIME '00:00:00' THEN CAST({ts} AS DATE) END"
    elif col.dtype == "BOOLEAN":
        typed = (
            f"CASE lower({v}) WHEN 'true' THEN TRUE WHEN 't' THEN TRUE WHEN '1' THEN TRUE WHEN 'yes' THEN TRUE "
            f"WHEN 'false' THEN FALSE WHEN 'f' THEN FALSE WHEN '0' THEN FALSE WHEN 'no' THEN FALSE END"
        )
    elif col.dtype == "TIMESTAMP":  # the wall-clock time written; an offset is dropped (ingest.text)
        typed = timestamp_sql(v, zoned)
    else:  # VARCHAR
        typed = v
    bad = f"({v} IS NOT NULL AND ({typed}) IS NULL)"
    return typed, bad


TYPE_WORDS = {
    "INTEGER": "a whole number",
    "DOUBLE": "a finite number",
    "DATE": "a date YYYY-MM-DD (no time of day)",
    "TIMESTAMP": "a date-time YYYY-MM-DD HH:MM[:SS] (a UTC offset, if any, within -12:00..+14:00)",
    "BOOLEAN": "true or false",
    "VARCHAR": "text",
}


#: Rows per row group of a typed file: at most one of DuckDB's row groups (122,880 rows) once the
#: writer has added its last vector (up to 2,048 rows) past this, so that the load reading a typed
#: file on every thread appends whole row groups, not a remainder per file row group that the
#: checkpoint then rewrites and leaves as free blocks in the warehouse file.
TYPED_ROW_GROUP = DUCKDB_ROW_GROUP - 2_048


def type_rows(con: duckdb.DuckDBPyConnection, source: str, refs: Mapping[str, str | None], table: str,
              target: str, scratch: Path, unzoned: Collection[str] = ()) -> tuple[pl.DataFrame, dict[str, int]]:
    """Type every row of ``source`` (SQL: a table or a subquery with ``_row_number`` and the text
    columns ``refs`` names, a contract column to its column; None: not in the file) into the Parquet
    file ``scratch``, read as the temporary view ``target``: ``_row_number`` and the contract's
    columns, typed (a cell that does not convert becomes null), in the order of ``source``. (A file,
    not a temporary table: DuckDB keeps a temporary table in memory, and every file's typed rows are
    held until the load writes them.) ``unzoned``: the TIMESTAMP columns in which no cell has a
    zone designator (:meth:`ketaoutcomes.ingest.text.OffsetScan.unzoned`), typed without the regexes
    for one.

    Returns the problems (``type``, ``key_missing``, ``required_missing``) and, per column, how
    many cells hold a value (the rows the ``type`` rule tested).

    One pass over the input computes each column's typed value and flags; the problems are then
    read from the flags (re-scanning the input once per rule was 3x slower).
    """
    spec = TABLES[table]
    selects, problems, counts = ["_row_number"], [], []
    for i, col in enumerate(spec.columns):
        ref = refs.get(col.name)
        typed, _bad = typed_expr(col, f'"{ref}"' if ref is not None else "CAST(NULL AS VARCHAR)",
                                 zoned=col.name not in unzoned)
        present = present_sql(f'"{ref}"') if ref is not None else "NULL"
        # 'present but does not convert' is read from the typed value and _empty (not computed twice)
        selects += [f'{typed} AS "{col.name}"', f"{present} IS NULL AS _empty{i}"]
        counts.append(f"count_if(NOT _empty{i})")
        problems.append(f"SELECT _row_number, '{col.name}' AS column_name, 'type' AS rule, "
                        f"'{col.name} is not {TYPE_WORDS[col.dtype]}' AS reason FROM {target} "
                        f'WHERE NOT _empty{i} AND "{col.name}" IS NULL')
        if col.required:
            rule, reason = (
                ("key_missing", f"key column {col.name} is empty, so the row cannot be identified or superseded")
                if col.name in spec.key else ("required_missing", f"required column {col.name} is empty")
            )
            problems.append(f"SELECT _row_number, '{col.name}' AS column_name, '{rule}' AS rule, '{reason}' AS reason "
                            f"FROM {target} WHERE _empty{i}")
    path = str(scratch).replace("'", "''")
    con.execute(f"COPY (SELECT {', '.join(selects)} FROM {source}) TO '{path}' "
                f"(FORMAT parquet, COMPRESSION lz4, ROW_GROUP_SIZE {TYPED_ROW_GROUP})")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {target} AS SELECT * FROM read_parquet('{path}')")
    found = fetch(con, " UNION ALL ".join(problems))
    present = dict(zip(spec.column_names, con.execute(f"SELECT {', '.join(counts)} FROM {target}").fetchone()))
    return (found.select(pl.col("_row_number").cast(pl.Int64), "column_name", "rule", "reason"),
            {k: int(v or 0) for k, v in present.items()})
