"""Report sections of the adjusted and sensitivity analyses (shaped from result frames).

* weighted (or matched) Kaplan-Meier curves per route vs the reference arm, shown only
  for pairs whose diagnostics passed, and weighted medians;
* the discrete-time (interval-censored) sensitivity analysis next to the visit-date Cox model;
* relapse done properly: maintenance as a time-varying exposure, cumulative incidence of
  relapse with stopping as a competing event, Gray's tests;
* the effect-modifier model (exploratory).

Each function takes the :class:`~ketaoutcomes.report.render.ReportData` ``results``
mapping (warehouse table name -> frame) and returns plain tables, figures and reasons
for the template; an absent or empty frame gives a reason, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from ketaoutcomes.report import figures
from ketaoutcomes.report.render import (
    _ENDPOINT_NAMES,
    _TERM,
    DASH,
    EN,
    ENDPOINT_ORDER,
    Arms,
    Fmt,
    Row,
    Table,
    _has,
    _ok,
    fmt_days_ci,
    fmt_hr_ci,
    fmt_p,
)

__all__ = ["discrete_section", "modifiers_section", "preference_section", "relapse_section", "weighted_km_section"]


def _frame(results: Mapping[str, pl.DataFrame] | None, name: str) -> pl.DataFrame:
    return (results or {}).get(name, pl.DataFrame())


def _pct_ci(x: Any, lo: Any, hi: Any) -> str:
    if not _ok(x):
        return DASH
    ci = f" ({100 * lo:.1f}{EN}{100 * hi:.1f})" if _ok(lo) and _ok(hi) else ""
    return f"{100 * x:.1f}%{ci}"


def _curve(k: pl.DataFrame, label: str, style: tuple[str, str], value: str = "survival", cumulative: bool = True
           ) -> figures.KMCurve:
    k = k.sort("time")
    n = k.height
    t = k["time"].cast(pl.Float64).to_numpy()

    def arr(c: str) -> np.ndarray:
        return k[c].cast(pl.Float64).fill_null(float("nan")).to_numpy() if c in k.columns else np.full(n, np.nan)

    v, lo, hi = arr(value), arr("lower"), arr("upper")
    cens = t[arr("n_censor") > 0] if "n_censor" in k.columns else np.array([])
    if cumulative:  # survival -> cumulative proportion with the event
        v, lo, hi = 1 - v, 1 - hi, 1 - lo
    return figures.KMCurve(label=label, color=style[0], linestyle=style[1], time=t, cum=v, lower=lo, upper=hi,
                           censor_times=cens)


# --------------------------------------------------------------------------- weighted KM
def weighted_km_section(results: Mapping[str, pl.DataFrame] | None, arms: Arms, fmt: Fmt) -> dict[str, Any]:
    """Weighted KM curves of time to response per route (passing pairs only) and weighted medians."""
    km = _frame(results, "results_km_weighted")
    med = _frame(results, "results_km_weighted_median")
    out: dict[str, Any] = {"figures": [], "withheld": [], "medians": None,
                           "reason": "not available: no weighted Kaplan-Meier curves were computed"}
    if not _has(km, "paramcd", "target", "group", "time", "survival", "diagnostics"):
        return out
    out["reason"] = ""
    sub = km.filter(pl.col("paramcd") == "TTRESP")
    ticks = figures.time_ticks(float(sub["time"].max() or 0.0)) if sub.height else [0.0]
    for target in arms.sort(sub["target"].unique().to_list()):
        pair = sub.filter(pl.col("target") == target)
        if pair["diagnostics"][0] != "pass":
            out["withheld"].append(f"{arms.label(target)}: withheld, fails diagnostics "
                                   f"({pair['gate_reasons'][0] or 'unknown reason'})")
            continue
        curves = [_curve(pair.filter(pl.col("group") == g), arms.label(g), arms.style(g))
                  for g in arms.sort(pair["group"].unique().to_list())]
        out["figures"].append({"target": arms.label(target), "img": figures.km_figure(
            curves, xlabel="Days since first dose", ylabel="Weighted cumulative proportion with response",
            ticks=ticks, band_label=fmt.ci_label)})
    if _has(med, "paramcd", "target", "group", "median", "diagnostics"):
        rows = []
        for code in ENDPOINT_ORDER:
            m = med.filter(pl.col("paramcd") == code)
            for target in arms.sort(m["target"].unique().to_list()):
                pair = {r["group"]: r for r in m.filter(pl.col("target") == target).iter_rows(named=True)}
                r_t, r_c = pair.get(target), pair.get(arms.reference) if arms.reference else None
                ok = r_t is not None and r_t["diagnostics"] == "pass"

                def cell(r: Mapping | None) -> str:
                    if r is None:
                        return DASH
                    return fmt_days_ci(r["median"], r.get("median_lower"), r.get("median_upper")) if ok else "withheld"

                rows.append(Row([_ENDPOINT_NAMES.get(code, code), arms.label(target), cell(r_t), cell(r_c),
                                 "passed" if ok else f"FAILED: {(r_t or {}).get('gate_reasons') or 'unknown reason'}"],
                                "" if ok else "bad"))
        out["medians"] = Table(["Endpoint", "Route", f"Weighted median days, route ({fmt.ci_label})",
                                f"Weighted median days, {arms.label(arms.reference) if arms.reference else 'reference'}",
                                "Diagnostics"], rows, align="llrrl", wide=True)
    return out


# --------------------------------------------------------------------------- preference scores
def preference_section(results: Mapping[str, pl.DataFrame] | None, arms: Arms, prov: Mapping) -> str | None:
    """Preference-score distributions of time to response's pairs (one panel per route), or None."""
    p = _frame(results, "results_preference")
    if not _has(p, "paramcd", "target", "arm", "lower", "upper", "n"):
        return None
    p = p.filter(pl.col("paramcd") == "TTRESP")
    if p.is_empty():
        return None
    edges = np.array(sorted(set(p["lower"].to_list()) | set(p["upper"].to_list())), dtype=float)
    panels = []
    for target in arms.sort(p["target"].unique().to_list()):
        pair = p.filter(pl.col("target") == target)
        curves = [(arms.label(a), arms.style(a)[0],
                   pair.filter(pl.col("arm") == a).sort("lower")["n"].cast(pl.Float64).to_numpy())
                  for a in arms.sort(pair["arm"].unique().to_list())]
        panels.append((f"{arms.label(target)} vs {arms.label(arms.reference) if arms.reference else 'reference'}",
                       curves))
    settings = prov.get("settings") if isinstance(prov.get("settings"), Mapping) else {}
    bounds = tuple(settings.get("equipoise_bounds") or (0.3, 0.7))
    return figures.preference_figure(panels, edges=edges, bounds=(float(bounds[0]), float(bounds[1])))


