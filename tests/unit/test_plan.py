"""The run order is decided in one place (pipeline.plan_run) and the CLI and the flows follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketaoutcomes.pipeline import STEPS, default_export_dir, ingest_step, plan_run
from ketaoutcomes.settings import SimulationSettings, home_db_path


@pytest.fixture
def loaded_db(tmp_path, tiny_export) -> Path:
    db = tmp_path / "w.duckdb"
    ingest_step(db, tiny_export)
    return db


def test_empty_warehouse_and_no_export_runs_the_embedded_default(tmp_path, monkeypatch):
    monkeypatch.setenv("KETAOUTCOMES_HOME", str(tmp_path))
    plan = plan_run(home_db_path())
    assert plan.steps == STEPS
    assert plan.export_dir == default_export_dir() and plan.sim == SimulationSettings()
    # another warehouse's embedded default (the flows make it) is written beside that warehouse
    other = plan_run(tmp_path / "none.duckdb")
    assert other.steps == STEPS and other.export_dir == tmp_path / "none.duckdb.synthetic" / "default"


def test_warehouse_with_data_and_no_export_ingests_nothing(loaded_db):
    assert plan_run(loaded_db).steps == ("validate", "analyze", "render")


def test_an_export_is_ingested_never_simulated_into(loaded_db, tmp_path):
    plan = plan_run(loaded_db, export_dir=tmp_path / "export", sim=SimulationSettings(n_patients=500))
    assert plan.steps == ("ingest", "validate", "analyze", "render") and plan.export_dir == tmp_path / "export"


def test_simulation_asked_for_goes_into_the_export_folder(loaded_db, tmp_path):
    sim = SimulationSettings(n_patients=300, seed=2)
    plan = plan_run(loaded_db, export_dir=tmp_path / "syn", sim=sim, simulate=True)
    assert plan.steps == STEPS and plan.export_dir == tmp_path / "syn" and plan.sim == sim


def test_a_step_run_on_its_own_never_makes_up_data(tmp_path):
    plan = plan_run(tmp_path / "none.duckdb", through="analyze", embedded_default=False)
    assert plan.steps == ("validate", "analyze") and plan.export_dir is None


def test_through_stops_the_order(tmp_path, tiny_export):
    assert plan_run(tmp_path / "w.duckdb", export_dir=tiny_export, through="validate").steps == ("ingest", "validate")
    with pytest.raises(ValueError, match="through must be one of"):
        plan_run(tmp_path / "w.duckdb", through="ingest")


def test_the_flows_follow_the_same_steps():
    from flows import pipeline as fp

    assert fp.TASK_NAMES == STEPS
