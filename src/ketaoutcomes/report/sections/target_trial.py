"""The target-trial section (tables ``results_tt_*`` and the run's ``[target_trial]`` protocol).

Shown only when the run has a target trial (a study without one renders exactly as before). The
answer first, in words: risk differences at the protocol's days and the difference in restricted
mean time, with their intervals; then the results table (with the naive users-vs-users comparison
and the E-values), the protocol table (component | target trial | emulation, filled from the
protocol and the run), the TARGET checklist (each item filled from the run, or "not done" /
"not applicable" with why), the risk curves, the observed start days in the grace period, the
per-strategy counts and weights, and the negative controls with the calibration or the reason it
is not evaluable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import polars as pl

from ketaoutcomes.protocol import TargetTrialProtocol
from ketaoutcomes.report.figures.target_trial import (
    StrategyCurve,
    start_days_figure,
    strategy_curves_figure,
    strategy_style,
)
from ketaoutcomes.report.format import DASH, EN, MINUS, Fmt, Row, Table, fmt_hr_ci, fmt_num, fmt_p, has, ok

__all__ = ["strategy_truth_table", "target_trial_answer", "target_trial_section"]

_STRATEGY = {"initiate": "start ketamine within the grace period", "never": "no ketamine"}
_VARIANT = {"ccw": "target trial (CCW)", "naive": "naive users vs users"}
#: Curve labels: short enough for the legend.
_CURVE = {("ccw", "initiate"): "CCW: start within the grace period", ("ccw", "never"): "CCW: no ketamine",
          ("naive", "initiate"): "naive: started within it", ("naive", "never"): "naive: did not start within it"}
#: models.ccw's bootstrap intervals are 95% percentile intervals, whatever the study's models.alpha.
_CI = "95% CI"


def _pct(x: Any) -> str:
    return f"{100 * float(x):.1f}%" if ok(x) else DASH


def _signed(x: float, decimals: int = 1) -> str:
    text = f"{abs(x):.{decimals}f}"
    return ("+" if x > 0 else MINUS if x < 0 and float(text) != 0 else "") + text


def _points(x: Any) -> str:
    """A risk difference in percentage points, signed."""
    return _signed(100 * float(x)) if ok(x) else DASH


def _diff_ci(r: Mapping | None, scale: float = 100.0, unit: str = " points") -> str:
    """'+3.4 points (-1.0 to +7.9)': a signed difference and its interval (no interval: none shown)."""
    if r is None or not ok(r.get("estimate")):
        return "not estimable"
    est = _signed(scale * r["estimate"])
    return f"{est}{unit} ({_interval(r, scale)})" if _interval(r, scale) else f"{est}{unit}"


def _interval(r: Mapping, scale: float) -> str:
    """'+1.3 to +3.1' (signed limits times ``scale``); empty without an interval."""
    if not (ok(r.get("lower")) and ok(r.get("upper"))):
        return ""
    return f"{_signed(scale * r['lower'])} to {_signed(scale * r['upper'])}"


class _Effects:
    """Rows of results_tt_effects by (variant, outcome, measure, day)."""

    def __init__(self, effects: pl.DataFrame) -> None:
        self.rows = {(r["variant"], r["outcome"], r["measure"], int(r["day"])): r for r in effects.iter_rows(named=True)}

    def get(self, measure: str, day: int, variant: str = "ccw", outcome: str = "primary") -> Mapping | None:
        return self.rows.get((variant, outcome, measure, int(day)))

    def value(self, measure: str, day: int, variant: str = "ccw", outcome: str = "primary") -> Any:
        r = self.get(measure, day, variant, outcome)
        return None if r is None else r.get("estimate")


def _drug(p: TargetTrialProtocol) -> str:
    """What "starting" means: ketamine, or the protocol's treatment arms."""
    return "ketamine" if not p.treatment_arms else " or ".join(a.replace("_", " ") for a in p.treatment_arms)


def _outcome_words(p: TargetTrialProtocol) -> str:
    return {"response": "response", "remission": "remission"}[p.outcome]


