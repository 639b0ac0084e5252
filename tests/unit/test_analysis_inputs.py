"""What the analysis reads from the warehouse (ketaoutcomes.analysis_inputs): only the columns it
uses, the sessions (and their adverse events) of each patient's index course, the ratings of the
study's instrument; checked against the whole staged tables on a hand-built warehouse where a
patient has a second course, with sessions and adverse events, and a second instrument is rated:
the narrowed reads hold exactly those rows, and ADSL, ADTTE, the visits and the attrition derived
from them equal those derived from the whole tables."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from ketaoutcomes.analysis.checks import study_problems
from ketaoutcomes.analysis_inputs import ANALYSIS_COLUMNS, analysis_inputs, study_check_data
from ketaoutcomes.derive import derive_all
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import StudySettings

T0 = dt.datetime(2024, 3, 4, 9, 0)


def _warehouse() -> duckdb.DuckDBPyConnection:
    pids = [f"P{i}" for i in range(6)]
    patients = pl.DataFrame({
        "patient_id": pids, "site": ["A", "B"] * 3, "sex": ["F", "M", "F", "M", "F", "M"],
        "age_at_index": [30, 40, 50, 35, 45, 55], "prior_failed_trials": [1, 2, 3, 1, 2, 3],
        "diagnosis": ["MDD"] * 6, "weight_kg": [70.0] * 6,
        "observation_start": [T0.date() - dt.timedelta(days=400)] * 6, "_batch_id": ["b1"] * 6,
        "_row_number": list(range(1, 7)),
    })
    courses, sessions, aes, scores = [], [], [], []
    for i, p in enumerate(pids):
        arm = "ssri" if i % 2 else "ketamine_iv"
        later = [(f"C{i}b", T0 + dt.timedelta(days=40))] if i in (0, 3) else []  # a second course: not analysed
        for cid, start in [(f"C{i}", T0), *later]:
            courses.append({"course_id": cid, "patient_id": p, "arm": arm, "drug": "x", "start_date": start.date(),
                            "end_date": None, "end_reason": None, "concomitant_ssri": False,
                            "concomitant_benzodiazepine": False, "_batch_id": "b1"})
            for k in range(3):
                sid = f"S{cid}-{k}"
                sessions.append({"session_id": sid, "course_id": cid, "session_ts": start + dt.timedelta(days=2 * k),
                                 "dose_mg": 35.0, "dose_mg_per_kg": 0.5, "infusion_minutes": 40.0,
                                 "phase": "maintenance" if k == 2 else "induction", "sbp_pre": 120, "dbp_pre": 80,
                                 "hr_pre": 70, "sbp_peak": 150 + 10 * k, "dbp_peak": 90, "hr_peak": 90,
                                 "dissociation_score": float(3 * k), "_batch_id": "b1"})
                aes.append({"ae_id": f"A{sid}", "session_id": sid, "ae_type": "nausea", "severity": "mild"})
        for d, v in [(-2, 30.0), (7, 20.0 - i), (14, 12.0 - i), (28, 10.0), (50, 25.0), (56, 26.0)]:
            for inst in ("MADRS", "PHQ9"):
                scores.append({"patient_id": p, "assessed_at": T0 + dt.timedelta(days=d, hours=1), "instrument": inst,
                               "total_score": v if inst == "MADRS" else v / 2, "si_item_score": 1.0, "rater": "self"})
    con = duckdb.connect()
    for name, rows in (("patients", patients), ("courses", pl.DataFrame(courses, schema_overrides={"end_date": pl.Date, "end_reason": pl.String})), ("sessions", pl.DataFrame(sessions)),
                       ("adverse_events", pl.DataFrame(aes)), ("mood_scores", pl.DataFrame(scores))):
        frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows)
        con.register("f", frame.to_arrow())
        con.execute(f"CREATE TABLE stg_{name} AS SELECT * FROM f")
        con.unregister("f")
    return con


def test_reads_only_the_rows_and_columns_the_analysis_uses_and_derives_the_same():
    con = _warehouse()
    study = StudySettings()
    full = {t: con.execute(f"SELECT * FROM stg_{t}").pl() for t in ANALYSIS_COLUMNS}
    narrow = analysis_inputs(con, study)

    for table, cols in ANALYSIS_COLUMNS.items():
        assert narrow[table].columns == (full[table].columns if cols is None else list(cols))
    index = {"C0", "C1", "C2", "C3", "C4", "C5"}  # C0b and C3b start later: not index courses
    assert narrow["courses"].height == full["courses"].height == 8
    assert set(narrow["sessions"]["course_id"]) == index and narrow["sessions"].height == 18
    assert narrow["adverse_events"]["session_id"].to_list() == narrow["sessions"]["session_id"].to_list()
    assert set(narrow["mood_scores"]["instrument"]) == {"MADRS"}
    assert narrow["mood_scores"].height == full["mood_scores"].height // 2
    # the stored order is kept
    assert narrow["sessions"]["session_id"].to_list() == (
        full["sessions"].filter(pl.col("course_id").is_in(sorted(index)))["session_id"].to_list())

    reg = load_registries()
    a = derive_all(full["patients"], full["courses"], full["sessions"], full["mood_scores"], registries=reg, study=study)
    b = derive_all(narrow["patients"], narrow["courses"], narrow["sessions"], narrow["mood_scores"], registries=reg,
                   study=study)
    for part in ("adsl", "adtte", "attrition", "visits"):
        assert getattr(a, part).equals(getattr(b, part)), part
    assert a.notes == b.notes

    # the study is checked against every arm and instrument in the data, not the narrowed reads
    check = study_check_data(con, narrow["patients"])
    assert set(check["mood_scores"]["instrument"]) == {"MADRS", "PHQ9"}
    assert set(check["courses"]["arm"]) == {"ssri", "ketamine_iv"}
    assert check["patients"] is narrow["patients"]
    (problem,) = [p for p in study_problems(study.updated(instrument="HAMD17"), reg, check) if "HAMD17" in p]
    assert "instruments rated: MADRS, PHQ9" in problem


def test_a_target_trial_study_also_reads_the_first_session_of_every_course():
    """The trial's start day is the first session of a treatment course after time zero, which is not
    an index course: every course's first session is read (and nothing else changes)."""
    from ketaoutcomes.protocol import TargetTrialProtocol

    con = _warehouse()
    plain = analysis_inputs(con, StudySettings())
    trial = analysis_inputs(con, StudySettings(target_trial=TargetTrialProtocol()))
    assert "first_sessions" not in plain and set(trial) == set(plain) | {"first_sessions"}
    for table in plain:
        assert trial[table].equals(plain[table])
    expected = (con.execute("SELECT * FROM stg_sessions").pl().group_by("course_id")
                .agg(pl.col("session_ts").min()).sort("course_id"))
    assert trial["first_sessions"].equals(expected) and {"C0b", "C3b"} <= set(expected["course_id"])
