"""ketaoutcomes.models.matching.match_nearest against R's MatchIt (4.5.1).

R output in ``results/matching_*`` and the data in ``data/matching_*data.csv`` are
written by ``matching_reference.R`` (its header says how to regenerate); R is not
needed to run these tests. Both data sets are simulated in R; ``ps`` is the
fitted ``glm(treat ~ x1 + x2, binomial)`` and ``lps = log(ps) - log1p(-ps)`` the
distance MatchIt was given:

* ``matching_data.csv``: 1000 units, continuous scores, strong confounding; the
  0.2 SD caliper leaves 86 of 329 treated units unmatched.
* ``matching_ties_data.csv``: 400 units, 12 distinct scores, so the tie rules
  (treated order among equal scores, the first control in data order among
  equally near ones) decide most matches.

Every case calls ``matchit(treat ~ x1 + x2, data, method = "nearest", distance =
lps, m.order = "largest", replace = FALSE, ...)``. The ``*_mahvars`` cases add
``mahvars = ~ lps``, which makes MatchIt 4.5.1 run its original nearest-neighbour
routine (nearest by the Mahalanobis distance of lps alone, i.e. by |lps_i -
lps_j|; caliper and order on ``distance``). Without ``mahvars``, MatchIt 4.5.1-4.5.3
use a routine whose ``abs()`` truncates differences to whole numbers (MatchIt
issue #163); ``test_R_MatchIt_4_5_1_default_route_truncates_distances`` shows that
its pairs are exactly those of that truncation, which match_nearest does not copy.

Comparisons are exact: matched sets are sets of rows, and the caliper width is a
double computed the same way in both (tolerance 1e-12 relative for it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.matching import caliper_width, logit_ps, match_nearest

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DATA = {"main": HERE / "data" / "matching_data.csv", "ties": HERE / "data" / "matching_ties_data.csv"}
CASES = json.loads((RESULTS / "matching_cases.json").read_text())
VERSIONS = json.loads((RESULTS / "matching_versions.json").read_text())


def _data(name: str) -> pl.DataFrame:
    return pl.read_csv(DATA[name], null_values=["", "NA"])


def _r_sets(case: str) -> dict[int, set[int]]:
    """match.matrix as {treated row: {control rows}} (0-based), matched treated only."""
    pairs = pl.read_csv(RESULTS / f"matching_{case}_pairs.csv", null_values=["", "NA"])
    sets: dict[int, set[int]] = {}
    for treated, _slot, control in pairs.iter_rows():
        if control is not None:
            sets.setdefault(treated - 1, set()).add(control - 1)
    return sets


def _our_sets(ids: np.ndarray, treated: np.ndarray) -> dict[int, set[int]]:
    return {
        int(t): set(np.flatnonzero((treated == 0) & (ids == ids[t])).tolist())
        for t in np.flatnonzero((treated == 1) & (ids >= 0))
    }


def _run(case: str) -> tuple[pl.DataFrame, np.ndarray]:
    spec = CASES[case]
    data = _data(spec["data"])
    ids = match_nearest(data["ps"].to_numpy(), data["treat"].to_numpy(), caliper=spec["caliper_sd"],
                        ratio=spec["ratio"])
    return data, ids


# --------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("name", ["main", "ties"])
def test_reference_data_distance_is_the_logit_of_ps(name):
    data = _data(name)
    np.testing.assert_allclose(logit_ps(data["ps"].to_numpy()), data["lps"].to_numpy(), rtol=1e-14, atol=1e-15)
    assert data["row"].to_list() == list(range(1, data.height + 1))
    if name == "ties":
        assert data["ps"].n_unique() == 12


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c]["caliper_sd"] is not None])
def test_caliper_width_matches_R_MatchIt_std_caliper(case):
    """MatchIt: caliper * sd(distance) over all units (both arms)."""
    spec = CASES[case]
    ps = _data(spec["data"])["ps"].to_numpy()
    assert caliper_width(ps, spec["caliper_sd"]) == pytest.approx(spec["caliper_width"], rel=1e-12)


# --------------------------------------------------------------------------- pairs
def _assert_same_sets(case: str) -> None:
    data, ids = _run(case)
    treated = data["treat"].to_numpy()
    ours, theirs = _our_sets(ids, treated), _r_sets(case)
    assert ours.keys() == theirs.keys(), "different treated units matched"
    different = [t for t in theirs if ours[t] != theirs[t]]
    assert not different, f"{len(different)} treated units matched to other controls, e.g. row {different[0] + 1}"
    spec = CASES[case]
    assert len(ours) == spec["n_treated_matched"]
    assert sum(len(v) for v in ours.values()) == spec["n_control_matched"]
    # unmatched rows of both arms are -1, exactly those with MatchIt weight 0
    weights = pl.read_csv(RESULTS / f"matching_{case}.csv", null_values=["", "NA"])["weight"].to_numpy()
    np.testing.assert_array_equal(ids >= 0, weights > 0)


def test_matching_matches_R_MatchIt_nearest_caliper():
    """1:1, caliper 0.2 SD: the caliper drops treated units at the top of the PS range."""
    spec = CASES["main_caliper_mahvars"]
    assert spec["n_treated_matched"] < spec["n_treated"]
    _assert_same_sets("main_caliper_mahvars")


def test_matching_matches_R_MatchIt_nearest_no_caliper():
    """1:1 without caliper: every treated unit matched (more controls than treated)."""
    spec = CASES["main_nocaliper_mahvars"]
    assert spec["n_treated_matched"] == spec["n_treated"] < spec["n_control"]
    _assert_same_sets("main_nocaliper_mahvars")


def test_matching_matches_R_MatchIt_nearest_1_to_2_caliper():
    """1:2 with caliper: same matched sets; MatchIt's first slot is the 1:1 matching
    (round 1 of the rounds is the 1:1 algorithm)."""
    _assert_same_sets("main_caliper_ratio2_mahvars")
    pairs = pl.read_csv(RESULTS / "matching_main_caliper_ratio2_mahvars_pairs.csv", null_values=["", "NA"])
    first = {t - 1: {c - 1} for t, slot, c in pairs.iter_rows() if slot == 1 and c is not None}
    assert first == _r_sets("main_caliper_mahvars")
    # some treated units got only one control within the caliper
    assert any(len(v) == 1 for v in _r_sets("main_caliper_ratio2_mahvars").values())


def test_matching_matches_R_MatchIt_nearest_caliper_with_tied_scores():
    _assert_same_sets("ties_caliper_mahvars")


def test_matching_matches_R_MatchIt_nearest_no_caliper_with_tied_scores():
    _assert_same_sets("ties_nocaliper_mahvars")


@pytest.mark.parametrize("case", [c for c in CASES if c.endswith("_mahvars")])
def test_match_sets_partition_rows_as_R_MatchIt_subclass(case):
    """Same partition as MatchIt's subclass (MatchIt numbers the sets in another order)."""
    _, ids = _run(case)
    sub = pl.read_csv(RESULTS / f"matching_{case}.csv", null_values=["", "NA"])["subclass"].to_numpy()
    ours = {frozenset(np.flatnonzero(ids == k).tolist()) for k in np.unique(ids[ids >= 0])}
    theirs = {frozenset(np.flatnonzero(sub == k).tolist()) for k in np.unique(sub[~np.isnan(sub)])}
    assert ours == theirs
    # our ids: 0, 1, ... by the row order of each set's treated unit
    treated = _data(CASES[case]["data"])["treat"].to_numpy()
    assert ids[(treated == 1) & (ids >= 0)].tolist() == list(range(len(ours)))


