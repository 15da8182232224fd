"""Client links whose capacity changes over simulated time (piecewise constant).

``system.clients.dynamics`` gives each client's downlink and uplink as a time
series, replayed in simulated seconds from the start of round 1 (t = 0):

* ``model: trace``: a CSV ``client_id, t_s, downlink, uplink`` (`read_bandwidth_trace`),
  the absolute capacity from each row's ``t_s`` until the client's next row;
  the last row holds to the end of the run.
* ``model: lognormal_ar1``: the client's drawn link (``clients.downlink`` /
  ``uplink``) times a factor ``exp(X_j)`` on interval j = floor(t / interval),
  where X is a stationary Gaussian AR(1) in log space:
  ``X_0 ~ N(0, sigma^2)``, ``X_{j+1} = rho X_j + sqrt(1 - rho^2) sigma eps_{j+1}``,
  so ``corr(X_j, X_{j+h}) = rho^h`` and the factor's median is 1 (its mean
  ``exp(sigma^2 / 2)``). Each client and direction has its own stream
  ``seeding.rng(seed, "bandwidth", direction, client_id)``, drawn in chunks as
  simulated time advances (the chunking does not change the values).
* ``model: lte``: ``lognormal_ar1`` with the LTE preset `LTE_PRESET` (its
  sources and their limits: docs/network-model.md, "LTE-like variation").

`LinkSeries.segment(client, t_s)` answers what the SimPy engine needs: the
capacity at ``t_s`` and the next time it changes; `LinkSeries.breakpoints`
lists a whole batch's links over a round's window at once, for the compiled
engine (`fedsim.system.fastnet`).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from fedsim import seeding
from fedsim.errors import InputError
from fedsim.system.csvrows import data_rows
from fedsim.units import parse_quantity

__all__ = ["LTE_PRESET", "AR1Series", "LinkBreakpoints", "LinkSeries", "TraceSeries", "generate_lte_trace",
           "read_bandwidth_trace"]

#: The LTE preset: log-space standard deviation, lag-1 correlation per interval,
#: interval (s). See docs/network-model.md for where the values come from.
LTE_PRESET = {"sigma": 0.5, "correlation": 0.8, "interval": 1.0}

_CHUNK = 256  # AR(1) intervals drawn at a time per client and direction
_UNIT_SUFFIX = {"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}
DIRECTIONS = ("downlink", "uplink")


class LinkBreakpoints(NamedTuple):
    """A batch of flows' client links over one window, as a CSR list per flow
    (what the compiled event loop reads, `fedsim.system.fastnet`).

    Flow i's entries are ``offsets[i]:offsets[i + 1]``: ``times_s`` the
    offsets from the round's start (s; the first is the flow's start, the
    others the changes after it up to the window's end, strictly
    increasing), ``cap_bps`` the capacity (bits/s) from each on; ``tail_s[i]``
    is the first change after the last entry (inf: none).
    """

    offsets: np.ndarray
    times_s: np.ndarray
    cap_bps: np.ndarray
    tail_s: np.ndarray


class LinkSeries(Protocol):
    """One direction's capacity over time for every client."""

    def segment(self, client: int, t_s: float) -> tuple[float, float]:
        """(capacity in bits/s at ``t_s``, the next time > t_s it changes; inf: never)."""
        ...

    def breakpoints(self, clients: np.ndarray, t0_s: float, start_s: np.ndarray,
                    horizon_s: float) -> LinkBreakpoints:
        """The links of flows of ``clients`` starting at offsets ``start_s``
        after ``t0_s`` (absolute s), up to offset ``horizon_s``: the capacity
        `segment` gives at each start and at each change (where ``t0_s +
        offset`` rounds to just before a change, the change's own segment)."""
        ...


