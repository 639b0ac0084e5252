"""The rows of a typed file the row rules could flag, found in DuckDB: only those come into polars.

The row rules (:func:`ketaoutcomes.ingest.rules.row_problems`), the references
(:func:`~ketaoutcomes.ingest.rules.reference_problems`) and the session-course checks
(:func:`~ketaoutcomes.ingest.rules.session_course_problems`) look at each row on its own (with the
registries and the parent tables): run on any set of rows that holds every row they flag, they find
the same problems. :func:`suspect_rows` is such a set, found by SQL over the typed file
(``_typed_<table>``, :mod:`ketaoutcomes.ingest.typed`): each rule's test, or a wider one (a code
column: every row with a value, as the code-shape test is a Rust regex; a value of an allowed set or
a registry: also a null one). A clean mood-scores file of 12 million rows brings no row into polars.
The rules themselves stay the polars ones: their reasons and their regexes are unchanged.

:func:`range_counts` counts, in the same file, what the plausibility ranges of
:func:`ketaoutcomes.ingest.rules.dq_checks` count: the cells tested and those outside the range.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import duckdb
import polars as pl

from ketaoutcomes.contract import TABLES
from ketaoutcomes.registries import Registries
from ketaoutcomes.warehouse import fetch, sql_text

__all__ = ["range_counts", "suspect_rows"]


def _lit(value: object) -> str:
    """A SQL literal of a number or a text."""
    if isinstance(value, str):
        return sql_text(value)
    return f"CAST({float(value)!r} AS DOUBLE)"


def _outside(column: str, lo: float | None, hi: float | None) -> list[str]:
    num = f'CAST("{column}" AS DOUBLE)'
    return ([f"{num} < {_lit(lo)}"] if lo is not None else []) + ([f"{num} > {_lit(hi)}"] if hi is not None else [])


def _not_in(column: str, values: Collection[str]) -> str:
    """A value outside ``values``, or null (polars' ``~is_in`` leaves a null unflagged: wider)."""
    if not values:
        return "TRUE"
    return f'("{column}" IS NULL OR "{column}" NOT IN ({", ".join(_lit(v) for v in sorted(values))}))'


def _row_rule_tests(table: str, registries: Registries, exempt: Collection[str]) -> list[str]:
    """SQL tests, one per rule of :func:`ketaoutcomes.ingest.rules.row_problems`, each true on
    every row the rule flags."""
    spec = TABLES[table]
    tests: list[str] = []
    for col in spec.columns:
        tests += _outside(col.name, col.hard_min, col.hard_max)
        if col.code and col.name not in exempt:
            tests.append(f'"{col.name}" IS NOT NULL')
        if col.allowed:
            tests.append(_not_in(col.name, col.allowed))
        if col.registry == "arms":
            tests.append(_not_in(col.name, registries.arms))
        if col.registry == "instruments":
            tests.append(_not_in(col.name, registries.instruments))
    if table == "courses":
        drug_arms = sorted(k for k, a in registries.arms.items() if a.is_drug)
        tests.append('"end_date" < "start_date"')
        if drug_arms:
            tests.append(f'("drug" IS NULL AND "arm" IN ({", ".join(_lit(a) for a in drug_arms)}))')
    if table == "mood_scores":  # each instrument's ranges, on its rows (the rule joins the registry)
        for r in registries.instruments_frame().iter_rows(named=True):
            outside = (_outside("total_score", r["score_min"], r["score_max"])
                       + _outside("si_item_score", r["si_item_min"], r["si_item_max"]))
            if outside:
                tests.append(f'("instrument" = {_lit(r["instrument"])} AND ({" OR ".join(outside)}))')
    return tests


def suspect_rows(con: duckdb.DuckDBPyConnection, table: str, target: str, registries: Registries,
                 exempt: Collection[str], parents: Mapping[str, pl.DataFrame],
                 courses: pl.DataFrame | None) -> pl.DataFrame:
    """``_row_number`` and the contract's columns of the rows of ``target`` (the typed rows of
    ``table``) that a row rule, a reference or (sessions) a session-course check could flag, in
    ``_row_number`` order. ``exempt``: the columns phi_allowlist.toml declares safe (no code-shape
    rule); ``parents``: for each table ``table`` refers to, the rows a reference may resolve to
    (:meth:`ketaoutcomes.ingest.rules.Parent.available`); ``courses``: the same, for sessions."""
    spec = TABLES[table]
    parts: list[str] = []
    tests = _row_rule_tests(table, registries, exempt)
    if tests:
        parts.append(f"SELECT _row_number FROM {target} WHERE " + " OR ".join(tests))
    registered: list[str] = []

    def register(name: str, frame: pl.DataFrame) -> str:
        con.register(name, frame.to_arrow())
        registered.append(name)
        return name

    try:
        for i, ref in enumerate(spec.references):  # a reference that is in neither this export nor the warehouse
            keys = register(f"_ref_keys_{i}", parents[ref.to_table].select(pl.col(ref.to_column).alias("k")))
            parts.append(f'SELECT t._row_number FROM {target} t ANTI JOIN {keys} r ON t."{ref.column}" = r.k '
                         f'WHERE t."{ref.column}" IS NOT NULL')
        if table == "sessions" and courses is not None:  # doses against the course's arm, dates inside the course
            c = register("_courses_in", courses.select("course_id", "arm", "start_date", "end_date"))
            a = register("_arms_in", registries.arms_frame().select("arm", "dose_min_mg", "dose_max_mg",
                                                                     "dose_max_mg_per_kg"))
            day = "CAST(t.session_ts AS DATE)"
            tests = ["(a.dose_min_mg IS NOT NULL AND t.dose_mg IS NULL)",
                     "(a.dose_min_mg IS NULL AND (t.dose_mg IS NOT NULL OR t.dose_mg_per_kg IS NOT NULL))",
                     "t.dose_mg < 0", "t.dose_mg < a.dose_min_mg", "t.dose_mg > a.dose_max_mg",
                     "t.dose_mg_per_kg < 0", "t.dose_mg_per_kg > a.dose_max_mg_per_kg",
                     f"{day} < c.start_date", f"(c.end_date IS NOT NULL AND {day} > c.end_date + 1)"]
            parts.append(f"SELECT t._row_number FROM {target} t JOIN {c} c ON t.course_id = c.course_id "
                         f"LEFT JOIN {a} a ON c.arm = a.arm WHERE " + " OR ".join(tests))
        names = ", ".join(f'"{n}"' for n in spec.column_names)
        if not parts:
            return fetch(con, f"SELECT _row_number, {names} FROM {target} WHERE FALSE")
        return fetch(con, f"SELECT _row_number, {names} FROM {target} SEMI JOIN ("
                          + " UNION ALL ".join(parts) + ") s USING (_row_number) ORDER BY _row_number")
    finally:
        for name in registered:
            con.unregister(name)


def range_counts(con: duckdb.DuckDBPyConnection, table: str, target: str) -> dict[str, tuple[int, int]]:
    """For each column of ``table`` with a plausibility range: the cells of ``target`` with a value
    and those outside the range."""
    cols = [c for c in TABLES[table].columns if c.min is not None or c.max is not None]
    if not cols:
        return {}
    exprs = []
    for c in cols:
        exprs += [f'count("{c.name}")', f"count_if({' OR '.join(_outside(c.name, c.min, c.max))})"]
    row = con.execute(f"SELECT {', '.join(exprs)} FROM {target}").fetchone()
    return {c.name: (int(row[2 * i] or 0), int(row[2 * i + 1] or 0)) for i, c in enumerate(cols)}  # (no row: null)
