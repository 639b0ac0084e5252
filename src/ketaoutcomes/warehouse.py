"""The only module that opens DuckDB.

Readers and writers never block each other
-----------------------------------------
DuckDB allows one writing process *or* many reading ones on a file. An analyst's
open read-only connection would make a scheduled write fail, and a running write
would lock analysts out. So the warehouse is published as immutable snapshots:

* readers (analysts, ``query``, the report) open the published file
  ``ketaoutcomes.duckdb`` read-only;
* a writer takes an exclusive writer lock (``ketaoutcomes.duckdb.lock``; writers
  queue behind each other, and one that waits says whose lock it waits for),
  copies the published file to a private staging file in the same folder, does
  all its work there, checkpoints, and publishes with an atomic ``os.replace``
  (keeping the published file's owner, group and mode). A reader that opened the
  old file keeps reading the old snapshot (POSIX keeps the unlinked inode alive);
  the next connection sees the new one.

A writer killed at any point (even ``kill -9``) leaves the published file exactly
as it was; its staging file is removed by the next writer, once the process that
wrote it has ended. A writer that fails (a full disk included) removes its own.
The files around the snapshot (lock, its holder, staging names) are
:mod:`ketaoutcomes.snapshots`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.contract import TABLES
from ketaoutcomes.failpoints import failpoint
from ketaoutcomes.registries.history import ensure_history
from ketaoutcomes.snapshots import (
    DiskFull,
    WarehouseBusy,
    acquire_writer_lock,
    disk_full_error,
    holder_path,
    is_disk_full,
    keep_attributes,
    lock_path,
    new_staging_file,
    remove_stale_staging,
    remove_staging_path,
)
from ketaoutcomes.table_contract import (
    LATEST_PREFIX,
    ContractError,
    TableContract,
    conform,
    latest_run_sql,
    latest_view_sql,
)

__all__ = ["DiskFull", "WarehouseBusy", "WarehouseChanged", "WarehouseMissing", "write_session",
           "read_connection", "published_mode", "ensure_schema", "table_exists", "relation_kind",
           "drop_relation", "fetch", "registered", "DUCKDB_ROW_GROUP",
           "fetch_owned", "fetch_rows", "sql_text", "replace_table", "append_frame", "write_table",
           "migrate_table", "create_latest_views"]

#: How long a writer waits for another writer before giving up with a clear error.
WRITER_LOCK_TIMEOUT_S = 600.0


class WarehouseMissing(FileNotFoundError):
    """The warehouse file does not exist yet."""


class WarehouseChanged(RuntimeError):
    """The published file was replaced while a writer worked on its copy (a second writer got in,
    e.g. after someone deleted the lock file): publishing would lose that writer's work."""


def _identity(path: Path) -> tuple | None:
    """What tells one published file from the next (a publish is a rename of a new file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def published_mode(path: Path) -> int:
    """The published file's current mode, or 0o666 less the process umask for a new one."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _discard(staging: Path) -> None:
    for p in (staging, Path(str(staging) + ".wal"), Path(str(staging) + ".tmp")):
        remove_staging_path(p)


