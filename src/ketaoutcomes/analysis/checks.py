"""Does the study fit the data it runs on? Checked before any model is fitted, so a mistake in a
study file is an error instead of a report that quietly leaves something out.

* :func:`check_study` (before deriving): every arm the study names (``cohort.arms`` and
  ``cohort.reference_arm``) is an arm of the registry in force and has courses in the data; the
  instrument is in the instruments registry and has ratings; every covariate and the strata
  taken from ``patients`` has a value for some patient; every covariate of the trial's own
  (``models.extra_covariates``) is a column the patients file carried (kept at ingest:
  :mod:`ketaoutcomes.ingest.extra`), and its values fit the declaration: a categorical's are among
  its levels, a numeric's are numbers. A value that does not fit is an error naming the column,
  the first such row and the study file, not a row dropped: the declaration or the export is wrong,
  and leaving those patients out would change the population unseen. Without data (``staged`` None), only the
  registries are checked (``python -m ketaoutcomes study FILE``). A name that is not found gets
  the nearest one, ignoring case (``reference_arm "SSRI" ...; did you mean "ssri"?``).
* :func:`check_population` (after deriving): the analysis population is not empty, and every arm of
  the study (the arms named, else those of the index courses) is still in it; otherwise the error
  names the attrition rule that emptied it, with its counts and what to check.

Both raise a :class:`StudyMismatch` (a ``ValueError``: the command line prints it as one line and
exits 1); the pipeline's write session then publishes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl

from ketaoutcomes.contract import EXTRA_COLUMN, TABLES
from ketaoutcomes.derive import attrition_hint
from ketaoutcomes.derive.target_trial import protocol_problems
from ketaoutcomes.registries import Registries
from ketaoutcomes.settings import StudySettings
from ketaoutcomes.suggest import closest, did_you_mean

__all__ = ["EmptyPopulation", "StudyMismatch", "check_population", "check_study", "extra_covariate_problems",
           "study_problems"]


class StudyMismatch(ValueError):
    """The study names an arm, instrument or covariate that the registries or the data do not have."""


class EmptyPopulation(StudyMismatch):
    """The analysis population, or an arm of the study in it, ends up empty."""


def _names(values: pl.Series | None) -> set[str]:
    return set() if values is None else set(values.drop_nulls().unique().to_list())


def _column(staged: Mapping[str, pl.DataFrame], table: str, column: str) -> pl.Series | None:
    frame = staged.get(table)
    return frame[column] if frame is not None and column in frame.columns else None


def study_problems(study: StudySettings, registries: Registries,
                   staged: Mapping[str, pl.DataFrame] | None = None) -> list[str]:
    """What in ``study`` does not fit ``registries`` (and the staged tables, when given), one
    sentence each, its ``[target_trial]`` included; empty when everything fits."""
    cohort = study.cohort
    named = [("reference_arm", cohort.reference_arm)] + [("arm", a) for a in cohort.arms if a != cohort.reference_arm]
    problems = [f'{what} "{arm}" is not an arm of the registry{did_you_mean(arm, registries.arms)}'
                for what, arm in named if arm not in registries.arms]
    if cohort.instrument not in registries.instruments:
        problems.append(f'instrument "{cohort.instrument}" is not in the instruments registry'
                        f"{did_you_mean(cohort.instrument, registries.instruments)}")
    # the [target_trial]'s arms and covariates (its instrument is the cohort's, named just above)
    problems += [p for p in protocol_problems(study, registries) if not p.startswith("cohort.instrument ")]
    if staged is None:
        return problems

    in_data = _names(_column(staged, "courses", "arm"))
    if not in_data:
        problems.append("the data has no treatment course (nothing loaded, or every course quarantined: "
                        "see table quarantine)")
    else:
        for what, arm in named:
            if arm in registries.arms and arm not in in_data:
                near = closest(arm, in_data)
                problems.append(f'{what} "{arm}" has no course in the data (arms with courses: '
                                f"{', '.join(sorted(in_data))})" + (f'; did you mean "{near}"?' if near else ""))
    rated = _names(_column(staged, "mood_scores", "instrument"))
    if cohort.instrument in registries.instruments and cohort.instrument not in rated:
        which = f"instruments rated: {', '.join(sorted(rated))}" if rated else "no ratings loaded"
        problems.append(f'instrument "{cohort.instrument}" has no ratings in the data ({which}); '
                        "set cohort.instrument")
    patients = staged.get("patients")
    if patients is not None and patients.height:
        wanted = [("covariate", c, "models.covariates") for c in study.models.covariates]
        if study.models.strata is not None:
            wanted.append(("strata", study.models.strata, "models.strata"))
        for what, name, field in wanted:
            if name in TABLES["patients"].column_names and (
                    name not in patients.columns or patients[name].null_count() == patients.height):
                problems.append(f'{what} "{name}" has no value in the data (patients.{name} is empty for every '
                                f"patient); leave it out of {field}")
        problems += extra_covariate_problems(study, patients)
    return problems


def _row(patients: pl.DataFrame, mask: pl.Series) -> str:
    """'patients row N (batch B)' of the first row where ``mask`` holds, and how many more."""
    hit = patients.filter(mask)
    first = hit.row(0, named=True)
    where = f"patients row {first['_row_number']}" if first.get("_row_number") is not None else "a patients row"
    if first.get("_batch_id"):
        where += f" (batch {first['_batch_id']})"
    return where + (f" and {hit.height - 1:,} more row(s)" if hit.height > 1 else "")


def extra_covariate_problems(study: StudySettings, patients: pl.DataFrame) -> list[str]:
    """The study's own covariates (``models.extra_covariates``) against the patients file's kept columns:
    each is there, a categorical's values are among its levels, a numeric's are numbers (values are
    never quoted: rows are named)."""
    extras = study.models.extra_covariates
    if not extras:
        return []
    text = (patients[EXTRA_COLUMN] if EXTRA_COLUMN in patients.columns
            else pl.Series(EXTRA_COLUMN, [None] * patients.height, dtype=pl.String))
    kept = sorted({k for row in text.drop_nulls().unique().to_list() for k in json.loads(row)})
    where = f"[models.extra_covariates] of {study.source}"
    problems = []
    for name, spec in extras.items():
        if name not in kept:
            others = f"the columns beyond the import format it kept: {', '.join(kept)}" if kept else \
                "it kept no column beyond the import format"
            problems.append(
                f'covariate "{name}" (declared in {where}) is not in the data: ingest kept no column {name} of '
                f"the patients file ({others}; a column of free text, or empty in every row, is not kept: see meta_batches.notes "
                "and ignored_columns)" + did_you_mean(name, kept) +
                "; add the column to patients.csv and ingest it again, or leave the covariate out of the study")
            continue
        value = text.str.json_path_match(f"$.{name}")
        if spec.type == "numeric":
            bad = value.is_not_null() & value.cast(pl.Float64, strict=False).is_null()
            if bad.any():
                problems.append(f'covariate "{name}" (numeric in {where}): {_row(patients, bad)}: not a number; correct '
                                "the export, or declare the covariate categorical with its levels")
        else:
            bad = value.is_not_null() & ~value.is_in(list(spec.levels))
            if bad.any():
                problems.append(f'covariate "{name}" (categorical in {where}): {_row(patients, bad)}: not one of its '
                                f"levels {', '.join(spec.levels)} (levels are written as in the export; case "
                                "matters); add the level to levels, or correct the export")
    return problems


def check_study(study: StudySettings, registries: Registries,
                staged: Mapping[str, pl.DataFrame] | None = None) -> None:
    """Raise :class:`StudyMismatch` (one line: ``study: ...; ...``) when :func:`study_problems` finds any."""
    problems = study_problems(study, registries, staged)
    if problems:
        raise StudyMismatch("study: " + "; ".join(problems))


def check_population(study: StudySettings, adsl: pl.DataFrame, attrition: pl.DataFrame) -> None:
    """Raise :class:`EmptyPopulation` when no course is analysable, or an arm of the study has none.

    The message names the attrition rule (of the analysis population: ``paramcd`` null) after
    which nothing was left, its counts before and after, and what to check, e.g. ``analysis: no
    course left after "baseline MADRS in [first dose - 14 d, first dose]" (1,811 -> 0); check the
    instrument and the baseline window (...)``.
    """
    rows = attrition.filter(pl.col("paramcd").is_null()) if "paramcd" in attrition.columns else attrition
    rows = rows.sort("step")

    def emptied(arm: str) -> str | None:
        seq = rows.filter(pl.col("arm") == arm)
        prev = None
        for r in seq.iter_rows(named=True):
            if r["n_remaining"] == 0:
                if prev is None:
                    return f'no course at all ("{r["rule"]}": 0); {attrition_hint(r["rule"])}'
                return f'no course left after "{r["rule"]}" ({prev:,} -> 0); {attrition_hint(r["rule"])}'
            prev = r["n_remaining"]
        return None

    everything = emptied("(all)")
    if everything is not None:
        raise EmptyPopulation(f"analysis: {everything}")
    index_arms = _names(adsl["ARM"]) if "ARM" in adsl.columns else set()
    arms = sorted(set(study.cohort.arms or index_arms) | {study.cohort.reference_arm})
    problems = []
    for arm in arms:
        if arm not in index_arms:
            problems.append(f'arm "{arm}" has no index course (no patient\'s first course is on it); '
                            "check cohort.arms and cohort.reference_arm")
        elif (why := emptied(arm)) is not None:
            problems.append(f'arm "{arm}": {why}')
    if problems:
        way_out = ("or leave the arm out of cohort.arms" if study.cohort.arms else
                   "or name the arms to compare in cohort.arms (empty: every arm of the index courses)")
        raise EmptyPopulation("analysis: " + "; ".join(problems) + f"; {way_out}")
