"""The pipeline's steps as plain functions: simulate, ingest, validate, analyze, render.

Each step opens the warehouse itself (a write session publishes a new snapshot
when it succeeds; see :mod:`ketaoutcomes.warehouse`), records itself in
``meta_steps`` with a *fingerprint* of what its output depends on, and returns
a :class:`StepOutcome`. :func:`run_report` runs whatever is missing or out of
date and then renders. The Prefect flows in flows/ wrap these functions; nothing
here imports Prefect.

What makes a step out of date:

* validate: the data fingerprint (batches in force + registries) or the code changed;
* analyze: the data fingerprint, the study settings id or the code changed, or
  the last validation of this data did not pass;
* render: the analysis run it shows, the validation, the data, truth.json or the code and templates
  changed, or the report file (or its settings.json) is missing or not as written
  (:mod:`ketaoutcomes.report.stamp`).

A step that is up to date finds so on a read-only connection (:func:`fresh_state`): it takes no
writer lock and publishes nothing, so ``report`` with nothing changed reads and returns.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl

from ketaoutcomes.contract import TABLE_ORDER
from ketaoutcomes.analysis_inputs import analysis_inputs, study_check_data
from ketaoutcomes.ingest import check_export_folder, find_export_files, ingest_export, memory_limit
from ketaoutcomes.ingest.load import load_registries_from_warehouse
from ketaoutcomes.memory import drop_cached_blocks, keep_freed_heap, return_free_heap
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import SimulationSettings, StudySettings, home_db_path, project_root
from ketaoutcomes.step_records import (CHANGED_ROWS, batches_in_force, code_version, data_fingerprint, fresh_state,
                                        last_step, last_validation, record_step, step_hash, validation_base,
                                        validation_status)
from ketaoutcomes.table_contract import ContractError, TableContract, col
from ketaoutcomes.warehouse import append_frame, fetch, fetch_rows, read_connection, table_exists, write_session
from ketaoutcomes.warehouse import write_table
from ketaoutcomes.warehouse import create_latest_views

if TYPE_CHECKING:
    from ketaoutcomes.analysis.common import FanOut

__all__ = [
    "StepOutcome",
    "AnalysisNotReady",
    "NoDataLoaded",
    "simulate_step",
    "ingest_step",
    "validate_step",
    "analyze_step",
    "rollback_step",
    "check_study_step",
    "render_step",
    "run_report",
    "plan_run",
    "RunPlan",
    "STEPS",
    "default_export_dir",
    "synthetic_export_dir",
    "SimulationRefused",
    "check_cohort_fits",
    "default_reports_dir",
    "code_version",
    "announced",
    "RESULTS_RUNS",
    "output_contracts",
]

Progress = Callable[[str, int, int], None]


class AnalysisNotReady(RuntimeError):
    """The data has not passed validation, so no analysis is run."""


class NoDataLoaded(AnalysisNotReady):
    """The warehouse exists but holds no loaded export: nothing to validate or analyse."""


class SimulationRefused(ValueError):
    """A simulation asked to write into a folder that holds an export it did not write."""


@dataclass(frozen=True)
class StepOutcome:
    step: str
    ran: bool  # False when the step was up to date and skipped
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def default_export_dir() -> Path:
    """data/synthetic/default under the project root: the embedded default cohort of the default
    warehouse (:func:`synthetic_export_dir` of the default settings there)."""
    return project_root() / "data" / "synthetic" / "default"


def synthetic_export_dir(sim: SimulationSettings, db: Path | None = None) -> Path:
    """Where a simulation for warehouse ``db`` is written, named by its settings so that no
    simulation writes over another one's export:

    * the default warehouse (``db`` None or data/warehouse/ketaoutcomes.duckdb under the project
      root): data/synthetic/default for the default settings (the embedded default, as ever),
      else data/synthetic/n<N>-seed<S>-<settings id>;
    * any other warehouse: a folder beside it, ``<db>.synthetic/`` (e.g. /tmp/x.duckdb.synthetic/),
      holding ``default`` or ``n<N>-seed<S>-<settings id>``.
    """
    name = "default" if sim == SimulationSettings() else f"n{sim.n_patients}-seed{sim.seed}-{sim.settings_id}"
    if db is None or Path(db).resolve() == home_db_path().resolve():
        return project_root() / "data" / "synthetic" / name
    db = Path(db).resolve()
    return db.parent / f"{db.name}.synthetic" / name


def default_reports_dir() -> Path:
    return project_root() / "reports"


def _wall_clock() -> dt.datetime:
    """The one place that reads the clock: provenance only (load and run times), never analysis."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


