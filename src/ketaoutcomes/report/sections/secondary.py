"""Model checks and secondary analyses: proportional-hazards tests (results_ph), the
interval-censored (discrete-time) sensitivity analysis beside the visit-date Cox model
(results_discrete), restricted mean times (results_rmst), mood trajectories
(results_trajectory) and safety per session (results_safety).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from ketaoutcomes.endpoints import ENDPOINTS, endpoint
from ketaoutcomes.report import figures
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import DASH, Fmt, Row, Table, fmt_days_ci, fmt_hr_ci, fmt_int, fmt_p, has, ok

__all__ = ["discrete_section", "ph_table", "rmst_table", "safety_table", "trajectory_section"]

_SAFETY_EVENTS = {
    "dissociation": "dissociation (recorded AE)", "nausea": "nausea", "dizziness": "dizziness", "headache": "headache",
    "hypertension": "hypertension (recorded AE)", "dissociation_cadss": "CADSS above cut-off",
    "bp_rise_40_25": "BP rise >= 40/25 mmHg", "bp_180_110": "BP >= 180/110 mmHg",
}


def ph_table(ph: pl.DataFrame) -> Table | None:
    """The arm and global test of each adjusted model, and any term with a note or error."""
    if not has(ph, "paramcd", "term", "p_value"):
        return None
    rows = []
    for r in ph.sort("paramcd").iter_rows(named=True):
        if r["term"] not in ("GLOBAL", "ARM") and not (r.get("note") or r.get("error")):
            continue
        rows.append(Row([endpoint(r["paramcd"]).short, str(r["term"]),
                         DASH if r["chi2"] is None else f"{r['chi2']:.2f}", fmt_int(r.get("df")),
                         fmt_p(r["p_value"]) if r["p_value"] is not None else DASH,
                         str(r.get("error") or r.get("note") or "")],
                        "bad" if r.get("note") or r.get("error") else ""))
    return Table(["Endpoint", "Term", "Chi-square", "df", "p", "Note"], rows, align="llrrrl", wide=True)


def rmst_table(rm: pl.DataFrame, arms: Arms) -> Table | None:
    if not has(rm, "paramcd", "group", "rmst"):
        return None
    rows = [Row([endpoint(r["paramcd"]).short, arms.label(r["group"]), f"{r['horizon']:g}",
                 fmt_days_ci(r["rmst"], r.get("lower"), r.get("upper"))],
                "ref" if r["group"] == arms.reference else "")
            for r in rm.sort("paramcd", "group").iter_rows(named=True)]
    return Table(["Endpoint", "Arm", "Horizon (days)", "Mean days without the event (95% CI)"], rows, align="llrr")


def safety_table(sf: pl.DataFrame, arms: Arms, fmt: Fmt) -> Table | None:
    if not has(sf, "arm", "event", "rate", "sessions"):
        return None
    rows = []
    for r in sf.iter_rows(named=True):
        if not r["sessions"]:
            continue
        ci = DASH if r["rate"] is None else f"{100 * r['rate']:.1f}% ({100 * r['lower']:.1f}\u2013{100 * r['upper']:.1f})"
        rows.append(Row([arms.label(r["arm"]), _SAFETY_EVENTS.get(r["event"], r["event"]), fmt.count(r["sessions"]),
                         fmt.count(r["events"]), ci, str(r.get("note") or "")]))
    return Table(["Arm", "Event", "Sessions", "Sessions with the event", "Rate per session (95% CI)", "Note"],
                 rows, align="llrrrl", wide=True)


def trajectory_section(tr: pl.DataFrame, arms: Arms, provenance: Mapping | None) -> str | None:
    """Mean mood trajectory per arm from the stored predicted means (the model's log1p time scale)."""
    if not has(tr, "arm", "day", "mean"):
        return None
    labels = {a: (arms.label(a), arms.style(a)) for a in arms.sort(tr["arm"].unique().to_list())}
    converged = bool(tr["converged"].all()) if "converged" in tr.columns else True
    alpha = float((provenance or {}).get("alpha", 0.05))
    return figures.predicted_figure(tr, labels, alpha=alpha, time_terms="log1p", converged=converged)


def discrete_section(d: pl.DataFrame, cox: pl.DataFrame | None, arms: Arms, fmt: Fmt) -> dict[str, Any]:
    """Adjusted HR on visit dates next to the interval-censored (discrete-time) HR, per route."""
    if not has(d, "paramcd", "term", "hr"):
        return {"table": None, "reason": "not available: the discrete-time sensitivity analysis was not fitted",
                "band_days": ""}
    adj: dict[tuple[str, str], Mapping] = {}
    if has(cox, "paramcd", "model", "term", "hr"):
        for r in cox.filter(pl.col("model") == "adjusted").iter_rows(named=True):
            adj[(r["paramcd"], r["term"])] = r
    rows = []
    for code in ENDPOINTS:
        sub = d.filter(pl.col("paramcd") == code)
        for r in sub.iter_rows(named=True):
            arm = r.get("arm")
            if arm is None:
                continue
            a = adj.get((code, r["term"]))
            ratio = DASH
            if a and ok(a.get("hr")) and ok(r.get("hr")):
                ratio = f"{a['hr'] / r['hr']:.2f}"
            rows.append(Row([endpoint(code).short, arms.label(arm),
                             fmt_hr_ci(a.get("hr"), a.get("hr_lower"), a.get("hr_upper")) if a else DASH,
                             fmt_hr_ci(r["hr"], r.get("hr_lower"), r.get("hr_upper")), ratio]))
    if not rows:
        return {"table": None, "reason": "not estimable: no arm terms in the discrete-time model", "band_days": ""}
    band = d["band_days"].drop_nulls() if "band_days" in d.columns else pl.Series([], dtype=pl.Int64)
    return {"table": Table(["Endpoint", f"{arms.route.capitalize()} vs reference", f"Adjusted Cox, visit dates ({fmt.ci_label})",
                            f"Discrete-time, visit intervals ({fmt.ci_label})", "Ratio"], rows, align="llrrr"),
            "reason": "", "band_days": str(band[0]) if band.len() else "?"}
