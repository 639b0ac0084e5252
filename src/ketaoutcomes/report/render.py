"""The study report: result frames in, one self-contained HTML file out.

:func:`render_report` shapes the frames of a :class:`ReportData` into plain
tables (lists of formatted strings) and figures (PNG data URIs), and fills the
Jinja template ``templates/report.html.j2`` (autoescaped; inline CSS; no
external resource of any kind, so the file opens offline and prints).

Conventions, each visible in the report itself:

* confidence intervals at level 1 - ``alpha`` (``provenance["alpha"]``,
  default 0.05) wherever an estimate is shown;
* small-cell suppression (``suppress_small_cells``): counts of 1-10 in the
  cohort, attrition, follow-up, median, log-rank, model, safety, relapse and
  effect-modifier tables and the numbers at risk are shown as "<11", and the percentage next to a suppressed
  count is withheld. Zero is shown. Hazard ratios, medians, proportions and
  CIs are never suppressed. Primary suppression only (see the report footer);
* an empty frame, or an endpoint without rows, renders "not estimable: <reason>"
  with the reason taken from the analysis notes when one names it;
* nothing depends on the clock: the same data give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import polars as pl

from ketaoutcomes.models.matching import MATCHED_SHARE_FOR_ATT
from ketaoutcomes.report import figures

__all__ = ["EXTRA_RESULT_TABLES", "ReportData", "render_report", "ENDPOINT_INFO"]

ENDPOINT_ORDER = ("TTRESP", "TTREM", "TTRELAPS", "TTSIRES")
TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "report.html.j2"
SUPPRESSED = "<11"
DASH = "\u2014"
EN = "\u2013"
MINUS = "\u2212"


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows; see :func:`render_report`.

    Frames may be empty (``pl.DataFrame()``): the section then says why
    nothing is shown.
    """

    title: str
    adsl: pl.DataFrame
    attrition: pl.DataFrame
    adtte: pl.DataFrame
    km: pl.DataFrame
    km_median: pl.DataFrame
    logrank: pl.DataFrame
    cox: pl.DataFrame
    cox_fit: pl.DataFrame
    validation: pl.DataFrame
    batches: pl.DataFrame
    quarantine_summary: pl.DataFrame
    provenance: dict
    notes: tuple[str, ...] = ()
    truth: dict | None = None
    #: data-quality checks of the loads in force (table dq_checks): table_name, category, check_id,
    #: column_name, rule, rows_tested, rows_failing, pct_failing, threshold_pct, status, error, batch_id
    dq_checks: pl.DataFrame | None = None
    #: propensity-score weighted comparisons (results_ps): paramcd, target, comparator, weighting, truncation,
    #: n_target, n_comparator, n_dropped, n_truncated, ess_target, ess_comparator, equipoise,
    #: max_abs_smd_after, converged, diagnostics ('pass' | 'fail'), gate_reasons, notes
    ps: pl.DataFrame | None = None
    #: covariate balance (results_balance): paramcd, target, covariate, abs_smd_before, abs_smd_after, ...
    balance: pl.DataFrame | None = None
    #: proportional-hazards tests of the adjusted models (results_ph): paramcd, term, chi2, df, p_value, note, error
    ph: pl.DataFrame | None = None
    #: restricted mean time without the event (results_rmst): paramcd, group, horizon, rmst, se, lower, upper
    rmst: pl.DataFrame | None = None
    #: safety per session by route (results_safety): arm, event, sessions, patients, events, rate, lower, upper, note
    safety: pl.DataFrame | None = None
    #: mood trajectories (results_trajectory): arm, day, mean, lower, upper, converged
    trajectory: pl.DataFrame | None = None
    #: further result tables by warehouse name (weighted KM, discrete-time, relapse, effect
    #: modifiers; see :mod:`ketaoutcomes.report.adjusted` and :data:`EXTRA_RESULT_TABLES`)
    results: Mapping[str, pl.DataFrame] = field(default_factory=dict)


#: The result tables :mod:`ketaoutcomes.report.adjusted` reads from ``ReportData.results``.
EXTRA_RESULT_TABLES = (
    "results_km_weighted", "results_km_weighted_median", "results_discrete", "results_preference",
    "results_relapse_maintenance", "results_relapse_cif", "results_relapse_cif_at", "results_relapse_gray",
    "results_relapse_states", "results_modifiers_interactions", "results_modifiers_subgroups",
    "results_modifiers_ketamine",
)


@dataclass(frozen=True)
class EndpointInfo:
    name: str
    event: str
    origin: str
    hr_above_1: str
    hr_below_1: str
    favourable_above_1: bool


ENDPOINT_INFO = {
    "TTRESP": EndpointInfo("Time to response", "response", "first dose", "faster response", "slower response", True),
    "TTREM": EndpointInfo("Time to remission", "remission", "first dose", "faster remission", "slower remission", True),
    "TTRELAPS": EndpointInfo(
        "Time from response to relapse (responders only)", "relapse", "response", "earlier relapse", "later relapse", False
    ),
    "TTSIRES": EndpointInfo(
        "Time to resolution of suicidal ideation (ideation at baseline only)", "resolution", "first dose",
        "faster resolution", "slower resolution", True,
    ),
}


def _endpoint_info(paramcd: str) -> EndpointInfo:
    return ENDPOINT_INFO.get(paramcd, EndpointInfo(paramcd, "event", "time origin", "event sooner", "event later", True))


# ---------------------------------------------------------------------------
# Number formatting
# ---------------------------------------------------------------------------

def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _ok(x: Any) -> bool:
    """A finite number (not None, not NaN, not inf)."""
    return _is_num(x) and math.isfinite(float(x))


def fmt_int(n: Any) -> str:
    return f"{int(n):,}" if _ok(n) else DASH


def fmt_hr(x: Any) -> str:
    """Hazard ratio, 2 decimals (``<0.01`` below that; ``inf`` for an unbounded limit)."""
    if _is_num(x) and math.isinf(float(x)):
        return "\u221e" if x > 0 else "0"
    if not _ok(x):
        return DASH
    return "<0.01" if 0 <= x < 0.005 else f"{x:.2f}"


def fmt_hr_ci(hr: Any, lo: Any, hi: Any) -> str:
    if not _ok(hr):
        return DASH
    return f"{fmt_hr(hr)} ({fmt_hr(lo)}{EN}{fmt_hr(hi)})"


def fmt_p(p: Any) -> str:
    if not _ok(p):
        return DASH
    if p < 0.001:
        return "<0.001"
    if p > 0.999:
        return ">0.999"
    return f"{p:.3f}"


def p_stmt(p: Any) -> str:
    """'p = 0.042', 'p < 0.001' (for running text)."""
    f = fmt_p(p)
    return f"p {f[0]} {f[1:]}" if f[0] in "<>" else f"p = {f}"


def fmt_num(x: Any, decimals: int = 1) -> str:
    """A number; whole numbers without decimals (days, quantiles of counts)."""
    if not _ok(x):
        return DASH
    x = float(x)
    if abs(x - round(x)) < 1e-9:
        return f"{int(round(x)):,}"
    return f"{x:,.{decimals}f}"


def fmt_days_ci(med: Any, lo: Any, hi: Any) -> str:
    """Median time with CI; a missing value is 'not reached' (NR in the interval)."""
    if not _ok(med):
        return "not reached"
    lo_s = fmt_num(lo) if _ok(lo) else "NR"
    hi_s = fmt_num(hi) if _ok(hi) else "NR"
    return f"{fmt_num(med)} ({lo_s}{EN}{hi_s})"


@dataclass(frozen=True)
class Fmt:
    """Formatting that depends on the report options: suppression and CI level."""

    suppress: bool
    ci_label: str

    def count(self, n: Any) -> str:
        if not _ok(n):
            return DASH
        n = int(n)
        if self.suppress and 1 <= n <= 10:
            return SUPPRESSED
        return f"{n:,}"

    def n_pct(self, n: int, denom: int) -> str:
        c = self.count(n)
        if c == SUPPRESSED or denom <= 0:
            return c if denom > 0 else DASH
        return f"{c} ({100.0 * n / denom:.1f}%)"


