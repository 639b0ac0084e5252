"""One section per endpoint: follow-up, Kaplan-Meier curves and numbers at risk, medians,
log-rank test, and the adjusted and naive Cox models with their forest plot and fit.

Endpoints are listed in the order of :data:`ketaoutcomes.endpoints.ENDPOINTS`, then any other
code found in the results; names and wording come from :func:`ketaoutcomes.endpoints.endpoint`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ketaoutcomes.endpoints import ENDPOINTS, Endpoint, endpoint
from ketaoutcomes.notes import Note
from ketaoutcomes.report import figures
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import (
    DASH,
    EN,
    Fmt,
    Row,
    Table,
    col,
    fmt_days_ci,
    fmt_hr_ci,
    fmt_int,
    fmt_num,
    fmt_p,
    has,
    median_iqr,
    ok,
    p_stmt,
)
from ketaoutcomes.report.sections.common import arm_reason, km_curve, notes_for, numbers_at_risk
from ketaoutcomes.report.sections.weighting import weighted_estimates

__all__ = ["EndpointSection", "endpoint_codes", "endpoint_section", "parse_groups"]


@dataclass
class EndpointSection:
    """What the template shows of one endpoint (empty parts are not shown, or say why)."""

    paramcd: str
    anchor: str
    title: str
    param: str
    info: Endpoint
    empty_reason: str = ""
    followup: Table | None = None
    km_img: str = ""
    km_caption: str = ""
    at_risk: Table | None = None
    cum_at: Table | None = None
    medians: Table | None = None
    logrank_text: str = ""
    logrank: Table | None = None
    cox: Table | None = None
    cox_reason: str = ""
    cox_interpretation: str = ""
    cox_fit: Table | None = None
    forest_img: str = ""
    model_notes: list[str] = field(default_factory=list)


def endpoint_codes(*frames: tuple[pl.DataFrame, str]) -> list[str]:
    """The registry's endpoints, then any other code in the (frame, column) pairs, sorted."""
    extra: set[str] = set()
    for df, name in frames:
        if has(df, name):
            extra |= set(df[name].drop_nulls().to_list())
    return [*ENDPOINTS, *sorted(extra - set(ENDPOINTS))]


def _np(s: pl.Series | None, n: int) -> np.ndarray:
    if s is None:
        return np.full(n, np.nan)
    return s.cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy().astype(float)


def _followup_table(adtte: pl.DataFrame, arms: Arms, fmt: Fmt, info: Endpoint) -> Table | None:
    if not has(adtte, "ARM", "CNSR"):
        return None
    arm_list = arms.sort(adtte["ARM"].drop_nulls().to_list())
    groups = [(arms.label(a), adtte.filter(pl.col("ARM") == a)) for a in arm_list] + [("All", adtte)]
    first = "Responders (courses)" if info.origin == "response" else "Courses"
    rows = [Row([first, *(fmt.count(g.height) for _, g in groups)])]
    rows.append(Row([f"Events ({info.event})", *(fmt.n_pct((g["CNSR"] == 0).sum(), g.height) for _, g in groups)]))
    desc = {}
    if "CNSDTDSC" in adtte.columns:
        for code, d in adtte.filter(pl.col("CNSR") > 0).select("CNSR", "CNSDTDSC").unique().sort("CNSR", "CNSDTDSC").iter_rows():
            desc.setdefault(code, d)
    for code in sorted(adtte.filter(pl.col("CNSR") > 0)["CNSR"].unique().to_list()):
        label = f"Censored ({code}): {desc.get(code) or 'censored'}"
        rows.append(Row([label, *(fmt.n_pct((g["CNSR"] == code).sum(), g.height) for _, g in groups)], "sub"))
    if "AVAL" in adtte.columns:
        rows.append(Row(["Follow-up, days, median [IQR]", *(median_iqr(g["AVAL"]) for _, g in groups)]))
    return Table(["", *(n for n, _ in groups)], rows)


