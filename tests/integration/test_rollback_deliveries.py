"""`rollback` and what came with the batches it removes (issue 9, part 6).

* The registries: an export's arms.csv / instruments.csv are batches of their own, so a rollback
  restores the registries in force before them (ref_arms, ref_instruments equal to the row), its dry
  run lists the codes added, changed and removed; a warehouse written before registries were kept
  per batch still opens, migrates, and keeps the registry rows of no batch under every rollback.
* The files removed: their content is recorded, a later ingest of it (the export folder still holds
  the files) refuses in one line until the file is replaced or loaded again on purpose
  (`ingest --reload-rolled-back`); a corrected file loads as ever.

Ingest only (no analysis): the analysis side of rollback is tests/integration/test_rollback.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.pipeline import ingest_step
from ketaoutcomes.warehouse import write_session
from tests.conftest import TINY, copy_warehouse, query_db, write_export
from tests.integration.test_rollback import ingest_run_id

runner = CliRunner()

ARMS_HEADER = "arm,label,route,drug_class,is_ketamine,session_based,dose_min_mg,dose_max_mg,dose_max_mg_per_kg,description\n"
INSTRUMENTS_HEADER = ("instrument,label,rater,score_min,score_max,response_reduction,remission_max,relapse_min,si_item,"
                      "si_item_min,si_item_max\n")
#: v2: an arm added (ect), the SSRI relabelled, MADRS remission moved from 10 to 12, P2's age corrected.
V2 = {
    "arms.csv": ARMS_HEADER + "ect,Electroconvulsive therapy,device,ect,false,true,0,1,,\n"
                              "ssri,SSRI (any),oral,ssri,false,false,2.5,300,,\n",
    "instruments.csv": INSTRUMENTS_HEADER + "MADRS,MADRS,clinician,0,60,0.5,12,22,item 10,0,6\n",
    "patients.csv": TINY["patients.csv"].replace("P2,A,M,52,", "P2,A,M,53,"),
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def registries(db: Path) -> dict[str, pl.DataFrame]:
    return {t: query_db(db, f"SELECT * FROM {t} ORDER BY ALL") for t in ("ref_arms", "ref_instruments")}


def one_line(res) -> str:
    (line,) = res.stderr.strip().splitlines()
    return line


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("deliveries")
    db = root / "w.duckdb"
    ingest_step(db, write_export(root / "v1"))
    before = registries(db)
    out = ingest_step(db, write_export(root / "v2", V2))
    return {"db": db, "before": before, "after": registries(db), "v1": root / "v1", "v2": root / "v2",
            "v2_batches": {f["table"]: f["batch_id"] for f in [*out.details["files"], *out.details["registries"]]
                           if not f["skipped"]}}


@pytest.fixture
def wh(built, tmp_path) -> dict:
    return {**built, "db": copy_warehouse(built["db"], tmp_path)}


def test_registry_files_are_batches_loaded_before_the_tables_of_their_export(built):
    batches = query_db(built["db"], "SELECT table_name, source_file, rows_read, rows_loaded FROM meta_batches "
                                    "WHERE load_seq > 5 ORDER BY load_seq")
    assert batches["table_name"].to_list() == ["arms", "instruments", "patients"]
    assert batches["rows_loaded"].to_list() == [2, 1, 3]
    assert query_db(built["db"], "SELECT arm FROM raw_arms ORDER BY arm")["arm"].to_list() == ["ect", "ssri"]
    assert "ect" in built["after"]["ref_arms"]["arm"].to_list()
    assert built["after"]["ref_instruments"].filter(pl.col("instrument") == "MADRS")["remission_max"].item() == 12


@pytest.mark.parametrize("by", ["ingest step", "registry batch"])
def test_rollback_of_the_export_restores_the_registries_in_force_before_it(wh, by):
    db = wh["db"]
    target = ingest_run_id(db, wh["v2_batches"]["arms"]) if by == "ingest step" else wh["v2_batches"]["arms"]
    dry = runner.invoke(app, ["rollback", target, "--dry-run", "--db", str(db)])
    assert dry.exit_code == 0, dry.output
    # what the rollback does to the registries in force: ect goes, ssri and MADRS are the defaults again
    assert "registries in force (codes):\n  ref_arms: changed ssri; removed ect\n  ref_instruments: changed MADRS\n" \
        in dry.stdout, dry.stdout
    assert "  ref_arms: 7 -> 6" in dry.stdout and "  raw_arms: 2 -> 0" in dry.stdout
    res = runner.invoke(app, ["rollback", target, "--db", str(db)])
    assert res.exit_code == 0, res.output
    now = registries(db)
    for t, frame in wh["before"].items():
        assert now[t].equals(frame), t
    assert query_db(db, "SELECT count(*) n FROM raw_arms")["n"][0] == 0


def test_a_rollback_to_before_a_table_batch_keeps_the_export_registries_and_says_how_to_remove_them(wh):
    db = wh["db"]
    res = runner.invoke(app, ["rollback", wh["v2_batches"]["patients"], "--db", str(db)])
    assert res.exit_code == 0, res.output
    step = ingest_run_id(db, wh["v2_batches"]["arms"])
    assert "registries in force: unchanged" in res.stdout
    assert f"stay(s) in force; to roll back that whole export: rollback {step}" in res.stdout
    assert registries(db)["ref_arms"].equals(wh["after"]["ref_arms"])


def test_each_code_comes_back_to_its_row_of_the_latest_batch_in_force(tmp_path):
    db = tmp_path / "w.duckdb"
    first = ingest_step(db, write_export(tmp_path / "a", {**TINY, "arms.csv": ARMS_HEADER + "ect,ECT one,device,ect,false,true,0,1,,\n"}))
    ingest_step(db, write_export(tmp_path / "b", {**TINY, "arms.csv": ARMS_HEADER + "ect,ECT two,device,ect,false,true,0,2,,\n"
                                                                                    "tms,TMS,device,tms,false,true,0,1,,\n"}))
    label = "SELECT label FROM ref_arms WHERE arm = 'ect'"
    assert query_db(db, label)["label"].to_list() == ["ECT two"]
    second = query_db(db, "SELECT batch_id FROM meta_batches WHERE table_name = 'arms' ORDER BY load_seq")["batch_id"][1]
    dry = runner.invoke(app, ["rollback", second, "--dry-run", "--db", str(db)])
    assert "  ref_arms: changed ect; removed tms" in dry.stdout, dry.stdout
    assert runner.invoke(app, ["rollback", second, "--db", str(db)]).exit_code == 0
    assert query_db(db, label)["label"].to_list() == ["ECT one"]
    assert "tms" not in query_db(db, "SELECT arm FROM ref_arms")["arm"].to_list()
    first_arms = [f["batch_id"] for f in first.details["registries"]][0]
    assert runner.invoke(app, ["rollback", first_arms, "--db", str(db)]).exit_code == 0
    assert query_db(db, label).is_empty()


def _as_written_before_registry_history(db: Path) -> None:
    """Make ``db`` what the code before registries were kept per batch left: the registries merged
    into ref_* and nothing else of them (no registry batch, no raw_arms/raw_instruments, no
    meta_rolled_back), the ingest steps' details without "registries"."""
    import duckdb

    con = duckdb.connect(str(db))
    try:
        con.execute("DROP TABLE raw_arms; DROP TABLE raw_instruments; DROP TABLE meta_rolled_back")
        con.execute("DELETE FROM meta_batches WHERE table_name IN ('arms', 'instruments')")
        con.execute("UPDATE meta_steps SET details = json_object('files', details->'$.files', 'batches', "
                    "details->'$.batches', 'export_dir', details->>'$.export_dir')")
    finally:
        con.close()


