"""`rollback` (issue 9, part 6, point 2): the warehouse back to its state before a batch or a step.

Checked against the state recorded before the corrected delivery: the stg_ tables equal to the
row (frame equality), meta_batches, the analysis runs and validations that remain, and what the
next runs do (up to date on the restored data, recomputed on data loaded again).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import ketaoutcomes.ingest.rollback as rollback_module
from ketaoutcomes.cli import app
from ketaoutcomes.contract import TABLE_ORDER
from ketaoutcomes.pipeline import analyze_step, ingest_step, validate_step
from ketaoutcomes.settings import StudySettings
from tests.conftest import TINY, copy_warehouse, query_db, write_export

runner = CliRunner()

#: A corrected re-delivery of two tables: P2's age and two of P1's MADRS ratings.
CORRECTION = {
    "patients.csv": TINY["patients.csv"].replace("P2,A,M,52,", "P2,A,M,53,"),
    "mood_scores.csv": TINY["mood_scores.csv"].replace("P1,2024-01-09 10:00,MADRS,20", "P1,2024-01-09 10:00,MADRS,22")
                                              .replace("P1,2024-01-12 10:00,MADRS,14", "P1,2024-01-12 10:00,MADRS,12"),
}


def staged(db: Path) -> dict[str, pl.DataFrame]:
    return {t: query_db(db, f"SELECT * FROM stg_{t}") for t in TABLE_ORDER}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """v1 loaded, validated and analysed; then the correction loaded, validated and analysed
    (built once; each test gets a copy of the warehouse)."""
    tmp_path = tmp_path_factory.mktemp("history")
    db = tmp_path / "w.duckdb"
    study = StudySettings()
    ingest_step(db, write_export(tmp_path / "v1"))
    validate_step(db)
    run_a = analyze_step(db, study).details["run_id"]
    before = {"stg": staged(db), "batches": query_db(db, "SELECT * FROM meta_batches ORDER BY load_seq"),
              "validation": query_db(db, "SELECT * FROM validation_results ORDER BY ALL")}
    correction = ingest_step(db, write_export(tmp_path / "v2", CORRECTION))
    validate_step(db)
    run_b = analyze_step(db, study).details["run_id"]
    new_batches = [f["batch_id"] for f in correction.details["files"] if not f["skipped"]]
    assert len(new_batches) == 2 and run_a != run_b
    assert any(not staged(db)[t].equals(before["stg"][t]) for t in TABLE_ORDER)
    return {"db": db, "study": study, "before": before, "run_a": run_a, "run_b": run_b,
            "new_batches": new_batches, "v2": tmp_path / "v2"}


@pytest.fixture
def history(built, tmp_path) -> dict:
    return {**built, "db": copy_warehouse(built["db"], tmp_path)}


def ingest_run_id(db: Path, batch_id: str) -> str:
    steps = query_db(db, "SELECT run_id, details FROM meta_steps WHERE step = 'ingest'")
    (run_id,) = [r for r, d in zip(steps["run_id"], steps["details"]) if f'"batch_id": "{batch_id}"' in d
                 and '"skipped": false' in d]
    return run_id


@pytest.mark.parametrize("by", ["batch", "ingest step"])
def test_rollback_after_a_correction_restores_the_earlier_staging_exactly(history, by):
    db, before = history["db"], history["before"]
    first_new = history["new_batches"][0]
    target = first_new if by == "batch" else ingest_run_id(db, first_new)
    res = runner.invoke(app, ["rollback", target, "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert f"rollback to before {'batch' if by == 'batch' else 'step ingest'} {target}" in res.stdout
    now = staged(db)
    for t in TABLE_ORDER:
        assert now[t].equals(before["stg"][t]), t
    assert query_db(db, "SELECT * FROM meta_batches ORDER BY load_seq").equals(before["batches"])
    # the correction's raw rows, quarantine and data-quality rows are gone with its batches
    assert query_db(db, "SELECT count(*) n FROM raw_patients")["n"][0] == 3
    ids = ", ".join(f"'{b}'" for b in history["new_batches"])
    assert query_db(db, f"SELECT count(*) n FROM dq_checks WHERE batch_id IN ({ids})")["n"][0] == 0
    # what was computed from the correction is removed; what was computed before it stays
    assert query_db(db, "SELECT run_id FROM results_runs")["run_id"].to_list() == [history["run_a"]]
    assert query_db(db, "SELECT run_id FROM latest_run")["run_id"].to_list() == [history["run_a"]]
    for table in ("ad_adsl", "ad_adtte", "results_attrition"):
        assert set(query_db(db, f"SELECT DISTINCT run_id FROM {table}")["run_id"]) == {history["run_a"]}, table
    assert query_db(db, "SELECT * FROM validation_results ORDER BY ALL").equals(before["validation"])
    # and the report shows that validation, not the rolled-back one (whose results are gone)
    from ketaoutcomes.report import load_report_data
    from ketaoutcomes.warehouse import read_connection

    con = read_connection(db)
    try:
        shown = load_report_data(con, history["study"], history["run_a"], warehouse=db).validation
    finally:
        con.close()
    assert shown.height == before["validation"].height > 0
    marked = query_db(db, "SELECT step FROM meta_steps WHERE status = 'rolled_back' ORDER BY seq")["step"].to_list()
    assert marked == ["ingest", "validate", "analyze"]
    assert query_db(db, "SELECT count(*) n FROM meta_steps WHERE step = 'rollback'")["n"][0] == 1
    # the restored data is the data validated and analysed before: both are up to date again
    assert not validate_step(db, force=False).ran
    again = analyze_step(db, history["study"], force=False)
    assert not again.ran and again.details["run_id"] == history["run_a"]
    # the correction loaded again (on purpose: its content was rolled back) is new data again: loaded,
    # validated, analysed anew
    assert ingest_step(db, history["v2"], reload_rolled_back=True).ran
    assert validate_step(db, force=False).ran
    assert analyze_step(db, history["study"], force=False).ran


def test_rollback_to_before_a_validation_keeps_the_data_and_removes_that_validation_and_what_followed(history):
    db = history["db"]
    runs = query_db(db, "SELECT run_id, details->>'$.data_fingerprint' fp FROM meta_steps WHERE step = 'validate' "
                        "ORDER BY seq")
    target = runs["run_id"][-1]  # the validation of the corrected data
    stg = staged(db)
    res = runner.invoke(app, ["rollback", target, "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "batches removed: none" in res.stdout
    for t in TABLE_ORDER:
        assert staged(db)[t].equals(stg[t]), t
    assert query_db(db, "SELECT run_id FROM results_runs")["run_id"].to_list() == [history["run_a"]]
    assert query_db(db, f"SELECT count(*) n FROM validation_results WHERE run_id = '{target}'")["n"][0] == 0
    assert validate_step(db, force=False).ran  # the current data is validated anew


def test_dry_run_lists_what_would_change_and_leaves_the_file_byte_identical(history):
    db = history["db"]
    files_before = sorted(p.name for p in db.parent.iterdir())
    digest = sha(db)
    target = history["new_batches"][0]
    res = runner.invoke(app, ["rollback", target, "--dry-run", "--db", str(db)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert out.startswith("dry run, nothing changed:\nrollback to before batch " + target)
    for b in history["new_batches"]:
        assert f"  {b} (load " in out
    assert "  stg_patients: 3 -> 3" not in out  # unchanged counts are not listed
    assert "  raw_patients: 6 -> 3" in out and "  raw_mood_scores: 14 -> 7" in out and "  meta_batches: 7 -> 5" in out
    assert "analysis runs removed (1):" in out and history["run_b"] in out and history["run_a"] not in out
    assert "validation runs removed (1):" in out
    assert "steps marked rolled_back in meta_steps (3):" in out
    assert "still hold(s) the removed files" in out
    assert sha(db) == digest and sorted(p.name for p in db.parent.iterdir()) == files_before


@pytest.mark.parametrize("given, hint", [
    ("patients-0000000000000000", "did you mean"),
    ("no-such-thing", "list them with python -m ketaoutcomes query"),
])
def test_an_unknown_target_is_one_line_with_a_suggestion(history, given, hint):
    db = history["db"]
    digest = sha(db)
    res = runner.invoke(app, ["rollback", given, "--db", str(db)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f'error: rollback: no batch or step "{given}" in the warehouse; ') and hint in line
    if hint == "did you mean":
        assert '"patients-' in line.split("did you mean")[1]
    assert sha(db) == digest


def test_a_step_already_rolled_back_and_a_rollback_are_refused(history):
    db = history["db"]
    target = history["new_batches"][0]
    step = ingest_run_id(db, target)
    assert runner.invoke(app, ["rollback", target, "--db", str(db)]).exit_code == 0
    res = runner.invoke(app, ["rollback", step, "--db", str(db)])
    assert res.exit_code == 1 and res.stderr.strip() == f"error: rollback: step ingest {step} is already rolled back"
    rb = query_db(db, "SELECT run_id FROM meta_steps WHERE step = 'rollback'")["run_id"][0]
    res = runner.invoke(app, ["rollback", rb, "--db", str(db)])
    assert res.exit_code == 1 and "a rollback is not undone" in res.stderr


def test_a_rollback_that_fails_half_way_publishes_nothing(history, monkeypatch):
    db = history["db"]
    digest = sha(db)

    def broken(con, table):
        raise RuntimeError("rebuild failed")

    monkeypatch.setattr(rollback_module, "rebuild_staging", broken)  # after the raw rows are deleted
    res = runner.invoke(app, ["rollback", history["new_batches"][0], "--db", str(db)])
    assert res.exit_code == 1 and "internal error (RuntimeError)" in res.stderr and "rebuild failed" not in res.stderr
    assert sha(db) == digest
