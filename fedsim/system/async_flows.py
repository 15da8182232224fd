"""Flows that start at any time over time-varying, shared paths: the asynchronous schedule's links.

In a synchronous round every flow's start is known before the round's
transfers are scheduled, so `fedsim.system.links.fluid_schedule` and
`fedsim.system.network.path_schedule` solve a whole batch at once. In
asynchronous FL (`fedsim.system.asynchronous`) a download starts when another
client's upload has arrived, which depends on how the links were shared until
then; flows must be added one event at a time. `PathFlows` keeps the running
flows of one direction in ``slots`` (one per concurrently training client)
and gives them, at every event, the max-min fair rates over their paths
(`fedsim.system.network.path_max_min`: client link, cell, server link;
Bertsekas & Gallager, *Data Networks*, 2nd ed., Sec. 6.5.2). Between events
rates are constant, so the schedule is exact in the fluid model, as in
docs/network-model.md. Client links come from the same series as the
synchronous model (`fedsim.system.cells.PathLinks`): constant, a bandwidth
trace or the AR(1)/LTE model.

Two implementations with the same interface and the same floats:
`PathFlows`, whose per-slot state is one float matrix updated by compiled
kernels (`fedsim.system.async_jit`: a flow event costs one or two compiled
calls), is what the event driver uses; `ReferencePathFlows`, the same steps
in numpy with `fedsim.system.network.path_max_min`, is the readable
reference that tests/test_async_flows_jit.py holds it to.
"""

from __future__ import annotations

import math

import numpy as np

from fedsim.system import async_jit as jit
from fedsim.system.dynamics import LinkSeries
from fedsim.system.network import path_max_min

__all__ = ["PathFlows", "ReferencePathFlows"]

_BITS_PER_BYTE = 8.0
_DONE_RTOL = 1e-9  # a flow within this share of its size is done (float rounding)


class ReferencePathFlows:
    """The running flows of one direction, one per slot (bytes, bits/s, s);
    numpy (the reference of `PathFlows`).

    Args:
        slots: how many flows can run at once.
        capacity_bps: the shared links' capacities (index 0 the server's link,
            1 + c cell c; may be inf).
        shared_of_client: per client, the shared links its path crosses, shape
            (K, p), -1 padding.
        series: the clients' own links in this direction over time.
    """

    def __init__(self, slots: int, capacity_bps: np.ndarray, shared_of_client: np.ndarray,
                 series: LinkSeries) -> None:
        self.capacity_bps = np.asarray(capacity_bps, dtype=float)
        self.shared_of_client = np.asarray(shared_of_client, dtype=np.int64)
        self.series = series
        self.shared = np.full((slots, self.shared_of_client.shape[1]), -1, dtype=np.int64)
        self.client = np.zeros(slots, dtype=np.int64)
        self.size = np.zeros(slots)
        self.sent = np.zeros(slots)
        self.cap = np.zeros(slots)
        self.rate = np.zeros(slots)
        self.change_s = np.full(slots, math.inf)  # the next change of each flow's client link
        self.end_s = np.full(slots, math.inf)  # predicted completion at the current rates
        self.active = np.zeros(slots, dtype=bool)
        self.now_s = 0.0
        self.next_s = math.inf

    def _advance(self, t_s: float) -> None:
        if t_s > self.now_s:  # idle slots have rate 0 (_reallocate)
            self.sent += self.rate * ((t_s - self.now_s) / _BITS_PER_BYTE)
            self.now_s = t_s

    def _segment(self, client: int, t_s: float) -> tuple[float, float]:
        cap_bps, next_s = self.series.segment(client, t_s)
        if next_s <= t_s:  # t_s rounded to just before this change
            cap_bps, next_s = self.series.segment(client, next_s)
        return cap_bps, next_s

    def start(self, slot: int, client: int, size_bytes: float, t_s: float) -> bool:
        """Start a flow of ``size_bytes`` for ``client`` in ``slot`` at ``t_s``;
        True if it is done at once (0 bytes)."""
        if size_bytes <= 0:
            return True
        self._advance(t_s)
        self.client[slot] = client
        self.shared[slot] = self.shared_of_client[client]
        self.size[slot] = size_bytes
        self.sent[slot] = 0.0
        self.cap[slot], self.change_s[slot] = self._segment(client, t_s)
        self.active[slot] = True
        self._reallocate()
        return False

    def stop(self, slot: int, t_s: float) -> float:
        """Stop the flow in ``slot`` at ``t_s``; the bytes it had sent."""
        self._advance(t_s)
        if self.active[slot]:
            self.active[slot] = False
            self._reallocate()
        return float(min(self.sent[slot], self.size[slot]))

    def next_time(self) -> float:
        """When the next completion or client-link change happens (inf: none)."""
        return self.next_s

    def step(self, t_s: float) -> list[int]:
        """Advance to ``t_s`` (<= ``next_time()``), apply the link changes due
        and return the slots whose flows finished then."""
        self._advance(t_s)
        act = self.active
        left = self.size - self.sent
        finished = np.flatnonzero(act & ((self.end_s <= t_s) | (left <= _DONE_RTOL * self.size)))
        self.active[finished] = False
        self.sent[finished] = self.size[finished]
        for slot in np.flatnonzero(self.active & (self.change_s <= t_s)).tolist():
            self.cap[slot], self.change_s[slot] = self._segment(int(self.client[slot]), t_s)
        self._reallocate()
        return finished.tolist()

    def _reallocate(self) -> None:
        act = np.flatnonzero(self.active)
        self.rate[:] = 0.0
        self.end_s[:] = math.inf
        if act.size == 0:
            self.next_s = math.inf
            return
        self.rate[act] = path_max_min(self.cap[act], self.shared[act], self.capacity_bps)
        with np.errstate(divide="ignore"):
            self.end_s[act] = self.now_s + (self.size[act] - self.sent[act]) * _BITS_PER_BYTE / self.rate[act]
        self.next_s = float(min(self.end_s[act].min(), self.change_s[act].min()))


