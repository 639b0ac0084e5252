"""The analysts' side of the warehouse on a small synthetic cohort: the latest_ views the analysis
creates with its tables, the example queries of docs/warehouse.md, and the DuckDB shell the project
installs (`uv run duckdb -readonly ...`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ketaoutcomes.analysis.target_trial_tables import TT_CONTRACTS
from ketaoutcomes.docs import EXAMPLE_QUERIES
from ketaoutcomes.pipeline import analyze_step, ingest_step, output_contracts, simulate_step, validate_step
from ketaoutcomes.settings import SimulationSettings, StudySettings
from ketaoutcomes.table_contract import LATEST_RUN_VIEW, latest_view
from ketaoutcomes.query import run_query
from tests.conftest import query_db as q

SMALL = SimulationSettings(n_patients=300, seed=5)
_FAST = dict(endpoints=("TTRESP",), arms=("ssri", "ketamine_iv"))
#: The diagnostics gate fails for the route (no covariate can be that well balanced) ...
GATE_FAILS = StudySettings(name="gate-fails", max_smd=0.001, **_FAST)
#: ... or passes (no balance or equipoise requirement).
GATE_PASSES = StudySettings(name="gate-passes", max_smd=1.0, min_equipoise=0.0, **_FAST)
#: The estimates a failed gate withholds, per table (what the contracts declare).
WITHHELD = {"results_cox": "hr", "results_km_weighted": "survival", "results_km_weighted_median": "events",
            "results_ate": "difference"}


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """The small cohort (plus two rows that break the contract: quarantined), validated and analysed
    with the default study and with a study whose propensity-score gate fails."""
    root = tmp_path_factory.mktemp("views")
    export = root / "export"
    simulate_step(SMALL, export)
    with open(export / "mood_scores.csv", "a") as fh:  # a score out of range, a patient nobody knows
        fh.write("P0000001,2024-07-20 10:00:00,MADRS,99,1,clinician\n")
        fh.write("P9999999,2024-07-20 10:00:00,MADRS,20,1,clinician\n")
    path = root / "w.duckdb"
    ingest_step(path, export)
    validate_step(path)
    analyze_step(path, StudySettings())
    analyze_step(path, GATE_FAILS)
    return path


def test_every_contract_has_its_view_with_the_declared_columns(db):
    contracts = output_contracts()
    kinds = dict(q(db, "SELECT table_name, table_type FROM information_schema.tables").iter_rows())
    assert kinds["latest_run"] == "VIEW"
    for name, contract in contracts.items():
        view = latest_view(contract)
        assert kinds[name] == "BASE TABLE" and kinds[view.name] == "VIEW", name
        described = q(db, f'DESCRIBE "{view.name}"')
        assert dict(zip(described["column_name"], described["column_type"])) == \
            {c.name: c.dtype for c in view.columns}, view.name
    # and the staged tables of a one-batch load: views of their raw_<table> (ingest.load.rebuild_staging)
    assert sorted(n for n, k in kinds.items() if k == "VIEW" and not n.startswith("stg_")) == \
        sorted(["latest_run", *(latest_view(c).name for c in contracts.values())])


def test_latest_run_is_each_studys_latest_analysis(db):
    runs = q(db, "SELECT * FROM latest_run ORDER BY study")
    assert runs.columns == LATEST_RUN_VIEW.column_names
    assert runs["study"].to_list() == ["default", "gate-fails"]
    assert runs["settings_id"].to_list() == [StudySettings().settings_id, GATE_FAILS.settings_id]
    stored = q(db, "SELECT run_id, started_at FROM results_runs")
    assert set(runs["run_id"]) <= set(stored["run_id"])


def test_every_view_has_the_latest_runs_rows_with_study_and_arm_labels(db):
    for contract in output_contracts().values():
        view = latest_view(contract)
        n_view = q(db, f'SELECT count(*) AS n FROM "{view.name}"')["n"][0]
        n_table = q(db, f'SELECT count(*) AS n FROM "{contract.name}" JOIN latest_run USING (run_id)')["n"][0]
        # a target trial's tables stay empty without a [target_trial] (test_target_trial_pipeline fills them)
        assert n_view == n_table and (n_view == 0 if contract.name in TT_CONTRACTS else n_view > 0), contract.name
        if contract.arm_column:
            unlabelled = q(db, f'SELECT count(*) AS n FROM "{view.name}" WHERE arm IS NOT NULL AND arm <> \'(all)\' '
                               "AND arm_label IS NULL")["n"][0]
            assert unlabelled == 0, view.name
    km = q(db, "SELECT DISTINCT arm, arm_label FROM latest_results_km WHERE study = 'default' ORDER BY arm")
    assert ("ketamine_iv", "Ketamine IV") in km.rows() and ("ssri", "SSRI") in km.rows()


def test_a_withheld_estimate_is_null_in_the_view_and_kept_in_the_table(db):
    for table, estimate in WITHHELD.items():
        key = [k for k in output_contracts()[table].key if k != "run_id"]
        on = " AND ".join(f'v."{"arm" if k == output_contracts()[table].arm_column else k}" = t."{k}"' for k in key)
        rows = q(db, f'SELECT t."{estimate}" AS kept, v."{estimate}" AS shown, t.diagnostics FROM "{table}" t '
                     f'JOIN "latest_{table}" v ON v.run_id = t.run_id AND {on} WHERE v.study = \'gate-fails\'')
        failed = rows.filter(rows["diagnostics"] == "fail")
        assert failed.height and failed["kept"].null_count() < failed.height, table
        assert failed["shown"].null_count() == failed.height, table
    cox = q(db, "SELECT model, hr, diagnostics FROM latest_results_cox WHERE study = 'gate-fails' AND paramcd = 'TTRESP' "
                "AND arm = 'ketamine_iv' ORDER BY model")
    assert dict(zip(cox["model"], cox["diagnostics"])) == {"adjusted": None, "iptw": "fail", "naive": None}
    hr = dict(zip(cox["model"], cox["hr"]))
    assert hr["iptw"] is None and hr["adjusted"] > 0 and hr["naive"] > 0


def test_an_estimate_that_passed_the_gate_is_shown(db, tmp_path):
    import shutil

    passed = Path(shutil.copyfile(db, tmp_path / "w.duckdb"))
    analyze_step(passed, GATE_PASSES)
    cox = q(passed, "SELECT hr, diagnostics FROM latest_results_cox WHERE study = 'gate-passes' AND model = 'iptw' "
                    "AND arm = 'ketamine_iv' AND paramcd = 'TTRESP'")
    assert cox.rows() == q(passed, "SELECT c.hr, c.diagnostics FROM results_cox c JOIN latest_run l USING (run_id) "
                                   "WHERE l.study = 'gate-passes' AND c.model = 'iptw' AND c.arm = 'ketamine_iv'").rows()
    assert cox["diagnostics"][0] == "pass" and cox["hr"][0] > 0


def test_a_later_run_of_a_study_replaces_the_earlier_one_in_the_views(db, tmp_path):
    import shutil

    again = Path(shutil.copyfile(db, tmp_path / "w.duckdb"))
    renamed = StudySettings(name="gate-fails", max_smd=0.002, **_FAST)  # same study, changed settings
    analyze_step(again, renamed)
    runs = q(again, "SELECT study, settings_id FROM latest_run ORDER BY study")
    assert runs.rows() == [("default", StudySettings().settings_id), ("gate-fails", renamed.settings_id)]
    assert set(q(again, "SELECT DISTINCT settings_id FROM latest_results_cox WHERE study = 'gate-fails'")["settings_id"]) \
        == {renamed.settings_id}
    assert q(again, "SELECT count(DISTINCT settings_id) AS n FROM results_cox")["n"][0] == 3  # the table keeps all


@pytest.mark.parametrize("title", [t for t, _, _ in EXAMPLE_QUERIES])
def test_every_example_query_returns_rows_through_query(db, title):
    sql = dict((t, s) for t, _, s in EXAMPLE_QUERIES)[title]
    assert run_query(db, sql).height > 0, title  # the analysts' sandboxed, read-only connection


def test_the_duckdb_shell_runs_the_examples_read_only(db):
    shell = Path(sys.executable).with_name("duckdb")
    version = subprocess.run([shell, "--version"], capture_output=True, text=True, check=True).stdout
    import duckdb

    assert version.startswith(f"v{duckdb.__version__} ")  # the shell of the module that writes the warehouse
    for title, _, sql in EXAMPLE_QUERIES:
        res = subprocess.run([shell, "-readonly", "-csv", str(db), "-c", sql], capture_output=True, text=True)
        assert res.returncode == 0, (title, res.stderr)
        assert len(res.stdout.splitlines()) > 1, title  # a header and rows
    before = db.read_bytes()
    res = subprocess.run([shell, "-readonly", str(db), "-c", "DROP VIEW latest_run"], capture_output=True, text=True)
    assert res.returncode != 0 and "read-only" in res.stderr
    assert db.read_bytes() == before
