"""Adjusted curves of each route vs the reference arm (table results_ate; pure).

For the endpoints whose registry entry lists ``contrasts`` (time to response), beside the primary
contrasts read off the propensity-weighted Kaplan-Meier curves
(:mod:`ketaoutcomes.analysis.contrasts`), three estimators of the same quantities standardised over
the pair's patients (:mod:`ketaoutcomes.models.ate`, riskRegression's ``ate()``): the share with the
event by each of ``models.contrast_days`` per arm and its difference (and ratio) route - reference,
and the restricted mean days without the event up to the primary contrasts' horizon:

* ``gformula``: a Cox model of the event on the covariates with a baseline hazard per arm (R's
  ``strata(arm)``: no proportional hazards between the route and the reference arm, which the
  routes' time courses would break), everyone's predicted risk averaged as if all had had the
  route, then the reference arm; right if that model is;
* ``iptw``: inverse probability of treatment weighting by the study's propensity model (the same
  model, covariates and coding as the primary comparison: :func:`fit_pair_propensity`, its weights
  ``1 / P(arm)`` unstabilised and untruncated) and of censoring weighting by a Cox model of
  censoring on the covariates, also with a baseline per arm (courses of the routes end at other
  times than the reference arm's); right if those are;
* ``aiptw``: doubly robust: right if either the outcome model, or the propensity and censoring
  models, are.

All three estimate the average effect over the pair's patients (the ATE), which the primary comparison
also targets with inverse-probability weights (``propensity.weighting = "iptw"``, the default); overlap
weights and matching target other patients, so there the two may differ by design.

The covariates are those of the propensity model (the study's covariates and site, rare levels
coded as the reference level). CIs are Wald intervals from the influence function, every model's
estimation included (riskRegression's standard errors); the restricted mean's by integrating it.
Censoring here is what ADTTE censors: the end of assessments and the intercurrent events, so the
estimand is the risk had nobody been censored.

The days and the horizon are the primary contrasts': a day that the at-risk rule makes "not
estimable" there is not estimated here either (an outcome model would extrapolate past the data
where a weighted curve stops), and the restricted mean is up to the same, possibly cut, horizon. The
pair's gate verdict is carried as elsewhere: a failed pair's rows are kept beside the verdict and
withheld in ``latest_results_ate`` and the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from ketaoutcomes.analysis.propensity import fit_pair_propensity, ps_model_label
from ketaoutcomes.notes import Note
from ketaoutcomes.settings import StudySettings

__all__ = ["ATE_ESTIMATORS", "ATE_RESULT_SCHEMA", "adjusted_contrasts", "pair_arrays"]

#: The estimators as results_ate names them, from riskRegression's names.
ATE_ESTIMATORS = {"GFORMULA": "gformula", "IPTW": "iptw", "AIPTW": "aiptw"}

ATE_RESULT_SCHEMA = {
    "paramcd": pl.String, "target": pl.String, "comparator": pl.String, "estimator": pl.String,
    "estimand": pl.String, "measure": pl.String, "day": pl.Float64,
    "value_target": pl.Float64, "se_target": pl.Float64, "value_comparator": pl.Float64,
    "se_comparator": pl.Float64, "difference": pl.Float64, "se": pl.Float64, "lower": pl.Float64,
    "upper": pl.Float64, "p_value": pl.Float64, "ratio": pl.Float64, "ratio_lower": pl.Float64,
    "ratio_upper": pl.Float64, "n": pl.Int64, "ps_model": pl.String, "diagnostics": pl.String,
    "gate_reasons": pl.String, "note": pl.String,
}

_VALUES = ("value_target", "se_target", "value_comparator", "se_comparator", "difference", "se", "lower", "upper",
           "p_value", "ratio", "ratio_lower", "ratio_upper")


def pair_arrays(frame: pl.DataFrame, target: str, study: StudySettings
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The pair's (time, event, route, covariates) as the adjusted curves take them: the patients of
    ``target`` and the reference arm with a time and an event flag that the study's propensity model
    kept, and its design columns (None: no propensity model could be fitted)."""
    ref = study.cohort.reference_arm
    pair = frame.filter(pl.col("ARM").is_in([target, ref]) & pl.col("AVAL").is_not_null()
                        & pl.col("EVENT").is_not_null())
    ps = fit_pair_propensity(pair, target, study, balance=False)  # the design and scores only
    if ps.model_matrix is None:
        return None
    rows = pair.select("USUBJID", "AVAL", "EVENT", "ARM").with_columns(pl.col("USUBJID").cast(pl.String))
    kept = ps.scores.select("USUBJID").with_row_index("_i").join(rows, on="USUBJID", how="left").sort("_i")
    return (kept["AVAL"].cast(pl.Float64).to_numpy(), kept["EVENT"].to_numpy() == 1,
            (kept["ARM"] == target).to_numpy(), np.asarray(ps.model_matrix, dtype=float))


