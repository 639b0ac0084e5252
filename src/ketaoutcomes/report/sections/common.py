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

__all__ = ["PRIMARY_ENDPOINT", "arm_reason", "km_curve", "notes_for", "numbers_at_risk"]

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

def numbers_at_risk(k: pl.DataFrame, ticks: Sequence[float]) -> list[int] | None:
    """The risk set of one arm's Kaplan-Meier (or Aalen-Johansen) table at each tick, or None without ``n_risk``.

    The table has a row at every distinct observed time with ``n_risk``, the courses under
    observation just before it; nobody leaves the risk set between two rows, so the risk set at a
    tick is ``n_risk`` of the first row at or after it, and 0 past the last row.
    """
    if "n_risk" not in k.columns or "time" not in k.columns:
        return None
    k = k.sort("time")
    t = k["time"].cast(pl.Float64).to_numpy()
    n = k["n_risk"].to_numpy()
    idx = np.searchsorted(t, np.asarray(ticks, dtype=float), side="left")
    return [int(n[i]) if i < len(t) else 0 for i in idx]


def km_curve(k: pl.DataFrame, label: str, style: figures.ArmStyle, value: str = "survival", cumulative: bool = True,
             at_risk: Sequence[str] = (), risk_label: str = "") -> figures.KMCurve:
    """One curve from a frame of ``time``, ``value``, ``lower``, ``upper`` (and ``n_censor``).

    ``cumulative``: the frame holds survival, drawn as the cumulative proportion with the event.
    ``at_risk``: the arm's row of the number-at-risk table (see :class:`~ketaoutcomes.report.figures.KMCurve`).
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
    return figures.KMCurve(label=label, style=style, time=t, cum=v, lower=lo, upper=hi, censor_times=cens,
                           at_risk=tuple(at_risk), risk_label=risk_label)
