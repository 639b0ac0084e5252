"""Model diagnostics and sensitivity analyses for the time-to-event models.

* :func:`ph_test` checks the proportional-hazards assumption of a Cox model with
  the test R's ``cox.zph`` (survival >= 3.0) computes: a score test, at the fitted
  Cox coefficients, for adding the time-varying terms ``x * g(t)`` to the model,
  using the full (2p x 2p) information matrix. ``g`` is a transform of time
  ("km" by default). The score for the added terms is the sum over event times
  of ``g(t)`` times the Schoenfeld residuals.
* :func:`discrete_time_data` and :func:`discrete_time_cox` are the grouped
  (interval-censored) time sensitivity analysis for responses that are only seen
  at visits: one row per subject per assessment interval ``(previous visit,
  visit]``, and a complementary log-log binomial GLM on those rows.

Pure functions: polars frames in, frames or frozen results out. Checked against
R in ``tests/reference/test_diagnostics_vs_R.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from ketaoutcomes.models.common import drop_missing, event_indicator, numeric, safe_exp
from ketaoutcomes.models.cox import cox_ph, design_matrix, term_table
from ketaoutcomes.models.grouped_glm import fit_grouped_cloglog

__all__ = [
    "DiscreteTimeResult",
    "PH_NOTE",
    "discrete_time_cox",
    "discrete_time_data",
    "ph_test",
]

#: Note put on :func:`ph_test` rows with p < 0.05.
PH_NOTE = "PH doubtful (p < 0.05): the hazard ratio changes over time"

_TRANSFORMS = ("km", "rank", "identity", "log")


# =========================================================================== PH test
def _time_transform(time: np.ndarray, status: np.ndarray, transform: str) -> np.ndarray:
    """R's ``cox.zph`` time transforms, evaluated for every row."""
    if transform == "identity":
        return time.astype(float)
    if transform == "log":
        return np.log(time)
    if transform == "rank":
        return stats.rankdata(time, method="average")  # R's rank(): ties averaged
    # km: 1 - S(t-), the pooled Kaplan-Meier (strata ignored, as in R) just before t.
    utime, inverse = np.unique(time, return_inverse=True)
    n_at = np.bincount(inverse, minlength=len(utime))
    d = np.bincount(inverse, weights=status, minlength=len(utime))
    n_risk = np.cumsum(n_at[::-1])[::-1]
    surv = np.cumprod(1.0 - d / n_risk)
    surv_before = np.concatenate([[1.0], surv[:-1]])
    return 1.0 - surv_before[inverse]


#: Rows whose ``x x'`` products are formed at once by :func:`_block_cross` (memory: rows x p x p doubles).
_CROSS_CHUNK = 32_768


