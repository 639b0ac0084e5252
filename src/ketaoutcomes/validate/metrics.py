"""Great Expectations' metrics, computed where the data is: inside DuckDB.

GX stays the rule engine. Each rule is a GX expectation (:mod:`.suites`); the expectation
itself says which metrics it needs (``get_validation_dependencies``: ``table.row_count``,
``column_values.between.unexpected_count``, ... with their domain and value arguments), and
the expectation itself judges them (``metrics_validate``, GX's own success rule and result
format) into an ``ExpectationValidationResult``. This module only computes those metrics, as
SQL on the warehouse's tables, so no table is ever fetched into Python:

* every count of a table (row counts, null counts, unexpected counts of the map and pair
  expectations, filtered row counts) in ONE aggregate query over the table (``count_if``),
  grouped by the column of its row conditions (a session's arm, a score's instrument): a count
  under ``Column(c) == v`` is its condition-free count read in group v, so what every arm or
  instrument repeats is computed once per row; a range on a numeric column is read from the
  column's minimum and maximum, and counted row by row only when they break it
  (:func:`_run_counts`; at 1M patients the sessions' counts took 1.4 s against 2.0);
* each uniqueness metric (single or compound key) as a ``GROUP BY ... HAVING count(*) > 1``; a
  compound key is first counted as distinct hashes of its columns: when no two rows' hashes are
  equal no two keys are, and the count is 0 without the grouping by three columns (a third faster
  on 12.3M mood scores); any equal hashes (a duplicate, or a collision) run the exact query;
* the uniqueness counts run ahead, on a thread, while Great Expectations is imported
  (:class:`Prefetch`, :func:`key_queries`);
* only for a rule that failed, its first example row numbers: ``_row_number`` of the first
  unexpected rows in table order (``rowid``), ``LIMIT 5``.

Cross-table columns (``_ko_*``, :data:`ketaoutcomes.validate.rules.DERIVED`) are joins in the
same queries: a reference flag is ``id IN (SELECT key FROM referenced table)`` (a mark join),
and the session's course (its first row when a course_id is duplicated) gives arm and course
dates, and the sessions' course reference.

The metrics mean what GX's pandas engine means by them, which ``tests/unit/test_validate.py``
and ``tests/integration/test_validate_engines.py`` check row for row against that engine
(:mod:`.gx_pandas`): a null (and a
NaN in a DOUBLE column) is missing, not unexpected; uniqueness counts every row of a
duplicated value or key (nulls of a compound key compare equal, as pandas' ``duplicated``);
pair expectations compare only rows their ``ignore_row_if`` keeps.

Why not GX's own SQL execution engine: see README, "Validation" - GX 1.x has no DuckDB
dialect (it needs the duckdb_engine SQLAlchemy driver, not in the lock), its
``execute_query`` fetches results after closing the connection, which a DuckDB connection
does not survive ("fetch after close": the rollback on close discards the result, so every
metric query comes back empty); patched, it took twice the CPU of this module on the 12.3M
mood scores of 1M patients (one query per metric, compound uniqueness as a full self-join).

Result format: SUMMARY with ``exclude_unexpected_values``. Results never hold cell values,
so the ``*.unexpected_values`` metrics are not computed (None); ``*.unexpected_index_list``
holds the first :data:`~ketaoutcomes.validate.results.N_EXAMPLES` rows only (all that a
SUMMARY result shows).
"""

from __future__ import annotations

import json
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl

from ketaoutcomes.contract import TABLES
from ketaoutcomes.validate.results import N_EXAMPLES, ROW_NUMBER, clean_error
from ketaoutcomes.validate.rules import SESSION_AFTER_END_TOLERANCE_DAYS, Rule

__all__ = ["RESULT_FORMAT", "Prefetch", "Source", "evaluate_table", "key_queries", "source"]

RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": N_EXAMPLES,
    "exclude_unexpected_values": True,
    "unexpected_index_column_names": [ROW_NUMBER],
}

_ORD = "_ko_ord"  # the table's rowid: examples in table order
_RANGE_KWARGS = ("min_value", "max_value", "strict_min", "strict_max")
_COURSE_DERIVED = {"_ko_arm", "_ko_course_start", "_ko_course_end_limit"}


