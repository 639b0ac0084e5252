"""The analysis fan-out on a Dask cluster: each unit of work of the analysis as a Prefect task, run by
prefect-dask's ``DaskTaskRunner`` (docs/scaling.md says what runs where and what crosses the network).

The analysis (:func:`ketaoutcomes.analysis.run_study`) is split into units, each a pure function of
frames: the secondary, relapse and modifier steps, the models of each endpoint, and the propensity
comparison with its bootstrapped contrasts of each endpoint and route. It hands each unit to a
``submit`` function and puts the results together in a fixed order, so the tables are the same,
bit for bit, however the units ran. Here ``submit`` makes the unit a Prefect task (named after the
function; its run named with the endpoint and route) and submits it to the flow's task runner:

* ``ExecutionSettings.address`` given: the Dask scheduler there (a cluster someone runs; its
  workers need this project's locked environment installed, and a Prefect API they can reach:
  ``PREFECT_API_URL``);
* else a ``distributed.LocalCluster`` started for the run on 127.0.0.1: ``n_workers`` processes of
  ``threads_per_worker`` threads, no dashboard; stopped when the run ends.

The units' input frames do not travel with their tasks: the calling process writes each frame once
(a frame several units read, such as the sessions, once for all of them) as a read-only Parquet file
in an exchange folder of the run (:class:`FrameExchange`: ``ExecutionSettings.exchange_dir``, a
folder every worker reads at the same path, else for a local cluster one in the system's temporary
folder), and a unit's task gets the file's path (:class:`FrameFile`), which the worker reads. The
folder is removed when the run ends (and one a killed run left, by the next run in that place). A
cluster at an address with no exchange folder gets the frames with the tasks, pickled by Dask, which
at a million patients (some 1.5 GiB for a step unit) loses workers. The results come back with the
tasks to the one process that called
:func:`ketaoutcomes.pipeline.analyze_step`, which writes them in its write session: no worker
touches the warehouse.

Use it from Python (``analyze_step(db, study, fan_out=dask_fan_out(settings))``), from the flows
(``KETAOUTCOMES_EXECUTOR=dask``: ``flows.pipeline.analyze_task``), or from the CLI with the same
variables (``KETAOUTCOMES_EXECUTOR=dask uv run python -m ketaoutcomes analyze``, from the checkout).
"""

from __future__ import annotations

from flows import _env  # noqa: F401  (must precede the prefect import)

import concurrent.futures
import contextlib
import contextvars
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from dask.hashing import hash_buffer_hex
from dask.tokenize import normalize_token
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from ketaoutcomes.analysis.common import FanOut, Pending, Submit, run_unit
from ketaoutcomes.memory import ALLOCATOR_ENVIRONMENT
from ketaoutcomes.settings import EXECUTION_ENV, ExecutionSettings

__all__ = ["FANOUT_FLOW_NAME", "FrameExchange", "FrameFile", "dask_fan_out", "prefect_submit", "run_unit_reading",
           "task_runner"]


# Dask names every task it is given by a token of its arguments (``Client.submit``'s ``pure``), and
# prefect-dask's runner submits with the defaults. Dask has no token for a polars frame, so it made one
# by pickling each frame at least twice and unpickling it (to check the pickle is deterministic) and
# hashing the bytes: at 100,000 patients that was about 170 of the analysing process's CPU seconds and
# gigabytes of pickles, for a name the task run's id already makes unique. A frame's token is now its
# columns, types, height and a hash of its rows' hashes (polars' hash_rows, seeded): as deterministic,
# one pass over the frame, no copy of it.
@normalize_token.register(pl.DataFrame)
def _frame_token(frame: pl.DataFrame) -> tuple:
    try:
        rows = hash_buffer_hex(frame.hash_rows(seed=0).to_numpy()) if frame.width else None
    except Exception:  # noqa: BLE001 - a column polars cannot hash (Object): a name of its own, as Dask
        rows = uuid.uuid4().hex  # gives an object it cannot tokenize (the task run's id is in the key)
    return "polars.DataFrame", frame.columns, [str(t) for t in frame.dtypes], frame.height, rows


@normalize_token.register(pl.Series)
def _series_token(series: pl.Series) -> tuple:
    return "polars.Series", _frame_token(series.to_frame())

