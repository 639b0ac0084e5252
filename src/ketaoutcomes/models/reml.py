"""The REML criterion of a linear mixed model with one grouping factor, from per-group sums (pure).

Model: ``y_i = X_i beta + Z_i b_i + e_i`` for each group ``i`` (a patient), ``b_i ~ N(0, sigma^2 Psi)``,
``e_i ~ N(0, sigma^2 I)``: statsmodels' ``MixedLM`` with ``exog_re = Z`` and no variance components,
whose ``Psi`` is its unscaled ``cov_re`` (the residual variance ``sigma^2`` and the fixed effects
``beta`` profiled out). With ``M_i = Psi^-1 + Z_i'Z_i`` (Woodbury and the determinant lemma),

* ``log |V_i| = log |Psi| + log |M_i|`` for ``V_i = I + Z_i Psi Z_i'``;
* ``A = X'V^-1 X = X'X - sum_i (Z_i'X_i)' M_i^-1 (Z_i'X_i)``, and likewise ``X'V^-1 y``, ``y'V^-1 y``;
* ``beta = A^-1 X'V^-1 y``, ``qf = y'V^-1 y - beta' X'V^-1 y`` (the residuals' quadratic form);
* the profile REML log-likelihood (statsmodels' ``MixedLM.loglike`` with ``reml=True``, to rounding:
  ``tests/unit/test_reml.py``), with ``m = N - p``::

      -sum_i log|V_i| / 2 - m log(qf) / 2 - log|A| / 2 - m log(2 pi) / 2 + m log(m) / 2 - m / 2

Everything a likelihood evaluation needs is in sums per group computed once (``Z_i'Z_i``,
``Z_i'X_i``, ``Z_i'y_i``) and the totals ``X'X``, ``X'y``, ``y'y``: an evaluation is a few array
operations over the groups, where statsmodels loops over them in Python (some 100 microseconds a
group and a pass; a fit makes about 40 passes).

:func:`reml_optimum` maximises it over the Cholesky factor of ``Psi`` (L-BFGS-B with the analytic
gradient, :func:`reml_gradient`). ``ketaoutcomes.models.trajectory`` hands the optimum to statsmodels
as its start: statsmodels still fits the model (its optimizer checks that the start is its maximum,
and it computes the covariance of the estimates), in one iteration instead of a dozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

__all__ = ["GroupSums", "RemlFit", "reml_gradient", "reml_loglike", "reml_optimum"]


@dataclass(frozen=True)
class GroupSums:
    """Per-group cross products of ``Z`` with ``Z``, ``X`` and ``y``, and the totals of ``X`` and ``y``."""

    ZZ: np.ndarray  # (G, q, q)
    ZX: np.ndarray  # (G, q, p)
    Zy: np.ndarray  # (G, q)
    XX: np.ndarray  # (p, p)
    Xy: np.ndarray  # (p,)
    yy: float
    n_obs: int

    @classmethod
    def of(cls, y: np.ndarray, X: np.ndarray, Z: np.ndarray, groups: np.ndarray) -> GroupSums:
        """The sums of rows ``y``, ``X``, ``Z`` grouped by ``groups`` (any order of the rows)."""
        y, X, Z = (np.asarray(a, dtype=float) for a in (y, X, Z))
        _, code = np.unique(groups, return_inverse=True)
        order = np.argsort(code, kind="stable")
        y, X, Z, code = y[order], X[order], Z[order], code[order]
        starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
        return cls(ZZ=np.add.reduceat(Z[:, :, None] * Z[:, None, :], starts, axis=0),
                   ZX=np.add.reduceat(Z[:, :, None] * X[:, None, :], starts, axis=0),
                   Zy=np.add.reduceat(Z * y[:, None], starts, axis=0),
                   XX=X.T @ X, Xy=X.T @ y, yy=float(y @ y), n_obs=len(y))

    @property
    def q(self) -> int:
        return self.ZZ.shape[1]

    @property
    def p(self) -> int:
        return self.XX.shape[0]


@dataclass(frozen=True)
class _Parts:
    loglike: float
    beta: np.ndarray
    qf: float
    A: np.ndarray
    M_inv: np.ndarray
    W: np.ndarray  # M_i^-1 Z_i'X_i
    u: np.ndarray  # M_i^-1 Z_i'(y_i - X_i beta)


def _parts(s: GroupSums, psi: np.ndarray) -> _Parts:
    psi_inv = np.linalg.inv(psi)
    M = psi_inv[None] + s.ZZ
    M_inv = np.linalg.inv(M)
    W = M_inv @ s.ZX
    MZy = np.einsum("gij,gj->gi", M_inv, s.Zy)
    A = s.XX - np.einsum("gqi,gqj->ij", s.ZX, W)
    b = s.Xy - np.einsum("gqi,gq->i", s.ZX, MZy)
    c = s.yy - float(np.einsum("gq,gq->", s.Zy, MZy))
    beta = np.linalg.solve(A, b)
    qf = c - float(b @ beta)
    m = s.n_obs - s.p
    logdet_v = float(np.linalg.slogdet(M)[1].sum()) + len(M) * float(np.linalg.slogdet(psi)[1])
    ll = (-logdet_v / 2 - m * np.log(qf) / 2 - float(np.linalg.slogdet(A)[1]) / 2
          - m * np.log(2 * np.pi) / 2 + m * np.log(m) / 2 - m / 2)
    return _Parts(float(ll), beta, qf, A, M_inv, W, MZy - W @ beta)


def reml_loglike(s: GroupSums, psi: np.ndarray) -> float:
    """The profile REML log-likelihood at the unscaled random-effects covariance ``psi`` (q x q)."""
    return _parts(s, np.asarray(psi, dtype=float)).loglike


def _cholesky(theta: np.ndarray, q: int) -> np.ndarray:
    L = np.zeros((q, q))
    L[np.tril_indices(q)] = theta
    return L


def reml_gradient(s: GroupSums, theta: np.ndarray) -> np.ndarray:
    """The gradient of :func:`reml_loglike` at ``Psi = L L'``, with respect to the lower triangle
    ``theta`` of ``L`` (row by row, ``numpy.tril_indices``).

    With ``dll = tr(D dPsi)``: ``D = -(G Psi^-1 - Psi^-1 S_M Psi^-1) / 2 + m / (2 qf) Psi^-1 S_u Psi^-1
    + Psi^-1 S_W Psi^-1 / 2``, where ``S_M = sum M_i^-1``, ``S_u = sum u_i u_i'`` (``u_i = M_i^-1
    Z_i'r_i``, the residuals at the GLS ``beta``: the derivative through ``beta`` is 0 there) and
    ``S_W = sum W_i A^-1 W_i'`` (``W_i = M_i^-1 Z_i'X_i``); then ``d/dL = 2 D L``."""
    return _loglike_and_gradient(s, theta)[1]


def _loglike_and_gradient(s: GroupSums, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`reml_loglike` at ``Psi = L L'`` and :func:`reml_gradient`, from one pass over the groups."""
    q = s.q
    L = _cholesky(np.asarray(theta, dtype=float), q)
    psi = L @ L.T
    pr = _parts(s, psi)
    psi_inv = np.linalg.inv(psi)
    m = s.n_obs - s.p
    S_M = pr.M_inv.sum(axis=0)
    S_u = pr.u.T @ pr.u
    S_W = np.einsum("gip,pr,gjr->ij", pr.W, np.linalg.inv(pr.A), pr.W)
    D = (-(len(pr.M_inv) * psi_inv - psi_inv @ S_M @ psi_inv) / 2
         + m / (2 * pr.qf) * psi_inv @ S_u @ psi_inv + psi_inv @ S_W @ psi_inv / 2)
    return pr.loglike, (2 * D @ L)[np.tril_indices(q)]


