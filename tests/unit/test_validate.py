"""Validation suites (Great Expectations 1.x expectations, their metrics computed in DuckDB).

Hand-built frames that pass every rule; corrupted copies where each corruption
hits exactly one rule, checked for that rule's unexpected_count, element_count,
source row numbers and severity; and the same frames through GX's own pandas
engine (``engine="gx-pandas"``, the reference), which must give the same rows.

Speed: GX's import takes ~10 s and each expectation costs GX a few ms however
small the data (on the pandas engine ~30 ms). Instead of one full run per
corruption, all the corruptions of one kind live in one frame set (each in its
own row, chosen so they cannot interact) and are validated once per module;
``test_each_corruption_fails_exactly_its_rule`` proves that the set of failed
rules is exactly the set of corrupted ones, and the per-family tests check each
rule's row. Runs that need other registries use ``tables=`` to run one table.
"""

from __future__ import annotations

import datetime as dt
import os

import polars as pl
import pytest

from ketaoutcomes.contract import POLARS_TYPES, TABLES
from ketaoutcomes.registries import Arm, Instrument, Registries, load_registries
from ketaoutcomes.validate import (
    CRITICAL,
    DOSE_RANGE_SEVERITY,
    RESULT_SCHEMA,
    WARNING,
    ValidationFailed,
    ValidationResult,
    build_rules,
    build_suites,
    validate_tables,
)


D = dt.date
T = dt.datetime

SECRET_PATIENT = "PX-SECRET-7781"
SECRET_COURSE = "CX-SECRET-4410"
SECRET_SESSION = "SX-SECRET-0001"


def _frame(table: str, rows: list[tuple], first_row: int = 2) -> pl.DataFrame:
    """Typed staged frame: contract columns in order, then _row_number (from 2:
    row 1 is the header) and _batch_id. Trailing optional columns left out of a tuple are null."""
    cols = TABLES[table].columns
    data = {c.name: [r[i] if i < len(r) else None for r in rows] for i, c in enumerate(cols)}
    schema = {c.name: POLARS_TYPES[c.dtype] for c in cols}
    return pl.DataFrame(data, schema=schema).with_columns(
        pl.int_range(first_row, len(rows) + first_row, dtype=pl.Int64).alias("_row_number"),
        pl.lit("batch-1").alias("_batch_id"),
    )


def clean_frames() -> dict[str, pl.DataFrame]:
    bp = (120, 80, 70, 135, 85, 80)
    return {
        "patients": _frame("patients", [
            ("P-001", "site1", "F", 34, 2, "MDD", 70.0),
            ("P-002", "site1", "M", 51, 3, "MDD", 82.5),
            ("P-003", "site2", "U", 45, 4, "bipolar_depression", None),
        ]),
        "courses": _frame("courses", [
            ("C-01", "P-001", "ketamine_iv", "ketamine", D(2024, 1, 1), D(2024, 1, 21), "completed", False, False),
            ("C-02", "P-002", "esketamine_intranasal", "esketamine", D(2024, 2, 1), None, "ongoing", True, None),
            ("C-03", "P-003", "ssri", "sertraline", D(2024, 3, 1), D(2024, 6, 1), "switched", None, None),
            ("C-04", "P-003", "ketamine_oral", "ketamine", D(2024, 6, 2), D(2024, 7, 1), "other", None, None),
            ("C-05", "P-003", "ketamine_im", "ketamine", D(2024, 8, 1), D(2024, 8, 1), "adverse_event", None, None),
        ]),
        "sessions": _frame("sessions", [
            ("S-01", "C-01", T(2024, 1, 1, 9), 35.0, 0.5, 40.0, "induction", *bp, 12.0),
            ("S-02", "C-01", T(2024, 1, 8, 9), 35.0, 0.5, 40.0, "induction", *bp, 8.0),
            # the day after end_date, one minute before midnight: the 1-day tolerance
            ("S-03", "C-01", T(2024, 1, 22, 23, 59), 35.0, 0.5, 40.0, "maintenance", *bp, None),
            ("S-04", "C-02", T(2024, 2, 1, 10), 56.0, None, None, "induction", *bp, 20.0),
            ("S-05", "C-02", T(2024, 2, 4, 10), 84.0, None, None, "induction", 110, 70, 65, 150, 95, 90, None),
            ("S-06", "C-03", T(2024, 3, 1, 8), 50.0, None, None, "maintenance", None, None, None, None, None, None, None),
        ]),
        "adverse_events": _frame("adverse_events", [
            ("AE-1", "S-01", "nausea", "mild"),
            ("AE-2", "S-04", "dissociation", "moderate"),
        ]),
        "mood_scores": _frame("mood_scores", [
            ("P-001", T(2023, 12, 30, 10), "MADRS", 32.0, 2.0, "clinician"),
            ("P-001", T(2024, 1, 15, 10), "MADRS", 12.0, 0.0, "clinician"),
            ("P-002", T(2024, 1, 31, 10), "PHQ9", 20.0, 1.0, "self"),
            ("P-002", T(2024, 2, 20, 10), "PHQ9", 9.0, None, "self"),
            ("P-003", T(2024, 2, 28, 10), "QIDS_SR16", 16.0, 1.0, None),
            ("P-003", T(2024, 2, 28, 10), "HAMD17", 21.0, 1.0, "clinician"),
        ]),
        "clinical_events": _frame("clinical_events", [
            ("E-1", "P-001", D(2024, 2, 3), "fracture"),
            ("E-2", "P-003", D(2024, 6, 20), "ed_visit"),
        ]),
    }


