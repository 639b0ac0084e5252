"""Prefect 3 flows: thin wrappers around :mod:`ketaoutcomes.pipeline`.

The package runs without Prefect (``python -m ketaoutcomes ...``); these flows
only add orchestration: task/flow run records, retries of *transient* failures,
logs and artifacts in the Prefect UI, and schedules (see ``flows/deploy.py``).
Every step opens the DuckDB warehouse itself, so tasks pass paths, never
connections or data frames. The diagrams and the tables each task writes are in
``dags.md``.

Flows (all parameters JSON-able: ``str`` paths and ``int``\\ s; ``None`` means
"the same default as the CLI"):

* :func:`ingest_flow` (``ketaoutcomes-ingest``, nightly): ingest the configured
  export folder (``export_dir`` or ``$KETAOUTCOMES_EXPORT_DIR``; the synthetic demo
  only with ``demo=True``), then validate.
* :func:`analysis_flow` (``ketaoutcomes-analysis``, weekly): analyze, then
  render the HTML report.
* :func:`ketaoutcomes_pipeline` (``ketaoutcomes-pipeline``): the parent flow,
  simulate if needed -> ingest flow -> analysis flow (as subflows); returns the
  report path.

Run one directly (no server needed; Prefect starts a temporary one)::

    uv run python -m flows.pipeline                     # the parent flow, defaults
    uv run python -m flows.pipeline --n-patients 500 --seed 7
"""

from __future__ import annotations

from flows import _env  # noqa: F401  (must precede the prefect import)

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

import ketaoutcomes.pipeline as steps
from ketaoutcomes.report import digest
from ketaoutcomes.settings import SimulationSettings, StudySettings, default_db_path, execution_settings
from ketaoutcomes.settings import load_study as settings_load_study
from ketaoutcomes.warehouse import WarehouseBusy, WarehouseChanged

__all__ = [
    "EXPORT_ENV",
    "ExportNotConfigured",
    "FLOW_NAMES",
    "configured_export_dir",
    "TASK_NAMES",
    "analysis_flow",
    "analyze_task",
    "ingest_flow",
    "ingest_task",
    "ketaoutcomes_pipeline",
    "load_study",
    "render_task",
    "simulate_task",
    "validate_task",
]

#: Flow names as they appear in the Prefect API/UI (and in dags.md).
FLOW_NAMES = {
    "ingest": "ketaoutcomes-ingest",
    "analysis": "ketaoutcomes-analysis",
    "pipeline": "ketaoutcomes-pipeline",
}
#: Task names (also the task run name prefixes).
TASK_NAMES = steps.STEPS
#: Environment variable naming the export folder the nightly ingest loads (its export_dir parameter wins).
EXPORT_ENV = "KETAOUTCOMES_EXPORT_DIR"

#: Retry delays (seconds) for transient failures: the warehouse writer lock held
#: by another writer for longer than its own 10-minute wait, or a DuckDB I/O error.
TRANSIENT_RETRY_DELAYS = [60, 300]


# --------------------------------------------------------------------------- helpers


def _exception_of(state: Any) -> BaseException | None:
    data = getattr(state, "data", None)
    return data if isinstance(data, BaseException) else None


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry only failures that a later attempt can fix.

    Transient: another writer holds the warehouse (``WarehouseBusy``), or published
    while this one worked (``WarehouseChanged``: its lock file was deleted), a DuckDB
    I/O error (file lock held by a foreign process), a timeout. Everything else
    (bad input, a bug, a missing file, a validation failure, a full disk) fails at
    once: retrying deterministic code only repeats the failure later.
    """
    exc = _exception_of(state)
    return isinstance(exc, (WarehouseBusy, WarehouseChanged, duckdb.IOException, TimeoutError))


def _log_outcome(outcome: steps.StepOutcome) -> steps.StepOutcome:
    logger = get_run_logger()
    prefix = "" if outcome.ran else "(up to date, skipped) "
    logger.info("%s%s", prefix, outcome.message)
    logger.debug("%s details: %s", outcome.step, json.dumps(outcome.details, default=str, sort_keys=True))
    return outcome


def _path(value: str | None, default: Path | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else default


def load_study(study_file: str | None) -> StudySettings:
    """StudySettings from a TOML or JSON file, as the CLI's --study; None -> defaults."""
    return settings_load_study(study_file)


