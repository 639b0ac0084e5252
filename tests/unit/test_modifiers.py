"""Effect modifiers of the time to response (ketaoutcomes.models.modifiers).

The fits themselves are held against R in tests/reference/test_modifiers_vs_R.py;
here: recovery of a known benzodiazepine x ketamine interaction, a null
interaction, course_dose by hand, and how missing / unknown / small cells are
handled and said.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.modifiers import course_dose, effect_modifiers

ROUTES = ["ketamine_iv", "esketamine_intranasal"]


def simulate(
    n: int, seed: int, *, hr_no_benzo: float = 4.0, hr_benzo: float = 2.0, n_sites: int = 4
) -> pl.DataFrame:
    """A TTRESP-like model frame: both routes have HR ``hr_no_benzo`` vs ssri without a
    benzodiazepine and ``hr_benzo`` with one; no sex or age interaction; whole-day times."""
    rng = np.random.default_rng(seed)
    arm = rng.choice(["ssri", *ROUTES], n, p=[0.4, 0.35, 0.25])
    keta = arm != "ssri"
    sex = rng.choice(["F", "M", "U"], n, p=[0.55, 0.43, 0.02])
    age = rng.integers(18, 81, n).astype(float)
    benzo = rng.random(n) < 0.35
    conssri = keta & (rng.random(n) < 0.4)
    base = rng.normal(32, 6, n).round()
    prior = rng.poisson(1.5, n).astype(float)
    site = rng.choice([f"S{i:02d}" for i in range(n_sites)], n)
    doserel = np.exp(rng.normal(0, 0.2, n))
    lp = keta * np.where(benzo, math.log(hr_benzo), math.log(hr_no_benzo)) - 0.03 * (base - 32) - 0.1 * prior
    t = rng.exponential(1 / (0.01 * np.exp(lp)))
    c = rng.uniform(20, 120, n)
    return pl.DataFrame({
        "USUBJID": [f"P{i:05d}" for i in range(n)], "COURSEID": [f"C{i:05d}" for i in range(n)],
        "PARAMCD": "TTRESP", "ARM": arm, "SITEID": site, "SEX": sex, "AGE": age, "PRIORFAIL": prior,
        "BASE": base, "CONSSRI": conssri, "CONBENZO": benzo, "DOSEREL": doserel, "ANLFL": "Y",
        "AVAL": np.ceil(np.minimum(t, c)), "EVENT": (t <= c).astype(np.int8),
    })  # fmt: skip


@pytest.fixture(scope="module")
def big() -> pl.DataFrame:
    return simulate(5000, seed=20261121)


@pytest.fixture(scope="module")
def big_result(big):
    return effect_modifiers(big, reference_arm="ssri", ketamine_arms=ROUTES)


# ----------------------------------------------------------------------------- recovery
def test_benzodiazepine_interaction_is_recovered(big_result):
    """True HR of ketamine vs SSRI: 4 without a benzodiazepine, 2 with one."""
    sub = big_result.subgroups.filter(pl.col("modifier") == "CONBENZO")
    assert sub.height == 4
    for row in sub.to_dicts():
        truth = 4.0 if row["level"] == "N" else 2.0
        assert row["hr_lower"] < truth < row["hr_upper"], row
        assert row["n_events"] >= 5 and row["n_events_reference"] >= 5
    test = big_result.interactions.filter(pl.col("modifier") == "CONBENZO").to_dicts()[0]
    assert test["df"] == 2  # two routes x (2 levels - 1)
    assert test["p_value"] < 1e-3
    assert test["lr_chi2"] == pytest.approx(2 * (test["loglik_interaction"] - test["loglik_main"]))


def test_null_interactions_are_not_significant(big_result):
    """No sex or age interaction in the truth: the LR tests do not reject (p not tiny)."""
    tests = {r["modifier"]: r for r in big_result.interactions.to_dicts()}
    assert tests["SEX"]["df"] == 2 and tests["AGE"]["df"] == 2
    assert tests["SEX"]["p_value"] > 0.01
    assert tests["AGE"]["p_value"] > 0.01
    # ketamine's HR does not depend on sex or age: 4 or 2 by benzo, ~4 * 0.65 + 2 * 0.35 overall
    sub = big_result.subgroups.filter(pl.col("modifier").is_in(["SEX", "AGE"]))
    assert sub["hr"].is_between(2.3, 4.3).all()


def test_age_refits_are_one_model(big_result):
    """Centring at 30, 50, 70 reparameterises the same model: identical likelihood."""
    fits = big_result.fits.filter((pl.col("modifier") == "AGE") & pl.col("kind").str.starts_with("interaction"))
    assert fits.height == 3
    ll = fits["loglik"].to_list()
    assert max(ll) - min(ll) < 1e-7
    slopes = ["ARM[ketamine_iv]:(AGE-50)/10", "ARM[esketamine_intranasal]:(AGE-50)/10"]
    assert fits["terms"][1].split(", ")[2:4] == slopes


def test_within_ketamine_terms_and_scales(big_result):
    wk = big_result.within_ketamine
    assert wk["term"].to_list() == ["DOSEREL/0.25", "CONSSRI", "CONBENZO", "AGE/10", "SEX[M]", "BASE", "PRIORFAIL"]
    assert set(wk["strata"]) == {"ARM x SITEID"}  # 8 strata, far more than 10 events each
    row = {r["term"]: r for r in wk.to_dicts()}
    # within ketamine, benzodiazepine halves the hazard (4 -> 2); dose has no effect. Within 3.29 SE
    # (99.9%): this seed's CONBENZO estimate is 1.8 SE from the truth (unbiased over seeds: mean
    # log HR -0.6937 vs -0.6931 in 12 seeds), a 95% interval would miss it by chance.
    assert abs(row["CONBENZO"]["coef"] - math.log(0.5)) < 3.29 * row["CONBENZO"]["se"]
    assert abs(row["DOSEREL/0.25"]["coef"]) < 3.29 * row["DOSEREL/0.25"]["se"]
    assert "25%" in row["DOSEREL/0.25"]["scale"]
    assert row["AGE/10"]["scale"] == "per 10 years of age"
    assert big_result.notes[0].startswith("Exploratory secondary analysis: 3 interaction tests")
    assert "not adjusted for multiplicity" in big_result.notes[0]


# ----------------------------------------------------------------------------- missing, U, other rows
def test_null_conbenzo_and_sex_u_are_left_out_and_counted():
    small = simulate(1500, seed=11)
    frame = small.with_columns(
        pl.when(pl.int_range(pl.len()) % 50 == 0).then(None).otherwise(pl.col("CONBENZO")).alias("CONBENZO"),
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("N")).otherwise(pl.col("ANLFL")).alias("ANLFL"),
        pl.when(pl.int_range(pl.len()) % 97 == 1).then(None).otherwise(pl.col("SEX")).alias("SEX"),
    )
    frame = pl.concat([frame, small.head(7).with_columns(pl.lit("ketamine_oral").alias("ARM"))])
    res = effect_modifiers(frame, reference_arm="ssri", ketamine_arms=ROUTES)
    analysed = frame.filter((pl.col("ANLFL") == "Y") & pl.col("ARM").is_in(["ssri", *ROUTES]))
    n_u = analysed.filter(pl.col("SEX") == "U").height
    n_null = analysed["CONBENZO"].null_count()
    n_sex_null = analysed["SEX"].null_count()
    assert n_u > 0 and n_null > 0 and n_sex_null > 0
    assert "1 row with ANLFL other than 'Y' left out" in res.notes
    assert "7 rows of other arms left out (ketamine_oral: 7)" in res.notes
    n_out = n_u + n_sex_null
    assert f"SEX: {n_out} rows left out of the sex model (SEX = U: {n_u}, SEX missing: {n_sex_null})" in res.notes
    assert f"CONBENZO: {n_null} rows with CONBENZO missing left out of the benzodiazepine model" in res.notes
    tests = {r["modifier"]: r for r in res.interactions.to_dicts()}
    assert tests["SEX"]["n"] == analysed.height - n_u - n_sex_null
    assert tests["CONBENZO"]["n"] == analysed.height - n_null
    assert tests["AGE"]["n"] == analysed.height  # neither matters for the age model
    assert f"SEX = U: {n_u}" in tests["SEX"]["note"]
    keta = analysed.filter(pl.col("ARM") != "ssri")
    k_u = keta.filter(pl.col("SEX") == "U").height
    known = keta.filter(pl.col("SEX").is_null() | (pl.col("SEX") != "U"))
    k_bz, k_sex = known["CONBENZO"].null_count(), known["SEX"].null_count()
    k_any = known.filter(pl.col("CONBENZO").is_null() | pl.col("SEX").is_null()).height
    assert f"within ketamine: {k_u} rows with SEX = U left out (too few to estimate)" in res.notes
    assert (f"within ketamine: {k_any} rows dropped for missing values (CONBENZO: {k_bz}, SEX: {k_sex})"
            in res.notes)  # null SEX is missing, not U
    assert res.within_ketamine["n"][0] == keta.height - k_u - k_any


def test_small_cells_get_nulls_and_notes_not_a_crash():
    """A route with 2 events among benzodiazepine users; ages with no data; many small sites."""
    frame = simulate(1200, seed=7, n_sites=40)
    few = simulate(60, seed=8).with_columns(
        pl.lit("ketamine_im").alias("ARM"),
        pl.when(pl.col("CONBENZO") & (pl.int_range(pl.len()) > 10)).then(0).otherwise(pl.col("EVENT"))
        .cast(pl.Int8).alias("EVENT"),
        (pl.lit("X") + pl.col("USUBJID")).alias("USUBJID"),
    )  # fmt: skip
    frame = pl.concat([frame, few])
    im_benzo = few.filter(pl.col("CONBENZO"))
    assert 0 < int(im_benzo["EVENT"].sum()) < 5
    res = effect_modifiers(frame, reference_arm="ssri", ketamine_arms=[*ROUTES, "ketamine_im"], age_at=(30, 50, 99))
    row = res.subgroups.filter(
        (pl.col("modifier") == "CONBENZO") & (pl.col("level") == "Y") & (pl.col("arm") == "ketamine_im")
    ).to_dicts()[0]
    assert row["hr"] is None and row["p_value"] is None
    assert row["n"] == im_benzo.height and row["n_events"] == int(im_benzo["EVENT"].sum())
    assert any(
        n.startswith("CONBENZO = Y, ketamine_im:") and "(< 5); hazard ratio not estimated" in n for n in res.notes
    )
    other = res.subgroups.filter((pl.col("modifier") == "CONBENZO") & (pl.col("arm") != "ketamine_im"))
    assert other["hr"].null_count() == 0
    # interaction: iv, esk in both levels + im in N only, vs iv, esk, im: 2 + 2 + 1 + 1 - (3 + 1) = 2 df
    assert res.interactions.filter(pl.col("modifier") == "CONBENZO")["df"].item() == 2
    # age 99: nobody within 10 years: not reported (extrapolation)
    at99 = res.subgroups.filter((pl.col("modifier") == "AGE") & (pl.col("level") == "99"))
    assert at99["hr"].null_count() == at99.height == 3
    assert any(n.startswith("AGE = 99, ketamine_iv:") and "extrapolation" in n for n in res.notes)
    # 40 sites x 3 routes: too few events per ARM x SITEID stratum -> ARM only, said
    assert set(res.within_ketamine["strata"]) == {"ARM"}
    assert any("strata ARM only" in n and "SITEID not adjusted for" in n for n in res.notes)


def test_reference_arm_too_few_events_in_a_level():
    frame = simulate(1500, seed=3)
    frame = frame.with_columns(
        pl.when((pl.col("ARM") == "ssri") & (pl.col("SEX") == "M")).then(0).otherwise(pl.col("EVENT"))
        .cast(pl.Int8).alias("EVENT")
    )  # fmt: skip
    res = effect_modifiers(frame, reference_arm="ssri", ketamine_arms=ROUTES)
    sub = res.subgroups.filter(pl.col("modifier") == "SEX")
    assert sub.filter(pl.col("level") == "M")["hr"].null_count() == 2
    assert sub.filter(pl.col("level") == "F")["hr"].null_count() == 0
    test = res.interactions.filter(pl.col("modifier") == "SEX").to_dicts()[0]
    assert test["p_value"] is None and test["df"] is None
    assert "no interaction test" in test["note"]
    assert any(n.startswith("SEX = M: the reference arm ssri has 0 events") for n in res.notes)


def test_arguments_are_checked(big):
    with pytest.raises(ValueError, match="also in ketamine_arms"):
        effect_modifiers(big, reference_arm="ssri", ketamine_arms=["ssri", "ketamine_iv"])
    with pytest.raises(KeyError, match="course_dose"):
        effect_modifiers(big.drop("DOSEREL"), reference_arm="ssri", ketamine_arms=ROUTES)
    two = big.with_columns(pl.when(pl.col("EVENT") == 1).then(pl.lit("TTREM")).otherwise("PARAMCD").alias("PARAMCD"))
    with pytest.raises(ValueError, match="several endpoints"):
        effect_modifiers(two, reference_arm="ssri", ketamine_arms=ROUTES)


# ----------------------------------------------------------------------------- course_dose
def test_course_dose_by_hand():
    ts = datetime(2024, 1, 1)
    s = [  # course, dose_mg, dose_mg_per_kg, phase
        ("K1", 35, 0.5, "induction"), ("K1", 35, 0.5, "induction"), ("K1", 70, 1.0, "induction"),
        ("K1", 105, 1.5, "maintenance"),  # not an induction dose
        ("K2", 35, 0.5, "induction"), ("K2", 35, 0.5, "induction"),
        ("K3", 60, 0.75, "induction"),
        ("K4", 40, 0.5, "induction"), ("K4", 60, None, "induction"),  # weight-based dose not always recorded
        ("E1", 56, None, "induction"), ("E1", 84, None, "induction"),
        ("E2", 56, None, "induction"),
        ("S1", 50, None, "induction"), ("S1", 100, None, "induction"),
        ("S2", 50, None, "induction"),
        ("M1", 35, 0.5, "maintenance"),  # maintenance only
    ]  # fmt: skip
    sessions = pl.DataFrame(
        {"session_id": [f"s{i}" for i in range(len(s))], "course_id": [r[0] for r in s], "session_ts": ts,
         "dose_mg": [float(r[1]) for r in s], "dose_mg_per_kg": [r[2] for r in s], "phase": [r[3] for r in s]},
        schema_overrides={"dose_mg_per_kg": pl.Float64},
    )  # fmt: skip
    courses = pl.DataFrame({
        "course_id": ["K1", "K2", "K3", "K4", "E1", "E2", "S1", "S2", "M1", "K0"],
        "arm": ["ketamine_iv"] * 4 + ["esketamine_intranasal"] * 2 + ["ssri"] * 2 + ["ketamine_iv"] * 2,
    })
    out = course_dose(sessions, courses)
    assert out.columns == ["COURSEID", "NDOSE", "DOSE", "DOSEUNIT", "DOSEREL"]
    got = {r["COURSEID"]: r for r in out.to_dicts()}
    assert out["COURSEID"].to_list() == courses["course_id"].to_list()
    k1 = 2 / 3  # (0.5 + 0.5 + 1.0) / 3 mg/kg; the iv mg/kg median is K1's (0.5, 0.667, 0.75)
    expected = {
        "K1": (3, k1, "mg/kg", 1.0), "K2": (2, 0.5, "mg/kg", 0.5 / k1), "K3": (1, 0.75, "mg/kg", 0.75 / k1),
        "K4": (2, 50.0, "mg", 1.0),  # mg (alone in iv x mg)
        "E1": (2, 70.0, "mg", 70 / 63), "E2": (1, 56.0, "mg", 56 / 63),
        "S1": (2, 75.0, "mg", 75 / 62.5), "S2": (1, 50.0, "mg", 50 / 62.5),
        "M1": (0, None, None, None), "K0": (0, None, None, None),
    }  # fmt: skip
    for course, (ndose, dose, unit, rel) in expected.items():
        r = got[course]
        assert r["NDOSE"] == ndose, course
        assert r["DOSEUNIT"] == unit, course
        if dose is None:
            assert r["DOSE"] is None and r["DOSEREL"] is None, course
        else:
            assert r["DOSE"] == pytest.approx(dose, rel=1e-12), course
            assert r["DOSEREL"] == pytest.approx(rel, rel=1e-12), course
    with pytest.raises(KeyError, match="phase"):
        course_dose(sessions.drop("phase"), courses)
