"""Figures of the report: matplotlib (Agg canvas, no pyplot), returned as PNG data URIs.

Every figure is drawn on its own :class:`~matplotlib.figure.Figure` with an
explicit Agg canvas, inside an ``rc_context`` that starts from matplotlib's
defaults, so the bytes depend only on the data (and the matplotlib version):
no global backend switch, no rcParams leaking in from the caller, no
"Software" or date in the PNG metadata (:mod:`.base`).

The functions take plain arrays and labels, not result frames; shaping the
frames is the job of the sections (:mod:`ketaoutcomes.report.sections`). The mood
trajectory figures are the exception: they draw the stored predicted means
(table results_trajectory, or a fitted :class:`~ketaoutcomes.models.trajectory.TrajectoryResult`).
Arms keep one look (colour, line style, marker: :func:`~.base.arm_style`) in every figure.

Modules: :mod:`.base` (arm styles, drawing context, PNG encoding, time ticks), :mod:`.km`
(Kaplan-Meier and cumulative incidence curves), :mod:`.forest` (hazard ratios),
:mod:`.balance` (love plot, preference scores), :mod:`.trajectory` (mood trajectories).
"""

from ketaoutcomes.report.figures.balance import love_plot, preference_figure
from ketaoutcomes.report.figures.base import REFERENCE_COLOR, ArmStyle, arm_style, drawing, png_data_uri, time_ticks
from ketaoutcomes.report.figures.forest import ForestRow, forest_figure
from ketaoutcomes.report.figures.km import KMCurve, km_fig, km_figure
from ketaoutcomes.report.figures.trajectory import predicted_figure, trajectory_figure

__all__ = ["ArmStyle", "KMCurve", "ForestRow", "drawing", "km_fig", "km_figure", "forest_figure", "love_plot", "preference_figure", "predicted_figure",
           "time_ticks", "trajectory_figure", "png_data_uri", "REFERENCE_COLOR", "arm_style"]