def _simulation(n_patients: int | None, seed: int | None, study: StudySettings) -> SimulationSettings:
    given = {k: v for k, v in {"n_patients": n_patients, "seed": seed}.items() if v is not None}
    return SimulationSettings.for_study(study, **given)  # a target-trial study's: the SSRI-failure cohort


# --------------------------------------------------------------------------- tasks
# Caching is off everywhere: the steps know themselves whether they are up to
# date (StepOutcome.ran is False when they skip), and a Prefect cache would hide
# a changed export folder or warehouse.


#: Every task: no cache (the steps know when they are up to date), no result persistence.
_NO_RETRY_TASK = dict(cache_policy=NO_CACHE, persist_result=False, retries=0)
#: Tasks that write the warehouse retry only transient failures (see retry_if_transient).
_TRANSIENT_TASK = dict(cache_policy=NO_CACHE, persist_result=False, retries=len(TRANSIENT_RETRY_DELAYS),
                       retry_delay_seconds=TRANSIENT_RETRY_DELAYS, retry_condition_fn=retry_if_transient)


@task(name="simulate", **_NO_RETRY_TASK)
def simulate_task(sim: SimulationSettings, out_dir: Path) -> steps.StepOutcome:
    """Write a synthetic export folder (deterministic: no retries)."""
    return _log_outcome(steps.simulate_step(sim, Path(out_dir)))


@task(name="ingest", **_TRANSIENT_TASK)
def ingest_task(db: Path, export_dir: Path) -> steps.StepOutcome:
    """Load one export folder into raw_*/stg_* (+ meta_batches, quarantine); publish the
    ``ketaoutcomes-quarantine`` artifact: the files read and the rows quarantined per table and rule
    in the batches this run loaded."""
    outcome = _log_outcome(steps.ingest_step(Path(db), Path(export_dir)))
    files = outcome.details.get("files") or []
    n = sum(f.get("rows_quarantined") or 0 for f in files if not f.get("skipped"))
    _artifact("ketaoutcomes-quarantine", lambda: digest.quarantine_markdown(Path(db), files, export_dir=str(export_dir)),
              f"{n:,} row(s) quarantined from {sum(not f.get('skipped') for f in files)} file(s) loaded")
    return outcome


@task(name="validate", **_NO_RETRY_TASK)
def validate_task(db: Path, force: bool = True, changed_only: bool = False) -> steps.StepOutcome:
    """Run the data checks and store them in validation_results (``changed_only``: only the rows
    new batches added or changed since the last validation that passed, when there is one).

    Never retried: a critical failure (``ValidationFailed``) is a property of the
    data, not of the moment. The failure message is logged, published as the
    ``ketaoutcomes-validation`` artifact and re-raised, so the task and its flow
    end FAILED with that message.
    """
    from ketaoutcomes.validate import ValidationFailed

    logger = get_run_logger()
    try:
        outcome = steps.validate_step(Path(db), force=force, changed_only=changed_only)
    except ValidationFailed as exc:
        logger.error("validation failed: %s", exc)
        _artifact("ketaoutcomes-validation", lambda: digest.validation_markdown(
            Path(db), headline="Validation FAILED", message=str(exc)), "validation failed",
            fallback=f"# Validation FAILED\n\n{exc}\n\nWarehouse: `{db}` (results stored in `validation_results`).")
        raise
    _log_outcome(outcome)
    if outcome.ran:  # an up-to-date check (weekly flow) adds nothing new to publish
        _artifact("ketaoutcomes-validation", lambda: digest.validation_markdown(
            Path(db), run_id=outcome.details.get("run_id"), headline="Validation passed", message=outcome.message),
            outcome.message)
    return outcome


@task(name="analyze", **_TRANSIENT_TASK)
def analyze_task(db: Path, study: StudySettings) -> steps.StepOutcome:
    """Derive ad_adsl/ad_adtte and fit the survival models (results_*), unless the analysis of this
    data, study and code is there already (``force=False``: nothing is re-run). With
    ``$KETAOUTCOMES_EXECUTOR=dask`` the analysis's units run as the subflow
    ``ketaoutcomes-analysis-fanout`` on a Dask cluster (:mod:`flows.dask_fanout`, docs/scaling.md);
    this task still writes every result, in one write session."""
    execution = execution_settings()
    fan_out = None
    if execution.executor == "dask":
        from flows.dask_fanout import dask_fan_out  # distributed: imported when used

        fan_out = dask_fan_out(execution)
    return _log_outcome(steps.analyze_step(Path(db), study, force=False, fan_out=fan_out))


