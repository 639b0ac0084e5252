"""What several sections share: the primary endpoint, analysis notes, curves from frames.

Model tables carry each term's ``variable``, ``level`` and ``arm`` (the arm an ``ARM`` term compares
with the reference) as columns: sections read those, never the term string."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import polars as pl

from ketaoutcomes.notes import Note
from ketaoutcomes.report import figures

__all__ = ["PRIMARY_ENDPOINT", "arm_reason", "km_curve", "notes_for"]

#: The primary endpoint: the key results, and the figures of the weighted comparison (love plot,
#: preference scores, weighted Kaplan-Meier curves), are of this endpoint.
PRIMARY_ENDPOINT = "TTRESP"

# ---------------------------------------------------------------------------
# Analysis notes (records: ketaoutcomes.notes.Note)
# ---------------------------------------------------------------------------

def notes_for(notes: Sequence[Note], paramcd: str) -> list[Note]:
    """The notes about one endpoint."""
    return [n for n in notes if n.concerns(endpoint=paramcd)]


def arm_reason(notes: Sequence[Note], paramcd: str, arm: str) -> str | None:
    """The text of the endpoint's first note about the arm, or None. Notes of runs stored before
    notes were records name no arms: for those, a note whose text names the arm."""
    pat = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(arm)}(?![A-Za-z0-9_])")
    for n in notes_for(notes, paramcd):
        if arm in n.arms or (not n.step and pat.search(n.text)):
            return n.text
    return None


# ---------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------

def km_curve(k: pl.DataFrame, label: str, style: tuple[str, str], value: str = "survival", cumulative: bool = True
             ) -> figures.KMCurve:
    """One curve from a frame of ``time``, ``value``, ``lower``, ``upper`` (and ``n_censor``).

    ``cumulative``: the frame holds survival, drawn as the cumulative proportion with the event.
    """
    k = k.sort("time")
    n = k.height
    t = k["time"].cast(pl.Float64).to_numpy()

    def arr(c: str) -> np.ndarray:
        return k[c].cast(pl.Float64).fill_null(float("nan")).to_numpy() if c in k.columns else np.full(n, np.nan)

    v, lo, hi = arr(value), arr("lower"), arr("upper")
    cens = t[arr("n_censor") > 0] if "n_censor" in k.columns else np.array([])
    if cumulative:  # survival -> cumulative proportion with the event
        v, lo, hi = 1 - v, 1 - hi, 1 - lo
    return figures.KMCurve(label=label, color=style[0], linestyle=style[1], time=t, cum=v, lower=lo, upper=hi,
                           censor_times=cens)