def _km_section(ep: EndpointSection, km: pl.DataFrame, adtte: pl.DataFrame, arms: Arms, fmt: Fmt) -> None:
    arm_list = arms.sort(km["group"].drop_nulls().cast(pl.String).to_list())
    tmax = float(km["time"].max() or 0.0)
    if has(adtte, "AVAL"):
        tmax = max(tmax, float(adtte["AVAL"].max() or 0.0))
    ticks = figures.time_ticks(tmax)
    curves, at_risk_rows, cum_rows = [], [], []
    for arm in arm_list:
        k = km.filter(pl.col("group").cast(pl.String) == arm).sort("time")
        n = k.height
        t = _np(k["time"], n)
        s = _np(col(k, "survival"), n)
        lo, hi = _np(col(k, "lower"), n), _np(col(k, "upper"), n)
        # numbers at risk: the KM table's risk set at each tick; without n_risk (runs stored before it),
        # courses still followed at day t (AVAL >= t) in ADTTE
        risk = numbers_at_risk(k, ticks)
        if risk is None and has(adtte, "ARM", "AVAL"):
            a_arm = adtte.filter(pl.col("ARM") == arm)
            risk = [int((a_arm["AVAL"] >= tick).sum()) for tick in ticks] if a_arm.height else None
        risk_cells = [fmt.count(nr) for nr in risk] if risk is not None else [DASH] * len(ticks)
        cum_cells = []
        for tick, nr in zip(ticks, risk or [None] * len(ticks), strict=True):
            i = int(np.searchsorted(t, tick, side="right")) - 1
            if nr == 0 and tick > 0:
                cum_cells.append(DASH)
            elif i < 0:
                cum_cells.append("0%")
            else:
                c, cl, cu = 1 - s[i], 1 - hi[i], 1 - lo[i]
                ci = (f" ({100 * cl:.0f}{EN}{100 * cu:.0f})"
                      if math.isfinite(cl) and math.isfinite(cu) and cu - cl > 1e-12 else "")
                cum_cells.append(f"{100 * c:.0f}%{ci}" if math.isfinite(c) else DASH)
        curves.append(km_curve(k, arms.label(arm), arms.style(arm), at_risk=risk_cells if risk is not None else ()))
        at_risk_rows.append(Row([arms.label(arm), *risk_cells]))
        cum_rows.append(Row([arms.label(arm), *cum_cells]))
    day_cols = [f"day {fmt_num(x)}" for x in ticks]
    ep.km_img = figures.km_figure(
        curves, xlabel=f"Days since {ep.info.origin}", ylabel=f"Cumulative proportion with {ep.info.event}",
        ticks=ticks, band_label=fmt.ci_label,
    )
    ep.km_caption = (
        f"Kaplan-Meier estimate of the cumulative proportion with {ep.info.event} (1 \u2212 survival) per arm, "
        f"with {fmt.ci_label} bands; ticks on a curve mark censored follow-up. Time is counted in days from the "
        f"{ep.info.origin} to the rating visit at which the {ep.info.event} was seen. Under the plot, the number "
        "at risk: courses still followed (without the event) on the day of each tick."
    )
    ep.at_risk = Table(["Number at risk", *day_cols], at_risk_rows)
    ep.cum_at = Table([f"Cumulative % with {ep.info.event} ({fmt.ci_label})", *day_cols], cum_rows)


def _median_table(med: pl.DataFrame, arms: Arms, fmt: Fmt, info: Endpoint) -> Table | None:
    if not has(med, "group"):
        return None
    rows = []
    by_arm = {str(r["group"]): r for r in med.iter_rows(named=True)}
    for arm in arms.sort(by_arm):
        r = by_arm[arm]
        rows.append(Row([
            arms.label(arm), fmt.count(r.get("n")), fmt.count(r.get("events")),
            fmt_days_ci(r.get("median"), r.get("median_lower"), r.get("median_upper")),
        ]))
    return Table(["Arm", "Courses", "Events", f"Median days to {info.event} ({fmt.ci_label})"], rows)