#: Fewer patients than this starting on the grace period's last day: the estimates past it are said to
#: rest on too few (docs/target-trial.md: with 6-12 such patients per cohort the percentile intervals
#: after the window covered the truth 84-90% of the time, not 95%).
LATE_STARTERS_MIN = 20


def _last_day_starters(starts: pl.DataFrame, p: TargetTrialProtocol) -> int | None:
    if not has(starts, "day", "starters"):
        return None
    last = starts.filter(pl.col("day") == p.grace_days)
    return int(last["starters"].item()) if last.height else 0


def _fragile_after_grace(starts: pl.DataFrame, p: TargetTrialProtocol, fmt: Fmt) -> str | None:
    """What the estimates past the grace period rest on, or None: with after_grace = "outcome_model",
    the post-start outcome model; with "last_day_weights", a warning when few started on its last day."""
    past = [f"day {d}" for d in p.risk_days if d > p.grace_days]
    if p.rmst_horizon_days > p.grace_days:
        past.append(f"the restricted mean to day {p.rmst_horizon_days}")
    if not past:
        return None
    if p.after_grace == "outcome_model":
        return (f"Past the grace period ({', '.join(past)}), \"start\" follows the patients who had not started by "
                f"day {p.grace_days - 1} as if they started on day {p.grace_days}, with a model of {_outcome_words(p)} "
                "after a start fitted on every observed start (days since the start, the start day and the "
                "covariates): these estimates assume that model.")
    n = _last_day_starters(starts, p)
    if n is None or n >= LATE_STARTERS_MIN:
        return None
    return (f"Read the estimates past the grace period ({', '.join(past)}) with care: under \"start\" they rest on the "
            f"{fmt.count(n)} patient(s) who started on day {p.grace_days}, its last day, each standing in for many "
            f"clones (fewer than {LATE_STARTERS_MIN}); in the simulation study, with 6-12 such patients, these 95% "
            "intervals covered the truth only 84-90% of the time: they are likely too narrow.")


def _answer(eff: _Effects, p: TargetTrialProtocol, fmt: Fmt, starts: pl.DataFrame | None = None) -> list[str]:
    """The answer in plain words: the risk difference at each day, the RMST difference, the naive design
    (and, when few patients started on the grace period's last day, that the later estimates rest on them)."""
    out = _outcome_words(p)
    ci = _CI
    lines = []
    for d in p.risk_days:
        rd = eff.get("rd", d)
        if rd is None or not ok(rd.get("estimate")):
            lines.append(f"By day {d}: the difference in {out} is not estimable.")
            continue
        more = "more" if rd["estimate"] > 0 else "fewer"
        lines.append(
            f"By day {d}: {_pct(eff.value('risk_initiate', d))} of patients had reached {out} under \"start "
            f"{_drug(p)} within {p.grace_days} days\" against {_pct(eff.value('risk_never', d))} under \"no ketamine\": "
            f"{abs(100 * rd['estimate']):.1f} percentage points {more}"
            + (f" ({ci} {_interval(rd, 100.0)})." if _interval(rd, 100.0) else "."))
    h = p.rmst_horizon_days
    rm = eff.get("rmst_diff", h)
    if rm is not None and ok(rm.get("estimate")):
        sooner = "sooner" if rm["estimate"] < 0 else "later"
        lines.append(
            f"Over the first {h} days, {out} came on average {abs(rm['estimate']):.1f} days {sooner} under "
            f"\"start {_drug(p)}\" (restricted mean time to {out} {fmt_num(eff.value('rmst_initiate', h))} vs "
            f"{fmt_num(eff.value('rmst_never', h))} days; difference {_signed(rm['estimate'])} days"
            + (f", {ci} {_interval(rm, 1.0)})." if _interval(rm, 1.0) else ")."))
    fragile = _fragile_after_grace(starts, p, fmt) if starts is not None else None
    if fragile:
        lines.append(fragile)
    naive = [f"day {d}: {_points(eff.value('rd', d, 'naive'))}" for d in p.risk_days]
    lines.append("The naive users-vs-users comparison this design replaces gives risk differences of "
                 f"{'; '.join(naive)} points: shown beside the estimate, not as one (it credits users with the time "
                 "before they started and compares patients who were sicker to begin with).")
    return lines