class PathFlows(ReferencePathFlows):
    """`ReferencePathFlows` with its per-slot state in one float matrix
    (``state``, rows `fedsim.system.async_jit.SIZE` .. ``END``; ``size``,
    ``sent``, ``cap``, ``rate``, ``change_s``, ``end_s`` are views of its
    rows) and each event one or two compiled calls.

    Args: as `ReferencePathFlows`.
    """

    def __init__(self, slots: int, capacity_bps: np.ndarray, shared_of_client: np.ndarray,
                 series: LinkSeries) -> None:
        super().__init__(slots, capacity_bps, shared_of_client, series)
        self.state = np.zeros((jit.ROWS, slots))
        self.state[jit.CHANGE] = math.inf
        self.state[jit.END] = math.inf
        self.size, self.sent, self.cap, self.rate, self.change_s, self.end_s = self.state
        self._finished = np.zeros(slots, dtype=np.int64)
        self._changed = np.zeros(slots, dtype=np.int64)

    def _reallocate_at(self, t_s: float) -> None:
        self.now_s, self.next_s = jit.reallocate(self.now_s, t_s, self.state, self.active, self.shared,
                                                 self.capacity_bps)

    def start(self, slot: int, client: int, size_bytes: float, t_s: float) -> bool:
        """Start a flow of ``size_bytes`` for ``client`` in ``slot`` at ``t_s``;
        True if it is done at once (0 bytes)."""
        if size_bytes <= 0:
            return True
        state = self.state  # the slot is idle (rate 0): setting it before advancing is the same
        self.client[slot] = client
        self.shared[slot] = self.shared_of_client[client]
        state[jit.SIZE, slot] = size_bytes
        state[jit.SENT, slot] = 0.0
        state[jit.CAP, slot], state[jit.CHANGE, slot] = self._segment(client, t_s)
        self.active[slot] = True
        self._reallocate_at(t_s)
        return False

    def stop(self, slot: int, t_s: float) -> float:
        """Stop the flow in ``slot`` at ``t_s``; the bytes it had sent."""
        if self.active[slot]:
            self.active[slot] = False  # its rate still counts while advancing to t_s
            self._reallocate_at(t_s)
        else:
            self._advance(t_s)
        return float(min(self.sent[slot], self.size[slot]))

    def step(self, t_s: float) -> list[int]:
        """Advance to ``t_s`` (<= ``next_time()``), apply the link changes due
        and return the slots whose flows finished then."""
        self.now_s, n_done, n_changed = jit.step_due(self.now_s, t_s, _DONE_RTOL, self.state, self.active,
                                                     self._finished, self._changed)
        if n_changed:
            state, client = self.state, self.client
            for slot in self._changed[:n_changed].tolist():
                state[jit.CAP, slot], state[jit.CHANGE, slot] = self._segment(int(client[slot]), t_s)
        self._reallocate_at(t_s)
        return self._finished[:n_done].tolist()
