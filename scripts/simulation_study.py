"""Simulation study: coverage and bias of the route-vs-SSRI hazard ratios over replicates of
the synthetic cohort with known truth.

Each replicate draws a new cohort (seed base + r) from the same generator, with the site
parameters held fixed (those of the truth seed), so that the truth is one number per route:

* the covariate-adjusted, site-stratified Cox model is compared with the *conditional* HR on
  the observed visit grid (``ketaoutcomes.truth``: every patient simulated under each arm,
  the same model fitted to that randomised counterfactual cohort);
* the naive (arm-only) estimate is compared with the *marginal* HR on the observed grid (the
  same counterfactual cohort, arm only), which on confounded data it should miss;
* the propensity-weighted estimate (pairwise ATE) is compared with the marginal HR among the
  patients given the route or the reference arm (``marginal_pair``), which it should recover;
* the matched estimate (1:1 caliper matching, an ATT when nearly every route patient is matched)
  is compared with the marginal HR among the patients given the route (``marginal_treated``);
  its coverage is also reported among the replicates that matched at least 90% of them.

Usage::

    uv run python scripts/simulation_study.py                      # 200 replicates x 2,000 patients
    uv run python scripts/simulation_study.py --replicates 20 --patients 1500 --workers 2

Prints a Markdown table (and writes CSV with --csv). Not a timed test: the small version in
tests/integration/test_simulation_study.py runs a few replicates through the same code.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import polars as pl

from ketaoutcomes.settings import SimulationSettings, StudySettings

__all__ = ["replicate", "run_study", "summarise"]

#: The study of the simulation: time to response only (its generator is proportional hazards).
STUDY = StudySettings(name="simulation-study", endpoints=("TTRESP",))
#: The same study with matching in place of inverse-probability weights.
STUDY_MATCHING = STUDY.updated(weighting="matching", ps_truncation=None)
TRUTH_SEED = 424242


def replicate(r: int, *, patients: int, seed_base: int, study: StudySettings = STUDY, matching: bool = True
              ) -> pl.DataFrame:
    """One replicate: simulate, derive, analyse (and, with ``matching``, analyse again with matching);
    one row per model and route."""
    from ketaoutcomes.analysis import analyze
    from ketaoutcomes.derive import derive_all
    from ketaoutcomes.registries import load_registries
    from ketaoutcomes.simulate.cohort import site_parameters, simulate_chunk
    from ketaoutcomes.simulate.params import GeneratorParameters

    params = GeneratorParameters()
    sites = site_parameters(SimulationSettings(n_patients=patients, seed=TRUTH_SEED), params)
    settings = SimulationSettings(n_patients=patients, seed=seed_base + r)
    frames = simulate_chunk(settings, 0, params=params, sites=sites).frames
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=study)
    res = analyze(d.adsl, d.adtte, study=study)
    cox = res.table("results_cox")
    shares = pl.DataFrame(schema={"model": pl.String, "arm": pl.String, "matched_share": pl.Float64})
    if matching:
        m = analyze(d.adsl, d.adtte, study=study.updated(weighting="matching", ps_truncation=None))
        cox = pl.concat([cox, m.table("results_cox").filter(pl.col("model") == "matching")], how="diagonal_relaxed")
        shares = m.table("results_ps").filter(pl.col("paramcd") == "TTRESP").select(
            pl.lit("matching").alias("model"), pl.col("target").alias("arm"),
            (pl.col("n_matched_target") / pl.col("n_target")).alias("matched_share"))
    cox = cox.filter(pl.col("arm").is_not_null() & (pl.col("paramcd") == "TTRESP"))
    for c in ("diagnostics", "gate_reasons"):
        if c not in cox.columns:
            cox = cox.with_columns(pl.lit(None, dtype=pl.String).alias(c))
    return cox.select(
        pl.lit(r).alias("replicate"), "model", "arm",
        "coef", "se", "hr_lower", "hr_upper", "diagnostics", "gate_reasons",
    ).join(shares, on=["model", "arm"], how="left")


def truth(patients: int) -> dict:
    """The observed-grid estimands, from the truth seed's sites (as every replicate uses)."""
    from ketaoutcomes.truth import observed_grid_estimands

    return observed_grid_estimands(SimulationSettings(n_patients=patients, seed=TRUTH_SEED), study=STUDY,
                                   max_patients=patients)["TTRESP"]


