"""The Prefect wrappers: deployments as documented, the parent flow end to end
against a temporary Prefect API, and a validation failure failing the flow.

The harness tests share one temporary server (session fixture in conftest.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import flows.deploy as deploy
import flows.pipeline as fp
import ketaoutcomes.pipeline as steps
from ketaoutcomes.settings import StudySettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_MD = REPO_ROOT / "dags.md"
IMPORT_TABLES = ("patients", "courses", "sessions", "adverse_events", "mood_scores", "clinical_events")

EXPECTED_DEPLOYMENTS = {
    "ketaoutcomes-ingest/nightly-ingest-validate": "0 2 * * *",
    "ketaoutcomes-analysis/weekly-analysis-report": "0 4 * * 1",
    "ketaoutcomes-pipeline/on-demand": None,
}


# --------------------------------------------------------------------------- deployments (no server)


def test_deployments_have_documented_names_crons_and_timezone():
    rows = {r["name"]: r for r in deploy.describe(deploy.build_deployments())}
    assert set(rows) == set(EXPECTED_DEPLOYMENTS)
    for name, cron in EXPECTED_DEPLOYMENTS.items():
        row = rows[name]
        if cron is None:
            assert row["schedules"] == []
        else:
            assert row["schedules"] == [{"cron": cron, "timezone": "UTC", "active": True}]
        # nothing given: the flows resolve every path at run time, like the CLI
        assert row["parameters"] == {}
        assert row["concurrency_limit"] == 1
        assert row["tags"] == ["ketaoutcomes"]


def test_deployment_parameters_are_the_paths_given_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deps = deploy.build_deployments(db="w.duckdb", export_dir="exp", study_file="s.json", reports_dir="rep")
    params = {d.name: d.parameters for d in deps}
    w, exp, s, rep = (str(tmp_path / p) for p in ("w.duckdb", "exp", "s.json", "rep"))
    assert params["nightly-ingest-validate"] == {"db": w, "export_dir": exp}
    assert params["weekly-analysis-report"] == {"db": w, "study_file": s, "reports_dir": rep}
    assert params["on-demand"] == {"db": w, "export_dir": exp, "study_file": s, "reports_dir": rep}


def test_demo_interval_replaces_the_crons():
    rows = {r["name"]: r for r in deploy.describe(deploy.build_deployments(demo_interval=30))}
    assert rows["ketaoutcomes-ingest/nightly-ingest-validate"]["schedules"] == [
        {"interval_seconds": 30.0, "timezone": "UTC", "active": True}
    ]
    assert rows["ketaoutcomes-pipeline/on-demand"]["schedules"] == []


def test_check_flag_prints_the_deployments_and_starts_nothing(capsys):
    assert deploy.main(["--check"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {r["name"]: (r["schedules"][0]["cron"] if r["schedules"] else None) for r in printed} == EXPECTED_DEPLOYMENTS


def test_the_local_server_is_given_its_own_address_for_its_ui():
    """Prefect 3.8.8's UI calls the api_url of /ui-settings: PREFECT_UI_API_URL, else PREFECT_API_URL,
    else PREFECT_SERVER_API_HOST/PORT; `prefect server start --port N` sets none of them."""
    env = deploy.server_environment("127.0.0.1", 4711, {"PREFECT_API_URL": "http://elsewhere:4200/api", "PATH": "/bin"})
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4711/api"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1" and env["PREFECT_SERVER_API_PORT"] == "4711"
    assert "PREFECT_API_URL" not in env and env["PATH"] == "/bin"
    assert deploy.server_environment("::1", 4711, {})["PREFECT_UI_API_URL"] == "http://[::1]:4711/api"
    # a UI API URL the operator set (a proxy in front of the server) is kept
    for name in deploy.UI_API_URL_SETTINGS:
        kept = deploy.server_environment("127.0.0.1", 4711, {name: "https://prefect.example/api"})
        assert kept[name] == "https://prefect.example/api" and kept.get("PREFECT_UI_API_URL", kept[name]) == kept[name]


@pytest.mark.slow
def test_a_server_started_on_another_port_serves_a_ui_that_calls_that_port(monkeypatch):
    import socket
    import urllib.request

    for name in deploy.UI_API_URL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with deploy.local_server("127.0.0.1", port) as server:
        assert server.started_here and server.api_url == f"http://127.0.0.1:{port}/api"
        # the UI (v1 and v2 alike) asks /ui-settings which API to call
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=30) as r:
            assert json.loads(r.read())["api_url"] == f"http://127.0.0.1:{port}/api"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert r.status == 200 and b"<html" in r.read().lower()


def test_dags_md_matches_the_code():
    text = DAGS_MD.read_text(encoding="utf-8")
    assert "uv run python -m flows.deploy" in text
    for name, cron in EXPECTED_DEPLOYMENTS.items():
        assert f"`{name}`" in text
        if cron:
            assert f"`{cron}`" in text
    for flow_name in fp.FLOW_NAMES.values():
        assert flow_name in text
    for task_name in fp.TASK_NAMES:
        assert f"task <b>{task_name}</b>" in text and f"| `{task_name}` |" in text
    assert text.count("```mermaid") == 3


def test_retry_policy_never_retries_validation():
    from ketaoutcomes.validate import ValidationFailed
    from ketaoutcomes.warehouse import DiskFull, WarehouseBusy, WarehouseChanged

    assert fp.validate_task.retries == 0
    assert fp.simulate_task.retries == 0
    for t in (fp.ingest_task, fp.analyze_task, fp.render_task):
        assert t.retries == 2 and t.retry_condition_fn is fp.retry_if_transient

    def state(exc):
        return SimpleNamespace(data=exc)

    assert fp.retry_if_transient(None, None, state(WarehouseBusy("writer lock held")))
    assert fp.retry_if_transient(None, None, state(WarehouseChanged("published meanwhile")))
    assert not fp.retry_if_transient(None, None, state(DiskFull("disk full while writing w.duckdb")))
    assert not fp.retry_if_transient(None, None, state(ValidationFailed(SimpleNamespace(message=lambda: "x"))))
    assert not fp.retry_if_transient(None, None, state(steps.AnalysisNotReady("not validated")))
    assert not fp.retry_if_transient(None, None, state(FileNotFoundError("no export")))


# --------------------------------------------------------------------------- with a Prefect API


def _documented_tables() -> set[str]:
    text = DAGS_MD.read_text(encoding="utf-8")
    block = text.split("<!-- warehouse-tables:begin -->")[1].split("<!-- warehouse-tables:end -->")[0]
    names: set[str] = set()
    for cell in re.findall(r"^\| `([a-z_<>]+)` \|", block, flags=re.M):
        names |= {cell.replace("<table>", t) for t in IMPORT_TABLES} if "<table>" in cell else {cell}
    return names


def _runs(flow_run_id):
    """The flow run, its subflow runs and all their task runs, from the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(flow_run_id)
        subs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        ids = [flow_run_id, *(s.id for s in subs)]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        flow_names = {f.id: f.name for f in client.read_flows()}
    return parent, subs, tasks, flow_names


