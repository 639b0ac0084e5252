"""ketaoutcomes.models.modifiers against R's survival package.

``modifiers_reference.R`` simulates ``data/modifiers_data.csv`` (3000 courses: ssri,
ketamine_iv, esketamine_intranasal; five sites; sex F/M/U; missing CONBENZO, BASE
and DOSEREL; whole-day times, so many ties) and fits the same Cox models with
``coxph(..., ties = "efron")``, iterated to eps = 1e-11, writing
``results/modifiers_*.json``. R is not needed to run these tests.

Checked:

* Model A, SEX and CONBENZO: the nested route-within-level fit (every term),
  the main-effects fit, ``anova(main, interaction)`` (chi2, df, p), the rows
  used, and that the nested terms equal R's linear combinations of the usual
  ``ARM * M`` parameterisation (coefficient and SE from ``vcov``).
* Model A, AGE: the main-effects fit and the interaction model centred at 30,
  50 and 70 (every term), and the LR test.
* Model B: ketamine routes only, ``strata(ARM, SITEID)`` and ``strata(ARM)``.

Tolerances (relative): coefficients, SEs, HRs, CI limits 1e-6; Wald p-values
1e-5 (tiny p-values amplify the coefficient's error); log-likelihoods 1e-9;
LR chi2 1e-6 (a difference of two log-likelihoods); the LR p-value 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ketaoutcomes.models.modifiers import effect_modifiers

HERE = Path(__file__).parent
RESULTS = HERE / "results"

REL_COEF = 1e-6
REL_P = 1e-5
REL_LIK = 1e-9
REL_LR = 1e-6
ROUTES = ["ketamine_iv", "esketamine_intranasal"]


def ref(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


@pytest.fixture(scope="module")
def data() -> pl.DataFrame:
    return pl.read_csv(
        HERE / "data" / "modifiers_data.csv",
        null_values=[""],
        schema_overrides={"CONSSRI": pl.Boolean, "CONBENZO": pl.Boolean, "DOSEREL": pl.Float64,
                          "AVAL": pl.Float64, "BASE": pl.Float64},
    )  # fmt: skip


@pytest.fixture(scope="module")
def result(data):
    return effect_modifiers(data, reference_arm="ssri", ketamine_arms=ROUTES)


def fit(result, modifier: str, kind: str) -> dict:
    rows = result.fits.filter((pl.col("modifier") == modifier) & (pl.col("kind") == kind)).to_dicts()
    assert len(rows) == 1, (modifier, kind)
    return rows[0]


def assert_terms_match(got: dict[str, dict], r: dict) -> None:
    """``got``: term -> row with coef, se, hr, hr_lower, hr_upper, p_value."""
    assert list(got) == r["terms"]
    for term in r["terms"]:
        g = got[term]
        assert g["coef"] == pytest.approx(r["coef"][term], rel=REL_COEF), term
        assert g["se"] == pytest.approx(r["se"][term], rel=REL_COEF), term
        assert g["hr"] == pytest.approx(r["hr"][term], rel=REL_COEF), term
        assert g["hr_lower"] == pytest.approx(r["hr_lower"][term], rel=REL_COEF), term
        assert g["hr_upper"] == pytest.approx(r["hr_upper"][term], rel=REL_COEF), term
        assert g["p_value"] == pytest.approx(r["p"][term], rel=REL_P), term


# ----------------------------------------------------------------------------- Model A: SEX, CONBENZO
@pytest.mark.parametrize(("modifier", "name"), [("SEX", "modifiers_sex.json"), ("CONBENZO", "modifiers_conbenzo.json")])
def test_subgroup_hrs_match_R_coxph(result, modifier, name):
    """Route vs ssri within each level: exp of the nested ARM[r]:M[l] terms, as coxph fits them."""
    r = ref(name)
    inter = r["interaction"]
    sub = result.subgroups.filter(pl.col("modifier") == modifier)
    assert sub.height == len(ROUTES) * len(r["levels"])
    for row in sub.to_dicts():
        term = f"ARM[{row['arm']}]:{modifier}[{row['level']}]"
        assert row["term"] == term
        assert row["coef"] == pytest.approx(inter["coef"][term], rel=REL_COEF), term
        assert row["se"] == pytest.approx(inter["se"][term], rel=REL_COEF), term
        assert row["hr"] == pytest.approx(inter["hr"][term], rel=REL_COEF), term
        assert row["hr_lower"] == pytest.approx(inter["hr_lower"][term], rel=REL_COEF), term
        assert row["hr_upper"] == pytest.approx(inter["hr_upper"][term], rel=REL_COEF), term
        assert row["p_value"] == pytest.approx(inter["p"][term], rel=REL_P), term
        # the nested terms are R's linear combinations of the usual ARM * M parameterisation
        assert row["coef"] == pytest.approx(r["lincom_coef"][term], rel=REL_COEF), term
        assert row["se"] == pytest.approx(r["lincom_se"][term], rel=REL_COEF), term
    f = fit(result, modifier, "interaction")
    assert f["n"] == inter["n"] == r["n_rows"]
    assert f["n_events"] == inter["nevent"]
    assert f["terms"] == ", ".join(inter["terms"])
    assert f["loglik"] == pytest.approx(inter["loglik"], rel=REL_LIK)
    assert f["loglik"] == pytest.approx(r["usual_loglik"], rel=REL_LIK)  # same model, other parameters
    assert f["converged"]


@pytest.mark.parametrize(("modifier", "name"), [("SEX", "modifiers_sex.json"), ("CONBENZO", "modifiers_conbenzo.json")])
def test_interaction_lr_test_matches_R_anova(result, modifier, name):
    """anova(main, interaction): chi2 = 2 * delta loglik, df = delta estimated terms, on the same rows."""
    r = ref(name)
    row = result.interactions.filter(pl.col("modifier") == modifier).to_dicts()[0]
    main = fit(result, modifier, "main")
    assert main["terms"] == ", ".join(r["main"]["terms"])
    assert main["n"] == r["main"]["n"] == row["n"]
    assert main["loglik"] == pytest.approx(r["main"]["loglik"], rel=REL_LIK)
    assert row["loglik_main"] == pytest.approx(r["lr"]["loglik_main"], rel=REL_LIK)
    assert row["loglik_interaction"] == pytest.approx(r["lr"]["loglik_interaction"], rel=REL_LIK)
    assert row["lr_chi2"] == pytest.approx(r["lr"]["chisq"], rel=REL_LR)
    assert row["df"] == r["lr"]["df"] == 2
    assert row["p_value"] == pytest.approx(r["lr"]["p"], rel=REL_P)


def test_rows_left_out_as_R(data, result):
    """Sex U and missing CONBENZO / BASE rows: the counts R's subsets imply, said in the notes."""
    n_u = data.filter(pl.col("SEX") == "U").height
    assert n_u > 0
    assert f"SEX: {n_u} rows left out of the sex model (SEX = U: {n_u})" in result.notes
    n_bz = data["CONBENZO"].null_count()
    assert f"CONBENZO: {n_bz} rows with CONBENZO missing left out of the benzodiazepine model" in result.notes
    assert any(n.startswith("SEX: ") and "dropped for missing BASE" in n for n in result.notes)
    assert result.notes[0].startswith("Exploratory secondary analysis")


