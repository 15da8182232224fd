"""Flows over multi-link paths with time-varying links: the fluid max-min model as SimPy events.

`fedsim.system.links` solves one shared link whose flows keep fixed caps. This
module is the general case that dynamic links and shared cells need: flow i
crosses its client's own link (capacity ``c_i(t)``, piecewise constant in
time, used by that flow alone) and a set of *shared* links (a cell, the
server's link) of fixed capacities. At every instant the rates are the max-min
fair allocation over the whole path (Bertsekas & Gallager, *Data Networks*,
2nd ed., Sec. 6.5.2), recomputed at every event: a flow starts, a flow ends,
or a client link's capacity changes. Between two events every rate is
constant, so the schedule is exact (no time step).

Max-min allocation (`path_max_min`), progressive filling over the shared links
with the client links as caps: raise a common level t for every unfrozen
flow; flow i runs at ``min(c_i, t)``; shared link l saturates at its water
level ``L_l`` (``sum over its unfrozen flows of min(c_i, L_l) = residual_l``,
`fedsim.system.links.water_level`). The link with the smallest ``L_l`` is the
next bottleneck: its unfrozen flows freeze at ``min(c_i, L_l)``, their rates
leave the residuals of the other links they cross, and the filling goes on.
When no shared link can saturate, the remaining flows run at their caps. Each
round of the filling freezes a shared link, so there are at most S + 1 rounds
for S shared links; a round recomputes only the water levels of the links
that its frozen flows cross (O(n log n) each, n running flows). With paths of
a cell and the server's link that is O(S n log n) per event, O(S^2 n log n)
at worst, times E events (flow starts and ends and capacity changes of the
client links during the transfers).

The event engine is SimPy (`FluidNetwork` is the actor; each flow is a
process, `client_link`, that starts the flow and replays its client link's
capacity changes; completions are timeouts that a reallocation supersedes).
Events at one instant are folded into one reallocation (a zero-delay event
queued behind them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import simpy

from fedsim.system.links import water_level

__all__ = ["CapSource", "FluidNetwork", "PathSchedule", "client_link", "constant_caps", "path_max_min", "path_schedule"]

_BITS_PER_BYTE = 8.0
_DONE_RTOL = 1e-9  # a flow within this share of its size is done (float rounding)

#: ``caps(flow, t_s) -> (cap_bps, next_change_s)``: the capacity of a flow's
#: client link at offset ``t_s`` and the next offset where it changes (inf: never).
CapSource = Callable[[int, float], tuple[float, float]]


def path_max_min(cap_bps: np.ndarray, shared_of: np.ndarray, capacity_bps: np.ndarray) -> np.ndarray:
    """Max-min fair rates (bits/s) of flows over multi-link paths (module docstring).

    Args:
        cap_bps: each flow's own cap (its client link, > 0, may be inf), shape (n,).
        shared_of: shape (n, p): the shared links each flow crosses, as indices
            into ``capacity_bps``; -1 pads shorter paths.
        capacity_bps: each shared link's capacity (bits/s, > 0, may be inf).

    Returns:
        The rates, shape (n,).

    Example (checked in tests/test_system_cells.py): caps 10, 10, 2, 10 Mbps;
    flows 0, 1 in cell A (8 Mbps), flows 2, 3 in cell B (20 Mbps), server
    15 Mbps. Cell A's level is 4, the server's 13/3 (with flow 2 capped at 2),
    cell B's inf: cell A freezes flows 0, 1 at 4; the server has 7 left for
    flows 2 and 3: flow 2 keeps its cap 2, flow 3 gets 5. Rates 4, 4, 2, 5.
    """
    cap = np.asarray(cap_bps, dtype=float)
    n = cap.size
    rate = cap.copy()
    if n == 0:
        return rate
    residual = np.asarray(capacity_bps, dtype=float).copy()
    shared_of = np.asarray(shared_of, dtype=np.int64).reshape(n, -1)
    one_link = shared_of[0, 0] >= 0 and (shared_of[:, 0] == shared_of[0, 0]).all()
    if one_link and (shared_of.shape[1] == 1 or (shared_of[:, 1:] < 0).all()):  # one level
        return np.minimum(cap, water_level(cap, residual[shared_of[0, 0]]))
    on_link = [shared_of == link for link in range(residual.size)]
    on_link = [member.any(axis=1) for member in on_link]
    unfrozen = np.ones(n, dtype=bool)

    def level_of(link: int) -> float:
        caps = cap[unfrozen & on_link[link]]
        room = max(residual[link], 0.0)
        return math.inf if caps.sum() <= room else water_level(caps, room)

    # water levels are cached: a freeze changes only the links its flows cross
    levels = {link: level_of(link) for link in range(residual.size) if on_link[link].any()}
    while levels:
        best_link = min(levels, key=levels.__getitem__)
        best_level = levels.pop(best_link)
        if best_level == math.inf:
            break  # no shared link can saturate: every unfrozen flow runs at its cap
        frozen = unfrozen & on_link[best_link]
        rate[frozen] = np.minimum(cap[frozen], best_level)
        unfrozen &= ~frozen
        crossed = shared_of[frozen]
        for column in crossed.T:
            np.subtract.at(residual, column[column >= 0], rate[frozen][column >= 0])
        for link in set(crossed[crossed >= 0].tolist()) & levels.keys():
            if (unfrozen & on_link[link]).any():
                levels[link] = level_of(link)
            else:
                del levels[link]
    return rate


@dataclass(frozen=True)
class PathSchedule:
    """The outcome of `path_schedule` (arrays indexed like its flows).

    Attributes:
        start_s, size_bytes: the flows.
        until_s: the schedule was computed up to this offset.
        end_s: completion offsets (s); inf for flows not done by ``until_s``.
        sent_bytes: bytes each flow had sent by ``until_s`` (all of it if done).
        event_s: the offsets of the reallocations, ascending.
        event_sent: bytes sent per flow at each reallocation, shape (E, n).
        event_rate_bps: the rates set at each reallocation, shape (E, n).
    """

    start_s: np.ndarray
    size_bytes: np.ndarray
    until_s: float
    end_s: np.ndarray
    sent_bytes: np.ndarray
    event_s: np.ndarray
    event_sent: np.ndarray
    event_rate_bps: np.ndarray

    def sent_bytes_at(self, time_s: float) -> np.ndarray:
        """Bytes each flow had sent by offset ``time_s`` (<= ``until_s``): the
        fluid integral of its rate (linear between reallocations)."""
        if time_s > self.until_s:
            raise ValueError(f"schedule known up to {self.until_s} s, asked for {time_s} s")
        if self.event_s.size == 0 or time_s < self.event_s[0]:
            return np.where(self.end_s <= time_s, self.size_bytes, 0.0)
        k = int(np.searchsorted(self.event_s, time_s, side="right")) - 1
        sent = self.event_sent[k] + self.event_rate_bps[k] / _BITS_PER_BYTE * (time_s - self.event_s[k])
        sent = np.where(self.start_s <= time_s, np.clip(sent, 0.0, self.size_bytes), 0.0)
        return np.where(self.end_s <= time_s, self.size_bytes, sent)


class FluidNetwork:
    """The running flows of one batch and their rates (SimPy actor).

    ``start``, ``set_cap`` and the completion timeouts change the state at
    ``env.now``; each first integrates the bytes sent since the last change
    (``advance``), then asks for one reallocation at this instant.
    """

    def __init__(self, env: simpy.Environment, size_bytes: np.ndarray, shared_of: np.ndarray,
                 capacity_bps: np.ndarray, until_s: float) -> None:
        n = size_bytes.size
        self.env = env
        self.size = size_bytes
        self.shared_of = shared_of
        self.capacity_bps = capacity_bps
        self.until_s = until_s
        self.cap = np.zeros(n)
        self.rate = np.zeros(n)  # bits/s
        self.sent = np.zeros(n)  # bytes
        self.active = np.zeros(n, dtype=bool)
        self.done = np.zeros(n, dtype=bool)
        self.end_s = np.full(n, math.inf)
        self.last_s = 0.0
        self.version = 0  # bumped by every reallocation: older completion timeouts are stale
        self.pending = False
        self.history: list[tuple[float, np.ndarray, np.ndarray]] = []

    def advance(self, to_s: float | None = None) -> None:
        """Integrate the bytes sent from the last change to ``to_s`` (default now)."""
        now = self.env.now if to_s is None else to_s
        if now > self.last_s and self.active.any():
            self.sent[self.active] += self.rate[self.active] / _BITS_PER_BYTE * (now - self.last_s)
        self.last_s = max(self.last_s, now)

    def start(self, flow: int, cap_bps: float) -> None:
        self.advance()
        self.cap[flow] = cap_bps
        if self.size[flow] <= 0.0:
            self.done[flow] = True
            self.end_s[flow] = self.env.now
            return
        self.active[flow] = True
        self._request()

    def set_cap(self, flow: int, cap_bps: float) -> None:
        if self.done[flow] or self.cap[flow] == cap_bps:
            return
        self.advance()
        self.cap[flow] = cap_bps
        self._request()

    def _request(self) -> None:
        if not self.pending:
            self.pending = True
            self.env.timeout(0.0).callbacks.append(self._reallocate)

    def _reallocate(self, _event: simpy.Event | None = None) -> None:
        """Recompute every running flow's max-min rate and book the next completion."""
        self.pending = False
        self.advance()
        self.version += 1
        active = np.flatnonzero(self.active)
        self.rate[:] = 0.0
        if active.size:
            self.rate[active] = path_max_min(self.cap[active], self.shared_of[active], self.capacity_bps)
        self.history.append((self.env.now, self.sent.copy(), self.rate.copy()))
        if not active.size:
            return
        with np.errstate(divide="ignore"):
            left_s = (self.size[active] - self.sent[active]) * _BITS_PER_BYTE / self.rate[active]
        wait_s = float(left_s.min())
        if math.isfinite(wait_s) and self.env.now + wait_s <= self.until_s:
            version = self.version
            self.env.timeout(max(wait_s, 0.0)).callbacks.append(lambda _e: self._complete(version))

    def _complete(self, version: int) -> None:
        if version != self.version:
            return  # a later reallocation booked another completion
        self.advance()
        active = np.flatnonzero(self.active)
        left = self.size[active] - self.sent[active]
        finished = active[(left <= _DONE_RTOL * self.size[active]) | (self.rate[active] == math.inf)]
        if finished.size == 0:  # rounding left a sliver: finish the closest flow
            finished = active[[int(np.argmin(left * _BITS_PER_BYTE / self.rate[active]))]]
        self.active[finished] = False
        self.done[finished] = True
        self.sent[finished] = self.size[finished]
        self.end_s[finished] = self.env.now
        self._request()


