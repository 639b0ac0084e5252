"""Validation of staged tables with Great Expectations 1.x suites, evaluated inside DuckDB.

>>> result = validate_warehouse(con, registries)    # doctest: +SKIP
>>> result.passed, result.critical_failures          # doctest: +SKIP
>>> result.raise_if_failed()                         # doctest: +SKIP

* :mod:`.rules` - the rules (ids, plain-English text, severity), derived from
  :mod:`ketaoutcomes.contract` and the registries; no GX import;
* :mod:`.suites` - rules -> GX expectations -> one suite per table
  (:func:`build_suites`), ephemeral contexts with analytics off;
* :mod:`.metrics` - the metrics each GX expectation asks for, computed as SQL in
  DuckDB (one aggregate scan per table, a GROUP BY per uniqueness rule, example
  row numbers only for failed rules) and judged by the expectation itself;
* :mod:`.gx_pandas` - GX's own pandas engine on frames: the reference the DuckDB
  metrics are tested against;
* :mod:`.results` - result rows (one per rule, never cell values), ValidationResult;
* :mod:`.runner` - :func:`validate_warehouse` (tables of a DuckDB connection) and
  :func:`validate_tables` (polars frames).

Great Expectations is imported only when a suite is built or tables are
validated (the import takes seconds).
"""

from ketaoutcomes.validate.results import RESULT_SCHEMA, ValidationFailed, ValidationResult
from ketaoutcomes.validate.rules import (
    CRITICAL,
    DOSE_RANGE_SEVERITY,
    SESSION_AFTER_END_TOLERANCE_DAYS,
    WARNING,
    Rule,
    build_rules,
)
from ketaoutcomes.validate.runner import ENGINES, changed_rows, validate_tables, validate_warehouse
from ketaoutcomes.validate.suites import build_suites

__all__ = [
    "CRITICAL",
    "WARNING",
    "DOSE_RANGE_SEVERITY",
    "ENGINES",
    "SESSION_AFTER_END_TOLERANCE_DAYS",
    "RESULT_SCHEMA",
    "Rule",
    "ValidationFailed",
    "ValidationResult",
    "build_rules",
    "build_suites",
    "changed_rows",
    "validate_tables",
    "validate_warehouse",
]
