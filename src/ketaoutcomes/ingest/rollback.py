"""Roll the warehouse back to its state before a batch or a step.

The raw layer keeps every batch (``raw_<table>``, ``meta_batches``) and ``stg_<table>`` is a
function of it (:func:`ketaoutcomes.ingest.load.rebuild_staging`), so going back is: drop the
batches at and after the one named (their raw rows, quarantine and data-quality rows, their
``meta_batches`` rows), rebuild every ``stg_`` table from the batches still in force, and take
away what was computed from the dropped data:

* the analysis runs whose batches include a dropped one (their rows in every ``ad_*`` /
  ``results_*`` table and in ``results_runs``; the ``latest_*`` views follow), and the
  validation runs of such data (their ``validation_results``);
* the ``meta_steps`` rows of those steps (and of the ingests that loaded the dropped batches)
  stay, as the run log, with status ``rolled_back``: no later run takes them for up to date.

A step (a ``meta_steps`` run_id) names the state before that step: the batches loaded by it and
by every ingest after it are dropped, and it and every step after it are undone.

The registries in force (``ref_arms``, ``ref_instruments``) are rebuilt the same way: an export's
``arms.csv`` / ``instruments.csv`` is a batch of its own (loaded before the export's tables), so a
rollback to before it restores the registries in force before it, and the plan lists the codes
added, changed and removed (:mod:`ketaoutcomes.registries.history`). Registry rows kept from a
warehouse written before registries had a history belong to no batch and stay in force (the plan
says so). A rollback to before one of an export's table files keeps that export's registry files,
loaded before it (the plan names them and the ingest step that rolls back the whole export).

The content of every batch removed is recorded (``meta_rolled_back``): a later ingest of a file
with that content refuses it, unless asked to load it again (``ingest --reload-rolled-back``),
so the export folder that still holds the removed files does not bring them back unnoticed.

:func:`plan_rollback` only reads (a dry run runs it on a read-only connection);
:func:`apply_rollback` writes, inside the caller's write session, so a rollback is published
whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.contract import TABLE_ORDER
from ketaoutcomes.ingest.deliveries import RELOAD_OPTION, record_rolled_back
from ketaoutcomes.ingest.load import load_registries_from_warehouse, rebuild_staging, staging_sql
from ketaoutcomes.registries.history import (
    HISTORY_TABLES,
    REF_TABLES,
    base_rows,
    rebuild_registries,
    registries_at,
    registry_changes,
)
from ketaoutcomes.suggest import closest
from ketaoutcomes.warehouse import fetch, table_exists

__all__ = ["RollbackError", "RollbackPlan", "apply_rollback", "plan_rollback"]

LIST_TARGETS = ("python -m ketaoutcomes query \"SELECT batch_id, load_seq, source_file FROM meta_batches ORDER BY "
                "load_seq\" (batches) or \"SELECT step, run_id, started_at, status FROM meta_steps ORDER BY seq\" (steps)")


class RollbackError(ValueError):
    """A rollback target that is not in the warehouse, or one that cannot be rolled back (one line)."""


@dataclass(frozen=True)
class RollbackPlan:
    """What a rollback to before ``target`` removes; :meth:`lines` says it for a person."""

    target: str
    #: "before batch ..." / "before step ..."
    description: str
    #: The first load_seq dropped (None: no batch is dropped).
    cut: int | None
    #: The dropped batches: batch_id, load_seq, table_name, source_file, rows_loaded.
    batches: pl.DataFrame
    #: Per table: table, rows_before, rows_after (stg_ tables; raw_, quarantine, dq_checks, the
    #: ad_/results_ tables of dropped runs, validation_results), only tables that change.
    rows: pl.DataFrame
    #: The analysis runs removed: run_id, study, started_at.
    runs: pl.DataFrame
    #: The validation runs removed (validation_results.run_id).
    validations: tuple[str, ...]
    #: meta_steps rows marked rolled_back: rowid, step, run_id.
    steps: pl.DataFrame
    notes: tuple[str, ...] = field(default=())
    #: The registries' codes added, changed and removed, one line per registry that changes.
    registries: tuple[str, ...] = field(default=())

    @property
    def changes_nothing(self) -> bool:
        return (self.batches.is_empty() and self.runs.is_empty() and not self.validations and self.steps.is_empty()
                and not self.registries)

    def lines(self) -> list[str]:
        out = [f"rollback to {self.description}"]
        out.append(f"batches removed ({self.batches.height}):" if self.batches.height else "batches removed: none")
        for b in self.batches.iter_rows(named=True):
            out.append(f"  {b['batch_id']} (load {b['load_seq']}, {b['table_name']}: {b['rows_loaded']:,} rows, "
                       f"{b['source_file']})")
        out.append("rows per table:" if self.rows.height else "rows per table: unchanged")
        for r in self.rows.iter_rows(named=True):
            out.append(f"  {r['table']}: {r['rows_before']:,} -> {r['rows_after']:,}")
        out.append("registries in force (codes):" if self.registries else "registries in force: unchanged")
        out += [f"  {line}" for line in self.registries]
        out.append(f"analysis runs removed ({self.runs.height}):" if self.runs.height else "analysis runs removed: none")
        for r in self.runs.iter_rows(named=True):
            out.append(f"  {r['run_id']} (study {r['study']}, started {r['started_at']})")
        out.append(f"validation runs removed ({len(self.validations)}): {', '.join(self.validations)}"
                   if self.validations else "validation runs removed: none")
        out.append(f"steps marked rolled_back in meta_steps ({self.steps.height}): "
                   + ", ".join(f"{s['step']} {s['run_id']}" for s in self.steps.iter_rows(named=True))
                   if self.steps.height else "steps marked rolled_back in meta_steps: none")
        return out + [f"note: {n}" for n in self.notes]


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _loaded_by(details: dict) -> set[str]:
    """Batches an ingest step loaded (not those it skipped as already loaded): table and registry files."""
    files = [*details.get("files", []), *details.get("registries", [])]
    return {f["batch_id"] for f in files if isinstance(f, dict) and not f.get("skipped", True)}


def _steps(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    have = {r[0] for r in con.execute("DESCRIBE meta_steps").fetchall()}
    seq = "seq" if "seq" in have else "NULL::BIGINT AS seq"
    return fetch(con, f"SELECT rowid AS row_id, step, run_id, status, details, started_at, {seq} FROM meta_steps "
                      "ORDER BY seq NULLS FIRST, started_at")


def _nearest(target: str, batch_ids: list[str], run_ids: list[str]) -> str | None:
    """The id a mistyped ``target`` most likely means: the one it is the start of (a cut-off
    copy), a near spelling, else the latest batch of the table it names (``patients-...``)."""
    known = [*batch_ids, *run_ids]
    starts = [k for k in known if k.lower().startswith(target.lower())]
    if len(starts) == 1:
        return starts[0]
    near = closest(target, known, cutoff=0.6)
    if near is not None:
        return near
    table = target.lower().split("-", 1)[0]
    same_table = [b for b in batch_ids if b.split("-", 1)[0] == table]
    return same_table[-1] if same_table else None


def _resolve(target: str, batches: pl.DataFrame, steps: pl.DataFrame) -> tuple[str, int | None, int | None, str]:
    """(kind, first load_seq dropped, seq of the step named, description) of ``target``."""
    if target in batches["batch_id"].to_list():
        b = batches.filter(pl.col("batch_id") == target).row(0, named=True)
        return "batch", b["load_seq"], None, (f"before batch {target} (load {b['load_seq']}, {b['table_name']} from "
                                              f"{b['source_file']}, loaded {b['loaded_at']})")
    mine = steps.filter(pl.col("run_id") == target)
    if mine.is_empty():
        near = _nearest(target, batches["batch_id"].to_list(), steps["run_id"].unique(maintain_order=True).to_list())
        hint = f'did you mean "{near}"? ' if near else ""
        raise RollbackError(f'rollback: no batch or step "{target}" in the warehouse; {hint}list them with '
                            f"{LIST_TARGETS}")
    step = mine["step"][0]
    if step == "rollback":
        raise RollbackError(f"rollback: {target} is a rollback; a rollback is not undone (its batches are gone): "
                            "ingest their files again")
    if (mine["status"] == "rolled_back").all():
        raise RollbackError(f"rollback: step {step} {target} is already rolled back")
    seqs = mine["seq"].drop_nulls()
    return "step", None, (int(seqs.min()) if len(seqs) else None), (
        f"before step {step} {target} (started {mine['started_at'].min()})")


def plan_rollback(con: duckdb.DuckDBPyConnection, target: str) -> RollbackPlan:
    """What a rollback of the warehouse behind ``con`` to before ``target`` would remove (reads only).

    Parameters
    ----------
    target : str
        A ``meta_batches.batch_id`` (the state before that batch), or a ``meta_steps.run_id``
        (the state before that step).

    Raises
    ------
    RollbackError
        ``target`` is neither (the message suggests the nearest id and how to list them), is a
        rollback, or is already rolled back.
    """
    target = target.strip()
    batches = fetch(con, "SELECT batch_id, load_seq, table_name, source_file, rows_loaded, loaded_at, file_sha256 "
                         "FROM meta_batches ORDER BY load_seq")
    steps = _steps(con)
    kind, cut, step_seq, description = _resolve(target, batches, steps)
    live = steps.filter(pl.col("status") != "rolled_back")
    details = {row_id: _json(text) for row_id, text in zip(live["row_id"], live["details"])}
    undone: set[int] = set()
    if kind == "step":
        after = live.filter((pl.col("run_id") == target) | (pl.col("seq") >= step_seq) if step_seq is not None
                            else pl.col("run_id") == target)
        undone = set(after["row_id"].to_list())
        loaded = set().union(*(_loaded_by(details[r]) for r, s in zip(after["row_id"], after["step"]) if s == "ingest"))
        in_force = batches.filter(pl.col("batch_id").is_in(list(loaded)))
        cut = int(in_force["load_seq"].min()) if in_force.height else None
    dropped = batches.filter(pl.col("load_seq") >= cut) if cut is not None else batches.clear()
    gone = set(dropped["batch_id"].to_list())

    runs_table = fetch(con, "SELECT run_id, batches, settings_json->>'$.name' AS study, started_at FROM results_runs") \
        if table_exists(con, "results_runs") else pl.DataFrame(schema={"run_id": pl.String, "batches": pl.String,
                                                                       "study": pl.String, "started_at": pl.Datetime})
    run_batches = {r: set((b or "").split(",")) for r, b in zip(runs_table["run_id"], runs_table["batches"])}
    for row_id, step, run_id in zip(live["row_id"], live["step"], live["run_id"]):
        d = details[row_id]
        if "batches" in d:
            uses = set(d["batches"])
        elif step == "ingest":
            uses = {f.get("batch_id") for f in d.get("files", []) if isinstance(f, dict)}
        elif step == "analyze":
            uses = run_batches.get(run_id, set())
        else:  # a validation recorded by an earlier version: what it saw is not known
            uses = gone
        if uses & gone:
            undone.add(row_id)
    marked = live.filter(pl.col("row_id").is_in(list(undone))).select("row_id", "step", "run_id")
    run_ids = set(marked.filter(pl.col("step") == "analyze")["run_id"].to_list())
    run_ids |= {r for r, b in run_batches.items() if b & gone}
    runs = runs_table.filter(pl.col("run_id").is_in(list(run_ids))).select("run_id", "study", "started_at") \
        .sort("started_at")
    validations = tuple(sorted(set(marked.filter(pl.col("step") == "validate")["run_id"].to_list())))
    rows = _row_changes(con, cut, gone, sorted(run_ids), validations)
    notes = _notes(con, target if kind == "batch" else None, batches, dropped, live, details)
    changes = tuple(registry_changes(load_registries_from_warehouse(con), registries_at(con, cut))) \
        if cut is not None else ()
    return RollbackPlan(target, description, cut, dropped.select("batch_id", "load_seq", "table_name", "source_file",
                                                                 "rows_loaded", "file_sha256"),
                        rows, runs, validations, marked, tuple(notes), changes)


def _notes(con, target_batch: str | None, batches: pl.DataFrame, dropped: pl.DataFrame, live: pl.DataFrame,
           details: dict[int, dict]) -> list[str]:
    """What a person should know beyond the lists: the removed files still in their folder (refused
    by the next ingest), registry files of the same export that stay, registry rows of no batch."""
    notes = []
    if dropped.is_empty():
        return notes
    folders = sorted({str(Path(f).parent) for f in dropped["source_file"] if Path(f).exists()})
    if folders:
        notes.append(f"{', '.join(folders)} still hold(s) the removed files: the next ingest of that folder (the "
                     "nightly run's, if it is configured to it) refuses them, their content being recorded as rolled "
                     "back, until they are replaced by corrected files or moved out (or loaded again on purpose with "
                     f"ingest {RELOAD_OPTION})")
    if target_batch is not None:
        kept = set(batches.filter(~pl.col("batch_id").is_in(dropped["batch_id"].implode())
                                  & pl.col("table_name").is_in(list(HISTORY_TABLES)))["batch_id"])
        for row_id, step, run_id in zip(live["row_id"], live["step"], live["run_id"]):
            loaded = _loaded_by(details[row_id]) if step == "ingest" else set()
            if target_batch in loaded and loaded & kept:
                notes.append(f"{', '.join(sorted(loaded & kept))} (registry file(s) of the same export, loaded before "
                             f"its tables) stay(s) in force; to roll back that whole export: rollback {run_id}")
    if base_rows(con):
        notes.append("this warehouse was written before registries were kept per batch: the registry rows in force "
                     "then belong to no batch and stay in force (an arms.csv or instruments.csv loaded before that "
                     "is not rolled back)")
    return notes


def _run_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The ad_*/results_* tables with a run_id column (results_runs included)."""
    return fetch(con, "SELECT table_name FROM duckdb_columns() WHERE database_name = current_database() AND "
                      "schema_name = 'main' AND (starts_with(table_name, 'ad_') OR starts_with(table_name, 'results_')) "
                      "AND column_name = 'run_id' ORDER BY table_name")["table_name"].to_list()


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> int:
    return int(con.execute(sql, params or []).fetchone()[0])


