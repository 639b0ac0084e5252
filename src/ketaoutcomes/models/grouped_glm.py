"""The complementary log-log binomial GLM of the discrete-time sensitivity analysis, fitted on an
aggregated design (pure).

A person-period design repeats each subject's covariates on every one of its intervals, so a dense
design matrix (rows x (bands + terms)) grows with the intervals: some 10 million at a million
patients, several gigabytes as floats, more in a GLM library's working copies. Here the rows are
collapsed to **cells**, one per covariate pattern x band x interval length, each with its number of
intervals ``m`` and of events ``s``: the binomial log-likelihood of a cell is the sum of its rows'
(they share the linear predictor), so the maximum-likelihood estimate, the Fisher information and
the subject-clustered scores are those of the row-level fit, exactly. And the design is never
formed: a row's design is its band's indicator beside its pattern's covariate row ``Z[g]``, so the
information ``X'WX`` and ``X'Wz`` are put together from per-(pattern, band) sums (``bincount``) and
``Z``, in memory that grows with the patterns (at most the subjects), not with the rows.

Checked against R's ``glm`` and ``sandwich::vcovCL`` in ``tests/reference/test_diagnostics_vs_R.py``
(through :func:`ketaoutcomes.models.diagnostics.discrete_time_cox`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GroupedFit", "fit_grouped_cloglog"]

_EPS = np.finfo(float).eps


@dataclass(frozen=True)
class GroupedFit:
    """``params``: band effects then covariate terms; ``cov``: the inverse Fisher information
    (R's ``summary.glm`` ``cov.unscaled``; the binomial dispersion is 1); ``se_cluster``: the
    cluster-robust standard errors (R's ``sandwich::vcovCL``, HC1) or None; ``llf``; ``iterations``."""

    params: np.ndarray
    cov: np.ndarray
    se_cluster: np.ndarray | None
    llf: float
    converged: bool
    iterations: int


def _mean_parts(eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mu, dmu/deta and the binomial variance at ``eta`` (cloglog link), clipped as statsmodels'
    Binomial family clips mu."""
    e = np.exp(np.minimum(eta, 700.0))
    mu = np.clip(-np.expm1(-e), _EPS, 1 - _EPS)
    dmu = np.maximum(np.exp(np.minimum(eta, 700.0) - e), np.finfo(float).tiny)
    return mu, dmu, mu * (1 - mu)


def fit_grouped_cloglog(
    pattern: np.ndarray, band: np.ndarray, offset: np.ndarray, m: np.ndarray, s: np.ndarray, Z: np.ndarray,
    *, n_bands: int, cluster: np.ndarray | None = None, n_rows: int | None = None,
    tol: float = 1e-10, maxiter: int = 200,
) -> GroupedFit:
    """Fit ``cloglog P(event) = alpha[band] + Z[pattern] beta + offset`` on cells.

    Parameters
    ----------
    pattern, band : int arrays, one entry per cell
        The cell's covariate pattern (a row of ``Z``) and band (``0 .. n_bands - 1``).
    offset : float array
        The cell's offset (``log(length)``).
    m, s : arrays
        Intervals (trials) and events of the cell.
    Z : (patterns, terms) float array
        The covariate design of each pattern.
    cluster : int array, one entry per pattern, or None
        The cluster (subject) of each pattern, for cluster-robust standard errors.
    n_rows : int
        Rows (intervals) behind the cells, ``sum(m)``: the ``(N - 1) / (N - K)`` factor of HC1.
    tol
        Fisher scoring (R's ``glm.fit`` iterates the same weighted least squares) stops once no
        parameter moves by more than ``tol`` (relative to its size, at least 1), after one more
        step: Newton's quadratic convergence puts that step's estimate at machine precision.
    """
    G, p = Z.shape
    k = n_bands + p
    cell = pattern.astype(np.int64) * n_bands + band

    def information(w: np.ndarray) -> np.ndarray:
        A = np.bincount(cell, weights=w, minlength=G * n_bands).reshape(G, n_bands)
        info = np.empty((k, k))
        info[:n_bands, :n_bands] = np.diag(A.sum(axis=0))
        bz = A.T @ Z
        info[:n_bands, n_bands:] = bz
        info[n_bands:, :n_bands] = bz.T
        info[n_bands:, n_bands:] = (Z * A.sum(axis=1)[:, None]).T @ Z
        return info

    def cross(v: np.ndarray) -> np.ndarray:  # X'v over cells
        return np.r_[np.bincount(band, weights=v, minlength=n_bands), Z.T @ np.bincount(pattern, weights=v, minlength=G)]

    def linear(params: np.ndarray) -> np.ndarray:
        return params[:n_bands][band] + (Z @ params[n_bands:])[pattern] + offset

    # start as glm.fit does for a binomial, mu = (m * y + 0.5) / (m + 1): one weighted least-squares
    # step; then Fisher scoring steps, each solved for the step from the score at the current
    # estimate, so the estimate is as exact as the score (the solve of X'WX squares the design's
    # condition number: solved for the estimate itself, it lost some 8 digits on a cohort's design)
    mu = (s + 0.5) / (m + 1.0)
    eta = np.log(-np.log1p(-mu))
    params = np.zeros(k)
    converged, extra, it = False, False, 0
    for it in range(1, maxiter + 1):
        mu, dmu, var = _mean_parts(eta)
        w = m * dmu**2 / var
        if it == 1:
            params = np.linalg.solve(information(w), cross(w * (eta - offset + (s / m - mu) / dmu)))
            step = np.inf
        else:
            delta = np.linalg.solve(information(w), cross((s - m * mu) * dmu / var))
            params = params + delta
            step = np.max(np.abs(delta) / np.maximum(np.abs(params), 1.0))
        eta = linear(params)
        if extra:
            converged = True
            break
        extra = step <= tol
    mu, dmu, var = _mean_parts(eta)
    cov = np.linalg.inv(information(m * dmu**2 / var))
    llf = float(np.sum(s * np.log(mu) + (m - s) * np.log1p(-mu)))
    se_cluster = None
    if cluster is not None:
        r = (s - m * mu) * dmu / var  # each cell's score is its design row times r
        Rb = np.bincount(cell, weights=r, minlength=G * n_bands).reshape(G, n_bands)
        scores = np.column_stack([Rb, Z * Rb.sum(axis=1)[:, None]])  # per pattern
        n_clusters = int(cluster.max()) + 1
        if n_clusters != G or np.any(cluster != np.arange(G)):
            per = np.zeros((n_clusters, k))
            np.add.at(per, cluster, scores)
            scores = per
        n = int(m.sum()) if n_rows is None else n_rows
        vc = cov @ (scores.T @ scores) @ cov * n_clusters / (n_clusters - 1) * (n - 1) / (n - k)
        se_cluster = np.sqrt(np.diag(vc))
    return GroupedFit(params, cov, se_cluster, llf, converged, it)
