"""Cohort, attrition, baseline and ADaM analysis datasets (pure functions)."""

from ketaoutcomes.derive.adam import COVARIATE_COLUMNS, DeriveResult, derive_adsl, derive_adtte, derive_all
from ketaoutcomes.derive.cnsr import CNSR, cnsr_to_event

__all__ = ["CNSR", "COVARIATE_COLUMNS", "DeriveResult", "cnsr_to_event", "derive_adsl", "derive_adtte", "derive_all"]