def parse_groups(raw: Any) -> list[dict]:
    """The log-rank ``groups`` column: a JSON frame (rows, or polars' column layout)."""
    if raw is None:
        return []
    try:
        obj = json.loads(raw) if isinstance(raw, str) else raw
    except (TypeError, ValueError):
        return []
    if isinstance(obj, list) and all(isinstance(r, Mapping) for r in obj):
        return [dict(r) for r in obj]
    if isinstance(obj, Mapping):
        if "columns" in obj and isinstance(obj["columns"], list):  # polars' serialised layout
            cols = {c.get("name"): c.get("values", []) for c in obj["columns"] if isinstance(c, Mapping)}
        else:
            cols = {k: v for k, v in obj.items() if isinstance(v, list)}
        n = max((len(v) for v in cols.values()), default=0)
        return [{k: (v[i] if i < len(v) else None) for k, v in cols.items()} for i in range(n)]
    return []


def _logrank(ep: EndpointSection, lr: pl.DataFrame, arms: Arms, fmt: Fmt) -> None:
    if not has(lr, "chi2"):
        ep.logrank_text = "not estimable: the log-rank test needs at least two arms with courses"
        return
    r = lr.row(0, named=True)
    df = r.get("df")
    ep.logrank_text = (
        f"Log-rank test across all arms: \u03c7\u00b2 = {fmt_num(r.get('chi2'), 2)} on "
        f"{fmt_int(df)} df, {p_stmt(r.get('p_value'))}. "
        "It asks whether any arm differs (unadjusted, so confounded like the naive HR); it does not say which."
    )
    groups = parse_groups(r.get("groups"))
    if not groups:
        return
    by_arm = {str(g.get("group")): g for g in groups}
    rows = []
    for arm in arms.sort(by_arm):
        g = by_arm[arm]
        o, e = g.get("observed"), g.get("expected")
        rows.append(Row([
            arms.label(arm), fmt.count(g.get("n")), fmt.count(o), fmt_num(e, 1),
            f"{o / e:.2f}" if ok(o) and ok(e) and e > 0 else DASH,
        ]))
    ep.logrank = Table(["Arm", "Courses", "Observed events", "Expected events", "O/E"], rows)


_COVARIATE_LABELS = {
    "AGE": "Age (per year)",
    "BASE": "Baseline score (per point)",
    "PRIORFAIL": "Prior failed trials (per trial)",
    "WEIGHT": "Weight (per kg)",
    "SEX": "Sex",
    "DIAGNOSIS": "Diagnosis",
    "SITEID": "Site",
}


def _ref_levels(fit_row: Mapping | None) -> dict[str, str]:
    if not fit_row or not fit_row.get("reference_levels"):
        return {}
    out = {}
    for part in str(fit_row["reference_levels"]).split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _term_label(r: Mapping, arms: Arms, refs: Mapping[str, str]) -> tuple[str, str | None]:
    """(label, arm or None) of a Cox row, from its ``variable``, ``level`` and ``arm`` columns."""
    var, level, arm = r.get("variable") or r["term"], r.get("level"), r.get("arm")
    if arm is not None:
        ref = refs.get("ARM", arms.reference)
        return f"{arms.label(arm)} vs {arms.label(ref) if ref else 'reference'}", arm
    if level is not None:
        ref = refs.get(var)
        base = _COVARIATE_LABELS.get(var, var)
        return f"{base}: {level.replace('_', ' ')}" + (f" vs {ref.replace('_', ' ')}" if ref else ""), None
    return _COVARIATE_LABELS.get(var, var), None


