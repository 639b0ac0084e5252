"""What every figure shares: the arm styles, the drawing context and the PNG encoding.

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
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["DPI", "PALETTE", "RC", "REFERENCE_COLOR", "arm_style", "drawing", "finite", "new_figure", "png_data_uri",
           "time_ticks"]

DPI = 150
#: Okabe-Ito palette (colour-blind safe); the reference arm is black and dashed.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F")
REFERENCE_COLOR = "#000000"

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