@dataclass(frozen=True)
class Source:
    """One table to validate: its SQL name, its columns (as the polars types DuckDB hands
    back, so type checks read as before) and whether ``rowid`` gives its order."""

    relation: str
    schema: pl.Schema
    ordered: bool


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def source(con: Any, relation: str) -> Source:
    """The :class:`Source` of table (or view) ``relation`` on DuckDB connection ``con``."""
    rel = _q(relation)
    schema = con.execute(f"SELECT * FROM {rel} LIMIT 0").pl().schema
    try:
        con.execute(f"SELECT rowid FROM {rel} LIMIT 0")
        ordered = True
    except Exception:  # noqa: BLE001 - a view has no rowid: examples then come in scan order
        ordered = False
    return Source(rel, schema, ordered)


def _lit(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"CAST('{value!r}' AS DOUBLE)"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"cannot write {type(value).__name__} value as SQL")


def _count_if(predicate: str) -> str:
    """Rows where ``predicate`` is true. DuckDB's count_if is NULL, not 0, over no rows or
    when the predicate is NULL on every row (an all-null column)."""
    return f"coalesce(count_if({predicate}), 0)"


def _and(*parts: str) -> str:
    """SQL conjunction of the non-empty ``parts`` (TRUE when none)."""
    kept = [p for p in parts if p and p != "TRUE"]
    return "(" + " AND ".join(kept) + ")" if kept else "TRUE"


@dataclass(frozen=True)
class _Spec:
    """The rows of one map metric: those it looks at (``kept``), those that break it
    (``unexpected``; for uniqueness, rows of a key that ``group_by`` finds more than once).

    The same without the metric's row condition (``kept_rest``, ``unexpected_rest``), for the
    counts grouped by the condition's column (``key``: the condition when it is one
    ``Column(c) == "text"``); ``between``: (column, GX value kwargs) of a range on a numeric column,
    which a column's minimum and maximum can show unbroken."""

    kept: str
    unexpected: str | None
    group_by: tuple[str, ...]
    derived: frozenset[str]
    count: str | None = None  # the unexpected count as an aggregate, when cheaper than count_if
    kept_rest: str = "TRUE"
    unexpected_rest: str | None = None
    key: tuple[str, str] | None = None
    between: tuple[str, tuple[tuple[str, Any], ...]] | None = None
    where: str = ""  # the row condition's SQL ("" for none)


@dataclass(frozen=True)
class _Count:
    """One count of a table: ``full`` over the table; ``rest`` the same without the row
    condition ``key`` (None: ``rest`` is ``full``, or there is a condition that is not a key), to
    be read in the key's group; ``between`` as :attr:`_Spec.between`."""

    full: str
    derived: frozenset[str]
    rest: str | None = None
    key: tuple[str, str] | None = None
    between: tuple[str, tuple[tuple[str, Any], ...]] | None = None

    @classmethod
    def of(cls, spec: _Spec, unexpected: bool) -> "_Count":
        if not unexpected:
            rest = "count(*)" if spec.kept_rest == "TRUE" else _count_if(spec.kept_rest)
            return cls(_count_if(spec.kept), spec.derived, rest if not spec.where or spec.key else None, spec.key)
        rest = spec.count or _count_if(spec.unexpected_rest)
        full = rest if not spec.where else _count_if(spec.unexpected)
        return cls(full, spec.derived, rest if not spec.where or spec.key else None, spec.key, spec.between)


