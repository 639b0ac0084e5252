"""Greedy nearest-neighbour propensity-score matching, as R's MatchIt does it.

A pure function on arrays: :func:`match_nearest` takes the propensity scores and
the arm indicator and returns a matched-set id per row. It reproduces
``MatchIt::matchit(method = "nearest", distance = <logit PS>, replace = FALSE,
m.order = "largest", caliper = c, std.caliper = TRUE, ratio = k)``; the pairs
are checked against MatchIt 4.5.1 in ``tests/reference/test_matching_vs_R.py``
(see the note on MatchIt 4.5.1 below).

Algorithm
---------
* **Distance.** The logit of the propensity score, ``log(ps) - log(1 - ps)``;
  the distance between two units is the absolute difference of their logits.
* **Caliper.** ``caliper`` is in standard deviations of the logit PS, the SD taken
  over *all* units of both arms with ``ddof=1`` (MatchIt's ``std.caliper = TRUE``:
  ``caliper * sd(distance)``). A control is eligible when its distance is at most
  the caliper width (``<=``, as MatchIt). ``caliper=None``: no caliper.
* **Order.** Treated units are matched one after another in order of
  *descending* propensity score (MatchIt's ``m.order = "largest"``, the default for
  the ATT); treated units with equal scores go in row order (R's ``order(...,
  decreasing = TRUE)`` is stable).
* **Greedy, without replacement.** Each treated unit takes the nearest control
  not yet used by anybody. A treated unit with no unused control within the
  caliper stays unmatched (``-1``); it is not revisited.
* **Ties.** Among controls equally near a treated unit (equal logits, or equal
  distances on both sides), the one that comes first in row order is taken:
  MatchIt's ``which_min`` over the eligible controls in data order.
* **1:k** (``ratio=k``). In rounds, as MatchIt does it: round 1 gives every treated
  unit (in the order above) its nearest control, round 2 gives every treated unit
  that got one a second control, and so on. A treated unit that finds no
  eligible control in a round gets none in later rounds either (the pool only
  shrinks), so it keeps the controls it already has: a set can hold fewer than
  ``k`` controls (MatchIt keeps such sets too).
* **Matched-set ids.** ``0, 1, 2, ...`` numbered by the row order of each set's
  treated unit; the treated unit and its controls share the id. Unmatched rows of
  either arm are ``-1``. (MatchIt's ``subclass`` numbers the same sets in another
  order; the sets themselves are the same.)

Cost: one sort of the controls, then per match a constant number of
union-find look-ups (``next unused control to the left / right``, with path
compression) over the distinct control logits: ``O((n_t k + n_c) log n_c)``.

MatchIt 4.5.1 note
------------------
MatchIt 4.5.1 to 4.5.3 route exactly this call (a distance *vector*, no
``mahvars``) through a new C++ routine (``nn_matchC_vec``) that takes ``abs()`` of a
double through C's integer ``abs``: differences are truncated to whole numbers, so
on the logit scale the caliper is ignored for differences below 1 and the left
(lower-score) neighbour wins whenever both neighbours are within 1 logit (MatchIt
issue #163, "Caliper not working as intended on versions 4.5.1 - 4.5.3"). This
module implements the documented algorithm, which MatchIt 4.5.1 still runs when
``mahvars`` is given (the older routine ``nn_matchC``): matching on the
Mahalanobis distance of the logit PS alone, which orders controls exactly as the
logit difference does. The reference test checks the pairs against that route and
shows that the default route's pairs are those of the truncating ``abs``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["MATCHED_SHARE_FOR_ATT", "caliper_width", "logit_ps", "match_nearest"]

#: A matched estimate describes the patients given the route (ATT) only when (nearly) all of them
#: were matched; below this share it describes the matched subset.
MATCHED_SHARE_FOR_ATT = 0.9


def logit_ps(ps: np.ndarray) -> np.ndarray:
    """Logit of the propensity score, ``log(ps) - log1p(-ps)`` (the matching distance)."""
    ps = np.asarray(ps, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(ps) - np.log1p(-ps)


def caliper_width(ps: np.ndarray, caliper: float | None) -> float | None:
    """Caliper on the logit scale: ``caliper * SD(logit ps)`` over all units (ddof=1).

    None for no caliper; 0.0 when the SD is not defined (fewer than two units).
    """
    if caliper is None:
        return None
    lps = logit_ps(ps)
    sd = float(np.std(lps, ddof=1)) if len(lps) > 1 else 0.0
    return float(caliper) * sd


def _check(ps: np.ndarray, treated: np.ndarray, caliper: float | None, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    ps = np.asarray(ps, dtype=float)
    treated = np.asarray(treated)
    if ps.ndim != 1 or treated.ndim != 1 or len(ps) != len(treated):
        raise ValueError(f"ps and treated must be 1-D arrays of equal length, not {ps.shape} and {treated.shape}")
    if treated.dtype == bool:
        treated = treated.astype(np.int64)
    if len(treated) and not np.isin(treated, (0, 1)).all():
        raise ValueError("treated must hold 0 (comparator) and 1 (target) only")
    if not np.all((ps > 0.0) & (ps < 1.0)):  # also catches NaN
        raise ValueError("propensity scores must lie strictly between 0 and 1 (their logit is the distance)")
    if caliper is not None and not (isinstance(caliper, numbers.Real) and math.isfinite(caliper) and caliper > 0):
        raise ValueError(f"caliper must be a positive number of SDs or None, not {caliper!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Integral) or ratio < 1:
        raise ValueError(f"ratio must be a positive integer, not {ratio!r}")
    return ps, treated.astype(np.int64)


def _find(parent: list[int], x: int) -> int:
    """Root of ``x`` with path compression (``parent[r] == r`` marks a root)."""
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


def match_nearest(
    ps: np.ndarray,
    treated: np.ndarray,
    *,
    caliper: float | None = 0.2,
    ratio: int = 1,
) -> np.ndarray:
    """Greedy nearest-neighbour matching without replacement on the logit of the PS.

    Treated units, in order of descending propensity score (ties: row order), each
    take the nearest still-unused control(s) within ``caliper`` SDs of the logit PS
    (SD over all units of both arms, ddof=1); among equally near controls, the first
    in row order. ``ratio=k`` gives 1:k matching in ``k`` rounds (each round gives
    every still-matching treated unit one more control). MatchIt's
    ``method = "nearest", m.order = "largest", replace = FALSE, std.caliper = TRUE``;
    the module docstring states every rule.

    Parameters
    ----------
    ps : array of float
        Propensity scores, strictly between 0 and 1.
    treated : array of int or bool
        1 (or True) for the treated (target) arm, 0 for controls (comparator).
    caliper : float or None
        Caliper width in SDs of the logit PS; None for no caliper.
    ratio : int
        Controls per treated unit (1:k matching).

    Returns
    -------
    numpy.ndarray of int64
        Matched-set id per row (``0, 1, ...`` by the row order of the set's treated
        unit); ``-1`` for unmatched rows.

    Raises
    ------
    ValueError
        Arrays of different length, ``treated`` not 0/1, a score outside (0, 1) or
        NaN, a caliper that is not positive, a ratio that is not a positive integer.
    """
    ps, treated = _check(ps, treated, caliper, ratio)
    n = len(ps)
    out = np.full(n, -1, dtype=np.int64)
    t_idx = np.flatnonzero(treated == 1)
    c_idx = np.flatnonzero(treated == 0)
    if len(t_idx) == 0 or len(c_idx) == 0:
        return out

    lps = logit_ps(ps)
    width = caliper_width(ps, caliper)
    limit = math.inf if width is None else width

    # Controls sorted by (logit, row), grouped by distinct logit: a group's members
    # are used in row order (the first-in-row-order tie rule), so a pointer per
    # group says which member is next.
    c_order = np.lexsort((c_idx, lps[c_idx]))
    c_sorted = c_idx[c_order]
    v_sorted = lps[c_sorted]
    starts = np.flatnonzero(np.r_[True, v_sorted[1:] != v_sorted[:-1]])
    ends = np.r_[starts[1:], len(v_sorted)]
    values = v_sorted[starts]
    n_groups = len(values)

    # Treated in descending PS order; stable, so equal scores keep row order.
    t_order = t_idx[np.argsort(-lps[t_idx], kind="stable")]
    # Groups [0, pos) lie below the treated unit's logit, [pos, G) at or above it.
    t_pos = np.searchsorted(values, lps[t_order], side="left")

    vals = values.tolist()
    members = c_sorted.tolist()
    nxt = starts.tolist()
    end = ends.tolist()
    # Union-find "next group with an unused control": right[g] -> first such group
    # >= g (n_groups: none); left[g + 1] -> 1 + last such group <= g (0: none).
    right = list(range(n_groups + 1))
    left = list(range(n_groups + 1))
    remaining = len(members)

    sets: dict[int, list[int]] = {}
    active = list(zip(t_order.tolist(), lps[t_order].tolist(), t_pos.tolist()))
    for _round in range(ratio):
        kept = []
        for ti, v, p in active:
            if remaining == 0:
                break
            g_right = _find(right, p)
            g_left = _find(left, p) - 1
            d_left = v - vals[g_left] if g_left >= 0 else math.inf
            d_right = vals[g_right] - v if g_right < n_groups else math.inf
            ok_left = d_left <= limit
            ok_right = d_right <= limit
            if ok_left and ok_right:
                if d_left < d_right:
                    g = g_left
                elif d_right < d_left:
                    g = g_right
                else:  # equally near on both sides: the first control in row order
                    g = g_left if members[nxt[g_left]] < members[nxt[g_right]] else g_right
            elif ok_left:
                g = g_left
            elif ok_right:
                g = g_right
            else:
                continue  # nothing unused within the caliper: never later either
            sets.setdefault(ti, []).append(members[nxt[g]])
            nxt[g] += 1
            remaining -= 1
            if nxt[g] == end[g]:  # group used up: skip it from now on
                right[g] = g + 1
                left[g + 1] = g
            kept.append((ti, v, p))
        active = kept
        if not active or remaining == 0:
            break

    for set_id, ti in enumerate(sorted(sets)):
        out[ti] = set_id
        out[sets[ti]] = set_id
    return out