def _results_table(eff: _Effects, p: TargetTrialProtocol, fmt: Fmt) -> Table:
    rows = []
    for d in p.risk_days:
        rr = eff.get("rr", d) or {}
        e = f"{rr['e_value']:.2f} ({rr['e_value_ci']:.2f})" if ok(rr.get("e_value")) and ok(rr.get("e_value_ci")) else (
            f"{rr['e_value']:.2f}" if ok(rr.get("e_value")) else DASH)
        rows.append(Row([f"risk by day {d}", _pct(eff.value("risk_initiate", d)), _pct(eff.value("risk_never", d)),
                         _diff_ci(eff.get("rd", d)), fmt_hr_ci(rr.get("estimate"), rr.get("lower"), rr.get("upper")),
                         e, _diff_ci(eff.get("rd", d, "naive"))]))
    h = p.rmst_horizon_days
    rows.append(Row([f"restricted mean days to {_outcome_words(p)} (to day {h})",
                     fmt_num(eff.value("rmst_initiate", h)), fmt_num(eff.value("rmst_never", h)),
                     _diff_ci(eff.get("rmst_diff", h), 1.0, " days"), DASH, DASH,
                     _diff_ci(eff.get("rmst_diff", h, "naive"), 1.0, " days")]))
    return Table(["Measure", "Start within grace period", "No ketamine", f"Difference ({_CI})",
                  f"Risk ratio ({_CI})", "E-value (of CI limit)", "Naive users vs users: difference"],
                 rows, align="lrrrrrr", wide=True)


def _attrition_text(att: pl.DataFrame, fmt: Fmt) -> str:
    if not has(att, "step", "excluded", "remaining"):
        return "attrition not available"
    steps = [f"{r['step']}: {fmt.count(r['excluded'])} excluded, {fmt.count(r['remaining'])} left"
             if r["excluded"] is not None else f"{r['step']}: {fmt.count(r['remaining'])}"
             for r in att.sort("step_order").iter_rows(named=True)]
    return "; ".join(steps)


def _covariates_text(cov: pl.DataFrame) -> str:
    if not has(cov, "covariate", "in_model"):
        return "the protocol's covariates"
    used = cov.filter(pl.col("in_model"))["covariate"].to_list()
    left = cov.filter(~pl.col("in_model"))["covariate"].to_list()
    return ", ".join(used) + (f" ({', '.join(left)} left out: the same for every patient)" if left else "")


def _starts_summary(starts: pl.DataFrame, p: TargetTrialProtocol, fmt: Fmt) -> str:
    if not has(starts, "day", "starters", "at_risk"):
        return "start days not available"
    n = int(starts.filter(pl.col("day") == 0)["at_risk"].item()) if starts.height else 0
    total = int(starts["starters"].sum())
    on_last = _last_day_starters(starts, p) or 0
    day = starts["day"].to_numpy()
    s = starts["starters"].to_numpy()
    median = int(day[np.searchsorted(np.cumsum(s), total / 2)]) if total else None
    text = (f"{fmt.n_pct(total, n)} of {fmt.count(n)} patients started ketamine within the {p.grace_days}-day grace "
            f"period (before the outcome)")
    if median is not None:
        text += f"; half of them by day {median}"
    text += (f"; {fmt.count(on_last)} started on day {p.grace_days}, the last day"
             + (", and stand in, through their weights, for the clones censored that day for not having started"
                if p.after_grace == "last_day_weights" else ""))
    return text + "."


