"""The figures of reports/paper, drawn from the committed traces alone
(`paper.traces`), in the package's style (`fedsim.report.style`; accuracy in
percent, the scenario's method colours):

* ``tables/accuracy_seeds.png``: test accuracy (%) over the rounds of every
  (seed, method) of the paper's settings that has a trace, each one's longest
  run, one line per seed (line style) in the method's colour; one panel per
  group of `SEED_PANELS` that has a trace (Table I's methods; Table II's
  levels), so a missing run is absent, never an empty panel, and a run added
  or extended later appears without a change here (`seed_lines`);
* ``figures/accuracy_vs_{round,traffic,compute}.png``: test accuracy of each
  method of seed 0 against rounds, cumulative traffic (CCA) and cumulative
  client computation (CTA; in the idealised system equal to TTA), each
  method's longest run, so HP-FL's route to 95 % appears once a run of it
  that reached 95 % is in the traces (seed 0's at P_R 0.107 ends at round
  950, 93.9 %) (`fedsim.report.scenario.curves.accuracy_curve`, the scenario
  report's own figure);
* ``mobile_links/figures/tta_vs_uplink_90.png``: the mobile study's TTA@90 %
  along the uplink axis (`mobile_tta`), from its sweep.csv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fedsim import metrics as fm
from fedsim.report import style
from fedsim.report.methods import MethodStyle, method_order
from fedsim.report.scenario import curves
from fedsim.report.scenario.curves import set_log_x
from paper.common import PAPER_VARIANTS, TABLE_I, TARGETS, longest_curves
from paper.traces import ROUND_COLUMNS

#: the target marked in the accuracy_vs_* figures (the paper's)
PAPER_TARGET = 0.95
#: display labels of methods defined on the command line (scripts/paper_tables.py's RANDOM41, RANDOM21)
LABELS = {"random41": "random-pruning-0.41", "random21": "random-pruning-0.21"}
#: the order that fixes each method's colour in every figure here: the
#: scenario's (scenarios/paper.yaml), then the methods defined on the command line
METHOD_ORDER = [*TABLE_I, "hp-fl-0.41", "hp-fl-0.21", "random41", "random21"]
#: (title, methods) of the panels of accuracy_seeds.png; a method of the
#: paper's settings listed in none gets a panel "other methods"
SEED_PANELS = [
    ("Table I: dense, and pruned to P_R 0.107", TABLE_I),
    ("Table II: pruned to P_R 0.41 and 0.21", ["hp-fl-0.41", "hp-fl-0.21", "random41", "random21"]),
]
#: seed -> line style in accuracy_seeds.png (seeds beyond the list repeat it)
SEED_LINES = ["-", "--", ":", "-."]
#: the accuracy range of accuracy_seeds.png (%): where the methods and seeds part
SEEDS_YLIM = (80.0, 98.0)
#: (x, file stem, caption) of the curves figures; not wall-clock time: in the
#: paper's idealised system a round lasts its computation, so TTA = CTA and
#: that figure would repeat accuracy_vs_compute
CURVES = [
    ("round", "accuracy_vs_round", "Test accuracy vs round, seed 0, each method's longest run"),
    ("traffic", "accuracy_vs_traffic", "Test accuracy vs cumulative traffic (CCA), seed 0"),
    ("compute", "accuracy_vs_compute", "Test accuracy vs cumulative client computation (CTA), seed 0"),
]


def paper_curves(traces: pd.DataFrame) -> pd.DataFrame:
    """Each (seed, method)'s longest run of the paper's settings, as
    rounds.csv rows with a seed column."""
    paper = traces[traces["variant"].isin(PAPER_VARIANTS)]
    return longest_curves(paper)


@dataclass(frozen=True)
class SeedLine:
    """One line of accuracy_seeds.png: a (seed, method)'s longest run of the
    paper's settings. ``accuracy_pct``: test accuracy after each of
    ``rounds``, in percent; ``variant``: the traces' variant it comes from."""

    panel: str
    method: str
    seed: int
    variant: str
    rounds: np.ndarray
    accuracy_pct: np.ndarray


