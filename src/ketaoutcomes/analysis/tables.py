"""Contracts of the ``results_*`` tables the analysis writes (the frames of
:func:`~ketaoutcomes.analysis.run_study`: :func:`~ketaoutcomes.analysis.analyze`, :func:`~ketaoutcomes.analysis.secondary_analyses`,
:func:`~ketaoutcomes.analysis.relapse_analyses` and :func:`~ketaoutcomes.analysis.modifier_analyses`; the
target trial's ``results_tt_*`` are declared in :mod:`~ketaoutcomes.analysis.target_trial_tables`),
and :data:`CONTRACTS`: these plus derive's (:mod:`ketaoutcomes.derive.tables`) by table name.

Every column a frame may carry is declared here, with its DuckDB type and whether it may be null
(an estimate that could not be computed is null); the key says which columns identify a row.
:func:`ketaoutcomes.warehouse.write_table` enforces the contract at write time: a frame with a
column not declared here, a missing non-nullable column, a value that does not convert without
loss, a null in a non-nullable column or a duplicate key is an error. A new result table or
column is declared here first. Descriptions are given where a column's name does not say it.
See :mod:`ketaoutcomes.table_contract`.
"""

from __future__ import annotations

from ketaoutcomes.analysis.target_trial_tables import TT_CONTRACTS
from ketaoutcomes.derive.tables import CONTRACTS as DERIVE_CONTRACTS
from ketaoutcomes.table_contract import RUN_COLUMNS, ColumnContract, TableContract, col, contracts_by_name

__all__ = ["ANALYSIS_CONTRACTS", "CONTRACTS"]


def _doubles(*names: str) -> tuple[ColumnContract, ...]:
    """Estimates: DOUBLE, null when not computable (each described in :data:`_SAID`)."""
    return tuple(col(n, "DOUBLE", True, _SAID[n]) for n in names)


#: The CI level, said once: every interval is at 1 - models.alpha of the study settings.
_CI = "CI (1 - models.alpha: 95% by default)"
#: What the columns that recur across tables hold (a table declaring one of them otherwise says so).
_SAID = {
    "coef": "Log hazard ratio (the model coefficient)",
    "hr": "Hazard ratio, exp(coef)",
    "se": "Standard error of coef",
    "z": "Wald statistic, coef / se",
    "p_value": "Two-sided p-value",
    "hr_lower": f"Lower limit of the hazard ratio's {_CI}",
    "hr_upper": f"Upper limit of the hazard ratio's {_CI}",
    "median": "Median days to the event (null: not reached)",
    "median_lower": f"Lower limit of the median's {_CI} (null: not estimable)",
    "median_upper": f"Upper limit of the median's {_CI} (null: not reached)",
    "rate": "Share (0-1) with the event (null: not estimable)",
    "mean_target_before": "Mean of the covariate (share, for a level) in the route, before weighting",
    "mean_comparator_before": "Mean of the covariate (share, for a level) in the reference arm, before weighting",
    "smd_before": "Standardized mean difference route - reference before weighting (over sd_pooled)",
    "mean_target_after": "Weighted mean (or mean over the matched patients) in the route",
    "mean_comparator_after": "Weighted mean (or mean over the matched patients) in the reference arm",
    "smd_after": "Standardized mean difference after weighting (over the same sd_pooled)",
    "sd_pooled": "Unweighted pooled SD of the covariate in both arms, before weighting",
    "abs_smd_before": "|smd_before|",
    "abs_smd_after": "|smd_after|; the gate compares its largest in-model value with propensity.max_smd",
    "loglik_interaction": "Log partial likelihood of the model with the route x modifier interaction",
    "loglik_main": "Log partial likelihood of the model with main effects only (same rows)",
}


def _bounds(of: str) -> tuple[ColumnContract, ColumnContract]:
    """``lower`` and ``upper``: the CI of ``of``."""
    return (col("lower", "DOUBLE", True, f"Lower limit of the {_CI} of {of}"),
            col("upper", "DOUBLE", True, f"Upper limit of the {_CI} of {of}"))


#: A Cox-type model's summary per term (null when the term could not be estimated).
_SUMMARY = (col("term", "VARCHAR", False, "Model term, e.g. ARM[ketamine_iv] (vs the reference level)"),
            *_doubles("coef", "hr", "se", "z", "p_value", "hr_lower", "hr_upper"))