class _Table:
    """SQL for the metrics of one table."""

    def __init__(self, table: str, sources: Mapping[str, Source], rows: str | None = None):
        self.table = table
        self.sources = sources
        self.src = sources[table]
        self.rows = rows  # which rows of the table are checked (SQL over its columns as t.*); None: all

    # ------------------------------------------------------------------ columns and rows

    def _dtype(self, column: str) -> pl.DataType:
        if column in self.src.schema:
            return self.src.schema[column]
        if column.startswith("_ko_ref_"):
            return pl.Boolean()
        if column == "_ko_arm":
            return pl.String()
        if column in _COURSE_DERIVED:
            return pl.Datetime("us")
        raise ValueError(f"column {column} is not in {self.table}")

    def _isnull(self, column: str) -> str:
        c = f"d.{_q(column)}"
        if self._dtype(column).is_float():  # pandas: NaN is missing
            return f"({c} IS NULL OR isnan({c}))"
        return f"({c} IS NULL)"

    def _notnull(self, column: str) -> str:
        return f"(NOT {self._isnull(column)})"

    def condition(self, rc: Any, used: set[str]) -> str:
        """A GX row condition (``Column(c) == v``, or an AND of them) as SQL; "" for none."""
        if rc is None or rc == "":
            return ""
        if hasattr(rc, "dict"):
            rc = rc.dict()
        if isinstance(rc, Mapping):
            kind = rc.get("type")
            if kind == "comparison" and str(rc.get("operator")) == "==":
                column = rc["column"]["name"]
                self._dtype(column)
                used.add(column)
                return f"(d.{_q(column)} = {_lit(rc['parameter'])})"
            if kind == "and":
                return "(" + " AND ".join(self.condition(c, used) for c in rc["conditions"]) + ")"
        raise ValueError(f"row condition {rc!r} is not computed in DuckDB (only Column(c) == value and AND)")

    def domain(self, derived: Iterable[str]) -> str:
        """The table with the derived ``_ko_*`` columns ``derived`` joined on, and its rowid."""
        derived = set(derived)
        cols = ["t.*"] + ([f"t.rowid AS {_ORD}"] if self.src.ordered else [])
        joins: list[str] = []
        course_join = bool(derived & _COURSE_DERIVED)
        for ref in TABLES[self.table].references:
            name = f"_ko_ref_{ref.column}"
            if name not in derived:
                continue
            col, key = f"t.{_q(ref.column)}", _q(ref.to_column)
            # a null id gives a null flag: missing, reported by the id's not-null rule
            if course_join and (ref.column, ref.to_table, ref.to_column) == ("course_id", "courses", "course_id"):
                # the course join below finds the course (one row per non-null course_id)
                cols.append(f"CASE WHEN {col} IS NULL THEN NULL ELSE _ko_c.k IS NOT NULL END AS {name}")
                continue
            # IN (a mark join) costs half a LEFT JOIN to the distinct keys at 1M patients
            cols.append(f"CASE WHEN {col} IS NULL THEN NULL ELSE {col} IN (SELECT {key} FROM "
                        f"{self.sources[ref.to_table].relation} WHERE {key} IS NOT NULL) END AS {name}")
        if course_join:
            courses = self.sources["courses"]
            order = " ORDER BY rowid" if courses.ordered else ""
            # a duplicated course_id (reported by courses.key_unique) must not duplicate
            # sessions in the join: its first row
            joins.append("LEFT JOIN (SELECT course_id AS k, arm, start_date, end_date FROM "
                         f"{courses.relation} WHERE course_id IS NOT NULL "
                         f"QUALIFY row_number() OVER (PARTITION BY course_id{order}) = 1) _ko_c "
                         "ON t.course_id = _ko_c.k")
            if "_ko_arm" in derived:
                cols.append("CAST(_ko_c.arm AS VARCHAR) AS _ko_arm")
            if "_ko_course_start" in derived:
                cols.append("CAST(_ko_c.start_date AS TIMESTAMP) AS _ko_course_start")
            if "_ko_course_end_limit" in derived:
                # midnight starting day end_date + tolerance + 1: "limit > session_ts" means
                # the session's calendar day is at most end_date + tolerance
                days = SESSION_AFTER_END_TOLERANCE_DAYS + 1
                cols.append(f"CAST(_ko_c.end_date AS TIMESTAMP) + INTERVAL {days} DAY AS _ko_course_end_limit")
        where = f" WHERE {self.rows}" if self.rows else ""
        return f"SELECT {', '.join(cols)} FROM {self.src.relation} t {' '.join(joins)}{where}"

    # ------------------------------------------------------------------ metrics

    def key(self, rc: Any) -> tuple[str, str] | None:
        """A row condition that is one ``Column(c) == "text"`` on a text column, as (c, text); else None."""
        if hasattr(rc, "dict"):
            rc = rc.dict()
        if (isinstance(rc, Mapping) and rc.get("type") == "comparison" and str(rc.get("operator")) == "=="
                and isinstance(rc.get("parameter"), str)):
            column = rc["column"]["name"]
            if self._dtype(column) == pl.String():
                return column, rc["parameter"]
        return None

    def spec(self, base: str, dk: Mapping[str, Any], vk: Mapping[str, Any]) -> _Spec:
        """The rows of map metric ``base`` (e.g. ``column_values.between``) with GX's
        domain kwargs ``dk`` and value kwargs ``vk``."""
        used: set[str] = set()
        rc = self.condition(dk.get("row_condition"), used)
        group_by: tuple[str, ...] = ()
        rest: str | None  # the unexpected rows, row condition aside
        count: str | None = None
        between = None
        if base in ("column_values.nonnull", "column_values.null", "column_values.in_set",
                    "column_values.between", "column_values.unique"):
            column = dk["column"]
            used.add(column)
            c = f"d.{_q(column)}"
            if base == "column_values.nonnull":
                kept, rest = "TRUE", self._isnull(column)
                # nulls from the validity mask: a third cheaper than count_if
                nan = f" + {_count_if(f'isnan({c})')}" if self._dtype(column).is_float() else ""
                count = f"count(*) - count({c}){nan}"
            elif base == "column_values.null":  # every row of the domain is kept; a value is unexpected
                kept, rest = "TRUE", self._notnull(column)
            else:
                kept = self._notnull(column)
                if base == "column_values.in_set":
                    values = list(vk.get("value_set") or [])
                    inside = f"{c} IN ({', '.join(_lit(v) for v in values)})" if values else "FALSE"
                    rest = _and(kept, f"NOT ({inside})")
                elif base == "column_values.between":
                    rest = _and(kept, f"NOT ({self._between(c, vk)})")
                    numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                  for v in (vk.get("min_value"), vk.get("max_value")))
                    if numeric and self._dtype(column).is_numeric():
                        between = (column, tuple(sorted((k, vk.get(k)) for k in _RANGE_KWARGS)))
                else:
                    rest, group_by = None, (column,)
        elif base == "column_pair_values.a_greater_than_b":
            a, b = dk["column_A"], dk["column_B"]
            used |= {a, b}
            kept = self._pair_kept(a, b, dk.get("ignore_row_if"))
            op = ">=" if vk.get("or_equal") else ">"
            # pandas compares a missing value as False: unexpected
            rest = _and(kept, f"NOT coalesce(d.{_q(a)} {op} d.{_q(b)}, FALSE)")
        elif base == "compound_columns.unique":
            columns = tuple(dk["column_list"])
            used |= set(columns)
            kept = self._multi_kept(columns, dk.get("ignore_row_if"))
            rest, group_by = None, columns
        else:
            raise ValueError(f"metric {base} is not computed in DuckDB")
        for col in used:
            self._dtype(col)
        return _Spec(_and(rc, kept), None if rest is None else _and(rc, rest), group_by,
                     frozenset(c for c in used if c.startswith("_ko_")), count, kept, rest,
                     self.key(dk.get("row_condition")) if rc else None, between, rc)

    @staticmethod
    def _between(c: str, vk: Mapping[str, Any]) -> str:
        lo, hi = vk.get("min_value"), vk.get("max_value")
        if lo is None and hi is None:  # GX's own checks, same messages
            raise ValueError("min_value and max_value cannot both be None")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("min_value cannot be greater than max_value")
        parts = []
        if lo is not None:
            parts.append(f"{c} {'>' if vk.get('strict_min') else '>='} {_lit(lo)}")
        if hi is not None:
            parts.append(f"{c} {'<' if vk.get('strict_max') else '<='} {_lit(hi)}")
        return " AND ".join(parts)

    def _pair_kept(self, a: str, b: str, ignore: str | None) -> str:
        ignore = ignore or "both_values_are_missing"
        if ignore == "either_value_is_missing":
            return f"({self._notnull(a)} AND {self._notnull(b)})"
        if ignore == "both_values_are_missing":
            return f"({self._notnull(a)} OR {self._notnull(b)})"
        if ignore == "neither":
            return "TRUE"
        raise ValueError(f"ignore_row_if={ignore!r} is not computed in DuckDB")

    def _multi_kept(self, columns: tuple[str, ...], ignore: str | None) -> str:
        ignore = ignore or "all_values_are_missing"
        if ignore == "all_values_are_missing":
            return "(" + " OR ".join(self._notnull(c) for c in columns) + ")"
        if ignore == "any_value_is_missing":
            return "(" + " AND ".join(self._notnull(c) for c in columns) + ")"
        if ignore == "never":
            return "TRUE"
        raise ValueError(f"ignore_row_if={ignore!r} is not computed in DuckDB")

    def grouped_count_sql(self, spec: _Spec) -> str:
        """The rows of a key (``spec.group_by``) that is found more than once (GX's count)."""
        keys = ", ".join(f"d.{_q(c)}" for c in spec.group_by)
        return (f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM ({self.domain(spec.derived)}) d "
                f"WHERE {spec.kept} GROUP BY {keys} HAVING count(*) > 1)")

    def unique_check_sql(self, spec: _Spec) -> str:
        """The first query of a uniqueness count: for a compound key, the kept rows less the
        distinct hashes of their keys (0: no two keys are equal, since equal keys have equal
        hashes; NULLs hash alike, as the exact query groups them); for one column, the exact count."""
        if len(spec.group_by) < 2:
            return self.grouped_count_sql(spec)
        keys = ", ".join(f"d.{_q(c)}" for c in spec.group_by)
        return (f"SELECT count(*) - count(DISTINCT hash({keys})) FROM ({self.domain(spec.derived)}) d "
                f"WHERE {spec.kept}")

    def examples_sql(self, spec: _Spec, limit: int | None) -> str:
        """The row numbers of the rows that break ``spec``, in table order."""
        dom = self.domain(spec.derived)
        order = f" ORDER BY d.{_ORD}" if self.src.ordered else ""
        tail = order + (f" LIMIT {limit}" if limit is not None else "")
        if not spec.group_by:
            return f"SELECT d.{_q(ROW_NUMBER)} FROM ({dom}) d WHERE {spec.unexpected}{tail}"
        keys = ", ".join(f"d.{_q(c)}" for c in spec.group_by)
        on = " AND ".join(f"d.{_q(c)} IS NOT DISTINCT FROM u.{_q(c)}" for c in spec.group_by)
        return (f"SELECT d.{_q(ROW_NUMBER)} FROM ({dom}) d SEMI JOIN (SELECT {keys} FROM ({dom}) d "
                f"WHERE {spec.kept} GROUP BY {keys} HAVING count(*) > 1) u ON {on} WHERE {spec.kept}{tail}")


