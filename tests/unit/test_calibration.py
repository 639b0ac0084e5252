"""Empirical calibration (ketaoutcomes.models.calibration) against OHDSI EmpiricalCalibration 3.1.4.

The reference numbers come from the package's own R and C++ code (sourced, not installed) run by
``tests/reference/calibration_reference.R`` on its bundled example data (``sccs`` and
``cohortMethod``: the negative controls and the one positive control of each) and on two small
synthetic sets (one with rows fitNull drops, one whose maximum is on the boundary sd = 0); the
inputs are in ``tests/reference/data/calibration_<case>.csv``, R's output in
``tests/reference/results/calibration_<case>.json``.

Tolerances: fitNull stops Nelder-Mead at optim's default relative tolerance, so its mean and sd
are the maximum only to ~1e-4; the Python fit is compared to 1e-6 with the same likelihood
maximised to convergence in R (``null_tight``), and to 1e-4 with fitNull's own answer (whose
log-likelihood it must reach). calibrateP, EASE and calibrateConfidenceInterval are closed forms
given a null: compared to 1e-10 using the null R used.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ketaoutcomes.models.calibration import (
    SystematicErrorNull,
    calibrate_ci,
    calibrate_p,
    calibrated_log_estimate,
    calibration_gate,
    expected_absolute_systematic_error,
    fit_null,
)

REF = Path(__file__).resolve().parents[1] / "reference"
CASES = ("sccs", "cohortmethod", "synthetic", "boundary")


def _num(v: str) -> float:
    return math.nan if v in ("NA", "") else float(v)


def _case(case: str) -> tuple[list[dict], dict]:
    with open(REF / "data" / f"calibration_{case}.csv", newline="") as fh:
        rows = [{**r, "logRr": _num(r["logRr"]), "seLogRr": _num(r["seLogRr"])} for r in csv.DictReader(fh)]
    return rows, json.loads((REF / "results" / f"calibration_{case}.json").read_text())


def _r(v) -> float:
    return math.nan if v is None else float(v)


def _negatives(rows):
    neg = [r for r in rows if r["control"] == "negative"]
    return [r["logRr"] for r in neg], [r["seLogRr"] for r in neg]


def _r_null(ref) -> SystematicErrorNull:
    return SystematicErrorNull(mean=ref["null"]["mean"], sd=ref["null"]["sd"], n=0, n_dropped=0,
                               log_likelihood=ref["null"]["log_likelihood"])


@pytest.mark.parametrize("case", CASES)
def test_fit_null_matches_EmpiricalCalibration_likelihood_maximum(case):
    rows, ref = _case(case)
    null = fit_null(*_negatives(rows))
    tight = ref["null_tight"]
    assert null.n == tight["n"] and null.n + null.n_dropped == ref["n_negative_rows"]
    assert null.mean == pytest.approx(tight["mean"], abs=1e-6)
    assert null.sd == pytest.approx(tight["sd"], abs=1e-6)
    assert null.log_likelihood == pytest.approx(tight["log_likelihood"], abs=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_fit_null_matches_EmpiricalCalibration_fitNull_to_its_optim_tolerance(case):
    rows, ref = _case(case)
    null = fit_null(*_negatives(rows))
    assert null.mean == pytest.approx(ref["null"]["mean"], abs=1e-4)
    assert null.sd == pytest.approx(ref["null"]["sd"], abs=2e-4)
    assert null.log_likelihood >= ref["null"]["log_likelihood"] - 1e-12  # at least as high as fitNull's


def test_fit_null_matches_the_digits_EmpiricalCalibration_prints_for_sccs():
    """print(fitNull(negatives$logRr, negatives$seLogRr)) on data(sccs): Mean 0.7922, SD 0.2834 (the
    4th decimal of the mean is fitNull's optim tolerance: it stops at 0.79216, the maximum is 0.79212)."""
    rows, _ = _case("sccs")
    null = fit_null(*_negatives(rows))
    assert abs(null.mean - 0.7922) < 1e-4 and abs(null.sd - 0.2834) < 1e-4


def test_fit_null_drops_and_counts_what_fitNull_drops():
    rows, _ = _case("synthetic")  # an NA estimate, an infinite SE and |logRr| > log(100) among 15 rows
    null = fit_null(*_negatives(rows))
    assert (null.n, null.n_dropped) == (12, 3)
    assert fit_null([0.1, math.inf, 0.2], [0.1, 0.1, 0.0]).n == 1  # an SE of 0 is not usable either
    empty = fit_null([math.nan], [0.1])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.sd)
    with pytest.raises(ValueError, match="negative"):
        fit_null([0.1, 0.2], [0.1, -0.1])
    with pytest.raises(ValueError, match="one of each"):
        fit_null([0.1, 0.2], [0.1])