#: The estimates of a Cox-type summary: what a failed diagnostics gate withholds.
_ESTIMATES = ("coef", "hr", "se", "z", "p_value", "hr_lower", "hr_upper")
_PARAMCD = col("paramcd", "VARCHAR", False, "Endpoint (ADTTE PARAMCD)")
#: The arm's label in the registries in force (an export's arms.csv included); null for a code
#: that is not an arm.
ARM_LABEL = col("arm_label", "VARCHAR", True, "The arm's label in the arm registry in force")
#: A model term's parts, so nobody parses ARM[...] strings.
_TERM_PARTS = (col("variable", "VARCHAR", False, "The term's covariate (ARM, AGE, SEX, ...)"),
               col("level", "VARCHAR", True, "The level of a categorical covariate (null: numeric)"),
               col("arm", "VARCHAR", True, "The arm an ARM term compares with the reference arm (null otherwise)"),
               ARM_LABEL)
_GROUP = col("group", "VARCHAR", False, "Arm")
#: The diagnostics gate of a propensity-score comparison.
_DIAGNOSTICS = col("diagnostics", "VARCHAR", False,
                   "Gate verdict of the route's propensity-score comparison: pass/fail")
_GATE_REASONS = col("gate_reasons", "VARCHAR", True, "Why the gate failed ('; '-separated; null when it passed)")
_TARGET = col("target", "VARCHAR", False, "Route compared with the reference arm")
_COMPARATOR = col("comparator", "VARCHAR", False, "The reference arm (cohort.reference_arm)")
_WEIGHTING = col("weighting", "VARCHAR", False, "iptw, overlap or matching")
_TIME = col("time", "DOUBLE", False, "Days since the time origin (ADTTE STARTDT)")
_NOTES = col("notes", "VARCHAR", True, "Remarks on the fit ('; '-separated; null or empty: none)")
_NOTE = col("note", "VARCHAR", True, "Why a value is missing or to be read with care (null: nothing to say)")
_CONVERGED = col("converged", "BOOLEAN", False, "Whether the model's fit converged")
_N_EVENTS = col("n_events", "BIGINT", False, "Events among them")
_CHI2 = col("chi2", "DOUBLE", True, "Test statistic (chi-square)")
_DF = col("df", "BIGINT", True, "Degrees of freedom of the test")
_P = col("p_value", "DOUBLE", True, "p-value of the test")
_CAUSE = col("cause", "VARCHAR", False, "'relapse', 'stopped: switch, new treatment or dropout' (the competing "
                                        "event), or 'event-free'")
_SAFETY_EVENT = col("event", "VARCHAR", False, "Adverse event (dissociation, nausea, dizziness, headache, "
                                               "hypertension), dissociation_cadss (CADSS above secondary.cadss_cutoff), "
                                               "bp_rise_40_25 or bp_180_110")

RESULTS_KM = TableContract(
    "results_km",
    "Kaplan-Meier curve per endpoint and arm: one row per distinct time, with the 95% CI",
    columns=(_GROUP, _TIME, col("n_risk", "BIGINT", False, "Patients at risk just before time"),
             col("n_event", "BIGINT", False, "Events at time"), col("n_censor", "BIGINT", False, "Censored at time"),
             col("survival", "DOUBLE", False, "Kaplan-Meier estimate: share still without the event after time"),
             *_bounds("survival (log transform, as R's survfit)"), _PARAMCD, *RUN_COLUMNS),
    key=("run_id", "paramcd", "group", "time"),
    arm_column="group",
)

RESULTS_KM_MEDIAN = TableContract(
    "results_km_median",
    "Median time to the event per endpoint and arm, with its CI (null: not reached)",
    columns=(_GROUP, col("n", "BIGINT", False, "Patients of the arm in the endpoint's population"),
             col("events", "BIGINT", False, "Events among them"),
             *_doubles("median", "median_lower", "median_upper"), _PARAMCD, *RUN_COLUMNS),
    key=("run_id", "paramcd", "group"),
    arm_column="group",
)

RESULTS_LOGRANK = TableContract(
    "results_logrank",
    "Log-rank test across arms per endpoint",
    columns=(_PARAMCD, _CHI2, col("df", "BIGINT", True, "Degrees of freedom (arms - 1)"), _P,
             col("groups", "VARCHAR", False, "Observed and expected events per arm (JSON)"), *RUN_COLUMNS),
    key=("run_id", "paramcd"),
)

RESULTS_COX = TableContract(
    "results_cox",
    "Hazard ratios per endpoint, model (adjusted, naive, and the propensity-score model: iptw/overlap/matching), term",
    columns=(*_SUMMARY, *_TERM_PARTS, _PARAMCD,
             col("model", "VARCHAR", False, "adjusted, naive, or the propensity-score model: iptw, overlap or "
                                            "matching (robust se)"),
             col("diagnostics", "VARCHAR", True, "Propensity-score models: the gate's verdict pass/fail (null for "
                                                 "adjusted and naive)"),
             _GATE_REASONS, *RUN_COLUMNS),
    key=("run_id", "paramcd", "model", "term"),
    arm_column="arm",
    withheld=_ESTIMATES,
)

