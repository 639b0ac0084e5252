"""Propensity-score step: for each route vs the reference arm, a propensity model, weights (or
1:1 matches), the weighted (or matched) Cox model and Kaplan-Meier curves, the balance and
equipoise diagnostics and the gate's verdict (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import polars as pl

from ketaoutcomes.analysis.common import ModelTerms, is_categorical, with_terms
from ketaoutcomes.notes import Note
from ketaoutcomes.settings import StudySettings

__all__ = ["PREFERENCE_BINS", "WeightedComparisons", "fit_pair_propensity", "levels_left_out_note",
           "pair_propensity_draws", "preference_histogram", "ps_model_label", "ps_pair"]


@dataclass
class WeightedComparisons:
    """The propensity-score comparisons of one analysis, gathered endpoint by endpoint."""

    cox: list[pl.DataFrame] = field(default_factory=list)
    ps: list[dict] = field(default_factory=list)
    balance: list[pl.DataFrame] = field(default_factory=list)
    km: list[pl.DataFrame] = field(default_factory=list)
    km_median: list[pl.DataFrame] = field(default_factory=list)
    preference: list[pl.DataFrame] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def extend(self, other: "WeightedComparisons") -> None:
        """Append ``other``'s comparisons (and notes) after these."""
        for f in fields(self):
            getattr(self, f.name).extend(getattr(other, f.name))


def ps_pair(frame: pl.DataFrame, paramcd: str, study: StudySettings, target: str, out: WeightedComparisons
            ) -> str | None:
    """Propensity-weighted (or matched) Cox and Kaplan-Meier of one route ``target`` vs the reference
    arm on one endpoint's ``frame``, with diagnostics and the gate, appended to ``out``. The weighted KM
    curves carry the pair's verdict like the HR. Returns the covariate levels its propensity model
    left out (the endpoint's :func:`levels_left_out_note` names them), or None."""
    from ketaoutcomes.models.propensity import love_plot_data
    from ketaoutcomes.models.weighted import weighted_cox, weighted_kaplan_meier

    pair = frame.filter(pl.col("ARM").is_in([target, study.cohort.reference_arm]))
    ps = fit_pair_propensity(pair, target, study)
    n_pair = ps.n_target + ps.n_comparator
    left = ", ".join(f"{name} ({k} of {n_pair:,}, {k / n_pair:.1%})" for name, k in ps.levels_left_out)
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
                               categorical={"ARM": study.cohort.reference_arm}, weights="weight", alpha=study.models.alpha,
                               cluster="match_set" if "match_set" in keep else None)
            summary = with_terms(res.summary, res.term_table()).filter(pl.col("arm") == target)
            if not res.converged:
                reasons.append("weighted Cox model did not converge")
        except Exception as exc:  # noqa: BLE001 - a model that cannot be fitted is a failed diagnostic
            reasons.append(f"weighted Cox model could not be fitted: {type(exc).__name__}: {exc}")
        try:
            km = weighted_kaplan_meier(weighted, time="AVAL", event="EVENT", weights="weight", group="ARM",
                                       alpha=study.models.alpha)
        except Exception as exc:  # noqa: BLE001 - reported with the pair, never silently missing
            out.notes.append(Note(f"weighted Kaplan-Meier of {target} vs {study.cohort.reference_arm} could not be "
                                  f"computed: {type(exc).__name__}: {exc}", step="propensity", endpoint=paramcd,
                                  arms=(target,), severity="warning"))
    else:
        reasons.append("no weighted patients on one of the two arms")
    passed = ps.diagnostics_passed and not [r for r in reasons if r not in ps.gate_reasons] and summary is not None
    verdict = "pass" if passed else "fail"
    gate = [pl.lit(paramcd).alias("paramcd"), pl.lit(verdict).alias("diagnostics"),
            pl.lit("; ".join(reasons) or None, dtype=pl.String).alias("gate_reasons")]
    if summary is not None and summary.height:
        out.cox.append(summary.with_columns(*gate, pl.lit(study.propensity.weighting).alias("model")))
    if km is not None:
        pair_cols = [pl.lit(target).alias("target"), pl.lit(study.propensity.weighting).alias("weighting")]
        out.km.append(km.table.with_columns(*gate, *pair_cols))
        out.km_median.append(km.medians.with_columns(*gate, *pair_cols))
    out.ps.append({
        "paramcd": paramcd, "target": target, "comparator": study.cohort.reference_arm, "weighting": ps.weighting,
        "truncation": ps.truncation, "n_target": ps.n_target, "n_comparator": ps.n_comparator,
        "n_dropped": ps.n_dropped, "n_truncated": ps.n_truncated, "ess_target": ps.ess_target,
        "ess_comparator": ps.ess_comparator, "equipoise": ps.equipoise,
        "max_abs_smd_after": ps.max_abs_smd_after, "converged": ps.converged, "diagnostics": verdict,
        "gate_reasons": "; ".join(reasons) or None, "notes": "; ".join(ps.notes) or None,
        "n_matched_target": getattr(ps, "n_matched_target", None),
        "n_matched_comparator": getattr(ps, "n_matched_comparator", None),
        "ps_model": ps_model_label(study), "levels_left_out": left or None,
    })
    out.balance.append(love_plot_data([ps]).with_columns(pl.lit(paramcd).alias("paramcd")))
    out.preference.append(preference_histogram(ps.scores).with_columns(
        pl.lit(paramcd).alias("paramcd"), pl.lit(target).alias("target")))
    matched = getattr(ps, "n_matched_target", 0)
    if study.propensity.weighting == "matching" and ps.n_target and matched < study.propensity.matched_share_for_att * ps.n_target:
        out.notes.append(Note(
            f"only {matched:,} of {ps.n_target:,} {target} patients were matched (too few "
            f"{study.cohort.reference_arm} patients close enough): the matched HR describes the matched patients, "
            f"not everyone given {target}", step="propensity", endpoint=paramcd, arms=(target,), severity="info"))
    if not passed:
        out.notes.append(Note(f"{target} vs {study.cohort.reference_arm} fails the diagnostics gate "
                              f"({'; '.join(reasons)}): its {study.propensity.weighting} HR is not a result to read",
                              step="propensity", endpoint=paramcd, arms=(target,), severity="withheld"))
    return left or None


