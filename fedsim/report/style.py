"""One look for every figure: method colours, phase shades, fonts, saving.

Every figure of a report and of a sweep colours a method the same way: the
colour is a function of the method's position in the scenario's method order
(``meta["methods"]``), taken from matplotlib's qualitative ``tab10`` palette.
Within one method the phases of a client round are shades of that method's
colour (download light, compute full, upload dark) and waiting is neutral grey,
so a small-multiple panel never introduces a colour that belongs to another
method.

Figures are ``matplotlib.figure.Figure`` objects, never pyplot: no global
figure registry, no GUI backend, nothing to close but the object itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import colors as mcolors
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from fedsim.store import write_bytes

# matplotlib's tab10 (the default colour cycle), then the light halves of tab20
# for methods 11..20, so adding an 11th method never recolours the first ten.
TAB10: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
TAB20_LIGHT: tuple[str, ...] = (
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)
PALETTE: tuple[str, ...] = TAB10 + TAB20_LIGHT

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


def method_order(preferred: Iterable[str] | None, present: Iterable[str]) -> list[str]:
    """The methods to show, in order: those of ``preferred`` (the scenario's
    order) that are ``present`` in the data, then any other present method in
    order of first appearance."""
    present_list = list(dict.fromkeys(str(m) for m in present))
    present_set = set(present_list)
    ordered = [m for m in dict.fromkeys(str(m) for m in (preferred or [])) if m in present_set]
    return ordered + [m for m in present_list if m not in set(ordered)]


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """The colour (hex) of each method: ``methods[i]`` gets ``PALETTE[i]``
    (tab10, then the light tab20 hues, then repeating).

    Pass the scenario's method order (``meta["methods"]``) so a method keeps its
    colour in every figure of a report, and in every report of the scenario.
    """
    return {str(m): PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


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


@dataclass(frozen=True)
class MethodStyle:
    """The methods of a report in display order, with their colours and labels."""

    order: tuple[str, ...]
    colors: Mapping[str, str]
    labels: Mapping[str, str]

    @classmethod
    def build(cls, meta: Mapping[str, Any], present: Iterable[str]) -> MethodStyle:
        """From ``meta["methods"]`` (order; colours are assigned over the whole
        scenario order, so a report of a subset keeps the scenario's colours),
        ``meta["labels"]`` (optional method -> display label) and the methods
        present in the data."""
        preferred = [str(m) for m in (meta.get("methods") or [])]
        order = method_order(preferred, present)
        full = preferred + [m for m in order if m not in set(preferred)]
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        return cls(
            order=tuple(order),
            colors=method_colors(full),
            labels={m: labels.get(m, m) for m in full},
        )

    def label(self, method: str) -> str:
        return self.labels.get(method, method)


def figure(width_in: float, height_in: float) -> Figure:
    """A new constrained-layout Figure (no pyplot)."""
    return Figure(figsize=(width_in, height_in), layout="constrained")


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


def render_figures(
    out_dir: Path,
    builders: Sequence[tuple[str, str, Any]],
    title: Figure | None,
    formats: Sequence[str],
    dpi: int,
    pdf_title: str,
    rc: Mapping[str, Any],
) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Build each figure once and save it as ``figures/<name>.<fmt>`` for every
    image format and as a page of ``report.pdf`` (after ``title``, a title page
    built by the caller) when "pdf" is in ``formats``.

    ``builders`` holds ``(name, caption, build)`` with ``build() -> Figure``.
    Returns the files written (relative path -> path) and the (caption, image
    path) links for summary.md. Figures are cleared as soon as they are saved.
    """
    import matplotlib

    written: dict[str, Path] = {}
    links: list[tuple[str, str]] = []
    image_formats = [f for f in formats if f != "pdf"]
    pdf_buffer = io.BytesIO() if "pdf" in formats else None
    with matplotlib.rc_context(dict(rc)):
        pdf = pdf_pages(pdf_buffer, pdf_title)
        try:
            if pdf is not None and title is not None:
                pdf.savefig(title)
                title.clear()
            for name, caption, build in builders:
                fig = build()
                for fmt in image_formats:
                    relative = f"figures/{name}.{fmt}"
                    written[relative] = save_figure(fig, out_dir / relative, fmt, dpi)
                if image_formats:
                    links.append((caption, f"figures/{name}.{image_formats[0]}"))
                if pdf is not None:
                    pdf.savefig(fig)
                fig.clear()  # free the artists now; the Figure is garbage after this
        finally:
            if pdf is not None:
                pdf.close()
    if pdf_buffer is not None:
        write_bytes(out_dir / "report.pdf", pdf_buffer.getvalue())
        written["report.pdf"] = out_dir / "report.pdf"
    return written, links
