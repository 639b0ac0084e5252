"""Clone-censor-weighting (CCW) for "start ketamine within G days of time zero" vs "no ketamine".

Pure functions on a person-level frame (one row a patient: covariates at time zero, the day of the
first ketamine dose if any, the time and indicator of the outcome). Whole days; interval ``k`` is
``(k - 1, k]``; a start on day ``s`` is at time ``s`` (it acts from interval ``s + 1`` on).

The design (docs/target-trial.md says why)
-----------------------------------------
Each patient is cloned at time zero into both strategies:

* **never** (no ketamine during follow-up): the clone is censored at its start day ``s`` (it keeps
  intervals ``1..s``);
* **initiate** (start on a day ``s <= G``): the clone is never censored during the window for
  starting or for not having started yet; a clone still in follow-up at day ``G`` that has not
  started by day ``G - 1`` is censored at ``G`` unless it starts on day ``G`` (the last day).

When the strategy names some arms only (``other_start``: the day of a first start on another
arm, e.g. IM ketamine under "start IV ketamine"), such a start before the strategy's own start
deviates from both strategies: the never clone is censored at the first start on any arm, the
initiate clone at the outside start (with ``late="model"`` only; the other estimators refuse it).

The censoring is informative (who starts depends on the covariates), so the uncensored clones are
weighted by the inverse probability of remaining uncensored, from one pooled logistic model of the
daily start hazard fitted on the person-days at risk of a start (not started, still in follow-up):
``logit P(start on day d | not started, x) = basis(d)'a + x'b`` (``basis``: the day and hinges at
day 7 and at ``G``, per 30 days).

* never: weight at interval ``k`` = ``prod_{d < k} 1 / (1 - p_d(x))`` (``p``: a start on any arm);
* initiate, **correct denominator** (Webster-Clark, Li, Dell'Aniello & Platt; ``late="weights"``): during the window
  no clone is at risk of censoring, so weights are 1; after ``G`` the clones that started on day
  ``G`` stand in for those censored at ``G``: weight ``1 / p_G(x)``, the probability of starting on
  day ``G`` given not started by then; early starters keep weight 1. With ``late_weights=
  "normalised"`` (the default) these weights are scaled by one common factor so that they sum to
  the number of clones they stand in for (not started by ``G - 1``, in follow-up after ``G``), a
  count the data give exactly; ``sum 1 / p_G`` only estimates it (consistently, so the estimand is
  the same). Few patients start on day ``G`` (about 6 per 1,000 in the SSRI-failure simulation),
  so the raw sum is noisy, and when it falls short the early starters' low post-``G`` hazard
  dominates the risk set: the day-56 risk difference then came out low and its bootstrap interval
  missed the truth. ``"raw"`` keeps the unscaled ``1 / p_G``.
* initiate, **outcome model after G** (``late="model"``, the default): the weights above make a
  handful of day-``G`` starters carry every clone not started by ``G - 1``; instead, each of those
  clones (the "waiting", in follow-up after ``G``) is followed past ``G`` by a model of the outcome
  after a start, as if it started on day ``G`` (the Webster-Clark strategy): a complementary
  log-log model of the outcome in each interval after an observed start (every patient who
  started, on any day), on a natural cubic spline in the days since the start, the start day and
  the covariates (a grouped proportional-hazards model). Up to ``G`` the arm is the Kaplan-Meier
  curve of every clone (nobody deviates); after ``G`` it is the mixture, by head count at ``G``, of
  the early starters' own Kaplan-Meier curve and the waiting clones' predicted survival. Nobody is
  up-weighted; the estimates after ``G`` assume that model instead (the start day's term lets the
  hazard after a start drift with the start day). In ``scripts/ccw_simulation_study.py`` this
  brought the day-56 estimates' spread down three- to fourfold and their interval coverage to the goal
  (docs/target-trial.md). The influence SEs do not include the model's uncertainty, so the
  studentised interval is refused with it; the bootstrap refits the model in every replicate.
  ``late="weights"`` gives the day-``G`` weights of the previous item.
* initiate, **simple denominator** (``denominator="simple"``, biased, kept to show it): a logistic
  model of "uncensored at G" among all clones in follow-up at ``G``, early starters included, and
  weight ``1 / P(uncensored | x)`` for every uncensored clone after ``G``. It lets early starters
  stand in for the censored and so estimates a strategy in which the late starters start early.

Weights are stabilised (``stabilised=True``) only where the numerator is common to every clone
of a risk set: the never arm's ``prod_{d < k} (1 - p0_d)`` from the model with the day basis only,
and the simple variant's marginal share uncensored at ``G``. A common factor cancels in each
Kaplan-Meier hazard, so without truncation it changes the reported weight distribution, not the
curves. The correct initiate weights are not stabilised: after ``G`` early starters (weight 1)
and day-``G`` starters share the risk set, and a numerator for the latter only (the marginal
``P(start on G | not started)``) would shrink the not-yet-started to their marginal share instead
of standing in for all of them. Weights are optionally truncated at a quantile of their
person-interval distribution (``truncation``). Risk curves
are weighted Kaplan-Meier (discrete hazards per interval); the contrasts are initiate minus never
(risk difference), initiate over never (risk ratio) and the difference of restricted mean times to
the outcome up to ``horizon``.

:func:`naive_users` is the "users vs users" comparison the target trial replaces: patients who
started within the window against the others (censored if they start later), both followed from
time zero, unweighted. The users' time before their start is immortal.

:func:`ccw_analysis` with ``bootstrap_replicates=B`` adds percentile CIs from a person-level bootstrap of the
whole procedure (a patient's two clones are drawn together: the resampling is of patients, as
frequency weights, before cloning; the models are refitted in each replicate, each fit started from
the full cohort's coefficients, which lands on the same maximum in about half the IRLS steps).
:meth:`Estimates.vector_se` gives influence-function standard errors (weights taken as known;
Greenwood's when they are all 1), which :func:`studentised_interval` uses for a bootstrap-t
interval. In ``scripts/ccw_simulation_study.py`` (100 cohorts of 1,000, 100 replicates) the
influence SEs were within 2% of the bootstrap SEs, and the bootstrap-t interval, twice as wide,
covered less often than the percentile one after ``G`` (0.83 vs 0.88 for the day-56 risk
difference); on 60 cohorts of 2,000 it covered more (0.97 vs 0.90). The percentile interval stays
the default; ``ccw_analysis(interval="studentised")`` gives the other. After ``G`` both bootstrap SEs fall short of the
estimates' spread (0.10 vs 0.11): the late arm rests on a handful of day-``G`` starters, and a
bootstrap of a handful under-states its variance (by about (m - 1) / m for m of them).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .common import one_blas_thread

__all__ = ["with_bootstrap", "CCWResult", "ccw_analysis", "naive_users", "VARIANTS", "prepare", "estimate", "bootstrap",
           "measure_names", "fit_logistic", "Prepared", "Estimates", "bootstrap_draws",
           "studentised_interval"]

#: Named estimators: the CCW with the correct grace-period denominator, with the simple (biased)
#: one, and the naive users-vs-users comparison.
VARIANTS = ("ccw", "simple", "naive")
STRATEGIES = ("initiate", "never")
#: How the day-G starters' weights 1/p_G are scaled (module doc).
LATE_WEIGHTS = ("normalised", "raw")
#: How the initiate arm continues after G (module doc): the clones not started by G - 1 followed
#: by an outcome model of the post-start hazard, or stood in for by the day-G starters' weights.
LATE = ("model", "weights")
#: Bootstrap intervals ccw_analysis can report.
INTERVALS = ("percentile", "studentised")
_NEVER = np.iinfo(np.int64).max // 4
_MAXITER = 50


def fit_logistic(y: np.ndarray, X: np.ndarray, freq: np.ndarray, link: str = "logit",
                 start: np.ndarray | None = None) -> np.ndarray:
    """Maximum-likelihood binary regression of ``y`` on an intercept and the columns of ``X``
    (none constant), with frequency weights ``freq``: statsmodels' binomial GLM (IRLS), with the
    logit link or (``link="cloglog"``) the complementary log-log one, which makes a discrete-time
    model of whole-day intervals a grouped proportional-hazards model. Returns the intercept then
    one coefficient per column (``start``: coefficients to start IRLS from, such as the full
    cohort's for a bootstrap replicate; the same maximum, in about half the steps). Raises
    ValueError when there is nothing to fit or it does not converge.

    Quasi-separation (a day past which nobody starts drives a hinge's coefficient off towards minus
    infinity) converges in the deviance, which is what the probabilities need: those days' start
    probabilities go to 0, as the data say."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    keep = freq > 0
    y, X, freq = y[keep], X[keep].reshape(int(keep.sum()), -1), freq[keep]
    if not 0 < float(np.sum(freq * y)) < float(np.sum(freq)):
        raise ValueError("logistic model has no events or no non-events among its rows")
    if np.any(X.std(axis=0) == 0):
        raise ValueError("logistic model has a constant column")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            family = sm.families.Binomial(sm.families.links.CLogLog() if link == "cloglog" else None)
            fit = sm.GLM(y, np.column_stack([np.ones(len(y)), X]), family=family,
                         freq_weights=freq).fit(maxiter=_MAXITER, start_params=start)
        except ConvergenceWarning:
            fit = None
    if fit is None or not fit.converged or not np.all(np.isfinite(fit.params)):
        raise ValueError(f"logistic model did not converge in {_MAXITER} IRLS steps (separation?)")
    return np.asarray(fit.params)


def _expit(eta: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-eta))


