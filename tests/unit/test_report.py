"""The HTML report on a small hand-built ReportData (seeded random cohort).

Checked: the file is self-contained (no http(s) resource, every src/href a data
URI or an in-page anchor), well-formed (html.parser: every non-void element
closed in order), has each section, formats HRs and p-values, suppresses small
counts only when asked, says "not estimable" for missing results, and is the
same bytes when rendered twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ketaoutcomes.notes import Note, notes_from_json
from ketaoutcomes.registries import load_registries
from ketaoutcomes.report import ReportData, render_report
from ketaoutcomes.report.format import fmt_days_ci, fmt_hr_ci, fmt_p
from ketaoutcomes.report.sections.endpoints import parse_groups

ARMS = {"ssri": 60, "ketamine_iv": 50, "esketamine_intranasal": 40, "ketamine_oral": 7}  # oral: a small cell
HR_IV = (1.8765, 1.2345, 2.8523)  # rendered "1.88 (1.23–2.85)"
# the labels of the default arm registry (what load_report_data reads from a warehouse that has no arms.csv)
ARM_LABELS = {code: arm.label for code, arm in load_registries().arms.items()}


# ---------------------------------------------------------------------------
# a small cohort and result frames, shaped like analysis.analyze's output
# ---------------------------------------------------------------------------

def _km(times: np.ndarray, events: np.ndarray, z: float = 1.959964) -> tuple[list[dict], dict]:
    """Kaplan-Meier with log-transformed Greenwood CIs (a stand-in for models.km)."""
    rows, s, var = [], 1.0, 0.0
    for t in np.unique(times):
        at = times >= t
        n, d = int(at.sum()), int(((times == t) & (events == 1)).sum())
        c = int(((times == t) & (events == 0)).sum())
        if d:
            s *= 1 - d / n
            var += d / (n * (n - d)) if n > d else math.inf
        se = math.sqrt(var)
        lo, hi = (s * math.exp(-z * se), min(1.0, s * math.exp(z * se))) if s > 0 and math.isfinite(se) else (None, None)
        rows.append({"time": float(t), "n_risk": n, "n_event": d, "n_censor": c, "survival": s, "lower": lo, "upper": hi})

    def first_below(key: str) -> float | None:
        return next((r["time"] for r in rows if r[key] is not None and r[key] <= 0.5), None)

    med = {"n": len(times), "events": int(events.sum()), "median": first_below("survival"),
           "median_lower": first_below("lower"), "median_upper": first_below("upper")}
    return rows, med


def term_columns(term: str) -> dict:
    """The columns the analysis stores with each model term (variable, level, arm) for a fixture term."""
    var, _, rest = term.partition("[")
    level = rest[:-1] if rest else None
    return {"variable": var, "level": level, "arm": level if var == "ARM" else None}


def make_data(*, seed: int = 7, with_relapse: bool = True, with_cox: bool = True, truth: dict | None = None) -> ReportData:
    rng = np.random.default_rng(seed)
    adsl_rows, adtte_rows = [], []
    i = 0
    for arm, n in ARMS.items():
        rate = {"ssri": 0.03, "ketamine_iv": 0.07, "esketamine_intranasal": 0.06, "ketamine_oral": 0.05}[arm]
        for _ in range(n):
            i += 1
            pid = f"P{i:04d}"
            start = dt.datetime(2024, 1, 1, 9) + dt.timedelta(days=int(rng.integers(0, 300)))
            adsl_rows.append({
                "USUBJID": pid, "COURSEID": f"C{i:04d}", "ARM": arm, "SITEID": f"S{rng.integers(1, 4)}",
                "SEX": str(rng.choice(["F", "M"])), "AGE": int(rng.integers(18, 80)),
                "PRIORFAIL": int(rng.integers(0, 6)), "DIAGNOSIS": str(rng.choice(["MDD", "bipolar_depression"], p=[0.8, 0.2])),
                "WEIGHT": float(rng.normal(75, 12)), "TRTSDTM": start, "FUENDTM": None, "ICEREAS": None,
                "PARAMINS": "MADRS", "BASE": float(rng.integers(22, 45)), "BASEDTM": start - dt.timedelta(days=2),
                "CONSSRI": bool(rng.random() < 0.3), "CONBENZO": bool(rng.random() < 0.2),
                "NSESS": int(rng.integers(1, 12)), "NMAINT": int(rng.integers(0, 4)), "NPOST": int(rng.integers(1, 8)),
                "ANLFL": "Y",
            })
            for paramcd, mult in (("TTRESP", 1.0), ("TTREM", 0.6)) + ((("TTRELAPS", 0.2),) if with_relapse else ()):
                t_ev = rng.exponential(1 / (rate * mult))
                t_cens = rng.uniform(10, 120)
                ev = t_ev <= t_cens
                aval = float(np.floor(min(t_ev, t_cens)))
                adtte_rows.append({
                    "STUDYID": "default", "USUBJID": pid, "COURSEID": f"C{i:04d}", "ARM": arm, "PARAMCD": paramcd,
                    "PARAM": f"{paramcd} (test)", "STARTDT": start, "ADT": start + dt.timedelta(days=aval),
                    "AVAL": aval, "AVALU": "DAYS", "CNSR": 0 if ev else int(rng.choice([1, 2])),
                    "EVNTDESC": "event" if ev else None,
                    "CNSDTDSC": None if ev else "censored at the last assessment",
                    "EVSCORE": 10.0 if ev else None,
                })
    # one course outside the analysis population (no baseline): must not count in the cohort table
    adsl_rows.append({**adsl_rows[0], "USUBJID": "P9999", "COURSEID": "C9999", "BASE": None, "ANLFL": "N"})
    adsl = pl.DataFrame(adsl_rows, schema_overrides={"FUENDTM": pl.Datetime("us"), "ICEREAS": pl.String})
    adtte = pl.DataFrame(adtte_rows)
    adtte = adtte.with_columns(
        pl.when(pl.col("CNSR") > 0).then(pl.format("censored reason {}", pl.col("CNSR"))).alias("CNSDTDSC")
    )

    km_rows, med_rows, lr_rows = [], [], []
    for paramcd in adtte["PARAMCD"].unique().sort().to_list():
        sub = adtte.filter(pl.col("PARAMCD") == paramcd)
        groups = []
        for arm in ARMS:
            a = sub.filter(pl.col("ARM") == arm)
            rows, med = _km(a["AVAL"].to_numpy(), (a["CNSR"] == 0).cast(pl.Int8).to_numpy())
            km_rows += [{"paramcd": paramcd, "group": arm, **r} for r in rows]
            med_rows.append({"paramcd": paramcd, "group": arm, **med})
            groups.append({"group": arm, "n": a.height, "observed": med["events"], "expected": med["events"] * 0.9 + 1})
        lr_rows.append({"paramcd": paramcd, "chi2": 23.456, "df": 3, "p_value": 3.3e-5,
                        "groups": pl.DataFrame(groups).write_json()})
    km = pl.DataFrame(km_rows, schema_overrides={"lower": pl.Float64, "upper": pl.Float64})
    km_median = pl.DataFrame(med_rows, schema_overrides={"median": pl.Float64, "median_lower": pl.Float64,
                                                         "median_upper": pl.Float64})
    km_median = km_median.with_columns(  # one arm whose median is not reached
        pl.when((pl.col("group") == "ssri") & (pl.col("paramcd") == "TTREM")).then(None).otherwise(pl.col("median")).alias("median")
    )

    cox_rows, fit_rows = [], []
    if with_cox:
        for paramcd in ("TTRESP", "TTREM"):
            for model in ("adjusted", "naive"):
                terms = {"ARM[ketamine_iv]": HR_IV if model == "adjusted" else (2.5, 1.7, 3.6),
                         "ARM[esketamine_intranasal]": (1.41, 0.9, 2.2)}
                if model == "adjusted":
                    terms |= {"AGE": (0.99, 0.98, 1.0), "SEX[M]": (0.91, 0.7, 1.2), "BASE": (0.97, 0.95, 0.99),
                              "PRIORFAIL": (0.85, 0.78, 0.93)}
                for term, (hr, lo, hi) in terms.items():
                    cox_rows.append({"paramcd": paramcd, "model": model, "term": term, **term_columns(term),
                                     "coef": math.log(hr),
                                     "hr": hr, "se": 0.2, "z": math.log(hr) / 0.2, "p_value": 0.0004 if hr > 1.5 else 0.2,
                                     "hr_lower": lo, "hr_upper": hi})
                fit_rows.append({
                    "paramcd": paramcd, "model": model, "n": 150, "n_events": 90, "n_dropped": 0, "loglik": -400.0,
                    "lr_chi2": 20.1, "lr_df": 2 if model == "naive" else 6, "lr_p": 0.0001, "concordance": 0.62,
                    "converged": True, "strata": "SITEID" if model == "adjusted" else None,
                    "covariates": "ARM, AGE, SEX, BASE, PRIORFAIL" if model == "adjusted" else "ARM",
                    "reference_levels": "ARM=ssri, SEX=F" if model == "adjusted" else "ARM=ssri", "notes": "",
                })
    notes = (
        Note("arm(s) ketamine_oral left out of the Cox models: fewer than 5 events (not estimable)", step="models",
             endpoint="TTRESP", arms=("ketamine_oral",), severity="warning"),
        Note("reference arm 'ssri' has 3 events (< 5); no hazard ratios", step="models", endpoint="TTRELAPS",
             arms=("ssri",), severity="warning"),
    )
    attrition = pl.DataFrame([
        {"step": 1, "rule": "patients in the export", "arm": "(all)", "n_remaining": 170, "n_excluded": None},
        *[{"step": 2, "rule": "with a treatment course", "arm": a, "n_remaining": n + (1 if a == "ssri" else 0),
           "n_excluded": None} for a, n in ARMS.items()],
        {"step": 2, "rule": "with a treatment course", "arm": "(all)", "n_remaining": 158, "n_excluded": None},
        *[{"step": 3, "rule": "baseline MADRS in window <script>", "arm": a, "n_remaining": n,
           "n_excluded": 1 if a == "ssri" else 0} for a, n in ARMS.items()],
        {"step": 3, "rule": "baseline MADRS in window <script>", "arm": "(all)", "n_remaining": 157, "n_excluded": 1},
    ], schema={"step": pl.Int32, "rule": pl.String, "arm": pl.String, "n_remaining": pl.Int64, "n_excluded": pl.Int64})
    validation = pl.DataFrame([
        {"table": "patients", "rule_id": "P1", "rule": "patient_id unique", "expectation_type": "unique",
         "column": "patient_id", "severity": "critical", "success": True, "element_count": 158,
         "unexpected_count": 0, "unexpected_percent": 0.0, "example_row_numbers": "[]", "error": None},
        {"table": "mood_scores", "rule_id": "M7", "rule": "score within instrument range", "expectation_type": "between",
         "column": "total_score", "severity": "warning", "success": False, "element_count": 2000,
         "unexpected_count": 4, "unexpected_percent": 0.2, "example_row_numbers": "[12, 48, 301, 1999]", "error": None},
    ])
    batches = pl.DataFrame([
        {"batch_id": "patients-abc", "load_seq": 1, "table_name": "patients", "source_file": "/data/export/patients.csv",
         "file_sha256": "ab" * 32, "file_format": "csv", "rows_read": 160, "rows_loaded": 158, "rows_quarantined": 2,
         "ignored_columns": None, "loaded_at": dt.datetime(2025, 1, 2, 3, 4, 5)},
    ])
    quarantine = pl.DataFrame([{"table_name": "patients", "rule": "range", "column_name": "age_at_index", "n_rows": 2}])
    provenance = {"run_id": "run-0001", "settings_id": "abc123", "settings": {"reference_arm": "ssri", "covariates": ["age_at_index", "sex"]},
                  "code_version": "0.1.0+test", "reference_arm": "ssri", "instrument": "MADRS", "alpha": 0.05,
                  "report_generated_by": "ketaoutcomes 0.1.0"}
    tables = {
        "ad_adsl": adsl, "ad_adtte": adtte, "results_attrition": attrition, "results_km": km,
        "results_km_median": km_median, "results_logrank": pl.DataFrame(lr_rows),
        "results_cox": pl.DataFrame(cox_rows) if cox_rows else pl.DataFrame(),
        "results_cox_fit": pl.DataFrame(fit_rows) if fit_rows else pl.DataFrame(),
    }
    return ReportData(
        title="Test study <b>&</b>", tables=tables, validation=validation, batches=batches,
        quarantine_summary=quarantine, provenance=provenance, notes=notes, truth=truth, arm_labels=ARM_LABELS,
    )


# ---------------------------------------------------------------------------
# a person's reading: the text, and well-formedness
# ---------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# elements whose end tag HTML lets you leave out; the template closes them all, so none are listed
OPTIONAL_END: set[str] = set()


class Reader(HTMLParser):
    """Collects visible text, headings and src/href, and checks that elements nest and close."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.headings: list[str] = []
        self.refs: list[str] = []
        self.ids: list[str] = []
        self._heading: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.refs.append(a[k] or "")
        if "id" in a:
            self.ids.append(a["id"])
        if tag in ("style", "script"):
            self._skip += 1
        if tag in ("h1", "h2", "h3"):
            self._heading = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void element {tag}")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag in ("style", "script"):
            self._skip -= 1
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._heading is not None:
            self._heading.append(data)


