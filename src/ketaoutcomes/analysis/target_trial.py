"""The target-trial emulation of a study that declares one (``StudySettings.target_trial``), pure.

Input: the person-level trial frame (one row per eligible patient at time zero: ``start_day``,
``time``, ``event``, the raw baseline covariates, optional negative-control outcomes
``nc_<name>_time`` / ``nc_<name>_event``) and its attrition (``step``, ``excluded``,
``remaining``), as :func:`ketaoutcomes.derive.target_trial.target_trial_cohort` derives them;
the protocol (:class:`ketaoutcomes.protocol.TargetTrialProtocol`) and the study's random seed.

What it does (docs/target-trial.md says why):

1. **Covariates.** The protocol's covariates, coded for the start model: a text covariate (sex)
   becomes one 0/1 indicator per level but the first in sort order (``sex_M``); a numeric one is
   used as it is. A patient with a missing covariate is excluded (there is no imputation) and
   counted as an attrition step; an indicator or number that is constant among the patients left
   is dropped (it carries nothing and a constant column cannot be fitted), with a note.
2. **CCW** (:mod:`ketaoutcomes.models.ccw`), variant ``ccw`` (the correct grace-period
   denominator), and the naive users-vs-users comparison (variant ``naive``) beside it as the
   design the trial replaces; the person-level bootstrap of ``bootstrap_replicates``, seeded with
   the study's seed. The effects are models.ccw's, read off its point estimates and the same
   bootstrap replicates (the bootstrap is run once per outcome, so the log-scale SEs that the
   calibration needs come from the replicates the intervals come from).
3. **E-values** (:mod:`ketaoutcomes.models.evalues`) of the CCW risk ratio at each named day and
   of its CI limit nearer the null.
4. **Negative controls.** Each control in the protocol, when the frame carries its columns, goes
   through the identical CCW procedure (same patients, covariates, window, bootstrap): its log
   risk ratio at each named day, with the SD of the bootstrap replicates' log risk ratios as SE.
5. **Empirical calibration** (:mod:`ketaoutcomes.models.calibration`) per named day: the
   systematic-error null fitted to the usable controls (finite log RR and SE), its expected
   absolute systematic error (EASE) and the gate: fewer than ``min_negative_controls`` usable
   controls is *not evaluable* and the calibrated p-value and CI are not computed; an EASE at or
   above ``max_ease`` *fails* (the calibrated numbers are kept beside the failure); otherwise
   *pass*. The calibrated CI assumes a systematic error constant in the effect size.

:func:`target_trial_analysis` returns the ``results_tt_*`` tables
(:mod:`ketaoutcomes.analysis.target_trial_tables` declares them) and notes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ketaoutcomes.analysis.checks import StudyMismatch
from ketaoutcomes.analysis.common import StepResult
from ketaoutcomes.analysis.target_trial_tables import TT_CONTRACTS
from ketaoutcomes.derive.target_trial import nc_columns
from ketaoutcomes.models.calibration import (
    EXTREME_LOG_ESTIMATE,
    calibrate_ci,
    calibrate_p,
    calibrated_log_estimate,
    calibration_gate,
    expected_absolute_systematic_error,
    fit_null,
)
from ketaoutcomes.models.ccw import bootstrap, ccw_analysis, prepare, with_bootstrap
from ketaoutcomes.models.evalues import evalue
from ketaoutcomes.notes import Note
from ketaoutcomes.protocol import TargetTrialProtocol

__all__ = ["CodedCovariates", "PRIMARY", "TargetTrialNotEstimable", "VARIANTS_SHOWN", "code_covariates", "nc_columns", "target_trial_analysis"]

#: The variants the analysis reports: the CCW with the correct denominator, and the naive
#: users-vs-users comparison it replaces (models.ccw's ``simple`` variant is for the simulation study).
VARIANTS_SHOWN = ("ccw", "naive")
#: ``outcome`` of the primary outcome's rows (a negative control's rows carry its name).
PRIMARY = "primary"
_START, _TIME, _EVENT, _OTHER = "start_day", "time", "event", "other_start_day"


class TargetTrialNotEstimable(StudyMismatch):
    """The trial data cannot give the emulation (a column or covariate missing, nobody left, no start
    in the grace period, a start model that cannot be fitted): one line saying what and why."""


def _note(text: str, severity: str = "warning") -> Note:
    return Note(text, step="target_trial", severity=severity)


@dataclass(frozen=True)
class CodedCovariates:
    """The frame restricted to patients with every covariate, the model columns, and who was left out."""

    frame: pl.DataFrame
    columns: tuple[str, ...]  # the start model's covariate columns (added to ``frame``)
    excluded: int  # patients without a value of some covariate
    missing_by_covariate: dict[str, int]
    dropped: tuple[str, ...]  # constant columns left out of the model


def code_covariates(frame: pl.DataFrame, covariates: Sequence[str]) -> CodedCovariates:
    """Code ``covariates`` of ``frame`` for the start model (module doc, step 1).

    Raises TargetTrialNotEstimable (one line) when a covariate is not a column of the frame."""
    absent = [c for c in covariates if c not in frame.columns]
    if absent:
        raise TargetTrialNotEstimable(f"target-trial frame has no covariate column(s) {absent}: target_trial.covariates names "
                         "columns of the trial frame (age_at_index, sex, baseline_score, prior_failed_trials)")
    missing = {c: int(frame[c].null_count()) for c in covariates if frame[c].null_count()}
    kept = frame.drop_nulls(subset=list(covariates)) if covariates else frame
    columns: list[str] = []
    coded = []
    for c in covariates:
        s = kept[c]
        if s.dtype.is_numeric() or s.dtype == pl.Boolean:
            coded.append(s.cast(pl.Float64).alias(f"_x_{c}"))
            columns.append(f"_x_{c}")
            continue
        levels = sorted(str(v) for v in s.cast(pl.String).unique().to_list())
        for level in levels[1:]:
            name = f"_x_{c}_{level}"
            coded.append((s.cast(pl.String) == level).cast(pl.Float64).alias(name))
            columns.append(name)
    kept = kept.with_columns(coded) if coded else kept
    constant = tuple(c for c in columns if kept.height and kept[c].n_unique() < 2)
    return CodedCovariates(kept, tuple(c for c in columns if c not in constant), frame.height - kept.height,
                           missing, tuple(constant))


def _label(column: str) -> str:
    return column.removeprefix("_x_")


def _log_rr(boot: np.ndarray | None, point: pl.DataFrame, days: Sequence[int]) -> list[dict]:
    """Per day: the log risk ratio and the SD of the replicates' log risk ratios (null when fewer than
    two replicates give a positive finite ratio)."""
    names = point["measure"].to_list()
    day_of = point["day"].to_list()
    est = point["estimate"].to_list()
    out = []
    for d in days:
        j = next(i for i, (m, dd) in enumerate(zip(names, day_of)) if m == "rr" and dd == d)
        rr = est[j]
        log_rr = math.log(rr) if rr is not None and math.isfinite(rr) and rr > 0 else None
        se = None
        if boot is not None:
            col = boot[:, j]
            good = col[np.isfinite(col) & (col > 0)]
            if good.size > 1:
                se = float(np.std(np.log(good), ddof=1))
        out.append({"day": d, "log_rr": log_rr, "se": se})
    return out


@dataclass(frozen=True)
class _Run:
    results: dict  # variant -> CCWResult
    effects: dict  # variant -> effects frame with the bootstrap columns
    log_rr: list[dict]  # the CCW's log RR and its bootstrap SE per day


def _run(frame: pl.DataFrame, *, time: str, event: str, covariates: Sequence[str], protocol: TargetTrialProtocol,
         seed: int, variants: Sequence[str]) -> _Run:
    """The CCW procedure on one outcome: models.ccw's point estimates and tables, one bootstrap."""
    kw = dict(time=time, event=event, start=_START, covariates=list(covariates), grace_days=protocol.grace_days,
              days=protocol.risk_days, horizon=protocol.rmst_horizon_days, truncation=protocol.truncation,
              stabilised=protocol.stabilised, late="model" if protocol.after_grace == "outcome_model" else "weights",
              other_start=_OTHER if _OTHER in frame.columns else None)
    results = ccw_analysis(frame, **kw, bootstrap_replicates=0, seed=seed, variants=variants)
    B = protocol.bootstrap_replicates
    boots = bootstrap(prepare(frame, **kw), B, seed, variants) if B > 0 else {}
    effects = {v: with_bootstrap(results[v].effects, boots.get(v)) for v in variants}
    return _Run(results, effects, _log_rr(boots.get("ccw"), results["ccw"].effects, protocol.risk_days))