@dataclass(frozen=True)
class Prepared:
    """The person-level arrays of one analysis (see :func:`prepare`)."""

    time: np.ndarray  # observed day of the outcome or of censoring (>= 0)
    event: np.ndarray  # bool
    start: np.ndarray  # day of the first dose if before ``time`` and before any outside start (else _NEVER)
    other: np.ndarray  # day of a start outside the strategy's arms, before ``start`` and ``time`` (else _NEVER)
    X: np.ndarray  # (n, p) baseline covariates
    covariates: tuple[str, ...]
    grace_days: int
    end: int  # last day of the curves
    days: tuple[int, ...]
    horizon: int
    truncation: float | None
    stabilised: bool
    late_weights: str  # "normalised" or "raw": see the module doc
    who: np.ndarray  # the person of each person-day at risk of a start (built once: see _start_rows)
    y: np.ndarray  # 1 if that person starts that day (on any arm: the never arm's deviation)
    y_other: np.ndarray  # 1 if that start is outside the strategy's arms
    design: np.ndarray  # day basis, then the covariates
    grid: np.ndarray  # (end, 1 + basis) intercept and day basis of days 0..end-1
    late: str  # "model" or "weights": how the initiate arm continues after G (module doc)
    post_who: np.ndarray  # the person of each person-interval after a start (late == "model"; else empty)
    post_y: np.ndarray  # 1 if the outcome falls in that interval
    post_design: np.ndarray  # days-since-start basis, start day / 30, then the covariates
    post_basis: np.ndarray  # (end, basis) the days-since-start basis at 1..end


