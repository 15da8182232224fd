"""Lazy sorting of the compiled loop's member lists (`fedsim.system.jitfill.level_from`,
`fill_two_level`) gives the rates of the eager sort bit for bit.

The loop sorts a shared link's member list by cap only when a water-level walk
goes past the smallest unfrozen cap or a cell's freeze needs the cap order
(issue 15's speed work); before, every list with a changed cap was sorted at
every reallocation. The checks: the filling on shuffled ("dirty") lists against
the general allocator on sorted ones; the level on shuffled lists against the
walk on sorted ones; and whole batches through the loop's fast paths (one
shared link; ``[server, cell]``) against the same batches through its general
path, which still sorts eagerly, with every output compared for equality."""

import math

import numpy as np
import pytest

from fedsim.system.fastnet import caps_breakpoints, fast_path_schedule
from fedsim.system.jitfill import fill_two_level, level, level_from
from fedsim.system.jitloop import _allocate, _members, _sort_members


def _state(rng):
    """Caps (some infinite, some tied), running flows, cells; the general
    allocator's rates on sorted member lists; and the lists shuffled."""
    n = int(rng.integers(1, 60))
    cells = int(rng.integers(1, 5))
    cap = rng.lognormal(np.log(10e6), 0.8, n)
    cap[rng.uniform(size=n) < 0.1] = math.inf
    cap[rng.uniform(size=n) < 0.15] = 5e6  # ties
    cell = rng.integers(-1, cells, n)
    shared_of = np.ascontiguousarray(np.stack([np.zeros(n, dtype=np.int64), np.where(cell >= 0, cell + 1, -1)], 1))
    # server capacities from always-first (3 Mbps) to never (inf); cells from tight to loose
    capacity = np.array([float(rng.choice([3e6, 40e6, 400e6, math.inf])), *rng.uniform(1e6, 60e6, cells)])
    run = np.flatnonzero(rng.uniform(size=n) < 0.8).astype(np.int64)
    links = capacity.size
    link_off, link_flows = _members(shared_of, links)
    _sort_members(link_off, link_flows, cap, np.full(links, n + 1, dtype=np.int64))
    general, unfrozen = np.zeros(n), np.zeros(n, dtype=np.bool_)
    _allocate(run, cap, np.ones(n, dtype=np.bool_), shared_of, capacity, link_off, link_flows, general, unfrozen,
              np.zeros(links, dtype=np.int64))
    shuffled = link_flows.copy()
    for link in range(links):
        rng.shuffle(shuffled[link_off[link]:link_off[link + 1]])
    return cap, shared_of, capacity, run, link_off, link_flows, shuffled, general


def _scratch(links):
    return (np.zeros(links, dtype=np.int64), np.empty(links), np.empty(links), np.zeros(links, dtype=np.bool_),
            np.zeros(links), np.zeros(links, dtype=np.int64), np.empty(links))


@pytest.mark.parametrize("seed", range(80))
def test_filling_on_unsorted_lists_is_the_general_one_bit_for_bit(seed):
    cap, shared_of, capacity, run, link_off, link_flows, shuffled, general = _state(np.random.default_rng(seed))
    if run.size == 0:
        return
    n, links = cap.size, capacity.size
    dirty = np.full(links, 9, dtype=np.int64)  # every list out of order (a Shell sort if one is needed)
    rate, unfrozen = np.zeros(n), np.zeros(n, dtype=np.bool_)
    left, residual, levels, live, total, unbounded, smallest = _scratch(links)
    fill_two_level(run, run.size, 0, shared_of, cap, capacity, link_off, shuffled, dirty, rate, unfrozen, left,
                   residual, levels, live, total, unbounded, smallest)
    np.testing.assert_array_equal(rate[run], general[run])
    assert not unfrozen.any()  # the scratch is clean for the next call
    for link in range(links):  # a list marked clean is in cap order; the members are still each link's
        members = shuffled[link_off[link]:link_off[link + 1]]
        assert sorted(members.tolist()) == sorted(link_flows[link_off[link]:link_off[link + 1]].tolist())
        if dirty[link] == 0:
            assert np.array_equal(cap[members], np.sort(cap[members]))


def test_a_list_is_sorted_only_when_the_filling_needs_its_order():
    # server 30 Mbps over 4 flows of caps 50, 8, 40, 9 Mbps: its level 7.5 is below every cap, so its first
    # walk stops at the smallest cap without sorting; a 10 Mbps cell of flows 1 and 3 (level 5) freezes
    # first and is sorted for that (its flows leave the server's sums in cap order)
    cap = np.array([50e6, 8e6, 40e6, 9e6])
    shared_of = np.array([[0, -1], [0, 1], [0, -1], [0, 1]], dtype=np.int64)
    capacity = np.array([30e6, 10e6])
    link_off = np.array([0, 4, 6], dtype=np.int64)
    flows = np.array([0, 1, 2, 3, 3, 1], dtype=np.int64)  # neither list in cap order
    dirty = np.array([3, 2], dtype=np.int64)
    rate = np.zeros(4)
    run = np.arange(4, dtype=np.int64)
    fill_two_level(run, 4, 0, shared_of, cap, capacity, link_off, flows, dirty, rate, np.zeros(4, dtype=np.bool_),
                   *_scratch(2))
    # the cell freezes 1 and 3 at 5; the server has 20 left for flows 0 and 2: 10 each
    np.testing.assert_array_equal(rate, [10e6, 5e6, 10e6, 5e6])
    assert flows[4:].tolist() == [1, 3] and dirty[1] == 0  # the frozen cell: sorted
    # the server's level after the freeze, 20 / 2 = 10, is below its unfrozen flows' smallest cap (40, from
    # the cells still live and the flows in none): no walk, and its list stays as it was
    assert flows[:4].tolist() == [0, 1, 2, 3] and dirty[0] == 3