def _evalues(effects: pl.DataFrame) -> pl.DataFrame:
    """E-values of the risk ratios (the estimate, and the CI limit nearer 1) beside each rr row."""
    point, ci = [], []
    for r in effects.iter_rows(named=True):
        e = None
        if r["measure"] == "rr" and r["estimate"] is not None and math.isfinite(r["estimate"]) and r["estimate"] > 0:
            lo, hi = r.get("lower"), r.get("upper")
            bounded = lo is not None and hi is not None and lo > 0 and math.isfinite(hi)
            e = evalue(r["estimate"], lo if bounded else None, hi if bounded else None, scale="risk_ratio")
        point.append(e.point if e else None)
        ci.append(e.ci if e else None)
    return effects.with_columns(pl.Series("e_value", point, dtype=pl.Float64),
                                pl.Series("e_value_ci", ci, dtype=pl.Float64))


def _attrition(attrition: pl.DataFrame, coded: CodedCovariates) -> pl.DataFrame:
    """The derivation's steps (``excluded`` null on a row that only counts, such as the patients in the
    data), then the covariate step (always shown, 0 when nobody is missing one)."""
    rows = [{"step_order": i + 1, "step": str(r["step"]), "excluded": r["excluded"], "remaining": int(r["remaining"])}
            for i, r in enumerate(attrition.iter_rows(named=True))]
    which = ", ".join(f"{c} ({n})" for c, n in coded.missing_by_covariate.items()) or "none"
    rows.append({"step_order": len(rows) + 1, "step": f"every covariate of the start model present (missing: {which})",
                 "excluded": coded.excluded, "remaining": coded.frame.height})
    return pl.DataFrame(rows, schema={"step_order": pl.Int64, "step": pl.String, "excluded": pl.Int64,
                                      "remaining": pl.Int64})


