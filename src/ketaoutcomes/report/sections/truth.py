"""Synthetic cohorts: each estimate next to the hazard ratio it should recover (truth.json)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl

from ketaoutcomes.endpoints import endpoint
from ketaoutcomes.models.matching import MATCHED_SHARE_FOR_ATT
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import DASH, Row, Table, fmt_hr, fmt_hr_ci, has, ok
from ketaoutcomes.report.sections.weighting import weighted_estimates

__all__ = ["LATENT_ENDPOINT", "TRUTH_ENDPOINTS", "truth_table"]

#: The endpoints whose estimates the truth table holds against their simulated targets.
TRUTH_ENDPOINTS = ("TTRESP", "TTREM", "TTRELAPS")
#: The endpoint of the generator's latent HR (``truth["response"]["hr_arm"]``).
LATENT_ENDPOINT = "TTRESP"


def _truth_estimate(r: Mapping | None) -> str:
    """An estimate in the truth table: a weighted one that fails its diagnostics is withheld there too."""
    if not r:
        return DASH
    if r.get("diagnostics") not in (None, "pass"):
        return "withheld: fails diagnostics"
    return fmt_hr_ci(r.get("hr"), r.get("hr_lower"), r.get("hr_upper"))


def truth_table(truth: dict | None, cox: pl.DataFrame, ps: pl.DataFrame, arms: Arms) -> tuple[Table | None, str]:
    """Estimates next to what they should recover on a synthetic cohort, and truth.json as text.

    ``truth["estimands_observed_grid"]`` (see :mod:`ketaoutcomes.truth`) holds,
    per endpoint and model, the HR each arm's estimate targets on the observed
    visit grid; ``truth["response"]["hr_arm"]`` the generator's latent HR, shown
    for reference only (a visit-date analysis cannot target it).
    """
    if truth is None:
        return None, ""
    text = json.dumps(truth, indent=2, sort_keys=True, default=str)
    estimands = truth.get("estimands_observed_grid")
    if not isinstance(estimands, Mapping):
        return None, text
    latent = (truth.get("response") or {}).get("hr_arm") or {}
    est: dict[tuple[str, str, str], Mapping] = {}
    if has(cox, "paramcd", "term", "hr"):
        for r in cox.iter_rows(named=True):
            arm = r.get("arm")
            if arm is not None:
                est[(r["paramcd"], r.get("model", "adjusted"), arm)] = r
    for code in TRUTH_ENDPOINTS:  # weighted estimates target the marginal HR
        for arm, r in weighted_estimates(cox, code).items():
            est[(code, f"{r['model']} (weighted)", arm)] = r
    matched_share: dict[tuple[str, str], float] = {}
    if has(ps, "paramcd", "target", "n_target", "n_matched_target"):
        for r in ps.iter_rows(named=True):
            if r.get("n_target") and r.get("n_matched_target") is not None:
                matched_share[(r["paramcd"], r["target"])] = r["n_matched_target"] / r["n_target"]
    rows = []
    for code in TRUTH_ENDPOINTS:
        name = endpoint(code).short
        weighted_models = sorted({m for (c, m, _a) in est if c == code and m.endswith("(weighted)")})
        for model in ("adjusted", "naive", *weighted_models):
            key = model
            if model.endswith("(weighted)"):
                # iptw (a pairwise ATE): marginal among the pair's patients; matching (every route patient
                # matched, an ATT): marginal among the route's patients; overlap: not simulated
                key = {"iptw": "marginal_pair", "matching": "marginal_treated"}.get(model.split(" ")[0], "")
            targets = (estimands.get(code) or {}).get(key) or {}
            for arm in arms.sort(targets):
                t = targets[arm]
                r = est.get((code, model, arm))
                inside = DASH
                share = matched_share.get((code, arm)) if model.startswith("matching") else None
                if share is not None and share < MATCHED_SHARE_FOR_ATT:
                    # the matched subset is not the route's patients: no simulated target for it
                    rows.append(Row([name, model, arms.label(arm),
                                     f"none: {100 * share:.0f}% of the route's patients matched",
                                     _truth_estimate(r), DASH, DASH]))
                    continue
                if r and r.get("diagnostics", "pass") in ("pass", None) and ok(r.get("hr_lower")) \
                        and ok(r.get("hr_upper")):
                    inside = "yes" if r["hr_lower"] <= t["hr"] <= r["hr_upper"] else "no"
                rows.append(Row([
                    name, model, arms.label(arm),
                    fmt_hr_ci(t["hr"], t.get("lower"), t.get("upper")),
                    _truth_estimate(r),
                    inside,
                    fmt_hr(latent[arm]) if code == LATENT_ENDPOINT and model == "adjusted" and arm in latent else DASH,
                ]))
    if not rows:
        return None, text
    return Table(["Endpoint", "Model", "Arm", "Target HR (observed grid)", "Estimate", "Target inside 95% CI",
                  "Generator latent HR"], rows, align="lllrrcr"), text