#: The uniqueness expectations whose query :func:`key_queries` predicts, and their GX metric.
_KEY_METRICS = {"ExpectColumnValuesToBeUnique": "column_values.unique",
                "ExpectCompoundColumnsToBeUnique": "compound_columns.unique"}


def key_queries(table: str, sources: Mapping[str, Source], rules: Iterable[Rule], rows: str | None = None,
                ) -> list[str]:
    """The first uniqueness query (:meth:`_Table.unique_check_sql`) that :func:`evaluate_table`
    will run for each key rule of ``table`` among ``rules`` (runnable on ``sources``), predicted
    from the rules alone, without Great Expectations: its metric's domain is the rule's own
    column (or columns, and ``ignore_row_if``). A query GX asks for differently is simply not
    among the prefetched ones and runs when asked (``tests/integration/test_validate_engines.py``
    checks that every prediction is asked for)."""
    t = _Table(table, sources, rows)
    out = []
    for r in rules:
        base = _KEY_METRICS.get(r.expectation)
        if r.table != table or base is None or r.condition is not None:
            continue
        if base == "column_values.unique":
            dk = {"column": r.kwargs["column"]}
        else:
            dk = {"column_list": list(r.kwargs["column_list"]), "ignore_row_if": r.kwargs.get("ignore_row_if")}
        try:
            out.append(t.unique_check_sql(t.spec(base, dk, {})))
        except ValueError:  # not computed in DuckDB: evaluate_table reports it on the rule
            continue
    return out


