"""E-values: how strong an unmeasured confounder would have to be to explain an estimate away.

VanderWeele & Ding (2017, Ann Intern Med 167:268): the E-value of a risk ratio RR is the minimum
strength of association, on the risk-ratio scale, that an unmeasured confounder would need with
both the treatment and the outcome, conditional on the measured covariates, to move the estimate
to the null::

    E = RR + sqrt(RR * (RR - 1))      for RR >= 1 (for RR < 1, the same on 1 / RR)

The E-value of the confidence interval is that of the limit nearer the null, and 1 when the interval
contains the null (no confounding is needed to reach it).

A hazard ratio approximates a risk ratio only when the outcome is rare by the end of follow-up
(under 15%). Response and remission are common here (a third to two thirds of patients respond),
so the rare-outcome shortcut would overstate robustness; for a common outcome the hazard ratio is
first converted (VanderWeele 2020, Biometrics, Table 2; as R's ``EValue::evalues.HR(rare = FALSE)``)::

    RR ~= (1 - 0.5 ** sqrt(HR)) / (1 - 0.5 ** sqrt(1 / HR))

Risk ratios read off standardised (weighted) risk curves need no conversion. Pure functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["COMMON_OUTCOME", "EValue", "evalue", "evalue_of_rr", "hr_to_rr_common"]

#: Share with the outcome by the end of follow-up from which an outcome counts as common.
COMMON_OUTCOME = 0.15


def hr_to_rr_common(hr: float) -> float:
    """The approximate risk ratio of a hazard ratio for a common outcome (VanderWeele 2020)."""
    if not hr > 0:
        raise ValueError(f"a hazard ratio must be > 0, not {hr!r}")
    return (1 - 0.5 ** math.sqrt(hr)) / (1 - 0.5 ** math.sqrt(1 / hr))


def evalue_of_rr(rr: float) -> float:
    """The E-value of a risk ratio: RR + sqrt(RR (RR - 1)), on 1 / RR below 1; 1 at the null."""
    if not rr > 0 or math.isinf(rr):
        raise ValueError(f"a risk ratio must be finite and > 0, not {rr!r}")
    r = 1 / rr if rr < 1 else rr
    return r + math.sqrt(r * (r - 1))


@dataclass(frozen=True)
class EValue:
    """An estimate on the risk-ratio scale (after any conversion) and its E-values.

    ``rr``, ``rr_lower``, ``rr_upper``: the estimate and its CI limits as risk ratios;
    ``point``: the E-value of the estimate; ``ci``: the E-value of the CI limit nearer the null
    (1 when the CI contains 1; None without a CI); ``converted``: whether a hazard ratio was
    converted with the common-outcome formula."""

    rr: float
    rr_lower: float | None
    rr_upper: float | None
    point: float
    ci: float | None
    converted: bool


def evalue(estimate: float, lower: float | None = None, upper: float | None = None, *,
           scale: str = "risk_ratio", rare: bool | None = None) -> EValue:
    """E-values of a ratio estimate and its CI (as ``EValue::evalues.RR`` / ``evalues.HR``).

    ``scale`` is ``"risk_ratio"`` or ``"hazard_ratio"``; a hazard ratio needs ``rare`` (is the
    outcome under :data:`COMMON_OUTCOME` by the end of follow-up?): rare keeps it as a risk ratio,
    common converts it (:func:`hr_to_rr_common`). A missing or unbounded CI limit gives ``ci = None``
    when it is the limit that matters."""
    if scale not in ("risk_ratio", "hazard_ratio"):
        raise ValueError(f"scale must be risk_ratio or hazard_ratio, not {scale!r}")
    if scale == "hazard_ratio" and rare is None:
        raise ValueError("a hazard ratio needs rare=True or rare=False (is the outcome under 15% by the end of follow-up?)")
    convert = scale == "hazard_ratio" and not rare

    def rr(x: float | None) -> float | None:
        if x is None or not math.isfinite(x) or x <= 0:
            return None
        return hr_to_rr_common(x) if convert else x

    point_rr = rr(estimate)
    if point_rr is None:
        raise ValueError(f"the estimate must be finite and > 0, not {estimate!r}")
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"lower {lower} > upper {upper}")
    lo, hi = rr(lower), rr(upper)
    # the limit nearer the null (the conversion is increasing and keeps 1 at 1, so compare the raw limit)
    limit, raw = (lo, lower) if point_rr >= 1 else (hi, upper)
    if raw is None or math.isnan(raw):
        ci: float | None = None
    elif (point_rr >= 1 and raw <= 1) or (point_rr < 1 and raw >= 1):
        ci = 1.0  # the interval reaches the null: no confounding is needed to get there
    else:
        ci = evalue_of_rr(limit) if limit is not None else None
    return EValue(point_rr, lo, hi, evalue_of_rr(point_rr), ci, convert)
