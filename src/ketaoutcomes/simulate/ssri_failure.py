"""A seeded cohort of patients whose SSRI has failed, for target-trial emulation, with the true
risks under each treatment strategy.

The cohort is person-level (one row a patient, no import-format tables): it is the input of
:mod:`ketaoutcomes.models.ccw` and of ``scripts/ccw_simulation_study.py``. Pure numpy on seeded
generators; nothing here reads a clock or global randomness.

Design
------
Time zero is the date the SSRI course ends in non-response (day 0). Days are whole; interval ``k``
is ``(k - 1, k]`` and an event "at day k" happens in it.

* **Baseline covariates** (measured): age (years), male (0/1), severity (the mood score at
  failure, MADRS points), prior depressive episodes (count). One more, ``u_unmeasured`` (standard
  normal), is written to the frame but an analysis must not use it: it is the residual confounder
  (its effects are 0 unless the parameters give it some).
* **Natural ketamine start.** A daily hazard, logistic in the day and the covariates::

      logit P(start on day d | not started) = a0 + a_day d + a_sev z_sev + a_prior (prior - c)
                                              + a_age (age - c) / 10 + a_male male + a_u u

  with ``z_sev = (severity - centre) / sd``. Sicker patients start sooner (``a_sev > 0``). The
  latent start day ``S`` is drawn once per patient (a uniform per patient, inverted through the
  cumulative no-start probability), whether or not it falls in follow-up. Patients who do not
  start stay on or switch within SSRIs (``ssri_switch``, descriptive only: it has no effect).
* **Time to response** (the outcome). A cumulative hazard crossed by a unit exponential ``E`` drawn
  once per patient (so every strategy sees the same ``E``: common random numbers). The hazard at
  time ``t`` is ``m(x) h(t)``, ``m(x) = exp(g_sev z_sev + g_prior (prior - c) + g_age (age - c)/10
  + g_u u)`` (a sicker patient responds more slowly: ``g_sev < 0``) and

      h(t) = (k / lambda) (t / lambda)^(k - 1)        before a ketamine start (SSRI: rising, k > 1)
      h(t) = a exp(-(t - s) / tau) + b                 from a start at day s (ketamine: early, waning)

  so the hazards of the two strategies cross: ketamine's is high in the first days after a start
  and falls to ``b``; the SSRI's rises over weeks. The per-day increments are integrated exactly.
* **Negative-control outcomes** (``negative_controls``, named ``nc1``, ``nc2``, ... unless named
  otherwise; six by default): constant hazards that share the measured confounders (and ``u``) but
  do not depend on ketamine, so their true risk difference is 0. Each control's day is drawn from a
  stream of its own (named after the control), so adding a control changes no other draw. A control
  is followed to the end of follow-up whatever the response (it is an outcome of its own): its
  event is seen when its day is at or before the end of follow-up.
* **Loss to follow-up**: an exponential dropout (non-informative), then the administrative end
  ``followup_days``. A start is recorded when it happens before the end of follow-up; it is
  recorded even after a response (the start process does not depend on the outcome given the
  covariates; an analysis of response stops at the response).

Truth (:func:`strategy_truth`): every patient of a large cohort is simulated under each strategy,
with no dropout: "never" (no ketamine during follow-up) and "initiate within ``grace_days``" as
Webster-Clark et al. define it: a patient whose natural start day ``S`` is in the window
(``S <= grace_days``) starts on it, every other patient starts on day ``grace_days`` (the last day
of the window). A patient who responds before their start day has responded under the strategy.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SSRIFailureParameters", "NegativeControl", "simulate_ssri_failure", "strategy_truth",
           "MEASURED_COVARIATES", "response_days", "natural_start_days"]

#: The baseline covariates an analysis may use (``u_unmeasured`` is not one of them).
MEASURED_COVARIATES = ("age", "male", "severity", "prior_episodes")
NEVER = np.iinfo(np.int32).max  # "no event / no start" on the integer day scale
_NC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NegativeControl(_Frozen):
    """An outcome ketamine does not affect, with the confounders' effects on its daily hazard."""

    name: str | None = Field(None, description="column prefix and stream; default nc<i> (its position, from 1)")
    event_type: str | None = Field(None, description="its clinical_events.event_type in an export; default the name")
    rate_per_day: float = Field(gt=0, description="daily hazard at the covariate centre")
    per_severity_sd: float = 0.0
    per_prior: float = 0.0
    per_10y_age: float = 0.0
    per_unmeasured: float = Field(0.0, description="log hazard ratio per SD of u_unmeasured")