def seed_lines(traces: pd.DataFrame) -> list[SeedLine]:
    """The lines of accuracy_seeds.png: every (seed, method) of the paper's
    settings (`PAPER_VARIANTS`) in ``traces``, its longest run (the choice of
    the tables, `paper.common.longest_curves`), grouped by `SEED_PANELS`, in
    `METHOD_ORDER` then seed order. Nothing here names a run: what the traces
    hold is what is drawn."""
    data = paper_curves(traces)
    listed = [m for _, methods in SEED_PANELS for m in methods]
    others = [m for m in dict.fromkeys(data["method"]) if m not in listed]
    lines = []
    for title, methods in [*SEED_PANELS, ("other methods", others)]:
        order = method_order([*METHOD_ORDER, *others], methods)
        mine = data[data["method"].isin(methods)]
        for (method, seed), rows in sorted(mine.groupby(["method", "seed"]),
                                           key=lambda item: (order.index(item[0][0]), item[0][1])):
            rows = rows.sort_values("round")
            lines.append(SeedLine(title, str(method), int(seed), str(rows["variant"].iloc[0]),
                                  rows["round"].to_numpy(dtype=float),
                                  100.0 * rows["accuracy"].to_numpy(dtype=float)))
    return lines


def seeds_figure(lines: list[SeedLine]) -> Figure:
    """accuracy_seeds.png's figure: one panel per group of ``lines``, rounds
    on a log axis, accuracy (%) in `SEEDS_YLIM`, the paper's 95 % target
    dashed, a dot at each run's last round; each panel's legend names every
    method with the seeds it has and the line style of each seed. Call it
    inside ``matplotlib.rc_context(style.RC)``.

    Raises:
        ValueError: no line.
    """
    if not lines:
        raise ValueError("no trace of the paper's settings to draw")
    panels = list(dict.fromkeys(line.panel for line in lines))
    method_style = MethodStyle.build({"methods": METHOD_ORDER, "labels": LABELS},
                                     [line.method for line in lines])
    top = max(SEEDS_YLIM[1], min(100.0, math.ceil(max(line.accuracy_pct.max() for line in lines))))
    fig = style.figure(style.DOUBLE_WIDTH_IN, 3.6)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        mine = [line for line in lines if line.panel == panel]
        seeds: dict[str, list[int]] = {}
        for line in mine:
            color = method_style.colors[line.method]
            ax.plot(line.rounds, line.accuracy_pct, color=color, lw=0.9, alpha=0.9,
                    ls=SEED_LINES[line.seed % len(SEED_LINES)], label=f"{line.method}, seed {line.seed}")
            ax.plot(line.rounds[-1:], line.accuracy_pct[-1:], "o", ms=2.5, color=color)
            seeds.setdefault(line.method, []).append(line.seed)
        ax.axhline(100 * PAPER_TARGET, color=style.TARGET_LINE_COLOR, lw=0.6, ls="--")
        ax.text(0.01, 100 * PAPER_TARGET, f"{100 * PAPER_TARGET:.0f} %", color=style.TARGET_LINE_COLOR,
                fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
        ax.set_ylim(SEEDS_YLIM[0], top)
        set_log_x(ax)
        # from a little before the first round in the accuracy range: no blank decade on the left
        first = min(line.rounds[line.accuracy_pct >= SEEDS_YLIM[0]].min(initial=line.rounds[-1]) for line in mine)
        ax.set_xlim(0.7 * first, 1.5 * max(line.rounds[-1] for line in mine))
        ax.set_xlabel("Round")
        ax.set_title(panel, fontsize=8.5)
        handles = [Line2D([], [], color=method_style.colors[m], lw=1.2,
                          label=f"{method_style.label(m)}: seed{'s' if len(s) > 1 else ''} "
                                + ", ".join(map(str, s)))
                   for m, s in seeds.items()]
        every = sorted({s for found in seeds.values() for s in found})
        if len(every) > 1:  # one seed: the method entries name it, all lines are its style
            handles += [Line2D([], [], color="black", lw=0.9, ls=SEED_LINES[s % len(SEED_LINES)],
                               label=f"seed {s}") for s in every]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7,
                  frameon=False)
    axes[0].set_ylabel("Test accuracy (%)")
    return fig