@dataclass(frozen=True)
class RemlFit:
    """The maximum found: ``psi`` (unscaled random-effects covariance), the GLS ``beta`` there, the
    residual variance ``scale`` (``qf / (N - p)``), the log-likelihood and the optimizer's evaluations."""

    psi: np.ndarray
    beta: np.ndarray
    scale: float
    loglike: float
    evaluations: int


def reml_optimum(s: GroupSums) -> RemlFit | None:
    """Maximise :func:`reml_loglike` over the Cholesky factor of ``Psi``, from ``Psi = I`` (statsmodels'
    own start), by L-BFGS-B with :func:`reml_gradient`; the criterion is divided by the number of
    observations, as statsmodels does. None when the maximum is not a finite positive definite
    ``Psi`` (a variance at the boundary, a singular design): statsmodels then starts where it
    always does."""
    q, n = s.q, s.n_obs
    theta0 = np.eye(q)[np.tril_indices(q)]

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        ll, grad = _loglike_and_gradient(s, theta)
        return -ll / n, -grad / n

    try:
        with np.errstate(divide="raise", over="raise", invalid="raise"):
            r = optimize.minimize(f, theta0, jac=True, method="L-BFGS-B",
                                  options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 500})
            L = _cholesky(r.x, q)
            psi = L @ L.T
            np.linalg.cholesky(psi)  # positive definite, or LinAlgError
            pr = _parts(s, psi)
    except (np.linalg.LinAlgError, FloatingPointError, ValueError):
        return None
    if not (np.all(np.isfinite(psi)) and np.all(np.isfinite(pr.beta)) and pr.qf > 0 and np.isfinite(pr.loglike)):
        return None
    return RemlFit(psi, pr.beta, pr.qf / (n - s.p), pr.loglike, int(r.nfev))
