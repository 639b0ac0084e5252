"""Readers, typing, quarantine and idempotent, versioned loading.

Tables written (see dags.md):

* ``raw_<table>``: every row that loaded, from every batch, typed per the
  contract, with ``_batch_id``, ``_row_number`` and ``_load_seq``. Append-only.
* ``stg_<table>``: the current version of each record: for each key, the rows of
  the latest batch that carried that key (a corrected re-delivery supersedes the
  earlier version; the earlier batch stays in ``raw_`` and ``meta_batches``).
* ``quarantine``: one row per problem (file, row number, column, rule, reason).
* ``meta_batches``: one row per file loaded (hash, rows read/loaded/quarantined), registry files
  (``arms.csv``, ``instruments.csv``) included.
* ``raw_arms``, ``raw_instruments``: the rows of every registry file loaded, by batch;
  ``ref_arms``, ``ref_instruments``: the registries in force, rebuilt from them
  (:mod:`ketaoutcomes.registries.history`).
* ``meta_rolled_back`` is read: content a rollback removed is refused
  (:mod:`ketaoutcomes.ingest.deliveries`).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.contract import TABLE_ORDER, TABLES, WHITESPACE, Column, polars_schema
from ketaoutcomes.failpoints import failpoint
from ketaoutcomes.ingest.deliveries import (
    check_rolled_back,
    mark_reloaded,
    new_batch_id,
    registry_deliveries,
)
from ketaoutcomes.ingest.errors import IngestError
from ketaoutcomes.ingest.extra import extra_columns
from ketaoutcomes.ingest.limits import (
    MemoryBudget,
    check_regular_file,
    check_small_file,
    check_table_file,
    check_values,
    memory_limit,
    memory_limit_source,
    open_regular,
)
from ketaoutcomes.ingest.phi import (
    ALLOWLIST_FILE,
    PhiAllowList,
    PhiError,
    PhiFinding,
    cap_age,
    header_labels,
    scan_frame,
)
from ketaoutcomes.ingest.rules import (
    Parent,
    dq_checks,
    duplicate_problems,
    one_problem_per_cell,
    reference_problems,
    row_problems,
    session_course_problems,
)
from ketaoutcomes.ingest.staging import update_staging
from ketaoutcomes.ingest.text import (
    LINE_NUMBER,
    LineEndingError,
    csv_source,
    drop_blank_rows,
    offset_note,
    offset_problem,
    parquet_as_text,
    timestamp_sql,
    with_line_numbers,
)
from ketaoutcomes.registries import Registries, load_registries
from ketaoutcomes.registries.history import append_registry_batch, rebuild_registries
from ketaoutcomes.suggest import closest
from ketaoutcomes.warehouse import append_frame, fetch, fetch_rows, replace_table, table_exists

__all__ = ["FileLoad", "IngestError", "IngestSummary", "PhiRefused", "check_export_folder", "find_export_files",
           "ingest_export", "read_table_file"]

SUFFIXES = (".csv", ".parquet")
REGISTRY_FILES = ("arms.csv", "instruments.csv")
Progress = Callable[[str, int, int], None]


class PhiRefused(PhiError, IngestError):
    """The export carries what looks like direct identifiers: refused before anything is written.

    One line: each finding as "FILE: column COL: RULE: reason", never a cell value."""

    def __init__(self, findings: list[PhiFinding]):
        self.findings = tuple(findings)
        ValueError.__init__(
            self,
            "export refused, nothing was loaded: it looks like it carries direct identifiers "
            "(HIPAA Safe Harbor; see docs/phi-guard.md): " + "; ".join(str(f) for f in self.findings),
        )


@dataclass(frozen=True)
class FileLoad:
    table: str
    source_file: str
    batch_id: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    skipped: bool  # True: this exact file is the table's latest delivery already, nothing changed
    ignored_columns: tuple[str, ...] = ()  # names, or "#N" (position) for a header not fit to print
    notes: str | None = None  # e.g. ages over 89 stored as 90
    rows_blank: int = 0  # blank rows skipped (not rows: not in rows_read)
    redelivery_of: str | None = None  # the earlier batch with the same content, when this file re-delivers it
    reloaded: str | None = None  # the rolled-back batch whose content this file loads again (--reload-rolled-back)


@dataclass(frozen=True)
class IngestSummary:
    export_dir: str
    files: tuple[FileLoad, ...]
    ignored_files: tuple[str, ...]
    #: The registry files (arms.csv, instruments.csv), each a batch of its own; ``table`` is the registry.
    registries: tuple[FileLoad, ...] = ()

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame([{**asdict(f), "ignored_columns": ", ".join(f.ignored_columns)} for f in self.files])

    @property
    def changed(self) -> bool:
        return any(not f.skipped for f in (*self.files, *self.registries))

    def lines(self) -> list[str]:
        """What was loaded, for a person: one line per file (rows read = loaded + quarantined)."""
        out = [f"{Path(f.source_file).name}: {_verb(f)} "
               f"({f.rows_read:,} read = {f.rows_loaded:,} loaded + {f.rows_quarantined:,} quarantined)"
               + (f"; {f.rows_blank:,} blank row(s) skipped" if f.rows_blank and not f.skipped else "")
               + (f"; ignored columns: {', '.join(f.ignored_columns)}" if f.ignored_columns else "")
               + (f"; {f.notes}" if f.notes and not f.skipped else "") for f in self.files]
        out += [f"{Path(f.source_file).name}: {_verb(f).replace('table', 'registry')} ({f.rows_read:,} row(s) of the "
                f"{f.table} registry)" for f in self.registries]
        if self.ignored_files:
            out.append(f"files not in the import format, ignored: {', '.join(self.ignored_files)}")
        return out


def _verb(f: FileLoad) -> str:
    if f.skipped:
        return "already loaded (the table's latest delivery), skipped"
    if f.reloaded:
        return f"loaded again on purpose (--reload-rolled-back): its content had been rolled back (batch {f.reloaded})"
    if f.redelivery_of:
        return (f"loaded again: the content of earlier batch {f.redelivery_of}, delivered again, "
                "supersedes the later version(s) of its rows")
    return "loaded"


#: Files of an export folder that are read but are not tables (and the simulator's truth).
KNOWN_FILES = (*REGISTRY_FILES, ALLOWLIST_FILE, "truth.json")
#: Those of them that ingest reads (checked like the tables: regular files, not compressed, small).
READ_FILES = (*REGISTRY_FILES, ALLOWLIST_FILE)
#: How near a file name must be to a table's (or registry's) to be taken for a misnamed one.
NEAR_MISS_CUTOFF = 0.8


def _near_miss(name: str) -> str | None:
    """The table (or registry) a file name that is not in the import format looks meant for:
    ``mood-scores.csv``, ``Patients.CSV``, ``patient.csv``, ``courses.txt``, ``sessions_2024.csv``
    all do; ``README.txt`` or ``notes.md`` do not."""
    stem = re.sub(r"[^a-z0-9]+", "_", name.lower().split(".")[0]).strip("_")
    targets = [*TABLES, *(f.split(".")[0] for f in REGISTRY_FILES)]
    if stem in targets:
        return stem
    for t in targets:  # patients_2024, sessions_old, ...
        if stem.startswith(t + "_"):
            return t
    return closest(stem, targets, cutoff=NEAR_MISS_CUTOFF) if stem else None


def _misnamed(path: Path, meant: str) -> str:
    if path.is_dir():
        return f"{path.name} is a folder; the import format takes one file per table ({meant}.csv or {meant}.parquet)"
    if meant in TABLES:
        return f"{path.name} looks like table {meant}: name it {meant}.csv or {meant}.parquet (or move it out of the folder)"
    return f"{path.name} looks like the {meant} registry: name it {meant}.csv (or move it out of the folder)"


def _file_label(name: str) -> str:
    """An unrelated file's name as it may be printed and stored (ingest lists the files it ignored):
    the name when its parts are shaped like column names or are numbers of up to 4 digits (README.txt,
    truth_v2.json, notes-2024.md), else "(a file whose name is not shown)": a file can be named after
    a patient."""
    parts = re.split(r"[-.]", name)
    labels = header_labels([p or "x" for p in parts])
    digits_ok = [re.fullmatch(r"[0-9]{1,4}", p) is not None for p in parts]
    if all(not lab.startswith("#") or ok for lab, ok in zip(labels, digits_ok)):
        return name
    return "(a file whose name is not shown)"


def find_export_files(export_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each contract table to its file in ``export_dir``; list files that are not used.

    A file whose name nearly matches a table or registry (wrong case, a hyphen, a missing "s", a
    suffix other than .csv/.parquet) is an error, not an ignored file: an export whose ratings are
    in ``mood-scores.csv`` would otherwise load without them. Unrelated files (README.txt, the
    registries, phi_allowlist.toml, truth.json, hidden files) are ignored.

    A table file, a registry or the allow-list must be a regular file (a FIFO, a folder, a dangling
    link... is refused from its ``stat``, never opened: :func:`ketaoutcomes.ingest.limits.check_regular_file`)."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise IngestError(f"{export_dir}: not a folder; give the folder that holds patients.csv, courses.csv, ...")
    found: dict[str, Path] = {}
    ignored: list[str] = []
    misnamed: list[str] = []
    for p in sorted(export_dir.iterdir()):
        if p.name in KNOWN_FILES or p.name.startswith("."):
            if p.name in READ_FILES:
                check_small_file(p, export_dir)
            continue
        stem, suffix = p.stem, p.suffix.lower()
        if stem in TABLES and suffix in SUFFIXES:
            check_regular_file(p, export_dir)
            if stem in found:
                raise IngestError(
                    f"{export_dir}: both {found[stem].name} and {p.name} hold table {stem}; keep one of them"
                )
            found[stem] = p
        elif (meant := _near_miss(p.name)) is not None:
            misnamed.append(_misnamed(p, meant))
        else:
            ignored.append(_file_label(p.name))
    if not found:
        raise IngestError(
            f"{export_dir}: no import files found; expected files named "
            + ", ".join(f"{t}.csv or {t}.parquet" for t in TABLE_ORDER)
            + (f" ({'; '.join(misnamed)})" if misnamed else "")
        )
    if misnamed:
        raise IngestError(f"{export_dir}: {'; '.join(misnamed)}; nothing was loaded")
    return found, ignored


def check_export_folder(export_dir: Path, loaded: Collection[str] = ()) -> dict[str, Path]:
    """The table files of ``export_dir`` (:func:`find_export_files`), checked as a delivery on top of
    the tables already ``loaded`` into the warehouse: a table neither in this export nor loaded
    before is an error naming its file. An export without patients.csv would otherwise quarantine
    every row as an orphan (or, without adverse_events.csv, report a safety table with no events);
    a later delivery may leave out tables already loaded (a corrected re-delivery of one file).

    Raises
    ------
    IngestError
        One line: a misnamed file, a missing table, or no import file at all; nothing is written.
    """
    files, _ = find_export_files(export_dir)
    loaded = set(loaded)
    missing = [t for t in TABLE_ORDER if t not in files and t not in loaded and t not in SESSION_TABLES]
    if missing:
        names = ", ".join(f"{t}.csv" for t in missing)
        raise IngestError(
            f"{export_dir}: {names} missing (neither .csv nor .parquet in the folder, and no earlier delivery "
            f"in the warehouse); a first export holds every table ({', '.join(TABLE_ORDER)}; one with no rows "
            "as a header-only file; sessions and adverse_events may be left out when no course is on a "
            "session-based arm), a later one may leave out tables already loaded; nothing was loaded")
    return files


#: Tables an export may leave out when none of its courses is on a session-based arm (registry
#: ``session_based``): a trial without sessions has no session and no adverse event at a session.
SESSION_TABLES = ("sessions", "adverse_events")


def _check_sessions_left_out(export_dir: Path, files: Collection[str], loaded: Collection[str],
                             courses: pl.DataFrame, registries: Registries) -> None:
    """A sessions table neither delivered nor loaded before is fine only while no course in force is
    on a session-based arm (their sessions are the exposure and the first dose): else one line names
    the arms; nothing is written."""
    if "sessions" in files or "sessions" in loaded:
        return
    arms = sorted(set(courses["arm"].drop_nulls().to_list()) & {k for k, a in registries.arms.items()
                                                                if a.session_based})
    if arms:
        raise IngestError(
            f"{export_dir}: sessions.csv missing (neither .csv nor .parquet in the folder, and no earlier delivery in "
            f"the warehouse), but courses are on session-based arm(s) {', '.join(arms)} (session_based in the arms "
            "registry): their sessions give the first dose and the exposure; export sessions.csv (a header-only "
            "file if there are none); nothing was loaded")


def _ensure_raw(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """An empty raw_<table> for a table left out of the first export (sessions, adverse_events of a
    trial without sessions), so that stg_<table> exists with the contract's columns."""
    if not table_exists(con, f"raw_{table}"):
        append_frame(con, f"raw_{table}", pl.DataFrame(schema={
            "_row_number": pl.Int64, **polars_schema(table), "_batch_id": pl.String, "_load_seq": pl.Int32}))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_text(path: Path) -> pl.DataFrame:
    """Every column of one file as text, plus ``_row_number`` (1-based data row, blank rows
    counted) and ``_line_number`` (the line of the file where the row starts; null for Parquet).
    Line endings: see :mod:`ketaoutcomes.ingest.text`.

    Raises
    ------
    IngestError
        Empty, unreadable, not UTF-8, truncated.
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
            frame = pl.read_csv(csv_text.source, infer_schema=False, encoding="utf8", raise_if_empty=True)
        else:
            frame = parquet_as_text(pl.read_parquet(path))
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes the same clear error
        # The reader's own message is not shown: it can quote the file's content.
        text = str(exc).lower()
        if is_csv and ("utf-8" in text or "utf8" in text or isinstance(exc, UnicodeDecodeError)):
            problem = "not UTF-8 encoded; re-export it as CSV in UTF-8"
        elif is_csv:
            problem = ("malformed CSV (for example an unterminated quote, or rows with more fields than the header); "
                       "check the file was not cut short or hand-edited into a broken state")
        else:
            problem = "not a complete Parquet file (truncated or corrupt); export it again"
        raise IngestError(f"{path}: cannot be read ({type(exc).__name__}): {problem}") from None
    names = list(frame.columns)
    if is_csv:
        header = _csv_header(head)
        if header is not None and len(header) == len(names):
            names = header  # as written: polars renames duplicates, which would hide them
    stripped = [c.strip().lstrip("\ufeff").strip() for c in names]
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
    frame = frame.rename(dict(zip(frame.columns, stripped)))
    for reserved in ("_row_number", LINE_NUMBER):
        if reserved in frame.columns:
            raise IngestError(f"{path}: a column is named {reserved}, which is reserved; rename it")
    frame = frame.with_row_index("_row_number", offset=1).with_columns(pl.col("_row_number").cast(pl.Int64))
    # The line where the first record starts: after the header (and any line breaks in its names).
    first_line = csv_text.header_line + 1 + sum(n.count("\n") for n in names) if is_csv else None
    return with_line_numbers(frame, first_line)


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


#: A message lists at most this many of a file's columns.
_SHOW_COLUMNS = 30


def _contract_columns(frame: pl.DataFrame, table: str, path: Path) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """The contract's columns (missing optional ones as nulls) and the names of the others,
    which are not stored: they could carry identifiers."""
    spec = TABLES[table]
    present = set(frame.columns)
    contract = set(spec.column_names)
    missing = [c for c in spec.required_columns if c not in present]
    # Headers are printed and stored only when shaped like column names; any other is "#N", its
    # position: a stray quote or a missing header row puts data (or a name) where the header belongs.
    headers = [c for c in frame.columns if c not in ("_row_number", LINE_NUMBER)]
    labels = header_labels(headers)
    if missing:
        hint = ("; #N is the column at position N, whose header is not shown: it is not shaped like a column "
                "name (a missing header row or a stray quote can put data there)"
                if any(x.startswith("#") for x in labels) else "")
        shown = ", ".join(labels[:_SHOW_COLUMNS]) + (
            f" and {len(labels) - _SHOW_COLUMNS:,} more" if len(labels) > _SHOW_COLUMNS else "")
        raise IngestError(
            f"{path}: required column(s) {', '.join(missing)} missing from table {table}; "
            f"the file has {shown or 'no columns'}{hint} (see docs/import-format.md)"
        )
    ignored = tuple(label for c, label in zip(headers, labels) if c not in contract)
    frame = frame.with_columns(
        [pl.lit(None, dtype=pl.String).alias(c) for c in spec.column_names if c not in frame.columns]
    )
    return frame.select("_row_number", *spec.column_names), ignored


def read_table_file(path: Path, table: str) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Read one file as text: the contract's columns plus ``_row_number``, and the ignored column names."""
    return _contract_columns(_read_text(path), table, Path(path))


