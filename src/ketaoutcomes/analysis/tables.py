"""Contracts of the ``results_*`` tables the analysis writes (the frames of
:func:`~ketaoutcomes.analysis.run_study`: :func:`~ketaoutcomes.analysis.analyze`, :func:`~ketaoutcomes.analysis.secondary_analyses`,
:func:`~ketaoutcomes.analysis.relapse_analyses` and :func:`~ketaoutcomes.analysis.modifier_analyses`),
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

from ketaoutcomes.derive.tables import CONTRACTS as DERIVE_CONTRACTS
from ketaoutcomes.table_contract import RUN_COLUMNS, ColumnContract, TableContract, col, contracts_by_name

__all__ = ["ANALYSIS_CONTRACTS", "CONTRACTS"]


def _doubles(*names: str) -> tuple[ColumnContract, ...]:
    """Estimates: DOUBLE, null when not computable."""
    return tuple(col(n, "DOUBLE") for n in names)


#: A Cox-type model's summary per term (null when the term could not be estimated).
_SUMMARY = (col("term", "VARCHAR", False, "Model term, e.g. ARM[ketamine_iv] (vs the reference level)"),
            *_doubles("coef", "hr", "se", "z", "p_value", "hr_lower", "hr_upper"))
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
_WEIGHTING = col("weighting", "VARCHAR", False, "iptw, overlap or matching")

RESULTS_KM = TableContract(
    "results_km",
    "Kaplan-Meier curve per endpoint and arm: one row per distinct time, with the 95% CI",
    columns=(_GROUP, col("time", "DOUBLE", False), col("n_risk", "BIGINT", False), col("n_event", "BIGINT", False),
             col("n_censor", "BIGINT", False), col("survival", "DOUBLE", False), *_doubles("lower", "upper"),
             _PARAMCD, *RUN_COLUMNS),
    key=("run_id", "paramcd", "group", "time"),
)

RESULTS_KM_MEDIAN = TableContract(
    "results_km_median",
    "Median time to the event per endpoint and arm, with its CI (null: not reached)",
    columns=(_GROUP, col("n", "BIGINT", False), col("events", "BIGINT", False),
             *_doubles("median", "median_lower", "median_upper"), _PARAMCD, *RUN_COLUMNS),
    key=("run_id", "paramcd", "group"),
)

RESULTS_LOGRANK = TableContract(
    "results_logrank",
    "Log-rank test across arms per endpoint",
    columns=(_PARAMCD, col("chi2", "DOUBLE"), col("df", "BIGINT"), col("p_value", "DOUBLE"),
             col("groups", "VARCHAR", False, "Observed and expected events per arm (JSON)"), *RUN_COLUMNS),
    key=("run_id", "paramcd"),
)

RESULTS_COX = TableContract(
    "results_cox",
    "Hazard ratios per endpoint, model (adjusted, naive, and the propensity-score model: iptw/overlap/matching), term",
    columns=(*_SUMMARY, *_TERM_PARTS, _PARAMCD,
             col("model", "VARCHAR", False, "adjusted, naive, iptw, overlap or matching"),
             col("diagnostics", "VARCHAR", True, "Propensity-score models: the gate's verdict pass/fail (null for "
                                                 "adjusted and naive)"),
             _GATE_REASONS, *RUN_COLUMNS),
    key=("run_id", "paramcd", "model", "term"),
)

RESULTS_COX_FIT = TableContract(
    "results_cox_fit",
    "Fit of each adjusted and naive Cox model per endpoint: rows used, events, likelihood-ratio test, concordance",
    columns=(_PARAMCD, col("model", "VARCHAR", False), col("n", "BIGINT", False), col("n_events", "BIGINT", False),
             col("n_dropped", "BIGINT", False, "Rows left out (missing covariates)"), col("loglik", "DOUBLE"),
             col("lr_chi2", "DOUBLE"), col("lr_df", "BIGINT", False), col("lr_p", "DOUBLE"),
             col("concordance", "DOUBLE"), col("converged", "BOOLEAN", False),
             col("strata", "VARCHAR", True, "Strata column (null: none)"), col("covariates", "VARCHAR", False),
             col("reference_levels", "VARCHAR", False), col("notes", "VARCHAR"), *RUN_COLUMNS),
    key=("run_id", "paramcd", "model"),
)

RESULTS_PS = TableContract(
    "results_ps",
    "Propensity-score comparison of each route with the reference arm per endpoint: diagnostics and the gate",
    columns=(_PARAMCD, _TARGET, col("comparator", "VARCHAR", False), _WEIGHTING,
             col("truncation", "DOUBLE", True, "Cap on the stabilised IPTW weights (null: none)"),
             col("n_target", "BIGINT", False), col("n_comparator", "BIGINT", False),
             col("n_dropped", "BIGINT", False), col("n_truncated", "BIGINT", False),
             col("ess_target", "DOUBLE", True, "Effective sample size"), col("ess_comparator", "DOUBLE"),
             col("equipoise", "DOUBLE", True, "Share of patients with a preference score in the equipoise bounds"),
             col("max_abs_smd_after", "DOUBLE"), col("converged", "BOOLEAN", False), _DIAGNOSTICS, _GATE_REASONS,
             col("notes", "VARCHAR"), col("n_matched_target", "BIGINT"), col("n_matched_comparator", "BIGINT"),
             *RUN_COLUMNS),
    key=("run_id", "paramcd", "target"),
)

RESULTS_BALANCE = TableContract(
    "results_balance",
    "Covariate balance per endpoint, route and covariate: standardized mean differences before and after weighting",
    columns=(_TARGET, col("comparator", "VARCHAR", False), _WEIGHTING, col("diagnostics_passed", "BOOLEAN", False),
             col("covariate", "VARCHAR", False, "Design column, e.g. AGE or SEX[M]"),
             col("variable", "VARCHAR", False, "The covariate (SEX of SEX[M])"),
             col("level", "VARCHAR", True, "The level of a categorical covariate (M of SEX[M]); null: numeric"),
             *_doubles("mean_target_before", "mean_comparator_before", "smd_before", "mean_target_after",
                       "mean_comparator_after", "smd_after", "sd_pooled"),
             col("in_model", "BOOLEAN", False, "False for the reference level of a categorical covariate"),
             col("smd_se_after", "DOUBLE", True, "SE of smd_after"),
             col("smd_p_after", "DOUBLE", True, "p-value that |SMD| after weighting exceeds the threshold"),
             *_doubles("abs_smd_before", "abs_smd_after"), _PARAMCD, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "covariate"),
)

RESULTS_PH = TableContract(
    "results_ph",
    "Proportional-hazards test (R's cox.zph) of the adjusted Cox model per endpoint: per term and GLOBAL",
    columns=(col("term", "VARCHAR", False), col("chi2", "DOUBLE"), col("df", "BIGINT"), col("p_value", "DOUBLE"),
             col("note", "VARCHAR"), _PARAMCD,
             col("error", "VARCHAR", True, "Why the test could not be computed (null: it was)"), *RUN_COLUMNS),
    key=("run_id", "paramcd", "term"),
)

RESULTS_RMST = TableContract(
    "results_rmst",
    "Restricted mean time without the event up to the horizon, per endpoint and arm",
    columns=(_GROUP, col("horizon", "DOUBLE", False, "Days"), col("rmst", "DOUBLE", False), col("se", "DOUBLE", False),
             col("lower", "DOUBLE", False), col("upper", "DOUBLE", False), _PARAMCD, *RUN_COLUMNS),
    key=("run_id", "paramcd", "group"),
)

RESULTS_KM_WEIGHTED = TableContract(
    "results_km_weighted",
    "Weighted (or matched) Kaplan-Meier curves per endpoint and route pair, with the pair's gate verdict",
    columns=(_GROUP, col("time", "DOUBLE", False), col("n_risk", "DOUBLE", False, "Weighted"),
             col("n_event", "DOUBLE", False, "Weighted"), col("n_censor", "DOUBLE", False, "Weighted"),
             col("survival", "DOUBLE", False), *_doubles("std_err", "lower", "upper"), _PARAMCD, _DIAGNOSTICS,
             _GATE_REASONS, _TARGET, _WEIGHTING, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "group", "time"),
)

RESULTS_KM_WEIGHTED_MEDIAN = TableContract(
    "results_km_weighted_median",
    "Medians of the weighted (or matched) Kaplan-Meier curves per endpoint, route pair and arm",
    columns=(_GROUP, col("n", "BIGINT", False), col("events", "DOUBLE", False, "Weighted"),
             *_doubles("median", "median_lower", "median_upper"), _PARAMCD, _DIAGNOSTICS, _GATE_REASONS, _TARGET,
             _WEIGHTING, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "group"),
)

RESULTS_DISCRETE = TableContract(
    "results_discrete",
    "Interval-censored sensitivity analysis: discrete-time (cloglog) hazard ratios per endpoint and term",
    columns=(*_SUMMARY, *_TERM_PARTS, col("se_model", "DOUBLE", True, "Model-based SE (se is patient-clustered)"),
             _PARAMCD,
             col("n_intervals", "BIGINT", False), col("n_subjects", "BIGINT"), col("n_events", "BIGINT", False),
             col("band_days", "BIGINT", False, "Width of the baseline-hazard bands"), col("notes", "VARCHAR"),
             *RUN_COLUMNS),
    key=("run_id", "paramcd", "term"),
)

RESULTS_PREFERENCE = TableContract(
    "results_preference",
    "Preference-score distributions per endpoint and route pair: patients per arm and score bin",
    columns=(col("arm", "VARCHAR", False), ARM_LABEL, col("bin", "BIGINT", False), col("lower", "DOUBLE", False),
             col("upper", "DOUBLE", False), col("n", "BIGINT", False), _PARAMCD, _TARGET, *RUN_COLUMNS),
    key=("run_id", "paramcd", "target", "arm", "bin"),
)

RESULTS_SAFETY = TableContract(
    "results_safety",
    "Safety per session by route: share of sessions with each event, with patient-clustered CIs",
    columns=(col("arm", "VARCHAR", False), ARM_LABEL, col("event", "VARCHAR", False), col("sessions", "BIGINT", False),
             col("patients", "BIGINT", False), col("events", "BIGINT", False),
             *_doubles("rate", "lower", "upper"), col("deff", "DOUBLE", True, "Design effect"),
             col("n_eff", "DOUBLE", True, "Effective number of sessions"),
             col("note", "VARCHAR"), *RUN_COLUMNS),
    key=("run_id", "arm", "event"),
)

RESULTS_SAFETY_PATIENTS = TableContract(
    "results_safety_patients",
    "Safety per patient by route: share of patients with each event at least once",
    columns=(col("arm", "VARCHAR", False), ARM_LABEL, col("event", "VARCHAR", False), col("patients", "BIGINT", False),
             col("patients_with_event", "BIGINT", False), *_doubles("rate", "lower", "upper"),
             col("note", "VARCHAR"), *RUN_COLUMNS),
    key=("run_id", "arm", "event"),
)

RESULTS_TRAJECTORY = TableContract(
    "results_trajectory",
    "Mood trajectories: predicted mean score per arm and day from the linear mixed model",
    columns=(col("arm", "VARCHAR", False), ARM_LABEL, col("day", "DOUBLE", False), *_doubles("mean", "lower", "upper"),
             col("converged", "BOOLEAN", False), *RUN_COLUMNS),
    key=("run_id", "arm", "day"),
)

RESULTS_TRAJECTORY_FIXED = TableContract(
    "results_trajectory_fixed",
    "Mood trajectories: fixed effects of the linear mixed model",
    columns=(col("term", "VARCHAR", False), *_doubles("coef", "se", "z", "p_value", "lower", "upper"), *RUN_COLUMNS),
    key=("run_id", "term"),
)

RESULTS_RELAPSE_MAINTENANCE = TableContract(
    "results_relapse_maintenance",
    "Relapse among responders: Cox model with maintenance as a time-varying exposure, per term",
    columns=(*_SUMMARY, *_TERM_PARTS, col("n_intervals", "BIGINT", False, "Counting-process rows"),
             col("n_patients", "BIGINT", False), col("n_events", "BIGINT", False),
             col("converged", "BOOLEAN", False), col("days_on_maintenance", "DOUBLE", False),
             col("relapses_on_maintenance", "BIGINT", False), col("days_off_maintenance", "DOUBLE", False),
             col("relapses_off_maintenance", "BIGINT", False),
             col("exposure_days", "BIGINT", False, "Days a maintenance session covers"), col("notes", "VARCHAR"),
             *RUN_COLUMNS),
    key=("run_id", "term"),
)

RESULTS_RELAPSE_CIF = TableContract(
    "results_relapse_cif",
    "Cumulative incidence of relapse with stopping as a competing event (Aalen-Johansen), per arm, cause and time",
    columns=(_GROUP, col("cause", "VARCHAR", False), col("time", "DOUBLE", False), col("n_risk", "BIGINT", False),
             col("n_event", "BIGINT", False), col("n_censor", "BIGINT", False), col("cif", "DOUBLE", False),
             col("se", "DOUBLE", False), *_doubles("lower", "upper"), *RUN_COLUMNS),
    key=("run_id", "group", "cause", "time"),
)

RESULTS_RELAPSE_CIF_AT = TableContract(
    "results_relapse_cif_at",
    "Cumulative incidence of relapse and of stopping at fixed horizons, per arm and cause",
    columns=(_GROUP, col("cause", "VARCHAR", False), col("time", "DOUBLE", False, "Horizon, days"),
             col("n_risk", "BIGINT", False), col("cif", "DOUBLE", False), col("se", "DOUBLE", False),
             *_doubles("lower", "upper"), *RUN_COLUMNS),
    key=("run_id", "group", "cause", "time"),
)

RESULTS_RELAPSE_GRAY = TableContract(
    "results_relapse_gray",
    "Gray's tests of the cumulative incidence across arms (all arms, and each route vs the reference) per cause",
    columns=(col("comparison", "VARCHAR", False), col("cause", "VARCHAR", False), col("chi2", "DOUBLE"),
             col("df", "BIGINT"), col("p_value", "DOUBLE"),
             col("error", "VARCHAR", True, "Why the test could not be computed (null: it was)"), *RUN_COLUMNS),
    key=("run_id", "comparison", "cause"),
)

RESULTS_RELAPSE_STATES = TableContract(
    "results_relapse_states",
    "Responders per arm and end state of the relapse follow-up (relapse, stopped, censored)",
    columns=(col("ARM", "VARCHAR", False), col("STATUS", "BIGINT", False, "0 censored, 1 relapse, 2 stopped"),
             col("len", "BIGINT", False, "Responders"), col("state", "VARCHAR", False), *RUN_COLUMNS),
    key=("run_id", "ARM", "STATUS"),
)

RESULTS_MODIFIERS_INTERACTIONS = TableContract(
    "results_modifiers_interactions",
    "Effect modifiers of the speed of response: likelihood-ratio test of each route x modifier interaction",
    columns=(col("modifier", "VARCHAR", False), col("lr_chi2", "DOUBLE"), col("df", "BIGINT"), col("p_value", "DOUBLE"),
             col("n", "BIGINT", False), col("n_events", "BIGINT", False),
             *_doubles("loglik_interaction", "loglik_main"),
             col("note", "VARCHAR"), *RUN_COLUMNS),
    key=("run_id", "modifier"),
)

RESULTS_MODIFIERS_SUBGROUPS = TableContract(
    "results_modifiers_subgroups",
    "Effect modifiers: hazard ratio of each route vs the reference arm within each level of a modifier",
    columns=(col("modifier", "VARCHAR", False), col("level", "VARCHAR", False), col("arm", "VARCHAR", False), ARM_LABEL,
             *_doubles("hr", "hr_lower", "hr_upper", "p_value"), col("n", "BIGINT", False),
             col("n_events", "BIGINT", False), col("n_reference", "BIGINT", False),
             col("n_events_reference", "BIGINT", False), *_doubles("coef", "se"), col("term", "VARCHAR", False),
             *RUN_COLUMNS),
    key=("run_id", "modifier", "level", "arm"),
)

RESULTS_MODIFIERS_KETAMINE = TableContract(
    "results_modifiers_ketamine",
    "Effect modifiers within the ketamine routes: relative dose, concomitant medication, age and sex",
    columns=(col("term", "VARCHAR", False), col("scale", "VARCHAR", False, "What one unit of the term is"),
             *_doubles("hr", "hr_lower", "hr_upper", "p_value", "coef", "se"), col("n", "BIGINT", False),
             col("n_events", "BIGINT", False), col("strata", "VARCHAR", False), *RUN_COLUMNS),
    key=("run_id", "term"),
)

#: The analysis's results_* contracts by table name.
ANALYSIS_CONTRACTS: dict[str, TableContract] = contracts_by_name((
    RESULTS_KM, RESULTS_KM_MEDIAN, RESULTS_LOGRANK, RESULTS_COX, RESULTS_COX_FIT, RESULTS_PS, RESULTS_BALANCE,
    RESULTS_PH, RESULTS_RMST, RESULTS_KM_WEIGHTED, RESULTS_KM_WEIGHTED_MEDIAN, RESULTS_DISCRETE, RESULTS_PREFERENCE,
    RESULTS_SAFETY, RESULTS_SAFETY_PATIENTS, RESULTS_TRAJECTORY, RESULTS_TRAJECTORY_FIXED,
    RESULTS_RELAPSE_MAINTENANCE, RESULTS_RELAPSE_CIF, RESULTS_RELAPSE_CIF_AT, RESULTS_RELAPSE_GRAY,
    RESULTS_RELAPSE_STATES, RESULTS_MODIFIERS_INTERACTIONS, RESULTS_MODIFIERS_SUBGROUPS, RESULTS_MODIFIERS_KETAMINE,
))

#: Every ad_*/results_* table written from derive's and the analysis's frames, by name (results_runs,
#: written by the pipeline itself, is declared in :mod:`ketaoutcomes.pipeline`).
CONTRACTS: dict[str, TableContract] = contracts_by_name((*DERIVE_CONTRACTS.values(), *ANALYSIS_CONTRACTS.values()))
