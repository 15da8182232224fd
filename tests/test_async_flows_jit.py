"""The compiled asynchronous engine against its numpy reference: the flows
(`PathFlows` vs `ReferencePathFlows`) on random event sequences with capacity
steps and cells, the compiled heap against heapq, and the compiled event loop
(`CompiledEvents`) against the Python driver on numpy flows (`Events` with
`ReferencePathFlows`): the same schedule, float for float."""

import heapq
import math

import numpy as np
import pandas as pd
import pytest
from async_systems import base_system, maybe_cells

from fedsim import seeding
from fedsim.system import Payload, SystemConfig
from fedsim.system import async_drivers as drivers
from fedsim.system import async_loop as loop
from fedsim.system.async_flows import PathFlows, ReferencePathFlows
from fedsim.system.async_spec import AsyncConfig
from fedsim.system.asynchronous import simulate_async
from fedsim.system.dynamics import TraceSeries

# ------------------------------------------------------------------ flows


def random_series(stream, clients: int, horizon_s: float) -> TraceSeries:
    """Piecewise-constant client links with random steps (some at shared instants, some inf)."""
    times, bps = [], []
    for _ in range(clients):
        steps = np.sort(np.concatenate(([0.0], stream.uniform(0, horizon_s, stream.integers(0, 6)),
                                        stream.choice([1.0, 2.0, 5.0], stream.integers(0, 2)))))
        steps = np.unique(steps)
        caps = stream.choice([1e6, 2e6, 5e6, 8e6, 20e6, math.inf], steps.size)
        times.append(steps)
        bps.append(caps.astype(float))
    return TraceSeries(times, bps)


def state_of(flows):
    return (flows.now_s, flows.next_s, flows.active.tolist(), flows.sent.tolist(), flows.rate.tolist(),
            flows.end_s.tolist(), flows.change_s.tolist(), flows.cap.tolist())


@pytest.mark.parametrize("case", range(30))
def test_path_flows_match_reference(case):
    """Random starts, stops and steps (at next_time, as the drivers do): both
    implementations report the same finished slots and hold the same floats."""
    stream = seeding.rng(case, "flows-jit")
    clients, slots, cells = int(stream.integers(2, 12)), int(stream.integers(1, 8)), int(stream.integers(0, 4))
    capacity = np.concatenate(([stream.choice([3e6, 10e6, math.inf])], stream.choice([2e6, 6e6, 1e8], cells)))
    cell_of = stream.integers(-1, cells, clients) if cells else np.full(clients, -1)
    shared = np.stack([np.zeros(clients, dtype=np.int64), np.where(cell_of >= 0, cell_of + 1, -1)], axis=1)
    series = random_series(stream, clients, 8.0)
    ref, jit = (cls(slots, capacity, shared, series) for cls in (ReferencePathFlows, PathFlows))
    t_s, events = 0.0, 0
    while events < 60:
        action = stream.random()
        free = np.flatnonzero(~ref.active)
        if action < 0.4 and free.size:
            slot, client = int(stream.choice(free)), int(stream.integers(clients))
            size = float(stream.choice([0.0, 1e5, 1e6, 3e6]))
            assert ref.start(slot, client, size, t_s) == jit.start(slot, client, size, t_s)
        elif action < 0.5:
            slot = int(stream.integers(slots))
            assert ref.stop(slot, t_s) == jit.stop(slot, t_s)
        elif ref.next_time() < math.inf:
            assert ref.next_time() == jit.next_time()
            t_s = ref.next_time()
            assert ref.step(t_s) == jit.step(t_s)
        t_s += float(stream.choice([0.0, 0.0, stream.exponential(0.5)]))  # ties included
        t_s = min(t_s, ref.next_time())
        events += 1
        assert state_of(ref) == state_of(jit)


def test_path_flows_hand_computed():
    """One 8 Mbps server link, 10 Mbps client caps, 1 MB (8 Mbit) flows. Two from
    t = 0: 4 Mbps each, both done at 2 s. One from 3 s: 8 Mbps alone (done at 4 s
    if alone); a second from 3.5 s: the first has 4 Mbit left, at 4 Mbps each it
    ends at 4.5 s; the second has sent 4 Mbps * 0.5 s = 0.25 MB at 4 s."""
    series = TraceSeries([np.array([0.0])] * 2, [np.array([10e6])] * 2)
    flows = PathFlows(2, np.array([8e6]), np.zeros((2, 1), dtype=np.int64), series)
    flows.start(0, 0, 1e6, 0.0)
    flows.start(1, 1, 1e6, 0.0)
    assert flows.rate.tolist() == [4e6, 4e6]
    assert flows.next_time() == 2.0
    assert flows.step(2.0) == [0, 1]
    flows.start(0, 0, 1e6, 3.0)
    assert flows.rate.tolist() == [8e6, 0.0] and flows.next_time() == 4.0
    flows.start(1, 1, 1e6, 3.5)  # flow 0 has 0.5 MB left; 4 Mbps each -> 1 s more
    assert flows.next_time() == 4.5
    assert flows.stop(1, 4.0) == pytest.approx(0.25e6)


# ------------------------------------------------------------------ heap


