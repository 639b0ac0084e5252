"""A simulation is written where its warehouse lives, in a folder named by its settings, and never
over another one's export (issue 9, part 6, point 1).

The shared folder the bug report names is data/synthetic/default under $KETAOUTCOMES_HOME: the
export of the default warehouse's embedded default cohort, which the nightly demo loads. Each test
puts a stand-in of that export there (the files of a small export and the default cohort's
simulation stamp) and checks, byte for byte, that a simulation of other settings, or for another
warehouse, leaves it alone. The embedded default itself keeps its folder (and so its numbers).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.pipeline import STEPS, SYNTHETIC_MARKER, plan_run, simulate_step, synthetic_export_dir
from ketaoutcomes.settings import SimulationSettings
from tests.conftest import TINY, query_db, write_export

runner = CliRunner()


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A project folder ($KETAOUTCOMES_HOME and the current folder) whose default warehouse's
    synthetic export, data/synthetic/default, is already there."""
    monkeypatch.setenv("KETAOUTCOMES_HOME", str(tmp_path))
    monkeypatch.delenv("KETAOUTCOMES_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    default = write_export(tmp_path / "data" / "synthetic" / "default")
    (default / "truth.json").write_text("{}\n")
    (default / ".simulation-settings.json").write_text(SimulationSettings().canonical_json())
    return tmp_path


def test_the_embedded_default_keeps_its_folder(home):
    plan = plan_run(home / "data" / "warehouse" / "ketaoutcomes.duckdb")
    assert plan.steps == STEPS and plan.export_dir == home / "data" / "synthetic" / "default"
    assert synthetic_export_dir(SimulationSettings()) == home / "data" / "synthetic" / "default"


def test_other_settings_get_their_own_folder_and_another_warehouse_one_beside_it(home, tmp_path):
    sim = SimulationSettings(n_patients=500, seed=7)
    name = f"n500-seed7-{sim.settings_id}"
    home_db = home / "data" / "warehouse" / "ketaoutcomes.duckdb"
    assert plan_run(home_db, sim=sim, simulate=True).export_dir == home / "data" / "synthetic" / name
    other = tmp_path / "scratch" / "x.duckdb"
    assert plan_run(other, sim=sim, simulate=True).export_dir == tmp_path / "scratch" / "x.duckdb.synthetic" / name
    # the embedded default of an empty warehouse elsewhere (the flows make it): beside that warehouse too
    assert plan_run(other).export_dir == tmp_path / "scratch" / "x.duckdb.synthetic" / "default"


def test_report_with_other_settings_leaves_the_default_cohorts_export_alone(home):
    """`report --patients N --seed S` on the default warehouse used to simulate into
    data/synthetic/default, over the export the default warehouse (and the nightly demo) loads."""
    before = digest(home / "data" / "synthetic" / "default")
    res = runner.invoke(app, ["report", "--patients", "200", "--seed", "7"])
    assert res.exit_code == 0, res.output
    assert digest(home / "data" / "synthetic" / "default") == before
    folder = home / "data" / "synthetic" / f"n200-seed7-{SimulationSettings(n_patients=200, seed=7).settings_id}"
    sources = query_db(home / "data" / "warehouse" / "ketaoutcomes.duckdb", "SELECT source_file FROM meta_batches")
    assert {Path(f).parent for f in sources["source_file"]} == {folder}
    # the same command again: the warehouse holds that very cohort, so the options fit it
    again = runner.invoke(app, ["report", "--patients", "200", "--seed", "7"])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("options", [["--patients", "500", "--seed", "7"], ["--seed", "3"], ["--patients", "2000"]])
def test_report_cohort_options_on_a_warehouse_holding_other_data_are_an_error_not_ignored(home, options):
    """`report --patients/--seed` on a warehouse that holds data used to report that data, exit 0,
    the options silently ignored (the analyst believed it was the cohort asked for)."""
    from ketaoutcomes.pipeline import ingest_step

    db = home / "data" / "warehouse" / "ketaoutcomes.duckdb"
    clinic = write_export(home / "clinic")
    ingest_step(db, clinic)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    res = runner.invoke(app, ["report", *options])
    assert res.exit_code == 1 and "Traceback" not in res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: the warehouse {db} already holds data (from {clinic}), so a synthetic cohort")
    assert "`python -m ketaoutcomes simulate --patients N --seed S`" in line and "--db <a new .duckdb file>" in line
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in (home / "data" / "synthetic").iterdir()) == ["default"]  # nothing simulated
    assert not (home / "reports").exists()


def test_report_cohort_options_with_an_export_are_a_usage_error(home):
    res = runner.invoke(app, ["report", "--patients", "500", "--export", str(write_export(home / "clinic"))])
    assert res.exit_code == 2 and "--patients/--seed choose a synthetic cohort; --export loads" in res.output
    assert not (home / "data" / "warehouse").exists()


def test_simulate_without_out_leaves_the_default_cohorts_export_alone(home):
    before = digest(home / "data" / "synthetic" / "default")
    res = runner.invoke(app, ["simulate", "--patients", "100", "--seed", "7"])
    assert res.exit_code == 0, res.output
    folder = home / "data" / "synthetic" / f"n100-seed7-{SimulationSettings(n_patients=100, seed=7).settings_id}"
    assert res.stdout.strip() == str(folder) and (folder / "patients.csv").exists()
    assert digest(home / "data" / "synthetic" / "default") == before


def test_a_simulation_never_writes_over_an_export_it_did_not_write(tmp_path):
    export = write_export(tmp_path / "clinic")
    before = digest(export)
    res = runner.invoke(app, ["simulate", "--patients", "100", "--out", str(export)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: {export} holds an export that no simulation wrote (") and "courses.csv" in line
    assert digest(export) == before


def test_a_folder_a_simulation_wrote_may_be_simulated_again(tmp_path):
    folder = tmp_path / "syn"
    simulate_step(SimulationSettings(n_patients=100, seed=1), folder)
    assert (folder / SYNTHETIC_MARKER).exists()
    (folder / ".simulation-settings.json").unlink()  # as a simulation killed half-way leaves it
    assert simulate_step(SimulationSettings(n_patients=100, seed=2), folder).ran
    assert TINY["patients.csv"] not in (folder / "patients.csv").read_text()
