"""The report's propensity-score section (ketaoutcomes.report.sections.weighting): what it says
about a withheld estimate, checked against hand-made results_ps / results_balance rows."""

from __future__ import annotations

import polars as pl

from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.sections.weighting import balance_rule, gate_help, propensity_settings
from ketaoutcomes.settings import StudySettings

ARMS = Arms(reference="ssri", order=("ssri", "ketamine_iv", "ketamine_im"),
            labels={"ssri": "SSRI", "ketamine_iv": "IV ketamine", "ketamine_im": "IM ketamine"})
#: a run's stored settings, as results_runs.settings_json holds them (nested by group)
SETTINGS = StudySettings().model_dump(mode="json")


def _ps() -> pl.DataFrame:
    return pl.DataFrame({
        "paramcd": ["TTRESP", "TTRESP"], "target": ["ketamine_im", "ketamine_iv"], "n_target": [91, 450],
        "n_comparator": [458, 458], "diagnostics": ["fail", "pass"],
        "gate_reasons": ["max |SMD| after weighting 0.106 >= 0.1 (SITEID[S06]; also AGE 0.101)", None],
        "levels_left_out": ["SEX[U] (9 of 549, 1.6%)", "SEX[U] (10 of 908, 1.1%)"]})


def _balance() -> pl.DataFrame:
    rows = [  # target, covariate, level, mean_t, mean_c, smd_after, in_gate
        ("ketamine_im", "SITEID[S06]", "S06", 0.1648, 0.2271, 0.1061, True),
        ("ketamine_im", "AGE", None, 45.0, 44.0, -0.1010, True),
        ("ketamine_im", "SEX[U]", "U", 0.011, 0.0175, -0.30, False),   # left out: never named as a failure
        ("ketamine_im", "BASE", None, 31.0, 30.9, 0.05, True),
        ("ketamine_iv", "SEX[U]", "U", 0.0044, 0.0175, 0.20, False),
    ]
    return pl.DataFrame(rows, schema=["target", "covariate", "level", "mean_target_before", "mean_comparator_before",
                                      "smd_after", "in_gate"], orient="row").with_columns(pl.lit("TTRESP").alias("paramcd"))


def test_withheld_pair_names_each_imbalanced_covariate_its_smd_and_share_of_the_pair():
    """Share of SITEID[S06] by hand: (0.1648 * 91 + 0.2271 * 458) / 549 = 21.7%."""
    h = gate_help(_ps(), _balance(), ARMS, SETTINGS)
    assert h["imbalanced"] == [
        "Time to response, IM ketamine vs SSRI: SITEID[S06] |SMD| 0.106 >= 0.1 (a level shared by 21.7% of the "
        "pair's patients); AGE |SMD| 0.101 >= 0.1"]
    assert h["left_out"] == ["IV ketamine: SEX[U] (10 of 908, 1.1%)", "IM ketamine: SEX[U] (9 of 549, 1.6%)"]
    text = " ".join(h["settings"])
    for setting in ("propensity.max_smd = 0.1", "propensity.balance_alpha (not set)",
                    "propensity.min_level_prevalence = 0.02", "propensity.ridge_variance = 10", "propensity.weighting"):
        assert setting in text, setting
    assert h["model"] == "ridge-penalised logistic regression"


def test_settings_are_read_from_the_stored_groups_and_from_a_flat_older_run():
    """results_runs.settings_json is nested by group: the threshold and balance_alpha are read from
    [propensity] (a flat run, stored before the groups existed, still reads)."""
    nested = StudySettings(max_smd=0.15, balance_alpha=0.05, equipoise_bounds=(0.25, 0.75)).model_dump(mode="json")
    assert propensity_settings(nested)["max_smd"] == 0.15
    assert propensity_settings(nested)["equipoise_bounds"] == [0.25, 0.75]
    assert "significantly above 0.15" in balance_rule(nested) and "0.05" in balance_rule(nested)
    assert "below 0.2" in balance_rule({"max_smd": 0.2})
    old = gate_help(_ps(), _balance(), ARMS, {"max_smd": 0.1})   # a run before propensity.model existed
    assert old["model"] == "logistic regression"
    assert any("min_level_prevalence: not in this run's settings" in s for s in old["settings"])
    assert gate_help(None, None, ARMS, SETTINGS)["imbalanced"] == []
