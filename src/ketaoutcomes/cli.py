"""Command line: ``python -m ketaoutcomes VERB``. No logic of its own: each verb
calls a function of :mod:`ketaoutcomes.pipeline` and turns every error into a
one-line message and a non-zero exit (``--debug``: the Python traceback instead)."""

from __future__ import annotations

import gc
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ketaoutcomes.settings import (DB_ENV, EXECUTION_ENV, SimulationSettings, StudySettings, default_db_path,
                                   execution_settings, home_db_path, load_study)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=(
        "Outcome studies of ketamine in depression: synthetic cohort or clinic export -> DuckDB warehouse -> "
        "validation -> time-to-response and relapse models -> HTML report.\n\n"
        f"The warehouse is --db PATH, else ${DB_ENV}, else data/warehouse/ketaoutcomes.duckdb."
    ),
)
err = Console(stderr=True)
out = Console()
#: Set by the global --debug option (the callback runs before every verb).
_state = {"debug": False}


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="On an error, show the Python traceback instead of one line.")] = False,
) -> None:
    _state["debug"] = debug

DbOption = Annotated[
    Optional[Path],
    typer.Option("--db", envvar=DB_ENV, help="Warehouse file (DuckDB). Default: data/warehouse/ketaoutcomes.duckdb."),
]
StudyOption = Annotated[
    Optional[Path],
    typer.Option("--study", help="Study settings file (TOML or JSON, fields of StudySettings). Default: the built-in study."),
]


def _db(db: Path | None) -> Path:
    return (db or default_db_path()).resolve()


def _fan_out():
    """Where the analysis's units of work run, from $KETAOUTCOMES_EXECUTOR and the other variables of
    docs/scaling.md: None (here, one after the other), or on a Dask cluster through the Prefect flow of
    flows/dask_fanout.py (imported when an analysis runs: an up-to-date report imports no Prefect)."""
    import importlib.util

    try:
        settings = execution_settings()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if settings.executor == "serial":
        return None
    if importlib.util.find_spec("flows") is None or importlib.util.find_spec("flows.dask_fanout") is None:
        raise CommandError(f"{EXECUTION_ENV['executor']}=dask runs the analysis through flows/dask_fanout.py of the "
                           "ketaoutcomes checkout: run the command from the checkout's folder, or unset "
                           f"{EXECUTION_ENV['executor']}")

    def fan_out(body):
        import os

        # the command speaks in its own lines (an error in one): Prefect's log of the flow, and of a unit
        # that failed with its traceback, stays out of them unless asked for (PREFECT_LOGGING_LEVEL)
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        from flows.dask_fanout import dask_fan_out

        return dask_fan_out(settings)(body)

    return fan_out


class CommandError(ValueError):
    """A command's own argument cannot be used (its message says why and names it)."""


class StudyFileError(ValueError):
    """A study file that cannot be read or fails validation."""


def _study(path: Path | None) -> StudySettings:
    """The study settings of ``path`` (call inside :func:`_errors`: a bad file is a one-line error)."""
    try:
        return load_study(path)
    except ValueError as exc:
        raise StudyFileError(str(exc)) from None


