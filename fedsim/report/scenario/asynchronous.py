"""The asynchronous (FedBuff) parts of a scenario report.

For a method with an ``asynchronous`` section (`fedsim.system.async_spec`;
FedBuff, Nguyen et al., "Federated Learning with Buffered Asynchronous
Aggregation", AISTATS 2022) a "round" of every table and curve is a *server
step*: the server aggregated a buffer of M client updates. summary.md says so
and shows, per such method, its concurrency C, buffer size M, staleness
weighting, server learning rate and the staleness of the updates its steps used
(mean and max); one figure per method shows the staleness distribution.

Inputs are `AsyncSummary` records, built once from the system stage's
schedule (`AsyncSummary.from_updates`, the schedule's ``updates`` frame:
``step`` >= 1 marks a used update, ``staleness`` its server versions behind).
A scenario without asynchronous methods passes none, and its report is
byte-identical to one written before this module existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedsim.report.markdown import markdown_table
from fedsim.report.methods import MethodStyle
from fedsim.report.style import SINGLE_WIDTH_IN, figure
from fedsim.system.async_spec import AsyncConfig

__all__ = ["AsyncSummary", "async_markdown", "staleness_figure", "staleness_figure_name"]

#: What summary.md says of an asynchronous method's rounds.
ROUND_NOTE = (
    "For these methods a **round is a server step**: the server aggregated a buffer of M client "
    "updates (FedBuff, Nguyen et al. 2022), not one synchronous round of every selected client. "
    "NRA@x counts server steps; CCA@x, CTA@x, TTA@x and ETA@x sum over steps 1..NRA@x (traffic, "
    "energy: every update that ended by then, used or not; computation: the mean used update's per "
    "step). Staleness of an update: the server steps taken between its download and the step that "
    "used it."
)


@dataclass(frozen=True)
class AsyncSummary:
    """One asynchronous method's settings and the staleness of its used updates.

    Attributes:
        method: the method's label.
        concurrency: clients training at once (C).
        buffer_size: updates per server step (M).
        staleness: the weighting, ``fedbuff`` (1/sqrt(1 + s)) or ``constant``.
        server_lr: the server learning rate.
        max_staleness: the discard limit (None: none).
        steps: server steps reported (the rounds of the trace).
        counts: ``counts[s]`` = used updates of staleness s (server steps).
    """

    method: str
    concurrency: int
    buffer_size: int
    staleness: str
    server_lr: float
    max_staleness: int | None
    steps: int
    counts: tuple[int, ...]

    @classmethod
    def from_updates(cls, method: str, config: AsyncConfig, updates: pd.DataFrame, steps: int) -> AsyncSummary:
        """From an `fedsim.system.asynchronous.AsyncSchedule`'s ``updates``
        frame and its ``config`` (an `AsyncConfig`), over server steps
        1..``steps`` (the steps the training trace holds)."""
        step = updates["step"].to_numpy()
        used = (step >= 1) & (step <= steps)
        stale = updates["staleness"].to_numpy()[used].astype(np.int64)
        counts = np.bincount(stale) if stale.size else np.zeros(0, dtype=np.int64)
        return cls(method, config.concurrency, config.buffer_size, config.staleness, config.server_lr,
                   config.max_staleness, int(steps), tuple(int(c) for c in counts))

    @property
    def used(self) -> int:
        """Updates aggregated by the reported steps."""
        return int(sum(self.counts))

    @property
    def mean_staleness(self) -> float:
        """Mean staleness of the used updates (server steps; NaN if none)."""
        if not self.used:
            return float("nan")
        return float(np.dot(np.arange(len(self.counts)), self.counts) / self.used)

    @property
    def max_staleness_seen(self) -> int | None:
        """Largest staleness of a used update (None if none)."""
        return len(self.counts) - 1 if self.used else None


def async_markdown(summaries: Sequence[AsyncSummary], style: MethodStyle | None = None) -> list[str]:
    """summary.md's section for ``summaries`` (no lines when there are none)."""
    if not summaries:
        return []
    headers = ["Method", "C (concurrency)", "M (buffer)", "Weighting", "Server lr", "Discard above",
               "Server steps", "Updates used", "Staleness mean", "Staleness max"]
    rows = []
    for s in summaries:
        label = style.label(s.method) if style is not None else s.method
        weighting = "1/sqrt(1+s)" if s.staleness == "fedbuff" else "constant"
        rows.append([label, str(s.concurrency), str(s.buffer_size), weighting, f"{s.server_lr:g}",
                     "none" if s.max_staleness is None else str(s.max_staleness), str(s.steps), str(s.used),
                     "n/a" if not s.used else f"{s.mean_staleness:.2f}",
                     "n/a" if s.max_staleness_seen is None else str(s.max_staleness_seen)])
    return ["## Asynchronous methods (FedBuff)", "", ROUND_NOTE, "", markdown_table(headers, rows), ""]


def staleness_figure_name(method: str) -> str:
    """The figure file's stem for ``method`` (``staleness_<label>``, the label
    made file-safe)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in method)
    return f"staleness_{safe}"


def staleness_figure(summary: AsyncSummary, style: MethodStyle) -> Figure:
    """A bar chart of the used updates' staleness (server steps) of one
    method, with its mean marked; the x axis from 0 to the largest staleness."""
    fig = figure(SINGLE_WIDTH_IN, 3.0)
    ax = fig.subplots()
    counts = np.asarray(summary.counts, dtype=float)
    color = style.colors.get(summary.method, "#4c72b0")
    if counts.size:
        ax.bar(np.arange(counts.size), counts / counts.sum(), width=0.85, color=color)
        ax.axvline(summary.mean_staleness, color="#555555", linestyle="--", linewidth=1.0,
                   label=f"mean {summary.mean_staleness:.2f}")
        ax.legend(loc="upper right", frameon=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.6, max(counts.size, 1) - 0.4)
    ax.set_xlabel("staleness of a used update (server steps)")
    ax.set_ylabel("fraction of used updates")
    ax.set_title(f"{style.label(summary.method)}: C = {summary.concurrency}, M = {summary.buffer_size}, "
                 f"{summary.used} updates in {summary.steps} steps")
    return fig