def _present(name: str) -> str:
    """SQL for the text of column ``name`` without the white space around it; null when nothing else is left."""
    return f"NULLIF(trim(\"{name}\", '{WHITESPACE}'), '')"


def _typed_expr(col: Column) -> tuple[str, str]:
    """SQL for the typed value of ``col`` and for 'the value is present but does not convert'.

    A cell of white space only is missing, like an empty one, and white space around a value is
    not part of it (:data:`ketaoutcomes.contract.WHITESPACE`: tabs, line breaks and no-break
    spaces too, which DuckDB's TRIM keeps). TRY_CAST alone is not strict enough: DuckDB rounds
    '3.5' to INTEGER 4 and truncates a DATE's time part, so integers must be whole and dates must
    carry no time of day.
    """
    v = _present(col.name)
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
        typed = timestamp_sql(v)
    else:  # VARCHAR
        typed = v
    bad = f"({v} IS NOT NULL AND ({typed}) IS NULL)"
    return typed, bad


_TYPE_WORDS = {
    "INTEGER": "a whole number",
    "DOUBLE": "a finite number",
    "DATE": "a date YYYY-MM-DD (no time of day)",
    "TIMESTAMP": "a date-time YYYY-MM-DD HH:MM[:SS] (a UTC offset, if any, within -12:00..+14:00)",
    "BOOLEAN": "true or false",
    "VARCHAR": "text",
}


