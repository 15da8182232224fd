"""The accuracy and round-time figures of a scenario report, each a function
of data frames returning a ``matplotlib.figure.Figure`` (no pyplot, no global
state besides the rcParams the caller sets with
``matplotlib.rc_context(style.RC)``).

* ``accuracy_curve``: test accuracy against round, cumulative traffic (the CCA
  curve), cumulative client computation (CTA) or simulated wall-clock (TTA),
  with the targets as dashed lines and NRA@x marked where reached;
* ``round_time_breakdown``: the mean client's round split into download,
  compute, upload and waiting, one panel per method.

Frames follow the contracts in docs/architecture.md (``rounds``, ``metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from fedsim.report._units import byte_unit, energy_unit, format_target, time_unit
from fedsim.report.methods import MethodStyle
from fedsim.report.scenario.tables import BREAKDOWN_COLUMNS
from fedsim.report.style import (
    DOUBLE_WIDTH_IN,
    SINGLE_WIDTH_IN,
    TARGET_LINE_COLOR,
    figure,
    phase_colors,
)

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
    "energy": (
        "cum_energy_j",
        "Cumulative client energy (all clients)",
        "joules",
        "Accuracy vs energy (ETA curve)",
    ),
}


def _unit(kind: str, largest: float) -> tuple[str, float]:
    if kind == "bytes":
        return byte_unit(largest)
    if kind == "seconds":
        return time_unit(largest)
    if kind == "joules":
        return energy_unit(largest)
    return ("", 1.0)


def finite_max(values: np.ndarray) -> float:
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


def set_log_x(ax: Axes) -> None:
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
    "compute", "wallclock" or "energy" (needs rounds.csv's ``cum_energy_j``);
    see ``ACCURACY_AXES``).

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
    unit, scale = _unit(kind, finite_max(values))
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
        set_log_x(ax)
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
        finite_max(rounds["round_wallclock_s"].to_numpy(dtype=float)),
        finite_max(rounds[list(BREAKDOWN_COLUMNS)].sum(axis=1).to_numpy(dtype=float)),
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
