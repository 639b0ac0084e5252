"""Helpers shared by the models: reading the columns of a frame, dropping incomplete rows, labels.

An internal module: what lives here is used by several models (:mod:`~ketaoutcomes.models.km`,
:mod:`~ketaoutcomes.models.logrank`, :mod:`~ketaoutcomes.models.cox`,
:mod:`~ketaoutcomes.models.weighted`, :mod:`~ketaoutcomes.models.competing`,
:mod:`~ketaoutcomes.models.diagnostics`, :mod:`~ketaoutcomes.models.propensity`,
:mod:`~ketaoutcomes.models.modifiers`), so each of them applies the same conventions
with the same code. A helper that only one model uses stays private in that model.

Conventions (each is also commented where it is applied):

* **Event indicator.** Every model takes an ``event`` column with ``1`` = event
  and ``0`` = censored (booleans are accepted); :func:`event_indicator` is the one
  place it is read. ADaM time-to-event data has ``CNSR`` with the opposite sense;
  convert it with :func:`~ketaoutcomes.derive.cnsr.cnsr_to_event`, the only place
  that conversion happens. Any other value (for example R's ``status`` coded 1/2)
  is rejected, not guessed at.
* **Missing values.** Rows with a missing value (null or NaN) in any column a
  model uses are dropped, counted (``n_dropped``) and described in ``notes``, as
  R's default ``na.action = na.omit`` does (:func:`drop_missing`).
* **Levels.** Groups and factor levels are sorted by the column's natural order
  and labelled as strings, whole floats printed as integers (:func:`level_codes`,
  :func:`format_level`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "ALL_GROUP",
    "ci_band",
    "drop_missing",
    "event_indicator",
    "format_level",
    "level_codes",
    "numeric",
    "one_blas_thread",
    "plural",
    "quadratic_test",
    "require_columns",
    "safe_exp",
]

#: Label of the single group when a curve (Kaplan-Meier, cumulative incidence) is
#: estimated without ``group``.
ALL_GROUP = "all"


def safe_exp(x: float) -> float:
    """exp that gives inf instead of raising: a near-separated term (huge coefficient or
    standard error) must show an unbounded interval, not crash the analysis."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def event_indicator(series: pl.Series) -> np.ndarray:
    """The 1/0 event column as an int array; the one place it is read.

    Booleans are taken as True = event. Anything but 0/1 raises, so an R-style
    1/2 ``status`` or an ADaM ``CNSR`` passed by mistake fails loudly.
    """
    if series.dtype == pl.Boolean:
        return series.cast(pl.Int64).to_numpy()
    if not series.dtype.is_numeric():
        raise ValueError(f"event column {series.name!r} must be numeric 1/0 or boolean")
    arr = series.cast(pl.Float64).to_numpy()
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        seen = sorted({float(v) for v in arr[bad]})[:5]
        raise ValueError(
            f"event column {series.name!r} must be 1 = event, 0 = censored; found {seen}. "
            "Convert ADaM CNSR with cnsr_to_event()."
        )
    return arr.astype(np.int64)


