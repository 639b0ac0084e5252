"""The adjusted and sensitivity analyses wired into analysis.py, on a small seeded synthetic
cohort and on hand-built rows: weighted Kaplan-Meier with the gate's verdict, matching, the
discrete-time sensitivity analysis, relapse with maintenance and competing events, and the
effect-modifier model. The statistics themselves are checked against R in tests/reference;
these tests check the wiring (populations, labels, the gate, what is stored)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ketaoutcomes.analysis import (
    RELAPSE_STATES,
    analyze,
    modifier_analyses,
    modifier_doses,
    relapse_analyses,
    relapse_status,
)
from ketaoutcomes.derive import derive_all
from ketaoutcomes.registries import Registries, load_registries
from ketaoutcomes.settings import SimulationSettings, StudySettings
from ketaoutcomes.simulate import simulate_frames


@pytest.fixture(scope="module")
def cohort():
    frames = simulate_frames(SimulationSettings(n_patients=3000, seed=5))
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=StudySettings())
    return frames, d


def test_relapse_status_codes_relapse_stopping_and_censoring():
    rel = pl.DataFrame({
        "CNSR": [0, 2, 1, 4, 1, 5, 3],
        "DCREAS": ["completed", "switched", "lost_to_follow_up", "adverse_event", "ongoing", "lost_to_follow_up",
                   None],
    })
    got = rel.select(relapse_status(rel)).to_series().to_list()
    # relapse; switch/new treatment; dropout (censored at the last rating of a course that ended lost to
    # follow-up or for an adverse event); still followed; end of the time at risk is censoring, not
    # dropout; no rating after the response
    assert got == [1, 2, 2, 2, 0, 0, 0]
    assert set(RELAPSE_STATES) == {1, 2}


def test_weighted_km_carries_each_pairs_verdict_and_discrete_time_covers_response_and_remission(cohort):
    _frames, d = cohort
    res = analyze(d.adsl, d.adtte, study=StudySettings(), visits=d.visits)
    verdicts = dict(res.table("results_ps").filter(pl.col("paramcd") == "TTRESP").select("target", "diagnostics").iter_rows())
    km = res.table("results_km_weighted").filter(pl.col("paramcd") == "TTRESP")
    assert set(km["target"]) == set(verdicts)
    for target, verdict in verdicts.items():
        pair = km.filter(pl.col("target") == target)
        assert set(pair["group"]) == {target, "ssri"} and set(pair["diagnostics"]) == {verdict}
    # preference-score distributions: every analysed patient of the pair in one bin of 0.05
    pref = res.table("results_preference").filter(pl.col("paramcd") == "TTRESP")
    for r in res.table("results_ps").filter(pl.col("paramcd") == "TTRESP").iter_rows(named=True):
        n = dict(pref.filter(pl.col("target") == r["target"]).group_by("arm").agg(pl.col("n").sum()).iter_rows())
        assert n == {r["target"]: r["n_target"], "ssri": r["n_comparator"]}
    assert pref.group_by("paramcd", "target", "arm").len()["len"].unique().to_list() == [20]
    med = res.table("results_km_weighted_median")
    assert set(med.columns) >= {"group", "median", "median_lower", "median_upper", "target", "diagnostics"}
    disc = res.table("results_discrete")
    assert set(disc["paramcd"]) == {"TTRESP", "TTREM"}
    arm_terms = disc.filter(pl.col("term").str.starts_with("ARM["))
    assert arm_terms.height == 10 and arm_terms["hr"].is_finite().all()
    # rated every few days, ketamine gains from the visit-date analysis: the interval-censored HR is lower
    adj = res.table("results_cox").filter((pl.col("model") == "adjusted") & (pl.col("paramcd") == "TTRESP"))
    iv = "ARM[ketamine_iv]"
    assert disc.filter((pl.col("paramcd") == "TTRESP") & (pl.col("term") == iv))["hr"][0] < \
        adj.filter(pl.col("term") == iv)["hr"][0]


def test_matching_stores_matched_estimates_clustered_on_pairs(cohort):
    _frames, d = cohort
    study = StudySettings(weighting="matching", ps_truncation=None, endpoints=("TTRESP",))
    res = analyze(d.adsl, d.adtte.filter(pl.col("PARAMCD") == "TTRESP"), study=study)
    ps = res.table("results_ps")
    assert set(ps["weighting"]) == {"matching"}
    assert (ps["n_matched_target"] > 0).all() and (ps["n_matched_target"] == ps["n_matched_comparator"]).all()
    cox = res.table("results_cox").filter(pl.col("model") == "matching")
    assert cox.height == ps.height and set(cox["diagnostics"]) <= {"pass", "fail"}
    assert set(res.table("results_km_weighted")["weighting"]) == {"matching"}


def _responders(n: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Hand-built responders: arm a relapses early without maintenance, arm b is on maintenance."""
    t0 = dt.datetime(2024, 1, 10, 9)
    adsl, adtte, sessions = [], [], []
    for i in range(n):
        arm = "ssri" if i % 2 else "ketamine_iv"
        pid = f"P{i:03d}"
        maint = i % 3 == 0
        adsl.append({"USUBJID": pid, "AGE": 30 + i % 40, "SEX": "F" if i % 4 else "M", "BASE": 30.0 + i % 9,
                     "PRIORFAIL": i % 4, "SITEID": "S1" if i % 5 else "S2",
                     "DCREAS": "lost_to_follow_up" if i % 7 == 0 else "completed"})
        event = (i % 7) not in (0, 1)
        aval = float(20 + (i * 13) % 90) if not maint else float(60 + (i * 7) % 100)
        adtte.append({"USUBJID": pid, "COURSEID": f"C{i:03d}", "ARM": arm, "PARAMCD": "TTRELAPS", "STARTDT": t0,
                      "AVAL": aval, "CNSR": 0 if event else 1})
        if maint:
            sessions += [{"course_id": f"C{i:03d}", "session_ts": t0 + dt.timedelta(days=d), "phase": "maintenance"}
                         for d in range(3, int(aval), 14)]
    return pl.DataFrame(adsl), pl.DataFrame(adtte), pl.DataFrame(sessions)