def read(path: Path) -> Reader:
    r = Reader()
    r.feed(path.read_text(encoding="utf-8"))
    r.close()
    return r


@pytest.fixture(scope="module")
def data() -> ReportData:
    return make_data()


@pytest.fixture(scope="module")
def rendered(data, tmp_path_factory) -> Path:
    return render_report(data, tmp_path_factory.mktemp("report") / "report.html")


def test_report_is_one_self_contained_file(rendered):
    assert rendered.exists() and rendered.stat().st_size > 10_000
    html = rendered.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    r = read(rendered)
    assert r.refs, "expected figures and in-page links"
    for ref in r.refs:
        assert ref.startswith("data:image/png;base64,") or ref.startswith("#"), ref[:80]
    assert sum(ref.startswith("data:image/png") for ref in r.refs) >= 4  # KM x2 + forest x2 at least
    for ref in r.refs:
        if ref.startswith("#"):
            assert ref[1:] in r.ids, f"dangling in-page link {ref}"


def test_report_is_well_formed_html(rendered):
    r = read(rendered)
    assert r.errors == []
    assert r.stack == [], f"unclosed elements: {r.stack}"
    assert len(r.ids) == len(set(r.ids)), "duplicate element ids"


def test_report_has_every_section(rendered):
    headings = read(rendered).headings
    for h in ("How to read this report", "Key results: time to response", "Cohort by arm (analysis population)",
              "Attrition", "Time to response (TTRESP)", "Time to remission (TTREM)",
              "Time from response to relapse (responders only) (TTRELAPS)", "Kaplan-Meier curves",
              "Median time to response", "Log-rank test", "Cox proportional-hazards models", "Data validation",
              "Data batches and quarantine", "Quarantine summary", "Provenance"):
        assert h in headings, (h, headings)
    order = [headings.index(h) for h in ("How to read this report", "Key results: time to response",
                                          "Cohort by arm (analysis population)", "Attrition",
                                          "Time to response (TTRESP)", "Data validation", "Provenance")]
    assert order == sorted(order)