def _primary_days(contrasts: pl.DataFrame, target: str, days: Sequence[float]) -> tuple[list[float], float | None]:
    """The days the primary contrasts could estimate for ``target``, and their restricted-mean horizon."""
    rows = contrasts.filter(pl.col("target") == target)
    ok = {r["day"] for r in rows.filter((pl.col("measure") == "risk") & pl.col("difference").is_not_null())
          .iter_rows(named=True)}
    rmst = rows.filter((pl.col("measure") == "rmst") & pl.col("day").is_not_null())
    return [d for d in days if d in ok], (float(rmst["day"][0]) if rmst.height else None)


def adjusted_contrasts(frame: pl.DataFrame, paramcd: str, study: StudySettings, targets: Sequence[str],
                       verdicts: Mapping[str, tuple[str, str | None]], contrasts: pl.DataFrame
                       ) -> tuple[pl.DataFrame, list[Note]]:
    """The rows of results_ate for one endpoint's ``frame`` (``USUBJID``, ``ARM``, ``AVAL``, ``EVENT``
    and the covariates): every route of ``targets`` vs the reference arm, each estimator and estimand,
    with the pair's verdict from ``verdicts`` and the days and horizon of its primary ``contrasts``."""
    from ketaoutcomes.models.ate import adjusted_curves

    ref = study.cohort.reference_arm
    m = study.models
    days = [float(d) for d in m.contrast_days]
    rows: list[dict] = []
    notes: list[Note] = []
    for target in targets:
        verdict, reasons = verdicts.get(target, ("fail", "no propensity-score comparison"))
        ok_days, horizon = _primary_days(contrasts, target, days)
        base = {"paramcd": paramcd, "target": target, "comparator": ref, "ps_model": ps_model_label(study),
                "diagnostics": verdict, "gate_reasons": reasons}
        table, n, error = None, 0, None
        try:
            arrays = pair_arrays(frame, target, study)
            if arrays is None:
                error = "no propensity model could be fitted"
            else:
                time, event, route, X = arrays
                n = len(time)
                if ok_days or horizon is not None:
                    p = study.propensity
                    table = adjusted_curves(time, event, route, X, days=tuple(ok_days), horizon=horizon,
                                            ps_model=p.model, ps_variance=p.ridge_variance, alpha=m.alpha).table()
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if error:
            notes.append(Note(f"adjusted curves of {target} vs {ref} could not be computed ({error}); their rows are "
                              "empty", step="contrasts", endpoint=paramcd, arms=(target,), severity="warning"))
        found = {} if table is None else {(r["estimator"], r["estimand"]): r for r in table.iter_rows(named=True)}
        for name, label in ATE_ESTIMATORS.items():
            for day in [*days, None]:
                estimand = "rmst" if day is None else f"risk_d{day:g}"
                r = found.get((name, estimand))
                note = None
                if r is None:
                    note = (f"not computed: {error}" if error else
                            "not estimable: the primary contrasts' at-risk rule ends the curves before "
                            + ("this day" if day is not None else "any day"))
                elif r["difference"] is None:
                    note = "not estimable: past the last observed time"
                rows.append({**base, "estimator": label, "estimand": estimand,
                             "measure": "rmst" if day is None else "risk",
                             "day": horizon if day is None else day, "n": n, "note": note,
                             **{k: (None if r is None else _finite(r[k])) for k in _VALUES}})
    return pl.DataFrame(rows, schema=ATE_RESULT_SCHEMA), notes


def _finite(x: object) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None