def test_relapse_analyses_fit_maintenance_and_competing_risks_on_hand_built_responders():
    adsl, adtte, sessions = _responders(240)
    out = relapse_analyses(adsl, adtte, sessions, study=StudySettings(strata=None)).tables
    m = out["results_relapse_maintenance"]
    assert {"ARM[ketamine_iv]", "MAINT"} <= set(m["term"])
    assert m.filter(pl.col("term") == "MAINT")["hr"][0] < 1  # maintained responders relapse later here
    assert m["relapses_on_maintenance"][0] + m["relapses_off_maintenance"][0] == m["n_events"][0]
    assert set(out["results_relapse_cif"]["cause"]) == {"relapse", RELAPSE_STATES[2], "event-free"}
    gray = out["results_relapse_gray"]
    assert set(gray["comparison"]) == {"all arms", "ketamine_iv vs ssri"} and gray["error"].is_null().all()
    assert out["results_relapse_states"]["len"].sum() == adtte.height


def test_no_relapse_endpoint_means_no_relapse_analyses():
    adsl, adtte, sessions = _responders(20)
    res = relapse_analyses(adsl, adtte, sessions, study=StudySettings(endpoints=("TTRESP",)))
    assert dict(res.tables) == {} and res.notes == ()


def test_modifier_analyses_use_the_registry_ketamine_arms(cohort):
    frames, d = cohort
    ketamine = [k for k, a in load_registries().arms.items() if a.is_ketamine]
    res = modifier_analyses(d.adsl, d.adtte, modifier_doses(frames["sessions"], frames["courses"], StudySettings()),
                            study=StudySettings(), ketamine_arms=ketamine)
    out, notes = res.tables, res.notes
    inter = out["results_modifiers_interactions"]
    assert set(inter["modifier"]) == {"SEX", "CONBENZO", "AGE"} and inter["p_value"].is_not_null().all()
    assert set(out["results_modifiers_subgroups"]["arm"]) <= set(ketamine)
    assert "DOSEREL/0.25" in set(out["results_modifiers_ketamine"]["term"])
    assert all(n.text.startswith("effect modifiers: ") and n.step == "modifiers" for n in notes)


def test_a_competing_event_that_never_happens_is_reported_not_tested():
    adsl, adtte, sessions = _responders(60)
    adsl = adsl.with_columns(pl.lit("completed").alias("DCREAS"))
    out = relapse_analyses(adsl, adtte, sessions, study=StudySettings(strata=None)).tables
    gray = out["results_relapse_gray"].filter(pl.col("cause") == RELAPSE_STATES[2])
    assert gray["p_value"].is_null().all() and set(gray["error"]) == {"no events of this kind: nothing to compare"}


def test_model_tables_carry_arm_variable_and_level_with_the_labels_in_force(cohort):
    """No ARM[...] / SEX[U] strings to parse: the terms' variable, level and arm are columns, and the
    arm's label is the one of the registries the data came with (an export's arms.csv included)."""
    from ketaoutcomes.analysis import run_study

    frames, _ = cohort
    reg = load_registries()
    relabelled = Registries(arms={**reg.arms, "ketamine_iv": reg.arms["ketamine_iv"].model_copy(
        update={"label": "IV ketamine (clinic's label)"})}, instruments=reg.instruments)
    study = StudySettings(outcomes={"endpoints": ("TTRESP",)})
    res = run_study(frames, registries=relabelled, study=study)
    cox = res.table("results_cox")
    adjusted = cox.filter(pl.col("model") == "adjusted")
    arms = adjusted.filter(pl.col("variable") == "ARM")
    assert set(arms["arm"]) == {a for a in reg.arms if a != "ssri"} and (arms["term"] == "ARM[" + arms["level"] + "]").all()
    assert arms.filter(pl.col("arm") == "ketamine_iv")["arm_label"].item() == "IV ketamine (clinic's label)"
    sex = adjusted.filter(pl.col("variable") == "SEX")
    assert set(sex["level"]) <= {"M", "U"} and sex["arm"].is_null().all()
    assert adjusted.filter(pl.col("term") == "AGE").select("variable", "level").row(0) == ("AGE", None)
    weighted = cox.filter(pl.col("model") == "iptw")
    assert weighted["arm"].is_not_null().all() and weighted["arm_label"].is_not_null().all()
    balance = res.table("results_balance").filter(pl.col("covariate") == "SEX[M]")
    assert set(balance.select("variable", "level").rows()) == {("SEX", "M")}
    att = res.table("results_attrition")
    assert att.filter(pl.col("arm") == "(all)")["arm_label"].is_null().all()
    assert set(att.filter(pl.col("arm") == "ketamine_iv")["arm_label"]) == {"IV ketamine (clinic's label)"}


