"""Mood trajectories per arm: a linear mixed model with a random intercept and slope.

Pure functions: :func:`trajectory_data` builds the long data set (one row per
rating) from ADSL and the mood scores (:func:`trajectory_patients` lists the
patients it has rows for, so that a sample can be drawn before it is built),
:func:`fit_trajectories` fits the model
and returns a frozen :class:`TrajectoryResult`. The estimation is done by statsmodels
(:class:`statsmodels.regression.mixed_linear_model.MixedLM`, REML), started at the REML maximum
that :mod:`ketaoutcomes.models.reml` finds from per-patient sums (statsmodels' optimizer loops over
the patients: from its own start it took a dozen iterations, 50 s on the 18,000 patients of the
sample at a million; from this one it checks the maximum and stops, 14 s; and it lands closer to
lmer's estimates, tests/unit/test_trajectory.py); the terms
are named and reported as R's ``lme4::lmer`` reports them, because lmer is the
oracle of ``tests/reference/trajectory_reference.R``.

Model and conventions (each is also commented where it is applied):

* **Model.** ``score ~ arm * f(day) + (1 + f(day) | patient)``: per arm an
  intercept (mean score at the first dose) and a slope in ``f(day)``; per
  patient a random intercept and a random slope on ``f(day)`` with an
  unstructured 2x2 covariance; independent normal residuals. Fitted by REML.
* **Time scale.** ``f(day) = log1p(day)`` by default. Ketamine acts within hours
  to days and SSRIs over weeks, so mean mood falls steeply at first and then
  flattens: a straight line in days fits neither arm (it over-predicts the early
  ketamine scores and under-predicts the late ones). ``log1p`` is 0 at the first
  dose (so the intercept is the day-0 mean), is steep over the first days and
  nearly flat by weeks 4-8, and keeps the model linear in its parameters.
  ``time_terms="linear"`` uses ``f(day) = day`` (a slope per day) for comparison.
* **Time origin.** ``day`` is the elapsed time since the first dose (TRTSDTM) in
  days as a float (hours matter for ketamine), not ADaM's calendar-day AVAL. The
  baseline rating, taken before the first dose, is put at day 0.
* **Missing ratings** are ignored: the likelihood uses the ratings that exist.
  That is valid when missingness is at random (MAR) given the observed ratings
  and arm; dropout that depends on unobserved mood (patients who stop coming
  because they got worse) biases the trajectories. The result's notes say so.
* **Non-convergence** never raises: the optimizers in :data:`OPTIMIZERS` are
  tried in turn; if none converges (or the fit fails outright, for example on a
  singular design) the result has ``converged = False``, nulls where no estimate
  exists, and the reason in ``notes``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl
from scipy import stats

__all__ = [
    "DEFAULT_GRID",
    "OPTIMIZERS",
    "TIME_TERMS",
    "TrajectoryResult",
    "fit_trajectories",
    "trajectory_data",
    "trajectory_patients",
]

#: Days at which :func:`fit_trajectories` reports the model-based mean per arm.
DEFAULT_GRID: tuple[float, ...] = (0, 1, 2, 3, 7, 14, 21, 28, 42, 56)

#: Time transforms ``f(day)``: name -> (term label, function).
TIME_TERMS = {"log1p": "log1p(day)", "linear": "day"}

#: scipy optimizers tried in turn until one converges.
OPTIMIZERS: tuple[str, ...] = ("lbfgs", "bfgs", "powell", "nm")

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

_DATA_SCHEMA = {
    "USUBJID": pl.String,
    "ARM": pl.String,
    "day": pl.Float64,
    "week": pl.Float64,
    "score": pl.Float64,
    "BASE": pl.Float64,
    "baseline": pl.Boolean,
}
_FIXED_SCHEMA = {
    "term": pl.String,
    "coef": pl.Float64,
    "se": pl.Float64,
    "z": pl.Float64,
    "p_value": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
}
_PRED_SCHEMA = {"arm": pl.String, "day": pl.Float64, "mean": pl.Float64, "lower": pl.Float64, "upper": pl.Float64}
_RE_SCHEMA = {"component": pl.String, "estimate": pl.Float64}

_MAR_NOTE = (
    "missing ratings are ignored (likelihood of the observed ratings): valid if missingness is at random "
    "given the observed ratings and arm (MAR); dropout that depends on unobserved mood biases the trajectories"
)


# --------------------------------------------------------------------------- data
def trajectory_data(
    adsl: pl.DataFrame,
    scores: pl.DataFrame,
    *,
    instrument: str,
    horizon_days: int = 56,
    baseline_window_days: int = 14,
    patients: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Long data set for :func:`fit_trajectories`: one row per rating.

    Parameters
    ----------
    adsl : polars.DataFrame
        ADSL (needs USUBJID, ARM, TRTSDTM, FUENDTM, ANLFL; BASE is carried if present).
    scores : polars.DataFrame
        Mood scores (contract ``mood_scores``: patient_id, assessed_at, instrument, total_score).
    instrument : str
        The rating scale to use.
    horizon_days : int
        Ratings up to this many days (inclusive, elapsed time) after the first dose.
    baseline_window_days : int
        The baseline rating is the *last* rating of ``instrument`` in
        [first dose - window, first dose], as ADSL's BASE (StudySettings'
        default window, 14 days).
    patients : polars.DataFrame, optional
        A ``USUBJID`` column: only these patients' rows are built (the rows of a
        patient depend on that patient's ADSL row and ratings alone, so this equals
        the full data set filtered to them, without building the rest: the
        analysis's sample at a million patients).

    Returns
    -------
    polars.DataFrame
        Analysed courses only (ANLFL == 'Y'). Columns ``USUBJID``, ``ARM``,
        ``day`` (float days since the first dose; the baseline rating is day 0),
        ``week`` (``day / 7``), ``score``, ``BASE`` (ADSL's baseline of the study
        instrument, a covariate) and ``baseline`` (True for the baseline row).
        Post-baseline ratings are those after the first dose, at most
        ``horizon_days`` after it, and before FUENDTM when FUENDTM is set (the
        same half-open follow-up rule as ADSL's NPOST). Sorted by USUBJID, day.
    """
    if patients is not None:
        ids = patients.select("USUBJID").unique()
        adsl = adsl.join(ids, on="USUBJID", how="semi")
        scores = scores.join(ids, left_on="patient_id", right_on="USUBJID", how="semi")
    out = _rating_rows(adsl, scores, instrument=instrument, horizon_days=horizon_days,
                       baseline_window_days=baseline_window_days)
    out = out.with_columns((pl.col("day") / 7.0).alias("week")).sort("USUBJID", "day")
    return out.select(list(_DATA_SCHEMA)).cast(_DATA_SCHEMA)  # type: ignore[arg-type]