def prepare(frame: pl.DataFrame, *, time: str, event: str, start: str, covariates: Sequence[str],
            grace_days: int = 30, days: Sequence[int] = (7, 28, 56), horizon: int = 56,
            truncation: float | None = None, stabilised: bool = True, late_weights: str = "normalised",
            late: str = "model", other_start: str | None = None) -> Prepared:
    """Check the frame and turn it into arrays (``other_start``: the column of the day of a first
    start outside the strategy's arms, module doc). Raises ValueError with one line naming the column."""
    if late_weights not in LATE_WEIGHTS:
        raise ValueError(f"late_weights must be one of {LATE_WEIGHTS}, not {late_weights!r}")
    if late not in LATE:
        raise ValueError(f"late must be one of {LATE}, not {late!r}")
    missing = [c for c in (time, event, start, *covariates, *([other_start] if other_start else [])) if c not in frame.columns]
    if missing:
        raise ValueError(f"CCW input has no column(s) {missing}: expected time, event, start day and covariates")
    for c in (time, event, *covariates):
        if frame[c].null_count():
            raise ValueError(f"CCW input column {c!r} has {frame[c].null_count()} missing value(s): "
                             "drop or impute them first")
    t = frame[time].cast(pl.Int64).to_numpy()
    s = frame[start].cast(pl.Int64).fill_null(_NEVER).to_numpy()
    o = frame[other_start].cast(pl.Int64).fill_null(_NEVER).to_numpy() if other_start else np.full(len(t), _NEVER)
    if (t < 0).any() or (s < 0).any() or (o < 0).any():
        raise ValueError(f"CCW input columns {time!r}, {start!r} (and the outside start) must be days >= 0")
    if not (isinstance(grace_days, int) and grace_days >= 0):
        raise ValueError(f"grace_days must be a whole number of days >= 0, not {grace_days!r}")
    if truncation is not None and not 0.5 < truncation < 1:
        raise ValueError(f"truncation must be a quantile in (0.5, 1) or None, not {truncation!r}")
    if not days or min(days) < 1 or horizon < 1:
        raise ValueError("days and horizon must be >= 1")
    end = max(int(t.max()), horizon, *days)
    if grace_days >= end:
        raise ValueError(f"grace_days ({grace_days}) must end before the last day of follow-up ({end})")
    X = frame.select(pl.col(c).cast(pl.Float64) for c in covariates).to_numpy().reshape(len(t), len(covariates))
    s = np.where(s < t, s, _NEVER)
    o = np.where((o < s) & (o < t), o, _NEVER)  # an outside start after the strategy's start is no deviation
    s = np.where(o < _NEVER, _NEVER, s)  # a strategy start after an outside one: both clones censored before it
    first_any = np.minimum(s, o)
    # person-days at risk of a start: days 0..min(start, time - 1) (not started, still in follow-up)
    last = np.minimum(np.minimum(first_any, t - 1), end - 1)
    n_rows = np.maximum(last + 1, 0)
    who = np.repeat(np.arange(len(t)), n_rows)
    d = np.arange(int(n_rows.sum())) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    post = _post_start_rows(t, frame[event].cast(pl.Int64).to_numpy() == 1, s, X, end, late == "model")
    return Prepared(time=t, event=frame[event].cast(pl.Int64).to_numpy() == 1, start=s, other=o,
                    X=X, covariates=tuple(covariates), grace_days=grace_days, end=end, days=tuple(days),
                    horizon=horizon, truncation=truncation, stabilised=stabilised, late_weights=late_weights, who=who,
                    y=(d == first_any[who]).astype(float), y_other=(d == o[who]).astype(float), design=np.column_stack([_day_basis(d, grace_days, end), X[who]]),
                    grid=np.column_stack([np.ones(end), _day_basis(np.arange(end), grace_days, end)]),
                    late=late, **post)


#: Interior knots (days since the start) of the post-start outcome model's natural cubic spline:
#: dense early, where ketamine's effect changes fastest.
POST_START_KNOTS = (3, 7, 14, 28)


def _post_start_rows(t: np.ndarray, event: np.ndarray, s: np.ndarray, X: np.ndarray, end: int, build: bool) -> dict:
    """The person-intervals after an observed start (``s < t``): intervals ``k = s + 1 .. min(t, end)``,
    ``d = k - s`` days since the start, the outcome in the interval ``k = t``; and the basis in ``d``
    (patsy's natural cubic regression spline, centred, knots :data:`POST_START_KNOTS`) on 1..end.
    Without ``build`` (``late="weights"``, which has no outcome model) nothing is built."""
    if not build:
        return {"post_who": np.array([], dtype=np.int64), "post_y": np.array([]),
                "post_design": np.empty((0, 0)), "post_basis": np.empty((end, 0))}
    import patsy

    grid = np.arange(1, end + 1)
    knots = tuple(k for k in POST_START_KNOTS if 1 < k < end)
    basis = np.asarray(patsy.dmatrix(f"cr(x, knots={knots!r}, lower_bound=1, upper_bound={end}, "
                                     "constraints='center') - 1", {"x": grid}))
    starter = np.flatnonzero(s < np.minimum(t, end))
    n_rows = np.minimum(t, end)[starter] - s[starter]
    who = np.repeat(starter, n_rows)
    d = 1 + np.arange(int(n_rows.sum())) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    y = (event[who] & (s[who] + d == t[who])).astype(float)
    design = np.column_stack([basis[d - 1], s[who] / 30, X[who]]).reshape(len(who), basis.shape[1] + 1 + X.shape[1])
    return {"post_who": who, "post_y": y, "post_design": design, "post_basis": basis}