class Prefetch:
    """Queries run ahead on a thread of their own, on a cursor of ``con`` (a second connection
    to the same database), while the caller imports Great Expectations: some 2 s of one core,
    in which DuckDB counts the keys on the others (its ``threads`` one fewer until the first
    :meth:`fetch`, so that the import keeps its core).

    :meth:`fetch` returns a prefetched query's rows (waiting for them, or raising its error) and
    runs any other query on ``con``. The thread only executes SQL and fetches rows: it imports
    nothing, so it never meets the import's module locks. Use as a context manager: leaving it
    cancels what has not started, waits for a query that has, and gives DuckDB its threads back."""

    def __init__(self, con: Any, queries: Iterable[str]):
        self._con = con
        todo = list(dict.fromkeys(queries))
        self._threads: int | None = None  # DuckDB's threads, while one fewer run
        self._cursor = con.cursor() if todo else None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="validate-prefetch") if todo else None
        if todo and (threads := int(con.execute("SELECT current_setting('threads')").fetchone()[0])) > 1:
            con.execute(f"SET threads = {threads - 1}")  # (after the cursor and pool: their failure leaves it)
            self._threads = threads
        self._futures: dict[str, Future] = {sql: self._pool.submit(self._rows, sql) for sql in todo}
        self.unused = set(self._futures)  # the prefetched queries nobody has asked for yet

    def _rows(self, sql: str) -> list[tuple]:
        return self._cursor.execute(sql).fetchall()

    def _all_threads(self) -> None:
        if self._threads is not None:
            threads, self._threads = self._threads, None
            self._con.execute(f"SET threads = {threads}")

    def fetch(self, sql: str) -> list[tuple]:
        """The rows of ``sql``: prefetched, or run now on ``con``."""
        self._all_threads()
        future = self._futures.get(sql)
        if future is None:
            return self._con.execute(sql).fetchall()
        self.unused.discard(sql)
        return future.result()

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._cursor.close()
        finally:
            self._all_threads()


