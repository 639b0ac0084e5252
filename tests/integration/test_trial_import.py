"""A real trial fits the import format without inventing data (issue 10, part 5).

The export is what a converted two-arm trial holds, and nothing more: psychotherapy vs treatment
as usual (arm codes ``psychotherapy`` and ``TAU``, neither a drug, no sessions), the self-rated
``BDI-II`` registered in the export's instruments.csv, ``patients.csv`` with the patient id, the
site and the trial's own covariates (``baseline_severity_band``, ``employment``), no sex, age,
prior trials, diagnosis, drug, dose or sessions file. Baseline is rated at 09:00 on the day of
randomisation (the course's start date), as trials do.

Each test is one requirement, run through the command line as a user would:

* the trial imports and runs through ``ingest``, ``validate``, ``analyze`` and ``report`` with
  exit 0; the trial's covariates are in the models; the report compares the two arms in its
  summary and never says "ketamine";
* a covariate the study declares but the export lacks, a level outside the declared levels, a
  numeric covariate holding text: an error naming the column, the row and the study file;
* a covariate of the study left empty for every patient: the attrition step that empties the
  population is the error, not an attrition row;
* the baseline rule of courses without sessions, both ways: by default the first dose is 00:00
  of the start date, so the 09:00 baseline is follow-up and no course has a baseline (an error
  naming the baseline step); with ``first_dose_without_sessions = "end_of_day"`` it is baseline;
* a name typed into a covariate column: refused by the PHI guard, the name never shown;
* ``sessions.csv`` left out while a course is on a session-based arm: an error;
* a study that uses ``sex`` on an export without it: an error, not a model without it.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.derive import derive_adsl
from ketaoutcomes.settings import StudySettings
from tests.conftest import query_db

runner = CliRunner()

N_PATIENTS = 120
LEVELS = {"baseline_severity_band": ["mild", "moderate", "severe"], "employment": ["employed", "unemployed", "student"]}

ARMS_CSV = "arm,label\npsychotherapy,Psychotherapy\nTAU,Treatment as usual\n"
INSTRUMENTS_CSV = ("instrument,label,rater,score_min,score_max,response_reduction,remission_max,relapse_min\n"
                   "BDI-II,Beck Depression Inventory-II,self,0,63,0.5,13,20\n")

STUDY = """name = "trial"
random_seed = 7
design = "randomised"

[cohort]
reference_arm = "TAU"
instrument = "BDI-II"
{first_dose}

[outcomes]
endpoints = ["TTRESP", "TTREM"]

[models]
covariates = ["baseline_score", {covariates}]
strata = "site"
bootstrap_replicates = 20

