"""derive.target_trial on hand-built tables: each eligibility rule excludes the one patient made to
fail it alone (and its attrition row counts exactly that one), the first eligible failure is the
trial, the outcome, censoring and start of treatment follow the definitions of the module doc, the
study's thresholds apply, and a protocol that does not fit the registries is refused in one line
naming the field."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ketaoutcomes.derive.target_trial import FRAME_SCHEMA, TargetTrialMismatch, target_trial_cohort
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import StudySettings

T0 = dt.date(2024, 6, 1)  # time zero of every hand-built failure


def d(days: int) -> dt.date:
    return T0 + dt.timedelta(days=days)


def ts(days: int, hour: int = 10) -> dt.datetime:
    return dt.datetime.combine(d(days), dt.time(hour))


def patient(pid: str, **kw) -> dict:
    return {"patient_id": pid, "site": "S01", "sex": "F", "age_at_index": 40, "prior_failed_trials": 1,
            "diagnosis": "MDD", "weight_kg": 70.0, "observation_start": d(-400), **kw}


def failed(pid: str, cid: str | None = None, *, end: int = 0, days: int = 42, reason: str = "non_response") -> dict:
    return {"course_id": cid or f"{pid}-1", "patient_id": pid, "arm": "ssri", "drug": "sertraline",
            "start_date": d(end - days), "end_date": d(end), "end_reason": reason}


def course(pid: str, cid: str, arm: str, start: int, end: int | None = None) -> dict:
    return {"course_id": cid, "patient_id": pid, "arm": arm, "drug": "ketamine", "start_date": d(start),
            "end_date": None if end is None else d(end), "end_reason": None}


def tables(patients: list[dict], courses: list[dict], sessions: list[tuple[str, int]],
           ratings: list[tuple[str, int, float]]):
    p = pl.DataFrame(patients, schema_overrides={"observation_start": pl.Date, "sex": pl.String,
                                                 "age_at_index": pl.Int64})
    c = pl.DataFrame(courses, schema_overrides={"end_date": pl.Date, "end_reason": pl.String})
    s = pl.DataFrame({"session_id": [f"S{i}" for i in range(len(sessions))], "course_id": [x[0] for x in sessions],
                      "session_ts": [ts(x[1], 9) for x in sessions]}, schema_overrides={"course_id": pl.String,
                                                                                      "session_ts": pl.Datetime("us")})
    m = pl.DataFrame({"patient_id": [r[0] for r in ratings], "assessed_at": [ts(r[1]) for r in ratings],
                      "instrument": ["MADRS"] * len(ratings), "total_score": [float(r[2]) for r in ratings]},
                     schema_overrides={"patient_id": pl.String, "assessed_at": pl.Datetime("us")})
    return p, c, s, m


def study(**target_trial) -> StudySettings:
    return StudySettings(target_trial=target_trial)


def cohort(t, st: StudySettings | None = None):
    return target_trial_cohort(*t, registries=load_registries(), study=st or study())


def rated(pid: str, base: float = 30, later: tuple[tuple[int, float], ...] = ((7, 28), (90, 26))) -> list:
    return [(pid, 0, base), *((pid, day, v) for day, v in later)]


def test_each_eligibility_rule_excludes_the_patient_failing_it_alone():
    pats = [patient("P1"), patient("P2"), patient("P3"), patient("P4", age_at_index=17), patient("P5",
            observation_start=d(-100)), patient("P6"), patient("P7"), patient("P8", sex=None), patient("P9")]
    courses = [failed("P1"), failed("P2", reason="completed"), failed("P3", days=20), failed("P4"), failed("P5"),
               failed("P6"), course("P6", "P6-0", "ketamine_iv", -60, -50), failed("P7"), failed("P8"),
               failed("P9"), course("P9", "P9-0", "ketamine_iv", -300, -200)]  # P9: ketamine before the washout
    ratings = [r for p in ("P1", "P2", "P3", "P4", "P5", "P6", "P8", "P9") for r in rated(p)] + rated("P7")[1:] + \
        [("P7", -20, 30)]  # P7: a rating, but 20 days before time zero (window 14)
    frame, attrition = cohort(tables(pats, courses, [], ratings))
    assert frame["patient_id"].to_list() == ["P1", "P9"]
    assert attrition["excluded"].to_list() == [None, 1, 1, 1, 1, 1, 1, 1]  # P2, P3, P4, P5, P6, P7, P8 in turn
    assert attrition["remaining"].to_list() == [9, 8, 7, 6, 5, 4, 3, 2]
    steps = attrition["step"].to_list()
    assert steps[0] == "patients in the data" and "non_response" in steps[1] and "28 days" in steps[2]
    assert "[18, 90]" in steps[3] and "observation_start" in steps[4] and "ketamine" in steps[5]
    assert "baseline MADRS" in steps[6] and "covariate" in steps[7]
    assert dict(frame.schema) == FRAME_SCHEMA


def test_unknown_lookback_is_kept_unless_the_study_requires_it():
    t = tables([patient("P1", observation_start=None)], [failed("P1")], [], rated("P1"))
    assert cohort(t)[0].height == 1
    strict = StudySettings(target_trial={}, require_known_lookback=True)
    frame, attrition = cohort(t, strict)
    assert frame.height == 0 and attrition["excluded"].to_list()[4] == 1


def test_ketamine_running_into_the_washout_or_into_time_zero_excludes():
    pats = [patient("P1"), patient("P2"), patient("P3")]
    courses = [failed("P1"), course("P1", "P1-0", "esketamine_intranasal", -400, -170),  # ended inside the washout
               failed("P2"), course("P2", "P2-0", "ketamine_oral", -300),  # no end date: still on it
               failed("P3"), course("P3", "P3-2", "ketamine_iv", 0)]  # starts on time zero: a start, not washout
    frame, attrition = cohort(tables(pats, courses, [("P3-2", 0)], [r for p in ("P1", "P2", "P3") for r in rated(p)]))
    assert frame["patient_id"].to_list() == ["P3"] and frame["start_day"].to_list() == [0]
    assert attrition["excluded"].to_list()[5] == 2


def test_the_first_eligible_failure_is_the_trial():
    # P1's first failure is too short; the second (60 days later) is the trial
    courses = [failed("P1", "P1-1", end=-60, days=10), failed("P1", "P1-2", end=0)]
    ratings = [("P1", -60, 33), *rated("P1")]
    frame, attrition = cohort(tables([patient("P1")], courses, [], ratings))
    assert frame.select("failed_course_id", "time_zero", "baseline_score").row(0) == ("P1-2", T0, 30.0)
    assert attrition["remaining"].to_list() == [1] * 8


def test_outcome_censoring_and_start_follow_the_definitions():
    pats = [patient(p) for p in ("P1", "P2", "P3", "P4", "P5")]
    courses = [failed(p) for p in ("P1", "P2", "P3", "P4", "P5")] + [
        course("P1", "P1-2", "ketamine_iv", 3), course("P2", "P2-2", "ssri", 2),
        course("P2", "P2-3", "ketamine_im", 12), course("P4", "P4-2", "ketamine_iv", 40)]
    sessions = [("P1-2", 5), ("P1-2", 8), ("P2-3", 12), ("P4-2", 40)]  # P1's first session on day 5
    ratings = [
        ("P1", 0, 30), ("P1", 0, 31), ("P1", 7, 16), ("P1", 14, 15), ("P1", 21, 20),  # day 0 later: still baseline 31
        ("P2", 0, 30), ("P2", 7, 20), ("P2", 35, 25), ("P2", 120, 10),  # rated past day 90: administrative at 90
        ("P3", 0, 30),  # no rating after time zero: censored at 0
        ("P4", 0, 30), ("P4", 28, 20),  # lost after day 28; the day-40 start is after follow-up ended
        ("P5", -3, 40), ("P5", 1, 20),  # baseline 3 days before; response on day 1
    ]
    frame, _ = cohort(tables(pats, courses, sessions, ratings))
    got = {r["patient_id"]: (r["start_day"], r["start_arm"], r["time"], r["event"], r["end_reason"], r["baseline_score"])
           for r in frame.iter_rows(named=True)}
    assert got == {
        "P1": (5, "ketamine_iv", 14, 1, "outcome", 31.0),  # 15 <= 31/2; 16 is not
        "P2": (12, "ketamine_im", 90, 0, "administrative", 30.0),
        "P3": (None, None, 0, 0, "lost", 30.0),
        "P4": (None, None, 28, 0, "lost", 30.0),
        "P5": (None, None, 1, 1, "outcome", 40.0),
    }


def test_without_sessions_a_course_starts_on_its_start_date():
    p, c, _, m = tables([patient("P1")], [failed("P1"), course("P1", "P1-2", "ketamine_iv", 6)], [], rated("P1"))
    frame, _ = target_trial_cohort(p, c, None, m, registries=load_registries(), study=study())
    assert frame.select("start_day", "start_arm").row(0) == (6, "ketamine_iv")


def test_treatment_arms_thresholds_and_remission_come_from_the_protocol_and_study():
    pats = [patient("P1"), patient("P2")]
    courses = [failed("P1"), course("P1", "P1-2", "ketamine_oral", 2), course("P1", "P1-3", "ketamine_iv", 9),
               failed("P2")]
    ratings = [("P1", 0, 30), ("P1", 7, 20), ("P1", 14, 9), ("P1", 90, 9), ("P2", 0, 9), ("P2", 7, 5)]
    t = tables(pats, courses, [("P1-2", 2), ("P1-3", 9)], ratings)
    iv = study(treatment_arms=["ketamine_iv"])
    frame, _ = cohort(t, iv)
    assert frame.filter(pl.col("patient_id") == "P1").select("start_day", "start_arm", "time").row(0) == (9, "ketamine_iv", 14)
    # the oral course on day 2 is ketamine outside the protocol's arms, before the IV start: a deviation
    assert frame.filter(pl.col("patient_id") == "P1")["other_start_day"].to_list() == [2]
    anyk = cohort(t, study())[0].filter(pl.col("patient_id") == "P1")
    assert anyk.select("start_day", "start_arm", "other_start_day").row(0) == (2, "ketamine_oral", None)
    late_other = tables(pats, [failed("P1"), course("P1", "P1-2", "ketamine_iv", 3), course("P1", "P1-3", "ketamine_oral", 5),
                               failed("P2")], [("P1-2", 3), ("P1-3", 5)], ratings)
    # an outside-arm course after the treatment start is not a deviation from "start"
    assert cohort(late_other, iv)[0].filter(pl.col("patient_id") == "P1")["other_start_day"].to_list() == [None]
    lenient = StudySettings(target_trial={"treatment_arms": ["ketamine_iv"]}, response_reduction=0.3)
    assert cohort(t, lenient)[0].filter(pl.col("patient_id") == "P1")["time"].to_list() == [7]  # 20 <= 0.7 x 30
    frame, attrition = cohort(t, study(outcome="remission"))
    assert frame.select("patient_id", "time", "event").rows() == [("P1", 14, 1)]  # MADRS <= 10; P2 already there
    assert "remission threshold 10" in attrition["step"][7] and attrition["excluded"][7] == 1


def test_extra_and_patient_covariates_of_the_protocol_are_columns():
    st = StudySettings(target_trial={"covariates": ["baseline_score", "site", "employment"]},
                       covariates=["baseline_score", "employment"],
                       extra_covariates={"employment": {"type": "categorical", "levels": ["employed", "unemployed"]}})
    pats = [patient("P1", _extra='{"employment": "employed"}'), patient("P2", _extra="{}")]
    frame, attrition = cohort(tables(pats, [failed("P1"), failed("P2")], [], rated("P1") + rated("P2")), st)
    assert frame.select("patient_id", "site", "employment").rows() == [("P1", "S01", "employed")]
    assert attrition["excluded"][-1] == 1  # P2 has no employment


@pytest.mark.parametrize(("target_trial", "message"), [
    ({"eligibility": {"failed_arm": "SSRI"}},
     'target_trial.eligibility.failed_arm "SSRI" is not an arm of the registry; did you mean "ssri"?'),
    ({"treatment_arms": ["ketamine_nasal"]}, 'target_trial.treatment_arms: "ketamine_nasal" is not an arm of the registry'),
    ({"eligibility": {"failed_arm": "ketamine_iv"}}, 'failed_arm "ketamine_iv" is a ketamine arm'),
    ({"covariates": ["age"]}, 'target_trial.covariates: "age" is not a patient column'),
])
def test_a_protocol_that_does_not_fit_the_registries_is_refused_in_one_line(target_trial, message):
    t = tables([patient("P1")], [failed("P1")], [], rated("P1"))
    with pytest.raises(TargetTrialMismatch) as err:
        cohort(t, study(**target_trial))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("target trial of the study settings given: ")


def test_a_study_without_a_target_trial_is_refused():
    with pytest.raises(TargetTrialMismatch, match="declares no \\[target_trial\\]"):
        target_trial_cohort(*tables([patient("P1")], [failed("P1")], [], rated("P1")), registries=load_registries(),
                            study=StudySettings())


def events(rows: list[tuple[str, int, str]]) -> pl.DataFrame:
    """clinical_events: (patient, day from time zero, event_type)."""
    return pl.DataFrame({"event_id": [f"E{i}" for i in range(len(rows))], "patient_id": [r[0] for r in rows],
                         "event_date": [d(r[1]) for r in rows], "event_type": [r[2] for r in rows]},
                        schema_overrides={"patient_id": pl.String, "event_date": pl.Date, "event_type": pl.String})


NCS = [{"name": "fracture"}, {"name": "infection", "event_types": ["uti", "pneumonia"]}]


def test_negative_controls_count_the_first_event_of_their_types_after_time_zero_up_to_the_end_of_follow_up():
    """Per control: the first event of one of its types dated in [day 1, end of follow-up] (the
    censoring day of the outcome: last rating, or followup_days), else censored there. Events on or
    before time zero, after the end of follow-up, or of other types do not count; a patient who
    reached the outcome is still followed for the control."""
    pats = [patient(p) for p in ("P1", "P2", "P3", "P4")]
    courses = [failed(p) for p in ("P1", "P2", "P3", "P4")]
    ratings = (rated("P1", later=((7, 28), (20, 10), (90, 9)))   # P1: response on day 20, followed to day 90
               + rated("P2", later=((7, 28), (40, 27)))          # P2: lost after day 40
               + rated("P3") + rated("P4"))
    ev = events([("P1", 50, "fracture"),                         # after P1's response: counts
                 ("P1", 0, "uti"), ("P1", -30, "pneumonia"),     # on and before time zero: not
                 ("P2", 41, "fracture"), ("P2", 10, "ed_visit"), # after P2's end of follow-up; another type
                 ("P2", 40, "pneumonia"),                        # on P2's last day: counts
                 ("P3", 1, "fracture"), ("P3", 5, "fracture"),   # the first one
                 ("P3", 30, "pneumonia"), ("P3", 12, "uti"),     # either type; the first
                 ("P4", 91, "uti")])                             # after the administrative end
    frame, _ = target_trial_cohort(*tables(pats, courses, [], ratings), registries=load_registries(),
                                   study=study(negative_controls=NCS), clinical_events=ev)
    assert frame.select("patient_id", "time", "event").rows() == [("P1", 20, 1), ("P2", 40, 0), ("P3", 90, 0),
                                                                  ("P4", 90, 0)]
    got = frame.select("nc_fracture_time", "nc_fracture_event", "nc_infection_time", "nc_infection_event").rows()
    assert got == [(50, 1, 90, 0), (40, 0, 40, 1), (1, 1, 12, 1), (90, 0, 90, 0)]
    assert frame.schema["nc_fracture_time"] == pl.Int64 and frame.schema["nc_fracture_event"] == pl.Int8
    assert frame.columns[:len(FRAME_SCHEMA)] == list(FRAME_SCHEMA)
    # no clinical events (none delivered: an empty table, or none given): no negative-control columns
    for none in (None, ev.clear()):
        plain, _ = target_trial_cohort(*tables(pats, courses, [], ratings), registries=load_registries(),
                                       study=study(negative_controls=NCS), clinical_events=none)
        assert plain.equals(frame.select(plain.columns)) and not any(c.startswith("nc_") for c in plain.columns)


def test_a_negative_control_whose_codes_never_occur_is_refused_unless_they_occur_outside_follow_up():
    pats, courses = [patient("P1")], [failed("P1")]
    t = tables(pats, courses, [], rated("P1"))
    st = study(negative_controls=[{"name": "fracture", "event_types": ["fractur"]}, {"name": "infection"}])
    with pytest.raises(TargetTrialMismatch) as err:
        target_trial_cohort(*t, registries=load_registries(), study=st,
                            clinical_events=events([("P1", 3, "fracture"), ("P1", -5, "infection")]))
    text = str(err.value)
    assert "\n" not in text and "'fracture' counts event_type \"fractur\", which no row of clinical_events has" in text
    assert 'did you mean "fracture"' in text and "infection" not in text  # infection occurs (before time zero)
    # a code in the data, but never after an eligible patient's time zero: kept with no events
    frame, _ = target_trial_cohort(*t, registries=load_registries(), study=study(negative_controls=[{"name": "infection"}]),
                                   clinical_events=events([("P1", -5, "infection")]))
    assert frame.select("nc_infection_time", "nc_infection_event").rows() == [(90, 0)]
