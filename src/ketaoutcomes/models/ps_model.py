"""The propensity model of :func:`ketaoutcomes.models.propensity.fit_propensity`: a logistic
regression of the target arm on the design columns, ridge-penalised (the default) or not, and the
rule for covariate levels too rare to model.

Pure functions on numpy arrays; nothing raises for a statistical problem (a fit that fails returns
no scores and says why in its notes).

**Ridge** (``model="ridge"``, the default; OHDSI CohortMethod also regularises its propensity
model). The columns are standardised, ``z_j = (x_j - mean_j) / sd_j`` with the SD's divisor n (as
glmnet standardises), and the fit maximises the penalised log-likelihood

    loglik(a, b) - sum_j b_j^2 / (2 * variance)

over the intercept ``a`` (never penalised) and the coefficients ``b`` of the standardised columns:
the posterior mode under a Normal(0, ``variance``) prior on each log-odds ratio per SD of its
covariate. It is glmnet's ``glmnet(x, y, family = "binomial", alpha = 0, lambda = 1 / (n *
variance), standardize = TRUE)`` (tests/reference/ps_ridge_reference.R checks it). The penalised
log-likelihood is strictly concave, so it has one maximum and it is finite even when the arms are
separated (a covariate level that only one arm has), where the unpenalised fit runs off to
infinity.

*Penalty choice.* ``variance = 10`` (prior SD 3.2 log-odds per SD of a covariate), fixed, not
cross-validated (CohortMethod cross-validates a Laplace prior with Cyclops). The aim of a
propensity model is balance, not prediction, and a penalty leaves part of the confounding in
place: it pulls a coefficient b towards 0 by about ``b / (variance * I)``, with ``I`` its
information (about ``n * share * (1 - share)`` per SD of the covariate: some 40 in the smallest
pairs of the default cohort, hundreds in most), i.e. by ``b / (variance * sqrt(I))`` standard
errors. For a strong confounder (b = 2 per SD, as prior failed trials) in a pair with I = 50 that
is 0.03 SE with variance 10, but 0.3 SE with variance 1, which on the default cohort's relapse
pair of intranasal esketamine raised the max |SMD| after weighting of prior failed trials from
0.097 (unpenalised) to 0.115 (variance 4: 0.102; 10: 0.099; 25: 0.098). A coefficient the data
cannot bound (separation) is still held finite by the prior. Cross-validation would choose a
penalty for predicting the arm, typically a stronger one, and add a random fold split; this fit
is deterministic.

*Algorithm.* Newton-Raphson on the penalised log-likelihood from ``a = logit(mean y)``, ``b = 0``,
halving a step that does not increase it; converged when the largest change of a standardised
coefficient is below 1e-10 (at most 100 iterations).

**Unpenalised** (``model="logistic"``): maximum likelihood by statsmodels' ``Logit`` (Newton, at
most 100 iterations), as R's ``glm(..., family = binomial)``. It does not converge when the arms
are (quasi-)separated; the caller's gate then fails.

**Rare covariate levels** (:func:`rare_levels`). A level of a categorical covariate shared by very
few patients cannot be balanced, or even measured, by an SMD: with 18 patients of sex U in 2,000
the SD of its indicator is about 0.1, so one patient of 450 on a weight of 2 moves its SMD by 0.04
and a handful of weights decide whether it passes 0.1; and a route none of whose patients has the
level separates the unpenalised model. Levels are therefore left out of the propensity model,
where they count as the reference level, from the rarest up, for as long as the levels left out
*together* are shared by fewer than p = ``min_prevalence`` of the patients compared (both arms).
So at most that share of the patients has a level the model does not see, which bounds what the
rule can do to the estimate: an imbalance left in such levels shifts a log hazard ratio by about
the difference in their prevalence between the weighted arms (of the order of p) times their own
log hazard ratio for the outcome (p = 2% and a level that doubled the hazard: about 0.014, a
tenth of the standard error of a route-vs-SSRI log HR in a cohort of 2,000). The reference level
(the most frequent) is never left out. The balance gate checks the same coding (the caller's
business: the reference level's row becomes the reference or the rare levels), and the rare
levels' own rows are still reported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from statsmodels.discrete.discrete_model import Logit

__all__ = ["PS_MODELS", "PsFit", "fit_ps_model", "rare_levels"]

#: Propensity models :func:`fit_ps_model` knows.
PS_MODELS = ("ridge", "logistic")

_MAXITER = 100
_TOL = 1e-10


@dataclass(frozen=True)
class PsFit:
    """A fitted propensity model.

    Attributes
    ----------
    ps : numpy.ndarray or None
        Fitted probabilities of the target arm (None when nothing finite could be fitted).
    coef : numpy.ndarray or None
        Intercept then one coefficient per column of ``X``, on the columns' own scale.
    converged : bool
    iterations : int
    notes : tuple of str
    """

    ps: np.ndarray | None
    coef: np.ndarray | None
    converged: bool
    iterations: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


def _expit(eta: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-eta))


def _log1pexp(eta: np.ndarray) -> np.ndarray:
    """``log(1 + exp(eta))`` without overflow: ``max(eta, 0) + log1p(exp(-|eta|))`` (the same numbers as
    ``np.logaddexp(0, eta)`` to rounding, in a third of its time)."""
    out = np.abs(eta)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(eta, 0.0)
    return out


def _ridge(y: np.ndarray, X: np.ndarray, variance: float, freq: np.ndarray | None = None,
           start: np.ndarray | None = None) -> PsFit:
    n, p = X.shape
    # Dt: the design transposed, (p + 1, n): a row of ones, then the columns standardised, written in
    # place (X - mean computed once, no column_stack copy). Rows of n numbers in a row make the products
    # with it contiguous, and the information matrix is S S' of S = Dt sqrt(w) (BLAS's syrk, half the
    # products of Dt w D): the fit of a bootstrap draw's 147,000 patterns took 45 ms against 73.
    Dt = np.empty((p + 1, n))
    Dt[0] = 1.0
    Xc = Dt[1:]
    if freq is None:
        mean = X.mean(axis=0)
        sd = X.std(axis=0)  # divisor n, as glmnet standardises
        ybar = float(np.mean(y))
        np.subtract(X.T, mean[:, None], out=Xc)
    else:  # row i stands for freq[i] rows: the fit of the rows repeated (up to rounding)
        total = float(freq.sum())
        mean = X.T @ freq / total
        np.subtract(X.T, mean[:, None], out=Xc)
        sd = np.sqrt((Xc * Xc) @ freq / total)
        ybar = float(freq @ y) / total
    if np.any(sd == 0.0):
        raise ValueError("constant columns must be left out of the propensity model")
    Xc /= sd[:, None]
    pen = np.r_[0.0, np.full(p, 1.0 / variance)]  # the intercept is not penalised
    theta = np.zeros(p + 1)
    theta[0] = math.log(ybar / (1.0 - ybar))
    if start is not None and start.shape == (p + 1,) and np.isfinite(start).all():
        # from given coefficients (the columns' own scale) in this fit's standardised coordinates
        theta = np.r_[start[0] + float(start[1:] @ mean), start[1:] * sd]
    S = np.empty_like(Dt)

    def objective(t: np.ndarray) -> tuple[float, np.ndarray]:
        eta = t @ Dt  # kept: the next iteration's (or the scores') linear predictor, not computed twice
        ll = y * eta - _log1pexp(eta)
        return float(np.sum(ll) if freq is None else freq @ ll) - 0.5 * float(np.sum(pen * t * t)), eta

    f, eta = objective(theta)
    converged = False
    it = 0
    for it in range(1, _MAXITER + 1):
        mu = _expit(eta)
        w = mu * (1.0 - mu)
        if freq is not None:
            w *= freq
        grad = Dt @ (y - mu if freq is None else freq * (y - mu)) - pen * theta
        np.multiply(Dt, np.sqrt(w), out=S)
        hess = S @ S.T + np.diag(pen)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while True:  # step halving: the penalised log-likelihood must not decrease
            candidate = theta + scale * step
            f_new, eta_new = objective(candidate)
            if f_new >= f - 1e-12 * (1.0 + abs(f)) or scale < 1e-10:
                break
            scale /= 2.0
        theta, f, eta = candidate, f_new, eta_new
        if np.max(np.abs(scale * step)) < _TOL:
            converged = True
            break
    b = theta[1:] / sd
    coef = np.r_[theta[0] - float(np.sum(theta[1:] * mean / sd)), b]
    ps = _expit(eta)
    notes = () if converged else (f"ridge Newton-Raphson stopped after {_MAXITER} iterations without converging",)
    return PsFit(ps=ps, coef=coef, converged=converged, iterations=it, notes=notes)


def _logistic(y: np.ndarray, X: np.ndarray) -> PsFit:
    notes: list[str] = []
    D = np.column_stack([np.ones(len(y)), X])
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        fit = Logit(y, D).fit(method="newton", maxiter=_MAXITER, disp=0, warn_convergence=False)
    converged = bool(fit.mle_retvals.get("converged", False))
    params = np.asarray(fit.params, dtype=float)
    if any("separation" in str(w.message).lower() for w in caught):
        notes.append("statsmodels warned of perfect separation")
        converged = False
    if not np.all(np.isfinite(params)):
        notes.append("propensity model has non-finite coefficients")
        return PsFit(ps=None, coef=None, converged=False, notes=tuple(notes))
    if not converged:
        notes.append(f"Newton-Raphson stopped after {_MAXITER} iterations without converging (possible separation)")
    return PsFit(ps=_expit(D @ params), coef=params, converged=converged,
                 iterations=int(fit.mle_retvals.get("iterations", 0)), notes=tuple(notes))


def fit_ps_model(y: np.ndarray, X: np.ndarray, *, model: str = "ridge", variance: float = 10.0,
                 freq: np.ndarray | None = None, start: np.ndarray | None = None) -> PsFit:
    """Fit the propensity model of ``y`` (1 target, 0 comparator) on the columns of ``X`` (no
    intercept column: one is added; no constant column). See the module docstring.

    ``freq`` (ridge only): row i counts ``freq[i]`` times (> 0), a frequency weight: the fit of the
    rows repeated so, up to rounding (the bootstrap's draws of a pair as counts of its distinct rows).
    ``start`` (ridge only; ignored unless one finite value per coefficient): the Newton iterations
    start from these coefficients (intercept first, the columns' own scale), not from the empty
    model: the same maximum (the penalised likelihood has one), to rounding, in fewer iterations
    when the start is near it (a bootstrap draw's fit from the whole sample's).

    Never raises for a statistical problem: a fit that fails has ``ps`` None and says why.
    """
    if model not in PS_MODELS:
        raise ValueError(f"model must be one of {PS_MODELS}, not {model!r}")
    if not (isinstance(variance, (int, float)) and math.isfinite(variance) and variance > 0):
        raise ValueError(f"variance must be a positive number, not {variance!r}")
    if (freq is not None or start is not None) and model != "ridge":
        raise ValueError("frequency weights and a start are for the ridge model only")
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float).reshape(len(y), -1)
    try:
        with np.errstate(all="ignore"):
            return _ridge(y, X, float(variance), freq, start) if model == "ridge" else _logistic(y, X)
    except (np.linalg.LinAlgError, ValueError, ZeroDivisionError, FloatingPointError) as exc:
        return PsFit(ps=None, coef=None, converged=False,
                     notes=(f"propensity model could not be fitted: {type(exc).__name__}: {exc}",))


def rare_levels(counts: Mapping[str, int], reference: str, min_prevalence: float) -> list[str]:
    """The levels of one categorical covariate left out of the propensity model and the balance
    gate: from the rarest up (ties: label order), never the reference level, for as long as the
    levels left out together are shared by fewer than ``min_prevalence`` of the patients
    (``counts``: patients per level, summing to the patients compared). See the module docstring.
    """
    n = sum(counts.values())
    if n == 0 or min_prevalence <= 0:
        return []
    out: list[str] = []
    total = 0
    for level, k in sorted(((lvl, k) for lvl, k in counts.items() if lvl != reference), key=lambda t: (t[1], t[0])):
        if (total + k) / n >= min_prevalence:
            break
        out.append(level)
        total += k
    return out