def _simulation(study: StudySettings | None = None, **fields) -> SimulationSettings:
    """Simulation settings from options (the synthetic cohort of ``study`` when given); an
    out-of-range value is a usage error naming the option."""
    try:
        return SimulationSettings.for_study(study, **fields) if study is not None else SimulationSettings(**fields)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean the input or the machine needs fixing (their message says how: a file that
    cannot be written is an OSError naming it); anything else is a bug."""
    from ketaoutcomes.analysis.checks import StudyMismatch
    from ketaoutcomes.derive.target_trial import TargetTrialMismatch
    from ketaoutcomes.ingest import IngestError
    from ketaoutcomes.ingest.rollback import RollbackError
    from ketaoutcomes.pipeline import AnalysisNotReady, SimulationRefused
    from ketaoutcomes.reproduce import ReproduceRefused
    from ketaoutcomes.simulate.ssri_failure_export import SimulationProtocolError
    from ketaoutcomes.query import QueryRefused
    from ketaoutcomes.table_contract import ContractError
    from ketaoutcomes.warehouse import DiskFull, WarehouseBusy, WarehouseChanged, WarehouseMissing

    return (IngestError, AnalysisNotReady, StudyMismatch, StudyFileError, ContractError, WarehouseBusy,
            WarehouseChanged, WarehouseMissing, DiskFull, RollbackError, SimulationRefused, QueryRefused,
            CommandError, ReproduceRefused, SimulationProtocolError, TargetTrialMismatch, OSError)


def _error(text: str) -> None:
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


@contextmanager
def _errors():
    """Every failure -> one line 'error: ...' on stderr and exit 1 (2 for a validation failure,
    which lists the failed rules); an unexpected exception is an internal error. With --debug,
    the exception propagates with its traceback."""
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise
    except Exception as exc:  # noqa: BLE001 - no traceback reaches a user (--debug shows it)
        if _state["debug"]:
            raise
        from ketaoutcomes.validate import ValidationFailed

        if isinstance(exc, ValidationFailed):
            err.print(f"[bold red]error:[/] {escape(exc.result.message())}", highlight=False, soft_wrap=True)
            err.print("Fix the rows named above in the export and ingest it again; details in table "
                      "validation_results (`python -m ketaoutcomes query \"SELECT * FROM validation_results\"`).")
            raise typer.Exit(2) from None
        if isinstance(exc, _user_errors()):
            _error(str(exc))
        else:
            # The message of an unexpected exception is not shown: a library's message can quote
            # the data (a cell value, an identifier); --debug shows it with the trace.
            _error(f"internal error ({type(exc).__name__}); rerun with --debug for the message and the trace")
        raise typer.Exit(1) from None


@contextmanager
def _progress():
    """A progress callback (label, i, n) drawing one bar per label on stderr."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def update(label: str, i: int, n: int) -> None:
            key = label.split(" ")[0]
            if key not in tasks:
                tasks[key] = bar.add_task(label, total=n)
            bar.update(tasks[key], completed=i, total=n, description=label)

        yield update


def _say(outcome) -> None:
    mark = "[green]done[/]" if outcome.ran else "[dim]up to date[/]"
    err.print(f"{mark} {outcome.step}: {escape(outcome.message)}", highlight=False, soft_wrap=True)


@app.command()
def simulate(
    patients: Annotated[int, typer.Option("--patients", help="Number of patients (100 to 1,000,000).")] = SimulationSettings().n_patients,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same files.")] = SimulationSettings().seed,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder to write the export into (never one holding an export that no simulation wrote). Default: data/synthetic/default for the default cohort, else data/synthetic/n<N>-seed<S>-<settings id>, so no simulation writes over another's.")] = None,
    file_format: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    design: Annotated[str, typer.Option("--design", help="routes: every patient's first course on one arm (the default cohort); ssri-failure: an SSRI course ending in non-response, then ketamine at a confounded time or no ketamine, with the true risks of the target trial's strategies in truth.json (the cohort of a target-trial study).")] = "routes",
    study: Annotated[Optional[Path], typer.Option("--study", help="With --design ssri-failure: simulate for the \\[target_trial] of this study file (follow-up, washout, grace period, risk days); default: the default protocol.")] = None,
) -> None:
    """Write a synthetic export folder in the import format, plus truth.json with the effects built in."""
    from ketaoutcomes.pipeline import simulate_step, synthetic_export_dir

    if design not in ("routes", "ssri-failure"):
        raise typer.BadParameter(f"--design {design!r}: routes or ssri-failure")
    if study is not None and design != "ssri-failure":
        raise typer.BadParameter("--study gives the target trial of --design ssri-failure: add --design ssri-failure")
    trial = {}
    if design == "ssri-failure":
        with _errors():
            protocol = _study(study).target_trial if study is not None else None
        if study is not None and protocol is None:
            raise typer.BadParameter(f"study file {study} has no [target_trial] table to simulate for")
        trial = {"design": "ssri_failure", "target_trial": protocol}
    sim = _simulation(n_patients=patients, seed=seed, file_format=file_format, **trial)
    target = out_dir if out_dir is not None else synthetic_export_dir(sim)
    with _errors(), _progress() as progress:
        _say(simulate_step(sim, target, progress=progress))
    out.print(str(target.resolve()), markup=False, highlight=False, soft_wrap=True)