# ---------------------------------------------------------------------------
# Plain tables for the template
# ---------------------------------------------------------------------------

@dataclass
class Row:
    cells: list[str]
    cls: str = ""


@dataclass
class Table:
    """Header, rows of formatted strings, and per-column alignment ('l' or 'r')."""

    columns: list[str]
    rows: list[Row]
    align: str = ""
    caption: str = ""
    wide: bool = False

    def __post_init__(self) -> None:
        if not self.align:
            self.align = "l" + "r" * (len(self.columns) - 1)

    def col_class(self, i: int) -> str:
        return "num" if i < len(self.align) and self.align[i] == "r" else "txt"


def _has(df: pl.DataFrame | None, *cols: str) -> bool:
    return df is not None and df.height > 0 and all(c in df.columns for c in cols)


def _col(df: pl.DataFrame, name: str) -> pl.Series | None:
    return df[name] if name in df.columns else None


# ---------------------------------------------------------------------------
# Arms: order, labels, colours
# ---------------------------------------------------------------------------

def _registry_arms() -> dict[str, str]:
    """arm -> label from the default registry (order = registry order); {} if unreadable."""
    try:
        from ketaoutcomes.registries import load_registries

        return {k: a.label for k, a in load_registries().arms.items()}
    except Exception:  # noqa: BLE001 - labels are cosmetic; fall back to the arm codes
        return {}


@dataclass(frozen=True)
class Arms:
    reference: str | None
    order: tuple[str, ...]
    labels: Mapping[str, str]

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

    def style(self, arm: str) -> tuple[str, str]:
        others = [a for a in self.order if a != self.reference]
        idx = others.index(arm) if arm in others else len(others)
        return figures.arm_style(idx, is_reference=arm == self.reference)


def _reference_arm(data: ReportData) -> str | None:
    prov = data.provenance or {}
    ref = prov.get("reference_arm")
    if not ref and isinstance(prov.get("settings"), Mapping):
        ref = prov["settings"].get("reference_arm")
    if not ref and _has(data.cox_fit, "reference_levels"):
        for levels in data.cox_fit["reference_levels"].drop_nulls().to_list():
            m = re.search(r"(?:^|,\s*)ARM=([^,]+)", levels)
            if m:
                ref = m.group(1).strip()
                break
    return str(ref) if ref else None


def _arms(data: ReportData) -> Arms:
    found: set[str] = set()
    if _has(data.adsl, "ARM"):
        pop = data.adsl.filter(pl.col("ANLFL") == "Y") if "ANLFL" in data.adsl.columns else data.adsl
        found |= set(pop["ARM"].drop_nulls().to_list())
    for df, col in ((data.km, "group"), (data.km_median, "group"), (data.adtte, "ARM")):
        if _has(df, col):
            found |= set(df[col].drop_nulls().cast(pl.String).to_list())
    ref = _reference_arm(data)
    tmp = Arms(ref, (), _registry_arms())
    return Arms(ref, tuple(tmp.sort(found)), tmp.labels)


# ---------------------------------------------------------------------------
# Notes
# ---------------------------------------------------------------------------

def _notes_for(notes: Sequence[str], paramcd: str) -> list[str]:
    return [n for n in notes if n.startswith(f"{paramcd}:")]


def _strip_code(note: str, paramcd: str) -> str:
    return note[len(paramcd) + 1:].strip() if note.startswith(f"{paramcd}:") else note


def _arm_reason(notes: Sequence[str], paramcd: str, arm: str) -> str | None:
    pat = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(arm)}(?![A-Za-z0-9_])")
    for n in _notes_for(notes, paramcd):
        if pat.search(n):
            return _strip_code(n, paramcd)
    return None


# ---------------------------------------------------------------------------
# Cohort description
# ---------------------------------------------------------------------------

def _as_bool(s: pl.Series) -> pl.Series:
    if s.dtype == pl.Boolean:
        return s
    if s.dtype == pl.String:
        low = s.str.to_lowercase()
        return pl.Series(s.name, [None if v is None else v in ("true", "t", "1", "y", "yes") for v in low.to_list()],
                         dtype=pl.Boolean)
    return s.cast(pl.Boolean, strict=False)


def _mean_sd(s: pl.Series | None) -> str:
    if s is None:
        return DASH
    v = s.drop_nulls().cast(pl.Float64, strict=False).drop_nulls()
    if v.len() == 0:
        return DASH
    if v.len() == 1:
        return f"{v.mean():.1f}"
    return f"{v.mean():.1f} ({v.std():.1f})"


def _median_iqr(s: pl.Series | None) -> str:
    if s is None:
        return DASH
    v = s.drop_nulls().cast(pl.Float64, strict=False).drop_nulls().to_numpy()
    if v.size == 0:
        return DASH
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])  # numpy 'linear' = R type 7
    return f"{fmt_num(med)} [{fmt_num(q1)}{EN}{fmt_num(q3)}]"


def _cohort(data: ReportData, arms: Arms, fmt: Fmt, instrument: str) -> tuple[Table | None, str]:
    adsl = data.adsl
    if not _has(adsl, "ARM"):
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
        add("Age, years, mean (SD)", lambda g: _mean_sd(g["AGE"]))
        missing_row("AGE", "age missing, n")
    if "SEX" in pop.columns:
        add("Female, n (% of known)", lambda g: fmt.n_pct((g["SEX"] == "F").sum(), known(g, "SEX")))
        if (pop["SEX"] == "U").any():
            add("sex recorded as unknown, n", lambda g: fmt.count((g["SEX"] == "U").sum()), "sub")
        missing_row("SEX", "sex missing, n")
    if "PRIORFAIL" in pop.columns:
        add("Prior failed antidepressant trials, median [IQR]", lambda g: _median_iqr(g["PRIORFAIL"]))
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
        add(f"Baseline {instrument}, mean (SD)", lambda g: _mean_sd(g["BASE"]))
    if "WEIGHT" in pop.columns:
        add("Weight, kg, mean (SD)", lambda g: _mean_sd(g["WEIGHT"]))
        missing_row("WEIGHT", "weight missing, n")
    if "NSESS" in pop.columns:
        add("Sessions / visits per course, median [IQR]", lambda g: _median_iqr(g["NSESS"]))
    if "NMAINT" in pop.columns:
        add("maintenance sessions, median [IQR]", lambda g: _median_iqr(g["NMAINT"]), "sub")
    for col, label in (("CONSSRI", "Concomitant SSRI"), ("CONBENZO", "Concomitant benzodiazepine")):
        if col in pop.columns:
            add(f"{label}, n (% of known)",
                lambda g, col=col: fmt.n_pct(_as_bool(g[col]).fill_null(False).sum(), known(g, col)))
            missing_row(col, f"{label.lower()} not recorded, n")
    if "NPOST" in pop.columns:
        add(f"{instrument} ratings after the first dose, median [IQR]", lambda g: _median_iqr(g["NPOST"]))
    table = Table(["", *(name for name, _ in groups)], rows)
    return table, ""


# ---------------------------------------------------------------------------
# Attrition
# ---------------------------------------------------------------------------

