"""Speed of the system simulator (``fedsim bench`` part "system").

* ``des_client_rounds_per_s``: client-rounds simulated per second with the
  server link contended: 100 clients, 3000 rounds, lognormal client links
  (down 20 Mbps, up 5 Mbps medians, sigma 0.6), uniform RTTs, heterogeneous
  devices, a finite server link (200 Mbps egress, 50 Mbps ingress), dense
  LeNet-300-100 payloads. Target: >= 100,000 on the development CPU.
  ``des_client_rounds_per_cpu_s`` is the same per second of this process's CPU
  time, which a shared, busy machine disturbs less.
* ``des_naive_client_rounds_per_s``: the same profiles in the naive SimPy model,
  one process per client and round and a FIFO ``simpy.Resource`` per link
  direction (transfers served one at a time at min(cap, capacity): not the fluid
  model, only a speed reference measured in the same run);
  ``des_speedup_vs_naive`` is the ratio of the two rates per CPU second.
* ``des_scaling_<K>_us_per_client_round`` for K = 1k, 10k, 100k clients per
  round (fewer rounds, ~100k client-rounds each, server capacity scaled with K
  so the contention stays alike), in CPU microseconds; ``des_scaling_spread``
  is the largest over the smallest cost per client-round (1.0 = exactly linear).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import simpy

from fedsim.system.payload import Payload
from fedsim.system.profiles import ClientProfiles, draw_profiles
from fedsim.system.sim import simulate
from fedsim.system.spec import SystemConfig

__all__ = ["bench_des", "bench_system", "naive_fifo_rounds"]

_LENET_BYTES = 266_610 * 4


def bench_system(clients: int, egress: str = "200 Mbps", ingress: str = "50 Mbps") -> SystemConfig:
    """The benchmark's scenario: contended server link, heterogeneous clients."""
    return SystemConfig.model_validate({
        "clients": {
            "downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.6},
            "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.6},
            "rtt": {"dist": "uniform", "low": "20 ms", "high": "120 ms"},
            "speed": {"dist": "normal", "mean": 1.0, "std": 0.3, "min": 0.2, "max": 3.0},
        },
        "server": {"downlink": egress, "uplink": ingress, "aggregation": "0.5 s"},
    })


def naive_fifo_rounds(
    system: SystemConfig, profiles: ClientProfiles, compute_s: np.ndarray, payload: Payload, rounds: int
) -> float:
    """The naive reference model; returns the simulated end time (s).

    Each client is a SimPy process per round that queues for the server's
    egress (a FIFO ``Resource`` of capacity 1), downloads at min(its cap, the
    capacity), computes, queues for the ingress and uploads.
    """
    env = simpy.Environment()
    egress = simpy.Resource(env, capacity=1)
    ingress = simpy.Resource(env, capacity=1)
    down_s = payload.down_bytes * 8 / np.minimum(profiles.downlink_bps, system.server.downlink)
    up_s = payload.up_bytes * 8 / np.minimum(profiles.uplink_bps, system.server.uplink)
    half_rtt = profiles.rtt_s / 2

    def client_round(k: int) -> Iterator[simpy.Event]:
        with egress.request() as turn:
            yield turn
            yield env.timeout(down_s[k])
        yield env.timeout(half_rtt[k] + compute_s[k])
        with ingress.request() as turn:
            yield turn
            yield env.timeout(up_s[k])
        yield env.timeout(half_rtt[k])

    def training() -> Iterator[simpy.Event]:
        for _ in range(rounds):
            yield env.all_of([env.process(client_round(k)) for k in range(len(profiles))])
            yield env.timeout(system.server.aggregation)

    env.process(training())
    env.run()
    return float(env.now)


def _client_rounds_per_s(
    system: SystemConfig, clients: int, rounds: int, seed: int = 0
) -> tuple[float, float]:
    """(client-rounds per wall-clock second, per CPU second) of one ``simulate``."""
    payload = Payload(down_bytes=_LENET_BYTES, up_bytes=_LENET_BYTES)
    wall, cpu = time.perf_counter(), time.process_time()
    simulate(system, client_samples=np.full(clients, 400), payload=payload, work_fraction=1.0,
             rounds=rounds, seed=seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return clients * rounds / wall, clients * rounds / max(cpu, 1e-9)


def bench_des(progress: bool = False, scale: float = 1.0) -> dict[str, Any]:
    """Measure the figures of the module docstring (about 10 s at ``scale=1``).

    ``scale`` < 1 shrinks every run (rounds, and the client counts of the
    scaling runs) for a quick check; the figures then describe that smaller run.
    """
    figures: dict[str, Any] = {}
    clients, rounds = 100, max(1, round(3000 * scale))
    system = bench_system(clients)
    per_wall_s, per_cpu_s = _client_rounds_per_s(system, clients, rounds)
    figures["des_client_rounds_per_s"] = round(per_wall_s)
    figures["des_client_rounds_per_cpu_s"] = round(per_cpu_s)

    naive_rounds = max(1, round(300 * scale))
    profiles = draw_profiles(system.clients, clients, seed=0)
    compute_s = system.compute.t_comp_full / profiles.speed
    payload = Payload(down_bytes=_LENET_BYTES, up_bytes=_LENET_BYTES)
    wall, cpu = time.perf_counter(), time.process_time()
    naive_fifo_rounds(system, profiles, compute_s, payload, naive_rounds)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    figures["des_naive_client_rounds_per_s"] = round(clients * naive_rounds / wall)
    # the ratio on CPU time: both runs are charged only for their own work
    figures["des_speedup_vs_naive"] = round(per_cpu_s / (clients * naive_rounds / max(cpu, 1e-9)), 2)

    costs = {}
    for many in (1_000, 10_000, 100_000):
        many_clients = max(10, round(many * min(1.0, scale)))
        many_rounds = max(1, round(100_000 * scale / many_clients))
        scaled = bench_system(many_clients, f"{2 * many_clients} Mbps", f"{0.5 * many_clients} Mbps")
        rate = _client_rounds_per_s(scaled, many_clients, many_rounds)[1]
        costs[many] = 1e6 / rate
        figures[f"des_scaling_{many}_us_per_client_round"] = round(costs[many], 2)
        if progress:
            print(f"system bench: {many_clients} clients x {many_rounds} rounds: {rate:,.0f}/s")
    figures["des_scaling_spread"] = round(max(costs.values()) / min(costs.values()), 2)
    if not math.isfinite(figures["des_scaling_spread"]):
        figures["des_scaling_spread"] = None
    return figures
