"""What the pipeline's hazard ratios should recover on a synthetic cohort.

The generator's response model is proportional hazards in *latent* time with
conditional log-HRs stated in truth.json. An analysis never sees latent time:
response is seen at the first rating after it, and the arms are rated on
different grids (ketamine at every session, every few days; SSRIs every two
weeks). The Cox model on visit dates therefore targets a different number than
the latent HR (with the default grids, about 40% higher for ketamine vs SSRI).

The estimand an analysis of the observed data targets is found here by
simulation (endpoints.md): every patient of the cohort is simulated under each
arm with the same latent uniforms (common random numbers, ``force_arm``), so
arm is independent of the covariates, and the pipeline's own derivation and
models are fitted to the pooled counterfactual cohort:

* ``adjusted``: the conditional HR (given age, sex, baseline, prior failures,
  site strata) on the observed visit grid: what the adjusted Cox model on the
  confounded data should recover when adjustment works;
* ``naive``: the marginal HR on the observed visit grid: what an unconfounded
  (randomised) comparison would show. Hazard ratios are non-collapsible, so the
  two differ even without confounding.
* ``marginal_pair``: the marginal HR among the patients who were actually given
  the route or the reference arm (their counterfactual outcomes under both): the
  population a pairwise propensity-weighted (ATE) estimate describes. With strong
  covariate effects it differs from ``naive``, which is over all patients.
* ``marginal_treated``: the marginal HR among the patients who were actually given
  the route (their counterfactual outcomes under the route and under the
  reference arm): the population a matched estimate (every route patient matched,
  an ATT) describes. Overlap weights target the overlap population, which is not
  simulated here.

The intervals are the counterfactual fit's Wald intervals: a guide to the Monte
Carlo precision of the estimand (approximate: the same patients appear under
every arm, so the rows are not independent).

With ``with_curves``, the counterfactual Kaplan-Meier curves of each route and the
reference arm in the same two populations (``marginal_pair``, ``marginal_treated``)
are returned too (``curves``): the targets of the primary contrasts
(:mod:`ketaoutcomes.analysis.contrasts`: the share with the event by a day, the median,
the restricted mean up to a horizon), which :func:`contrast_truth` reads off them.
"""

from __future__ import annotations

import polars as pl

from ketaoutcomes.analysis import analyze
from ketaoutcomes.derive.cnsr import cnsr_to_event
from ketaoutcomes.models.cox import cox_ph
from ketaoutcomes.derive import derive_all
from ketaoutcomes.registries import Registries, load_registries
from ketaoutcomes.settings import SimulationSettings, StudySettings

__all__ = ["contrast_truth", "observed_grid_estimands", "MAX_PATIENTS"]

#: Patients used for the estimands (the first ones of the cohort: a smaller
#: cohort is the first patients of a larger one with the same seed).
MAX_PATIENTS = 20_000


def _arm_only_hrs(adtte: pl.DataFrame, target: str, study: StudySettings) -> dict[str, dict]:
    """The arm-only Cox HR of ``target`` vs the reference arm per endpoint (the analysis's naive
    model, without the rest of :func:`analyze`), where both arms have enough events."""
    out = {}
    for paramcd in adtte["PARAMCD"].unique().sort().to_list():
        frame = adtte.filter(pl.col("PARAMCD") == paramcd).with_columns(cnsr_to_event(pl.col("CNSR")).alias("EVENT"))
        events = dict(frame.group_by("ARM").agg(pl.col("EVENT").sum()).iter_rows())
        if min(events.get(target, 0), events.get(study.cohort.reference_arm, 0)) < study.models.min_events_per_arm:
            continue
        res = cox_ph(frame, time="AVAL", event="EVENT", covariates=["ARM"],
                     categorical={"ARM": study.cohort.reference_arm}, ties="efron", alpha=study.models.alpha)
        terms = res.term_table().filter((pl.col("variable") == "ARM") & (pl.col("level") == target))
        row = res.summary.join(terms, on="term", how="semi").row(0, named=True)
        if row["hr"] is not None:
            out[paramcd] = row
    return out


def _curves(adtte: pl.DataFrame, target: str, study: StudySettings) -> dict[str, dict]:
    """Per endpoint, the Kaplan-Meier curves (``time``, ``survival``) of ``target`` and of the
    reference arm in a counterfactual population."""
    from ketaoutcomes.models.km import kaplan_meier

    out = {}
    for paramcd in adtte["PARAMCD"].unique().sort().to_list():
        frame = adtte.filter(pl.col("PARAMCD") == paramcd).with_columns(cnsr_to_event(pl.col("CNSR")).alias("EVENT"))
        if set(frame["ARM"].unique()) != {target, study.cohort.reference_arm}:
            continue
        table = kaplan_meier(frame, time="AVAL", event="EVENT", group="ARM").table
        out[paramcd] = {role: {"time": g["time"].cast(pl.Float64).to_list(), "survival": g["survival"].to_list()}
                        for role, arm in (("target", target), ("comparator", study.cohort.reference_arm))
                        for g in [table.filter(pl.col("group") == arm)]}
    return out


