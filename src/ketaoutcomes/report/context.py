"""What the report shows: :class:`ReportData` in, the page context (plain strings, tables and
figure data URIs) out.

:func:`build_context` is the one place that knows which warehouse table feeds which
section (:mod:`ketaoutcomes.report.sections`); the template
(``templates/report.html.j2``) only lays out what it returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ketaoutcomes.endpoints import ENDPOINTS
from ketaoutcomes.notes import Note
from ketaoutcomes.report.arms import Arms, arms_shown, reference_arm
from ketaoutcomes.report.format import DASH, Fmt, ci_label, has
from ketaoutcomes.report.sections.attrition import COMPLEMENT_MARK, attrition_section
from ketaoutcomes.report.sections.cohort import cohort_table, not_in_export
from ketaoutcomes.report.sections.data_quality import batches_table, dq_tables, quarantine_table, validation_section
from ketaoutcomes.report.sections.endpoints import endpoint_codes, endpoint_section
from ketaoutcomes.report.sections.key_results import key_results_table
from ketaoutcomes.report.sections.modifiers import modifiers_section
from ketaoutcomes.report.sections.relapse import relapse_section
from ketaoutcomes.report.sections.summary import grouped_notes, summary_section
from ketaoutcomes.report.sections.secondary import (
    discrete_section,
    ph_table,
    rmst_table,
    safety_table,
    trajectory_section,
)
from ketaoutcomes.report.sections.evalues import evalue_section
from ketaoutcomes.report.sections.adjusted import adjusted_section
from ketaoutcomes.report.sections.target_trial import target_trial_answer, target_trial_section
from ketaoutcomes.report.sections.truth import truth_table
from ketaoutcomes.report.sections.weighting import (
    balance_rule,
    gate_help,
    preference_section,
    weighted_km_section,
    weighting_section,
)

__all__ = ["ReportData", "build_context", "report_summary"]


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows; see :func:`ketaoutcomes.report.render.render_report`.

    ``tables`` holds the result tables of one analysis run by warehouse name (``ad_adsl``,
    ``ad_adtte``, ``results_km``, ``results_cox``, ... without ``run_id`` / ``settings_id``);
    :mod:`ketaoutcomes.report.load` reads every ``ad_*`` / ``results_*`` table of the run.
    A table that is absent or empty makes its section say why nothing is shown.
    """

    title: str
    #: ad_* / results_* tables of one run, by warehouse table name
    tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    #: expectation results of the latest validation (table validation_results)
    validation: pl.DataFrame | None = None
    #: files loaded (table meta_batches)
    batches: pl.DataFrame | None = None
    #: quarantined rows per table_name, rule, column_name: n_rows
    quarantine_summary: pl.DataFrame | None = None
    #: data-quality checks of the loads in force (table dq_checks): table_name, category, check_id,
    #: column_name, rule, rows_tested, rows_failing, pct_failing, threshold_pct, status, error, batch_id
    dq_checks: pl.DataFrame | None = None
    #: run id, settings, code version, ... shown as they are in the provenance table
    provenance: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[Note, ...] = ()
    #: truth.json of a synthetic cohort (see :mod:`ketaoutcomes.truth`)
    truth: dict | None = None
    #: arm -> label from the arm registries in force, in the order the report lists arms;
    #: an arm without a label is shown by its code
    arm_labels: Mapping[str, str] = field(default_factory=dict)
    #: small-cell suppression: counts from 1 to this are shown as "<n+1" (the study's report.small_cell_max)
    small_cell_max: int = 10
    #: the ketamine arms of the registries in force (registry is_ketamine): the report speaks of routes
    #: and of ketamine only when an arm it shows is one; None: not known (it does)
    ketamine_arms: frozenset[str] | None = None
    #: the run record embedded in the page for ``reproduce`` (:mod:`ketaoutcomes.report.record`); None: none
    run_record: Mapping[str, Any] | None = None

    def table(self, name: str) -> pl.DataFrame:
        """The result table ``name`` of the run (an empty frame when it is absent)."""
        df = self.tables.get(name)
        return pl.DataFrame() if df is None else df


