"""The attrition section: a CONSORT-style flow diagram and a table whose small counts cannot be worked out.

The audit here is written apart from the section's code: it reads the table as a reader would
(exact numbers, "<11" = 1 to 10, "[s]" = hidden to protect another count, so above 10, an empty
cell = not shown, any count), writes down what a reader knows ties the counts (the arms add up to
All; a population is the one before less the courses the rule excluded; an endpoint's first rule
starts from the analysis population), and asks a linear program for the range each count can still
take. Every count of 1 to 10, shown or not, must keep at least two possible values.
"""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest
from scipy.optimize import linprog

from ketaoutcomes.registries import load_registries
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import Fmt
from ketaoutcomes.report.sections.attrition import COMPLEMENT_MARK, attrition_section
from ketaoutcomes.report.suppression import protect

LABELS = {code: arm.label for code, arm in load_registries().arms.items()}
ARMS = ["ssri", "ketamine_iv", "ketamine_im", "esketamine_intranasal", "ketamine_oral", "ketamine_sublingual"]
FMT = Fmt(suppress=True, ci_label="95% CI", small_cell_max=10)


def arms_of(codes) -> Arms:
    return Arms("ssri", tuple(Arms("ssri", (), LABELS).sort(codes)), LABELS)


def attrition_frame(start: dict[str, int], trunk: list[dict[str, int]], branches: dict[str, list[dict[str, int]]]
                    ) -> pl.DataFrame:
    """results_attrition as derive writes it: step 1 the export (all only), step 2 the courses per arm, then
    the trunk's rules (courses excluded per arm), then each endpoint's rules from the analysis population."""
    rows = [{"paramcd": None, "step": 1, "rule": "patients in the export", "arm": "(all)",
             "n_remaining": sum(start.values()) + 3, "n_excluded": None}]
    rows += [{"paramcd": None, "step": 2, "rule": "with a course", "arm": a, "n_remaining": n, "n_excluded": None}
             for a, n in start.items()]
    rows.append({"paramcd": None, "step": 2, "rule": "with a course", "arm": "(all)",
                 "n_remaining": sum(start.values()), "n_excluded": None})
    step = 2

    def chain(pop: dict[str, int], rules: list[dict[str, int]], code: str | None, name: str) -> dict[str, int]:
        nonlocal step
        for k, excl in enumerate(rules):
            step += 1
            new = {a: pop[a] - excl.get(a, 0) for a in pop}
            rows.extend({"paramcd": code, "step": step, "rule": f"{name} rule {k + 1}", "arm": a,
                         "n_remaining": new[a], "n_excluded": pop[a] - new[a]} for a in pop)
            rows.append({"paramcd": code, "step": step, "rule": f"{name} rule {k + 1}", "arm": "(all)",
                         "n_remaining": sum(new.values()), "n_excluded": sum(pop.values()) - sum(new.values())})
            pop = new
        return pop

    analysis = chain(dict(start), trunk, None, "cohort")
    for code, rules in branches.items():
        chain(analysis, rules, code, code)
    return pl.DataFrame(rows, schema={"paramcd": pl.String, "step": pl.Int32, "rule": pl.String, "arm": pl.String,
                                      "n_remaining": pl.Int64, "n_excluded": pl.Int64})


# --------------------------------------------------------------------------- the reader's audit
def read_table(table, cols: list[str]) -> dict[tuple[int, str, str], str]:
    """(step, arm, "R" or "E") -> the text a reader sees ("" rows and group rows skipped)."""
    out = {}
    for row in table.rows:
        m = re.match(r"(\d+)\. ", row.cells[0])
        if row.cls == "group" or not m:
            continue
        step = int(m.group(1))
        for arm, text in zip(cols, row.cells[1:], strict=True):
            for part in text.split("\n"):
                if part.startswith("("):
                    out[(step, arm, "E")] = "0" if part == "(0)" else part[2:-1]  # "(−12)" -> "12"
                elif part:
                    out[(step, arm, "R")] = part
    return out


