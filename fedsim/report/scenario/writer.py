"""write_report: a scenario's figures, PDF and summary.md from its frames.

Inputs are the pipeline's frames (contracts in docs/architecture.md):
``rounds`` (method x round), ``metrics`` (method x target), ``timeline``
(method x round x client) and a `fedsim.report.inputs.ScenarioReportInput`
(name, description, method order, targets, labels, deadline, provenance, the
paper's reference values; the old ``meta`` mapping with those keys works too).

Outputs under ``out_dir``: ``figures/<name>.<fmt>`` for each non-PDF format,
``report.pdf`` (title page, every figure, the tables) when "pdf" is in
``formats``, and ``summary.md``. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from fedsim.errors import InputError
from fedsim.metrics import METRICS_COLUMNS, ROUNDS_COLUMNS
from fedsim.report.columns import require_columns, with_float_columns
from fedsim.report.inputs import ScenarioReportInput
from fedsim.report.methods import MethodStyle
from fedsim.report.pages import (
    DEFAULT_DPI,
    check_formats,
    render_figures,
    table_figure,
    title_page,
)
from fedsim.report.scenario import asynchronous as A
from fedsim.report.scenario import clients as C
from fedsim.report.scenario import curves as F
from fedsim.report.scenario import energy as E
from fedsim.report.scenario import informative as I
from fedsim.report.scenario.tables import BREAKDOWN_COLUMNS, metrics_tables, summary_markdown
from fedsim.report.style import RC
from fedsim.store import write_text
from fedsim.store.artifacts import FIGURES_DIR, SUMMARY
from fedsim.system.frames import PHASE_TIME_COLUMNS, TIMELINE_KEY_COLUMNS

# The timeline columns the figures read: the system stage's keys and phase
# times (not its byte and compute columns), with the method.
TIMELINE_COLUMNS: tuple[str, ...] = ("method", *TIMELINE_KEY_COLUMNS, *PHASE_TIME_COLUMNS)


def _targets(report: ScenarioReportInput, metrics: pd.DataFrame) -> list[float]:
    if report.targets:
        return [float(t) for t in report.targets]
    return sorted(float(t) for t in pd.unique(metrics["target_accuracy"].astype(float)))


def _gantt_selection(
    timeline: pd.DataFrame, style: MethodStyle, gantt_rounds: Sequence[int] | None
) -> tuple[str, list[int]]:
    method, default_rounds = C.default_gantt_selection(timeline, style)
    if gantt_rounds is None:
        return method, default_rounds
    available = timeline.loc[timeline["method"] == method, "round"]
    missing = sorted({int(r) for r in gantt_rounds} - set(available.astype(int).unique()))
    if missing:
        raise InputError(
            f"gantt_rounds: rounds {missing} are not in the timeline of method {method!r} "
            f"(rounds {int(available.min())}..{int(available.max())})"
        )
    return method, sorted({int(r) for r in gantt_rounds})


def write_report(
    out_dir: Path,
    rounds: pd.DataFrame,
    metrics: pd.DataFrame,
    timeline: pd.DataFrame | None,
    meta: ScenarioReportInput | Mapping[str, Any],
    *,
    formats: Sequence[str] = ("png", "pdf"),
    gantt_rounds: Sequence[int] | None = None,
    dpi: int = DEFAULT_DPI,
    log_x: bool | None = None,
    asynchronous: Sequence[A.AsyncSummary] = (),
) -> dict[str, Path]:
    """Write a scenario's report into ``out_dir`` and return what was written,
    keyed by path relative to ``out_dir`` ("summary.md", "report.pdf",
    "figures/accuracy_vs_round.png", ...).

    Figures: accuracy vs round, vs cumulative traffic (CCA), vs cumulative
    client computation (CTA) and vs simulated wall-clock (TTA); the mean
    client's per-round time by phase; a Gantt chart of the clients in a few
    rounds (``gantt_rounds``, default: round 1, the last round and the worst
    round of the method with the most dropped clients); the ECDF of client
    round times; the metrics table. The Gantt chart and the ECDF need a
    non-empty ``timeline``; the breakdown needs the ``mean_*_s`` columns.
    Figures that the frames fix by construction (an idealised system: TTA =
    CTA, constant phase times, identical clients) are left out, listed in
    summary.md, and an earlier run's images of them deleted
    (`fedsim.report.scenario.informative`).
    With energy (rounds.csv's ``cum_energy_j``, the timeline's
    ``E.TIMELINE_ENERGY_COLUMNS``): accuracy vs cumulative energy (ETA) and
    the per-client energy distribution.

    ``meta``: a `ScenarioReportInput` (or the old mapping with its fields).
    ``dpi`` applies to raster formats; ``log_x`` forces the accuracy curves'
    x axes to log (True) or linear (False); None chooses per figure.
    ``asynchronous``: one `fedsim.report.scenario.asynchronous.AsyncSummary`
    per FedBuff method: summary.md then says that its rounds are server steps
    and shows C, M and the staleness, and ``staleness_<method>`` figures show
    the staleness distributions (none: the synchronous report, unchanged).

    Raises ValueError for frames that break their column contracts or unknown
    formats, InputError for ``gantt_rounds`` not in the timeline.
    """
    out_dir = Path(out_dir)
    chosen = check_formats(formats)
    require_columns(rounds, ROUNDS_COLUMNS, "rounds")
    require_columns(metrics, METRICS_COLUMNS, "metrics")
    metrics = with_float_columns(metrics, METRICS_COLUMNS[1:])
    has_timeline = timeline is not None and not timeline.empty
    if has_timeline:
        require_columns(timeline, TIMELINE_COLUMNS, "timeline")

    report = ScenarioReportInput.coerce(meta)
    style = MethodStyle.build(report, [*rounds["method"].astype(str), *metrics["method"].astype(str)])
    targets = _targets(report, metrics)
    tables = metrics_tables(metrics, rounds, style, targets, report.reference)
    deadline_s = report.deadline_s

    builders: list[tuple[str, str, Callable[[], Figure]]] = []
    for x, caption in (
        ("round", "Test accuracy vs round"),
        ("traffic", "Test accuracy vs cumulative traffic (CCA)"),
        ("compute", "Test accuracy vs cumulative client computation (CTA)"),
        ("wallclock", "Test accuracy vs simulated wall-clock time (TTA)"),
    ):
        builders.append(
            (
                f"accuracy_vs_{x}",
                caption,
                lambda x=x: F.accuracy_curve(rounds, metrics, style, x, targets, log_x=log_x),
            )
        )
    if "cum_energy_j" in rounds.columns:
        builders.append(
            (
                "accuracy_vs_energy",
                "Test accuracy vs cumulative client energy (ETA)",
                lambda: F.accuracy_curve(rounds, metrics, style, "energy", targets, log_x=log_x),
            )
        )
    if all(c in rounds.columns for c in BREAKDOWN_COLUMNS):
        builders.append(
            (
                "round_time_breakdown",
                "Per-round time of the mean client by phase",
                lambda: F.round_time_breakdown(rounds, style),
            )
        )
    if has_timeline:
        assert timeline is not None
        method, round_nums = _gantt_selection(timeline, style, gantt_rounds)
        builders.append(
            (
                "client_gantt",
                f"Client timelines of {style.label(method)}",
                lambda: C.client_gantt(timeline, style, method, round_nums, deadline_s=deadline_s),
            )
        )
        builders.append(
            (
                "client_round_times",
                "Distribution of client round times",
                lambda: C.round_time_distribution(timeline, style),
            )
        )
        if all(c in timeline.columns for c in E.TIMELINE_ENERGY_COLUMNS):
            builders.append(
                (
                    "client_energy",
                    "Distribution of client energy",
                    lambda: E.client_energy_distribution(timeline, style),
                )
            )
    for summary in asynchronous:
        builders.append(
            (
                A.staleness_figure_name(summary.method),
                f"Staleness of the updates used by {style.label(summary.method)}",
                lambda summary=summary: A.staleness_figure(summary, style),
            )
        )
    if tables:
        builders.append(
            (
                "metrics_table",
                "Metrics table",
                lambda: table_figure(tables, style, title=report.name),
            )
        )

    # figures fixed by construction (an idealised system) are left out; an
    # explicit ``gantt_rounds`` keeps the Gantt chart
    dropped = I.left_out(rounds, timeline if has_timeline else None, BREAKDOWN_COLUMNS)
    if gantt_rounds is not None:
        dropped.pop("client_gantt", None)
    builders = [b for b in builders if b[0] not in dropped]

    with matplotlib.rc_context(RC):
        title = (
            title_page(
                report.name,
                report.description,
                methods=report.methods,
                targets=report.targets,
                deadline_s=report.deadline_s,
                provenance=report.provenance,
            )
            if "pdf" in chosen
            else None
        )
    written, figure_links = render_figures(
        out_dir, builders, title, chosen, dpi, report.name or "fedsim report", RC
    )
    for name in dropped:  # an earlier run's image of a figure now left out
        for fmt in chosen:
            (out_dir / FIGURES_DIR / f"{name}.{fmt}").unlink(missing_ok=True)
    markdown = summary_markdown(tables, report, figure_links, rounds, A.async_markdown(asynchronous, style))
    if dropped:
        markdown += "\nLeft out because they carry no information here:\n\n" + "".join(
            f"- {name}: {why}\n" for name, why in dropped.items())
    write_text(out_dir / SUMMARY, markdown)
    written[SUMMARY] = out_dir / SUMMARY
    return written
