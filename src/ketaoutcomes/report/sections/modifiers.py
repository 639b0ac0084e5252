"""Effect modifiers of the speed of response (secondary, exploratory; documented in
:mod:`ketaoutcomes.models.modifiers`).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import DASH, Fmt, Row, Table, fmt_hr_ci, fmt_p, has, ok

__all__ = ["modifiers_section"]

_MODIFIER_LABELS = {"SEX": "Sex", "CONBENZO": "Concomitant benzodiazepine", "AGE": "Age (years)",
                    "CONSSRI": "Concomitant SSRI"}
_WITHIN_LABELS = {"DOSEREL/0.25": "Dose, per +25% of the route's median induction dose",
                  "CONSSRI": "Concomitant SSRI (yes vs no)", "CONBENZO": "Concomitant benzodiazepine (yes vs no)",
                  "AGE/10": "Age, per 10 years", "SEX[M]": "Sex: male vs female",
                  "BASE": "Baseline score, per point", "PRIORFAIL": "Prior failed trials, per trial"}


def modifiers_section(inter: pl.DataFrame, sub: pl.DataFrame, within: pl.DataFrame, arms: Arms,
                      fmt: Fmt) -> dict[str, Any]:
    """Interaction tests (results_modifiers_interactions), subgroup HRs per route (_subgroups),
    and the within-ketamine model (_ketamine)."""
    out: dict[str, Any] = {"interactions": None, "subgroups": None, "within": None,
                           "reason": "not available: the effect-modifier model was not fitted"}
    if has(inter, "modifier", "p_value"):
        out["reason"] = ""
        out["interactions"] = Table(
            ["Modifier", "LR chi-square", "df", "p (unadjusted)", "Courses", "Note"],
            [Row([_MODIFIER_LABELS.get(r["modifier"], str(r["modifier"])), DASH if not ok(r.get("lr_chi2")) else f"{r['lr_chi2']:.2f}",
                  DASH if r.get("df") is None else str(r["df"]), fmt_p(r.get("p_value")), fmt.count(r.get("n")),
                  str(r.get("note") or "")]) for r in inter.iter_rows(named=True)], align="lrrrrl")
    if has(sub, "modifier", "level", "arm", "hr"):
        rows = []
        for r in sub.iter_rows(named=True):
            rows.append(Row([_MODIFIER_LABELS.get(r["modifier"], str(r["modifier"])), str(r["level"]), arms.label(r["arm"]),
                             fmt_hr_ci(r["hr"], r.get("hr_lower"), r.get("hr_upper")),
                             fmt.count(r.get("n")), fmt.count(r.get("n_events"))]))
        out["subgroups"] = Table(["Modifier", "Level", "Route vs reference", f"HR of response ({fmt.ci_label})",
                                  "Courses", "Responses"], rows, align="lllrrr", wide=True)
    if has(within, "term", "hr"):
        out["within"] = Table(["Term", f"HR of response ({fmt.ci_label})", "p (unadjusted)"],
                              [Row([_WITHIN_LABELS.get(r["term"], str(r["term"])), fmt_hr_ci(r["hr"], r.get("hr_lower"), r.get("hr_upper")),
                                    fmt_p(r.get("p_value"))]) for r in within.iter_rows(named=True)], align="lrr")
    return out
