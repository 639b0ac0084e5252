"""The optional clinical_events table of the import format (issue 11, part 5: the source of a target
trial's negative-control outcomes), through ingest and validation. Checked against the contract
(ketaoutcomes.contract.CLINICAL_EVENTS) and the rules every other table follows: an export without
the file loads exactly as before; a bad row is quarantined with its row, column and rule, never its
value; a whole-file problem refuses the export in one line naming the file and the column; the
PHI guard scans the file. (Its validation: tests/unit/test_validate.py and, nightly,
tests/integration/test_validate_changed_rows.py; its staging: tests/integration/test_staging_update.py.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ketaoutcomes.contract import OPTIONAL_TABLES, polars_schema
from ketaoutcomes.ingest import IngestError, ingest_export
from ketaoutcomes.warehouse import write_session
from tests.conftest import TINY, query_db, tables_hash, write_export

WHEN = dt.datetime(2026, 1, 1, 12, 0)
HEADER = "event_id,patient_id,event_date,event_type"
EVENTS = HEADER + "\nE1,P1,2024-02-10,fracture\nE2,P2,2024-03-02,ed_visit\nE3,P3,2024-03-10,ed_visit\n"


def load(db: Path, folder: Path):
    with write_session(db) as con:
        return ingest_export(con, folder, loaded_at=WHEN)


def _others(db: Path) -> str:
    """The content of every table but those of clinical_events and the batches' own bookkeeping."""
    return tables_hash(db, "(table_name LIKE 'stg_%' OR table_name LIKE 'raw_%' OR table_name LIKE 'ref_%' "
                           "OR table_name = 'quarantine') AND table_name NOT LIKE '%clinical_events'")


def test_the_table_is_optional_and_an_export_without_it_loads_as_before(tmp_path):
    assert OPTIONAL_TABLES == ("clinical_events",)
    without = tmp_path / "without.duckdb"
    s = load(without, write_export(tmp_path / "a"))
    assert [f.table for f in s.files] == ["patients", "courses", "sessions", "adverse_events", "mood_scores"]
    assert query_db(without, "SELECT count(*) AS n FROM meta_batches WHERE table_name = 'clinical_events'")["n"][0] == 0
    stg = query_db(without, "SELECT * EXCLUDE (_row_number, _batch_id) FROM stg_clinical_events")
    assert stg.height == 0 and dict(stg.schema) == polars_schema("clinical_events")
    # the same export with the file: every other table holds the same rows
    with_it = tmp_path / "with.duckdb"
    s = load(with_it, write_export(tmp_path / "b", {**TINY, "clinical_events.csv": EVENTS}))
    assert {f.table: (f.rows_read, f.rows_loaded) for f in s.files}["clinical_events"] == (3, 3)
    assert _others(with_it) == _others(without)
    got = query_db(with_it, "SELECT event_id, patient_id, event_date, event_type FROM stg_clinical_events ORDER BY event_id")
    assert got["event_date"].to_list() == [dt.date(2024, 2, 10), dt.date(2024, 3, 2), dt.date(2024, 3, 10)]


def test_bad_rows_are_quarantined_naming_row_column_and_rule_never_the_value(tmp_path):
    bad = (HEADER + "\nE1,P1,2024-02-10,fracture\n"
           "E2,P9,2024-03-02,ed_visit\n"                                # row 2: no such patient
           "E3,P3,2024-13-45,ed_visit\n"                                # row 3: not a date
           "E4,P3,2024-03-10,fell on the stairs at home while cooking\n"  # row 4: free text, not a code
           "E5,P3,2024-03-11,\n"                                        # row 5: no event type
           "E1,P1,2024-02-11,fracture\n")                               # row 6: E1 again, other date
    db = tmp_path / "w.duckdb"
    s = load(db, write_export(tmp_path / "x", {**TINY, "clinical_events.csv": bad}))
    f = next(f for f in s.files if f.table == "clinical_events")
    assert (f.rows_read, f.rows_loaded, f.rows_quarantined) == (6, 0, 6)
    qu = query_db(db, "SELECT row_number, column_name, rule, reason FROM quarantine WHERE table_name = 'clinical_events' "
                      "ORDER BY row_number, rule")
    assert qu.select("row_number", "column_name", "rule").rows() == [
        (1, "event_id", "duplicate_conflict"), (2, "patient_id", "orphan"), (3, "event_date", "type"),
        (4, "event_type", "not_a_code"), (5, "event_type", "required_missing"), (6, "event_id", "duplicate_conflict")]
    assert "patients" in qu["reason"][1] and "P9" not in qu["reason"][1]
    assert not any("stairs" in r or "2024-13-45" in r for r in qu["reason"])
    assert query_db(db, "SELECT count(*) AS n FROM stg_clinical_events")["n"][0] == 0


def test_a_missing_required_column_refuses_the_export_in_one_line_and_writes_nothing(tmp_path):
    db = tmp_path / "w.duckdb"
    load(db, write_export(tmp_path / "v1"))
    before = tables_hash(db, "true")
    no_type = HEADER.replace(",event_type", ",kind") + "\nE1,P1,2024-02-10,fracture\n"
    with pytest.raises(IngestError) as err:
        load(db, write_export(tmp_path / "bad", {"clinical_events.csv": no_type}))
    text = str(err.value)
    assert "\n" not in text and "clinical_events.csv" in text and "required column(s) event_type missing" in text
    assert tables_hash(db, "true") == before


def test_a_misnamed_file_is_an_error_and_identifiers_are_refused(tmp_path):
    with pytest.raises(IngestError, match=r"clinical-events\.csv looks like table clinical_events"):
        load(tmp_path / "w.duckdb", write_export(tmp_path / "m", {**TINY, "clinical-events.csv": EVENTS}))
    leaked = EVENTS + "E4,P1,2024-03-12,jane.doe@example.com\n"
    with pytest.raises(IngestError) as err:
        load(tmp_path / "w2.duckdb", write_export(tmp_path / "p", {**TINY, "clinical_events.csv": leaked}))
    assert "clinical_events.csv: column event_type" in str(err.value) and "jane.doe" not in str(err.value)


def test_a_rollback_of_the_clinical_events_batch_restores_the_warehouse_before_it(tmp_path):
    """Checked against the warehouse before the batch: every stg_/raw_/ref_ table, the quarantine and
    the batches hold the same rows again (stg_clinical_events empty), and the content is refused on
    a later ingest as any rolled-back file is."""
    from ketaoutcomes.pipeline import ingest_step, rollback_step

    db = tmp_path / "w.duckdb"
    ingest_step(db, write_export(tmp_path / "v1"))
    before = tables_hash(db, "table_name LIKE 'stg_%' OR table_name LIKE 'raw_%' OR table_name LIKE 'ref_%' "
                             "OR table_name IN ('quarantine', 'meta_batches')")
    out = ingest_step(db, write_export(tmp_path / "n1", {"clinical_events.csv": EVENTS}))
    (batch,) = [f["batch_id"] for f in out.details["files"] if not f["skipped"]]
    assert query_db(db, "SELECT count(*) AS n FROM stg_clinical_events")["n"][0] == 3
    rollback_step(db, batch)
    assert tables_hash(db, "table_name LIKE 'stg_%' OR table_name LIKE 'raw_%' OR table_name LIKE 'ref_%' "
                           "OR table_name IN ('quarantine', 'meta_batches')") == before
    with pytest.raises(IngestError, match=r"clinical_events\.csv.*rolled back"):
        ingest_step(db, write_export(tmp_path / "n2", {"clinical_events.csv": EVENTS}))
