"""Which figures of a study report carry information, and why the others are
left out.

A study report draws, per target, a heatmap of TTA over link speed x
configuration and, per axis, each metric along that axis
(`fedsim.report.study.figures`). In many studies some of those are empty or
flat by construction, and a figure that cannot vary only looks like a
finding:

* a heatmap whose every cell is "not reached" (no configuration reached the
  target in any seed) is blank hatching;
* a metric that does not depend on the axis is a set of horizontal lines
  along it. When every client takes part in every round, the training trace
  does not depend on the network, so NRA, CCA, CTA and the final accuracy are
  the same at every link speed; only TTA (and ETA) move. A panel of such a
  metric is dropped from the along-axis figure, and a figure left with no
  panel is not drawn.

Used by `fedsim.report.study.writer.write_sweep_report`, which lists what it
left out, with the reason, in summary.md and deletes stale image files of
those figures from an earlier run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fedsim.report.scenario.informative import REL_TOL, spread
from fedsim.report.study.analysis import Grid, select_rows


def grid_has_data(grid: Grid) -> bool:
    """True when some cell of ``grid`` was reached by at least one seed (a
    heatmap of it shows a number, not only "not reached")."""
    return any(cell.n_reached > 0 for row in grid.cells for cell in row)


def _differ(values: np.ndarray) -> bool:
    """True when the finite ``values`` are not all equal within `REL_TOL`."""
    return spread(values) > REL_TOL


def varies_along(
    rows: pd.DataFrame, axis: str, metric: str, series_keys: Sequence[str]
) -> bool:
    """Does ``metric`` carry information along ``axis``?

    ``rows``: the sweep's rows at one target. Each series (the rows sharing
    the values of ``series_keys``: method, remaining rate, the other axes) is
    summarised per value of ``axis`` by the mean of its finite values and the
    share of seeds that reached the target. The metric varies when, in some
    series, those means differ (beyond `REL_TOL`) or the share reached
    differs between axis values. With fewer than two axis values there is
    nothing to vary along: then it is enough that some value is finite.
    A metric with no finite value anywhere never carries information.
    """
    if metric not in rows.columns or rows.empty:
        return False
    values = rows[metric].to_numpy(dtype=float)
    if not np.isfinite(values).any():
        return False
    x = rows[axis].astype(float)
    if x.nunique() < 2:
        return True
    keys = [k for k in series_keys if k in rows.columns and k != axis]
    groups = rows.groupby(keys, dropna=False, sort=False) if keys else [((), rows)]
    for _, series in groups:
        per_x = series.groupby(series[axis].astype(float))[metric]
        means = per_x.mean().to_numpy(dtype=float)  # NaN-skipping: the reached seeds' mean
        reached = per_x.apply(lambda v: float(np.isfinite(v.to_numpy(dtype=float)).mean()))
        if _differ(reached.to_numpy(dtype=float)):
            return True
        if _differ(means[np.isfinite(means)]):
            return True
    return False


def informative_metrics(
    sweep: pd.DataFrame,
    axis: str,
    target: float,
    metrics: Sequence[tuple[str, str, str]],
    other_axes: Sequence[str],
    rate_axis: bool = False,
) -> list[tuple[str, str, str]]:
    """The entries of ``metrics`` ((column, title, unit kind), as
    `fedsim.report.study.analysis.SWEEP_METRICS`) that vary along ``axis`` at
    ``target`` (`varies_along`). A series is a method (and its remaining
    rate, unless ``axis`` sets the rate) at fixed values of ``other_axes``:
    the lines `fedsim.report.study.figures.metrics_along_axis` draws."""
    rows = select_rows(sweep, target_accuracy=float(target))
    keys = ["method"] if rate_axis else ["method", "remaining_rate"]
    keys += [a for a in other_axes if a != axis]
    return [m for m in metrics if varies_along(rows, axis, m[0], keys)]


__all__ = ["grid_has_data", "informative_metrics", "varies_along"]
