"""Weighted survival models for inverse-probability-weighted comparisons.

Same house style as :mod:`ketaoutcomes.models.cox` and :mod:`ketaoutcomes.models.km`
(frames in, frozen results out, R's ``survival`` package as the oracle in
``tests/reference``), and the same result types: :func:`weighted_cox` returns a
:class:`~ketaoutcomes.models.cox.CoxResult`, :func:`weighted_kaplan_meier` a
:class:`~ketaoutcomes.models.km.KMResult`.
:func:`restricted_mean` gives the restricted mean survival time (RMST) from any
``KMResult``.

Conventions shared with the unweighted models (the helpers of
:mod:`~ketaoutcomes.models.common`, :mod:`~ketaoutcomes.models.cox` and
:mod:`~ketaoutcomes.models.km` are reused, not copied): the
event column is 1 = event, 0 = censored (convert ADaM ``CNSR`` with
:func:`~ketaoutcomes.derive.cnsr.cnsr_to_event`); rows with a missing value in
any column used are dropped and counted; weights must be finite and positive.

What the weights mean
---------------------
The weights enter the estimating equations as *case weights* (a row with weight
2 counts like two identical rows). For inverse-probability weights that gives the
right point estimates, but any variance that treats the weights as frequencies
is wrong. Hence:

* :func:`weighted_cox` reports the robust (sandwich) variance, as R's
  ``coxph(..., weights = w, robust = TRUE)``. It ignores the estimation of the
  weights themselves (the propensity model), which usually makes it somewhat
  conservative for IPTW hazard ratios.
* :func:`weighted_kaplan_meier` reports, by default, R's infinitesimal-jackknife
  (robust) variance, which is what ``survfit(..., weights = w)`` uses when the
  weights are not whole numbers; ``variance="greenwood"`` gives Greenwood's
  formula with weighted counts (R's ``robust = FALSE``), which understates the
  uncertainty for IPW. Neither accounts for the estimated weights: for IPTW the
  intervals are approximate; a bootstrap over the whole weighting procedure (or
  the Xie & Liu 2005 variance, not implemented here) would be better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from ketaoutcomes.models.common import (
    ci_band,
    drop_missing,
    event_indicator,
    level_codes,
    numeric,
    plural,
    quadratic_test,
)
from ketaoutcomes.models.cox import (
    CoxResult,
    check_cox_arguments,
    design_matrix,
    empty_cox,
    estimable,
    lr_degrees_of_freedom,
    summary_table,
)
from ketaoutcomes.models.cox_engine import fit_cox, risk_sets, robust_variance
from ketaoutcomes.models.km import KMResult, km_inputs, km_result, median_row

__all__ = ["KM_VARIANCES", "restricted_mean", "weighted_cox", "weighted_kaplan_meier"]

#: Variance options of :func:`weighted_kaplan_meier`.
KM_VARIANCES = ("robust", "greenwood")


def _weights(series: pl.Series) -> np.ndarray:
    w = numeric(series, "weights")
    if not np.all(np.isfinite(w)) or (w <= 0).any():
        bad = int((~np.isfinite(w) | (w <= 0)).sum())
        raise ValueError(f"weights column {series.name!r} must be finite and > 0 ({plural(bad, 'row')} not)")
    return w


# --------------------------------------------------------------------------- Cox
def weighted_cox(
    frame: pl.DataFrame,
    *,
    time: str,
    event: str,
    covariates: Sequence[str],
    weights: str,
    categorical: Mapping[str, Any] | None = None,
    strata: str | None = None,
    cluster: str | None = None,
    alpha: float = 0.05,
) -> CoxResult:
    """Weighted Cox model with a robust (sandwich) variance, as R's ``coxph(..., weights, robust = TRUE)``.

    Parameters
    ----------
    frame : polars.DataFrame
        One row per subject.
    time, event : str
        Event or censoring time, and 1 = event / 0 = censored (booleans accepted;
        ADaM CNSR: :func:`~ketaoutcomes.derive.cnsr.cnsr_to_event`).
    covariates : sequence of str
        Model columns in order; ``categorical`` names the ones expanded to
        dummies, exactly as in :func:`~ketaoutcomes.models.cox.cox_ph`.
    weights : str
        Column of positive case weights (for example inverse probability of
        treatment weights).
    categorical : mapping of str to level, optional
        ``{column: reference_level}``, as in ``cox_ph``.
    strata : str, optional
        Column defining strata with separate baseline hazards (R's ``strata()``).
    cluster : str, optional
        Column identifying clusters (for example subject id when a subject has
        several rows): the sandwich sums the influence within clusters, as R's
        ``cluster(id)``. Without it every row is its own cluster, as R's
        ``robust = TRUE``.
    alpha : float, default 0.05
        Wald intervals for the hazard ratios have coverage ``1 - alpha``.

    Returns
    -------
    CoxResult
        ``se`` is the robust standard error; ``z``, ``p_value`` and the HR
        interval are Wald from it, and ``wald_chi2`` uses the robust covariance
        (R's ``fit$wald.test``). ``n_events`` counts rows with an event
        (unweighted, as R's ``nevent``). ``loglik``/``loglik_null``/``lr_*`` are the
        weighted partial likelihood as R reports it. ``score_chi2`` and
        ``concordance`` are None (see Notes).

    Notes
    -----
    * The fit (Efron ties, weighted partial likelihood, R's mean-weight rule for
      tied deaths) is :func:`~ketaoutcomes.models.cox_engine.fit_cox`, the
      Newton-Raphson of ``cox_ph`` (R's stopping rule, then on to the maximum).
    * The robust variance is ``D'D`` with ``D = (w_i * r_i) V`` summed within
      clusters, where ``r_i`` are the **Efron** score residuals and ``V`` the
      model-based (inverse information) variance, which is exactly R's
      ``robust = TRUE`` (:func:`~ketaoutcomes.models.cox_engine.robust_variance`).
      lifelines 0.30.3's ``CoxPHFitter(robust=True)``, used before, builds it from
      score residuals that ignore ties; it equals R's when no event time is tied
      and otherwise differs by about 1e-4 relative on lung (see
      ``tests/reference/README.md``).
    * The likelihood-ratio test treats the weights as frequencies and the rows as
      independent; it is reported (R prints it too) but is not valid for IPW:
      use the robust Wald test. R's score and robust score tests are not
      computed (``score_chi2`` is None); nor is the weighted concordance.
    * Terms that cannot be estimated (a level without events, a constant term)
      are handled as in ``cox_ph``: reported as null with a note, and their
      rows left out of the fit.
    """
    covariates, categorical = check_cox_arguments(covariates, categorical, alpha)

    cols = [time, event, *covariates, weights] + [c for c in (strata, cluster) if c is not None]
    data, n_dropped, notes = drop_missing(frame, cols)
    n = data.height
    t = numeric(data[time], "time")
    if (t < 0).any():
        raise ValueError(f"time column {time!r} has negative values")
    d = event_indicator(data[event])
    w = _weights(data[weights])
    s_codes = level_codes(data[strata])[0] if strata is not None else None
    c_codes = level_codes(data[cluster])[0] if cluster is not None else None
    design, design_notes = design_matrix(data, covariates, categorical)
    notes += design_notes
    names = design.names
    n_events = int(d.sum())

    est = estimable(design, d, categorical, n_events)
    notes += est.notes
    if est.reason:
        return empty_cox(names, n, n_events, n_dropped, "efron", strata, alpha, [*notes, est.reason], None,
                         design.parts)
    keep, null_terms, fit_cols, fit_names = est.keep, est.null_terms, est.fit_cols, est.fit_names
    if s_codes is not None:
        s_fit = s_codes[keep]
        k = len(np.unique(s_fit)) - len(np.unique(s_fit[d[keep] == 1]))
        if k:
            notes.append(f"{k} {'stratum' if k == 1 else 'strata'} without events (no information)")

    X = design.X[np.ix_(keep, fit_cols)]
    tk, dk, wk = t[keep], d[keep], w[keep]
    sk = None if s_codes is None else s_codes[keep]
    ck = None if c_codes is None else c_codes[keep]
    rs = risk_sets(tk, dk, X, strata=sk, weights=wk, ties="efron")
    fit = fit_cox(rs)
    params, naive = fit.beta, fit.var
    converged = bool(fit.converged and np.all(np.isfinite(params)) and np.all(np.isfinite(naive)))
    if not fit.converged:
        notes.append(f"Newton-Raphson did not converge in {fit.iterations} iterations")

    cov = robust_variance(rs, params, naive, ck)
    se = np.sqrt(np.diag(cov))
    summary = summary_table(names, null_terms, fit_names, params, se, alpha)

    loglik, loglik_null = fit.loglik, fit.loglik_init  # both on the fitted rows
    lr_chi2 = 2 * (loglik - loglik_null)
    lr_df = lr_degrees_of_freedom(names, null_terms)
    lr_p = float(stats.chi2.sf(lr_chi2, lr_df))
    wald = quadratic_test(params, cov) if converged else None
    notes += [
        f"robust (sandwich) variance; weights from {weights}"
        + (f"; clustered on {cluster}" if cluster is not None else "; each row its own cluster"),
        "likelihood-ratio test treats weights as frequencies and rows as independent: not valid for IPW "
        "(use the robust Wald test)",
        "score test not computed (score_chi2 is None); weighted concordance not computed (None)",
    ]
    return CoxResult(
        summary=summary,
        n=n,
        n_events=n_events,
        n_dropped=n_dropped,
        loglik=loglik,
        loglik_null=loglik_null,
        lr_chi2=lr_chi2,
        lr_df=lr_df,
        lr_p=lr_p,
        wald_chi2=math.nan if wald is None else wald,
        score_chi2=None,
        concordance=None,
        ties="efron",
        strata=strata,
        alpha=alpha,
        notes=tuple(notes),
        converged=converged,
        entry=None,
        terms=tuple(names),
        term_parts=design.parts,
    )


# --------------------------------------------------------------------------- Kaplan-Meier
_WKM_SCHEMA = {
    "group": pl.String,
    "time": pl.Float64,
    "n_risk": pl.Float64,
    "n_event": pl.Float64,
    "n_censor": pl.Float64,
    "survival": pl.Float64,
    "std_err": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
}


def _wkm_one_group(time: np.ndarray, status: np.ndarray, w: np.ndarray, variance: str) -> dict[str, np.ndarray]:
    utime, u = np.unique(time, return_inverse=True)
    m = len(utime)
    w_at = np.bincount(u, weights=w, minlength=m)
    n_event = np.bincount(u, weights=w * status, minlength=m)
    n_censor = w_at - n_event
    n_risk = w_at[::-1].cumsum()[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1.0 - n_event / n_risk)
        left = n_risk - n_event  # weight surviving each time
        if variance == "greenwood":
            # Greenwood with weighted counts (R's survfit robust = FALSE): sum d / (n (n - d)).
            term = np.where(n_event > 0, n_event / (n_risk * left), 0.0)
            se_log = np.sqrt(np.cumsum(term))
        else:
            # Infinitesimal jackknife (R's robust = TRUE): the derivative of log S(t) with respect to
            # row i's weight is -sum_{t_j <= t} (dN_i(t_j) - h_j Y_i(t_j)) / (n_j - d_j), h_j = d_j / n_j,
            # so with G(t) = sum_{t_j <= t} h_j / (n_j - d_j):
            #   row still at risk after t:  G(t);   row leaving at u <= t:  G(u) - event_i / (n_u - d_u).
            # var(log S(t)) = sum_i w_i^2 * that^2 (the closed form avoids an n x m matrix).
            g = np.cumsum(np.where(n_event > 0, (n_event / n_risk) / left, 0.0))
            infl_leaving = g[u] - np.where(status == 1, 1.0 / left[u], 0.0)
            gone = np.cumsum(np.bincount(u, weights=(w * infl_leaving) ** 2, minlength=m))
            w2_after = np.bincount(u, weights=w**2, minlength=m)[::-1].cumsum()[::-1] - np.bincount(
                u, weights=w**2, minlength=m
            )
            se_log = np.sqrt(g**2 * w2_after + gone)
    se_log = np.where(np.isnan(se_log), np.inf, se_log)
    return {
        "time": utime,
        "n_risk": n_risk,
        "n_event": n_event,
        "n_censor": n_censor,
        "survival": surv,
        "se_log": se_log,
    }


def weighted_kaplan_meier(
    frame: pl.DataFrame,
    *,
    time: str,
    event: str,
    weights: str,
    group: str | None = None,
    alpha: float = 0.05,
    conf_type: str = "log",
    variance: str = "robust",
) -> KMResult:
    """Weighted Kaplan-Meier curves, as R's ``survfit(Surv(time, event) ~ group, weights = w)``.

    Parameters
    ----------
    frame : polars.DataFrame
        One row per subject.
    time, event : str
        Time and 1 = event / 0 = censored (booleans accepted).
    weights : str
        Column of positive case weights (e.g. inverse probability weights).
    group : str, optional
        Column defining the curves (sorted, labelled as strings); None gives one
        curve labelled ``"all"``.
    alpha : float, default 0.05
        Pointwise intervals have coverage ``1 - alpha``.
    conf_type : {"log", "log-log", "plain"}, default "log"
        Interval transform, as R's ``conf.type``.
    variance : {"robust", "greenwood"}, default "robust"
        ``"robust"``: infinitesimal-jackknife variance of ``log S(t)``, the sum
        over rows of (weight x derivative of ``log S(t)`` with respect to the
        row's weight) squared; this is R's ``survfit(..., robust = TRUE)``, its
        default when the weights are not whole numbers. ``"greenwood"``:
        Greenwood's formula with weighted counts, R's ``robust = FALSE`` (and its
        default for whole-number weights), which treats a weight of 2 as two
        subjects and so understates the uncertainty of an IPW curve.

    Returns
    -------
    KMResult
        ``table`` has one row per distinct time per group with ``n_risk``,
        ``n_event`` and ``n_censor`` as **weighted** sums (Float64, unlike
        ``kaplan_meier``), ``survival``, ``std_err`` (standard error of S(t), as
        R's ``summary(fit)$std.err``) and ``lower``/``upper``. ``medians`` has
        ``n`` (rows), ``events`` (weighted), ``median`` and its limits by R's
        ``print(survfit)`` rule. ``notes`` states the variance used.

    Notes
    -----
    For IPTW both variances are approximate: they treat the weights as known,
    ignoring the estimation of the propensity model. A bootstrap over the whole
    weighting procedure, or the Xie & Liu (2005) variance for adjusted survival
    curves (not implemented here), would be better. The survival estimate itself
    is the product-limit estimate with weighted counts, ``prod(1 - d_w / n_w)``.
    """
    if variance not in KM_VARIANCES:
        raise ValueError(f"variance must be one of {KM_VARIANCES}, not {variance!r}")
    data, n_dropped, notes, t, d, codes, labels, z = km_inputs(
        frame, time=time, event=event, group=group, alpha=alpha, conf_type=conf_type, extra=[weights])
    w = _weights(data[weights])

    tables: list[pl.DataFrame] = []
    medians: list[dict[str, Any]] = []
    for k, label in enumerate(labels):
        mask = codes == k
        g = _wkm_one_group(t[mask], d[mask], w[mask], variance)
        lower, upper = ci_band(g["survival"], g["se_log"], z, conf_type)
        with np.errstate(invalid="ignore"):
            std_err = g["survival"] * g["se_log"]
        tables.append(
            pl.DataFrame(
                {
                    "group": [label] * len(g["time"]),
                    "time": g["time"],
                    "n_risk": g["n_risk"],
                    "n_event": g["n_event"],
                    "n_censor": g["n_censor"],
                    "survival": g["survival"],
                    "std_err": std_err,
                    "lower": lower,
                    "upper": upper,
                },
                schema=_WKM_SCHEMA,
            ).with_columns(pl.col("std_err", "lower", "upper").fill_nan(None))
        )
        medians.append(median_row(label, int(mask.sum()), float(g["n_event"].sum()), g, lower, upper, notes))

    if variance == "robust":
        notes.append(
            f"weights from {weights}; variance: infinitesimal jackknife (R survfit robust = TRUE), weights treated "
            "as known: for IPTW the intervals are approximate (bootstrap or Xie & Liu variance would be better)"
        )
    else:
        notes.append(
            f"weights from {weights}; variance: Greenwood with weighted counts (R survfit robust = FALSE), i.e. "
            "case weights: understates the uncertainty for IPTW"
        )
    return km_result(tables, medians, table_schema=_WKM_SCHEMA, events_dtype=pl.Float64, alpha=alpha,
                     conf_type=conf_type, n_dropped=n_dropped, notes=notes)


# --------------------------------------------------------------------------- RMST
def restricted_mean(km: KMResult, *, horizon: float) -> pl.DataFrame:
    """Restricted mean survival time up to ``horizon`` per group, as R's ``print(survfit, rmean = horizon)``.

    Parameters
    ----------
    km : KMResult
        From :func:`~ketaoutcomes.models.km.kaplan_meier` or
        :func:`weighted_kaplan_meier` (the table must list every distinct time,
        as both do).
    horizon : float
        Upper limit of the integral (R's ``rmean``), > 0. If it is beyond a
        group's last time the curve is carried forward flat to it, as R does.

    Returns
    -------
    polars.DataFrame
        ``group``, ``horizon``, ``rmst`` (area under the KM step function from 0
        to ``horizon``), ``se``, ``lower``, ``upper``.

    Notes
    -----
    * The standard error is R's ``survmean``:
      ``sqrt(sum_j A_j^2 d_j / (n_j (n_j - d_j)))`` over event times ``t_j <=
      horizon``, where ``A_j`` is the area under the curve from ``t_j`` to the
      horizon and a time where ``n_j = d_j`` adds 0. It is the Greenwood
      (delta-method) variance. For a weighted curve it uses the weighted counts,
      as R does whatever the curve's ``robust`` setting, so it carries the same
      caveat as ``variance="greenwood"`` for IPW.
    * ``lower``/``upper`` are ``rmst -/+ z se`` with ``z`` from ``km.alpha``
      (R's print shows no interval).
    """
    if not horizon > 0 or not math.isfinite(horizon):
        raise ValueError("horizon must be a positive finite number")
    z = float(stats.norm.ppf(1 - km.alpha / 2))
    rows: list[dict[str, Any]] = []
    for (label,), g in km.table.group_by("group", maintain_order=True):
        time = g["time"].to_numpy().astype(float)
        surv = g["survival"].to_numpy().astype(float)
        n_risk = g["n_risk"].to_numpy().astype(float)
        n_event = g["n_event"].to_numpy().astype(float)
        keep = time <= horizon
        # R (survmean's pfun): times up to the horizon plus the horizon itself, the curve carried flat.
        grid = np.concatenate([[0.0], time[keep], [horizon]])
        heights = np.concatenate([[1.0], surv[keep]])
        rect = np.diff(grid) * heights  # rect[0]: 0 to the first time at S = 1
        with np.errstate(divide="ignore", invalid="ignore"):
            hh = np.where(n_risk - n_event == 0, 0.0, n_event / (n_risk * (n_risk - n_event)))[keep]
        # area after t_j up to the horizon, for each kept time j
        after = np.cumsum(rect[1:][::-1])[::-1]
        rmst = float(rect.sum())
        se = float(np.sqrt(np.sum(after**2 * hh)))
        rows.append(
            {"group": label, "horizon": float(horizon), "rmst": rmst, "se": se,
             "lower": rmst - z * se, "upper": rmst + z * se}
        )  # fmt: skip
    return pl.DataFrame(
        rows,
        schema={
            "group": pl.String,
            "horizon": pl.Float64,
            "rmst": pl.Float64,
            "se": pl.Float64,
            "lower": pl.Float64,
            "upper": pl.Float64,
        },
    )
