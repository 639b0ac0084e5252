"""Empirical calibration with negative controls (OHDSI EmpiricalCalibration's asymptotic method).

A negative control is an outcome the treatment cannot affect: its true log effect is 0, so what an
analysis estimates for it is random error (its standard error) plus the analysis' systematic error
(confounding it did not remove, selection, measurement). Schuemie et al. (2014, Stat Med 33:209)
model the systematic error as normal, ``N(mean, sd^2)``, shared by every estimate of the same
design, and fit it by maximum likelihood from the negative controls' estimates::

    log_estimate_i ~ N(mean, sd^2 + se_i^2)

(:func:`fit_null`, as ``EmpiricalCalibration::fitNull``). An estimate of the treatment effect is
then judged against that null rather than against 0: the calibrated p-value
(:func:`calibrate_p`, ``calibrateP``) and, under the constant-error model, the calibrated interval
(:func:`calibrate_ci`). The expected absolute systematic error (:func:`expected_absolute_systematic_error`,
``computeExpectedAbsoluteSystematicError``, "EASE") summarises the null in one number: E|b| for
b ~ N(mean, sd^2), 0 for an unbiased design.

:func:`calibration_gate` is this project's rule, stricter than CohortMethod's (where a missing
diagnostic passes): fewer than ``min_controls`` usable negative controls makes the calibrated result
"not evaluable" (it is not reported as calibrated); EASE >= ``ease_max`` fails.

Checked against EmpiricalCalibration 3.1.4's own R and C++ code on its example data
(``tests/reference/calibration_reference.R``, ``tests/unit/test_calibration.py``). Pure functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats

__all__ = [
    "EXTREME_LOG_ESTIMATE",
    "SystematicErrorNull",
    "calibrate_ci",
    "calibrate_p",
    "calibrated_log_estimate",
    "calibration_gate",
    "expected_absolute_systematic_error",
    "fit_null",
]

#: fitNull drops estimates with |log estimate| > log(100) (a relative risk under 0.01 or over 100)
#: before fitting: they are failed fits, not information about the systematic error.
EXTREME_LOG_ESTIMATE = math.log(100)

GateStatus = Literal["pass", "fail", "not_evaluable"]


@dataclass(frozen=True)
class SystematicErrorNull:
    """The fitted systematic-error distribution ``N(mean, sd^2)`` on the log scale.

    ``n`` negative controls were used; ``n_dropped`` were given but not usable (a missing or
    infinite estimate or standard error, a standard error <= 0, or |log estimate| > log(100)).
    ``log_likelihood`` is the maximised log-likelihood (``-logLikelihoodNull`` at the estimate).
    With no usable control, mean and sd are NaN (fitNull returns NA, NA). EmpiricalCalibration's
    asymptotic ``fitNull`` gives no interval for the mean or sd (only its MCMC variant does), so
    none is given here.
    """

    mean: float
    sd: float
    n: int
    n_dropped: int
    log_likelihood: float


def _usable(log_estimates, ses) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.asarray(log_estimates, dtype=float).ravel()
    s = np.asarray(ses, dtype=float).ravel()
    if x.shape != s.shape:
        raise ValueError(f"{x.size} log estimates but {s.size} standard errors: give one of each per control")
    if np.any(s < 0):
        raise ValueError(f"a standard error is negative ({float(s[s < 0][0])!r}): standard errors must be >= 0")
    keep = np.isfinite(x) & np.isfinite(s) & (s > 0) & (np.abs(x) <= EXTREME_LOG_ESTIMATE)
    return x[keep], s[keep], int(x.size - keep.sum())


def _profile(tau: float, x: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(mean, log-likelihood) maximised over the mean for a systematic-error sd ``tau``."""
    var = tau * tau + s * s
    w = 1.0 / var
    mean = float(np.sum(w * x) / np.sum(w))
    ll = float(-0.5 * np.sum(np.log(2 * math.pi * var) + (x - mean) ** 2 * w))
    return mean, ll


def fit_null(log_estimates, ses) -> SystematicErrorNull:
    """The systematic-error null fitted by maximum likelihood, as ``EmpiricalCalibration::fitNull``.

    Each usable control contributes the normal density of its log estimate with mean ``mean`` and
    variance ``sd^2 + se_i^2``. Non-finite estimates or standard errors, standard errors <= 0 and
    |log estimate| > log(100) are dropped and counted (fitNull drops the same, with a warning; it
    does not drop an SE of 0, which makes the likelihood degenerate at sd = 0). There is no prior on
    sd: the maximum may be on the boundary sd = 0 (controls no more dispersed than their standard
    errors), which is returned as 0.

    fitNull searches (mean, 1/sd^2) with Nelder-Mead from (0, 1) at optim's default tolerance; here
    the mean is profiled out (for a given sd it is the inverse-variance weighted mean) and the sd
    found by a grid over [0, range] refined by Brent's method, so the result is the maximum to ~1e-9,
    which fitNull's answer approaches to about 1e-4.
    """
    x, s, dropped = _usable(log_estimates, ses)
    if x.size == 0:
        return SystematicErrorNull(mean=math.nan, sd=math.nan, n=0, n_dropped=dropped, log_likelihood=math.nan)
    spread = float(np.max(x) - np.min(x))
    if spread == 0.0:
        mean, ll = _profile(0.0, x, s)
        return SystematicErrorNull(mean=mean, sd=0.0, n=int(x.size), n_dropped=dropped, log_likelihood=ll)
    # The maximising sd is below the estimates' range (beyond it every term only loses); the grid
    # guards against a second local maximum, Brent refines inside the best grid cell.
    grid = np.concatenate([[0.0], np.geomspace(spread * 1e-6, spread * 2, 240)])
    lls = np.array([_profile(t, x, s)[1] for t in grid])
    best = int(np.argmax(lls))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    res = optimize.minimize_scalar(lambda t: -_profile(t, x, s)[1], bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-12 * max(spread, 1.0)})
    tau = float(res.x)
    if _profile(0.0, x, s)[1] >= _profile(tau, x, s)[1]:
        tau = 0.0
    mean, ll = _profile(tau, x, s)
    return SystematicErrorNull(mean=mean, sd=tau, n=int(x.size), n_dropped=dropped, log_likelihood=ll)


