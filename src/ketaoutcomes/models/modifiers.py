"""Effect modifiers of the speed of response: a secondary, exploratory Cox model.

This docstring is the model's documentation (the report links here).

Question
    What modifies how fast patients respond: route (against the reference arm),
    dose, a concomitant SSRI, a concomitant benzodiazepine (reported to blunt
    ketamine's antidepressant effect), age and sex?

Population
    The analysed index courses (ADSL ``ANLFL = 'Y'``; the ADTTE rows are already
    restricted to them) on the reference arm (``ssri``) or on a ketamine route
    (``ketamine_arms``, the arms with ``is_ketamine = true`` in
    ``registries/arms.csv``). Rows of other arms are left out and counted.

Endpoint
    TTRESP: days from the first dose (AVAL) to the first rating showing response
    (``EVENT = 1``), otherwise censored at the last rating (``EVENT = 0``; CNSR
    converted by :func:`~ketaoutcomes.derive.cnsr.cnsr_to_event`). Times are
    whole days, so ties are many: Efron's method throughout (as R's ``coxph``).
    Every model is :func:`~ketaoutcomes.models.cox.cox_ph`.

Model A: route x modifier, all arms in the population (one model per modifier)
    For a categorical modifier M (``SEX``: F, M; ``CONBENZO``: N, Y)::

        log h(t) = log h0_site(t) + sum_r sum_l b[r,l] 1{ARM = r} 1{M = l}
                   + sum_{l > first} g[l] 1{M = l} + adjust

    with terms named ``ARM[r]:M[l]`` and ``M[l]``. The route indicators are
    nested in the levels of M, so ``exp(b[r,l])`` is directly the hazard ratio
    of route r against the reference arm *within* level l (no linear
    combinations are needed, and none are computed). For AGE (continuous,
    linear on the log-hazard scale)::

        log h(t) = log h0_site(t) + sum_r b[r] 1{ARM = r}
                   + sum_r d[r] 1{ARM = r} (AGE - c) / 10 + g AGE / 10 + adjust

    refitted with the centre c at 30, 50 and 70 years (``age_at``), so that
    ``exp(b[r])`` is the hazard ratio of route r at age c; the fits are the same
    model (same likelihood), only reparameterised. ``adjust`` are further
    covariates, by default BASE (baseline MADRS, per point) and PRIORFAIL (prior
    failed trials, per trial); a text column is a factor with its most frequent
    level as reference. Baseline hazards are stratified by ``strata`` (SITEID).

    *Interaction test* per modifier: likelihood ratio of that model against the
    model with route and M as main effects only (``ARM[r]`` + ``M[l]`` or
    ``AGE/10`` + adjust), fitted to exactly the same rows: chi2 =
    2 (loglik_interaction - loglik_main), df = the difference in the number of
    estimated terms (routes x (levels - 1) when every cell is estimable; the
    number of routes for AGE), as R's ``anova(main, interaction)``.

Model B: within the ketamine routes only
    Stratified by route (ARM: each route its own baseline hazard, so route
    differences cannot confound the other terms; route itself is compared in
    Model A), and by ARM x SITEID when the events allow it (at least
    ``ModifierScales.min_events_per_stratum`` = 10 events per combined stratum on average;
    otherwise ARM only, said in a note and site is then not adjusted for)::

        log h(t) = log h0_{route, site}(t) + a DOSEREL / 0.25 + s CONSSRI
                   + z CONBENZO + y AGE / 10 + x SEX[M] + adjust

    Scaling: ``DOSEREL/0.25`` is per +25 % of the route's typical dose (DOSEREL
    is the course's mean induction dose over the median of its route, see
    :func:`course_dose`; 1 = the route's typical dose); ``CONSSRI`` and
    ``CONBENZO`` yes vs no; ``AGE/10`` per 10 years; ``SEX[M]`` male vs female;
    BASE per MADRS point; PRIORFAIL per prior failed trial. The reference arm
    (SSRI) is not in Model B; its own dose (the relative daily dose) is not used.

Missing values, sex U, small cells
    Rows with a missing value in a column a model uses are dropped before fitting
    (both models of a test get the same rows) and counted in the notes; a null
    CONBENZO therefore leaves the row out of the benzodiazepine model and Model
    B only. Sex ``U`` (unknown or other) is too rare to estimate: those rows are
    left out of the sex model and of Model B, counted in a note, and kept in the
    other models. A route with fewer than ``min_events`` events in a level (a
    *cell*) gets a null hazard ratio and a note, and its rows in that level are
    left out of both models of that test; a level in which the reference arm
    has fewer than ``min_events`` events is left out entirely. For AGE, ``n``
    and ``n_events`` count the arm's courses within +/- 10 years of the age, and
    the hazard ratio there is reported only when the route and the reference arm
    each have at least ``min_events`` events in that window (otherwise it would
    be an extrapolation of the linear term).

Not adjusted for, and caveats
    * An observational comparison adjusted by covariates, *not* propensity
      weighted: confounding by indication remains (who gets which route, dose
      or a benzodiazepine depends on severity, anxiety, prior failures and
      preference, only partly captured by BASE and PRIORFAIL).
    * Dose and the concomitant medications are course-level summaries that can
      depend on the course itself: the induction dose is titrated up in slow
      responders and averaged over sessions that can come after the response;
      CONSSRI and CONBENZO say the drug was taken *during* the course, not at
      its start. The dose term is therefore not a dose-response estimate.
    * Proportional hazards is assumed for every term (not tested here); age is
      linear on the log-hazard scale; sex and benzodiazepine interactions are not
      adjusted for one another (one modifier per model).
    * Many tests on the same data: these are exploratory secondary analyses,
      p-values are not adjusted for multiplicity. Read the interaction tests,
      not the subgroup p-values; a subgroup HR with a wide interval is not
      evidence of no effect.

Validation
    Every fit (nested subgroup terms, main-effects models, the likelihood-ratio
    tests as R's ``anova``, the age centrings, Model B with both strata) is
    checked against R's ``survival::coxph(ties = "efron")`` in
    ``tests/reference/test_modifiers_vs_R.py`` (relative tolerance 1e-6), and the
    nested terms against R's linear combinations of the usual ``ARM * M`` fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from scipy import stats

from ketaoutcomes.models.common import drop_missing, plural
from ketaoutcomes.models.cox import CoxResult, cox_ph

__all__ = [
    "ModifierScales",
    "ModifierResult",
    "course_dose",
    "effect_modifiers",
]

TIME = "AVAL"
EVENT = "EVENT"


@dataclass(frozen=True)
class ModifierScales:
    """Units and thresholds of the models (a study sets them: ``StudySettings.secondary.modifier_*``)."""

    #: Model B's dose term is DOSEREL / dose_step: the HR per +25 % of the route's typical dose.
    dose_step: float = 0.25
    #: Age terms are per this many years.
    age_unit: float = 10
    #: For the age subgroups, n and n_events count courses within this many years of the age.
    age_window_years: float = 10
    #: Model B is stratified by ARM x SITEID only with this many events per combined stratum (mean).
    min_events_per_stratum: int = 10

_FLAG = {True: "Y", False: "N"}

_SUBGROUP_SCHEMA = {
    "modifier": pl.String, "level": pl.String, "arm": pl.String,
    "hr": pl.Float64, "hr_lower": pl.Float64, "hr_upper": pl.Float64, "p_value": pl.Float64,
    "n": pl.Int64, "n_events": pl.Int64, "n_reference": pl.Int64, "n_events_reference": pl.Int64,
    "coef": pl.Float64, "se": pl.Float64, "term": pl.String,
}  # fmt: skip
_INTERACTION_SCHEMA = {
    "modifier": pl.String, "lr_chi2": pl.Float64, "df": pl.Int64, "p_value": pl.Float64,
    "n": pl.Int64, "n_events": pl.Int64, "loglik_interaction": pl.Float64, "loglik_main": pl.Float64,
    "note": pl.String,
}  # fmt: skip
_WITHIN_SCHEMA = {
    "term": pl.String, "scale": pl.String, "hr": pl.Float64, "hr_lower": pl.Float64, "hr_upper": pl.Float64,
    "p_value": pl.Float64, "coef": pl.Float64, "se": pl.Float64, "n": pl.Int64, "n_events": pl.Int64,
    "strata": pl.String,
}  # fmt: skip
_FIT_SCHEMA = {
    "model": pl.String, "modifier": pl.String, "kind": pl.String, "n": pl.Int64, "n_events": pl.Int64,
    "loglik": pl.Float64, "n_estimated": pl.Int64, "strata": pl.String, "converged": pl.Boolean,
    "terms": pl.String, "notes": pl.String,
}  # fmt: skip


@dataclass(frozen=True)
class ModifierResult:
    """Effect modifiers of the speed of response (see the module docstring for the model).

    Attributes
    ----------
    subgroups : polars.DataFrame
        Model A. One row per modifier level and route: ``modifier`` (SEX,
        CONBENZO, AGE), ``level`` (F/M; N/Y; the age in years), ``arm`` (the
        route), ``hr``, ``hr_lower``, ``hr_upper``, ``p_value`` (route vs the
        reference arm within the level; Wald), ``n``, ``n_events`` (the route's
        courses in the level; for AGE within +/- 10 years), ``n_reference``,
        ``n_events_reference`` (the same for the reference arm), ``coef``, ``se``
        and the model ``term``. Null where not estimable (see ``notes``).
    interactions : polars.DataFrame
        One row per modifier: ``modifier``, ``lr_chi2``, ``df``, ``p_value``
        (likelihood-ratio test of route x modifier), ``n``, ``n_events`` (rows
        of both models), ``loglik_interaction``, ``loglik_main``, ``note``.
    within_ketamine : polars.DataFrame
        Model B. One row per term: ``term``, ``scale`` (what one unit is),
        ``hr``, ``hr_lower``, ``hr_upper``, ``p_value``, ``coef``, ``se``, and
        the model's ``n``, ``n_events`` and ``strata``.
    notes : tuple of str
        The multiplicity caveat, rows dropped, non-estimable terms, small cells,
        the strata chosen for Model B.
    fits : polars.DataFrame
        One row per fitted Cox model: ``model``, ``modifier``, ``kind``
        (interaction, main, within_ketamine), ``n``, ``n_events``, ``loglik``,
        ``n_estimated`` (terms with an estimate), ``strata``, ``converged``,
        ``terms`` and the fit's ``notes``.
    """

    subgroups: pl.DataFrame
    interactions: pl.DataFrame
    within_ketamine: pl.DataFrame
    notes: tuple[str, ...]
    fits: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_FIT_SCHEMA))


# --------------------------------------------------------------------------- dose
def course_dose(sessions: pl.DataFrame, courses: pl.DataFrame) -> pl.DataFrame:
    """Mean induction dose per course, and relative to its arm's typical dose.

    Parameters
    ----------
    sessions : polars.DataFrame
        The sessions table: ``course_id``, ``dose_mg``, ``dose_mg_per_kg``
        (null for fixed-dose arms), ``phase`` ('induction' | 'maintenance').
    courses : polars.DataFrame
        ``course_id`` and ``arm``: the courses to describe, and the ones whose
        median defines an arm's typical dose (pass the analysed index courses to
        get the analysed population's typical dose).

    Returns
    -------
    polars.DataFrame
        One row per course in ``courses``: ``COURSEID``, ``NDOSE`` (induction
        sessions), ``DOSE`` (mean induction dose), ``DOSEUNIT`` ('mg/kg' when
        every induction session of the course has ``dose_mg_per_kg``, else
        'mg'), ``DOSEREL`` = DOSE / median DOSE of the courses of the same arm
        and unit (dimensionless; 1 = the arm's typical dose). Null DOSE, DOSEUNIT
        and DOSEREL for a course without induction sessions (or without recorded
        doses); null DOSEREL where the median is not positive. For SSRI courses
        DOSEREL is the relative daily dose (:func:`effect_modifiers` does not
        use it). Join to the model frame on COURSEID.
    """
    need = {"course_id", "dose_mg", "dose_mg_per_kg", "phase"}
    missing = sorted(need - set(sessions.columns))
    if missing:
        raise KeyError(f"sessions lacks columns {missing}")
    missing = sorted({"course_id", "arm"} - set(courses.columns))
    if missing:
        raise KeyError(f"courses lacks columns {missing}")

    def valid(col: str) -> pl.Expr:
        c = pl.col(col).cast(pl.Float64)
        return pl.when(c.is_nan()).then(None).otherwise(c)

    per_course = (
        sessions.filter(pl.col("phase") == "induction")
        .with_columns(valid("dose_mg").alias("_mg"), valid("dose_mg_per_kg").alias("_kg"))
        .group_by("course_id")
        .agg(
            pl.len().cast(pl.Int64).alias("NDOSE"),
            pl.col("_kg").is_not_null().all().alias("_all_kg"),
            pl.col("_kg").mean().alias("_mean_kg"),
            pl.col("_mg").mean().alias("_mean_mg"),
        )
        .with_columns(
            # mg/kg only when every induction session has it: a partly recorded course would
            # otherwise mix a weight-based mean of some sessions with nothing for the rest
            pl.when(pl.col("_all_kg")).then(pl.col("_mean_kg")).otherwise(pl.col("_mean_mg")).alias("DOSE"),
        )
        .with_columns(
            pl.when(pl.col("DOSE").is_null()).then(None)
            .when(pl.col("_all_kg")).then(pl.lit("mg/kg")).otherwise(pl.lit("mg")).alias("DOSEUNIT"),
        )  # fmt: skip
    )
    out = (
        courses.select("course_id", "arm")
        .unique("course_id", keep="first", maintain_order=True)
        .join(per_course, on="course_id", how="left")
        .with_columns(pl.col("NDOSE").fill_null(0))
    )
    median = pl.col("DOSE").median().over("arm", "DOSEUNIT")
    return out.select(
        pl.col("course_id").alias("COURSEID"),
        "NDOSE",
        "DOSE",
        "DOSEUNIT",
        pl.when(pl.col("DOSE").is_not_null() & (median > 0)).then(pl.col("DOSE") / median).alias("DOSEREL"),
    )


# --------------------------------------------------------------------------- helpers
def _most_frequent(frame: pl.DataFrame, col: str) -> Any:
    counts = frame.group_by(col).len().sort(["len", col], descending=[True, False])
    return counts[col][0]


def _is_text(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)


def _complete(rows: pl.DataFrame, cols: Sequence[str], label: str, notes: list[str]) -> pl.DataFrame:
    """Drop rows with a null (or NaN) in ``cols`` (:func:`~ketaoutcomes.models.common.drop_missing`'s
    rule); the note is prefixed by ``label``."""
    rows, _, dropped = drop_missing(rows, cols)
    notes += [f"{label}: {n}" for n in dropped]
    return rows


def _events(rows: pl.DataFrame) -> int:
    return int(rows[EVENT].cast(pl.Int64).sum()) if rows.height else 0


def _estimated(res: CoxResult) -> int:
    return int(res.summary["coef"].is_not_null().sum())


def _term(res: CoxResult, term: str) -> dict[str, Any]:
    hit = res.summary.filter(pl.col("term") == term).to_dicts()
    return hit[0] if hit else {}


def _fit(
    rows: pl.DataFrame, covs: dict[str, pl.Expr], adjust: Sequence[str], strata: str | None, alpha: float
) -> CoxResult:
    """cox_ph on ``rows`` with the built columns ``covs`` (name -> expression) and ``adjust``."""
    data = rows.with_columns([e.cast(pl.Float64).alias(n) for n, e in covs.items()])
    categorical = {c: _most_frequent(data, c) for c in adjust if _is_text(data.schema[c])}
    return cox_ph(
        data, time=TIME, event=EVENT, covariates=[*covs, *adjust], categorical=categorical,
        strata=strata, ties="efron", alpha=alpha, concordance=False,
    )  # fmt: skip


def _fit_row(res: CoxResult, model: str, modifier: str, kind: str) -> dict[str, Any]:
    return {
        "model": model, "modifier": modifier, "kind": kind, "n": res.n, "n_events": res.n_events,
        "loglik": res.loglik, "n_estimated": _estimated(res), "strata": res.strata, "converged": res.converged,
        "terms": ", ".join(res.terms), "notes": "; ".join(res.notes),
    }  # fmt: skip


def _fit_notes(res: CoxResult, label: str) -> list[str]:
    return [f"{label}: {n}" for n in res.notes]


def _interaction_row(modifier: str, inter: CoxResult | None, main: CoxResult | None, rows: pl.DataFrame,
                     notes: list[str]) -> dict:
    """The likelihood-ratio test of a modifier's interaction model against its main-effects model."""
    chi2, df, p = _lr(inter, main) if (inter is not None and main is not None) else (math.nan, None, math.nan)
    return {
        "modifier": modifier, "lr_chi2": None if math.isnan(chi2) else chi2, "df": df,
        "p_value": None if math.isnan(p) else p, "n": inter.n if inter else rows.height,
        "n_events": inter.n_events if inter else _events(rows),
        "loglik_interaction": inter.loglik if inter else None, "loglik_main": main.loglik if main else None,
        "note": "; ".join(notes) or None,
    }


def _lr(inter: CoxResult, main: CoxResult) -> tuple[float, int, float]:
    chi2 = 2.0 * (inter.loglik - main.loglik)
    df = _estimated(inter) - _estimated(main)
    if not (math.isfinite(chi2) and df > 0):
        return math.nan, df, math.nan
    return chi2, df, float(stats.chi2.sf(max(chi2, 0.0), df))


def _arm_is(arm: str) -> pl.Expr:
    return pl.col("ARM") == arm


def _adjust_for(adjust: Sequence[str], own: Sequence[str], label: str, notes: list[str]) -> list[str]:
    """``adjust`` without the columns the model already has as its own terms."""
    dup = [c for c in adjust if c in own]
    if dup:
        notes.append(f"{label}: {', '.join(dup)} not added from `adjust` (already a term of this model)")
    return [c for c in adjust if c not in own]


# --------------------------------------------------------------------------- model A
@dataclass
class _Out:
    subgroups: list[dict[str, Any]] = field(default_factory=list)
    interactions: list[dict[str, Any]] = field(default_factory=list)
    fits: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _categorical_modifier(
    data: pl.DataFrame,
    *,
    modifier: str,
    levels: Sequence[str],
    label: pl.Expr,
    excluded_note: str | None,
    reference_arm: str,
    routes: Sequence[str],
    adjust: Sequence[str],
    strata: str | None,
    alpha: float,
    min_events: int,
    out: _Out,
) -> None:
    """Model A for a categorical modifier: nested route-within-level terms vs main effects."""
    notes: list[str] = []
    if excluded_note:
        notes.append(excluded_note)
    rows = data.with_columns(label.alias("_LEVEL")).filter(pl.col("_LEVEL").is_not_null())
    adj = _adjust_for(adjust, [modifier], modifier, notes)
    rows = _complete(rows, [TIME, EVENT, *adj, *([strata] if strata else [])], modifier, notes)

    cells = {
        (a, lv): (n, e)
        for a, lv, n, e in rows.group_by("ARM", "_LEVEL")
        .agg(pl.len().cast(pl.Int64), pl.col(EVENT).cast(pl.Int64).sum())
        .iter_rows()
    }

    def count(arm: str, lv: str) -> tuple[int, int]:
        return cells.get((arm, lv), (0, 0))

    kept_levels = []
    for lv in levels:
        n_ref, e_ref = count(reference_arm, lv)
        if e_ref < min_events:
            n_lv = rows.filter(pl.col("_LEVEL") == lv).height
            notes.append(
                f"{modifier} = {lv}: the reference arm {reference_arm} has {e_ref} events (< {min_events}); "
                f"no hazard ratios in this level, its {plural(n_lv, 'row')} left out of both models"
            )
            rows = rows.filter(pl.col("_LEVEL") != lv)
        else:
            kept_levels.append(lv)
    estimable: list[tuple[str, str]] = []
    for lv in kept_levels:
        for r in routes:
            n, e = count(r, lv)
            if e >= min_events:
                estimable.append((r, lv))
            elif n:
                notes.append(
                    f"{modifier} = {lv}, {r}: {e} events (< {min_events}); hazard ratio not estimated, "
                    f"its {plural(n, 'row')} left out of both models"
                )
                rows = rows.filter(~(_arm_is(r) & (pl.col("_LEVEL") == lv)))

    cell_terms = {f"ARM[{r}]:{modifier}[{lv}]": _arm_is(r) & (pl.col("_LEVEL") == lv) for r, lv in estimable}
    level_terms = {f"{modifier}[{lv}]": pl.col("_LEVEL") == lv for lv in kept_levels[1:]}
    fitted_routes = [r for r in routes if any(rr == r for rr, _ in estimable)]
    route_terms = {f"ARM[{r}]": _arm_is(r) for r in fitted_routes}

    inter = main = None
    if cell_terms:
        inter = _fit(rows, {**cell_terms, **level_terms}, adj, strata, alpha)
        out.fits.append(_fit_row(inter, "A", modifier, "interaction"))
        notes += _fit_notes(inter, f"{modifier} interaction model")
    test_note = None
    if inter is None:
        test_note = "no route has enough events in any level: nothing fitted"
    elif len(kept_levels) < 2:
        test_note = f"fewer than two levels of {modifier} with enough events: no interaction test"
    else:
        main = _fit(rows, {**route_terms, **level_terms}, adj, strata, alpha)
        out.fits.append(_fit_row(main, "A", modifier, "main"))
        notes += _fit_notes(main, f"{modifier} main-effects model")
        if main.n != inter.n:  # cannot happen: the same complete rows go to both
            raise AssertionError("interaction and main-effects models were fitted to different rows")
    if test_note:
        notes.append(f"{modifier}: {test_note}")
    out.interactions.append(_interaction_row(modifier, inter, main, rows, notes))

    for lv in levels:
        n_ref, e_ref = count(reference_arm, lv)
        for r in routes:
            n, e = count(r, lv)
            term = f"ARM[{r}]:{modifier}[{lv}]"
            est = _term(inter, term) if (inter is not None and term in cell_terms) else {}
            if est and est.get("coef") is None:
                notes.append(f"{modifier} = {lv}, {r}: not estimable in the fit (see the fit's notes)")
            out.subgroups.append(_subgroup(modifier, lv, r, est, n, e, n_ref, e_ref, term))
    out.notes += notes


def _subgroup(modifier, level, arm, est, n, e, n_ref, e_ref, term) -> dict[str, Any]:
    return {
        "modifier": modifier, "level": level, "arm": arm, "hr": est.get("hr"), "hr_lower": est.get("hr_lower"),
        "hr_upper": est.get("hr_upper"), "p_value": est.get("p_value"), "n": n, "n_events": e,
        "n_reference": n_ref, "n_events_reference": e_ref, "coef": est.get("coef"), "se": est.get("se"),
        "term": term,
    }  # fmt: skip


def _age_modifier(
    data: pl.DataFrame,
    *,
    age_at: Sequence[float],
    reference_arm: str,
    routes: Sequence[str],
    adjust: Sequence[str],
    strata: str | None,
    alpha: float,
    min_events: int,
    out: _Out,
    scales: ModifierScales,
) -> None:
    """Model A for age: linear route x age interaction, recentred at each age and refitted."""
    unit, window_years = scales.age_unit, scales.age_window_years
    modifier = "AGE"
    notes: list[str] = []
    adj = _adjust_for(adjust, ["AGE"], modifier, notes)
    rows = _complete(data, [TIME, EVENT, "AGE", *adj, *([strata] if strata else [])], modifier, notes)
    by_arm = {a: (n, e) for a, n, e in rows.group_by("ARM").agg(
        pl.len().cast(pl.Int64), pl.col(EVENT).cast(pl.Int64).sum()).iter_rows()}  # fmt: skip
    ref_events = by_arm.get(reference_arm, (0, 0))[1]
    fitted_routes = []
    if ref_events < min_events:
        notes.append(f"AGE: the reference arm {reference_arm} has {ref_events} events (< {min_events}); not fitted")
    else:
        for r in routes:
            n, e = by_arm.get(r, (0, 0))
            if e >= min_events:
                fitted_routes.append(r)
            elif n:
                notes.append(f"AGE, {r}: {e} events (< {min_events}); left out of the age models ({plural(n, 'row')})")
                rows = rows.filter(~_arm_is(r))
    age10 = {f"AGE/{unit:g}": pl.col("AGE") / unit}
    route_terms = {f"ARM[{r}]": _arm_is(r) for r in fitted_routes}

    inter_fits: dict[float, CoxResult] = {}
    main = None
    if fitted_routes:
        main = _fit(rows, {**route_terms, **age10}, adj, strata, alpha)
        out.fits.append(_fit_row(main, "A", modifier, "main"))
        notes += _fit_notes(main, "AGE main-effects model")
        for c in age_at:
            slope = {
                f"ARM[{r}]:(AGE-{c:g})/{unit:g}": _arm_is(r).cast(pl.Float64) * (pl.col("AGE") - c) / unit
                for r in fitted_routes
            }
            res = _fit(rows, {**route_terms, **slope, **age10}, adj, strata, alpha)
            inter_fits[c] = res
            out.fits.append(_fit_row(res, "A", modifier, f"interaction (centred at {c:g})"))
            if c == age_at[0]:
                notes += _fit_notes(res, "AGE interaction model")
    first = inter_fits.get(age_at[0]) if age_at else None
    out.interactions.append(_interaction_row(modifier, first, main, rows, notes))

    for c in age_at:
        window = rows.filter((pl.col("AGE") - c).abs() <= window_years)
        w = {a: (n, e) for a, n, e in window.group_by("ARM").agg(
            pl.len().cast(pl.Int64), pl.col(EVENT).cast(pl.Int64).sum()).iter_rows()}  # fmt: skip
        n_ref, e_ref = w.get(reference_arm, (0, 0))
        for r in routes:
            n, e = w.get(r, (0, 0))
            term = f"ARM[{r}]"
            est = _term(inter_fits[c], term) if (c in inter_fits and r in fitted_routes) else {}
            if est and (e < min_events or e_ref < min_events):
                notes.append(
                    f"AGE = {c:g}, {r}: {e} events for the route and {e_ref} for {reference_arm} within "
                    f"+/- {window_years:g} years (< {min_events}); hazard ratio not reported (extrapolation)"
                )
                est = {}
            out.subgroups.append(_subgroup(modifier, f"{c:g}", r, est, n, e, n_ref, e_ref, term))
    out.notes += notes


# --------------------------------------------------------------------------- model B
_SCALES = {
    "CONSSRI": "concomitant SSRI: yes vs no",
    "CONBENZO": "concomitant benzodiazepine: yes vs no",
    "SEX[M]": "male vs female",
    "BASE": "per point of baseline score",
    "PRIORFAIL": "per prior failed trial",
}


def _within_ketamine(
    data: pl.DataFrame,
    *,
    routes: Sequence[str],
    dose: str | None,
    adjust: Sequence[str],
    strata: str | None,
    alpha: float,
    min_events: int,
    out: _Out,
    scales: ModifierScales,
) -> pl.DataFrame:
    label = "within ketamine"
    notes: list[str] = []
    rows = data.filter(pl.col("ARM").is_in(list(routes)))
    n_u = rows.filter(pl.col("SEX") == "U").height
    if n_u:
        notes.append(f"{label}: {plural(n_u, 'row')} with SEX = U left out (too few to estimate)")
        rows = rows.filter((pl.col("SEX") != "U") | pl.col("SEX").is_null())  # null SEX: counted as missing below
    own = ["CONSSRI", "CONBENZO", "AGE", "SEX", *([dose] if dose else [])]
    adj = _adjust_for(adjust, own, label, notes)
    rows = _complete(rows, [TIME, EVENT, *own, *adj], label, notes)

    stratum = "ARM"
    if strata is not None:
        with_site = rows.filter(pl.col(strata).is_not_null())
        k = with_site.select(pl.struct("ARM", strata).n_unique()).item() if with_site.height else 0
        ev = _events(with_site)
        if k and ev >= scales.min_events_per_stratum * k:
            if with_site.height < rows.height:
                notes.append(f"{label}: {plural(rows.height - with_site.height, 'row')} dropped for missing {strata}")
            rows = with_site.with_columns(
                pl.concat_str([pl.col("ARM"), pl.col(strata).cast(pl.String)], separator="|").alias("_ARMSITE")
            )
            stratum = "_ARMSITE"
        else:
            notes.append(
                f"{label}: strata ARM only ({ev} events in {k} ARM x {strata} strata, fewer than "
                f"{scales.min_events_per_stratum} per stratum); {strata} not adjusted for in this model"
            )
    strata_label = f"ARM x {strata}" if stratum == "_ARMSITE" else "ARM"

    for r, n, e in rows.group_by("ARM").agg(pl.len(), pl.col(EVENT).cast(pl.Int64).sum()).sort("ARM").iter_rows():
        if e < min_events:
            notes.append(f"{label}: {r} has {e} events in {plural(n, 'row')} (< {min_events}); it adds little")

    covs: dict[str, pl.Expr] = {}
    unit = scales.age_unit
    labels = {**_SCALES, f"AGE/{unit:g}": f"per {unit:g} years of age"}
    if dose:
        name = f"{dose}/{scales.dose_step:g}"
        covs[name] = pl.col(dose) / scales.dose_step
        labels[name] = f"per +{scales.dose_step:.0%} of the route's typical (median) induction dose"
    covs |= {
        "CONSSRI": pl.col("CONSSRI"),
        "CONBENZO": pl.col("CONBENZO"),
        f"AGE/{unit:g}": pl.col("AGE") / unit,
        "SEX[M]": pl.col("SEX") == "M",
    }
    schema = pl.DataFrame(schema=_WITHIN_SCHEMA)
    if not rows.height or _events(rows) == 0:
        notes.append(f"{label}: no events in the ketamine routes; not fitted")
        out.notes += notes
        return schema
    res = _fit(rows, covs, adj, stratum, alpha)
    out.fits.append(_fit_row(res, "B", "", "within_ketamine") | {"strata": strata_label})
    notes += _fit_notes(res, label)
    out.notes += notes

    def scale(term: str) -> str:
        return labels.get(term, "level vs reference" if "[" in term else "per unit")

    return pl.DataFrame(
        [
            {
                "term": t["term"], "scale": scale(t["term"]), "hr": t["hr"], "hr_lower": t["hr_lower"],
                "hr_upper": t["hr_upper"], "p_value": t["p_value"],
                "coef": t["coef"], "se": t["se"], "n": res.n, "n_events": res.n_events, "strata": strata_label,
            }
            for t in res.summary.to_dicts()
        ],
        schema=_WITHIN_SCHEMA,
    )  # fmt: skip


# --------------------------------------------------------------------------- entry point
def effect_modifiers(
    frame: pl.DataFrame,
    *,
    reference_arm: str,
    ketamine_arms: Sequence[str],
    strata: str | None = "SITEID",
    adjust: Sequence[str] = ("BASE", "PRIORFAIL"),
    alpha: float = 0.05,
    min_events: int = 5,
    age_at: Sequence[float] = (30, 50, 70),
    dose: str | None = "DOSEREL",
    scales: ModifierScales = ModifierScales(),
) -> ModifierResult:
    """Effect modifiers of the time to response (Models A and B of the module docstring).

    Exploratory secondary analyses: many tests, p-values unadjusted for
    multiplicity; read the interaction tests, not the subgroup p-values.

    Parameters
    ----------
    frame : polars.DataFrame
        The TTRESP model frame, one row per analysed course:
        ``analysis._model_frame(adsl, adtte, "TTRESP")`` (AVAL, EVENT, ARM,
        SEX, AGE, CONSSRI, CONBENZO, SITEID, BASE, PRIORFAIL, ...) joined with
        :func:`course_dose` on COURSEID for ``dose``. Rows with ANLFL other than
        'Y' (when present) and of arms other than the reference and the routes
        are left out and counted. ``EVENT`` is 1 = event, 0 = censored.
    reference_arm : str
        The comparator of Model A (``ssri``).
    ketamine_arms : sequence of str
        The ketamine routes (``is_ketamine`` arms of the registry).
    strata : str or None, default "SITEID"
        Baseline hazards stratified by this column in Model A; in Model B
        combined with ARM when there are enough events (see the module docstring).
    adjust : sequence of str, default ("BASE", "PRIORFAIL")
        Further covariates of every model; text columns become factors with the
        most frequent level as reference. A column that is already a term of a
        model (e.g. AGE in the age model) is not added twice.
    alpha : float, default 0.05
        Wald intervals with coverage ``1 - alpha``.
    min_events : int, default 5
        A route (or the reference arm) with fewer events in a subgroup gets a
        null hazard ratio and a note.
    age_at : sequence of float, default (30, 50, 70)
        Ages at which Model A's route hazard ratios are reported.
    dose : str or None, default "DOSEREL"
        The relative-dose column of Model B (None: no dose term).
    scales : ModifierScales
        Dose step, age unit and window, and the events per stratum Model B needs.

    Returns
    -------
    ModifierResult
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    if min_events < 1:
        raise ValueError("min_events must be at least 1")
    routes = list(dict.fromkeys(ketamine_arms))
    if not routes:
        raise ValueError("ketamine_arms must name at least one route")
    if reference_arm in routes:
        raise ValueError(f"the reference arm {reference_arm!r} is also in ketamine_arms")
    required = [TIME, EVENT, "ARM", "SEX", "AGE", "CONSSRI", "CONBENZO", *adjust]
    required += [c for c in (strata, dose) if c is not None]
    missing = [c for c in dict.fromkeys(required) if c not in frame.columns]
    if missing:
        hint = " (join course_dose(sessions, courses) on COURSEID)" if dose in missing else ""
        raise KeyError(f"frame lacks columns {missing}{hint}")
    if "PARAMCD" in frame.columns and frame["PARAMCD"].n_unique() > 1:
        raise ValueError(f"frame holds several endpoints {sorted(frame['PARAMCD'].unique().to_list())}; pass one")

    out = _Out()
    data = frame
    if "ANLFL" in data.columns:
        k = data.filter(pl.col("ANLFL") != "Y").height + data["ANLFL"].null_count()
        if k:
            out.notes.append(f"{plural(k, 'row')} with ANLFL other than 'Y' left out")
        data = data.filter(pl.col("ANLFL") == "Y")
    arms = [reference_arm, *routes]
    other = data.filter(~pl.col("ARM").is_in(arms) | pl.col("ARM").is_null())
    if other.height:
        per = other.group_by("ARM").len().sort("ARM")
        out.notes.append(
            f"{plural(other.height, 'row')} of other arms left out ("
            + ", ".join(f"{a}: {n}" for a, n in per.iter_rows()) + ")"
        )
    data = data.filter(pl.col("ARM").is_in(arms))
    present = set(data["ARM"].unique().to_list())
    absent = [r for r in routes if r not in present]
    if absent:
        out.notes.append(f"route(s) without courses: {', '.join(absent)}")
    routes = [r for r in routes if r in present]
    common = dict(reference_arm=reference_arm, routes=routes, adjust=list(adjust), strata=strata, alpha=alpha,
                  min_events=min_events, out=out)  # fmt: skip

    # SEX: F and M; U (and null) left out of this model with a count
    n_u = data.filter(pl.col("SEX") == "U").height
    n_null_sex = data["SEX"].null_count()
    other_sex = data.filter(~pl.col("SEX").is_in(["F", "M", "U"])).height
    parts = [f"SEX = U: {n_u}" if n_u else "", f"SEX missing: {n_null_sex}" if n_null_sex else "",
             f"SEX other: {other_sex}" if other_sex else ""]  # fmt: skip
    parts = [p for p in parts if p]
    _categorical_modifier(
        data, modifier="SEX", levels=["F", "M"],
        label=pl.when(pl.col("SEX").is_in(["F", "M"])).then(pl.col("SEX")),
        excluded_note=(f"SEX: {plural(n_u + n_null_sex + other_sex, 'row')} left out of the sex model ("
                       + ", ".join(parts) + ")") if parts else None,
        **common,
    )  # fmt: skip
    # CONBENZO: N and Y; null left out of this model with a count
    n_null_b = data["CONBENZO"].null_count()
    _categorical_modifier(
        data, modifier="CONBENZO", levels=["N", "Y"],
        label=pl.when(pl.col("CONBENZO").cast(pl.Boolean)).then(pl.lit(_FLAG[True]))
        .when(~pl.col("CONBENZO").cast(pl.Boolean)).then(pl.lit(_FLAG[False])),
        excluded_note=f"CONBENZO: {plural(n_null_b, 'row')} with CONBENZO missing left out of the benzodiazepine model"
        if n_null_b else None,
        **common,
    )  # fmt: skip
    _age_modifier(data, age_at=list(age_at), scales=scales, **common)
    within = _within_ketamine(data, routes=routes, dose=dose, adjust=list(adjust), strata=strata, alpha=alpha,
                              min_events=min_events, out=out, scales=scales)  # fmt: skip

    n_tests = len(out.interactions)
    n_sub = sum(1 for s in out.subgroups if s["hr"] is not None)
    caveat = (
        f"Exploratory secondary analysis: {n_tests} interaction tests, {n_sub} subgroup hazard ratios and "
        f"{within.height} within-ketamine terms on the same data; p-values are not adjusted for multiplicity. "
        "Read the interaction tests, not the subgroup p-values. Adjusted by covariates, not propensity-weighted: "
        "confounding by indication remains."
    )
    return ModifierResult(
        subgroups=pl.DataFrame(out.subgroups, schema=_SUBGROUP_SCHEMA),
        interactions=pl.DataFrame(out.interactions, schema=_INTERACTION_SCHEMA),
        within_ketamine=within,
        notes=(caveat, *dict.fromkeys(out.notes)),
        fits=pl.DataFrame(out.fits, schema=_FIT_SCHEMA),
    )
