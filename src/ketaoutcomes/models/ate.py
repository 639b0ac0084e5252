"""Adjusted (standardised) risk curves of a binary point treatment on a time-to-event outcome with
censoring: the g-formula, inverse probability of treatment (and censoring) weighting and the doubly
robust AIPTW estimator, with influence-function standard errors, risk differences and ratios at
given days, and the restricted-mean difference (pure, numpy).

It computes what R's riskRegression ``ate()`` (2022.11.28) computes for ``event`` a ``coxph`` of the
outcome on the covariates with ``strata(treatment)`` (``stratify=True``, the default: a baseline
hazard per arm, so no proportional hazards between the arms) or with the treatment as a covariate
(``stratify=False``), ``treatment`` a ``glm(binomial)`` of the treatment on the covariates and
``censor`` a ``coxph`` of censoring likewise (``tests/reference/ate_reference.R`` and
``test_ate_vs_R.py``). For each arm a (1 the route, 0 the
reference arm), with ``F(t | a, x)`` the outcome model's risk, ``pi_a(x)`` the propensity,
``G(t | a, x)`` the censoring model's survival and ``Y_i(t) = 1(T_i <= t, event)``:

* ``GFORMULA``: ``mean_i F(t | a, x_i)``, everyone's predicted risk had they had arm a. Right when
  the outcome model is.
* ``IPTW`` (``"IPTW,IPCW"`` in riskRegression when there is censoring): ``mean_i 1(A_i = a) Y_i(t) /
  (pi_a(x_i) G(T_i- | A_i, x_i))``, the Horvitz-Thompson mean (unnormalised, untruncated weights).
  Right when the propensity and censoring models are.
* ``AIPTW`` (``"AIPTW,AIPCW"``): the g-formula plus the weighted residuals, ``mean_i F(t | a, x_i) +
  1(A_i = a) / pi_a(x_i) (Y_i(t) / G(T_i-) - F(t | a, x_i) + aug_i(t))``, with the censoring
  augmentation ``aug_i(t) = int_0^min(T_i, t) (F(t | x_i) - F(u | x_i)) dM^C_i(u) / (G(u- | x_i)
  S(u- | x_i))`` (``dM^C`` the censoring martingale of the censoring model). Right when either the
  outcome model, or the propensity and censoring models, are.

**Standard errors** are riskRegression's, from the influence function with every nuisance model's
estimation in it (``known.nuisance = FALSE``): the variance is the sum of the squared IFs
(:mod:`ketaoutcomes.models.ate_nuisance` gives the models' IFs); the Wald interval of a risk is
clipped to [0, 1], of a difference to [-1, 1] and of a ratio below at 0, as R's. The difference is
route - reference (R's ``diffRisk`` with the reference arm as its first level), the ratio route /
reference, its IF by the delta method.

**Restricted mean.** ``ate()`` has none. The restricted mean time without the event up to tau is the
area under ``1 - F``: every estimate here is a step function of t that changes only at observed times,
so evaluating it at every distinct observed time up to tau gives the exact integral, and the same
linear map applied to the influence functions gives its IF (the SE of the difference by integrating
the influence function, not by a bootstrap). ``test_ate_vs_R.py`` checks both against ``ate()`` at
every such time, integrated in R.

**Ties, and where this differs from riskRegression 2022.11.28** (``tie_handling``):

* the coefficients' IF with tied event times: see :mod:`ketaoutcomes.models.ate_nuisance`;
* the augmentation integral with tied *censoring* times: riskRegression 2022.11.28 integrates over
  the sorted censoring times with repeats, so a day on which two patients were censored enters twice
  (and its second copy with ``G`` after, not before, that day). riskRegression fixed it in September
  2024 (commit 94ac545, "fix ties with double robust ATE", its issue #60) by taking each time once.

``tie_handling = "standard"`` (the default) takes each censoring time once and the exact score
residuals; ``"riskRegression-2022.11.28"`` reproduces that release, bug for bug, which is what the
reference tests match on tied data (on untied data the two are the same). The g-formula and IPTW
point estimates do not depend on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import norm

from ketaoutcomes.models.common import one_blas_thread
from ketaoutcomes.models.ate_nuisance import (
    CoxNuisance,
    PropensityNuisance,
    fit_cox_nuisance,
    fit_propensity_nuisance,
)

__all__ = ["ATE_SCHEMA", "ESTIMATORS", "AteResult", "adjusted_curves", "curves_at"]

#: The estimators, as riskRegression names them.
ESTIMATORS = ("GFORMULA", "IPTW", "AIPTW")

#: The columns of :meth:`AteResult.table`.
ATE_SCHEMA = {
    "estimator": pl.String, "estimand": pl.String, "measure": pl.String, "day": pl.Float64,
    "value_target": pl.Float64, "se_target": pl.Float64, "value_comparator": pl.Float64,
    "se_comparator": pl.Float64, "difference": pl.Float64, "se": pl.Float64, "lower": pl.Float64,
    "upper": pl.Float64, "p_value": pl.Float64, "ratio": pl.Float64, "ratio_se": pl.Float64,
    "ratio_lower": pl.Float64, "ratio_upper": pl.Float64,
}


@dataclass(frozen=True)
class _Models:
    """The fitted nuisance models; ``outcome`` and ``censoring`` by stratum (the arm with ``stratify``,
    else the one stratum None)."""

    treated: np.ndarray
    ps: PropensityNuisance
    outcome: dict
    censoring: dict | None
    X: np.ndarray
    tie_handling: str
    stratify: bool

    def of(self, arm: int) -> tuple[CoxNuisance, CoxNuisance | None, np.ndarray]:
        """The outcome and censoring models' baseline hazards for predictions under ``arm``, and the
        design of every patient given that arm."""
        key = arm if self.stratify else None
        Z = self.X if self.stratify else np.column_stack([np.full(len(self.X), float(arm)), self.X])
        return self.outcome[key], None if self.censoring is None else self.censoring[key], Z


@dataclass(frozen=True)
class Curves:
    """Each estimator's risk per arm at ``times`` (``estimate[(estimator, arm)]``, (K,)) and its
    influence function (``iid[...]``, (n, K), riskRegression's scale: variance = sum of squares)."""

    times: np.ndarray
    estimate: dict
    iid: dict


def _fit_models(time: np.ndarray, status: np.ndarray, treated: np.ndarray, X: np.ndarray, max_time: float, *,
                ps_model: str, ps_variance: float, ties: str, tie_handling: str, stratify: bool) -> _Models:
    Z, strata = (X, treated.astype(np.int64)) if stratify else (np.column_stack([treated.astype(float), X]), None)
    kw = dict(max_time=max_time, strata=strata, ties=ties, tie_handling=tie_handling)
    outcome = fit_cox_nuisance(time, status, Z, **kw)
    censored = ~status & (time <= max_time)
    censoring = fit_cox_nuisance(time, ~status, Z, **kw) if censored.any() else None
    ps = fit_propensity_nuisance(treated, X, model=ps_model, variance=ps_variance)
    return _Models(treated, ps, outcome, censoring, X, tie_handling, stratify)


def curves_at(time: np.ndarray, status: np.ndarray, treated: np.ndarray, X: np.ndarray, *, times: np.ndarray,
              estimators: tuple[str, ...] = ESTIMATORS, ps_model: str = "logistic", ps_variance: float = 10.0,
              ties: str = "efron", tie_handling: str = "standard", stratify: bool = True) -> Curves:
    """Each estimator's risk of the event by each of ``times`` per arm (1: ``treated``, 0: not), with
    its influence function. ``status`` 1 event, 0 censored; ``X`` (n, q) the covariates of all three
    models. The outcome and censoring Cox models have a baseline hazard per arm (``stratify``, R's
    ``strata(treatment)``: no proportional hazards between the arms), or the arm as a covariate. A
    time after the last observed time (of either arm, with ``stratify``) is null (NaN), as in
    riskRegression."""
    times = np.asarray(times, dtype=float)
    est, iid = _curves(time, status, treated, X, times, estimators, lambda e, f: (e, f), ps_model=ps_model,
                       ps_variance=ps_variance, ties=ties, tie_handling=tie_handling, stratify=stratify)
    return Curves(times, est, iid)


def _curves(time, status, treated, X, times: np.ndarray, estimators: tuple[str, ...], reduce,
            project: np.ndarray | None = None, **options) -> tuple[dict, dict]:
    """:func:`curves_at`, each (estimate (K,), IF (n, K)) passed through ``reduce`` as soon as it is
    computed (so that only one arm's full IFs are held at a time). With ``project`` (K, C), the IFs
    are computed as ``IF @ project`` over the times that can be predicted at (the others' rows of
    ``project`` left out), (n, C) instead of (n, K): every term of an IF is linear in its columns, so
    each is projected before it is applied to the n patients (a few columns instead of every time up
    to a horizon); the estimates stay (K,)."""
    time = np.asarray(time, dtype=float)
    status = np.asarray(status).astype(bool)
    treated = np.asarray(treated).astype(bool)
    X = np.asarray(X, dtype=float).reshape(len(time), -1)
    bad = [e for e in estimators if e not in ESTIMATORS]
    if bad:
        raise ValueError(f"unknown estimator(s) {bad}; known: {ESTIMATORS}")
    if treated.all() or not treated.any():
        raise ValueError("the adjusted curves need patients on both arms")
    ok = times <= _last_time(time, treated, options["stratify"])
    est: dict = {}
    iid: dict = {}
    P = None if project is None else project[ok]

    def keep(name: str, arm: int, e: np.ndarray | None, f: np.ndarray | None) -> None:
        if P is not None:  # f is (n, C), over the times that can be predicted at: only e is padded
            full_e = np.full(len(times), np.nan)
            if e is not None:
                full_e[ok] = e
            est[(name, arm)], iid[(name, arm)] = reduce(full_e, np.zeros((len(time), P.shape[1])) if f is None else f)
            return
        if e is None or not ok.all():  # times after the last observed one: null
            full_e, full_f = np.full(len(times), np.nan), np.full((len(time), len(times)), np.nan)
            if e is not None:
                full_e[ok], full_f[:, ok] = e, f
            e, f = full_e, full_f
        est[(name, arm)], iid[(name, arm)] = reduce(e, f)

    valid = times[ok]
    if not valid.size:
        for arm in (1, 0):
            for name in estimators:
                keep(name, arm, None, None)
        return est, iid
    with one_blas_thread():
        models = _fit_models(time, status, treated, X, float(valid.max()), **options)
        for arm in (1, 0):
            _arm(models, time, status, arm, valid, estimators, lambda name, e, f, arm=arm: keep(name, arm, e, f), P)
    return est, iid


def _last_time(time: np.ndarray, treated: np.ndarray, stratify: bool) -> float:
    """The last time a prediction may be made at: the last observed time, of either arm with strata
    (riskRegression: a stratum's baseline hazard stops at its last time)."""
    return float(min(time[treated].max(), time[~treated].max()) if stratify else time.max())


def _censoring_jumps(time: np.ndarray, status: np.ndarray, tau_max: float, tie_handling: str) -> np.ndarray:
    """The censoring times the augmentation integrates over: those before the last time asked for
    (at it, the integrand is 0), each once, or with riskRegression 2022.11.28's repeats."""
    u = np.sort(time[~status & (time < tau_max)])
    return np.unique(u) if tie_handling == "standard" else u


class _Sums:
    """One estimator's sums over the blocks of patients: of its values (the estimate, once divided by
    n), its values at each patient (``IF @ P``'s own term, (n, C)), and the loadings of its IF through
    the outcome model, the censoring model (its cumulative hazard, and its hazard) and the propensity
    model, which are applied to the n patients once, at the end."""

    def __init__(self, n: int, K: int, C: int, out: CoxNuisance, cen: CoxNuisance | None, q: int):
        self.total = np.zeros(K)
        self.own = np.empty((n, C))
        self.out = [np.zeros((len(out.jumps) + 1, K)), np.zeros((out.Z.shape[1], K))]
        self.cen = None if cen is None else [np.zeros((len(cen.jumps) + 1, K)), np.zeros((cen.Z.shape[1], K))]
        self.cen_haz = None if cen is None else [np.zeros((len(cen.jumps) + 1, K)), np.zeros((cen.Z.shape[1], K))]
        self.ps = np.zeros((q, K))

    @staticmethod
    def add(to: list[np.ndarray], loadings: tuple[np.ndarray, np.ndarray]) -> None:
        to[0] += loadings[0]
        to[1] += loadings[1]


def _arm(m: _Models, time: np.ndarray, status: np.ndarray, arm: int, times: np.ndarray,
         estimators: tuple[str, ...], emit, P: np.ndarray | None = None) -> None:
    """Each estimator's estimate (K,) and IF (n, K), or with ``P`` (K, C) ``IF @ P`` (n, C), for one
    arm, passed to ``emit(name, e, f)``. The patients are taken in blocks of :data:`_BLOCK` (the
    (patients, times) arrays of a block only; at a million patients a whole one was some 150 MB, and
    some twenty were made per arm); the IF of a term through a model is gathered as that model's
    loadings, summed over the blocks (projected by ``P``), and applied to the n patients once per
    model. A value's own term ``(phi_i - e) / n`` is ``phi_i / n`` less ``e / n`` once ``e`` is known
    (the same, to rounding)."""
    n, K = len(time), len(times)
    C = K if P is None else P.shape[1]

    def fold(x: np.ndarray) -> np.ndarray:
        return x if P is None else x @ P

    def fold_l(loadings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return (loadings[0], loadings[1]) if P is None else (loadings[0] @ P, loadings[1] @ P)

    out, cen, Zc = m.of(arm)  # Zc: everyone with arm `arm`
    ps = m.ps
    exb_o = out.exb_of(Zc)
    ic = out.index(times)
    weighted = bool({"IPTW", "AIPTW"} & set(estimators))
    member = m.treated == bool(arm)
    pi = ps.prob(arm)
    wa = member / pi
    if cen is not None:
        idx_g = cen.index(time, before=True)  # G(T_i-): after the last censoring jump before T_i
        g = np.exp(-cen.exb * cen.cumhaz0[idx_g])
    else:
        g = np.ones(n)
    augment = _Augmentation(m, arm, time, status, times) if cen is not None and "AIPTW" in estimators else None
    sums = {name: _Sums(n, K, C, out, cen, ps.design.shape[1]) for name in estimators}
    for start in range(0, n, _BLOCK):
        b = slice(start, start + _BLOCK)
        S_ctf = np.exp(-out.cumhaz(exb_o[b], ic))
        F_ctf = 1.0 - S_ctf
        if "GFORMULA" in estimators:
            acc = sums["GFORMULA"]
            acc.total += F_ctf.sum(axis=0)
            acc.own[b] = fold(F_ctf)
            acc.add(acc.out, out.loadings(ic, S_ctf * exb_o[b][:, None] / n, Zc[b]))
        if not weighted:
            continue
        Y = (time[b][:, None] <= times[None, :]) & status[b][:, None]
        ipw = Y / g[b][:, None]
        ps_factor = -(member[b] / pi[b] ** 2)[:, None]
        # the IF through the censoring model of mean_i wa_i Y_i(t) / G(T_i-) (the same for IPTW and AIPTW)
        ipcw = None if cen is None else cen.loadings(idx_g[b], (wa[b] * cen.exb[b] / g[b] / n)[:, None] * Y, cen.Z[b],
                                                     per_row=True)
        if "IPTW" in estimators:
            acc = sums["IPTW"]
            phi = wa[b][:, None] * ipw
            acc.total += phi.sum(axis=0)
            acc.own[b] = fold(phi)
            acc.ps += ps.loadings(arm, ps_factor * ipw, b)
            if ipcw is not None:
                acc.add(acc.cen, ipcw)
        if "AIPTW" in estimators:
            acc = sums["AIPTW"]
            residual = ipw - F_ctf
            acc.add(acc.out, out.loadings(ic, (1.0 - wa[b])[:, None] * S_ctf * exb_o[b][:, None] / n, Zc[b]))
            if augment is not None:
                mine = np.flatnonzero(member[b])
                aug = augment.block(start + mine, wa, exb_o, S_ctf[mine], F_ctf[mine], Zc, acc)
                residual[mine] += aug
                acc.add(acc.cen, ipcw)
            phi = F_ctf + wa[b][:, None] * residual
            acc.total += phi.sum(axis=0)
            acc.own[b] = fold(phi)
            acc.ps += ps.loadings(arm, ps_factor * residual, b)
    for name in estimators:
        acc = sums[name]
        e = acc.total / n
        f = acc.own
        f /= n
        f -= fold(e) / n
        if name != "IPTW":
            f += out.apply(fold_l(acc.out))
        if name != "GFORMULA":
            f += ps.apply(acc.ps, P)
            if cen is not None:
                f += cen.apply(fold_l(acc.cen))
                if name == "AIPTW":
                    f += cen.apply(fold_l(acc.cen_haz), hazard=True)
        emit(name, e, f)


class _Augmentation:
    """The censoring augmentation of the doubly robust estimator for one arm, a block of its patients at
    a time (:meth:`block`): riskRegression's ``iidATE``, terms ``intF1_tau``, ``F1t``, ``St``, ``G1`` and
    ``G2``, over the censoring times it integrates over (the (patients, censoring times) arrays of a
    block only)."""

    def __init__(self, m: _Models, arm: int, time: np.ndarray, status: np.ndarray, times: np.ndarray):
        self.m, self.time, self.status = m, time, status
        self.out, self.cen, _ = m.of(arm)
        out, cen = self.out, self.cen
        self.u = u = _censoring_jumps(time, status, float(times.max()), m.tie_handling)
        self.io_at, self.io_before, self.io_times = out.index(u), out.index(u, before=True), out.index(times)
        self.ic_at, self.ic_before = cen.hazard_index(u), cen.index(u, before=True)  # a hazard: 0 off the arm's jumps
        self.ic_prev = cen.index(np.concatenate([[0.0], u[:-1]]))
        self.upto = np.searchsorted(u, times, side="right")  # censoring times <= t (with repeats: counted each)
        self.n = len(time)

    def block(self, r: np.ndarray, wa: np.ndarray, exb_o_all: np.ndarray, S_ctf: np.ndarray, F_ctf: np.ndarray,
              Zc_all: np.ndarray, acc: _Sums) -> np.ndarray:
        """The augmentation (m, K) of the arm's patients ``r`` (``S_ctf``, ``F_ctf``: their rows), its
        loadings added to ``acc`` (``out``, ``cen``, and ``cen_haz`` through the censoring hazard)."""
        out, cen, u, upto = self.out, self.cen, self.u, self.upto
        T, cens, w = self.time[r], ~self.status[r], wa[r] / self.n
        exb_o, exb_c, Zm = exb_o_all[r], cen.exb[r], Zc_all[r]
        before = u[None, :] <= T[:, None]
        F1u = 1.0 - np.exp(-out.cumhaz(exb_o, self.io_at))  # risk at u
        Su = np.exp(-out.cumhaz(exb_o, self.io_before))  # survival at u-
        G_pred = np.exp(-cen.cumhaz(exb_c, self.ic_before))  # censoring survival at u-
        # riskRegression 2022.11.28: G at the previous entry of its (repeating) list of censoring times
        Gu = G_pred if self.m.tie_handling == "standard" else np.exp(-cen.cumhaz(exb_c, self.ic_prev))
        dM = ((T[:, None] == u[None, :]) & cens[:, None]) - exb_c[:, None] * cen.haz0[self.ic_at][None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_sg = np.where(before, 1.0 / (Su * Gu), 0.0)
        Q = dM * inv_sg
        cQ = np.concatenate([np.zeros((len(r), 1)), np.cumsum(Q, axis=1)], axis=1)
        cFQ = np.concatenate([np.zeros((len(r), 1)), np.cumsum(F1u * Q, axis=1)], axis=1)
        I1 = cQ[:, upto]
        wo, wc = (w * exb_o)[:, None], (w * exb_c)[:, None]
        acc.add(acc.out, out.loadings(self.io_times, wo * I1 * S_ctf, Zm))
        acc.add(acc.out, out.loadings_integral(self.io_at, np.zeros_like(Q), -wo * Q * (1.0 - F1u), F_ctf, upto, Zm))
        acc.add(acc.out, out.loadings_integral(self.io_before, wo * Q, -wo * F1u * Q, F_ctf, upto, Zm))
        g_ratio = G_pred / Gu
        acc.add(acc.cen, cen.loadings_integral(self.ic_before, wc * Q * g_ratio, -wc * F1u * Q * g_ratio, F_ctf, upto,
                                               Zm))
        acc.add(acc.cen_haz, cen.loadings_integral(self.ic_at, -wc * inv_sg, wc * F1u * inv_sg, F_ctf, upto, Zm,
                                                   hazard=True))
        return F_ctf * I1 - cFQ[:, upto]


#: Patients per block of the (patients, times) and (patients, censoring times) arrays.
_BLOCK = 4096


# --------------------------------------------------------------------------- days, restricted mean, table
@dataclass(frozen=True)
class AteResult:
    """The adjusted estimates of :func:`adjusted_curves`: per estimator and arm (1 route, 0 reference),
    ``value`` (D + 1,) the risk by each of ``days`` then the restricted mean up to ``horizon``, and
    ``iid`` (n, D + 1) their influence functions; ``n`` patients; ``alpha`` the CI level."""

    days: tuple[float, ...]
    horizon: float | None
    estimators: tuple[str, ...]
    value: dict
    iid: dict
    n: int
    alpha: float

    def table(self) -> pl.DataFrame:
        """One row per estimator and estimand (``risk_d<day>``, ``rmst``): each arm's value and SE, the
        difference route - reference with its SE, Wald CI and p-value, and for a risk the ratio route /
        reference with its SE and CI (riskRegression's clipping: see the module docstring)."""
        z = float(norm.ppf(1.0 - self.alpha / 2.0))
        rows = []
        for name in self.estimators:
            vt, vc = self.value[(name, 1)], self.value[(name, 0)]
            it, ic = self.iid[(name, 1)], self.iid[(name, 0)]
            se_t, se_c = _se(it), _se(ic)
            d_iid = it - ic
            se_d = _se(d_iid)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = vt / vc
                r_se = _se(it / vc[None, :] - ic * (vt / vc**2)[None, :])
            for k in range(len(self.days) + (self.horizon is not None)):
                risk = k < len(self.days)
                d = vt[k] - vc[k]
                lo, hi = d - z * se_d[k], d + z * se_d[k]
                if risk:
                    lo, hi = max(lo, -1.0), min(hi, 1.0)
                p = 2.0 * float(norm.sf(abs(d / se_d[k]))) if se_d[k] > 0 else math.nan
                row = {"estimator": name, "estimand": f"risk_d{self.days[k]:g}" if risk else "rmst",
                       "measure": "risk" if risk else "rmst", "day": self.days[k] if risk else self.horizon,
                       "value_target": vt[k], "se_target": se_t[k], "value_comparator": vc[k],
                       "se_comparator": se_c[k], "difference": d, "se": se_d[k], "lower": lo, "upper": hi,
                       "p_value": p, "ratio": None, "ratio_se": None, "ratio_lower": None, "ratio_upper": None}
                if risk:
                    row.update(ratio=ratio[k], ratio_se=r_se[k], ratio_lower=max(ratio[k] - z * r_se[k], 0.0),
                               ratio_upper=ratio[k] + z * r_se[k])
                rows.append({key: _finite(v) for key, v in row.items()})
        return pl.DataFrame(rows, schema=ATE_SCHEMA)


def _se(iid: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(iid**2, axis=0))


def _finite(v: object) -> object:
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def rmst_weights(times: np.ndarray, horizon: float) -> np.ndarray:
    """``w`` such that the restricted mean up to ``horizon`` is ``horizon + w @ F(times)`` for a risk
    curve F that is a step function changing only at ``times`` (sorted, distinct, all > 0 or starting
    at 0): minus the length of each step up to the horizon."""
    t = np.asarray(times, dtype=float)
    inside = t <= horizon
    nxt = np.append(t[inside][1:], horizon)
    w = np.zeros(len(t))
    w[inside] = -(nxt - t[inside])
    return w


def adjusted_curves(time: np.ndarray, status: np.ndarray, treated: np.ndarray, X: np.ndarray, *,
                    days: tuple[float, ...], horizon: float | None = None,
                    estimators: tuple[str, ...] = ESTIMATORS, ps_model: str = "logistic", ps_variance: float = 10.0,
                    ties: str = "efron", tie_handling: str = "standard", stratify: bool = True,
                    alpha: float = 0.05) -> AteResult:
    """The adjusted risks by each of ``days`` and, with ``horizon``, the restricted mean up to it, per
    estimator and arm, with their influence functions (see the module docstring; the arguments as
    :func:`curves_at`)."""
    time = np.asarray(time, dtype=float)
    days = tuple(float(d) for d in days)
    grid = np.asarray(days, dtype=float)
    if horizon is not None:
        grid = np.concatenate([grid, time[time <= horizon]])
    times = np.unique(grid)
    L = np.zeros((len(times), len(days) + (horizon is not None)))
    L[np.searchsorted(times, grid[:len(days)]), np.arange(len(days))] = 1.0
    shift = np.zeros(L.shape[1])
    if horizon is not None:
        L[:, -1] = rmst_weights(times, float(horizon))
        shift[-1] = float(horizon)
    used = L != 0

    def contract(e: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The days' risks and the restricted mean (null if a time it needs is), and their IFs (``f``:
        already ``IF @ L`` over the times that can be predicted at)."""
        missing = np.isnan(e) @ used > 0
        if horizon is not None and horizon > _last_time(time, np.asarray(treated).astype(bool), stratify):
            # the curves would be carried past the data
            missing[-1] = True
        value = np.where(missing, np.nan, np.nan_to_num(e) @ L + shift)
        f[:, missing] = np.nan
        return value, f

    value, iid = _curves(time, status, treated, X, times, tuple(estimators), contract, project=L, ps_model=ps_model,
                         ps_variance=ps_variance, ties=ties, tie_handling=tie_handling, stratify=stratify)
    return AteResult(days, None if horizon is None else float(horizon), tuple(estimators), value, iid,
                     len(time), alpha)