def _set(frame: pl.DataFrame, row_number: int, **values) -> pl.DataFrame:
    """Change cells of the row whose _row_number is ``row_number``."""
    hit = pl.col("_row_number") == row_number
    return frame.with_columns(
        [pl.when(hit).then(pl.lit(v, dtype=frame.schema[c])).otherwise(pl.col(c)).alias(c) for c, v in values.items()]
    )


def _append(frame: pl.DataFrame, table: str, rows: list[tuple]) -> pl.DataFrame:
    first = frame.get_column("_row_number").max() + 1
    return pl.concat([frame, _frame(table, rows, first_row=first)])


def corrupted_frames() -> dict[str, pl.DataFrame]:
    """Clean frames with one corruption per rule below, each in its own row."""
    f = clean_frames()
    p = _set(f["patients"], 3, site=None)                                  # null required value
    p = _set(p, 2, age_at_index=95)                                        # implausible age (warning)
    p = _append(p, "patients", [(SECRET_PATIENT, "s", "F", 40, 1, "MDD", None)] * 2)  # rows 5, 6: duplicate key

    c = _set(f["courses"], 5, arm="tms")                                   # unknown arm (C-04, no sessions)
    c = _set(c, 6, end_date=D(2024, 7, 31))                                # C-05 ends before its start, no sessions

    s = _set(f["sessions"], 2, session_ts=T(2023, 12, 31, 23), dose_mg_per_kg=2.0)  # before start; > IV mg/kg
    s = _set(s, 3, dose_mg=500.0)                                          # outside the ketamine_iv range
    s = _set(s, 4, session_ts=T(2024, 1, 23, 0, 0))                        # > end_date + 1 day
    s = _set(s, 6, session_id="S-04", sbp_peak=300)                        # duplicate key; implausible BP
    s = _set(s, 7, course_id=SECRET_COURSE)                                # orphan session

    a = _set(f["adverse_events"], 2, session_id=SECRET_SESSION)            # orphan adverse event
    a = _set(a, 3, severity="fatal")                                       # not an allowed value

    m = _set(f["mood_scores"], 2, total_score=28.0)                        # fine for MADRS (0-60)
    m = _set(m, 3, total_score=61.0)                                       # MADRS above 60
    m = _set(m, 4, total_score=28.0)                                       # PHQ9 above 27
    m = _set(m, 5, si_item_score=4.0)                                      # PHQ-9 item 9 above 3
    m = _set(m, 6, patient_id="P-404")                                     # orphan rating
    m = _append(m, "mood_scores", [("P-001", T(2023, 12, 30, 10), "MADRS", 30.0, 2.0, "clinician")])  # row 8 dup key

    e = _set(f["clinical_events"], 2, patient_id=SECRET_PATIENT + "9")     # orphan clinical event
    e = _append(e, "clinical_events", [("E-2", "P-003", D(2024, 6, 21), "infection")])  # row 4: duplicate key
    return {"patients": p, "courses": c, "sessions": s, "adverse_events": a, "mood_scores": m, "clinical_events": e}