def _combined_sd(null: SystematicErrorNull, se: float) -> float:
    return math.sqrt(null.sd**2 + se**2)


def calibrate_p(null: SystematicErrorNull, log_estimate: float, se: float, two_sided: bool = True,
                upper: bool = True) -> float:
    """The calibrated p-value of one estimate, as ``EmpiricalCalibration::calibrateP`` with a null.

    The estimate is compared with ``N(null.mean, null.sd^2 + se^2)``: one-sided p for the upper
    bound ``Phi((mean - x) / s)``, for the lower ``Phi((x - mean) / s)``; two-sided twice the
    smaller. NaN for a non-finite estimate or SE (calibrateP gives NA).
    """
    if not (math.isfinite(log_estimate) and math.isfinite(se)):
        return math.nan
    sd = _combined_sd(null, se)
    p_upper = float(stats.norm.cdf((null.mean - log_estimate) / sd))
    p_lower = float(stats.norm.cdf((log_estimate - null.mean) / sd))
    if two_sided:
        return 2 * min(p_upper, p_lower)
    return p_upper if upper else p_lower


def calibrated_log_estimate(null: SystematicErrorNull, log_estimate: float) -> float:
    """The point estimate with the null's mean systematic error removed (constant-error model)."""
    return log_estimate - null.mean


def calibrate_ci(null: SystematicErrorNull, log_estimate: float, se: float,
                 alpha: float = 0.05) -> tuple[float, float]:
    """The calibrated ``1 - alpha`` interval on the log scale, under the CONSTANT-ERROR MODEL.

    Constant-error model: the systematic error is assumed the same, ``N(null.mean, null.sd^2)``, at
    every true effect size, so an estimate of a true log effect ``t`` is ``N(t + mean, sd^2 + se^2)``
    and the interval is ``x - mean -/+ z * sqrt(sd^2 + se^2)``: the negative controls' null shifted.

    EmpiricalCalibration's ``calibrateConfidenceInterval`` fits a systematic-error model whose mean
    and sd may change with the true effect size, which needs positive controls (estimates with a
    known non-null effect, usually synthesised by injecting outcomes). With negative controls only,
    its ``convertNullToErrorModel(null)`` (mean slope 1, sd slope 0) is exactly this model, and
    ``calibrateConfidenceInterval`` then gives this interval (found there by ``uniroot``, to its
    ~1e-4 tolerance; here in closed form). Without positive controls an error that grows with the
    effect size is not corrected.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha!r}")
    if not (math.isfinite(log_estimate) and math.isfinite(se)):
        return math.nan, math.nan
    half = float(stats.norm.ppf(1 - alpha / 2)) * _combined_sd(null, se)
    centre = calibrated_log_estimate(null, log_estimate)
    return centre - half, centre + half


def expected_absolute_systematic_error(null: SystematicErrorNull) -> float:
    """EASE: E|b| for b ~ N(mean, sd^2), as ``computeExpectedAbsoluteSystematicError`` for a null.

    EmpiricalCalibration integrates in closed form; that is the folded-normal mean
    ``mean * (1 - 2 * Phi(-mean / sd)) + 2 * sd * phi(mean / sd)``, and ``|mean|`` when sd = 0.
    """
    mu, sd = null.mean, null.sd
    if sd == 0:
        return abs(mu)
    return float(mu * (1 - 2 * stats.norm.cdf(-mu / sd)) + 2 * sd * stats.norm.pdf(mu / sd))


def calibration_gate(null: SystematicErrorNull | None, n_usable: int, *, min_controls: int = 5,
                     ease_max: float = 0.25) -> tuple[GateStatus, str]:
    """Whether calibrated results may be reported: ``(status, one-line reason)``.

    * ``"not_evaluable"``: no null, or fewer than ``min_controls`` usable negative controls. This
      blocks the calibrated result (CohortMethod lets a diagnostic it cannot compute pass).
    * ``"fail"``: EASE >= ``ease_max``: the design's systematic error is too large to calibrate away.
    * ``"pass"`` otherwise.
    """
    if null is None or n_usable < min_controls:
        return "not_evaluable", (f"{n_usable} usable negative control(s), fewer than the {min_controls} "
                                 "needed to fit the systematic-error null: calibrated results are not evaluable")
    ease = expected_absolute_systematic_error(null)
    if not math.isfinite(ease):
        return "not_evaluable", f"the systematic-error null could not be fitted from {n_usable} negative controls"
    if ease >= ease_max:
        return "fail", (f"expected absolute systematic error {ease:.3f} >= {ease_max:g} "
                        f"(null mean {null.mean:.3f}, sd {null.sd:.3f}, {n_usable} negative controls)")
    return "pass", (f"expected absolute systematic error {ease:.3f} < {ease_max:g} "
                    f"(null mean {null.mean:.3f}, sd {null.sd:.3f}, {n_usable} negative controls)")