# --------------------------------------------------------------------------- discrete time
def discrete_section(results: Mapping[str, pl.DataFrame] | None, cox: pl.DataFrame | None, arms: Arms,
                     fmt: Fmt) -> dict[str, Any]:
    """Adjusted HR on visit dates next to the interval-censored (discrete-time) HR, per route."""
    d = _frame(results, "results_discrete")
    if not _has(d, "paramcd", "term", "hr"):
        return {"table": None, "reason": "not available: the discrete-time sensitivity analysis was not fitted",
                "band_days": ""}
    adj: dict[tuple[str, str], Mapping] = {}
    if _has(cox, "paramcd", "model", "term", "hr"):
        for r in cox.filter(pl.col("model") == "adjusted").iter_rows(named=True):
            adj[(r["paramcd"], r["term"])] = r
    rows = []
    for code in ENDPOINT_ORDER:
        sub = d.filter(pl.col("paramcd") == code)
        for r in sub.iter_rows(named=True):
            m = _TERM.match(r["term"] or "")
            if not (m and m["var"] == "ARM"):
                continue
            a = adj.get((code, r["term"]))
            ratio = DASH
            if a and _ok(a.get("hr")) and _ok(r.get("hr")):
                ratio = f"{a['hr'] / r['hr']:.2f}"
            rows.append(Row([_ENDPOINT_NAMES.get(code, code), arms.label(m["level"]),
                             fmt_hr_ci(a.get("hr"), a.get("hr_lower"), a.get("hr_upper")) if a else DASH,
                             fmt_hr_ci(r["hr"], r.get("hr_lower"), r.get("hr_upper")), ratio]))
    if not rows:
        return {"table": None, "reason": "not estimable: no arm terms in the discrete-time model", "band_days": ""}
    band = d["band_days"].drop_nulls() if "band_days" in d.columns else pl.Series([], dtype=pl.Int64)
    return {"table": Table(["Endpoint", "Route vs reference", f"Adjusted Cox, visit dates ({fmt.ci_label})",
                            f"Discrete-time, visit intervals ({fmt.ci_label})", "Ratio"], rows, align="llrrr"),
            "reason": "", "band_days": str(band[0]) if band.len() else "?"}


