"""Paths from clients to the server: time-varying client links, shared cells, the server's link.

`PathLinks` is what a round uses instead of the server's `SharedLink` when a
scenario has ``system.clients.dynamics`` or ``system.cells``: each transfer's
path is its client's own link (its capacity a time series,
`fedsim.system.dynamics`), its client's cell if any, and the server's link in
that direction; `fedsim.system.network.path_schedule` gives every flow its
max-min fair share along the whole path, recomputed at every event.

Cell assignment (`assign_cells`): ``round_robin`` puts client k in cell
``k mod C`` (cells in the order the scenario writes them); ``{cell: fraction}``
gives each cell a contiguous block of client ids whose sizes are the fractions
of K rounded by largest remainder (ties: the earlier cell).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedsim.system.dynamics import (
    DIRECTIONS,
    AR1Series,
    LinkBreakpoints,
    LinkSeries,
    read_bandwidth_trace,
)
from fedsim.system.fastnet import fast_path_schedule
from fedsim.system.network import PathSchedule, path_schedule
from fedsim.system.profiles import ClientProfiles
from fedsim.system.spec import SystemConfig

__all__ = ["ConstantSeries", "PathLinks", "assign_cells", "check_links", "link_series"]


class ConstantSeries(LinkSeries):
    """Links that never change (a scenario with cells but no dynamics)."""

    def __init__(self, bps: np.ndarray) -> None:
        self.bps = bps

    def segment(self, client: int, t_s: float) -> tuple[float, float]:
        return float(self.bps[client]), math.inf

    def breakpoints(self, clients: np.ndarray, t0_s: float, start_s: np.ndarray,
                    horizon_s: float) -> LinkBreakpoints:
        n = len(clients)
        return LinkBreakpoints(np.arange(n + 1, dtype=np.int64), np.asarray(start_s, dtype=float).copy(),
                               self.bps[clients].astype(float), np.full(n, math.inf))


def assign_cells(system: SystemConfig, n_clients: int) -> np.ndarray:
    """Each client's cell index (into ``system.cells`` in written order), or
    all -1 without cells (module docstring)."""
    names = list(system.cells)
    if not names:
        return np.full(n_clients, -1, dtype=np.int64)
    if system.cell_assignment == "round_robin":
        return np.arange(n_clients, dtype=np.int64) % len(names)
    fractions = np.array([system.cell_assignment.get(name, 0.0) for name in names])
    exact = fractions * n_clients
    sizes = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[: n_clients - int(sizes.sum())]] += 1
    return np.repeat(np.arange(len(names), dtype=np.int64), sizes)


def link_series(system: SystemConfig, profiles: ClientProfiles, seed: int,
                base_dir: Path | None) -> dict[str, LinkSeries]:
    """The clients' links per direction ({"downlink": ..., "uplink": ...}).

    Raises:
        fedsim.errors.InputError: a bad bandwidth trace (`read_bandwidth_trace`).
    """
    dynamics = system.clients.dynamics
    base = {"downlink": profiles.downlink_bps, "uplink": profiles.uplink_bps}
    if dynamics is None:
        return {d: ConstantSeries(base[d]) for d in DIRECTIONS}
    if dynamics.model == "trace":
        path = Path(dynamics.trace)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return read_bandwidth_trace(path, len(profiles), dynamics.unit)
    sigma, correlation, interval_s = dynamics.ar1()
    return {d: AR1Series(base[d], sigma, correlation, interval_s, seed, d) for d in DIRECTIONS}


def check_links(system: SystemConfig, n_clients: int, base_dir: Path | None) -> None:
    """Read the bandwidth trace, if the scenario names one, so that a bad file
    stops the run before any stage (the pipeline calls this first).

    Raises:
        fedsim.errors.InputError: the trace's first problem (file, line, column).
    """
    dynamics = system.clients.dynamics
    if dynamics is not None and dynamics.model == "trace":
        ones = np.ones(n_clients)
        profiles = ClientProfiles(downlink_bps=ones, uplink_bps=ones, rtt_s=ones, speed=ones, availability=ones)
        link_series(system, profiles, 0, base_dir)


class PathLinks:
    """The links of every path, per direction; `transfer` schedules a batch.

    Shared links per direction: index 0 is the server's link (egress for
    downloads, ingress for uploads), 1 + c is cell c.

    ``engine`` picks the solver: "fast" (`fedsim.system.fastnet`, the
    compiled event loop; the default) or "simpy" (`fedsim.system.network.path_schedule`, one SimPy
    process per flow: the reference the fast one is tested against).
    """

    engine = "fast"

    def __init__(self, system: SystemConfig, profiles: ClientProfiles, seed: int,
                 base_dir: Path | None = None) -> None:
        self.series = link_series(system, profiles, seed, base_dir)
        self.cell_of = assign_cells(system, len(profiles))
        # each client's shared links (the server's, its cell's or -1), indexed per batch
        self.shared_of = np.stack([np.zeros_like(self.cell_of), np.where(self.cell_of >= 0, self.cell_of + 1, -1)],
                                  axis=1)
        cells = list(system.cells.values())
        self.capacity_bps = {
            "downlink": np.array([system.server.downlink, *(c.capacity_down for c in cells)], dtype=float),
            "uplink": np.array([system.server.uplink, *(c.capacity_up for c in cells)], dtype=float),
        }

    def transfer(self, direction: str, t0_s: float, clients: np.ndarray, start_s: np.ndarray,
                 size_bytes: np.ndarray, *, until_s: float = math.inf) -> PathSchedule:
        """Schedule ``clients``' flows in ``direction`` starting ``start_s``
        seconds after the round start ``t0_s`` (absolute simulated s), up to
        offset ``until_s``. Client links are read at ``t0_s + offset``."""
        clients = np.asarray(clients, dtype=np.int64)
        shared_of = self.shared_of[clients]
        series = self.series[direction]
        if self.engine == "simpy":
            def caps(flow: int, offset_s: float) -> tuple[float, float]:
                client = int(clients[flow])
                cap_bps, next_s = series.segment(client, t0_s + offset_s)
                if next_s - t0_s <= offset_s:  # t0 + offset rounded to just before this change
                    cap_bps, next_s = series.segment(client, next_s)
                return cap_bps, next_s - t0_s

            return path_schedule(start_s, size_bytes, caps, shared_of, self.capacity_bps[direction], until_s=until_s)

        start = np.asarray(start_s, dtype=float)

        def links(horizon_s: float) -> LinkBreakpoints:  # the same capacities as caps(), for the whole batch
            return series.breakpoints(clients, t0_s, start, horizon_s)

        return fast_path_schedule(start, size_bytes, links, shared_of, self.capacity_bps[direction], until_s=until_s)

    def bind(self, direction: str, t0_s: float, clients: np.ndarray) -> Callable[..., PathSchedule]:
        """``transfer`` with the signature of `SharedLink.transfer_all`
        (``start_s, size_bytes, cap_bps, until_s``; ``cap_bps`` is ignored:
        the client links come from the series)."""
        def transfer_all(start_s: np.ndarray, size_bytes: np.ndarray, _cap_bps: np.ndarray, *,
                         until_s: float = math.inf) -> PathSchedule:
            return self.transfer(direction, t0_s, clients, start_s, size_bytes, until_s=until_s)
        return transfer_all
