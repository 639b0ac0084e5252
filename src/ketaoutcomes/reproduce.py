"""``python -m ketaoutcomes reproduce REPORT``: rebuild a report's run from its raw batches and check
that every stored estimate comes out identical.

A report carries a run record (:mod:`ketaoutcomes.report.record`): the analysis run, the batches in
force with their content hashes, the study specification (its JSON text and id), the code version,
the warehouse, and a digest of every column of every ``ad_*`` / ``results_*`` table of the run.
:func:`reproduce_report`

1. reads the record and checks the page against its digest (an edited report is refused);
2. opens the warehouse read-only (the one the record names, or ``db``) and finds every batch of the
   record there with the same content hash and as many raw rows as were loaded (a batch rolled back,
   missing or different is refused, one line naming it), and the run itself;
3. checks the run's stored rows against the record's digests (a table changed in the warehouse since
   the report was rendered is named, and the comparison goes on);
4. rebuilds a scratch warehouse (a temporary folder, removed at the end unless ``keep``) from the raw
   rows of exactly those batches, in their load order, registry files included, and rebuilds
   ``stg_*`` and the registries in force from them with the code ingest and rollback use
   (:func:`ketaoutcomes.ingest.load.rebuild_staging`,
   :func:`ketaoutcomes.registries.history.rebuild_registries`). The raw rows are the rows as loaded
   (typed, checked, quarantine applied), so the export files need not exist any more;
5. validates and analyses the scratch warehouse with the saved specification
   (:func:`ketaoutcomes.pipeline.analyze_step`, as ``analyze`` does);
6. compares every table of the run, row by row (matched by the table's key), column by column, floats
   by their bits: one :class:`TableCheck` per table, identical or what differs.

Not compared, because they differ by nature (:data:`NOT_COMPARED`): the run's ids, when it started,
how long it took and the code version (said before the comparison when it differs). No tolerance is
applied anywhere: two runs of the analysis on the same data are identical to the last bit
(``results_safety`` was made deterministic for this), so a difference of one unit in the last place
is a difference.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from ketaoutcomes.contract import TABLE_ORDER
from ketaoutcomes.ingest.load import rebuild_staging
from ketaoutcomes.pipeline import AnalysisNotReady, Progress, analyze_step, announced, output_contracts
from ketaoutcomes.registries.history import HISTORY_TABLES, REF_TABLES, ensure_history, rebuild_registries
from ketaoutcomes.report.load import run_tables
from ketaoutcomes.report.record import RecordError, canonical_order, float_bits, read_record, table_digest
from ketaoutcomes.settings import StudySettings
from ketaoutcomes.step_records import code_version, data_fingerprint
from ketaoutcomes.warehouse import fetch_rows, read_connection, table_exists, write_session

__all__ = ["NOT_COMPARED", "ReproduceRefused", "Reproduction", "TableCheck", "compare_rows", "reproduce_report"]

#: Columns never compared, each with why: the only ones. ``TABLE.column`` is that table's column,
#: a bare name that column in every table. Nothing else is left out: no path or clock is stored in
#: an ``ad_*`` / ``results_*`` table besides these.
NOT_COMPARED: dict[str, str] = {
    "run_id": "the analysis run's id, a hash of the data, the settings and the code version",
    "settings_id": "the settings' id, a hash of results_runs.settings_json, which is compared",
    "results_runs.started_at": "when the run started (wall clock, provenance only)",
    "results_runs.seconds": "how long the run took",
    "results_runs.code_version": "the code that ran; a difference is said before the comparison",
}
#: How much of a report file is read (no report comes near it; a larger file has no valid record).
MAX_REPORT_BYTES = 512 * 2**20


class ReproduceRefused(ValueError):
    """The run cannot be reproduced from what is given: no report, no record, an edited report, a
    batch missing or changed, another warehouse (one line saying which and what to do)."""


@dataclass(frozen=True)
class TableCheck:
    """One table of the run: identical, or what differs (``problem``, one line without the table name)."""

    table: str
    rows: int
    problem: str | None = None

    @property
    def identical(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        rows = f"{self.rows:,} row{'' if self.rows == 1 else 's'}"
        return f"{self.table}: identical ({rows})" if self.identical else f"{self.table}: {self.problem}"


@dataclass
class Reproduction:
    """What :func:`reproduce_report` found: the record, notes said before the comparison, one check
    per table and the problems of the run as a whole (a validation that failed on the rebuilt data)."""

    report: Path
    warehouse: Path
    record: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    checks: list[TableCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: The scratch warehouse, when kept.
    scratch: Path | None = None

    @property
    def identical(self) -> bool:
        return not self.problems and bool(self.checks) and all(c.identical for c in self.checks)

    def summary(self) -> str:
        run = self.record["run_id"]
        if self.identical:
            rows = sum(c.rows for c in self.checks)
            return (f"reproduced: analysis run {run} of {self.report.name}, every stored estimate identical to the "
                    f"last bit ({len(self.checks)} tables, {rows:,} rows)")
        bad = [c.table for c in self.checks if not c.identical]
        said = [*self.problems, *([f"{len(bad)} of {len(self.checks)} tables differ ({', '.join(bad)})"] if bad else [])]
        return f"not reproduced: analysis run {run} of {self.report.name}: {'; '.join(said)}"


# ---------------------------------------------------------------------------
# the report and its warehouse
# ---------------------------------------------------------------------------

def read_report(path: Path) -> dict[str, Any]:
    """The checked run record of report ``path`` (:func:`ketaoutcomes.report.record.read_record`)."""
    path = Path(path)
    if path.is_dir():
        raise ReproduceRefused(f"{path} is a folder; give the report's HTML file (reports/ketaoutcomes-<study>.html)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[8:12] == b"DUCK":
                raise ReproduceRefused(f"{path} is a DuckDB file, not a report; give the report's HTML file "
                                       "(reports/ketaoutcomes-<study>.html), and a warehouse with --db")
            if not head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith((b"<!doctype html", b"<html")):
                raise ReproduceRefused(f"{path} is not an HTML report; give the report's HTML file "
                                       "(reports/ketaoutcomes-<study>.html)")
            data = head + fh.read(MAX_REPORT_BYTES)
    except FileNotFoundError:
        raise ReproduceRefused(f"no report at {path}; give the report's HTML file "
                               "(reports/ketaoutcomes-<study>.html)") from None
    except OSError as exc:
        raise ReproduceRefused(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        page = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ReproduceRefused(f"{path} is not a report of ketaoutcomes (not UTF-8 text); give the report's HTML "
                               "file") from None
    try:
        return read_record(page, name=str(path))
    except RecordError as exc:
        raise ReproduceRefused(str(exc)) from None


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def check_batches(con: duckdb.DuckDBPyConnection, record: Mapping[str, Any], db: Path) -> None:
    """Every batch of the record is in the warehouse behind ``con`` with its content hash and raw rows.

    Raises
    ------
    ReproduceRefused
        Naming the first batch rolled back, missing, of other content, or with other raw rows.
    """
    ids = [b["batch_id"] for b in record["batches"]]
    if not ids:
        raise ReproduceRefused(f"the report's run record names no batch: nothing to rebuild ({record['run_id']})")
    stored = {r["batch_id"]: r for r in fetch_rows(con, "SELECT batch_id, file_sha256, table_name FROM meta_batches")}
    for b in record["batches"]:
        here = stored.get(b["batch_id"])
        if here is None:
            gone = fetch_rows(con, "SELECT rolled_back_at, rollback_target FROM meta_rolled_back WHERE batch_id = ? "
                                   "ORDER BY rolled_back_at DESC LIMIT 1", [b["batch_id"]]) \
                if table_exists(con, "meta_rolled_back") else []
            if gone:
                raise ReproduceRefused(
                    f"batch {b['batch_id']} of the report ({b['file']}) was rolled back on "
                    f"{gone[0]['rolled_back_at']:%Y-%m-%d %H:%M} UTC (`rollback {gone[0]['rollback_target']}`), so the "
                    f"run cannot be rebuilt from {db}; load that file again to bring it back, or reproduce a report of "
                    "the data in force")
            raise ReproduceRefused(
                f"batch {b['batch_id']} of the report ({b['file']}) is not in the warehouse {db}: the report names "
                f"{record['warehouse']}; give that warehouse with --db")
        if here["file_sha256"] != b["sha256"]:
            raise ReproduceRefused(
                f"batch {b['batch_id']} of the report has content sha256 {b['sha256']} in the report but "
                f"{here['file_sha256']} in {db}: not the same delivery; give the report's warehouse with --db")
    counts: dict[str, int] = {}
    for table in [*(f"raw_{t}" for t in TABLE_ORDER), *HISTORY_TABLES.values()]:
        if table_exists(con, table):
            for r in fetch_rows(con, f"SELECT _batch_id AS b, count(*) AS n FROM {table} WHERE list_contains(?, "
                                     "_batch_id) GROUP BY ALL", [ids]):
                counts[r["b"]] = counts.get(r["b"], 0) + r["n"]
    for b in record["batches"]:
        if b["rows"] is not None and counts.get(b["batch_id"], 0) != b["rows"]:
            raise ReproduceRefused(
                f"batch {b['batch_id']} of the report loaded {b['rows']:,} rows, but {db} holds "
                f"{counts.get(b['batch_id'], 0):,} raw rows of it: its raw layer was changed; the run cannot be rebuilt")


def check_run(con: duckdb.DuckDBPyConnection, record: Mapping[str, Any], db: Path) -> None:
    """The record's analysis run is in the warehouse behind ``con`` (else :class:`ReproduceRefused`)."""
    found = table_exists(con, "results_runs") and fetch_rows(
        con, "SELECT run_id FROM results_runs WHERE run_id = ?", [record["run_id"]])
    if not found:
        raise ReproduceRefused(
            f"analysis run {record['run_id']} of the report is not in the warehouse {db} (rolled back, or another "
            f"warehouse: the report names {record['warehouse']}); nothing to compare with")


