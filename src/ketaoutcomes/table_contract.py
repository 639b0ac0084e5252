"""Contracts of the warehouse tables the analysis writes (``ad_*``, ``results_*``).

A :class:`TableContract` declares a table the way a dbt model contract does: its columns
(name, DuckDB type, nullable), the columns that identify a row (the key) and one line on
what the table holds. The contracts are declared beside the code that builds the frames
(:mod:`ketaoutcomes.derive.tables`, :mod:`ketaoutcomes.analysis.tables`, results_runs in
:mod:`ketaoutcomes.pipeline`); :func:`ketaoutcomes.warehouse.write_table` enforces them at
write time, so a column's type is the declared one, not whatever the first run happened to
write (an all-null column would otherwise be stored as INTEGER and refuse text later).

:func:`conform` checks a polars frame against a contract and returns it with the columns in
contract order, each cast to its declared type. Only lossless casts are made (an all-null
column of any type to any type, Int32 to BIGINT, UInt32 to BIGINT, an integer to DOUBLE, a
date to TIMESTAMP, ...): every value must come back unchanged when cast back. A missing
nullable column is added as nulls. Anything else raises :class:`ContractError`.

The analysts' views are generated from the contracts too: :func:`latest_run_sql` (``latest_run``,
each study's latest analysis run) and :func:`latest_view_sql` (``latest_<table>``: that run's rows,
with ``study``, the contract's ``arm_column`` as ``arm`` beside ``arm_label``, and its ``withheld``
estimates null where the diagnostics gate failed); :func:`latest_view` describes such a view as a
contract, for the data dictionary (:func:`ketaoutcomes.docs.warehouse_dictionary`).

Base layer: imports only the standard library, polars and :mod:`ketaoutcomes.contract`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from ketaoutcomes.contract import POLARS_TYPES

__all__ = ["ColumnContract", "ContractError", "DUCKDB_TYPES", "LATEST_PREFIX", "LATEST_RUN", "LATEST_RUN_VIEW",
           "RUN_COLUMNS", "TableContract", "col", "conform", "contracts_by_name", "latest_run_sql", "latest_view",
           "latest_view_sql"]

#: The DuckDB types a contract may declare, and the polars dtype a column is cast to for each
#: (the import contract's mapping, plus BIGINT for counts).
DUCKDB_TYPES: dict[str, pl.DataType] = {**POLARS_TYPES, "BIGINT": pl.Int64}

#: Which polars dtypes may be cast (losslessly, value by value) to each contract type.
_ACCEPTS = {
    "VARCHAR": lambda d: d in (pl.String, pl.Categorical) or isinstance(d, pl.Enum),
    "BOOLEAN": lambda d: d == pl.Boolean,
    "INTEGER": lambda d: d.is_numeric(),
    "BIGINT": lambda d: d.is_numeric(),
    "DOUBLE": lambda d: d.is_numeric(),
    "DATE": lambda d: d == pl.Date,
    "TIMESTAMP": lambda d: d == pl.Date or (isinstance(d, pl.Datetime) and d.time_zone is None),
}


class ContractError(ValueError):
    """A frame, or a stored table, does not meet its table contract (the message is one line
    naming the table, the column and what is wrong)."""


@dataclass(frozen=True)
class ColumnContract:
    """One column of a contracted table.

    Parameters
    ----------
    name : str
        Column name, exactly as stored.
    dtype : str
        DuckDB type, one of :data:`DUCKDB_TYPES`.
    nullable : bool
        Whether the column may hold nulls (and may be left out of a frame: it is then
        written as nulls).
    description : str
        What the column holds (optional; for the warehouse dictionary).
    """

    name: str
    dtype: str
    nullable: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in DUCKDB_TYPES:
            raise ValueError(f"column {self.name}: unknown DuckDB type {self.dtype!r}; "
                             f"choose from {', '.join(DUCKDB_TYPES)}")

    @property
    def polars_type(self) -> pl.DataType:
        return DUCKDB_TYPES[self.dtype]


def col(name: str, dtype: str, nullable: bool = True, description: str = "") -> ColumnContract:
    """Shorthand for :class:`ColumnContract` in the declarations."""
    return ColumnContract(name, dtype, nullable, description)


#: The columns the pipeline adds to every ad_*/results_* row: which analysis run wrote it and
#: with which study settings.
RUN_COLUMNS: tuple[ColumnContract, ...] = (
    col("run_id", "VARCHAR", False, "Analysis run (results_runs.run_id)"),
    col("settings_id", "VARCHAR", False, "Study settings (hash of the settings JSON in results_runs)"),
)


@dataclass(frozen=True)
class TableContract:
    """The contract of one warehouse table.

    Parameters
    ----------
    name : str
        Table name.
    description : str
        One line: what a row is.
    columns : tuple of ColumnContract
        In the order the table stores them.
    key : tuple of str
        Columns whose values identify a row (no two rows share them); they must be declared
        and not nullable.
    arm_column : str, optional
        The column that names the row's arm (``arm``, ``ARM``, ``group`` or ``target``): the
        table's ``latest_`` view calls it ``arm`` and adds ``arm_label`` beside it when the table
        has none (:func:`latest_view`). Required when a column is called arm (in any case) or
        arm_label.
    withheld : tuple of str
        Estimates that a failed diagnostics gate withholds (the table needs a ``diagnostics``
        column with the verdict pass/fail): the table keeps them beside the verdict, its
        ``latest_`` view shows them as null where ``diagnostics = 'fail'``.
    """

    name: str
    description: str
    columns: tuple[ColumnContract, ...]
    key: tuple[str, ...]
    arm_column: str | None = None
    withheld: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"contract {self.name}: column(s) {', '.join(dupes)} declared twice")
        if not self.key:
            raise ValueError(f"contract {self.name}: no key columns")
        for k in self.key:
            if k not in names:
                raise ValueError(f"contract {self.name}: key column {k!r} is not a declared column")
            if self.column(k).nullable:
                raise ValueError(f"contract {self.name}: key column {k!r} must not be nullable")
        if "\n" in self.description or not self.description.strip():
            raise ValueError(f"contract {self.name}: the description must be one non-empty line")
        if self.arm_column is not None and self.arm_column not in names:
            raise ValueError(f"contract {self.name}: arm column {self.arm_column!r} is not a declared column")
        for n in names:
            if n.lower() in ("arm", "arm_label") and self.arm_column is None:
                raise ValueError(f"contract {self.name}: column {n!r} names an arm; declare the arm column "
                                 "(arm_column=...)")
            if n.lower() == "arm" and self.arm_column not in (None, n):
                raise ValueError(f"contract {self.name}: column {n!r} would clash with the arm column "
                                 f"{self.arm_column!r}, which the latest_ view calls arm")
        for w in self.withheld:
            if w not in names or w in self.key:
                raise ValueError(f"contract {self.name}: withheld column {w!r} is not a declared non-key column")
        if self.withheld and "diagnostics" not in names:
            raise ValueError(f"contract {self.name}: withheld estimates need a diagnostics column")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnContract:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"contract {self.name} has no column {name!r}")

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """The polars schema of a conformed frame."""
        return {c.name: c.polars_type for c in self.columns}

    def ddl(self) -> str:
        """``CREATE TABLE`` statement with the declared types (nullability and the key are
        checked by :func:`conform`, not by DuckDB constraints, so that an older table migrated
        with ADD COLUMN and a new one behave alike)."""
        cols = ", ".join(f'"{c.name}" {c.dtype}' for c in self.columns)
        return f'CREATE TABLE "{self.name}" ({cols})'


def contracts_by_name(contracts: Iterable[TableContract]) -> dict[str, TableContract]:
    """``{name: contract}``; a name declared twice is an error."""
    out: dict[str, TableContract] = {}
    for c in contracts:
        if c.name in out:
            raise ValueError(f"table {c.name} has two contracts")
        out[c.name] = c
    return out


# ---------------------------------------------------------------------------
# The latest_ views: the latest analysis run of each study, arms named alike, withheld estimates null
# ---------------------------------------------------------------------------

#: Prefix of the view of a contracted table (``latest_results_cox``) and the name of the view they
#: all join (one row per study: its latest analysis run).
LATEST_PREFIX = "latest_"
LATEST_RUN = "latest_run"

#: The study a run analysed: the ``name`` in its settings (results_runs.settings_json).
_STUDY_SQL = "json_extract_string(settings_json, '$.name')"
_STUDY = col("study", "VARCHAR", False, "Study name (the name in the run's settings: results_runs.settings_json)")

LATEST_RUN_VIEW = TableContract(
    LATEST_RUN,
    "View: one row per study, its latest analysis run (by started_at) in results_runs",
    columns=(_STUDY,
             col("run_id", "VARCHAR", False, "The study's latest analysis run (results_runs.run_id)"),
             col("settings_id", "VARCHAR", False, "Hash of the run's study settings (results_runs.settings_id)"),
             col("started_at", "TIMESTAMP", False, "When the run started (UTC)"),
             col("code_version", "VARCHAR", False, "Package version and git commit of the code that ran"),
             col("data_fingerprint", "VARCHAR", False, "Hash of the data batches in force and the registries")),
    key=("study",),
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def latest_run_sql() -> str:
    """``CREATE OR REPLACE VIEW latest_run``: per study name, the results_runs row with the latest
    ``started_at`` (a tie, two runs started in the same second, goes to the larger run_id)."""
    return (f"CREATE OR REPLACE VIEW {LATEST_RUN} AS SELECT {_STUDY_SQL} AS study, run_id, settings_id, started_at, "
            f"code_version, data_fingerprint FROM results_runs QUALIFY row_number() OVER "
            f"(PARTITION BY {_STUDY_SQL} ORDER BY started_at DESC, run_id DESC) = 1")


def _view_columns(contract: TableContract) -> list[tuple[ColumnContract, str]]:
    """The columns of ``contract``'s latest_ view, each with the SQL that computes it from the
    table (``t``), latest_run (``l``) and ref_arms (``r``)."""
    out = [(_STUDY, "l.study")]
    has_label = "arm_label" in contract.column_names
    for c in contract.columns:
        q = f"t.{_quote(c.name)}"
        if c.name == contract.arm_column:
            said = c.description or "Arm"
            if c.name != "arm":
                said += f" (column {c.name} of {contract.name})"
            out.append((ColumnContract("arm", c.dtype, c.nullable, said), q))
            if not has_label:
                out.append((ColumnContract("arm_label", "VARCHAR", True, "The arm's label in the arm registry in "
                                           "force (ref_arms.label)"), "r.label"))
        elif c.name in contract.withheld:
            said = (c.description + "; " if c.description else "") + \
                "null where diagnostics = 'fail' (withheld; the table keeps the number beside the verdict)"
            out.append((ColumnContract(c.name, c.dtype, True, said),
                        f"CASE WHEN t.diagnostics = 'fail' THEN NULL ELSE {q} END"))
        else:
            out.append((c, q))
    return out


def latest_view(contract: TableContract) -> TableContract:
    """The view ``latest_<table>`` of ``contract``'s table, described as a contract: the rows of the
    latest analysis run of each study (:data:`LATEST_RUN`), with ``study`` first, the arm column
    called ``arm`` with ``arm_label`` beside it (the table's own label, else ref_arms'), and the
    ``withheld`` estimates null where ``diagnostics = 'fail'``."""
    cols = _view_columns(contract)
    renamed = {contract.arm_column: "arm"} if contract.arm_column else {}
    return TableContract(f"{LATEST_PREFIX}{contract.name}",
                         f"View: {contract.name} of each study's latest analysis run (latest_run)",
                         tuple(c for c, _ in cols), tuple(renamed.get(k, k) for k in contract.key),
                         arm_column="arm" if contract.arm_column else None)


def latest_view_sql(contract: TableContract) -> str:
    """``CREATE OR REPLACE VIEW latest_<table>`` (:func:`latest_view`) for ``contract``'s table;
    it reads the table, :data:`LATEST_RUN` and, when the table has no arm_label, ref_arms."""
    cols = _view_columns(contract)
    select = ", ".join(f"{sql} AS {_quote(c.name)}" for c, sql in cols)
    sql = (f"CREATE OR REPLACE VIEW {_quote(LATEST_PREFIX + contract.name)} AS SELECT {select} "
           f"FROM {_quote(contract.name)} AS t JOIN {LATEST_RUN} AS l ON t.run_id = l.run_id")
    if contract.arm_column and "arm_label" not in contract.column_names:  # the label comes from the registry
        sql += f" LEFT JOIN ref_arms AS r ON r.arm = t.{_quote(contract.arm_column)}"
    return sql


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _cast(series: pl.Series, column: ColumnContract, table: str) -> pl.Series:
    """``series`` cast to the column's type when that loses nothing, else ContractError."""
    target = column.polars_type
    source = series.dtype
    if source == target:
        return series
    if series.null_count() == series.len():  # all null (polars' Null dtype, or a typed column of nulls)
        return pl.Series(series.name, [None] * series.len(), dtype=target)
    if not _ACCEPTS[column.dtype](source):
        raise ContractError(f"{table}.{column.name}: has type {source}, the contract declares {column.dtype}")
    cast = series.cast(target, strict=False)
    if column.dtype == "VARCHAR":  # categorical text: nothing to lose
        return cast
    back = cast.cast(source, strict=False)
    lost = series.is_not_null() & (cast.is_null() | series.ne_missing(back))
    if lost.any():
        bad = series.filter(lost)
        raise ContractError(f"{table}.{column.name}: {bad.len()} value(s) of type {source} do not convert to "
                            f"{column.dtype} without loss (first: {_show(bad[0])})")
    return cast


