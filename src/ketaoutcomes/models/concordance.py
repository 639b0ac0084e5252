"""Harrell's concordance (C) of a Cox model's linear predictor, as R's ``coxph`` reports it.

Used by :func:`ketaoutcomes.models.cox.cox_ph`. The pair counts follow R's
``survival::concordance``: pairs are compared within strata over risk sets (so
delayed entry is respected), a tie in the predictor counts 1/2, pairs with tied
event times are left out, and a row censored at an event time counts as the
longer survivor. Nothing loops over rows in Python (O(n log n)).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["concordance_counts", "harrell_c", "linear_predictor"]


def _prefix_counts(values: np.ndarray, length: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query ``q``: among ``values[:length[q]]``, how many are below ``thr[q]`` and how many equal it.

    Offline rank queries on a wavelet matrix, built and queried one bit level at a
    time (O((n + q) log n), vectorised, nothing stored between levels): at each
    level the values are stably partitioned by the bit (zeros first), and every
    query follows its threshold's bit, counting the zeros it skips when the bit
    is 1. What remains of a query's range at the end equals its threshold.
    ``values`` and ``thr`` are integers in ``[0, 2**bits)``.
    """
    top = int(max(values.max(initial=0), thr.max(initial=0)))
    cur = values.astype(np.int64)
    start = np.zeros(len(length), dtype=np.int64)
    end = length.astype(np.int64)
    below = np.zeros(len(length), dtype=np.int64)
    zeros = np.empty(len(cur) + 1, dtype=np.int64)
    zeros[0] = 0
    for level in range(top.bit_length() - 1, -1, -1):
        is_zero = ((cur >> level) & 1) == 0
        np.cumsum(is_zero, out=zeros[1:])
        n_zero = zeros[-1]
        zs, ze = zeros[start], zeros[end]
        one = ((thr >> level) & 1) == 1
        below += np.where(one, ze - zs, 0)
        start = np.where(one, n_zero + start - zs, zs)
        end = np.where(one, n_zero + end - ze, ze)
        cur = np.concatenate([cur[is_zero], cur[~is_zero]])
    return below, end - start


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
    stratified = strata is not None and len(np.unique(strata)) > 1
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata, dtype=np.int64)
    _, rank = np.unique(score, return_inverse=True)
    rank = rank.reshape(-1)
    ev = np.flatnonzero(status == 1)
    if len(ev) == 0:
        return {"concordant": 0.0, "discordant": 0.0, "tied_x": 0.0, "tied_y": 0.0, "tied_xy": 0.0}

    # One value per row: stratum in the high digits, then the rank of the score, as dense
    # integers; thresholds per event: its own value (below / equal), and with strata the
    # first value of its stratum and of the next one (the rows of its stratum).
    width = n + 1
    if stratified:
        levels, val = np.unique(strata * width + rank, return_inverse=True)
        val = val.reshape(-1)
    else:
        val = rank  # already dense
    thr = [val[ev]]
    if stratified:
        thr += [np.searchsorted(levels, strata[ev] * width), np.searchsorted(levels, (strata[ev] + 1) * width)]
    thresholds = np.concatenate(thr)

    def count(order: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # rows in ``order``; event i counts the first length[i] of them
        below, equal = _prefix_counts(val[order], np.tile(length, len(thr)), thresholds)
        return below.reshape(len(thr), -1), equal.reshape(len(thr), -1)

    # Rows still at risk at an event's time t: stop > t, or stop == t and censored. Sorted by stop
    # descending, censored before events at the same time, they are the rows before the first
    # event at t.
    by_stop = np.lexsort((status == 1, -stop))
    first = np.ones(n, dtype=bool)
    sorted_stop, sorted_event = stop[by_stop], status[by_stop] == 1
    first[1:] = (sorted_stop[1:] != sorted_stop[:-1]) | (sorted_event[1:] != sorted_event[:-1])
    block_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    length = np.empty(n, dtype=np.int64)
    length[by_stop] = block_start
    below, equal = count(by_stop, length[ev])
    if entry is not None:
        # ... minus rows not yet entered: entry >= t (R: at risk only when entry < t).
        by_entry = np.argsort(-entry, kind="stable")
        not_in = n - np.searchsorted(np.sort(entry), stop[ev], side="left")
        b_entry, e_entry = count(by_entry, not_in)
        below, equal = below - b_entry, equal - e_entry
    if stratified:
        below_own, equal_own = below[0] - below[1], equal[0]
        total = below[2] - below[1]
    else:
        below_own, equal_own = below[0], equal[0]
        total = length[ev] - (0 if entry is None else not_in)
    concordant = float(below_own.sum())
    tied_x = float(equal_own.sum())
    discordant = float((total - below_own - equal_own).sum())

    # Event pairs tied in time (same stratum): not comparable.
    es, et, er = strata[ev], stop[ev], rank[ev]
    o = np.lexsort((er, et, es))
    es, et, er = es[o], et[o], er[o]
    new_t = np.ones(len(ev), dtype=bool)
    new_t[1:] = (es[1:] != es[:-1]) | (et[1:] != et[:-1])
    new_tr = new_t.copy()
    new_tr[1:] |= er[1:] != er[:-1]
    by_t = np.diff(np.append(np.flatnonzero(new_t), len(ev))).astype(float)  # events per (stratum, time)
    by_tr = np.diff(np.append(np.flatnonzero(new_tr), len(ev))).astype(float)  # ... and score
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
    so its ties are exact. Here every row is summed column by column in the same
    order with elementwise (correctly rounded, never fused) operations, so a
    row's value depends on its own numbers only. O(n p).
    """
    lp = np.zeros(X.shape[0])
    for j in range(X.shape[1]):
        lp += X[:, j] * beta[j]
    return lp


def harrell_c(counts: Mapping[str, float]) -> float | None:
    """Harrell's C from :func:`concordance_counts`; None when no pair is comparable."""
    denom = counts["concordant"] + counts["discordant"] + counts["tied_x"]
    if denom == 0:
        return None
    # R's concordance: ties in the predictor count 1/2.
    return (counts["concordant"] + 0.5 * counts["tied_x"]) / denom
