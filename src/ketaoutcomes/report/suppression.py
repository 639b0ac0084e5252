"""Small-cell suppression that a reader cannot undo by subtraction (complementary suppression).

A table of counts is a set of cells tied by additive relations: a total is the sum of its parts
(the arms of a row add up to "All"), a population is the one before a rule less those the rule
excluded. Hiding a small count alone protects nothing when a reader can subtract: the count is the
total less the other cells. :func:`protect` hides the small counts (*primary* suppression), then
as many other counts as it takes (*complementary* suppression) until no small count is pinned down
by the relations and what is still shown:

* by linear algebra: a hidden count is determined when the shown counts and the relations leave
  it a single value (its coordinate is 0 in every solution of the homogeneous system);
* and by bounds: a reader knows that a count shown as ``<11`` is 1 to 10, that a complementary
  cell (shown as a mark) is above 10, and that no count is negative; a hidden small count whose
  range, under the relations, holds a single whole number is determined too (linear programming).

Counts that are never shown but follow from shown ones (e.g. those a rule excluded, when only the
populations are shown) are *implicit* cells: they are protected like shown ones when small.
Complements are chosen greedily, one exposed small count at a time, among the shown cells tied to it
(by a relation, directly or through hidden cells): the smallest that frees it alone, else the
cheapest pair of such a cell and a cell tied to that one (hiding a cell of a row moves the question
to its column), else the smallest, and the search goes on. Cells marked *pinned* (their value is
published elsewhere) come last. The result is not the minimal suppression pattern (that problem is
NP-hard), only one in which no small count can be worked out; a small count that no shown cell can
protect is reported (:attr:`Protection.exposed`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

__all__ = ["Protection", "protect", "value_range"]

Key = Hashable


@dataclass(frozen=True)
class Protection:
    """The outcome of :func:`protect`."""

    #: shown cells hidden because they are small (1 to ``small_max``)
    primary: frozenset
    #: shown cells hidden so that no small count can be worked out from the others
    complementary: frozenset
    #: small counts still determined (none unless every cell that could protect them is zero)
    exposed: frozenset

    def hidden(self, key: Key) -> bool:
        return key in self.primary or key in self.complementary


def _matrix(relations: Sequence[Mapping[Key, int]], keys: Sequence[Key]) -> np.ndarray:
    col = {k: j for j, k in enumerate(keys)}
    a = np.zeros((len(relations), len(keys)))
    for i, rel in enumerate(relations):
        for k, c in rel.items():
            if k in col:
                a[i, col[k]] = c
    return a


def _determined_in(relations: Sequence[Mapping[Key, int]], cells: Sequence[Key]) -> set[Key]:
    """Of ``cells`` (hidden, tied to one another by ``relations``), those the relations fix given every other
    cell: in the reduced row echelon form of their columns, a pivot column whose row is 0 in every free
    column (its unit vector lies in the row space). Plain elimination on a small matrix, no LAPACK: the
    answer does not depend on a thread pool."""
    a = _matrix(relations, cells)
    a = a[np.abs(a).sum(axis=1) > 0]
    m, n = a.shape
    pivots: list[int] = []
    r = 0
    for c in range(n):
        if r == m:
            break
        p = r + int(np.argmax(np.abs(a[r:, c])))
        if abs(a[p, c]) < 1e-9:
            continue
        if p != r:
            a[[r, p]] = a[[p, r]]
        a[r] = a[r] / a[r, c]
        rows = np.abs(a[:, c]) > 1e-12
        rows[r] = False
        a[rows] -= a[rows, c][:, None] * a[r][None, :]
        pivots.append(c)
        r += 1
    free = np.ones(n, dtype=bool)
    free[pivots] = False
    return {cells[c] for i, c in enumerate(pivots) if not np.any(np.abs(a[i, free]) > 1e-9)}


def _algebraically_determined(relations: Sequence[Mapping[Key, int]], hidden: Sequence[Key],
                              cache: dict | None = None) -> set[Key]:
    """Hidden cells whose value the relations fix, given every other cell. Worked out per group of hidden
    cells tied to one another (a relation ties the hidden cells in it); ``cache`` keeps each group's answer."""
    hidden_set = set(hidden)
    parent = {k: k for k in hidden}

    def root(k: Key) -> Key:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    touching = []
    for rel in relations:
        inside = [k for k in rel if k in hidden_set]
        if inside:
            touching.append((rel, inside))
            for k in inside[1:]:
                parent[root(k)] = root(inside[0])
    groups: dict[Key, list[Key]] = {}
    for k in hidden:
        groups.setdefault(root(k), []).append(k)
    rels_of: dict[Key, list[Mapping[Key, int]]] = {}
    for rel, inside in touching:
        rels_of.setdefault(root(inside[0]), []).append(rel)
    out: set[Key] = set()
    for r, cells in groups.items():
        key = frozenset(cells)
        if cache is not None and key in cache:
            out |= cache[key]
            continue
        found = _determined_in(rels_of.get(r, []), cells) if r in rels_of else set()
        if cache is not None:
            cache[key] = found
        out |= found
    return out