RESULTS_COX_FIT = TableContract(
    "results_cox_fit",
    "Fit of each adjusted and naive Cox model per endpoint: rows used, events, likelihood-ratio test, concordance",
    columns=(_PARAMCD, col("model", "VARCHAR", False, "adjusted or naive"),
             col("n", "BIGINT", False, "Patients in the model"), _N_EVENTS,
             col("n_dropped", "BIGINT", False, "Rows left out (missing covariates)"),
             col("loglik", "DOUBLE", True, "Log partial likelihood at the estimates"),
             col("lr_chi2", "DOUBLE", True, "Likelihood-ratio test of the model against no covariates: statistic"),
             col("lr_df", "BIGINT", False, "Its degrees of freedom"), col("lr_p", "DOUBLE", True, "Its p-value"),
             col("concordance", "DOUBLE", True, "Harrell's concordance (C)"), _CONVERGED,
             col("strata", "VARCHAR", True, "Strata column (null: none)"),
             col("covariates", "VARCHAR", False, "The model's covariates, comma-separated"),
             col("reference_levels", "VARCHAR", False, "Reference level of each categorical covariate, e.g. "
                                                       "ARM=ssri, SEX=F"),
             _NOTES, *RUN_COLUMNS),
    key=("run_id", "paramcd", "model"),
)

RESULTS_PS = TableContract(
    "results_ps",
    "Propensity-score comparison of each route with the reference arm per endpoint: diagnostics and the gate",
    columns=(_PARAMCD, _TARGET, _COMPARATOR, _WEIGHTING,
             col("truncation", "DOUBLE", True, "Cap on the stabilised IPTW weights (null: none)"),
             col("n_target", "BIGINT", False, "Patients of the route in the propensity model"),
             col("n_comparator", "BIGINT", False, "Patients of the reference arm in the propensity model"),
             col("n_dropped", "BIGINT", False, "Patients of the two arms left out (missing covariates)"),
             col("n_truncated", "BIGINT", False, "Weights set to the cap (truncation)"),
             col("ess_target", "DOUBLE", True, "Effective sample size of the route, (sum w)^2 / sum w^2 (matching: "
                                               "matched patients)"),
             col("ess_comparator", "DOUBLE", True, "Effective sample size of the reference arm"),
             col("equipoise", "DOUBLE", True, "Share of patients with a preference score in the equipoise bounds"),
             col("max_abs_smd_after", "DOUBLE", True, "Largest |SMD| after weighting over the balance rows in the gate "
                                                      "(results_balance.in_gate; null: an SMD could not be computed)"),
             col("converged", "BOOLEAN", False, "Whether the propensity model converged to a finite fit"),
             _DIAGNOSTICS, _GATE_REASONS,
             col("notes", "VARCHAR", True, "Reference levels, dropped rows, truncated weights, convergence"),
             col("n_matched_target", "BIGINT", True, "Matching: patients of the route in a matched pair (0 otherwise)"),
             col("n_matched_comparator", "BIGINT", True, "Matching: patients of the reference arm in a matched pair "
                                                         "(0 otherwise)"),
             col("ps_model", "VARCHAR", True, "The propensity model (propensity.model): ridge with its prior variance, "
                                              "or logistic (null: a run before the setting existed)"),
             col("levels_left_out", "VARCHAR", True, "Covariate levels rarer than propensity.min_level_prevalence, "
                                                     "left out of the propensity model and the balance gate, with "
                                                     "their patients (null: none)"),
             *RUN_COLUMNS),
    key=("run_id", "paramcd", "target"),
    arm_column="target",
)

RESULTS_BALANCE = TableContract(
    "results_balance",
    "Covariate balance per endpoint, route and covariate: standardized mean differences before and after weighting",
    columns=(_TARGET, _COMPARATOR, _WEIGHTING,
             col("diagnostics_passed", "BOOLEAN", False, "The route's gate verdict (results_ps.diagnostics = 'pass')"),
             col("covariate", "VARCHAR", False, "Design column, e.g. AGE or SEX[M]; SEX[F or U]: the reference level "
                                                "together with the rare levels left out, as the propensity model codes them"),
             col("variable", "VARCHAR", False, "The covariate (SEX of SEX[M])"),
             col("level", "VARCHAR", True, "The level of a categorical covariate (M of SEX[M], F or U of SEX[F or U]); "
                                           "null: numeric"),
             *_doubles("mean_target_before", "mean_comparator_before", "smd_before", "mean_target_after",
                       "mean_comparator_after", "smd_after", "sd_pooled"),
             col("in_model", "BOOLEAN", False, "False for the reference level of a categorical covariate and for a "
                                               "level left out as rare (in_gate false)"),
             col("smd_se_after", "DOUBLE", True, "SE of smd_after"),
             col("smd_p_after", "DOUBLE", True, "p-value that |SMD| after weighting exceeds the threshold"),
             col("in_gate", "BOOLEAN", True, "Whether the row counts in the balance gate: false for a level rarer than "
                                             "propensity.min_level_prevalence (null: a run before the rule existed)"),
             *_doubles("abs_smd_before", "abs_smd_after"), _PARAMCD, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "covariate"),
    arm_column="target",
)

