"""Compiled kernels of the fluid max-min model (numba): the water level and the
max-min allocation over multi-link paths.

These are `fedsim.system.links.water_level` and
`fedsim.system.network.path_max_min` as plain loops compiled by numba
(`numba.njit`), with the same float operations in the same order, so they
agree with the numpy versions to rounding (tests/test_jitnet.py holds them to
1e-12 relative on random systems). The numpy versions stay the reference: they
are what the docs explain and what the SimPy engine uses; these are what the
event loops call at every event, where numpy's per-call overhead (about 1-5 µs
per call, tens of calls per reallocation) was the cost.

Algorithm (Bertsekas & Gallager, *Data Networks*, 2nd ed., Sec. 6.5.2), as in
`fedsim.system.network`: progressive filling over the shared links with the
client links as caps. A shared link's water level ``L`` solves
``sum over its unfrozen flows of min(c_i, L) = residual``; the link with the
smallest level freezes its flows at ``min(c_i, L)``, their rates leave the
residuals of the other links they cross, and the filling goes on until no
link can saturate. O(S n log n) per allocation for n flows and S shared links
whose paths hold one cell and the server's link.

Compilation: the first call in a process compiles (about a second) unless
numba's on-disk cache (``cache=True``, beside this file or in numba's user
cache directory) holds it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["next_bottleneck", "path_max_min", "water_level"]

_INF = math.inf


@njit(cache=True)
def water_level(caps: np.ndarray, capacity_bps: float) -> float:  # pragma: no cover - compiled
    """The level L with ``sum(min(caps, L)) == capacity_bps``, or inf when the
    caps sum to at most the capacity (`fedsim.system.links.water_level`)."""
    n = caps.size
    if n == 0:
        return _INF
    total = 0.0
    for i in range(n):
        total += caps[i]
    if not total > capacity_bps:
        return _INF
    ordered = np.sort(caps)
    below = 0.0  # the sum of the q smallest caps
    for q in range(n):
        level = (capacity_bps - below) / (n - q)
        if level <= ordered[q]:
            return level
        below += ordered[q]
    return capacity_bps / n  # unreachable but for NaN caps (numpy's argmax of none: the first level)


@njit(cache=True, inline="always")
def next_bottleneck(live: np.ndarray, levels: np.ndarray) -> tuple[int, float]:  # pragma: no cover - compiled
    """The next link progressive filling freezes: the first live link of the
    smallest water level, and that level; (-1, inf) when none is live. Shared
    by the allocators here, in `fedsim.system.jitloop` and in
    `fedsim.system.jitfill`, and inlined into them (numba ``inline="always"``:
    no array reference counts per call, `fedsim.system.jitfill` "Inlining")."""
    best = -1
    best_level = _INF
    for link in range(levels.size):
        if live[link] and (best < 0 or levels[link] < best_level):
            best = link
            best_level = levels[link]
    return best, best_level


@njit(cache=True)
def _level_of(link: int, cap: np.ndarray, shared_of: np.ndarray, unfrozen: np.ndarray,
              residual: np.ndarray, buf: np.ndarray) -> float:  # pragma: no cover - compiled
    """The water level of shared link ``link`` over its unfrozen flows (inf: it
    cannot saturate)."""
    count = 0
    for i in range(cap.size):
        if unfrozen[i]:
            for j in range(shared_of.shape[1]):
                if shared_of[i, j] == link:
                    buf[count] = cap[i]
                    count += 1
                    break
    room = max(residual[link], 0.0)
    return water_level(buf[:count], room)


@njit(cache=True)
def path_max_min(cap_bps: np.ndarray, shared_of: np.ndarray, capacity_bps: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Max-min fair rates (bits/s) of flows over multi-link paths: the
    arguments and result of `fedsim.system.network.path_max_min` (``cap_bps``
    float64 (n,), ``shared_of`` int64 (n, p) with -1 padding, ``capacity_bps``
    float64 (S,))."""
    n = cap_bps.size
    rate = cap_bps.copy()
    if n == 0:
        return rate
    links = capacity_bps.size
    residual = capacity_bps.copy()
    unfrozen = np.ones(n, dtype=np.bool_)
    frozen_now = np.zeros(n, dtype=np.bool_)
    buf = np.empty(n)
    live = np.zeros(links, dtype=np.bool_)  # the links still in the filling (numpy version: `levels`)
    level = np.full(links, _INF)
    touched = np.zeros(links, dtype=np.bool_)
    for i in range(n):
        for j in range(shared_of.shape[1]):
            if shared_of[i, j] >= 0:
                live[shared_of[i, j]] = True
    for link in range(links):
        if live[link]:
            level[link] = _level_of(link, cap_bps, shared_of, unfrozen, residual, buf)
    while True:
        best, best_level = next_bottleneck(live, level)
        if best < 0:
            break
        live[best] = False
        if best_level == _INF:
            break  # no shared link can saturate: every unfrozen flow runs at its cap
        for i in range(n):
            frozen_now[i] = False
            if unfrozen[i]:
                for j in range(shared_of.shape[1]):
                    if shared_of[i, j] == best:
                        frozen_now[i] = True
                        break
            if frozen_now[i]:
                rate[i] = min(cap_bps[i], best_level)
                unfrozen[i] = False
        for j in range(shared_of.shape[1]):  # column by column, as numpy's subtract.at
            for i in range(n):
                if frozen_now[i] and shared_of[i, j] >= 0:
                    residual[shared_of[i, j]] -= rate[i]
        touched[:] = False
        for i in range(n):
            if frozen_now[i]:
                for j in range(shared_of.shape[1]):
                    if shared_of[i, j] >= 0:
                        touched[shared_of[i, j]] = True
        for link in range(links):  # only the links the frozen flows cross change
            if touched[link] and live[link]:
                carries = False
                for k in range(n):
                    if unfrozen[k]:
                        for m in range(shared_of.shape[1]):
                            if shared_of[k, m] == link:
                                carries = True
                                break
                    if carries:
                        break
                if carries:
                    level[link] = _level_of(link, cap_bps, shared_of, unfrozen, residual, buf)
                else:
                    live[link] = False
    return rate