def stored_changes(tables: Mapping[str, pl.DataFrame], record: Mapping[str, Any]) -> dict[str, str]:
    """Tables whose stored rows of the run are not those the report was rendered from (its record's
    digests): table -> what changed. A column added since, null in every row of the run, is no change."""
    out = {}
    for name in sorted(set(tables) | set(record["results"])):
        then = record["results"].get(name)
        frame = tables.get(name, pl.DataFrame())
        if then is None:
            if frame.height:
                out[name] = f"{frame.height:,} stored rows that the report's record does not list"
            continue
        now = table_digest(frame)
        if now["rows"] != then["rows"]:
            out[name] = f"{now['rows']:,} stored rows, {then['rows']:,} when the report was rendered"
            continue
        changed = [c for c, d in then["columns"].items() if now["columns"].get(c) != d]
        changed += [c for c in now["columns"] if c not in then["columns"] and frame[c].null_count() < frame.height]
        if changed:
            out[name] = f"column(s) {', '.join(changed)} changed since the report was rendered"
    return {t: f"the stored rows are not those the report shows: {what} (the warehouse was written after the report)"
            for t, what in out.items()}


# ---------------------------------------------------------------------------
# the scratch warehouse
# ---------------------------------------------------------------------------

def _columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column -> type of ``table`` (a name of this module's own, unquoted: ``raw_patients``, ``source.meta_batches``)."""
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def _copy_rows(con: duckdb.DuckDBPyConnection, table: str, where: str, params: list, order: str) -> None:
    """Append the rows of ``source.<table>`` that match ``where`` to ``<table>`` (in ``order``), by column
    name. A column the scratch table lacks (a trial's ``_extra``) is added when those rows have a value in it."""
    source = _columns(con, f"source.{table}")
    have = _columns(con, table)
    cols = [c for c in source if c in have]
    for c in source:
        if c not in have and con.execute(f'SELECT count("{c}") FROM source.{table} WHERE {where}', params).fetchone()[0]:
            con.execute(f'ALTER TABLE {table} ADD COLUMN "{c}" {source[c]}')
            cols.append(c)
    names = ", ".join(f'"{c}"' for c in cols)
    con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM source.{table} WHERE {where} ORDER BY {order}",
                params)