def _day_basis(d: np.ndarray, grace: int, end: int) -> np.ndarray:
    """The day, and hinges at day 7 and at the grace period's last day, per 30 days (no intercept)."""
    d = d.astype(float)
    knots = sorted({k for k in (7, grace) if 0 < k < end - 2})
    return np.column_stack([d / 30, *(np.maximum(d - k, 0) / 30 for k in knots)])


@dataclass(frozen=True)
class _StartModel:
    p: np.ndarray  # (n, end) P(start on day d | not started, x), d = 0..end-1 (a start on any arm)
    p0: np.ndarray  # (end,) the same with the day basis only (stabilising numerator)
    p_other: np.ndarray | None  # (n, end) P(a start outside the strategy's arms on day d | ...); None: none drawn


def _kept(warm: dict, key: str, coef: np.ndarray) -> np.ndarray:
    """``coef``, kept in ``warm`` under ``key`` unless a value is there already (module doc: warm starts)."""
    warm.setdefault(key, coef)
    return coef


def _start_model(pr: Prepared, freq: np.ndarray, warm: dict | None = None, numerator: bool = True) -> _StartModel:
    """The start models; ``numerator=False`` leaves out the stabilising one (``p0`` = 0), whose common
    factor cancels in every curve and influence when the weights are not truncated."""
    warm = {} if warm is None else warm
    f = freq[pr.who].astype(float)
    nb = pr.grid.shape[1]
    coef = _kept(warm, "start", fit_logistic(pr.y, pr.design, f, start=warm.get("start")))
    p0 = np.zeros(pr.end)
    if numerator:
        coef0 = _kept(warm, "start0", fit_logistic(pr.y, pr.design[:, : nb - 1], f, start=warm.get("start0")))
        p0 = _expit(pr.grid @ coef0)
    p = _expit((pr.grid @ coef[:nb])[None, :] + (pr.X @ coef[nb:])[:, None])
    p_other = None
    if np.any(pr.y_other[f > 0]):
        co = _kept(warm, "other", fit_logistic(pr.y_other, pr.design, f, start=warm.get("other")))
        p_other = _expit((pr.grid @ co[:nb])[None, :] + (pr.X @ co[nb:])[:, None])
    return _StartModel(p=p, p0=p0, p_other=p_other)


@dataclass(frozen=True)
class Estimates:
    """Curves and contrasts of one variant on one (possibly resampled) cohort."""

    risk: dict[str, np.ndarray]  # strategy -> risk at days 0..end
    rmst: dict[str, float]
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # risk-set person-interval weights
    weight_freq: dict[str, np.ndarray] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    influence: dict[str, np.ndarray] = field(default_factory=dict)  # strategy -> (n, days + 1), see _km_influence
    freq: np.ndarray | None = None  # copies of each patient (a bootstrap's counts)

    def vector_se(self, days: Sequence[int]) -> np.ndarray:
        """Standard errors of :meth:`vector`'s measures from the patients' influence (a patient's two
        clones together; the weights taken as known): the scale of the studentised bootstrap."""
        f = (np.ones(len(self.influence["initiate"])) if self.freq is None else self.freq.astype(float))[:, None]
        a, b = self.influence["initiate"], self.influence["never"]
        se = lambda inf: float(np.sqrt(np.sum(f * inf**2)))  # noqa: E731
        out = []
        for j, d in enumerate(days):
            ra, rb = self.risk["initiate"][d], self.risk["never"][d]
            inf_rr = (a[:, j] / ra - b[:, j] / rb) * (ra / rb) if ra > 0 and rb > 0 else None
            out += [se(a[:, [j]]), se(b[:, [j]]), se(a[:, [j]] - b[:, [j]]),
                    se(inf_rr[:, None]) if inf_rr is not None else math.nan]
        k = len(days)
        return np.array(out + [se(a[:, [k]]), se(b[:, [k]]), se(a[:, [k]] - b[:, [k]])])

    def vector(self, days: Sequence[int]) -> np.ndarray:
        """risk_initiate, risk_never, rd, rr at each day, then rmst_initiate, rmst_never, rmst_diff."""
        out = []
        for d in days:
            a, b = self.risk["initiate"][d], self.risk["never"][d]
            out += [a, b, a - b, a / b if b > 0 else math.nan]
        ri, rn = self.rmst["initiate"], self.rmst["never"]
        return np.array(out + [ri, rn, ri - rn])


def measure_names(days: Sequence[int], horizon: int) -> list[tuple[str, int]]:
    return [(m, d) for d in days for m in ("risk_initiate", "risk_never", "rd", "rr")] + [
        (m, horizon) for m in ("rmst_initiate", "rmst_never", "rmst_diff")]


