"""The main analysis step: for each endpoint of the study, the models its registry entry lists
(:mod:`ketaoutcomes.endpoints`) (pure).

* Kaplan-Meier per arm with 95% CIs and the median time with its CI; the restricted mean time
  without the event up to the horizon; a log-rank test across arms;
* two Cox models (Efron ties, as R's ``coxph``) with the study's reference arm, each term with
  its variable, level and arm as columns:

  - ``adjusted``: arm + the study covariates, stratified by the study strata (site by default): a
    conditional HR, the sensitivity analysis beside the propensity-score estimate;
  - ``naive``: arm only, no strata, shown so a reader sees how much confounding by indication
    moves the estimate; never read it alone;

* the proportional-hazards test of the adjusted model (R's ``cox.zph``) and, for endpoints timed
  on the assessment grid, the discrete-time (interval-censored) sensitivity analysis;
* the primary comparison (:mod:`ketaoutcomes.analysis.propensity`): for each route vs the
  reference arm, a propensity-score model, weights (IPTW, overlap) or 1:1 matches, the weighted
  Cox model and Kaplan-Meier curves, the balance and equipoise diagnostics and the gate's verdict:
  an estimate whose diagnostics fail, or cannot be computed, is stored with
  ``diagnostics = 'fail'`` and its reasons, and the report withholds it;
* for endpoints that list ``contrasts`` (time to response), the differences route - reference
  read off the weighted curves (share with the event by fixed days, median, restricted mean),
  with person-level bootstrap intervals (:mod:`ketaoutcomes.analysis.contrasts`), and the
  E-values of the risk ratios and the weighted HR (:mod:`ketaoutcomes.analysis.evalues`).

The work is split into units, pure functions of frames that can run anywhere:
:func:`endpoint_models` (one endpoint's models) and :func:`route_comparison` (one route's
propensity-score comparison and contrasts); :func:`analyze` submits them and puts their results
together in a fixed order (docs/scaling.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ketaoutcomes.analysis.ate import ATE_RESULT_SCHEMA, adjusted_contrasts
from ketaoutcomes.analysis.common import (
    HandedOver,
    ModelTerms,
    StepResult,
    Submit,
    arms_of,
    categorical_references,
    model_frame,
    run_now,
    stack,
    with_terms,
)
from ketaoutcomes.analysis.contrasts import CONTRAST_SCHEMA, RATIO_MEASURE, primary_contrasts
from ketaoutcomes.analysis.evalues import evalue_table
from ketaoutcomes.analysis.propensity import WeightedComparisons, levels_left_out_note, ps_pair
from ketaoutcomes.endpoints import ENDPOINTS
from ketaoutcomes.models.cox import cox_ph
from ketaoutcomes.models.km import kaplan_meier
from ketaoutcomes.models.logrank import logrank_test
from ketaoutcomes.models.weighted import restricted_mean
from ketaoutcomes.notes import Note
from ketaoutcomes.settings import StudySettings

__all__ = ["EndpointModels", "RouteComparison", "analyze", "endpoint_models", "route_comparison"]


def _cox_models(frame: pl.DataFrame, paramcd: str, study: StudySettings
                ) -> tuple[list[pl.DataFrame], list[dict], list[Note]]:
    def note(text: str, arms: tuple[str, ...] = ()) -> Note:
        return Note(text, step="models", endpoint=paramcd, arms=arms, severity="warning")

    notes: list[Note] = []
    events_by_arm = dict(frame.group_by("ARM").agg(pl.col("EVENT").sum()).iter_rows())
    ref = study.cohort.reference_arm
    if ref not in events_by_arm:
        return [], [], [note(f"reference arm {ref!r} has no courses; no hazard ratios", (ref,))]
    too_few = sorted(a for a, e in events_by_arm.items() if e < study.models.min_events_per_arm)
    if ref in too_few:
        return [], [], [note(f"reference arm {ref!r} has {events_by_arm[ref]} events "
                             f"(< {study.models.min_events_per_arm}); no hazard ratios", (ref,))]
    if too_few:
        notes.append(note(f"arm(s) {', '.join(too_few)} left out of the Cox models: fewer than "
                          f"{study.models.min_events_per_arm} events (not estimable)", tuple(too_few)))
    data = frame.filter(~pl.col("ARM").is_in(too_few))
    if data["ARM"].n_unique() < 2:
        return [], [], notes + [note("fewer than two arms with enough events; no hazard ratios")]
    terms = ModelTerms.of(study)
    specs = {
        "adjusted": dict(covariates=["ARM", *terms.covariates], strata=terms.strata),
        "naive": dict(covariates=["ARM"], strata=None),
    }
    summaries, fits = [], []
    for model, spec in specs.items():
        categorical = categorical_references(data, spec["covariates"], arm_reference=study.cohort.reference_arm)
        res = cox_ph(
            data, time="AVAL", event="EVENT", covariates=spec["covariates"], categorical=categorical,
            strata=spec["strata"], ties="efron", alpha=study.models.alpha,
        )
        summaries.append(with_terms(res.summary, res.term_table()).with_columns(
            pl.lit(paramcd).alias("paramcd"), pl.lit(model).alias("model")))
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

    terms = ModelTerms.of(study)
    arms = arms_of(summaries) | {study.cohort.reference_arm}
    data = frame.filter(pl.col("ARM").is_in(sorted(arms)))
    covs = ["ARM", *terms.covariates]
    categorical = categorical_references(data, covs, arm_reference=study.cohort.reference_arm)
    strata = terms.strata
    try:
        out = ph_test(data, time="AVAL", event="EVENT", covariates=covs, categorical=categorical, strata=strata)
        return out.with_columns(pl.lit(paramcd).alias("paramcd"), pl.lit(None, dtype=pl.String).alias("error"))
    except Exception as exc:  # noqa: BLE001 - a check that cannot run is reported, never passed
        return pl.DataFrame({"term": ["GLOBAL"], "chi2": [None], "df": [None], "p_value": [None],
                             "note": ["the proportional-hazards test could not be computed"], "paramcd": [paramcd],
                             "error": [f"{type(exc).__name__}: {str(exc)[:200]}"]},
                            schema_overrides={"chi2": pl.Float64, "df": pl.Int64, "p_value": pl.Float64})


def _discrete_time(frame: pl.DataFrame, visits: pl.DataFrame, paramcd: str, study: StudySettings,
                   summaries: pl.DataFrame) -> tuple[pl.DataFrame, list[Note]]:
    """The interval-censored sensitivity analysis of the adjusted model: a grouped-time
    (cloglog) proportional hazards model on each patient's own assessment intervals, with
    site as fixed effects in place of strata and subject-clustered SEs. The event lies
    somewhere between the previous and the event visit; this model uses only that."""
    from ketaoutcomes.models.diagnostics import discrete_time_cox, discrete_time_data

    arms = arms_of(summaries) | {study.cohort.reference_arm}
    data = frame.filter(pl.col("ARM").is_in(sorted(arms)))
    covs = ["ARM", *ModelTerms.of(study).with_strata]  # site as fixed effects in place of strata
    categorical = categorical_references(data, covs, arm_reference=study.cohort.reference_arm)
    # the person-period rows carry an integer subject index, not the id and the covariates (read per
    # subject from ``data``): at a million patients they are some 10 million rows
    data = data.with_row_index("_sid")
    visits = visits.join(data.select("USUBJID", "_sid"), on="USUBJID", how="inner").select("_sid", "ADY")
    try:
        pp = discrete_time_data(data, visits, id_col="_sid", time="AVAL", event="EVENT", visit_time="ADY",
                                band_width=float(study.models.discrete_band_days))
        res = discrete_time_cox(pp, covariates=covs, categorical=categorical, id_col="_sid",
                                subjects=data.select("_sid", *covs), alpha=study.models.alpha)
    except Exception as exc:  # noqa: BLE001 - a sensitivity analysis that cannot run is reported
        return pl.DataFrame(), [Note(f"the discrete-time sensitivity analysis could not be fitted: "
                                     f"{type(exc).__name__}: {str(exc)[:200]}", step="models", endpoint=paramcd,
                                     severity="warning")]
    out = with_terms(res.summary, res.terms).with_columns(
        pl.lit(paramcd).alias("paramcd"), pl.lit(res.n_rows).alias("n_intervals"),
        pl.lit(res.n_subjects).alias("n_subjects"), pl.lit(res.n_events).alias("n_events"),
        pl.lit(study.models.discrete_band_days).alias("band_days"),
        pl.lit("; ".join(res.notes) or None, dtype=pl.String).alias("notes"))
    return out, []


@dataclass(frozen=True)
class EndpointModels:
    """What one endpoint's models give (a unit of the analysis fan-out: :func:`endpoint_models`):
    each result table's frames (or Cox fit rows), the notes, and ``routes``: the routes to compare
    with the reference arm by propensity score (the arms its regression models could estimate), None
    when no propensity-score comparison runs on this endpoint."""

    km: list[pl.DataFrame]
    km_median: list[pl.DataFrame]
    rmst: list[pl.DataFrame]
    logrank: list[pl.DataFrame]
    cox: list[pl.DataFrame]
    cox_fit: list[dict]
    ph: list[pl.DataFrame]
    discrete: list[pl.DataFrame]
    notes: list[Note]
    routes: tuple[str, ...] | None


def endpoint_models(frame: pl.DataFrame, paramcd: str, study: StudySettings, visits: pl.DataFrame | None,
                    weighted: bool) -> EndpointModels:
    """The models of one endpoint on its non-empty model ``frame`` (:func:`model_frame`) that its
    registry entry lists, but the propensity-score comparisons (:func:`route_comparison`): KM,
    log-rank, Cox models, PH test, restricted mean time and, with ``visits``, the discrete-time
    sensitivity analysis. Pure: a unit of work that runs anywhere (``analyze``'s ``submit``)."""
    ep = ENDPOINTS[paramcd]
    km, med, rmst, lr, ph, disc = [], [], [], [], [], []
    if ep.runs("km") or ep.runs("rmst"):
        k = kaplan_meier(frame, time="AVAL", event="EVENT", group="ARM", alpha=study.models.alpha)
        if ep.runs("km"):
            km.append(k.table.with_columns(pl.lit(paramcd).alias("paramcd")))
            med.append(k.medians.with_columns(pl.lit(paramcd).alias("paramcd")))
        if ep.runs("rmst"):
            rmst.append(restricted_mean(k, horizon=study.models.rmst_horizon_days)
                        .with_columns(pl.lit(paramcd).alias("paramcd")))
    if ep.runs("logrank") and frame["ARM"].n_unique() >= 2:
        t = logrank_test(frame, time="AVAL", event="EVENT", group="ARM")
        lr.append(pl.DataFrame({
            "paramcd": [paramcd], "chi2": [t.chi2], "df": [t.df], "p_value": [t.p_value],
            "groups": [t.groups.write_json()],
        }))
    s, fits, notes = _cox_models(frame, paramcd, study) if ep.runs("cox") else ([], [], [])
    if s and ep.runs("ph"):
        ph.append(_ph_check(frame, paramcd, study, pl.concat(s)))
    if s and visits is not None and ep.runs("discrete"):
        d, n = _discrete_time(frame, visits, paramcd, study, pl.concat(s))
        if d.height:
            disc.append(d)
        notes += n
    # the regression models ran: the reference arm and a route are estimable
    routes = tuple(sorted(arms_of(pl.concat(s)))) if s and weighted and ep.runs("ps") else None
    return EndpointModels(km, med, rmst, lr, s, fits, ph, disc, notes, routes)


@dataclass(frozen=True)
class RouteComparison:
    """The propensity-score comparison of one route vs the reference arm on one endpoint (a unit of
    the analysis fan-out: :func:`route_comparison`): its weighted results, the covariate levels its
    propensity model left out, and for endpoints with ``contrasts`` the primary contrasts (bootstrap
    intervals included) and their notes, and the adjusted curves (rows of ``results_ate``) and theirs."""

    target: str
    weighted: WeightedComparisons
    levels_left_out: str | None
    contrasts: pl.DataFrame | None
    notes: list[Note]
    adjusted: pl.DataFrame | None = None
    adjusted_notes: tuple[Note, ...] = ()


def route_comparison(frame: pl.DataFrame, paramcd: str, study: StudySettings, target: str,
                     bootstrap_all: bool) -> RouteComparison:
    """Route ``target`` vs the reference arm on one endpoint's model ``frame``: the propensity-score
    comparison (:func:`~ketaoutcomes.analysis.propensity.ps_pair`) and, where the endpoint lists
    ``contrasts``, the primary contrasts with their seeded bootstrap
    (:func:`~ketaoutcomes.analysis.contrasts.primary_contrasts`: its draws depend on the study seed,
    the endpoint and the route only, so not on where or in which order the units run) and the
    adjusted curves (:func:`~ketaoutcomes.analysis.ate.adjusted_contrasts`, on the days and horizon of
    those contrasts, with the pair's verdict). Pure."""
    w = WeightedComparisons()
    left = ps_pair(frame, paramcd, study, target, w)
    contrasts, notes, adjusted, adjusted_notes = None, [], None, []
    if ENDPOINTS[paramcd].runs("contrasts"):
        verdict = (w.ps[-1]["diagnostics"], w.ps[-1]["gate_reasons"])  # ps_pair adds one row: this pair's
        contrasts, notes = primary_contrasts(frame, paramcd, study, [target], {target: verdict},
                                             bootstrap_all=bootstrap_all)
        adjusted, adjusted_notes = adjusted_contrasts(frame, paramcd, study, [target], {target: verdict}, contrasts)
    return RouteComparison(target, w, left, contrasts, notes, adjusted, tuple(adjusted_notes))


def analyze(adsl: pl.DataFrame, adtte: pl.DataFrame, *, study: StudySettings, weighted: bool = True,
            visits: pl.DataFrame | None = None, bootstrap_all: bool = False, submit: Submit = run_now) -> StepResult:
    """For each endpoint of the study, the analyses its registry entry lists
    (:mod:`ketaoutcomes.endpoints`): KM, log-rank, Cox models, PH test, restricted mean time; with
    ``weighted``, the propensity-score comparison of each route with the reference arm and its
    diagnostics; with ``visits`` (USUBJID, ADY: assessment days after the first dose), the
    discrete-time sensitivity analysis. The primary contrasts get bootstrap intervals for the pairs
    that pass the diagnostics gate, or with ``bootstrap_all`` for every pair (the simulation study).

    The work is split into units, each a pure function of frames: :func:`endpoint_models` per
    endpoint, then :func:`route_comparison` per endpoint and route it found estimable. ``submit``
    runs a unit (default :func:`~ketaoutcomes.analysis.common.run_now`: here, at once; the Dask
    fan-out of ``flows/dask_fanout.py`` submits it as a Prefect task to a Dask cluster); the results
    are put together here in endpoint and route order, so the tables are the same, row for row,
    however the units ran."""
    return analyze_handed_over(HandedOver(adsl=adsl, adtte=adtte, visits=visits), study=study, weighted=weighted,
                               bootstrap_all=bootstrap_all, submit=submit)


def analyze_handed_over(inputs: HandedOver, *, study: StudySettings, weighted: bool = True,
                        bootstrap_all: bool = False, submit: Submit = run_now) -> StepResult:
    """:func:`analyze` of ``inputs`` (``adsl``, ``adtte``, and ``visits`` or None), which it owns: it
    takes ``adsl`` and ``adtte`` out once it has each endpoint's model frame (the few columns the
    units read), and ``visits`` once the endpoint units are submitted. While the units run, the
    caller's process then holds only those model frames (at a million patients the analysis datasets
    are some 0.7 GB: held to the end, they kept the analysing process near 2 GB while its Dask workers
    did the work; docs/scaling.md). A caller that hands over its only references frees them then."""
    endpoints = [c for c in ENDPOINTS if c in study.outcomes.endpoints]  # registry order
    # the columns the units read (frames held for the whole analysis, and sent to each unit on Dask)
    columns = list(dict.fromkeys(["USUBJID", "ARM", "AVAL", "EVENT", *ModelTerms.of(study).with_strata]))
    frames = {paramcd: model_frame(inputs["adsl"], inputs["adtte"], paramcd, columns) for paramcd in endpoints}
    del inputs["adsl"], inputs["adtte"]
    visits = inputs.pop("visits", None)
    models = {paramcd: submit(endpoint_models, frame=frame, paramcd=paramcd, study=study,
                              visits=visits if ENDPOINTS[paramcd].runs("discrete") else None, weighted=weighted)
              for paramcd, frame in frames.items() if not frame.is_empty()}
    del visits
    routes = {paramcd: [submit(route_comparison, frame=frames[paramcd], paramcd=paramcd, study=study, target=target,
                               bootstrap_all=bootstrap_all) for target in (m.result().routes or ())]
              for paramcd, m in models.items()}
    km, med, lr, cox, fits, notes, ph, rmst, disc, contrasts, evalues = [], [], [], [], [], [], [], [], [], [], []
    adjusted: list[pl.DataFrame] = []
    w = WeightedComparisons()
    for paramcd in endpoints:
        if paramcd not in models:
            notes.append(Note("no rows; nothing to estimate", step="models", endpoint=paramcd, severity="warning"))
            continue
        m = models[paramcd].result()
        km += m.km
        med += m.km_median
        rmst += m.rmst
        lr += m.logrank
        cox += m.cox
        fits += m.cox_fit
        ph += m.ph
        disc += m.discrete
        notes += m.notes
        if m.routes is None:
            continue
        pairs = [r.result() for r in routes[paramcd]]
        n_cox, n_km = len(w.cox), len(w.km)
        for r in pairs:
            w.extend(r.weighted)
        if note := levels_left_out_note(paramcd, study, [(r.target, r.levels_left_out) for r in pairs
                                                         if r.levels_left_out]):
            w.notes.append(note)
        if ENDPOINTS[paramcd].runs("contrasts"):
            c = pl.concat([r.contrasts for r in pairs]) if pairs else pl.DataFrame(schema=CONTRAST_SCHEMA)
            ratio = pl.col("measure") == RATIO_MEASURE
            contrasts.append(c.filter(~ratio))
            evalues.append(evalue_table(c.filter(ratio), stack(w.cox[n_cox:]), stack(w.km[n_km:]), paramcd,
                                        study.cohort.reference_arm, study.propensity.weighting))
            notes += [n for r in pairs for n in r.notes]
            # the adjusted curves (g-formula, IPTW, AIPTW) of every route, from its unit
            adjusted.append(pl.concat([r.adjusted for r in pairs]) if pairs
                            else pl.DataFrame(schema=ATE_RESULT_SCHEMA))
            notes += [n for r in pairs for n in r.adjusted_notes]
    return StepResult({
        "results_km": stack(km),
        "results_km_median": stack(med),
        "results_logrank": stack(lr),
        "results_cox": stack(cox + w.cox),
        "results_cox_fit": pl.DataFrame(fits) if fits else pl.DataFrame(),
        "results_ps": pl.DataFrame(w.ps) if w.ps else pl.DataFrame(),  # per endpoint and route: diagnostics, gate
        "results_balance": stack(w.balance),  # SMD of every covariate before and after weighting
        "results_ph": stack(ph),  # proportional-hazards test of the adjusted model
        "results_rmst": stack(rmst),  # restricted mean time without the event, per arm
        "results_km_weighted": stack(w.km),  # weighted KM per route pair, with the gate
        "results_km_weighted_median": stack(w.km_median),
        "results_discrete": stack(disc),  # interval-censored sensitivity analysis
        "results_preference": stack(w.preference),  # preference-score distributions per pair
        "results_contrasts": stack(contrasts),  # primary contrasts route - reference, bootstrap CIs
        "results_evalues": stack(evalues),  # E-values of the risk ratios and the weighted HR
        "results_ate": stack(adjusted),  # adjusted curves: g-formula, IPTW, AIPTW (analysis.ate)
    }, tuple(notes + w.notes))
