"""Ingest reads a file once, streamed, and checks it a batch at a time (ingest.read, ingest.typed):
each batched check must say exactly what the same check says of the whole file held at once (the
in-memory functions, kept as the reference), and the SQL trim must be the polars one."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from ketaoutcomes.contract import TABLES, WHITESPACE
from ketaoutcomes.ingest import read as read_module
from ketaoutcomes.ingest.errors import IngestError
from ketaoutcomes.ingest.limits import ValueLengths, check_values
from ketaoutcomes.ingest.phi import PhiAllowList, PhiScan, nonempty_rows, scan_frame
from ketaoutcomes.ingest.read import line_numbers, read_text, text_frame
from ketaoutcomes.ingest.rules import row_problems, row_rule_columns
from ketaoutcomes.ingest.text import (
    OffsetScan,
    csv_source,
    drop_blank_rows,
    offset_note,
    offset_problem,
    with_line_numbers,
)
from ketaoutcomes.ingest.typed import present_sql
from ketaoutcomes.registries import load_registries


def frame(columns: dict[str, list[str | None]]) -> pl.DataFrame:
    return pl.DataFrame(columns, schema={k: pl.String for k in columns}).with_row_index(
        "_row_number", offset=1).with_columns(pl.col("_row_number").cast(pl.Int64))


def in_batches(f: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    return [f.slice(i, size) for i in range(0, f.height, size)]


PATIENTS = frame({
    "patient_id": [f"P{i:05d}" for i in range(1, 31)],
    "site": ["S01", "Dr Okafor's practice", None, "North Clinic", "S02"] * 6,
    "sex": ["F", "M", "X", "F", " "] * 6,
    "age_at_index": ["45", "200", "33", "abc", "90"] * 6,
    "contact": ["jane.doe@example.com", None, "", "ok", "call 617-555-0148"] * 6,
    "visit": ["2024-01-08", "1961-03-02", "1990-07-15", "1972-11-30", "1955-01-20"] * 6,
})


@pytest.mark.parametrize("size", [1, 7, 30])
def test_the_phi_scan_in_batches_finds_what_it_finds_in_the_whole_file(size):
    whole = scan_frame(PATIENTS, table="patients", file="p.csv", allow=PhiAllowList())
    scan = PhiScan(PATIENTS.columns, table="patients", file="p.csv", allow=PhiAllowList())
    for batch in in_batches(PATIENTS, size):
        scan.add(batch)
    assert whole  # the reference finds the planted e-mail, phone, name...
    assert scan.findings(lambda c: nonempty_rows(PATIENTS[c])) == whole


@pytest.mark.parametrize("values", [
    ["2024-01-08 09:00", None, "2024-01-09 09:00+01:00", "2024-01-10 10:00"],
    ["2024-01-08 09:00+01:00", "2024-07-08 09:00+02:00", "2024-07-09 09:00+02:00"],
    ["2024-01-08 09:00", "2024-01-08 09:00Z"],
])
def test_time_zones_in_batches_say_what_the_whole_column_says(values):
    f = frame({"session_ts": values})
    scan = OffsetScan("sessions")
    for batch in in_batches(f, 1):
        scan.add(batch)
    assert (scan.problem(), scan.note()) == (offset_problem(f, "sessions"), offset_note(f, "sessions"))


def test_value_lengths_in_batches_name_the_same_row_and_column_as_the_whole_file():
    from ketaoutcomes.contract import LIMITS
    from dataclasses import replace

    small = replace(LIMITS, max_line_bytes=10)
    f = frame({"ae_type": ["ok", "x" * 11, "ok"], "severity": ["ok", "ok", "y" * 12]})
    with pytest.raises(IngestError) as whole:
        check_values(f, Path("adverse_events.csv"), "adverse_events", small)
    lengths = ValueLengths(f.columns, small)
    for batch in in_batches(f, 1):
        lengths.add(batch)
    with pytest.raises(IngestError) as batched:
        lengths.check(Path("adverse_events.csv"), "adverse_events")
    assert str(batched.value) == str(whole.value)
    assert "row 2, column ae_type: a value of 11 bytes" in str(whole.value)


def test_the_sql_trim_is_the_polars_trim():
    """present_sql skips TRIM for values that start and end with printable ASCII; every value gets
    what polars' strip of :data:`WHITESPACE` (then empty -> null) gives."""
    values = ["abc", " abc", "abc ", "\u00a0abc", "abc\u3000", "\t\n", "", None, "a b", "\u2003", "é", " é ", "~x!",
              "x\u0085", "\u202fx\u202f"]
    con = duckdb.connect()
    got = [r[0] for r in con.execute(f"SELECT {present_sql('v')} FROM (SELECT unnest(?) AS v)", [values]).fetchall()]
    want = pl.Series(values, dtype=pl.String).str.strip_chars(WHITESPACE).replace("", None).to_list()
    assert got == want