# ---------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------

#: Left in a folder a simulation writes (from its start): the folder is synthetic, simulate may write it again.
SYNTHETIC_MARKER = ".ketaoutcomes-synthetic"


def simulate_step(sim: SimulationSettings, out_dir: Path, *, progress: Progress | None = None) -> StepOutcome:
    """Write a synthetic export (plus truth.json) unless ``out_dir`` already holds this exact cohort:
    the route cohort, or with ``sim.design`` ``ssri_failure`` the SSRI-failure cohort of
    ``sim.protocol`` (:mod:`ketaoutcomes.simulate.ssri_failure_export`).

    Raises
    ------
    SimulationRefused
        ``out_dir`` holds import files that no simulation wrote (a real export): never overwritten.
    """
    from ketaoutcomes.simulate import simulate_cohort  # imported when needed
    from ketaoutcomes.simulate.ssri_failure_export import write_ssri_failure_export
    from ketaoutcomes.truth import observed_grid_estimands

    out_dir = Path(out_dir)
    stamp = out_dir / ".simulation-settings.json"
    if stamp.exists() and stamp.read_text() == sim.canonical_json() and (out_dir / "truth.json").exists():
        return StepOutcome("simulate", False, f"synthetic export {out_dir} is up to date (settings {sim.settings_id})",
                           {"export_dir": str(out_dir), "settings_id": sim.settings_id})
    marker = out_dir / SYNTHETIC_MARKER
    tables = sorted(p.name for p in out_dir.glob("*") if p.stem in TABLE_ORDER) if out_dir.is_dir() else []
    if tables and not stamp.exists() and not marker.exists():
        raise SimulationRefused(
            f"{out_dir} holds an export that no simulation wrote ({', '.join(tables)}); a simulation never writes over "
            "another export: simulate into an empty folder (or leave --out / export_dir out: each simulation then "
            "gets its own folder)")
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    stamp.unlink(missing_ok=True)
    if sim.design == "ssri_failure":  # its truth.json holds the strategy truth of its protocol
        write_ssri_failure_export(sim, out_dir)
    else:
        # What the analysis of the observed (visit-grid) data should recover: a cohort of its own (at most
        # truth.MAX_PATIENTS, simulated from the same settings), worked out on a thread while the export is
        # written, which leaves a core mostly idle (polars and numpy let go of the GIL); the same numbers.
        # (The writing imports nothing meanwhile, ketaoutcomes.simulate importing all it uses when it is
        # imported: two threads each importing modules that import each other could deadlock.)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="truth") as pool:
            estimands = pool.submit(observed_grid_estimands, sim)
            simulate_cohort(sim, out_dir, progress=(lambda i, n: progress("simulating", i, n)) if progress else None)
            truth_file = out_dir / "truth.json"
            truth = json.loads(truth_file.read_text())
            truth["estimands_observed_grid"] = estimands.result()
        truth_file.write_text(json.dumps(truth, indent=2) + "\n")
    stamp.write_text(sim.canonical_json())
    secs = time.perf_counter() - t0
    return StepOutcome("simulate", True, f"simulated {sim.n_patients:,} patients (seed {sim.seed}) into {out_dir} in {secs:.1f} s",
                       {"export_dir": str(out_dir), "settings_id": sim.settings_id, "seconds": secs})


# ---------------------------------------------------------------------------
# ingest
# ---------------------------------------------------------------------------

def ingest_step(db: Path, export_dir: Path, *, progress: Progress | None = None,
                reload_rolled_back: bool = False) -> StepOutcome:
    """Load an export folder; a file that is its table's latest delivery already (same content
    hash) is skipped, an earlier version delivered again is loaded again and supersedes. A file
    whose content a rollback removed refuses the export unless ``reload_rolled_back``.

    The folder is checked before the writer lock is taken: every file a regular file (a FIFO named
    like a table must not keep the lock forever), no misnamed file, a memory limit that parses; into
    a new warehouse, also every table there, so a mistaken export creates nothing."""
    memory_limit()
    if not Path(db).exists():
        check_export_folder(export_dir)
    else:
        find_export_files(export_dir)
    started, t0 = _wall_clock(), time.perf_counter()
    with write_session(db) as con:
        summary = ingest_export(con, export_dir, loaded_at=started, progress=progress,
                                reload_rolled_back=reload_rolled_back)
        fp = data_fingerprint(con)
        details = {"export_dir": summary.export_dir, "files": summary.frame().to_dicts(),
                   "registries": [asdict(f) for f in summary.registries],
                   "ignored_files": list(summary.ignored_files), "data_fingerprint": fp,
                   "batches": batches_in_force(con)}
        record_step(con, "ingest", step_hash("ingest", fp), fp, "ok", started, time.perf_counter() - t0, details)
    return StepOutcome("ingest", summary.changed, "\n".join(summary.lines()), details)