def _source_has(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'source' AND "
                            "schema_name = 'main' AND table_name = ?", [table]).fetchone()[0])


def rebuild(scratch: Path, db: Path, record: Mapping[str, Any]) -> None:
    """A new warehouse ``scratch`` holding the batches of ``record`` from ``db``, in their load order:
    their ``meta_batches`` rows, raw rows and registry rows (with the registry rows of no batch, kept
    from before registries had a history), then ``stg_*`` and the registries in force rebuilt from them."""
    ids = [b["batch_id"] for b in record["batches"]]
    with write_session(scratch) as con:
        con.execute(f"ATTACH {_quoted(db)} AS source (READ_ONLY)")
        try:
            _copy_rows(con, "meta_batches", "list_contains(?, batch_id)", [ids], "load_seq")
            for t in TABLE_ORDER:
                if _source_has(con, f"raw_{t}"):
                    _copy_rows(con, f"raw_{t}", "list_contains(?, _batch_id)", [ids], "_load_seq, _row_number")
            for name, history in HISTORY_TABLES.items():
                if _source_has(con, history):
                    _copy_rows(con, history, "_batch_id IS NULL OR list_contains(?, _batch_id)", [ids],
                               "_load_seq, _row_number")
                elif _source_has(con, REF_TABLES[name]):  # a warehouse without registry history: its registry is the base
                    con.execute(f"DROP TABLE {history}")
                    con.execute(f"CREATE OR REPLACE TABLE {REF_TABLES[name]} AS FROM source.{REF_TABLES[name]}")
            ensure_history(con)
        finally:
            con.execute("DETACH source")
        for t in TABLE_ORDER:  # (a warehouse of an earlier version may lack an optional table: clinical_events)
            if table_exists(con, f"raw_{t}"):
                rebuild_staging(con, t)
        rebuild_registries(con)


