"""Nothing valid is lost, nothing invalid loads (issue 9, part 4): line endings, blank rows and
line numbers, time-zone offsets, rows checked on their own before keys, duplicates at scale, and
re-deliveries of an earlier version. The adversarial corpus (tests/adversarial/rows_*) runs the
same classes end to end; these tests pin the pieces and the cases a corpus folder cannot hold."""

from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.contract import WHITESPACE
from ketaoutcomes.ingest import IngestError, ingest_export
from ketaoutcomes.ingest.rules import DUPLICATE_ROWS_SHOWN, duplicate_problems
from ketaoutcomes.ingest.text import (
    TZ_PATTERN,
    LineEndingError,
    OffsetScan,
    csv_source,
    drop_blank_rows,
    offset_note,
    offset_problem,
    parquet_as_text,
    timestamp_sql,
    with_line_numbers,
)
from ketaoutcomes.settings import SimulationSettings
from ketaoutcomes.simulate.cohort import simulate_frames
from ketaoutcomes.warehouse import write_session
from tests.conftest import TINY, query_db, tables_hash, write_export

WHEN = dt.datetime(2026, 1, 1, 12, 0)


def load(db: Path, folder: Path):
    with write_session(db) as con:
        return ingest_export(con, folder, loaded_at=WHEN)


def warehouse_hash(db: Path) -> str:
    """Every table but meta_steps (the command line logs each step run there, even one that changed nothing)."""
    return tables_hash(db, "table_name <> 'meta_steps'")


# ---------------------------------------------------------------------------
# Line endings
# ---------------------------------------------------------------------------

