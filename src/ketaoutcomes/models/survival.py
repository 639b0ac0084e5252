"""Survival models: Kaplan-Meier, log-rank and Cox proportional hazards.

Pure functions: a :class:`polars.DataFrame` goes in, a frozen result object comes
out. The estimation is done by statsmodels
(:class:`statsmodels.duration.survfunc.SurvfuncRight`,
:func:`statsmodels.duration.survfunc.survdiff`,
:class:`statsmodels.duration.hazard_regression.PHReg`); this module chooses the
conventions and reports them the way R's ``survival`` package does, because R is
the oracle the tests in ``tests/reference`` compare against.

Conventions (each is also commented where it is applied):

* **Event indicator.** Every function takes an ``event`` column with
  ``1`` = event and ``0`` = censored (booleans are accepted). ADaM time-to-event
  data has ``CNSR`` with the opposite sense; convert it with
  :func:`cnsr_to_event`, the only place that conversion happens. Any other value
  (for example R's ``status`` coded 1/2) is rejected, not guessed at.
* **Missing values.** Rows with a missing value (null or NaN) in any column a
  model uses are dropped, counted (``n_dropped``) and described in ``notes``, as
  R's default ``na.action = na.omit`` does.
* **Risk sets with delayed entry.** A row with entry time ``a`` and exit time
  ``b`` is at risk at time ``t`` when ``a < t <= b``, as in R's
  ``Surv(start, stop, event)``. statsmodels' PHReg counts it at risk from
  ``t >= a``, which double-counts a subject at the boundary between two of its
  intervals; see :func:`cox_ph`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy import stats
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from ketaoutcomes.models.common import (
    ALL_GROUP,
    ci_band,
    drop_missing,
    event_indicator,
    format_level,
    level_codes,
    numeric,
    plural,
    quadratic_test,
    safe_exp,
)

__all__ = [
    "CoxResult",
    "KMResult",
    "LogRankResult",
    "cox_ph",
    "kaplan_meier",
    "logrank_test",
]

#: Confidence-interval transforms for the survival curve, named as R's
#: ``survfit(conf.type=...)`` names them.
CONF_TYPES = ("log", "log-log", "plain")

#: R's ``survmean``/``quantile.survfit`` tolerance (``sqrt(.Machine$double.eps)``) for deciding
#: that a survival curve sits exactly at the requested probability.
_R_QUANTILE_TOL = math.sqrt(np.finfo(float).eps)

_TIES = ("efron", "breslow")

_KM_TABLE_SCHEMA = {
    "group": pl.String,
    "time": pl.Float64,
    "n_risk": pl.Int64,
    "n_event": pl.Int64,
    "n_censor": pl.Int64,
    "survival": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
}


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class KMResult:
    """Kaplan-Meier estimates per group.

    Attributes
    ----------
    table : polars.DataFrame
        One row per distinct observed time (event or censoring) per group, like
        R's ``summary(survfit(...), censored = TRUE)``: ``group`` (str), ``time``,
        ``n_risk``, ``n_event``, ``n_censor``, ``survival``, ``lower``, ``upper``.
        ``lower``/``upper`` are null where R gives NA (for example once the
        survival estimate reaches 0 with ``conf_type="log"``).
    medians : polars.DataFrame
        One row per group: ``group``, ``n``, ``events``, ``median``,
        ``median_lower``, ``median_upper``; null when not reached.
    alpha : float
        The intervals have coverage ``1 - alpha``.
    conf_type : str
        The transform of the pointwise interval (R's ``conf.type``).
    n_dropped : int
        Rows dropped for missing values.
    notes : tuple of str
        Dropped rows, groups without events and similar remarks.
    """

    table: pl.DataFrame
    medians: pl.DataFrame
    alpha: float
    conf_type: str
    n_dropped: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogRankResult:
    """Log-rank test of equal survival across groups (R's ``survdiff``, rho = 0).

    Attributes
    ----------
    chi2 : float
        The test statistic; NaN if there are no events.
    df : int
        Degrees of freedom: groups with a positive expected count, minus one (as R).
    p_value : float
        Upper tail of the chi-square distribution with ``df`` degrees of freedom.
    groups : polars.DataFrame
        ``group`` (str), ``n``, ``observed``, ``expected`` (summed over strata).
    strata : str or None
        The stratification column, if any.
    n_dropped : int
        Rows dropped for missing values.
    notes : tuple of str
        Remarks such as dropped rows.
    """

    chi2: float
    df: int
    p_value: float
    groups: pl.DataFrame
    strata: str | None = None
    n_dropped: int = 0
    notes: tuple[str, ...] = ()


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


# --------------------------------------------------------------------------- Kaplan-Meier
def _r_median(time: np.ndarray, curve: np.ndarray, tol: float = _R_QUANTILE_TOL) -> float | None:
    """Median as R's ``print(survfit)`` computes it (``survival:::survmean``'s ``minmin``).

    The first time the curve is at or below 0.5 (within ``tol``); if it sits at
    exactly 0.5 there and drops lower later, the midpoint between that time and
    the time of the drop. NaN entries (R's NA) are ignored. ``None`` when the
    curve never reaches 0.5. Applied to the lower and upper bands this gives
    R's printed ``0.95LCL`` and ``0.95UCL``.

    R's ``quantile.survfit`` uses a slightly different rule (``findq``): when a
    curve *ends* at exactly 0.5 it returns the midpoint with the last observed
    time, where the printed median gives the first time at 0.5. The printed
    value is the one reported here.
    """
    keep = ~np.isnan(curve) & (curve < 0.5 + tol)
    if not keep.any():
        return None
    x, y = time[keep], curve[keep]
    if abs(y[0] - 0.5) < tol:
        lower = np.flatnonzero(y < y[0])
        if len(lower):
            return float((x[0] + x[lower[0]]) / 2)
    return float(x[0])


def _km_one_group(time: np.ndarray, status: np.ndarray) -> dict[str, np.ndarray]:
    """KM table over all distinct times of one group (event or censoring)."""
    utime, inverse = np.unique(time, return_inverse=True)
    n_at = np.bincount(inverse, minlength=len(utime))
    n_event = np.bincount(inverse, weights=status, minlength=len(utime)).astype(np.int64)
    n_censor = n_at - n_event
    n_risk = np.cumsum(n_at[::-1])[::-1]
    surv = np.ones(len(utime))
    if n_event.any():
        # statsmodels gives S(t) at the event times; carry it over censoring-only times.
        sf = SurvfuncRight(time, status)
        pos = np.searchsorted(sf.surv_times, utime, side="right") - 1
        surv = np.where(pos >= 0, sf.surv_prob[np.clip(pos, 0, None)], 1.0)
    # Greenwood on the log scale, as R's survfit std.err: sum d / (n (n - d)).
    # When n == d the sum is infinite (S = 0), matching R's NA interval.
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(n_event > 0, n_event / (n_risk * (n_risk - n_event).astype(float)), 0.0)
    se_log = np.sqrt(np.cumsum(term))
    return {
        "time": utime,
        "n_risk": n_risk,
        "n_event": n_event,
        "n_censor": n_censor,
        "survival": surv,
        "se_log": se_log,
    }


def _median_row(label: str, n: int, events: float, g: dict, lower, upper, notes: list[str]) -> dict:
    """One group's median and its CI (R's rule on the curve and its band); notes a group without events."""
    if events == 0:
        notes.append(f"group {label!r} has no events: survival stays at 1 and the median is not reached")
    return {
        "group": label,
        "n": n,
        "events": events,
        "median": _r_median(g["time"], g["survival"]),
        "median_lower": _r_median(g["time"], lower),
        "median_upper": _r_median(g["time"], upper),
    }


def _km_inputs(frame: pl.DataFrame, *, time: str, event: str, group: str | None, alpha: float, conf_type: str,
               extra: Sequence[str] = ()):
    """Checked inputs of a Kaplan-Meier fit (shared with the weighted one): the rows without
    missing values, their times, events, group codes and labels, and the normal quantile."""
    if conf_type not in CONF_TYPES:
        raise ValueError(f"conf_type must be one of {CONF_TYPES}, not {conf_type!r}")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    cols = [time, event, *extra] + ([group] if group is not None else [])
    data, n_dropped, notes = drop_missing(frame, cols)
    t = numeric(data[time], "time")
    if (t < 0).any():
        raise ValueError(f"time column {time!r} has negative values")
    d = event_indicator(data[event])
    if group is None:
        codes, labels = np.zeros(len(t), dtype=np.int64), [ALL_GROUP]
    else:
        codes, labels = level_codes(data[group])
    return data, n_dropped, notes, t, d, codes, labels, float(stats.norm.ppf(1 - alpha / 2))


def kaplan_meier(
    frame: pl.DataFrame,
    *,
    time: str,
    event: str,
    group: str | None = None,
    alpha: float = 0.05,
    conf_type: str = "log",
) -> KMResult:
    """Kaplan-Meier survival curves with pointwise intervals and median survival.

    Parameters
    ----------
    frame : polars.DataFrame
        One row per subject.
    time : str
        Column with the event or censoring time (non-negative).
    event : str
        Column with 1 = event, 0 = censored (booleans accepted). For ADaM
        ``CNSR`` use :func:`cnsr_to_event` first.
    group : str, optional
        Column whose values define the curves; ``None`` gives one curve labelled
        ``"all"``. Groups are sorted by the column's natural order and labelled
        with their values as strings.
    alpha : float, default 0.05
        Intervals have coverage ``1 - alpha``.
    conf_type : {"log", "log-log", "plain"}, default "log"
        Transform of the pointwise interval, as R's ``conf.type``. The default is
        R's ``survfit`` default ``"log"`` (SAS and statsmodels default to log-log).

    Returns
    -------
    KMResult

    Notes
    -----
    * The survival estimate comes from statsmodels' ``SurvfuncRight``; the
      interval uses Greenwood's variance of ``log S`` exactly as R's ``survfit``
      (``exp(log S -/+ z se)`` for ``"log"``, upper limit capped at 1).
    * The table lists every distinct time, censoring-only times included, like
      R's ``summary(fit, censored = TRUE)`` (R's default summary shows event
      times only).
    * The median and its interval follow R's ``print(survfit)``: the median is
      the first time the curve drops to 0.5 or below (the midpoint of the flat
      stretch if it sits exactly at 0.5 and drops later); the lower (upper)
      limit is where the lower (upper) pointwise band does so, which is R's
      ``0.95LCL``/``0.95UCL`` (see :func:`_r_median` for the one edge where
      R's ``quantile()`` differs). statsmodels' ``quantile_ci`` inverts a test
      instead (the SAS method) and always uses an observed event time, so it
      is not used.
    """
    data, n_dropped, notes, t, d, codes, labels, z = _km_inputs(
        frame, time=time, event=event, group=group, alpha=alpha, conf_type=conf_type)

    tables: list[pl.DataFrame] = []
    medians: list[dict[str, Any]] = []
    for k, label in enumerate(labels):
        mask = codes == k
        g = _km_one_group(t[mask], d[mask])
        lower, upper = ci_band(g["survival"], g["se_log"], z, conf_type)
        tables.append(
            pl.DataFrame(
                {
                    "group": [label] * len(g["time"]),
                    "time": g["time"],
                    "n_risk": g["n_risk"],
                    "n_event": g["n_event"],
                    "n_censor": g["n_censor"],
                    "survival": g["survival"],
                    "lower": lower,
                    "upper": upper,
                },
                schema=_KM_TABLE_SCHEMA,
            ).with_columns(pl.col("lower", "upper").fill_nan(None))
        )
        n_events = int(g["n_event"].sum())
        medians.append(_median_row(label, int(mask.sum()), n_events, g, lower, upper, notes))

    table = pl.concat(tables) if tables else pl.DataFrame(schema=_KM_TABLE_SCHEMA)
    med = pl.DataFrame(
        medians,
        schema={
            "group": pl.String,
            "n": pl.Int64,
            "events": pl.Int64,
            "median": pl.Float64,
            "median_lower": pl.Float64,
            "median_upper": pl.Float64,
        },
    )
    return KMResult(table=table, medians=med, alpha=alpha, conf_type=conf_type, n_dropped=n_dropped, notes=tuple(notes))


# --------------------------------------------------------------------------- log-rank
def _observed_expected(
    time: np.ndarray, status: np.ndarray, codes: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Observed and expected events per group in one stratum (rho = 0 weights)."""
    utime, inverse = np.unique(time, return_inverse=True)
    m = len(utime)
    cell = inverse * n_groups + codes
    at = np.bincount(cell, minlength=m * n_groups).reshape(m, n_groups)
    dead = np.bincount(cell, weights=status, minlength=m * n_groups).reshape(m, n_groups)
    risk = np.cumsum(at[::-1], axis=0)[::-1]  # at risk just before each time
    n_tot = risk.sum(axis=1)
    d_tot = dead.sum(axis=1)
    expected = (d_tot / n_tot)[:, None] * risk
    return dead.sum(axis=0), expected.sum(axis=0)


def logrank_test(
    frame: pl.DataFrame,
    *,
    time: str,
    event: str,
    group: str,
    strata: str | None = None,
) -> LogRankResult:
    """Log-rank test that survival is the same in all groups (R's ``survdiff``).

    Parameters
    ----------
    frame : polars.DataFrame
        One row per subject.
    time : str
        Event or censoring time.
    event : str
        1 = event, 0 = censored (see :func:`cnsr_to_event` for ADaM CNSR).
    group : str
        Column defining the groups (two or more).
    strata : str, optional
        Stratification column: observed minus expected and its variance are
        summed over strata, as R's ``survdiff(... + strata(s))``.

    Returns
    -------
    LogRankResult

    Notes
    -----
    The statistic comes from statsmodels' ``survdiff`` (unweighted, R's
    ``rho = 0``). Observed and expected counts are computed here with the same
    risk sets (statsmodels does not return them). Degrees of freedom are the
    number of groups with a positive expected count minus one, as R; the p-value
    is the chi-square upper tail (``scipy.stats.chi2.sf``, which keeps precision
    for small p).
    """
    cols = [time, event, group] + ([strata] if strata is not None else [])
    data, n_dropped, notes = drop_missing(frame, cols)
    t = numeric(data[time], "time")
    d = event_indicator(data[event])
    codes, labels = level_codes(data[group])
    if len(labels) < 2:
        raise ValueError(f"log-rank test needs at least two groups in {group!r}; found {labels}")
    s_codes = level_codes(data[strata])[0] if strata is not None else np.zeros(len(t), dtype=np.int64)

    observed = np.zeros(len(labels))
    expected = np.zeros(len(labels))
    for s in np.unique(s_codes):
        m = s_codes == s
        o, e = _observed_expected(t[m], d[m], codes[m], len(labels))
        observed += o
        expected += e
    n = np.bincount(codes, minlength=len(labels))
    groups = pl.DataFrame(
        {"group": labels, "n": n, "observed": observed, "expected": expected},
        schema={"group": pl.String, "n": pl.Int64, "observed": pl.Float64, "expected": pl.Float64},
    )
    df = int((expected > 0).sum()) - 1
    if d.sum() == 0:
        notes.append("no events: the log-rank test is undefined")
        return LogRankResult(math.nan, df, math.nan, groups, strata, n_dropped, tuple(notes))
    # A group with expected 0 is never at risk at an event time: it adds nothing
    # to the test and would make statsmodels' variance matrix singular. R leaves
    # it out of the degrees of freedom; it is left out of the statistic here.
    informative = expected > 0
    if informative.sum() < 2:
        notes.append("fewer than two groups are at risk at any event time: the log-rank test is undefined")
        return LogRankResult(math.nan, df, math.nan, groups, strata, n_dropped, tuple(notes))
    rows = informative[codes]
    chi2, _ = survdiff(t[rows], d[rows], codes[rows], strata=s_codes[rows] if strata is not None else None)
    chi2 = float(chi2)
    p = float(stats.chi2.sf(chi2, df))
    for k, label in enumerate(labels):
        if observed[k] == 0:
            notes.append(f"group {label!r} has no events")
    return LogRankResult(chi2, df, p, groups, strata, n_dropped, tuple(notes))


# --------------------------------------------------------------------------- concordance
def _preceding_points_below(
    point_pos: np.ndarray, point_val: np.ndarray, query_pos: np.ndarray, query_thr: np.ndarray
) -> np.ndarray:
    """For each query, count points with a smaller position and a value below its threshold.

    Offline 2-D dominance counting, vectorised over the levels of a binary tree of
    positions (O(n log^2 n), no per-row Python loop): at level ``l`` each query in
    a right child counts the points of the left sibling, and every earlier point
    is in exactly one such left sibling. Values and thresholds are integers in
    ``[0, M]``.
    """
    counts = np.zeros(len(query_pos), dtype=np.int64)
    if len(point_pos) == 0 or len(query_pos) == 0:
        return counts
    span = int(max(point_val.max(), query_thr.max())) + 2
    top = int(max(point_pos.max(), query_pos.max())) + 1
    level = 0
    while (1 << level) < top:
        pb = point_pos >> level
        qb = query_pos >> level
        left = (pb & 1) == 0
        right = (qb & 1) == 1
        if right.any() and left.any():
            keys = np.sort((pb[left] >> 1) * span + point_val[left])
            parent = (qb[right] >> 1) * span
            counts[right] += np.searchsorted(keys, parent + query_thr[right], "left") - np.searchsorted(
                keys, parent, "left"
            )
        level += 1
    return counts


def _concordance_counts(
    stop: np.ndarray,
    status: np.ndarray,
    score: np.ndarray,
    *,
    entry: np.ndarray | None = None,
    strata: np.ndarray | None = None,
) -> dict[str, float]:
    """Pair counts behind Harrell's C, with R ``survival::concordance`` conventions.

    A pair is comparable when one row has an event at ``t`` and the other is at
    risk then (``entry < t <= stop``, same stratum) and has not had an event at
    that same ``t``. A row censored at exactly ``t`` counts as surviving longer,
    as in R. ``score`` is the risk score (higher = shorter survival expected):
    a pair is concordant when the row with the event has the higher score;
    equal scores are ``tied_x`` and count 1/2 in the C statistic. Pairs with
    events at the same time are ``tied_y`` (``tied_xy`` if the scores tie too)
    and are left out, as R does.

    ``score`` may be an integer rank array; only its order matters.
    """
    n = len(stop)
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata, dtype=np.int64)
    _, rank = np.unique(score, return_inverse=True)
    width = n + 1
    base = strata * width
    val = base + rank  # stratum in the high digits: thresholds pick one stratum
    ev = np.flatnonzero(status == 1)
    if len(ev) == 0:
        return {"concordant": 0.0, "discordant": 0.0, "tied_x": 0.0, "tied_y": 0.0, "tied_xy": 0.0}

    # Queries: for event i, thresholds base_i, val_i, val_i + 1, base_i + width.
    q_thr = np.concatenate([base[ev], val[ev], val[ev] + 1, base[ev] + width])
    nq = len(ev)

    def count(point_key: np.ndarray, point_order: np.ndarray, query_key: np.ndarray, query_order: int) -> np.ndarray:
        # one sequence, sorted by key descending, then by order within a key;
        # a point is counted for the queries that come after it
        keys = np.concatenate([point_key, query_key])
        order = np.concatenate([point_order, np.full(len(query_key), query_order)])
        seq = np.lexsort((order, -keys))
        pos = np.empty(len(seq), dtype=np.int64)
        pos[seq] = np.arange(len(seq))
        ppos, qpos = pos[: len(point_key)], pos[len(point_key) :]
        c = _preceding_points_below(ppos, val, np.tile(qpos, 4), q_thr)
        return c.reshape(4, nq)

    # Rows still at risk at t: stop > t, or stop == t and censored (order 0 before
    # the query's 1); events at t (order 2) come after the query and are excluded.
    c_stop = count(stop, np.where(status == 1, 2, 0), stop[ev], 1)
    if entry is not None:
        # ... minus rows not yet entered: entry >= t (R: at risk only when entry < t).
        c_entry = count(entry, np.zeros(n, dtype=np.int64), stop[ev], 1)
        c = c_stop - c_entry
    else:
        c = c_stop
    below = c[1] - c[0]
    equal = c[2] - c[1]
    total = c[3] - c[0]
    concordant = float(below.sum())
    tied_x = float(equal.sum())
    discordant = float((total - below - equal).sum())

    # Event pairs tied in time (same stratum): not comparable.
    ev_keys = pl.DataFrame({"s": strata[ev], "t": stop[ev], "r": rank[ev]})
    by_t = ev_keys.group_by("s", "t").len()["len"].to_numpy().astype(float)
    by_tr = ev_keys.group_by("s", "t", "r").len()["len"].to_numpy().astype(float)
    tied_all = float((by_t * (by_t - 1) / 2).sum())
    tied_xy = float((by_tr * (by_tr - 1) / 2).sum())
    return {
        "concordant": concordant,
        "discordant": discordant,
        "tied_x": tied_x,
        "tied_y": tied_all - tied_xy,
        "tied_xy": tied_xy,
    }


