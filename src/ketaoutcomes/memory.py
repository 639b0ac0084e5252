"""Giving memory back while a long step runs (the analysis at a million patients, docs/scaling.md).

Two kinds of memory outlive what used them: the blocks DuckDB's buffer pool keeps of what a
connection has read or written, for as long as the connection is open, and the free space the C
library's allocator keeps in its heaps after the Arrow buffers and query results of DuckDB are freed.
Neither changes a result: a dropped block is read again if needed, the heaps are only shrunk.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import duckdb

__all__ = ["drop_cached_blocks", "return_free_heap"]


def drop_cached_blocks(con: duckdb.DuckDBPyConnection) -> None:
    """Let DuckDB drop the blocks its reads (and written blocks once checkpointed) left in its buffer
    pool (at a million patients some 400 MB once the analysis has read its inputs), which it would keep
    for as long as the connection is open: the whole analysis. A memory limit lowered for a moment
    evicts them (unchanged blocks are dropped, to be read again if needed); DuckDB refuses the lower
    limit, and nothing changes, if it cannot. The limit is then set back as DuckDB states it, to a tenth
    of a GiB (a default of 18.8 GiB comes back as 18.7: a limit a few tens of MB lower for the rest of
    this connection).
    Not ``RESET memory_limit``: in DuckDB 1.5 it resets the setting it reports, not the buffer pool's."""
    before = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    try:
        con.execute("SET memory_limit = '16MiB'")
    except duckdb.Error:
        pass
    finally:
        con.execute(f"SET memory_limit = '{before}'")


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_free_heap() -> bool:
    """Hand the free space of the C library's heaps back to the system (glibc's ``malloc_trim(0)``, as
    Dask's workers do to trim their memory); False where the C library cannot. The freed Arrow buffers of
    DuckDB's results are in those heaps (polars has an allocator of its own, which returns its memory by
    itself): at a million patients some 200 MB once the analysis datasets are stored."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
