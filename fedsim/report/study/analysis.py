"""The result of a parameter study, as numbers: where does each configuration win?

No matplotlib here (the figures are `fedsim.report.study.figures`, the
markdown `fedsim.report.study.summary`), so the analysis can be used and tested
on its own.

The study's frame has one row per grid cell x seed x method x target, with the
axis columns (numeric, SI units: bit/s for a link speed) and optional display
columns ``"<axis>_label"`` ("10 Mbps"); ``seed``, ``method``,
``remaining_rate``, ``target_accuracy``; and the metrics columns of a
scenario's metrics.csv (``nra``, ``cca_bytes``, ``cta_s``, ``tta_s``,
``final_accuracy``; NaN where a target was missed).

A *configuration* is a (method, remaining rate) pair. Replicate seeds of a
metric in a cell are summarised by their mean and a two-sided 95 % Student-t
interval over the seeds that reached the target (`summarize`). Per link speed
the *best* configuration is the one with the lowest mean among those every
seed of which reached the target (`Grid.best`); `ranking_flips` says where,
along the link axis, the best changes and which pairs swap order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedsim.report._units import format_bit_rate, format_rate
from fedsim.report.methods import MethodStyle

SWEEP_COLUMNS: tuple[str, ...] = ("seed", "method", "remaining_rate", "target_accuracy", "tta_s")
# metric column, panel title, kind of unit
SWEEP_METRICS: tuple[tuple[str, str, str], ...] = (
    ("nra", "NRA", "count"),
    ("cca_bytes", "CCA", "bytes"),
    ("cta_s", "CTA", "seconds"),
    ("tta_s", "TTA", "seconds"),
    ("final_accuracy", "Final accuracy", "accuracy"),
)
# with energy (``system.energy``): ETA@x, joules of all clients to the target
ENERGY_METRICS: tuple[tuple[str, str, str], ...] = (("eta_j", "ETA", "energy"),)
NOT_REACHED = "not reached"

# Student-t 97.5 % quantiles for 1..30 degrees of freedom (two-sided 95 %).
_T975: tuple[float, ...] = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom
    (table to 30, then 2.021 / 2.000 / 1.980 / 1.960 at 40 / 60 / 120 / inf)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    if dof <= len(_T975):
        return _T975[dof - 1]
    for limit, value in ((40, 2.021), (60, 2.000), (120, 1.980)):
        if dof <= limit:
            return value
    return 1.960


@dataclass(frozen=True)
class Summary:
    """Replicate seeds of one metric in one cell: mean, 95 % interval (over the
    seeds that reached the target), how many seeds there were and reached."""

    mean: float
    low: float
    high: float
    n_seeds: int
    n_reached: int

    @property
    def reached(self) -> bool:
        """Every seed reached the target."""
        return self.n_seeds > 0 and self.n_reached == self.n_seeds


def summarize(values: Sequence[float] | np.ndarray) -> Summary:
    """Mean and Student-t 95 % interval of the finite ``values`` (NaN = target
    not reached). One finite value: the interval is that value; none: NaN."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return Summary(math.nan, math.nan, math.nan, int(array.size), 0)
    mean = float(finite.mean())
    if finite.size == 1:
        return Summary(mean, mean, mean, int(array.size), 1)
    half = t975(finite.size - 1) * float(finite.std(ddof=1)) / math.sqrt(finite.size)
    return Summary(mean, mean - half, mean + half, int(array.size), int(finite.size))


def axis_value_labels(sweep: pd.DataFrame, axis: str, bandwidth: bool = False) -> dict[float, str]:
    """Display label of each value of ``axis``: the ``<axis>_label`` column
    when present, else bit/s units for a ``bandwidth`` axis (a link speed),
    else the number."""
    values = sorted(pd.unique(sweep[axis].astype(float)))
    label_column = f"{axis}_label"
    if label_column in sweep.columns:
        firsts = sweep.groupby(sweep[axis].astype(float))[label_column].first()
        return {float(v): str(firsts.loc[v]) for v in values}
    if bandwidth:
        return {float(v): format_bit_rate(v) for v in values}
    return {float(v): f"{v:g}" for v in values}


@dataclass(frozen=True)
class Configuration:
    """One (method, remaining rate) row of the heatmap."""

    method: str
    remaining_rate: float
    label: str


def configurations(sweep: pd.DataFrame, style: MethodStyle) -> list[Configuration]:
    """The sweep's (method, remaining rate) pairs, densest first, then in
    method order. The remaining rate joins the label when a method has several."""
    pairs = sweep[["method", "remaining_rate"]].drop_duplicates()
    rates_per_method = pairs.groupby("method")["remaining_rate"].nunique()
    rank = {m: i for i, m in enumerate(style.order)}
    configs = []
    for method, rate in pairs.itertuples(index=False):
        label = style.label(str(method))
        if rates_per_method.loc[method] > 1:
            label = f"{label}, P_R {format_rate(rate)}"
        configs.append(Configuration(str(method), float(rate), label))
    return sorted(configs, key=lambda c: (-c.remaining_rate, rank.get(c.method, len(rank))))


def report_targets(targets: Sequence[float], sweep: pd.DataFrame) -> list[float]:
    """The target accuracies to report: ``targets`` when given, else every
    target in the sweep, ascending."""
    if targets:
        return [float(t) for t in targets]
    return sorted(float(t) for t in pd.unique(sweep["target_accuracy"].astype(float)))


