"""Figures of the target trial: the risk curves per strategy (CCW, with the naive comparison beside
them) and the observed start days within the grace period."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter

from ketaoutcomes.report.figures.base import (
    PALETTE,
    REFERENCE_COLOR,
    ArmStyle,
    ExactPercentFormatter,
    drawing,
    legend_handle,
    new_figure,
    png_data_uri,
    time_ticks,
)

__all__ = ["StrategyCurve", "start_days_figure", "strategy_curves_figure", "strategy_style"]


@dataclass(frozen=True)
class StrategyCurve:
    """One strategy's risk by day (day 0..end) of one variant."""

    label: str
    style: ArmStyle
    day: np.ndarray
    risk: np.ndarray


def strategy_style(strategy: str, *, naive: bool) -> ArmStyle:
    """initiate in colour, never in black; the CCW solid (never dashed), the naive comparison dotted,
    lighter, with markers, so the two designs read apart in greyscale too."""
    if naive:
        return ArmStyle(PALETTE[5] if strategy == "initiate" else "#7F7F7F", ":", "o" if strategy == "initiate" else "s")
    return ArmStyle(PALETTE[0], "-", "") if strategy == "initiate" else ArmStyle(REFERENCE_COLOR, "--", "")


def strategy_curves_figure(curves: Sequence[StrategyCurve], *, days: Sequence[int], grace_days: int,
                           xlabel: str, ylabel: str) -> str:
    """Step plot of the risk per strategy and design, the grace period shaded and the named days
    marked, as a PNG data URI."""
    with drawing():
        fig = new_figure(7.2, 4.0)
        ax = fig.add_subplot()
        end = max((float(c.day.max()) for c in curves if c.day.size), default=1.0)
        ax.axvspan(0, grace_days, color="#000000", alpha=0.06, linewidth=0)
        for d in days:
            ax.axvline(d, color="#999999", linewidth=0.6, linestyle=":")
        for c in curves:
            st = c.style
            ax.step(c.day, c.risk, where="post", color=st.color, linestyle=st.linestyle, linewidth=1.6)
            if st.marker:
                idx = np.asarray([int(d) for d in days if d <= end])
                ax.plot(idx, c.risk[idx], linestyle="None", marker=st.marker, markersize=4.5, color=st.color)
        ticks = sorted(set(time_ticks(end)) | {float(d) for d in days})
        ax.set_xlim(0, end * 1.02)
        ax.set_ylim(0, 1.01)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_major_formatter(ExactPercentFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        handles = [legend_handle(c.style, c.label) for c in curves]
        fig.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False, handlelength=3.0)
        return png_data_uri(fig)


def start_days_figure(day: np.ndarray, starters: np.ndarray, at_risk: np.ndarray, *, xlabel: str) -> str:
    """Bars: patients starting ketamine on each day of the grace period; line: the daily start
    probability among those not yet started (starters / at risk), as a PNG data URI."""
    with drawing():
        fig = new_figure(7.2, 3.0)
        ax = fig.add_subplot()
        ax.bar(day, starters, width=0.8, color=PALETTE[0], alpha=0.8, label="patients starting that day")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("patients starting")
        ax.set_xlim(-0.8, float(day.max()) + 0.8 if day.size else 1)
        ax.grid(True, axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        hz = ax.twinx()
        with np.errstate(all="ignore"):
            p = np.where(at_risk > 0, starters / np.maximum(at_risk, 1), np.nan)
        hz.plot(day, p, color=REFERENCE_COLOR, linewidth=1.2, marker=".", markersize=3,
                label="daily start probability among those not yet started")
        hz.set_ylim(0, max(0.01, float(np.nanmax(p)) * 1.15) if np.isfinite(p).any() else 1)
        hz.yaxis.set_major_formatter(ExactPercentFormatter())
        hz.set_ylabel("start probability")
        hz.spines["right"].set_visible(True)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = hz.get_legend_handles_labels()
        fig.legend(h1 + h2, l1 + l2, loc="outside upper center", ncols=2, frameon=False)
        return png_data_uri(fig)
