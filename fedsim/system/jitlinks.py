"""Compiled generation of AR(1) client links (numba) for the fast engine.

`fedsim.system.dynamics.AR1Series` keeps every client's log factors in a
dense table (a window of intervals); `ar1_chunk` extends it by a chunk of
intervals (the recursion ``x_{j+1} = rho x_j + sqrt(1 - rho^2) sigma
eps_{j+1}`` over all rows, the same float operations as the scalar
`AR1Series.log_factors`), and `ar1_breakpoints` lists a batch's links over a
round's window as the CSR breakpoints the compiled event loop reads
(`fedsim.system.jitloop`), computing an interval's factor exp(X) the first
time it lists it (`ar1_exp`: a whole block at once, unused by the engine).
These were numpy loops with one call per interval or a dozen calls per batch;
here they are plain loops. `queue_finish` bounds a batch's length from its
shared links for `fedsim.system.fastnet`'s horizon guess. The model and its sources: `fedsim.system.dynamics`
and docs/network-model.md ("LTE-like variation").
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["ar1_breakpoints", "ar1_chunk", "ar1_exp", "queue_finish"]


@njit(cache=True)
def ar1_chunk(table: np.ndarray, col: int, eps: np.ndarray, rho: float, step: float,
              sigma: float) -> None:  # pragma: no cover - compiled
    """Fill ``table[:, col:col + eps.shape[1]]`` with the AR(1) log factors
    of `fedsim.system.dynamics.AR1Series` from innovations ``eps`` (one row per
    client): ``x_0 = sigma eps_0`` at column 0, else ``x = rho x_prev + step
    eps`` from column ``col - 1`` (the same float operations as the scalar
    `AR1Series.log_factors`)."""
    for r in range(table.shape[0]):
        x = eps[r, 0] * sigma if col == 0 else table[r, col - 1]
        for j in range(eps.shape[1]):
            if j or col:
                x = rho * x + step * eps[r, j]
            table[r, col + j] = x


@njit(cache=True)
def ar1_exp(table: np.ndarray, factor: np.ndarray, first: int, stop: int, col: int,
            count: int) -> None:  # pragma: no cover - compiled
    """``factor[first:stop, col:col + count] = exp(table[...])``: each
    interval's capacity factor, exponentiated once when it is drawn (not once
    per round that lists it), with the ``math.exp`` `ar1_breakpoints` used."""
    for r in range(first, stop):
        for j in range(col, col + count):
            factor[r, j] = math.exp(table[r, j])


@njit(cache=True)
def ar1_breakpoints(rows: np.ndarray, base_bps: np.ndarray, start_s: np.ndarray, t0_s: float, step_s: float,
                    last: int, factor: np.ndarray, col0: int, table: np.ndarray):  # pragma: no cover - compiled
    """The breakpoints of AR(1) links (`fedsim.system.dynamics.AR1Series`)
    for flows starting ``start_s`` after ``t0_s``: flow i (its client's
    factors ``exp(X_j)`` in ``factor[rows[i], j - col0]``, computed from
    ``table[rows[i], j - col0]`` (X) with `ar1_exp`'s ``math.exp`` where
    still NaN, i.e. the first time an interval is listed), median
    ``base_bps[i]``) lists the
    interval j_i holding ``t0_s + start_s[i]`` (the next one where the offset
    rounds to just before its change, as `AR1Series.segment` answers twice),
    then the grid changes ``j step_s - t0_s`` up to grid point ``last``.

    Returns:
        (offsets, times_s, cap_bps, tail_s) of `fedsim.system.dynamics.LinkBreakpoints`.
    """
    n = start_s.size
    first = np.empty(n, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        t_s = t0_s + start_s[i]
        j = max(math.floor(t_s / step_s), 0)
        if (j + 1) * step_s <= t_s:  # floor rounded down across a boundary
            j += 1
        if (j + 1) * step_s - t0_s <= start_s[i]:  # t0 + offset rounded to just before a change
            j += 1
        first[i] = j
        offsets[i + 1] = offsets[i] + max(last - j, 0) + 1
    times = np.empty(offsets[n])
    cap = np.empty(offsets[n])
    tail = np.empty(n)
    for i in range(n):
        j = first[i]
        for k in range(offsets[i], offsets[i + 1]):
            times[k] = start_s[i] if k == offsets[i] else j * step_s - t0_s
            f = factor[rows[i], j - col0]
            if f != f:  # not listed before: exp(X) once, kept for the next listings
                f = math.exp(table[rows[i], j - col0])
                factor[rows[i], j - col0] = f
            cap[k] = base_bps[i] * f
            j += 1
        tail[i] = j * step_s - t0_s
    return offsets, times, cap, tail


@njit(cache=True)
def queue_finish(start_s: np.ndarray, size_bytes: np.ndarray, order: np.ndarray, shared_of: np.ndarray,
                 capacity_bps: np.ndarray) -> tuple[float, float]:  # pragma: no cover - compiled
    """(Q, D) of a batch's finite shared links: Q is the latest time a link
    ``s`` would finish its flows' bytes if it were their only limit, served
    work-conserving in start order (``f_s = max(f_s, start_i) + 8 size_i /
    capacity_s`` over the flows ``order`` on s; -inf without a finite link);
    D the longest time one of them needs for all its flows' bytes (s). A fluid
    batch cannot end before Q; `fedsim.system.fastnet` guesses its horizon
    from both."""
    finish = np.full(capacity_bps.size, -np.inf)
    drain = np.zeros(capacity_bps.size)
    for i in order:
        for c in range(shared_of.shape[1]):
            s = shared_of[i, c]
            if s >= 0 and math.isfinite(capacity_bps[s]):
                busy = 8.0 * size_bytes[i] / capacity_bps[s]
                finish[s] = max(finish[s], start_s[i]) + busy
                drain[s] += busy
    return finish.max(), drain.max()
