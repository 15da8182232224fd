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

`fill_two_level` does exactly that with the same float operations in the
same order as `_allocate` (the rates are bit-identical; tests/test_cells_fast.py
checks it on random batches through `allocate_two_level`, its form for sorted
lists), using scratch arrays kept for the whole batch.
Per reallocation: O(n) to initialise, one water-level walk per live link
(each stops at the level), O(m) per frozen cell of m members plus one
server walk; at most C + 1 rounds for C cells.

Inlining: `level`, `level_from`, `sort_link`, `next_bottleneck` and `fill_two_level` are compiled
with ``inline="always"`` (numba inlines them at its IR level into their
callers, up to `fedsim.system.jitloop.schedule_loop`). A call to a separately
compiled function makes numba's runtime increment and decrement the reference
count of every array argument, each an atomic instruction: with about ten such
calls per reallocation that was about 30 % of the event loop's time in the
cells bench (`perf record` on the loop, issue 15's speed work). Inlined, numba
still counts the arguments it binds, but fewer: about 10 % of the loop's time
is left there. The float operations, and so the rates, are the same.

Lazy sorting: a level is one walk over the link's member list in cap order,
from the smallest unfrozen cap up, and it stops at the first flow whose cap
reaches the water (``(room - below) / (left - q)``). Its first step,
``room / left`` against the smallest cap, needs no order; in the benchmark's
scenarios the level usually lies below every running cap there (100 flows on
200 Mbps, caps around 20 Mbps). So `level_from` sorts a list (`sort_link`)
only when the walk goes on past that step, and `fill_two_level` sorts a
cell's list when the cell freezes (its flows leave the server's residual and
sum in cap order); the smallest caps are gathered in the pass that sums the
caps. Before, every list with a changed cap was sorted at every
reallocation: a Shell sort of every list at every AR(1) step (all caps
change), an insertion pass at every start. Flows with equal caps may now come
in another order, which changes no float: they add and subtract the same
values. The rates are bit-identical (tests/test_cells_speed_lazy.py).

The model: max-min fairness by progressive filling (Bertsekas & Gallager,
*Data Networks*, 2nd ed., Sec. 6.5.2); `fedsim.system.network.path_max_min`
is the reference implementation.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fedsim.system.jitnet import next_bottleneck

__all__ = ["allocate_two_level", "fill_two_level", "level", "level_from", "next_bottleneck", "sort_link",
           "two_level_server"]

_INF = math.inf
_GAPS = (701, 301, 132, 57, 23, 10, 4, 1)  # Ciura's gaps (`sort_link`)


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
def sort_link(link: int, link_off: np.ndarray, link_flows: np.ndarray, cap: np.ndarray,
              dirty: np.ndarray) -> None:  # pragma: no cover - compiled
    """Sort ``link``'s member list by cap if ``dirty[link]`` (its members'
    cap changes since it was last sorted) is not 0: an insertion sort after a
    few changes (O(m) each), a Shell sort after many (every client link
    changing on the AR(1) grid; Ciura, "Best increments for the average case
    of Shellsort", FCT 2001)."""
    if dirty[link] == 0:
        return
    start, stop = link_off[link], link_off[link + 1]
    for gap in _GAPS:  # Shell sort with Ciura's gaps; after a few changes only the last, insertion, pass
        if gap > 1 and (dirty[link] <= 8 or gap >= stop - start):
            continue
        for a in range(start + gap, stop):
            flow = link_flows[a]
            b = a - gap
            while b >= start and cap[link_flows[b]] > cap[flow]:
                link_flows[b + gap] = link_flows[b]
                b -= gap
            link_flows[b + gap] = flow
    dirty[link] = 0


@njit(cache=True, inline="always")
def level_from(link: int, cap: np.ndarray, unfrozen: np.ndarray, left: np.ndarray, total: float, smallest: float,
               residual: np.ndarray, link_off: np.ndarray, link_flows: np.ndarray,
               dirty: np.ndarray) -> float:  # pragma: no cover - compiled
    """`level`, sorting ``link``'s member list only when the walk needs it
    ("Lazy sorting" in the module docstring). ``smallest``: the smallest cap
    of its unfrozen flows (-inf: not known; NaN if one is NaN)."""
    room = max(residual[link], 0.0)
    if not total > room:
        return _INF
    water = room / left[link]  # the walk's first step: (room - 0.0) / (left - 0), the same float
    if water <= smallest:
        return water
    sort_link(link, link_off, link_flows, cap, dirty)
    return level(link, cap, unfrozen, left, total, residual, link_off, link_flows)


@njit(cache=True)
def allocate_two_level(run: np.ndarray, count: int, server: int, shared_of: np.ndarray, cap: np.ndarray,
                       capacity_bps: np.ndarray, link_off: np.ndarray, link_flows: np.ndarray, rate: np.ndarray,
                       unfrozen: np.ndarray, left: np.ndarray, residual: np.ndarray, levels: np.ndarray,
                       live: np.ndarray, total: np.ndarray, unbounded: np.ndarray) -> None:  # pragma: no cover
    """`fill_two_level` on member lists that are all sorted by cap (for
    tests and callers that sort them first): no list is dirty."""
    links = capacity_bps.size
    fill_two_level(run, count, server, shared_of, cap, capacity_bps, link_off, link_flows, np.zeros(links, np.int64),
                   rate, unfrozen, left, residual, levels, live, total, unbounded, np.empty(links))