def _split(metric_name: str) -> tuple[str, str]:
    base, _, suffix = metric_name.rpartition(".")
    return base, suffix


def _error_evr(expectation: Any, message: str, tb: str | None = None) -> Any:
    from great_expectations.core import ExpectationValidationResult

    return ExpectationValidationResult(
        success=False,
        expectation_config=expectation.configuration,
        exception_info={"raised_exception": True, "exception_message": message, "exception_traceback": tb},
    )


def evaluate_table(
    con: Any, table: str, sources: Mapping[str, Source], rules: list[Rule], expectations: Mapping[str, Any],
    rows: str | None = None, prefetch: "Prefetch | None" = None,
) -> tuple[dict[str, Any], bool]:
    """GX's ``ExpectationValidationResult`` per rule id of ``rules`` (all runnable on
    ``sources``; ``expectations`` maps rule ids to their GX expectations), with every metric
    computed in DuckDB; and whether the table has source row numbers for examples.

    ``rows``: an SQL condition on the table's columns (as ``t."column"``) restricting the rows
    checked (every metric, row counts included, is over those rows); the tables it refers to
    (references, the session's course) are read whole. None: every row.

    ``prefetch``: queries already running on a thread (:func:`key_queries`); a query that is
    there is answered from it, any other runs on ``con``."""
    t = _Table(table, sources, rows)
    query: Callable[[str], list[tuple]] = prefetch.fetch if prefetch is not None else (
        lambda sql: con.execute(sql).fetchall())
    deps = {r.rule_id: _dependencies(expectations[r.rule_id]) for r in rules}
    configs: dict[Any, Any] = {}
    for d in deps.values():
        for mc in d.get_metric_configurations():
            configs.setdefault(mc.id, mc)

    values: dict[Any, Any] = {}
    errors: dict[Any, str] = {}
    specs: dict[Any, _Spec] = {}
    aggregates: dict[Any, _Count] = {}  # metric id -> its count
    grouped: dict[Any, _Spec] = {}
    later: list[Any] = []  # index lists and queries, once the counts are known
    for mid, mc in configs.items():
        name, dk, vk = mc.metric_name, dict(mc.metric_domain_kwargs), dict(mc.metric_value_kwargs)
        base, suffix = _split(name)
        try:
            if name == "table.columns":
                values[mid] = list(t.src.schema.names())
            elif name == "table.row_count":
                used: set[str] = set()
                rc = t.condition(dk.get("row_condition"), used)
                key = t.key(dk.get("row_condition")) if rc else None
                aggregates[mid] = _Count(_count_if(rc) if rc else "count(*)",
                                         frozenset(c for c in used if c.startswith("_ko_")),
                                         "count(*)" if not rc or key else None, key)
            elif suffix in ("unexpected_count", "filtered_row_count", "unexpected_values",
                            "unexpected_index_list", "unexpected_index_query"):
                spec = specs[mid] = t.spec(base, dk, {k: v for k, v in vk.items() if k != "result_format"})
                if suffix == "unexpected_values":
                    values[mid] = None  # results never hold cell values (exclude_unexpected_values)
                elif suffix == "filtered_row_count":
                    aggregates[mid] = _Count.of(spec, unexpected=False)
                elif suffix == "unexpected_count" and spec.group_by:
                    grouped[mid] = spec
                elif suffix == "unexpected_count":
                    aggregates[mid] = _Count.of(spec, unexpected=True)
                else:
                    later.append(mid)
            else:
                raise ValueError(f"metric {name} is not computed in DuckDB")
        except Exception as exc:  # noqa: BLE001 - the expectations that need it fail with its message
            errors[mid] = clean_error(exc)  # as GX: the message alone

    has_rows = ROW_NUMBER in t.src.schema
    rows_key = object()
    if has_rows:
        expr = _count_if(f"d.{_q(ROW_NUMBER)} IS NULL")
        aggregates[rows_key] = _Count(expr, frozenset(), expr)
    _run_counts(query, t, aggregates, values, errors)
    has_rows = has_rows and values.get(rows_key) == 0
    for mid, spec in grouped.items():
        _run_one(query, mid, t.unique_check_sql(spec), values, errors, lambda r: int(r[0][0]))
        if values.get(mid) and len(spec.group_by) > 1:  # equal hashes: count the equal keys
            _run_one(query, mid, t.grouped_count_sql(spec), values, errors, lambda r: int(r[0][0]))

    counts = {(_split(configs[m].metric_name)[0], specs[m]): v for m, v in values.items()
              if m in specs and _split(configs[m].metric_name)[1] == "unexpected_count"}
    for mid in later:
        base, suffix = _split(configs[mid].metric_name)
        spec = specs[mid]
        if suffix == "unexpected_index_query":
            values[mid] = t.examples_sql(spec, None) if has_rows else None
        elif not has_rows:
            values[mid] = None
        elif counts.get((base, spec)) == 0:
            values[mid] = []
        else:
            _run_one(query, mid, t.examples_sql(spec, N_EXAMPLES), values, errors,
                     lambda r: [{ROW_NUMBER: int(x[0])} for x in r])

    out: dict[str, Any] = {}
    for r in rules:
        e, d = expectations[r.rule_id], deps[r.rule_id]
        failed = [errors[mc.id] for mc in d.get_metric_configurations() if mc.id in errors]
        if failed:
            out[r.rule_id] = _error_evr(e, "; ".join(dict.fromkeys(failed)))
            continue
        metrics = {mc.id: values[mc.id] for mc in d.get_metric_configurations()}
        try:
            out[r.rule_id] = e.metrics_validate(metrics, runtime_configuration={"result_format": RESULT_FORMAT})
        except Exception as exc:  # noqa: BLE001 - as GX's catch_exceptions: this rule fails alone
            out[r.rule_id] = _error_evr(e, f"{type(exc).__name__}: {clean_error(exc)}", traceback.format_exc())
    return out, has_rows


