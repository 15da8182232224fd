"""The figures of a scenario report, each a function of data frames returning a
``matplotlib.figure.Figure`` (no pyplot, no global state besides the rcParams
the caller sets with ``matplotlib.rc_context(style.RC)``).

* ``accuracy_curve``: test accuracy against round, cumulative traffic (the CCA
  curve), cumulative client computation (CTA) or simulated wall-clock (TTA),
  with the targets as dashed lines and NRA@x marked where reached;
* ``round_time_breakdown``: the mean client's round split into download,
  compute, upload and waiting, one panel per method;
* ``client_gantt``: who did what when in a few rounds of one method;
* ``round_time_distribution``: the ECDF of client round times per method;
* ``table_figure`` and ``title_page``: the PDF's text pages.

Frames follow the contracts in docs/architecture.md (``rounds``, ``metrics``,
``timeline``). The timeline can hold millions of rows: only vectorised
selections touch it, never a Python loop over its rows.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.table import Table as MplTable
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from fedsim.report._units import byte_unit, format_seconds, format_target, time_unit
from fedsim.report.style import (
    DOUBLE_WIDTH_IN,
    DROPPED_COLOR,
    SINGLE_WIDTH_IN,
    TARGET_LINE_COLOR,
    WAIT_COLOR,
    MethodStyle,
    figure,
    phase_colors,
)
from fedsim.report.tables import BREAKDOWN_COLUMNS, DIFFERENCE, PAPER, Table

TARGET_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P")

# x axis of each accuracy curve: rounds column, axis label, kind of unit, title
ACCURACY_AXES: dict[str, tuple[str, str, str, str]] = {
    "round": ("round", "Round", "count", "Test accuracy vs round"),
    "traffic": (
        "cum_bytes",
        "Cumulative traffic through the server's link",
        "bytes",
        "Accuracy vs communication (CCA curve)",
    ),
    "compute": (
        "cum_compute_s",
        "Cumulative client computation time",
        "seconds",
        "Accuracy vs computation (CTA curve)",
    ),
    "wallclock": (
        "cum_wallclock_s",
        "Simulated wall-clock time",
        "seconds",
        "Accuracy vs wall-clock time (TTA curve)",
    ),
}

PHASES: tuple[tuple[str, str, str], ...] = (
    ("download", "download_start_s", "download_end_s"),
    ("compute", "compute_start_s", "compute_end_s"),
    ("upload", "upload_start_s", "upload_end_s"),
)


def _unit(kind: str, largest: float) -> tuple[str, float]:
    if kind == "bytes":
        return byte_unit(largest)
    if kind == "seconds":
        return time_unit(largest)
    return ("", 1.0)


def _finite_max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else 0.0


def auto_log_x(values: np.ndarray, decades: float = 3.0) -> bool:
    """True when the positive ``values`` span at least ``decades`` orders of
    magnitude (e.g. rounds 1..3000): a log x axis then shows both the early
    rounds and the NRA differences between methods."""
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size < 2:
        return False
    return bool(positive.max() / positive.min() >= 10.0**decades)


def _log_x(ax: Axes) -> None:
    """Log x axis with plain tick labels ("0.1", "10", "1000", not 10^3)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def _nra_of(metrics: pd.DataFrame | None, method: str, target: float) -> int | None:
    if metrics is None or metrics.empty:
        return None
    found = metrics.loc[
        (metrics["method"] == method)
        & np.isclose(metrics["target_accuracy"].to_numpy(dtype=float), target, rtol=0.0, atol=1e-9),
        "nra",
    ]
    if found.empty or pd.isna(found.iloc[0]) or not np.isfinite(float(found.iloc[0])):
        return None
    return round(float(found.iloc[0]))


