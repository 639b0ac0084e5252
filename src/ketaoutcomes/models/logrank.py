"""Log-rank test of equal survival across groups, as R's ``survdiff`` (rho = 0).

Pure functions: a :class:`polars.DataFrame` goes in, a frozen result object comes
out. The statistic is statsmodels'
(:func:`statsmodels.duration.survfunc.survdiff`); this module adds the observed
and expected counts and reports them the way R's ``survival`` package does,
because R is the oracle the tests in ``tests/reference`` compare against. The
event indicator and the dropping of incomplete rows follow
:mod:`ketaoutcomes.models.common`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats
from statsmodels.duration.survfunc import survdiff

from ketaoutcomes.models.common import drop_missing, event_indicator, level_codes, numeric

__all__ = ["LogRankResult", "logrank_test"]


# --------------------------------------------------------------------------- results
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
