"""Secondary analyses: safety per session and per patient by route, and mood trajectories per
arm (linear mixed model) (pure)."""

from __future__ import annotations

import polars as pl

from ketaoutcomes.analysis.common import StepResult
from ketaoutcomes.notes import Note
from ketaoutcomes.settings import StudySettings

__all__ = ["secondary_analyses"]


def secondary_analyses(
    adsl: pl.DataFrame,
    scores: pl.DataFrame,
    sessions: pl.DataFrame,
    adverse_events: pl.DataFrame,
    courses: pl.DataFrame,
    *,
    study: StudySettings,
) -> StepResult:
    """Safety per session and per patient by route, and mood trajectories per arm (mixed model).

    """
    from ketaoutcomes.models.safety import safety_tables
    from ketaoutcomes.models.trajectory import fit_trajectories, trajectory_data, trajectory_patients

    analysed = adsl.filter(pl.col("ANLFL") == "Y").select("COURSEID")
    c = courses.join(analysed, left_on="course_id", right_on="COURSEID", how="semi")
    # the safety tables count the sessions of the courses ``c`` (analysed) only, and the adverse events
    # of those sessions: no filtered copy of the sessions is made first
    per_session, per_patient = safety_tables(sessions, adverse_events, c, alpha=study.models.alpha,
                                             cadss_cutoff=study.secondary.cadss_cutoff)
    out = {"results_safety": per_session, "results_safety_patients": per_patient}
    notes: list[Note] = []
    rules = dict(instrument=study.cohort.instrument, horizon_days=study.models.rmst_horizon_days,
                 baseline_window_days=study.cohort.baseline_window_days)
    cap = study.secondary.trajectory_max_patients_per_arm
    # The sample is drawn from the patients with ratings before their ratings are built (at a million
    # patients the data set of all of them was the run's memory peak): the same sorted lists per arm and
    # the same seed as when it was drawn from the data set, so the same sample.
    per_arm = trajectory_patients(adsl, scores, **rules).group_by("ARM").agg(pl.col("USUBJID").unique().sort())
    keep = None
    if (per_arm["USUBJID"].list.len() > cap).any():
        keep = per_arm.with_columns(pl.col("USUBJID").list.sample(
            n=pl.min_horizontal(pl.col("USUBJID").list.len(), pl.lit(cap)), seed=study.random_seed))
        keep = keep.explode("USUBJID").select("USUBJID")
        notes.append(Note(f"trajectories: fitted on a random sample of at most {cap:,} patients per arm "
                          f"(seed {study.random_seed}); the intervals are those of the sample", step="secondary"))
    data = trajectory_data(adsl, scores, patients=keep, **rules)
    if data["ARM"].n_unique() >= 2 and study.cohort.reference_arm in data["ARM"].unique().to_list():
        traj = fit_trajectories(data, reference_arm=study.cohort.reference_arm, alpha=study.models.alpha)
        out["results_trajectory"] = traj.predicted.with_columns(pl.lit(traj.converged).alias("converged"))
        out["results_trajectory_fixed"] = traj.fixed
        notes += [Note(f"trajectories: {n}", step="secondary", severity="warning") for n in traj.notes]
    else:
        notes.append(Note("trajectories: fewer than two arms (or no reference arm) with ratings; not fitted",
                          step="secondary", severity="warning"))
    return StepResult(out, tuple(notes))
