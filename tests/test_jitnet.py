"""The compiled max-min kernels (fedsim.system.jitnet) against the numpy reference."""

import math

import numpy as np
import pytest

from fedsim.system import jitnet
from fedsim.system.links import water_level
from fedsim.system.network import path_max_min


def test_worked_example():
    # docs/network-model.md "Shared cells": rates 4, 4, 2, 5 Mbps
    cap = np.array([10e6, 10e6, 2e6, 10e6])
    shared = np.array([[0, 2], [0, 2], [1, 2], [1, 2]])
    rates = jitnet.path_max_min(cap, shared, np.array([8e6, 20e6, 15e6]))
    np.testing.assert_allclose(rates, [4e6, 4e6, 2e6, 5e6], rtol=1e-12)


@pytest.mark.parametrize("caps, capacity, level", [
    ([2.0, 20.0], 10.0, 8.0), ([1.0, 2.0], 5.0, math.inf), ([], 1.0, math.inf), ([3.0, 3.0, 3.0], 6.0, 2.0)])
def test_water_level_by_hand(caps, capacity, level):
    assert jitnet.water_level(np.array(caps, dtype=float), capacity) == level


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    cells = int(rng.integers(0, 5))
    cap = rng.lognormal(np.log(5e6), 1.0, n)
    cap[rng.random(n) < 0.1] = math.inf  # unlimited client links
    server = cells
    if cells:
        cell = rng.integers(0, cells, n)
        shared = np.stack([cell, np.full(n, server)], axis=1)
        capacity = np.append(rng.lognormal(np.log(3e7), 1.0, cells), rng.lognormal(np.log(8e7), 1.0))
        shared[rng.random(n) < 0.2, 0] = -1  # some flows skip the cells
        shared = np.sort(shared, axis=1)[:, ::-1].copy()  # -1 padding last
    else:
        shared = np.full((n, 1), server)
        capacity = np.array([rng.lognormal(np.log(8e7), 1.0)])
    expected = path_max_min(cap, shared, capacity)
    got = jitnet.path_max_min(cap, shared.astype(np.int64), capacity)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert jitnet.water_level(cap, capacity[-1]) == pytest.approx(water_level(cap, capacity[-1]), rel=1e-12)
    # conservation: no shared link carries more than its capacity
    for link, c in enumerate(capacity):
        on = (shared == link).any(axis=1)
        assert got[on].sum() <= c * (1 + 1e-9)
