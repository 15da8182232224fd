"""The system benchmark: its naive reference model keeps FIFO order, and its
figures are the client-rounds of the runs it made over the time they took
(timed with a scripted clock, so the arithmetic is checked exactly; no speed
is asserted here: targets belong to `fedsim bench`)."""

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest

from fedsim.bench import system as bench
from fedsim.bench.system import bench_des, naive_fifo_rounds
from fedsim.system import Payload, SystemConfig
from fedsim.system.profiles import ClientProfiles
from fedsim.system.sim import simulate


def test_naive_fifo_reference_by_hand():
    # two clients, 8 Mbit each way on a 10 Mbps server link, FIFO: client 0 downloads
    # 0-0.8 s (its 10 Mbps cap), client 1 waits and downloads 0.8-1.6 s; compute 1 s;
    # uploads at min(cap 2 Mbps, 10) = 4 s each: client 0 1.8-5.8, client 1 5.8-9.8.
    system = SystemConfig.model_validate({"server": {"downlink": "10 Mbps", "uplink": "10 Mbps"}})
    profiles = ClientProfiles(
        downlink_bps=np.array([math.inf, math.inf]), uplink_bps=np.array([2e6, 2e6]),
        rtt_s=np.zeros(2), speed=np.ones(2), availability=np.ones(2),
    )
    payload = Payload(down_bytes=1_000_000, up_bytes=1_000_000)
    assert naive_fifo_rounds(system, profiles, np.ones(2), payload, rounds=2) == 2 * 9.8


def test_bench_des_figures_follow_from_the_runs(monkeypatch: pytest.MonkeyPatch):
    """Every timed run lasts 2 s of wall clock and 0.5 s of CPU on the scripted
    clock; the runs themselves are real (scale 0.01) and recorded."""
    wall_s, cpu_s = 2.0, 0.5
    monkeypatch.setattr(bench, "time", SimpleNamespace(
        perf_counter=itertools.count(0.0, wall_s).__next__,
        process_time=itertools.count(0.0, cpu_s).__next__))
    fluid, naive = [], []
    real_simulate, real_naive = bench.simulate, bench.naive_fifo_rounds

    systems = []
    population = []

    def simulate(system, *, client_samples, rounds, **kwargs):
        fluid.append((len(client_samples), rounds, system.server.downlink, system.server.uplink))
        systems.append(system)
        return real_simulate(system, client_samples=client_samples, rounds=rounds, **kwargs)

    def population_run(clients, selected, rounds):
        population.append((clients, selected, rounds))
        return {"s": 4.0, "peak_rss_mb": 300.4, "timeline_mb": 1.6, "timeline_rows": clients * rounds}

    def naive_rounds(system, profiles, compute_s, payload, rounds):
        naive.append((len(profiles), rounds))
        return real_naive(system, profiles, compute_s, payload, rounds)

    monkeypatch.setattr(bench, "simulate", simulate)
    monkeypatch.setattr(bench, "naive_fifo_rounds", naive_rounds)
    monkeypatch.setattr(bench, "_population_in_subprocess", population_run)
    figures = bench_des(scale=0.01)

    (clients, rounds, *_), *scaling = fluid[:4]
    dynamic, cells = fluid[4:]
    [(naive_clients, naive_rounds_run)] = naive
    assert clients == naive_clients == 100  # the same population in both models
    assert figures["des_client_rounds_per_s"] == round(clients * rounds / wall_s)
    assert figures["des_client_rounds_per_cpu_s"] == round(clients * rounds / cpu_s)
    assert figures["des_naive_client_rounds_per_s"] == round(naive_clients * naive_rounds_run / wall_s)
    assert figures["des_speedup_vs_naive"] == round(rounds / naive_rounds_run, 2)  # same clients, same CPU s
    # the scaling runs: growing populations, the same client-rounds each, and the
    # server link scaled with the population (2 and 0.5 Mbps per client)
    sizes = [k for k, *_ in scaling]
    assert len(scaling) == 3 and sizes == sorted(sizes) and len(set(sizes)) == 3
    assert len({k * r for k, r, *_ in scaling}) == 1
    for k, _, egress_bps, ingress_bps in scaling:
        assert (egress_bps, ingress_bps) == pytest.approx((2e6 * k, 0.5e6 * k))
    costs_us = [1e6 * cpu_s / (k * r) for k, r, *_ in scaling]
    names = [f"des_scaling_{n}_us_per_client_round" for n in (1_000, 10_000, 100_000)]
    assert [figures[n] for n in names] == [round(c, 2) for c in costs_us]
    assert figures["des_scaling_spread"] == round(max(costs_us) / min(costs_us), 2) == 1.0

    # time-varying links, then cells too: the static population, rates over the static run's
    assert len(fluid) == 6
    assert systems[4].clients.dynamics.model == systems[5].clients.dynamics.model == "lte"
    assert not systems[4].cells and len(systems[5].cells) == 4
    for name, (k, r, *_) in (("dynamic", dynamic), ("cells", cells)):
        assert k == clients
        assert figures[f"des_{name}_client_rounds_per_s"] == round(k * r / wall_s)
        assert figures[f"des_{name}_client_rounds_per_cpu_s"] == round(k * r / cpu_s)
        assert figures[f"des_{name}_vs_static"] == round(r / rounds, 4)  # same clients, same CPU s
    # the population run: 1 % of 100,000 choosing 1 % of 1,000, and its figures as returned
    assert population == [(1_000, 10, 1)]
    assert (figures["des_population_clients"], figures["des_population_selected"],
            figures["des_population_rounds"]) == population[0]
    assert figures["des_population_s"] == 4.0 and figures["des_population_peak_rss_mb"] == 300
    assert figures["des_population_timeline_mb"] == 2
    assert figures["des_population_client_rounds_per_s"] == round(10 * 1 / 4.0)


def test_the_dynamic_bench_case_varies_between_rounds_and_the_static_one_does_not():
    payload = Payload(down_bytes=bench._LENET_BYTES, up_bytes=bench._LENET_BYTES)

    def durations(system):
        return simulate(system, client_samples=np.full(20, 400), payload=payload, work_fraction=1.0,
                        rounds=4, seed=0).rounds["duration_s"].to_numpy()

    static = durations(bench.bench_system(20))
    assert np.all(static == static[0])
    for cells in (0, 4):
        varying = durations(bench.dynamic_system(20, cells))
        assert len(set(varying.tolist())) == 4
    # the cells are a bottleneck: 25 % of the clients share 60 Mbps, so rounds take longer
    assert durations(bench.dynamic_system(20, 4)).sum() > durations(bench.dynamic_system(20, 0)).sum()


def test_the_population_run_holds_k_rows_per_round_and_measures_its_own_memory():
    """In a fresh interpreter, as `fedsim bench` runs it: 2,000 clients, 50 per
    round, 3 rounds."""
    run = bench._population_in_subprocess(2_000, 50, 3)
    assert run["timeline_rows"] == 2_000 * 3
    assert run["participants"] == 50 * 3
    # the peak covers at least the timeline the process held (and the interpreter)
    assert run["peak_rss_mb"] > run["timeline_mb"] > 0
    assert run["s"] > 0