def _baseline(data: pl.DataFrame, covs: Sequence[str], dropped: Sequence[str], grace: int) -> pl.DataFrame:
    """Each coded covariate: in the model or not, and its mean (share, for an indicator) among every
    patient, those who started within the grace period (before the outcome, as models.ccw counts a
    start) and the others."""
    started = (data[_START] <= grace).fill_null(False) & (data[_START] < data[_TIME]).fill_null(False)
    rows = []
    for c in (*covs, *dropped):
        x = data[c]
        rows.append({"covariate": _label(c), "in_model": c in covs, "mean_all": x.mean(),
                     "mean_started": x.filter(started).mean(), "mean_not_started": x.filter(~started).mean()})
    return pl.DataFrame(rows, schema={"covariate": pl.String, "in_model": pl.Boolean, "mean_all": pl.Float64,
                                      "mean_started": pl.Float64, "mean_not_started": pl.Float64})


def _calibration(primary: list[dict], controls: dict[str, list[dict] | None], protocol: TargetTrialProtocol
                 ) -> pl.DataFrame:
    """Per named day: the controls' log RRs and SEs, and the primary's with the null, EASE, gate and
    (unless not evaluable) the calibrated p-value and CI (module doc, step 5)."""
    rows = []
    for i, day in enumerate(protocol.risk_days):
        usable = {name: est[i] for name, est in controls.items() if est is not None and _usable(est[i])}
        for name, est in controls.items():
            r = est[i] if est is not None else {"log_rr": None, "se": None}
            rows.append({"outcome": name, "role": "negative_control", "day": day, "log_rr": r["log_rr"], "se": r["se"],
                         "usable": name in usable})
        p = primary[i]
        row = {"outcome": PRIMARY, "role": "primary", "day": day, "log_rr": p["log_rr"], "se": p["se"],
               "usable": _usable(p),
               "n_controls": len(controls), "n_usable": len(usable), "error_model": "constant"}
        null = None
        if len(usable) >= protocol.min_negative_controls:  # fewer: not evaluable, no null is shown
            null = fit_null([u["log_rr"] for u in usable.values()], [u["se"] for u in usable.values()])
        status, reason = calibration_gate(null, len(usable), min_controls=protocol.min_negative_controls,
                                          ease_max=protocol.max_ease)
        row.update(status=status, reason=reason)
        if row["usable"]:
            row["p_uncalibrated"] = _two_sided_p(p["log_rr"], p["se"])
        if null is not None:
            row.update(null_mean=float(null.mean), null_sd=float(null.sd),
                       ease=float(expected_absolute_systematic_error(null)))
            if status != "not_evaluable" and row["usable"]:
                lo, hi = calibrate_ci(null, p["log_rr"], p["se"], 0.05)
                row.update(p_calibrated=float(calibrate_p(null, p["log_rr"], p["se"])),
                           rr_calibrated=math.exp(calibrated_log_estimate(null, p["log_rr"])),
                           rr_calibrated_lower=math.exp(lo), rr_calibrated_upper=math.exp(hi))
        rows.append(row)
    schema = {c.name: c.polars_type for c in TT_CONTRACTS["results_tt_calibration"].columns
              if c.name not in ("run_id", "settings_id")}
    return pl.DataFrame(rows, schema=schema)