def conform(frame: pl.DataFrame, contract: TableContract) -> pl.DataFrame:
    """``frame`` checked against ``contract``: its columns in contract order, each cast to the
    declared type (a lossless cast only), a missing nullable column added as nulls.

    Raises
    ------
    ContractError
        A column the contract does not declare, a missing non-nullable column, a type that does
        not convert or a value that does not convert without loss, nulls in a non-nullable
        column, or two rows with the same key.
    """
    t = contract.name
    unknown = [c for c in frame.columns if c not in contract.column_names]
    if unknown:
        raise ContractError(f"{t}: column(s) {', '.join(unknown)} not in the table's contract; declare them "
                            "there (a new result column is a contract change) or drop them")
    missing = [c.name for c in contract.columns if c.name not in frame.columns and not c.nullable]
    if missing:
        raise ContractError(f"{t}: missing column(s) {', '.join(missing)}, which the contract declares not nullable")
    out = []
    for c in contract.columns:
        if c.name not in frame.columns:
            out.append(pl.Series(c.name, [None] * frame.height, dtype=c.polars_type))
            continue
        s = _cast(frame.get_column(c.name), c, t)
        if not c.nullable and s.null_count():
            raise ContractError(f"{t}.{c.name}: {s.null_count()} null value(s) in a column the contract declares "
                                "not nullable")
        out.append(s)
    conformed = pl.DataFrame(out)
    dup = conformed.select(contract.key).filter(pl.struct(contract.key).is_duplicated())
    if dup.height:
        first = ", ".join(_show(v) for v in dup.row(0))
        raise ContractError(f"{t}: {dup.height} rows share a key ({', '.join(contract.key)}) with another row; "
                            f"first: ({first})")
    return conformed
