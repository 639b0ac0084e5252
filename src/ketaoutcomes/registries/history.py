"""Which registry rows are in force in a warehouse, batch by batch.

An export's ``arms.csv`` / ``instruments.csv`` is loaded as a batch like a table file: a row of
``meta_batches`` (``table_name`` "arms" / "instruments", its own ``load_seq``), and its rows are
kept in ``raw_arms`` / ``raw_instruments`` with ``_batch_id``, ``_row_number`` and ``_load_seq``.
The registries in force, ``ref_arms`` and ``ref_instruments``, are a function of them
(:func:`registries_at`): the shipped defaults (``registries/*.csv``) with, for each code, the row
of the latest batch that carried it on top. So a rollback that drops a batch drops its registry
rows too, and the registries rebuilt from the batches still in force are those in force before it.

A warehouse written before registries were kept per batch has ``ref_arms`` / ``ref_instruments``
but no ``raw_arms``: :func:`ensure_history` (run by every write session) keeps the rows of its
registries in force that are not the shipped defaults as the *base*, rows of no batch
(``_batch_id`` null, ``_load_seq`` 0). Which export brought them is not known, so no rollback
removes them: they stay in force under every rollback (the dry run says so).

Plain DuckDB on a connection the caller opened (this module sits below :mod:`ketaoutcomes.warehouse`,
which calls :func:`ensure_history`).
"""

from __future__ import annotations

import duckdb
import polars as pl
from pydantic import BaseModel

from ketaoutcomes.registries import REGISTRY_FILES, Registries, load_registries, registry_frame

__all__ = ["HISTORY_TABLES", "REF_TABLES", "append_registry_batch", "base_rows", "ensure_history",
           "rebuild_registries", "registries_at", "registry_changes"]

#: Registry -> the table of its rows of every batch, and the table of the registry in force.
HISTORY_TABLES = {"arms": "raw_arms", "instruments": "raw_instruments"}
REF_TABLES = {"arms": "ref_arms", "instruments": "ref_instruments"}
_META = ("_batch_id", "_row_number", "_load_seq")


def _exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND "
                            "database_name = current_database() AND schema_name = 'main'", [name]).fetchone()[0])


def _history_frame(name: str, items: list[BaseModel], batch_id: str | None, load_seq: int) -> pl.DataFrame:
    frame = registry_frame(name, items)
    return frame.with_columns(pl.lit(batch_id, dtype=pl.String).alias("_batch_id"),
                              pl.Series("_row_number", range(1, frame.height + 1), dtype=pl.Int64),
                              pl.lit(load_seq, dtype=pl.Int32).alias("_load_seq"))


