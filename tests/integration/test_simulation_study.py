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
    estimates, target = mod.run_study(replicates=6, patients=2500, truth_patients=10_000, workers=1)
    return mod, estimates, target, mod.summarise(estimates, target)


@pytest.mark.slow
def test_study_runs_and_reports_every_model_and_route(study):
    mod, estimates, _target, summary = study
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
    _mod, _est, _target, s = study
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
    _mod, estimates, _target, _summary = study
    failed = estimates.filter(pl.col("diagnostics") == "fail")["gate_reasons"].to_list()
    assert not [r for r in failed if "converge" in r or "SEX[U]" in r], failed
    assert all(r.startswith(("max |SMD| after", "equipoise")) for r in failed), failed