@contextlib.contextmanager
def write_session(path: Path, *, lock_timeout: float = WRITER_LOCK_TIMEOUT_S, create: bool = True,
                  notice: Callable[[str], None] | None = None,
                  on_publish: Callable[[Path], None] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to a private copy of the warehouse, published
    atomically when the block exits without an exception (and discarded if it
    raises).

    Parameters
    ----------
    path : Path
        The published warehouse file; created (with the schema) if missing and ``create``.
    lock_timeout : float
        Seconds to wait for another writer.
    create : bool
        False for a step that works on data already loaded (validate, analyze): a missing
        warehouse (a mistyped --db) is :class:`WarehouseMissing`, and nothing is created,
        not even its folder or lock file.
    notice : callable, optional
        Where a one-line notice goes (default: stderr): that this writer waits for another
        one's lock, or that the published file's group could not be kept.
    on_publish : callable, optional
        Called with the finished staging file just before it is published (renamed onto
        ``path``): a :func:`read_connection` opened on it there keeps reading exactly this
        snapshot, whatever is published after it (the caller closes it, also when the publish
        then fails).

    Raises
    ------
    WarehouseBusy
        Another writer held the lock for ``lock_timeout`` s (the message names it).
    DiskFull
        The disk filled up; the staging copy is removed and nothing is published.
    WarehouseChanged
        The published file was replaced by someone else meanwhile; nothing is published.

    The published file keeps its owner (where permitted), group and mode
    (:func:`ketaoutcomes.snapshots.keep_attributes`). Any failure removes this writer's staging
    file and its WAL; only a killed writer leaves them, for the next writer to remove.
    """
    path = Path(path)
    if not create and not path.exists():
        raise WarehouseMissing(
            f"no warehouse at {path}; run `python -m ketaoutcomes ingest DIR --db {path}` (or `report --export DIR`) "
            "first, or check --db"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = acquire_writer_lock(path, lock_timeout, notice=notice)
    try:
        remove_stale_staging(path)
        staging = new_staging_file(path)
        try:
            copied_from = _identity(path)
            if copied_from is not None:
                shutil.copyfile(path, staging)
            else:
                staging.unlink()  # DuckDB must create the file itself
            failpoint("warehouse.after_copy")
            con = duckdb.connect(str(staging))
            try:
                ensure_schema(con)
                yield con
                failpoint("warehouse.checkpoint")
                con.execute("CHECKPOINT")
            finally:
                con.close()
            wal = Path(str(staging) + ".wal")
            if wal.exists():  # CHECKPOINT + close should have folded it in
                raise RuntimeError(f"DuckDB left a write-ahead log {wal}; not publishing a partial snapshot")
            with open(staging, "rb") as fh:
                os.fsync(fh.fileno())
            # mkstemp makes the file private (0600) and the writer's: the published file keeps
            # its owner, group and mode, so analysts keep reading it as before.
            for problem in keep_attributes(staging, path):
                (notice or _say)(f"warning: {path}: could not keep its {problem}; readers through that group may "
                                 "lose access (run the writer as a member of the group)")
            failpoint("warehouse.before_publish")
            if _identity(path) != copied_from:
                raise WarehouseChanged(
                    f"{path} was replaced while this run worked on its copy (another writer published: was "
                    f"{lock_path(path)} deleted?); nothing was published, so that writer's work is kept: run this "
                    "again")
            if on_publish is not None:
                on_publish(staging)
            os.replace(staging, path)
        except BaseException as exc:
            _discard(staging)
            if is_disk_full(exc):
                raise disk_full_error(path) from exc
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        holder_path(path).unlink(missing_ok=True)
        lock.release()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def read_connection(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published snapshot.

    The file is ATTACHed to a fresh in-memory database rather than opened with
    ``duckdb.connect(path)``: DuckDB caches one instance per path and process, so
    a second ``connect`` in a process that still holds the old snapshot open
    would be handed the old snapshot.
    """
    path = Path(path)
    if not path.exists():
        raise WarehouseMissing(
            f"no warehouse at {path}; run `python -m ketaoutcomes ingest DIR` or `python -m ketaoutcomes report` first"
        )
    con = duckdb.connect()
    escaped = str(path).replace("'", "''")
    con.execute(f"ATTACH '{escaped}' AS warehouse (READ_ONLY)")
    con.execute("USE warehouse")
    return con


# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------

_META_DDL = [
    """CREATE TABLE IF NOT EXISTS meta_batches (
        batch_id VARCHAR PRIMARY KEY,   -- '<table>-<first 16 hex of file sha256>' ('-r<k>': k-th re-delivery)
        load_seq INTEGER NOT NULL,      -- order of loading; later batches supersede earlier ones
        table_name VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        file_sha256 VARCHAR NOT NULL,
        file_format VARCHAR NOT NULL,
        rows_read BIGINT NOT NULL,
        rows_loaded BIGINT NOT NULL,
        rows_quarantined BIGINT NOT NULL,
        ignored_columns VARCHAR,
        loaded_at TIMESTAMP NOT NULL,   -- provenance only; never used in analysis
        notes VARCHAR,                  -- e.g. ages over 89 stored as 90
        rows_blank BIGINT,              -- blank rows skipped (not counted in rows_read)
        redelivery_of VARCHAR           -- the earlier batch whose content this file delivers again
    )""",
    """CREATE TABLE IF NOT EXISTS dq_checks (
        table_name VARCHAR NOT NULL,
        category VARCHAR NOT NULL,      -- conformance | completeness | plausibility (OHDSI DQD) | error
        check_id VARCHAR NOT NULL,
        column_name VARCHAR,
        rule VARCHAR NOT NULL,
        rows_tested BIGINT,
        rows_failing BIGINT,
        pct_failing DOUBLE,
        threshold_pct DOUBLE,
        status VARCHAR NOT NULL,        -- pass | fail | error (a check that could not run)
        error VARCHAR,
        batch_id VARCHAR NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS quarantine (
        batch_id VARCHAR NOT NULL,
        table_name VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        row_number BIGINT NOT NULL,     -- 1-based data row (the header is not counted, blank rows are)
        column_name VARCHAR,
        rule VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,        -- for a person; never contains the cell value
        line_number BIGINT              -- line of the CSV file where the row starts (header: line 1)
    )""",
    # One row per distinct step run: a run identical to an earlier row (same step, run_id,
    # fingerprint, settings_id, status, code_version and details, e.g. a no-op ingest of files
    # already loaded) counts itself on that row (runs + 1; started_at, seconds and seq of the
    # latest run) instead of adding one, so the table does not grow with repeated no-ops.
    """CREATE TABLE IF NOT EXISTS meta_steps (
        step VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,   -- what the step's output depends on
        settings_id VARCHAR,
        status VARCHAR NOT NULL,        -- 'ok' | 'failed' | 'rolled_back' (its data or outputs were rolled back)
        code_version VARCHAR NOT NULL,
        started_at TIMESTAMP NOT NULL,  -- of the latest run the row stands for
        seconds DOUBLE NOT NULL,
        details VARCHAR,                -- JSON; "batches": the batches in force when the step ran
        runs BIGINT DEFAULT 1,          -- how many identical runs the row stands for
        first_started_at TIMESTAMP,     -- start of the first of them
        seq BIGINT                      -- order of the steps' latest runs (1, 2, ...)
    )""",
    # Content that a rollback removed: ingest refuses a file with it again unless told to load it.
    """CREATE TABLE IF NOT EXISTS meta_rolled_back (
        file_sha256 VARCHAR NOT NULL,   -- the content removed
        batch_id VARCHAR NOT NULL,      -- the batch that had loaded it
        table_name VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        rolled_back_at TIMESTAMP NOT NULL,
        rollback_target VARCHAR NOT NULL,  -- the batch or step the rollback went back to before
        reloaded_as VARCHAR             -- the batch that loaded it again (ingest --reload-rolled-back)
    )""",
]

#: Columns added to a table after its first version: (table, column, type), added by
#: :func:`ensure_schema` to a warehouse written before them.
_ADDED_COLUMNS = [
    ("meta_steps", "runs", "BIGINT DEFAULT 1"),
    ("meta_steps", "first_started_at", "TIMESTAMP"),
    ("meta_steps", "seq", "BIGINT"),
    ("meta_batches", "rows_blank", "BIGINT"),
    ("meta_batches", "redelivery_of", "VARCHAR"),
    ("quarantine", "line_number", "BIGINT"),
]


def _raw_ddl(table: str) -> str:
    cols = ", ".join(f'"{c.name}" {c.dtype}' for c in TABLES[table].columns)
    return (
        f"CREATE TABLE IF NOT EXISTS raw_{table} ({cols}, "
        "_batch_id VARCHAR NOT NULL, _row_number BIGINT NOT NULL, _load_seq INTEGER NOT NULL)"
    )


#: Columns added since the first version of the tables above: a warehouse written before gets them.


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables every later step relies on (idempotent)."""
    for ddl in _META_DDL:
        con.execute(ddl)
    for table, column, dtype in _ADDED_COLUMNS:
        con.execute(f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "{column}" {dtype}')
    for t in TABLES:
        con.execute(_raw_ddl(t))
    ensure_history(con)  # raw_arms / raw_instruments; a warehouse without them keeps its registries as the base


# ---------------------------------------------------------------------------
# Small helpers used by the steps
# ---------------------------------------------------------------------------

def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the warehouse has a table or a view ``name`` (``stg_<table>`` is a view of
    ``raw_<table>`` while that holds one batch: :func:`ketaoutcomes.ingest.load.rebuild_staging`)."""
    return relation_kind(con, name) is not None


def relation_kind(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """``"table"``, ``"view"`` or None: what ``name`` is in the warehouse's main schema."""
    row = con.execute(
        f"SELECT 'table' FROM duckdb_tables() WHERE table_name = {_literal(name)} "
        "AND database_name = current_database() AND schema_name = 'main' "
        f"UNION ALL SELECT 'view' FROM duckdb_views() WHERE view_name = {_literal(name)} "
        "AND database_name = current_database() AND schema_name = 'main' AND NOT internal"
    ).fetchone()
    return None if row is None else row[0]


def drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop table or view ``name`` if there is one (DuckDB's DROP names the kind)."""
    kind = relation_kind(con, name)
    if kind is not None:
        con.execute(f"DROP {kind.upper()} {_quote(name)}")


def sql_text(value: str) -> str:
    """``value`` as a DuckDB text literal (quotes doubled), for SQL built from known values."""
    return "'" + value.replace("'", "''") + "'"


def _literal(value: object) -> str | None:
    """``value`` as a DuckDB literal (str, int, bool, None, or a list of them); None for any other type."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str) and "\0" not in value:
        return sql_text(value)
    if isinstance(value, (list, tuple)):
        items = [_literal(v) for v in value]
        return None if None in items or any(isinstance(v, (list, tuple)) for v in value) else f"[{', '.join(items)}]"
    return None


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list | None) -> duckdb.DuckDBPyConnection:
    """``con.execute(sql, params)``; parameters that are strings, integers, booleans or None (or lists
    of them) are bound as the literal arguments of a prepared statement (``PREPARE``/``EXECUTE``), not
    by DuckDB's Python binding, which imports pandas (0.5-1 s) on first use: a command that reads a few
    rows (``report`` with nothing changed) should not pay that. Other values go through DuckDB's binding."""
    if not params:
        return con.execute(sql)
    literals = [_literal(v) for v in params]
    if None in literals:
        return con.execute(sql, params)
    con.execute(f"PREPARE ketaoutcomes_fetch AS {sql}")
    return con.execute(f"EXECUTE ketaoutcomes_fetch({', '.join(literals)})")


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    """Run a query and return a polars frame (parameters bound as :func:`_run` says)."""
    return _run(con, sql, params).pl()


def fetch_owned(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, *,
                batch_rows: int = 1_000_000) -> pl.DataFrame:
    """:func:`fetch` for a large result held long: read in batches that polars copies into one chunk of
    its own, freeing DuckDB's result buffers, which ``.pl()`` keeps (docs/scaling.md: at a million
    patients 1.4 GB resident for the 0.42 GB frame of the ratings). One batch is kept as it is."""
    reader = _run(con, sql, params).to_arrow_reader(batch_rows)
    parts = [pl.from_arrow(batch) for batch in reader] or [pl.from_arrow(reader.schema.empty_table())]
    return pl.concat(parts, how="vertical", rechunk=True)


def fetch_rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    """Run a query and return its rows as dicts of Python values, without pyarrow (which a frame
    needs, and whose import costs as much as the query of a few rows ``report`` makes when nothing
    changed)."""
    cur = _run(con, sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


#: DuckDB's row group (rows). A frame handed to DuckDB goes in Arrow batches of this size: its scan, and an
#: insert from it, take one thread per batch, so a frame of one chunk was written on one thread (at 1M
#: patients ad_adtte's 5.9M rows: 13.3 s, against 7.1 s in batches, the same rows in the same order).
DUCKDB_ROW_GROUP = 122_880


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> Iterator[None]:
    """``frame`` readable as ``name`` in ``con`` for the block, as Arrow batches of :data:`DUCKDB_ROW_GROUP` rows."""
    import pyarrow as pa  # (as polars' to_arrow does: not imported by a command that only reads)

    table = frame.to_arrow()
    con.register(name, pa.Table.from_batches(table.to_batches(max_chunksize=DUCKDB_ROW_GROUP), schema=table.schema))
    try:
        yield
    finally:
        con.unregister(name)


def replace_table(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame, *, temporary: bool = False) -> None:
    """Create or replace table ``name`` (``temporary``: a temporary table of this connection) with
    the content of ``frame``."""
    with registered(con, "_frame_in", frame):
        con.execute(f'CREATE OR REPLACE {"TEMP " if temporary else ""}TABLE "{name}" AS SELECT * FROM _frame_in')


def append_frame(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> None:
    """Append ``frame`` to table ``name`` (created from the frame if missing), by column name."""
    if frame.is_empty() and table_exists(con, name):
        return
    with registered(con, "_frame_in", frame):
        if table_exists(con, name):
            # A newer version of the code may add columns: add them to the stored table
            # (earlier rows get nulls) rather than refuse the write.
            have = {r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()}
            for col, dtype, *_ in con.execute("DESCRIBE SELECT * FROM _frame_in").fetchall():
                if col not in have:
                    con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col}" {dtype}')
            con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM _frame_in')
        else:
            con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _frame_in')


# ---------------------------------------------------------------------------
# Contracted tables (ad_*, results_*)
# ---------------------------------------------------------------------------

def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def migrate_table(con: duckdb.DuckDBPyConnection, contract: TableContract) -> list[str]:
    """Create ``contract``'s table with the declared types if it is missing, or bring a table
    written by an earlier version in line with the contract when that loses nothing: a missing
    column is added (earlier rows get nulls), a column of another type is converted when every
    stored value converts and back unchanged (e.g. an all-null INTEGER column to VARCHAR), an
    undeclared column holding only nulls is dropped.

    Returns
    -------
    list of str
        What was done, one entry per statement (empty when the table already conformed).

    Raises
    ------
    ContractError
        A stored value that does not convert, or an undeclared column with values; the message
        names table and column and says what to do.
    """
    t = contract.name
    if not table_exists(con, t):
        con.execute(contract.ddl())
        return [f"created {t}"]
    done = []
    stored = {r[0]: r[1] for r in con.execute(f"DESCRIBE {_quote(t)}").fetchall()}
    for c in contract.columns:
        q = _quote(c.name)
        if c.name not in stored:
            con.execute(f"ALTER TABLE {_quote(t)} ADD COLUMN {q} {c.dtype}")
            done.append(f"{t}.{c.name}: added as {c.dtype}")
        elif stored[c.name] != c.dtype:
            have = stored[c.name]
            n_bad, example = con.execute(
                f"SELECT count(*), any_value({q}::VARCHAR) FROM {_quote(t)} WHERE {q} IS NOT NULL AND "
                f"(TRY_CAST({q} AS {c.dtype}) IS NULL OR TRY_CAST(TRY_CAST({q} AS {c.dtype}) AS {have}) "
                f"IS DISTINCT FROM {q})"
            ).fetchone()
            if n_bad:
                raise ContractError(
                    f"{t}.{c.name}: stored as {have}, the contract declares {c.dtype}, and {n_bad} stored value(s) "
                    f"do not convert without loss (e.g. {example!r}); convert or rename the column by hand "
                    f"(ALTER TABLE {t} ...), or rename the table (ALTER TABLE {t} RENAME TO {t}_old) so the next "
                    "run creates it anew")
            con.execute(f"ALTER TABLE {_quote(t)} ALTER COLUMN {q} TYPE {c.dtype}")
            done.append(f"{t}.{c.name}: {have} -> {c.dtype}")
    for name in stored:
        if name in contract.column_names:
            continue
        q = _quote(name)
        n_values = con.execute(f"SELECT count({q}) FROM {_quote(t)}").fetchone()[0]
        if n_values:
            raise ContractError(
                f"{t}.{name}: stored column not in the table's contract, with {n_values} value(s) from earlier runs; "
                f"drop it (ALTER TABLE {t} DROP COLUMN {name}) if they are not needed, or declare the column in "
                "the contract")
        con.execute(f"ALTER TABLE {_quote(t)} DROP COLUMN {q}")
        done.append(f"{t}.{name}: dropped (not in the contract, no values)")
    return done


def write_table(con: duckdb.DuckDBPyConnection, contract: TableContract, frame: pl.DataFrame) -> int:
    """Append ``frame`` to ``contract``'s table, enforcing the contract.

    The frame is conformed (:func:`ketaoutcomes.table_contract.conform`: declared columns and
    types, lossless casts only, nullability, unique keys), the table created or migrated
    (:func:`migrate_table`), and the rows inserted by column name. A row whose key is already
    stored is refused too.

    Returns
    -------
    int
        Rows written.

    Raises
    ------
    ContractError
        The frame or the stored table breaks the contract.
    """
    rows = conform(frame, contract)
    migrate_table(con, contract)
    if rows.is_empty():
        return 0
    with registered(con, "_frame_in", rows):
        t, key = _quote(contract.name), [_quote(k) for k in contract.key]
        clash = con.execute(
            f"SELECT count(*) FROM _frame_in f JOIN {t} s ON " + " AND ".join(f"f.{k} = s.{k}" for k in key)
        ).fetchone()[0]
        if clash:
            raise ContractError(
                f"{contract.name}: {clash} row(s) have a key ({', '.join(contract.key)}) that is already stored; "
                "delete the run's earlier rows before writing it again")
        con.execute(f"INSERT INTO {t} BY NAME SELECT * FROM _frame_in")
    return rows.height


def create_latest_views(con: duckdb.DuckDBPyConnection, contracts: Iterable[TableContract]) -> list[str]:
    """Create (or replace) the analysts' views: ``latest_run`` (each study's latest analysis run,
    from results_runs) and one ``latest_<table>`` per contract
    (:func:`ketaoutcomes.table_contract.latest_view`). Each contracted table is first created or
    migrated (:func:`migrate_table`), so every view has its table with every declared column even
    when no run has written a row to it yet. A ``latest_`` view left by an earlier version whose
    table has no contract any more is dropped.

    Called by the analysis in its write session: a published snapshot never has tables without
    their views, nor views of an older contract.

    Returns
    -------
    list of str
        The views, in the order they were created.
    """
    contracts = list(contracts)
    if "results_runs" not in {c.name for c in contracts}:
        raise ValueError("the latest_ views need the contract of results_runs")
    for c in contracts:
        migrate_table(con, c)
    con.execute(latest_run_sql())
    made = ["latest_run"]
    for c in contracts:
        con.execute(latest_view_sql(c))
        made.append(LATEST_PREFIX + c.name)
    stale = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND starts_with(view_name, ?) AND NOT list_contains(?, view_name)", [LATEST_PREFIX, made]).fetchall()
    for (name,) in stale:
        con.execute(f"DROP VIEW {_quote(name)}")
    return made
