"""AR(1) links read inside the compiled asynchronous loop (`fedsim.system.async_links`):
the table's log factors and `segment` against `AR1Series` (exact, at grid
points, just before them and over several chunks of intervals), and the
compiled loop with the table against the Python driver on numpy flows (the
same schedule, float for float), with no return to Python for a link."""

import math

import numpy as np
import pandas as pd
import pytest

from fedsim import seeding
from fedsim.system import Payload, SystemConfig
from fedsim.system import async_drivers as drivers
from fedsim.system import async_loop as loop
from fedsim.system.async_flows import ReferencePathFlows
from fedsim.system.async_links import CHUNK, AR1Table, columns_for, segment
from fedsim.system.async_spec import AsyncConfig
from fedsim.system.asynchronous import simulate_async
from fedsim.system.dynamics import AR1Series


def series_pair(stream, clients: int, interval_s: float) -> tuple[AR1Series, AR1Series]:
    base = stream.choice([1e6, 5e6, 2e7, math.inf], clients)
    sigma, rho = float(stream.uniform(0.0, 1.0)), float(stream.uniform(0.0, 0.95))
    return (AR1Series(base, sigma, rho, interval_s, 7, "downlink"), AR1Series(base / 4, sigma, rho, interval_s, 7,
                                                                              "uplink"))


@pytest.mark.parametrize("interval_s", [1.0, 0.1, 0.3, 2.5])
def test_table_and_segment_equal_the_python_series(interval_s):
    """Rows added in a random client order, columns grown past several chunks:
    every log factor equals `AR1Series.log_factors` and every `segment`
    (random times, grid points, the floats just below and above them) equals
    `AR1Series.segment`, bit for bit."""
    stream = seeding.rng(int(interval_s * 10), "links-jit")
    clients = 40
    pair = series_pair(stream, clients, interval_s)
    table = AR1Table(pair, np.zeros(clients, dtype=np.int64))
    order = stream.permutation(clients)
    for i, k in enumerate(order.tolist()):
        table.add_row(k)
        if i in (3, 25):
            table.grow(table.cols + 1)  # later rows catch up with the columns already filled
    horizon_s = 3.2 * CHUNK * interval_s
    table.grow(columns_for(horizon_s, interval_s))
    assert table.cols > 3 * CHUNK and table.logs.shape[1] >= clients
    grid = np.arange(1, 3 * CHUNK) * interval_s
    times = np.concatenate((stream.uniform(0, horizon_s, 300), grid, np.nextafter(grid, 0), np.nextafter(grid, 1e9),
                            [0.0]))
    for d, series in enumerate(pair):
        for k in range(clients):
            want = series.log_factors(k, table.cols)
            assert np.array_equal(table.logs[d, table.row_of[k], :table.cols], want)
        for t_s, k in zip(times.tolist(), stream.integers(0, clients, times.size).tolist(), strict=True):
            cap_bps, next_s = series.segment(k, t_s)
            if next_s <= t_s:  # `PathFlows._segment`
                cap_bps, next_s = series.segment(k, next_s)
            got = segment.py_func(table.logs[d, table.row_of[k]], float(series.base_bps[k]), interval_s, t_s)
            fast = segment(table.logs[d, table.row_of[k]], float(series.base_bps[k]), interval_s, t_s)
            assert got == fast == (cap_bps, next_s), (d, k, t_s)


def test_supports_only_ar1_pairs():
    pair = series_pair(seeding.rng(0, "x"), 3, 1.0)
    assert AR1Table.supports(pair)
    from fedsim.system.cells import ConstantSeries

    assert not AR1Table.supports((pair[0], ConstantSeries(np.ones(3))))


def lte_system(model: dict, deadline: str | None = None) -> SystemConfig:
    raw = {
        "clients": {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.7},
                    "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.7},
                    "rtt": {"dist": "uniform", "low": "0 ms", "high": "150 ms"},
                    "speed": {"dist": "uniform", "low": 0.3, "high": 3.0}, "dynamics": model},
        "server": {"downlink": "60 Mbps", "uplink": "20 Mbps"},
        "cells": {f"c{c}": {"capacity_down": "30 Mbps", "capacity_up": "8 Mbps"} for c in range(3)},
        "rounds": {"dropout": 0.1},
    }
    if deadline:
        raw["rounds"]["deadline"] = deadline
    return SystemConfig.model_validate(raw)


@pytest.mark.parametrize(("model", "deadline"), [
    ({"model": "lte"}, None),
    ({"model": "lognormal_ar1", "sigma": 0.9, "correlation": 0.5, "interval": "0.3 s"}, "40 s"),
])
def test_compiled_loop_reads_ar1_links_itself(model, deadline, monkeypatch):
    """A run of several hundred intervals on 24 clients (the table grows in
    rows and columns while the loop runs): the schedule equals the Python
    driver's on numpy flows exactly, and the loop never returned to Python
    for a link segment (``SEG_UP``, ``CHANGES``) but did ask for columns."""
    system = lte_system(model, deadline)
    codes: list[int] = []
    run = loop.run

    def counting(*args):
        codes.append(run(*args))
        return codes[-1]

    args = dict(client_samples=seeding.rng(3, "samples").integers(100, 800, 24),
                payload=Payload(down_bytes=2_000_000, up_bytes=1_000_000), work_fraction=0.5, steps=90, seed=3)
    cfg = AsyncConfig(concurrency=8, buffer_size=4)
    monkeypatch.setattr(loop, "run", counting)
    fast = simulate_async(system, cfg, **args)
    assert loop.SEG_UP not in codes and loop.CHANGES not in codes
    assert codes.count(loop.GROW_LINKS) >= 1
    interval_s = system.clients.dynamics.ar1()[2]
    assert fast.updates["end_s"].max() > 1.2 * CHUNK * interval_s  # past the first chunk of columns
    monkeypatch.setattr(drivers, "CompiledEvents",
                        lambda protocol, system, seed, base_dir: drivers.Events(protocol, system, seed, base_dir,
                                                                                flows=ReferencePathFlows))
    slow = simulate_async(system, cfg, **args)
    pd.testing.assert_frame_equal(fast.updates, slow.updates, check_exact=True)
    pd.testing.assert_frame_equal(fast.steps, slow.steps, check_exact=True)
