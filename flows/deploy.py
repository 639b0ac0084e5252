"""Start the schedules: ONE command, run from the checkout::

    uv run python -m flows.deploy --export-dir /exports/latest   # or $KETAOUTCOMES_EXPORT_DIR, or --demo

It serves three deployments from this process (Prefect's ``serve`` model: no
work pool, no worker; runs execute in subprocesses of this process, one at a
time):

* ``ketaoutcomes-ingest/nightly-ingest-validate``: cron ``0 2 * * *`` (UTC),
  ingest (the configured export folder: ``--export-dir``, else
  ``$KETAOUTCOMES_EXPORT_DIR``; the synthetic demo cohort only with ``--demo``;
  with none of them nothing is served) + validate;
* ``ketaoutcomes-analysis/weekly-analysis-report``: cron ``0 4 * * 1`` (UTC,
  Mondays, after that night's ingest), analyze + render;
* ``ketaoutcomes-pipeline/on-demand``: no schedule, everything, started by hand.

Why it also starts a server: creating runs from schedules is the job of the
Prefect server's scheduler service. The temporary ("ephemeral") API that
Prefect starts by itself when ``PREFECT_API_URL`` is unset runs without that
service (Prefect 3.8.8 ``create_app(ephemeral=True)`` starts only the services
marked run-in-ephemeral, and the scheduler is not one), so a served deployment
with a cron never gets a run there (measured: an every-10-s deployment served
for 80 s against the ephemeral API got no run). So, unless ``PREFECT_API_URL``
points at a server already, this command first starts ``prefect server start``
on 127.0.0.1:4200 (``--host``/``--port``) as a child process (SQLite database and
``server.log`` in ``.state/prefect``; UI at http://127.0.0.1:4200, calling the API on
the same host and port: :func:`server_environment`), points the API URL at it and
serves. Ctrl-C or SIGTERM: the schedules are paused (so no backlog of missed
runs replays on the next start), a run killed mid-way is marked CRASHED, and the
server is stopped.

Other uses::

    uv run python -m flows.deploy --check             # print the deployments as JSON, start nothing
    uv run python -m flows.deploy --db /x/w.duckdb --export-dir /exports/latest
    uv run python -m flows.deploy --demo              # the nightly run loads the synthetic demo cohort
    uv run python -m flows.deploy --demo-interval 30  # every 30 s instead of the crons (to try it)
    # while it serves, from another shell:
    PREFECT_API_URL=http://127.0.0.1:4200/api uv run prefect deployment run 'ketaoutcomes-pipeline/on-demand'

Paths given here are resolved now and stored as deployment parameters; paths
not given resolve at run time exactly as the CLI does ($KETAOUTCOMES_DB,
$KETAOUTCOMES_HOME, which this command defaults to the checkout).
"""

from __future__ import annotations

from flows import _env  # noqa: F401  (must precede the prefect import)

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Interval

from flows.pipeline import EXPORT_ENV, analysis_flow, ingest_flow, ketaoutcomes_pipeline

__all__ = [
    "DEPLOYMENTS",
    "TIMEZONE",
    "build_deployments",
    "describe",
    "LocalServer",
    "local_server",
    "main",
    "server_environment",
]

TIMEZONE = "UTC"

#: name -> (flow, cron or None, description). The single source of the schedule
#: facts; dags.md and the tests repeat them.
DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "nightly-ingest-validate": {
        "flow": ingest_flow,
        "cron": "0 2 * * *",
        "description": "Nightly 02:00 UTC: ingest the export folder into the warehouse, then validate it.",
    },
    "weekly-analysis-report": {
        "flow": analysis_flow,
        "cron": "0 4 * * 1",
        "description": "Mondays 04:00 UTC (after the Monday nightly run): survival analysis + HTML report.",
    },
    "on-demand": {
        "flow": ketaoutcomes_pipeline,
        "cron": None,
        "description": "No schedule: the whole pipeline, started by hand (prefect deployment run ...).",
    },
}

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
TAGS = ["ketaoutcomes"]


def _abs(value: str | None) -> str | None:
    return str(Path(value).expanduser().resolve()) if value else None


