"""The energy figure of a scenario report, from the timeline's energy columns.

``client_energy_distribution``: per method, the ECDF of each client's energy
summed over the rounds run (left) and the mean client-round's energy split by
what it was spent on (right): training, radio downloads and uploads, tails
and promotions (`fedsim.system.energy`). The accuracy-vs-energy curve is
`fedsim.report.scenario.curves.accuracy_curve` with ``x="energy"``.

Vectorised over the timeline (a group-by per method and client), never a
Python loop over its rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedsim.report._units import energy_unit
from fedsim.report.methods import MethodStyle
from fedsim.report.scenario.clients import _ecdf_points
from fedsim.report.scenario.curves import auto_log_x, finite_max, set_log_x
from fedsim.report.style import DOUBLE_WIDTH_IN, WAIT_COLOR, figure, phase_colors

__all__ = ["ENERGY_PARTS", "TIMELINE_ENERGY_COLUMNS", "client_energy_distribution"]

#: What a client-round's energy is spent on: (timeline column, legend label).
ENERGY_PARTS: tuple[tuple[str, str], ...] = (
    ("compute_j", "training"),
    ("radio_down_j", "radio: download"),
    ("radio_up_j", "radio: upload"),
    ("tail_j", "radio: tail"),
    ("promotion_j", "radio: promotion"),
)
#: The timeline columns this figure reads (besides method, client_id, selected).
TIMELINE_ENERGY_COLUMNS: tuple[str, ...] = (*(c for c, _ in ENERGY_PARTS), "energy_j")


def _part_colors(color: str) -> list[str]:
    shades = phase_colors(color)
    return [shades["compute"], shades["download"], shades["upload"], WAIT_COLOR, "#969696"]


def client_energy_distribution(timeline: pd.DataFrame, style: MethodStyle) -> Figure:
    """Two panels per report: left, per method, the ECDF of the clients'
    energy over all rounds run (every client selected at least once); right,
    per method, a bar of the mean selected client-round's joules by part
    (``ENERGY_PARTS``). Units: J, kJ or MJ from the largest value."""
    selected = timeline["selected"].to_numpy(dtype=bool)
    chosen = timeline.loc[selected, ["method", "client_id", *TIMELINE_ENERGY_COLUMNS]]
    per_client = chosen.groupby(["method", "client_id"], sort=False)["energy_j"].sum()
    per_round = chosen.groupby("method", sort=False)[[c for c, _ in ENERGY_PARTS]].mean()
    methods = [m for m in style.order if m in per_round.index]

    fig = figure(DOUBLE_WIDTH_IN, 3.3 + 0.17 * math.ceil(len(methods) / 3))
    left, right = fig.subplots(1, 2)
    unit, scale = energy_unit(finite_max(per_client.to_numpy(dtype=float)))
    spans: list[float] = []
    for method in methods:
        values = per_client.loc[method].to_numpy(dtype=float)
        xs, fractions = _ecdf_points(values)
        left.step(xs / scale, 100.0 * fractions, where="post", color=style.colors[method], lw=1.2,
                  label=style.label(method))
        spans += [float(values.min()), float(values.max())]
    if spans and auto_log_x(np.asarray(spans), decades=2.0):
        set_log_x(left)
    left.set_ylim(0, 101)
    left.set_xlabel(f"Client energy over all rounds run ({unit})")
    left.set_ylabel("Clients within x (%)")
    left.set_title("Energy per client")

    parts = per_round.loc[methods] if methods else per_round
    bar_unit, bar_scale = energy_unit(finite_max(parts.sum(axis=1).to_numpy(dtype=float)))
    positions = np.arange(len(methods))
    for i, method in enumerate(methods):
        start = 0.0
        for (column, label), color in zip(ENERGY_PARTS, _part_colors(style.colors[method]), strict=True):
            width = float(parts.loc[method, column]) / bar_scale
            right.barh(positions[i], width, left=start, color=color, edgecolor="white", lw=0.4,
                       label=label if i == 0 else None)
            start += width
    right.set_yticks(positions, [style.label(m) for m in methods])
    right.invert_yaxis()
    right.set_xlabel(f"Mean energy of a selected client in a round ({bar_unit})")
    right.set_title("Where a client-round's energy goes")
    right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    fig.legend(*left.get_legend_handles_labels(), loc="outside lower center",
               ncols=min(3, max(1, len(methods))), frameon=False)
    return fig