def test_a_warehouse_written_before_registry_history_migrates_and_keeps_those_registries(wh):
    db = wh["db"]
    _as_written_before_registry_history(db)
    target = wh["v2_batches"]["patients"]
    digest = sha(db)
    dry = runner.invoke(app, ["rollback", target, "--dry-run", "--db", str(db)])  # read-only: not migrated yet
    assert dry.exit_code == 0, dry.output
    assert "registries in force: unchanged" in dry.stdout
    assert "written before registries were kept per batch" in dry.stdout and sha(db) == digest
    res = runner.invoke(app, ["rollback", target, "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert registries(db)["ref_arms"].equals(wh["after"]["ref_arms"])  # kept: no batch of them is known
    base = query_db(db, "SELECT arm, _batch_id, _load_seq FROM raw_arms ORDER BY arm")
    assert base.rows() == [("ect", None, 0), ("ssri", None, 0)]  # what differs from the shipped defaults
    # a registry delivered after the migration is rolled back to the registries of no batch
    v3 = write_export(wh["v2"].parent / "v3", {**TINY, "arms.csv": ARMS_HEADER + "ect,ECT (v3),device,ect,false,true,0,1,,\n"})
    out = ingest_step(db, v3)
    assert query_db(db, "SELECT label FROM ref_arms WHERE arm = 'ect'")["label"].item() == "ECT (v3)"
    res = runner.invoke(app, ["rollback", out.details["registries"][0]["batch_id"], "--db", str(db)])
    assert res.exit_code == 0 and "  ref_arms: changed ect" in res.stdout, res.output
    assert registries(db)["ref_arms"].equals(wh["after"]["ref_arms"])


def test_an_ingest_of_rolled_back_files_is_refused_in_one_line_and_changes_nothing(wh):
    db = wh["db"]
    assert runner.invoke(app, ["rollback", wh["v2_batches"]["arms"], "--db", str(db)]).exit_code == 0
    digest = sha(db)
    res = runner.invoke(app, ["ingest", str(wh["v2"]), "--db", str(db)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    line = one_line(res)
    assert line.startswith(f"error: {wh['v2']}: ")
    for name in ("arms.csv", "instruments.csv", "patients.csv"):
        assert f"{name} (the content of batch {wh['v2_batches'][name.split('.')[0]]}, rolled back on " in line
    assert f"by `rollback {wh['v2_batches']['arms']}`" in line and "--reload-rolled-back" in line
    assert line.endswith("nothing was loaded")
    assert sha(db) == digest


def test_a_corrected_file_loads_and_a_rolled_back_one_beside_it_is_still_refused(wh):
    db = wh["db"]
    assert runner.invoke(app, ["rollback", wh["v2_batches"]["arms"], "--db", str(db)]).exit_code == 0
    corrected = {**V2, "patients.csv": TINY["patients.csv"].replace("P2,A,M,52,", "P2,A,M,54,")}
    folder = write_export(wh["v2"].parent / "v2-corrected", corrected)
    res = runner.invoke(app, ["ingest", str(folder), "--db", str(db)])
    assert res.exit_code == 1 and "patients.csv" not in one_line(res) and "arms.csv" in one_line(res)
    (folder / "arms.csv").unlink()
    (folder / "instruments.csv").unlink()
    res = runner.invoke(app, ["ingest", str(folder), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert query_db(db, "SELECT age_at_index FROM stg_patients WHERE patient_id = 'P2'")["age_at_index"].item() == 54


def test_reload_rolled_back_loads_them_on_purpose_once(wh):
    db = wh["db"]
    assert runner.invoke(app, ["rollback", wh["v2_batches"]["patients"], "--db", str(db)]).exit_code == 0
    res = runner.invoke(app, ["ingest", str(wh["v2"]), "--db", str(db), "--reload-rolled-back"])
    assert res.exit_code == 0, res.output
    assert (f"patients.csv: loaded again on purpose (--reload-rolled-back): its content had been rolled back "
            f"(batch {wh['v2_batches']['patients']})") in res.stderr
    assert query_db(db, "SELECT age_at_index FROM stg_patients WHERE patient_id = 'P2'")["age_at_index"].item() == 53
    marked = query_db(db, "SELECT batch_id, reloaded_as FROM meta_rolled_back")
    assert marked.height == 1 and marked["reloaded_as"].item() is not None
    # loaded again on purpose: the same folder is no longer refused (its files are the latest deliveries)
    again = runner.invoke(app, ["ingest", str(wh["v2"]), "--db", str(db)])
    assert again.exit_code == 0 and "skipped" in again.stderr, again.output


def test_the_rolled_back_content_is_refused_under_any_file_name_and_folder(wh, tmp_path):
    db = wh["db"]
    assert runner.invoke(app, ["rollback", wh["v2_batches"]["patients"], "--db", str(db)]).exit_code == 0
    copy = write_export(tmp_path / "elsewhere", {"patients.csv": V2["patients.csv"]})
    res = runner.invoke(app, ["ingest", str(copy), "--db", str(db)])
    assert res.exit_code == 1 and "patients.csv (the content of batch" in one_line(res)
    parquet = tmp_path / "as-parquet"  # the same rows in another format are other content: they load
    parquet.mkdir()
    pl.read_csv(copy / "patients.csv").write_parquet(parquet / "patients.parquet")
    assert runner.invoke(app, ["ingest", str(parquet), "--db", str(db)]).exit_code == 0


def test_a_write_session_on_an_old_warehouse_adds_the_new_tables_without_changing_its_registries(wh):
    db = wh["db"]
    _as_written_before_registry_history(db)
    with write_session(db) as con:
        pass
    assert registries(db)["ref_arms"].equals(wh["after"]["ref_arms"])
    assert query_db(db, "SELECT count(*) n FROM meta_rolled_back")["n"][0] == 0
    assert query_db(db, "SELECT count(*) n FROM raw_instruments WHERE _batch_id IS NULL")["n"][0] == 1
