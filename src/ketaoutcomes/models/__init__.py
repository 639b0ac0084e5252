"""Statistical models of the outcome studies: pure functions, frames in, frozen results out.

What lives where:

* :mod:`~ketaoutcomes.models.km`: Kaplan-Meier curves with pointwise intervals and
  medians (:func:`kaplan_meier`, :class:`KMResult`).
* :mod:`~ketaoutcomes.models.logrank`: the log-rank test (:func:`logrank_test`,
  :class:`LogRankResult`).
* :mod:`~ketaoutcomes.models.cox`: Cox proportional hazards models (:func:`cox_ph`,
  :class:`CoxResult`), with the design matrix and the handling of terms that cannot
  be estimated; Harrell's C in :mod:`~ketaoutcomes.models.concordance`.
* :mod:`~ketaoutcomes.models.weighted`: weighted Cox and Kaplan-Meier for
  inverse-probability weights, and the restricted mean survival time.
* :mod:`~ketaoutcomes.models.competing`: Aalen-Johansen cumulative incidence and
  Gray's test.
* :mod:`~ketaoutcomes.models.diagnostics`: proportional-hazards tests and the
  discrete-time Cox model.
* :mod:`~ketaoutcomes.models.propensity` and :mod:`~ketaoutcomes.models.matching`:
  propensity scores, weights, balance and nearest-neighbour matching;
  :mod:`~ketaoutcomes.models.ps_model` fits the propensity model (ridge or
  unpenalised logistic) and holds the rule for rare covariate levels.
* :mod:`~ketaoutcomes.models.modifiers`: effect modifiers of the time to response.
* :mod:`~ketaoutcomes.models.safety` and :mod:`~ketaoutcomes.models.trajectory`:
  session safety and the mood-trajectory mixed model.
* :mod:`~ketaoutcomes.models.calibration`: empirical calibration with negative controls (the
  systematic-error null, calibrated p-values and intervals, EASE and the calibration gate).
* :mod:`~ketaoutcomes.models.common`: the internal helpers several models share
  (event indicator, dropping incomplete rows, level labels, interval band).

The survival models are checked against R's ``survival`` package
(``tests/reference``).
"""

from ketaoutcomes.models.cox import CoxResult, cox_ph
from ketaoutcomes.models.km import KMResult, kaplan_meier
from ketaoutcomes.models.logrank import LogRankResult, logrank_test

__all__ = [
    "CoxResult",
    "KMResult",
    "LogRankResult",
    "cox_ph",
    "kaplan_meier",
    "logrank_test",
]
