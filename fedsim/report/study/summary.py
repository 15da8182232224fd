"""summary.md of a study: its axes and seeds, then per target (and facet of
the other axes) the best configuration per link value, where the ranking
flips and the table of mean TTA (numbers from `fedsim.report.study.analysis`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from fedsim.report._units import MISSING, format_joules, format_rate, format_seconds, format_target
from fedsim.report.inputs import StudyReportInput
from fedsim.report.markdown import markdown_table
from fedsim.report.study.analysis import NOT_REACHED, Grid, Summary, facet_text, ranking_flips


def _format_cell(cell: Summary) -> str:
    if cell.n_reached == 0:
        return NOT_REACHED
    text = format_seconds(cell.mean)
    if cell.n_seeds > 1 and cell.high > cell.low:
        text += f" ± {format_seconds(0.5 * (cell.high - cell.low))}"
    if not cell.reached:
        text += f" ({cell.n_reached}/{cell.n_seeds} seeds)"
    return text



def _best_and_runner(grid: Grid, j: int) -> tuple[str, int | None]:
    """At link value ``j`` (some configuration fully reached): the label of
    the best configuration, or of every configuration with exactly its mean
    joined as "A = B (tie)", and the index of the runner-up, the best of
    those strictly behind (None: no such). An exact tie is no win by 0 s."""
    ranking = grid.ranking(j)
    best = grid.cells[ranking[0]][j].mean
    tied = [i for i in ranking if grid.cells[i][j].mean == best]
    behind = [i for i in ranking if grid.cells[i][j].mean > best]
    label = " = ".join(grid.configs[i].label for i in tied) + (" (tie)" if len(tied) > 1 else "")
    return label, (behind[0] if behind else None)


def _energy_section(grid: Grid, axis_title: str, labels: Mapping[float, str], at: str,
                    where: str) -> list[str]:
    """The best configuration by ETA@x (joules of all clients to the target)
    per link value, its runner-up, and where the energy ranking flips."""
    lines = [f"### Best configuration by energy per {axis_title} at {at}{where}", ""]
    best = grid.best()
    rows = []
    for j, value in enumerate(grid.link_values):
        if best[j] is None:
            rows.append((labels[value], NOT_REACHED, MISSING, MISSING, MISSING))
            continue
        first = grid.cells[best[j]][j]
        label, second = _best_and_runner(grid, j)
        runner = (grid.configs[second].label, format_joules(grid.cells[second][j].mean)) \
            if second is not None else (MISSING, MISSING)
        rows.append((labels[value], label, format_joules(first.mean), *runner))
    lines += [markdown_table((axis_title, "Best", f"ETA@{at}", "Runner-up", f"ETA@{at}"), rows), ""]
    flips = ranking_flips(grid, labels)
    lines += [f"**Where the energy ranking flips** (ETA@{at}):", ""]
    lines += flips if flips else [f"- nowhere: the order is the same at every {axis_title} value."]
    return [*lines, ""]


def sweep_summary(
    sweep: pd.DataFrame,
    report: StudyReportInput,
    grids: Mapping[tuple[float, int], Grid],
    facets: Sequence[Mapping[str, float]],
    link: str | None,
    value_labels: Mapping[str, Mapping[float, str]],
    figure_links: Sequence[tuple[str, str]] = (),
    energy_grids: Mapping[tuple[float, int], Grid] | None = None,
    left_out: Sequence[tuple[str, str]] = (),
) -> str:
    """summary.md of a sweep: its axes and seeds, then per target (and facet of
    the other axes) the best configuration per link value, the ranking flips
    and the table of mean TTA; with ``energy_grids`` (the same cells ranked by
    ETA@x, `metric_grid(..., "eta_j")`), the best configuration by energy too.
    A target no configuration reached at any link value gets one line instead
    of its tables. ``left_out``: (caption, reason) of each figure the report
    did not draw because it carries no information
    (`fedsim.report.study.informative`), listed under the figures."""
    lines = [f"# {report.name or 'fedsim sweep'}", ""]
    description = report.description.strip()
    if description:
        lines += [description, ""]
    axes = report.axis_columns
    seeds = sorted(pd.unique(sweep["seed"]))
    lines.append("**Axes**:")
    lines.append("")
    for axis in axes:
        if report.is_rate_axis(axis):
            values = ", ".join(format_rate(v) for v in sorted(pd.unique(sweep[axis].astype(float))))
        else:
            values = ", ".join(value_labels[axis].values())
        lines.append(f"- `{axis}`: {values}")
    lines += [
        "",
        f"**Seeds**: {', '.join(str(s) for s in seeds)} ({len(seeds)} replicate{'s' if len(seeds) != 1 else ''} per cell)",
        "",
    ]
    provenance = report.provenance
    if provenance:
        lines += ["| provenance | |", "|:---|:---|"]
        lines += [f"| {k} | {v} |" for k, v in provenance.items()]
        lines.append("")
    if link is None:
        lines += ["No link axis: only the per-axis figures apply.", ""]
    for (target, facet_index), grid in grids.items():
        facet = facets[facet_index]
        at = format_target(target)
        where = f" ({facet_text(facet, value_labels)})" if facet else ""
        labels = value_labels[link] if link else {}
        lines += [f"## Best configuration per {report.axis_title(link or '')} at {at}{where}", ""]
        if not any(cell.n_reached for row in grid.cells for cell in row):
            lines += [f"No configuration reached {at} in any seed at any "
                      f"{report.axis_title(link or '')} value.", ""]
            continue
        best = grid.best()
        rows = []
        for j, value in enumerate(grid.link_values):
            if best[j] is None:
                rows.append((labels[value], NOT_REACHED, MISSING, MISSING, MISSING, MISSING))
                continue
            first = grid.cells[best[j]][j]
            best_label, runner = _best_and_runner(grid, j)
            if runner is not None:
                second = grid.cells[runner][j]
                margin = f"{format_seconds(second.mean - first.mean)} ({100.0 * (second.mean / first.mean - 1.0):.1f} %)"
                rows.append(
                    (
                        labels[value],
                        best_label,
                        format_seconds(first.mean),
                        grid.configs[runner].label,
                        format_seconds(second.mean),
                        margin,
                    )
                )
            else:
                rows.append(
                    (
                        labels[value],
                        best_label,
                        format_seconds(first.mean),
                        MISSING,
                        MISSING,
                        MISSING,
                    )
                )
        lines += [
            markdown_table(
                (
                    report.axis_title(link or ""),
                    "Best",
                    f"TTA@{at}",
                    "Runner-up",
                    f"TTA@{at}",
                    "Margin",
                ),
                rows,
            ),
            "",
        ]
        flips = ranking_flips(grid, labels)
        lines += [f"**Where the ranking flips** (TTA@{at}):", ""]
        lines += (
            flips
            if flips
            else [
                f"- nowhere: the order is the same at every {report.axis_title(link or '')} value."
            ]
        )
        lines += ["", f"Mean TTA@{at} over seeds (± half the 95 % interval):", ""]
        headers = ("Configuration", *(labels[v] for v in grid.link_values))
        table_rows = [
            (config.label, *(_format_cell(cell) for cell in grid.cells[i]))
            for i, config in enumerate(grid.configs)
        ]
        lines += [markdown_table(headers, table_rows), ""]
        if energy_grids and (target, facet_index) in energy_grids:
            lines += _energy_section(energy_grids[(target, facet_index)], report.axis_title(link or ""),
                                     labels, at, where)
    lines += [
        'Cells that no seed reached read "not reached"; "k/n seeds": only k of the n '
        "seeds reached the target, the mean is theirs. The best configuration is chosen "
        "among cells every seed reached. Traffic in decimal units (1 MB = 10^6 B).",
        "",
    ]
    if figure_links or left_out:
        lines += ["## Figures", ""]
        for caption, path in figure_links:
            lines += [f"![{caption}]({path})", ""]
    if left_out:
        lines += ["Left out because they carry no information here:", ""]
        lines += [f"- {caption}: {why}" for caption, why in left_out]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
