"""Relapse among responders (TTRELAPS): maintenance as a time-varying exposure, and the
cumulative incidence of relapse with stopping as a competing event (pure)."""

from __future__ import annotations

import polars as pl

from ketaoutcomes.analysis.common import ModelTerms, StepResult, categorical_references, reference_level, with_terms
from ketaoutcomes.endpoints import ENDPOINTS
from ketaoutcomes.models.cox import cox_ph
from ketaoutcomes.notes import Note
from ketaoutcomes.settings import StudySettings

__all__ = ["DROPOUT_REASONS", "RELAPSE_STATES", "relapse_analyses", "relapse_status"]


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
                     ) -> StepResult:
    """Relapse among responders done properly (TTRELAPS):

    * a Cox model with maintenance as a **time-varying** exposure on counting-process rows
      (:mod:`ketaoutcomes.derive.maintenance`), adjusted for arm and the study covariates and
      stratified as the primary model: the HR of being on maintenance vs not, at the same time
      since response;
    * **cumulative incidence** of relapse per arm with stopping (switch, new treatment or
      dropout) as a competing event (Aalen-Johansen), where 1 - KM would overstate relapse by
      treating those who stopped as if they could still relapse.

    Runs when the study has TTRELAPS and the endpoint registry lists the relapse analyses for it.
    """
    from ketaoutcomes.derive.maintenance import relapse_counting_process

    out: dict[str, pl.DataFrame] = {}
    notes: list[Note] = []

    def note(text: str, severity: str = "warning", arms: tuple[str, ...] = ()) -> None:
        notes.append(Note(text, step="relapse", arms=arms, severity=severity))

    if "TTRELAPS" not in study.outcomes.endpoints or not ENDPOINTS["TTRELAPS"].runs("relapse"):
        return StepResult()
    terms = ModelTerms.of(study)
    covs, strata = list(terms.covariates), terms.strata
    rel = (adtte.filter(pl.col("PARAMCD") == "TTRELAPS").select("USUBJID", "COURSEID", "ARM", "STARTDT", "AVAL", "CNSR")
           .join(adsl.select("USUBJID", "DCREAS", *covs, *([strata] if strata else [])), on="USUBJID", how="left"))
    if rel.is_empty():
        note("relapse: no responders; no relapse analyses")
        return StepResult(out, tuple(notes))

    # --- maintenance as a time-varying exposure
    rows, n = relapse_counting_process(rel, sessions, exposure_days=study.relapse.maintenance_exposure_days)
    for text in n:
        note(text)
    events = dict(rows.group_by("ARM").agg(pl.col("EVENT").sum()).iter_rows())
    too_few = sorted(a for a, e in events.items() if e < study.models.min_events_per_arm)
    data = rows.filter(~pl.col("ARM").is_in(too_few))
    if too_few:
        note(f"relapse (maintenance model): arm(s) {', '.join(too_few)} left out: fewer than "
             f"{study.models.min_events_per_arm} relapses", arms=tuple(too_few))
    if data["EVENT"].sum() >= study.models.min_events_per_arm and data["MAINT"].n_unique() == 2:
        arms = data["ARM"].unique().to_list()
        model_covs = (["ARM"] if len(arms) > 1 else []) + ["MAINT", *covs]
        categorical = categorical_references(
            data, model_covs, arm_reference=study.cohort.reference_arm if study.cohort.reference_arm in arms
            else reference_level(data, "ARM"))
        res = cox_ph(data, time="TSTOP", entry="TSTART", event="EVENT", covariates=model_covs,
                     categorical={k: v for k, v in categorical.items() if k in model_covs}, strata=strata,
                     ties="efron", alpha=study.models.alpha, concordance=False)  # C is not reported
        exposed = data.group_by("MAINT").agg((pl.col("TSTOP") - pl.col("TSTART")).sum().alias("days"),
                                             pl.col("EVENT").sum().alias("events"))
        d = {m: (t, e) for m, t, e in exposed.iter_rows()}
        out["results_relapse_maintenance"] = with_terms(res.summary, res.term_table()).with_columns(
            pl.lit(res.n).alias("n_intervals"), pl.lit(data["USUBJID"].n_unique()).alias("n_patients"),
            pl.lit(res.n_events).alias("n_events"), pl.lit(res.converged).alias("converged"),
            pl.lit(d.get(1, (0, 0))[0]).cast(pl.Float64).alias("days_on_maintenance"),
            pl.lit(d.get(1, (0, 0))[1]).cast(pl.Int64).alias("relapses_on_maintenance"),
            pl.lit(d.get(0, (0, 0))[0]).cast(pl.Float64).alias("days_off_maintenance"),
            pl.lit(d.get(0, (0, 0))[1]).cast(pl.Int64).alias("relapses_off_maintenance"),
            pl.lit(study.relapse.maintenance_exposure_days).alias("exposure_days"),
            pl.lit("; ".join(res.notes) or None, dtype=pl.String).alias("notes"))
    else:
        note("relapse (maintenance model): too few relapses, or nobody (or everybody) on maintenance; "
             "not fitted")

    # --- cumulative incidence with stopping as a competing event
    from ketaoutcomes.models.competing import cumulative_incidence, gray_test

    cr = rel.with_columns(relapse_status(rel).alias("STATUS"))
    cif = cumulative_incidence(cr, time="AVAL", status="STATUS", group="ARM", causes=RELAPSE_STATES, alpha=study.models.alpha)
    out["results_relapse_cif"] = cif.table
    out["results_relapse_cif_at"] = cif.at(sorted({*study.relapse.cif_days, study.models.rmst_horizon_days}))
    gray = []
    arms = sorted(cr["ARM"].unique().to_list())
    pairs = [("all arms", arms)] + [(f"{a} vs {study.cohort.reference_arm}", [a, study.cohort.reference_arm])
                                    for a in arms if a != study.cohort.reference_arm and study.cohort.reference_arm in arms]
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
    counts = cr.group_by("ARM", "STATUS").len().sort("ARM", "STATUS")  # group_by's order is not fixed: a run is repeatable
    out["results_relapse_states"] = counts.with_columns(
        pl.col("STATUS").replace_strict({0: "censored", **RELAPSE_STATES}, return_dtype=pl.String).alias("state"))
    for text in cif.notes:
        note(f"relapse (cumulative incidence): {text}", "info")
    return StepResult(out, tuple(notes))