def _cox(ep: EndpointSection, cox: pl.DataFrame, fit: pl.DataFrame, arms: Arms, fmt: Fmt,
         notes: Sequence[Note]) -> None:
    p = ep.paramcd
    reasons = [n.text for n in notes_for(notes, p) if re.search(r"hazard ratio|cox", n.text, re.IGNORECASE)]
    if not has(cox, "term", "hr"):
        ep.cox_reason = "not estimable: " + ("; ".join(reasons) if reasons else
                                             "no Cox model was fitted for this endpoint (too few events or arms)")
        return
    models = {m: cox.filter(pl.col("model") == m) for m in ("adjusted", "naive")} if "model" in cox.columns \
        else {"adjusted": cox, "naive": cox.clear()}
    fits = {r["model"]: r for r in fit.iter_rows(named=True)} if has(fit, "model") else {}
    refs = _ref_levels(fits.get("adjusted") or fits.get("naive"))
    by_term = {m: {r["term"]: r for r in f.iter_rows(named=True)} for m, f in models.items()}
    primary = weighted_estimates(cox, p)
    terms = []
    for m in ("adjusted", "naive"):
        for t in models[m]["term"].to_list():
            if t not in terms:
                terms.append(t)
    first = {t: by_term["adjusted"].get(t) or by_term["naive"][t] for t in terms}
    arm_terms = {t: _term_label(first[t], arms, refs)[1] for t in terms}
    ordered = [t for a in arms.sort(a for a in arm_terms.values() if a) for t in terms if arm_terms[t] == a]
    ordered += [t for t in terms if arm_terms[t] is None]
    rows, forest = [], []
    for t in ordered:
        label, arm = _term_label(first[t], arms, refs)
        cells = [label]
        ests = {}
        for m in ("adjusted", "naive"):
            r = by_term[m].get(t)
            if r is None:
                cells += [DASH, DASH]
                ests[m] = None
            else:
                cells += [fmt_hr_ci(r.get("hr"), r.get("hr_lower"), r.get("hr_upper")), fmt_p(r.get("p_value"))]
                ests[m] = (r.get("hr"), r.get("hr_lower"), r.get("hr_upper")) if ok(r.get("hr")) else None
        rows.append(Row(cells, "arm" if arm else ""))
        if arm:
            w = primary.get(arm)  # the primary estimate only where its diagnostics passed (withheld otherwise)
            forest.append(figures.ForestRow(arms.label(arm), arms.style(arm)[0], ests["adjusted"], ests["naive"],
                                            (w["hr"], w["hr_lower"], w["hr_upper"])
                                            if w and w.get("diagnostics") == "pass" and ok(w.get("hr")) else None))
    # arms with KM rows but no hazard ratio: say so in the table rather than leave them out silently
    ref = refs.get("ARM", arms.reference)
    for arm in arms.order:
        if arm == ref or arm in arm_terms.values():
            continue
        why = arm_reason(notes, p, arm) or "no hazard ratio in the model output"
        rows.append(Row([f"{arms.label(arm)} vs {arms.label(ref) if ref else 'reference'}",
                         f"not estimable: {why}", "", "", ""], "arm ne"))
    ep.cox = Table(["Term", f"Adjusted HR ({fmt.ci_label})", "p", f"Naive HR ({fmt.ci_label})", "p"], rows)
    ref_label = arms.label(ref) if ref else "the reference arm"
    good, bad = (f"favours the {arms.route}", "favours " + ref_label)
    above, below = (good, bad) if ep.info.favourable_above_1 else (bad, good)
    ep.cox_interpretation = (
        f"Hazard ratio versus {ref_label}: above 1 = {ep.info.hr_above_1} ({above}), "
        f"below 1 = {ep.info.hr_below_1} ({below}). "
        "Covariate rows are from the adjusted model (per unit, or versus the reference level)."
    )
    if forest:
        ep.forest_img = figures.forest_figure(
            forest, xlabel=f"Hazard ratio vs {ref_label} (log scale), {fmt.ci_label}",
            left_note=ep.info.hr_below_1, right_note=ep.info.hr_above_1,
        )
    if fits:
        fit_rows = []
        present = [m for m in ("adjusted", "naive") if m in fits] + sorted(m for m in fits if m not in ("adjusted", "naive"))

        def line(label: str, fn: Callable[[Mapping], str]) -> None:
            fit_rows.append(Row([label, *(fn(fits[m]) for m in present)]))

        line("Courses in the model", lambda f: fmt.count(f.get("n")))
        line("Events", lambda f: fmt.count(f.get("n_events")))
        line("Courses dropped (missing covariates)", lambda f: fmt.count(f.get("n_dropped")))
        line("Covariates", lambda f: str(f.get("covariates") or DASH))
        line("Strata", lambda f: str(f.get("strata") or "none"))
        line("Reference levels", lambda f: str(f.get("reference_levels") or DASH))
        line("Likelihood-ratio test",
             lambda f: f"\u03c7\u00b2 = {fmt_num(f.get('lr_chi2'), 2)}, df {fmt_int(f.get('lr_df'))}, {p_stmt(f.get('lr_p'))}"
             if ok(f.get("lr_chi2")) else DASH)
        line("Concordance", lambda f: fmt_num(f.get("concordance"), 3) if ok(f.get("concordance")) else DASH)
        line("Converged", lambda f: {True: "yes", False: "NO"}.get(f.get("converged"), DASH))
        ep.cox_fit = Table(["", *present], fit_rows, align="l" * (1 + len(present)))
        for m in present:
            f = fits[m]
            if f.get("converged") is False:
                ep.model_notes.append(f"{m} model did not converge: its estimates are not reliable.")
            if f.get("notes"):
                ep.model_notes.append(f"{m} model: {f['notes']}")