class AR1Series(LinkSeries):
    """``base_bps[k] * exp(X_k[floor(t / interval_s)])`` (module docstring).

    Args:
        base_bps: each client's median link (bits/s; inf stays inf).
        sigma: standard deviation of X (log space, >= 0).
        correlation: rho in [0, 1), the correlation of consecutive intervals.
        interval_s: seconds per interval (> 0).
        seed, direction: the stream ``rng(seed, "bandwidth", direction, k)``.
    """

    def __init__(self, base_bps: np.ndarray, sigma: float, correlation: float, interval_s: float,
                 seed: int, direction: str) -> None:
        self.base_bps = np.asarray(base_bps, dtype=float)
        self.sigma = float(sigma)
        self.rho = float(correlation)
        self.interval_s = float(interval_s)
        self.seed = seed
        self.direction = direction
        self._log: dict[int, np.ndarray] = {}
        self._rng: dict[int, np.random.Generator] = {}
        self._row_of: np.ndarray | None = None  # the dense table of `breakpoints` (rows: clients)
        self._table = np.zeros((0, 0))  # storage: rows x columns used are _rows x _cols
        self._factor = np.zeros((0, 0))  # exp(_table), the same shape; NaN until a listing needs it
        self._rows = self._cols = 0  # rows used; intervals drawn (0 .. _cols - 1)
        self._base = 0  # the interval in the table's column 0
        self._row_client: list[int] = []
        self._table_rng: list[np.random.Generator] = []

    def log_factors(self, client: int, count: int) -> np.ndarray:
        """X_0 .. X_{count-1} of ``client`` (drawn on demand, chunk by chunk)."""
        have = self._log.get(client)
        if have is None:
            self._rng[client] = seeding.rng(self.seed, "bandwidth", self.direction, client)
            have = np.zeros(0)
        while have.size < count:
            eps = self._rng[client].standard_normal(_CHUNK)
            chunk = np.empty(_CHUNK)
            x = eps[0] * self.sigma if have.size == 0 else have[-1]
            step = math.sqrt(1.0 - self.rho * self.rho) * self.sigma
            for j in range(_CHUNK):
                if j or have.size:
                    x = self.rho * x + step * eps[j]
                chunk[j] = x
            have = np.concatenate((have, chunk))
        self._log[client] = have
        return have[:count]

    def segment(self, client: int, t_s: float) -> tuple[float, float]:
        j = max(0, math.floor(t_s / self.interval_s))
        if (j + 1) * self.interval_s <= t_s:  # floor rounded down across a boundary
            j += 1
        have = self._log.get(client)
        log = have[j] if have is not None and j < have.size else self.log_factors(client, j + 1)[j]
        factor = math.exp(log)
        return float(self.base_bps[client] * factor), (j + 1) * self.interval_s

    def breakpoints(self, clients: np.ndarray, t0_s: float, start_s: np.ndarray,
                    horizon_s: float) -> LinkBreakpoints:
        """`LinkSeries.breakpoints` vectorised over the flows: every client
        changes on the common grid ``j * interval_s``, so flow i lists its
        start's interval j_i and the grid points after it up to the window;
        the log factors come from a dense table (one row per client asked for
        so far, whole chunks of intervals, the AR(1) recursion run over all
        rows at once: the same values as `log_factors`), exponentiated once
        per interval, by the listing, the first time it lists the interval
        (most intervals of a client's downlink fall in rounds' compute and
        upload phases and are never listed), into a second table."""
        from fedsim.system.jitlinks import ar1_breakpoints  # numba: only where the fast engine runs

        clients = np.asarray(clients, dtype=np.int64)
        start = np.asarray(start_s, dtype=float)
        step = self.interval_s
        last = math.floor((t0_s + horizon_s) / step)  # the last grid point in the window
        last += (last + 1) * step - t0_s <= horizon_s
        last -= last * step - t0_s > horizon_s
        latest = float(start.max(initial=0.0))  # a start's interval is at most this one's, plus one
        earliest = float(start.min(initial=0.0))  # ... and at least this one's, less one
        self._dense_logs(clients, max(math.floor((t0_s + earliest) / step) - 1, 0),
                         max(last, math.floor((t0_s + latest) / step) + 2) + 1)
        # t0_s as a float: SimPy's clock starts at the int 0, and an int would compile a second specialisation
        return LinkBreakpoints(*ar1_breakpoints(self._row_of[clients], self.base_bps[clients], start, float(t0_s),
                                                step, int(last), self._factor, self._base, self._table))

    def _dense_logs(self, clients: np.ndarray, low: int, count: int) -> None:
        """Make the dense table hold rows for ``clients`` and intervals
        ``low`` .. ``count - 1`` (``_row_of`` maps a client to its row).

        The table is a window over the intervals: its column c is interval
        ``_base + c``, intervals before the lowest one asked for are dropped
        (shifted out) when the storage fills, and the storage doubles only
        when the window itself outgrows it, so a run of rounds (their starts
        never earlier) keeps a bounded table. Asked for an interval already
        dropped, the table is drawn again from interval 0 (the streams are
        pure functions of seed, direction and client: the same values)."""
        if self._row_of is None:
            self._row_of = np.full(self.base_bps.size, -1, dtype=np.int64)
        if low < self._base:
            self._restart()
        missing = self._row_of[clients] < 0
        new = np.unique(clients[missing]) if missing.any() else missing[:0]  # most rounds: no new client
        if new.size:
            first = self._rows
            self._reserve(first + new.size, self._cols - self._base)
            self._row_of[new] = np.arange(first, first + new.size)
            self._row_client.extend(new.tolist())
            self._table_rng.extend(seeding.rng(self.seed, "bandwidth", self.direction, k) for k in new.tolist())
            self._rows += new.size
            self._catch_up(first)
        while self._cols < count:
            self._make_room(low)
            self._fill(0, self._rows, self._cols)
            self._cols += _CHUNK

    def _restart(self) -> None:
        """Forget every drawn interval; the rows' streams start again at interval 0."""
        self._table_rng = [seeding.rng(self.seed, "bandwidth", self.direction, k) for k in self._row_client]
        self._base = self._cols = 0

    def _make_room(self, low: int) -> None:
        """Room for one more chunk of columns: drop the intervals before
        ``low`` (keeping the last drawn one, which the recursion continues
        from), then double the storage if the window still does not fit."""
        if self._cols - self._base + _CHUNK > self._table.shape[1]:
            keep = min(low, self._cols - 1) if self._cols else 0
            if keep > self._base:
                width = self._cols - keep
                for table in (self._table, self._factor):
                    table[: self._rows, :width] = table[: self._rows, keep - self._base: self._cols - self._base]
                self._base = keep
        self._reserve(self._rows, self._cols - self._base + _CHUNK)

    def _reserve(self, rows: int, cols: int) -> None:
        """Grow the table's storage (doubling) to at least ``rows`` x ``cols``."""
        have_rows, have_cols = self._table.shape
        if rows <= have_rows and cols <= have_cols:
            return
        grown = [have if want <= have else max(want, 2 * have) for want, have in ((rows, have_rows), (cols, have_cols))]
        width = self._cols - self._base
        for name in ("_table", "_factor"):
            bigger = np.empty(grown)
            bigger[: self._rows, :width] = getattr(self, name)[: self._rows, :width]
            setattr(self, name, bigger)

    def _draw(self, first: int, stop: int) -> np.ndarray:
        """The next chunk of innovations of rows ``first:stop`` (one row each)."""
        eps = np.empty((stop - first, _CHUNK))
        for row, rng in zip(eps, self._table_rng[first:stop], strict=True):  # drawn in place: no stacking copy
            rng.standard_normal(out=row)
        return eps

    def _fill(self, first: int, stop: int, col: int) -> None:
        """Rows ``first:stop`` of the chunk of intervals from interval
        ``col`` (`log_factors`'s recursion, compiled, over all rows at once;
        the window holds interval ``col - 1`` unless ``col`` is 0) and their
        factors exp(X)."""
        # numba: only where the fast engine runs
        from fedsim.system.jitlinks import ar1_chunk

        at = col - self._base  # > 0 unless col is 0: ar1_chunk reads the interval before from the table
        step = math.sqrt(1.0 - self.rho * self.rho) * self.sigma
        ar1_chunk(self._table[first:stop], at, self._draw(first, stop), self.rho, step, self.sigma)
        self._factor[first:stop, at:at + _CHUNK] = np.nan  # exp(X) when first listed (`breakpoints`)

    def _catch_up(self, first: int) -> None:
        """Rows ``first:`` (new clients) drawn from interval 0 up to the
        others' (``_cols``), the window's part kept: the recursion runs chunk
        by chunk in a scratch table whose column 0 carries the chunk before's
        last value, so every value is the one `_fill` would have made."""
        # numba: only where the fast engine runs
        from fedsim.system.jitlinks import ar1_chunk

        stop = self._rows
        step = math.sqrt(1.0 - self.rho * self.rho) * self.sigma
        scratch = np.empty((stop - first, _CHUNK + 1))
        chunk = scratch[:, :_CHUNK]  # interval 0 starts the recursion at column 0; the others at 1
        for col in range(0, self._cols, _CHUNK):
            if col:
                scratch[:, 0] = chunk[:, -1]  # the chunk before's last value
                chunk = scratch[:, 1:]
            ar1_chunk(scratch, 1 if col else 0, self._draw(first, stop), self.rho, step, self.sigma)
            lo = max(col, self._base)  # the chunk's intervals inside the window
            if lo < col + _CHUNK:
                self._table[first:stop, lo - self._base: col + _CHUNK - self._base] = chunk[:, lo - col:]
        if self._cols:
            self._factor[first:stop, : self._cols - self._base] = np.nan  # exp(X) when first listed


