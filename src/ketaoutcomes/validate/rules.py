"""The validation rules, derived from the import contract and the registries.

Pure data: nothing here imports Great Expectations (its import takes seconds),
so the rule list can be read, documented and tested without it.
:mod:`ketaoutcomes.validate.suites` turns each :class:`Rule` into one GX
expectation; :mod:`ketaoutcomes.validate.runner` runs them on the staged frames.

Every rule has a stable ``rule_id`` (``<table>.<column or topic>.<check>``; rules
that exist once per arm or per instrument end in ``.<arm>`` / ``.<instrument>``),
a plain-English ``rule`` for the report and a ``severity``:

* ``critical`` - the analysis must not run on data that breaks it (keys,
  required values, allowed and registry values, per-instrument score ranges,
  references, date order, per-arm dose ranges);
* ``warning`` - reported, but the analysis runs (plausible clinical ranges of
  vital signs, age, weight, dissociation, infusion time, dose per kg).

Arms and instruments come from the registries, so a study that adds an arm or
an instrument gets its range checks without a code change.

Cross-table checks (references, session dates inside the course) cannot be
expressed in GX, which validates one table at a time: the metrics compute a
*derived column* with a join in DuckDB (names start with ``_ko_``) and the rule
expects that column. Each rule lists in ``needs`` the source columns (of any
table) it reads, so a missing table or column makes exactly the rules that
depend on it fail with an error instead of crashing the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ketaoutcomes.contract import TABLE_ORDER, TABLES, Column, Table
from ketaoutcomes.registries import Registries

__all__ = [
    "CRITICAL",
    "WARNING",
    "DOSE_RANGE_SEVERITY",
    "SESSION_AFTER_END_TOLERANCE_DAYS",
    "Rule",
    "build_rules",
    "DERIVED",
    "frame_columns",
]

Severity = Literal["critical", "warning"]
CRITICAL: Severity = "critical"
WARNING: Severity = "warning"

# A dose outside the arm's registered range stops the analysis (critical).
# The registry ranges are deliberately wide (ketamine IV 10-200 mg, esketamine
# 14-112 mg), so a value outside them is not a clinical outlier but a data
# error: a unit mix-up (micrograms or mg/kg entered as mg) or a session booked
# on the wrong arm/route. The arm is the exposure every survival model compares,
# so a misclassified route biases the main result, and cumulative dose enters
# the sensitivity analyses. The fix is cheap and needs no code: correct the
# export, or widen the arm's dose_min_mg/dose_max_mg in the study's arms.csv if
# the dose is genuinely intended. Dose *per kg* stays a warning: it is optional,
# derived from a weight that is itself often stale, and the arm's mg range
# already catches gross errors.
DOSE_RANGE_SEVERITY: Severity = CRITICAL

#: A session may be dated up to this many calendar days after the course's
#: end_date. Clinics often record the end date as the last *prescribed* day, and
#: a session that runs past midnight or is entered the morning after still
#: belongs to the course; more than one day later is a linkage or date error.
SESSION_AFTER_END_TOLERANCE_DAYS = 1

#: Derived columns (joined on in DuckDB by :mod:`ketaoutcomes.validate.metrics`) and the
#: source columns, as (table, column), each one reads.
DERIVED: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
for _t in TABLES.values():
    for _ref in _t.references:
        DERIVED[(_t.name, f"_ko_ref_{_ref.column}")] = (
            (_t.name, _ref.column),
            (_ref.to_table, _ref.to_column),
        )
DERIVED[("sessions", "_ko_arm")] = (("sessions", "course_id"), ("courses", "course_id"), ("courses", "arm"))
DERIVED[("sessions", "_ko_course_start")] = (
    ("sessions", "course_id"), ("courses", "course_id"), ("courses", "start_date"),
)
DERIVED[("sessions", "_ko_course_end_limit")] = (
    ("sessions", "course_id"), ("courses", "course_id"), ("courses", "end_date"),
)

_ENTITY = {
    "patients": "patient",
    "courses": "course",
    "sessions": "session",
    "adverse_events": "adverse event",
    "mood_scores": "rating",
    "clinical_events": "clinical event",
}


@dataclass(frozen=True)
class Rule:
    """One check: becomes one GX expectation on one table.

    ``kwargs`` are the expectation's arguments (without ``row_condition``);
    ``condition`` is an optional ``(column, value)`` equality that restricts the
    rows the expectation looks at (GX ``row_condition``); ``needs`` lists the
    (table, column) pairs the rule reads, including the sources of derived
    ``_ko_*`` columns; ``column`` is the contract column reported in results.
    """

    table: str
    rule_id: str
    rule: str
    severity: Severity
    expectation: str
    kwargs: dict[str, Any] = field(hash=False)
    column: str | None = None
    condition: tuple[str, Any] | None = None
    needs: tuple[tuple[str, str], ...] = ()

    @property
    def expectation_type(self) -> str:
        """GX's snake-case name, e.g. ``expect_column_values_to_be_between``."""
        out = []
        for i, ch in enumerate(self.expectation):
            if ch.isupper() and i:
                out.append("_")
            out.append(ch.lower())
        return "".join(out)


