"""The HTML report: figures (matplotlib, embedded as PNG), tables with small-cell
suppression, and rendering to one self-contained file.

>>> from ketaoutcomes.report import ReportData, render_report
>>> render_report(data, Path("reports/study.html"))  # doctest: +SKIP
"""

from ketaoutcomes.report.render import ReportData, render_html, render_report

__all__ = ["ReportData", "render_report", "render_html"]
