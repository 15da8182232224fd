"""Shared cells: max-min fair shares along multi-link paths (the worked example
of docs/network-model.md number by number), the fairness property on random
cases, cell assignment, settings and whole rounds."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fedsim.config.dump import section_key
from fedsim.system import Payload, SystemConfig, simulate
from fedsim.system.cells import assign_cells
from fedsim.system.links import water_level
from fedsim.system.network import constant_caps, path_max_min, path_schedule

MBPS = 1e6
# docs/network-model.md, "Shared cells": flows 0, 1 in cell A (8 Mbps), flows
# 2, 3 in cell B (20 Mbps), server 15 Mbps; client links 10, 10, 2, 10 Mbps
CAPS = np.array([10, 10, 2, 10]) * MBPS
SHARED_OF = np.array([[0, 1], [0, 1], [0, 2], [0, 2]])  # 0: server, 1: cell A, 2: cell B
CAPACITY = np.array([15, 8, 20]) * MBPS


def test_worked_example_step_by_step():
    # step 1: the water level of each shared link with every flow unfrozen
    assert water_level(CAPS[[0, 1]], 8 * MBPS) == 4 * MBPS  # cell A
    assert water_level(CAPS, 15 * MBPS) == pytest.approx(13 / 3 * MBPS)  # server: 2 + 3L = 15
    assert water_level(CAPS[[2, 3]], 20 * MBPS) == math.inf  # cell B: 12 Mbps of caps
    # cell A is the bottleneck: flows 0, 1 freeze at 4; the server has 15 - 8 = 7 left
    assert water_level(CAPS[[2, 3]], 7 * MBPS) == 5 * MBPS  # step 2: 2 + L = 7
    assert path_max_min(CAPS, SHARED_OF, CAPACITY).tolist() == [4e6, 4e6, 2e6, 5e6]


def test_worked_example_schedule():
    # 1 MB each: flow 3 ends at 8 / 5 = 1.6 s; flows 0, 1 at 8 / 4 = 2 s; flow 2
    # has sent 4 Mbit by then at its 2 Mbps cap and ends 2 s later at 4 s
    out = path_schedule(np.zeros(4), np.full(4, 1e6), constant_caps(CAPS), SHARED_OF, CAPACITY)
    assert out.end_s.tolist() == pytest.approx([2.0, 2.0, 4.0, 1.6], abs=1e-12)


def _is_max_min_fair(rate, caps, shared_of, capacity):
    """The definition: feasible, and every flow has a bottleneck: its own cap,
    or a saturated link on its path where no flow runs faster than it."""
    load = np.zeros(capacity.size)
    for i, links in enumerate(shared_of):
        for link in links[links >= 0]:
            load[link] += rate[i]
    if (load > capacity * (1 + 1e-9)).any() or (rate > caps * (1 + 1e-9)).any():
        return False
    for i, links in enumerate(shared_of):
        if rate[i] >= caps[i] * (1 - 1e-9):
            continue
        ok = False
        for link in links[links >= 0]:
            users = [j for j, other in enumerate(shared_of) if link in other]
            if load[link] >= capacity[link] * (1 - 1e-9) and max(rate[users]) <= rate[i] * (1 + 1e-9):
                ok = True
        if not ok:
            return False
    return True


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0.5, 50.0), min_size=n, max_size=n),
    st.lists(st.integers(-1, 2), min_size=n, max_size=n),
    st.lists(st.floats(1.0, 60.0), min_size=4, max_size=4),
)))
def test_rates_are_max_min_fair(case):
    caps, capacity = np.array(case[0]) * MBPS, np.array(case[2]) * MBPS
    cell = np.array(case[1])
    shared_of = np.stack([np.zeros(caps.size, dtype=int), np.where(cell >= 0, cell + 1, -1)], axis=1)
    rate = path_max_min(caps, shared_of, capacity)
    assert _is_max_min_fair(rate, caps, shared_of, capacity)


def test_inf_capacities_leave_the_caps():
    rate = path_max_min(CAPS, SHARED_OF, np.full(3, math.inf))
    assert rate.tolist() == CAPS.tolist()


# --- assignment and settings ----------------------------------------------------

def _cells(**extra):
    return SystemConfig.model_validate({"cells": {"a": {"capacity_down": "8 Mbps"}, "b": {}}, **extra})


def test_round_robin_and_fractions():
    assert assign_cells(_cells(), 5).tolist() == [0, 1, 0, 1, 0]
    # 10 x (0.25, 0.75) = 2.5, 7.5: floors 2, 7; the leftover goes to the first tie
    assert assign_cells(_cells(cell_assignment={"a": 0.25, "b": 0.75}), 10).tolist() == [0] * 3 + [1] * 7
    assert assign_cells(SystemConfig(), 3).tolist() == [-1, -1, -1]


@pytest.mark.parametrize(("extra", "needle"), [
    ({"cell_assignment": {"c": 1.0}}, "no cell 'c'"),
    ({"cell_assignment": {"a": 0.5}}, "sum to 1"),
    ({"cells": {"a": {"capacity_up": "-1 Mbps"}}}, "must be > 0"),
    ({"cells": {"a": {"capacity": "1 Mbps"}}}, "capacity"),
    ({"cells": {}, "cell_assignment": {"a": 1.0}}, "system.cells is empty"),
])
def test_bad_cell_settings(extra, needle):
    with pytest.raises(ValidationError, match=needle):
        SystemConfig.model_validate({"cells": {"a": {}}, **extra})


def test_defaults_keep_the_cache_keys():
    assert section_key(SystemConfig()) == {}
    assert "cells" not in section_key(SystemConfig.model_validate({"server": {"downlink": "5 Mbps"}}))


# --- whole rounds ---------------------------------------------------------------

def test_a_round_through_cells(tmp_path):
    (tmp_path / "p.csv").write_text("client_id,downlink,uplink,rtt,speed,availability\n"
                                    + "".join(f"{k},{c} Mbps,inf,0 ms,1,1\n" for k, c in enumerate([10, 10, 2, 10])))
    system = SystemConfig.model_validate({
        "clients": {"trace": "p.csv"}, "server": {"downlink": "15 Mbps"},
        "cells": {"A": {"capacity_down": "8 Mbps"}, "B": {"capacity_down": "20 Mbps"}},
        "cell_assignment": {"A": 0.5, "B": 0.5},
    })
    out = simulate(system, client_samples=np.full(4, 400), payload=Payload(down_bytes=1_000_000, up_bytes=0),
                   work_fraction=0.0, rounds=1, seed=0, base_dir=tmp_path)
    assert out.timeline["download_end_s"].tolist() == pytest.approx([2.0, 2.0, 4.0, 1.6])
    assert out.rounds["duration_s"].iloc[0] == pytest.approx(4.0)


def test_unlimited_cells_reproduce_the_static_simulation():
    base = {"clients": {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.6},
                        "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.6},
                        "rtt": {"dist": "uniform", "low": "20 ms", "high": "80 ms"}},
            "server": {"downlink": "50 Mbps", "uplink": "15 Mbps"}}
    run = dict(client_samples=np.full(9, 400), payload=Payload(down_bytes=1_000_000, up_bytes=1_000_000),
               work_fraction=0.3, rounds=2, seed=1)
    static = simulate(SystemConfig.model_validate(base), **run)
    cells = simulate(SystemConfig.model_validate({**base, "cells": {"a": {}, "b": {}}}), **run)
    np.testing.assert_allclose(cells.timeline["upload_end_s"], static.timeline["upload_end_s"], rtol=1e-9)


def test_a_narrow_cell_slows_only_its_clients():
    base = {"clients": {"downlink": "20 Mbps", "uplink": "5 Mbps"},
            "cells": {"slow": {"capacity_down": "10 Mbps", "capacity_up": "2 Mbps"}, "fast": {}}}
    out = simulate(SystemConfig.model_validate(base), client_samples=np.full(4, 400),
                   payload=Payload(down_bytes=1_000_000, up_bytes=1_000_000), work_fraction=0.0, rounds=1, seed=0)
    # round robin: clients 0, 2 share "slow": 5 Mbps down (1.6 s), 1 Mbps up (8 s)
    assert out.timeline["download_end_s"].tolist() == pytest.approx([1.6, 0.4, 1.6, 0.4])
    assert out.timeline["upload_end_s"].tolist() == pytest.approx([9.6, 2.0, 9.6, 2.0])