def _protocol_table(p: TargetTrialProtocol, t: Callable[[str], pl.DataFrame], fmt: Fmt, seed: Any) -> Table:
    el = p.eligibility
    att, cov, counts, starts = (t("results_tt_attrition"), t("results_tt_covariates"), t("results_tt_counts"),
                                t("results_tt_starts"))
    ccw_counts = {r["strategy"]: r for r in counts.filter(pl.col("variant") == "ccw").iter_rows(named=True)} \
        if has(counts, "variant", "strategy") else {}
    n = ccw_counts.get("initiate", {}).get("clones")
    arms = ", ".join(p.treatment_arms) if p.treatment_arms else "any ketamine arm of the registry"
    out = _outcome_words(p)
    days = ", ".join(str(d) for d in p.risk_days)
    trunc = f"capped at the {100 * p.truncation:g}th percentile" if p.truncation else "not truncated"
    ncs = len(p.negative_controls)
    rows = [
        ("Causal question", p.question, f"emulated in the clinic data of this run ({fmt.count(n)} patients analysed)"),
        ("Eligibility",
         f"aged {el.min_age}{EN}{el.max_age}; a course on the {el.failed_arm} arm of at least {el.min_course_days} days that ended "
         f"in {' or '.join(r.replace('_', '-') for r in el.failure_end_reasons)}; no ketamine course in the "
         f"{el.washout_days} days before; a rating of the study instrument in the {el.baseline_window_days} days "
         "before; the first such failure only",
         f"the same rules on the exported courses and ratings: {_attrition_text(att, fmt)}"),
        ("Treatment strategies",
         f"(a) start ketamine ({arms}) on a day 0{EN}{p.grace_days} after time zero; (b) no ketamine during "
         "follow-up (staying on or switching within SSRIs allowed)",
         "the start date of the first ketamine course after time zero; " + _starts_summary(starts, p, fmt)),
        ("Assignment", "at random at time zero",
         "every patient cloned into both strategies at time zero; a clone is censored when it deviates from its "
         "strategy; the remaining clones weighted by the inverse probability of remaining uncensored, from a pooled "
         f"logistic model of the daily start probability on {_covariates_text(cov)} "
         f"({'stabilised' if p.stabilised else 'not stabilised'} where a common numerator applies; {trunc}); for "
         + ("\"start within\", the clones not started by the grace period's second-to-last day are followed past "
            "it by a model of the outcome after a start on its last day (none of them is up-weighted)"
            if p.after_grace == "outcome_model" else
            "\"start within\", only the patients who start on the last day of the grace period stand in for the "
            "clones censored then (the correct denominator)")),
        ("Time zero", "the date the SSRI course failed",
         "the end date of the failed course; eligibility, assignment (cloning) and the start of follow-up coincide there"),
        ("Follow-up", f"from time zero to {out}, loss to follow-up, or day {p.followup_days}, whichever comes first",
         "the same (loss to follow-up: the last rating of the study instrument), plus the artificial censoring of "
         "deviating clones"),
        ("Outcome", f"time to {out} on the study instrument",
         f"{out} as the study's endpoint rule defines it, timed from time zero; "
         + (f"{fmt.count(ccw_counts['initiate']['events'])} and {fmt.count(ccw_counts['never']['events'])} outcomes "
            "while following \"start\" and \"no ketamine\"" if "never" in ccw_counts else "counts not available")),
        ("Causal contrast",
         f"per-protocol effect: the risk of {out} by days {days} under each strategy, their difference and ratio, and "
         f"the difference in restricted mean time to {out} up to day {p.rmst_horizon_days}",
         "the per-protocol analogue from weighted Kaplan-Meier curves (start minus no ketamine); it refers to starts "
         "at the observed pattern of start days within the grace period, everyone not yet started starting on its "
         "last day"),
        ("Analysis plan",
         "per-protocol analysis: compare the risk curves of the patients who follow each strategy, adjusting for "
         "the baseline factors that predict following it",
         "clone-censor-weighting"
         + ("; past the grace period, the clones not started by its second-to-last day followed by a complementary "
            "log-log model of the outcome after a start (days since the start, start day, covariates)"
            if p.after_grace == "outcome_model" else "; past the grace period, the last-day starters weighted")
         + f"; 95% percentile intervals from {p.bootstrap_replicates} person-level bootstrap "
         f"replicates of the whole procedure (seed {seed}); the naive users-vs-users comparison beside it; E-values "
         f"of the risk ratios; {ncs} negative-control outcome(s) through the identical procedure and empirical "
         f"calibration (at least {p.min_negative_controls} usable controls, EASE below {p.max_ease:g})"),
    ]
    return Table(["Component", "Target trial", "Emulation in this run"], [Row(list(r)) for r in rows], align="lll",
                 wide=True)