#: The metrics each expectation needs, by its class and configuration (see :func:`_dependencies`).
_DEPENDENCIES: dict[tuple[str, str], Any] = {}
_DEPENDENCIES_MAX = 4096


def _dependencies(expectation: Any) -> Any:
    """``expectation.get_validation_dependencies`` (SUMMARY, no execution engine), remembered by the
    expectation's class and configuration: what GX answers depends on nothing else, and it answers
    slowly (it rebuilds the expectation's configuration some 70 times per call: most of a small
    warehouse's validation). A process that validates again (a served flow, a test run) asks once."""
    key = (type(expectation).__qualname__,
           json.dumps(expectation.configuration.to_json_dict(), sort_keys=True, default=str))
    found = _DEPENDENCIES.get(key)
    if found is None:
        found = expectation.get_validation_dependencies(
            execution_engine=None, runtime_configuration={"result_format": RESULT_FORMAT})
        if len(_DEPENDENCIES) >= _DEPENDENCIES_MAX:
            _DEPENDENCIES.clear()
        _DEPENDENCIES[key] = found
    return found


def _run_one(query: Callable[[str], list[tuple]], mid: Any, sql: str, values: dict, errors: dict,
             convert: Any) -> None:
    try:
        values[mid] = convert(query(sql))
    except Exception as exc:  # noqa: BLE001 - the expectations that need it fail with its message
        errors[mid] = clean_error(exc)  # as GX: the message alone


