"""ketaoutcomes.models.diagnostics against R (``diagnostics_reference.R``).

R is not needed to run these tests: they read the committed R output in
``results/zph_*`` and ``results/discrete_*`` (see the R script's header).

Tolerances (relative):

* ``ph_test`` chi2 and p: 1e-6. The test is evaluated at the Cox coefficients,
  which R leaves ~1e-8 short of the maximum; measured differences are at most
  1.4e-7 (rossi, log transform), 1e-9 or less on most fits.
* discrete-time GLM (coefficients, model SEs): 1e-8. Both fits are iterated to
  ~1e-14 (R with ``glm.control(epsilon = 1e-14)``); measured ~1e-14.
* cluster-robust SEs (R: sandwich formula by hand, = ``sandwich::vcovCL``
  HC1): 1e-8.
* The person-period rows built in Python equal R's exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.models import cox_ph
from ketaoutcomes.models.diagnostics import PH_NOTE, discrete_time_cox, discrete_time_data, ph_test

HERE = Path(__file__).parent
DATA = HERE / "data"
RESULTS = HERE / "results"

REL_ZPH = 1e-6
REL_GLM = 1e-8

_LUNG = dict(time="time", event="status", covariates=["age", "sex", "ph.ecog"])
CASES = {
    "lung": ("lung", _LUNG),
    "lung_breslow": ("lung", {**_LUNG, "ties": "breslow"}),
    "lung_ecog_factor": ("lung", {**_LUNG, "categorical": {"ph.ecog": 0}}),
    "lung_strata_sex": ("lung", dict(time="time", event="status", covariates=["age", "ph.ecog"], strata="sex")),
    "rossi": ("rossi", dict(time="week", event="arrest",
                            covariates=["fin", "age", "race", "wexp", "mar", "paro", "prio"])),
}


@pytest.fixture(scope="module")
def frames() -> dict[str, pl.DataFrame]:
    return {
        "lung": pl.read_csv(DATA / "lung.csv", null_values=["", "NA"]),
        "rossi": pl.read_csv(DATA / "rossi.csv"),
    }


# ----------------------------------------------------------------------------- ph_test
@pytest.mark.parametrize("transform", ["km", "identity", "rank", "log"])
@pytest.mark.parametrize("case", list(CASES))
def test_ph_test_matches_cox_zph(frames, case, transform):
    data, kwargs = CASES[case]
    out = ph_test(frames[data], transform=transform, **kwargs)
    ref = pl.read_csv(RESULTS / f"zph_{case}_{transform}.csv")
    # R names the factor term factor(ph.ecog); ours is the column name
    assert out["term"].to_list() == [t.replace("factor(ph.ecog)", "ph.ecog") for t in ref["term"]]
    assert out["df"].to_list() == ref["df"].to_list()
    np.testing.assert_allclose(out["chi2"].to_numpy(), ref["chisq"].to_numpy(), rtol=REL_ZPH)
    np.testing.assert_allclose(out["p_value"].to_numpy(), ref["p"].to_numpy(), rtol=REL_ZPH)
    flagged = out.filter(pl.col("note") == PH_NOTE)["term"].to_list()
    assert flagged == out.filter(pl.col("p_value") < 0.05)["term"].to_list()


def test_ph_test_flags_rossi_terms(frames):
    out = ph_test(frames["rossi"], **CASES["rossi"][1])
    assert out.filter(pl.col("note").is_not_null())["term"].to_list() == ["age", "wexp", "GLOBAL"]  # as R: age p=0.007, wexp p=0.040


def test_ph_test_rejects_unknown_transform(frames):
    with pytest.raises(ValueError, match="transform"):
        ph_test(frames["lung"], transform="spline", **_LUNG)


# ----------------------------------------------------------------------------- discrete time
@pytest.fixture(scope="module")
def person_period() -> pl.DataFrame:
    subj = pl.read_csv(RESULTS / "discrete_subjects.csv")
    visits = pl.read_csv(RESULTS / "discrete_visits.csv")
    return discrete_time_data(subj, visits, id_col="id", time="aval", event="event", visit_time="day",
                              band_width=28, keep=["arm", "age"])


def test_person_period_rows_match_R(person_period):
    ref = pl.read_csv(RESULTS / "discrete_person_period.csv")
    cols = ["id", "start", "stop", "length", "event", "band", "arm", "age"]
    ours = person_period.select(cols)
    ref = ref.select(cols).cast({c: ours.schema[c] for c in cols})
    assert ours.equals(ref)


def test_discrete_time_glm_matches_R(person_period):
    ref = json.loads((RESULTS / "discrete_glm.json").read_text())
    res = discrete_time_cox(person_period, covariates=["arm", "age"], id_col="id")
    assert res.n_rows == ref["n_rows"] and res.n_events == ref["n_events"]
    coef = np.r_[res.bands["coef"].to_numpy(), res.summary["coef"].to_numpy()]
    se = np.r_[res.bands["se_model"].to_numpy(), res.summary["se_model"].to_numpy()]
    np.testing.assert_allclose(coef, ref["coef"], rtol=REL_GLM)
    np.testing.assert_allclose(se, ref["se"], rtol=REL_GLM)
    cl = json.loads((RESULTS / "discrete_glm_cluster.json").read_text())["se_cluster"]
    np.testing.assert_allclose(res.summary["se"].to_numpy(), cl[-2:], rtol=REL_GLM)
    # model-based run gives R's z and p as well
    plain = discrete_time_cox(person_period, covariates=["arm", "age"], id_col=None)
    np.testing.assert_allclose(plain.summary["z"].to_numpy(), ref["z"][-2:], rtol=REL_GLM)
    np.testing.assert_allclose(plain.summary["p_value"].to_numpy(), ref["p"][-2:], rtol=1e-7)


# ----------------------------------------------------------------------------- simulation
def _simulate(seed: int, n: int = 4000, beta: float = -0.5) -> tuple[pl.DataFrame, pl.DataFrame]:
    """PH times (Weibull shape 1.3, scale 60 days), arm 1 has log HR ``beta``.

    Responses are seen only at visits: arm 0 weekly, arm 1 every 14 days, up to
    day 168; censoring ~ Uniform(30, 300) days; an event is recorded at the first
    visit on or after the true time (AVAL), a censoring at the last visit before it.
    """
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, n)
    t = 60 * (-np.log(rng.uniform(size=n)) / np.exp(beta * arm)) ** (1 / 1.3)
    end = np.minimum(rng.uniform(30, 300, n), 168)
    step = np.where(arm == 0, 7, 14)
    ev_visit = np.ceil(t / step) * step
    last = np.floor(end / step) * step
    event = (ev_visit <= last).astype(int)
    aval = np.where(event == 1, ev_visit, last)
    n_vis = (last / step).astype(int)
    subj = pl.DataFrame({"USUBJID": np.arange(n), "AVAL": aval, "event": event, "arm": arm})
    visits = pl.DataFrame({
        "USUBJID": np.repeat(np.arange(n), n_vis),
        "ADY": np.concatenate([np.arange(1, k + 1) * s for k, s in zip(n_vis, step, strict=True)]).astype(float),
    })
    return subj, visits


@pytest.mark.parametrize("seed", [1, 2])
def test_discrete_time_beats_cox_on_visit_dates(seed):
    beta = -0.5
    subj, visits = _simulate(seed, beta=beta)
    cox = cox_ph(subj.filter(pl.col("AVAL") > 0), time="AVAL", event="event", covariates=["arm"])
    pp = discrete_time_data(subj, visits, keep=["arm"], band_width=28)
    res = discrete_time_cox(pp, covariates=["arm"])
    b_cox = cox.summary["coef"][0]
    row = res.summary.row(0, named=True)
    assert abs(row["coef"] - beta) < abs(b_cox - beta)
    assert np.log(row["hr_lower"]) < beta < np.log(row["hr_upper"])