def _calibration_status(cal: pl.DataFrame) -> dict[int, Mapping]:
    if not has(cal, "role", "day", "status"):
        return {}
    return {int(r["day"]): r for r in cal.filter(pl.col("role") == "primary").iter_rows(named=True)}


def _checklist(p: TargetTrialProtocol, t: Callable[[str], pl.DataFrame], prov: Mapping, fmt: Fmt) -> Table:
    """TARGET's items in its six sections, each filled from this run or marked not done / not applicable."""
    cal = _calibration_status(t("results_tt_calibration"))
    statuses = sorted({str(r["status"]) for r in cal.values()})
    ncs = len(p.negative_controls)
    cov = t("results_tt_covariates")
    att = t("results_tt_attrition")
    missing = att.sort("step_order").row(-1, named=True)["excluded"] if has(att, "step_order", "excluded") else None
    done, not_done, na = "done", "not done", "not applicable"
    items = [
        ("Abstract", "Identify the study as an emulation of a target trial", done,
         "this section's title and protocol table; an abstract is the authors' to write"),
        ("Introduction", "Background and the reason for emulating a target trial", not_done,
         "the authors' to write: the pipeline cannot know the clinical background"),
        ("Introduction", "State the causal question", done, p.question),
        ("Methods", "Data source(s)", done,
         f"the clinic exports of this run (batches in force: {prov.get('batches') or DASH})"),
        ("Methods", "Specify the target trial protocol", done,
         "the protocol table: eligibility, strategies, assignment, time zero, follow-up, outcome, causal contrast, "
         "analysis plan (from the study's [target_trial] settings, saved beside the report)"),
        ("Methods", "Describe how each protocol component is emulated with the data", done,
         "the protocol table's emulation column"),
        ("Methods", "Causal estimands", done,
         f"per-protocol risks by days {', '.join(map(str, p.risk_days))}, their difference and ratio, and the RMST "
         f"difference to day {p.rmst_horizon_days}; \"start within {p.grace_days} days\" at the observed start pattern"),
        ("Methods", "Identifying assumptions", done,
         "no unmeasured confounding of starting given the covariates below (exchangeability), every patient with a "
         "chance of starting and of not starting on every day of the grace period (positivity), well-defined "
         "strategies (consistency); loss to follow-up independent of the outcome given the covariates"),
        ("Methods", "Confounders adjusted for, and how measured", done,
         f"{_covariates_text(cov)} at time zero, from the export"),
        ("Methods", "Estimation method", done,
         "clone-censor-weighting with inverse-probability-of-censoring weights (pooled logistic start model), "
         "weighted Kaplan-Meier"),
        ("Methods", "How uncertainty is quantified", done if p.bootstrap_replicates else not_done,
         f"person-level bootstrap of the whole procedure, {p.bootstrap_replicates} replicates, seeded"
         if p.bootstrap_replicates else "target_trial.bootstrap_replicates is 0: no intervals"),
        ("Methods", "Missing data", done,
         f"patients missing a covariate excluded (complete cases: {fmt.count(missing)} here); no imputation"),
        ("Methods", "Sensitivity and bias analyses", done,
         "naive users-vs-users comparison, E-values, negative controls with empirical calibration"),
        ("Results", "Participant flow", done, "the attrition in the protocol table (eligibility row)"),
        ("Results", "Baseline characteristics", done if has(cov, "mean_all") else not_done,
         "the covariate table below, by whether ketamine was started within the grace period"
         if has(cov, "mean_all") else "not stored for this run"),
        ("Results", "Follow-up, outcomes and censoring per strategy", done,
         "the counts table: clones, artificial censorings, outcomes, other censorings"),
        ("Results", "Adherence to the strategies (start days)", done, "the start-day figure and summary"),
        ("Results", "An estimate with its interval for each estimand", done, "the results table"),
        ("Results", "Results of the bias analyses", done if ncs else "partly done",
         "E-values in the results table; calibration: " + (", ".join(statuses).replace("_", " ") if statuses else DASH)
         + ("" if ncs else " (no negative controls declared: target_trial.negative_controls)")),
        ("Discussion", "Interpretation, limitations and the remaining sources of bias", not_done,
         "the authors' to write; this report lists what adjustment cannot fix (E-values, calibration)"),
        ("Other", "Protocol registration, data and code availability, funding", na,
         f"settings (settings_id {prov.get('settings_id') or DASH}) and code version recorded with the run; "
         "registration and funding are outside the pipeline"),
    ]
    rows = [Row([str(i), s, item, status, how], "bad" if status == not_done else "")
            for i, (s, item, status, how) in enumerate(items, start=1)]
    return Table(["#", "Section", "Item", "Status", "In this run"], rows, align="rllll", wide=True)


