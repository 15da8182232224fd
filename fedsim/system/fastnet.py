"""The fluid max-min solver over multi-link paths as a plain event loop (no SimPy processes).

`fedsim.system.network.path_schedule` replays a batch of flows on SimPy: one
process per flow that starts it and replays its client link's capacity
changes, a timeout per booked completion, a zero-delay event per
reallocation. Within a synchronous round the batch is a pure function of its
inputs (every start offset is known before it is scheduled), so SimPy adds
only bookkeeping: about 15 Python-level events per flow. `fast_path_schedule`
computes the *same* schedule with one loop iteration per distinct instant at
which something happens, every step vectorised over the flows with numpy:

* the capacity breakpoints come from a vectorised source (`VecCapSource`:
  the capacities of many flows' client links at many offsets at once, and
  their next change), so a change of every client link at one instant (the
  AR(1) model's common interval grid, `fedsim.system.dynamics`) is one step;
* the next instant is the earliest of the next start, the earliest next
  capacity change among the running flows, and the completion booked at the
  last reallocation;
* the steps replay what the SimPy engine does at that instant, in the same
  order and with the same float operations (integrate the bytes sent since the
  last change, finish the flows within ``1e-9`` of their size or the closest
  one, start flows, apply changed caps, then one reallocation by
  `fedsim.system.network.path_max_min` if anything asked for it), so the two
  engines agree to rounding (tests/test_fast_engine.py holds them to 1e-9
  on random batches and whole simulations).

Cost: O(E (n + S n log n)) for E instants and n flows with S shared links,
the same order as the SimPy engine, but with E counted once per instant (not
per flow) and the work inside an instant in numpy. The reference model and
its sources are in `fedsim.system.network` (Bertsekas & Gallager, *Data
Networks*, 2nd ed., Sec. 6.5.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from fedsim.system.network import CapSource, PathSchedule, path_max_min

__all__ = ["VecCapSource", "fast_path_schedule", "vectorize_caps"]

_BITS_PER_BYTE = 8.0
_DONE_RTOL = 1e-9  # as in fedsim.system.network: a flow within this share of its size is done

#: ``caps(flows, t_s) -> (cap_bps, next_change_s)``: for each flow index in
#: ``flows`` (int array), its client link's capacity at offset ``t_s[i]`` and
#: the next offset after it where the capacity changes (inf: never).
VecCapSource = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def vectorize_caps(caps: CapSource) -> VecCapSource:
    """A `VecCapSource` from a scalar `fedsim.system.network.CapSource` (a
    Python loop over the flows: for tests and sources without a vector form)."""
    def vec(flows: np.ndarray, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = [caps(int(f), float(t)) for f, t in zip(flows.tolist(), t_s.tolist(), strict=True)]
        if not pairs:
            return np.zeros(0), np.zeros(0)
        cap, nxt = zip(*pairs, strict=True)
        return np.array(cap, dtype=float), np.array(nxt, dtype=float)
    return vec


def fast_path_schedule(
    start_s: Sequence[float] | np.ndarray,
    size_bytes: Sequence[float] | np.ndarray,
    caps: VecCapSource,
    shared_of: np.ndarray,
    capacity_bps: Sequence[float] | np.ndarray,
    *,
    until_s: float = math.inf,
) -> PathSchedule:
    """Simulate a batch of flows with known start offsets (module docstring);
    the arguments and result are those of `fedsim.system.network.path_schedule`
    except ``caps``, which is vectorised (`VecCapSource`).

    Raises:
        ValueError: arrays that disagree in length, negative starts or sizes,
            a non-positive capacity.
        RuntimeError: a capacity source whose next change is not after the
            offset asked for.
    """
    start = np.asarray(start_s, dtype=float).reshape(-1)
    size = np.asarray(size_bytes, dtype=float).reshape(-1)
    n = start.size
    shared = np.asarray(shared_of, dtype=np.int64).reshape(n, -1)
    capacity = np.asarray(capacity_bps, dtype=float).reshape(-1)
    if n != size.size:
        raise ValueError(f"flows disagree in length: {n} starts, {size.size} sizes")
    if n and (start.min() < 0 or size.min() < 0):
        raise ValueError("start offsets and sizes must be >= 0")
    if capacity.size and not capacity.min() > 0:
        raise ValueError(f"shared capacities must be > 0, got {capacity.tolist()}")

    inf = math.inf
    cap = np.zeros(n)
    rate = np.zeros(n)  # bits/s
    sent = np.zeros(n)  # bytes
    active = np.zeros(n, dtype=bool)
    done = np.zeros(n, dtype=bool)
    end = np.full(n, inf)
    change_at = np.full(n, inf)  # next capacity change of a started, unfinished flow (inf: none)
    order = np.argsort(start, kind="stable")
    order = order[start[order] <= until_s]  # a flow starting after the horizon never starts
    start_sorted = start[order]
    # every start offset is known now: ask for the links at the starts in one call
    first_cap, first_next = caps(order, start_sorted) if order.size else (np.zeros(0), np.zeros(0))
    _check_next(order, first_next, start_sorted)
    next_start = 0  # index into order
    last_s = 0.0
    booked = inf  # the completion booked at the last reallocation
    times: list[float] = []
    sent_hist: list[np.ndarray] = []
    rate_hist: list[np.ndarray] = []
    single = _single_link(shared)

    with np.errstate(divide="ignore"):  # a zero rate (a saturated path): an infinite wait, as intended
        while True:
            t = start_sorted[next_start] if next_start < order.size else inf
            t_change = change_at.min() if n else inf
            t = min(t, t_change, booked)
            if t == inf:
                break
            # integrate what the running flows sent since the last change
            if t > last_s:
                if active.any():
                    sent[active] += rate[active] / _BITS_PER_BYTE * (t - last_s)
                last_s = t
            request = False
            if t == booked:  # the booked completion: flows within rounding of their size end
                booked = inf
                run = active.nonzero()[0]
                left = size[run] - sent[run]
                finished = run[(left <= _DONE_RTOL * size[run]) | (rate[run] == inf)]
                if finished.size == 0:  # rounding left a sliver: finish the closest flow
                    finished = run[[int(np.argmin(left * _BITS_PER_BYTE / rate[run]))]]
                active[finished] = False
                done[finished] = True
                sent[finished] = size[finished]
                end[finished] = t
                change_at[finished] = inf
                request = True
            if t_change == t:  # client links that change now (finished flows no longer listen)
                flows = (change_at == t).nonzero()[0]
                new_cap, new_next = caps(flows, np.full(flows.size, t))
                _check_next(flows, new_next, t)
                changed = cap[flows] != new_cap
                if changed.any():
                    cap[flows] = new_cap
                    request = True
                change_at[flows] = np.where(new_next <= until_s, new_next, inf)
            if next_start < order.size and start_sorted[next_start] == t:
                stop = int(np.searchsorted(start_sorted, t, side="right"))
                flows = order[next_start:stop]
                new_cap, new_next = first_cap[next_start:stop], first_next[next_start:stop]
                next_start = stop
                cap[flows] = new_cap
                empty = size[flows] <= 0.0
                done[flows[empty]] = True
                end[flows[empty]] = t
                running = flows[~empty]
                active[running] = True
                change_at[running] = np.where(new_next[~empty] <= until_s, new_next[~empty], inf)
                request = request or running.size > 0
            if not request:
                continue
            # one reallocation at this instant; book the next completion
            run = active.nonzero()[0]
            rate[:] = 0.0
            if run.size:
                rate[run] = (np.minimum(cap[run], _level(cap[run], capacity[single])) if single >= 0
                             else path_max_min(cap[run], shared[run], capacity))
            times.append(t)
            sent_hist.append(sent.copy())
            rate_hist.append(rate.copy())
            if run.size:
                wait_s = float(((size[run] - sent[run]) * _BITS_PER_BYTE / rate[run]).min())
                if math.isfinite(wait_s) and t + wait_s <= until_s:
                    booked = t + max(wait_s, 0.0)
    if math.isfinite(until_s) and until_s > last_s and active.any():
        sent[active] += rate[active] / _BITS_PER_BYTE * (until_s - last_s)
    out_sent = np.where(done, size, np.clip(sent, 0.0, size))
    if times:
        event_s, event_sent, event_rate = np.array(times), np.array(sent_hist), np.array(rate_hist)
    else:
        event_s, event_sent, event_rate = np.zeros(0), np.zeros((0, n)), np.zeros((0, n))
    return PathSchedule(start, size, until_s, end, out_sent, event_s, event_sent, event_rate)


def _single_link(shared: np.ndarray) -> int:
    """The one shared link every flow crosses when that is each flow's whole
    path (then max-min is one water level), else -1."""
    if shared.shape[0] == 0 or shared[0, 0] < 0 or not (shared[:, 0] == shared[0, 0]).all():
        return -1
    return int(shared[0, 0]) if (shared[:, 1:] < 0).all() else -1


def _level(cap_bps: np.ndarray, capacity_bps: float) -> float:
    """`fedsim.system.links.water_level` (the same operations; inlined for
    speed): the level L with ``sum(min(cap, L)) == capacity``, inf if the caps
    fit."""
    caps = np.sort(cap_bps)
    n = caps.size
    if not caps.sum() > capacity_bps:
        return math.inf
    below = np.empty(n)
    below[0] = 0.0
    np.cumsum(caps[:-1], out=below[1:])
    with np.errstate(invalid="ignore"):
        levels = (capacity_bps - below) / (n - np.arange(n))
    return float(levels[int(np.argmax(levels <= caps))])


def _check_next(flows: np.ndarray, next_s: np.ndarray, t_s: float) -> None:
    bad = ~(next_s > t_s)
    if bad.any():
        flow = int(flows[np.argmax(bad)])
        raise RuntimeError(f"flow {flow}: the link's next change {next_s[np.argmax(bad)]} s is not after now {t_s} s")
