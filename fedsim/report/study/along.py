"""Each metric of a study along one of its axes, as small multiples that stay
readable whatever the number of values of the other axes.

The figure is a grid of panels: one row per metric (NRA, CCA, CTA, TTA at the
target, final accuracy; only those that vary, `fedsim.report.study.informative`)
and one column per *group*. What a group and a line are depends on how many
combinations of the other axes (the *facets*; remaining-rate axes excluded,
they are configurations) the study has (`along_layout`):

* ``"single"``: no other axis. One group; one line per configuration (per
  method when the axis sets the rate), coloured by method. Panels wrap into
  up to three columns.
* ``"facets"``: two or three facets. One column per facet ("compute model =
  dense"), the same lines in each; the legend names configurations only, so
  it does not grow with the facets.
* ``"colormap"``: more facets. One column per configuration (titled in its
  method's colour); in each, one line per facet, coloured along a sequential
  colour map (viridis, discrete) explained by a colour bar with the facets'
  values. Nine uplink speeds x four methods were 36 legend entries in one
  panel; as a colour map they are an ordered ramp a reader follows with the
  eye, and the legend keeps only the marker meanings.

The rows of one metric share their y axis so the columns compare directly.
Lines that coincide exactly within a panel (e.g. CTA, which does not depend on
the link speed) are drawn once, in dark grey, and the panel says which
coincide: drawn in colour they would hide each other. The 95 % interval band
(Student-t over seeds, `fedsim.report.study.analysis.summarize`) and its
legend entry appear only where some point has two or more reached seeds.
Markers: filled where every seed reached the target, hollow where some did, a
cross at the top of the panel where none did (Cleveland & McGill 1984 and
Tufte 1983 motivate small multiples over overplotted lines).
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullLocator

from fedsim.report._units import byte_unit, energy_unit, format_target, time_unit
from fedsim.report.inputs import StudyReportInput
from fedsim.report.methods import MethodStyle
from fedsim.report.study.analysis import (
    NOT_REACHED,
    SWEEP_METRICS,
    Configuration,
    axis_value_labels,
    facets,
    select_rows,
    summarize,
)
from fedsim.report.style import DOUBLE_WIDTH_IN, SINGLE_WIDTH_IN, figure, legend_below

LINE_STYLES: tuple[str, ...] = ("-", "--", ":", "-.")
#: facets drawn as one column each; more become lines on a colour map
MAX_FACET_COLUMNS = 3
#: columns of panels before a metric's groups wrap onto another row
MAX_COLUMNS = 4
COINCIDE_COLOR = "#333333"
BAND_ALPHA = 0.15


def along_layout(n_facets: int) -> str:
    """How `metrics_along_axis` lays out ``n_facets`` combinations of the other
    axes: "single" (1), "facets" (2 .. `MAX_FACET_COLUMNS`), else "colormap"."""
    if n_facets <= 1:
        return "single"
    return "facets" if n_facets <= MAX_FACET_COLUMNS else "colormap"


def facet_title(facet: Mapping[str, float], value_labels: Mapping[str, Mapping[float, str]],
                report: StudyReportInput) -> str:
    """``title = value, ...`` of a facet, with each axis' title ("compute
    model = dense") rather than its key."""
    return ", ".join(f"{report.axis_title(a)} = {value_labels[a][v]}" for a, v in facet.items())


@dataclass(frozen=True)
class _Line:
    label: str
    color: str
    linestyle: str
    rows: pd.DataFrame


@dataclass(frozen=True)
class _Group:
    title: str
    title_color: str
    lines: tuple[_Line, ...]


def _metric_unit(kind: str, values: np.ndarray) -> tuple[str, float]:
    finite = values[np.isfinite(values)]
    largest = float(np.abs(finite).max()) if finite.size else 0.0
    if kind == "bytes":
        return byte_unit(largest)
    if kind == "seconds":
        return time_unit(largest)
    if kind == "energy":
        return energy_unit(largest)
    if kind == "accuracy":
        return ("%", 0.01)
    return ("rounds", 1.0)


def _units(rows: pd.DataFrame, rate_axis: bool, configs: Sequence[Configuration],
           style: MethodStyle) -> list[tuple[dict[str, Any], str, str, str]]:
    """(selection, label, colour, line style) of each configuration (each
    method when the axis sets the rate); a method's rates get line styles."""
    if rate_axis:
        return [({"method": m}, style.label(m), style.colors.get(m, "black"), "-")
                for m in style.order if (rows["method"] == m).any()]
    rank: dict[str, int] = {}
    units = []
    for c in configs:
        k = rank.get(c.method, 0)
        rank[c.method] = k + 1
        units.append(({"method": c.method, "remaining_rate": c.remaining_rate}, c.label,
                      style.colors.get(c.method, "black"), LINE_STYLES[k % len(LINE_STYLES)]))
    return units


