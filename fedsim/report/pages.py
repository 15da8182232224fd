"""Pages and files of a report, scenario or study alike: the requested
formats, the title page, the table page, and ``render_figures`` which saves
every figure as ``figures/<name>.<fmt>`` and as a page of ``report.pdf``
(file names from `fedsim.store.artifacts`).
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.table import Table as MplTable

from fedsim.report._units import format_seconds, format_target
from fedsim.report.methods import MethodStyle
from fedsim.report.scenario.tables import DIFFERENCE, PAPER, Table
from fedsim.report.style import pdf_pages, save_figure
from fedsim.store import write_bytes
from fedsim.store.artifacts import FIGURES_DIR, REPORT_PDF

IMAGE_FORMATS: frozenset[str] = frozenset({"png", "svg", "pdf"})
DEFAULT_DPI = 170


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The requested output formats, validated: "png" and "svg" write
    ``figures/*.<fmt>``, "pdf" writes ``report.pdf``. Raises ValueError."""
    chosen = tuple(dict.fromkeys(str(f).lower() for f in formats))
    unknown = [f for f in chosen if f not in IMAGE_FORMATS]
    if unknown:
        raise ValueError(f"unknown report formats {unknown}; choose from {sorted(IMAGE_FORMATS)}")
    return chosen


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



def title_page(
    name: str,
    description: str = "",
    *,
    methods: Sequence[str] = (),
    targets: Sequence[float] = (),
    deadline_s: float | None = None,
    provenance: Mapping[str, str] | None = None,
) -> Figure:
    """The PDF's first page: the name ("fedsim report" when empty), the
    description, then the methods, targets (fractions), round deadline
    (seconds) and ``provenance`` lines (str -> str)."""
    fig = Figure(figsize=(11.0, 8.5))
    name = name or "fedsim report"
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
    description = description.strip()
    for paragraph in description.split("\n\n") if description else []:
        wrapped = textwrap.fill(" ".join(paragraph.split()), width=105)
        fig.text(0.07, y, wrapped, fontsize=10.5, va="top", linespacing=1.4)
        y -= 10.5 * 1.45 / 72.0 / 8.5 * (wrapped.count("\n") + 1) + 0.025
    facts = []
    if methods:
        facts.append(("methods", ", ".join(str(m) for m in methods)))
    if targets:
        facts.append(("targets", ", ".join(format_target(float(t)) for t in targets)))
    if deadline_s is not None:
        facts.append(("deadline", format_seconds(float(deadline_s))))
    lines = [(str(k), str(v)) for k, v in [*facts, *(provenance or {}).items()]]
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
                    relative = f"{FIGURES_DIR}/{name}.{fmt}"
                    written[relative] = save_figure(fig, out_dir / relative, fmt, dpi)
                if image_formats:
                    links.append((caption, f"{FIGURES_DIR}/{name}.{image_formats[0]}"))
                if pdf is not None:
                    pdf.savefig(fig)
                fig.clear()  # free the artists now; the Figure is garbage after this
        finally:
            if pdf is not None:
                pdf.close()
    if pdf_buffer is not None:
        write_bytes(out_dir / REPORT_PDF, pdf_buffer.getvalue())
        written[REPORT_PDF] = out_dir / REPORT_PDF
    return written, links
