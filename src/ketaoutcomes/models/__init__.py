"""Statistical models of the outcome studies: pure functions, frames in, frozen results out.

:mod:`ketaoutcomes.models.survival` holds Kaplan-Meier curves, the log-rank test
and Cox proportional hazards models, checked against R's ``survival`` package
(``tests/reference``).
"""

from ketaoutcomes.models.survival import (
    CoxResult,
    KMResult,
    LogRankResult,
    cox_ph,
    kaplan_meier,
    logrank_test,
)

__all__ = [
    "CoxResult",
    "KMResult",
    "LogRankResult",
    "cox_ph",
    "kaplan_meier",
    "logrank_test",
]
