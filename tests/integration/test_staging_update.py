"""stg_* after an ingest is updated for the keys of the new batches only (ingest.staging), and must
be what rebuilding it from every delivered row gives (ingest.load.staging_sql): the same rows in
the same order, after corrections, new rows, a re-delivery of superseded content, a delivery whose
rows are all quarantined, and a table no delivery touched; and the optional clinical_events,
delivered first on a later night (the first export had none: stg_clinical_events empty), then
corrected."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from ketaoutcomes.contract import TABLE_ORDER
from ketaoutcomes.ingest.load import staging_sql
from ketaoutcomes.pipeline import ingest_step
from ketaoutcomes.warehouse import fetch, read_connection, write_session
from tests.conftest import TINY, write_export

MOOD_HEADER = TINY["mood_scores.csv"].splitlines()[0]
EVENTS_HEADER = "event_id,patient_id,event_date,event_type"
NIGHTS = [
    # C1 corrected (end date), C2 unchanged in a new batch, C3 left out: C3 keeps its first-load row
    {"courses.csv": "\n".join(TINY["courses.csv"].splitlines()[:3]).replace("2024-01-26", "2024-01-27") + "\n"},
    # a new rating and a corrected one
    {"mood_scores.csv": MOOD_HEADER + "\nP3,2024-03-20 10:00,MADRS,18,1,clinician\n"
                                      "P1,2024-01-12 10:00,MADRS,15,0,clinician\n"},
    # the first courses file again: a re-delivery that undoes the correction
    {"courses.csv": TINY["courses.csv"]},
    # every row quarantined (an unknown instrument): the batch exists, stg_mood_scores does not change
    {"mood_scores.csv": MOOD_HEADER + "\nP2,2024-05-01 10:00,NOPE,18,1,clinician\n"},
    # clinical events, first delivered now: one of them an orphan (quarantined)
    {"clinical_events.csv": EVENTS_HEADER + "\nE1,P1,2024-02-10,fracture\nE2,P2,2024-03-02,ed_visit\n"
                                            "E3,P9,2024-03-03,ed_visit\n"},
    # E2 corrected (its type), E4 new; E1 left out keeps its row
    {"clinical_events.csv": EVENTS_HEADER + "\nE2,P2,2024-03-02,infection\nE4,P3,2024-04-01,fracture\n"},
    # patients: one corrected, one new
    {"patients.csv": TINY["patients.csv"].splitlines()[0] + "\nP2,A,M,53,1,MDD,\nP4,B,F,30,2,MDD,60\n"},
]


def _stg(db: Path) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """Per table: stg_<table> as stored (scan order) and as a rebuild from raw_<table> gives it."""
    con = read_connection(db)
    try:
        return {t: (fetch(con, f"SELECT * FROM stg_{t}"), fetch(con, staging_sql(t))) for t in TABLE_ORDER}
    finally:
        con.close()


def test_each_delivery_updates_stg_as_a_rebuild_would(tmp_path):
    db = tmp_path / "w.duckdb"
    ingest_step(db, write_export(tmp_path / "v1"))
    first = _stg(db)["clinical_events"][0]
    assert first.height == 0 and {"event_id", "patient_id", "event_date", "event_type"} <= set(first.columns)
    for i, files in enumerate(NIGHTS):
        before = _stg(db)
        ingest_step(db, write_export(tmp_path / f"n{i}", files))
        after = _stg(db)
        for t, (stored, rebuilt) in after.items():
            assert_frame_equal(stored, rebuilt, check_exact=True), (i, t)
            if f"{t}.csv" not in files:  # a table this night did not deliver is not touched
                assert_frame_equal(stored, before[t][0], check_exact=True)
    stored = _stg(db)
    assert stored["mood_scores"][0].filter(pl.col("patient_id") == "P1")["total_score"].to_list() == [32, 20, 15]
    assert stored["courses"][0]["end_date"].cast(pl.String).to_list()[0] == "2024-01-26"  # the re-delivery
    assert stored["patients"][0]["patient_id"].to_list() == ["P1", "P3", "P2", "P4"]  # load order
    events = stored["clinical_events"][0]
    assert events.select("event_id", "event_type").rows() == [("E1", "fracture"), ("E2", "infection"), ("E4", "fracture")]


def test_a_staging_table_of_another_shape_is_rebuilt(tmp_path):
    """A warehouse whose stg_patients is a table that lacks a column raw_patients has (written by an
    earlier version, before stg_<table> of one batch was a view): the next ingest of patients
    rebuilds it instead of appending to it."""
    db = tmp_path / "w.duckdb"
    ingest_step(db, write_export(tmp_path / "v1"))
    with write_session(db) as con:
        con.execute("DROP VIEW stg_patients")
        con.execute("CREATE TABLE stg_patients AS SELECT * EXCLUDE (_load_seq, weight_kg) FROM raw_patients")
    ingest_step(db, write_export(tmp_path / "n", NIGHTS[-1]))
    stored, rebuilt = _stg(db)["patients"]
    assert "weight_kg" in stored.columns
    assert_frame_equal(stored, rebuilt, check_exact=True)


def test_stg_is_a_view_of_a_first_batch_and_a_table_once_a_second_comes(tmp_path):
    """While raw_<table> holds one batch, stg_<table> is a view of it (not a second copy); the
    first batch that adds to it makes stg_<table> a table, equal to the rebuild; a rollback to one
    batch makes it a view again; a table left untouched stays a view throughout."""
    from ketaoutcomes.pipeline import rollback_step
    from ketaoutcomes.warehouse import relation_kind

    db = tmp_path / "w.duckdb"
    ingest_step(db, write_export(tmp_path / "v1"))

    def kinds() -> dict[str, str | None]:
        con = read_connection(db)
        try:
            return {t: relation_kind(con, f"stg_{t}") for t in TABLE_ORDER}
        finally:
            con.close()

    assert set(kinds().values()) == {"view"}
    first = _stg(db)
    assert all(stored.equals(rebuilt) for stored, rebuilt in first.values())
    ingest_step(db, write_export(tmp_path / "n0", NIGHTS[0]))
    assert kinds() == {t: "table" if t == "courses" else "view" for t in TABLE_ORDER}
    for table, (stored, rebuilt) in _stg(db).items():
        assert_frame_equal(stored, rebuilt, check_row_order=True), table
    con = read_connection(db)
    try:
        night = con.execute("SELECT batch_id FROM meta_batches WHERE table_name = 'courses' ORDER BY load_seq DESC "
                            "LIMIT 1").fetchone()[0]
    finally:
        con.close()
    rollback_step(db, night)
    assert set(kinds().values()) == {"view"}
    after = _stg(db)
    for table in TABLE_ORDER:
        assert_frame_equal(after[table][0], first[table][0], check_row_order=True)


def test_first_load_of_a_table_over_several_row_groups_leaves_no_free_blocks(tmp_path):
    """A first load is written on every thread (raw_<table> from the typed file, stg_<table> from
    raw_<table>): 250,000 ratings, three typed row groups and more, must come out as one copy each,
    in _row_number order, with no free block in the published file. Checked against the write on
    one thread: a typed file of row groups of 122,880 rows or more left a remainder per row group
    that the checkpoint rewrote, a third more file."""
    import datetime as dt

    import duckdb

    n = 250_000
    start = dt.datetime(2024, 1, 7, 10)
    lines = [MOOD_HEADER] + [f"P{1 + i % 3},{start + dt.timedelta(minutes=i):%Y-%m-%d %H:%M},MADRS,{10 + i % 40},1,clinician"
                             for i in range(n)]
    db = tmp_path / "w.duckdb"
    ingest_step(db, write_export(tmp_path / "big", {**TINY, "mood_scores.csv": "\n".join(lines) + "\n"}))
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT free_blocks FROM pragma_database_size()").fetchone()[0] == 0
        raw = con.execute("SELECT _row_number FROM raw_mood_scores").fetchnumpy()["_row_number"].tolist()
        stg = con.execute("SELECT _row_number FROM stg_mood_scores").fetchnumpy()["_row_number"].tolist()
        assert len(raw) > 240_000 and raw == sorted(raw) and stg == raw
        assert con.execute("SELECT count(*) FROM (SELECT * EXCLUDE (_load_seq) FROM raw_mood_scores "
                           "EXCEPT ALL SELECT * FROM stg_mood_scores)").fetchone()[0] == 0
    finally:
        con.close()
