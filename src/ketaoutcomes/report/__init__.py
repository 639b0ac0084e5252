"""The HTML report: figures (matplotlib, embedded as PNG), tables with small-cell
suppression, and rendering to one self-contained file.

>>> from ketaoutcomes.report import ReportData, render_report
>>> render_report(data, Path("reports/study.html"))  # doctest: +SKIP

Layers (each imports only those before it): :mod:`.figures`; :mod:`.format` and :mod:`.arms`;
:mod:`.sections` (one module per section or family); :mod:`.context` (:class:`ReportData` and
the page context); :mod:`.render` (Jinja).
"""

from ketaoutcomes.report.context import ReportData
from ketaoutcomes.report.render import render_html, render_report

__all__ = ["ReportData", "render_report", "render_html"]