# ---------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------

def _require_data(con, db: Path) -> None:
    if not con.execute("SELECT count(*) FROM meta_batches").fetchone()[0]:
        raise NoDataLoaded(f"the warehouse {db} holds no data; run `python -m ketaoutcomes ingest DIR --db {db}` "
                           "first, or check --db")


def _validate(con, *, force: bool, changed_only: bool = False) -> tuple[StepOutcome, Any]:
    """Validate the data of the snapshot behind ``con`` (a write session) and store the results.

    ``changed_only`` (the nightly run): when an earlier validation with this code and these
    registries passed and the data since only gained batches, check only the rows those batches
    added or changed (:func:`ketaoutcomes.validate.changed_rows`); else every row. Pass or fail is
    the same as checking every row (a rule passes when no row breaks it); the counts are over the
    rows checked. An analysis always stands on a validation of every row (:func:`validation_status`).

    Returns
    -------
    (StepOutcome, ValidationResult or None)
        None when the last validation of this data and code passed and ``force`` is false.
    """
    from ketaoutcomes.validate import changed_rows, validate_warehouse  # GX import is slow

    started, t0 = _wall_clock(), time.perf_counter()
    fp_data = data_fingerprint(con)
    fp = step_hash(fp_data, code_version())
    last = last_validation(con, fp, every_row=not changed_only)
    if last is not None and not force and last["status"] == "ok":
        return StepOutcome("validate", False, "validation is up to date and passed", {"fingerprint": fp}), None
    registries = load_registries_from_warehouse(con)
    batches = batches_in_force(con)
    base = validation_base(con, batches, registries.fingerprint) if changed_only else None
    new = [b for b in batches if b not in set(base["batches"])] if base else []
    rows = changed_rows(new) if new else None
    # the expectations run inside DuckDB: no table is fetched
    result = validate_warehouse(con, registries, rows=rows)
    run_id = step_hash("validate", fp, *([CHANGED_ROWS] if rows else []))
    if table_exists(con, "validation_results"):
        con.execute("DELETE FROM validation_results WHERE run_id = ?", [run_id])
    append_frame(con, "validation_results", result.results.with_columns(
        pl.lit(run_id).alias("run_id"), pl.lit(fp).alias("fingerprint")))
    n_fail = result.results.filter(~pl.col("success")).height
    details = {"run_id": run_id, "expectations": result.results.height, "failed": n_fail,
               "critical_failed": result.critical_failures.height, "data_fingerprint": fp_data,
               "batches": batches, "registries": registries.fingerprint, "scope": "all"}
    scope = ""
    if rows:
        checked = {t: con.execute(f"SELECT count(*) FROM stg_{t} t WHERE {cond}").fetchone()[0]
                   for t, cond in rows.items() if table_exists(con, f"stg_{t}")}
        details.update(scope=CHANGED_ROWS, base_run_id=base["run_id"], new_batches=new, rows_checked=checked)
        scope = (f" on the {sum(checked.values()):,} row(s) that {len(new)} new batch(es) added or changed "
                 f"(every other row passed validation {base['run_id']})")
    record_step(con, "validate", run_id, fp, "ok" if result.passed else "failed", started,
                 time.perf_counter() - t0, details)
    msg = f"validation passed: {result.results.height} expectations{scope}, {n_fail} warning(s)"
    return StepOutcome("validate", True, msg, details), result


def validate_step(db: Path, *, force: bool = True, changed_only: bool = False) -> StepOutcome:
    """Run the expectation suites on the staged tables and store the results.

    ``changed_only``: check only the rows new batches added or changed since the last validation
    that passed, when there is one to build on (the nightly ingest flow; see :func:`_validate`).

    Raises
    ------
    ketaoutcomes.validate.ValidationFailed
        After storing the results, when a critical expectation failed.
    ketaoutcomes.warehouse.WarehouseMissing
        No warehouse at ``db`` (nothing is created).
    NoDataLoaded
        The warehouse holds no loaded export.
    """
    if not force and fresh_state(db)["validated"]:  # read-only: no lock taken, nothing published
        return StepOutcome("validate", False, "validation is up to date and passed", {})
    from ketaoutcomes.validate import ValidationFailed

    with write_session(db, create=False) as con:
        _require_data(con, db)
        outcome, result = _validate(con, force=force, changed_only=changed_only)
    if result is not None and not result.passed:
        raise ValidationFailed(result)
    return outcome