def _attrition(data: ReportData, arms: Arms, fmt: Fmt) -> tuple[Table | None, str]:
    a = data.attrition
    if not _has(a, "step", "rule", "arm", "n_remaining"):
        return None, "not available: no attrition table was passed to the report"
    arm_cols = arms.sort(x for x in a["arm"].drop_nulls().unique().to_list() if x != "(all)")
    cols = [*arm_cols, "(all)"]
    steps = a.select("step", "rule").unique().sort("step", "rule")
    cells = {(r["step"], r["rule"], r["arm"]): r for r in a.iter_rows(named=True)}
    rows = []
    for step, rule in steps.iter_rows():
        out = [f"{step}. {rule}"]
        for arm in cols:
            r = cells.get((step, rule, arm))
            if r is None:
                out.append("")
                continue
            cell = fmt.count(r["n_remaining"])
            ex = r.get("n_excluded")
            if _ok(ex):
                cell += f"\n({MINUS}{fmt.count(ex)})" if ex else "\n(0)"
            out.append(cell)
        rows.append(Row(out))
    return Table(["Rule", *(arms.label(x) if x != "(all)" else "All" for x in cols)], rows), ""


# ---------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------

def _np(s: pl.Series | None, n: int) -> np.ndarray:
    if s is None:
        return np.full(n, np.nan)
    return s.cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy().astype(float)


@dataclass
class Endpoint:
    paramcd: str
    anchor: str
    title: str
    param: str
    info: EndpointInfo
    empty_reason: str = ""
    followup: Table | None = None
    km_img: str = ""
    km_caption: str = ""
    at_risk: Table | None = None
    cum_at: Table | None = None
    medians: Table | None = None
    logrank_text: str = ""
    logrank: Table | None = None
    cox: Table | None = None
    cox_reason: str = ""
    cox_interpretation: str = ""
    cox_fit: Table | None = None
    forest_img: str = ""
    model_notes: list[str] = field(default_factory=list)


def _endpoint_codes(data: ReportData) -> list[str]:
    extra: set[str] = set()
    for df, col in ((data.adtte, "PARAMCD"), (data.km, "paramcd"), (data.cox, "paramcd"), (data.km_median, "paramcd")):
        if _has(df, col):
            extra |= set(df[col].drop_nulls().to_list())
    return [*ENDPOINT_ORDER, *sorted(extra - set(ENDPOINT_ORDER))]


def _followup_table(adtte: pl.DataFrame, arms: Arms, fmt: Fmt, info: EndpointInfo) -> Table | None:
    if not _has(adtte, "ARM", "CNSR"):
        return None
    arm_list = arms.sort(adtte["ARM"].drop_nulls().to_list())
    groups = [(arms.label(a), adtte.filter(pl.col("ARM") == a)) for a in arm_list] + [("All", adtte)]
    first = "Responders (courses)" if info.origin == "response" else "Courses"
    rows = [Row([first, *(fmt.count(g.height) for _, g in groups)])]
    rows.append(Row([f"Events ({info.event})", *(fmt.n_pct((g["CNSR"] == 0).sum(), g.height) for _, g in groups)]))
    desc = {}
    if "CNSDTDSC" in adtte.columns:
        for code, d in adtte.filter(pl.col("CNSR") > 0).select("CNSR", "CNSDTDSC").unique().sort("CNSR", "CNSDTDSC").iter_rows():
            desc.setdefault(code, d)
    for code in sorted(adtte.filter(pl.col("CNSR") > 0)["CNSR"].unique().to_list()):
        label = f"Censored ({code}): {desc.get(code) or 'censored'}"
        rows.append(Row([label, *(fmt.n_pct((g["CNSR"] == code).sum(), g.height) for _, g in groups)], "sub"))
    if "AVAL" in adtte.columns:
        rows.append(Row(["Follow-up, days, median [IQR]", *(_median_iqr(g["AVAL"]) for _, g in groups)]))
    return Table(["", *(n for n, _ in groups)], rows)


def _km_section(ep: Endpoint, km: pl.DataFrame, adtte: pl.DataFrame, arms: Arms, fmt: Fmt) -> None:
    arm_list = arms.sort(km["group"].drop_nulls().cast(pl.String).to_list())
    tmax = float(km["time"].max() or 0.0)
    if _has(adtte, "AVAL"):
        tmax = max(tmax, float(adtte["AVAL"].max() or 0.0))
    ticks = figures.time_ticks(tmax)
    curves, at_risk_rows, cum_rows = [], [], []
    for arm in arm_list:
        k = km.filter(pl.col("group").cast(pl.String) == arm).sort("time")
        n = k.height
        t = _np(k["time"], n)
        s = _np(_col(k, "survival"), n)
        lo, hi = _np(_col(k, "lower"), n), _np(_col(k, "upper"), n)
        cens = t[_np(_col(k, "n_censor"), n) > 0] if "n_censor" in k.columns else np.array([])
        color, ls = arms.style(arm)
        total = None
        a_arm = adtte.filter(pl.col("ARM") == arm) if _has(adtte, "ARM", "AVAL") else None
        if a_arm is not None and a_arm.height:
            total = a_arm.height
        elif "n_risk" in k.columns and n:
            total = int(k["n_risk"][0])
        curves.append(figures.KMCurve(
            label=f"{arms.label(arm)} (n {fmt.count(total)})" if total is not None else arms.label(arm),
            color=color, linestyle=ls, time=t, cum=1 - s, lower=1 - hi, upper=1 - lo, censor_times=cens,
        ))
        # numbers at risk: courses still followed at day t (AVAL >= t), from ADTTE when it is there
        risk_cells, cum_cells = [], []
        for tick in ticks:
            if a_arm is not None and a_arm.height:
                nr = int((a_arm["AVAL"] >= tick).sum())
            elif "n_risk" in k.columns:
                later = k.filter(pl.col("time") >= tick)
                nr = int(later["n_risk"][0]) if later.height else 0
            else:
                nr = None
            risk_cells.append(fmt.count(nr))
            i = int(np.searchsorted(t, tick, side="right")) - 1
            if nr == 0 and tick > 0:
                cum_cells.append(DASH)
            elif i < 0:
                cum_cells.append("0%")
            else:
                c, cl, cu = 1 - s[i], 1 - hi[i], 1 - lo[i]
                ci = (f" ({100 * cl:.0f}{EN}{100 * cu:.0f})"
                      if math.isfinite(cl) and math.isfinite(cu) and cu - cl > 1e-12 else "")
                cum_cells.append(f"{100 * c:.0f}%{ci}" if math.isfinite(c) else DASH)
        at_risk_rows.append(Row([arms.label(arm), *risk_cells]))
        cum_rows.append(Row([arms.label(arm), *cum_cells]))
    day_cols = [f"day {fmt_num(x)}" for x in ticks]
    ep.km_img = figures.km_figure(
        curves, xlabel=f"Days since {ep.info.origin}", ylabel=f"Cumulative proportion with {ep.info.event}",
        ticks=ticks, band_label=fmt.ci_label,
    )
    ep.km_caption = (
        f"Kaplan-Meier estimate of the cumulative proportion with {ep.info.event} (1 \u2212 survival) per arm, "
        f"with {fmt.ci_label} bands; ticks on a curve mark censored follow-up. Time is counted in days from the "
        f"{ep.info.origin} to the rating visit at which the {ep.info.event} was seen."
    )
    ep.at_risk = Table(["Number at risk", *day_cols], at_risk_rows)
    ep.cum_at = Table([f"Cumulative % with {ep.info.event} ({fmt.ci_label})", *day_cols], cum_rows)


def _median_table(med: pl.DataFrame, arms: Arms, fmt: Fmt, info: EndpointInfo) -> Table | None:
    if not _has(med, "group"):
        return None
    rows = []
    by_arm = {str(r["group"]): r for r in med.iter_rows(named=True)}
    for arm in arms.sort(by_arm):
        r = by_arm[arm]
        rows.append(Row([
            arms.label(arm), fmt.count(r.get("n")), fmt.count(r.get("events")),
            fmt_days_ci(r.get("median"), r.get("median_lower"), r.get("median_upper")),
        ]))
    return Table(["Arm", "Courses", "Events", f"Median days to {info.event} ({fmt.ci_label})"], rows)


