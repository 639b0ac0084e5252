"""Mistakes in a study or a command fail loud: exit 1 and one line on stderr starting with
"error:", never a traceback, and nothing created or published where that matters.

Each test is one of the mistakes that used to exit 0 (or end in a traceback):

* a study naming an arm that is not in the registry, or the reference arm in the wrong case;
* an export file named like a table but not quite (mood-scores.csv);
* the default study (MADRS) on data without MADRS ratings; a baseline window that leaves no course,
  or no course of one arm;
* validate / analyze / report with a mistyped --db (an empty warehouse appeared there);
* an export without patients.csv (a 108-line ShapeError traceback on a large export);
* any unexpected exception (one line naming it; --debug shows the trace).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.pipeline import ingest_step, validate_step
from tests.conftest import TINY, query_db, write_export

runner = CliRunner()


def error_line(res) -> str:
    """The one error line of a failed command: exit 1, exactly one stderr line starting with
    "error:" and it is the last (step lines such as "done validate: ..." may come before it), no
    traceback anywhere."""
    assert res.exit_code == 1, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    return errors[0]


def only_error_line(res) -> str:
    """As :func:`error_line`, and nothing else on stderr."""
    line = error_line(res)
    assert res.stderr.strip() == line, res.stderr
    return line


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def study_file(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def validated_tiny(tmp_path_factory) -> Path:
    """A warehouse holding the TINY export, validated (built once; tests copy it)."""
    root = tmp_path_factory.mktemp("tiny")
    db = root / "w.duckdb"
    ingest_step(db, write_export(root / "export"))
    validate_step(db)
    return db


@pytest.fixture
def db(validated_tiny, tmp_path) -> Path:
    copy = tmp_path / "wh" / "w.duckdb"
    copy.parent.mkdir()
    shutil.copyfile(validated_tiny, copy)
    return copy


# ---------------------------------------------------------------------------
# 1. The study against the registry and the data
# ---------------------------------------------------------------------------

MISSPELT_ARM = 'name = "typo"\n[cohort]\narms = ["ssri", "esketamine_intransal"]\n'
WRONG_CASE_REFERENCE = 'name = "case"\n[cohort]\nreference_arm = "SSRI"\n'


def test_study_naming_an_arm_not_in_the_registry_is_an_error_with_the_nearest_name(tmp_path):
    res = runner.invoke(app, ["study", str(study_file(tmp_path, MISSPELT_ARM))])
    line = only_error_line(res)
    assert line.startswith('error: study: arm "esketamine_intransal" is not an arm of the registry; '
                           'did you mean "esketamine_intranasal"?')


def test_reference_arm_in_the_wrong_case_is_an_error_with_the_nearest_name(tmp_path):
    res = runner.invoke(app, ["study", str(study_file(tmp_path, WRONG_CASE_REFERENCE))])
    line = only_error_line(res)
    assert line.startswith('error: study: reference_arm "SSRI" is not an arm of the registry; did you mean "ssri"?')


@pytest.mark.parametrize("text, expected", [
    (MISSPELT_ARM, 'arm "esketamine_intransal" is not an arm of the registry; did you mean "esketamine_intranasal"?'),
    (WRONG_CASE_REFERENCE, 'reference_arm "SSRI" is not an arm of the registry; did you mean "ssri"?'),
])
def test_analyze_with_a_misspelt_arm_fails_and_publishes_nothing(db, tmp_path, text, expected):
    before = sha(db)
    res = runner.invoke(app, ["analyze", "--db", str(db), "--study", str(study_file(tmp_path, text))])
    assert error_line(res) == f"error: study: {expected}"
    assert sha(db) == before


def test_study_checked_against_a_warehouse_names_arms_without_courses_and_instruments_without_ratings(db, tmp_path):
    ok = runner.invoke(app, ["study", str(study_file(tmp_path, 'name = "x"\n')), "--db", str(db)])
    assert ok.exit_code == 0 and "valid; settings_id" in ok.stdout, ok.output
    text = 'name = "x"\n[cohort]\narms = ["ssri", "ketamine_im"]\ninstrument = "PHQ9"\n'
    res = runner.invoke(app, ["study", str(study_file(tmp_path, text)), "--db", str(db)])
    line = only_error_line(res)
    assert 'arm "ketamine_im" has no course in the data (arms with courses: esketamine_intranasal, ketamine_iv, ssri)' in line
    assert 'instrument "PHQ9" has no ratings in the data (instruments rated: MADRS); set cohort.instrument' in line


def test_study_check_against_a_missing_warehouse_creates_nothing(tmp_path):
    missing = tmp_path / "nowhere" / "w.duckdb"
    res = runner.invoke(app, ["study", str(study_file(tmp_path, 'name = "x"\n')), "--db", str(missing)])
    assert "no warehouse at" in only_error_line(res) and not missing.parent.exists()


def test_a_covariate_without_values_is_an_error(tmp_path):
    files = dict(TINY)
    files["patients.csv"] = "\n".join(line.rsplit(",", 1)[0] + "," if i else line
                                      for i, line in enumerate(TINY["patients.csv"].strip().splitlines())) + "\n"
    db = tmp_path / "w.duckdb"
    ingest_step(db, write_export(tmp_path / "export", files))
    validate_step(db)
    text = 'name = "w"\n[models]\ncovariates = ["age_at_index", "weight_kg"]\n'
    res = runner.invoke(app, ["analyze", "--db", str(db), "--study", str(study_file(tmp_path, text))])
    assert error_line(res) == ('error: study: covariate "weight_kg" has no value in the data (patients.weight_kg is '
                               "empty for every patient); leave it out of models.covariates")


# ---------------------------------------------------------------------------
# 2. Export file names
# ---------------------------------------------------------------------------

def test_an_export_file_named_nearly_like_a_table_is_an_error_and_nothing_is_created(tmp_path):
    files = dict(TINY)
    files["mood-scores.csv"] = files.pop("mood_scores.csv")
    export = write_export(tmp_path / "export", files)
    db = tmp_path / "new" / "w.duckdb"
    res = runner.invoke(app, ["report", "--export", str(export), "--db", str(db), "--out", str(tmp_path / "r")])
    line = only_error_line(res)
    assert "mood-scores.csv looks like table mood_scores: name it mood_scores.csv" in line
    assert not db.parent.exists() and not (tmp_path / "r").exists()


def test_an_export_without_patients_is_a_one_line_error_and_nothing_is_created(tmp_path):
    export = write_export(tmp_path / "export", {k: v for k, v in TINY.items() if k != "patients.csv"})
    db = tmp_path / "new" / "w.duckdb"
    for argv in (["ingest", str(export), "--db", str(db)],
                 ["report", "--export", str(export), "--db", str(db), "--out", str(tmp_path / "r")]):
        line = only_error_line(runner.invoke(app, argv))
        assert f"error: {export.resolve()}: patients.csv missing" in line or f"error: {export}: patients.csv missing" in line
        assert not db.parent.exists()


# ---------------------------------------------------------------------------
# 3. Nothing left to analyse
# ---------------------------------------------------------------------------

def test_the_default_study_on_data_without_its_instrument_fails_and_publishes_no_analysis(tmp_path):
    files = dict(TINY)
    files["mood_scores.csv"] = TINY["mood_scores.csv"].replace(",MADRS,", ",HAMD17,")
    export = write_export(tmp_path / "export", files)
    db, reports = tmp_path / "w.duckdb", tmp_path / "reports"
    res = runner.invoke(app, ["report", "--export", str(export), "--db", str(db), "--out", str(reports)])
    assert error_line(res) == ('error: study: instrument "MADRS" has no ratings in the data (instruments rated: '
                               "HAMD17); set cohort.instrument")
    assert query_db(db, "SELECT count(*) n FROM meta_steps WHERE step = 'analyze'")["n"][0] == 0
    assert not reports.exists()


def test_no_course_left_names_the_attrition_rule_that_emptied_it(db, tmp_path):
    before = sha(db)
    study = study_file(tmp_path, 'name = "w0"\n[cohort]\nbaseline_window_days = 0\n')
    res = runner.invoke(app, ["analyze", "--db", str(db), "--study", str(study)])
    assert error_line(res) == (
        'error: analysis: no course left after "baseline MADRS in [first dose - 0 d, first dose]" (3 -> 0); '
        "check the instrument and the baseline window (cohort.instrument, cohort.baseline_window_days; for courses "
        'without sessions also cohort.first_dose_without_sessions: a rating on the start date is baseline only with '
        '"end_of_day")')
    assert sha(db) == before  # the write session rolled back: no results_runs, no meta_steps row


def test_an_arm_of_the_study_absent_from_the_analysis_population_is_an_error(db, tmp_path):
    before = sha(db)
    study = study_file(tmp_path, 'name = "w2"\n[cohort]\nbaseline_window_days = 2\n')  # P3's baseline is 3 d before
    res = runner.invoke(app, ["analyze", "--db", str(db), "--study", str(study)])
    assert error_line(res).startswith(
        'error: analysis: arm "esketamine_intranasal": no course left after '
        '"baseline MADRS in [first dose - 2 d, first dose]" (1 -> 0); check the instrument and the baseline window')
    assert sha(db) == before


# ---------------------------------------------------------------------------
# 4. Read steps never create a warehouse
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["validate", "analyze", "report", "query"])
def test_a_mistyped_db_is_one_line_and_creates_nothing(verb, tmp_path):
    missing = tmp_path / "typo" / "w.duckdb"
    argv = [verb, *(["SELECT 1"] if verb == "query" else []), "--db", str(missing)]
    if verb == "report":
        argv += ["--out", str(tmp_path / "r")]
    line = only_error_line(runner.invoke(app, argv))
    assert line.startswith(f"error: no warehouse at {missing}")
    assert not missing.parent.exists() and not (tmp_path / "r").exists()


def test_db_from_the_environment_is_not_made_up_either(tmp_path, monkeypatch):
    missing = tmp_path / "typo" / "w.duckdb"
    monkeypatch.setenv("KETAOUTCOMES_DB", str(missing))
    line = only_error_line(runner.invoke(app, ["report", "--out", str(tmp_path / "r")]))
    assert line.startswith(f"error: no warehouse at {missing}") and not missing.parent.exists()


def test_a_warehouse_without_data_is_one_line(tmp_path):
    from ketaoutcomes.warehouse import write_session

    db = tmp_path / "w.duckdb"
    with write_session(db):
        pass  # schema only, as an earlier version's validate left behind
    before = sha(db)
    for verb in ("validate", "analyze"):
        line = only_error_line(runner.invoke(app, [verb, "--db", str(db)]))
        assert line.startswith(f"error: the warehouse {db} holds no data; run `python -m ketaoutcomes ingest DIR")
    assert sha(db) == before


def test_report_in_the_default_warehouse_still_simulates_the_default_cohort(tmp_path, monkeypatch):
    """The README's main command on a fresh checkout (a small cohort to keep the test quick); then
    with $KETAOUTCOMES_DB naming that same default warehouse (as scripts/benchmark.py does) it is
    the same warehouse and the same report: nothing to redo (one full run, not two)."""
    monkeypatch.setenv("KETAOUTCOMES_HOME", str(tmp_path))
    monkeypatch.delenv("KETAOUTCOMES_DB", raising=False)
    res = runner.invoke(app, ["report", "--patients", "200"])
    assert res.exit_code == 0, res.output
    db = tmp_path / "data" / "warehouse" / "ketaoutcomes.duckdb"
    html = tmp_path / "reports" / "ketaoutcomes-default.html"
    assert db.exists() and html.exists()
    before = html.read_bytes()
    monkeypatch.setenv("KETAOUTCOMES_DB", str(db))
    res = runner.invoke(app, ["report", "--patients", "200"])
    assert res.exit_code == 0, res.output
    assert "up to date" in res.output, res.output
    assert html.read_bytes() == before


# ---------------------------------------------------------------------------
# 5. No traceback, whatever happens
# ---------------------------------------------------------------------------

def test_an_unexpected_exception_is_one_line_and_debug_shows_it(tmp_path, monkeypatch):
    import ketaoutcomes.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("something broke\nsecond line of the message")

    monkeypatch.setattr(pipeline, "ingest_step", broken)
    export = write_export(tmp_path / "export")
    res = runner.invoke(app, ["ingest", str(export), "--db", str(tmp_path / "w.duckdb")])
    # the message is not shown (a library's message can quote a cell value); --debug shows it
    assert only_error_line(res) == ("error: internal error (RuntimeError); "
                                    "rerun with --debug for the message and the trace")
    res = runner.invoke(app, ["--debug", "ingest", str(export), "--db", str(tmp_path / "w.duckdb")])
    assert res.exit_code == 1 and isinstance(res.exception, RuntimeError)


def test_a_bad_study_file_is_one_line(tmp_path):
    res = runner.invoke(app, ["study", str(study_file(tmp_path, "name = [", "bad.toml"))])
    assert only_error_line(res).startswith(f"error: study file {tmp_path / 'bad.toml'} is not valid TOML")


def test_a_folder_that_cannot_be_written_is_one_line_not_an_internal_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = runner.invoke(app, ["simulate", "--patients", "100", "--out", str(blocker / "export")])
    line = only_error_line(res)
    assert str(blocker) in line and "internal error" not in line