def _block_cross(a: np.ndarray, b: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``sum a_i b_i'`` over the rows of each block ``[starts[k], starts[k + 1])`` (the last one to the end),
    ``starts`` strictly increasing from 0: (blocks, p, q), forming the products of a chunk of rows at a time."""
    n = len(a)
    out = np.zeros((len(starts), a.shape[1], b.shape[1]))
    block = np.searchsorted(starts, np.arange(n), side="right") - 1
    for lo in range(0, n, _CROSS_CHUNK):
        blk = block[lo:lo + _CROSS_CHUNK]
        at = np.flatnonzero(np.r_[True, blk[1:] != blk[:-1]])
        prod = a[lo:lo + _CROSS_CHUNK, :, None] * b[lo:lo + _CROSS_CHUNK, None, :]
        out[blk[at]] += np.add.reduceat(prod, at, axis=0)
    return out


def _zph_score_info(
    time: np.ndarray,
    status: np.ndarray,
    X: np.ndarray,
    beta: np.ndarray,
    gtime: np.ndarray,
    strata: np.ndarray,
    efron: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Score of the added ``x * g(t)`` terms and the full information matrix.

    At each distinct event time of a stratum, with risk-set sums ``S0, S1, S2``
    (weights ``exp(x beta)``) and the same sums over the ``d`` deaths, Efron's
    approximation uses for the k-th death (k = 0..d-1) the weights reduced by
    ``k/d`` of the deaths' share: mean ``m_k`` and variance ``V_k``. Then, with
    ``g`` the transformed (centred) time of that event time,

    * Schoenfeld residual sum ``r = sum(x_deaths) - sum_k m_k``; score ``u = sum g r``;
    * information ``[[sum V, sum g V], [sum g V, sum g^2 V]]``, ``V = sum_k V_k``.

    Breslow is the same with k/d = 0. With ``a_k = 1 / (S0 - f_k D0)`` and ``b_k = f_k a_k``
    (``f_k = k/d``), ``m_k = S1 a_k - D1 b_k``, so the sums over the deaths of an event time need only
    the sums of ``a_k``, ``b_k``, ``a_k^2``, ``a_k b_k`` and ``b_k^2``: no array of a p x p matrix per
    death or per row. The ``S2`` and ``D2`` sums are taken per block of rows between event times
    (:func:`_block_cross`), then accumulated over the blocks: memory of the event times, not of the rows.
    """
    n, p = X.shape
    Xc = X - X.mean(axis=0)
    eta = Xc @ beta
    u = np.zeros(p)
    info = np.zeros((2 * p, 2 * p))
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        t, st, x = time[idx], status[idx], Xc[idx]
        if st.sum() == 0:
            continue
        order = np.argsort(t, kind="stable")
        t, st, x, g_rows = t[order], st[order], x[order], gtime[idx][order]
        r = np.exp(eta[idx][order] - eta[idx].max())
        rx = r[:, None] * x
        ev = st == 1
        etimes, e_inv = np.unique(t[ev], return_inverse=True)
        m = len(etimes)
        # risk-set sums at each event time: rows with time >= it, i.e. from its first row on; rows
        # before the first event time are in no risk set read here
        first = np.searchsorted(t, etimes, side="left")
        at = first - first[0]

        def tail(blocks: np.ndarray) -> np.ndarray:
            return np.cumsum(blocks[::-1], axis=0)[::-1]

        R0 = tail(np.add.reduceat(r[first[0]:], at))
        R1 = tail(np.add.reduceat(rx[first[0]:], at, axis=0))
        R2 = tail(_block_cross(rx[first[0]:], x[first[0]:], at))
        # the deaths' sums per event time (the event rows are in time order)
        e_at = np.flatnonzero(np.r_[True, e_inv[1:] != e_inv[:-1]])
        D0 = np.add.reduceat(r[ev], e_at)
        D1 = np.add.reduceat(rx[ev], e_at, axis=0)
        D2 = _block_cross(rx[ev], x[ev], e_at)
        Xd = np.add.reduceat(x[ev], e_at, axis=0)
        nd = np.diff(np.r_[e_at, len(e_inv)])
        g = g_rows[ev][e_at]  # the same for every death at one time
        # one entry per death: event-time index and Efron fraction k/d
        ti = np.repeat(np.arange(m), nd)
        k = np.arange(len(ti)) - np.repeat(e_at, nd)
        f = k / nd[ti] if efron else np.zeros(len(ti))
        a = 1.0 / (R0[ti] - f * D0[ti])
        b = f * a
        Sa, Sb, Saa, Sab, Sbb = (np.bincount(ti, weights=w, minlength=m) for w in (a, b, a * a, a * b, b * b))
        resid = Xd - (R1 * Sa[:, None] - D1 * Sb[:, None])
        outer = lambda v, w: v[:, :, None] * w[:, None, :]  # noqa: E731
        RD = outer(R1, D1)
        V = (R2 * Sa[:, None, None] - D2 * Sb[:, None, None] - outer(R1, R1) * Saa[:, None, None]
             + (RD + RD.transpose(0, 2, 1)) * Sab[:, None, None] - outer(D1, D1) * Sbb[:, None, None])
        u += g @ resid
        info[:p, :p] += V.sum(axis=0)
        gv = np.tensordot(g, V, axes=1)
        info[:p, p:] += gv
        info[p:, :p] += gv
        info[p:, p:] += np.tensordot(g**2, V, axes=1)
    return u, info


def ph_test(
    frame: pl.DataFrame,
    *,
    time: str,
    event: str,
    covariates: Sequence[str],
    categorical: Mapping[str, Any] | None = None,
    strata: str | None = None,
    transform: str = "km",
    ties: str = "efron",
) -> pl.DataFrame:
    """Test of proportional hazards per term and globally, as R's ``cox.zph``.

    Fits :func:`ketaoutcomes.models.cox.cox_ph` with the same arguments and
    tests, at its coefficients, whether ``x * g(t)`` terms would improve it
    (score test, full information matrix: R's survival >= 3.0 algorithm, not the
    older "scaled Schoenfeld residual" regression of survival 2.x).

    Parameters
    ----------
    frame, time, event, covariates, categorical, strata, ties
        As for :func:`~ketaoutcomes.models.cox.cox_ph` (no ``entry``:
        counting-process data are not supported here).
    transform : {"km", "rank", "identity", "log"}, default "km"
        ``g(t)``: ``1 - S(t-)`` of the pooled Kaplan-Meier curve (R's default),
        the rank of the times, the times, or their logarithm. It is centred at
        its mean over the event rows.

    Returns
    -------
    polars.DataFrame
        ``term``, ``chi2``, ``df``, ``p_value``, ``note``. One row per model term
        (a categorical covariate is one term with one degree of freedom per
        dummy, as R's ``terms = TRUE``) and a last row ``"GLOBAL"``. ``note`` is
        :data:`PH_NOTE` where ``p_value < 0.05``, else null.

    Raises
    ------
    ValueError
        For an unknown transform, or when a term could not be estimated by
        ``cox_ph`` (R would report a huge coefficient; no test is made then).

    Notes
    -----
    Rows with missing values in model columns are dropped, as in ``cox_ph``.
    Cost: O(n p^2) memory and time per stratum (vectorised).
    """
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {_TRANSFORMS}, not {transform!r}")
    if ties not in ("efron", "breslow"):
        raise ValueError("ties must be 'efron' or 'breslow'")
    categorical = dict(categorical or {})
    cols = [time, event, *covariates] + ([strata] if strata else [])
    data, _, _ = drop_missing(frame, cols)
    fit = cox_ph(data, time=time, event=event, covariates=covariates, categorical=categorical,
                 strata=strata, ties=ties, concordance=False)
    coef = fit.summary["coef"]
    if coef.null_count():
        bad = fit.summary.filter(pl.col("coef").is_null())["term"].to_list()
        raise ValueError(f"terms not estimable, no PH test: {bad} ({'; '.join(fit.notes)})")
    design, _ = design_matrix(data, covariates, categorical)
    names = fit.summary["term"].to_list()
    X = design.X[:, [design.names.index(t) for t in names]]
    beta = coef.to_numpy()
    t = numeric(data[time], "time")
    status = event_indicator(data[event])
    s = data[strata].to_numpy() if strata else np.zeros(len(t), dtype=int)
    tt = _time_transform(t, status, transform)
    gtime = tt - tt[status == 1].mean()
    u, info = _zph_score_info(t, status, X, beta, gtime, s, ties == "efron")

    p = len(names)
    # terms: a numeric covariate is one term; a categorical one groups its dummies
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        groups.setdefault(design.source.get(name) or name, []).append(j)
    rows = []
    for term, jj in [*groups.items(), ("GLOBAL", list(range(p)))]:
        kk = list(range(p)) + [p + j for j in jj]
        uu = np.concatenate([np.zeros(p), u[jj]])
        chi2 = float(uu @ np.linalg.solve(info[np.ix_(kk, kk)], uu))
        df = len(jj)
        rows.append((term, chi2, df, float(stats.chi2.sf(chi2, df))))
    out = pl.DataFrame(rows, schema={"term": pl.String, "chi2": pl.Float64, "df": pl.Int64, "p_value": pl.Float64},
                       orient="row")
    return out.with_columns(pl.when(pl.col("p_value") < 0.05).then(pl.lit(PH_NOTE)).alias("note"))


# =========================================================================== discrete time
def discrete_time_data(
    adtte: pl.DataFrame,
    visits: pl.DataFrame,
    *,
    id_col: str = "USUBJID",
    time: str = "AVAL",
    event: str = "event",
    visit_time: str = "ADY",
    band_width: float = 28.0,
    keep: Sequence[str] = (),
) -> pl.DataFrame:
    """Person-period rows on each subject's own assessment grid.

    Parameters
    ----------
    adtte : polars.DataFrame
        One row per subject: ``id_col``, ``time`` (day of the event visit, or of
        the last assessment when censored; ADaM AVAL), ``event`` (1/0; convert
        ADaM CNSR with :func:`~ketaoutcomes.derive.cnsr.cnsr_to_event`) and
        the ``keep`` columns (covariates), copied to every row.
    visits : polars.DataFrame
        Assessment days: ``id_col``, ``visit_time`` (days since the time origin,
        on the same scale as ``time``). Days <= 0 are ignored.
    band_width : float, default 28
        Width (days) of the time bands of the baseline hazard: an interval
        belongs to band ``floor(midpoint / band_width)``.
    keep : sequence of str
        Subject-level columns to carry along.

    Returns
    -------
    polars.DataFrame
        One row per subject per interval ``(start, stop]`` between consecutive
        assessments (the first starts at 0) up to ``time``: ``id_col``,
        ``start``, ``stop``, ``length``, ``event`` (1 only in the interval that
        ends at ``time`` of a subject with an event), ``band`` (int), then
        ``keep``. ``time`` is added to the subject's visits if it is not one of
        them. Subjects with ``time <= 0`` contribute no rows (nothing observed).
    """
    subj = adtte.select(id_col, pl.col(time).cast(pl.Float64).alias("_aval"),
                        pl.Series("_ev", event_indicator(adtte[event])), *keep)
    v = visits.select(id_col, pl.col(visit_time).cast(pl.Float64).alias("stop"))
    v = pl.concat([v, subj.select(id_col, pl.col("_aval").alias("stop"))])
    pp = (
        v.join(subj, on=id_col, how="inner")
        .filter((pl.col("stop") > 0) & (pl.col("stop") <= pl.col("_aval")))
        .unique([id_col, "stop"])
        .sort([id_col, "stop"])
        .with_columns(pl.col("stop").shift(1, fill_value=0.0).over(id_col).alias("start"))
        .with_columns(
            (pl.col("stop") - pl.col("start")).alias("length"),
            ((pl.col("_ev") == 1) & (pl.col("stop") == pl.col("_aval"))).cast(pl.Int64).alias("event"),
            ((pl.col("start") + pl.col("stop")) / 2 / band_width).floor().cast(pl.Int64).alias("band"),
        )
    )
    return pp.select(id_col, "start", "stop", "length", "event", "band", *keep)


@dataclass(frozen=True)
class DiscreteTimeResult:
    """A grouped-time (interval-censored) proportional hazards fit.

    Attributes
    ----------
    summary : polars.DataFrame
        One row per covariate term, as :class:`~ketaoutcomes.models.cox.CoxResult`:
        ``term``, ``coef``, ``hr``, ``se``, ``z``, ``p_value``, ``hr_lower``,
        ``hr_upper``, using the cluster-robust (by subject) standard error when
        ``id_col`` was given, plus ``se_model`` (inverse Fisher information, R's
        ``summary.glm``).
    bands : polars.DataFrame
        ``band``, ``coef`` (log baseline hazard rate per day in the band),
        ``se_model``, ``n_rows``, ``n_events``.
    n_rows, n_subjects, n_events : int
    alpha : float
    notes : tuple of str
    """

    summary: pl.DataFrame
    bands: pl.DataFrame
    n_rows: int
    n_subjects: int | None
    n_events: int
    alpha: float
    notes: tuple[str, ...]
    #: ``term``, ``variable``, ``level`` of every term (see :func:`ketaoutcomes.models.cox.term_table`).
    terms: pl.DataFrame = field(default_factory=pl.DataFrame)


def discrete_time_cox(
    person_period: pl.DataFrame,
    *,
    covariates: Sequence[str],
    categorical: Mapping[str, Any] | None = None,
    interval_col: str = "band",
    length_col: str | None = "length",
    event: str = "event",
    id_col: str | None = "USUBJID",
    alpha: float = 0.05,
    subjects: pl.DataFrame | None = None,
) -> DiscreteTimeResult:
    """Grouped-time proportional hazards model: cloglog binomial GLM on person-periods.

    Model, for the interval ``(a, b]`` of a subject alive at ``a``::

        cloglog P(event in (a, b]) = alpha_band + log(b - a) + x'beta

    This is exact under continuous-time PH when the baseline hazard is constant
    within each band (``alpha_band`` = its log rate per day) and the interval
    lies in one band: ``P = 1 - exp(-exp(x'beta) * lambda_band * (b - a))``. The
    offset ``log(length)`` is what lets subjects with different visit schedules
    (weekly vs two-weekly) share one baseline; without it (``length_col=None``,
    the classical model with one dummy per common interval) the band effects
    absorb the interval length, which is only right when every subject has the
    same grid. ``beta`` estimates the continuous-time log hazard ratio.
    Choose bands wider than the longest regular visit gap (e.g. 28 days for
    7/14-day schedules) so that an interval rarely straddles many bands.

    Parameters
    ----------
    person_period : polars.DataFrame
        From :func:`discrete_time_data` (or built the same way).
    covariates, categorical
        As for :func:`~ketaoutcomes.models.cox.cox_ph`.
    interval_col : str, default "band"
        Time-band column: one fixed effect per value (no intercept).
    length_col : str or None, default "length"
        Interval length; ``log`` of it is the offset. None: no offset.
    event : str
        1 in the interval with the event, else 0.
    id_col : str or None
        Subject column for cluster-robust standard errors (R's
        ``sandwich::vcovCL``, type HC1, on the glm). None: model SEs.
    subjects : polars.DataFrame, optional
        The covariates per subject (``id_col`` and ``covariates``, one row per
        subject), when they are not columns of ``person_period`` (which then
        needs only ``id_col``, ``interval_col``, ``length_col`` and ``event``):
        the rows carry no copy of them. Needs ``id_col``.
    alpha : float
        Wald intervals at ``1 - alpha``.

    Notes
    -----
    Bands without events have an infinite negative maximum-likelihood estimate;
    their rows are dropped (with a note): they carry no information on ``beta``
    in the limit. Rows with missing values in model columns are dropped.

    The fit is on the aggregated design (:mod:`ketaoutcomes.models.grouped_glm`):
    rows collapsed to cells of covariate pattern (and subject, with ``id_col``) x
    band x interval length, counts of intervals and events per cell; the same
    estimates, information and clustered scores as the row-level GLM, in memory
    that grows with the subjects, not with their intervals.
    """
    categorical = dict(categorical or {})
    length = [length_col] if length_col else []
    if subjects is None:
        cols = [event, interval_col, *covariates, *length] + ([id_col] if id_col else [])
        data, _, notes = drop_missing(person_period, cols)
    else:
        if id_col is None:
            raise ValueError("subjects needs id_col: the column that names a person-period row's subject")
        subj, _, notes = drop_missing(subjects.select(id_col, *[c for c in covariates if c != id_col]), covariates)
        notes = [n.replace(" row", " subject", 1) for n in notes]
        data, _, more = drop_missing(person_period.select(id_col, interval_col, *length, event),
                                     [id_col, interval_col, *length, event])
        if subj[id_col].is_duplicated().any():
            raise ValueError(f"subjects has more than one row for a value of {id_col!r}: give one row per subject")
        data = data.join(subj.select(id_col), on=id_col, how="semi")
        notes += more
    y = event_indicator(data[event]).astype(float)
    band_ev = data.group_by(interval_col).agg(pl.len().alias("n_rows"), pl.col(event).sum().alias("n_events"))
    empty = band_ev.filter(pl.col("n_events") == 0)[interval_col].to_list()
    if empty:
        data = data.filter(~pl.col(interval_col).is_in(empty))
        y = event_indicator(data[event]).astype(float)
        notes.append(f"bands without events dropped (rows carry no information): {sorted(empty)}")
    # the aggregated design (models.grouped_glm): covariate patterns (per subject when clustering),
    # and cells of pattern x band x interval length with their intervals and events
    if subjects is None:
        key = list(dict.fromkeys([*([id_col] if id_col else []), *covariates]))
        patterns = data.select(key).unique(maintain_order=True).with_row_index("_pattern")
    else:  # one pattern per subject with rows
        key = [id_col]
        patterns = subj.join(data.select(id_col).unique(), on=id_col, how="semi").with_row_index("_pattern")
    design, dnotes = design_matrix(patterns, covariates, categorical)
    notes += dnotes
    levels = data[interval_col].unique().sort().to_list()
    cells = (data.select(*key, interval_col, *length, pl.col(event).cast(pl.Float64).alias("_y"))
             .join(patterns.select(*key, "_pattern"), on=key, how="left", nulls_equal=True)
             .group_by("_pattern", interval_col, *length).agg(pl.len().alias("_m"), pl.col("_y").sum().alias("_s"))
             .sort("_pattern", interval_col, *length))
    band_codes = np.searchsorted(np.asarray(levels), cells[interval_col].to_numpy())
    offset = np.log(numeric(cells[length_col], "length")) if length_col else np.zeros(cells.height)
    cluster = np.unique(patterns[id_col].to_numpy(), return_inverse=True)[1].ravel() if id_col else None
    fit = fit_grouped_cloglog(cells["_pattern"].to_numpy().astype(np.int64), band_codes, offset,
                              cells["_m"].to_numpy().astype(float), cells["_s"].to_numpy(), design.X,
                              n_bands=len(levels), cluster=cluster, n_rows=data.height)
    se_model = np.sqrt(np.diag(fit.cov))
    se = se_model if fit.se_cluster is None else fit.se_cluster
    n_subj = None if cluster is None else int(cluster.max()) + 1
    params = fit.params
    nb = len(levels)
    zq = stats.norm.ppf(1 - alpha / 2)
    rows = []
    for j, term in enumerate(design.names):
        b, s = float(params[nb + j]), float(se[nb + j])
        z = b / s
        rows.append((term, b, safe_exp(b), s, z, float(2 * stats.norm.sf(abs(z))),
                     safe_exp(b - zq * s), safe_exp(b + zq * s), float(se_model[nb + j])))
    summary = pl.DataFrame(
        rows,
        schema=["term", "coef", "hr", "se", "z", "p_value", "hr_lower", "hr_upper", "se_model"],
        orient="row",
    )
    bands = pl.DataFrame({interval_col: levels, "coef": params[:nb], "se_model": se_model[:nb]}).join(
        band_ev, on=interval_col, how="left"
    ).rename({interval_col: "band"})
    if not math.isfinite(fit.llf):
        notes.append("log-likelihood not finite: fit failed")
    return DiscreteTimeResult(
        summary=summary,
        bands=bands,
        n_rows=data.height,
        n_subjects=n_subj,
        n_events=int(y.sum()),
        alpha=alpha,
        notes=tuple(notes),
        terms=term_table(design.names, design.parts),
    )