def _groups(rows: pd.DataFrame, layout: str, units: Sequence[tuple[dict[str, Any], str, str, str]],
            cuts: Sequence[dict[str, float]], cut_titles: Sequence[str]) -> list[_Group]:
    """The columns of panels and the lines in each (module docstring)."""
    if layout != "colormap":
        groups = []
        for cut, title in zip(cuts, cut_titles, strict=True):
            lines = []
            for selection, label, color, ls in units:
                mine = select_rows(rows, **selection, **cut)
                if not mine.empty:
                    lines.append(_Line(label, color, ls, mine))
            groups.append(_Group(title, "black", tuple(lines)))
        return groups
    cmap = matplotlib.colormaps["viridis"].resampled(len(cuts))
    groups = []
    for selection, label, color, _ in units:
        lines = []
        for k, (cut, title) in enumerate(zip(cuts, cut_titles, strict=True)):
            mine = select_rows(rows, **selection, **cut)
            if not mine.empty:
                lines.append(_Line(title, mcolors.to_hex(cmap(k)), "-", mine))
        if lines:
            groups.append(_Group(label, color, tuple(lines)))
    return groups


def _coincide_note(labels: Sequence[str], n_lines: int, layout: str) -> str:
    if len(labels) == n_lines and layout == "colormap":
        return f"all {n_lines} coincide"
    if len(labels) <= 3:
        return " = ".join(labels)
    return f"{len(labels)} lines ({labels[0]} ... {labels[-1]})"


def _draw_panel(ax: Axes, group: _Group, axis: str, metric: str, scale: float,
                layout: str) -> dict[str, Any]:
    """The lines of ``group`` for ``metric`` in ``ax``; exactly coinciding
    lines once. Returns which legend entries the panel needs and, under
    "note", which lines coincide (`_place_note`)."""
    drawn: list[tuple[np.ndarray, np.ndarray, list[int]]] = []
    stats_of = []
    for i, line in enumerate(group.lines):
        groups = {float(v): g[metric].to_numpy(dtype=float)
                  for v, g in line.rows.groupby(line.rows[axis].astype(float))}
        xs = np.array(sorted(groups), dtype=float)
        stats = [summarize(groups[x]) for x in xs]
        mean = np.array([s.mean for s in stats]) / scale
        stats_of.append((xs, mean, stats))
        for xs_k, mean_k, members in drawn:
            if np.array_equal(xs_k, xs) and np.allclose(mean_k, mean, rtol=1e-9, atol=0.0,
                                                        equal_nan=True):
                members.append(i)
                break
        else:
            drawn.append((xs, mean, [i]))
    need: dict[str, Any] = {"band": False, "partial": False, "missing": False, "coincide": False}
    notes = []
    for _, _, members in drawn:
        line = group.lines[members[0]]
        xs, mean, stats = stats_of[members[0]]
        together = len(members) > 1
        color = COINCIDE_COLOR if together else line.color
        ls = "-" if together else line.linestyle
        if together:
            need["coincide"] = True
            notes.append(_coincide_note([group.lines[i].label for i in members],
                                        len(group.lines), layout))
        low = np.array([s.low for s in stats]) / scale
        high = np.array([s.high for s in stats]) / scale
        full = np.array([s.reached for s in stats], dtype=bool)
        partial = np.array([0 < s.n_reached < s.n_seeds for s in stats], dtype=bool)
        none = np.array([s.n_reached == 0 for s in stats], dtype=bool)
        ax.plot(xs, mean, color=color, ls=ls, lw=1.2 if together else 1.1, zorder=3)
        if (high > low).any():
            need["band"] = True
            ax.fill_between(xs, low, high, color=color, alpha=BAND_ALPHA, lw=0)
        ax.plot(xs[full], mean[full], ls="none", marker="o", ms=3.2, color=color, zorder=3)
        if partial.any():
            need["partial"] = True
            ax.plot(xs[partial], mean[partial], ls="none", marker="o", ms=4, mfc="white",
                    mec=color, zorder=3)
        if none.any():
            need["missing"] = True
            # on a colour map every line's cross lands on the same spot: black
            ax.plot(xs[none], np.full(int(none.sum()), 0.97), ls="none", marker="x", ms=5,
                    color="black" if layout == "colormap" else color,
                    transform=ax.get_xaxis_transform(), clip_on=False)
    if notes:
        need["note"] = "\n".join(notes)  # placed once the panel's limits are final
    return need


