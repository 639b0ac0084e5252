"""What an operator reads of a run without opening the report: its key results, the validation
counts per table and the night's quarantine counts, as plain records and Markdown.

The Prefect flows publish these as artifacts (``flows/pipeline.py``); each is drawn by the report's
own section functions, so an artifact says what the report says:

* :func:`key_results`: the summary block that opens the report
  (:func:`ketaoutcomes.report.context.report_summary`), cell for cell, as records;
  :func:`report_markdown` puts it under the report's path;
* :func:`validation_markdown`: expectations checked, passed and failed per table, and the rules
  that failed (the report's data-validation section);
* :func:`quarantine_markdown`: the files a night's ingest loaded and the rows it quarantined per
  table and rule, for those batches only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from ketaoutcomes.report.context import ReportData, report_summary, report_target_trial
from ketaoutcomes.report.format import Row, Table, fmt_int
from ketaoutcomes.report.inputs import latest_validation_run, quarantine_summary
from ketaoutcomes.report.sections.data_quality import quarantine_table, validation_section
from ketaoutcomes.warehouse import fetch, read_connection

__all__ = [
    "key_results",
    "key_results_rows",
    "markdown_table",
    "quarantine_markdown",
    "report_markdown",
    "validation_by_table",
    "validation_markdown",
]


# --------------------------------------------------------------------------- key results


def key_results(data: ReportData) -> dict[str, Any]:
    """The report's summary block as JSON-able records: ``columns``, ``rows`` (``cells`` as the report
    shows them; ``withheld`` true for a route whose comparison failed its diagnostics, whose cells
    hold no estimate), ``sentences``, ``method``, and ``reason`` when there is no table."""
    s = report_summary(data)
    table: Table | None = s["table"]
    return {
        "endpoint": s["endpoint"],
        "columns": list(table.columns) if table else [],
        "rows": [{"cells": list(r.cells), "withheld": r.cls == "bad"} for r in table.rows] if table else [],
        "sentences": list(s["sentences"]),
        "method": s["method"],
        "reason": s["reason"],
        "target_trial": report_target_trial(data),
    }


def key_results_rows(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """One dict per route (column -> cell), for a table artifact."""
    return [dict(zip(record["columns"], row["cells"], strict=True)) for row in record["rows"]]


def _cell(text: Any) -> str:
    """A cell on one Markdown line: a line break in a cell (the report's) becomes a space, | is escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _table_markdown(table: Table) -> str:
    return markdown_table(table.columns, [r.cells for r in table.rows])


def report_markdown(record: Mapping[str, Any], *, report_path: Path | str, study: str, settings_id: str,
                    run_id: str, rendered: bool) -> str:
    """The report artifact: where the report is, which run it shows, and its summary table and sentences."""
    state = ("rendered by this run" if rendered else
             "up to date: nothing it is made from changed, so it was not rendered again")
    out = [f"# Report of study `{study}`", "",
           f"Report file: `{report_path}` ({state})", "",
           f"Analysis run `{run_id}`, study settings `{settings_id}`.", ""]
    trial = record.get("target_trial")
    if trial:  # the trial's answer first, as on the page
        out += [f"## {trial['title']}", "", markdown_table(trial["columns"], trial["rows"]), ""]
        out += [f"- {s}" for s in trial["sentences"]] + [""]
    out += [f"## Summary: {record['endpoint']}, each route vs the reference arm", ""]
    if record["columns"]:
        out += [markdown_table(record["columns"], [r["cells"] for r in record["rows"]]), ""]
        out += [f"- {s}" for s in record["sentences"]] + ["", record["method"]]
    else:
        out.append(f"Summary {record['reason']}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- validation


def validation_by_table(v: pl.DataFrame) -> Table:
    """Per table: rules checked, passed, failed (critical / warning) and could not run."""
    v = v.with_columns(
        (pl.col("error").is_not_null() | pl.col("success").is_null()).alias("_err"),
        pl.col("severity").fill_null("(unspecified)"))
    rows = []
    for (table,), g in sorted(v.group_by("table"), key=lambda x: str(x[0][0])):
        err = int(g["_err"].sum())
        passed = int((g["success"].fill_null(False) & ~g["_err"]).sum())
        failed = g.filter(~pl.col("_err") & ~pl.col("success").fill_null(False))
        crit = failed.filter(pl.col("severity") == "critical").height
        rows.append(Row([str(table), fmt_int(g.height), fmt_int(passed), fmt_int(crit),
                         fmt_int(failed.height - crit), fmt_int(err)], "bad" if crit or err else ""))
    return Table(["Table", "Rules checked", "Passed", "Failed: critical", "Failed: warning", "Could not run"], rows)


def validation_markdown(db: Path, *, run_id: str | None = None, headline: str, message: str) -> str:
    """The validation artifact: ``headline`` and ``message``, then the counts per table and the rules
    that failed, of validation ``run_id`` (default: the latest validation, a nightly check of the changed
    rows included) as stored in ``validation_results``."""
    con = read_connection(db)
    try:
        run_id = run_id or latest_validation_run(con, every_row=False)
        v = fetch(con, "SELECT * FROM validation_results WHERE run_id = ?", [run_id])
    finally:
        con.close()
    out = [f"# {headline}", "", message, "", f"Warehouse `{db}`, validation run `{run_id}` "
           f"(`SELECT * FROM validation_results WHERE run_id = '{run_id}'`).", ""]
    if v.is_empty():
        return "\n".join([*out, "No validation results are stored for this run."]) + "\n"
    out += ["## Expectations per table", "", _table_markdown(validation_by_table(v)), ""]
    failing = validation_section(v)["failing"]
    out += (["## Rules that failed or could not run", "", _table_markdown(failing)] if failing is not None
            else ["Every rule passed."])
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- quarantine


def _status(f: Mapping[str, Any]) -> str:
    if f.get("skipped"):
        return "already loaded (the table's latest delivery), skipped"
    return f"loaded again (the content of batch {f['redelivery_of']})" if f.get("redelivery_of") else "loaded"


def quarantine_markdown(db: Path, files: Sequence[Mapping[str, Any]], *, export_dir: str | None = None) -> str:
    """The quarantine artifact of one ingest: the files it read (``files``: the ingest step's
    ``details["files"]``), and the rows quarantined per table, rule and column in the batches it
    loaded (files skipped as already loaded add none)."""
    loaded = [f for f in files if not f.get("skipped")]
    batch_ids = [f["batch_id"] for f in loaded]
    con = read_connection(db)
    try:
        q = quarantine_summary(con, batch_ids)
    finally:
        con.close()
    n = sum(int(f.get("rows_quarantined") or 0) for f in loaded)
    out = [f"# Quarantine: {n:,} row(s) set aside from {len(loaded)} file(s) loaded by this run", "",
           f"Export `{export_dir}`, warehouse `{db}` (table `quarantine`: row, rule and reason, never the value).", ""]
    if files:
        out += ["## Files", "", markdown_table(
            ["Table", "File", "Batch", "Status", "Rows read", "Loaded", "Quarantined"],
            [[f["table"], Path(f["source_file"]).name, f["batch_id"], _status(f),
              *(("", "", "") if f.get("skipped") else
                (fmt_int(f["rows_read"]), fmt_int(f["rows_loaded"]), fmt_int(f["rows_quarantined"])))]
             for f in files]), ""]
    if not loaded:
        out.append("No new delivery: every file was already loaded, so nothing was quarantined.")
    elif q.is_empty():
        out.append("No row of these batches was quarantined.")
    else:
        table, _ = quarantine_table(q, None)
        out += ["## Quarantined rows per table and rule (the batches of this run)", "", _table_markdown(table)]
    return "\n".join(out) + "\n"
