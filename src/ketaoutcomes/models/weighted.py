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
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
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
from ketaoutcomes.models.km import KMResult, km_inputs, km_result, median_row

__all__ = ["KM_VARIANCES", "restricted_mean", "weighted_cox", "weighted_kaplan_meier"]

#: Variance options of :func:`weighted_kaplan_meier`.
KM_VARIANCES = ("robust", "greenwood")


# lifelines' defaults stop like R (relative log-likelihood change < 1e-9) but with a
# damped Newton step, which leaves coefficients ~5e-6 (relative) short of the maximum
# on lung; iterate to the maximum instead (R itself is ~1e-8 from it).
_LIFELINES_FIT_OPTIONS = {"precision": 1e-11, "r_precision": 1e-15, "max_steps": 500}


def _weights(series: pl.Series) -> np.ndarray:
    w = numeric(series, "weights")
    if not np.all(np.isfinite(w)) or (w <= 0).any():
        bad = int((~np.isfinite(w) | (w <= 0)).sum())
        raise ValueError(f"weights column {series.name!r} must be finite and > 0 ({plural(bad, 'row')} not)")
    return w


# --------------------------------------------------------------------------- Cox
def _efron_score_residuals(
    time: np.ndarray, status: np.ndarray, X: np.ndarray, weights: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """Per-row Efron score residuals of one stratum (R's ``residuals(fit, "score")``).

    Unweighted residuals ``r_i`` (so that the weighted score is ``sum_i w_i r_i``),
    as R's ``coxscore2`` computes them for ``ties = "efron"`` with case weights: at
    an event time with ``d`` deaths the risk-set sums lose ``k/d`` of the deaths'
    share in step ``k`` (``k = 0..d-1``), each step's hazard is the deaths' mean
    weight over that denominator, and a death is at risk in step ``k`` with
    factor ``1 - k/d``. Vectorised over distinct times; no loop over rows.
    """
    n, p = X.shape
    if n == 0 or status.sum() == 0:
        return np.zeros((n, p))
    Xc = X - np.average(X, axis=0, weights=weights)  # residuals are invariant to centering
    lp = Xc @ beta
    risk = np.exp(lp - lp.max())  # so is a common scale of the risk scores
    utime, u = np.unique(time, return_inverse=True)
    m = len(utime)
    wr = weights * risk
    dead = status == 1

    def by_time(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        v = values if mask is None else values * (mask if values.ndim == 1 else mask[:, None])
        if v.ndim == 1:
            return np.bincount(u, weights=v, minlength=m)
        return np.column_stack([np.bincount(u, weights=v[:, j], minlength=m) for j in range(v.shape[1])])

    s0 = by_time(wr)[::-1].cumsum()[::-1]  # risk set: time >= t
    s1 = by_time(wr[:, None] * Xc)[::-1].cumsum(axis=0)[::-1]
    d0 = by_time(wr, dead)  # deaths at t
    d1 = by_time(wr[:, None] * Xc, dead)
    nd = np.bincount(u, weights=dead.astype(float), minlength=m).astype(np.int64)
    dw = by_time(weights, dead)

    # one row per (event time j, Efron step k)
    jj = np.repeat(np.arange(m), nd)
    first = np.repeat(np.cumsum(nd) - nd, nd)
    k = np.arange(len(jj)) - first
    frac = k / nd[jj]
    denom = s0[jj] - frac * d0[jj]
    xbar = (s1[jj] - frac[:, None] * d1[jj]) / denom[:, None]
    haz = (dw[jj] / nd[jj]) / denom

    def per_time(v: np.ndarray) -> np.ndarray:
        if v.ndim == 1:
            return np.bincount(jj, weights=v, minlength=m)
        return np.column_stack([np.bincount(jj, weights=v[:, c], minlength=m) for c in range(v.shape[1])])

    a = per_time(haz)  # sum_k h
    b = per_time(haz[:, None] * xbar)  # sum_k h xbar
    a_tie = per_time(frac * haz)  # sum_k (k/d) h
    b_tie = per_time((frac * haz)[:, None] * xbar)
    with np.errstate(invalid="ignore", divide="ignore"):
        xbar_mean = np.where(nd[:, None] > 0, per_time(xbar) / np.maximum(nd, 1)[:, None], 0.0)
    cum_a, cum_b = np.cumsum(a), np.cumsum(b, axis=0)

    dcol = dead.astype(float)[:, None]
    compensator = risk[:, None] * (
        Xc * cum_a[u][:, None] - cum_b[u] - dcol * (Xc * a_tie[u][:, None] - b_tie[u])
    )
    return dcol * (Xc - xbar_mean[u]) - compensator


def _robust_cov(
    time: np.ndarray,
    status: np.ndarray,
    X: np.ndarray,
    weights: np.ndarray,
    beta: np.ndarray,
    naive_cov: np.ndarray,
    strata: np.ndarray | None,
    cluster: np.ndarray | None,
) -> np.ndarray:
    """R's robust variance: ``crossprod(residuals(fit, "dfbeta", weighted = TRUE, collapse = cluster))``."""
    resid = np.zeros_like(X, dtype=float)
    groups = [np.arange(len(time))] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for idx in groups:
        resid[idx] = _efron_score_residuals(time[idx], status[idx], X[idx], weights[idx], beta)
    dfbeta = (weights[:, None] * resid) @ naive_cov
    if cluster is not None:
        _, c = np.unique(cluster, return_inverse=True)
        dfbeta = np.column_stack(
            [np.bincount(c.reshape(-1), weights=dfbeta[:, j]) for j in range(dfbeta.shape[1])]
        )
    return dfbeta.T @ dfbeta


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
    * The fit (Efron ties, weighted partial likelihood) is lifelines'
      ``CoxPHFitter(weights_col=...)``, iterated to the maximum (lifelines'
      default stopping leaves ~5e-6 relative error). statsmodels' PHReg takes no
      case weights.
    * The robust variance is computed here, not taken from lifelines: it is
      ``D'D`` with ``D = (w_i * r_i) V`` summed within clusters, where ``r_i`` are
      the **Efron** score residuals and ``V`` the model-based (inverse
      information) variance, which is exactly R's ``robust = TRUE``. lifelines
      0.30.3's own ``robust=True`` uses score residuals that ignore ties (each
      row, in its time-then-event sort order, is treated as having a distinct
      time); it equals R's when no event time is tied and otherwise differs by
      about 1e-4 relative on lung (see ``tests/reference/README.md``).
    * The likelihood-ratio test treats the weights as frequencies and the rows as
      independent; it is reported (R prints it too) but is not valid for IPW:
      use the robust Wald test. R's score and robust score tests are not
      computed (``score_chi2`` is None); nor is the weighted concordance.
    * Terms that cannot be estimated (a level without events, a constant term)
      are handled as in ``cox_ph``: reported as null with a note, and their
      rows left out of the fit.
    """
    from lifelines import CoxPHFitter  # heavy import, only needed here

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
    xcols = [f"x{j}" for j in range(X.shape[1])]
    pdf = pd.DataFrame(X, columns=xcols).assign(_t=tk, _e=dk, _w=wk)
    if sk is not None:
        pdf["_s"] = sk
    cph = CoxPHFitter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cph.fit(
            pdf, duration_col="_t", event_col="_e", weights_col="_w",
            strata=["_s"] if sk is not None else None, robust=False, fit_options=_LIFELINES_FIT_OPTIONS,
        )  # fmt: skip
    params = cph.params_.loc[xcols].to_numpy(dtype=float)
    naive = cph.variance_matrix_.loc[xcols, xcols].to_numpy(dtype=float)
    converged = bool(np.all(np.isfinite(params)) and np.all(np.isfinite(naive)))
    for message in dict.fromkeys(str(x.message).strip() for x in caught):
        if "weights are not integers" in message:
            continue  # lifelines' reminder that the naive variance is wrong for IPW: it is not used
        if "converge" in message.lower():
            converged = False
        notes.append(f"lifelines warned: {message.splitlines()[0]}")

    cov = _robust_cov(tk, dk, X, wk, params, naive, sk, ck)
    se = np.sqrt(np.diag(cov))
    summary = summary_table(names, null_terms, fit_names, params, se, alpha)

    loglik = float(cph.log_likelihood_)
    lr = cph.log_likelihood_ratio_test()
    lr_chi2 = float(lr.test_statistic)
    loglik_null = loglik - lr_chi2 / 2
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
