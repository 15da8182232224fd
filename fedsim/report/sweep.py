"""The report of a parameter study: where does each configuration win?

``write_sweep_report`` takes the study's frame, one row per grid cell x seed x
method x target, with

* the axis columns named in ``meta["axes"]`` (numeric, SI units: bit/s for a
  link speed) and optional display columns ``"<axis>_label"`` ("10 Mbps");
* ``seed``, ``method``, ``remaining_rate``, ``target_accuracy``;
* the metrics columns of a scenario's metrics.csv (``nra``, ``cca_bytes``,
  ``cta_s``, ``tta_s``, ``final_accuracy``; NaN where a target was missed).

A *configuration* is a (method, remaining rate) pair. The *link axis* is
``meta["link_axis"]``, else the first axis whose name mentions a link, a
bandwidth or bit/s, else the first axis that is not a remaining rate. An axis
whose name ends in ``remaining_rate`` is the remaining-rate axis: it varies
the configuration rather than the cell.

Outputs: per target a heatmap of mean TTA@x over link speed x configuration
(configurations by remaining rate), with the best configuration of each link
speed marked and joined by a line; per axis and target, each metric along the
axis (mean and 95 % Student-t interval over seeds); ``report.pdf`` with all of
them; ``summary.md`` with the best configuration per link speed, where the
ranking flips and the TTA table. Cells missed by every seed are drawn
hatched grey and labelled "not reached"; cells missed by some seeds show the
mean of the others and "k/n".
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    MISSING,
    byte_unit,
    format_bit_rate,
    format_rate,
    format_seconds,
    format_target,
    time_unit,
)
from fedsim.report.figures import title_page
from fedsim.report.style import (
    DOUBLE_WIDTH_IN,
    RC,
    MethodStyle,
    figure,
    render_figures,
)
from fedsim.report.tables import as_float, markdown_table, require_columns
from fedsim.report.writer import check_formats
from fedsim.store import write_text

SWEEP_COLUMNS: tuple[str, ...] = ("seed", "method", "remaining_rate", "target_accuracy", "tta_s")
# metric column, panel title, kind of unit
SWEEP_METRICS: tuple[tuple[str, str, str], ...] = (
    ("nra", "NRA", "count"),
    ("cca_bytes", "CCA", "bytes"),
    ("cta_s", "CTA", "seconds"),
    ("tta_s", "TTA", "seconds"),
    ("final_accuracy", "Final accuracy", "accuracy"),
)
NOT_REACHED = "not reached"
UNREACHED_FACE = "#e6e6e6"
UNREACHED_EDGE = "#9a9a9a"
LINE_STYLES: tuple[str, ...] = ("-", "--", ":", "-.")
OTHER_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")

# Student-t 97.5 % quantiles for 1..30 degrees of freedom (two-sided 95 %).
_T975: tuple[float, ...] = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom
    (table to 30, then 2.021 / 2.000 / 1.980 / 1.960 at 40 / 60 / 120 / inf)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    if dof <= len(_T975):
        return _T975[dof - 1]
    for limit, value in ((40, 2.021), (60, 2.000), (120, 1.980)):
        if dof <= limit:
            return value
    return 1.960


@dataclass(frozen=True)
class Summary:
    """Replicate seeds of one metric in one cell: mean, 95 % interval (over the
    seeds that reached the target), how many seeds there were and reached."""

    mean: float
    low: float
    high: float
    n_seeds: int
    n_reached: int

    @property
    def reached(self) -> bool:
        """Every seed reached the target."""
        return self.n_seeds > 0 and self.n_reached == self.n_seeds


def summarize(values: Sequence[float] | np.ndarray) -> Summary:
    """Mean and Student-t 95 % interval of the finite ``values`` (NaN = target
    not reached). One finite value: the interval is that value; none: NaN."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return Summary(math.nan, math.nan, math.nan, int(array.size), 0)
    mean = float(finite.mean())
    if finite.size == 1:
        return Summary(mean, mean, mean, int(array.size), 1)
    half = t975(finite.size - 1) * float(finite.std(ddof=1)) / math.sqrt(finite.size)
    return Summary(mean, mean - half, mean + half, int(array.size), int(finite.size))