def _usable(est: dict) -> bool:
    """A log RR and SE the systematic-error null can use (as models.calibration.fit_null keeps them)."""
    x, se = est["log_rr"], est["se"]
    return x is not None and se is not None and se > 0 and math.isfinite(se) and abs(x) <= EXTREME_LOG_ESTIMATE


def _two_sided_p(log_rr: float, se: float) -> float:
    return math.erfc(abs(log_rr / se) / math.sqrt(2))


def _emptied_by(attrition: pl.DataFrame) -> str:
    """The eligibility rule that left nobody, for the error ('' when the attrition does not say)."""
    for r in attrition.iter_rows(named=True):
        if int(r["remaining"]) == 0 and r["excluded"] is not None:
            return (f": the rule '{r['step']}' excluded the last {r['excluded']} patient(s); check the protocol's "
                    "eligibility and the export")
    return ""


def _tag(frame: pl.DataFrame, **cols: object) -> pl.DataFrame:
    return frame.with_columns(*(pl.lit(v).alias(k) for k, v in cols.items()))


def target_trial_analysis(frame: pl.DataFrame, attrition: pl.DataFrame, *, protocol: TargetTrialProtocol,
                          seed: int) -> StepResult:
    """The ``results_tt_*`` tables of one target-trial emulation (module doc) and its notes.

    Raises TargetTrialNotEstimable (one line) when a column the analysis needs is not in the frame,
    nobody is left, or the CCW cannot be estimated (models.ccw's reason: e.g. no start in the grace
    period, or a start model that does not fit)."""
    need = [c for c in ("patient_id", _START, _TIME, _EVENT) if c not in frame.columns]
    if need:
        raise TargetTrialNotEstimable(f"target-trial frame has no column(s) {need}")
    if frame.height == 0:
        raise TargetTrialNotEstimable("target trial: no eligible patient" + _emptied_by(attrition))
    coded = code_covariates(frame, protocol.covariates)
    notes: list[Note] = []
    if coded.excluded:
        notes.append(_note(f"target trial: {coded.excluded} patient(s) excluded for a missing covariate "
                           f"({', '.join(f'{c}: {n}' for c, n in coded.missing_by_covariate.items())})"))
    if coded.dropped:
        notes.append(_note(f"target trial: covariate(s) {', '.join(_label(c) for c in coded.dropped)} left out of the "
                           "start model: the same for every patient"))
    if coded.frame.height == 0:
        raise TargetTrialNotEstimable("target trial: no eligible patient has every covariate of the start model; "
                                      "see results_tt_attrition (nothing to emulate)")
    data, covs = coded.frame, coded.columns
    started = ((data[_START] <= protocol.grace_days) & (data[_START] < data[_TIME])).fill_null(False).sum()
    if started == 0:
        raise TargetTrialNotEstimable(
            f"target trial: none of the {data.height} eligible patients started ketamine within the "
            f"{protocol.grace_days}-day grace period before the outcome, so the strategy 'start within the grace "
            "period' has nobody to follow it; check target_trial.treatment_arms and the courses after time zero")
    outside = int(((data[_OTHER] < data[_TIME]) & (data[_OTHER] <= protocol.grace_days)).fill_null(False).sum()) \
        if _OTHER in data.columns else 0
    if outside and protocol.after_grace == "last_day_weights":
        raise TargetTrialNotEstimable(
            f"target trial: {outside} patient(s) started ketamine on an arm outside target_trial.treatment_arms within "
            'the grace period, which deviates from both strategies; after_grace = "last_day_weights" cannot censor '
            'them: use after_grace = "outcome_model"')
    if outside:
        notes.append(_note(f"target trial: {outside} patient(s) started ketamine on an arm outside "
                           "target_trial.treatment_arms within the grace period (before any start on them): censored "
                           "in both strategies at that start, the others weighted for it", "info"))
    try:
        main = _run(data, time=_TIME, event=_EVENT, covariates=covs, protocol=protocol, seed=seed,
                    variants=VARIANTS_SHOWN)
    except ValueError as err:
        raise TargetTrialNotEstimable(f"target trial: the clone-censor-weighting cannot be estimated on the "
                                      f"{data.height} eligible patients: {err}") from err
    effects = [_tag(_evalues(main.effects["ccw"]), variant="ccw", outcome=PRIMARY),
               _tag(main.effects["naive"], variant="naive", outcome=PRIMARY)]
    controls: dict[str, list[dict] | None] = {}
    for nc in protocol.negative_controls:
        t, e = nc_columns(nc.name)
        if t not in data.columns or e not in data.columns:
            controls[nc.name] = None
            continue
        try:
            run = _run(data, time=t, event=e, covariates=covs, protocol=protocol, seed=seed, variants=("ccw",))
        except ValueError as err:
            notes.append(_note(f"target trial: negative control {nc.name!r} could not be estimated ({err})"))
            controls[nc.name] = None
            continue
        controls[nc.name] = run.log_rr
        effects.append(_tag(run.effects["ccw"], variant="ccw", outcome=nc.name))
    absent = [n for n, est in controls.items() if est is None]
    if absent:
        notes.append(_note(f"target trial: negative control(s) {', '.join(absent)} not in the trial data: not "
                           "evaluated"))
    calibration = _calibration(main.log_rr, controls, protocol)
    per_variant = {v: main.results[v] for v in VARIANTS_SHOWN}
    tables = {
        "results_tt_effects": pl.concat(effects, how="diagonal_relaxed"),
        "results_tt_curves": pl.concat([_tag(r.curves, variant=v) for v, r in per_variant.items()]),
        "results_tt_weights": _tag(main.results["ccw"].weights, variant="ccw"),
        "results_tt_counts": pl.concat([_tag(r.counts, variant=v) for v, r in per_variant.items()]),
        "results_tt_starts": main.results["ccw"].start_distribution,
        "results_tt_attrition": _attrition(attrition, coded),
        "results_tt_calibration": calibration,
        "results_tt_covariates": _baseline(data, covs, coded.dropped, protocol.grace_days),
    }
    return StepResult(tables, tuple(notes))

