"""`python -m ketaoutcomes reproduce REPORT` (issue 12) end to end, through the command line: a fresh
report is reproduced bit for bit; one stored estimate moved by one ulp (numpy.nextafter) is named
with its table, key and column; a rolled-back batch, another warehouse, a batch of other content, a
report without a run record and an edited report are refused in one line, exit 1, nothing compared.

One small report (250 simulated patients, an arms.csv of the export's own, 10 bootstrap replicates,
from a study file) is built once, and a corrected delivery is loaded after it, so that the run's
batches are not all the batches of the warehouse. Two tests re-run its analysis (the fresh one and the
tampered one); the refusals stop before that.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

import ketaoutcomes.registries
from ketaoutcomes.cli import app
from ketaoutcomes.pipeline import ingest_step, rollback_step, run_report
from ketaoutcomes.report.record import RECORD_OPEN, read_record
from ketaoutcomes.settings import SimulationSettings, load_study
from ketaoutcomes.simulate import simulate_cohort
from tests.conftest import copy_warehouse, query_db, write_export

runner = CliRunner()
SIM = SimulationSettings(n_patients=250, seed=11)
STUDY = "[models]\nbootstrap_replicates = 10\n"


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("reproduce")
    export = tmp / "export"
    simulate_cohort(SIM, export)  # the cohort only: truth.json's estimands are not needed here
    shipped = (Path(ketaoutcomes.registries.__file__).parent / "arms.csv").read_text().splitlines()
    (export / "arms.csv").write_text("\n".join([shipped[0], *(line.replace(",SSRI,", ",SSRI (any),") for line in
                                                            shipped if line.startswith("ssri,"))]) + "\n")
    (tmp / "study.toml").write_text(STUDY)
    db, reports = tmp / "w.duckdb", tmp / "reports"
    outcomes = run_report(db, load_study(tmp / "study.toml"), export_dir=export, reports_dir=reports)
    html = Path(outcomes[-1].details["report_path"])
    later = tmp / "later"  # a correction delivered after the report: not the report's data
    later.mkdir()
    scores = (export / "mood_scores.csv").read_text().splitlines()
    cells = scores[-1].split(",")  # patient_id, assessed_at, instrument, total_score, ...
    cells[3] = "1.0" if cells[3] != "1.0" else "2.0"
    (later / "mood_scores.csv").write_text("\n".join([*scores[:-1], ",".join(cells)]) + "\n")
    ingest_step(db, later)
    return {"db": db, "html": html, "record": read_record(html.read_text())}


def reproduce(*args: str | Path):
    return runner.invoke(app, ["reproduce", *map(str, args)])


def refused(res, message: str) -> None:
    """Exit 1, nothing on stdout (nothing compared), one line on stderr: `error: ...message...`."""
    assert res.exit_code == 1, res.output
    assert res.stdout == "" and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.output
    assert message in res.stderr and "Traceback" not in res.output


def test_a_fresh_report_is_reproduced_bit_for_bit(reported, tmp_path):
    res = reproduce(reported["html"], "--keep", tmp_path / "keep")
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if not line.startswith("note:")]
    tables = sorted(reported["record"]["results"])
    assert [line.split(":")[0] for line in lines[:-1]] == tables  # one line per table of the run, every one
    assert all(": identical (" in line for line in lines[:-1]), res.stdout
    assert f"results_cox: identical ({reported['record']['results']['results_cox']['rows']:,} rows)" in lines
    assert lines[-1].startswith(f"reproduced: analysis run {reported['record']['run_id']} of ") and res.stderr.strip() \
        .startswith("scratch warehouse kept:")
    # The kept scratch warehouse holds exactly the report's batches, and the same run: same data
    # fingerprint, settings and code give the same run id.
    scratch = tmp_path / "keep" / f"reproduce-{reported['record']['run_id']}.duckdb"
    got = query_db(scratch, "SELECT batch_id, file_sha256 FROM meta_batches ORDER BY load_seq").rows()
    assert got == [(b["batch_id"], b["sha256"]) for b in reported["record"]["batches"]]
    assert [b["table"] for b in reported["record"]["batches"]][0] == "arms"  # the export's registry file is a batch
    assert len(query_db(reported["db"], "SELECT * FROM meta_batches")) == len(got) + 1  # the correction is not
    assert query_db(scratch, "SELECT label FROM ref_arms WHERE arm = 'ssri'").item() == "SSRI (any)"
    run = query_db(scratch, "SELECT run_id, data_fingerprint, settings_id FROM results_runs").rows()
    assert run == [(reported["record"]["run_id"], reported["record"]["data_fingerprint"],
                    reported["record"]["settings_id"])]
    for t in ("patients", "courses", "sessions", "adverse_events", "mood_scores"):
        sql = f"SELECT count(*) FROM stg_{t}"
        assert query_db(scratch, sql).item() == query_db(reported["db"], sql).item()


def test_one_ulp_in_one_stored_estimate_is_named(reported, tmp_path, monkeypatch):
    db = copy_warehouse(reported["db"], tmp_path)
    con = duckdb.connect(str(db))
    paramcd, model, term, hr = con.execute(
        "SELECT paramcd, model, term, hr FROM results_cox WHERE hr IS NOT NULL ORDER BY ALL LIMIT 1").fetchone()
    con.execute("UPDATE results_cox SET hr = ? WHERE paramcd = ? AND model = ? AND term = ?",
                [float(np.nextafter(hr, np.inf)), paramcd, model, term])
    con.close()
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_parent))

    res = reproduce(reported["html"], "--db", db)
    assert res.exit_code == 3, res.output
    cox = [line for line in res.stdout.splitlines() if line.startswith("results_cox:")]
    assert cox == [f"results_cox: the stored rows are not those the report shows: column(s) hr changed since the report "
                   f"was rendered (the warehouse was written after the report); 1 of "
                   f"{reported['record']['results']['results_cox']['rows']} rows differ (first: column hr at "
                   f"paramcd={paramcd}, model={model}, term={term}; 1 ulp apart)"]
    others = [line for line in res.stdout.splitlines() if not line.startswith(("results_cox:", "note:"))]
    assert len(others) == len(reported["record"]["results"]) - 1 and all(": identical (" in x for x in others)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(
        f"error: not reproduced: analysis run {reported['record']['run_id']} of ")
    assert res.stderr.rstrip().endswith(f"1 of {len(reported['record']['results'])} tables differ (results_cox)")
    assert list(scratch_parent.iterdir()) == []  # the scratch warehouse is removed


def test_a_rolled_back_batch_is_refused(reported, tmp_path):
    db = copy_warehouse(reported["db"], tmp_path)
    batch = next(b for b in reported["record"]["batches"] if b["table"] == "mood_scores")
    rollback_step(db, batch["batch_id"])
    res = reproduce(reported["html"], "--db", db)
    refused(res, f"error: batch {batch['batch_id']} of the report ({batch['file']}) was rolled back on ")
    assert f"(`rollback {batch['batch_id']}`)" in res.stderr


def test_another_warehouse_or_other_content_is_refused(reported, tmp_path, tiny_export):
    other = tmp_path / "other.duckdb"
    ingest_step(other, tiny_export)
    first = reported["record"]["batches"][0]
    refused(reproduce(reported["html"], "--db", other),
            f"batch {first['batch_id']} of the report ({first['file']}) is not in the warehouse {other}")
    db = copy_warehouse(reported["db"], tmp_path)
    con = duckdb.connect(str(db))
    con.execute("UPDATE meta_batches SET file_sha256 = 'ab' || file_sha256[3:] WHERE batch_id = ?", [first["batch_id"]])
    con.close()
    refused(reproduce(reported["html"], "--db", db), "in the report but ab")
    refused(reproduce(reported["html"], "--db", tmp_path / "missing.duckdb"), f"no warehouse at {tmp_path / 'missing.duckdb'}")


def test_a_report_without_a_run_record_is_refused(reported, tmp_path):
    page = reported["html"].read_text()
    start = page.index(RECORD_OPEN)
    old = tmp_path / "old.html"  # as a report rendered before reports carried a record
    old.write_text(page[:start] + page[page.index("</script>", start) + len("</script>"):])
    refused(reproduce(old), f"{old} has no run record")
    refused(reproduce(reported["db"]), "is a DuckDB file, not a report")
    refused(reproduce(tmp_path / "none.html"), f"no report at {tmp_path / 'none.html'}")
    refused(reproduce(tmp_path), "is a folder")


@pytest.mark.parametrize("edit", ["text", "record"])
def test_an_edited_report_is_refused(reported, tmp_path, edit):
    page = reported["html"].read_text()
    if edit == "text":  # a word the reader sees
        edited = page.replace("Summary", "Sumary", 1)
    else:  # the record's digest of a table
        digest = reported["record"]["results"]["results_cox"]["columns"]["hr"]
        edited = page.replace(digest, "0" * len(digest), 1)
    assert edited != page
    (tmp_path / "edited.html").write_text(edited)
    refused(reproduce(tmp_path / "edited.html"), "was edited after it was rendered")