# ---------------------------------------------------------------------------
# analyze
# ---------------------------------------------------------------------------

#: results_runs, written by :func:`analyze_step` itself (the contracts of the tables it writes from
#: derive's and the analysis's frames are declared beside that code: :func:`output_contracts`).
RESULTS_RUNS = TableContract(
    "results_runs",
    "One row per analysis run: study settings, data and registries fingerprints, batches and code version",
    columns=(
        col("run_id", "VARCHAR", False, "Hash of the data fingerprint, settings id and code version"),
        col("settings_id", "VARCHAR", False, "Hash of settings_json"),
        col("settings_json", "VARCHAR", False, "The study settings (canonical JSON)"),
        col("data_fingerprint", "VARCHAR", False, "Hash of the batches in force and the registries"),
        col("registries_fingerprint", "VARCHAR", False, "Hash of the arm and instrument registries in force"),
        col("batches", "VARCHAR", False, "meta_batches.batch_id of the batches in force, comma-separated"),
        col("code_version", "VARCHAR", False, "Package version and git commit (+dirty) of the code that ran"),
        col("started_at", "TIMESTAMP", False, "Provenance only (UTC)"),
        col("seconds", "DOUBLE", False, "Seconds the run took"),
        col("notes", "VARCHAR", False, "The run's notes (JSON list of records: text, step, endpoint, arms, severity)"),
    ),
    key=("run_id",),
)


def output_contracts() -> dict[str, TableContract]:
    """The contract of every ad_*/results_* table :func:`analyze_step` writes, by table name:
    :data:`ketaoutcomes.analysis.tables.CONTRACTS` (derive's and the analysis's) and results_runs."""
    from ketaoutcomes.analysis.tables import CONTRACTS  # imports the analysis (statsmodels)

    return {**CONTRACTS, RESULTS_RUNS.name: RESULTS_RUNS}


def analyze_step(db: Path, study: StudySettings, *, force: bool = True,
                 snapshot: list[duckdb.DuckDBPyConnection] | None = None, fan_out: FanOut | None = None
                 ) -> StepOutcome:
    """Derive ADSL/ADTTE, fit KM, log-rank and Cox models, store everything with its provenance.

    One analysis sees one snapshot from start to end: the validation status it checks, and the
    validation it runs itself when this data (or the code) has not been validated yet (an ingest
    may have published since the validate step), are of the data it analyses, in its own write
    session.

    Raises
    ------
    ketaoutcomes.validate.ValidationFailed
        The data had not been validated and fails now: the validation results are published,
        no analysis is run.
    AnalysisNotReady
        The data failed its validation earlier; nothing is published.

    ``snapshot``: a list that gets a read-only connection to the snapshot this step publishes (its
    analysis and the data it analysed, whatever is published after it), for the report to render
    exactly that (:func:`run_report`); the caller closes it.

    ``fan_out``: how the analysis's units of work run (:data:`ketaoutcomes.analysis.common.FanOut`;
    None: here, one after the other; ``flows.dask_fanout.dask_fan_out``: as Prefect tasks on a Dask
    cluster, docs/scaling.md). Their results come back here, and this one process writes them.
    """
    if not force and (run_id := fresh_state(db, study)["analysis"]):  # read-only, as validate_step's
        return StepOutcome("analyze", False, f"analysis {run_id} is up to date", {"run_id": run_id})
    from ketaoutcomes.validate import ValidationFailed

    failed = None
    keep = None if snapshot is None else (lambda staging: snapshot.append(read_connection(staging)))
    with write_session(db, create=False, on_publish=keep) as con:
        _require_data(con, db)
        fp_data = data_fingerprint(con)
        status = validation_status(con, fp_data)
        validated = None
        if status is None:  # new data (or code) since the last validation: validate this snapshot, here
            validated, result = _validate(con, force=True)
            status = "ok" if result.passed else "failed"
            failed = None if result.passed else result
        if failed is None:
            if status != "ok":
                raise AnalysisNotReady("the data in the warehouse has failed validation; run `python -m ketaoutcomes "
                                       "validate` and fix what it reports")
            outcome = _analyze(con, study, fp_data, force=force, fan_out=fan_out)
    if failed is not None:
        raise ValidationFailed(failed)
    if validated is None:
        return outcome
    return StepOutcome("analyze", outcome.ran, f"{outcome.message}; the data (or the code) had changed since the last "
                       f"validation of every row, so it was validated first, in the same snapshot ({validated.message})",
                       {**outcome.details, "validated": validated.details})


