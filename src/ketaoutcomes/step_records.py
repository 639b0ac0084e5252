"""What the pipeline's steps have done, and what is up to date.

Each step records itself in ``meta_steps`` (:func:`record_step`) with a *fingerprint* of what its
output depends on: the data (:func:`data_fingerprint`: batches in force and registries), the code
(:func:`code_version`) and, for analyses, the study settings. :func:`fresh_state` reads, on a
read-only connection, whether the validation and the analysis of the published snapshot are current.
:mod:`ketaoutcomes.pipeline` runs the steps; this module only reads and writes their records.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import duckdb

from ketaoutcomes import __version__
from ketaoutcomes.ingest.load import load_registries_from_warehouse
from ketaoutcomes.settings import StudySettings
from ketaoutcomes.warehouse import fetch_rows, read_connection

__all__ = ["code_version", "step_hash", "data_fingerprint", "batches_in_force", "record_step", "last_step",
           "fresh_state", "last_validation", "validation_base", "validation_status"]


@functools.cache
def code_version() -> str:
    """Package version plus the git commit (and '+dirty') when run from a checkout.

    Read once per process: the code a process runs is the code it imported."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def step_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def data_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """Hash of the batches in force and the registries: changes whenever the data does."""
    return step_hash(",".join(batches_in_force(con)), load_registries_from_warehouse(con).fingerprint)


def batches_in_force(con: duckdb.DuckDBPyConnection) -> list[str]:
    """meta_batches.batch_id of the batches in force, in load order."""
    return [r["batch_id"] for r in fetch_rows(con, "SELECT batch_id FROM meta_batches ORDER BY load_seq")]


def record_step(con, step: str, run_id: str, fingerprint: str, status: str, started: dt.datetime,
                 seconds: float, details: dict, settings_id: str | None = None) -> None:
    """One row of meta_steps per distinct run: a run identical to an earlier row (same step,
    run_id, fingerprint, settings, status, code version and details, e.g. an ingest of files
    already loaded or a re-validation of unchanged data) adds 1 to that row's ``runs`` and
    moves its ``started_at``, ``seconds`` and ``seq`` to this run, so repeated no-ops do not
    grow the table. ``details["batches"]`` (the batches in force) is what a rollback reads."""
    text = json.dumps(details, default=str, sort_keys=True)
    seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM meta_steps").fetchone()[0]
    same = con.execute(
        "SELECT rowid FROM meta_steps WHERE step = ? AND run_id = ? AND fingerprint = ? AND settings_id IS NOT "
        "DISTINCT FROM ? AND status = ? AND code_version = ? AND details IS NOT DISTINCT FROM ? "
        "ORDER BY started_at DESC LIMIT 1",
        [step, run_id, fingerprint, settings_id, status, code_version(), text]).fetchone()
    if same is not None:
        con.execute("UPDATE meta_steps SET runs = coalesce(runs, 1) + 1, first_started_at = coalesce(first_started_at, "
                    "started_at), started_at = ?, seconds = ?, seq = ? WHERE rowid = ?", [started, seconds, seq, same[0]])
        return
    con.execute(
        "INSERT INTO meta_steps (step, run_id, fingerprint, settings_id, status, code_version, started_at, seconds, "
        "details, runs, first_started_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
        [step, run_id, fingerprint, settings_id, status, code_version(), started, seconds, text, started, seq],
    )


def last_step(con, step: str, fingerprint: str) -> dict | None:
    """The latest run of ``step`` on ``fingerprint`` that was not rolled back."""
    rows = fetch_rows(
        con,
        "SELECT * FROM meta_steps WHERE step = ? AND fingerprint = ? AND status <> 'rolled_back' "
        "ORDER BY started_at DESC, seq DESC NULLS LAST, seconds DESC LIMIT 1",
        [step, fingerprint],
    )
    return rows[0] if rows else None


def fresh_state(db: Path, study: StudySettings | None = None) -> dict[str, Any]:
    """What is up to date in the published snapshot, read on a read-only connection (no writer lock):
    ``validated`` (the last validation of the current data and code passed) and ``analysis`` (the
    run_id of the analysis of the current data with ``study``, validated, else None). Remembered per
    published file (a publish is a new file), so the steps of one ``report`` read it once."""
    try:
        st = Path(db).stat()
    except FileNotFoundError:
        return {"validated": False, "analysis": None}
    return dict(_fresh(str(Path(db).resolve()), (st.st_ino, st.st_size, st.st_mtime_ns), code_version(),
                       None if study is None else study.settings_id))


@functools.lru_cache(maxsize=16)
def _fresh(db: str, snapshot: tuple, code: str, settings_id: str | None) -> tuple[tuple[str, Any], ...]:
    con = read_connection(Path(db))
    try:
        fp_data = data_fingerprint(con)
        validated = validation_status(con, fp_data) == "ok"
        fp = step_hash(fp_data, settings_id, code) if settings_id is not None else None
        analysis = step_hash("analyze", fp) if validated and fp and last_step(con, "analyze", fp) else None
    except duckdb.Error:  # a warehouse of an earlier version: the write session brings it in line
        validated, analysis = False, None
    finally:
        con.close()
    return ("validated", validated), ("analysis", analysis)


#: ``details.scope`` of a validation that checked only the rows that changed since another one.
CHANGED_ROWS = "changed"


def last_validation(con, fingerprint: str, *, every_row: bool = True) -> dict | None:
    """The latest validation on ``fingerprint`` that was not rolled back; with ``every_row``, the
    latest that checked every row (not a nightly check of the changed rows only)."""
    scope = (f" AND coalesce(json_extract_string(details, '$.scope'), 'all') <> '{CHANGED_ROWS}'"
             if every_row else "")
    rows = fetch_rows(
        con,
        "SELECT * FROM meta_steps WHERE step = 'validate' AND fingerprint = ? AND status <> 'rolled_back'"
        f"{scope} ORDER BY started_at DESC, seq DESC NULLS LAST, seconds DESC LIMIT 1",
        [fingerprint],
    )
    return rows[0] if rows else None


def validation_status(con, fp_data: str) -> str | None:
    """'ok' or 'failed': the latest validation of every row of this data with this code; None if none."""
    last = last_validation(con, step_hash(fp_data, code_version()))
    return None if last is None else last["status"]


def validation_base(con, batches: list[str], registries_fingerprint: str) -> dict | None:
    """The latest validation that passed, with this code and these registries, of data the
    current data only adds batches to (its batches in force are all still in force): the rows it
    checked and that no new batch touched need no second look. None when there is none (first
    validation, a rollback since, other registries or code): then every row is checked.

    Returns ``{"run_id": ..., "batches": [...]}``."""
    current = set(batches)
    rows = fetch_rows(
        con,
        "SELECT run_id, details FROM meta_steps WHERE step = 'validate' AND status = 'ok' AND code_version = ? "
        "ORDER BY seq DESC NULLS LAST, started_at DESC LIMIT 50", [code_version()])
    for r in rows:
        d = json.loads(r["details"] or "{}")
        if d.get("registries") == registries_fingerprint and d.get("batches") and set(d["batches"]) <= current:
            return {"run_id": r["run_id"], "batches": list(d["batches"])}
    return None
