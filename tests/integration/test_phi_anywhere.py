"""Nothing identifying gets in, in any place (issue 9, part 3): a simulated export with identifiers
planted where the guard cannot refuse them (a header that is not a column name, free text in a
code column, phone digits in number columns) goes through the whole chain (`report --export`:
ingest, validate, analyze, render) on the command line, and no planted value is printed, stored in
any table (lineage, step details, quarantine, data-quality, validation) or shown in the report."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.pipeline import simulate_step
from ketaoutcomes.settings import SimulationSettings
from tests.conftest import query_db
from tests.integration.test_corpus import stored_secrets

SECRETS = ["Okafor Adebayo", "Adebayo", "Okonkwo", "412345678", "5550148"]


def _delivery(folder: Path) -> Path:
    simulate_step(SimulationSettings(n_patients=300, seed=5), folder)
    patients = pl.read_csv(folder / "patients.csv", infer_schema=False)
    extra = pl.DataFrame({"patient_id": ["P9000001", "P9000002", "P9000003"], "site": ["S1", "seen by the Okonkwo family", "S1"],
                          "sex": ["F"] * 3, "age_at_index": ["412345678", "40", "40"],
                          "prior_failed_trials": ["1"] * 3, "diagnosis": ["MDD"] * 3})
    patients = pl.concat([patients, extra], how="diagonal")
    # an extra column headed by a person's name the guard cannot know
    patients.with_columns(pl.lit("x").alias("Okafor Adebayo")).write_csv(folder / "patients.csv")
    courses = pl.read_csv(folder / "courses.csv", infer_schema=False)
    first = courses.row(0, named=True)
    courses = pl.concat([courses, pl.DataFrame({
        "course_id": ["C9000003"], "patient_id": ["P9000003"], "arm": ["ssri"], "drug": ["sertraline per Okonkwo"],
        "start_date": [first["start_date"]]})], how="diagonal")
    courses.write_csv(folder / "courses.csv")
    sessions = pl.read_csv(folder / "sessions.csv", infer_schema=False)
    bad = sessions.filter(pl.col("course_id") == first["course_id"]).head(1).with_columns(
        pl.lit("C0000001-999").alias("session_id"), pl.lit("5550148").alias("hr_pre"))
    pl.concat([sessions, bad]).write_csv(folder / "sessions.csv")
    return folder


def test_planted_identifiers_reach_no_table_no_output_and_no_report(tmp_path):
    folder = _delivery(tmp_path / "export")
    db, out = tmp_path / "w.duckdb", tmp_path / "reports"
    res = CliRunner().invoke(app, ["report", "--export", str(folder), "--db", str(db), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert not [s for s in SECRETS if s in res.output], "printed"
    assert "ignored columns: #9" in res.output  # the header is named by its position

    # every row accounted for, the planted ones quarantined with reasons that quote nothing
    q = query_db(db, "SELECT table_name, rule, column_name, reason FROM quarantine ORDER BY ALL")
    assert {(r["table_name"], r["rule"], r["column_name"]) for r in q.iter_rows(named=True)} >= {
        ("patients", "impossible_value", "age_at_index"), ("patients", "not_a_code", "site"),
        ("courses", "not_a_code", "drug"), ("sessions", "impossible_value", "hr_pre")}
    assert query_db(db, "SELECT ignored_columns FROM meta_batches WHERE table_name = 'patients'").item() == "#9"
    details = json.loads(query_db(db, "SELECT details FROM meta_steps WHERE step = 'ingest'").item())
    assert details["files"][0]["ignored_columns"] == "#9"

    # no planted value in any column of any table (lineage, steps, quarantine, dq_checks, validation,
    # analysis) nor in the report
    assert not stored_secrets(db, SECRETS), "stored"
    html = next(out.glob("*.html")).read_text()
    assert "Data quality of the loads in force" in html
    assert not [s for s in SECRETS if s in html], "shown in the report"
