"""The analysis of one study: ADaM datasets in, result frames out (pure).

For each endpoint (TTRESP, TTREM, TTRELAPS): Kaplan-Meier per arm with
95% CIs and median time with its CI, a log-rank test across arms, and two Cox
models (statsmodels PHReg, Efron ties) with the study's reference arm:

* ``adjusted``: arm + the study covariates, stratified by the study strata
  (site by default). This is the primary estimate in the spine. It is only as
  good as the covariates: the full confounding adjustment with diagnostics is a
  later step (propensity scores, balance, equipoise).
* ``naive``: arm only, no strata. Shown next to the adjusted one so a reader sees
  how much confounding by indication moves the estimate; never read it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ketaoutcomes.derive import COVARIATE_COLUMNS
from ketaoutcomes.models.survival import cnsr_to_event, cox_ph, kaplan_meier, logrank_test
from ketaoutcomes.settings import StudySettings

__all__ = ["AnalysisResult", "analyze", "ENDPOINTS"]

ENDPOINTS = ("TTRESP", "TTREM", "TTRELAPS")
CATEGORICAL = {"SEX", "DIAGNOSIS", "SITEID"}


@dataclass(frozen=True)
class AnalysisResult:
    """Result frames, each ready for a ``results_*`` table (run_id is added by the caller)."""

    km: pl.DataFrame
    km_median: pl.DataFrame
    logrank: pl.DataFrame
    cox: pl.DataFrame
    cox_fit: pl.DataFrame
    notes: tuple[str, ...]

    def tables(self) -> dict[str, pl.DataFrame]:
        return {
            "results_km": self.km,
            "results_km_median": self.km_median,
            "results_logrank": self.logrank,
            "results_cox": self.cox,
            "results_cox_fit": self.cox_fit,
        }


def _model_frame(adsl: pl.DataFrame, adtte: pl.DataFrame, paramcd: str) -> pl.DataFrame:
    return (
        adtte.filter(pl.col("PARAMCD") == paramcd)
        .join(adsl.drop("STUDYID", "ARM", "COURSEID"), on="USUBJID", how="left")
        .with_columns(cnsr_to_event(pl.col("CNSR")).alias("EVENT"))
    )


def _reference_level(frame: pl.DataFrame, col: str) -> str:
    """Most frequent level (ties: alphabetical) as the reference of a categorical covariate."""
    counts = frame.group_by(col).len().sort(["len", col], descending=[True, False])
    return counts[col][0]


def _cox_models(frame: pl.DataFrame, paramcd: str, study: StudySettings) -> tuple[list[pl.DataFrame], list[dict], list[str]]:
    notes: list[str] = []
    events_by_arm = dict(frame.group_by("ARM").agg(pl.col("EVENT").sum()).iter_rows())
    if study.reference_arm not in events_by_arm:
        return [], [], [f"{paramcd}: reference arm {study.reference_arm!r} has no courses; no hazard ratios"]
    too_few = sorted(a for a, e in events_by_arm.items() if e < study.min_events_per_arm)
    if study.reference_arm in too_few:
        return [], [], [
            f"{paramcd}: reference arm {study.reference_arm!r} has {events_by_arm[study.reference_arm]} events "
            f"(< {study.min_events_per_arm}); no hazard ratios"
        ]
    if too_few:
        notes.append(
            f"{paramcd}: arm(s) {', '.join(too_few)} left out of the Cox models: fewer than "
            f"{study.min_events_per_arm} events (not estimable)"
        )
    data = frame.filter(~pl.col("ARM").is_in(too_few))
    if data["ARM"].n_unique() < 2:
        return [], [], notes + [f"{paramcd}: fewer than two arms with enough events; no hazard ratios"]
    covs = [COVARIATE_COLUMNS[c] for c in study.covariates]
    strata = COVARIATE_COLUMNS[study.strata] if study.strata else None
    specs = {
        "adjusted": dict(covariates=["ARM", *covs], strata=strata),
        "naive": dict(covariates=["ARM"], strata=None),
    }
    summaries, fits = [], []
    for model, spec in specs.items():
        categorical = {"ARM": study.reference_arm}
        for c in spec["covariates"]:
            if c in CATEGORICAL:
                categorical[c] = _reference_level(data, c)
        res = cox_ph(
            data, time="AVAL", event="EVENT", covariates=spec["covariates"], categorical=categorical,
            strata=spec["strata"], ties="efron", alpha=study.alpha,
        )
        summaries.append(res.summary.with_columns(pl.lit(paramcd).alias("paramcd"), pl.lit(model).alias("model")))
        fits.append({
            "paramcd": paramcd, "model": model, "n": res.n, "n_events": res.n_events, "n_dropped": res.n_dropped,
            "loglik": res.loglik, "lr_chi2": res.lr_chi2, "lr_df": res.lr_df, "lr_p": res.lr_p,
            "concordance": res.concordance, "converged": res.converged, "strata": res.strata,
            "covariates": ", ".join(spec["covariates"]),
            "reference_levels": ", ".join(f"{k}={v}" for k, v in categorical.items()),
            "notes": "; ".join(res.notes),
        })
    return summaries, fits, notes


def analyze(adsl: pl.DataFrame, adtte: pl.DataFrame, *, study: StudySettings) -> AnalysisResult:
    """KM, log-rank and Cox models for every endpoint present in ``adtte``."""
    km, med, lr, cox, fits, notes = [], [], [], [], [], []
    for paramcd in ENDPOINTS:
        frame = _model_frame(adsl, adtte, paramcd)
        if frame.is_empty():
            notes.append(f"{paramcd}: no rows; nothing to estimate")
            continue
        k = kaplan_meier(frame, time="AVAL", event="EVENT", group="ARM", alpha=study.alpha)
        km.append(k.table.with_columns(pl.lit(paramcd).alias("paramcd")))
        med.append(k.medians.with_columns(pl.lit(paramcd).alias("paramcd")))
        if frame["ARM"].n_unique() >= 2:
            t = logrank_test(frame, time="AVAL", event="EVENT", group="ARM")
            lr.append(pl.DataFrame({
                "paramcd": [paramcd], "chi2": [t.chi2], "df": [t.df], "p_value": [t.p_value],
                "groups": [t.groups.write_json()],
            }))
        s, f, n = _cox_models(frame, paramcd, study)
        cox += s
        fits += f
        notes += n
    return AnalysisResult(
        km=pl.concat(km, how="diagonal_relaxed") if km else pl.DataFrame(),
        km_median=pl.concat(med, how="diagonal_relaxed") if med else pl.DataFrame(),
        logrank=pl.concat(lr, how="diagonal_relaxed") if lr else pl.DataFrame(),
        cox=pl.concat(cox, how="diagonal_relaxed") if cox else pl.DataFrame(),
        cox_fit=pl.DataFrame(fits) if fits else pl.DataFrame(),
        notes=tuple(notes),
    )
