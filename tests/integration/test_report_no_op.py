"""`report` with nothing changed recomputes nothing (issue 10, part 6): no write session, no new
analysis run, no render; a report that was deleted or edited, or drawn by other code, is rendered
again. And the summary it hands on (the Prefect artifacts' key results) is the report's own table.

Timing is not asserted here (it depends on the machine; ``scripts/benchmark.py`` measures it):
what is asserted is that nothing was recomputed and that the path imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ketaoutcomes.report.render as render_module
import ketaoutcomes.report.stamp as stamp
from ketaoutcomes.pipeline import run_report, simulate_step, validate_step
from ketaoutcomes.settings import SimulationSettings, StudySettings
from tests.conftest import query_db
from tests.html_tables import html_tables, squash

SMALL = SimulationSettings(n_patients=300, seed=5)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> dict:
    """A warehouse with one analysis and its report (the first `report`)."""
    tmp = tmp_path_factory.mktemp("noop")
    export = tmp / "export"
    simulate_step(SMALL, export)
    db, reports = tmp / "w.duckdb", tmp / "reports"
    outcomes = run_report(db, StudySettings(), export_dir=export, reports_dir=reports)
    assert all(o.ran for o in outcomes)
    return {"db": db, "reports": reports, "first": outcomes, "html": Path(outcomes[-1].details["report_path"])}


def _state(db: Path) -> dict:
    st = os.stat(db)
    return {"file": (st.st_ino, st.st_size, st.st_mtime_ns),
            "runs": query_db(db, "SELECT run_id FROM results_runs ORDER BY run_id")["run_id"].to_list(),
            "steps": query_db(db, "SELECT step, run_id, runs, seq FROM meta_steps ORDER BY seq").rows()}


@pytest.fixture
def no_render(monkeypatch) -> list:
    """Records every render (render_step reaches render_report through the report package)."""
    calls: list = []
    real = render_module.render_report

    def recording(data, out, **kwargs):
        calls.append(out)
        return real(data, out, **kwargs)

    monkeypatch.setattr(render_module, "render_report", recording)
    return calls


def test_a_second_report_with_nothing_changed_writes_and_renders_nothing(reported, no_render):
    db, reports, html = reported["db"], reported["reports"], reported["html"]
    before, page = _state(db), html.read_bytes()
    again = run_report(db, StudySettings(), reports_dir=reports)
    assert [(o.step, o.ran) for o in again] == [("validate", False), ("analyze", False), ("render", False)]
    assert no_render == []  # the report was not drawn again
    assert _state(db) == before  # no write session: same published file, no new run, meta_steps as it was
    assert html.read_bytes() == page
    assert again[-1].details["run_id"] == reported["first"][2].details["run_id"]
    # the summary handed on is the one stored when the report was drawn
    assert again[-1].details["summary"] == reported["first"][-1].details["summary"]


def test_a_forced_revalidation_of_the_same_data_does_not_redraw_the_report(reported, no_render):
    db, reports = reported["db"], reported["reports"]
    assert validate_step(db, force=True).ran  # the nightly run always validates
    again = run_report(db, StudySettings(), reports_dir=reports)
    assert [o.ran for o in again] == [False, False, False] and no_render == []


def test_a_deleted_or_edited_report_is_drawn_again(reported, no_render):
    db, reports, html = reported["db"], reported["reports"], reported["html"]
    page = html.read_bytes()
    settings = reports / "ketaoutcomes-default.settings.json"

    html.unlink()
    assert run_report(db, StudySettings(), reports_dir=reports)[-1].ran
    assert html.read_bytes() == page and len(no_render) == 1  # the same data give the same bytes

    html.write_bytes(page.replace(b"Summary", b"Sumary", 1))
    assert run_report(db, StudySettings(), reports_dir=reports)[-1].ran
    assert html.read_bytes() == page and len(no_render) == 2

    settings.unlink()
    assert run_report(db, StudySettings(), reports_dir=reports)[-1].ran
    assert settings.exists() and len(no_render) == 3

    stamp.stamp_path(html).unlink()
    assert run_report(db, StudySettings(), reports_dir=reports)[-1].ran
    assert len(no_render) == 4
    assert not run_report(db, StudySettings(), reports_dir=reports)[-1].ran


def test_changed_code_or_templates_draw_the_report_again(reported, no_render, monkeypatch):
    db, reports = reported["db"], reported["reports"]
    assert not run_report(db, StudySettings(), reports_dir=reports)[-1].ran
    monkeypatch.setattr(stamp, "source_hash", lambda: "an-edited-template")
    outcomes = run_report(db, StudySettings(), reports_dir=reports)
    assert [o.ran for o in outcomes] == [False, False, True] and len(no_render) == 1
    monkeypatch.undo()  # the code as it is: drawn again, and current from then on
    assert run_report(db, StudySettings(), reports_dir=reports)[-1].ran
    assert not run_report(db, StudySettings(), reports_dir=reports)[-1].ran


def test_the_source_hash_follows_every_file_that_draws_the_report():
    files = {p.relative_to(stamp.PACKAGE_DIR).as_posix() for p in stamp.PACKAGE_DIR.rglob("*")
             if p.suffix in stamp.SOURCE_SUFFIXES}
    assert "report/templates/report.html.j2" in files and "report/sections/summary.py" in files
    assert any(f.startswith("registries/") and f.endswith(".csv") for f in files)


def test_the_summary_handed_on_is_the_reports_summary_table(reported):
    summary = reported["first"][-1].details["summary"]
    (table,) = html_tables(reported["html"].read_text(encoding="utf-8"), "summary")
    assert summary["columns"] == table["columns"]
    assert [r["cells"] for r in summary["rows"]] == table["rows"]
    assert summary["rows"], "the small cohort has routes to compare"
    for row in summary["rows"]:
        route, verdict, *numbers = row["cells"]
        assert row["withheld"] == verdict.startswith("withheld")
        if row["withheld"]:  # shown as withheld, never as numbers
            assert set(numbers) == {"\u2014"}
        else:
            assert any(any(ch.isdigit() for ch in cell) for cell in numbers)
    assert any(r["withheld"] for r in summary["rows"]) and not all(r["withheld"] for r in summary["rows"])
    assert [squash(s) for s in summary["sentences"]] == [
        squash(s) for s in _sentences(reported["html"].read_text(encoding="utf-8"))]


def _sentences(page: str) -> list[str]:
    block = page.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    items = block.split('<ul class="plain">', 1)[1].split("</ul>", 1)[0]
    return [li.split("</li>", 1)[0] for li in items.split("<li>")[1:]]


def test_report_with_nothing_changed_imports_nothing_heavy(reported):
    """The command line's no-op path: Prefect, Great Expectations, statsmodels, matplotlib (the
    costly imports of the pipeline), pandas (which DuckDB's Python parameter binding would import)
    and pyarrow with numpy (which a polars frame of a query needs) stay unloaded, and the command
    says every step was up to date."""
    code = (
        "import sys\n"
        "from ketaoutcomes.cli import app\n"
        "try:\n"
        f"    app(['report', '--db', {str(reported['db'])!r}, '--out', {str(reported['reports'])!r}])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = ('prefect', 'great_expectations', 'statsmodels', 'matplotlib', 'scipy', 'pandas', 'pyarrow',\n"
        "         'numpy', 'lifelines', 'jinja2', 'ketaoutcomes.analysis', 'ketaoutcomes.validate',\n"
        "         'ketaoutcomes.report.context')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    said = [line.split(":")[0] for line in proc.stderr.splitlines()]
    assert said == ["up to date validate", "up to date analyze", "up to date render"], proc.stderr
    assert json.loads((reported["reports"] / "ketaoutcomes-default.settings.json").read_text())["run_id"]
