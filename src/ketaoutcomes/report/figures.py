"""Figures of the report: matplotlib (Agg canvas, no pyplot), returned as PNG data URIs.

Every figure is drawn on its own :class:`~matplotlib.figure.Figure` with an
explicit Agg canvas, inside an ``rc_context`` that starts from matplotlib's
defaults, so the bytes depend only on the data (and the matplotlib version):
no global backend switch, no rcParams leaking in from the caller, no
"Software" or date in the PNG metadata.

The functions take plain arrays and labels, not result frames; shaping the
frames is the job of the sections (:mod:`ketaoutcomes.report.sections`). The mood
trajectory figures are the exception: they draw the stored predicted means
(table results_trajectory, or a fitted :class:`~ketaoutcomes.models.trajectory.TrajectoryResult`),
and, unlike the others, they draw without resetting rcParams.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, PercentFormatter

from ketaoutcomes.models.trajectory import TIME_TERMS, TrajectoryResult

__all__ = ["KMCurve", "ForestRow", "km_figure", "forest_figure", "love_plot", "preference_figure", "predicted_figure",
           "time_ticks", "trajectory_figure", "png_data_uri", "REFERENCE_COLOR", "arm_style"]

DPI = 150
#: Okabe-Ito palette (colour-blind safe); the reference arm is black and dashed.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F")
REFERENCE_COLOR = "#000000"

_RC = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs on every machine
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "ketaoutcomes",  # only matters if a figure is ever saved as SVG
}


def arm_style(index: int, *, is_reference: bool) -> tuple[str, str]:
    """(colour, linestyle) of the arm at ``index`` in the report's arm order."""
    if is_reference:
        return REFERENCE_COLOR, "--"
    return PALETTE[index % len(PALETTE)], "-"


def png_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (deterministic bytes)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def time_ticks(tmax: float, *, max_ticks: int = 8) -> list[float]:
    """Tick positions in days from 0 to ``tmax``: whole weeks where the range allows.

    The same positions label the KM plot's x axis and the number-at-risk table,
    so the table reads under the plot.
    """
    if not math.isfinite(tmax) or tmax <= 0:
        return [0.0]
    for step in (1, 2, 7, 14, 28, 56, 91, 182, 364, 728):
        if tmax / step <= max_ticks - 1:
            break
    else:
        step = math.ceil(tmax / (max_ticks - 1))
    n = int(math.floor(tmax / step + 1e-9))
    return [float(i * step) for i in range(n + 1)]


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
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        fig = _new_figure(7.2, 4.0)
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


@dataclass(frozen=True)
class ForestRow:
    """One arm versus the reference: adjusted and naive (HR, lower, upper), either may be None, and
    the primary (propensity-weighted or matched) estimate when its diagnostics passed."""

    label: str
    color: str
    adjusted: tuple[float, float, float] | None
    naive: tuple[float, float, float] | None
    primary: tuple[float, float, float] | None = None


def _finite(*xs: float) -> bool:
    return all(x is not None and math.isfinite(x) and x > 0 for x in xs)


_HR_AXIS_MIN, _HR_AXIS_MAX = 1e-3, 1e3
_FINE_TICKS = (0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10)
_COARSE_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def _log_ticks(lo: float, hi: float) -> list[float]:
    fine = [t for t in _FINE_TICKS if lo <= t <= hi]
    if 3 <= len(fine) <= 8:
        return fine
    coarse = [t for t in _COARSE_TICKS if lo <= t <= hi]
    while len(coarse) > 8:
        coarse = coarse[::2] if 1 in coarse[::2] else coarse[1::2]
    return coarse


def forest_figure(rows: Sequence[ForestRow], *, xlabel: str, left_note: str, right_note: str) -> str:
    """Forest plot of hazard ratios per arm (log x axis, line at 1): adjusted filled, naive open."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        fig = _new_figure(7.2, 1.3 + (0.75 if any(r.primary for r in rows) else 0.55) * len(rows))
        ax = fig.add_subplot()
        values = [1.0]
        for r in rows:
            for est in (r.primary, r.adjusted, r.naive):
                if est is not None:
                    values += [v for v in est if _finite(v)]
        three = any(r.primary for r in rows)  # the primary estimate on top, diamonds
        # pad, and keep a degenerate fit (HR 1e-9 or 1e9) from squashing the others
        lo, hi = max(min(values) / 1.25, _HR_AXIS_MIN), min(max(values) * 1.25, _HR_AXIS_MAX)
        for i, r in enumerate(rows):
            y = len(rows) - 1 - i
            marks = ((r.primary, 0.24, "D"), (r.adjusted, 0.0, "s"), (r.naive, -0.24, "o")) if three else \
                ((r.adjusted, 0.14, "s"), (r.naive, -0.14, "o"))
            for est, dy, marker in marks:
                filled = marker != "o"
                if est is None or not _finite(est[0]):
                    continue
                hr, l, u = est
                # an unbounded interval, or one beyond the axis, runs to the axis edge
                hr = min(max(hr, lo), hi)
                l = min(max(l, lo), hi) if _finite(l) else lo
                u = min(max(u, lo), hi) if _finite(u) else hi
                ax.plot([l, u], [y + dy, y + dy], color=r.color, linewidth=1.6 if filled else 1.1)
                ax.plot([hr], [y + dy], marker=marker, markersize=6,
                        markerfacecolor=r.color if filled else "white", markeredgecolor=r.color,
                        linestyle="none")
        ax.axvline(1.0, color="#444444", linewidth=0.9)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_yticks(range(len(rows)), [r.label for r in reversed(rows)])
        ax.yaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_locator(FixedLocator(_log_ticks(lo, hi)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlabel(xlabel)
        ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.text(0.0, 1.02, f"\u2190 {left_note}", transform=ax.transAxes, ha="left", va="bottom", fontsize=8, color="#444444")
        ax.text(1.0, 1.02, f"{right_note} \u2192", transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="#444444")
        shown = [name for name, present in (("PS-weighted (primary)", three), ("adjusted", any(r.adjusted for r in rows)),
                                            ("naive", any(r.naive for r in rows))) if present]
        if shown:
            mark = {"PS-weighted (primary)": "D", "adjusted": "s", "naive": "o"}
            legend = [Line2D([], [], marker=mark[k], linestyle="none", color="#333333",
                             markerfacecolor="white" if k == "naive" else "#333333", label=k) for k in shown]
            ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return png_data_uri(fig)


def love_plot(rows: Sequence[tuple[str, str, float, float]], *, threshold: float, labels: Mapping[str, tuple[str, str]]) -> str:
    """Covariate balance (a "love plot"): |SMD| before (open) and after (filled) weighting per
    covariate, one colour per route vs the reference arm, with the gate's threshold as a line.

    ``rows``: (target arm, covariate, |SMD| before, |SMD| after); ``labels``: arm -> (label, colour).
    """
    covariates = sorted({r[1] for r in rows})
    targets = list(dict.fromkeys(r[0] for r in rows))
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        fig = _new_figure(7.2, 1.2 + 0.28 * len(covariates))
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
        finite = [v for r in rows for v in (r[2], r[3]) if _finite(v)]
        ax.set_xlim(0, max([threshold * 1.5, *finite]) * 1.05)
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
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        fig = _new_figure(2.5 * cols + 0.4, 2.1 * rows + 0.3)
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
