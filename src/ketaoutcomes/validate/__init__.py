"""Validation of staged tables with Great Expectations 1.x suites.

>>> result = validate_tables(frames, registries)   # doctest: +SKIP
>>> result.passed, result.critical_failures          # doctest: +SKIP
>>> result.raise_if_failed()                         # doctest: +SKIP

* :mod:`.rules` - the rules (ids, plain-English text, severity), derived from
  :mod:`ketaoutcomes.contract` and the registries; no GX import;
* :mod:`.suites` - rules -> GX expectations -> one suite per table
  (:func:`build_suites`), ephemeral contexts with analytics off;
* :mod:`.runner` - :func:`validate_tables`: derived cross-table columns with
  polars, pandas conversion, GX run, one result row per rule.

Great Expectations is imported only when a suite is built or tables are
validated (the import takes seconds).
"""

from ketaoutcomes.validate.rules import (
    CRITICAL,
    DOSE_RANGE_SEVERITY,
    SESSION_AFTER_END_TOLERANCE_DAYS,
    WARNING,
    Rule,
    build_rules,
)
from ketaoutcomes.validate.runner import RESULT_SCHEMA, ValidationFailed, ValidationResult, validate_tables
from ketaoutcomes.validate.suites import build_suites

__all__ = [
    "CRITICAL",
    "WARNING",
    "DOSE_RANGE_SEVERITY",
    "SESSION_AFTER_END_TOLERANCE_DAYS",
    "RESULT_SCHEMA",
    "Rule",
    "ValidationFailed",
    "ValidationResult",
    "build_rules",
    "build_suites",
    "validate_tables",
]
