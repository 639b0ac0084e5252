"""ketaoutcomes.memory. drop_cached_blocks: after the analysis has read its inputs, DuckDB's buffer pool
lets go of the blocks those reads cached, and the connection's memory limit is what it was (checked
against DuckDB's own accounting, duckdb_memory()). return_free_heap: glibc's malloc_trim where there is
one."""

from __future__ import annotations

import duckdb
import pytest

from ketaoutcomes.memory import drop_cached_blocks


def _cached_mb(con) -> float:
    return con.execute("SELECT sum(memory_usage_bytes) / 2 ^ 20 FROM duckdb_memory()").fetchone()[0]


@pytest.mark.parametrize("limit", [None, "3.5 GiB"])
def test_blocks_read_are_dropped_and_the_limit_is_kept(tmp_path, limit):
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t AS SELECT range AS i, range * 0.5 AS x, md5(range::VARCHAR) AS s FROM range(3000000)")
    con.execute("CHECKPOINT")
    con.close()
    con = duckdb.connect(str(db))
    if limit:
        con.execute(f"SET memory_limit = '{limit}'")
    before = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert con.execute("SELECT sum(x), count(DISTINCT s) FROM t").fetchone()[1] == 3_000_000
    cached = _cached_mb(con)
    assert cached > 50  # the read left its blocks in the pool
    drop_cached_blocks(con)
    assert _cached_mb(con) <= 16 < cached / 3  # what fits the limit it was lowered to for a moment
    # back as DuckDB states it: the default (18.8 GiB here) may come back 0.1 GiB lower (DuckDB's rounding)
    after = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert after.split()[1] == before.split()[1] == "GiB" and abs(float(after.split()[0]) / float(before.split()[0]) - 1) < 0.01
    assert con.execute("SELECT sum(x) FROM t").fetchone()[0] == 0.5 * 3_000_000 * (3_000_000 - 1) / 2  # read again
    # the limit the buffer pool enforces is back too (not only the one reported): a build of some 200 MB
    assert con.execute("SELECT count(*) FROM (SELECT s, list(i) FROM t GROUP BY s)").fetchone()[0] == 3_000_000
    con.execute("INSERT INTO t SELECT * FROM t")
    con.execute("CHECKPOINT")
    con.close()


def test_the_free_heap_is_handed_back_where_the_c_library_can():
    """Checked against the platform's C library: glibc has malloc_trim (True), others have none (False);
    either way nothing breaks and the process goes on allocating."""
    import platform

    from ketaoutcomes.memory import return_free_heap

    blocks = [bytearray(1 << 16) for _ in range(2000)]  # some 130 MB in the C heap, then freed
    del blocks
    assert return_free_heap() is (platform.libc_ver()[0] == "glibc")
    assert len(bytearray(1 << 20)) == 1 << 20


_MALLINFO = """
import ctypes, sys
import numpy as np
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    from ketaoutcomes.memory import keep_freed_heap
    assert keep_freed_heap()
a = np.ones(8 << 20)  # 64 MiB
mapped = libc.mallinfo2().hblkhd
del a
print(mapped, libc.mallinfo2().fordblks)
"""


def _glibc_version() -> tuple[int, ...]:
    import platform

    name, version = platform.libc_ver()
    return tuple(int(x) for x in version.split(".")) if name == "glibc" and version else ()


@pytest.mark.skipif(_glibc_version() < (2, 33), reason="glibc's allocator settings (mallinfo2: glibc 2.33)")
def test_keep_freed_heap_serves_a_large_array_from_the_heap_and_keeps_it_once_freed():
    """Checked against glibc's own accounting (mallinfo2) in a fresh process each: by default a 64 MiB
    array is a mapping of its own, handed back to the system when freed (and faulted in afresh by the next
    one); with keep_freed_heap, or started with ALLOCATOR_ENVIRONMENT (a Dask worker), it comes from the
    heap and its space stays there, free, for the next."""
    import os
    import subprocess
    import sys

    from ketaoutcomes.memory import ALLOCATOR_ENVIRONMENT

    plain = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}

    def run(mode: str, env: dict) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", _MALLINFO, mode], capture_output=True, text=True, check=True,
                             env=env)
        return tuple(int(x) for x in out.stdout.split())

    mib = 1 << 20
    mapped, free = run("default", plain)
    assert mapped >= 64 * mib and free < 64 * mib
    for mode, env in (("keep", plain), ("default", {**plain, **ALLOCATOR_ENVIRONMENT})):
        mapped, free = run(mode, env)
        assert mapped < 64 * mib and free >= 64 * mib, mode
