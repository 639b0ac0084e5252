"""Secondary outcome: time to resolution of suicidal ideation (ADTTE PARAMCD ``TTSIRES``).

Pure function: ADSL and the ``mood_scores`` table in, ADTTE rows and an
attrition table out. Follows the ADTTE conventions of
:mod:`ketaoutcomes.derive.events` (time origin = first dose TRTSDTM, AVAL in
calendar days, censoring at the last assessment, CNSR codes of
:data:`ketaoutcomes.derive.cnsr.CNSR`) and reuses
:func:`ketaoutcomes.derive.events.first_event`.

Definitions:

* **Population**: analysed courses (``ANLFL == 'Y'``) whose *baseline SI item*
  is above ``resolved_at_most`` (the study's ``si_resolution_max``, default 0, i.e. any
  suicidal ideation).
* **Baseline SI item**: the ``si_item_score`` of the baseline rating, i.e. the
  last rating of ``instrument`` in [first dose - ``study.cohort.baseline_window_days``,
  first dose] — for ``instrument == study.cohort.instrument`` that is the same rating
  as BASE/BASEDTM. If that rating has no SI item score the course is left out
  (counted): an earlier rating is *not* used instead, so baseline SI and BASE
  always come from the same visit.
* **Resolution (event, CNSR 0)**: the first rating after the first dose (and
  before FUENDTM) whose SI item is ``<= resolved_at_most``. Default 0: item
  score 0 ("no suicidal thoughts"). Some studies use MADRS item 10 <= 1
  instead; pass ``resolved_at_most=1``. Ratings with a missing SI item are
  skipped (they neither resolve nor extend follow-up).
* **Censoring**: at the last post-baseline rating with a non-missing SI item —
  CNSR 1 (no event seen), CNSR 2 when follow-up ended at an intercurrent event
  (ICEREAS: switch, new antidepressant or new course), CNSR 5 past
  ``study.cohort.time_at_risk_days`` (as for the primary endpoints), CNSR 3 (AVAL = 0)
  when there is no post-baseline rating with an SI item.
* **EVSCORE** holds the SI item score at the event (not the total score).
"""

from __future__ import annotations

import polars as pl

from ketaoutcomes.derive.adsl import attrition_table, baseline_rating
from ketaoutcomes.derive.events import ADTTE_COLUMNS, EndpointInput, EndpointRows, derivation, first_event
from ketaoutcomes.settings import StudySettings

__all__ = ["PARAMCD", "derive_si_resolution", "derive_ttsires"]

PARAMCD = "TTSIRES"


