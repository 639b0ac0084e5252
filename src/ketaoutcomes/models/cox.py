"""Cox proportional hazards models, as R's ``coxph``.

Pure functions: a :class:`polars.DataFrame` goes in, a frozen result object comes
out. The estimation is done by :mod:`ketaoutcomes.models.cox_engine` (a vectorised
Newton-Raphson on the partial likelihood, as R's ``coxph``); this module chooses the
conventions and reports them the way R's ``survival`` package does, because R is
the oracle the tests in ``tests/reference`` compare against. The event indicator
and the dropping of incomplete rows follow :mod:`ketaoutcomes.models.common`;
Harrell's C comes from :mod:`ketaoutcomes.models.concordance`.

Conventions (each is also commented where it is applied):

* **Risk sets with delayed entry.** A row with entry time ``a`` and exit time
  ``b`` is at risk at time ``t`` when ``a < t <= b``, as in R's
  ``Surv(start, stop, event)`` (statsmodels' PHReg, used before, counts it at
  risk from ``t >= a``, which double-counts a subject at the boundary between two
  of its intervals).
* **Terms that cannot be estimated** (a level without events, a constant term)
  are reported as null with a note, and their rows left out of the fit
  (:func:`estimable`).

The argument checks (:func:`check_cox_arguments`), the design matrix
(:func:`design_matrix`), the estimable rows and terms (:func:`estimable`), the
summary table (:func:`summary_table`), the likelihood-ratio degrees of freedom
(:func:`lr_degrees_of_freedom`) and the result of a model that could not be
fitted (:func:`empty_cox`) are shared with the weighted Cox model of
:mod:`ketaoutcomes.models.weighted` (the design matrix also with
:mod:`ketaoutcomes.models.diagnostics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from ketaoutcomes.models.common import (
    drop_missing,
    event_indicator,
    format_level,
    level_codes,
    numeric,
    plural,
    quadratic_test,
    safe_exp,
)
from ketaoutcomes.models.concordance import concordance_counts, harrell_c, linear_predictor
from ketaoutcomes.models.cox_engine import fit_cox, partial_likelihood, risk_sets

__all__ = [
    "SUMMARY_COLS",
    "CoxResult",
    "Design",
    "Estimable",
    "check_cox_arguments",
    "cox_ph",
    "design_matrix",
    "empty_cox",
    "estimable",
    "lr_degrees_of_freedom",
    "summary_table",
    "term_table",
]

_TIES = ("efron", "breslow")


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class CoxResult:
    """A fitted Cox proportional hazards model.

    Attributes
    ----------
    summary : polars.DataFrame
        One row per term: ``term``, ``coef``, ``hr``, ``se``, ``z``, ``p_value``,
        ``hr_lower``, ``hr_upper`` (Wald intervals at ``1 - alpha``). A term that
        cannot be estimated (see ``notes``) has nulls.
    n : int
        Rows analysed (after dropping rows with missing values).
    n_events : int
        Events among them.
    n_dropped : int
        Rows dropped for missing values.
    loglik, loglik_null : float
        Log partial likelihood at the estimate and at zero.
    lr_chi2, lr_df, lr_p : float, int, float
        Likelihood-ratio test of all terms.
    wald_chi2 : float
        Wald test of all estimated terms.
    score_chi2 : float or None
        Score (log-rank) test at zero; None if the information matrix is singular.
    concordance : float or None
        Harrell's C as R's ``coxph`` reports it (see :func:`cox_ph`).
    ties, strata, alpha
        The options used.
    notes : tuple of str
        Dropped rows, dropped strata, terms that could not be estimated,
        convergence problems.
    converged : bool
        Whether Newton-Raphson converged to a finite maximum.
    """

    summary: pl.DataFrame
    n: int
    n_events: int
    n_dropped: int
    loglik: float
    loglik_null: float
    lr_chi2: float
    lr_df: int
    lr_p: float
    wald_chi2: float
    score_chi2: float | None
    concordance: float | None
    ties: str
    strata: str | None
    alpha: float
    notes: tuple[str, ...]
    converged: bool
    entry: str | None = None
    terms: tuple[str, ...] = field(default=())
    #: term -> (variable, level): ``ARM[ketamine_iv]`` -> (``ARM``, ``ketamine_iv``), a numeric
    #: covariate ``AGE`` -> (``AGE``, None). Read it (:meth:`term_table`) instead of parsing terms.
    term_parts: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)

    def term_table(self) -> pl.DataFrame:
        """``term``, ``variable``, ``level`` of every term (see :func:`term_table`)."""
        return term_table(self.terms, self.term_parts)


# --------------------------------------------------------------------------- Cox
@dataclass
class Design:
    """A Cox model's design matrix: ``X`` (rows x terms), the term ``names`` and where each came from."""

    X: np.ndarray
    names: list[str]
    # term name -> categorical column it came from (None for numeric covariates)
    source: dict[str, str | None]
    # term name -> (variable, level): the column and, for a categorical one, the level's label
    parts: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def term_table(terms: Sequence[str], parts: Mapping[str, tuple[str, str | None]]) -> pl.DataFrame:
    """One row per term: ``term``, ``variable`` (the covariate column) and ``level`` (the level of
    a categorical covariate, null for a numeric one). A term not in ``parts`` is its own variable."""
    rows = [(t, *parts.get(t, (t, None))) for t in terms]
    return pl.DataFrame(rows, schema={"term": pl.String, "variable": pl.String, "level": pl.String}, orient="row")