#: The flow run that holds one analysis's task runs (a subflow of the analyze task in the flows).
FANOUT_FLOW_NAME = "ketaoutcomes-analysis-fanout"

#: What a local cluster's worker imports as it starts (Dask's ``preload``), while the analysing process still
#: reads and derives: the units' modules, which the first unit of each worker imported before (some 2 s).
WORKER_PRELOAD = ("ketaoutcomes.analysis", "flows.dask_fanout")

#: Every unit: no cache (the analysis step knows when it is up to date), results kept in memory only,
#: no retries (a unit is deterministic: retrying it repeats its failure).
_UNIT_TASK = dict(cache_policy=NO_CACHE, persist_result=False, retries=0)


def task_runner(settings: ExecutionSettings) -> DaskTaskRunner:
    """The ``DaskTaskRunner`` of ``settings``: the scheduler at ``address``, else a local cluster."""
    if settings.address:
        return DaskTaskRunner(address=settings.address)
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": settings.n_workers, "threads_per_worker": settings.threads_per_worker, "processes": True,
        "host": "127.0.0.1", "dashboard_address": None, "preload": list(WORKER_PRELOAD),
    })


@dataclass(frozen=True)
class FrameFile:
    """A unit's input frame as a read-only Parquet file of the run's exchange folder (what its task
    carries instead of the frame; :meth:`read` gives the frame back, the same to the last bit)."""

    path: str
    height: int

    def read(self) -> pl.DataFrame:
        return pl.read_parquet(self.path)


#: An exchange folder's name: this prefix, its owner (host and process id), a unique part.
EXCHANGE_PREFIX = "ketaoutcomes-fanout-"


def _host() -> str:
    """This host, and on Linux its process-id namespace: two containers that share a host name and a
    folder do not see each other's processes, so neither may judge the other's folder."""
    host = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"
    try:
        return f"{host}_ns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # no /proc (macOS): one namespace
        return host


def _owner() -> str:
    return f"{_host()}-{os.getpid()}"


def sweep_stale_exchanges(parent: Path) -> list[Path]:
    """Remove the exchange folders in ``parent`` that a run on this host left when it was killed (a
    run that ends, well or not, removes its own): those whose name gives this host and the id of a
    process that no longer runs. A folder of another host or process-id namespace (a folder shared by
    a cluster, or by containers) or of a live process is left alone, as is anything not named as an
    exchange folder. Returns the folders removed (logged)."""
    removed = []
    mine = re.compile(re.escape(f"{EXCHANGE_PREFIX}{_host()}-") + r"(\d+)-[^/]+$")
    try:
        candidates = sorted(parent.glob(EXCHANGE_PREFIX + "*"))
    except OSError:
        return removed
    for folder in candidates:
        if not (m := mine.match(folder.name)) or int(m.group(1)) <= 0 or not folder.is_dir():
            continue
        try:
            os.kill(int(m.group(1)), 0)  # signal 0: only asks whether the process is there
            continue  # it runs: its folder stays
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, ValueError):  # another user's process, or no such id
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
            logging.getLogger(__name__).warning("removed %s: the exchange folder of a fan-out run that was "
                                                "killed (process %s of this host is gone)", folder, m.group(1))
    return removed


