"""Benchmark of the analysis fan-out (docs/scaling.md): the whole analysis of one warehouse
(``ketaoutcomes.analysis.run_study``: derive, then every unit of work) run serially and as Prefect
tasks on a local Dask cluster of 1 and of 2 workers (one thread each), as ratios against the serial
run measured in the same invocation. Each run is a process of its own, so each pays its own imports;
the Dask runs start the Prefect temporary API first (not timed: a deployment has its server running)
and count the start of their cluster, which is part of the price of a run. ``units`` is the span from
the first unit's start to the last one's end in the Prefect API (the fan-out without the cluster's
start-up and the derivation). Every run's tables and notes are checked equal to the serial run's,
bit for bit.

Usage (from the checkout)::

    uv run python scripts/bench_fanout.py --patients 5000
    uv run python scripts/benchmark.py --dask 5000          # the same, from the main benchmark

Not a test: timings depend on the machine (this one has 2 cores shared with other work); the ratios
are what to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The runs measured: label -> ExecutionSettings fields (None: serial).
MODES = {"serial": None, "dask, 1 worker": 1, "dask, 2 workers": 2}


def _child(db: Path, workers: int | None, out: Path, bootstrap: int) -> None:
    """One measured run (in its own process): the analysis of ``db``, its tables written to ``out``."""
    sys.path.insert(0, str(ROOT))
    if workers is not None:
        import flows._env  # noqa: F401  (before prefect)
    from ketaoutcomes.analysis import run_study
    from ketaoutcomes.analysis.common import HandedOver, serial
    from ketaoutcomes.ingest.load import load_registries_from_warehouse
    from ketaoutcomes.analysis_inputs import analysis_inputs  # what analyze_step hands the analysis
    from ketaoutcomes.settings import ExecutionSettings, StudySettings
    from ketaoutcomes.warehouse import read_connection

    con = read_connection(db)
    try:
        # handed over, as analyze_step does: the analysis lets go of them once read
        staged, registries = HandedOver(analysis_inputs(con, StudySettings())), load_registries_from_warehouse(con)
    finally:
        con.close()
    study = StudySettings().updated(bootstrap_replicates=bootstrap)
    fan_out, units = serial, None
    if workers is not None:
        from prefect import flow

        from flows.dask_fanout import FANOUT_FLOW_NAME, dask_fan_out

        flow(name="warm-up")(lambda: None)()  # the temporary API server starts here, untimed
        fan_out = dask_fan_out(ExecutionSettings(executor="dask", n_workers=workers))
    t0 = time.perf_counter()
    result = fan_out(lambda submit: run_study(staged, registries=registries, study=study, submit=submit))
    seconds = time.perf_counter() - t0
    if workers is not None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        with get_client(sync_client=True) as client:
            (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[FANOUT_FLOW_NAME])),
                                           sort=FlowRunSort.START_TIME_DESC, limit=1)
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        units = (max(t.end_time for t in tasks) - min(t.start_time for t in tasks)).total_seconds()
    out.mkdir(parents=True)
    for name, frame in result.tables.items():
        frame.write_parquet(out / f"{name}.parquet")
    (out / "notes.json").write_text(json.dumps([n.to_dict() for n in result.notes]))
    print(json.dumps({"seconds": seconds, "units": units}))


def _same(a: Path, b: Path) -> bool:
    import polars as pl

    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    if (a / "notes.json").read_text() != (b / "notes.json").read_text():
        return False
    return all(pl.read_parquet(a / n).equals(pl.read_parquet(b / n), null_equal=True) for n in names if n != "notes.json")


def main(patients: int, bootstrap: int) -> None:
    from ketaoutcomes.pipeline import ingest_step, simulate_step
    from ketaoutcomes.settings import SimulationSettings

    with tempfile.TemporaryDirectory(prefix="ketaoutcomes-fanout-") as tmp:
        work = Path(tmp)
        print(f"simulating and loading {patients:,} patients ...", file=sys.stderr)
        simulate_step(SimulationSettings(n_patients=patients), work / "export")
        db = work / "w.duckdb"
        ingest_step(db, work / "export")
        rows = []
        for label, workers in MODES.items():
            out = work / label.replace(" ", "_").replace(",", "")
            argv = [sys.executable, __file__, "--child", str(db), "--out", str(out), "--bootstrap", str(bootstrap)]
            proc = subprocess.run(argv + (["--workers", str(workers)] if workers else []), capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-5000:])
                raise SystemExit(f"{label} failed with exit {proc.returncode}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {label}: {res['seconds']:.1f} s", file=sys.stderr)
            rows.append({"run": label, **res, "same": _same(work / "serial", out)})
    base = rows[0]["seconds"]
    print(f"\n### analysis fan-out, {patients:,} patients, {bootstrap} bootstrap replicates\n")
    print("| run | wall s | x serial | units s (first start to last end) | tables equal to serial |")
    print("|---|---|---|---|---|")
    for r in rows:
        units = "" if r["units"] is None else f"{r['units']:.1f}"
        print(f"| {r['run']} | {r['seconds']:.1f} | {r['seconds'] / base:.2f} | {units} | {'yes' if r['same'] else 'NO'} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=5000)
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates per route (the study default: 200)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.workers, args.out, args.bootstrap)
    else:
        main(args.patients, args.bootstrap)
