"""Giving memory back while a long step runs (the analysis at a million patients, docs/scaling.md).

Two kinds of memory outlive what used them: the blocks DuckDB's buffer pool keeps of what a
connection has read or written, for as long as the connection is open, and the free space the C
library's allocator keeps in its heaps after the Arrow buffers and query results of DuckDB are freed.
Neither changes a result: a dropped block is read again if needed, the heaps are only shrunk.

The other way round, :func:`keep_freed_heap` has the C library keep what it frees for the next
allocation, up to a limit: the analysis builds and drops arrays of a million rows thousands of times,
and each one handed back to the system at once is faulted in again, page by page, for the next.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import duckdb

__all__ = ["ALLOCATOR_ENVIRONMENT", "KEPT_HEAP_BYTES", "drop_cached_blocks", "keep_freed_heap", "return_free_heap"]

#: What the C library keeps of the memory it frees (:func:`keep_freed_heap`): allocations up to this size
#: come from its heaps (not a fresh mapping of their own), and up to this much free space at the top of a
#: heap stays there for the next allocation.
KEPT_HEAP_BYTES = 256 * 1024 * 1024
#: The same for a process about to start (glibc reads these at its start): a local Dask cluster's workers.
ALLOCATOR_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(KEPT_HEAP_BYTES), "MALLOC_TRIM_THRESHOLD_": str(KEPT_HEAP_BYTES)}
#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


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
def _glibc(name: str):
    """glibc's function ``name`` (``malloc_trim``, ``mallopt``), or None where the C library has none
    (musl, macOS, Windows)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def keep_freed_heap() -> bool:
    """Have glibc serve allocations of up to :data:`KEPT_HEAP_BYTES` from its heaps and keep that much
    free space in them (``mallopt``; :data:`ALLOCATOR_ENVIRONMENT` for a process to start); False where
    the C library cannot. For the whole process, from now on.

    glibc's defaults map a large array (past 128 kB at first, past 32 MB at most) afresh and hand it back
    to the system when it is freed, and trim a heap's free top past 128 kB: the next array of that size
    faults its pages in again. At a million patients that was some 50-70 s of system time in `analyze`
    (docs/scaling.md). Freed memory stays in the process instead, for the next allocation; the peak is
    the arrays alive at once, as before (:func:`return_free_heap` still hands the free space back)."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, KEPT_HEAP_BYTES)) & bool(mallopt(_M_TRIM_THRESHOLD, KEPT_HEAP_BYTES))


def return_free_heap() -> bool:
    """Hand the free space of the C library's heaps back to the system (glibc's ``malloc_trim(0)``, as
    Dask's workers do to trim their memory); False where the C library cannot. The freed Arrow buffers of
    DuckDB's results are in those heaps (polars has an allocator of its own, which returns its memory by
    itself): at a million patients some 200 MB once the analysis datasets are stored."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