def frame_columns(rule: Rule) -> list[str]:
    """Columns of the validated table a rule reads: contract columns and derived ``_ko_*`` ones
    (its expectation's column arguments and its row condition's column)."""
    cols = [rule.kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(rule.kwargs.get(k), str)]
    cols += list(rule.kwargs.get("column_list", []))
    if rule.condition is not None:
        cols.append(rule.condition[0])
    return cols


def _num(x: float) -> str:
    return f"{x:g}"


def _range_text(lo: float | None, hi: float | None, unit: str | None) -> str:
    u = f" {unit}" if unit else ""
    if lo is not None and hi is not None:
        return f"{_num(lo)}-{_num(hi)}{u}"
    if lo is not None:
        return f"at least {_num(lo)}{u}"
    return f"at most {_num(hi)}{u}"  # type: ignore[arg-type]


def _needs(table: str, *columns: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for c in columns:
        if (table, c) in DERIVED:
            srcs = DERIVED[(table, c)]
        else:
            srcs = ((table, c),)
        for s in srcs:
            if s not in out:
                out.append(s)
    return tuple(out)


def _table_rules(t: Table) -> list[Rule]:
    rules: list[Rule] = []
    name = t.name
    rules.append(
        Rule(
            name, f"{name}.columns_present",
            f"the {name} table is present and has all {len(t.columns)} columns of the import format",
            CRITICAL, "ExpectTableColumnsToMatchSet",
            {"column_set": t.column_names, "exact_match": False},
        )
    )
    if len(t.key) == 1:
        (k,) = t.key
        rules.append(
            Rule(
                name, f"{name}.key_unique", f"each {k} appears only once",
                CRITICAL, "ExpectColumnValuesToBeUnique", {"column": k}, column=k, needs=_needs(name, k),
            )
        )
    else:
        rules.append(
            Rule(
                name, f"{name}.key_unique",
                f"no two rows share the same {', '.join(t.key[:-1])} and {t.key[-1]}",
                CRITICAL, "ExpectCompoundColumnsToBeUnique",
                {"column_list": list(t.key)}, column=None, needs=_needs(name, *t.key),
            )
        )
    for c in t.columns:
        if c.required:
            rules.append(
                Rule(
                    name, f"{name}.{c.name}.not_null", f"{c.name} is filled in on every row (required)",
                    CRITICAL, "ExpectColumnValuesToNotBeNull", {"column": c.name},
                    column=c.name, needs=_needs(name, c.name),
                )
            )
    return rules


def _value_rules(t: Table, registries: Registries) -> list[Rule]:
    rules: list[Rule] = []
    name = t.name
    for c in t.columns:
        if c.allowed is not None:
            rules.append(
                Rule(
                    name, f"{name}.{c.name}.allowed", f"{c.name} is one of: {', '.join(c.allowed)}",
                    CRITICAL, "ExpectColumnValuesToBeInSet",
                    {"column": c.name, "value_set": list(c.allowed)}, column=c.name, needs=_needs(name, c.name),
                )
            )
        if c.registry is not None:
            keys = sorted(getattr(registries, c.registry))
            rules.append(
                Rule(
                    name, f"{name}.{c.name}.registry",
                    f"{c.name} is listed in the {c.registry} registry ({', '.join(keys)})",
                    CRITICAL, "ExpectColumnValuesToBeInSet",
                    {"column": c.name, "value_set": keys}, column=c.name, needs=_needs(name, c.name),
                )
            )
        if c.min is not None or c.max is not None:
            rules.append(_plausible(t, c))
    return rules


def _plausible(t: Table, c: Column) -> Rule:
    kwargs: dict[str, Any] = {"column": c.name}
    if c.min is not None:
        kwargs["min_value"] = c.min
    if c.max is not None:
        kwargs["max_value"] = c.max
    return Rule(
        t.name, f"{t.name}.{c.name}.plausible_range",
        f"{c.name} within the plausible range ({_range_text(c.min, c.max, c.unit)})",
        WARNING, "ExpectColumnValuesToBeBetween", kwargs, column=c.name, needs=_needs(t.name, c.name),
    )


def _reference_rules(t: Table) -> list[Rule]:
    rules = []
    entity = _ENTITY.get(t.name, "row")
    for ref in t.references:
        flag = f"_ko_ref_{ref.column}"
        rules.append(
            Rule(
                t.name, f"{t.name}.{ref.column}.reference",
                f"every {entity}'s {ref.column} is found in {ref.to_table}.{ref.to_column} "
                f"(membership computed with a join in DuckDB, as Great Expectations "
                f"has no cross-table expectation)",
                CRITICAL, "ExpectColumnValuesToBeInSet",
                {"column": flag, "value_set": [True]}, column=ref.column, needs=_needs(t.name, flag),
            )
        )
    return rules


def _instrument_rules(registries: Registries) -> list[Rule]:
    rules = []
    for key in sorted(registries.instruments):
        ins = registries.instruments[key]
        rules.append(
            Rule(
                "mood_scores", f"mood_scores.total_score.range_per_instrument.{key}",
                f"{key} total score within the instrument's range ({_range_text(ins.score_min, ins.score_max, 'points')})",
                CRITICAL, "ExpectColumnValuesToBeBetween",
                {"column": "total_score", "min_value": ins.score_min, "max_value": ins.score_max},
                column="total_score", condition=("instrument", key),
                needs=_needs("mood_scores", "total_score", "instrument"),
            )
        )
        if ins.si_item_min is not None or ins.si_item_max is not None:
            kwargs: dict[str, Any] = {"column": "si_item_score"}
            if ins.si_item_min is not None:
                kwargs["min_value"] = ins.si_item_min
            if ins.si_item_max is not None:
                kwargs["max_value"] = ins.si_item_max
            item = ins.si_item or "suicidal-ideation item"
            rules.append(
                Rule(
                    "mood_scores", f"mood_scores.si_item_score.range_per_instrument.{key}",
                    f"{key} {item} score (si_item_score) within the item's range "
                    f"({_range_text(ins.si_item_min, ins.si_item_max, 'points')})",
                    CRITICAL, "ExpectColumnValuesToBeBetween", kwargs,
                    column="si_item_score", condition=("instrument", key),
                    needs=_needs("mood_scores", "si_item_score", "instrument"),
                )
            )
    return rules


def _arm_rules(registries: Registries) -> list[Rule]:
    """Per arm: a drug arm's courses name their drug, its sessions a dose inside its range; an arm
    that is not a drug (no dose range: psychotherapy, treatment as usual) has no dose."""
    rules = []
    for key in sorted(registries.arms):
        arm = registries.arms[key]
        if not arm.is_drug:
            rules.append(
                Rule(
                    "sessions", f"sessions.dose_mg.none_per_arm.{key}",
                    f"no dose in mg for the {key} arm, which is not a drug (no dose range in the arms registry; "
                    "arm taken from the session's course)",
                    CRITICAL, "ExpectColumnValuesToBeNull", {"column": "dose_mg"},
                    column="dose_mg", condition=("_ko_arm", key), needs=_needs("sessions", "dose_mg", "_ko_arm"),
                )
            )
            continue
        rules.append(
            Rule(
                "courses", f"courses.drug.not_null_per_arm.{key}",
                f"drug is filled in for every course of the {key} arm (a drug arm: it has a dose range)",
                CRITICAL, "ExpectColumnValuesToNotBeNull", {"column": "drug"},
                column="drug", condition=("arm", key), needs=_needs("courses", "drug", "arm"),
            )
        )
        rules.append(
            Rule(
                "sessions", f"sessions.dose_mg.not_null_per_arm.{key}",
                f"dose_mg is filled in for every session of the {key} arm (a drug arm; arm taken from the "
                "session's course)",
                CRITICAL, "ExpectColumnValuesToNotBeNull", {"column": "dose_mg"},
                column="dose_mg", condition=("_ko_arm", key), needs=_needs("sessions", "dose_mg", "_ko_arm"),
            )
        )
        rules.append(
            Rule(
                "sessions", f"sessions.dose_mg.range_per_arm.{key}",
                f"dose in mg within the {key} arm's plausible range for the {arm.route} route "
                f"({_range_text(arm.dose_min_mg, arm.dose_max_mg, 'mg')}; arm taken from the session's course)",
                DOSE_RANGE_SEVERITY, "ExpectColumnValuesToBeBetween",
                {"column": "dose_mg", "min_value": arm.dose_min_mg, "max_value": arm.dose_max_mg},
                column="dose_mg", condition=("_ko_arm", key),
                needs=_needs("sessions", "dose_mg", "_ko_arm"),
            )
        )
        if arm.dose_max_mg_per_kg is not None:
            rules.append(
                Rule(
                    "sessions", f"sessions.dose_mg_per_kg.max_per_arm.{key}",
                    f"dose per kg at most {_num(arm.dose_max_mg_per_kg)} mg/kg in the {key} arm "
                    f"(arm taken from the session's course)",
                    WARNING, "ExpectColumnValuesToBeBetween",
                    {"column": "dose_mg_per_kg", "max_value": arm.dose_max_mg_per_kg},
                    column="dose_mg_per_kg", condition=("_ko_arm", key),
                    needs=_needs("sessions", "dose_mg_per_kg", "_ko_arm"),
                )
            )
    return rules


def _date_order_rules() -> list[Rule]:
    tol = SESSION_AFTER_END_TOLERANCE_DAYS
    return [
        Rule(
            "courses", "courses.end_date.not_before_start",
            "a course's end_date is on or after its start_date (ongoing courses without end_date are not checked)",
            CRITICAL, "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "end_date", "column_B": "start_date", "or_equal": True,
             "ignore_row_if": "either_value_is_missing"},
            column="end_date", needs=_needs("courses", "end_date", "start_date"),
        ),
        Rule(
            "sessions", "sessions.session_ts.not_before_course_start",
            "a session is not dated before its course's start_date (course dates joined in DuckDB)",
            CRITICAL, "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "session_ts", "column_B": "_ko_course_start", "or_equal": True,
             "ignore_row_if": "either_value_is_missing"},
            column="session_ts", needs=_needs("sessions", "session_ts", "_ko_course_start"),
        ),
        Rule(
            "sessions", "sessions.session_ts.not_after_course_end",
            f"a session is dated no later than {tol} day after its course's end_date "
            f"(tolerance for sessions entered after midnight or after the recorded last day; "
            f"ongoing courses without end_date are not checked)",
            CRITICAL, "ExpectColumnPairValuesAToBeGreaterThanB",
            # _ko_course_end_limit = midnight starting day end_date + tol + 1, so
            # "limit > session_ts" means the session's calendar day <= end_date + tol.
            {"column_A": "_ko_course_end_limit", "column_B": "session_ts", "or_equal": False,
             "ignore_row_if": "either_value_is_missing"},
            column="session_ts", needs=_needs("sessions", "session_ts", "_ko_course_end_limit"),
        ),
    ]


def build_rules(registries: Registries) -> list[Rule]:
    """All rules, in table load order; within a table: structure, keys, required
    values, allowed/registry values, ranges, references, date order."""
    by_table: dict[str, list[Rule]] = {name: [] for name in TABLE_ORDER}
    for name in TABLE_ORDER:
        t = TABLES[name]
        by_table[name] += _table_rules(t)
        by_table[name] += _value_rules(t, registries)
    by_table["mood_scores"] += _instrument_rules(registries)
    for r in _arm_rules(registries):
        by_table[r.table].append(r)
    for name in TABLE_ORDER:
        by_table[name] += _reference_rules(TABLES[name])
    for r in _date_order_rules():
        by_table[r.table].append(r)
    rules = [r for name in TABLE_ORDER for r in by_table[name]]
    ids = [r.rule_id for r in rules]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:  # pragma: no cover - guards the id scheme
        raise AssertionError(f"duplicate rule ids: {sorted(dup)}")
    return rules
