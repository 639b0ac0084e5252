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
* render: always runs (cheap, and reads a read-only snapshot).
"""

from __future__ import annotations

import contextlib
import functools
import datetime as dt
import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from ketaoutcomes import __version__
from ketaoutcomes.contract import TABLE_ORDER
from ketaoutcomes.ingest import ingest_export
from ketaoutcomes.ingest.load import load_registries_from_warehouse
from ketaoutcomes.settings import SimulationSettings, StudySettings, project_root
from ketaoutcomes.table_contract import ContractError, TableContract, col
from ketaoutcomes.warehouse import append_frame, fetch, read_connection, table_exists, write_session, write_table

__all__ = [
    "StepOutcome",
    "AnalysisNotReady",
    "simulate_step",
    "ingest_step",
    "validate_step",
    "analyze_step",
    "render_step",
    "run_report",
    "default_export_dir",
    "default_reports_dir",
    "code_version",
    "announced",
    "RESULTS_RUNS",
    "output_contracts",
]

Progress = Callable[[str, int, int], None]


class AnalysisNotReady(RuntimeError):
    """The data has not passed validation, so no analysis is run."""


@dataclass(frozen=True)
class StepOutcome:
    step: str
    ran: bool  # False when the step was up to date and skipped
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def default_export_dir() -> Path:
    return project_root() / "data" / "synthetic" / "default"


def default_reports_dir() -> Path:
    return project_root() / "reports"


def _wall_clock() -> dt.datetime:
    """The one place that reads the clock: provenance only (load and run times), never analysis."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


