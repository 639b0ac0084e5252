"""Benchmark: the project's Cox model (``cox_ph``) against lifelines, statsmodels and R's ``coxph``.

Usage (from the checkout)::

    uv run python scripts/bench_cox.py                       # 200k continuous times, 1M day-level ties
    uv run python scripts/bench_cox.py --repeat 3 --skip statsmodels
    uv run python scripts/bench_cox.py --case tied:100000 --case continuous:50000

The same seeded data (6 covariates: 4 continuous or counts, 2 binary; ~30% censored) is fitted
with Efron ties by each method, timed in this process (R in an ``Rscript`` subprocess, where only
the ``coxph`` call is timed, as ``cox_ph`` is timed from its frame to its result; both compute
Harrell's C as well). Each time is the best of ``--repeat`` runs (one run for lifelines and
statsmodels, which take tens of seconds). R is optional: skipped when ``Rscript`` with the
survival package is not found. Prints a Markdown table with each time as a ratio to R's (or to
``cox_ph``'s without R) and the largest relative difference of each method's coefficients from R's.
Wall-clock and CPU seconds are both shown: on a shared machine the CPU time (all threads of the
process; user + system for R) is the steadier figure. Not a test: timings depend on the machine
and its load; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from ketaoutcomes.models import cox_ph

COVS = [f"x{j}" for j in range(1, 7)]

R_SCRIPT = r"""
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
reps <- as.integer(args[2])
best <- Inf
cpu <- Inf
for (i in seq_len(reps)) {
  el <- system.time(fit <- coxph(Surv(time, event) ~ x1 + x2 + x3 + x4 + x5 + x6, data = d, ties = "efron"))
  best <- min(best, el[["elapsed"]])
  cpu <- min(cpu, el[["user.self"]] + el[["sys.self"]])
}
cat(sprintf('{"seconds": %.6f, "cpu": %.6f, "coef": [%s], "iter": %d}\n', best, cpu,
            paste(sprintf("%.17g", coef(fit)), collapse = ", "), fit$iter))
"""


def make_data(n: int, tied: bool, seed: int = 12) -> pl.DataFrame:
    """``n`` rows: ``time`` (whole days when ``tied``, else minutes as fractions of a day), ``event``, x1..x6."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        rng.normal(45, 12, n),                 # age
        rng.integers(0, 2, n).astype(float),   # sex
        rng.normal(30, 6, n),                  # baseline score
        rng.poisson(1.5, n).astype(float),     # prior failures
        rng.integers(0, 2, n).astype(float),   # arm
        rng.normal(0, 1, n),                   # a lab value
    ])  # fmt: skip
    beta = np.array([0.01, -0.2, 0.03, 0.15, -0.4, 0.25])
    lp = (X - X.mean(axis=0)) @ beta
    t = rng.exponential(60 * np.exp(-lp))
    c = rng.uniform(0, 200, n)
    time_ = np.minimum(t, c)
    time_ = np.ceil(time_) if tied else np.round(time_ * 1440) / 1440 + 1 / 2880
    return pl.DataFrame({"time": time_, "event": (t <= c).astype(np.int64), **{k: X[:, j] for j, k in enumerate(COVS)}})


def best_of(fn, repeat: int) -> tuple[float, float, np.ndarray]:
    """Best wall-clock and best CPU seconds (all threads of this process) of ``repeat`` runs, and the result."""
    best, cpu, coef = np.inf, np.inf, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        coef = fn()
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return best, cpu, np.asarray(coef, dtype=float)


def run_cox_ph(frame: pl.DataFrame) -> np.ndarray:
    res = cox_ph(frame, time="time", event="event", covariates=COVS, ties="efron")
    assert res.converged, res.notes
    return res.summary["coef"].to_numpy()


def run_lifelines(frame: pl.DataFrame) -> np.ndarray:
    from lifelines import CoxPHFitter

    cph = CoxPHFitter().fit(frame.to_pandas(), duration_col="time", event_col="event")
    return cph.params_.loc[COVS].to_numpy()


def run_statsmodels(frame: pl.DataFrame) -> np.ndarray:
    from statsmodels.duration.hazard_regression import PHReg

    X = frame.select(COVS).to_numpy()
    return PHReg(frame["time"].to_numpy(), X, status=frame["event"].to_numpy(), ties="efron").fit().params


def run_r(frame: pl.DataFrame, repeat: int) -> dict | None:
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data, script = Path(tmp) / "d.csv", Path(tmp) / "fit.R"
        frame.write_csv(data, float_precision=17)
        script.write_text(R_SCRIPT)
        proc = subprocess.run([rscript, str(script), str(data), str(repeat)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"R skipped: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", metavar="KIND:N",
                    help="tied:N or continuous:N (default: continuous:200000 and tied:1000000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of cox_ph and R per case (best is kept)")
    ap.add_argument("--skip", action="append", default=[], choices=["lifelines", "statsmodels", "R"])
    args = ap.parse_args(argv)
    cases = args.case or ["continuous:200000", "tied:1000000"]
    rows = []
    for case in cases:
        kind, n = case.split(":")
        frame = make_data(int(n), kind == "tied")
        label = f"{kind}, {int(n):,} rows, {frame['time'].n_unique():,} distinct times"
        print(f"{label} ...", file=sys.stderr)
        r = None if "R" in args.skip else run_r(frame, args.repeat)
        results = {"cox_ph": best_of(lambda f=frame: run_cox_ph(f), args.repeat)}
        if "lifelines" not in args.skip:
            results["lifelines"] = best_of(lambda f=frame: run_lifelines(f), 1)
        if "statsmodels" not in args.skip:
            results["statsmodels PHReg"] = best_of(lambda f=frame: run_statsmodels(f), 1)
        if r is not None:
            results["R coxph"] = (r["seconds"], r["cpu"], np.array(r["coef"]))
        base, base_cpu = (r["seconds"], r["cpu"]) if r is not None else results["cox_ph"][:2]
        for name, (secs, cpu, coef) in results.items():
            diff = float(np.max(np.abs(coef - r["coef"]) / np.abs(r["coef"]))) if r is not None else float("nan")
            rows.append((label, name, secs, secs / base, cpu, cpu / base_cpu, diff))
            print(f"  {name}: {secs:.2f} s ({cpu:.2f} s CPU)", file=sys.stderr)
    ref = "R coxph" if "R" not in args.skip and shutil.which("Rscript") else "cox_ph"
    print(f"| data | method | seconds | ratio to {ref} | CPU seconds | CPU ratio | max rel. coef difference from R |")
    print("|---|---|---|---|---|---|---|")
    for label, name, secs, ratio, cpu, cpu_ratio, diff in rows:
        print(f"| {label} | {name} | {secs:.2f} | {ratio:.2f} | {cpu:.2f} | {cpu_ratio:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
