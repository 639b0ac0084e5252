"""Quarantine and idempotent, versioned loading of an export folder.

How a file goes in: it is streamed once into a scratch Parquet file of text and scanned on the way
(value lengths, the PHI guard's candidate rows, time zones: :mod:`ketaoutcomes.ingest.read`); its
rows are typed in DuckDB into another scratch Parquet file (:mod:`ketaoutcomes.ingest.typed`); the
row rules (:mod:`ketaoutcomes.ingest.rules`) run in polars only on the typed rows DuckDB finds a
rule could flag (:mod:`ketaoutcomes.ingest.suspects`; duplicates only on the rows of keys DuckDB
finds repeated); the good rows go from the typed file into ``raw_<table>`` with ``INSERT ...
SELECT``. No file is held in memory as text, nor typed (the patients file, one row per patient, is:
its ages are capped and its own columns kept, in polars). The folder's files are found by
:mod:`ketaoutcomes.ingest.folder`.

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

import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.contract import TABLE_ORDER, TABLES, polars_schema
from ketaoutcomes.failpoints import failpoint
from ketaoutcomes.ingest.deliveries import (
    check_rolled_back,
    mark_reloaded,
    new_batch_id,
    registry_deliveries,
)
from ketaoutcomes.ingest.errors import IngestError
from ketaoutcomes.ingest.extra import EXTRA_TABLE, ExtraColumns, extra_columns
from ketaoutcomes.ingest.folder import check_export_folder, find_export_files
from ketaoutcomes.ingest.limits import (
    MemoryBudget,
    check_table_file,
    duckdb_threads,
    memory_limit,
    memory_limit_source,
    open_regular,
)
from ketaoutcomes.ingest.phi import (
    PhiAllowList,
    PhiError,
    PhiFinding,
    cap_age,
    header_labels,
)
from ketaoutcomes.ingest.read import TextFile, line_numbers, read_text, scratch_folder, text_frame
from ketaoutcomes.ingest.text import LINE_NUMBER
from ketaoutcomes.ingest.rules import (
    Parent,
    dq_checks,
    duplicate_problems,
    one_problem_per_cell,
    reference_problems,
    row_problems,
    row_rule_columns,
    session_course_problems,
)
from ketaoutcomes.ingest.staging import update_staging
from ketaoutcomes.ingest.suspects import range_counts, suspect_rows
from ketaoutcomes.ingest.typed import type_rows
from ketaoutcomes.registries import Registries, load_registries
from ketaoutcomes.registries.history import append_registry_batch, rebuild_registries
from ketaoutcomes.warehouse import (append_frame, drop_relation, fetch, fetch_rows, registered, replace_table, sql_text,
                                    table_exists)

__all__ = ["FileLoad", "IngestError", "IngestSummary", "PhiRefused", "check_export_folder", "find_export_files",
           "ingest_export", "read_table_file"]

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


#: A message lists at most this many of a file's columns.
_SHOW_COLUMNS = 30


def _contract_columns(headers: list[str], table: str, path: Path) -> tuple[str, ...]:
    """The names of a file's columns beyond the contract (they are not stored: they could carry
    identifiers); missing optional columns are nulls. Raises when a required column is missing."""
    spec = TABLES[table]
    present = set(headers)
    contract = set(spec.column_names)
    missing = [c for c in spec.required_columns if c not in present]
    # Headers are printed and stored only when shaped like column names; any other is "#N", its
    # position: a stray quote or a missing header row puts data (or a name) where the header belongs.
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
    return tuple(label for c, label in zip(headers, labels) if c not in contract)


def read_table_file(path: Path, table: str) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Read one file as text: the contract's columns plus ``_row_number``, and the ignored column
    names. (Holds the file in memory: for small files and tests; ingest streams it.)"""
    path = Path(path)
    with scratch_folder("ketaoutcomes-read-") as scratch:
        tf = read_text(path, scratch / "text.parquet", table=table, allow=PhiAllowList())
        ignored = _contract_columns(tf.headers, table, path)
        frame = text_frame(tf)
    spec = TABLES[table]
    frame = frame.with_columns([pl.lit(None, dtype=pl.String).alias(c) for c in spec.column_names
                                if c not in frame.columns])
    return frame.select("_row_number", *spec.column_names), ignored


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