def _arm(pr: Prepared, freq: np.ndarray, censor_day: np.ndarray, W: np.ndarray | None, name: str,
         est: dict) -> None:
    """Weighted KM of one arm; ``censor_day``: artificial censoring time (clone keeps k <= it);
    ``W``: (n, end) weight of each person at each interval k = 1..end (None: 1)."""
    k = np.arange(1, pr.end + 1)
    last = np.minimum(pr.time, censor_day)
    at_risk = k[None, :] <= last[:, None]
    ev = (pr.event & (pr.time <= censor_day))[:, None] & (k[None, :] == pr.time[:, None])
    f = freq.astype(float)[:, None]
    n_trunc = 0
    if W is not None:
        rows = at_risk & (f > 0)
        if pr.truncation is not None and rows.any():
            cap = _weighted_quantile(W[rows], np.broadcast_to(f, W.shape)[rows], pr.truncation)
            n_trunc = int(np.sum(np.broadcast_to(f, W.shape)[rows & (W > cap)]))
            W = np.minimum(W, cap)
        est["weights"][name] = W[rows]
        est["weight_freq"][name] = np.broadcast_to(f, W.shape)[rows]
        fw = f * W
    else:
        fw = np.broadcast_to(f, at_risk.shape)
    num = np.sum(fw * ev, axis=0)
    den = np.sum(fw * at_risk, axis=0)
    h = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    surv = np.r_[1.0, np.cumprod(1.0 - h)]
    est["risk"][name] = 1.0 - surv
    est["rmst"][name] = float(np.sum(surv[: pr.horizon]))
    est["influence"][name] = _km_influence(pr, (1.0 if W is None else W) * (f > 0), at_risk, ev, h, den, surv)
    est["truncated"][name] = n_trunc
    fi = freq.astype(np.int64)
    est["counts"][name] = {"clones": int(fi.sum()),
                           "censored_deviation": int(fi[censor_day < pr.time].sum()),
                           "events": int(fi[pr.event & (pr.time <= censor_day)].sum()),
                           "censored_other": int(fi[~pr.event & (pr.time <= censor_day)].sum()),
                           "followed_by_model": 0}


def _km_influence(pr: Prepared, w: np.ndarray, at_risk: np.ndarray, ev: np.ndarray, h: np.ndarray,
                  den: np.ndarray, surv: np.ndarray) -> np.ndarray:
    """(n, len(days) + 1) influence of one copy of each patient on the risk at each named day and on
    the RMST of one weighted Kaplan-Meier curve (``w``: each patient's weight per interval, 0 outside
    the arm), the weights taken as known:
    ``IF_i(S(t)) = -S(t) sum_{k <= t} w_ik (dN_ik - Y_ik h_k) / (R_k (1 - h_k))`` (its sum of squares
    over patients is Greenwood's variance when every weight is 1)."""
    scale = np.divide(1.0, den * (1.0 - h), out=np.zeros_like(h), where=(den > 0) & (h < 1))
    cum = np.cumsum(w * (ev - at_risk * h[None, :]) * scale[None, :], axis=1)
    inf_s = -surv[None, 1:] * cum  # influence on S(k), k = 1..end
    inf_risk = -inf_s[:, [d - 1 for d in pr.days]]
    inf_rmst = inf_s[:, : pr.horizon - 1].sum(axis=1)  # S(0) = 1 has none
    return np.column_stack([inf_risk, inf_rmst])


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][min(int(np.searchsorted(cum, q * cum[-1])), len(values) - 1)])


def estimate(pr: Prepared, freq: np.ndarray | None = None, variants: Sequence[str] = VARIANTS,
             warm: dict | None = None, curves_only: bool = False) -> dict[str, Estimates]:
    """Every requested variant on one cohort (``freq``: a bootstrap's count per patient; ``warm``:
    a dict the models' coefficients are kept in on first use and started from afterwards, which
    :func:`bootstrap_draws` fills from the full cohort; ``curves_only``: only the curves, contrasts
    and influence are wanted, so an untruncated analysis skips the stabilising numerator's model,
    which changes the reported weights but not those)."""
    with one_blas_thread():
        return _estimate(pr, np.ones(len(pr.time), dtype=np.int64) if freq is None else freq, variants,
                         {} if warm is None else warm, curves_only)


def _estimate(pr: Prepared, freq: np.ndarray, variants: Sequence[str], warm: dict,
              curves_only: bool = False) -> dict[str, Estimates]:
    G = pr.grace_days
    out: dict[str, Estimates] = {}
    weighted = [v for v in variants if v in ("ccw", "simple")]
    first_any = np.minimum(pr.start, pr.other)  # the never arm's deviation: a start on any arm
    if np.any(pr.other < _NEVER) and ("simple" in variants or ("ccw" in variants and pr.late == "weights")):
        raise ValueError('starts outside the strategy\'s arms are handled by the ccw variant with late="model" only')
    if weighted:
        sm = _start_model(pr, freq, warm, numerator=not (curves_only and pr.truncation is None))
        # never: censored at the start day; weight = prod_{d<k} num_d / (1 - p_d)
        q = 1.0 - sm.p
        ratio = (1.0 - sm.p0)[None, :] / q if pr.stabilised else 1.0 / q
        W_never = np.cumprod(ratio, axis=1)
        init_censor = np.where((pr.start > G) & (pr.time > G), G, _NEVER)
        late = np.arange(1, pr.end + 1)[None, :] > G
        for v in weighted:
            est: dict = {"risk": {}, "rmst": {}, "weights": {}, "weight_freq": {}, "truncated": {}, "counts": {},
                         "influence": {}, "freq": freq}
            if v == "ccw" and pr.late == "model":
                _initiate_with_model(pr, freq, est, warm, sm)
                _arm(pr, freq, first_any, W_never, "never", est)
                out[v] = Estimates(**est)
                continue
            if v == "ccw":  # only day-G starters stand in for the clones censored at G
                pG = sm.p[:, G]
                day_g = pr.start == G
                w = np.where(day_g, 1.0 / pG, 1.0)  # not stabilised: see the module doc
                if pr.late_weights == "normalised" and np.any(freq[day_g] > 0):
                    # their weights sum to the clones they stand in for (not started by G - 1, in
                    # follow-up after G), a count the data give exactly
                    waiting = (pr.start >= G) & (pr.time > G)
                    w = np.where(day_g, w * np.sum(freq[waiting]) / np.sum(freq[day_g] * w[day_g]), 1.0)
            else:  # every clone uncensored at G stands in (biased)
                risk_set = (pr.time > G) & (freq > 0)
                y = (pr.start <= G).astype(float)
                coef = _kept(warm, "simple", fit_logistic(y[risk_set], pr.X[risk_set], freq[risk_set].astype(float),
                                                               start=warm.get("simple")))
                num = float(np.average(y[risk_set], weights=freq[risk_set])) if pr.stabilised else 1.0
                w = np.where(pr.start <= G, num / _expit(coef[0] + pr.X @ coef[1:]), 1.0)
            W_init = np.where(late, w[:, None], 1.0)
            _arm(pr, freq, init_censor, W_init, "initiate", est)
            _arm(pr, freq, first_any, W_never, "never", est)
            out[v] = Estimates(**est)
    if "naive" in variants:
        est = {"risk": {}, "rmst": {}, "weights": {}, "weight_freq": {}, "truncated": {}, "counts": {},
               "influence": {}, "freq": freq}
        user = pr.start <= G
        _arm(pr, freq * user, np.full(len(user), _NEVER), None, "initiate", est)
        _arm(pr, freq * ~user, first_any, None, "never", est)
        out["naive"] = Estimates(**est)
    return out