def _row_changes(con, cut: int | None, gone: set[str], run_ids: list[str], validations: tuple[str, ...]) -> pl.DataFrame:
    changes = []
    if cut is not None:
        for t in TABLE_ORDER:
            if not table_exists(con, f"raw_{t}"):
                continue
            raw = _count(con, f"SELECT count(*) FROM raw_{t}")
            kept = _count(con, f"SELECT count(*) FROM raw_{t} WHERE _load_seq < ?", [cut])
            if table_exists(con, f"stg_{t}"):
                changes.append((f"stg_{t}", _count(con, f"SELECT count(*) FROM stg_{t}"),
                                _count(con, f"SELECT count(*) FROM ({staging_sql(t, before_seq=cut)})")))
            changes.append((f"raw_{t}", raw, kept))
        for t in ("quarantine", "dq_checks"):
            if table_exists(con, t):
                changes.append((t, _count(con, f"SELECT count(*) FROM {t}"),
                                _count(con, f"SELECT count(*) FROM {t} WHERE NOT list_contains(?, batch_id)", [sorted(gone)])))
        changes.append(("meta_batches", _count(con, "SELECT count(*) FROM meta_batches"),
                        _count(con, "SELECT count(*) FROM meta_batches WHERE load_seq < ?", [cut])))
        after = registries_at(con, cut)
        for name, raw in HISTORY_TABLES.items():
            if table_exists(con, raw):
                changes.append((raw, _count(con, f"SELECT count(*) FROM {raw}"),
                                _count(con, f"SELECT count(*) FROM {raw} WHERE _load_seq < ?", [cut])))
            if table_exists(con, REF_TABLES[name]):
                changes.append((REF_TABLES[name], _count(con, f"SELECT count(*) FROM {REF_TABLES[name]}"),
                                len(getattr(after, name))))
    if run_ids:
        for t in _run_tables(con):
            changes.append((t, _count(con, f'SELECT count(*) FROM "{t}"'),
                            _count(con, f'SELECT count(*) FROM "{t}" WHERE NOT list_contains(?, run_id)', [run_ids])))
    if validations and table_exists(con, "validation_results"):
        changes.append(("validation_results", _count(con, "SELECT count(*) FROM validation_results"),
                        _count(con, "SELECT count(*) FROM validation_results WHERE NOT list_contains(?, run_id)",
                               [list(validations)])))
    frame = pl.DataFrame(changes, schema={"table": pl.String, "rows_before": pl.Int64, "rows_after": pl.Int64},
                         orient="row")
    return frame.filter(pl.col("rows_before") != pl.col("rows_after"))


