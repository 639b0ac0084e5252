"""Run the rules: :func:`validate_warehouse` on DuckDB tables, :func:`validate_tables` on frames.

Per table: check which rules can run (table and source columns present with a
contract-compatible type), build the table's GX suite, evaluate it (by default with the
metrics computed in DuckDB, :mod:`.metrics`; on request with GX's pandas engine,
:mod:`.gx_pandas`), and turn each GX result into one row (:mod:`.results`). A rule that
cannot run is a failed row with an ``error``; it is never counted as passed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import polars as pl

from ketaoutcomes.contract import OPTIONAL_TABLES, POLARS_TYPES, TABLE_ORDER, TABLES
from ketaoutcomes.registries import Registries
from ketaoutcomes.validate.metrics import Prefetch, Source, evaluate_table, key_queries, source
from ketaoutcomes.validate.results import (
    RESULT_SCHEMA,
    ValidationFailed,
    ValidationResult,
    clean_error,
    error_row,
    result_row,
    rule_problem,
)
from ketaoutcomes.validate.rules import DERIVED, Rule, build_rules
from ketaoutcomes.validate.suites import suite_for
from ketaoutcomes.warehouse import replace_table, sql_text

__all__ = ["ENGINES", "RESULT_SCHEMA", "ValidationFailed", "ValidationResult", "changed_rows", "validate_tables",
           "validate_warehouse"]

#: ``duckdb``: GX's metrics computed as SQL in DuckDB (the default, and what ``validate`` runs);
#: ``gx-pandas``: GX's own pandas execution engine on the frames (the reference; whole tables in memory).
ENGINES = ("duckdb", "gx-pandas")

#: Evaluates the runnable rules of one table: GX result or error text per rule id, has row numbers.
Evaluate = Callable[[str, list[Rule], Mapping[str, Any]], tuple[dict[str, Any], bool]]


def _selected(tables: Collection[str] | None) -> list[str]:
    if isinstance(tables, str):
        tables = [tables]
    unknown = set(tables or ()) - set(TABLE_ORDER)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; the import format has {', '.join(TABLE_ORDER)}")
    return list(TABLE_ORDER) if tables is None else [t for t in TABLE_ORDER if t in set(tables)]


def _run(schemas: Mapping[str, pl.Schema], registries: Registries, tables: Collection[str] | None,
         evaluate: Evaluate, rules: list[Rule] | None = None) -> ValidationResult:
    """``rules``: :func:`build_rules` of ``registries``, when the caller has them already."""
    from great_expectations.core import ExpectationSuiteValidationResult

    # an optional table (clinical_events) that is not there has no rows to check: its rules do not run
    selected = [t for t in _selected(tables) if t in schemas or t not in OPTIONAL_TABLES]
    rules = build_rules(registries) if rules is None else rules
    rows: list[dict[str, Any]] = []
    suite_results: dict[str, Any] = {}
    for table in selected:
        table_rules = [r for r in rules if r.table == table]
        runnable: list[Rule] = []
        out: dict[str, dict[str, Any]] = {}
        for r in table_rules:
            problem = rule_problem(schemas, r)
            if problem is None:
                runnable.append(r)
            else:
                out[r.rule_id] = error_row(r, problem)
        if runnable:
            suite = suite_for(table, runnable)
            expectations = {e.meta["rule_id"]: e for e in suite.expectations}
            try:
                results, has_rows = evaluate(table, runnable, expectations)
            except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed as a pass
                err = f"validation of {table} could not run: {type(exc).__name__}: {clean_error(exc)}"
                results, has_rows = {r.rule_id: err for r in runnable}, False
            evrs = []
            for r in runnable:
                res = results.get(r.rule_id)
                if res is None:  # never count a check without a result as passed
                    out[r.rule_id] = error_row(r, "Great Expectations returned no result for this expectation")
                elif isinstance(res, str):
                    out[r.rule_id] = error_row(r, res)
                else:
                    evrs.append(res)
                    out[r.rule_id] = result_row(r, res, has_rows)
            suite_results[table] = ExpectationSuiteValidationResult(
                success=all(out[r.rule_id]["success"] for r in runnable), results=evrs, suite_name=suite.name,
                statistics={"evaluated_expectations": len(evrs),
                            "successful_expectations": sum(bool(e.success) for e in evrs)})
        rows += [out[r.rule_id] for r in table_rules]
    return ValidationResult(pl.DataFrame(rows, schema=RESULT_SCHEMA), suite_results)


def changed_rows(batch_ids: Collection[str], relation: Callable[[str], str] = lambda table: f"stg_{table}",
                 ) -> dict[str, str]:
    """Per table, the SQL condition (for :func:`validate_warehouse`'s ``rows``) that selects the
    rows a validation must check again after the batches ``batch_ids`` were loaded on top of data
    that passed: the rows of those batches, and the rows whose checks read another table's content
    that those batches changed (a session's arm and dates come from its course: a corrected course
    re-checks its sessions). A reference flag needs no such re-check: a key, once loaded, stays in
    ``stg_*`` until a rollback, and a rollback removes batches, which makes the next validation a
    full one (:func:`ketaoutcomes.step_records.validation_base`)."""
    if not batch_ids:
        raise ValueError("changed_rows needs at least one batch")
    ids = ", ".join(sql_text(b) for b in sorted(batch_ids))
    out = {t: [f"t._batch_id IN ({ids})"] for t in TABLE_ORDER}
    for (table, name), sources in DERIVED.items():
        if name.startswith("_ko_ref_"):
            continue
        (_, column), (parent, key) = sources[0], sources[1]
        cond = (f't."{column}" IN (SELECT "{key}" FROM {relation(parent)} '
                f"WHERE _batch_id IN ({ids}) AND \"{key}\" IS NOT NULL)")
        if cond not in out[table]:
            out[table].append(cond)
    return {t: "(" + " OR ".join(conds) + ")" for t, conds in out.items()}


def validate_warehouse(
    con: Any,
    registries: Registries,
    tables: Collection[str] | None = None,
    *,
    relation: Callable[[str], str] = lambda table: f"stg_{table}",
    rows: Mapping[str, str] | None = None,
) -> ValidationResult:
    """Validate the tables of a DuckDB connection (by default the staged ``stg_<table>``,
    typed, with ``_row_number``) against the contract and registries, computing every GX
    metric as SQL inside DuckDB (:mod:`ketaoutcomes.validate.metrics`): no table is fetched.

    ``rows`` restricts, per table, the rows checked to those where an SQL condition on the
    table's columns (written ``t."column"``) holds, e.g. the rows of new batches; references and
    course dates are still looked up in whole tables. Every count of the results is then over
    those rows only (a nightly run: :func:`ketaoutcomes.pipeline.validate_step`).

    Returns one result row per rule; missing tables, missing or mistyped columns and
    expectations that cannot run are failed rows with an ``error``, never exceptions.
    ``tables`` restricts the run to the rules of those tables; the others are still read for
    references and course dates."""
    sources: dict[str, Source] = {}
    for t in TABLE_ORDER:
        name = relation(t)
        exists = con.execute(
            "SELECT count(*) FROM (SELECT table_name AS name, database_name, schema_name FROM duckdb_tables() "
            "UNION ALL SELECT view_name, database_name, schema_name FROM duckdb_views()) "
            "WHERE name = ? AND database_name = current_database() AND schema_name = current_schema()",
            [name]).fetchone()[0]
        if exists:
            sources[t] = source(con, name)
    schemas = {t: s.schema for t, s in sources.items()}
    all_rules = build_rules(registries)
    # the key counts start on a thread now, while _run imports GX (some 2 s of one core)
    predicted = [q for t in _selected(tables) if t in sources
                 for q in key_queries(t, sources, [r for r in all_rules if r.table == t and rule_problem(schemas, r) is None],
                                      (rows or {}).get(t))]
    with Prefetch(con, predicted) as prefetch:
        return _run(schemas, registries, tables,
                    lambda table, rules, expectations: evaluate_table(con, table, sources, rules, expectations,
                                                                      (rows or {}).get(table), prefetch),
                    all_rules)


def _frames_in_duckdb(frames: Mapping[str, pl.DataFrame]) -> Any:
    """An in-memory DuckDB holding each frame as a table of its name (rows in frame order)."""
    import duckdb

    con = duckdb.connect()
    for name, frame in frames.items():
        contract = {c.name: c for c in TABLES[name].columns}
        # an all-null column loads as its contract type (DuckDB would guess INTEGER); a
        # categorical one as text (DuckDB would make it an ENUM, which refuses other values)
        fixed = frame.with_columns(
            [pl.col(c).cast(POLARS_TYPES[contract[c].dtype]) for c, d in frame.schema.items()
             if d == pl.Null and c in contract]
            + [pl.col(c).cast(pl.String) for c, d in frame.schema.items() if isinstance(d, (pl.Categorical, pl.Enum))])
        replace_table(con, name, fixed)
    return con


def validate_tables(
    frames: Mapping[str, pl.DataFrame | pl.LazyFrame],
    registries: Registries,
    tables: Collection[str] | None = None,
    *,
    engine: str = "duckdb",
) -> ValidationResult:
    """Validate staged, typed tables given as polars frames (contract columns plus
    ``_row_number`` and ``_batch_id``) against the contract and registries.

    ``engine="duckdb"`` (default) loads the frames into an in-memory DuckDB and runs
    :func:`validate_warehouse` on it; ``engine="gx-pandas"`` runs GX's own pandas execution
    engine (:mod:`ketaoutcomes.validate.gx_pandas`, the reference). Both give the same rows.
    Does not raise on failed rules: see :meth:`ValidationResult.raise_if_failed`."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    _selected(tables)
    collected = {
        name: (f.collect() if isinstance(f, pl.LazyFrame) else f)
        for name, f in frames.items()
        if name in TABLES
    }
    schemas = {t: f.schema for t, f in collected.items()}
    if engine == "gx-pandas":
        from ketaoutcomes.validate.gx_pandas import evaluate_table_gx_pandas
        from ketaoutcomes.validate.suites import new_context

        context = new_context()
        return _run(schemas, registries, tables,
                    lambda table, rules, _e: evaluate_table_gx_pandas(context, table, collected, rules))
    con = _frames_in_duckdb(collected)
    try:
        sources = {t: source(con, t) for t in collected}
        return _run(schemas, registries, tables,
                    lambda table, rules, expectations: evaluate_table(con, table, sources, rules, expectations))
    finally:
        con.close()
