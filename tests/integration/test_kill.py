"""A load killed with SIGKILL at any point leaves the warehouse exactly as it was,
and rerunning it gives the same content as an uninterrupted run.

Real processes: `python -m ketaoutcomes ingest` is started with a failpoint
(ketaoutcomes.failpoints) that freezes it at a named point; the test waits for
the marker file, sends SIGKILL, and compares content hashes of every table.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from ketaoutcomes.failpoints import NAMES
from ketaoutcomes.pipeline import simulate_step
from ketaoutcomes.settings import SimulationSettings
from ketaoutcomes.warehouse import fetch, read_connection

pytestmark = pytest.mark.slow


def content_hash(db: Path) -> str:
    """Hash of every table's content (order-independent), less what is provenance only:
    load times, step timings."""
    con = read_connection(db)
    try:
        names = sorted(r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall())
        h = hashlib.sha256()
        for n in names:
            if n == "meta_steps":  # run log: timings differ between runs by nature
                continue
            frame = fetch(con, f'SELECT * FROM "{n}"')
            frame = frame.drop([c for c in ("loaded_at",) if c in frame.columns])
            h.update(n.encode() + frame.sort(frame.columns, nulls_last=True).write_csv().encode())
        return h.hexdigest()
    finally:
        con.close()


def ingest(db: Path, folder: Path, *, failpoint: str | None = None, marker: Path | None = None) -> subprocess.Popen:
    # TMPDIR: a killed ingest leaves its scratch folder behind; in the test's folder, not the system's
    env = {**os.environ, "KETAOUTCOMES_DB": str(db), "TMPDIR": str(db.parent)}
    env.pop("KETAOUTCOMES_FAILPOINT", None)
    if failpoint:
        env["KETAOUTCOMES_FAILPOINT"] = failpoint
        env["KETAOUTCOMES_FAILPOINT_MARKER"] = str(marker)
    return subprocess.Popen([sys.executable, "-m", "ketaoutcomes", "ingest", str(folder)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ingest_ok(db: Path, folder: Path) -> None:
    proc = ingest(db, folder)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> tuple[Path, Path]:
    """v1, and v2: a corrected re-delivery (one patient's age, a few scores changed)."""
    root = tmp_path_factory.mktemp("kill")
    v1 = root / "v1"
    simulate_step(SimulationSettings(n_patients=300, seed=9), v1)
    v2 = root / "v2"
    shutil.copytree(v1, v2)
    pts = pl.read_csv(v2 / "patients.csv", infer_schema=False)
    pts.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("61")).otherwise("age_at_index")
                     .alias("age_at_index")).write_csv(v2 / "patients.csv")
    ms = pl.read_csv(v2 / "mood_scores.csv", infer_schema=False)
    ms.with_columns(pl.when(pl.int_range(pl.len()) < 5).then(pl.lit("20")).otherwise("total_score")
                    .alias("total_score")).write_csv(v2 / "mood_scores.csv")
    return v1, v2


@pytest.fixture(scope="module")
def reference(tmp_path_factory, exports) -> str:
    """Content after v1 then v2, uninterrupted."""
    db = tmp_path_factory.mktemp("ref") / "w.duckdb"
    ingest_ok(db, exports[0])
    ingest_ok(db, exports[1])
    return content_hash(db)


@pytest.mark.parametrize("point", NAMES)
def test_kill_9_leaves_the_warehouse_as_it_was_and_rerun_matches(point, tmp_path, exports, reference):
    v1, v2 = exports
    db = tmp_path / "w.duckdb"
    ingest_ok(db, v1)
    before = content_hash(db)
    before_bytes = db.read_bytes()

    marker = tmp_path / "marker"
    proc = ingest(db, v2, failpoint=point, marker=marker)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, f"process ended before reaching {point}: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"{point} not reached in time"
        time.sleep(0.1)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    assert db.read_bytes() == before_bytes  # not a byte of the published file changed
    assert content_hash(db) == before

    ingest_ok(db, v2)  # the rerun removes the killed writer's staging file and loads
    assert content_hash(db) == reference
    assert not [p.name for p in tmp_path.iterdir() if ".staging-" in p.name]