class FrameExchange:
    """The exchange folder of one fan-out run: a new folder in ``parent`` (None: the system's temporary
    folder) where :meth:`put` writes each frame once, read-only, however many units it is given to.
    Frames are told apart by identity while they live: the exchange holds them by weak reference, so a
    frame its owner lets go of (the staged tables the analysis hands over, docs/scaling.md) is freed,
    and its entry with it; its file stays until :meth:`close`, which removes the folder. The folder's
    name carries its owner (host and process id), so a later run removes the folder of a run that was
    killed (:func:`sweep_stale_exchanges`; ``swept``: what this one removed)."""

    def __init__(self, parent: Path | None = None):
        where = parent or Path(tempfile.gettempdir())
        self.swept = sweep_stale_exchanges(where)
        with _naming_the_folder(where):
            self.folder = Path(tempfile.mkdtemp(prefix=f"{EXCHANGE_PREFIX}{_owner()}-", dir=where))
        self._written: dict[int, tuple[weakref.ref, FrameFile]] = {}
        self._count = 0

    def put(self, frame: pl.DataFrame) -> FrameFile:
        key = id(frame)
        if (known := self._written.get(key)) is None or known[0]() is not frame:
            path = self.folder / f"frame-{self._count:04d}.parquet"
            self._count += 1
            with _naming_the_folder(self.folder):
                # uncompressed: written once and read once or twice on the same disk, where compressing
                # cost more time than the bytes it saved
                frame.write_parquet(path, compression="uncompressed", statistics=False)
                path.chmod(0o444)
            written = self._written  # (not self: the callback must not keep the exchange alive)
            ref = weakref.ref(frame, lambda r, key=key: written.pop(key, None) if written.get(key, (None,))[0] is r
                              else None)
            known = self._written[key] = (ref, FrameFile(str(path), frame.height))
        return known[1]

    def close(self) -> None:
        self._written.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def _naming_the_folder(folder: Path):
    """An OSError (no room, no permission) as one that names the exchange folder and what to do."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, f"the analysis fan-out could not write its input frames into {folder}: "
                      f"{exc.strerror or exc}; free room there, or set {EXECUTION_ENV['exchange_dir']} to "
                      "another folder (one every worker reads at the same path)") from exc


def run_unit_reading(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """:func:`run_unit` of ``fn`` with each :class:`FrameFile` among ``kwargs`` read first (on the worker)."""
    return run_unit(fn, {k: v.read() if isinstance(v, FrameFile) else v for k, v in kwargs.items()})


def prefect_submit(fn: Callable[..., Any], /, **kwargs: Any) -> Pending:
    """The :data:`~ketaoutcomes.analysis.common.Submit` of the fan-out: ``fn(**kwargs)`` as a Prefect
    task submitted to the running flow's task runner, run as in a serial run (:func:`run_unit`: one
    BLAS thread); its future's ``result()`` is the unit's result (or raises its exception). ``fn`` is
    a module-level function of the package, so a worker imports it by name rather than receiving its
    code. Each frame among ``kwargs`` goes as a :class:`FrameFile` of the run's exchange folder, when it
    has one."""
    if (starting := _STARTING.get(None)) is not None:
        starting.result()  # the cluster, started with the flow (_run_body): here its error, if it failed
    label = "-".join([fn.__name__, *(v for v in kwargs.values() if isinstance(v, str))])
    if (exchange := _EXCHANGE.get(None)) is not None:
        kwargs = {k: exchange.put(v) if isinstance(v, pl.DataFrame) else v for k, v in kwargs.items()}
    return task(run_unit_reading, name=fn.__name__, task_run_name=label, **_UNIT_TASK).submit(fn=fn, kwargs=kwargs)


def dask_fan_out(settings: ExecutionSettings) -> FanOut:
    """The :data:`~ketaoutcomes.analysis.common.FanOut` that runs one analysis as the flow
    ``ketaoutcomes-analysis-fanout`` on the Dask cluster of ``settings`` (started and stopped around
    the run when it is a local one)."""
    if settings.executor != "dask":
        raise ValueError(f"dask_fan_out needs executor dask, not {settings.executor!r}")

    def fan_out(body: Callable[[Submit], Any]) -> Any:
        # Dask's own log: its INFO chatter, and the tracebacks it logs (as INFO) and warnings when a local
        # cluster's connections close at the end of a run, say nothing about the run; a unit that fails
        # fails its task, the flow and this call with its own error.
        logging.getLogger("distributed").setLevel(logging.ERROR)
        exchange = None if settings.address and not settings.exchange_dir else FrameExchange(settings.exchange_dir)
        tokens = _BODY.set(body), _EXCHANGE.set(exchange)
        try:
            with _api_for_workers(), _worker_environment(settings):
                return _analysis_fanout.with_options(task_runner=task_runner(settings))()
        finally:
            _BODY.reset(tokens[0])
            _EXCHANGE.reset(tokens[1])
            if exchange is not None:
                exchange.close()

    return fan_out


#: The analysis the running fan-out flow calls. Not a closure of the flow: each task run's context
#: carries the flow, which Dask tokenizes and sends to the worker; a flow defined around ``body`` took
#: with it the analysis's whole input (the staged tables), pickled a few times for every unit (3.7 MB
#: a unit at 2,000 patients, about a gigabyte at a million); a module-level flow is pickled by name.
_BODY: contextvars.ContextVar[Callable[[Submit], Any]] = contextvars.ContextVar("ketaoutcomes_fanout_body")
#: The running fan-out's exchange folder (None: frames travel with the tasks).
_EXCHANGE: contextvars.ContextVar[FrameExchange | None] = contextvars.ContextVar("ketaoutcomes_fanout_exchange")


#: The running fan-out's cluster, starting on a thread (:func:`_run_body`).
_STARTING: contextvars.ContextVar[concurrent.futures.Future] = contextvars.ContextVar("ketaoutcomes_fanout_starting")


def _run_body() -> Any:
    """Run the analysis (the running fan-out's body) with the flow's task runner starting its cluster
    on a thread meanwhile: prefect-dask starts a local cluster (or connects to one at an address) when
    the first unit is submitted, which the analysis does once it has read and derived its inputs (at a
    million patients some 40 s); the workers' start and imports (:data:`WORKER_PRELOAD`) took some 6 s
    of the analysis's path there, now taken while it derives. The first unit waits for the start
    (:func:`prefect_submit`); the runner stops the cluster when the flow ends, after the start is done
    (an analysis that fails before its first unit waits for it, and its own error is the one raised)."""
    body, context = _BODY.get(), FlowRunContext.get()
    if context is None or not isinstance(context.task_runner, DaskTaskRunner):  # (called outside the fan-out's flow)
        return body(prefect_submit)
    runner = context.task_runner
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dask-cluster") as pool:
        token = _STARTING.set(pool.submit(lambda: runner.client))
        try:
            return body(prefect_submit)
        finally:
            _STARTING.reset(token)


@flow(name=FANOUT_FLOW_NAME, persist_result=False, validate_parameters=False, log_prints=False)
def _analysis_fanout() -> Any:
    # the flow's function is pickled with the flow (by value: the module's name holds the Flow, not the
    # function); it names the module's functions only, which are pickled by reference
    return _run_body()


def _worker_environment(settings: ExecutionSettings) -> contextlib.AbstractContextManager:
    """The environment a local cluster's worker processes start with: Dask's own
    (``distributed.nanny.pre-spawn-environ``: one OpenMP/MKL/OpenBLAS thread) with glibc keeping the
    memory it frees (:data:`ketaoutcomes.memory.ALLOCATOR_ENVIRONMENT`, as the analysing process does:
    :func:`ketaoutcomes.memory.keep_freed_heap`) in place of Dask's ``MALLOC_TRIM_THRESHOLD_``, and polars
    with the worker's threads (``POLARS_MAX_THREADS``; polars otherwise starts a thread per core in every
    worker).

    Dask's trim threshold (64 kB) has glibc hand freed memory back to the system at once, so a unit
    that builds and drops large arrays faults its pages in again and again: at 100,000 patients the
    fan-out's system CPU time was 32.7 s with it and 7.1 s without (2 workers; the serial run: 3.2 s).
    It keeps a worker's resident memory down between tasks, which these few large units do not need;
    glibc's own defaults, which the workers had after that, still mapped arrays past 32 MB afresh each
    time (docs/scaling.md).
    A running cluster's workers (``address``) are started by whoever runs it."""
    if settings.address:
        return contextlib.nullcontext()
    return _local_worker_environment(settings.threads_per_worker)


@contextlib.contextmanager
def _local_worker_environment(threads: int):
    import os

    import dask

    env = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **ALLOCATOR_ENVIRONMENT}  # (its trim: ours)
    env["POLARS_MAX_THREADS"] = threads
    # a nanny sets these in its own process's environment (this one) to start a worker with them; put
    # back after the run what this process had, for what it runs or starts afterwards
    before = {k: os.environ.get(k) for k in env}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _api_for_workers() -> contextlib.AbstractContextManager:
    """With no ``PREFECT_API_URL`` (a CLI run), Prefect starts a temporary API server in this process
    only: a worker, another process, would start one of its own (some 20 s each, measured). So the
    temporary server is started here and named to the workers, for the run."""
    if PREFECT_API_URL.value():
        return contextlib.nullcontext()
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()  # started once a process; stopped when it exits
    return temporary_settings(updates={PREFECT_API_URL: server.api_url})
