"""A small, fast run of scripts/simulation_study.py (the full study is 200 replicates; its table is
in the session notes). Checked against the truth the generator states (ketaoutcomes.truth)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import polars as pl
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "simulation_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("simulation_study", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    estimates, target, contrasts = mod.run_study(replicates=6, patients=2500, truth_patients=10_000, workers=1,
                                                 bootstrap=20)
    return mod, estimates, target, mod.summarise(estimates, target), mod.summarise_contrasts(contrasts, target)


@pytest.mark.slow
def test_study_runs_and_reports_every_model_and_route(study):
    mod, estimates, _target, summary, _ = study
    assert set(summary["model"]) == {"adjusted", "naive", "iptw", "matching"}
    assert summary.height == 20 and summary["replicates"].min() == 6
    matched = summary.filter(pl.col("model") == "matching")
    assert set(matched["target"]) == {"marginal in the treated"} and matched["matched_share"].is_between(0, 1).all()
    for c in ("bias_log_hr", "empirical_se", "mean_model_se", "coverage"):
        assert summary[c].is_finite().all(), c
    assert "| model | arm |" in mod.markdown(summary)


@pytest.mark.slow
def test_naive_estimate_is_biased_towards_1_and_adjustment_removes_most_of_it(study):
    """Confounding by indication: sicker patients get ketamine and respond less, so the naive HR of
    every route is below its marginal target on average; the adjusted HR is much closer to its own."""
    _mod, _est, _target, s, _ = study
    naive = s.filter(pl.col("model") == "naive")
    adjusted = s.filter(pl.col("model") == "adjusted")
    assert (naive["bias_log_hr"] < 0).sum() >= 4
    assert adjusted["bias_log_hr"].abs().mean() < naive["bias_log_hr"].abs().mean()
    iv = s.filter((pl.col("model") == "adjusted") & (pl.col("arm") == "ketamine_iv")).row(0, named=True)
    assert abs(iv["bias_log_hr"]) < 2 * iv["empirical_se"] / math.sqrt(iv["replicates"]) + 0.1


@pytest.mark.slow
def test_a_weighted_estimate_is_withheld_only_for_imbalance_or_equipoise(study):
    """Issue 10: the ridge propensity model always converges and a level shared by fewer than 2% of
    a pair (sex U) is left out of the model and the gate, so no replicate's estimate is withheld
    because the model did not converge or on sex U. (Before, sublingual ketamine's unpenalised model
    separated on sex U in many replicates; the full study's pass rates are in the session notes.)"""
    _mod, estimates, _target, _summary, _c = study
    failed = estimates.filter(pl.col("diagnostics") == "fail")["gate_reasons"].to_list()
    assert not [r for r in failed if "converge" in r or "SEX[U]" in r], failed
    assert all(r.startswith(("max |SMD| after", "equipoise")) for r in failed), failed


@pytest.mark.slow
def test_study_reports_the_primary_contrasts_against_their_counterfactual_truth(study):
    """Every route's risk differences (day 7, and day 28 where enough patients are still at risk: not for the
    short IV and IM courses, models.contrast_min_at_risk_share; day 56 is after the ketamine routes' follow-up),
    median and RMST differences, IPTW with bootstrap intervals, held against the counterfactual curves; the truth
    says ketamine responds sooner, and so do the estimates on average."""
    mod, _est, target, _s, c = study
    iptw = c.filter(pl.col("model") == "iptw")
    # day 56: after the follow-up of most ketamine routes (estimable for sublingual now and then)
    assert {"risk_d7", "risk_d28", "median", "rmst"} <= set(iptw["estimand"]) <= {"risk_d7", "risk_d28", "risk_d56",
                                                                                  "median", "rmst"}
    assert iptw["arm"].n_unique() == 5
    for arm, rows in iptw.group_by("arm"):
        assert {"risk_d7", "median", "rmst"} <= set(rows["estimand"]), arm
    for col in ("mean_truth", "mean_estimate", "bias", "coverage", "mean_boot_se"):
        assert iptw[col].is_finite().all(), col
    rmst = iptw.filter(pl.col("estimand") == "rmst")
    assert (rmst["mean_truth"] < 0).all() and (rmst["mean_estimate"] < 0).all()  # fewer days without response
    assert (rmst["mean_day"] <= 56).all()
    iv = rmst.filter(pl.col("arm") == "ketamine_iv").row(0, named=True)
    assert abs(iv["bias"]) < 3 * iv["empirical_se"] / math.sqrt(iv["replicates"]) + 0.5
    # the adjusted curves (results_ate) are held against the same truth, with their influence-function intervals
    ate = c.filter(pl.col("model").str.starts_with("ate_"))
    assert set(ate["model"]) == {"ate_gformula", "ate_iptw", "ate_aiptw"} and ate["arm"].n_unique() == 5
    assert ate["coverage"].is_finite().all() and (ate.filter(pl.col("estimand") == "rmst")["mean_estimate"] < 0).all()
    # the truth is read off the counterfactual curves exactly as the analysis reads the weighted ones
    from ketaoutcomes.truth import contrast_truth
    curves = target["curves"]["marginal_pair"]["ketamine_iv"]
    assert contrast_truth(curves, "risk", 28) > contrast_truth(curves, "risk", 7) > 0
    assert "| model | arm | estimand |" in mod.markdown(c)
