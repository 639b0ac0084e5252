"""pipeline._drop_cached_blocks: after the analysis has read its inputs, DuckDB's buffer pool lets go of
the blocks those reads cached, and the connection's memory limit is what it was (checked against
DuckDB's own accounting, duckdb_memory())."""

from __future__ import annotations

import duckdb
import pytest

from ketaoutcomes.pipeline import _drop_cached_blocks


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
    _drop_cached_blocks(con)
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
