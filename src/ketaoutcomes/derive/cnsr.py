"""ADTTE censoring codes (CNSR) and their conversion to the 1/0 event flag the models take.

ADaM ``CNSR`` is 0 for an event and a positive code saying why follow-up ended without one;
:func:`cnsr_to_event` is the only place in the package that turns it into an event indicator
(the models in :mod:`ketaoutcomes.models` take 1 = event, 0 = censored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np
import polars as pl

__all__ = ["CNSR", "cnsr_to_event"]

#: ADTTE censoring codes (CNSR): 0 is an event, every positive code a reason.
CNSR = {
    0: "event",
    1: "censored at the last assessment: no event seen",
    2: "censored at the last assessment before an intercurrent event (switch, new antidepressant or new course)",
    3: "no assessment after the time origin (AVAL = 0)",
    4: "censored at the last assessment: relapse threshold met but not confirmed",
    5: "censored at the last assessment inside the time at risk",
}


@overload
def cnsr_to_event(cnsr: pl.Series) -> pl.Series: ...
@overload
def cnsr_to_event(cnsr: pl.Expr) -> pl.Expr: ...
@overload
def cnsr_to_event(cnsr: int) -> int: ...
@overload
def cnsr_to_event(cnsr: np.ndarray | Sequence[int]) -> np.ndarray: ...
def cnsr_to_event(cnsr: Any) -> Any:
    """Convert an ADaM censoring flag to a 1/0 event indicator.

    ADaM ``CNSR`` is 0 for an event and a positive integer for a censoring (the
    value says why). This is the only place in the package that converts it.

    Parameters
    ----------
    cnsr : polars.Series, polars.Expr, numpy.ndarray, sequence or int
        Censoring flags. Nulls stay null in a Series or Expr; elsewhere a missing
        value raises.

    Returns
    -------
    same kind as ``cnsr``
        ``1`` where ``cnsr == 0`` (event) and ``0`` where ``cnsr > 0`` (censored),
        as integers (``pl.Int8`` for polars).

    Raises
    ------
    ValueError
        If a value is negative or not a whole number (an Expr is checked only
        when it is evaluated: negative values become null there).
    """
    if isinstance(cnsr, pl.Expr):
        return (
            pl.when(cnsr == 0)
            .then(pl.lit(1, pl.Int8))
            .when(cnsr > 0)
            .then(pl.lit(0, pl.Int8))
            .otherwise(pl.lit(None, pl.Int8))
        )
    if isinstance(cnsr, pl.Series):
        values = cnsr.drop_nulls().cast(pl.Float64)
        if values.len() and (bool((values < 0).any()) or bool((values != values.floor()).any())):
            raise ValueError("CNSR must be a non-negative whole number (0 = event, >0 = censored)")
        return (cnsr == 0).cast(pl.Int8).alias(cnsr.name)
    scalar = np.ndim(cnsr) == 0
    arr = np.asarray(cnsr, dtype=float)
    if np.isnan(arr).any():
        raise ValueError("CNSR has missing values; use a polars Series to keep them as null")
    if (arr < 0).any() or (arr != np.floor(arr)).any():
        raise ValueError("CNSR must be a non-negative whole number (0 = event, >0 = censored)")
    out = (arr == 0).astype(np.int64)
    return int(out) if scalar else out
