"""The batch event loop of the fluid max-min model, compiled (numba).

`fedsim.system.fastnet.fast_path_schedule` hands a batch of flows to
`schedule_loop`: start offsets, sizes, the shared links each flow crosses,
and each flow's client link as *breakpoints* (a CSR list per flow: the
capacity at its start, then every change up to a horizon), instead of a
Python callback asked at every change. The loop is the one the SimPy engine
(`fedsim.system.network.path_schedule`) runs, one iteration per distinct
instant at which something happens, in the same order and with the same float
operations:

1. the instant is the earliest of the next start, the earliest next capacity
   change among the running flows, and the completion booked at the last
   reallocation;
2. integrate the bytes every running flow sent since the last instant;
3. at the booked completion, finish the flows within ``1e-9`` of their size
   (or at an infinite rate); if rounding left none, the closest one;
4. apply the client-link changes due now (a flow whose capacity really changes
   asks for a reallocation);
5. start the flows due now (empty ones are done at once);
6. if anything asked, one reallocation: max-min rates over the paths
   (`_allocate`), an entry in the event history, and the next completion
   booked (if it falls by ``until_s``).

`_allocate` is `fedsim.system.jitnet.path_max_min` (progressive filling:
the shared link of the smallest water level freezes its flows, the others'
residuals and levels are updated, again until no link can saturate) with two
changes that keep its numbers and take out its per-call sorting and scans:
each shared link keeps its flows in a list built once per batch, and that
list is sorted by cap when read (insertion sort, O(m) when one cap changed
since it was last sorted), so a water level is one pass over the link's
members instead of a gather and a sort of the running flows. Two shapes take
a shorter way with the same float operations: one shared link for every flow
(one water level), and the cells' two-level paths ``[server, cell or -1]``
(`fedsim.system.jitfill.fill_two_level`: scratch kept per batch, only the
server's level walked again after a cell freezes). On these two shapes a
list is sorted only when its order is needed (`fedsim.system.jitfill`, "Lazy
sorting"): a walk's first step needs only the smallest cap.

The running flows are always ``run[:count]``, in index order (a flow that
ends leaves it in the completion's pass, one that starts is inserted), so
the scans of an instant walk those flows only, not all n; the closest flow
of a rounding sliver (a division per flow) is sought only if none ended. Passing arrays to a compiled helper costs
an atomic reference-count increment and decrement per array and call, which
`perf` put at about a fifth of the loop's time: the per-flow steps of an
instant (a client link's next change, marking its links' member lists for
sorting) are written out in the loop, and the per-reallocation helpers
(`_sort_members`, `fedsim.system.jitfill`'s `level_from` and
`fill_two_level`) are inlined by numba (``inline="always"``), which
removes some of the counting (`fedsim.system.jitfill`, "Inlining"). All of
this was issue 15's speed work and leaves every number as it was
(tests/test_sync_speed_digests.py, tests/test_cells_speed_lazy.py).

Events at one instant are thus coalesced into one reallocation, exactly as
the SimPy engine folds them into one zero-delay event. Model and sources:
`fedsim.system.network` (Bertsekas & Gallager, *Data Networks*, 2nd ed.,
Sec. 6.5.2). Cost: O(E (n + S n)) for E instants, n flows and S shared
links (plus the insertion sorts after capacity changes), all of it compiled
(no per-instant Python).

Compilation: the first call in a process compiles `schedule_loop` and its
helpers (about 25 s on a loaded 2-core machine, most of it numba's type
inference of the callees and the lowering of the loop) unless numba's on-disk
cache (``cache=True``) holds them; then loading takes a fraction of a second.
Row and slice assignments of arrays, ``np.cumsum`` and ``np.concatenate`` are
written as plain loops: each such construct costs numba seconds to compile
(a row assignment alone about 7 s). docs/performance.md gives the figures.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fedsim.system.jitfill import (
    fill_two_level,
    level,
    level_from,
    next_bottleneck,
    sort_link,
    two_level_server,
)

__all__ = ["BAD_NEXT", "NEED_HORIZON", "OK", "schedule_loop"]

#: `schedule_loop`'s status codes.
OK, NEED_HORIZON, BAD_NEXT = 0, 1, 2

_INF = math.inf
_BITS_PER_BYTE = 8.0
_DONE_RTOL = 1e-9  # as in fedsim.system.network: a flow within this share of its size is done


@njit(cache=True)
def _grow(table: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``table`` (2-D) with twice the rows (the event history's storage).
    Plain loops: numba compiles a 2-D slice assignment in seconds."""
    bigger = np.empty((2 * table.shape[0], table.shape[1]))
    for r in range(table.shape[0]):
        for c in range(table.shape[1]):
            bigger[r, c] = table[r, c]
    return bigger


