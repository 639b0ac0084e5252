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
    exchange = tmp_path / "exchange"  # where the units' input frames go as Parquet files for the workers
    exchange.mkdir()
    fanned = analyze_step(dask_db, STUDY, fan_out=dask_fan_out(ExecutionSettings(executor="dask", n_workers=2,
                                                                                 exchange_dir=exchange)))
    assert list(exchange.iterdir()) == []  # the run's files are removed when it ends

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


def _every_kind_of_column() -> pl.DataFrame:
    import datetime as dt

    return pl.DataFrame({
        "USUBJID": ["P1", None, "P3"],
        "AVAL": [1.0, float("nan"), -0.0],
        "EVENT": [1, 0, None],
        "small": pl.Series([1, 2, 3], dtype=pl.Int8),
        "flag": [True, None, False],
        "day": [dt.date(2024, 1, 1), None, dt.date(2024, 2, 29)],
        "ts": pl.Series([dt.datetime(2024, 1, 1, 8, 30, 1, 5), None, dt.datetime(2024, 3, 1)]).dt.replace_time_zone("UTC"),
        "naive_ts": [dt.datetime(2024, 1, 1, 8, 30), None, dt.datetime(2024, 3, 1)],
        "ARM": pl.Series(["IV", "SSRI", "IV"], dtype=pl.Categorical),
        "SEX": pl.Series(["F", "M", None], dtype=pl.Enum(["F", "M"])),
        "doses": [[1.0, 2.0], [], None],
    })


