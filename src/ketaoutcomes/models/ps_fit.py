"""Fitting a pair's propensity model from arrays: the checked options (:func:`fit_spec`), the
design, model, preference scores, equipoise and weights or matches of given rows (:func:`fit_core`),
which :func:`ketaoutcomes.models.propensity.fit_propensity` runs on the rows of a frame and
:class:`PropensityDraws` on draws of a pair's rows (the bootstrap of the primary contrasts), so both
give the same weights for the same rows, bit for bit (pure). The conventions are
:mod:`ketaoutcomes.models.propensity`'s.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ketaoutcomes.models.common import drop_missing, plural
from ketaoutcomes.models.matching import caliper_width, match_nearest
from ketaoutcomes.models.ps_design import CodedCovariates, Design
from ketaoutcomes.models.ps_model import PS_MODELS, fit_ps_model

__all__ = ["WEIGHTINGS", "FitCore", "FitSpec", "PropensityDraws", "fit_core", "fit_spec", "preference_score",
           "propensity_draws"]

#: Weighting schemes :func:`ketaoutcomes.models.propensity.fit_propensity` knows.
WEIGHTINGS = ("iptw", "overlap", "matching")


def _logit(p: np.ndarray | float) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(p) - np.log1p(-np.asarray(p))


def preference_score(ps: np.ndarray, share_treated: float) -> np.ndarray:
    """Walker et al. (2013) preference score: ``logit(pref) = logit(ps) - logit(P)``.

    ``ps`` of exactly 0 or 1 gives a preference of 0 or 1; NaN stays NaN.
    """
    ps = np.asarray(ps, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = _logit(ps) - _logit(share_treated)
        return 1.0 / (1.0 + np.exp(-z))


def _match(
    ps: np.ndarray, treated: np.ndarray, caliper: float | None, target: str, comparator: str
) -> tuple[np.ndarray, list[str], list[str]]:
    """1:1 matching for :func:`fit_core`: (match-set ids, notes, gate reasons). Never raises."""
    n_t = int((treated == 1).sum())
    notes: list[str] = []
    if len(ps) and np.all((ps > 0.0) & (ps < 1.0)):
        match_set = match_nearest(ps, treated, caliper=caliper, ratio=1)
        width = caliper_width(ps, caliper)
        rule = "no caliper" if width is None else f"caliper {caliper:g} SD of the logit PS = {width:.3g}"
        n_pairs = int(((match_set >= 0) & (treated == 1)).sum())
        notes.append(f"1:1 nearest-neighbour matching on the logit PS without replacement ({rule}): "
                     f"{plural(n_pairs, 'matched pair')}")
        n_unmatched = n_t - n_pairs
        if n_unmatched:
            why = "no unused comparator left" if width is None else "no unused comparator within the caliper"
            notes.append(f"{n_unmatched} of {n_t} {target} patients unmatched ({why})")
    else:
        match_set = np.full(len(ps), -1, dtype=np.int64)
        n_pairs = 0
        if len(ps) and not np.isnan(ps).all():
            notes.append("no matching: propensity scores of exactly 0 or 1 (or missing) have no finite logit")
    reasons = []
    if n_pairs < 2:
        reasons.append(f"fewer than 2 matched pairs ({n_pairs}) of {target} and {comparator} patients")
    return match_set, notes, reasons


# --------------------------------------------------------------------------- the fit, from arrays
@dataclass(frozen=True)
class FitSpec:
    """The checked options of :func:`~ketaoutcomes.models.propensity.fit_propensity` that the fit itself
    uses (no column names)."""

    target: str
    comparator: str
    covariates: list[str]
    categorical: set[str]
    weighting: str
    truncation: float | None  # None but for IPTW
    caliper: float | None
    min_equipoise: float
    equipoise_bounds: tuple[float, float]
    model: str
    ridge_variance: float
    min_level_prevalence: float
    notes: tuple[str, ...]  # what the options imply (no truncation of overlap weights...)


def fit_spec(target: str, comparator: str, covariates: Sequence[str], categorical: Sequence[str], weighting: str,
             truncation: float | None, caliper: float | None, min_equipoise: float,
             equipoise_bounds: tuple[float, float], model: str, ridge_variance: float, min_level_prevalence: float
             ) -> FitSpec:
    """:func:`fit_propensity`'s options, checked (ValueError for a bad one: its docstring)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    if model not in PS_MODELS:
        raise ValueError(f"model must be one of {PS_MODELS}, not {model!r}")
    if not (isinstance(ridge_variance, numbers.Real) and math.isfinite(ridge_variance) and ridge_variance > 0):
        raise ValueError(f"ridge_variance must be a positive number, not {ridge_variance!r}")
    if not (isinstance(min_level_prevalence, numbers.Real) and 0 <= min_level_prevalence < 0.5):
        raise ValueError(f"min_level_prevalence must be in [0, 0.5), not {min_level_prevalence!r}")
    if target == comparator:
        raise ValueError("target and comparator must be different arms")
    covariates = list(dict.fromkeys(covariates))
    if not covariates:
        raise ValueError("at least one covariate is needed for a propensity model")
    cat = set(categorical)
    if not cat <= set(covariates):
        raise ValueError(f"categorical columns not among the covariates: {sorted(cat - set(covariates))}")
    lo, hi = equipoise_bounds
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"equipoise_bounds must satisfy 0 <= low < high <= 1, not {equipoise_bounds}")
    if truncation is not None and not truncation > 0:
        raise ValueError(f"truncation must be positive or None, not {truncation}")
    if caliper is not None and not (isinstance(caliper, numbers.Real) and math.isfinite(caliper) and caliper > 0):
        raise ValueError(f"caliper must be a positive number of SDs or None, not {caliper!r}")
    notes = []
    if weighting == "overlap" and truncation is not None:
        notes.append("overlap weights lie in [0, 1]; no truncation")
    if weighting == "matching" and truncation is not None:
        notes.append("matching gives weights of 1 (matched) or none (unmatched); no truncation")
    return FitSpec(target, comparator, covariates, cat, weighting, truncation if weighting == "iptw" else None, caliper,
                   min_equipoise, (lo, hi), model, ridge_variance, min_level_prevalence, tuple(notes))