# rule_id -> (unexpected_count, element_count, example_row_numbers, severity)
EXPECTED = {
    "patients.key_unique": (2, 5, "5, 6", CRITICAL),
    "patients.site.not_null": (1, 5, "3", CRITICAL),
    "patients.age_at_index.plausible_range": (1, 5, "2", WARNING),
    "courses.arm.registry": (1, 5, "5", CRITICAL),
    "courses.end_date.not_before_start": (1, 5, "6", CRITICAL),
    "sessions.key_unique": (2, 6, "5, 6", CRITICAL),
    "sessions.course_id.reference": (1, 6, "7", CRITICAL),
    "sessions.session_ts.not_before_course_start": (1, 6, "2", CRITICAL),
    "sessions.session_ts.not_after_course_end": (1, 6, "4", CRITICAL),
    "sessions.dose_mg.range_per_arm.ketamine_iv": (1, 3, "3", DOSE_RANGE_SEVERITY),
    "sessions.dose_mg_per_kg.max_per_arm.ketamine_iv": (1, 3, "2", WARNING),
    "sessions.sbp_peak.plausible_range": (1, 6, "6", WARNING),
    "adverse_events.session_id.reference": (1, 2, "2", CRITICAL),
    "adverse_events.severity.allowed": (1, 2, "3", CRITICAL),
    "mood_scores.key_unique": (2, 7, "2, 8", CRITICAL),
    "mood_scores.total_score.range_per_instrument.MADRS": (1, 3, "3", CRITICAL),
    "mood_scores.total_score.range_per_instrument.PHQ9": (1, 2, "4", CRITICAL),
    "mood_scores.si_item_score.range_per_instrument.PHQ9": (1, 2, "5", CRITICAL),
    "mood_scores.patient_id.reference": (1, 7, "6", CRITICAL),
    "clinical_events.key_unique": (2, 3, "3, 4", CRITICAL),
    "clinical_events.patient_id.reference": (1, 3, "2", CRITICAL),
}


@pytest.fixture(scope="module")
def registries() -> Registries:
    return load_registries()


@pytest.fixture(scope="module")
def clean_result(registries, tmp_path_factory) -> tuple[ValidationResult, list[str]]:
    # Run in an empty working directory to prove that GX writes nothing there.
    cwd = os.getcwd()
    work = tmp_path_factory.mktemp("cwd")
    os.chdir(work)
    try:
        result = validate_tables(clean_frames(), registries)
    finally:
        os.chdir(cwd)
    return result, sorted(os.listdir(work))


@pytest.fixture(scope="module")
def corrupted(registries) -> ValidationResult:
    return validate_tables(corrupted_frames(), registries)


def structural_frames() -> dict[str, pl.DataFrame]:
    """patients missing, sessions.dose_mg missing, sessions.infusion_minutes as text."""
    f = clean_frames()
    del f["patients"]
    f["sessions"] = f["sessions"].drop("dose_mg").with_columns(pl.col("infusion_minutes").cast(pl.String))
    return f


@pytest.fixture(scope="module")
def structural(registries) -> ValidationResult:
    return validate_tables(structural_frames(), registries)


def _failed(result: ValidationResult) -> pl.DataFrame:
    return result.results.filter(~pl.col("success"))


def _row(result: ValidationResult, rule_id: str) -> dict:
    rows = result.results.filter(pl.col("rule_id") == rule_id)
    assert rows.height == 1, rule_id
    return rows.row(0, named=True)