def trajectory_patients(
    adsl: pl.DataFrame,
    scores: pl.DataFrame,
    *,
    instrument: str,
    horizon_days: int = 56,
    baseline_window_days: int = 14,
) -> pl.DataFrame:
    """The ``ARM`` and ``USUBJID`` pairs that :func:`trajectory_data` has rows for, sorted, without
    building those rows: the same rules (:func:`_rating_rows`) run lazily and only the pairs are
    kept, so a sample of them can be drawn before the data set is built."""
    rows = _rating_rows(adsl.lazy(), scores.lazy(), instrument=instrument, horizon_days=horizon_days,
                        baseline_window_days=baseline_window_days)
    return rows.select("ARM", "USUBJID").unique().collect().sort("ARM", "USUBJID")


def _rating_rows(
    adsl: FrameT, scores: FrameT, *, instrument: str, horizon_days: int, baseline_window_days: int,
) -> FrameT:
    """:func:`trajectory_data`'s rows (USUBJID, ARM, day, score, BASE, baseline; not sorted), from
    eager frames or, for :func:`trajectory_patients`, lazy ones (the same code either way)."""
    pop = adsl.filter(pl.col("ANLFL") == "Y").select(
        "USUBJID",
        "ARM",
        "TRTSDTM",
        "FUENDTM",
        (pl.col("BASE") if "BASE" in adsl.collect_schema().names() else pl.lit(None)).cast(pl.Float64).alias("BASE"),
    )
    ratings = (
        scores.filter(pl.col("instrument") == instrument)
        .select(pl.col("patient_id").alias("USUBJID"), "assessed_at", pl.col("total_score").cast(pl.Float64).alias("score"))
        .join(pop, on="USUBJID", how="inner")
    )
    at = pl.col("assessed_at")
    start = pl.col("TRTSDTM")
    # Baseline: the last rating in [first dose - window, first dose]; it is put at day 0.
    base = (
        ratings.filter((at <= start) & (at >= start - pl.duration(days=baseline_window_days)))
        .sort("USUBJID", "assessed_at")
        .group_by("USUBJID", maintain_order=True)
        .last()
        .with_columns(pl.lit(0.0).alias("day"), pl.lit(True).alias("baseline"))
    )
    # Post-baseline: after the first dose, within the horizon (elapsed days, float)
    # and strictly before the end of follow-up when it is set.
    elapsed = (at - start).dt.total_microseconds().cast(pl.Float64) / 86_400e6
    post = ratings.with_columns(elapsed.alias("day"), pl.lit(False).alias("baseline")).filter(
        (at > start)
        & (pl.col("day") <= float(horizon_days))
        & (pl.col("FUENDTM").is_null() | (at < pl.col("FUENDTM")))
    )
    cols = ["USUBJID", "ARM", "day", "score", "BASE", "baseline"]
    return pl.concat([base.select(cols), post.select(cols)]).filter(pl.col("score").is_not_null())


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class TrajectoryResult:
    """A fitted mood-trajectory mixed model.

    Attributes
    ----------
    fixed : polars.DataFrame
        ``term``, ``coef``, ``se``, ``z``, ``p_value``, ``lower``, ``upper``
        (Wald, ``1 - alpha``; covariance ``(X' V^-1 X)^-1`` at the REML variance
        components, as lmer). Terms as lmer names them with treatment contrasts:
        ``(Intercept)`` (reference arm at day 0), ``ARM[<arm>]`` (difference at
        day 0), ``<time>`` (reference-arm slope in f(day)) and ``ARM[<arm>]:<time>``
        (slope difference), where ``<time>`` is ``log1p(day)`` or ``day``.
    predicted : polars.DataFrame
        ``arm``, ``day``, ``mean``, ``lower``, ``upper``: the model-based
        (population, random effects at 0) mean per arm on ``grid`` days up to
        the last observed day, with Wald intervals from the covariance of the
        fixed effects.
    random_effects_cov : polars.DataFrame
        ``component``, ``estimate``: ``var_intercept``, ``var_slope``,
        ``cov_intercept_slope``, ``corr_intercept_slope``, ``var_residual``.
    n_patients, n_ratings : int
        Patients and ratings analysed (after dropping rows with missing values).
    converged : bool
        Whether an optimizer converged to finite estimates with finite standard errors.
    notes : tuple of str
        The MAR assumption, dropped rows, optimizer fall-backs, warnings.
    reference_arm, time_terms, alpha, optimizer
        The options used (``optimizer`` is None if no fit succeeded).
    """

    fixed: pl.DataFrame
    predicted: pl.DataFrame
    random_effects_cov: pl.DataFrame
    n_patients: int
    n_ratings: int
    converged: bool
    notes: tuple[str, ...]
    reference_arm: str = "ssri"
    time_terms: str = "log1p"
    alpha: float = 0.05
    optimizer: str | None = None


