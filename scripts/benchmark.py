"""Benchmark: wall time and peak memory of the pipeline, as ratios against a
bare DuckDB read of the same files measured in the same run.

Usage (from the checkout)::

    uv run python scripts/benchmark.py                 # default cohort + 100,000 patients
    uv run python scripts/benchmark.py --patients 20000 --skip-default
    uv run python scripts/benchmark.py --only-default --repeat 3   # the main command: from scratch, then unchanged
    uv run python scripts/benchmark.py --dask 5000      # the analysis fan-out: serial vs Dask, 1 and 2 workers
    uv run python scripts/benchmark.py --patients 100000 --skip-default --steps "" --format parquet  # ingest only
    uv run python scripts/benchmark.py --patients 1000000 --skip-default --steps "" --export /tmp/x/export-1m
    uv run python scripts/benchmark.py --skip-default --nightly 1   # then a nightly delivery of 1% of the patients
    uv run python scripts/benchmark.py --patients 1000000 --skip-default --steps validate,analyze,report --workers 2

``--workers N`` runs every step with ``KETAOUTCOMES_EXECUTOR=dask`` and ``KETAOUTCOMES_DASK_WORKERS=N``
(the analysis's units on a local Dask cluster; the checkout on ``PYTHONPATH`` for ``flows``); a step's
peak RSS is still its largest single process (the analysing one), not the sum with its workers'.

Each measured command runs in its own process under a small wrapper, so its
peak RSS is its own, in a scratch folder that holds its own data/ and reports/. Prints a Markdown table:
per step the wall time, the peak RSS of its process and the peak of its whole process tree (sampled
every 0.25 s: with ``--workers`` the Dask workers, scheduler and Prefect's server count too; as the sum
of their RSS, and as the sum of their PSS, which counts a page the processes share once), and for a
cohort of ``--patients`` the end-to-end total of simulate (unless ``--export``), ingest and the steps.
The main command also runs again with nothing changed (``--repeat`` times), printed as well as a
ratio to the from-scratch run of the same benchmark.
Not a test: timings depend on the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BARE_READ = """
import sys, duckdb
con = duckdb.connect()
total = 0
fmt = sys.argv[2] if len(sys.argv) > 2 else "csv"
for name in ("patients", "courses", "sessions", "adverse_events", "mood_scores"):
    # materialised (a table of every column as text), as ingest must hold what it checks
    src = (f"read_csv('{sys.argv[1]}/{name}.csv', all_varchar=true)" if fmt == "csv"
           else f"read_parquet('{sys.argv[1]}/{name}.parquet')")
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM {src}")
    total += con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
print(total)
"""


# ru_maxrss of RUSAGE_CHILDREN is the largest child waited for so far, so each
# command runs under a fresh wrapper process whose only child is that command. The wrapper also
# samples, every 0.25 s from /proc, the summed RSS of the command's whole process tree (with --workers:
# the analysing process, the Dask scheduler and workers, Prefect's server): the machine's memory the
# step holds. A sample can miss a peak shorter than its interval, and the sum counts pages that several
# processes share (their libraries; a child forked and not yet exec'd, as when Dask starts a worker,
# shares all of its parent's) once per process. So it also sums their PSS (proportional set size,
# /proc/PID/smaps_rollup: a shared page counted once over the processes that share it), which is the
# machine's memory the tree holds. Reading smaps_rollup walks a process's page tables in the kernel, so
# the PSS is read only when the RSS sum is above the PSS peak so far (the PSS sum is never above the RSS
# sum: below it there can be no new PSS peak); the peak found is the same.
WRAPPER = """
import json, os, resource, subprocess, sys, time
PAGE = os.sysconf("SC_PAGE_SIZE")
def tree_rss(root):
    parent, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/statm") as fh:
                rss[int(d)] = int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = set(), [root]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, pp in parent.items() if pp == p and c not in tree]
    return sum(rss.get(p, 0) for p in tree), tree
def pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0
t0 = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
tree_peak = tree_pss_peak = 0
while True:
    rss_sum, tree = tree_rss(child.pid)
    tree_peak = max(tree_peak, rss_sum)
    if rss_sum > tree_pss_peak:  # (a tree's PSS is at most its RSS: no new PSS peak below the last one)
        tree_pss_peak = max(tree_pss_peak, sum(pss(p) for p in tree))
    try:  # (not a sleep: the command's end is seen at once, not at the next sample)
        rc = child.wait(timeout=0.25)
        break
    except subprocess.TimeoutExpired:
        continue
