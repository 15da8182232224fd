"""write_sweep_report: a parameter study's figures, PDF and summary.md.

Inputs: the study's sweep frame (contract: `fedsim.report.study.analysis`)
and a `fedsim.report.inputs.StudyReportInput` (axes with their titles and
roles, method order, targets, provenance; the old ``meta`` mapping works too).

Outputs under ``out_dir``: per target a TTA heatmap over link speed x
configuration and, per axis and target, each metric along the axis
(``figures/<name>.<fmt>``); with energy in the sweep (``eta_j``), the same
by ETA@x (``heatmap_eta_*``, ``energy_along_*``); ``report.pdf`` with all of
them; ``summary.md`` with the best configuration per link speed (by time and,
with energy, by energy), where the ranking flips and the TTA table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from fedsim.report._units import format_target
from fedsim.report.columns import require_columns, with_float_columns
from fedsim.report.inputs import StudyReportInput
from fedsim.report.methods import MethodStyle
from fedsim.report.pages import check_formats, render_figures, title_page
from fedsim.report.study.along import facet_title
from fedsim.report.study.analysis import (
    ENERGY_METRICS,
    SWEEP_COLUMNS,
    SWEEP_METRICS,
    Grid,
    axis_value_labels,
    configurations,
    facet_text,
    facets,
    metric_grid,
    report_targets,
    select_rows,
)
from fedsim.report.study.figures import metrics_along_axis, tta_heatmap
from fedsim.report.study.informative import grid_has_data, informative_metrics
from fedsim.report.study.summary import sweep_summary
from fedsim.report.style import RC
from fedsim.store import write_text
from fedsim.store.artifacts import FIGURES_DIR, SUMMARY


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _target_slug(target: float) -> str:
    return format_target(target).replace(" %", "").replace(".", "p")


def _flat_reason(sweep: pd.DataFrame, target: float, dropped: Sequence[tuple[str, str, str]],
                 axis_title: str) -> str:
    """Why the metric panels ``dropped`` are left out of an along-axis figure
    (`informative.varies_along`): reached by no seed at ``target``, or
    constant along the axis."""
    rows = select_rows(sweep, target_accuracy=float(target))
    unreached = [t for c, t, _ in dropped if not rows[c].astype(float).notna().any()]
    constant = [t for _, t, _ in dropped if t not in unreached]
    parts = ([f"{', '.join(constant)} constant along {axis_title}"] if constant else []) + (
        [f"{', '.join(unreached)} not reached in any seed"] if unreached else [])
    return "; ".join(parts)



def write_sweep_report(
    out_dir: Path,
    sweep: pd.DataFrame,
    meta: StudyReportInput | Mapping[str, Any],
    *,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 170,
) -> dict[str, Path]:
    """Write a parameter study's figures, ``report.pdf`` and ``summary.md`` into
    ``out_dir``; return the written paths keyed by path relative to ``out_dir``.

    ``meta``: a `StudyReportInput`, or the old mapping (``axes``, ``name``,
    ``description``, ``methods``, ``labels``, ``targets``, ``link_axis``,
    ``axis_labels``, ``axis_roles``, ``provenance``, ``mode``; see
    `StudyReportInput.from_mapping`). The heatmap's link axis is
    `StudyReportInput.heatmap_axis`; zipped axes move together and the link
    axis, or the first, stands for all.

    Raises ValueError when the axes are empty or name a missing column, when
    ``sweep`` lacks a required column, or for unknown formats.
    """
    out_dir = Path(out_dir)
    chosen = check_formats(formats)
    report = StudyReportInput.coerce(meta)
    axes = report.axis_columns
    require_columns(sweep, [*axes, *SWEEP_COLUMNS], "sweep")
    sweep = with_float_columns(
        sweep, [*axes, "remaining_rate", "target_accuracy", *(m for m, _, _ in SWEEP_METRICS)]
    )
    by_energy = "eta_j" in sweep.columns  # ETA@x: the study ranks by energy as well
    if by_energy:
        sweep = with_float_columns(sweep, ["eta_j"])

    style = MethodStyle.build(report, sweep["method"].astype(str))
    configs = configurations(sweep, style)
    targets = report_targets(report.targets, sweep)
    link = report.heatmap_axis()
    if link is not None and link not in sweep.columns:
        raise ValueError(f"link axis {link!r} is not a column of the sweep")
    # Zipped axes move together: the first one (or the link axis) stands for
    # all, there are no facets, and only it gets an along-axis figure.
    zipped = report.zipped
    others = [] if zipped else [a for a in axes if a != link and not report.is_rate_axis(a)]
    cuts = facets(sweep, others)
    value_labels = {
        a: axis_value_labels(sweep, a, report.axis(a).role == "bandwidth")
        for a in axes
        if not report.is_rate_axis(a)
    }
    along = [link or axes[0]] if zipped else axes

    builders: list[tuple[str, str, Any]] = []
    left_out: list[tuple[str, str, str]] = []  # (file stem, caption, why): `informative`
    grids: dict[tuple[float, int], Grid] = {}
    energy_grids: dict[tuple[float, int], Grid] = {}
    if link is not None:
        for target in targets:
            for k, facet in enumerate(cuts):
                grid = metric_grid(sweep, configs, link, target, "tta_s", facet)
                grids[(target, k)] = grid
                where = f" ({facet_text(facet, value_labels)})" if facet else ""
                suffix = f"_{k + 1}" if len(cuts) > 1 else ""
                title = f"Time to {format_target(target)} accuracy{where}"
                # the drawn title names the axes by their titles ("compute model")
                shown_where = f" ({facet_title(facet, value_labels, report)})" if facet else ""
                drawn = f"Time to {format_target(target)} accuracy{shown_where}"
                if not grid_has_data(grid):
                    left_out.append((f"heatmap_tta_{_target_slug(target)}{suffix}", title,
                                     f"no configuration reached {format_target(target)} in any seed"))
                    continue
                builders.append(
                    (
                        f"heatmap_tta_{_target_slug(target)}{suffix}",
                        title,
                        lambda g=grid, t=drawn: tta_heatmap(
                            g, style, value_labels[link], report.axis_title(link), t
                        ),
                    )
                )
                if by_energy:
                    egrid = metric_grid(sweep, configs, link, target, "eta_j", facet)
                    energy_grids[(target, k)] = egrid
                    etitle = f"Energy to {format_target(target)} accuracy{where}"
                    edrawn = f"Energy to {format_target(target)} accuracy{shown_where}"
                    builders.append(
                        (
                            f"heatmap_eta_{_target_slug(target)}{suffix}",
                            etitle,
                            lambda g=egrid, t=edrawn: tta_heatmap(
                                g, style, value_labels[link], report.axis_title(link), t, quantity="energy"
                            ),
                        )
                    )
    for axis in along:
        others_of = [a for a in along if a != axis and not report.is_rate_axis(a)]
        for target in targets:
            for stem, what, all_metrics in (("along", "Metrics", SWEEP_METRICS),
                                            ("energy_along", "Energy", ENERGY_METRICS)):
                if stem == "energy_along" and not by_energy:
                    continue
                name = f"{stem}_{_slug(axis)}_{_target_slug(target)}"
                caption = f"{what} along {report.axis_title(axis)} at {format_target(target)}"
                shown = informative_metrics(sweep, axis, target, all_metrics, others_of,
                                            report.is_rate_axis(axis))
                dropped = [m for m in all_metrics if m[0] in sweep.columns and m not in shown]
                why = _flat_reason(sweep, target, dropped, report.axis_title(axis))
                if not shown:
                    left_out.append((name, caption, why))
                    continue
                if dropped:
                    caption += f" (left out: {why})"
                builders.append(
                    (
                        name,
                        caption,
                        lambda a=axis, t=target, m=tuple(shown): metrics_along_axis(
                            sweep, a, along, t, configs, style, report, metrics=m
                        ),
                    )
                )

    with matplotlib.rc_context(RC):
        title = (
            title_page(
                report.name,
                report.description,
                methods=style.order,
                targets=report.targets,
                provenance=report.provenance,
            )
            if "pdf" in chosen
            else None
        )
    written, links = render_figures(
        out_dir, builders, title, chosen, dpi, report.name or "fedsim sweep", RC
    )
    for stem, _, _ in left_out:  # an earlier run's image of a figure now left out
        for fmt in chosen:
            (out_dir / FIGURES_DIR / f"{stem}.{fmt}").unlink(missing_ok=True)
    write_text(
        out_dir / SUMMARY,
        sweep_summary(sweep, report, grids, cuts, link, value_labels, links, energy_grids,
                      left_out=[(caption, why) for _, caption, why in left_out]),
    )
    written[SUMMARY] = out_dir / SUMMARY
    return written


__all__ = ["write_sweep_report"]