@njit(cache=True, inline="always")
def fill_two_level(run: np.ndarray, count: int, server: int, shared_of: np.ndarray, cap: np.ndarray,
                   capacity_bps: np.ndarray, link_off: np.ndarray, link_flows: np.ndarray, dirty: np.ndarray,
                   rate: np.ndarray, unfrozen: np.ndarray, left: np.ndarray, residual: np.ndarray, levels: np.ndarray,
                   live: np.ndarray, total: np.ndarray, unbounded: np.ndarray,
                   smallest: np.ndarray) -> None:  # pragma: no cover - compiled
    """Max-min rates of the running flows ``run[:count]`` into ``rate``
    (module docstring). ``shared_of[i] = [server, cell or -1]`` (checked by
    `two_level_server`); the member lists ``link_off``/``link_flows``, those
    of links with ``dirty`` > 0 out of cap order (sorted here when a walk or a
    cell's freeze needs their order, "Lazy sorting"); ``unfrozen`` (flows,
    all False on entry and exit), ``left``, ``residual``, ``levels``,
    ``live``, ``total``, ``unbounded``, ``smallest`` (links) are scratch."""
    links = capacity_bps.size
    for link in range(links):
        residual[link] = capacity_bps[link]
        left[link] = 0
        total[link] = 0.0
        unbounded[link] = 0
        live[link] = False
        smallest[link] = _INF
    direct = _INF  # the smallest cap of the flows in no cell
    # the server's sums in registers: through its array slot each flow would wait for the last one's store
    server_total = 0.0
    server_small = _INF
    server_unbounded = 0
    for r in range(count):  # the members' counts, cap sums (in run order, as _allocate) and smallest caps
        i = run[r]
        c = cap[i]
        rate[i] = c
        unfrozen[i] = True
        if c < server_small or c != c:  # a NaN sticks: the walk then runs as before
            server_small = c
        cell = shared_of[i, 1]
        if cell >= 0:
            left[cell] += 1
            if c < smallest[cell] or c != c:
                smallest[cell] = c
        elif c < direct or c != c:
            direct = c
        if c == _INF:
            server_unbounded += 1
            if cell >= 0:
                unbounded[cell] += 1
        else:
            server_total += c
            if cell >= 0:
                total[cell] += c
    left[server] = count
    total[server] = server_total  # 0.0 + the first cap is that cap: the same sum as adding into the slot
    smallest[server] = server_small
    unbounded[server] = server_unbounded
    # the levels' first steps written out: a call binds its array arguments, each an atomic reference
    # count (module docstring, "Inlining"), so `level_from` is called only where the walk goes on
    for link in range(links):
        if left[link]:
            live[link] = True
            room = max(residual[link], 0.0)
            if not (_INF if unbounded[link] else total[link]) > room:
                levels[link] = _INF
            elif room / left[link] <= smallest[link]:
                levels[link] = room / left[link]
            else:
                levels[link] = level_from(link, cap, unfrozen, left, _INF if unbounded[link] else total[link],
                                          smallest[link], residual, link_off, link_flows, dirty)
    while True:
        best = -1  # next_bottleneck, written out
        best_level = _INF
        for link in range(links):
            if live[link] and (best < 0 or levels[link] < best_level):
                best = link
                best_level = levels[link]
        if best < 0 or best_level == _INF:
            break  # no shared link left that can saturate: the unfrozen flows run at their caps
        live[best] = False
        if best == server:  # every unfrozen flow crosses it: all freeze (in any order), the filling ends
            for r in range(count):
                i = run[r]
                if unfrozen[i]:
                    rate[i] = min(cap[i], best_level)
            break
        if dirty[best]:  # the server loses the cell's rates and caps in cap order
            sort_link(best, link_off, link_flows, cap, dirty)
        start, stop = link_off[best], link_off[best + 1]
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
            if left[server]:  # its unfrozen flows: those in no cell and in the cells not frozen (all of theirs)
                low = direct
                for link in range(links):
                    if link != server and live[link] and left[link] and (smallest[link] < low
                                                                         or smallest[link] != smallest[link]):
                        low = smallest[link]
                room = max(residual[server], 0.0)
                if not (_INF if unbounded[server] else total[server]) > room:
                    levels[server] = _INF
                elif room / left[server] <= low:
                    levels[server] = room / left[server]
                else:
                    levels[server] = level_from(server, cap, unfrozen, left,
                                                _INF if unbounded[server] else total[server], low, residual,
                                                link_off, link_flows, dirty)
            else:
                live[server] = False
    for r in range(count):
        unfrozen[run[r]] = False
