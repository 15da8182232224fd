"""AR(1) client links read inside the compiled asynchronous loop (numba).

With LTE-like or ``lognormal_ar1`` links (`fedsim.system.dynamics.AR1Series`)
every flow start and every interval boundary of a running flow needs its
client link's capacity. The compiled loop (`fedsim.system.async_loop`) used to
return to Python for each (``SEG_UP``, ``CHANGES``) and call
`AR1Series.segment`, whose log factors come from a Python loop per interval;
that was about 40 % of the dynamic schedule's time. Here the log factors of
both directions live in a dense table ``logs`` (2, rows, columns): one row per
client launched so far (``row_of``), one column per AR(1) interval, the
recursion run over all rows a chunk of intervals at a time by
`fedsim.system.jitlinks.ar1_chunk` (the float operations of
`AR1Series.log_factors`, from the same stream ``seeding.rng(seed,
"bandwidth", direction, client)``). `segment` reads it in the loop with the
float operations of `AR1Series.segment` (``base * math.exp(x_j)``, ``j`` the
interval, the next change ``(j + 1) * interval``), so the schedule is the one
the Python series gives, bit for bit (tests/test_async_links_jit.py). The
Python side (`AR1Table`) adds a row when a new client launches and columns
when the loop returns ``GROW_LINKS`` (simulated time reached the table's end).

The model and its sources: `fedsim.system.dynamics` and
docs/network-model.md ("LTE-like variation").
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fedsim import seeding
from fedsim.system.dynamics import DIRECTIONS, AR1Series

__all__ = ["CHUNK", "AR1Table", "columns_for", "segment"]

#: AR(1) intervals added at a time (the values do not depend on it: each
#: row's innovations are consecutive draws of its stream).
CHUNK = 256


@njit(cache=True)
def columns_for(t_s: float, interval_s: float) -> int:  # pragma: no cover - compiled
    """Columns the table needs so that `segment` can answer at ``t_s`` (its
    interval, the next one where ``t_s`` rounds to just before a change, and
    one more of margin)."""
    return max(0, math.floor(t_s / interval_s)) + 3


@njit(cache=True)
def _interval(t_s: float, interval_s: float) -> int:  # pragma: no cover - compiled
    """`AR1Series.segment`'s interval index of ``t_s``."""
    j = max(0, math.floor(t_s / interval_s))
    if (j + 1) * interval_s <= t_s:  # floor rounded down across a boundary
        j += 1
    return j


@njit(cache=True)
def segment(log_row: np.ndarray, base_bps: float, interval_s: float,
            t_s: float) -> tuple[float, float]:  # pragma: no cover - compiled
    """(capacity in bits/s, next change in s) of a client link at ``t_s``:
    `AR1Series.segment` on its log factors ``log_row`` (columns up to
    `columns_for` ``(t_s)``), read again at the change where ``t_s`` rounds to
    just before it (as `fedsim.system.async_flows.PathFlows` does)."""
    j = _interval(t_s, interval_s)
    next_s = (j + 1) * interval_s
    if next_s <= t_s:
        j = _interval(next_s, interval_s)
        next_s = (j + 1) * interval_s
    return base_bps * math.exp(log_row[j]), next_s


class AR1Table:
    """The log factors of both directions' `AR1Series` as one growing table.

    Args:
        series: the (downlink, uplink) series.
        row_of: per client, its row (-1: none yet); an int64 array the
            compiled loop also reads (updated in place).

    Attributes:
        logs: the table, float (2, rows, columns) of storage, which doubles
            when it fills (a new array: pass ``logs`` to the loop after any
            `add_row` or `grow`); ``rows`` x ``cols`` of it are filled.
    """

    def __init__(self, series: tuple[AR1Series, AR1Series], row_of: np.ndarray) -> None:
        self.series = series
        self.row_of = row_of
        self.row_of[:] = -1
        self.logs = np.zeros((2, 16, CHUNK))
        self.rows = self.cols = 0
        self._rngs: tuple[list[np.random.Generator], list[np.random.Generator]] = ([], [])

    @staticmethod
    def supports(series: tuple[object, object]) -> bool:
        """True when both directions are AR(1) series (what the table holds)."""
        return all(isinstance(s, AR1Series) for s in series)

    @property
    def intervals_s(self) -> tuple[float, float]:
        return self.series[0].interval_s, self.series[1].interval_s

    def add_row(self, client: int) -> None:
        """A row for ``client`` (both directions), filled up to ``cols``."""
        row = self.rows
        self._reserve(row + 1, self.cols)
        self.row_of[client] = row
        for d, direction in enumerate(DIRECTIONS):
            self._rngs[d].append(seeding.rng(self.series[d].seed, "bandwidth", direction, int(client)))
        self.rows += 1
        for col in range(0, self.cols, CHUNK):
            self._fill(row, row + 1, col)

    def grow(self, count: int) -> None:
        """At least ``count`` columns for every row (whole chunks)."""
        while self.cols < count:
            self._reserve(self.rows, self.cols + CHUNK)
            self._fill(0, self.rows, self.cols)
            self.cols += CHUNK

    def _reserve(self, rows: int, cols: int) -> None:
        """Storage for ``rows`` x ``cols`` (doubling; the filled part copied)."""
        _, have_rows, have_cols = self.logs.shape
        if rows <= have_rows and cols <= have_cols:
            return
        bigger = np.zeros((2, max(rows, 2 * have_rows if rows > have_rows else have_rows),
                           max(cols, 2 * have_cols if cols > have_cols else have_cols)))
        bigger[:, :self.rows, :self.cols] = self.logs[:, :self.rows, :self.cols]
        self.logs = bigger

    def _fill(self, first: int, stop: int, col: int) -> None:
        """Rows ``first:stop``, columns ``col:col + CHUNK``: each row's next
        CHUNK innovations, the recursion compiled over all rows."""
        from fedsim.system.jitlinks import ar1_chunk

        for d, series in enumerate(self.series):
            eps = np.array([rng.standard_normal(CHUNK) for rng in self._rngs[d][first:stop]]).reshape(-1, CHUNK)
            step = math.sqrt(1.0 - series.rho * series.rho) * series.sigma
            ar1_chunk(self.logs[d, first:stop], col, eps, series.rho, step, series.sigma)