def apply_rollback(con: duckdb.DuckDBPyConnection, plan: RollbackPlan, *, at: dt.datetime) -> None:
    """Carry out ``plan`` (made by :func:`plan_rollback` on this same connection) in the caller's
    write session: drop the batches (recording their content as rolled back, at time ``at``),
    rebuild every stg_ table and the registries in force, remove the runs and validations
    computed from the dropped data, mark their steps rolled_back."""
    gone = sorted(plan.batches["batch_id"].to_list())
    if plan.cut is not None:
        record_rolled_back(con, plan.batches, at=at, target=plan.target)
        for raw in (*(f"raw_{t}" for t in TABLE_ORDER), *HISTORY_TABLES.values()):
            if table_exists(con, raw):
                con.execute(f"DELETE FROM {raw} WHERE _load_seq >= ?", [plan.cut])
        for t in ("quarantine", "dq_checks"):
            if table_exists(con, t):
                con.execute(f"DELETE FROM {t} WHERE list_contains(?, batch_id)", [gone])
        con.execute("DELETE FROM meta_batches WHERE load_seq >= ?", [plan.cut])
        for t in TABLE_ORDER:
            if table_exists(con, f"raw_{t}"):
                rebuild_staging(con, t)
        rebuild_registries(con)
    run_ids = plan.runs["run_id"].to_list()
    if run_ids:
        for t in _run_tables(con):
            con.execute(f'DELETE FROM "{t}" WHERE list_contains(?, run_id)', [run_ids])
    if plan.validations and table_exists(con, "validation_results"):
        con.execute("DELETE FROM validation_results WHERE list_contains(?, run_id)", [list(plan.validations)])
    if plan.steps.height:
        con.execute("UPDATE meta_steps SET status = 'rolled_back' WHERE list_contains(?, rowid)",
                    [plan.steps["row_id"].to_list()])