def _check(result: ValidationResult, rule_id: str) -> None:
    row = _row(result, rule_id)
    count, elements, examples, severity = EXPECTED[rule_id]
    assert row["success"] is False and row["error"] is None, row
    assert (row["unexpected_count"], row["element_count"], row["example_row_numbers"], row["severity"]) == (
        count, elements, examples, severity,
    ), rule_id


# --------------------------------------------------------------------------- clean data, suites


def test_clean_frames_pass_every_rule(clean_result, registries):
    result, written = clean_result
    assert result.results.schema == pl.Schema(RESULT_SCHEMA)
    assert result.passed
    assert _failed(result).height == 0, result.message()
    assert result.results.get_column("error").null_count() == result.results.height
    assert result.results.get_column("rule_id").to_list() == [r.rule_id for r in build_rules(registries)]
    assert result.message().startswith("Validation passed")
    assert written == []  # ephemeral context: nothing in the working directory


def test_every_table_has_a_suite_with_rule_meta(registries):
    suites = build_suites(registries)
    assert list(suites) == list(TABLES)
    rules = build_rules(registries)
    for table, suite in suites.items():
        assert len(suite.expectations) == sum(r.table == table for r in rules)
        for e in suite.expectations:
            assert set(e.meta) == {"rule_id", "rule", "severity"}
            assert e.meta["severity"] in (CRITICAL, WARNING)
            assert e.meta["rule_id"].startswith(f"{table}.")


def test_each_corruption_fails_exactly_its_rule(corrupted):
    failed = set(_failed(corrupted).get_column("rule_id"))
    assert failed == set(EXPECTED), corrupted.message()
    assert not corrupted.passed
    assert set(corrupted.critical_failures.get_column("rule_id")) == {
        k for k, v in EXPECTED.items() if v[3] == CRITICAL
    }


@pytest.mark.parametrize("case", ["clean", "corrupted", "structural"])
def test_duckdb_metrics_give_the_rows_of_gx_pandas_engine(case, clean_result, corrupted, structural, registries):
    """Same verdict, counts, percentages, example rows, errors and details, rule for rule."""
    ours = {"clean": clean_result[0], "corrupted": corrupted, "structural": structural}[case]
    frames = {"clean": clean_frames, "corrupted": corrupted_frames, "structural": structural_frames}[case]()
    reference = validate_tables(frames, registries, engine="gx-pandas")
    assert ours.results.to_dicts() == reference.results.to_dicts()
    # the rows come from GX's own results: one suite result per table
    assert set(ours.suite_results) == set(frames)
    assert all(type(r).__name__ == "ExpectationSuiteValidationResult" for r in ours.suite_results.values())


def test_an_expectation_that_cannot_run_fails_alone_with_gx_message(registries):
    """A registry range GX refuses (min above max) fails that rule with GX's own message, on both
    engines alike; the other rules of the table still run."""
    phq9 = registries.instruments["PHQ9"].model_copy(update={"score_min": 30, "score_max": 27})
    broken = Registries(arms=registries.arms, instruments={**registries.instruments, "PHQ9": phq9})
    ours = validate_tables(clean_frames(), broken, tables=["mood_scores"])
    failed = _failed(ours)
    assert failed.get_column("rule_id").to_list() == ["mood_scores.total_score.range_per_instrument.PHQ9"]
    assert failed.row(0, named=True)["error"] == "min_value cannot be greater than max_value"
    assert ours.results.height > 10 and ours.results.get_column("error").null_count() == ours.results.height - 1
    reference = validate_tables(clean_frames(), broken, tables=["mood_scores"], engine="gx-pandas")
    assert ours.results.to_dicts() == reference.results.to_dicts()


