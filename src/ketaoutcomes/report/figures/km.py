"""Kaplan-Meier (and cumulative incidence) curves per arm, with the number at risk under the x axis.

The number-at-risk table is a second axes sharing the plot's x axis (as survminer's
``risk.table``): one row per arm, labelled with the arm's label in its colour, and the counts
written at the x positions of the plot's ticks. The legend
sits above the plot, so it takes no width from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter

from ketaoutcomes.report.figures.base import (
    ArmStyle,
    ExactPercentFormatter,
    drawing,
    legend_handle,
    new_figure,
    png_data_uri,
)

__all__ = ["KMCurve", "km_fig", "km_figure", "marker_times"]

#: Height of the plot, and of one row of the number-at-risk table, in inches.
_PLOT_HEIGHT, _RISK_ROW = 3.6, 0.2


@dataclass(frozen=True)
class KMCurve:
    """One arm's Kaplan-Meier curve, as the cumulative proportion with the event (1 - S).

    ``time`` holds the KM table's times (ascending); ``cum``, ``lower`` and
    ``upper`` the cumulative proportion and its confidence band at those
    times (NaN where the band is undefined). ``censor_times`` mark censored
    follow-up on the curve. ``at_risk`` holds the arm's number at risk at each
    tick of the figure, as it is to be written (small counts already suppressed);
    empty: no number-at-risk row. ``risk_label`` names the row (default: ``label``).
    """

    label: str
    style: ArmStyle
    time: np.ndarray
    cum: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    censor_times: np.ndarray
    at_risk: Sequence[str] = ()
    risk_label: str = ""


def _step_from_zero(c: KMCurve) -> tuple[np.ndarray, ...]:
    # The curve starts at 0 (nobody has had the event) just before time 0; an
    # event on day 0 then shows as a jump at 0.
    t = np.concatenate([[0.0], c.time])
    return t, np.concatenate([[0.0], c.cum]), np.concatenate([[0.0], c.lower]), np.concatenate([[0.0], c.upper])


def marker_times(tmax: float, index: int, n_curves: int, *, per_curve: int = 5) -> np.ndarray:
    """Where curve ``index`` of ``n_curves``, followed up to ``tmax``, carries its marker: ``per_curve``
    times evenly spread over its follow-up, shifted by the curve's index so that arms ending together do
    not put their markers on the same days."""
    if not (tmax > 0 and per_curve > 0):
        return np.array([])
    spacing = tmax / per_curve
    return spacing * (np.arange(per_curve) + (index + 1) / (n_curves + 1))


def _risk_table(ax: Axes, curves: Sequence[KMCurve], ticks: Sequence[float], title: str) -> None:
    rows = [c for c in curves if len(c.at_risk)]
    n = len(rows)
    ax.set_ylim(-0.5, n - 0.5)
    for i, c in enumerate(rows):
        y = n - 1 - i
        for x, s in zip(ticks, c.at_risk, strict=True):
            ax.text(x, y, s, ha="center", va="center", fontsize=7.5, color="#1a1a1a")
    ax.set_yticks(range(n), [c.risk_label or c.label for c in reversed(rows)])
    for label, c in zip(ax.get_yticklabels(), reversed(rows), strict=True):
        label.set_color(c.style.color)
    ax.tick_params(axis="y", length=0, pad=14)
    ax.tick_params(axis="x", length=0, labelbottom=False)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, loc="left", fontsize=8, pad=3)


def km_fig(curves: Sequence[KMCurve], *, xlabel: str, ylabel: str, ticks: Sequence[float], band_label: str,
           risk_title: str = "Number at risk") -> Figure:
    """The figure of :func:`km_figure`, not yet encoded (its artists made with the report's rcParams;
    draw or encode it inside :func:`~ketaoutcomes.report.figures.base.drawing` for the same pixels)."""
    with drawing():
        return _draw(curves, xlabel=xlabel, ylabel=ylabel, ticks=ticks, band_label=band_label, risk_title=risk_title)


def _draw(curves: Sequence[KMCurve], *, xlabel: str, ylabel: str, ticks: Sequence[float], band_label: str,
          risk_title: str) -> Figure:
    with_risk = [c for c in curves if len(c.at_risk)]
    for c in with_risk:
        if len(c.at_risk) != len(ticks):
            raise ValueError(f"{c.label}: {len(c.at_risk)} numbers at risk for {len(ticks)} ticks")
    risk_height = _RISK_ROW * len(with_risk) + 0.3 if with_risk else 0.0
    fig = new_figure(7.2, _PLOT_HEIGHT + 0.45 + risk_height)
    if with_risk:
        grid = fig.add_gridspec(2, 1, height_ratios=[_PLOT_HEIGHT, risk_height])
        ax = fig.add_subplot(grid[0])
        risk_ax = fig.add_subplot(grid[1], sharex=ax)
    else:
        ax, risk_ax = fig.add_subplot(), None
    xmax = max(ticks[-1] if ticks else 0.0, max((float(c.time.max()) for c in curves if c.time.size), default=0.0))
    for i, c in enumerate(curves):
        st = c.style
        t, y, lo, hi = _step_from_zero(c)
        ax.fill_between(t, lo, hi, step="post", color=st.color, alpha=0.13, linewidth=0)
        ax.step(t, y, where="post", color=st.color, linestyle=st.linestyle, linewidth=1.6)
        if st.marker and c.time.size:
            mt = marker_times(float(c.time.max()), i, len(curves))
            idx = np.searchsorted(t, mt, side="right") - 1
            ax.plot(mt, y[np.clip(idx, 0, None)], linestyle="None", marker=st.marker, markersize=4.5, color=st.color)
        if c.censor_times.size:
            idx = np.searchsorted(t, c.censor_times, side="right") - 1
            ax.plot(c.censor_times, y[np.clip(idx, 0, None)], linestyle="none", marker="|",
                    markersize=5, markeredgewidth=0.8, color=st.color, alpha=0.7)
    ax.set_xlim(0, xmax * 1.02 if xmax > 0 else 1)
    ax.set_ylim(0, 1.01)
    ax.xaxis.set_major_locator(FixedLocator(list(ticks)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_major_formatter(ExactPercentFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if curves:
        handles = [legend_handle(c.style, c.label) for c in curves]
        handles.append(Patch(facecolor="#000000", alpha=0.13, linewidth=0, label=f"shaded: {band_label}"))
        fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 3), frameon=False,
                   handlelength=3.0, columnspacing=1.4)
    if risk_ax is not None:
        _risk_table(risk_ax, curves, ticks, risk_title)
    return fig


def km_figure(
    curves: Sequence[KMCurve], *, xlabel: str, ylabel: str, ticks: Sequence[float], band_label: str,
    risk_title: str = "Number at risk",
) -> str:
    """Step plot of the cumulative proportion with the event per arm, with CI bands, as a PNG data URI.

    Each arm is drawn in its colour and line style, with its marker five times along its curve;
    arms with ``at_risk`` numbers get a row of the number-at-risk table under the plot.
    """
    with drawing():
        return png_data_uri(km_fig(curves, xlabel=xlabel, ylabel=ylabel, ticks=ticks, band_label=band_label,
                                   risk_title=risk_title))