def build_deployments(
    *,
    db: str | None = None,
    export_dir: str | None = None,
    study_file: str | None = None,
    reports_dir: str | None = None,
    demo_interval: float | None = None,
    demo: bool = False,
) -> list[RunnerDeployment]:
    """The deployments, built but not registered or served (no API call).

    Only the paths given become deployment parameters (resolved to absolute
    paths); the others keep the flows' defaults, resolved at run time.
    ``demo_interval`` (seconds) replaces the crons by an interval schedule, to
    watch the schedules fire without waiting for 02:00. ``demo``: the nightly
    ingest loads the synthetic demo cohort (its ``demo`` parameter) instead of an
    export folder.
    """
    given = {
        "db": _abs(db),
        "export_dir": _abs(export_dir),
        "study_file": _abs(study_file),
        "reports_dir": _abs(reports_dir),
        "demo": True if demo else None,
    }
    out: list[RunnerDeployment] = []
    for name, spec in DEPLOYMENTS.items():
        flow = spec["flow"]
        accepted = set(flow.parameters.properties)
        params = {k: v for k, v in given.items() if v is not None and k in accepted}
        if spec["cron"] is None:
            schedules = []
        elif demo_interval:
            schedules = [Interval(dt.timedelta(seconds=demo_interval), timezone=TIMEZONE)]
        else:
            schedules = [Cron(spec["cron"], timezone=TIMEZONE)]
        out.append(
            flow.to_deployment(
                name=name,
                schedules=schedules,
                parameters=params,
                description=spec["description"],
                tags=TAGS,
                concurrency_limit=1,
                # runs import flows.pipeline as a module (not as a script file)
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return out


def describe(deployments: list[RunnerDeployment]) -> list[dict[str, Any]]:
    """JSON-able summary: full name, schedules (cron/interval + timezone), parameters."""
    rows = []
    for d in deployments:
        scheds = []
        for s in d.schedules or []:
            sch = s.schedule
            entry: dict[str, Any] = {"timezone": getattr(sch, "timezone", None), "active": s.active}
            if getattr(sch, "cron", None):
                entry["cron"] = sch.cron
            if getattr(sch, "interval", None):
                entry["interval_seconds"] = sch.interval.total_seconds()
            scheds.append(entry)
        rows.append(
            {
                "name": f"{d.flow_name}/{d.name}",
                "schedules": scheds,
                "parameters": d.parameters,
                "concurrency_limit": d.concurrency_limit,
                "tags": d.tags,
            }
        )
    return rows


# --------------------------------------------------------------------------- local server


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the server gets SIGTERM if this process dies, even by kill -9."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclasses.dataclass(frozen=True)
class LocalServer:
    api_url: str
    started_here: bool


#: The settings a UI API URL can come from (Prefect 3.8.8, ``ServerUISettings.api_url``'s aliases).
UI_API_URL_SETTINGS = ("PREFECT_UI_API_URL", "PREFECT_SERVER_UI_API_URL")


def server_environment(host: str, port: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the local server on host:port, whose UI calls that same server.

    The UI reads the API URL it calls from the server's ``/ui-settings`` (``api_url``), which
    Prefect 3.8.8 takes from ``PREFECT_UI_API_URL``, else ``PREFECT_API_URL``, else
    ``http://PREFECT_SERVER_API_HOST:PREFECT_SERVER_API_PORT/api`` (default 127.0.0.1:4200): the
    ``--port`` given to ``prefect server start`` is not among them, so a server on another port
    served a UI that called 4200 ("Can't connect"). Here the host and port are set as
    ``PREFECT_SERVER_API_HOST``/``PORT`` and the UI's API URL as this server's, unless the user set
    ``PREFECT_UI_API_URL`` (a proxy in front of the server, say), which is kept.
    """
    env = dict(os.environ if environ is None else environ)
    env.pop("PREFECT_API_URL", None)  # this server is not a client of another one
    env["PREFECT_SERVER_API_HOST"] = host
    env["PREFECT_SERVER_API_PORT"] = str(port)
    if not any(env.get(k) for k in UI_API_URL_SETTINGS):
        env["PREFECT_UI_API_URL"] = f"http://{_url_host(host)}:{port}/api"
    return env


def _url_host(host: str) -> str:
    """A host as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@contextlib.contextmanager
def local_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, ui: bool = True) -> Iterator[LocalServer]:
    """A Prefect server *with its scheduler* for the duration of the block.

    Reuses a server that already answers on host:port (``started_here`` False). Otherwise starts
    ``python -m prefect server start`` (log: $PREFECT_HOME/server.log), waits
    for /api/health (up to PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS),
    and terminates it on exit.
    """
    api_url = f"http://{_url_host(host)}:{port}/api"
    if _healthy(api_url):
        print(f"flows.deploy: using the Prefect server already running at {api_url}", flush=True)
        yield LocalServer(api_url, started_here=False)
        return
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--scheduler"]
    cmd.append("--ui" if ui else "--no-ui")
    env = server_environment(host, port)
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
    print(f"flows.deploy: starting the Prefect server on {host}:{port} (log: {log_path})", flush=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the server after the runner
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    try:
        t0 = time.monotonic()
        while not _healthy(api_url, timeout=1.0):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the Prefect server exited with code {proc.returncode} while starting; see {log_path}"
                )
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s; see {log_path}")
            time.sleep(0.25)
        print(f"flows.deploy: server ready in {time.monotonic() - t0:.1f} s; UI http://{host}:{port}", flush=True)
        yield LocalServer(api_url, started_here=True)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def _api(api_url: str) -> Iterator[None]:
    """Point this process, and the run subprocesses it spawns, at api_url."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old


def _serve(deployments: list[RunnerDeployment]) -> None:
    """``prefect.serve(*deployments, limit=1)``, with a clean stop on SIGTERM.

    limit=1: runs of the three deployments never overlap (one warehouse writer
    at a time). Prefect 3.8.8's own SIGTERM handler calls ``sys.exit`` inside
    the event loop, which cuts the pausing of the schedules short (measured:
    deployments left active with their pre-created runs, replayed as late runs
    on the next start). Here SIGTERM is turned into SIGINT, i.e. exactly Ctrl-C:
    asyncio cancels the runner, which pauses every schedule before returning.
    """
    import asyncio

    from prefect.flows import _display_serve_start_message
    from prefect.runner import Runner

    class _Runner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            self._logger.info("SIGTERM received: stopping as on Ctrl-C (schedules are paused first)")
            signal.raise_signal(signal.SIGINT)

    # Ctrl-C must work even when started in the background (SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    runner = _Runner(pause_on_shutdown=True, limit=1)
    for deployment in deployments:
        runner.add_deployment(deployment)
    _display_serve_start_message(*deployments)
    asyncio.run(runner.start())  # KeyboardInterrupt after a clean stop


def _crash_unfinished_runs() -> None:
    """Mark runs the stopped runner left RUNNING/PENDING as CRASHED.

    Stopping the runner kills a run in progress before it can report, and it
    would show as running for ever. Only called for a server this command
    started, so every run on it is one of ours. (The warehouse is unharmed: a
    killed writer never publishes its snapshot.)
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["RUNNING", "PENDING", "CANCELLING"]))
                )
            )
            for run in runs:
                client.set_flow_run_state(
                    run.id, Crashed(message="flows.deploy was stopped while this run was in progress"), force=True
                )
                print(f"flows.deploy: marked the interrupted run {run.name!r} as crashed", flush=True)
    except Exception as exc:  # pragma: no cover - best effort on the way out
        print(f"flows.deploy: could not mark interrupted runs as crashed: {exc}", flush=True)


