"""The design columns of a propensity model (:func:`ketaoutcomes.models.propensity.fit_propensity`),
built from the covariates coded once as arrays (pure).

A pair's covariates are coded once (:meth:`CodedCovariates.of`): a numeric covariate as its values, a
categorical one as integer codes into its levels in sorted order. The design of any subset or draw of
the rows (:meth:`CodedCovariates.take`, with repeats: a bootstrap draw) is then built from the codes
(:meth:`CodedCovariates.design`) without going back to a frame: per categorical covariate the levels
present, their counts, the reference level (the most frequent; ties: the first in sorted order), the
rare levels left out and one 0/1 column per level. The columns are the same numbers, in the same order,
as building them from the frame of those rows would give (``tests/unit/test_ps_design.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ketaoutcomes.models.common import format_level
from ketaoutcomes.models.ps_model import rare_levels

__all__ = ["CodedCovariates", "Design"]


@dataclass
class Design:
    """The design columns of :func:`fit_propensity`: each name with its values, whether it is in the
    model and in the gate, its (variable, level) (``SEX[M]`` -> (``SEX``, ``M``), ``AGE`` -> (``AGE``,
    None)); the reference level of each categorical covariate; the rare levels left out, with counts."""

    names: list[str] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    in_model: list[bool] = field(default_factory=list)
    in_gate: list[bool] = field(default_factory=list)
    parts: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    refs: list[tuple[str, str]] = field(default_factory=list)
    left_out: list[tuple[str, int]] = field(default_factory=list)

    def add(self, name: str, x: np.ndarray, *, model: bool, gate: bool, part: tuple[str, str | None]) -> None:
        self.names.append(name)
        self.values.append(x)
        self.in_model.append(model)
        self.in_gate.append(gate)
        self.parts[name] = part


@dataclass(frozen=True)
class CodedCovariates:
    """Covariates as arrays: per name, the values (float) of a numeric covariate, or the codes (int32)
    of a categorical one into ``levels`` (its distinct values, sorted; None for a numeric one)."""

    names: tuple[str, ...]
    columns: tuple[np.ndarray, ...]
    levels: tuple[tuple[Any, ...] | None, ...]

    @classmethod
    def of(cls, frame: pl.DataFrame, covariates: Sequence[str], categorical: set[str]) -> "CodedCovariates":
        """Code ``covariates`` of ``frame`` (no missing values); those in ``categorical`` as levels.

        Raises ValueError for a covariate of text (or another non-numeric type) not in ``categorical``."""
        columns, levels = [], []
        for c in covariates:
            s = frame[c]
            if c in categorical:
                values = s.unique().sort()
                levels.append(tuple(values.to_list()))
                columns.append(s.replace_strict(values, pl.int_range(values.len(), eager=True),
                                                return_dtype=pl.Int32).to_numpy())
            elif s.dtype == pl.Boolean or s.dtype.is_numeric():
                levels.append(None)
                columns.append(s.cast(pl.Float64).to_numpy())
            else:
                raise ValueError(
                    f"covariate {c!r} is {s.dtype}, not numeric; list it in `categorical` to expand it to dummies"
                )
        return cls(tuple(covariates), tuple(columns), tuple(levels))

    def take(self, rows: np.ndarray) -> "CodedCovariates":
        """The rows ``rows`` (indices, repeats allowed), in that order."""
        return CodedCovariates(self.names, tuple(x[rows] for x in self.columns), self.levels)

    def design(self, min_level_prevalence: float = 0.0, freq: np.ndarray | None = None) -> Design:
        """Design columns of the covariates; categorical ones as one 0/1 column per level present.
        ``freq``: row i stands for ``freq[i]`` (> 0) rows, in the levels' counts."""
        d = Design()
        for c, x, lv in zip(self.names, self.columns, self.levels):
            if lv is None:
                d.add(c, x, model=True, gate=True, part=(c, None))
                continue
            if x.size == 0:
                continue  # no patients: no levels (the gate fails for too few patients)
            n_at = np.bincount(x, minlength=len(lv)) if freq is None else \
                np.rint(np.bincount(x, weights=freq, minlength=len(lv))).astype(np.int64)
            present = [k for k in range(len(lv)) if n_at[k] > 0]
            ref = max(present, key=lambda k: (n_at[k], -k))  # the most frequent; ties: the first in sorted order
            d.refs.append((c, format_level(lv[ref])))
            counts = {format_level(lv[k]): int(n_at[k]) for k in present}
            # rare levels: out of the model, where they count as the reference level, and out of the gate
            rare = rare_levels(counts, format_level(lv[ref]), min_level_prevalence)
            for k in present:
                label = format_level(lv[k])
                col = (x == k).astype(np.float64)
                if label in rare:
                    d.left_out.append((f"{c}[{label}]", counts[label]))
                    d.add(f"{c}[{label}]", col, model=False, gate=False, part=(c, label))
                elif k == ref and rare:
                    # the gate checks the model's coding: the reference level together with the rare ones
                    merged = " or ".join([label, *rare])
                    col = np.isin(x, [j for j in present if j == ref or format_level(lv[j]) in rare]).astype(np.float64)
                    d.add(f"{c}[{merged}]", col, model=False, gate=True, part=(c, merged))
                else:
                    d.add(f"{c}[{label}]", col, model=k != ref, gate=True, part=(c, label))
        return d