@njit(cache=True)
def _grow_1d(values: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``values`` with twice the room (the event instants)."""
    bigger = np.empty(2 * values.size)
    for r in range(values.size):
        bigger[r] = values[r]
    return bigger


@njit(cache=True)
def schedule_loop(start_s: np.ndarray, size_bytes: np.ndarray, order: np.ndarray, bp_off: np.ndarray,
                  bp_s: np.ndarray, bp_bps: np.ndarray, tail_s: np.ndarray, shared_of: np.ndarray,
                  capacity_bps: np.ndarray, until_s: float):  # pragma: no cover - compiled
    """Run the batch (module docstring).

    Args:
        start_s, size_bytes: the flows (float64, (n,)).
        order: the flows that start by ``until_s``, by start offset (stable).
        bp_off, bp_s, bp_bps: flow i's client link is entries
            ``bp_off[i]:bp_off[i + 1]`` (at least one): ``bp_s`` the offsets
            (s; the first is the flow's start, the others its changes,
            strictly increasing), ``bp_bps`` the capacity from then on.
        tail_s: flow i's first change after its last entry (inf: none); the
            loop stops with `NEED_HORIZON` if a running flow reaches it.
        shared_of, capacity_bps: the shared links ((n, p) int64, -1 padding;
            (S,) bits/s).
        until_s: the horizon (inf: run to the end).

    Returns:
        (status, flow, at_s, end_s, sent_bytes, last_s, event_count,
        event_s, event_sent, event_rate): `OK`; or `NEED_HORIZON` with the
        flow and offset where its listing ran out; or `BAD_NEXT` with a flow
        whose next change ``at_s`` is not after its current entry.
        ``sent_bytes`` holds the bytes at ``last_s`` (the last instant), the
        history its first ``event_count`` rows.
    """
    n = start_s.size
    cap = np.zeros(n)
    rate = np.zeros(n)
    sent = np.zeros(n)
    active = np.zeros(n, dtype=np.bool_)
    end = np.full(n, _INF)
    change_at = np.full(n, _INF)
    pos = np.zeros(n, dtype=np.int64)  # each started flow's current entry in bp_*
    run = np.empty(n, dtype=np.int64)
    link_off, link_flows = _members(shared_of, capacity_bps.size)
    single = _single_link(shared_of)
    dirty = np.zeros(capacity_bps.size, dtype=np.int64)  # per link: its members' cap changes since sorted
    unfrozen = np.zeros(n, dtype=np.bool_)
    members_left = np.zeros(capacity_bps.size, dtype=np.int64)
    server = two_level_server(shared_of, capacity_bps.size)  # cells: the two-level filling (jitfill)
    residual = np.empty(capacity_bps.size)
    levels = np.empty(capacity_bps.size)
    live = np.zeros(capacity_bps.size, dtype=np.bool_)
    fill_total = np.zeros(capacity_bps.size)
    fill_unbounded = np.zeros(capacity_bps.size, dtype=np.int64)
    fill_smallest = np.empty(capacity_bps.size)
    rows = 4 * n + 16
    event_s = np.empty(rows)
    event_sent = np.empty((rows, n))
    event_rate = np.empty((rows, n))
    events = 0
    next_start = 0
    last_s = 0.0
    booked = _INF
    count = 0  # the running flows: run[:count], in index order (kept as flows start and end)
    for i in range(n):  # the entries must increase: what the SimPy engine checks at every change
        for k in range(bp_off[i] + 1, bp_off[i + 1]):
            if not bp_s[k] > bp_s[k - 1]:
                return BAD_NEXT, i, bp_s[k], end, sent, last_s, 0, event_s, event_sent, event_rate
        if bp_off[i + 1] > bp_off[i] and not tail_s[i] > bp_s[bp_off[i + 1] - 1]:
            return BAD_NEXT, i, tail_s[i], end, sent, last_s, 0, event_s, event_sent, event_rate
    while True:
        t_start = start_s[order[next_start]] if next_start < order.size else _INF
        t_change = _INF
        for r in range(count):  # the flows not running have no next change (inf)
            if change_at[run[r]] < t_change:
                t_change = change_at[run[r]]
        t = min(t_start, t_change, booked)
        if t == _INF:
            break
        if t_change == t:  # a change past the listing: the caller extends the horizon
            for r in range(count):
                i = run[r]
                if change_at[i] == t and pos[i] + 1 >= bp_off[i + 1]:
                    return NEED_HORIZON, i, t, end, sent, last_s, events, event_s, event_sent, event_rate
        if t > last_s:  # integrate what the running flows sent since the last instant
            for r in range(count):
                i = run[r]
                sent[i] += rate[i] / _BITS_PER_BYTE * (t - last_s)
            last_s = t
        request = False
        if t == booked:  # the booked completion: flows within rounding of their size end
            booked = _INF
            kept = 0
            for r in range(count):  # those that end leave run (its index order kept) with rate 0
                i = run[r]
                left = size_bytes[i] - sent[i]
                if left <= _DONE_RTOL * size_bytes[i] or rate[i] == _INF:
                    active[i] = False
                    sent[i] = size_bytes[i]
                    end[i] = t
                    change_at[i] = _INF
                    rate[i] = 0.0
                else:
                    run[kept] = i
                    kept += 1
            if kept == count and count:  # rounding left a sliver: finish the closest flow
                closest = -1
                closest_s = _INF
                for r in range(count):  # in index order: the closest flow on ties is the lowest index
                    i = run[r]
                    wait = (size_bytes[i] - sent[i]) * _BITS_PER_BYTE / rate[i] if rate[i] > 0.0 else _INF
                    if closest < 0 or wait < closest_s:
                        closest, closest_s = r, wait
                i = run[closest]
                active[i] = False
                sent[i] = size_bytes[i]
                end[i] = t
                change_at[i] = _INF
                rate[i] = 0.0
                for r in range(closest, count - 1):
                    run[r] = run[r + 1]
                kept -= 1
            count = kept
            request = True
        if t_change == t:  # client links that change now (finished flows no longer listen)
            for r in range(count):
                i = run[r]
                if change_at[i] == t:
                    pos[i] += 1
                    k = pos[i]
                    if bp_bps[k] != cap[i]:
                        cap[i] = bp_bps[k]
                        for j in range(shared_of.shape[1]):  # its links' member lists need sorting
                            if shared_of[i, j] >= 0:
                                dirty[shared_of[i, j]] += 1
                        request = True
                    nxt = bp_s[k + 1] if k + 1 < bp_off[i + 1] else tail_s[i]  # the next change (tail: past the listing)
                    change_at[i] = nxt if nxt <= until_s else _INF
        while next_start < order.size and start_s[order[next_start]] == t:
            i = order[next_start]
            next_start += 1
            k = bp_off[i]
            pos[i] = k
            cap[i] = bp_bps[k]
            for j in range(shared_of.shape[1]):
                if shared_of[i, j] >= 0:
                    dirty[shared_of[i, j]] += 1
            if size_bytes[i] <= 0.0:
                end[i] = t
                continue
            active[i] = True
            r = count  # into run, in index order
            while r > 0 and run[r - 1] > i:
                run[r] = run[r - 1]
                r -= 1
            run[r] = i
            count += 1
            nxt = bp_s[k + 1] if k + 1 < bp_off[i + 1] else tail_s[i]
            change_at[i] = nxt if nxt <= until_s else _INF
            request = True
        if not request:
            continue
        # one reallocation at this instant (the running flows are run[:count]); book the next completion
        if count and single >= 0:  # every path is this one shared link: one water level
            members_left[single] = count
            total = 0.0
            smallest = _INF
            for r in range(count):
                c = cap[run[r]]
                total += c
                if c < smallest or c != c:
                    smallest = c
            room = max(capacity_bps[single], 0.0)  # level_from's first step written out (no call: jitfill)
            if not total > room:
                water = _INF
            elif room / count <= smallest:
                water = room / count
            else:
                water = level_from(single, cap, active, members_left, total, smallest, capacity_bps, link_off,
                                   link_flows, dirty)
            for r in range(count):
                rate[run[r]] = min(cap[run[r]], water)
        elif count and server >= 0:
            fill_two_level(run, count, server, shared_of, cap, capacity_bps, link_off, link_flows, dirty, rate,
                           unfrozen, members_left, residual, levels, live, fill_total, fill_unbounded, fill_smallest)
        elif count:
            _sort_members(link_off, link_flows, cap, dirty)
            _allocate(run[:count], cap, active, shared_of, capacity_bps, link_off, link_flows, rate, unfrozen,
                      members_left)
        if events == event_s.size:
            event_s = _grow_1d(event_s)
            event_sent = _grow(event_sent)
            event_rate = _grow(event_rate)
        event_s[events] = t
        sent_row = event_sent[events]  # through row views: about a quarter less time than 2-D indexing
        rate_row = event_rate[events]
        for i in range(n):  # element by element: a row assignment takes numba seconds to compile
            sent_row[i] = sent[i]
            rate_row[i] = rate[i]
        events += 1
        booked = _INF  # this reallocation supersedes the completion booked before (SimPy: a stale version)
        wait_s = _INF
        for r in range(count):
            i = run[r]
            left_s = (size_bytes[i] - sent[i]) * _BITS_PER_BYTE / rate[i] if rate[i] > 0.0 else _INF
            wait_s = min(wait_s, left_s)
        if math.isfinite(wait_s) and t + wait_s <= until_s:
            booked = t + max(wait_s, 0.0)
    # the flows still running at the horizon: their bytes up to it
    if math.isfinite(until_s) and until_s > last_s:
        for i in range(n):
            if active[i]:
                sent[i] += rate[i] / _BITS_PER_BYTE * (until_s - last_s)
    return OK, -1, 0.0, end, sent, last_s, events, event_s, event_sent, event_rate


@njit(cache=True)
def _members(shared_of: np.ndarray, links: int):  # pragma: no cover - compiled
    """Each shared link's flows as a CSR list (``offsets``, ``flows``), a
    flow once per link however often its path names it."""
    count = np.zeros(links + 1, dtype=np.int64)
    for i in range(shared_of.shape[0]):
        for j in range(shared_of.shape[1]):
            link = shared_of[i, j]
            if link >= 0 and not _named_before(shared_of, i, j):
                count[link + 1] += 1
    offsets = count  # running sums in place (np.cumsum costs a second of compilation)
    for link in range(links):
        offsets[link + 1] += offsets[link]
    flows = np.empty(offsets[-1], dtype=np.int64)
    fill = np.empty(links, dtype=np.int64)
    for link in range(links):
        fill[link] = offsets[link]
    for i in range(shared_of.shape[0]):
        for j in range(shared_of.shape[1]):
            link = shared_of[i, j]
            if link >= 0 and not _named_before(shared_of, i, j):
                flows[fill[link]] = i
                fill[link] += 1
    return offsets, flows


@njit(cache=True, inline="always")
def _named_before(shared_of: np.ndarray, i: int, j: int) -> bool:  # pragma: no cover - compiled
    """Whether flow ``i``'s path names its j-th link already before it."""
    for k in range(j):  # noqa: SIM110 (a plain loop compiles; a generator in any() does not)
        if shared_of[i, k] == shared_of[i, j]:
            return True
    return False


@njit(cache=True, inline="always")
def _sort_members(link_off: np.ndarray, link_flows: np.ndarray, cap: np.ndarray,
                  dirty: np.ndarray) -> None:  # pragma: no cover - compiled
    """Sort the member lists of the links with changed caps by cap
    (`fedsim.system.jitfill.sort_link`; the general allocator's paths)."""
    for link in range(dirty.size):
        sort_link(link, link_off, link_flows, cap, dirty)


@njit(cache=True)
def _allocate(run: np.ndarray, cap: np.ndarray, active: np.ndarray, shared_of: np.ndarray,
              capacity_bps: np.ndarray, link_off: np.ndarray, link_flows: np.ndarray, rate: np.ndarray,
              unfrozen: np.ndarray, left: np.ndarray) -> None:  # pragma: no cover - compiled
    """Max-min rates of the running flows ``run`` into ``rate`` (module
    docstring; the steps and float operations of
    `fedsim.system.network.path_max_min`). ``unfrozen`` and ``left`` are
    scratch arrays (flows; links: unfrozen members)."""
    links = capacity_bps.size
    residual = capacity_bps.copy()
    levels = np.full(links, _INF)
    live = np.zeros(links, dtype=np.bool_)
    for link in range(links):
        left[link] = 0
    total = np.zeros(links)  # the unfrozen members' finite caps per link (the water level's "fits" test)
    unbounded = np.zeros(links, dtype=np.int64)  # and how many are infinite
    for i in run:
        rate[i] = cap[i]
        unfrozen[i] = True
        for j in range(shared_of.shape[1]):
            if shared_of[i, j] >= 0 and not _named_before(shared_of, i, j):
                left[shared_of[i, j]] += 1
                if cap[i] == _INF:
                    unbounded[shared_of[i, j]] += 1
                else:
                    total[shared_of[i, j]] += cap[i]
    for link in range(links):
        if left[link]:
            live[link] = True
            levels[link] = level(link, cap, unfrozen, left, _INF if unbounded[link] else total[link], residual,
                                 link_off, link_flows)
    while True:
        best, best_level = next_bottleneck(live, levels)
        if best < 0:
            break
        live[best] = False
        if best_level == _INF:
            break  # no shared link can saturate: every unfrozen flow runs at its cap
        start, stop = link_off[best], link_off[best + 1]
        for a in range(start, stop):  # freeze the link's flows
            if unfrozen[link_flows[a]]:
                rate[link_flows[a]] = min(cap[link_flows[a]], best_level)
        for j in range(shared_of.shape[1]):  # column by column, as numpy's subtract.at (in cap order)
            for a in range(start, stop):
                i = link_flows[a]
                if unfrozen[i] and shared_of[i, j] >= 0:
                    residual[shared_of[i, j]] -= rate[i]
        for a in range(start, stop):
            i = link_flows[a]
            if unfrozen[i]:
                unfrozen[i] = False
                for j in range(shared_of.shape[1]):
                    link = shared_of[i, j]
                    if link >= 0 and not _named_before(shared_of, i, j):
                        left[link] -= 1
                        if cap[i] == _INF:
                            unbounded[link] -= 1
                        else:
                            total[link] -= cap[i]
                        if live[link] and link != best:
                            levels[link] = -1.0  # touched: recompute below
        for link in range(links):  # only the links the frozen flows cross change
            if live[link] and levels[link] == -1.0:
                if left[link]:
                    levels[link] = level(link, cap, unfrozen, left, _INF if unbounded[link] else total[link], residual,
                                 link_off, link_flows)
                else:
                    live[link] = False
    for i in run:
        unfrozen[i] = False


@njit(cache=True)
def _single_link(shared_of: np.ndarray) -> int:  # pragma: no cover - compiled
    """The one shared link that is every flow's whole path, else -1."""
    if shared_of.shape[0] == 0 or shared_of[0, 0] < 0:
        return -1
    for i in range(shared_of.shape[0]):
        for j in range(shared_of.shape[1]):
            if shared_of[i, j] != (shared_of[0, 0] if j == 0 else -1):
                return -1
    return shared_of[0, 0]