def _within(low: Any, high: Any, vk: Mapping[str, Any]) -> bool:
    """Whether every value from ``low`` to ``high`` (a column's minimum and maximum, not NaN;
    None and None: no value) is inside the range of GX value kwargs ``vk``."""
    if low is None and high is None:
        return True
    if low is None or high is None:
        return False
    lo, hi = vk.get("min_value"), vk.get("max_value")
    ok_lo = lo is None or (low > lo if vk.get("strict_min") else low >= lo)
    ok_hi = hi is None or (high < hi if vk.get("strict_max") else high <= hi)
    return bool(ok_lo and ok_hi)


def _run_counts(query: Callable[[str], list[tuple]], t: _Table, counts: Mapping[Any, _Count],
                values: dict, errors: dict) -> None:
    """All counts of the table in one scan, grouped by the column of the commonest row
    condition (a session's arm, a score's instrument): a count under ``Column(c) == v`` is its
    condition-free count read in group v, so the counts that every arm or instrument repeats
    with its own value are computed once per row, not once per value. A range on a numeric
    column is read from the column's minimum and maximum; a range they do not show unbroken
    (and any count the grouped query could not give) is counted exactly, row by row, in a
    second query (:func:`_run_aggregates`). Every count is the same as its ``full`` SQL's."""
    if not counts:
        return
    keyed = Counter(c.key[0] for c in counts.values() if c.key is not None)
    group = keyed.most_common(1)[0][0] if keyed else None
    exprs: dict[str, int] = {}
    plan: dict[Any, tuple] = {}
    for mid, c in counts.items():
        where = c.key[1] if c.key is not None and c.key[0] == group else None
        if c.rest is None or (c.key is not None and where is None):  # another condition: counted in full
            plan[mid] = ("sum", exprs.setdefault(c.full, len(exprs)), None)
        elif c.between is not None:
            column = f"d.{_q(c.between[0])}"
            plan[mid] = ("range", (exprs.setdefault(f"min({column})", len(exprs)),
                                   exprs.setdefault(f"max({column})", len(exprs))), where)
        else:
            plan[mid] = ("sum", exprs.setdefault(c.rest, len(exprs)), where)
    derived = frozenset().union(*(c.derived for c in counts.values()))
    by = f"d.{_q(group)}" if group is not None else "NULL"
    sql = (f"SELECT {by}, {', '.join(exprs)} FROM ({t.domain(derived)}) d"
           + (f" GROUP BY {by}" if group is not None else ""))
    try:
        rows = query(sql)
    except Exception:  # noqa: BLE001 - every count in full, each alone if need be
        _run_aggregates(query, t, {m: (c.full, c.derived) for m, c in counts.items()}, values, errors)
        return
    exact: dict[Any, tuple[str, frozenset[str]]] = {}
    for mid, (kind, at, where) in plan.items():
        chosen = [r for r in rows if where is None or r[0] == where]
        if kind == "sum":
            values[mid] = sum(int(r[1 + at] or 0) for r in chosen)
            continue
        lows = [r[1 + at[0]] for r in chosen if r[1 + at[0]] is not None]
        highs = [r[1 + at[1]] for r in chosen if r[1 + at[1]] is not None]
        try:
            inside = all(v == v for v in lows + highs) and _within(
                min(lows, default=None), max(highs, default=None), dict(counts[mid].between[1]))
        except TypeError:  # a value and a bound that do not compare
            inside = False
        if inside:
            values[mid] = 0
        else:
            exact[mid] = (counts[mid].full, counts[mid].derived)
    _run_aggregates(query, t, exact, values, errors)


def _run_aggregates(query: Callable[[str], list[tuple]], t: _Table,
                    aggregates: Mapping[Any, tuple[str, frozenset[str]]], values: dict, errors: dict) -> None:
    """All counts of the table in one scan; if that query fails, each count alone, so that an
    error fails only the expectations that need that count."""
    if not aggregates:
        return
    ids = list(aggregates)
    derived = frozenset().union(*(d for _, d in aggregates.values()))
    sql = f"SELECT {', '.join(aggregates[m][0] for m in ids)} FROM ({t.domain(derived)}) d"
    try:
        row = query(sql)[0]
    except Exception:  # noqa: BLE001 - retried one by one below
        for m in ids:
            expr, d = aggregates[m]
            _run_one(query, m, f"SELECT {expr} FROM ({t.domain(d)}) d", values, errors, lambda r: int(r[0][0]))
        return
    for m, v in zip(ids, row):
        values[m] = int(v)
