"""TTSIRES: time to resolution of suicidal ideation (derive/suicidal_ideation.py) on hand-built cases."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ketaoutcomes.derive.adam import ADTTE_COLUMNS, derive_adsl
from ketaoutcomes.derive.suicidal_ideation import derive_si_resolution
from ketaoutcomes.settings import SimulationSettings, StudySettings
from ketaoutcomes.simulate import simulate_frames

T0 = dt.datetime(2024, 3, 4, 9, 0)  # first dose of every hand-built course
STUDY = StudySettings()


def day(d: float, hour: int = 10) -> dt.datetime:
    return (T0 + dt.timedelta(days=d)).replace(hour=hour, minute=0)


def adsl_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"STUDYID": "default", "USUBJID": r["id"], "COURSEID": "C" + r["id"], "ARM": r.get("arm", "ketamine_iv"),
             "TRTSDTM": T0, "FUENDTM": r.get("fuend"), "ICEREAS": r.get("ice"), "ANLFL": r.get("anl", "Y")}
            for r in rows
        ],
        schema={"STUDYID": pl.String, "USUBJID": pl.String, "COURSEID": pl.String, "ARM": pl.String,
                "TRTSDTM": pl.Datetime("us"), "FUENDTM": pl.Datetime("us"), "ICEREAS": pl.String, "ANLFL": pl.String},
    )


def scores_frame(rows: list[tuple]) -> pl.DataFrame:
    """rows: (patient_id, day, si_item_score[, instrument])."""
    return pl.DataFrame(
        [
            {"patient_id": r[0], "assessed_at": day(r[1]), "instrument": r[3] if len(r) > 3 else "MADRS",
             "total_score": 20.0, "si_item_score": r[2], "rater": "clinician"}
            for r in rows
        ],
        schema={"patient_id": pl.String, "assessed_at": pl.Datetime("us"), "instrument": pl.String,
                "total_score": pl.Float64, "si_item_score": pl.Float64, "rater": pl.String},
    )


@pytest.fixture
def case():
    adsl = adsl_frame([
        {"id": "P1"}, {"id": "P2"}, {"id": "P3"}, {"id": "P4"}, {"id": "P5"},
        {"id": "P6", "fuend": day(10, 0), "ice": "switched"},
        {"id": "P7", "anl": "N"},
        {"id": "P8", "arm": "ssri"},
    ])
    scores = scores_frame([
        # P1: baseline = the last rating in the window (SI 3, not the earlier 0); resolution at day 10,
        # the day-7 rating without an SI item is skipped
        ("P1", -5, 0.0), ("P1", -2, 3.0), ("P1", 3, 2.0), ("P1", 7, None), ("P1", 10, 0.0), ("P1", 14, 1.0),
        # P2: baseline SI 0 -> left out (counted)
        ("P2", -1, 0.0), ("P2", 3, 0.0),
        # P3: the baseline rating has no SI item -> left out (counted), the earlier SI 2 is not used
        ("P3", -4, 2.0), ("P3", -1, None), ("P3", 3, 0.0),
        # P4: censored at the last rating with an SI item (day 8), not at day 12 (item missing)
        ("P4", -1, 2.0), ("P4", 3, 1.0), ("P4", 8, 1.0), ("P4", 12, None),
        # P5: no post-baseline SI item -> CNSR 3, AVAL 0
        ("P5", -1, 2.0), ("P5", 3, None), ("P5", 6, None),
        # P6: switched, follow-up ends day 10: resolution on day 12 does not count -> CNSR 2 at day 4
        ("P6", -1, 2.0), ("P6", 4, 1.0), ("P6", 12, 0.0),
        # P7: not analysed
        ("P7", -1, 3.0), ("P7", 2, 0.0),
        # P8: baseline rating 20 days before the first dose: outside the 14-day window -> no baseline SI
        ("P8", -20, 3.0), ("P8", 3, 0.0),
        # another instrument's ratings are ignored
        ("P4", 5, 0.0, "PHQ9"),
    ])
    return adsl, scores


def rec(adtte: pl.DataFrame, pid: str) -> dict:
    r = adtte.filter(pl.col("USUBJID") == pid)
    assert r.height == 1
    return r.row(0, named=True)


def test_columns_and_population(case):
    adtte, _ = derive_si_resolution(*case, instrument="MADRS", study=STUDY)
    assert adtte.columns == ADTTE_COLUMNS
    assert set(adtte["PARAMCD"]) == {"TTSIRES"}
    assert sorted(adtte["USUBJID"]) == ["P1", "P4", "P5", "P6"]


def test_resolution_at_the_right_visit_skipping_missing_items(case):
    adtte, _ = derive_si_resolution(*case, instrument="MADRS", study=STUDY)
    r = rec(adtte, "P1")
    assert (r["CNSR"], r["AVAL"], r["ADT"], r["EVSCORE"]) == (0, 10.0, day(10), 0.0)
    assert r["EVNTDESC"].startswith("SI resolved")


def test_censoring_at_last_rating_with_an_item(case):
    adtte, _ = derive_si_resolution(*case, instrument="MADRS", study=STUDY)
    r = rec(adtte, "P4")
    assert (r["CNSR"], r["AVAL"], r["ADT"]) == (1, 8.0, day(8))
    assert r["EVNTDESC"] is None and r["EVSCORE"] is None


def test_no_post_baseline_item_and_intercurrent_event(case):
    adtte, _ = derive_si_resolution(*case, instrument="MADRS", study=STUDY)
    r5 = rec(adtte, "P5")
    assert (r5["CNSR"], r5["AVAL"], r5["ADT"]) == (3, 0.0, T0)
    r6 = rec(adtte, "P6")
    assert (r6["CNSR"], r6["AVAL"]) == (2, 4.0)


def test_attrition_counts_exclusions(case):
    _, att = derive_si_resolution(*case, instrument="MADRS", study=STUDY)
    allrows = att.filter(pl.col("arm") == "(all)").sort("step")
    # 7 analysed; P3 (item missing at baseline) and P8 (no baseline rating) lack a baseline SI item; P2 has SI 0
    assert allrows["n_remaining"].to_list() == [7, 5, 4]
    assert allrows["n_excluded"].to_list() == [None, 2, 1]
    ssri = att.filter(pl.col("arm") == "ssri").sort("step")
    # adam's attrition table lists an arm until the step after it reaches 0
    assert ssri["n_remaining"].to_list() == [1, 0]
    assert ssri["n_excluded"].to_list() == [None, 1]


def test_threshold_keyword(case):
    adtte, att = derive_si_resolution(*case, instrument="MADRS", study=STUDY, resolved_at_most=1)
    # P4 now resolves at day 3 (item 1); P1 (item 2 on day 3) still at day 10; P6 resolves on day 4
    assert (rec(adtte, "P4")["CNSR"], rec(adtte, "P4")["AVAL"]) == (0, 3.0)
    assert rec(adtte, "P1")["AVAL"] == 10.0
    assert (rec(adtte, "P6")["CNSR"], rec(adtte, "P6")["AVAL"]) == (0, 4.0)
    assert "<= 1" in rec(adtte, "P1")["PARAM"]
    with pytest.raises(ValueError):
        derive_si_resolution(*case, instrument="MADRS", study=STUDY, resolved_at_most=-1)


def test_time_at_risk_censoring(case):
    adtte, _ = derive_si_resolution(*case, instrument="MADRS", study=StudySettings(
        time_at_risk_days=5, confirm_min_days=1, confirm_max_days=2))
    # ratings after day 5 are out of the time at risk: P1 and P4 censored at day 3 (CNSR 5)
    for pid in ("P1", "P4"):
        r = rec(adtte, pid)
        assert (r["CNSR"], r["AVAL"]) == (5, 3.0)


def test_baseline_is_the_rating_of_base_from_derive_adsl():
    frames = simulate_frames(SimulationSettings(n_patients=300, seed=3))
    adsl, _ = derive_adsl(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                          study=STUDY)
    adtte, att = derive_si_resolution(adsl, frames["mood_scores"], instrument="MADRS", study=STUDY)
    assert adtte.columns == ADTTE_COLUMNS and adtte.height > 50
    assert adtte["USUBJID"].n_unique() == adtte.height
    assert set(adtte["CNSR"].unique()) <= {0, 1, 2, 3, 5}
    assert (adtte["AVAL"] >= 0).all()
    assert (adtte.filter(pl.col("CNSR") == 0)["EVSCORE"] == 0).all()
    last = att.filter((pl.col("arm") == "(all)")).sort("step")["n_remaining"].to_list()
    assert last[0] == adsl.filter(pl.col("ANLFL") == "Y").height and last[-1] == adtte.height
    # every included course's baseline SI item (from the BASEDTM rating) is > 0
    base_si = (adsl.join(adtte.select("USUBJID"), on="USUBJID", how="semi")
               .join(frames["mood_scores"].filter(pl.col("instrument") == "MADRS"),
                     left_on=["USUBJID", "BASEDTM"], right_on=["patient_id", "assessed_at"], how="left"))
    assert base_si.height == adtte.height and (base_si["si_item_score"] > 0).all()
    # and every excluded analysed course has a BASEDTM rating with SI item 0 or missing
    excl = (adsl.filter(pl.col("ANLFL") == "Y").join(adtte.select("USUBJID"), on="USUBJID", how="anti")
            .join(frames["mood_scores"].filter(pl.col("instrument") == "MADRS"),
                  left_on=["USUBJID", "BASEDTM"], right_on=["patient_id", "assessed_at"], how="left"))
    assert (excl["si_item_score"].fill_null(0) == 0).all()
    assert excl.height == last[0] - last[-1]