def _time(day: np.ndarray, time_terms: str) -> np.ndarray:
    # log1p: 0 at the first dose, steep over the first days, flat by weeks 4-8.
    return np.log1p(day) if time_terms == "log1p" else np.asarray(day, dtype=float)


def _design(arms: np.ndarray, t: np.ndarray, levels: Sequence[str]) -> np.ndarray:
    """Treatment-contrast design: 1, arm dummies, t, arm dummies * t (lmer's column order)."""
    dummies = [(arms == a).astype(float) for a in levels[1:]]
    return np.column_stack([np.ones_like(t), *dummies, t, *[d * t for d in dummies]])


def _fixed_cov(X: np.ndarray, Z: np.ndarray, groups: np.ndarray, G: np.ndarray, sigma2: float) -> np.ndarray | None:
    """(X' V^-1 X)^-1 with V block diagonal over patients; None if singular or not finite."""
    info = np.zeros((X.shape[1], X.shape[1]))
    # rows are sorted by patient: split into contiguous blocks
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    try:
        for a, b in zip(starts, np.r_[starts[1:], len(groups)], strict=True):
            Zi, Xi = Z[a:b], X[a:b]
            Vi = Zi @ G @ Zi.T + sigma2 * np.eye(b - a)
            info += Xi.T @ np.linalg.solve(Vi, Xi)
        out = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return None
    return out if np.all(np.isfinite(out)) else None


