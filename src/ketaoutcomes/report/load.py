"""Read one analysis run from the warehouse into a :class:`~ketaoutcomes.report.context.ReportData`.

This is the report's SQL: every ``ad_*`` / ``results_*`` table of the run (by ``run_id``,
without ``run_id`` / ``settings_id``), the latest validation, the batches, quarantine and
data-quality checks of the loads in force, the arm labels of the registries in force
(table ``ref_arms``), the run's provenance and notes, and a synthetic cohort's truth.json; and
from them the run record the page carries (:mod:`ketaoutcomes.report.record`), which the
provenance section says in words.
Which run to report is the caller's choice (:func:`ketaoutcomes.pipeline.render_step` takes the
latest analysis of the current data with the study's settings).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.contract import TABLE_ORDER
from ketaoutcomes.endpoints import ENDPOINTS
from ketaoutcomes.ingest.load import load_registries_from_warehouse
from ketaoutcomes.notes import notes_from_json
from ketaoutcomes.registries import load_registries
from ketaoutcomes.report.context import ReportData
from ketaoutcomes.report.inputs import latest_validation_run, quarantine_summary, truth_file
from ketaoutcomes.report.record import results_digest, run_record
from ketaoutcomes.settings import StudySettings
from ketaoutcomes.warehouse import fetch, table_exists

__all__ = ["arm_labels", "load_report_data", "run_tables"]


def run_tables(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, pl.DataFrame]:
    """Every ``ad_*`` / ``results_*`` table (those with ``run_id`` and ``settings_id``): the run's rows."""
    names = fetch(
        con,
        "SELECT table_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND (starts_with(table_name, 'ad_') OR starts_with(table_name, 'results_')) GROUP BY table_name "
        "HAVING bool_or(column_name = 'run_id') AND bool_or(column_name = 'settings_id') ORDER BY table_name",
    )["table_name"].to_list()
    return {name: fetch(con, f'SELECT * EXCLUDE (run_id, settings_id) FROM "{name}" WHERE run_id = ?', [run_id])
            for name in names}


def arm_labels(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """arm -> label of the arm registry in force (``ref_arms``; the default registry if none is stored).

    Ordered as the report lists arms: the arms of the shipped registry in its order, then arms an
    export added (its arms.csv), by code. (``ref_arms`` itself is stored sorted by code.)
    """
    in_force = load_registries_from_warehouse(con).arms
    shipped = {a: i for i, a in enumerate(load_registries().arms)}
    order = sorted(in_force, key=lambda a: (shipped.get(a, len(shipped)), a))
    return {a: in_force[a].label for a in order}


def _truth(path: Path | None) -> dict | None:
    return json.loads(path.read_text()) if path is not None else None


def load_report_data(con: duckdb.DuckDBPyConnection, study: StudySettings, run_id: str, *, warehouse: Path,
                     truth_path: Path | None = None) -> ReportData:
    """The report of analysis run ``run_id`` (a row of ``results_runs``) of ``study``.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A (read-only) connection to the warehouse.
    study : StudySettings
        The run's study settings (title, instrument, reference arm, alpha).
    run_id : str
        The analysis run to report.
    warehouse : Path
        The warehouse file, named in the provenance.
    truth_path : Path, optional
        truth.json of a synthetic cohort; by default the one beside the loaded files when they
        all come from one folder.
    """
    runs = fetch(con, "SELECT * FROM results_runs WHERE run_id = ?", [run_id])
    if runs.is_empty():
        raise ValueError(f"no analysis run {run_id!r} in the warehouse (table results_runs)")
    run = runs.row(0, named=True)
    val_last = latest_validation_run(con)
    validation = fetch(con, "SELECT * EXCLUDE (run_id, fingerprint) FROM validation_results WHERE run_id = ?",
                       [val_last]) if val_last is not None else pl.DataFrame()
    tables, batches = run_tables(con, run_id), fetch(con, "SELECT * FROM meta_batches ORDER BY load_seq")
    record = run_record(run, batches, tables, study=study.name, warehouse=str(Path(warehouse).resolve()))
    return ReportData(
        title=f"ketaoutcomes: {study.name}",
        tables=tables,
        validation=validation,
        batches=batches,
        quarantine_summary=quarantine_summary(con),
        # the checks of the loads in force: batches that still contribute rows to stg_*, and each
        # table's latest batch (even one whose every row was quarantined); a warehouse ingested before
        # an optional table existed (clinical_events) has no stg_ table for it
        dq_checks=fetch(con, "SELECT * FROM dq_checks WHERE batch_id IN ("
                             + " UNION ".join(f"SELECT DISTINCT _batch_id FROM stg_{t}" for t in TABLE_ORDER
                                              if table_exists(con, f"stg_{t}"))
                             + " UNION SELECT arg_max(batch_id, load_seq) FROM meta_batches GROUP BY table_name"
                             + ") ORDER BY table_name, check_id"),
        provenance={
            "run_id": run_id, "settings_id": run["settings_id"], "settings": json.loads(run["settings_json"]),
            "code_version": run["code_version"], "data_fingerprint": run["data_fingerprint"],
            "registries_fingerprint": run["registries_fingerprint"], "batches": run["batches"],
            "analysis_started_at": str(run["started_at"]), "analysis_seconds": round(run["seconds"], 2),
            "warehouse": str(Path(warehouse).resolve()), "instrument": study.cohort.instrument,
            "reference_arm": study.cohort.reference_arm, "alpha": study.models.alpha,
            **_record_in_words(record),
        },
        notes=tuple(notes_from_json(json.loads(run["notes"]), ENDPOINTS)),
        truth=_truth(truth_file(con, truth_path)),
        arm_labels=arm_labels(con),
        ketamine_arms=frozenset(k for k, a in load_registries_from_warehouse(con).arms.items() if a.is_ketamine),
        small_cell_max=study.report.small_cell_max,
        run_record=record,
    )


def _record_in_words(record: dict) -> dict:
    """What the page's run record holds, for the provenance table: each batch in force with its file,
    content hash and rows, the digest of the stored results, and the command that checks them."""
    files = {b["batch_id"]: f"{Path(str(b['file'])).name}, sha256 {b['sha256']}, {b['rows']:,} rows loaded"
             if b["rows"] is not None else f"{b['file']}, sha256 {b['sha256']}" for b in record["batches"]}
    n_rows = sum(t["rows"] for t in record["results"].values())
    return {
        "batch files": files or "(none)",
        "results digest": f"sha256 {results_digest(record['results'])} of {len(record['results'])} tables "
                          f"({n_rows:,} rows; per table and column in the run record in this page's head)",
        "reproduce": f"python -m ketaoutcomes reproduce ketaoutcomes-{record['study']}.html: rebuilds these batches "
                     "in a scratch warehouse, re-runs the analysis with these settings and compares every result "
                     "bit for bit",
    }
