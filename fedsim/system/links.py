"""A server link shared max-min fairly by many flows: a fluid (flow-level) model.

A flow is a transfer of ``size_bytes`` that starts at ``start_s`` and is capped
by its own client's link at ``cap_bps``. All flows in one direction share the
server's link of ``capacity_bps``. At every instant the rates are the max-min
fair allocation (Bertsekas & Gallager, *Data Networks*, 2nd ed., Sec. 6.5.2):
with the water level L defined by ``sum_i min(cap_i, L) = capacity``, flow i
gets ``min(cap_i, L)``; if the caps sum to at most the capacity, every flow runs
at its cap. Rates are recomputed whenever a flow starts or ends, so between
two such events every rate is constant (the fluid model of flow-level network
simulators; e.g. SimGrid's, Velho et al., ACM TOMACS 23(4), 2013). This is not a
FIFO queue (flows progress together) and not a static split (a finished flow's
share goes to the others).

``fluid_schedule`` computes the whole schedule of a batch of flows whose start
times are known in advance, which is always the case within a synchronous
round: all downloads start when the round starts, and every upload starts when
its client's computation ends, which follows from the download schedule alone
because the two directions use separate capacities (server egress and ingress).

Algorithm (progressive filling over events, O((n + m) log n) for n flows and m
group changes, typically m ~ n):

* a flow is either *capped* (``cap < L``: it runs at its cap, so its finish time
  is known) or *at the level* (it runs at L: it finishes when the integral
  V(t) = ∫ L dt has grown by its remaining bytes, so a finish *tag* in V is
  known, as in fair queueing's virtual time);
* two heaps order the finish times and the finish tags; two more order the caps
  of each group, so that after an arrival (L falls) the largest capped flows
  join the level and after a completion (L rises) the smallest level flows
  become capped, each move O(log n);
* between events nothing is touched: the next event is the earliest of the next
  arrival, the earliest capped finish time, and ``now + (tag - V) / L``.

Fast paths, all exact: an infinite capacity or flows whose caps never sum above
the capacity (each flow runs at its cap), and flows that all start together
with one size (one water level; the flows at the level finish together, the
capped ones keep their caps, so each flow's rate is constant to its end).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import simpy

__all__ = ["FluidSchedule", "SharedLink", "fluid_schedule", "max_min_rates", "water_level"]

_BITS_PER_BYTE = 8.0


def water_level(cap_bps: np.ndarray, capacity_bps: float) -> float:
    """The max-min fair level L of flows with caps ``cap_bps`` sharing
    ``capacity_bps``: ``sum(min(cap, L)) == capacity``, or ``inf`` when the caps
    sum to at most the capacity (nobody is limited by the shared link).

    Example: caps 2 and 20 Mbps on a 10 Mbps link -> L = 8 Mbps.
    """
    caps = np.sort(np.asarray(cap_bps, dtype=float))
    n = caps.size
    if n == 0 or not caps.sum() > capacity_bps:
        return math.inf
    below = np.concatenate(([0.0], np.cumsum(caps[:-1])))  # sum of the q smallest caps
    with np.errstate(invalid="ignore"):
        levels = (capacity_bps - below) / (n - np.arange(n))
    first = int(np.argmax(levels <= caps))  # first q whose level does not exceed cap q
    return float(levels[first])


def max_min_rates(cap_bps: np.ndarray, capacity_bps: float) -> np.ndarray:
    """The max-min fair rates (bits/s) of flows with caps ``cap_bps`` on a link
    of ``capacity_bps``: ``min(cap, water_level(cap, capacity))``."""
    caps = np.asarray(cap_bps, dtype=float)
    return np.minimum(caps, water_level(caps, capacity_bps))


@dataclass(frozen=True)
class FluidSchedule:
    """When each flow of a batch ends on a shared link, and what it has sent.

    Attributes (arrays indexed like the input flows):
        start_s, size_bytes, cap_bps: the flows.
        capacity_bps: the shared link.
        until_s: the schedule was computed up to this time; flows not done by
            then have ``end_s == inf``.
        end_s: completion times (s).
        sent_bytes: bytes each flow has sent by ``until_s``.
        constant_rate_bps: set when every flow keeps one rate from start to end
            (the fast paths); None when rates changed (the event loop).
        segments: with ``record=True``, the rate history as a list of
            ``(t0_s, t1_s, {flow: rate_bps})``, one entry per interval between
            events (for tests and plots).
    """

    start_s: np.ndarray
    size_bytes: np.ndarray
    cap_bps: np.ndarray
    capacity_bps: float
    until_s: float
    end_s: np.ndarray
    sent_bytes: np.ndarray
    constant_rate_bps: np.ndarray | None = None
    segments: list[tuple[float, float, dict[int, float]]] | None = field(default=None, repr=False)

    def sent_bytes_at(self, time_s: float) -> np.ndarray:
        """Bytes each flow has sent by ``time_s`` (<= ``until_s``): its size if
        done, 0 if not started, the fluid integral of its rate otherwise."""
        if time_s > self.until_s:
            raise ValueError(f"schedule known up to {self.until_s} s, asked for {time_s} s")
        if time_s == self.until_s:
            return self.sent_bytes
        done = self.end_s <= time_s
        running = ~done & (self.start_s < time_s)
        if not running.any():
            return np.where(done, self.size_bytes, 0.0)
        if self.constant_rate_bps is not None:
            with np.errstate(invalid="ignore"):
                sent = self.constant_rate_bps / _BITS_PER_BYTE * (time_s - self.start_s)
        else:  # rates changed on the way: replay the event loop up to time_s
            sent = fluid_schedule(
                self.start_s, self.size_bytes, self.cap_bps, self.capacity_bps, until_s=time_s
            ).sent_bytes
        sent = np.where(running, np.clip(sent, 0.0, self.size_bytes), 0.0)
        return np.where(done, self.size_bytes, sent)


def fluid_schedule(
    start_s: Sequence[float] | np.ndarray,
    size_bytes: Sequence[float] | np.ndarray,
    cap_bps: Sequence[float] | np.ndarray,
    capacity_bps: float,
    *,
    until_s: float = math.inf,
    record: bool = False,
) -> FluidSchedule:
    """Completion times of flows sharing a link max-min fairly (module docstring).

    Args:
        start_s: when each flow starts (s).
        size_bytes: bytes each flow carries (>= 0; 0 ends at its start).
        cap_bps: each flow's own cap (bits/s, > 0, may be inf).
        capacity_bps: the shared link (bits/s, > 0, may be inf).
        until_s: stop the schedule at this time (flows not done: end = inf).
        record: keep the rate history in ``segments``.

    Raises:
        ValueError: arrays of different lengths, or non-positive caps/capacity.
    """
    start = np.asarray(start_s, dtype=float).reshape(-1)
    size = np.asarray(size_bytes, dtype=float).reshape(-1)
    cap = np.asarray(cap_bps, dtype=float).reshape(-1)
    n = start.size
    if not n == size.size == cap.size:
        raise ValueError(f"flows disagree in length: {n}, {size.size}, {cap.size}")
    if not capacity_bps > 0 or (n and not (cap.min() > 0 and size.min() >= 0)):
        raise ValueError("capacity and caps must be > 0 and sizes >= 0")
    if n == 0:
        return FluidSchedule(start, size, cap, capacity_bps, until_s, start, size, cap)

    rate = None
    if not record:
        cap_sum = cap.sum()
        if cap_sum <= capacity_bps:  # includes an infinite capacity
            rate = cap
        elif start.min() == start.max() and size.min() == size.max():
            rate = np.minimum(cap, water_level(cap, capacity_bps))
        elif math.isfinite(cap_sum) and _never_contended(start, size, cap, capacity_bps):
            rate = cap
    if rate is not None:
        end = start + size * _BITS_PER_BYTE / rate  # 0 bytes or an infinite rate: no time
        if until_s == math.inf:
            return FluidSchedule(start, size, cap, capacity_bps, until_s, end, size, rate)
        done = end <= until_s
        with np.errstate(invalid="ignore"):
            partial = np.clip(rate / _BITS_PER_BYTE * (until_s - start), 0.0, size)
        sent = np.where(done, size, np.where(start < until_s, partial, 0.0))
        return FluidSchedule(start, size, cap, capacity_bps, until_s, np.where(done, end, math.inf),
                             sent, rate)

    order = np.argsort(start, kind="stable")
    end_sorted, sent_sorted, segments = _progressive_filling(
        start[order].tolist(),
        size[order].tolist(),
        (cap[order] / _BITS_PER_BYTE).tolist(),
        capacity_bps / _BITS_PER_BYTE,
        until_s,
        record,
    )
    end = np.empty(n)
    end[order] = end_sorted
    sent = np.empty(n)
    sent[order] = sent_sorted
    if segments is not None:
        segments = [
            (t0, t1, {int(order[i]): r * _BITS_PER_BYTE for i, r in rates.items()})
            for t0, t1, rates in segments
        ]
    sent = np.clip(sent, 0.0, size)
    return FluidSchedule(start, size, cap, capacity_bps, until_s, end, sent, None, segments)


def _never_contended(start: np.ndarray, size: np.ndarray, cap: np.ndarray, capacity_bps: float) -> bool:
    """True if, with every flow at its (finite) cap, the caps of the flows
    running at any instant never sum above the capacity: then each flow simply
    runs at its cap."""
    end = start + size * _BITS_PER_BYTE / cap
    times = np.concatenate((end, start))
    delta = np.concatenate((-cap, cap))
    order = np.argsort(times, kind="stable")  # at equal times, ends (listed first) go first
    return bool(np.cumsum(delta[order]).max() <= capacity_bps * (1 + 1e-12))


def _progressive_filling(
    arrival: list[float],
    size: list[float],
    cap: list[float],
    capacity: float,
    until: float,
    record: bool,
) -> tuple[list[float], list[float], list[tuple[float, float, dict[int, float]]] | None]:
    """The event loop behind ``fluid_schedule`` (bytes and bytes/s; ``arrival``
    sorted). Returns end times, bytes sent by ``until``, and the rate history."""
    heappush, heappop = heapq.heappush, heapq.heappop
    inf = math.inf
    n = len(arrival)
    end = [inf] * n
    group = [0] * n  # 0 not started, 1 capped, 2 at the level, 3 done
    version = [0] * n  # bumped on every move; heap entries of old versions are stale
    mark = [0.0] * n  # capped: finish time; at the level: finish tag in V
    capped_caps: list[tuple[float, int, int]] = []  # (-cap, version, i): largest on top
    level_caps: list[tuple[float, int, int]] = []  # (cap, version, i): smallest on top
    capped_ends: list[tuple[float, int, int]] = []  # (finish time, version, i)
    level_tags: list[tuple[float, int, int]] = []  # (finish tag, version, i)
    sum_capped = 0.0
    n_capped = n_level = 0
    level = inf
    now = arrival[0] if n else 0.0
    level_bytes = 0.0  # V: bytes a flow at the level has gained since time 0
    next_arrival = 0
    segments: list[tuple[float, float, dict[int, float]]] | None = [] if record else None

    while True:
        # --- the next event: an arrival, a capped flow's end or the level's head
        while capped_ends and version[capped_ends[0][2]] != capped_ends[0][1]:
            heappop(capped_ends)
        while level_tags and version[level_tags[0][2]] != level_tags[0][1]:
            heappop(level_tags)
        t = arrival[next_arrival] if next_arrival < n else inf
        if capped_ends and capped_ends[0][0] < t:
            t = capped_ends[0][0]
        level_due = False
        if level_tags:
            gap = level_tags[0][0] - level_bytes
            t_level = now + gap / level if gap > 0.0 else now
            if t_level <= t:
                t = t_level
                level_due = True
        if t == inf:
            break
        if t > until:
            if segments is not None and until > now and (n_capped or n_level):
                segments.append((now, until, _rates(group, cap, level)))
            if n_level:
                level_bytes += level * (until - now)
            now = until
            break
        if segments is not None and t > now and (n_capped or n_level):
            segments.append((now, t, _rates(group, cap, level)))
        if n_level:
            level_bytes += level * (t - now)
        now = t

        # --- completions
        if level_due:  # the head of the level finishes now (forced: rounding)
            i = heappop(level_tags)[2]
            group[i] = 3
            version[i] += 1
            end[i] = t
            n_level -= 1
            while level_tags:
                head = level_tags[0]
                j = head[2]
                if version[j] != head[1]:
                    heappop(level_tags)
                elif head[0] - level_bytes <= 1e-9 * size[j]:
                    heappop(level_tags)
                    group[j] = 3
                    version[j] += 1
                    end[j] = t
                    n_level -= 1
                else:
                    break
        while capped_ends and capped_ends[0][0] <= t:
            head = heappop(capped_ends)
            i = head[2]
            if version[i] != head[1]:
                continue
            group[i] = 3
            version[i] += 1
            end[i] = t
            n_capped -= 1
            sum_capped -= cap[i]
        if n_capped == 0:
            sum_capped = 0.0  # no drift left over from additions and subtractions

        # --- arrivals
        while next_arrival < n and arrival[next_arrival] <= t:
            i = next_arrival
            next_arrival += 1
            c = cap[i]
            if size[i] <= 0.0:
                group[i] = 3
                end[i] = t
            elif c < level:
                group[i] = 1
                mark[i] = finish = t + size[i] / c
                heappush(capped_caps, (-c, 0, i))
                heappush(capped_ends, (finish, 0, i))
                sum_capped += c
                n_capped += 1
            else:
                group[i] = 2
                mark[i] = tag = level_bytes + size[i]
                heappush(level_caps, (c, 0, i))
                heappush(level_tags, (tag, 0, i))
                n_level += 1

        # --- re-balance: move flows between the groups until the level is consistent
        while True:
            if n_level:
                level = (capacity - sum_capped) / n_level
            elif sum_capped <= capacity:
                level = inf
                break
            else:
                level = -inf  # the capped flows overfill the link: the largest joins the level
            while capped_caps and version[capped_caps[0][2]] != capped_caps[0][1]:
                heappop(capped_caps)
            if capped_caps and -capped_caps[0][0] >= level:
                i = heappop(capped_caps)[2]  # capped -> level
                c = cap[i]
                v = version[i] = version[i] + 1
                group[i] = 2
                mark[i] = tag = level_bytes + (mark[i] - now) * c
                heappush(level_caps, (c, v, i))
                heappush(level_tags, (tag, v, i))
                n_capped -= 1
                sum_capped = sum_capped - c if n_capped else 0.0
                n_level += 1
                continue
            while level_caps and version[level_caps[0][2]] != level_caps[0][1]:
                heappop(level_caps)
            if level_caps and level_caps[0][0] < level:
                i = heappop(level_caps)[2]  # level -> capped
                c = cap[i]
                v = version[i] = version[i] + 1
                group[i] = 1
                mark[i] = finish = now + (mark[i] - level_bytes) / c
                heappush(capped_caps, (-c, v, i))
                heappush(capped_ends, (finish, v, i))
                sum_capped += c
                n_capped += 1
                n_level -= 1
                continue
            break

    sent = [0.0] * n
    for i in range(n):
        if group[i] == 3:
            sent[i] = size[i]
        elif group[i] == 1:
            sent[i] = size[i] - (mark[i] - now) * cap[i]
        elif group[i] == 2:
            sent[i] = size[i] - (mark[i] - level_bytes)
    return end, sent, segments


def _rates(group: list[int], cap: list[float], level: float) -> dict[int, float]:
    """The current rate of every running flow (for ``record``)."""
    return {i: (cap[i] if g == 1 else level) for i, g in enumerate(group) if g in (1, 2)}


class SharedLink:
    """One direction of the server's link, shared max-min fairly (SimPy actor).

    The server owns two: its egress (``downlink``, carrying every client's
    download) and its ingress (``uplink``, carrying every upload). A round books
    its flows with ``transfer_all`` once their start times are known; the link
    checks that a new batch does not overlap the previous one (rounds are
    synchronous) and keeps running totals.

    Attributes:
        env: the SimPy environment.
        name: "egress" or "ingress".
        capacity_bps: bits/s (inf: never the bottleneck).
        busy_until_s: when the last booked flow ended or was cut.
        carried_bytes: bytes carried so far (cut flows: what they sent).
        flows: flows booked so far.
    """

    def __init__(self, env: simpy.Environment, capacity_bps: float, name: str) -> None:
        if not capacity_bps > 0:
            raise ValueError(f"{name} capacity must be > 0 bits/s, got {capacity_bps!r}")
        self.env = env
        self.name = name
        self.capacity_bps = float(capacity_bps)
        self.busy_until_s = 0.0
        self.carried_bytes = 0.0
        self.flows = 0

    def transfer_all(
        self,
        start_s: np.ndarray,
        size_bytes: np.ndarray,
        cap_bps: np.ndarray,
        *,
        until_s: float = math.inf,
    ) -> FluidSchedule:
        """Book a batch of flows and return their max-min fluid schedule up to
        ``until_s``. Times, in and out, are offsets (s) from ``env.now``, so
        that durations within a round carry no rounding from the absolute clock.

        Raises:
            RuntimeError: a flow starts in the past or before the previous
                batch has finished (``release``).
        """
        start = np.asarray(start_s, dtype=float)
        if start.size and (start.min() < 0 or self.env.now + start.min() < self.busy_until_s):
            raise RuntimeError(
                f"{self.name}: a flow starts at {self.env.now + start.min()} s, in the past "
                f"(now {self.env.now} s) or before the previous batch ended ({self.busy_until_s} s)"
            )
        self.flows += int(start.size)
        return fluid_schedule(start, size_bytes, cap_bps, self.capacity_bps, until_s=until_s)

    def release(self, end_s: float, sent_bytes: float) -> None:
        """The booked batch ended (or was cut) ``end_s`` seconds after now,
        having carried ``sent_bytes``."""
        self.busy_until_s = max(self.busy_until_s, self.env.now + float(end_s))
        self.carried_bytes += float(sent_bytes)