def _start(y: np.ndarray, X: np.ndarray, Z: np.ndarray, groups: np.ndarray, notes: list[str]) -> object | None:
    """statsmodels' start: the REML maximum found from per-patient sums (:mod:`ketaoutcomes.models.reml`,
    the same likelihood in a few array operations a step), so that its optimizer, which loops over the
    patients, checks it and stops in an iteration or two instead of a dozen. None (statsmodels' own
    start) when no finite positive definite maximum is found there, or when finding it fails (said in
    ``notes``: the fit itself never raises)."""
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    from ketaoutcomes.models.reml import GroupSums, reml_optimum

    try:
        found = reml_optimum(GroupSums.of(y, X, Z, groups))
        return None if found is None else MixedLMParams.from_components(fe_params=found.beta, cov_re=found.psi)
    except Exception as exc:  # noqa: BLE001 - statsmodels' own start is the fallback, as before this start existed
        notes.append(f"start values from the per-patient sums failed ({type(exc).__name__}: {exc}); "
                     "statsmodels' own start used")
        return None


@functools.cache
def _mixedlm() -> type:
    """statsmodels' MixedLM, remembering the GLS fixed effects of the last variance components asked.

    The optimizer asks for the profile log-likelihood and for its score at the same point, and each
    computes the GLS fixed effects at those variance components anew: a pass over every patient
    (about a quarter of an iteration's work). The second is the same computation on the same numbers,
    so it is answered from the first: the fit is the same to the last bit."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    class _MixedLM(MixedLM):
        _fe_last: tuple | None = None

        def get_fe_params(self, cov_re, vcomp, tol=1e-10):  # type: ignore[no-untyped-def]
            key = (np.asarray(cov_re, dtype=float).tobytes(), np.asarray(vcomp, dtype=float).tobytes(), tol)
            if self._fe_last is None or self._fe_last[0] != key:
                self._fe_last = (key, super().get_fe_params(cov_re, vcomp, tol))
            fe_params, singular = self._fe_last[1]
            return fe_params.copy(), singular

    return _MixedLM


def _empty_result(
    terms: list[str], levels: Sequence[str], grid: Sequence[float], n_patients: int, n_ratings: int,
    notes: list[str], reference_arm: str, time_terms: str, alpha: float,
) -> TrajectoryResult:
    fixed = pl.DataFrame({"term": terms}).with_columns(
        [pl.lit(None, dtype=pl.Float64).alias(c) for c in list(_FIXED_SCHEMA)[1:]]
    )
    pred = pl.DataFrame(
        {"arm": [a for a in levels for _ in grid], "day": [float(d) for _ in levels for d in grid]},
        schema={"arm": pl.String, "day": pl.Float64},
    ).with_columns([pl.lit(None, dtype=pl.Float64).alias(c) for c in ("mean", "lower", "upper")])
    recov = pl.DataFrame(
        {"component": ["var_intercept", "var_slope", "cov_intercept_slope", "corr_intercept_slope", "var_residual"]},
    ).with_columns(pl.lit(None, dtype=pl.Float64).alias("estimate"))
    return TrajectoryResult(
        fixed=fixed.cast(_FIXED_SCHEMA),  # type: ignore[arg-type]
        predicted=pred.cast(_PRED_SCHEMA),  # type: ignore[arg-type]
        random_effects_cov=recov.cast(_RE_SCHEMA),  # type: ignore[arg-type]
        n_patients=n_patients,
        n_ratings=n_ratings,
        converged=False,
        notes=tuple(notes),
        reference_arm=reference_arm,
        time_terms=time_terms,
        alpha=alpha,
    )


def fit_trajectories(
    data: pl.DataFrame,
    *,
    reference_arm: str = "ssri",
    time_terms: str = "log1p",
    alpha: float = 0.05,
    grid: Sequence[float] = DEFAULT_GRID,
    optimizers: Sequence[str] = OPTIMIZERS,
) -> TrajectoryResult:
    """Fit ``score ~ ARM * f(day) + (1 + f(day) | USUBJID)`` by REML.

    Parameters
    ----------
    data : polars.DataFrame
        Output of :func:`trajectory_data` (needs USUBJID, ARM, day, score).
        Rows with a missing value in those columns are dropped and counted in notes.
    reference_arm : str
        The arm of the intercept and main slope (treatment contrasts).
    time_terms : {"log1p", "linear"}
        ``f(day)``: ``log1p(day)`` (default, see the module docstring) or ``day``.
    alpha : float
        Intervals have coverage ``1 - alpha``.
    grid : sequence of float
        Days at which ``predicted`` is reported (those up to the last observed day).
    optimizers : sequence of str
        scipy optimizers tried in turn until one converges.

    Raises
    ------
    ValueError
        For an unknown ``time_terms``, an ``alpha`` outside (0, 1), or a
        ``reference_arm`` absent from the data. A fit that fails or does not
        converge does not raise; see ``converged`` and ``notes``.
    """
    if time_terms not in TIME_TERMS:
        raise ValueError(f"time_terms must be one of {sorted(TIME_TERMS)}, got {time_terms!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    notes: list[str] = [_MAR_NOTE]
    cols = ["USUBJID", "ARM", "day", "score"]
    d = data.select(cols).with_columns(pl.col("day", "score").cast(pl.Float64))
    n_in = d.height
    d = d.drop_nulls().filter(pl.col("day").is_not_nan() & pl.col("score").is_not_nan())
    if d.height < n_in:
        notes.append(f"{n_in - d.height} rating(s) with a missing USUBJID, ARM, day or score dropped")
    d = d.sort("USUBJID", "day")
    levels_present = sorted(d.get_column("ARM").unique().to_list())
    if d.height and reference_arm not in levels_present:
        raise ValueError(f"reference_arm {reference_arm!r} not among the arms in the data: {levels_present}")
    levels = [reference_arm] + [a for a in levels_present if a != reference_arm]
    tlabel = TIME_TERMS[time_terms]
    terms = (
        ["(Intercept)"] + [f"ARM[{a}]" for a in levels[1:]] + [tlabel] + [f"ARM[{a}]:{tlabel}" for a in levels[1:]]
    )
    n_patients = d.get_column("USUBJID").n_unique()
    n_ratings = d.height
    max_day = float(d.get_column("day").max()) if d.height else 0.0  # type: ignore[arg-type]
    grid_used = [float(g) for g in grid if g <= max_day + 1e-9]
    args = (terms, levels, grid_used, n_patients, n_ratings)

    if n_patients < 2 or n_ratings <= len(terms) + 4:
        notes.append(f"too little data to fit the model ({n_patients} patient(s), {n_ratings} rating(s))")
        return _empty_result(*args, notes, reference_arm, time_terms, alpha)

    t = _time(d.get_column("day").to_numpy(), time_terms)
    arms = d.get_column("ARM").to_numpy()
    X = _design(arms, t, levels)
    Z = np.column_stack([np.ones_like(t), t])
    y = d.get_column("score").to_numpy()
    groups = d.get_column("USUBJID").to_numpy()

    if np.linalg.matrix_rank(X) < X.shape[1]:
        notes.append("the fixed-effects design is rank deficient (e.g. no ratings after day 0 in an arm); not fitted")
        return _empty_result(*args, notes, reference_arm, time_terms, alpha)

    start = _start(y, X, Z, groups, notes)
    fit = None
    used: str | None = None
    for i, method in enumerate(optimizers):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = _mixedlm()(y, X, groups=groups, exog_re=Z)
                res = model.fit(reml=True, method=method, start_params=start)
            except Exception as exc:  # noqa: BLE001 - any failure is reported, never raised
                notes.append(f"optimizer {method} failed: {type(exc).__name__}: {exc}")
                continue
            fe_ok = bool(np.all(np.isfinite(res.fe_params)))
            with np.errstate(invalid="ignore"):
                try:
                    bse = np.asarray(res.bse_fe, dtype=float)
                except Exception:  # noqa: BLE001 - a singular covariance is a failed fit
                    bse = np.full(X.shape[1], np.nan)
        msgs = sorted({str(w.message).splitlines()[0] for w in caught if w.category is not RuntimeWarning})
        se_ok = bool(np.all(np.isfinite(bse)) and np.all(bse > 0))
        ok = bool(res.converged) and fe_ok and se_ok
        if ok:
            fit, used = res, method
            if i > 0:
                notes.append(f"fitted with optimizer {method} after {', '.join(optimizers[:i])} did not converge")
            notes.extend(f"statsmodels ({method}): {m}" for m in msgs)
            break
        notes.append(
            f"optimizer {method} did not converge"
            + (f" ({'; '.join(msgs)})" if msgs else "")
            + ("" if se_ok else "; standard errors not finite")
        )
        if fe_ok and fit is None:
            fit, used = res, None  # keep the last finite attempt as a non-converged fit
    if fit is None:
        notes.append("no optimizer produced a fit; estimates are null")
        return _empty_result(*args, notes, reference_arm, time_terms, alpha)
    converged = used is not None
    if not converged:
        notes.append("no optimizer converged: the estimates reported are from a non-converged fit, do not use them")

    k = X.shape[1]
    beta = np.asarray(fit.fe_params, dtype=float)
    cov_re = np.asarray(fit.cov_re, dtype=float)
    # Covariance of the fixed effects as lmer reports it: (X' V^-1 X)^-1 at the REML
    # estimates of the variance components (V_i = Z_i G Z_i' + sigma^2 I). statsmodels'
    # cov_params() inverts the observed information of all parameters instead, whose
    # fixed/variance cross terms make its SEs differ slightly from lmer's.
    V = _fixed_cov(X, Z, groups, cov_re, float(fit.scale))
    if V is None:
        V = np.asarray(fit.cov_params(), dtype=float)[:k, :k]
        notes.append("fixed-effects covariance from statsmodels' observed information ((X'V^-1X) was singular)")
    se = np.sqrt(np.where(np.diag(V) >= 0, np.diag(V), np.nan))
    crit = float(stats.norm.ppf(1 - alpha / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = beta / se
    p = 2 * stats.norm.sf(np.abs(z))
    fixed = pl.DataFrame(
        {"term": terms, "coef": beta, "se": se, "z": z, "p_value": p, "lower": beta - crit * se, "upper": beta + crit * se},
        schema=_FIXED_SCHEMA,
    ).with_columns(pl.col(c).fill_nan(None) for c in list(_FIXED_SCHEMA)[1:])

    # Population mean per arm on the grid: x'beta with Wald CI from V (random effects at 0).
    rows = []
    for a in levels:
        g = np.asarray(grid_used, dtype=float)
        x = _design(np.full(g.shape, a, dtype=object), _time(g, time_terms), levels)
        m = x @ beta
        q = np.einsum("ij,jk,ik->i", x, V, x)
        s = np.sqrt(np.where(q >= 0, q, np.nan))
        rows.extend(zip([a] * len(g), g, m, m - crit * s, m + crit * s, strict=True))
    predicted = pl.DataFrame(rows, schema=_PRED_SCHEMA, orient="row").with_columns(
        pl.col(c).fill_nan(None) for c in ("mean", "lower", "upper")
    )

    denom = math.sqrt(cov_re[0, 0] * cov_re[1, 1]) if cov_re[0, 0] > 0 and cov_re[1, 1] > 0 else float("nan")
    corr = cov_re[0, 1] / denom if denom == denom else float("nan")
    recov = pl.DataFrame(
        {
            "component": ["var_intercept", "var_slope", "cov_intercept_slope", "corr_intercept_slope", "var_residual"],
            "estimate": [cov_re[0, 0], cov_re[1, 1], cov_re[0, 1], corr, float(fit.scale)],
        },
        schema=_RE_SCHEMA,
    ).with_columns(pl.col("estimate").fill_nan(None))
    if cov_re[1, 1] <= 1e-8 * max(float(fit.scale), 1e-12) or cov_re[0, 0] <= 1e-8 * max(float(fit.scale), 1e-12):
        notes.append("a random-effect variance is at the boundary (~0): a singular fit, as lmer would say")
    return TrajectoryResult(
        fixed=fixed,
        predicted=predicted,
        random_effects_cov=recov,
        n_patients=n_patients,
        n_ratings=n_ratings,
        converged=converged,
        notes=tuple(notes),
        reference_arm=reference_arm,
        time_terms=time_terms,
        alpha=alpha,
        optimizer=used,
    )
