"""Fixtures for the Prefect flow tests.

* Puts the checkout on ``sys.path`` so ``import flows`` works however pytest
  was started (``flows/`` is not part of the installed package).
* Gives the tests their own throw-away ``PREFECT_HOME`` and then imports
  ``flows._env`` (offline defaults, long server start-up timeout) - both before
  anything imports ``prefect``.
* ``prefect_harness``: one temporary Prefect API server (own SQLite database)
  for the whole session; starting one costs 6-25 s on a 2-core machine.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

if "prefect" not in sys.modules:
    _home = tempfile.mkdtemp(prefix="ketaoutcomes-prefect-home-")
    atexit.register(shutil.rmtree, _home, True)
    os.environ["PREFECT_HOME"] = _home
    # a developer's exported server must not receive test runs
    os.environ.pop("PREFECT_API_URL", None)

import flows._env  # noqa: E402,F401  (before prefect)

#: Generous: the temporary server needs 6-11 s alone, far more on a busy machine.
SERVER_STARTUP_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API (``prefect_test_harness``) for the session; yields nothing."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=SERVER_STARTUP_TIMEOUT_S):
        yield