def _place_note(ax: Axes, note: str) -> None:
    """Write ``note`` in the corner of ``ax`` whose text box covers the fewest
    points of the drawn lines (sampled along their segments, in display
    space, so log axes and axis-anchored markers count where they are drawn);
    ties go to the first of top left, top right, bottom left, bottom right."""
    points = []
    for line in ax.get_lines():
        xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy) > 1 and line.get_linestyle() not in ("None", "none", ""):
            t = np.linspace(0.0, 1.0, 12)[:, None]
            xy = np.concatenate([a + t * (b - a) for a, b in itertools.pairwise(xy)])
        points.append(xy)
    xy = np.concatenate(points) if points else np.zeros((0, 2))
    style = {"transform": ax.transAxes, "fontsize": 6.5, "color": COINCIDE_COLOR, "zorder": 6,
             "bbox": {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.0}}
    best: tuple[int, tuple[float, float, str, str]] | None = None
    for corner in ((0.03, 0.97, "left", "top"), (0.97, 0.97, "right", "top"),
                   (0.03, 0.03, "left", "bottom"), (0.97, 0.03, "right", "bottom")):
        x, y, ha, va = corner
        text = ax.text(x, y, note, ha=ha, va=va, **style)
        box = text.get_window_extent().expanded(1.1, 1.3)
        text.remove()
        covered = int(((xy[:, 0] >= box.x0) & (xy[:, 0] <= box.x1)
                       & (xy[:, 1] >= box.y0) & (xy[:, 1] <= box.y1)).sum())
        if best is None or covered < best[0]:
            best = (covered, corner)
    assert best is not None
    x, y, ha, va = best[1]
    ax.text(x, y, note, ha=ha, va=va, **style)