# ----------------------------------------------------------------------------- Model A: AGE
def test_age_subgroup_hrs_match_R_coxph(result):
    r = ref("modifiers_age.json")
    for c, rc in r["centred"].items():
        sub = result.subgroups.filter((pl.col("modifier") == "AGE") & (pl.col("level") == c))
        assert sub["arm"].to_list() == ROUTES
        for row in sub.to_dicts():
            term = f"ARM[{row['arm']}]"
            assert row["coef"] == pytest.approx(rc["coef"][term], rel=REL_COEF), (c, term)
            assert row["se"] == pytest.approx(rc["se"][term], rel=REL_COEF), (c, term)
            assert row["hr"] == pytest.approx(rc["hr"][term], rel=REL_COEF), (c, term)
            assert row["hr_lower"] == pytest.approx(rc["hr_lower"][term], rel=REL_COEF), (c, term)
            assert row["hr_upper"] == pytest.approx(rc["hr_upper"][term], rel=REL_COEF), (c, term)
            assert row["p_value"] == pytest.approx(rc["p"][term], rel=REL_P), (c, term)
        f = fit(result, "AGE", f"interaction (centred at {c})")
        assert f["terms"] == ", ".join(rc["terms"])
        assert f["n"] == rc["n"] == r["n_rows"]
        assert f["loglik"] == pytest.approx(rc["loglik"], rel=REL_LIK)


def test_age_interaction_lr_test_matches_R_anova(result):
    r = ref("modifiers_age.json")
    row = result.interactions.filter(pl.col("modifier") == "AGE").to_dicts()[0]
    main = fit(result, "AGE", "main")
    assert main["terms"] == ", ".join(r["main"]["terms"])
    assert main["loglik"] == pytest.approx(r["main"]["loglik"], rel=REL_LIK)
    assert row["lr_chi2"] == pytest.approx(r["lr"]["chisq"], rel=REL_LR)
    assert row["df"] == r["lr"]["df"] == 2
    assert row["p_value"] == pytest.approx(r["lr"]["p"], rel=REL_P)


# ----------------------------------------------------------------------------- Model B
def _within(result) -> dict[str, dict]:
    return {row["term"]: row for row in result.within_ketamine.to_dicts()}


def test_within_ketamine_matches_R_strata_arm_site(result):
    """Ketamine routes only, strata(ARM, SITEID): enough events for the combined strata."""
    r = ref("modifiers_within_ketamine.json")
    rs = r["arm_site"]
    assert rs["nevent"] >= 10 * r["n_strata_arm_site"]
    assert_terms_match(_within(result), rs)
    wk = result.within_ketamine
    assert set(wk["strata"]) == {"ARM x SITEID"}
    assert set(wk["n"]) == {rs["n"]} and set(wk["n_events"]) == {rs["nevent"]}
    assert fit(result, "", "within_ketamine")["loglik"] == pytest.approx(rs["loglik"], rel=REL_LIK)


def test_within_ketamine_matches_R_strata_arm(data):
    """strata=None: Model B stratified by ARM only (and Model A unstratified)."""
    res = effect_modifiers(data, reference_arm="ssri", ketamine_arms=ROUTES, strata=None)
    r = ref("modifiers_within_ketamine.json")["arm"]
    assert_terms_match(_within(res), r)
    assert set(res.within_ketamine["strata"]) == {"ARM"}
    assert fit(res, "", "within_ketamine")["loglik"] == pytest.approx(r["loglik"], rel=REL_LIK)
