"""The run record a report carries: what it was made from, for ``python -m ketaoutcomes reproduce``.

Every report embeds one machine-readable record, a JSON block in its ``<head>``::

    <script type="application/json" id="ketaoutcomes-run">{...}</script>

holding (:func:`run_record`):

* ``run_id``, ``study``, ``settings_id`` and ``settings_json`` (the study specification, the canonical
  JSON text whose hash is the settings id), ``code_version``, ``data_fingerprint``,
  ``registries_fingerprint`` and ``warehouse`` (the file the run was read from);
* ``batches``: the batches in force for the run, in load order: ``batch_id``, ``load_seq``, ``table``,
  ``file`` (the file as loaded), ``sha256`` (of its content) and ``rows`` (rows loaded);
* ``results``: for every ``ad_*`` / ``results_*`` table of the run (without ``run_id`` and
  ``settings_id``), its number of rows and a digest of each column (:func:`table_digest`);
* ``digest``: SHA-256 of the page with the record's text taken out and of the record without this
  field (:func:`embed_record`), so that an edit of either, by hand or by a tool, is seen
  (:func:`read_record`). It is a check against accidents, not a signature: whoever edits the page
  and knows this function can recompute it.

Column digests are over the values' bits, not their printed form: a double changed by one unit in
the last place changes its column's digest. Rows are taken in a canonical order (sorted by every
column, doubles by their bits), so the digest does not depend on how the warehouse stores them.

The provenance section of the page says the same in words (:mod:`ketaoutcomes.report.load`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

__all__ = ["RECORD_SLOT", "RECORD_VERSION", "RecordError", "embed_record", "float_bits", "read_record",
           "record_script", "results_digest", "run_record", "table_digest"]

#: Version of the record's layout (``record`` field).
RECORD_VERSION = 1
#: The element that holds the record.
RECORD_OPEN = '<script type="application/json" id="ketaoutcomes-run">'
RECORD_CLOSE = "</script>"
#: What the template writes in place of the record's text (:func:`embed_record` replaces it).
RECORD_SLOT = "KETAOUTCOMES_RUN_RECORD"
#: Fields every record has (:func:`read_record` refuses one without them).
REQUIRED = {"record": int, "run_id": str, "study": str, "settings_id": str, "settings_json": str, "code_version": str,
            "data_fingerprint": str, "warehouse": str, "batches": list, "results": dict, "digest": str}


class RecordError(ValueError):
    """A page without a run record, or one whose record or content does not match its digest (one line)."""


def record_script(slot: str = RECORD_SLOT) -> str:
    """The record's element with ``slot`` as its text (what the template writes)."""
    return f"{RECORD_OPEN}{slot}{RECORD_CLOSE}"


# ---------------------------------------------------------------------------
# digests of the stored results
# ---------------------------------------------------------------------------

def float_bits(s: pl.Series) -> np.ndarray:
    """The bits of a Float32/Float64 series as unsigned integers (nulls as the bits of 0.0)."""
    values = s.fill_null(0.0).to_numpy()
    return values.view(np.uint32 if s.dtype == pl.Float32 else np.uint64)


def _order_key(s: pl.Series) -> pl.Series:
    """What a column sorts by in the canonical order: doubles by their bits (so that 0.0 and -0.0, or
    two NaNs, are never ties whose order depends on storage), other values as they are."""
    if s.dtype in (pl.Float32, pl.Float64):
        return pl.Series(s.name, float_bits(s)).set(s.is_null(), None)
    if s.dtype in (pl.Null, pl.Object) or isinstance(s.dtype, (pl.List, pl.Struct, pl.Array)):
        return s.cast(pl.String, strict=False) if s.dtype != pl.Object else pl.Series(s.name, [repr(v) for v in s])
    return s