def is_rate_axis(axis: str) -> bool:
    """An axis that sets the remaining rate (its name ends in remaining_rate)."""
    return axis.split(".")[-1].endswith("remaining_rate")


def link_axis(axes: Sequence[str], preferred: str | None = None) -> str | None:
    """The axis the heatmap spreads horizontally (see the module docstring)."""
    if preferred:
        return preferred
    candidates = [a for a in axes if not is_rate_axis(a)]
    for axis in candidates:
        if re.search(r"link|bandwidth|bps|bit_?rate", axis, flags=re.IGNORECASE):
            return axis
    return candidates[0] if candidates else None


def axis_value_labels(sweep: pd.DataFrame, axis: str) -> dict[float, str]:
    """Display label of each value of ``axis``: the ``<axis>_label`` column
    when present, else bit/s units for a link axis, else the number."""
    values = sorted(pd.unique(sweep[axis].astype(float)))
    label_column = f"{axis}_label"
    if label_column in sweep.columns:
        firsts = sweep.groupby(sweep[axis].astype(float))[label_column].first()
        return {float(v): str(firsts.loc[v]) for v in values}
    if re.search(r"link|bandwidth|bps|bit_?rate", axis, flags=re.IGNORECASE):
        return {float(v): format_bit_rate(v) for v in values}
    return {float(v): f"{v:g}" for v in values}


def axis_title(meta: Mapping[str, Any], axis: str) -> str:
    """``meta["axis_labels"][axis]`` or the axis' dotted name."""
    return str((meta.get("axis_labels") or {}).get(axis, axis))


@dataclass(frozen=True)
class Config:
    """One (method, remaining rate) row of the heatmap."""

    method: str
    remaining_rate: float
    label: str


def configurations(sweep: pd.DataFrame, style: MethodStyle) -> list[Config]:
    """The sweep's (method, remaining rate) pairs, densest first, then in
    method order. The remaining rate joins the label when a method has several."""
    pairs = sweep[["method", "remaining_rate"]].drop_duplicates()
    rates_per_method = pairs.groupby("method")["remaining_rate"].nunique()
    rank = {m: i for i, m in enumerate(style.order)}
    configs = []
    for method, rate in pairs.itertuples(index=False):
        label = style.label(str(method))
        if rates_per_method.loc[method] > 1:
            label = f"{label}, P_R {format_rate(rate)}"
        configs.append(Config(str(method), float(rate), label))
    return sorted(configs, key=lambda c: (-c.remaining_rate, rank.get(c.method, len(rank))))


def _targets(meta: Mapping[str, Any], sweep: pd.DataFrame) -> list[float]:
    if meta.get("targets"):
        return [float(t) for t in meta["targets"]]
    return sorted(float(t) for t in pd.unique(sweep["target_accuracy"].astype(float)))


def _select(frame: pd.DataFrame, **equal: Any) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in equal.items():
        values = frame[column].to_numpy()
        if isinstance(value, float) or np.issubdtype(values.dtype, np.number):
            mask &= np.isclose(values.astype(float), float(value), rtol=1e-12, atol=1e-12)
        else:
            mask &= values == value
    return frame.loc[mask]


def _facets(sweep: pd.DataFrame, others: Sequence[str]) -> list[dict[str, float]]:
    """Every combination of the values of the ``others`` axes ([{}] if none)."""
    if not others:
        return [{}]
    combos = sweep[list(others)].drop_duplicates().sort_values(list(others))
    return [
        {axis: float(value) for axis, value in zip(others, row, strict=True)}
        for row in combos.itertuples(index=False)
    ]


def _facet_text(facet: Mapping[str, float], labels: Mapping[str, Mapping[float, str]]) -> str:
    return ", ".join(f"{axis} = {labels[axis][value]}" for axis, value in facet.items())