def run_study(*, replicates: int, patients: int, seed_base: int = 1000, workers: int = 1,
              truth_patients: int = 50_000, progress: bool = False, matching: bool = True) -> tuple[pl.DataFrame, dict]:
    target = truth(truth_patients)
    rows = []
    if workers > 1:
        # spawn, not fork: forking after polars has started its thread pool deadlocks the children
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(replicate, r, patients=patients, seed_base=seed_base, matching=matching) for r in range(replicates)]
            for i, f in enumerate(futures, start=1):
                rows.append(f.result())
                if progress:
                    print(f"  replicate {i}/{replicates}", file=sys.stderr, flush=True)
    else:
        for r in range(replicates):
            rows.append(replicate(r, patients=patients, seed_base=seed_base, matching=matching))
            if progress:
                print(f"  replicate {r + 1}/{replicates}", file=sys.stderr, flush=True)
    return pl.concat(rows, how="diagonal_relaxed"), target


def summarise(estimates: pl.DataFrame, target: dict) -> pl.DataFrame:
    """Bias of log HR, empirical and mean model SE, coverage of the 95% CI, per model and route.

    Adjusted estimates are held against the conditional target; naive and weighted ones against
    the marginal target. For weighted estimates, the gate's pass rate and the coverage among
    passing replicates are reported too.
    """
    def target_for(model: str, arm: str) -> float:
        # adjusted: conditional; naive: marginal over all patients; weighted (pairwise ATE): marginal
        # over the patients given the route or the reference arm
        key = {"adjusted": "adjusted", "naive": "naive", "matching": "marginal_treated"}.get(model, "marginal_pair")
        return target[key][arm]["hr"]

    rows = []
    for (model, arm), g in estimates.group_by("model", "arm"):
        t = target_for(model, arm)
        logt = math.log(t)
        est = g.filter(pl.col("coef").is_not_null())
        covered = est.select(((pl.col("hr_lower") <= t) & (t <= pl.col("hr_upper"))).mean()).item()
        row = {
            "model": model, "arm": arm,
            "target": {"adjusted": "conditional", "naive": "marginal",
                       "matching": "marginal in the treated"}.get(model, "marginal in pair"),
            "target_hr": t, "replicates": est.height, "mean_hr": math.exp(est["coef"].mean()),
            "bias_log_hr": est["coef"].mean() - logt, "empirical_se": est["coef"].std(), "mean_model_se": est["se"].mean(),
            "coverage": covered,
        }
        if g["diagnostics"].drop_nulls().len():
            passing = est.filter(pl.col("diagnostics") == "pass")
            row["gate_pass_rate"] = passing.height / est.height if est.height else None
            row["coverage_when_passing"] = passing.select(
                ((pl.col("hr_lower") <= t) & (t <= pl.col("hr_upper"))).mean()).item() if passing.height else None
        if model == "matching" and "matched_share" in est.columns:
            row["matched_share"] = est["matched_share"].mean()
            att = est.filter(pl.col("matched_share") >= 0.9)
            row["coverage_if_att"] = att.select(
                ((pl.col("hr_lower") <= t) & (t <= pl.col("hr_upper"))).mean()).item() if att.height else None
        rows.append(row)
    order = {"adjusted": 0, "naive": 1, "iptw": 2, "overlap": 2, "matching": 3}
    return pl.DataFrame(rows).sort(pl.col("model").replace_strict(order, default=2), "arm")


def markdown(summary: pl.DataFrame) -> str:
    cols = ["model", "arm", "target", "target_hr", "mean_hr", "bias_log_hr", "empirical_se", "mean_model_se",
            "coverage", "gate_pass_rate", "coverage_when_passing", "matched_share", "coverage_if_att"]
    cols = [c for c in cols if c in summary.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in summary.iter_rows(named=True):
        cells = []
        for c in cols:
            v = r[c]
            cells.append("" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--seed-base", type=int, default=1000)
    ap.add_argument("--truth-patients", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--csv", type=Path, help="write the per-replicate estimates here")
    ap.add_argument("--no-matching", action="store_true", help="leave out the matched estimates (half the time)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    estimates, target = run_study(replicates=args.replicates, patients=args.patients, seed_base=args.seed_base,
                                  workers=args.workers, truth_patients=args.truth_patients, progress=True,
                                  matching=not args.no_matching)
    if args.csv:
        estimates.write_csv(args.csv)
    print(f"{args.replicates} replicates x {args.patients:,} patients; truth from {args.truth_patients:,} patients "
          f"per arm (seed {TRUTH_SEED}); {time.perf_counter() - t0:.0f} s\n")
    print(markdown(summarise(estimates, target)))


if __name__ == "__main__":
    main()
