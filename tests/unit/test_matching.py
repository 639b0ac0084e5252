"""Nearest-neighbour propensity-score matching (ketaoutcomes.models.matching) and
``fit_propensity(weighting="matching")``.

Each test says what it is checked against: a hand-worked example (scores are set
on the logit scale, the matching distance, so every distance is read off the
test), a brute-force O(n_t * n_c) re-implementation of the stated rules, or a
known property of matching on a confounded sample. The pairs are checked against
R's MatchIt in tests/reference/test_matching_vs_R.py.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.matching import caliper_width, logit_ps, match_nearest
from ketaoutcomes.models.propensity import WEIGHTINGS, PropensityResult, fit_propensity


def _ps(logits) -> np.ndarray:
    """Propensity scores with the given logits."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=float)))


def _match(t_logits, c_logits, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Treated rows first, then controls; returns (set ids of treated, set ids of controls)."""
    ps = _ps([*t_logits, *c_logits])
    treated = np.r_[np.ones(len(t_logits), int), np.zeros(len(c_logits), int)]
    ids = match_nearest(ps, treated, **kw)
    return ids[: len(t_logits)], ids[len(t_logits):]


def _brute_force(ps: np.ndarray, treated: np.ndarray, caliper: float | None, ratio: int) -> np.ndarray:
    """The module docstring's rules, literally: for each round, for each treated unit in
    descending-PS order (stable), the nearest unused control within the caliper, the first
    in row order among equally near ones."""
    lps = np.log(ps) - np.log1p(-ps)
    width = None if caliper is None else caliper * np.std(lps, ddof=1)
    t = np.flatnonzero(treated == 1)
    c = np.flatnonzero(treated == 0)
    active = list(t[np.argsort(-lps[t], kind="stable")])
    used = np.zeros(len(ps), bool)
    sets: dict[int, list[int]] = {}
    for _ in range(ratio):
        kept = []
        for ti in active:
            avail = c[~used[c]]
            d = np.abs(lps[avail] - lps[ti])
            if width is not None:
                avail, d = avail[d <= width], d[d <= width]
            if len(avail) == 0:
                continue
            j = int(avail[np.argmin(d)])  # argmin: first minimum, i.e. first in row order
            used[j] = True
            sets.setdefault(int(ti), []).append(j)
            kept.append(ti)
        active = kept
    out = np.full(len(ps), -1)
    for k, ti in enumerate(sorted(sets)):
        out[ti] = k
        out[sets[ti]] = k
    return out


# --------------------------------------------------------------------------- hand-worked cases
def test_caliper_drops_a_treated_unit_far_from_every_control():
    """Logits: treated 0.0 and 4.0; controls 0.1, -0.15, 0.3, -0.3. SD of the six
    logits (ddof=1) = 1.62, so 0.2 SD = 0.32: the unit at 4.0 (nearest control 3.7
    away) stays unmatched; the unit at 0.0 takes 0.1. Without a caliper the unit at
    4.0, matched first (largest score), takes 0.3 and the unit at 0.0 takes 0.1."""
    t_logits, c_logits = [0.0, 4.0], [0.1, -0.15, 0.3, -0.3]
    width = caliper_width(_ps([*t_logits, *c_logits]), 0.2)
    assert width == pytest.approx(0.2 * np.std([*t_logits, *c_logits], ddof=1), rel=1e-12)
    assert 0.3 < width < 3.7

    t, c = _match(t_logits, c_logits, caliper=0.2)
    assert t.tolist() == [0, -1]
    assert c.tolist() == [0, -1, -1, -1]

    t, c = _match(t_logits, c_logits, caliper=None)
    assert t.tolist() == [0, 1]
    assert c.tolist() == [0, -1, 1, -1]


def test_a_control_is_used_once():
    """Both treated units (0.5, 0.45) are nearest to the control at 0.48; the one with
    the larger score takes it, the other gets the only control left (2.0)."""
    t, c = _match([0.5, 0.45], [0.48, 2.0], caliper=None)
    assert t.tolist() == [0, 1] and c.tolist() == [0, 1]
    ids = np.r_[t, c]
    assert all(np.sum(ids == k) == 2 for k in (0, 1))


def test_descending_score_order_decides_who_gets_a_contested_control():
    """Treated at 0.0 (row 0) and 0.2 (row 1); controls at 0.15 and -1.0. Both are
    nearest to 0.15 (0.15 and 0.05 away). In row order row 0 would take it; in
    descending-score order row 1 goes first and takes it, row 0 gets -1.0."""
    t, c = _match([0.0, 0.2], [0.15, -1.0], caliper=None)
    assert c[0] == t[1] and c[1] == t[0]
    # With a caliper (0.2 SD of [0, 0.2, 0.15, -1] = 0.11) row 0 loses out entirely.
    t, c = _match([0.0, 0.2], [0.15, -1.0], caliper=0.2)
    assert t[0] == -1 and c[0] == t[1] and c[1] == -1


def test_with_every_pair_inside_the_caliper_the_caliper_changes_nothing():
    """Three treated, five controls, each treated unit 0.01 from a control, the
    others far; SD of the logits ~1.4, so 0.2 SD ~0.28 covers every chosen pair.
    Without a caliper every treated unit is matched (more controls than treated)."""
    t_logits, c_logits = [-1.0, 0.5, 2.0], [2.01, -3.0, 0.49, -0.99, 1.3]
    t0, c0 = _match(t_logits, c_logits, caliper=None)
    t1, c1 = _match(t_logits, c_logits, caliper=0.2)
    assert (t0 >= 0).all() and t0.tolist() == t1.tolist() and c0.tolist() == c1.tolist()
    # set ids follow the row order of the treated unit: rows 0, 1, 2 -> 0, 1, 2
    assert t0.tolist() == [0, 1, 2] and c0.tolist() == [2, -1, 1, 0, -1]


def _opposite_scores() -> tuple[float, float]:
    """Scores a < 0.5 and 1 - a whose logits are exactly opposite (and the logit of 0.5 exactly 0)."""
    assert logit_ps(np.array([0.5]))[0] == 0.0
    for a in (0.25, 0.125, 0.375, 0.0625, 0.1875, 0.3125, 0.4375):
        lo, hi = logit_ps(np.array([a, 1.0 - a]))
        if lo == -hi:
            return a, 1.0 - a
    raise AssertionError("no pair of dyadic scores has exactly opposite logits on this machine")


def test_ties_go_to_the_first_control_in_row_order():
    """MatchIt's which_min over eligible controls in data order: among controls with
    the same score, and among controls equally far on both sides, row order decides."""
    # two controls with the treated unit's own score: the first one (row 1)
    ps = _ps([0.0, 0.0, 0.0])
    assert match_nearest(ps, np.array([0, 1, 0]), caliper=None).tolist() == [0, 0, -1]
    # equally far below and above the treated unit's score (0.5: logit 0): the earlier row. The tie
    # must be exact in the logits as this machine's libm computes them (logistic(-0.5) came back as
    # -0.5000000000000002 on one machine and -0.5 on another), so the pair is scores a and 1 - a
    # (both exact) whose logits are found exactly opposite here
    below, above = _opposite_scores()
    ps = np.array([0.5, above, below])
    assert match_nearest(ps, np.array([1, 0, 0]), caliper=None).tolist() == [0, 0, -1]
    ps = np.array([0.5, below, above])
    assert match_nearest(ps, np.array([1, 0, 0]), caliper=None).tolist() == [0, 0, -1]
    # treated with equal scores go in row order: row 0 takes the control at 0.1
    ps = _ps([0.0, 0.0, 0.1, 5.0])
    assert match_nearest(ps, np.array([1, 1, 0, 0]), caliper=None).tolist() == [0, 1, 0, 1]


def test_one_to_k_matching_goes_in_rounds():
    """Treated 1.0 and 0.9; controls 0.96, 0.85, 0.5, 2.0. Round 1: 1.0 takes 0.96,
    0.9 takes 0.85. Round 2: 1.0 takes 0.5 (0.5 away; 2.0 is 1.0 away), 0.9 takes
    2.0. (Giving 1.0 both its controls first would have taken 0.96 and 0.85.)"""
    t, c = _match([1.0, 0.9], [0.96, 0.85, 0.5, 2.0], caliper=None, ratio=2)
    assert t.tolist() == [0, 1] and c.tolist() == [0, 1, 0, 1]
    # a treated unit that finds no second control within the caliper keeps its first
    t, c = _match([1.0, 0.9], [0.96, 0.85, 0.5, 2.0, -3.0], caliper=0.1, ratio=2)
    assert t.tolist() == [0, 1] and c.tolist() == [0, 1, -1, -1, -1]


def test_no_treated_or_no_controls_match_nobody():
    assert match_nearest(_ps([0.1, 0.2]), np.array([1, 1])).tolist() == [-1, -1]
    assert match_nearest(_ps([0.1, 0.2]), np.array([0, 0])).tolist() == [-1, -1]
    assert match_nearest(np.array([]), np.array([], dtype=int)).tolist() == []
    assert match_nearest(_ps([0.1, 0.2]), np.array([True, False]), caliper=None).tolist() == [0, 0]


def test_bad_input_raises():
    ps, tr = _ps([0.0, 1.0]), np.array([1, 0])
    with pytest.raises(ValueError, match="strictly between"):
        match_nearest(np.array([0.5, 1.0]), tr)
    with pytest.raises(ValueError, match="strictly between"):
        match_nearest(np.array([0.5, np.nan]), tr)
    with pytest.raises(ValueError, match="0 .comparator. and 1"):
        match_nearest(ps, np.array([1, 2]))
    with pytest.raises(ValueError, match="equal length"):
        match_nearest(ps, np.array([1, 0, 0]))
    with pytest.raises(ValueError, match="caliper"):
        match_nearest(ps, tr, caliper=0.0)
    with pytest.raises(ValueError, match="ratio"):
        match_nearest(ps, tr, ratio=0)
    with pytest.raises(ValueError, match="ratio"):
        match_nearest(ps, tr, ratio=1.5)


# --------------------------------------------------------------------------- brute force, speed
@pytest.mark.parametrize("ratio", [1, 2, 3])
def test_match_nearest_equals_a_brute_force_implementation_of_the_rules(ratio):
    """Random samples, continuous and heavily tied scores, several calipers: the
    union-find implementation gives exactly the brute-force sets."""
    rng = np.random.default_rng(2024 + ratio)
    for it in range(150):
        n = int(rng.integers(2, 70))
        x = rng.normal(size=n)
        if it % 3 == 1:
            x = np.round(x, 1)
        elif it % 3 == 2:
            x = rng.integers(0, 4, size=n).astype(float)
        ps = _ps(x * rng.uniform(0.5, 3.0))
        treated = (rng.uniform(size=n) < rng.uniform(0.1, 0.9)).astype(int)
        for caliper in (None, 0.2, 0.05, 1.0):
            got = match_nearest(ps, treated, caliper=caliper, ratio=ratio)
            np.testing.assert_array_equal(got, _brute_force(ps, treated, caliper, ratio))


def test_match_nearest_is_fast_for_10k_treated_and_50k_controls():
    """About 0.1 s (0.2 s for 1:3) on one core; the bound leaves room for a busy machine."""
    rng = np.random.default_rng(7)
    n_t, n_c = 10_000, 50_000
    x = np.r_[rng.normal(0.5, 1.0, n_t), rng.normal(0.0, 1.0, n_c)]
    ps = _ps(-1.6 + x)
    treated = np.r_[np.ones(n_t, int), np.zeros(n_c, int)]
    start = time.perf_counter()
    ids = match_nearest(ps, treated, caliper=0.2)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0
    n_sets = int((ids[:n_t] >= 0).sum())
    assert n_sets > 9_900 and np.bincount(ids[ids >= 0]).tolist() == [2] * n_sets


# --------------------------------------------------------------------------- fit_propensity
def _confounded(seed: int = 5, n: int = 1200, beta: float = 1.0) -> pl.DataFrame:
    """X ~ N(0, 1), G in {a, b}; logit P(target) = -1.5 + beta X + 0.6 [G=b]: about
    three comparators per target, targets with high X."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    g = rng.choice(["a", "b"], size=n)
    p = 1.0 / (1.0 + np.exp(-(-1.5 + beta * x + 0.6 * (g == "b"))))
    return pl.DataFrame({
        "USUBJID": [f"P{i:05d}" for i in range(n)],
        "ARM": np.where(rng.uniform(size=n) < p, "ketamine_iv", "ssri"),
        "X": x,
        "G": g,
    })


def _fit(frame: pl.DataFrame, **kw) -> PropensityResult:
    return fit_propensity(frame, target="ketamine_iv", comparator="ssri", covariates=["X", "G"],
                          categorical=["G"], weighting="matching", truncation=None, **kw)


def test_matching_is_a_weighting_option():
    assert "matching" in WEIGHTINGS
    with pytest.raises(ValueError, match="weighting must be one of"):
        fit_propensity(_confounded(), target="ketamine_iv", comparator="ssri", covariates=["X"],
                       weighting="stratification")
    with pytest.raises(ValueError, match="caliper"):
        _fit(_confounded(), caliper=-0.1)


def test_matching_improves_balance_on_a_confounded_sample():
    """Known property: matching on the PS moves the target and comparator means of
    the model's covariates together; the SMD denominator stays the full-sample SD."""
    r = _fit(_confounded())
    assert r.weighting == "matching" and r.caliper == 0.2 and r.truncation is None
    x = r.balance.filter(pl.col("covariate") == "X").row(0, named=True)
    assert x["smd_before"] > 0.5
    assert abs(x["smd_after"]) < 0.1 < x["smd_before"]
    assert r.max_abs_smd_after is not None and r.max_abs_smd_after < 0.1
    assert r.max_abs_smd_after < r.balance["smd_before"].abs().max()
    assert r.diagnostics_passed, r.gate_reasons
    # the "after" means are plain means over the matched rows (computed by hand here)
    frame = _confounded().join(r.scores.select("USUBJID", "weight"), on="USUBJID")
    matched = frame.filter(pl.col("weight").is_not_null())
    mt = matched.filter(pl.col("ARM") == "ketamine_iv")["X"].mean()
    mc = matched.filter(pl.col("ARM") == "ssri")["X"].mean()
    assert x["mean_target_after"] == pytest.approx(mt, rel=1e-12)
    assert x["mean_comparator_after"] == pytest.approx(mc, rel=1e-12)
    assert x["smd_after"] == pytest.approx((mt - mc) / x["sd_pooled"], rel=1e-10)


def test_unmatched_rows_have_null_weights_and_match_sets_pair_one_target_with_one_comparator():
    r = _fit(_confounded(beta=1.5))
    s = r.scores
    assert s.schema["match_set"] == pl.Int64 and s.schema["weight"] == pl.Float64
    assert s["weight"].is_nan().sum() == 0
    # null weight <=> null match set; matched weights are exactly 1
    assert s.filter(pl.col("weight").is_null())["match_set"].null_count() == s["weight"].null_count() > 0
    assert set(s.filter(pl.col("weight").is_not_null())["weight"].to_list()) == {1.0}
    assert s.filter(pl.col("weight").is_not_null())["match_set"].null_count() == 0
    # each set: one target, one comparator
    per_set = s.drop_nulls("match_set").group_by("match_set").agg(
        pl.len().alias("n"), pl.col("treated").sum().cast(pl.Int64).alias("n_target"))
    assert per_set["n"].to_list() == [2] * per_set.height
    assert per_set["n_target"].to_list() == [1] * per_set.height
    # counts, ESS and the note on the unmatched
    n_unmatched = r.n_target - r.n_matched_target
    assert r.n_matched_target == r.n_matched_comparator == per_set.height
    assert (r.ess_target, r.ess_comparator) == (float(per_set.height), float(per_set.height))
    assert n_unmatched > 0
    assert any(f"{n_unmatched} of {r.n_target} ketamine_iv patients unmatched" in note for note in r.notes)
    # the pairs are match_nearest's on the fitted scores
    ids = match_nearest(s["ps"].to_numpy(), s["treated"].to_numpy(), caliper=0.2)
    np.testing.assert_array_equal(s["match_set"].fill_null(-1).to_numpy(), ids)


def test_without_a_caliper_every_target_patient_is_matched():
    r = _fit(_confounded(), caliper=None)
    assert r.n_comparator > r.n_target == r.n_matched_target == r.n_matched_comparator
    assert r.caliper is None
    assert not any("unmatched" in note for note in r.notes)
    assert any("(no caliper)" in note for note in r.notes)


def test_gate_fails_with_fewer_than_two_matched_pairs():
    """A caliper of 1e-9 SD leaves no pair on continuous scores."""
    r = _fit(_confounded(n=300), caliper=1e-9)
    assert r.n_matched_target == 0 and r.scores["weight"].null_count() == r.scores.height
    assert not r.diagnostics_passed
    assert any(reason.startswith("fewer than 2 matched pairs (0)") for reason in r.gate_reasons)
    assert any("SMD after matching" in reason for reason in r.gate_reasons)


def test_matching_leaves_iptw_and_overlap_results_without_match_columns():
    frame = _confounded(n=400)
    for weighting in ("iptw", "overlap"):
        r = fit_propensity(frame, target="ketamine_iv", comparator="ssri", covariates=["X", "G"],
                           categorical=["G"], weighting=weighting)
        assert "match_set" not in r.scores.columns
        assert (r.n_matched_target, r.n_matched_comparator, r.caliper) == (0, 0, None)
        assert r.scores["weight"].null_count() == 0


def test_logit_ps_is_the_matching_distance():
    np.testing.assert_allclose(logit_ps(_ps([-2.0, 0.0, 3.0])), [-2.0, 0.0, 3.0], atol=1e-12)