def _counts_table(counts: pl.DataFrame, fmt: Fmt) -> Table | None:
    if not has(counts, "variant", "strategy", "clones"):
        return None
    model = "followed_by_model" in counts.columns and bool(counts["followed_by_model"].fill_null(0).sum())
    rows = [Row([_VARIANT.get(r["variant"], r["variant"]), _STRATEGY.get(r["strategy"], r["strategy"]),
                 fmt.count(r["clones"]), fmt.count(r["censored_deviation"]), fmt.count(r["events"]),
                 fmt.count(r["censored_other"])] + ([fmt.count(r["followed_by_model"] or 0)] if model else []))
            for r in counts.iter_rows(named=True)]
    return Table(["Design", "Strategy", "Clones (patients)", "Censored on deviating", "Outcomes", "Censored otherwise"]
                 + (["Followed by the outcome model after the grace period"] if model else []),
                 rows, align="llrrrr" + ("r" if model else ""))


def _weights_table(weights: pl.DataFrame) -> Table | None:
    if not has(weights, "strategy", "rows"):
        return None
    rows = [Row([_STRATEGY.get(r["strategy"], r["strategy"]), f"{r['rows']:,}",
                 *(f"{r[q]:.3g}" if ok(r[q]) else DASH for q in ("min", "p01", "p25", "p50", "p75", "p99", "max")),
                 f"{r['truncated']:,}"]) for r in weights.iter_rows(named=True)]
    return Table(["Strategy", "Person-days", "Min", "1%", "25%", "Median", "75%", "99%", "Max", "Capped"], rows)


def _covariate_table(cov: pl.DataFrame) -> Table | None:
    if not has(cov, "covariate", "mean_all"):
        return None
    rows = [Row([r["covariate"] + ("" if r["in_model"] else " (not in the model)"),
                 *(fmt_num(r[c], 2) for c in ("mean_all", "mean_started", "mean_not_started"))])
            for r in cov.iter_rows(named=True)]
    return Table(["Covariate (share, for an indicator)", "All patients", "Started within the grace period", "Did not"],
                 rows)