secs = time.perf_counter() - t0
print(json.dumps({"rc": rc, "seconds": secs, "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "tree_peak_kb": tree_peak / 1024, "tree_pss_peak_kb": tree_pss_peak / 1024}))
"""


def run(label: str, argv: list[str], env: dict, cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *argv], cwd=cwd, env=env, capture_output=True, text=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{label} failed with exit {res['rc']}")
    print(f"  {label}: {res['seconds']:.1f} s, {res['peak_kb'] / 1024:.0f} MB "
          f"(process tree {res['tree_peak_kb'] / 1024:.0f} MB RSS, {res['tree_pss_peak_kb'] / 1024:.0f} MB PSS)",
          file=sys.stderr)
    return {"step": label, "seconds": res["seconds"], "peak_rss_mb": res["peak_kb"] / 1024,
            "tree_peak_mb": res["tree_peak_kb"] / 1024, "tree_pss_peak_mb": res["tree_pss_peak_kb"] / 1024}


#: Label of the main command run again with nothing changed.
AGAIN = "report again, nothing changed"


def bench(patients: int | None, workdir: Path, env: dict, steps: tuple[str, ...] = ("validate", "analyze"),
          repeat: int = 1, fmt: str = "csv", export: Path | None = None) -> list[dict]:
    py = [sys.executable, "-m", "ketaoutcomes"]
    rows = []
    if patients is None:  # the README's main command on the embedded default
        rows.append(run("report (default cohort, from scratch)", py + ["report"], env, workdir))
        for _ in range(repeat):
            rows.append(run(AGAIN, py + ["report"], env, workdir))
        export = workdir / "data" / "synthetic" / "default"
    else:
        db = workdir / f"w-{patients}.duckdb"
        if export is None:
            export = workdir / f"export-{patients}"
            rows.append(run(f"simulate {patients:,} ({fmt})", py + ["simulate", "--patients", str(patients), "--out",
                                                                   str(export), "--format", fmt], env, workdir))
        rows.append(run("ingest", py + ["ingest", str(export), "--db", str(db)], env, workdir))
        for step in steps:  # simulate and ingest always run: the later steps need them
            rows.append(run(step, py + [step, "--db", str(db)], env, workdir))
    rows.append(run(f"bare DuckDB read of the same files, materialised ({fmt}; baseline)",
                    [sys.executable, "-c", BARE_READ, str(export), fmt], env, workdir))
    return rows


NIGHTLY = """
import sys, duckdb
src, out, pct, fmt = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
con = duckdb.connect()
def read(name):
    return (f"read_csv('{src}/{name}.csv', all_varchar=true)" if fmt == "csv"
            else f"read_parquet('{src}/{name}.parquet')")
# the courses, sessions and ratings of pct% of the patients, delivered again (a night's new and corrected records)
con.execute(f"CREATE TABLE p AS SELECT patient_id FROM {read('patients')} "
            f"WHERE hash(patient_id) % 10000 < {int(pct * 100)}")
con.execute(f"COPY (SELECT c.* FROM {read('courses')} c SEMI JOIN p USING (patient_id)) TO '{out}/courses.csv' (HEADER)")
con.execute(f"COPY (SELECT s.* FROM {read('sessions')} s SEMI JOIN "
            f"read_csv('{out}/courses.csv', all_varchar=true) c USING (course_id)) TO '{out}/sessions.csv' (HEADER)")
con.execute(f"COPY (SELECT m.* FROM {read('mood_scores')} m SEMI JOIN p USING (patient_id)) "
            f"TO '{out}/mood_scores.csv' (HEADER)")
"""

#: Steps after ingest that count in the end-to-end total (in the order they run).
STEPS = ("validate", "analyze", "report")

#: Steps of the nightly run (ingest flow): what the nightly delivery is timed against.
NIGHT_STEPS = ("nightly ingest", "nightly validate (changed rows)")


def nightly(patients: int, pct: float, workdir: Path, env: dict, export: Path, fmt: str) -> list[dict]:
    """A delivery of ``pct``% of the patients' courses, sessions and ratings (as CSV) into the
    warehouse the benchmark built from ``export``, then the nightly flow's steps: ingest, validate
    the changed rows."""
    py = [sys.executable, "-m", "ketaoutcomes"]
    night, db = workdir / "night", workdir / f"w-{patients}.duckdb"
    night.mkdir()
    subprocess.run([sys.executable, "-c", NIGHTLY, str(export), str(night), str(pct), fmt], check=True)
    return [run(NIGHT_STEPS[0], py + ["ingest", str(night), "--db", str(db)], env, workdir),
            run(NIGHT_STEPS[1], py + ["validate", "--changed-only", "--db", str(db)], env, workdir)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--skip-default", action="store_true", help="skip the README main command on the default cohort")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--steps", default="validate,analyze",
                    help="steps after simulate + ingest to measure (comma-separated; empty for ingest only)")
    ap.add_argument("--only-default", action="store_true", help="only the README main command on the default cohort")
    ap.add_argument("--repeat", type=int, default=1, help="times to run the main command again with nothing changed")
    ap.add_argument("--nightly", type=float, metavar="PCT", help="after the cohort's steps: a nightly delivery of PCT%% "
                    "of its patients (courses, sessions, ratings), ingested and validated (changed rows), as a share of "
                    "the full run")
    ap.add_argument("--format", choices=("csv", "parquet"), default="csv",
                    help="the simulated export's format (ingest and the bare read use the same files)")
    ap.add_argument("--export", type=Path, help="an export folder simulated before (of --patients patients, in "
                    "--format): skip simulate and measure on it")
    ap.add_argument("--dask", type=int, metavar="N", help="instead: the analysis of N patients serially and on Dask "
                    "with 1 and 2 workers (scripts/bench_fanout.py)")
    ap.add_argument("--workers", type=int, metavar="N", help="run the steps with the analysis fan-out on a local Dask "
                    "cluster of N workers (KETAOUTCOMES_EXECUTOR=dask)")
    args = ap.parse_args()
    if args.nightly is not None and not 0 < args.nightly <= 100:
        ap.error(f"--nightly is a percentage of the patients in (0, 100], not {args.nightly:g}")
    if args.dask:
        from bench_fanout import main as bench_fanout

        bench_fanout(args.dask, bootstrap=200)
        return
    results = {}
    cohorts = ([] if args.skip_default else [("default", None)])
    if not args.only_default:
        cohorts.append((f"{args.patients:,} patients", args.patients))
    with tempfile.TemporaryDirectory(prefix="ketaoutcomes-bench-") as tmp:
        for label, n in cohorts:
            work = Path(tmp) / label.replace(" ", "_").replace(",", "")
            work.mkdir()
            env = {**os.environ, "KETAOUTCOMES_HOME": str(work), "KETAOUTCOMES_DB": str(work / "data" / "warehouse" / "ketaoutcomes.duckdb")}
            if n is not None:
                env.pop("KETAOUTCOMES_DB")
            if args.workers:
                env.update({"KETAOUTCOMES_EXECUTOR": "dask", "KETAOUTCOMES_DASK_WORKERS": str(args.workers),
                            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))})
            export = args.export.resolve() if args.export and n is not None else None
            results[label] = bench(n, work, env, tuple(x for x in args.steps.split(",") if x), args.repeat,
                                   args.format, export)
            if n is not None and args.nightly:
                results[label][-1:-1] = nightly(n, args.nightly, work, env, export or work / f"export-{n}",
                                                args.format)
    def n_of(label: str) -> int | None:
        return dict(cohorts).get(label)

    for label, rows in results.items():
        base = rows[-1]
        on = f" (the analysis's units on a local Dask cluster of {args.workers} workers)" if args.workers else ""
        print(f"\n### {label}{on}\n")
        print("| step | wall s | x bare read | peak RSS MB | x bare read | process tree peak MB, RSS sum (sampled) "
              "| process tree peak MB, PSS sum (sampled) |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['step']} | {r['seconds']:.1f} | {r['seconds'] / base['seconds']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | "
                  f"{r['peak_rss_mb'] / base['peak_rss_mb']:.1f} | {r['tree_peak_mb']:.0f} | "
                  f"{r['tree_pss_peak_mb']:.0f} |")
        chain = [r for r in rows if r["step"].startswith(("simulate", "ingest", *STEPS))]
        if n_of(label) is not None and len(chain) > 1:
            total = sum(r["seconds"] for r in chain)
            print(f"\nend to end ({' -> '.join(r['step'].split(' (')[0] for r in chain)}): {total:.1f} s "
                  f"({total / 60:.2f} min), {total / base['seconds']:.1f}x the bare read; the largest step's peak: "
                  f"{max(r['peak_rss_mb'] for r in chain):.0f} MB in one process, "
                  f"{max(r['tree_peak_mb'] for r in chain):.0f} MB over its process tree (RSS sum), "
                  f"{max(r['tree_pss_peak_mb'] for r in chain):.0f} MB (PSS sum)")
        night = sum(r["seconds"] for r in rows if r["step"] in NIGHT_STEPS)
        full = sum(r["seconds"] for r in rows if r["step"] in ("ingest", "validate", "analyze"))
        if night and full:
            print(f"\nnightly run ({' + '.join(NIGHT_STEPS)}): {night:.1f} s, {night / full:.3f} of the full run's "
                  f"ingest + validate + analyze ({full:.1f} s)")
        again = [r["seconds"] for r in rows if r["step"] == AGAIN]
        if again:
            first = rows[0]["seconds"]
            print(f"\n{AGAIN}: {', '.join(f'{x:.2f}' for x in again)} s, i.e. "
                  f"{', '.join(f'{x / first:.3f}' for x in again)} of the from-scratch report ({first:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
