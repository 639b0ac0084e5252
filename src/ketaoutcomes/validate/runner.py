"""Run the rules on the staged frames with Great Expectations (pandas engine).

Per table: check which rules can run (table and source columns present with a
contract-compatible dtype), derive the cross-table columns with polars joins,
convert the needed columns to pandas once (the ``_row_number`` column becomes
the index, so GX reports source row numbers and never needs cell values), run
one suite through an ephemeral context, and turn GX's results into one polars
row per rule. A rule that cannot run is a failed row with an ``error``; it is
never counted as passed.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from ketaoutcomes.contract import TABLE_ORDER, TABLES
from ketaoutcomes.registries import Registries
from ketaoutcomes.validate.rules import (
    CRITICAL,
    DERIVED,
    SESSION_AFTER_END_TOLERANCE_DAYS,
    Rule,
    build_rules,
)
from ketaoutcomes.validate.suites import new_context, suite_for

__all__ = ["ValidationResult", "ValidationFailed", "validate_tables", "RESULT_SCHEMA"]

ROW_NUMBER = "_row_number"
N_EXAMPLES = 5
_MAX_ERROR_CHARS = 300

RESULT_SCHEMA: dict[str, pl.DataType] = {
    "table": pl.String(),
    "rule_id": pl.String(),
    "rule": pl.String(),
    "expectation_type": pl.String(),
    "column": pl.String(),
    "severity": pl.String(),
    "success": pl.Boolean(),
    "element_count": pl.Int64(),
    "unexpected_count": pl.Int64(),
    "unexpected_percent": pl.Float64(),
    "example_row_numbers": pl.String(),
    "error": pl.String(),
    # Non-identifying detail of table-level rules (names of missing columns).
    "detail": pl.String(),
}


@dataclass(frozen=True)
class ValidationResult:
    """One row per rule (see :data:`RESULT_SCHEMA`); never holds cell values."""

    results: pl.DataFrame

    @property
    def failures(self) -> pl.DataFrame:
        return self.results.filter(~pl.col("success"))

    @property
    def critical_failures(self) -> pl.DataFrame:
        return self.results.filter(~pl.col("success") & (pl.col("severity") == CRITICAL))

    @property
    def warnings(self) -> pl.DataFrame:
        return self.results.filter(~pl.col("success") & (pl.col("severity") != CRITICAL))

    @property
    def passed(self) -> bool:
        """True when no critical rule failed (warnings allowed)."""
        return self.critical_failures.height == 0

    def message(self) -> str:
        """One line per failed rule, critical first: table, rule id, rule text,
        row counts and up to five example source row numbers (never values)."""
        fails = self.failures.with_columns(
            _crit=(pl.col("severity") != CRITICAL).cast(pl.Int8)
        ).with_row_index("_i").sort(["_crit", "_i"])
        if fails.height == 0:
            return f"Validation passed: {self.results.height} rules, no failures"
        lines = []
        for r in fails.iter_rows(named=True):  # one row per failed rule, not per data row
            head = "Validation failed" if r["severity"] == CRITICAL else "Validation warning"
            line = f"{head}: {r['table']} / {r['rule_id']} ({r['rule']})"
            if r["error"] is not None:
                line += f": could not run: {r['error']}"
            elif r["detail"] is not None:
                line += f": {r['detail']}"
            elif r["unexpected_count"] is not None and r["element_count"] is not None:
                line += f": {r['unexpected_count']:,} of {r['element_count']:,} rows"
            if r["example_row_numbers"]:
                line += f" (e.g. rows {r['example_row_numbers']})"
            lines.append(line)
        return "\n".join(lines)

    def raise_if_failed(self) -> "ValidationResult":
        """Raise :class:`ValidationFailed` if a critical rule failed, else return self."""
        if not self.passed:
            raise ValidationFailed(self)
        return self


class ValidationFailed(Exception):
    """A critical validation rule failed; ``.result`` holds the full result."""

    def __init__(self, result: ValidationResult):
        self.result = result
        super().__init__(result.message())


# --------------------------------------------------------------------------- dtypes


def _dtype_ok(contract_dtype: str, dtype: pl.DataType) -> bool:
    if dtype == pl.Null:
        return True  # an all-null column: the not-null rules report it
    if contract_dtype == "VARCHAR":
        return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))
    if contract_dtype == "INTEGER":
        return dtype.is_integer()
    if contract_dtype == "DOUBLE":
        return dtype.is_float() or dtype.is_integer()
    if contract_dtype == "DATE":
        return dtype == pl.Date
    if contract_dtype == "TIMESTAMP":
        return isinstance(dtype, pl.Datetime)
    if contract_dtype == "BOOLEAN":
        return dtype == pl.Boolean
    return False


def _problem(frames: Mapping[str, pl.DataFrame], table: str, column: str | None) -> str | None:
    """Why ``table.column`` cannot be read, or None."""
    if table not in frames:
        return f"table {table} was not provided"
    if column is None:
        return None
    schema = frames[table].schema
    if column not in schema:
        return f"column {column} is missing from {table}"
    contract = TABLES[table].column(column)
    if not _dtype_ok(contract.dtype, schema[column]):
        return f"column {table}.{column} has type {schema[column]}, the import format says {contract.dtype}"
    return None


def _rule_problem(frames: Mapping[str, pl.DataFrame], rule: Rule) -> str | None:
    problems = [_problem(frames, rule.table, None)]
    problems += [_problem(frames, t, c) for t, c in rule.needs]
    found = list(dict.fromkeys(p for p in problems if p))
    return "; ".join(found) if found else None


# --------------------------------------------------------------------------- derived columns


def _derived_columns(table: str, frames: Mapping[str, pl.DataFrame], wanted: set[str]) -> list[pl.Series]:
    """The ``_ko_*`` columns of ``table`` (same length and order as the frame),
    computed with vectorised polars expressions and joins."""
    frame = frames[table]
    out: list[pl.Series] = []
    for ref in TABLES[table].references:
        name = f"_ko_ref_{ref.column}"
        if name not in wanted:
            continue
        keys = frames[ref.to_table].get_column(ref.to_column).drop_nulls().unique()
        keys = keys.cast(frame.schema[ref.column])
        # null id -> null flag (ignored here; the not-null rule reports it)
        out.append(frame.select(pl.col(ref.column).is_in(keys.implode()).alias(name)).to_series())

    course_cols = {"_ko_arm": "arm", "_ko_course_start": "start_date", "_ko_course_end_limit": "end_date"}
    need = [c for d, c in course_cols.items() if d in wanted and (table, d) in DERIVED]
    if need:
        courses = (
            frames["courses"]
            .select(["course_id", *need])
            .filter(pl.col("course_id").is_not_null())
            # a duplicated course_id (reported by courses.key_unique) must not
            # duplicate sessions in the join: keep its first row
            .unique(subset="course_id", keep="first", maintain_order=True)
            .with_columns(pl.col("course_id").cast(frame.schema["course_id"]))
        )
        joined = frame.select("course_id").join(courses, on="course_id", how="left", maintain_order="left")
        if joined.height != frame.height:  # pragma: no cover - guarded by the unique() above
            raise RuntimeError("course join changed the number of sessions")
        ts_dtype = frame.schema.get("session_ts", pl.Datetime("us"))
        if not isinstance(ts_dtype, pl.Datetime):
            ts_dtype = pl.Datetime("us")
        if "_ko_arm" in wanted:
            out.append(joined.get_column("arm").cast(pl.String).alias("_ko_arm"))
        if "_ko_course_start" in wanted:
            out.append(joined.get_column("start_date").cast(ts_dtype).alias("_ko_course_start"))
        if "_ko_course_end_limit" in wanted:
            days = SESSION_AFTER_END_TOLERANCE_DAYS + 1
            limit = joined.select(
                (pl.col("end_date").cast(ts_dtype) + pl.duration(days=days)).alias("_ko_course_end_limit")
            ).to_series()
            out.append(limit)
    return out


# --------------------------------------------------------------------------- GX results


def _clean_error(text: Any) -> str:
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(text).__name__
    return first[:_MAX_ERROR_CHARS]


def _exception_text(info: Any) -> str | None:
    """The exception message in a GX 1.x ``exception_info`` (flat, or keyed by metric id)."""
    if not info:
        return None
    if isinstance(info, Mapping) and "raised_exception" in info:
        if info.get("raised_exception"):
            return _clean_error(info.get("exception_message") or "exception while running the expectation")
        return None
    msgs: list[str] = []
    if isinstance(info, Mapping):
        for v in info.values():
            if isinstance(v, Mapping) and v.get("raised_exception"):
                msgs.append(_clean_error(v.get("exception_message") or "exception while computing a metric"))
    return "; ".join(dict.fromkeys(msgs)) or None


def _row_numbers(partial: Any) -> str | None:
    if not partial:
        return None
    nums = []
    for item in partial[:N_EXAMPLES]:
        v = item.get(ROW_NUMBER) if isinstance(item, Mapping) else item
        try:
            nums.append(str(int(v)))
        except (TypeError, ValueError):
            continue
    return ", ".join(nums) or None


def _row(rule: Rule, **values: Any) -> dict[str, Any]:
    row = {k: None for k in RESULT_SCHEMA}
    row.update(
        table=rule.table,
        rule_id=rule.rule_id,
        rule=rule.rule,
        expectation_type=rule.expectation_type,
        column=rule.column,
        severity=rule.severity,
        success=False,
    )
    row.update(values)
    return row


def _result_row(rule: Rule, res: Any, has_row_numbers: bool) -> dict[str, Any]:
    error = _exception_text(getattr(res, "exception_info", None))
    result = dict(res.result or {})
    success = bool(res.success) and error is None
    detail = None
    element_count = result.get("element_count")
    unexpected_count = result.get("unexpected_count")
    if rule.expectation == "ExpectTableColumnsToMatchSet":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        missing = sorted(mismatched.get("missing") or [])
        element_count = len(rule.kwargs["column_set"])
        unexpected_count = len(missing)
        if missing:
            detail = f"{len(missing)} of {element_count} columns missing: {', '.join(missing)}"
    pct = result.get("unexpected_percent")
    return _row(
        rule,
        success=success,
        element_count=None if element_count is None else int(element_count),
        unexpected_count=None if unexpected_count is None else int(unexpected_count),
        unexpected_percent=None if pct is None else float(pct),
        example_row_numbers=_row_numbers(result.get("partial_unexpected_index_list")) if has_row_numbers else None,
        error=error,
        detail=detail,
    )


def _frame_columns(rule: Rule) -> list[str]:
    """Columns of the GX frame that a rule reads (contract or derived)."""
    cols = [rule.kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(rule.kwargs.get(k), str)]
    cols += list(rule.kwargs.get("column_list", []))
    if rule.condition is not None:
        cols.append(rule.condition[0])
    return cols


def _validate_batch(
    context: Any, table: str, name: str, pdf: Any, rules: list[Rule], has_row_numbers: bool
) -> dict[str, dict[str, Any]]:
    suite = suite_for(table, rules)
    source_name = f"ketaoutcomes_{table}_{name}"
    source = context.data_sources.add_pandas(name=source_name)
    try:
        asset = source.add_dataframe_asset(name=f"{table}_{name}")
        batch_definition = asset.add_batch_definition_whole_dataframe(name=f"{table}_{name}_whole")
        batch = batch_definition.get_batch(batch_parameters={"dataframe": pdf})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            suite_result = batch.validate(
                suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": N_EXAMPLES}
            )
    finally:
        # the datasource's engine caches the pandas frame: drop it so only one
        # table's copy is alive at a time
        context.data_sources.delete(source_name)
    by_id = {r.rule_id: r for r in rules}
    rows: dict[str, dict[str, Any]] = {}
    for res in suite_result.results:
        meta = res.expectation_config.meta or {}
        rule = by_id.get(meta.get("rule_id"))
        if rule is not None:
            rows[rule.rule_id] = _result_row(rule, res, has_row_numbers)
    return rows


def _run_table(
    context: Any, table: str, frames: Mapping[str, pl.DataFrame], rules: list[Rule]
) -> list[dict[str, Any]]:
    import pandas as pd

    frame = frames[table]
    wanted = {c for r in rules for c in _frame_columns(r) if c.startswith("_ko_")}
    contract_cols = [c for c in TABLES[table].column_names if c in frame.schema]
    gx_frame = frame.select(contract_cols)  # no copy: polars shares the buffers
    derived = _derived_columns(table, frames, wanted)
    if derived:
        gx_frame = gx_frame.with_columns(derived)
    # GX 1.24 quirk: ExpectColumnValuesToBeBetween is vectorised on pandas only
    # when the dtype is exactly int64 or float64 (`column.dtype in [int, float]`);
    # an int32 column (DuckDB INTEGER) falls back to a per-row Python map, ~1 s
    # per million rows and rule. Widen the numeric columns first.
    widen = [
        pl.col(c).cast(pl.Int64 if d.is_integer() else pl.Float64)
        for c, d in gx_frame.schema.items()
        if (d.is_integer() and d != pl.Int64) or (d.is_float() and d != pl.Float64)
    ]
    if widen:
        gx_frame = gx_frame.with_columns(widen)
    has_row_numbers = ROW_NUMBER in frame.schema and frame.get_column(ROW_NUMBER).null_count() == 0
    index = pd.Index(frame.get_column(ROW_NUMBER).to_numpy(), name=ROW_NUMBER) if has_row_numbers else None

    # Two batches. Rules with a row condition (one per arm / instrument) run on
    # a narrow frame holding only the columns they read: the pandas engine
    # re-filters the whole frame with DataFrame.query for every metric of every
    # conditional expectation (~6 per rule), so the width of that frame is what
    # costs. Its condition columns are categorical, which makes the query's
    # string equality a comparison of integer codes.
    plain = [r for r in rules if r.condition is None]
    conditional = [r for r in rules if r.condition is not None]
    batches: list[tuple[str, list[Rule], list[str], set[str]]] = []
    if plain:
        used = {c for r in plain for c in _frame_columns(r)}
        cols = [c for c in gx_frame.columns if not c.startswith("_ko_") or c in used]
        batches.append(("all_rows", plain, cols, set()))
    if conditional:
        used = {c for r in conditional for c in _frame_columns(r)}
        cols = [c for c in gx_frame.columns if c in used]
        batches.append(("by_condition", conditional, cols, {r.condition[0] for r in conditional}))  # type: ignore[index]

    rows: dict[str, dict[str, Any]] = {}
    for name, batch_rules, cols, categorical in batches:
        try:
            selected = gx_frame.select(
                [pl.col(c).cast(pl.Categorical) if c in categorical else pl.col(c) for c in cols]
            )
            pdf = selected.to_pandas()  # the one copy GX's pandas engine needs
            if index is not None:
                pdf.index = index
            rows.update(_validate_batch(context, table, name, pdf, batch_rules, has_row_numbers))
        except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed as a pass
            err = f"validation of {table} could not run: {type(exc).__name__}: {_clean_error(exc)}"
            for r in batch_rules:
                rows[r.rule_id] = _row(r, error=err)
    for r in rules:  # never count a check without a result as passed
        if r.rule_id not in rows:
            rows[r.rule_id] = _row(r, error="Great Expectations returned no result for this expectation")
    return [rows[r.rule_id] for r in rules]


def validate_tables(
    frames: Mapping[str, pl.DataFrame],
    registries: Registries,
    tables: Collection[str] | None = None,
) -> ValidationResult:
    """Validate staged, typed tables (polars, contract columns plus
    ``_row_number`` and ``_batch_id``) against the contract and registries.

    Returns one result row per rule. Missing tables, missing or mistyped
    columns and expectations that raise are failed rows with an ``error``,
    never exceptions. Does not raise on failed rules: see
    :meth:`ValidationResult.raise_if_failed`.

    ``tables`` restricts the run to the rules of those tables (default: all
    contract tables); the other frames are still read for references and course
    dates. GX costs ~30 ms per expectation whatever the size of the data, so
    this is what makes re-checking one table cheap.
    """
    if isinstance(tables, str):
        tables = [tables]
    selected = list(TABLE_ORDER) if tables is None else [t for t in TABLE_ORDER if t in set(tables)]
    unknown = set(tables or ()) - set(TABLE_ORDER)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; the import format has {', '.join(TABLE_ORDER)}")
    frames = {
        name: (f.collect() if isinstance(f, pl.LazyFrame) else f)
        for name, f in frames.items()
        if name in TABLES
    }
    rules = build_rules(registries)
    context = None
    rows: list[dict[str, Any]] = []
    for table in selected:
        table_rules = [r for r in rules if r.table == table]
        runnable: list[Rule] = []
        out: dict[str, dict[str, Any]] = {}
        for r in table_rules:
            problem = _rule_problem(frames, r)
            if problem is None:
                runnable.append(r)
            else:
                out[r.rule_id] = _row(r, error=problem)
        if runnable:
            if context is None:
                context = new_context()
            try:
                for row in _run_table(context, table, frames, runnable):
                    out[row["rule_id"]] = row
            except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed as a pass
                err = f"validation of {table} could not run: {type(exc).__name__}: {_clean_error(exc)}"
                for r in runnable:
                    out[r.rule_id] = _row(r, error=err)
        rows += [out[r.rule_id] for r in table_rules]
    return ValidationResult(pl.DataFrame(rows, schema=RESULT_SCHEMA))
