"""The fluid max-min solver over multi-link paths as a compiled event loop (no SimPy processes).

`fedsim.system.network.path_schedule` replays a batch of flows on SimPy: one
process per flow that starts it and replays its client link's capacity
changes, a timeout per booked completion, a zero-delay event per
reallocation. Within a synchronous round the batch is a pure function of its
inputs (every start offset is known before it is scheduled), so SimPy adds
only bookkeeping: about 15 Python-level events per flow. `fast_path_schedule`
computes the *same* schedule in `fedsim.system.jitloop.schedule_loop`, one
compiled loop iteration per distinct instant at which something happens:

* the client links come as arrays, not as a callback: per flow a CSR list of
  breakpoints (`fedsim.system.dynamics.LinkBreakpoints`: the capacity at its
  start and every change up to a horizon), generated for the whole batch at
  once by the link series (`LinkSeries.breakpoints`; the AR(1) model's
  common interval grid compiled in `fedsim.system.jitlinks`);
* without a horizon (``until_s`` = inf) the listing covers a guess of the
  batch's length (`_guess_horizon`: a lower bound from the shared links'
  queues plus a margin); if a running flow outlives it, the loop stops and
  `fast_path_schedule` lists the links twice as far and runs the batch again
  (the same result: the batch is a pure function of its inputs);
* each instant replays what the SimPy engine does then, in the same order and
  with the same float operations (jitloop's module docstring), so the engines
  agree to rounding (tests/test_fast_engine.py and tests/test_jitloop.py hold
  them to 1e-9 on random batches and whole simulations).

Cost: O(E (n + S n log n)) for E instants and n flows with S shared links,
the same order as the SimPy engine, with E counted once per instant (not per
flow) and no Python inside the loop. The reference model and its sources are
in `fedsim.system.network` (Bertsekas & Gallager, *Data Networks*, 2nd ed.,
Sec. 6.5.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from fedsim.system.dynamics import LinkBreakpoints
from fedsim.system.jitloop import BAD_NEXT, NEED_HORIZON, schedule_loop
from fedsim.system.network import CapSource, PathSchedule

__all__ = ["LinkSource", "caps_breakpoints", "fast_path_schedule"]


#: ``links(horizon_s) -> LinkBreakpoints``: every flow's client link from its
#: start offset up to offset ``horizon_s`` (and its first change after it).
LinkSource = Callable[[float], LinkBreakpoints]


def caps_breakpoints(caps: CapSource, start_s: Sequence[float] | np.ndarray) -> LinkSource:
    """A `LinkSource` that walks a scalar `fedsim.system.network.CapSource`
    flow by flow from each start (a Python loop: for tests and sources without
    a vector form). A next change that is not after the offset asked for ends
    the flow's listing there (as its tail: `fast_path_schedule` raises)."""
    start = np.asarray(start_s, dtype=float).reshape(-1)

    def links(horizon_s: float) -> LinkBreakpoints:
        offsets, times, values, tails = [0], [], [], []
        for flow, first in enumerate(start.tolist()):
            cap_bps, next_s = caps(flow, first)
            times.append(first)
            values.append(cap_bps)
            while next_s <= horizon_s and next_s > times[-1]:
                times.append(next_s)
                cap_bps, next_s = caps(flow, next_s)
                values.append(cap_bps)
            offsets.append(len(times))
            tails.append(next_s)
        return LinkBreakpoints(np.array(offsets, dtype=np.int64), np.array(times, dtype=float),
                               np.array(values, dtype=float), np.array(tails, dtype=float))
    return links


