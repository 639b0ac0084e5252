"""Cohort, attrition, baseline and ADaM analysis datasets (pure functions).

:mod:`~ketaoutcomes.derive.adsl` (index course, new-user rule, baseline, analysis population),
:mod:`~ketaoutcomes.derive.events` (what every endpoint derivation shares, and their registry),
one module per endpoint family (:mod:`~ketaoutcomes.derive.response`,
:mod:`~ketaoutcomes.derive.relapse`, :mod:`~ketaoutcomes.derive.suicidal_ideation`),
:mod:`~ketaoutcomes.derive.adam` (putting them together), :mod:`~ketaoutcomes.derive.cnsr`
(censoring codes) and :mod:`~ketaoutcomes.derive.maintenance` (counting-process rows of the
relapse model). Every module of this package is imported here, so a derivation registered in
a new module is found without another edit.
"""

import importlib
import pkgutil

from ketaoutcomes.derive.adam import DeriveResult, derive_adtte, derive_all
from ketaoutcomes.derive.adsl import COVARIATE_COLUMNS, attrition_hint, derive_adsl
from ketaoutcomes.derive.cnsr import CNSR, cnsr_to_event
from ketaoutcomes.derive.events import ADTTE_COLUMNS, DERIVATIONS, derivation

for _module in pkgutil.iter_modules(__path__):  # registers every derivation
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ADTTE_COLUMNS", "CNSR", "COVARIATE_COLUMNS", "DERIVATIONS", "DeriveResult", "attrition_hint",
           "cnsr_to_event", "derivation", "derive_adsl", "derive_adtte", "derive_all"]
