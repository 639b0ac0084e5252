"""Load an export folder (CSV or Parquet, one file per table) into the warehouse.

See :func:`ingest_export`. Whole-file problems raise :class:`IngestError`
(naming the file and what to fix) before anything is written; row-level problems
send the row to the ``quarantine`` table with a reason, and the good rows load.
"""

from ketaoutcomes.ingest.load import (
    FileLoad,
    IngestError,
    IngestSummary,
    PhiRefused,
    check_export_folder,
    find_export_files,
    ingest_export,
    read_table_file,
)
from ketaoutcomes.ingest.limits import memory_limit

__all__ = [
    "FileLoad",
    "IngestError",
    "IngestSummary",
    "PhiRefused",
    "check_export_folder",
    "find_export_files",
    "ingest_export",
    "memory_limit",
    "read_table_file",
]
