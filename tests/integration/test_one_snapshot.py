"""One analysis sees one snapshot (issue 9, part 6, point 4).

`analyze` (and `report`) validate, then analyse, each in its own write session. An ingest that
publishes between the two used to make the analysis fail with a misleading "not been validated":
it found data newer than the validation. Now the analysis checks the validation of the snapshot
it analyses, and validates that snapshot itself, in its own write session, when it has not been.
The ingest in between is published by monkeypatching the validate step to run one after it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import ketaoutcomes.pipeline as pipeline
from ketaoutcomes.cli import app
from ketaoutcomes.settings import SimulationSettings
from tests.conftest import query_db

runner = CliRunner()


@pytest.fixture(scope="module")
def deliveries(tmp_path_factory) -> dict[str, Path]:
    """v1, a corrected re-delivery of its mood scores (v2), and a delivery whose instruments.csv
    caps MADRS at 30, so that scores already loaded fail validation (bad)."""
    root = tmp_path_factory.mktemp("deliveries")
    v1 = root / "v1"
    pipeline.simulate_step(SimulationSettings(n_patients=300, seed=5), v1)
    v2 = root / "v2"
    v2.mkdir()
    ms = pl.read_csv(v1 / "mood_scores.csv", infer_schema=False)
    ms.with_columns(pl.when(pl.int_range(pl.len()) < 5).then(pl.lit("20")).otherwise("total_score")
                    .alias("total_score")).write_csv(v2 / "mood_scores.csv")
    bad = root / "bad"
    bad.mkdir()
    shutil.copy(v1 / "patients.csv", bad / "patients.csv")  # already loaded: skipped
    (bad / "instruments.csv").write_text(
        "instrument,label,rater,score_min,score_max,response_reduction,remission_max,relapse_min\n"
        "MADRS,MADRS capped at 30,clinician,0,30,0.5,10,22\n")
    return {"v1": v1, "v2": v2, "bad": bad}


@pytest.fixture
def db(tmp_path, deliveries) -> Path:
    path = tmp_path / "w.duckdb"
    pipeline.ingest_step(path, deliveries["v1"])
    pipeline.validate_step(path)
    return path


def publish_after_validation(monkeypatch, db: Path, export: Path) -> None:
    """The validate step, then an ingest of ``export`` publishing before the analysis starts."""
    validate = pipeline.validate_step

    def validate_then_ingest(*args, **kwargs):
        outcome = validate(*args, **kwargs)
        pipeline.ingest_step(db, export)
        return outcome

    monkeypatch.setattr(pipeline, "validate_step", validate_then_ingest)


def test_an_ingest_published_between_validation_and_analysis_is_analysed_in_one_snapshot(db, deliveries, monkeypatch):
    publish_after_validation(monkeypatch, db, deliveries["v2"])
    res = runner.invoke(app, ["analyze", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "not been validated" not in res.output
    assert "validated first, in the same snapshot" in res.stderr
    batches = query_db(db, "SELECT batch_id FROM meta_batches ORDER BY load_seq")["batch_id"].to_list()
    assert len(batches) == 6  # v1's five files and v2's mood scores
    run = query_db(db, "SELECT * FROM results_runs").row(0, named=True)
    assert run["batches"].split(",") == batches  # the analysis saw the snapshot with v2, whole
    validations = query_db(db, "SELECT status, details->>'$.data_fingerprint' AS fp FROM meta_steps "
                               "WHERE step = 'validate' ORDER BY seq")
    # the second validation is of the data the analysis ran on, done in the analysis's session
    assert validations["status"].to_list() == ["ok", "ok"] and validations["fp"][-1] == run["data_fingerprint"]


def test_a_failing_delivery_published_in_between_is_a_validation_failure_not_not_validated(db, deliveries, monkeypatch):
    publish_after_validation(monkeypatch, db, deliveries["bad"])
    res = runner.invoke(app, ["analyze", "--db", str(db)])
    assert res.exit_code == 2, res.output  # the README's code for a validation failure
    assert "range_per_instrument.MADRS" in res.stderr and "not been validated" not in res.output
    assert query_db(db, "SELECT count(*) n FROM meta_steps WHERE step = 'analyze'")["n"][0] == 0
    failed = query_db(db, "SELECT count(*) n FROM meta_steps WHERE step = 'validate' AND status = 'failed'")
    assert failed["n"][0] == 1  # the failed validation is published, for the operator to read


def test_report_renders_the_snapshot_its_analysis_published_whatever_is_published_after_it(db, deliveries,
                                                                                          monkeypatch):
    """`report` analysed, then read the snapshot published by the time it rendered: an ingest
    published in between made it fail with "no analysis of the current data" (and a report read
    from that snapshot would mix the analysed data's results with newer batches). It renders the
    snapshot its analysis published: that analysis, and the batches it analysed."""
    import ketaoutcomes.report as report_module

    analyze, render = pipeline.analyze_step, report_module.render_report
    seen = {}

    def analyze_then_ingest(*args, **kwargs):
        outcome = analyze(*args, **kwargs)
        seen["run_id"] = outcome.details["run_id"]
        pipeline.ingest_step(db, deliveries["v2"])  # published between the analysis and the report
        return outcome

    def capture(data, out):
        seen["data"] = data
        return render(data, out)

    monkeypatch.setattr(pipeline, "analyze_step", analyze_then_ingest)
    monkeypatch.setattr(report_module, "render_report", capture)
    res = runner.invoke(app, ["report", "--db", str(db), "--out", str(db.parent / "reports")])
    assert res.exit_code == 0, res.output
    assert "no analysis of the current data" not in res.output
    settings = (db.parent / "reports" / "ketaoutcomes-default.settings.json").read_text()
    assert f'"run_id": "{seen["run_id"]}"' in settings
    now = query_db(db, "SELECT batch_id FROM meta_batches ORDER BY load_seq")["batch_id"].to_list()
    assert len(now) == 6  # v2 was published ...
    shown = seen["data"].batches["batch_id"].to_list()
    assert shown == now[:5] and seen["data"].provenance["batches"].split(",") == now[:5]  # ... and is not in the report
