"""Refitting a pair's propensity model on draws of its rows (ketaoutcomes.models.ps_fit.PropensityDraws,
the bootstrap of the primary contrasts) against fitting it on the frame of the drawn rows
(ketaoutcomes.models.propensity.fit_propensity, the primary comparison's function), with missing
covariates, rare levels, levels a draw leaves out, constant columns, each weighting and both models:
the same weights bit for bit where the rows are refitted (matching, the unpenalised model), and to
rounding (1e-9, relative) where the ridge model is fitted on the draw's distinct rows with their counts
(frequency weights: against the ridge fit of the rows repeated, too) from the whole pair's fit (a
start: against the fit from the empty model, too)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.propensity import fit_propensity, propensity_draws
from ketaoutcomes.models.ps_design import CodedCovariates
from ketaoutcomes.models.ps_model import fit_ps_model

COVS = ["AGE", "SEX", "SITE", "FLAG"]


def _pair(n: int = 400, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(45, 12, n).round()
    site = rng.choice(["s1", "s2", "s3", "s4"], n, p=[0.5, 0.3, 0.185, 0.015])  # s4: rare (left out)
    treat = rng.random(n) < 1 / (1 + np.exp(-(0.03 * (age - 45) + 0.8 * (site == "s2"))))
    frame = pl.DataFrame({
        "USUBJID": [f"P{i:04d}" for i in range(n)], "ARM": np.where(treat, "route", "ref"),
        "AGE": age, "SEX": rng.choice(["F", "M", "U"], n, p=[0.55, 0.44, 0.01]), "SITE": site,
        "FLAG": rng.random(n) < 0.3,
    })
    # missing covariates: dropped by both paths
    return frame.with_columns(pl.when(pl.int_range(n) % 37 == 5).then(None).otherwise(pl.col("AGE")).alias("AGE"),
                              pl.when(pl.int_range(n) % 53 == 7).then(None).otherwise(pl.col("SEX")).alias("SEX"))


def _frame_weights(frame: pl.DataFrame, rows: np.ndarray, **options) -> np.ndarray:
    """The draw's weights the way the bootstrap took them before: the drawn rows as a frame, ids by position."""
    draw = frame[rows].with_columns(pl.Series("USUBJID", np.arange(len(rows)).astype(str)))
    s = fit_propensity(draw, balance=False, **options).scores
    s = s.select(pl.col("USUBJID").cast(pl.Int64), pl.col("weight").fill_nan(None)).filter(
        pl.col("weight").is_not_null() & pl.col("weight").is_finite() & (pl.col("weight") > 0))
    w = np.zeros(len(rows))
    w[s["USUBJID"].to_numpy()] = s["weight"].to_numpy()
    return w


@pytest.mark.parametrize("weighting,model", [("iptw", "ridge"), ("overlap", "ridge"), ("matching", "ridge"),
                                             ("iptw", "logistic")])
def test_draw_weights_equal_fit_propensity_on_the_drawn_frame(weighting, model):
    frame = _pair()
    options = dict(target="route", comparator="ref", covariates=COVS, categorical=["SEX", "SITE"],
                   weighting=weighting, model=model, truncation=3.0 if weighting == "iptw" else None)
    draws = propensity_draws(frame, **options)
    rng = np.random.default_rng(1)
    n = frame.height
    cases = [rng.integers(0, n, n) for _ in range(4)]
    # a draw without the rare site and without sex U (levels present in the pair, absent from the draw)
    common = np.flatnonzero(((frame["SITE"] != "s4") & (frame["SEX"] != "U")).fill_null(True).to_numpy())
    cases.append(rng.choice(common, n))
    # a draw in which FLAG is constant (left out of the model)
    cases.append(rng.choice(np.flatnonzero(~frame["FLAG"].to_numpy()), n))
    cases.append(np.arange(n))  # the pair itself
    by_pattern = model == "ridge" and weighting != "matching"
    assert (draws.pattern is not None) == by_pattern
    if by_pattern:  # rows with the same arm and covariates are one pattern
        assert len(draws.treated) < (draws.position >= 0).sum()
    for rows in cases:
        got = draws.weights(rows)
        want = _frame_weights(frame, rows, **options)
        if by_pattern:  # each row's pattern looked up at once: the same as through the kept rows' positions
            assert draws.dropped and np.array_equal(got, replace(draws, row_pattern=None).weights(rows))
        assert (got > 0).sum() > n / 4  # not a vacuous comparison of zeros
        if by_pattern:
            assert np.array_equal(got > 0, want > 0)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
        else:
            assert np.array_equal(got, want), (weighting, model)