# --------------------------------------------------------------------------- helpers
def format_level(value: Any) -> str:
    """Label for a group or factor level: whole floats print as integers (1.0 -> '1')."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def plural(n: int, word: str) -> str:
    """``"1 row"``, ``"2 rows"``: a count and its noun, for notes."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def require_columns(frame: pl.DataFrame, columns: Sequence[str]) -> None:
    """Raise ``KeyError`` naming the ``columns`` that are not in ``frame``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"columns not in frame: {missing}")


def drop_missing(frame: pl.DataFrame, columns: Sequence[str], *, what: str = "values"
                 ) -> tuple[pl.DataFrame, int, list[str]]:
    """Drop rows with a null (or NaN) in ``columns``; count them and say why (``what`` names the
    columns in the note when more than one has gaps)."""
    cols = list(dict.fromkeys(columns))
    require_columns(frame, cols)
    missing_exprs = []
    for c in cols:
        expr = pl.col(c).is_null()
        if frame.schema[c].is_float():
            expr = expr | pl.col(c).is_nan()
        missing_exprs.append(expr.alias(c))
    flags = frame.select(missing_exprs)
    any_missing = flags.select(pl.any_horizontal(pl.all())).to_series()
    n_dropped = int(any_missing.sum())
    if n_dropped == 0:
        return frame, 0, []
    per_col = {c: int(flags[c].sum()) for c in cols if int(flags[c].sum())}
    detail = ", ".join(f"{c}: {k}" for c, k in per_col.items())
    if len(per_col) == 1:
        note = f"{plural(n_dropped, 'row')} dropped for missing {next(iter(per_col))}"
    else:
        note = f"{plural(n_dropped, 'row')} dropped for missing {what} ({detail})"
    return frame.filter(~any_missing), n_dropped, [note]


def numeric(series: pl.Series, what: str) -> np.ndarray:
    """A numeric (or boolean) column as a float array; ``what`` names its role in the error."""
    if series.dtype == pl.Boolean:
        return series.cast(pl.Float64).to_numpy()
    if not series.dtype.is_numeric():
        raise ValueError(f"{what} column {series.name!r} must be numeric, not {series.dtype}")
    return series.cast(pl.Float64).to_numpy()


def level_codes(series: pl.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes (sorted by the column's natural order) and string labels."""
    levels = series.unique().sort().to_list()
    codes = series.replace_strict(levels, list(range(len(levels))), return_dtype=pl.Int64).to_numpy()
    return codes, [format_level(v) for v in levels]


# --------------------------------------------------------------------------- intervals and tests
def ci_band(surv: np.ndarray, se_log: np.ndarray, z: float, conf_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise CI of S(t), R's ``survfit_confint`` with ``logse = TRUE``.

    ``se_log`` is the Greenwood standard error of -log S(t). NaN marks R's NA.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if conf_type == "log":
            # R: xx <- ifelse(p == 0, NA, p); exp(log(xx) -/+ z*se), upper capped at 1.
            xx = np.where(surv == 0, np.nan, surv)
            lower = np.exp(np.log(xx) - z * se_log)
            upper = np.minimum(np.exp(np.log(xx) + z * se_log), 1.0)
        elif conf_type == "log-log":
            # R: NA at p == 0 or p == 1; interval on log(-log S), not capped.
            xx = np.where((surv == 0) | (surv == 1), np.nan, surv)
            se2 = z * se_log / np.log(xx)
            lower = np.exp(-np.exp(np.log(-np.log(xx)) - se2))
            upper = np.exp(-np.exp(np.log(-np.log(xx)) + se2))
        else:  # plain
            # R: S -/+ z*se(S), with se(S) = S*se_log, clipped to [0, 1].
            se2 = se_log * surv * z
            lower = np.maximum(surv - se2, 0.0)
            upper = np.minimum(surv + se2, 1.0)
    upper = np.where(np.isnan(lower) & np.isnan(upper), np.nan, upper)
    return lower, upper


def quadratic_test(u: np.ndarray, info: np.ndarray) -> float | None:
    """The quadratic form ``u' info^-1 u`` (a Wald or score chi-square); None if ``info`` is singular."""
    try:
        return float(u @ np.linalg.solve(info, u))
    except np.linalg.LinAlgError:
        return None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread for a stretch of work (threadpoolctl; the previous thread counts are restored).

    Two reasons: small or tall-and-thin matrix products spend more on waking BLAS threads than on
    arithmetic (the bootstrap's 900 x 10 propensity fits: ~8x faster on 2 cores; the adjusted curves'
    (50,000 x 10)' (50,000 x 57) products, 100x on a busy machine); and OpenBLAS splits a sum across
    its threads, so a fit's last digits would depend on how many cores the machine has."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
