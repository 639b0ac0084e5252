"""Simulation study of clone-censor-weighting with a grace period: bias and 95% CI coverage of
the risk differences at days 7, 28 and 56 and of the RMST difference, for "initiate ketamine
within G days of the SSRI failure" vs "never", against the truth of the SSRI-failure generator.

Three estimators (ketaoutcomes.models.ccw.VARIANTS), each on the same replicate cohorts:

* ``ccw``: clone-censor-weighting; past the window, the clones not started by its second-to-last
  day followed by the post-start outcome model (``--late model``, the default) or, with ``--late
  weights``, the correct grace-period denominator (only the clones that start on the last day of the
  window stand in for those censored there);
* ``simple``: the same with the biased denominator (every clone uncensored at the window's end
  stands in);
* ``naive``: users vs users from time zero (immortal time), unweighted.

The truth (ketaoutcomes.simulate.ssri_failure.strategy_truth) simulates every patient of a large
cohort under each strategy as defined (Webster-Clark: natural start inside the window, everyone not
yet started starts on its last day). Each replicate draws a new cohort (seed base + r) and a
person-level bootstrap of the whole procedure: the percentile CI (what ccw_analysis reports) and,
for comparison, the bootstrap-t CI studentised by the influence SEs (``ccw.studentised_interval``).
The table also gives the mean influence SE beside the mean bootstrap SE and the estimates' SD. With ``--outcome nc1`` (a negative
control) the truth is no effect (every difference 0); ``--unmeasured S`` gives the unmeasured
covariate effects of strength S on start, response and negative controls (residual confounding).

Usage::

    uv run python scripts/ccw_simulation_study.py                       # 200 x 2,000 patients, 200 bootstraps
    uv run python scripts/ccw_simulation_study.py --replicates 20 --patients 1000 --bootstrap 50 --workers 2
    uv run python scripts/ccw_simulation_study.py --variants ccw --late weights   # the day-G weights only

Prints a Markdown table (and writes CSV with --csv). The fast check in tests/unit/test_ccw.py
runs the same estimators on one large cohort without bootstrap.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import polars as pl

from ketaoutcomes.models import ccw
from ketaoutcomes.simulate.ssri_failure import MEASURED_COVARIATES, SSRIFailureParameters, simulate_ssri_failure, strategy_truth

__all__ = ["truth_vector", "replicate", "summarise", "TARGETS"]

DAYS = (7, 28, 56)
HORIZON = 56
TRUTH_SEED = 20261130
#: The measures the study reports (of ketaoutcomes.models.ccw's effect vector).
TARGETS = (("rd", 7), ("rd", 28), ("rd", 56), ("rmst_diff", HORIZON))


def _params(unmeasured: float) -> SSRIFailureParameters:
    p = SSRIFailureParameters()
    return p.with_unmeasured_confounding(unmeasured) if unmeasured else p


def truth_vector(params: SSRIFailureParameters, *, grace_days: int, outcome: str, n: int) -> dict[tuple[str, int], float]:
    """True value of each target measure (a negative control's: 0)."""
    if outcome != "response":
        return {t: 0.0 for t in TARGETS}
    tr = strategy_truth(params, grace_days=grace_days, n=n, seed=TRUTH_SEED, days=DAYS, horizon=HORIZON)
    return {("rd", d): tr["rd"][str(d)] for d in DAYS} | {("rmst_diff", HORIZON): tr["rmst_diff"]}


def replicate(r: int, *, patients: int, seed_base: int, bootstrap: int, grace_days: int, outcome: str,
              unmeasured: float, late: str = "model", variants: tuple[str, ...] = ccw.VARIANTS) -> list[dict]:
    """One replicate cohort: estimate, bootstrap CI, one row per variant and target measure."""
    frame = simulate_ssri_failure(patients, seed_base + r, _params(unmeasured))
    pr = ccw.prepare(frame, time=f"{outcome}_time", event=f"{outcome}_event", start="ketamine_start_day",
                     covariates=list(MEASURED_COVARIATES), grace_days=grace_days, days=DAYS, horizon=HORIZON, late=late)
    names = ccw.measure_names(DAYS, HORIZON)
    try:
        est = ccw.estimate(pr, variants=variants)
        point = {v: e.vector(DAYS) for v, e in est.items()}
        se = {v: e.vector_se(DAYS) for v, e in est.items()}
    except (ValueError, np.linalg.LinAlgError) as exc:
        return [{"replicate": r, "variant": v, "measure": m, "day": d, "estimate": None, "lower": None,
                 "upper": None, "se": None, "lower_t": None, "upper_t": None,
                 "influence_se": None, "failed": str(exc)} for v in variants for m, d in TARGETS]
    boots, boot_se = ccw.bootstrap_draws(pr, bootstrap, seed_base + r, variants) if bootstrap else ({}, {})
    rows = []
    for v in variants:
        if boots:
            t_lo, t_hi = ccw.studentised_interval(point[v], se[v], boots[v], boot_se[v])
        for m, d in TARGETS:
            j = names.index((m, d))
            b = boots[v][:, j] if boots else np.array([])
            b = b[np.isfinite(b)]
            ok = len(b) > 1
            rows.append({"replicate": r, "variant": v, "measure": m, "day": d, "estimate": float(point[v][j]),
                         "lower": float(np.quantile(b, 0.025)) if ok else None,
                         "upper": float(np.quantile(b, 0.975)) if ok else None,
                         "se": float(np.std(b, ddof=1)) if ok else None,
                         "lower_t": float(t_lo[j]) if ok and np.isfinite(t_lo[j]) else None,
                         "upper_t": float(t_hi[j]) if ok and np.isfinite(t_hi[j]) else None,
                         "influence_se": float(se[v][j]), "failed": None})
    return rows


def summarise(rows: pl.DataFrame, truth: dict[tuple[str, int], float]) -> pl.DataFrame:
    """Per variant and measure: truth, mean estimate, bias (absolute, and relative to the truth),
    empirical SD, mean bootstrap and influence SEs, 95% CI coverage (percentile and studentised) and
    their Monte Carlo SEs."""
    out = []
    for (v, m, d), g in rows.filter(pl.col("failed").is_null()).group_by(["variant", "measure", "day"],
                                                                         maintain_order=True):
        t = truth[(m, d)]
        est = g["estimate"].to_numpy()
        with_ci = g.filter(pl.col("lower").is_not_null())
        cover = ((with_ci["lower"] <= t) & (t <= with_ci["upper"])).to_numpy()
        n_ci = len(cover)
        cov = float(cover.mean()) if n_ci else math.nan
        with_t = g.filter(pl.col("lower_t").is_not_null())
        cover_t = ((with_t["lower_t"] <= t) & (t <= with_t["upper_t"])).to_numpy()
        cov_t = float(cover_t.mean()) if len(cover_t) else math.nan
        out.append({"variant": v, "measure": m, "day": d, "truth": t, "replicates": len(est),
                    "mean_estimate": float(est.mean()), "bias": float(est.mean() - t),
                    "bias_mc_se": float(est.std(ddof=1) / math.sqrt(len(est))) if len(est) > 1 else math.nan,
                    "relative_bias_pct": float(100 * (est.mean() - t) / t) if t else math.nan,
                    "empirical_sd": float(est.std(ddof=1)) if len(est) > 1 else math.nan,
                    "mean_boot_se": float(with_ci["se"].mean()) if n_ci else math.nan,
                    "mean_influence_se": float(g["influence_se"].mean()),
                    "coverage": cov, "coverage_mc_se": math.sqrt(cov * (1 - cov) / n_ci) if n_ci else math.nan,
                    "coverage_t": cov_t,
                    "coverage_t_mc_se": math.sqrt(cov_t * (1 - cov_t) / len(cover_t)) if len(cover_t) else math.nan})
    return pl.DataFrame(out)


def _markdown(summary: pl.DataFrame) -> str:
    head = ("| variant | measure | truth | mean estimate | bias (MC SE) | rel. bias | emp. SD | boot SE | influence SE | "
            "coverage, percentile (MC SE) | coverage, studentised (MC SE) |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in summary.iter_rows(named=True):
        rel = "" if math.isnan(r["relative_bias_pct"]) else f"{r['relative_bias_pct']:+.1f}%"
        cov = "" if math.isnan(r["coverage"]) else f"{r['coverage']:.3f} ({r['coverage_mc_se']:.3f})"
        cov_t = "" if math.isnan(r["coverage_t"]) else f"{r['coverage_t']:.3f} ({r['coverage_t_mc_se']:.3f})"
        lines.append(f"| {r['variant']} | {r['measure']} day {r['day']} | {r['truth']:.4f} | {r['mean_estimate']:.4f} | "
                     f"{r['bias']:+.4f} ({r['bias_mc_se']:.4f}) | {rel} | {r['empirical_sd']:.4f} | "
                     f"{r['mean_boot_se']:.4f} | {r['mean_influence_se']:.4f} | {cov} | {cov_t} |")
    return "\n".join(lines)


_SCHEMA = {"replicate": pl.Int64, "variant": pl.Utf8, "measure": pl.Utf8, "day": pl.Int64, "estimate": pl.Float64,
           "lower": pl.Float64, "upper": pl.Float64, "se": pl.Float64, "lower_t": pl.Float64, "upper_t": pl.Float64,
           "influence_se": pl.Float64, "failed": pl.Utf8}


def _run(a: argparse.Namespace) -> pl.DataFrame:
    kw = dict(patients=a.patients, seed_base=a.seed, bootstrap=a.bootstrap, grace_days=a.grace_days,
              outcome=a.outcome, unmeasured=a.unmeasured, late=a.late, variants=tuple(a.variants.split(",")))
    parts: list[pl.DataFrame] = []

    def keep(rows: list[dict]) -> None:
        part = pl.DataFrame(rows, schema=_SCHEMA)
        parts.append(part)
        if a.csv:  # appended as each replicate finishes, so an interrupted run can still be summarised
            with open(a.csv, "a" if len(parts) > 1 else "w") as fh:
                part.write_csv(fh, include_header=len(parts) == 1)

    if a.workers == 1:
        for r in range(a.replicates):
            keep(replicate(r, **kw))
    else:
        with ProcessPoolExecutor(a.workers) as pool:
            for done in as_completed([pool.submit(replicate, r, **kw) for r in range(a.replicates)]):
                keep(done.result())
    return pl.concat(parts).sort("replicate", maintain_order=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates per cohort (0: no CI)")
    ap.add_argument("--grace-days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1000, help="cohort r has seed SEED + r")
    ap.add_argument("--truth-patients", type=int, default=1_000_000)
    ap.add_argument("--outcome", default="response", help="response, or a negative control (nc1, nc2): truth 0")
    ap.add_argument("--unmeasured", type=float, default=0.0, help="strength of the unmeasured confounder")
    ap.add_argument("--late", default="model", choices=ccw.LATE,
                    help="how the ccw variant's initiate arm continues after the grace period (models.ccw)")
    ap.add_argument("--variants", default=",".join(ccw.VARIANTS), help="comma-separated subset of " + ",".join(ccw.VARIANTS))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--csv", help="write the per-replicate rows here, each replicate as it finishes")
    ap.add_argument("--summarise", metavar="CSV", help="only summarise the rows of an earlier (or unfinished) --csv run (give it the same --grace-days, --outcome and --unmeasured)")
    a = ap.parse_args(argv)
    if not set(a.variants.split(",")) <= set(ccw.VARIANTS):
        print(f"error: --variants takes a comma-separated subset of {','.join(ccw.VARIANTS)}", file=sys.stderr)
        return 2
    if min(a.replicates, a.patients) < 1 or a.bootstrap < 0 or a.workers < 1:
        print("error: --replicates, --patients and --workers must be >= 1 and --bootstrap >= 0", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    params = _params(a.unmeasured)
    truth = truth_vector(params, grace_days=a.grace_days, outcome=a.outcome, n=a.truth_patients)
    if a.summarise:
        frame = pl.read_csv(a.summarise, schema_overrides=_SCHEMA)
        a.replicates = frame["replicate"].n_unique()
    else:
        frame = _run(a)
    summary = summarise(frame, truth)
    failed = frame.filter(pl.col("failed").is_not_null())["replicate"].n_unique()
    what = (f"rows of {a.summarise}" if a.summarise else
            f"{a.patients} patients, {a.bootstrap} bootstrap replicates, {time.perf_counter() - t0:.0f} s")
    print(f"CCW simulation study: {a.replicates} replicates ({what}), grace period {a.grace_days} days, outcome "
          f"{a.outcome}, unmeasured confounding {a.unmeasured}, after the grace period: {a.late}, truth from {a.truth_patients:,} patients; "
          f"{failed} replicate(s) failed\n")
    print(_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
