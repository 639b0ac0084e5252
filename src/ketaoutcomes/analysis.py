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
* ``iptw`` / ``overlap`` (the study's ``weighting``): for each route vs the
  reference arm, a propensity-score model (logistic, on the covariates and the
  strata variable), stabilised truncated inverse-probability or overlap weights,
  and a weighted Cox model of arm alone with robust (sandwich) standard errors: a
  marginal hazard ratio. Each carries its diagnostics (covariate balance,
  equipoise, effective sample size) and the gate's verdict: an estimate whose
  diagnostics fail, or cannot be computed, is stored with ``diagnostics = 'fail'``
  and its reasons, and the report never shows it as a clean result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ketaoutcomes.derive import COVARIATE_COLUMNS
from ketaoutcomes.models.survival import cnsr_to_event, cox_ph, kaplan_meier, logrank_test
from ketaoutcomes.models.weighted import restricted_mean
from ketaoutcomes.settings import StudySettings

__all__ = ["AnalysisResult", "analyze", "secondary_analyses", "ENDPOINTS"]

ENDPOINTS = ("TTRESP", "TTREM", "TTRELAPS", "TTSIRES")
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
    ps: pl.DataFrame = field(default_factory=pl.DataFrame)  # one row per endpoint and route: diagnostics and the gate
    balance: pl.DataFrame = field(default_factory=pl.DataFrame)  # SMD of every covariate before and after weighting
    ph: pl.DataFrame = field(default_factory=pl.DataFrame)  # proportional-hazards test of the adjusted model
    rmst: pl.DataFrame = field(default_factory=pl.DataFrame)  # restricted mean time without the event, per arm

    def tables(self) -> dict[str, pl.DataFrame]:
        return {
            "results_km": self.km,
            "results_km_median": self.km_median,
            "results_logrank": self.logrank,
            "results_cox": self.cox,
            "results_cox_fit": self.cox_fit,
            "results_ps": self.ps,
            "results_balance": self.balance,
            "results_ph": self.ph,
            "results_rmst": self.rmst,
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


def _ph_check(frame: pl.DataFrame, paramcd: str, study: StudySettings, summaries: pl.DataFrame) -> pl.DataFrame:
    """Proportional-hazards test (R's cox.zph, km transform) of the adjusted model, on the arms it used.

    The generator of the synthetic cohort is proportional by construction; real ketamine-vs-SSRI
    hazards are not (ketamine acts in days and non-responders stop responding, SSRIs over weeks),
    so a failing test is expected on clinic data and the HR is then an average over follow-up.
    """
    from ketaoutcomes.models.diagnostics import ph_test

    arms = {t[4:-1] for t in summaries["term"] if t.startswith("ARM[")} | {study.reference_arm}
    data = frame.filter(pl.col("ARM").is_in(sorted(arms)))
    covs = ["ARM", *(COVARIATE_COLUMNS[c] for c in study.covariates)]
    categorical = {"ARM": study.reference_arm}
    for c in covs:
        if c in CATEGORICAL:
            categorical[c] = _reference_level(data, c)
    strata = COVARIATE_COLUMNS[study.strata] if study.strata else None
    try:
        out = ph_test(data, time="AVAL", event="EVENT", covariates=covs, categorical=categorical, strata=strata)
        return out.with_columns(pl.lit(paramcd).alias("paramcd"), pl.lit(None, dtype=pl.String).alias("error"))
    except Exception as exc:  # noqa: BLE001 - a check that cannot run is reported, never passed
        return pl.DataFrame({"term": ["GLOBAL"], "chi2": [None], "df": [None], "p_value": [None],
                             "note": ["the proportional-hazards test could not be computed"], "paramcd": [paramcd],
                             "error": [f"{type(exc).__name__}: {str(exc)[:200]}"]},
                            schema_overrides={"chi2": pl.Float64, "df": pl.Int64, "p_value": pl.Float64})


def _ps_weighted(frame: pl.DataFrame, paramcd: str, study: StudySettings, arms: list[str]
                 ) -> tuple[list[pl.DataFrame], list[dict], list[pl.DataFrame], list[str]]:
    """Propensity-weighted Cox per route vs the reference arm, with diagnostics and the gate."""
    from ketaoutcomes.models.propensity import fit_propensity, love_plot_data
    from ketaoutcomes.models.weighted import weighted_cox

    covs = [COVARIATE_COLUMNS[c] for c in study.covariates]
    if study.strata:  # site moves arm choice: a confounder for the propensity model
        covs.append(COVARIATE_COLUMNS[study.strata])
    categorical = [c for c in covs if c in CATEGORICAL]
    cox_rows, ps_rows, balance, notes = [], [], [], []
    for target in arms:
        pair = frame.filter(pl.col("ARM").is_in([target, study.reference_arm]))
        ps = fit_propensity(pair, target=target, comparator=study.reference_arm, covariates=covs,
                            categorical=categorical, weighting=study.weighting, truncation=study.ps_truncation,
                            max_smd=study.max_smd, min_equipoise=study.min_equipoise,
                            equipoise_bounds=study.equipoise_bounds)
        reasons = list(ps.gate_reasons)
        summary = None
        weighted = pair.join(ps.scores.select("USUBJID", "weight"), on="USUBJID", how="inner").filter(
            pl.col("weight").is_not_null() & pl.col("weight").is_finite())
        if weighted["ARM"].n_unique() == 2:
            try:
                res = weighted_cox(weighted, time="AVAL", event="EVENT", covariates=["ARM"],
                                   categorical={"ARM": study.reference_arm}, weights="weight", alpha=study.alpha)
                summary = res.summary.filter(pl.col("term") == f"ARM[{target}]")
                if not res.converged:
                    reasons.append("weighted Cox model did not converge")
            except Exception as exc:  # noqa: BLE001 - a model that cannot be fitted is a failed diagnostic
                reasons.append(f"weighted Cox model could not be fitted: {type(exc).__name__}: {exc}")
        else:
            reasons.append("no weighted patients on one of the two arms")
        passed = ps.diagnostics_passed and not [r for r in reasons if r not in ps.gate_reasons] and summary is not None
        verdict = "pass" if passed else "fail"
        if summary is not None and summary.height:
            cox_rows.append(summary.with_columns(
                pl.lit(paramcd).alias("paramcd"), pl.lit(study.weighting).alias("model"),
                pl.lit(verdict).alias("diagnostics"), pl.lit("; ".join(reasons) or None, dtype=pl.String).alias("gate_reasons")))
        ps_rows.append({
            "paramcd": paramcd, "target": target, "comparator": study.reference_arm, "weighting": ps.weighting,
            "truncation": ps.truncation, "n_target": ps.n_target, "n_comparator": ps.n_comparator,
            "n_dropped": ps.n_dropped, "n_truncated": ps.n_truncated, "ess_target": ps.ess_target,
            "ess_comparator": ps.ess_comparator, "equipoise": ps.equipoise,
            "max_abs_smd_after": ps.max_abs_smd_after, "converged": ps.converged, "diagnostics": verdict,
            "gate_reasons": "; ".join(reasons) or None, "notes": "; ".join(ps.notes) or None,
        })
        balance.append(love_plot_data([ps]).with_columns(pl.lit(paramcd).alias("paramcd")))
        if not passed:
            notes.append(f"{paramcd}: {target} vs {study.reference_arm} fails the diagnostics gate "
                         f"({'; '.join(reasons)}): its weighted HR is not a result to read")
    return cox_rows, ps_rows, balance, notes


def analyze(adsl: pl.DataFrame, adtte: pl.DataFrame, *, study: StudySettings, weighted: bool = True) -> AnalysisResult:
    """KM, log-rank and Cox models for every endpoint present in ``adtte``; with ``weighted``, also the
    propensity-weighted comparison of each route with the reference arm and its diagnostics."""
    km, med, lr, cox, fits, notes, ps_rows, balance, ph, rmst = [], [], [], [], [], [], [], [], [], []
    for paramcd in ENDPOINTS:
        frame = _model_frame(adsl, adtte, paramcd)
        if frame.is_empty():
            notes.append(f"{paramcd}: no rows; nothing to estimate")
            continue
        k = kaplan_meier(frame, time="AVAL", event="EVENT", group="ARM", alpha=study.alpha)
        km.append(k.table.with_columns(pl.lit(paramcd).alias("paramcd")))
        med.append(k.medians.with_columns(pl.lit(paramcd).alias("paramcd")))
        rmst.append(restricted_mean(k, horizon=study.rmst_horizon_days).with_columns(pl.lit(paramcd).alias("paramcd")))
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
        if s:
            ph.append(_ph_check(frame, paramcd, study, pl.concat(s)))
        if s and weighted:  # the regression models ran: the reference arm and at least one route are estimable
            estimable = sorted({t[4:-1] for t in pl.concat(s)["term"] if t.startswith("ARM[")})
            c, p, b, n = _ps_weighted(frame, paramcd, study, estimable)
            cox += c
            ps_rows += p
            balance += b
            notes += n
    return AnalysisResult(
        km=pl.concat(km, how="diagonal_relaxed") if km else pl.DataFrame(),
        km_median=pl.concat(med, how="diagonal_relaxed") if med else pl.DataFrame(),
        logrank=pl.concat(lr, how="diagonal_relaxed") if lr else pl.DataFrame(),
        cox=pl.concat(cox, how="diagonal_relaxed") if cox else pl.DataFrame(),
        cox_fit=pl.DataFrame(fits) if fits else pl.DataFrame(),
        notes=tuple(notes),
        ps=pl.DataFrame(ps_rows) if ps_rows else pl.DataFrame(),
        balance=pl.concat(balance, how="diagonal_relaxed") if balance else pl.DataFrame(),
        ph=pl.concat(ph, how="diagonal_relaxed") if ph else pl.DataFrame(),
        rmst=pl.concat(rmst, how="diagonal_relaxed") if rmst else pl.DataFrame(),
    )


def secondary_analyses(
    adsl: pl.DataFrame,
    scores: pl.DataFrame,
    sessions: pl.DataFrame,
    adverse_events: pl.DataFrame,
    courses: pl.DataFrame,
    *,
    study: StudySettings,
) -> tuple[dict[str, pl.DataFrame], list[str]]:
    """Safety per session and per patient by route, and mood trajectories per arm (mixed model).

    Returns result frames keyed by warehouse table name, and notes.
    """
    from ketaoutcomes.models.safety import per_patient_safety, session_safety
    from ketaoutcomes.models.trajectory import fit_trajectories, trajectory_data

    analysed = adsl.filter(pl.col("ANLFL") == "Y").select("COURSEID")
    c = courses.join(analysed, left_on="course_id", right_on="COURSEID", how="semi")
    s = sessions.join(c.select("course_id"), on="course_id", how="semi")
    ae = adverse_events.join(s.select("session_id"), on="session_id", how="semi")
    out = {
        "results_safety": session_safety(s, ae, c, alpha=study.alpha),
        "results_safety_patients": per_patient_safety(s, ae, c, alpha=study.alpha),
    }
    notes: list[str] = []
    data = trajectory_data(adsl, scores, instrument=study.instrument, horizon_days=study.rmst_horizon_days,
                           baseline_window_days=study.baseline_window_days)
    cap = study.trajectory_max_patients_per_arm
    per_arm = data.group_by("ARM").agg(pl.col("USUBJID").unique().sort())
    if (per_arm["USUBJID"].list.len() > cap).any():
        keep = per_arm.with_columns(pl.col("USUBJID").list.sample(
            n=pl.min_horizontal(pl.col("USUBJID").list.len(), pl.lit(cap)), seed=study.random_seed))
        keep = keep.explode("USUBJID").select("USUBJID")
        data = data.join(keep, on="USUBJID", how="semi")
        notes.append(f"trajectories: fitted on a random sample of at most {cap:,} patients per arm "
                     f"(seed {study.random_seed}); the intervals are those of the sample")
    if data["ARM"].n_unique() >= 2 and study.reference_arm in data["ARM"].unique().to_list():
        traj = fit_trajectories(data, reference_arm=study.reference_arm, alpha=study.alpha)
        out["results_trajectory"] = traj.predicted.with_columns(pl.lit(traj.converged).alias("converged"))
        out["results_trajectory_fixed"] = traj.fixed
        notes += [f"trajectories: {n}" for n in traj.notes]
    else:
        notes.append("trajectories: fewer than two arms (or no reference arm) with ratings; not fitted")
    return out, notes