def _mark_targets(ax: Axes, targets: Sequence[float]) -> None:
    """Dashed horizontal line per target, labelled "95 %" at the left end."""
    transform = blended_transform_factory(ax.transAxes, ax.transData)
    for target in targets:
        ax.axhline(100.0 * target, color=TARGET_LINE_COLOR, ls="--", lw=0.8, zorder=1)
        # left end: accuracy curves rise from the left, so it stays clear of them
        ax.text(
            0.005,
            100.0 * target,
            format_target(target),
            transform=transform,
            ha="left",
            va="bottom",
            fontsize=7.5,
            color=TARGET_LINE_COLOR,
        )


def accuracy_curve(
    rounds: pd.DataFrame,
    metrics: pd.DataFrame | None,
    style: MethodStyle,
    x: str,
    targets: Sequence[float],
    *,
    log_x: bool | None = None,
) -> Figure:
    """Test accuracy (%) of each method against ``x`` ("round", "traffic",
    "compute" or "wallclock"; see ``ACCURACY_AXES``).

    Byte axes are in decimal kB/MB/GB/TB and time axes in s/min/h/d, the unit
    chosen from the largest value. Every target is a dashed line, every
    reached NRA@x a marker (one marker shape per target) on its method's
    curve. ``log_x`` None: log scale when x spans >= 3 decades.

    Raises ValueError for an unknown ``x``.
    """
    if x not in ACCURACY_AXES:
        raise ValueError(f"x must be one of {sorted(ACCURACY_AXES)}, got {x!r}")
    column, axis_label, kind, title = ACCURACY_AXES[x]
    values = rounds[column].to_numpy(dtype=float)
    unit, scale = _unit(kind, _finite_max(values))
    use_log = auto_log_x(values) if log_x is None else log_x

    n_entries = len(style.order) + len(targets)
    fig = figure(SINGLE_WIDTH_IN, 3.3 + 0.17 * math.ceil(n_entries / 3))
    ax = fig.add_subplot()
    lowest = 100.0
    highest = 0.0
    curves: list[tuple[np.ndarray, np.ndarray]] = []
    for method in style.order:
        sub = rounds.loc[rounds["method"] == method].sort_values("round", kind="stable")
        if sub.empty:
            continue
        xs = sub[column].to_numpy(dtype=float) / scale
        ys = 100.0 * sub["accuracy"].to_numpy(dtype=float)
        color = style.colors[method]
        ax.plot(xs, ys, color=color, lw=1.2, label=style.label(method), zorder=3)
        if np.isfinite(ys).any():
            lowest = min(lowest, float(np.nanmin(ys)))
            highest = max(highest, float(np.nanmax(ys)))
        curves.append((xs, ys))
        round_nums = sub["round"].to_numpy()
        for i, target in enumerate(targets):
            nra = _nra_of(metrics, method, float(target))
            if nra is None:
                continue
            at = np.flatnonzero(round_nums == nra)
            if at.size == 0:
                continue
            ax.plot(
                xs[at[0]],
                ys[at[0]],
                marker=TARGET_MARKERS[i % len(TARGET_MARKERS)],
                ms=5,
                color=color,
                mec="black",
                mew=0.6,
                ls="none",
                zorder=5,
            )
    _mark_targets(ax, targets)

    # Accuracy starts near chance and spends most rounds near the top: cut the
    # y axis 20 points under the lowest target so the targets are resolvable.
    bottom = max(0.0, lowest - 1.0)
    if targets:
        bottom = max(bottom, 5.0 * math.floor((100.0 * min(targets) - 20.0) / 5.0))
    entering = [
        float(xs[np.flatnonzero((ys >= bottom) & (xs > 0))[0]])
        for xs, ys in curves
        if ((ys >= bottom) & (xs > 0)).any()
    ]
    top = min(100.5, max(highest, 100.0 * max(targets, default=0.0)) + 1.0)
    if top > bottom:
        ax.set_ylim(bottom, top)
    if use_log:
        _log_x(ax)
        # start the axis where the first curve enters the visible band
        if entering:
            ax.set_xlim(left=0.8 * min(entering))
    ax.set_xlabel(f"{axis_label} ({unit})" if unit else axis_label)
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title(title)

    handles, labels = ax.get_legend_handles_labels()
    for i, target in enumerate(targets):
        handles.append(
            Line2D(
                [],
                [],
                marker=TARGET_MARKERS[i % len(TARGET_MARKERS)],
                ls="none",
                mfc="white",
                mec="black",
                ms=5,
            )
        )
        labels.append(f"NRA@{format_target(float(target))}")
    # below the axes: inside, any corner is crossed by some curve on a log axis
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    return fig