def test_report_text_says_what_it_must(rendered):
    text = " ".join(" ".join(read(rendered).text).split())
    assert "confounded by indication" in text and "shown only when its balance and equipoise diagnostics pass" in text
    assert "Ketamine IV vs SSRI" in text
    assert "1.88 (1.23\u20132.85)" in text  # adjusted HR of ketamine_iv, 2 decimals with its CI
    assert "p < 0.001" in text  # the log-rank p-value 3.3e-5, in running text
    assert "<0.001" in text  # the adjusted p of ketamine_iv, in a table
    assert "ketamine_oral left out of the Cox models" in text  # analysis notes are shown
    assert "not reached" in text  # the median that is not reached
    assert "Test study <b>&</b>" in text  # the title is escaped, so the text reads as given
    assert "12, 48, 301, 1999" in text  # example rows of the failing validation rule


def test_markup_from_the_data_is_escaped(rendered):
    html = rendered.read_text(encoding="utf-8")
    assert "<script>" not in html and "<b>&</b>" not in html
    assert "&lt;script&gt;" in html


def test_small_cells_suppressed_only_when_asked(data, tmp_path):
    on = " ".join(read(render_report(data, tmp_path / "on.html")).text)
    off_path = render_report(data, tmp_path / "off.html", suppress_small_cells=False)
    off = " ".join(read(off_path).text)
    assert "<11" in on
    assert "<11" not in off
    # the 7-course oral arm: "<11" with suppression, 7 without
    oral_row_on = [line for line in (tmp_path / "on.html").read_text().splitlines() if "Ketamine oral" in line and "<td" in line]
    assert any(">&lt;11<" in line for line in oral_row_on)
    oral_row_off = [line for line in off_path.read_text().splitlines() if "Ketamine oral" in line and "<td" in line]
    assert any(">7<" in line for line in oral_row_off)
    # estimates are never suppressed
    assert "1.88 (1.23\u20132.85)" in on and "1.88 (1.23\u20132.85)" in off


