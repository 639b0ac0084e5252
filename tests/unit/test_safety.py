"""Session-level safety rates by arm (models/safety.py) on hand-built frames and the synthetic cohort."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from ketaoutcomes.models.safety import per_patient_safety, safety_tables, session_safety, wilson_interval
from ketaoutcomes.settings import SimulationSettings
from ketaoutcomes.simulate import DEFAULT_ARM_PARAMETERS, simulate_frames

T0 = dt.datetime(2024, 3, 4, 9, 0)
SES_SCHEMA = {
    "session_id": pl.String, "course_id": pl.String, "session_ts": pl.Datetime("us"), "dose_mg": pl.Float64,
    "phase": pl.String, "sbp_pre": pl.Int32, "dbp_pre": pl.Int32, "sbp_peak": pl.Int32, "dbp_peak": pl.Int32,
    "dissociation_score": pl.Float64,
}


def sessions_frame(rows: list[tuple]) -> pl.DataFrame:
    """rows: (session_id, course_id, sbp_pre, dbp_pre, sbp_peak, dbp_peak, cadss)."""
    return pl.DataFrame(
        [
            {"session_id": s, "course_id": c, "session_ts": T0 + dt.timedelta(days=i), "dose_mg": 35.0,
             "phase": "induction", "sbp_pre": a, "dbp_pre": b, "sbp_peak": p, "dbp_peak": q, "dissociation_score": d}
            for i, (s, c, a, b, p, q, d) in enumerate(rows)
        ],
        schema=SES_SCHEMA,
    )


def ae_frame(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"ae_id": f"AE{i}", "session_id": s, "ae_type": t, "severity": "mild"} for i, (s, t) in enumerate(rows)],
        schema={"ae_id": pl.String, "session_id": pl.String, "ae_type": pl.String, "severity": pl.String},
    )


def courses_frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame([{"course_id": c, "patient_id": p, "arm": a} for c, p, a in rows])


@pytest.fixture
def small():
    courses = courses_frame([("C1", "P1", "ketamine_iv"), ("C2", "P2", "ketamine_iv"), ("C3", "P3", "ketamine_im"),
                             ("C4", "P4", "ssri")])
    sessions = sessions_frame([
        # exactly +40 systolic, and peak SBP exactly 180 -> both BP events
        ("S1", "C1", 140, 80, 180, 90, 10.0),
        # exactly +25 diastolic, and peak DBP exactly 110 -> both BP events
        ("S2", "C1", 120, 85, 150, 110, 4.0),
        # peak SBP missing -> out of both BP denominators
        ("S3", "C2", 130, 80, None, 95, None),
        # one below every threshold: +39 / +24, 179 / 109 -> no BP event
        ("S4", "C2", 140, 85, 179, 109, 5.0),
        ("S5", "C3", 120, 80, 130, 85, 2.0),
        ("S6", "C3", 122, 78, 131, 84, 1.0),
        # SSRI visit: no vitals, no CADSS
        ("S7", "C4", None, None, None, None, None),
    ])
    aes = ae_frame([("S1", "dissociation"), ("S1", "dissociation"), ("S1", "nausea"), ("S2", "nausea"),
                    ("S4", "headache"), ("S7", "nausea")])
    return sessions, aes, courses


def row(frame: pl.DataFrame, arm: str, event: str) -> dict:
    r = frame.filter((pl.col("arm") == arm) & (pl.col("event") == event))
    assert r.height == 1
    return r.row(0, named=True)


def test_rates_and_denominators(small):
    out = session_safety(*small)
    assert set(out.columns) >= {"arm", "event", "sessions", "events", "rate", "lower", "upper"}
    # one row per arm and event
    assert out.height == 3 * 8
    d = row(out, "ketamine_iv", "dissociation")
    # AE-based: denominator every session; the duplicate AE row on S1 counts once
    assert (d["sessions"], d["events"], d["rate"]) == (4, 1, 0.25)
    n = row(out, "ketamine_iv", "nausea")
    assert (n["sessions"], n["events"], n["rate"]) == (4, 2, 0.5)
    h = row(out, "ketamine_iv", "headache")
    assert (h["sessions"], h["events"]) == (4, 1)
    assert row(out, "ketamine_iv", "hypertension")["events"] == 0
    # CADSS > 4: S1 (10) and S4 (5); S2 (4) is not above the cut-off; S3 has no score
    c = row(out, "ketamine_iv", "dissociation_cadss")
    assert (c["sessions"], c["events"]) == (3, 2)
    for r in out.filter(pl.col("rate").is_not_null()).iter_rows(named=True):
        assert 0 <= r["lower"] <= r["rate"] <= r["upper"] <= 1


def test_bp_events_at_exact_thresholds(small):
    out = session_safety(*small)
    rise = row(out, "ketamine_iv", "bp_rise_40_25")
    high = row(out, "ketamine_iv", "bp_180_110")
    # S3 (peak SBP missing) is out of the denominator; S1 and S2 sit exactly on the thresholds, S4 just below
    assert (rise["sessions"], rise["events"]) == (3, 2)
    assert (high["sessions"], high["events"]) == (3, 2)
    assert row(out, "ketamine_im", "bp_rise_40_25")["sessions"] == 2


def test_arm_without_vitals_gets_null_with_note(small):
    out = session_safety(*small)
    bp = row(out, "ssri", "bp_rise_40_25")
    assert bp["sessions"] == 0 and bp["rate"] is None and bp["upper"] is None
    assert "no session" in bp["note"]
    assert row(out, "ssri", "nausea")["events"] == 1


def test_zero_event_arm_has_finite_upper_bound(small):
    out = session_safety(*small)
    z = row(out, "ketamine_im", "dissociation")
    assert z["events"] == 0 and z["rate"] == 0.0 and z["lower"] == 0.0
    assert math.isfinite(z["upper"]) and 0 < z["upper"] < 1
    # conservative: effective sample size = number of patients (1 here)
    assert z["upper"] == pytest.approx(wilson_interval(0, 1)[1])
    assert z["note"] and "patients" in z["note"]
    # no NaN anywhere without a note
    bad = out.filter(pl.col("upper").is_null() | pl.col("upper").is_nan())
    assert bad.filter(pl.col("note").is_null()).height == 0


def test_wilson_interval_known_values():
    # Wilson 95% for 0/10: upper = z^2 / (10 + z^2)
    z = 1.959963984540054
    assert wilson_interval(0, 10)[1] == pytest.approx(z * z / (10 + z * z))
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2365931, abs=1e-6) and hi == pytest.approx(0.7634069, abs=1e-6)


def test_cluster_robust_interval_wider_when_events_cluster():
    # 5 patients x 10 sessions; 2 patients have an event at every session, 3 never
    crs, ses, aes = [], [], []
    for i in range(5):
        crs.append((f"C{i}", f"P{i}", "ketamine_iv"))
        for j in range(10):
            sid = f"S{i}_{j}"
            ses.append((sid, f"C{i}", 120, 80, 130, 85, 1.0))
            if i < 2:
                aes.append((sid, "dissociation"))
    out = session_safety(sessions_frame(ses), ae_frame(aes), courses_frame(crs))
    d = row(out, "ketamine_iv", "dissociation")
    assert d["rate"] == pytest.approx(0.4)
    naive_lo, naive_hi = wilson_interval(20, 50)
    assert d["upper"] - d["lower"] > 1.5 * (naive_hi - naive_lo)
    assert d["deff"] > 1
    # the design effect is the cluster-robust (CR1) variance of statsmodels' intercept-only fit over the binomial one
    y = np.array([1.0 if i < 2 else 0.0 for i in range(5) for _ in range(10)])
    groups = np.repeat(np.arange(5), 10)
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": groups})
    assert d["deff"] == pytest.approx(fit.bse[0] ** 2 / (0.4 * 0.6 / 50), rel=1e-9)


def test_per_patient_safety(small):
    out = per_patient_safety(*small)
    d = row(out, "ketamine_iv", "dissociation")
    assert (d["patients"], d["patients_with_event"], d["rate"]) == (2, 1, 0.5)
    assert (d["lower"], d["upper"]) == pytest.approx(wilson_interval(1, 2))
    bp = row(out, "ketamine_iv", "bp_rise_40_25")
    # P2 has S4 with full BP data, so both patients are in the denominator; only P1 has an event
    assert (bp["patients"], bp["patients_with_event"]) == (2, 1)
    z = row(out, "ketamine_im", "dissociation")
    assert z["rate"] == 0 and math.isfinite(z["upper"]) and z["upper"] > 0
    assert row(out, "ssri", "bp_180_110")["note"] is not None


def test_alpha_validated(small):
    with pytest.raises(ValueError):
        session_safety(*small, alpha=0)


@pytest.fixture(scope="module")
def cohort():
    return simulate_frames(SimulationSettings(n_patients=2000, seed=1))


def test_synthetic_ketamine_iv_dissociation_near_generator(cohort):
    params = DEFAULT_ARM_PARAMETERS["ketamine_iv"]
    p_gen = params.ae_per_session["dissociation"]
    # no decay on this arm: the generator's per-session probability is constant
    assert p_gen == 0.6 and params.ae_dissociation_decay == 1.0
    out = session_safety(cohort["sessions"], cohort["adverse_events"], cohort["courses"])
    d = row(out, "ketamine_iv", "dissociation")
    # what the generator actually wrote: distinct ketamine_iv sessions with a dissociation AE row
    iv_sessions = cohort["sessions"].join(
        cohort["courses"].filter(pl.col("arm") == "ketamine_iv").select("course_id"), on="course_id", how="semi")
    written = (cohort["adverse_events"].filter(pl.col("ae_type") == "dissociation")
               .join(iv_sessions, on="session_id", how="semi").get_column("session_id").n_unique())
    assert d["sessions"] == iv_sessions.height and d["events"] == written
    assert abs(d["rate"] - p_gen) < 0.05
    assert d["lower"] < d["rate"] < d["upper"] and d["upper"] - d["lower"] < 0.1
    # ssri has no dissociation: zero rate, finite upper bound
    s = row(out, "ssri", "dissociation")
    assert s["events"] == 0 and 0 < s["upper"] < 0.05


def test_session_safety_is_bit_identical_whatever_the_row_order(cohort):
    """Issue 12 (reproduce): two runs on identical data gave results_safety differing in the last digit.
    The per-patient counts come out of polars' group_by in an arbitrary order and the CR1 variance summed
    them with np.sum, whose rounding depends on the order; math.fsum is exactly rounded. Shuffled inputs
    (and repeated runs, which shuffle the group order themselves) give the same bits."""
    sessions, aes, courses = cohort["sessions"], cohort["adverse_events"], cohort["courses"]
    first = session_safety(sessions, aes, courses)
    for seed in range(6):
        again = session_safety(sessions.sample(fraction=1.0, shuffle=True, seed=seed),
                               aes.sample(fraction=1.0, shuffle=True, seed=seed + 100),
                               courses.sample(fraction=1.0, shuffle=True, seed=seed + 200))
        assert again.equals(first, null_equal=True)
        for c in ("rate", "lower", "upper", "deff", "n_eff"):  # bit for bit, not to a tolerance
            a, b = first[c].to_numpy(), again[c].to_numpy()
            assert np.array_equal(a.view(np.int64), b.view(np.int64)), c


def test_safety_tables_are_both_tables_and_count_only_the_courses_given(small):
    """safety_tables (the analysis's one pass) equals session_safety and per_patient_safety; given a
    subset of the courses, it counts their sessions and adverse events only, as the two functions do
    on sessions and adverse events filtered to those courses first."""
    sessions, ae, courses = small
    both = safety_tables(sessions, ae, courses)
    assert both[0].equals(session_safety(*small)) and both[1].equals(per_patient_safety(*small))
    c = courses.filter(pl.col("course_id") != courses["course_id"][0])
    s = sessions.join(c.select("course_id"), on="course_id", how="semi")
    a = ae.join(s.select("session_id"), on="session_id", how="semi")
    sub = safety_tables(sessions, ae, c)
    assert sub[0].equals(session_safety(s, a, c)) and sub[1].equals(per_patient_safety(s, a, c))
    assert not sub[0].equals(both[0])  # the course left out had sessions that counted
