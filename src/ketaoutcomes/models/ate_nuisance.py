"""The nuisance models of the adjusted curves (:mod:`ketaoutcomes.models.ate`) and their influence
functions: a Cox model (of the outcome, or of censoring) and the logistic propensity model (pure,
numpy).

What R's riskRegression (2022.11.28) computes for ``ate()`` with a ``coxph`` outcome model, a
``coxph`` censoring model and a ``glm`` treatment model, written out so that each piece can be
checked against it (``tests/reference/ate_reference.R``):

* **Baseline hazard** (riskRegression's ``baseHaz_cpp``): at each distinct event time ``t_j``
  with ``d_j`` events, Breslow ``d_j / S0_j``, or Efron (survival's ``agsurv``)
  ``sum_{k=0}^{d_j-1} 1 / (S0_j - (k / d_j) Se_j)``, where ``S0_j`` sums ``exp(z'b)`` over the
  patients with time ``>= t_j`` and ``Se_j`` over those with the event at ``t_j``. A prediction is
  ``1 - exp(-exp(z'b) Lambda0(t))`` (not the product-limit form), and null past the last observed
  time.
* **Influence function** (``iidCox``), on riskRegression's scale (the IF divided by n, so that the
  variance is the sum of squares): of the coefficients, ``IFb_i = V U_i`` with ``V`` the inverse
  information and ``U_i`` patient i's score residual; of the cumulative baseline hazard,
  ``IFL_i(t) = d_i 1(T_i <= t) / S0(T_i) - exp(z_i'b) sum_{t_j <= min(t, T_i)} lambda_j / S0_j -
  IFb_i' sum_{t_j <= t} E_j lambda_j`` with ``E_j = S1_j / S0_j``; of a prediction for covariates
  z at t, ``exp(z'b) (IFL_i(t) + Lambda0(t) z'IFb_i)``, times ``S(t | z)`` for a risk. The IF of
  the baseline *hazard* at an event time is the increment of that of the cumulative one.
* **Ties.** riskRegression's score residual (``IFbeta_cpp``) sums the compensator over the event
  times as ``sum_{t_j <= T_i} (z_i - E_j) / S0_j``, without the number of events ``d_j`` at a tied
  time; it is the exact score residual (R's ``residuals(coxph, "dfbeta")``, Efron or Breslow) only
  without tied event times (checked: on survival's lung, with 26 tied death days, the two differ by up
  to 0.005 against coefficients' IFs of about 0.02; without ties, by 4e-17). riskRegression still
  does so in its 2026 versions. Here ``tie_handling = "standard"`` (the default) uses the exact
  score residuals (:func:`ketaoutcomes.models.cox_engine.score_residuals`, R's ``dfbeta``), and
  ``tie_handling = "riskRegression-2022.11.28"`` riskRegression's sum, to reproduce its numbers. The
  rest of the IF (the baseline hazard's, with the Breslow ``S0`` even for an Efron fit) is
  riskRegression's in both: exact for Breslow, and for Efron equal to first order.

**Propensity model.** ``P(A = 1 | x) = expit(d'theta)``; the IF of ``theta`` is
``(y_i - p_i) d_i' H^-1`` with ``H = D' diag(p (1 - p)) D`` (riskRegression's ``predictRisk.glm``
via lava's score and information), and for the ridge fit of :mod:`ketaoutcomes.models.ps_model`,
the M-estimator's ``H^-1 (d_i (y_i - p_i) - P theta / n)`` with ``H`` plus the penalty ``P`` (the
standardisation of the columns, a function of the data, is taken as fixed).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse

from ketaoutcomes.models.cox_engine import fit_cox, risk_sets, score_residuals
from ketaoutcomes.models.ps_model import fit_ps_model

__all__ = ["TIE_HANDLING", "CoxNuisance", "PropensityNuisance", "fit_cox_nuisance", "fit_propensity_nuisance"]

#: How the coefficients' influence function treats tied event times (see the module docstring).
TIE_HANDLING = ("standard", "riskRegression-2022.11.28")


@dataclass(frozen=True)
class CoxNuisance:
    """A fitted Cox model with what its predictions and their influence functions need.

    ``time``, ``status`` (this model's events: outcome events, or censorings for the censoring
    model), ``Z`` its design (n, p), ``beta``, ``var`` (inverse information), ``exb`` =
    ``exp(Z beta)`` uncentred; ``member`` the patients of this stratum (all, without strata): the
    rest is its baseline hazard: ``jumps`` the distinct event times up to ``max_time`` (only those
    are needed), ``hazard0`` the baseline hazard there, ``s0`` and ``e`` (``S1 / S0``) the Breslow
    risk-set sums; ``iid_beta`` (n, p) the coefficients' IF (of every patient); ``last_time`` the
    stratum's largest observed time (a prediction after it is null, as riskRegression's). ``status``
    is the events of the stratum's patients only."""

    time: np.ndarray
    status: np.ndarray
    Z: np.ndarray
    beta: np.ndarray
    var: np.ndarray
    exb: np.ndarray
    jumps: np.ndarray
    hazard0: np.ndarray
    s0: np.ndarray
    e: np.ndarray
    iid_beta: np.ndarray
    last_time: float
    converged: bool
    member: np.ndarray


    @property
    def n(self) -> int:
        return len(self.time)

    # ------------------------------------------------------------------ time indices
    def index(self, t: np.ndarray | float, *, before: bool = False) -> np.ndarray:
        """The number of jump times ``<= t`` (``< t`` with ``before``): the column of :attr:`cum_if`
        and of :attr:`cumhaz0` for a prediction at ``t`` (``t - 0`` with ``before``)."""
        return np.searchsorted(self.jumps, t, side="left" if before else "right")

    def hazard_index(self, t: np.ndarray) -> np.ndarray:
        """The jump index of each time for a hazard: its own jump, or 0 (no jump, hazard 0) when it is
        not an event time of this stratum."""
        c = self.index(t)
        hit = (c > 0) & (self.jumps[np.maximum(c - 1, 0)] == np.asarray(t)) if len(self.jumps) else c > 0
        return np.where(hit, c, 0)

    @cached_property
    def cumhaz0(self) -> np.ndarray:
        """(J + 1,) the cumulative baseline hazard after 0, 1, ..., J jumps."""
        return np.concatenate([[0.0], np.cumsum(self.hazard0)])

    @cached_property
    def haz0(self) -> np.ndarray:
        """(J + 1,) the baseline hazard at jump c (0 for c = 0: no jump)."""
        return np.concatenate([[0.0], self.hazard0])

    @cached_property
    def _own(self) -> tuple[np.ndarray, np.ndarray]:
        """Per patient: the jumps at or before its time, and the jump of its own event (0: none, or
        after the last jump kept)."""
        ct = self.index(self.time)
        last = self.jumps[-1] if len(self.jumps) else -np.inf
        return ct, np.where(self.status & (self.time <= last), ct, 0)

    @cached_property
    def cum_if(self) -> np.ndarray:
        """(n, J + 1): column c is the IF of the cumulative baseline hazard at a time with c jumps at or
        before it (see the module docstring)."""
        ct, own = self._own
        J = len(self.jumps)
        cl = np.concatenate([[0.0], np.cumsum(self.hazard0 / self.s0)])
        ce = np.vstack([np.zeros((1, self.Z.shape[1])), np.cumsum(self.e * self.hazard0[:, None], axis=0)])
        c = np.arange(J + 1)
        s0_own = np.concatenate([[np.inf], self.s0])[own]
        event = np.where(own[:, None] > 0, (own[:, None] <= c[None, :]) / s0_own[:, None], 0.0)
        at_risk = (self.exb * self.member)[:, None] * cl[np.minimum(c[None, :], ct[:, None])]
        return event - at_risk - self.iid_beta @ ce.T

    @cached_property
    def haz_if(self) -> np.ndarray:
        """(n, J + 1): column c >= 1 is the IF of the baseline hazard at jump c (column 0: zeros)."""
        ct, own = self._own
        J = len(self.jumps)
        c = np.arange(1, J + 1)
        out = np.zeros((self.n, J + 1))
        out[:, 1:] = ((own[:, None] == c[None, :]) / self.s0[None, :]
                      - (self.exb * self.member)[:, None] * (ct[:, None] >= c[None, :]) * (self.hazard0 / self.s0)[None, :]
                      - self.iid_beta @ (self.e * self.hazard0[:, None]).T)
        return out

    # ------------------------------------------------------------------ predictions
    def exb_of(self, Z: np.ndarray) -> np.ndarray:
        return np.exp(np.asarray(Z, dtype=float) @ self.beta)

    def cumhaz(self, exb: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``exp(z'b) Lambda0`` of rows with ``exb`` at jump indices ``idx`` ((K,) for every row, or
        (m, K))."""
        return np.asarray(exb)[:, None] * self.cumhaz0[np.asarray(idx)]

    # ------------------------------------------------------------------ averaged influence functions
    # The IF of a weighted sum of predictions, sum_x omega_x pred_x, is linear in the weights: its
    # "loadings" (per jump column and per coefficient) are sums over the rows x, so they can be
    # accumulated over blocks of rows and applied to the n patients once (:meth:`apply`).
    def loadings(self, idx: np.ndarray, omega: np.ndarray, Z: np.ndarray, *, hazard: bool = False,
                 per_row: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The loadings of ``sum_x omega_xk pred_x(c_xk)`` for each column k: ``omega`` (m, K) the
        weight of each prediction (the caller folds in ``exp(z'b)``, the survival for a risk, the factor
        and 1/m), ``idx`` its jump index, (K,) one per column (every row predicted at the same time) or,
        with ``per_row``, (m,) one per row; ``Z`` (m, p) the rows predicted for; the cumulative hazard,
        or with ``hazard`` the hazard."""
        omega = np.asarray(omega, dtype=float)
        idx = np.asarray(idx)
        m, K = omega.shape
        J1 = len(self.jumps) + 1
        base = self.haz0 if hazard else self.cumhaz0
        Z = np.asarray(Z, dtype=float)
        om = np.zeros((J1, K))
        if per_row:  # a one-hot (m, J + 1) matrix: no (m, K) index arrays
            onehot = sparse.csr_matrix((np.ones(m), (np.arange(m), idx)), shape=(m, J1))
            om += np.asarray(onehot.T @ omega)
            return om, Z.T @ (omega * base[idx][:, None])
        np.add.at(om, (idx, np.arange(K)), omega.sum(axis=0))
        return om, (Z.T @ omega) * base[idx][None, :]

    def loadings_integral(self, idx: np.ndarray, alpha: np.ndarray, beta: np.ndarray, F: np.ndarray,
                          upto: np.ndarray, Z: np.ndarray, *, hazard: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The loadings of ``sum_{j < upto_k} sum_x (alpha_xj F_xk + beta_xj) pred_x(u_j)``, for the
        integrals of the doubly robust estimator: ``idx`` (J,) the jump index of each u_j in this
        model, ``alpha``, ``beta`` (m, J) (``exp(z'b)`` and the rest folded in, as ``omega`` of
        :meth:`loadings`), ``F`` (m, K), ``upto`` (K,) how many u_j count for column k. Without (m, J,
        K) arrays: the sums over x are matrix products."""
        J = alpha.shape[1]
        M = alpha.T @ F + beta.sum(axis=0)[:, None]
        M[np.arange(J)[:, None] >= np.asarray(upto)[None, :]] = 0.0
        om = np.zeros((len(self.jumps) + 1, F.shape[1]))
        np.add.at(om, np.asarray(idx), M)
        base = (self.haz0 if hazard else self.cumhaz0)[np.asarray(idx)]
        ca = np.concatenate([np.zeros((alpha.shape[0], 1)), np.cumsum(alpha * base[None, :], axis=1)], axis=1)
        cb = np.concatenate([np.zeros((beta.shape[0], 1)), np.cumsum(beta * base[None, :], axis=1)], axis=1)
        return om, np.asarray(Z, dtype=float).T @ (F * ca[:, upto] + cb[:, upto])

    def apply(self, loadings: tuple[np.ndarray, np.ndarray], *, hazard: bool = False) -> np.ndarray:
        """(n, K): every patient's IF of the weighted sum whose loadings are given:
        ``sum_c IF_i(c) om[c] + IFb_i' B``, i.e. ``(haz_if if hazard else cum_if) @ om + iid_beta @ B``.

        Without the (n, J + 1) matrices :attr:`cum_if` and :attr:`haz_if` (at a million patients some
        350 MB each, and a product of n x J x K): each of their terms is a step function of the jump
        index, so its product with ``om`` is a prefix or suffix sum of ``om``'s rows taken at each
        patient's own jump and at the jumps before its time, and the coefficients' part is one
        (p, K) matrix. The same numbers as the definitions, to rounding (``tests/unit/test_ate.py``)."""
        om, B = loadings
        om = np.asarray(om, dtype=float)
        ct, own = self._own
        K = om.shape[1]
        a = (self.exb * self.member)[:, None]
        has = own > 0
        out = np.zeros((self.n, K))
        if hazard:  # haz_if: column c >= 1 is (own == c) / S0_c - a 1(ct >= c) lambda_c / S0_c - IFb' E_c lambda_c
            out[has] = om[own[has]] / self.s0[own[has] - 1][:, None]
            rate = np.concatenate([[0.0], self.hazard0 / self.s0])
            before = np.cumsum(rate[:, None] * om, axis=0)  # [k]: sum over 1 <= c <= k
            out -= a * before[ct]
            coef = B - (self.e * self.hazard0[:, None]).T @ om[1:]
        else:  # cum_if: 1(own <= c) / S0_own - a cl[min(c, ct)] - IFb' sum_{j <= c} E_j lambda_j
            after = np.vstack([np.cumsum(om[::-1], axis=0)[::-1], np.zeros((1, K))])  # [k]: sum over c >= k
            out[has] = after[own[has]] / self.s0[own[has] - 1][:, None]
            cl = np.concatenate([[0.0], np.cumsum(self.hazard0 / self.s0)])
            upto = np.cumsum(cl[:, None] * om, axis=0)  # [k]: sum over c <= k
            out -= a * (upto[ct] + cl[ct][:, None] * after[ct + 1])
            ce = np.vstack([np.zeros((1, self.Z.shape[1])), np.cumsum(self.e * self.hazard0[:, None], axis=0)])
            coef = B - ce.T @ om
        return out + self.iid_beta @ coef


def fit_cox_nuisance(time: np.ndarray, status: np.ndarray, Z: np.ndarray, *, max_time: float,
                     strata: np.ndarray | None = None, ties: str = "efron", tie_handling: str = "standard"
                     ) -> dict:
    """Fit the Cox model of ``status`` (1 event, 0 censored) on ``Z`` (R's ``coxph``: Efron ties by
    default, :mod:`ketaoutcomes.models.cox_engine`), with a baseline hazard per level of ``strata``
    (R's ``strata()``), and prepare each baseline hazard and its influence function up to
    ``max_time``: ``{level: CoxNuisance}`` (without strata, the one level ``None``)."""
    if tie_handling not in TIE_HANDLING:
        raise ValueError(f"tie_handling must be one of {TIE_HANDLING}, not {tie_handling!r}")
    time = np.asarray(time, dtype=float)
    status = np.asarray(status).astype(bool)
    Z = np.asarray(Z, dtype=float).reshape(len(time), -1)
    rs = risk_sets(time, status.astype(int), Z, strata=strata, ties=ties)
    fit = fit_cox(rs)
    beta = fit.beta
    exb = np.exp(Z @ beta)
    levels = [None] if strata is None else sorted(set(np.asarray(strata).tolist()))
    members = {lv: np.ones(len(time), dtype=bool) if lv is None else np.asarray(strata) == lv for lv in levels}
    if tie_handling == "standard":
        iid_beta = score_residuals(rs, beta) @ fit.var
    else:  # riskRegression: the score residuals of each stratum with its own risk sets
        iid_beta = np.zeros_like(Z)
        for member in members.values():
            iid_beta[member] = _riskregression_iid_beta(time[member], status[member], Z[member], exb[member], fit.var)
    out = {}
    for lv, member in members.items():
        jumps, hazard0, s0, e = _baseline(time[member], status[member], Z[member], exb[member], max_time, ties)
        out[lv] = CoxNuisance(time=time, status=status & member, Z=Z, beta=beta, var=fit.var, exb=exb, jumps=jumps,
                              hazard0=hazard0, s0=s0, e=e, iid_beta=iid_beta, last_time=float(time[member].max()),
                              converged=fit.converged, member=member)
    return out


def _baseline(time: np.ndarray, status: np.ndarray, Z: np.ndarray, exb: np.ndarray, max_time: float, ties: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct event times up to ``max_time``, the baseline hazard there (Breslow, or Efron as
    riskRegression's ``baseHaz_cpp``), and the Breslow risk-set sums ``S0`` and ``E = S1 / S0`` (every
    patient with time >= t_j) of one stratum."""
    order = np.argsort(time, kind="stable")
    ts = time[order]
    ev_times, d = np.unique(time[status], return_counts=True)
    keep = ev_times <= max_time  # predictions stop at max_time: later jumps are not needed
    ev_times, d = ev_times[keep], d[keep]
    start = np.searchsorted(ts, ev_times, side="left")
    s0 = np.concatenate([np.cumsum(exb[order][::-1])[::-1], [0.0]])[start]
    s1 = np.vstack([np.cumsum((exb[:, None] * Z)[order][::-1], axis=0)[::-1], np.zeros((1, Z.shape[1]))])[start]
    e = s1 / s0[:, None]
    if ties == "efron":
        ev_idx = np.searchsorted(ev_times, time[status])
        inside = ev_idx < len(ev_times)
        se = np.bincount(ev_idx[inside], weights=exb[status][inside], minlength=len(ev_times))
        g = np.repeat(np.arange(len(d)), d)  # one step k = 0..d-1 per event of a tied time
        k = np.arange(len(g)) - np.repeat(np.cumsum(d) - d, d)
        hazard0 = np.bincount(g, weights=1.0 / (s0[g] - k / d[g] * se[g]), minlength=len(d))
    else:
        hazard0 = d / s0
    return ev_times, hazard0, s0, e


def _riskregression_iid_beta(time: np.ndarray, status: np.ndarray, Z: np.ndarray, exb: np.ndarray,
                             var: np.ndarray) -> np.ndarray:
    """riskRegression's ``IFbeta_cpp``: ``V [d_i (z_i - E(T_i)) - exp(z_i'b) sum_{t_j <= T_i} (z_i -
    E_j) / S0_j]`` over the distinct event times, one term per time whatever the number of tied
    events there (see the module docstring)."""
    order = np.argsort(time, kind="stable")
    ts = time[order]
    tj = np.unique(time[status])
    start = np.searchsorted(ts, tj, side="left")
    s0 = np.concatenate([np.cumsum(exb[order][::-1])[::-1], [0.0]])[start]
    s1 = np.vstack([np.cumsum((exb[:, None] * Z)[order][::-1], axis=0)[::-1], np.zeros((1, Z.shape[1]))])[start]
    e = s1 / s0[:, None]
    ct = np.searchsorted(tj, time, side="right")  # jumps at or before T_i
    inv = np.concatenate([[0.0], np.cumsum(1.0 / s0)])
    e_inv = np.vstack([np.zeros((1, Z.shape[1])), np.cumsum(e / s0[:, None], axis=0)])
    e_own = np.vstack([np.zeros((1, Z.shape[1])), e])[ct]
    score = status[:, None] * (Z - e_own) - exb[:, None] * (Z * inv[ct][:, None] - e_inv[ct])
    return score @ var


@dataclass(frozen=True)
class PropensityNuisance:
    """The logistic propensity model: ``design`` (n, q) with its intercept column, ``p`` the fitted
    P(A = 1), ``iid_theta`` (n, q) the coefficients' IF (riskRegression's scale)."""

    design: np.ndarray
    p: np.ndarray
    iid_theta: np.ndarray
    converged: bool
    notes: tuple[str, ...] = ()

    def prob(self, arm: int) -> np.ndarray:
        """P(A = arm | x) of every patient."""
        return self.p if arm == 1 else 1.0 - self.p

    def average_iid(self, arm: int, factor: np.ndarray, project: np.ndarray | None = None) -> np.ndarray:
        """The IF (n, K) of ``(1/n) sum_x factor_xk P(A = arm | x)`` through the model's coefficients; with
        ``project`` (K, C), that IF times ``project`` (n, C)."""
        return self.apply(self.loadings(arm, factor), project)

    def loadings(self, arm: int, factor: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """(q, K) the loadings of :meth:`average_iid`'s sum over the patients ``rows`` (``factor`` their
        rows): a sum over the patients, so those of blocks of them add up."""
        slope = self.p[rows] * (1.0 - self.p[rows]) * (1.0 if arm == 1 else -1.0)
        return self.design[rows].T @ (np.asarray(factor) * slope[:, None])

    def apply(self, loads: np.ndarray, project: np.ndarray | None = None) -> np.ndarray:
        """(n, K), or with ``project`` (K, C) (n, C): every patient's IF of the sum with loadings ``loads``."""
        return self.iid_theta @ (loads if project is None else loads @ project) / len(self.p)


def fit_propensity_nuisance(treated: np.ndarray, X: np.ndarray, *, model: str = "logistic",
                            variance: float = 10.0) -> PropensityNuisance:
    """Fit P(A = 1 | X) (:func:`ketaoutcomes.models.ps_model.fit_ps_model`: ``"logistic"`` as R's
    ``glm``, or ``"ridge"``) and its influence function. Raises ``ValueError`` when the model cannot
    be fitted to finite probabilities."""
    y = np.asarray(treated, dtype=float)
    X = np.asarray(X, dtype=float).reshape(len(y), -1)
    fit = fit_ps_model(y, X, model=model, variance=variance)
    if fit.ps is None or fit.coef is None:
        raise ValueError("; ".join(fit.notes) or "the propensity model could not be fitted")
    n = len(y)
    p = fit.ps
    w = p * (1.0 - p)
    if model == "ridge":
        mean, sd = X.mean(axis=0), X.std(axis=0)
        D = np.column_stack([np.ones(n), (X - mean) / sd])
        theta = np.r_[fit.coef[0] + float(np.sum(fit.coef[1:] * mean)), fit.coef[1:] * sd]
        pen = np.r_[0.0, np.full(X.shape[1], 1.0 / variance)]
    else:
        D = np.column_stack([np.ones(n), X])
        theta = fit.coef
        pen = np.zeros(D.shape[1])
    H = (D * w[:, None]).T @ D + np.diag(pen)
    score = D * (y - p)[:, None] - (pen * theta)[None, :] / n
    return PropensityNuisance(design=D, p=p, iid_theta=np.linalg.solve(H, score.T).T, converged=fit.converged,
                              notes=fit.notes)
