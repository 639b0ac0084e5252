"""Side-by-side: ketaoutcomes' clone-censor-weighting and pySEQTarget on the same simulated cohort,
where the designs overlap.

pySEQTarget (PyPI, sequential target trials) has no grace period, so the overlap is a grace period
of 0: "start ketamine on day 0" vs "never", per protocol, one trial at time zero (pySEQTarget's
``selection_first_trial``; every patient is eligible on day 0 only). ketaoutcomes estimates it by
CCW (``grace_days=0``; ``late="weights"``: the day-0 starters stand in for the clones censored on
day 0; ``late="model"``, the default: every clone followed from day 0 by the post-start outcome
model; never-clones censored at their start, IPC weights from the pooled start model); pySEQTarget by its ``censoring``
method (artificial censoring at deviation, a pooled-logistic outcome model on the baseline
covariates and standardisation). Both are compared with the truth of the generator for G = 0.

pySEQTarget is not a dependency of the project: install it in a separate environment and pass its
interpreter, e.g.::

    uv venv /tmp/pyseq && VIRTUAL_ENV=/tmp/pyseq uv pip install pySEQTarget
    uv run python scripts/ccw_vs_pyseqtarget.py --pyseq-python /tmp/pyseq/bin/python --patients 10000

The script simulates the cohort here, writes it to a Parquet file in --workdir, runs
pySEQTarget in that interpreter on the person-day rows (this file's ``--inner`` mode imports only
polars and pySEQTarget) and prints the estimates, their differences and the run times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DAYS = (7, 28, 56)
COVARIATES = ["age", "male", "severity", "prior_episodes"]
#: pySEQTarget outcome models: its default formula, and one with a flexible time x treatment term
#: (the default's treatment x linear-followup interaction cannot follow ketamine's waning hazard).
PYSEQ_FORMULAS = {
    "default": None,
    "spline": "treatment_bas*cr(followup, df=5)+age+male+severity+prior_episodes",
}


def _inner(cohort: str, out: str) -> None:  # runs in pySEQTarget's interpreter
    import polars as pl
    from pySEQTarget import SEQopts, SEQuential

    c = pl.read_parquet(cohort)
    rows = (c.with_columns(pl.int_ranges(0, pl.col("response_time")).alias("t")).explode("t")
            .filter(pl.col("t").is_not_null())
            .with_columns(eligible=(pl.col("t") == 0).cast(pl.Int64),
                          treatment=(pl.col("ketamine_start_day").is_not_null()
                                     & (pl.col("ketamine_start_day") <= pl.col("t"))).cast(pl.Int64),
                          outcome=((pl.col("response_event") == 1)
                                   & (pl.col("t") == pl.col("response_time") - 1)).cast(pl.Int64))
            .select("patient_id", "t", "eligible", "treatment", "outcome", *COVARIATES)
            .with_columns(pl.col("male").cast(pl.Int64)))
    result = {"person_days": rows.height}
    for name, formula in PYSEQ_FORMULAS.items():
        t0 = time.perf_counter()
        opts = SEQopts(weighted=True, km_curves=True, risk_times=list(DAYS), selection_first_trial=True,
                       trial_include=False, followup_max=max(DAYS), seed=1, ncores=1,
                       **({"covariates": formula} if formula else {}))
        s = SEQuential(rows, id_col="patient_id", time_col="t", eligible_col="eligible", treatment_col="treatment",
                       outcome_col="outcome", time_varying_cols=[], fixed_cols=COVARIATES, method="censoring",
                       parameters=opts)
        s.expand()
        s.fit()
        s.survival()
        o = s.collect()
        km = o.km_data.filter(pl.col("estimate") == "risk")
        risk = {f"{arm}_{d}": float(km.filter((pl.col("treatment") == tx) & (pl.col("followup") == d))["pred"][0])
                for arm, tx in (("initiate", 1), ("never", 0)) for d in DAYS}
        result[name] = {"risk": risk, "seconds": time.perf_counter() - t0}
    Path(out).write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pyseq-python", help="interpreter of an environment with pySEQTarget installed")
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--truth-patients", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/ccw-vs-pyseqtarget")
    ap.add_argument("--inner", nargs=2, metavar=("COHORT", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.inner:
        _inner(*a.inner)
        return 0
    if not a.pyseq_python or not Path(a.pyseq_python).exists():
        print("error: --pyseq-python must name the python of an environment with pySEQTarget installed "
              "(see this script's docstring)", file=sys.stderr)
        return 2
    from ketaoutcomes.models.ccw import ccw_analysis
    from ketaoutcomes.simulate.ssri_failure import simulate_ssri_failure, strategy_truth

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cohort = simulate_ssri_failure(a.patients, a.seed)
    cohort.write_parquet(work / "cohort.parquet")
    truth = strategy_truth(grace_days=0, n=a.truth_patients, days=DAYS)
    effs, secs = {}, {}
    for late in ("weights", "model"):
        t0 = time.perf_counter()
        res = ccw_analysis(cohort, time="response_time", event="response_event", start="ketamine_start_day",
                           covariates=COVARIATES, grace_days=0, days=DAYS, horizon=max(DAYS), late=late)["ccw"]
        secs[late] = time.perf_counter() - t0
        effs[late] = {(r["measure"], r["day"]): r["estimate"] for r in res.effects.iter_rows(named=True)}
    t0 = time.perf_counter()
    subprocess.run([a.pyseq_python, __file__, "--inner", str(work / "cohort.parquet"), str(work / "pyseq.json")],
                   check=True)
    wall = time.perf_counter() - t0
    py = json.loads((work / "pyseq.json").read_text())
    starters = int((cohort["ketamine_start_day"] == 0).sum())
    print(f"{a.patients:,} patients (seed {a.seed}), {starters} start on day 0; {py['person_days']:,} person-days; "
          f"truth from {a.truth_patients:,} patients\n")
    print("| quantity | truth | ketaoutcomes CCW (G = 0), day-0 starters weighted | ketaoutcomes CCW (G = 0), "
          "outcome model after day 0 | pySEQTarget, default outcome model | pySEQTarget, spline outcome model |\n"
          "|---|---|---|---|---|---|")
    for d in DAYS:
        for arm in ("initiate", "never"):
            vals = [truth["risk"][arm][str(d)]] + [effs[k][(f"risk_{arm}", d)] for k in effs] + [
                py[k]["risk"][f"{arm}_{d}"] for k in PYSEQ_FORMULAS]
            print(f"| risk {arm}, day {d} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
        rd = [truth["rd"][str(d)]] + [effs[k][("rd", d)] for k in effs] + [
            py[k]["risk"][f"initiate_{d}"] - py[k]["risk"][f"never_{d}"] for k in PYSEQ_FORMULAS]
        print(f"| RD day {d} | " + " | ".join(f"{v:+.4f}" for v in rd) + " |")
    print(f"| seconds (point estimate) | | {secs['weights']:.2f} | {secs['model']:.2f} | {py['default']['seconds']:.2f} | "
          f"{py['spline']['seconds']:.2f} |")
    print(f"\npySEQTarget subprocess wall time, including its imports: {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