def test_row_rules_read_only_the_columns_they_name():
    typed = pl.DataFrame({
        "_row_number": [1, 2, 3], "patient_id": ["P1", "P2", "P3"], "assessed_at": [None, None, None],
        "instrument": ["PHQ9", "MADRS", "phq9"], "total_score": [30.0, 10.0, 5.0], "si_item_score": [1.0, 9.0, None],
        "rater": ["self", "clinician", "nurse"]})
    regs = load_registries()
    full = row_problems("mood_scores", typed, regs)
    assert full.height >= 2  # the score out of range, the unknown instrument, the rater
    assert row_problems("mood_scores", typed.select(row_rule_columns("mood_scores")), regs).equals(full)
    for table in TABLES:
        assert set(row_rule_columns(table)) <= {"_row_number", *TABLES[table].column_names}


CSV = ('patient_id,site,sex\n'
       'P1,S01,F\n'
       '\n'
       'P2,"North\nClinic",M\n'
       ' , ,\n'
       'P3,"S\r\n02",F\n'
       'P4,S03,M\n').encode()


@pytest.mark.parametrize("batch_rows", [1, 2, 1 << 18])
def test_a_file_read_streamed_is_the_file_read_whole(tmp_path, monkeypatch, batch_rows):
    """Rows, blank rows and line numbers as the in-memory reader (polars' read_csv, then
    with_line_numbers and drop_blank_rows) gives them."""
    monkeypatch.setattr(read_module, "BATCH_ROWS", batch_rows)
    path = tmp_path / "patients.csv"
    path.write_bytes(CSV)
    tf = read_text(path, tmp_path / "t.parquet", table="patients", allow=PhiAllowList())
    whole = pl.read_csv(CSV, infer_schema=False).with_row_index("_row_number", offset=1).with_columns(
        pl.col("_row_number").cast(pl.Int64))
    kept, blank = drop_blank_rows(with_line_numbers(whole, first_line=2))
    assert (tf.rows_read, tf.rows_blank) == (kept.height, blank) == (4, 2)
    assert text_frame(tf).equals(kept.drop("_line_number"))
    con = duckdb.connect()
    assert line_numbers(con, tf, kept["_row_number"]).equals(kept.select("_row_number", "_line_number"))
    assert kept["_line_number"].to_list() == [2, 4, 7, 9]  # lines 3 and 6 blank; 4-5, 7-8 one row each


