"""Propensity scores, weights, covariate balance and the diagnostics gate.

Pure functions: a :class:`polars.DataFrame` goes in, a frozen result object comes
out. One call compares two arms, a *target* and a *comparator*, as OHDSI's
CohortMethod does (the pipeline calls it once per ketamine route against SSRI).
The propensity model is a logistic regression, ridge-penalised on the
standardised covariates by default (``model="ridge"``) or unpenalised
(``model="logistic"``); :mod:`ketaoutcomes.models.ps_model` fits it and states
the penalty and its choice.

Conventions (each is also commented where it is applied):

* **Population.** Rows whose arm is the target or the comparator; every other
  row is ignored. The caller passes the analysis population (for ADSL: filter
  ``ANLFL == "Y"`` first); this module does not look at flags.
* **Missing values.** Rows with a missing value (null or NaN) in any covariate
  are dropped, counted (``n_dropped``) and described in ``notes``, as the survival
  models do (R's ``na.omit``). No missing-indicator columns are added.
* **Categorical covariates** are expanded to 0/1 dummies named ``COL[level]``.
  The reference level (left out of the model) is the most frequent level in the
  two arms (ties: alphabetical), as :mod:`ketaoutcomes.analysis` chooses it.
  The balance table has a row for *every* level, the reference included
  (``in_model`` is False there), because CohortMethod checks balance on every
  covariate level. A numeric column not listed in ``categorical`` enters as is
  (booleans as 0/1); a text column not listed raises.
* **Rare levels** (``min_level_prevalence``, :func:`ketaoutcomes.models.ps_model.rare_levels`):
  levels of a categorical covariate are left out of the propensity model, from the
  rarest up, while together they are shared by fewer than ``min_level_prevalence``
  of the patients of the two arms. The model then counts them as the reference
  level, and the gate checks that coding: the reference level's balance row becomes
  the reference *or* the rare levels (``SEX[F or U]``), and each rare level's own row
  stays in ``balance`` with ``in_gate`` False (shown, not gated). ``levels_left_out``
  and ``notes`` name them with their counts.
* **Preference score** (Walker et al. 2013, CohortMethod's
  ``computePreferenceScore``): ``logit(pref) = logit(ps) - logit(P)`` with ``P``
  the share of target-arm patients among the two arms. **Equipoise** is the share
  of all patients (both arms) with ``pref`` in the closed interval
  ``equipoise_bounds`` (default [0.3, 0.7]).
* **Weights.** ``"iptw"``: the ATE weights ``1/ps`` (target) and ``1/(1-ps)``
  (comparator), *stabilised* by the marginal shares, i.e. ``P/ps`` and
  ``(1-P)/(1-ps)``, then truncated: a stabilised weight above ``truncation`` is set
  to ``truncation`` (truncation applies to the stabilised weight, as
  CohortMethod's ``maxWeight`` does; the count is in ``n_truncated`` and ``notes``).
  ``"overlap"``: ``1-ps`` (target) and ``ps`` (comparator); they lie in [0, 1]
  and are never truncated (``truncation`` is then None).
  ``"matching"``: 1:1 greedy nearest-neighbour matching without replacement on
  the logit of the propensity score, target patients in order of descending
  score, within a caliper of ``caliper`` SDs of the logit score (SD over both
  arms, ddof=1), as R's MatchIt (``method = "nearest"``, ``m.order = "largest"``,
  ``std.caliper = TRUE``); :func:`ketaoutcomes.models.matching.match_nearest`
  states every rule. Matched patients get weight 1, unmatched patients a
  *missing* (null) weight: callers drop them. ``scores`` gains ``match_set``
  (Int64, the pair's id, null when unmatched); ``notes`` say how many target
  patients found no comparator within the caliper. Not truncated (``truncation``
  is None). Matching needs every score strictly between 0 and 1; otherwise
  nobody is matched (said in ``notes``).
* **Standardised mean difference** of a design column:
  ``(mean_t - mean_c) / sqrt((var_t + var_c) / 2)``. The denominator is the
  *unweighted* pooled SD (sample variances, ``ddof=1``) both before and after
  weighting, as CohortMethod (>= 5.0) and Austin (2009) recommend, so a change in
  the SMD is a change in the mean difference only. After weighting, the means are
  weighted means; after matching, plain means over the matched patients (the
  denominator is still the SD of the full two-arm sample). A column constant in
  both arms has SMD 0; a column constant within each arm but different between
  them has an infinite SMD.
* **Effective sample size** per arm: ``(sum w)^2 / sum w^2``; after matching,
  the number of matched patients of the arm.
* **SE of the SMD after weighting** (``smd_se_after``) and the one-sided p-value
  that |SMD| exceeds ``max_smd`` (``smd_p_after``), as CohortMethod computes them
  (Hripcsak et al. 2025, "Assessing covariate balance with small sample sizes"):
  weights normalised to 1 per arm, ``var = sum w^2 (x - mean)^2 / sd^2`` summed
  over both arms.
* **Gate** (``diagnostics_passed``): max |SMD| after weighting (or matching) over
  the rows in the gate (``in_gate``) < ``max_smd`` (or, with ``balance_alpha``, no covariate significantly above it)
  *and* equipoise >= ``min_equipoise`` *and* the propensity model
  converged *and* every diagnostic could be computed *and*, for matching, at least
  2 matched pairs. A diagnostic that could not be computed (NaN, None, too few
  patients) counts as failed, never as passed; ``gate_reasons`` says why the gate
  failed.
* **Convergence.** Newton-Raphson (at most 100 iterations). The unpenalised fit
  counts as not converged when statsmodels says so, when an estimate is not
  finite, or when the fitted scores separate the arms perfectly (every target
  patient above every comparator patient), the signs of (quasi-)complete
  separation. The ridge fit is always finite; scores that still separate the arms
  perfectly fail the gate as "no overlap". The scores are still reported when they
  are finite, so the diagnostics show what went wrong; the gate fails either way.
  Nothing raises for a statistical problem: only programming errors (unknown
  columns, bad options) raise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats

from ketaoutcomes.models.ps_design import CodedCovariates, Design
from ketaoutcomes.models.ps_fit import (WEIGHTINGS, PropensityDraws, fit_core, fit_spec, preference_score,
                                        propensity_draws)
from ketaoutcomes.models.common import drop_missing

__all__ = ["WEIGHTINGS", "PropensityDraws", "PropensityResult", "fit_propensity", "love_plot_data", "preference_score",
           "propensity_draws"]


_SCORES_SCHEMA = {
    "USUBJID": pl.String,
    "ARM": pl.String,
    "treated": pl.Int8,
    "ps": pl.Float64,
    "preference": pl.Float64,
    "weight": pl.Float64,
}

_BALANCE_SCHEMA = {
    "covariate": pl.String,
    "variable": pl.String,  # the covariate column ("SEX" of "SEX[M]")
    "level": pl.String,  # the level of a categorical covariate ("M"); null for a numeric one
    "mean_target_before": pl.Float64,
    "mean_comparator_before": pl.Float64,
    "smd_before": pl.Float64,
    "mean_target_after": pl.Float64,
    "mean_comparator_after": pl.Float64,
    "smd_after": pl.Float64,
    "sd_pooled": pl.Float64,
    "in_model": pl.Boolean,
    "smd_se_after": pl.Float64,
    "smd_p_after": pl.Float64,
    "in_gate": pl.Boolean,  # False: a rare level left out of the model and the gate
}


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class PropensityResult:
    """Propensity scores, weights and balance diagnostics of one target-comparator pair.

    Attributes
    ----------
    target, comparator : str
        The two arms (values of the arm column).
    scores : polars.DataFrame
        One row per analysed patient: ``USUBJID``, ``ARM``, ``treated`` (1 target,
        0 comparator), ``ps`` (fitted probability of the target arm),
        ``preference``, ``weight`` (after truncation; for matching 1.0 when
        matched, null when not) and, for matching only, ``match_set`` (Int64 id of
        the matched pair, null when unmatched).
    balance : polars.DataFrame
        One row per design column: ``covariate`` (``"AGE"``, ``"SEX[M]"``, ...),
        ``mean_target_before``, ``mean_comparator_before``, ``smd_before``,
        ``mean_target_after``, ``mean_comparator_after``, ``smd_after`` (weighted
        means, or means over the matched patients; both SMDs over the unweighted
        pooled SD of the full sample), ``sd_pooled`` (that SD)
        ``in_model`` (False for the reference level of a categorical covariate and
        for a rare level) and ``in_gate`` (False for a rare level left out of the
        balance gate; see ``min_level_prevalence``).
    equipoise : float or None
        Share of patients with a preference score within ``equipoise_bounds``;
        None when it cannot be computed.
    max_abs_smd_after : float or None
        Largest |SMD| after weighting; None when some SMD cannot be computed.
    n_target, n_comparator : int
        Patients analysed per arm (after dropping missing values).
    ess_target, ess_comparator : float
        Effective sample sizes ``(sum w)^2 / sum w^2`` (NaN if not computable);
        for matching, the numbers of matched patients.
    weighting : str
        ``"iptw"``, ``"overlap"`` or ``"matching"``.
    truncation : float or None
        Cap on the stabilised IPTW weights (None: not truncated, always None for
        overlap weights and matching).
    diagnostics_passed : bool
        The gate: balance, equipoise, convergence and every diagnostic computed.
    gate_reasons : tuple of str
        Why the gate failed (empty when it passed).
    notes : tuple of str
        Dropped rows, reference levels, truncated weights, convergence remarks.
    converged : bool
        Whether the propensity model converged to a finite, non-separated fit.
    n_dropped : int
        Rows of the two arms dropped for missing covariates.
    n_truncated : int
        IPTW weights set to the cap.
    reference_levels : tuple of (str, str)
        ``(column, reference level)`` of each categorical covariate.
    n_matched_target, n_matched_comparator : int
        Matched patients per arm (0 unless ``weighting == "matching"``).
    caliper : float or None
        Caliper in SDs of the logit propensity score (None unless matching with a
        caliper).
    model : str
        The propensity model: ``"ridge"`` or ``"logistic"``.
    levels_left_out : tuple of (str, int)
        Rare levels left out of the model and the gate (``"SEX[U]"``), with the
        number of patients of the two arms who have them.
    model_matrix : numpy.ndarray or None
        The model's design columns (no intercept), one row per row of ``scores``
        (None: no model was fitted); the adjusted curves use the same coding.
    """

    target: str
    comparator: str
    scores: pl.DataFrame
    balance: pl.DataFrame
    equipoise: float | None
    max_abs_smd_after: float | None
    n_target: int
    n_comparator: int
    ess_target: float
    ess_comparator: float
    weighting: str
    truncation: float | None
    diagnostics_passed: bool
    gate_reasons: tuple[str, ...]
    notes: tuple[str, ...]
    converged: bool
    n_dropped: int = 0
    n_truncated: int = 0
    reference_levels: tuple[tuple[str, str], ...] = ()
    n_matched_target: int = 0
    n_matched_comparator: int = 0
    caliper: float | None = None
    model: str = "logistic"
    levels_left_out: tuple[tuple[str, int], ...] = ()
    model_matrix: np.ndarray | None = field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------- helpers
def _smd(diff: float, sd: float) -> float:
    """SMD with the constant-column conventions: 0/0 -> 0, x/0 -> +-inf, NaN stays NaN."""
    if math.isnan(diff) or math.isnan(sd):
        return math.nan
    if sd == 0.0:
        # constant within each arm: equal means are balanced, different ones are not
        return 0.0 if abs(diff) == 0.0 else math.copysign(math.inf, diff)
    return diff / sd


def _weighted_mean(x: np.ndarray, w: np.ndarray) -> float:
    total = float(np.sum(w))
    if len(x) == 0 or not math.isfinite(total) or total <= 0.0:
        return math.nan
    return float(np.sum(w * x) / total)


def _smd_se(xt: np.ndarray, wt: np.ndarray, mt: float, xc: np.ndarray, wc: np.ndarray, mc: float, sd: float) -> float:
    """Standard error of the SMD after weighting (CohortMethod's ``sdmVariance`` for IPTW, Hripcsak
    et al. 2025): with the weights normalised to sum 1 within each arm,
    ``var = sum_arms sum_i w_i^2 (x_i - mean_arm)^2 / sd^2`` (sd: the SMD's denominator). Matched
    patients weigh 1, unmatched 0. NaN when it cannot be computed; 0 for a constant covariate."""
    if math.isnan(sd) or math.isnan(mt) or math.isnan(mc):
        return math.nan
    num = 0.0
    for x, w, m in ((xt, wt, mt), (xc, wc, mc)):
        total = float(np.sum(w))
        num += float(np.sum((w / total) ** 2 * (x - m) ** 2))
    if sd == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return math.sqrt(num) / sd


def _smd_p(smd: float, se: float, threshold: float) -> float:
    """One-sided p-value that |SMD| exceeds ``threshold`` (CohortMethod's ``computeBalanceP``):
    ``P(Z > (|SMD| - threshold) / se)``. A constant covariate (se 0) gives 1 below the threshold
    and 0 above it; NaN when either input is NaN."""
    if math.isnan(smd) or math.isnan(se):
        return math.nan
    excess = abs(smd) - threshold
    if se == 0.0 or math.isinf(se):
        return 0.0 if excess > 0 else 1.0
    return float(stats.norm.sf(excess / se))


def _balance(design: Design, treated: np.ndarray, weight: np.ndarray, threshold: float = 0.1) -> pl.DataFrame:
    t, c = treated == 1, treated == 0
    rows = []
    for name, x, flag, gate in zip(design.names, design.values, design.in_model, design.in_gate):
        variable, level = design.parts[name]
        xt, xc = x[t], x[c]
        mt = float(np.mean(xt)) if len(xt) else math.nan
        mc = float(np.mean(xc)) if len(xc) else math.nan
        vt = float(np.var(xt, ddof=1)) if len(xt) > 1 else math.nan
        vc = float(np.var(xc, ddof=1)) if len(xc) > 1 else math.nan
        # Denominator: the UNWEIGHTED pooled SD, for the SMD before *and* after
        # weighting (CohortMethod >= 5.0; Austin 2009, Stat Med 28:3083): weighting
        # then changes the numerator only, and a weighted SD cannot mask imbalance.
        sd = math.sqrt((vt + vc) / 2.0) if not (math.isnan(vt) or math.isnan(vc)) else math.nan
        wmt = _weighted_mean(xt, weight[t])
        wmc = _weighted_mean(xc, weight[c])
        smd_after = _smd(wmt - wmc, sd)
        se = _smd_se(xt, weight[t], wmt, xc, weight[c], wmc, sd)
        rows.append({
            "covariate": name,
            "variable": variable,
            "level": level,
            "mean_target_before": mt,
            "mean_comparator_before": mc,
            "smd_before": _smd(mt - mc, sd),
            "mean_target_after": wmt,
            "mean_comparator_after": wmc,
            "smd_after": smd_after,
            "sd_pooled": sd,
            "in_model": flag,
            "smd_se_after": se,
            "smd_p_after": _smd_p(smd_after, se, threshold),
            "in_gate": gate,
        })
    return pl.DataFrame(rows, schema=_BALANCE_SCHEMA)


def _ess(w: np.ndarray) -> float:
    s2 = float(np.sum(w**2))
    if len(w) == 0 or not math.isfinite(s2) or s2 <= 0.0:
        return math.nan
    return float(np.sum(w)) ** 2 / s2


def _balance_gate(gated: pl.DataFrame, max_smd: float, balance_alpha: float | None, after: str
                  ) -> tuple[float | None, list[str]]:
    """The balance part of the gate over the rows in it: (max |SMD| after, or None when an SMD could
    not be computed; reasons to fail). Every covariate at or above ``max_smd`` is named with its SMD."""
    reasons: list[str] = []
    smd_after = gated["smd_after"].to_numpy()
    if not len(smd_after):
        return None, reasons
    if np.isnan(smd_after).any():
        bad = gated.filter(pl.col("smd_after").is_nan())["covariate"].to_list()
        return None, [f"a diagnostic could not be computed: SMD after {after} for {', '.join(bad)}"]
    i = int(np.argmax(np.abs(smd_after)))
    max_abs = float(abs(smd_after[i]))
    if balance_alpha is None:
        if not max_abs < max_smd:
            worst = gated["covariate"][i]
            others = (gated.filter((pl.col("smd_after").abs() >= max_smd) & (pl.col("covariate") != worst))
                      .sort(pl.col("smd_after").abs(), descending=True))
            also = "; also " + ", ".join(f"{c} {abs(v):.3g}" for c, v in others.select("covariate", "smd_after")
                                          .iter_rows()) if others.height else ""
            reasons.append(f"max |SMD| after {after} {max_abs:.3g} >= {max_smd:g} ({worst}{also})")
        return max_abs, reasons
    # Hripcsak et al. 2025 (CohortMethod's sdmAlpha): fail only on covariates whose |SMD| is
    # significantly above the threshold, Bonferroni-corrected over the covariates tested
    k = gated.height
    p = gated["smd_p_after"].to_numpy()
    if np.isnan(p).any():
        bad = gated.filter(pl.col("smd_p_after").is_nan())["covariate"].to_list()
        reasons.append(f"a diagnostic could not be computed: SE of the SMD after {after} for {', '.join(bad)}")
    else:
        over = gated.filter(pl.col("smd_p_after") < balance_alpha / k)
        if over.height:
            reasons.append(
                f"|SMD| after {after} significantly above {max_smd:g} (p < {balance_alpha:g}/{k}, "
                f"Bonferroni) for " + ", ".join(f"{c} ({v:.3g})" for c, v in
                                                over.select("covariate", "smd_after").iter_rows()))
    return max_abs, reasons


# --------------------------------------------------------------------------- main entry
def fit_propensity(
    frame: pl.DataFrame,
    *,
    target: str,
    comparator: str,
    covariates: Sequence[str],
    categorical: Sequence[str] = (),
    arm: str = "ARM",
    id_col: str = "USUBJID",
    weighting: str = "iptw",
    truncation: float | None = 10.0,
    caliper: float | None = 0.2,
    max_smd: float = 0.1,
    min_equipoise: float = 0.2,
    equipoise_bounds: tuple[float, float] = (0.3, 0.7),
    balance_alpha: float | None = None,
    model: str = "ridge",
    ridge_variance: float = 10.0,
    min_level_prevalence: float = 0.02,
    balance: bool = True,
) -> PropensityResult:
    """Propensity score model, weights and balance diagnostics for one arm pair.

    Parameters
    ----------
    frame : polars.DataFrame
        One row per patient (e.g. ADSL restricted to the analysis population).
    target, comparator : str
        Arm values; ``treated`` is 1 for the target and 0 for the comparator.
    covariates : sequence of str
        Columns of the propensity model (logistic, with an intercept).
    categorical : sequence of str
        Covariates expanded to dummies (reference: the most frequent level).
    arm, id_col : str
        The arm and patient-id columns.
    weighting : {"iptw", "overlap", "matching"}
        Stabilised, truncated ATE inverse probability weights, overlap weights, or
        1:1 nearest-neighbour matching on the logit propensity score.
    truncation : float or None
        Cap on the stabilised IPTW weights (ignored for overlap weights and matching).
    caliper : float or None
        Matching caliper in SDs of the logit propensity score (None: no caliper);
        used by matching only.
    max_smd, min_equipoise, equipoise_bounds
        The gate's thresholds: max |SMD| after weighting (or matching) must be
        < ``max_smd``, equipoise (share of preference scores in the closed
        ``equipoise_bounds``) >= ``min_equipoise``.
    balance_alpha : float or None
        None (default): the balance rule is max |SMD| < ``max_smd``. A value: the
        rule of Hripcsak et al. (2025), CohortMethod's ``sdmAlpha``: a covariate
        fails only when its |SMD| is significantly above ``max_smd`` at this
        family-wise level (one-sided test, Bonferroni over the covariates).
    model : {"ridge", "logistic"}
        Ridge-penalised logistic regression on the standardised covariates
        (intercept unpenalised), or unpenalised maximum likelihood
        (:mod:`ketaoutcomes.models.ps_model`).
    ridge_variance : float
        Variance of the Normal(0, v) prior on each standardised coefficient (the
        ridge penalty is ``1 / (2 v)`` per squared coefficient); ridge only.
    min_level_prevalence : float
        Levels of a categorical covariate are left out of the model and the gate,
        rarest first, while together they are shared by fewer than this share of the
        patients of the two arms (0: none is left out).
    balance : bool
        False: the balance table and its part of the gate are not computed (an empty
        ``balance``, ``max_abs_smd_after`` None), for a caller that uses only the scores and
        weights (a bootstrap replicate); the scores, weights and every other field are the same.

    Returns
    -------
    PropensityResult
        See the module docstring for every convention.

    Raises
    ------
    KeyError
        A column is not in ``frame``.
    ValueError
        Bad options (unknown weighting, target == comparator, no covariates, a
        categorical name that is not a covariate, a text covariate not declared
        categorical, a caliper that is not positive, an unknown model, a ridge
        variance that is not positive, a min_level_prevalence outside [0, 0.5)).
    """
    spec = fit_spec(target, comparator, covariates, categorical, weighting, truncation, caliper, min_equipoise,
                    equipoise_bounds, model, ridge_variance, min_level_prevalence)
    missing = [c for c in (arm, id_col, *spec.covariates) if c not in frame.columns]
    if missing:
        raise KeyError(f"columns not in frame: {missing}")
    notes = list(spec.notes)
    data = frame.filter(pl.col(arm).is_in([target, comparator])).select(id_col, arm, *spec.covariates)
    data, n_dropped, drop_notes = drop_missing(data, spec.covariates, what="covariates")
    notes += drop_notes
    treated = (data[arm] == target).cast(pl.Int8).to_numpy().astype(np.int64)
    core = fit_core(spec, treated, CodedCovariates.of(data, spec.covariates, spec.categorical), notes)
    design, weight, reasons, trunc = core.design, core.weight, core.reasons, spec.truncation
    n_t, n_c, n_mt, n_mc = core.n_t, core.n_c, core.n_mt, core.n_mc
    ps, pref, match_set, X = core.ps, core.pref, core.match_set, core.X

    # --- balance
    # after matching: means over the matched patients (weight 1; the unmatched weigh 0)
    if balance:
        balance_weight = np.where(np.isnan(weight), 0.0, weight) if weighting == "matching" else weight
        table = _balance(design, treated, balance_weight, threshold=max_smd)
        after = "matching" if weighting == "matching" else "weighting"
        max_abs, balance_reasons = _balance_gate(table.filter(pl.col("in_gate")), max_smd, balance_alpha, after)
        reasons += balance_reasons
    else:
        table, max_abs = pl.DataFrame(schema=_BALANCE_SCHEMA), None

    if weighting == "matching":
        ess_t, ess_c = float(n_mt), float(n_mc)
    else:
        ess_t, ess_c = _ess(weight[treated == 1]), _ess(weight[treated == 0])

    scores = pl.DataFrame(
        {
            "USUBJID": data[id_col].cast(pl.String),
            "ARM": data[arm].cast(pl.String),
            "treated": treated.astype(np.int8),
            "ps": ps,
            "preference": pref,
            "weight": weight,
        },
        schema=_SCORES_SCHEMA,
    )
    if match_set is not None:
        scores = scores.with_columns(
            pl.col("weight").fill_nan(None), pl.Series("match_set", match_set, dtype=pl.Int64)
        ).with_columns(pl.when(pl.col("match_set") >= 0).then(pl.col("match_set")).alias("match_set"))
    reasons = list(dict.fromkeys(reasons))
    return PropensityResult(
        target=target,
        comparator=comparator,
        scores=scores,
        balance=table,
        equipoise=core.equipoise,
        max_abs_smd_after=max_abs,
        n_target=n_t,
        n_comparator=n_c,
        ess_target=ess_t,
        ess_comparator=ess_c,
        weighting=weighting,
        truncation=trunc,
        diagnostics_passed=not reasons,
        gate_reasons=tuple(reasons),
        notes=tuple(notes),
        converged=core.converged,
        n_dropped=n_dropped,
        n_truncated=core.n_truncated,
        reference_levels=tuple(design.refs),
        n_matched_target=n_mt,
        n_matched_comparator=n_mc,
        caliper=caliper if weighting == "matching" else None,
        model=model,
        levels_left_out=tuple(design.left_out),
        model_matrix=X,
    )


# --------------------------------------------------------------------------- report helper
def love_plot_data(results: Sequence[PropensityResult]) -> pl.DataFrame:
    """Balance rows of several comparisons stacked for a Love plot.

    Returns
    -------
    polars.DataFrame
        ``target``, ``comparator``, ``weighting``, ``diagnostics_passed`` and the
        balance columns (``covariate``, means, ``smd_before``, ``smd_after``,
        ``sd_pooled``, ``in_model``), plus ``abs_smd_before`` and ``abs_smd_after``.
    """
    schema = {
        "target": pl.String,
        "comparator": pl.String,
        "weighting": pl.String,
        "diagnostics_passed": pl.Boolean,
        **_BALANCE_SCHEMA,
        "abs_smd_before": pl.Float64,
        "abs_smd_after": pl.Float64,
    }
    frames = [
        r.balance.with_columns(
            pl.lit(r.target, pl.String).alias("target"),
            pl.lit(r.comparator, pl.String).alias("comparator"),
            pl.lit(r.weighting, pl.String).alias("weighting"),
            pl.lit(r.diagnostics_passed, pl.Boolean).alias("diagnostics_passed"),
            pl.col("smd_before").abs().alias("abs_smd_before"),
            pl.col("smd_after").abs().alias("abs_smd_after"),
        ).select(list(schema))
        for r in results
    ]
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="vertical")