def _calibration(cal: pl.DataFrame, eff: _Effects, p: TargetTrialProtocol) -> dict[str, Any]:
    out: dict[str, Any] = {"table": None, "controls": None, "lines": []}
    primary = _calibration_status(cal)
    if not primary:
        out["lines"] = ["not available: no calibration was stored for this run"]
        return out
    rows = []
    for d in p.risk_days:
        r = primary.get(d)
        if r is None:
            continue
        rr = eff.get("rr", d) or {}
        if r["status"] == "not_evaluable":
            rows.append(Row([f"day {d}", fmt_hr_ci(rr.get("estimate"), rr.get("lower"), rr.get("upper")),
                             f"{r['n_usable']} of {r['n_controls']}", DASH, DASH, "not evaluable",
                             f"not evaluable: {r['n_usable']} usable negative controls, need {p.min_negative_controls}",
                             DASH], "ne"))
            continue
        calibrated = fmt_hr_ci(r["rr_calibrated"], r["rr_calibrated_lower"], r["rr_calibrated_upper"])
        rows.append(Row([f"day {d}", fmt_hr_ci(rr.get("estimate"), rr.get("lower"), rr.get("upper")),
                         f"{r['n_usable']} of {r['n_controls']}",
                         f"{fmt_num(r['null_mean'], 3)} / {fmt_num(r['null_sd'], 3)}", fmt_num(r["ease"], 3),
                         r["status"] + ("" if r["status"] == "pass" else f": {r['reason']}"),
                         calibrated + " (constant-error model)", f"{fmt_p(r['p_uncalibrated'])} / "
                         f"{fmt_p(r['p_calibrated'])}"], "" if r["status"] == "pass" else "bad"))
    out["table"] = Table(["Risk ratio", "Estimate (95% CI)", "Usable controls", "Null mean / SD (log)", "EASE",
                          "Gate", "Calibrated risk ratio (95% CI)", "p: uncalibrated / calibrated"], rows,
                         align="lrrrrlll", wide=True)
    ncs = cal.filter(pl.col("role") == "negative_control") if has(cal, "role") else pl.DataFrame()
    if ncs.height:
        rows = []
        for name in dict.fromkeys(ncs["outcome"].to_list()):
            cells = [name]
            for d in p.risk_days:
                r = eff.get("rr", d, outcome=name)
                cells.append(fmt_hr_ci(r.get("estimate"), r.get("lower"), r.get("upper")) if r else "not in the data")
            rows.append(Row(cells))
        out["controls"] = Table(["Negative control", *(f"Risk ratio by day {d}" for d in p.risk_days)], rows)
    return out


def _covers(r: Mapping | None, truth: float) -> str:
    if r is None or not (ok(r.get("lower")) and ok(r.get("upper"))):
        return DASH
    return "yes" if r["lower"] <= truth <= r["upper"] else "no"


def strategy_truth_table(eff: _Effects, p: TargetTrialProtocol, truth: Mapping | None) -> tuple[Table | None, str]:
    """On a simulated SSRI-failure cohort: each CCW estimate (and the naive one) next to the truth of
    the strategies as the protocol defines them (truth.json's ``strategy_truth``, simulated for every
    patient under each strategy). (None, reason) when there is no such truth, or it is for another
    protocol (grace period, days or horizon)."""
    st = truth.get("strategy_truth") if isinstance(truth, Mapping) else None
    if not isinstance(st, Mapping):
        return None, ""
    days = [int(d) for d in st.get("days", [])]
    if (st.get("grace_days"), st.get("horizon")) != (p.grace_days, p.rmst_horizon_days) or not set(p.risk_days) <= set(days):
        return None, (f"truth.json's strategy truth is for a {st.get('grace_days')}-day grace period, days {days} and a "
                      f"horizon of {st.get('horizon')} days, not this protocol's: not compared")
    rows = []
    for d in p.risk_days:
        true = float(st["rd"][str(d)])
        rd = eff.get("rd", d)
        rows.append(Row([f"risk difference by day {d}", f"{_points(true)} points", _diff_ci(rd), _covers(rd, true),
                         f"{_points(eff.value('rd', d, 'naive'))} points"]))
    true = float(st["rmst_diff"])
    rm = eff.get("rmst_diff", p.rmst_horizon_days)
    rows.append(Row([f"restricted mean difference to day {p.rmst_horizon_days}", f"{_signed(true)} days",
                     _diff_ci(rm, 1.0, " days"), _covers(rm, true),
                     f"{_signed(v)} days" if ok(v := eff.value('rmst_diff', p.rmst_horizon_days, 'naive')) else DASH]))
    return Table(["Measure", "Truth (strategies simulated)", f"CCW estimate ({_CI})", "Interval covers the truth",
                  "Naive estimate"], rows, align="lrrrr"), ""


