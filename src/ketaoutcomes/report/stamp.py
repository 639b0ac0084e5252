"""Is a rendered report still current? The render stamp beside it says what it was made from.

:func:`ketaoutcomes.pipeline.render_step` writes ``.<report>.render.json`` beside each report it
renders: the *render key* (a hash of everything the page is made from: the analysis run, the
validation shown, the data fingerprint, truth.json, the warehouse named in it, and the code and
templates that draw it, :func:`source_hash`), the SHA-256 of every file written (the HTML and its
settings.json), and the report's summary (:func:`ketaoutcomes.report.digest.key_results`). A later
render with the same key whose files are still there, byte for byte, is skipped
(:func:`current_stamp`): a deleted or edited report, another analysis, another validation, other
data or changed code re-renders it.

Light on purpose (no matplotlib): ``python -m ketaoutcomes report`` with nothing changed reads only
this and :mod:`ketaoutcomes.report.inputs`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["current_stamp", "file_sha256", "render_key", "source_hash", "stamp_path", "write_stamp"]

#: The package whose code and templates draw the report (all of it: labels, endpoints and
#: registries come from outside report/).
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Files of the package that can change a rendered report.
SOURCE_SUFFIXES = (".py", ".j2", ".csv", ".toml")
STAMP_VERSION = 1


@functools.cache
def source_hash() -> str:
    """SHA-256 (16 hex) of the package's source files (code, templates, registries), by path and content.

    Read once per process, as :func:`ketaoutcomes.step_records.code_version`: the code a process runs
    is the code it imported. Unlike the git commit, it also changes with an uncommitted edit."""
    h = hashlib.sha256()
    for path in sorted(p for p in PACKAGE_DIR.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()
                       and "__pycache__" not in p.parts):
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file's bytes; None when it is missing."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def render_key(parts: Mapping[str, Any]) -> str:
    """Hash of what a report is made from (``parts``: JSON-able), with :func:`source_hash`."""
    text = json.dumps({**parts, "source": source_hash(), "stamp_version": STAMP_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp_path(report: Path) -> Path:
    """``reports/.ketaoutcomes-<study>.html.render.json`` for ``reports/ketaoutcomes-<study>.html``."""
    return report.with_name(f".{report.name}.render.json")


def current_stamp(report: Path, key: str, files: Sequence[Path]) -> dict[str, Any] | None:
    """The stamp of ``report`` when it was rendered with ``key`` and every one of ``files`` is still
    as written then; None otherwise (missing, unreadable or stale stamp; a file deleted or changed)."""
    try:
        stamp = json.loads(stamp_path(report).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("key") != key:
        return None
    written = stamp.get("files")
    if not isinstance(written, dict) or set(written) != {Path(f).name for f in files}:
        return None
    if any(file_sha256(Path(f)) != written[Path(f).name] for f in files):
        return None
    return stamp


def write_stamp(report: Path, key: str, files: Sequence[Path], **extra: Any) -> Path:
    """Write the stamp of ``report`` (after ``files`` are written), atomically."""
    target = stamp_path(report)
    body = {"key": key, "files": {Path(f).name: file_sha256(Path(f)) for f in files}, **extra}
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(body, indent=1, sort_keys=True, default=str) + "\n")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
