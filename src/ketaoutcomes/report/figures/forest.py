"""Forest plot of hazard ratios per arm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ketaoutcomes.report.figures.base import drawing, finite, new_figure, png_data_uri

__all__ = ["ForestRow", "forest_figure", "log_ticks"]


@dataclass(frozen=True)
class ForestRow:
    """One arm versus the reference: adjusted and naive (HR, lower, upper), either may be None, and
    the primary (propensity-weighted or matched) estimate when its diagnostics passed."""

    label: str
    color: str
    adjusted: tuple[float, float, float] | None
    naive: tuple[float, float, float] | None
    primary: tuple[float, float, float] | None = None


_HR_AXIS_MIN, _HR_AXIS_MAX = 1e-3, 1e3
_FINE_TICKS = (0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10)
_COARSE_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks of a log axis from ``lo`` to ``hi``: 1, 1.5, 2, 3, 5, 7 ... when they label the whole axis
    (the axis ends within a factor 1.6 of the outer ticks), else 1, 2, 5, 10, 20 ... (at most 8)."""
    fine = [t for t in _FINE_TICKS if lo <= t <= hi]
    if 3 <= len(fine) <= 8 and fine[0] <= lo * 1.6 and fine[-1] >= hi / 1.6:
        return fine
    coarse = [t for t in _COARSE_TICKS if lo <= t <= hi]
    while len(coarse) > 8:
        coarse = coarse[::2] if 1 in coarse[::2] else coarse[1::2]
    return coarse


def forest_figure(rows: Sequence[ForestRow], *, xlabel: str, left_note: str, right_note: str) -> str:
    """Forest plot of hazard ratios per arm (log x axis, line at 1): primary diamonds, adjusted filled
    squares, naive open circles."""
    with drawing():
        three = any(r.primary for r in rows)  # the primary estimate on top, diamonds
        fig = new_figure(7.2, 1.3 + (0.75 if three else 0.55) * len(rows))
        ax = fig.add_subplot()
        values = [1.0]
        for r in rows:
            for est in (r.primary, r.adjusted, r.naive):
                if est is not None:
                    values += [v for v in est if finite(v)]
        # pad, and keep a degenerate fit (HR 1e-9 or 1e9) from squashing the others
        lo, hi = max(min(values) / 1.25, _HR_AXIS_MIN), min(max(values) * 1.25, _HR_AXIS_MAX)
        for i, r in enumerate(rows):
            y = len(rows) - 1 - i
            marks = ((r.primary, 0.24, "D"), (r.adjusted, 0.0, "s"), (r.naive, -0.24, "o")) if three else \
                ((r.adjusted, 0.14, "s"), (r.naive, -0.14, "o"))
            for est, dy, marker in marks:
                filled = marker != "o"
                if est is None or not finite(est[0]):
                    continue
                hr, l, u = est
                # an unbounded interval, or one beyond the axis, runs to the axis edge
                hr = min(max(hr, lo), hi)
                l = min(max(l, lo), hi) if finite(l) else lo
                u = min(max(u, lo), hi) if finite(u) else hi
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
        ax.xaxis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
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