@app.command()
def ingest(
    export_dir: Annotated[Path, typer.Argument(help="Folder with patients, courses, sessions, adverse_events, mood_scores and optionally clinical_events (.csv or .parquet).")],
    db: DbOption = None,
    reload_rolled_back: Annotated[bool, typer.Option("--reload-rolled-back", help="Load files whose content a rollback removed (refused without this option), on purpose.")] = False,
) -> None:
    """Load a folder of CSV or Parquet files in the import format (see docs/import-format.md).

    Every file is first scanned for identifiers, headers included (docs/phi-guard.md): a finding refuses the export. Ids must be pseudonymous: by default P1, PT-001, 17, C0000001-001-A1; an export declares another shape with pattern = "..." in the ids table of its phi_allowlist.toml.

    Rows that break the format are quarantined with a reason that never quotes the value (free text in site or drug, a number outside its possible range such as an age outside 0-120).

    Deliveries apply in the order they are loaded: a file that is its table's latest delivery is skipped (the same folder twice changes nothing); a file with the content of an earlier, since superseded delivery is loaded again and becomes current (to undo a correction, send the original file again). arms.csv and instruments.csv are deliveries too (batches of their own, loaded before the tables).

    A file whose content a rollback removed is refused (the export is not loaded) until it is replaced by a corrected file or moved out of the folder; --reload-rolled-back loads it again on purpose.

    Lines may end in LF, CRLF or a lone CR; blank rows are skipped and counted; timestamps are the clinic's local time (an offset is dropped, UTC times are refused).

    Limits (see "Limits" in docs/import-format.md): only regular files, never a compressed one; at most 1,000 columns a file \
and 1 MiB a line or value; memory: $KETAOUTCOMES_MEMORY_LIMIT (e.g. 8GB or 50%; default 80% of the machine's)."""
    from ketaoutcomes.pipeline import ingest_step

    with _errors(), _progress() as progress:
        _say(ingest_step(_db(db), export_dir, progress=progress, reload_rolled_back=reload_rolled_back))
    out.print(f"warehouse: {_db(db)}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def validate(
    db: DbOption = None,
    changed_only: Annotated[bool, typer.Option(
        "--changed-only", help="Check only the rows that batches loaded since the last validation that passed "
        "added or changed (a session is checked again when its course changed), as the nightly flow does; every "
        "row when there is no such validation (the first one, or a rollback, other registries or code since). "
        "An analysis always validates every row first.")] = False,
) -> None:
    """Run the Great Expectations suites on what is in the warehouse; exit 2 on a critical failure."""
    from ketaoutcomes.pipeline import announced, validate_step

    with _errors(), _progress() as progress, announced(progress, "validating (Great Expectations)"):
        _say(validate_step(_db(db), changed_only=changed_only))


@app.command()
def analyze(db: DbOption = None, study: StudyOption = None) -> None:
    """Derive the analysis datasets and fit KM, log-rank and Cox models; results go to results_* tables.

    Validates first if the data or the code changed since the last validation: only data that
    passed the current suites is analysed. With $KETAOUTCOMES_EXECUTOR=dask (from the checkout) the
    analysis's units run as Prefect tasks on a Dask cluster: $KETAOUTCOMES_DASK_ADDRESS, else a local
    one of $KETAOUTCOMES_DASK_WORKERS processes (default 2); the results are the same (docs/scaling.md)."""
    from ketaoutcomes.pipeline import run_report

    with _errors(), _progress() as progress:
        run_report(_db(db), _study(study), through="analyze", embedded_default=False, force=("analyze",),
                   progress=progress, on_step=_say, fan_out=_fan_out())


@app.command(help=(
    "Run whatever earlier steps are missing or out of date, then render the HTML report.\n\n"
    "With nothing changed (the same data, validation, study and code, and the report file as it was written) "
    "nothing is recomputed or rendered again: each step says it is up to date, and the warehouse is not "
    "written.\n\n"
    "With no --export and no data in the default warehouse, the synthetic default cohort is simulated and "
    "loaded first (into data/synthetic/default; with other --patients/--seed into data/synthetic/n<N>-seed<S>-<id>, "
    "never over another export); for a study with a \\[target_trial] that cohort is the SSRI-failure cohort of its "
    "protocol (as `simulate --design ssri-failure --study FILE`). A warehouse named by --db or $KETAOUTCOMES_DB must exist or be given an "
    "--export: a mistyped path is an error, never a new warehouse of synthetic data. --patients/--seed on a "
    "warehouse that holds other data are an error, never ignored: a fresh cohort needs a warehouse of its own."))
