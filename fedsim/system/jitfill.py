"""Compiled progressive filling for two-level paths (own link, at most one cell, the server link).

With shared cells (`fedsim.system.cells`) every path is the client's own
link, at most one cell and the server's link, written as ``shared_of[i] =
[server, cell or -1]``. The general allocator `fedsim.system.jitloop._allocate`
(progressive filling over any paths) pays, at every reallocation, for what
this shape makes unnecessary: scratch arrays allocated per call, a walk over
every column of every frozen flow's path with a duplicate check per entry,
and a scan over all links after each freeze for the levels to recompute. On a
tree the filling has only two cases:

* the server's level is the smallest (first by link index on ties, as the
  general allocator): every unfrozen flow crosses it, so every one freezes at
  ``min(cap, level)`` and the filling ends;
* a cell's level is the smallest: its unfrozen members freeze at
  ``min(cap, level)``, their rates leave the server's residual and their caps
  its sum (in the cell's cap order), and only the server's level is walked
  again; the other cells' levels cannot change (no flow crosses two cells).

`allocate_two_level` does exactly that with the same float operations in the
same order as `_allocate` (the rates are bit-identical; tests/test_cells_fast.py
checks it on random batches), using scratch arrays kept for the whole batch.
Per reallocation: O(n) to initialise, one water-level walk per live link
(each stops at the level), O(m) per frozen cell of m members plus one
server walk; at most C + 1 rounds for C cells.

Inlining: `level`, `next_bottleneck` and `allocate_two_level` are compiled
with ``inline="always"`` (numba inlines them at its IR level into their
callers, up to `fedsim.system.jitloop.schedule_loop`). A call to a separately
compiled function makes numba's runtime increment and decrement the reference
count of every array argument, each an atomic instruction: with about ten such
calls per reallocation that was about 30 % of the event loop's time in the
cells bench (`perf record` on the loop, issue 15's speed work). Inlined, numba
still counts the arguments it binds, but fewer: about 10 % of the loop's time
is left there. The float operations, and so the rates, are the same.

The model: max-min fairness by progressive filling (Bertsekas & Gallager,
*Data Networks*, 2nd ed., Sec. 6.5.2); `fedsim.system.network.path_max_min`
is the reference implementation.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["allocate_two_level", "level", "next_bottleneck", "two_level_server"]

_INF = math.inf


@njit(cache=True, inline="always")
def next_bottleneck(live: np.ndarray, levels: np.ndarray) -> tuple[int, float]:  # pragma: no cover - compiled
    """The next link progressive filling freezes: the first live link of the
    smallest water level, and that level; (-1, inf) when none is live.
    `fedsim.system.jitnet.next_bottleneck`, inlined into its callers (see
    "Inlining" in the module docstring)."""
    best = -1
    best_level = _INF
    for link in range(levels.size):
        if live[link] and (best < 0 or levels[link] < best_level):
            best = link
            best_level = levels[link]
    return best, best_level


@njit(cache=True)
def two_level_server(shared_of: np.ndarray, links: int) -> int:  # pragma: no cover - compiled
    """The server link if every path is ``[server, cell or -1]`` (the same
    server, cells other than it, no further columns), else -1."""
    if shared_of.shape[0] == 0 or shared_of.shape[1] < 2:
        return -1
    server = shared_of[0, 0]
    if server < 0 or server >= links:
        return -1
    for i in range(shared_of.shape[0]):
        if shared_of[i, 0] != server or shared_of[i, 1] == server or shared_of[i, 1] >= links:
            return -1
        for j in range(2, shared_of.shape[1]):
            if shared_of[i, j] >= 0:
                return -1
    return server


@njit(cache=True, inline="always")
def level(link: int, cap: np.ndarray, unfrozen: np.ndarray, left: np.ndarray, total: float,
          residual: np.ndarray, link_off: np.ndarray, link_flows: np.ndarray) -> float:  # pragma: no cover - compiled
    """The water level of ``link`` over its unfrozen flows
    (`fedsim.system.jitnet.water_level` on its members, read in cap order;
    ``total``: their caps' sum; inf: it cannot saturate)."""
    room = max(residual[link], 0.0)
    if not total > room:
        return _INF
    below = 0.0
    q = 0
    for a in range(link_off[link], link_off[link + 1]):
        flow = link_flows[a]
        if unfrozen[flow]:
            water = (room - below) / (left[link] - q)
            if water <= cap[flow]:
                return water
            below += cap[flow]
            q += 1
    return room / left[link]  # unreachable but for NaN caps (as water_level)


@njit(cache=True, inline="always")
def allocate_two_level(run: np.ndarray, count: int, server: int, shared_of: np.ndarray, cap: np.ndarray,
                       capacity_bps: np.ndarray, link_off: np.ndarray, link_flows: np.ndarray, rate: np.ndarray,
                       unfrozen: np.ndarray, left: np.ndarray, residual: np.ndarray, levels: np.ndarray,
                       live: np.ndarray, total: np.ndarray, unbounded: np.ndarray) -> None:  # pragma: no cover
    """Max-min rates of the running flows ``run[:count]`` into ``rate``
    (module docstring). ``shared_of[i] = [server, cell or -1]`` (checked by
    `two_level_server`); the member
    lists ``link_off``/``link_flows`` sorted by cap; ``unfrozen`` (flows,
    all False on entry and exit), ``left``, ``residual``, ``levels``, ``live``,
    ``total``, ``unbounded`` (links) are scratch."""
    links = capacity_bps.size
    for link in range(links):
        residual[link] = capacity_bps[link]
        left[link] = 0
        total[link] = 0.0
        unbounded[link] = 0
        live[link] = False
    for r in range(count):  # the members' counts and cap sums, in run order (as _allocate)
        i = run[r]
        c = cap[i]
        rate[i] = c
        unfrozen[i] = True
        left[server] += 1
        cell = shared_of[i, 1]
        if cell >= 0:
            left[cell] += 1
        if c == _INF:
            unbounded[server] += 1
            if cell >= 0:
                unbounded[cell] += 1
        else:
            total[server] += c
            if cell >= 0:
                total[cell] += c
    for link in range(links):
        if left[link]:
            live[link] = True
            levels[link] = level(link, cap, unfrozen, left, _INF if unbounded[link] else total[link], residual,
                                 link_off, link_flows)
    while True:
        best, best_level = next_bottleneck(live, levels)
        if best < 0 or best_level == _INF:
            break  # no shared link left that can saturate: the unfrozen flows run at their caps
        live[best] = False
        start, stop = link_off[best], link_off[best + 1]
        if best == server:  # every unfrozen flow crosses it: all freeze, the filling ends
            for a in range(start, stop):
                i = link_flows[a]
                if unfrozen[i]:
                    rate[i] = min(cap[i], best_level)
            break
        for a in range(start, stop):  # a cell: its flows freeze, the server loses their rates and caps
            i = link_flows[a]
            if unfrozen[i]:
                rate[i] = min(cap[i], best_level)
        for a in range(start, stop):
            i = link_flows[a]
            if unfrozen[i]:
                residual[server] -= rate[i]
        for a in range(start, stop):
            i = link_flows[a]
            if unfrozen[i]:
                unfrozen[i] = False
                left[server] -= 1
                if cap[i] == _INF:
                    unbounded[server] -= 1
                else:
                    total[server] -= cap[i]
        if live[server]:
            if left[server]:
                levels[server] = level(server, cap, unfrozen, left, _INF if unbounded[server] else total[server],
                                       residual, link_off, link_flows)
            else:
                live[server] = False
    for r in range(count):
        unfrozen[run[r]] = False
