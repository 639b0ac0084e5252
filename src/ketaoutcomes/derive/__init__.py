"""Cohort, attrition, baseline and ADaM analysis datasets (pure functions)."""

from ketaoutcomes.derive.adam import CNSR, COVARIATE_COLUMNS, DeriveResult, derive_adsl, derive_adtte, derive_all

__all__ = ["CNSR", "COVARIATE_COLUMNS", "DeriveResult", "derive_adsl", "derive_adtte", "derive_all"]
