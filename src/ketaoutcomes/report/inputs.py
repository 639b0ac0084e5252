"""What a report is made of besides its analysis run, read from the warehouse: the validation it
shows, the synthetic cohort's truth.json, and the quarantine counts.

Light on purpose (polars and DuckDB, no matplotlib): :mod:`ketaoutcomes.report.load` reads the
report's data through these functions, and :func:`ketaoutcomes.pipeline.render_step` reads them
to tell whether a rendered report is still current (:mod:`ketaoutcomes.report.stamp`) without
loading the report's code; the Prefect flows read the night's quarantine counts through
:func:`quarantine_summary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.warehouse import fetch, fetch_rows

__all__ = ["latest_validation_run", "quarantine_summary", "truth_file"]


def latest_validation_run(con: duckdb.DuckDBPyConnection, *, every_row: bool = True) -> str | None:
    """``run_id`` of the latest validation not rolled back, or None; with ``every_row`` (the one the
    report shows) the latest that checked every row, not a nightly check of the changed rows only."""
    scope = " AND coalesce(json_extract_string(details, '$.scope'), 'all') <> 'changed'" if every_row else ""
    rows = fetch_rows(con, "SELECT run_id FROM meta_steps WHERE step = 'validate' AND status <> 'rolled_back'"
                           f"{scope} ORDER BY started_at DESC LIMIT 1")
    return rows[0]["run_id"] if rows else None


def truth_file(con: duckdb.DuckDBPyConnection, truth_path: Path | None = None) -> Path | None:
    """The synthetic cohort's truth.json the report shows: ``truth_path``, else the one beside the
    loaded files when they all come from one folder; None when there is no such file."""
    if truth_path is None:
        files = fetch_rows(con, "SELECT DISTINCT source_file FROM meta_batches")
        parents = {Path(r["source_file"]).parent for r in files}
        truth_path = next(iter(parents)) / "truth.json" if len(parents) == 1 else None
    return Path(truth_path) if truth_path and Path(truth_path).exists() else None


def quarantine_summary(con: duckdb.DuckDBPyConnection, batch_ids: Sequence[str] | None = None) -> pl.DataFrame:
    """Rows quarantined per table, rule and column (``n_rows``): of every batch, or of ``batch_ids`` only."""
    where, params = "", None
    if batch_ids is not None:
        where, params = "WHERE list_contains(?, batch_id) ", [list(batch_ids)]
    return fetch(con, "SELECT table_name, rule, column_name, count(DISTINCT (batch_id, row_number)) AS n_rows "
                      f"FROM quarantine {where}GROUP BY ALL ORDER BY ALL", params)
