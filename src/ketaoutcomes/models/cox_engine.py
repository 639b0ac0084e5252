"""The Cox partial likelihood and its Newton-Raphson fit, vectorised in numpy.

The estimation behind :func:`ketaoutcomes.models.cox.cox_ph` and
:func:`ketaoutcomes.models.weighted.weighted_cox`. Pure functions on arrays: the
data are sorted once (:func:`risk_sets`), then every evaluation of the partial
likelihood, its score and its information (:func:`partial_likelihood`) is a fixed
number of passes over the rows, O(n p^2), with no Python loop over rows or event
times (only over strata). It follows R's ``survival`` (``coxph``, C routines ``coxfit6`` and
``agfit4``):

* **Risk sets.** A row with exit time ``b`` (and entry time ``a``, for
  counting-process data) is at risk at ``t`` when ``a < t <= b``, within its
  stratum. The sums over a risk set, ``S0 = sum w r``, ``S1 = sum w r x`` (r =
  exp(x'beta)), are cumulative sums over distinct (stratum, time) groups from the
  last time back; rows not yet entered are subtracted in the same way.
* **Ties.** Breslow: every death at ``t`` sees the whole risk set. Efron: at a
  time with ``d`` deaths, step ``k = 0..d-1`` removes ``k/d`` of the deaths'
  share from the risk set, and each step carries the deaths' mean weight
  (R's ``meanwt``). The steps enter only through sums over each event time of
  scalar functions of their denominators (see ``_Sums``), so ties cost nothing
  special: day-level ties and continuous times take the same passes.
* **Information without n x p x p arrays.** The second-moment sums,
  ``sum_t c_t S2(t)`` with ``S2 = sum w r x x'``, are rewritten as
  ``X' diag(w r C) X``, where ``C`` of a row is the sum of ``c_t`` over the event
  times at which it is at risk (a cumulative sum): one matrix product.
* **Case weights** enter as R's ``weights`` (a row with weight 2 counts as two
  identical rows; with Efron ties R's mean weight of the tied deaths is used). :func:`robust_variance` is R's ``robust = TRUE`` sandwich,
  from the score residuals (:func:`score_residuals`, R's ``residuals(fit,
  "score")``), summed within clusters when given.
* **Newton-Raphson** (:func:`fit_cox`) as ``coxfit6``: start at zero, stop when
  the log-likelihood changes by at most ``eps`` (1e-9) relative within
  ``max_iter`` (20) iterations, halve the step when the log-likelihood falls,
  solve with R's ``cholesky2`` tolerance. R returns that iterate, which is ~1e-8
  (relative) short of the maximum; here Newton steps continue (at most
  ``polish`` of them) until a step moves no coefficient by more than 1e-9
  relative, so the estimate is the maximum to machine precision and does not
  depend on the path.

Covariates are centred at their weighted means (as R does); estimates,
log-likelihoods and residuals do not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

__all__ = [
    "CoxFit",
    "RiskSets",
    "fit_cox",
    "partial_likelihood",
    "risk_sets",
    "robust_variance",
    "score_residuals",
]

TIES = ("efron", "breslow")


@dataclass(frozen=True)
class RiskSets:
    """Rows sorted by stratum and time, grouped by distinct (stratum, time): what every
    evaluation of the partial likelihood needs (built once by :func:`risk_sets`)."""

    order: np.ndarray  # (n,) the original row at each sorted position
    X: np.ndarray  # (n, p) covariates, centred at their weighted means, in sorted order
    center: np.ndarray  # (p,) the means subtracted
    weights: np.ndarray  # (n,) case weights, sorted
    group: np.ndarray  # (n,) group (distinct stratum and exit time) of each sorted row
    group_start: np.ndarray  # (m,) first sorted row of each group
    strata_bounds: np.ndarray  # (k + 1,) the groups of stratum s are strata_bounds[s]:strata_bounds[s + 1]
    entry_group: np.ndarray | None  # (n,) with delayed entry: the last group of the row's stratum at or
    #                                  before its entry time (-1 if none): the row is at risk after it
    entry_rows: np.ndarray | None  # the rows with entry_group >= 0, by entry_group ...
    entry_ptr: np.ndarray | None  # (m + 1,) ... group g's being entry_rows[entry_ptr[g]:entry_ptr[g + 1]]
    event_groups: np.ndarray  # (E,) the groups with at least one death
    death_rows: np.ndarray  # (D,) sorted positions of the deaths, by group
    death_start: np.ndarray  # (E,) where each event group's deaths start in death_rows
    death_event: np.ndarray  # (D,) the event group (0..E-1) of each death
    death_weight: np.ndarray  # (E,) summed weight of the deaths of each event group
    step_event: np.ndarray  # (S,) event group (0..E-1) of each tie step
    step_frac: np.ndarray  # (S,) share of the deaths removed from the risk set: k/d (Efron), 0 (Breslow)
    step_weight: np.ndarray  # (S,) weight of the step: mean death weight (Efron), all of it (Breslow)
    score_base: np.ndarray  # (p,) sum of w x over the deaths (centred x)
    ties: str

    @property
    def n(self) -> int:
        return len(self.order)

    @property
    def p(self) -> int:
        return self.X.shape[1]


@dataclass(frozen=True)
class CoxFit:
    """A Newton-Raphson fit (:func:`fit_cox`).

    ``beta`` the estimate; ``var`` the model-based variance (the inverse of the
    information at ``beta``; NaN when it is singular); ``loglik``, ``score`` and
    ``information`` at ``beta``; the same at the start (zero, unless ``init`` was
    given) as ``loglik_init``, ``score_init``, ``information_init`` (R's
    ``loglik[1]`` and the score test); ``iterations`` counts likelihood
    evaluations after the first, as R's ``iter``; ``converged`` is R's criterion
    (relative change of the log-likelihood at most ``eps`` within ``max_iter``).
    """

    beta: np.ndarray
    var: np.ndarray
    loglik: float
    score: np.ndarray
    information: np.ndarray
    loglik_init: float
    score_init: np.ndarray
    information_init: np.ndarray
    iterations: int
    converged: bool


# --------------------------------------------------------------------------- setup
def risk_sets(
    time: np.ndarray,
    status: np.ndarray,
    X: np.ndarray,
    *,
    entry: np.ndarray | None = None,
    strata: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    ties: str = "efron",
) -> RiskSets:
    """Sort and group the data once for :func:`partial_likelihood` and :func:`fit_cox`.

    ``time`` is the exit time, ``status`` 1 = event, 0 = censored, ``X`` the
    (n, p) design, ``entry`` the entry time of counting-process rows (at risk
    when ``entry < t <= time``; must be below ``time``), ``strata`` any codes
    (separate baseline hazards), ``weights`` positive case weights. The caller
    checks its inputs (missing values, signs); this only sorts. O(n log n).
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, not {ties!r}")
    time = np.asarray(time, dtype=float)
    n = len(time)
    X = np.asarray(X, dtype=float).reshape(n, -1)
    dead_in = np.asarray(status) == 1
    w_in = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if strata is None:
        s_in = np.zeros(n, dtype=np.int64)
        order = np.argsort(time, kind="stable")
    else:
        s_in = np.unique(np.asarray(strata), return_inverse=True)[1].reshape(-1).astype(np.int64)
        order = np.lexsort((time, s_in))
    t = time[order]
    s = s_in[order]
    w = w_in[order]
    dead = dead_in[order]
    center = (w @ X) / w.sum() if n else np.zeros(X.shape[1])
    Xs = X[order]
    Xs -= center

    new = np.ones(n, dtype=bool)
    if n:
        new[1:] = (t[1:] != t[:-1]) | (s[1:] != s[:-1])
    group_start = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    m = len(group_start)
    group_time = t[group_start]
    group_stratum = s[group_start]
    change = np.flatnonzero(group_stratum[1:] != group_stratum[:-1]) + 1 if m else np.zeros(0, np.int64)
    strata_bounds = np.concatenate([[0], change, [m]]).astype(np.int64)

    entry_group = entry_rows = entry_ptr = None
    if entry is not None:
        e = np.asarray(entry, dtype=float)[order]
        entry_group = np.full(n, -1, dtype=np.int64)
        row_bounds = np.searchsorted(group, strata_bounds)  # groups are sorted, so are their rows
        for k in range(len(strata_bounds) - 1):
            g0, g1 = strata_bounds[k], strata_bounds[k + 1]
            r0, r1 = row_bounds[k], row_bounds[k + 1]
            # last group of the stratum with time <= entry: the row is not at risk up to it
            entry_group[r0:r1] = g0 + np.searchsorted(group_time[g0:g1], e[r0:r1], side="right") - 1
        entry_group[entry_group < np.repeat(strata_bounds[:-1], np.diff(row_bounds))] = -1
        entry_rows = np.flatnonzero(entry_group >= 0)
        entry_rows = entry_rows[np.argsort(entry_group[entry_rows], kind="stable")]
        entry_ptr = np.concatenate([[0], np.cumsum(np.bincount(entry_group[entry_rows], minlength=m))])

    death_rows = np.flatnonzero(dead)
    death_group = group[death_rows]  # sorted
    first_death = np.ones(len(death_rows), dtype=bool)
    first_death[1:] = death_group[1:] != death_group[:-1]
    death_start = np.flatnonzero(first_death)
    event_groups = death_group[death_start]
    nd = np.diff(np.append(death_start, len(death_rows)))
    E = len(event_groups)
    death_event = np.repeat(np.arange(E), nd)
    wd = w[death_rows]
    death_weight = np.add.reduceat(wd, death_start) if E else np.zeros(0)
    if ties == "efron":
        step_event = death_event
        step_frac = (np.arange(len(death_rows)) - death_start[death_event]) / nd[death_event]
        step_weight = (death_weight / nd)[death_event]
    else:
        step_event = np.arange(E)
        step_frac = np.zeros(E)
        step_weight = death_weight
    score_base = wd @ Xs[death_rows]
    return RiskSets(
        order, Xs, center, w, group, group_start, strata_bounds, entry_group, entry_rows, entry_ptr, event_groups,
        death_rows, death_start, death_event, death_weight, step_event, step_frac, step_weight, score_base, ties,
    )  # fmt: skip


