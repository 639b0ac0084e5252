"""Cohort by arm: the analysis population, from ADSL (attrition: :mod:`.attrition`)."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import Fmt, Row, Table, has, mean_sd, median_iqr

__all__ = ["cohort_table"]


def _as_bool(s: pl.Series) -> pl.Series:
    if s.dtype == pl.Boolean:
        return s
    if s.dtype == pl.String:
        low = s.str.to_lowercase()
        return pl.Series(s.name, [None if v is None else v in ("true", "t", "1", "y", "yes") for v in low.to_list()],
                         dtype=pl.Boolean)
    return s.cast(pl.Boolean, strict=False)


def cohort_table(adsl: pl.DataFrame, arms: Arms, fmt: Fmt, instrument: str) -> tuple[Table | None, str]:
    """Baseline characteristics per arm of the courses with ANLFL = 'Y'; (None, reason) without any."""
    if not has(adsl, "ARM"):
        return None, "not estimable: no ADSL rows were passed to the report"
    pop = adsl.filter(pl.col("ANLFL") == "Y") if "ANLFL" in adsl.columns else adsl
    if pop.is_empty():
        return None, "not estimable: no courses in the analysis population (ANLFL = 'Y')"
    groups = [(arms.label(a), pop.filter(pl.col("ARM") == a)) for a in arms.sort(pop["ARM"].drop_nulls().to_list())]
    if pop["ARM"].null_count():
        groups.append(("(no arm)", pop.filter(pl.col("ARM").is_null())))
    groups.append(("All", pop))
    rows: list[Row] = []

    def add(label: str, fn: Callable[[pl.DataFrame], str], cls: str = "") -> None:
        rows.append(Row([label, *(fn(g) for _, g in groups)], cls))

    def known(g: pl.DataFrame, col: str) -> int:
        return g.height - g[col].null_count() if col in g.columns else 0

    def missing_row(col: str, label: str) -> None:
        if col in pop.columns and pop[col].null_count():
            add(label, lambda g: fmt.count(g[col].null_count()), "sub")

    add("Courses, n", lambda g: fmt.count(g.height))
    if "USUBJID" in pop.columns and pop["USUBJID"].n_unique() != pop.height:
        add("Patients, n", lambda g: fmt.count(g["USUBJID"].n_unique()))
    if "AGE" in pop.columns:
        add("Age, years, mean (SD)", lambda g: mean_sd(g["AGE"]))
        missing_row("AGE", "age missing, n")
    if "SEX" in pop.columns:
        add("Female, n (% of known)", lambda g: fmt.n_pct((g["SEX"] == "F").sum(), known(g, "SEX")))
        if (pop["SEX"] == "U").any():
            add("sex recorded as unknown, n", lambda g: fmt.count((g["SEX"] == "U").sum()), "sub")
        missing_row("SEX", "sex missing, n")
    if "PRIORFAIL" in pop.columns:
        add("Prior failed antidepressant trials, median [IQR]", lambda g: median_iqr(g["PRIORFAIL"]))
        missing_row("PRIORFAIL", "prior trials missing, n")
    if "DIAGNOSIS" in pop.columns:
        levels = (
            pop.filter(pl.col("DIAGNOSIS").is_not_null()).group_by("DIAGNOSIS").len()
            .sort(["len", "DIAGNOSIS"], descending=[True, False])["DIAGNOSIS"].to_list()
        )
        rows.append(Row(["Diagnosis, n (%)", *([""] * len(groups))], "group"))
        for lev in levels:
            add(str(lev).replace("_", " "), lambda g, lev=lev: fmt.n_pct((g["DIAGNOSIS"] == lev).sum(), g.height), "sub")
        missing_row("DIAGNOSIS", "diagnosis missing, n")
    if "BASE" in pop.columns:
        add(f"Baseline {instrument}, mean (SD)", lambda g: mean_sd(g["BASE"]))
    if "WEIGHT" in pop.columns:
        add("Weight, kg, mean (SD)", lambda g: mean_sd(g["WEIGHT"]))
        missing_row("WEIGHT", "weight missing, n")
    if "NSESS" in pop.columns:
        add("Sessions / visits per course, median [IQR]", lambda g: median_iqr(g["NSESS"]))
    if "NMAINT" in pop.columns:
        add("maintenance sessions, median [IQR]", lambda g: median_iqr(g["NMAINT"]), "sub")
    for col, label in (("CONSSRI", "Concomitant SSRI"), ("CONBENZO", "Concomitant benzodiazepine")):
        if col in pop.columns:
            add(f"{label}, n (% of known)",
                lambda g, col=col: fmt.n_pct(_as_bool(g[col]).fill_null(False).sum(), known(g, col)))
            missing_row(col, f"{label.lower()} not recorded, n")
    if "NPOST" in pop.columns:
        add(f"{instrument} ratings after the first dose, median [IQR]", lambda g: median_iqr(g["NPOST"]))
    table = Table(["", *(name for name, _ in groups)], rows)
    return table, ""
