"""Mean mood trajectories per arm (the mixed model's predicted means)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from ketaoutcomes.models.trajectory import TIME_TERMS, TrajectoryResult
from ketaoutcomes.report.figures.base import PALETTE, ArmStyle, drawing, legend_handle, new_figure, png_data_uri

__all__ = ["predicted_figure", "trajectory_figure"]


def trajectory_figure(result: TrajectoryResult, labels: Mapping[str, tuple[str, str | ArmStyle]]) -> str:
    """Mean trajectory per arm with its pointwise CI band, as a PNG data URI.

    ``labels`` maps an arm to ``(label, style)``, the style an
    :class:`~ketaoutcomes.report.figures.base.ArmStyle` or a colour (solid line, circles); arms are
    drawn in the order of ``labels``, then any other arm under its own name in the palette's
    colours. Arms without estimates are skipped.
    """
    return predicted_figure(result.predicted, labels, alpha=result.alpha, time_terms=result.time_terms,
                            converged=result.converged)


def predicted_figure(predicted: pl.DataFrame, labels: Mapping[str, tuple[str, str | ArmStyle]], *, alpha: float,
                     time_terms: str, converged: bool) -> str:
    """The figure of :func:`trajectory_figure` from stored predicted means (table results_trajectory)."""
    pred = predicted.drop_nulls("mean")
    present = pred.get_column("arm").unique(maintain_order=True).to_list()
    order = [a for a in labels if a in present] + [a for a in present if a not in labels]
    with drawing():
        fig = new_figure(6.4, 4.0)
        ax = fig.add_subplot()
        handles = []
        for i, arm in enumerate(order):
            part = pred.filter(pl.col("arm") == arm).sort("day")
            label, style = labels.get(arm, (arm, PALETTE[i % len(PALETTE)]))
            if isinstance(style, str):
                style = ArmStyle(style, "-", "o")
            day = part.get_column("day").to_numpy()
            ax.plot(day, part.get_column("mean").to_numpy(), color=style.color, linestyle=style.linestyle,
                    linewidth=1.4, marker=style.marker or "None", markersize=4)
            handles.append(legend_handle(style, label, linewidth=1.4, markersize=4))
            lo, hi = part.get_column("lower").to_numpy(), part.get_column("upper").to_numpy()
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(day[ok], lo[ok], hi[ok], color=style.color, alpha=0.15, linewidth=0)
        ax.set_xlabel("Days since first dose")
        ax.set_ylabel("Model-based mean score")
        level = round((1 - alpha) * 100)
        ax.set_title(f"Mean trajectory per arm ({level}% CI; f(day) = {TIME_TERMS[time_terms]})", fontsize=9)
        if not converged:
            ax.text(0.5, 0.5, "model did not converge", transform=ax.transAxes, ha="center", va="center", color="grey")
        if handles:
            ax.legend(handles=handles, frameon=False, fontsize=8, handlelength=3.0)
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        return png_data_uri(fig)