RESULTS_PH = TableContract(
    "results_ph",
    "Proportional-hazards test (R's cox.zph) of the adjusted Cox model per endpoint: per term and GLOBAL",
    columns=(col("term", "VARCHAR", False, "Covariate tested (all its levels at once), or GLOBAL for the model"),
             _CHI2, _DF, col("p_value", "DOUBLE", True, "p-value (small: the hazard ratio changes over time)"),
             _NOTE, _PARAMCD, col("error", "VARCHAR", True, "Why the test could not be computed (null: it was)"),
             *RUN_COLUMNS),
    key=("run_id", "paramcd", "term"),
)

RESULTS_RMST = TableContract(
    "results_rmst",
    "Restricted mean time without the event up to the horizon, per endpoint and arm",
    columns=(_GROUP, col("horizon", "DOUBLE", False, "Days (models.rmst_horizon_days)"),
             col("rmst", "DOUBLE", False, "Mean days without the event up to the horizon (area under the KM curve)"),
             col("se", "DOUBLE", False, "Standard error of rmst"),
             col("lower", "DOUBLE", False, f"Lower limit of the {_CI} of rmst"),
             col("upper", "DOUBLE", False, f"Upper limit of the {_CI} of rmst"), _PARAMCD, *RUN_COLUMNS),
    key=("run_id", "paramcd", "group"),
    arm_column="group",
)

RESULTS_KM_WEIGHTED = TableContract(
    "results_km_weighted",
    "Weighted (or matched) Kaplan-Meier curves per endpoint and route pair, with the pair's gate verdict",
    columns=(col("group", "VARCHAR", False, "Arm of the curve: the route (target) or the reference arm"), _TIME,
             col("n_risk", "DOUBLE", False, "Weighted number at risk just before time"),
             col("n_event", "DOUBLE", False, "Weighted number of events at time"),
             col("n_censor", "DOUBLE", False, "Weighted number censored at time"),
             col("survival", "DOUBLE", False, "Weighted Kaplan-Meier estimate: share still without the event"),
             col("std_err", "DOUBLE", True, "Standard error of survival"), *_bounds("survival"), _PARAMCD,
             _DIAGNOSTICS, _GATE_REASONS, _TARGET, _WEIGHTING, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "group", "time"),
    arm_column="group",
    withheld=("n_risk", "n_event", "n_censor", "survival", "std_err", "lower", "upper"),
)

RESULTS_KM_WEIGHTED_MEDIAN = TableContract(
    "results_km_weighted_median",
    "Medians of the weighted (or matched) Kaplan-Meier curves per endpoint, route pair and arm",
    columns=(col("group", "VARCHAR", False, "Arm: the route (target) or the reference arm"),
             col("n", "BIGINT", False, "Patients of the arm in the pair's analysis"),
             col("events", "DOUBLE", False, "Weighted number of events"),
             *_doubles("median", "median_lower", "median_upper"), _PARAMCD, _DIAGNOSTICS, _GATE_REASONS, _TARGET,
             _WEIGHTING, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "group"),
    arm_column="group",
    withheld=("events", "median", "median_lower", "median_upper"),
)

