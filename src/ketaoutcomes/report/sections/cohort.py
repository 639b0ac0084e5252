"""Cohort by arm: the analysis population, from ADSL (attrition: :mod:`.attrition`).

A characteristic the export does not carry (no value for any analysed course: a trial without
age, sex, diagnosis or sessions) has no row; the caption names them. The study's own covariates
(``models.extra_covariates``, stored as JSON in ADSL's EXTRACOV) follow, as declared: a
categorical's levels in the declared order, a numeric's mean (SD)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import polars as pl

from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import Fmt, Row, Table, has, mean_sd, median_iqr

__all__ = ["cohort_table", "not_in_export"]


def _as_bool(s: pl.Series) -> pl.Series:
    if s.dtype == pl.Boolean:
        return s
    if s.dtype == pl.String:
        low = s.str.to_lowercase()
        return pl.Series(s.name, [None if v is None else v in ("true", "t", "1", "y", "yes") for v in low.to_list()],
                         dtype=pl.Boolean)
    return s.cast(pl.Boolean, strict=False)


def _extra_covariates(settings: Mapping | None) -> dict[str, dict]:
    """The study's own covariates as its settings (provenance) declare them: name -> declaration."""
    models = (settings or {}).get("models") if isinstance(settings, Mapping) else None
    extras = models.get("extra_covariates") if isinstance(models, Mapping) else None
    return dict(extras) if isinstance(extras, Mapping) else {}


def _with_extra_columns(pop: pl.DataFrame, extras: Mapping[str, Mapping]) -> pl.DataFrame:
    if not extras or "EXTRACOV" not in pop.columns:
        return pop
    cols = []
    for name, spec in extras.items():
        text = pl.col("EXTRACOV").str.json_path_match(f"$.{name}")
        cols.append((text.cast(pl.Float64, strict=False) if spec.get("type") == "numeric" else text).alias(f"_x_{name}"))
    return pop.with_columns(cols)


#: ADSL columns of the table that come from the export (label in the caption when it has none).
_FROM_EXPORT = {"AGE": "age", "SEX": "sex", "PRIORFAIL": "prior failed trials", "DIAGNOSIS": "diagnosis",
                "WEIGHT": "weight", "CONSSRI": "concomitant SSRI", "CONBENZO": "concomitant benzodiazepine"}


def not_in_export(adsl: pl.DataFrame) -> list[str]:
    """The characteristics the cohort table leaves out: no value for any analysed course, and (for
    sessions) no course with a session."""
    pop = adsl.filter(pl.col("ANLFL") == "Y") if "ANLFL" in adsl.columns else adsl
    out = [word for col, word in _FROM_EXPORT.items() if col in pop.columns and pop[col].null_count() == pop.height]
    if "NSESS" in pop.columns and pop.height and not (pop["NSESS"].fill_null(0) > 0).any():
        out.append("sessions")
    return out


def cohort_table(adsl: pl.DataFrame, arms: Arms, fmt: Fmt, instrument: str,
                 settings: Mapping | None = None) -> tuple[Table | None, str]:
    """Baseline characteristics per arm of the courses with ANLFL = 'Y'; (None, reason) without any.
    ``settings`` (the run's study settings) declare the study's own covariates, shown after the others."""
    if not has(adsl, "ARM"):
        return None, "not estimable: no ADSL rows were passed to the report"
    pop = adsl.filter(pl.col("ANLFL") == "Y") if "ANLFL" in adsl.columns else adsl
    if pop.is_empty():
        return None, "not estimable: no courses in the analysis population (ANLFL = 'Y')"
    extras = _extra_covariates(settings)
    pop = _with_extra_columns(pop, extras)
    absent = set(not_in_export(pop))
    pop = pop.drop([c for c, word in _FROM_EXPORT.items() if word in absent and c in pop.columns])
    if "sessions" in absent:
        pop = pop.drop([c for c in ("NSESS", "NMAINT") if c in pop.columns])
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
    for name, spec in extras.items():
        col = f"_x_{name}"
        if col not in pop.columns:
            continue
        label = str(spec.get("label") or name.replace("_", " "))
        if spec.get("type") == "numeric":
            add(f"{label}, mean (SD)", lambda g, col=col: mean_sd(g[col]))
        else:
            rows.append(Row([f"{label}, n (%)", *([""] * len(groups))], "group"))
            for lev in spec.get("levels") or []:
                add(str(lev), lambda g, lev=lev, col=col: fmt.n_pct((g[col] == lev).sum(), g.height), "sub")
    table = Table(["", *(name for name, _ in groups)], rows)
    return table, ""
