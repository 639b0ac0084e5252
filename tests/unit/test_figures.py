"""The report's figures, read back from the matplotlib objects that make them.

Checked: every arm has its own (line style, marker) as well as its colour, from one mapping used by
every figure; the number-at-risk table under a Kaplan-Meier plot holds the Kaplan-Meier risk set at
each tick (against a brute-force count and models.km) and sits at the x of the plot's ticks; the
legend does not take the plot's width; percentage ticks keep their decimals (2.5% is "2.5%"); the
love plot has one panel per route, labelled with covariate names rather than codes; figures are the
same bytes when drawn twice.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.ticker import FixedLocator

from ketaoutcomes.models.km import kaplan_meier
from ketaoutcomes.registries import load_registries
from ketaoutcomes.report import figures
from ketaoutcomes.report.arms import Arms
from ketaoutcomes.report.figures.base import DPI, PALETTE, ExactPercentFormatter, percent_decimals
from ketaoutcomes.report.format import Fmt, covariate_label, covariate_order
from ketaoutcomes.report.sections.common import numbers_at_risk
from ketaoutcomes.report.sections.endpoints import endpoint_section
from ketaoutcomes.report.sections.weighting import preference_section, weighting_section

REGISTRY_LABELS = {code: arm.label for code, arm in load_registries().arms.items()}


def registry_arms() -> Arms:
    return Arms("ssri", tuple(Arms("ssri", (), REGISTRY_LABELS).sort(REGISTRY_LABELS)), REGISTRY_LABELS)


def drawn(fig):
    with figures.drawing():
        FigureCanvasAgg(fig).draw()
    return fig


# --------------------------------------------------------------------------- arm styles
def test_every_arm_has_its_own_line_style_and_marker():
    arms = registry_arms()
    styles = {a: arms.style(a) for a in arms.order}
    assert len(styles) >= 6
    pairs = [(s.linestyle, s.marker) for s in styles.values()]
    assert len(set(pairs)) == len(pairs), styles
    colours = [s.color for s in styles.values()]
    assert len(set(colours)) == len(colours)
    assert styles["ssri"] == figures.ArmStyle("#000000", "--", "")
    # beyond the registry: distinct for as many routes as markers x line styles
    many = [figures.arm_style(i, is_reference=False) for i in range(21)]
    assert len({(s.linestyle, s.marker) for s in many}) == 21
    assert {s.color for s in many[: len(PALETTE)]} == set(PALETTE)


def test_figures_take_the_arm_style_from_the_one_mapping():
    """The KM curve of an arm is drawn with the style Arms.style gives it: colour, line style, marker."""
    arms = registry_arms()
    curves = []
    for i, arm in enumerate(("ssri", "ketamine_iv", "esketamine_intranasal")):
        t = np.arange(1.0, 30.0)
        curves.append(figures.KMCurve(arms.label(arm), arms.style(arm), t, np.linspace(0, 0.5 + i / 10, t.size),
                                      np.full(t.size, np.nan), np.full(t.size, np.nan), np.array([])))
    fig = figures.km_fig(curves, xlabel="d", ylabel="p", ticks=[0.0, 14.0, 28.0], band_label="95% CI")
    ax = fig.axes[0]
    for c in curves:
        lines = [ln for ln in ax.get_lines() if ln.get_color() == c.style.color]
        assert any(ln.get_linestyle() == c.style.linestyle and ln.get_drawstyle() == "steps-post" for ln in lines)
        assert any(ln.get_marker() == c.style.marker for ln in lines) == bool(c.style.marker)
    legend = fig.legends[0]
    entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)}
    for c in curves:
        h = entries[c.label]
        assert (h.get_color(), h.get_linestyle(), h.get_marker()) == (c.style.color, c.style.linestyle,
                                                                       c.style.marker or "None")


# --------------------------------------------------------------------------- number at risk
@pytest.fixture(scope="module")
def km_case():
    """Courses of three arms with ties, censoring and an arm that ends early; KM from models.km."""
    rng = np.random.default_rng(3)
    rows = []
    for arm, n, scale in (("ssri", 120, 60.0), ("ketamine_iv", 90, 15.0), ("ketamine_oral", 14, 10.0)):
        t = np.floor(rng.exponential(scale, n))
        c = np.floor(rng.uniform(5, 40 if arm == "ketamine_oral" else 110, n))
        rows += [{"USUBJID": f"{arm}{i}", "ARM": arm, "PARAMCD": "TTRESP", "AVAL": float(min(a, b)),
                  "CNSR": 0 if a <= b else 1} for i, (a, b) in enumerate(zip(t, c, strict=True))]
    adtte = pl.DataFrame(rows)
    res = kaplan_meier(adtte.with_columns((pl.col("CNSR") == 0).cast(pl.Int8).alias("EVENT")),
                       time="AVAL", event="EVENT", group="ARM")
    km = res.table.with_columns(pl.lit("TTRESP").alias("paramcd"))
    return adtte, km


def test_numbers_at_risk_are_the_km_risk_set(km_case):
    adtte, km = km_case
    ticks = figures.time_ticks(float(adtte["AVAL"].max()))
    for arm in ("ssri", "ketamine_iv", "ketamine_oral"):
        times = adtte.filter(pl.col("ARM") == arm)["AVAL"].to_numpy()
        brute = [int((times >= t).sum()) for t in ticks]  # courses still followed at day t
        assert numbers_at_risk(km.filter(pl.col("group") == arm), ticks) == brute
        assert brute[-1] == 0 or arm == "ssri"


def test_risk_table_under_the_km_plot_is_aligned_with_its_ticks(km_case, monkeypatch):
    adtte, km = km_case
    seen = {}

    def capture(curves, **kw):
        seen.update(curves=curves, **kw)
        return "data:image/png;base64,"

    monkeypatch.setattr(figures, "km_figure", capture)
    arms = Arms("ssri", ("ssri", "ketamine_iv", "ketamine_oral"), REGISTRY_LABELS)
    fmt = Fmt(suppress=True, ci_label="95% CI", small_cell_max=10)
    empty = pl.DataFrame()
    endpoint_section("TTRESP", adtte=adtte, km=km, km_median=empty, logrank=empty, cox=empty, cox_fit=empty,
                     arms=arms, fmt=fmt, notes=())
    ticks, curves = seen["ticks"], seen["curves"]
    fig = drawn(figures.km_fig(curves, xlabel="x", ylabel="y", ticks=ticks, band_label="95% CI"))
    plot, table = fig.axes
    assert table.get_shared_x_axes().joined(plot, table)
    # one row per arm, labelled with the arm's label in its colour, top row = first arm
    labels = table.get_yticklabels()
    assert [t.get_text() for t in labels] == [arms.label(a) for a in reversed(arms.order)]
    assert [t.get_color() for t in labels] == [arms.style(a).color for a in reversed(arms.order)]
    renderer = fig.canvas.get_renderer()
    tick_x = {round(t, 6): plot.transData.transform((t, 0))[0] for t in plot.get_xticks()}
    assert sorted(tick_x) == sorted(round(t, 6) for t in ticks)
    for row, arm in enumerate(arms.order):
        times = adtte.filter(pl.col("ARM") == arm)["AVAL"].to_numpy()
        y = len(arms.order) - 1 - row
        texts = sorted((t for t in table.texts if t.get_position()[1] == y), key=lambda t: t.get_position()[0])
        assert [t.get_text() for t in texts] == [fmt.count(int((times >= tick).sum())) for tick in ticks]
        for t, tick in zip(texts, ticks, strict=True):
            box = t.get_window_extent(renderer)
            assert abs((box.x0 + box.x1) / 2 - tick_x[round(tick, 6)]) < 1.0  # centred under the tick, to a pixel
    assert any(t.get_text() == "<11" for t in table.texts)  # the small oral arm: suppressed as in the tables


def test_legend_sits_above_the_plot_not_beside_it(km_case, monkeypatch):
    adtte, km = km_case
    curves = [figures.KMCurve(a, figures.arm_style(i, is_reference=i == 0), np.array([1.0, 5.0]),
                              np.array([0.1, 0.2]), np.array([0.05, 0.1]), np.array([0.2, 0.3]), np.array([]),
                              at_risk=("10", "5", "1"))
              for i, a in enumerate(["Esketamine intranasal", "Ketamine sublingual", "SSRI", "Ketamine IV"])]
    fig = drawn(figures.km_fig(curves, xlabel="x", ylabel="y", ticks=[0.0, 7.0, 14.0], band_label="95% CI"))
    plot = fig.axes[0]
    fig_box = fig.bbox
    plot_box = plot.get_window_extent()
    legend_box = fig.legends[0].get_window_extent()
    assert legend_box.y0 >= plot_box.y1 - 1  # above the plot
    assert plot_box.x1 > 0.9 * fig_box.x1  # the plot runs to the right edge: no legend column beside it


# --------------------------------------------------------------------------- percent ticks
def test_percent_ticks_keep_their_decimals():
    assert percent_decimals([0.0, 0.025, 0.05, 0.075]) == 1
    assert percent_decimals([0.0, 0.05, 0.1]) == 0
    assert percent_decimals([0.0, 0.0025]) == 2
    f = ExactPercentFormatter()
    assert f.format_ticks([0.0, 0.025, 0.05]) == ["0.0%", "2.5%", "5.0%"]
    assert f.format_ticks([0.0, 0.2, 0.4]) == ["0%", "20%", "40%"]
    assert f.format_ticks([-1e-18, 0.5]) == ["0%", "50%"]


def test_preference_axis_shows_2_5_percent_as_2_5_percent():
    edges = np.linspace(0, 1, 21)
    ref = np.zeros(20)
    ref[[3, 4, 5, 6]] = [20, 40, 30, 10]
    route = np.r_[np.full(10, 3.0), np.zeros(10)]
    fig = figures.balance.preference_fig(
        [("Ketamine IV vs SSRI", [("Ketamine IV", figures.arm_style(0, is_reference=False), route)]),
         ("SSRI only", [("SSRI", figures.arm_style(0, is_reference=True), ref)])], edges=edges, bounds=(0.3, 0.7))
    fig.axes[0].yaxis.set_major_locator(FixedLocator([0.0, 0.025, 0.05, 0.075, 0.1]))  # ticks as in the report
    drawn(fig)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["0.0%", "2.5%", "5.0%", "7.5%", "10.0%"]
    for ax in fig.axes:  # whatever ticks the axis chose itself, each label is its tick's value exactly
        for tick, label in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True):
            if ax.get_ylim()[0] <= tick <= ax.get_ylim()[1]:
                assert float(label.get_text().rstrip("%")) == pytest.approx(100 * tick, abs=1e-9), label


# --------------------------------------------------------------------------- love plot
def test_covariate_labels():
    assert covariate_label("SITEID[S06]") == "Site: S06"
    assert covariate_label("SEX[F]") == "Sex: female"
    assert covariate_label("BASE", instrument="MADRS") == "Baseline MADRS"
    assert covariate_label("DIAGNOSIS[bipolar_depression]") == "Diagnosis: bipolar depression"
    assert covariate_label("PRIORFAIL") == "Prior failed trials"
    assert covariate_label("CUSTOM[x]") == "CUSTOM: x"  # an unknown column keeps its code
    assert covariate_order(["SITEID[S02]", "BASE", "SEX[M]", "AGE", "SITEID[S01]", "SEX[F]", "ZZZ", "AGE"]) == [
        "AGE", "SEX[F]", "SEX[M]", "BASE", "SITEID[S01]", "SITEID[S02]", "ZZZ"]


def balance_frame(targets: list[str]) -> pl.DataFrame:
    rows = []
    for k, t in enumerate(targets):
        for j, cov in enumerate(["SITEID[S06]", "AGE", "SEX[F]", "BASE", "PRIORFAIL", "SITEID[S01]"]):
            rows.append({"paramcd": "TTRESP", "target": t, "covariate": cov, "abs_smd_before": 0.05 + 0.1 * j + 0.01 * k,
                         "abs_smd_after": 0.01 * (j + 1)})
    return pl.DataFrame(rows)


def test_love_plot_has_one_panel_per_route_with_covariate_names(monkeypatch):
    arms = registry_arms()
    routes = ["ketamine_iv", "ketamine_im", "esketamine_intranasal", "ketamine_oral"]
    seen = {}
    real = figures.love_plot

    def capture(panels, **kw):
        seen.update(panels=panels, **kw)
        return real(panels, **kw)

    monkeypatch.setattr(figures, "love_plot", capture)
    ps = pl.DataFrame({"paramcd": ["OTHER"] * 4, "target": routes, "diagnostics": ["pass"] * 4})  # no table rows
    out = weighting_section(ps, balance_frame(routes), None, arms, {"instrument": "MADRS"})
    assert out["love"].startswith("data:image/png;base64,")
    panels = seen["panels"]
    assert [p[0] for p in panels] == [f"{arms.label(r)} vs SSRI" for r in arms.sort(routes)]
    assert [p[1] for p in panels] == [arms.style(r) for r in arms.sort(routes)]
    assert [c for c, _, _ in panels[0][2]] == ["Age", "Sex: female", "Baseline MADRS", "Prior failed trials",
                                               "Site: S01", "Site: S06"]
    fig = drawn(figures.balance.love_fig(panels, threshold=0.1))
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == len(routes)
    assert [t.get_text() for t in shown[0].get_yticklabels()][::-1] == [c for c, _, _ in panels[0][2]]
    assert not any("[" in t.get_text() for ax in shown for t in ax.get_yticklabels())
    # every panel under which no other panel sits shows its |SMD| scale
    assert all(any(t.get_text() for t in ax.get_xticklabels()) for ax in shown[-2:] + [shown[2]])


# --------------------------------------------------------------------------- determinism
def test_figures_are_the_same_bytes_twice(km_case):
    adtte, km = km_case
    arms = registry_arms()
    curves = [figures.KMCurve(arms.label(a), arms.style(a), k["time"].to_numpy(), 1 - k["survival"].to_numpy(),
                              1 - k["upper"].to_numpy(), 1 - k["lower"].to_numpy(), np.array([]), at_risk=("9", "3"))
              for a in ("ssri", "ketamine_iv") for k in [km.filter(pl.col("group") == a).fill_null(float("nan"))]]
    routes = ["ketamine_iv", "ketamine_oral"]
    ps = pl.DataFrame({"paramcd": ["OTHER"] * 2, "target": routes, "diagnostics": ["pass"] * 2})
    pref = pl.DataFrame([{"paramcd": "TTRESP", "target": t, "arm": a, "lower": b / 10, "upper": (b + 1) / 10,
                          "n": (b * 7 + len(a)) % 13} for t in routes for a in (t, "ssri") for b in range(10)])
    twice = [(figures.km_figure(curves, xlabel="x", ylabel="y", ticks=[0.0, 28.0], band_label="95% CI"),
              weighting_section(ps, balance_frame(routes), None, arms, {})["love"],
              preference_section(pref, arms, {})) for _ in range(2)]
    assert twice[0] == twice[1] and all(x.startswith("data:image/png") for x in twice[0])


# --------------------------------------------------------------------------- forest plot
@pytest.mark.parametrize(("lo", "hi"), [(0.75, 40.0), (1.2, 13.0), (0.6, 5.4), (0.05, 2.0), (0.9, 600.0)])
def test_forest_ticks_label_the_whole_axis(lo, hi):
    """Ticks lie on the axis and reach within a factor 2.5 of both ends (an axis to 40 was labelled only to 10)."""
    ticks = figures.forest.log_ticks(lo, hi)
    assert 3 <= len(ticks) <= 8
    assert all(lo <= t <= hi for t in ticks)
    assert ticks[0] <= lo * 2.5 and ticks[-1] >= hi / 2.5, ticks


def test_png_is_the_bytes_savefig_writes(km_case):
    # png_data_uri draws once and encodes the canvas; matplotlib's savefig (what it replaced) draws a
    # figure with a layout engine twice: the bytes must be the same
    import base64
    import io

    adtte, km = km_case
    arms = registry_arms()
    curves = [figures.KMCurve(arms.label(a), arms.style(a), k["time"].to_numpy(), 1 - k["survival"].to_numpy(),
                              1 - k["upper"].to_numpy(), 1 - k["lower"].to_numpy(), np.array([5.0]), at_risk=("9", "3"))
              for a in ("ssri", "ketamine_iv") for k in [km.filter(pl.col("group") == a).fill_null(float("nan"))]]

    def fig():
        return figures.km_fig(curves, xlabel="x", ylabel="y", ticks=[0.0, 28.0], band_label="95% CI")

    with figures.drawing():
        ours = base64.b64decode(figures.png_data_uri(fig()).split(",", 1)[1])
        f = fig()
        FigureCanvasAgg(f)
        buf = io.BytesIO()
        f.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    assert f.get_layout_engine() is not None and ours == buf.getvalue()