def audit(frame: pl.DataFrame, shown: dict[tuple[int, str, str], str], small_max: int = 10) -> list[str]:
    """Counts of 1 to small_max a reader can pin down to one value (empty: none), and display errors."""
    truth, steps = {}, {}
    for r in frame.iter_rows(named=True):
        truth[(r["step"], r["arm"], "R")] = r["n_remaining"]
        steps[r["step"]] = r["paramcd"]
    trunk = sorted(s for s, c in steps.items() if c is None)
    before = {s: p for p, s in zip(trunk, trunk[1:], strict=False)}
    for code in {c for c in steps.values() if c is not None}:
        branch = sorted(s for s, c in steps.items() if c == code)
        before |= dict(zip(branch, [trunk[-1], *branch[:-1]], strict=True))
    for s, p in before.items():  # excluded = before - after: the reader knows it whether shown or not
        for a in {k[1] for k in truth if k[0] == s and k[2] == "R"}:
            if (p, a, "R") in truth:
                truth[(s, a, "E")] = truth[(p, a, "R")] - truth[(s, a, "R")]
    keys = sorted(truth, key=str)
    col = {k: i for i, k in enumerate(keys)}
    a_eq, problems = [], []
    for s in steps:
        for kind in ("R", "E"):
            parts = [k for k in keys if k[0] == s and k[2] == kind and k[1] != "(all)"]
            if (s, "(all)", kind) in truth and parts:
                row = np.zeros(len(keys))
                row[col[(s, "(all)", kind)]] = 1
                for k in parts:
                    row[col[k]] -= 1
                a_eq.append(row)
    for s, p in before.items():
        for a in {k[1] for k in keys if k[0] == s}:
            if (p, a, "R") in col and (s, a, "E") in col:
                row = np.zeros(len(keys))
                row[col[(p, a, "R")]], row[col[(s, a, "R")]], row[col[(s, a, "E")]] = 1, -1, -1
                a_eq.append(row)
    bounds = []
    for k in keys:
        text = shown.get(k)
        if text is None:
            bounds.append((0, None))
        elif text == f"<{small_max + 1}":
            bounds.append((1, small_max))
        elif text == COMPLEMENT_MARK:
            bounds.append((small_max + 1, None))
        else:
            v = int(text.replace(",", ""))
            if v != truth[k]:
                problems.append(f"{k} shows {v}, is {truth[k]}")
            if 1 <= v <= small_max:
                problems.append(f"{k} shows the small count {v}")
            bounds.append((v, v))
        lo, hi = bounds[-1]
        if not (lo <= truth[k] and (hi is None or truth[k] <= hi)):
            problems.append(f"{k} is {truth[k]}, which {text!r} rules out")
    a_eq = np.array(a_eq)
    for k in keys:
        if not 1 <= truth[k] <= small_max or bounds[col[k]][0] == bounds[col[k]][1]:
            continue
        ends = []
        for sign in (1, -1):
            c = np.zeros(len(keys))
            c[col[k]] = sign
            res = linprog(c, A_eq=a_eq, b_eq=np.zeros(len(a_eq)), bounds=bounds, method="highs")
            assert res.status in (0, 3), res.message
            ends.append(math.inf if res.status == 3 else sign * res.fun)
        if math.isfinite(ends[1]) and math.floor(ends[1] + 1e-7) <= math.ceil(ends[0] - 1e-7):
            problems.append(f"{k} = {truth[k]} can be worked out ({shown.get(k, 'not shown')})")
    return problems


def shown_and_cols(frame: pl.DataFrame, fmt: Fmt = FMT):
    arms = arms_of(ARMS)
    sec = attrition_section(frame, arms, fmt)
    cols = [*arms.sort(a for a in frame["arm"].unique().to_list() if a != "(all)"), "(all)"]
    return sec, read_table(sec.table, cols)


# --------------------------------------------------------------------------- cases
def default_like() -> pl.DataFrame:
    """The default synthetic cohort's attrition (2,000 patients): many small exclusions per arm."""
    start = dict(zip(ARMS, (538, 514, 105, 458, 198, 187), strict=True))
    trunk = [dict(zip(ARMS, (45, 43, 11, 56, 14, 20), strict=True)),
             dict(zip(ARMS, (17, 16, 3, 13, 2, 4), strict=True)),
             dict(zip(ARMS, (18, 5, 0, 3, 1, 2), strict=True))]
    branches = {"TTREM": [{}],
                "TTRELAPS": [dict(zip(ARMS, (228, 201, 41, 173, 99, 100), strict=True))],
                "TTSIRES": [dict(zip(ARMS, (27, 23, 5, 21, 9, 9), strict=True)),
                            dict(zip(ARMS, (10, 5, 3, 3, 3, 1), strict=True))]}
    return attrition_frame(start, trunk, branches)


def test_primary_suppression_alone_would_be_undone():
    """The reason for all this: with only the small counts hidden, the populations around them give them away."""
    frame = default_like()
    sec, shown = shown_and_cols(frame)
    naive = {k: (v if v in ("", f"<{FMT.small_cell_max + 1}") else v) for k, v in shown.items()}
    for k, v in list(naive.items()):
        if v == COMPLEMENT_MARK:  # undo the complementary suppression: show the true numbers
            step, arm, kind = k
            r = frame.filter((pl.col("step") == step) & (pl.col("arm") == arm)).row(0, named=True)
            naive[k] = f"{r['n_remaining'] if kind == 'R' else r['n_excluded']:,}"
    assert any(v == COMPLEMENT_MARK for v in shown.values())
    assert audit(frame, naive), "primary suppression alone should be undoable on this table"


def test_no_small_count_can_be_worked_out_from_the_table():
    frame = default_like()
    sec, shown = shown_and_cols(frame)
    assert audit(frame, shown) == []
    # the populations every other section shows stay visible: the analysis population and each endpoint's
    assert shown[(5, "ssri", "R")] == "458" and shown[(9, "ketamine_oral", "R")] == "169"
    assert shown[(3, "(all)", "E")] == "189"
    assert sec.notes and COMPLEMENT_MARK in sec.notes[0]


