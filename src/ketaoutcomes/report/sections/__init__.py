"""The report's sections: each module shapes result frames into plain tables, texts and figures.

A section function takes frames (an empty frame when the table is absent), the report's
:class:`~ketaoutcomes.report.arms.Arms` and :class:`~ketaoutcomes.report.format.Fmt`, and returns
what the template shows, or a reason ("not estimable: ...", "not available: ...") instead of an
error. :mod:`ketaoutcomes.report.context` calls them with the tables of one run.

* :mod:`.cohort`: cohort by arm;
* :mod:`.attrition`: the flow diagram and table of attrition, with complementary small-cell suppression;
* :mod:`.key_results`: the primary endpoint per arm;
* :mod:`.weighting`: the propensity-score weighted comparison (diagnostics, love plot,
  preference scores, weighted Kaplan-Meier curves and medians);
* :mod:`.endpoints`: one section per endpoint (follow-up, KM, medians, log-rank, Cox);
* :mod:`.secondary`: proportional-hazards tests, the discrete-time sensitivity analysis,
  restricted mean times, mood trajectories, safety;
* :mod:`.relapse`: maintenance as a time-varying exposure, competing risks;
* :mod:`.modifiers`: effect modifiers (exploratory);
* :mod:`.truth`: estimates against the synthetic cohort's truth;
* :mod:`.data_quality`: validation, batches, quarantine, data-quality checks;
* :mod:`.common`: what several sections share (primary endpoint, term names, notes, curves).
"""
