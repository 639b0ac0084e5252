"""The report's target-trial section, on test_report's hand-built run plus the results_tt_* tables of
analysis.target_trial on an adapter frame from the SSRI-failure simulator (test_target_trial_analysis).

Checked against the run's own tables: the section opens with the answer (the risk differences and
the RMST difference with their intervals, as the table holds them), the protocol table carries the
protocol's settings and the run's attrition, the TARGET checklist lists its 21 items with a status
each, the calibration says "not evaluable" with the counts when controls are missing and shows the
calibrated numbers when there are enough; a run without a target trial shows none of it.
"""

from __future__ import annotations

import dataclasses
import re

import polars as pl
import pytest

from ketaoutcomes.analysis.target_trial import target_trial_analysis
from ketaoutcomes.report.render import render_html
from ketaoutcomes.simulate.ssri_failure import simulate_ssri_failure
from tests.unit.test_report import Reader, make_data
from tests.unit.test_target_trial_analysis import ATTRITION, NC_NAMES, N, SEED, adapter, controlled_run, protocol


def _with_trial(tables: dict, prot, notes: tuple = ()) -> object:
    base = make_data()
    settings = {**base.provenance["settings"], "target_trial": prot.model_dump(mode="json"), "random_seed": SEED}
    return dataclasses.replace(base, tables={**base.tables, **tables}, notes=(*base.notes, *notes),
                               provenance={**base.provenance, "settings": settings})


def _text(html: str) -> str:
    r = Reader()
    r.feed(html)
    assert not r.errors, r.errors
    return re.sub(r"\s+", " ", " ".join(r.text))


@pytest.fixture(scope="module")
def plain_run():
    prot = protocol(NC_NAMES[:5])  # declared, but not in the data: calibration not evaluable
    res = target_trial_analysis(adapter(simulate_ssri_failure(N, seed=SEED)), ATTRITION, protocol=prot, seed=SEED)
    html = render_html(_with_trial(dict(res.tables), prot, res.notes))
    return res, prot, html, _text(html)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def test_the_section_comes_first_with_the_answer_from_the_run(plain_run):
    res, prot, html, text = plain_run
    assert html.index('id="target-trial"') < html.index('id="how-to-read"')
    assert 'href="#target-trial"' in html
    eff = res.table("results_tt_effects").filter((pl.col("variant") == "ccw") & (pl.col("outcome") == "primary"))
    at = {(r["measure"], r["day"]): r for r in eff.iter_rows(named=True)}
    for d in prot.risk_days:
        rd = at[("rd", d)]
        assert f"By day {d}: {_pct(at[('risk_initiate', d)]['estimate'])} of patients had reached response" in text
        lo, hi = (f"{100 * rd[k]:+.1f}".replace("-", "\u2212") for k in ("lower", "upper"))
        assert f"(95% CI {lo} to {hi})" in text, (d, lo, hi)
    rm = at[("rmst_diff", prot.rmst_horizon_days)]
    assert f"{abs(rm['estimate']):.1f} days {'sooner' if rm['estimate'] < 0 else 'later'}" in text
    assert "naive users-vs-users comparison this design replaces" in text


def test_protocol_table_is_filled_from_the_protocol_and_the_run(plain_run):
    res, prot, _, text = plain_run
    assert "Protocol: the target trial and its emulation" in text
    for component in ("Eligibility", "Treatment strategies", "Assignment", "Time zero", "Follow-up", "Outcome",
                      "Causal contrast", "Analysis plan"):
        assert component in text
    assert f"aged {prot.eligibility.min_age}\u2013{prot.eligibility.max_age}" in text
    assert f"on a day 0\u2013{prot.grace_days} after time zero" in text
    assert f"{prot.bootstrap_replicates} person-level bootstrap replicates of the whole procedure (seed {SEED})" in text
    # the run's attrition, step by step (counts as the report shows them: small ones suppressed)
    assert ("patients in the data: 310; SSRI course ended in non-response: <11 excluded, 304 left; adult at time "
            "zero: <11 excluded, 300 left; every covariate of the start model present (missing: none): 0 excluded, "
            "300 left") in text
    starters = int(res.table("results_tt_starts")["starters"].sum())
    assert f"{starters:,} ({100 * starters / N:.1f}%) of 300 patients started ketamine" in text


