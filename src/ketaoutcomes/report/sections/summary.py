"""The first screen: does each route act faster than the reference arm, by how much, how sure.

One row per route vs the reference arm for the primary endpoint, from ``results_contrasts`` (the
differences route - reference read off the primary, propensity-weighted or matched, Kaplan-Meier
curves, with bootstrap CIs), ``results_cox`` (the weighted HR, a secondary column) and ``results_ps``
(the gate's verdict), and one plain sentence per route generated from the same numbers. A route
whose comparison fails the diagnostics gate shows no estimate, only why it is withheld.

:func:`plain_reason` rewrites the gate's reasons in words (``SITEID[S06]`` -> "site S06"), and
:func:`grouped_notes` folds the analysis notes into one line per withheld comparison across
endpoints, followed by the other notes, in labels rather than codes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from ketaoutcomes.endpoints import ENDPOINTS, endpoint
from ketaoutcomes.notes import Note
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.format import DASH, EN, MINUS, Fmt, Row, Table, fmt_hr_ci, fmt_num, has, ok
from ketaoutcomes.report.sections.common import PRIMARY_ENDPOINT
from ketaoutcomes.report.sections.weighting import weighted_estimates

__all__ = ["grouped_notes", "plain_reason", "summary_section"]

#: Covariates (ADSL columns) in words.
COVARIATE_WORDS = {"SITEID": "site", "SEX": "sex", "AGE": "age", "BASE": "baseline score",
                   "PRIORFAIL": "prior failed trials", "DIAGNOSIS": "diagnosis", "WEIGHT": "weight",
                   "CONBENZO": "concomitant benzodiazepine", "CONSSRI": "concomitant SSRI"}
#: Levels that are codes themselves.
LEVEL_WORDS = {("SEX", "U"): "unknown", ("SEX", "F"): "female", ("SEX", "M"): "male"}

_TERM = re.compile(r"\b([A-Z][A-Z0-9_]*)\[([^\]]+)\]")


def _term_words(text: str) -> str:
    """``SITEID[S06]`` -> "site S06", ``SEX[U]`` -> "sex unknown"; a bare covariate code in words."""
    text = _TERM.sub(lambda m: f"{COVARIATE_WORDS.get(m[1], m[1])} "
                               f"{LEVEL_WORDS.get((m[1], m[2]), m[2].replace('_', ' '))}", text)
    return re.sub(r"\b(" + "|".join(COVARIATE_WORDS) + r")\b", lambda m: COVARIATE_WORDS[m[1]], text)


def _split_top(text: str, sep: str = "; ") -> list[str]:
    """Split on ``sep`` outside parentheses (a reason may hold '; ' inside its own brackets)."""
    out, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        depth += c == "("
        depth -= c == ")"
        if depth == 0 and text.startswith(sep, i):
            out.append(text[start:i])
            start = i = i + len(sep)
            continue
        i += 1
    return [p.strip() for p in [*out, text[start:]] if p.strip()]


def plain_reason(reasons: str | None) -> str:
    """The gate's reasons ('; '-separated) in plain words, codes replaced by labels:
    "max |SMD| after weighting 0.111 >= 0.1 (SITEID[S06])" -> "imbalance in site S06, 0.111 > 0.1"."""
    if not reasons:
        return "unknown reason"
    out = []
    for r in _split_top(reasons):
        if m := re.fullmatch(r"max \|SMD\| after (?:weighting|matching) ([\d.eE+-]+) >= ([\d.eE+-]+) \((.+)\)", r):
            out.append(f"imbalance in {_term_words(m[3])}, {m[1]} > {m[2]}")
        elif m := re.fullmatch(r"equipoise ([\d.]+%) < ([\d.]+%).*", r):
            out.append(f"too few patients in equipoise, {m[1]} < {m[2]}")
        elif r.startswith("propensity model did not converge"):
            sep = "separation" in r
            out.append("the propensity model did not converge" + (" (the covariates almost separate the arms)"
                                                                    if sep else ""))
        elif m := re.match(r"\|SMD\| after (?:weighting|matching) significantly above ([\d.]+) .*? for (.+)", r):
            out.append(f"imbalance significantly above {m[1]} in {_term_words(m[2])}")
        else:
            out.append(_term_words(r))
    return "; ".join(dict.fromkeys(out))


def _verdict(ps_row: Mapping | None) -> tuple[bool, str]:
    if ps_row is None:
        return False, "withheld: no propensity-score comparison"
    if ps_row.get("diagnostics") == "pass":
        return True, "balanced and in equipoise"
    return False, "withheld: " + plain_reason(ps_row.get("gate_reasons"))


def _signed(x: float, decimals: int) -> str:
    s = f"{abs(x):.{decimals}f}"
    return ("+" if x > 0 else MINUS if x < 0 else "") + s


def _limit(x: Any, decimals: int, scale: float) -> str:
    if not ok(x):
        return "\u221e" if x is None else DASH
    return _signed(scale * float(x), decimals)


def _diff_ci(r: Mapping | None, *, decimals: int, scale: float = 1.0, unit: str = "") -> str:
    """'+17 pp (12 to 23)'; an unbounded side of the interval is \u00b1\u221e."""
    if r is None or not ok(r.get("difference")):
        return "not estimable" if r is not None else DASH
    d = _signed(scale * r["difference"], decimals) + unit
    if not r.get("n_boot"):
        return d
    lo = _limit(r.get("lower"), decimals, scale) if ok(r.get("lower")) else MINUS + "\u221e"
    hi = _limit(r.get("upper"), decimals, scale) if ok(r.get("upper")) else "+\u221e"
    return f"{d} ({lo} to {hi})"


def _mag_ci(r: Mapping, scale: float, decimals: int) -> str:
    """The CI of a difference as magnitudes in the direction of its point estimate ("95% CI 38 to 51",
    for "45 more"), an unbounded side as ∞, and whether it includes no difference."""
    if not r.get("n_boot"):
        return ""
    sign = -1.0 if r["difference"] < 0 else 1.0
    lo = -math.inf if r.get("lower") is None else r["lower"]
    hi = math.inf if r.get("upper") is None else r["upper"]
    a, b = sorted([sign * scale * lo, sign * scale * hi])

    def f(x: float) -> str:
        if math.isinf(x):
            return ("" if x > 0 else MINUS) + "\u221e"
        return (MINUS if x < 0 else "") + f"{abs(x):.{decimals}f}"

    return f" (95% CI {f(a)} to {f(b)}" + ("" if a > 0 else "; this includes no difference") + ")"


def _sentence(label: str, ref: str, rows: Mapping[str, Mapping], event: str, passed: bool, verdict: str) -> str:
    """One sentence in plain words from the pair's contrasts."""
    if not passed:
        return (f"{label}: no primary estimate. The comparison with {ref} is {verdict}; the adjusted and naive "
                f"hazard ratios further down are sensitivity analyses, not a substitute.")
    parts = []
    risks = sorted((r for r in rows.values() if r["measure"] == "risk" and ok(r.get("difference"))),
                   key=lambda r: r["day"])
    if risks:
        r = risks[-1]
        d = 100 * r["difference"]
        parts.append(f"by day {fmt_num(r['day'])}, {abs(d):.0f} {'more' if d >= 0 else 'fewer'} patients in 100 had a "
                     f"{event} than on {ref}{_mag_ci(r, 100, 0)}")
    m = rows.get("median")
    if m and ok(m.get("value_target")) and ok(m.get("value_comparator")):
        d = m["difference"]
        ci = ""
        if m.get("n_boot"):  # signed: a median not reached in some replicates leaves a side unbounded
            ci = f" (difference {_diff_ci(m, decimals=0).replace(' (', ' days, 95% CI ', 1)}"
            if not _diff_ci(m, decimals=0).endswith(")"):
                ci += " days)"
        parts.append(f"the median time to {event} was {fmt_num(m['value_target'])} days against "
                     f"{fmt_num(m['value_comparator'])}, {fmt_num(abs(d))} days {'sooner' if d < 0 else 'later'}{ci}")
    elif m:
        parts.append(f"the median time to {event} was not reached in " +
                     ("either arm" if not ok(m.get("value_target")) and not ok(m.get("value_comparator"))
                      else label if not ok(m.get("value_target")) else ref))
    rm = rows.get("rmst")
    if rm and ok(rm.get("difference")):
        d = rm["difference"]
        parts.append(f"over the first {fmt_num(rm['day'])} days, patients spent {abs(d):.1f} "
                     f"{'fewer' if d < 0 else 'more'} days without a {event}{_mag_ci(rm, 1, 1)}")
    if not parts:
        return f"{label} ({verdict}): no difference could be estimated from the weighted curves."
    text = "; ".join(parts)
    return f"{label} ({verdict}): {text[0].upper()}{text[1:]}."