# ---------------------------------------------------------------------------
# comparing two runs' rows
# ---------------------------------------------------------------------------

def _not_compared(table: str) -> set[str]:
    return {k.split(".", 1)[-1] for k in NOT_COMPARED if "." not in k or k.split(".", 1)[0] == table}


def _ulps(a: float, b: float) -> str:
    """How far apart two doubles are, in units in the last place (no value is shown)."""
    if not (math.isfinite(a) and math.isfinite(b)):
        def kind(x: float) -> str:
            return "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else "a finite number"

        return f"stored {kind(a)}, new {kind(b)}"

    def ordered(x: float) -> int:
        i = struct.unpack("<q", struct.pack("<d", x))[0]
        return i if i >= 0 else -(i & 0x7FFFFFFFFFFFFFFF)

    n = abs(ordered(a) - ordered(b))
    return "0.0 and -0.0" if n == 0 else f"{n:,} ulp{'s' if n > 1 else ''} apart"


def _detail(old: pl.Series, new: pl.Series, i: int) -> str:
    """What differs in row ``i`` of a column, without showing a value other than a float's distance."""
    a, b = old[i], new[i]
    if a is None or b is None:
        return "stored null, new a value" if a is None else "stored a value, new null"
    if old.dtype in (pl.Float32, pl.Float64):
        return _ulps(float(a), float(b))
    return ""


def _differs(old: pl.Series, new: pl.Series) -> np.ndarray:
    """Per row: do the two values differ (floats by their bits; null vs a value differs)?"""
    nulls = old.is_null().to_numpy() != new.is_null().to_numpy()
    if old.dtype in (pl.Float32, pl.Float64):
        return nulls | (float_bits(old) != float_bits(new))
    return nulls | old.ne_missing(new).fill_null(True).to_numpy()


def _where(row: Mapping[str, Any], key: Sequence[str], table: str, position: int) -> str:
    """Where a row is: its key's values (a patient-level ad_* table: its position in key order)."""
    if not key:
        return f"row {position + 1:,}"
    if table.startswith("ad_"):
        return f"row {position + 1:,} in order of {', '.join(key)}"
    return ", ".join(f"{k}={row[k]}" for k in key)


