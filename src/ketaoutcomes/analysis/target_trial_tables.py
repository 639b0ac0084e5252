"""Contracts of the ``results_tt_*`` tables: the target-trial emulation of a study that declares one
(:mod:`ketaoutcomes.analysis.target_trial`). A study without ``[target_trial]`` writes none of them.

Strategies: ``initiate`` (start ketamine within the grace period) and ``never`` (no ketamine during
follow-up). Variants: ``ccw`` (clone-censor-weighting with the correct grace-period denominator, the
estimate) and ``naive`` (users vs users from time zero, unweighted: the design the trial replaces,
shown beside it). Intervals are 95% percentile intervals of the person-level bootstrap of the whole
procedure (``target_trial.bootstrap_replicates`` replicates, seeded by the study's random_seed).
"""

from __future__ import annotations

from ketaoutcomes.table_contract import RUN_COLUMNS, TableContract, col, contracts_by_name

__all__ = ["TT_CONTRACTS"]

_VARIANT = col("variant", "VARCHAR", False, "ccw (clone-censor-weighting, correct grace-period denominator) or naive "
                                            "(users vs users from time zero, unweighted)")
_STRATEGY = col("strategy", "VARCHAR", False, "initiate (start ketamine within the grace period) or never (no ketamine "
                                              "during follow-up)")
_BOOT = "95% percentile interval of the person-level bootstrap"

RESULTS_TT_EFFECTS = TableContract(
    "results_tt_effects",
    "Target trial: risks per strategy, risk difference and ratio (initiate vs never) at each protocol risk day, "
    "restricted mean time to the outcome per strategy and its difference, per variant and outcome (the primary "
    "outcome, or a negative control run through the identical procedure)",
    columns=(_VARIANT,
             col("outcome", "VARCHAR", False, "primary (the protocol's outcome) or the name of a negative control"),
             col("measure", "VARCHAR", False, "risk_initiate, risk_never, rd (initiate - never), rr (initiate / never) "
                                              "at a risk day; rmst_initiate, rmst_never, rmst_diff (days, initiate - "
                                              "never) at the RMST horizon"),
             col("day", "BIGINT", False, "Day after time zero (a risk day, or the RMST horizon)"),
             col("estimate", "DOUBLE", True, "The estimate (null: not estimable, e.g. a ratio over a zero risk)"),
             col("se", "DOUBLE", True, "SD of the bootstrap replicates (null: no bootstrap)"),
             col("lower", "DOUBLE", True, f"Lower limit of the {_BOOT}"),
             col("upper", "DOUBLE", True, f"Upper limit of the {_BOOT}"),
             col("replicates", "BIGINT", True, "Bootstrap replicates that gave a value"),
             col("e_value", "DOUBLE", True, "rr rows of the primary CCW estimate: E-value of the risk ratio "
                                            "(VanderWeele & Ding)"),
             col("e_value_ci", "DOUBLE", True, "rr rows of the primary CCW estimate: E-value of the CI limit nearer 1 "
                                               "(1: the interval contains 1)"),
             *RUN_COLUMNS),
    key=("run_id", "variant", "outcome", "measure", "day"),
)

RESULTS_TT_CURVES = TableContract(
    "results_tt_curves",
    "Target trial: the risk (cumulative incidence) of the outcome per strategy and day, weighted Kaplan-Meier (ccw) "
    "or unweighted (naive)",
    columns=(_VARIANT, _STRATEGY, col("day", "BIGINT", False, "Day after time zero"),
             col("risk", "DOUBLE", False, "1 - survival by the end of the day"), *RUN_COLUMNS),
    key=("run_id", "variant", "strategy", "day"),
)

RESULTS_TT_WEIGHTS = TableContract(
    "results_tt_weights",
    "Target trial: distribution of the inverse-probability-of-censoring weights per strategy over the person-days "
    "in the risk sets (ccw)",
    columns=(_VARIANT, _STRATEGY,
             col("rows", "BIGINT", False, "Person-days in the risk sets"),
             *(col(q, "DOUBLE", True, f"Weight: {w}") for q, w in (
                 ("min", "minimum"), ("p01", "1st percentile"), ("p25", "25th percentile"), ("p50", "median"),
                 ("p75", "75th percentile"), ("p99", "99th percentile"), ("max", "maximum"))),
             col("truncated", "BIGINT", False, "Person-days whose weight was capped (target_trial.truncation)"),
             *RUN_COLUMNS),
    key=("run_id", "variant", "strategy"),
)

RESULTS_TT_COUNTS = TableContract(
    "results_tt_counts",
    "Target trial: per variant and strategy, the clones (patients), those censored for deviating from the strategy "
    "(artificial censoring), the outcomes and the other censorings (loss, administrative end)",
    columns=(_VARIANT, _STRATEGY, col("clones", "BIGINT", False, "Clones in the strategy (naive: patients in the group)"),
             col("censored_deviation", "BIGINT", False, "Censored on deviating from the strategy"),
             col("events", "BIGINT", False, "Outcomes while following the strategy"),
             col("censored_other", "BIGINT", False, "Censored otherwise (loss to follow-up, administrative end)"),
             col("followed_by_model", "BIGINT", True,
                 "Clones in follow-up after the grace period and not started before its last day, whose outcome "
                 "after it comes from the post-start outcome model (0 without one; null in runs before this column)"),
             *RUN_COLUMNS),
    key=("run_id", "variant", "strategy"),
)

