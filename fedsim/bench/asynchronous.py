"""Speed of the asynchronous (FedBuff) schedule (``fedsim bench`` part "system").

* ``async_updates_per_s`` (and ``_per_cpu_s``): client updates simulated per
  second by `fedsim.system.asynchronous.simulate_async` on 1,000 clients with
  the benchmark's heterogeneous links and devices (`fedsim.bench.system.
  bench_system`) and an unlimited server link, concurrency 100, buffer 10,
  5,000 server steps (about 50,000 updates; the closed-form driver). Issue
  16's target: >= 50,000.
* ``async_contended_updates_per_s``: the same with the server link of the
  synchronous benchmark (200 Mbps egress, 50 Mbps ingress) on 100 clients,
  concurrency 20, buffer 10: every download and upload is a flow of the event
  driver, max-min fair at every event.
* ``async_dynamic_updates_per_s``: 100 clients on LTE-like links and four
  cells (`fedsim.bench.system.dynamic_system`), concurrency 20, buffer 10,
  500 server steps (about 5,000 updates, as the contended case; the AR(1)
  links are read inside the compiled loop, `fedsim.system.async_links`, and
  their per-client streams, about 0.3 ms each to seed, are a fixed cost that
  500 updates did not amortise: 50 steps gave about half the rate).

Where the time goes (contended case, profile under load): about a third the
compiled loop (one call, about 1.2 per update, numba's dispatch included),
the rest the Python server's per-update moves (`Protocol.settle` / `finish`,
the selection, the record, the launch; `fedsim.system.async_record`) and,
once, the frames (`asynchronous._schedule`, energy included). In the dynamic
case the seeding of the per-client AR(1) streams (`seeding.seed_sequence`,
207 calls) is a fixed cost of about 40 ms under load, a fifth of the run.

The event driver's loop is compiled (`fedsim.system.async_loop`, numba): each
case first runs two server steps untimed, so that the figures leave out
numba's compilation or the loading of its on-disk cache (once per process,
about 0.3-1 s), as a long run would.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fedsim.bench.system import bench_system, dynamic_system
from fedsim.system.async_spec import AsyncConfig
from fedsim.system.asynchronous import simulate_async
from fedsim.system.payload import Payload
from fedsim.system.spec import SystemConfig

__all__ = ["bench_async", "updates_per_s"]

_LENET_BYTES = 266_610 * 4


def updates_per_s(system: SystemConfig, clients: int, config: AsyncConfig, steps: int,
                  seed: int = 0) -> tuple[float, float, int]:
    """(updates per wall-clock second, per CPU second, updates) of one ``simulate_async``."""
    payload = Payload(down_bytes=_LENET_BYTES, up_bytes=_LENET_BYTES)
    wall, cpu = time.perf_counter(), time.process_time()
    schedule = simulate_async(system, config, client_samples=np.full(clients, 400), payload=payload,
                              work_fraction=1.0, steps=steps, seed=seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(schedule.updates)
    return n / wall, n / max(cpu, 1e-9), n


def bench_async(progress: bool = False, scale: float = 1.0) -> dict[str, Any]:
    """The figures of the module docstring (a few seconds at ``scale=1``);
    ``scale`` < 1 shrinks the number of server steps."""
    figures: dict[str, Any] = {}
    runs = (
        ("async", bench_system(1000, "inf", "inf"), 1000, AsyncConfig(concurrency=100, buffer_size=10), 5000),
        ("async_contended", bench_system(100), 100, AsyncConfig(concurrency=20, buffer_size=10), 500),
        ("async_dynamic", dynamic_system(100, 4), 100, AsyncConfig(concurrency=20, buffer_size=10), 500),
    )
    for name, system, clients, config, steps in runs:
        updates_per_s(system, clients, config, 2)  # warm-up: compile or load the compiled loop
        wall_rate, cpu_rate, n = updates_per_s(system, clients, config, max(1, round(steps * scale)))
        figures[f"{name}_updates_per_s"] = round(wall_rate)
        figures[f"{name}_updates_per_cpu_s"] = round(cpu_rate)
        if progress:
            print(f"system bench: {name}, {n:,} updates: {wall_rate:,.0f}/s")
    return figures
