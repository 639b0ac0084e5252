"""The SSRI-failure generator and its strategy truth (ketaoutcomes.simulate.ssri_failure).

Checked against closed forms: with no covariate effects the risk of response under "never" is the
Weibull's 1 - exp(-(t/lambda)^k) and, when everyone starts on day 0, ketamine's
1 - exp(-(a tau (1 - e^(-t/tau)) + b t)); the observed start days against the logistic start
hazard the generator declares; determinism against a second call with the same seed.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from ketaoutcomes.simulate.ssri_failure import (
    MEASURED_COVARIATES,
    SSRIFailureParameters,
    simulate_ssri_failure,
    strategy_truth,
)

NO_COVARIATES = dict(start_per_severity_sd=0.0, start_per_prior=0.0, start_per_10y_age=0.0,
                     response_per_severity_sd=0.0, response_per_prior=0.0, response_per_10y_age=0.0)


def test_same_seed_same_cohort_and_other_seed_another():
    a, b = simulate_ssri_failure(500, 3), simulate_ssri_failure(500, 3)
    assert a.equals(b)
    assert not a.equals(simulate_ssri_failure(500, 4))
    assert set(MEASURED_COVARIATES) <= set(a.columns) and "u_unmeasured" in a.columns
    # a start is seen only inside follow-up; an event only at or before its end
    started = a.filter(pl.col("ketamine_start_day").is_not_null())
    assert (started["ketamine_start_day"] < started["followup_days"]).all()
    assert (a["response_time"] <= a["followup_days"]).all() and (a["nc1_time"] <= a["followup_days"]).all()


def test_truth_matches_closed_forms_without_covariate_effects():
    days = (7, 28, 56)
    p = SSRIFailureParameters(**NO_COVARIATES, start_intercept=30.0)  # everyone starts naturally on day 0
    t = strategy_truth(p, grace_days=30, n=60_000, days=days)
    for d in days:
        never = 1 - math.exp(-((d / p.ssri_scale_days) ** p.ssri_shape))
        a, tau, b = p.ketamine_peak_per_day, p.ketamine_decay_days, p.ketamine_floor_per_day
        ket = 1 - math.exp(-(a * tau * (1 - math.exp(-d / tau)) + b * d))
        # binomial Monte Carlo SE of a proportion of 60,000 draws is <= 0.5/sqrt(60,000) = 0.002: ~3.2 SE
        assert t["risk"]["never"][str(d)] == pytest.approx(never, abs=0.0065)
        assert t["risk"]["initiate"][str(d)] == pytest.approx(ket, abs=0.0065)
    assert t["share_starting_in_window_naturally"] == 1.0
    assert t["natural_start_share_by_day"][0] == 1.0


def test_late_starters_start_on_the_last_day_of_the_window():
    # nobody starts naturally: under "initiate within 10 days" everyone starts on day 10, so before
    # day 10 the two strategies are the same and on day 11 ketamine's early hazard shows.
    p = SSRIFailureParameters(**NO_COVARIATES, start_intercept=-40.0)
    t = strategy_truth(p, grace_days=10, n=20_000, days=(7, 10, 11, 28))
    assert t["rd"]["7"] == 0.0 and t["rd"]["10"] == 0.0
    assert t["rd"]["11"] > 0.05  # a ~ 0.08 a day on day 11 vs the Weibull's ~0.003
    assert t["share_starting_in_window_naturally"] == 0.0


def test_hazards_cross_by_default():
    t = strategy_truth(n=20_000, days=(7, 28, 56, 84), horizon=84)
    rd = [t["rd"][str(d)] for d in (7, 28, 56, 84)]
    assert rd[0] > 0 and rd[1] > rd[0]
    assert rd[3] < rd[2]  # after the early gain, "never"'s rising SSRI hazard catches up
    assert t["rmst_diff"] < 0  # ketamine within 30 days shortens the time to response


def test_observed_starts_follow_the_declared_logistic_hazard():
    p = SSRIFailureParameters(dropout_per_day=0.0)
    frame = simulate_ssri_failure(3000, 9, p)
    s = frame["ketamine_start_day"].fill_null(p.followup_days).to_numpy()
    rows = np.concatenate([np.arange(min(si + 1, p.followup_days)) for si in s])
    who = np.repeat(np.arange(len(s)), np.minimum(s + 1, p.followup_days))
    y = (rows == s[who]).astype(float)
    z_sev = (frame["severity"].to_numpy() - p.severity_mean) / p.severity_sd
    X = np.column_stack([np.ones_like(y), rows, z_sev[who], frame["prior_episodes"].to_numpy()[who] - p.prior_mean,
                         (frame["age"].to_numpy()[who] - p.age_mean) / 10])
    fit = sm.Logit(y, X).fit(disp=0)
    want = [p.start_intercept, p.start_per_day, p.start_per_severity_sd, p.start_per_prior, p.start_per_10y_age]
    assert np.all(np.abs(fit.params - want) < 4 * fit.bse), (fit.params, fit.bse)


def test_negative_controls_share_the_confounding_but_not_the_effect():
    frame = simulate_ssri_failure(8000, 5)
    started = frame["ketamine_start_day"].is_not_null() & (frame["ketamine_start_day"] <= 30)
    # crude: starters (sicker) have more nc1 events; the truth of every negative control is no effect
    crude = frame.group_by(started.alias("s")).agg(pl.col("nc1_event").mean()).sort("s")["nc1_event"]
    assert crude[1] - crude[0] > 0.03


def test_each_negative_control_has_its_own_stream_and_a_name():
    """Six controls by default, nc1..nc6; a control's draws come from its own stream (named after it),
    so leaving controls out or adding one changes no other column; names are checked."""
    p = SSRIFailureParameters()
    assert p.negative_control_names == [f"nc{i}" for i in range(1, 7)]
    full = simulate_ssri_failure(800, 9, p)
    two = simulate_ssri_failure(800, 9, p.model_copy(update={"negative_controls": p.negative_controls[:2]}))
    assert full.select(two.columns).equals(two) and "nc3_time" not in two.columns
    named = SSRIFailureParameters(negative_controls=[{"rate_per_day": 0.01, "name": "fracture"}, {"rate_per_day": 0.01}])
    assert named.negative_control_names == ["fracture", "nc2"]
    frame = simulate_ssri_failure(800, 9, named)
    assert {"fracture_time", "fracture_event", "nc2_time"} <= set(frame.columns)
    for bad, message in ((["response"], "not 'response'"), (["a", "a"], "repeat a name"), (["Fx"], "lower case")):
        with pytest.raises(ValueError, match=message):
            SSRIFailureParameters(negative_controls=[{"rate_per_day": 0.01, "name": n} for n in bad])
