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

from ketaoutcomes.analysis import analyze, relapse_analyses
from ketaoutcomes.models.matching import MATCHED_SHARE_FOR_ATT
from ketaoutcomes.derive import derive_all
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import SimulationSettings, StudySettings
from ketaoutcomes.simulate import build_truth, simulate_frames
from ketaoutcomes.simulate.params import GeneratorParameters
from ketaoutcomes.truth import observed_grid_estimands

SIM = SimulationSettings(n_patients=20_000, seed=11)


@pytest.fixture(scope="module")
def cohort():
    frames = simulate_frames(SIM)
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=StudySettings())
    return frames, d


@pytest.fixture(scope="module")
def fit(cohort):
    _frames, d = cohort
    res = analyze(d.adsl, d.adtte, study=StudySettings())
    return res.table("results_cox").filter(pl.col("paramcd") == "TTRESP")


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


@pytest.mark.slow
def test_matched_route_hrs_cover_the_marginal_truth_among_the_treated(cohort, target):
    """1:1 caliper matching keeps (nearly) every route patient: an ATT, held against the truth's
    'marginal_treated' estimand (the route patients' outcomes under both arms)."""
    _frames, d = cohort
    study = StudySettings(weighting="matching", ps_truncation=None)
    res = analyze(d.adsl.filter(pl.col("ANLFL") == "Y"), d.adtte.filter(pl.col("PARAMCD") == "TTRESP"), study=study)
    rows = res.table("results_cox").filter((pl.col("model") == "matching") & pl.col("term").str.starts_with("ARM["))
    assert rows.height == 5
    ps = res.table("results_ps").filter(pl.col("paramcd") == "TTRESP")
    share = dict(ps.select("target", pl.col("n_matched_target") / pl.col("n_target")).iter_rows())
    att = {a for a, x in share.items() if x >= MATCHED_SHARE_FOR_ATT}
    # IV outnumbers SSRI: 1:1 matching without replacement cannot keep every IV patient, so the matched
    # HR describes a subset (said in a note) and has no simulated target; the other routes are ATTs
    assert len(att) >= 3, share
    for arm in set(share) - att:
        assert any(f"{arm} patients were matched" in str(n) for n in res.notes), res.notes
    covered = [r["hr_lower"] <= target["marginal_treated"][r["term"][4:-1]]["hr"] <= r["hr_upper"]
               for r in rows.iter_rows(named=True) if r["term"][4:-1] in att]
    assert sum(covered) >= len(att) - 1, (covered, rows)


@pytest.mark.slow
def test_maintenance_relapse_hr_recovers_the_generator_range(cohort):
    """The generator multiplies the relapse hazard of maintained responders by 0.30-0.55 depending on
    the arm (simulate/params.py maintenance_hr); the time-varying exposure model's pooled HR must lie
    in that range, and relapse cumulative incidence with its competing event must be a distribution."""
    frames, d = cohort
    params = GeneratorParameters()
    lo = min(a.maintenance_hr for a in params.arms.values())
    hi = max(a.maintenance_hr for a in params.arms.values())
    out = relapse_analyses(d.adsl, d.adtte, frames["sessions"], study=StudySettings()).tables
    m = out["results_relapse_maintenance"].filter(pl.col("term") == "MAINT").row(0, named=True)
    assert lo <= m["hr"] <= hi and m["hr_lower"] < hi and m["hr_upper"] > lo, (m, lo, hi)
    cif = out["results_relapse_cif"]
    total = cif.group_by("group", "time").agg(pl.col("cif").sum())
    assert (total["cif"] - 1).abs().max() < 1e-9