RESULTS_CONTRASTS = TableContract(
    "results_contrasts",
    "Primary contrasts of each route vs the reference arm, route - reference, read off the propensity-weighted (or "
    "matched) Kaplan-Meier curves of the endpoints that list them (time to response), with bootstrap CIs "
    "(patients resampled, propensity model refitted in each replicate; a bootstrap score interval for a share by a "
    "day, percentile otherwise: see interval) and the pair's gate verdict",
    columns=(_PARAMCD, _TARGET, _COMPARATOR, _WEIGHTING,
             col("estimand", "VARCHAR", False, "risk_d<day> (share with the event by the day), median, or rmst "
                                               "(restricted mean days without the event up to day)"),
             col("measure", "VARCHAR", False, "risk, median or rmst"),
             col("day", "DOUBLE", True, "The day of a risk (models.contrast_days); the horizon of the rmst: "
                                        "models.rmst_horizon_days, or the last day with enough patients of each arm "
                                        "at risk (models.contrast_min_at_risk, contrast_min_at_risk_share) when "
                                        "that comes first; null for the median"),
             col("value_target", "DOUBLE", True, "The route's value on its weighted curve (a share 0-1, or days; "
                                                 "null: not reached or not estimable)"),
             col("value_comparator", "DOUBLE", True, "The reference arm's value on its weighted curve"),
             col("difference", "DOUBLE", True, "value_target - value_comparator (null: not estimable)"),
             col("lower", "DOUBLE", True, f"Lower limit of the bootstrap {_CI} of the difference (null: no "
                                          "bootstrap, or unbounded: see note)"),
             col("upper", "DOUBLE", True, f"Upper limit of the bootstrap {_CI} of the difference"),
             col("se", "DOUBLE", True, "SD of the difference over the bootstrap replicates used"),
             col("n_boot", "BIGINT", False, "Bootstrap replicates in the interval (0: no bootstrap)"),
             col("n_boot_failed", "BIGINT", False, "Replicates left out: an arm without weighted patients"),
             col("interval", "VARCHAR", True, "How the interval was computed: bootstrap score interval (each arm's "
                                             "Wilson interval at its bootstrap effective size, combined by MOVER) for "
                                             "a share by a day, percentile bootstrap for the median and rmst (null: no "
                                             "interval)"),
             _DIAGNOSTICS, _GATE_REASONS, _NOTE, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "estimand"),
    arm_column="target",
    withheld=("value_target", "value_comparator", "difference", "lower", "upper", "se"),
)

RESULTS_EVALUES = TableContract(
    "results_evalues",
    "E-values (VanderWeele & Ding 2017) of the primary estimates: how strongly an unmeasured confounder would "
    "have to be associated with both the route and the outcome (risk ratio, each) to explain the estimate, or its "
    "CI limit nearer the null, away. For the risk ratios by models.contrast_days from the weighted curves (bootstrap "
    "CIs) and the weighted HR (converted to a risk ratio when the outcome is common)",
    columns=(_PARAMCD, _TARGET, _COMPARATOR, _WEIGHTING,
             col("estimand", "VARCHAR", False, "rr_d<day> (risk ratio by the day, route / reference) or hr (the "
                                               "weighted hazard ratio)"),
             col("scale", "VARCHAR", False, "risk_ratio or hazard_ratio"),
             col("day", "DOUBLE", True, "The day of a risk ratio; null for the HR"),
             col("estimate", "DOUBLE", True, "The estimate on its own scale (null: not estimable, see note)"),
             col("lower", "DOUBLE", True, f"Lower limit of its {_CI} (bootstrap percentile for a risk ratio, robust "
                                          "Wald for the HR)"),
             col("upper", "DOUBLE", True, f"Upper limit of its {_CI}"),
             col("outcome_share", "DOUBLE", True, "HR only: the larger of the two arms' weighted shares with the "
                                                  "event at the end of follow-up"),
             col("rare", "BOOLEAN", True, "HR only: outcome_share < 0.15, so the HR is taken as a risk ratio "
                                          "(false: converted with (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR)))"),
             col("rr", "DOUBLE", True, "The estimate on the risk-ratio scale"),
             col("rr_lower", "DOUBLE", True, "Lower CI limit on the risk-ratio scale"),
             col("rr_upper", "DOUBLE", True, "Upper CI limit on the risk-ratio scale"),
             col("evalue", "DOUBLE", True, "E-value of the estimate: RR + sqrt(RR (RR - 1)), on 1/RR below 1"),
             col("evalue_ci", "DOUBLE", True, "E-value of the CI limit nearer 1 (1: the CI contains 1; null: no CI)"),
             _DIAGNOSTICS, _GATE_REASONS, _NOTE, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "estimand"),
    arm_column="target",
    withheld=("estimate", "lower", "upper", "rr", "rr_lower", "rr_upper", "evalue", "evalue_ci"),
)

