"""Prefect 3 flows around :mod:`ketaoutcomes.pipeline` (see dags.md).

The package itself runs without Prefect; these modules are thin wrappers.
Importing any of them first imports :mod:`flows._env`, which sets offline,
project-local Prefect defaults before Prefect itself is imported.
"""

from flows import _env as _env  # noqa: F401  (side effect: environment defaults)
