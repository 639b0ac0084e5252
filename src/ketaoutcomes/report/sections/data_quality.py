"""The data behind the results: validation results, batches loaded, quarantine, data-quality checks.

Counts here are rows of the export, so they are never suppressed.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from ketaoutcomes.report.format import DASH, Row, Table, fmt_int, has, ok

__all__ = ["batches_table", "dq_tables", "quarantine_table", "validation_section"]


def _examples(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        try:
            parsed = json.loads(v)
        except ValueError:
            return v
        v = parsed
    if isinstance(v, pl.Series):
        v = v.to_list()
    if isinstance(v, (list, tuple)):
        shown = ", ".join(str(x) for x in v[:10])
        return shown + (", \u2026" if len(v) > 10 else "")
    return str(v)


def validation_section(v: pl.DataFrame | None) -> dict[str, Any]:
    """Rules checked, passed, failed per severity, and the rules that failed or could not run."""
    if not has(v, "success"):
        return {"reason": "not available: no validation results were passed to the report",
                "summary": None, "failing": None, "n_critical_failed": 0}
    err = v["error"].is_not_null() if "error" in v.columns else pl.Series([False] * v.height)
    v = v.with_columns(err.alias("_err"))
    sev_col = "severity" if "severity" in v.columns else None
    if sev_col:
        v = v.with_columns(pl.col(sev_col).cast(pl.String).fill_null("(unspecified)"))
    sevs = sorted(v[sev_col].drop_nulls().unique().to_list(), key=lambda s: ({"critical": 0, "warning": 1}.get(s, 2), s)) \
        if sev_col else ["(all)"]
    rows = []
    n_critical_failed = 0
    for sev in sevs:
        g = v.filter(pl.col(sev_col) == sev) if sev_col else v
        passed = int((g["success"].fill_null(False) & ~g["_err"]).sum())
        errored = int((g["_err"] | g["success"].is_null()).sum())
        failed = g.height - passed - errored
        if sev == "critical":
            n_critical_failed = failed + errored
        rows.append(Row([str(sev), fmt_int(g.height), fmt_int(passed), fmt_int(failed), fmt_int(errored)],
                        "bad" if sev == "critical" and failed + errored else ""))
    summary = Table(["Severity", "Rules checked", "Passed", "Failed", "Could not run"], rows)
    bad = v.filter(~(pl.col("success").fill_null(False) & ~pl.col("_err")))
    fail_rows = []
    if bad.height:
        sort_cols = [c for c in ("severity", "table", "rule_id") if c in bad.columns]
        if sort_cols:
            bad = bad.sort(sort_cols)
        for r in bad.iter_rows(named=True):
            count, total, pct = r.get("unexpected_count"), r.get("element_count"), r.get("unexpected_percent")
            cnt = fmt_int(count) + (f" of {fmt_int(total)}" if ok(total) else "") + (f" ({pct:.2f}%)" if ok(pct) else "")
            fail_rows.append(Row([
                str(r.get("table") or ""), str(r.get("rule_id") or ""), str(r.get("rule") or ""),
                str(r.get("column") or ""), str(r.get("severity") or ""), cnt if ok(count) else DASH,
                _examples(r.get("example_row_numbers")), str(r.get("error") or ""),
            ], "bad" if r.get("severity") == "critical" else ""))
    failing = Table(["Table", "Rule id", "Rule", "Column", "Severity", "Rows failing", "Example rows", "Error"],
                    fail_rows, align="lllllrll", wide=True) if fail_rows else None
    return {"summary": summary, "failing": failing, "n_critical_failed": n_critical_failed, "reason": ""}


def _batch_notes(r: dict) -> str:
    """The batch's notes, with the blank rows it skipped and the earlier batch it delivered again."""
    notes = [str(r["notes"])] if r.get("notes") else []
    if r.get("rows_blank"):
        notes.append(f"{fmt_int(r['rows_blank'])} blank row(s) skipped")
    if r.get("redelivery_of"):
        notes.append(f"re-delivery of {r['redelivery_of']}")
    return "; ".join(notes)


