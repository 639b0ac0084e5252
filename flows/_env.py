"""Environment defaults for Prefect, set *before* ``prefect`` is imported.

Prefect reads most of its settings from the environment when it is first
imported, so every module in ``flows/`` imports this one first (``flows/__init__``
does it for you). Only defaults are set (``os.environ.setdefault``): a value the
user exported wins.

* ``PREFECT_HOME`` lives in the project's git-ignored state folder
  ``<repo>/.state/prefect`` (SQLite database of the local server, profiles,
  local result storage, server pid file), never in ``~/.prefect``.
* No telemetry, no analytics and no promotional/remote UI content: the machines
  this runs on have no internet access.
* The temporary ("ephemeral") API server takes 6-11 s to start on a 2-core
  machine; Prefect's 20 s default is too tight, so it gets 120 s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["REPO_ROOT", "STATE_DIR", "PREFECT_DEFAULTS", "apply"]

#: The checkout: flows/ sits directly under it.
REPO_ROOT: Path = Path(__file__).resolve().parents[1]
#: Git-ignored folder for everything a run leaves behind besides data/ and reports/.
STATE_DIR: Path = REPO_ROOT / ".state"

PREFECT_DEFAULTS: dict[str, str] = {
    "PREFECT_HOME": str(STATE_DIR / "prefect"),
    # no usage telemetry (client side: DO_NOT_TRACK; server side: analytics)
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # the UI would otherwise show promotional content fetched from the web
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    # the temporary server needs 6-11 s on 2 cores (default timeout: 20 s)
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # never talk to Prefect Cloud by accident
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    # keep colour codes out of captured logs (CI, log files)
    "PREFECT_LOGGING_COLORS": "false",
}


def apply() -> None:
    """Set the defaults (idempotent) and create ``PREFECT_HOME``.

    Warns (on stderr) when Prefect was already imported: its settings were then
    read before these defaults existed.
    """
    if "prefect" in sys.modules and not os.environ.get("_KETAOUTCOMES_PREFECT_ENV"):
        print(
            "flows._env: prefect was imported before flows._env; "
            "PREFECT_HOME and the other defaults may not apply",
            file=sys.stderr,
        )
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ["_KETAOUTCOMES_PREFECT_ENV"] = "1"
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


apply()