@task(name="render", **_TRANSIENT_TASK)
def render_task(db: Path, study: StudySettings, reports_dir: Path) -> steps.StepOutcome:
    """Write the HTML report (reports/*.html; skipped when it is current); details["report_path"].
    Publishes the ``ketaoutcomes-report`` artifact (the report's path, the target trial's results
    when the study has one, and its summary table) and the ``ketaoutcomes-key-results`` table
    artifact (the summary table)."""
    outcome = _log_outcome(steps.render_step(Path(db), study, Path(reports_dir)))
    report, summary = outcome.details.get("report_path"), outcome.details.get("summary")
    _artifact("ketaoutcomes-report", lambda: digest.report_markdown(
        summary, report_path=report, study=study.name, settings_id=study.settings_id,
        run_id=outcome.details.get("run_id"), rendered=outcome.ran), f"report {report}",
        fallback=f"# Report\n\n{outcome.message}\n\nReport file: `{report}`")
    if summary and summary.get("rows"):
        _artifact("ketaoutcomes-key-results", lambda: digest.key_results_rows(summary),
                  f"{summary['endpoint']}: each route vs the reference arm, as in the summary of {report}")
    return outcome


def _artifact(key: str, make: Callable[[], str | list], description: str, *, fallback: str | None = None) -> None:
    """Publish a markdown artifact (``make`` returns a str) or a table artifact (a list of rows).
    Never lets a failure fail the step: the ``fallback`` markdown is published instead, or a warning logged."""
    try:
        content = make()
    except Exception as exc:
        get_run_logger().warning("could not build artifact %s: %s", key, exc)
        if fallback is None:
            return
        content = fallback
    try:
        if isinstance(content, str):
            create_markdown_artifact(key=key, markdown=content, description=description[:500])
        else:
            create_table_artifact(key=key, table=content, description=description[:500])
    except Exception as exc:  # pragma: no cover - API hiccup
        get_run_logger().warning("could not create artifact %s: %s", key, exc)


# --------------------------------------------------------------------------- flows


class ExportNotConfigured(ValueError):
    """The nightly ingest has no export folder to load and is not told to load the synthetic demo."""


def configured_export_dir(export_dir: str | None) -> Path | None:
    """The export folder the nightly ingest loads: ``export_dir`` (the deployment's parameter,
    ``flows.deploy --export-dir``), else ``$KETAOUTCOMES_EXPORT_DIR``, else None."""
    return _path(export_dir, None) or _path(os.environ.get(EXPORT_ENV), None)


@flow(name=FLOW_NAMES["ingest"], log_prints=True)
def ingest_flow(export_dir: str | None = None, db: str | None = None, demo: bool = False) -> dict[str, Any]:
    """Nightly: ingest the configured export folder into the warehouse, then validate what it
    added or changed (every row when there is no earlier validation that passed to build on; the
    weekly analysis validates every row before it analyses).

    Args:
        export_dir: folder of the export to load. None: $KETAOUTCOMES_EXPORT_DIR. Nothing is
            loaded that is not configured: with neither (and no ``demo``) the flow fails,
            naming both, before it touches anything.
        db: warehouse file. None: $KETAOUTCOMES_DB, else
            data/warehouse/ketaoutcomes.duckdb under the project root (as the CLI).
        demo: load the synthetic demo instead: the default cohort, simulated into the folder of
            ``ketaoutcomes.pipeline.synthetic_export_dir`` (data/synthetic/default for the
            default warehouse, ``<db>.synthetic/default`` beside any other); not with an export.

    Returns the steps' outcomes (message and details) as a JSON-able dict.
    """
    db_path = _path(db, default_db_path())
    export = configured_export_dir(export_dir)
    if demo and export is not None:
        raise ExportNotConfigured(f"nightly ingest: both an export folder ({export}) and demo=True are configured; "
                                  "give one of them")
    if not demo and export is None:
        raise ExportNotConfigured(
            "nightly ingest: no export folder configured; give export_dir (`python -m flows.deploy --export-dir DIR`) "
            f"or set ${EXPORT_ENV}, or demo=True (`python -m flows.deploy --demo`) to load the synthetic demo cohort")
    plan = steps.plan_run(db_path, export_dir=export, simulate=demo, through="validate")
    outcomes = []
    if "simulate" in plan.steps:
        get_run_logger().info("demo: simulating the default cohort into %s", plan.export_dir)
        outcomes.append(simulate_task(plan.sim, plan.export_dir))
    outcomes.append(ingest_task(db_path, plan.export_dir))
    outcomes.append(validate_task(db_path, changed_only=True))  # the weekly analysis validates every row
    return {o.step: {"ran": o.ran, "message": o.message, "details": o.details} for o in outcomes}


