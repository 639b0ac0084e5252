"""Readers, typing, quarantine and idempotent, versioned loading.

Tables written (see dags.md):

* ``raw_<table>``: every row that loaded, from every batch, typed per the
  contract, with ``_batch_id``, ``_row_number`` and ``_load_seq``. Append-only.
* ``stg_<table>``: the current version of each record: for each key, the rows of
  the latest batch that carried that key (a corrected re-delivery supersedes the
  earlier version; the earlier batch stays in ``raw_`` and ``meta_batches``).
* ``quarantine``: one row per problem (file, row number, column, rule, reason).
* ``meta_batches``: one row per file loaded (hash, rows read/loaded/quarantined).
* ``ref_arms``, ``ref_instruments``: the registries in force.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.contract import TABLE_ORDER, TABLES, Column
from ketaoutcomes.registries import Registries, load_registries
from ketaoutcomes.warehouse import append_frame, fetch, replace_table, table_exists

__all__ = ["FileLoad", "IngestError", "IngestSummary", "find_export_files", "ingest_export", "read_table_file"]

SUFFIXES = (".csv", ".parquet")
REGISTRY_FILES = ("arms.csv", "instruments.csv")
Progress = Callable[[str, int, int], None]


class IngestError(ValueError):
    """A whole file cannot be loaded; the message names the file and what to fix."""


@dataclass(frozen=True)
class FileLoad:
    table: str
    source_file: str
    batch_id: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    skipped: bool  # True: this exact file was loaded before, nothing changed
    ignored_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestSummary:
    export_dir: str
    files: tuple[FileLoad, ...]
    ignored_files: tuple[str, ...]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame([{**asdict(f), "ignored_columns": ", ".join(f.ignored_columns)} for f in self.files])

    @property
    def changed(self) -> bool:
        return any(not f.skipped for f in self.files)


def find_export_files(export_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each contract table to its file in ``export_dir``; list files that are not used."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise IngestError(f"{export_dir}: not a folder; give the folder that holds patients.csv, courses.csv, ...")
    found: dict[str, Path] = {}
    ignored: list[str] = []
    for p in sorted(export_dir.iterdir()):
        if p.name in REGISTRY_FILES or p.name == "truth.json" or p.name.startswith("."):
            continue
        stem, suffix = p.stem, p.suffix.lower()
        if stem in TABLES and suffix in SUFFIXES:
            if stem in found:
                raise IngestError(
                    f"{export_dir}: both {found[stem].name} and {p.name} hold table {stem}; keep one of them"
                )
            found[stem] = p
        else:
            ignored.append(p.name)
    if not found:
        raise IngestError(
            f"{export_dir}: no import files found; expected files named "
            + ", ".join(f"{t}.csv or {t}.parquet" for t in TABLE_ORDER)
        )
    return found, ignored


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_table_file(path: Path, table: str) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Read one file as text columns plus ``_row_number`` (1-based data row).

    Returns the frame restricted to contract columns (missing optional columns
    added as nulls) and the names of columns that were ignored. Columns outside
    the contract are not stored: they could carry identifiers.

    Raises
    ------
    IngestError
        Unreadable file, not UTF-8, a required column missing.
    """
    path = Path(path)
    spec = TABLES[table]
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: the file is empty (0 bytes); re-export it with a header row")
    try:
        if path.suffix.lower() == ".csv":
            # Every column as text: typing happens per row later, so one bad cell
            # quarantines one row instead of failing the file.
            frame = pl.read_csv(path, infer_schema=False, encoding="utf8", raise_if_empty=True)
        else:
            frame = pl.read_parquet(path)
            frame = frame.with_columns(pl.all().cast(pl.String))
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes the same clear error
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        raise IngestError(f"{path}: cannot be read as {kind} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                          "check the file is complete, UTF-8 encoded and not hand-edited into a broken state") from None
    stripped = {c: c.strip() for c in frame.columns}
    frame = frame.rename(stripped)
    missing = [c for c in spec.required_columns if c not in frame.columns]
    if missing:
        raise IngestError(
            f"{path}: required column(s) {', '.join(missing)} missing from table {table}; "
            f"the file has {', '.join(frame.columns) or 'no columns'} (see docs/import-format.md)"
        )
    ignored = tuple(c for c in frame.columns if c not in spec.column_names)
    frame = frame.with_columns(
        [pl.lit(None, dtype=pl.String).alias(c) for c in spec.column_names if c not in frame.columns]
    )
    frame = frame.select(spec.column_names).with_row_index("_row_number", offset=1)
    return frame.with_columns(pl.col("_row_number").cast(pl.Int64)), ignored


def _typed_expr(col: Column) -> tuple[str, str]:
    """SQL for the typed value of ``col`` and for 'the value is present but does not convert'.

    Empty strings and surrounding spaces count as missing. TRY_CAST alone is not
    strict enough: DuckDB rounds '3.5' to INTEGER 4 and truncates a DATE's time
    part, so integers must be whole and dates must carry no time of day.
    """
    v = f"NULLIF(TRIM(\"{col.name}\"), '')"
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
    elif col.dtype == "TIMESTAMP":
        typed = f"TRY_CAST({v} AS TIMESTAMP)"
    else:  # VARCHAR
        typed = v
    bad = f"({v} IS NOT NULL AND ({typed}) IS NULL)"
    return typed, bad


_TYPE_WORDS = {
    "INTEGER": "a whole number",
    "DOUBLE": "a finite number",
    "DATE": "a date YYYY-MM-DD (no time of day)",
    "TIMESTAMP": "a date-time YYYY-MM-DD HH:MM[:SS]",
    "BOOLEAN": "true or false",
    "VARCHAR": "text",
}


def _type_rows(
    con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, table: str, *, batch_id: str, source_file: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed good rows, and one quarantine row per problem."""
    spec = TABLES[table]
    selects, problems = [], []
    for col in spec.columns:
        typed, bad = _typed_expr(col)
        selects.append(f'{typed} AS "{col.name}"')
        problems.append(
            f"SELECT _row_number, '{col.name}' AS column_name, 'type' AS rule, "
            f"'{col.name} is not {_TYPE_WORDS[col.dtype]}' AS reason FROM _in WHERE {bad}"
        )
        if col.name in spec.key:
            problems.append(
                f"SELECT _row_number, '{col.name}' AS column_name, 'key_missing' AS rule, "
                f"'key column {col.name} is empty, so the row cannot be identified or superseded' AS reason "
                f"FROM _in WHERE NULLIF(TRIM(\"{col.name}\"), '') IS NULL"
            )
    con.register("_in", frame.to_arrow())
    try:
        quarantine = fetch(con, " UNION ALL ".join(problems) + " ORDER BY _row_number, column_name")
        bad_rows = quarantine.select("_row_number").unique()
        con.register("_bad", bad_rows.to_arrow())
        typed = fetch(
            con,
            f"SELECT {', '.join(selects)}, _row_number FROM _in "
            "WHERE _row_number NOT IN (SELECT _row_number FROM _bad) ORDER BY _row_number",
        )
        con.unregister("_bad")
    finally:
        con.unregister("_in")
    quarantine = quarantine.rename({"_row_number": "row_number"}).select(
        pl.lit(batch_id).alias("batch_id"),
        pl.lit(table).alias("table_name"),
        pl.lit(source_file).alias("source_file"),
        "row_number",
        "column_name",
        "rule",
        "reason",
    )
    return typed, quarantine


def _store_registries(con: duckdb.DuckDBPyConnection, registries: Registries) -> None:
    """Merge the export's registries into those in force (same key: the new row wins)."""
    for name, frame, key in (
        ("ref_arms", registries.arms_frame(), "arm"),
        ("ref_instruments", registries.instruments_frame(), "instrument"),
    ):
        if table_exists(con, name):
            old = fetch(con, f"SELECT * FROM {name}")
            frame = pl.concat([old.filter(~pl.col(key).is_in(frame[key].implode())), frame], how="diagonal_relaxed")
        replace_table(con, name, frame.sort(key))


def load_registries_from_warehouse(con: duckdb.DuckDBPyConnection) -> Registries:
    """The registries in force in this warehouse (defaults if none stored yet)."""
    from ketaoutcomes.registries import Arm, Instrument

    if not table_exists(con, "ref_arms"):
        return load_registries()
    arms = {r["arm"]: Arm.model_validate({k: v for k, v in r.items() if v is not None})
            for r in fetch(con, "SELECT * FROM ref_arms").iter_rows(named=True)}
    instruments = {r["instrument"]: Instrument.model_validate({k: v for k, v in r.items() if v is not None})
                   for r in fetch(con, "SELECT * FROM ref_instruments").iter_rows(named=True)}
    return Registries(arms=arms, instruments=instruments)


def rebuild_staging(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """stg_<table> = for each key, the rows of the latest batch that carried it."""
    key = ", ".join(f'"{k}"' for k in TABLES[table].key)
    con.execute(
        f"CREATE OR REPLACE TABLE stg_{table} AS SELECT * EXCLUDE (_load_seq) FROM raw_{table} "
        f"QUALIFY _load_seq = max(_load_seq) OVER (PARTITION BY {key}) ORDER BY _load_seq, _row_number"
    )


def ingest_export(
    con: duckdb.DuckDBPyConnection,
    export_dir: Path,
    *,
    loaded_at: dt.datetime,
    progress: Progress | None = None,
) -> IngestSummary:
    """Load every table file of ``export_dir`` into the warehouse behind ``con``.

    Every file is read and typed before anything is written, so a whole-file
    error leaves the warehouse untouched (and the caller's write session is not
    published). A file whose content hash was loaded before is skipped.

    Parameters
    ----------
    con : duckdb connection
        A write session (:func:`ketaoutcomes.warehouse.write_session`).
    export_dir : Path
        Folder with ``<table>.csv|parquet`` files, optionally ``arms.csv`` /
        ``instruments.csv`` to extend the registries.
    loaded_at : datetime
        Provenance timestamp recorded in ``meta_batches`` (passed in: no hidden "now").
    """
    export_dir = Path(export_dir).resolve()
    files, ignored_files = find_export_files(export_dir)
    registries = load_registries(export_dir)  # validates the export's registry files too

    loaded = set(fetch(con, "SELECT batch_id FROM meta_batches")["batch_id"].to_list())
    next_seq = (con.execute("SELECT coalesce(max(load_seq), 0) FROM meta_batches").fetchone()[0] or 0) + 1
    staged: list[tuple[FileLoad, pl.DataFrame | None, pl.DataFrame | None, str, str]] = []
    ordered = [t for t in TABLE_ORDER if t in files]
    for i, table in enumerate(ordered):
        path = files[table]
        if progress:
            progress(f"reading {path.name}", i, len(ordered))
        sha = _sha256(path)
        batch_id = f"{table}-{sha[:16]}"
        if batch_id in loaded:
            prev = con.execute(
                "SELECT rows_read, rows_loaded, rows_quarantined FROM meta_batches WHERE batch_id = ?", [batch_id]
            ).fetchone()
            staged.append((FileLoad(table, str(path), batch_id, *prev, skipped=True), None, None, sha, ""))
            continue
        frame, ignored_cols = read_table_file(path, table)
        typed, quarantine = _type_rows(con, frame, table, batch_id=batch_id, source_file=str(path))
        n_bad = quarantine["row_number"].n_unique()
        fl = FileLoad(table, str(path), batch_id, frame.height, typed.height, n_bad, False, ignored_cols)
        assert fl.rows_read == fl.rows_loaded + fl.rows_quarantined, f"{path}: row accounting broken"
        staged.append((fl, typed, quarantine, sha, path.suffix.lower().lstrip(".")))

    # Everything read and typed: now write.
    _store_registries(con, registries)
    for fl, typed, quarantine, sha, fmt in staged:
        if fl.skipped:
            continue
        seq = next_seq
        next_seq += 1
        append_frame(
            con,
            f"raw_{fl.table}",
            typed.with_columns(pl.lit(fl.batch_id).alias("_batch_id"), pl.lit(seq, dtype=pl.Int32).alias("_load_seq")),
        )
        append_frame(con, "quarantine", quarantine)
        con.execute(
            "INSERT INTO meta_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [fl.batch_id, seq, fl.table, fl.source_file, sha, fmt, fl.rows_read, fl.rows_loaded,
             fl.rows_quarantined, ", ".join(fl.ignored_columns) or None, loaded_at],
        )
    for table in TABLE_ORDER:
        rebuild_staging(con, table)
    return IngestSummary(str(export_dir), tuple(s[0] for s in staged), tuple(ignored_files))
