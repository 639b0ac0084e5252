"""The SSRI-failure cohort (:mod:`ketaoutcomes.simulate.ssri_failure`) written as an import-format
export, with its true strategy risks: the data of a target-trial study, end to end.

:func:`ssri_failure_tables` turns the person-level cohort into the import tables so that the
target-trial derivation (:mod:`ketaoutcomes.derive.target_trial`) gives back, for every patient,
exactly the simulated ketamine start day, response day or censoring day, negative-control days
and covariates:

* **patients**: ``age_at_index``, ``sex`` (M/F), ``prior_failed_trials`` (the prior episodes),
  ``diagnosis`` MDD, a weight, a site (uniform over ``n_sites``), ``observation_start`` at least
  the protocol's washout before the start of the failed SSRI course;
* **courses**: the failed SSRI course, ``ssri_course_days`` long, ending on time zero with
  ``end_reason`` ``non_response``; a starter's ketamine course on one of the protocol's treatment
  arms (every ketamine arm of the registry when it names none; a seeded draw), starting on time
  zero + ``ketamine_start_day``, with induction sessions (days 0, 3, 7, 10, 14, 17 of the course,
  up to the end of follow-up); a switcher's second SSRI course (another drug) a few days after
  time zero. Patients who stay on their SSRI have no later course;
* **mood_scores** (MADRS, clinician): one the day before the SSRI course started; one on time zero,
  the simulated severity (the trial's baseline); then weekly, on the response day and on the last
  day of follow-up (dropout or ``followup_days``), which is the last rating. Before the response day
  every rating is above the response threshold, ``baseline x (1 - response_reduction)`` of the
  instruments registry; from it on, at or below;
* **adverse_events**: none (the design has none);
* **clinical_events**: each negative control's event (``event_type`` its ``event_type``, else its
  name: ``nc1``, ...; :func:`parameters_for` names them after the protocol's controls) on
  time zero + its simulated day, when that is inside follow-up; and events the derivation must not
  count: ``other_visit`` events (a Poisson number a patient, mean :data:`OTHER_VISITS_MEAN`, any day
  from 90 days before time zero to 30 after the administrative end), and for some patients an event
  of a control's type on or before time zero, or after their end of follow-up.

Time zero falls on a seeded day after ``origin_date``; sessions and ratings are at clinic times.
Draws of the export (sites, drugs, arms, times, scores) come from streams of their own, so the
person-level cohort is the same as :func:`~ketaoutcomes.simulate.ssri_failure.simulate_ssri_failure`
gives for the seed.

:func:`write_ssri_failure_export` writes the tables, ``truth.json`` (the strategy truth of
:func:`~ketaoutcomes.simulate.ssri_failure.strategy_truth` for the protocol's grace period, risk
days and horizon) and ``truth_latent.parquet`` (the person-level cohort, one row a patient, ids as
written).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import ValidationError

from ketaoutcomes.contract import TABLE_ORDER, polars_schema
from ketaoutcomes.protocol import TargetTrialProtocol
from ketaoutcomes.registries import Registries, load_registries
from ketaoutcomes.settings import SimulationSettings

from .arrays import Streams, clock_minute, expand, ids, null_where, pick
from .ssri_failure import SSRIFailureParameters, simulate_ssri_failure, strategy_truth
from .writer import LATENT_FILE, TRUTH_FILE, prepare_folder, write_frame

__all__ = ["EXPORT_VERSION", "INDUCTION_DAYS", "OTHER_VISITS_MEAN", "SSRI_DRUGS", "SimulationProtocolError",
           "parameters_for", "ssri_failure_tables", "write_ssri_failure_export"]

EXPORT_VERSION = 1
#: Induction sessions of a ketamine course, days from its first session (twice weekly, ~3 weeks).
INDUCTION_DAYS = (0, 3, 7, 10, 14, 17)
#: Drugs of the SSRI courses (the failed one and a switch).
SSRI_DRUGS = ("sertraline", "escitalopram", "citalopram", "fluoxetine", "paroxetine")
#: Dose per session (mg per kg of weight, or fixed mg) by ketamine arm; another arm gets its registry minimum.
_KETAMINE_DOSE = {"ketamine_iv": ("per_kg", 0.5), "ketamine_im": ("per_kg", 0.5), "ketamine_oral": ("per_kg", 1.5),
                  "ketamine_sublingual": ("per_kg", 1.0), "esketamine_intranasal": ("fixed", 56.0)}
#: Mean number of ``other_visit`` clinical events a patient (noise: no negative control counts them).
OTHER_VISITS_MEAN = 0.5
#: Share of patients with a control-type event on or before time zero, and one after their follow-up.
_P_OUTSIDE = 0.2
_TAG = 2**32 - 2  # stream tag of the export's draws (not a chunk index of any generator)
_DAY = np.timedelta64(1, "D")


class SimulationProtocolError(ValueError):
    """The protocol to simulate for names an arm the arms registry does not have (one line)."""


def parameters_for(protocol: TargetTrialProtocol) -> SSRIFailureParameters:
    """The default generator for ``protocol``: its follow-up, and one negative control for each of the
    protocol's (named as it, its event type the first of its ``event_types``; the hazards those of
    the default controls, in turn); the default controls when it declares none."""
    p = SSRIFailureParameters(followup_days=protocol.followup_days)
    if not protocol.negative_controls:
        return p
    base = p.negative_controls
    ncs = [base[i % len(base)].model_copy(update={"name": nc.name, "event_type": nc.event_types[0]}).model_dump()
           for i, nc in enumerate(protocol.negative_controls)]
    try:
        return SSRIFailureParameters.model_validate({**p.model_dump(), "negative_controls": ncs})
    except ValidationError as err:
        why = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise SimulationProtocolError(f"target_trial.negative_controls cannot be simulated: {why}") from None


def _conform(name: str, data: dict) -> pl.DataFrame:
    schema = polars_schema(name)
    df = pl.DataFrame(data)
    return df.select([(pl.col(c) if c in df.columns else pl.lit(None)).cast(t).alias(c) for c, t in schema.items()])


def _at(dates: np.ndarray, minutes: np.ndarray) -> np.ndarray:
    return dates.astype("datetime64[m]") + minutes.astype("timedelta64[m]")


def ssri_failure_tables(settings: SimulationSettings, *, params: SSRIFailureParameters | None = None,
                        registries: Registries | None = None) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """The import tables of the SSRI-failure cohort of ``settings`` (its ``protocol``) and the
    person-level cohort they encode (``patient_id`` as written, ``time_zero`` the failure date, and
    the columns of :func:`~ketaoutcomes.simulate.ssri_failure.simulate_ssri_failure`, plus
    ``ketamine_arm``, the arm of a starter's course)."""
    protocol: TargetTrialProtocol = settings.protocol
    reg = registries or load_registries()
    p = params or parameters_for(protocol)
    if p.followup_days != protocol.followup_days:
        raise SimulationProtocolError(f"the generator's followup_days ({p.followup_days}) differs from the protocol's "
                         f"({protocol.followup_days})")
    arms = list(protocol.treatment_arms) or [a for a, arm in reg.arms.items() if arm.is_ketamine]
    unknown = [a for a in arms if a not in reg.arms]
    if unknown or not arms:
        raise SimulationProtocolError(f"target_trial.treatment_arms {unknown or arms} are not arms of the arms registry")
    failed_arm = protocol.eligibility.failed_arm
    if failed_arm not in reg.arms:
        raise SimulationProtocolError(f"target_trial.eligibility.failed_arm {failed_arm!r} is not an arm of the arms "
                                      "registry")
    cohort = simulate_ssri_failure(settings.n_patients, settings.seed, p)
    n = cohort.height
    S = Streams(settings.seed, _TAG)
    pid = ids("P", cohort["patient_id"].to_numpy(), 7)
    cid = ids("C", cohort["patient_id"].to_numpy(), 7)  # course "C0000001-1", its sessions "C0000001-2-001"
    origin = np.datetime64(settings.origin_date, "D")
    course_days = cohort["ssri_course_days"].to_numpy()
    washout = protocol.eligibility.washout_days
    t0 = origin + (washout + 120 + np.floor(S.u("time_zero", n) * 365).astype(np.int64)) * _DAY
    obs_start = t0 - (course_days + washout + np.floor(S.u("records_before", n) * 365).astype(np.int64)) * _DAY
    codes = [f"S{i + 1:0{max(2, len(str(settings.n_sites)))}d}" for i in range(settings.n_sites)]
    weight = np.round(np.clip(75 + 14 * S.z("weight", n), 45, 140), 1)
    patients = _conform("patients", {
        "patient_id": pid,
        "site": pl.Series(codes).gather(pick(S.u("site", n), np.ones(settings.n_sites))),
        "sex": np.where(cohort["male"].to_numpy() == 1, "M", "F"),
        "age_at_index": cohort["age"].cast(pl.Int64),
        "prior_failed_trials": cohort["prior_episodes"],
        "diagnosis": np.full(n, "MDD"),
        "weight_kg": weight,
        "observation_start": obs_start,
    })

    start = cohort["ketamine_start_day"].to_numpy(allow_copy=True)  # float with NaN for no start
    starter = ~np.isnan(start.astype(float))
    start_day = np.where(starter, np.nan_to_num(start.astype(float)), 0).astype(np.int64)
    end = cohort["followup_days"].to_numpy()  # last day of follow-up (dropout or the administrative end)
    lost = end < protocol.followup_days
    drug = pick(S.u("ssri_drug", n), np.ones(len(SSRI_DRUGS)))
    switch_drug = (drug + 1 + np.floor(S.u("switch_drug", n) * (len(SSRI_DRUGS) - 1)).astype(np.int64)) % len(SSRI_DRUGS)
    switch_day = 1 + np.floor(S.u("switch_day", n) * 7).astype(np.int64)
    switcher = ~starter & (cohort["ssri_switch"].to_numpy() == 1) & (switch_day < end)
    arm = pick(S.u("ketamine_arm", n), np.ones(len(arms)))

    # ketamine sessions: induction days from the start, up to the end of follow-up
    k_owner = np.flatnonzero(starter)
    owner, pos = expand(np.full(len(k_owner), len(INDUCTION_DAYS)))
    owner = k_owner[owner]
    s_day = start_day[owner] + np.asarray(INDUCTION_DAYS)[pos]
    keep = s_day <= end[owner]
    owner, pos, s_day = owner[keep], pos[keep], s_day[keep]
    s_min = clock_minute(S.u("session_clock", len(owner)))
    n_sessions = np.bincount(owner, minlength=n)
    last_session = np.zeros(n, dtype=np.int64)
    np.maximum.at(last_session, owner, s_day)
    arm_names = np.asarray(arms, dtype=object)[arm[owner]]
    dose = np.zeros(len(owner))
    per_kg = np.full(len(owner), np.nan)
    for j, a in enumerate(arms):
        m = arm[owner] == j
        kind, value = _KETAMINE_DOSE.get(a, ("fixed", reg.arms[a].dose_min_mg or 0.0))
        if kind == "per_kg":
            per_kg[m] = value
            lo, hi = reg.arms[a].dose_min_mg or 0.0, reg.arms[a].dose_max_mg or np.inf
            dose[m] = np.clip(np.round(value * weight[owner[m]]), lo, hi)
        else:
            dose[m] = value
    k_course = ids(cid.gather(owner) + "-", np.full(len(owner), 2), 1) if len(owner) else pl.Series([], dtype=pl.String)
    sessions = _conform("sessions", {
        "session_id": ids(k_course + "-", pos + 1, 3) if len(owner) else pl.Series([], dtype=pl.String),
        "course_id": k_course,
        "session_ts": _at(t0[owner] + s_day * _DAY, s_min).astype("datetime64[us]"),
        "dose_mg": dose,
        "dose_mg_per_kg": pl.Series(per_kg).fill_nan(None),
        "infusion_minutes": pl.Series(np.where(arm_names == "ketamine_iv", 40.0, np.nan)).fill_nan(None),
        "phase": np.full(len(owner), "induction"),
    })
    adverse_events = _conform("adverse_events", {"ae_id": [], "session_id": [], "ae_type": [], "severity": []})

    # courses: the failed course; a starter's ketamine course; a switcher's next SSRI
    failed = {"course_id": ids(cid + "-", np.ones(n, dtype=np.int64), 1), "patient_id": pid,
              "arm": np.full(n, failed_arm),
              "drug": np.asarray(SSRI_DRUGS)[drug] if failed_arm == "ssri" else np.full(n, failed_arm),
              "start_date": t0 - course_days * _DAY, "end_date": t0,
              "end_reason": np.full(n, protocol.eligibility.failure_end_reasons[0]),
              "concomitant_ssri": np.zeros(n, dtype=bool), "concomitant_benzodiazepine": np.zeros(n, dtype=bool)}
    done = n_sessions == len(INDUCTION_DAYS)
    k_end = np.where(done | lost, 0, 1)  # 0: ended on its last session, 1: ongoing at the end of follow-up
    ket_reason = np.where(done, "completed", np.where(lost, "lost_to_follow_up", "ongoing"))
    ks = np.flatnonzero(starter)
    ketamine = {"course_id": ids(cid.gather(ks) + "-", np.full(len(ks), 2), 1), "patient_id": pid.gather(ks),
                "arm": np.asarray(arms, dtype=object)[arm[ks]].astype(str), "drug": np.asarray(
                    ["esketamine" if a.startswith("esketamine") else "ketamine" for a in np.asarray(arms)[arm[ks]]]),
                "start_date": t0[ks] + start_day[ks] * _DAY,
                "end_date": null_where(t0[ks] + last_session[ks] * _DAY, k_end[ks] == 1),
                "end_reason": ket_reason[ks], "concomitant_ssri": np.zeros(len(ks), dtype=bool),
                "concomitant_benzodiazepine": np.zeros(len(ks), dtype=bool)}
    sw = np.flatnonzero(switcher)
    switched = {"course_id": ids(cid.gather(sw) + "-", np.full(len(sw), 2), 1), "patient_id": pid.gather(sw),
                "arm": np.full(len(sw), "ssri"), "drug": np.asarray(SSRI_DRUGS)[switch_drug[sw]],
                "start_date": t0[sw] + switch_day[sw] * _DAY,
                "end_date": null_where(t0[sw] + end[sw] * _DAY, ~lost[sw]),
                "end_reason": np.where(lost[sw], "lost_to_follow_up", "ongoing"),
                "concomitant_ssri": np.zeros(len(sw), dtype=bool), "concomitant_benzodiazepine": np.zeros(len(sw), dtype=bool)}
    courses = pl.concat([_conform("courses", c) for c in (failed, ketamine, switched)]).sort("course_id")

    mood = _mood_scores(cohort, pid, t0, course_days, end, S, reg)
    events = _clinical_events(cohort, pid, t0, end, S, p, protocol.followup_days)
    frames = {"patients": patients, "courses": courses, "sessions": sessions, "adverse_events": adverse_events,
              "mood_scores": mood, "clinical_events": events}
    person = cohort.with_columns(pl.Series("patient_id", pid), pl.Series("time_zero", t0),
                                 pl.Series("ketamine_arm", np.asarray(arms)[arm]).scatter(np.flatnonzero(~starter), None))
    return {k: frames[k] for k in TABLE_ORDER}, person


def _clinical_events(cohort: pl.DataFrame, pid: pl.Series, t0: np.ndarray, end: np.ndarray, S: Streams,
                     p: SSRIFailureParameters, followup_days: int) -> pl.DataFrame:
    """Clinical events (module doc): every negative control's event inside follow-up, and noise."""
    n = cohort.height
    owners, days, types = [], [], []
    names = [nc.event_type or name for name, nc in zip(p.negative_control_names, p.negative_controls)]
    for column, code in zip(p.negative_control_names, names):  # the simulated events: day 1 to the end of follow-up
        hit = np.flatnonzero(cohort[f"{column}_event"].to_numpy() == 1)
        owners.append(hit)
        days.append(cohort[f"{column}_time"].to_numpy()[hit])
        types.append(np.full(len(hit), code, dtype=object))
    visits, _ = expand(S("other_visits").poisson(OTHER_VISITS_MEAN, n))
    owners.append(visits)
    days.append(-90 + np.floor(S.u("other_visit_day", len(visits)) * (followup_days + 121)).astype(np.int64))
    types.append(np.full(len(visits), "other_visit", dtype=object))
    if names:  # a control's type where it does not count: on or before time zero, after the end of follow-up
        before = np.flatnonzero(S.u("event_before", n) < _P_OUTSIDE)
        after = np.flatnonzero(S.u("event_after", n) < _P_OUTSIDE)
        owners += [before, after]
        days += [-np.floor(S.u("event_before_day", len(before)) * 91).astype(np.int64),
                 end[after] + 1 + np.floor(S.u("event_after_day", len(after)) * 30).astype(np.int64)]
        types += [np.asarray(names, dtype=object)[pick(S.u("event_before_type", len(before)), np.ones(len(names)))],
                  np.asarray(names, dtype=object)[pick(S.u("event_after_type", len(after)), np.ones(len(names)))]]
    rows = pl.DataFrame({"o": np.concatenate(owners), "d": np.concatenate(days),
                         "event_type": pl.Series(np.concatenate(types), dtype=pl.String)}).sort("o", "d", "event_type")
    owner, day = rows["o"].to_numpy(), rows["d"].to_numpy()
    _, seq = expand(np.bincount(owner, minlength=n))
    return _conform("clinical_events", {
        "event_id": ids(ids("E", cohort["patient_id"].to_numpy()[owner], 7) + "-", seq + 1, 3),
        "patient_id": pid.gather(owner),
        "event_date": t0[owner] + day * _DAY,
        "event_type": rows["event_type"],
    })


def _mood_scores(cohort: pl.DataFrame, pid: pl.Series, t0: np.ndarray, course_days: np.ndarray, end: np.ndarray,
                 S: Streams, reg: Registries) -> pl.DataFrame:
    """MADRS ratings (module doc): the response day is the first at or below the threshold."""
    madrs = reg.instruments["MADRS"]
    n = cohort.height
    base = cohort["severity"].to_numpy()
    resp_event = cohort["response_event"].to_numpy() == 1
    resp_day = np.where(resp_event, cohort["response_time"].to_numpy(), np.iinfo(np.int64).max)
    threshold = base * (1 - madrs.response_reduction)
    weekly = (end - 1) // 7  # weekly ratings on days 7, 14, ... before the last day
    owner, pos = expand(weekly)
    day = np.concatenate([np.zeros(n, dtype=np.int64), 7 * (pos + 1), resp_day[resp_event], end])
    owner = np.concatenate([np.arange(n), owner, np.flatnonzero(resp_event), np.arange(n)])
    rows = pl.DataFrame({"o": owner, "d": day}).unique().sort("o", "d")
    owner, day = rows["o"].to_numpy(), rows["d"].to_numpy()
    above_lo = np.floor(threshold) + 1  # the smallest whole score above the threshold
    pre = above_lo[owner] + np.floor(S.u("score_before", len(owner)) * (base[owner] - above_lo[owner] + 1))
    post = np.floor(threshold * S.u("score_response", n))  # at or below the threshold, from the response day on
    score = np.where(day == 0, base[owner], np.where(day >= resp_day[owner], post[owner], pre))
    # the rating before the failed course started (its baseline in the route analysis)
    before = base + np.floor(S.u("score_course_start", n) * 5)
    owner = np.concatenate([np.arange(n), owner])
    day = np.concatenate([-course_days - 1, day])
    score = np.clip(np.concatenate([before, score]), madrs.score_min, madrs.score_max)
    minute = 600 + 5 * np.floor(S.u("rating_clock", len(owner)) * 72).astype(np.int64)  # 10:00-15:55
    return _conform("mood_scores", {
        "patient_id": pid.gather(owner),
        "assessed_at": _at(t0[owner] + day * _DAY, minute).astype("datetime64[us]"),
        "instrument": np.full(len(owner), "MADRS"),
        "total_score": score.astype(float),
        "rater": np.full(len(owner), "clinician"),
    }).sort("patient_id", "assessed_at")


def write_ssri_failure_export(settings: SimulationSettings, out_dir: Path | str, *,
                              params: SSRIFailureParameters | None = None, truth_patients: int = 200_000) -> Path:
    """Write the SSRI-failure export of ``settings`` into ``out_dir`` (module doc): one file per
    import table (``settings.file_format``), ``truth.json`` (with the strategy truth from
    ``truth_patients`` simulated patients) and ``truth_latent.parquet``. Same settings, same bytes."""
    if settings.design != "ssri_failure":
        raise ValueError(f"simulation design {settings.design!r} is not ssri_failure")
    protocol = settings.protocol
    reg = load_registries()
    p = params or parameters_for(protocol)
    frames, person = ssri_failure_tables(settings, params=p, registries=reg)
    out = prepare_folder(out_dir, settings.file_format)
    ext = settings.file_format
    for name, frame in frames.items():
        write_frame(out / f"{name}.{ext}", ext, frame)
    write_frame(out / LATENT_FILE, "parquet", person)
    truth = strategy_truth(p, grace_days=protocol.grace_days, n=truth_patients, days=protocol.risk_days,
                           horizon=protocol.rmst_horizon_days)  # its own seed: the population, not this sample
    starters = person["ketamine_start_day"].is_not_null()
    doc = {
        "generator": "ketaoutcomes.simulate.ssri_failure_export",
        "design": "ssri_failure",
        "export_version": EXPORT_VERSION,
        "seed": settings.seed,
        "n_patients": settings.n_patients,
        "settings": settings.model_dump(mode="json"),
        "settings_id": settings.settings_id,
        "registries_fingerprint": reg.fingerprint,
        "time_origin": "time zero: the end date of the failed SSRI course (courses.end_reason non_response); days",
        "outcome": "response: the first MADRS rating after time zero at or below (1 - response_reduction) x the "
                   "rating on time zero (the instruments registry's threshold)",
        "strategies": {"initiate": f"start ketamine (arms {list(protocol.treatment_arms) or 'every ketamine arm'}) "
                                   f"on a day in [0, {protocol.grace_days}]: inside the window on the natural start "
                                   "day, else on the window's last day (Webster-Clark)",
                       "never": "no ketamine during follow-up (stay on or switch SSRI)"},
        "strategy_truth": truth,
        "parameters": p.model_dump(mode="json"),
        "counts": {
            "patients": person.height,
            "ketamine_starts_seen": int(starters.sum()),
            "ketamine_starts_in_grace_period": int((person["ketamine_start_day"] <= protocol.grace_days).sum()),
            "responses_seen": int(person["response_event"].sum()),
            "lost_to_follow_up": int((person["followup_days"] < protocol.followup_days).sum()),
            "rows": {name: frame.height for name, frame in frames.items()},
            "negative_control_events_seen": {name: int(person[f"{name}_event"].sum())
                                             for name in p.negative_control_names},
        },
        "note": "the RMST difference and risks are those of the strategies as defined, simulated for every patient "
                "of a large cohort without dropout; the negative-control outcomes (event_type = the control's name in "
                "clinical_events, the first after time zero and up to the end of follow-up) have no effect of any "
                "strategy: their true risk differences are 0",
    }
    (out / TRUTH_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return out