RESULTS_TT_STARTS = TableContract(
    "results_tt_starts",
    "Target trial: the observed distribution of ketamine start days within the grace period (the estimand of "
    "'start within the grace period' depends on it)",
    columns=(col("day", "BIGINT", False, "Day after time zero (0 to the grace period's last day)"),
             col("starters", "BIGINT", False, "Patients whose first ketamine dose fell on that day, before the outcome"),
             col("at_risk", "BIGINT", False, "Patients not yet started and still in follow-up that morning"),
             col("share", "DOUBLE", False, "starters / every patient of the trial"), *RUN_COLUMNS),
    key=("run_id", "day"),
)

RESULTS_TT_ATTRITION = TableContract(
    "results_tt_attrition",
    "Target trial: eligibility step by step (the derivation's steps, then the exclusion of patients missing a "
    "covariate of the start model)",
    columns=(col("step_order", "BIGINT", False, "Order of the step"), col("step", "VARCHAR", False, "The rule"),
             col("excluded", "BIGINT", True, "Patients excluded by the rule (null: a row that only counts, e.g. the "
                                             "patients in the data)"),
             col("remaining", "BIGINT", False, "Left after it"), *RUN_COLUMNS),
    key=("run_id", "step_order"),
)

RESULTS_TT_COVARIATES = TableContract(
    "results_tt_covariates",
    "Target trial: the baseline covariates of the start (censoring) model as coded (a text covariate as one "
    "indicator per level but the first), with their means by whether ketamine was started within the grace period",
    columns=(col("covariate", "VARCHAR", False, "Covariate, or covariate_level for an indicator"),
             col("in_model", "BOOLEAN", False, "False: the same for every patient, left out"),
             col("mean_all", "DOUBLE", True, "Mean (share, for an indicator) among the trial's patients"),
             col("mean_started", "DOUBLE", True, "Mean among those who started ketamine within the grace period"),
             col("mean_not_started", "DOUBLE", True, "Mean among the others"), *RUN_COLUMNS),
    key=("run_id", "covariate"),
)

RESULTS_TT_CALIBRATION = TableContract(
    "results_tt_calibration",
    "Target trial: negative controls and empirical calibration of the CCW risk ratio at each risk day (OHDSI's "
    "method; constant-error model for the calibrated CI)",
    columns=(col("outcome", "VARCHAR", False, "primary, or the name of a negative control"),
             col("role", "VARCHAR", False, "primary or negative_control"),
             col("day", "BIGINT", False, "Risk day"),
             col("log_rr", "DOUBLE", True, "log risk ratio initiate / never (CCW)"),
             col("se", "DOUBLE", True, "SD of the bootstrap replicates' log risk ratios"),
             col("usable", "BOOLEAN", False, "A finite log_rr and a positive se (a control counts towards the null)"),
             col("n_controls", "BIGINT", True, "primary: negative controls declared in the protocol"),
             col("n_usable", "BIGINT", True, "primary: usable negative controls at this day"),
             col("null_mean", "DOUBLE", True, "primary: mean of the systematic-error null (log scale)"),
             col("null_sd", "DOUBLE", True, "primary: SD of the systematic-error null (log scale)"),
             col("ease", "DOUBLE", True, "primary: expected absolute systematic error under the null"),
             col("status", "VARCHAR", True, "primary: pass, fail (EASE >= target_trial.max_ease) or not_evaluable "
                                            "(fewer usable controls than target_trial.min_negative_controls: no "
                                            "calibrated result)"),
             col("reason", "VARCHAR", True, "primary: why the gate gave its status"),
             col("error_model", "VARCHAR", True, "primary: constant (systematic error constant in the effect size)"),
             col("p_uncalibrated", "DOUBLE", True, "primary: two-sided p of log_rr / se"),
             col("p_calibrated", "DOUBLE", True, "primary: calibrated two-sided p (null when not evaluable)"),
             col("rr_calibrated", "DOUBLE", True, "primary: the risk ratio with the null's mean removed (constant-error "
                                                  "model; null when not evaluable)"),
             col("rr_calibrated_lower", "DOUBLE", True, "primary: lower limit of the calibrated 95% CI (risk ratio)"),
             col("rr_calibrated_upper", "DOUBLE", True, "primary: upper limit of the calibrated 95% CI (risk ratio)"),
             *RUN_COLUMNS),
    key=("run_id", "outcome", "day"),
)

#: The target-trial contracts by table name.
TT_CONTRACTS: dict[str, TableContract] = contracts_by_name((
    RESULTS_TT_EFFECTS, RESULTS_TT_CURVES, RESULTS_TT_WEIGHTS, RESULTS_TT_COUNTS, RESULTS_TT_STARTS,
    RESULTS_TT_ATTRITION, RESULTS_TT_COVARIATES, RESULTS_TT_CALIBRATION,
))