[models.extra_covariates]
{extra}
"""
EXTRA = ('baseline_severity_band = { type = "categorical", levels = ["mild", "moderate", "severe"] }\n'
         'employment = { type = "categorical", levels = ["employed", "unemployed", "student"] }\n')


def write_trial(folder: Path, *, seed: int = 7, patients_edit=None) -> Path:
    """The trial export (deterministic). ``patients_edit(rows)`` may change patients.csv's rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    patients, courses, scores = [], [], []
    for i in range(1, N_PATIENTS + 1):
        pid = f"{i}"  # trials number their patients
        arm = "psychotherapy" if i % 2 else "TAU"
        band = rng.choice(LEVELS["baseline_severity_band"])
        patients.append({"patient_id": pid, "site": "S1" if i <= N_PATIENTS // 2 else "S2",
                         "baseline_severity_band": band, "employment": rng.choice(LEVELS["employment"])})
        start = dt.date(2021, 1, 4) + dt.timedelta(days=rng.randrange(300))
        courses.append({"course_id": pid, "patient_id": pid, "arm": arm, "start_date": start.isoformat()})
        score = {"mild": 18, "moderate": 25, "severe": 33}[band] + rng.randint(-3, 3)
        when = dt.datetime.combine(start, dt.time(9, 0))  # baseline at randomisation, 09:00 on the start date
        scores.append({"patient_id": pid, "assessed_at": f"{when:%Y-%m-%d %H:%M}", "instrument": "BDI-II",
                       "total_score": score})
        speed = 0.035 if arm == "psychotherapy" else 0.02
        for week in (2, 4, 6, 8, 12):
            score = max(0, round(score * (1 - speed * 14 * rng.uniform(0.3, 1.7))))
            scores.append({"patient_id": pid, "assessed_at": f"{when + dt.timedelta(weeks=week):%Y-%m-%d %H:%M}",
                           "instrument": "BDI-II", "total_score": score})
    if patients_edit is not None:
        patients_edit(patients)
    for name, rows in (("patients.csv", patients), ("courses.csv", courses), ("mood_scores.csv", scores)):
        with open(folder / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    (folder / "arms.csv").write_text(ARMS_CSV)
    (folder / "instruments.csv").write_text(INSTRUMENTS_CSV)
    return folder


def write_study(path: Path, *, first_dose: str = 'first_dose_without_sessions = "end_of_day"',
                covariates: str = '"baseline_severity_band", "employment"', extra: str = EXTRA) -> Path:
    path.write_text(STUDY.format(first_dose=first_dose, covariates=covariates, extra=extra))
    return path


def ok(res) -> str:
    assert res.exit_code == 0, (res.exit_code, res.output, res.exception)
    return res.output


def error_line(res) -> str:
    """The one-line error of a failed command: exit 1, one 'error:' line, no traceback."""
    assert res.exit_code == 1, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def page_text(path: Path) -> str:
    """The words of an HTML page a reader sees (no markup, scripts, styles or images)."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", path.read_text(), flags=re.S)
    page = re.sub(r'src="data:[^"]*"', "", page)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """The trial through ingest, validate, analyze and report; the warehouse, study, report and outputs."""
    root = tmp_path_factory.mktemp("trial")
    export = write_trial(root / "export")
    db, study = root / "w.duckdb", write_study(root / "trial.toml")
    outputs = {
        "ingest": ok(runner.invoke(app, ["ingest", str(export), "--db", str(db)])),
        "validate": ok(runner.invoke(app, ["validate", "--db", str(db)])),
        "analyze": ok(runner.invoke(app, ["analyze", "--db", str(db), "--study", str(study)])),
        "report": ok(runner.invoke(app, ["report", "--db", str(db), "--study", str(study),
                                         "--out", str(root / "reports")])),
    }
    return {"root": root, "export": export, "db": db, "study": study, "outputs": outputs,
            "report": root / "reports" / "ketaoutcomes-trial.html"}


# ---------------------------------------------------------------------------
# The trial imports with only its own columns and runs to a report
# ---------------------------------------------------------------------------

def test_the_export_holds_only_the_trials_own_columns(trial):
    """The fixture invents nothing: the files' headers are the trial's, and there is no sessions file."""
    headers = {p.name: p.read_text().splitlines()[0] for p in trial["export"].iterdir()}
    assert headers == {
        "patients.csv": "patient_id,site,baseline_severity_band,employment",
        "courses.csv": "course_id,patient_id,arm,start_date",
        "mood_scores.csv": "patient_id,assessed_at,instrument,total_score",
        "arms.csv": "arm,label",
        "instruments.csv": INSTRUMENTS_CSV.splitlines()[0],
    }


def test_every_row_loads_and_the_trials_covariates_are_kept(trial):
    db = trial["db"]
    out = trial["outputs"]["ingest"]
    assert f"patients.csv: loaded ({N_PATIENTS} read = {N_PATIENTS} loaded + 0 quarantined)" in out
    assert "kept for study covariates: baseline_severity_band, employment" in out
    assert query_db(db, "SELECT count(*) n FROM quarantine")["n"][0] == 0
    row = query_db(db, "SELECT sex, age_at_index, prior_failed_trials, diagnosis, _extra FROM stg_patients "
                       "WHERE patient_id = '1'").row(0, named=True)
    assert (row["sex"], row["age_at_index"], row["prior_failed_trials"], row["diagnosis"]) == (None,) * 4
    extra = json.loads(row["_extra"])
    assert set(extra) == set(LEVELS) and all(extra[k] in LEVELS[k] for k in LEVELS)
    assert query_db(db, "SELECT count(*) n FROM stg_sessions")["n"][0] == 0
    assert query_db(db, "SELECT count(*) n FROM ref_arms WHERE arm IN ('TAU', 'psychotherapy') "
                        "AND dose_min_mg IS NULL")["n"][0] == 2


def test_validate_and_analyze_pass_with_the_trials_covariates_in_the_models(trial):
    assert "validation passed" in trial["outputs"]["validate"]
    assert f"{N_PATIENTS:,} courses analysed" in trial["outputs"]["analyze"]
    db = trial["db"]
    terms = set(query_db(db, "SELECT term FROM results_cox WHERE model = 'adjusted' AND paramcd = 'TTRESP'")["term"])
    assert {"ARM[psychotherapy]", "baseline_severity_band[mild]", "baseline_severity_band[moderate]",
            "employment[employed]", "employment[student]"} <= terms, terms
    fit = query_db(db, "SELECT reference_levels FROM results_cox_fit WHERE model = 'adjusted' AND paramcd = 'TTRESP'")
    assert fit["reference_levels"][0].startswith("ARM=TAU")
    balance = set(query_db(db, "SELECT DISTINCT variable FROM results_balance")["variable"])
    assert {"baseline_severity_band", "employment", "SITEID", "BASE"} <= balance, balance
    # ad_adsl stores the trial's covariates as declared, as JSON beside the contract's columns
    adsl = query_db(db, "SELECT SEX, AGE, EXTRACOV, BASEDTM, TRTSDTM FROM ad_adsl WHERE USUBJID = '1'").row(0, named=True)
    assert adsl["SEX"] is None and adsl["AGE"] is None and '"employment":' in adsl["EXTRACOV"]
    assert adsl["BASEDTM"].time() == dt.time(9, 0) and adsl["BASEDTM"].date() == adsl["TRTSDTM"].date()


def test_the_report_compares_the_two_arms_never_says_ketamine_and_says_randomised(trial):
    text = page_text(trial["report"])
    assert "ketamine" not in text.lower()
    assert "route" not in text.lower()  # the arms compared are arms, not routes of a drug
    summary = text[text.index("Summary:"):text.index("Contents")]
    assert "Summary: does each arm lead to response faster than Treatment as usual" in summary
    assert "Arm vs Treatment as usual" in summary
    assert re.search(r"Psychotherapy balanced and in equipoise \d+ vs \d+", summary), summary[:600]
    assert "Psychotherapy (balanced and in equipoise): By day 28" in summary
    start = text.index("Cohort by arm (analysis population)")
    cohort = text[start:text.index("Attrition patients in the export", start)]
    for level in ("mild", "moderate", "severe", "employed", "unemployed", "student"):
        assert f" {level} " in cohort
    assert "Not in the export, so not shown: age, sex, prior failed trials, diagnosis" in cohort
    assert "Age, years" not in cohort and "Female" not in cohort
    # the study declares the trial randomised: the report reads the naive comparison as such
    assert "These are data from a randomised trial (the study's design)" in text
    assert "observational clinic data" not in text and "Observational data:" not in text
    assert "are confounded by indication" not in text and "never read it alone" not in text


# ---------------------------------------------------------------------------
# A study that does not fit the trial's data: one line naming what to fix
# ---------------------------------------------------------------------------

def _analyze(trial, study: Path):
    return runner.invoke(app, ["analyze", "--db", str(trial["db"]), "--study", str(study)])


def test_a_declared_covariate_the_export_lacks_names_the_column_and_the_study_file(trial, tmp_path):
    study = write_study(tmp_path / "marital.toml", covariates='"employment", "marital_status"',
                        extra=EXTRA.splitlines()[1] + '\nmarital_status = { type = "categorical", '
                                                      'levels = ["single", "married"] }\n')
    line = error_line(_analyze(trial, study))
    assert 'covariate "marital_status"' in line and str(study) in line and "not in the data" in line
    assert "employment" in line  # the columns it kept


def test_a_level_outside_the_declared_levels_is_an_error_naming_the_row(trial, tmp_path):
    """An error, not a quarantined row: ingest kept the value as text (it does not know the study), and
    dropping those patients now would change the population unseen: the declaration or the export is wrong."""
    study = write_study(tmp_path / "levels.toml", extra=EXTRA.replace('"unemployed", "student"', '"unemployed"'))
    first = next(i for i, r in enumerate(csv.DictReader(open(trial["export"] / "patients.csv")), start=1)
                 if r["employment"] == "student")
    line = error_line(_analyze(trial, study))
    assert 'covariate "employment" (categorical in [models.extra_covariates] of study file' in line
    assert f"patients row {first} (batch patients-" in line and "not one of its levels employed, unemployed" in line
    assert str(study) in line


def test_a_numeric_covariate_holding_text_is_an_error_naming_the_row(trial, tmp_path):
    study = write_study(tmp_path / "numeric.toml", covariates='"employment"',
                        extra='employment = { type = "numeric" }\n')
    line = error_line(_analyze(trial, study))
    assert 'covariate "employment" (numeric in' in line and "patients row 1 (batch" in line
    assert "not a number" in line and str(study) in line


def test_study_checks_the_declaration_against_a_warehouse_without_running_anything(trial, tmp_path):
    ok(runner.invoke(app, ["study", str(trial["study"]), "--db", str(trial["db"])]))
    study = write_study(tmp_path / "levels.toml", extra=EXTRA.replace('"mild", ', ""))
    line = error_line(runner.invoke(app, ["study", str(study), "--db", str(trial["db"])]))
    assert 'covariate "baseline_severity_band" (categorical in [models.extra_covariates] of study file' in line


def test_a_study_using_sex_on_an_export_without_it_is_an_error(trial, tmp_path):
    study = write_study(tmp_path / "sex.toml", covariates='"sex", "employment"', extra=EXTRA.splitlines()[1])
    line = error_line(_analyze(trial, study))
    assert 'covariate "sex" has no value in the data' in line


def test_a_covariate_empty_for_every_patient_is_an_error_naming_the_attrition_step(tmp_path):
    """The trial's own column holds a value for no patient who has a course: kept (P999, without a
    course, has one), so the study check passes, and the covariate step of the attrition empties the
    population: an error naming it, never a report of nobody."""
    def empty_bands(rows):
        for r in rows:
            r["baseline_severity_band"] = ""
        rows.append({"patient_id": "999", "site": "S1", "baseline_severity_band": "mild", "employment": "student"})
    export = write_trial(tmp_path / "export", patients_edit=empty_bands)
    db = tmp_path / "w.duckdb"
    ok(runner.invoke(app, ["ingest", str(export), "--db", str(db)]))
    line = error_line(runner.invoke(app, ["analyze", "--db", str(db), "--study", str(write_study(tmp_path / "s.toml"))]))
    assert line.startswith('error: analysis: no course left after "a value in every covariate and the strata of the '
                           f'study (baseline_severity_band, employment, site)" ({N_PATIENTS} -> 0)'), line
    assert not query_db(db, "SELECT count(*) n FROM information_schema.tables WHERE table_name = 'results_runs'")["n"][0]


# ---------------------------------------------------------------------------
# The baseline rule of courses without sessions, both ways
# ---------------------------------------------------------------------------

def test_by_default_a_baseline_at_09_00_on_the_start_date_is_not_baseline_an_error_names_the_step(trial, tmp_path):
    study = write_study(tmp_path / "default.toml", first_dose="")
    line = error_line(_analyze(trial, study))
    assert line == (f'error: analysis: no course left after "baseline BDI-II in [first dose - 14 d, first dose]" '
                    f'({N_PATIENTS} -> 0); check the instrument and the baseline window (cohort.instrument, '
                    'cohort.baseline_window_days; for courses without sessions also cohort.first_dose_without_sessions: '
                    'a rating on the start date is baseline only with "end_of_day")')


@pytest.mark.parametrize("rule, baseline_at", [("start_of_day", None), ("end_of_day", dt.datetime(2021, 3, 1, 9))])
def test_first_dose_without_sessions_decides_whether_a_rating_that_day_is_baseline(rule, baseline_at):
    """A course without sessions starting 2021-03-01, rated at 09:00 that day and two weeks later:
    start_of_day puts the first dose at 00:00, so the 09:00 rating is follow-up and there is no
    baseline; end_of_day puts it at the end of the day, so the 09:00 rating is the baseline and the
    next rating is follow-up."""
    import polars as pl

    from ketaoutcomes.contract import polars_schema

    def staged(table: str, **values) -> pl.DataFrame:  # one row of a staged table, the columns not given empty
        schema = polars_schema(table)
        return pl.DataFrame({c: [values.get(c)] for c in schema}, schema=schema)

    patients = staged("patients", patient_id="1", site="S1")
    courses = staged("courses", course_id="1", patient_id="1", arm="TAU", start_date=dt.date(2021, 3, 1))
    sessions = staged("sessions").clear()
    scores = pl.DataFrame({"patient_id": ["1", "1"], "instrument": ["BDI-II"] * 2, "total_score": [30.0, 12.0],
                           "assessed_at": [dt.datetime(2021, 3, 1, 9), dt.datetime(2021, 3, 15, 9)]})
    study = StudySettings.model_validate({"cohort": {"reference_arm": "TAU", "instrument": "BDI-II",
                                                     "first_dose_without_sessions": rule},
                                          "models": {"covariates": ["baseline_score"]}})
    adsl, attrition = derive_adsl(patients, courses, sessions, scores, study=study)
    row = adsl.row(0, named=True)
    assert row["BASEDTM"] == baseline_at
    assert row["NPOST"] == (2 if rule == "start_of_day" else 1)
    assert row["ANLFL"] == ("N" if rule == "start_of_day" else "Y")
    expected_first_dose = dt.datetime(2021, 3, 1) if rule == "start_of_day" else \
        dt.datetime(2021, 3, 2) - dt.timedelta(microseconds=1)
    assert row["TRTSDTM"] == expected_first_dose


# ---------------------------------------------------------------------------
# Loud at the door
# ---------------------------------------------------------------------------

def test_a_name_in_a_covariate_column_refuses_the_export_without_showing_it(tmp_path):
    def name_in_employment(rows):
        rows[6]["employment"] = "Margaret Whitfield"
    export = write_trial(tmp_path / "export", patients_edit=name_in_employment)
    db = tmp_path / "w.duckdb"
    line = error_line(runner.invoke(app, ["ingest", str(export), "--db", str(db)]))
    assert "patients.csv" in line and "employment" in line and "value.person_name" in line
    assert "Whitfield" not in line and not db.exists()


def test_sessions_left_out_while_a_course_is_on_a_session_based_arm_is_an_error(tmp_path):
    """Only an export without session-based arms may leave out sessions.csv: here one course is on
    ketamine_iv (session-based in the registry), whose sessions are its first dose and exposure."""
    export = write_trial(tmp_path / "export")
    lines = (export / "courses.csv").read_text().splitlines()
    lines[0] += ",drug"
    lines[1:] = [x + "," for x in lines[1:]]
    lines[2] = lines[2].replace(",TAU,", ",ketamine_iv,") + "ketamine"
    (export / "courses.csv").write_text("\n".join(lines) + "\n")
    db = tmp_path / "w.duckdb"
    line = error_line(runner.invoke(app, ["ingest", str(export), "--db", str(db)]))
    assert "sessions.csv missing" in line and "session-based arm(s) ketamine_iv" in line
    assert not db.exists()