def _initiate_with_model(pr: Prepared, freq: np.ndarray, est: dict, warm: dict, sm: _StartModel) -> None:
    """The initiate arm with ``late="model"`` (module doc): Kaplan-Meier of every clone to ``G``
    (nobody deviates before then); after ``G`` the clones in follow-up are a mixture of the early
    starters, followed as observed (Kaplan-Meier), and the clones not started by ``G - 1`` (the
    "waiting"), each followed by the post-start outcome model's survival from a start on day ``G``:
    ``S(t) = [n_E S_A(t) + S(G) sum_W f_i S_i(t)] / (n_E + n_W)`` for ``t > G``, where ``S_A`` is
    the Kaplan-Meier curve with the waiting censored at ``G`` (so ``S_A(t) = S(G) S_E(t)``).

    A start outside the strategy's arms (``pr.other``) before the strategy's start and before ``G``
    is a deviation: the clone is censored on that day, and the others are weighted by the inverse
    probability of no such start on each day before their own start (or ``G``), from the model of
    outside starts (``sm.p_other``); the head counts above are then weighted counts."""
    G = pr.grace_days
    waiting = (pr.start >= G) & (pr.other >= G) & (pr.time > G)
    deviates = pr.other < G
    W = np.ones((len(pr.time), pr.end))
    if sm.p_other is not None:  # at risk of an outside start on the days before the own start and before G
        at_risk = np.arange(pr.end)[None, :] < np.minimum(pr.start, G)[:, None]
        W = np.cumprod(np.where(at_risk, 1.0 / (1.0 - sm.p_other), 1.0), axis=1)
    _arm(pr, freq, np.where(deviates, pr.other, np.where(waiting, G, _NEVER)), W, "initiate", est)
    f = freq.astype(float) * W[:, G]  # each clone's weight at interval G + 1 (frozen from its start, or G, on)
    n_w = float(np.sum(f[waiting]))
    n_e = float(np.sum(f[(pr.start < G) & (pr.time > G)]))
    risk = est["risk"]["initiate"]
    surv = 1.0 - risk
    if n_w > 0:
        coef = _kept(warm, "post", _fit_post_start(pr, freq, warm.get("post")))
        nb = pr.post_basis.shape[1]
        steps = pr.end - G  # days since a start on day G: 1..end - G
        eta = (coef[0] + pr.post_basis[:steps] @ coef[1: nb + 1] + coef[nb + 1] * G / 30)[None, :] \
            + (pr.X[waiting] @ coef[nb + 2:])[:, None]
        s_w = np.cumprod(np.exp(-np.exp(np.minimum(eta, 30.0))), axis=1)  # (waiting, steps): S_i(G + m)
        mixed = (n_e * surv[G + 1:] + surv[G] * (f[waiting] @ s_w)) / (n_e + n_w)
        surv = np.r_[surv[: G + 1], mixed]
    est["risk"]["initiate"] = 1.0 - surv
    est["rmst"]["initiate"] = float(np.sum(surv[: pr.horizon]))
    # deviations as with late="weights" (in follow-up after G, not started on G); the waiting's
    # outcomes after G are the model's, not counted
    fi = freq.astype(np.int64)
    kept = ~waiting & ~deviates
    est["counts"]["initiate"].update(censored_deviation=int(fi[(waiting & (pr.start > G)) | deviates].sum()),
                                     events=int(fi[pr.event & kept].sum()),
                                     censored_other=int(fi[~pr.event & kept].sum()),
                                     followed_by_model=int(fi[waiting].sum()))
    # the influence above covers the curve to G only (the outcome model's is not derived): NaN after
    late_cols = [j for j, d in enumerate(pr.days) if d > G] + ([len(pr.days)] if pr.horizon > G + 1 else [])
    est["influence"]["initiate"][:, late_cols] = np.nan


