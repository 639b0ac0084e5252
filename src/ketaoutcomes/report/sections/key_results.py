"""Key results: the primary endpoint per arm (medians, PS-weighted, adjusted and naive HRs)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import polars as pl

from ketaoutcomes.notes import Note
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import DASH, Fmt, Row, Table, fmt_days_ci, fmt_hr_ci, fmt_p, has
from ketaoutcomes.report.sections.common import PRIMARY_ENDPOINT, arm_reason, notes_for
from ketaoutcomes.report.sections.weighting import weighted_cell, weighted_estimates

__all__ = ["key_results_table"]


def key_results_table(km_median: pl.DataFrame, cox: pl.DataFrame, arms: Arms, fmt: Fmt,
                      notes: Sequence[Note]) -> tuple[Table | None, str]:
    """One row per arm of the primary endpoint; (None, reason) when it has no results."""
    p = PRIMARY_ENDPOINT
    med = km_median.filter(pl.col("paramcd") == p) if has(km_median, "paramcd", "group") else pl.DataFrame()
    primary_cox = cox.filter(pl.col("paramcd") == p) if has(cox, "paramcd", "term", "hr") else pl.DataFrame()
    if med.is_empty() and primary_cox.is_empty():
        why = [n.text for n in notes_for(notes, p)] or ["no time-to-response results"]
        return None, "not estimable: " + "; ".join(why)
    meds = {str(r["group"]): r for r in med.iter_rows(named=True)}
    est: dict[tuple[str, str], Mapping] = {}
    for r in primary_cox.iter_rows(named=True):
        arm = r.get("arm")
        if arm is not None:
            est[(r.get("model", "adjusted"), arm)] = r
    cox_reason = ""
    if primary_cox.is_empty():
        reasons = [n.text for n in notes_for(notes, p) if re.search(r"hazard ratio|cox", n.text, re.I)]
        cox_reason = "; ".join(reasons) or "no Cox model"
    weighted = weighted_estimates(cox, p)
    rows = []
    for arm in arms.sort([*meds, *(a for _, a in est)]):
        r = meds.get(arm, {})
        wcell = "1 (reference)" if arm == arms.reference else weighted_cell(weighted.get(arm))
        if arm == arms.reference:
            adj, naive, pval = "1 (reference)", "1 (reference)", ""
        elif ("adjusted", arm) in est or ("naive", arm) in est:
            a, n = est.get(("adjusted", arm), {}), est.get(("naive", arm), {})
            adj = fmt_hr_ci(a.get("hr"), a.get("hr_lower"), a.get("hr_upper")) if a else DASH
            pval = fmt_p(a.get("p_value")) if a else DASH
            naive = fmt_hr_ci(n.get("hr"), n.get("hr_lower"), n.get("hr_upper")) if n else DASH
        else:
            why = cox_reason or arm_reason(notes, p, arm) or "no hazard ratio in the model output"
            adj, pval, naive = f"not estimable: {why}", "", ""
        rows.append(Row([
            arms.label(arm), fmt.count(r.get("n")), fmt.count(r.get("events")),
            fmt_days_ci(r.get("median"), r.get("median_lower"), r.get("median_upper")) if r else DASH,
            wcell, adj, pval, naive,
        ], "ref" if arm == arms.reference else ""))
    return Table(
        ["Arm", "Courses", "Responses", f"Median days to response ({fmt.ci_label})",
         f"PS-weighted HR ({fmt.ci_label}), diagnostics-gated", f"Regression-adjusted HR ({fmt.ci_label})",
         "p (adjusted)", f"Naive HR ({fmt.ci_label})"],
        rows,
    ), ""
