"""E-values (VanderWeele & Ding 2017), checked against the paper's worked examples and R's EValue package."""

from __future__ import annotations

import math

import pytest

from ketaoutcomes.models.evalues import evalue, evalue_of_rr, hr_to_rr_common


def test_evalue_matches_vanderweele_ding_2017_examples():
    """The paper's examples (also EValue::evalues.RR's documentation): breastfeeding and infection,
    RR 3.9 (1.8 to 8.7) -> E-values 7.26 and 3.0; leukemia, RR 0.80 (0.71 to 0.91) -> 1.81 and 1.43."""
    e = evalue(3.9, 1.8, 8.7)
    assert round(e.point, 2) == 7.26 and round(e.ci, 2) == 3.00 and not e.converted
    e = evalue(0.80, 0.71, 0.91)
    assert round(e.point, 2) == 1.81 and round(e.ci, 2) == 1.43
    assert evalue_of_rr(1 / 0.80) == pytest.approx(evalue_of_rr(0.80))  # symmetry, as the package shows


def test_interval_reaching_the_null_has_evalue_one():
    assert evalue(1.3, 0.9, 1.8).ci == 1.0
    assert evalue(0.7, 0.4, 1.2).ci == 1.0
    assert evalue(1.0, 0.8, 1.25).point == 1.0
    assert evalue(0.5, 0.3, math.inf).ci == 1.0  # an interval unbounded above reaches the null
    assert evalue(2.0).ci is None  # no interval, no E-value for it


def test_hazard_ratio_of_a_common_outcome_is_converted_as_evalues_hr():
    """EValue::evalues.HR(0.56, 0.46, 0.69, rare = FALSE): each value through
    (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR)), then evalues.RR. Computed here by hand from the formula
    (R's EValue is not packaged for this machine): RR = 0.6701, E = 2.35, CI limit 0.69 -> RR 0.7735, E 1.91."""
    rr = (1 - 0.5 ** math.sqrt(0.56)) / (1 - 0.5 ** math.sqrt(1 / 0.56))
    assert hr_to_rr_common(0.56) == pytest.approx(rr, rel=1e-15)
    e = evalue(0.56, 0.46, 0.69, scale="hazard_ratio", rare=False)
    assert e.converted and e.rr == pytest.approx(rr) and e.rr_upper == pytest.approx(hr_to_rr_common(0.69))
    assert e.point == pytest.approx(1 / rr + math.sqrt(1 / rr * (1 / rr - 1)))
    assert round(e.rr, 4) == 0.6701 and round(e.point, 2) == 2.35 and round(e.ci, 2) == 1.91
    # the rare-outcome shortcut treats the HR as an RR: a larger E-value, the overstatement the
    # conversion avoids for response and remission (common outcomes)
    rare = evalue(0.56, 0.46, 0.69, scale="hazard_ratio", rare=True)
    assert not rare.converted and rare.point > e.point and round(rare.point, 2) == 2.97
    assert hr_to_rr_common(1.0) == 1.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="rare=True or rare=False"):
        evalue(2.0, 1.5, 2.5, scale="hazard_ratio")
    with pytest.raises(ValueError, match="finite and > 0"):
        evalue(0.0)
    with pytest.raises(ValueError, match="lower 2.5 > upper 1.5"):
        evalue(2.0, 2.5, 1.5)
    with pytest.raises(ValueError, match="scale"):
        evalue(2.0, scale="odds_ratio")