def _analyze(con, study: StudySettings, fp_data: str, *, force: bool, fan_out: FanOut | None = None) -> StepOutcome:
    """The analysis of the validated data behind ``con`` (a write session)."""
    from ketaoutcomes.analysis import run_study  # statsmodels: imported when needed
    from ketaoutcomes.analysis.common import HandedOver, StepResult, serial

    started, t0 = _wall_clock(), time.perf_counter()
    fp = step_hash(fp_data, study.settings_id, code_version())
    run_id = step_hash("analyze", fp)
    if not force and last_step(con, "analyze", fp) is not None:
        return StepOutcome("analyze", False, f"analysis {run_id} is up to date", {"run_id": run_id})
    keep_freed_heap()  # for the rest of this process: the analysis frees and rebuilds large arrays (memory)
    registries = load_registries_from_warehouse(con)
    # only the columns and rows the analysis uses, handed over: the analysis frees them once read
    staged = HandedOver(analysis_inputs(con, study))
    drop_cached_blocks(con)
    check = HandedOver(study_check_data(con, staged.get("patients")))  # given up once the study is checked
    tag = [pl.lit(run_id).alias("run_id"), pl.lit(study.settings_id).alias("settings_id")]
    # Every table is written through its contract (declared columns and types, keys).
    contracts = output_contracts()

    def store(step: StepResult) -> None:
        # Analysis datasets are kept per run like the results: several studies
        # (different instruments or thresholds) share one warehouse.
        undeclared = sorted(set(step.tables) - set(contracts))
        if undeclared:
            raise ContractError(f"result table(s) {', '.join(undeclared)} have no contract; declare each in "
                                "ketaoutcomes/analysis/tables.py (or derive/tables.py) before writing it")
        for name, frame in step.tables.items():
            if table_exists(con, name):
                con.execute(f'DELETE FROM "{name}" WHERE run_id = ?', [run_id])
            if frame.height:
                write_table(con, contracts[name], frame.with_columns(tag))

    def publish(step: StepResult) -> None:
        # the analysis datasets, as soon as they are derived: stored, checkpointed so that DuckDB can drop
        # the blocks it wrote, and the heap the writes used handed back, before the units start
        store(step)
        con.execute("CHECKPOINT")
        drop_cached_blocks(con)
        return_free_heap()

    result = (fan_out or serial)(lambda submit: run_study(staged, registries=registries, study=study, submit=submit,
                                                          check=check, publish=publish))
    store(result)
    notes = [n.to_dict() for n in result.notes]
    batches = batches_in_force(con)
    seconds = time.perf_counter() - t0
    run = pl.DataFrame([{
        "run_id": run_id, "settings_id": study.settings_id, "settings_json": study.canonical_json(),
        "data_fingerprint": fp_data, "registries_fingerprint": registries.fingerprint,
        "batches": ",".join(batches), "code_version": code_version(), "started_at": started,
        "seconds": seconds, "notes": json.dumps(notes),
    }])
    if table_exists(con, "results_runs"):
        con.execute("DELETE FROM results_runs WHERE run_id = ?", [run_id])
    write_table(con, contracts["results_runs"], run)
    create_latest_views(con, contracts.values())  # in this session: a snapshot has its tables' views
    courses, analysed = con.execute("SELECT count(*), count(*) FILTER (WHERE ANLFL = 'Y') FROM ad_adsl WHERE run_id = ?",
                                    [run_id]).fetchone()
    details = {"run_id": run_id, "courses": courses, "analysed": analysed, "notes": [str(n) for n in result.notes],
               "data_fingerprint": fp_data, "batches": batches}
    record_step(con, "analyze", run_id, fp, "ok", started, seconds, details, study.settings_id)
    return StepOutcome("analyze", True, f"analysis {run_id}: {details['analysed']:,} courses analysed", details)


# ---------------------------------------------------------------------------
# rollback
# ---------------------------------------------------------------------------

