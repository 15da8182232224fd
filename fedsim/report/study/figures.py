"""The figures of a study report (`fedsim.report.study.analysis` holds the
numbers they draw):

* ``tta_heatmap``: per target a heatmap of mean TTA@x over link speed x
  configuration (rows labelled by method and remaining rate P_R), with the
  best configuration of each link speed marked and joined by a line;
* ``metrics_along_axis`` (`fedsim.report.study.along`, re-exported here): per
  axis and target, each metric along the axis as small multiples (mean and,
  with several seeds, 95 % Student-t interval over seeds).

With energy in the sweep (ETA@x, ``eta_j``: joules of all clients until the
round that reaches x; `fedsim.metrics`) the same two figures rank by energy:
``tta_heatmap(..., quantity="energy")`` over an ETA grid and
``metrics_along_axis(..., metrics=ENERGY_METRICS)``.

Cells missed by every seed are drawn hatched grey and labelled "not reached"
(and only then does the legend explain the hatching); cells missed by some
seeds show the mean of the others and "k/n".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter

from fedsim.report._units import energy_unit, format_joules, format_rate, format_seconds, time_unit
from fedsim.report.methods import MethodStyle
from fedsim.report.study.along import metrics_along_axis
from fedsim.report.study.analysis import NOT_REACHED, Configuration, Grid
from fedsim.report.style import figure, legend_below

UNREACHED_FACE = "#e6e6e6"
UNREACHED_EDGE = "#9a9a9a"


def _luminance(rgba: Sequence[float]) -> float:
    r, g, b = (float(c) for c in rgba[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def config_tick_label(config: Configuration, style: MethodStyle) -> str:
    """A heatmap row's label: the method and its remaining rate ("HP-FL,
    P_R 0.41"; "original, P_R 1" for a dense model), whether or not the
    study varies the method's rate (`Configuration.label` names P_R only
    then)."""
    return f"{style.label(config.method)}, P_R {format_rate(config.remaining_rate)}"


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
    ax.set_yticks(range(n_rows), [config_tick_label(c, style) for c in grid.configs])
    for tick, config in zip(ax.get_yticklabels(), grid.configs, strict=True):
        tick.set_color(style.colors.get(config.method, "black"))
        tick.set_fontweight("bold")
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_xlabel(link_title)
    ax.set_ylabel("Configuration")  # the tick labels name method and P_R
    ax.set_title(title)
    handles: list[Line2D | Patch] = [
        Line2D([], [], color="black", lw=1.3, marker="*", ms=10, mfc="white", mec="black")
    ]
    labels = [f"best configuration per column (lowest mean {name})"]
    if any(cell.n_reached == 0 for row in grid.cells for cell in row):
        handles.append(Patch(facecolor=UNREACHED_FACE, edgecolor=UNREACHED_EDGE, hatch="///", lw=0.0))
        labels.append(NOT_REACHED)
    legend_below(fig, handles, labels, max_cols=2, grow=False)
    return fig


__all__ = ["config_tick_label", "metrics_along_axis", "tta_heatmap"]
