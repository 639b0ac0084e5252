"""The study report: :class:`~ketaoutcomes.report.context.ReportData` in, one self-contained HTML file out.

:func:`render_report` fills the Jinja template ``templates/report.html.j2``
(autoescaped; inline CSS; no external resource of any kind, so the file opens
offline and prints) with the page context of
:func:`ketaoutcomes.report.context.build_context`.

Conventions, each visible in the report itself:

* confidence intervals at level 1 - ``alpha`` (``provenance["alpha"]``,
  default 0.05) wherever an estimate is shown;
* small-cell suppression (``suppress_small_cells``): counts of 1 to ``ReportData.small_cell_max``
  (the study's ``report.small_cell_max``, default 10) in the
  cohort, attrition, follow-up, median, log-rank, model, safety, relapse and
  effect-modifier tables and the numbers at risk are shown as "<11", and the percentage next to a suppressed
  count is withheld. Zero is shown. Hazard ratios, medians, proportions and
  CIs are never suppressed. Primary suppression only (see the report footer);
* an empty frame, or an endpoint without rows, renders "not estimable: <reason>"
  with the reason taken from the analysis notes when one names it;
* nothing depends on the clock: the same data give the same bytes;
* the page carries its run record (``ReportData.run_record``) in its ``<head>``, checked by
  ``python -m ketaoutcomes reproduce`` (:mod:`ketaoutcomes.report.record`).
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

from ketaoutcomes.report.context import ReportData, build_context
from ketaoutcomes.report.record import embed_record, record_script

__all__ = ["render_html", "render_report"]

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "report.html.j2"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every string from the data is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def render_html(data: ReportData, *, suppress_small_cells: bool = True) -> str:
    """The report as one HTML string (what :func:`render_report` writes)."""
    ctx = build_context(data, suppress_small_cells=suppress_small_cells)
    ctx["run_record"] = record_script() if data.run_record is not None else ""
    html = _environment().get_template(TEMPLATE_NAME).render(**ctx)
    return embed_record(html, data.run_record) if data.run_record is not None else html


def render_report(data: ReportData, out_path: Path, *, suppress_small_cells: bool = True) -> Path:
    """Write the report of ``data`` to ``out_path`` (one self-contained HTML file).

    Parameters
    ----------
    data : ReportData
        Result tables, notes and provenance of one analysis run.
    out_path : Path
        File to write; its folder is created. Written to a temporary file in the
        same folder first and moved into place, so a reader never sees half a report.
    suppress_small_cells : bool, default True
        Show counts of 1 to ``data.small_cell_max`` as "<11" (for reports that leave the analysis
        environment). Estimates and confidence intervals are never suppressed.

    Returns
    -------
    Path
        ``out_path``.
    """
    out_path = Path(out_path)
    html = render_html(data, suppress_small_cells=suppress_small_cells)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(html.encode("utf-8"))
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
