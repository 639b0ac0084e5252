"""Properties and hand-checked cases for ketaoutcomes.models.competing (R comparisons live in tests/reference)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.competing import (
    EVENT_FREE,
    CIFResult,
    GrayTest,
    _aj_one_group,
    cumulative_incidence,
    gray_test,
)
from ketaoutcomes.models.km import kaplan_meier

Z95 = 1.959963984540054


def _random_frame(seed: int, n: int, n_times: int = 8, n_causes: int = 2, groups: str = "ab") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "t": rng.integers(1, n_times + 1, n).astype(float),
            "s": rng.integers(0, n_causes + 1, n),
            "g": rng.choice(list(groups), n),
        }
    )


def _naive_aj(time: np.ndarray, cause: np.ndarray, n_causes: int) -> tuple[np.ndarray, np.ndarray]:
    """R's survfitci.c recursion, literally: per time, U <- U H, then the dH term, for every subject."""
    utime = np.unique(time)
    n, ns = len(time), n_causes + 1
    p = np.zeros(ns)
    p[0] = 1.0
    U = np.zeros((n, ns))
    state = np.zeros(n, dtype=int)  # 0 = event-free, k + 1 = cause k
    at_risk = np.ones(n, dtype=bool)
    P, SE = [], []
    for t in utime:
        now = time == t
        events = now & (cause >= 0)
        if events.any():
            nr = at_risk.sum()
            H = np.eye(ns)
            for k in range(n_causes):
                H[0, k + 1] = np.sum(events & (cause == k)) / nr
            H[0, 0] = 1 - events.sum() / nr
            dstate = np.where(events, cause + 1, state)
            U = U @ H
            for i in np.flatnonzero(at_risk):
                U[i] -= H[0] * p[0] / nr
                U[i, dstate[i]] += p[0] / nr
            p = p @ H
            state = dstate
        P.append(p.copy())
        SE.append(np.sqrt((U**2).sum(axis=0)))
        at_risk &= ~now
    return np.array(P), np.array(SE)


# ----------------------------------------------------------------------------- by hand
def test_cif_by_hand_four_subjects():
    """t 1 (cause 1), 2 (cause 2), 3 (censored), 4 (cause 1): S = 3/4, 1/2, 1/2, 0."""
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0, 4.0], "s": [1, 2, 0, 1]})
    res = cumulative_incidence(frame, time="t", status="s")
    assert isinstance(res, CIFResult)
    tab = {c: res.table.filter(pl.col("cause") == c) for c in ("1", "2", EVENT_FREE)}
    assert tab["1"]["cif"].to_list() == pytest.approx([0.25, 0.25, 0.25, 0.75], abs=1e-15)
    assert tab["2"]["cif"].to_list() == pytest.approx([0.0, 0.25, 0.25, 0.25], abs=1e-15)
    assert tab[EVENT_FREE]["cif"].to_list() == pytest.approx([0.75, 0.5, 0.5, 0.0], abs=1e-15)
    assert tab["1"]["n_risk"].to_list() == [4, 3, 2, 1]
    assert tab["1"]["n_event"].to_list() == [1, 0, 0, 1]
    assert tab["2"]["n_event"].to_list() == [0, 1, 0, 0]
    assert tab[EVENT_FREE]["n_event"].to_list() == [1, 1, 0, 1]
    assert tab["1"]["n_censor"].to_list() == [0, 0, 1, 0]
    assert res.table.columns == [
        "group", "cause", "time", "n_risk", "n_event", "n_censor", "cif", "se", "lower", "upper",
    ]  # fmt: skip
    assert res.table["cause"].unique(maintain_order=True).to_list() == ["1", "2", EVENT_FREE]
    # the log interval of the first cause-1 value, from its se
    row = tab["1"].row(0, named=True)
    assert row["lower"] == pytest.approx(0.25 * math.exp(-Z95 * row["se"] / 0.25), rel=1e-12)


