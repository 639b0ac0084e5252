"""Great Expectations 1.x glue: rules -> expectations -> one suite per table.

GX is imported lazily (the import takes several seconds) and always with
analytics off: the machines have no internet, and nothing about the data may
leave them. Contexts are *ephemeral* (in-memory stores, no data docs), so
validation writes nothing to the working directory.

Quirks of GX 1.24 handled here:

* string ``row_condition`` + ``condition_parser="pandas"`` is deprecated since
  GX 1.9 (DeprecationWarning); we build Condition objects instead
  (``Column("instrument") == "MADRS"``), which the DuckDB metrics turn into SQL
  ``"instrument" = 'MADRS'`` and GX's pandas engine into a ``DataFrame.query``;
* ``catch_exceptions`` defaults to False on 1.x expectations; we set it to True
  so one expectation that cannot run (missing column, wrong type) fails alone
  with its exception text instead of aborting the table;
* progress bars ("Calculating Metrics") are on by default and print to stderr;
  the context config switches them off;
* expectations carry GX's own ``severity`` field as well as our ``meta``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ketaoutcomes.contract import TABLE_ORDER
from ketaoutcomes.registries import Registries
from ketaoutcomes.validate.rules import Rule, build_rules

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations import Expectation

__all__ = ["build_suites", "expectation_for", "suite_for", "gx_module", "new_context"]


def gx_module():
    """``great_expectations``, imported with analytics disabled."""
    # Must be set before the first import; GX reads it when a context starts.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations

    return great_expectations


def new_context() -> "AbstractDataContext":
    """A fresh in-memory GX context: no files, no analytics, no progress bars."""
    gx = gx_module()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def expectation_for(rule: Rule) -> "Expectation":
    """The GX expectation of one rule, with meta {rule_id, rule, severity}."""
    gx = gx_module()
    from great_expectations.expectations.row_conditions import Column

    cls = getattr(gx.expectations, rule.expectation)
    kwargs = dict(rule.kwargs)
    if rule.condition is not None:
        col, value = rule.condition
        kwargs["row_condition"] = Column(col) == value
    return cls(
        **kwargs,
        meta={"rule_id": rule.rule_id, "rule": rule.rule, "severity": rule.severity},
        description=rule.rule,
        severity=rule.severity,
        catch_exceptions=True,
    )


def suite_for(table: str, rules: list[Rule]) -> "gx.ExpectationSuite":
    gx = gx_module()
    return gx.ExpectationSuite(
        name=f"ketaoutcomes.{table}",
        expectations=[expectation_for(r) for r in rules],
        meta={"table": table},
    )


def build_suites(registries: Registries) -> dict[str, "gx.ExpectationSuite"]:
    """One expectation suite per contract table, derived from the contract and
    the registries. Each expectation's ``meta`` holds ``rule_id``, ``rule`` and
    ``severity``. Rules on ``_ko_*`` columns expect columns that
    :mod:`ketaoutcomes.validate.metrics` joins on in DuckDB."""
    rules = build_rules(registries)
    return {t: suite_for(t, [r for r in rules if r.table == t]) for t in TABLE_ORDER}
