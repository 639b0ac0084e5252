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
* the adjusted curves (g-formula, IPTW, AIPTW: results_ate) are held against the counterfactual curves
  of the patients given the route or the reference arm, as the weighted curves are;
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
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import polars as pl

from ketaoutcomes.settings import SimulationSettings, StudySettings

__all__ = ["replicate", "run_study", "summarise", "summarise_contrasts"]

#: The study of the simulation: time to response only (its generator is proportional hazards).
STUDY = StudySettings(name="simulation-study", endpoints=("TTRESP",))
#: The same study with matching in place of inverse-probability weights.
STUDY_MATCHING = STUDY.updated(weighting="matching", ps_truncation=None)
TRUTH_SEED = 424242


def replicate(r: int, *, patients: int, seed_base: int, study: StudySettings = STUDY, matching: bool = True,
              matching_bootstrap: bool = False) -> dict[str, pl.DataFrame]:
    """One replicate: simulate, derive, analyse (and, with ``matching``, analyse again with matching):
    ``hr``, one row per model and route; ``contrasts``, the primary contrasts (results_contrasts) of
    every route, bootstrapped whatever the gate says (the matched ones only with ``matching_bootstrap``)."""
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
    res = analyze(d.adsl, d.adtte, study=study, bootstrap_all=True)
    cox = res.table("results_cox")
    contrasts = [res.table("results_contrasts")]
    shares = pl.DataFrame(schema={"model": pl.String, "arm": pl.String, "matched_share": pl.Float64})
    if matching:
        mstudy = study.updated(weighting="matching", ps_truncation=None)
        if not matching_bootstrap:
            mstudy = mstudy.updated(bootstrap_replicates=0)
        m = analyze(d.adsl, d.adtte, study=mstudy, bootstrap_all=True)
        contrasts.append(m.table("results_contrasts"))
        cox = pl.concat([cox, m.table("results_cox").filter(pl.col("model") == "matching")], how="diagonal_relaxed")
        shares = m.table("results_ps").filter(pl.col("paramcd") == "TTRESP").select(
            pl.lit("matching").alias("model"), pl.col("target").alias("arm"),
            (pl.col("n_matched_target") / pl.col("n_target")).alias("matched_share"))
    cox = cox.filter(pl.col("arm").is_not_null() & (pl.col("paramcd") == "TTRESP"))
    for c in ("diagnostics", "gate_reasons"):
        if c not in cox.columns:
            cox = cox.with_columns(pl.lit(None, dtype=pl.String).alias(c))
    hr = cox.select(
        pl.lit(r).alias("replicate"), "model", "arm",
        "coef", "se", "hr_lower", "hr_upper", "diagnostics", "gate_reasons",
    ).join(shares, on=["model", "arm"], how="left")
    c = pl.concat(contrasts, how="diagonal_relaxed")
    c = c.select(pl.lit(r).alias("replicate"), pl.col("weighting").alias("model"), pl.col("target").alias("arm"),
                 "estimand", "measure", "day", "difference", "lower", "upper", "se", "n_boot", "diagnostics")
    # the adjusted curves (results_ate): their influence-function interval stands in for the bootstrap's
    ate = res.table("results_ate").select(
        pl.lit(r).alias("replicate"), ("ate_" + pl.col("estimator")).alias("model"), pl.col("target").alias("arm"),
        "estimand", "measure", "day", "difference", "lower", "upper", "se",
        pl.col("lower").is_not_null().cast(pl.Int64).alias("n_boot"), "diagnostics")
    c = pl.concat([c, ate], how="diagonal_relaxed")
    return {"hr": hr, "contrasts": c}


def truth(patients: int) -> dict:
    """The observed-grid estimands, from the truth seed's sites (as every replicate uses): the HRs,
    and under ``curves`` the counterfactual curves the contrasts are held against."""
    from ketaoutcomes.truth import observed_grid_estimands

    out = observed_grid_estimands(SimulationSettings(n_patients=patients, seed=TRUTH_SEED), study=STUDY,
                                  max_patients=patients, with_curves=True)
    return {**out["TTRESP"], "curves": out["curves"]["TTRESP"]}


