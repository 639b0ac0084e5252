"""Array helpers of the simulator: named random streams, draws by inversion, per-owner
reductions and row ordering, all vectorised (no Python loop over patients or rows)."""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl

__all__ = ["DAY", "INF", "Streams", "clock_minute", "expand", "first_per_owner", "grouped_cumsum", "ids",
           "last_per_owner", "null_where", "pick", "pick_by_group", "row_key", "sort_rows"]

DAY = 1440  # minutes
INF = np.inf


class Streams:
    """One independent generator per (seed, chunk, name); each name is used once."""

    def __init__(self, seed: int, tag: int) -> None:
        self.seed, self.tag = seed, tag
        self._used: set[str] = set()

    def __call__(self, name: str) -> np.random.Generator:
        if name in self._used:
            raise RuntimeError(f"stream {name!r} drawn twice in one chunk")
        self._used.add(name)
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.tag, zlib.crc32(name.encode())]))

    def u(self, name: str, size: int) -> np.ndarray:
        return self(name).random(size)

    def z(self, name: str, size: int | tuple[int, ...]) -> np.ndarray:
        return self(name).standard_normal(size)


def pick(u: np.ndarray, probs) -> np.ndarray:
    """Index drawn by inversion: u ~ U(0,1) -> index with the given probabilities."""
    cum = np.cumsum(np.asarray(probs, dtype=float))
    cum /= cum[-1]
    return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)


def pick_by_group(u: np.ndarray, group: np.ndarray, tables: list[tuple[tuple, tuple]], dtype=float) -> np.ndarray:
    """Like :func:`pick` but the value table depends on the group (arm) of each element."""
    out = np.zeros(len(u), dtype=dtype)
    for g, (values, probs) in enumerate(tables):
        m = group == g
        if m.any() and values:
            out[m] = np.asarray(values, dtype=dtype)[pick(u[m], probs)]
    return out


def expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position) of rows when owner i has counts[i] rows, in owner order."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(owner)) - np.repeat(starts, counts)
    return owner, pos


def grouped_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if len(values) == 0:
        return values.copy()
    cs = np.cumsum(values)
    starts = np.cumsum(counts) - counts
    before = np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0)
    return cs - np.repeat(before, counts)


def first_per_owner(owner: np.ndarray, values: np.ndarray, mask: np.ndarray, n: int, fill=INF) -> np.ndarray:
    """values of the first masked row of each owner (rows sorted by owner), else fill."""
    out = np.full(n, fill, dtype=float)
    idx = np.flatnonzero(mask)
    if len(idx):
        owners, first = np.unique(owner[idx], return_index=True)
        out[owners] = values[idx[first]]
    return out


def last_per_owner(owner: np.ndarray, values: np.ndarray, n: int, fill=-INF) -> np.ndarray:
    out = np.full(n, fill, dtype=float)
    if len(owner):
        # rows sorted by owner: last row of each run
        last = np.flatnonzero(np.r_[owner[1:] != owner[:-1], True])
        out[owner[last]] = values[last]
    return out


def row_key(owner: np.ndarray, minute: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """One int64 sort key for (owner, minute[, extra in 0..1]): much faster than lexsort."""
    m = np.asarray(minute).astype(np.int64) + (1 << 30)  # minutes lie well inside +-2**30
    key = (np.asarray(owner, dtype=np.int64) << 32) | (m << 1)
    return key if extra is None else key | np.asarray(extra, dtype=np.int64)


def sort_rows(owner: np.ndarray, minute: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(row_key(owner, minute), kind="stable")
    return [owner[order], minute[order], *(o[order] for o in others)]


def ids(prefix: str | pl.Series, numbers: np.ndarray, width: int) -> pl.Series:
    """prefix + zero-padded numbers, vectorised."""
    df = pl.DataFrame({"x": numbers} if isinstance(prefix, str) else {"x": numbers, "p": prefix})
    head = pl.lit(prefix) if isinstance(prefix, str) else pl.col("p")
    return df.select(pl.concat_str([head, pl.col("x").cast(pl.String).str.zfill(width)]).alias("id")).to_series()


def null_where(values, mask: np.ndarray) -> pl.Series:
    s = pl.Series(values)
    idx = np.flatnonzero(mask)
    return s.scatter(idx, None) if len(idx) else s


def clock_minute(u: np.ndarray) -> np.ndarray:
    """A clinic time of day (08:00-16:55, 5-minute steps) in minutes."""
    return 480 + 5 * np.floor(u * 108).astype(np.int64)