def _same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Same columns, types and values: floats bit for bit (NaN and -0.0 too), the rest as Arrow sees them."""
    if a.schema != b.schema:
        return False
    return all(a[c].to_numpy().tobytes() == b[c].to_numpy().tobytes() if a.schema[c] == pl.Float64
               else a[c].to_arrow().equals(b[c].to_arrow()) for c in a.columns)


def test_a_frame_comes_back_from_its_exchange_file_the_same_to_the_last_bit(tmp_path):
    # checked against the frame itself: every value, type and null, NaN and -0.0 included
    from flows.dask_fanout import FrameExchange

    frame = _every_kind_of_column()
    exchange = FrameExchange(tmp_path)
    try:
        file = exchange.put(frame)
        back = file.read()
        assert back.height == file.height == 3 and _same(back, frame)
        # written once however many units are given it, read-only; another frame, another file
        assert exchange.put(frame) == file and exchange.put(frame.head(2)) != file
        assert sorted(p.name for p in exchange.folder.iterdir()) == ["frame-0000.parquet", "frame-0001.parquet"]
        assert all(p.stat().st_mode & 0o222 == 0 for p in exchange.folder.iterdir())
        assert exchange.folder.parent == tmp_path
    finally:
        exchange.close()
    assert list(tmp_path.iterdir()) == []  # removed at the end of the run


class _Runner:
    """A stand-in for prefect-dask's runner: its ``client`` (the cluster's start) takes a while, on some thread."""

    def __init__(self, fail: bool = False):
        self.fail, self.started, self.events = fail, 0, []

    @property
    def client(self):
        import threading
        import time

        self.events.append(("start", threading.current_thread().name))
        time.sleep(0.3)
        self.started += 1
        self.events.append(("started", None))
        if self.fail:
            raise OSError("no cluster")
        return "client"


def _run_body_on(runner: _Runner, body, monkeypatch):
    """``flows.dask_fanout._run_body`` of ``body`` in a flow run whose task runner is ``runner``."""
    import types

    import flows.dask_fanout as fanout

    monkeypatch.setattr(fanout, "DaskTaskRunner", _Runner)
    monkeypatch.setattr(fanout, "FlowRunContext", types.SimpleNamespace(get=lambda: types.SimpleNamespace(
        task_runner=runner)))
    token = fanout._BODY.set(body)
    try:
        return fanout._run_body()
    finally:
        fanout._BODY.reset(token)


@pytest.mark.parametrize("fail", [False, True])
def test_the_cluster_starts_on_a_thread_with_the_flow_and_the_first_unit_waits_for_it(monkeypatch, fail):
    # checked against the order of events: the cluster's start runs on a thread of its own while the
    # analysis goes on (it derives before its first unit), the first unit is submitted only once the
    # start is done (or gets its error), and the start happens once
    import flows.dask_fanout as fanout

    runner = _Runner(fail)

    class _Task:
        def __init__(self, fn, **options):
            self.name = options["name"]

        def submit(self, **kwargs):
            runner.events.append(("submit", self.name))
            return self.name

    monkeypatch.setattr(fanout, "task", _Task)

    def body(submit):
        runner.events.append(("deriving", runner.started))
        return [submit(_unit, n=1), submit(_unit, n=2)]

    if fail:
        with pytest.raises(OSError, match="no cluster"):
            _run_body_on(runner, body, monkeypatch)
    else:
        assert _run_body_on(runner, body, monkeypatch) == ["_unit", "_unit"]
    kinds = [e[0] for e in runner.events]
    assert kinds.index("deriving") < kinds.index("started")  # the analysis did not wait for the start
    assert runner.events[0][1].startswith("dask-cluster")  # on a thread of its own
    assert runner.started == 1
    if fail:  # the start's error, at the first unit: nothing submitted
        assert "submit" not in kinds
    else:
        assert kinds.index("started") < kinds.index("submit") and kinds.count("submit") == 2


def test_an_analysis_that_fails_before_its_first_unit_raises_its_own_error_once_the_cluster_has_started(monkeypatch):
    # the runner stops the cluster when the flow ends: the start must be over by then (no cluster left running)
    runner = _Runner()

    def body(submit):
        raise ValueError("no course is analysable")

    with pytest.raises(ValueError, match="no course is analysable"):
        _run_body_on(runner, body, monkeypatch)
    assert runner.started == 1 and runner.events[-1] == ("started", None)


def test_a_unit_is_submitted_with_file_paths_in_place_of_its_frames(monkeypatch, tmp_path):
    # what a unit's task carries, checked against the submit call: each frame as the path of its file
    # (one file for a frame two units read), every other argument as given; the worker reads the
    # files back before running the unit
    import flows.dask_fanout as fanout

    submitted = []

    class _Task:
        def __init__(self, fn, **options):
            self.fn, self.options = fn, options

        def submit(self, **kwargs):
            submitted.append((self.fn, self.options["name"], kwargs))

    monkeypatch.setattr(fanout, "task", _Task)
    frame, other = _every_kind_of_column(), pl.DataFrame({"x": [1]})
    exchange = fanout.FrameExchange(tmp_path)
    token = fanout._EXCHANGE.set(exchange)
    try:
        fanout.prefect_submit(_unit, frame=frame, other=other, paramcd="TTRESP", n=3)
        fanout.prefect_submit(_unit, frame=frame, other=None, paramcd="TTREM", n=4)
        (fn, name, a), (_, _, b) = submitted
        assert fn is fanout.run_unit_reading and name == "_unit"
        assert isinstance(a["kwargs"]["frame"], fanout.FrameFile) and a["kwargs"]["frame"] == b["kwargs"]["frame"]
        assert isinstance(a["kwargs"]["other"], fanout.FrameFile) and b["kwargs"]["other"] is None
        assert (a["kwargs"]["paramcd"], a["kwargs"]["n"]) == ("TTRESP", 3)
        assert len(list(exchange.folder.iterdir())) == 2
        assert fanout.run_unit_reading(**a) == (3, 1, "TTRESP", frame.height)
    finally:
        fanout._EXCHANGE.reset(token)
        exchange.close()


def _unit(frame: pl.DataFrame, other: pl.DataFrame | None, paramcd: str, n: int) -> tuple:
    assert isinstance(frame, pl.DataFrame) and _same(frame, _every_kind_of_column())
    return n, other.height, paramcd, frame.height


def test_an_exchange_folder_that_cannot_be_written_is_an_error_naming_it_and_the_variable(tmp_path):
    from flows.dask_fanout import FrameExchange

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(OSError) as info:
        FrameExchange(not_a_folder)
    message = str(info.value)
    assert str(not_a_folder) in message and "KETAOUTCOMES_DASK_EXCHANGE" in message and "\n" not in message


@pytest.mark.slow
def test_a_local_clusters_workers_start_with_the_analysiss_malloc_settings_their_polars_threads_and_its_modules(
        monkeypatch):
    # checked against the worker processes themselves: Dask's 64 kB trim threshold cost the fan-out
    # 25 s of system time at 100,000 patients (docs/scaling.md); the workers keep freed memory as the
    # analysing process does (ketaoutcomes.memory); Dask's one-thread settings stay
    import os
    import sys

    from distributed import Client, LocalCluster

    from flows.dask_fanout import WORKER_PRELOAD, _worker_environment, task_runner
    from ketaoutcomes.memory import KEPT_HEAP_BYTES

    names = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "POLARS_MAX_THREADS", "OPENBLAS_NUM_THREADS")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    settings = ExecutionSettings(executor="dask", n_workers=1, threads_per_worker=2)
    # the cluster prefect-dask starts for these settings (task_runner's kwargs), which preloads the units' modules
    with _worker_environment(settings), LocalCluster(**task_runner(settings).cluster_kwargs) as cluster:
        with Client(cluster) as client:
            (env,) = client.run(lambda: tuple(os.environ.get(n) for n in names)).values()
            (loaded,) = client.run(lambda: sorted(set(WORKER_PRELOAD) & set(sys.modules))).values()
    assert env == (str(KEPT_HEAP_BYTES), str(KEPT_HEAP_BYTES), "2", "1")
    assert loaded == sorted(WORKER_PRELOAD) == ["flows.dask_fanout", "ketaoutcomes.analysis"]
    assert all(n not in os.environ for n in names)  # this process's environment is as it was
    remote = ExecutionSettings(executor="dask", address="tcp://scheduler.example:8786")
    import dask

    before = dask.config.get("distributed.nanny.pre-spawn-environ")
    with _worker_environment(remote):  # a running cluster's workers are not started here
        assert dask.config.get("distributed.nanny.pre-spawn-environ") == before


def test_the_exchange_does_not_keep_a_frame_alive_and_a_new_frame_gets_its_own_file(tmp_path):
    # checked against a weak reference to the frame: the staged tables the analysis hands over must be
    # freed when it lets go of them, though their files stay for the units still to read them
    import gc
    import weakref

    from flows.dask_fanout import FrameExchange

    exchange = FrameExchange(tmp_path)
    try:
        frame = pl.DataFrame({"a": [1, 2, 3]})
        file = exchange.put(frame)
        alive = weakref.ref(frame)
        del frame
        gc.collect()
        assert alive() is None and exchange._written == {}
        assert file.read().equals(pl.DataFrame({"a": [1, 2, 3]}))  # its file is still there
        # a frame made later (perhaps at the freed frame's address) is a frame of its own
        other = pl.DataFrame({"b": ["x"]})
        assert exchange.put(other) != file and exchange.put(other).read().equals(other)
        assert len(list(exchange.folder.iterdir())) == 2
    finally:
        exchange.close()


def test_the_next_run_removes_the_exchange_folder_a_killed_run_left_and_nothing_else(tmp_path):
    # checked against a process killed for the test: its folder goes; a live process's, another
    # host's or process-id namespace's, an older unnamed one and an unrelated folder stay
    import os
    import subprocess
    import sys

    from flows.dask_fanout import EXCHANGE_PREFIX, FrameExchange, _host

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.kill()
    proc.wait()
    dead = tmp_path / f"{EXCHANGE_PREFIX}{_host()}-{proc.pid}-abc123"
    kept = [tmp_path / f"{EXCHANGE_PREFIX}{_host()}-{os.getpid()}-live",
            tmp_path / f"{EXCHANGE_PREFIX}otherhost-{proc.pid}-x", tmp_path / f"{EXCHANGE_PREFIX}k2j3h4",
            tmp_path / f"{EXCHANGE_PREFIX}{_host()}0-{proc.pid}-another-namespace",
            tmp_path / "something-else"]
    for folder in (dead, *kept):
        folder.mkdir()
        (folder / "frame-0000.parquet").write_bytes(b"x")
    exchange = FrameExchange(tmp_path)
    try:
        assert exchange.swept == [dead] and not dead.exists() and all(f.exists() for f in kept)
        assert exchange.folder.name.startswith(f"{EXCHANGE_PREFIX}{_host()}-{os.getpid()}-")
        # a second run finds its own live folder and leaves it
        second = FrameExchange(tmp_path)
        assert second.swept == [] and exchange.folder.exists()
        second.close()
    finally:
        exchange.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in kept)