def compare_rows(table: str, old: pl.DataFrame, new: pl.DataFrame, key: Sequence[str] = ()) -> str | None:
    """None when the stored rows ``old`` and the new ``new`` of ``table`` are identical (but for
    :data:`NOT_COMPARED`), else what differs in one line: how many rows, the first differing row
    (by ``key``, the table's key without ``run_id``) and its first differing column."""
    skip = _not_compared(table)
    old, new = old.drop([c for c in old.columns if c in skip]), new.drop([c for c in new.columns if c in skip])
    only = [(side, [c for c in a.columns if c not in b.columns and a[c].null_count() < a.height])
            for side, a, b in (("stored", old, new), ("new", new, old))]
    said = [f"column(s) {', '.join(cols)} only in the {side} run" for side, cols in only if cols]
    if said:
        return "; ".join(said)
    common = [c for c in old.columns if c in new.columns]
    old, new = old.select(common), new.select(common)
    for c in common:
        a, b = old.schema[c], new.schema[c]
        if a == b:
            continue
        if a.is_integer() and b.is_integer():
            old, new = old.with_columns(pl.col(c).cast(pl.Int64)), new.with_columns(pl.col(c).cast(pl.Int64))
        elif pl.Null in (a, b):
            old, new = old.with_columns(pl.col(c).cast(b if a == pl.Null else a)), new.with_columns(
                pl.col(c).cast(b if a == pl.Null else a))
        else:
            return f"column {c} is {a} in the stored run, {b} in the new one"
    key = [k for k in key if k in common]
    if key and not (old.select(key).is_duplicated().any() or new.select(key).is_duplicated().any()):
        only_old = old.join(new.select(key), on=key, how="anti", nulls_equal=True).sort(key, nulls_last=True)
        only_new = new.join(old.select(key), on=key, how="anti", nulls_equal=True).sort(key, nulls_last=True)
        if only_old.height or only_new.height:
            first = only_old if only_old.height else only_new
            where = ", ".join(f"{k}={first[k][0]}" for k in key) if not table.startswith("ad_") else "(patient level)"
            return (f"{only_old.height:,} stored row(s) missing from the new run and {only_new.height:,} new row(s) "
                    f"not in the stored run (first: {where})")
        old, new = old.sort(key, nulls_last=True), new.sort(key, nulls_last=True)
    else:
        key = []
        if old.height != new.height:
            return f"{old.height:,} stored rows, {new.height:,} in the new run"
        old, new = canonical_order(old), canonical_order(new)
    if not old.height:
        return None
    masks = {c: _differs(old[c], new[c]) for c in common}
    rows = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(old.height, bool)
    n = int(rows.sum())
    if not n:
        return None
    i = int(np.argmax(rows))
    col = next(c for c in common if masks[c][i])
    detail = _detail(old[col], new[col], i)
    where = _where(old.row(i, named=True), key, table, i)
    return f"{n:,} of {old.height:,} rows differ (first: column {col} at {where}{'; ' + detail if detail else ''})"


def compare_runs(stored: Mapping[str, pl.DataFrame], new: Mapping[str, pl.DataFrame],
                 changed: Mapping[str, str]) -> list[TableCheck]:
    """One check per table of the stored run (every ``ad_*`` / ``results_*`` table, as the report's
    record lists them: a table the run left empty, such as a target trial's in a study without one,
    is checked to be empty in the new run too), per table with rows in the new run, and per table
    changed since the report: the stored run's rows against the new run's, and what
    :func:`stored_changes` found."""
    keys = {name: [k for k in c.key if k != "run_id"] for name, c in output_contracts().items()}
    checks = []
    for name in sorted({*stored, *(t for t, f in new.items() if f.height), *changed}):
        old, fresh = stored.get(name, pl.DataFrame()), new.get(name, pl.DataFrame())
        if not fresh.width and old.height:
            diff = f"{old.height:,} stored rows, none in the new run"
        elif not old.width and fresh.height:
            diff = f"no stored rows, {fresh.height:,} in the new run"
        else:
            diff = compare_rows(name, old, fresh, keys.get(name, ()))
        problems = [p for p in (changed.get(name), diff) if p]
        checks.append(TableCheck(name, old.height, "; ".join(problems) if problems else None))
    return checks


# ---------------------------------------------------------------------------
# reproduce
# ---------------------------------------------------------------------------

def _study(record: Mapping[str, Any]) -> StudySettings:
    try:
        return StudySettings.model_validate(json.loads(record["settings_json"]))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()
        raise ReproduceRefused(f"the report's study specification ({record['settings_id']}) does not read under this "
                               f"code ({code_version()}): {' '.join(first[:3])}; reproduce it with the code that "
                               f"rendered it ({record['code_version']})") from None


def _scratch_dir(keep: Path | None, run_id: str) -> tuple[Path, Path]:
    """(folder, warehouse file) of the scratch warehouse."""
    if keep is None:
        folder = Path(tempfile.mkdtemp(prefix="ketaoutcomes-reproduce-"))
        return folder, folder / f"reproduce-{run_id}.duckdb"
    keep = Path(keep)
    if keep.exists() and not keep.is_dir():
        raise ReproduceRefused(f"--keep {keep} is a file; give a folder for the scratch warehouse")
    target = keep / f"reproduce-{run_id}.duckdb"
    if target.exists():
        raise ReproduceRefused(f"--keep {keep} already holds {target.name} (an earlier reproduction); remove it or give "
                               "another folder")
    try:
        keep.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReproduceRefused(f"cannot create the --keep folder {keep}: {exc.strerror or exc}") from None
    return keep, target


