"""ADSL / ADTTE derivation on small hand-built cases.

Each case is checked against what the conventions in endpoints.md say by hand:
baseline = last rating in [first dose - 14 d, first dose]; response = first
rating <= 50% of baseline; censoring at the last assessment; relapse = MADRS >= 22
confirmed by the next rating 5-15 days later.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ketaoutcomes.derive import derive_all
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import StudySettings

T0 = dt.datetime(2024, 3, 4, 9, 0)  # first dose of every hand-built course


def day(d: float, hour: int = 10) -> dt.datetime:
    return (T0 + dt.timedelta(days=d)).replace(hour=hour, minute=0)


def make(courses: list[dict], scores: list[tuple[str, float, float]], sessions: list[dict] | None = None,
         lookback: dict[str, int | None] | None = None):
    pids = sorted({c["patient_id"] for c in courses} | {s[0] for s in scores})
    lookback = lookback or {}
    patients = pl.DataFrame({
        "patient_id": pids,
        "site": ["A"] * len(pids),
        "sex": ["F"] * len(pids),
        "age_at_index": [40] * len(pids),
        "prior_failed_trials": [2] * len(pids),
        "diagnosis": ["MDD"] * len(pids),
        "weight_kg": [70.0] * len(pids),
        "observation_start": [None if lookback.get(p, 365) is None else T0.date() - dt.timedelta(days=lookback.get(p, 365))
                              for p in pids],
    }, schema_overrides={"observation_start": pl.Date})
    cdf = pl.DataFrame([
        {
            "course_id": c["course_id"], "patient_id": c["patient_id"], "arm": c.get("arm", "ketamine_iv"),
            "drug": "ketamine", "start_date": c.get("start_date", T0.date()), "end_date": c.get("end_date"),
            "end_reason": c.get("end_reason"), "concomitant_ssri": False, "concomitant_benzodiazepine": False,
        }
        for c in courses
    ], schema_overrides={"end_date": pl.Date, "end_reason": pl.String})
    if sessions is None:
        sessions = [{"session_id": f"S{c['course_id']}", "course_id": c["course_id"],
                     "session_ts": T0 if c.get("start_date", T0.date()) == T0.date()
                     else dt.datetime.combine(c["start_date"], dt.time(9)),
                     "phase": "induction"} for c in courses]
    sdf = pl.DataFrame(sessions)
    mood = pl.DataFrame(
        [{"patient_id": p, "assessed_at": day(d), "instrument": "MADRS", "total_score": float(v)} for p, d, v in scores]
    )
    return patients, cdf, sdf, mood


def derive(courses, scores, sessions=None, lookback=None, **study_kw):
    p, c, s, m = make(courses, scores, sessions, lookback)
    return derive_all(p, c, s, m, registries=load_registries(), study=StudySettings(**study_kw))


def row(res, pid: str, paramcd: str) -> dict:
    rows = res.adtte.filter((pl.col("USUBJID") == pid) & (pl.col("PARAMCD") == paramcd)).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def test_response_at_first_visit_with_half_baseline():
    # baseline 30 the day before; 16 is not a response (> 15), 15 on day 3 is.
    res = derive([{"course_id": "C1", "patient_id": "P1"}],
                 [("P1", -1, 30), ("P1", 1, 20), ("P1", 2, 16), ("P1", 3, 15), ("P1", 7, 9)])
    r = row(res, "P1", "TTRESP")
    assert (r["CNSR"], r["AVAL"], r["ADT"]) == (0, 3.0, day(3))
    assert r["EVSCORE"] == 15
    rem = row(res, "P1", "TTREM")  # MADRS <= 10 first on day 7
    assert (rem["CNSR"], rem["AVAL"]) == (0, 7.0)


def test_baseline_is_last_rating_in_window_not_worst():
    # worst (40) is 10 days before; the last (24) is 2 days before -> response needs <= 12
    res = derive([{"course_id": "C1", "patient_id": "P1"}],
                 [("P1", -10, 40), ("P1", -2, 24), ("P1", 2, 18), ("P1", 5, 12)])
    assert res.adsl["BASE"].to_list() == [24.0]
    assert row(res, "P1", "TTRESP")["AVAL"] == 5.0


def test_rating_later_on_first_dose_day_is_post_baseline_day_0():
    # a rating at 10:00 after a 09:00 dose is after the origin: day 0, not baseline
    res = derive([{"course_id": "C1", "patient_id": "P1"}], [("P1", -1, 30), ("P1", 0, 14)])
    r = row(res, "P1", "TTRESP")
    assert (r["CNSR"], r["AVAL"]) == (0, 0.0)


def test_no_response_is_censored_at_last_assessment():
    res = derive([{"course_id": "C1", "patient_id": "P1"}],
                 [("P1", -1, 30), ("P1", 3, 25), ("P1", 10, 20), ("P1", 21, 18)])
    r = row(res, "P1", "TTRESP")
    assert (r["CNSR"], r["AVAL"], r["ADT"]) == (1, 21.0, day(21))
    assert r["EVNTDESC"] is None and "last assessment" in r["CNSDTDSC"]


def test_patient_without_baseline_is_excluded_and_counted():
    res = derive(
        [{"course_id": "C1", "patient_id": "P1"}, {"course_id": "C2", "patient_id": "P2"}],
        [("P1", -1, 30), ("P1", 3, 10), ("P2", -20, 30), ("P2", 3, 10)],  # P2's only pre-dose rating is 20 d before
    )
    assert res.adsl.filter(pl.col("USUBJID") == "P2")["ANLFL"].item() == "N"
    assert res.adtte.filter(pl.col("USUBJID") == "P2").is_empty()
    att = res.attrition.filter(pl.col("arm") == "(all)").sort("step")
    base_step = att.filter(pl.col("rule").str.starts_with("baseline"))
    assert base_step["n_remaining"].item() == 1 and base_step["n_excluded"].item() == 1


def test_no_post_baseline_rating_is_excluded_and_counted():
    res = derive([{"course_id": "C1", "patient_id": "P1"}, {"course_id": "C2", "patient_id": "P2"}],
                 [("P1", -1, 30), ("P2", -1, 30), ("P2", 3, 20)])
    assert res.adsl.sort("USUBJID")["ANLFL"].to_list() == ["N", "Y"]
    assert res.adtte.filter(pl.col("USUBJID") == "P1").is_empty()
    rule = res.attrition.filter((pl.col("arm") == "(all)") & pl.col("rule").str.starts_with("at least one MADRS rating"))
    assert (rule["n_remaining"].item(), rule["n_excluded"].item()) == (1, 1)
    # the endpoints' own populations follow, each rule marked with its endpoint
    after = res.attrition.filter(pl.col("step") > rule["step"].item())
    assert set(after["paramcd"]) == {"TTREM", "TTRELAPS", "TTSIRES"}
    assert all(f"({code}): " in r for code, r in after.select("paramcd", "rule").iter_rows())
    assert res.attrition.filter(pl.col("step") <= rule["step"].item())["paramcd"].is_null().all()


def test_responder_without_later_rating_has_relapse_cnsr_3():
    res = derive([{"course_id": "C1", "patient_id": "P1"}], [("P1", -1, 30), ("P1", 3, 12)])
    r = row(res, "P1", "TTRELAPS")
    assert (r["CNSR"], r["AVAL"]) == (3, 0.0)


def test_confirmed_relapse_dated_at_first_high_rating():
    # response day 3 (12 <= 15); 25 on day 20, confirmed by 24 on day 27 (7 days later)
    res = derive([{"course_id": "C1", "patient_id": "P1"}],
                 [("P1", -1, 30), ("P1", 3, 12), ("P1", 10, 14), ("P1", 20, 25), ("P1", 27, 24), ("P1", 40, 26)])
    r = row(res, "P1", "TTRELAPS")
    assert (r["CNSR"], r["STARTDT"], r["ADT"], r["AVAL"]) == (0, day(3), day(20), 17.0)


def test_unconfirmed_relapse_is_not_an_event():
    # 25 on day 20 but the next rating (day 27) is 15: not a relapse; censored at the last rating
    res = derive([{"course_id": "C1", "patient_id": "P1"}],
                 [("P1", -1, 30), ("P1", 3, 12), ("P1", 20, 25), ("P1", 27, 15), ("P1", 35, 14)])
    r = row(res, "P1", "TTRELAPS")
    assert (r["CNSR"], r["AVAL"]) == (1, 32.0)


def test_relapse_confirmation_outside_window_or_after_a_low_rating_does_not_count():
    # high on day 20; next high only 20 days later (> 15): unconfirmed. High on day 50, low on day 52,
    # high on day 57: the low rating in between breaks the confirmation.
    res = derive([{"course_id": "C1", "patient_id": "P1"}],
                 [("P1", -1, 30), ("P1", 3, 12), ("P1", 20, 25), ("P1", 40, 12),
                  ("P1", 50, 25), ("P1", 52, 12), ("P1", 57, 25), ("P1", 60, 12)])
    assert row(res, "P1", "TTRELAPS")["CNSR"] == 1


def test_relapse_high_at_last_rating_is_cnsr_4():
    res = derive([{"course_id": "C1", "patient_id": "P1"}], [("P1", -1, 30), ("P1", 3, 12), ("P1", 20, 25)])
    r = row(res, "P1", "TTRELAPS")
    assert (r["CNSR"], r["AVAL"]) == (4, 17.0)


def test_relapse_confirmation_window_is_a_setting():
    scores = [("P1", -1, 30), ("P1", 3, 12), ("P1", 20, 25), ("P1", 23, 24), ("P1", 40, 12)]
    # default: 23 is only 3 days after 20 (< 5), and the next one is low -> no relapse
    assert row(derive([{"course_id": "C1", "patient_id": "P1"}], scores), "P1", "TTRELAPS")["CNSR"] == 1
    res = derive([{"course_id": "C1", "patient_id": "P1"}], scores, confirm_min_days=2)
    assert row(res, "P1", "TTRELAPS")["CNSR"] == 0


def test_switch_ends_follow_up_with_its_own_code():
    # SSRI course switched on day 28 to ketamine; the day-30 response belongs to the new course
    courses = [
        {"course_id": "C1", "patient_id": "P1", "arm": "ssri", "end_date": day(28).date(), "end_reason": "switched"},
        {"course_id": "C2", "patient_id": "P1", "arm": "ketamine_iv", "start_date": day(29).date()},
    ]
    res = derive(courses, [("P1", -1, 30), ("P1", 14, 25), ("P1", 27, 22), ("P1", 31, 10)])
    assert res.adsl["COURSEID"].to_list() == ["C1"]  # index course only
    r = row(res, "P1", "TTRESP")
    assert (r["ARM"], r["CNSR"], r["AVAL"]) == ("ssri", 2, 27.0)


@pytest.mark.parametrize("reason", ["non_response", "completed"])
def test_a_course_ended_for_non_response_ends_like_a_completed_one(reason):
    # An SSRI that failed on day 28, ketamine from day 35 (the target-trial export of docs/import-format.md):
    # non_response is not an intercurrent event, so ratings between the end and the next course still count
    # for the SSRI course, and the next course's start ends its follow-up, exactly as after "completed".
    courses = [
        {"course_id": "C1", "patient_id": "P1", "arm": "ssri", "end_date": day(28).date(), "end_reason": reason},
        {"course_id": "C2", "patient_id": "P1", "arm": "ketamine_iv", "start_date": day(35).date()},
        {"course_id": "C3", "patient_id": "P2", "arm": "ssri", "end_date": day(28).date(), "end_reason": reason},
        {"course_id": "C4", "patient_id": "P2", "arm": "ketamine_iv", "start_date": day(35).date()},
    ]
    res = derive(courses, [("P1", -1, 30), ("P1", 14, 25), ("P1", 31, 14), ("P1", 36, 5),
                           ("P2", -1, 30), ("P2", 14, 25), ("P2", 31, 20), ("P2", 36, 5)])
    assert res.adsl["ICEREAS"].to_list() == ["new course", "new course"]
    assert res.adsl["DCREAS"].to_list() == [reason, reason]
    r1, r2 = row(res, "P1", "TTRESP"), row(res, "P2", "TTRESP")
    assert (r1["CNSR"], r1["AVAL"]) == (0, 31.0)  # a response seen after the end, before ketamine
    assert (r2["CNSR"], r2["AVAL"]) == (2, 31.0)  # the day-36 rating is in the ketamine course's time


def test_instrument_thresholds_come_from_registry_and_study():
    res = derive([{"course_id": "C1", "patient_id": "P1"}], [("P1", -1, 30), ("P1", 5, 12)], remission_max=12)
    assert row(res, "P1", "TTREM")["CNSR"] == 0
    with pytest.raises(ValueError, match="not in the instruments registry"):
        derive([{"course_id": "C1", "patient_id": "P1"}], [("P1", -1, 30)], instrument="NOPE")


def test_baseline_already_in_remission_left_out_of_ttrem_with_an_attrition_row():
    res = derive([{"course_id": "C1", "patient_id": "P1"}], [("P1", -1, 9), ("P1", 5, 4)])
    assert res.adtte.filter(pl.col("PARAMCD") == "TTREM").is_empty()
    row = res.attrition.filter((pl.col("paramcd") == "TTREM") & (pl.col("arm") == "(all)")).row(0, named=True)
    assert "already in remission" in row["rule"] and (row["n_remaining"], row["n_excluded"]) == (0, 1)


def test_every_declared_endpoint_has_one_derivation():
    from ketaoutcomes.derive import DERIVATIONS
    from ketaoutcomes.endpoints import ENDPOINTS

    assert set(DERIVATIONS) == set(ENDPOINTS)


def test_non_responders_leave_the_relapse_population_with_an_attrition_row():
    # P1 responds (30 -> 10), P2 does not (30 -> 25)
    res = derive([{"course_id": "C1", "patient_id": "P1"}, {"course_id": "C2", "patient_id": "P2"}],
                 [("P1", -1, 30), ("P1", 3, 10), ("P2", -1, 30), ("P2", 3, 25)])
    row = res.attrition.filter((pl.col("paramcd") == "TTRELAPS") & (pl.col("arm") == "(all)")).row(0, named=True)
    assert (row["n_remaining"], row["n_excluded"]) == (1, 1)
    assert set(res.adtte.filter(pl.col("PARAMCD") == "TTRELAPS")["USUBJID"]) == {"P1"}


def test_time_at_risk_cuts_follow_up_with_its_own_code():
    # response on day 30 is after a 21-day time at risk: censored at the day-14 rating, CNSR 5
    scores = [("P1", -1, 30), ("P1", 7, 25), ("P1", 14, 20), ("P1", 30, 10)]
    res = derive([{"course_id": "C1", "patient_id": "P1"}], scores, time_at_risk_days=21)
    r = row(res, "P1", "TTRESP")
    assert (r["CNSR"], r["AVAL"]) == (5, 14.0) and "time at risk" in r["CNSDTDSC"]
    assert row(derive([{"course_id": "C1", "patient_id": "P1"}], scores), "P1", "TTRESP")["CNSR"] == 0


def test_only_the_study_endpoints_are_derived():
    res = derive([{"course_id": "C1", "patient_id": "P1"}], [("P1", -1, 30), ("P1", 3, 12)], endpoints=["TTRESP"])
    assert res.adtte["PARAMCD"].unique().to_list() == ["TTRESP"]


def test_new_user_rule_needs_washout_days_of_records_before_the_index_course():
    # records 200 d before the course (a new user), 100 d (possibly exposed just before: out),
    # 180 d exactly (in), unknown (kept with a note unless require_known_lookback)
    courses = [{"course_id": f"C{i}", "patient_id": f"P{i}"} for i in range(1, 5)]
    scores = [(f"P{i}", d, v) for i in range(1, 5) for d, v in ((-1, 30), (3, 12))]
    lookback = {"P1": 200, "P2": 100, "P3": 180, "P4": None}
    res = derive(courses, scores, lookback=lookback)
    adsl = {r["USUBJID"]: r for r in res.adsl.to_dicts()}
    assert [adsl[p]["LOOKBACK"] for p in ("P1", "P2", "P3", "P4")] == [200, 100, 180, None]
    assert [adsl[p]["NEWUSFL"] for p in ("P1", "P2", "P3", "P4")] == ["Y", "N", "Y", None]
    assert [adsl[p]["ANLFL"] for p in ("P1", "P2", "P3", "P4")] == ["Y", "N", "Y", "Y"]
    step = res.attrition.filter(pl.col("rule").str.starts_with("new user") & (pl.col("arm") == "(all)")).row(0, named=True)
    assert (step["n_remaining"], step["n_excluded"]) == (3, 1)
    assert "washout" in step["rule"] and "unknown look-back kept" in step["rule"]
    assert any("1 course(s) without observation_start" in n.text and "kept" in n.text for n in res.notes)

    strict = derive(courses, scores, lookback=lookback, require_known_lookback=True, washout_days=90)
    flags = dict(strict.adsl.select("USUBJID", "ANLFL").iter_rows())
    assert flags == {"P1": "Y", "P2": "Y", "P3": "Y", "P4": "N"}
    step = strict.attrition.filter(pl.col("rule").str.starts_with("new user") & (pl.col("arm") == "(all)")).row(0, named=True)
    assert (step["n_remaining"], step["n_excluded"]) == (3, 1) and ">= 90 d" in step["rule"]


def test_records_starting_after_the_course_are_a_data_error_said_in_a_note():
    courses = [{"course_id": "C1", "patient_id": "P1"}]
    res = derive(courses, [("P1", -1, 30), ("P1", 3, 12)], lookback={"P1": -5})
    assert res.adsl["NEWUSFL"].to_list() == ["N"] and res.adsl["ANLFL"].to_list() == ["N"]
    assert any("observation_start lies after the start of their first course" in n.text and n.severity == "warning"
               for n in res.notes)


def test_assessment_days_are_each_courses_distinct_rating_days_inside_follow_up_in_order():
    # by hand: P1 rated twice on day 3 (one day in the grid), P2's ratings given out of order, the
    # baseline (day -1) and a rating after P2's course ended (follow-up ends the day after: new course)
    # are not follow-up; checked against the definition (the distinct pairs, sorted)
    courses = [{"course_id": "C1", "patient_id": "P1"},
               {"course_id": "C2", "patient_id": "P2", "end_date": day(9).date(), "end_reason": "switched"},
               {"course_id": "C3", "patient_id": "P2", "start_date": day(12).date()}]
    scores = [("P2", 7, 20), ("P1", -1, 30), ("P1", 3, 25), ("P2", -1, 28), ("P2", 2, 22), ("P1", 1, 26),
              ("P2", 14, 12)]
    p, c, s, m = make(courses, scores)
    m = pl.concat([m, pl.DataFrame([{"patient_id": "P1", "assessed_at": day(3, hour=16), "instrument": "MADRS",
                                     "total_score": 24.0}])])
    res = derive_all(p, c, s, m, registries=load_registries(), study=StudySettings())
    assert res.visits.rows() == [("P1", 1.0), ("P1", 3.0), ("P2", 2.0), ("P2", 7.0)]


def test_index_course_and_next_start_are_as_a_window_over_each_patients_courses():
    """The index course (first by start date, then course id) and the next course's start that ends its
    follow-up, read off neighbouring rows of the sorted courses: checked against the definition as a
    window over patient_id, on random patients with one to four courses and tied start dates."""
    import numpy as np

    rng = np.random.default_rng(11)
    courses = [{"course_id": f"C{int(k):03d}", "patient_id": f"P{i:02d}",
                "start_date": T0.date() + dt.timedelta(days=int(rng.integers(0, 4)) * 30)}
               for i in range(40) for k in rng.choice(900, size=int(rng.integers(1, 5)), replace=False)]
    patients, cdf, sdf, mood = make(courses, [("P00", -1, 30)])
    adsl = derive_all(patients, cdf, sdf, mood, registries=load_registries(), study=StudySettings()).adsl
    want = (cdf.sort("patient_id", "start_date", "course_id")
            .with_columns(pl.col("start_date").shift(-1).over("patient_id").alias("next"),
                          pl.int_range(pl.len()).over("patient_id").alias("seq"))
            .filter(pl.col("seq") == 0)
            .select(pl.col("patient_id").alias("USUBJID"), pl.col("course_id").alias("COURSEID"),
                    pl.col("next").cast(pl.Datetime("us")).alias("FUENDTM")))
    assert want.height == 40 and want["FUENDTM"].null_count() not in (0, 40)
    assert adsl.select("USUBJID", "COURSEID", "FUENDTM").sort("USUBJID").equals(want)


def test_relapse_next_low_rating_is_as_a_window_over_each_patients_ratings():
    """relapse_rows reads each rating's next rating below threshold (of the same patient) off
    neighbouring rows: checked against the window definition (shift then backward fill over the
    patient), through the confirmed relapses it decides, on random ratings of a few patients."""
    import numpy as np

    from ketaoutcomes.derive.relapse import relapse_rows

    rng = np.random.default_rng(5)
    study = StudySettings()
    ratings = pl.DataFrame({"USUBJID": [f"P{int(i)}" for i in rng.integers(0, 30, 450)],
                            "assessed_at": [day(int(d)) for d in rng.integers(1, 120, 450)],
                            "total_score": rng.integers(12, 32, 450).astype(float)}).unique(["USUBJID", "assessed_at"])
    responders = pl.DataFrame({"USUBJID": [f"P{i}" for i in range(30)], "COURSEID": [f"C{i}" for i in range(30)],
                               "ARM": "ketamine_iv", "STARTDT": T0, "ICEREAS": pl.Series([None] * 30, dtype=pl.String)})
    got = relapse_rows(responders, ratings, threshold=22.0, study=study, instrument="MADRS").sort("USUBJID")
    r = (ratings.sort("USUBJID", "assessed_at").with_columns((pl.col("total_score") >= 22).alias("high"))
         .with_columns(pl.when(~pl.col("high")).then(pl.col("assessed_at")).shift(-1).over("USUBJID").alias("nl"))
         .with_columns(pl.col("nl").backward_fill().over("USUBJID").alias("next_low")))
    lo, hi = study.outcomes.confirm_min_days, study.outcomes.confirm_max_days
    # the next rating at least lo days later (ratings are 1+ day apart here, so a scan per row is enough)
    rows = r.to_dicts()
    firsts = {}
    for i, x in enumerate(rows):
        later = [y for y in rows[i + 1:] if y["USUBJID"] == x["USUBJID"] and y["assessed_at"] >= x["assessed_at"] + dt.timedelta(days=lo)]
        y = later[0] if later else None
        ok = (x["high"] and y is not None and y["assessed_at"] <= x["assessed_at"] + dt.timedelta(days=hi) and y["high"]
              and (x["next_low"] is None or x["next_low"] > y["assessed_at"]))
        if ok and x["assessed_at"] <= T0 + dt.timedelta(days=study.cohort.time_at_risk_days or 10**6):
            firsts.setdefault(x["USUBJID"], x["assessed_at"])
    events = got.filter(pl.col("CNSR") == 0)
    assert 0 < events.height < 30
    assert dict(zip(events["USUBJID"], events["ADT"])) == firsts
