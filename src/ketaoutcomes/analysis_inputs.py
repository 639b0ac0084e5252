"""What the analysis reads from the warehouse: the columns and rows of the staged tables it uses,
selected by DuckDB, never whole ``stg_*`` tables (I/O).

The analysis (:func:`ketaoutcomes.analysis.run_study`) derives ADSL from each patient's first
course (the index course) and works on the ratings of the study's instrument only, so:

* ``patients``: every row and column (a covariate or the study's own, in ``_extra``; the row and batch
  that name a bad value);
* ``courses``: every course (a later course ends the index course's follow-up), the columns the
  derivation uses;
* ``sessions``: the sessions of index courses, without the columns nothing reads (heart rate,
  infusion minutes, the bookkeeping columns);
* ``adverse_events``: ``session_id`` and ``ae_type`` of those sessions;
* ``mood_scores``: the ratings of the study's instrument;
* ``first_sessions``, only for a study with a target trial: ``course_id`` and the ``session_ts`` of
  each course's first session, every course (the trial's start day is the first session of the
  first treatment course after time zero, which is rarely an index course);
* ``clinical_events``, only for a target trial with negative controls: ``patient_id``, ``event_date``
  and ``event_type`` of every clinical event (the negative-control outcomes).

At a million patients the whole staged tables took some 7 GB in polars; these reads take what the
analysis holds anyway (docs/scaling.md, Analyze at scale). The check of the study against the data
(:func:`ketaoutcomes.analysis.checks.check_study`) gets the arms and instruments present in the data
from aggregate queries (:func:`study_check_data`), since the narrowed tables no longer show them all.
"""

from __future__ import annotations

import duckdb
import polars as pl

from ketaoutcomes.settings import StudySettings
from ketaoutcomes.warehouse import fetch, fetch_owned, table_exists

__all__ = ["ANALYSIS_COLUMNS", "analysis_inputs", "study_check_data"]

#: Columns of each staged table the analysis reads (None: all); a column the table does not have
#: (an optional one of the import format) is left out, as the derivation expects.
ANALYSIS_COLUMNS: dict[str, tuple[str, ...] | None] = {
    "patients": None,
    "courses": ("course_id", "patient_id", "arm", "start_date", "end_date", "end_reason", "concomitant_ssri",
                "concomitant_benzodiazepine"),
    "sessions": ("session_id", "course_id", "session_ts", "phase", "dose_mg", "dose_mg_per_kg", "sbp_pre", "dbp_pre",
                 "sbp_peak", "dbp_peak", "dissociation_score"),
    "adverse_events": ("session_id", "ae_type"),
    "mood_scores": ("patient_id", "assessed_at", "instrument", "total_score", "si_item_score"),
}

#: The index course of each patient: the first by start date, then course id (as ADSL's).
INDEX_COURSES = ("SELECT course_id FROM stg_courses "
                 "QUALIFY row_number() OVER (PARTITION BY patient_id ORDER BY start_date, course_id) = 1")


def _select(con: duckdb.DuckDBPyConnection, table: str) -> str:
    wanted = ANALYSIS_COLUMNS[table]
    if wanted is None:
        return "*"
    have = {r[0] for r in con.execute(f"DESCRIBE stg_{table}").fetchall()}
    return ", ".join(f'"{c}"' for c in wanted if c in have)


def analysis_inputs(con: duckdb.DuckDBPyConnection, study: StudySettings) -> dict[str, pl.DataFrame]:
    """The staged tables as the analysis of ``study`` needs them (module docstring), by table name,
    in the tables' stored order."""
    where = {
        "sessions": f"WHERE course_id IN ({INDEX_COURSES})",
        "adverse_events": f"WHERE session_id IN (SELECT session_id FROM stg_sessions WHERE course_id IN ({INDEX_COURSES}))",
        "mood_scores": "WHERE instrument = ?",
    }
    out = {}
    for table in ANALYSIS_COLUMNS:
        if not table_exists(con, f"stg_{table}"):
            continue
        params = [study.cohort.instrument] if table == "mood_scores" else None
        # held through the analysis: read into polars' own memory (fetch_owned), not DuckDB's buffers
        out[table] = fetch_owned(con, f"SELECT {_select(con, table)} FROM stg_{table} {where.get(table, '')}", params)
    if study.target_trial is not None and table_exists(con, "stg_sessions"):
        out["first_sessions"] = fetch(con, "SELECT course_id, min(session_ts) AS session_ts FROM stg_sessions "
                                           "GROUP BY course_id ORDER BY course_id")
    if study.target_trial is not None and study.target_trial.negative_controls and table_exists(con, "stg_clinical_events"):
        out["clinical_events"] = fetch(con, "SELECT patient_id, event_date, event_type FROM stg_clinical_events "
                                            "ORDER BY patient_id, event_date, event_type")
    return out


def study_check_data(con: duckdb.DuckDBPyConnection, patients: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """What :func:`~ketaoutcomes.analysis.checks.check_study` looks at: the patients (``patients``,
    else read here) and every arm with a course and every instrument with a rating in the data (an
    empty frame for a table not there)."""
    queries = {"courses": "SELECT DISTINCT arm FROM stg_courses",
               "mood_scores": "SELECT DISTINCT instrument FROM stg_mood_scores",
               "patients": "SELECT * FROM stg_patients"}
    out = {t: fetch(con, sql) if table_exists(con, f"stg_{t}") else pl.DataFrame() for t, sql in queries.items()
           if t != "patients" or patients is None}
    return out if patients is None else {**out, "patients": patients}
