"""Speed of the asynchronous (FedBuff) schedule (``fedsim bench`` part "system").

Client updates simulated per second by
`fedsim.system.asynchronous.simulate_async` (issue 16's target: >= 50,000),
in three cases:

* ``async``: 1,000 clients with the benchmark's heterogeneous links and
  devices (`fedsim.bench.system.bench_system`) and an unlimited server link,
  concurrency 100, buffer 10, 5,000 server steps (about 50,000 updates; the
  closed-form driver);
* ``async_contended``: the server link of the synchronous benchmark (200 Mbps
  egress, 50 Mbps ingress) on 100 clients, concurrency 20, buffer 10, 2,000
  steps (about 20,000 updates): every download and upload is a flow of the
  event driver, max-min fair at every event;
* ``async_dynamic``: 100 clients on LTE-like links and four cells
  (`fedsim.bench.system.dynamic_system`), concurrency 20, buffer 10, 2,000
  steps (the AR(1) links read inside the compiled loop,
  `fedsim.system.async_links`).

Each case runs ``repeats`` times (3), and each time twice, interleaved: the
full number of steps and a tenth of it. The difference of the two (updates
over seconds) is the steady-state rate, free of the fixed set-up cost (the
profiles, the round plan, the link series; in the dynamic case the seeding of
each client's AR(1) streams, a fraction of a millisecond per client); the
short run's time beyond its updates at that rate is the set-up cost (noisy:
a difference of two timings). Figures, per case:
``{case}_updates_per_s`` / ``_per_cpu_s`` the best steady-state rate per
wall-clock / CPU second over the repeats, ``..._median`` the median,
``{case}_setup_ms`` the median set-up cost (CPU ms) and ``{case}_updates``
the long run's updates. Before the repeats each case runs two server steps
untimed, so that the figures leave out numba's compilation or the loading of
its on-disk cache (once per process, about 0.3-1 s), as a long run would.

Where the time goes (profiles under load): with the server compiled into the
event loop (`fedsim.system.async_server`; every client available, no
sessions) a contended or dynamic run is one compiled call per few thousand
updates; the max-min reallocations at each flow start and end
(`fedsim.system.async_jit.reallocate`, about 1-3 µs each, four or more per
update) are most of it, the frames (`asynchronous._schedule`, energy
included) about a sixth. Before, the loop returned to the Python server
about 1.2 times per update (half the time).
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
    """(wall-clock seconds, CPU seconds, updates) of one ``simulate_async``."""
    payload = Payload(down_bytes=_LENET_BYTES, up_bytes=_LENET_BYTES)
    wall, cpu = time.perf_counter(), time.process_time()
    schedule = simulate_async(system, config, client_samples=np.full(clients, 400), payload=payload,
                              work_fraction=1.0, steps=steps, seed=seed)
    return time.perf_counter() - wall, time.process_time() - cpu, len(schedule.updates)


def steady_rate(long: tuple[float, float, int], short: tuple[float, float, int]) -> tuple[float, float, float]:
    """(updates per wall s, per CPU s, set-up CPU s) from a long and a short
    run (`updates_per_s`): the rates of their difference, and the short run's
    CPU time beyond its updates at that rate (>= 0). Raises ValueError when
    the long run is not longer."""
    (wall_l, cpu_l, n_l), (wall_s, cpu_s, n_s) = long, short
    if n_l <= n_s:
        raise ValueError(f"the long run ({n_l} updates) must have more updates than the short one ({n_s})")
    per_cpu = (n_l - n_s) / max(cpu_l - cpu_s, 1e-9)
    return (n_l - n_s) / max(wall_l - wall_s, 1e-9), per_cpu, max(0.0, cpu_s - n_s / per_cpu)


def bench_async(progress: bool = False, scale: float = 1.0, repeats: int = 3) -> dict[str, Any]:
    """The figures of the module docstring (about ten seconds at ``scale=1``
    on a quiet machine); ``scale`` < 1 shrinks the number of server steps."""
    figures: dict[str, Any] = {}
    runs = (
        ("async", bench_system(1000, "inf", "inf"), 1000, AsyncConfig(concurrency=100, buffer_size=10), 5000),
        ("async_contended", bench_system(100), 100, AsyncConfig(concurrency=20, buffer_size=10), 2000),
        ("async_dynamic", dynamic_system(100, 4), 100, AsyncConfig(concurrency=20, buffer_size=10), 2000),
    )
    for name, system, clients, config, steps in runs:
        updates_per_s(system, clients, config, 2)  # warm-up: compile or load the compiled loop
        long_steps = max(20, round(steps * scale))
        rates = []
        for _ in range(repeats):
            long = updates_per_s(system, clients, config, long_steps)
            rates.append(steady_rate(long, updates_per_s(system, clients, config, long_steps // 10)))
        wall, cpu, setup = (np.array(column) for column in zip(*rates, strict=True))
        figures.update({
            f"{name}_updates_per_s": round(wall.max()), f"{name}_updates_per_s_median": round(np.median(wall)),
            f"{name}_updates_per_cpu_s": round(cpu.max()),
            f"{name}_updates_per_cpu_s_median": round(np.median(cpu)),
            f"{name}_setup_ms": round(1e3 * float(np.median(setup)), 1), f"{name}_updates": long[2],
        })
        if progress:
            print(f"system bench: {name}, {long[2]:,} updates, best of {repeats}: {wall.max():,.0f}/s "
                  f"({cpu.max():,.0f} per CPU s), set-up {1e3 * np.median(setup):.0f} ms")
    return figures
