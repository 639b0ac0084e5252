"""Small hand-checked cases for the survival models (ketaoutcomes.models.km, .logrank, .cox, .concordance;
R comparisons live in tests/reference)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.derive import cnsr_to_event
from ketaoutcomes.models import CoxResult, KMResult, cox_ph, kaplan_meier, logrank_test
from ketaoutcomes.models.concordance import concordance_counts, harrell_c, linear_predictor

Z95 = 1.959963984540054


# ----------------------------------------------------------------------------- cnsr_to_event
def test_cnsr_to_event_series_keeps_nulls():
    cnsr = pl.Series("CNSR", [0, 1, 2, 0, None])
    assert cnsr_to_event(cnsr).to_list() == [1, 0, 0, 1, None]
    assert cnsr_to_event(cnsr).dtype == pl.Int8


def test_cnsr_to_event_numpy_list_and_scalar():
    np.testing.assert_array_equal(cnsr_to_event(np.array([0, 1, 3])), [1, 0, 0])
    np.testing.assert_array_equal(cnsr_to_event([1, 0]), [0, 1])
    assert cnsr_to_event(0) == 1
    assert cnsr_to_event(2) == 0


def test_cnsr_to_event_expr_in_a_frame():
    frame = pl.DataFrame({"CNSR": [0, 1, 0, 4]})
    out = frame.with_columns(event=cnsr_to_event(pl.col("CNSR")))
    assert out["event"].to_list() == [1, 0, 1, 0]


@pytest.mark.parametrize("bad", [[-1, 0], [0.5, 1]])
def test_cnsr_to_event_rejects_negative_or_fractional(bad):
    with pytest.raises(ValueError, match="CNSR"):
        cnsr_to_event(np.array(bad))
    with pytest.raises(ValueError, match="CNSR"):
        cnsr_to_event(pl.Series(bad))


def test_event_column_must_be_one_zero():
    """An R-style 1/2 status (or an unconverted CNSR > 1) is refused, not guessed at."""
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0], "status": [1, 2, 2]})
    with pytest.raises(ValueError, match="1 = event, 0 = censored"):
        kaplan_meier(frame, time="t", event="status")


def test_boolean_event_column_is_accepted():
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0], "e": [True, False, True]})
    assert kaplan_meier(frame, time="t", event="e").table["n_event"].to_list() == [1, 0, 1]


# ----------------------------------------------------------------------------- Kaplan-Meier by hand
FIVE = pl.DataFrame({"t": [2.0, 3.0, 3.0, 5.0, 8.0], "e": [1, 1, 0, 1, 0]})


def test_km_five_rows_by_hand():
    """t=2: 5 at risk, 1 dies -> 4/5; t=3: 4 at risk, 1 dies, 1 censored -> 0.8*3/4 = 0.6;
    t=5: 2 at risk, 1 dies -> 0.3; t=8: censored, stays 0.3.
    Greenwood on the log scale: 1/(5*4), + 1/(4*3), + 1/(2*1)."""
    res = kaplan_meier(FIVE, time="t", event="e")
    tab = res.table
    assert tab["group"].to_list() == ["all"] * 4
    assert tab["time"].to_list() == [2.0, 3.0, 5.0, 8.0]
    assert tab["n_risk"].to_list() == [5, 4, 2, 1]
    assert tab["n_event"].to_list() == [1, 1, 1, 0]
    assert tab["n_censor"].to_list() == [0, 1, 0, 1]
    np.testing.assert_allclose(tab["survival"].to_numpy(), [0.8, 0.6, 0.3, 0.3], rtol=1e-14)
    var = np.cumsum([1 / 20, 1 / 12, 1 / 2, 0])
    surv = np.array([0.8, 0.6, 0.3, 0.3])
    np.testing.assert_allclose(tab["lower"].to_numpy(), surv * np.exp(-Z95 * np.sqrt(var)), rtol=1e-12)
    np.testing.assert_allclose(tab["upper"].to_numpy(), np.minimum(surv * np.exp(Z95 * np.sqrt(var)), 1), rtol=1e-12)
    # median: first time S <= 0.5 is 5; the lower band first drops below 0.5 at t=3
    # (0.6 * exp(-1.96 * sqrt(1/20 + 1/12)) = 0.293; at t=2 it is 0.516); the upper band never does.
    assert res.medians.rows() == [("all", 5, 3, 5.0, 3.0, None)]


def test_km_survival_zero_gives_null_log_interval():
    frame = pl.DataFrame({"t": [1.0, 2.0], "e": [1, 1]})
    tab = kaplan_meier(frame, time="t", event="e").table
    assert tab["survival"].to_list() == [0.5, 0.0]
    assert tab["lower"][1] is None and tab["upper"][1] is None


def test_km_group_without_events_gets_a_note():
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0, 4.0], "e": [1, 1, 0, 0], "arm": ["a", "a", "b", "b"]})
    res = kaplan_meier(frame, time="t", event="e", group="arm")
    b = res.table.filter(pl.col("group") == "b")
    assert b["survival"].to_list() == [1.0, 1.0]
    assert res.medians.filter(pl.col("group") == "b")["median"].to_list() == [None]
    assert any("'b' has no events" in n for n in res.notes)


def test_km_counts_rows_dropped_for_missing_values():
    frame = pl.DataFrame({"t": [1.0, None, 3.0, float("nan")], "e": [1, 1, None, 0]})
    res = kaplan_meier(frame, time="t", event="e")
    assert res.n_dropped == 3
    assert res.table["time"].to_list() == [1.0]
    assert res.notes[0].startswith("3 rows dropped for missing values")


def test_km_rejects_unknown_conf_type():
    with pytest.raises(ValueError, match="conf_type"):
        kaplan_meier(FIVE, time="t", event="e", conf_type="logit")


def test_km_result_is_frozen():
    res = kaplan_meier(FIVE, time="t", event="e")
    assert isinstance(res, KMResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.alpha = 0.1  # type: ignore[misc]


# ----------------------------------------------------------------------------- log-rank
def test_logrank_two_groups_by_hand():
    """a: events at 1 and 3; b: event at 2, censored at 4.
    t=1: 4 at risk (2 a), 1 event -> E_a = 1/2; t=2: 3 at risk (1 a) -> E_a = 1/3;
    t=3: 2 at risk (1 a) -> E_a = 1/2. Variance: 1/4 + 2/9 + 1/4."""
    frame = pl.DataFrame({"t": [1.0, 3.0, 2.0, 4.0], "e": [1, 1, 1, 0], "g": ["a", "a", "b", "b"]})
    res = logrank_test(frame, time="t", event="e", group="g")
    e_a = 0.5 + 1 / 3 + 0.5
    assert res.groups["observed"].to_list() == [2.0, 1.0]
    np.testing.assert_allclose(res.groups["expected"].to_numpy(), [e_a, 3 - e_a], rtol=1e-14)
    var = 0.25 + 2 / 9 + 0.25
    assert res.chi2 == pytest.approx((2 - e_a) ** 2 / var, rel=1e-12)
    assert res.df == 1


def test_logrank_with_a_group_without_events():
    frame = pl.DataFrame({"t": [1.0, 2.0, 3.0, 4.0, 5.0], "e": [1, 1, 0, 0, 0], "g": [0, 0, 1, 1, 1]})
    res = logrank_test(frame, time="t", event="e", group="g")
    assert math.isfinite(res.chi2) and res.chi2 > 0
    assert res.groups["observed"].to_list() == [2.0, 0.0]
    assert any("'1' has no events" in n for n in res.notes)


def test_logrank_needs_two_groups():
    with pytest.raises(ValueError, match="two groups"):
        logrank_test(FIVE.with_columns(g=pl.lit("x")), time="t", event="e", group="g")


# ----------------------------------------------------------------------------- concordance
def _brute_force_counts(stop, status, score, entry=None, strata=None):
    """O(n^2) reference for concordance_counts, straight from the definition."""
    n = len(stop)
    entry = np.full(n, -np.inf) if entry is None else entry
    strata = np.zeros(n) if strata is None else strata
    out = dict.fromkeys(("concordant", "discordant", "tied_x", "tied_y", "tied_xy"), 0.0)
    for i, j in itertools.permutations(range(n), 2):
        if status[i] != 1 or strata[i] != strata[j]:
            continue
        t = stop[i]
        if not (entry[j] < t <= stop[j]):
            continue
        if stop[j] == t and status[j] == 1:
            if i < j:  # each tied event pair once
                out["tied_xy" if score[i] == score[j] else "tied_y"] += 1
            continue
        if score[i] > score[j]:
            out["concordant"] += 1
        elif score[i] < score[j]:
            out["discordant"] += 1
        else:
            out["tied_x"] += 1
    return out


def test_concordance_small_cases_by_hand():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    d = np.array([1, 1, 1, 1])
    perfect = concordance_counts(t, d, np.array([4.0, 3.0, 2.0, 1.0]))
    assert perfect["concordant"] == 6 and harrell_c(perfect) == 1.0
    tied = concordance_counts(t, d, np.array([4.0, 3.0, 3.0, 1.0]))
    assert (tied["concordant"], tied["tied_x"]) == (5, 1)
    assert harrell_c(tied) == pytest.approx(5.5 / 6)  # a tie in the predictor counts 1/2
    # censored at the event time counts as the longer survivor (comparable)
    same_time = concordance_counts(np.array([2.0, 2.0]), np.array([1, 0]), np.array([1.0, 0.0]))
    assert same_time["concordant"] == 1
    # two events at the same time are not comparable
    both = concordance_counts(np.array([2.0, 2.0]), np.array([1, 1]), np.array([1.0, 0.0]))
    assert (both["concordant"], both["discordant"], both["tied_y"]) == (0, 0, 1)
    # a row entering exactly at the event time is not at risk then (entry < t)
    late = concordance_counts(np.array([2.0, 5.0]), np.array([1, 0]), np.array([1.0, 0.0]), entry=np.array([0.0, 2.0]))
    assert late["concordant"] == 0


@pytest.mark.parametrize("seed", range(6))
def test_concordance_counts_equal_brute_force(seed):
    """The vectorised counting equals the O(n^2) definition with ties everywhere,
    strata and delayed entry."""
    rng = np.random.default_rng(seed)
    n = 60
    stop = rng.integers(1, 12, n).astype(float)
    status = rng.integers(0, 2, n)
    score = rng.integers(0, 6, n).astype(float)
    entry = np.floor(rng.uniform(0, 1, n) * stop) if seed % 2 else None
    strata = rng.integers(0, 3, n) if seed >= 3 else None
    got = concordance_counts(stop, status, score, entry=entry, strata=strata)
    assert got == _brute_force_counts(stop, status, score, entry=entry, strata=strata)


def test_linear_predictor_identical_rows_are_identical():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(7, 5))
    X = base[rng.integers(0, 7, 1001)]
    lp = linear_predictor(X, rng.normal(size=5))
    assert len(np.unique(lp)) == len(np.unique(X, axis=0))


# ----------------------------------------------------------------------------- Cox
def _cox_frame(seed: int = 0, n: int = 120) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    arm = rng.choice(["placebo", "ketamine", "esketamine"], n)
    rate = np.exp(0.5 * x + np.where(arm == "ketamine", -0.5, 0.0))
    t = np.round(rng.exponential(1 / rate) * 10) + 1
    c = rng.uniform(1, 30, n).round() + 1
    return pl.DataFrame({"time": np.minimum(t, c), "event": (t <= c).astype(int), "x": x, "arm": arm})


def test_cox_categorical_reference_level_naming():
    res = cox_ph(_cox_frame(), time="time", event="event", covariates=["x", "arm"], categorical={"arm": "placebo"})
    assert isinstance(res, CoxResult)
    assert res.summary["term"].to_list() == ["x", "arm[esketamine]", "arm[ketamine]"]
    assert res.summary.columns == ["term", "coef", "hr", "se", "z", "p_value", "hr_lower", "hr_upper"]
    assert res.converged and res.notes == ()


def test_cox_categorical_numeric_levels_match_as_strings():
    frame = _cox_frame().with_columns(
        level=pl.col("arm").replace_strict({"placebo": 1.0, "ketamine": 0.0, "esketamine": 2.0})
    )
    for ref in (1, 1.0, "1"):
        res = cox_ph(frame, time="time", event="event", covariates=["level"], categorical={"level": ref})
        assert res.summary["term"].to_list() == ["level[0]", "level[2]"]


def test_cox_categorical_errors():
    frame = _cox_frame()
    with pytest.raises(ValueError, match="reference level 'sham'"):
        cox_ph(frame, time="time", event="event", covariates=["arm"], categorical={"arm": "sham"})
    with pytest.raises(ValueError, match="not in covariates"):
        cox_ph(frame, time="time", event="event", covariates=["x"], categorical={"arm": "placebo"})
    with pytest.raises(ValueError, match="not numeric"):
        cox_ph(frame, time="time", event="event", covariates=["arm"])


def test_cox_dummy_coding_equals_manual_dummies():
    frame = _cox_frame().with_columns(
        k=(pl.col("arm") == "ketamine").cast(pl.Int8), e=(pl.col("arm") == "esketamine").cast(pl.Int8)
    )
    a = cox_ph(frame, time="time", event="event", covariates=["x", "arm"], categorical={"arm": "placebo"})
    b = cox_ph(frame, time="time", event="event", covariates=["x", "e", "k"])
    np.testing.assert_allclose(a.summary["coef"].to_numpy(), b.summary["coef"].to_numpy(), rtol=1e-12)


def test_cox_missing_values_dropped_and_counted():
    frame = _cox_frame().with_row_index()
    frame = frame.with_columns(
        x=pl.when(pl.col("index").is_in([0, 1])).then(None).otherwise(pl.col("x")),
        arm=pl.when(pl.col("index").is_in([1, 2])).then(None).otherwise(pl.col("arm")),
    )
    res = cox_ph(frame, time="time", event="event", covariates=["x", "arm"], categorical={"arm": "placebo"})
    assert res.n_dropped == 3
    assert res.n == 117
    assert res.notes == ("3 rows dropped for missing values (x: 2, arm: 2)",)
    clean = cox_ph(frame.slice(3), time="time", event="event", covariates=["x", "arm"], categorical={"arm": "placebo"})
    np.testing.assert_allclose(res.summary["coef"].to_numpy(), clean.summary["coef"].to_numpy(), rtol=1e-12)


def test_cox_one_missing_column_note_wording():
    frame = _cox_frame().with_columns(x=pl.when(pl.int_range(pl.len()) == 5).then(float("nan")).otherwise(pl.col("x")))
    res = cox_ph(frame, time="time", event="event", covariates=["x"])
    assert res.notes == ("1 row dropped for missing x",)


def test_cox_arm_without_events_gives_note_and_null_row():
    """esketamine has no events: its HR is 0 in the limit. The row is null, a note
    says why, and x is estimated as in the fit without those rows (the limit of R's fit)."""
    frame = _cox_frame().with_columns(event=pl.when(pl.col("arm") == "esketamine").then(0).otherwise(pl.col("event")))
    res = cox_ph(frame, time="time", event="event", covariates=["x", "arm"], categorical={"arm": "placebo"})
    esk = res.summary.filter(pl.col("term") == "arm[esketamine]").row(0, named=True)
    assert esk["coef"] is None and esk["hr"] is None
    assert any("arm[esketamine] has no events" in n for n in res.notes)
    assert res.converged
    assert res.n == 120  # all analysed rows are counted
    rest = cox_ph(
        frame.filter(pl.col("arm") != "esketamine"),
        time="time",
        event="event",
        covariates=["x", "arm"],
        categorical={"arm": "placebo"},
    )
    np.testing.assert_allclose(
        res.summary.filter(pl.col("term") != "arm[esketamine]")["coef"].to_numpy(),
        rest.summary["coef"].to_numpy(),
        rtol=1e-10,
    )
    assert res.lr_df == 3
    assert math.isfinite(res.lr_chi2) and res.score_chi2 is not None and math.isfinite(res.score_chi2)


def test_cox_numeric_arm_without_events():
    frame = _cox_frame().with_columns(treated=(pl.col("arm") == "ketamine").cast(pl.Int64))
    frame = frame.with_columns(event=pl.when(pl.col("treated") == 1).then(0).otherwise(pl.col("event")))
    res = cox_ph(frame, time="time", event="event", covariates=["x", "treated"])
    assert res.summary.filter(pl.col("term") == "treated")["coef"].to_list() == [None]
    assert any("treated = 1 has no events" in n for n in res.notes)
    assert res.summary.filter(pl.col("term") == "x")["coef"][0] is not None


def test_cox_reference_level_without_events():
    frame = _cox_frame().with_columns(event=pl.when(pl.col("arm") == "placebo").then(0).otherwise(pl.col("event")))
    res = cox_ph(frame, time="time", event="event", covariates=["x", "arm"], categorical={"arm": "placebo"})
    assert res.summary.filter(pl.col("term").str.starts_with("arm"))["coef"].to_list() == [None, None]
    assert any("reference level 'placebo' of arm has no events" in n for n in res.notes)
    assert res.summary.filter(pl.col("term") == "x")["coef"][0] is not None


def test_cox_no_events_at_all_is_a_result_not_a_crash():
    frame = _cox_frame().with_columns(event=pl.lit(0))
    res = cox_ph(frame, time="time", event="event", covariates=["x"])
    assert not res.converged
    assert res.summary["coef"].to_list() == [None]
    assert "no events" in res.notes[-1]


def test_cox_stratum_without_events_is_noted():
    frame = _cox_frame().with_columns(
        site=pl.when(pl.int_range(pl.len()) < 100).then(pl.lit("s1")).otherwise(pl.lit("s2"))
    )
    frame = frame.with_columns(event=pl.when(pl.col("site") == "s2").then(0).otherwise(pl.col("event")))
    res = cox_ph(frame, time="time", event="event", covariates=["x"], strata="site")
    assert "1 stratum dropped for having no events" in res.notes
    only = cox_ph(frame.filter(pl.col("site") == "s1"), time="time", event="event", covariates=["x"])
    assert res.summary["coef"][0] == pytest.approx(only.summary["coef"][0], rel=1e-12)


def test_cox_entry_must_precede_time():
    frame = _cox_frame().with_columns(start=pl.col("time"))
    with pytest.raises(ValueError, match="entry < time"):
        cox_ph(frame, time="time", event="event", covariates=["x"], entry="start")


def test_cox_entry_zero_equals_no_entry():
    frame = _cox_frame().with_columns(start=pl.lit(0.0))
    a = cox_ph(frame, time="time", event="event", covariates=["x"], entry="start")
    b = cox_ph(frame, time="time", event="event", covariates=["x"])
    assert a.summary["coef"][0] == pytest.approx(b.summary["coef"][0], rel=1e-12)
    assert a.concordance == pytest.approx(b.concordance, rel=1e-15)


def test_cox_constant_covariate_is_noted():
    frame = _cox_frame().with_columns(one=pl.lit(1.0))
    res = cox_ph(frame, time="time", event="event", covariates=["x", "one"])
    assert res.summary.filter(pl.col("term") == "one")["coef"].to_list() == [None]
    assert any("one is constant" in n for n in res.notes)


def test_cox_alpha_sets_interval_width():
    frame = _cox_frame()
    r95 = cox_ph(frame, time="time", event="event", covariates=["x"])
    r90 = cox_ph(frame, time="time", event="event", covariates=["x"], alpha=0.10)
    s = r95.summary.row(0, named=True)
    assert s["hr_lower"] == pytest.approx(math.exp(s["coef"] - Z95 * s["se"]), rel=1e-12)
    assert r90.summary["hr_lower"][0] > s["hr_lower"] and r90.alpha == 0.10


def test_cox_rejects_unknown_ties():
    with pytest.raises(ValueError, match="ties"):
        cox_ph(_cox_frame(), time="time", event="event", covariates=["x"], ties="exact")


def test_logrank_group_never_at_risk_is_left_out_like_R():
    """Group c is censored before the first event (expected 0): R drops it from the
    statistic and the df; R 4.2.2 survdiff gives chisq 0.4864865 here."""
    frame = pl.DataFrame(
        {"t": [1.0, 2.0, 3.0, 4.0, 5.0, 0.5], "e": [1, 1, 0, 1, 0, 0], "g": ["a", "b", "a", "b", "a", "c"]}
    )
    res = logrank_test(frame, time="t", event="e", group="g")
    assert res.df == 1
    assert res.chi2 == pytest.approx(0.4864865, abs=5e-8)
    assert res.groups["expected"].to_list()[2] == 0.0


def test_cox_term_table_gives_each_terms_variable_and_level():
    frame = pl.DataFrame({
        "t": [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10], "e": [1, 0, 1, 1, 0, 1, 1, 0, 1, 1],
        "arm": ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"], "x": [0.1, 0.5, 0.2, 0.9, 0.3, 0.4, 0.8, 0.6, 0.7, 0.0],
    })
    res = cox_ph(frame, time="t", event="e", covariates=["arm", "x"], categorical={"arm": "a"})
    assert res.term_table().rows() == [("arm[b]", "arm", "b"), ("arm[c]", "arm", "c"), ("x", "x", None)]
    assert res.term_table()["term"].to_list() == res.summary["term"].to_list()