# --------------------------------------------------------------------------- sums over risk sets
def _suffix_sums(a: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sums from each group to the end of its stratum (``bounds`` as ``strata_bounds``)."""
    out = np.empty_like(a)
    for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True):
        out[b0:b1] = np.cumsum(a[b0:b1][::-1], axis=0)[::-1]
    return out


def _prefix_sums(a: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sums from the start of each group's stratum up to the group."""
    out = np.empty_like(a)
    for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True):
        out[b0:b1] = np.cumsum(a[b0:b1], axis=0)
    return out


def _segment_sums(values: np.ndarray, rows: np.ndarray, ptr: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``sum values[k] * X[rows[k]]`` over each segment ``ptr[g]:ptr[g + 1]`` of ``rows``: one sparse
    (segments x n) product, a single pass over the rows without an (n, p) temporary."""
    a = sparse.csr_matrix((values, rows, ptr), shape=(len(ptr) - 1, X.shape[0]))
    return np.asarray(a @ X).reshape(len(ptr) - 1, X.shape[1])


@dataclass(frozen=True)
class _Sums:
    """What one evaluation at ``beta`` needs, per row and per event group (E of them).

    At an event group with risk-set sums ``S0 = R0 + D0``, ``S1 = R1 + D1`` (R: rows
    that do not die then, D: its deaths), tie step ``k`` (share ``f`` of the deaths
    removed, ``g = 1 - f``, weight ``sw``) has ``den = R0 + g D0 = q S0`` and mean
    ``xbar = (r1 + g d1) / q`` with ``r1 = R1 / S0``, ``d1 = D1 / S0``. Sums over the
    steps of powers of ``1/q`` (between 1 and d) are all the p-dimensional algebra
    needs, so no (deaths x p) array is formed; everything is relative to ``S0``, so
    nothing overflows where doubles still hold the risk scores, and ``xbar`` is built
    from R1 and D1 (not S1 - f D1), free of cancellation.
    """

    shift: float  # risk scores are exp(lp - shift)
    risk: np.ndarray  # (n,) exp(lp - shift)
    wr: np.ndarray  # (n,) weights * risk
    s0: np.ndarray  # (E,) S0
    r1: np.ndarray  # (E, p) R1 / S0
    d1: np.ndarray  # (E, p) D1 / S0
    log_den: np.ndarray  # (E,) sum sw log(den)
    a1: np.ndarray  # (E,) sum sw / q
    g1: np.ndarray  # (E,) sum sw g / q
    f1: np.ndarray  # (E,) sum sw f / q
    a2: np.ndarray  # (E,) sum sw / q^2
    g2: np.ndarray  # (E,) sum sw g / q^2
    gg2: np.ndarray  # (E,) sum sw g^2 / q^2
    f2: np.ndarray  # (E,) sum sw f / q^2
    fg2: np.ndarray  # (E,) sum sw f g / q^2

    def xbar_sum(self) -> np.ndarray:
        """(E, p): sum over the steps of sw * xbar."""
        return self.r1 * self.a1[:, None] + self.d1 * self.g1[:, None]


def _sums(rs: RiskSets, beta: np.ndarray) -> _Sums:
    m = len(rs.group_start)
    lp = rs.X @ beta
    top = float(lp.max()) if len(lp) else 0.0
    # only to keep exp() finite (n * e^500 is still a double); the results do not depend on it
    shift = top if top > 500 else 0.0
    with np.errstate(over="ignore", under="ignore"):
        risk = np.exp(lp - shift)
    wr = rs.weights * risk
    n = len(wr)
    ptr = np.append(rs.group_start, n)
    g0 = np.add.reduceat(wr, rs.group_start) if m else np.zeros(0)
    g1 = _segment_sums(wr, np.arange(n), ptr, rs.X)
    s0 = _suffix_sums(g0, rs.strata_bounds)
    s1 = _suffix_sums(g1, rs.strata_bounds)
    if rs.entry_group is not None:  # rows that enter at or after t are not at risk at t
        we = wr[rs.entry_rows]
        s0 = s0 - _suffix_sums(np.bincount(rs.entry_group[rs.entry_rows], weights=we, minlength=m), rs.strata_bounds)
        s1 = s1 - _suffix_sums(_segment_sums(we, rs.entry_rows, rs.entry_ptr, rs.X), rs.strata_bounds)
    wd = wr[rs.death_rows]
    dptr = np.append(rs.death_start, len(wd))
    d0 = np.add.reduceat(wd, rs.death_start) if len(wd) else np.zeros(0)
    d1 = _segment_sums(wd, rs.death_rows, dptr, rs.X)
    eg = rs.event_groups
    s0e = s0[eg]
    r0, r1 = (s0e - d0) / s0e, (s1[eg] - d1) / s0e[:, None]  # the rows at risk that do not die then
    d0, d1 = d0 / s0e, d1 / s0e[:, None]
    j, f, sw = rs.step_event, rs.step_frac, rs.step_weight
    g = 1.0 - f
    q = r0[j] + g * d0[j]
    E = len(eg)

    def per_event(v: np.ndarray) -> np.ndarray:
        return np.bincount(j, weights=v, minlength=E)

    inv = sw / q
    inv2 = inv / q
    log_den = per_event(sw * np.log(q)) + rs.death_weight * np.log(s0e)
    return _Sums(
        shift, risk, wr, s0e, r1, d1, log_den, per_event(inv), per_event(inv * g), per_event(inv * f),
        per_event(inv2), per_event(inv2 * g), per_event(inv2 * g * g), per_event(inv2 * f), per_event(inv2 * f * g),
    )  # fmt: skip


def partial_likelihood(
    rs: RiskSets, beta: np.ndarray, *, derivatives: bool = True
) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """Log partial likelihood at ``beta``, with its score (gradient) and information
    (minus the Hessian) unless ``derivatives`` is False. O(n p^2)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a coefficient running to infinity
        return _partial_likelihood(rs, np.asarray(beta, dtype=float), derivatives)


def _partial_likelihood(
    rs: RiskSets, beta: np.ndarray, derivatives: bool
) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    z = _sums(rs, beta)
    loglik = float(rs.score_base @ beta - z.log_den.sum() - z.shift * rs.step_weight.sum())
    if not derivatives:
        return loglik, None, None
    score = rs.score_base - z.xbar_sum().sum(axis=0)
    # information = sum over steps of sw (S2 - f D2) / den - sw xbar xbar'. The S2 and D2 parts are
    # X' diag(c) X with c = w r (sum of a1 over the event groups a row is at risk at, minus f1 at its
    # own death); the xbar part is a quadratic form in R1 and D1 per event group.
    m = len(rs.group_start)
    at_group = np.zeros(m)
    at_group[rs.event_groups] = z.a1 / z.s0  # the hazard increment (scaled by exp(shift))
    cum = _prefix_sums(at_group, rs.strata_bounds)
    c_row = cum[rs.group]
    if rs.entry_group is not None:
        c_row = c_row - np.where(rs.entry_group >= 0, cum[np.maximum(rs.entry_group, 0)], 0.0)
    c = z.wr * c_row
    c[rs.death_rows] -= z.wr[rs.death_rows] * (z.f1 / z.s0)[rs.death_event]
    cross = (z.r1 * z.g2[:, None]).T @ z.d1
    info = (
        (rs.X * c[:, None]).T @ rs.X
        - (z.r1 * z.a2[:, None]).T @ z.r1 - cross - cross.T - (z.d1 * z.gg2[:, None]).T @ z.d1
    )
    return loglik, score, info


# --------------------------------------------------------------------------- Newton-Raphson
#: R's ``coxph.control(toler.chol)``: a Cholesky pivot below this share of the largest diagonal is zero.
TOLER_CHOL = np.finfo(float).eps ** 0.75


def _cholesky2(info: np.ndarray, toler: float = TOLER_CHOL) -> tuple[np.ndarray, np.ndarray]:
    """R's ``cholesky2``: ``info = L D L'`` with unit lower ``L``; a pivot below ``toler`` times the
    largest diagonal (or not finite) is set to 0, its column taken as aliased. Returns ``L`` and ``D``."""
    p = info.shape[0]
    a = np.array(info, dtype=float)
    top = float(np.max(np.diag(a))) if p else 0.0
    eps = toler * top if top > 0 else toler
    piv = np.zeros(p)
    for i in range(p):
        pivot = a[i, i]
        if not np.isfinite(pivot) or pivot < eps:
            a[i + 1 :, i] = 0.0
            continue
        piv[i] = pivot
        col = a[i + 1 :, i] / pivot
        a[i + 1 :, i + 1 :] -= np.outer(col, a[i + 1 :, i])
        a[i + 1 :, i] = col
    return np.tril(a, -1) + np.eye(p), piv


def _newton_step(info: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, bool]:
    """``info^-1 score`` as R's ``chsolve2`` (aliased columns get no step), and whether ``info``
    had full rank."""
    if len(score) == 0:
        return np.zeros(0), True
    L, piv = _cholesky2(info)
    full = bool(np.all(piv > 0))
    y = np.linalg.solve(L, score)
    y = np.divide(y, piv, out=np.zeros_like(y), where=piv > 0)
    return np.linalg.solve(L.T, y), full


def _inverse(info: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return np.full_like(info, np.nan)


def fit_cox(
    rs: RiskSets,
    *,
    init: np.ndarray | None = None,
    max_iter: int = 20,
    eps: float = 1e-9,
    polish: int = 10,
) -> CoxFit:
    """Maximise the partial likelihood by Newton-Raphson, as R's ``coxph`` (see the module notes).

    Raises ``numpy.linalg.LinAlgError`` when the information at the start is
    singular by R's rule (``toler.chol``: collinear covariates). Later, as R,
    a column whose pivot vanishes (a coefficient running to infinity) takes no
    step.
    """
    beta = np.zeros(rs.p) if init is None else np.asarray(init, dtype=float).copy()
    loglik, score, info = partial_likelihood(rs, beta)
    loglik_init, score_init, info_init = loglik, score, info
    step, full_rank = _newton_step(info, score)
    if not full_rank:
        raise np.linalg.LinAlgError(
            "Cox model: the information matrix at the start is singular (are covariates collinear?)"
        )
    new = beta + step
    converged, halving, iterations = False, False, 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        new_loglik, new_score, new_info = partial_likelihood(rs, new)
        if not np.isfinite(new_loglik):
            new_loglik = -np.inf  # beyond what doubles hold: treated as worse, the step is halved
        elif not halving and abs(new_loglik - loglik) <= eps * abs(new_loglik):
            beta, loglik, score, info = new, new_loglik, new_score, new_info
            converged = True
            break
        if iterations == max_iter:  # R returns the last iterate
            if np.isfinite(new_loglik):
                beta, loglik, score, info = new, new_loglik, new_score, new_info
            break
        if new_loglik < loglik:  # worse: halve the step (R's coxfit6)
            halving = True
            new = (new + beta) / 2
            continue
        halving = False
        beta, loglik, score, info = new, new_loglik, new_score, new_info
        new = beta + _newton_step(info, score)[0]
    if converged:
        # R stops here, ~1e-8 short of the maximum; a few more Newton steps reach it.
        for _ in range(polish):
            step, full_rank = _newton_step(info, score)
            if not full_rank:
                break
            cand = beta + step
            c_loglik, c_score, c_info = partial_likelihood(rs, cand)
            if not (np.isfinite(c_loglik) and c_loglik >= loglik - 1e-12 * max(1.0, abs(loglik))):
                break
            beta, loglik, score, info = cand, c_loglik, c_score, c_info
            if np.all(np.abs(step) <= 1e-7 * (1 + np.abs(beta))):  # what is left is O(step^2)
                break
    return CoxFit(beta, _inverse(info), loglik, score, info, loglik_init, score_init, info_init, iterations,
                  converged)


# --------------------------------------------------------------------------- residuals and robust variance
def score_residuals(rs: RiskSets, beta: np.ndarray) -> np.ndarray:
    """Per-row score residuals (n, p) in the original row order, unweighted, as R's
    ``residuals(fit, "score")``: the weighted score is ``sum_i w_i r_i``.

    A death at ``t`` contributes ``x - xbar`` (averaged over its Efron steps);
    every row at risk at an event time loses ``risk * (x - xbar) * dLambda`` there,
    where a death at its own time counts in step ``k`` with factor ``1 - k/d``
    (R's ``coxscore2`` and ``agscore3``).
    """
    beta = np.asarray(beta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = _sums(rs, beta)
    m = len(rs.group_start)
    # per event group, over its steps: a = sum h, b = sum h xbar, with h = sw / den the hazard
    # increment; a_tie, b_tie the same weighted by f (a death is at risk in step k with 1 - k/d)
    a, b = z.a1 / z.s0, (z.r1 * z.a2[:, None] + z.d1 * z.g2[:, None]) / z.s0[:, None]
    a_tie, b_tie = z.f1 / z.s0, (z.r1 * z.f2[:, None] + z.d1 * z.fg2[:, None]) / z.s0[:, None]
    xbar_death = z.xbar_sum() / rs.death_weight[:, None]  # mean of xbar over the steps
    at_a, at_b = np.zeros(m), np.zeros((m, rs.p))
    at_a[rs.event_groups], at_b[rs.event_groups] = a, b
    cum_a, cum_b = _prefix_sums(at_a, rs.strata_bounds), _prefix_sums(at_b, rs.strata_bounds)
    ca, cb = cum_a[rs.group], cum_b[rs.group]
    if rs.entry_group is not None:
        before = rs.entry_group >= 0
        eg = np.maximum(rs.entry_group, 0)
        ca = ca - np.where(before, cum_a[eg], 0.0)
        cb = cb - np.where(before[:, None], cum_b[eg], 0.0)
    resid = -z.risk[:, None] * (rs.X * ca[:, None] - cb)
    dr, de = rs.death_rows, rs.death_event
    xd = rs.X[dr]
    resid[dr] += (xd - xbar_death[de]) + z.risk[dr][:, None] * (xd * a_tie[de][:, None] - b_tie[de])
    out = np.empty_like(resid)
    out[rs.order] = resid
    return out


def robust_variance(
    rs: RiskSets, beta: np.ndarray, var: np.ndarray, cluster: np.ndarray | None = None
) -> np.ndarray:
    """R's robust (sandwich) variance, ``crossprod(residuals(fit, "dfbeta", weighted = TRUE,
    collapse = cluster))``: ``D'D`` with ``D = (w_i r_i) var`` summed within clusters
    (``cluster`` in the original row order; without it each row is its own cluster)."""
    resid = score_residuals(rs, beta)
    w = np.empty(rs.n)
    w[rs.order] = rs.weights
    dfbeta = (w[:, None] * resid) @ var
    if cluster is not None:
        c = np.unique(np.asarray(cluster), return_inverse=True)[1].reshape(-1)
        dfbeta = np.column_stack([np.bincount(c, weights=dfbeta[:, k]) for k in range(dfbeta.shape[1])])
    return dfbeta.T @ dfbeta
