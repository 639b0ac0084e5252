"""What a validation returns and stores: one row per rule, built from GX results.

Shared by both ways of computing GX's metrics (:mod:`.metrics` in DuckDB, the
default; :mod:`.gx_pandas`, GX's own pandas engine, the reference): the result
schema, :class:`ValidationResult`, the row of one rule from its
``ExpectationValidationResult``, and the checks that a rule can run at all
(table and source columns present, with a type the import format allows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ketaoutcomes.contract import TABLES
from ketaoutcomes.validate.rules import CRITICAL, Rule

__all__ = [
    "N_EXAMPLES",
    "RESULT_SCHEMA",
    "ROW_NUMBER",
    "ValidationFailed",
    "ValidationResult",
    "clean_error",
    "error_row",
    "result_row",
    "rule_problem",
]

#: The source row number column of a staged table (1 is the header line of a CSV).
ROW_NUMBER = "_row_number"
#: Example row numbers kept per failed rule.
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
    """One row per rule (see :data:`RESULT_SCHEMA`); never holds cell values.

    ``suite_results`` holds, per table that ran, GX's own
    ``ExpectationSuiteValidationResult`` the rows were made from (not stored)."""

    results: pl.DataFrame
    suite_results: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

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


# --------------------------------------------------------------------------- can a rule run?


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


def _problem(schemas: Mapping[str, pl.Schema], table: str, column: str | None) -> str | None:
    """Why ``table.column`` cannot be read, or None."""
    if table not in schemas:
        return f"table {table} was not provided"
    if column is None:
        return None
    schema = schemas[table]
    if column not in schema:
        return f"column {column} is missing from {table}"
    contract = TABLES[table].column(column)
    if not _dtype_ok(contract.dtype, schema[column]):
        return f"column {table}.{column} has type {schema[column]}, the import format says {contract.dtype}"
    return None


def rule_problem(schemas: Mapping[str, pl.Schema], rule: Rule) -> str | None:
    """Why ``rule`` cannot run on tables with these (polars) schemas, or None: its table or
    a source column it reads (``rule.needs``) is missing or has a type the contract does not allow."""
    problems = [_problem(schemas, rule.table, None)]
    problems += [_problem(schemas, t, c) for t, c in rule.needs]
    found = list(dict.fromkeys(p for p in problems if p))
    return "; ".join(found) if found else None


# --------------------------------------------------------------------------- GX results -> rows


def clean_error(text: Any) -> str:
    """The first line of an error, at most 300 characters."""
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(text).__name__
    return first[:_MAX_ERROR_CHARS]


def _exception_text(info: Any) -> str | None:
    """The exception message in a GX 1.x ``exception_info`` (flat, or keyed by metric id)."""
    if not info:
        return None
    if isinstance(info, Mapping) and "raised_exception" in info:
        if info.get("raised_exception"):
            return clean_error(info.get("exception_message") or "exception while running the expectation")
        return None
    msgs: list[str] = []
    if isinstance(info, Mapping):
        for v in info.values():
            if isinstance(v, Mapping) and v.get("raised_exception"):
                msgs.append(clean_error(v.get("exception_message") or "exception while computing a metric"))
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


def error_row(rule: Rule, error: str | None = None, **values: Any) -> dict[str, Any]:
    """The result row of ``rule``: failed unless ``values`` say otherwise."""
    row = {k: None for k in RESULT_SCHEMA}
    row.update(
        table=rule.table,
        rule_id=rule.rule_id,
        rule=rule.rule,
        expectation_type=rule.expectation_type,
        column=rule.column,
        severity=rule.severity,
        success=False,
        error=error,
    )
    row.update(values)
    return row


def result_row(rule: Rule, res: Any, has_row_numbers: bool) -> dict[str, Any]:
    """The result row of ``rule`` from its GX ``ExpectationValidationResult``."""
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
    return error_row(
        rule,
        error,
        success=success,
        element_count=None if element_count is None else int(element_count),
        unexpected_count=None if unexpected_count is None else int(unexpected_count),
        unexpected_percent=None if pct is None else float(pct),
        example_row_numbers=_row_numbers(result.get("partial_unexpected_index_list")) if has_row_numbers else None,
        detail=detail,
    )