def _rows_of(df: pl.DataFrame, paramcd: str, *cols: str) -> pl.DataFrame:
    """The rows of one endpoint; ``cols[0]`` holds the code. Empty when ``df`` has no rows or lacks a column."""
    return df.filter(pl.col(cols[0]) == paramcd) if has(df, *cols) else pl.DataFrame()


def endpoint_section(paramcd: str, *, adtte: pl.DataFrame, km: pl.DataFrame, km_median: pl.DataFrame,
                     logrank: pl.DataFrame, cox: pl.DataFrame, cox_fit: pl.DataFrame, arms: Arms, fmt: Fmt,
                     notes: Sequence[Note]) -> EndpointSection:
    """The section of one endpoint from ADTTE and the results_km, _km_median, _logrank, _cox, _cox_fit tables."""
    info = endpoint(paramcd)
    adtte = _rows_of(adtte, paramcd, "PARAMCD")
    param = adtte["PARAM"].drop_nulls()[0] if has(adtte, "PARAM") and adtte["PARAM"].drop_nulls().len() else ""
    ep = EndpointSection(paramcd, f"ep-{paramcd.lower()}", info.label, param, info)
    notes = list(notes)
    ep.model_notes = [n.text for n in notes_for(notes, paramcd)]
    km = _rows_of(km, paramcd, "paramcd", "group", "time")
    if adtte.is_empty() and km.is_empty():
        why = [n.text for n in notes_for(notes, paramcd)] or [info.empty_reason]
        ep.empty_reason = "not estimable: " + "; ".join(why)
        return ep
    ep.followup = _followup_table(adtte, arms, fmt, info)
    if km.is_empty():
        ep.km_caption = "not estimable: no Kaplan-Meier estimates for this endpoint"
    else:
        _km_section(ep, km, adtte, arms, fmt)
    ep.medians = _median_table(_rows_of(km_median, paramcd, "paramcd"), arms, fmt, info)
    _logrank(ep, _rows_of(logrank, paramcd, "paramcd"), arms, fmt)
    _cox(ep, _rows_of(cox, paramcd, "paramcd"), _rows_of(cox_fit, paramcd, "paramcd"), arms, fmt, notes)
    return ep
