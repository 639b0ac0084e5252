"""Regenerate the corpus cases whose files are binary or encoding-sensitive.

Run from the repository root::

    uv run python tests/corpus/make_corpus.py

Every other case in this folder is plain text written by hand. The files made
here are committed too (the tests never run this script); it exists so a
reviewer can see exactly how each byte-level case was made and remake it if the
clean export (``tests/conftest.py::TINY``) changes.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for tests.conftest

from tests.conftest import TINY, write_case  # noqa: E402


def _frame(name: str) -> pl.DataFrame:
    """A TINY table as a typed frame (what a Parquet-writing export tool would produce)."""
    return pl.read_csv(io.StringIO(TINY[name]), try_parse_dates=True)


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="uncompressed", statistics=False)
    return buf.getvalue()


def _case(name: str, toml: str, files: dict[str, bytes]) -> None:
    write_case(HERE, name, toml, files)


def main() -> None:
    patients = _frame("patients.csv")
    _case("file_truncated_parquet", '''
description = "patients.parquet cut in half (an interrupted copy); patients.csv removed"
remove = ["patients.csv"]
[expect]
kind = "file_error"
file = "patients.parquet"
contains = ["Parquet"]
''', {"patients.parquet": (p := _parquet(patients))[: len(p) // 2]})

    _case("file_not_parquet", '''
description = "sessions.parquet is really a CSV file renamed (.csv to .parquet); sessions.csv removed"
remove = ["sessions.csv"]
[expect]
kind = "file_error"
file = "sessions.parquet"
contains = ["Parquet"]
''', {"sessions.parquet": (TINY["sessions.csv"] + "S5,C1,2024-01-15 09:00,35,0.5,40,induction,,,,,,,\n").encode()})

    _case("file_two_files_one_table", '''
description = "both patients.csv and patients.parquet: which one is meant?"
[expect]
kind = "file_error"
file = "patients.parquet"
contains = ["patients.csv"]
''', {"patients.parquet": _parquet(patients)})

    _case("file_latin1", '''
description = "patients.csv saved as Latin-1 (site Malmö on row 4)"
[expect]
kind = "file_error"
file = "patients.csv"
contains = ["UTF-8"]
''', {"patients.csv": (TINY["patients.csv"] + "P4,Malmö,F,40,1,MDD,70\n").encode("latin-1")})

    _case("file_utf16", '''
description = "mood_scores.csv saved as UTF-16 (with a byte-order mark), as some spreadsheet programs do"
[expect]
kind = "file_error"
file = "mood_scores.csv"
contains = ["UTF-8"]
''', {"mood_scores.csv": TINY["mood_scores.csv"].encode("utf-16")})

    _case("file_binary_garbage", '''
description = "adverse_events.csv holds an image, not text"
[expect]
kind = "file_error"
file = "adverse_events.csv"
contains = ["adverse_events.csv"]
''', {"adverse_events.csv": b"\x89PNG\r\n\x1a\n" + bytes(range(256))})

    _case("ok_utf8_bom_and_non_ascii", '''
description = "patients.csv starts with a UTF-8 byte-order mark (Excel's 'CSV UTF-8') and has a site Malmö: loads"
[expect]
kind = "load"
counts = { patients = [4, 4, 0] }
checks = [["SELECT site FROM stg_patients WHERE patient_id = 'P4'", "Malmö"]]
''', {"patients.csv": b"\xef\xbb\xbf" + (TINY["patients.csv"] + "P4,Malmö,F,40,1,MDD,70\n").encode()})

    _case("ok_crlf_line_endings", '''
description = "courses.csv and sessions.csv with Windows line endings (CRLF): load"
[expect]
kind = "load"
counts = { courses = [3, 3, 0], sessions = [4, 4, 0] }
checks = [["SELECT count(*) FROM stg_courses WHERE concomitant_benzodiazepine", 1]]
''', {name: TINY[name].replace("\n", "\r\n").encode() for name in ("courses.csv", "sessions.csv")})

    _case("ok_parquet_table", '''
description = "sessions delivered as typed Parquet (timestamps and numbers, not text); sessions.csv removed"
remove = ["sessions.csv"]
[expect]
kind = "load"
counts = { sessions = [4, 4, 0] }
checks = [["SELECT count(*) FROM stg_sessions WHERE session_ts = TIMESTAMP '2024-01-08 09:00'", 1]]
''', {"sessions.parquet": _parquet(_frame("sessions.csv"))})

    _case("phi_email_in_parquet", '''
description = "an e-mail address in an extra 'contact' column of patients.parquet; patients.csv removed"
remove = ["patients.csv"]
[expect]
kind = "phi"
file = "patients.parquet"
rule = "value.email"
secret = "jane.doe@example.org"
''', {"patients.parquet": _parquet(patients.with_columns(
        pl.Series("contact", ["jane.doe@example.org", None, None], dtype=pl.String)))})


if __name__ == "__main__":
    main()