def _x_ticks(ax: Axes, x_values: np.ndarray, labels: Mapping[float, str] | None, log_x: bool,
             panel_width_in: float) -> None:
    """Ticks at the axis values, at most one label per ~0.6 in of panel."""
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
    if labels is None:
        return
    most = max(2, int(panel_width_in / 0.6))
    every = -(-len(x_values) // most)
    ax.set_xticks(x_values, [labels[v] if k % every == 0 else "" for k, v in enumerate(x_values)],
                  rotation=30, ha="right")
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def metrics_along_axis(
    sweep: pd.DataFrame,
    axis: str,
    axes: Sequence[str],
    target: float,
    configs: Sequence[Configuration],
    style: MethodStyle,
    report: StudyReportInput,
    metrics: Sequence[tuple[str, str, str]] = SWEEP_METRICS,
) -> Figure:
    """NRA, CCA, CTA, TTA at ``target`` and final accuracy against ``axis``
    (or ``metrics``: (column, panel title, unit kind), e.g. `ENERGY_METRICS`)
    as small multiples laid out by `along_layout` (module docstring): mean
    over seeds, its 95 % interval where there are seeds to make one, and
    markers for how many seeds reached the target. Metrics missing from
    ``sweep`` get no panel."""
    rows = select_rows(sweep, target_accuracy=float(target))
    value_labels = {a: axis_value_labels(sweep, a, report.axis(a).role == "bandwidth")
                    for a in axes if not report.is_rate_axis(a)}
    others = [a for a in axes if a != axis and not report.is_rate_axis(a)]
    cuts = facets(rows, others)
    layout = along_layout(len(cuts))
    cut_titles = [facet_title(c, value_labels, report) for c in cuts]
    units = _units(rows, report.is_rate_axis(axis), configs, style)
    groups = _groups(rows, layout, units, cuts, cut_titles)
    shown = [m for m in metrics if m[0] in rows.columns]
    x_values = np.array(sorted(pd.unique(rows[axis].astype(float))), dtype=float)
    log_x = bool(x_values.size > 1 and x_values.min() > 0 and x_values.max() / x_values.min() >= 10.0)

    if layout == "single":  # metrics wrap, up to three per row
        n_cols = min(3, max(1, len(shown)))
        cells = [(m, groups[0]) for m in shown]
        n_rows, per_metric = -(-len(cells) // n_cols), 1
        slots = list(range(len(cells)))
    else:  # a metric per row (or rows, when its groups wrap)
        n_cols = min(MAX_COLUMNS, len(groups))
        per_metric = -(-len(groups) // n_cols)
        n_rows = per_metric * len(shown)
        cells = [(m, g) for m in shown for g in groups]
        slots = [i * per_metric * n_cols + k for i in range(len(shown)) for k in range(len(groups))]
    colorbar_in = 1.3 if layout == "colormap" else 0.0
    width = DOUBLE_WIDTH_IN if n_cols > 1 or colorbar_in else SINGLE_WIDTH_IN
    panel_w = (width - colorbar_in - 0.5) / n_cols
    # plus title and tick labels; flatter panels when there are many rows, so
    # that five metrics still fit a page (~9 in)
    panel_h = float(np.clip(0.7 * panel_w, 1.35 if n_rows <= 3 else 1.1, 2.4)) + 0.55
    fig = figure(width, 0.5 + n_rows * panel_h)
    grid = fig.subplots(n_rows, n_cols, squeeze=False)
    all_cells = [ax for row in grid for ax in row]
    used = set(slots)
    for k, ax in enumerate(all_cells):
        if k not in used:
            fig.delaxes(ax)
    need: dict[str, Any] = {"band": False, "partial": False, "missing": False, "coincide": False}
    first_of: dict[str, Axes] = {}
    notes: list[tuple[Axes, str]] = []
    legend_notes: dict[str, list[str]] = {}  # which configurations coincide -> in which panels
    for slot, ((metric, panel_title, kind), group) in zip(slots, cells, strict=True):
        ax = all_cells[slot]
        unit, scale = _metric_unit(kind, rows[metric].to_numpy(dtype=float))
        title = f"{panel_title}@{format_target(target)}" if metric != "final_accuracy" else panel_title
        for key, value in _draw_panel(ax, group, axis, metric, scale, layout).items():
            if key != "note":
                need[key] = need[key] or value
            elif layout == "colormap":  # short ("all 9 coincide"): in the panel
                notes.append((ax, value))
            else:  # names configurations: in the legend, with the panels
                where = title if layout == "single" else f"{title}, {group.title}"
                for line_note in value.split("\n"):
                    legend_notes.setdefault(line_note, []).append(where)
        if layout == "single":
            ax.set_title(title)
            ax.set_ylabel(unit)
        else:  # groups title the columns (once), metrics label the rows
            if slot < n_cols * per_metric:
                ax.set_title(group.title, color=group.title_color, fontsize=8.5)
            if metric in first_of:
                ax.sharey(first_of[metric])
            else:
                first_of[metric] = ax
            if slot % n_cols == 0:
                ax.set_ylabel(f"{title} ({unit})")
        _x_ticks(ax, x_values, value_labels.get(axis), log_x, panel_w)
        below = slot + n_cols
        if below >= len(all_cells) or below not in used:
            ax.set_xlabel(report.axis_title(axis), fontsize=7.5)

    for ax, note in notes:
        _place_note(ax, note)
    handles: list[Any] = []
    labels: list[str] = []
    if layout != "colormap":
        for _, label, color, ls in units:
            handles.append(Line2D([], [], color=color, ls=ls, marker="o", ms=3.2))
            labels.append(label)
    else:
        bounds = np.arange(len(cuts) + 1) - 0.5
        mappable = ScalarMappable(mcolors.BoundaryNorm(bounds, len(cuts)),
                                  matplotlib.colormaps["viridis"].resampled(len(cuts)))
        bar = fig.colorbar(mappable, ax=[ax for ax in fig.axes], ticks=range(len(cuts)),
                           shrink=min(0.9, (0.5 + 0.4 * len(cuts)) / fig.get_figheight()),
                           aspect=25)
        bar.ax.set_yticklabels([", ".join(value_labels[a][c[a]] for a in others) for c in cuts])
        bar.ax.tick_params(labelsize=7)
        bar.set_label(", ".join(report.axis_title(a) for a in others))
        bar.ax.invert_yaxis()  # the first value on top, as in a legend
    if need["coincide"] and layout == "colormap":
        handles.append(Line2D([], [], color=COINCIDE_COLOR, lw=1.2))
        labels.append("lines that coincide, drawn once")
    for note, where in legend_notes.items():
        handles.append(Line2D([], [], color=COINCIDE_COLOR, lw=1.2))
        text = f"{note} coincide ({'; '.join(where)}), drawn once"
        labels.append(textwrap.fill(text, 30, break_on_hyphens=False))  # keeps the columns narrow
    if need["band"]:
        handles.append(Patch(color="#999999", alpha=0.3))
        labels.append("95 % interval over seeds")
    if need["partial"]:
        handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="black", ms=4))
        labels.append("reached by some seeds")
    if need["missing"]:
        handles.append(Line2D([], [], ls="none", marker="x", color="black", ms=5))
        labels.append(f"{NOT_REACHED} (x at top)")
    legend_below(fig, handles, labels, max_cols=4, fontsize=7.5)
    what = "Energy" if all(kind == "energy" for _, _, kind in metrics) else "Metrics"
    fig.suptitle(f"{what} along {report.axis_title(axis)} at {format_target(target)} test accuracy")
    return fig


__all__ = ["MAX_FACET_COLUMNS", "along_layout", "facet_title", "metrics_along_axis"]