def _linear_predictor(X: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``X @ beta`` with identical rows of ``X`` giving bit-identical results.

    A BLAS product may round two identical rows differently (SIMD blocks versus
    remainder rows), which would turn ties in the predictor into 1-ulp
    differences and change the concordance. R computes each row the same way,
    so its ties are exact; computing once per distinct row does the same here.
    """
    if X.shape[0] == 0:
        return np.zeros(0)
    uniq, inverse = np.unique(X, axis=0, return_inverse=True)
    return (uniq @ beta)[inverse.reshape(-1)]


def _harrell_c(counts: Mapping[str, float]) -> float | None:
    denom = counts["concordant"] + counts["discordant"] + counts["tied_x"]
    if denom == 0:
        return None
    # R's concordance: ties in the predictor count 1/2.
    return (counts["concordant"] + 0.5 * counts["tied_x"]) / denom


# --------------------------------------------------------------------------- Cox
@dataclass
class _Design:
    X: np.ndarray
    names: list[str]
    # term name -> categorical column it came from (None for numeric covariates)
    source: dict[str, str | None]


def _design(data: pl.DataFrame, covariates: Sequence[str], categorical: Mapping[str, Any]) -> tuple[_Design, list[str]]:
    cols: list[np.ndarray] = []
    names: list[str] = []
    source: dict[str, str | None] = {}
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
            if len(labels) == 1:
                notes.append(f"{cov} has only its reference level {ref!r} in the analysed rows: no terms")
        else:
            if s.dtype == pl.String or s.dtype == pl.Categorical or s.dtype == pl.Enum:
                raise ValueError(f"covariate {cov!r} is not numeric: give its reference level in `categorical`")
            cols.append(numeric(s, "covariate"))
            names.append(cov)
            source[cov] = None
    X = np.column_stack(cols) if cols else np.zeros((data.height, 0))
    return _Design(X, names, source), notes


def _non_estimable(
    design: _Design, status: np.ndarray, categorical: Mapping[str, Any]
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
            values = np.unique(design.X[keep, j])
            if len(values) != 2:
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
        if np.unique(design.X[keep, j]).size <= 1:
            drop_cols.add(t)
            null_terms[t] = f"{t} is constant"
            notes.append(f"{t} is constant in the analysed rows: not estimable, reported as null")
    return keep, null_terms, [t for t in design.names if t in drop_cols], notes


def _phreg(
    time: np.ndarray,
    status: np.ndarray,
    X: np.ndarray,
    *,
    entry: np.ndarray | None,
    strata: np.ndarray | None,
    ties: str,
) -> PHReg:
    if entry is not None:
        # R's risk set is entry < t <= stop; statsmodels' PHReg uses entry <= t
        # (a row whose entry equals an event time is counted at risk then, so a
        # split subject is in the risk set twice at its split times). Moving the
        # entry to the next representable double gives R's rule exactly.
        entry = np.nextafter(entry, np.inf)
    return PHReg(time, X, status=status, entry=entry, strata=strata, ties=ties)


SUMMARY_COLS = ("coef", "hr", "se", "z", "p_value", "hr_lower", "hr_upper")


def _empty_cox(names: Sequence[str], n: int, n_events: int, n_dropped: int, ties: str, strata: str | None,
               alpha: float, notes: Sequence[str], entry: str | None) -> CoxResult:
    """The result of a Cox model that could not be fitted: every term null, the reason in the notes."""
    summary = pl.DataFrame(
        {"term": list(names), **{c: [None] * len(names) for c in SUMMARY_COLS}},
        schema={"term": pl.String, **{c: pl.Float64 for c in SUMMARY_COLS}},
    )
    return CoxResult(
        summary, n, n_events, n_dropped, math.nan, math.nan, math.nan, len(names), math.nan,
        math.nan, None, None, ties, strata, alpha, tuple(notes), False, entry, tuple(names),
    )  # fmt: skip


@dataclass(frozen=True)
class _Estimable:
    keep: np.ndarray
    null_terms: set
    fit_cols: list[int]
    fit_names: list[str]
    notes: tuple[str, ...]
    reason: str | None  # set when nothing can be fitted


def _estimable(design, d: np.ndarray, categorical, n_events: int) -> _Estimable:
    """Which rows and terms a Cox model can use (shared by cox_ph and the weighted model)."""
    if n_events == 0:
        return _Estimable(np.zeros(len(d), bool), set(), [], [], (), "no events: the model was not fitted")
    keep, null_terms, drop_cols, notes = _non_estimable(design, d, categorical)
    fit_cols = [j for j, name in enumerate(design.names) if name not in drop_cols]
    fit_names = [design.names[j] for j in fit_cols]
    reason = "no estimable terms: the model was not fitted" if not fit_cols or d[keep].sum() == 0 else None
    return _Estimable(keep, null_terms, fit_cols, fit_names, tuple(notes), reason)


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
) -> CoxResult:
    """Fit a Cox proportional hazards model with statsmodels' PHReg.

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
        Handling of tied event times. Efron is R's ``coxph`` default
        (statsmodels' PHReg defaults to Breslow).
    alpha : float, default 0.05
        Wald intervals for the hazard ratios have coverage ``1 - alpha``.

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
    * Cost: statsmodels loops over the distinct event times of each stratum
      (in Python), so a model on ~100k rows with day-level times takes a few
      seconds, and longer with many strata. Nothing here loops over rows.
    * Concordance is Harrell's C as R's ``coxph`` reports it: pairs are
      compared within strata over risk sets (so delayed entry is respected), a tie
      in the linear predictor counts 1/2, pairs with tied event times are left
      out, and a row censored at an event time counts as the longer survivor.
    * Strata without events carry no information; statsmodels drops them (a
      note says how many).
    * A binary term whose level has no events (for example an arm without
      events) has an infinite maximum-likelihood estimate. Its row is reported
      with nulls and a note, and the other terms are fitted without the rows of
      that level, which is the limit R's estimates approach.
    """
    categorical = dict(categorical or {})
    covariates = list(covariates)
    if ties not in _TIES:
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

    design, design_notes = _design(data, covariates, categorical)
    notes += design_notes
    n_events = int(d.sum())
    names = design.names

    def empty_result(reason: str) -> CoxResult:
        return _empty_cox(names, n, n_events, n_dropped, ties, strata, alpha, [*notes, reason], entry)

    est = _estimable(design, d, categorical, n_events)
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

    X_fit = design.X[np.ix_(keep, fit_cols)]
    model = _phreg(t[keep], d[keep], X_fit, entry=None if e is None else e[keep], strata=s_fit, ties=ties)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit()
    params = np.asarray(res.params, dtype=float)
    cov = np.asarray(res.cov_params(), dtype=float)
    bse = np.sqrt(np.diag(cov))

    converged = bool(np.all(np.isfinite(params)) and np.all(np.isfinite(bse)))
    for message in dict.fromkeys(str(w.message) for w in caught):
        if "converge" in message.lower():
            converged = False
        notes.append(f"statsmodels warned: {message}")
    if converged:
        # one more Newton step should not move the estimate (R checks the same way
        # for coefficients that may be infinite)
        step = cov @ model.score(params)
        if np.any(np.abs(step) > 1e-6 * (1 + np.abs(params))):
            converged = False
            notes.append("Newton-Raphson did not converge: a further step changes the estimates")
    big = [fit_names[i] for i in range(len(params)) if abs(params[i]) > 15]
    if big:
        notes.append(f"very large coefficient(s) {big}: may be infinite (monotone likelihood)")

    z_crit = float(stats.norm.ppf(1 - alpha / 2))
    zval = params / bse
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
                "se": bse[i],
                "z": zval[i],
                "p_value": pval[i],
                "hr_lower": safe_exp(params[i] - z_crit * bse[i]),
                "hr_upper": safe_exp(params[i] + z_crit * bse[i]),
            }
        )
    summary = pl.DataFrame(
        rows,
        schema={
            "term": pl.String,
            **{c: pl.Float64 for c in ("coef", "hr", "se", "z", "p_value", "hr_lower", "hr_upper")},
        },
    )

    # Log-likelihoods, LR and score tests are taken on all analysed rows (R's
    # view): the null likelihood does not depend on covariates, and in the limit
    # the excluded rows add nothing to the fitted one.
    loglik = float(model.loglike(params))
    if keep.all() and len(fit_cols) == len(names):  # nothing was left out
        full = model
    else:
        # all analysed rows; columns that vary over them (a constant one would make
        # the information matrix singular)
        varying = [j for j in range(design.X.shape[1]) if np.unique(design.X[:, j]).size > 1]
        full = _phreg(t, d, design.X[:, varying], entry=e, strata=s_codes, ties=ties)
    zero = np.zeros(full.exog.shape[1])
    loglik_null = float(full.loglike(zero))
    lr_chi2 = 2 * (loglik - loglik_null)
    # R counts every estimated term, infinite ones included, but not aliased
    # (constant) ones, whose coefficient it reports as NA.
    lr_df = len(names) - sum(1 for why in null_terms.values() if why.endswith("is constant"))
    lr_p = float(stats.chi2.sf(lr_chi2, lr_df))
    wald_chi2 = quadratic_test(params, cov) if converged else math.nan  # b' V^-1 b
    wald_chi2 = math.nan if wald_chi2 is None else wald_chi2
    score_chi2 = quadratic_test(full.score(zero), -full.hessian(zero))
    if score_chi2 is None:
        notes.append("score test not computed: information matrix at zero is singular")

    # Concordance on the linear predictor. Rows left out for a level without
    # events have a linear predictor of -inf in the limit: they rank below all
    # others (and among themselves by the rest of the predictor).
    lp = _linear_predictor(design.X[:, fit_cols], params)
    order = np.lexsort((lp, keep))  # excluded rows first, then by lp
    ranks = np.empty(n, dtype=np.int64)
    sorted_keys = np.column_stack((keep[order], lp[order]))
    new_rank = np.ones(n, dtype=bool)
    new_rank[1:] = np.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)
    ranks[order] = np.cumsum(new_rank) - 1
    counts = _concordance_counts(t, d, ranks, entry=e, strata=s_codes)
    concordance = _harrell_c(counts)

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
        concordance=concordance,
        ties=ties,
        strata=strata,
        alpha=alpha,
        notes=tuple(notes),
        converged=converged,
        entry=entry,
        terms=tuple(names),
    )
