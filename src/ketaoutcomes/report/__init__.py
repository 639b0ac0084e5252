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
:mod:`.render` (Jinja) and :mod:`.load` (the warehouse's SQL, with :mod:`.inputs`).

The package's own names are imported when first used (PEP 562), so that the light modules
(:mod:`.inputs`: what a report is made from; :mod:`.stamp`: whether a rendered report is current)
can be used without loading matplotlib: ``report`` with nothing changed reads only those.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ReportData", "load_report_data", "render_html", "render_report"]

#: name -> the module that defines it
_HOMES = {"ReportData": "context", "load_report_data": "load", "render_html": "render", "render_report": "render"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"ketaoutcomes.report.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'ketaoutcomes.report' has no attribute {name!r}")