class SSRIFailureParameters(_Frozen):
    """Every quantity the SSRI-failure generator draws from (defaults: a judgement, see module doc)."""

    followup_days: int = Field(90, ge=2)
    # --- covariates
    age_mean: float = 45.0
    age_sd: float = 13.0
    p_male: float = Field(0.4, ge=0, le=1)
    severity_mean: float = 30.0
    severity_sd: float = 6.0
    prior_mean: float = Field(1.5, ge=0, description="Poisson mean of prior episodes")
    # --- natural ketamine start (daily logistic hazard)
    start_intercept: float = -3.6
    start_per_day: float = -0.02
    start_per_severity_sd: float = 0.5
    start_per_prior: float = 0.25
    start_per_10y_age: float = -0.1
    start_male: float = 0.0
    start_per_unmeasured: float = 0.0
    # --- response: SSRI Weibull before a start, ketamine's waning hazard after it
    ssri_shape: float = Field(2.0, gt=0)
    ssri_scale_days: float = Field(80.0, gt=0)
    ketamine_peak_per_day: float = Field(0.08, ge=0, description="a: hazard just after a start, above the floor")
    ketamine_decay_days: float = Field(7.0, gt=0, description="tau: e-folding time of the early hazard")
    ketamine_floor_per_day: float = Field(0.003, ge=0, description="b: hazard once the early effect has waned")
    response_per_severity_sd: float = -0.4
    response_per_prior: float = -0.15
    response_per_10y_age: float = -0.05
    response_per_unmeasured: float = 0.0
    # --- negative controls and dropout
    negative_controls: tuple[NegativeControl, ...] = (
        NegativeControl(rate_per_day=0.004, per_severity_sd=0.5, per_prior=0.2),
        NegativeControl(rate_per_day=0.006, per_severity_sd=-0.3, per_10y_age=0.2),
        NegativeControl(rate_per_day=0.005, per_severity_sd=0.3, per_prior=0.1, per_10y_age=-0.1),
        NegativeControl(rate_per_day=0.003, per_severity_sd=0.6),
        NegativeControl(rate_per_day=0.008, per_prior=0.3, per_10y_age=0.1),
        NegativeControl(rate_per_day=0.005, per_severity_sd=-0.2, per_prior=0.15, per_10y_age=0.15),
    )
    dropout_per_day: float = Field(0.002, ge=0)
    p_ssri_switch: float = Field(0.5, ge=0, le=1, description="non-starters who switch SSRI (no effect)")

    @model_validator(mode="before")
    @classmethod
    def _name_controls(cls, data):
        """A control without a name is nc<i>, its position from 1."""
        if isinstance(data, dict) and data.get("negative_controls") is not None:
            named = []
            for i, nc in enumerate(data["negative_controls"], start=1):
                if isinstance(nc, NegativeControl) and nc.name is None:
                    nc = nc.model_copy(update={"name": f"nc{i}"})
                elif isinstance(nc, dict) and nc.get("name") is None:
                    nc = {**nc, "name": f"nc{i}"}
                named.append(nc)
            data = {**data, "negative_controls": tuple(named)}
        return data

    @model_validator(mode="after")
    def _control_names(self) -> "SSRIFailureParameters":
        names = self.negative_control_names
        for name in names:
            if not _NC_NAME.match(name) or name == "response":
                raise ValueError(f"negative control name {name!r} must be lower case letters, digits and '_' "
                                 "(starting with a letter, at most 40), and not 'response'")
        if len(set(names)) != len(names):
            raise ValueError(f"negative_controls repeat a name: {sorted(n for n in set(names) if names.count(n) > 1)}")
        return self

    @property
    def negative_control_names(self) -> list[str]:
        """The controls' names, in order (``nc<i>`` for one given without a name)."""
        return [nc.name or f"nc{i}" for i, nc in enumerate(self.negative_controls, start=1)]

    def with_unmeasured_confounding(self, strength: float) -> "SSRIFailureParameters":
        """The same generator with ``u_unmeasured`` moving the start (``+strength``), the response
        (``-strength``) and every negative control (``-strength``, as the response: a negative
        control measures the primary estimate's systematic error only when it is confounded the way
        the outcome is): residual confounding for an analysis that does not see ``u``, which the
        negative controls reveal and the empirical calibration moves toward the truth."""
        ncs = tuple(nc.model_copy(update={"per_unmeasured": -strength}) for nc in self.negative_controls)
        return self.model_copy(update={"start_per_unmeasured": strength, "response_per_unmeasured": -strength,
                                       "negative_controls": ncs})


