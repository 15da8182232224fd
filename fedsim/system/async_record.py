"""The asynchronous server's per-update bookkeeping: the record, the selection, the random streams.

`fedsim.system.asynchronous.Protocol` touches these once or a few times per
client update, tens of thousands of times per simulated second of CPU, so
they are written for the interpreter's fast paths (issue 16, "Performance":
>= 50,000 updates per second; docs/performance.md):

* `Record`: one Python list per column, preallocated in blocks with each
  column's starting value, so that starting an update writes its five known
  fields by index (the phases, bytes, reason and step keep their fill until a
  driver or the server sets them). Python lists, not numpy columns: a list
  store is a few tens of nanoseconds, a numpy scalar store about 100 ns and a
  numpy scalar read boxes a new object; the columns become arrays once, at
  the end (`fedsim.system.asynchronous._schedule`).
* `Uniforms`: a purpose's uniforms by index, drawn in chunks from
  ``rng(seed, "async", purpose, chunk)``; value i does not depend on how many
  were drawn before (fedjax's "randomness is a function of (seed, purpose,
  index)").
* `Selector`: the clients not training, the uniform draw of the next one.

Nothing here changes a schedule: the same floats in the same order as the
per-update appends it replaced (tests/test_async_server_fast.py pins the
frames of 29 schedules to their digests from before the change).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from fedsim import seeding
from fedsim.system.round_plan import RoundPlan

__all__ = ["ASYNC_REASONS", "Record", "Selector", "Uniforms"]

#: What became of an update: aggregated (``ok``), dropped as in synchronous
#: rounds, discarded as too stale, arrived but not aggregated before the end,
#: or still running at the end.
ASYNC_REASONS = ("ok", "dropout", "deadline", "offline", "stale", "unused", "end")
OK, DROPOUT, DEADLINE, OFFLINE, STALE, UNUSED, END = range(7)
_CHUNK = 4096
_BLOCK = 1024  # first allocation of the record, in updates (it doubles)


class Uniforms:
    """Uniforms of one purpose, by index, drawn in chunks of ``_CHUNK`` from
    ``rng(seed, "async", purpose, chunk)``: value i does not depend on how
    many were drawn before."""

    def __init__(self, seed: int, purpose: str) -> None:
        self.seed, self.purpose = seed, purpose
        self.chunk, self.values = -1, [0.0]
        self.offset = -_CHUNK  # index of values[0]
        self.index = 0

    def at(self, i: int) -> float:
        """Value ``i`` (i >= 0)."""
        j = i - self.offset
        if 0 <= j < _CHUNK:
            return self.values[j]
        chunk = i // _CHUNK
        self.chunk, self.offset = chunk, chunk * _CHUNK
        self.values = seeding.rng(self.seed, "async", self.purpose, chunk).random(_CHUNK).tolist()
        return self.values[i - self.offset]

    def next(self) -> float:
        """The value after the last one `next` gave (0 first)."""
        i = self.index
        self.index = i + 1
        j = i - self.offset
        return self.values[j] if 0 <= j < _CHUNK else self.at(i)


class Selector:
    """The clients not training; draws the next one to start
    (`fedsim.system.asynchronous`'s docstring: uniform among the reachable
    idle clients; ``idle`` is kept by swap-with-last removal, so its order,
    and with it the draw, is a function of the schedule so far)."""

    def __init__(self, plan: RoundPlan, seed: int) -> None:
        self.idle = list(range(plan.n_clients))
        self.plan = plan
        self.simple = plan.all_available and plan.sessions is None
        self.uniform = Uniforms(seed, "selection")
        self.draws = 0

    def take(self, t_s: float) -> int | None:
        """A reachable idle client, removed from the idle set; None if none is."""
        idle = self.idle
        if not idle:
            return None
        if self.simple:
            i = int(self.uniform.next() * len(idle))
        else:
            ids = np.array(idle)
            ok = np.ones(ids.size, dtype=bool)
            if self.plan.sessions is not None:
                ok &= self.plan.sessions.online(t_s)[ids]
            if not self.plan.all_available:
                coins = seeding.rng(self.plan.seed, "async", "availability", self.draws).random(self.plan.n_clients)
                self.draws += 1
                ok &= coins[ids] < self.plan.profiles.availability[ids]
            choices = np.flatnonzero(ok)
            if choices.size == 0:
                return None
            i = int(choices[int(self.uniform.next() * choices.size)])
        k = idle[i]
        last = idle.pop()
        if last != k:
            idle[i] = last
        return k


class Record:
    """Per-update columns as Python lists (element u: update u, in start order).

    ``n`` updates are recorded; the lists are longer (preallocated, each
    element its column's ``FILL``) until `trim`. Columns: client, slot,
    start_version, start (s), down_size (bytes to download), the phases
    (flow_down_end, has_model, compute_end, flow_up_start, arrive, stop; s,
    inf: not reached), reason (`ASYNC_REASONS` index; ``END`` until it
    ends), step (-1: none), down_bytes / up_bytes (NaN until known).
    """

    FILL: ClassVar[dict[str, float]] = {"client": -1, "slot": -1, "start_version": -1, "start": math.nan,
                                         "down_size": math.nan, "flow_down_end": math.inf, "has_model": math.inf,
                                         "compute_end": math.inf, "flow_up_start": math.inf,
                                         "arrive": math.inf, "stop": math.inf, "reason": END, "step": -1,
                                         "down_bytes": math.nan, "up_bytes": math.nan}
    NAMES = tuple(FILL)

    def __init__(self) -> None:
        self.n = 0
        self.size = 0
        for name in self.NAMES:
            setattr(self, name, [])

    def add(self, client: int, slot: int, version: int, t_s: float, down_size: float) -> int:
        """Record a started update; returns its id."""
        u = self.n
        if u == self.size:
            self._grow()
        self.client[u] = client
        self.slot[u] = slot
        self.start_version[u] = version
        self.start[u] = t_s
        self.down_size[u] = down_size
        self.n = u + 1
        return u

    def _grow(self) -> None:
        extra = max(_BLOCK, self.size)
        for name, fill in self.FILL.items():
            getattr(self, name).extend([fill] * extra)
        self.size += extra

    def trim(self) -> None:
        """Cut the columns to the ``n`` recorded updates (at the end of a schedule)."""
        for name in self.NAMES:
            del getattr(self, name)[self.n:]
        self.size = self.n