def _title(p: TargetTrialProtocol) -> str:
    return f"Target trial: start {_drug(p)} within {p.grace_days} days of SSRI failure, or no ketamine?"


def _trial(t: Callable[[str], pl.DataFrame], settings: Mapping | None) -> tuple[TargetTrialProtocol, _Effects] | None:
    """The run's protocol and effects, or None when it has no target trial (no results_tt_effects
    rows or no [target_trial] in its settings)."""
    effects = t("results_tt_effects")
    spec = settings.get("target_trial") if isinstance(settings, Mapping) else None
    if not has(effects, "variant", "outcome", "measure", "day", "estimate") or not isinstance(spec, Mapping):
        return None
    if "after_grace" not in spec:  # a run from before the setting existed used the last-day weights
        spec = {**spec, "after_grace": "last_day_weights"}
    return TargetTrialProtocol.model_validate(spec), _Effects(effects)


def target_trial_answer(t: Callable[[str], pl.DataFrame], settings: Mapping | None, fmt: Fmt) -> dict[str, Any] | None:
    """The section's answer and results table as JSON-able records (``title``, ``columns``, ``rows``,
    ``sentences``), drawn by the same functions as the page, for the Prefect artifact; None when the
    run has no target trial."""
    found = _trial(t, settings)
    if found is None:
        return None
    p, eff = found
    table = _results_table(eff, p, fmt)
    return {"title": _title(p), "columns": list(table.columns), "rows": [list(r.cells) for r in table.rows],
            "sentences": _answer(eff, p, fmt, t("results_tt_starts"))}


def target_trial_section(t: Callable[[str], pl.DataFrame], settings: Mapping | None, prov: Mapping,
                         fmt: Fmt, truth: Mapping | None = None) -> dict[str, Any] | None:
    """What the template shows of the run's target trial; None when the run has none (no
    results_tt_effects rows or no [target_trial] in its settings)."""
    found = _trial(t, settings)
    if found is None:
        return None
    p, eff = found
    curves_frame = t("results_tt_curves")
    curves = []
    if has(curves_frame, "variant", "strategy", "day", "risk"):
        for variant in ("ccw", "naive"):
            for strategy in ("initiate", "never"):
                c = curves_frame.filter((pl.col("variant") == variant) & (pl.col("strategy") == strategy)).sort("day")
                if c.height:
                    curves.append(StrategyCurve(_CURVE[variant, strategy],
                                                strategy_style(strategy, naive=variant == "naive"),
                                                c["day"].to_numpy(), c["risk"].to_numpy()))
    starts = t("results_tt_starts")
    out_words = _outcome_words(p)
    truth_table, truth_reason = strategy_truth_table(eff, p, truth)
    return {
        "truth": truth_table, "truth_reason": truth_reason,
        "title": _title(p),
        "answer": _answer(eff, p, fmt, starts),
        "results": _results_table(eff, p, fmt),
        "protocol": _protocol_table(p, t, fmt, settings.get("random_seed")),
        "checklist": _checklist(p, t, prov, fmt),
        "curves": strategy_curves_figure(curves, days=p.risk_days, grace_days=p.grace_days,
                                         xlabel="days since the SSRI failure (time zero)",
                                         ylabel=f"share with {out_words}") if curves else None,
        "starts": start_days_figure(starts["day"].to_numpy(), starts["starters"].to_numpy(),
                                    starts["at_risk"].to_numpy(), xlabel="day of the first ketamine dose after "
                                    "time zero") if has(starts, "day", "starters", "at_risk") else None,
        "starts_text": _starts_summary(starts, p, fmt),
        "counts": _counts_table(t("results_tt_counts"), fmt),
        "weights": _weights_table(t("results_tt_weights")),
        "covariates": _covariate_table(t("results_tt_covariates")),
        "calibration": _calibration(t("results_tt_calibration"), eff, p),
        "grace_days": p.grace_days,
        "outcome": out_words,
        "bootstrap": p.bootstrap_replicates,
        "min_controls": p.min_negative_controls,
        "max_ease": f"{p.max_ease:g}",
    }
