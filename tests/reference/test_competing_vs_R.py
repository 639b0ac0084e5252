"""ketaoutcomes.models.competing against R's survival and cmprsk packages.

R output in ``results/competing_*`` and the data in ``data/competing_*.csv`` are
written by ``competing_reference.R`` (R 4.2.2, survival 3.5-3, cmprsk 2.2-11); R
is not needed to run these tests.

* ``data/competing_mgus2.csv``: ``survival::mgus2`` as competing risks, the
  package vignette's example (event 1 = progression to PCM, 2 = death without
  PCM, 0 = censored; ``etime`` in months).
* ``data/competing_edge.csv``: hand-made groups A-E with ties between events of
  both causes and censorings, a group of one, a group without events, a group
  whose last time takes everyone out, a group whose incidence reaches 1.

Tolerances (relative):

* ``pstate`` (cumulative incidence, event-free probability): 1e-12; they come
  out bit-identical (same products and sums in the same order as survfitci.c).
* ``std.err`` (infinitesimal jackknife) and the interval limits: 1e-10; the
  largest differences seen are ~1e-13 for std.err and ~1e-12 for arcsin lower
  limits near 0 (summation order). Where the exact standard error is 0, R's
  direct sum leaves rounding noise (8e-17 in group E, where the incidence of
  cause 1 is 1) and ours is exactly 0: std.err is compared with an absolute
  tolerance of 1e-15 too, and the interval is not compared on those rows (R's
  transforms turn the noise into arbitrary limits, e.g. arcsin gives [0, 1]).
* Gray's statistic: 1e-10 (seen: ~4e-14); p-values: 1e-9 relative or 1e-15
  absolute (R's ``1 - pchisq`` rounds tiny p-values to 0; ``chi2.sf`` does not).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models.competing import EVENT_FREE, cumulative_incidence, gray_test

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DATA = HERE / "data"

REL_EST = 1e-12
REL_SE = 1e-10
ABS_SE = 1e-15
REL_CI = 1e-10
REL_STAT = 1e-10
CONF_TYPES = ["log", "log-log", "plain", "logit", "arcsin"]
MGUS2_CAUSES = {1: "pcm", 2: "death"}


def _csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, null_values=["", "NA"])


@pytest.fixture(scope="module")
def mgus2() -> pl.DataFrame:
    data = _csv(DATA / "competing_mgus2.csv")
    assert data.height == 1384
    assert data["event"].value_counts().sort("event")["count"].to_list() == [409, 115, 860]
    return data


@pytest.fixture(scope="module")
def edge() -> pl.DataFrame:
    return _csv(DATA / "competing_edge.csv")


def r_table(name: str) -> pl.DataFrame:
    """R's rows with ours' key names: state "(s0)" is our cause EVENT_FREE."""
    return _csv(RESULTS / name).with_columns(
        pl.col("strata").cast(pl.String),
        pl.col("time").cast(pl.Float64),
        cause=pl.when(pl.col("state") == "(s0)").then(pl.lit(EVENT_FREE)).otherwise(pl.col("state")),
    )


def assert_close(got: np.ndarray, want: np.ndarray, rel: float, what: str, abs_tol: float = 0.0) -> None:
    """Equal within ``rel`` (or ``abs_tol``), with null (NaN) exactly where R has NA."""
    got = np.asarray(got, dtype=float)
    want = np.asarray(want, dtype=float)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NA pattern differs from R")
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=rel, atol=abs_tol, err_msg=what)


def assert_matches_R(res, r: pl.DataFrame) -> None:
    """Every row of R's multi-state survfit, state by state, against res.table."""
    ours = res.table.rename({"group": "strata"})
    joined = r.join(ours, on=["strata", "cause", "time"], how="full", suffix="_py", coalesce=True)
    assert joined.height == r.height == ours.height, "different (group, state, time) rows than R"
    assert (joined["n_risk"] == joined["n_risk_py"]).all()
    assert (joined["n_censor"] == joined["n_censor_py"]).all()
    # n_event: events into that state; for the event-free rows ours counts events of any cause
    causes = joined.filter(pl.col("cause") != EVENT_FREE)
    assert (causes["n_event"] == causes["n_event_py"]).all()
    total = causes.group_by("strata", "time").agg(pl.col("n_event").sum())
    free = joined.filter(pl.col("cause") == EVENT_FREE).join(total, on=["strata", "time"], suffix="_all")
    assert (free["n_event_py"] == free["n_event_all"]).all()

    assert_close(joined["cif"], joined["pstate"], REL_EST, "pstate")
    assert_close(joined["se"], joined["std_err"], REL_SE, "std.err", abs_tol=ABS_SE)
    # R's rounding noise where the exact std.err is 0 (see the module docstring)
    noise = ((joined["std_err"] > 0) & (joined["std_err"] < ABS_SE)).to_numpy()
    assert (joined["se"].to_numpy()[noise] == 0).all()
    sure = joined.filter(~pl.Series(noise))
    assert_close(sure["lower_py"], sure["lower"], REL_CI, "lower")
    assert_close(sure["upper_py"], sure["upper"], REL_CI, "upper")


