"""ketaoutcomes.models.contrasts' interval of a difference of shares against base R.

R output in ``results/risk_difference.json`` (printed in ``results/risk_difference_reference.log``) is
written by ``risk_difference_reference.R``; R is not needed to run these tests. Wilson's interval is
R's ``prop.test(x, n, correct = FALSE)$conf.int``; the MOVER interval of ``p1 - p2`` is Newcombe's
(1998) method 10 (his example 56/70 - 48/80 is printed as 0.0524 to 0.3339), with a correlation r as
Zou & Donner (2008), computed in R from those Wilson intervals. Tolerance 1e-12 relative (closed forms).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ketaoutcomes.models.contrasts import mover_interval, risk_difference_interval, wilson_interval

R = json.loads((Path(__file__).parent / "results" / "risk_difference.json").read_text())


@pytest.mark.parametrize("case", R["wilson"], ids=lambda c: f"{c['x']}of{c['n']}-{c['conf']:.2f}")
def test_wilson_interval_matches_R_prop_test(case):
    lo, hi = wilson_interval(case["x"] / case["n"], case["n"], alpha=1 - case["conf"])
    assert (lo, hi) == pytest.approx(tuple(case["ci"]), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("case", R["mover"], ids=lambda c: f"{c['x1']}of{c['n1']}-{c['x2']}of{c['n2']}-r{c['r']}")
def test_mover_interval_matches_R_newcombe_and_zou_donner(case):
    p1, p2 = case["x1"] / case["n1"], case["x2"] / case["n2"]
    ci = mover_interval(p1, wilson_interval(p1, case["n1"]), p2, wilson_interval(p2, case["n2"]), case["r"])
    assert ci == pytest.approx(tuple(case["ci"]), rel=1e-12)


def _with_sd(rng: np.random.Generator, mean: float, sd: float, other: np.ndarray | None = None) -> np.ndarray:
    """200 replicates with exactly this mean and SD (and, given ``other``, exactly uncorrelated with it)."""
    z = rng.normal(size=200)
    if other is not None:
        o = other - other.mean()
        z = z - (z - z.mean()) @ o / (o @ o) * o
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + sd * z


def test_bootstrap_score_interval_is_newcombes_when_the_replicates_vary_as_binomial_shares():
    """Replicates whose SD is the binomial one (so the effective sizes are the arms' sizes) and whose
    arms are uncorrelated give Newcombe's interval of R: 9/154 - 18/461."""
    case = next(c for c in R["mover"] if c["x1"] == 9 and c["r"] == 0)
    p1, p2 = 9 / 154, 18 / 461
    rng = np.random.default_rng(5)
    a = _with_sd(rng, p1, (p1 * (1 - p1) / 154) ** 0.5)
    b = _with_sd(rng, p2, (p2 * (1 - p2) / 461) ** 0.5, other=a)
    lo, hi, sd, used = risk_difference_interval(p1, p2, a, b, 1.0, 1.0)
    assert (lo, hi) == pytest.approx(tuple(case["ci"]), rel=1e-9) and used == 200
    assert sd == pytest.approx(np.std(a - b, ddof=1))


def test_a_share_without_spread_falls_back_on_the_arms_effective_size():
    """A share of 0 in every replicate (no event by the day) has no SD: Wilson's interval at the
    Kish size given (here 25) stands in, as R's 0/25; unusable replicates are left out."""
    case = next(c for c in R["mover"] if c["x1"] == 0)
    p2 = 3 / 150
    rng = np.random.default_rng(6)
    b = _with_sd(rng, p2, (p2 * (1 - p2) / 150) ** 0.5)
    a = np.zeros(200)
    lo, hi, _, used = risk_difference_interval(0.0, p2, np.r_[a, np.nan], np.r_[b, 0.5], 25.0, 150.0)
    assert (lo, hi) == pytest.approx(tuple(case["ci"]), rel=1e-9) and used == 200
