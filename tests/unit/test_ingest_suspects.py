"""Ingest brings into polars only the rows DuckDB finds a row rule could flag (ingest.suspects).
Checked against the polars rules themselves, run on every row: on random typed rows (values in and
out of every range, allowed set and registry, nulls, orphans, sessions outside their course), the
rows they flag are all among the suspects, and they find the same problems on the suspects alone;
and the plausibility-range counts of DuckDB are the ones polars counts."""

from __future__ import annotations

import datetime as dt
import random

import duckdb
import polars as pl
import pytest

from ketaoutcomes.contract import TABLES, polars_schema
from ketaoutcomes.ingest.rules import (
    Parent,
    dq_checks,
    empty_problems,
    reference_problems,
    row_problems,
    row_rule_columns,
    session_course_problems,
)
from ketaoutcomes.ingest.suspects import range_counts, suspect_rows
from ketaoutcomes.registries import load_registries

REG = load_registries()
N = 400


def _pool(table: str, name: str) -> list:
    col = TABLES[table].column(name)
    if col.dtype in ("INTEGER", "DOUBLE"):
        edges = [v for v in (col.hard_min, col.hard_max, col.min, col.max) if v is not None]
        pool = [None, 0, 1, 5, 25, 60, 150, -3, 10_000] + [e + d for e in edges for d in (-1, 0, 1)]
        return [int(v) if v is not None and col.dtype == "INTEGER" else (None if v is None else float(v))
                for v in pool] + ([0.5, 12.25] if col.dtype == "DOUBLE" else [])
    if col.dtype == "DATE":
        return [None, dt.date(2024, 1, 1), dt.date(2024, 1, 10), dt.date(2024, 2, 1)]
    if col.dtype == "TIMESTAMP":
        return [None, dt.datetime(2023, 12, 31, 9), dt.datetime(2024, 1, 5, 9), dt.datetime(2024, 1, 11, 23),
                dt.datetime(2024, 1, 12, 8), dt.datetime(2024, 2, 3, 9)]
    if col.dtype == "BOOLEAN":
        return [None, True, False]
    words = [None, "x", "Dr Who per Jane", "S01", "North Clinic"]
    words += list(col.allowed or ()) + [a.upper() for a in col.allowed or ()]
    if col.registry == "arms":
        words += list(REG.arms) + ["tau", "nope"]
    if col.registry == "instruments":
        words += list(REG.instruments) + ["madrs", "nope"]
    if name.endswith("_id"):
        words += [f"K{i}" for i in range(6)]
    return words


def _valid(table: str, name: str) -> list:
    """Values most rules accept (most cells are drawn from these: most rows break one rule or none)."""
    col = TABLES[table].column(name)
    if col.dtype in ("INTEGER", "DOUBLE"):
        lo = max(v for v in (col.hard_min, col.min, 0) if v is not None)
        hi = min(v for v in (col.hard_max, col.max, 60) if v is not None)
        mid = (lo + hi) / 2
        return [int(mid)] if col.dtype == "INTEGER" else [float(mid), None]
    if col.dtype == "TIMESTAMP":
        return [dt.datetime(2024, 1, 10, 9)]
    if col.registry == "arms":
        return list(REG.arms)
    if col.registry == "instruments":
        return list(REG.instruments)
    if col.allowed:
        return list(col.allowed)
    if name.endswith("_id"):
        return [f"K{i}" for i in range(6)]
    return _pool(table, name)[1:] if col.dtype == "VARCHAR" and not col.code else _pool(table, name)


def _typed(table: str, rng: random.Random) -> pl.DataFrame:
    schema = polars_schema(table)
    data = {c: [rng.choice(_valid(table, c) if rng.random() < 0.85 else _pool(table, c)) for _ in range(N)]
            for c in schema}
    return pl.DataFrame({"_row_number": list(range(1, N + 1)), **data},
                        schema={"_row_number": pl.Int64, **schema})


def _parent(table: str, cols: list[str], rng: random.Random) -> pl.DataFrame:
    frame = _typed(table, rng).select(cols).unique(subset=cols[0], keep="first", maintain_order=True)
    return frame.filter(pl.col(cols[0]).is_in(["K0", "K1", "K2", "K3"]))  # K4, K5, x...: orphans


@pytest.mark.parametrize("table", ["sessions", "mood_scores", "courses", "adverse_events", "clinical_events"])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_rows_a_rule_flags_are_all_suspects(table, seed):
    rng = random.Random(seed)
    typed = _typed(table, rng)
    courses = _parent("courses", ["course_id", "arm", "start_date", "end_date"], rng)
    keys = {"patients": _parent("patients", ["patient_id"], rng), "sessions": _parent("sessions", ["session_id"], rng),
            "courses": courses}
    parents = {r.to_table: Parent(r.to_table, f"{r.to_table}.csv", keys[r.to_table], keys[r.to_table].clear(),
                                  pl.DataFrame(schema={r.to_column: pl.String, "_row_number": pl.Int64}))
               for r in TABLES[table].references}

    def problems(rows: pl.DataFrame) -> pl.DataFrame:
        found = [row_problems(table, rows.select(row_rule_columns(table)), REG)]
        if table == "sessions":
            found.append(session_course_problems(rows, courses, REG))
        if parents:
            found.append(reference_problems(table, rows, parents))
        found = [f for f in found if f.height]
        return (pl.concat(found) if found else empty_problems()).sort(pl.all())

    con = duckdb.connect()
    con.register("_typed_in", typed.to_arrow())
    con.execute("CREATE TABLE _typed_t AS SELECT * FROM _typed_in")
    suspects = suspect_rows(con, table, "_typed_t", REG, (), {n: p.available() for n, p in parents.items()},
                            courses if table == "sessions" else None)
    everywhere = problems(typed)
    assert everywhere.height  # the random rows break rules
    assert set(everywhere["_row_number"]) <= set(suspects["_row_number"])
    assert suspects["_row_number"].is_sorted() and suspects.columns == typed.columns
    assert problems(suspects).equals(everywhere)
    if table != "courses":  # (a course's drug is a code: every course with one is a suspect)
        assert suspects.height < N  # not every row is a suspect
    # the plausibility ranges: DuckDB's counts are polars' counts
    got = dq_checks(table, rows_read=N, typed=None, problems=everywhere, present={},
                    ranges=range_counts(con, table, "_typed_t"))
    want = dq_checks(table, rows_read=N, typed=typed, problems=everywhere, present={})
    assert got.equals(want)