def test_empty_table_and_all_null_columns_equal_the_pandas_engine(registries):
    """No adverse events at all, no weight and no dose per kg recorded anywhere: DuckDB counts
    over no rows or only nulls must still be counts (0), as GX's pandas engine has them."""
    f = clean_frames()
    f["adverse_events"] = f["adverse_events"].clear()
    f["patients"] = f["patients"].with_columns(pl.lit(None, dtype=pl.Float64).alias("weight_kg"))
    f["sessions"] = f["sessions"].with_columns(pl.lit(None, dtype=pl.Float64).alias("dose_mg_per_kg"),
                                               pl.lit(None).alias("sbp_peak"))  # pl.Null: all-null, no type
    ours = validate_tables(f, registries)
    reference = validate_tables(f, registries, engine="gx-pandas")
    assert ours.results.to_dicts() == reference.results.to_dicts()
    assert ours.passed and ours.results.get_column("error").null_count() == ours.results.height
    ae = ours.results.filter(pl.col("rule_id") == "adverse_events.ae_id.not_null").row(0, named=True)
    assert (ae["element_count"], ae["unexpected_count"], ae["success"]) == (0, 0, True)


def test_without_the_optional_clinical_events_its_rules_do_not_run_and_the_rest_is_unchanged(registries, clean_result):
    """An export without clinical_events (the optional table): no rows to check, so none of its
    rules runs (no 'missing table' failure), and every other rule's row is the same as with it."""
    f = clean_frames()
    del f["clinical_events"]
    for engine in ("duckdb", "gx-pandas"):
        ours = validate_tables(f, registries, engine=engine)
        assert ours.passed, ours.message()
        with_it = clean_result[0].results.filter(pl.col("table") != "clinical_events")
        assert ours.results.to_dicts() == with_it.to_dicts()


def test_unknown_engine_is_refused(registries):
    with pytest.raises(ValueError, match="unknown engine 'spark'; one of duckdb, gx-pandas"):
        validate_tables(clean_frames(), registries, engine="spark")


# --------------------------------------------------------------------------- one test per rule family


def test_duplicate_key(corrupted):
    _check(corrupted, "patients.key_unique")
    _check(corrupted, "sessions.key_unique")


def test_duplicate_compound_key(corrupted):
    _check(corrupted, "mood_scores.key_unique")


def test_null_required_value(corrupted):
    _check(corrupted, "patients.site.not_null")


def test_unknown_arm(corrupted):
    _check(corrupted, "courses.arm.registry")


def test_value_outside_allowed_set(corrupted):
    _check(corrupted, "adverse_events.severity.allowed")


def test_madrs_61(corrupted):
    # element_count counts the MADRS rows only (the row condition); 28 on MADRS passes
    _check(corrupted, "mood_scores.total_score.range_per_instrument.MADRS")


def test_phq9_28_range_differs_per_instrument(corrupted):
    _check(corrupted, "mood_scores.total_score.range_per_instrument.PHQ9")


def test_si_item_range_per_instrument(corrupted):
    _check(corrupted, "mood_scores.si_item_score.range_per_instrument.PHQ9")


def test_dose_outside_iv_range(corrupted):
    _check(corrupted, "sessions.dose_mg.range_per_arm.ketamine_iv")
    assert _row(corrupted, "sessions.dose_mg.range_per_arm.ketamine_iv")["severity"] == DOSE_RANGE_SEVERITY


def test_plausible_ranges_are_warnings(corrupted):
    _check(corrupted, "sessions.sbp_peak.plausible_range")
    _check(corrupted, "patients.age_at_index.plausible_range")
    _check(corrupted, "sessions.dose_mg_per_kg.max_per_arm.ketamine_iv")


def test_warnings_alone_do_not_stop_the_analysis(registries):
    s = _set(clean_frames()["sessions"], 6, sbp_peak=300)
    res = validate_tables(clean_frames() | {"sessions": s}, registries, tables=["sessions"])
    assert res.results.get_column("table").unique().to_list() == ["sessions"]
    assert _failed(res).get_column("rule_id").to_list() == ["sessions.sbp_peak.plausible_range"]
    assert res.passed and res.critical_failures.height == 0
    assert res.raise_if_failed() is res
    assert res.message() == (
        "Validation warning: sessions / sessions.sbp_peak.plausible_range "
        "(sbp_peak within the plausible range (60-260 mmHg)): 1 of 6 rows (e.g. rows 6)"
    )


