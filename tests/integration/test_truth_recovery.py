"""On a large seeded synthetic cohort, the adjusted Cox model recovers the truth.

Checked against the truth the generator states: the covariate log-HRs of its
latent model (which the visit grid does not blur), and for arms the HR the
adjusted model targets on the observed visit grid (ketaoutcomes.truth; the
latent arm HRs cannot be targeted by a visit-date analysis, see that module).
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from ketaoutcomes.analysis import analyze
from ketaoutcomes.derive import derive_all
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import SimulationSettings, StudySettings
from ketaoutcomes.simulate import build_truth, simulate_frames
from ketaoutcomes.simulate.params import GeneratorParameters
from ketaoutcomes.truth import observed_grid_estimands

SIM = SimulationSettings(n_patients=20_000, seed=11)


@pytest.fixture(scope="module")
def fit():
    frames = simulate_frames(SIM)
    study = StudySettings()
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=study)
    res = analyze(d.adsl, d.adtte, study=study)
    return res.cox.filter(pl.col("paramcd") == "TTRESP")


@pytest.fixture(scope="module")
def target():
    return observed_grid_estimands(SIM)["TTRESP"]


@pytest.mark.slow
def test_adjusted_route_hrs_cover_the_observed_grid_truth(fit, target):
    target = target["adjusted"]
    rows = fit.filter((pl.col("model") == "adjusted") & pl.col("term").str.starts_with("ARM["))
    covered = {r["term"][4:-1]: r["hr_lower"] <= target[r["term"][4:-1]]["hr"] <= r["hr_upper"]
               for r in rows.iter_rows(named=True)}
    assert len(covered) == 5
    # the brief asks for at least one route; with this seed all five are covered
    assert sum(covered.values()) >= 4, covered


@pytest.mark.slow
def test_naive_route_hrs_are_biased_by_confounding(fit, target):
    """Sicker patients get ketamine and respond less: the naive HR is pulled towards 1."""
    target = target["naive"]
    rows = fit.filter((pl.col("model") == "naive") & pl.col("term").str.starts_with("ARM["))
    below = [r["hr_upper"] < target[r["term"][4:-1]]["hr"] for r in rows.iter_rows(named=True)]
    assert sum(below) >= 4, below


@pytest.mark.slow
def test_adjusted_covariate_hrs_cover_the_generator_truth(fit):
    cov = build_truth(SIM, GeneratorParameters())["response"]["covariates"]
    truth = {"AGE": cov["age_at_index"], "BASE": cov["baseline_score"], "PRIORFAIL": cov["prior_failed_trials"],
             "SEX[M]": cov["sex_M"]}
    adj = {r["term"]: r for r in fit.filter(pl.col("model") == "adjusted").iter_rows(named=True)}
    for term, t in truth.items():
        r = adj[term]
        assert r["coef"] - 1.96 * r["se"] <= t["log_hr_per_unit"] <= r["coef"] + 1.96 * r["se"], (term, r, t)
        assert math.isclose(r["hr"], t["hr_per_unit"], rel_tol=0.05)


@pytest.mark.slow
def test_iptw_route_hrs_pass_diagnostics_and_cover_the_marginal_truth(fit, target):
    """Pairwise IPTW (ATE) targets the marginal HR among the patients given the route or the
    reference arm: the truth's 'marginal_pair' estimand (their outcomes under both arms)."""
    rows = fit.filter((pl.col("model") == "iptw") & pl.col("term").str.starts_with("ARM["))
    assert rows.height == 5 and set(rows["diagnostics"]) == {"pass"}
    covered = [r["hr_lower"] <= target["marginal_pair"][r["term"][4:-1]]["hr"] <= r["hr_upper"]
               for r in rows.iter_rows(named=True)]
    assert sum(covered) >= 4, covered
