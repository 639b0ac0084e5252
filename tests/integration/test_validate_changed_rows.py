"""The nightly validation of the changed rows only (issue 12, "incremental nightly runs").

`validate --changed-only` (and the nightly ingest flow) checks the rows that batches loaded since
the last validation that passed added or changed, and the sessions of a course those batches
changed; checked against a validation of every row of the same data, which must give the same
verdict and find the same failing rows. When there is nothing to build on (no earlier validation,
a rollback, other registries) it checks every row. An analysis never stands on it alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketaoutcomes.pipeline import ingest_step, rollback_step, validate_step
from ketaoutcomes.step_records import fresh_state
from ketaoutcomes.validate import ValidationFailed
from tests.conftest import TINY, copy_warehouse, query_db, write_export

COURSES_HEADER = TINY["courses.csv"].splitlines()[0]
#: C1 ends on 2024-01-09: its session S2 (2024-01-11) is then more than a day after the course's end.
C1_SHORTER = COURSES_HEADER + "\nC1,P1,ketamine_iv,ketamine,2024-01-08,2024-01-09,completed,false,false\n"
#: Clinical events (the optional table the first export left out), first delivered on a later night.
EVENTS = ("event_id,patient_id,event_date,event_type\nE1,P1,2024-02-10,fracture\nE2,P2,2024-03-02,ed_visit\n"
          "E3,P3,2024-03-10,ed_visit\n")
#: A new rating of P3, nothing else.
NEW_RATING = TINY["mood_scores.csv"].splitlines()[0] + "\nP3,2024-03-20 10:00,MADRS,18,1,clinician\n"


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> Path:
    """The tiny export, ingested and validated (every row)."""
    root = tmp_path_factory.mktemp("changed")
    db = root / "w.duckdb"
    ingest_step(db, write_export(root / "v1"))
    assert validate_step(db).details["scope"] == "all"
    return db


def _deliver(db: Path, folder: Path, files: dict[str, str]) -> list[str]:
    out = ingest_step(db, write_export(folder, files))
    return [f["batch_id"] for f in out.details["files"] if not f["skipped"]]


def _last_validation(db: Path) -> dict:
    row = query_db(db, "SELECT details FROM meta_steps WHERE step = 'validate' ORDER BY seq DESC LIMIT 1")
    return json.loads(row["details"][0])


def test_a_new_rating_is_checked_alone_and_the_analysis_still_wants_every_row(validated, tmp_path):
    db = copy_warehouse(validated, tmp_path)
    (batch,) = _deliver(db, tmp_path / "night", {"mood_scores.csv": NEW_RATING})
    out = validate_step(db, changed_only=True)
    d = out.details
    assert d["scope"] == "changed" and d["new_batches"] == [batch]
    assert d["rows_checked"] == {"patients": 0, "courses": 0, "sessions": 0, "adverse_events": 0, "mood_scores": 1,
                                 "clinical_events": 0}
    assert "on the 1 row(s) that 1 new batch(es) added or changed" in out.message
    # the stored counts are over that one row
    res = query_db(db, f"SELECT * FROM validation_results WHERE run_id = '{d['run_id']}' AND \"table\" = 'mood_scores' "
                       "AND expectation_type = 'expect_column_values_to_not_be_null'")
    assert res.height and set(res["element_count"].to_list()) == {1}
    # the analysis (and the report) stand on a validation of every row: this one does not count
    assert fresh_state(db)["validated"] is False
    full = validate_step(db, force=False)
    assert full.ran and full.details["scope"] == "all" and fresh_state(db)["validated"] is True


def test_a_corrected_course_rechecks_its_sessions_and_fails_as_a_full_validation_does(validated, tmp_path):
    db = copy_warehouse(validated, tmp_path)
    (batch,) = _deliver(db, tmp_path / "night", {"courses.csv": C1_SHORTER})
    with pytest.raises(ValidationFailed) as changed:
        validate_step(db, changed_only=True)
    d = _last_validation(db)
    assert d["scope"] == "changed" and d["new_batches"] == [batch]
    # the corrected course and its two sessions (S1, S2), though no session was delivered
    assert d["rows_checked"]["courses"] == 1 and d["rows_checked"]["sessions"] == 2
    with pytest.raises(ValidationFailed) as full:
        validate_step(db)
    assert _last_validation(db)["scope"] == "all"

    def failing(exc) -> list[tuple]:
        return sorted(exc.value.result.critical_failures.select(
            "table", "rule_id", "unexpected_count", "example_row_numbers").rows())

    assert failing(changed) == failing(full)
    assert [r[:3] for r in failing(full)] == [("sessions", "sessions.session_ts.not_after_course_end", 1)]


def test_the_first_validation_checks_every_row(tmp_path):
    db = tmp_path / "fresh.duckdb"
    ingest_step(db, write_export(tmp_path / "v1"))
    assert validate_step(db, changed_only=True).details["scope"] == "all"


def test_after_a_rollback_it_builds_on_a_validation_of_batches_still_in_force(validated, tmp_path):
    # the validation of the rolled-back batch no longer applies: the one before it does
    db = copy_warehouse(validated, tmp_path)
    before = _last_validation(db)["run_id"]
    (first,) = _deliver(db, tmp_path / "n1", {"mood_scores.csv": NEW_RATING})
    rolled_back = validate_step(db, changed_only=True).details["run_id"]
    rollback_step(db, first)
    (second,) = _deliver(db, tmp_path / "n2", {"courses.csv": TINY["courses.csv"].replace("2024-04-30", "2024-05-01")})
    d = validate_step(db, changed_only=True).details
    assert d["scope"] == "changed" and d["base_run_id"] == before != rolled_back and d["new_batches"] == [second]
    # the re-delivered courses file (3 rows) and their 4 sessions; not the rating rolled back
    assert d["rows_checked"] == {"patients": 0, "courses": 3, "sessions": 4, "adverse_events": 0, "mood_scores": 0,
                                 "clinical_events": 0}


def test_other_registries_mean_every_row(validated, tmp_path):
    db = copy_warehouse(validated, tmp_path)
    arms = ("arm,label,route,drug_class,is_ketamine,session_based,dose_min_mg,dose_max_mg,dose_max_mg_per_kg,"
            "description\nect,Electroconvulsive therapy,device,ect,false,true,0,1,,\n")
    _deliver(db, tmp_path / "night", {"arms.csv": arms, "mood_scores.csv": NEW_RATING})
    assert validate_step(db, changed_only=True).details["scope"] == "all"


def test_clinical_events_first_delivered_on_a_later_night_are_checked_alone(validated, tmp_path):
    """The first export had no clinical_events (its empty stg_clinical_events passed): a later
    night's events are the only rows checked, by the table's rules (required values, key, the
    patient reference), and pass."""
    db = copy_warehouse(validated, tmp_path)
    (batch,) = _deliver(db, tmp_path / "night", {"clinical_events.csv": EVENTS})
    out = validate_step(db, changed_only=True)
    assert out.details["scope"] == "changed" and out.details["new_batches"] == [batch]
    assert out.details["rows_checked"] == {"patients": 0, "courses": 0, "sessions": 0, "adverse_events": 0,
                                           "mood_scores": 0, "clinical_events": 3}
    res = query_db(db, f"SELECT rule_id, success FROM validation_results WHERE run_id = "
                       f"'{out.details['run_id']}' AND \"table\" = 'clinical_events'")
    assert {"clinical_events.event_type.not_null", "clinical_events.key_unique",
            "clinical_events.patient_id.reference"} <= set(res["rule_id"])
    assert res["success"].all()
