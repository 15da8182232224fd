"""Compiled steps of `fedsim.system.async_flows.PathFlows` (numba): one call per flow event.

`PathFlows` keeps the running flows of one direction in per-slot arrays
(bytes sent, size, cap, rate, next client-link change, predicted end). Each of
its events (a flow starts, stops, finishes, or a client link changes) used to
cost a dozen numpy calls plus `fedsim.system.network.path_max_min`; here each
is one compiled call that integrates the bytes sent since the last event,
applies the change, and reallocates with the compiled max-min
(`fedsim.system.jitnet.path_max_min`, Bertsekas & Gallager, *Data Networks*,
2nd ed., Sec. 6.5.2). The float operations are the numpy version's, element by
element and in the same order (tests/test_async_flows_jit.py holds the two to
the same schedule on random event sequences with capacity steps and cells).

Compilation: the first call in a process compiles (a second or two) unless
numba's on-disk cache (``cache=True``) holds it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fedsim.system.jitnet import path_max_min

__all__ = ["CAP", "CHANGE", "END", "RATE", "ROWS", "SENT", "SIZE", "advance", "reallocate", "step_due"]

#: The rows of the per-slot state matrix ``state`` (float64, shape (ROWS, slots)):
#: flow size and bytes sent (bytes), client-link cap and allocated rate (bits/s),
#: the next change of the client link and the predicted completion (s).
SIZE, SENT, CAP, RATE, CHANGE, END = range(6)
ROWS = 6
_BITS_PER_BYTE = 8.0
_INF = math.inf


@njit(cache=True, error_model="numpy")
def advance(now_s: float, t_s: float, state: np.ndarray) -> float:  # pragma: no cover - compiled
    """Integrate every slot's bytes from ``now_s`` to ``t_s`` at its rate (idle
    slots have rate 0); the new ``now_s``."""
    if t_s > now_s:
        dt = (t_s - now_s) / _BITS_PER_BYTE
        for i in range(state.shape[1]):
            state[SENT, i] += state[RATE, i] * dt
        return t_s
    return now_s


@njit(cache=True, error_model="numpy")
def reallocate(now_s: float, t_s: float, state: np.ndarray, active: np.ndarray, shared: np.ndarray,
               capacity_bps: np.ndarray) -> tuple[float, float]:  # pragma: no cover - compiled
    """Advance to ``t_s`` (`step_due`), then the max-min rates of the active
    slots (``shared``: their shared links, (slots, p), -1 padding) and their
    predicted ends at those rates. Writes the RATE (0 when idle) and END (inf
    when idle) rows; returns (the new now_s, the next completion or
    client-link change; inf: none)."""
    now_s = advance(now_s, t_s, state)
    slots = active.size
    count = 0
    for i in range(slots):
        state[RATE, i] = 0.0
        state[END, i] = _INF
        if active[i]:
            count += 1
    if count == 0:
        return now_s, _INF
    index = np.empty(count, dtype=np.int64)
    cap = np.empty(count)
    paths = np.empty((count, shared.shape[1]), dtype=np.int64)
    j = 0
    for i in range(slots):
        if active[i]:
            index[j] = i
            cap[j] = state[CAP, i]
            paths[j] = shared[i]
            j += 1
    rates = path_max_min(cap, paths, capacity_bps)
    next_end = _INF
    next_change = _INF
    for j in range(count):
        i = index[j]
        state[RATE, i] = rates[j]
        end = now_s + (state[SIZE, i] - state[SENT, i]) * _BITS_PER_BYTE / rates[j]
        state[END, i] = end
        if j == 0 or end < next_end:
            next_end = end
        if j == 0 or state[CHANGE, i] < next_change:
            next_change = state[CHANGE, i]
    return now_s, min(next_end, next_change)


@njit(cache=True, error_model="numpy")
def step_due(now_s: float, t_s: float, done_rtol: float, state: np.ndarray, active: np.ndarray,
             finished: np.ndarray, changed: np.ndarray) -> tuple[float, int, int]:  # pragma: no cover - compiled
    """Advance to ``t_s``: every slot's bytes integrated at its rate since
    ``now_s``. The active slots whose flows are then done (predicted end
    reached, or within ``done_rtol`` of their size) become idle with all bytes
    sent, listed in ``finished``; then the still active slots whose client
    link changes by ``t_s`` are listed in ``changed`` (the caller sets their
    CAP and CHANGE, then calls `reallocate`). Returns (the new now_s, number
    finished, number changed), both lists in slot order."""
    now_s = advance(now_s, t_s, state)
    n_done = 0
    for i in range(active.size):
        if active[i] and (state[END, i] <= t_s
                          or state[SIZE, i] - state[SENT, i] <= done_rtol * state[SIZE, i]):
            finished[n_done] = i
            n_done += 1
    for j in range(n_done):
        i = finished[j]
        active[i] = False
        state[SENT, i] = state[SIZE, i]
    n_changed = 0
    for i in range(active.size):
        if active[i] and state[CHANGE, i] <= t_s:
            changed[n_changed] = i
            n_changed += 1
    return now_s, n_done, n_changed