@dataclass(frozen=True)
class Grid:
    """Mean TTA (or another metric) of every configuration x link value."""

    configs: tuple[Config, ...]
    link_values: tuple[float, ...]
    cells: tuple[tuple[Summary, ...], ...]  # [config][link value]

    def best(self) -> list[int | None]:
        """Per link value, the index of the configuration with the lowest mean
        among those every seed of which reached the target (None if none did)."""
        best: list[int | None] = []
        for j in range(len(self.link_values)):
            means = [
                self.cells[i][j].mean if self.cells[i][j].reached else math.inf
                for i in range(len(self.configs))
            ]
            index = int(np.argmin(means)) if means else 0
            best.append(index if means and math.isfinite(means[index]) else None)
        return best

    def ranking(self, j: int) -> list[int]:
        """Configurations fully reached at link value ``j``, best first."""
        reached = [i for i in range(len(self.configs)) if self.cells[i][j].reached]
        return sorted(reached, key=lambda i: self.cells[i][j].mean)


def metric_grid(
    sweep: pd.DataFrame,
    configs: Sequence[Config],
    link: str,
    target: float,
    metric: str = "tta_s",
    facet: Mapping[str, float] | None = None,
) -> Grid:
    """Summaries of ``metric`` at ``target`` for every configuration (rows) and
    value of the ``link`` axis (columns), within one ``facet`` of the other axes."""
    rows = _select(sweep, target_accuracy=float(target), **dict(facet or {}))
    link_values = tuple(sorted(float(v) for v in pd.unique(sweep[link].astype(float))))
    cells = []
    for config in configs:
        mine = _select(rows, method=config.method, remaining_rate=config.remaining_rate)
        by_link = {
            float(v): group[metric].to_numpy(dtype=float)
            for v, group in mine.groupby(mine[link].astype(float))
        }
        cells.append(tuple(summarize(by_link.get(v, np.array([]))) for v in link_values))
    return Grid(tuple(configs), link_values, tuple(cells))


def _luminance(rgba: Sequence[float]) -> float:
    r, g, b = (float(c) for c in rgba[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def tta_heatmap(
    grid: Grid,
    style: MethodStyle,
    link_labels: Mapping[float, str],
    link_title: str,
    title: str,
) -> Figure:
    """Heatmap of mean TTA (log colour scale): configurations (rows, densest on
    top) x link values (columns), each cell labelled with its time; the best
    configuration of each column marked with a star and joined by a line;
    cells no seed reached hatched grey, "not reached"."""
    n_rows, n_cols = len(grid.configs), len(grid.link_values)
    means = np.array([[c.mean for c in row] for row in grid.cells], dtype=float).reshape(
        n_rows, n_cols
    )
    finite = means[np.isfinite(means)]
    unit, scale = time_unit(float(finite.max()) if finite.size else 0.0)
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
    colorbar.set_label(f"Mean TTA ({unit}), lower is better")
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
            text = format_seconds(cell.mean)
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
        ["best configuration per column (lowest mean TTA)", NOT_REACHED],
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
    configs: Sequence[Config],
    style: MethodStyle,
    value_labels: Mapping[str, Mapping[float, str]],
) -> list[_Series]:
    """The lines of a metric-along-``axis`` panel: one per configuration (per
    method when ``axis`` sets the rate) and per combination of the other axes."""
    rate_axis = is_rate_axis(axis)
    others = [a for a in axes if a != axis and not is_rate_axis(a)]
    keys = ["method"] if rate_axis else ["method", "remaining_rate"]
    combos = _facets(rows, others)
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
        mine = _select(rows, **selection)
        if mine.empty:
            continue
        for k, combo in enumerate(combos):
            subset = _select(mine, **combo) if combo else mine
            if subset.empty:
                continue
            text = label if not combo else f"{label}; {_facet_text(combo, value_labels)}"
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
    configs: Sequence[Config],
    style: MethodStyle,
    meta: Mapping[str, Any],
) -> Figure:
    """NRA, CCA, CTA, TTA at ``target`` and final accuracy against ``axis``:
    mean over seeds with its 95 % interval (band), filled markers where every
    seed reached the target, hollow where only some did, a cross at the top
    of the panel where none did."""
    rows = _select(sweep, target_accuracy=float(target))
    value_labels = {a: axis_value_labels(sweep, a) for a in axes if not is_rate_axis(a)}
    series = _series(rows, axis, axes, configs, style, value_labels)
    x_values = np.array(sorted(pd.unique(rows[axis].astype(float))), dtype=float)
    log_x = bool(
        x_values.size > 1 and x_values.min() > 0 and x_values.max() / x_values.min() >= 10.0
    )

    fig = figure(DOUBLE_WIDTH_IN, 5.4)
    grid = fig.subplots(2, 3, squeeze=False)
    panels = [grid[0][0], grid[0][1], grid[0][2], grid[1][0], grid[1][1]]
    legend_ax = grid[1][2]
    legend_ax.set_axis_off()
    any_partial = any_missing = False
    for ax, (metric, panel_title, kind) in zip(panels, SWEEP_METRICS, strict=True):
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
        if axis in value_labels and len(x_values) <= 8:
            ax.set_xticks(
                x_values, [value_labels[axis][v] for v in x_values], rotation=30, ha="right"
            )
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
        ax.set_xlabel(axis_title(meta, axis), fontsize=7.5)

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
    fig.suptitle(f"Metrics along {axis_title(meta, axis)} at {format_target(target)} test accuracy")
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _target_slug(target: float) -> str:
    return format_target(target).replace(" %", "").replace(".", "p")