def test_orphan_session(corrupted):
    _check(corrupted, "sessions.course_id.reference")
    assert "a join in DuckDB" in _row(corrupted, "sessions.course_id.reference")["rule"]


def test_orphan_rating_and_adverse_event(corrupted):
    _check(corrupted, "mood_scores.patient_id.reference")
    _check(corrupted, "adverse_events.session_id.reference")


def test_session_before_course_start(corrupted):
    _check(corrupted, "sessions.session_ts.not_before_course_start")


def test_session_after_course_end_beyond_tolerance(corrupted, clean_result):
    # clean: 2024-01-22 23:59 after an end_date of 2024-01-21 passes; 2024-01-23 00:00 fails
    assert _row(clean_result[0], "sessions.session_ts.not_after_course_end")["success"]
    _check(corrupted, "sessions.session_ts.not_after_course_end")


def test_course_end_before_start(corrupted):
    _check(corrupted, "courses.end_date.not_before_start")


# --------------------------------------------------------------------------- registries are data


def test_new_instrument_needs_no_code_change(registries):
    bdi2 = Instrument(
        instrument="BDI2", label="Beck Depression Inventory-II", rater="self", score_min=0, score_max=63,
        response_reduction=0.5, remission_max=13, relapse_min=20, si_item="item 9", si_item_min=0, si_item_max=3,
    )
    extended = Registries(arms=registries.arms, instruments={**registries.instruments, "BDI2": bdi2})
    m = _append(clean_frames()["mood_scores"], "mood_scores", [
        ("P-002", T(2024, 2, 1, 12), "BDI2", 50.0, 1.0, "self"),   # row 8: inside 0-63
        ("P-002", T(2024, 2, 8, 12), "BDI2", 64.0, 2.0, "self"),   # row 9: outside
    ])
    frames = clean_frames() | {"mood_scores": m}
    res = validate_tables(frames, extended, tables=["mood_scores"])
    failed = _failed(res)
    assert failed.get_column("rule_id").to_list() == ["mood_scores.total_score.range_per_instrument.BDI2"]
    row = failed.row(0, named=True)
    assert (row["unexpected_count"], row["element_count"], row["example_row_numbers"]) == (1, 2, "9")
    assert "mood_scores.si_item_score.range_per_instrument.BDI2" in res.results.get_column("rule_id").to_list()
    assert any(
        e.meta["rule_id"] == "mood_scores.total_score.range_per_instrument.BDI2"
        for e in build_suites(extended)["mood_scores"].expectations
    )
    # without the registry entry the instrument itself is rejected
    res = validate_tables(frames, registries, tables=["mood_scores"])
    row = _failed(res).row(0, named=True)
    assert _failed(res).height == 1 and row["rule_id"] == "mood_scores.instrument.registry"
    assert (row["unexpected_count"], row["example_row_numbers"]) == (2, "8, 9")


