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
from ketaoutcomes.models.matching import MATCHED_SHARE_FOR_ATT
from ketaoutcomes.models.survival import cnsr_to_event, cox_ph, kaplan_meier, logrank_test
from ketaoutcomes.models.weighted import restricted_mean
from ketaoutcomes.settings import StudySettings

__all__ = ["AnalysisResult", "analyze", "secondary_analyses", "ENDPOINTS"]

ENDPOINTS = ("TTRESP", "TTREM", "TTRELAPS", "TTSIRES")
#: Endpoints timed from the first dose on the assessment grid: the interval-censored sensitivity
#: analysis applies (relapse needs two ratings; its origin is the response visit).
DISCRETE_ENDPOINTS = ("TTRESP", "TTREM")
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
    km_weighted: pl.DataFrame = field(default_factory=pl.DataFrame)  # weighted KM per route pair, with the gate
    km_weighted_median: pl.DataFrame = field(default_factory=pl.DataFrame)
    discrete: pl.DataFrame = field(default_factory=pl.DataFrame)  # interval-censored sensitivity analysis
    preference: pl.DataFrame = field(default_factory=pl.DataFrame)  # preference-score distributions per pair

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
            "results_km_weighted": self.km_weighted,
            "results_km_weighted_median": self.km_weighted_median,
            "results_discrete": self.discrete,
            "results_preference": self.preference,
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