def value_range(key: Key, values: Mapping[Key, int], relations: Sequence[Mapping[Key, int]],
                bounds: Mapping[Key, tuple[float, float]]) -> tuple[int, int] | None:
    """The whole numbers a reader can still give hidden cell ``key``: every cell not in ``bounds`` is known
    (its value in ``values``); a hidden cell lies within its bounds; the relations hold. None when the
    bounds and relations admit nothing (they contradict the values)."""
    hidden = list(bounds)
    col = {k: j for j, k in enumerate(hidden)}
    a_eq, b_eq = [], []
    for rel in relations:
        row = np.zeros(len(hidden))
        rhs = 0.0
        for k, c in rel.items():
            if k in col:
                row[col[k]] += c
            else:
                rhs -= c * values[k]
        if row.any():
            a_eq.append(row)
            b_eq.append(rhs)
    if not a_eq:
        lo, hi = bounds[key]
        return math.ceil(lo), (math.floor(hi) if math.isfinite(hi) else 10**12)
    out = []
    for sign in (1.0, -1.0):
        c = np.zeros(len(hidden))
        c[col[key]] = sign
        res = linprog(c, A_eq=np.array(a_eq), b_eq=np.array(b_eq),
                      bounds=[(lo, None if math.isinf(hi) else hi) for lo, hi in (bounds[k] for k in hidden)],
                      method="highs")
        if res.status == 2:  # infeasible
            return None
        if res.status == 3:  # unbounded above
            out.append(10**12)
            continue
        out.append(sign * res.fun)
    return math.ceil(out[0] - 1e-7), math.floor(out[1] + 1e-7)