def test_events_come_before_censorings_at_the_same_time():
    """A subject censored at t is at risk for the events at t (n_risk 3, hazard 1/3, not 1/2)."""
    frame = pl.DataFrame({"t": [1.0, 1.0, 2.0], "s": [1, 0, 2]})
    tab = cumulative_incidence(frame, time="t", status="s").table
    first = tab.filter(pl.col("cause") == "1", pl.col("time") == 1.0).row(0, named=True)
    assert first["n_risk"] == 3 and first["n_censor"] == 1
    assert first["cif"] == pytest.approx(1 / 3, rel=1e-15)


def test_tied_events_of_two_causes_are_one_step():
    frame = pl.DataFrame({"t": [1.0, 1.0, 1.0, 2.0], "s": [1, 2, 0, 1]})
    tab = cumulative_incidence(frame, time="t", status="s").table.filter(pl.col("time") == 1.0)
    got = dict(zip(tab["cause"], tab["cif"]))
    assert got == pytest.approx({"1": 0.25, "2": 0.25, EVENT_FREE: 0.5}, abs=1e-15)


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("seed", range(6))
def test_one_cause_cif_equals_one_minus_kaplan_meier(seed):
    frame = _random_frame(seed, 60, n_causes=1)
    res = cumulative_incidence(frame, time="t", status="s", group="g")
    km = kaplan_meier(frame, time="t", event="s", group="g").table
    cif = res.table.filter(pl.col("cause") == "1")
    free = res.table.filter(pl.col("cause") == EVENT_FREE)
    assert cif["time"].to_list() == km["time"].to_list()
    assert cif["group"].to_list() == km["group"].to_list()
    np.testing.assert_allclose(cif["cif"].to_numpy(), 1 - km["survival"].to_numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(free["cif"].to_numpy(), km["survival"].to_numpy(), rtol=0, atol=1e-14)
    assert cif["n_risk"].to_list() == km["n_risk"].to_list()
    assert cif["n_event"].to_list() == km["n_event"].to_list()
    # F = 1 - S, so the two influence functions are opposite and the standard errors equal
    np.testing.assert_allclose(cif["se"].to_numpy(), free["se"].to_numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("seed", range(8))
def test_cifs_and_event_free_add_up_to_one_at_every_time(seed):
    frame = _random_frame(seed, 80, n_times=12, n_causes=3, groups="abc")
    tab = cumulative_incidence(frame, time="t", status="s", group="g").table
    total = tab.group_by("group", "time").agg(pl.col("cif").sum(), pl.len())
    assert (total["len"] == 4).all()
    np.testing.assert_allclose(total["cif"].to_numpy(), 1.0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("seed", range(25))
def test_vectorised_jackknife_equals_R_recursion(seed):
    """The cumulative-sum variance against survfitci.c's per-subject recursion, on small tied data."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 15))
    time = rng.integers(1, 5, n).astype(float)
    cause = rng.integers(-1, 2, n)  # -1 = censored
    got = _aj_one_group(time, cause, 2)
    p, se = _naive_aj(time, cause, 2)
    np.testing.assert_allclose(got["cif"], p[:, 1:], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got["surv"], p[:, 0], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got["se"], se[:, 1:], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["se_surv"], se[:, 0], rtol=1e-9, atol=1e-12)
    # an exactly-zero variance (e.g. everyone had cause 1) comes out as 0, not rounding noise
    assert not np.any((got["se"] > 0) & (se[:, 1:] < 1e-12))


def test_row_order_does_not_matter():
    frame = _random_frame(3, 50, groups="abc")
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1)
    a = cumulative_incidence(frame, time="t", status="s", group="g").table
    b = cumulative_incidence(shuffled, time="t", status="s", group="g").table
    assert a.equals(b)
    g1 = gray_test(frame, "t", "s", "g", 1)
    g2 = gray_test(shuffled, "t", "s", "g", 1)
    assert g1.chi2 == pytest.approx(g2.chi2, rel=1e-12)


def test_a_hundred_thousand_rows_run_vectorised():
    frame = _random_frame(0, 100_000, n_times=2000, n_causes=2, groups="abc")
    res = cumulative_incidence(frame, time="t", status="s", group="g")
    sums = res.table.group_by("group", "time").agg(pl.col("cif").sum())["cif"].to_numpy()
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)
    assert res.n == 100_000
    assert math.isfinite(gray_test(frame, "t", "s", "g", 1).chi2)


# ----------------------------------------------------------------------------- edge cases
def test_group_without_events_and_group_of_one():
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0], "s": [0, 0, 2], "g": ["none", "none", "one"]})
    res = cumulative_incidence(frame, time="t", status="s", group="g")
    assert "group 'none' has no events: cumulative incidence stays at 0" in res.notes
    none = res.table.filter(pl.col("group") == "none")
    assert (none.filter(pl.col("cause") == "2")["cif"] == 0).all()
    assert (none.filter(pl.col("cause") == "2")["se"] == 0).all()
    assert none.filter(pl.col("cause") == "2")["lower"].is_null().all()  # log interval of 0: R's NA
    free = none.filter(pl.col("cause") == EVENT_FREE)
    assert free["cif"].to_list() == [1.0, 1.0] and free["lower"].to_list() == [1.0, 1.0]
    one = res.table.filter(pl.col("group") == "one").sort("cause")
    assert dict(zip(one["cause"], one["cif"])) == {"2": 1.0, EVENT_FREE: 0.0}
    assert (one["se"] == 0).all()


def test_causes_mapping_labels_and_unobserved_cause():
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0], "s": [1, 0, 1]})
    res = cumulative_incidence(frame, time="t", status="s", causes={1: "relapse", 2: "death"})
    assert res.causes == ("relapse", "death")
    assert "cause(s) ['death'] never observed: cumulative incidence 0" in res.notes
    assert (res.table.filter(pl.col("cause") == "death")["cif"] == 0).all()


def test_no_events_at_all():
    frame = pl.DataFrame({"t": [1.0, 2.0], "s": [0, 0]})
    res = cumulative_incidence(frame, time="t", status="s")
    assert res.causes == ()
    assert res.table["cause"].unique().to_list() == [EVENT_FREE]
    assert res.table["cif"].to_list() == [1.0, 1.0]


def test_dropped_rows_are_counted():
    frame = pl.DataFrame(
        {
            "t": [1.0, None, 3.0, float("nan"), 5.0, 6.0],
            "s": [1, 1, None, 2, 0, 2],
            "g": ["a", "a", "b", "b", None, "b"],
        }
    )
    res = cumulative_incidence(frame, time="t", status="s", group="g")
    assert res.n == 2 and res.n_dropped == 4
    assert res.notes[0] == "4 rows dropped for missing values (t: 2, s: 1, g: 1)"
    one = cumulative_incidence(frame.drop("g"), time="t", status="s")
    assert one.n_dropped == 3 and one.n == 3


def test_boolean_and_whole_float_status_are_accepted():
    a = cumulative_incidence(pl.DataFrame({"t": [1.0, 2.0], "s": [True, False]}), time="t", status="s")
    b = cumulative_incidence(pl.DataFrame({"t": [1.0, 2.0], "s": [1.0, 0.0]}), time="t", status="s")
    assert a.table.equals(b.table)


def test_result_is_frozen():
    res = cumulative_incidence(pl.DataFrame({"t": [1.0], "s": [1]}), time="t", status="s")
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.alpha = 0.1  # type: ignore[misc]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("status", "message"),
    [
        ([1, -1, 0], r"non-negative integer codes .* found \[-1.0\]"),
        ([1.0, 1.5, 0.0], r"non-negative integer codes .* found \[1.5\]"),
        (["pcm", "death", "censor"], "must hold integer codes"),
    ],
)
def test_bad_status_is_refused(status, message):
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0], "s": status})
    with pytest.raises(ValueError, match=message):
        cumulative_incidence(frame, time="t", status="s")
    with pytest.raises(ValueError, match=message):
        gray_test(frame.with_columns(g=pl.Series(["a", "b", "a"])), "t", "s", "g", 1)


def test_missing_columns_are_named():
    frame = pl.DataFrame({"t": [1.0], "s": [1]})
    with pytest.raises(KeyError, match=r"columns not in frame: \['grp'\]"):
        cumulative_incidence(frame, time="t", status="s", group="grp")
    with pytest.raises(KeyError, match=r"columns not in frame: \['time', 'grp'\]"):
        gray_test(frame, "time", "s", "grp", 1)


def test_other_bad_input_is_refused():
    frame = pl.DataFrame({"t": [1.0, 2.0], "s": [1, 2]})
    with pytest.raises(ValueError, match="negative values"):
        cumulative_incidence(frame.with_columns(t=pl.Series([-1.0, 2.0])), time="t", status="s")
    with pytest.raises(ValueError, match="conf_type must be one of"):
        cumulative_incidence(frame, time="t", status="s", conf_type="loglog")
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        cumulative_incidence(frame, time="t", status="s", alpha=1.5)
    with pytest.raises(ValueError, match=r"status codes \[2\] are not in causes \[1\]"):
        cumulative_incidence(frame, time="t", status="s", causes={1: "relapse"})
    with pytest.raises(ValueError, match="causes keys must be integer codes >= 1"):
        cumulative_incidence(frame, time="t", status="s", causes={0: "censored", 1: "a", 2: "b"})
    with pytest.raises(ValueError, match="duplicate labels"):
        cumulative_incidence(frame, time="t", status="s", causes={1: "x", 2: "x"})
    with pytest.raises(ValueError, match="reserved"):
        cumulative_incidence(frame, time="t", status="s", causes={1: EVENT_FREE, 2: "b"})
    with pytest.raises(ValueError, match="no rows to analyse"):
        cumulative_incidence(pl.DataFrame({"t": [None], "s": [1]}, schema={"t": pl.Float64, "s": pl.Int64}),
                             time="t", status="s")  # fmt: skip


# ----------------------------------------------------------------------------- at()
def test_at_is_a_right_continuous_step_function():
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0, 4.0], "s": [1, 2, 0, 1]})
    res = cumulative_incidence(frame, time="t", status="s")
    at = res.at([0.0, 1.0, 1.5, 4.0, 10.0]).filter(pl.col("cause") == "1")
    assert at["cif"].to_list() == pytest.approx([0.0, 0.25, 0.25, 0.75, 0.75], abs=1e-15)
    assert at["n_risk"].to_list() == [4, 4, 3, 1, 0]
    assert at["se"][0] == 0 and at["lower"][0] is None
    free = res.at(0.5).filter(pl.col("cause") == EVENT_FREE).row(0, named=True)
    assert (free["cif"], free["se"], free["lower"], free["upper"]) == (1.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        res.at([float("nan")])


# ----------------------------------------------------------------------------- Gray's test
def test_gray_test_returns_a_tuple_and_ignores_group_labels():
    frame = _random_frame(11, 120, n_causes=2, groups="abc")
    chi2, df, p = gray_test(frame, "t", "s", "g", 2)
    assert isinstance(gray_test(frame, "t", "s", "g", 2), GrayTest)
    assert df == 2 and 0 <= p <= 1 and chi2 >= 0
    relabelled = frame.with_columns(pl.col("g").replace({"a": "z"}))  # a becomes the last group
    assert gray_test(relabelled, "t", "s", "g", 2).chi2 == pytest.approx(chi2, rel=1e-10)


def test_gray_test_singular_variance_gives_nan():
    """A group censored before the first event contributes nothing: the 1x1 variance is 0."""
    frame = pl.DataFrame({"t": [0.5, 0.5, 1.0, 2.0, 3.0], "s": [0, 0, 1, 2, 1], "g": ["b", "b", "a", "a", "a"]})
    got = gray_test(frame, "t", "s", "g", 1)
    assert math.isnan(got.chi2) and math.isnan(got.p_value) and got.df == 1


def test_gray_test_bad_input():
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0], "s": [1, 2, 0], "g": ["a", "a", "a"]})
    with pytest.raises(ValueError, match="at least two groups"):
        gray_test(frame, "t", "s", "g", 1)
    with pytest.raises(ValueError, match="cause 3 does not occur"):
        gray_test(frame, "t", "s", "g", 3)
    with pytest.raises(ValueError, match="cause must be an integer status code >= 1"):
        gray_test(frame, "t", "s", "g", 0)
    with pytest.raises(ValueError, match="rho"):
        gray_test(frame, "t", "s", "g", 1, rho=-1)