def rollback_step(db: Path, target: str, *, dry_run: bool = False) -> StepOutcome:
    """Restore the warehouse to its state before a batch (``meta_batches.batch_id``) or a step
    (``meta_steps.run_id``): :mod:`ketaoutcomes.ingest.rollback`. The whole rollback is one write
    session, published whole or not at all; ``dry_run`` plans it on a read-only connection and
    changes nothing (not a byte of the file).

    Raises
    ------
    ketaoutcomes.ingest.rollback.RollbackError
        An unknown target (the message suggests the nearest id), a rollback, or a step already
        rolled back.
    ketaoutcomes.warehouse.WarehouseMissing
        No warehouse at ``db``.
    """
    from ketaoutcomes.ingest.rollback import apply_rollback, plan_rollback

    if dry_run:
        con = read_connection(db)
        try:
            plan = plan_rollback(con, target)
        finally:
            con.close()
        return StepOutcome("rollback", False, "\n".join(["dry run, nothing changed:", *plan.lines()]),
                           {"target": target, "dry_run": True})
    started, t0 = _wall_clock(), time.perf_counter()
    with write_session(db, create=False) as con:
        plan = plan_rollback(con, target)
        apply_rollback(con, plan, at=started)
        fp = data_fingerprint(con)
        details = {"target": target, "description": plan.description,
                   "batches_removed": plan.batches["batch_id"].to_list(), "runs_removed": plan.runs["run_id"].to_list(),
                   "validations_removed": list(plan.validations), "rows": plan.rows.to_dicts(),
                   "registries": list(plan.registries),
                   "data_fingerprint": fp, "batches": batches_in_force(con)}
        record_step(con, "rollback", step_hash("rollback", target, fp), fp, "ok", started, time.perf_counter() - t0,
                     details)
    return StepOutcome("rollback", True, "\n".join(plan.lines()), details)


# ---------------------------------------------------------------------------
# study: check a study file without running it
# ---------------------------------------------------------------------------

def check_study_step(study: StudySettings, db: Path | None = None) -> StepOutcome:
    """Check a study against the default registries (``db`` None), or against the registries in
    force in the warehouse ``db`` and its data (read-only; a missing warehouse is an error).

    Raises
    ------
    ketaoutcomes.analysis.checks.StudyMismatch
        One line naming every arm, instrument or covariate that does not fit, with the nearest name.
    """
    from ketaoutcomes.analysis.checks import StudyMismatch, study_problems

    if db is None:
        problems = study_problems(study, load_registries())
        if problems:
            raise StudyMismatch("study: " + "; ".join(problems) + " (checked against the default registries; an "
                                "arm or instrument added by an export's arms.csv or instruments.csv is known to its "
                                "warehouse: add --db)")
        return StepOutcome("study", True, "arms and instrument are in the default registries (give --db to check "
                           "against a warehouse's registries and data)")
    con = read_connection(db)
    try:
        problems = study_problems(study, load_registries_from_warehouse(con), study_check_data(con))
    finally:
        con.close()
    if problems:
        raise StudyMismatch("study: " + "; ".join(problems))
    return StepOutcome("study", True, f"arms, instrument and covariates fit the registries and data of {db}")


def _preflight(db: Path, study: StudySettings, export_dir: Path | None) -> None:
    """Before a run simulates or loads anything: the study's arms and instrument are in the registries
    the analysis will have (the warehouse's, or the defaults, plus the export's arms.csv /
    instruments.csv), so a misspelt arm fails in a second, not after the earlier steps."""
    from ketaoutcomes.analysis.checks import check_study

    if Path(db).exists():
        con = read_connection(db)
        try:
            registries = load_registries_from_warehouse(con)
        finally:
            con.close()
    else:
        registries = load_registries()
    if export_dir is not None:
        try:
            find_export_files(export_dir)  # arms.csv a FIFO, a folder, gzip...: ingest names it
            registries = registries.extended(export_dir)
        except ValueError:
            return  # a broken arms.csv: ingest names it
    check_study(study, registries)


# ---------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------

def _latest_run(con, study: StudySettings, run_id: str | None = None) -> dict:
    """Analysis ``run_id``, else the latest analysis of the data in force with ``study``'s settings."""
    if not table_exists(con, "results_runs"):
        runs = []
    elif run_id is not None:
        runs = fetch_rows(con, "SELECT * FROM results_runs WHERE run_id = ?", [run_id])
    else:
        runs = fetch_rows(con, "SELECT * FROM results_runs WHERE settings_id = ? AND data_fingerprint = ? "
                               "ORDER BY started_at DESC LIMIT 1", [study.settings_id, data_fingerprint(con)])
    if not runs:
        raise AnalysisNotReady(
            f"no analysis of the current data with study settings {study.settings_id}; run `python -m ketaoutcomes "
            "analyze` (or `report`, which runs what is missing)" if run_id is None else f"no analysis {run_id} in the "
            "warehouse (rolled back?); run `python -m ketaoutcomes report` again")
    return runs[0]


