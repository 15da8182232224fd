"""Layout of the study report's figures (`fedsim.report.study.along`,
`fedsim.report.study.figures`): legends that name methods only and fit inside
the figure, one panel per metric x group, interval and "not reached" entries
only when there is something to explain, coinciding lines drawn once, and
tick labels that hold the axis values (Mbps, P_R)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colorbar import Colorbar
from matplotlib.figure import Figure

from fedsim.report.inputs import StudyReportInput, SweepAxis
from fedsim.report.methods import MethodStyle
from fedsim.report.study.along import MAX_FACET_COLUMNS, along_layout, metrics_along_axis
from fedsim.report.study.analysis import configurations, metric_grid
from fedsim.report.study.figures import tta_heatmap
from fedsim.report.style import RC

LINK = "system.clients.uplink.median"
WORK = "system.compute.work"
METHODS = ("original", "hp-fl")
RATES = {"original": 1.0, "hp-fl": 0.41}


def make_sweep(n_links: int, n_work: int, seeds: tuple[int, ...] = (0,),
               unreached: bool = False) -> pd.DataFrame:
    """A hand-made sweep: ``n_links`` uplink speeds x ``n_work`` compute models
    x ``seeds`` x two methods at one target (0.9). CTA depends on the method
    and the compute model only, so along the link its lines coincide; TTA
    falls with the link. ``unreached``: hp-fl misses the target at the
    slowest link."""
    rows = []
    for i in range(n_links):
        link = 0.25e6 * 2.0**i
        for w in range(n_work):
            for seed in seeds:
                for method in METHODS:
                    cta = 100.0 * (1 + w) * (0.5 if method == "hp-fl" else 1.0)
                    tta = cta + 1e9 / link + 7.0 * seed
                    missed = unreached and method == "hp-fl" and i == 0
                    rows.append({
                        LINK: link, f"{LINK}_label": f"{link / 1e6:g} Mbps",
                        WORK: float(w), f"{WORK}_label": ["remaining_rate", "dense", "x3", "x4", "x5"][w],
                        "seed": seed, "method": method, "remaining_rate": RATES[method],
                        "target_accuracy": 0.9, "nra": 10, "cca_bytes": 1e6,
                        "cta_s": math.nan if missed else cta, "tta_s": math.nan if missed else tta,
                        "final_accuracy": 0.93,
                    })
    return pd.DataFrame(rows)


def report_of(with_work: bool) -> StudyReportInput:
    axes = [SweepAxis(LINK, "median client uplink", "bandwidth")]
    if with_work:
        axes.append(SweepAxis(WORK, "compute model"))
    return StudyReportInput(name="t", axes=tuple(axes), methods=METHODS, targets=(0.9,))


def draw_along(sweep: pd.DataFrame, axis: str, with_work: bool,
               metrics: tuple[tuple[str, str, str], ...] = (("cta_s", "CTA", "seconds"),
                                                            ("tta_s", "TTA", "seconds"))) -> Figure:
    report = report_of(with_work)
    style = MethodStyle.build(report, sweep["method"].astype(str))
    axes = [LINK, WORK] if with_work else [LINK]
    with matplotlib.rc_context(RC):
        fig = metrics_along_axis(sweep, axis, axes, 0.9, configurations(sweep, style), style,
                                 report, metrics=metrics)
        fig.draw_without_rendering()  # constrained layout places the legend
    return fig


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def panels(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def assert_legends_inside(fig: Figure) -> None:
    renderer = fig._get_renderer()
    box = fig.bbox
    for legend in fig.legends:
        extent = legend.get_window_extent(renderer)
        assert extent.width <= box.width and extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, (
            extent, box)
        assert extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1, (extent, box)


def test_layout_rule() -> None:
    assert along_layout(1) == "single"
    assert along_layout(2) == "facets" and along_layout(MAX_FACET_COLUMNS) == "facets"
    assert along_layout(MAX_FACET_COLUMNS + 1) == "colormap"


def test_many_other_values_become_a_colour_map_not_a_legend() -> None:
    # the audit's case: 9 uplink speeds along the compute model, one seed
    fig = draw_along(make_sweep(9, 2), WORK, with_work=True)
    # two metrics x two methods: four panels, one colour bar of the 9 speeds
    assert len(panels(fig)) == 4
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    ticks = [t.get_text() for t in bars[0].get_yticklabels()]
    assert ticks == [f"{0.25 * 2**i:g} Mbps" for i in range(9)]
    assert bars[0].get_ylabel() == "median client uplink"
    texts = legend_texts(fig)
    # no per-(method, speed) entries and no interval for a single seed
    assert texts == ["lines that coincide, drawn once"]
    assert not any("Mbps" in t for t in texts)
    assert_legends_inside(fig)
    # CTA does not depend on the link: the 9 lines of each panel are one line
    first_row = panels(fig)[:2]
    assert first_row[0].get_ylabel() == "CTA@90 % (min)"
    assert [ax.get_title() for ax in first_row] == ["original", "hp-fl"]
    for ax in first_row:
        data_lines = [line for line in ax.get_lines() if line.get_linestyle() != "None"]
        assert len(data_lines) == 1
        assert any(t.get_text() == "all 9 coincide" for t in ax.texts)
    # TTA differs by link: 9 lines in each panel of the second row
    for ax in panels(fig)[2:]:
        data_lines = [line for line in ax.get_lines() if line.get_linestyle() != "None"]
        assert len(data_lines) == 9
        assert not ax.texts


def test_few_other_values_are_columns_with_a_legend_of_methods_only() -> None:
    fig = draw_along(make_sweep(9, 2), LINK, with_work=True, metrics=(("tta_s", "TTA", "seconds"),))
    assert len(panels(fig)) == 2
    titles = [ax.get_title() for ax in panels(fig)]
    assert titles == ["compute model = remaining_rate", "compute model = dense"]
    assert legend_texts(fig) == ["original", "hp-fl"]
    assert_legends_inside(fig)
    # crowded ticks: every value has a tick, but not every tick a label
    labels = [t.get_text() for t in panels(fig)[0].get_xticklabels()]
    assert len(labels) == 9 and "0.25 Mbps" in labels and 0 < labels.count("") < 9
    # the panels share their y axis
    assert panels(fig)[0].get_ylim() == panels(fig)[1].get_ylim()
    assert not any(isinstance(getattr(ax, "_colorbar", None), Colorbar) for ax in fig.axes)


def test_interval_entry_only_with_several_seeds() -> None:
    one = draw_along(make_sweep(3, 1), LINK, with_work=False)
    assert "95 % interval over seeds" not in legend_texts(one)
    assert not any(ax.collections for ax in panels(one))  # no band drawn
    two = draw_along(make_sweep(3, 1, seeds=(0, 1)), LINK, with_work=False)
    assert "95 % interval over seeds" in legend_texts(two)
    assert any(ax.collections for ax in panels(two))
    # a single group: panels titled by metric only, in one row
    assert [ax.get_title() for ax in panels(two)] == ["CTA@90 %", "TTA@90 %"]


def test_not_reached_entries_follow_the_data() -> None:
    fig = draw_along(make_sweep(3, 1, unreached=True), LINK, with_work=False)
    assert "not reached (x at top)" in legend_texts(fig)
    fig = draw_along(make_sweep(3, 1), LINK, with_work=False)
    assert "not reached (x at top)" not in legend_texts(fig)


def test_long_legend_wraps_inside_the_figure() -> None:
    # many configurations: the legend takes several columns, never wider than the figure
    sweep = make_sweep(3, 1)
    extra = []
    for k in range(12):
        part = sweep[sweep["method"] == "hp-fl"].copy()
        part["method"] = f"a-method-with-a-rather-long-name-{k}"
        part[["cta_s", "tta_s"]] *= 1.0 + (k + 1) / 100  # no line coincides with another
        extra.append(part)
    sweep = pd.concat([sweep, *extra], ignore_index=True)
    fig = draw_along(sweep, LINK, with_work=False)
    assert len(legend_texts(fig)) == 14
    (legend,) = fig.legends
    assert 1 < legend._ncols < 14  # wrapped into rows, more than one column
    assert_legends_inside(fig)


def _heatmap(sweep: pd.DataFrame) -> Figure:
    report = report_of(with_work=False)
    style = MethodStyle.build(report, sweep["method"].astype(str))
    grid = metric_grid(sweep, configurations(sweep, style), LINK, 0.9)
    labels = {float(v): f"{v / 1e6:g} Mbps" for v in grid.link_values}
    with matplotlib.rc_context(RC):
        fig = tta_heatmap(grid, style, labels, "median client uplink", "t")
        fig.draw_without_rendering()
    return fig


def test_heatmap_says_not_reached_only_when_a_cell_missed() -> None:
    reached = _heatmap(make_sweep(3, 1))
    assert legend_texts(reached) == ["best configuration per column (lowest mean TTA)"]
    missed = _heatmap(make_sweep(3, 1, unreached=True))
    assert legend_texts(missed)[-1] == "not reached"
    for fig in (reached, missed):
        assert_legends_inside(fig)


def test_heatmap_ticks_hold_the_axis_values() -> None:
    fig = _heatmap(make_sweep(3, 1))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["original, P_R 1.0", "hp-fl, P_R 0.41"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.25 Mbps", "0.5 Mbps", "1 Mbps"]


@pytest.mark.parametrize("n_links", [2, 9])
def test_panels_have_a_sensible_aspect(n_links: int) -> None:
    fig = draw_along(make_sweep(n_links, 2), WORK, with_work=True)
    renderer = fig._get_renderer()
    for ax in panels(fig):
        box = ax.get_window_extent(renderer)
        assert 0.4 <= box.height / box.width <= 2.0, (box.width, box.height)
    assert np.isfinite(fig.get_figheight())


def test_coinciding_configurations_are_drawn_once_and_named_in_the_legend() -> None:
    sweep = make_sweep(3, 1)
    hp = sweep["method"] == "hp-fl"
    sweep.loc[hp, "tta_s"] = sweep.loc[~hp, "tta_s"].to_numpy()  # hp-fl's TTA = original's
    fig = draw_along(sweep, LINK, with_work=False)
    cta, tta = panels(fig)
    solid = [line for line in tta.get_lines() if line.get_linestyle() != "None"]
    assert len(solid) == 1  # one line for both, in the neutral colour
    assert matplotlib.colors.to_hex(solid[0].get_color()) == "#333333"
    assert len([line for line in cta.get_lines() if line.get_linestyle() != "None"]) == 2
    note = [t for t in legend_texts(fig) if "coincide" in t]
    assert len(note) == 1 and "original = hp-fl" in note[0] and "TTA@90 %" in note[0]
    assert "CTA" not in note[0]
    assert_legends_inside(fig)
