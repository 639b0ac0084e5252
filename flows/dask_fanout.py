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

The units receive their frames as task arguments (pickled by Dask) and their results come back the
same way to the one process that called :func:`ketaoutcomes.pipeline.analyze_step`, which writes
them in its write session: no worker touches the warehouse.

Use it from Python (``analyze_step(db, study, fan_out=dask_fan_out(settings))``), from the flows
(``KETAOUTCOMES_EXECUTOR=dask``: ``flows.pipeline.analyze_task``), or from the CLI with the same
variables (``KETAOUTCOMES_EXECUTOR=dask uv run python -m ketaoutcomes analyze``, from the checkout).
"""

from __future__ import annotations

from flows import _env  # noqa: F401  (must precede the prefect import)

import contextlib
import contextvars
import logging
import uuid
from collections.abc import Callable
from typing import Any

import polars as pl
from dask.hashing import hash_buffer_hex
from dask.tokenize import normalize_token
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from ketaoutcomes.analysis.common import FanOut, Pending, Submit, run_unit
from ketaoutcomes.settings import ExecutionSettings

__all__ = ["FANOUT_FLOW_NAME", "dask_fan_out", "prefect_submit", "task_runner"]


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

#: Every unit: no cache (the analysis step knows when it is up to date), results kept in memory only,
#: no retries (a unit is deterministic: retrying it repeats its failure).
_UNIT_TASK = dict(cache_policy=NO_CACHE, persist_result=False, retries=0)


def task_runner(settings: ExecutionSettings) -> DaskTaskRunner:
    """The ``DaskTaskRunner`` of ``settings``: the scheduler at ``address``, else a local cluster."""
    if settings.address:
        return DaskTaskRunner(address=settings.address)
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": settings.n_workers, "threads_per_worker": settings.threads_per_worker, "processes": True,
        "host": "127.0.0.1", "dashboard_address": None,
    })


def prefect_submit(fn: Callable[..., Any], /, **kwargs: Any) -> Pending:
    """The :data:`~ketaoutcomes.analysis.common.Submit` of the fan-out: ``fn(**kwargs)`` as a Prefect
    task submitted to the running flow's task runner, run as in a serial run (:func:`run_unit`: one
    BLAS thread); its future's ``result()`` is the unit's result (or raises its exception). ``fn`` is
    a module-level function of the package, so a worker imports it by name rather than receiving its
    code."""
    label = "-".join([fn.__name__, *(v for v in kwargs.values() if isinstance(v, str))])
    return task(run_unit, name=fn.__name__, task_run_name=label, **_UNIT_TASK).submit(fn=fn, kwargs=kwargs)


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
        token = _BODY.set(body)
        try:
            with _api_for_workers():
                return _analysis_fanout.with_options(task_runner=task_runner(settings))()
        finally:
            _BODY.reset(token)

    return fan_out


#: The analysis the running fan-out flow calls. Not a closure of the flow: each task run's context
#: carries the flow, which Dask tokenizes and sends to the worker; a flow defined around ``body`` took
#: with it the analysis's whole input (the staged tables), pickled a few times for every unit (3.7 MB
#: a unit at 2,000 patients, about a gigabyte at a million); a module-level flow is pickled by name.
_BODY: contextvars.ContextVar[Callable[[Submit], Any]] = contextvars.ContextVar("ketaoutcomes_fanout_body")


def _running_body() -> Callable[[Submit], Any]:
    return _BODY.get()


@flow(name=FANOUT_FLOW_NAME, persist_result=False, validate_parameters=False, log_prints=False)
def _analysis_fanout() -> Any:
    # the flow's function is pickled with the flow (by value: the module's name holds the Flow, not the
    # function); it names the module's functions only, which are pickled by reference
    return _running_body()(prefect_submit)


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
