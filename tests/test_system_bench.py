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
    # per case: the repeated steady-state runs, then as many one-round runs (the set-up cost)
    repeats = figures["des_dynamic_repeats"]
    steady = figures["des_dynamic_rounds"]
    dynamic, cells = fluid[4:4 + 2 * repeats], fluid[4 + 2 * repeats:]
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
    assert repeats == 3 and steady == 5  # 500 rounds at scale 0.01
    assert len(fluid) == 4 + 4 * repeats
    for runs, cell_count in ((systems[4:4 + 2 * repeats], 0), (systems[4 + 2 * repeats:], 4)):
        assert {s.clients.dynamics.model for s in runs} == {"lte"}
        assert {len(s.cells) for s in runs} == {cell_count}
    for name, runs in (("dynamic", dynamic), ("cells", cells)):
        assert [(k, r) for k, r, *_ in runs] == [(clients, steady)] * repeats + [(clients, 1)] * repeats
        for suffix in ("", "_median"):  # every run took the same time: best == median
            assert figures[f"des_{name}_client_rounds_per_s{suffix}"] == round(clients * steady / wall_s)
            assert figures[f"des_{name}_client_rounds_per_cpu_s{suffix}"] == round(clients * steady / cpu_s)
        assert figures[f"des_{name}_vs_static"] == round(steady / rounds, 4)  # same clients, same CPU s
        # a one-round run's CPU time less one steady round's
        assert figures[f"des_{name}_setup_s"] == round(cpu_s - cpu_s / steady, 4)
    # the population run: 1 % of 100,000 choosing 1 % of 1,000, and its figures as returned
    assert population == [(1_000, 10, 1)]
    assert (figures["des_population_clients"], figures["des_population_selected"],
            figures["des_population_rounds"]) == population[0]
    assert figures["des_population_s"] == 4.0 and figures["des_population_peak_rss_mb"] == 300
    assert figures["des_population_timeline_mb"] == 2
    assert figures["des_population_client_rounds_per_s"] == round(10 * 1 / 4.0)


def test_the_dynamic_figures_are_the_best_and_median_of_the_repeats(monkeypatch: pytest.MonkeyPatch):
    """Scripted rates per run (wall, CPU): the SimPy reference, three steady
    runs that differ, three one-round runs; the figures pick the best and the
    median and the set-up is the fastest one-round run less one steady round."""
    calls = []
    script = {
        0: [(1_000.0, 1_100.0), (40_000.0, 45_000.0), (60_000.0, 70_000.0), (50_000.0, 52_000.0),
            (100 / 0.02, 100 / 0.03), (100 / 0.04, 100 / 0.025), (100 / 0.05, 100 / 0.05)],
        4: [(500.0, 600.0), (30_000.0, 31_000.0), (20_000.0, 20_000.0), (55_000.0, 56_000.0),
            (100 / 0.05, 100 / 0.05), (100 / 0.06, 100 / 0.06), (100 / 0.07, 100 / 0.07)],
    }

    def rates(system, clients, rounds, seed=0, engine="fast"):
        calls.append((len(system.cells), rounds, engine))
        return script[len(system.cells)].pop(0)

    monkeypatch.setattr(bench, "_client_rounds_per_s", rates)
    monkeypatch.setattr(bench._sim, "simulate", lambda *args, **kwargs: None)  # the warm-up run
    figures = bench._dynamic_figures(100, 1.0, static_per_cpu_s=100_000.0, progress=False)
    assert calls == [(cells, rounds, engine) for cells in (0, 4)
                     for rounds, engine in [(50, "simpy")] + [(500, "fast")] * 3 + [(1, "fast")] * 3]
    assert figures["des_dynamic_simpy_client_rounds_per_s"] == 1_000
    assert figures["des_cells_simpy_client_rounds_per_cpu_s"] == 600
    assert figures["des_dynamic_client_rounds_per_s"] == 60_000
    assert figures["des_dynamic_client_rounds_per_s_median"] == 50_000
    assert figures["des_dynamic_client_rounds_per_cpu_s"] == 70_000
    assert figures["des_dynamic_client_rounds_per_cpu_s_median"] == 52_000
    assert figures["des_cells_client_rounds_per_s"] == 55_000
    assert figures["des_cells_client_rounds_per_s_median"] == 30_000
    assert figures["des_dynamic_vs_static"] == 0.7 and figures["des_cells_vs_static"] == 0.56
    # the fastest one-round run (25 ms of CPU) less one round at the best rate (100 / 70,000 s)
    assert figures["des_dynamic_setup_s"] == round(0.025 - 100 / 70_000, 4)
    assert figures["des_cells_setup_s"] == round(0.05 - 100 / 56_000, 4)
    assert figures["des_dynamic_target_met"]  # 60,000 and 55,000 >= 50,000
    # one case short of the target by one client-round per second: not met
    script.update({0: [(1.0, 1.0), (49_999.0, 1e5), (1.0, 1e5), (1.0, 1e5)] + [(100.0, 100.0)] * 3,
                   4: [(1.0, 1.0)] + [(90_000.0, 1e5)] * 3 + [(100.0, 100.0)] * 3})
    assert not bench._dynamic_figures(100, 1.0, 100_000.0, progress=False)["des_dynamic_target_met"]


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