def test_small_cell_threshold_is_the_studys(data, tmp_path):
    """report.small_cell_max sets the threshold: at 5, the 7-course oral arm is shown and 1-5 are "<6"."""
    path = render_report(dataclasses.replace(data, small_cell_max=5), tmp_path / "five.html")
    html = path.read_text()
    oral = [line for line in html.splitlines() if "Ketamine oral" in line and "<td" in line]
    assert any(">7<" in line for line in oral) and "&lt;11" not in html
    assert "Counts of 1 to 5" in " ".join(" ".join(read(path).text).split()) and "&lt;6" in html


def test_missing_results_render_not_estimable(tmp_path):
    d = make_data(with_relapse=False, with_cox=False)
    text = " ".join(" ".join(read(render_report(d, tmp_path / "r.html")).text).split())
    assert "not estimable" in text
    # the reason for the missing relapse endpoint comes from the analysis notes
    assert "not estimable: reference arm 'ssri' has 3 events" in text
    assert "no Cox model was fitted" in text


def test_fully_empty_report_renders(tmp_path):
    empty = pl.DataFrame()
    d = ReportData(title="empty", tables={}, validation=empty, batches=empty, quarantine_summary=empty,
                   provenance={}, notes=())
    p = render_report(d, tmp_path / "empty.html")
    r = read(p)
    assert r.errors == [] and r.stack == []
    text = " ".join(r.text)
    assert text.count("not estimable") >= 4 and "not available" in text


def test_rendering_twice_gives_identical_bytes(data, tmp_path):
    a = render_report(data, tmp_path / "a.html").read_bytes()
    b = render_report(make_data(), tmp_path / "b.html").read_bytes()
    assert a == b


def test_truth_shown_next_to_estimates(tmp_path):
    # the layout ketaoutcomes.truth writes: per endpoint and model, arm -> target HR
    truth = {"seed": 1, "response": {"hr_arm": {"ssri": 1.0, "ketamine_iv": 2.4}},
             "estimands_observed_grid": {"TTRESP": {
                 "adjusted": {"ketamine_iv": {"hr": 2.0, "lower": 1.9, "upper": 2.1}},
                 "naive": {"ketamine_iv": {"hr": 3.5, "lower": 3.3, "upper": 3.7}}}}}
    text = " ".join(" ".join(read(render_report(make_data(truth=truth), tmp_path / "t.html")).text).split())
    assert "Target HR (observed grid)" in text and "2.00 (1.90\u20132.10)" in text
    assert "1.88 (1.23\u20132.85)" in text  # the estimate beside it
    assert "2.40" in text  # the latent generator HR, for reference
    assert '"seed": 1' in text  # raw JSON in <details>