class TraceSeries(LinkSeries):
    """Per-client change times (s, first 0) and capacities (bits/s) read from a trace."""

    def __init__(self, times_s: list[np.ndarray], bps: list[np.ndarray]) -> None:
        self.times_s = times_s
        self.bps = bps

    def segment(self, client: int, t_s: float) -> tuple[float, float]:
        times = self.times_s[client]
        k = int(np.searchsorted(times, t_s, side="right")) - 1
        nxt = float(times[k + 1]) if k + 1 < times.size else math.inf
        return float(self.bps[client][max(k, 0)]), nxt

    def breakpoints(self, clients: np.ndarray, t0_s: float, start_s: np.ndarray,
                    horizon_s: float) -> LinkBreakpoints:
        """`LinkSeries.breakpoints`: a loop over the flows (each client has
        its own times), two binary searches per flow."""
        offsets, times, caps, tails = [0], [], [], []
        for client, first in zip(np.asarray(clients).tolist(), np.asarray(start_s, dtype=float).tolist(),
                                 strict=True):
            at, bps = self.times_s[client], self.bps[client]
            k = max(int(np.searchsorted(at, t0_s + first, side="right")) - 1, 0)
            if k + 1 < at.size and at[k + 1] - t0_s <= first:  # rounded to just before a change
                k += 1
            stop = int(np.searchsorted(at, t0_s + horizon_s, side="right"))  # changes in the window ...
            while stop < at.size and at[stop] - t0_s <= horizon_s:  # ... as offsets, after rounding
                stop += 1
            while stop > k + 1 and at[stop - 1] - t0_s > horizon_s:
                stop -= 1
            changes = np.arange(k + 1, max(stop, k + 1))
            times.extend([first, *(at[changes] - t0_s).tolist()])
            caps.extend(bps[[k, *changes.tolist()]].tolist())
            offsets.append(len(times))
            end = max(stop, k + 1)
            tails.append(float(at[end]) - t0_s if end < at.size else math.inf)
        return LinkBreakpoints(np.array(offsets, dtype=np.int64), np.array(times, dtype=float),
                               np.array(caps, dtype=float), np.array(tails, dtype=float))


