"""Paths and study settings: validated, frozen objects with an id.

A :class:`StudySettings` is everything an analysis depends on besides the data
and the code. Its ``settings_id`` (a hash of its canonical JSON) is stored with
every result row, so a changed setting makes old results recognisably stale.
No field defaults to "now" and every random step takes its seed from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ketaoutcomes.endpoints import DEFAULT_ENDPOINTS, ENDPOINTS
from ketaoutcomes.protocol import TargetTrialProtocol
from ketaoutcomes.suggest import closest, did_you_mean

__all__ = [
    "DB_ENV",
    "CohortSettings",
    "EXECUTION_ENV",
    "ExecutionSettings",
    "ExtraCovariate",
    "GROUPS",
    "ModelSettings",
    "OutcomeSettings",
    "PropensitySettings",
    "RelapseSettings",
    "ReportSettings",
    "SecondarySettings",
    "SimulationSettings",
    "StudySettings",
    "default_db_path",
    "execution_settings",
    "home_db_path",
    "load_study",
    "project_root",
]

#: Environment variable that chooses the warehouse file (the CLI's --db wins).
DB_ENV = "KETAOUTCOMES_DB"


def project_root() -> Path:
    """The folder that holds data/ and reports/: $KETAOUTCOMES_HOME, else the
    current directory (the README's commands run from the checkout)."""
    return Path(os.environ.get("KETAOUTCOMES_HOME", ".")).resolve()


def home_db_path() -> Path:
    """data/warehouse/ketaoutcomes.duckdb under the project root: the only warehouse into which
    ``report`` simulates the embedded synthetic default when it is empty."""
    return project_root() / "data" / "warehouse" / "ketaoutcomes.duckdb"


def default_db_path() -> Path:
    """:func:`home_db_path`, unless $KETAOUTCOMES_DB says otherwise."""
    env = os.environ.get(DB_ENV)
    if env:
        return Path(env).resolve()
    return home_db_path()


def _nearest(names: list[str], choices) -> str:
    """'; did you mean "x"?' for each name with a near choice (ignoring case), else ''."""
    hits = [(n, closest(n, choices)) for n in names]
    return "".join(f'; did you mean "{c}" for "{n}"?' for n, c in hits if c is not None)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def settings_id(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]


#: The environment variables of :class:`ExecutionSettings`, by field.
EXECUTION_ENV = {"executor": "KETAOUTCOMES_EXECUTOR", "address": "KETAOUTCOMES_DASK_ADDRESS",
                 "n_workers": "KETAOUTCOMES_DASK_WORKERS", "threads_per_worker": "KETAOUTCOMES_DASK_THREADS",
                 "exchange_dir": "KETAOUTCOMES_DASK_EXCHANGE"}


class ExecutionSettings(_Frozen):
    """Where the analysis's units of work run (docs/scaling.md): ``serial`` (the default: here, one
    after the other) or ``dask`` (as Prefect tasks on a Dask cluster: the scheduler at ``address``,
    else a local cluster of ``n_workers`` processes of ``threads_per_worker`` threads, started for the
    run). Not a study setting: the results are the same either way, so it is in no ``settings_id``.

    ``exchange_dir``: the folder, at the same absolute path on every worker, where the units' input
    frames are written once as read-only Parquet files for the workers to read (docs/scaling.md);
    default for a local cluster: a folder in the system's temporary folder; for a cluster at
    ``address`` with none, the frames travel to the workers with the tasks.
    """

    executor: Literal["serial", "dask"] = "serial"
    address: str | None = Field(default=None, pattern=r"^([a-z]+://)?[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}$")
    n_workers: int = Field(default=2, ge=1, le=256)
    threads_per_worker: int = Field(default=1, ge=1, le=64)
    exchange_dir: Path | None = None

    @field_validator("exchange_dir")
    @classmethod
    def _exchange_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not (value.is_absolute() and value.is_dir()):
            raise ValueError("an existing folder, as an absolute path (the same on every worker)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ExecutionSettings":
        given = self.model_fields_set - {"executor"}
        if self.executor == "serial" and given:
            raise ValueError(f"{', '.join(EXECUTION_ENV[f] for f in sorted(given))} given, but "
                             f"{EXECUTION_ENV['executor']} is not dask: set {EXECUTION_ENV['executor']}=dask, or unset them")
        if self.address is not None and given & {"n_workers", "threads_per_worker"}:
            raise ValueError(f"{EXECUTION_ENV['address']} names a running cluster, which has its own workers: unset "
                             f"{' and '.join(EXECUTION_ENV[f] for f in sorted(given - {'address'}))}")
        return self


def execution_settings(environ: dict[str, str] | None = None) -> ExecutionSettings:
    """:class:`ExecutionSettings` from the environment (:data:`EXECUTION_ENV`; an unset or empty
    variable keeps the default).

    Raises
    ------
    ValueError
        A value that does not fit, in one line naming the variable and what it takes.
    """
    env = os.environ if environ is None else environ
    given = {f: env[v].strip() for f, v in EXECUTION_ENV.items() if env.get(v, "").strip()}
    try:
        return ExecutionSettings(**given)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            field = str(e["loc"][0]) if e["loc"] else None
            what = {"literal_error": "serial or dask", "string_pattern_mismatch": "a scheduler address such as "
                    "tcp://scheduler.example:8786"}.get(e["type"], e["msg"].removeprefix("Value error, "))
            problems.append(f"{EXECUTION_ENV[field]}={given[field]!r}: {what}" if field else what)
        raise ValueError("; ".join(problems)) from None


class SimulationSettings(_Frozen):
    """What the simulator needs; the defaults make the embedded default cohort.

    ``design`` chooses the cohort: ``routes`` (the default: every patient's first course on one arm,
    :mod:`ketaoutcomes.simulate.cohort`) or ``ssri_failure`` (an SSRI course ending in non-response,
    then ketamine at a confounded time or no ketamine: the data of a target-trial study,
    :mod:`ketaoutcomes.simulate.ssri_failure_export`), simulated for ``target_trial`` (its
    follow-up, washout, grace period, risk days and horizon; the default protocol when none).
    ``design`` and ``target_trial`` are left out of the JSON and id while they are the defaults, so
    the default cohort keeps its settings id (and its folder, truth file and stamp)."""

    n_patients: int = Field(default=2000, ge=100, le=1_000_000)
    seed: int = Field(default=20261121, ge=0)
    n_sites: int = Field(default=6, ge=1, le=500)
    #: Calendar anchor of the (shifted) dates; a constant, never today's date.
    origin_date: str = "2024-01-01"
    file_format: str = Field(default="csv", pattern="^(csv|parquet)$")
    design: Literal["routes", "ssri_failure"] = "routes"
    target_trial: TargetTrialProtocol | None = None

    def model_dump(self, **kwargs) -> dict:
        data = super().model_dump(**kwargs)
        if data.get("design") == "routes":
            del data["design"]
        if "target_trial" in data and data["target_trial"] is None:
            del data["target_trial"]
        return data

    @model_validator(mode="after")
    def _design(self) -> "SimulationSettings":
        if self.target_trial is not None and self.design != "ssri_failure":
            raise ValueError("target_trial is a setting of the ssri_failure design (design = \"ssri_failure\")")
        return self

    @classmethod
    def for_study(cls, study: "StudySettings", **fields) -> "SimulationSettings":
        """The synthetic cohort of ``study`` (``fields``: size, seed, ...): for a study with a
        ``[target_trial]`` the SSRI-failure cohort of its protocol, else the route cohort."""
        if study.target_trial is not None:
            fields = {"design": "ssri_failure", "target_trial": study.target_trial, **fields}
        return cls(**fields)

    @property
    def protocol(self) -> TargetTrialProtocol:
        """The target trial an ``ssri_failure`` cohort is simulated for (the default protocol when none)."""
        return self.target_trial or TargetTrialProtocol()


class CohortSettings(_Frozen):
    """Who is analysed: arms, the study instrument, the new-user rule, baseline and follow-up.

    * baseline is the *last* score of ``instrument`` in [first dose - ``baseline_window_days``,
      first dose] (not the worst score, which would inflate response by regression to the mean);
    * time is counted in calendar days from the first dose (ADaM AVAL = ADT - STARTDT), so times
      tie at day level.
    """

    reference_arm: str = "ssri"
    #: Arms to compare; empty means every arm in the data.
    arms: tuple[str, ...] = ()
    instrument: str = "MADRS"
    #: New-user rule: the index course (a patient's first course in the records) counts as a new
    #: use only when the records cover at least this many days before it (patients.observation_start),
    #: so no exposure to any arm in that window can have been missed.
    washout_days: int = Field(default=180, ge=0, le=3650)
    #: A patient whose observation_start is not exported has an unknown look-back: kept (and
    #: counted in a note) unless this is true, in which case excluded.
    require_known_lookback: bool = False
    baseline_window_days: int = Field(default=14, ge=0, le=90)
    #: The first dose of a course without sessions (a trial, a psychotherapy arm), which is the time
    #: origin and the end of the baseline window: "start_of_day", 00:00 of its start_date, so a rating
    #: that day (at 09:00) is follow-up, not baseline; or "end_of_day", the end of its start_date, so a
    #: rating that day is baseline and follow-up starts the next day (a trial rated at randomisation).
    #: A course with sessions starts at its first session either way.
    first_dose_without_sessions: Literal["start_of_day", "end_of_day"] = "start_of_day"
    #: Follow-up ends this many days after the time origin (null: no limit); censoring at the
    #: last assessment inside it (CNSR 5).
    time_at_risk_days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _consistent(self) -> "CohortSettings":
        if self.arms and self.reference_arm not in self.arms:
            raise ValueError(f"reference_arm {self.reference_arm!r} must be one of arms {list(self.arms)}"
                             + _nearest([self.reference_arm], self.arms))
        return self


class OutcomeSettings(_Frozen):
    """What is measured: the endpoints (declared in :mod:`ketaoutcomes.endpoints`) and their thresholds.

    Relapse must be confirmed by the next rating ``confirm_min_days`` to ``confirm_max_days``
    after the first rating at or above the threshold (SUSTAIN-1 style).
    """

    #: Endpoints to derive and model (ADTTE PARAMCD); TTSIRES is the resolution of suicidal
    #: ideation (the instrument's item score reaching ``si_resolution_max``) among courses with
    #: ideation at baseline.
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    #: Override the registry's response / remission / relapse thresholds for this study.
    response_reduction: float | None = Field(default=None, gt=0, le=1)
    remission_max: float | None = None
    relapse_min: float | None = None
    confirm_min_days: int = Field(default=5, ge=1)
    confirm_max_days: int = Field(default=15, ge=1)
    #: TTSIRES: suicidal ideation counts as resolved when the instrument's SI item is at or below
    #: this (0: "no suicidal thoughts"; some studies take MADRS item 10 <= 1).
    si_resolution_max: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "OutcomeSettings":
        if self.confirm_min_days > self.confirm_max_days:
            raise ValueError(
                f"confirm_min_days ({self.confirm_min_days}) must not exceed confirm_max_days ({self.confirm_max_days})"
            )
        if not self.endpoints:
            raise ValueError(f"endpoints must name at least one of {', '.join(ENDPOINTS)}")
        unknown = [e for e in self.endpoints if e not in ENDPOINTS]
        if unknown:
            raise ValueError(f"unknown endpoints {unknown}; choose from {', '.join(ENDPOINTS)}"
                             + _nearest(unknown, ENDPOINTS))
        for code in self.endpoints:
            missing = [r for r in ENDPOINTS[code].requires if r not in self.endpoints]
            if missing:
                raise ValueError(f"{code} needs {', '.join(missing)}: {ENDPOINTS[code].event} is timed from "
                                 f"the {ENDPOINTS[code].origin}")
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError(f"endpoints {list(self.endpoints)} name one endpoint twice")
        if self.remission_max is not None and self.relapse_min is not None and self.remission_max >= self.relapse_min:
            raise ValueError(f"remission_max ({self.remission_max:g}) must be below relapse_min ({self.relapse_min:g})")
        return self


#: Study covariates (the ADSL column each becomes: ketaoutcomes.derive.COVARIATE_COLUMNS).
COVARIATES = ("age_at_index", "sex", "baseline_score", "prior_failed_trials", "diagnosis", "weight_kg")
STRATA = ("site", "sex", "diagnosis")
#: An extra covariate's name: a column name of patients.csv (letters, digits, underscores).
EXTRA_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
#: Names an extra covariate may not take (ignoring case): the patients contract's columns, the study
#: covariates and the ADSL columns a model frame carries.
_RESERVED_NAMES = frozenset(n.lower() for n in (
    "patient_id", "site", "sex", "age_at_index", "prior_failed_trials", "diagnosis", "weight_kg", "observation_start",
    *COVARIATES, "STUDYID", "USUBJID", "COURSEID", "ARM", "SITEID", "SEX", "AGE", "PRIORFAIL", "DIAGNOSIS", "WEIGHT",
    "TRTSDTM", "FUENDTM", "ICEREAS", "DCREAS", "LOOKBACK", "NEWUSFL", "PARAMINS", "BASE", "BASEDTM", "CONSSRI",
    "CONBENZO", "NSESS", "NMAINT", "NPOST", "ANLFL", "COVFL", "EXTRACOV", "PARAMCD", "PARAM", "STARTDT", "ADT",
    "AVAL", "AVALU", "CNSR", "EVNTDESC", "CNSDTDSC", "EVENT", "TIME", "weight", "preference"))


class ExtraCovariate(_Frozen):
    """A column of patients.csv beyond the import format (a trial's own covariate), declared by the
    study that uses it: ``[models.extra_covariates]`` ``employment = { type = "categorical", levels =
    [...] }``. Ingest keeps such columns as text (ketaoutcomes.ingest.extra); the analysis checks the
    declaration against the data before it derives anything: the column is there, every value of a
    categorical is one of its levels, every value of a numeric is a number (else an error naming
    the column, a row and the study file: a wrong declaration or a wrong export, not rows to drop)."""

    type: Literal["categorical", "numeric"]
    #: A categorical's values, as written in the export (at least two).
    levels: tuple[str, ...] = ()
    #: How the report names it (default: the column name, underscores as spaces).
    label: str | None = Field(default=None, max_length=60)

    @model_validator(mode="after")
    def _consistent(self) -> "ExtraCovariate":
        if self.type == "categorical" and len(set(self.levels)) < 2:
            raise ValueError("a categorical covariate lists its levels (at least two, as written in the export)")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels {list(self.levels)} name a level twice")
        if self.type == "numeric" and self.levels:
            raise ValueError("a numeric covariate has no levels")
        return self


class ModelSettings(_Frozen):
    """The outcome models: covariates and strata of the adjusted Cox model, interval level,
    estimability, restricted mean time and the discrete-time sensitivity analysis."""

    covariates: tuple[str, ...] = ("age_at_index", "sex", "baseline_score", "prior_failed_trials")
    #: Columns of patients.csv beyond the import format that ``covariates`` names (a trial's own).
    extra_covariates: dict[str, ExtraCovariate] = Field(default_factory=dict)
    strata: str | None = "site"
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    #: Arms with fewer events than this get no hazard ratio (reported as not estimable).
    min_events_per_arm: int = Field(default=5, ge=1)
    #: Restricted mean time without the event (non-response, non-remission, no relapse) up to
    #: this many days after the origin, per arm.
    rmst_horizon_days: int = Field(default=56, ge=1, le=3650)
    #: Discrete-time (interval-censored) sensitivity analysis: width in days of the bands with
    #: their own baseline hazard; wider than the longest regular visit gap.
    discrete_band_days: int = Field(default=28, ge=1, le=365)
    #: Primary contrasts of each route vs the reference arm (the summary at the top of the report):
    #: difference in the share with the event by each of these days, from the primary (weighted
    #: or matched) Kaplan-Meier curves; beside them the difference in median days and in
    #: restricted mean time up to ``rmst_horizon_days``.
    contrast_days: tuple[int, ...] = (7, 28, 56)
    #: Their 95% CIs: percentile intervals of a person-level bootstrap of the whole weighted
    #: estimation (patients resampled, the propensity model refitted and the weights recomputed in
    #: every replicate; seeded from random_seed). 0: no bootstrap, the differences have no CI.
    bootstrap_replicates: int = Field(default=200, ge=0, le=10_000)
    #: The curves' tail: a share by day t, and the restricted mean horizon, are read only where at
    #: least this many patients of each arm are still under follow-up (at risk) on that day (or
    #: the share below). Past it a Kaplan-Meier step rests on a handful of patients and its bootstrap
    #: interval under-covers, so the share is "not estimable" and the RMST horizon is cut there.
    contrast_min_at_risk: int = Field(default=10, ge=1, le=100_000)
    #: ... or this share of the arm's patients in the pair, when that is more (Pocock, Clayton &
    #: Altman 2002, Lancet 359:1686: curtail a curve when some 10-20% remain at risk).
    contrast_min_at_risk_share: float = Field(default=0.10, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSettings":
        if not self.contrast_days or any(d < 1 for d in self.contrast_days) or \
                len(set(self.contrast_days)) != len(self.contrast_days):
            raise ValueError(f"contrast_days {list(self.contrast_days)} must be one or more distinct days >= 1")
        bad = set(self.covariates) - set(COVARIATES) - set(self.extra_covariates)
        if bad:
            raise ValueError(f"unknown covariates {sorted(bad)}; choose from {sorted(COVARIATES)}, or declare a column "
                             "of patients.csv beyond the import format in [models.extra_covariates]"
                             + _nearest(sorted(bad), [*COVARIATES, *self.extra_covariates]))
        for name in self.extra_covariates:
            if re.fullmatch(EXTRA_NAME, name) is None:
                raise ValueError(f"extra covariate {name!r}: a column name of patients.csv is letters, digits and "
                                 "underscores, starting with a letter (at most 64)")
            if name.lower() in _RESERVED_NAMES:
                raise ValueError(f"extra covariate {name!r} takes the name of a column of the import format or of the "
                                 "analysis datasets; list an import-format covariate in covariates only, or rename "
                                 "the export's column")
        unused = [n for n in self.extra_covariates if n not in self.covariates]
        if unused:
            raise ValueError(f"extra covariate(s) {unused} declared but not in covariates; add them to covariates or "
                             "leave the declaration out")
        if len(set(self.covariates)) != len(self.covariates):
            raise ValueError(f"covariates {list(self.covariates)} name a covariate twice")
        if self.strata is not None and self.strata not in STRATA:
            raise ValueError(f"strata must be site, sex, diagnosis or null, not {self.strata!r}"
                             + _nearest([self.strata], STRATA))
        if self.strata is not None and self.strata in self.covariates:
            raise ValueError(f"{self.strata!r} cannot be both a covariate and the strata")
        return self


class PropensitySettings(_Frozen):
    """Propensity-score adjustment of each route vs the reference arm, and the diagnostics gate
    (endpoints.md): an estimate whose max |SMD| after weighting is at or above ``max_smd`` (over the
    covariate levels in the gate: not those rarer than ``min_level_prevalence``), or whose equipoise
    is below ``min_equipoise``, or whose diagnostics could not be computed, is marked as failing
    diagnostics and withheld."""

    #: The propensity model: ridge (L2-penalised logistic regression on the standardised covariates,
    #: intercept unpenalised; finite even when a level separates the arms) or logistic (unpenalised
    #: maximum likelihood). ketaoutcomes.models.ps_model states the penalty and why.
    model: Literal["ridge", "logistic"] = "ridge"
    #: Ridge: variance of the Normal(0, v) prior on each coefficient per SD of its covariate (penalty
    #: sum b^2 / (2 v); glmnet's lambda = 1 / (n v)). Fixed, not cross-validated: no randomness. Smaller
    #: values shrink more and leave more imbalance (ketaoutcomes.models.ps_model says why 10).
    ridge_variance: float = Field(default=10.0, gt=0, le=1e6)
    #: Levels of a categorical covariate (sex U, a small site) are left out of the propensity model
    #: (modelled with the reference level) and of the balance gate, rarest first, while together they
    #: are shared by fewer than this share of the two arms' patients; each is named in a note with its
    #: count. 0 keeps every level.
    min_level_prevalence: float = Field(default=0.02, ge=0, lt=0.5)
    #: Inverse probability of treatment weights (truncated at ps_truncation), overlap weights,
    #: or 1:1 matching.
    weighting: Literal["iptw", "overlap", "matching"] = "iptw"
    ps_truncation: float | None = Field(default=10.0, gt=1)
    #: Matching: greedy 1:1 nearest neighbour on the logit of the propensity score, within this
    #: many standard deviations of it.
    caliper: float = Field(default=0.2, gt=0, le=5)
    #: Matching: when fewer than this share of a route's patients are matched, a note says the
    #: matched HR describes the matched patients, not everyone given the route.
    matched_share_for_att: float = Field(default=0.9, gt=0, le=1)
    max_smd: float = Field(default=0.1, gt=0, le=1)
    #: null: the balance rule is max |SMD| < max_smd (endpoints.md). A value: a covariate fails only
    #: when its |SMD| is significantly above max_smd at this family-wise level (one-sided,
    #: Bonferroni; Hripcsak et al. 2025, CohortMethod's sdmAlpha), which stops rare covariate
    #: levels in small cohorts from failing the gate by chance.
    balance_alpha: float | None = Field(default=None, gt=0, lt=1)
    min_equipoise: float = Field(default=0.2, ge=0, le=1)
    equipoise_bounds: tuple[float, float] = (0.3, 0.7)

    @model_validator(mode="after")
    def _consistent(self) -> "PropensitySettings":
        lo, hi = self.equipoise_bounds
        if not 0 < lo < hi < 1:
            raise ValueError(f"equipoise_bounds {list(self.equipoise_bounds)} must satisfy 0 < low < high < 1")
        if self.weighting == "overlap" and self.ps_truncation is not None:
            raise ValueError("overlap weights are bounded by design: set ps_truncation = null (or use iptw)")
        if self.weighting == "matching" and self.ps_truncation is not None:
            raise ValueError("matching gives no weights to truncate: set ps_truncation = null (or use iptw)")
        return self


class RelapseSettings(_Frozen):
    """Relapse among responders: maintenance as a time-varying exposure, cumulative incidence."""

    #: A responder counts as on maintenance from each maintenance session until this many days
    #: after it (covering the usual 1-4 week gaps between sessions).
    maintenance_exposure_days: int = Field(default=35, ge=1, le=365)
    #: Days after the response at which the cumulative incidence of relapse is tabulated (the
    #: restricted-mean horizon is added).
    cif_days: tuple[int, ...] = (28, 56, 84, 182)


class SecondarySettings(_Frozen):
    """Safety, mood trajectories and the exploratory effect-modifier models."""

    #: The mood-trajectory mixed model is fitted on at most this many patients per arm (a seeded
    #: random sample; statsmodels' MixedLM loops over patients, so its time grows with them).
    trajectory_max_patients_per_arm: int = Field(default=3000, ge=50)
    #: Clinically relevant dissociation: a session's CADSS score above this.
    cadss_cutoff: float = Field(default=4.0, ge=0)
    #: Effect modifiers: dose per this relative step of the route's median induction dose.
    modifier_dose_step: float = Field(default=0.25, gt=0, le=1)
    #: Effect modifiers: age per this many years.
    modifier_age_unit: float = Field(default=10, gt=0)
    #: Effect modifiers: an age-centred HR needs events within this many years of the centre.
    modifier_age_window_years: float = Field(default=10, gt=0)
    #: Effect modifiers: route x site strata are used only with this many events per stratum on average.
    modifier_min_events_per_stratum: int = Field(default=10, ge=1)


class ReportSettings(_Frozen):
    """What the report shows."""

    #: Small-cell suppression: counts from 1 to this are shown as "<{small_cell_max + 1}".
    small_cell_max: int = Field(default=10, ge=0)


#: The groups of a study specification, by key, in file order.
GROUPS: dict[str, type[_Frozen]] = {
    "cohort": CohortSettings, "outcomes": OutcomeSettings, "models": ModelSettings,
    "propensity": PropensitySettings, "relapse": RelapseSettings, "secondary": SecondarySettings,
    "report": ReportSettings,
}
#: A flat (version 1) key -> the group that holds it now.
FLAT_KEYS: dict[str, str] = {key: group for group, cls in GROUPS.items() for key in cls.model_fields}


def nest(raw: dict) -> dict:
    """Read the flat form (every field at the top, as study files were written before the
    settings were grouped) into the nested one; a key given both ways is refused."""
    if not isinstance(raw, dict):
        return raw
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items() if k not in FLAT_KEYS}
    for key, value in raw.items():
        if key in FLAT_KEYS:
            group = out.setdefault(FLAT_KEYS[key], {})
            if not isinstance(group, dict):
                continue  # a group given as an object is validated as it is
            if key in group:
                raise ValueError(f"{key} is given twice: at the top and in [{FLAT_KEYS[key]}]; keep {FLAT_KEYS[key]}.{key}")
            group[key] = value
    return out


class StudySettings(_Frozen):
    """A study specification: one frozen, validated settings object per step, composed (as
    CohortMethod's ``createCmAnalysis`` from ``create*Args``), with an id. The flat form of earlier
    study files (every field at the top level) is read into the groups (:func:`nest`), and so are
    flat keyword arguments: ``StudySettings(weighting="matching", ps_truncation=None)``."""

    name: str = "default"
    #: How patients came to their arms: "observational" (clinic records: the arm was chosen, so the
    #: naive comparison is confounded by indication) or "randomised" (a trial: the arm was assigned
    #: at random, so baseline differences are chance). The report says which; the analysis is the same.
    design: Literal["observational", "randomised"] = "observational"
    cohort: CohortSettings = CohortSettings()
    outcomes: OutcomeSettings = OutcomeSettings()
    models: ModelSettings = ModelSettings()
    propensity: PropensitySettings = PropensitySettings()
    relapse: RelapseSettings = RelapseSettings()
    secondary: SecondarySettings = SecondarySettings()
    report: ReportSettings = ReportSettings()
    #: A target trial to emulate (``[target_trial]``; :mod:`ketaoutcomes.protocol`), or none. Left
    #: out of the settings' JSON and id when none, so a study without one keeps its id.
    target_trial: TargetTrialProtocol | None = None
    #: Seed of every random step of the analysis (no hidden randomness).
    random_seed: int = Field(default=20261121, ge=0)
    #: The file the settings were read from (load_study), for messages; not a setting (not in the id).
    _source: str | None = PrivateAttr(default=None)

    def model_dump(self, **kwargs) -> dict:
        data = super().model_dump(**kwargs)
        if "target_trial" in data and data["target_trial"] is None:
            del data["target_trial"]
        return data

    def __eq__(self, other: object) -> bool:  # the settings, not where they were read from
        return isinstance(other, StudySettings) and self.canonical_json() == other.canonical_json()

    def __hash__(self) -> int:
        return hash(self.canonical_json())

    @property
    def source(self) -> str:
        """Where the settings come from, for a message: "study file PATH" or "the built-in study"."""
        return f"study file {self._source}" if self._source else "the study settings given"

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data):
        return nest(data)

    @model_validator(mode="after")
    def _consistent(self) -> "StudySettings":
        tar = self.cohort.time_at_risk_days
        if tar is not None and tar <= self.outcomes.confirm_max_days:
            raise ValueError(f"time_at_risk_days ({tar}) leaves no room to confirm a relapse "
                             f"(confirm_max_days {self.outcomes.confirm_max_days})")
        return self

    def updated(self, **changes) -> "StudySettings":
        """A validated copy with ``changes`` (flat keys or whole groups)."""
        data = self.model_dump()
        for key, value in nest(changes).items():
            if key in GROUPS and isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return StudySettings.model_validate(data)


#: The default study shipped with the package (equal to ``StudySettings()``; a test keeps them equal).
DEFAULT_STUDY_FILE = Path(__file__).parent / "studies" / "default.toml"


def load_study(path: Path | str | None) -> StudySettings:
    """Study settings from a TOML or JSON file (by suffix; ``None``: the default study).

    Raises
    ------
    ValueError
        Unreadable file, bad TOML/JSON, or settings that fail validation; the
        message names the file and each field's problem.
    """
    if path is None:
        return StudySettings()
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read study file {path}: {exc.strerror}") from None
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"study file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}") from None
    try:
        study = StudySettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise ValueError(f"study file {path}: {problems}") from None
    study._source = str(path)
    return study


def _problem(error: dict) -> str:
    """One validation problem; an unknown key names the nearest known one (``[propensty]``,
    ``weightin``: a typo must not pass, and should say what was meant)."""
    loc = [str(p) for p in error["loc"]]
    where = ".".join(loc) or "settings"
    if error["type"] != "extra_forbidden" or not loc:
        return f"{where}: {error['msg']}"
    group = GROUPS.get(loc[0]) if len(loc) == 2 else None
    if loc[0] == "target_trial" and len(loc) >= 2:  # [target_trial] and its [target_trial.eligibility]
        group = TargetTrialProtocol
        for part in loc[1:-1]:
            field = group.model_fields.get(part)
            group = field.annotation if field is not None and isinstance(field.annotation, type) else None
            if group is None or not issubclass(group, BaseModel):
                group = None
                break
    known = list(group.model_fields) if group else [*StudySettings.model_fields, *FLAT_KEYS]
    return f"{where}: unknown setting" + did_you_mean(loc[-1], known)