def test_truth_without_estimands_shows_only_the_json(tmp_path):
    text = " ".join(" ".join(read(render_report(make_data(truth={"seed": 7}), tmp_path / "t.html")).text).split())
    assert '"seed": 7' in text and "Target HR" not in text


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [
        (fmt_p, (0.0004,), "<0.001"),
        (fmt_p, (0.04217,), "0.042"),
        (fmt_p, (None,), "\u2014"),
        (fmt_hr_ci, (0.5, 0.25, float("inf")), "0.50 (0.25\u2013\u221e)"),
        (fmt_hr_ci, (float("nan"), None, None), "\u2014"),
        (fmt_days_ci, (14.0, 7.0, None), "14 (7\u2013NR)"),
        (fmt_days_ci, (None, 7.0, None), "not reached"),
    ],
)
def test_number_formats(fn, args, expected):
    assert fn(*args) == expected


def test_groups_json_round_trip():
    """The log-rank groups column as analysis.py writes it (polars write_json) is read back."""
    raw = pl.DataFrame({"group": ["a", "b"], "n": [3, 4], "observed": [1, 2], "expected": [1.5, 1.5]}).write_json()
    assert [g["group"] for g in parse_groups(raw)] == ["a", "b"]
    assert parse_groups(json.dumps({"group": ["a"], "n": [1]})) == [{"group": "a", "n": 1}]


def test_data_quality_section_lists_failed_and_unrunnable_checks(tmp_path):
    dq = pl.DataFrame({
        "table_name": ["sessions", "sessions", "patients"],
        "category": ["plausibility", "conformance", "error"],
        "check_id": ["sessions.sbp_peak.range", "sessions.dose_mg.type", "patients.plausibility_ranges"],
        "column_name": ["sbp_peak", "dose_mg", None],
        "rule": ["sbp_peak within 60-260 mmHg", "quarantine rule type on dose_mg", "plausibility ranges"],
        "rows_tested": [100, 100, None], "rows_failing": [3, 0, None], "pct_failing": [3.0, 0.0, None],
        "threshold_pct": [1.0, 0.0, None], "status": ["fail", "pass", "error"],
        "error": [None, None, "ValueError: boom"], "batch_id": ["b1", "b1", "b2"],
    })
    d = dataclasses.replace(make_data(), dq_checks=dq)
    text = " ".join(" ".join(read(render_report(d, tmp_path / "dq.html")).text).split())
    assert "Data quality of the loads in force" in text
    assert "sbp_peak within 60-260 mmHg" in text and "3.00%" in text
    assert "error: ValueError: boom" in text
    assert "quarantine rule type on dose_mg" not in text  # passed checks are only counted


def test_truth_table_withholds_failing_weighted_estimates_and_matched_subsets(tmp_path):
    """A weighted estimate that fails its diagnostics is withheld in the truth table too; a matched
    estimate over a subset of the route's patients has no simulated target."""
    base = make_data()
    weighted = pl.DataFrame([
        {"paramcd": "TTRESP", "model": "iptw", "term": "ARM[ketamine_iv]", **term_columns("ARM[ketamine_iv]"),
         "hr": 9.87, "hr_lower": 7.0,
         "hr_upper": 12.0, "diagnostics": "fail", "gate_reasons": "max |SMD| after weighting 0.2 >= 0.1 (AGE)"},
        {"paramcd": "TTRESP", "model": "matching", "term": "ARM[esketamine_intranasal]",
         **term_columns("ARM[esketamine_intranasal]"), "hr": 6.54, "hr_lower": 5.0,
         "hr_upper": 8.0, "diagnostics": "pass", "gate_reasons": None},
    ])
    ps = pl.DataFrame([{"paramcd": "TTRESP", "target": "esketamine_intranasal", "comparator": "ssri",
                        "weighting": "matching", "n_target": 100, "n_comparator": 80, "n_matched_target": 70,
                        "n_matched_comparator": 70, "diagnostics": "pass"}])
    truth = {"estimands_observed_grid": {"TTRESP": {
        "adjusted": {"ketamine_iv": {"hr": 2.0, "lower": 1.9, "upper": 2.1}},
        "marginal_pair": {"ketamine_iv": {"hr": 9.5, "lower": 9.0, "upper": 10.0}},
        "marginal_treated": {"esketamine_intranasal": {"hr": 6.0, "lower": 5.5, "upper": 6.5}}}}}
    tables = {**base.tables, "results_cox": pl.concat([base.table("results_cox"), weighted], how="diagonal_relaxed"),
              "results_ps": ps}
    data = dataclasses.replace(base, tables=tables, truth=truth)
    text = " ".join(" ".join(read(render_report(data, tmp_path / "t.html")).text).split())
    assert "9.87" not in text and "withheld: fails diagnostics" in text
    assert "none: 70% of the route's patients matched" in text


