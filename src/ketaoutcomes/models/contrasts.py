"""Contrasts of two (weighted) Kaplan-Meier curves, for many bootstrap replicates at once.

The summary of a route against the reference arm reads three contrasts off the two arms' curves,
each as route minus reference:

* the **share with the event by day d**, ``1 - S(d)`` (for response: the share responded by
  day d); a positive difference favours the route when the event is good news;
* the **median** time to the event (R's ``print(survfit)`` rule, as
  :func:`ketaoutcomes.models.km.kaplan_meier` and
  :func:`ketaoutcomes.models.weighted.weighted_kaplan_meier`); ``NaN`` when not reached;
* the **restricted mean time without the event** up to a horizon (the area under ``S`` from 0;
  R's ``print(survfit, rmean = horizon)``, as :func:`ketaoutcomes.models.weighted.restricted_mean`).

:func:`curve_summaries` computes them for ``B`` replicates of one arm in one pass of array
operations: each replicate is a row of a ``(B, n)`` weight matrix (a bootstrap replicate: each
drawn patient's propensity weight, 0 for a patient not drawn or left out), and the curves are
product-limit estimates with weighted counts on a common grid of times. With one row of the
original weights it gives exactly the point estimates of the curves stored by the analysis (a test
holds them equal). :func:`percentile_interval` turns the replicates into percentile intervals;
:func:`risk_difference_interval` turns those of two shares into a score-type interval of their
difference (Wilson intervals of each arm combined by MOVER);
:func:`rmst_difference` is the analytic (delta-method) interval of an RMST difference of two
independent curves, as R's survRM2 computes it for unweighted curves.

Conventions: a share at a day after the arm's last observed time is undefined (``NaN``; R's
``summary(fit, times = d)`` gives no row there), while the restricted mean carries the curve flat to
the horizon, as R does. Pure functions: arrays in, arrays out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

__all__ = ["ArmCounts", "CurveSummaries", "curve_summaries", "curve_summaries_by_arm", "mover_interval",
           "percentile_interval", "read_curve", "risk_difference_interval", "rmst_difference", "wilson_interval"]

#: R's tolerance for "the curve is at 0.5" (as :mod:`ketaoutcomes.models.km`).
_TOL = math.sqrt(np.finfo(float).eps)


@dataclass(frozen=True)
class CurveSummaries:
    """Summaries of ``B`` curves of one arm: ``risk`` (B, len(days)): ``1 - S(day)``, NaN after the
    last observed time; ``median`` (B,): NaN when not reached; ``rmst`` (B,): area under ``S`` from 0
    to the horizon; ``n`` (B,): rows with positive weight (a replicate without any gives NaN)."""

    days: tuple[float, ...]
    horizon: float
    risk: np.ndarray
    median: np.ndarray
    rmst: np.ndarray
    n: np.ndarray


def curve_summaries(time_index: np.ndarray, event: np.ndarray, weight: np.ndarray, grid: np.ndarray, *,
                    days: Sequence[float], horizon: float) -> CurveSummaries:
    """Share with the event by each day, median and restricted mean of ``B`` weighted KM curves.

    Parameters
    ----------
    time_index : (B, n) or (n,) int array
        Each row's time as an index into ``grid``.
    event : (B, n) or (n,) array
        1 = event, 0 = censored.
    weight : (B, n) or (n,) array
        Case weights >= 0; 0 leaves a row out of that replicate (a patient not drawn, not
        matched, or of the other arm).
    grid : (m,) array
        Sorted distinct times (a superset of every time used: extra times change nothing).
    days : sequence of float
        Days at which the share with the event is read.
    horizon : float
        Upper limit of the restricted mean (> 0).
    """
    ti, d, w = _arrays(time_index, event, weight, horizon=horizon)
    grid = np.asarray(grid, dtype=float)
    B, m = ti.shape[0], len(grid)
    flat = (ti + (np.arange(B) * m)[:, None]).ravel()
    w_at = np.bincount(flat, weights=w.ravel(), minlength=B * m).reshape(B, m)
    d_at = np.bincount(flat, weights=(w * d).ravel(), minlength=B * m).reshape(B, m)
    return _summaries(grid, w_at, d_at, (w > 0).sum(axis=1), days, horizon)


def curve_summaries_by_arm(time_index: np.ndarray, event: np.ndarray, weight: np.ndarray, treated: np.ndarray,
                           grid: np.ndarray, *, days: Sequence[float], horizon: float
                           ) -> tuple[CurveSummaries, CurveSummaries]:
    """:func:`curve_summaries` of the rows of ``treated`` and of the others (the target's and the
    comparator's curves), bit for bit as two calls with ``weight * treated`` and ``weight * ~treated``
    (a row of the other arm adds 0.0 to no sum), from one pass over the (B, n) arrays instead of two;
    ``treated`` (B, n) or (n,) booleans."""
    ti, d, w, a = _arrays(time_index, event, weight, treated, horizon=horizon)
    grid = np.asarray(grid, dtype=float)
    B, m = ti.shape[0], len(grid)
    # bins 0 .. B m - 1: the target's curves; B m .. 2 B m - 1: the comparator's
    flat = (ti + (np.arange(B) * m)[:, None] + np.where(a, 0, B * m)).ravel()
    w_at = np.bincount(flat, weights=w.ravel(), minlength=2 * B * m).reshape(2, B, m)
    d_at = np.bincount(flat, weights=(w * d).ravel(), minlength=2 * B * m).reshape(2, B, m)
    positive = w > 0
    n_t = (positive & a).sum(axis=1)
    return (_summaries(grid, w_at[0], d_at[0], n_t, days, horizon),
            _summaries(grid, w_at[1], d_at[1], positive.sum(axis=1) - n_t, days, horizon))


class ArmCounts:
    """The weighted counts of :func:`curve_summaries_by_arm` filled one replicate at a time: ``add(b,
    ...)`` takes replicate b's rows (n,) and keeps only their counts per grid time (2 x m numbers), so
    ``B`` replicates need no (B, n) array. :meth:`summaries` gives, bit for bit, what
    :func:`curve_summaries_by_arm` gives on the (B, n) arrays of the same rows (a count is the same
    sum of the same row's weights in the same order; the curves are computed row by row)."""

    def __init__(self, replicates: int, grid: np.ndarray):
        self.grid = np.asarray(grid, dtype=float)
        m = len(self.grid)
        self.w_at = np.zeros((2, replicates, m))
        self.d_at = np.zeros((2, replicates, m))
        self.n = np.zeros((2, replicates), dtype=np.int64)

    def add(self, b: int, time_index: np.ndarray, event: np.ndarray, weight: np.ndarray, treated: np.ndarray) -> None:
        """Replicate ``b``: its rows' time indices, events (1/0), weights (>= 0) and arms (True: target)."""
        if np.ndim(time_index) != 1:
            raise ValueError("ArmCounts.add takes one replicate's rows: 1-d arrays")
        # the checks of curve_summaries_by_arm (the horizon is checked by summaries(): any > 0 passes here)
        ti, d, w, a = (x[0] for x in _arrays(time_index, event, weight, treated, horizon=1.0))
        m = len(self.grid)
        flat = ti + np.where(a, 0, m)  # bins 0 .. m - 1: the target's curve; m .. 2 m - 1: the comparator's
        self.w_at[:, b] = np.bincount(flat, weights=w, minlength=2 * m).reshape(2, m)
        self.d_at[:, b] = np.bincount(flat, weights=w * d, minlength=2 * m).reshape(2, m)
        positive = w > 0
        n_t = int((positive & a).sum())
        self.n[:, b] = n_t, int(positive.sum()) - n_t

    def summaries(self, *, days: Sequence[float], horizon: float) -> tuple[CurveSummaries, CurveSummaries]:
        """The target's and the comparator's summaries of every replicate (rows in replicate order)."""
        if not horizon > 0:
            raise ValueError("horizon must be > 0")
        target, comparator = (_summaries(self.grid, self.w_at[k], self.d_at[k], self.n[k], days, horizon)
                              for k in (0, 1))
        return target, comparator


def _arrays(time_index: np.ndarray, event: np.ndarray, weight: np.ndarray, treated: np.ndarray | None = None, *,
            horizon: float) -> tuple[np.ndarray, ...]:
    """The inputs of :func:`curve_summaries` (and ``treated`` of :func:`curve_summaries_by_arm`) as
    (B, n) arrays, checked: the same shape, weights finite and >= 0, a horizon > 0."""
    if not horizon > 0:
        raise ValueError("horizon must be > 0")
    out = [np.atleast_2d(np.asarray(time_index, dtype=np.int64)), np.atleast_2d(np.asarray(event, dtype=float)),
           np.atleast_2d(np.asarray(weight, dtype=float))]
    if treated is not None:
        out.append(np.atleast_2d(np.asarray(treated, dtype=bool)))
    if len({x.shape for x in out}) > 1:
        names = "time_index, event, weight and treated" if treated is not None else "time_index, event and weight"
        raise ValueError(f"{names} must have the same shape")
    if (out[2] < 0).any() or not np.isfinite(out[2]).all():
        raise ValueError("weights must be finite and >= 0")
    return tuple(out)


def _summaries(grid: np.ndarray, w_at: np.ndarray, d_at: np.ndarray, n: np.ndarray, days: Sequence[float],
               horizon: float) -> CurveSummaries:
    """The summaries of curves from their weighted counts at risk and of events per grid time (B, m)."""
    m = len(grid)
    n_risk = w_at[:, ::-1].cumsum(axis=1)[:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(n_risk > 0, d_at / n_risk, 0.0)
    surv = np.cumprod(1.0 - hazard, axis=1)
    present = w_at > 0
    last = np.where(present.any(axis=1), m - 1 - np.argmax(present[:, ::-1], axis=1), -1)
    risk, median, rmst = _read(grid, surv, last, np.asarray(list(days), dtype=float), float(horizon))
    return CurveSummaries(tuple(float(x) for x in days), float(horizon), risk, median, rmst, n)


def _read(grid: np.ndarray, surv: np.ndarray, last: np.ndarray, days_arr: np.ndarray, horizon: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Risk by each day, median and restricted mean of curves ``surv`` (B, m) on ``grid``, each
    observed up to ``grid[last]`` (``last`` -1: an empty curve, all NaN)."""
    B, m = surv.shape
    empty = last < 0
    # share with the event by each day: the curve at the last grid time <= day
    j = np.searchsorted(grid, days_arr, side="right") - 1
    s_day = np.where(j >= 0, surv[:, np.clip(j, 0, None)], 1.0)
    after_last = days_arr[None, :] > np.where(empty, -np.inf, grid[np.clip(last, 0, None)])[:, None]
    risk = np.where(after_last | empty[:, None], np.nan, 1.0 - s_day)

    # restricted mean: rectangles from 0 to the horizon, S = 1 before the first time (R's survmean)
    keep = grid <= horizon
    edges = np.concatenate([[0.0], grid[keep], [float(horizon)]])
    heights = np.concatenate([np.ones((B, 1)), surv[:, keep]], axis=1)
    rmst = (np.diff(edges)[None, :] * heights).sum(axis=1)
    rmst = np.where(empty, np.nan, rmst)

    # median, R's rule: the first time S <= 0.5 (within tolerance); at exactly 0.5 with a later drop,
    # the midpoint between that time and the drop (ketaoutcomes.models.km's _r_median)
    below = surv < 0.5 + _TOL
    has = below.any(axis=1) & ~empty
    first = np.argmax(below, axis=1)
    y0 = surv[np.arange(B), first]
    drop = (surv < y0[:, None]) & (np.arange(m)[None, :] > first[:, None])
    second = np.argmax(drop, axis=1)
    at_half = np.abs(y0 - 0.5) < _TOL
    median = np.where(at_half & drop.any(axis=1), (grid[first] + grid[second]) / 2, grid[first])
    return risk, np.where(has, median, np.nan), rmst


def read_curve(time: Sequence[float], survival: Sequence[float], *, days: Sequence[float], horizon: float
               ) -> dict[str, np.ndarray | float]:
    """The same summaries of one stored curve (its distinct times and survival, e.g. a
    ``results_km`` curve, or a counterfactual curve of :mod:`ketaoutcomes.truth`): ``risk`` per day,
    ``median``, ``rmst``, with the conventions of :func:`curve_summaries`."""
    t = np.asarray(time, dtype=float)
    s = np.asarray(survival, dtype=float)[None, :]
    risk, median, rmst = _read(t, s, np.array([len(t) - 1]), np.asarray(list(days), dtype=float), float(horizon))
    return {"risk": risk[0], "median": float(median[0]), "rmst": float(rmst[0])}


def percentile_interval(replicates: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float, int]:
    """(lower, upper, SD, replicates used) of the bootstrap percentile interval at level ``1 - alpha``.

    ``NaN`` replicates (not estimable in that replicate) are left out; ``+-inf`` (a median not
    reached in one arm: the difference is unbounded) are kept, so an interval reaching them is
    unbounded on that side. Quantiles are R's type 7 (numpy's default ``linear``), taken on the
    finite ordering with infinite values at the ends. The SD is over the finite replicates.
    Needs at least 2 replicates; otherwise NaN.
    """
    x = np.asarray(replicates, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return math.nan, math.nan, math.nan, int(len(x))
    big = np.finfo(float).max / 4
    y = np.clip(x, -big, big)  # +-inf as huge finite numbers, so quantiles never interpolate inf - inf
    lo, hi = np.quantile(y, [alpha / 2, 1 - alpha / 2])
    finite = x[np.isfinite(x)]
    top = finite.max() if len(finite) else 0.0
    bottom = finite.min() if len(finite) else 0.0
    # a quantile interpolated between a finite replicate and an infinite one lies beyond every finite
    # replicate: it reaches the unbounded side (not a finite number of 300 digits)
    back = lambda v: math.inf if v > top else -math.inf if v < bottom else float(v)  # noqa: E731
    sd = float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan
    return back(lo), back(hi), sd, int(len(x))


def wilson_interval(p: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson's score interval of a share ``p`` among ``n`` (an effective sample size may be
    fractional): R's ``prop.test(x, n, correct = FALSE)$conf.int`` for ``p = x / n``. Unlike
    ``p +- z * se``, its width is taken at the limits, not at ``p``: a share of a few events gets
    a longer upper side, and a share of 0 the interval ``[0, z^2 / (n + z^2)]``."""
    if not (n > 0 and 0.0 <= p <= 1.0):
        return math.nan, math.nan
    z2 = float(stats.norm.ppf(1 - alpha / 2)) ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = math.sqrt(z2) / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mover_interval(p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float],
                   r: float = 0.0) -> tuple[float, float]:
    """Interval of ``p1 - p2`` from an interval of each (MOVER, the method of variance estimates
    recovery: Newcombe 1998, method 10, for independent shares; Zou & Donner 2008 with the
    correlation ``r`` of the two estimates)."""
    (l1, u1), (l2, u2), d = ci1, ci2, p1 - p2
    below = (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * r * (p1 - l1) * (u2 - p2)
    above = (u1 - p1) ** 2 + (p2 - l2) ** 2 - 2 * r * (u1 - p1) * (p2 - l2)
    return d - math.sqrt(max(below, 0.0)), d + math.sqrt(max(above, 0.0))


def risk_difference_interval(p_target: float, p_comparator: float, reps_target: np.ndarray,
                             reps_comparator: np.ndarray, n_target: float, n_comparator: float,
                             alpha: float = 0.05) -> tuple[float, float, float, int]:
    """(lower, upper, SD, replicates used) of the difference of two shares by a day, ``p_target -
    p_comparator``, from their bootstrap replicates (paired: replicate b of both arms comes from the
    same draw): each share's Wilson interval at its **effective sample size**
    ``p (1 - p) / SD^2`` (SD over its bootstrap replicates: the sample size a simple random sample
    would need for that precision, so the weighting, the refitted propensity model and the
    censoring are in it; Korn & Graubard 1998), combined by MOVER with the correlation of the two
    arms' replicates (:func:`mover_interval`).

    Why not the percentile interval of the differences: the spread of a share of a few events grows
    with the share, so a sample below the truth also gets a narrower interval, and the percentile
    interval missed the truth on that side far more often than on the other (in the simulation
    study, day-7 differences covered 91.5-94.5%, lying below the truth in 4-7% of cohorts and above
    it in 0.5-1.5%). The Wilson
    interval takes its width at its limits, which removes that.

    A share of 0 or 1, or one whose replicates do not vary, has no SD to speak of: ``n_target`` /
    ``n_comparator`` (the arms' Kish effective sizes, ``(sum w)^2 / sum w^2``) stand in. Replicates
    with either share NaN are left out; NaN when fewer than 2 are left. The SD returned is that of
    the differences."""
    a = np.asarray(reps_target, dtype=float)
    b = np.asarray(reps_comparator, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    used = int(ok.sum())
    if used < 2 or not (math.isfinite(p_target) and math.isfinite(p_comparator)):
        return math.nan, math.nan, math.nan, used
    a, b = a[ok], b[ok]

    def interval(p: float, reps: np.ndarray, fallback: float) -> tuple[float, float]:
        sd = float(np.std(reps, ddof=1))
        n = p * (1 - p) / sd ** 2 if sd > 0 and 0.0 < p < 1.0 else fallback
        return wilson_interval(p, n, alpha)

    with np.errstate(invalid="ignore", divide="ignore"):
        r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    lo, hi = mover_interval(p_target, interval(p_target, a, n_target), p_comparator,
                            interval(p_comparator, b, n_comparator), r if math.isfinite(r) else 0.0)
    return lo, hi, float(np.std(a - b, ddof=1)), used


def rmst_difference(rmst: pl.DataFrame, *, target: str, comparator: str, alpha: float = 0.05) -> dict[str, float]:
    """Difference in restricted mean time ``target - comparator`` with its analytic interval, from the
    per-arm rows of :func:`ketaoutcomes.models.weighted.restricted_mean` (``group``, ``rmst``, ``se``):
    ``se = sqrt(se_t^2 + se_c^2)`` (independent arms), Wald interval; R's survRM2 ``rmst2`` for
    unweighted curves. Not valid for weighted curves (the weights are estimated, and the per-arm SE
    treats them as counts): the analysis uses the bootstrap there."""
    rows = {r["group"]: r for r in rmst.iter_rows(named=True)}
    t, c = rows[target], rows[comparator]
    diff = float(t["rmst"] - c["rmst"])
    se = math.sqrt(float(t["se"]) ** 2 + float(c["se"]) ** 2)
    z = float(stats.norm.ppf(1 - alpha / 2))
    return {"difference": diff, "se": se, "lower": diff - z * se, "upper": diff + z * se,
            "p_value": float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else math.nan}