def fast_path_schedule(
    start_s: Sequence[float] | np.ndarray,
    size_bytes: Sequence[float] | np.ndarray,
    links: LinkSource,
    shared_of: np.ndarray,
    capacity_bps: Sequence[float] | np.ndarray,
    *,
    until_s: float = math.inf,
) -> PathSchedule:
    """Simulate a batch of flows with known start offsets (module docstring);
    the arguments and result are those of `fedsim.system.network.path_schedule`
    except ``links``, the client links as breakpoints (`LinkSource`).

    Raises:
        ValueError: arrays that disagree in length, negative starts or sizes,
            a non-positive capacity.
        RuntimeError: a client link whose next change is not after the
            offset before it.
    """
    # C-contiguous float64/int64 arrays on every call: one compiled specialisation of the loop
    start = np.ascontiguousarray(np.asarray(start_s, dtype=float).reshape(-1))
    size = np.ascontiguousarray(np.asarray(size_bytes, dtype=float).reshape(-1))
    n = start.size
    shared = np.ascontiguousarray(np.asarray(shared_of, dtype=np.int64).reshape(n, -1))
    capacity = np.ascontiguousarray(np.asarray(capacity_bps, dtype=float).reshape(-1))
    if n != size.size:
        raise ValueError(f"flows disagree in length: {n} starts, {size.size} sizes")
    if n and (start.min() < 0 or size.min() < 0):
        raise ValueError("start offsets and sizes must be >= 0")
    if capacity.size and not capacity.min() > 0:
        raise ValueError(f"shared capacities must be > 0, got {capacity.tolist()}")
    order = np.argsort(start, kind="stable")
    order = order[start[order] <= until_s]  # a flow starting after the horizon never starts
    if order.size == 0:
        return PathSchedule(start, size, until_s, np.full(n, math.inf), np.zeros(n), np.zeros(0),
                            np.zeros((0, n)), np.zeros((0, n)))
    horizon = until_s if math.isfinite(until_s) else _guess_horizon(start, size, order, shared, capacity)
    while True:
        bp = links(horizon)
        status, flow, at_s, end, sent, _last, events, event_s, event_sent, event_rate = schedule_loop(
            start, size, order, *_contiguous(bp), shared, capacity, float(until_s))
        if status == NEED_HORIZON:  # a flow outlived the listing: list twice as far, run again
            horizon = 2.0 * max(horizon, at_s) + 1.0
            continue
        if status == BAD_NEXT:
            raise RuntimeError(f"flow {flow}: the link's next change {at_s} s is not after the offset before it")
        break
    out_sent = np.where(np.isfinite(end), size, np.clip(sent, 0.0, size))
    return PathSchedule(start, size, until_s, end, out_sent, event_s[:events], event_sent[:events],
                        event_rate[:events])


def _contiguous(bp: LinkBreakpoints) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The breakpoint arrays as C-contiguous int64 / float64 (the loop's one signature)."""
    return (np.ascontiguousarray(bp.offsets, dtype=np.int64), np.ascontiguousarray(bp.times_s, dtype=float),
            np.ascontiguousarray(bp.cap_bps, dtype=float), np.ascontiguousarray(bp.tail_s, dtype=float))


def _guess_horizon(start_s: np.ndarray, size_bytes: np.ndarray, order: np.ndarray, shared_of: np.ndarray,
                   capacity_bps: np.ndarray) -> float:
    """A horizon that most batches end by: Q, the time the busiest finite
    shared link alone would need to serve the flows in start order (the batch
    cannot end before it), plus twice the longest time one finite shared link
    needs for the bytes of its own flows, D (`fedsim.system.jitlinks.queue_finish`),
    at least 1 s, for slow client links; without a finite shared link, the
    last start plus 1 s. Any guess gives the same schedule (a short one costs
    a second run of the loop, a long one a longer listing). Until issue 15's
    speed work the margin counted every byte of the batch on the narrowest
    link: with cells, 3-5 times D (tests/test_ar1_listing.py)."""
    from fedsim.system.jitlinks import queue_finish  # numba, like the loop

    last_s = float(start_s[order[-1]])
    if not np.isfinite(capacity_bps).any():
        return last_s + 1.0
    q_s, drain_s = queue_finish(start_s, size_bytes, order, shared_of, capacity_bps)
    return max(float(q_s), last_s) + max(2.0 * float(drain_s), 1.0)