def test_notes_of_runs_stored_as_strings_still_explain_missing_estimates(tmp_path):
    """Runs written before notes were records stored "CODE: text" strings; the report reads them."""
    legacy = ("TTRESP: arm(s) ketamine_oral left out of the Cox models: fewer than 5 events (not estimable)",
              "TTRELAPS: reference arm 'ssri' has 3 events (< 5); no hazard ratios")
    d = make_data(with_relapse=False, with_cox=False)
    d = dataclasses.replace(d, notes=tuple(notes_from_json(legacy, ("TTRESP", "TTREM", "TTRELAPS", "TTSIRES"))))
    text = " ".join(" ".join(read(render_report(d, tmp_path / "r.html")).text).split())
    assert "not estimable: reference arm 'ssri' has 3 events" in text


def test_attrition_is_a_flow_diagram_and_a_table(rendered):
    """The CONSORT-style diagram (boxes: each population, the courses each rule excluded, the arms) is HTML
    in the page, above the table of counts per arm."""
    html = rendered.read_text(encoding="utf-8")
    section = html[html.index('<section id="attrition">'):html.index("</section>", html.index('<section id="attrition">'))]
    assert section.index('class="flow"') < section.index("<table")
    boxes = re.findall(r'<div class="flow-box">([^<]*)<b>([^<]*)</b>', section)
    assert ("patients in the export", "170") in boxes
    assert ("baseline MADRS in window &lt;script&gt;", "157") in boxes  # markup from the data is escaped
    assert ("Ketamine oral", "&lt;11") in boxes  # the 7-course arm, suppressed as in the table
    assert re.findall(r'<div class="flow-excl">Excluded<b>([^<]*)</b>', section) == ["&lt;11"]


# ---------------------------------------------------------------------------
# the first screen: the summary block (issue 10), grouped notes, the primary estimate in the forest plot
# ---------------------------------------------------------------------------

def _with_primary(data: ReportData) -> ReportData:
    """``data`` plus the propensity-score comparison of the primary endpoint: esketamine passes its
    gate, ketamine IV fails on site S06 (also for remission), with their contrasts and weighted HRs."""
    gate_iv = "max |SMD| after weighting 0.111 >= 0.1 (SITEID[S06])"
    ps = pl.DataFrame([
        {"paramcd": p, "target": t, "comparator": "ssri", "diagnostics": d, "gate_reasons": g, "n_target": 40,
         "n_comparator": 60, "ess_target": 35.0, "ess_comparator": 55.0, "equipoise": 0.5,
         "max_abs_smd_after": 0.05 if d == "pass" else 0.111, "n_truncated": 0}
        for p in ("TTRESP", "TTREM")
        for t, d, g in (("esketamine_intranasal", "pass", None), ("ketamine_iv", "fail", gate_iv))
    ])
    contrasts = []
    for t, d, g, vals in (("esketamine_intranasal", "pass", None,
                           {"risk_d7": (0.20, 0.03, 0.17, 0.12, 0.23), "risk_d28": (0.61, 0.16, 0.4494, 0.38, 0.514),
                            "median": (22.0, 97.0, -75.0, -81.0, -59.0), "rmst": (19.8, 29.47, -9.67, -11.21, -8.32)}),
                          ("ketamine_iv", "fail", gate_iv,
                           {"risk_d7": (0.30, 0.03, 0.27, None, None), "risk_d28": (0.71, 0.14, 0.57, None, None),
                            "median": (14.0, 99.0, -85.0, None, None), "rmst": (15.7, 27.19, -11.49, None, None)})):
        for est, (vt, vc, diff, lo, hi) in vals.items():
            measure = "risk" if est.startswith("risk") else est
            day = {"risk_d7": 7.0, "risk_d28": 28.0, "median": None, "rmst": 32.0}[est]
            contrasts.append({"paramcd": "TTRESP", "target": t, "comparator": "ssri", "weighting": "iptw",
                              "estimand": est, "measure": measure, "day": day, "value_target": vt,
                              "value_comparator": vc, "difference": diff, "lower": lo, "upper": hi,
                              "se": None if lo is None else 1.0, "n_boot": 0 if lo is None else 200,
                              "n_boot_failed": 0, "diagnostics": d, "gate_reasons": g})
    weighted = [{"paramcd": "TTRESP", "model": "iptw", "term": f"ARM[{t}]", **term_columns(f"ARM[{t}]"),
                 "coef": math.log(hr), "hr": hr, "hr_lower": hr / 1.3, "hr_upper": hr * 1.3, "se": 0.1, "z": 1.0,
                 "p_value": 0.01, "diagnostics": d, "gate_reasons": g}
                for t, hr, d, g in (("esketamine_intranasal", 5.57, "pass", None), ("ketamine_iv", 8.1, "fail", gate_iv))]
    tables = dict(data.tables)
    tables["results_ps"] = ps
    tables["results_contrasts"] = pl.DataFrame(contrasts, infer_schema_length=None)
    tables["results_cox"] = pl.concat([tables["results_cox"], pl.DataFrame(weighted)], how="diagonal_relaxed")
    notes = (*data.notes, Note(f"ketamine_iv vs ssri fails the diagnostics gate ({gate_iv}): its iptw HR is not a "
                               "result to read", step="propensity", endpoint="TTRESP", arms=("ketamine_iv",),
                               severity="withheld"))
    return dataclasses.replace(data, tables=tables, notes=notes,
                               provenance={**data.provenance, "settings": {"random_seed": 99,
                                                                           "models": {"rmst_horizon_days": 56}}})