@dataclass
class _Weighted:
    cox: list[pl.DataFrame] = field(default_factory=list)
    ps: list[dict] = field(default_factory=list)
    balance: list[pl.DataFrame] = field(default_factory=list)
    km: list[pl.DataFrame] = field(default_factory=list)
    km_median: list[pl.DataFrame] = field(default_factory=list)
    preference: list[pl.DataFrame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _ps_weighted(frame: pl.DataFrame, paramcd: str, study: StudySettings, arms: list[str], out: _Weighted) -> None:
    """Propensity-weighted (or matched) Cox and Kaplan-Meier per route vs the reference arm, with
    diagnostics and the gate, appended to ``out``. The weighted KM curves carry the pair's verdict
    like the HR."""
    from ketaoutcomes.models.propensity import fit_propensity, love_plot_data
    from ketaoutcomes.models.weighted import weighted_cox, weighted_kaplan_meier

    covs = [COVARIATE_COLUMNS[c] for c in study.covariates]
    if study.strata:  # site moves arm choice: a confounder for the propensity model
        covs.append(COVARIATE_COLUMNS[study.strata])
    categorical = [c for c in covs if c in CATEGORICAL]
    for target in arms:
        pair = frame.filter(pl.col("ARM").is_in([target, study.reference_arm]))
        ps = fit_propensity(pair, target=target, comparator=study.reference_arm, covariates=covs,
                            categorical=categorical, weighting=study.weighting, truncation=study.ps_truncation,
                            max_smd=study.max_smd, min_equipoise=study.min_equipoise,
                            equipoise_bounds=study.equipoise_bounds, balance_alpha=study.balance_alpha,
                            **_matching_options(study))
        reasons = list(ps.gate_reasons)
        summary = None
        keep = ["USUBJID", "weight"] + (["match_set"] if "match_set" in ps.scores.columns else [])
        weighted = pair.join(ps.scores.select(keep), on="USUBJID", how="inner").filter(
            pl.col("weight").is_not_null() & pl.col("weight").is_finite())
        km = None
        if weighted["ARM"].n_unique() == 2:
            try:
                # matched pairs: robust variance clustered on the matched set (Austin 2013)
                res = weighted_cox(weighted, time="AVAL", event="EVENT", covariates=["ARM"],
                                   categorical={"ARM": study.reference_arm}, weights="weight", alpha=study.alpha,
                                   cluster="match_set" if "match_set" in keep else None)
                summary = res.summary.filter(pl.col("term") == f"ARM[{target}]")
                if not res.converged:
                    reasons.append("weighted Cox model did not converge")
            except Exception as exc:  # noqa: BLE001 - a model that cannot be fitted is a failed diagnostic
                reasons.append(f"weighted Cox model could not be fitted: {type(exc).__name__}: {exc}")
            try:
                km = weighted_kaplan_meier(weighted, time="AVAL", event="EVENT", weights="weight", group="ARM",
                                           alpha=study.alpha)
            except Exception as exc:  # noqa: BLE001 - reported with the pair, never silently missing
                out.notes.append(f"{paramcd}: weighted Kaplan-Meier of {target} vs {study.reference_arm} could not "
                                 f"be computed: {type(exc).__name__}: {exc}")
        else:
            reasons.append("no weighted patients on one of the two arms")
        passed = ps.diagnostics_passed and not [r for r in reasons if r not in ps.gate_reasons] and summary is not None
        verdict = "pass" if passed else "fail"
        gate = [pl.lit(paramcd).alias("paramcd"), pl.lit(verdict).alias("diagnostics"),
                pl.lit("; ".join(reasons) or None, dtype=pl.String).alias("gate_reasons")]
        if summary is not None and summary.height:
            out.cox.append(summary.with_columns(*gate, pl.lit(study.weighting).alias("model")))
        if km is not None:
            pair_cols = [pl.lit(target).alias("target"), pl.lit(study.weighting).alias("weighting")]
            out.km.append(km.table.with_columns(*gate, *pair_cols))
            out.km_median.append(km.medians.with_columns(*gate, *pair_cols))
        out.ps.append({
            "paramcd": paramcd, "target": target, "comparator": study.reference_arm, "weighting": ps.weighting,
            "truncation": ps.truncation, "n_target": ps.n_target, "n_comparator": ps.n_comparator,
            "n_dropped": ps.n_dropped, "n_truncated": ps.n_truncated, "ess_target": ps.ess_target,
            "ess_comparator": ps.ess_comparator, "equipoise": ps.equipoise,
            "max_abs_smd_after": ps.max_abs_smd_after, "converged": ps.converged, "diagnostics": verdict,
            "gate_reasons": "; ".join(reasons) or None, "notes": "; ".join(ps.notes) or None,
            "n_matched_target": getattr(ps, "n_matched_target", None),
            "n_matched_comparator": getattr(ps, "n_matched_comparator", None),
        })
        out.balance.append(love_plot_data([ps]).with_columns(pl.lit(paramcd).alias("paramcd")))
        out.preference.append(preference_histogram(ps.scores).with_columns(
            pl.lit(paramcd).alias("paramcd"), pl.lit(target).alias("target")))
        matched = getattr(ps, "n_matched_target", 0)
        if study.weighting == "matching" and ps.n_target and matched < MATCHED_SHARE_FOR_ATT * ps.n_target:
            out.notes.append(
                f"{paramcd}: only {matched:,} of {ps.n_target:,} {target} patients were matched (too few "
                f"{study.reference_arm} patients close enough): the matched HR describes the matched patients, "
                f"not everyone given {target}")
        if not passed:
            out.notes.append(f"{paramcd}: {target} vs {study.reference_arm} fails the diagnostics gate "
                             f"({'; '.join(reasons)}): its {study.weighting} HR is not a result to read")


#: Bins of the stored preference-score distributions (results_preference).
PREFERENCE_BINS = 20


def preference_histogram(scores: pl.DataFrame, bins: int = PREFERENCE_BINS) -> pl.DataFrame:
    """Counts of patients per preference-score bin and arm (equal bins over [0, 1]; the last is
    closed): the distributions behind equipoise, stored aggregated, never per patient."""
    edges = [i / bins for i in range(bins + 1)]
    b = scores.filter(pl.col("preference").is_not_null() & pl.col("preference").is_finite()).with_columns(
        (pl.col("preference") * bins).floor().clip(0, bins - 1).cast(pl.Int32).alias("bin"))
    grid = pl.DataFrame({"ARM": scores["ARM"].unique().sort()}).join(
        pl.DataFrame({"bin": list(range(bins))}, schema={"bin": pl.Int32}), how="cross")
    counts = b.group_by("ARM", "bin").len()
    return (grid.join(counts, on=["ARM", "bin"], how="left")
            .with_columns(pl.col("len").fill_null(0).cast(pl.Int64).alias("n"),
                          pl.col("bin").replace_strict(dict(enumerate(edges[:-1])), return_dtype=pl.Float64).alias("lower"),
                          pl.col("bin").replace_strict(dict(enumerate(edges[1:])), return_dtype=pl.Float64).alias("upper"))
            .select(pl.col("ARM").alias("arm"), "bin", "lower", "upper", "n").sort("arm", "bin"))


def _matching_options(study: StudySettings) -> dict:
    return {"caliper": study.caliper} if study.weighting == "matching" else {}


def _discrete_time(frame: pl.DataFrame, visits: pl.DataFrame, paramcd: str, study: StudySettings,
                   summaries: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """The interval-censored sensitivity analysis of the adjusted model: a grouped-time
    (cloglog) proportional hazards model on each patient's own assessment intervals, with
    site as fixed effects in place of strata and subject-clustered SEs. The event lies
    somewhere between the previous and the event visit; this model uses only that."""
    from ketaoutcomes.models.diagnostics import discrete_time_cox, discrete_time_data

    arms = {t[4:-1] for t in summaries["term"] if t.startswith("ARM[")} | {study.reference_arm}
    data = frame.filter(pl.col("ARM").is_in(sorted(arms)))
    covs = ["ARM", *(COVARIATE_COLUMNS[c] for c in study.covariates)]
    if study.strata:
        covs.append(COVARIATE_COLUMNS[study.strata])
    categorical = {"ARM": study.reference_arm}
    for c in covs:
        if c in CATEGORICAL:
            categorical[c] = _reference_level(data, c)
    try:
        pp = discrete_time_data(data, visits, time="AVAL", event="EVENT", visit_time="ADY",
                                band_width=float(study.discrete_band_days), keep=covs)
        res = discrete_time_cox(pp, covariates=covs, categorical=categorical, alpha=study.alpha)
    except Exception as exc:  # noqa: BLE001 - a sensitivity analysis that cannot run is reported
        return pl.DataFrame(), [f"{paramcd}: the discrete-time sensitivity analysis could not be fitted: "
                                f"{type(exc).__name__}: {str(exc)[:200]}"]
    out = res.summary.with_columns(
        pl.lit(paramcd).alias("paramcd"), pl.lit(res.n_rows).alias("n_intervals"),
        pl.lit(res.n_subjects).alias("n_subjects"), pl.lit(res.n_events).alias("n_events"),
        pl.lit(study.discrete_band_days).alias("band_days"),
        pl.lit("; ".join(res.notes) or None, dtype=pl.String).alias("notes"))
    return out, []


def analyze(adsl: pl.DataFrame, adtte: pl.DataFrame, *, study: StudySettings, weighted: bool = True,
            visits: pl.DataFrame | None = None) -> AnalysisResult:
    """KM, log-rank and Cox models for every endpoint present in ``adtte``; with ``weighted``, also the
    propensity-weighted comparison of each route with the reference arm and its diagnostics; with
    ``visits`` (USUBJID, ADY: assessment days after the first dose), the discrete-time sensitivity
    analysis of time to response and remission."""
    km, med, lr, cox, fits, notes, ph, rmst, disc = [], [], [], [], [], [], [], [], []
    w = _Weighted()
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
        if s and visits is not None and paramcd in DISCRETE_ENDPOINTS:
            d, n = _discrete_time(frame, visits, paramcd, study, pl.concat(s))
            if d.height:
                disc.append(d)
            notes += n
        if s and weighted:  # the regression models ran: the reference arm and at least one route are estimable
            estimable = sorted({t[4:-1] for t in pl.concat(s)["term"] if t.startswith("ARM[")})
            _ps_weighted(frame, paramcd, study, estimable, w)
    return AnalysisResult(
        km=_stack(km),
        km_median=_stack(med),
        logrank=_stack(lr),
        cox=_stack(cox + w.cox),
        cox_fit=pl.DataFrame(fits) if fits else pl.DataFrame(),
        notes=tuple(notes + w.notes),
        ps=pl.DataFrame(w.ps) if w.ps else pl.DataFrame(),
        balance=_stack(w.balance),
        ph=_stack(ph),
        rmst=_stack(rmst),
        km_weighted=_stack(w.km),
        km_weighted_median=_stack(w.km_median),
        discrete=_stack(disc),
        preference=_stack(w.preference),
    )


def _stack(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


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


#: Competing-event codes of the relapse analysis (status column of the cumulative incidence).
RELAPSE_STATES = {1: "relapse", 2: "stopped: switch, new treatment or dropout"}
#: Course end reasons that make a responder's censoring a dropout (a competing event).
DROPOUT_REASONS = ("lost_to_follow_up", "adverse_event")


def relapse_status(rel: pl.DataFrame) -> pl.Expr:
    """Status of a TTRELAPS row for the competing-risks analysis: 1 confirmed relapse (CNSR 0),
    2 follow-up stopped by a switch / new antidepressant / new course (CNSR 2) or by dropout
    (censored at the last rating of a course that ended lost to follow-up or for an adverse
    event), 0 censored otherwise (still followed at the export, or time at risk ended)."""
    return (
        pl.when(pl.col("CNSR") == 0).then(1)
        .when(pl.col("CNSR") == 2).then(2)
        .when(pl.col("CNSR").is_in([1, 4]) & pl.col("DCREAS").is_in(DROPOUT_REASONS)).then(2)
        .otherwise(0).cast(pl.Int64)
    )


def relapse_analyses(adsl: pl.DataFrame, adtte: pl.DataFrame, sessions: pl.DataFrame, *, study: StudySettings
                     ) -> tuple[dict[str, pl.DataFrame], list[str]]:
    """Relapse among responders done properly (TTRELAPS):

    * a Cox model with maintenance as a **time-varying** exposure on counting-process rows
      (:mod:`ketaoutcomes.derive.maintenance`), adjusted for arm and the study covariates and
      stratified as the primary model: the HR of being on maintenance vs not, at the same time
      since response;
    * **cumulative incidence** of relapse per arm with stopping (switch, new treatment or
      dropout) as a competing event (Aalen-Johansen), where 1 - KM would overstate relapse by
      treating those who stopped as if they could still relapse.

    Returns result frames keyed by warehouse table name, and notes.
    """
    from ketaoutcomes.derive.maintenance import relapse_counting_process

    out: dict[str, pl.DataFrame] = {}
    notes: list[str] = []
    if "TTRELAPS" not in study.endpoints:
        return out, notes
    covs = [COVARIATE_COLUMNS[c] for c in study.covariates]
    strata = COVARIATE_COLUMNS[study.strata] if study.strata else None
    rel = (adtte.filter(pl.col("PARAMCD") == "TTRELAPS").select("USUBJID", "COURSEID", "ARM", "STARTDT", "AVAL", "CNSR")
           .join(adsl.select("USUBJID", "DCREAS", *covs, *([strata] if strata else [])), on="USUBJID", how="left"))
    if rel.is_empty():
        return out, ["relapse: no responders; no relapse analyses"]

    # --- maintenance as a time-varying exposure
    rows, n = relapse_counting_process(rel, sessions, exposure_days=study.maintenance_exposure_days)
    notes += n
    events = dict(rows.group_by("ARM").agg(pl.col("EVENT").sum()).iter_rows())
    too_few = sorted(a for a, e in events.items() if e < study.min_events_per_arm)
    data = rows.filter(~pl.col("ARM").is_in(too_few))
    if too_few:
        notes.append(f"relapse (maintenance model): arm(s) {', '.join(too_few)} left out: fewer than "
                     f"{study.min_events_per_arm} relapses")
    if data["EVENT"].sum() >= study.min_events_per_arm and data["MAINT"].n_unique() == 2:
        arms = data["ARM"].unique().to_list()
        model_covs = (["ARM"] if len(arms) > 1 else []) + ["MAINT", *covs]
        categorical = {"ARM": study.reference_arm if study.reference_arm in arms else _reference_level(data, "ARM")}
        for c in model_covs:
            if c in CATEGORICAL:
                categorical[c] = _reference_level(data, c)
        res = cox_ph(data, time="TSTOP", entry="TSTART", event="EVENT", covariates=model_covs,
                     categorical={k: v for k, v in categorical.items() if k in model_covs}, strata=strata,
                     ties="efron", alpha=study.alpha)
        exposed = data.group_by("MAINT").agg((pl.col("TSTOP") - pl.col("TSTART")).sum().alias("days"),
                                             pl.col("EVENT").sum().alias("events"))
        d = {m: (t, e) for m, t, e in exposed.iter_rows()}
        out["results_relapse_maintenance"] = res.summary.with_columns(
            pl.lit(res.n).alias("n_intervals"), pl.lit(data["USUBJID"].n_unique()).alias("n_patients"),
            pl.lit(res.n_events).alias("n_events"), pl.lit(res.converged).alias("converged"),
            pl.lit(d.get(1, (0, 0))[0]).cast(pl.Float64).alias("days_on_maintenance"),
            pl.lit(d.get(1, (0, 0))[1]).cast(pl.Int64).alias("relapses_on_maintenance"),
            pl.lit(d.get(0, (0, 0))[0]).cast(pl.Float64).alias("days_off_maintenance"),
            pl.lit(d.get(0, (0, 0))[1]).cast(pl.Int64).alias("relapses_off_maintenance"),
            pl.lit(study.maintenance_exposure_days).alias("exposure_days"),
            pl.lit("; ".join(res.notes) or None, dtype=pl.String).alias("notes"))
    else:
        notes.append("relapse (maintenance model): too few relapses, or nobody (or everybody) on maintenance; "
                     "not fitted")

    # --- cumulative incidence with stopping as a competing event
    from ketaoutcomes.models.competing import cumulative_incidence, gray_test

    cr = rel.with_columns(relapse_status(rel).alias("STATUS"))
    cif = cumulative_incidence(cr, time="AVAL", status="STATUS", group="ARM", causes=RELAPSE_STATES, alpha=study.alpha)
    out["results_relapse_cif"] = cif.table
    out["results_relapse_cif_at"] = cif.at(sorted({28, 56, 84, 182, study.rmst_horizon_days}))
    gray = []
    arms = sorted(cr["ARM"].unique().to_list())
    pairs = [("all arms", arms)] + [(f"{a} vs {study.reference_arm}", [a, study.reference_arm])
                                    for a in arms if a != study.reference_arm and study.reference_arm in arms]
    for label, group in pairs:
        sub = cr.filter(pl.col("ARM").is_in(group))
        present = set(sub["STATUS"].unique().to_list())
        for code, state in RELAPSE_STATES.items():
            if code not in present:
                gray.append({"comparison": label, "cause": state, "chi2": None, "df": None, "p_value": None,
                             "error": "no events of this kind: nothing to compare"})
                continue
            try:
                g = gray_test(sub, "AVAL", "STATUS", "ARM", code)
                gray.append({"comparison": label, "cause": state, "chi2": g.chi2, "df": g.df, "p_value": g.p_value,
                             "error": None})
            except Exception as exc:  # noqa: BLE001 - a test that cannot run is reported, never passed
                gray.append({"comparison": label, "cause": state, "chi2": None, "df": None, "p_value": None,
                             "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    if len(arms) >= 2:
        out["results_relapse_gray"] = pl.DataFrame(gray, schema={"comparison": pl.String, "cause": pl.String,
                                                                 "chi2": pl.Float64, "df": pl.Int64,
                                                                 "p_value": pl.Float64, "error": pl.String})
    counts = cr.group_by("ARM", "STATUS").len()
    out["results_relapse_states"] = counts.with_columns(
        pl.col("STATUS").replace_strict({0: "censored", **RELAPSE_STATES}, return_dtype=pl.String).alias("state"))
    notes += [f"relapse (cumulative incidence): {n}" for n in cif.notes]
    return out, notes


def modifier_analyses(adsl: pl.DataFrame, adtte: pl.DataFrame, sessions: pl.DataFrame, courses: pl.DataFrame, *,
                      study: StudySettings, ketamine_arms: list[str]) -> tuple[dict[str, pl.DataFrame], list[str]]:
    """The documented secondary model of effect modifiers of time to response
    (:mod:`ketaoutcomes.models.modifiers`): route x sex / benzodiazepine / age interaction tests
    with subgroup HRs, and dose, concomitant SSRI or benzodiazepine, age and sex within ketamine
    routes. Exploratory: p-values are not adjusted for multiplicity."""
    from ketaoutcomes.models.modifiers import course_dose, effect_modifiers

    if "TTRESP" not in study.endpoints:
        return {}, []
    frame = _model_frame(adsl, adtte, "TTRESP")
    arms = [a for a in ketamine_arms if a in set(frame["ARM"].unique().to_list()) and a != study.reference_arm]
    if frame.is_empty() or not arms or study.reference_arm not in frame["ARM"].unique().to_list():
        return {}, ["effect modifiers: no ketamine route or no reference arm among the analysed courses; not fitted"]
    frame = frame.join(course_dose(sessions, courses.select("course_id", "arm")), on="COURSEID", how="left")
    adjust = [COVARIATE_COLUMNS[c] for c in study.covariates if c in ("baseline_score", "prior_failed_trials")]
    strata = COVARIATE_COLUMNS[study.strata] if study.strata else None
    res = effect_modifiers(frame, reference_arm=study.reference_arm, ketamine_arms=arms, strata=strata,
                           adjust=adjust, alpha=study.alpha, min_events=study.min_events_per_arm)
    out = {"results_modifiers_subgroups": res.subgroups, "results_modifiers_interactions": res.interactions,
           "results_modifiers_ketamine": res.within_ketamine}
    return out, [f"effect modifiers: {n}" for n in res.notes]
