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