def _fit_post_start(pr: Prepared, freq: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Coefficients (intercept, basis, start day / 30, covariates) of the post-start outcome model:
    a complementary log-log model of the outcome in each interval after a start, on the days since
    the start (spline), the start day and the covariates, over every observed start. A column
    constant among the rows drawn (a covariate a bootstrap replicate happens not to vary, a start day
    shared by all) cannot be estimated and gets the coefficient 0."""
    f = freq[pr.post_who].astype(float)
    keep = f > 0
    X = pr.post_design[keep]
    varies = X.std(axis=0) > 0 if len(X) else np.zeros(X.shape[1], dtype=bool)
    coef = np.zeros(1 + X.shape[1])
    fitted = fit_logistic(pr.post_y[keep], X[:, varies], f[keep], link="cloglog",
                          start=None if start is None else start[np.r_[True, varies]])
    coef[0] = fitted[0]
    coef[1:][varies] = fitted[1:]
    return coef


@dataclass(frozen=True)
class CCWResult:
    """What one variant reports.

    Attributes
    ----------
    variant : str
    curves : DataFrame
        strategy, day (0..end), risk.
    effects : DataFrame
        measure (risk_initiate, risk_never, rd, rr at each named day; rmst_initiate, rmst_never,
        rmst_diff at the horizon), day, estimate; with a bootstrap also se, lower, upper (95%
        percentile) and the number of replicates that gave a value.
    weights : DataFrame
        strategy, rows (person-intervals in the risk set), min, p01, p25, p50, p75, p99, max,
        truncated (rows capped).
    counts : DataFrame
        strategy, clones, censored_deviation (artificial censoring), events, censored_other.
    start_distribution : DataFrame
        day (0..G), starters (first doses on that day, before the outcome), at_risk (patients not
        started and still in follow-up that morning), share (starters / all patients): the observed
        initiation pattern the estimand depends on.
    """

    variant: str
    curves: pl.DataFrame
    effects: pl.DataFrame
    weights: pl.DataFrame
    counts: pl.DataFrame
    start_distribution: pl.DataFrame
    settings: dict = field(default_factory=dict)


def _weight_summary(est: Estimates) -> pl.DataFrame:
    rows = []
    for s in STRATEGIES:
        w, f = est.weights.get(s), est.weight_freq.get(s)
        if w is None or len(w) == 0:
            rows.append({"strategy": s, "rows": 0, "min": None, "p01": None, "p25": None, "p50": None, "p75": None,
                         "p99": None, "max": None, "truncated": 0})
            continue
        qs = {f"p{int(q * 100):02d}": _weighted_quantile(w, f, q) for q in (0.01, 0.25, 0.5, 0.75, 0.99)}
        rows.append({"strategy": s, "rows": int(f.sum()), "min": float(w.min()), **qs, "max": float(w.max()),
                     "truncated": est.truncated.get(s, 0)})
    return pl.DataFrame(rows)


def _start_distribution(pr: Prepared) -> pl.DataFrame:
    G = pr.grace_days
    day = np.arange(G + 1)
    starters = np.bincount(pr.start[pr.start <= G], minlength=G + 1)
    first_any = np.minimum(pr.start, pr.other)
    at_risk = np.array([int(np.sum((first_any >= d) & (pr.time > d))) for d in day])
    return pl.DataFrame({"day": day, "starters": starters, "at_risk": at_risk, "share": starters / len(pr.time)})


def with_bootstrap(effects: pl.DataFrame, boot: np.ndarray | None) -> pl.DataFrame:
    """``effects`` (one row a measure, in the columns' order of ``boot``) with the bootstrap columns:
    the SD of the finite replicates (``se``), their 2.5% and 97.5% percentiles (``lower``,
    ``upper``) and how many there were (``replicates``); unchanged without replicates."""
    if boot is None:
        return effects
    cols = range(boot.shape[1])
    with np.errstate(all="ignore"):
        ok = np.isfinite(boot)
        lo = [float(np.quantile(boot[ok[:, j], j], 0.025)) if ok[:, j].any() else None for j in cols]
        hi = [float(np.quantile(boot[ok[:, j], j], 0.975)) if ok[:, j].any() else None for j in cols]
        se = [float(np.std(boot[ok[:, j], j], ddof=1)) if ok[:, j].sum() > 1 else None for j in cols]
    return effects.with_columns(pl.Series("se", se, dtype=pl.Float64), pl.Series("lower", lo, dtype=pl.Float64),
                                pl.Series("upper", hi, dtype=pl.Float64), pl.Series("replicates", ok.sum(axis=0)))


def _result(variant: str, pr: Prepared, est: Estimates, boot: np.ndarray | None, settings: dict,
            boot_se: np.ndarray | None = None) -> CCWResult:
    names = measure_names(pr.days, pr.horizon)
    point = est.vector(pr.days)
    effects = with_bootstrap(pl.DataFrame({"measure": [m for m, _ in names], "day": [d for _, d in names],
                                           "estimate": point}), boot)
    if boot is not None and boot_se is not None:  # the studentised interval instead of the percentile one
        with np.errstate(all="ignore"):
            t_lo, t_hi = studentised_interval(point, est.vector_se(pr.days), boot, boot_se)
        effects = effects.with_columns(
            pl.Series("lower", [float(x) if np.isfinite(x) else None for x in t_lo], dtype=pl.Float64),
            pl.Series("upper", [float(x) if np.isfinite(x) else None for x in t_hi], dtype=pl.Float64))
    curves = pl.concat([pl.DataFrame({"strategy": s, "day": np.arange(pr.end + 1), "risk": est.risk[s]})
                        for s in STRATEGIES])
    counts = pl.DataFrame([{"strategy": s, **est.counts[s]} for s in STRATEGIES])
    return CCWResult(variant=variant, curves=curves, effects=effects, weights=_weight_summary(est), counts=counts,
                     start_distribution=_start_distribution(pr), settings=settings)


def bootstrap(pr: Prepared, replicates: int, seed: int, variants: Sequence[str] = VARIANTS) -> dict[str, np.ndarray]:
    """(replicates, measures) estimates per variant over a person-level bootstrap (a replicate
    whose models cannot be fitted gives NaN)."""
    return bootstrap_draws(pr, replicates, seed, variants)[0]


def bootstrap_draws(pr: Prepared, replicates: int, seed: int, variants: Sequence[str] = VARIANTS
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`bootstrap`'s estimates and, for the same replicates, each one's influence standard
    errors (:meth:`Estimates.vector_se`), which :func:`studentised_interval` needs."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    n = len(pr.time)
    width = len(measure_names(pr.days, pr.horizon))
    out = {v: np.full((replicates, width), np.nan) for v in variants}
    ses = {v: np.full((replicates, width), np.nan) for v in variants}
    warm: dict = {}
    try:
        estimate(pr, None, variants, warm)  # the full cohort's coefficients, to start each replicate's fits from
    except (ValueError, np.linalg.LinAlgError):
        warm = {}
    for b in range(replicates):
        freq = np.bincount(rng.integers(0, n, n), minlength=n)
        try:
            est = estimate(pr, freq, variants, dict(warm), curves_only=True)
        except (ValueError, np.linalg.LinAlgError):
            continue
        for v in variants:
            out[v][b] = est[v].vector(pr.days)
            with np.errstate(all="ignore"):
                ses[v][b] = est[v].vector_se(pr.days)
    return out, ses


def studentised_interval(point: np.ndarray, se: np.ndarray, boot: np.ndarray, boot_se: np.ndarray,
                         level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap-t (studentised) interval of each measure (Efron & Tibshirani 1993, ch. 12; Davison &
    Hinkley 1997, sec. 5.2): ``t*_b = (theta*_b - theta) / se*_b`` over the replicates, and
    ``theta - q_{1-a/2}(t*) se, theta - q_{a/2}(t*) se``. ``point`` and ``se`` (measures,), ``boot``
    and ``boot_se`` (replicates, measures); NaN where fewer than two replicates give a finite t."""
    a = (1 - level) / 2
    lo = np.full(len(point), np.nan)
    hi = np.full(len(point), np.nan)
    with np.errstate(all="ignore"):
        t = (boot - point[None, :]) / boot_se
    for j in range(len(point)):
        tj = t[np.isfinite(t[:, j]), j]
        if len(tj) > 1 and np.isfinite(se[j]) and se[j] > 0:
            lo[j] = point[j] - float(np.quantile(tj, 1 - a)) * se[j]
            hi[j] = point[j] - float(np.quantile(tj, a)) * se[j]
    return lo, hi


def ccw_analysis(frame: pl.DataFrame, *, time: str, event: str, start: str, covariates: Sequence[str],
                 grace_days: int = 30, days: Sequence[int] = (7, 28, 56), horizon: int = 56,
                 truncation: float | None = None, stabilised: bool = True, bootstrap_replicates: int = 0,
                 seed: int = 1, variants: Sequence[str] = ("ccw",), late_weights: str = "normalised",
                 interval: str = "percentile", late: str = "model",
                 other_start: str | None = None) -> dict[str, CCWResult]:
    """Clone-censor-weighting of "initiate within ``grace_days``" vs "never" (module doc), for each
    of ``variants`` (:data:`VARIANTS`), with a person-level bootstrap of ``bootstrap_replicates``
    replicates (seeded by ``seed``) when > 0, giving ``interval`` 95% CIs: ``"percentile"`` or
    ``"studentised"`` (:func:`studentised_interval`; module doc for how they compared)."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown CCW variant(s) {bad}: choose from {VARIANTS}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, not {interval!r}")
    if interval == "studentised" and late == "model" and "ccw" in variants:
        raise ValueError('interval="studentised" needs influence SEs after G, which late="model" does not derive: '
                         'use late="weights" or the percentile interval')
    pr = prepare(frame, time=time, event=event, start=start, covariates=covariates, grace_days=grace_days,
                 days=days, horizon=horizon, truncation=truncation, stabilised=stabilised, late_weights=late_weights,
                 late=late, other_start=other_start)
    est = estimate(pr, None, variants)
    boots, boot_se = bootstrap_draws(pr, bootstrap_replicates, seed, variants) if bootstrap_replicates > 0 else ({}, {})
    if interval == "percentile":
        boot_se = {}
    settings = {"grace_days": grace_days, "days": list(days), "horizon": horizon, "truncation": truncation,
                "stabilised": stabilised, "covariates": list(covariates), "bootstrap_replicates": bootstrap_replicates,
                "seed": seed, "late": late, "late_weights": late_weights, "interval": interval}
    return {v: _result(v, pr, est[v], boots.get(v), {**settings, "variant": v}, boot_se.get(v)) for v in variants}


def naive_users(frame: pl.DataFrame, **kwargs) -> CCWResult:
    """The naive "users vs users" comparison (module doc); the arguments of :func:`ccw_analysis`."""
    return ccw_analysis(frame, **{**kwargs, "variants": ("naive",)})["naive"]