@pytest.mark.parametrize("seed", range(12))
def test_no_small_count_can_be_worked_out_random_tables(seed):
    rng = np.random.default_rng(seed)
    arms = ARMS[: int(rng.integers(2, 7))]
    start = {a: int(rng.integers(3, 400)) for a in arms}

    def rule() -> dict[str, int]:
        return {a: int(rng.choice([0, 0, 1, 2, 3, 5, 8, 12, 20, 40])) for a in arms}

    trunk = [rule() for _ in range(int(rng.integers(1, 4)))]
    if any(start[a] <= sum(r[a] for r in trunk) for a in arms):  # keep every arm in the analysis population
        start = {a: start[a] + sum(r[a] for r in trunk) + 1 for a in arms}
    branches = {"TTREM": [rule()], "TTSIRES": [rule(), rule()]}
    analysis = {a: start[a] - sum(r[a] for r in trunk) for a in arms}
    for rules in branches.values():
        for r in rules:
            for a in arms:
                r[a] = min(r[a], analysis[a] - sum(x[a] for x in rules if x is not r))
                r[a] = max(r[a], 0)
    frame = attrition_frame(start, trunk, branches)
    sec, shown = shown_and_cols(frame)
    assert audit(frame, shown) == []


def test_without_suppression_every_count_is_shown_exactly():
    frame = default_like()
    sec, shown = shown_and_cols(frame, Fmt(suppress=False, ci_label="95% CI"))
    assert not any(v in (COMPLEMENT_MARK, "<11") for v in shown.values())
    truth = {(r["step"], r["arm"]): r for r in frame.iter_rows(named=True)}
    for (step, arm, kind), v in shown.items():
        assert int(v.replace(",", "")) == truth[(step, arm)]["n_remaining" if kind == "R" else "n_excluded"]
    assert sec.notes == []


def test_flow_diagram_shows_the_tables_cells_as_the_table_shows_them():
    frame = default_like()
    sec, shown = shown_and_cols(frame)
    trunk_steps = sorted(frame.filter(pl.col("paramcd").is_null())["step"].unique().to_list())
    assert [s.box.n for s in sec.trunk] == [shown[(s, "(all)", "R")] for s in trunk_steps]
    assert [s.excluded for s in sec.trunk] == [shown.get((s, "(all)", "E")) for s in trunk_steps]
    arms = arms_of(ARMS)
    assert [(b.text, b.n) for b in sec.arms] == [(arms.label(a), shown[(trunk_steps[-1], a, "R")])
                                                 for a in arms.sort(ARMS)]
    assert [t for t, _ in sec.branches] == ["Time to remission (TTREM)",
                                            "Time from response to relapse (responders only) (TTRELAPS)",
                                            "Time to resolution of suicidal ideation (ideation at baseline only) (TTSIRES)"]
    for (title, steps), code in zip(sec.branches, ("TTREM", "TTRELAPS", "TTSIRES"), strict=True):
        codes = sorted(frame.filter(pl.col("paramcd") == code)["step"].unique().to_list())
        assert [(s.box.n, s.excluded) for s in steps] == [(shown[(c, "(all)", "R")], shown[(c, "(all)", "E")])
                                                          for c in codes]


def test_table_groups_each_endpoints_rules_under_it():
    sec, _ = shown_and_cols(default_like())
    labels = [(r.cells[0], r.cls) for r in sec.table.rows]
    assert labels[0] == ("1. patients in the export", "")
    group = [lab for lab, cls in labels if cls == "group"]
    assert group == ["Time to remission (TTREM), from the analysis population",
                     "Time from response to relapse (responders only) (TTRELAPS), from the analysis population",
                     "Time to resolution of suicidal ideation (ideation at baseline only) (TTSIRES), from the "
                     "analysis population"]
    # an endpoint's first rule counts against the analysis population, not the row above
    i = labels.index(("6. TTREM rule 1", "sub"))
    assert labels[i - 1][1] == "group"


def test_protect_hides_a_complement_for_a_total_and_its_parts():
    """The smallest case: a total and two parts, one small. Hiding the small part alone leaves total - other."""
    values = {"total": 40, "a": 3, "b": 37}
    rel = [{"total": 1, "a": -1, "b": -1}]
    p = protect(values, rel, shown=values, small_max=10)
    assert p.primary == {"a"} and len(p.complementary) == 1 and p.exposed == frozenset()
    # a part of 11 next to a small one: 12 = 1 + 11, and a reader who knows the hidden part is above 10 and
    # the small one at least 1 would pin both; the total goes too
    values = {"total": 12, "a": 1, "b": 11}
    p = protect(values, rel, shown=values, small_max=10)
    assert p.complementary == {"total", "b"}