def test_target_checklist_has_every_item_with_a_status(plain_run):
    _, _, html, text = plain_run
    section = html[html.index("<h3>TARGET checklist</h3>"):]
    section = section[: section.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section, flags=re.S)[1:]
    assert len(rows) == 21
    statuses = [re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)[3] for r in rows]
    assert set(statuses) <= {"done", "not done", "not applicable", "partly done"}
    assert "not done" in statuses and "done" in statuses
    assert "For adults whose SSRI failed" in text  # the causal question, from the protocol


def test_calibration_is_not_evaluable_without_controls_and_shows_no_number(plain_run):
    res, prot, html, text = plain_run
    assert f"not evaluable: 0 usable negative controls, need {prot.min_negative_controls}" in text
    section = html[html.index("Negative controls and empirical calibration"):]
    assert "constant-error model)" not in section.split("</table>")[0]
    assert res.table("results_tt_calibration")["p_calibrated"].is_null().all()
    # the analysis note says why: the declared controls are not in the trial data
    assert f"target trial: negative control(s) {', '.join(NC_NAMES[:5])} not in the trial data: not evaluated" in text


def test_figures_and_counts_are_shown(plain_run):
    res, _, html, text = plain_run
    assert html.count('src="data:image/png;base64,') >= 2 and "Risk curves per strategy" in text
    clones = res.table("results_tt_counts").filter(pl.col("variant") == "ccw")["clones"].to_list()
    assert clones == [N, N] and "Clones, censorings and outcomes" in text


def test_with_enough_controls_the_calibrated_ratio_is_shown():
    prot = protocol(NC_NAMES)
    _, res = controlled_run()
    text = _text(render_html(_with_trial(dict(res.tables), prot)))
    cal = res.table("results_tt_calibration").filter(pl.col("role") == "primary")
    assert "(constant-error model)" in text and "not evaluable:" not in text
    for r in cal.iter_rows(named=True):
        assert f"{r['n_usable']} of {len(NC_NAMES)}" in text and r["status"] in text
    assert all(name in text for name in NC_NAMES)


def test_a_run_without_a_target_trial_has_no_section():
    html = render_html(make_data())
    assert 'id="target-trial"' not in html and "TARGET checklist" not in html and "#target-trial" not in html


def test_a_protocol_naming_its_treatment_arms_says_so(plain_run):
    res, prot, _, _ = plain_run
    iv = prot.model_copy(update={"treatment_arms": ("ketamine_iv",)})
    text = _text(render_html(_with_trial(dict(res.tables), iv)))
    assert "Target trial: start ketamine iv within 30 days of SSRI failure, or no ketamine?" in text
    assert 'under "start ketamine iv within 30 days"' in text and "(a) start ketamine (ketamine_iv) on a day" in text


def test_the_prefect_report_artifact_opens_with_the_trial_s_answer_as_the_page_shows_it(plain_run):
    """digest.key_results carries the section's results table and answer (the same functions draw
    both), and the report artifact's Markdown puts them before the route summary."""
    from ketaoutcomes.report.digest import key_results, report_markdown

    res, prot, html, text = plain_run
    data = _with_trial(dict(res.tables), prot, res.notes)
    record = key_results(data)
    trial = record["target_trial"]
    assert trial["title"].startswith("Target trial: start ketamine within 30 days")
    assert [r[0] for r in trial["rows"]] == [f"risk by day {d}" for d in prot.risk_days] + [
        f"restricted mean days to response (to day {prot.rmst_horizon_days})"]
    assert trial["sentences"] and all(_text(f"<p>{s}</p>").strip() in text for s in trial["sentences"][:1])
    md = report_markdown(record, report_path="r.html", study="s", settings_id="x", run_id="y", rendered=True)
    assert md.index(f"## {trial['title']}") < md.index("## Summary:")
    assert f"| {trial['rows'][0][0]} | {trial['rows'][0][1]} |" in md
    assert key_results(make_data())["target_trial"] is None  # a run without a trial