def select_rows(frame: pd.DataFrame, **equal: Any) -> pd.DataFrame:
    """The rows of ``frame`` whose columns equal the given values (numbers
    compared to 1e-12, so 0.1 found after a float round trip)."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in equal.items():
        values = frame[column].to_numpy()
        if isinstance(value, float) or np.issubdtype(values.dtype, np.number):
            mask &= np.isclose(values.astype(float), float(value), rtol=1e-12, atol=1e-12)
        else:
            mask &= values == value
    return frame.loc[mask]


def facets(sweep: pd.DataFrame, others: Sequence[str]) -> list[dict[str, float]]:
    """Every combination of the values of the ``others`` axes ([{}] if none)."""
    if not others:
        return [{}]
    combos = sweep[list(others)].drop_duplicates().sort_values(list(others))
    return [
        {axis: float(value) for axis, value in zip(others, row, strict=True)}
        for row in combos.itertuples(index=False)
    ]


def facet_text(facet: Mapping[str, float], labels: Mapping[str, Mapping[float, str]]) -> str:
    """``axis = label, ...`` of a facet, with each value's display label."""
    return ", ".join(f"{axis} = {labels[axis][value]}" for axis, value in facet.items())


@dataclass(frozen=True)
class Grid:
    """Mean TTA (or another metric) of every configuration x link value."""

    configs: tuple[Configuration, ...]
    link_values: tuple[float, ...]
    cells: tuple[tuple[Summary, ...], ...]  # [config][link value]

    def best(self) -> list[int | None]:
        """Per link value, the index of the configuration with the lowest mean
        among those every seed of which reached the target (None if none did)."""
        best: list[int | None] = []
        for j in range(len(self.link_values)):
            means = [
                self.cells[i][j].mean if self.cells[i][j].reached else math.inf
                for i in range(len(self.configs))
            ]
            index = int(np.argmin(means)) if means else 0
            best.append(index if means and math.isfinite(means[index]) else None)
        return best

    def ranking(self, j: int) -> list[int]:
        """Configurations fully reached at link value ``j``, best first."""
        reached = [i for i in range(len(self.configs)) if self.cells[i][j].reached]
        return sorted(reached, key=lambda i: self.cells[i][j].mean)


def metric_grid(
    sweep: pd.DataFrame,
    configs: Sequence[Configuration],
    link: str,
    target: float,
    metric: str = "tta_s",
    facet: Mapping[str, float] | None = None,
) -> Grid:
    """Summaries of ``metric`` at ``target`` for every configuration (rows) and
    value of the ``link`` axis (columns), within one ``facet`` of the other axes."""
    rows = select_rows(sweep, target_accuracy=float(target), **dict(facet or {}))
    link_values = tuple(sorted(float(v) for v in pd.unique(sweep[link].astype(float))))
    cells = []
    for config in configs:
        mine = select_rows(rows, method=config.method, remaining_rate=config.remaining_rate)
        by_link = {
            float(v): group[metric].to_numpy(dtype=float)
            for v, group in mine.groupby(mine[link].astype(float))
        }
        cells.append(tuple(summarize(by_link.get(v, np.array([]))) for v in link_values))
    return Grid(tuple(configs), link_values, tuple(cells))


def ranking_flips(grid: Grid, link_labels: Mapping[float, str], max_pairs: int = 12) -> list[str]:
    """Lines saying where, along the link axis, the best configuration changes
    and which pairs of configurations swap order (both reached by every seed
    at both neighbouring link values). An exact tie is no order: a pair with
    equal means at either value does not swap, and the best "changes" only
    when the new best is strictly ahead of the old one there (else the line
    says that they tie)."""
    lines: list[str] = []
    best = grid.best()
    for j in range(1, len(grid.link_values)):
        left, right = link_labels[grid.link_values[j - 1]], link_labels[grid.link_values[j]]
        before, after = best[j - 1], best[j]

        def mean(i: int, col: int) -> float:
            return grid.cells[i][col].mean if grid.cells[i][col].reached else math.inf

        if before is not None and after is not None and before != after:
            old, new = grid.configs[before].label, grid.configs[after].label
            if mean(before, j) == mean(after, j):
                lines.append(f"- at {right}: {old} = {new} (tie for best)")
            elif mean(before, j - 1) == mean(after, j - 1):
                lines.append(f"- at {left}: {old} = {new} (tie for best); at {right}: {new} ahead")
            else:
                lines.append(f"- best changes between {left} and {right}: {old} → {new}")
        rank_before = {i: r for r, i in enumerate(grid.ranking(j - 1))}
        rank_after = {i: r for r, i in enumerate(grid.ranking(j))}
        common = sorted(set(rank_before) & set(rank_after))
        swaps = [
            (a, b)
            for a, b in itertools.combinations(common, 2)
            if (rank_before[a] < rank_before[b]) != (rank_after[a] < rank_after[b])
            and mean(a, j - 1) != mean(b, j - 1)
            and mean(a, j) != mean(b, j)
        ]
        if before is not None and after is not None:
            # the change of the best is said above
            swaps = [pair for pair in swaps if set(pair) != {before, after}]
        for a, b in swaps[:max_pairs]:
            first, second = (a, b) if rank_before[a] < rank_before[b] else (b, a)
            lines.append(
                f"- between {left} and {right}: {grid.configs[second].label} overtakes "
                f"{grid.configs[first].label}"
            )
        if len(swaps) > max_pairs:
            lines.append(f"- between {left} and {right}: {len(swaps) - max_pairs} more swaps")
    return lines




__all__ = [
    "ENERGY_METRICS",
    "NOT_REACHED",
    "SWEEP_COLUMNS",
    "SWEEP_METRICS",
    "Configuration",
    "Grid",
    "Summary",
    "axis_value_labels",
    "configurations",
    "facet_text",
    "facets",
    "metric_grid",
    "ranking_flips",
    "report_targets",
    "select_rows",
    "summarize",
    "t975",
]
