"""Kaplan-Meier (and cumulative incidence) curves per arm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, PercentFormatter

from ketaoutcomes.report.figures.base import drawing, new_figure, png_data_uri

__all__ = ["KMCurve", "km_figure"]


@dataclass(frozen=True)
class KMCurve:
    """One arm's Kaplan-Meier curve, as the cumulative proportion with the event (1 - S).

    ``time`` holds the KM table's times (ascending); ``cum``, ``lower`` and
    ``upper`` the cumulative proportion and its confidence band at those
    times (NaN where the band is undefined). ``censor_times`` mark censored
    follow-up on the curve.
    """

    label: str
    color: str
    linestyle: str
    time: np.ndarray
    cum: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    censor_times: np.ndarray


def _step_from_zero(c: KMCurve) -> tuple[np.ndarray, ...]:
    # The curve starts at 0 (nobody has had the event) just before time 0; an
    # event on day 0 then shows as a jump at 0.
    t = np.concatenate([[0.0], c.time])
    return t, np.concatenate([[0.0], c.cum]), np.concatenate([[0.0], c.lower]), np.concatenate([[0.0], c.upper])


def km_figure(
    curves: Sequence[KMCurve], *, xlabel: str, ylabel: str, ticks: Sequence[float], band_label: str
) -> str:
    """Step plot of the cumulative proportion with the event per arm, with CI bands."""
    with drawing():
        fig = new_figure(7.2, 4.0)
        ax = fig.add_subplot()
        xmax = max(ticks[-1] if ticks else 0.0, max((float(c.time.max()) for c in curves if c.time.size), default=0.0))
        for c in curves:
            t, y, lo, hi = _step_from_zero(c)
            ax.fill_between(t, lo, hi, step="post", color=c.color, alpha=0.13, linewidth=0)
            ax.step(t, y, where="post", color=c.color, linestyle=c.linestyle, linewidth=1.6, label=c.label)
            if c.censor_times.size:
                idx = np.searchsorted(t, c.censor_times, side="right") - 1
                ax.plot(c.censor_times, y[np.clip(idx, 0, None)], linestyle="none", marker="|",
                        markersize=5, markeredgewidth=0.8, color=c.color, alpha=0.7)
        ax.set_xlim(0, xmax * 1.02 if xmax > 0 else 1)
        ax.set_ylim(0, 1.01)
        ax.xaxis.set_major_locator(FixedLocator(list(ticks)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                      title=f"shaded: {band_label}", title_fontsize=7, alignment="left")
        return png_data_uri(fig)
