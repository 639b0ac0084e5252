"""What a load knows of the deliveries before it: the batch id of new or repeated content, an
export's registry files as batches of their own, and content that a rollback removed.

* **Batch ids.** A first delivery of a content is ``<table>-<16 hex of its sha256>``; its k-th
  re-delivery (the content of an earlier, since superseded batch) adds ``-r<k>``.
* **Registry files.** ``arms.csv`` / ``instruments.csv`` of an export are batches like the table
  files (``meta_batches.table_name`` "arms" / "instruments"), loaded before the tables of the same
  export, their rows kept in ``raw_arms`` / ``raw_instruments``
  (:mod:`ketaoutcomes.registries.history`). The same file again is skipped, as a table file is.
* **Rolled-back content.** A rollback records the content hash of every batch it removes
  (``meta_rolled_back``). A later load of a file with such content refuses the whole export in one
  line naming the files and the rollback, unless told to load it again on purpose
  (``ingest --reload-rolled-back``): the export folder that held the removed files usually still
  does, and the nightly run would otherwise load them back without a word. A corrected file (other
  content) loads as any file does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
from pydantic import BaseModel

from ketaoutcomes.ingest.errors import IngestError
from ketaoutcomes.registries import REGISTRY_FILES, read_registry

__all__ = ["RELOAD_OPTION", "RegistryDelivery", "check_rolled_back", "mark_reloaded", "new_batch_id",
           "record_rolled_back", "registry_deliveries"]

#: The ingest option that loads rolled-back content again on purpose.
RELOAD_OPTION = "--reload-rolled-back"


def new_batch_id(table: str, sha: str, earlier: pl.DataFrame) -> tuple[str, str | None]:
    """The id of a new batch of ``table`` with content ``sha``, and the first earlier batch with the
    same content (a re-delivery of a version superseded since), if any. ``earlier``: the table's
    batches (batch_id, file_sha256), oldest first."""
    same = earlier.filter(pl.col("file_sha256") == sha)["batch_id"]
    base = f"{table}-{sha[:16]}"
    if same.is_empty():
        return base, None
    return f"{base}-r{same.len()}", same[0]


@dataclass(frozen=True)
class RegistryDelivery:
    """One registry file of an export: its rows, and whether it is a new batch."""

    name: str  # "arms" | "instruments"
    path: Path
    sha: str
    items: dict[str, BaseModel]  # code -> row, in file order
    batch_id: str
    skipped: bool  # the registry's latest batch has this content already
    redelivery_of: str | None = None


def registry_deliveries(export_dir: Path, batches: pl.DataFrame, sha256) -> list[RegistryDelivery]:
    """The registry files of ``export_dir``, read and checked (:func:`ketaoutcomes.registries.read_registry`),
    each with its batch id against ``batches`` (meta_batches: batch_id, table_name, file_sha256, in
    load order); ``sha256(path)`` hashes a file.

    Raises
    ------
    ValueError
        A bad registry file (one line, no cell value).
    """
    out = []
    for name, (file_name, _, _) in REGISTRY_FILES.items():
        path = Path(export_dir) / file_name
        if not path.exists():
            continue
        sha = sha256(path)
        items = read_registry(path, name)
        mine = batches.filter(pl.col("table_name") == name)
        if mine.height and mine["file_sha256"][-1] == sha:
            out.append(RegistryDelivery(name, path, sha, items, mine["batch_id"][-1], True))
            continue
        batch_id, of = new_batch_id(name, sha, mine)
        out.append(RegistryDelivery(name, path, sha, items, batch_id, False, of))
    return out


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND "
                            "database_name = current_database() AND schema_name = 'main'", [name]).fetchone()[0])


def check_rolled_back(con: duckdb.DuckDBPyConnection, files: list[tuple[Path, str]], *,
                      reload: bool) -> dict[str, str]:
    """Refuse the load of ``files`` ((path, sha256) of every file about to be loaded) when any holds
    content that a rollback removed and was not loaded again since, unless ``reload``.

    Returns
    -------
    dict
        sha256 -> the rolled-back batch, for the files loaded again on purpose (``reload``).

    Raises
    ------
    IngestError
        One line naming each such file, the batch and the rollback, and the three ways on.
    """
    if not files or not _table_exists(con, "meta_rolled_back"):
        return {}
    found = con.execute(
        "SELECT file_sha256, arg_max(batch_id, rolled_back_at), max(rolled_back_at), arg_max(rollback_target, "
        "rolled_back_at) FROM meta_rolled_back WHERE reloaded_as IS NULL AND list_contains(?, file_sha256) "
        "GROUP BY file_sha256", [[sha for _, sha in files]]).fetchall()
    removed = {sha: (batch, at, target) for sha, batch, at, target in found}
    hits = [(path, sha) for path, sha in files if sha in removed]
    if not hits:
        return {}
    if reload:
        return {sha: removed[sha][0] for _, sha in hits}
    folder = hits[0][0].parent
    said = ", ".join(f"{p.name} (the content of batch {removed[sha][0]}, rolled back on {removed[sha][1]:%Y-%m-%d %H:%M} "
                     f"UTC by `rollback {removed[sha][2]}`)" for p, sha in hits)
    raise IngestError(
        f"{folder}: {said}: content that a rollback removed is not loaded again unless asked; replace the file(s) "
        f"with corrected ones or move them out of the folder, or load them again on purpose with `python -m "
        f"ketaoutcomes ingest {folder} {RELOAD_OPTION}`; nothing was loaded")


def record_rolled_back(con: duckdb.DuckDBPyConnection, batches: pl.DataFrame, *, at: dt.datetime, target: str) -> None:
    """Record the content of the ``batches`` (batch_id, table_name, source_file, file_sha256) a
    rollback to before ``target`` removes, so that no ingest loads it again without being asked."""
    if batches.is_empty():
        return
    rows = batches.select("file_sha256", "batch_id", "table_name", "source_file").with_columns(
        pl.lit(at, dtype=pl.Datetime("us")).alias("rolled_back_at"), pl.lit(target).alias("rollback_target"),
        pl.lit(None, dtype=pl.String).alias("reloaded_as"))
    con.register("_rolled_back_in", rows.to_arrow())
    try:
        con.execute("INSERT INTO meta_rolled_back BY NAME SELECT * FROM _rolled_back_in")
    finally:
        con.unregister("_rolled_back_in")


def mark_reloaded(con: duckdb.DuckDBPyConnection, sha: str, batch_id: str) -> None:
    """Content once rolled back, loaded again on purpose as ``batch_id``: no longer refused."""
    con.execute("UPDATE meta_rolled_back SET reloaded_as = ? WHERE file_sha256 = ? AND reloaded_as IS NULL",
                [batch_id, sha])
