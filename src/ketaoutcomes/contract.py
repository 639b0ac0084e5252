"""The import format: one contract that ingest, validation, the simulator and the
data dictionary (docs/import-format.md) all read.

An export is one folder with one file per table (``patients.csv`` or
``patients.parquet`` and so on). Arms and instruments are *data* (see
:mod:`ketaoutcomes.registries`): the contract only says that a column takes its
allowed values from a registry, so a study can add an arm or an instrument
without changing code.

Changing this module changes the import format: regenerate the data dictionary
with ``python -m ketaoutcomes dictionary > docs/import-format.md`` (a test fails
when the two disagree).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

__all__ = ["CODE_MAX_CHARS", "CODE_MAX_WORDS", "DEFAULT_ID_EXAMPLES", "DEFAULT_ID_PATTERN", "EXTRA_COLUMN", "Column",
           "FileLimits",
           "LIMITS", "MEMORY_LIMIT_ENV", "OPTIONAL_TABLES", "Reference", "Table", "TABLES", "TABLE_ORDER", "POLARS_TYPES",
           "WHITESPACE", "polars_schema", "table"]

# DuckDB types used by the contract. Ingest casts every column with TRY_CAST to
# these, so a value that does not convert is caught per row, not per file.
DTYPES = ("VARCHAR", "INTEGER", "DOUBLE", "DATE", "TIMESTAMP", "BOOLEAN")
#: The polars dtype each contract type loads as (what DuckDB hands back).
POLARS_TYPES = {
    "VARCHAR": pl.String,
    "INTEGER": pl.Int32,
    "DOUBLE": pl.Float64,
    "DATE": pl.Date,
    "TIMESTAMP": pl.Datetime("us"),
    "BOOLEAN": pl.Boolean,
}


@dataclass(frozen=True)
class Column:
    """One column of an import table.

    Parameters
    ----------
    name : str
        Column name in the file (case-sensitive, snake_case).
    dtype : str
        DuckDB type the value must convert to.
    required : bool
        A required column must be present in the file and non-null in every row.
    description : str
        What the column holds.
    unit : str, optional
        Unit of measurement, if any.
    allowed : tuple of str, optional
        Closed set of allowed values.
    registry : {"arms", "instruments"}, optional
        The allowed values are the keys of this registry.
    min, max : float, optional
        Plausible range (inclusive): a value outside it loads, and the data-quality
        summary and validation warn. Ranges that depend on another column (score
        range per instrument, dose range per arm) come from the registry.
    hard_min, hard_max : float, optional
        Possible range (inclusive): a value outside it cannot be right (a typo, a
        phone number typed into a number column), so the row is quarantined (rule
        ``impossible_value``, the value never shown).
    code : bool
        A code of an open vocabulary (``site``, ``drug``): a short code, not free
        text; a value shaped like free text is quarantined (rule ``not_a_code``,
        see :mod:`ketaoutcomes.ingest.rules`).
    """

    name: str
    dtype: str
    required: bool
    description: str
    unit: str | None = None
    allowed: tuple[str, ...] | None = None
    registry: str | None = None
    min: float | None = None
    max: float | None = None
    hard_min: float | None = None
    hard_max: float | None = None
    code: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name}: unknown dtype {self.dtype!r}")
        if (self.hard_min is not None and self.min is not None and self.hard_min > self.min) or (
                self.hard_max is not None and self.max is not None and self.hard_max < self.max):
            raise ValueError(f"column {self.name}: the possible range must hold the plausible range")


@dataclass(frozen=True)
class Reference:
    """``column`` must match ``to_table.to_column`` (a foreign key)."""

    column: str
    to_table: str
    to_column: str


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    references: tuple[Reference, ...] = field(default_factory=tuple)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}")


#: White space (Unicode's White_Space: space, tab, line breaks, no-break and other spaces), as
#: polars' ``str.strip_chars()`` knows it: a cell of nothing else is missing, like an empty one, and
#: white space around a value is not part of it (data files, registries).
WHITESPACE = (" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
              "\u200a\u2028\u2029\u202f\u205f\u3000")

#: The default shape of a pseudonymous id (``*_id`` columns; the whole id, surrounding spaces ignored):
#: up to 3 capital letters (then optionally '-' or '_') and 1 to 7 digits, then up to 3 more parts of
#: up to 3 capital letters and 1 to 7 digits after '-', '_' or '.'.
#: The simulator's ids (P0000001, C0000001-001, C0000001-001-A1), short ones (P1, AE1) and plain
#: numbers (17) fit; names, initials with a birth year (jdoe1984), dates and record numbers
#: (MRN0044123456) do not. An export declares its own with ``[ids] pattern`` in phi_allowlist.toml.
DEFAULT_ID_PATTERN = r"[A-Z]{0,3}[-_]?[0-9]{1,7}(?:[-_.][A-Z]{0,3}[0-9]{1,7}){0,3}"
DEFAULT_ID_EXAMPLES = "P1, AE1, PT-001, 17, P0000001, C0000001-001-A1"
#: A code (``code=True`` columns: site, drug) has at most this many words and characters.
CODE_MAX_WORDS = 4
CODE_MAX_CHARS = 40

_BP = dict(unit="mmHg", required=False)
#: Said of the patient columns a study may do without (sex, age, prior trials, diagnosis).
_IF_USED = ("; may be left out, or empty, where the study does not use it (models.covariates, models.strata): a "
            "patient without a value in a covariate or the strata of the study is excluded from its analysis "
            "(an attrition row)")
#: Blood pressure and heart rate: plausible ranges (warnings) inside possible ones (quarantine).
_SBP = dict(_BP, min=60, max=260, hard_min=20, hard_max=400)
_DBP = dict(_BP, min=30, max=160, hard_min=10, hard_max=300)
_HR = dict(unit="beats/min", min=30, max=220, hard_min=10, hard_max=350)

PATIENTS = Table(
    name="patients",
    description="One row per patient. Pseudonymous; no direct identifiers.",
    key=("patient_id",),
    columns=(
        Column("patient_id", "VARCHAR", True, "Pseudonymous patient id, stable across files of one export"),
        Column("site", "VARCHAR", True, "Clinic or site code (used as Cox strata)", code=True),
        Column("sex", "VARCHAR", False, "Sex recorded at the clinic" + _IF_USED, allowed=("F", "M", "U")),
        Column(
            "age_at_index", "INTEGER", False,
            "Age in whole years at the first treatment course; 90 stands for 90 and over" + _IF_USED,
            unit="years", min=12, max=90, hard_min=0, hard_max=120,
        ),
        Column(
            "prior_failed_trials", "INTEGER", False,
            "Number of prior adequate antidepressant trials that failed (treatment resistance)" + _IF_USED,
            min=0, max=30, hard_min=0, hard_max=100,
        ),
        Column(
            "diagnosis", "VARCHAR", False, "Primary diagnosis of the depressive episode" + _IF_USED,
            allowed=("MDD", "bipolar_depression", "persistent_depressive_disorder", "other_depression"),
        ),
        Column("weight_kg", "DOUBLE", False, "Body weight at index", unit="kg", min=30, max=300, hard_min=10,
               hard_max=650),
        Column(
            "observation_start", "DATE", False,
            "First day the clinic's records cover for this patient (shifted like the other dates): the look-back "
            "of the new-user rule (the study's washout_days must fit between it and the first course). "
            "Empty if unknown",
        ),
    ),
)

COURSES = Table(
    name="courses",
    description="One row per treatment course: a patient on one arm from start to end.",
    key=("course_id",),
    columns=(
        Column("course_id", "VARCHAR", True, "Course id, unique in the export"),
        Column("patient_id", "VARCHAR", True, "Patient (patients.patient_id)"),
        Column("arm", "VARCHAR", True, "Treatment arm", registry="arms"),
        Column("drug", "VARCHAR", False, "Drug given (e.g. ketamine, esketamine, sertraline); required for a course "
               "on a drug arm (one with a dose range in the arms registry), may be empty otherwise", code=True),
        Column("start_date", "DATE", True, "First day of the course (shifted dates are fine)"),
        Column("end_date", "DATE", False, "Last day of the course; empty if ongoing at export"),
        Column(
            "end_reason", "VARCHAR", False,
            "Why the course ended; 'switched' and 'new_antidepressant' end follow-up as intercurrent events; "
            "'non_response': stopped because it did not work (an adequate trial that failed: the end_date is the "
            "failure date, time zero of a target-trial study; see Treatment history)",
            allowed=("completed", "switched", "new_antidepressant", "adverse_event",
                     "lost_to_follow_up", "ongoing", "non_response", "other"),
        ),
        Column("concomitant_ssri", "BOOLEAN", False, "An SSRI was continued during the course"),
        Column("concomitant_benzodiazepine", "BOOLEAN", False, "A benzodiazepine was taken during the course"),
    ),
    references=(Reference("patient_id", "patients", "patient_id"),),
)

SESSIONS = Table(
    name="sessions",
    description="One row per administration (ketamine arms) or medication visit (daily oral drugs).",
    key=("session_id",),
    columns=(
        Column("session_id", "VARCHAR", True, "Session id, unique in the export"),
        Column("course_id", "VARCHAR", True, "Course (courses.course_id)"),
        Column("session_ts", "TIMESTAMP", True, "Time of the dose (ISO 8601, local clinic time, may be shifted)"),
        # (a negative dose is quarantined by the arm's range, rule dose_implausible)
        Column("dose_mg", "DOUBLE", False, "Dose given; plausible range per arm in the arms registry. Required for a "
               "session of a drug arm; empty for an arm that is not a drug (no dose range)", unit="mg", min=0,
               hard_max=10000),
        Column("dose_mg_per_kg", "DOUBLE", False, "Weight-based dose where it applies (IV, IM, oral)", unit="mg/kg", min=0,
               max=5, hard_max=20),
        Column("infusion_minutes", "DOUBLE", False, "Infusion duration (IV only)", unit="min", min=0, max=240,
               hard_min=0, hard_max=1440),
        Column("phase", "VARCHAR", True, "Treatment phase", allowed=("induction", "maintenance")),
        Column("sbp_pre", "INTEGER", description="Systolic BP before dose", **_SBP),
        Column("dbp_pre", "INTEGER", description="Diastolic BP before dose", **_DBP),
        Column("hr_pre", "INTEGER", False, "Heart rate before dose", **_HR),
        Column("sbp_peak", "INTEGER", description="Highest systolic BP after dose", **_SBP),
        Column("dbp_peak", "INTEGER", description="Highest diastolic BP after dose", **_DBP),
        Column("hr_peak", "INTEGER", False, "Highest heart rate after dose", **_HR),
        Column("dissociation_score", "DOUBLE", False, "CADSS total after dose, where measured", unit="CADSS points",
               min=0, max=92, hard_min=0, hard_max=92),
    ),
    references=(Reference("course_id", "courses", "course_id"),),
)

ADVERSE_EVENTS = Table(
    name="adverse_events",
    description="One row per adverse event recorded at a session.",
    key=("ae_id",),
    columns=(
        Column("ae_id", "VARCHAR", True, "Adverse-event id, unique in the export"),
        Column("session_id", "VARCHAR", True, "Session (sessions.session_id)"),
        Column(
            "ae_type", "VARCHAR", True, "Type of adverse event",
            allowed=("dissociation", "nausea", "vomiting", "dizziness", "vertigo", "headache",
                     "sedation", "hypertension", "hallucinations", "anxiety", "other"),
        ),
        Column("severity", "VARCHAR", True, "Severity", allowed=("mild", "moderate", "severe")),
    ),
    references=(Reference("session_id", "sessions", "session_id"),),
)

MOOD_SCORES = Table(
    name="mood_scores",
    description="One row per rating: a patient, a time, an instrument.",
    key=("patient_id", "assessed_at", "instrument"),
    columns=(
        Column("patient_id", "VARCHAR", True, "Patient (patients.patient_id)"),
        Column("assessed_at", "TIMESTAMP", True, "Time of the rating (ISO 8601, may be shifted)"),
        Column("instrument", "VARCHAR", True, "Rating instrument", registry="instruments"),
        # (the instrument's range quarantines first; the possible range also holds for an instrument an
        # export registers with a wide range, or without a suicidal-ideation item)
        Column("total_score", "DOUBLE", True, "Total score; range per instrument in the instruments registry", unit="points", min=0,
               hard_max=1000),
        Column("si_item_score", "DOUBLE", False, "Suicidal-ideation item score (e.g. MADRS item 10, PHQ-9 item 9)", unit="points",
               min=0, hard_max=100),
        Column("rater", "VARCHAR", False, "Who rated", allowed=("clinician", "self")),
    ),
    references=(Reference("patient_id", "patients", "patient_id"),),
)

CLINICAL_EVENTS = Table(
    name="clinical_events",
    description="Optional. One row per clinical event recorded outside treatment sessions (an emergency visit, an "
                "infection, a fracture, ...): the source of a target trial's negative-control outcomes. An export "
                "without this file loads as before.",
    key=("event_id",),
    columns=(
        Column("event_id", "VARCHAR", True, "Event id, unique in the export"),
        Column("patient_id", "VARCHAR", True, "Patient (patients.patient_id)"),
        Column("event_date", "DATE", True, "Day of the event (shifted like the other dates)"),
        Column("event_type", "VARCHAR", True, "The event's code in the clinic's vocabulary (e.g. ed_visit, "
               "infection, fracture); a study's negative control names the codes it counts "
               "(target_trial.negative_controls, event_types)", code=True),
    ),
    references=(Reference("patient_id", "patients", "patient_id"),),
)

#: The column of raw_patients / stg_patients that holds the patients file's own columns beyond the
#: contract (a trial's covariates), as a JSON object of text values per row; a study declares the ones
#: it uses (ketaoutcomes.settings.ExtraCovariate). Which are kept: ketaoutcomes.ingest.extra.
EXTRA_COLUMN = "_extra"

#: Load order: referenced tables first.
TABLE_ORDER: tuple[str, ...] = ("patients", "courses", "sessions", "adverse_events", "mood_scores", "clinical_events")
TABLES: dict[str, Table] = {t.name: t for t in (PATIENTS, COURSES, SESSIONS, ADVERSE_EVENTS, MOOD_SCORES,
                                                CLINICAL_EVENTS)}
#: Tables an export may always leave out (no file: no rows; the warehouse still has an empty
#: ``stg_<table>``). The other tables are required in a first export (sessions and adverse_events
#: only where a course is on a session-based arm: :data:`ketaoutcomes.ingest.folder.SESSION_TABLES`).
OPTIONAL_TABLES: tuple[str, ...] = ("clinical_events",)


def table(name: str) -> Table:
    """The contract of one import table, with a clear error for an unknown name."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; the import format has {', '.join(TABLE_ORDER)}") from None


