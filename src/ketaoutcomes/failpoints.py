"""Named points where a test can freeze a real process (to kill it there, kill -9), or make it
fail as a full disk would.

Set ``KETAOUTCOMES_FAILPOINT=<name>`` and ``KETAOUTCOMES_FAILPOINT_MARKER=<file>``:
when the process reaches that point it writes the marker file (its pid, renamed into place
whole) and sleeps, so the test knows where the process is when it kills it. With
``KETAOUTCOMES_FAILPOINT_ACTION=enospc`` it raises ``OSError(ENOSPC)`` there instead
(the error a write to a full disk gets). Unset (always, outside tests) a failpoint
costs one environment lookup.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

__all__ = ["failpoint", "NAMES", "ERROR_POINTS"]

#: Where the kill test stops a load: after reading and checking (nothing written yet),
#: half-way through the writes, after the staging copy is complete but before it is published.
NAMES = ("ingest.before_write", "ingest.mid_write", "warehouse.before_publish")
#: Where the disk-full tests fail a writer: after the published file is copied to staging,
#: and when the staging file is checkpointed (DuckDB writes its pages out).
ERROR_POINTS = ("warehouse.after_copy", "warehouse.checkpoint")


def failpoint(name: str) -> None:
    if os.environ.get("KETAOUTCOMES_FAILPOINT") != name:
        return
    marker = os.environ.get("KETAOUTCOMES_FAILPOINT_MARKER")
    if marker:  # written whole, then renamed into place: a test that sees the file reads the pid
        part = Path(f"{marker}.part")
        part.write_text(str(os.getpid()))
        part.replace(marker)
    if os.environ.get("KETAOUTCOMES_FAILPOINT_ACTION") == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    time.sleep(3600)
