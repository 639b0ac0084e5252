"""The synthetic cohort: determinism, the import contract, and the truth it claims.

Checked against: the import contract (ketaoutcomes.contract), the registries
(dose range per arm, score range per instrument) and the generator's own latent
truth (the observed response visit is the first rating after the latent time).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

import ketaoutcomes.simulate.cohort as cohort_mod
from ketaoutcomes.simulate.cohort import ROUTE_TABLES
from ketaoutcomes.contract import TABLES
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import SimulationSettings
from ketaoutcomes.simulate import (
    CHUNK_SIZE,
    TRUTH_FILE,
    GeneratorParameters,
    polars_schema,
    simulate_cohort,
    simulate_frames,
)

N = 1500
SETTINGS = SimulationSettings(n_patients=N, seed=11, n_sites=5)
KETAMINE = ["ketamine_iv", "ketamine_im", "esketamine_intranasal", "ketamine_oral", "ketamine_sublingual"]


@pytest.fixture(scope="module")
def frames() -> dict[str, pl.DataFrame]:
    return simulate_frames(SETTINGS, include_latent=True)


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory) -> Path:
    return simulate_cohort(SimulationSettings(n_patients=400, seed=3), tmp_path_factory.mktemp("csv"))


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _first_dose(frames) -> pl.DataFrame:
    return (
        frames["sessions"].group_by("course_id").agg(pl.col("session_ts").min().alias("first_dose"))
        .join(frames["courses"], on="course_id")
    )


def _analyst_response(frames) -> pl.DataFrame:
    """Baseline = last MADRS in [first dose - 14 d, first dose]; response = first later
    rating <= 0.5 x baseline (what the derive step will do)."""
    fd = _first_dose(frames).select("patient_id", "first_dose", "arm")
    m = frames["mood_scores"].filter(pl.col("instrument") == "MADRS").join(fd, on="patient_id")
    base = (
        m.filter(pl.col("assessed_at").is_between(pl.col("first_dose") - pl.duration(days=14), pl.col("first_dose")))
        .sort("assessed_at").group_by("patient_id").agg(pl.col("total_score").last().alias("baseline"))
    )
    post = (
        m.filter(pl.col("assessed_at") > pl.col("first_dose")).join(base, on="patient_id")
        .with_columns(((pl.col("assessed_at") - pl.col("first_dose")).dt.total_minutes() / 1440).alias("t"))
    )
    resp = post.filter(pl.col("total_score") <= 0.5 * pl.col("baseline")).group_by("patient_id").agg(
        pl.col("t").min().alias("t_resp"), pl.col("assessed_at").min().alias("resp_at"))
    return fd.join(base, on="patient_id", how="left").join(resp, on="patient_id", how="left")


# ----------------------------------------------------------------------------- determinism
def test_same_settings_give_identical_bytes_and_another_seed_differs(tmp_path):
    s = SimulationSettings(n_patients=300, seed=42)
    a = _digest(simulate_cohort(s, tmp_path / "a"))
    b = _digest(simulate_cohort(s, tmp_path / "b"))
    c = _digest(simulate_cohort(s.model_copy(update={"seed": 43}), tmp_path / "c"))
    assert a == b
    assert set(a) == {f"{t}.csv" for t in ROUTE_TABLES} | {TRUTH_FILE}  # no clinical_events: optional
    assert all(a[k] != c[k] for k in a)


def test_smaller_cohort_is_the_head_of_a_larger_one(frames):
    # every quantity has its own stream drawn in patient order, so the first
    # patients do not depend on n_patients (they do depend on CHUNK_SIZE)
    small = simulate_frames(SETTINGS.model_copy(update={"n_patients": 300}))
    ids = small["patients"]["patient_id"]
    for name in ("patients", "courses", "mood_scores"):
        big = frames[name].filter(pl.col("patient_id").is_in(ids))
        assert small[name].equals(big), name
    big_ses = frames["sessions"].filter(pl.col("course_id").is_in(small["courses"]["course_id"]))
    assert small["sessions"].equals(big_ses)


def test_chunks_append_with_unique_ids(monkeypatch, tmp_path):
    monkeypatch.setattr(cohort_mod, "CHUNK_SIZE", 150)
    s = SimulationSettings(n_patients=400, seed=9)
    seen = []
    out = simulate_cohort(s, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(150, 400), (300, 400), (400, 400)]
    assert json.loads((out / TRUTH_FILE).read_text())["n_chunks"] == 3
    pat = pl.read_csv(out / "patients.csv", schema=polars_schema("patients"))
    assert pat["patient_id"].to_list() == [f"P{i:07d}" for i in range(1, 401)]
    for name in ROUTE_TABLES:
        df = pl.read_csv(out / f"{name}.csv", schema=polars_schema(name))
        assert df.select(TABLES[name].key).is_duplicated().sum() == 0, name
    # in memory, chunk by chunk, gives the same rows as the written files
    mem = simulate_frames(s)
    assert mem["sessions"].equals(pl.read_csv(out / "sessions.csv", schema=polars_schema("sessions")))
    assert simulate_frames(s, chunk_index=2)["patients"].height == 100


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_have_exactly_the_contract_columns_and_types(tmp_path, fmt):
    out = simulate_cohort(SimulationSettings(n_patients=300, seed=5, file_format=fmt), tmp_path)
    con = duckdb.connect()
    for name in ROUTE_TABLES:
        t = TABLES[name]
        path = out / f"{name}.{fmt}"
        cols = {c.name: c.dtype for c in t.columns}
        if fmt == "csv":
            assert path.read_text().splitlines()[0] == ",".join(cols)
            rel = con.sql(f"select * from read_csv('{path}', header=true, auto_detect=false, columns={cols!r})")
            assert rel.count("*").fetchone()[0] > 0
            df = pl.read_csv(path, schema=polars_schema(name))
        else:
            described = con.sql(f"describe select * from '{path}'").fetchall()
            assert [(r[0], r[1]) for r in described] == list(cols.items())
            df = pl.read_parquet(path)
        assert df.schema == pl.Schema(polars_schema(name))
        for c in t.columns:
            if c.required:
                assert df[c.name].null_count() == 0, (name, c.name)
    other = "parquet" if fmt == "csv" else "csv"
    assert not list(out.glob(f"*.{other}"))


def test_values_obey_the_contract_and_registries(frames):
    reg = load_registries()
    assert set(frames) - {"latent"} == set(ROUTE_TABLES)  # (no clinical_events: optional)
    for name in ROUTE_TABLES:
        t = TABLES[name]
        df = frames[name]
        assert df.columns == t.column_names
        assert df.select(t.key).is_duplicated().sum() == 0, name
        for c in t.columns:
            col = df[c.name].drop_nulls()
            if c.allowed:
                assert set(col.unique()) <= set(c.allowed), (name, c.name)
            if c.registry:
                assert set(col.unique()) <= set(getattr(reg, c.registry)), (name, c.name)
            if c.min is not None:
                assert col.min() >= c.min, (name, c.name)
            if c.max is not None:
                assert col.max() <= c.max, (name, c.name)
        for ref in t.references:
            assert frames[name][ref.column].is_in(frames[ref.to_table][ref.to_column]).all()
    ses = frames["sessions"].join(frames["courses"].select("course_id", "arm"), on="course_id")
    rng = ses.group_by("arm").agg(pl.col("dose_mg").min().alias("lo"), pl.col("dose_mg").max().alias("hi"),
                                  pl.col("dose_mg_per_kg").max().alias("kg"))
    for row in rng.iter_rows(named=True):
        arm = reg.arms[row["arm"]]
        assert arm.dose_min_mg <= row["lo"] and row["hi"] <= arm.dose_max_mg, row
        if row["kg"] is not None and arm.dose_max_mg_per_kg is not None:
            assert row["kg"] <= arm.dose_max_mg_per_kg
    sc = frames["mood_scores"].group_by("instrument", "rater").agg(
        pl.col("total_score").min().alias("lo"), pl.col("total_score").max().alias("hi"),
        pl.col("si_item_score").max().alias("si_hi"), (pl.col("total_score") % 1 != 0).sum().alias("frac"))
    for row in sc.iter_rows(named=True):
        inst = reg.instruments[row["instrument"]]
        assert inst.score_min <= row["lo"] and row["hi"] <= inst.score_max and row["frac"] == 0
        assert row["si_hi"] <= inst.si_item_max and row["rater"] == inst.rater
    assert (frames["mood_scores"]["si_item_score"].drop_nulls() <= frames["mood_scores"].drop_nulls("si_item_score")["total_score"]).all()
    pat = frames["patients"]
    assert pat["age_at_index"].min() >= 18 and pat["age_at_index"].max() <= 90
    assert (pat["age_at_index"] == 90).any()  # older patients are stored as 90
    assert pat["prior_failed_trials"].max() <= 10
    assert 0 < pat["weight_kg"].null_count() < 0.15 * N
    assert set(pat["sex"]) == {"F", "M", "U"}


def test_sessions_by_arm_look_like_their_route(frames):
    ses = frames["sessions"].join(frames["courses"].select("course_id", "arm"), on="course_id")
    ssri = ses.filter(pl.col("arm") == "ssri")
    assert ssri.select(["infusion_minutes", "sbp_pre", "sbp_peak", "dissociation_score"]).null_count().row(0) == (ssri.height,) * 4
    iv = ses.filter(pl.col("arm") == "ketamine_iv")
    assert iv["infusion_minutes"].null_count() == 0 and iv["infusion_minutes"].median() == 40
    assert iv["dose_mg_per_kg"].median() == pytest.approx(0.5, abs=0.01)
    rise = (iv["sbp_peak"] - iv["sbp_pre"]).drop_nulls()
    assert 7 < rise.mean() < 13
    esk = ses.filter(pl.col("arm") == "esketamine_intranasal")
    assert set(esk["dose_mg"]) <= {56.0, 84.0} and esk["dose_mg_per_kg"].null_count() == esk.height
    per_course = esk.sort("session_ts").with_columns(pl.int_range(pl.len()).over("course_id").alias("k"))
    cadss = per_course.group_by(pl.col("k") >= 4).agg(pl.col("dissociation_score").mean()).sort("k")
    assert cadss["dissociation_score"][1] < cadss["dissociation_score"][0]  # falls with repeats
    assert set(ses["phase"]) == {"induction", "maintenance"}
    # sessions lie inside the course
    c = frames["courses"]
    within = ses.join(c, on="course_id").filter(
        (pl.col("session_ts").dt.date() < pl.col("start_date"))
        | (pl.col("end_date").is_not_null() & (pl.col("session_ts").dt.date() > pl.col("end_date"))))
    assert within.height == 0
    first = ses.group_by("course_id").agg(pl.col("session_ts").min().dt.date().alias("d")).join(c, on="course_id")
    assert (first["d"] == first["start_date"]).all()
    ht = ses.filter((pl.col("sbp_peak") >= 180) | (pl.col("dbp_peak") >= 110))
    ae_ht = frames["adverse_events"].filter(pl.col("ae_type") == "hypertension")
    assert set(ae_ht["session_id"]) == set(ht["session_id"])
    assert 0.002 < ht.height / ses.filter(pl.col("arm") != "ssri").height < 0.03


# ----------------------------------------------------------------------------- the truth it claims
def test_confounding_by_indication(frames):
    d = frames["patients"].join(frames["courses"], on="patient_id").with_columns(
        pl.col("arm").is_in(KETAMINE).alias("ketamine"))
    means = d.group_by("ketamine").agg(pl.col("prior_failed_trials").mean()).sort("ketamine")["prior_failed_trials"]
    assert means[1] > means[0] + 0.5


def test_observed_response_is_first_rating_after_latent_time(frames):
    a = _analyst_response(frames).join(frames["latent"], on="patient_id")
    has = a.filter(pl.col("baseline").is_not_null())
    # the analyst's first response equals the generator's observed response visit
    assert (has["t_resp"].is_not_null() == has["observed_response"]).all()
    resp = has.filter(pl.col("observed_response"))
    assert ((resp["t_resp"] - resp["t_observed_response_days"]).abs() < 1e-6).all()
    assert (resp["t_resp"] >= resp["t_response_days"]).all()


def test_ratings_after_relapse_and_before_it_are_on_the_right_side(frames):
    lat = frames["latent"].filter(pl.col("observed_response"))
    fd = _first_dose(frames).select("patient_id", "first_dose")
    m = frames["mood_scores"].filter(pl.col("instrument") == "MADRS").join(lat, on="patient_id").join(fd, on="patient_id")
    m = m.with_columns(((pl.col("assessed_at") - pl.col("first_dose")).dt.total_minutes() / 1440).alias("t"))
    post = m.filter(pl.col("t") >= pl.col("t_observed_response_days"))
    rel = pl.col("t") >= pl.col("t_observed_response_days") + pl.col("relapse_days_after_response")
    assert post.filter(rel)["total_score"].min() >= 22
    assert post.filter(~rel)["total_score"].max() <= 21
    assert post.filter(rel).height > 0


def test_ketamine_responders_respond_earlier_than_ssri_responders(frames):
    a = _analyst_response(frames).drop_nulls("t_resp")
    med = a.group_by(pl.col("arm") == "ssri").agg(pl.col("t_resp").median()).sort("arm")["t_resp"]
    assert med[0] < 21 < 28 < med[1]  # ketamine in days, SSRI over weeks


def test_response_proportions_are_plausible(frames):
    obs = frames["latent"].group_by("arm").agg(pl.col("observed_response").mean())
    assert obs["observed_response"].is_between(0.3, 0.7).all(), obs


def test_no_baseline_patients_exist_at_a_few_percent(frames):
    a = _analyst_response(frames)
    share = a["baseline"].null_count() / a.height
    assert 0.01 < share < 0.08
    # some of them have an older rating, some none at all
    with_any = frames["mood_scores"].join(_first_dose(frames), on="patient_id").filter(
        pl.col("assessed_at") <= pl.col("first_dose"))["patient_id"].unique()
    missing = a.filter(pl.col("baseline").is_null())["patient_id"]
    assert 0 < missing.is_in(with_any).sum() < missing.len()


def test_force_arm_keeps_patients_and_latent_draws(frames):
    s = SETTINGS.model_copy(update={"n_patients": 400})
    forced = simulate_frames(s, force_arm="ketamine_iv", include_latent=True)
    base = simulate_frames(s, include_latent=True)
    assert forced["patients"].equals(base["patients"])
    assert (forced["courses"]["arm"] == "ketamine_iv").all()
    assert not (base["courses"]["arm"] == "ketamine_iv").all()
    fb = _analyst_response(forced).select("patient_id", "baseline")
    bb = _analyst_response(base).select("patient_id", "baseline")
    assert fb.equals(bb)
    cols = ["linear_predictor_covariates", "site_log_hr", "latent_severity", "baseline_madrs"]
    assert forced["latent"].select(cols).equals(base["latent"].select(cols))
    # same uniforms: under the same arm, the latent response time is the same
    same = base["latent"]["arm"] == "ketamine_iv"
    assert np.allclose(forced["latent"].filter(same)["t_response_days"], base["latent"].filter(same)["t_response_days"])
    with pytest.raises(ValueError, match="force_arm"):
        simulate_frames(s, force_arm="ect")


def test_truth_json(csv_dir):
    truth = json.loads((csv_dir / TRUTH_FILE).read_text())
    p = GeneratorParameters()
    assert truth["seed"] == 3 and truth["n_patients"] == 400 and truth["chunk_size"] == CHUNK_SIZE == 25_000
    r = truth["response"]
    assert r["log_hr_arm"]["ssri"] == 0.0
    for arm, ap in p.arms.items():
        assert r["log_hr_arm"][arm] == pytest.approx(ap.response_log_hr)
        assert r["hr_arm"][arm] == pytest.approx(math.exp(ap.response_log_hr), rel=1e-5)
    cov = r["covariates"]
    assert cov["age_at_index"]["log_hr_per_unit"] == pytest.approx(p.response_log_hr_age_per_10y / 10)
    assert cov["baseline_score"]["log_hr_per_unit"] == pytest.approx(p.response_log_hr_baseline_per_point)
    assert cov["prior_failed_trials"]["hr_per_unit"] < 1 and cov["baseline_score"]["hr_per_unit"] < 1
    assert set(r["site_log_hr"]) == {f"S{i:02d}" for i in range(1, 7)}
    assert truth["relapse"]["maintenance_hr"]["esketamine_intranasal"] == 0.30
    assert set(truth["assignment"]["intercept"]) == set(p.arms)
    counts = truth["counts"]["per_arm"]
    assert sum(c["patients"] for c in counts.values()) == 400
    assert truth["counts"]["rows"]["patients"] == 400
    assert GeneratorParameters.model_validate(truth["parameters"]) == p  # round-trips


def test_generator_parameters_are_validated():
    with pytest.raises(ValueError, match="reference arm"):
        GeneratorParameters(reference_arm="ketamine_iv")
    with pytest.raises(ValueError, match="sum to 1"):
        GeneratorParameters(sex_p={"F": 0.5, "M": 0.4, "U": 0.2})
