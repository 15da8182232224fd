"""write_report: a scenario's figures, PDF and summary.md from its frames.

Inputs are the pipeline's frames (contracts in docs/architecture.md):
``rounds`` (method x round), ``metrics`` (method x target), ``timeline``
(method x round x client) and ``meta``:

* ``name``, ``description``: the scenario's (title page, summary.md heading);
* ``methods``: the method order; it fixes every method's colour;
* ``targets``: target accuracies (fractions), default those in ``metrics``;
* ``labels`` (optional): method -> display label;
* ``deadline_s`` (optional): the round deadline, seconds after a round's start;
* ``provenance`` (optional): str -> str lines for the title page and summary.md;
* ``reference`` (optional): the paper's values per method, shown beside
  fedsim's in summary.md and on the table page (layout: fedsim.report.tables).

Outputs under ``out_dir``: ``figures/<name>.<fmt>`` for each non-PDF format,
``report.pdf`` (title page, every figure, the tables) when "pdf" is in
``formats``, and ``summary.md``. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from fedsim.errors import InputError
from fedsim.metrics import METRICS_COLUMNS, ROUNDS_COLUMNS
from fedsim.report import figures as F
from fedsim.report.style import RC, MethodStyle, render_figures
from fedsim.report.tables import (
    BREAKDOWN_COLUMNS,
    as_float,
    metrics_tables,
    require_columns,
    summary_markdown,
)
from fedsim.store import write_text
from fedsim.system.sim import TIMELINE_COLUMNS as SYSTEM_TIMELINE_COLUMNS

# The timeline columns the figures read: the system stage's, with the method.
TIMELINE_COLUMNS: tuple[str, ...] = ("method", *SYSTEM_TIMELINE_COLUMNS[:11])
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


def _targets(meta: Mapping[str, Any], metrics: pd.DataFrame) -> list[float]:
    if meta.get("targets"):
        return [float(t) for t in meta["targets"]]
    return sorted(float(t) for t in pd.unique(metrics["target_accuracy"].astype(float)))


def _gantt_selection(
    timeline: pd.DataFrame, style: MethodStyle, gantt_rounds: Sequence[int] | None
) -> tuple[str, list[int]]:
    method, default_rounds = F.default_gantt_selection(timeline, style)
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
    meta: Mapping[str, Any],
    *,
    formats: Sequence[str] = ("png", "pdf"),
    gantt_rounds: Sequence[int] | None = None,
    dpi: int = DEFAULT_DPI,
    log_x: bool | None = None,
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

    ``dpi`` applies to raster formats; ``log_x`` forces the accuracy curves'
    x axes to log (True) or linear (False); None chooses per figure.

    Raises ValueError for frames that break their column contracts or unknown
    formats, InputError for ``gantt_rounds`` not in the timeline.
    """
    out_dir = Path(out_dir)
    chosen = check_formats(formats)
    require_columns(rounds, ROUNDS_COLUMNS, "rounds")
    require_columns(metrics, METRICS_COLUMNS, "metrics")
    metrics = as_float(metrics, METRICS_COLUMNS[1:])
    has_timeline = timeline is not None and not timeline.empty
    if has_timeline:
        require_columns(timeline, TIMELINE_COLUMNS, "timeline")

    style = MethodStyle.build(meta, [*rounds["method"].astype(str), *metrics["method"].astype(str)])
    targets = _targets(meta, metrics)
    tables = metrics_tables(metrics, rounds, style, targets, meta.get("reference"))
    deadline = meta.get("deadline_s")
    deadline_s = None if deadline is None else float(deadline)

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
                lambda: F.client_gantt(timeline, style, method, round_nums, deadline_s=deadline_s),
            )
        )
        builders.append(
            (
                "client_round_times",
                "Distribution of client round times",
                lambda: F.round_time_distribution(timeline, style),
            )
        )
    if tables:
        builders.append(
            (
                "metrics_table",
                "Metrics table",
                lambda: F.table_figure(tables, style, title=str(meta.get("name") or "")),
            )
        )

    with matplotlib.rc_context(RC):
        title = F.title_page(meta) if "pdf" in chosen else None
    written, figure_links = render_figures(
        out_dir, builders, title, chosen, dpi, str(meta.get("name") or "fedsim report"), RC
    )
    write_text(out_dir / "summary.md", summary_markdown(tables, meta, figure_links, rounds))
    written["summary.md"] = out_dir / "summary.md"
    return written