def _bin_rounds(
    sub: pd.DataFrame, columns: Sequence[str], max_bins: int
) -> tuple[pd.DataFrame, int]:
    """Means of ``columns`` (and of the round number) over consecutive blocks of
    ``ceil(n / max_bins)`` rounds, and the block length."""
    width = max(1, math.ceil(len(sub) / max_bins))
    if width == 1:
        return sub[["round", *columns]].reset_index(drop=True), 1
    block = (sub["round"].to_numpy() - sub["round"].to_numpy().min()) // width
    return sub[["round", *columns]].groupby(block).mean().reset_index(drop=True), width


def round_time_breakdown(
    rounds: pd.DataFrame, style: MethodStyle, *, max_bins: int = 100
) -> Figure:
    """The mean client's round per method (one panel each, shared axes): stacked
    download, compute, upload and waiting seconds, with the round's simulated
    duration as a black line. Long runs are averaged over blocks of rounds so
    that at most ``max_bins`` bars/points remain; few rounds are drawn as bars.
    """
    methods = [m for m in style.order if (rounds["method"] == m).any()]
    n_cols = min(3, max(1, len(methods)))
    n_rows = max(1, math.ceil(len(methods) / n_cols))
    fig = figure(DOUBLE_WIDTH_IN, 0.9 + 2.0 * n_rows)
    axes = fig.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False)
    largest = max(
        _finite_max(rounds["round_wallclock_s"].to_numpy(dtype=float)),
        _finite_max(rounds[list(BREAKDOWN_COLUMNS)].sum(axis=1).to_numpy(dtype=float)),
    )
    unit, scale = time_unit(largest)
    names = ("download", "compute", "upload", "wait")
    widths: set[int] = set()
    for index, method in enumerate(methods):
        ax = axes[index // n_cols][index % n_cols]
        sub = rounds.loc[rounds["method"] == method].sort_values("round", kind="stable")
        binned, width = _bin_rounds(sub, [*BREAKDOWN_COLUMNS, "round_wallclock_s"], max_bins)
        widths.add(width)
        xs = binned["round"].to_numpy(dtype=float)
        stacks = [np.nan_to_num(binned[c].to_numpy(dtype=float)) / scale for c in BREAKDOWN_COLUMNS]
        shades = phase_colors(style.colors[method])
        colors = [shades[n] for n in names]
        if len(xs) <= 60:
            bottom = np.zeros_like(xs)
            for stack, color, name in zip(stacks, colors, names, strict=True):
                ax.bar(xs, stack, bottom=bottom, width=0.85 * width, color=color, lw=0, label=name)
                bottom = bottom + stack
        else:
            ax.stackplot(xs, *stacks, colors=colors, labels=names, lw=0)
        ax.plot(
            xs, binned["round_wallclock_s"].to_numpy(dtype=float) / scale, color="black", lw=0.8
        )
        ax.set_title(style.label(method), color=style.colors[method], fontweight="bold")
        ax.grid(axis="x", visible=False)
        if index % n_cols == 0:
            ax.set_ylabel(f"Time ({unit})")
        if index // n_cols == n_rows - 1 or index + n_cols >= len(methods):
            ax.set_xlabel("Round")
            ax.xaxis.set_tick_params(labelbottom=True)
    for index in range(len(methods), n_rows * n_cols):
        axes[index // n_cols][index % n_cols].set_visible(False)

    if methods:
        shades = phase_colors(style.colors[methods[0]])
        handles: list[Any] = [Patch(color=shades[n]) for n in names]
        handles.append(Line2D([], [], color="black", lw=0.8))
        labels = [
            "download (light)",
            "compute (full colour)",
            "upload (dark)",
            "waiting (grey)",
            "round duration",
        ]
        fig.legend(handles, labels, loc="outside lower center", ncols=5, frameon=False)
    block = max(widths, default=1)
    suffix = f" (means over blocks of {block} rounds)" if block > 1 else ""
    fig.suptitle(f"Per-round time of the mean client, by phase{suffix}")
    return fig


def default_gantt_selection(timeline: pd.DataFrame, style: MethodStyle) -> tuple[str, list[int]]:
    """The method and rounds the Gantt chart shows by default: the method with
    the most dropped client-rounds (the first method when nobody drops), its
    round 1, its last round and, when it has drops, the round with the most."""
    selected = timeline["selected"].to_numpy(dtype=bool)
    dropped = selected & ~timeline["kept"].to_numpy(dtype=bool)
    drops = pd.Series(dropped).groupby(timeline["method"].to_numpy()).sum()
    present = [m for m in style.order if m in drops.index]
    method = present[0] if present else str(timeline["method"].iloc[0])
    if present and drops.loc[present].max() > 0:
        method = max(present, key=lambda m: (int(drops.loc[m]), -present.index(m)))
    mask = timeline["method"].to_numpy() == method
    round_nums = timeline["round"].to_numpy()[mask]
    chosen = {int(round_nums.min()), int(round_nums.max())}
    method_drops = dropped[mask]
    if method_drops.any():
        per_round = pd.Series(method_drops).groupby(round_nums).sum()
        chosen.add(int(per_round.idxmax()))
    return method, sorted(chosen)


def _drop_summary(reasons: pd.Series) -> str:
    counts = reasons[reasons != ""].value_counts()
    return ", ".join(f"{int(n)} {reason}" for reason, n in counts.items())


def client_gantt(
    timeline: pd.DataFrame,
    style: MethodStyle,
    method: str,
    round_nums: Sequence[int],
    *,
    deadline_s: float | None = None,
    max_clients: int = 100,
) -> Figure:
    """One panel per round of ``method``: a horizontal bar per selected client
    with its download, compute and upload (shades of the method's colour) and
    its waiting until the last upload (grey); dropped clients hatched grey up
    to where they got; clients sorted by finish time. Times are seconds since
    the round's first download started; ``deadline_s`` (same origin) is drawn
    as a dashed line. Rounds with more than ``max_clients`` clients show an
    evenly spaced subset of them.
    """
    rows = timeline.loc[
        (timeline["method"].to_numpy() == method)
        & timeline["round"].isin(list(round_nums)).to_numpy()
        & timeline["selected"].to_numpy(dtype=bool)
    ]
    per_round = [rows.loc[rows["round"] == r] for r in round_nums]
    shown = max([min(len(d), max_clients) for d in per_round], default=1)
    height = float(np.clip(1.5 + 0.06 * shown, 2.8, 9.5))
    fig = figure(DOUBLE_WIDTH_IN, height)
    axes = fig.subplots(1, max(1, len(round_nums)), squeeze=False)[0]
    shades = phase_colors(style.colors[method])

    starts = [c for _, c, _ in PHASES]
    ends = [c for _, _, c in PHASES]
    for ax, round_num, data in zip(axes, round_nums, per_round, strict=True):
        ax.grid(axis="y", visible=False)
        n_selected = len(data)
        if n_selected == 0:
            ax.set_title(f"Round {round_num}: no clients")
            continue
        times = data[starts + ends].to_numpy(dtype=float)
        origin = np.nanmin(times) if np.isfinite(times).any() else 0.0
        times = times - origin
        kept = data["kept"].to_numpy(dtype=bool)
        last_time = np.where(
            np.isfinite(times).any(axis=1),
            np.nanmax(np.where(np.isfinite(times), times, -np.inf), axis=1),
            0.0,
        )
        # kept clients first, by finish time; then dropped ones by how far they got
        order = np.lexsort((data["client_id"].to_numpy(), last_time, ~kept))
        if n_selected > max_clients:
            order = order[
                np.unique(np.linspace(0, n_selected - 1, max_clients).round().astype(int))
            ]
        times, kept, last_time = times[order], kept[order], last_time[order]
        client_ids = data["client_id"].to_numpy()[order]
        y = np.arange(len(order))
        round_end = float(np.nanmax(last_time[kept])) if kept.any() else 0.0
        reasons = data["drop_reason"].fillna("").astype(str)
        if deadline_s is not None and (reasons == "deadline").any():
            round_end = max(round_end, float(deadline_s))

        largest = max(round_end, _finite_max(times), float(deadline_s or 0.0))
        unit, scale = time_unit(largest)
        for j, (name, _, _) in enumerate(PHASES):
            left = times[:, j]
            width = times[:, j + len(PHASES)] - left
            ok = np.isfinite(left) & np.isfinite(width)
            ax.barh(
                y[ok & kept],
                width[ok & kept] / scale,
                left=left[ok & kept] / scale,
                height=0.8,
                color=shades[name],
                lw=0,
            )
            ax.barh(
                y[ok & ~kept],
                width[ok & ~kept] / scale,
                left=left[ok & ~kept] / scale,
                height=0.8,
                color=DROPPED_COLOR,
                hatch="////",
                edgecolor="#7a7a7a",
                lw=0,
            )
        upload_end = times[:, -1]
        waits = kept & np.isfinite(upload_end)
        ax.barh(
            y[waits],
            (round_end - upload_end[waits]) / scale,
            left=upload_end[waits] / scale,
            height=0.35,
            color=WAIT_COLOR,
            lw=0,
        )
        nowhere = ~kept & ~np.isfinite(times).any(axis=1)
        if nowhere.any():
            ax.plot(np.zeros(int(nowhere.sum())), y[nowhere], "x", color="#7a7a7a", ms=3)
        if deadline_s is not None:
            ax.axvline(float(deadline_s) / scale, color="black", ls="--", lw=1.0)
        ax.set_ylim(len(order) - 0.4, -0.6)  # first finisher on top
        if len(order) <= 30:
            ax.set_yticks(y, [str(c) for c in client_ids], fontsize=6.5)
        else:
            ax.set_yticks([])
        ax.set_xlim(left=0.0)
        ax.set_xlabel(f"Time since round start ({unit})")
        n_kept = int(data["kept"].to_numpy(dtype=bool).sum())
        title = f"Round {round_num}: {n_kept} of {n_selected} kept"
        drops = _drop_summary(reasons)
        if drops:
            title += f"\ndropped: {drops}"
        if n_selected > max_clients:
            title += f"\n(showing {len(order)} of {n_selected} clients)"
        ax.set_title(title, fontsize=8.5)
    axes[0].set_ylabel("Client (by finish time)")

    handles: list[Any] = [Patch(color=shades[name]) for name, _, _ in PHASES]
    handles += [
        Patch(color=WAIT_COLOR),
        Patch(facecolor=DROPPED_COLOR, hatch="////", edgecolor="#7a7a7a", lw=0),
    ]
    labels = ["download", "compute", "upload", "waiting for the last upload", "dropped"]
    if deadline_s is not None:
        handles.append(Line2D([], [], color="black", ls="--", lw=1.0))
        labels.append(f"deadline ({format_seconds(deadline_s)})")
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle(
        f"Client timelines: {style.label(method)}", color=style.colors[method], fontweight="bold"
    )
    return fig


def _ecdf_points(values: np.ndarray, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """x and cumulative fraction (0..1] of the empirical CDF of ``values``, with
    at most ``max_points`` points (quantiles) for large samples."""
    values = np.sort(values)
    n = values.size
    if n <= max_points:
        return values, np.arange(1, n + 1) / n
    fractions = np.linspace(1.0 / n, 1.0, max_points)
    return np.quantile(values, fractions, method="inverted_cdf"), fractions


def round_time_distribution(timeline: pd.DataFrame, style: MethodStyle) -> Figure:
    """ECDF, per method, of the client round time of kept clients: seconds from
    the start of their download to the end of their upload. The legend gives
    each method's share of dropped client-rounds."""
    method_col = timeline["method"].to_numpy()
    kept = timeline["kept"].to_numpy(dtype=bool)
    selected = timeline["selected"].to_numpy(dtype=bool)
    duration = timeline["upload_end_s"].to_numpy(dtype=float) - timeline[
        "download_start_s"
    ].to_numpy(dtype=float)
    usable = kept & np.isfinite(duration)
    unit, scale = time_unit(_finite_max(np.where(usable, duration, np.nan)))

    fig = figure(SINGLE_WIDTH_IN, 3.2 + 0.17 * math.ceil(len(style.order) / 2))
    ax = fig.add_subplot()
    spans: list[float] = []
    for method in style.order:
        mine = method_col == method
        if not mine.any():
            continue
        values = duration[mine & usable]
        n_selected = int((mine & selected).sum())
        n_dropped = int((mine & selected & ~kept).sum())
        share = 100.0 * n_dropped / n_selected if n_selected else 0.0
        label = f"{style.label(method)} ({share:.1f} % dropped)"
        if values.size == 0:
            ax.plot([], [], color=style.colors[method], label=label)
            continue
        xs, fractions = _ecdf_points(values)
        ax.step(
            xs / scale,
            100.0 * fractions,
            where="post",
            color=style.colors[method],
            lw=1.2,
            label=label,
        )
        spans.append(float(values.min()))
        spans.append(float(values.max()))
    if spans and auto_log_x(np.asarray(spans), decades=2.0):
        _log_x(ax)
    ax.set_ylim(0, 101)
    ax.set_xlabel(f"Client round time, download start to upload end ({unit})")
    ax.set_ylabel("Client-rounds within x (%)")
    ax.set_title("Distribution of client round times (kept clients)")
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    return fig


def _text_width_pt(text: str, size_pt: float, bold: bool = False) -> float:
    """Width of ``text`` in points as the Agg renderer lays it out."""
    renderer = RendererAgg(1, 1, 72)
    prop = FontProperties(size=size_pt, weight="bold" if bold else "normal")
    width, _, _ = renderer.get_text_width_height_descent(text, prop, ismath=False)
    return float(width)


def table_figure(tables: Sequence[Table], style: MethodStyle, title: str = "") -> Figure:
    """The metrics tables as a landscape page: one table per target, method
    names in their colours, paper and difference rows in grey italics. Column
    widths are measured from the text; the page widens rather than cropping."""
    font_pt, pad_pt, row_in = 7.5, 12.0, 0.24
    n_cols = max((len(t.headers) for t in tables), default=1)
    widths_pt = np.zeros(n_cols)
    for table in tables:
        for col, header in enumerate(table.headers):
            widths_pt[col] = max(widths_pt[col], _text_width_pt(header, font_pt, bold=True))
        for row in table.rows:
            for col, text in enumerate(row):
                widths_pt[col] = max(widths_pt[col], _text_width_pt(text, font_pt, bold=col == 0))
    widths_pt += pad_pt
    table_in = float(widths_pt.sum()) / 72.0
    width_in = max(11.0, table_in + 0.8)
    n_lines = sum(len(t.rows) + 3 for t in tables)
    height_in = max(3.0, 1.1 + row_in * n_lines)
    fig = Figure(figsize=(width_in, height_in))
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold", y=1.0 - 0.3 / height_in)
    left = 0.4 / width_in
    axes_width = 1.0 - 2.0 * left
    col_fracs = widths_pt / 72.0 / (width_in * axes_width)
    top = 1.0 - 0.75 / height_in
    position = top
    for table in tables:
        share = (len(table.rows) + 3) * row_in / height_in
        ax = fig.add_axes((left, position - share, axes_width, share))
        ax.set_axis_off()
        ax.set_title(table.title, loc="left", fontsize=10, fontweight="bold")
        position -= share
        if not table.rows:
            continue
        cells = MplTable(ax, loc="upper left")
        cells.AXESPAD = 0.0  # align the table with its title
        cell_height = 1.0 / (len(table.rows) + 3)
        for col, header in enumerate(table.headers):
            cells.add_cell(
                0, col, width=col_fracs[col], height=cell_height, text=header, loc="center"
            )
        for row, values in enumerate(table.rows, start=1):
            for col, text in enumerate(values):
                cells.add_cell(
                    row,
                    col,
                    width=col_fracs[col],
                    height=cell_height,
                    text=text,
                    loc="left" if col == 0 else "right",
                )
        cells.auto_set_font_size(False)
        cells.set_fontsize(font_pt)
        for (row, col), cell in cells.get_celld().items():
            cell.set_edgecolor("#cccccc")
            cell.set_linewidth(0.5)
            cell.PAD = 0.5 * pad_pt / 72.0 / (width_in * axes_width * col_fracs[col])
            if row == 0:
                cell.set_text_props(fontweight="bold")
                cell.set_facecolor("#f0f0f0")
                continue
            kind = table.kinds[row - 1]
            if kind in (PAPER, DIFFERENCE):
                cell.set_text_props(color="#666666", fontstyle="italic")
            elif col == 0:
                color = style.colors.get(table.methods[row - 1], "black")
                cell.set_text_props(color=color, fontweight="bold")
        ax.add_table(cells)
    return fig


def title_page(meta: Mapping[str, Any]) -> Figure:
    """The PDF's first page: scenario name, description and provenance lines
    (``meta["provenance"]``: str -> str)."""
    fig = Figure(figsize=(11.0, 8.5))
    name = str(meta.get("name") or meta.get("scenario") or "fedsim report")
    fig.text(0.07, 0.88, name, fontsize=22, fontweight="bold", va="top")
    fig.text(
        0.07,
        0.815,
        "fedsim: cost of federated learning, simulated",
        fontsize=11,
        color="#555555",
        va="top",
    )
    y = 0.74
    description = str(meta.get("description") or "").strip()
    for paragraph in description.split("\n\n") if description else []:
        wrapped = textwrap.fill(" ".join(paragraph.split()), width=105)
        fig.text(0.07, y, wrapped, fontsize=10.5, va="top", linespacing=1.4)
        y -= 10.5 * 1.45 / 72.0 / 8.5 * (wrapped.count("\n") + 1) + 0.025
    targets = meta.get("targets") or []
    methods = meta.get("methods") or []
    facts = []
    if methods:
        facts.append(("methods", ", ".join(str(m) for m in methods)))
    if targets:
        facts.append(("targets", ", ".join(format_target(float(t)) for t in targets)))
    if meta.get("deadline_s") is not None:
        facts.append(("deadline", format_seconds(float(meta["deadline_s"]))))
    provenance = meta.get("provenance") or {}
    lines = [(str(k), str(v)) for k, v in [*facts, *provenance.items()]]
    if lines:
        y = min(y, 0.55)
        fig.text(0.07, y, "Scenario and provenance", fontsize=12, fontweight="bold", va="top")
        y -= 0.045
        step = min(0.03, (y - 0.03) / len(lines))  # long provenance lists still fit the page
        for key, value in lines:
            value = textwrap.shorten(value, width=110, placeholder=" …")
            fig.text(0.07, y, key, fontsize=9, family="monospace", color="#555555", va="top")
            fig.text(0.25, y, value, fontsize=9, family="monospace", va="top")
            y -= step
    return fig
