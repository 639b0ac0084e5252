"""Mean mood trajectories per arm (the mixed model's predicted means).

Unlike the other figures, these draw without resetting rcParams.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from ketaoutcomes.models.trajectory import TIME_TERMS, TrajectoryResult
from ketaoutcomes.report.figures.base import png_data_uri

__all__ = ["predicted_figure", "trajectory_figure"]


def trajectory_figure(result: TrajectoryResult, labels: Mapping[str, tuple[str, str]]) -> str:
    """Mean trajectory per arm with its pointwise CI band, as a PNG data URI.

    ``labels`` maps an arm to ``(label, colour)``; arms not in it use the arm
    name and matplotlib's default colour cycle. Arms without estimates are skipped.
    """
    return predicted_figure(result.predicted, labels, alpha=result.alpha, time_terms=result.time_terms,
                            converged=result.converged)


def predicted_figure(predicted: pl.DataFrame, labels: Mapping[str, tuple[str, str]], *, alpha: float,
                     time_terms: str, converged: bool) -> str:
    """The figure of :func:`trajectory_figure` from stored predicted means (table results_trajectory)."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    pred = predicted.drop_nulls("mean")
    for i, arm in enumerate(pred.get_column("arm").unique(maintain_order=True).to_list()):
        part = pred.filter(pl.col("arm") == arm).sort("day")
        label, colour = labels.get(arm, (arm, f"C{i}"))
        day = part.get_column("day").to_numpy()
        ax.plot(day, part.get_column("mean").to_numpy(), marker="o", ms=3, color=colour, label=label)
        lo, hi = part.get_column("lower").to_numpy(), part.get_column("upper").to_numpy()
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(day[ok], lo[ok], hi[ok], color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel("Days since first dose")
    ax.set_ylabel("Model-based mean score")
    level = round((1 - alpha) * 100)
    ax.set_title(f"Mean trajectory per arm ({level}% CI; f(day) = {TIME_TERMS[time_terms]})", fontsize=9)
    if not converged:
        ax.text(0.5, 0.5, "model did not converge", transform=ax.transAxes, ha="center", va="center", color="grey")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return png_data_uri(fig)
