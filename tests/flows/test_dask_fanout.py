"""The analysis fan-out on Dask (flows/dask_fanout.py, docs/scaling.md): on a 2-worker LocalCluster,
through Prefect tasks, the analysis writes the same tables as the serial run, bit for bit.

Checked against the serial run of the same code on a copy of the same validated warehouse: every
ad_*/results_* table compared cell for cell (floats exactly, in row order) and the run's notes; and
against the Prefect API: the fan-out ran as the flow ``ketaoutcomes-analysis-fanout`` whose task runs
are the analysis's units. A small cohort and 20 bootstrap replicates keep it short.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.dask_fanout import FANOUT_FLOW_NAME, dask_fan_out
from ketaoutcomes.pipeline import analyze_step, ingest_step, simulate_step, validate_step
from ketaoutcomes.settings import ExecutionSettings, SimulationSettings, StudySettings
from ketaoutcomes.warehouse import fetch, read_connection

STUDY = StudySettings(name="fanout").updated(bootstrap_replicates=20)


def _tables(db: Path, run_id: str) -> dict[str, pl.DataFrame]:
    """Every ad_*/results_* table's rows of analysis ``run_id``, in stored order (results_runs
    without its timing columns)."""
    con = read_connection(db)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND "
            "(table_name LIKE 'ad\\_%' ESCAPE '\\' OR table_name LIKE 'results\\_%' ESCAPE '\\') ORDER BY 1").fetchall()]
        out = {n: fetch(con, f'SELECT * FROM "{n}" WHERE run_id = ?', [run_id]) for n in names}
    finally:
        con.close()
    out["results_runs"] = out["results_runs"].drop("started_at", "seconds")
    return out


@pytest.mark.slow
def test_the_fanout_on_a_two_worker_local_cluster_equals_the_serial_run(prefect_harness, tmp_path):
    export, serial_db = tmp_path / "export", tmp_path / "serial" / "w.duckdb"
    simulate_step(SimulationSettings(n_patients=300, seed=5), export)
    ingest_step(serial_db, export)
    validate_step(serial_db)
    dask_db = tmp_path / "dask" / "w.duckdb"
    dask_db.parent.mkdir()
    shutil.copyfile(serial_db, dask_db)

    serial = analyze_step(serial_db, STUDY)
    fanned = analyze_step(dask_db, STUDY, fan_out=dask_fan_out(ExecutionSettings(executor="dask", n_workers=2)))

    run_id = serial.details["run_id"]
    assert fanned.details["run_id"] == run_id  # same data, settings and code: the same run
    a, b = _tables(serial_db, run_id), _tables(dask_db, run_id)
    assert sorted(a) == sorted(b)
    assert {"results_contrasts", "results_ps", "results_cox", "results_safety", "results_trajectory"} <= set(a)
    differing = [n for n in a if not a[n].equals(b[n], null_equal=True)]
    assert differing == []
    assert a["results_contrasts"]["n_boot"].max() == 20  # the bootstrap ran, in the route units
    assert fanned.details["notes"] == serial.details["notes"]

    # it ran as Prefect tasks: one flow run of the fan-out, a task run per unit, all completed
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[FANOUT_FLOW_NAME])),
                                            sort=FlowRunSort.START_TIME_DESC, limit=1)
        assert flow_run.state.type.value == "COMPLETED"
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    names = sorted(t.name for t in tasks)
    assert all(t.state.type.value == "COMPLETED" for t in tasks)
    endpoints = sorted(a["results_km"]["paramcd"].unique().to_list())
    assert [n for n in names if n.startswith("endpoint_models-")] == [f"endpoint_models-{p}" for p in endpoints]
    pairs = a["results_ps"].select("paramcd", "target").rows()
    assert sorted(n for n in names if n.startswith("route_comparison-")) == sorted(
        f"route_comparison-{p}-{t}" for p, t in pairs)
    assert {"secondary_analyses", "relapse_analyses", "modifier_analyses"} <= set(names)


def test_a_units_task_does_not_carry_the_analysis_input(tmp_path):
    # Each task run's context carries the fan-out flow, which Dask tokenizes (pickling it) and sends to
    # the worker. Checked against the data: a flow that closed over the analysis (its input, the staged
    # tables) pickled to the size of those tables (3.7 MB at 2,000 patients) for every unit; the flow
    # now pickles by name, whatever the analysis holds, and the analysis it runs is this call's.
    import cloudpickle

    import flows.dask_fanout as fanout

    big = pl.DataFrame({"x": range(200_000)})
    seen = []
    token = fanout._BODY.set(lambda submit: seen.append((submit, big.height)) or "ran")
    try:
        assert len(cloudpickle.dumps(fanout._analysis_fanout)) < 20_000 < big.estimated_size()
        assert fanout._analysis_fanout.fn() == "ran" and seen == [(fanout.prefect_submit, 200_000)]
    finally:
        fanout._BODY.reset(token)


def test_dask_names_a_polars_frame_by_its_content_in_one_pass():
    # Dask names each task by a token of its arguments; without a token of its own a frame was pickled
    # and unpickled at least twice for it. Checked against Dask's contract for a token: the same
    # content gives the same token, other content (a value, a column name, a type, a row) another.
    from dask.tokenize import tokenize

    import flows.dask_fanout  # noqa: F401  (registers the token)

    frame = pl.DataFrame({"USUBJID": ["P1", "P2", None], "AVAL": [1.0, 2.5, 3.0]})
    assert tokenize(frame) == tokenize(frame.clone()) == tokenize(pl.DataFrame(frame.to_dict()))
    others = [frame.with_columns(pl.col("AVAL") + 1), frame.rename({"AVAL": "T"}), frame.head(2),
              frame.with_columns(pl.col("AVAL").cast(pl.Float32)), frame.reverse()]
    assert len({tokenize(frame), *(tokenize(o) for o in others)}) == 1 + len(others)
    assert tokenize(frame["AVAL"]) != tokenize(frame["AVAL"] * 2)
    assert tokenize(pl.DataFrame()) == tokenize(pl.DataFrame())


def test_a_frame_polars_cannot_hash_still_gets_a_dask_token_of_its_own(monkeypatch):
    # a frame whose rows polars cannot hash must not fail the submit: it gets a unique name, as Dask
    # gives an object it cannot tokenize (checked against that fallback: two calls, two names)
    from dask.tokenize import tokenize

    import flows.dask_fanout  # noqa: F401  (registers the token)

    def cannot(self, seed=0):
        raise pl.exceptions.InvalidOperationError("cannot hash")

    monkeypatch.setattr(pl.DataFrame, "hash_rows", cannot)
    frame = pl.DataFrame({"AVAL": [1.0, 2.0]})
    assert tokenize(frame) != tokenize(frame)