# --------------------------------------------------------------------------- MatchIt 4.5.1's default route
def _truncating_abs_matches(lps: np.ndarray, treated: np.ndarray, width: float) -> dict[int, set[int]]:
    """MatchIt 4.5.1's nn_matchC_vec, transcribed: all units sorted by distance (stable),
    treated units in descending order; from each treated unit, scan left and right for the
    nearest unused control, stopping when |difference| > caliper; take the left one when its
    |difference| <= the right one's. C's integer abs() makes every |difference| here
    trunc(|difference|)."""
    def iabs(x: float) -> int:
        return abs(math.trunc(x))

    n = len(lps)
    order = np.argsort(lps, kind="stable")
    pos = np.empty(n, dtype=int)
    pos[order] = np.arange(n)
    dist, is_t = lps[order], treated[order]
    free = is_t == 0
    t = np.flatnonzero(treated == 1)
    sets: dict[int, set[int]] = {}
    for ti in t[np.argsort(-lps[t], kind="stable")]:
        ii = pos[ti]

        def scan(step: int) -> int:
            k = ii + step
            while 0 <= k < n:
                if is_t[k] or not free[k]:
                    k += step
                    continue
                return -1 if iabs(dist[ii] - dist[k]) > width else k
            return -1

        kl, kr = scan(-1), scan(1)
        if kl >= 0 and kr >= 0:
            k = kl if iabs(dist[kl] - dist[ii]) <= iabs(dist[kr] - dist[ii]) else kr
        elif kl >= 0 or kr >= 0:
            k = max(kl, kr)
        else:
            continue
        free[k] = False
        sets[int(ti)] = {int(order[k])}
    return sets


@pytest.mark.skipif(VERSIONS["MatchIt"] not in {"4.5.1", "4.5.2", "4.5.3"},
                    reason="the truncating abs() is in MatchIt 4.5.1-4.5.3 only")
def test_R_MatchIt_4_5_1_default_route_truncates_distances():
    """Without mahvars, MatchIt 4.5.1 matched pairs up to ~1 logit apart despite a 0.33
    caliper; its pairs are exactly those of the transcription with truncated |differences|,
    and not ours (which are the mahvars route's, tested above)."""
    spec = CASES["main_caliper_default"]
    data = _data("main")
    lps, treated = data["lps"].to_numpy(), data["treat"].to_numpy()
    theirs = _r_sets("main_caliper_default")
    assert _truncating_abs_matches(lps, treated, spec["caliper_width"]) == theirs
    gaps = [abs(lps[t] - lps[c]) for t, cs in theirs.items() for c in cs]
    assert max(gaps) > spec["caliper_width"]
    _, ids = _run("main_caliper_mahvars")
    assert _our_sets(ids, treated) != theirs