def test_run_study_lets_go_of_handed_over_staged_tables_before_the_endpoint_units_and_gives_the_same_tables(cohort):
    """Checked against the same analysis on a plain mapping (left as it is): with the staged tables
    handed over, the secondary and relapse units still get them, and nothing started after them
    (the modifier unit, each endpoint's and route's units) runs while the mapping still holds them."""
    from ketaoutcomes.analysis import HandedOver, run_study
    from ketaoutcomes.analysis.common import run_now

    frames, _ = cohort
    study = StudySettings(outcomes={"endpoints": ("TTRESP",)}, models={"bootstrap_replicates": 20})
    staged = {k: frames[k] for k in ("patients", "courses", "sessions", "adverse_events", "mood_scores")}
    kept = run_study(staged, registries=load_registries(), study=study)
    assert set(staged) == {"patients", "courses", "sessions", "adverse_events", "mood_scores"}

    handed = HandedOver(staged)
    held: list[tuple[str, int]] = []

    def submit(fn, /, **kwargs):
        held.append((fn.__name__, len(handed)))
        return run_now(fn, **kwargs)

    given = run_study(handed, registries=load_registries(), study=study, submit=submit)
    assert len(handed) == 0
    assert held[:2] == [("secondary_analyses", 5), ("relapse_analyses", 5)]
    later = held[2:]
    assert {name for name, _ in later} == {"modifier_analyses", "endpoint_models", "route_comparison"}
    assert all(n == 0 for _, n in later)
    assert set(given.tables) == set(kept.tables) and given.notes == kept.notes
    for name, table in kept.tables.items():
        assert given.table(name).equals(table), name


def test_run_study_publishes_the_analysis_datasets_before_any_unit_and_lets_go_of_them_before_the_route_units(cohort):
    """Checked against the same analysis without ``publish``: the published tables and the result
    together are its tables, frame for frame, with the same notes; they are published before any unit
    is submitted, and by the time the first route unit is submitted run_study no longer holds
    ``ad_adtte`` (the pipeline has stored it; the endpoint step has its model frames); a handed-over
    ``check`` is empty before any unit is submitted."""
    import gc
    import io
    import weakref

    from ketaoutcomes.analysis import HandedOver, run_study
    from ketaoutcomes.analysis.common import run_now

    frames, _ = cohort
    study = StudySettings(outcomes={"endpoints": ("TTRESP", "TTREM")}, models={"bootstrap_replicates": 20})
    names = ("patients", "courses", "sessions", "adverse_events", "mood_scores")
    kept = run_study({k: frames[k] for k in names}, registries=load_registries(), study=study)

    published: dict[str, bytes] = {}
    refs: dict[str, weakref.ref] = {}
    events: list[str] = []

    def publish(step):
        events.append("publish")
        for name, frame in step.tables.items():
            buf = io.BytesIO()
            frame.write_ipc(buf)  # a copy of its own: nothing here holds the published frame
            published[name] = buf.getvalue()
            refs[name] = weakref.ref(frame)

    alive_at_routes: list[bool] = []
    check = HandedOver({k: frames[k] for k in names})  # what the study is checked against: emptied once checked
    check_left: list[int] = []

    def submit(fn, /, **kwargs):
        check_left.append(len(check))
        events.append(fn.__name__)
        if fn.__name__ == "route_comparison" and not alive_at_routes:
            gc.collect()
            alive_at_routes.append(refs["ad_adtte"]() is not None)
        return run_now(fn, **kwargs)

    given = run_study(HandedOver({k: frames[k] for k in names}), registries=load_registries(), study=study,
                      submit=submit, publish=publish, check=check)
    assert events[0] == "publish" and events.count("publish") == 1
    assert set(check_left) == {0}
    assert alive_at_routes == [False]
    assert set(published) == {"ad_adsl", "ad_adtte", "results_attrition"}
    assert not set(published) & set(given.tables)
    assert set(published) | set(given.tables) == set(kept.tables) and given.notes == kept.notes
    for name, table in kept.tables.items():
        got = pl.read_ipc(io.BytesIO(published[name])) if name in published else given.table(name)
        assert got.equals(table), name
