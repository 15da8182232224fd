"""The compiled event loop (`fedsim.system.jitloop` behind
`fedsim.system.fastnet.fast_path_schedule`) against the SimPy engine
(`fedsim.system.network.path_schedule`): random batches with capacity steps
mid-flow, cells, horizons, empty flows and infinite caps; the horizon
extension; a hand case; breakpoint lists of traces; whole runs on a trace."""

import math

import numpy as np
import pytest

from fedsim.system import Payload, SystemConfig, simulate
from fedsim.system.cells import PathLinks
from fedsim.system.dynamics import TraceSeries
from fedsim.system.fastnet import caps_breakpoints, fast_path_schedule
from fedsim.system.network import path_schedule

MB = 1_000_000


def _step_caps(steps):
    """A CapSource from per-flow [(t_s, bps), ...] steps (first at 0)."""
    def caps(flow, t):
        times = [s for s, _ in steps[flow]]
        k = int(np.searchsorted(times, t + 1e-12, side="right")) - 1
        nxt = times[k + 1] if k + 1 < len(times) else math.inf
        return steps[flow][k][1], nxt
    return caps


def _random_batch(rng):
    n = int(rng.integers(1, 40))
    starts = rng.choice([0.0, 0.0, 0.2, 0.75, 1.5, 3.0], n) + rng.uniform(0, 0.1, n) * rng.integers(0, 2, n)
    sizes = rng.choice([0.0, 20e3, 300e3, 1.2e6], n)
    steps = []
    for _ in range(n):
        times = np.unique(np.round(rng.uniform(0.05, 6.0, int(rng.integers(0, 6))), 2))
        values = rng.uniform(0.5e6, 25e6, times.size + 1)
        values[rng.uniform(size=values.size) < 0.1] = math.inf  # an unbounded client link
        steps.append(list(zip([0.0, *times.tolist()], values.tolist(), strict=True)))
    cells = int(rng.integers(0, 4))
    cell_of = rng.integers(-1, cells, n) if cells else np.full(n, -1)
    shared_of = np.stack([np.zeros(n, dtype=np.int64), np.where(cell_of >= 0, cell_of + 1, -1)], axis=1)
    capacity = [float(rng.choice([4e6, 30e6, math.inf])), *rng.uniform(2e6, 20e6, cells).tolist()]
    until = float(rng.choice([math.inf, 0.9, 2.5, 6.0]))
    return starts, sizes, steps, shared_of, capacity, until