def _column_scale(name: str, unit: str | None, where: str) -> tuple[str, float] | None:
    """('downlink' | 'uplink', bits/s per unit) of a bandwidth header cell, or None."""
    match = re.fullmatch(r"(downlink|uplink)(?:_([a-z]+))?", name.strip().lower())
    if match is None:
        return None
    direction, suffix = match.groups()
    if suffix is not None:
        if suffix not in _UNIT_SUFFIX:
            raise InputError(f"{where}: column {name!r} has an unknown unit suffix {suffix!r}; "
                             f"use one of {', '.join('_' + s for s in _UNIT_SUFFIX)}")
        return direction, _UNIT_SUFFIX[suffix]
    if unit is None:
        raise InputError(f"{where}: column {name!r} has no unit; name it like {direction}_mbps "
                         f"or set system.clients.dynamics.unit")
    return direction, parse_quantity(f"1 {unit}", "bandwidth")


def read_bandwidth_trace(path: Path, n_clients: int, unit: str | None = None) -> dict[str, TraceSeries]:
    """Read a bandwidth time-series CSV: header ``client_id, t_s, downlink_<unit>,
    uplink_<unit>`` (any order; ``unit`` for bare ``downlink``/``uplink``), then
    rows of plain numbers. Per client: times strictly increasing, the first at
    0 s; every capacity finite and > 0.

    Returns:
        {"downlink": TraceSeries, "uplink": TraceSeries} for clients 0..n_clients-1.

    Raises:
        InputError: missing file or column, a bad cell, times out of order,
            a client without rows or whose first row is after 0 s (a gap), an
            unknown client id; the message names the file, line and column.
    """
    where = f"system.clients.dynamics.trace {str(path)!r}"
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InputError(f"{where}: cannot read the file ({exc.strerror})") from None
    rows: dict[int, list[tuple[float, float, float]]] = {}
    with handle:
        reader = csv.reader(handle)
        header = next((r for r in reader if any(c.strip() for c in r)), None)
        if header is None:
            raise InputError(f"{where}: the file is empty; expected client_id, t_s, downlink_mbps, uplink_mbps")
        columns: dict[str, tuple[int, float]] = {}
        for index, cell in enumerate(header):
            name = cell.strip().lower()
            if name in ("client_id", "t_s"):
                columns[name] = (index, 1.0)
            elif (scaled := _column_scale(name, unit, f"{where} line {reader.line_num}")) is not None:
                columns[scaled[0]] = (index, scaled[1])
            else:
                raise InputError(f"{where} line {reader.line_num}: unknown column {cell!r}; "
                                 "expected client_id, t_s, downlink_<unit>, uplink_<unit>")
        missing = [c for c in ("client_id", "t_s", *DIRECTIONS) if c not in columns]
        if missing:
            raise InputError(f"{where} line {reader.line_num}: missing column(s) {', '.join(missing)}")
        for line, row in data_rows(reader, len(header), where):
            values = {}
            for name, (index, scale) in columns.items():
                cell = row[index].strip()
                try:
                    value = float(cell)
                except ValueError:
                    value = math.nan
                if name == "client_id":
                    if not (value == int(value) if math.isfinite(value) else False) or not 0 <= value < n_clients:
                        raise InputError(f"{where} line {line}, column client_id: {cell!r} is not a client id "
                                         f"in 0..{n_clients - 1}")
                elif name == "t_s":
                    if not (math.isfinite(value) and value >= 0):
                        raise InputError(f"{where} line {line}, column t_s: {cell!r} must be a time >= 0 s")
                elif not (math.isfinite(value) and value > 0):
                    raise InputError(f"{where} line {line}, column {header[index].strip()}: {cell!r} "
                                     "must be a finite bandwidth > 0")
                values[name] = value * scale
            client = int(values["client_id"])
            series = rows.setdefault(client, [])
            if series and values["t_s"] <= series[-1][0]:
                raise InputError(f"{where} line {line}, column t_s: {row[columns['t_s'][0]].strip()!r} is not "
                                 f"after client {client}'s previous time {series[-1][0]:g} s (times out of order)")
            if not series and values["t_s"] != 0:
                raise InputError(f"{where} line {line}, column t_s: client {client}'s first row is at "
                                 f"{values['t_s']:g} s; it must be at 0 s (nothing says how to fill the gap)")
            series.append((values["t_s"], values["downlink"], values["uplink"]))
    absent = [k for k in range(n_clients) if k not in rows]
    if absent:
        raise InputError(f"{where}: no rows for client_id {', '.join(map(str, absent[:5]))}"
                         f"{' ...' if len(absent) > 5 else ''} (the scenario has {n_clients} clients)")
    arrays = [np.array(rows[k]) for k in range(n_clients)]
    times = [a[:, 0] for a in arrays]
    return {direction: TraceSeries(times, [a[:, 1 + d] for a in arrays])
            for d, direction in enumerate(DIRECTIONS)}


def generate_lte_trace(n_clients: int, duration_s: float, seed: int,
                       median_bps: tuple[float, float] = (20e6, 5e6)) -> list[tuple[int, float, float, float]]:
    """An LTE-like trace in the CSV format of `read_bandwidth_trace` (rows
    ``(client_id, t_s, downlink_bps, uplink_bps)``): `LTE_PRESET` variation
    around ``median_bps`` (down, up), one row per interval up to ``duration_s``."""
    interval = LTE_PRESET["interval"]
    steps = max(1, math.ceil(duration_s / interval))
    series = [AR1Series(np.full(n_clients, median), LTE_PRESET["sigma"], LTE_PRESET["correlation"],
                        interval, seed, direction) for median, direction in zip(median_bps, DIRECTIONS, strict=True)]
    factors = [[np.exp(s.log_factors(k, steps)) for k in range(n_clients)] for s in series]
    return [(k, j * interval, float(median_bps[0] * factors[0][k][j]), float(median_bps[1] * factors[1][k][j]))
            for k in range(n_clients) for j in range(steps)]