def _type_rows(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, table: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every row typed (a cell that does not convert becomes null), and the problems:
    ``type``, ``key_missing``, ``required_missing``.

    One pass over the input computes each column's typed value and flags into a
    temporary table; the problems are then read from the flags (re-scanning the
    input once per rule was 3x slower).
    """
    spec = TABLES[table]
    selects, problems = ["_row_number"], []
    for i, col in enumerate(spec.columns):
        typed, bad = _typed_expr(col)
        selects += [f'{typed} AS "{col.name}"', f"{bad} AS _bad{i}", f"{_present(col.name)} IS NULL AS _empty{i}"]
        problems.append(f"SELECT _row_number, '{col.name}' AS column_name, 'type' AS rule, "
                        f"'{col.name} is not {_TYPE_WORDS[col.dtype]}' AS reason FROM _typed WHERE _bad{i}")
        if col.required:
            rule, reason = (
                ("key_missing", f"key column {col.name} is empty, so the row cannot be identified or superseded")
                if col.name in spec.key else ("required_missing", f"required column {col.name} is empty")
            )
            problems.append(f"SELECT _row_number, '{col.name}' AS column_name, '{rule}' AS rule, '{reason}' AS reason "
                            f"FROM _typed WHERE _empty{i}")
    con.register("_in", frame.to_arrow())
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _typed AS SELECT {', '.join(selects)} FROM _in")
    finally:
        con.unregister("_in")
    try:
        found = fetch(con, " UNION ALL ".join(problems))
        names = ", ".join(f'"{c}"' for c in spec.column_names)
        typed = fetch(con, f"SELECT _row_number, {names} FROM _typed ORDER BY _row_number")
    finally:
        con.execute("DROP TABLE IF EXISTS _typed")
    return typed, found.select(pl.col("_row_number").cast(pl.Int64), "column_name", "rule", "reason")


def load_registries_from_warehouse(con: duckdb.DuckDBPyConnection) -> Registries:
    """The registries in force in this warehouse (defaults if none stored yet)."""
    from ketaoutcomes.registries import Arm, Instrument

    if not table_exists(con, "ref_arms"):
        return load_registries()
    arms = {r["arm"]: Arm.model_validate({k: v for k, v in r.items() if v is not None})
            for r in fetch_rows(con, "SELECT * FROM ref_arms")}
    instruments = {r["instrument"]: Instrument.model_validate({k: v for k, v in r.items() if v is not None})
                   for r in fetch_rows(con, "SELECT * FROM ref_instruments")}
    return Registries(arms=arms, instruments=instruments)


def staging_sql(table: str, *, before_seq: int | None = None) -> str:
    """The SELECT of stg_<table>: for each key, the rows of the latest batch that carried it, among
    the batches loaded before load ``before_seq`` (all of them when None)."""
    key = ", ".join(f'"{k}"' for k in TABLES[table].key)
    where = "" if before_seq is None else f" WHERE _load_seq < {int(before_seq)}"
    return (f"SELECT * EXCLUDE (_load_seq) FROM raw_{table}{where} "
            f"QUALIFY _load_seq = max(_load_seq) OVER (PARTITION BY {key}) ORDER BY _load_seq, _row_number")


def rebuild_staging(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """stg_<table> = for each key, the rows of the latest batch that carried it."""
    con.execute(f"CREATE OR REPLACE TABLE stg_{table} AS {staging_sql(table)}")


def _stored(con: duckdb.DuckDBPyConnection, table: str, columns: list[str]) -> pl.DataFrame:
    """Columns of stg_<table> (earlier loads); empty with the contract types if there is none."""
    if table_exists(con, f"stg_{table}"):
        return fetch(con, f"SELECT {', '.join(columns)} FROM stg_{table}")
    schema = polars_schema(table)
    return pl.DataFrame(schema={c: schema[c] for c in columns})


#: What children need to know of each parent table (key first).
_PARENT_COLUMNS = {
    "patients": ["patient_id"],
    "courses": ["course_id", "arm", "start_date", "end_date"],
    "sessions": ["session_id"],
}


def _insert_batch(con: duckdb.DuckDBPyConnection, fl: FileLoad, seq: int, sha: str, fmt: str,
                  loaded_at: dt.datetime) -> None:
    con.execute(
        "INSERT INTO meta_batches BY NAME SELECT ? AS batch_id, ? AS load_seq, ? AS table_name, ? AS source_file, "
        "? AS file_sha256, ? AS file_format, ? AS rows_read, ? AS rows_loaded, ? AS rows_quarantined, "
        "? AS ignored_columns, ? AS loaded_at, ? AS notes, ? AS rows_blank, ? AS redelivery_of",
        [fl.batch_id, seq, fl.table, fl.source_file, sha, fmt, fl.rows_read, fl.rows_loaded, fl.rows_quarantined,
         ", ".join(fl.ignored_columns) or None, loaded_at, fl.notes, fl.rows_blank, fl.redelivery_of],
    )


@dataclass
class _Staged:
    load: FileLoad
    sha: str
    fmt: str
    good: pl.DataFrame | None = None
    quarantine: pl.DataFrame | None = None
    dq: pl.DataFrame | None = None


def ingest_export(
    con: duckdb.DuckDBPyConnection,
    export_dir: Path,
    *,
    loaded_at: dt.datetime,
    progress: Progress | None = None,
    reload_rolled_back: bool = False,
) -> IngestSummary:
    """Load every table file of ``export_dir`` into the warehouse behind ``con``.

    Order of work: every file is read and scanned by the PHI guard (a finding
    refuses the whole export), then typed and checked row by row (problem rows
    go to quarantine, with cascading orphans in load order), and only then is
    anything written; so a whole-file error leaves the warehouse untouched (and
    the caller's write session is not published).

    A file whose content is that of its table's latest batch is skipped (the same
    folder loaded twice changes nothing). A file whose content was loaded before but
    has since been superseded by another version is a re-delivery of that earlier
    version: it is loaded again as a new batch (``meta_batches.redelivery_of`` names
    the first batch with that content), and by delivery order it supersedes the later
    version (undoing a correction). The export's ``arms.csv`` / ``instruments.csv`` are
    batches too, loaded before its tables (:mod:`ketaoutcomes.ingest.deliveries`).

    A file whose content a rollback removed refuses the export (one line naming it and the
    rollback), unless ``reload_rolled_back``: then it is loaded again, on purpose.

    Rows are checked on their own first (types, required values, allowed values,
    ranges, references); a row that breaks a rule is quarantined for that rule only.
    Keys are then compared among the rows still standing (``duplicate_exact``,
    ``duplicate_conflict``), so a bad row never drags a valid row with the same key
    into quarantine.

    Before a file is parsed it is held to the limits of
    :mod:`ketaoutcomes.ingest.limits` (a regular file, not compressed, columns, line and value
    length, its size in memory as text against its size on disk and, for all files together, against
    the memory limit ``$KETAOUTCOMES_MEMORY_LIMIT``, which is DuckDB's limit on ``con`` too): each an
    :class:`IngestError` naming the file, as is running out of memory anyway.

    Parameters
    ----------
    con : duckdb connection
        A write session (:func:`ketaoutcomes.warehouse.write_session`).
    export_dir : Path
        Folder with ``<table>.csv|parquet`` files, optionally ``arms.csv`` /
        ``instruments.csv`` to extend the registries and ``phi_allowlist.toml``.
    loaded_at : datetime
        Provenance timestamp recorded in ``meta_batches`` (passed in: no hidden "now").
    """
    budget = MemoryBudget(memory_limit(), memory_limit_source())
    budget.configure(con)
    with budget.guard():
        return _ingest(con, Path(export_dir).resolve(), loaded_at, progress, budget, reload_rolled_back)


def _ingest(con: duckdb.DuckDBPyConnection, export_dir: Path, loaded_at: dt.datetime, progress: Progress | None,
            budget: MemoryBudget, reload_rolled_back: bool) -> IngestSummary:
    files, ignored_files = find_export_files(export_dir)
    loaded_tables = fetch(con, "SELECT DISTINCT table_name FROM meta_batches")["table_name"].to_list()
    check_export_folder(export_dir, loaded_tables)
    batches = fetch(con, "SELECT batch_id, table_name, file_sha256, load_seq FROM meta_batches ORDER BY load_seq")
    try:
        regs = registry_deliveries(export_dir, batches, _sha256)
        registries = load_registries_from_warehouse(con)
        for r in regs:
            registries = registries.with_rows(r.name, r.items)
        allow = PhiAllowList.load(export_dir)
    except ValueError as exc:
        raise IngestError(str(exc)) from None

    ordered = [t for t in TABLE_ORDER if t in files]
    staged: dict[str, _Staged] = {}
    for table in ordered:  # what is new, before anything is read
        path = files[table]
        budget.current = path
        sha, fmt = _sha256(path), path.suffix.lower().lstrip(".")
        mine = batches.filter(pl.col("table_name") == table)
        if mine.height and mine["file_sha256"][-1] == sha:  # already the table's latest delivery
            read, loaded_, quarantined, blank, of = con.execute(
                "SELECT rows_read, rows_loaded, rows_quarantined, coalesce(rows_blank, 0), redelivery_of "
                "FROM meta_batches WHERE batch_id = ?", [mine["batch_id"][-1]]).fetchone()
            staged[table] = _Staged(FileLoad(table, str(path), mine["batch_id"][-1], read, loaded_, quarantined,
                                             skipped=True, rows_blank=blank, redelivery_of=of), sha, fmt)
        else:
            batch_id, redelivery_of = new_batch_id(table, sha, mine)
            staged[table] = _Staged(FileLoad(table, str(path), batch_id, 0, 0, 0, False,
                                             redelivery_of=redelivery_of), sha, fmt)
    reloads = check_rolled_back(con, [(Path(st.load.source_file), st.sha) for st in staged.values() if not st.load.skipped]
                                + [(r.path, r.sha) for r in regs if not r.skipped], reload=reload_rolled_back)

    texts: dict[str, pl.DataFrame] = {}
    lines: dict[str, pl.DataFrame] = {}
    findings = []
    for i, table in enumerate(ordered):
        st = staged[table]
        if st.load.skipped:
            continue
        path = files[table]
        if progress:
            progress(f"reading {path.name}", i, len(ordered))
        budget.current = path
        budget.admit(path, check_table_file(path, table))
        text, blank = drop_blank_rows(_read_text(path))
        check_values(text, path, table)
        lines[table] = text.select("_row_number", LINE_NUMBER)
        texts[table] = text.drop(LINE_NUMBER)
        findings += scan_frame(texts[table], table=table, file=str(path), allow=allow)
        st.load = FileLoad(table, str(path), st.load.batch_id, texts[table].height, 0, 0, False, rows_blank=blank,
                           redelivery_of=st.load.redelivery_of, reloaded=reloads.get(st.sha))
    for r in regs:  # the registry files: labels and descriptions are stored and shown in the report
        if not r.skipped:
            text, _ = drop_blank_rows(_read_text(r.path))
            findings += scan_frame(text.drop(LINE_NUMBER), table=r.name, file=str(r.path), allow=allow)
    if findings:
        raise PhiRefused(findings)

    parents: dict[str, Parent] = {}

    def parent(name: str) -> Parent:
        if name not in parents:  # not delivered in this export: earlier loads only
            cols = _PARENT_COLUMNS[name]
            stored = _stored(con, name, cols)
            parents[name] = Parent(name, f"{name} (warehouse)", stored.clear(), stored,
                                   pl.DataFrame(schema={cols[0]: stored.schema[cols[0]], "_row_number": pl.Int64}))
        return parents[name]

    for i, table in enumerate(ordered):
        st = staged[table]
        if st.load.skipped:
            continue
        path = Path(st.load.source_file)
        budget.current = path
        if progress:
            progress(f"checking {path.name}", i, len(ordered))
        text = texts.pop(table)
        capped = 0
        if table == "patients":
            text, capped = cap_age(text)
        frame, ignored_cols = _contract_columns(text, table, path)
        extra = extra_columns(text, table, allow.allowed_columns(table))
        ignored_cols = tuple(c for c in ignored_cols if c not in extra.kept)
        if (zones := offset_problem(frame, table)) is not None:
            raise IngestError(f"{path}: {zones}; nothing was loaded")
        typed, problems = _type_rows(con, frame, table)
        if extra.frame is not None:  # the patients file's own columns, kept as text (ingest.extra)
            typed = typed.join(extra.frame, on="_row_number", how="left")
        # Each row on its own first; then keys among the rows still standing.
        checks = [problems, row_problems(table, typed, registries, allow.allowed_columns(table))]
        if table == "sessions":
            checks.append(session_course_problems(typed, parent("courses").available(), registries))
        if TABLES[table].references:
            checks.append(reference_problems(table, typed, {r.to_table: parent(r.to_table)
                                                            for r in TABLES[table].references}))
        own = one_problem_per_cell(pl.concat([c for c in checks if c.height] or [problems], how="vertical"))
        standing = typed.join(own.select("_row_number").unique(), on="_row_number", how="anti")
        problems = pl.concat([own, duplicate_problems(table, standing)], how="vertical_relaxed")
        bad = problems.select("_row_number").unique()
        good = typed.join(bad, on="_row_number", how="anti")
        if table in _PARENT_COLUMNS:
            cols = _PARENT_COLUMNS[table]
            key = cols[0]
            parents[table] = Parent(
                table, path.name, good.select(cols), _stored(con, table, cols),
                typed.join(bad, on="_row_number", how="semi").group_by(key).agg(pl.col("_row_number").min())
                .filter(pl.col(key).is_not_null()),
            )
        notes = "; ".join(n for n in (f"{capped} age(s) over 89 stored as 90 (HIPAA Safe Harbor)" if capped else "",
                                      offset_note(frame, table) or "", extra.note or "") if n) or None
        st.load = replace(st.load, rows_read=frame.height, rows_loaded=good.height, rows_quarantined=bad.height,
                          ignored_columns=ignored_cols, notes=notes)
        if st.load.rows_read != st.load.rows_loaded + st.load.rows_quarantined:
            raise RuntimeError(f"{path}: row accounting broken ({st.load}); this is a bug, please report it")
        st.good = good
        st.quarantine = problems.join(lines.pop(table), on="_row_number", how="left").sort(
            "_row_number", "column_name", "rule").select(
            pl.lit(st.load.batch_id).alias("batch_id"), pl.lit(table).alias("table_name"),
            pl.lit(str(path)).alias("source_file"), pl.col("_row_number").alias("row_number"),
            pl.col(LINE_NUMBER).alias("line_number"), "column_name", "rule", "reason")
        st.dq = dq_checks(table, rows_read=frame.height, text=frame, typed=typed, problems=problems).with_columns(
            pl.lit(st.load.batch_id).alias("batch_id"))
    _check_sessions_left_out(export_dir, files, loaded_tables, parent("courses").available(), registries)
    failpoint("ingest.before_write")

    # Everything read and checked: now write. The registry files first: the tables were checked against them.
    next_seq = (con.execute("SELECT coalesce(max(load_seq), 0) FROM meta_batches").fetchone()[0] or 0) + 1
    reg_loads = []
    new_seqs: dict[str, list[int]] = {}
    for r in regs:
        fl = FileLoad(r.name, str(r.path), r.batch_id, len(r.items), len(r.items), 0, r.skipped,
                      redelivery_of=r.redelivery_of, reloaded=None if r.skipped else reloads.get(r.sha))
        reg_loads.append(fl)
        if not r.skipped:
            append_registry_batch(con, r.name, r.items, r.batch_id, next_seq)
            _insert_batch(con, fl, next_seq, r.sha, "csv", loaded_at)
            next_seq += 1
    for table in ordered:
        st = staged[table]
        if st.load.skipped:
            continue
        fl, seq = st.load, next_seq
        next_seq += 1
        append_frame(con, f"raw_{table}", st.good.with_columns(
            pl.lit(fl.batch_id).alias("_batch_id"), pl.lit(seq, dtype=pl.Int32).alias("_load_seq")))
        new_seqs.setdefault(table, []).append(seq)
        append_frame(con, "quarantine", st.quarantine)
        append_frame(con, "dq_checks", st.dq)
        failpoint("ingest.mid_write")
        _insert_batch(con, fl, seq, st.sha, st.fmt, loaded_at)
    for fl, sha in [(st.load, st.sha) for st in staged.values()] + [(f, r.sha) for f, r in zip(reg_loads, regs)]:
        if fl.reloaded:
            mark_reloaded(con, sha, fl.batch_id)
    for table in TABLE_ORDER:  # only the keys of this load's batches; a rebuild when that cannot be done
        _ensure_raw(con, table)
        if not update_staging(con, table, new_seqs.get(table, ())):
            rebuild_staging(con, table)
    rebuild_registries(con)
    return IngestSummary(str(export_dir), tuple(staged[t].load for t in ordered), tuple(ignored_files),
                         tuple(reg_loads))