def _artifacts(key: str, flow_run_ids) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=list(flow_run_ids))
            )
        )


@pytest.mark.slow
def test_parent_flow_runs_end_to_end(prefect_harness, tmp_path):
    from ketaoutcomes.warehouse import read_connection

    study_file = tmp_path / "study.json"
    study_file.write_text(StudySettings(name="flowtest").model_dump_json())
    db = tmp_path / "warehouse" / "w.duckdb"

    state = fp.ketaoutcomes_pipeline(
        export_dir=str(tmp_path / "export"),
        db=str(db),
        study_file=str(study_file),
        reports_dir=str(tmp_path / "reports"),
        n_patients=200,
        seed=1,
        return_state=True,
    )
    assert state.is_completed(), state.message
    report = Path(state.result())
    assert report == tmp_path / "reports" / "ketaoutcomes-flowtest.html"
    assert report.is_file() and report.stat().st_size > 10_000

    parent, subs, tasks, flow_names = _runs(state.state_details.flow_run_id)
    assert flow_names[parent.flow_id] == "ketaoutcomes-pipeline"
    assert parent.state.type.value == "COMPLETED"
    assert sorted(flow_names[s.flow_id] for s in subs) == ["ketaoutcomes-analysis", "ketaoutcomes-ingest"]
    assert all(s.state.type.value == "COMPLETED" for s in subs), [(s.name, s.state) for s in subs]
    by_task = {t.name.rsplit("-", 1)[0]: t for t in tasks}
    for name in fp.TASK_NAMES:
        assert by_task[name].state.type.value == "COMPLETED", (name, by_task[name].state)
        assert by_task[name].run_count == 1
    assert all(t.state.type.value == "COMPLETED" for t in tasks)

    run_ids = [parent.id, *(s.id for s in subs)]
    (validation,) = _artifacts("ketaoutcomes-validation", run_ids)
    assert "Validation passed" in validation.data
    _assert_validation_counts_per_table(validation.data, db)
    (quarantine,) = _artifacts("ketaoutcomes-quarantine", run_ids)
    _assert_quarantine_counts(quarantine.data, db)
    (rep,) = _artifacts("ketaoutcomes-report", run_ids)
    assert f"Report file: `{report}` (rendered by this run)" in rep.data
    _assert_artifacts_hold_the_reports_summary(rep, _artifacts("ketaoutcomes-key-results", run_ids), report)

    # dags.md's table of warehouse tables is exactly what a run leaves behind
    con = read_connection(db)
    try:
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()
    assert present == _documented_tables()

    # the weekly flow again, nothing changed: no analysis re-run, no report re-drawn, the artifact still says it all
    runs_before, page = _query(db, "SELECT run_id FROM results_runs"), report.stat().st_mtime_ns
    state = fp.analysis_flow(db=str(db), study_file=str(study_file), reports_dir=str(tmp_path / "reports"),
                             return_state=True)
    assert state.is_completed(), state.message
    assert _query(db, "SELECT run_id FROM results_runs").equals(runs_before)  # no new run_id
    assert report.stat().st_mtime_ns == page  # not rendered again
    weekly = state.state_details.flow_run_id
    (rep,) = _artifacts("ketaoutcomes-report", [weekly])
    assert "(up to date: nothing it is made from changed, so it was not rendered again)" in rep.data
    _assert_artifacts_hold_the_reports_summary(rep, _artifacts("ketaoutcomes-key-results", [weekly]), report)
    _, _, tasks, _ = _runs(weekly)
    assert sorted(t.name.rsplit("-", 1)[0] for t in tasks) == ["analyze", "render", "validate"]
    assert not _artifacts("ketaoutcomes-validation", [weekly])  # validation up to date: nothing new to say