# --------------------------------------------------------------------------- relapse
_HORIZONS = (28, 56, 84, 182)


def relapse_section(results: Mapping[str, pl.DataFrame] | None, arms: Arms, fmt: Fmt) -> dict[str, Any]:
    """Maintenance (time-varying) HR, cumulative incidence of relapse with a competing event, Gray's tests."""
    out: dict[str, Any] = {"maintenance": None, "maintenance_reason": "", "cif_img": None, "cif": None,
                           "cif_reason": "", "gray": None, "states": None}
    m = _frame(results, "results_relapse_maintenance")
    if _has(m, "term", "hr"):
        rows = []
        for r in m.iter_rows(named=True):
            t = _TERM.match(r["term"] or "")
            label = ("On maintenance (time-varying)" if r["term"] == "MAINT"
                     else f"{arms.label(t['level'])} vs {arms.label(arms.reference) if arms.reference else 'reference'}"
                     if t and t["var"] == "ARM" else None)
            if label is None:
                continue
            rows.append(Row([label, fmt_hr_ci(r["hr"], r.get("hr_lower"), r.get("hr_upper")), fmt_p(r.get("p_value"))],
                            "ref" if r["term"] == "MAINT" else ""))
        first = m.row(0, named=True)
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

    cif = _frame(results, "results_relapse_cif")
    at = _frame(results, "results_relapse_cif_at")
    if _has(cif, "group", "cause", "time", "cif"):
        rel = cif.filter(pl.col("cause") == "relapse")
        curves = [_curve(rel.filter(pl.col("group") == g).rename({"cif": "value"}), arms.label(g), arms.style(g),
                         value="value", cumulative=False)
                  for g in arms.sort(rel["group"].unique().to_list())]
        ticks = figures.time_ticks(float(rel["time"].max() or 0.0))
        out["cif_img"] = figures.km_figure(curves, xlabel="Days since response",
                                           ylabel="Cumulative incidence of relapse", ticks=ticks,
                                           band_label=fmt.ci_label)
    else:
        out["cif_reason"] = "not estimable: no responders"
    if _has(at, "group", "cause", "time", "cif"):
        rows = []
        horizons = [h for h in _HORIZONS if h in set(at["time"].to_list())] or sorted(set(at["time"].to_list()))
        for g in arms.sort(at["group"].unique().to_list()):
            cells = []
            for h in horizons:
                x = {r["cause"]: r for r in at.filter((pl.col("group") == g) & (pl.col("time") == h)).iter_rows(named=True)}
                rel_r, stop_r = x.get("relapse"), next((v for k, v in x.items() if k.startswith("stopped")), None)
                cells.append(_pct_ci(rel_r["cif"], rel_r.get("lower"), rel_r.get("upper")) if rel_r else DASH)
                cells.append(_pct_ci(stop_r["cif"], None, None) if stop_r else DASH)
            rows.append(Row([arms.label(g), *cells], "ref" if g == arms.reference else ""))
        cols = ["Arm"]
        for h in horizons:
            cols += [f"Relapse by day {h:g} ({fmt.ci_label})", f"Stopped by day {h:g}"]
        out["cif"] = Table(cols, rows, wide=True)
    g = _frame(results, "results_relapse_gray")
    if _has(g, "comparison", "cause", "p_value"):
        rows = [Row([r["comparison"] if r["comparison"] == "all arms" else
                     " vs ".join(arms.label(x) for x in r["comparison"].split(" vs ")),
                     r["cause"], DASH if not _ok(r.get("chi2")) else f"{r['chi2']:.2f}",
                     DASH if r.get("df") is None else str(r["df"]), fmt_p(r.get("p_value")),
                     str(r.get("error") or "")], "bad" if r.get("error") else "")
                for r in g.iter_rows(named=True)]
        out["gray"] = Table(["Comparison", "Cause", "Chi-square", "df", "p", "Note"], rows, align="llrrrl")
    st = _frame(results, "results_relapse_states")
    if _has(st, "ARM", "state", "len"):
        states = ["relapse", *sorted(s for s in st["state"].unique().to_list() if s not in ("relapse", "censored")),
                  "censored"]
        rows = []
        for a in arms.sort(st["ARM"].unique().to_list()):
            c = dict(st.filter(pl.col("ARM") == a).select("state", "len").iter_rows())
            rows.append(Row([arms.label(a), *(fmt.count(c.get(s, 0)) for s in states)]))
        out["states"] = Table(["Arm", *states], rows)
    return out


