"""TTRESP (time to response) and TTREM (time to remission), from the first dose (pure).

* **Response**: the first rating at or below (1 - reduction) x baseline (default a 50%
  reduction, the instrument's registry value unless the study overrides it).
* **Remission**: the first rating at or below the instrument's remission threshold, among
  courses whose baseline is above it (a course already in remission at baseline cannot remit;
  it is left out of the endpoint's population with an attrition row).
"""

from __future__ import annotations

import polars as pl

from ketaoutcomes.derive.events import EndpointInput, EndpointRows, derivation, first_event, instrument_pct

__all__ = ["derive_ttrem", "derive_ttresp"]


@derivation("TTRESP")
def derive_ttresp(inp: EndpointInput) -> EndpointRows:
    study, reduction = inp.study, inp.response_reduction
    rows = first_event(
        inp.pop, inp.ratings, pl.col("total_score") <= pl.col("BASE") * (1 - reduction),
        paramcd="TTRESP", param=f"Time to response ({instrument_pct(reduction)} reduction in {study.cohort.instrument})",
        evntdesc=f"response: {study.cohort.instrument} <= {1 - reduction:g} x baseline", tar_days=study.cohort.time_at_risk_days,
    )
    return EndpointRows(rows)


@derivation("TTREM")
def derive_ttrem(inp: EndpointInput) -> EndpointRows:
    study, remission = inp.study, inp.remission_max
    rem_pop = inp.pop.filter(pl.col("BASE") > remission)
    rows = first_event(
        rem_pop, inp.ratings, pl.col("total_score") <= remission,
        paramcd="TTREM", param=f"Time to remission ({study.cohort.instrument} <= {remission:g})",
        evntdesc=f"remission: {study.cohort.instrument} <= {remission:g}", tar_days=study.cohort.time_at_risk_days,
    )
    rule = (f"remission endpoint (TTREM): baseline {study.cohort.instrument} above the remission threshold "
            f"{remission:g} (not already in remission)")
    return EndpointRows(rows, population=((rule, rem_pop),))
