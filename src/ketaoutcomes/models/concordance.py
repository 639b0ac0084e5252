"""Harrell's concordance (C) of a Cox model's linear predictor, as R's ``coxph`` reports it.

Used by :func:`ketaoutcomes.models.cox.cox_ph`. The pair counts follow R's
``survival::concordance``: pairs are compared within strata over risk sets (so
delayed entry is respected), a tie in the predictor counts 1/2, pairs with tied
event times are left out, and a row censored at an event time counts as the
longer survivor. Nothing loops over rows in Python (O(n log^2 n)).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

__all__ = ["concordance_counts", "harrell_c", "linear_predictor"]


def _preceding_points_below(
    point_pos: np.ndarray, point_val: np.ndarray, query_pos: np.ndarray, query_thr: np.ndarray
) -> np.ndarray:
    """For each query, count points with a smaller position and a value below its threshold.

    Offline 2-D dominance counting, vectorised over the levels of a binary tree of
    positions (O(n log^2 n), no per-row Python loop): at level ``l`` each query in
    a right child counts the points of the left sibling, and every earlier point
    is in exactly one such left sibling. Values and thresholds are integers in
    ``[0, M]``.
    """
    counts = np.zeros(len(query_pos), dtype=np.int64)
    if len(point_pos) == 0 or len(query_pos) == 0:
        return counts
    span = int(max(point_val.max(), query_thr.max())) + 2
    top = int(max(point_pos.max(), query_pos.max())) + 1
    level = 0
    while (1 << level) < top:
        pb = point_pos >> level
        qb = query_pos >> level
        left = (pb & 1) == 0
        right = (qb & 1) == 1
        if right.any() and left.any():
            keys = np.sort((pb[left] >> 1) * span + point_val[left])
            parent = (qb[right] >> 1) * span
            counts[right] += np.searchsorted(keys, parent + query_thr[right], "left") - np.searchsorted(
                keys, parent, "left"
            )
        level += 1
    return counts


def concordance_counts(
    stop: np.ndarray,
    status: np.ndarray,
    score: np.ndarray,
    *,
    entry: np.ndarray | None = None,
    strata: np.ndarray | None = None,
) -> dict[str, float]:
    """Pair counts behind Harrell's C, with R ``survival::concordance`` conventions.

    A pair is comparable when one row has an event at ``t`` and the other is at
    risk then (``entry < t <= stop``, same stratum) and has not had an event at
    that same ``t``. A row censored at exactly ``t`` counts as surviving longer,
    as in R. ``score`` is the risk score (higher = shorter survival expected):
    a pair is concordant when the row with the event has the higher score;
    equal scores are ``tied_x`` and count 1/2 in the C statistic. Pairs with
    events at the same time are ``tied_y`` (``tied_xy`` if the scores tie too)
    and are left out, as R does.

    ``score`` may be an integer rank array; only its order matters.
    """
    n = len(stop)
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata, dtype=np.int64)
    _, rank = np.unique(score, return_inverse=True)
    width = n + 1
    base = strata * width
    val = base + rank  # stratum in the high digits: thresholds pick one stratum
    ev = np.flatnonzero(status == 1)
    if len(ev) == 0:
        return {"concordant": 0.0, "discordant": 0.0, "tied_x": 0.0, "tied_y": 0.0, "tied_xy": 0.0}

    # Queries: for event i, thresholds base_i, val_i, val_i + 1, base_i + width.
    q_thr = np.concatenate([base[ev], val[ev], val[ev] + 1, base[ev] + width])
    nq = len(ev)

    def count(point_key: np.ndarray, point_order: np.ndarray, query_key: np.ndarray, query_order: int) -> np.ndarray:
        # one sequence, sorted by key descending, then by order within a key;
        # a point is counted for the queries that come after it
        keys = np.concatenate([point_key, query_key])
        order = np.concatenate([point_order, np.full(len(query_key), query_order)])
        seq = np.lexsort((order, -keys))
        pos = np.empty(len(seq), dtype=np.int64)
        pos[seq] = np.arange(len(seq))
        ppos, qpos = pos[: len(point_key)], pos[len(point_key) :]
        c = _preceding_points_below(ppos, val, np.tile(qpos, 4), q_thr)
        return c.reshape(4, nq)

    # Rows still at risk at t: stop > t, or stop == t and censored (order 0 before
    # the query's 1); events at t (order 2) come after the query and are excluded.
    c_stop = count(stop, np.where(status == 1, 2, 0), stop[ev], 1)
    if entry is not None:
        # ... minus rows not yet entered: entry >= t (R: at risk only when entry < t).
        c_entry = count(entry, np.zeros(n, dtype=np.int64), stop[ev], 1)
        c = c_stop - c_entry
    else:
        c = c_stop
    below = c[1] - c[0]
    equal = c[2] - c[1]
    total = c[3] - c[0]
    concordant = float(below.sum())
    tied_x = float(equal.sum())
    discordant = float((total - below - equal).sum())

    # Event pairs tied in time (same stratum): not comparable.
    ev_keys = pl.DataFrame({"s": strata[ev], "t": stop[ev], "r": rank[ev]})
    by_t = ev_keys.group_by("s", "t").len()["len"].to_numpy().astype(float)
    by_tr = ev_keys.group_by("s", "t", "r").len()["len"].to_numpy().astype(float)
    tied_all = float((by_t * (by_t - 1) / 2).sum())
    tied_xy = float((by_tr * (by_tr - 1) / 2).sum())
    return {
        "concordant": concordant,
        "discordant": discordant,
        "tied_x": tied_x,
        "tied_y": tied_all - tied_xy,
        "tied_xy": tied_xy,
    }


def linear_predictor(X: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``X @ beta`` with identical rows of ``X`` giving bit-identical results.

    A BLAS product may round two identical rows differently (SIMD blocks versus
    remainder rows), which would turn ties in the predictor into 1-ulp
    differences and change the concordance. R computes each row the same way,
    so its ties are exact; computing once per distinct row does the same here.
    """
    if X.shape[0] == 0:
        return np.zeros(0)
    uniq, inverse = np.unique(X, axis=0, return_inverse=True)
    return (uniq @ beta)[inverse.reshape(-1)]


def harrell_c(counts: Mapping[str, float]) -> float | None:
    """Harrell's C from :func:`concordance_counts`; None when no pair is comparable."""
    denom = counts["concordant"] + counts["discordant"] + counts["tied_x"]
    if denom == 0:
        return None
    # R's concordance: ties in the predictor count 1/2.
    return (counts["concordant"] + 0.5 * counts["tied_x"]) / denom