def design_matrix(
    data: pl.DataFrame, covariates: Sequence[str], categorical: Mapping[str, Any]
) -> tuple[Design, list[str]]:
    """The design of ``covariates``: numeric ones as they are, ``categorical`` ones as 0/1 dummies
    of their non-reference levels (see :func:`cox_ph`); notes say when a column has no terms."""
    cols: list[np.ndarray] = []
    names: list[str] = []
    source: dict[str, str | None] = {}
    parts: dict[str, tuple[str, str | None]] = {}
    notes: list[str] = []
    for cov in covariates:
        s = data[cov]
        if cov in categorical:
            ref = format_level(categorical[cov])
            codes, labels = level_codes(s)
            if ref not in labels:
                raise ValueError(f"reference level {ref!r} of {cov!r} is not among the analysed values {labels}")
            # one 0/1 column per non-reference level, in the column's natural order
            for k, label in enumerate(labels):
                if label == ref:
                    continue
                name = f"{cov}[{label}]"
                cols.append((codes == k).astype(float))
                names.append(name)
                source[name] = cov
                parts[name] = (cov, label)
            if len(labels) == 1:
                notes.append(f"{cov} has only its reference level {ref!r} in the analysed rows: no terms")
        else:
            if s.dtype == pl.String or s.dtype == pl.Categorical or s.dtype == pl.Enum:
                raise ValueError(f"covariate {cov!r} is not numeric: give its reference level in `categorical`")
            cols.append(numeric(s, "covariate"))
            names.append(cov)
            source[cov] = None
            parts[cov] = (cov, None)
    X = np.column_stack(cols) if cols else np.zeros((data.height, 0))
    return Design(X, names, source, parts), notes


def _is_constant(x: np.ndarray) -> bool:
    """At most one distinct value (as ``np.unique(x).size <= 1``, in O(n))."""
    return x.size == 0 or bool(x.min() == x.max())


def _two_values(x: np.ndarray) -> tuple[float, float] | None:
    """The two distinct values of ``x``, smaller first, if it has exactly two (O(n))."""
    if x.size == 0:
        return None
    lo, hi = x.min(), x.max()
    if lo == hi or not np.all((x == lo) | (x == hi)):
        return None
    return lo, hi


