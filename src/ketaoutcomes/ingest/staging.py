"""Bring ``stg_<table>`` up to date after an ingest, touching only the keys its new batches carry.

``stg_<table>`` is, for each key, the rows of the latest batch that carried it, in the order
``_load_seq, _row_number`` (:func:`ketaoutcomes.ingest.load.staging_sql`, which a rollback and
``reproduce`` rebuild it from). An ingest appends batches whose ``_load_seq`` is above every batch
before them, so for a key those batches carry, the latest batch is one of them, and every other
key keeps its rows: :func:`update_staging` deletes the rows of those keys and appends the new
batches' rows in ``_load_seq, _row_number`` order. Nothing else is read or rewritten, where a
rebuild re-reads and re-sorts every delivered row (at 1,000,000 patients most of a nightly
ingest's time). The result is the rebuild's, row for row and in the same order
(tests/integration/test_staging_update.py). While ``raw_<table>`` holds one batch,
``stg_<table>`` is a view of it (:func:`ketaoutcomes.ingest.load.rebuild_staging`); the first
batch added to it turns the view into a table of the earlier batch's rows, then updates that.
"""

from __future__ import annotations

from collections.abc import Collection

import duckdb

from ketaoutcomes.contract import TABLES
from ketaoutcomes.ingest.limits import duckdb_threads
from ketaoutcomes.warehouse import relation_kind

__all__ = ["update_staging"]


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def update_staging(con: duckdb.DuckDBPyConnection, table: str, new_seqs: Collection[int], *,
                   threads: int | None = None) -> bool:
    """Apply the batches with ``_load_seq`` in ``new_seqs`` (all above every earlier batch of
    ``raw_<table>``) to ``stg_<table>``; True when done. Returns False, changing nothing, when
    ``stg_<table>`` is missing or its columns are not ``raw_<table>``'s (a warehouse of an earlier
    version): rebuild it
    then (:func:`ketaoutcomes.ingest.load.rebuild_staging`), as when a batch not in ``new_seqs``
    comes after one of them (not an append). No new batch: nothing to do. A ``stg_<table>`` that is
    a view of the one earlier batch becomes a table of that batch's rows first (in their order,
    ``_row_number``'s; on ``threads`` threads, the connection's setting when None), then is updated
    as a table is."""
    stg, raw = f"stg_{table}", f"raw_{table}"
    kind = relation_kind(con, stg)
    if kind is None or _columns(con, stg) != [c for c in _columns(con, raw) if c != "_load_seq"]:
        return False
    if not new_seqs:
        return True
    seqs = sorted({int(s) for s in new_seqs})
    in_new = f"_load_seq IN ({', '.join(map(str, seqs))})"
    before = con.execute(f"SELECT max(_load_seq) FROM {raw} WHERE NOT {in_new}").fetchone()[0]
    if before is not None and before >= seqs[0]:
        return False  # an earlier batch sits after a new one: not an append
    if kind == "view":  # a view of the one earlier batch (rebuild_staging): now a table of its rows
        with duckdb_threads(con, threads):  # (raw_<table>'s whole row groups on every thread: no free blocks)
            con.execute(f"CREATE TABLE _ko_earlier AS SELECT * EXCLUDE (_load_seq) FROM {raw} WHERE NOT {in_new}")
        con.execute(f"DROP VIEW {stg}")
        con.execute(f"ALTER TABLE _ko_earlier RENAME TO {stg}")
    key = [f'"{k}"' for k in TABLES[table].key]
    con.execute(f"CREATE OR REPLACE TEMP TABLE _ko_new AS SELECT * EXCLUDE (_load_seq) FROM {raw} WHERE {in_new} "
                f"QUALIFY _load_seq = max(_load_seq) OVER (PARTITION BY {', '.join(key)}) "
                "ORDER BY _load_seq, _row_number")
    try:
        on = " AND ".join(f"{stg}.{k} = _ko_new.{k}" for k in key)
        con.execute(f"DELETE FROM {stg} USING _ko_new WHERE {on}")
        con.execute(f"INSERT INTO {stg} SELECT * FROM _ko_new ORDER BY rowid")
    finally:
        con.execute("DROP TABLE IF EXISTS _ko_new")
    return True
