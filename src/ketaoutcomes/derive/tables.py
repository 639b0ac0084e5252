"""Contracts of the warehouse tables written from derive's output (:func:`~ketaoutcomes.derive.derive_all`):
the analysis datasets ``ad_adsl`` and ``ad_adtte`` and ``results_attrition``, one set per analysis run.

Every column of a frame must be declared here (a new column is a contract change), with its DuckDB
type and whether it may be null; :func:`ketaoutcomes.warehouse.write_table` enforces the contract.
See :mod:`ketaoutcomes.table_contract`.
"""

from __future__ import annotations

from ketaoutcomes.table_contract import RUN_COLUMNS, TableContract, col, contracts_by_name

__all__ = ["AD_ADSL", "AD_ADTTE", "CONTRACTS", "RESULTS_ATTRITION"]

AD_ADSL = TableContract(
    "ad_adsl",
    "Subject-level analysis dataset: one row per patient's index course, with the analysis population flag ANLFL",
    columns=(
        col("STUDYID", "VARCHAR", False, "Study name (study settings)"),
        col("USUBJID", "VARCHAR", False, "Patient (patients.patient_id)"),
        col("COURSEID", "VARCHAR", False, "Index course (the patient's first course)"),
        col("ARM", "VARCHAR", False, "Arm of the index course"),
        col("SITEID", "VARCHAR", False, "Site (patients.site)"),
        col("SEX", "VARCHAR", True, "F, M or U (unknown); null: not in the export"),
        col("AGE", "BIGINT", True, "Age at index, years (90 = 90 and over); null: not in the export"),
        col("PRIORFAIL", "BIGINT", True, "Prior failed antidepressant trials; null: not in the export"),
        col("DIAGNOSIS", "VARCHAR", True, "patients.diagnosis: MDD, bipolar_depression, ...; null: not in the export"),
        col("WEIGHT", "DOUBLE", True, "Body weight, kg"),
        col("TRTSDTM", "TIMESTAMP", False, "First dose (first session; if none, 00:00 of the course's start date, or "
                                           "its end with cohort.first_dose_without_sessions = end_of_day)"),
        col("FUENDTM", "TIMESTAMP", True, "End of follow-up by an intercurrent event (null: none)"),
        col("ICEREAS", "VARCHAR", True, "Intercurrent event that ends follow-up"),
        col("DCREAS", "VARCHAR", True, "Course end reason"),
        col("LOOKBACK", "BIGINT", True, "Days the records cover before the index course (null: unknown)"),
        col("PARAMINS", "VARCHAR", False, "Study instrument"),
        col("BASE", "DOUBLE", True, "Baseline score (null: no baseline rating)"),
        col("BASEDTM", "TIMESTAMP", True, "Time of the baseline rating"),
        col("CONSSRI", "BOOLEAN", True, "Concomitant SSRI during the index course (null: not recorded)"),
        col("CONBENZO", "BOOLEAN", True, "Concomitant benzodiazepine during the index course (null: not "
                                               "recorded)"),
        col("NSESS", "BIGINT", False, "Sessions of the index course"),
        col("NMAINT", "BIGINT", False, "Maintenance sessions of the index course"),
        col("NPOST", "BIGINT", False, "Ratings of the instrument after the first dose, within follow-up"),
        col("NEWUSFL", "VARCHAR", True, "New user (Y/N; null: look-back unknown)"),
        col("ANLFL", "VARCHAR", False, "In the analysis population (Y/N)"),
        col("EXTRACOV", "VARCHAR", True, "The study's own covariates from the patients file (models.extra_covariates), "
                                         "as JSON: {\"employment\": \"student\", ...}; null when it declares none"),
        *RUN_COLUMNS,
    ),
    key=("run_id", "USUBJID"),
    arm_column="ARM",
)

AD_ADTTE = TableContract(
    "ad_adtte",
    "Time-to-event analysis dataset: one row per endpoint (PARAMCD) and patient in the endpoint's population",
    columns=(
        col("STUDYID", "VARCHAR", False, "Study name (study settings)"),
        col("USUBJID", "VARCHAR", False, "Patient (patients.patient_id)"),
        col("COURSEID", "VARCHAR", False, "Index course"),
        col("ARM", "VARCHAR", False, "Arm of the index course"),
        col("PARAMCD", "VARCHAR", False, "Endpoint code (ketaoutcomes.endpoints)"),
        col("PARAM", "VARCHAR", False, "Endpoint in words, with its threshold"),
        col("STARTDT", "TIMESTAMP", False, "Time origin"),
        col("ADT", "TIMESTAMP", False, "Time of the event or of censoring"),
        col("AVAL", "DOUBLE", False, "ADT - STARTDT"),
        col("AVALU", "VARCHAR", False, "Unit of AVAL"),
        col("CNSR", "BIGINT", False, "0 event, > 0 censored (the code says why: CNSDTDSC)"),
        col("EVNTDESC", "VARCHAR", True, "The event (null when censored)"),
        col("CNSDTDSC", "VARCHAR", False, "Why follow-up ended"),
        col("EVSCORE", "DOUBLE", True, "Score at the event (null when censored)"),
        *RUN_COLUMNS,
    ),
    key=("run_id", "PARAMCD", "USUBJID"),
    arm_column="ARM",
)

RESULTS_ATTRITION = TableContract(
    "results_attrition",
    "Attrition: patients remaining and excluded per rule (step) and arm, '(all)' for every arm",
    columns=(
        col("step", "BIGINT", False, "Order of the rules (step 1: the starting population, nothing excluded yet)"),
        col("rule", "VARCHAR", False, "The selection rule, in words"),
        col("arm", "VARCHAR", False, "Arm, or '(all)' for every arm together"),
        col("n_remaining", "BIGINT", False, "Patients left after the rule"),
        col("n_excluded", "BIGINT", True, "Excluded by this rule (null for the first step)"),
        col("paramcd", "VARCHAR", True, "Null: a rule of the analysis population; else the endpoint whose own "
                                        "population the rule narrows (counted against the analysis population)"),
        col("arm_label", "VARCHAR", True, "The arm's label in the arm registry in force (null for '(all)')"),
        *RUN_COLUMNS,
    ),
    key=("run_id", "step", "arm"),
    arm_column="arm",
)

#: Derive's contracts by table name.
CONTRACTS: dict[str, TableContract] = contracts_by_name((AD_ADSL, AD_ADTTE, RESULTS_ATTRITION))
