"""Relapse among responders, done properly: maintenance as a time-varying exposure
(results_relapse_maintenance), the cumulative incidence of relapse per arm with stopping as a
competing event (results_relapse_cif, _cif_at), Gray's tests (results_relapse_gray) and the
state each responder ended in (results_relapse_states).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ketaoutcomes.report import figures
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import DASH, Fmt, Row, Table, fmt_hr_ci, fmt_p, has, ok, pct_ci
from ketaoutcomes.report.sections.common import km_curve, numbers_at_risk

__all__ = ["relapse_section"]

_HORIZONS = (28, 56, 84, 182)


def relapse_section(maintenance: pl.DataFrame, cif: pl.DataFrame, cif_at: pl.DataFrame, gray: pl.DataFrame,
                    states: pl.DataFrame, arms: Arms, fmt: Fmt) -> dict[str, Any]:
    """Maintenance (time-varying) HR, cumulative incidence of relapse with a competing event, Gray's tests."""
    out: dict[str, Any] = {"maintenance": None, "maintenance_reason": "", "cif_img": None, "cif": None,
                           "cif_reason": "", "gray": None, "states": None}
    if has(maintenance, "term", "hr"):
        rows = []
        for r in maintenance.iter_rows(named=True):
            arm = r.get("arm")
            label = ("On maintenance (time-varying)" if r["term"] == "MAINT"
                     else f"{arms.label(arm)} vs {arms.label(arms.reference) if arms.reference else 'reference'}"
                     if arm is not None else None)
            if label is None:
                continue
            rows.append(Row([label, fmt_hr_ci(r["hr"], r.get("hr_lower"), r.get("hr_upper")), fmt_p(r.get("p_value"))],
                            "ref" if r["term"] == "MAINT" else ""))
        first = maintenance.row(0, named=True)
        out["maintenance"] = Table(["Term", f"Relapse HR ({fmt.ci_label})", "p"], rows, align="lrr")
        out["maintenance_counts"] = (
            f"{fmt.count(first.get('n_patients'))} responders, {fmt.count(first.get('n_events'))} relapses; "
            f"{fmt.count(first.get('relapses_on_maintenance'))} relapses in "
            f"{first.get('days_on_maintenance') or 0:,.0f} days on maintenance, "
            f"{fmt.count(first.get('relapses_off_maintenance'))} in "
            f"{first.get('days_off_maintenance') or 0:,.0f} days off; a session covers "
            f"{first.get('exposure_days')} days.")
    else:
        out["maintenance_reason"] = "not estimable: see the analysis notes (too few relapses or no maintenance)"

    if has(cif, "group", "cause", "time", "cif"):
        rel = cif.filter(pl.col("cause") == "relapse")
        ticks = figures.time_ticks(float(rel["time"].max() or 0.0))
        curves = []
        for g in arms.sort(rel["group"].unique().to_list()):
            part = rel.filter(pl.col("group") == g)
            risk = numbers_at_risk(part, ticks)  # responders without relapse or a competing event, still followed
            curves.append(km_curve(part.rename({"cif": "value"}), arms.label(g), arms.style(g), value="value",
                                   cumulative=False, at_risk=[fmt.count(n) for n in risk] if risk is not None else ()))
        out["cif_img"] = figures.km_figure(curves, xlabel="Days since response",
                                           ylabel="Cumulative incidence of relapse", ticks=ticks,
                                           band_label=fmt.ci_label)
    else:
        out["cif_reason"] = "not estimable: no responders"
    if has(cif_at, "group", "cause", "time", "cif"):
        rows = []
        horizons = [h for h in _HORIZONS if h in set(cif_at["time"].to_list())] or sorted(set(cif_at["time"].to_list()))
        for g in arms.sort(cif_at["group"].unique().to_list()):
            cells = []
            for h in horizons:
                x = {r["cause"]: r for r in cif_at.filter((pl.col("group") == g) & (pl.col("time") == h)).iter_rows(named=True)}
                rel_r, stop_r = x.get("relapse"), next((v for k, v in x.items() if k.startswith("stopped")), None)
                cells.append(pct_ci(rel_r["cif"], rel_r.get("lower"), rel_r.get("upper")) if rel_r else DASH)
                cells.append(pct_ci(stop_r["cif"], None, None) if stop_r else DASH)
            rows.append(Row([arms.label(g), *cells], "ref" if g == arms.reference else ""))
        cols = ["Arm"]
        for h in horizons:
            cols += [f"Relapse by day {h:g} ({fmt.ci_label})", f"Stopped by day {h:g}"]
        out["cif"] = Table(cols, rows, wide=True)
    if has(gray, "comparison", "cause", "p_value"):
        rows = [Row([r["comparison"] if r["comparison"] == "all arms" else
                     " vs ".join(arms.label(x) for x in r["comparison"].split(" vs ")),
                     r["cause"], DASH if not ok(r.get("chi2")) else f"{r['chi2']:.2f}",
                     DASH if r.get("df") is None else str(r["df"]), fmt_p(r.get("p_value")),
                     str(r.get("error") or "")], "bad" if r.get("error") else "")
                for r in gray.iter_rows(named=True)]
        out["gray"] = Table(["Comparison", "Cause", "Chi-square", "df", "p", "Note"], rows, align="llrrrl")
    if has(states, "ARM", "state", "len"):
        names = ["relapse", *sorted(s for s in states["state"].unique().to_list() if s not in ("relapse", "censored")),
                 "censored"]
        rows = []
        for a in arms.sort(states["ARM"].unique().to_list()):
            c = dict(states.filter(pl.col("ARM") == a).select("state", "len").iter_rows())
            rows.append(Row([arms.label(a), *(fmt.count(c.get(s, 0)) for s in names)]))
        out["states"] = Table(["Arm", *names], rows)
    return out