def _file(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "t.csv"
    p.write_bytes(data)
    return p


def test_lf_crlf_and_their_mix_are_read_from_the_file_itself(tmp_path):
    for data, kind in ((b"a,b\n1,2\n", "LF"), (b"a,b\r\n1,2\r\n", "CRLF"), (b"a,b\r\n1,2\n3,4\r\n", "LF and CRLF")):
        got = csv_source(_file(tmp_path, data))
        assert got.source == tmp_path / "t.csv" and got.line_endings == kind and got.header_line == 1


def test_lone_cr_line_ends_are_read_as_lf_and_quoted_cells_keep_theirs(tmp_path):
    got = csv_source(_file(tmp_path, b'a,b\r1,"x\ry"\r2,3\r'))
    assert got.line_endings == "CR" and got.source == b'a,b\n1,"x\ry"\n2,3\n'
    frame = pl.read_csv(got.source, infer_schema=False)
    assert frame.rows() == [("1", "x\ry"), ("2", "3")]


def test_a_lone_cr_inside_quotes_of_an_lf_file_is_content(tmp_path):
    got = csv_source(_file(tmp_path, b'a,b\n1,"x\ry"\n2,3\n'))
    assert got.source == tmp_path / "t.csv" and got.line_endings == "LF"


@pytest.mark.parametrize("data,lines", [
    (b"a,b\r\n1,2\r3,4\r", ("line 2 ends with a lone CR", "line 1 with CRLF")),
    (b"a,b\n1,2\n3,4\r5,6\n", ("line 3 ends with a lone CR", "line 1 with LF")),
    (b"a,b\r1,2\r3,4\n", ("line 1 ends with a lone CR", "line 3 with LF")),
])
def test_lone_cr_mixed_with_lf_or_crlf_is_refused_naming_the_lines(tmp_path, data, lines):
    with pytest.raises(LineEndingError) as info:
        csv_source(_file(tmp_path, data))
    for text in lines:
        assert text in str(info.value)
    assert "1,2" not in str(info.value) and "\n" not in str(info.value)


def test_a_cr_lf_pair_split_across_read_blocks_is_one_crlf(tmp_path, monkeypatch):
    import ketaoutcomes.ingest.text as text

    monkeypatch.setattr(text, "_CHUNK", 4)  # b"a,b\r" | b"\n1,2" | ...
    assert csv_source(_file(tmp_path, b"a,b\r\n1,2\r\n")).line_endings == "CRLF"


def test_the_issue_example_cr_only_export_of_500_patients_loads_every_row(tmp_path):
    """The issue's export: 500 patients and their dependants saved with lone-CR line ends. It
    loaded 0 rows, quarantined every dependant as an orphan and stored every cell as a column
    name; it loads exactly as the LF export does."""
    frames = simulate_frames(SimulationSettings(n_patients=500, seed=3))
    lf, cr = tmp_path / "lf", tmp_path / "cr"
    lf.mkdir()
    cr.mkdir()
    for table in frames:  # (the route cohort: every table but the optional clinical_events)
        buf = io.BytesIO()
        frames[table].write_csv(buf, datetime_format="%Y-%m-%d %H:%M:%S", date_format="%Y-%m-%d", null_value="")
        (lf / f"{table}.csv").write_bytes(buf.getvalue())
        (cr / f"{table}.csv").write_bytes(buf.getvalue().replace(b"\n", b"\r"))
    want = {f.table: (f.rows_read, f.rows_loaded, f.rows_quarantined) for f in load(tmp_path / "lf.duckdb", lf).files}
    got = load(tmp_path / "cr.duckdb", cr)
    assert {f.table: (f.rows_read, f.rows_loaded, f.rows_quarantined) for f in got.files} == want
    assert want["patients"][0] == 500 and sum(v[2] for v in want.values()) == 0
    assert all(not f.ignored_columns for f in got.files)


def test_a_mixed_file_is_a_whole_file_error_and_nothing_is_written(tmp_path, tiny_export):
    db = tmp_path / "w.duckdb"
    load(db, tiny_export)
    before = warehouse_hash(db)
    (tiny_export / "sessions.csv").write_bytes(TINY["sessions.csv"].replace("\n", "\r", 2).encode())
    with pytest.raises(IngestError, match=r"sessions\.csv: mixed line endings"):
        load(db, tiny_export)
    assert warehouse_hash(db) == before


# ---------------------------------------------------------------------------
# Blank rows and line numbers
# ---------------------------------------------------------------------------

def test_blank_rows_are_dropped_and_line_numbers_count_the_file_s_lines():
    frame = pl.DataFrame({
        "_row_number": [1, 2, 3, 4, 5, 6, 7],
        "a": ["1", None, "  ", "x\ny", None, "\t", "z"],
        "b": ["2", None, None, "3", "", " \t ", None],
        "note": [None, None, None, None, None, None, "only here"],
    })
    kept, blank = drop_blank_rows(with_line_numbers(frame, first_line=2))
    assert blank == 4
    # Row 4 spans lines 5-6 (a quoted line break), so row 7 is on line 9.
    assert kept.select("_row_number", "_line_number").rows() == [(1, 2), (4, 5), (7, 9)]
    assert with_line_numbers(frame, None)["_line_number"].is_null().all()


def test_blank_lines_are_skipped_counted_and_reported(tmp_path):
    files = dict(TINY)
    files["patients.csv"] = TINY["patients.csv"].replace("P2,", "\n  \n,,,,,,\nP2,") + "P4,A,X,40,1,MDD,\n\n\n"
    db = tmp_path / "w.duckdb"
    res = CliRunner().invoke(app, ["ingest", str(write_export(tmp_path / "x", files)), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "patients.csv: loaded (4 read = 3 loaded + 1 quarantined); 5 blank row(s) skipped" in res.output
    assert query_db(db, "SELECT row_number, line_number, rule FROM quarantine").rows() == [(7, 8, "not_allowed")]
    assert query_db(db, "SELECT rows_read, rows_blank FROM meta_batches WHERE table_name = 'patients'").rows() \
        == [(4, 5)]


def test_a_warehouse_written_before_gets_the_new_columns(tmp_path, tiny_export):
    """A warehouse whose meta_batches and quarantine predate rows_blank, redelivery_of and
    line_number is brought in line by the next write session; its batches keep loading."""
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE meta_batches (batch_id VARCHAR PRIMARY KEY, load_seq INTEGER NOT NULL, "
                "table_name VARCHAR NOT NULL, source_file VARCHAR NOT NULL, file_sha256 VARCHAR NOT NULL, "
                "file_format VARCHAR NOT NULL, rows_read BIGINT NOT NULL, rows_loaded BIGINT NOT NULL, "
                "rows_quarantined BIGINT NOT NULL, ignored_columns VARCHAR, loaded_at TIMESTAMP NOT NULL, notes VARCHAR)")
    con.execute("CREATE TABLE quarantine (batch_id VARCHAR NOT NULL, table_name VARCHAR NOT NULL, "
                "source_file VARCHAR NOT NULL, row_number BIGINT NOT NULL, column_name VARCHAR, rule VARCHAR NOT NULL, "
                "reason VARCHAR NOT NULL)")
    con.close()
    (tiny_export / "patients.csv").write_text(TINY["patients.csv"] + "P4,A,X,40,1,MDD,\n\n")
    load(db, tiny_export)
    assert query_db(db, "SELECT rows_blank FROM meta_batches WHERE table_name = 'patients'").item() == 1
    assert query_db(db, "SELECT line_number FROM quarantine").item() == 5
    again = load(db, tiny_export)
    assert all(f.skipped for f in again.files)


# ---------------------------------------------------------------------------
# Time-zone offsets
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("2024-01-08 09:00", "2024-01-08 09:00:00"),
    ("2024-01-08T09:00:00+02:00", "2024-01-08 09:00:00"),
    ("2024-01-08T09:00:00Z", "2024-01-08 09:00:00"),  # typed like the others; the file is refused before
    ("2024-01-08 09:00-0500", "2024-01-08 09:00:00"),
    ("2024-01-08 09:00:00-05", "2024-01-08 09:00:00"),
    ("2024-01-08T09:00:00.5+05:30", "2024-01-08 09:00:00.5"),
    ("2024-01-08 09:00 +14:00", "2024-01-08 09:00:00"),
    ("2024-01-08 09:00-12:00", "2024-01-08 09:00:00"),
    ("2024-01-08 09:00+14:30", None),  # beyond +14:00
    ("2024-01-08 09:00-13:00", None),  # beyond -12:00
    ("2024-01-08 09:00+25:00", None),  # DuckDB alone drops this one without a word
    ("2024-01-08 09:00+02:75", None),
    ("2024-01-08 09:00+02:00+03:00", None),
    ("2024-01-08 09:00 EST", None),
    ("2024-01-08 09:00 Europe/Berlin", None),
    ("2024-01-08+02:00", None),  # an offset after a date without a time
    ("2024-01-08", "2024-01-08 00:00:00"),  # a date is not read as an offset (-08)
])
def test_timestamps_keep_the_wall_clock_time_written(text, want):
    sql = f"SELECT CAST(({timestamp_sql('v')}) AS VARCHAR) FROM (SELECT NULLIF(TRIM(?), '') AS v)"
    assert duckdb.connect().execute(sql, [text]).fetchone()[0] == want


#: Values without a zone designator (polars' TZ_PATTERN does not match them): stray zones, letters,
#: '+' signs, white space and digits outside ASCII, dates, garbage.
_UNZONED = ["2024-01-08 09:00", "2024-01-08T09:00:00", "2024-01-08 09:00:00.5", "2024-01-08", "2024-01-08+02:00",
            "2024-01-08 09:00 Europe/Berlin", "2024-01-08 09:00+", "2024-01-08 9:00 am", "2024-01-08T09", "soon",
            "2024-01-08\u00a009:00", "2024-01-08 \u0669\u0669:00", "2024-01-08\t09:00 +2", "2024-01-08 09:00\n+x",
            "+2024-01-08 09:00", "2024-01-08 09:00 BC", "2024-01-08 09:00 ZZ", "", "  "]


@pytest.mark.parametrize("text", _UNZONED)
def test_timestamps_of_a_column_without_zones_type_as_with_the_zone_regexes(text):
    # what the fast path is checked against: the full SQL, on values polars finds no zone designator in
    assert not pl.Series([text.strip(WHITESPACE)]).str.contains(TZ_PATTERN).item()
    con = duckdb.connect()

    def typed(zoned: bool):
        return con.execute(f"SELECT CAST(({timestamp_sql('v', zoned)}) AS VARCHAR) FROM "
                           f"(SELECT NULLIF(TRIM(?, '{WHITESPACE}'), '') AS v)", [text]).fetchone()[0]

    assert typed(False) == typed(True)


def test_a_column_is_unzoned_only_when_no_cell_has_a_zone():
    scan = OffsetScan("sessions")
    scan.add(_ts_frame(["2024-01-08 09:00", None]))
    scan.add(_ts_frame(["2024-01-09 09:00"]))
    assert scan.unzoned() == {"session_ts"}
    scan.add(_ts_frame(["2024-01-10 09:00+01:00"]))
    assert scan.unzoned() == set()


def _ts_frame(values: list[str | None]) -> pl.DataFrame:
    return pl.DataFrame({"_row_number": list(range(1, len(values) + 1)), "session_ts": values})


def test_offsets_utc_and_mixes_per_column():
    assert offset_problem(_ts_frame(["2024-01-08 09:00", None, "2024-01-09 09:00"]), "sessions") is None
    assert offset_problem(_ts_frame(["2024-01-08 09:00+01:00", "2024-07-08 09:00+02:00"]), "sessions") is None
    msg = offset_problem(_ts_frame(["2024-01-08 09:00+01:00", "2024-01-08 09:00Z"]), "sessions")
    assert "session_ts holds times in UTC" in msg and "first row 2" in msg
    for utc in ("2024-01-08 09:00:00 UTC", "2024-01-08 09:00 gmt", "2024-01-08 09:00-00:00", "2024-01-08T09:00z"):
        assert "UTC" in offset_problem(_ts_frame([utc]), "sessions"), utc
    msg = offset_problem(_ts_frame(["2024-01-08 09:00", "", "2024-01-08 09:00+01:00"]), "sessions")
    assert "mixes times with a UTC offset (1 row(s), first row 3) and without one (1 row(s), first row 1)" in msg
    note = offset_note(_ts_frame(["2024-01-08 09:00+01:00", "2024-07-08 09:00+02:00", "2024-07-08 09:00+25:00"]),
                       "sessions")
    assert note == "session_ts: 2 time(s) with a UTC offset (+01:00, +02:00) read as the local time written, offset dropped"


def test_parquet_time_zones_are_visible_as_offsets_or_utc():
    naive = pl.Series("t", [dt.datetime(2024, 1, 8, 9)])
    frame = pl.DataFrame([naive, naive.dt.replace_time_zone("UTC").alias("u"),
                          naive.dt.replace_time_zone("America/New_York").alias("ny"), pl.Series("n", [1.5])])
    assert parquet_as_text(frame).row(0) == ("2024-01-08 09:00:00.000000", "2024-01-08 09:00:00.000000Z",
                                             "2024-01-08 09:00:00.000000-05:00", "1.5")


# ---------------------------------------------------------------------------
# Duplicates at scale
# ---------------------------------------------------------------------------

def _patients(ids: list[str], ages: list[int]) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame({
        "_row_number": pl.int_range(1, n + 1, eager=True).cast(pl.Int64), "patient_id": ids, "site": ["A"] * n,
        "sex": ["F"] * n, "age_at_index": ages, "prior_failed_trials": [3] * n, "diagnosis": ["MDD"] * n,
        "weight_kg": [None] * n, "observation_start": [None] * n,
    }, schema_overrides={"age_at_index": pl.Int32, "prior_failed_trials": pl.Int32, "weight_kg": pl.Float64,
                         "observation_start": pl.Date})


@pytest.mark.parametrize("n", [16_383, 16_384, 100_000])
def test_one_large_group_of_exact_or_conflicting_copies(n):
    """polars 2.1 cannot filter more than 16,383 rows with a scalar predicate (the crash of the
    issue, fixed in rules._problems); a conflict group listed every copy's row number in every
    copy's reason (16,384 copies: 1.7 GB of reasons; 100,000: out of memory)."""
    t0 = time.perf_counter()
    exact = duplicate_problems("patients", _patients(["P1"] * n, [40] * n))
    assert exact.height == n - 1 and set(exact["rule"]) == {"duplicate_exact"}
    conflict = duplicate_problems("patients", _patients(["P1"] * n, [40] * (n - 1) + [41]))
    assert conflict.height == n and set(conflict["rule"]) == {"duplicate_conflict"}
    assert conflict["reason"].str.len_chars().max() < 200
    assert f"appears on {n} rows (1, 2, 3, 4, 5 and {n - DUPLICATE_ROWS_SHOWN} more)" in conflict["reason"][0]
    assert time.perf_counter() - t0 < 30


def test_many_groups_of_exact_and_conflicting_copies():
    """100,000 rows in 50,000 pairs: 40,000 exact pairs (one copy each loads), 10,000 conflicting ones."""
    ids = [f"P{i // 2}" for i in range(100_000)]
    ages = [40 + (1 if i >= 80_000 and i % 2 else 0) for i in range(100_000)]
    p = duplicate_problems("patients", _patients(ids, ages))
    counts = dict(p.group_by("rule").len().iter_rows())
    assert counts == {"duplicate_exact": 40_000, "duplicate_conflict": 20_000}
    assert p["_row_number"].n_unique() == 60_000
    assert "appears on 2 rows (80001, 80002)" in p.filter(pl.col("_row_number") == 80_001)["reason"][0]


# ---------------------------------------------------------------------------
# Rows on their own first, then keys among the rows still standing
# ---------------------------------------------------------------------------

def test_a_bad_row_never_takes_a_valid_row_with_the_same_key_into_quarantine(tmp_path):
    """One bad copy of a valid row in every table at once: each bad row is quarantined for its own
    rule only, every valid row loads, and nothing cascades."""
    files = {
        "patients.csv": TINY["patients.csv"] + "P1,A,F,45,3,MDD,seventy\n",
        "courses.csv": TINY["courses.csv"] + "C1,P1,ketamine_iv,ketamine,2024-01-08,2024-01-01,completed,false,false\n",
        "sessions.csv": TINY["sessions.csv"] + "S4,C3,2024-03-04 11:00,56,,,booster,,,,,,,\n",
        "adverse_events.csv": TINY["adverse_events.csv"] + "AE2,S4,nausea,\n",
        "mood_scores.csv": TINY["mood_scores.csv"] + "P3,2024-03-06 10:00,MADRS,thirty,2,clinician\n",
    }
    s = load(tmp_path / "w.duckdb", write_export(tmp_path / "x", files))
    assert {f.table: (f.rows_read, f.rows_loaded, f.rows_quarantined) for f in s.files} == {
        "patients": (4, 3, 1), "courses": (4, 3, 1), "sessions": (5, 4, 1), "adverse_events": (3, 2, 1),
        "mood_scores": (8, 7, 1)}
    rules = query_db(tmp_path / "w.duckdb", "SELECT table_name, row_number, rule FROM quarantine ORDER BY ALL").rows()
    assert rules == [("adverse_events", 3, "required_missing"), ("courses", 4, "end_before_start"),
                     ("mood_scores", 8, "type"), ("patients", 4, "type"), ("sessions", 5, "not_allowed")]


# ---------------------------------------------------------------------------
# Re-deliveries
# ---------------------------------------------------------------------------

def test_redelivery_a_b_a_undoes_the_correction_and_a_fourth_load_changes_nothing(tmp_path):
    a = TINY["patients.csv"]
    b = a.replace("P2,A,M,52,1,MDD,", "P2,A,M,53,1,MDD,80")
    db = tmp_path / "w.duckdb"
    load(db, write_export(tmp_path / "a"))
    res = CliRunner().invoke(app, ["ingest", str(write_export(tmp_path / "b", {"patients.csv": b})), "--db", str(db)])
    assert res.exit_code == 0 and "patients.csv: loaded (3 read" in res.output
    assert query_db(db, "SELECT age_at_index FROM stg_patients WHERE patient_id = 'P2'").item() == 53

    res = CliRunner().invoke(app, ["ingest", str(write_export(tmp_path / "a2", {"patients.csv": a})), "--db", str(db)])
    assert res.exit_code == 0, res.output
    first = query_db(db, "SELECT batch_id FROM meta_batches WHERE load_seq = 1").item()
    assert f"patients.csv: loaded again: the content of earlier batch {first}" in res.output
    assert query_db(db, "SELECT age_at_index FROM stg_patients WHERE patient_id = 'P2'").item() == 52
    batches = query_db(db, "SELECT batch_id, load_seq, redelivery_of, file_sha256 FROM meta_batches "
                           "WHERE table_name = 'patients' ORDER BY load_seq")
    assert batches["redelivery_of"].to_list() == [None, None, first]
    assert batches["batch_id"][2] == first + "-r1" and batches["file_sha256"][0] == batches["file_sha256"][2]
    assert query_db(db, f"SELECT count(*) FROM raw_patients WHERE _batch_id = '{first}-r1'").item() == 3

    before = warehouse_hash(db)
    for folder in ("a2", "a"):  # the latest delivery again, alone or in its whole first folder: nothing changes
        res = CliRunner().invoke(app, ["ingest", str(tmp_path / folder), "--db", str(db)])
        assert res.exit_code == 0 and "patients.csv: already loaded (the table's latest delivery), skipped" in res.output
        assert warehouse_hash(db) == before


def test_utf16_with_crlf_is_refused_as_utf16_not_as_mixed_line_endings(tmp_path, tiny_export):
    """UTF-16 CRLF is the bytes CR NUL LF NUL: lone CRs and lone LFs to a byte count, but the file
    is not UTF-8 text, and the error must say so."""
    (tiny_export / "courses.csv").write_bytes(TINY["courses.csv"].replace("\n", "\r\n").encode("utf-16"))
    with pytest.raises(IngestError, match=r"courses\.csv: not a UTF-8 text file \(it has NUL bytes"):
        load(tmp_path / "w.duckdb", tiny_export)