def test_the_servers_walk_after_a_freeze_sorts_when_the_level_passes_a_cap():
    # as above, but flow 2's cap is 6 Mbps: after the cell froze the server's 20 / 2 = 10 passes it, so the
    # list is sorted and walked: flow 2 keeps 6, flow 0 gets 14
    cap = np.array([50e6, 8e6, 6e6, 9e6])
    shared_of = np.array([[0, -1], [0, 1], [0, -1], [0, 1]], dtype=np.int64)
    flows = np.array([0, 1, 2, 3, 3, 1], dtype=np.int64)
    dirty = np.array([3, 2], dtype=np.int64)
    rate = np.zeros(4)
    fill_two_level(np.arange(4, dtype=np.int64), 4, 0, shared_of, cap, np.array([30e6, 10e6]),
                   np.array([0, 4, 6], dtype=np.int64), flows, dirty, rate, np.zeros(4, dtype=np.bool_),
                   *_scratch(2))
    np.testing.assert_array_equal(rate, [14e6, 5e6, 6e6, 5e6])
    assert cap[flows[:4]].tolist() == sorted(cap.tolist()) and dirty[0] == 0


def test_a_level_below_every_cap_leaves_the_list_unsorted():
    cap = np.array([50e6, 8e6, 40e6, 9e6])
    flows = np.array([0, 1, 2, 3], dtype=np.int64)
    dirty = np.array([5], dtype=np.int64)
    water = level_from(0, cap, np.ones(4, dtype=np.bool_), np.array([4]), float(cap.sum()), 8e6,
                       np.array([30e6]), np.array([0, 4], dtype=np.int64), flows, dirty)
    assert water == 7.5e6
    assert flows.tolist() == [0, 1, 2, 3] and dirty[0] == 5  # not sorted: the walk stopped at its first step


@pytest.mark.parametrize("seed", range(60))
def test_level_on_an_unsorted_list_is_the_sorted_walk(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    cap = rng.lognormal(np.log(5e6), 1.0, n)
    cap[rng.uniform(size=n) < 0.2] = 2e6
    unfrozen = rng.uniform(size=n) < 0.7
    if not unfrozen.any():
        return
    flows = np.argsort(cap, kind="stable").astype(np.int64)
    off = np.array([0, n], dtype=np.int64)
    left = np.array([int(unfrozen.sum())])
    residual = np.array([float(rng.uniform(0.2, 1.5) * cap[unfrozen].sum())])
    total = float(cap[unfrozen].sum())
    expected = level(0, cap, unfrozen, left, total, residual, off, flows)
    shuffled = rng.permutation(flows)
    for smallest in (float(cap[unfrozen].min()), -math.inf):  # known, or not: the list is sorted first
        got = level_from(0, cap, unfrozen, left, total, smallest, residual, off, shuffled.copy(),
                         np.array([int(rng.integers(1, 20))]))
        assert got == expected or (math.isnan(got) and math.isnan(expected))


def _grid_batch(rng, cells):
    """A batch whose client links all step on a common 1 s grid (as the AR(1)
    links do): many caps change at once, so member lists go out of order."""
    n = int(rng.integers(2, 50))
    start = np.where(rng.uniform(size=n) < 0.4, 0.0, rng.uniform(0, 6, n))
    size = rng.choice([0.0, 2e5, 1e6, 3e6], n, p=[0.05, 0.25, 0.4, 0.3])
    base = rng.lognormal(np.log(4e6), 0.7, n)
    factor = np.exp(rng.normal(0, 0.5, (n, 64)))
    factor[:, rng.uniform(size=64) < 0.1] = 1.0  # steps at which no cap changes
    base[rng.uniform(size=n) < 0.05] = math.inf

    def caps(flow, t):
        j = min(math.floor(t), 63)
        return float(base[flow] * factor[flow, j]), (float(j + 1) if j < 63 else math.inf)

    cell = rng.integers(-1, cells, n) if cells else np.full(n, -1)
    server = float(rng.choice([8e6, 30e6, 200e6]))
    capacity = np.array([server, *rng.uniform(3e6, 30e6, cells)])
    return start, size, caps_breakpoints(caps, start), cell, capacity


def _outputs(out):
    return (out.end_s, out.sent_bytes, out.event_s, out.event_sent, out.event_rate_bps)


@pytest.mark.parametrize("seed", range(25))
def test_the_fast_paths_equal_the_eagerly_sorted_general_path(seed):
    rng = np.random.default_rng(seed)
    for cells in (0, 3):
        start, size, links, cell, capacity = _grid_batch(rng, cells)
        until = float(rng.choice([math.inf, 4.5]))
        n = start.size
        if cells:  # [server, cell or -1]: the two-level filling; [cell or -1, server]: the general one
            fast_paths = np.stack([np.zeros(n, dtype=np.int64), np.where(cell >= 0, cell + 1, -1)], 1)
            general_paths = np.ascontiguousarray(fast_paths[:, ::-1])
            general_capacity = capacity
        else:  # one shared link; the general path: every other flow also crosses an infinite link first
            fast_paths = np.zeros((n, 1), dtype=np.int64)
            general_paths = np.stack([np.where(np.arange(n) % 2, 1, 0), np.where(np.arange(n) % 2, 0, 1)], 1)
            general_capacity = np.array([capacity[0], math.inf])
        fast = fast_path_schedule(start, size, links, fast_paths, capacity, until_s=until)
        general = fast_path_schedule(start, size, links, general_paths, general_capacity, until_s=until)
        assert fast.event_s.size > 3
        for got, expected in zip(_outputs(fast), _outputs(general), strict=True):
            np.testing.assert_array_equal(got, expected)
