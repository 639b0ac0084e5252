"""Contracts of the ad_*/results_* tables: conform() and the contract-enforcing writer."""

from __future__ import annotations

import ast
import datetime as dt
import re
from pathlib import Path

import duckdb
import polars as pl
import pytest

import ketaoutcomes.table_contract as table_contract
from ketaoutcomes.derive.tables import CONTRACTS as DERIVE_CONTRACTS
from ketaoutcomes.table_contract import RUN_COLUMNS, ContractError, TableContract, col, conform
from ketaoutcomes.warehouse import append_frame, migrate_table, write_table

PS = TableContract(
    "results_demo",
    "A demo result table",
    columns=(col("paramcd", "VARCHAR", False), col("target", "VARCHAR", False), col("n", "BIGINT", False),
             col("hr", "DOUBLE"), col("gate_reasons", "VARCHAR"), col("when", "TIMESTAMP"), *RUN_COLUMNS),
    key=("run_id", "paramcd", "target"),
)


def frame(**overrides) -> pl.DataFrame:
    base = {"run_id": ["r1", "r1"], "settings_id": ["s", "s"], "paramcd": ["TTRESP", "TTRESP"],
            "target": ["ketamine_iv", "ketamine_im"], "n": pl.Series([10, 20], dtype=pl.Int32),
            "hr": [1.5, None], "gate_reasons": pl.Series([None, None], dtype=pl.Null)}
    base.update(overrides)
    return pl.DataFrame(base)

# ---------------------------------------------------------------------------- conform


def test_conform_orders_columns_and_casts_losslessly():
    out = conform(frame(), PS)
    assert out.columns == PS.column_names
    assert out.schema == PS.schema  # Int32 -> Int64, all-null Null -> String, missing nullable 'when' added
    assert out["n"].to_list() == [10, 20] and out["when"].to_list() == [None, None]


@pytest.mark.parametrize("source", [pl.UInt32, pl.Int8, pl.Int64])
def test_conform_widens_integers_to_bigint(source):
    assert conform(frame(n=pl.Series([1, 2], dtype=source)), PS)["n"].dtype == pl.Int64


def test_conform_accepts_an_all_null_column_of_any_type():
    out = conform(frame(gate_reasons=pl.Series([None, None], dtype=pl.Int32)), PS)
    assert out["gate_reasons"].dtype == pl.String


def test_conform_casts_integral_numbers_and_dates_without_loss():
    out = conform(frame(n=[3.0, 4.0], hr=pl.Series([2, 3], dtype=pl.Int64), when=[dt.date(2024, 1, 2), None]), PS)
    assert out["n"].to_list() == [3, 4] and out["hr"].to_list() == [2.0, 3.0]
    assert out["when"].to_list() == [dt.datetime(2024, 1, 2), None]


def test_unknown_column_is_a_contract_error_naming_table_and_column():
    with pytest.raises(ContractError, match=r"^results_demo: column\(s\) extra_col not in the table's contract"):
        conform(frame(extra_col=[1, 2]), PS)


def test_wrong_type_is_a_contract_error_naming_column_and_both_types():
    with pytest.raises(ContractError, match=r"^results_demo\.hr: has type String, the contract declares DOUBLE$"):
        conform(frame(hr=["1.5", "2"]), PS)
    with pytest.raises(ContractError, match=r"results_demo\.gate_reasons: has type Int64, the contract declares VARCH"):
        conform(frame(gate_reasons=[1, None]), PS)


def test_missing_non_nullable_column_is_a_contract_error():
    with pytest.raises(ContractError, match=r"^results_demo: missing column\(s\) n, which the contract declares not"):
        conform(frame().drop("n"), PS)


def test_value_that_does_not_cast_without_loss_is_a_contract_error():
    with pytest.raises(ContractError, match=r"results_demo\.n: 1 value\(s\) of type Float64 do not convert to BIGINT "
                                            r"without loss \(first: 2\.5\)"):
        conform(frame(n=[1.0, 2.5]), PS)
    with pytest.raises(ContractError, match=r"results_demo\.n: .*first: nan"):
        conform(frame(n=[1.0, float("nan")]), PS)


def test_nulls_in_a_non_nullable_column_are_a_contract_error():
    with pytest.raises(ContractError, match=r"^results_demo\.target: 1 null value\(s\) in a column the contract "
                                            r"declares not nullable$"):
        conform(frame(target=["ketamine_iv", None]), PS)