# --------------------------------------------------------------------------- effect modifiers
_MODIFIER_LABELS = {"SEX": "Sex", "CONBENZO": "Concomitant benzodiazepine", "AGE": "Age (years)",
                    "CONSSRI": "Concomitant SSRI"}
_WITHIN_LABELS = {"DOSEREL/0.25": "Dose, per +25% of the route's median induction dose",
                  "CONSSRI": "Concomitant SSRI (yes vs no)", "CONBENZO": "Concomitant benzodiazepine (yes vs no)",
                  "AGE/10": "Age, per 10 years", "SEX[M]": "Sex: male vs female",
                  "BASE": "Baseline score, per point", "PRIORFAIL": "Prior failed trials, per trial"}


def modifiers_section(results: Mapping[str, pl.DataFrame] | None, arms: Arms, fmt: Fmt) -> dict[str, Any]:
    """Interaction tests, subgroup HRs per route, and the within-ketamine model."""
    inter = _frame(results, "results_modifiers_interactions")
    sub = _frame(results, "results_modifiers_subgroups")
    within = _frame(results, "results_modifiers_ketamine")
    out: dict[str, Any] = {"interactions": None, "subgroups": None, "within": None,
                           "reason": "not available: the effect-modifier model was not fitted"}
    if _has(inter, "modifier", "p_value"):
        out["reason"] = ""
        out["interactions"] = Table(
            ["Modifier", "LR chi-square", "df", "p (unadjusted)", "Courses", "Note"],
            [Row([_MODIFIER_LABELS.get(r["modifier"], str(r["modifier"])), DASH if not _ok(r.get("lr_chi2")) else f"{r['lr_chi2']:.2f}",
                  DASH if r.get("df") is None else str(r["df"]), fmt_p(r.get("p_value")), fmt.count(r.get("n")),
                  str(r.get("note") or "")]) for r in inter.iter_rows(named=True)], align="lrrrrl")
    if _has(sub, "modifier", "level", "arm", "hr"):
        rows = []
        for r in sub.iter_rows(named=True):
            rows.append(Row([_MODIFIER_LABELS.get(r["modifier"], str(r["modifier"])), str(r["level"]), arms.label(r["arm"]),
                             fmt_hr_ci(r["hr"], r.get("hr_lower"), r.get("hr_upper")),
                             fmt.count(r.get("n")), fmt.count(r.get("n_events"))]))
        out["subgroups"] = Table(["Modifier", "Level", "Route vs reference", f"HR of response ({fmt.ci_label})",
                                  "Courses", "Responses"], rows, align="lllrrr", wide=True)
    if _has(within, "term", "hr"):
        out["within"] = Table(["Term", f"HR of response ({fmt.ci_label})", "p (unadjusted)"],
                              [Row([_WITHIN_LABELS.get(r["term"], str(r["term"])), fmt_hr_ci(r["hr"], r.get("hr_lower"), r.get("hr_upper")),
                                    fmt_p(r.get("p_value"))]) for r in within.iter_rows(named=True)], align="lrr")
    return out
