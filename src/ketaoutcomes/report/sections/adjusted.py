"""The adjusted curves of the primary endpoint (table results_ate), in the weighting section.

One row per route and estimate (the difference in the share with the event by each contrast day, the
difference in restricted mean days without it): the primary estimate read off the weighted curves
(``results_contrasts``, as in the summary) beside the g-formula, IPTW and AIPTW estimates, each with
its CI; a route whose comparison fails the diagnostics gate shows "withheld" and why, never its
numbers. The caption says what each estimator rests on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from ketaoutcomes.endpoints import endpoint
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import DASH, MINUS, Fmt, Row, Table, fmt_num, has, ok
from ketaoutcomes.report.sections.common import PRIMARY_ENDPOINT

__all__ = ["ESTIMATOR_LABELS", "adjusted_section"]

#: The estimators of results_ate in the order and words of the report.
ESTIMATOR_LABELS = {"gformula": "g-formula", "iptw": "IPTW", "aiptw": "AIPTW"}


def _signed(x: float, decimals: int) -> str:
    text = f"{abs(x):.{decimals}f}"
    if float(text) == 0.0:
        return text
    return ("+" if x > 0 else MINUS) + text


def _cell(r: Mapping | None, scale: float, decimals: int, unit: str) -> str:
    """'+17 pp (12 to 23)', 'not estimable', or a dash when there is no row."""
    if r is None:
        return DASH
    if not ok(r.get("difference")):
        return "not estimable"
    text = _signed(scale * r["difference"], decimals) + unit
    if ok(r.get("lower")) and ok(r.get("upper")):
        text += f" ({_signed(scale * r['lower'], decimals)} to {_signed(scale * r['upper'], decimals)})"
    return text


def adjusted_section(ate: pl.DataFrame | None, contrasts: pl.DataFrame | None, arms: Arms,
                     fmt: Fmt) -> dict[str, Any]:
    """``table`` (None without rows) of the primary endpoint's adjusted estimates, routes in report
    order, and ``event``, the endpoint's event in a word, for the caption."""
    info = endpoint(PRIMARY_ENDPOINT)
    out: dict[str, Any] = {"table": None, "event": info.event}
    if not has(ate, "paramcd", "target", "estimator", "estimand", "measure", "day", "difference", "diagnostics"):
        return out
    ate = ate.filter(pl.col("paramcd") == PRIMARY_ENDPOINT)
    primary: dict[tuple[str, str], Mapping] = {}
    if has(contrasts, "paramcd", "target", "estimand", "difference"):
        for r in contrasts.filter(pl.col("paramcd") == PRIMARY_ENDPOINT).iter_rows(named=True):
            primary[(r["target"], r["estimand"])] = r
    by_target: dict[str, dict[tuple[str, str], Mapping]] = {}
    for r in ate.iter_rows(named=True):
        by_target.setdefault(r["target"], {})[(r["estimator"], r["estimand"])] = r
    rows: list[Row] = []
    for target in [a for a in arms.order if a in by_target]:
        cells = by_target[target]
        any_row = next(iter(cells.values()))
        if any_row["diagnostics"] != "pass":
            why = any_row.get("gate_reasons") or "unknown reason"
            rows.append(Row([arms.label(target), f"withheld, fails diagnostics ({why})", DASH, DASH, DASH, DASH], "bad"))
            continue
        estimands = sorted({(r["measure"] == "rmst", r["day"] or 0.0, e) for (_, e), r in cells.items()})
        for is_rmst, day, estimand in estimands:
            r0 = next(r for (_, e), r in cells.items() if e == estimand)
            if is_rmst:
                what = (f"days without {info.event} up to day {fmt_num(r0['day'])}" if ok(r0.get("day"))
                        else f"days without {info.event}")
                scale, decimals, unit = 1.0, 1, ""
            else:
                what, scale, decimals, unit = f"% with {info.event} by day {fmt_num(day)}", 100.0, 0, " pp"
            rows.append(Row([arms.label(target), what, _cell(primary.get((target, estimand)), scale, decimals, unit),
                             *(_cell(cells.get((name, estimand)), scale, decimals, unit) for name in ESTIMATOR_LABELS)]))
    if rows:
        ci = fmt.ci_label
        ref = arms.label(arms.reference) if arms.reference else "reference"
        out["table"] = Table([f"{arms.route.capitalize()} vs {ref}", "Difference in", f"Weighted curves, primary ({ci})",
                              *(f"{label} ({ci})" for label in ESTIMATOR_LABELS.values())],
                             rows, align="llrrrr", wide=True)
    return out
