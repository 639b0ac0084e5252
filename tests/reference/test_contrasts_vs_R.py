"""ketaoutcomes.models.contrasts against R's survival package (and survRM2's rule for an RMST difference).

R output in ``results/contrasts_lung.json`` (printed in ``results/contrasts_reference.log``) is written
by ``contrasts_reference.R``; R is not needed to run these tests. Data: ``results/weighted_lung_data.csv``
(lung, status 1 = dead, and the case weights ``w`` of ``weighted_reference.R``); arms sex 2 (the
"route") vs sex 1 (the "reference"), horizon 365 days, days 90, 180, 365.

survRM2 is not installed here and Debian does not package it: its ``rmst2()`` difference is each arm's
RMST from ``print(survfit(...), rmean = tau)`` (survival's survmean) with SE ``sqrt(se1^2 + se0^2)``
and a Wald interval, which is what the R script computes; the risk differences are
``1 - summary(fit, times = d)$surv`` of the two arms, subtracted by hand. Tolerance 1e-12 relative
(closed forms).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models import kaplan_meier
from ketaoutcomes.models.contrasts import curve_summaries, rmst_difference
from ketaoutcomes.models.weighted import restricted_mean

HERE = Path(__file__).parent
R = json.loads((HERE / "results" / "contrasts_lung.json").read_text())
DATA = pl.read_csv(HERE / "results" / "weighted_lung_data.csv", null_values=["", "NA"])
REL = 1e-12


def _summaries(weighted: bool, tau: float, days: list[float]):
    grid, tidx = np.unique(DATA["time"].cast(pl.Float64).to_numpy(), return_inverse=True)
    event = DATA["status"].to_numpy().astype(float)
    w = DATA["w"].cast(pl.Float64).to_numpy() if weighted else np.ones(DATA.height)
    sex = DATA["sex"].to_numpy()
    return {arm: curve_summaries(tidx, event, w * (sex == code), grid, days=days, horizon=tau)
            for arm, code in (("target", 2), ("comparator", 1))}


@pytest.mark.parametrize("kind", ["unweighted", "weighted"])
def test_contrasts_of_two_curves_match_R_survfit(kind):
    r = R[kind]
    s = _summaries(kind == "weighted", r["tau"], r["days"])
    t, c = s["target"], s["comparator"]
    np.testing.assert_allclose(t.risk[0], r["risk_target"], rtol=REL)
    np.testing.assert_allclose(c.risk[0], r["risk_comparator"], rtol=REL)
    np.testing.assert_allclose(t.risk[0] - c.risk[0], r["risk_difference"], rtol=1e-10)
    assert t.rmst[0] == pytest.approx(r["rmst_target"], rel=REL)
    assert c.rmst[0] == pytest.approx(r["rmst_comparator"], rel=REL)
    assert t.rmst[0] - c.rmst[0] == pytest.approx(r["rmst_difference"], rel=1e-10)
    assert t.median[0] == r["median_target"] and c.median[0] == r["median_comparator"]


def test_unweighted_rmst_difference_and_its_analytic_interval_match_R_survRM2_rule():
    r = R["unweighted"]
    km = kaplan_meier(DATA, time="time", event="status", group="sex")
    out = rmst_difference(restricted_mean(km, horizon=r["tau"]), target="2", comparator="1")
    assert out["difference"] == pytest.approx(r["rmst_difference"], rel=1e-10)
    assert out["se"] == pytest.approx(r["rmst_difference_se"], rel=REL)
    assert out["lower"] == pytest.approx(r["rmst_difference_lower"], rel=1e-10)
    assert out["upper"] == pytest.approx(r["rmst_difference_upper"], rel=1e-10)
