"""Kaplan-Meier curves with pointwise intervals and median survival.

Pure functions: a :class:`polars.DataFrame` goes in, a frozen result object comes
out. The estimate is statsmodels'
(:class:`statsmodels.duration.survfunc.SurvfuncRight`); this module chooses the
conventions and reports them the way R's ``survival`` package does
(``survfit``, ``summary(survfit)``, ``print(survfit)``), because R is the oracle
the tests in ``tests/reference`` compare against. The event indicator and the
dropping of incomplete rows follow :mod:`ketaoutcomes.models.common`.

The checked inputs (:func:`km_inputs`), the median row (:func:`median_row`) and
the assembly of the result (:func:`km_result`) are shared with the weighted curves
of :mod:`ketaoutcomes.models.weighted`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy import stats
from statsmodels.duration.survfunc import SurvfuncRight

from ketaoutcomes.models.common import (
    ALL_GROUP,
    ci_band,
    drop_missing,
    event_indicator,
    level_codes,
    numeric,
)

__all__ = ["CONF_TYPES", "KMResult", "kaplan_meier", "km_inputs", "km_result", "median_row"]

#: Confidence-interval transforms for the survival curve, named as R's
#: ``survfit(conf.type=...)`` names them.
CONF_TYPES = ("log", "log-log", "plain")

#: R's ``survmean``/``quantile.survfit`` tolerance (``sqrt(.Machine$double.eps)``) for deciding
#: that a survival curve sits exactly at the requested probability.
_R_QUANTILE_TOL = math.sqrt(np.finfo(float).eps)

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


def median_row(label: str, n: int, events: float, g: dict, lower, upper, notes: list[str]) -> dict:
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


def km_inputs(frame: pl.DataFrame, *, time: str, event: str, group: str | None, alpha: float, conf_type: str,
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


def km_result(
    tables: Sequence[pl.DataFrame],
    medians: Sequence[dict[str, Any]],
    *,
    table_schema: Mapping[str, pl.DataType],
    events_dtype: pl.DataType,
    alpha: float,
    conf_type: str,
    n_dropped: int,
    notes: Sequence[str],
) -> KMResult:
    """A :class:`KMResult` from the per-group tables and :func:`median_row` rows (shared with the
    weighted curves, whose ``events`` are weighted sums: ``events_dtype`` Float64 there)."""
    table = pl.concat(tables) if tables else pl.DataFrame(schema=table_schema)
    med = pl.DataFrame(
        medians,
        schema={
            "group": pl.String,
            "n": pl.Int64,
            "events": events_dtype,
            "median": pl.Float64,
            "median_lower": pl.Float64,
            "median_upper": pl.Float64,
        },
    )
    return KMResult(table=table, medians=med, alpha=alpha, conf_type=conf_type, n_dropped=n_dropped, notes=tuple(notes))


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
    data, n_dropped, notes, t, d, codes, labels, z = km_inputs(
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
        medians.append(median_row(label, int(mask.sum()), n_events, g, lower, upper, notes))

    return km_result(tables, medians, table_schema=_KM_TABLE_SCHEMA, events_dtype=pl.Int64, alpha=alpha,
                     conf_type=conf_type, n_dropped=n_dropped, notes=notes)
