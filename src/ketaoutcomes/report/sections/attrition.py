"""Attrition (results_attrition): a CONSORT-style flow diagram and the table of courses per arm and rule.

The analysis population's rules (``paramcd`` null) form the trunk: each narrows the population of
the rule before it. Each endpoint's own rules (``paramcd`` names it) start again from the analysis
population, and then narrow one another. The diagram shows the trunk with the courses each rule
excluded beside it, the analysis population per arm, and each endpoint's population; the table
shows every count per arm.

Small counts are suppressed so that they cannot be worked out by subtraction
(:mod:`ketaoutcomes.report.suppression`): the table's cells are tied by the arms adding up to
"All" and by each population being the one before less the courses the rule excluded, so a
count of 1 to ``small_cell_max`` is shown as ``<11`` and as many other cells as it takes are shown
as :data:`COMPLEMENT_MARK`. The diagram shows only cells of the table, hidden as they are there.
The analysis population and each endpoint's population, per arm, are shown in other sections too
(cohort, follow-up): they are hidden only when nothing else protects a small count, and the
caption then says so.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import polars as pl

from ketaoutcomes.endpoints import ENDPOINTS, endpoint
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import MINUS, Fmt, Row, Table, has
from ketaoutcomes.report.suppression import Protection, protect

__all__ = ["ALL", "COMPLEMENT_MARK", "AttritionSection", "AttritionStep", "FlowBox", "FlowStep",
           "attrition_cells", "attrition_section", "attrition_steps"]

ALL = "(all)"
#: What a cell hidden by complementary suppression shows.
COMPLEMENT_MARK = "[s]"


@dataclass(frozen=True)
class AttritionStep:
    """One rule: the courses remaining after it and those it excluded, per arm and ``(all)`` (excluded: None
    when the table has no count), and the step it narrows (its index in the list, None for the first)."""

    step: int
    rule: str
    paramcd: str | None
    remaining: dict[str, int]
    excluded: dict[str, int | None]
    before: int | None


def attrition_steps(a: pl.DataFrame) -> list[AttritionStep]:
    """The analysis population's steps in order, then each endpoint's (in the order of ENDPOINTS)."""
    has_code = "paramcd" in a.columns
    rank = {c: i for i, c in enumerate(ENDPOINTS)}
    codes = [None] + sorted(set(a["paramcd"].drop_nulls().to_list()), key=lambda c: (rank.get(c, len(rank)), c)) \
        if has_code else [None]
    out: list[AttritionStep] = []
    trunk_end: int | None = None
    for code in codes:
        part = a.filter(pl.col("paramcd").is_null() if code is None else pl.col("paramcd") == code) \
            if has_code else a
        before = trunk_end if code is not None else None
        for (step, rule), rows in part.sort("step", "rule").group_by(["step", "rule"], maintain_order=True):
            remaining = {r["arm"]: int(r["n_remaining"]) for r in rows.iter_rows(named=True)
                         if r["n_remaining"] is not None}
            excluded = {r["arm"]: (None if r.get("n_excluded") is None else int(r["n_excluded"]))
                        for r in rows.iter_rows(named=True)}
            out.append(AttritionStep(int(step), str(rule), code, remaining, excluded, before))
            before = len(out) - 1
        if code is None:
            trunk_end = before
    return out


Key = tuple[str, int, str]


def attrition_cells(steps: list[AttritionStep]) -> tuple[dict[Key, int], set[Key], list[dict[Key, int]], set[Key]]:
    """The table as cells tied by relations: (values, shown cells, relations, pinned cells).

    Cells are ``("R", i, arm)`` (remaining after step ``i``), ``("E", i, arm)`` (excluded by it) and
    ``("X", i, arm)``, the courses a step excluded when the table has no count (the difference of the
    populations), and ``("O", i, kind)``, whatever the arms of a row leave of its total. Shown: every
    count of ``(all)``; per arm, the courses each rule excluded, and the populations where they start
    (the first step with arms) and end (the analysis population, each endpoint's last population),
    which are pinned (other sections show them). A population per arm between them is implicit: the
    one before less the courses excluded.
    """
    ends = {i for i, s in enumerate(steps)
            if not any(t.before == i and t.paramcd == s.paramcd for t in steps[i + 1:])}
    first = next((i for i, s in enumerate(steps) if any(a != ALL for a in s.remaining)), None)
    values: dict[Key, int] = {}
    shown: set[Key] = set()
    relations: list[dict[Key, int]] = []
    for i, s in enumerate(steps):
        for arm, n in s.remaining.items():
            values[("R", i, arm)] = n
            if arm == ALL or i in ends or i == first:
                shown.add(("R", i, arm))
        for arm, n in s.excluded.items():
            if n is not None:
                values[("E", i, arm)] = n
                shown.add(("E", i, arm))
        for kind in ("R", "E"):  # the arms add up to (all)
            parts = [k for k in values if k[0] == kind and k[1] == i and k[2] != ALL]
            total = (kind, i, ALL)
            if total in values and parts:
                rel = {total: 1, **{k: -1 for k in parts}}
                rest = values[total] - sum(values[k] for k in parts)
                if rest:
                    values[("O", i, kind)] = rest
                    rel[("O", i, kind)] = -1
                relations.append(rel)
        if s.before is not None:  # before = after + excluded
            for arm, n in s.remaining.items():
                prev = ("R", s.before, arm)
                if prev not in values:
                    continue
                ex = ("E", i, arm)
                if ex not in values:
                    ex = ("X", i, arm)
                    values[ex] = values[prev] - n
                relations.append({prev: 1, ("R", i, arm): -1, ex: -1})
    pinned = {k for k in shown if k[0] == "R" and k[1] in ends}
    return values, shown, relations, pinned


@dataclass
class FlowBox:
    """A box of the diagram: what it counts and the count as shown."""

    text: str
    n: str


@dataclass
class FlowStep:
    """A population, and the courses excluded on the way to it (None: no exclusion box)."""

    box: FlowBox
    excluded: str | None = None


@dataclass
class AttritionSection:
    table: Table | None = None
    trunk: list[FlowStep] = field(default_factory=list)
    arms: list[FlowBox] = field(default_factory=list)
    branches: list[tuple[str, list[FlowStep]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reason: str = ""


def _shown(key: Hashable, values: dict, protection: Protection | None, fmt: Fmt) -> str:
    n = values[key]
    if protection is not None and key in protection.primary:
        return fmt.suppressed
    if protection is not None and key in protection.complementary:
        return COMPLEMENT_MARK
    return f"{n:,}"


def attrition_section(a: pl.DataFrame, arms: Arms, fmt: Fmt) -> AttritionSection:
    """The flow diagram and the table of results_attrition, suppressed (when ``fmt.suppress``) so that no
    count of 1 to ``fmt.small_cell_max`` can be worked out from the others."""
    if not has(a, "step", "rule", "arm", "n_remaining"):
        return AttritionSection(reason="not available: no attrition table was passed to the report")
    steps = attrition_steps(a)
    values, shown, relations, pinned = attrition_cells(steps)
    protection = protect(values, relations, shown=shown, small_max=fmt.small_cell_max, pinned=pinned) \
        if fmt.suppress else None

    def cell(kind: str, i: int, arm: str) -> str | None:
        key = (kind, i, arm)
        return _shown(key, values, protection, fmt) if key in shown else None

    arm_cols = arms.sort({arm for s in steps for arm in s.remaining if arm != ALL})
    cols = [*arm_cols, ALL]
    rows, last_code = [], None
    for i, s in enumerate(steps):
        if s.paramcd is not None and s.paramcd != last_code:
            info = endpoint(s.paramcd)
            rows.append(Row([f"{info.label} ({s.paramcd}), from the analysis population", *([""] * len(cols))],
                            "group"))
        last_code = s.paramcd
        out = [f"{s.step}. {s.rule}"]
        for arm in cols:
            r, e = cell("R", i, arm), cell("E", i, arm)
            e = None if e is None else "(0)" if e == "0" else f"({MINUS}{e})"
            out.append("\n".join(x for x in (r, e) if x is not None))
        rows.append(Row(out, "sub" if s.paramcd is not None else ""))
    table = Table(["Rule", *(arms.label(x) for x in arm_cols), "All"], rows, wide=True)

    sec = AttritionSection(table=table)
    trunk = [i for i, s in enumerate(steps) if s.paramcd is None]
    for i in trunk:
        s = steps[i]
        sec.trunk.append(FlowStep(FlowBox(s.rule, cell("R", i, ALL) or ""), cell("E", i, ALL)))
    if trunk:
        last = trunk[-1]
        sec.arms = [FlowBox(arms.label(arm), cell("R", last, arm) or "") for arm in arm_cols
                    if ("R", last, arm) in shown]
    for code in dict.fromkeys(s.paramcd for s in steps if s.paramcd is not None):
        flow = [FlowStep(FlowBox(steps[i].rule, cell("R", i, ALL) or ""), cell("E", i, ALL))
                for i, s in enumerate(steps) if s.paramcd == code]
        sec.branches.append((f"{endpoint(code).label} ({code})", flow))
    if protection is not None and protection.complementary:
        sec.notes.append(
            f"{COMPLEMENT_MARK}: not shown, so that no count below {fmt.small_cell_max + 1} can be worked out by "
            "subtracting the shown counts from a total or from the population before a rule.")
    if protection is not None and protection.complementary & pinned:
        sec.notes.append(
            "Some hidden counts are populations that other sections show (the analysis population per arm in the "
            "cohort table, each endpoint's population in its follow-up table): those sections can undo this "
            "suppression.")
    if protection is not None and protection.exposed:
        sec.notes.append(
            f"{len(protection.exposed)} small count(s) could not be protected: every cell that could hide them is 0.")
    return sec