def test_compiled_heap_order_matches_heapq():
    """Pops come out as heapq's (time, priority, sequence) order, ties included."""
    stream = seeding.rng(0, "heap")
    heap_t, heap_i = loop.new_heap(512)
    sc_i = np.zeros(loop.SC_I, dtype=np.int64)
    reference, popped, expected = [], [], []
    for i in range(400):
        if stream.random() < 0.6 or not reference:
            t_s, prio = float(stream.choice([0.0, 1.0, 1.5, stream.random()])), int(stream.integers(2))
            loop.push(heap_t, heap_i, sc_i, t_s, prio, i % 7, i)
            heapq.heappush(reference, (t_s, prio, int(sc_i[loop.SEQ]), i % 7, i))
        else:
            popped.append(tuple(int(x) for x in loop._pop(heap_t, heap_i, sc_i)))
            expected.append(heapq.heappop(reference)[3:])
    assert popped == expected and sc_i[loop.HEAP_N] == len(reference)


# ------------------------------------------------------------------ the event loop


def reference_driver(protocol, system, seed, base_dir):
    return drivers.Events(protocol, system, seed, base_dir, flows=ReferencePathFlows)


def random_system(case, tmp_path):
    stream = seeding.rng(case, "loop-case")
    k = int(stream.integers(3, 30))
    raw = base_system(stream, ["inf", "40 Mbps", "200 Mbps"], ["inf", "10 Mbps", "50 Mbps"], [0.0, 0.2])
    maybe_cells(stream, raw, 0.5)
    dynamics = stream.random()
    if dynamics < 0.35:
        raw["clients"]["dynamics"] = {"model": "lte"}
    elif dynamics < 0.55:
        series = random_series(stream, k, 30.0)
        lines = ["client_id,t_s,downlink_bps,uplink_bps"]
        for client, (times, bps) in enumerate(zip(series.times_s, series.bps, strict=True)):
            lines += [f"{client},{t},{b if math.isfinite(b) else 1e9},{(b if math.isfinite(b) else 1e9) / 4}"
                      for t, b in zip(times, bps, strict=True)]
        (tmp_path / "bw.csv").write_text("\n".join(lines) + "\n")
        raw["clients"]["dynamics"] = {"model": "trace", "trace": "bw.csv"}
        del raw["clients"]["downlink"], raw["clients"]["uplink"]
    if stream.random() < 0.3:
        raw["rounds"]["deadline"] = "12 s"
    if stream.random() < 0.3:
        raw["clients"]["availability"] = 0.7
    if stream.random() < 0.3:
        raw["clients"]["sessions"] = {"model": "diurnal", "mean": 0.6, "amplitude": 0.2, "session": "60 s",
                                      "period": "600 s"}
    c = int(stream.integers(1, k + 1))
    cfg = AsyncConfig(concurrency=c, buffer_size=int(stream.integers(1, 6)),
                      max_staleness=None if stream.random() < 0.7 else 1)
    payload = Payload(down_bytes=int(stream.choice([0, 500_000, 1_000_000])), up_bytes=1_000_000,
                      first_round_extra_bytes=int(stream.choice([0, 100_000])))
    return SystemConfig.model_validate(raw), cfg, k, payload


@pytest.mark.parametrize("case", range(40))
def test_compiled_loop_matches_python_driver(case, tmp_path, monkeypatch):
    """Random systems (cells, LTE or trace links, dropout, deadline,
    availability, diurnal sessions, zero-byte downloads, staleness limit,
    contended or unlimited server): the compiled loop's schedule equals the
    Python driver's on numpy flows exactly (frames bit for bit)."""
    system, cfg, k, payload = random_system(case, tmp_path)
    if not drivers.needs_events(system, _profiles(system, k, case, tmp_path), cfg.concurrency):
        system = SystemConfig.model_validate({**system.model_dump(), "cells": {
            "big": {"capacity_down": "100 Gbps", "capacity_up": "100 Gbps"}}})
    args = dict(client_samples=seeding.rng(case, "samples").integers(100, 800, k), payload=payload,
                work_fraction=0.5, steps=12, seed=case, base_dir=tmp_path)
    try:
        fast = simulate_async(system, cfg, **args)
    except ValueError as error:  # a system where no step can happen: both must say so
        monkeypatch.setattr(drivers, "CompiledEvents", reference_driver)
        with pytest.raises(ValueError, match=str(error)[:40]):
            simulate_async(system, cfg, **args)
        return
    monkeypatch.setattr(drivers, "CompiledEvents", reference_driver)
    slow = simulate_async(system, cfg, **args)
    pd.testing.assert_frame_equal(fast.updates, slow.updates, check_exact=True)
    pd.testing.assert_frame_equal(fast.steps, slow.steps, check_exact=True)


def _profiles(system, k, seed, base_dir):
    from fedsim.system.devices import apply_device_trace
    from fedsim.system.profiles import draw_profiles

    return apply_device_trace(draw_profiles(system.clients, k, seed, base_dir), system, base_dir)


def test_compiled_loop_grows_its_heap_and_columns():
    """Many updates on one slot with long-lived deadline events: the heap and
    the per-update columns grow past their first sizes, the schedule still
    equals the reference."""
    system = SystemConfig.model_validate({"rounds": {"deadline": "1000 s"}, "server": {"downlink": "10 Mbps"},
                                          "cells": {"big": {"capacity_down": "1 Gbps", "capacity_up": "1 Gbps"}}})
    cfg = AsyncConfig(concurrency=2, buffer_size=1)
    args = dict(client_samples=np.full(3, 100), payload=Payload(down_bytes=10_000, up_bytes=10_000),
                work_fraction=0.01, steps=600, seed=1)
    fast = simulate_async(system, cfg, **args)
    assert len(fast.updates) >= 600  # > 256 columns, > 80 heap entries (600 pending deadline cuts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(drivers, "CompiledEvents", reference_driver)
        slow = simulate_async(system, cfg, **args)
    pd.testing.assert_frame_equal(fast.updates, slow.updates, check_exact=True)