def test_a_dose_range_is_demanded_only_of_drug_arms(registries):
    """An arm that is not a drug (no dose range: TAU) has no dose-range rule; its courses may name no
    drug and its sessions no dose, and a dose given at one of its sessions fails; a drug arm's course
    without drug, and its session without dose, fail their per-arm rules (critical)."""
    tau = Arm(arm="TAU", label="Treatment as usual")
    extended = Registries(arms={**registries.arms, "TAU": tau}, instruments=registries.instruments)
    ids = {r.rule_id for r in build_rules(extended)}
    assert "sessions.dose_mg.none_per_arm.TAU" in ids
    assert not {"sessions.dose_mg.range_per_arm.TAU", "courses.drug.not_null_per_arm.TAU",
                "sessions.dose_mg.not_null_per_arm.TAU"} & ids
    assert {"courses.drug.not_null_per_arm.ssri", "sessions.dose_mg.not_null_per_arm.ssri"} <= ids
    f = clean_frames()
    courses = _append(f["courses"], "courses", [
        ("C-06", "P-002", "TAU", None, D(2024, 9, 1), None, "ongoing"),           # row 7: no drug, fine
        ("C-07", "P-001", "ssri", None, D(2024, 9, 1), None, "ongoing"),          # row 8: a drug arm without drug
    ])
    sessions = _append(f["sessions"], "sessions", [
        ("S-07", "C-06", T(2024, 9, 1, 14), None, None, None, "induction"),      # row 8: no dose, fine
        ("S-08", "C-06", T(2024, 9, 8, 14), 50.0, None, None, "induction"),      # row 9: a dose for TAU
        ("S-09", "C-07", T(2024, 9, 1, 14), None, None, None, "induction"),      # row 10: ssri without dose
    ])
    res = validate_tables(f | {"courses": courses, "sessions": sessions}, extended)
    failed = {r["rule_id"]: r["example_row_numbers"] for r in _failed(res).iter_rows(named=True)}
    assert failed == {"courses.drug.not_null_per_arm.ssri": "8", "sessions.dose_mg.none_per_arm.TAU": "9",
                      "sessions.dose_mg.not_null_per_arm.ssri": "10"}, failed
    assert not res.passed


# --------------------------------------------------------------------------- structure


def test_missing_column_is_a_failure_row_not_an_exception(structural, registries):
    failed = _failed(structural).filter(pl.col("table") == "sessions")
    dose_rules = {r.rule_id for r in build_rules(registries) if r.table == "sessions" and r.column == "dose_mg"}
    assert set(failed.get_column("rule_id")) == dose_rules | {
        "sessions.columns_present", "sessions.infusion_minutes.plausible_range",
    }
    not_null = _row(structural, "sessions.dose_mg.not_null_per_arm.ketamine_iv")  # (a drug arm's sessions)
    assert (not_null["error"], not_null["severity"], not_null["success"]) == (
        "column dose_mg is missing from sessions", CRITICAL, False,
    )
    assert _row(structural, "sessions.columns_present")["detail"] == "1 of 14 columns missing: dose_mg"
    assert "could not run: column dose_mg is missing from sessions" in structural.message()
    assert not structural.passed


def test_wrong_dtype_is_reported_not_raised(structural):
    assert _row(structural, "sessions.infusion_minutes.plausible_range")["error"] == (
        "column sessions.infusion_minutes has type String, the import format says DOUBLE"
    )


def test_missing_table_fails_its_rules_and_dependent_references(structural, registries):
    failed = _failed(structural).filter(pl.col("table") != "sessions")
    patients_rules = {r.rule_id for r in build_rules(registries) if r.table == "patients"}
    refs = {"courses.patient_id.reference", "mood_scores.patient_id.reference", "clinical_events.patient_id.reference"}
    assert set(failed.get_column("rule_id")) == patients_rules | refs
    assert set(failed.get_column("error")) == {"table patients was not provided"}


# --------------------------------------------------------------------------- message


def test_message_names_table_rule_and_counts_but_no_ids(corrupted):
    msg = corrupted.message()
    lines = msg.splitlines()
    assert len(lines) == len(EXPECTED)
    assert lines[0] == (
        "Validation failed: patients / patients.key_unique (each patient_id appears only once): "
        "2 of 5 rows (e.g. rows 5, 6)"
    )
    assert any(
        line.startswith("Validation failed: sessions / sessions.course_id.reference (every session's course_id")
        and line.endswith(": 1 of 6 rows (e.g. rows 7)")
        for line in lines
    )
    severities = ["failed" if line.startswith("Validation failed: ") else "warning" for line in lines]
    assert severities == sorted(severities)  # critical first
    # no cell value of any id column, clean or corrupted
    frames = corrupted_frames()
    for name, frame in frames.items():
        for col in TABLES[name].columns:
            if col.name.endswith("_id"):
                for value in frame.get_column(col.name).drop_nulls().unique():
                    assert value not in msg, (col.name, value)
    with pytest.raises(ValidationFailed) as info:
        corrupted.raise_if_failed()
    assert info.value.result is corrupted
    assert str(info.value) == msg