def test_fit_null_on_the_boundary_is_sd_zero_and_the_weighted_mean():
    rows, ref = _case("boundary")
    x, se = _negatives(rows)
    null = fit_null(x, se)
    w = 1 / np.asarray(se) ** 2
    assert null.sd == 0.0
    assert null.mean == pytest.approx(float(np.sum(w * np.asarray(x)) / np.sum(w)), abs=1e-14)
    assert ref["null_tight"]["sd"] < 1e-6  # R's converged optimum: sd below fitNull's 1e-6 switch


@pytest.mark.parametrize("case", CASES)
def test_calibrate_p_matches_EmpiricalCalibration_calibrateP(case):
    rows, ref = _case(case)
    null = _r_null(ref)
    for i, r in enumerate(rows):
        for got, want in (
            (calibrate_p(null, r["logRr"], r["seLogRr"]), ref["p_two_sided"][i]),
            (calibrate_p(null, r["logRr"], r["seLogRr"], two_sided=False, upper=True), ref["p_upper"][i]),
            (calibrate_p(null, r["logRr"], r["seLogRr"], two_sided=False, upper=False), ref["p_lower"][i]),
        ):
            if want is None:
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_ease_matches_EmpiricalCalibration_computeExpectedAbsoluteSystematicError(case):
    _, ref = _case(case)
    assert expected_absolute_systematic_error(_r_null(ref)) == pytest.approx(ref["ease"], rel=1e-12)
    tight = SystematicErrorNull(mean=ref["null_tight"]["mean"], sd=ref["null_tight"]["sd"], n=0, n_dropped=0,
                                log_likelihood=math.nan)
    assert expected_absolute_systematic_error(tight) == pytest.approx(ref["ease_tight"], rel=1e-12)


def test_ease_of_a_point_null_is_its_absolute_mean_as_in_EmpiricalCalibration():
    """computeExpectedAbsoluteSystematicError.null returns 0 for mean 0, sd 0 (its own test)."""
    assert expected_absolute_systematic_error(SystematicErrorNull(0.0, 0.0, 5, 0, 0.0)) == 0.0
    assert expected_absolute_systematic_error(SystematicErrorNull(-0.3, 0.0, 5, 0, 0.0)) == 0.3


@pytest.mark.parametrize("case", CASES)
def test_calibrate_ci_matches_EmpiricalCalibration_constant_error_model(case):
    """calibrateConfidenceInterval(x, se, convertNullToErrorModel(null)) at 95% and 90%."""
    rows, ref = _case(case)
    null = _r_null(ref)
    for i, r in enumerate(rows):
        if ref["ci95_package"]["lower"][i] is None:
            continue
        lo, hi = calibrate_ci(null, r["logRr"], r["seLogRr"])
        assert lo == pytest.approx(ref["ci95_package"]["lower"][i], abs=1e-10)
        assert hi == pytest.approx(ref["ci95_package"]["upper"][i], abs=1e-10)
        assert calibrated_log_estimate(null, r["logRr"]) == pytest.approx(ref["ci95_package"]["logRr"][i], abs=1e-10)
        lo, hi = calibrate_ci(null, r["logRr"], r["seLogRr"], alpha=0.10)
        assert lo == pytest.approx(ref["ci90_package"]["lower"][i], abs=1e-10)
        assert hi == pytest.approx(ref["ci90_package"]["upper"][i], abs=1e-10)
    assert all(math.isnan(v) for v in calibrate_ci(null, math.nan, 0.2))
    with pytest.raises(ValueError, match="alpha"):
        calibrate_ci(null, 0.1, 0.2, alpha=1.5)


