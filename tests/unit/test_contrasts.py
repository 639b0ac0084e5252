"""The primary contrasts (ketaoutcomes.models.contrasts, ketaoutcomes.analysis.contrasts): the
vectorised curve summaries against the weighted Kaplan-Meier and RMST functions (themselves matched
to R in tests/reference), the percentile interval against numpy's type-7 quantiles, the interval of a
difference of shares by its coverage where the percentile interval falls short, and the bootstrap:
seeded, refitting the study's propensity model in every replicate, point estimates equal to the
stored weighted curves."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.analysis import analyze
from ketaoutcomes.analysis import contrasts as contrasts_module
from ketaoutcomes.analysis.common import model_frame
from ketaoutcomes.derive import derive_all
from ketaoutcomes.models.contrasts import (ArmCounts, curve_summaries, curve_summaries_by_arm, percentile_interval,
                                          read_curve, risk_difference_interval)
from ketaoutcomes.models.weighted import restricted_mean, weighted_kaplan_meier
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import SimulationSettings, StudySettings
from ketaoutcomes.simulate import simulate_frames


def _random_data(seed: int, n: int = 300) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "time": rng.integers(1, 40, n).astype(float),  # many ties, as visit days
        "event": rng.integers(0, 2, n), "w": rng.uniform(0.2, 5, n),
        "arm": rng.choice(["a", "b"], n),
    })


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_curve_summaries_equal_weighted_km_median_and_rmst(seed):
    df = _random_data(seed)
    km = weighted_kaplan_meier(df, time="time", event="event", weights="w", group="arm")
    rm = {r["group"]: r["rmst"] for r in restricted_mean(km, horizon=30).iter_rows(named=True)}
    med = {r["group"]: r["median"] for r in km.medians.iter_rows(named=True)}
    grid, tidx = np.unique(df["time"].to_numpy(), return_inverse=True)
    for arm in ("a", "b"):
        mask = (df["arm"] == arm).to_numpy()
        s = curve_summaries(tidx, df["event"].to_numpy(), df["w"].to_numpy() * mask, grid, days=[7, 20, 30, 45],
                            horizon=30)
        table = km.table.filter(pl.col("group") == arm)
        assert s.rmst[0] == pytest.approx(rm[arm], rel=1e-12)
        assert (math.isnan(s.median[0]) and med[arm] is None) or s.median[0] == med[arm]
        for k, day in enumerate([7, 20, 30]):
            expected = 1 - table.filter(pl.col("time") <= day)["survival"][-1]
            assert s.risk[0, k] == pytest.approx(expected, rel=1e-12)
        assert math.isnan(s.risk[0, 3])  # day 45 is after the arm's last time: not estimable
        # the same curve read back from its stored table
        r = read_curve(table["time"].to_list(), table["survival"].to_list(), days=[7, 20, 30], horizon=30)
        assert r["rmst"] == pytest.approx(rm[arm], rel=1e-12) and np.allclose(r["risk"], s.risk[0, :3])


def test_curve_summaries_vectorised_rows_equal_one_at_a_time():
    df = _random_data(4)
    grid, tidx = np.unique(df["time"].to_numpy(), return_inverse=True)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, df.height, size=(25, df.height))
    w = df["w"].to_numpy()[draws] * (df["arm"].to_numpy()[draws] == "a")
    many = curve_summaries(tidx[draws], df["event"].to_numpy()[draws], w, grid, days=[5, 15], horizon=25)
    for b in range(25):
        one = curve_summaries(tidx[draws[b]], df["event"].to_numpy()[draws[b]], w[b], grid, days=[5, 15], horizon=25)
        np.testing.assert_array_equal(many.risk[b], one.risk[0])
        assert many.rmst[b] == pytest.approx(one.rmst[0], rel=1e-14)  # summation order only
        assert (math.isnan(many.median[b]) and math.isnan(one.median[0])) or many.median[b] == one.median[0]


@pytest.mark.parametrize("shape", ["replicates", "one curve"])
def test_curve_summaries_by_arm_are_bit_for_bit_the_two_masked_calls(shape):
    """One pass for both arms (bins of the comparator after the target's) against two calls of
    curve_summaries with the weights masked to each arm: every array equal, bit for bit (a row of the
    other arm adds 0.0 to no sum), including replicates with an arm left empty or weights of 0."""
    df = _random_data(5)
    grid, tidx = np.unique(df["time"].to_numpy(), return_inverse=True)
    rng = np.random.default_rng(3)
    draws = rng.integers(0, df.height, size=(30, df.height)) if shape == "replicates" else np.arange(df.height)
    arm = df["arm"].to_numpy()[draws] == "a"
    w = df["w"].to_numpy()[draws] * (rng.random(draws.shape) > 0.1)  # some weights 0
    if shape == "replicates":
        arm[0] = True  # a replicate whose comparator is empty
    event = df["event"].to_numpy()[draws]
    kw = dict(days=[5, 15, 40], horizon=25)
    target, comparator = curve_summaries_by_arm(tidx[draws], event, w, arm, grid, **kw)
    for got, mask in ((target, arm), (comparator, ~arm)):
        want = curve_summaries(tidx[draws], event, w * mask, grid, **kw)
        for field in ("risk", "median", "rmst", "n"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), strict=True)
    assert np.isnan(comparator.rmst).any() == (shape == "replicates")


def _assert_same_summaries(got, want) -> None:
    for field in ("risk", "median", "rmst", "n"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), strict=True)


def test_arm_counts_one_replicate_at_a_time_are_bit_for_bit_the_summaries_of_the_rows_arrays():
    """ArmCounts filled row by row against curve_summaries_by_arm on the (B, n) arrays: every array
    equal, bit for bit, including a replicate with an arm left empty and one with all weights 0."""
    df = _random_data(6)
    grid, tidx = np.unique(df["time"].to_numpy(), return_inverse=True)
    rng = np.random.default_rng(8)
    draws = rng.integers(0, df.height, size=(12, df.height))
    arm = df["arm"].to_numpy()[draws] == "a"
    arm[2] = False  # no target rows
    w = df["w"].to_numpy()[draws] * (rng.random(draws.shape) > 0.1)
    w[5] = 0.0  # a replicate whose refit failed
    event = df["event"].to_numpy()[draws]
    counts = ArmCounts(12, grid)
    for b in range(12):
        counts.add(b, tidx[draws[b]], event[b], w[b], arm[b])
    kw = dict(days=[5, 15, 40], horizon=25)
    for got, want in zip(counts.summaries(**kw), curve_summaries_by_arm(tidx[draws], event, w, arm, grid, **kw)):
        _assert_same_summaries(got, want)
    with pytest.raises(ValueError, match="weights must be finite"):
        counts.add(0, tidx, df["event"].to_numpy(), -df["w"].to_numpy(), np.ones(df.height, dtype=bool))
    with pytest.raises(ValueError, match="one replicate's rows"):
        counts.add(0, tidx[draws], event, w, arm)


def test_bootstrap_summaries_are_those_of_the_whole_draw_matrix_bit_for_bit(cohort):
    """The bootstrap one replicate at a time against the way it was computed before (one (B, n) draw
    matrix from the seed, a refit per row, every replicate's rows summarised at once): the same draws,
    the same weights and the same summaries, bit for bit; a replicate whose refit raises is counted
    and has no patients."""
    d, study = cohort
    frame = model_frame(d.adsl, d.adtte, "TTRESP")
    pair = frame.filter(pl.col("ARM").is_in(["ketamine_iv", "ssri"]) & pl.col("AVAL").is_not_null()
                        & pl.col("EVENT").is_not_null())
    n, B = pair.height, 20
    grid, tidx = np.unique(pair["AVAL"].cast(pl.Float64).to_numpy(), return_inverse=True)
    event = pair["EVENT"].cast(pl.Float64).to_numpy()
    treated = (pair["ARM"] == "ketamine_iv").to_numpy()
    refit = contrasts_module.pair_propensity_draws(pair, "ketamine_iv", study)
    seed = contrasts_module.bootstrap_seed(study, "TTRESP", "ketamine_iv")
    kw = dict(days=[7.0, 28.0], horizon=40.0)

    class FailingSeventh:
        def __init__(self):
            self.seen = 0

        def weights(self, rows):
            self.seen += 1
            if self.seen == 7:
                raise np.linalg.LinAlgError("Singular matrix")
            return refit.weights(rows)
    got, errors = contrasts_module.bootstrap_summaries(FailingSeventh(), tidx, event, treated, grid, seed, B, **kw)
    assert errors == ["LinAlgError: Singular matrix"]

    draws = np.random.default_rng(seed).integers(0, n, size=(B, n))
    W = np.stack([refit.weights(r) for r in draws])
    W[6] = 0.0
    want = curve_summaries_by_arm(tidx[draws], event[draws], W, treated[draws], grid, **kw)
    for arm, w in zip(("target", "comparator"), want):
        _assert_same_summaries(got[arm], w)
    assert got["target"].n[6] == got["comparator"].n[6] == 0 and (got["target"].n > 0).sum() == B - 1


def test_median_at_exactly_one_half_is_the_midpoint_as_R_prints_it():
    # two patients: events at 2 and 6; S = 0.5 on [2, 6), then 0: R prints (2 + 6) / 2 = 4
    s = curve_summaries(np.array([0, 1]), np.array([1, 1]), np.ones(2), np.array([2.0, 6.0]), days=[1], horizon=10)
    assert s.median[0] == 4.0


def test_percentile_interval_is_numpys_type_7_and_keeps_unbounded_sides():
    x = np.random.default_rng(1).normal(size=200)
    lo, hi, sd, n = percentile_interval(x)
    assert (lo, hi) == tuple(np.quantile(x, [0.025, 0.975])) and n == 200 and sd == pytest.approx(np.std(x, ddof=1))
    y = np.concatenate([x[:180], np.full(20, np.inf), [np.nan]])
    lo, hi, _, n = percentile_interval(y)
    assert math.isinf(hi) and hi > 0 and math.isfinite(lo) and n == 200


def test_the_score_interval_covers_small_shares_as_newcombes_method_where_the_percentile_falls_short():
    """Shares of a few events, as oral ketamine vs SSRI by day 7 in a cohort of 2,000 (about 8 of 150
    against 18 of 450), without weights: there the bootstrap score interval should be Newcombe's
    method 10 for two binomial shares, whose coverage for this design is 95.4% (summed exactly over
    every pair of counts below). Over 1,000 seeded trials with 200 bootstrap replicates each, it
    covers as often as Newcombe's interval of the same trials (within 1.5 points; the Monte Carlo SE
    of either is 0.7), and misses about as often on each side; the percentile interval of the same
    replicates covers at least 1.5 points less, missing mostly with the truth above it."""
    from scipy import stats

    from ketaoutcomes.models.contrasts import mover_interval, wilson_interval

    n_t, n_c, p_t, p_c, B, trials = 150, 450, 0.055, 0.04, 200, 1000
    truth = p_t - p_c
    x1, x2 = np.arange(n_t + 1), np.arange(n_c + 1)
    newcombe = {(i, j): mover_interval(i / n_t, wilson_interval(i / n_t, n_t), j / n_c, wilson_interval(j / n_c, n_c))
                for i in x1[:40] for j in x2[:80]}  # beyond these counts the probability is < 1e-9
    exact = sum(stats.binom.pmf(i, n_t, p_t) * stats.binom.pmf(j, n_c, p_c)
                for (i, j), (lo, hi) in newcombe.items() if lo <= truth <= hi)
    assert 0.95 < exact < 0.96

    rng = np.random.default_rng(1)
    grid, days = np.array([7.0, 8.0]), [7.0]
    arm = np.r_[np.ones(n_t, bool), np.zeros(n_c, bool)]
    miss = {"percentile": [], "score": [], "newcombe": []}  # -1: truth below the interval, 1: above, 0: inside
    for _ in range(trials):
        tidx = np.where(rng.random(arm.size) < np.where(arm, p_t, p_c), 0, 1)  # day 7: event; day 8: censored
        event = (tidx == 0).astype(float)
        draws = rng.integers(0, arm.size, size=(B, arm.size))
        point, boot = ([curve_summaries(t, e, (a == k).astype(float), grid, days=days, horizon=8.0) for k in (1, 0)]
                       for t, e, a in ((tidx, event, arm), (tidx[draws], event[draws], arm[draws])))
        p1, p2 = point[0].risk[0, 0], point[1].risk[0, 0]
        for name, (lo, hi) in (
            ("percentile", percentile_interval(boot[0].risk[:, 0] - boot[1].risk[:, 0])[:2]),
            ("score", risk_difference_interval(p1, p2, boot[0].risk[:, 0], boot[1].risk[:, 0], n_t, n_c)[:2]),
            ("newcombe", newcombe[round(p1 * n_t), round(p2 * n_c)]),
        ):
            miss[name].append(-1 if truth < lo else 1 if truth > hi else 0)
    m = {k: np.asarray(v) for k, v in miss.items()}
    cover = {k: float(np.mean(v == 0)) for k, v in m.items()}
    above = {k: float(np.mean(v == 1)) for k, v in m.items()}
    assert abs(cover["score"] - cover["newcombe"]) <= 0.015, cover
    assert abs(above["score"] - np.mean(m["score"] == -1)) < 0.02, (cover, above)
    assert cover["percentile"] <= cover["newcombe"] - 0.015 and above["percentile"] > above["score"], (cover, above)


@pytest.fixture(scope="module")
def cohort():
    frames = simulate_frames(SimulationSettings(n_patients=1200, seed=11))
    study = StudySettings(endpoints=("TTRESP",), bootstrap_replicates=30)
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=study)
    return d, study


def test_point_estimates_are_those_of_the_stored_weighted_curves(cohort):
    d, study = cohort
    res = analyze(d.adsl, d.adtte, study=study)
    c = res.table("results_contrasts")
    med = res.table("results_km_weighted_median")
    assert c.height == 5 * c["target"].n_unique()
    for r in c.filter(pl.col("measure") == "median").iter_rows(named=True):
        m = {x["group"]: x["median"] for x in med.filter(pl.col("target") == r["target"]).iter_rows(named=True)}
        assert r["value_target"] == m[r["target"]] and r["value_comparator"] == m["ssri"]
    ps = {x["target"]: x["diagnostics"] for x in res.table("results_ps").iter_rows(named=True)}
    for r in c.iter_rows(named=True):
        assert r["diagnostics"] == ps[r["target"]]
        # an interval exactly where the pair passes the gate (withheld pairs: estimates beside the verdict);
        # a median not reached in one arm has no difference but keeps its (half-open) bootstrap interval
        assert (r["n_boot"] > 0) == (r["diagnostics"] == "pass" and (r["difference"] is not None
                                                                     or r["measure"] == "median"))
        if r["n_boot"] > 0 and r["difference"] is None:
            assert "median was not reached" in r["note"] and (r["upper"] is None or r["lower"] is None)
    rm = c.filter(pl.col("measure") == "rmst")
    assert (rm["day"] <= study.models.rmst_horizon_days).all()
    passing = c.filter((pl.col("n_boot") > 0))
    assert passing.height and (passing["lower"].fill_null(-math.inf) <= passing["difference"]).all()
    assert (passing["difference"] <= passing["upper"].fill_null(math.inf)).all()


def test_bootstrap_refits_the_study_propensity_model_in_every_replicate_and_is_seeded(cohort, monkeypatch):
    d, study = cohort
    frame = model_frame(d.adsl, d.adtte, "TTRESP")
    calls, draws = [], []
    real, real_draws = contrasts_module.fit_pair_propensity, contrasts_module.pair_propensity_draws
    monkeypatch.setattr(contrasts_module, "fit_pair_propensity",
                        lambda pair, target, s, **kw: calls.append(pair.height) or real(pair, target, s, **kw))

    def recording(pair, target, s):
        prepared = real_draws(pair, target, s)

        class Recorded:
            def weights(self, rows):
                draws.append((pair, rows, prepared.weights(rows)))
                return draws[-1][2]
        return Recorded()
    monkeypatch.setattr(contrasts_module, "pair_propensity_draws", recording)
    verdict = {"ketamine_iv": ("pass", None)}
    a, _ = contrasts_module.primary_contrasts(frame, "TTRESP", study, ["ketamine_iv"], verdict)
    assert len(calls) == 1  # the point estimate
    assert len(draws) == study.models.bootstrap_replicates  # then one refit per replicate, on its own draw
    assert len({r.tobytes() for _, r, _ in draws}) == len(draws)
    for pair, rows, w in draws[:3]:  # each refit's weights: the study's model fitted on the frame of the draw
        drawn = pair[rows].with_columns(pl.Series("USUBJID", np.arange(len(rows)).astype(str)))
        scores = real(drawn, "ketamine_iv", study, balance=False).scores
        want = contrasts_module._weights(np.arange(len(rows)), scores)
        # (the ridge model on the draw's distinct rows with their counts: the same fit, to rounding)
        assert np.array_equal(w > 0, want > 0) and np.allclose(w, want, rtol=1e-9, atol=0)
        assert (w > 0).sum() > len(rows) / 2
    monkeypatch.undo()
    b, _ = contrasts_module.primary_contrasts(frame, "TTRESP", study, ["ketamine_iv"], verdict)
    assert a.equals(b)  # same seed, same draws
    c, _ = contrasts_module.primary_contrasts(frame, "TTRESP", study.updated(random_seed=7), ["ketamine_iv"], verdict)
    assert c["difference"].equals(a["difference"]) and not c["lower"].equals(a["lower"])
    # the route's draws do not depend on which other routes are analysed
    e, _ = contrasts_module.primary_contrasts(frame, "TTRESP", study, ["ketamine_im", "ketamine_iv"],
                                             {**verdict, "ketamine_im": ("pass", None)})
    assert e.filter(pl.col("target") == "ketamine_iv").equals(a)


def test_contrast_days_are_validated():
    with pytest.raises(ValueError, match="contrast_days"):
        StudySettings(contrast_days=(7, 7))
    with pytest.raises(ValueError, match="contrast_days"):
        StudySettings(contrast_days=())


def test_shares_and_rmst_are_read_only_where_enough_patients_are_at_risk(cohort):
    """models.contrast_min_at_risk (10) and contrast_min_at_risk_share (10%): a share by day t needs at
    least max(10, 10% of the arm) patients of each arm still at risk on day t (counted on the analysed
    pair, not weighted), else it is "not estimable" with no value and no interval; the RMST horizon is
    cut to the last such day. (Before the rule, IV's share by day 28 rested on ~1 weighted patient at
    risk and its bootstrap interval covered 86% in the simulation study.)"""
    from ketaoutcomes.analysis.contrasts import at_risk_floor

    d, study = cohort
    assert (study.models.contrast_min_at_risk, study.models.contrast_min_at_risk_share) == (10, 0.10)
    assert at_risk_floor(50, 10, 0.1) == 10 and at_risk_floor(400, 10, 0.1) == 40 and at_risk_floor(401, 10, 0.1) == 41
    res = analyze(d.adsl, d.adtte, study=study)
    c = res.table("results_contrasts")
    frame = model_frame(d.adsl, d.adtte, "TTRESP").filter(pl.col("AVAL").is_not_null())

    def enough(arm: str, day: float) -> bool:
        a = frame.filter(pl.col("ARM") == arm)
        return a.filter(pl.col("AVAL") >= day).height >= at_risk_floor(a.height, 10, 0.10)

    def both(target: str, day: float) -> bool:
        return enough(target, day) and enough("ssri", day)

    seen = {"estimable": 0, "not": 0}
    for r in c.filter(pl.col("measure") == "risk").iter_rows(named=True):
        if both(r["target"], r["day"]):
            seen["estimable"] += 1
            assert r["difference"] is not None, r
        else:
            seen["not"] += 1
            assert r["difference"] is None and r["lower"] is None and r["n_boot"] == 0, r
            assert "contrast_min_at_risk" in r["note"] and "10% of the arm" in r["note"]
    assert seen["estimable"] and seen["not"]  # the cohort has both kinds, so the test can fail either way
    cut = 0
    for r in c.filter(pl.col("measure") == "rmst").iter_rows(named=True):
        assert both(r["target"], r["day"])
        if r["day"] < study.models.rmst_horizon_days:  # cut: one day later, an arm has too few at risk
            cut += 1
            assert not both(r["target"], r["day"] + 1)
    assert cut


def test_evalues_of_the_risk_ratios_and_the_weighted_hr(cohort):
    """results_evalues: per route, the risk ratio by each contrast day read off the same weighted curves as
    the risk differences (its bootstrap interval from the same replicates) and the weighted HR, converted
    with the common-outcome formula because response is common; E-values by VanderWeele & Ding's formula."""
    from ketaoutcomes.models.evalues import evalue, hr_to_rr_common

    d, study = cohort
    res = analyze(d.adsl, d.adtte, study=study)
    ev, c = res.table("results_evalues"), res.table("results_contrasts")
    assert "risk_ratio" not in c["measure"].to_list()  # results_contrasts keeps only differences
    risk = {(r["target"], r["day"]): r for r in c.filter(pl.col("measure") == "risk").iter_rows(named=True)}
    rr = ev.filter(pl.col("scale") == "risk_ratio")
    assert rr.height == len(risk)
    checked = 0
    for r in rr.iter_rows(named=True):
        k = risk[(r["target"], r["day"])]
        assert r["estimand"] == f"rr_d{r['day']:g}" and r["diagnostics"] == k["diagnostics"]
        if k["difference"] is None:
            assert r["estimate"] is None and r["evalue"] is None
            continue
        assert r["estimate"] == pytest.approx(k["value_target"] / k["value_comparator"], rel=1e-12)
        if k["n_boot"] > 0:
            assert r["lower"] <= r["estimate"] <= r["upper"]
            e = evalue(r["estimate"], r["lower"], r["upper"])
            assert (r["evalue"], r["evalue_ci"]) == (e.point, e.ci)
            checked += 1
    assert checked
    hr = ev.filter(pl.col("scale") == "hazard_ratio")
    cox = res.table("results_cox").filter(pl.col("model") == study.propensity.weighting)
    assert sorted(hr["target"]) == sorted(cox["arm"])
    for r in hr.iter_rows(named=True):
        assert r["outcome_share"] > 0.15 and r["rare"] is False  # response is common on every route
        assert r["rr"] == pytest.approx(hr_to_rr_common(r["estimate"]))
        assert r["evalue"] > 1 and "common outcome" in r["note"]


def test_a_quantile_between_a_finite_and_an_infinite_replicate_is_unbounded():
    """Issue 10: on a 200-patient cohort the summary printed a median-difference limit of 1.1e307 (300
    digits): type-7 interpolation between the last finite replicate and a clipped infinite one. Such a
    limit lies beyond every finite replicate, so it is the unbounded side."""
    x = np.concatenate([np.linspace(-40.0, 10.0, 190), np.full(5, np.inf)])  # 0.975 * 194 = 189.15: between the two
    lo, hi, _, n = percentile_interval(x)
    assert n == 195 and math.isfinite(lo) and hi == math.inf
    x = np.concatenate([np.full(5, -np.inf), np.linspace(-40.0, 10.0, 190)])
    lo, hi, _, _ = percentile_interval(x)
    assert lo == -math.inf and math.isfinite(hi)
