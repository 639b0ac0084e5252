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
