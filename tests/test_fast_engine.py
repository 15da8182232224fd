"""The fast fluid engine (`fedsim.system.fastnet`) against the SimPy engine
(`fedsim.system.network.path_schedule`) and the independent event-by-event
solver of tests/test_system_dynamic.py: batches of flows with capacity steps,
cells and horizons, whole simulations, and the vectorised AR(1) links."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_system_dynamic import _caps_of, reference_schedule

from fedsim.system import Payload, SystemConfig, simulate
from fedsim.system.cells import PathLinks
from fedsim.system.dynamics import AR1Series
from fedsim.system.fastnet import caps_breakpoints, fast_path_schedule
from fedsim.system.network import path_schedule

MB = 1_000_000


def _both(starts, sizes, steps, cell_of, cell_caps, server, **kw):
    cells = sorted(cell_caps)
    shared_of = np.array([[0, -1 if c is None else 1 + cells.index(c)] for c in cell_of])
    capacity = [server, *(cell_caps[c] for c in cells)]
    caps = _caps_of(steps)
    slow = path_schedule(starts, sizes, caps, shared_of, capacity, **kw)
    fast = fast_path_schedule(starts, sizes, caps_breakpoints(caps, starts), shared_of, capacity, **kw)
    return slow, fast


@st.composite
def _cases(draw):
    n = draw(st.integers(1, 7))
    starts = [draw(st.sampled_from([0.0, 0.0, 0.3, 1.1, 2.0, 2.5])) for _ in range(n)]
    sizes = [draw(st.sampled_from([0, 50_000, 400_000, 1_500_000])) for _ in range(n)]
    steps = []
    for _ in range(n):
        times = sorted(set(draw(st.lists(st.sampled_from([0.25, 0.5, 1.0, 1.1, 2.0, 3.7]), max_size=3))))
        values = [draw(st.floats(1e6, 20e6)) for _ in range(len(times) + 1)]
        steps.append(list(zip([0.0, *times], values, strict=True)))
    cell_caps = {c: draw(st.floats(2e6, 30e6)) for c in draw(st.sampled_from([[], ["a"], ["a", "b"]]))}
    cell_of = [draw(st.sampled_from([None, *cell_caps])) for _ in range(n)]
    server = draw(st.sampled_from([3e6, 12e6, 40e6, math.inf]))
    until = draw(st.sampled_from([math.inf, 0.7, 2.0, 5.0]))
    return starts, sizes, steps, cell_of, cell_caps, server, until


@settings(max_examples=120, deadline=None)
@given(_cases())
def test_fast_engine_equals_the_simpy_engine(case):
    starts, sizes, steps, cell_of, cell_caps, server, until = case
    slow, fast = _both(starts, sizes, steps, cell_of, cell_caps, server, until_s=until)
    np.testing.assert_allclose(fast.end_s, slow.end_s, rtol=1e-9, atol=0)
    np.testing.assert_allclose(fast.sent_bytes, slow.sent_bytes, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(fast.event_s, slow.event_s, rtol=1e-9, atol=0)  # the same reallocations
    for t in (0.0, 0.4, 1.05, 2.2, until):
        if t <= until and math.isfinite(t):
            np.testing.assert_allclose(fast.sent_bytes_at(t), slow.sent_bytes_at(t), rtol=1e-9, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(_cases())
def test_fast_engine_matches_the_event_by_event_solver(case):
    starts, sizes, steps, cell_of, cell_caps, server, _until = case
    sizes = [max(s, 1) for s in sizes]  # the reference solver has no empty flows
    expected = reference_schedule(starts, [8 * s for s in sizes], steps, cell_of, cell_caps, server)
    _slow, fast = _both(starts, sizes, steps, cell_of, cell_caps, server)
    assert fast.end_s.tolist() == pytest.approx(expected, rel=1e-7)


def test_a_step_hands_capacity_to_the_other_flow_by_hand():
    # as in test_system_dynamic: server 10 Mbps; 5 Mbps each to 0.4 s, then B
    # drops to 2 Mbps: A ends at 1.15 s, B at 3.4 s
    steps = [[(0.0, 8e6)], [(0.0, 8e6), (0.4, 2e6)]]
    _slow, fast = _both([0.0, 0.0], [MB, MB], steps, [None, None], {}, 10e6)
    assert fast.end_s.tolist() == pytest.approx([1.15, 3.4], abs=1e-12)
    assert fast.sent_bytes_at(0.4).tolist() == pytest.approx([250_000, 250_000])
    assert fast.event_s.tolist() == pytest.approx([0.0, 0.4, 1.15, 3.4])  # starts, step, two ends


def test_vectorised_ar1_links_equal_the_scalar_ones():
    series = AR1Series(np.array([1e6, 2e6, 5e6, 8e6]), 0.5, 0.8, 1.0, seed=7, direction="downlink")
    twin = AR1Series(series.base_bps, 0.5, 0.8, 1.0, seed=7, direction="downlink")
    # rows are added as clients appear and columns as time advances (past one chunk of 256)
    for clients, t0, starts, horizon in (([2], 0.0, [0.0], 3.0), ([0, 3], 3.5, [0.0, 296.5], 300.0),
                                         ([1, 2, 3, 0], 0.3, [0.7, 999.69, 0.0, 510.7], 1000.5)):
        bp = series.breakpoints(np.array(clients), t0, np.array(starts), horizon)
        for i, (k, first) in enumerate(zip(clients, starts, strict=True)):
            times = bp.times_s[bp.offsets[i]:bp.offsets[i + 1]]
            assert times[0] == first and (np.diff(times) > 0).all() and times[-1] <= horizon < bp.tail_s[i]
            for at, cap, nxt in zip(times, bp.cap_bps[bp.offsets[i]:bp.offsets[i + 1]],
                                    [*times[1:], bp.tail_s[i]], strict=True):
                want_cap, want_next = twin.segment(k, t0 + at)
                if want_next - t0 <= at:  # rounded to just before the change: PathLinks asks again
                    want_cap, want_next = twin.segment(k, want_next)
                assert cap == pytest.approx(want_cap, rel=1e-14) and nxt == want_next - t0


def _system(cells: int, **rounds):
    raw = {
        "clients": {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.6},
                    "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.6},
                    "rtt": {"dist": "uniform", "low": "20 ms", "high": "120 ms"},
                    "speed": {"dist": "uniform", "low": 0.5, "high": 2.0}, "dynamics": {"model": "lte"}},
        "server": {"downlink": "60 Mbps", "uplink": "15 Mbps", "aggregation": "0.5 s"},
        "cells": {f"c{c}": {"capacity_down": "30 Mbps", "capacity_up": "6 Mbps"} for c in range(cells)},
    }
    if rounds:
        raw["rounds"] = rounds
    return SystemConfig.model_validate(raw)


@pytest.mark.parametrize(("seed", "cells", "rounds"), [
    (0, 0, {}), (1, 2, {}), (2, 3, {"deadline": "9 s", "dropout": 0.2}),
    (3, 0, {"participation": 0.5, "overcommit": 0.4}),
])
def test_whole_simulations_agree_between_the_engines(monkeypatch, seed, cells, rounds):
    system = _system(cells, **rounds)
    run = dict(client_samples=np.random.default_rng(seed).integers(50, 800, 16), rounds=5, seed=seed,
               payload=Payload(down_bytes=MB, up_bytes=MB), work_fraction=0.3)
    fast = simulate(system, **run)
    monkeypatch.setattr(PathLinks, "engine", "simpy")
    slow = simulate(system, **run)
    assert fast.timeline["drop_reason"].tolist() == slow.timeline["drop_reason"].tolist()
    numbers = [c for c in fast.timeline.columns if fast.timeline[c].dtype.kind == "f"]
    np.testing.assert_allclose(fast.timeline[numbers].to_numpy(), slow.timeline[numbers].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(fast.rounds.to_numpy(float), slow.rounds.to_numpy(float), rtol=1e-9)
    assert (fast.rounds[["duration_s", "up_bytes"]].nunique() > 1).any()  # the links changed between rounds