def _non_estimable(
    design: Design, status: np.ndarray, categorical: Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, str], list[str], list[str]]:
    """Find terms whose MLE is infinite because a level has no events.

    Returns the rows to keep in the fit, a map ``term -> reason`` for terms
    reported as null, the columns to leave out of the fit, and notes.

    If a binary term's level has no events, its coefficient runs to -inf (or +inf
    when the other level has none) and R stops at about |coef| = 20 with a
    warning. The maximum over the other coefficients is then the fit without the
    rows of that level (they drop out of every risk set in the limit), which is
    what is fitted here; the term itself is reported as null with a note.
    """
    n = len(status)
    keep = np.ones(n, dtype=bool)
    null_terms: dict[str, str] = {}
    drop_cols: set[str] = set()
    notes: list[str] = []
    ref_done: set[str] = set()
    changed = True
    while changed:
        changed = False
        # categorical variables: a level (reference included) without events
        for cov in categorical:
            terms = [t for t in design.names if design.source.get(t) == cov and t not in drop_cols]
            if not terms:
                continue
            idx = [design.names.index(t) for t in terms]
            sub = design.X[:, idx]
            is_ref = keep & (sub.sum(axis=1) == 0)
            ref_label = format_level(categorical[cov])
            if cov not in ref_done and is_ref.any() and status[is_ref].sum() == 0:
                ref_done.add(cov)
                keep &= ~is_ref
                for t in terms:
                    null_terms.setdefault(t, f"reference level {ref_label!r} of {cov} has no events")
                # the remaining levels still adjust the other terms: keep their contrasts
                # against the first remaining level (not reported, as they have another reference)
                drop_cols.add(terms[0])
                notes.append(
                    f"reference level {ref_label!r} of {cov} has no events ({plural(int(is_ref.sum()), 'row')}): "
                    f"hazard ratios against it are not estimable (infinite); {cov} terms reported as null, "
                    "those rows left out of the fit"
                )
                changed = True
                continue
            for t, j in zip(terms, idx, strict=True):
                rows = keep & (design.X[:, j] == 1)
                if rows.any() and status[rows].sum() == 0:
                    keep &= ~rows
                    drop_cols.add(t)
                    null_terms[t] = f"level of {cov} has no events"
                    notes.append(
                        f"{t} has no events ({plural(int(rows.sum()), 'row')}): its hazard ratio is not "
                        "estimable (tends to 0); reported as null, those rows left out of the fit"
                    )
                    changed = True
        # numeric binary covariates (e.g. an arm coded 0/1)
        for j, t in enumerate(design.names):
            if design.source.get(t) is not None or t in drop_cols:
                continue
            values = _two_values(design.X[keep, j])
            if values is None:
                continue
            for v, direction in ((values[1], "tends to 0"), (values[0], "is infinite")):
                rows = keep & (design.X[:, j] == v)
                if status[rows].sum() == 0:
                    keep &= ~rows
                    drop_cols.add(t)
                    null_terms[t] = f"{t} = {format_level(float(v))} has no events"
                    notes.append(
                        f"{t} = {format_level(float(v))} has no events ({plural(int(rows.sum()), 'row')}): "
                        f"the hazard ratio for {t} {direction} and is not estimable; reported as null, "
                        "those rows left out of the fit"
                    )
                    changed = True
                    break
    # constant columns (after the exclusions) carry no information
    for j, t in enumerate(design.names):
        if t in drop_cols or not keep.any():
            continue
        if _is_constant(design.X[keep, j]):
            drop_cols.add(t)
            null_terms[t] = f"{t} is constant"
            notes.append(f"{t} is constant in the analysed rows: not estimable, reported as null")
    return keep, null_terms, [t for t in design.names if t in drop_cols], notes


SUMMARY_COLS = ("coef", "hr", "se", "z", "p_value", "hr_lower", "hr_upper")


def empty_cox(names: Sequence[str], n: int, n_events: int, n_dropped: int, ties: str, strata: str | None,
              alpha: float, notes: Sequence[str], entry: str | None,
              parts: Mapping[str, tuple[str, str | None]] | None = None) -> CoxResult:
    """The result of a Cox model that could not be fitted: every term null, the reason in the notes."""
    summary = pl.DataFrame(
        {"term": list(names), **{c: [None] * len(names) for c in SUMMARY_COLS}},
        schema={"term": pl.String, **{c: pl.Float64 for c in SUMMARY_COLS}},
    )
    return CoxResult(
        summary, n, n_events, n_dropped, math.nan, math.nan, math.nan, len(names), math.nan,
        math.nan, None, None, ties, strata, alpha, tuple(notes), False, entry, tuple(names), dict(parts or {}),
    )  # fmt: skip


def check_cox_arguments(
    covariates: Sequence[str], categorical: Mapping[str, Any] | None, alpha: float, *, ties: str | None = None
) -> tuple[list[str], dict[str, Any]]:
    """The checks of a Cox model's arguments (shared by cox_ph and the weighted model).

    Returns ``covariates`` as a list and ``categorical`` as a dict; raises
    ``ValueError`` for unknown ``ties`` (when given), an ``alpha`` outside (0, 1),
    no or duplicated covariates, or a categorical column that is not a covariate.
    """
    categorical = dict(categorical or {})
    covariates = list(covariates)
    if ties is not None and ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, not {ties!r}")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    if not covariates:
        raise ValueError("covariates must name at least one column")
    if len(set(covariates)) != len(covariates):
        raise ValueError("covariates has duplicates")
    unknown = [c for c in categorical if c not in covariates]
    if unknown:
        raise ValueError(f"categorical columns {unknown} are not in covariates")
    return covariates, categorical