def canonical_order(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame``'s rows sorted by every column (in name order; doubles by their bits, nulls last)."""
    if frame.height < 2 or not frame.width:
        return frame
    names = sorted(frame.columns)
    keys = pl.DataFrame([_order_key(frame[c]) for c in names])
    order = keys.with_row_index("_i").sort(names, nulls_last=True, maintain_order=True)["_i"]
    return frame[order]


def _value_bytes(s: pl.Series) -> tuple[str, bytes]:
    """(kind, bytes) of a column's non-null values in order (nulls as a fixed value)."""
    dtype = s.dtype
    if dtype in (pl.Float32, pl.Float64):
        return ("f4" if dtype == pl.Float32 else "f8"), float_bits(s).astype("<u4" if dtype == pl.Float32 else "<u8").tobytes()
    if dtype == pl.Boolean:
        return "b", s.fill_null(False).cast(pl.UInt8).to_numpy().tobytes()
    if dtype == pl.UInt64:
        return "u8", s.fill_null(0).to_numpy().astype("<u8").tobytes()
    if dtype.is_integer():
        return "i8", s.cast(pl.Int64).fill_null(0).to_numpy().astype("<i8").tobytes()
    if dtype.is_temporal():
        return f"t:{dtype}", s.to_physical().cast(pl.Int64).fill_null(0).to_numpy().astype("<i8").tobytes()
    if dtype != pl.String:
        s = _order_key(s).cast(pl.String, strict=False)
    text = s.fill_null("")
    lengths = text.str.len_bytes().cast(pl.UInt64).to_numpy().astype("<u8").tobytes()
    joined = text.str.join("")[0] if text.len() else ""
    return "s", lengths + (joined or "").encode("utf-8")


def column_digest(s: pl.Series) -> str:
    """SHA-256 (32 hex) of a column: its name, kind, which values are null and the values' bits."""
    kind, values = _value_bytes(s)
    h = hashlib.sha256(f"{s.name}\0{kind}\0{s.len()}\0".encode())
    h.update(np.packbits(s.is_null().to_numpy()).tobytes())
    h.update(values)
    return h.hexdigest()[:32]


def table_digest(frame: pl.DataFrame) -> dict[str, Any]:
    """``{"rows": n, "columns": {name: digest}}`` of a run's rows of one table, in the canonical order."""
    ordered = canonical_order(frame)
    return {"rows": frame.height, "columns": {c: column_digest(ordered[c]) for c in sorted(frame.columns)}}


def results_digest(results: Mapping[str, Any]) -> str:
    """One SHA-256 over the per-table digests (what the provenance section shows in words)."""
    return hashlib.sha256(_canonical(results).encode()).hexdigest()


# ---------------------------------------------------------------------------
# the record
# ---------------------------------------------------------------------------

def run_record(run: Mapping[str, Any], batches: pl.DataFrame, tables: Mapping[str, pl.DataFrame], *, study: str,
               warehouse: str) -> dict[str, Any]:
    """The record of analysis ``run`` (its row of ``results_runs``), without its digest.

    ``batches``: rows of ``meta_batches`` (at least those named in ``run["batches"]``); ``tables``: every
    ``ad_*`` / ``results_*`` table of the run without ``run_id`` / ``settings_id``
    (:func:`ketaoutcomes.report.load.run_tables`)."""
    ids = [b for b in str(run["batches"] or "").split(",") if b]
    by_id = {r["batch_id"]: r for r in batches.iter_rows(named=True)} if "batch_id" in batches.columns else {}
    return {
        "record": RECORD_VERSION,
        "run_id": run["run_id"], "study": study, "settings_id": run["settings_id"],
        "settings_json": run["settings_json"], "code_version": run["code_version"],
        "data_fingerprint": run["data_fingerprint"], "registries_fingerprint": run.get("registries_fingerprint"),
        "warehouse": warehouse,
        "batches": [{"batch_id": b, "load_seq": by_id.get(b, {}).get("load_seq"),
                     "table": by_id.get(b, {}).get("table_name"), "file": by_id.get(b, {}).get("source_file"),
                     "sha256": by_id.get(b, {}).get("file_sha256"), "rows": by_id.get(b, {}).get("rows_loaded")}
                    for b in ids],
        "results": {name: table_digest(frame) for name, frame in sorted(tables.items())},
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def _page_digest(page_with_slot: str, record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "digest"}
    return hashlib.sha256(page_with_slot.encode("utf-8") + b"\0" + _canonical(body).encode()).hexdigest()


def _script_text(record: Mapping[str, Any]) -> str:
    """The record as the text of a script element: JSON with ``<``, ``>`` and ``&`` escaped, so that no
    value can close the element."""
    return _canonical(record).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def embed_record(page: str, record: Mapping[str, Any]) -> str:
    """``page`` (rendered with :func:`record_script` in it) with ``record`` and its digest in that element."""
    slot = record_script()
    if page.count(slot) != 1:
        raise ValueError("the page has no (or more than one) run record slot; the template must write record_script()")
    full = {**record, "digest": _page_digest(page, record)}
    return page.replace(slot, record_script(_script_text(full)), 1)


def read_record(page: str, *, name: str = "the report") -> dict[str, Any]:
    """The run record of ``page`` after checking it: present once, complete, and the page and record as
    written (its digest).

    Raises
    ------
    RecordError
        One line naming ``name``: no record (a report rendered before records existed, or not a
        ketaoutcomes report), a record that is not JSON or lacks a field, or an edited page or record.
    """
    start = page.find(RECORD_OPEN)
    if start < 0:
        raise RecordError(f"{name} has no run record (a report rendered before reports carried one, or not a report of "
                          "ketaoutcomes); render it again with `python -m ketaoutcomes report` and reproduce that")
    if page.find(RECORD_OPEN, start + 1) >= 0:
        raise RecordError(f"{name} has more than one run record: it was edited (or two reports pasted together); "
                          "render it again with `python -m ketaoutcomes report`")
    body_start = start + len(RECORD_OPEN)
    end = page.find(RECORD_CLOSE, body_start)
    if end < 0:
        raise RecordError(f"{name}: its run record is not closed (a truncated or edited file); render it again with "
                          "`python -m ketaoutcomes report`")
    try:
        record = json.loads(page[body_start:end])
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise RecordError(f"{name}: its run record is not a JSON object (the file was edited or is damaged); render it "
                          "again with `python -m ketaoutcomes report`")
    missing = [k for k, kind in REQUIRED.items() if not isinstance(record.get(k), kind)]
    if missing:
        raise RecordError(f"{name}: its run record lacks {', '.join(missing)} (edited, or written by another version); "
                          "render it again with `python -m ketaoutcomes report`")
    if record["record"] != RECORD_VERSION:
        raise RecordError(f"{name}: its run record is of version {record['record']}, this code reads version "
                          f"{RECORD_VERSION}; reproduce it with the code that rendered it ({record['code_version']})")
    with_slot = page[:body_start] + RECORD_SLOT + page[end:]
    if _page_digest(with_slot, record) != record["digest"]:
        raise RecordError(f"{name} was edited after it was rendered (the page or its run record no longer matches the "
                          "record's digest), so what it shows is not known to be the run's; render it again with "
                          "`python -m ketaoutcomes report`, or reproduce the file as it was written")
    return record