def _prov_value(v: Any) -> dict[str, Any]:
    if isinstance(v, Mapping):
        return {"children": [{"key": str(k), **_prov_value(x)} for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        if all(not isinstance(x, (Mapping, list, tuple)) for x in v):
            return {"value": ", ".join(str(x) for x in v) if v else "(none)"}
        return {"pre": json.dumps(v, indent=1, default=str)}
    if isinstance(v, float):
        return {"value": f"{v:g}"}
    if v is None:
        return {"value": DASH}
    return {"value": str(v)}


def _adjustment_text(cox_fit: pl.DataFrame, instrument: str) -> str:
    """The adjusted model's covariates and strata in words (first endpoint that has one)."""
    words = {"AGE": "age", "SEX": "sex", "BASE": f"baseline {instrument}", "PRIORFAIL": "prior failed trials",
             "DIAGNOSIS": "diagnosis", "WEIGHT": "weight", "SITEID": "site"}
    if has(cox_fit, "model", "covariates"):
        adj = cox_fit.filter(pl.col("model") == "adjusted")
        if adj.height:
            if "paramcd" in adj.columns:
                rank = {p: i for i, p in enumerate(ENDPOINTS)}
                adj = adj.with_columns(pl.col("paramcd").replace_strict(rank, default=len(rank)).alias("_o")).sort("_o", "paramcd")
            r = adj.row(0, named=True)
            covs = [c.strip() for c in str(r.get("covariates") or "").split(",") if c.strip() and c.strip() != "ARM"]
            text = ", ".join(words.get(c, c) for c in covs) if covs else "no covariates"
            if r.get("strata"):
                text += f"; stratified by {', '.join(words.get(s.strip(), s.strip()) for s in str(r['strata']).split(','))}"
            return text
    return "the covariates listed with each model"


def _basics(data: ReportData, suppress_small_cells: bool) -> tuple[dict[str, Any], Fmt, Arms]:
    """The provenance, number formats and arms (order, labels, reference) every section is drawn with."""
    prov = dict(data.provenance or {})
    fmt = Fmt(suppress=suppress_small_cells, ci_label=ci_label(prov.get("alpha", 0.05)),
              small_cell_max=data.small_cell_max)
    t = data.table
    arms = arms_shown(reference_arm(prov, t("results_cox_fit")), data.arm_labels, adsl=t("ad_adsl"),
                      adtte=t("ad_adtte"), km=t("results_km"), km_median=t("results_km_median"),
                      ketamine_arms=data.ketamine_arms)
    return prov, fmt, arms


def report_summary(data: ReportData, *, suppress_small_cells: bool = True) -> dict[str, Any]:
    """The summary block that opens the report (:func:`~ketaoutcomes.report.sections.summary.summary_section`
    of the run's tables): the page shows it, and the Prefect flows publish it
    (:func:`ketaoutcomes.report.digest.key_results`), so the two cannot disagree."""
    prov, fmt, arms = _basics(data, suppress_small_cells)
    t = data.table
    return summary_section(t("results_contrasts"), t("results_cox"), t("results_ps"), arms, fmt, prov)


def report_target_trial(data: ReportData, *, suppress_small_cells: bool = True) -> dict[str, Any] | None:
    """The target trial's answer and results table (None without one), as the page's section shows
    them: the Prefect flows publish it beside the summary."""
    prov, fmt, _ = _basics(data, suppress_small_cells)
    settings = prov.get("settings") if isinstance(prov.get("settings"), Mapping) else {}
    return target_trial_answer(data.table, settings, fmt)


def build_context(data: ReportData, *, suppress_small_cells: bool = True) -> dict[str, Any]:
    """Everything the template shows, as plain strings, tables and data URIs."""
    prov, fmt, arms = _basics(data, suppress_small_cells)
    settings = prov.get("settings") if isinstance(prov.get("settings"), Mapping) else {}
    t = data.table
    adsl, adtte, km, km_median = t("ad_adsl"), t("ad_adtte"), t("results_km"), t("results_km_median")
    cox, cox_fit = t("results_cox"), t("results_cox_fit")
    instrument = str(prov.get("instrument") or (
        adsl["PARAMINS"].drop_nulls()[0] if has(adsl, "PARAMINS") and adsl["PARAMINS"].drop_nulls().len()
        else "score"))
    notes = list(data.notes)
    cohort, cohort_reason = cohort_table(adsl, arms, fmt, instrument, settings)
    attrition = attrition_section(t("results_attrition"), arms, fmt)
    key, key_reason = key_results_table(km_median, cox, arms, fmt, notes)
    truth, truth_json = truth_table(data.truth, cox, t("results_ps"), arms)
    codes = endpoint_codes((adtte, "PARAMCD"), (km, "paramcd"), (cox, "paramcd"), (km_median, "paramcd"))
    outcomes = settings.get("outcomes") if isinstance(settings, Mapping) else None
    if isinstance(outcomes, Mapping) and outcomes.get("endpoints"):  # the study's endpoints, not every one declared
        codes = [c for c in codes if c in outcomes["endpoints"] or c not in ENDPOINTS]
    endpoints = [endpoint_section(p, adtte=adtte, km=km, km_median=km_median, logrank=t("results_logrank"), cox=cox,
                                  cox_fit=cox_fit, arms=arms, fmt=fmt, notes=notes) for p in codes]
    batches, batches_reason = batches_table(data.batches)
    quarantine, quarantine_reason = quarantine_table(data.quarantine_summary, data.batches)
    dq_summary, dq_failing, dq_reason = dq_tables(data.dq_checks)
    weighting = weighting_section(t("results_ps"), t("results_balance"), cox, arms, prov)
    secondary = {
        "ph": ph_table(t("results_ph")),
        "rmst": rmst_table(t("results_rmst"), arms),
        "safety": safety_table(t("results_safety"), arms, fmt),
        "trajectory": trajectory_section(t("results_trajectory"), arms, prov),
    }
    weighting["rule"] = balance_rule(settings)
    weighting["help"] = gate_help(t("results_ps"), t("results_balance"), arms, settings)
    weighting["km"] = weighted_km_section(t("results_km_weighted"), t("results_km_weighted_median"), arms, fmt)
    weighting["preference"] = preference_section(t("results_preference"), arms, prov)
    weighting["evalues"] = evalue_section(t("results_evalues"), arms, fmt)
    weighting["adjusted"] = adjusted_section(t("results_ate"), t("results_contrasts"), arms, fmt)
    secondary["discrete"] = discrete_section(t("results_discrete"), cox, arms, fmt)
    relapse = relapse_section(t("results_relapse_maintenance"), t("results_relapse_cif"), t("results_relapse_cif_at"),
                              t("results_relapse_gray"), t("results_relapse_states"), arms, fmt)
    modifiers = modifiers_section(t("results_modifiers_interactions"), t("results_modifiers_subgroups"),
                                  t("results_modifiers_ketamine"), arms, fmt)
    summary = report_summary(data, suppress_small_cells=suppress_small_cells)
    target_trial = target_trial_section(t, settings, prov, fmt, data.truth)
    note_lines, n_withheld = grouped_notes(notes, t("results_ps"), arms)
    provenance = [{"key": str(k), **_prov_value(v)} for k, v in prov.items()]
    return {
        "title": data.title,
        "ref_label": arms.label(arms.reference) if arms.reference else "the reference arm",
        # the study's words: "route" and ketamine only where an arm shown is a ketamine arm
        "ketamine": arms.ketamine, "route": arms.route, "Route": arms.route.capitalize(),
        # the study's design (a study run before the setting existed: observational, its default)
        "randomised": (settings.get("design") if isinstance(settings, Mapping) else None) == "randomised",
        "compared": arms.compared_text(),
        "instrument": instrument,
        "adjustment": _adjustment_text(cox_fit, instrument),
        "ci_label": fmt.ci_label,
        "notes": notes,
        "note_lines": note_lines, "n_withheld": n_withheld,
        "summary": summary,
        "target_trial": target_trial,
        "key": key, "key_reason": key_reason,
        "truth": truth, "truth_json": truth_json,
        "cohort": cohort, "cohort_reason": cohort_reason, "cohort_absent": not_in_export(adsl) if has(adsl, "ARM") else [],
        "attrition": attrition,
        "endpoints": endpoints,
        "validation": validation_section(data.validation),
        "batches": batches, "batches_reason": batches_reason,
        "quarantine": quarantine, "quarantine_reason": quarantine_reason,
        "dq_summary": dq_summary, "dq_failing": dq_failing, "dq_reason": dq_reason,
        "weighting": weighting,
        "secondary": secondary,
        "relapse": relapse,
        "modifiers": modifiers,
        "provenance": provenance,
        "suppress": suppress_small_cells,
        "small_cell_max": data.small_cell_max,
        "suppressed_label": fmt.suppressed,
        "complement_mark": COMPLEMENT_MARK,
        "generated_by": str(prov.get("report_generated_by") or prov.get("code_version") or ""),
        "run_id": str(prov.get("run_id") or ""),
    }