def _parse_groups(raw: Any) -> list[dict]:
    """The log-rank ``groups`` column: a JSON frame (rows, or polars' column layout)."""
    if raw is None:
        return []
    try:
        obj = json.loads(raw) if isinstance(raw, str) else raw
    except (TypeError, ValueError):
        return []
    if isinstance(obj, list) and all(isinstance(r, Mapping) for r in obj):
        return [dict(r) for r in obj]
    if isinstance(obj, Mapping):
        if "columns" in obj and isinstance(obj["columns"], list):  # polars' serialised layout
            cols = {c.get("name"): c.get("values", []) for c in obj["columns"] if isinstance(c, Mapping)}
        else:
            cols = {k: v for k, v in obj.items() if isinstance(v, list)}
        n = max((len(v) for v in cols.values()), default=0)
        return [{k: (v[i] if i < len(v) else None) for k, v in cols.items()} for i in range(n)]
    return []


def _logrank(ep: Endpoint, lr: pl.DataFrame, arms: Arms, fmt: Fmt) -> None:
    if not _has(lr, "chi2"):
        ep.logrank_text = "not estimable: the log-rank test needs at least two arms with courses"
        return
    r = lr.row(0, named=True)
    df = r.get("df")
    ep.logrank_text = (
        f"Log-rank test across all arms: \u03c7\u00b2 = {fmt_num(r.get('chi2'), 2)} on "
        f"{fmt_int(df)} df, {p_stmt(r.get('p_value'))}. "
        "It asks whether any arm differs (unadjusted, so confounded like the naive HR); it does not say which."
    )
    groups = _parse_groups(r.get("groups"))
    if not groups:
        return
    by_arm = {str(g.get("group")): g for g in groups}
    rows = []
    for arm in arms.sort(by_arm):
        g = by_arm[arm]
        o, e = g.get("observed"), g.get("expected")
        rows.append(Row([
            arms.label(arm), fmt.count(g.get("n")), fmt.count(o), fmt_num(e, 1),
            f"{o / e:.2f}" if _ok(o) and _ok(e) and e > 0 else DASH,
        ]))
    ep.logrank = Table(["Arm", "Courses", "Observed events", "Expected events", "O/E"], rows)


_TERM = re.compile(r"^(?P<var>[^\[\]]+)\[(?:T\.)?(?P<level>.*)\]$")
_COVARIATE_LABELS = {
    "AGE": "Age (per year)",
    "BASE": "Baseline score (per point)",
    "PRIORFAIL": "Prior failed trials (per trial)",
    "WEIGHT": "Weight (per kg)",
    "SEX": "Sex",
    "DIAGNOSIS": "Diagnosis",
    "SITEID": "Site",
}


def _ref_levels(fit_row: Mapping | None) -> dict[str, str]:
    if not fit_row or not fit_row.get("reference_levels"):
        return {}
    out = {}
    for part in str(fit_row["reference_levels"]).split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _term_label(term: str, arms: Arms, refs: Mapping[str, str]) -> tuple[str, str | None]:
    """(label, arm or None) of a Cox term."""
    m = _TERM.match(term)
    if m and m["var"] == "ARM":
        ref = refs.get("ARM", arms.reference)
        return f"{arms.label(m['level'])} vs {arms.label(ref) if ref else 'reference'}", m["level"]
    if m:
        var, level = m["var"], m["level"]
        ref = refs.get(var)
        base = _COVARIATE_LABELS.get(var, var)
        return f"{base}: {level.replace('_', ' ')}" + (f" vs {ref.replace('_', ' ')}" if ref else ""), None
    return _COVARIATE_LABELS.get(term, term), None


def _cox(ep: Endpoint, cox: pl.DataFrame, fit: pl.DataFrame, arms: Arms, fmt: Fmt, notes: Sequence[str]) -> None:
    p = ep.paramcd
    reasons = [_strip_code(n, p) for n in _notes_for(notes, p)
               if re.search(r"hazard ratio|cox", n, re.IGNORECASE)]
    if not _has(cox, "term", "hr"):
        ep.cox_reason = "not estimable: " + ("; ".join(reasons) if reasons else
                                             "no Cox model was fitted for this endpoint (too few events or arms)")
        return
    models = {m: cox.filter(pl.col("model") == m) for m in ("adjusted", "naive")} if "model" in cox.columns \
        else {"adjusted": cox, "naive": cox.clear()}
    fits = {r["model"]: r for r in fit.iter_rows(named=True)} if _has(fit, "model") else {}
    refs = _ref_levels(fits.get("adjusted") or fits.get("naive"))
    by_term = {m: {r["term"]: r for r in f.iter_rows(named=True)} for m, f in models.items()}
    terms = []
    for m in ("adjusted", "naive"):
        for t in models[m]["term"].to_list():
            if t not in terms:
                terms.append(t)
    arm_terms = {t: _term_label(t, arms, refs)[1] for t in terms}
    ordered = [t for a in arms.sort(a for a in arm_terms.values() if a) for t in terms if arm_terms[t] == a]
    ordered += [t for t in terms if arm_terms[t] is None]
    rows, forest = [], []
    for t in ordered:
        label, arm = _term_label(t, arms, refs)
        cells = [label]
        ests = {}
        for m in ("adjusted", "naive"):
            r = by_term[m].get(t)
            if r is None:
                cells += [DASH, DASH]
                ests[m] = None
            else:
                cells += [fmt_hr_ci(r.get("hr"), r.get("hr_lower"), r.get("hr_upper")), fmt_p(r.get("p_value"))]
                ests[m] = (r.get("hr"), r.get("hr_lower"), r.get("hr_upper")) if _ok(r.get("hr")) else None
        rows.append(Row(cells, "arm" if arm else ""))
        if arm:
            forest.append(figures.ForestRow(arms.label(arm), arms.style(arm)[0], ests["adjusted"], ests["naive"]))
    # arms with KM rows but no hazard ratio: say so in the table rather than leave them out silently
    ref = refs.get("ARM", arms.reference)
    for arm in arms.order:
        if arm == ref or arm in arm_terms.values():
            continue
        why = _arm_reason(notes, p, arm) or "no hazard ratio in the model output"
        rows.append(Row([f"{arms.label(arm)} vs {arms.label(ref) if ref else 'reference'}",
                         f"not estimable: {why}", "", "", ""], "arm ne"))
    ep.cox = Table(["Term", f"Adjusted HR ({fmt.ci_label})", "p", f"Naive HR ({fmt.ci_label})", "p"], rows)
    ref_label = arms.label(ref) if ref else "the reference arm"
    good, bad = ("favours the route", "favours " + ref_label)
    above, below = (good, bad) if ep.info.favourable_above_1 else (bad, good)
    ep.cox_interpretation = (
        f"Hazard ratio versus {ref_label}: above 1 = {ep.info.hr_above_1} ({above}), "
        f"below 1 = {ep.info.hr_below_1} ({below}). "
        "Covariate rows are from the adjusted model (per unit, or versus the reference level)."
    )
    if forest:
        ep.forest_img = figures.forest_figure(
            forest, xlabel=f"Hazard ratio vs {ref_label} (log scale), {fmt.ci_label}",
            left_note=ep.info.hr_below_1, right_note=ep.info.hr_above_1,
        )
    if fits:
        fit_rows = []
        present = [m for m in ("adjusted", "naive") if m in fits] + sorted(m for m in fits if m not in ("adjusted", "naive"))

        def line(label: str, fn: Callable[[Mapping], str]) -> None:
            fit_rows.append(Row([label, *(fn(fits[m]) for m in present)]))

        line("Courses in the model", lambda f: fmt.count(f.get("n")))
        line("Events", lambda f: fmt.count(f.get("n_events")))
        line("Courses dropped (missing covariates)", lambda f: fmt.count(f.get("n_dropped")))
        line("Covariates", lambda f: str(f.get("covariates") or DASH))
        line("Strata", lambda f: str(f.get("strata") or "none"))
        line("Reference levels", lambda f: str(f.get("reference_levels") or DASH))
        line("Likelihood-ratio test",
             lambda f: f"\u03c7\u00b2 = {fmt_num(f.get('lr_chi2'), 2)}, df {fmt_int(f.get('lr_df'))}, {p_stmt(f.get('lr_p'))}"
             if _ok(f.get("lr_chi2")) else DASH)
        line("Concordance", lambda f: fmt_num(f.get("concordance"), 3) if _ok(f.get("concordance")) else DASH)
        line("Converged", lambda f: {True: "yes", False: "NO"}.get(f.get("converged"), DASH))
        ep.cox_fit = Table(["", *present], fit_rows, align="l" * (1 + len(present)))
        for m in present:
            f = fits[m]
            if f.get("converged") is False:
                ep.model_notes.append(f"{m} model did not converge: its estimates are not reliable.")
            if f.get("notes"):
                ep.model_notes.append(f"{m} model: {f['notes']}")