def report(
    db: DbOption = None,
    study: StudyOption = None,
    export_dir: Annotated[Optional[Path], typer.Option("--export", help="Ingest this export first (default: the warehouse's data; an empty warehouse gets the synthetic default cohort).")] = None,
    reports_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for the HTML report. Default: reports/.")] = None,
    patients: Annotated[Optional[int], typer.Option("--patients", help=f"Size of the synthetic cohort simulated into an empty default warehouse (default {SimulationSettings().n_patients:,}). An error with --export, or when the warehouse holds other data.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help=f"Seed of that synthetic cohort (default {SimulationSettings().seed}).")] = None,
) -> None:
    """Run whatever earlier steps are missing or out of date, then render the report (help: the decorator's)."""
    from ketaoutcomes.pipeline import check_cohort_fits, run_report, synthetic_export_dir

    given = {k: v for k, v in {"n_patients": patients, "seed": seed}.items() if v is not None}
    if given and export_dir is not None:
        raise typer.BadParameter("--patients/--seed choose a synthetic cohort; --export loads the export given: "
                                 "give one or the other")
    dbp = _db(db)
    with _errors(), _progress() as progress:
        settings = _study(study)
        sim = _simulation(settings, **given)  # a target-trial study's: the SSRI-failure cohort of its protocol
        if given:  # never ignored: the warehouse must be empty or hold this very cohort
            check_cohort_fits(dbp, synthetic_export_dir(sim, dbp))
        outcomes = run_report(dbp, settings, sim=sim, export_dir=export_dir, reports_dir=reports_dir,
                              embedded_default=dbp == home_db_path().resolve(), progress=progress, on_step=_say,
                              fan_out=_fan_out())
    out.print(f"report:    {outcomes[-1].details['report_path']}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"warehouse: {dbp}", markup=False, highlight=False, soft_wrap=True)


@app.command(help=(
    "Restore the warehouse to its state before a batch (a batch_id of meta_batches) or a step (a run_id of "
    "meta_steps): the batches at and after it are dropped, stg_* and the registries in force (ref_arms, "
    "ref_instruments) are rebuilt from the batches still in force, and the analysis runs and validations of the "
    "dropped data are removed (their meta_steps rows are marked rolled_back, so the next run recomputes them).\n\n"
    "An export's arms.csv and instruments.csv are batches of their own, loaded before its tables: to roll back a "
    "whole export, give its ingest step's run_id (or its first batch). Registry rows of a warehouse written before "
    "registries were kept per batch belong to no batch and stay.\n\n"
    "The removed files' content is recorded: a later ingest of a file with that content (the export folder still "
    "holds it) is refused until the file is replaced or moved out, or loaded again with ingest "
    "--reload-rolled-back.\n\n"
    "Atomic: published whole or not at all. --dry-run lists what would change (batches, rows per table, registry "
    "codes added, changed and removed, runs and validations removed) and changes nothing."))
def rollback(
    target: Annotated[str, typer.Argument(help="A batch_id (SELECT batch_id FROM meta_batches) or a step's run_id (SELECT step, run_id FROM meta_steps).")],
    db: DbOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would change; change nothing.")] = False,
) -> None:
    """Restore the warehouse to its state before a batch or a step (help text: the decorator's)."""
    from ketaoutcomes.pipeline import rollback_step

    with _errors():
        outcome = rollback_step(_db(db), target, dry_run=dry_run)
    sys.stdout.write(outcome.message + "\n")
    if outcome.ran:
        err.print("[green]done[/] rollback", highlight=False)


#: Exit status of ``reproduce`` when the run was rebuilt and compared, and something differs.
NOT_REPRODUCED = 3


@app.command(help=(
    "Rebuild the run a report shows from its raw batches, analyse it again with its saved study specification, "
    "and check that every stored estimate is identical, floats to the last bit.\n\n"
    "The report's run record (in its <head>) names the analysis run, the batches in force with their content "
    "hashes, the specification (JSON text and id), the code version, the warehouse, and a digest of every stored "
    "result. An edited report, a report without a record (rendered before reports carried one), a batch rolled "
    "back, missing or of other content, or a warehouse without the run is refused: one line, exit 1, nothing "
    "compared.\n\n"
    "Otherwise a scratch warehouse (a temporary folder, removed; --keep DIR keeps it) gets the raw rows of exactly "
    "those batches in their load order, registry files included; stg_* and the registries are rebuilt from them, "
    "then validated and analysed as `analyze` does. Each ad_* and results_* table of the run is compared row by row, "
    "column by column: one line per table, 'identical (N rows)' or what differs (rows, first differing column and "
    "key). Not compared: run_id and settings_id in every table, and started_at, seconds and code_version of "
    "results_runs (a code version other than the report's is said first). Exit 0 when every table is identical, "
    f"{NOT_REPRODUCED} when one differs (or the stored rows changed since the report was rendered), with a one-line "
    "summary."))
def reproduce(
    report: Annotated[Path, typer.Argument(help="The report's HTML file (reports/ketaoutcomes-<study>.html).")],
    db: Annotated[Optional[Path], typer.Option("--db", help="The warehouse to rebuild from. Default: the one the report's run record names ($KETAOUTCOMES_DB is not read: the report names its warehouse).")] = None,
    keep: Annotated[Optional[Path], typer.Option("--keep", help="Keep the scratch warehouse in this folder, as reproduce-<run_id>.duckdb (to query it). Default: a temporary folder, removed at the end.")] = None,
) -> None:
    """Rebuild a report's run and compare every stored estimate (help text: the decorator's)."""
    from ketaoutcomes.reproduce import reproduce_report

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    with _errors(), _progress() as progress:
        result = reproduce_report(report, db=None if db is None else db.resolve(), keep=keep, say=say,
                                  progress=progress)
    for line in [*(c.line() for c in result.checks), *result.problems]:
        say(line)
    if result.scratch is not None:
        err.print(f"scratch warehouse kept: {result.scratch}", markup=False, highlight=False, soft_wrap=True)
    if not result.identical:
        _error(result.summary())
        raise typer.Exit(NOT_REPRODUCED)
    say(result.summary())


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement: SELECT (or WITH ... SELECT), DESCRIBE, SHOW, SUMMARIZE, or EXPLAIN of one of them.")],
    db: DbOption = None,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Write the result to this CSV file instead of printing it (all rows; never onto the warehouse's own files).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows to print (the CSV gets all).")] = 50,
    max_width: Annotated[Optional[int], typer.Option("--max-width", min=1, help="Cut printed text to N characters per cell. Default: print every cell in full.")] = None,
) -> None:
    """Run one read-only SQL statement against the warehouse and print a table (every cell in full) or write CSV.

    Allowed: SELECT (also WITH ... SELECT, FROM ..., VALUES), DESCRIBE, SHOW, SUMMARIZE, and EXPLAIN [ANALYZE] of one of them.

    Refused: everything else (COPY, EXPORT, ATTACH, DETACH, USE, SET, PRAGMA, CREATE, INSERT, UPDATE, DELETE, DROP, ALTER, CALL, LOAD, INSTALL) and several statements in one call.

    The query sees only the warehouse's tables: no files (read_csv, read_text, glob), no other databases, no extensions. It reads the published snapshot, so it never blocks a scheduled run."""
    import duckdb
    import polars as pl

    from ketaoutcomes.query import check_output_path, run_query, write_query_csv

    dbp = _db(db)
    with _errors():
        if csv is not None:
            check_output_path(dbp, csv)  # before running anything
        try:
            frame = run_query(dbp, sql)
        except duckdb.Error as exc:  # DuckDB's whole message: its "Did you mean ..." is on a later line
            err.print(f"[bold red]error:[/] {escape(str(exc).strip())}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        if csv is not None:
            try:
                write_query_csv(dbp, frame, csv)
            except OSError as exc:
                raise CommandError(f"cannot write --csv {csv}: {exc.strerror or exc}") from None
            err.print(f"{frame.height:,} rows written to {csv}", markup=False)
            return
    if max_width is None:  # every character of every cell, however wide the table gets
        cells = dict(fmt_str_lengths=2**63 - 1, fmt_table_cell_list_len=-1)
    else:
        cells = dict(fmt_str_lengths=max_width)
    with pl.Config(tbl_rows=limit, tbl_cols=-1, tbl_width_chars=-1, **cells):
        sys.stdout.write(f"{frame.head(limit)}\n")  # data, not rich markup: "[ketamine_iv]" must survive
    if frame.height > limit:
        err.print(f"({frame.height:,} rows; {limit} shown; use --limit or --csv)")


@app.command(help=(
    "Print the built-in study file (a template to copy), or check a study file and print its settings id.\n\n"
    "A check fails (exit 1) on settings that do not validate, and on an arm, reference arm or instrument that "
    "is not in the registries (the nearest name is suggested); with --db, also on an arm without courses, an "
    "instrument without ratings, a covariate without values, or a covariate of the study's own "
    "(models.extra_covariates) that the patients file did not carry or whose values do not fit its declaration, in "
    "that warehouse."))
def study(
    path: Annotated[Optional[Path], typer.Argument(help="A study file (TOML or JSON) to check. Default: print the built-in study.")] = None,
    db: Annotated[Optional[Path], typer.Option("--db", help="Also check the study against this warehouse's registries and data (arms with courses, instrument with ratings, covariates with values, the study's own covariates as declared). Default: against the default registries only.")] = None,
) -> None:
    """Print the built-in study file, or check a study file (help text: the decorator's)."""
    from ketaoutcomes.settings import DEFAULT_STUDY_FILE

    if path is None:
        sys.stdout.write(DEFAULT_STUDY_FILE.read_text())
        return
    from ketaoutcomes.pipeline import check_study_step

    with _errors():
        settings = _study(path)
        outcome = check_study_step(settings, None if db is None else db.resolve())
    err.print(escape(outcome.message), highlight=False, soft_wrap=True)
    sys.stdout.write(f"{path}: valid; settings_id {settings.settings_id}\n{settings.model_dump_json(indent=2)}\n")


@app.command()
def dictionary(
    warehouse: Annotated[bool, typer.Option("--warehouse", help="Print the warehouse's data dictionary instead (docs/warehouse.md): its tables, the latest_* views and example queries.")] = False,
) -> None:
    """Print the import format's data dictionary (Markdown) from the contract and registries, or with
    --warehouse the warehouse's, from the contracts of its tables."""
    if warehouse:
        from ketaoutcomes.docs import warehouse_dictionary
        from ketaoutcomes.pipeline import output_contracts

        sys.stdout.write(warehouse_dictionary(output_contracts()))
        return
    from ketaoutcomes.docs import data_dictionary

    with _errors():
        sys.stdout.write(data_dictionary())


#: The cyclic garbage collector's thresholds for a command (see :func:`main`).
GC_THRESHOLDS = (700, 10, 1000)


def main() -> None:
    # A command imports large libraries (Great Expectations, statsmodels, matplotlib: millions of
    # long-lived objects), then allocates many short-lived ones. With Python's default thresholds
    # (700, 10, 10) the collector's full passes over the long-lived objects took about a second of a
    # report from scratch; young objects are still collected as by default, a full pass waits for
    # 1,000 passes over the middle generation instead of 10.
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        app()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    _exit_after_success()


def _exit_after_success() -> None:
    """Exit 0 after a command that succeeded, without the interpreter's teardown of its modules.

    The exit handlers still run (logging flushed, temporary files and folders removed), then stdout and
    stderr are flushed, as at a normal exit; what is skipped is freeing, one by one, the millions of
    objects Great Expectations, statsmodels and matplotlib left, which took about a second of a report
    from scratch and which the system does at once when the process ends. By then every file and
    warehouse connection a command opened is closed (a write session closes before it publishes).
    With a thread still running that is not a daemon, or when a stream cannot be flushed (exit 120,
    as Python's), the exit is Python's own."""
    import atexit
    import os
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(0)  # Python waits for the thread
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe (`report | head`), a closed stream
        os._exit(120)
    os._exit(0)