def accuracy_seeds(traces: pd.DataFrame, path: Path) -> Path:
    """accuracy_seeds.png (module docstring) from whatever runs ``traces``
    holds; returns ``path``.

    Raises:
        ValueError: no trace of the paper's settings.
    """
    with matplotlib.rc_context(style.RC):
        return style.save_figure(seeds_figure(seed_lines(traces)), path, "png", 200)


def accuracy_curves(traces: pd.DataFrame, out_dir: Path, seed: int = 0) -> list[tuple[Path, str]]:
    """The accuracy_vs_* figures of ``seed`` (module docstring; NRA@95 % marked) in
    ``out_dir``; returns (path, caption) of each.

    Raises:
        ValueError: no trace of ``seed`` in the paper's settings.
    """
    data = paper_curves(traces)
    data = data[data["seed"] == seed]
    if data.empty:
        raise ValueError(f"no trace of seed {seed} in the paper's settings")
    order = method_order(METHOD_ORDER, data["method"])
    rounds = fm.rounds_table(data[["method", *ROUND_COLUMNS]])
    info = {m: {"remaining_rate": float(r["remaining_rate"].iloc[0]), "params": int(r["params"].iloc[0])}
            for m, r in data.groupby("method")}
    metrics = fm.metrics_table(rounds, TARGETS, info)
    method_style = MethodStyle.build({"methods": METHOD_ORDER, "labels": LABELS}, order)
    written = []
    with matplotlib.rc_context(style.RC):
        for x, stem, caption in CURVES:
            fig = curves.accuracy_curve(rounds, metrics, method_style, x, [PAPER_TARGET])
            written.append((style.save_figure(fig, Path(out_dir) / f"{stem}.png", "png", 200), caption))
    return written


def mobile_tta(sweep: pd.DataFrame, path: Path, target: float = 0.9) -> Path:
    """The mobile study's TTA@``target`` against the median client uplink,
    one panel per compute model, one line per method (seed 0): the only
    metric of that study that varies along the link axis (NRA, CCA, CTA and
    the final accuracy do not depend on the link when every client takes part
    in every round). ``sweep``: reports/paper/mobile_links/sweep.csv.

    Raises:
        ValueError: no row of ``sweep`` reached ``target``.
    """
    at = sweep[(sweep["target_accuracy"] - target).abs() < 1e-9].dropna(subset=["tta_s"])
    if at.empty:
        raise ValueError(f"no configuration of the sweep reached {target:.0%}")
    works = list(dict.fromkeys(at["system.compute.work_label"]))
    methods = list(dict.fromkeys(at["method"]))
    colors = style.method_colors(methods)
    with matplotlib.rc_context(style.RC):
        fig = style.figure(style.DOUBLE_WIDTH_IN, 3.0)
        axes = fig.subplots(1, len(works), sharey=True, squeeze=False)[0]
        for ax, work in zip(axes, works, strict=True):
            mine = at[at["system.compute.work_label"] == work]
            for method in methods:
                rows = mine[mine["method"] == method].sort_values("system.clients.uplink.median")
                ax.plot(rows["system.clients.uplink.median"] / 1e6, rows["tta_s"] / 60, marker="o", ms=3,
                        color=colors[method], lw=1.0, label=method)
            set_log_x(ax)
            ax.set_xlabel("Median client uplink (Mbps)")
            ax.set_title(f"compute model: {work}", fontsize=8)
        axes[0].set_ylabel(f"TTA@{100 * target:.0f} % (min)")
        axes[-1].legend(fontsize=7)
        return style.save_figure(fig, path, "png", 200)