def _endpoint(paramcd: str, data: ReportData, arms: Arms, fmt: Fmt) -> Endpoint:
    info = _endpoint_info(paramcd)
    adtte = data.adtte.filter(pl.col("PARAMCD") == paramcd) if _has(data.adtte, "PARAMCD") else pl.DataFrame()
    param = adtte["PARAM"].drop_nulls()[0] if _has(adtte, "PARAM") and adtte["PARAM"].drop_nulls().len() else ""
    ep = Endpoint(paramcd, f"ep-{paramcd.lower()}", info.name, param, info)
    notes = list(data.notes)
    ep.model_notes = [_strip_code(n, paramcd) for n in _notes_for(notes, paramcd)]
    km = data.km.filter(pl.col("paramcd") == paramcd) if _has(data.km, "paramcd", "group", "time") else pl.DataFrame()
    if adtte.is_empty() and km.is_empty():
        why = [_strip_code(n, paramcd) for n in _notes_for(notes, paramcd)]
        if not why:
            why = ["no responders, so no relapse follow-up" if paramcd == "TTRELAPS"
                   else "no courses in the analysis population have this endpoint"]
        ep.empty_reason = "not estimable: " + "; ".join(why)
        return ep
    ep.followup = _followup_table(adtte, arms, fmt, info)
    if km.is_empty():
        ep.km_caption = "not estimable: no Kaplan-Meier estimates for this endpoint"
    else:
        _km_section(ep, km, adtte, arms, fmt)
    med = data.km_median.filter(pl.col("paramcd") == paramcd) if _has(data.km_median, "paramcd") else pl.DataFrame()
    ep.medians = _median_table(med, arms, fmt, info)
    lr = data.logrank.filter(pl.col("paramcd") == paramcd) if _has(data.logrank, "paramcd") else pl.DataFrame()
    _logrank(ep, lr, arms, fmt)
    cox = data.cox.filter(pl.col("paramcd") == paramcd) if _has(data.cox, "paramcd") else pl.DataFrame()
    fit = data.cox_fit.filter(pl.col("paramcd") == paramcd) if _has(data.cox_fit, "paramcd") else pl.DataFrame()
    _cox(ep, cox, fit, arms, fmt, notes)
    return ep


# ---------------------------------------------------------------------------
# Key results
# ---------------------------------------------------------------------------

def _key_results(data: ReportData, arms: Arms, fmt: Fmt) -> tuple[Table | None, str]:
    p = "TTRESP"
    med = data.km_median.filter(pl.col("paramcd") == p) if _has(data.km_median, "paramcd", "group") else pl.DataFrame()
    cox = data.cox.filter(pl.col("paramcd") == p) if _has(data.cox, "paramcd", "term", "hr") else pl.DataFrame()
    if med.is_empty() and cox.is_empty():
        why = [_strip_code(n, p) for n in _notes_for(data.notes, p)] or ["no time-to-response results"]
        return None, "not estimable: " + "; ".join(why)
    meds = {str(r["group"]): r for r in med.iter_rows(named=True)}
    est: dict[tuple[str, str], Mapping] = {}
    for r in cox.iter_rows(named=True):
        m = _TERM.match(r["term"] or "")
        if m and m["var"] == "ARM":
            est[(r.get("model", "adjusted"), m["level"])] = r
    cox_reason = ""
    if cox.is_empty():
        reasons = [_strip_code(n, p) for n in _notes_for(data.notes, p) if re.search(r"hazard ratio|cox", n, re.I)]
        cox_reason = "; ".join(reasons) or "no Cox model"
    weighted = _weighted_estimates(data, p)
    rows = []
    for arm in arms.sort([*meds, *(a for _, a in est)]):
        r = meds.get(arm, {})
        wcell = "1 (reference)" if arm == arms.reference else _weighted_cell(weighted.get(arm))
        if arm == arms.reference:
            adj, naive, pval = "1 (reference)", "1 (reference)", ""
        elif ("adjusted", arm) in est or ("naive", arm) in est:
            a, n = est.get(("adjusted", arm), {}), est.get(("naive", arm), {})
            adj = fmt_hr_ci(a.get("hr"), a.get("hr_lower"), a.get("hr_upper")) if a else DASH
            pval = fmt_p(a.get("p_value")) if a else DASH
            naive = fmt_hr_ci(n.get("hr"), n.get("hr_lower"), n.get("hr_upper")) if n else DASH
        else:
            why = cox_reason or _arm_reason(data.notes, p, arm) or "no hazard ratio in the model output"
            adj, pval, naive = f"not estimable: {why}", "", ""
        rows.append(Row([
            arms.label(arm), fmt.count(r.get("n")), fmt.count(r.get("events")),
            fmt_days_ci(r.get("median"), r.get("median_lower"), r.get("median_upper")) if r else DASH,
            wcell, adj, pval, naive,
        ], "ref" if arm == arms.reference else ""))
    return Table(
        ["Arm", "Courses", "Responses", f"Median days to response ({fmt.ci_label})",
         f"PS-weighted HR ({fmt.ci_label}), diagnostics-gated", f"Regression-adjusted HR ({fmt.ci_label})",
         "p (adjusted)", f"Naive HR ({fmt.ci_label})"],
        rows,
    ), ""


def _weighted_estimates(data: ReportData, paramcd: str) -> dict[str, Mapping]:
    """arm -> the propensity-weighted Cox row (with its diagnostics verdict) for one endpoint."""
    if not _has(data.cox, "paramcd", "term", "hr", "diagnostics"):
        return {}
    out = {}
    for r in data.cox.filter((pl.col("paramcd") == paramcd) & pl.col("diagnostics").is_not_null()).iter_rows(named=True):
        m = _TERM.match(r["term"] or "")
        if m and m["var"] == "ARM":
            out[m["level"]] = r
    return out


def _weighted_cell(r: Mapping | None) -> str:
    """A weighted HR is shown only when its diagnostics passed: otherwise it is withheld with the reasons."""
    if r is None:
        return "not estimated"
    if r.get("diagnostics") != "pass":
        return f"withheld: fails diagnostics ({r.get('gate_reasons') or 'unknown reason'})"
    return fmt_hr_ci(r.get("hr"), r.get("hr_lower"), r.get("hr_upper"))


