"""The figures of a study report (`fedsim.report.study.analysis` holds the
numbers they draw):

* ``tta_heatmap``: per target a heatmap of mean TTA@x over link speed x
  configuration (configurations by remaining rate), with the best
  configuration of each link speed marked and joined by a line;
* ``metrics_along_axis``: per axis and target, each metric along the axis
  (mean and 95 % Student-t interval over seeds).

With energy in the sweep (ETA@x, ``eta_j``: joules of all clients until the
round that reaches x; `fedsim.metrics`) the same two figures rank by energy:
``tta_heatmap(..., quantity="energy")`` over an ETA grid and
``metrics_along_axis(..., metrics=ENERGY_METRICS)``.

Cells missed by every seed are drawn hatched grey and labelled "not reached";
cells missed by some seeds show the mean of the others and "k/n".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter

from fedsim.report._units import (
    byte_unit,
    energy_unit,
    format_joules,
    format_seconds,
    format_target,
    time_unit,
)
from fedsim.report.inputs import StudyReportInput
from fedsim.report.methods import MethodStyle
from fedsim.report.study.analysis import (
    NOT_REACHED,
    SWEEP_METRICS,
    Configuration,
    Grid,
    axis_value_labels,
    facet_text,
    facets,
    select_rows,
    summarize,
)
from fedsim.report.style import DOUBLE_WIDTH_IN, figure

UNREACHED_FACE = "#e6e6e6"
UNREACHED_EDGE = "#9a9a9a"
LINE_STYLES: tuple[str, ...] = ("-", "--", ":", "-.")
OTHER_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")


def _luminance(rgba: Sequence[float]) -> float:
    r, g, b = (float(c) for c in rgba[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def tta_heatmap(
    grid: Grid,
    style: MethodStyle,
    link_labels: Mapping[float, str],
    link_title: str,
    title: str,
    quantity: str = "time",
) -> Figure:
    """Heatmap of mean TTA (log colour scale): configurations (rows, densest on
    top) x link values (columns), each cell labelled with its time; the best
    configuration of each column marked with a star and joined by a line;
    cells no seed reached hatched grey, "not reached". ``quantity="energy"``:
    the grid holds ETA@x (J) and the cells, colour bar and legend say so."""
    if quantity not in ("time", "energy"):
        raise ValueError(f"quantity must be 'time' or 'energy', got {quantity!r}")
    unit_of, format_cell, name = ((time_unit, format_seconds, "TTA") if quantity == "time"
                                  else (energy_unit, format_joules, "ETA"))
    n_rows, n_cols = len(grid.configs), len(grid.link_values)
    means = np.array([[c.mean for c in row] for row in grid.cells], dtype=float).reshape(
        n_rows, n_cols
    )
    finite = means[np.isfinite(means)]
    unit, scale = unit_of(float(finite.max()) if finite.size else 0.0)
    width = float(np.clip(2.6 + 0.9 * n_cols, 4.5, 11.0))
    height = float(np.clip(1.4 + 0.42 * n_rows, 2.4, 9.0))
    fig = figure(width, height)
    ax = fig.add_subplot()
    ax.grid(False)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=UNREACHED_FACE)
    if finite.size and finite.min() > 0 and finite.max() > finite.min():
        norm: mcolors.Normalize = mcolors.LogNorm(
            vmin=finite.min() / scale, vmax=finite.max() / scale
        )
    else:
        low = finite.min() / scale if finite.size else 0.0
        norm = mcolors.Normalize(vmin=low, vmax=low + 1.0)
    image = ax.imshow(
        np.ma.masked_invalid(means / scale),
        cmap=cmap,
        norm=norm,
        aspect="auto",
        interpolation="nearest",
    )
    colorbar = fig.colorbar(image, ax=ax, pad=0.02)
    colorbar.set_label(f"Mean {name} ({unit}), lower is better")
    colorbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    colorbar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))

    annotate = n_rows * n_cols <= 160
    font_pt = 7.5 if n_cols <= 8 else 6.5
    for i in range(n_rows):
        for j in range(n_cols):
            cell = grid.cells[i][j]
            if cell.n_reached == 0:
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, i - 0.5),
                        1.0,
                        1.0,
                        facecolor=UNREACHED_FACE,
                        edgecolor=UNREACHED_EDGE,
                        hatch="///",
                        lw=0.0,
                    )
                )
                if annotate:
                    ax.text(
                        j,
                        i,
                        NOT_REACHED,
                        ha="center",
                        va="center",
                        fontsize=font_pt - 0.5,
                        color="#444444",
                        bbox={"facecolor": UNREACHED_FACE, "edgecolor": "none", "pad": 0.6},
                    )
                continue
            if not annotate:
                continue
            text = format_cell(cell.mean)
            if not cell.reached:
                text += f"\n({cell.n_reached}/{cell.n_seeds} seeds)"
            shade = image.cmap(image.norm(cell.mean / scale))
            ax.text(
                j,
                i - 0.08,
                text,
                ha="center",
                va="center",
                fontsize=font_pt,
                zorder=5,
                color="black" if _luminance(shade) > 0.45 else "white",
            )

    # The best cell of each column: outlined, and a star in its lower part,
    # the stars joined by a line that stays under the cells' text.
    best = grid.best()
    xs = [j for j, i in enumerate(best) if i is not None]
    ys = [i for i in best if i is not None]
    for j, i in zip(xs, ys, strict=True):
        ax.add_patch(
            Rectangle(
                (j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="white", lw=2.4, zorder=3
            )
        )
        ax.add_patch(
            Rectangle(
                (j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="black", lw=1.0, zorder=3
            )
        )
    if xs:
        low = [y + 0.3 for y in ys]
        # steps-mid: rows change on the column borders, never across a label
        ax.plot(xs, low, color="white", lw=3.0, zorder=3, drawstyle="steps-mid")
        ax.plot(xs, low, color="black", lw=1.2, zorder=4, drawstyle="steps-mid")
        ax.plot(xs, low, ls="none", zorder=4, marker="*", ms=9, mfc="white", mec="black", mew=0.8)
    ax.set_xticks(range(n_cols), [link_labels.get(v, f"{v:g}") for v in grid.link_values])
    ax.set_yticks(range(n_rows), [c.label for c in grid.configs])
    for tick, config in zip(ax.get_yticklabels(), grid.configs, strict=True):
        tick.set_color(style.colors.get(config.method, "black"))
        tick.set_fontweight("bold")
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_xlabel(link_title)
    ax.set_ylabel("Configuration (by remaining rate P_R)")
    ax.set_title(title)
    handles = [
        Line2D([], [], color="black", lw=1.3, marker="*", ms=10, mfc="white", mec="black"),
        Patch(facecolor=UNREACHED_FACE, edgecolor=UNREACHED_EDGE, hatch="///", lw=0.0),
    ]
    fig.legend(
        handles,
        [f"best configuration per column (lowest mean {name})", NOT_REACHED],
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    return fig


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


@dataclass(frozen=True)
class _Series:
    key: tuple[Any, ...]
    method: str
    label: str
    color: str
    linestyle: str
    marker: str
    rows: pd.DataFrame


def _series(
    rows: pd.DataFrame,
    axis: str,
    axes: Sequence[str],
    configs: Sequence[Configuration],
    style: MethodStyle,
    value_labels: Mapping[str, Mapping[float, str]],
    report: StudyReportInput,
) -> list[_Series]:
    """The lines of a metric-along-``axis`` panel: one per configuration (per
    method when ``axis`` sets the rate) and per combination of the other axes."""
    rate_axis = report.is_rate_axis(axis)
    others = [a for a in axes if a != axis and not report.is_rate_axis(a)]
    keys = ["method"] if rate_axis else ["method", "remaining_rate"]
    combos = facets(rows, others)
    series: list[_Series] = []
    per_method_rank: dict[str, int] = {}
    units: list[tuple[str, float | None, str]] = (
        [(m, None, style.label(m)) for m in style.order if (rows["method"] == m).any()]
        if rate_axis
        else [(c.method, c.remaining_rate, c.label) for c in configs]
    )
    for method, rate, label in units:
        rank = per_method_rank.get(method, 0)
        per_method_rank[method] = rank + 1
        selection = (
            {"method": method} if rate is None else {"method": method, "remaining_rate": rate}
        )
        mine = select_rows(rows, **selection)
        if mine.empty:
            continue
        for k, combo in enumerate(combos):
            subset = select_rows(mine, **combo) if combo else mine
            if subset.empty:
                continue
            text = label if not combo else f"{label}; {facet_text(combo, value_labels)}"
            series.append(
                _Series(
                    key=(*[selection[c] for c in keys], *combo.values()),
                    method=method,
                    label=text,
                    color=style.colors.get(method, "black"),
                    linestyle=LINE_STYLES[rank % len(LINE_STYLES)],
                    marker=OTHER_MARKERS[k % len(OTHER_MARKERS)],
                    rows=subset,
                )
            )
    return series


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
    (or ``metrics``: (column, panel title, unit kind), e.g. `ENERGY_METRICS`):
    mean over seeds with its 95 % interval (band), filled markers where every
    seed reached the target, hollow where only some did, a cross at the top
    of the panel where none did."""
    rows = select_rows(sweep, target_accuracy=float(target))
    value_labels = {
        a: axis_value_labels(sweep, a, report.axis(a).role == "bandwidth")
        for a in axes
        if not report.is_rate_axis(a)
    }
    series = _series(rows, axis, axes, configs, style, value_labels, report)
    x_values = np.array(sorted(pd.unique(rows[axis].astype(float))), dtype=float)
    log_x = bool(
        x_values.size > 1 and x_values.min() > 0 and x_values.max() / x_values.min() >= 10.0
    )

    n_cols = min(3, len(metrics) + 1)  # the panels, then the legend's
    n_rows = -(-(len(metrics) + 1) // n_cols)
    legend_in = 1.3 + 0.17 * (len(series) + 3)  # the legend's lines (series, interval, markers) must fit
    fig = figure(DOUBLE_WIDTH_IN if n_cols == 3 else 0.7 * DOUBLE_WIDTH_IN, max(2.7 * n_rows, legend_in))
    grid = fig.subplots(n_rows, n_cols, squeeze=False)
    cells = [ax for row in grid for ax in row]
    panels = cells[: len(metrics)]
    legend_ax = cells[len(metrics)]
    for ax in cells[len(metrics):]:
        ax.set_axis_off()
    any_partial = any_missing = False
    for ax, (metric, panel_title, kind) in zip(panels, metrics, strict=True):
        if metric not in rows.columns:
            ax.set_axis_off()
            continue
        unit, scale = _metric_unit(kind, rows[metric].to_numpy(dtype=float))
        for line in series:
            groups = {
                float(v): g[metric].to_numpy(dtype=float)
                for v, g in line.rows.groupby(line.rows[axis].astype(float))
            }
            xs = np.array(sorted(groups), dtype=float)
            stats = [summarize(groups[x]) for x in xs]
            mean = np.array([s.mean for s in stats]) / scale
            low = np.array([s.low for s in stats]) / scale
            high = np.array([s.high for s in stats]) / scale
            full = np.array([s.reached for s in stats])
            partial = np.array([0 < s.n_reached < s.n_seeds for s in stats])
            none = np.array([s.n_reached == 0 for s in stats])
            ax.plot(xs, mean, color=line.color, ls=line.linestyle, lw=1.1)
            if np.isfinite(low).any() and (high > low).any():
                ax.fill_between(xs, low, high, color=line.color, alpha=0.15, lw=0)
            ax.plot(xs[full], mean[full], ls="none", marker=line.marker, ms=3.5, color=line.color)
            if partial.any():
                any_partial = True
                ax.plot(
                    xs[partial],
                    mean[partial],
                    ls="none",
                    marker=line.marker,
                    ms=4,
                    mfc="white",
                    mec=line.color,
                )
            if none.any():
                any_missing = True
                ax.plot(
                    xs[none],
                    np.full(int(none.sum()), 0.97),
                    ls="none",
                    marker="x",
                    ms=5,
                    color=line.color,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
        ax.set_title(
            f"{panel_title}@{format_target(target)}" if metric != "final_accuracy" else panel_title
        )
        ax.set_ylabel(unit)
        if log_x:
            ax.set_xscale("log")
        if axis in value_labels:
            # at most 8 labelled ticks (every k-th value), in the axis' own units ("5 Mbps")
            every = -(-len(x_values) // 8)
            ax.set_xticks(
                x_values,
                [value_labels[axis][v] if k % every == 0 else "" for k, v in enumerate(x_values)],
                rotation=30,
                ha="right",
            )
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
        ax.set_xlabel(report.axis_title(axis), fontsize=7.5)

    handles: list[Any] = [
        Line2D([], [], color=s.color, ls=s.linestyle, marker=s.marker, ms=3.5) for s in series
    ]
    labels = [s.label for s in series]
    handles.append(Patch(color="#999999", alpha=0.3))
    labels.append("95 % interval over seeds")
    if any_partial:
        handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="black", ms=4))
        labels.append("reached by some seeds")
    if any_missing:
        handles.append(Line2D([], [], ls="none", marker="x", color="black", ms=5))
        labels.append(f"{NOT_REACHED} (x at top)")
    legend_ax.legend(handles, labels, loc="center", frameon=False, fontsize=7)
    what = "Energy" if all(kind == "energy" for _, _, kind in metrics) else "Metrics"
    fig.suptitle(f"{what} along {report.axis_title(axis)} at {format_target(target)} test accuracy")
    return fig


__all__ = ["metrics_along_axis", "tta_heatmap"]