def _query(db: Path, sql: str):
    from tests.conftest import query_db

    return query_db(db, sql)


def _md_table(markdown: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The Markdown table under ``heading``: header cells and rows (cells stripped, \\| unescaped)."""
    block = markdown.split(heading, 1)[1].split("\n", 1)[1].strip().split("\n\n", 1)[0]
    rows = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            for line in block.splitlines() if line.startswith("|")]
    return rows[0], rows[2:]


def _assert_artifacts_hold_the_reports_summary(markdown_artifact, table_artifacts, report: Path) -> None:
    """The report artifact's table and the key-results table artifact say what the report's summary says."""
    from tests.html_tables import html_tables, squash

    (table,) = html_tables(report.read_text(encoding="utf-8"), "summary")
    columns, rows = _md_table(markdown_artifact.data, "## Summary:")
    assert columns == [squash(c) for c in table["columns"]]
    assert rows == [[squash(c) for c in row] for row in table["rows"]]
    assert rows, "the cohort has routes to compare"
    for row in rows:  # a withheld comparison is shown as withheld, not as numbers
        if row[1].startswith("withheld"):
            assert set(row[2:]) == {"\u2014"}, row
    (key_results,) = table_artifacts
    assert key_results.type == "table"
    assert json.loads(key_results.data) == [dict(zip(table["columns"], row, strict=True)) for row in table["rows"]]


def _assert_validation_counts_per_table(markdown: str, db: Path) -> None:
    columns, rows = _md_table(markdown, "## Expectations per table")
    assert columns == ["Table", "Rules checked", "Passed", "Failed: critical", "Failed: warning", "Could not run"]
    stored = _query(db, """
        SELECT "table", count(*) AS checked, count(*) FILTER (success AND error IS NULL) AS passed,
               count(*) FILTER (NOT success AND error IS NULL AND severity = 'critical') AS critical,
               count(*) FILTER (NOT success AND error IS NULL AND severity <> 'critical') AS warning,
               count(*) FILTER (error IS NOT NULL OR success IS NULL) AS errored
        FROM validation_results WHERE run_id = (SELECT max_by(run_id, started_at) FROM meta_steps WHERE step = 'validate')
        GROUP BY ALL ORDER BY 1""")
    assert rows and rows == [[r[0], *(f"{n:,}" for n in r[1:])] for r in stored.rows()]


def _assert_quarantine_counts(markdown: str, db: Path) -> None:
    """The quarantine artifact of a first load: every batch in the warehouse is this run's."""
    stored = _query(db, "SELECT table_name, rule, column_name, count(DISTINCT (batch_id, row_number)) AS n "
                        "FROM quarantine GROUP BY ALL ORDER BY ALL")
    total, files = _query(db, "SELECT sum(rows_quarantined) AS q, count(*) AS n FROM meta_batches").row(0)
    assert markdown.startswith(f"# Quarantine: {total:,} row(s) set aside from {files} file(s) loaded by this run")
    if stored.height:
        _, rows = _md_table(markdown, "## Quarantined rows per table and rule")
        assert rows == [[t, r, c or "", f"{n:,}"] for t, r, c, n in stored.rows()]


@pytest.mark.slow
def test_validation_failure_fails_the_flow_with_its_message(prefect_harness, tmp_path, monkeypatch):
    from ketaoutcomes.validate import ValidationFailed

    message = "critical: stg_courses.arm has values outside ref_arms (3 rows)"
    calls = {"validate": 0}

    def fake_ingest(db, export_dir, *, progress=None):
        return steps.StepOutcome("ingest", True, "fake ingest", {"files": []})

    def fake_validate(db, **kwargs):
        calls["validate"] += 1
        raise ValidationFailed(SimpleNamespace(message=lambda: message))

    monkeypatch.setattr(steps, "ingest_step", fake_ingest)
    monkeypatch.setattr(steps, "validate_step", fake_validate)

    state = fp.ingest_flow(export_dir=str(tmp_path), db=str(tmp_path / "w.duckdb"), return_state=True)
    assert state.is_failed()
    assert message in state.message
    assert calls["validate"] == 1  # never retried

    parent, subs, tasks, _ = _runs(state.state_details.flow_run_id)
    assert parent.state.type.value == "FAILED" and message in parent.state.message
    by_task = {t.name.rsplit("-", 1)[0]: t for t in tasks}
    assert by_task["ingest"].state.type.value == "COMPLETED"
    assert by_task["validate"].state.type.value == "FAILED" and by_task["validate"].run_count == 1
    (artifact,) = _artifacts("ketaoutcomes-validation", [parent.id])
    assert "Validation FAILED" in artifact.data and message in artifact.data


@pytest.mark.slow
def test_bad_parameters_fail_before_any_step(prefect_harness, tmp_path, monkeypatch):
    def boom(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("a step ran")

    for name in ("simulate_step", "ingest_step", "validate_step", "analyze_step", "render_step"):
        monkeypatch.setattr(steps, name, boom)

    state = fp.ketaoutcomes_pipeline(export_dir=str(tmp_path), n_patients=5, return_state=True)
    assert state.is_failed() and "n_patients" in state.message

    bad_study = tmp_path / "study.json"
    bad_study.write_text(json.dumps({"strata": "planet"}))
    state = fp.ketaoutcomes_pipeline(export_dir=str(tmp_path), study_file=str(bad_study), return_state=True)
    assert state.is_failed() and "strata" in state.message

    # where the analysis runs (docs/scaling.md) is checked before any step too, in both flows
    monkeypatch.setenv("KETAOUTCOMES_EXECUTOR", "dask")
    monkeypatch.setenv("KETAOUTCOMES_DASK_WORKERS", "0")
    state = fp.ketaoutcomes_pipeline(export_dir=str(tmp_path), return_state=True)
    assert state.is_failed() and "KETAOUTCOMES_DASK_WORKERS='0'" in state.message
    state = fp.analysis_flow(db=str(tmp_path / "w.duckdb"), return_state=True)
    assert state.is_failed() and "KETAOUTCOMES_DASK_WORKERS='0'" in state.message


# --------------------------------------------------------------------------- what the nightly ingest loads


@pytest.fixture
def fresh_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KETAOUTCOMES_HOME", str(tmp_path))
    monkeypatch.delenv("KETAOUTCOMES_DB", raising=False)
    monkeypatch.delenv(fp.EXPORT_ENV, raising=False)
    return tmp_path


def _recorded_steps(monkeypatch) -> list[tuple]:
    """Replace the steps by recorders (no data is made): the flows' routing is what is checked."""
    calls: list[tuple] = []

    def record(name, **details):
        def step(*args, **kwargs):
            calls.append((name, *args))
            return steps.StepOutcome(name, True, f"fake {name}", dict(details))
        return step

    monkeypatch.setattr(steps, "simulate_step", record("simulate"))
    monkeypatch.setattr(steps, "ingest_step", record("ingest"))
    monkeypatch.setattr(steps, "validate_step", record("validate"))
    monkeypatch.setattr(steps, "analyze_step", record("analyze"))
    monkeypatch.setattr(steps, "render_step", record("render", report_path="r.html"))
    return calls


def test_deploying_without_an_export_folder_starts_nothing(fresh_home, monkeypatch, capsys):
    def started(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("flows.deploy started serving without an export folder")

    monkeypatch.setattr(deploy, "local_server", started)
    monkeypatch.setattr(deploy, "_serve", started)
    assert deploy.main([]) == 2
    err = capsys.readouterr().err
    assert "the nightly ingest has no export folder" in err and "--export-dir" in err and fp.EXPORT_ENV in err


def test_demo_is_a_parameter_of_the_nightly_deployment_only():
    params = {d.name: d.parameters for d in deploy.build_deployments(demo=True)}
    assert params == {"nightly-ingest-validate": {"demo": True}, "weekly-analysis-report": {}, "on-demand": {}}


@pytest.mark.slow
def test_nightly_ingest_without_a_configured_export_fails_and_touches_nothing(prefect_harness, fresh_home):
    """It used to simulate the synthetic default into data/synthetic/default and load it into an
    empty warehouse: a scratch cohort in the main warehouse nobody asked for."""
    db = fresh_home / "data" / "warehouse" / "ketaoutcomes.duckdb"
    state = fp.ingest_flow(return_state=True)
    assert state.is_failed()
    assert "no export folder configured" in state.message and fp.EXPORT_ENV in state.message
    assert not db.exists() and not (fresh_home / "data").exists()


@pytest.mark.slow
def test_nightly_ingest_loads_the_folder_the_environment_names(prefect_harness, fresh_home, monkeypatch):
    from tests.conftest import query_db, write_export

    export = write_export(fresh_home / "exports" / "latest")
    monkeypatch.setenv(fp.EXPORT_ENV, str(export))
    state = fp.ingest_flow(return_state=True)
    assert state.is_completed(), state.message
    db = fresh_home / "data" / "warehouse" / "ketaoutcomes.duckdb"
    sources = query_db(db, "SELECT source_file FROM meta_batches")["source_file"]
    assert {Path(f).parent for f in sources} == {export}
    assert not (fresh_home / "data" / "synthetic").exists()


@pytest.mark.slow
def test_nightly_artifacts_count_validation_per_table_and_that_nights_quarantine(prefect_harness, fresh_home):
    from tests.conftest import TINY, write_export

    files = dict(TINY)
    files["patients.csv"] = TINY["patients.csv"] + "P4,B,M,150,2,MDD,80\nP5,A,F,40,2,MDD,900\n"
    export = write_export(fresh_home / "exports" / "night1", files)
    db = fresh_home / "w.duckdb"
    state = fp.ingest_flow(export_dir=str(export), db=str(db), return_state=True)
    assert state.is_completed(), state.message
    night1 = state.state_details.flow_run_id
    (quarantine,) = _artifacts("ketaoutcomes-quarantine", [night1])
    assert quarantine.data.startswith("# Quarantine: 2 row(s) set aside from 5 file(s) loaded by this run")
    _, rows = _md_table(quarantine.data, "## Quarantined rows per table and rule")
    stored = _query(db, "SELECT table_name, rule, column_name, count(*) AS n FROM quarantine GROUP BY ALL ORDER BY ALL")
    assert rows == [[t, r, c or "", f"{n:,}"] for t, r, c, n in stored.rows()]
    assert {r[0] for r in rows} == {"patients"} and sum(int(r[3]) for r in rows) == 2
    (validation,) = _artifacts("ketaoutcomes-validation", [night1])
    _assert_validation_counts_per_table(validation.data, db)

    # the next night: a new delivery of courses only; its quarantine is that batch's alone
    files2 = {"courses.csv": TINY["courses.csv"].replace("2024-04-30", "2024-05-02")}
    night2 = write_export(fresh_home / "exports" / "night2", files2)
    state = fp.ingest_flow(export_dir=str(night2), db=str(db), return_state=True)
    assert state.is_completed(), state.message
    (quarantine,) = _artifacts("ketaoutcomes-quarantine", [state.state_details.flow_run_id])
    assert quarantine.data.startswith("# Quarantine: 0 row(s) set aside from 1 file(s) loaded by this run")
    assert "No row of these batches was quarantined." in quarantine.data
    # and its validation checked the rows that delivery changed: 3 courses and their 4 sessions
    (validation,) = _artifacts("ketaoutcomes-validation", [state.state_details.flow_run_id])
    assert "on the 7 row(s) that 1 new batch(es) added or changed" in validation.data
    _assert_validation_counts_per_table(validation.data, db)

    # the same folder again: nothing new
    state = fp.ingest_flow(export_dir=str(night2), db=str(db), return_state=True)
    (quarantine,) = _artifacts("ketaoutcomes-quarantine", [state.state_details.flow_run_id])
    assert "No new delivery: every file was already loaded" in quarantine.data


@pytest.mark.slow
def test_nightly_demo_loads_the_default_cohort_where_its_warehouse_lives(prefect_harness, fresh_home, monkeypatch):
    from ketaoutcomes.settings import SimulationSettings

    calls = _recorded_steps(monkeypatch)
    db = fresh_home / "scratch" / "x.duckdb"
    state = fp.ingest_flow(db=str(db), demo=True, return_state=True)
    assert state.is_completed(), state.message
    folder = fresh_home / "scratch" / "x.duckdb.synthetic" / "default"
    assert calls == [("simulate", SimulationSettings(), folder), ("ingest", db, folder), ("validate", db)]
    state = fp.ingest_flow(db=str(db), export_dir=str(fresh_home), demo=True, return_state=True)
    assert state.is_failed() and "give one of them" in state.message


@pytest.mark.slow
def test_parent_flow_simulates_beside_the_named_warehouse(prefect_harness, fresh_home, monkeypatch):
    """`python -m flows.pipeline --db /tmp/x.duckdb --n-patients 500 --seed 7` used to write its cohort
    into data/synthetic/default, the default warehouse's export."""
    from ketaoutcomes.settings import SimulationSettings

    calls = _recorded_steps(monkeypatch)
    db = fresh_home / "scratch" / "x.duckdb"
    state = fp.ketaoutcomes_pipeline(db=str(db), n_patients=500, seed=7, return_state=True)
    assert state.is_completed(), state.message
    sim = SimulationSettings(n_patients=500, seed=7)
    folder = fresh_home / "scratch" / "x.duckdb.synthetic" / f"n500-seed7-{sim.settings_id}"
    assert calls[:2] == [("simulate", sim, folder), ("ingest", db, folder)]
    assert not (fresh_home / "data").exists()


def test_parent_flow_simulates_the_ssri_failure_cohort_for_a_target_trial_study(prefect_harness, fresh_home,
                                                                                monkeypatch):
    """As `report --study`: a study with a [target_trial] gets the SSRI-failure cohort of its protocol."""
    from ketaoutcomes.settings import DEFAULT_STUDY_FILE, SimulationSettings, load_study

    calls = _recorded_steps(monkeypatch)
    study_file = DEFAULT_STUDY_FILE.parent / "ssri_failure.toml"
    db = fresh_home / "scratch" / "x.duckdb"
    state = fp.ketaoutcomes_pipeline(db=str(db), n_patients=500, seed=7, study_file=str(study_file), return_state=True)
    assert state.is_completed(), state.message
    sim = SimulationSettings(n_patients=500, seed=7, design="ssri_failure",
                             target_trial=load_study(study_file).target_trial)
    assert calls[0] == ("simulate", sim, fresh_home / "scratch" / "x.duckdb.synthetic" / f"n500-seed7-{sim.settings_id}")


@pytest.mark.slow
def test_nightly_ingest_refuses_the_files_a_rollback_removed_and_loads_a_corrected_one(prefect_harness, tmp_path):
    """After `rollback`, the nightly export folder still holds the removed files: the nightly run used to
    load them back (the rollback only warned). It fails, naming them and the rollback, and loads nothing;
    a corrected file (other content) loads as ever."""
    import hashlib

    from ketaoutcomes.pipeline import ingest_step, rollback_step
    from tests.conftest import TINY, query_db, write_export

    db = tmp_path / "w.duckdb"
    ingest_step(db, write_export(tmp_path / "first"))
    latest = write_export(tmp_path / "latest", {"patients.csv": TINY["patients.csv"].replace("P2,A,M,52,", "P2,A,M,53,")})
    state = fp.ingest_flow(export_dir=str(latest), db=str(db), return_state=True)
    assert state.is_completed(), state.message
    batch = query_db(db, "SELECT batch_id FROM meta_batches ORDER BY load_seq DESC LIMIT 1")["batch_id"].item()
    rollback_step(db, batch)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()

    state = fp.ingest_flow(export_dir=str(latest), db=str(db), return_state=True)
    assert state.is_failed()
    assert f"patients.csv (the content of batch {batch}, rolled back on" in state.message
    assert "--reload-rolled-back" in state.message and "nothing was loaded" in state.message
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    parent, _, tasks, _ = _runs(state.state_details.flow_run_id)
    by_task = {t.name.rsplit("-", 1)[0]: t for t in tasks}
    assert by_task["ingest"].state.type.value == "FAILED" and by_task["ingest"].run_count == 1  # not retried

    (latest / "patients.csv").write_text(TINY["patients.csv"].replace("P2,A,M,52,", "P2,A,M,54,"))
    state = fp.ingest_flow(export_dir=str(latest), db=str(db), return_state=True)
    assert state.is_completed(), state.message
    assert query_db(db, "SELECT age_at_index FROM stg_patients WHERE patient_id = 'P2'")["age_at_index"].item() == 54


@pytest.mark.slow
def test_parent_flow_refuses_a_cohort_for_a_warehouse_holding_other_data(prefect_harness, fresh_home, monkeypatch):
    """`n_patients`/`seed` given for a warehouse that holds a clinic's data used to load the synthetic
    cohort on top of it; the flow fails before any step, naming the warehouse."""
    from ketaoutcomes.pipeline import ingest_step
    from tests.conftest import write_export

    db = fresh_home / "w.duckdb"
    ingest_step(db, write_export(fresh_home / "clinic"))
    calls = _recorded_steps(monkeypatch)
    state = fp.ketaoutcomes_pipeline(db=str(db), n_patients=500, seed=7, return_state=True)
    assert state.is_failed() and f"the warehouse {db} already holds data" in state.message
    assert calls == []
