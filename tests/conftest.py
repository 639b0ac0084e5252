"""Shared fixtures: a tiny hand-written export in the import format."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from ketaoutcomes.warehouse import fetch, read_connection

# No telemetry from any library: the machines have no internet.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

TINY = {
    "patients.csv": """patient_id,site,sex,age_at_index,prior_failed_trials,diagnosis,weight_kg
P1,A,F,45,3,MDD,70
P2,A,M,52,1,MDD,
P3,B,F,90,5,bipolar_depression,61.5
""",
    "courses.csv": """course_id,patient_id,arm,drug,start_date,end_date,end_reason,concomitant_ssri,concomitant_benzodiazepine
C1,P1,ketamine_iv,ketamine,2024-01-08,2024-01-26,completed,false,false
C2,P2,ssri,sertraline,2024-02-01,2024-04-30,completed,false,true
C3,P3,esketamine_intranasal,esketamine,2024-03-04,,ongoing,true,false
""",
    "sessions.csv": """session_id,course_id,session_ts,dose_mg,dose_mg_per_kg,infusion_minutes,phase,sbp_pre,dbp_pre,hr_pre,sbp_peak,dbp_peak,hr_peak,dissociation_score
S1,C1,2024-01-08 09:00,35,0.5,40,induction,128,80,72,140,88,80,12
S2,C1,2024-01-11 09:00,35,0.5,40,induction,125,78,70,138,85,78,8
S3,C2,2024-02-01 10:00,50,,,induction,,,,,,,
S4,C3,2024-03-04 11:00,56,,,induction,130,82,75,150,90,82,20
""",
    "adverse_events.csv": """ae_id,session_id,ae_type,severity
AE1,S1,dissociation,mild
AE2,S4,nausea,moderate
""",
    "mood_scores.csv": """patient_id,assessed_at,instrument,total_score,si_item_score,rater
P1,2024-01-07 10:00,MADRS,32,2,clinician
P1,2024-01-09 10:00,MADRS,20,1,clinician
P1,2024-01-12 10:00,MADRS,14,0,clinician
P2,2024-01-30 10:00,MADRS,30,2,clinician
P2,2024-03-01 10:00,MADRS,14,1,clinician
P3,2024-03-01 10:00,MADRS,36,3,clinician
P3,2024-03-06 10:00,MADRS,30,2,clinician
""",
}


def write_export(folder: Path, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or TINY).items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def tiny_export(tmp_path: Path) -> Path:
    return write_export(tmp_path / "export")


def copy_warehouse(db: Path, tmp_path: Path) -> Path:
    """A copy of warehouse ``db`` in a folder of its own under ``tmp_path`` (a test's own, of a
    warehouse a module-scoped fixture built once)."""
    copy = tmp_path / "wh" / db.name
    copy.parent.mkdir()
    shutil.copyfile(db, copy)
    return copy


def query_db(db: Path, sql: str) -> pl.DataFrame:
    """Run SQL read-only against a warehouse file."""
    con = read_connection(db)
    try:
        return fetch(con, sql)
    finally:
        con.close()


def tables_hash(db: Path, where: str) -> str:
    """sha256 of the content of the warehouse tables whose ``table_name`` satisfies the SQL ``where``,
    each table's rows sorted (order-independent): two warehouses hash equal when those tables hold
    the same rows."""
    con = read_connection(db)
    try:
        names = sorted(r[0] for r in con.execute(
            f"SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND ({where})").fetchall())
        h = hashlib.sha256()
        for n in names:
            frame = fetch(con, f'SELECT * FROM "{n}"')
            h.update(n.encode() + frame.sort(frame.columns).write_csv().encode())
        return h.hexdigest()
    finally:
        con.close()


def write_case(folder: Path, name: str, toml: str, files: dict[str, bytes]) -> None:
    """Write corpus case ``name`` under ``folder`` (replacing an older one): its case.toml and files."""
    d = folder / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    (d / "case.toml").write_text(toml.strip() + "\n")
    for fname, data in files.items():
        (d / fname).write_bytes(data)