def test_calibration_gate_not_evaluable_fail_and_pass():
    good = SystematicErrorNull(mean=0.05, sd=0.05, n=8, n_dropped=0, log_likelihood=0.0)
    status, reason = calibration_gate(good, 4)
    assert status == "not_evaluable" and "4 usable negative control" in reason and "5" in reason
    assert calibration_gate(None, 12)[0] == "not_evaluable"
    assert calibration_gate(SystematicErrorNull(math.nan, math.nan, 0, 6, math.nan), 6)[0] == "not_evaluable"
    assert calibration_gate(good, 5)[0] == "pass"
    assert calibration_gate(good, 3, min_controls=3)[0] == "pass"
    at_limit = SystematicErrorNull(mean=0.25, sd=0.0, n=8, n_dropped=0, log_likelihood=0.0)  # EASE exactly 0.25
    status, reason = calibration_gate(at_limit, 8)
    assert status == "fail" and "0.250 >= 0.25" in reason
    assert calibration_gate(SystematicErrorNull(-0.1, 0.3, 8, 0, 0.0), 8)[0] == "fail"  # EASE 0.26 from the spread
    assert calibration_gate(at_limit, 8, ease_max=0.3)[0] == "pass"


def test_calibration_moves_a_biased_estimate_toward_the_truth():
    """Synthetic negative controls sharing a known bias N(0.3, 0.05^2) (each estimated with its own
    SE); the exposure's true log effect is 0.2 and its estimate carries the same systematic error.
    Over 300 seeded studies the null recovers the bias, the calibrated estimate is centred on the
    truth, and the calibrated 95% interval covers it about 95% of the time where the naive one
    almost never does."""
    rng = np.random.default_rng(20261201)
    truth, bias_mean, bias_sd = 0.2, 0.3, 0.05
    naive_cover = calibrated_cover = 0
    naive_err, calibrated_err, means = [], [], []
    reps = 300
    for _ in range(reps):
        se = rng.uniform(0.05, 0.2, 25)
        nc = rng.normal(bias_mean, bias_sd, 25) + rng.normal(0, se)
        null = fit_null(nc, se)
        means.append(null.mean)
        se_x = 0.08
        x = truth + rng.normal(bias_mean, bias_sd) + rng.normal(0, se_x)
        naive_cover += abs(x - truth) <= 1.959964 * se_x
        lo, hi = calibrate_ci(null, x, se_x)
        calibrated_cover += lo <= truth <= hi
        naive_err.append(x - truth)
        calibrated_err.append(calibrated_log_estimate(null, x) - truth)
    assert np.mean(means) == pytest.approx(bias_mean, abs=0.01)
    assert abs(np.mean(naive_err)) > 0.25 and abs(np.mean(calibrated_err)) < 0.02
    assert naive_cover / reps < 0.2
    assert 0.90 <= calibrated_cover / reps <= 0.99
    # and on one study, the calibrated p-value of a null exposure is not "significant"
    se = rng.uniform(0.05, 0.2, 25)
    null = fit_null(rng.normal(bias_mean, bias_sd, 25) + rng.normal(0, se), se)
    x0 = bias_mean + 0.01  # true effect 0, estimate biased like the controls
    assert 2 * (1 - 0.5 * (1 + math.erf(abs(x0) / 0.08 / math.sqrt(2)))) < 0.001
    assert calibrate_p(null, x0, 0.08) > 0.5
