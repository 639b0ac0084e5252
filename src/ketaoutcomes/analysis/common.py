"""What the analysis steps share: the model frame of an endpoint, the study's covariates and
strata as ADSL columns, reference levels of categorical terms, and stacking result frames."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl

from ketaoutcomes.derive import COVARIATE_COLUMNS, cnsr_to_event
from ketaoutcomes.models.common import one_blas_thread
from ketaoutcomes.notes import Note
from ketaoutcomes.settings import StudySettings

__all__ = ["CATEGORICAL", "Done", "FanOut", "HandedOver", "ModelTerms", "Pending", "StepResult", "Submit", "arms_of",
           "categorical_references", "is_categorical", "model_frame", "reference_level", "release", "run_now", "run_unit", "serial", "stack",
           "with_arm_labels", "with_terms"]


@dataclass(frozen=True)
class StepResult:
    """What every analysis step returns: result frames keyed by warehouse table name (``run_id``
    and ``settings_id`` are added by the pipeline; an empty frame is not stored) and notes."""

    tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    notes: tuple[Note, ...] = ()

    def table(self, name: str) -> pl.DataFrame:
        """The frame stored as ``name``; an empty frame when the step produced none."""
        return self.tables.get(name, pl.DataFrame())

    def __add__(self, other: "StepResult") -> "StepResult":
        both = set(self.tables) & set(other.tables)
        if both:
            raise ValueError(f"two analysis steps write the same tables: {sorted(both)}")
        return StepResult({**self.tables, **other.tables}, (*self.notes, *other.notes))

class Pending(Protocol):
    """A unit of work submitted (:data:`Submit`): its ``result()`` waits for it, then returns what it
    returned or raises what it raised."""

    def result(self) -> Any: ...


#: How the analysis runs a unit of work (a pure function of frames, given by keyword):
#: ``submit(fn, **kwargs)`` starts ``fn(**kwargs)`` somewhere and returns it as :class:`Pending`.
#: :func:`run_now` runs it here and at once; the Dask fan-out (``flows/dask_fanout.py``,
#: docs/scaling.md) submits it as a Prefect task to a Dask cluster.
Submit = Callable[..., Pending]


class HandedOver(dict):
    """Frames handed to a step to own: it takes each one out of this mapping once nothing it still has
    to start reads it, so a frame whose only reference was here is freed then rather than held to the
    end of the analysis. :func:`~ketaoutcomes.analysis.run_study` is handed the staged tables (given up
    after deriving, the secondary and relapse units, the dose summary of the modifier unit and the
    target trial's cohort: at a million patients some 1.2 GiB of sessions and ratings, with which the
    endpoint units peaked above 6 GiB; docs/scaling.md) and hands the analysis datasets on to
    :func:`~ketaoutcomes.analysis.main.analyze_handed_over`. A caller that still needs the staged
    tables afterwards passes ``run_study`` a plain mapping, which is left as it is."""


def release(staged: Mapping[str, Any]) -> None:
    """Take every table out of ``staged`` when it is :class:`HandedOver` (else nothing)."""
    if isinstance(staged, HandedOver):
        staged.clear()


@dataclass(frozen=True)
class Done:
    """A unit of work that has run (:func:`run_now`)."""

    value: Any

    def result(self) -> Any:
        return self.value


def run_unit(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """``fn(**kwargs)``, one unit of work, with one BLAS thread: OpenBLAS splits a sum (a dot
    product, a least-squares solve) across its threads, so a fit's last digits would depend on how
    many cores the machine running the unit has; with one thread they are the same on every machine,
    here or on a Dask worker. The thread counts in force before are restored after."""
    with one_blas_thread():
        return fn(**kwargs)


def run_now(fn: Callable[..., Any], /, **kwargs: Any) -> Done:
    """The serial :data:`Submit`: ``fn(**kwargs)`` here, at once (:func:`run_unit`)."""
    return Done(run_unit(fn, kwargs))


#: How a whole analysis runs its units: ``fan_out(body)`` calls ``body(submit)`` with the :data:`Submit`
#: of an executor set up for the run (and torn down after it), and returns what ``body`` returns.
FanOut = Callable[[Callable[[Submit], Any]], Any]


def serial(body: Callable[[Submit], Any]) -> Any:
    """The default :data:`FanOut`: every unit here, one after the other (:func:`run_now`)."""
    return body(run_now)


#: ADSL columns that enter a model as categorical terms (one dummy per non-reference level).
CATEGORICAL = frozenset({"SEX", "DIAGNOSIS", "SITEID"})


def is_categorical(frame: pl.DataFrame, column: str) -> bool:
    """A categorical term: SEX, DIAGNOSIS, SITEID, or a column of text (a study's own categorical
    covariate, ``models.extra_covariates``)."""
    return column in CATEGORICAL or (column in frame.columns and frame.schema[column] == pl.String)


@dataclass(frozen=True)
class ModelTerms:
    """The study's covariates and strata as ADSL columns: the one place they are looked up.

    ``covariates`` adjust the outcome models; ``strata`` (site by default) gives the Cox models
    separate baseline hazards, and enters the propensity model and the discrete-time model as a
    covariate (``with_strata``), since site moves the choice of arm.
    """

    covariates: tuple[str, ...]
    strata: str | None

    @classmethod
    def of(cls, study: StudySettings) -> "ModelTerms":
        return cls(tuple(COVARIATE_COLUMNS.get(c, c) for c in study.models.covariates),  # extra ones: own name
                   COVARIATE_COLUMNS[study.models.strata] if study.models.strata else None)

    @property
    def with_strata(self) -> list[str]:
        """Covariates plus the strata column as a covariate."""
        return [*self.covariates, *([self.strata] if self.strata else [])]


def model_frame(adsl: pl.DataFrame, adtte: pl.DataFrame, paramcd: str, columns: Sequence[str] | None = None
                ) -> pl.DataFrame:
    """One endpoint's ADTTE rows with their ADSL covariates and the 1/0 EVENT column; with ``columns``,
    only those (in that order; ``USUBJID`` among them), the other columns never joined (at a million
    patients each endpoint's whole frame takes some 350 MB)."""
    rows = adtte.filter(pl.col("PARAMCD") == paramcd)
    covariates = adsl.drop("STUDYID", "ARM", "COURSEID")
    if columns is not None:
        rows = rows.select([c for c in rows.columns if c in columns or c == "CNSR"])
        covariates = covariates.select([c for c in covariates.columns if c in columns])
    frame = rows.join(covariates, on="USUBJID", how="left").with_columns(cnsr_to_event(pl.col("CNSR")).alias("EVENT"))
    return frame if columns is None else frame.select(columns)


def reference_level(frame: pl.DataFrame, col: str) -> str:
    """Most frequent level (ties: alphabetical) as the reference of a categorical covariate."""
    counts = frame.group_by(col).len().sort(["len", col], descending=[True, False])
    return counts[col][0]


def categorical_references(frame: pl.DataFrame, columns: Sequence[str], *, arm_reference: str | None
                           ) -> dict[str, str]:
    """``{column: reference level}`` for a model on ``columns``: ARM's is ``arm_reference`` (when
    given), each other categorical column's its most frequent level in ``frame``; in that order."""
    refs = {} if arm_reference is None else {"ARM": arm_reference}
    for c in columns:
        if c != "ARM" and is_categorical(frame, c):
            refs[c] = reference_level(frame, c)
    return refs


def with_terms(summary: pl.DataFrame, terms: pl.DataFrame) -> pl.DataFrame:
    """A model summary with each term's ``variable`` and ``level`` (from the model's design:
    :meth:`ketaoutcomes.models.cox.CoxResult.term_table`), and ``arm``: the arm code an ``ARM``
    term compares with the reference, so nobody parses ``ARM[...]`` strings."""
    return summary.join(terms.select("term", "variable", "level"), on="term", how="left").with_columns(
        pl.when(pl.col("variable") == "ARM").then(pl.col("level")).otherwise(None).alias("arm"))


def arms_of(summary: pl.DataFrame) -> set[str]:
    """The arms compared with the reference in a summary from :func:`with_terms`."""
    return set(summary["arm"].drop_nulls().to_list()) if "arm" in summary.columns else set()


def with_arm_labels(result: StepResult, labels: Mapping[str, str]) -> StepResult:
    """Every table with an ``arm`` column gains ``arm_label``: the arm's label in the registries in
    force (an export's arms.csv included); null where ``arm`` is not an arm (``(all)``)."""
    tables = {name: frame.with_columns(pl.col("arm").replace_strict(dict(labels), default=None,
                                                                    return_dtype=pl.String).alias("arm_label"))
              if "arm" in frame.columns else frame for name, frame in result.tables.items()}
    return StepResult(tables, result.notes)


def stack(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Stack result frames with possibly different columns (an empty list gives an empty frame)."""
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
