"""Primary contrasts of each route vs the reference arm, with bootstrap intervals (pure; seeded).

For the endpoints whose registry entry lists ``contrasts`` (time to response), each route is
compared with the reference arm on the primary (propensity-weighted or matched) Kaplan-Meier
curves, as route minus reference:

* the share with the event by each of ``models.contrast_days`` (7, 28, 56);
* the median days to the event;
* the restricted mean days without the event up to ``models.rmst_horizon_days`` (56) or, when
  an arm's follow-up thins out before it, up to the earlier of the two arms' last days with enough
  patients at risk: ``models.contrast_min_at_risk`` (10) or ``models.contrast_min_at_risk_share``
  (10%) of the arm, whichever is more (survRM2's rule, that the curves are not carried past the
  data, with Pocock, Clayton & Altman's floor on how thin they may get); ``day`` says which.

A share by a day past that last day is "not estimable": a Kaplan-Meier step resting on a few
weighted patients is not a result, and its bootstrap interval under-covers (in the simulation
study the share by day 28 of IV and IM, whose courses end near day 28, covered 85-86% with no
floor, and IM's 60% with a floor of 10 patients only).

The point estimates are read off the same weighted curves as ``results_km_weighted`` (the same
propensity fit, :func:`~ketaoutcomes.analysis.propensity.fit_pair_propensity`). Their 95% CIs come
from a **person-level bootstrap of the whole weighted estimation**: in each of
``models.bootstrap_replicates`` (200) replicates the pair's patients are drawn with replacement,
the study's propensity model is refitted on the draw (so a replicate uses whatever propensity
model, weighting, truncation or matching the study configures), the weights (or matches) are
recomputed, and the two weighted curves of the draw are summarised (:func:`bootstrap_summaries`:
one replicate at a time, keeping only its curves' counts per day,
:class:`ketaoutcomes.models.contrasts.ArmCounts`). Replicates are drawn from a generator seeded by
``random_seed``, the endpoint and the route, so a run is reproducible and adding a route does not
move another's draws. The refit codes the pair's covariates once and builds each draw's design from the codes
(:func:`~ketaoutcomes.analysis.propensity.pair_propensity_draws`); with the ridge model and IPTW or
overlap weights (the defaults) it fits the draw's distinct patients (arm and covariates) with their
counts as frequency weights: the same fit of the same draw as on a frame of the drawn patients, its
weights equal to rounding (1e-9 relative, tested; 1e-15 on the default cohort), in some a fifth of its
time at 100,000 patients (docs/scaling.md). A
replicate's gate is not applied (the verdict is the observed data's); a replicate whose fit
leaves an arm without weighted patients is counted in ``n_boot_failed`` and left out.

The differences in the share by a day get a **score-type interval built from the bootstrap**
(:func:`~ketaoutcomes.models.contrasts.risk_difference_interval`): each arm's share gets Wilson's
interval at its effective sample size (``p (1 - p)`` over the variance of its bootstrap replicates),
and the two are combined by MOVER with the correlation of the arms' replicates (Newcombe 1998;
Zou & Donner 2008). The spread of a share of few patients grows with its value, so a cohort whose
share came out low also gets a narrower spread; the percentile interval ignores that and missed
the truth on that side: in the simulation study (200 cohorts of 2,000) the day-7 differences of
the five routes covered 91.5-94.5% with percentile intervals, the interval lying below the truth
in 4-7% of cohorts and above it in 0.5-1.5%; with this interval they cover 93.0-96.5% (oral
ketamine 91.5% -> 94.5%). The median and restricted-mean differences keep percentile intervals
(their coverage was 93.5-98%), as do the risk ratios (E-values).

The bootstrap runs for pairs whose diagnostics pass; a pair that fails the gate keeps its point
estimates beside the verdict (withheld, as its HR) without an interval, which saves the time of
intervals nobody is shown (``bootstrap_all`` runs it for every pair, as the simulation study does).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from ketaoutcomes.analysis.propensity import fit_pair_propensity, pair_propensity_draws
from ketaoutcomes.models.common import one_blas_thread
from ketaoutcomes.models.contrasts import (ArmCounts, CurveSummaries, curve_summaries_by_arm, percentile_interval,
                                          risk_difference_interval)
from ketaoutcomes.models.ps_fit import PropensityDraws
from ketaoutcomes.notes import Note
from ketaoutcomes.settings import StudySettings

__all__ = ["CONTRAST_SCHEMA", "RATIO_MEASURE", "at_risk_floor", "bootstrap_seed", "bootstrap_summaries",
           "primary_contrasts"]

#: The measure of the rows of :func:`primary_contrasts` that hold a risk ratio (route / reference by a
#: day, its bootstrap interval) in ``difference``/``lower``/``upper``: the analysis moves them out
#: of results_contrasts (which holds differences) into the E-value table.
RATIO_MEASURE = "risk_ratio"

CONTRAST_SCHEMA = {
    "paramcd": pl.String, "target": pl.String, "comparator": pl.String, "weighting": pl.String,
    "estimand": pl.String, "measure": pl.String, "day": pl.Float64,
    "value_target": pl.Float64, "value_comparator": pl.Float64, "difference": pl.Float64,
    "lower": pl.Float64, "upper": pl.Float64, "se": pl.Float64,
    "n_boot": pl.Int64, "n_boot_failed": pl.Int64, "interval": pl.String,
    "diagnostics": pl.String, "gate_reasons": pl.String, "note": pl.String,
}


def bootstrap_seed(study: StudySettings, paramcd: str, target: str) -> np.random.SeedSequence:
    """The seed of one pair's bootstrap: the study's random_seed, the endpoint and the route."""
    return np.random.SeedSequence([study.random_seed, zlib.crc32(paramcd.encode()), zlib.crc32(target.encode())])


def _weights(pair_ids: np.ndarray, scores: pl.DataFrame) -> np.ndarray:
    """Each row's weight from a propensity fit's scores (by row id); 0 for a row without a usable
    weight (left out for a missing covariate, unmatched, or a non-finite weight)."""
    w = np.zeros(len(pair_ids))
    s = scores.select(pl.col("USUBJID").cast(pl.Int64).alias("i"), pl.col("weight").fill_nan(None))
    s = s.filter(pl.col("weight").is_not_null() & pl.col("weight").is_finite() & (pl.col("weight") > 0))
    w[s["i"].to_numpy()] = s["weight"].to_numpy()
    return w


def _both(s: CurveSummaries, b: int | slice) -> dict[str, np.ndarray]:
    return {"risk": s.risk[b], "median": s.median[b], "rmst": s.rmst[b]}


def bootstrap_summaries(refit: PropensityDraws, time_index: np.ndarray, event: np.ndarray, treated: np.ndarray,
                        grid: np.ndarray, seed: np.random.SeedSequence, replicates: int, *, days: Sequence[float],
                        horizon: float) -> tuple[dict[str, CurveSummaries], list[str]]:
    """The two arms' curve summaries (``target``, ``comparator``) in each of ``replicates`` bootstrap
    replicates of a pair's ``n`` rows, and the errors of the replicates whose propensity refit failed
    (their weights all 0: no patients, so NaN summaries).

    Replicate b draws n rows with replacement: row b of ``rng.integers(0, n, size=(replicates, n))``,
    drawn here one row at a time (numpy's generator gives the same numbers). Its propensity model is
    refitted on the draw (``refit``), and only the counts of its two weighted curves per grid time are
    kept (:class:`~ketaoutcomes.models.contrasts.ArmCounts`): no (replicates, n) array is made. At a
    million patients the matrix of draws was 0.7 GB as drawn (0.36 GB kept as 32-bit indices) in the
    largest unit, and each block of 25 replicates' rows made some ten 90 MB arrays, mapped afresh and
    their pages zeroed every block. The summaries are the same, bit for bit, as those of the rows'
    arrays (``tests/unit/test_contrasts.py``)."""
    n = len(time_index)
    rng = np.random.default_rng(seed)
    counts = ArmCounts(replicates, grid)
    errors: list[str] = []
    with one_blas_thread():
        for b in range(replicates):
            rows = rng.integers(0, n, size=n)
            try:
                w = refit.weights(rows)
            except Exception as exc:  # noqa: BLE001 - a replicate that cannot be fitted is counted, not fatal
                errors.append(f"{type(exc).__name__}: {exc}")
                w = np.zeros(n)
            counts.add(b, time_index[rows], event[rows], w, treated[rows])
    return dict(zip(("target", "comparator"), counts.summaries(days=days, horizon=horizon))), errors


def primary_contrasts(frame: pl.DataFrame, paramcd: str, study: StudySettings, targets: Sequence[str],
                      verdicts: Mapping[str, tuple[str, str | None]], *, bootstrap_all: bool = False
                      ) -> tuple[pl.DataFrame, list[Note]]:
    """The contrasts of each route in ``targets`` vs the reference arm on one endpoint's ``frame``
    (``USUBJID``, ``ARM``, ``AVAL``, ``EVENT`` and the covariates), one row per estimand, with the
    pair's gate verdict from ``verdicts`` (target -> (diagnostics, gate_reasons))."""
    ref = study.cohort.reference_arm
    m = study.models
    days = [float(d) for d in m.contrast_days]
    horizon = float(m.rmst_horizon_days)
    B = m.bootstrap_replicates
    rows: list[dict] = []
    notes: list[Note] = []
    for target in targets:
        verdict, reasons = verdicts.get(target, ("fail", "no propensity-score comparison"))
        pair = frame.filter(pl.col("ARM").is_in([target, ref]) & pl.col("AVAL").is_not_null()
                            & pl.col("EVENT").is_not_null())
        n = pair.height
        grid, tidx = np.unique(pair["AVAL"].cast(pl.Float64).to_numpy(), return_inverse=True)
        event = pair["EVENT"].cast(pl.Float64).to_numpy()
        treated = (pair["ARM"] == target).to_numpy()
        w0 = _weights(np.arange(n), fit_pair_propensity(
            pair.with_columns(pl.Series("USUBJID", np.arange(n).astype(str))), target, study, balance=False).scores)
        # survRM2's rule: the restricted mean is compared up to the horizon or, when an arm's follow-up
        # ends before it, up to the earlier of the two arms' last days with enough patients at risk
        arm_times = [grid[tidx[(w0 > 0) & mask]] for mask in (treated, ~treated)]
        floors = [at_risk_floor(t.size, m.contrast_min_at_risk, m.contrast_min_at_risk_share) for t in arm_times]
        ends = [_last_day_at_risk(t, k) for t, k in zip(arm_times, floors)]
        rule = (f"fewer than {m.contrast_min_at_risk} patients, or {m.contrast_min_at_risk_share:.0%} of the arm "
                f"({floors[0]} of the route, {floors[1]} of the reference arm), at risk "
                "(models.contrast_min_at_risk, contrast_min_at_risk_share)")
        tau = min(horizon, float(min(ends))) if min(ends) > 0 else horizon  # min(ends) 0: no RMST (below)
        point = dict(zip(("target", "comparator"),
                         curve_summaries_by_arm(tidx, event, w0, treated, grid, days=days, horizon=tau)))
        run_boot = B > 0 and (verdict == "pass" or bootstrap_all)
        boot: dict[str, CurveSummaries] | None = None
        failed = 0
        if run_boot:
            boot, errors = bootstrap_summaries(pair_propensity_draws(pair, target, study), tidx, event, treated, grid,
                                               bootstrap_seed(study, paramcd, target), B, days=days, horizon=tau)
            ok = (boot["target"].n > 0) & (boot["comparator"].n > 0)
            failed = int((~ok).sum())
            for s in boot.values():  # a replicate with an arm left empty is not a replicate of this estimate
                s.risk[~ok] = np.nan
                s.median[~ok] = np.nan
                s.rmst[~ok] = np.nan
            if errors:
                notes.append(Note(f"{len(errors)} of {B} bootstrap replicates of {target} vs {ref} could not be "
                                  f"fitted (first: {errors[0][:200]}); they are left out of the intervals",
                                  step="contrasts", endpoint=paramcd, arms=(target,), severity="warning"))
        note = None if run_boot else (
            "no bootstrap: models.bootstrap_replicates = 0" if B == 0 else
            "no interval: the pair fails the diagnostics gate, so its estimates are withheld")
        resampled = f"{B} replicates (patients resampled, propensity model refitted)"
        percentile = f"percentile bootstrap, {resampled}" if run_boot else None
        score = (f"bootstrap score interval, {resampled}: each arm's Wilson interval at the sample size its "
                 "bootstrap variance implies, combined by MOVER") if run_boot else None
        kish = [float(w0[mask].sum() ** 2 / (w0[mask] ** 2).sum()) if (w0[mask] > 0).any() else math.nan
                for mask in (treated, ~treated)]

        def row(estimand: str, measure: str, day: float | None, vt: float, vc: float,
                reps: np.ndarray | None, extra: str | None = None,
                arm_reps: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
            """One estimand's row; ``arm_reps`` (each arm's replicates of a share) makes the interval
            the bootstrap score interval of a difference of shares, else it is the percentile interval."""
            if measure == "risk_ratio":  # route / reference (kept apart from the differences: RATIO_MEASURE)
                diff = vt / vc if not (math.isnan(vt) or math.isnan(vc)) and vc > 0 else math.nan
            else:
                diff = vt - vc if not (math.isnan(vt) or math.isnan(vc)) else math.nan
            lo = hi = sd = math.nan
            used = 0
            if reps is not None and arm_reps is not None:
                lo, hi, sd, used = risk_difference_interval(vt, vc, *arm_reps, *kish, alpha=m.alpha)
            elif reps is not None:
                lo, hi, sd, used = percentile_interval(reps, m.alpha)
            said = [x for x in (note, extra) if x]
            if reps is not None and (math.isinf(lo) or math.isinf(hi)):
                said.append("interval unbounded " + ("below" if math.isinf(lo) else "above")
                            + ": the median was not reached in one arm in some replicates")
            fin = lambda x: None if (x is None or not math.isfinite(x)) else float(x)  # noqa: E731
            return {"paramcd": paramcd, "target": target, "comparator": ref, "weighting": study.propensity.weighting,
                    "estimand": estimand, "measure": measure, "day": day, "value_target": fin(vt),
                    "value_comparator": fin(vc), "difference": fin(diff), "lower": fin(lo), "upper": fin(hi),
                    "se": fin(sd), "n_boot": used if reps is not None else 0, "n_boot_failed": failed,
                    "interval": score if arm_reps is not None else percentile, "diagnostics": verdict,
                    "gate_reasons": reasons,
                    "note": "; ".join(said) or None}

        pt, pc = _both(point["target"], 0), _both(point["comparator"], 0)
        bt = _both(boot["target"], slice(None)) if boot else None
        bc = _both(boot["comparator"], slice(None)) if boot else None
        for k, day in enumerate(days):
            reps = bt["risk"][:, k] - bc["risk"][:, k] if boot else None
            arm_reps = (bt["risk"][:, k], bc["risk"][:, k]) if boot else None
            short = [who for who, e in zip(("route", "reference arm"), ends) if e < day]
            extra = None if not short else f"not estimable: by day {day:g}, {rule} in the " \
                f"{' and the '.join(short)} (last day with enough: {min(ends):g})"
            if short:
                rows.append(row(f"risk_d{day:g}", "risk", day, math.nan, math.nan, None, extra))
                rows.append(row(f"rr_d{day:g}", RATIO_MEASURE, day, math.nan, math.nan, None, extra))
            else:
                rows.append(row(f"risk_d{day:g}", "risk", day, pt["risk"][k], pc["risk"][k], reps, extra, arm_reps))
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio_reps = bt["risk"][:, k] / bc["risk"][:, k] if boot else None
                rows.append(row(f"rr_d{day:g}", RATIO_MEASURE, day, pt["risk"][k], pc["risk"][k], ratio_reps, extra))
        med_reps = None
        if boot:
            # a median not reached is beyond follow-up: +inf, so the difference is unbounded that way
            mt = np.where(np.isnan(bt["median"]), np.inf, bt["median"])
            mc = np.where(np.isnan(bc["median"]), np.inf, bc["median"])
            with np.errstate(invalid="ignore"):
                med_reps = np.where(np.isnan(bt["rmst"]), np.nan, mt - mc)  # inf - inf: NaN, left out
        med_extra = None if not (math.isnan(pt["median"]) or math.isnan(pc["median"])) else \
            "no difference: the median was not reached in " + ("both arms" if math.isnan(pt["median"]) and
                                                              math.isnan(pc["median"]) else "one arm")
        rows.append(row("median", "median", None, pt["median"], pc["median"], med_reps, med_extra))
        cut = None if tau == horizon else (
            f"horizon cut from day {horizon:g} to day {tau:g}: after it, {rule} in the "
            f"{'route' if ends[0] <= ends[1] else 'reference arm'}")
        if min(ends) > 0:
            rows.append(row("rmst", "rmst", tau, pt["rmst"], pc["rmst"], bt["rmst"] - bc["rmst"] if boot else None, cut))
        else:
            rows.append(row("rmst", "rmst", None, math.nan, math.nan, None,
                            f"not estimable: {rule} on any day"))
    return pl.DataFrame(rows, schema=CONTRAST_SCHEMA), notes


def at_risk_floor(n_arm: int, min_at_risk: int, share: float) -> int:
    """How many of an arm's ``n_arm`` patients must still be at risk on a day for its curve to be read
    there: ``min_at_risk``, or ``share`` of the arm when that is more (Pocock, Clayton & Altman 2002:
    curtail a Kaplan-Meier curve when some 10-20% of the patients remain at risk)."""
    return max(int(min_at_risk), math.ceil(share * n_arm - 1e-9))


def _last_day_at_risk(times: np.ndarray, k: int) -> float:
    """The last day on which at least ``k`` of these patients are at risk (their time >= the day):
    the k-th largest time; 0 when there are fewer than ``k`` patients."""
    if times.size < k:
        return 0.0
    return float(np.partition(times, times.size - k)[times.size - k])