def _weighting(data: ReportData, arms: Arms) -> dict[str, Any]:
    """The propensity-weighted comparison: diagnostics per endpoint and route, and a love plot."""
    ps = data.ps
    if not _has(ps, "paramcd", "target", "diagnostics"):
        return {"tables": [], "love": None, "reason": "not available: no propensity-score analysis was passed to the report"}
    tables = []
    for code in ENDPOINT_ORDER:
        sub = ps.filter(pl.col("paramcd") == code)
        if sub.is_empty():
            continue
        est = _weighted_estimates(data, code)
        rows = []
        for arm in arms.sort(sub["target"].to_list()):
            r = sub.filter(pl.col("target") == arm).row(0, named=True)
            rows.append(Row([
                arms.label(arm), f"{fmt_int(r['n_target'])} / {fmt_int(r['n_comparator'])}",
                f"{r['ess_target']:.0f} / {r['ess_comparator']:.0f}" if _ok(r.get("ess_target")) and _ok(r.get("ess_comparator")) else DASH,
                DASH if not _ok(r.get("equipoise")) else f"{100 * r['equipoise']:.0f}%",
                DASH if not _ok(r.get("max_abs_smd_after")) else f"{r['max_abs_smd_after']:.3f}",
                fmt_int(r.get("n_truncated")),
                "passed" if r["diagnostics"] == "pass" else f"FAILED: {r.get('gate_reasons') or 'unknown reason'}",
                _weighted_cell(est.get(arm)),
            ], "" if r["diagnostics"] == "pass" else "bad"))
        tables.append({"paramcd": code, "name": _ENDPOINT_NAMES[code], "table": Table(
            ["Route vs reference", "Patients (route / reference)", "Effective sample size", "Equipoise",
             "Max |SMD| after", "Weights truncated", "Diagnostics", "Weighted HR (95% CI)"], rows,
            align="lrrrrrll", wide=True)})
    love = None
    b = data.balance
    if _has(b, "paramcd", "target", "covariate", "abs_smd_before", "abs_smd_after"):
        first = b.filter(pl.col("paramcd") == "TTRESP")
        if first.height:
            labels = {a: (arms.label(a), arms.style(a)[0]) for a in first["target"].unique().to_list()}
            rows = [(r["target"], r["covariate"], r["abs_smd_before"], r["abs_smd_after"])
                    for r in first.iter_rows(named=True)]
            threshold = float(data.provenance.get("settings", {}).get("max_smd", 0.1)) if data.provenance else 0.1
            love = figures.love_plot(rows, threshold=threshold, labels=labels)
    return {"tables": tables, "love": love, "reason": ""}





# ---------------------------------------------------------------------------
# Truth (synthetic cohorts)
# ---------------------------------------------------------------------------

_ENDPOINT_NAMES = {"TTRESP": "response", "TTREM": "remission", "TTRELAPS": "relapse",
                   "TTSIRES": "resolution of suicidal ideation"}


def _truth_estimate(r: Mapping | None) -> str:
    """An estimate in the truth table: a weighted one that fails its diagnostics is withheld there too."""
    if not r:
        return DASH
    if r.get("diagnostics") not in (None, "pass"):
        return "withheld: fails diagnostics"
    return fmt_hr_ci(r.get("hr"), r.get("hr_lower"), r.get("hr_upper"))


def _truth(data: ReportData, arms: Arms) -> tuple[Table | None, str]:
    """Estimates next to what they should recover on a synthetic cohort.

    ``truth["estimands_observed_grid"]`` (see :mod:`ketaoutcomes.truth`) holds,
    per endpoint and model, the HR each arm's estimate targets on the observed
    visit grid; ``truth["response"]["hr_arm"]`` the generator's latent HR, shown
    for reference only (a visit-date analysis cannot target it).
    """
    if data.truth is None:
        return None, ""
    text = json.dumps(data.truth, indent=2, sort_keys=True, default=str)
    estimands = data.truth.get("estimands_observed_grid")
    if not isinstance(estimands, Mapping):
        return None, text
    latent = (data.truth.get("response") or {}).get("hr_arm") or {}
    est: dict[tuple[str, str, str], Mapping] = {}
    if _has(data.cox, "paramcd", "term", "hr"):
        for r in data.cox.iter_rows(named=True):
            m = _TERM.match(r["term"] or "")
            if m and m["var"] == "ARM":
                est[(r["paramcd"], r.get("model", "adjusted"), m["level"])] = r
    for code in ("TTRESP", "TTREM", "TTRELAPS"):  # weighted estimates target the marginal HR
        for arm, r in _weighted_estimates(data, code).items():
            est[(code, f"{r['model']} (weighted)", arm)] = r
    matched_share: dict[tuple[str, str], float] = {}
    if _has(data.ps, "paramcd", "target", "n_target", "n_matched_target"):
        for r in data.ps.iter_rows(named=True):
            if r.get("n_target") and r.get("n_matched_target") is not None:
                matched_share[(r["paramcd"], r["target"])] = r["n_matched_target"] / r["n_target"]
    rows = []
    for code in ("TTRESP", "TTREM", "TTRELAPS"):
        weighted_models = sorted({m for (c, m, _a) in est if c == code and m.endswith("(weighted)")})
        for model in ("adjusted", "naive", *weighted_models):
            key = model
            if model.endswith("(weighted)"):
                # iptw (a pairwise ATE): marginal among the pair's patients; matching (every route patient
                # matched, an ATT): marginal among the route's patients; overlap: not simulated
                key = {"iptw": "marginal_pair", "matching": "marginal_treated"}.get(model.split(" ")[0], "")
            targets = (estimands.get(code) or {}).get(key) or {}
            for arm in arms.sort(targets):
                t = targets[arm]
                r = est.get((code, model, arm))
                inside = DASH
                share = matched_share.get((code, arm)) if model.startswith("matching") else None
                if share is not None and share < MATCHED_SHARE_FOR_ATT:
                    # the matched subset is not the route's patients: no simulated target for it
                    rows.append(Row([_ENDPOINT_NAMES[code], model, arms.label(arm),
                                     f"none: {100 * share:.0f}% of the route's patients matched",
                                     _truth_estimate(r), DASH, DASH]))
                    continue
                if r and r.get("diagnostics", "pass") in ("pass", None) and _ok(r.get("hr_lower")) \
                        and _ok(r.get("hr_upper")):
                    inside = "yes" if r["hr_lower"] <= t["hr"] <= r["hr_upper"] else "no"
                rows.append(Row([
                    _ENDPOINT_NAMES[code], model, arms.label(arm),
                    fmt_hr_ci(t["hr"], t.get("lower"), t.get("upper")),
                    _truth_estimate(r),
                    inside,
                    fmt_hr(latent[arm]) if code == "TTRESP" and model == "adjusted" and arm in latent else DASH,
                ]))
    if not rows:
        return None, text
    return Table(["Endpoint", "Model", "Arm", "Target HR (observed grid)", "Estimate", "Target inside 95% CI",
                  "Generator latent HR"], rows, align="lllrrcr"), text


# ---------------------------------------------------------------------------
# Validation, batches, quarantine, provenance
# ---------------------------------------------------------------------------