def protect(values: Mapping[Key, int], relations: Sequence[Mapping[Key, int]], *, shown: Iterable[Key],
            small_max: int, pinned: Iterable[Key] = ()) -> Protection:
    """Which shown cells to hide so that no count from 1 to ``small_max`` can be worked out.

    ``values``: every cell, shown or implicit; ``relations``: ``{cell: coefficient}`` maps whose
    weighted sum is 0; ``shown``: the cells a table shows (the others are implicit); ``pinned``:
    shown cells hidden only when nothing else protects a small count.
    """
    shown_set = set(shown)
    shown = [k for k in values if k in shown_set]
    pinned = set(pinned)
    small = {k for k, v in values.items() if 1 <= v <= small_max}
    implicit = [k for k in values if k not in shown_set]
    primary = {k for k in shown if k in small}
    complementary: set[Key] = set()
    exposed_for_good: set[Key] = set()
    cache: dict = {}
    order = {k: i for i, k in enumerate(values)}

    def hidden_keys(extra: Iterable[Key] = ()) -> list[Key]:
        h = primary | complementary | set(extra)
        return [k for k in values if k in h or k in implicit]

    def bounds_of(hidden: Sequence[Key]) -> dict[Key, tuple[float, float]]:
        """What a reader knows of each hidden cell: "<11" is 1 to 10, a complementary mark above 10."""
        out = {}
        for k in hidden:
            if k in primary:
                out[k] = (1.0, float(small_max))
            elif k in shown_set and values[k] > small_max:
                out[k] = (float(small_max + 1), math.inf)
            else:
                out[k] = (0.0, math.inf)
        return out

    by_cell: dict[Key, list[Mapping[Key, int]]] = {}
    for rel in relations:
        for k in rel:
            by_cell.setdefault(k, []).append(rel)
    lp_cache: dict[tuple[Key, frozenset], bool] = {}

    def by_bounds(key: Key, hidden: Sequence[Key]) -> bool:
        """``key`` pinned to one whole number by the relations and what a reader knows of each hidden cell:
        worked out on the hidden cells tied to it only (the others cannot move it), and remembered."""
        hidden_set, group, frontier = set(hidden), {key}, [key]
        while frontier:
            for rel in by_cell.get(frontier.pop(), ()):
                for k in rel:
                    if k in hidden_set and k not in group:
                        group.add(k)
                        frontier.append(k)
        memo = (key, frozenset(group))
        if memo not in lp_cache:
            rels = list({id(r): r for k in group for r in by_cell.get(k, ())}.values())
            r = value_range(key, values, rels, bounds_of(sorted(group, key=order.get)))
            lp_cache[memo] = r is not None and r[0] >= r[1]
        return lp_cache[memo]

    def exposed(extra: Iterable[Key] = (), *, with_bounds: bool, only: Key | None = None) -> list[Key]:
        """Small hidden counts determined once ``extra`` is hidden too (by bounds: all of them, or ``only``)."""
        hidden = hidden_keys(extra)
        found = _algebraically_determined(relations, hidden, cache) & small
        if with_bounds:
            found |= {k for k in hidden if k in small and k not in found and (only is None or k == only)
                      and by_bounds(k, hidden)}
        return [k for k in values if k in found and k not in exposed_for_good]

    def reach(key: Key, extra: Iterable[Key] = ()) -> list[Key]:
        """The shown cells tied to ``key`` by a relation, directly or through hidden cells (hiding one of
        them is what can change whether ``key`` is determined)."""
        hidden = set(hidden_keys(extra))
        seen, frontier, found = {key}, [key], set()
        while frontier:
            for rel in by_cell.get(frontier.pop(), ()):
                for k in rel:
                    if k not in seen:
                        seen.add(k)
                        (frontier.append(k) if k in hidden else found.add(k))
        return [k for k in shown if k in found]

    for with_bounds in (False, True):  # the cheap algebraic check to a fixed point first, then bounds too
        while True:
            todo = exposed(with_bounds=with_bounds)
            if not todo:
                break
            target = todo[0]
            free_set = {k for k in shown if k not in primary and k not in complementary and values[k] > small_max}
            near = [k for k in reach(target) if k in free_set]

            def frees(cands: tuple[Key, ...]) -> bool:
                return target not in exposed(cands, with_bounds=with_bounds, only=target)

            def cost(cands: tuple[Key, ...]) -> tuple:
                return (sum(c in pinned for c in cands), sum(values[c] for c in cands), [order[c] for c in cands])

            # the cheapest neighbour that frees it (not pinned, smallest); else the cheapest pair of a neighbour
            # and a cell tied to that neighbour (hiding a cell of a row moves the question to its column); else,
            # to go on, the cheapest neighbour (a linear program per try by bounds: no pairs there)
            near.sort(key=lambda k: cost((k,)))
            choice = next(((c,) for c in near if frees((c,))), None)
            if choice is None and not with_bounds:
                pairs = sorted({tuple(sorted((c1, c2), key=order.get)) for c1 in near for c2 in reach(c1, [c1])
                                if c2 in free_set and c2 != c1}, key=cost)
                choice = next((pair for pair in pairs if frees(pair)), None)
            if choice is None and near:
                choice = (near[0],)
            if choice is None:  # no shown cell tied to it is left to hide (a cell not tied to it cannot help)
                exposed_for_good.add(target)
            else:
                complementary.update(choice)
    return Protection(frozenset(primary), frozenset(complementary), frozenset(exposed_for_good))
