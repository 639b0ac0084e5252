"""The command line: every verb has --help, errors are one clear line with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.docs import data_dictionary
from tests.conftest import TINY, write_export

runner = CliRunner()
VERBS = ["simulate", "ingest", "validate", "analyze", "report", "rollback", "query", "study", "dictionary", "reproduce"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb):
    res = runner.invoke(app, [verb, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output
    if verb not in ("simulate", "dictionary", "study"):
        assert "--db" in res.output and "KETAOUTCOMES_DB" in res.output


@pytest.mark.parametrize("verb", ["simulate", "report"])
def test_help_shows_the_target_trial_table_name_not_eaten_as_markup(verb):
    """--help is rendered with rich markup, where "[target_trial]" would be a tag and vanish."""
    res = runner.invoke(app, [verb, "--help"], terminal_width=200)
    assert res.exit_code == 0 and "[target_trial]" in res.output, res.output


def test_ingest_then_query_read_only(tmp_path):
    db = tmp_path / "w.duckdb"
    folder = write_export(tmp_path / "x")
    res = runner.invoke(app, ["ingest", str(folder), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "patients.csv: loaded (3 read = 3 loaded + 0 quarantined)" in res.output
    res = runner.invoke(app, ["query", "SELECT arm FROM stg_courses ORDER BY arm", "--db", str(db)])
    assert res.exit_code == 0 and "esketamine_intranasal" in res.output
    out = tmp_path / "c.csv"
    res = runner.invoke(app, ["query", "SELECT * FROM stg_patients", "--db", str(db), "--csv", str(out)])
    assert res.exit_code == 0 and out.read_text().startswith("patient_id,")
    res = runner.invoke(app, ["query", "DROP TABLE stg_patients", "--db", str(db)])
    assert res.exit_code == 1 and "read-only" in res.output


def test_db_from_environment_variable(tmp_path, monkeypatch):
    db = tmp_path / "env.duckdb"
    monkeypatch.setenv("KETAOUTCOMES_DB", str(db))
    res = runner.invoke(app, ["ingest", str(write_export(tmp_path / "x"))])
    assert res.exit_code == 0 and db.exists()


def test_errors_are_one_line_and_non_zero(tmp_path):
    res = runner.invoke(app, ["query", "SELECT 1", "--db", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 1 and "no warehouse at" in res.output
    bad = dict(TINY)
    bad["patients.csv"] = TINY["patients.csv"].replace("site,", "clinic,", 1)
    res = runner.invoke(app, ["ingest", str(write_export(tmp_path / "bad", bad)), "--db", str(tmp_path / "w.duckdb")])
    assert res.exit_code == 1 and "patients.csv: required column(s) site missing" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["analyze", "--db", str(tmp_path / "w.duckdb"), "--study", str(tmp_path / "missing.toml")])
    assert res.exit_code != 0 and "cannot read" in res.output


def test_study_file_is_validated_with_a_clear_error(tmp_path):
    """One line and exit 1, like every other error (it was a usage-error box with exit 2, the code the
    README keeps for a validation failure)."""
    study = tmp_path / "s.toml"
    study.write_text('name = "x"\nconfirm_min_days = 20\nconfirm_max_days = 10\n')
    res = runner.invoke(app, ["analyze", "--db", str(tmp_path / "w.duckdb"), "--study", str(study)])
    assert res.exit_code == 1 and res.stderr.startswith(f"error: study file {study}") and res.stderr.count("\n") == 1
    assert "confirm_min_days (20) must not exceed confirm_max_days (10)" in res.stderr


def test_docs_warehouse_dictionary_matches_the_contracts():
    """docs/warehouse.md is generated; regenerate with `python -m ketaoutcomes dictionary --warehouse`."""
    from pathlib import Path

    from ketaoutcomes.docs import warehouse_dictionary
    from ketaoutcomes.pipeline import output_contracts

    doc = Path(__file__).resolve().parents[2] / "docs" / "warehouse.md"
    res = runner.invoke(app, ["dictionary", "--warehouse"])
    assert res.exit_code == 0 and res.output == warehouse_dictionary(output_contracts())
    assert doc.read_text() == res.output, "regenerate: python -m ketaoutcomes dictionary --warehouse > docs/warehouse.md"
    for name in output_contracts():
        assert f"### {name}\n" in res.output and f"View `latest_{name}`" in res.output
    assert runner.invoke(app, ["dictionary"]).output == data_dictionary()  # the import format's, unchanged


def test_docs_data_dictionary_matches_the_contract():
    """docs/import-format.md is generated; regenerate with `python -m ketaoutcomes dictionary`."""
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "import-format.md"
    assert doc.read_text() == data_dictionary()


def test_study_prints_the_template_and_checks_a_file(tmp_path):
    from ketaoutcomes.settings import StudySettings

    res = runner.invoke(app, ["study"])
    assert res.exit_code == 0 and 'reference_arm = "ssri"' in res.output
    f = tmp_path / "s.toml"
    f.write_text(res.output.replace('name = "default"', 'name = "mine"'))
    res = runner.invoke(app, ["study", str(f)])
    assert res.exit_code == 0 and StudySettings(name="mine").settings_id in res.output


def test_main_sets_the_collector_thresholds_then_runs_the_app(monkeypatch):
    import gc

    from ketaoutcomes import cli

    seen, exits = [], []
    before = gc.get_threshold()
    monkeypatch.setattr(cli, "app", lambda: seen.append(gc.get_threshold()))
    monkeypatch.setattr(cli, "_exit_after_success", lambda: exits.append(True))  # (it would end pytest)
    try:
        cli.main()
    finally:
        gc.set_threshold(*before)
    assert seen == [cli.GC_THRESHOLDS] and cli.GC_THRESHOLDS[:2] == (700, 10) and cli.GC_THRESHOLDS[2] > 10
    assert exits == [True]


def _main_in_a_process(tmp_path, argv: list[str], before: str = "") -> subprocess.CompletedProcess:
    code = (f"import atexit, sys, threading, time\n{before}\n"
            "from ketaoutcomes.cli import main\n"
            f"sys.argv = ['ketaoutcomes', *{argv!r}]\nmain()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_a_command_that_succeeds_exits_0_with_all_its_output_and_its_exit_handlers_run(tmp_path):
    """Checked against the same command run by typer's test runner (the whole output) and against a
    file an exit handler writes: main() skips only the interpreter's teardown, not what an exit does."""
    marker = tmp_path / "handler-ran"
    handler = f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ok'))"
    out = _main_in_a_process(tmp_path, ["dictionary", "--warehouse"], handler)
    want = CliRunner().invoke(app, ["dictionary", "--warehouse"]).output
    assert out.returncode == 0 and len(want) > 65_536 and out.stdout == want  # more than a pipe's buffer
    assert marker.read_text() == "ok"


def test_a_command_that_fails_keeps_its_exit_code_and_one_line_error(tmp_path):
    out = _main_in_a_process(tmp_path, ["ingest", str(tmp_path / "no-such-folder")])
    assert out.returncode == 1 and out.stderr.startswith("error:") and "Traceback" not in out.stderr


def test_a_thread_still_running_is_waited_for_before_the_exit(tmp_path):
    # checked against the file the thread writes after the command is done: Python's exit waits for it
    marker = tmp_path / "thread-done"
    started = (f"threading.Thread(target=lambda: (time.sleep(0.5), open({str(marker)!r}, 'w').write('ok')), "
               "daemon=False).start()")
    out = _main_in_a_process(tmp_path, ["dictionary"], started)
    assert out.returncode == 0 and marker.read_text() == "ok"
