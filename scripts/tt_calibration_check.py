"""Does empirical calibration move the target trial's risk ratios toward the truth when a confounder
is not measured? A check of the whole target-trial analysis (analysis.target_trial) on simulated
SSRI-failure cohorts (simulate.ssri_failure) with an unmeasured confounder ``u`` that raises the
ketamine start hazard and lowers the response hazard (``with_unmeasured_confounding``), and six
negative-control outcomes whose hazards also depend on ``u``, with a factor ``exp(nc_sign * strength
* u)``.

Negative controls measure the systematic error of the primary estimate only when their confounding
acts as the outcome's does: ``--nc-sign -1`` (u lowers the controls' hazards as it lowers the
response's, the sign ``with_unmeasured_confounding`` gives its controls) should move the calibrated
risk ratios toward the truth; ``--nc-sign 1`` (controls confounded against the outcome) should move
them away. The truth is
``strategy_truth`` of the same parameters.

    uv run python scripts/tt_calibration_check.py --nc-sign -1 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ketaoutcomes.analysis.target_trial import target_trial_analysis  # noqa: E402
from ketaoutcomes.protocol import NegativeControlOutcome, TargetTrialProtocol  # noqa: E402
from ketaoutcomes.simulate.ssri_failure import (  # noqa: E402
    NegativeControl,
    SSRIFailureParameters,
    simulate_ssri_failure,
    strategy_truth,
)

NAMES = [f"c{i}" for i in range(1, 7)]


def parameters(strength: float, nc_sign: float) -> SSRIFailureParameters:
    controls = tuple(NegativeControl(rate_per_day=0.006 + 0.002 * i, per_severity_sd=0.3 * (i % 3 - 1),
                                     per_prior=0.1 * i, per_unmeasured=nc_sign * strength) for i in range(len(NAMES)))
    p = SSRIFailureParameters(negative_controls=controls).with_unmeasured_confounding(strength)
    return p.model_copy(update={"negative_controls": controls})


def trial_frame(sim: pl.DataFrame, names: Sequence[str] = ()) -> pl.DataFrame:
    """derive.target_trial's frame from simulate_ssri_failure's: age -> age_at_index, male -> sex M/F,
    severity -> baseline_score, prior_episodes -> prior_failed_trials, ketamine_start_day -> start_day,
    response -> time/event, and negative control nc<i> -> nc_<names[i-1]>_time / _event (the tests'
    adapter too: tests/unit/test_target_trial_analysis.py)."""
    frame = sim.select(
        pl.col("patient_id").cast(pl.String), pl.col("age").round().cast(pl.Int64).alias("age_at_index"),
        pl.when(pl.col("male") == 1).then(pl.lit("M")).otherwise(pl.lit("F")).alias("sex"),
        pl.col("severity").cast(pl.Float64).alias("baseline_score"),
        pl.col("prior_episodes").cast(pl.Int64).alias("prior_failed_trials"),
        pl.col("ketamine_start_day").cast(pl.Int64).alias("start_day"),
        pl.col("response_time").cast(pl.Int64).alias("time"), pl.col("response_event").cast(pl.Int8).alias("event"))
    return frame.with_columns([sim[f"nc{i}_{k}"].cast(pl.Int64 if k == "time" else pl.Int8).alias(f"nc_{name}_{k}")
                               for i, name in enumerate(names, start=1) for k in ("time", "event")])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nc-sign", type=float, default=-1.0, help="sign of u's effect on the controls' hazards")
    ap.add_argument("--strength", type=float, default=0.7, help="log hazard (odds) ratio per SD of u")
    ap.add_argument("--patients", type=int, default=3000)
    ap.add_argument("--bootstrap", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    args = ap.parse_args(argv)
    p = parameters(args.strength, args.nc_sign)
    prot = TargetTrialProtocol(bootstrap_replicates=args.bootstrap,
                               negative_controls=tuple(NegativeControlOutcome(name=n) for n in NAMES))
    truth = strategy_truth(p, grace_days=prot.grace_days, n=200_000)
    true_rr = {d: truth["risk"]["initiate"][str(d)] / truth["risk"]["never"][str(d)] for d in prot.risk_days}
    attrition = pl.DataFrame({"step": ["simulated"], "excluded": [None], "remaining": [args.patients]},
                             schema={"step": pl.String, "excluded": pl.Int64, "remaining": pl.Int64})
    print(f"nc_sign {args.nc_sign:+g}, strength {args.strength}, {args.patients} patients, {args.bootstrap} bootstrap "
          "replicates; |log RR - log true RR| before -> after calibration")
    print("| seed | day | true RR | estimate | calibrated (95% CI) | null mean (SD) | EASE | gate | closer? |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        t0 = time.perf_counter()
        res = target_trial_analysis(trial_frame(simulate_ssri_failure(args.patients, seed=seed, params=p), NAMES), attrition,
                                    protocol=prot, seed=seed)
        for r in res.table("results_tt_calibration").filter(pl.col("role") == "primary").iter_rows(named=True):
            d, truth_log = r["day"], math.log(true_rr[r["day"]])
            if r["rr_calibrated"] is None:
                print(f"| {seed} | {d} | {true_rr[d]:.3f} | {math.exp(r['log_rr']):.3f} | {r['status']} | | | | |")
                continue
            before, after = abs(r["log_rr"] - truth_log), abs(math.log(r["rr_calibrated"]) - truth_log)
            print(f"| {seed} | {d} | {true_rr[d]:.3f} | {math.exp(r['log_rr']):.3f} | {r['rr_calibrated']:.3f} "
                  f"({r['rr_calibrated_lower']:.3f}-{r['rr_calibrated_upper']:.3f}) | {r['null_mean']:+.3f} "
                  f"({r['null_sd']:.3f}) | {r['ease']:.3f} | {r['status']} | {'yes' if after < before else 'no'} "
                  f"({before:.3f} -> {after:.3f}) |")
        print(f"(seed {seed}: {time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