def polars_schema(name: str) -> dict[str, pl.DataType]:
    """The polars dtypes of a contract table, in contract column order."""
    return {c.name: POLARS_TYPES[c.dtype] for c in table(name).columns}


# ---------------------------------------------------------------------------
# Limits of an export file: what ingest refuses to read (docs/import-format.md, "Limits").
# ---------------------------------------------------------------------------

#: Environment variable: the memory an ingest may use (e.g. ``8GB``, ``512MiB``, ``50%`` of the machine's).
MEMORY_LIMIT_ENV = "KETAOUTCOMES_MEMORY_LIMIT"


@dataclass(frozen=True)
class FileLimits:
    """What one export file may hold; each limit is a one-line refusal naming the file and the limit."""

    #: Columns of one table file (the import format has at most 14; extra columns are ignored, not stored).
    max_columns: int = 1_000
    #: Bytes of one physical line of a CSV file, and of one value (CSV or Parquet).
    max_line_bytes: int = 1 << 20
    #: Bytes of one column name (the PHI guard's scan of a name grows with its length squared: 50 KB took 65 s).
    max_name_bytes: int = 256
    #: Bytes of arms.csv, instruments.csv and phi_allowlist.toml (a few rows each).
    max_small_file_bytes: int = 1 << 20
    #: Memory the file takes as text over its size on disk (a Parquet file is compressed; a
    #: decompression bomb expands thousands of times).
    max_expansion: int = 1_000
    #: Memory an ingest needs per byte of its files as text (measured: 2.5 on 100,000 simulated
    #: patients, CSV and Parquet); the estimate checked against the memory limit.
    memory_per_text_byte: float = 2.5
    #: Default memory limit: this share of the machine's memory (or of the cgroup's limit).
    default_memory_share: float = 0.8


LIMITS = FileLimits()
