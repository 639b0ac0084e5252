"""The target-trial protocol a study may declare: the trial we would run, as data.

A :class:`TargetTrialProtocol` is the ``[target_trial]`` table of a study file
(:class:`ketaoutcomes.settings.StudySettings.target_trial`). Like the rest of the study it is
frozen, validated and hashed (it is part of the study's ``settings_id``), saved beside the outputs
and rendered in the report as the protocol table (target trial | emulation) and the TARGET
checklist. docs/target-trial.md explains the design; this module only says what a protocol holds
and which combinations are refused.

The trial (the default protocol): adults whose SSRI course ended in non-response (the failure
date is time zero), with no ketamine in the washout before it, are assigned to one of two
strategies:

* **initiate**: start ketamine (any route in ``treatment_arms``, every ketamine arm of the
  registry when empty) within ``grace_days`` days of time zero;
* **never**: no ketamine during follow-up (stay on, or switch within, SSRIs).

The emulation clones every eligible patient into both strategies at time zero, censors a clone
when it deviates, and weights the clones that remain by the inverse probability of remaining
uncensored (clone-censor-weighting, :mod:`ketaoutcomes.models.ccw`). The contrast is the
per-protocol analogue: risks at ``risk_days``, their difference and ratio, and the difference of
restricted mean times to the outcome up to ``rmst_horizon_days``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ketaoutcomes.contract import CODE_MAX_CHARS

__all__ = ["Eligibility", "NegativeControlOutcome", "TargetTrialProtocol"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")



class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Eligibility(_Frozen):
    """Who enters the trial, at time zero."""

    #: The arm of the course whose failure is time zero (a key of the arms registry).
    failed_arm: str = "ssri"
    #: The course ended for one of these reasons (courses.end_reason).
    failure_end_reasons: tuple[Literal["non_response", "adverse_event", "completed", "other"], ...] = ("non_response",)
    #: An adequate trial: the failed course lasted at least this many days (start to end date).
    min_course_days: int = Field(default=28, ge=0, le=365)
    #: Age at index (patients.age_at_index), inclusive.
    min_age: int = Field(default=18, ge=0, le=120)
    max_age: int = Field(default=90, ge=0, le=120)
    #: No course on a ketamine arm that started in this many days before time zero (or ran into it).
    washout_days: int = Field(default=180, ge=0, le=3650)
    #: Baseline: the last rating of the study instrument in [time zero - window, time zero]; a
    #: patient without one is not eligible (counted).
    baseline_window_days: int = Field(default=14, ge=0, le=90)
    #: One trial per patient: the first eligible failure (later failures are not new trials).
    first_failure_only: Literal[True] = True

    @model_validator(mode="after")
    def _ages(self) -> "Eligibility":
        if self.min_age > self.max_age:
            raise ValueError(f"eligibility.min_age ({self.min_age}) is above max_age ({self.max_age})")
        if not self.failure_end_reasons:
            raise ValueError("eligibility.failure_end_reasons is empty: name the end reason(s) that make a failure")
        return self


class NegativeControlOutcome(_Frozen):
    """An outcome no strategy can affect, run through the identical analysis (its true effect is
    null, so its estimate measures systematic error). Its event is the first ``clinical_events`` row
    of the patient after time zero whose ``event_type`` is one of ``event_types``
    (:func:`ketaoutcomes.derive.target_trial.target_trial_cohort`)."""

    #: Short name (lower case, digits, underscore), used in result tables.
    name: str
    #: Where it comes from in the data, in words (e.g. "first fracture recorded after time zero").
    description: str = Field(default="", max_length=200)
    #: The ``clinical_events.event_type`` codes that count as this outcome (left out: the name itself).
    event_types: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_types(cls, data):
        if isinstance(data, dict) and data.get("event_types") is None and isinstance(data.get("name"), str):
            data = {**data, "event_types": (data["name"],)}
        return data

    @model_validator(mode="after")
    def _name(self) -> "NegativeControlOutcome":
        if not _NAME.match(self.name):
            raise ValueError(f"negative control name {self.name!r} must be lower case letters, digits and '_' "
                             "(starting with a letter, at most 40)")
        where = f"negative control {self.name!r}: event_types"
        if not self.event_types:
            raise ValueError(f"{where} is empty: name the clinical_events.event_type codes it counts (left out: the "
                             "name itself)")
        for code in self.event_types:
            if not code or code != code.strip() or len(code) > CODE_MAX_CHARS:
                raise ValueError(f"{where}: {code!r} is not a code (1 to {CODE_MAX_CHARS} characters, no white space "
                                 "around it), as written in clinical_events.event_type")
        if len(set(self.event_types)) != len(self.event_types):
            raise ValueError(f"{where} repeat a code: {list(self.event_types)}")
        return self


class TargetTrialProtocol(_Frozen):
    """A target trial and its emulation (module doc). Every field has a default, so ``[target_trial]``
    with nothing in it declares the SSRI-failure trial above."""

    #: The question in words, for the report's protocol table.
    question: str = Field(default="For adults whose SSRI failed: start ketamine within the grace period, "
                                  "or no ketamine?", max_length=300)
    eligibility: Eligibility = Eligibility()
    #: Time zero: the end date of the failed course.
    time_zero: Literal["failure_date"] = "failure_date"
    #: Arms whose course start is "starting ketamine" (registry keys); empty: every ketamine arm.
    treatment_arms: tuple[str, ...] = ()
    #: Strategy "initiate": the first ketamine dose falls on a day in [0, grace_days] after time zero.
    grace_days: int = Field(default=30, ge=1, le=365)
    #: Strategy "never": no ketamine during follow-up; continuing or switching SSRI is allowed.
    comparator: Literal["no_ketamine"] = "no_ketamine"
    #: Assignment in the emulation: every eligible patient cloned into both strategies at time zero.
    assignment: Literal["cloning"] = "cloning"
    #: Follow-up ends this many days after time zero (administrative end), at loss to follow-up
    #: (the last rating of the study instrument) or at the outcome, whichever is first.
    followup_days: int = Field(default=90, ge=2, le=3650)
    #: The outcome (an ADTTE endpoint measured from time zero on the study instrument).
    outcome: Literal["response", "remission"] = "response"
    #: The causal contrast: the per-protocol analogue (adherence to the assigned strategy).
    contrast: Literal["per_protocol"] = "per_protocol"
    #: Risks (cumulative incidence of the outcome), their difference and ratio at these days.
    risk_days: tuple[int, ...] = (7, 28, 56)
    #: Restricted mean time to the outcome up to this day, per strategy, and their difference.
    rmst_horizon_days: int = Field(default=56, ge=1, le=3650)
    #: Baseline covariates of the censoring (start) model: patient columns and the baseline score.
    covariates: tuple[str, ...] = ("age_at_index", "sex", "baseline_score", "prior_failed_trials")
    #: The model of the daily probability of starting (inverse-probability-of-censoring weights).
    weight_model: Literal["pooled_logistic"] = "pooled_logistic"
    #: How "start" continues past the grace period for the clones not started before its last day:
    #: "outcome_model" follows each with a model of the outcome after a start (complementary log-log
    #: on the days since the start, the start day and the covariates, fitted on every observed start)
    #: as if started on the last day; "last_day_weights" lets the few patients who start on the last
    #: day stand in for them, weighted (fragile when they are few: docs/target-trial.md).
    after_grace: Literal["outcome_model", "last_day_weights"] = "outcome_model"
    #: Stabilise the weights (models.ccw says where a numerator applies).
    stabilised: bool = True
    #: Cap the weights at this quantile of their person-interval distribution (null: no cap).
    truncation: float | None = Field(default=None, gt=0.5, lt=1)
    #: Person-level bootstrap of the whole procedure (clones of a person resampled together; seeded
    #: by the study's random_seed) for the confidence intervals.
    bootstrap_replicates: int = Field(default=200, ge=0, le=10_000)
    #: Negative-control outcomes (empirical calibration of the risk ratios).
    negative_controls: tuple[NegativeControlOutcome, ...] = ()
    #: Fewer usable negative controls than this: calibration is "not evaluable" and the calibrated
    #: result is withheld.
    min_negative_controls: int = Field(default=5, ge=1, le=1000)
    #: An expected absolute systematic error (EASE) at or above this fails the calibration diagnostic.
    max_ease: float = Field(default=0.25, gt=0, le=5)

    @model_validator(mode="after")
    def _consistent(self) -> "TargetTrialProtocol":
        days = self.risk_days
        if not days:
            raise ValueError("target_trial.risk_days is empty: name at least one day")
        if list(days) != sorted(set(days)) or min(days) < 1:
            raise ValueError(f"target_trial.risk_days {list(days)} must be increasing whole days >= 1")
        if max(days) > self.followup_days:
            raise ValueError(f"target_trial.risk_days go to day {max(days)}, past followup_days ({self.followup_days})")
        if self.rmst_horizon_days > self.followup_days:
            raise ValueError(f"target_trial.rmst_horizon_days ({self.rmst_horizon_days}) is past followup_days "
                             f"({self.followup_days})")
        if self.grace_days >= self.followup_days:
            raise ValueError(f"target_trial.grace_days ({self.grace_days}) must end before followup_days "
                             f"({self.followup_days})")
        names = [nc.name for nc in self.negative_controls]
        if len(names) != len(set(names)):
            raise ValueError(f"target_trial.negative_controls repeat a name: {sorted(n for n in set(names) if names.count(n) > 1)}")
        if self.outcome in names:
            raise ValueError(f"target_trial.negative_controls include the outcome {self.outcome!r}")
        if len(set(self.treatment_arms)) != len(self.treatment_arms):
            raise ValueError(f"target_trial.treatment_arms repeat an arm: {list(self.treatment_arms)}")
        if self.eligibility.failed_arm in self.treatment_arms:
            raise ValueError(f"target_trial.treatment_arms include the failed arm {self.eligibility.failed_arm!r}")
        return self