@dataclass(frozen=True)
class FitCore:
    """What :func:`fit_core` gives: the design, model matrix, scores, preference scores, equipoise,
    weights (NaN: unmatched), match sets, counts and the gate's reasons so far."""

    design: Design
    X: np.ndarray | None
    ps: np.ndarray
    converged: bool
    pref: np.ndarray
    equipoise: float | None
    weight: np.ndarray
    match_set: np.ndarray | None
    n_t: int
    n_c: int
    n_mt: int
    n_mc: int
    n_truncated: int
    reasons: list[str]
    model: tuple[tuple[str, ...], np.ndarray] | None  # the model's columns and coefficients (None: no fit)


def fit_core(spec: FitSpec, treated: np.ndarray, coded: CodedCovariates, notes: list[str],
             freq: np.ndarray | None = None, start: tuple[tuple[str, ...], np.ndarray] | None = None) -> FitCore:
    """The design, propensity model, preference scores, equipoise and weights (or matches) of the rows
    ``treated`` (1 target, 0 comparator) with covariates ``coded``; appends to ``notes``. ``freq``
    (the ridge model with weights, not matching): row i stands for ``freq[i]`` (> 0) identical rows.
    ``start`` (ridge): (model columns, coefficients) of another fit, to start the Newton iterations from
    when this fit's model has the same columns (:func:`~ketaoutcomes.models.ps_model.fit_ps_model`)."""
    target, comparator, model, weighting = spec.target, spec.comparator, spec.model, spec.weighting
    trunc = spec.truncation
    if freq is not None and (model != "ridge" or weighting == "matching"):
        raise ValueError("rows with frequencies are for the ridge model's weights only (matching pairs rows)")
    n_t = int(treated.sum()) if freq is None else int(round(float(freq @ treated)))
    n_c = int(len(treated) - treated.sum()) if freq is None else int(round(float(freq.sum()))) - n_t
    reasons: list[str] = []
    design = coded.design(spec.min_level_prevalence, freq)
    if design.refs:
        notes.append("reference levels: " + ", ".join(f"{c}={lvl}" for c, lvl in design.refs))
    if design.left_out:
        n_all = n_t + n_c
        notes.append(
            f"levels rarer than {spec.min_level_prevalence:.3g} of the {n_all:,} patients (min_level_prevalence) "
            "left out of the propensity model and the balance gate: "
            + ", ".join(f"{name} ({k} patients, {k / n_all:.1%})" for name, k in design.left_out))

    # --- the propensity model
    ps: np.ndarray | None = None
    converged = False
    X = None
    fitted = None
    if n_t < 2 or n_c < 2:
        reasons.append(
            f"a diagnostic could not be computed: too few patients to fit a propensity model "
            f"({n_t} {target}, {n_c} {comparator})"
        )
    else:
        model_cols, names = [], []
        for name, x, flag in zip(design.names, design.values, design.in_model):
            if not flag:
                continue
            if np.ptp(x) == 0.0:
                # a constant column is collinear with the intercept: left out of the model
                notes.append(f"{name} is constant in the two arms; left out of the propensity model")
                continue
            model_cols.append(x)
            names.append(name)
        # (p, n) rows, seen as (n, p): the ridge fit works on the transposed design (ps_model._ridge)
        X = np.stack(model_cols).T if model_cols else np.empty((len(treated), 0))
        fit = fit_ps_model(treated.astype(float), X, model=model, variance=spec.ridge_variance, freq=freq,
                           start=start[1] if start is not None and start[0] == tuple(names) else None)
        ps, converged, fit_notes = fit.ps, fit.converged, list(fit.notes)
        fitted = None if fit.coef is None else (tuple(names), fit.coef)
        if model == "ridge":
            notes.append(f"ridge propensity model (L2 on the standardised covariates, prior variance "
                         f"{spec.ridge_variance:g}): {plural(fit.iterations, 'Newton iteration')}")
        notes += fit_notes
        separated = ps is not None and bool(np.min(ps[treated == 1]) > np.max(ps[treated == 0]))
        if separated and model == "logistic" and converged:
            # complete separation: the scores order the arms perfectly
            converged = False
            fit_notes.append("the propensity scores separate the arms completely")
            notes.append(fit_notes[-1])
        if not converged:
            reasons.append("propensity model did not converge" + (f" ({'; '.join(fit_notes)})" if fit_notes else ""))
        elif separated:
            # a finite (penalised) fit whose scores still order the arms perfectly: no overlap at all
            notes.append("the propensity scores separate the arms completely")
            reasons.append("no overlap: the propensity scores separate the arms completely")

    n = n_t + n_c  # the rows (with freq: those they stand for)
    if ps is None:
        ps = np.full(len(treated), math.nan)

    # --- preference score and equipoise
    share = n_t / n if n else math.nan
    pref = preference_score(ps, share) if n else np.array([], dtype=float)
    equipoise: float | None
    if n == 0 or np.isnan(pref).any():
        equipoise = None
        reasons.append("a diagnostic could not be computed: equipoise (no finite propensity scores)")
    else:
        lo, hi = spec.equipoise_bounds
        inside = (pref >= lo) & (pref <= hi)
        equipoise = float(np.mean(inside)) if freq is None else float(freq @ inside) / n
        if equipoise < spec.min_equipoise:
            reasons.append(
                f"equipoise {equipoise:.1%} < {spec.min_equipoise:.0%} "
                f"(share of patients with preference score in [{lo:g}, {hi:g}])"
            )

    # --- weights
    match_set: np.ndarray | None = None
    n_mt = n_mc = 0
    if weighting == "matching":
        match_set, match_notes, match_reasons = _match(ps, treated, spec.caliper, target, comparator)
        notes += match_notes
        reasons += match_reasons
        matched = match_set >= 0
        n_mt, n_mc = int((matched & (treated == 1)).sum()), int((matched & (treated == 0)).sum())
        # 1 for matched patients, missing for the others (NaN here, null in `scores`)
        weight = np.where(matched, 1.0, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        if weighting == "iptw":
            # ATE weights stabilised by the marginal shares: P/ps and (1-P)/(1-ps)
            weight = np.where(treated == 1, share / ps, (1.0 - share) / (1.0 - ps))
        elif weighting == "overlap":
            weight = np.where(treated == 1, 1.0 - ps, ps)
    n_truncated = 0
    if trunc is not None:
        # truncation applies to the *stabilised* weights (CohortMethod's maxWeight)
        over = weight > trunc
        n_truncated = int(over.sum())
        weight = np.where(over, trunc, weight)
        if n_truncated:
            notes.append(f"{plural(n_truncated, 'stabilised IPTW weight')} truncated at {trunc:g}")

    return FitCore(design, X, ps, converged, pref, equipoise, weight, match_set, n_t, n_c, n_mt, n_mc, n_truncated,
                   reasons, fitted)


@dataclass(frozen=True)
class PropensityDraws:
    """A pair's rows prepared once for refitting its propensity model on draws of them (a bootstrap).

    With matching, or the unpenalised model, :meth:`weights` of a draw are, bit for bit, the weights
    :func:`~ketaoutcomes.models.propensity.fit_propensity` gives on the frame of the drawn rows (its
    design, reference and rare levels, model, weights or matches), without building that frame. With the
    ridge model and IPTW or overlap weights (the default), rows with the same arm and covariates are one
    *pattern*: a draw is the count of each pattern in it, the model is fitted on the patterns drawn with
    their counts as frequency weights, and each drawn row gets its pattern's weight. That is the same
    fit of the same draw (its penalised likelihood is the sum of its rows'), in fewer rows, so the
    weights differ from the row-level fit's only by rounding (``tests/unit/test_ps_draws.py``); its Newton
    iterations start from the fit of the whole pair (the same maximum, in some two thirds of the steps)."""

    spec: FitSpec
    position: np.ndarray  # of each row of the frame among the rows kept (-1: dropped for a missing covariate)
    treated: np.ndarray  # of the rows kept, or of the patterns
    coded: CodedCovariates  # of the rows kept, or of the patterns
    pattern: np.ndarray | None = None  # of each row kept (None: no patterns, the rows are fitted)
    start: tuple[tuple[str, ...], np.ndarray] | None = None  # the ridge fit of the rows kept: where a draw's starts
    row_pattern: np.ndarray | None = None  # of each row of the frame (-1: dropped), with patterns
    dropped: bool = True  # whether any row of the frame was dropped (for a missing covariate)

    def weights(self, rows: np.ndarray) -> np.ndarray:
        """The weight of each drawn row (``rows``: indices into the frame, repeats allowed); 0 for a row
        without a usable weight (a missing covariate, unmatched, or a weight that is not finite and > 0)."""
        if self.pattern is None or self.row_pattern is None:
            at = self.position[rows]
            kept = np.flatnonzero(at >= 0)
            if self.pattern is None:
                core = fit_core(self.spec, self.treated[at[kept]], self.coded.take(at[kept]), [])
                out = np.zeros(len(rows))
                out[kept] = _usable(core.weight)
                return out
            drawn = self.pattern[at[kept]]
        else:  # each row's pattern looked up once (-1: a row dropped for a missing covariate)
            drawn = self.row_pattern[rows]
            kept = np.flatnonzero(drawn >= 0) if self.dropped else None
            if kept is not None:
                drawn = drawn[kept]
        count = np.bincount(drawn, minlength=len(self.treated))
        used = np.flatnonzero(count)
        core = fit_core(self.spec, self.treated[used], self.coded.take(used), [], freq=count[used].astype(float),
                        start=self.start)
        w = np.zeros(len(self.treated))
        w[used] = _usable(core.weight)
        if kept is None:  # every row kept
            return w[drawn]
        out = np.zeros(len(rows))
        out[kept] = w[drawn]
        return out


def _usable(weight: np.ndarray) -> np.ndarray:
    """The weights, 0 where not finite and > 0."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(weight) & (weight > 0), weight, 0.0)


def propensity_draws(frame: pl.DataFrame, *, target: str, comparator: str, covariates: Sequence[str],
                     categorical: Sequence[str] = (), arm: str = "ARM", weighting: str = "iptw",
                     truncation: float | None = 10.0, caliper: float | None = 0.2, min_equipoise: float = 0.2,
                     equipoise_bounds: tuple[float, float] = (0.3, 0.7), model: str = "ridge",
                     ridge_variance: float = 10.0, min_level_prevalence: float = 0.02) -> PropensityDraws:
    """``frame`` (rows of ``target`` and ``comparator`` only) prepared for :meth:`PropensityDraws.weights`,
    with :func:`~ketaoutcomes.models.propensity.fit_propensity`'s options that change the weights."""
    spec = fit_spec(target, comparator, covariates, categorical, weighting, truncation, caliper, min_equipoise,
                    equipoise_bounds, model, ridge_variance, min_level_prevalence)
    missing = [c for c in (arm, *spec.covariates) if c not in frame.columns]
    if missing:
        raise KeyError(f"columns not in frame: {missing}")
    if not frame[arm].is_in([target, comparator]).all():
        raise ValueError(f"propensity_draws takes the rows of {target} and {comparator} only")
    data = frame.select(arm, *spec.covariates).with_row_index("_i")
    data = drop_missing(data, spec.covariates)[0]
    position = np.full(frame.height, -1, dtype=np.int64)
    position[data["_i"].to_numpy()] = np.arange(data.height)
    treated = (data[arm] == target).cast(pl.Int8).to_numpy().astype(np.int64)
    coded = CodedCovariates.of(data, spec.covariates, spec.categorical)
    if model != "ridge" or weighting == "matching":  # matching pairs rows; statsmodels' Logit takes no weights
        return PropensityDraws(spec, position, treated, coded)
    # patterns: the distinct rows of (arm, covariates), a float by its bits
    key = np.column_stack([treated, *(x.view(np.int64) if x.dtype == np.float64 else x.astype(np.int64)
                                      for x in coded.columns)])
    first, pattern = np.unique(key, axis=0, return_index=True, return_inverse=True)[1:]
    pattern = pattern.reshape(-1)
    count = np.bincount(pattern).astype(float)
    # the fit of all the rows kept: each draw's Newton iterations start there (fewer of them; the same maximum)
    try:
        whole = fit_core(spec, treated[first], coded.take(first), [], freq=count).model
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):  # no start: each draw from the empty model
        whole = None
    row_pattern = np.full(frame.height, -1, dtype=np.int64)
    row_pattern[position >= 0] = pattern[position[position >= 0]]
    return PropensityDraws(spec, position, treated[first], coded.take(first), pattern, whole, row_pattern,
                           dropped=bool((position < 0).any()))
