"""The E-values of the primary endpoint's estimates (table results_evalues), in the weighting section.

One row per route and estimate (the risk ratio by each contrast day, the weighted HR): the
estimate with its CI and the two E-values, or "withheld" for a pair that fails its diagnostics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import DASH, Fmt, Row, Table, fmt_hr_ci, has, ok
from ketaoutcomes.report.sections.common import PRIMARY_ENDPOINT

__all__ = ["evalue_section"]


def _e(x: Any) -> str:
    return f"{float(x):.2f}" if ok(x) else DASH


def evalue_section(ev: pl.DataFrame | None, arms: Arms, fmt: Fmt) -> dict[str, Any]:
    """``table`` (None without rows) of the primary endpoint's E-values, arms in report order."""
    out: dict[str, Any] = {"table": None}
    if not has(ev, "paramcd", "target", "estimand", "estimate", "evalue", "evalue_ci", "diagnostics"):
        return out
    rows_of: dict[str, list[Mapping]] = {}
    for r in ev.filter(pl.col("paramcd") == PRIMARY_ENDPOINT).iter_rows(named=True):
        rows_of.setdefault(r["target"], []).append(r)
    order = lambda r: (r["scale"] == "hazard_ratio", r["day"] or 0.0)  # noqa: E731 - risk ratios by day, then HR
    rows: list[Row] = []
    for arm in [a for a in arms.order if a in rows_of]:
        for r in sorted(rows_of[arm], key=order):
            what = (f"risk ratio by day {r['day']:g}" if r["scale"] == "risk_ratio" else
                    "weighted HR" + (" (as a risk ratio: common outcome)" if r.get("rare") is False else ""))
            if r["diagnostics"] != "pass":
                rows.append(Row([arms.label(arm), what, "withheld", DASH, DASH], "bad"))
            elif not ok(r["estimate"]):
                rows.append(Row([arms.label(arm), what, "not estimable", DASH, DASH]))
            else:
                rows.append(Row([arms.label(arm), what, fmt_hr_ci(r["estimate"], r["lower"], r["upper"]),
                                 _e(r["evalue"]), _e(r["evalue_ci"])]))
    if rows:
        out["table"] = Table([arms.route.capitalize(), "Estimate", f"Estimate ({fmt.ci_label})", "E-value", "E-value of the CI limit"],
                             rows, align="llrrr")
    return out
