"""The patients file's own columns: kept for a study's covariates (pure).

A trial carries covariates of its own (``baseline_severity_band``, ``employment``) that the
import format does not name. A study declares them (``[models.extra_covariates]``, see
:class:`ketaoutcomes.settings.ExtraCovariate`) and the analysis types and checks them against
the data; ingest, which does not know the study, keeps them as text.

Which columns of ``patients`` beyond the contract are kept:

* a column whose header is shaped like a column name (letters, digits, underscores; the PHI
  guard's :func:`~ketaoutcomes.ingest.phi.header_labels`): another header is ``#N``, not stored;
* with a value in some row (a column empty in every row carries nothing);
* whose every value is a code or a number (the rule of ``site`` and ``drug``:
  :func:`~ketaoutcomes.ingest.rules.not_a_code`), unless ``phi_allowlist.toml`` declares the
  column safe: free text can carry identifiers. A column with free text is not kept, and a note
  names it with the first such row (never the value).

Every column, kept or not, has been through the PHI guard like any other: a name, an e-mail
or a record number in one refuses the whole export. The kept values are stored as one JSON
object per row, ``{"employment": "student", ...}``, in the column ``_extra`` of ``raw_patients``
and ``stg_patients`` (a re-delivery supersedes them with the rest of the row; a rollback
drops them with their batch). Columns of the other tables beyond the contract are not stored.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import polars as pl

from ketaoutcomes.contract import EXTRA_COLUMN, TABLES
from ketaoutcomes.ingest.phi import header_labels
from ketaoutcomes.ingest.rules import not_a_code

__all__ = ["EXTRA_COLUMN", "EXTRA_TABLE", "ExtraColumns", "extra_columns"]

#: The only table whose own columns are kept (patient-level covariates).
EXTRA_TABLE = "patients"


@dataclass(frozen=True)
class ExtraColumns:
    """What :func:`extra_columns` decided for one file."""

    #: ``_row_number`` and ``_extra`` (JSON object of the kept columns' values as text), or None
    #: when no column is kept.
    frame: pl.DataFrame | None
    #: The columns kept, in file order.
    kept: tuple[str, ...]
    #: One sentence per column not kept for its values (free text), naming its first such row.
    notes: tuple[str, ...]

    @property
    def note(self) -> str | None:
        parts = ([f"extra column(s) kept for study covariates: {', '.join(self.kept)}"] if self.kept else []) \
            + list(self.notes)
        return "; ".join(parts) or None


def extra_columns(text: pl.DataFrame, table: str, exempt: Collection[str] = ()) -> ExtraColumns:
    """The columns of ``text`` (one file as read, every column text, with ``_row_number``)
    beyond the contract of ``table`` that are kept, as one JSON object per row.

    ``exempt``: columns the export's phi_allowlist.toml declares safe (kept whatever their shape)."""
    if table != EXTRA_TABLE:
        return ExtraColumns(None, (), ())
    contract = set(TABLES[table].column_names)
    headers = [c for c in text.columns if c != "_row_number" and c not in contract]
    labels = dict(zip(headers, header_labels(headers))) if headers else {}
    kept, notes = [], []
    for name in headers:
        if labels[name] != name:  # "#N": a header not fit to print is not stored either
            continue
        value = pl.col(name).str.strip_chars().replace("", None)
        if text.select(value.is_null().all()).item():  # empty in every row: nothing to keep
            continue
        if name not in exempt:
            bad = text.select("_row_number", not_a_code(value).alias("_bad")).filter(pl.col("_bad"))
            if bad.height:
                more = f" (and {bad.height - 1:,} more)" if bad.height > 1 else ""
                notes.append(f"column {name} not kept: row {bad['_row_number'][0]}{more} is not a code or a number "
                             "(free text can carry identifiers; declare the column in phi_allowlist.toml if it is safe)")
                continue
        kept.append(name)
    if not kept:
        return ExtraColumns(None, (), tuple(notes))
    frame = text.select(
        "_row_number",
        pl.struct([pl.col(c).str.strip_chars().replace("", None).alias(c) for c in kept])
        .struct.json_encode().alias(EXTRA_COLUMN),
    )
    return ExtraColumns(frame, tuple(kept), tuple(notes))