@flow(name=FLOW_NAMES["analysis"], log_prints=True)
def analysis_flow(db: str | None = None, study_file: str | None = None, reports_dir: str | None = None) -> str:
    """Weekly: fit the survival models and render the HTML report, each only when stale (an
    analysis of the same data, validation, study and code is not re-run, a current report is not
    re-rendered); the ``ketaoutcomes-report`` artifact is published either way.

    Args:
        db: warehouse file (None: the CLI's default).
        study_file: TOML or JSON file of StudySettings (None: the default study).
        reports_dir: where the report goes (None: reports/ under the project root).

    Returns the report path (str).
    """
    study = load_study(study_file)  # a bad study file fails the flow before any step runs
    execution_settings()  # and so does a bad $KETAOUTCOMES_EXECUTOR (or another variable of docs/scaling.md)
    db_path = _path(db, default_db_path())
    reports = _path(reports_dir, steps.default_reports_dir())
    plan = steps.plan_run(db_path, embedded_default=False)  # the analysis never makes up data
    # Only data that passed the current suites is analysed: re-validate if the
    # data or the code changed since the nightly run (a no-op otherwise).
    tasks = {"validate": lambda: validate_task(db_path, force=False), "analyze": lambda: analyze_task(db_path, study),
             "render": lambda: render_task(db_path, study, reports)}
    outcomes = [tasks[step]() for step in plan.steps if step in tasks]
    return str(outcomes[-1].details["report_path"])


@flow(name=FLOW_NAMES["pipeline"], log_prints=True)
def ketaoutcomes_pipeline(
    export_dir: str | None = None,
    db: str | None = None,
    study_file: str | None = None,
    reports_dir: str | None = None,
    n_patients: int | None = None,
    seed: int | None = None,
) -> str:
    """Everything, end to end: (simulate) -> ingest flow -> analysis flow.

    The run order is ``ketaoutcomes.pipeline.plan_run``'s, as the CLI's ``report``: a
    synthetic cohort is simulated when ``n_patients``/``seed`` are given (into
    ``export_dir``, default the folder of ``ketaoutcomes.pipeline.synthetic_export_dir``:
    beside the warehouse, named by the settings; SimulationSettings with the other
    fields at their defaults, for a study with a ``[target_trial]`` the SSRI-failure cohort
    of its protocol; the simulate step itself skips when the folder already
    holds that cohort), or when no export is given and the warehouse is empty (the
    default cohort). A cohort asked for by ``n_patients``/``seed`` fails the flow before any
    step when the warehouse holds other data (it would be loaded on top of it). The ingest flow
    runs when there is an export to load. The other arguments are those of
    :func:`ingest_flow` and :func:`analysis_flow`.

    Returns the report path (str).
    """
    # validate every input before any step runs
    sim = _simulation(n_patients, seed, load_study(study_file))
    execution_settings()
    db_path = _path(db, default_db_path())
    asked = n_patients is not None or seed is not None
    plan = steps.plan_run(db_path, export_dir=_path(export_dir, None), sim=sim, simulate=asked)
    if asked:  # a cohort asked for by its settings: into an empty warehouse or one holding that cohort only
        steps.check_cohort_fits(db_path, plan.export_dir)
    if "simulate" in plan.steps:
        simulate_task(plan.sim, plan.export_dir)
    if "ingest" in plan.steps:  # nothing to load: the analysis flow validates what is there, if stale
        ingest_flow(export_dir=str(plan.export_dir), db=str(db_path))
    return analysis_flow(db=str(db_path), study_file=study_file, reports_dir=reports_dir)


def main(argv: list[str] | None = None) -> int:
    """Run the parent flow once (python -m flows.pipeline --help)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=ketaoutcomes_pipeline.__doc__.splitlines()[0])
    parser.add_argument("--export-dir")
    parser.add_argument("--db")
    parser.add_argument("--study-file")
    parser.add_argument("--reports-dir")
    parser.add_argument("--n-patients", type=int)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    report = ketaoutcomes_pipeline(**vars(args))
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