def _rng(seed: int, name: str, part: int = 0) -> np.random.Generator:
    """The stream of one named quantity (``part``: the chunk of a truth cohort)."""
    return np.random.default_rng(np.random.SeedSequence([seed, part, zlib.crc32(name.encode())]))


def _covariates(n: int, seed: int, p: SSRIFailureParameters, part: int) -> dict[str, np.ndarray]:
    age = np.clip(np.round(_rng(seed, "age", part).normal(p.age_mean, p.age_sd, n)), 18, 85)
    male = (_rng(seed, "male", part).random(n) < p.p_male).astype(np.int8)
    severity = np.clip(np.round(_rng(seed, "severity", part).normal(p.severity_mean, p.severity_sd, n)), 12, 60)
    prior = _rng(seed, "prior", part).poisson(p.prior_mean, n)
    u = _rng(seed, "unmeasured", part).standard_normal(n)
    return {"age": age, "male": male, "severity": severity, "prior_episodes": prior, "u_unmeasured": u}


def _z(x: dict[str, np.ndarray], p: SSRIFailureParameters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return ((x["severity"] - p.severity_mean) / p.severity_sd, x["prior_episodes"] - p.prior_mean,
            (x["age"] - p.age_mean) / 10.0)


def start_hazard(x: dict[str, np.ndarray], p: SSRIFailureParameters, days: np.ndarray) -> np.ndarray:
    """(n, len(days)) true daily probability of a natural start on each day, given not started."""
    zs, zp, za = _z(x, p)
    lin = (p.start_intercept + p.start_per_severity_sd * zs + p.start_per_prior * zp + p.start_per_10y_age * za
           + p.start_male * x["male"] + p.start_per_unmeasured * x["u_unmeasured"])
    return 1.0 / (1.0 + np.exp(-(lin[:, None] + p.start_per_day * days[None, :])))


def natural_start_days(x: dict[str, np.ndarray], uniform: np.ndarray, p: SSRIFailureParameters) -> np.ndarray:
    """The latent natural start day of each patient (``NEVER`` if none before the end of follow-up):
    the first day at which the probability of not having started falls below ``uniform``."""
    days = np.arange(p.followup_days)
    log_surv = np.cumsum(np.log1p(-start_hazard(x, p, days)), axis=1)
    started = log_surv < np.log(uniform)[:, None]
    return np.where(started.any(axis=1), started.argmax(axis=1), NEVER).astype(np.int64)


def _response_multiplier(x: dict[str, np.ndarray], p: SSRIFailureParameters) -> np.ndarray:
    zs, zp, za = _z(x, p)
    return np.exp(p.response_per_severity_sd * zs + p.response_per_prior * zp + p.response_per_10y_age * za
                  + p.response_per_unmeasured * x["u_unmeasured"])


def response_days(x: dict[str, np.ndarray], exp_draw: np.ndarray, start: np.ndarray,
                  p: SSRIFailureParameters) -> np.ndarray:
    """Day of response (``NEVER`` if none by the end of follow-up) with ketamine started on day
    ``start`` (``NEVER``: not started), given each patient's unit-exponential draw."""
    F = p.followup_days
    k = np.arange(1, F + 1, dtype=float)  # interval (k-1, k]
    ssri = (k / p.ssri_scale_days) ** p.ssri_shape - ((k - 1) / p.ssri_scale_days) ** p.ssri_shape
    d = k[None, :] - np.minimum(start, F + 1)[:, None]  # days since start at the interval's end
    tau = p.ketamine_decay_days
    ket = (p.ketamine_peak_per_day * tau * (np.exp(-(d - 1) / tau) - np.exp(-d / tau)) + p.ketamine_floor_per_day)
    inc = np.where(d >= 1, ket, ssri[None, :]) * _response_multiplier(x, p)[:, None]
    crossed = np.cumsum(inc, axis=1) >= exp_draw[:, None]
    return np.where(crossed.any(axis=1), crossed.argmax(axis=1) + 1, NEVER).astype(np.int64)


def _nc_days(x: dict[str, np.ndarray], exp_draw: np.ndarray, nc: NegativeControl,
             p: SSRIFailureParameters) -> np.ndarray:
    zs, zp, za = _z(x, p)
    rate = nc.rate_per_day * np.exp(nc.per_severity_sd * zs + nc.per_prior * zp + nc.per_10y_age * za
                                    + nc.per_unmeasured * x["u_unmeasured"])
    day = np.ceil(exp_draw / rate)
    return np.where(day <= p.followup_days, day, NEVER).astype(np.int64)


def _latent(n: int, seed: int, p: SSRIFailureParameters, part: int = 0
            ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    x = _covariates(n, seed, p, part)
    start = natural_start_days(x, _rng(seed, "start", part).random(n), p)
    return x, start, _rng(seed, "response", part).standard_exponential(n)


def simulate_ssri_failure(n: int, seed: int, params: SSRIFailureParameters | None = None) -> pl.DataFrame:
    """One observed cohort of ``n`` patients (``seed`` fixes every draw).

    Columns: ``patient_id``; the covariates of :data:`MEASURED_COVARIATES` and ``u_unmeasured``;
    ``ssri_course_days`` (length of the failed SSRI course, 4-12 weeks, ending on day 0; no effect);
    ``ssri_switch``; ``ketamine_start_day`` (null: no start seen during follow-up);
    ``followup_days`` (last day under observation, dropout or the administrative end);
    ``response_time`` / ``response_event`` (day of response, or the end of follow-up with event 0);
    ``<name>_time`` / ``<name>_event`` for each negative control (``nc1``, ``nc2``, ... by default;
    :attr:`SSRIFailureParameters.negative_control_names`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    p = params or SSRIFailureParameters()
    x, start, e = _latent(n, seed, p)
    F = p.followup_days
    dropout = (np.ceil(_rng(seed, "dropout").standard_exponential(n) / p.dropout_per_day)
               if p.dropout_per_day > 0 else np.full(n, F + 1.0))
    end = np.minimum(dropout, F).astype(np.int64)
    observed_start = np.where(start < end, start, NEVER)
    resp = response_days(x, e, observed_start, p)
    cols: dict[str, object] = {"patient_id": np.arange(1, n + 1), **{c: x[c] for c in MEASURED_COVARIATES},
                               "u_unmeasured": x["u_unmeasured"],
                               "ssri_course_days": _rng(seed, "ssri_course").integers(28, 85, n),
                               "ssri_switch": (_rng(seed, "switch").random(n) < p.p_ssri_switch).astype(np.int8)}
    frame = pl.DataFrame(cols).with_columns(pl.Series("ketamine_start_day", observed_start), pl.Series("followup_days", end))
    frame = frame.with_columns(pl.when(pl.col("ketamine_start_day") < NEVER).then(pl.col("ketamine_start_day"))
                               .alias("ketamine_start_day"))
    outcomes = {"response": resp}
    for name, nc in zip(p.negative_control_names, p.negative_controls):
        outcomes[name] = _nc_days(x, _rng(seed, name).standard_exponential(n), nc, p)
    for name, day in outcomes.items():
        frame = frame.with_columns(pl.Series(f"{name}_time", np.minimum(day, end)),
                                   pl.Series(f"{name}_event", (day <= end).astype(np.int8)))
    return frame.with_columns(pl.col("age", "severity").cast(pl.Float64), pl.col("prior_episodes").cast(pl.Int64))


def _risk_and_rmst(day: np.ndarray, days: Sequence[int], horizon: int) -> tuple[dict[int, float], float]:
    risks = {d: float(np.mean(day <= d)) for d in days}
    rmst = float(np.mean(np.minimum(day, horizon)))  # E[min(T, tau)] on the day scale
    return risks, rmst


def strategy_truth(params: SSRIFailureParameters | None = None, *, grace_days: int = 30, n: int = 200_000,
                   seed: int = 20261130, days: Sequence[int] = (7, 28, 56), horizon: int = 56,
                   chunk: int = 50_000) -> dict:
    """True risks of response under "initiate ketamine within ``grace_days``" and "never", by
    simulating ``n`` patients under each strategy as defined (module doc).

    Returns a JSON-able dict: per strategy the risk at each of ``days`` and the RMST (restricted
    mean time to response, days, to ``horizon``); the risk difference and ratio (initiate - never,
    initiate / never) at each day, the RMST difference, their Monte Carlo standard errors, and the
    natural start distribution (share starting on each day of the window, ``S <= grace_days``).
    """
    p = params or SSRIFailureParameters()
    if not 0 <= grace_days < p.followup_days or horizon > p.followup_days or max(days) > p.followup_days:
        raise ValueError(f"grace_days ({grace_days}), horizon ({horizon}) and days {tuple(days)} must lie within "
                         f"follow-up ({p.followup_days} days)")
    init, never, natural = [], [], []
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        x, start, e = _latent(m, seed, p, part=lo // chunk)
        init.append(response_days(x, e, np.minimum(start, grace_days), p))
        never.append(response_days(x, e, np.full(m, NEVER), p))
        natural.append(start)
    ti, tn, s = np.concatenate(init), np.concatenate(never), np.concatenate(natural)
    ri, rmi = _risk_and_rmst(ti, days, horizon)
    rn, rmn = _risk_and_rmst(tn, days, horizon)
    mc = {d: float(np.std((ti <= d).astype(float) - (tn <= d)) / math.sqrt(n)) for d in days}
    diff_rmst = np.minimum(ti, horizon) - np.minimum(tn, horizon)
    window = np.bincount(s[s <= grace_days], minlength=grace_days + 1) / n
    return {
        "n": n, "seed": seed, "grace_days": grace_days, "horizon": horizon, "days": list(days),
        "risk": {"initiate": {str(d): ri[d] for d in days}, "never": {str(d): rn[d] for d in days}},
        "rd": {str(d): ri[d] - rn[d] for d in days},
        "rr": {str(d): (ri[d] / rn[d] if rn[d] > 0 else None) for d in days},
        "rd_mc_se": {str(d): mc[d] for d in days},
        "rmst": {"initiate": rmi, "never": rmn},
        "rmst_diff": rmi - rmn,
        "rmst_diff_mc_se": float(np.std(diff_rmst) / math.sqrt(n)),
        "natural_start_share_by_day": window.round(6).tolist(),
        "share_starting_in_window_naturally": float(window.sum()),
    }