def summary_section(contrasts: pl.DataFrame, cox: pl.DataFrame, ps: pl.DataFrame, arms: Arms, fmt: Fmt,
                    provenance: Mapping) -> dict[str, Any]:
    """The summary block: a table (one row per route), one sentence per route, and how the CIs were made."""
    p = PRIMARY_ENDPOINT
    info = endpoint(p)
    ref = arms.label(arms.reference) if arms.reference else "the reference arm"
    out: dict[str, Any] = {"table": None, "sentences": [], "method": "", "endpoint": info.label.lower(),
                           "reason": ""}
    if not has(ps, "paramcd", "target", "diagnostics"):
        out["reason"] = "not available: no propensity-score comparison was passed to the report"
        return out
    verdicts = {r["target"]: r for r in ps.filter(pl.col("paramcd") == p).iter_rows(named=True)}
    if not verdicts:
        out["reason"] = f"not available: no propensity-score comparison of {info.short}"
        return out
    by_pair: dict[str, dict[str, Mapping]] = {}
    if has(contrasts, "paramcd", "target", "estimand", "measure"):
        for r in contrasts.filter(pl.col("paramcd") == p).iter_rows(named=True):
            key = r["estimand"] if r["measure"] == "risk" else r["measure"]
            by_pair.setdefault(r["target"], {})[key] = r
    days = sorted({r["day"] for rows in by_pair.values() for r in rows.values() if r["measure"] == "risk"})
    settings = provenance.get("settings") if isinstance(provenance.get("settings"), Mapping) else {}
    horizon = (settings.get("models") or {}).get("rmst_horizon_days", 56) if isinstance(settings, Mapping) else 56
    weighted = weighted_estimates(cox, p)
    rows, sentences = [], []
    for target in arms.sort(list(verdicts)):
        passed, verdict = _verdict(verdicts.get(target))
        pair = by_pair.get(target, {})
        label = arms.label(target)
        med = pair.get("median")
        if passed:
            meds = (f"{fmt_num(med['value_target']) if ok(med.get('value_target')) else 'not reached'} vs "
                    f"{fmt_num(med['value_comparator']) if ok(med.get('value_comparator')) else 'not reached'}"
                    if med else DASH)
            risk_cells = [_diff_ci(pair.get(f"risk_d{d:g}"), decimals=0, scale=100, unit=" pp") for d in days]
            rm = pair.get("rmst")
            rm_cell = _diff_ci(rm, decimals=1)
            if rm is not None and ok(rm.get("difference")) and rm.get("day") is not None and rm["day"] < horizon:
                rm_cell += f"\nto day {fmt_num(rm['day'])}, where follow-up thins out"
            hr = weighted.get(target)
            cells = [meds, _diff_ci(med, decimals=0), *risk_cells, rm_cell,
                     fmt_hr_ci(hr.get("hr"), hr.get("hr_lower"), hr.get("hr_upper")) if hr else DASH]
        else:
            cells = [DASH] * (4 + len(days))  # the verdict says why: nothing to read here
        rows.append(Row([label, verdict, *cells], "" if passed else "bad"))
        sentences.append(_sentence(label, ref, pair, info.event, passed, verdict))
    ci = fmt.ci_label
    route = arms.route  # "route" (of ketamine) or "arm": the study's word
    columns = [f"{route.capitalize()} vs {ref}", "Diagnostics (balance, equipoise)",
               f"Median days to {info.event}, {route} vs {ref}",
               f"Difference in median days ({ci})",
               *(f"Difference in % with {info.event} by day {fmt_num(d)} ({ci})" for d in days),
               f"Difference in days without {info.event} up to day {fmt_num(horizon)} ({ci})",
               f"Weighted HR ({ci}), secondary"]
    out["table"] = Table(columns, rows, align="ll" + "r" * (len(columns) - 2), wide=True)
    out["sentences"] = sentences
    n_boot = max((r.get("n_boot") or 0 for rows_ in by_pair.values() for r in rows_.values()), default=0)
    seed = settings.get("random_seed") if isinstance(settings, Mapping) else None
    weighting = str((settings.get("propensity") or {}).get("weighting", "iptw")) if isinstance(settings, Mapping) else "iptw"
    how = {"iptw": "inverse-probability-of-treatment weighted", "overlap": "overlap-weighted",
           "matching": "1:1 propensity-score matched"}.get(weighting, weighting)
    boot = (f"95% CIs of the differences: a person-level bootstrap of the whole weighted estimation ({n_boot} "
            f"replicates: the patients of each pair drawn with replacement, the propensity model refitted and the "
            f"weights recomputed in every replicate; seeded from the study's random seed"
            f"{f' {seed}' if seed is not None else ''}). Differences in the share by a day: each arm's Wilson score "
            "interval at the sample size its bootstrap variance implies, combined by MOVER (Newcombe's method; the "
            "spread of a share of few patients grows with its value, which a percentile interval ignores); median "
            "and restricted-mean differences: percentile intervals of the replicates." if n_boot else
            "No bootstrap was run (models.bootstrap_replicates = 0): the differences have no CI.")
    models = (settings.get("models") or {}) if isinstance(settings, Mapping) else {}
    k = models.get("contrast_min_at_risk", 10)
    share = models.get("contrast_min_at_risk_share", 0.0)
    floor = f"{k} patients, or {share:.0%} of the arm if more," if share else f"{k} patients"
    out["method"] = (
        f"{route.capitalize()} minus {ref}, read off the {how} Kaplan-Meier curves of {info.short} (the primary "
        f"comparison): pp = percentage points of patients with a {info.event} by that day (positive: more on the "
        f"{route}); "
        f"days without {info.event} = restricted mean time without {info.event} up to day {fmt_num(horizon)}, or up to "
        f"the last day with at least {floor} still at risk in each arm (negative: the {route} shortens the wait). {boot} "
        f"The weighted HR has a robust (sandwich) CI and assumes proportional hazards. Not estimable: fewer than "
        f"{floor} of an arm still at risk on that day (models.contrast_min_at_risk, contrast_min_at_risk_share), "
        f"where a curve rests on a handful of patients. A comparison that fails its diagnostics is withheld{EN}its "
        f"estimates are not results to read.")
    return out


