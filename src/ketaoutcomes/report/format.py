"""Formatting for the report: numbers, plain tables, and the small checks every section uses.

Nothing here knows a result table: these are the building blocks the sections
(:mod:`ketaoutcomes.report.sections`) shape their frames with. Conventions:

* a missing or non-finite number is a dash (:data:`DASH`);
* hazard ratios have 2 decimals, p-values 3 (``<0.001``, ``>0.999`` at the ends);
* :class:`Fmt` carries what depends on the report options: small-cell suppression of
  counts (1 to the study's ``report.small_cell_max``, default 10, shown as ``<11``) and the
  confidence-interval label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "COVARIATE_NAMES", "DASH", "EN", "MINUS", "Fmt", "Row", "Table", "ci_label", "col", "covariate_label",
    "covariate_order", "fmt_days_ci", "fmt_hr",
    "fmt_hr_ci", "fmt_int", "fmt_num", "fmt_p", "has", "is_num", "mean_sd", "median_iqr", "ok", "p_stmt", "pct_ci",
]

DASH = "\u2014"
EN = "\u2013"
MINUS = "\u2212"


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------

def is_num(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def ok(x: Any) -> bool:
    """A finite number (not None, not NaN, not inf)."""
    return is_num(x) and math.isfinite(float(x))


def fmt_int(n: Any) -> str:
    return f"{int(n):,}" if ok(n) else DASH


def fmt_hr(x: Any) -> str:
    """Hazard ratio, 2 decimals (``<0.01`` below that; ``inf`` for an unbounded limit)."""
    if is_num(x) and math.isinf(float(x)):
        return "\u221e" if x > 0 else "0"
    if not ok(x):
        return DASH
    return "<0.01" if 0 <= x < 0.005 else f"{x:.2f}"


def fmt_hr_ci(hr: Any, lo: Any, hi: Any) -> str:
    if not ok(hr):
        return DASH
    return f"{fmt_hr(hr)} ({fmt_hr(lo)}{EN}{fmt_hr(hi)})"


def fmt_p(p: Any) -> str:
    if not ok(p):
        return DASH
    if p < 0.001:
        return "<0.001"
    if p > 0.999:
        return ">0.999"
    return f"{p:.3f}"


def p_stmt(p: Any) -> str:
    """'p = 0.042', 'p < 0.001' (for running text)."""
    f = fmt_p(p)
    return f"p {f[0]} {f[1:]}" if f[0] in "<>" else f"p = {f}"


def fmt_num(x: Any, decimals: int = 1) -> str:
    """A number; whole numbers without decimals (days, quantiles of counts)."""
    if not ok(x):
        return DASH
    x = float(x)
    if abs(x - round(x)) < 1e-9:
        return f"{int(round(x)):,}"
    return f"{x:,.{decimals}f}"


def fmt_days_ci(med: Any, lo: Any, hi: Any) -> str:
    """Median time with CI; a missing value is 'not reached' (NR in the interval)."""
    if not ok(med):
        return "not reached"
    lo_s = fmt_num(lo) if ok(lo) else "NR"
    hi_s = fmt_num(hi) if ok(hi) else "NR"
    return f"{fmt_num(med)} ({lo_s}{EN}{hi_s})"


def pct_ci(x: Any, lo: Any, hi: Any) -> str:
    """A proportion as a percentage with 1 decimal, and its CI when both limits are there."""
    if not ok(x):
        return DASH
    ci = f" ({100 * lo:.1f}{EN}{100 * hi:.1f})" if ok(lo) and ok(hi) else ""
    return f"{100 * x:.1f}%{ci}"


def ci_label(alpha: Any) -> str:
    """'95% CI' for alpha 0.05; 95% when alpha is not a number in (0, 1)."""
    level = 100 * (1 - float(alpha)) if ok(alpha) and 0 < float(alpha) < 1 else 95.0
    return f"{fmt_num(level)}% CI"


def mean_sd(s: pl.Series | None) -> str:
    if s is None:
        return DASH
    v = s.drop_nulls().cast(pl.Float64, strict=False).drop_nulls()
    if v.len() == 0:
        return DASH
    if v.len() == 1:
        return f"{v.mean():.1f}"
    return f"{v.mean():.1f} ({v.std():.1f})"


def median_iqr(s: pl.Series | None) -> str:
    if s is None:
        return DASH
    v = s.drop_nulls().cast(pl.Float64, strict=False).drop_nulls().to_numpy()
    if v.size == 0:
        return DASH
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])  # numpy 'linear' = R type 7
    return f"{fmt_num(med)} [{fmt_num(q1)}{EN}{fmt_num(q3)}]"


# ---------------------------------------------------------------------------
# Covariates
# ---------------------------------------------------------------------------

#: Names of the ADSL covariate columns (the study settings' covariates: ketaoutcomes.derive.COVARIATE_COLUMNS),
#: in the order the report lists them.
COVARIATE_NAMES = {
    "AGE": "Age",
    "SEX": "Sex",
    "BASE": "Baseline score",
    "PRIORFAIL": "Prior failed trials",
    "DIAGNOSIS": "Diagnosis",
    "WEIGHT": "Weight",
    "SITEID": "Site",
}
_LEVEL_NAMES = {"SEX": {"F": "female", "M": "male", "U": "unknown"}}


def _split_term(term: str) -> tuple[str, str | None]:
    var, bracket, rest = term.partition("[")
    return (var, rest[:-1]) if bracket and rest.endswith("]") else (term, None)


def covariate_label(term: str, *, instrument: str | None = None) -> str:
    """A covariate term as a reader names it: ``AGE`` -> "Age", ``BASE`` -> "Baseline MADRS" (with the
    instrument), ``SEX[F]`` -> "Sex: female", ``SITEID[S06]`` -> "Site: S06",
    ``DIAGNOSIS[bipolar_depression]`` -> "Diagnosis: bipolar depression". An unknown column keeps its code."""
    var, level = _split_term(term)
    name = f"Baseline {instrument}" if var == "BASE" and instrument else COVARIATE_NAMES.get(var, var)
    if level is None:
        return name
    return f"{name}: {_LEVEL_NAMES.get(var, {}).get(level, level.replace('_', ' '))}"


def covariate_order(terms: list[str]) -> list[str]:
    """``terms`` without repeats, in the order of :data:`COVARIATE_NAMES` (unknown columns after them, by
    name), levels of one column by level."""
    rank = {v: i for i, v in enumerate(COVARIATE_NAMES)}

    def key(term: str) -> tuple[int, str, str]:
        var, level = _split_term(term)
        return (rank.get(var, len(rank)), var, level or "")

    return sorted(set(terms), key=key)


@dataclass(frozen=True)
class Fmt:
    """Formatting that depends on the report options: suppression and CI level."""

    suppress: bool
    ci_label: str
    #: counts from 1 to this are suppressed (the study's ``report.small_cell_max``)
    small_cell_max: int = 10

    @property
    def suppressed(self) -> str:
        """What a suppressed count shows: ``<11`` for the default threshold."""
        return f"<{self.small_cell_max + 1}"

    def count(self, n: Any) -> str:
        if not ok(n):
            return DASH
        n = int(n)
        if self.suppress and 1 <= n <= self.small_cell_max:
            return self.suppressed
        return f"{n:,}"

    def n_pct(self, n: int, denom: int) -> str:
        c = self.count(n)
        if (self.suppress and c == self.suppressed) or denom <= 0:
            return c if denom > 0 else DASH
        return f"{c} ({100.0 * n / denom:.1f}%)"


# ---------------------------------------------------------------------------
# Plain tables for the template
# ---------------------------------------------------------------------------

@dataclass
class Row:
    cells: list[str]
    cls: str = ""


@dataclass
class Table:
    """Header, rows of formatted strings, and per-column alignment ('l' or 'r')."""

    columns: list[str]
    rows: list[Row]
    align: str = ""
    caption: str = ""
    wide: bool = False

    def __post_init__(self) -> None:
        if not self.align:
            self.align = "l" + "r" * (len(self.columns) - 1)

    def col_class(self, i: int) -> str:
        return "num" if i < len(self.align) and self.align[i] == "r" else "txt"


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------

def has(df: pl.DataFrame | None, *cols: str) -> bool:
    """``df`` has rows and every one of ``cols``."""
    return df is not None and df.height > 0 and all(c in df.columns for c in cols)


def col(df: pl.DataFrame, name: str) -> pl.Series | None:
    """Column ``name`` of ``df``, or None."""
    return df[name] if name in df.columns else None
