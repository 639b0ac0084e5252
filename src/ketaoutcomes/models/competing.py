"""Competing risks: Aalen-Johansen cumulative incidence and Gray's test.

Same house style as :mod:`ketaoutcomes.models.km` (a frame goes in, a frozen
result comes out; the helpers of :mod:`ketaoutcomes.models.common` are reused, not
copied). R is the oracle that
``tests/reference/test_competing_vs_R.py`` compares against:

* :func:`cumulative_incidence` reproduces R ``survival``'s multi-state
  ``survfit(Surv(time, factor(status)) ~ group)`` (survival 3.5-3): the
  Aalen-Johansen estimate of the probability of each state (``pstate``), its
  infinitesimal-jackknife standard error (``std.err``: the only variance
  multi-state ``survfit`` offers) and the pointwise interval R puts around it
  (``conf.type = "log"`` by default, applied on the probability scale).
* :func:`gray_test` reproduces ``cmprsk::cuminc(ftime, fstatus, group)$Tests``
  (cmprsk 2.2-11): Gray's K-sample test that the cumulative incidence of one
  cause is the same in all groups.

Conventions
-----------
* **Status coding.** ``status`` holds integers: ``0`` = censored, ``1..k`` = the
  cause of the event (ADaM-style CNSR is *not* accepted here). Whole-number floats
  are accepted; negative or fractional values, and non-numeric columns, raise.
* **Missing values.** Rows with a null (or NaN) time, status or group are dropped,
  counted (``n_dropped``) and described in ``notes``, as in ``kaplan_meier``.
* **Ties.** At a time shared by events and censorings, the events come first: a
  subject censored at ``t`` is at risk for the events at ``t`` (as R). Events of
  different causes at the same time are handled together (one Aalen-Johansen
  step with the all-cause hazard ``d/n``).
* **Times.** Times are used as given. R's ``survfit(formula)`` first merges times
  that differ only by rounding error (``timefix = TRUE``, ``aeqSurv``); integer
  or day-level times are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
from scipy import stats

from ketaoutcomes.models.common import (
    ALL_GROUP,
    ci_band,
    drop_missing,
    level_codes,
    numeric,
)

__all__ = [
    "CIF_CONF_TYPES",
    "EVENT_FREE",
    "CIFResult",
    "GrayTest",
    "cumulative_incidence",
    "gray_test",
]

#: Label (in the ``cause`` column) of the probability of being event-free, R's state ``"(s0)"``.
EVENT_FREE = "event-free"

#: Interval transforms for the cumulative incidence, as R's ``survfit(conf.type=...)``
#: offers them for multi-state curves; R's default is ``"log"``.
CIF_CONF_TYPES = ("log", "log-log", "plain", "logit", "arcsin", "none")

_TABLE_SCHEMA = {
    "group": pl.String,
    "cause": pl.String,
    "time": pl.Float64,
    "n_risk": pl.Int64,
    "n_event": pl.Int64,
    "n_censor": pl.Int64,
    "cif": pl.Float64,
    "se": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
}

_AT_SCHEMA = {
    "group": pl.String,
    "cause": pl.String,
    "time": pl.Float64,
    "n_risk": pl.Int64,
    "cif": pl.Float64,
    "se": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
}

#: A variance smaller than this multiple of machine epsilon times the size of the terms
#: it is summed from is rounding noise around an exact zero (see :func:`_aj_one_group`).
_ZERO_VAR_ULPS = 64.0


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class CIFResult:
    """Aalen-Johansen cumulative incidence per group and cause.

    Attributes
    ----------
    table : polars.DataFrame
        One row per group, cause and distinct observed time of the group (event
        or censoring), like R's multi-state ``survfit`` (which lists every
        distinct time): ``group`` (str), ``cause`` (the cause's label, or
        :data:`EVENT_FREE`), ``time``, ``n_risk`` (event-free subjects under
        observation just before ``time``), ``n_event`` (events of that cause at
        ``time``; for the event-free rows, events of any cause), ``n_censor``,
        ``cif`` (cumulative incidence of the cause by ``time``; for the
        event-free rows, the probability of no event of any cause yet, R's
        state ``"(s0)"``), ``se`` (infinitesimal-jackknife standard error, R's
        ``std.err``), ``lower``/``upper`` (pointwise ``1 - alpha`` interval;
        null where R gives NA, e.g. where ``cif`` is 0 with ``conf_type="log"``).
        Sorted by group, then cause (in code order, event-free last), then time.
        At every time the causes' ``cif`` and the event-free one add up to 1.
    n : int
        Rows analysed (after dropping rows with missing values).
    alpha : float
        The intervals have coverage ``1 - alpha``.
    conf_type : str
        The interval transform (R's ``conf.type``).
    causes : tuple of str
        The cause labels, in code order.
    n_dropped : int
        Rows dropped for missing values.
    notes : tuple of str
        Dropped rows, groups without events, causes never observed.
    """

    table: pl.DataFrame
    n: int
    alpha: float
    conf_type: str
    causes: tuple[str, ...]
    n_dropped: int = 0
    notes: tuple[str, ...] = ()

    def at(self, times: float | Sequence[float] | np.ndarray) -> pl.DataFrame:
        """The estimates at given horizons (a right-continuous step function).

        Parameters
        ----------
        times : float or sequence of float
            Horizons, in the units of the time column.

        Returns
        -------
        polars.DataFrame
            One row per group, cause (event-free included) and horizon:
            ``group``, ``cause``, ``time`` (the horizon), ``n_risk`` (subjects
            still under observation and event-free at the horizon: time >=
            horizon), ``cif``, ``se``, ``lower``, ``upper``. The values are those
            of the last table time at or before the horizon, as R's
            ``summary(fit, times = ..., extend = TRUE)``. Before a group's first
            time the cumulative incidence is 0 and the event-free probability 1,
            with ``se`` 0 (the interval then follows from ``se`` 0: null for 0
            on the log scale, [1, 1] for 1; R's ``summary`` prints 0 and 0
            there). Beyond a group's last time the last values are carried
            forward and ``n_risk`` is 0: that is extrapolation.
        """
        h = np.atleast_1d(np.asarray(times, dtype=float))
        if h.ndim != 1 or not np.all(np.isfinite(h)):
            raise ValueError("times must be finite numbers")
        z = _z(self.alpha)
        parts = []
        for (group, cause), sub in self.table.group_by(["group", "cause"], maintain_order=True):
            t = sub["time"].to_numpy()
            pos = np.searchsorted(t, h, side="right") - 1
            before = pos < 0
            idx = np.clip(pos, 0, None)
            start = 1.0 if cause == EVENT_FREE else 0.0
            cif = np.where(before, start, sub["cif"].to_numpy()[idx])
            se = np.where(before, 0.0, sub["se"].to_numpy()[idx])
            risk_pos = np.searchsorted(t, h, side="left")  # first time >= horizon
            n_risk_col = sub["n_risk"].to_numpy()
            n_risk = np.where(risk_pos < len(t), n_risk_col[np.clip(risk_pos, 0, len(t) - 1)], 0)
            lower, upper = _interval(cif, se, z, self.conf_type)
            parts.append(
                pl.DataFrame(
                    {
                        "group": [group] * len(h),
                        "cause": [cause] * len(h),
                        "time": h,
                        "n_risk": n_risk,
                        "cif": cif,
                        "se": se,
                        "lower": lower,
                        "upper": upper,
                    },
                    schema=_AT_SCHEMA,
                )
            )
        out = pl.concat(parts) if parts else pl.DataFrame(schema=_AT_SCHEMA)
        return out.with_columns(pl.col("lower", "upper").fill_nan(None))


class GrayTest(NamedTuple):
    """Gray's K-sample test for one cause (unpacks as ``chi2, df, p_value``).

    ``chi2`` and ``p_value`` are NaN when the variance matrix of the scores is
    singular (cmprsk then reports a statistic of -1).
    """

    chi2: float
    df: int
    p_value: float


# --------------------------------------------------------------------------- inputs
def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


def _status_codes(series: pl.Series) -> np.ndarray:
    """The integer status column (0 = censored, 1..k = cause); the one place it is read."""
    if series.dtype == pl.Boolean:
        return series.cast(pl.Int64).to_numpy()
    if not series.dtype.is_numeric():
        raise ValueError(
            f"status column {series.name!r} must hold integer codes (0 = censored, 1..k = cause), "
            f"not {series.dtype}"
        )
    arr = numeric(series, "status")
    bad = (arr < 0) | (arr != np.floor(arr))
    if bad.any():
        seen = sorted({float(v) for v in arr[bad]})[:5]
        raise ValueError(
            f"status column {series.name!r} must hold non-negative integer codes "
            f"(0 = censored, 1..k = cause); found {seen}"
        )
    return arr.astype(np.int64)


def _times(series: pl.Series) -> np.ndarray:
    t = numeric(series, "time")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"time column {series.name!r} has infinite values")
    if (t < 0).any():
        raise ValueError(f"time column {series.name!r} has negative values")
    return t


def _cause_labels(codes_seen: np.ndarray, causes: Mapping[int, str] | None) -> tuple[list[int], list[str]]:
    """The cause codes to report (sorted) and their labels."""
    if causes is None:
        codes = sorted(int(c) for c in codes_seen if c > 0)
        return codes, [str(c) for c in codes]
    mapping: dict[int, str] = {}
    for code, label in causes.items():
        if isinstance(code, bool) or not isinstance(code, (int, np.integer)) or code < 1:
            raise ValueError(f"causes keys must be integer codes >= 1 (0 = censored), not {code!r}")
        mapping[int(code)] = str(label)
    labels = list(mapping.values())
    if len(set(labels)) != len(labels):
        raise ValueError(f"causes has duplicate labels: {labels}")
    if EVENT_FREE in labels:
        raise ValueError(f"{EVENT_FREE!r} is reserved for the event-free probability; choose another label")
    unknown = sorted(int(c) for c in codes_seen if c > 0 and int(c) not in mapping)
    if unknown:
        raise ValueError(f"status codes {unknown} are not in causes {sorted(mapping)}")
    codes = sorted(mapping)
    return codes, [mapping[c] for c in codes]


# --------------------------------------------------------------------------- intervals
def _interval(p: np.ndarray, se: np.ndarray, z: float, conf_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise interval of a probability, R's ``survfit_confint(logse = FALSE)``.

    ``se`` is the standard error of ``p`` itself; R first turns it into the
    standard error of ``log p`` (``se / p``, 0 where ``se`` is 0) and then applies
    the same transforms as for a survival curve. NaN marks R's NA.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        se_log = np.where(se == 0, 0.0, se / p)
        if conf_type in ("log", "log-log", "plain"):
            return ci_band(p, se_log, z, conf_type)
        if conf_type == "none":
            nan = np.full(p.shape, np.nan)
            return nan, nan.copy()
        xx = np.where(p == 0, np.nan, p)
        if conf_type == "logit":
            # R: se2 <- zval * se * (1 + xx/(1 - xx)); 1 - 1/(1 + exp(log(p/(1 - p)) -/+ se2))
            se2 = z * se_log * (1 + xx / (1 - xx))
            lower = 1 - 1 / (1 + np.exp(np.log(p / (1 - p)) - se2))
            upper = 1 - 1 / (1 + np.exp(np.log(p / (1 - p)) + se2))
        elif conf_type == "arcsin":
            # R: se2 <- 0.5 * zval * se * sqrt(xx/(1 - xx)); sin(pmax(0, asin(sqrt(xx)) - se2))^2, ...
            se2 = 0.5 * z * se_log * np.sqrt(xx / (1 - xx))
            lower = np.sin(np.maximum(0.0, np.arcsin(np.sqrt(xx)) - se2)) ** 2
            upper = np.sin(np.minimum(np.pi / 2, np.arcsin(np.sqrt(xx)) + se2)) ** 2
        else:  # pragma: no cover - checked by the caller
            raise ValueError(conf_type)
    return lower, upper


# --------------------------------------------------------------------------- Aalen-Johansen
def _shift(x: np.ndarray, first: float) -> np.ndarray:
    """Left-continuous version of a per-time array: the value just before each time."""
    out = np.empty_like(x)
    out[0] = first
    out[1:] = x[:-1]
    return out


def _aj_one_group(time: np.ndarray, cause: np.ndarray, n_causes: int) -> dict[str, np.ndarray]:
    """Aalen-Johansen estimates and their infinitesimal-jackknife SEs for one group.

    ``cause`` is -1 for a censoring and ``0..n_causes-1`` for an event. Returns
    per distinct time (rows) and cause (columns): ``cif``, ``se``, ``n_event``;
    per time: ``time``, ``n_risk``, ``n_censor``, ``surv``, ``se_surv``.

    The variance is R's (``survfitci.c``): the sum over subjects of the squared
    derivative of the estimate with respect to the subject's case weight,
    ``U_i(t)``. With everyone starting event-free, ``S(t)`` the all-cause
    Kaplan-Meier, ``n``/``d``/``d_k`` the risk set and the (cause-``k``) events at
    each event time and ``A(t) = sum d / (n (n - d))`` over event times <= t:

    * a subject still at risk after ``t`` has ``U_i0 = S(t) A(t)`` (event-free
      state) and ``U_ik = B_k(t)`` with
      ``B_k(t) = sum S(u-) (d_k/n) (A(u-) - 1/n)`` over event times ``u <= t``;
    * a subject who left at ``T_i <= t`` has ``U_i0 = S(t) c_i`` and
      ``U_ik = a_ik + c_i F_k(t)`` (``F_k`` the cumulative incidence), where
      ``c_i = A(T_i-) - 1/n(T_i)`` after an event and ``A(T_i)`` after a
      censoring, and ``a_ik = B_k(T_i) - c_i F_k(T_i) + [cause k at T_i] S(T_i-)/n(T_i)``.

    So ``sum_i U_ik(t)^2`` is ``N_after(t) B_k(t)^2`` plus cumulative sums over
    the subjects who left of ``a^2``, ``a c`` and ``c^2``: no loop over subjects
    or times. Expanding ``(a + c F)^2`` loses a few digits when the variance is
    exactly 0 (e.g. a group of one): values at rounding level relative to the
    terms summed are set to 0 there, as R gets them.
    """
    order = np.argsort(time, kind="stable")
    time, cause = time[order], cause[order]
    utime, inv = np.unique(time, return_inverse=True)
    m = len(utime)
    n_at = np.bincount(inv, minlength=m)
    ev = cause >= 0
    d_k = np.bincount(inv[ev] * n_causes + cause[ev], minlength=m * n_causes).reshape(m, n_causes)
    d = d_k.sum(axis=1)
    n_risk = np.cumsum(n_at[::-1])[::-1]
    n_after = (n_risk - n_at).astype(float)
    nr = n_risk.astype(float)

    h_k = d_k / nr[:, None]  # R: hmat[0][k] = d_k / n
    surv = np.cumprod(1.0 - d / nr)  # R: p[0] *= 1 - d/n
    surv_m = _shift(surv, 1.0)
    cif = np.cumsum(surv_m[:, None] * h_k, axis=0)  # R: p[k] += p[0] * d_k/n

    with np.errstate(divide="ignore", invalid="ignore"):
        # d == n only at the last time of the group (S drops to 0); nothing after it uses A.
        a_inc = np.where(d < n_risk, d / (nr * (nr - d)), 0.0)
    A = np.cumsum(a_inc)
    A_m = _shift(A, 0.0)
    inv_n = 1.0 / nr
    B = np.cumsum(surv_m[:, None] * h_k * (A_m - inv_n)[:, None], axis=0)

    # per subject (sorted by time): leverage once out of the risk set
    c = np.where(ev, A_m[inv] - inv_n[inv], A[inv])
    a = B[inv] - c[:, None] * cif[inv]
    rows = np.flatnonzero(ev)
    a[rows, cause[rows]] += (surv_m * inv_n)[inv[rows]]
    starts = np.flatnonzero(np.r_[True, inv[1:] != inv[:-1]])
    sum_c2 = np.cumsum(np.add.reduceat(c * c, starts))
    sum_a2 = np.cumsum(np.add.reduceat(a * a, starts, axis=0), axis=0)
    sum_ac = np.cumsum(np.add.reduceat(a * c[:, None], starts, axis=0), axis=0)

    at_risk = n_after[:, None] * B * B
    cross = 2.0 * cif * sum_ac
    square = cif * cif * sum_c2[:, None]
    var_k = at_risk + sum_a2 + cross + square
    scale = at_risk + sum_a2 + np.abs(cross) + square
    var_k = np.where(var_k <= _ZERO_VAR_ULPS * np.finfo(float).eps * scale, 0.0, var_k)
    var_0 = surv * surv * (n_after * A * A + sum_c2)  # a sum of squares: no cancellation

    return {
        "time": utime,
        "n_risk": n_risk,
        "n_censor": n_at - d,
        "n_event": d_k,
        "n_event_total": d,
        "cif": cif,
        "se": np.sqrt(var_k),
        "surv": surv,
        "se_surv": np.sqrt(var_0),
    }


def cumulative_incidence(
    frame: pl.DataFrame,
    *,
    time: str,
    status: str,
    group: str | None = None,
    causes: Mapping[int, str] | None = None,
    alpha: float = 0.05,
    conf_type: str = "log",
) -> CIFResult:
    """Aalen-Johansen cumulative incidence of competing causes, per group.

    Parameters
    ----------
    frame : polars.DataFrame
        One row per subject.
    time : str
        Column with the time of the first event or of censoring (non-negative).
    status : str
        Column with integer codes: 0 = censored, ``1..k`` = the cause of the
        event (booleans count as 0/1). Negative or fractional values raise.
    group : str, optional
        Column whose values define the groups (sorted by the column's natural
        order, labelled with their values as strings); None gives one group
        labelled ``"all"``.
    causes : mapping of int to str, optional
        Labels of the cause codes, e.g. ``{1: "relapse", 2: "death"}``. Every
        code that occurs must be in it; a code in it that never occurs gets a
        cumulative incidence of 0 (and a note). Default: every code seen,
        labelled ``str(code)``.
    alpha : float, default 0.05
        Pointwise intervals have coverage ``1 - alpha``.
    conf_type : {"log", "log-log", "plain", "logit", "arcsin", "none"}, default "log"
        Transform of the pointwise interval, as R's ``conf.type``. R's default
        for multi-state curves is ``"log"`` on the probability of each state:
        ``exp(log p -/+ z se/p)``, upper limit capped at 1.

    Returns
    -------
    CIFResult
        ``table`` lists every distinct time per group for each cause and for
        the event-free probability (cause :data:`EVENT_FREE`);
        ``CIFResult.at`` evaluates them at given horizons.

    Notes
    -----
    * The estimate is the Aalen-Johansen estimator with everyone starting
      event-free: ``F_k(t) = sum over event times u <= t of S(u-) d_k(u)/n(u)``,
      ``S`` the all-cause Kaplan-Meier curve. It is what R's
      ``survfit(Surv(time, factor(status)) ~ group)`` gives in ``pstate``.
    * The standard error is R's multi-state one, the infinitesimal jackknife
      (R's multi-state ``survfit`` has no Greenwood-type alternative); for the
      event-free probability it is not Greenwood's formula either, so it differs
      slightly from ``kaplan_meier``'s.
    * Ties: events of all causes at ``t`` come before censorings at ``t``, so a
      subject censored at ``t`` is in the risk set at ``t``.
    * A group without events has cumulative incidence 0 with ``se`` 0 (its
      interval is null with the log transform, as R's NA) and event-free
      probability 1 with interval [1, 1]; a note says so. A group of one
      subject jumps to 1 for that subject's cause, with ``se`` 0. When the last
      time of a group takes all remaining subjects out by events, the event-free
      probability reaches 0 (``se`` 0, null interval with the log transform).
    * Cost: two sorts of the rows and cumulative sums; no loop over subjects or
      times (a loop over groups only).
    """
    if conf_type not in CIF_CONF_TYPES:
        raise ValueError(f"conf_type must be one of {CIF_CONF_TYPES}, not {conf_type!r}")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    cols = [time, status] + ([group] if group is not None else [])
    data, n_dropped, notes = drop_missing(frame, cols)
    if data.height == 0:
        raise ValueError("no rows to analyse" + (f" ({notes[0]})" if notes else ""))
    t = _times(data[time])
    s = _status_codes(data[status])
    codes_seen = np.unique(s)
    cause_codes, cause_labels = _cause_labels(codes_seen, causes)
    never = [lab for code, lab in zip(cause_codes, cause_labels) if code not in codes_seen]
    if never:
        notes.append(f"cause(s) {never} never observed: cumulative incidence 0")
    # column index of each row's cause, -1 = censored
    lookup = np.full(int(max([0, *cause_codes])) + 1, -1, dtype=np.int64)
    lookup[cause_codes] = np.arange(len(cause_codes))
    cause_idx = lookup[s]
    if group is None:
        g_codes, g_labels = np.zeros(len(t), dtype=np.int64), [ALL_GROUP]
    else:
        g_codes, g_labels = level_codes(data[group])
    n_causes = len(cause_codes)
    z = _z(alpha)

    frames: list[pl.DataFrame] = []
    for k, label in enumerate(g_labels):
        mask = g_codes == k
        g = _aj_one_group(t[mask], cause_idx[mask], n_causes)
        if g["n_event_total"].sum() == 0:
            notes.append(f"group {label!r} has no events: cumulative incidence stays at 0")
        m = len(g["time"])
        columns = [(lab, g["n_event"][:, j], g["cif"][:, j], g["se"][:, j]) for j, lab in enumerate(cause_labels)]
        columns.append((EVENT_FREE, g["n_event_total"], g["surv"], g["se_surv"]))
        for lab, n_event, cif, se in columns:
            lower, upper = _interval(cif, se, z, conf_type)
            frames.append(
                pl.DataFrame(
                    {
                        "group": [label] * m,
                        "cause": [lab] * m,
                        "time": g["time"],
                        "n_risk": g["n_risk"],
                        "n_event": n_event,
                        "n_censor": g["n_censor"],
                        "cif": cif,
                        "se": se,
                        "lower": lower,
                        "upper": upper,
                    },
                    schema=_TABLE_SCHEMA,
                )
            )
    table = pl.concat(frames) if frames else pl.DataFrame(schema=_TABLE_SCHEMA)
    table = table.with_columns(pl.col("lower", "upper").fill_nan(None))
    return CIFResult(
        table=table,
        n=data.height,
        alpha=alpha,
        conf_type=conf_type,
        causes=tuple(cause_labels),
        n_dropped=n_dropped,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- Gray's test
def _gray_stratum(time: np.ndarray, mcode: np.ndarray, grp: np.ndarray, ng: int, rho: float):
    """Scores and their covariance for one stratum: cmprsk's ``crst`` (Fortran), vectorised.

    ``mcode`` is 0 = censored, 1 = the cause of interest, 2 = another cause;
    ``grp`` is 0..ng-1. Returns ``s`` (ng) and ``V`` (ng x ng); the test uses the
    first ng - 1 of each. Per distinct time and group: ``rs`` at risk,
    ``skm``/``skmm`` the all-cause KM (right/left continuous), ``f1``/``f1m`` the
    cause's cumulative incidence; the pooled ``f`` and the matrices ``a``, ``c``
    are those of Gray (1988), computed over event times with cumulative sums in
    place of the Fortran's running updates.
    """
    utime, inv = np.unique(time, return_inverse=True)
    m = len(utime)
    counts = np.bincount((mcode * m + inv) * ng + grp, minlength=3 * m * ng).reshape(3, m, ng).astype(float)
    d1, d2 = counts[1], counts[2]
    rs = np.cumsum(counts.sum(axis=0)[::-1], axis=0)[::-1]  # at risk just before each time
    nd1, nd2 = d1.sum(axis=1), d2.sum(axis=1)
    live = rs > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        skm = np.cumprod(np.where(live, (rs - d1 - d2) / rs, 1.0), axis=0)
        skmm = np.vstack([np.ones((1, ng)), skm[:-1]])
        f1 = np.cumsum(np.where(live, skmm * d1 / rs, 0.0), axis=0)
        f1m = np.vstack([np.zeros((1, ng)), f1[:-1]])
        hh = np.where(live, rs / skmm, 0.0)  # R_j / S_j(t-)
        tq = np.where(live, rs * (1 - f1m) / skmm, 0.0).sum(axis=1)
    tr = hh.sum(axis=1)

    ev = (nd1 + nd2) > 0
    f = np.cumsum(np.where(ev, nd1 / np.where(ev, tr, 1.0), 0.0))  # pooled cumulative incidence
    fm = np.r_[0.0, f[:-1]]
    # only event times contribute
    e = np.flatnonzero(ev)
    rs, d1, d2, nd1, nd2 = rs[e], d1[e], d2[e], nd1[e], nd2[e]
    skm, skmm, f1m, hh, tr, tq, f, fm, live = skm[e], skmm[e], f1m[e], hh[e], tr[e], tq[e], f[e], fm[e], live[e]
    fb = (1 - fm) ** rho

    eye = np.eye(ng)
    a = fb[:, None, None] * (hh[:, :, None] * eye - hh[:, :, None] * hh[:, None, :] / tr[:, None, None])
    c = np.cumsum(a * (nd1 / (tr * (1 - fm)))[:, None, None], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(live, fb[:, None] * (d1 - nd1[:, None] * rs * (1 - f1m) / (skmm * tq[:, None])), 0.0)
    s = score.sum(axis=0)

    with np.errstate(divide="ignore", invalid="ignore"):
        # events of the cause of interest
        t4 = np.where(skm > 0, 1 - (1 - f[:, None]) / np.where(skm > 0, skm, 1.0), 1.0)
        t5 = np.where(nd1[:, None] > 1, 1 - (nd1[:, None] - 1) / (tr[:, None] * skmm - 1), 1.0)
        t3 = np.where(live & (nd1[:, None] > 0), t5 * skmm * nd1[:, None] / (tr[:, None] * rs), 0.0)
        # events of other causes
        ok2 = (skm > 0) & (d2 > 0)
        u4 = np.where(ok2, (1 - f[:, None]) / np.where(ok2, skm, 1.0), 0.0)
        u5 = np.where(d2 > 1, 1 - (d2 - 1) / (rs - 1), 1.0)
        u3 = np.where(ok2, u5 * skmm**2 * d2 / rs**2, 0.0)
    v3 = (t4 * t4 * t3 + u4 * u4 * u3).sum(axis=0)
    M = a - t4[:, None, :] * c  # M[t, i, k] = a_ik - t4_k c_ik
    v2 = np.einsum("tik,tk->ik", M, t4 * t3) - np.einsum("tik,tk->ik", c, u4 * u4 * u3)
    V = np.einsum("tik,tjk,tk->ij", M, M, t3) + np.einsum("tik,tjk,tk->ij", c, c, u4 * u4 * u3)
    cf = c[-1] if len(e) else np.zeros((ng, ng))
    V = V + (cf * v3) @ cf.T + cf @ v2.T + v2 @ cf.T
    return s, V


def gray_test(
    frame: pl.DataFrame,
    time: str,
    status: str,
    group: str,
    cause: int,
    *,
    strata: str | None = None,
    rho: float = 0.0,
) -> GrayTest:
    """Gray's K-sample test of equal cumulative incidence of one cause across groups.

    As R's ``cmprsk::cuminc(ftime, fstatus, group, strata, rho)$Tests`` for that cause.

    Parameters
    ----------
    frame : polars.DataFrame
        One row per subject.
    time : str
        Time of the first event or of censoring (non-negative).
    status : str
        0 = censored, ``1..k`` = cause of the event (as :func:`cumulative_incidence`).
    group : str
        Column defining the groups (two or more).
    cause : int
        The status code whose cumulative incidence is compared; every other
        non-zero code is a competing event.
    strata : str, optional
        Stratification column: scores and their covariance are summed over
        strata, as ``cuminc(..., strata = )``.
    rho : float, default 0
        Power of the weight ``(1 - F(t-))^rho`` (cmprsk's ``rho``; 0 gives the
        log-rank-type test on the subdistribution hazards).

    Returns
    -------
    GrayTest
        ``(chi2, df, p_value)``: the statistic ``s' V^-1 s`` on the scores of the
        first ``K - 1`` groups, ``df = K - 1`` (groups with at least one row) and
        the chi-square upper tail (``scipy.stats.chi2.sf``, which keeps small
        p-values that R's ``1 - pchisq`` rounds to 0). NaN statistic and p-value
        when the covariance matrix is singular (cmprsk reports -1).

    Notes
    -----
    The arithmetic is cmprsk's ``crstm``/``crst`` Fortran, vectorised over the
    distinct times (a few arrays of size times x groups x groups). Rows with a
    missing time, status, group or stratum are dropped.
    """
    if isinstance(cause, bool) or not isinstance(cause, (int, np.integer)) or cause < 1:
        raise ValueError(f"cause must be an integer status code >= 1, not {cause!r}")
    if rho < 0 or not math.isfinite(rho):
        raise ValueError("rho must be a finite number >= 0")
    cols = [time, status, group] + ([strata] if strata is not None else [])
    data, _, _ = drop_missing(frame, cols)
    t = _times(data[time])
    s = _status_codes(data[status])
    if not (s == cause).any():
        raise ValueError(f"cause {cause} does not occur in {status!r}")
    g_codes, g_labels = level_codes(data[group])
    ng = len(g_labels)
    if ng < 2:
        raise ValueError(f"Gray's test needs at least two groups in {group!r}; found {g_labels}")
    mcode = np.where(s == 0, 0, np.where(s == cause, 1, 2))
    st = level_codes(data[strata])[0] if strata is not None else np.zeros(len(t), dtype=np.int64)
    score = np.zeros(ng)
    V = np.zeros((ng, ng))
    for k in np.unique(st):
        mask = st == k
        sk, vk = _gray_stratum(t[mask], mcode[mask], g_codes[mask], ng, rho)
        score += sk
        V += vk
    u, V = score[:-1], V[:-1, :-1]
    df = ng - 1
    sv = np.linalg.svd(V, compute_uv=False)
    if sv.size == 0 or sv[-1] <= 1e-7 * sv[0]:
        return GrayTest(math.nan, df, math.nan)
    chi2 = float(u @ np.linalg.solve(V, u))
    return GrayTest(chi2, df, float(stats.chi2.sf(chi2, df)))