def grouped_notes(notes: Sequence[Note], ps: pl.DataFrame, arms: Arms) -> tuple[list[str], int]:
    """The analysis notes for the folded notes box: one line per withheld comparison (route vs the
    reference arm) across endpoints, then every other note; codes replaced by labels. Returns
    (lines, number of withheld comparisons)."""
    ref = arms.label(arms.reference) if arms.reference else "the reference arm"
    lines: list[str] = []
    failing: dict[str, dict[str, list[str]]] = {}
    if has(ps, "paramcd", "target", "diagnostics"):
        rank = {c: i for i, c in enumerate(ENDPOINTS)}
        for r in sorted(ps.filter(pl.col("diagnostics") != "pass").iter_rows(named=True),
                        key=lambda r: rank.get(r["paramcd"], len(rank))):
            failing.setdefault(r["target"], {}).setdefault(plain_reason(r.get("gate_reasons")), []).append(
                endpoint(r["paramcd"]).short)
    for target in arms.sort(list(failing)):
        parts = [f"{', '.join(eps)} ({why})" for why, eps in failing[target].items()]
        lines.append(f"{arms.label(target)} vs {ref}: primary comparison withheld for " + "; ".join(parts) + ".")
    codes = {a: arms.label(a) for a in arms.order}
    word = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, sorted(codes, key=len, reverse=True)))
                      + r")(?![A-Za-z0-9_])") if codes else None
    for n in notes:
        if n.severity == "withheld" and n.arms and all(a in failing for a in n.arms):
            continue  # said once per comparison above
        text = _term_words(n.text)
        if word is not None:
            text = word.sub(lambda m: codes[m[1]], text)
        where = endpoint(n.endpoint).short.capitalize() + ": " if n.endpoint else ""
        lines.append(where + text)
    return lines, len(failing)