# Files whose rows start on lines the count of line ends alone does not give, and files where it does:
# (bytes, the line of the header). Among them: a line break in a cell of the first of two rows with no line
# end after the last (the last row's line moves by one), breaks in the last row only, a CRLF and a lone CR
# in a cell, a header with a break in a name, empty lines before the header and blank lines after the rows, and
# files whose line ends are lone CRs (read as their bytes made LF), with and without one at the end.
LINE_CASES = [
    (b'patient_id,site\nP1,"a\nb"\nP2,S2', 1),
    (b'patient_id,site\nP1,"a\nb"\nP2,S2\n', 1),
    (b'patient_id,site\nP1,S1\nP2,"a\nb"', 1),
    (b'patient_id,site\nP1,S1\nP2,S2', 1),
    (b'patient_id,site\r\nP1,"a\r\nb"\r\nP2,S2\r\nP3,S3\r\n', 1),
    (b'patient_id,site\nP1,"a\rb"\nP2,S2\n', 1),
    (b'\n\npatient_id,"si\nte"\nP1,"x\n\ny"\n,\nP2,S2\n\n\n', 3),
    (b'patient_id,site\nP1,S1\n\n\nP2,"a\nb"\nP3,S3', 1),
    (b'patient_id,site\rP1,"a\nb"\rP2,S2', 1),
    (b'patient_id,site\rP1,"a\nb"\rP2,S2\r', 1),
]


@pytest.mark.parametrize("data,header_line", LINE_CASES)
def test_line_numbers_from_the_count_of_line_ends_are_those_of_counting_every_cells_breaks(tmp_path, data,
                                                                                            header_line):
    """Checked against with_line_numbers on the whole file (every cell's line breaks counted): the
    read learns from the file's count of line ends whether any cell may hold a break, and when none
    may, gives each row the line after the one before; else it counts the breaks."""
    path = tmp_path / "patients.csv"
    path.write_bytes(data)
    tf = read_text(path, tmp_path / "t.parquet", table="patients", allow=PhiAllowList())
    source = csv_source(path).source  # (a lone-CR file: its bytes made LF, as the reader gets them)
    whole = pl.read_csv(source if isinstance(source, bytes) else data, infer_schema=False).with_row_index(
        "_row_number", offset=1).with_columns(
        pl.col("_row_number").cast(pl.Int64))
    header_breaks = sum(c.count("\n") for c in whole.columns)
    kept, _ = drop_blank_rows(with_line_numbers(whole, first_line=header_line + 1 + header_breaks))
    assert tf.first_line == header_line + 1 + header_breaks
    got = line_numbers(duckdb.connect(), tf, kept["_row_number"])
    assert got.equals(kept.select("_row_number", "_line_number"))
    breaks_above_last = kept.head(kept.height - 1).select(
        pl.concat_str(pl.exclude("_row_number", "_line_number"), ignore_nulls=True).str.count_matches("\n").sum()
    ).item()
    if breaks_above_last:  # the count of line ends must not have ruled breaks out
        assert tf.newlines


def test_the_scratch_folder_is_removed_even_when_a_late_writer_leaves_a_file_after_the_first_removal(monkeypatch):
    """Checked against a stand-in for polars' streaming writer, whose threads can close their part of a
    scratch file just after a failed read has raised (a CI run saw "Directory not empty" escape ingest
    once): the first removal leaves a file behind, the next try removes the folder, and no error escapes;
    an error raised inside the block is the one that reaches the caller."""
    import shutil

    import ketaoutcomes.ingest.read as read

    real = shutil.rmtree
    calls: list[Path] = []

    def late_writer_rmtree(path, ignore_errors=False):
        calls.append(Path(path))
        real(path, ignore_errors=ignore_errors)
        if len(calls) == 1:  # the writer's thread closes its file after the first removal
            Path(path).mkdir(exist_ok=True)
            (Path(path) / "text.parquet").write_bytes(b"late")

    monkeypatch.setattr(read.shutil, "rmtree", late_writer_rmtree)
    monkeypatch.setattr(read.time, "sleep", lambda s: None)
    with pytest.raises(ValueError, match="malformed"):
        with read.scratch_folder("ketaoutcomes-test-") as folder:
            (folder / "text.parquet").write_bytes(b"partial")
            raise ValueError("malformed CSV")
    assert len(calls) == 2 and not folder.exists()
