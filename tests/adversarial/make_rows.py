"""Regenerate the byte-sensitive cases of part 4 (``rows_*``): line endings and Parquet.

Run from the repository root::

    uv run python tests/adversarial/make_rows.py

The files it writes are committed (the tests never run this script; ``.gitattributes`` keeps
git from touching their line endings); it shows exactly how each byte-level case was made and
remakes them if the clean export (``tests/conftest.py::TINY``) changes. The plain-text
``rows_*`` cases are written by hand.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for tests.conftest

from tests.conftest import TINY, write_case  # noqa: E402

ALL_TABLES = ("patients", "courses", "sessions", "adverse_events", "mood_scores")
WHOLE = {"patients": 3, "courses": 3, "sessions": 4, "adverse_events": 2, "mood_scores": 7}


def _case(name: str, toml: str, files: dict[str, bytes]) -> None:
    write_case(HERE, name, toml, files)


def _cr(text: str) -> bytes:
    """Classic Mac OS line ends: every LF a lone CR."""
    return text.replace("\n", "\r").encode()


def _counts(**changed: list[int]) -> str:
    counts = {t: changed.get(t, [n, n, 0]) for t, n in WHOLE.items()}
    return "{ " + ", ".join(f"{t} = {v}" for t, v in counts.items()) + " }"


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="uncompressed", statistics=False)
    return buf.getvalue()


def main() -> None:
    patients = TINY["patients.csv"]
    lines = patients.splitlines()

    _case("rows_cr_only_patients", f'''
description = "patients.csv saved as Excel's 'CSV (Macintosh)': every line ends in a lone CR; two rows more, the last with age 'forty'. Read as lines, not as one header of 21 cells: 5 rows, the bad one quarantined at row 5, line 6"
[expect]
kind = "load"
counts = {_counts(patients=[5, 4, 1])}
rules = [["patients", 5, "type", "age_at_index"]]
checks = [
  ["SELECT count(*) FROM stg_patients", 4],
  ["SELECT count(*) FROM meta_batches WHERE ignored_columns IS NOT NULL", 0],
  ["SELECT line_number FROM quarantine WHERE table_name = 'patients'", 6],
]
''', {"patients.csv": _cr(patients + "P4,B,M,61,2,MDD,82\nP5,B,F,forty,1,MDD,60\n")})

    _case("rows_cr_only_every_table", f'''
description = "every file of the export with lone-CR line ends (a whole export saved on classic Mac OS): all of it loads, nothing is an orphan, no cell becomes a column name"
[expect]
kind = "load"
counts = {_counts()}
checks = [
  ["SELECT count(*) FROM meta_batches WHERE ignored_columns IS NOT NULL", 0],
  ["SELECT count(*) FROM stg_mood_scores", 7],
  ["SELECT CAST(session_ts AS VARCHAR) FROM stg_sessions WHERE session_id = 'S4'", "2024-03-04 11:00:00"],
]
''', {f"{t}.csv": _cr(TINY[f"{t}.csv"]) for t in ALL_TABLES})

    _case("rows_cr_only_quoted_line_break", f'''
description = "lone-CR line ends, and a quoted cell of an extra 'note' column holding a line break (CR) of its own: the cell keeps it, the rows are not split"
[expect]
kind = "load"
counts = {_counts(patients=[3, 3, 0])}
ignored_columns = {{ patients = ["note"] }}
checks = [["SELECT count(*) FROM stg_patients", 3]]
''', {"patients.csv": (lines[0] + ",note\r" + lines[1] + ',"first line\rsecond line"\r'
                       + "\r".join(x + "," for x in lines[2:]) + "\r").encode()})

    _case("rows_crlf_then_cr_mixed", '''
description = "patients.csv with a CRLF header and lone-CR rows (a file edited on two systems): where rows end is ambiguous, so the file is refused naming the first line of each kind"
[expect]
kind = "file_error"
file = "patients.csv"
contains = ["mixed line endings", "line 2", "lone CR", "CRLF"]
absent = ["MDD", "P2"]
''', {"patients.csv": (lines[0] + "\r\n" + "\r".join(lines[1:]) + "\r").encode()})

    _case("rows_lf_with_one_cr_line_end", '''
description = "mood_scores.csv ends its lines in LF, but one line ends in a lone CR (a row pasted from a Mac tool): refused, not two rows glued into one"
[expect]
kind = "file_error"
file = "mood_scores.csv"
contains = ["mixed line endings", "line 4", "lone CR"]
absent = ["MADRS", "clinician"]
''', {"mood_scores.csv": TINY["mood_scores.csv"].replace("14,0,clinician\n", "14,0,clinician\r", 1).encode()})

    _case("rows_lone_cr_in_quoted_field", f'''
description = "LF line ends and a lone CR inside a quoted cell (an extra 'note' column): content, not a line end; the file loads whole"
[expect]
kind = "load"
counts = {_counts(courses=[3, 3, 0])}
ignored_columns = {{ courses = ["note"] }}
''', {"courses.csv": "\n".join([TINY["courses.csv"].splitlines()[0] + ",note"]
                               + [x + (',"a\rb"' if i == 1 else ",") for i, x in enumerate(
                                   TINY["courses.csv"].splitlines()[1:], 1)]).encode() + b"\n"})

    sessions = pl.read_csv(io.StringIO(TINY["sessions.csv"]), try_parse_dates=True)
    _case("rows_tz_parquet_utc", '''
description = "sessions.parquet with session_ts typed as a UTC timestamp (time zone 'UTC'): UTC is not the clinic's local time, so the file is refused as a CSV column of Z times is; sessions.csv removed"
remove = ["sessions.csv"]
[expect]
kind = "file_error"
file = "sessions.parquet"
contains = ["session_ts", "UTC", "local time"]
''', {"sessions.parquet": _parquet(sessions.with_columns(pl.col("session_ts").dt.replace_time_zone("UTC")))})

    _case("rows_tz_parquet_local_zone", f'''
description = "sessions.parquet with session_ts in the clinic's zone (Europe/Berlin): stored as the local wall-clock time (09:00, not 08:00 UTC), the offset noted; sessions.csv removed"
remove = ["sessions.csv"]
[expect]
kind = "load"
counts = {_counts()}
checks = [
  ["SELECT CAST(session_ts AS VARCHAR) FROM stg_sessions WHERE session_id = 'S1'", "2024-01-08 09:00:00"],
  ["SELECT count(*) FROM meta_batches WHERE table_name = 'sessions' AND notes LIKE '%4 time(s) with a UTC offset (+01:00)%'", 1],
]
''', {"sessions.parquet": _parquet(sessions.with_columns(pl.col("session_ts").dt.replace_time_zone("Europe/Berlin")))})

    pts = pl.read_csv(io.StringIO(patients), try_parse_dates=True)
    null_row = pl.DataFrame([{c: None for c in pts.columns}], schema=pts.schema)
    _case("rows_parquet_null_row", f'''
description = "patients.parquet with a row of nulls between P1 and P2 (a blank row of a spreadsheet exported to Parquet): not a row, skipped and counted apart; patients.csv removed"
remove = ["patients.csv"]
[expect]
kind = "load"
counts = {_counts()}
checks = [["SELECT rows_blank FROM meta_batches WHERE table_name = 'patients'", 1]]
''', {"patients.parquet": _parquet(pl.concat([pts.head(1), null_row, pts.tail(2)]))})


if __name__ == "__main__":
    main()
