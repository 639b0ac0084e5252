"""The ad_*/results_* contracts through the pipeline: the tables analyze_step writes conform, a
warehouse shared by studies keeps its types, and one written by an earlier version is migrated."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

import ketaoutcomes.analysis as analysis
from ketaoutcomes.analysis import StepResult
from ketaoutcomes.analysis.target_trial_tables import TT_CONTRACTS
from ketaoutcomes.pipeline import analyze_step, ingest_step, output_contracts, simulate_step, validate_step
from ketaoutcomes.settings import SimulationSettings, StudySettings
from ketaoutcomes.table_contract import ContractError, conform
from ketaoutcomes.warehouse import write_session
from tests.conftest import query_db as q

SMALL = SimulationSettings(n_patients=300, seed=5)
#: The diagnostics gate passes for the route (no balance or equipoise requirement; the two largest
#: arms, so that the small cohort's propensity model converges) ...
_FAST = dict(endpoints=("TTRESP",), arms=("ssri", "ketamine_iv"))
GATE_PASSES = StudySettings(name="gate-passes", max_smd=1.0, min_equipoise=0.0, **_FAST)
#: ... or fails for it.
GATE_FAILS = StudySettings(name="gate-fails", max_smd=0.001, **_FAST)
GATED = ("results_ps", "results_cox", "results_km_weighted", "results_km_weighted_median")


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> Path:
    """A warehouse with the small cohort loaded and validated, no analysis yet."""
    root = tmp_path_factory.mktemp("contracts")
    simulate_step(SMALL, root / "export")
    db = root / "w.duckdb"
    ingest_step(db, root / "export")
    validate_step(db)
    return db


@pytest.fixture
def db(validated, tmp_path) -> Path:
    """A private copy of the validated warehouse."""
    return Path(shutil.copyfile(validated, tmp_path / "w.duckdb"))


def column_types(db: Path, table: str) -> dict[str, str]:
    return dict(q(db, f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{table}' "
                      "ORDER BY ordinal_position").iter_rows())


def test_every_table_the_default_analysis_writes_has_a_contract_and_conforms(db):
    analyze_step(db, StudySettings())
    contracts = output_contracts()
    written = q(db, "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'ad\\_%' ESCAPE '\\' "
                    "OR table_name LIKE 'results\\_%' ESCAPE '\\'")["table_name"].to_list()
    assert "results_ps" in written and "ad_adtte" in written and "results_runs" in written
    for table in written:
        contract = contracts[table]
        assert column_types(db, table) == {c.name: c.dtype for c in contract.columns}, table
        stored = q(db, f'SELECT * FROM "{table}"')
        # a target trial's tables exist in every run (their views too) and stay empty without a
        # [target_trial]: tests/integration/test_target_trial_pipeline.py fills and checks them
        assert stored.height == 0 if table in TT_CONTRACTS else stored.height, table
        conform(stored, contract)  # types, nullability and unique keys hold for what was stored


def test_gate_passing_everywhere_then_failing_on_the_same_warehouse_both_succeed(db):
    analyze_step(db, GATE_PASSES)
    ps = q(db, "SELECT diagnostics, gate_reasons FROM results_ps")
    assert ps.height and set(ps["diagnostics"]) == {"pass"} and ps["gate_reasons"].null_count() == ps.height
    for table in GATED:  # an all-null column is stored with its declared type, not as INTEGER
        assert column_types(db, table)["gate_reasons"] == "VARCHAR", table

    analyze_step(db, GATE_FAILS)  # before the contracts: ConversionException, string to INT32
    failed = q(db, "SELECT r.diagnostics, r.gate_reasons FROM results_ps r JOIN results_runs USING (run_id) "
                   f"WHERE results_runs.settings_id = '{GATE_FAILS.settings_id}'")
    assert failed.height and set(failed["diagnostics"]) == {"fail"}
    assert all("max |SMD| after weighting" in r for r in failed["gate_reasons"])
    for table in GATED:
        assert column_types(db, table)["gate_reasons"] == "VARCHAR", table
    assert q(db, "SELECT count(DISTINCT run_id) n FROM results_ps")["n"][0] == 2


def test_a_warehouse_written_before_the_contracts_is_migrated(db):
    analyze_step(db, GATE_PASSES)
    with write_session(db) as con:  # what the earlier version stored: an all-null INTEGER column, UINTEGER counts
        con.execute("ALTER TABLE results_ps ALTER COLUMN gate_reasons TYPE INTEGER")
        con.execute("ALTER TABLE ad_adsl ALTER COLUMN NSESS TYPE UINTEGER")
        con.execute("ALTER TABLE results_ps DROP COLUMN n_matched_comparator")
    analyze_step(db, GATE_FAILS)
    assert column_types(db, "results_ps")["gate_reasons"] == "VARCHAR"
    assert column_types(db, "ad_adsl")["NSESS"] == "BIGINT"
    ps = q(db, "SELECT settings_id, n_matched_comparator FROM results_ps")
    assert ps.filter(pl.col("settings_id") == GATE_PASSES.settings_id)["n_matched_comparator"].null_count() > 0
    assert ps.filter(pl.col("settings_id") == GATE_FAILS.settings_id)["n_matched_comparator"].null_count() == 0


def test_a_result_table_without_a_contract_is_refused_and_nothing_is_published(db, monkeypatch):
    real = analysis.secondary_analyses

    def with_new_table(*args, **kwargs):
        res = real(*args, **kwargs)
        return StepResult({**res.tables, "results_new_thing": pl.DataFrame({"x": [1]})}, res.notes)

    monkeypatch.setattr(analysis, "secondary_analyses", with_new_table)
    before = db.read_bytes()
    with pytest.raises(ContractError, match=r"results_new_thing have no contract; declare each in "):
        analyze_step(db, GATE_PASSES)
    assert db.read_bytes() == before


def test_a_result_frame_with_an_undeclared_column_is_refused(db, monkeypatch):
    real = analysis.secondary_analyses

    def with_new_column(*args, **kwargs):
        res = real(*args, **kwargs)
        safety = res.table("results_safety").with_columns(pl.lit(1.0).alias("new_col"))
        return StepResult({**res.tables, "results_safety": safety}, res.notes)

    monkeypatch.setattr(analysis, "secondary_analyses", with_new_column)
    with pytest.raises(ContractError, match=r"^results_safety: column\(s\) new_col not in the table's contract"):
        analyze_step(db, GATE_PASSES)