# ----------------------------------------------------------------------------- Aalen-Johansen
@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_cif_matches_R_survfit_mgus2_by_sex(mgus2, conf_type):
    """survfit(Surv(etime, factor(event)) ~ sex, data = mgus2, conf.type = ...)."""
    res = cumulative_incidence(mgus2, time="etime", status="event", group="sex", causes=MGUS2_CAUSES,
                               conf_type=conf_type)  # fmt: skip
    assert res.n == 1384 and res.n_dropped == 0 and res.causes == ("pcm", "death")
    assert_matches_R(res, r_table(f"competing_mgus2_sex_{conf_type}.csv"))


def test_cif_matches_R_survfit_mgus2_overall_default_log(mgus2):
    """survfit(Surv(etime, factor(event)) ~ 1): R's default conf.type for pstate is "log"."""
    res = cumulative_incidence(mgus2, time="etime", status="event", causes=MGUS2_CAUSES)
    assert res.conf_type == "log"
    assert set(res.table["group"]) == {"all"}
    assert_matches_R(res, r_table("competing_mgus2_all_log.csv"))


def test_cif_matches_R_survfit_mgus2_by_agecat_99(mgus2):
    """survfit(... ~ agecat, conf.int = 0.99): four groups, alpha = 0.01."""
    res = cumulative_incidence(mgus2, time="etime", status="event", group="agecat", causes=MGUS2_CAUSES,
                               alpha=0.01)  # fmt: skip
    assert_matches_R(res, r_table("competing_mgus2_agecat_log_99.csv"))


@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_cif_matches_R_survfit_edge_cases(edge, conf_type):
    """Ties of both causes and censorings, a group of one, no events, S -> 0, incidence -> 1."""
    res = cumulative_incidence(edge, time="time", status="status", group="group", conf_type=conf_type)
    assert res.causes == ("1", "2")
    assert_matches_R(res, r_table(f"competing_edge_{conf_type}.csv"))
    assert "group 'C' has no events: cumulative incidence stays at 0" in res.notes


def test_cif_edge_group_reaching_one_has_se_zero_where_R_has_rounding_noise(edge):
    res = cumulative_incidence(edge, time="time", status="status", group="group")
    row = res.table.filter(pl.col("group") == "E", pl.col("cause") == "1", pl.col("time") == 4.0).row(0, named=True)
    r = r_table("competing_edge_log.csv").filter(pl.col("strata") == "E", pl.col("state") == "1", pl.col("time") == 4.0)
    assert row["cif"] == r["pstate"].item() == 1.0
    assert row["se"] == 0.0 and 0 < r["std_err"].item() < 1e-16
    assert row["lower"] == row["upper"] == 1.0