def _insert(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    con.register("_registry_in", frame.to_arrow())
    try:
        if _exists(con, table):
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _registry_in")
        else:
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM _registry_in")
    finally:
        con.unregister("_registry_in")


def _models(name: str, frame: pl.DataFrame) -> list[BaseModel]:
    model = REGISTRY_FILES[name][1]
    return [model.model_validate({k: v for k, v in row.items() if v is not None and k not in _META})
            for row in frame.iter_rows(named=True)]


def _base(con: duckdb.DuckDBPyConnection, name: str) -> list[BaseModel]:
    """The rows of registry ``name`` in force in a warehouse without its history that are not the
    shipped defaults (an export's arms.csv merged in before registries were kept per batch)."""
    if not _exists(con, REF_TABLES[name]):
        return []
    shipped = getattr(load_registries(), name)
    key = REGISTRY_FILES[name][2]
    return [m for m in _models(name, con.execute(f"SELECT * FROM {REF_TABLES[name]}").pl())
            if shipped.get(getattr(m, key)) != m]


def ensure_history(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``raw_arms`` / ``raw_instruments`` if missing. In a warehouse that has registries in
    force but no history of them (written before they were kept per batch), the rows in force
    that are not the shipped defaults become the base (no batch, load_seq 0); idempotent."""
    for name, table in HISTORY_TABLES.items():
        if not _exists(con, table):
            _insert(con, table, _history_frame(name, _base(con, name), None, 0))


def _rows_in_force(con: duckdb.DuckDBPyConnection, name: str, before_seq: int | None) -> pl.DataFrame:
    """Each code's row of the latest batch (load_seq < ``before_seq``) that carried it; in a warehouse
    without history (read-only, before :func:`ensure_history` ran), the stored registry in force."""
    table, key = HISTORY_TABLES[name], REGISTRY_FILES[name][2]
    if _exists(con, table):
        where = "" if before_seq is None else f" WHERE _load_seq < {int(before_seq)}"
        return con.execute(f"SELECT * FROM {table}{where} QUALIFY row_number() OVER (PARTITION BY \"{key}\" ORDER BY "
                           "_load_seq DESC, _row_number DESC) = 1 ORDER BY _load_seq, _row_number").pl()
    if _exists(con, REF_TABLES[name]):
        return con.execute(f"SELECT * FROM {REF_TABLES[name]}").pl()
    return registry_frame(name, [])


def registries_at(con: duckdb.DuckDBPyConnection, before_seq: int | None = None) -> Registries:
    """The registries in force with the batches loaded before load ``before_seq`` (all when None):
    the shipped defaults, each code replaced or added by its row of the latest such batch."""
    reg = load_registries()
    out = {"arms": dict(reg.arms), "instruments": dict(reg.instruments)}
    for name, target in out.items():
        key = REGISTRY_FILES[name][2]
        for item in _models(name, _rows_in_force(con, name, before_seq)):
            target[getattr(item, key)] = item
    return Registries(arms=out["arms"], instruments=out["instruments"])  # type: ignore[arg-type]


def rebuild_registries(con: duckdb.DuckDBPyConnection) -> Registries:
    """``ref_arms`` / ``ref_instruments`` rebuilt from the batches in force (stored sorted by code)."""
    reg = registries_at(con)
    for name, table in REF_TABLES.items():
        frame = registry_frame(name, list(getattr(reg, name).values())).sort(REGISTRY_FILES[name][2])
        con.register("_registry_in", frame.to_arrow())
        try:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _registry_in")
        finally:
            con.unregister("_registry_in")
    return reg


def append_registry_batch(con: duckdb.DuckDBPyConnection, name: str, items: dict[str, BaseModel], batch_id: str,
                          load_seq: int) -> None:
    """Keep the rows of one registry file (``items``: code -> row, in file order) as batch ``batch_id``."""
    ensure_history(con)
    _insert(con, HISTORY_TABLES[name], _history_frame(name, list(items.values()), batch_id, load_seq))


def base_rows(con: duckdb.DuckDBPyConnection) -> int:
    """How many registry rows have no batch (in force before the history began): those kept by
    :func:`ensure_history`, or that it would keep (a warehouse not written since)."""
    return sum(int(con.execute(f"SELECT count(*) FROM {t} WHERE _batch_id IS NULL").fetchone()[0])
               if _exists(con, t) else len(_base(con, name)) for name, t in HISTORY_TABLES.items())


def registry_changes(before: Registries, after: Registries) -> list[str]:
    """What changes from ``before`` to ``after``, one line per registry that changes:
    ``ref_arms: added ect; changed ketamine_iv; removed tms``."""
    lines = []
    for name, table in REF_TABLES.items():
        old, new = getattr(before, name), getattr(after, name)
        parts = [(word, sorted(codes)) for word, codes in (
            ("added", set(new) - set(old)), ("changed", {c for c in set(old) & set(new) if old[c] != new[c]}),
            ("removed", set(old) - set(new)))]
        said = [f"{word} {', '.join(codes)}" for word, codes in parts if codes]
        if said:
            lines.append(f"{table}: {'; '.join(said)}")
    return lines

