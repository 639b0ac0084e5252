"""The HTML report of one analysis run.

One way in: :func:`load_report_data` reads a run from the warehouse into a :class:`ReportData`
(result tables by warehouse name, plus validation, batches, quarantine, data-quality checks,
provenance, notes, truth and arm labels), and :func:`render_report` writes it as one
self-contained HTML file.

>>> from ketaoutcomes.report import load_report_data, render_report
>>> data = load_report_data(con, study, run_id, warehouse=db)  # doctest: +SKIP
>>> render_report(data, Path("reports/study.html"))  # doctest: +SKIP

Layers (each imports only those before it): :mod:`.figures`; :mod:`.format`, :mod:`.suppression`
(small-cell suppression that subtraction cannot undo) and :mod:`.arms`; :mod:`.sections` (one
module per section or family); :mod:`.context` (:class:`ReportData` and the page context);
:mod:`.render` (Jinja) and :mod:`.load` (the warehouse's SQL).
"""

from ketaoutcomes.report.context import ReportData
from ketaoutcomes.report.load import load_report_data
from ketaoutcomes.report.render import render_html, render_report

__all__ = ["ReportData", "load_report_data", "render_html", "render_report"]
