"""Ingest: typed load, per-row quarantine with reasons, idempotence, supersession, whole-file errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from ketaoutcomes.ingest import IngestError, ingest_export
from ketaoutcomes.warehouse import write_session
from tests.conftest import TINY, query_db, tables_hash, write_export

WHEN = dt.datetime(2026, 1, 1, 12, 0)


def load(db: Path, folder: Path):
    with write_session(db) as con:
        return ingest_export(con, folder, loaded_at=WHEN)


q = query_db


def content_hash(db: Path) -> str:
    """Hash of the content of every stg_/raw_/meta_batches/quarantine table, order-independent."""
    return tables_hash(db, "table_name LIKE 'stg_%' OR table_name LIKE 'raw_%' OR table_name IN ('meta_batches', 'quarantine')")


def test_clean_export_loads_every_row_typed(tmp_path, tiny_export):
    db = tmp_path / "w.duckdb"
    s = load(db, tiny_export)
    counts = {f.table: (f.rows_read, f.rows_loaded, f.rows_quarantined) for f in s.files}
    assert counts == {"patients": (3, 3, 0), "courses": (3, 3, 0), "sessions": (4, 4, 0),
                      "adverse_events": (2, 2, 0), "mood_scores": (7, 7, 0)}
    pts = q(db, "SELECT * FROM stg_patients ORDER BY patient_id")
    assert pts.schema["age_at_index"] == pl.Int32 and pts["weight_kg"].to_list() == [70.0, None, 61.5]
    assert q(db, "SELECT typeof(session_ts) t FROM stg_sessions LIMIT 1")["t"][0] == "TIMESTAMP"
    assert q(db, "SELECT count(*) n FROM ref_arms")["n"][0] == 6


def test_same_export_twice_changes_nothing(tmp_path, tiny_export):
    db = tmp_path / "w.duckdb"
    load(db, tiny_export)
    before = content_hash(db)
    s = load(db, tiny_export)
    assert all(f.skipped for f in s.files) and not s.changed
    assert content_hash(db) == before


def test_bad_cells_are_quarantined_with_row_and_reason(tmp_path):
    files = dict(TINY)
    files["patients.csv"] = TINY["patients.csv"] + "P4,A,F,forty,2,MDD,70\nP5,A,F,33.5,2,MDD,70\n,A,F,40,1,MDD,70\n"
    files["mood_scores.csv"] = TINY["mood_scores.csv"] + "P1,2024-01-20 10:00,MADRS,NaN,,clinician\nP1,not a date,MADRS,10,,clinician\n"
    db = tmp_path / "w.duckdb"
    s = load(db, write_export(tmp_path / "x", files))
    pf = next(f for f in s.files if f.table == "patients")
    assert (pf.rows_read, pf.rows_loaded, pf.rows_quarantined) == (6, 3, 3)
    qu = q(db, "SELECT table_name, row_number, column_name, rule, reason FROM quarantine ORDER BY table_name, row_number")
    pq = qu.filter(pl.col("table_name") == "patients")
    assert pq["row_number"].to_list() == [4, 5, 6]
    assert pq["rule"].to_list() == ["type", "type", "key_missing"]
    assert "age_at_index is not a whole number" in pq["reason"][0]
    assert not any("forty" in r for r in qu["reason"])  # values never copied into reasons
    mq = qu.filter(pl.col("table_name") == "mood_scores")
    assert mq["row_number"].to_list() == [8, 9] and set(mq["column_name"]) == {"total_score", "assessed_at"}
    for f in s.files:
        assert f.rows_read == f.rows_loaded + f.rows_quarantined


def test_missing_required_column_is_a_whole_file_error_and_nothing_is_written(tmp_path, tiny_export):
    db = tmp_path / "w.duckdb"
    load(db, tiny_export)
    before = content_hash(db)
    bad = dict(TINY)
    bad["courses.csv"] = TINY["courses.csv"].replace("arm,", "treatment,", 1)
    folder = write_export(tmp_path / "bad", bad)
    with pytest.raises(IngestError, match=r"courses\.csv: required column\(s\) arm missing"):
        load(db, folder)
    assert content_hash(db) == before


def test_broken_and_empty_files_give_clear_errors(tmp_path):
    files = dict(TINY)
    files["sessions.csv"] = ""
    with pytest.raises(IngestError, match=r"sessions\.csv: the file is empty"):
        load(tmp_path / "w.duckdb", write_export(tmp_path / "e", files))
    files = dict(TINY)
    (tmp_path / "enc").mkdir()
    write_export(tmp_path / "enc", files)
    (tmp_path / "enc" / "patients.csv").write_bytes("patient_id,site\nP\xe9,A\n".encode("latin-1"))
    with pytest.raises(IngestError, match=r"patients\.csv: cannot be read \(.*\): not UTF-8 encoded"):
        load(tmp_path / "w2.duckdb", tmp_path / "enc")
    assert not (tmp_path / "w2.duckdb").exists() or q(tmp_path / "w2.duckdb", "SELECT count(*) n FROM meta_batches")["n"][0] == 0


def test_corrected_redelivery_supersedes_and_keeps_the_old_batch(tmp_path, tiny_export):
    db = tmp_path / "w.duckdb"
    load(db, tiny_export)
    fixed = dict(TINY)
    fixed["patients.csv"] = TINY["patients.csv"].replace("P2,A,M,52,1,MDD,", "P2,A,M,53,1,MDD,80")
    load(db, write_export(tmp_path / "v2", fixed))
    assert q(db, "SELECT age_at_index a, weight_kg w FROM stg_patients WHERE patient_id='P2'").row(0) == (53, 80.0)
    assert q(db, "SELECT count(*) n FROM stg_patients")["n"][0] == 3
    assert q(db, "SELECT count(*) n FROM raw_patients")["n"][0] == 6
    b = q(db, "SELECT table_name, load_seq FROM meta_batches WHERE table_name='patients' ORDER BY load_seq")
    assert b.height == 2


def test_parquet_export_and_ignored_columns(tmp_path, tiny_export):
    """A Parquet export loads; of patients' own columns, one of codes is kept for covariates
    (favourite_colour), one of free text is ignored (comment), and an unrelated file is ignored."""
    folder = tmp_path / "pq"
    folder.mkdir()
    for name in TINY:
        frame = pl.read_csv(tiny_export / name, try_parse_dates=True)
        if name == "patients.csv":
            frame = frame.with_columns(pl.lit("x").alias("favourite_colour"),
                                       pl.lit("seen twice, no change").alias("comment"))
        frame.write_parquet(folder / name.replace(".csv", ".parquet"))
    (folder / "notes.txt").write_text("hello")
    db = tmp_path / "w.duckdb"
    s = load(db, folder)
    pf = next(f for f in s.files if f.table == "patients")
    assert pf.ignored_columns == ("comment",) and s.ignored_files == ("notes.txt",)
    assert q(db, "SELECT DISTINCT _extra FROM stg_patients")["_extra"].to_list() == ['{"favourite_colour":"x"}']
    assert all(f.rows_quarantined == 0 for f in s.files), s.frame()
    assert q(db, "SELECT count(*) n FROM stg_mood_scores")["n"][0] == 7


def test_export_registry_adds_an_arm_without_code(tmp_path, tiny_export):
    (tiny_export / "arms.csv").write_text(
        "arm,label,route,drug_class,is_ketamine,session_based,dose_min_mg,dose_max_mg\n"
        "ect,Electroconvulsive therapy,device,ect,false,true,0,1\n"
    )
    db = tmp_path / "w.duckdb"
    load(db, tiny_export)
    assert "ect" in q(db, "SELECT arm FROM ref_arms")["arm"].to_list()
    assert q(db, "SELECT count(*) n FROM ref_arms")["n"][0] == 7


def test_orphans_of_a_large_file_are_quarantined_not_a_crash():
    """Every row of a file of more than ~16k rows an orphan (a first delivery without patients.csv
    used to end in a ShapeError traceback: polars does not broadcast a scalar filter predicate)."""
    from ketaoutcomes.ingest.rules import Parent, reference_problems

    n = 20_000
    typed = pl.DataFrame({"_row_number": pl.int_range(1, n + 1, eager=True).cast(pl.Int64),
                          "patient_id": [f"P{i}" for i in range(n)]})
    none = pl.DataFrame(schema={"patient_id": pl.String})
    parent = Parent("patients", "patients.csv", none, none,
                    pl.DataFrame(schema={"patient_id": pl.String, "_row_number": pl.Int64}))
    problems = reference_problems("mood_scores", typed, {"patients": parent})
    assert problems.height == n and set(problems["rule"]) == {"orphan"}


def test_a_table_missing_from_a_first_delivery_is_an_error_but_a_redelivery_may_leave_it_out(tmp_path, tiny_export):
    files = {k: v for k, v in TINY.items() if k != "patients.csv"}
    db = tmp_path / "new" / "w.duckdb"
    with pytest.raises(IngestError, match=r"patients\.csv missing") as info:
        load(db, write_export(tmp_path / "no_patients", files))
    assert "\n" not in str(info.value) and not db.exists()
    db = tmp_path / "w.duckdb"
    load(db, tiny_export)  # a first delivery with every table
    s = load(db, write_export(tmp_path / "ratings_only", {"mood_scores.csv": TINY["mood_scores.csv"]}))
    assert [f.table for f in s.files] == ["mood_scores"]


def test_unrelated_files_are_ignored_and_near_misses_are_errors(tmp_path, tiny_export):
    for name in ("README.txt", "truth.json", ".simulation-settings.json", "notes.md", "codebook.xlsx"):
        (tiny_export / name).write_text("{}")
    (tiny_export / "phi_allowlist.toml").write_text("")
    s = load(tmp_path / "w.duckdb", tiny_export)
    assert s.ignored_files == ("README.txt", "codebook.xlsx", "notes.md")
    for name, meant in (("mood-scores.csv", "mood_scores"), ("Patients.CSV", "patients"), ("patient.csv", "patients"),
                        ("courses.txt", "courses"), ("sessions_2024.csv", "sessions"), ("Arms.csv", "arms")):
        folder = write_export(tmp_path / name.replace(".", "_"))
        (folder / name).write_text("x\n")
        with pytest.raises(IngestError, match=rf"{name} looks like .*{meant}") as info:
            load(tmp_path / "w.duckdb", folder)
        assert "\n" not in str(info.value)