def contrast_truth(curves: dict, measure: str, day: float | None) -> float:
    """The true contrast route - reference read off counterfactual curves (``curves["target"]``,
    ``curves["comparator"]``: ``time``, ``survival``), as the analysis reads it off the weighted ones:
    ``measure`` risk (share with the event by ``day``), median, or rmst (up to ``day``)."""
    import math

    from ketaoutcomes.models.contrasts import read_curve

    values = []
    for role in ("target", "comparator"):
        c = curves[role]
        r = read_curve(c["time"], c["survival"], days=[day or 1.0], horizon=day or 1.0)
        values.append(float(r["risk"][0]) if measure == "risk" else r[measure])
    a, b = values
    return math.nan if (math.isnan(a) or math.isnan(b)) else float(a - b)


def observed_grid_estimands(
    sim: SimulationSettings,
    *,
    study: StudySettings | None = None,
    registries: Registries | None = None,
    max_patients: int = MAX_PATIENTS,
    with_curves: bool = False,
) -> dict:
    """HRs per arm vs the reference arm on the observed visit grid, per endpoint and model.

    Returns a JSON-ready dict: ``{"method": ..., "n_patients": n, "TTRESP":
    {"adjusted": {arm: {"hr", "lower", "upper"}}, "naive": {...}}, ...}``.
    """
    from ketaoutcomes.simulate import simulate_frames
    from ketaoutcomes.simulate.params import GeneratorParameters

    study = study or StudySettings()
    registries = registries or load_registries()
    n = min(sim.n_patients, max_patients)
    sub = sim.model_copy(update={"n_patients": n})
    params = GeneratorParameters()
    factual = simulate_frames(sub)["courses"].sort("patient_id", "start_date", "course_id")
    assigned = factual.group_by("patient_id", maintain_order=True).agg(pl.col("arm").first())
    adsl, adtte = [], []
    for arm in params.arms:
        frames = simulate_frames(sub, force_arm=arm)
        d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                       registries=registries, study=study)
        tag = (pl.lit(f"{arm}:") + pl.col("USUBJID")).alias("USUBJID")
        adsl.append(d.adsl.with_columns(tag))
        adtte.append(d.adtte.with_columns(tag))
    result = analyze(pl.concat(adsl), pl.concat(adtte), study=study, weighted=False)
    out: dict = {
        "method": "every patient simulated under each arm with common random numbers; the pipeline's derivation "
                  "and Cox models (Efron ties) fitted to the pooled counterfactual cohort",
        "n_patients": n,
        "study_settings_id": study.settings_id,
        "interval_note": "Wald 95% interval of the counterfactual fit: approximate Monte Carlo precision",
    }
    # adjusted: the conditional target; naive on this randomised counterfactual cohort: the marginal
    # target (what the propensity-weighted estimate should recover)
    arms = result.table("results_cox").filter(pl.col("arm").is_not_null() & pl.col("model").is_in(["adjusted", "naive"]))
    for row in arms.iter_rows(named=True):
        arm = row["arm"]
        out.setdefault(row["paramcd"], {}).setdefault(row["model"], {})[arm] = {
            "hr": round(row["hr"], 6), "lower": round(row["hr_lower"], 6), "upper": round(row["hr_upper"], 6),
        }
    # the pair populations: counterfactual outcomes of the patients given the route or the reference
    pooled_adtte = pl.concat(adtte)
    origin = pl.col("USUBJID").str.split_exact(":", 1).struct.field("field_1").alias("_pid")
    for target in params.arms:
        if target == study.cohort.reference_arm:
            continue
        for estimand, given in (("marginal_pair", [target, study.cohort.reference_arm]), ("marginal_treated", [target])):
            pids = assigned.filter(pl.col("arm").is_in(given))["patient_id"].implode()
            keep = pl.col("_pid").is_in(pids) & pl.col("ARM").is_in([target, study.cohort.reference_arm])
            pt = pooled_adtte.with_columns(origin).filter(keep).drop("_pid")
            for paramcd, row in _arm_only_hrs(pt, target, study).items():
                out.setdefault(paramcd, {}).setdefault(estimand, {})[target] = {
                    "hr": round(row["hr"], 6), "lower": round(row["hr_lower"], 6), "upper": round(row["hr_upper"], 6),
                }
            if with_curves:
                for paramcd, curves in _curves(pt, target, study).items():
                    out.setdefault("curves", {}).setdefault(paramcd, {}).setdefault(estimand, {})[target] = curves
    if result.notes:
        out["notes"] = [str(n) for n in result.notes]
    return out