def _save(out: Path | None, r: int, result: dict[str, pl.DataFrame]) -> None:
    if out is not None:
        for name, frame in result.items():
            frame.write_csv(out / f"{name}-{r:04d}.csv")


def load_saved(out: Path) -> tuple[pl.DataFrame, dict, pl.DataFrame]:
    """What a run with ``out`` saved so far: (HR estimates, truth, contrast estimates)."""
    def read(name: str) -> pl.DataFrame:
        files = sorted(out.glob(f"{name}-*.csv"))
        return pl.concat([pl.read_csv(f, infer_schema_length=None) for f in files], how="diagonal_relaxed")

    return read("hr"), json.loads((out / "truth.json").read_text()), read("contrasts")


def run_study(*, replicates: int, patients: int, seed_base: int = 1000, workers: int = 1,
              truth_patients: int = 200_000, progress: bool = False, matching: bool = True,
              bootstrap: int = STUDY.models.bootstrap_replicates, matching_bootstrap: bool = False,
              out: Path | None = None) -> tuple[pl.DataFrame, dict, pl.DataFrame]:
    """(HR estimates, truth, contrast estimates) of ``replicates`` replicates; ``bootstrap``
    replicates per pair for the contrasts' intervals. With ``out``, the truth and each replicate's
    rows are written there as they come (``--summarise`` reads a run that is still going or was
    stopped)."""
    target = truth(truth_patients)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "truth.json").write_text(json.dumps(target))
    study = STUDY.updated(bootstrap_replicates=bootstrap)
    rows = []
    kw = dict(patients=patients, seed_base=seed_base, study=study, matching=matching, matching_bootstrap=matching_bootstrap)
    if workers > 1:
        # spawn, not fork: forking after polars has started its thread pool deadlocks the children; one
        # BLAS thread per worker (the workers are the parallelism: threaded BLAS on top slows the many
        # small propensity fits of the bootstrap several-fold on 2 cores)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(replicate, r, **kw): r for r in range(replicates)}
            for i, f in enumerate(as_completed(futures), start=1):
                rows.append(f.result())
                _save(out, futures[f], rows[-1])
                if progress:
                    print(f"  replicate {i}/{replicates}", file=sys.stderr, flush=True)
    else:
        for r in range(replicates):
            rows.append(replicate(r, **kw))
            _save(out, r, rows[-1])
            if progress:
                print(f"  replicate {r + 1}/{replicates}", file=sys.stderr, flush=True)
    return (pl.concat([x["hr"] for x in rows], how="diagonal_relaxed"), target,
            pl.concat([x["contrasts"] for x in rows], how="diagonal_relaxed"))


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


def summarise_contrasts(contrasts: pl.DataFrame, target: dict) -> pl.DataFrame:
    """Bias, empirical SD, mean bootstrap SD and coverage of the bootstrap interval of each primary
    contrast, per weighting, route and estimand. Each replicate is held against the true contrast at
    its own day (the restricted mean's horizon is cut to the arms' follow-up, which varies between
    replicates): IPTW against the counterfactual curves of the patients given the route or the
    reference arm, matching against those of the patients given the route (``ketaoutcomes.truth``).
    Replicates without an interval (no bootstrap) or whose contrast or truth is not estimable are
    left out; ``replicates`` counts the rest. The adjusted curves (models ``ate_gformula``,
    ``ate_iptw``, ``ate_aiptw``: results_ate, standardised over the pair) are held against the same
    pair curves, their influence-function SE and Wald interval in the bootstrap's columns."""
    from ketaoutcomes.truth import contrast_truth

    curves = target["curves"]

    def true(model: str, arm: str, measure: str, day: float | None) -> float:
        pop = curves["marginal_treated" if model == "matching" else "marginal_pair"]
        return contrast_truth(pop[arm], measure, day) if arm in pop else math.nan

    c = contrasts.filter(pl.col("difference").is_not_null())
    truths = [true(m, a, ms, d) for m, a, ms, d in c.select("model", "arm", "measure", "day").iter_rows()]
    c = c.with_columns(pl.Series("truth", truths, dtype=pl.Float64)).filter(pl.col("truth").is_not_nan())
    inside = (pl.col("lower").fill_null(-math.inf) <= pl.col("truth")) & (pl.col("truth") <= pl.col("upper").fill_null(math.inf))
    with_ci = pl.col("n_boot") > 0
    rows = []
    for (model, arm, measure, estimand), g in c.group_by("model", "arm", "measure", "estimand"):
        b = g.filter(with_ci)
        passing = b.filter(pl.col("diagnostics") == "pass")
        rows.append({
            "model": model, "arm": arm, "estimand": estimand, "replicates": g.height,
            "mean_day": g["day"].mean() if measure != "median" else None,
            "mean_truth": g["truth"].mean(), "mean_estimate": g["difference"].mean(),
            "bias": (g["difference"] - g["truth"]).mean(), "empirical_se": g["difference"].std(),
            "mean_boot_se": b["se"].mean() if b.height else None,
            "coverage": b.select(inside.mean()).item() if b.height else None,
            "gate_pass_rate": passing.height / b.height if b.height else None,
            "coverage_when_passing": passing.select(inside.mean()).item() if passing.height else None,
        })
    if not rows:
        return pl.DataFrame()
    rank = {"median": 1000, "rmst": 2000}  # risk by day first (in day order), then median, then rmst
    return (pl.DataFrame(rows)
            .with_columns(pl.col("estimand").map_elements(lambda e: rank.get(e, int(e.rsplit("_d", 1)[-1]) if "_d" in e
                                                                               else 3000), return_dtype=pl.Int64)
                          .alias("_o"))
            .sort("model", "arm", "_o").drop("_o"))