RESULTS_ATE = TableContract(
    "results_ate",
    "Adjusted curves of each route vs the reference arm on the endpoints with primary contrasts (time to response): "
    "the share with the event by models.contrast_days and the restricted mean days without it, per arm, standardised "
    "over the pair's patients by three estimators (riskRegression's ate(): gformula from a Cox outcome model, iptw "
    "weighting by the propensity and a Cox censoring model, both Cox models with a baseline hazard per arm; aiptw "
    "doubly robust), with influence-function SEs and "
    "Wald CIs, and the pair's gate verdict",
    columns=(_PARAMCD, _TARGET, _COMPARATOR,
             col("estimator", "VARCHAR", False, "gformula (right if the outcome model is), iptw (right if the propensity "
                                                "and censoring models are) or aiptw (right if either is)"),
             col("estimand", "VARCHAR", False, "risk_d<day> (share with the event by the day) or rmst (restricted mean "
                                               "days without the event up to day)"),
             col("measure", "VARCHAR", False, "risk or rmst"),
             col("day", "DOUBLE", True, "The day of a risk; the horizon of the rmst, the primary contrasts' (null: "
                                        "not estimable there)"),
             col("value_target", "DOUBLE", True, "The route's standardised value (a share 0-1, or days; null: not "
                                                 "estimable, see note)"),
             col("se_target", "DOUBLE", True, "Its standard error (influence function)"),
             col("value_comparator", "DOUBLE", True, "The reference arm's standardised value"),
             col("se_comparator", "DOUBLE", True, "Its standard error"),
             col("difference", "DOUBLE", True, "value_target - value_comparator"),
             col("se", "DOUBLE", True, "Standard error of the difference (influence function, every model's "
                                       "estimation included)"),
             col("lower", "DOUBLE", True, f"Lower limit of the Wald {_CI} of the difference (a risk's clipped at -1)"),
             col("upper", "DOUBLE", True, f"Upper limit of the Wald {_CI} of the difference (a risk's clipped at 1)"),
             col("p_value", "DOUBLE", True, "Two-sided p-value of the difference against 0"),
             col("ratio", "DOUBLE", True, "Risks only: value_target / value_comparator"),
             col("ratio_lower", "DOUBLE", True, f"Lower limit of the Wald {_CI} of the ratio (delta method, clipped at "
                                                "0)"),
             col("ratio_upper", "DOUBLE", True, f"Upper limit of the Wald {_CI} of the ratio"),
             col("n", "BIGINT", False, "Patients of the two arms in the models (0: not computed)"),
             col("ps_model", "VARCHAR", False, "The propensity model (propensity.model), the primary comparison's"),
             _DIAGNOSTICS, _GATE_REASONS, _NOTE, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "estimator", "estimand"),
    arm_column="target",
    withheld=("value_target", "se_target", "value_comparator", "se_comparator", "difference", "se", "lower", "upper",
              "p_value", "ratio", "ratio_lower", "ratio_upper"),
)

RESULTS_DISCRETE = TableContract(
    "results_discrete",
    "Interval-censored sensitivity analysis: discrete-time (cloglog) hazard ratios per endpoint and term",
    columns=(*_SUMMARY, *_TERM_PARTS, col("se_model", "DOUBLE", True, "Model-based SE (se is patient-clustered)"),
             _PARAMCD,
             col("n_intervals", "BIGINT", False, "Assessment intervals (the model's rows)"),
             col("n_subjects", "BIGINT", True, "Patients"), _N_EVENTS,
             col("band_days", "BIGINT", False, "Width of the baseline-hazard bands"), _NOTES,
             *RUN_COLUMNS),
    key=("run_id", "paramcd", "term"),
    arm_column="arm",
)

RESULTS_PREFERENCE = TableContract(
    "results_preference",
    "Preference-score distributions per endpoint and route pair: patients per arm and score bin",
    columns=(col("arm", "VARCHAR", False, "Arm of the patients: the route (target) or the reference arm"), ARM_LABEL,
             col("bin", "BIGINT", False, "Bin number, 0 for the lowest scores"),
             col("lower", "DOUBLE", False, "Lowest preference score of the bin"),
             col("upper", "DOUBLE", False, "Highest preference score of the bin"),
             col("n", "BIGINT", False, "Patients of the arm with a score in the bin"), _PARAMCD, _TARGET,
             *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "arm", "bin"),
    arm_column="arm",
)

RESULTS_SAFETY = TableContract(
    "results_safety",
    "Safety per session by route: share of sessions with each event, with patient-clustered CIs",
    columns=(col("arm", "VARCHAR", False, "Arm"), ARM_LABEL, _SAFETY_EVENT,
             col("sessions", "BIGINT", False, "Sessions with the data the event needs"),
             col("patients", "BIGINT", False, "Patients with such sessions"),
             col("events", "BIGINT", False, "Sessions with the event"),
             col("rate", "DOUBLE", True, "Share (0-1) of the sessions with the event (null: not estimable)"),
             *_bounds("rate (clustered on the patient)"), col("deff", "DOUBLE", True, "Design effect"),
             col("n_eff", "DOUBLE", True, "Effective number of sessions"),
             _NOTE, *RUN_COLUMNS),
    key=("run_id", "arm", "event"),
    arm_column="arm",
)

RESULTS_SAFETY_PATIENTS = TableContract(
    "results_safety_patients",
    "Safety per patient by route: share of patients with each event at least once",
    columns=(col("arm", "VARCHAR", False, "Arm"), ARM_LABEL, _SAFETY_EVENT,
             col("patients", "BIGINT", False, "Patients with the data the event needs"),
             col("patients_with_event", "BIGINT", False, "Patients with the event at least once"),
             col("rate", "DOUBLE", True, "Share (0-1) of the patients with the event (null: not estimable)"),
             *_bounds("rate"), _NOTE, *RUN_COLUMNS),
    key=("run_id", "arm", "event"),
    arm_column="arm",
)

