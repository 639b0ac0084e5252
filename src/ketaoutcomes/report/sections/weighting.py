"""The propensity-score weighted comparison (the primary comparison).

* diagnostics per endpoint and route (results_ps), the weighted HR beside them, shown only
  when the diagnostics passed (results_cox rows with a ``diagnostics`` verdict);
* the love plot (results_balance) and the preference-score distributions (results_preference)
  of the primary endpoint;
* weighted (or matched) Kaplan-Meier curves of the primary endpoint per route, shown only for
  pairs whose diagnostics passed, and weighted medians per endpoint (results_km_weighted,
  results_km_weighted_median);
* for the pairs withheld for imbalance, each covariate over the threshold with its SMD and its
  share of the pair, the covariate levels left out as rare, and the settings that bear on the
  gate (``gate_help``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from ketaoutcomes.endpoints import ENDPOINTS, endpoint
from ketaoutcomes.report import figures
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import (
    DASH,
    Fmt,
    Row,
    Table,
    covariate_label,
    covariate_order,
    fmt_days_ci,
    fmt_hr_ci,
    fmt_int,
    has,
    ok,
)
from ketaoutcomes.report.sections.common import PRIMARY_ENDPOINT, km_curve

__all__ = ["balance_rule", "gate_help", "preference_section", "propensity_settings", "weighted_cell",
           "weighted_estimates", "weighted_km_section", "weighting_section"]


def propensity_settings(settings: Mapping | None) -> Mapping:
    """The ``[propensity]`` group of a run's stored settings (results_runs.settings_json is nested by
    group; a run stored before the groups existed has every key at the top)."""
    if not isinstance(settings, Mapping):
        return {}
    group = settings.get("propensity")
    return group if isinstance(group, Mapping) else settings


def weighted_estimates(cox: pl.DataFrame | None, paramcd: str) -> dict[str, Mapping]:
    """arm -> the propensity-weighted Cox row (with its diagnostics verdict) for one endpoint."""
    if not has(cox, "paramcd", "term", "hr", "diagnostics"):
        return {}
    out = {}
    for r in cox.filter((pl.col("paramcd") == paramcd) & pl.col("diagnostics").is_not_null()).iter_rows(named=True):
        arm = r.get("arm")
        if arm is not None:
            out[arm] = r
    return out


def weighted_cell(r: Mapping | None) -> str:
    """A weighted HR is shown only when its diagnostics passed: otherwise it is withheld with the reasons."""
    if r is None:
        return "not estimated"
    if r.get("diagnostics") != "pass":
        return f"withheld: fails diagnostics ({r.get('gate_reasons') or 'unknown reason'})"
    return fmt_hr_ci(r.get("hr"), r.get("hr_lower"), r.get("hr_upper"))


def weighting_section(ps: pl.DataFrame | None, balance: pl.DataFrame | None, cox: pl.DataFrame | None,
                      arms: Arms, provenance: Mapping | None) -> dict[str, Any]:
    """Diagnostics per endpoint and route, and a love plot."""
    if not has(ps, "paramcd", "target", "diagnostics"):
        return {"tables": [], "love": None, "reason": "not available: no propensity-score analysis was passed to the report"}
    tables = []
    for code in ENDPOINTS:
        sub = ps.filter(pl.col("paramcd") == code)
        if sub.is_empty():
            continue
        est = weighted_estimates(cox, code)
        rows = []
        for arm in arms.sort(sub["target"].to_list()):
            r = sub.filter(pl.col("target") == arm).row(0, named=True)
            rows.append(Row([
                arms.label(arm), f"{fmt_int(r['n_target'])} / {fmt_int(r['n_comparator'])}",
                f"{r['ess_target']:.0f} / {r['ess_comparator']:.0f}" if ok(r.get("ess_target")) and ok(r.get("ess_comparator")) else DASH,
                DASH if not ok(r.get("equipoise")) else f"{100 * r['equipoise']:.0f}%",
                DASH if not ok(r.get("max_abs_smd_after")) else f"{r['max_abs_smd_after']:.3f}",
                fmt_int(r.get("n_truncated")),
                "passed" if r["diagnostics"] == "pass" else f"FAILED: {r.get('gate_reasons') or 'unknown reason'}",
                weighted_cell(est.get(arm)),
            ], "" if r["diagnostics"] == "pass" else "bad"))
        tables.append({"paramcd": code, "name": endpoint(code).short, "table": Table(
            [f"{arms.route.capitalize()} vs reference", f"Patients ({arms.route} / reference)", "Effective sample size",
             "Equipoise",
             "Max |SMD| after", "Weights truncated", "Diagnostics", "Weighted HR (95% CI)"], rows,
            align="lrrrrrll", wide=True)})
    love = None
    b = balance
    if has(b, "paramcd", "target", "covariate", "abs_smd_before", "abs_smd_after"):
        first = b.filter(pl.col("paramcd") == PRIMARY_ENDPOINT)
        if first.height:
            instrument = (provenance or {}).get("instrument")
            order = covariate_order(first["covariate"].to_list())
            ref = arms.label(arms.reference) if arms.reference else "reference"
            first = first.with_columns(pl.Series("_in_gate", _in_gate(first), dtype=pl.Boolean))
            panels = []
            for target in arms.sort(first["target"].unique().to_list()):
                by_cov = {r["covariate"]: r for r in first.filter(pl.col("target") == target).iter_rows(named=True)}
                panels.append((f"{arms.label(target)} vs {ref}", arms.style(target),
                               [(covariate_label(c, instrument=instrument)
                                 + ("" if by_cov[c]["_in_gate"] is not False else " (left out: rare)"),
                                 by_cov[c]["abs_smd_before"], by_cov[c]["abs_smd_after"])
                                for c in order if c in by_cov]))
            threshold = float(propensity_settings((provenance or {}).get("settings")).get("max_smd", 0.1))
            love = figures.love_plot(panels, threshold=threshold)
    return {"tables": tables, "love": love, "reason": ""}


def _in_gate(b: pl.DataFrame) -> list[bool | None]:
    """results_balance.in_gate per row (None for a run written before the rare-level rule)."""
    return b["in_gate"].to_list() if "in_gate" in b.columns else [None] * b.height


def balance_rule(settings: Mapping) -> str:
    """The balance rule of the gate in words (``max_smd``, and ``balance_alpha`` when set)."""
    settings = propensity_settings(settings)
    alpha_b = settings.get("balance_alpha")
    thr = settings.get("max_smd", 0.1)
    return (
        f"no covariate whose standardized mean difference (SMD) after weighting is significantly above {thr:g} "
        f"(one-sided test at a family-wise {alpha_b:g}, Bonferroni over the covariates: Hripcsak et al. 2025, "
        f"as CohortMethod's sdmAlpha)" if alpha_b else
        f"every covariate's standardized mean difference (SMD) after weighting below {thr:g}")


def gate_help(ps: pl.DataFrame | None, balance: pl.DataFrame | None, arms: Arms, settings: Mapping | None
              ) -> dict[str, Any]:
    """For the gate's readers: ``model`` (the propensity model in words), ``imbalanced`` (per endpoint
    and pair withheld for imbalance, each covariate in the gate at or above ``max_smd`` with its |SMD|
    after weighting and the share of the pair's patients it describes), ``left_out`` (the rare levels
    left out, per pair of the first endpoint) and ``settings`` (what can be set, with the values in
    force)."""
    p = propensity_settings(settings)
    thr = float(p.get("max_smd", 0.1))
    model = p.get("model", "logistic")
    out: dict[str, Any] = {
        "model": "ridge-penalised logistic regression" if model == "ridge" else "logistic regression",
        "imbalanced": [], "left_out": [], "settings": []}
    if not has(ps, "paramcd", "target", "diagnostics"):
        return out
    for code in ENDPOINTS:
        sub = ps.filter((pl.col("paramcd") == code) & (pl.col("diagnostics") == "fail"))
        for target in arms.sort(sub["target"].to_list()):
            r = sub.filter(pl.col("target") == target).row(0, named=True)
            if not has(balance, "paramcd", "target", "covariate", "smd_after") or p.get("balance_alpha"):
                continue  # with balance_alpha the gate's reason lists the covariates that failed the test
            b = balance.filter((pl.col("paramcd") == code) & (pl.col("target") == target))
            b = b.filter(pl.Series(_in_gate(b), dtype=pl.Boolean).fill_null(True)) if b.height else b
            bad = b.filter(pl.col("smd_after").abs() >= thr).sort(pl.col("smd_after").abs(), descending=True)
            if not bad.height:
                continue
            n_t, n_c = r.get("n_target"), r.get("n_comparator")
            items = []
            for row in bad.iter_rows(named=True):
                text = f"{row['covariate']} |SMD| {abs(row['smd_after']):.3f} >= {thr:g}"
                if row.get("level") is not None and ok(n_t) and ok(n_c) and n_t + n_c:
                    share = (row["mean_target_before"] * n_t + row["mean_comparator_before"] * n_c) / (n_t + n_c)
                    text += f" (a level shared by {share:.1%} of the pair's patients)"
                items.append(text)
            out["imbalanced"].append(f"{endpoint(code).label}, {arms.label(target)} vs "
                                     f"{arms.label(arms.reference) if arms.reference else 'reference'}: "
                                     + "; ".join(items))
    first = PRIMARY_ENDPOINT if ps.filter(pl.col("paramcd") == PRIMARY_ENDPOINT).height else None
    if first is not None and "levels_left_out" in ps.columns:
        left = ps.filter((pl.col("paramcd") == first) & pl.col("levels_left_out").is_not_null())
        for target in arms.sort(left["target"].to_list()):
            r = left.filter(pl.col("target") == target).row(0, named=True)
            out["left_out"].append(f"{arms.label(target)}: {r['levels_left_out']}")
    mlp = p.get("min_level_prevalence")
    alpha_b = p.get("balance_alpha")
    variance = p.get("ridge_variance", 10)
    out["settings"] = [
        f"propensity.max_smd = {thr:g}: the balance threshold itself; the gate, not a knob to make a pair pass",
        f"propensity.balance_alpha = {alpha_b:g}: in force" if alpha_b else
        "propensity.balance_alpha (not set): set it, e.g. to 0.05, to fail only covariates whose SMD is "
        "significantly above max_smd (Hripcsak et al. 2025), which keeps chance imbalance in small pairs from "
        "withholding an estimate",
        f"propensity.min_level_prevalence = {mlp:g}: covariate levels shared by fewer than {mlp:.0%} of a pair's "
        "patients (together) are left out of the propensity model and the balance gate; 0 keeps every level"
        if mlp is not None else
        "propensity.min_level_prevalence: not in this run's settings (every level was modelled and gated)",
        f"propensity.model = ridge, propensity.ridge_variance = {variance:g}: a smaller variance shrinks the model "
        "more and can leave more imbalance; model = logistic fits it unpenalised" if model == "ridge" else
        "propensity.model = logistic (unpenalised); ridge keeps the fit finite where a level separates the arms",
        f"propensity.weighting = {p.get('weighting', 'iptw')}: iptw, overlap or matching weigh the pair differently",
    ]
    return out


# --------------------------------------------------------------------------- weighted KM
def weighted_km_section(km: pl.DataFrame, med: pl.DataFrame, arms: Arms, fmt: Fmt) -> dict[str, Any]:
    """Weighted KM curves of the primary endpoint per route (passing pairs only) and weighted medians."""
    out: dict[str, Any] = {"figures": [], "withheld": [], "medians": None,
                           "reason": "not available: no weighted Kaplan-Meier curves were computed"}
    if not has(km, "paramcd", "target", "group", "time", "survival", "diagnostics"):
        return out
    out["reason"] = ""
    sub = km.filter(pl.col("paramcd") == PRIMARY_ENDPOINT)
    ticks = figures.time_ticks(float(sub["time"].max() or 0.0)) if sub.height else [0.0]
    for target in arms.sort(sub["target"].unique().to_list()):
        pair = sub.filter(pl.col("target") == target)
        if pair["diagnostics"][0] != "pass":
            out["withheld"].append(f"{arms.label(target)}: withheld, fails diagnostics "
                                   f"({pair['gate_reasons'][0] or 'unknown reason'})")
            continue
        curves = [km_curve(pair.filter(pl.col("group") == g), arms.label(g), arms.style(g))
                  for g in arms.sort(pair["group"].unique().to_list())]
        out["figures"].append({"target": arms.label(target), "img": figures.km_figure(
            curves, xlabel="Days since first dose", ylabel="Weighted cumulative proportion with response",
            ticks=ticks, band_label=fmt.ci_label)})
    if has(med, "paramcd", "target", "group", "median", "diagnostics"):
        rows = []
        for code in ENDPOINTS:
            m = med.filter(pl.col("paramcd") == code)
            for target in arms.sort(m["target"].unique().to_list()):
                pair = {r["group"]: r for r in m.filter(pl.col("target") == target).iter_rows(named=True)}
                r_t, r_c = pair.get(target), pair.get(arms.reference) if arms.reference else None
                passed = r_t is not None and r_t["diagnostics"] == "pass"

                def cell(r: Mapping | None) -> str:
                    if r is None:
                        return DASH
                    return fmt_days_ci(r["median"], r.get("median_lower"), r.get("median_upper")) if passed else "withheld"

                rows.append(Row([endpoint(code).short, arms.label(target), cell(r_t), cell(r_c),
                                 "passed" if passed else f"FAILED: {(r_t or {}).get('gate_reasons') or 'unknown reason'}"],
                                "" if passed else "bad"))
        out["medians"] = Table(["Endpoint", arms.route.capitalize(), f"Weighted median days, {arms.route} ({fmt.ci_label})",
                                f"Weighted median days, {arms.label(arms.reference) if arms.reference else 'reference'}",
                                "Diagnostics"], rows, align="llrrl", wide=True)
    return out


# --------------------------------------------------------------------------- preference scores
def preference_section(p: pl.DataFrame, arms: Arms, provenance: Mapping) -> str | None:
    """Preference-score distributions of the primary endpoint's pairs (one panel per route), or None."""
    if not has(p, "paramcd", "target", "arm", "lower", "upper", "n"):
        return None
    p = p.filter(pl.col("paramcd") == PRIMARY_ENDPOINT)
    if p.is_empty():
        return None
    edges = np.array(sorted(set(p["lower"].to_list()) | set(p["upper"].to_list())), dtype=float)
    panels = []
    for target in arms.sort(p["target"].unique().to_list()):
        pair = p.filter(pl.col("target") == target)
        curves = [(arms.label(a), arms.style(a),
                   pair.filter(pl.col("arm") == a).sort("lower")["n"].cast(pl.Float64).to_numpy())
                  for a in arms.sort(pair["arm"].unique().to_list())]
        panels.append((f"{arms.label(target)} vs {arms.label(arms.reference) if arms.reference else 'reference'}",
                       curves))
    bounds = tuple(propensity_settings(provenance.get("settings")).get("equipoise_bounds") or (0.3, 0.7))
    return figures.preference_figure(panels, edges=edges, bounds=(float(bounds[0]), float(bounds[1])))