# ----------------------------------------------------------------------------- at(times)
def _assert_at_matches_R(res, r: pl.DataFrame) -> None:
    horizons = sorted(set(r["time"].to_list()))
    ours = res.at(horizons).rename({"group": "strata"})
    joined = r.join(ours, on=["strata", "cause", "time"], how="full", suffix="_py", coalesce=True)
    assert joined.height == r.height == ours.height
    assert (joined["n_risk"].cast(pl.Int64) == joined["n_risk_py"]).all()
    assert_close(joined["cif"], joined["pstate"], REL_EST, "pstate")
    assert_close(joined["se"], joined["std_err"], REL_SE, "std.err", abs_tol=ABS_SE)
    # Before a group's first time R's summary() prints lower = upper = 0 (even for the event-free
    # probability 1); ours follow from se = 0 there. Compare the intervals from the first time on.
    first = res.table.group_by("group").agg(t0=pl.col("time").min()).rename({"group": "strata"})
    later = joined.join(first, on="strata").filter(pl.col("time") >= pl.col("t0"))
    noise = (later["std_err"] > 0) & (later["std_err"] < ABS_SE)
    later = later.filter(~noise)
    assert_close(later["lower_py"], later["lower"], REL_CI, "lower")
    assert_close(later["upper_py"], later["upper"], REL_CI, "upper")
    early = joined.join(first, on="strata").filter(pl.col("time") < pl.col("t0"))
    assert (early.filter(pl.col("cause") == EVENT_FREE)["lower_py"] == 1).all()
    assert early.filter(pl.col("cause") != EVENT_FREE)["lower_py"].is_null().all()


def test_at_matches_R_summary_times_mgus2_by_sex(mgus2):
    """summary(survfit(... ~ sex), times = c(0.5, 12, 60, 120, 240, 400, 500), extend = TRUE)."""
    res = cumulative_incidence(mgus2, time="etime", status="event", group="sex", causes=MGUS2_CAUSES)
    _assert_at_matches_R(res, r_table("competing_mgus2_sex_at.csv"))


def test_at_matches_R_summary_times_edge(edge):
    """Horizons before the first time, on a tied time, between times and after the last (n.risk 0)."""
    res = cumulative_incidence(edge, time="time", status="status", group="group")
    _assert_at_matches_R(res, r_table("competing_edge_at.csv"))


# ----------------------------------------------------------------------------- Gray's test
GRAY_CASES = {
    "mgus2_sex": dict(group="sex"),
    "mgus2_agecat": dict(group="agecat"),
    "mgus2_sex_strata_old": dict(group="sex", strata="old"),
    "mgus2_agecat_rho1": dict(group="agecat", rho=1.0),
}


def _assert_gray(got, want: dict) -> None:
    assert got.df == want["df"]
    assert got.chi2 == pytest.approx(want["stat"], rel=REL_STAT)
    assert got.p_value == pytest.approx(want["p"], rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("cause", [1, 2])
@pytest.mark.parametrize("case", list(GRAY_CASES))
def test_gray_matches_R_cmprsk_cuminc_mgus2(mgus2, case, cause):
    """cmprsk::cuminc(etime, event, group, [strata], [rho])$Tests, row of the cause."""
    kw = dict(GRAY_CASES[case])
    got = gray_test(mgus2, "etime", "event", kw.pop("group"), cause, **kw)
    _assert_gray(got, json.loads((RESULTS / "competing_gray.json").read_text())[case][str(cause)])


@pytest.mark.parametrize("cause", [1, 2])
def test_gray_matches_R_cmprsk_cuminc_edge_groups_A_D(edge, cause):
    data = edge.filter(pl.col("group").is_in(["A", "D"]))
    got = gray_test(data, "time", "status", "group", cause)
    _assert_gray(got, json.loads((RESULTS / "competing_gray.json").read_text())["edge_AD"][str(cause)])


def test_gray_small_p_value_is_kept_where_R_rounds_to_zero(mgus2):
    want = json.loads((RESULTS / "competing_gray.json").read_text())["mgus2_agecat"]["2"]
    got = gray_test(mgus2, "etime", "event", "agecat", 2)
    assert want["p"] == 0 and 0 < got.p_value < 1e-60
