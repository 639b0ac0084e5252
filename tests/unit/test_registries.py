"""The registries as a trial writes them: keys with capitals and hyphens (TAU, BDI-II), arms that
are not drugs (no dose range, no drug class), and keys that differ only in case refused."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from ketaoutcomes.registries import KEY_RULE, Arm, Instrument, load_registries


def test_an_arm_that_is_not_a_drug_needs_only_its_key_and_label():
    tau = Arm(arm="TAU", label="Treatment as usual")
    assert not tau.is_drug and (tau.dose_min_mg, tau.dose_max_mg, tau.drug_class) == (None, None, "")
    assert (tau.is_ketamine, tau.session_based) == (False, False)
    assert load_registries().arms["ssri"].is_drug  # every shipped arm is a drug arm, with its range


@pytest.mark.parametrize(("fields", "message"), [
    ({"dose_min_mg": 10}, "dose_min_mg and dose_max_mg go together"),
    ({"dose_max_mg": 10}, "dose_min_mg and dose_max_mg go together"),
    ({"dose_max_mg_per_kg": 1}, "dose_max_mg_per_kg needs a dose range"),
    ({"is_ketamine": True}, "a ketamine arm (is_ketamine true) is a drug arm"),
    ({"dose_min_mg": 20, "dose_max_mg": 10}, "dose_min_mg is above dose_max_mg"),
])
def test_a_dose_range_that_cannot_be_right_is_refused(fields, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        Arm(arm="x", label="X", **fields)


@pytest.mark.parametrize("key", ["TAU", "BDI-II", "ketamine_iv", "QIDS_SR16", "a" * 40])
def test_keys_may_hold_capitals_digits_underscores_and_hyphens(key):
    assert Arm(arm=key, label="x").arm == key
    assert Instrument(instrument=key, label="x", rater="self", score_min=0, score_max=10, response_reduction=0.5,
                      remission_max=2, relapse_min=5).instrument == key


@pytest.mark.parametrize("key", ["2nd_line", "-TAU", "TAU usual", "TAU/CBT", "a" * 41, ""])
def test_other_keys_are_refused(key):
    with pytest.raises(ValidationError):
        Arm(arm=key, label="x")


def test_a_bad_key_in_an_export_registry_says_the_rule(tmp_path):
    (tmp_path / "instruments.csv").write_text(
        "instrument,label,rater,score_min,score_max,response_reduction,remission_max,relapse_min\n"
        "BDI II,Beck,self,0,63,0.5,13,20\n")
    with pytest.raises(ValueError) as info:
        load_registries(tmp_path)
    assert str(info.value) == f"{tmp_path / 'instruments.csv'}, row 1: column instrument: a key is {KEY_RULE}"


@pytest.mark.parametrize(("text", "message"), [
    ("arm,label\nTAU,A\ntau,B\n", "row 2: column arm: differs from the arm of row 1 only in case, - or _"),
    ("arm,label\nKetamine-IV,A\n", "an arm key differs from one in force already only in case, - or _"),
])
def test_keys_that_differ_only_in_case_hyphens_or_underscores_are_refused(tmp_path, text, message):
    """Within one file, and against the registry in force: which would a course mean?"""
    (tmp_path / "arms.csv").write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_registries(tmp_path)


def test_an_export_registry_adds_a_non_drug_arm_and_a_hyphenated_instrument(tmp_path):
    (tmp_path / "arms.csv").write_text("arm,label\npsychotherapy,Psychotherapy\nTAU,Treatment as usual\n")
    (tmp_path / "instruments.csv").write_text(
        "instrument,label,rater,score_min,score_max,response_reduction,remission_max,relapse_min\n"
        "BDI-II,Beck Depression Inventory-II,self,0,63,0.5,13,20\n")
    reg = load_registries(tmp_path)
    assert {"psychotherapy", "TAU", "ssri"} <= set(reg.arms) and "BDI-II" in reg.instruments
    frame = reg.arms_frame()
    assert frame.filter(frame["arm"] == "TAU")["dose_min_mg"].to_list() == [None]
    assert reg.fingerprint != load_registries().fingerprint