def summary_table(
    names: Sequence[str],
    null_terms: Mapping[str, str],
    fit_names: Sequence[str],
    params: np.ndarray,
    se: np.ndarray,
    alpha: float,
) -> pl.DataFrame:
    """One row per term of ``names``, as :attr:`CoxResult.summary` (shared by cox_ph and the weighted model).

    ``params`` and ``se`` are the estimates and standard errors of the fitted
    terms ``fit_names``; ``z``, ``p_value`` and the hazard-ratio interval are Wald
    from them at ``1 - alpha``. A term in ``null_terms`` or not fitted has nulls.
    """
    z_crit = float(stats.norm.ppf(1 - alpha / 2))
    zval = params / se
    pval = 2 * stats.norm.sf(np.abs(zval))
    est = {name: i for i, name in enumerate(fit_names)}
    rows: list[dict[str, Any]] = []
    for name in names:
        if name in null_terms or name not in est:
            rows.append({"term": name})
            continue
        i = est[name]
        rows.append(
            {
                "term": name,
                "coef": params[i],
                "hr": safe_exp(params[i]),
                "se": se[i],
                "z": zval[i],
                "p_value": pval[i],
                "hr_lower": safe_exp(params[i] - z_crit * se[i]),
                "hr_upper": safe_exp(params[i] + z_crit * se[i]),
            }
        )
    return pl.DataFrame(rows, schema={"term": pl.String, **{c: pl.Float64 for c in SUMMARY_COLS}})


def lr_degrees_of_freedom(names: Sequence[str], null_terms: Mapping[str, str]) -> int:
    """Degrees of freedom of the likelihood-ratio test of all terms, as R counts them."""
    # R counts every estimated term, infinite ones included, but not aliased
    # (constant) ones, whose coefficient it reports as NA.
    return len(names) - sum(1 for why in null_terms.values() if why.endswith("is constant"))


@dataclass(frozen=True)
class Estimable:
    """The rows (``keep``) and terms (``fit_cols``/``fit_names``) a Cox model can use, the terms
    reported as null (``null_terms``: term -> reason), notes, and why nothing can be fitted."""

    keep: np.ndarray
    null_terms: Mapping[str, str]
    fit_cols: list[int]
    fit_names: list[str]
    notes: tuple[str, ...]
    reason: str | None  # set when nothing can be fitted


def estimable(design: Design, d: np.ndarray, categorical: Mapping[str, Any], n_events: int) -> Estimable:
    """Which rows and terms a Cox model can use (shared by cox_ph and the weighted model)."""
    if n_events == 0:
        return Estimable(np.zeros(len(d), bool), {}, [], [], (), "no events: the model was not fitted")
    keep, null_terms, drop_cols, notes = _non_estimable(design, d, categorical)
    fit_cols = [j for j, name in enumerate(design.names) if name not in drop_cols]
    fit_names = [design.names[j] for j in fit_cols]
    reason = "no estimable terms: the model was not fitted" if not fit_cols or d[keep].sum() == 0 else None
    return Estimable(keep, null_terms, fit_cols, fit_names, tuple(notes), reason)


def _concordance(X: np.ndarray, params: np.ndarray, keep: np.ndarray, t: np.ndarray, d: np.ndarray,
                 e: np.ndarray | None, s_codes: np.ndarray | None) -> float | None:
    """Harrell's C of the fit's linear predictor (rows ``keep`` False rank below every other row)."""
    n = len(t)
    lp = linear_predictor(X, params)
    if keep.all():
        ranks = lp  # only the order matters
    else:
        order = np.lexsort((lp, keep))  # excluded rows first, then by lp
        ranks = np.empty(n, dtype=np.int64)
        sorted_keys = np.column_stack((keep[order], lp[order]))
        new_rank = np.ones(n, dtype=bool)
        new_rank[1:] = np.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)
        ranks[order] = np.cumsum(new_rank) - 1
    return harrell_c(concordance_counts(t, d, ranks, entry=e, strata=s_codes))