def test_on_a_simulated_cohort_the_estimates_stand_next_to_the_strategies_truth(plain_run):
    """The truth of simulate.ssri_failure.strategy_truth (a small truth cohort: only the layout is
    checked here) beside each CCW estimate, whether its interval covers it, and the naive one; a
    truth for another grace period is named, not compared."""
    from ketaoutcomes.simulate.ssri_failure import strategy_truth

    res, prot, _, _ = plain_run
    truth = {"strategy_truth": strategy_truth(grace_days=prot.grace_days, n=2000, days=prot.risk_days,
                                              horizon=prot.rmst_horizon_days)}
    data = dataclasses.replace(_with_trial(dict(res.tables), prot, res.notes), truth=truth)
    text = _text(render_html(data))
    st = truth["strategy_truth"]
    eff = res.table("results_tt_effects").filter((pl.col("variant") == "ccw") & (pl.col("outcome") == "primary"))
    rd = {r["day"]: r for r in eff.filter(pl.col("measure") == "rd").iter_rows(named=True)}
    assert "Synthetic cohort: the strategies' truth" in text
    for d in prot.risk_days:
        true = 100 * st["rd"][str(d)]
        covered = "yes" if rd[d]["lower"] <= st["rd"][str(d)] <= rd[d]["upper"] else "no"
        row = re.search(rf"risk difference by day {d} (\S+) points .*?\) (yes|no) ", text)
        assert row and float(row.group(1).replace("\u2212", "-")) == pytest.approx(true, abs=0.051), row
        assert row.group(2) == covered
    assert "truth.json holds the target trial's truth, compared in the Target trial section" in text
    other = dataclasses.replace(data, truth={"strategy_truth": {**st, "grace_days": 14}})
    assert "strategy truth is for a 14-day grace period" in _text(render_html(other))


def test_estimates_past_the_grace_period_are_flagged_when_few_started_on_its_last_day(plain_run):
    """With after_grace = "last_day_weights" and fewer than LATE_STARTERS_MIN last-day starters (the
    simulation study's cohorts had 6-12, and their intervals past the window under-covered), the answer
    says the later estimates rest on them; with enough, it does not. With the default "outcome_model"
    (the run's own protocol) it says they assume the post-start outcome model instead, and the counts
    table shows how many clones the model followed. Checked on the run's own tables, then with day G's
    count set."""
    from ketaoutcomes.report.sections.target_trial import LATE_STARTERS_MIN

    res, prot, _, text = plain_run
    assert prot.after_grace == "outcome_model"
    warning = "Read the estimates past the grace period (day 56, the restricted mean to day 56) with care"
    assert warning not in text
    assert ("Past the grace period (day 56, the restricted mean to day 56), \"start\" follows the patients who had "
            "not started by day 29 as if they started on day 30") in text
    assert "Followed by the outcome model after the grace period" in text
    weights = prot.model_copy(update={"after_grace": "last_day_weights"})
    starts = res.table("results_tt_starts")
    for n, shown in ((3, True), (LATE_STARTERS_MIN, False)):
        tables = dict(res.tables)
        tables["results_tt_starts"] = starts.with_columns(
            pl.when(pl.col("day") == prot.grace_days).then(n).otherwise(pl.col("starters")).alias("starters"))
        page = _text(render_html(_with_trial(tables, weights, res.notes)))
        assert (warning in page) == shown, n
        if shown:
            assert "rest on the <11 patient(s) who started on day 30" in page  # small counts suppressed


def test_a_run_stored_before_after_grace_existed_reads_as_the_last_day_weights(plain_run):
    """Runs before the after_grace setting used the last-day weights: their stored settings (no
    after_grace key) must not be described as the outcome model."""
    res, prot, _, _ = plain_run
    data = _with_trial(dict(res.tables), prot, res.notes)
    spec = {k: v for k, v in data.provenance["settings"]["target_trial"].items() if k != "after_grace"}
    old = dataclasses.replace(data, provenance={**data.provenance,
                                                "settings": {**data.provenance["settings"], "target_trial": spec}})
    page = _text(render_html(old))
    assert "the last-day starters weighted" in page and "as if they started on day 30" not in page