def client_link(env: simpy.Environment, net: FluidNetwork, flow: int, start_s: float,
                caps: CapSource) -> Iterator[simpy.Event]:
    """Process: flow ``flow`` starts at ``start_s``; then its client link's
    capacity changes whenever ``caps`` says, until the flow is done or the
    schedule's horizon is reached."""
    if start_s > net.until_s:
        return
    yield env.timeout(start_s)
    cap_bps, next_s = caps(flow, env.now)
    net.start(flow, cap_bps)
    while not net.done[flow] and next_s <= net.until_s:
        if not next_s > env.now:
            raise RuntimeError(f"flow {flow}: the link's next change {next_s} s is not after now {env.now} s")
        yield env.timeout(next_s - env.now)
        if net.done[flow]:
            return
        cap_bps, next_s = caps(flow, env.now)
        net.set_cap(flow, cap_bps)


def path_schedule(
    start_s: Sequence[float] | np.ndarray,
    size_bytes: Sequence[float] | np.ndarray,
    caps: CapSource,
    shared_of: np.ndarray,
    capacity_bps: Sequence[float] | np.ndarray,
    *,
    until_s: float = math.inf,
) -> PathSchedule:
    """Simulate a batch of flows with known start offsets (module docstring).

    Args:
        start_s: start offsets (s, >= 0).
        size_bytes: bytes per flow (>= 0).
        caps: the client links' capacities over time (`CapSource`, bits/s > 0).
        shared_of: (n, p) shared-link indices per flow, -1 padding.
        capacity_bps: the shared links' capacities (bits/s, > 0, may be inf).
        until_s: stop at this offset; flows not done then have ``end_s = inf``.

    Raises:
        ValueError: arrays that disagree in length, negative starts or sizes,
            a non-positive capacity.
    """
    start = np.asarray(start_s, dtype=float).reshape(-1)
    size = np.asarray(size_bytes, dtype=float).reshape(-1)
    shared = np.asarray(shared_of, dtype=np.int64).reshape(start.size, -1)
    capacity = np.asarray(capacity_bps, dtype=float).reshape(-1)
    if start.size != size.size:
        raise ValueError(f"flows disagree in length: {start.size} starts, {size.size} sizes")
    if start.size and (start.min() < 0 or size.min() < 0):
        raise ValueError("start offsets and sizes must be >= 0")
    if capacity.size and not capacity.min() > 0:
        raise ValueError(f"shared capacities must be > 0, got {capacity.tolist()}")
    env = simpy.Environment()
    net = FluidNetwork(env, size, shared, capacity, until_s)
    for flow in np.argsort(start, kind="stable").tolist():
        env.process(client_link(env, net, flow, float(start[flow]), caps))
    env.run()
    if math.isfinite(until_s):
        net.advance(until_s)
    sent = np.where(net.done, size, np.clip(net.sent, 0.0, size))
    if net.history:
        times, sent_at, rates = zip(*net.history, strict=True)
        event_s, event_sent, event_rate = np.array(times), np.array(sent_at), np.array(rates)
    else:
        event_s, event_sent, event_rate = np.zeros(0), np.zeros((0, start.size)), np.zeros((0, start.size))
    return PathSchedule(start, size, until_s, net.end_s.copy(), sent, event_s, event_sent, event_rate)


def constant_caps(cap_bps: np.ndarray) -> CapSource:
    """A `CapSource` of links that never change."""
    values = np.asarray(cap_bps, dtype=float)
    return lambda flow, _t: (float(values[flow]), math.inf)