def render_step(db: Path, study: StudySettings, reports_dir: Path, *, truth_path: Path | None = None,
                run_id: str | None = None, snapshot: duckdb.DuckDBPyConnection | None = None,
                force: bool = False) -> StepOutcome:
    """Render the HTML report (read-only) of the latest analysis of the current data, or of analysis
    ``run_id``; read from ``snapshot`` (a read-only connection, left open) when given, else from the
    snapshot published now. :func:`run_report` passes the snapshot its analysis published, so an
    ingest published in between changes nothing of the report.

    Nothing is rendered while the report there is current: rendered from the same inputs by the same
    code, and still as written (:mod:`ketaoutcomes.report.stamp`; ``force`` renders anyway).
    ``details["summary"]`` is the report's summary block as records
    (:func:`ketaoutcomes.report.digest.key_results`)."""
    from ketaoutcomes.report.inputs import latest_validation_run, truth_file
    from ketaoutcomes.report.stamp import current_stamp, file_sha256, render_key, write_stamp

    reports_dir = Path(reports_dir)
    out = reports_dir / f"ketaoutcomes-{study.name}.html"
    settings_file = reports_dir / f"ketaoutcomes-{study.name}.settings.json"
    con = snapshot if snapshot is not None else read_connection(db)
    try:
        run = _latest_run(con, study, run_id)
        rid, truth = run["run_id"], truth_file(con, truth_path)
        key = render_key({"run_id": rid, "data": run["data_fingerprint"], "validation": latest_validation_run(con),
                          "truth": truth and [str(truth), file_sha256(truth)], "warehouse": str(Path(db).resolve())})
        stamp = None if force else current_stamp(out, key, [out, settings_file])
        if stamp is None:
            from ketaoutcomes.report import load_report_data  # matplotlib: imported when needed
            from ketaoutcomes.report.digest import key_results

            data = load_report_data(con, study, rid, warehouse=db, truth_path=truth)
    finally:
        if snapshot is None:
            con.close()
    details = {"report_path": str(out), "run_id": rid}
    if stamp is not None:
        return StepOutcome("render", False, f"report {out} is up to date (analysis {rid}; nothing it is made "
                           "from changed)", {**details, "summary": stamp.get("summary")})
    from ketaoutcomes.report import render_report

    reports_dir.mkdir(parents=True, exist_ok=True)
    render_report(data, out)
    # Study settings are saved beside their outputs.
    settings_file.write_text(
        json.dumps({"settings_id": study.settings_id, "run_id": rid, **study.model_dump(mode="json")}, indent=2) + "\n"
    )
    summary = key_results(data)
    write_stamp(out, key, [out, settings_file], run_id=rid, summary=summary)
    return StepOutcome("render", True, f"report written to {out}", {**details, "summary": summary})


# ---------------------------------------------------------------------------
# report: whatever is missing, then render
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def announced(progress: Progress | None, label: str):
    """Show a step without countable units as a 0/1 -> 1/1 progress item (with elapsed time)."""
    if progress:
        progress(label, 0, 1)
    yield
    if progress:
        progress(label, 1, 1)


def _has_batches(db: Path) -> bool:
    if not Path(db).exists():
        return False
    con = read_connection(db)
    try:
        return table_exists(con, "meta_batches") and con.execute("SELECT count(*) FROM meta_batches").fetchone()[0] > 0
    finally:
        con.close()


def check_cohort_fits(db: Path, folder: Path) -> None:
    """Refuse (:class:`SimulationRefused`, one line) a synthetic cohort asked for by its settings
    (``report --patients/--seed``, the parent flow's ``n_patients``/``seed``), to be simulated into
    ``folder``, for a warehouse ``db`` holding other data than that cohort: it would be ignored (report
    analyses the data there) or loaded on top of that data."""
    if not _has_batches(db):
        return
    con = read_connection(db)
    try:
        folders = {str(Path(f).parent) for f in fetch(con, "SELECT source_file FROM meta_batches")["source_file"]}
    finally:
        con.close()
    if folders != {str(Path(folder).resolve())}:
        raise SimulationRefused(
            f"the warehouse {db} already holds data (from {', '.join(sorted(folders))}), so a synthetic cohort of "
            "other settings is not simulated into it (report would analyse that data instead); for a fresh cohort "
            "use a warehouse of its own: `python -m ketaoutcomes simulate --patients N --seed S`, then `python -m "
            "ketaoutcomes report --export <the folder it prints> --db <a new .duckdb file>`")


#: Every step, in the only order they run.
STEPS = ("simulate", "ingest", "validate", "analyze", "render")


@dataclass(frozen=True)
class RunPlan:
    """Which steps a run takes, in order, and on what: decided once by :func:`plan_run` and
    followed by the CLI (:func:`run_report`) and by the Prefect flows (flows/pipeline.py)."""

    steps: tuple[str, ...]
    #: The export folder ingested (and simulated into, when "simulate" is a step); None: nothing to ingest.
    export_dir: Path | None
    sim: SimulationSettings


