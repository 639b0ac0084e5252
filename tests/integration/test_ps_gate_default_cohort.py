"""Issue 10: on the default cohort, a primary (propensity-weighted) estimate is withheld only for a
real reason. Checked against the issue's account of the default cohort (2,000 patients, seed
20261121; time to response): with the earlier propensity model (unpenalised, every covariate level
modelled and gated), IV ketamine failed on SEX[U] (18 patients in 2,000) and sublingual ketamine's
model did not converge (no sublingual patient has sex U); with the defaults (ridge, levels rarer
than 2% of a pair left out) both pass, sex U is named as left out, and a pair that still fails does
so on a covariate in the gate whose |SMD| after weighting is at or above 0.1 in results_balance."""

from __future__ import annotations

import polars as pl
import pytest

from ketaoutcomes.settings import SimulationSettings, StudySettings

STUDY = StudySettings(name="issue-10", endpoints=("TTRESP",))
BEFORE = STUDY.updated(model="logistic", min_level_prevalence=0)


@pytest.fixture(scope="module")
def cohort():
    from ketaoutcomes.derive import derive_all
    from ketaoutcomes.registries import load_registries
    from ketaoutcomes.simulate import simulate_frames

    frames = simulate_frames(SimulationSettings())
    return derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                      registries=load_registries(), study=STUDY)


def _run(cohort, study):
    from ketaoutcomes.analysis import analyze

    res = analyze(cohort.adsl, cohort.adtte, study=study)
    return res.table("results_ps"), res.table("results_balance"), res.notes


@pytest.mark.slow
def test_before_iv_failed_on_sex_u_and_sublingual_did_not_converge(cohort):
    ps, _, _ = _run(cohort, BEFORE)
    verdict = {r["target"]: r for r in ps.iter_rows(named=True)}
    assert verdict["ketamine_iv"]["diagnostics"] == "fail"
    assert verdict["ketamine_iv"]["gate_reasons"].endswith("(SEX[U])")
    assert not verdict["ketamine_sublingual"]["converged"]
    assert "did not converge" in verdict["ketamine_sublingual"]["gate_reasons"]


@pytest.mark.slow
def test_with_the_defaults_only_real_imbalance_withholds_an_estimate(cohort):
    ps, balance, notes = _run(cohort, STUDY)
    verdict = {r["target"]: r for r in ps.iter_rows(named=True)}
    assert verdict["ketamine_iv"]["diagnostics"] == "pass" and verdict["ketamine_sublingual"]["diagnostics"] == "pass"
    assert set(ps["ps_model"]) == {"ridge (prior variance 10)"} and ps["converged"].all()
    for r in ps.iter_rows(named=True):
        assert r["levels_left_out"].startswith("SEX[U] ("), r
        b = balance.filter(pl.col("target") == r["target"])
        assert b.filter(pl.col("covariate") == "SEX[U]")["in_gate"].to_list() == [False]
        gated = b.filter(pl.col("in_gate"))
        assert r["max_abs_smd_after"] == pytest.approx(gated["smd_after"].abs().max())
        if r["diagnostics"] == "fail":
            worst = gated.sort(pl.col("smd_after").abs(), descending=True).row(0, named=True)
            assert abs(worst["smd_after"]) >= 0.1
            assert r["gate_reasons"].startswith(f"max |SMD| after weighting {abs(worst['smd_after']):.3g} >= 0.1 "
                                                f"({worst['covariate']}")
    left = [n for n in notes if n.step == "propensity" and "min_level_prevalence" in n.text]
    assert len(left) == 1 and set(left[0].arms) == set(ps["target"]) and "SEX[U] (" in left[0].text