def markdown(summary: pl.DataFrame) -> str:
    cols = ["model", "arm", "estimand", "target", "target_hr", "mean_hr", "bias_log_hr", "replicates", "mean_day",
            "mean_truth", "mean_estimate", "bias", "empirical_se", "mean_model_se", "mean_boot_se",
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
    ap.add_argument("--truth-patients", type=int, default=200_000,
                    help="patients of the truth cohort, each simulated under every arm (default 200,000: at 50,000 the "
                         "truth of a day-7 share moved by up to 0.002, a third of the bias being judged)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--csv", type=Path, help="write the per-replicate estimates here")
    ap.add_argument("--no-matching", action="store_true", help="leave out the matched estimates (half the time)")
    ap.add_argument("--bootstrap", type=int, default=STUDY.models.bootstrap_replicates,
                    help="bootstrap replicates per pair for the contrasts' intervals (default: the study's, 200)")
    ap.add_argument("--matching-bootstrap", action="store_true",
                    help="bootstrap the matched contrasts too (about doubles the time)")
    ap.add_argument("--out", type=Path, help="write the truth and each replicate's rows to this folder as they come")
    ap.add_argument("--summarise", type=Path, metavar="DIR",
                    help="only print the tables of what a run with --out DIR saved so far")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.summarise:
        estimates, target, contrasts = load_saved(args.summarise)
        print(f"{estimates['replicate'].n_unique()} replicates saved in {args.summarise}\n")
        print(markdown(summarise(estimates, target)))
        print("\n" + markdown(summarise_contrasts(contrasts, target)))
        return
    estimates, target, contrasts = run_study(
        replicates=args.replicates, patients=args.patients, seed_base=args.seed_base, workers=args.workers,
        truth_patients=args.truth_patients, progress=True, matching=not args.no_matching, bootstrap=args.bootstrap,
        matching_bootstrap=args.matching_bootstrap, out=args.out)
    if args.csv:
        estimates.write_csv(args.csv)
        contrasts.write_csv(args.csv.with_name(args.csv.stem + "-contrasts.csv"))
    print(f"{args.replicates} replicates x {args.patients:,} patients, {args.bootstrap} bootstrap replicates per pair; "
          f"truth from {args.truth_patients:,} patients per arm (seed {TRUTH_SEED}); {time.perf_counter() - t0:.0f} s\n")
    print(markdown(summarise(estimates, target)))
    print("\nPrimary contrasts (route - reference; risk: share responded by the day; median: days; rmst: restricted "
          "mean days without response up to mean_day), bootstrap intervals (score interval for risk, percentile for median and rmst); "
          "ate_*: the adjusted curves, influence-function intervals:\n")
    print(markdown(summarise_contrasts(contrasts, target)))


if __name__ == "__main__":
    main()