def derive_si_resolution(
    adsl: pl.DataFrame,
    scores: pl.DataFrame,
    *,
    instrument: str,
    study: StudySettings,
    resolved_at_most: float = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """TTSIRES rows (ADTTE columns) and the attrition of the SI population.

    Parameters
    ----------
    adsl : DataFrame
        From :func:`ketaoutcomes.derive.adsl.derive_adsl` (USUBJID, COURSEID,
        ARM, STUDYID, TRTSDTM, FUENDTM, ICEREAS, ANLFL).
    scores : DataFrame
        The ``mood_scores`` table (patient_id, assessed_at, instrument, si_item_score).
    instrument : str
        Instrument whose SI item is used (e.g. ``"MADRS"`` item 10, ``"PHQ9"`` item 9).
    study : StudySettings
        Baseline window and time at risk.
    resolved_at_most : float
        An SI item score ``<=`` this is resolution (default 0).

    Returns
    -------
    adtte : DataFrame
        Columns :data:`ketaoutcomes.derive.events.ADTTE_COLUMNS`, PARAMCD ``TTSIRES``.
    attrition : DataFrame
        step, rule, arm, n_remaining, n_excluded (as ADSL's attrition table):
        analysed courses, baseline SI item recorded, baseline SI item > ``resolved_at_most``.
    """
    adtte, attrition, _ = _si_resolution(adsl, scores, instrument=instrument, study=study,
                                         resolved_at_most=resolved_at_most)
    return adtte, attrition


def _si_resolution(adsl: pl.DataFrame, scores: pl.DataFrame, *, instrument: str, study: StudySettings,
                   resolved_at_most: float) -> tuple[pl.DataFrame, pl.DataFrame, list[tuple[str, pl.DataFrame]]]:
    """:func:`derive_si_resolution`, plus the population's steps as (rule, courses left)."""
    if resolved_at_most < 0:
        raise ValueError(f"resolved_at_most must be >= 0, got {resolved_at_most}")
    for col in ("USUBJID", "COURSEID", "ARM", "STUDYID", "TRTSDTM", "FUENDTM", "ICEREAS", "ANLFL"):
        if col not in adsl.columns:
            raise ValueError(f"adsl lacks column {col}")
    pop = adsl.filter(pl.col("ANLFL") == "Y").select(
        "STUDYID", "USUBJID", "COURSEID", "ARM", pl.col("TRTSDTM").alias("STARTDT"), "FUENDTM", "ICEREAS"
    )
    inst = scores.filter(pl.col("instrument") == instrument).select(
        pl.col("patient_id").alias("USUBJID"), "assessed_at", pl.col("si_item_score").cast(pl.Float64)
    )
    # Baseline rating: the last rating of the instrument in [first dose - window, first dose]
    # (the same rating as BASE in derive/adsl.py when instrument == study.cohort.instrument); its SI item,
    # missing or not, is the baseline SI item.
    base = baseline_rating(inst, pop, key="USUBJID", origin="STARTDT", window_days=study.cohort.baseline_window_days).select(
        "USUBJID", pl.col("si_item_score").alias("BASESI"))
    pop = pop.join(base, on="USUBJID", how="left")
    has_si = pl.col("BASESI").is_not_null()
    above = pl.col("BASESI") > resolved_at_most
    si_pop = pop.filter(has_si & above)

    steps = [
        (f"baseline {instrument} SI item recorded (baseline rating in [first dose - "
         f"{study.cohort.baseline_window_days} d, first dose])", pop.filter(has_si)),
        (f"baseline {instrument} SI item > {resolved_at_most:g} (suicidal ideation present)", si_pop),
    ]
    attrition = attrition_table([("analysed courses (ANLFL = Y)", pop, None), *((r, f, None) for r, f in steps)])

    # Post-baseline ratings with an SI item, inside follow-up; the SI item goes in
    # total_score because _first_event reads that column (EVSCORE = SI item at the event).
    ratings = (
        inst.filter(pl.col("si_item_score").is_not_null())
        .join(si_pop.select("USUBJID", "STARTDT", "FUENDTM"), on="USUBJID", how="inner")
        .filter(
            (pl.col("assessed_at") > pl.col("STARTDT"))
            & (pl.col("FUENDTM").is_null() | (pl.col("assessed_at") < pl.col("FUENDTM")))
        )
        .select("USUBJID", "assessed_at", pl.col("si_item_score").alias("total_score"))
    )
    out = first_event(
        si_pop, ratings, pl.col("total_score") <= resolved_at_most,
        paramcd=PARAMCD,
        param=f"Time to resolution of suicidal ideation ({instrument} SI item <= {resolved_at_most:g})",
        evntdesc=f"SI resolved: {instrument} SI item <= {resolved_at_most:g}",
        tar_days=study.cohort.time_at_risk_days,
    )
    adtte = out.select(ADTTE_COLUMNS).sort("USUBJID")
    return adtte, attrition, steps


@derivation(PARAMCD)
def derive_ttsires(inp: EndpointInput) -> EndpointRows:
    """TTSIRES on the study instrument's SI item, resolution at ``study.outcomes.si_resolution_max``."""
    scores = inp.scores
    if "si_item_score" not in scores.columns:  # optional in the contract: absent means not recorded
        scores = scores.with_columns(pl.lit(None, dtype=pl.Float64).alias("si_item_score"))
    rows, _, steps = _si_resolution(inp.adsl, scores, instrument=inp.study.cohort.instrument, study=inp.study,
                                    resolved_at_most=inp.study.outcomes.si_resolution_max)
    return EndpointRows(rows, population=tuple((f"suicidal-ideation endpoint (TTSIRES): {rule}", frame)
                                               for rule, frame in steps))
