"""One look for every figure: method colours, phase shades, fonts, saving.

Method colours come from `fedsim.report.methods` (re-exported here). Within
one method the phases of a client round are shades of that method's
colour (download light, compute full, upload dark) and waiting is neutral grey,
so a small-multiple panel never introduces a colour that belongs to another
method.

Figures are ``matplotlib.figure.Figure`` objects, never pyplot: no global
figure registry, no GUI backend, nothing to close but the object itself.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib import colors as mcolors
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from fedsim.report.methods import (
    PALETTE,
    TAB10,
    TAB20_LIGHT,
    MethodStyle,
    method_colors,
    method_order,
)
from fedsim.store import write_bytes

WAIT_COLOR = "#d9d9d9"
DROPPED_COLOR = "#bdbdbd"
TARGET_LINE_COLOR = "#555555"

# Fonts sized for a figure printed at 5 in (single panel) or 7 in (small
# multiples) wide: 8-9 pt stays readable at a paper's column width.
RC: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
    "figure.titlesize": 10.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # embed TrueType: text stays selectable and searchable
    "svg.fonttype": "none",
    "hatch.linewidth": 0.6,
}

SINGLE_WIDTH_IN = 5.0
DOUBLE_WIDTH_IN = 7.2


def mix(color: str, other: str, amount: float) -> str:
    """``color`` moved ``amount`` (0..1) of the way towards ``other``, as hex."""
    r1, g1, b1 = mcolors.to_rgb(color)
    r2, g2, b2 = mcolors.to_rgb(other)
    return mcolors.to_hex(
        (r1 + (r2 - r1) * amount, g1 + (g2 - g1) * amount, b1 + (b2 - b1) * amount)
    )


def phase_colors(color: str) -> dict[str, str]:
    """Shades of a method's colour for the phases of a client round."""
    return {
        "download": mix(color, "#ffffff", 0.55),
        "compute": mcolors.to_hex(color),
        "upload": mix(color, "#000000", 0.45),
        "wait": WAIT_COLOR,
    }


def figure(width_in: float, height_in: float) -> Figure:
    """A new constrained-layout Figure (no pyplot)."""
    return Figure(figsize=(width_in, height_in), layout="constrained")


def legend_below(fig: Figure, handles: Sequence[Any], labels: Sequence[str], max_cols: int = 4,
                 grow: bool = True, **kwargs: Any) -> Legend | None:
    """A figure legend centred below the panels ("outside lower center" of
    constrained layout) in as many columns (at most ``max_cols``) as keep it
    no wider than the figure; one column is the last resort. ``grow``: make
    the figure taller by the legend's height, so the panels keep their size.
    No handles: no legend (None)."""
    if not handles:
        return None
    width_px = fig.get_figwidth() * fig.dpi
    legend = None
    for n_cols in range(max(1, min(max_cols, len(handles))), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=n_cols,
                            frameon=False, **kwargs)
        if legend.get_window_extent().width <= 0.98 * width_px or n_cols == 1:
            break
        legend.remove()
    assert legend is not None
    if grow:
        fig.set_figheight(fig.get_figheight() + legend.get_window_extent().height / fig.dpi)
    return legend


def figure_bytes(fig: Figure, fmt: str, dpi: int) -> bytes:
    """Render ``fig`` as ``fmt`` ("png", "svg", "pdf", ...) into memory."""
    buffer = io.BytesIO()
    # Metadata without dates or versions, so equal inputs give equal files.
    metadata: dict[str, Any] | None = {"Software": None} if fmt == "png" else None
    if fmt == "pdf":
        metadata = {"CreationDate": None, "Creator": None, "Producer": None}
    elif fmt == "svg":
        metadata = {"Date": None, "Creator": None}
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    return buffer.getvalue()


def save_figure(fig: Figure, path: Path, fmt: str, dpi: int) -> Path:
    """Render ``fig`` and write it atomically to ``path``."""
    write_bytes(path, figure_bytes(fig, fmt, dpi))
    return path


def pdf_pages(buffer: io.BytesIO | None, title: str) -> PdfPages | None:
    """A multi-page PDF writing into ``buffer`` (None: no PDF), with no dates
    or tool versions in its metadata, so equal inputs give equal bytes."""
    if buffer is None:
        return None
    return PdfPages(buffer, metadata={"Title": title, "Creator": None, "Producer": None,
                                      "CreationDate": None})


__all__ = [
    "DOUBLE_WIDTH_IN",
    "DROPPED_COLOR",
    "PALETTE",
    "RC",
    "SINGLE_WIDTH_IN",
    "TAB10",
    "TAB20_LIGHT",
    "TARGET_LINE_COLOR",
    "WAIT_COLOR",
    "MethodStyle",
    "figure",
    "figure_bytes",
    "legend_below",
    "method_colors",
    "method_order",
    "mix",
    "pdf_pages",
    "phase_colors",
    "save_figure",
]
