"""A seeded synthetic cohort with known truth, in the import format.

Design
------
Patients are generated in fixed chunks of :data:`CHUNK_SIZE`; chunk ``c`` draws
every random quantity from its own stream
``SeedSequence([seed, c, crc32(name)])``, one stream per named quantity. So

* the same settings give byte-identical files, and memory is bounded by the
  chunk, not by ``n_patients``;
* a smaller cohort is the first patients of a larger one with the same seed
  (every draw is taken in patient order from its own stream);
* results *do* depend on ``CHUNK_SIZE`` (a constant of the generator, stated in
  truth.json);
* patient-level draws (covariates, the uniform of the arm choice, the latent
  response / relapse / dropout uniforms, maintenance, remission) do not depend
  on the arm: simulating with ``force_arm=A`` gives the same patients with the
  same latent uniforms under arm A (common random numbers). Row-level noise
  (visit jitter, rating noise, vitals, adverse events) is drawn per row and so
  differs between arms.

Time is counted in integer minutes from midnight of the course start date; the
first dose is on day 0 at a clinic time. No Python loop runs over patients or
rows; the only loops are over arms and adverse-event types.

Response (the truth the analyses target)
----------------------------------------
Latent time to response from the first dose follows proportional hazards::

    h(t | x) = h0(t) * exp(beta_arm + gamma'(x - centre) + u_site)

with a Weibull ``h0`` (shape ``k``, scale ``lambda`` days; reference arm SSRI,
``beta_ssri = 0``) and ``x`` the covariates *as written to the files*: age at
index (per year, stored value, 90 = 90+), sex M vs F (U counts as F), the
observed baseline MADRS (the baseline rating written to mood_scores, not the
latent severity, so a Cox model on the observed baseline is not attenuated by
rating noise) and prior failed trials. ``u_site`` is a site log baseline-hazard
multiplier, so the model is exact with site as Cox strata (and site is also a
confounder: it moves arm choice).

Real ketamine-vs-SSRI hazards are *not* proportional: ketamine acts within
hours to days and non-responders stop responding, while SSRIs work over weeks.
The generator makes them proportional on purpose (one shared Weibull shape)
so that the truth is one number per route. The shape (0.9) is a compromise:
ketamine responders respond in days (median ~1 week), SSRI responders in
weeks (median ~5 weeks), with response proportions of ~0.4-0.6 over each arm's
response window.

Observed response: ratings are on an arm-specific visit grid. Before the latent
response time every rating of the instrument is above ``(1 - reduction) x
baseline``; from it on, at or below. So the observed response visit is the first
rating at or after the latent time (the only blur is the grid). Non-responders
are followed to the end of induction (the "decision" rating, never skipped),
responders for 8-26 weeks after the response visit.

Confounding by indication: the arm is drawn from a multinomial logit in which
more prior failures and a higher observed baseline (and site preferences) make
ketamine arms more likely; the same covariates lower the response hazard.

Relapse: latent time from the *observed* response visit to relapse is Weibull
(common shape, scale per arm from its median) with hazard ratio
``maintenance_hr`` for responders on maintenance (a random share of responders
per arm, independent of covariates) and ``exp(g (prior - centre))``. After
relapse every rating is at or above the relapse threshold and before it below,
and the first rating after relapse triggers a check rating 5-10 days later.

Dropout is exponential (per-week hazard higher before latent response than
after): it depends on how the patient is doing but is non-informative for each
endpoint (constant among those still at risk). Missed ratings likewise depend
on the state (before response / after / after relapse).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ketaoutcomes.contract import OPTIONAL_TABLES, TABLE_ORDER, polars_schema, table
from ketaoutcomes.registries import Registries, load_registries
from ketaoutcomes.settings import SimulationSettings

from .arrays import (
    DAY,
    INF,
    Streams,
    clock_minute,
    expand,
    first_per_owner,
    grouped_cumsum,
    last_per_owner,
    pick,
    pick_by_group,
    row_key,
    sort_rows,
)
from .params import GeneratorParameters
from .tables import ChunkTables

__all__ = [
    "CHUNK_SIZE",
    "GENERATOR_VERSION",
    "ROUTE_TABLES",
    "ChunkResult",
    "n_chunks",
    "iter_chunks",
    "simulate_chunk",
    "simulate_frames",
    "polars_schema",
]

#: The tables of the route cohort: every import table but the optional ones (no clinical_events).
ROUTE_TABLES: tuple[str, ...] = tuple(t for t in TABLE_ORDER if t not in OPTIONAL_TABLES)

#: Patients per chunk. Results depend on it (each chunk has its own streams).
CHUNK_SIZE = 25_000
GENERATOR_VERSION = 1
_SITE_TAG = 2**32 - 1  # stream tag of the cohort-wide site parameters (never a chunk index)

# --------------------------------------------------------------------------- cohort-wide
@dataclass(frozen=True)
class SiteParameters:
    codes: list[str]
    weights: np.ndarray  # (n_sites,)
    preference: np.ndarray  # (n_sites, n_arms) logit offsets, reference arm 0
    response_log_hr: np.ndarray  # (n_sites,)

    def to_json(self, arms: list[str]) -> dict:
        return {
            code: {
                "weight": round(float(self.weights[i]), 6),
                "assignment_logit_offset": {a: round(float(self.preference[i, j]), 6) for j, a in enumerate(arms)},
                "response_log_hr": round(float(self.response_log_hr[i]), 6),
            }
            for i, code in enumerate(self.codes)
        }


def site_parameters(settings: SimulationSettings, params: GeneratorParameters) -> SiteParameters:
    """Site sizes, arm preferences and baseline-hazard multipliers (drawn once per seed)."""
    s = Streams(settings.seed, _SITE_TAG)
    n, arms = settings.n_sites, list(params.arms)
    width = max(2, len(str(n)))
    codes = [f"S{i + 1:0{width}d}" for i in range(n)]
    weights = s("site_weights").dirichlet(np.full(n, params.site_concentration)) if n > 1 else np.ones(1)
    pref = s.z("site_preference", (n, len(arms))) * params.site_preference_sd
    pref[:, arms.index(params.reference_arm)] = 0.0
    resp = s.z("site_response", n) * params.site_response_sd
    resp -= float(weights @ resp)  # centred: the Weibull scale refers to an average site
    return SiteParameters(codes, weights, pref, resp)


# --------------------------------------------------------------------------- chunk
@dataclass
class ChunkResult:
    index: int
    frames: dict[str, pl.DataFrame]
    latent: pl.DataFrame
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def n_chunks(n_patients: int) -> int:
    return max(1, math.ceil(n_patients / CHUNK_SIZE))


class _ArmTable:
    """Per-arm parameters as arrays indexed by arm code."""

    def __init__(self, params: GeneratorParameters) -> None:
        self.names = list(params.arms)
        self.p = [params.arms[a] for a in self.names]

    def col(self, attr: str, dtype=float) -> np.ndarray:
        return np.array([getattr(p, attr) for p in self.p], dtype=dtype)


def simulate_chunk(
    settings: SimulationSettings,
    chunk_index: int,
    *,
    params: GeneratorParameters | None = None,
    force_arm: str | None = None,
    registries: Registries | None = None,
    sites: SiteParameters | None = None,
) -> ChunkResult:
    """Generate one chunk of patients (all tables, plus the latent per-patient truth)."""
    params = params or GeneratorParameters()
    reg = registries or load_registries()
    sites = sites or site_parameters(settings, params)
    _check_arms(params, reg, force_arm)
    lo = chunk_index * CHUNK_SIZE
    hi = min(settings.n_patients, lo + CHUNK_SIZE)
    if not 0 <= lo < hi:
        raise ValueError(f"chunk {chunk_index} is outside a cohort of {settings.n_patients} patients")
    return _Chunk(settings, params, reg, sites, chunk_index, lo, hi, force_arm).run()


def _check_arms(params: GeneratorParameters, reg: Registries, force_arm: str | None) -> None:
    missing = [a for a in params.arms if a not in reg.arms]
    if missing:
        raise ValueError(f"arms {missing} have generator parameters but are not in the arms registry")
    if force_arm is not None and force_arm not in params.arms:
        raise ValueError(f"force_arm {force_arm!r} is not one of the generator's arms {list(params.arms)}")


class _Chunk(ChunkTables):
    """One chunk's generation, step by step. Arrays named ``*_abs`` are minutes
    from midnight of the patient's start date; ``*_days`` are days since the
    first dose."""

    def __init__(self, settings, params, reg, sites, index, lo, hi, force_arm):
        self.settings, self.P, self.reg, self.sites = settings, params, reg, sites
        self.index, self.lo, self.n, self.force_arm = index, lo, hi - lo, force_arm
        self.S = Streams(settings.seed, index)
        self.A = _ArmTable(params)
        self._id_cache: dict[str, pl.Series] = {}

    # ------------------------------------------------------------------ run
    def run(self) -> ChunkResult:
        self._patients()
        self._assign()
        self._latent()
        self._induction()
        self._phase_a_ratings()
        self._observe_response()
        self._followup_ratings()
        self._sessions()
        frames = {
            "patients": self._patients_frame(),
            "courses": self._courses_frame(),
            "sessions": self._sessions_frame(),
            "adverse_events": self._adverse_events_frame(),
            "mood_scores": self._mood_frame(),
        }
        frames = {k: frames[k] for k in ROUTE_TABLES}
        return ChunkResult(self.index, frames, self._latent_frame(), self._counts(frames))

    # ------------------------------------------------------------------ patients
    def _patients(self) -> None:
        P, S, n = self.P, self.S, self.n
        self.gid = np.arange(self.lo, self.lo + n)
        self.sex_labels = list(P.sex_p)
        self.sex = pick(S.u("sex", n), list(P.sex_p.values()))
        self.male = (np.array(self.sex_labels)[self.sex] == "M").astype(float)
        age = P.age_min + np.exp(math.log(P.age_log_median_minus_min) + P.age_log_sd * S.z("age", n))
        self.age = np.minimum(np.floor(age), P.age_cap).astype(np.int64)
        self.prior = pick(S.u("prior_failed", n), P.prior_failed_p).astype(np.int64)
        self.dx_labels = list(P.diagnosis_p)
        self.dx = pick(S.u("diagnosis", n), list(P.diagnosis_p.values()))
        med = np.array([P.weight_median_kg[s] for s in self.sex_labels])[self.sex]
        w = med * np.exp(P.weight_log_sd * S.z("weight", n))
        self.weight = np.round(np.clip(w, *P.weight_range_kg), 1)
        self.weight_missing = S.u("weight_missing", n) < P.p_weight_missing
        self.site = pick(S.u("site", n), self.sites.weights)
        sev = np.clip(P.severity_mean + P.severity_sd * S.z("severity", n), *P.severity_range)
        self.severity = sev
        madrs = self.reg.instruments["MADRS"]
        self.base_madrs = np.clip(np.rint(sev + P.noise_sd["MADRS"] * S.z("baseline_noise", n)), madrs.score_min, madrs.score_max)
        self.phq9 = "PHQ9" in self.reg.instruments and "PHQ9" in P.noise_sd
        if self.phq9:
            phq = self.reg.instruments["PHQ9"]
            self.base_phq = np.clip(np.rint(P.phq9_per_madrs * sev + P.noise_sd["PHQ9"] * S.z("baseline_phq9", n)),
                                    phq.score_min, phq.score_max)
            self.does_phq = S.u("does_phq9", n) < P.p_phq9
        self.start_day = np.floor(S.u("start_day", n) * P.start_span_days).astype(np.int64)
        self.fd = clock_minute(S.u("first_dose_time", n))  # first dose, minutes from start midnight
        # records (look-back) start before the first course; own streams, so nothing else moves
        self.lookback = np.floor(S.u("records_lookback", n) * (P.records_lookback_max_days + 1)).astype(np.int64)
        self.lookback_missing = S.u("records_start_missing", n) < P.p_records_start_missing
        self.admin_abs = (P.export_after_days - self.start_day) * DAY
        # vitals baselines (patient level)
        self.sbp0 = P.sbp_pre[0] + P.sbp_pre[1] * S.z("sbp_patient", n)
        self.dbp0 = P.dbp_pre[0] + P.dbp_pre[1] * S.z("dbp_patient", n)
        self.hr0 = P.hr_pre[0] + P.hr_pre[1] * S.z("hr_patient", n)

    def _centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = self.P.covariate_centre
        return (self.age - c["age_at_index"], self.base_madrs - c["baseline_score"], self.prior - c["prior_failed_trials"])

    # ------------------------------------------------------------------ assignment
    def _assign(self) -> None:
        A, n = self.A, self.n
        age_c, base_c, prior_c = self._centred()
        logit = (
            A.col("assign_intercept")[None, :]
            + np.outer(prior_c, A.col("assign_per_prior_failure"))
            + np.outer(base_c, A.col("assign_per_baseline_point"))
            + np.outer(age_c / 10.0, A.col("assign_per_10y_age"))
            + self.sites.preference[self.site]
        )
        logit -= logit.max(axis=1, keepdims=True)
        prob = np.exp(logit)
        prob /= prob.sum(axis=1, keepdims=True)
        self.propensity = prob
        u = self.S.u("arm", n)  # drawn even when forced: common random numbers
        assigned = np.minimum((np.cumsum(prob, axis=1) < u[:, None]).sum(axis=1), len(A.names) - 1)
        self.arm = np.full(n, A.names.index(self.force_arm)) if self.force_arm else assigned

    # ------------------------------------------------------------------ latent times
    def _latent(self) -> None:
        P, S, A, n, arm = self.P, self.S, self.A, self.n, self.arm
        age_c, base_c, prior_c = self._centred()
        self.lp_cov = (
            P.response_log_hr_age_per_10y * age_c / 10.0
            + P.response_log_hr_male * self.male
            + P.response_log_hr_baseline_per_point * base_c
            + P.response_log_hr_prior_failure * prior_c
        )
        self.lp = A.col("response_log_hr")[arm] + self.lp_cov + self.sites.response_log_hr[self.site]
        k, lam = P.response_weibull_shape, P.response_weibull_scale_days
        e = -np.log1p(-S.u("response", n))  # Exp(1)
        self.t_resp_days = lam * (e * np.exp(-self.lp)) ** (1.0 / k)
        self.t_resp_abs = self.fd + self.t_resp_days * DAY
        # dropout: piecewise-exponential with hazards before / after latent response
        l1 = P.dropout_per_week_before_response / 7.0
        l2 = P.dropout_per_week_after_response / 7.0
        ed = -np.log1p(-S.u("dropout", n))
        d = np.where(ed <= l1 * self.t_resp_days, ed / l1, self.t_resp_days + (ed - l1 * self.t_resp_days) / l2)
        self.drop_days = d
        self.drop_abs = self.fd + d * DAY
        # responder traits (used only if a response is observed)
        self.maintained = S.u("maintenance", n) < A.col("maintenance_share")[arm]
        self.remitter = S.u("remitter", n) < A.col("p_remission_given_response")[arm]
        ur = S.u("remission_delay", n)
        with np.errstate(divide="ignore"):
            delay = np.maximum(0.0, -np.log(2.0 * (1.0 - ur)))  # 0 for half, Exp(1) for the other half
        self.remission_delay_days = delay * A.col("remission_delay_mean_days")[arm]
        kr = P.relapse_weibull_shape
        scale = A.col("relapse_median_days")[arm] / math.log(2.0) ** (1.0 / kr)
        self.relapse_lp = np.where(self.maintained, np.log(A.col("maintenance_hr")[arm]), 0.0) + P.relapse_log_hr_prior_failure * prior_c
        er = -np.log1p(-S.u("relapse", n))
        self.relapse_days = scale * (er * np.exp(-self.relapse_lp)) ** (1.0 / kr)
        f0, f1 = P.followup_after_response_days
        self.followup_days = f0 + (f1 - f0) * S.u("followup", n)
        self.switch_u = S.u("switch", n)
        # baseline / screening rating timing
        self.no_baseline = S.u("no_baseline", n) < P.p_no_baseline
        self.older = S.u("older_rating", n) < P.p_no_baseline_older
        self.base_day_back = np.floor(S.u("baseline_day", n) * (P.baseline_days_before + 1)).astype(np.int64)
        self.older_day_back = 16 + np.floor(S.u("older_day", n) * 30).astype(np.int64)
        self.base_clock = clock_minute(S.u("baseline_clock", n))
        self.base_min_before = 30 + 5 * np.floor(S.u("baseline_min_before", n) * 19).astype(np.int64)
        self.screening = S.u("screening", n) < P.p_screening
        self.screen_back = 14 + np.floor(S.u("screening_day", n) * 22).astype(np.int64)
        self.screen_z = S.z("screening_noise", n)
        self.conc_ssri_u = S.u("conc_ssri", n)
        self.conc_benzo_u = S.u("conc_benzo", n)
        self.conc_missing_u = S.u("conc_missing", n)
        self.ssri_drug = pick(S.u("ssri_drug", n), P.ssri_drugs_p)

    # ------------------------------------------------------------------ induction sessions
    def _induction(self) -> None:
        S, A, arm = self.S, self.A, self.arm
        fixed = [p.induction_days for p in A.p]
        n_ind = pick_by_group(S.u("n_induction", self.n), arm,
                               [(p.induction_sessions, p.induction_sessions_p) if p.induction_days is None
                                else ((len(p.induction_days),), (1.0,)) for p in A.p], dtype=np.int64)
        owner, pos = expand(n_ind)
        rarm = arm[owner]
        gap = pick_by_group(S.u("induction_gap", len(owner)), rarm,
                             [(p.induction_gap_days, p.induction_gap_p) for p in A.p], dtype=np.int64)
        gap[pos == 0] = 0
        day = grouped_cumsum(gap, n_ind)
        jitter = np.floor(S.u("induction_jitter", len(owner)) * 5).astype(np.int64) - 2
        for a, days in enumerate(fixed):
            if days is not None:
                m = rarm == a
                d = np.asarray(days, dtype=np.int64)[pos[m]]
                day[m] = np.where(pos[m] > 0, d + jitter[m], 0)
        clock = np.where(pos == 0, self.fd[owner], clock_minute(S.u("induction_clock", len(owner))))
        self.ind = dict(owner=owner, pos=pos, minute=day * DAY + clock)
        self.last_ind_abs = last_per_owner(owner, self.ind["minute"].astype(float), self.n)

    # ------------------------------------------------------------------ ratings
    def _phase_a_ratings(self) -> None:
        """Ratings of the response window: after each induction session (or at each
        visit), ending with the decision rating."""
        S, A, arm, ind = self.S, self.A, self.arm, self.ind
        after = A.col("rating_after_each_session", bool)[arm[ind["owner"]]]
        at_visit = ~after & (ind["pos"] > 0)
        jit = 5 * np.floor(S.u("rating_jitter", len(ind["owner"])) * 37).astype(np.int64) - 60  # -1 h..+2 h
        r_min = np.where(after, ind["minute"] + DAY + jit, ind["minute"] + 10)
        keep = after | at_visit
        owner, minute = ind["owner"][keep], r_min[keep]
        # decision rating: ketamine arms a few days after the last session; SSRI the last visit
        after_p = A.col("rating_after_each_session", bool)[arm]
        lo = np.array([p.decision_gap_days[0] for p in A.p])[arm]
        hi = np.array([p.decision_gap_days[1] for p in A.p])[arm]
        gap = lo + np.floor(S.u("decision_gap", self.n) * (hi - lo + 1)).astype(np.int64)
        dec = (self.last_ind_abs // DAY + gap) * DAY + clock_minute(S.u("decision_clock", self.n))
        last_rating = last_per_owner(owner, minute.astype(float), self.n)
        self.decision_abs = np.where(after_p, dec, last_rating)
        dec_owner = np.flatnonzero(after_p)
        owner = np.concatenate([owner, dec_owner])
        minute = np.concatenate([minute.astype(float), self.decision_abs[dec_owner]])
        owner, minute = sort_rows(owner, minute)
        is_dec = minute == self.decision_abs[owner]
        self.ra = dict(owner=owner, minute=minute, is_decision=is_dec)

    def _observe_response(self) -> None:
        P, S, ra, n = self.P, self.S, self.ra, self.n
        owner, minute = ra["owner"], ra["minute"]
        p_miss = np.where(minute < self.t_resp_abs[owner], P.p_missed_pre_response, P.p_missed_post_response)
        missed = (S.u("missed_a", len(owner)) < p_miss) & ~ra["is_decision"]
        alive = minute <= np.minimum(self.drop_abs, self.admin_abs)[owner]
        keep = alive & ~missed
        owner, minute = owner[keep], minute[keep]
        self.t_obs_abs = first_per_owner(owner, minute, minute >= self.t_resp_abs[owner], n)
        self.responder = np.isfinite(self.t_obs_abs)
        plan_end = np.where(self.responder, self.t_obs_abs + self.followup_days * DAY, self.decision_abs)
        self.plan_end_abs = plan_end
        self.end_abs = np.minimum.reduce([plan_end, self.drop_abs, self.admin_abs.astype(float)])
        keep = minute <= self.end_abs[owner]
        self.ra_kept = dict(owner=owner[keep], minute=minute[keep])
        self.t_rel_abs = np.where(self.responder, self.t_obs_abs + self.relapse_days * DAY, INF)
        self.t_rem_abs = np.where(self.responder & self.remitter, self.t_obs_abs + self.remission_delay_days * DAY, INF)

    def _followup_ratings(self) -> None:
        """Responders: ratings every 11-15 days after the decision visit until the end
        of follow-up; extra misses after relapse; a check rating after relapse."""
        P, S, n = self.P, self.S, self.n
        g0, g1 = P.followup_gap_days
        span = np.where(self.responder, np.maximum(self.end_abs - self.decision_abs, 0.0), 0.0)
        k = np.where(span > 0, np.floor(span / (g0 * DAY)).astype(np.int64) + 1, 0)
        owner, _ = expand(k)
        gap = g0 + np.floor(S.u("followup_gap", len(owner)) * (g1 - g0 + 1)).astype(np.int64)
        day = self.decision_abs[owner] // DAY + grouped_cumsum(gap, k)
        minute = day * DAY + clock_minute(S.u("followup_clock", len(owner)))
        missed = S.u("missed_b", len(owner)) < P.p_missed_post_response
        keep = (minute <= self.end_abs[owner]) & ~missed
        owner = np.concatenate([self.ra_kept["owner"], owner[keep]])
        minute = np.concatenate([self.ra_kept["minute"], minute[keep].astype(float)])
        owner, minute = sort_rows(owner, minute)
        # extra misses after relapse (never the response visit: relapse is after it)
        p_extra = 1.0 - (1.0 - P.p_missed_after_relapse) / (1.0 - P.p_missed_post_response)
        after_rel = minute >= self.t_rel_abs[owner]
        drop = after_rel & (S.u("missed_relapse", len(owner)) < p_extra)
        owner, minute = owner[~drop], minute[~drop]
        # relapse check rating
        first_after = first_per_owner(owner, minute, minute >= self.t_rel_abs[owner], n)
        c0, c1 = P.relapse_check_days
        has_after = np.isfinite(first_after)
        chk_day = np.where(has_after, first_after, 0.0) // DAY + c0 + np.floor(S.u("check_day", n) * (c1 - c0 + 1))
        chk = chk_day * DAY + clock_minute(S.u("check_clock", n))
        do = has_after & (chk <= self.end_abs) & (S.u("check_done", n) < P.p_relapse_check)
        c_owner = np.flatnonzero(do)
        owner = np.concatenate([owner, c_owner])
        minute = np.concatenate([minute, chk[c_owner]])
        owner, minute = sort_rows(owner, minute)
        dup = np.r_[False, (owner[1:] == owner[:-1]) & (minute[1:] == minute[:-1])]
        self.post = dict(owner=owner[~dup], minute=minute[~dup].astype(np.int64))

    # ------------------------------------------------------------------ scores
    def _state(self, owner: np.ndarray, minute: np.ndarray) -> np.ndarray:
        """0 before response, 1 responded, 2 remitted, 3 relapsed."""
        st = np.zeros(len(owner), dtype=np.int8)
        resp = minute >= self.t_resp_abs[owner]
        # by construction no rating falls between the latent and the observed response
        if np.any(resp & (minute < self.t_obs_abs[owner])):
            raise RuntimeError("generator invariant broken: a rating between the latent and the observed response")
        st[resp] = 1
        st[resp & (minute >= self.t_rem_abs[owner])] = 2
        st[resp & (minute >= self.t_rel_abs[owner])] = 3
        return st

    def _scores(self, instrument: str, base: np.ndarray, state: np.ndarray, t_days: np.ndarray, z: np.ndarray) -> np.ndarray:
        P, inst = self.P, self.reg.instruments[instrument]
        smin, smax = inst.score_min, inst.score_max
        rem, rel = inst.remission_max, inst.relapse_min
        resp_max = np.floor((1.0 - inst.response_reduction) * base + 1e-9)  # highest score that is a response
        a, b, c = P.pre_response_level
        mean = base * (a - b * (1.0 - np.exp(-t_days / c)))
        lo = np.maximum(resp_max + 1, rem + 1)
        hi = np.full(len(base), smax, dtype=float)
        r_hi = np.minimum(resp_max, rel - 1)
        r_lo = np.where(rem + 1 <= r_hi, rem + 1, smin)
        m1, m2, m3 = state == 1, state == 2, state == 3
        mean = np.where(m1, P.response_level * base, mean)
        lo, hi = np.where(m1, r_lo, lo), np.where(m1, r_hi, hi)
        mean = np.where(m2, P.remission_level * rem, mean)
        lo, hi = np.where(m2, smin, lo), np.where(m2, np.minimum(rem, r_hi), hi)
        mean = np.where(m3, np.maximum(rel + 3, P.relapse_level * base), mean)
        lo, hi = np.where(m3, rel, lo), np.where(m3, smax, hi)
        lo = np.minimum(np.maximum(lo, smin), hi)
        x = np.rint(mean + P.noise_sd[instrument] * z)
        x = np.where(x < lo, 2 * lo - x, x)  # reflect into [lo, hi], then clip
        x = np.where(x > hi, 2 * hi - x, x)
        return np.clip(x, lo, hi)

    def _si(self, instrument: str, total: np.ndarray, z: np.ndarray, u: np.ndarray) -> np.ndarray:
        inst = self.reg.instruments[instrument]
        hi = inst.si_item_max if inst.si_item_max is not None else 0.0
        si = np.clip(np.rint(self.P.si_per_point[instrument] * total + 0.7 * z), inst.si_item_min or 0.0, np.minimum(hi, total))
        return np.where(u < self.P.p_si_missing, np.nan, si)

    def _mood_frame(self) -> pl.DataFrame:
        S = self.S
        owner, minute = self.post["owner"], self.post["minute"]
        state = self._state(owner, minute)
        t_days = (minute - self.fd[owner]) / DAY
        madrs = self._scores("MADRS", self.base_madrs[owner], state, t_days, S.z("madrs_noise", len(owner)))
        # pre-treatment ratings: baseline (0-7 d before, or older / none), screening
        has_pre = ~self.no_baseline | self.older
        pre_min = np.where(
            self.no_baseline,
            -self.older_day_back * DAY + self.base_clock,
            np.where(self.base_day_back == 0, self.fd - self.base_min_before, -self.base_day_back * DAY + self.base_clock),
        )
        b_owner = np.flatnonzero(has_pre)
        scr = self.screening & has_pre
        s_owner = np.flatnonzero(scr)
        madrs_inst = self.reg.instruments["MADRS"]
        scr_score = np.clip(np.rint(self.severity + self.P.noise_sd["MADRS"] * self.screen_z), madrs_inst.score_min, madrs_inst.score_max)
        scr_min = (pre_min // DAY - self.screen_back) * DAY + self.base_clock
        parts = [
            (s_owner, scr_min[s_owner], scr_score[s_owner], "MADRS"),
            (b_owner, pre_min[b_owner], self.base_madrs[b_owner], "MADRS"),
            (owner, minute, madrs, "MADRS"),
        ]
        if self.phq9:
            pb = b_owner[self.does_phq[b_owner]]
            vis = self.does_phq[owner] & (S.u("phq9_visit", len(owner)) < self.P.p_phq9_visit)
            po = owner[vis]
            phq = self._scores("PHQ9", self.base_phq[po], state[vis], t_days[vis], S.z("phq9_noise", len(po)))
            parts += [(pb, pre_min[pb], self.base_phq[pb], "PHQ9"), (po, minute[vis], phq, "PHQ9")]
        o = np.concatenate([p[0] for p in parts])
        m = np.concatenate([p[1] for p in parts]).astype(np.int64)
        sc = np.concatenate([p[2] for p in parts]).astype(float)
        inst_codes = np.concatenate([np.full(len(p[0]), 0 if p[3] == "MADRS" else 1, dtype=np.int8) for p in parts])
        order = np.argsort(row_key(o, m, inst_codes), kind="stable")
        o, m, sc, inst_codes = o[order], m[order], sc[order], inst_codes[order]
        si = np.empty(len(o))
        zs, us = S.z("si_noise", len(o)), S.u("si_missing", len(o))
        for code, name in enumerate(("MADRS", "PHQ9")):
            sel = inst_codes == code
            if sel.any():
                si[sel] = self._si(name, sc[sel], zs[sel], us[sel])
        names = ["MADRS", "PHQ9"]
        raters = [self.reg.instruments[x].rater if x in self.reg.instruments else "self" for x in names]
        return self._conform("mood_scores", pl.DataFrame({
            "patient_id": self._pid(o),
            "assessed_at": self._ts(o, m),
            "instrument": pl.Series(names).gather(inst_codes),
            "total_score": sc,
            "si_item_score": pl.Series(si).fill_nan(None),
            "rater": pl.Series(raters).gather(inst_codes),
        }))

    # ------------------------------------------------------------------ sessions
    def _sessions(self) -> None:
        S, A, arm = self.S, self.A, self.arm
        ind = self.ind
        io, im = ind["owner"], ind["minute"]
        stops = A.col("induction_stops_at_response", bool)[arm[io]]
        after_resp = im > self.t_obs_abs[io]
        keep = im <= self.end_abs[io]
        keep &= ~(stops & after_resp & ~self.maintained[io])
        phase_maint = stops & after_resp
        io, im, phase_maint = io[keep], im[keep], phase_maint[keep]
        # maintenance sessions after max(last induction session, response visit)
        start = np.maximum(self.last_ind_abs, self.t_obs_abs)
        eligible = self.responder & self.maintained & (self.end_abs > start)
        gmin = np.array([min(([7] if p.maintenance_initial_weekly else []) + list(p.maintenance_gap_days)) for p in A.p])[arm]
        span = np.where(eligible, self.end_abs - start, 0.0)
        k = np.where(eligible, np.floor(span / ((gmin - 1) * DAY)).astype(np.int64) + 1, 0)
        mo, mpos = expand(k)
        marm = arm[mo]
        pgap = pick_by_group(S.u("maintenance_interval", self.n), arm,
                              [(p.maintenance_gap_days, p.maintenance_gap_p) for p in A.p], dtype=np.int64)
        weekly = np.array([p.maintenance_initial_weekly for p in A.p])[marm]
        gap = np.where(mpos < weekly, 7, pgap[mo])
        gap = gap + np.floor(S.u("maintenance_jitter", len(mo)) * 3).astype(np.int64) - 1
        day = start[mo] // DAY + grouped_cumsum(gap, k)
        mm = day * DAY + clock_minute(S.u("maintenance_clock", len(mo)))
        mkeep = mm <= self.end_abs[mo]
        owner = np.concatenate([io, mo[mkeep]])
        minute = np.concatenate([im, mm[mkeep]]).astype(np.int64)
        maint = np.concatenate([phase_maint, np.ones(mkeep.sum(), dtype=bool)])
        owner, minute, maint = sort_rows(owner, minute, maint)
        counts = np.bincount(owner, minlength=self.n)
        _, seq = expand(counts)
        self.ses = dict(owner=owner, minute=minute, maint=maint, seq=seq)
        self._session_attributes()

    def _session_attributes(self) -> None:
        S, A, P, ses = self.S, self.A, self.P, self.ses
        owner, seq = ses["owner"], ses["seq"]
        m = len(owner)
        rarm = self.arm[owner]
        mode = np.array([p.dose_mode for p in A.p])[rarm]
        # --- dose
        per_kg = pick_by_group(S.u("dose_per_kg", self.n), self.arm, [(p.dose_per_kg, p.dose_per_kg_p) for p in A.p])
        fixed = pick_by_group(S.u("dose_fixed", self.n), self.arm, [(p.dose_fixed_mg, p.dose_fixed_p) for p in A.p])
        first = np.array([p.dose_first_mg if p.dose_first_mg is not None else np.nan for p in A.p])[rarm]
        step = np.array([p.dose_round_mg for p in A.p])[rarm]
        w = self.weight[owner]
        dose_kg = np.round(per_kg[owner] * w / step) * step
        dose_fx = np.where((seq == 0) & np.isfinite(first), first, fixed[owner])
        levels = list(P.ssri_drugs.values())
        lv = np.full((len(levels), max(map(len, levels))), np.nan)
        for i, l in enumerate(levels):
            lv[i, : len(l)] = l
        nlev = np.array([len(l) for l in levels])
        drug = self.ssri_drug[owner]
        dose_ss = lv[drug, np.minimum(seq // 2, nlev[drug] - 1)]
        dose = np.select([mode == "per_kg", mode == "fixed"], [dose_kg, dose_fx], dose_ss)
        lo = np.array([self.reg.arms[a].dose_min_mg for a in A.names])[rarm]
        hi = np.array([self.reg.arms[a].dose_max_mg for a in A.names])[rarm]
        dose = np.clip(dose, lo, hi)
        dose_per_kg = np.where(mode == "per_kg", np.round(dose / w, 3), np.nan)
        inf_min = pick_by_group(S.u("infusion_minutes", m), rarm,
                                 [(p.infusion_minutes, p.infusion_minutes_p) for p in A.p])
        has_inf = np.array([bool(p.infusion_minutes) for p in A.p])[rarm]
        inf_min = np.where(has_inf, inf_min, np.nan)
        # --- vitals
        vit = A.col("record_vitals", bool)[rarm] & (S.u("vitals_missing", m) >= P.p_vitals_missing)
        z = S.z("vitals", (m, 6)).T  # one row of draws per session, in session order
        sbp = self.sbp0[owner] + P.sbp_pre[2] * z[0]
        dbp = self.dbp0[owner] + P.dbp_pre[2] * z[1]
        hr = self.hr0[owner] + P.hr_pre[2] * z[2]
        rise = lambda attr, zz: np.array([getattr(p, attr)[0] for p in A.p])[rarm] + np.array([getattr(p, attr)[1] for p in A.p])[rarm] * zz  # noqa: E731
        sbp_pk, dbp_pk, hr_pk = sbp + rise("sbp_rise", z[3]), dbp + rise("dbp_rise", z[4]), hr + rise("hr_rise", z[5])
        sbp, sbp_pk = np.clip(np.rint(sbp), 80, 240), np.clip(np.rint(sbp_pk), 80, 250)
        dbp, dbp_pk = np.clip(np.rint(dbp), 40, sbp - 15), np.clip(np.rint(dbp_pk), 40, sbp_pk - 15)
        hr, hr_pk = np.clip(np.rint(hr), 40, 180), np.clip(np.rint(hr_pk), 40, 200)
        nan = np.nan
        ses.update(
            dose=np.round(dose, 2), dose_per_kg=dose_per_kg, infusion_minutes=inf_min,
            sbp_pre=np.where(vit, sbp, nan), dbp_pre=np.where(vit, dbp, nan), hr_pre=np.where(vit, hr, nan),
            sbp_peak=np.where(vit, sbp_pk, nan), dbp_peak=np.where(vit, dbp_pk, nan), hr_peak=np.where(vit, hr_pk, nan),
        )
        # --- dissociation (CADSS), falling with repeated sessions
        cm = np.array([p.cadss_mean if p.cadss_mean is not None else nan for p in A.p])[rarm]
        decay = A.col("cadss_decay")[rarm] ** seq
        cad = np.clip(np.rint(cm * decay * np.exp(0.5 * S.z("cadss", m) - 0.125)), 0, 92)
        ses["cadss"] = np.where(S.u("cadss_missing", m) < P.p_cadss_missing, nan, cad)
        # --- adverse events
        types = table("adverse_events").column("ae_type").allowed
        u_ae = S("adverse_events").random((m, len(types))).T
        ae_rows, ae_types = [], []
        for j, t in enumerate(types):
            if t == "hypertension":
                hit = np.isfinite(ses["sbp_peak"]) & ((ses["sbp_peak"] >= P.hypertension_sbp) | (ses["dbp_peak"] >= P.hypertension_dbp))
            else:
                p = np.array([p.ae_per_session.get(t, 0.0) for p in A.p])[rarm]
                if t == "dissociation":
                    p = np.maximum(p * A.col("ae_dissociation_decay")[rarm] ** seq,
                                   np.minimum(p, A.col("ae_dissociation_floor")[rarm]))
                hit = u_ae[j] < p
            idx = np.flatnonzero(hit)
            ae_rows.append(idx)
            ae_types.append(np.full(len(idx), j, dtype=np.int64))
        rows = np.concatenate(ae_rows)
        typ = np.concatenate(ae_types)
        order = np.lexsort((typ, rows))
        rows, typ = rows[order], typ[order]
        sev = pick(S.u("ae_severity", len(rows)), P.ae_severity_p)
        is_ht = np.asarray(types)[typ] == "hypertension"
        severe_ht = (ses["sbp_peak"][rows] >= 200) | (ses["dbp_peak"][rows] >= 120)
        sev = np.where(is_ht, np.where(severe_ht, 2, 1), sev)
        self.ae = dict(session=rows, type=typ, severity=sev, types=list(types))

# --------------------------------------------------------------------------- public
def iter_chunks(
    settings: SimulationSettings,
    *,
    params: GeneratorParameters | None = None,
    force_arm: str | None = None,
    registries: Registries | None = None,
) -> Iterator[ChunkResult]:
    """Every chunk of the cohort in order (one in memory at a time)."""
    params = params or GeneratorParameters()
    reg = registries or load_registries()
    sites = site_parameters(settings, params)
    for c in range(n_chunks(settings.n_patients)):
        yield simulate_chunk(settings, c, params=params, force_arm=force_arm, registries=reg, sites=sites)


def simulate_frames(
    settings: SimulationSettings,
    *,
    params: GeneratorParameters | None = None,
    force_arm: str | None = None,
    chunk_index: int | None = None,
    include_latent: bool = False,
) -> dict[str, pl.DataFrame]:
    """The cohort as polars frames in memory (one per contract table).

    Parameters
    ----------
    chunk_index : int, optional
        Only this chunk; by default all chunks concatenated (meant for small cohorts).
    include_latent : bool
        Also return ``"latent"``: one row per patient with the latent truth (linear
        predictor, latent response time, true propensities, ...).
    """
    chunks = (
        [simulate_chunk(settings, chunk_index, params=params, force_arm=force_arm)]
        if chunk_index is not None
        else list(iter_chunks(settings, params=params, force_arm=force_arm))
    )
    out = {name: pl.concat([c.frames[name] for c in chunks]) for name in ROUTE_TABLES}
    if include_latent:
        out["latent"] = pl.concat([c.latent for c in chunks])
    return out