RESULTS_TRAJECTORY = TableContract(
    "results_trajectory",
    "Mood trajectories: predicted mean score per arm and day from the linear mixed model",
    columns=(col("arm", "VARCHAR", False, "Arm"), ARM_LABEL, col("day", "DOUBLE", False, "Days since the first dose"),
             col("mean", "DOUBLE", True, "Predicted mean score of the study instrument"), *_bounds("mean"),
             _CONVERGED, *RUN_COLUMNS),
    key=("run_id", "arm", "day"),
    arm_column="arm",
)

RESULTS_TRAJECTORY_FIXED = TableContract(
    "results_trajectory_fixed",
    "Mood trajectories: fixed effects of the linear mixed model",
    columns=(col("term", "VARCHAR", False, "(Intercept), log1p(day), ARM[arm] or ARM[arm]:log1p(day) (vs the "
                                           "reference arm)"),
             col("coef", "DOUBLE", True, "Fixed effect, in points of the instrument"),
             col("se", "DOUBLE", True, "Standard error of coef"), col("z", "DOUBLE", True, "coef / se"),
             col("p_value", "DOUBLE", True, "Two-sided p-value"), *_bounds("coef"), *RUN_COLUMNS),
    key=("run_id", "term"),
)

RESULTS_RELAPSE_MAINTENANCE = TableContract(
    "results_relapse_maintenance",
    "Relapse among responders: Cox model with maintenance as a time-varying exposure, per term",
    columns=(*_SUMMARY, *_TERM_PARTS, col("n_intervals", "BIGINT", False, "Counting-process rows"),
             col("n_patients", "BIGINT", False, "Responders in the model"), _N_EVENTS, _CONVERGED,
             col("days_on_maintenance", "DOUBLE", False, "Days at risk covered by a maintenance session"),
             col("relapses_on_maintenance", "BIGINT", False, "Relapses on those days"),
             col("days_off_maintenance", "DOUBLE", False, "Days at risk not covered"),
             col("relapses_off_maintenance", "BIGINT", False, "Relapses on those days"),
             col("exposure_days", "BIGINT", False, "Days a maintenance session covers"), _NOTES,
             *RUN_COLUMNS),
    key=("run_id", "term"),
    arm_column="arm",
)

RESULTS_RELAPSE_CIF = TableContract(
    "results_relapse_cif",
    "Cumulative incidence of relapse with stopping as a competing event (Aalen-Johansen), per arm, cause and time",
    columns=(_GROUP, _CAUSE, col("time", "DOUBLE", False, "Days since the response"),
             col("n_risk", "BIGINT", False, "Responders at risk just before time"),
             col("n_event", "BIGINT", False, "Events of this cause at time"),
             col("n_censor", "BIGINT", False, "Censored at time"),
             col("cif", "DOUBLE", False, "Cumulative incidence of the cause by time (event-free: the share with "
                                         "neither)"),
             col("se", "DOUBLE", False, "Standard error of cif"), *_bounds("cif"), *RUN_COLUMNS),
    key=("run_id", "group", "cause", "time"),
    arm_column="group",
)

RESULTS_RELAPSE_CIF_AT = TableContract(
    "results_relapse_cif_at",
    "Cumulative incidence of relapse and of stopping at fixed horizons, per arm and cause",
    columns=(_GROUP, _CAUSE, col("time", "DOUBLE", False, "Horizon, days (relapse.cif_days and the RMST horizon)"),
             col("n_risk", "BIGINT", False, "Responders still at risk at the horizon"),
             col("cif", "DOUBLE", False, "Cumulative incidence of the cause by the horizon"),
             col("se", "DOUBLE", False, "Standard error of cif"), *_bounds("cif"), *RUN_COLUMNS),
    key=("run_id", "group", "cause", "time"),
    arm_column="group",
)

RESULTS_RELAPSE_GRAY = TableContract(
    "results_relapse_gray",
    "Gray's tests of the cumulative incidence across arms (all arms, and each route vs the reference) per cause",
    columns=(col("comparison", "VARCHAR", False, "'all arms', or '<route> vs <reference arm>'"),
             col("cause", "VARCHAR", False, "'relapse' or 'stopped: switch, new treatment or dropout'"),
             _CHI2, _DF, _P,
             col("error", "VARCHAR", True, "Why the test could not be computed (null: it was)"), *RUN_COLUMNS),
    key=("run_id", "comparison", "cause"),
)