def _agree(fast, slow):
    np.testing.assert_allclose(fast.end_s, slow.end_s, rtol=1e-9, atol=0)
    np.testing.assert_allclose(fast.sent_bytes, slow.sent_bytes, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(fast.event_s, slow.event_s, rtol=1e-9, atol=0)  # the same reallocations
    np.testing.assert_allclose(fast.event_sent, slow.event_sent, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(fast.event_rate_bps, slow.event_rate_bps, rtol=1e-9, atol=0)


@pytest.mark.parametrize("seed", range(40))
def test_random_batches_equal_the_simpy_engine(seed):
    starts, sizes, steps, shared_of, capacity, until = _random_batch(np.random.default_rng(seed))
    caps = _step_caps(steps)
    slow = path_schedule(starts, sizes, caps, shared_of, capacity, until_s=until)
    fast = fast_path_schedule(starts, sizes, caps_breakpoints(caps, starts), shared_of, capacity, until_s=until)
    _agree(fast, slow)
    for t in np.linspace(0.0, min(until, 8.0), 7):
        np.testing.assert_allclose(fast.sent_bytes_at(t), slow.sent_bytes_at(t), rtol=1e-9, atol=1e-6)


def test_a_new_reallocation_supersedes_the_booked_completion():
    # 1.5 MB at 2.4 Mbps would end at 5 s (booked at 0 s, within the horizon),
    # but the link drops to 1 Mbps at 0.25 s: by 5 s it has sent
    # 75,000 + 125,000 * 4.75 = 668,750 bytes and is not done
    caps = _step_caps([[(0.0, 2.4e6), (0.25, 1e6)]])
    fast = fast_path_schedule([0.0], [1.5 * MB], caps_breakpoints(caps, [0.0]), [[0, -1]], [3e6], until_s=5.0)
    assert fast.end_s.tolist() == [math.inf]
    assert fast.sent_bytes.tolist() == pytest.approx([668_750.0], rel=1e-12)
    assert fast.event_s.tolist() == [0.0, 0.25]


def test_a_flow_that_outlives_the_listing_extends_the_horizon():
    # every link halves each second, so nothing is known about the end in advance
    caps = _step_caps([[(float(k), 8e6 / 2 ** min(k, 6)) for k in range(40)] for _ in range(3)])
    listed = caps_breakpoints(caps, [0.0, 0.5, 0.5])
    horizons = []

    def links(horizon_s):
        horizons.append(horizon_s)
        return listed(horizon_s)

    fast = fast_path_schedule([0.0, 0.5, 0.5], [MB, 2 * MB, 0.0], links, [[0, -1]] * 3, [math.inf])
    slow = path_schedule([0.0, 0.5, 0.5], [MB, 2 * MB, 0.0], caps, [[0, -1]] * 3, [math.inf])
    assert len(horizons) > 1 and horizons == sorted(horizons)  # listed again, further
    _agree(fast, slow)
    assert fast.end_s[2] == 0.5 and math.isfinite(fast.end_s[1])


def test_a_link_whose_next_change_is_not_after_now_is_an_error():
    def caps(_flow, _t):
        return 1e6, 0.5  # asked at the change at 0.5 s, it names 0.5 s again

    with pytest.raises(RuntimeError, match=r"flow 0: the link's next change 0\.5 s"):
        fast_path_schedule([0.0], [MB], caps_breakpoints(caps, [0.0]), [[0, -1]], [1e9])


def test_trace_breakpoints_list_what_segment_answers():
    series = TraceSeries([np.array([0.0, 1.0, 2.5, 7.0]), np.array([0.0])],
                         [np.array([1e6, 2e6, 3e6, 4e6]), np.array([5e6])])
    bp = series.breakpoints(np.array([0, 1, 0]), 0.7, np.array([0.0, 0.3, 0.3]), 4.0)
    assert bp.offsets.tolist() == [0, 3, 4, 6]
    assert bp.times_s.tolist() == pytest.approx([0.0, 0.3, 1.8, 0.3, 0.3, 1.8])
    assert bp.cap_bps.tolist() == [1e6, 2e6, 3e6, 5e6, 2e6, 3e6]
    assert bp.tail_s.tolist() == pytest.approx([6.3, math.inf, 6.3])


def test_whole_runs_on_a_trace_with_cells_agree_between_the_engines(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    rows = ["client_id,t_s,downlink_mbps,uplink_mbps"]
    for k in range(12):
        for t in np.concatenate(([0.0], np.sort(rng.uniform(0.1, 60.0, 25)))):
            rows.append(f"{k},{t:.3f},{rng.uniform(2, 40):.3f},{rng.uniform(0.5, 10):.3f}")
    (tmp_path / "links.csv").write_text("\n".join(rows) + "\n")
    system = SystemConfig.model_validate({
        "clients": {"rtt": "40 ms",
                    "speed": {"dist": "uniform", "low": 0.5, "high": 2.0},
                    "dynamics": {"model": "trace", "trace": "links.csv"}},
        "server": {"downlink": "60 Mbps", "uplink": "15 Mbps", "aggregation": "0.5 s"},
        "cells": {"a": {"capacity_down": "25 Mbps", "capacity_up": "6 Mbps"},
                  "b": {"capacity_down": "40 Mbps", "capacity_up": "8 Mbps"}},
        "rounds": {"deadline": "12 s"},
    })
    run = dict(client_samples=rng.integers(50, 800, 12), rounds=4, seed=0, base_dir=tmp_path,
               payload=Payload(down_bytes=2 * MB, up_bytes=MB), work_fraction=0.3)
    fast = simulate(system, **run)
    monkeypatch.setattr(PathLinks, "engine", "simpy")
    slow = simulate(system, **run)
    assert fast.timeline["drop_reason"].tolist() == slow.timeline["drop_reason"].tolist()
    numbers = [c for c in fast.timeline.columns if fast.timeline[c].dtype.kind == "f"]
    np.testing.assert_allclose(fast.timeline[numbers].to_numpy(), slow.timeline[numbers].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(fast.rounds.to_numpy(float), slow.rounds.to_numpy(float), rtol=1e-9)
