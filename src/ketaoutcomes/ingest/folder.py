"""The export folder: which file holds which table, and what is missing or misnamed.

A file named like a table (``<table>.csv`` or ``<table>.parquet``) is that table's file; a name
near one (``mood-scores.csv``, ``Patients.CSV``) is an error, not an ignored file; registries,
the allow-list and hidden files are known; anything else is listed as ignored (by a name fit to
print, :func:`ketaoutcomes.ingest.phi.header_labels`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from ketaoutcomes.contract import OPTIONAL_TABLES, TABLE_ORDER, TABLES
from ketaoutcomes.ingest.errors import IngestError
from ketaoutcomes.ingest.limits import check_regular_file, check_small_file
from ketaoutcomes.ingest.phi import ALLOWLIST_FILE, header_labels
from ketaoutcomes.suggest import closest

__all__ = ["KNOWN_FILES", "READ_FILES", "REGISTRY_FILES", "SESSION_TABLES", "SUFFIXES", "check_export_folder",
           "find_export_files"]

SUFFIXES = (".csv", ".parquet")
REGISTRY_FILES = ("arms.csv", "instruments.csv")


#: Files of an export folder that are read but are not tables (and the simulator's truth: truth.json,
#: and the SSRI-failure cohort's person-level truth_latent.parquet).
KNOWN_FILES = (*REGISTRY_FILES, ALLOWLIST_FILE, "truth.json", "truth_latent.parquet")
#: Those of them that ingest reads (checked like the tables: regular files, not compressed, small).
READ_FILES = (*REGISTRY_FILES, ALLOWLIST_FILE)
#: How near a file name must be to a table's (or registry's) to be taken for a misnamed one.
NEAR_MISS_CUTOFF = 0.8


def _near_miss(name: str) -> str | None:
    """The table (or registry) a file name that is not in the import format looks meant for:
    ``mood-scores.csv``, ``Patients.CSV``, ``patient.csv``, ``courses.txt``, ``sessions_2024.csv``
    all do; ``README.txt`` or ``notes.md`` do not."""
    stem = re.sub(r"[^a-z0-9]+", "_", name.lower().split(".")[0]).strip("_")
    targets = [*TABLES, *(f.split(".")[0] for f in REGISTRY_FILES)]
    if stem in targets:
        return stem
    for t in targets:  # patients_2024, sessions_old, ...
        if stem.startswith(t + "_"):
            return t
    return closest(stem, targets, cutoff=NEAR_MISS_CUTOFF) if stem else None


def _misnamed(path: Path, meant: str) -> str:
    if path.is_dir():
        return f"{path.name} is a folder; the import format takes one file per table ({meant}.csv or {meant}.parquet)"
    if meant in TABLES:
        return f"{path.name} looks like table {meant}: name it {meant}.csv or {meant}.parquet (or move it out of the folder)"
    return f"{path.name} looks like the {meant} registry: name it {meant}.csv (or move it out of the folder)"


def _file_label(name: str) -> str:
    """An unrelated file's name as it may be printed and stored (ingest lists the files it ignored):
    the name when its parts are shaped like column names or are numbers of up to 4 digits (README.txt,
    truth_v2.json, notes-2024.md), else "(a file whose name is not shown)": a file can be named after
    a patient."""
    parts = re.split(r"[-.]", name)
    labels = header_labels([p or "x" for p in parts])
    digits_ok = [re.fullmatch(r"[0-9]{1,4}", p) is not None for p in parts]
    if all(not lab.startswith("#") or ok for lab, ok in zip(labels, digits_ok)):
        return name
    return "(a file whose name is not shown)"


def find_export_files(export_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each contract table to its file in ``export_dir``; list files that are not used.

    A file whose name nearly matches a table or registry (wrong case, a hyphen, a missing "s", a
    suffix other than .csv/.parquet) is an error, not an ignored file: an export whose ratings are
    in ``mood-scores.csv`` would otherwise load without them. Unrelated files (README.txt, the
    registries, phi_allowlist.toml, truth.json, truth_latent.parquet, hidden files) are ignored.

    A table file, a registry or the allow-list must be a regular file (a FIFO, a folder, a dangling
    link... is refused from its ``stat``, never opened: :func:`ketaoutcomes.ingest.limits.check_regular_file`)."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise IngestError(f"{export_dir}: not a folder; give the folder that holds patients.csv, courses.csv, ...")
    found: dict[str, Path] = {}
    ignored: list[str] = []
    misnamed: list[str] = []
    for p in sorted(export_dir.iterdir()):
        if p.name in KNOWN_FILES or p.name.startswith("."):
            if p.name in READ_FILES:
                check_small_file(p, export_dir)
            continue
        stem, suffix = p.stem, p.suffix.lower()
        if stem in TABLES and suffix in SUFFIXES:
            check_regular_file(p, export_dir)
            if stem in found:
                raise IngestError(
                    f"{export_dir}: both {found[stem].name} and {p.name} hold table {stem}; keep one of them"
                )
            found[stem] = p
        elif (meant := _near_miss(p.name)) is not None:
            misnamed.append(_misnamed(p, meant))
        else:
            ignored.append(_file_label(p.name))
    if not found:
        raise IngestError(
            f"{export_dir}: no import files found; expected files named "
            + ", ".join(f"{t}.csv or {t}.parquet" for t in TABLE_ORDER if t not in OPTIONAL_TABLES)
            + (f" ({'; '.join(misnamed)})" if misnamed else "")
        )
    if misnamed:
        raise IngestError(f"{export_dir}: {'; '.join(misnamed)}; nothing was loaded")
    return found, ignored


def check_export_folder(export_dir: Path, loaded: Collection[str] = ()) -> dict[str, Path]:
    """The table files of ``export_dir`` (:func:`find_export_files`), checked as a delivery on top of
    the tables already ``loaded`` into the warehouse: a table neither in this export nor loaded
    before is an error naming its file. An export without patients.csv would otherwise quarantine
    every row as an orphan (or, without adverse_events.csv, report a safety table with no events);
    a later delivery may leave out tables already loaded (a corrected re-delivery of one file). A
    table of :data:`~ketaoutcomes.contract.OPTIONAL_TABLES` (clinical_events) may always be left out.

    Raises
    ------
    IngestError
        One line: a misnamed file, a missing table, or no import file at all; nothing is written.
    """
    files, _ = find_export_files(export_dir)
    loaded = set(loaded)
    missing = [t for t in TABLE_ORDER if t not in files and t not in loaded and t not in SESSION_TABLES
               and t not in OPTIONAL_TABLES]
    if missing:
        names = ", ".join(f"{t}.csv" for t in missing)
        required = [t for t in TABLE_ORDER if t not in OPTIONAL_TABLES]
        raise IngestError(
            f"{export_dir}: {names} missing (neither .csv nor .parquet in the folder, and no earlier delivery "
            f"in the warehouse); a first export holds every table ({', '.join(required)}; one with no rows "
            "as a header-only file; sessions and adverse_events may be left out when no course is on a "
            f"session-based arm; {', '.join(OPTIONAL_TABLES)} may always be left out), a later one may leave out "
            "tables already loaded; nothing was loaded")
    return files


#: Tables an export may leave out when none of its courses is on a session-based arm (registry
#: ``session_based``): a trial without sessions has no session and no adverse event at a session.
SESSION_TABLES = ("sessions", "adverse_events")
