"""The figures of reports/paper, drawn from the committed traces alone
(`paper.traces`), in the package's style (`fedsim.report.style`; accuracy in
percent, the scenario's method colours):

* ``tables/accuracy_seeds.png``: test accuracy of the Table I methods over the
  rounds, one line per seed, each (seed, method)'s longest run; left the
  whole run on a log round axis, right the 90-98 % zoom on a linear one;
* ``figures/accuracy_vs_{round,traffic,compute}.png``: test accuracy of each
  method of seed 0 against rounds, cumulative traffic (CCA) and cumulative
  client computation (CTA; in the idealised system equal to TTA), each
  method's longest run, so HP-FL's route to 95 % appears
  (`fedsim.report.scenario.curves.accuracy_curve`, the scenario report's own
  figure);
* ``mobile_links/figures/tta_vs_uplink_90.png``: the mobile study's TTA@90 %
  along the uplink axis (`mobile_tta`), from its sweep.csv.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd

from fedsim import metrics as fm
from fedsim.report import style
from fedsim.report.methods import MethodStyle
from fedsim.report.scenario import curves
from fedsim.report.scenario.curves import set_log_x
from paper.common import PAPER_VARIANTS, TABLE_I, TARGETS, longest_curves
from paper.traces import ROUND_COLUMNS

#: the target marked in the accuracy_vs_* figures (the paper's)
PAPER_TARGET = 0.95
#: display labels of methods defined on the command line (scripts/paper_tables.py's RANDOM41, RANDOM21)
LABELS = {"random41": "random-pruning-0.41", "random21": "random-pruning-0.21"}
#: seed -> line style in accuracy_seeds.png (seeds beyond the list repeat it)
SEED_LINES = ["-", "--", ":", "-."]
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


def accuracy_seeds(traces: pd.DataFrame, path: Path, methods=TABLE_I) -> Path:
    """accuracy_seeds.png (module docstring); returns ``path``.

    Raises:
        ValueError: no trace of ``methods`` in the paper's settings.
    """
    data = paper_curves(traces)
    data = data[data["method"].isin(methods)]
    if data.empty:
        raise ValueError(f"no trace of {', '.join(methods)} in the paper's settings")
    with matplotlib.rc_context(style.RC):
        return _accuracy_seeds(data, path, list(methods))


def _accuracy_seeds(data: pd.DataFrame, path: Path, methods: list[str]) -> Path:
    colors = style.method_colors(methods)
    fig = style.figure(style.DOUBLE_WIDTH_IN, 3.0)
    axes = fig.subplots(1, 2)
    for ax, (lo, hi), log in zip(axes, [(10.0, 100.0), (90.0, 98.0)], [True, False], strict=True):
        for method, seed in sorted(set(zip(data["method"], data["seed"], strict=True)),
                                   key=lambda key: (methods.index(key[0]), key[1])):
            rows = data[(data["method"] == method) & (data["seed"] == seed)]
            ax.plot(rows["round"], 100 * rows["accuracy"], color=colors[method], lw=0.8, alpha=0.9,
                    ls=SEED_LINES[int(seed) % len(SEED_LINES)], label=method if seed == 0 else None)
        ax.axhline(95.0, color=style.TARGET_LINE_COLOR, lw=0.6, ls="--")
        ax.set_ylim(lo, hi)
        ax.set_xlabel("Round")
        ax.set_ylabel("Test accuracy (%)")
        if log:
            set_log_x(ax)
        else:
            ax.set_xlim(0, int(data["round"].max()) + 50)
    seeds = sorted(int(s) for s in data["seed"].unique())
    title = ", ".join(f"seed {s} {['solid', 'dashed', 'dotted', 'dash-dot'][s % 4]}" for s in seeds)
    axes[0].legend(loc="lower right", fontsize=7, title=title, title_fontsize=7)
    axes[0].set_title("all rounds (log axis)", fontsize=8)
    axes[1].set_title("zoom: 90-98 %", fontsize=8)
    return style.save_figure(fig, path, "png", 200)


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
    order = list(dict.fromkeys(data["method"]))
    rounds = fm.rounds_table(data[["method", *ROUND_COLUMNS]])
    info = {m: {"remaining_rate": float(r["remaining_rate"].iloc[0]), "params": int(r["params"].iloc[0])}
            for m, r in data.groupby("method")}
    metrics = fm.metrics_table(rounds, TARGETS, info)
    method_style = MethodStyle.build({"methods": order, "labels": LABELS}, order)
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