def test_duplicate_keys_are_a_contract_error_naming_the_key():
    with pytest.raises(ContractError, match=r"results_demo: 2 rows share a key \(run_id, paramcd, target\) with "
                                            r"another row; first: \('r1', 'TTRESP', 'ketamine_iv'\)"):
        conform(frame(target=["ketamine_iv", "ketamine_iv"]), PS)


def test_contract_errors_are_value_errors_with_one_line_messages():
    with pytest.raises(ValueError) as err:
        conform(frame(extra=[1, 2]), PS)
    assert "\n" not in str(err.value)


def test_a_contract_refuses_unknown_types_and_undeclared_or_nullable_keys():
    with pytest.raises(ValueError, match="unknown DuckDB type 'TEXT'"):
        col("x", "TEXT")
    with pytest.raises(ValueError, match="key column 'y' is not a declared column"):
        TableContract("t", "d", (col("x", "VARCHAR", False),), key=("y",))
    with pytest.raises(ValueError, match="key column 'x' must not be nullable"):
        TableContract("t", "d", (col("x", "VARCHAR"),), key=("x",))

def test_table_contract_module_imports_only_stdlib_polars_and_the_import_contract():
    tree = ast.parse(Path(table_contract.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"__future__", "collections.abc", "dataclasses", "polars", "ketaoutcomes.contract"}, imported

# ---------------------------------------------------------------------------- the writer


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


def described(con, table: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(f'DESCRIBE "{table}"').fetchall()}


def test_write_table_creates_the_table_with_the_declared_types(con):
    assert write_table(con, PS, frame()) == 2
    assert described(con, "results_demo") == {c.name: c.dtype for c in PS.columns}
    assert con.execute("SELECT gate_reasons FROM results_demo").fetchall() == [(None,), (None,)]


def test_all_null_gate_reasons_then_text_on_the_same_table_is_written(con):
    write_table(con, PS, frame())
    write_table(con, PS, frame(run_id=["r2", "r2"], gate_reasons=["max |SMD| after weighting 0.2 >= 0.1", None]))
    assert described(con, "results_demo")["gate_reasons"] == "VARCHAR"
    assert con.execute("SELECT count(gate_reasons) FROM results_demo").fetchone()[0] == 1


def test_old_style_table_with_an_all_null_integer_column_migrates_to_the_contract_type(con):
    append_frame(con, "results_demo", frame())  # as the code before contracts wrote it (no "when" column)
    assert described(con, "results_demo")["gate_reasons"] == "INTEGER"
    assert described(con, "results_demo")["n"] == "INTEGER"
    done = migrate_table(con, PS)
    assert "results_demo.gate_reasons: INTEGER -> VARCHAR" in done and "results_demo.when: added as TIMESTAMP" in done
    assert described(con, "results_demo") == {c.name: c.dtype for c in PS.columns}
    write_table(con, PS, frame(run_id=["r2", "r2"], gate_reasons=["equipoise 0.1 < 0.2", None]))
    assert con.execute("SELECT count(*), count(gate_reasons), sum(n) FROM results_demo").fetchone() == (4, 1, 60)


def test_old_style_table_migration_drops_an_undeclared_column_without_values(con):
    append_frame(con, "results_demo", frame(old_col=pl.Series([None, None], dtype=pl.Float64)))
    assert "results_demo.old_col: dropped (not in the contract, no values)" in migrate_table(con, PS)
    assert "old_col" not in described(con, "results_demo")


def test_old_style_table_with_an_undeclared_column_holding_values_is_a_contract_error(con):
    append_frame(con, "results_demo", frame(old_col=[1.0, None]))
    with pytest.raises(ContractError, match=r"^results_demo\.old_col: stored column not in the table's contract, "
                                            r"with 1 value\(s\).*ALTER TABLE results_demo DROP COLUMN old_col"):
        write_table(con, PS, frame(run_id=["r2", "r2"]))


def test_old_style_table_whose_values_do_not_convert_is_a_contract_error_saying_what_to_do(con):
    append_frame(con, "results_demo", frame(hr=["high", None]))
    with pytest.raises(ContractError, match=r"^results_demo\.hr: stored as VARCHAR, the contract declares DOUBLE, "
                                            r"and 1 stored value\(s\) do not convert without loss \(e\.g\. 'high'\);.*"
                                            r"RENAME TO results_demo_old"):
        write_table(con, PS, frame(run_id=["r2", "r2"]))


def test_write_table_refuses_a_key_that_is_already_stored(con):
    write_table(con, PS, frame())
    with pytest.raises(ContractError, match=r"results_demo: 2 row\(s\) have a key \(run_id, paramcd, target\) that is "
                                            r"already stored"):
        write_table(con, PS, frame())


# ---------------------------------------------------------------------------- the declared contracts


@pytest.fixture(scope="module")
def contracts():
    from ketaoutcomes.pipeline import output_contracts

    return output_contracts()


def test_every_declared_table_carries_run_id_and_settings_id_and_is_keyed_by_run(contracts):
    assert set(DERIVE_CONTRACTS) == {"ad_adsl", "ad_adtte", "results_attrition"}
    for name, c in contracts.items():
        assert c.name == name
        assert name.startswith(("ad_", "results_")), name
        assert {"run_id", "settings_id"} <= set(c.column_names), name
        assert c.key[0] == "run_id", name


def test_readme_lists_every_contracted_table(contracts):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## The warehouse (for analysts)")[1].split("\n## ")[0]
    listed = set(re.findall(r"`((?:ad|results)_[a-z_]+)`", section))
    assert listed == set(contracts)


def test_every_column_of_every_contract_is_described(contracts):
    undescribed = [f"{name}.{c.name}" for name, t in contracts.items() for c in t.columns if not c.description.strip()]
    assert not undescribed, "describe these columns in their contracts (docs/warehouse.md shows them): " + \
        ", ".join(undescribed)


# ---------------------------------------------------------------------------- the latest_ views


def test_a_contract_declares_its_arm_column_and_withheld_estimates():
    with pytest.raises(ValueError, match="column 'arm' names an arm; declare the arm column"):
        TableContract("t", "d", (col("run_id", "VARCHAR", False), col("arm", "VARCHAR")), key=("run_id",))
    with pytest.raises(ValueError, match="column 'arm' would clash with the arm column 'group'"):
        TableContract("t", "d", (col("run_id", "VARCHAR", False), col("group", "VARCHAR"), col("arm", "VARCHAR")),
                      key=("run_id",), arm_column="group")
    with pytest.raises(ValueError, match="arm column 'target' is not a declared column"):
        TableContract("t", "d", (col("run_id", "VARCHAR", False),), key=("run_id",), arm_column="target")
    with pytest.raises(ValueError, match="withheld estimates need a diagnostics column"):
        TableContract("t", "d", (col("run_id", "VARCHAR", False), col("hr", "DOUBLE")), key=("run_id",),
                      withheld=("hr",))
    with pytest.raises(ValueError, match="withheld column 'run_id' is not a declared non-key column"):
        TableContract("t", "d", (col("run_id", "VARCHAR", False), col("diagnostics", "VARCHAR")), key=("run_id",),
                      withheld=("run_id",))


def test_tables_with_a_diagnostics_gate_withhold_their_estimates(contracts):
    withheld = {name: c.withheld for name, c in contracts.items() if c.withheld}
    assert set(withheld) == {"results_cox", "results_km_weighted", "results_km_weighted_median", "results_contrasts",
                             "results_evalues", "results_ate"}
    assert {"difference", "lower", "upper", "value_target", "value_comparator", "se", "ratio"} <= set(
        withheld["results_ate"])
    assert {"estimate", "lower", "upper", "rr", "evalue", "evalue_ci"} <= set(withheld["results_evalues"])
    assert {"difference", "lower", "upper", "value_target", "value_comparator", "se"} <= set(withheld["results_contrasts"])
    assert {"hr", "hr_lower", "hr_upper", "coef", "se", "z", "p_value"} <= set(withheld["results_cox"])
    assert {"survival", "lower", "upper"} <= set(withheld["results_km_weighted"])
    assert {"median", "median_lower", "median_upper"} <= set(withheld["results_km_weighted_median"])


def test_every_view_names_the_arm_arm_and_labels_it(contracts):
    from ketaoutcomes.table_contract import latest_view

    for name, contract in contracts.items():
        view = latest_view(contract)
        assert view.name == f"latest_{name}" and view.column_names[0] == "study"
        names = [n.lower() for n in contract.column_names]
        if {"arm", "group", "target"} & set(names):
            assert "arm" in view.column_names and "arm_label" in view.column_names, name
            assert not {"group", "ARM"} & set(view.column_names) - {"arm"}, name
        for w in contract.withheld:
            assert view.column(w).nullable and "diagnostics = 'fail'" in view.column(w).description


@pytest.fixture
def warehouse_with_runs(con, contracts):
    """Every contracted table (empty), ref_arms, and two runs of one study and one of another."""
    from ketaoutcomes.warehouse import create_latest_views

    con.execute("CREATE TABLE ref_arms AS SELECT * FROM (VALUES ('ssri', 'SSRI'), ('ketamine_iv', 'Ketamine IV')) "
                "v(arm, label)")
    runs = contracts["results_runs"]
    for run_id, name, started in (("r1", "a", "2026-01-01 02:00"), ("r2", "a", "2026-01-08 02:00"),
                                  ("r3", "b", "2026-01-01 03:00")):
        write_table(con, runs, pl.DataFrame({
            "run_id": [run_id], "settings_id": [f"s-{run_id}"], "settings_json": [f'{{"name": "{name}"}}'],
            "data_fingerprint": ["d"], "registries_fingerprint": ["g"], "batches": ["b"], "code_version": ["c"],
            "started_at": [dt.datetime.fromisoformat(started)], "seconds": [1.0], "notes": ["[]"]}))
    made = create_latest_views(con, contracts.values())
    return con, made


def test_create_latest_views_makes_one_view_per_contract_on_empty_tables(warehouse_with_runs, contracts):
    con, made = warehouse_with_runs
    assert made == ["latest_run", *(f"latest_{n}" for n in contracts)]
    for name in contracts:
        assert con.execute(f'SELECT count(*) FROM "latest_{name}"').fetchone()[0] == (2 if name == "results_runs" else 0)
    assert con.execute("SELECT study, run_id FROM latest_run ORDER BY study").fetchall() == [("a", "r2"), ("b", "r3")]


def test_a_failed_gate_nulls_the_estimates_in_the_view_only(warehouse_with_runs, contracts):
    con, _ = warehouse_with_runs
    cox = contracts["results_cox"]
    rows = {"term": ["ARM[ketamine_iv]"] * 3, "hr": [2.0, 2.5, 3.0], "hr_lower": [1.5, 1.6, 1.7],
            "coef": [0.7, 0.9, 1.1], "variable": ["ARM"] * 3, "arm": ["ketamine_iv"] * 3,
            "arm_label": ["Ketamine IV"] * 3, "paramcd": ["TTRESP"] * 3, "model": ["adjusted", "iptw", "overlap"],
            "diagnostics": [None, "fail", "pass"], "gate_reasons": [None, "equipoise 0.1 < 0.2", None],
            "run_id": ["r2"] * 3, "settings_id": ["s-r2"] * 3}
    write_table(con, cox, pl.DataFrame(rows))
    view = con.execute("SELECT model, hr, hr_lower, coef, diagnostics, gate_reasons FROM latest_results_cox "
                       "ORDER BY model").fetchall()
    assert view == [("adjusted", 2.0, 1.5, 0.7, None, None), ("iptw", None, None, None, "fail", "equipoise 0.1 < 0.2"),
                    ("overlap", 3.0, 1.7, 1.1, "pass", None)]
    assert con.execute("SELECT hr FROM results_cox WHERE model = 'iptw'").fetchone() == (2.5,)


def test_the_view_aliases_group_as_arm_and_labels_it_from_the_registry(warehouse_with_runs, contracts):
    con, _ = warehouse_with_runs
    write_table(con, contracts["results_km_median"], pl.DataFrame({
        "group": ["ssri", "ketamine_iv", "ssri"], "n": [10, 12, 9], "events": [5, 8, 4], "median": [30.0, 9.0, 28.0],
        "paramcd": ["TTRESP"] * 3, "run_id": ["r2", "r2", "r1"], "settings_id": ["s-r2", "s-r2", "s-r1"]}))
    rows = con.execute("SELECT study, arm, arm_label, median FROM latest_results_km_median ORDER BY arm").fetchall()
    assert rows == [("a", "ketamine_iv", "Ketamine IV", 9.0), ("a", "ssri", "SSRI", 30.0)]  # r1 is not the latest


def test_a_stale_latest_view_is_dropped(con, contracts):
    from ketaoutcomes.warehouse import create_latest_views

    con.execute("CREATE TABLE ref_arms (arm VARCHAR, label VARCHAR)")
    con.execute("CREATE TABLE results_gone (run_id VARCHAR)")
    con.execute("CREATE VIEW latest_results_gone AS SELECT * FROM results_gone")
    create_latest_views(con, contracts.values())
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert "latest_results_gone" not in views and "latest_results_cox" in views
