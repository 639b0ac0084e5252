"""What every figure shares: the arm styles, the drawing context, tick labels and the PNG encoding.

Arms are told apart by colour *and* by line style or marker (:func:`arm_style`), so a figure
printed in greyscale still separates them; every figure takes an arm's look from that one
mapping (through :meth:`ketaoutcomes.report.arms.Arms.style`).

Every figure is drawn on its own :class:`~matplotlib.figure.Figure` with an
explicit Agg canvas, inside an ``rc_context`` that starts from matplotlib's
defaults (:func:`drawing`), so the bytes depend only on the data (and the
matplotlib version): no global backend switch, no rcParams leaking in from the
caller, no "Software" or date in the PNG metadata.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import Formatter

__all__ = ["DPI", "LINESTYLES", "MARKERS", "PALETTE", "RC", "REFERENCE_COLOR", "ArmStyle", "ExactPercentFormatter",
           "arm_style", "drawing", "finite", "legend_handle", "new_figure", "percent_decimals", "png_data_uri",
           "time_ticks"]

DPI = 150
#: Okabe-Ito palette (colour-blind safe); the reference arm is black and dashed.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F")
REFERENCE_COLOR = "#000000"
#: One marker per route, in the report's arm order (the reference arm has none).
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
#: Line styles of the routes: solid for the first len(MARKERS), then the next style for the next as many.
LINESTYLES = ("-", "-.", ":")

RC = {
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


class ArmStyle(NamedTuple):
    """How an arm looks in every figure: colour, line style and marker ("" for none)."""

    color: str
    linestyle: str
    marker: str


def arm_style(index: int, *, is_reference: bool) -> ArmStyle:
    """The look of the route at ``index`` among the routes in the report's arm order, or of the reference arm.

    The reference arm is black and dashed, without a marker; route ``i`` has colour ``PALETTE[i]``,
    marker ``MARKERS[i]`` and a solid line, and past the seventh route the line style changes, so
    (line style, marker) differs between arms for ``len(MARKERS) * len(LINESTYLES)`` routes.
    """
    if is_reference:
        return ArmStyle(REFERENCE_COLOR, "--", "")
    return ArmStyle(PALETTE[index % len(PALETTE)], LINESTYLES[(index // len(MARKERS)) % len(LINESTYLES)],
                    MARKERS[index % len(MARKERS)])


def legend_handle(style: ArmStyle, label: str, *, linewidth: float = 1.6, markersize: float = 5.0) -> Line2D:
    """A legend entry showing the arm's line and marker together."""
    return Line2D([], [], color=style.color, linestyle=style.linestyle, linewidth=linewidth,
                  marker=style.marker or "None", markersize=markersize, label=label)


def percent_decimals(values: Sequence[float], *, max_decimals: int = 3) -> int:
    """The fewest decimals that write every one of ``values`` (shares, 0.025 = 2.5%) exactly as a percentage."""
    for d in range(max_decimals + 1):
        if all(abs(round(100 * v, d) - 100 * v) < 1e-9 for v in values if math.isfinite(v)):
            return d
    return max_decimals


class ExactPercentFormatter(Formatter):
    """Shares as percentages with as many decimals as the axis's ticks need, the same for each tick:
    0.025 is "2.5%", never "2%"; 0, 0.05, 0.1 are "0%", "5%", "10%"."""

    decimals = 0

    def set_locs(self, locs: Sequence[float]) -> None:
        super().set_locs(locs)
        self.decimals = percent_decimals(list(locs))

    def __call__(self, x: float, pos: int | None = None) -> str:
        text = f"{100 * x:.{self.decimals}f}%"
        return text[1:] if text.startswith("-") and float(text[1:-1]) == 0 else text  # no "-0%"


def png_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (deterministic bytes).

    Drawn once, at :data:`DPI` on white, with its layout, and the canvas's pixels encoded: the same
    bytes as ``fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})``,
    which draws a figure with a layout engine twice (once with rendering disabled, to lay it out).
    """
    from matplotlib.image import imsave

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    fig.set_facecolor("white")
    canvas.draw()
    buf = io.BytesIO()
    imsave(buf, np.asarray(canvas.buffer_rgba()), format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def new_figure(width: float, height: float) -> Figure:
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


@contextmanager
def drawing() -> Iterator[None]:
    """matplotlib's defaults and the report's fonts (:data:`RC`), for the figure drawn inside."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(RC)
        yield


def finite(*xs: float) -> bool:
    """Every one of ``xs`` a finite positive number."""
    return all(x is not None and math.isfinite(x) and x > 0 for x in xs)
