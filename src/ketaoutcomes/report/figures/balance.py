"""Figures of the propensity-score comparison: covariate balance and preference scores."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.ticker import NullLocator, PercentFormatter

from ketaoutcomes.report.figures.base import drawing, finite, new_figure, png_data_uri

__all__ = ["love_plot", "preference_figure"]


def love_plot(rows: Sequence[tuple[str, str, float, float]], *, threshold: float, labels: Mapping[str, tuple[str, str]]) -> str:
    """Covariate balance (a "love plot"): |SMD| before (open) and after (filled) weighting per
    covariate, one colour per route vs the reference arm, with the gate's threshold as a line.

    ``rows``: (target arm, covariate, |SMD| before, |SMD| after); ``labels``: arm -> (label, colour).
    """
    covariates = sorted({r[1] for r in rows})
    targets = list(dict.fromkeys(r[0] for r in rows))
    with drawing():
        fig = new_figure(7.2, 1.2 + 0.28 * len(covariates))
        ax = fig.add_subplot()
        ypos = {c: len(covariates) - 1 - i for i, c in enumerate(covariates)}
        step = 0.6 / max(len(targets), 1)
        for k, t in enumerate(targets):
            label, colour = labels.get(t, (t, "#333333"))
            dy = (k - (len(targets) - 1) / 2) * step
            pts = [r for r in rows if r[0] == t]
            ax.plot([r[2] for r in pts], [ypos[r[1]] + dy for r in pts], marker="o", markersize=4, linestyle="none",
                    markerfacecolor="white", markeredgecolor=colour)
            ax.plot([r[3] for r in pts], [ypos[r[1]] + dy for r in pts], marker="o", markersize=4, linestyle="none",
                    color=colour, label=label)
        ax.axvline(threshold, color="#b00020", linewidth=0.9, linestyle="--")
        ax.set_yticks(range(len(covariates)), list(reversed(covariates)))
        ax.yaxis.set_minor_locator(NullLocator())
        values = [v for r in rows for v in (r[2], r[3]) if finite(v)]
        ax.set_xlim(0, max([threshold * 1.5, *values]) * 1.05)
        ax.set_xlabel("|standardized mean difference|  (open: before weighting, filled: after)")
        ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return png_data_uri(fig)


def preference_figure(panels: Sequence[tuple[str, Sequence[tuple[str, str, np.ndarray]]]], *, edges: np.ndarray,
                      bounds: tuple[float, float]) -> str:
    """Preference-score distributions, one panel per route vs the reference arm (as CohortMethod's
    ``plotPs``): the share of each arm's patients per bin, as outlines, with the equipoise region
    shaded.

    ``panels``: (panel title, [(arm label, colour, counts per bin)]); ``edges``: the bin edges.
    """
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    with drawing():
        fig = new_figure(2.5 * cols + 0.4, 2.1 * rows + 0.3)
        axes = fig.subplots(rows, cols, squeeze=False)
        for i, (title, arms) in enumerate(panels):
            ax = axes[i // cols][i % cols]
            ax.axvspan(bounds[0], bounds[1], color="#eeeeee", linewidth=0)
            top = 0.0
            for label, colour, counts in arms:
                total = float(np.sum(counts))
                share = counts / total if total > 0 else counts * 0.0
                top = max(top, float(np.max(share)) if len(share) else 0.0)
                ax.stairs(share, edges, color=colour, linewidth=1.4, label=label)
            ax.set_title(title, fontsize=8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, top * 1.5 if top > 0 else 1)  # headroom for the legend above the bars
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
            ax.legend(fontsize=6, frameon=False, loc="upper left", ncols=2, handlelength=1.2, columnspacing=0.8)
            if i % cols == 0:
                ax.set_ylabel("share of the arm's patients")
            ax.set_xlabel("preference score")
        for j in range(len(panels), rows * cols):
            axes[j // cols][j % cols].set_visible(False)
        return png_data_uri(fig)
