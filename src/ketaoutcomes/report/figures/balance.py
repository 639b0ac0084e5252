"""Figures of the propensity-score comparison: covariate balance and preference scores.

Both have one panel per route versus the reference arm, at most three panels a row.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from ketaoutcomes.report.figures.base import (
    ArmStyle,
    ExactPercentFormatter,
    drawing,
    finite,
    legend_handle,
    new_figure,
    png_data_uri,
)

__all__ = ["BalancePanel", "love_fig", "love_plot", "preference_fig", "preference_figure"]

#: One route vs the reference arm: (panel title, the route's style, [(covariate label, |SMD| before, |SMD| after)]).
BalancePanel = tuple[str, ArmStyle, Sequence[tuple[str, float, float]]]


def _title(text: str) -> str:
    """A panel title on lines that fit the panel: "Esketamine intranasal vs SSRI" breaks before "vs"."""
    if len(text) <= 26:
        return text
    head, sep, tail = text.partition(" vs ")
    return f"{head}\nvs {tail}" if sep else textwrap.fill(text, 26, break_long_words=False, break_on_hyphens=False)


def _grid(n: int) -> tuple[int, int]:
    cols = min(max(n, 1), 3)
    return math.ceil(max(n, 1) / cols), cols


def love_fig(panels: Sequence[BalancePanel], *, threshold: float) -> Figure:
    """The figure of :func:`love_plot`, not yet encoded."""
    covariates = list(dict.fromkeys(c for _, _, rows in panels for c, _, _ in rows))
    ypos = {c: len(covariates) - 1 - i for i, c in enumerate(covariates)}
    values = [v for _, _, rows in panels for _, b, a in rows for v in (b, a) if finite(v)]
    xmax = max([threshold * 1.5, *values]) * 1.05
    nrows, ncols = _grid(len(panels))
    with drawing():
        fig = new_figure(7.2, nrows * (0.75 + 0.2 * len(covariates)) + 0.6)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for i, (title, style, rows) in enumerate(panels):
            ax = axes[i // ncols][i % ncols]
            marker = style.marker or "o"
            for c, before, after in rows:
                y = ypos[c]
                if finite(before) and finite(after):
                    ax.plot([before, after], [y, y], color="#bbbbbb", linewidth=0.8, zorder=1)
                ax.plot([before], [y], marker=marker, markersize=4.5, linestyle="None", markerfacecolor="white",
                        markeredgecolor=style.color, zorder=2)
                ax.plot([after], [y], marker=marker, markersize=4.5, linestyle="None", color=style.color, zorder=3)
            ax.axvline(threshold, color="#b00020", linewidth=0.9, linestyle="--")
            ax.set_title(_title(title), fontsize=8)
            ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
            ax.set_axisbelow(True)
        for j in range(len(panels), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
            if j >= ncols:  # the panel above an empty slot is the last of its column: it keeps its |SMD| ticks
                axes[j // ncols - 1][j % ncols].tick_params(axis="x", labelbottom=True)
        first = axes[0][0]
        first.set_yticks(range(len(covariates)), list(reversed(covariates)))
        first.yaxis.set_minor_locator(NullLocator())
        first.set_ylim(-0.6, len(covariates) - 0.4)
        first.set_xlim(0, xmax)
        fig.supxlabel("|standardized mean difference|", fontsize=9)
        legend = [
            Line2D([], [], marker="o", linestyle="None", markerfacecolor="white", markeredgecolor="#333333",
                   label="before weighting"),
            Line2D([], [], marker="o", linestyle="None", color="#333333", label="after weighting"),
            Line2D([], [], color="#b00020", linestyle="--", linewidth=0.9, label=f"threshold {threshold:g}"),
        ]
        fig.legend(handles=legend, loc="outside upper center", ncols=3, frameon=False)
        return fig


def love_plot(panels: Sequence[BalancePanel], *, threshold: float) -> str:
    """Covariate balance (a "love plot"), one panel per route vs the reference arm: |SMD| of each
    covariate before (open) and after (filled) weighting, in the route's colour and marker, with the
    gate's threshold as a dashed line. Panels share the covariates (named as a reader names them) and
    the |SMD| scale."""
    with drawing():
        return png_data_uri(love_fig(panels, threshold=threshold))


def preference_fig(panels: Sequence[tuple[str, Sequence[tuple[str, ArmStyle, np.ndarray]]]], *, edges: np.ndarray,
                   bounds: tuple[float, float]) -> Figure:
    """The figure of :func:`preference_figure`, not yet encoded."""
    nrows, ncols = _grid(len(panels))
    with drawing():
        fig = new_figure(2.5 * ncols + 0.4, 2.1 * nrows + 0.3)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for i, (title, arms) in enumerate(panels):
            ax = axes[i // ncols][i % ncols]
            ax.axvspan(bounds[0], bounds[1], color="#eeeeee", linewidth=0)
            top = 0.0
            handles = []
            for label, style, counts in arms:
                total = float(np.sum(counts))
                share = counts / total if total > 0 else counts * 0.0
                top = max(top, float(np.max(share)) if len(share) else 0.0)
                ax.stairs(share, edges, color=style.color, linestyle=style.linestyle, linewidth=1.4)
                handles.append(legend_handle(ArmStyle(style.color, style.linestyle, ""), label, linewidth=1.4))
            ax.set_title(_title(title), fontsize=8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, top * 1.5 if top > 0 else 1)  # headroom for the legend above the bars
            ax.yaxis.set_major_formatter(ExactPercentFormatter())
            ax.legend(handles=handles, fontsize=6, frameon=False, loc="upper left", ncols=2, handlelength=2.2,
                      columnspacing=0.8)
            if i % ncols == 0:
                ax.set_ylabel("share of the arm's patients")
            ax.set_xlabel("preference score")
        for j in range(len(panels), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        return fig


def preference_figure(panels: Sequence[tuple[str, Sequence[tuple[str, ArmStyle, np.ndarray]]]], *, edges: np.ndarray,
                      bounds: tuple[float, float]) -> str:
    """Preference-score distributions, one panel per route vs the reference arm (as CohortMethod's
    ``plotPs``): the share of each arm's patients per bin, as outlines in the arm's colour and line
    style, with the equipoise region shaded.

    ``panels``: (panel title, [(arm label, arm style, counts per bin)]); ``edges``: the bin edges.
    """
    with drawing():
        return png_data_uri(preference_fig(panels, edges=edges, bounds=bounds))