def _format_cell(cell: Summary) -> str:
    if cell.n_reached == 0:
        return NOT_REACHED
    text = format_seconds(cell.mean)
    if cell.n_seeds > 1 and cell.high > cell.low:
        text += f" ± {format_seconds(0.5 * (cell.high - cell.low))}"
    if not cell.reached:
        text += f" ({cell.n_reached}/{cell.n_seeds} seeds)"
    return text


def ranking_flips(grid: Grid, link_labels: Mapping[float, str], max_pairs: int = 12) -> list[str]:
    """Lines saying where, along the link axis, the best configuration changes
    and which pairs of configurations swap order (both reached by every seed
    at both neighbouring link values)."""
    lines: list[str] = []
    best = grid.best()
    for j in range(1, len(grid.link_values)):
        left, right = link_labels[grid.link_values[j - 1]], link_labels[grid.link_values[j]]
        before, after = best[j - 1], best[j]
        if before is not None and after is not None and before != after:
            lines.append(
                f"- best changes between {left} and {right}: "
                f"{grid.configs[before].label} → {grid.configs[after].label}"
            )
        rank_before = {i: r for r, i in enumerate(grid.ranking(j - 1))}
        rank_after = {i: r for r, i in enumerate(grid.ranking(j))}
        common = sorted(set(rank_before) & set(rank_after))
        swaps = [
            (a, b)
            for a, b in itertools.combinations(common, 2)
            if (rank_before[a] < rank_before[b]) != (rank_after[a] < rank_after[b])
        ]
        if before is not None and after is not None:
            # the change of the best is said above
            swaps = [pair for pair in swaps if set(pair) != {before, after}]
        for a, b in swaps[:max_pairs]:
            first, second = (a, b) if rank_before[a] < rank_before[b] else (b, a)
            lines.append(
                f"- between {left} and {right}: {grid.configs[second].label} overtakes "
                f"{grid.configs[first].label}"
            )
        if len(swaps) > max_pairs:
            lines.append(f"- between {left} and {right}: {len(swaps) - max_pairs} more swaps")
    return lines