def rebuild_staging(con: duckdb.DuckDBPyConnection, table: str, *, in_order: bool = False) -> None:
    """stg_<table> = for each key, the rows of the latest batch that carried it.

    While raw_<table> holds one batch (or none), that is every row of it: stg_<table> is then a
    view, ``SELECT * EXCLUDE (_load_seq) FROM raw_<table>``, not a second copy of every row (at
    1,000,000 patients 12 s of the ingest and half the file). Its rows come in raw_<table>'s
    order, which must be ``_row_number`` order: ``in_order`` when the caller wrote them so, else
    checked (a table sorted by ``_row_number`` if not). With more batches stg_<table> is a table
    (:func:`staging_sql`), kept up to date by :func:`ketaoutcomes.ingest.staging.update_staging`,
    which turns the view into a table when a second batch comes."""
    stg = f"stg_{table}"
    if con.execute(f"SELECT count(DISTINCT _load_seq) <= 1 FROM raw_{table}").fetchone()[0]:
        drop_relation(con, stg)
        if in_order or _in_row_order(con, f"raw_{table}"):
            con.execute(f"CREATE VIEW {stg} AS SELECT * EXCLUDE (_load_seq) FROM raw_{table}")
        else:
            con.execute(f"CREATE TABLE {stg} AS SELECT * EXCLUDE (_load_seq) FROM raw_{table} ORDER BY _row_number")
    else:
        query = staging_sql(table)
        drop_relation(con, stg)
        con.execute(f"CREATE TABLE {stg} AS {query}")