def levels_left_out_note(paramcd: str, study: StudySettings, left_out: list[tuple[str, str]]) -> Note | None:
    """The endpoint's one note on the covariate levels its pairs' propensity models left out
    (``left_out``: (route, levels) in route order), or None when none was."""
    if not left_out:
        return None
    p = study.propensity
    # no row is dropped (the patients stay, with the level modelled as the reference), so a note, not attrition
    return Note(
        f"covariate levels shared by fewer than {p.min_level_prevalence:.3g} of a pair's patients "
        f"(propensity.min_level_prevalence) were left out of its propensity model and balance gate, their "
        f"patients kept and modelled with the reference level: {'; '.join(f'{t}: {x}' for t, x in left_out)}",
        step="propensity", endpoint=paramcd, arms=tuple(t for t, _ in left_out), severity="info")


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


def ps_model_label(study: StudySettings) -> str:
    """The propensity model in words, as results_ps.ps_model stores it."""
    p = study.propensity
    return f"ridge (prior variance {p.ridge_variance:g})" if p.model == "ridge" else "logistic (unpenalised)"


def fit_pair_propensity(pair: pl.DataFrame, target: str, study: StudySettings, *, balance: bool = True):
    """The study's propensity model, weights (or matches) and diagnostics of ``target`` vs the reference
    arm on ``pair`` (:func:`ketaoutcomes.models.propensity.fit_propensity` with the study's settings):
    the one call the primary comparison and the adjusted curves share (``balance=False`` skips the
    balance table, which does not change the weights). The bootstrap of the primary contrasts refits
    the same model on each draw through :func:`pair_propensity_draws` (the same weights on the same rows:
    bit for bit, or to rounding where the ridge model is fitted on distinct rows with counts)."""
    from ketaoutcomes.models.propensity import fit_propensity

    p = study.propensity
    return fit_propensity(pair, target=target, comparator=study.cohort.reference_arm, max_smd=p.max_smd,
                          balance_alpha=p.balance_alpha, balance=balance, **_weight_options(pair, study))


def pair_propensity_draws(pair: pl.DataFrame, target: str, study: StudySettings):
    """``pair`` (rows of ``target`` and the reference arm) prepared for refitting the study's propensity
    model on draws of its rows (:class:`ketaoutcomes.models.propensity.PropensityDraws`): a draw's
    weights are those :func:`fit_pair_propensity` gives on the frame of the drawn rows (to rounding)."""
    from ketaoutcomes.models.propensity import propensity_draws

    return propensity_draws(pair, target=target, comparator=study.cohort.reference_arm,
                            **_weight_options(pair, study))


def _weight_options(pair: pl.DataFrame, study: StudySettings) -> dict:
    """The study's options of the propensity model and its weights, for ``pair``'s columns."""
    covs = ModelTerms.of(study).with_strata  # site moves arm choice: a confounder for the propensity model
    p = study.propensity
    return dict(covariates=covs, categorical=[c for c in covs if is_categorical(pair, c)], weighting=p.weighting,
                truncation=p.ps_truncation, min_equipoise=p.min_equipoise, equipoise_bounds=p.equipoise_bounds,
                model=p.model, ridge_variance=p.ridge_variance, min_level_prevalence=p.min_level_prevalence,
                **matching_options(study))


def matching_options(study: StudySettings) -> dict:
    return {"caliper": study.propensity.caliper} if study.propensity.weighting == "matching" else {}