def plan_run(db: Path, *, export_dir: Path | None = None, sim: SimulationSettings | None = None,
             simulate: bool = False, through: str = "render", embedded_default: bool = True) -> RunPlan:
    """The run order, written once.

    * **simulate** the synthetic cohort ``sim`` (default :class:`SimulationSettings`) when asked
      (``simulate``: into ``export_dir``, default :func:`synthetic_export_dir` of ``sim`` and ``db``),
      or when no export is given and the warehouse holds no data: the embedded default, into
      :func:`synthetic_export_dir` (data/synthetic/default for the default warehouse and settings;
      unless ``embedded_default`` is false: a step run on its own, such as ``analyze``, never
      makes up data). A simulation goes where its warehouse lives, in a folder named by its
      settings, so it never writes over another warehouse's (or another cohort's) export. An
      export given and not asked to be simulated into is never overwritten;
    * **ingest** the export folder, when there is one (given, or just simulated);
    * **validate**, **analyze**, **render**, in that order, up to ``through``; each skips itself
      when its output is up to date.
    """
    if through not in STEPS[2:]:
        raise ValueError(f"through must be one of {STEPS[2:]}, not {through!r}")
    sim = sim or SimulationSettings()
    steps: list[str] = []
    if simulate or (embedded_default and export_dir is None and not _has_batches(db)):
        export_dir = Path(export_dir) if export_dir is not None else synthetic_export_dir(sim, db)
        steps.append("simulate")
    if export_dir is not None:
        steps.append("ingest")
    steps += STEPS[2:STEPS.index(through) + 1]
    return RunPlan(tuple(steps), None if export_dir is None else Path(export_dir), sim)


#: Progress labels of the steps that have no countable units.
ANNOUNCE = {"validate": "validating (Great Expectations)", "analyze": "analyzing (derive, KM, log-rank, Cox)",
            "render": "rendering the report"}


def run_report(
    db: Path,
    study: StudySettings,
    *,
    sim: SimulationSettings | None = None,
    export_dir: Path | None = None,
    reports_dir: Path | None = None,
    progress: Progress | None = None,
    on_step: Callable[[StepOutcome], None] | None = None,
    through: str = "render",
    embedded_default: bool = True,
    force: Collection[str] = (),
    fan_out: FanOut | None = None,
) -> list[StepOutcome]:
    """Run the steps of :func:`plan_run` up to ``through`` (default: render the report); each
    skips itself when up to date, unless named in ``force``: with nothing changed, nothing is
    written and nothing heavier than DuckDB and polars is imported.

    With no ``export_dir`` and an empty warehouse, the embedded default is used:
    the seeded synthetic cohort ``sim`` (default :class:`SimulationSettings`) is
    written to :func:`synthetic_export_dir` (data/synthetic/default for the default
    cohort in the default warehouse) and ingested. With data already in the
    warehouse and no ``export_dir``, nothing is ingested. ``fan_out``: as :func:`analyze_step`'s.
    """
    plan = plan_run(db, export_dir=export_dir, sim=sim, through=through, embedded_default=embedded_default)
    if "analyze" in plan.steps and (plan.export_dir is not None or "analyze" in force
                                    or not fresh_state(db, study)["analysis"]):  # else it passed these checks
        _preflight(db, study, plan.export_dir)
    # The analysis's own snapshot: render reads what analyze published, not what is published by then.
    snapshot: list[duckdb.DuckDBPyConnection] = []
    outcomes: list[StepOutcome] = []
    actions: dict[str, Callable[[], StepOutcome]] = {
        "simulate": lambda: simulate_step(plan.sim, plan.export_dir, progress=progress),
        "ingest": lambda: ingest_step(db, plan.export_dir, progress=progress),
        "validate": lambda: validate_step(db, force="validate" in force),
        "analyze": lambda: analyze_step(db, study, force="analyze" in force, snapshot=snapshot, fan_out=fan_out),
        "render": lambda: render_step(db, study, reports_dir or default_reports_dir(),
                                      run_id=outcomes[-1].details.get("run_id") if snapshot else None,
                                      snapshot=snapshot[-1] if snapshot else None, force="render" in force),
    }
    try:
        for step in plan.steps:
            with announced(progress, ANNOUNCE[step]) if step in ANNOUNCE else contextlib.nullcontext():
                outcome = actions[step]()
            outcomes.append(outcome)
            if on_step:
                on_step(outcome)
    finally:
        for con in snapshot:
            con.close()
    return outcomes