def _prepend_pythonpath(folder: Path) -> None:
    """Run subprocesses import ``flows`` from the checkout whatever their cwd."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(folder) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *parts])
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _sigterm(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.deploy",
        description="Serve the nightly ingest+validate and weekly analysis+report schedules (see dags.md).",
    )
    parser.add_argument("--check", action="store_true", help="print the deployments as JSON and exit (starts nothing)")
    parser.add_argument("--db", help="warehouse file for every run (default: as the CLI, at run time)")
    parser.add_argument("--export-dir", help=f"export folder the nightly run ingests (default: ${EXPORT_ENV} at run "
                        "time; with neither, nor --demo, nothing is served)")
    parser.add_argument("--demo", action="store_true", help="the nightly run loads the synthetic demo cohort instead "
                        "of an export folder (into data/synthetic/default, or beside a --db warehouse)")
    parser.add_argument("--study-file", help="StudySettings file (TOML or JSON) for the weekly run (default: the default study)")
    parser.add_argument("--reports-dir", help="where reports go (default: reports/)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address of the local Prefect server (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of the local Prefect server and its UI, "
                        "which calls the API on this same port (default 4200; $PREFECT_UI_API_URL, if set, wins)")
    parser.add_argument("--no-ui", action="store_true", help="start the local server without its web UI")
    parser.add_argument(
        "--demo-interval", type=float, metavar="SECONDS", help="replace the crons by this interval (to try the setup)"
    )
    args = parser.parse_args(argv)

    deployments = build_deployments(
        db=args.db,
        export_dir=args.export_dir,
        study_file=args.study_file,
        reports_dir=args.reports_dir,
        demo_interval=args.demo_interval,
        demo=args.demo,
    )
    if args.check:
        print(json.dumps(describe(deployments), indent=2))
        return 0
    if args.demo and (args.export_dir or os.environ.get(EXPORT_ENV)):
        print(f"flows.deploy: error: --demo and an export folder (--export-dir or ${EXPORT_ENV}) both given; "
              "give one of them", file=sys.stderr)
        return 2
    if not (args.demo or args.export_dir or os.environ.get(EXPORT_ENV)):
        print(f"flows.deploy: error: the nightly ingest has no export folder: give --export-dir DIR or set "
              f"${EXPORT_ENV}, or --demo to load the synthetic demo cohort; nothing was started", file=sys.stderr)
        return 2

    # scheduled runs must not depend on the directory this was started from
    os.environ.setdefault("KETAOUTCOMES_HOME", str(_env.REPO_ROOT))
    if os.environ.get(EXPORT_ENV):
        os.environ[EXPORT_ENV] = _abs(os.environ[EXPORT_ENV])
    _prepend_pythonpath(_env.REPO_ROOT)
    # SIGTERM (systemd, docker stop, kill) -> the same graceful stop as Ctrl-C
    signal.signal(signal.SIGTERM, _sigterm)

    from prefect.settings import get_current_settings

    external = get_current_settings().api.url
    try:
        if external:
            print(f"flows.deploy: serving against PREFECT_API_URL={external}", flush=True)
            _serve(deployments)
        else:
            with local_server(args.host, args.port, ui=not args.no_ui) as server, _api(server.api_url):
                try:
                    _serve(deployments)
                finally:
                    if server.started_here:
                        _crash_unfinished_runs()
    except KeyboardInterrupt:
        print("flows.deploy: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