def _examples(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        try:
            parsed = json.loads(v)
        except ValueError:
            return v
        v = parsed
    if isinstance(v, pl.Series):
        v = v.to_list()
    if isinstance(v, (list, tuple)):
        shown = ", ".join(str(x) for x in v[:10])
        return shown + (", \u2026" if len(v) > 10 else "")
    return str(v)


def _validation(data: ReportData) -> dict[str, Any]:
    v = data.validation
    if not _has(v, "success"):
        return {"reason": "not available: no validation results were passed to the report",
                "summary": None, "failing": None, "n_critical_failed": 0}
    err = v["error"].is_not_null() if "error" in v.columns else pl.Series([False] * v.height)
    v = v.with_columns(err.alias("_err"))
    sev_col = "severity" if "severity" in v.columns else None
    if sev_col:
        v = v.with_columns(pl.col(sev_col).cast(pl.String).fill_null("(unspecified)"))
    sevs = sorted(v[sev_col].drop_nulls().unique().to_list(), key=lambda s: ({"critical": 0, "warning": 1}.get(s, 2), s)) \
        if sev_col else ["(all)"]
    rows = []
    n_critical_failed = 0
    for sev in sevs:
        g = v.filter(pl.col(sev_col) == sev) if sev_col else v
        passed = int((g["success"].fill_null(False) & ~g["_err"]).sum())
        errored = int((g["_err"] | g["success"].is_null()).sum())
        failed = g.height - passed - errored
        if sev == "critical":
            n_critical_failed = failed + errored
        rows.append(Row([str(sev), fmt_int(g.height), fmt_int(passed), fmt_int(failed), fmt_int(errored)],
                        "bad" if sev == "critical" and failed + errored else ""))
    summary = Table(["Severity", "Rules checked", "Passed", "Failed", "Could not run"], rows)
    bad = v.filter(~(pl.col("success").fill_null(False) & ~pl.col("_err")))
    fail_rows = []
    if bad.height:
        sort_cols = [c for c in ("severity", "table", "rule_id") if c in bad.columns]
        if sort_cols:
            bad = bad.sort(sort_cols)
        for r in bad.iter_rows(named=True):
            count, total, pct = r.get("unexpected_count"), r.get("element_count"), r.get("unexpected_percent")
            cnt = fmt_int(count) + (f" of {fmt_int(total)}" if _ok(total) else "") + (f" ({pct:.2f}%)" if _ok(pct) else "")
            fail_rows.append(Row([
                str(r.get("table") or ""), str(r.get("rule_id") or ""), str(r.get("rule") or ""),
                str(r.get("column") or ""), str(r.get("severity") or ""), cnt if _ok(count) else DASH,
                _examples(r.get("example_row_numbers")), str(r.get("error") or ""),
            ], "bad" if r.get("severity") == "critical" else ""))
    failing = Table(["Table", "Rule id", "Rule", "Column", "Severity", "Rows failing", "Example rows", "Error"],
                    fail_rows, align="lllllrll", wide=True) if fail_rows else None
    return {"summary": summary, "failing": failing, "n_critical_failed": n_critical_failed, "reason": ""}


def _batches(data: ReportData) -> tuple[Table | None, str]:
    b = data.batches
    if not _has(b, "table_name"):
        return None, "not available: no batch records were passed to the report"
    if "load_seq" in b.columns:
        b = b.sort("load_seq", "table_name")
    rows = []
    for r in b.iter_rows(named=True):
        read, loaded, quar = r.get("rows_read"), r.get("rows_loaded"), r.get("rows_quarantined")
        if _ok(read) and _ok(loaded) and _ok(quar):
            check = "ok" if read == loaded + quar else f"MISMATCH ({fmt_int(read - loaded - quar)} unaccounted)"
        else:
            check = DASH
        sha = str(r.get("file_sha256") or "")
        rows.append(Row([
            fmt_int(r.get("load_seq")), str(r.get("table_name") or ""), str(r.get("source_file") or ""),
            str(r.get("file_format") or ""), sha[:12] + ("\u2026" if len(sha) > 12 else ""),
            fmt_int(read), fmt_int(loaded), fmt_int(quar), check,
            str(r.get("ignored_columns") or ""), str(r.get("notes") or ""), str(r.get("loaded_at") or ""),
        ], "bad" if check.startswith("MISMATCH") else ""))
    return Table(["#", "Table", "Source file", "Format", "SHA-256", "Rows read", "Loaded", "Quarantined",
                  "read = loaded + quarantined", "Ignored columns", "Notes", "Loaded at"], rows,
                 align="rllllrrrllll", wide=True), ""


def _quarantine(data: ReportData) -> tuple[Table | None, str]:
    q = data.quarantine_summary
    if q is None or q.height == 0:
        b = data.batches
        if _has(b, "rows_quarantined"):
            n = int(b["rows_quarantined"].fill_null(0).sum())
            if n == 0:
                return None, "No rows were quarantined."
            return None, f"not available: the batches quarantined {n:,} rows but no quarantine summary was passed to the report"
        return None, "not available: no quarantine summary was passed to the report"
    cols = [c for c in ("table_name", "rule", "column_name", "n_rows") if c in q.columns]
    q = q.sort([c for c in cols if c != "n_rows"]) if cols else q
    rows = [Row([fmt_int(r[c]) if c == "n_rows" else str(r[c] if r[c] is not None else "") for c in cols])
            for r in q.iter_rows(named=True)]
    names = {"table_name": "Table", "rule": "Rule", "column_name": "Column", "n_rows": "Rows"}
    return Table([names[c] for c in cols], rows, align="".join("r" if c == "n_rows" else "l" for c in cols)), ""


def _dq(data: ReportData) -> tuple[Table | None, Table | None, str]:
    """Per category and status counts, and the checks that did not pass."""
    d = data.dq_checks
    if not _has(d, "category", "status"):
        return None, None, "not available: no data-quality checks were passed to the report"
    summary_rows = []
    for (cat,), g in sorted(d.group_by("category"), key=lambda x: str(x[0][0])):
        counts = dict(g.group_by("status").len().iter_rows())
        summary_rows.append(Row([str(cat), fmt_int(g.height), fmt_int(counts.get("pass", 0)),
                                 fmt_int(counts.get("fail", 0)), fmt_int(counts.get("error", 0))],
                                "bad" if counts.get("error") or counts.get("fail") else ""))
    summary = Table(["Category", "Checks", "Passed", "Failed", "Could not run"], summary_rows, align="lrrrr")
    bad = d.filter(pl.col("status") != "pass").sort("status", "table_name", "check_id")
    rows = [Row([str(r["table_name"]), str(r["category"]), str(r["rule"]), fmt_int(r["rows_tested"]),
                 fmt_int(r["rows_failing"]),
                 DASH if r["pct_failing"] is None else f"{r['pct_failing']:.2f}%",
                 DASH if r["threshold_pct"] is None else f"{r['threshold_pct']:g}%",
                 str(r["status"]) + (f": {r['error']}" if r.get("error") else "")], "bad")
            for r in bad.iter_rows(named=True)]
    failing = Table(["Table", "Category", "Check", "Rows tested", "Rows failing", "% failing", "Threshold", "Status"],
                    rows, align="lllrrrrl", wide=True) if rows else None
    return summary, failing, ""


_SAFETY_EVENTS = {
    "dissociation": "dissociation (recorded AE)", "nausea": "nausea", "dizziness": "dizziness", "headache": "headache",
    "hypertension": "hypertension (recorded AE)", "dissociation_cadss": "CADSS above cut-off",
    "bp_rise_40_25": "BP rise >= 40/25 mmHg", "bp_180_110": "BP >= 180/110 mmHg",
}


def _secondary(data: ReportData, arms: Arms, fmt: Fmt) -> dict[str, Any]:
    """PH checks, restricted mean times, safety per session, mood trajectories (None when absent)."""
    out: dict[str, Any] = {"ph": None, "rmst": None, "safety": None, "trajectory": None}
    ph = data.ph
    if _has(ph, "paramcd", "term", "p_value"):
        rows = []
        for r in ph.sort("paramcd").iter_rows(named=True):
            if r["term"] not in ("GLOBAL", "ARM") and not (r.get("note") or r.get("error")):
                continue
            rows.append(Row([_ENDPOINT_NAMES.get(r["paramcd"], r["paramcd"]), str(r["term"]),
                             DASH if r["chi2"] is None else f"{r['chi2']:.2f}", fmt_int(r.get("df")),
                             fmt_p(r["p_value"]) if r["p_value"] is not None else DASH,
                             str(r.get("error") or r.get("note") or "")],
                            "bad" if r.get("note") or r.get("error") else ""))
        out["ph"] = Table(["Endpoint", "Term", "Chi-square", "df", "p", "Note"], rows, align="llrrrl", wide=True)
    rm = data.rmst
    if _has(rm, "paramcd", "group", "rmst"):
        rows = [Row([_ENDPOINT_NAMES.get(r["paramcd"], r["paramcd"]), arms.label(r["group"]), f"{r['horizon']:g}",
                     fmt_days_ci(r["rmst"], r.get("lower"), r.get("upper"))],
                    "ref" if r["group"] == arms.reference else "")
                for r in rm.sort("paramcd", "group").iter_rows(named=True)]
        out["rmst"] = Table(["Endpoint", "Arm", "Horizon (days)", "Mean days without the event (95% CI)"], rows,
                            align="llrr")
    sf = data.safety
    if _has(sf, "arm", "event", "rate", "sessions"):
        rows = []
        for r in sf.iter_rows(named=True):
            if not r["sessions"]:
                continue
            ci = DASH if r["rate"] is None else f"{100 * r['rate']:.1f}% ({100 * r['lower']:.1f}\u2013{100 * r['upper']:.1f})"
            rows.append(Row([arms.label(r["arm"]), _SAFETY_EVENTS.get(r["event"], r["event"]), fmt.count(r["sessions"]),
                             fmt.count(r["events"]), ci, str(r.get("note") or "")]))
        out["safety"] = Table(["Arm", "Event", "Sessions", "Sessions with the event", "Rate per session (95% CI)", "Note"],
                              rows, align="llrrrl", wide=True)
    tr = data.trajectory
    if _has(tr, "arm", "day", "mean"):
        labels = {a: (arms.label(a), arms.style(a)[0]) for a in tr["arm"].unique().to_list()}
        converged = bool(tr["converged"].all()) if "converged" in tr.columns else True
        alpha = float((data.provenance or {}).get("alpha", 0.05))
        out["trajectory"] = figures.predicted_figure(tr, labels, alpha=alpha, time_terms="log1p", converged=converged)
    return out


def _prov_value(v: Any) -> dict[str, Any]:
    if isinstance(v, Mapping):
        return {"children": [{"key": str(k), **_prov_value(x)} for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        if all(not isinstance(x, (Mapping, list, tuple)) for x in v):
            return {"value": ", ".join(str(x) for x in v) if v else "(none)"}
        return {"pre": json.dumps(v, indent=1, default=str)}
    if isinstance(v, float):
        return {"value": f"{v:g}"}
    if v is None:
        return {"value": DASH}
    return {"value": str(v)}


# ---------------------------------------------------------------------------
# Render
# ---------------------------------------------------------------------------

def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every string from the data is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def _ci_label(alpha: Any) -> str:
    level = 100 * (1 - float(alpha)) if _ok(alpha) and 0 < float(alpha) < 1 else 95.0
    return f"{fmt_num(level)}% CI"


def _adjustment_text(data: ReportData, instrument: str) -> str:
    """The adjusted model's covariates and strata in words (first endpoint that has one)."""
    words = {"AGE": "age", "SEX": "sex", "BASE": f"baseline {instrument}", "PRIORFAIL": "prior failed trials",
             "DIAGNOSIS": "diagnosis", "WEIGHT": "weight", "SITEID": "site"}
    if _has(data.cox_fit, "model", "covariates"):
        adj = data.cox_fit.filter(pl.col("model") == "adjusted")
        if adj.height:
            if "paramcd" in adj.columns:
                rank = {p: i for i, p in enumerate(ENDPOINT_ORDER)}
                adj = adj.with_columns(pl.col("paramcd").replace_strict(rank, default=len(rank)).alias("_o")).sort("_o", "paramcd")
            r = adj.row(0, named=True)
            covs = [c.strip() for c in str(r.get("covariates") or "").split(",") if c.strip() and c.strip() != "ARM"]
            text = ", ".join(words.get(c, c) for c in covs) if covs else "no covariates"
            if r.get("strata"):
                text += f"; stratified by {', '.join(words.get(s.strip(), s.strip()) for s in str(r['strata']).split(','))}"
            return text
    return "the covariates listed with each model"


def build_context(data: ReportData, *, suppress_small_cells: bool = True) -> dict[str, Any]:
    """Everything the template shows, as plain strings, tables and data URIs."""
    prov = dict(data.provenance or {})
    fmt = Fmt(suppress=suppress_small_cells, ci_label=_ci_label(prov.get("alpha", 0.05)))
    arms = _arms(data)
    instrument = str(prov.get("instrument") or (
        data.adsl["PARAMINS"].drop_nulls()[0] if _has(data.adsl, "PARAMINS") and data.adsl["PARAMINS"].drop_nulls().len()
        else "score"))
    cohort, cohort_reason = _cohort(data, arms, fmt, instrument)
    attrition, attrition_reason = _attrition(data, arms, fmt)
    key, key_reason = _key_results(data, arms, fmt)
    truth, truth_json = _truth(data, arms)
    endpoints = [_endpoint(p, data, arms, fmt) for p in _endpoint_codes(data)]
    batches, batches_reason = _batches(data)
    quarantine, quarantine_reason = _quarantine(data)
    dq_summary, dq_failing, dq_reason = _dq(data)
    weighting = _weighting(data, arms)
    secondary = _secondary(data, arms, fmt)
    from ketaoutcomes.report import adjusted  # imports this module's helpers

    settings = prov.get("settings") if isinstance(prov.get("settings"), Mapping) else {}
    alpha_b = settings.get("balance_alpha")
    thr = settings.get("max_smd", 0.1)
    weighting["rule"] = (
        f"no covariate whose standardized mean difference (SMD) after weighting is significantly above {thr:g} "
        f"(one-sided test at a family-wise {alpha_b:g}, Bonferroni over the covariates: Hripcsak et al. 2025, "
        f"as CohortMethod's sdmAlpha)" if alpha_b else
        f"every covariate's standardized mean difference (SMD) after weighting below {thr:g}")
    weighting["km"] = adjusted.weighted_km_section(data.results, arms, fmt)
    weighting["preference"] = adjusted.preference_section(data.results, arms, prov)
    secondary["discrete"] = adjusted.discrete_section(data.results, data.cox, arms, fmt)
    relapse = adjusted.relapse_section(data.results, arms, fmt)
    modifiers = adjusted.modifiers_section(data.results, arms, fmt)
    provenance = [{"key": str(k), **_prov_value(v)} for k, v in prov.items()]
    return {
        "title": data.title,
        "ref_label": arms.label(arms.reference) if arms.reference else "the reference arm",
        "instrument": instrument,
        "adjustment": _adjustment_text(data, instrument),
        "ci_label": fmt.ci_label,
        "notes": list(data.notes),
        "key": key, "key_reason": key_reason,
        "truth": truth, "truth_json": truth_json,
        "cohort": cohort, "cohort_reason": cohort_reason,
        "attrition": attrition, "attrition_reason": attrition_reason,
        "endpoints": endpoints,
        "validation": _validation(data),
        "batches": batches, "batches_reason": batches_reason,
        "quarantine": quarantine, "quarantine_reason": quarantine_reason,
        "dq_summary": dq_summary, "dq_failing": dq_failing, "dq_reason": dq_reason,
        "weighting": weighting,
        "secondary": secondary,
        "relapse": relapse,
        "modifiers": modifiers,
        "provenance": provenance,
        "suppress": suppress_small_cells,
        "generated_by": str(prov.get("report_generated_by") or prov.get("code_version") or ""),
        "run_id": str(prov.get("run_id") or ""),
    }


def render_html(data: ReportData, *, suppress_small_cells: bool = True) -> str:
    """The report as one HTML string (what :func:`render_report` writes)."""
    ctx = build_context(data, suppress_small_cells=suppress_small_cells)
    return _environment().get_template(TEMPLATE_NAME).render(**ctx)


def render_report(data: ReportData, out_path: Path, *, suppress_small_cells: bool = True) -> Path:
    """Write the report of ``data`` to ``out_path`` (one self-contained HTML file).

    Parameters
    ----------
    data : ReportData
        Result frames, notes and provenance of one analysis run.
    out_path : Path
        File to write; its folder is created. Written to a temporary file in the
        same folder first and moved into place, so a reader never sees half a report.
    suppress_small_cells : bool, default True
        Show counts of 1-10 as "<11" (for reports that leave the analysis
        environment). Estimates and confidence intervals are never suppressed.

    Returns
    -------
    Path
        ``out_path``.
    """
    out_path = Path(out_path)
    html = render_html(data, suppress_small_cells=suppress_small_cells)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(html.encode("utf-8"))
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
