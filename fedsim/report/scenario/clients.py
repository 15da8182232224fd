"""The client figures of a scenario report, from the timeline frame (one row
per method x round x client; contract in docs/architecture.md):

* ``client_gantt``: who did what when in a few rounds of one method;
* ``round_time_distribution``: the ECDF of client round times per method.

The timeline can hold millions of rows: only vectorised selections touch it,
never a Python loop over its rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fedsim.report._units import format_seconds, time_unit
from fedsim.report.methods import MethodStyle
from fedsim.report.scenario.curves import auto_log_x, finite_max, set_log_x
from fedsim.report.style import (
    DOUBLE_WIDTH_IN,
    DROPPED_COLOR,
    SINGLE_WIDTH_IN,
    WAIT_COLOR,
    figure,
    phase_colors,
)

PHASES: tuple[tuple[str, str, str], ...] = (
    ("download", "download_start_s", "download_end_s"),
    ("compute", "compute_start_s", "compute_end_s"),
    ("upload", "upload_start_s", "upload_end_s"),
)



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

        largest = max(round_end, finite_max(times), float(deadline_s or 0.0))
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
    unit, scale = time_unit(finite_max(np.where(usable, duration, np.nan)))

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
        set_log_x(ax)
    ax.set_ylim(0, 101)
    ax.set_xlabel(f"Client round time, download start to upload end ({unit})")
    ax.set_ylabel("Client-rounds within x (%)")
    ax.set_title("Distribution of client round times (kept clients)")
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    return fig