RESULTS_RELAPSE_STATES = TableContract(
    "results_relapse_states",
    "Responders per arm and end state of the relapse follow-up (relapse, stopped, censored)",
    columns=(col("ARM", "VARCHAR", False, "Arm"), col("STATUS", "BIGINT", False, "0 censored, 1 relapse, 2 stopped"),
             col("len", "BIGINT", False, "Responders"),
             col("state", "VARCHAR", False, "STATUS in words: censored, relapse, or stopped: switch, new treatment "
                                            "or dropout"), *RUN_COLUMNS),
    key=("run_id", "ARM", "STATUS"),
    arm_column="ARM",
)

RESULTS_MODIFIERS_INTERACTIONS = TableContract(
    "results_modifiers_interactions",
    "Effect modifiers of the speed of response: likelihood-ratio test of each route x modifier interaction",
    columns=(col("modifier", "VARCHAR", False, "SEX, CONBENZO (concomitant benzodiazepine) or AGE"),
             col("lr_chi2", "DOUBLE", True, "Likelihood-ratio statistic, interaction vs main effects only"), _DF, _P,
             col("n", "BIGINT", False, "Patients in the models"), _N_EVENTS,
             *_doubles("loglik_interaction", "loglik_main"), _NOTE, *RUN_COLUMNS),
    key=("run_id", "modifier"),
)

RESULTS_MODIFIERS_SUBGROUPS = TableContract(
    "results_modifiers_subgroups",
    "Effect modifiers: hazard ratio of each route vs the reference arm within each level of a modifier",
    columns=(col("modifier", "VARCHAR", False, "SEX, CONBENZO or AGE"),
             col("level", "VARCHAR", False, "The modifier's level (F/M; Y/N; for AGE the age in years the linear "
                                            "interaction is centred at)"),
             col("arm", "VARCHAR", False, "Route compared with the reference arm"), ARM_LABEL,
             *_doubles("hr", "hr_lower", "hr_upper", "p_value"),
             col("n", "BIGINT", False, "Patients of the route at this level"),
             col("n_events", "BIGINT", False, "Events among them (fewer than 5: no HR)"),
             col("n_reference", "BIGINT", False, "Patients of the reference arm at this level"),
             col("n_events_reference", "BIGINT", False, "Events among them"), *_doubles("coef", "se"),
             col("term", "VARCHAR", False, "The model term, e.g. ARM[ketamine_iv]:SEX[M]"),
             *RUN_COLUMNS),
    key=("run_id", "modifier", "level", "arm"),
    arm_column="arm",
)

RESULTS_MODIFIERS_KETAMINE = TableContract(
    "results_modifiers_ketamine",
    "Effect modifiers within the ketamine routes: relative dose, concomitant medication, age and sex",
    columns=(col("term", "VARCHAR", False, "DOSEREL/step (relative dose), CONSSRI, CONBENZO, AGE/unit, SEX[M], or an "
                                           "adjustment (BASE, PRIORFAIL)"),
             col("scale", "VARCHAR", False, "What one unit of the term is"),
             *_doubles("hr", "hr_lower", "hr_upper", "p_value", "coef", "se"),
             col("n", "BIGINT", False, "Patients of the ketamine routes in the model"), _N_EVENTS,
             col("strata", "VARCHAR", False, "What the model is stratified by"), *RUN_COLUMNS),
    key=("run_id", "term"),
)

#: The analysis's results_* contracts by table name.
ANALYSIS_CONTRACTS: dict[str, TableContract] = contracts_by_name((
    RESULTS_KM, RESULTS_KM_MEDIAN, RESULTS_LOGRANK, RESULTS_COX, RESULTS_COX_FIT, RESULTS_PS, RESULTS_BALANCE,
    RESULTS_PH, RESULTS_RMST, RESULTS_KM_WEIGHTED, RESULTS_KM_WEIGHTED_MEDIAN, RESULTS_CONTRASTS, RESULTS_EVALUES,
    RESULTS_ATE, RESULTS_DISCRETE,
    RESULTS_PREFERENCE,
    RESULTS_SAFETY, RESULTS_SAFETY_PATIENTS, RESULTS_TRAJECTORY, RESULTS_TRAJECTORY_FIXED,
    RESULTS_RELAPSE_MAINTENANCE, RESULTS_RELAPSE_CIF, RESULTS_RELAPSE_CIF_AT, RESULTS_RELAPSE_GRAY,
    RESULTS_RELAPSE_STATES, RESULTS_MODIFIERS_INTERACTIONS, RESULTS_MODIFIERS_SUBGROUPS, RESULTS_MODIFIERS_KETAMINE,
    *TT_CONTRACTS.values(),
))

#: Every ad_*/results_* table written from derive's and the analysis's frames, by name (results_runs,
#: written by the pipeline itself, is declared in :mod:`ketaoutcomes.pipeline`).
CONTRACTS: dict[str, TableContract] = contracts_by_name((*DERIVE_CONTRACTS.values(), *ANALYSIS_CONTRACTS.values()))