def _in_row_order(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether table ``name`` is stored in increasing ``_row_number`` order."""
    return not con.execute(f"SELECT count(*) FROM (SELECT _row_number <= lag(_row_number) OVER () AS back FROM {name}) "
                           "WHERE back").fetchone()[0]


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
    quarantine: pl.DataFrame | None = None
    dq: pl.DataFrame | None = None
    extra: bool = False  # the patients file's own columns kept (temporary table _extra_patients)


def _append_query(con: duckdb.DuckDBPyConnection, name: str, query: str) -> None:
    """Append the rows of SQL ``query`` to table ``name`` (created from the query if missing), by
    column name; columns a newer version of the code added are added to the stored table (earlier
    rows get nulls), as :func:`ketaoutcomes.warehouse.append_frame` does for a frame."""
    if not table_exists(con, name):
        con.execute(f'CREATE TABLE "{name}" AS {query}')
        return
    have = {r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()}
    for col, dtype, *_ in con.execute(f"DESCRIBE {query}").fetchall():
        if col not in have:
            con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col}" {dtype}')
    con.execute(f'INSERT INTO "{name}" BY NAME {query}')


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

    # Each file is streamed once into a scratch Parquet file of text (ingest.read), scanned on the way.
    with scratch_folder("ketaoutcomes-ingest-") as scratch:
        texts: dict[str, TextFile] = {}
        findings: list[PhiFinding] = []
        for i, table in enumerate(ordered):
            st = staged[table]
            if st.load.skipped:
                continue
            path = files[table]
            if progress:
                progress(f"reading {path.name}", i, len(ordered))
            budget.current = path
            budget.admit(path, check_table_file(path, table))
            texts[table] = tf = read_text(path, scratch / f"{table}.parquet", table=table, allow=allow)
            findings += tf.findings
            st.load = FileLoad(table, str(path), st.load.batch_id, tf.rows_read, 0, 0, False, rows_blank=tf.rows_blank,
                               redelivery_of=st.load.redelivery_of, reloaded=reloads.get(st.sha))
        for r in regs:  # the registry files: labels and descriptions are stored and shown in the report
            if not r.skipped:
                findings += read_text(r.path, scratch / f"registry_{r.name}.parquet", table=r.name, allow=allow,
                                      check_lengths=False).findings
        if findings:
            raise PhiRefused(findings)
        try:
            _check_tables(con, ordered, staged, texts, export_dir, files, loaded_tables, registries, allow, budget,
                          progress, scratch)
            failpoint("ingest.before_write")
            # One thread appends to a table that holds rows: DuckDB's parallel INSERT leaves the row groups it
            # merges as free blocks in the file. A table's first batch is written on every thread (_write), from
            # a typed file of row groups that fit DuckDB's (typed.TYPED_ROW_GROUP): whole row groups, no free
            # block (at 1M patients half the time); its stg_<table> is a view of it (rebuild_staging).
            threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
            with duckdb_threads(con, 1):
                return _write(con, export_dir, ordered, staged, regs, reloads, ignored_files, loaded_at, int(threads))
        finally:  # the views of the scratch files go with them
            _drop_temporaries(con, ordered)


def _drop_temporaries(con: duckdb.DuckDBPyConnection, tables: list[str]) -> None:
    with contextlib.suppress(duckdb.Error):  # (an invalidated connection: the error on the way out is the one to see)
        for table in tables:
            con.execute(f"DROP VIEW IF EXISTS _typed_{table}")
            con.execute(f"DROP TABLE IF EXISTS _bad_{table}")
        con.execute("DROP TABLE IF EXISTS _extra_patients")
        con.execute("DROP TABLE IF EXISTS _text_patients")


def _check_tables(con: duckdb.DuckDBPyConnection, ordered: list[str], staged: dict[str, _Staged],
                  texts: dict[str, TextFile], export_dir: Path, files: dict[str, Path], loaded_tables: list[str],
                  registries: Registries, allow: PhiAllowList, budget: MemoryBudget, progress: Progress | None,
                  scratch: Path) -> None:
    """Type and check every file read (in load order: parents first), into ``_typed_<table>`` (its
    rows typed: a view of a Parquet file in ``scratch``) and ``_bad_<table>`` (the row numbers
    quarantined)."""
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
        tf = texts.pop(table)
        capped, extra = 0, ExtraColumns(None, (), ())
        source, refs = tf.source(), {c: tf.ref(c) for c in TABLES[table].column_names}
        if table == EXTRA_TABLE:  # the patients file (one row per patient): its ages capped, its own columns
            text, capped = cap_age(text_frame(tf))
            ignored_cols = _contract_columns(tf.headers, table, path)
            extra = extra_columns(text, table, allow.allowed_columns(table))
            # (the contract's columns only: DuckDB's names are case-insensitive, a file's may differ in case)
            with registered(con, "_text_in", text.select("_row_number", *[c for c in TABLES[table].column_names
                                                                          if c in text.columns])):
                con.execute("CREATE OR REPLACE TEMP TABLE _text_patients AS SELECT * FROM _text_in")
            del text
            source, refs = "_text_patients", {c: c if c in tf.headers else None for c in TABLES[table].column_names}
        else:
            ignored_cols = _contract_columns(tf.headers, table, path)
        ignored_cols = tuple(c for c in ignored_cols if c not in extra.kept)
        if tf.offsets is not None and (zones := tf.offsets.problem()) is not None:
            raise IngestError(f"{path}: {zones}; nothing was loaded")
        problems, present = type_rows(con, source, refs, table, f"_typed_{table}", scratch / f"typed_{table}.parquet",
                                      tf.offsets.unzoned() if tf.offsets is not None else ())
        con.execute("DROP TABLE IF EXISTS _text_patients")
        target = f"_typed_{table}"
        rows_read = con.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
        exempt = allow.allowed_columns(table)
        refs_to = {r.to_table: parent(r.to_table) for r in TABLES[table].references}
        if extra.frame is not None:  # the patients file's own columns, kept as text (ingest.extra)
            names = ", ".join(f'"{c}"' for c in TABLES[table].column_names)
            typed = fetch(con, f"SELECT _row_number, {names} FROM {target}").join(extra.frame, on="_row_number",
                                                                                 how="left")
            replace_table(con, "_extra_patients", extra.frame, temporary=True)
            st.extra = True
        else:  # only the rows a rule could flag come into polars (ingest.suspects)
            typed = suspect_rows(con, table, target, registries, exempt,
                                 {name: p.available() for name, p in refs_to.items()},
                                 parent("courses").available() if table == "sessions" else None)
        # Each row on its own first; then keys among the rows still standing.
        checks = [problems, row_problems(table, typed.select(row_rule_columns(table)), registries, exempt)]
        if table == "sessions":
            checks.append(session_course_problems(typed.select(_SESSION_COURSE_COLUMNS),
                                                  parent("courses").available(), registries))
        if TABLES[table].references:
            checks.append(reference_problems(table, typed.select("_row_number", *(r.column for r in
                                                                                  TABLES[table].references)),
                                             refs_to))
        del typed
        own = one_problem_per_cell(pl.concat([c for c in checks if c.height] or [problems], how="vertical"))
        # duplicate keys: only the rows of keys that appear more than once (found in DuckDB) are compared
        standing = _repeated_keys(con, table, extra.frame).join(own.select("_row_number").unique(),
                                                                on="_row_number", how="anti")
        problems = pl.concat([own, duplicate_problems(table, standing)], how="vertical_relaxed")
        del standing
        bad = problems.select("_row_number").unique()
        replace_table(con, f"_bad_{table}", bad, temporary=True)
        if table in _PARENT_COLUMNS:
            cols = _PARENT_COLUMNS[table]
            key = cols[0]
            keys = fetch(con, f"SELECT _row_number, {', '.join(cols)} FROM {target}")
            parents[table] = Parent(
                table, path.name, keys.join(bad, on="_row_number", how="anti").select(cols) if bad.height
                else keys.select(cols), _stored(con, table, cols),
                keys.join(bad, on="_row_number", how="semi").group_by(key).agg(pl.col("_row_number").min())
                .filter(pl.col(key).is_not_null()),
            )
            del keys
        notes = "; ".join(n for n in (f"{capped} age(s) over 89 stored as 90 (HIPAA Safe Harbor)" if capped else "",
                                      (tf.offsets.note() if tf.offsets is not None else None) or "",
                                      extra.note or "") if n) or None
        st.load = replace(st.load, rows_read=rows_read, rows_loaded=rows_read - bad.height,
                          rows_quarantined=bad.height, ignored_columns=ignored_cols, notes=notes)
        if st.load.rows_read != tf.rows_read:
            raise RuntimeError(f"{path}: row accounting broken ({st.load}); this is a bug, please report it")
        st.quarantine = problems.join(line_numbers(con, tf, bad["_row_number"]), on="_row_number", how="left").sort(
            "_row_number", "column_name", "rule").select(
            pl.lit(st.load.batch_id).alias("batch_id"), pl.lit(table).alias("table_name"),
            pl.lit(str(path)).alias("source_file"), pl.col("_row_number").alias("row_number"),
            pl.col(LINE_NUMBER).alias("line_number"), "column_name", "rule", "reason")
        st.dq = dq_checks(table, rows_read=rows_read, present=present, typed=None, problems=problems,
                          ranges=range_counts(con, table, target)).with_columns(
            pl.lit(st.load.batch_id).alias("batch_id"))
    _check_sessions_left_out(export_dir, files, loaded_tables, parent("courses").available(), registries)


#: What :func:`ketaoutcomes.ingest.rules.session_course_problems` reads of a sessions row.
_SESSION_COURSE_COLUMNS = ("_row_number", "course_id", "session_ts", "dose_mg", "dose_mg_per_kg")


def _repeated_keys(con: duckdb.DuckDBPyConnection, table: str, extra: pl.DataFrame | None) -> pl.DataFrame:
    """``_row_number`` and the contract's columns (and the patients file's own, ``extra``) of the rows
    of ``_typed_<table>`` whose key (no part of it null) appears on more than one row, in
    ``_row_number`` order: all that :func:`ketaoutcomes.ingest.rules.duplicate_problems` can flag."""
    key = ", ".join(f'"{k}"' for k in TABLES[table].key)
    not_null = " AND ".join(f'"{k}" IS NOT NULL' for k in TABLES[table].key)
    names = ", ".join(f'"{c}"' for c in TABLES[table].column_names)
    rows = fetch(con, f"SELECT _row_number, {names} FROM _typed_{table} SEMI JOIN (SELECT {key} FROM _typed_{table} "
                      f"WHERE {not_null} GROUP BY ALL HAVING count(*) > 1) USING ({key}) ORDER BY _row_number")
    return rows if extra is None else rows.join(extra, on="_row_number", how="left", maintain_order="left")


def _write(con: duckdb.DuckDBPyConnection, export_dir: Path, ordered: list[str], staged: dict[str, _Staged], regs,
           reloads: dict, ignored_files: list[str], loaded_at: dt.datetime, threads: int) -> IngestSummary:
    """Everything read and checked: now write. The registry files first: the tables were checked
    against them. A table's good rows go from ``_typed_<table>`` to ``raw_<table>`` in DuckDB."""
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
    fresh: set[str] = set()
    for table in ordered:
        st = staged[table]
        if st.load.skipped:
            continue
        fl, seq = st.load, next_seq
        next_seq += 1
        if not table_exists(con, f"raw_{table}") or not con.execute(f"SELECT count(*) FROM raw_{table}").fetchone()[0]:
            fresh.add(table)  # raw_<table> will hold this batch only, in _row_number order
        cols = ", ".join(f't."{c}"' for c in TABLES[table].column_names)
        extra = (", e._extra", " LEFT JOIN _extra_patients e USING (_row_number)") if st.extra else ("", "")
        with duckdb_threads(con, threads if table in fresh else None):  # (else the one thread _ingest set)
            _append_query(con, f"raw_{table}",
                          f"SELECT t._row_number, {cols}{extra[0]}, {sql_text(fl.batch_id)} AS _batch_id, "
                          f"CAST({seq} AS INTEGER) AS _load_seq FROM _typed_{table} t{extra[1]} "
                          + (f"ANTI JOIN _bad_{table} b USING (_row_number) " if fl.rows_quarantined else "")
                          # _typed_<table> is in _row_number order; a join may not keep it
                          + ("ORDER BY t._row_number" if fl.rows_quarantined or st.extra else ""))
        new_seqs.setdefault(table, []).append(seq)
        con.execute(f"DROP VIEW IF EXISTS _typed_{table}")
        for temp in (f"_bad_{table}", *(["_extra_patients"] if st.extra else [])):
            con.execute(f"DROP TABLE IF EXISTS {temp}")
        append_frame(con, "quarantine", st.quarantine)
        append_frame(con, "dq_checks", st.dq)
        failpoint("ingest.mid_write")
        _insert_batch(con, fl, seq, st.sha, st.fmt, loaded_at)
    for fl, sha in [(st.load, st.sha) for st in staged.values()] + [(f, r.sha) for f, r in zip(reg_loads, regs)]:
        if fl.reloaded:
            mark_reloaded(con, sha, fl.batch_id)
    for table in TABLE_ORDER:  # only the keys of this load's batches; a rebuild when that cannot be done
        _ensure_raw(con, table)
        if table in fresh:  # one batch, written in _row_number order: a view of it
            rebuild_staging(con, table, in_order=True)
        elif not update_staging(con, table, new_seqs.get(table, ()), threads=threads):
            rebuild_staging(con, table)
    rebuild_registries(con)
    return IngestSummary(str(export_dir), tuple(staged[t].load for t in ordered), tuple(ignored_files),
                         tuple(reg_loads))
