"""E-values of the primary estimates (table results_evalues; pure).

For each route vs the reference arm on an endpoint with primary contrasts (time to response), the
E-value (:mod:`ketaoutcomes.models.evalues`) of

* the **risk ratio** by each of ``models.contrast_days``: the route's share with the event over the
  reference arm's, read off the same weighted (or matched) curves as the risk differences, with the
  percentile interval of the same bootstrap (rows of
  :func:`~ketaoutcomes.analysis.contrasts.primary_contrasts` with measure ``risk_ratio``); a
  standardised risk ratio needs no conversion;
* the **weighted hazard ratio** (the secondary summary): converted to the risk-ratio scale with the
  common-outcome formula when either arm's weighted curve reaches 15% with the event by its end
  (response is common here), else taken as a risk ratio.

The E-value of the CI is that of the limit nearer 1 (1 when the interval contains 1). A pair that
fails its diagnostics keeps its rows with the verdict (withheld in ``latest_evalues``), as its HR.
"""

from __future__ import annotations

import math

import polars as pl

from ketaoutcomes.models.evalues import COMMON_OUTCOME, evalue

__all__ = ["EVALUE_SCHEMA", "evalue_table"]

EVALUE_SCHEMA = {
    "paramcd": pl.String, "target": pl.String, "comparator": pl.String, "weighting": pl.String,
    "estimand": pl.String, "scale": pl.String, "day": pl.Float64,
    "estimate": pl.Float64, "lower": pl.Float64, "upper": pl.Float64,
    "outcome_share": pl.Float64, "rare": pl.Boolean,
    "rr": pl.Float64, "rr_lower": pl.Float64, "rr_upper": pl.Float64,
    "evalue": pl.Float64, "evalue_ci": pl.Float64,
    "diagnostics": pl.String, "gate_reasons": pl.String, "note": pl.String,
}


def _finite(x: object) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _outcome_share(km: pl.DataFrame, target: str) -> float | None:
    """The larger of the two arms' shares with the event at the end of their weighted curves."""
    if km.is_empty() or "target" not in km.columns:
        return None
    pair = km.filter(pl.col("target") == target)
    if pair.is_empty():
        return None
    last = pair.sort("time").group_by("group", maintain_order=True).agg(pl.col("survival").last())
    return float(1 - last["survival"].min())


def evalue_table(ratios: pl.DataFrame, weighted_cox: pl.DataFrame, weighted_km: pl.DataFrame,
                 paramcd: str, comparator: str, weighting: str) -> pl.DataFrame:
    """The E-value rows of one endpoint: ``ratios`` (the risk-ratio rows of the primary contrasts),
    ``weighted_cox`` (the weighted Cox rows of the endpoint, one ``arm`` per route) and
    ``weighted_km`` (the weighted curves, for whether the outcome is common)."""
    rows: list[dict] = []
    base = {"paramcd": paramcd, "comparator": comparator, "weighting": weighting}

    def add(target: str, estimand: str, scale: str, day: float | None, est: object, lo: object, hi: object,
            share: float | None, diagnostics: str | None, reasons: str | None, note: str | None) -> None:
        e, l, u = _finite(est), _finite(lo), _finite(hi)
        rare = None if scale == "risk_ratio" or share is None else bool(share < COMMON_OUTCOME)
        out = {**base, "target": target, "estimand": estimand, "scale": scale, "day": day, "estimate": e,
               "lower": l, "upper": u, "outcome_share": share, "rare": rare, "diagnostics": diagnostics,
               "gate_reasons": reasons, "note": note, "rr": None, "rr_lower": None, "rr_upper": None,
               "evalue": None, "evalue_ci": None}
        if e is not None and e > 0 and not (scale == "hazard_ratio" and rare is None):
            # an unbounded limit (inf) stays as given, so an interval reaching 1 is seen as such
            lower = lo if isinstance(lo, (int, float)) and not math.isnan(lo) else None
            upper = hi if isinstance(hi, (int, float)) and not math.isnan(hi) else None
            v = evalue(e, lower, upper, scale=scale, rare=rare)
            out.update(rr=v.rr, rr_lower=v.rr_lower, rr_upper=v.rr_upper, evalue=v.point, evalue_ci=v.ci)
            if v.converted:
                out["note"] = "; ".join(x for x in (note, f"common outcome ({share:.0%} by the end of follow-up): the HR "
                                                    "converted to a risk ratio, (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR))")
                                        if x)
        elif e is None:
            out["note"] = note or "no estimate: no E-value"
        else:
            out["note"] = "; ".join(x for x in (note, "whether the outcome is common is unknown: no E-value") if x)
        rows.append(out)

    for r in ratios.iter_rows(named=True):
        share = None
        add(r["target"], r["estimand"], "risk_ratio", r["day"], r["difference"], r["lower"], r["upper"], share,
            r["diagnostics"], r["gate_reasons"], r["note"])
    if not weighted_cox.is_empty():
        for r in weighted_cox.filter(pl.col("arm").is_not_null()).iter_rows(named=True):
            add(r["arm"], "hr", "hazard_ratio", None, r.get("hr"), r.get("hr_lower"), r.get("hr_upper"),
                _outcome_share(weighted_km, r["arm"]), r.get("diagnostics"), r.get("gate_reasons"), None)
    return pl.DataFrame(rows, schema=EVALUE_SCHEMA) if rows else pl.DataFrame(schema=EVALUE_SCHEMA)
