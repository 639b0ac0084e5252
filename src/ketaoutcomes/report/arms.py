"""The arms of the report: which are shown, in what order, with what label and colour.

Labels come from the arm registries in force in the warehouse (``ReportData.arm_labels``,
read by :mod:`ketaoutcomes.report.load`); an arm without a label is shown by its code.
Order: the reference arm first, then the order of ``arm_labels``, then any other arm by
code. Each arm's look in every figure (colour, line style, marker) follows that order
(:func:`ketaoutcomes.report.figures.arm_style`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl

from ketaoutcomes.report import figures
from ketaoutcomes.report.format import has

__all__ = ["Arms", "arms_shown", "reference_arm"]


@dataclass(frozen=True)
class Arms:
    """The reference arm, the arms shown (in report order), and arm -> label."""

    reference: str | None
    order: tuple[str, ...]
    labels: Mapping[str, str]
    #: An arm shown is a ketamine arm (registry is_ketamine): the arms compared with the reference are
    #: "routes", and the report may speak of ketamine; else they are "arms" and it does not.
    ketamine: bool = True

    @property
    def route(self) -> str:
        """What an arm compared with the reference is called: "route" (of ketamine) or "arm"."""
        return "route" if self.ketamine else "arm"

    def compared_text(self) -> str:
        """The arms compared with the reference, in words: "ketamine routes", or their labels."""
        if self.ketamine:
            return "ketamine routes"
        others = [self.label(a) for a in self.order if a != self.reference]
        return ", ".join(others) if others else "the arms"

    def sort(self, arms: Iterable[str]) -> list[str]:
        reg = list(self.labels)

        def key(a: str) -> tuple[int, int, str]:
            if a == self.reference:
                return (0, 0, a)
            if a in reg:
                return (1, reg.index(a), a)
            return (2, 0, a)

        return sorted(set(arms), key=key)

    def label(self, arm: str) -> str:
        return self.labels.get(arm, arm)

    def style(self, arm: str) -> figures.ArmStyle:
        """The arm's colour, line style and marker: the reference arm's, or the route's by its place among
        the routes of :attr:`order`."""
        others = [a for a in self.order if a != self.reference]
        idx = others.index(arm) if arm in others else len(others)
        return figures.arm_style(idx, is_reference=arm == self.reference)


def reference_arm(provenance: Mapping | None, cox_fit: pl.DataFrame | None) -> str | None:
    """The reference arm: from the provenance (or its settings), else the Cox models' reference level."""
    prov = provenance or {}
    ref = prov.get("reference_arm")
    if not ref and isinstance(prov.get("settings"), Mapping):
        settings = prov["settings"]
        cohort = settings.get("cohort")  # grouped settings; flat ones (earlier runs) have it at the top
        ref = cohort.get("reference_arm") if isinstance(cohort, Mapping) else settings.get("reference_arm")
    if not ref and has(cox_fit, "reference_levels"):
        for levels in cox_fit["reference_levels"].drop_nulls().to_list():
            m = re.search(r"(?:^|,\s*)ARM=([^,]+)", levels)
            if m:
                ref = m.group(1).strip()
                break
    return str(ref) if ref else None


def arms_shown(reference: str | None, labels: Mapping[str, str], *, adsl: pl.DataFrame, adtte: pl.DataFrame,
               km: pl.DataFrame, km_median: pl.DataFrame, ketamine_arms: Iterable[str] | None = None) -> Arms:
    """The arms of the analysis population (ADSL, ANLFL = 'Y') and of the ADTTE and Kaplan-Meier rows;
    ``ketamine_arms`` (None: not known) says whether the report speaks of ketamine routes."""
    found: set[str] = set()
    if has(adsl, "ARM"):
        pop = adsl.filter(pl.col("ANLFL") == "Y") if "ANLFL" in adsl.columns else adsl
        found |= set(pop["ARM"].drop_nulls().to_list())
    for df, name in ((km, "group"), (km_median, "group"), (adtte, "ARM")):
        if has(df, name):
            found |= set(df[name].drop_nulls().cast(pl.String).to_list())
    tmp = Arms(reference, (), dict(labels))
    ketamine = True if ketamine_arms is None else bool(found & set(ketamine_arms))
    return Arms(reference, tuple(tmp.sort(found)), tmp.labels, ketamine)