@pytest.fixture(scope="module")
def summary_html(data, tmp_path_factory) -> str:
    return render_report(_with_primary(data), tmp_path_factory.mktemp("summary") / "r.html").read_text(encoding="utf-8")


def test_summary_table_comes_first_then_the_folded_notes_then_the_contents(summary_html):
    """The first screen: the summary block before any other section, the notes folded in a
    <details> below it, and only then the table of contents and the rest."""
    html = summary_html
    body = html[html.index("<body>"):]
    first_section = body.index("<section")
    assert body[first_section:].startswith('<section id="summary">')
    summary_at = body.index('<table class="summary">')
    assert summary_at < body.index('<details class="notes') < body.index("<nav>") < body.index('id="how-to-read"')
    assert body.index("<h2") == body.index("<h2", body.index('<section id="summary">'))  # no heading before it
    assert "</details>" in body and "<summary>" in body  # notes folded
    assert read_html(html).errors == []


def read_html(html: str) -> Reader:
    r = Reader()
    r.feed(html)
    r.close()
    return r


def test_summary_rows_give_differences_with_cis_verdicts_in_words_and_withhold_failing_pairs(summary_html):
    text = " ".join(" ".join(read_html(summary_html).text).split())
    assert "balanced and in equipoise" in text
    assert "withheld: imbalance in site S06, 0.111 > 0.1" in text
    assert "\u221275 (\u221281 to \u221259)" in text  # median difference in days with its bootstrap CI
    assert "+45 pp (+38 to +51)" in text  # share responded by day 28, in percentage points
    assert "\u22129.7 (\u221211.2 to \u22128.3)" in text and "to day 32, where follow-up thins out" in text
    assert "fewer than 10 patients of an arm still at risk on that day" in text
    assert "5.57 (4.28\u20137.24)" in text  # the weighted HR, a secondary column
    # one plain sentence per route, generated from the numbers
    assert ("By day 28, 45 more patients in 100 had a response than on SSRI (95% CI 38 to 51); the median time to "
            "response was 22 days against 97, 75 days sooner (difference \u221275 days, 95% CI \u221281 to \u221259); "
            "over the first 32 days, patients spent 9.7 fewer days without a response (95% CI 8.3 to 11.2).") in text
    assert "Ketamine IV: no primary estimate." in text
    # the failing pair's numbers are stored (withheld) but never shown in the summary
    summary = summary_html[summary_html.index('<section id="summary">'):summary_html.index("</section>")]
    assert "8.10" not in summary and "+57 pp" not in summary and "\u221285" not in summary
    assert "a person-level bootstrap of the whole weighted estimation (200 replicates" in text and "99" in text
    assert "Wilson score interval" in text and "combined by MOVER" in text and "percentile intervals" in text


def test_notes_are_one_line_per_withheld_comparison_in_labels_not_codes(summary_html):
    notes = summary_html[summary_html.index('<details class="notes'):summary_html.index("</details>")]
    text = " ".join(" ".join(read_html(notes).text).split())
    assert text.count("Ketamine IV vs SSRI: primary comparison withheld") == 1
    assert "withheld for response, remission (imbalance in site S06, 0.111 > 0.1)" in text
    assert "SITEID" not in text and "ketamine_iv" not in text and "TTRESP" not in text
    assert "Ketamine oral left out of the Cox models" in text  # other notes, arm codes as labels


@pytest.mark.parametrize("reasons, expected", [
    ("max |SMD| after weighting 0.111 >= 0.1 (SITEID[S06])", "imbalance in site S06, 0.111 > 0.1"),
    ("propensity model did not converge (Newton-Raphson stopped after 100 iterations without converging (possible "
     "separation)); max |SMD| after weighting 0.139 >= 0.1 (SEX[U])",
     "the propensity model did not converge (the covariates almost separate the arms); imbalance in sex unknown, "
     "0.139 > 0.1"),
    ("equipoise 15.2% < 20% (share of patients with preference score in [0.3, 0.7])",
     "too few patients in equipoise, 15.2% < 20%"),
    ("fewer than 2 matched pairs (1) of ketamine_iv and ssri patients", "fewer than 2 matched pairs (1) of ketamine_iv "
     "and ssri patients"),
])
def test_plain_reason_says_the_gate_in_words(reasons, expected):
    from ketaoutcomes.report.sections.summary import plain_reason

    assert plain_reason(reasons) == expected