@functools.cache
def code_version() -> str:
    """Package version plus the git commit (and '+dirty') when run from a checkout.

    Read once per process: the code a process runs is the code it imported."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def data_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """Hash of the batches in force and the registries: changes whenever the data does."""
    batches = fetch(con, "SELECT batch_id FROM meta_batches ORDER BY load_seq")["batch_id"].to_list()
    reg = load_registries_from_warehouse(con).fingerprint
    return _hash(",".join(batches), reg)


def _record_step(con, step: str, run_id: str, fingerprint: str, status: str, started: dt.datetime,
                 seconds: float, details: dict, settings_id: str | None = None) -> None:
    con.execute(
        "INSERT INTO meta_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [step, run_id, fingerprint, settings_id, status, code_version(), started, seconds,
         json.dumps(details, default=str, sort_keys=True)],
    )


def _last_step(con, step: str, fingerprint: str) -> dict | None:
    rows = fetch(
        con,
        "SELECT * FROM meta_steps WHERE step = ? AND fingerprint = ? ORDER BY started_at DESC, seconds DESC LIMIT 1",
        [step, fingerprint],
    )
    return rows.row(0, named=True) if rows.height else None


# ---------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------

def simulate_step(sim: SimulationSettings, out_dir: Path, *, progress: Progress | None = None) -> StepOutcome:
    """Write a synthetic export (plus truth.json) unless ``out_dir`` already holds this exact cohort."""
    from ketaoutcomes.simulate import simulate_cohort  # imported when needed
    from ketaoutcomes.truth import observed_grid_estimands

    out_dir = Path(out_dir)
    stamp = out_dir / ".simulation-settings.json"
    if stamp.exists() and stamp.read_text() == sim.canonical_json() and (out_dir / "truth.json").exists():
        return StepOutcome("simulate", False, f"synthetic export {out_dir} is up to date (settings {sim.settings_id})",
                           {"export_dir": str(out_dir), "settings_id": sim.settings_id})
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    simulate_cohort(sim, out_dir, progress=(lambda i, n: progress("simulating", i, n)) if progress else None)
    # Add what the analysis of the observed (visit-grid) data should recover.
    truth_file = out_dir / "truth.json"
    truth = json.loads(truth_file.read_text())
    truth["estimands_observed_grid"] = observed_grid_estimands(sim)
    truth_file.write_text(json.dumps(truth, indent=2) + "\n")
    stamp.write_text(sim.canonical_json())
    secs = time.perf_counter() - t0
    return StepOutcome("simulate", True, f"simulated {sim.n_patients:,} patients (seed {sim.seed}) into {out_dir} in {secs:.1f} s",
                       {"export_dir": str(out_dir), "settings_id": sim.settings_id, "seconds": secs})


# ---------------------------------------------------------------------------
# ingest
# ---------------------------------------------------------------------------

def ingest_step(db: Path, export_dir: Path, *, progress: Progress | None = None) -> StepOutcome:
    """Load an export folder; a file already loaded (same content hash) is skipped."""
    started, t0 = _wall_clock(), time.perf_counter()
    with write_session(db) as con:
        summary = ingest_export(con, export_dir, loaded_at=started, progress=progress)
        fp = data_fingerprint(con)
        details = {"export_dir": summary.export_dir, "files": summary.frame().to_dicts(),
                   "ignored_files": list(summary.ignored_files), "data_fingerprint": fp}
        _record_step(con, "ingest", _hash("ingest", fp), fp, "ok", started, time.perf_counter() - t0, details)
    lines = [
        f"{Path(f.source_file).name}: {'already loaded, skipped' if f.skipped else 'loaded'} "
        f"({f.rows_read:,} read = {f.rows_loaded:,} loaded + {f.rows_quarantined:,} quarantined)"
        + (f"; ignored columns: {', '.join(f.ignored_columns)}" if f.ignored_columns else "")
        for f in summary.files
    ]
    if summary.ignored_files:
        lines.append(f"files not in the import format, ignored: {', '.join(summary.ignored_files)}")
    return StepOutcome("ingest", summary.changed, "\n".join(lines), details)


# ---------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------

def _staged(con) -> dict[str, pl.DataFrame]:
    return {t: fetch(con, f"SELECT * FROM stg_{t}") for t in TABLE_ORDER if table_exists(con, f"stg_{t}")}


def validate_step(db: Path, *, force: bool = True) -> StepOutcome:
    """Run the expectation suites on the staged tables and store the results.

    Raises
    ------
    ketaoutcomes.validate.ValidationFailed
        After storing the results, when a critical expectation failed.
    """
    from ketaoutcomes.validate import ValidationFailed, validate_tables  # GX import is slow

    started, t0 = _wall_clock(), time.perf_counter()
    with write_session(db) as con:
        fp = _hash(data_fingerprint(con), code_version())
        last = _last_step(con, "validate", fp)
        if last is not None and not force:
            status = last["status"]
            if status == "ok":
                return StepOutcome("validate", False, "validation is up to date and passed", {"fingerprint": fp})
        registries = load_registries_from_warehouse(con)
        result = validate_tables(_staged(con), registries)
        run_id = _hash("validate", fp)
        if table_exists(con, "validation_results"):
            con.execute("DELETE FROM validation_results WHERE run_id = ?", [run_id])
        append_frame(con, "validation_results", result.results.with_columns(
            pl.lit(run_id).alias("run_id"), pl.lit(fp).alias("fingerprint")))
        n_fail = result.results.filter(~pl.col("success")).height
        details = {"run_id": run_id, "expectations": result.results.height, "failed": n_fail,
                   "critical_failed": result.critical_failures.height}
        _record_step(con, "validate", run_id, fp, "ok" if result.passed else "failed", started,
                     time.perf_counter() - t0, details)
    if not result.passed:
        raise ValidationFailed(result)
    msg = f"validation passed: {result.results.height} expectations, {n_fail} warning(s)"
    return StepOutcome("validate", True, msg, details)


def _validation_status(con, fp_data: str) -> str | None:
    last = _last_step(con, "validate", _hash(fp_data, code_version()))
    return None if last is None else last["status"]


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
        col("registries_fingerprint", "VARCHAR", False),
        col("batches", "VARCHAR", False, "meta_batches.batch_id of the batches in force, comma-separated"),
        col("code_version", "VARCHAR", False),
        col("started_at", "TIMESTAMP", False, "Provenance only (UTC)"),
        col("seconds", "DOUBLE", False),
        col("notes", "VARCHAR", False, "The run's notes (JSON list of strings)"),
    ),
    key=("run_id",),
)


def output_contracts() -> dict[str, TableContract]:
    """The contract of every ad_*/results_* table :func:`analyze_step` writes, by table name:
    :data:`ketaoutcomes.analysis.tables.CONTRACTS` (derive's and the analysis's) and results_runs."""
    from ketaoutcomes.analysis.tables import CONTRACTS  # imports the analysis (statsmodels)

    return {**CONTRACTS, RESULTS_RUNS.name: RESULTS_RUNS}


def analyze_step(db: Path, study: StudySettings, *, force: bool = True) -> StepOutcome:
    """Derive ADSL/ADTTE, fit KM, log-rank and Cox models, store everything with its provenance."""
    from ketaoutcomes.analysis import (  # statsmodels: imported when needed
        analyze,
        modifier_analyses,
        relapse_analyses,
        secondary_analyses,
    )
    from ketaoutcomes.derive import derive_all

    started, t0 = _wall_clock(), time.perf_counter()
    with write_session(db) as con:
        fp_data = data_fingerprint(con)
        status = _validation_status(con, fp_data)
        if status != "ok":
            raise AnalysisNotReady(
                "the data in the warehouse has "
                + ("not been validated" if status is None else "failed validation")
                + "; run `python -m ketaoutcomes validate` and fix what it reports"
            )
        fp = _hash(fp_data, study.settings_id, code_version())
        run_id = _hash("analyze", fp)
        if not force and _last_step(con, "analyze", fp) is not None:
            return StepOutcome("analyze", False, f"analysis {run_id} is up to date", {"run_id": run_id})
        registries = load_registries_from_warehouse(con)
        st = _staged(con)
        derived = derive_all(st["patients"], st["courses"], st["sessions"], st["mood_scores"],
                             registries=registries, study=study)
        result = analyze(derived.adsl, derived.adtte, study=study, visits=derived.visits)
        secondary, secondary_notes = secondary_analyses(
            derived.adsl, st["mood_scores"], st["sessions"], st["adverse_events"], st["courses"], study=study)
        relapse, relapse_notes = relapse_analyses(derived.adsl, derived.adtte, st["sessions"], study=study)
        modifiers, modifier_notes = modifier_analyses(
            derived.adsl, derived.adtte, st["sessions"], st["courses"], study=study,
            ketamine_arms=[k for k, a in registries.arms.items() if a.is_ketamine])
        secondary_notes += relapse_notes + modifier_notes
        tag = [pl.lit(run_id).alias("run_id"), pl.lit(study.settings_id).alias("settings_id")]
        # Analysis datasets are kept per run like the results: several studies
        # (different instruments or thresholds) share one warehouse.
        outputs = {"ad_adsl": derived.adsl, "ad_adtte": derived.adtte, "results_attrition": derived.attrition,
                   **result.tables(), **secondary, **relapse, **modifiers}
        # Every table is written through its contract (declared columns and types, keys).
        contracts = output_contracts()
        undeclared = sorted(set(outputs) - set(contracts))
        if undeclared:
            raise ContractError(f"result table(s) {', '.join(undeclared)} have no contract; declare each in "
                                "ketaoutcomes/analysis/tables.py (or derive/tables.py) before writing it")
        for name, frame in outputs.items():
            if table_exists(con, name):
                con.execute(f'DELETE FROM "{name}" WHERE run_id = ?', [run_id])
            if frame.height:
                write_table(con, contracts[name], frame.with_columns(tag))
        notes = list(derived.notes) + list(result.notes) + secondary_notes
        batches = fetch(con, "SELECT batch_id FROM meta_batches ORDER BY load_seq")["batch_id"].to_list()
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
        details = {"run_id": run_id, "courses": derived.adsl.height,
                   "analysed": derived.adsl.filter(pl.col("ANLFL") == "Y").height, "notes": notes}
        _record_step(con, "analyze", run_id, fp, "ok", started, seconds, details, study.settings_id)
    return StepOutcome("analyze", True, f"analysis {run_id}: {details['analysed']:,} courses analysed", details)


# ---------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------

def _latest_run(con, study: StudySettings) -> dict:
    runs = fetch(con, "SELECT * FROM results_runs WHERE settings_id = ? AND data_fingerprint = ? "
                      "ORDER BY started_at DESC LIMIT 1", [study.settings_id, data_fingerprint(con)]) \
        if table_exists(con, "results_runs") else pl.DataFrame()
    if runs.is_empty():
        raise AnalysisNotReady(
            f"no analysis of the current data with study settings {study.settings_id}; "
            "run `python -m ketaoutcomes analyze` (or `report`, which runs what is missing)"
        )
    return runs.row(0, named=True)


def render_step(db: Path, study: StudySettings, reports_dir: Path, *, truth_path: Path | None = None) -> StepOutcome:
    """Render the HTML report of the latest analysis of the current data (read-only)."""
    from ketaoutcomes.report import ReportData, render_report
    from ketaoutcomes.report.render import EXTRA_RESULT_TABLES

    reports_dir = Path(reports_dir)
    con = read_connection(db)
    try:
        run = _latest_run(con, study)
        rid = run["run_id"]

        def q(sql: str) -> pl.DataFrame:
            return fetch(con, sql, [rid]) if "?" in sql else fetch(con, sql)

        def by_run(name: str) -> pl.DataFrame:
            return q(f"SELECT * EXCLUDE (run_id, settings_id) FROM {name} WHERE run_id = ?") \
                if table_exists(con, name) else pl.DataFrame()

        val_last = fetch(con, "SELECT run_id FROM meta_steps WHERE step = 'validate' ORDER BY started_at DESC LIMIT 1")
        validation = fetch(con, "SELECT * EXCLUDE (run_id, fingerprint) FROM validation_results WHERE run_id = ?",
                           [val_last["run_id"][0]]) if val_last.height else pl.DataFrame()
        if truth_path is None:  # a synthetic export carries truth.json beside its files
            dirs = fetch(con, "SELECT DISTINCT source_file FROM meta_batches")["source_file"].to_list()
            parents = {Path(p).parent for p in dirs}
            truth_path = next(iter(parents)) / "truth.json" if len(parents) == 1 else None
        truth = json.loads(Path(truth_path).read_text()) if truth_path and Path(truth_path).exists() else None
        data = ReportData(
            title=f"ketaoutcomes: {study.name}",
            adsl=by_run("ad_adsl"),
            attrition=by_run("results_attrition"),
            adtte=by_run("ad_adtte"),
            km=by_run("results_km"),
            km_median=by_run("results_km_median"),
            logrank=by_run("results_logrank"),
            cox=by_run("results_cox"),
            cox_fit=by_run("results_cox_fit"),
            validation=validation,
            batches=fetch(con, "SELECT * FROM meta_batches ORDER BY load_seq"),
            quarantine_summary=fetch(con, "SELECT table_name, rule, column_name, count(DISTINCT (batch_id, row_number)) "
                                          "AS n_rows FROM quarantine GROUP BY ALL ORDER BY ALL"),
            # the checks of the loads in force: batches that still contribute rows to stg_*, and each
            # table's latest batch (even one whose every row was quarantined)
            dq_checks=fetch(con, "SELECT * FROM dq_checks WHERE batch_id IN ("
                                 + " UNION ".join(f"SELECT DISTINCT _batch_id FROM stg_{t}" for t in TABLE_ORDER)
                                 + " UNION SELECT arg_max(batch_id, load_seq) FROM meta_batches GROUP BY table_name"
                                 + ") ORDER BY table_name, check_id"),
            provenance={
                "run_id": rid, "settings_id": run["settings_id"], "settings": json.loads(run["settings_json"]),
                "code_version": run["code_version"], "data_fingerprint": run["data_fingerprint"],
                "registries_fingerprint": run["registries_fingerprint"], "batches": run["batches"],
                "analysis_started_at": str(run["started_at"]), "analysis_seconds": round(run["seconds"], 2),
                "warehouse": str(Path(db).resolve()), "instrument": study.instrument,
                "reference_arm": study.reference_arm, "alpha": study.alpha,
            },
            notes=tuple(json.loads(run["notes"])),
            truth=truth,
            ps=by_run("results_ps"),
            ph=by_run("results_ph"),
            rmst=by_run("results_rmst"),
            safety=by_run("results_safety"),
            trajectory=by_run("results_trajectory"),
            balance=by_run("results_balance"),
            results={name: by_run(name) for name in EXTRA_RESULT_TABLES},
        )
    finally:
        con.close()
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = reports_dir / f"ketaoutcomes-{study.name}.html"
    render_report(data, out)
    # Study settings are saved beside their outputs.
    (reports_dir / f"ketaoutcomes-{study.name}.settings.json").write_text(
        json.dumps({"settings_id": study.settings_id, "run_id": rid, **study.model_dump(mode="json")}, indent=2) + "\n"
    )
    return StepOutcome("render", True, f"report written to {out}", {"report_path": str(out), "run_id": rid})


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


def run_report(
    db: Path,
    study: StudySettings,
    *,
    sim: SimulationSettings | None = None,
    export_dir: Path | None = None,
    reports_dir: Path | None = None,
    progress: Progress | None = None,
    on_step: Callable[[StepOutcome], None] | None = None,
) -> list[StepOutcome]:
    """Run the missing or out-of-date steps, then render.

    With no ``export_dir`` and an empty warehouse, the embedded default is used:
    the seeded synthetic cohort ``sim`` (default :class:`SimulationSettings`) is
    written to data/synthetic/default and ingested. With data already in the
    warehouse and no ``export_dir``, nothing is ingested.
    """
    outcomes: list[StepOutcome] = []

    def done(o: StepOutcome) -> None:
        outcomes.append(o)
        if on_step:
            on_step(o)

    if export_dir is None and not _has_batches(db):
        export_dir = default_export_dir()
        done(simulate_step(sim or SimulationSettings(), export_dir, progress=progress))
    if export_dir is not None:
        done(ingest_step(db, export_dir, progress=progress))
    with announced(progress, "validating (Great Expectations)"):
        done(validate_step(db, force=False))
    with announced(progress, "analyzing (derive, KM, log-rank, Cox)"):
        done(analyze_step(db, study, force=False))
    with announced(progress, "rendering the report"):
        done(render_step(db, study, reports_dir or default_reports_dir()))
    return outcomes