def sweep_summary(
    sweep: pd.DataFrame,
    meta: Mapping[str, Any],
    grids: Mapping[tuple[float, int], Grid],
    facets: Sequence[Mapping[str, float]],
    link: str | None,
    value_labels: Mapping[str, Mapping[float, str]],
    figure_links: Sequence[tuple[str, str]] = (),
) -> str:
    """summary.md of a sweep: its axes and seeds, then per target (and facet of
    the other axes) the best configuration per link value, the ranking flips
    and the table of mean TTA."""
    name = str(meta.get("name") or "fedsim sweep")
    lines = [f"# {name}", ""]
    description = str(meta.get("description") or "").strip()
    if description:
        lines += [description, ""]
    axes = [str(a) for a in meta.get("axes") or []]
    seeds = sorted(pd.unique(sweep["seed"]))
    lines.append("**Axes**:")
    lines.append("")
    for axis in axes:
        if is_rate_axis(axis):
            values = ", ".join(format_rate(v) for v in sorted(pd.unique(sweep[axis].astype(float))))
        else:
            values = ", ".join(value_labels[axis].values())
        lines.append(f"- `{axis}`: {values}")
    lines += [
        "",
        f"**Seeds**: {', '.join(str(s) for s in seeds)} ({len(seeds)} replicate{'s' if len(seeds) != 1 else ''} per cell)",
        "",
    ]
    provenance = meta.get("provenance") or {}
    if provenance:
        lines += ["| provenance | |", "|:---|:---|"]
        lines += [f"| {k} | {v} |" for k, v in provenance.items()]
        lines.append("")
    if link is None:
        lines += ["No link axis: only the per-axis figures apply.", ""]
    for (target, facet_index), grid in grids.items():
        facet = facets[facet_index]
        at = format_target(target)
        where = f" ({_facet_text(facet, value_labels)})" if facet else ""
        labels = value_labels[link] if link else {}
        lines += [f"## Best configuration per {axis_title(meta, link or '')} at {at}{where}", ""]
        best = grid.best()
        rows = []
        for j, value in enumerate(grid.link_values):
            ranking = grid.ranking(j)
            if best[j] is None:
                rows.append((labels[value], NOT_REACHED, MISSING, MISSING, MISSING, MISSING))
                continue
            first = grid.cells[best[j]][j]
            if len(ranking) > 1:
                runner = ranking[1]
                second = grid.cells[runner][j]
                margin = f"{format_seconds(second.mean - first.mean)} ({100.0 * (second.mean / first.mean - 1.0):.1f} %)"
                rows.append(
                    (
                        labels[value],
                        grid.configs[best[j]].label,
                        format_seconds(first.mean),
                        grid.configs[runner].label,
                        format_seconds(second.mean),
                        margin,
                    )
                )
            else:
                rows.append(
                    (
                        labels[value],
                        grid.configs[best[j]].label,
                        format_seconds(first.mean),
                        MISSING,
                        MISSING,
                        MISSING,
                    )
                )
        lines += [
            markdown_table(
                (
                    axis_title(meta, link or ""),
                    "Best",
                    f"TTA@{at}",
                    "Runner-up",
                    f"TTA@{at}",
                    "Margin",
                ),
                rows,
            ),
            "",
        ]
        flips = ranking_flips(grid, labels)
        lines += [f"**Where the ranking flips** (TTA@{at}):", ""]
        lines += (
            flips
            if flips
            else [
                f"- nowhere: the order is the same at every {axis_title(meta, link or '')} value."
            ]
        )
        lines += ["", f"Mean TTA@{at} over seeds (± half the 95 % interval):", ""]
        headers = ("Configuration", *(labels[v] for v in grid.link_values))
        table_rows = [
            (config.label, *(_format_cell(cell) for cell in grid.cells[i]))
            for i, config in enumerate(grid.configs)
        ]
        lines += [markdown_table(headers, table_rows), ""]
    lines += [
        'Cells that no seed reached read "not reached"; "k/n seeds": only k of the n '
        "seeds reached the target, the mean is theirs. The best configuration is chosen "
        "among cells every seed reached. Traffic in decimal units (1 MB = 10^6 B).",
        "",
    ]
    if figure_links:
        lines += ["## Figures", ""]
        for caption, path in figure_links:
            lines += [f"![{caption}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_sweep_report(
    out_dir: Path,
    sweep: pd.DataFrame,
    meta: Mapping[str, Any],
    *,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 170,
) -> dict[str, Path]:
    """Write a parameter study's figures, ``report.pdf`` and ``summary.md`` into
    ``out_dir``; return the written paths keyed by path relative to ``out_dir``.

    ``meta``: ``axes`` (the axis columns, required), ``name``, ``description``,
    ``methods`` (order and colours), ``labels``, ``targets``, ``link_axis``,
    ``axis_labels`` (axis -> title), ``provenance``, ``mode`` (``zip``: the
    axes move together and the link axis, or the first, stands for all).

    Raises ValueError when ``meta["axes"]`` is empty or names a missing
    column, when ``sweep`` lacks a required column, or for unknown formats.
    """
    out_dir = Path(out_dir)
    chosen = check_formats(formats)
    axes = [str(a) for a in meta.get("axes") or []]
    if not axes:
        raise ValueError('meta["axes"] must name at least one axis column of the sweep')
    require_columns(sweep, [*axes, *SWEEP_COLUMNS], "sweep")
    sweep = as_float(
        sweep, [*axes, "remaining_rate", "target_accuracy", *(m for m, _, _ in SWEEP_METRICS)]
    )

    style = MethodStyle.build(meta, sweep["method"].astype(str))
    configs = configurations(sweep, style)
    targets = _targets(meta, sweep)
    link = link_axis(axes, meta.get("link_axis"))
    if link is not None and link not in sweep.columns:
        raise ValueError(f"link axis {link!r} is not a column of the sweep")
    # Zipped axes move together: the first one (or the link axis) stands for
    # all, there are no facets, and only it gets an along-axis figure.
    zipped = meta.get("mode") == "zip"
    others = [] if zipped else [a for a in axes if a != link and not is_rate_axis(a)]
    facets = _facets(sweep, others)
    value_labels = {a: axis_value_labels(sweep, a) for a in axes if not is_rate_axis(a)}
    along = [link or axes[0]] if zipped else axes

    builders: list[tuple[str, str, Any]] = []
    grids: dict[tuple[float, int], Grid] = {}
    if link is not None:
        for target in targets:
            for k, facet in enumerate(facets):
                grid = metric_grid(sweep, configs, link, target, "tta_s", facet)
                grids[(target, k)] = grid
                where = f" ({_facet_text(facet, value_labels)})" if facet else ""
                suffix = f"_{k + 1}" if len(facets) > 1 else ""
                title = f"Time to {format_target(target)} accuracy{where}"
                builders.append(
                    (
                        f"heatmap_tta_{_target_slug(target)}{suffix}",
                        title,
                        lambda g=grid, t=title: tta_heatmap(
                            g, style, value_labels[link], axis_title(meta, link), t
                        ),
                    )
                )
    for axis in along:
        for target in targets:
            builders.append(
                (
                    f"along_{_slug(axis)}_{_target_slug(target)}",
                    f"Metrics along {axis_title(meta, axis)} at {format_target(target)}",
                    lambda a=axis, t=target: metrics_along_axis(
                        sweep, a, along, t, configs, style, meta
                    ),
                )
            )

    with matplotlib.rc_context(RC):
        title = title_page({**meta, "methods": list(style.order)}) if "pdf" in chosen else None
    written, links = render_figures(
        out_dir, builders, title, chosen, dpi, str(meta.get("name") or "fedsim sweep"), RC
    )
    write_text(
        out_dir / "summary.md", sweep_summary(sweep, meta, grids, facets, link, value_labels, links)
    )
    written["summary.md"] = out_dir / "summary.md"
    return written


__all__ = [
    "Config",
    "Grid",
    "Summary",
    "configurations",
    "link_axis",
    "metric_grid",
    "metrics_along_axis",
    "ranking_flips",
    "summarize",
    "sweep_summary",
    "t975",
    "tta_heatmap",
    "write_sweep_report",
]