def test_draw_weights_without_missing_covariates_skip_no_row():
    """No row dropped: the weights are looked up for every drawn row directly, and equal those through
    the rows' positions, bit for bit."""
    frame = _pair().drop_nulls()
    draws = propensity_draws(frame, target="route", comparator="ref", covariates=COVS, categorical=["SEX", "SITE"])
    assert not draws.dropped
    rows = np.random.default_rng(2).integers(0, frame.height, frame.height)
    got = draws.weights(rows)
    assert (got > 0).all() and np.array_equal(got, replace(draws, row_pattern=None).weights(rows))


def test_the_ridge_fit_with_frequency_weights_is_the_fit_of_the_rows_repeated():
    rng = np.random.default_rng(5)
    X = np.column_stack([rng.normal(size=60), rng.integers(0, 2, 60)])
    y = (rng.random(60) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    freq = rng.integers(1, 5, 60)
    weighted = fit_ps_model(y, X, freq=freq.astype(float))
    repeated = fit_ps_model(np.repeat(y, freq), np.repeat(X, freq, axis=0))
    assert weighted.converged and weighted.iterations == repeated.iterations
    np.testing.assert_allclose(weighted.coef, repeated.coef, rtol=1e-11)
    np.testing.assert_allclose(np.repeat(weighted.ps, freq), repeated.ps, rtol=1e-11)
    with pytest.raises(ValueError, match="ridge model only"):
        fit_ps_model(y, X, model="logistic", freq=freq.astype(float))


def test_the_ridge_fit_from_a_start_near_the_maximum_finds_the_same_maximum_in_fewer_steps():
    rng = np.random.default_rng(8)
    X = np.column_stack([rng.normal(size=3000), rng.integers(0, 2, 3000), rng.normal(size=3000)])
    y = (rng.random(3000) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 1])))).astype(float)
    cold = fit_ps_model(y, X)
    draw = rng.integers(0, 3000, 3000)  # a bootstrap draw, started from the whole sample's fit
    warm_draw = fit_ps_model(y[draw], X[draw], start=cold.coef)
    cold_draw = fit_ps_model(y[draw], X[draw])
    assert warm_draw.converged and warm_draw.iterations < cold_draw.iterations
    np.testing.assert_allclose(warm_draw.coef, cold_draw.coef, rtol=1e-11)
    np.testing.assert_allclose(warm_draw.ps, cold_draw.ps, rtol=1e-12)
    # a start of another length (a draw whose model lost a column) is not used
    assert fit_ps_model(y, X, start=cold.coef[:-1]).iterations == cold.iterations


def test_the_design_from_codes_is_the_frames_reference_and_rare_levels():
    frame = _pair().drop_nulls()
    coded = CodedCovariates.of(frame, COVS, {"SEX", "SITE"})
    d = coded.design(0.02)
    assert dict(d.refs) == {"SEX": "F", "SITE": "s1"}  # the most frequent levels
    assert [name for name, _ in d.left_out] == ["SEX[U]", "SITE[s4]"]  # rarer than 2% together
    assert "SITE[s1 or s4]" in d.names and not d.in_model[d.names.index("SITE[s4]")]
    # a draw without s1: the reference moves to the most frequent level of the draw
    rows = np.flatnonzero((frame["SITE"] != "s1").to_numpy())
    assert dict(coded.take(rows).design(0.02).refs)["SITE"] == "s2"
    # ties: the first level in sorted order, as the frame's value counts sorted by count, then level
    tie = pl.DataFrame({"SITE": ["b", "a", "b", "a", "c"], "X": [1.0] * 5})
    assert dict(CodedCovariates.of(tie, ["SITE"], {"SITE"}).design().refs) == {"SITE": "a"}
    # counts: rows standing for several rows give the design of the rows repeated
    freq = np.random.default_rng(2).integers(1, 4, frame.height)
    a = coded.design(0.02, freq.astype(float))
    b = coded.take(np.repeat(np.arange(frame.height), freq)).design(0.02)
    assert (a.names, a.refs, a.left_out, a.in_model, a.in_gate) == (b.names, b.refs, b.left_out, b.in_model, b.in_gate)


def test_draws_refuse_rows_of_other_arms_and_text_covariates_not_declared_categorical():
    frame = _pair().drop_nulls()
    with pytest.raises(ValueError, match="rows of route and ref only"):
        propensity_draws(frame.with_columns(pl.lit("other").alias("ARM")).vstack(frame), target="route",
                         comparator="ref", covariates=COVS, categorical=["SEX", "SITE"])
    with pytest.raises(ValueError, match="not numeric"):
        propensity_draws(frame, target="route", comparator="ref", covariates=COVS, categorical=["SEX"])
