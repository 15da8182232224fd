"""The compiled asynchronous loop's event heap (numba): push and pop of timed events.

`fedsim.system.async_loop` and the compiled server (`fedsim.system.
async_server`) keep every pending event of the asynchronous schedule (an
update's phases and drops, the server's steps and retries) on one binary heap
of arrays owned by the caller: ``heap_t`` the times (s), ``heap_i`` four rows
(priority, sequence number, kind, update). Events are ordered by (time,
priority, sequence number), as `heapq` orders the tuples of the Python
reference (`fedsim.system.asynchronous.Protocol.push`;
tests/test_async_flows_jit.py holds the pops to heapq's order, ties
included). The sequence counter and the heap's size live in the loop's
integer scalars (``sc_i[SEQ]``, ``sc_i[HEAP_N]``; indices 0 and 1, fixed
here so that this module needs nothing of the loop's).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["HEAP_N", "SEQ", "new_heap", "pop", "push"]

#: Indices of the sequence counter and of the heap's size in the loop's ``sc_i``.
SEQ, HEAP_N = 0, 1
_INF = math.inf


def new_heap(capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """An empty event heap with room for ``capacity`` events."""
    return np.full(capacity, _INF), np.zeros((4, capacity), dtype=np.int64)


@njit(cache=True)
def _earlier(t_s: float, prio: int, seq: int, t2_s: float, prio2: int, seq2: int) -> bool:  # pragma: no cover
    """Event (t_s, prio, seq) comes before (t2_s, prio2, seq2) on the heap: by
    time, then priority, then push order."""
    return t_s < t2_s or (t_s == t2_s and (prio < prio2 or (prio == prio2 and seq < seq2)))


@njit(cache=True)
def push(heap_t: np.ndarray, heap_i: np.ndarray, sc_i: np.ndarray, t_s: float, prio: int, kind: int,
         u: int) -> None:  # pragma: no cover - compiled
    """Push an event (the caller keeps room, see `fedsim.system.async_loop`'s
    ``GROW``); ties broken by priority, then by the order of pushes."""
    sc_i[SEQ] += 1
    seq = sc_i[SEQ]
    i = sc_i[HEAP_N]
    sc_i[HEAP_N] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        pt, pp, ps = heap_t[parent], heap_i[0, parent], heap_i[1, parent]
        if _earlier(t_s, prio, seq, pt, pp, ps):
            heap_t[i] = pt
            heap_i[:, i] = heap_i[:, parent]
            i = parent
        else:
            break
    heap_t[i] = t_s
    heap_i[0, i], heap_i[1, i], heap_i[2, i], heap_i[3, i] = prio, seq, kind, u


@njit(cache=True)
def pop(heap_t: np.ndarray, heap_i: np.ndarray, sc_i: np.ndarray) -> tuple[int, int]:  # pragma: no cover
    """Remove the first event; its (kind, update)."""
    kind, u = heap_i[2, 0], heap_i[3, 0]
    n = sc_i[HEAP_N] - 1
    sc_i[HEAP_N] = n
    t_s, prio, seq = heap_t[n], heap_i[0, n], heap_i[1, n]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n:
            ct, cp, cs = heap_t[child + 1], heap_i[0, child + 1], heap_i[1, child + 1]
            if _earlier(ct, cp, cs, heap_t[child], heap_i[0, child], heap_i[1, child]):
                child += 1
        ct, cp, cs = heap_t[child], heap_i[0, child], heap_i[1, child]
        if _earlier(ct, cp, cs, t_s, prio, seq):
            heap_t[i] = ct
            heap_i[:, i] = heap_i[:, child]
            i = child
        else:
            break
    heap_t[i] = t_s
    heap_i[:, i] = heap_i[:, n]
    heap_t[n] = _INF
    return kind, u