def _read_run(db: Path, run_id: str) -> dict[str, pl.DataFrame]:
    con = read_connection(db)
    try:
        return run_tables(con, run_id)
    finally:
        con.close()


def reproduce_report(report: Path, *, db: Path | None = None, keep: Path | None = None,
                     say: Callable[[str], None] | None = None, progress: Progress | None = None) -> Reproduction:
    """Rebuild the run of ``report`` from its raw batches, analyse it again and compare (module docstring).

    ``db``: the warehouse (default: the one the record names); ``keep``: a folder to keep the scratch
    warehouse in (default: a temporary folder, removed); ``say``: where the notes go as they come
    (the code version, a specification or data that reads differently), before the long part.

    Raises
    ------
    ReproduceRefused
        Nothing was compared: no report or no record, an edited report, no such warehouse, a batch of
        the record missing or changed, the run not in the warehouse.
    """
    record = read_report(report)
    db = Path(db if db is not None else record["warehouse"]).expanduser().resolve()
    if not db.is_file():
        raise ReproduceRefused(f"no warehouse at {db}" + (" (the warehouse the report names); if it moved, give it "
                                                          "with --db" if str(db) == record["warehouse"] else ""))
    out = Reproduction(Path(report), db, record)
    note = out.notes.append if say is None else (lambda line: (out.notes.append(line), say(line)))
    try:
        con = read_connection(db)
    except duckdb.Error as exc:
        raise ReproduceRefused(f"{db} is not a warehouse DuckDB can open ({str(exc).splitlines()[0]})") from None
    try:
        try:
            check_batches(con, record, db)
            check_run(con, record, db)
        except duckdb.CatalogException:
            raise ReproduceRefused(f"{db} is not a ketaoutcomes warehouse (no meta_batches or results_runs); give the "
                                   "report's warehouse with --db") from None
    finally:
        con.close()
    stored = _read_run(db, record["run_id"])
    changed = stored_changes(stored, record)
    study = _study(record)
    if code_version() != record["code_version"]:
        note(f"note: the code differs from the report's: rendered with {record['code_version']}, reproducing with "
             f"{code_version()}; the comparison decides whether the results are the same")
    elif code_version().endswith(".dirty"):
        note(f"note: the code ({code_version()}) has uncommitted edits, so the same version may be other code")
    if study.settings_id != record["settings_id"]:
        note(f"note: the saved specification reads as settings {study.settings_id} under this code, not "
             f"{record['settings_id']} (a setting added or changed since)")
    folder, scratch = _scratch_dir(keep, record["run_id"])
    try:
        with announced(progress, f"rebuilding {len(record['batches'])} batches"):
            rebuild(scratch, db, record)
        con = read_connection(scratch)
        try:
            fp = data_fingerprint(con)
        finally:
            con.close()
        if fp != record["data_fingerprint"]:
            note(f"note: the rebuilt data has fingerprint {fp}, the run's was {record['data_fingerprint']} (the shipped "
                 "registries changed with the code?)")
        new_run = _analyse(scratch, study, out, progress)
        new = _read_run(scratch, new_run) if new_run is not None else {}
        out.checks = compare_runs(stored, new, changed) if new_run is not None else [
            TableCheck(t, stored[t].height, changed[t]) for t in sorted(changed)]
        out.scratch = scratch if keep is not None else None
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return out


def _analyse(scratch: Path, study: StudySettings, out: Reproduction, progress: Progress | None) -> str | None:
    """Validate and analyse the scratch warehouse; the new run's id, or None (and the problem noted)."""
    from ketaoutcomes.analysis.checks import StudyMismatch
    from ketaoutcomes.validate import ValidationFailed

    try:
        with announced(progress, "validating and analysing the rebuilt data"):
            return analyze_step(scratch, study, force=True).details["run_id"]
    except ValidationFailed as exc:
        out.problems.append(f"the rebuilt data fails validation: {exc.result.message().splitlines()[0]}")
    except (AnalysisNotReady, StudyMismatch) as exc:
        out.problems.append(f"the analysis of the rebuilt data stopped: {str(exc).splitlines()[0]}")
    return None

