"""The analysis of one study: ADaM datasets in, result frames out (pure).

One module per step: :mod:`~ketaoutcomes.analysis.main` (per endpoint: Kaplan-Meier, log-rank,
adjusted and naive Cox models, PH test, restricted mean time, discrete-time sensitivity analysis),
:mod:`~ketaoutcomes.analysis.propensity` (the propensity-score comparison of each route with the
reference arm, with its diagnostics and gate), :mod:`~ketaoutcomes.analysis.relapse`,
:mod:`~ketaoutcomes.analysis.secondary` (safety, trajectories) and
:mod:`~ketaoutcomes.analysis.modifiers`; :mod:`~ketaoutcomes.analysis.common` holds what they share.
Which models run on which endpoint is declared in :mod:`ketaoutcomes.endpoints`.
"""

from ketaoutcomes.analysis.main import AnalysisResult, analyze
from ketaoutcomes.analysis.modifiers import modifier_analyses
from ketaoutcomes.analysis.propensity import preference_histogram
from ketaoutcomes.analysis.relapse import RELAPSE_STATES, relapse_analyses, relapse_status
from ketaoutcomes.analysis.secondary import secondary_analyses

__all__ = ["AnalysisResult", "RELAPSE_STATES", "analyze", "modifier_analyses", "preference_histogram",
           "relapse_analyses", "relapse_status", "secondary_analyses"]
