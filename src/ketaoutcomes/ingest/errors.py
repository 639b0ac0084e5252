"""The error of ingest: a whole file (or the export) cannot be loaded."""

from __future__ import annotations

__all__ = ["IngestError"]


class IngestError(ValueError):
    """A whole file cannot be loaded; the message names the file and what to fix."""