def batches_table(b: pl.DataFrame | None) -> tuple[Table | None, str]:
    """One row per file loaded, with the check read = loaded + quarantined."""
    if not has(b, "table_name"):
        return None, "not available: no batch records were passed to the report"
    if "load_seq" in b.columns:
        b = b.sort("load_seq", "table_name")
    rows = []
    for r in b.iter_rows(named=True):
        read, loaded, quar = r.get("rows_read"), r.get("rows_loaded"), r.get("rows_quarantined")
        if ok(read) and ok(loaded) and ok(quar):
            check = "ok" if read == loaded + quar else f"MISMATCH ({fmt_int(read - loaded - quar)} unaccounted)"
        else:
            check = DASH
        sha = str(r.get("file_sha256") or "")
        rows.append(Row([
            fmt_int(r.get("load_seq")), str(r.get("table_name") or ""), str(r.get("source_file") or ""),
            str(r.get("file_format") or ""), sha[:12] + ("\u2026" if len(sha) > 12 else ""),
            fmt_int(read), fmt_int(loaded), fmt_int(quar), check,
            str(r.get("ignored_columns") or ""), _batch_notes(r), str(r.get("loaded_at") or ""),
        ], "bad" if check.startswith("MISMATCH") else ""))
    return Table(["#", "Table", "Source file", "Format", "SHA-256", "Rows read", "Loaded", "Quarantined",
                  "read = loaded + quarantined", "Ignored columns", "Notes", "Loaded at"], rows,
                 align="rllllrrrllll", wide=True), ""


def quarantine_table(q: pl.DataFrame | None, batches: pl.DataFrame | None) -> tuple[Table | None, str]:
    """Rows set aside at load by table, rule and column (or why there is no such table)."""
    if q is None or q.height == 0:
        if has(batches, "rows_quarantined"):
            n = int(batches["rows_quarantined"].fill_null(0).sum())
            if n == 0:
                return None, "No rows were quarantined."
            return None, f"not available: the batches quarantined {n:,} rows but no quarantine summary was passed to the report"
        return None, "not available: no quarantine summary was passed to the report"
    cols = [c for c in ("table_name", "rule", "column_name", "n_rows") if c in q.columns]
    q = q.sort([c for c in cols if c != "n_rows"]) if cols else q
    rows = [Row([fmt_int(r[c]) if c == "n_rows" else str(r[c] if r[c] is not None else "") for c in cols])
            for r in q.iter_rows(named=True)]
    names = {"table_name": "Table", "rule": "Rule", "column_name": "Column", "n_rows": "Rows"}
    return Table([names[c] for c in cols], rows, align="".join("r" if c == "n_rows" else "l" for c in cols)), ""


def dq_tables(d: pl.DataFrame | None) -> tuple[Table | None, Table | None, str]:
    """Per category and status counts, and the checks that did not pass."""
    if not has(d, "category", "status"):
        return None, None, "not available: no data-quality checks were passed to the report"
    summary_rows = []
    for (cat,), g in sorted(d.group_by("category"), key=lambda x: str(x[0][0])):
        counts = dict(g.group_by("status").len().iter_rows())
        summary_rows.append(Row([str(cat), fmt_int(g.height), fmt_int(counts.get("pass", 0)),
                                 fmt_int(counts.get("fail", 0)), fmt_int(counts.get("error", 0))],
                                "bad" if counts.get("error") or counts.get("fail") else ""))
    summary = Table(["Category", "Checks", "Passed", "Failed", "Could not run"], summary_rows, align="lrrrr")
    bad = d.filter(pl.col("status") != "pass").sort("status", "table_name", "check_id")
    rows = [Row([str(r["table_name"]), str(r["category"]), str(r["rule"]), fmt_int(r["rows_tested"]),
                 fmt_int(r["rows_failing"]),
                 DASH if r["pct_failing"] is None else f"{r['pct_failing']:.2f}%",
                 DASH if r["threshold_pct"] is None else f"{r['threshold_pct']:g}%",
                 str(r["status"]) + (f": {r['error']}" if r.get("error") else "")], "bad")
            for r in bad.iter_rows(named=True)]
    failing = Table(["Table", "Category", "Check", "Rows tested", "Rows failing", "% failing", "Threshold", "Status"],
                    rows, align="lllrrrrl", wide=True) if rows else None
    return summary, failing, ""