def cox_ph(
    frame: pl.DataFrame,
    *,
    time: str,
    event: str,
    covariates: Sequence[str],
    categorical: Mapping[str, Any] | None = None,
    strata: str | None = None,
    entry: str | None = None,
    ties: str = "efron",
    alpha: float = 0.05,
    concordance: bool = True,
) -> CoxResult:
    """Fit a Cox proportional hazards model, as R's ``coxph``.

    Parameters
    ----------
    frame : polars.DataFrame
        One row per subject, or per interval for counting-process data.
    time : str
        Event or censoring time (the interval's end with ``entry``).
    event : str
        1 = event, 0 = censored (booleans accepted; :func:`cnsr_to_event`
        converts ADaM CNSR).
    covariates : sequence of str
        Model columns in order. Numeric (or boolean) columns are used as they
        are; the ones named in ``categorical`` are expanded to dummies.
    categorical : mapping of str to level, optional
        ``{column: reference_level}``. Each other level gets a 0/1 term named
        ``f"{column}[{level}]"``, in the column's natural sort order. Levels are
        matched as strings, and whole floats print as integers, so ``1``,
        ``1.0`` and ``"1"`` name the same level.
    strata : str, optional
        Column defining strata with separate baseline hazards (R's ``strata()``).
    entry : str, optional
        Left-truncation (delayed entry) time, for counting-process data: a row is
        at risk at ``t`` when ``entry < t <= time``, as R's
        ``Surv(entry, time, event)``. Must be smaller than ``time`` in every row.
    ties : {"efron", "breslow"}, default "efron"
        Handling of tied event times. Efron is R's ``coxph`` default.
    alpha : float, default 0.05
        Wald intervals for the hazard ratios have coverage ``1 - alpha``.
    concordance : bool, default True
        Compute Harrell's C (``CoxResult.concordance``; None when False): a fit whose C nobody reads
        (the PH test's refit, the effect modifiers', the relapse model's) skips its O(n log n) pair
        counts, about 0.9 s at a million rows.

    Returns
    -------
    CoxResult

    Notes
    -----
    * Rows with a missing value in any model column are dropped and counted.
    * Standard errors are the model-based (inverse information) ones, as R's
      ``se(coef)``; p-values and intervals are Wald.
    * The likelihood-ratio test compares with the null log partial likelihood of
      the same rows; the score test is evaluated at zero, as R's "Score (logrank)
      test"; ``lr_df`` counts every term but constant ones, as R does.
      R's standard error of the concordance is not computed.
    * Newton-Raphson stops as R's does (log-likelihood changing by at most 1e-9
      relative, at most 20 iterations, step halving), then takes Newton steps to
      the maximum (:func:`~ketaoutcomes.models.cox_engine.fit_cox`); ``converged``
      is False, with a note, when R's criterion is not met or a further Newton
      step would still move a coefficient.
    * Cost: one sort, then O(n p^2) per iteration (no loop over rows or event
      times), with day-level ties or continuous times alike; Harrell's C is
      O(n log n).
    * Concordance is Harrell's C as R's ``coxph`` reports it: pairs are
      compared within strata over risk sets (so delayed entry is respected), a tie
      in the linear predictor counts 1/2, pairs with tied event times are left
      out, and a row censored at an event time counts as the longer survivor.
    * Strata without events carry no information (a note says how many).
    * A binary term whose level has no events (for example an arm without
      events) has an infinite maximum-likelihood estimate. Its row is reported
      with nulls and a note, and the other terms are fitted without the rows of
      that level, which is the limit R's estimates approach.
    """
    covariates, categorical = check_cox_arguments(covariates, categorical, alpha, ties=ties)

    cols = [time, event, *covariates] + [c for c in (strata, entry) if c is not None]
    data, n_dropped, notes = drop_missing(frame, cols)
    n = data.height
    t = numeric(data[time], "time")
    d = event_indicator(data[event])
    if (t < 0).any():
        raise ValueError(f"time column {time!r} has negative values")
    e = None
    if entry is not None:
        e = numeric(data[entry], "entry")
        bad = int((e >= t).sum())
        if bad:
            # R's Surv(start, stop, event) refuses these too ("Stop time must be > start time").
            raise ValueError(f"{plural(bad, 'row')} with {entry} >= {time}: intervals must have entry < time")
    s_codes = level_codes(data[strata])[0] if strata is not None else None

    design, design_notes = design_matrix(data, covariates, categorical)
    notes += design_notes
    n_events = int(d.sum())
    names = design.names

    def empty_result(reason: str) -> CoxResult:
        return empty_cox(names, n, n_events, n_dropped, ties, strata, alpha, [*notes, reason], entry, design.parts)

    est = estimable(design, d, categorical, n_events)
    notes += est.notes
    if est.reason:
        return empty_result(est.reason)
    keep, null_terms, fit_cols, fit_names = est.keep, est.null_terms, est.fit_cols, est.fit_names

    if s_codes is not None:
        s_fit = s_codes[keep]
        n_strata = len(np.unique(s_fit))
        with_events = len(np.unique(s_fit[d[keep] == 1]))
        if with_events < n_strata:
            k = n_strata - with_events
            notes.append(f"{k} {'stratum' if k == 1 else 'strata'} dropped for having no events")
    else:
        s_fit = None

    X_fit = design.X if keep.all() and len(fit_cols) == len(names) else design.X[np.ix_(keep, fit_cols)]
    e_fit = None if e is None else e[keep]
    fit = fit_cox(risk_sets(t[keep], d[keep], X_fit, entry=e_fit, strata=s_fit, ties=ties))
    params = fit.beta
    cov = fit.var
    bse = np.sqrt(np.diag(cov))

    converged = bool(fit.converged and np.all(np.isfinite(params)) and np.all(np.isfinite(bse)))
    if not fit.converged:
        notes.append(f"Newton-Raphson did not converge in {fit.iterations} iterations")
    elif not converged:
        notes.append("Newton-Raphson did not converge: the information matrix is singular at the estimate")
    if converged:
        # one more Newton step should not move the estimate (R checks the same way
        # for coefficients that may be infinite)
        step = cov @ fit.score
        if np.any(np.abs(step) > 1e-6 * (1 + np.abs(params))):
            converged = False
            notes.append("Newton-Raphson did not converge: a further step changes the estimates")
    big = [fit_names[i] for i in range(len(params)) if abs(params[i]) > 15]
    if big:
        notes.append(f"very large coefficient(s) {big}: may be infinite (monotone likelihood)")

    summary = summary_table(names, null_terms, fit_names, params, bse, alpha)

    # Log-likelihoods, LR and score tests are taken on all analysed rows (R's
    # view): the null likelihood does not depend on covariates, and in the limit
    # the excluded rows add nothing to the fitted one.
    loglik = fit.loglik
    if keep.all() and len(fit_cols) == len(names):  # nothing was left out
        loglik_null, score0, info0 = fit.loglik_init, fit.score_init, fit.information_init
    else:
        # all analysed rows; columns that vary over them (a constant one would make
        # the information matrix singular)
        varying = [j for j in range(design.X.shape[1]) if not _is_constant(design.X[:, j])]
        full = risk_sets(t, d, design.X[:, varying], entry=e, strata=s_codes, ties=ties)
        loglik_null, score0, info0 = partial_likelihood(full, np.zeros(len(varying)))
    lr_chi2 = 2 * (loglik - loglik_null)
    lr_df = lr_degrees_of_freedom(names, null_terms)
    lr_p = float(stats.chi2.sf(lr_chi2, lr_df))
    wald_chi2 = quadratic_test(params, cov) if converged else math.nan  # b' V^-1 b
    wald_chi2 = math.nan if wald_chi2 is None else wald_chi2
    score_chi2 = quadratic_test(score0, info0)
    if score_chi2 is None:
        notes.append("score test not computed: information matrix at zero is singular")

    # Concordance on the linear predictor. Rows left out for a level without
    # events have a linear predictor of -inf in the limit: they rank below all
    # others (and among themselves by the rest of the predictor).
    c_index = _concordance(design.X[:, fit_cols], params, keep, t, d, e, s_codes) if concordance else None

    return CoxResult(
        summary=summary,
        n=n,
        n_events=n_events,
        n_dropped=n_dropped,
        loglik=loglik,
        loglik_null=loglik_null,
        lr_chi2=lr_chi2,
        lr_df=lr_df,
        lr_p=lr_p,
        wald_chi2=wald_chi2,
        score_chi2=score_chi2,
        concordance=c_index,
        ties=ties,
        strata=strata,
        alpha=alpha,
        notes=tuple(notes),
        converged=converged,
        entry=entry,
        terms=tuple(names),
        term_parts=design.parts,
    )