def test_forest_plot_receives_the_primary_estimate_only_where_it_passed(data, tmp_path, monkeypatch):
    from ketaoutcomes.report import figures

    seen = []
    real = figures.forest_figure
    monkeypatch.setattr(figures, "forest_figure", lambda rows, **kw: seen.append(list(rows)) or real(rows, **kw))
    render_report(_with_primary(data), tmp_path / "r.html")
    rows = {r.label: r for r in seen[0]}  # the primary endpoint's forest plot
    assert rows["Esketamine intranasal"].primary == pytest.approx((5.57, 5.57 / 1.3, 5.57 * 1.3))
    assert rows["Ketamine IV"].primary is None  # withheld: not drawn


def test_evalue_table_shows_passing_estimates_and_withholds_failing_pairs(data, tmp_path):
    """The weighting section's E-value table: one row per route and estimate of the primary endpoint,
    the estimate with its CI and both E-values; a pair failing its diagnostics shows "withheld", never
    its numbers."""
    from ketaoutcomes.analysis.evalues import evalue_table

    ratios = pl.DataFrame([
        {"target": t, "estimand": "rr_d28", "day": 28.0, "difference": rr, "lower": lo, "upper": hi,
         "diagnostics": d, "gate_reasons": None if d == "pass" else "max |SMD| after weighting 0.111 >= 0.1",
         "note": None}
        for t, rr, lo, hi, d in (("esketamine_intranasal", 3.9, 1.8, 8.7, "pass"), ("ketamine_iv", 9.87, 6.5, 12.0, "fail"))])
    ev = evalue_table(ratios, pl.DataFrame(), pl.DataFrame(), "TTRESP", "ssri", "iptw")
    primary = _with_primary(data)
    tables = {**primary.tables, "results_evalues": ev}
    html = render_report(dataclasses.replace(primary, tables=tables), tmp_path / "r.html").read_text(encoding="utf-8")
    section = html[html.index('id="evalues"'):]
    section = section[:section.index("</table>")]
    text = " ".join(" ".join(read_html(section).text).split())
    assert "Esketamine intranasal risk ratio by day 28 3.90 (1.80\u20138.70) 7.26 3.00" in text  # VanderWeele & Ding
    assert "Ketamine IV risk ratio by day 28 withheld" in text and "9.87" not in section


def test_adjusted_curves_table_shows_three_estimators_beside_the_primary_and_withholds_failing_pairs(data, tmp_path):
    """The weighting section's adjusted curves (results_ate): per route and estimand, the primary
    weighted-curve difference (results_contrasts) beside the g-formula, IPTW and AIPTW ones with
    their CIs, in percentage points for shares and days for the restricted mean; a route failing its
    diagnostics shows "withheld" and why, never its numbers; the caption says what each estimator
    assumes."""
    from ketaoutcomes.analysis.ate import ATE_RESULT_SCHEMA

    gate_iv = "max |SMD| after weighting 0.111 >= 0.1 (SITEID[S06])"
    rows = []
    for t, d, g, shift in (("esketamine_intranasal", "pass", None, 0.0), ("ketamine_iv", "fail", gate_iv, 0.5)):
        for k, est in enumerate(("gformula", "iptw", "aiptw")):
            for estimand, day, diff, se in (("risk_d7", 7.0, 0.18 + 0.01 * k + shift, 0.02),
                                            ("risk_d28", 28.0, None, None), ("rmst", 32.0, -9.1 - k - shift, 0.7)):
                rows.append({"paramcd": "TTRESP", "target": t, "comparator": "ssri", "estimator": est,
                             "estimand": estimand, "measure": "rmst" if estimand == "rmst" else "risk", "day": day,
                             "difference": diff, "se": se, "lower": None if diff is None else diff - 2 * se,
                             "upper": None if diff is None else diff + 2 * se, "n": 100, "ps_model": "ridge",
                             "diagnostics": d, "gate_reasons": g,
                             "note": "not estimable: past the last observed time" if diff is None else None})
    primary = _with_primary(data)
    tables = {**primary.tables, "results_ate": pl.DataFrame(rows, schema=ATE_RESULT_SCHEMA)}
    html = render_report(dataclasses.replace(primary, tables=tables), tmp_path / "r.html").read_text(encoding="utf-8")
    section = html[html.index('id="adjusted"'):]
    caption = section[section.index('class="caption"'):section.index("</p>")]
    section = section[:section.index("</table>")]
    text = " ".join(" ".join(read_html(section).text).split())
    # primary (bootstrap CI from results_contrasts), then g-formula, IPTW, AIPTW (influence-function CIs)
    assert ("Esketamine intranasal % with response by day 7 +17 pp (+12 to +23) +18 pp (+14 to +22) "
            "+19 pp (+15 to +23) +20 pp (+16 to +24)") in text
    assert "Esketamine intranasal % with response by day 28 +45 pp (+38 to +51) not estimable not estimable" in text
    assert ("Esketamine intranasal days without response up to day 32 \u22129.7 (\u221211.2 to \u22128.3) "
            "\u22129.1 (\u221210.5 to \u22127.7)") in text
    assert "Ketamine IV withheld, fails diagnostics" in text and "68" not in section  # 0.18 + 0.5: never shown
    for words in ("right if that outcome model is right", "right if those two models are right", "doubly robust",
                  "influence function"):
        assert words in caption
