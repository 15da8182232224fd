"""The two-level progressive filling of the compiled engine (`fedsim.system.jitfill`)
against the general allocator (`fedsim.system.jitloop._allocate`): the same
rates bit for bit on random states; which paths count as two-level; a hand
case; and one compiled specialisation of the AR(1) breakpoints."""

import math

import numpy as np
import pytest
from numba import float64

from fedsim.system.dynamics import AR1Series
from fedsim.system.jitfill import allocate_two_level, two_level_server
from fedsim.system.jitlinks import ar1_breakpoints
from fedsim.system.jitloop import _allocate, _members, _sort_members


def _state(rng):
    """A random batch state: caps (some infinite), running flows, cells."""
    n = int(rng.integers(1, 60))
    cells = int(rng.integers(0, 5))
    cap = rng.lognormal(np.log(10e6), 0.8, n)
    cap[rng.uniform(size=n) < 0.1] = math.inf
    cap[rng.uniform(size=n) < 0.1] = 5e6  # ties
    cell = rng.integers(-1, cells, n) if cells else np.full(n, -1)
    shared_of = np.ascontiguousarray(np.stack([np.zeros(n, dtype=np.int64), np.where(cell >= 0, cell + 1, -1)], 1))
    capacity = np.array([float(rng.choice([3e6, 40e6, 400e6, math.inf])), *rng.uniform(1e6, 60e6, cells)])
    active = rng.uniform(size=n) < 0.8
    return cap, shared_of, capacity, active


def _rates_both(cap, shared_of, capacity, active):
    n, links = cap.size, capacity.size
    link_off, link_flows = _members(shared_of, links)
    _sort_members(link_off, link_flows, cap, np.full(links, n + 1, dtype=np.int64))
    run = np.flatnonzero(active).astype(np.int64)
    general, two_level = np.zeros(n), np.zeros(n)
    unfrozen = np.zeros(n, dtype=np.bool_)
    _allocate(run, cap, active, shared_of, capacity, link_off, link_flows, general, unfrozen,
              np.zeros(links, dtype=np.int64))
    scratch = (np.zeros(links, dtype=np.int64), np.empty(links), np.empty(links), np.zeros(links, dtype=np.bool_),
               np.zeros(links), np.zeros(links, dtype=np.int64))
    allocate_two_level(run, run.size, 0, shared_of, cap, capacity, link_off, link_flows, two_level, unfrozen, *scratch)
    assert not unfrozen.any()  # the scratch is clean for the next call
    return general, two_level


@pytest.mark.parametrize("seed", range(60))
def test_two_level_filling_is_the_general_one_bit_for_bit(seed):
    cap, shared_of, capacity, active = _state(np.random.default_rng(seed))
    if active.any():
        assert two_level_server(shared_of, capacity.size) == 0
        general, two_level = _rates_both(cap, shared_of, capacity, active)
        np.testing.assert_array_equal(two_level[active], general[active])


def test_hand_case_cell_then_server():
    # server 30 Mbps; cell 1 (10 Mbps) holds flows 0, 1; flows 2, 3 have no cell; caps 8, 8, 4, 50 Mbps.
    # Levels: cell 10/2 = 5; server 30/4 = 7.5 > 4, 26/3 = 8.67 > 8, 18/2 = 9 > 8, 10/1 = 10 -> the cell
    # first, at 5. Then the server: residual 30 - 10 = 20 over flows 2 and 3: 20/2 = 10 > 4, then 16 (<= 50).
    cap = np.array([8e6, 8e6, 4e6, 50e6])
    shared_of = np.array([[0, 1], [0, 1], [0, -1], [0, -1]], dtype=np.int64)
    general, two_level = _rates_both(cap, shared_of, np.array([30e6, 10e6]), np.ones(4, dtype=bool))
    np.testing.assert_array_equal(two_level, [5e6, 5e6, 4e6, 16e6])
    np.testing.assert_array_equal(general, two_level)


@pytest.mark.parametrize(("shared_of", "links", "server"), [
    ([[0, 1], [0, -1], [0, 2]], 3, 0),
    ([[2, 0], [2, 1]], 3, 2),
    ([[0, -1, -1], [0, 1, -1]], 2, 0),  # -1 padding beyond the cell
    ([[0, 1], [1, 0]], 2, -1),  # the server is not the first column everywhere
    ([[0, 0]], 1, -1),  # the cell is the server
    ([[0, 1, 2]], 3, -1),  # two cells
    ([[-1, -1]], 1, -1),  # no shared link
    ([[0]], 1, -1),  # one column: the single-link case
])
def test_which_paths_are_two_level(shared_of, links, server):
    assert two_level_server(np.array(shared_of, dtype=np.int64), links) == server


def test_ar1_breakpoints_compile_once_for_int_and_float_round_starts():
    series = AR1Series(np.full(4, 10e6), sigma=0.5, correlation=0.8, interval_s=1.0, seed=3, direction="uplink")
    clients = np.arange(4)
    at_int = series.breakpoints(clients, 0, np.zeros(4), 5.0)  # SimPy's clock starts at the int 0
    at_float = series.breakpoints(clients, 0.0, np.zeros(4), 5.0)
    np.testing.assert_array_equal(at_int.cap_bps, at_float.cap_bps)
    assert all(sig[3] == float64 for sig in ar1_breakpoints.signatures)  # t0_s: never an int specialisation


def test_the_loop_has_one_specialisation_whatever_the_inputs_layout():
    from fedsim.system.fastnet import caps_breakpoints, fast_path_schedule
    from fedsim.system.jitloop import schedule_loop

    wide = np.array([[0.0, 9.0], [0.5, 9.0], [1.0, 9.0]])
    for start, size, capacity in (
        (wide[:, 0], wide[:, 1] * 1e5, [4e6]),  # a strided view
        ([0, 1, 2], [100_000, 200_000, 0], (4_000_000,)),  # ints in lists and tuples
    ):
        out = fast_path_schedule(start, size, caps_breakpoints(lambda flow, t: (1e6, math.inf), start),
                                 np.zeros((3, 1), dtype=np.int32), capacity)
        assert np.isfinite(out.end_s).all()
    assert len(set(schedule_loop.signatures)) == 1


def test_a_long_event_history_grows_and_keeps_its_rows():
    # one flow, a capacity step every 0.1 s: 60 reallocations, past the history's first 4n + 16 = 20 rows
    from fedsim.system.fastnet import caps_breakpoints, fast_path_schedule
    from fedsim.system.network import path_schedule

    def caps(flow, t):
        step = math.floor(t / 0.1 + 1e-9)
        return (1e6 if step % 2 == 0 else 3e6), (step + 1) * 0.1

    shared_of, capacity = np.zeros((1, 1), dtype=np.int64), [10e6]
    fast = fast_path_schedule([0.0], [1e6], caps_breakpoints(caps, [0.0]), shared_of, capacity)
    slow = path_schedule([0.0], [1e6], caps, shared_of, capacity)
    assert fast.event_s.size > 20
    np.testing.assert_allclose(fast.event_s, slow.event_s, rtol=1e-9)
    np.testing.assert_allclose(fast.event_sent, slow.event_sent, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(fast.event_rate_bps, slow.event_rate_bps, rtol=1e-9)
    assert fast.end_s[0] == pytest.approx(slow.end_s[0], rel=1e-12)
