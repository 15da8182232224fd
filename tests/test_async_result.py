"""A FedBuff schedule in the synchronous system frames (a round = a server
step): equal to the synchronous simulator's frames in the synchronous limit,
and every byte spent counted once otherwise."""

import numpy as np
import pytest

from fedsim.system import Payload, SystemConfig, simulate
from fedsim.system.async_result import as_system_result
from fedsim.system.async_spec import AsyncConfig
from fedsim.system.asynchronous import simulate_async
from fedsim.system.energy import energy_frame, round_energy
from fedsim.system.frames import SIM_ROUND_COLUMNS, TIMELINE_COLUMNS

MB = Payload(down_bytes=1_000_000, up_bytes=1_000_000)


@pytest.mark.parametrize("server", [{}, {"downlink": "30 Mbps", "uplink": "12 Mbps"}],
                         ids=["unlimited", "contended"])
def test_the_synchronous_limit_gives_the_synchronous_frames(server):
    k = 5
    system = SystemConfig.model_validate({
        "clients": {"downlink": "20 Mbps", "uplink": "5 Mbps", "rtt": "80 ms", "speed": 1.3},
        "server": {**server, "aggregation": "0.7 s"},
    })
    schedule = simulate_async(system, AsyncConfig(concurrency=k, buffer_size=k), client_samples=np.full(k, 300),
                              payload=MB, work_fraction=0.6, steps=4, seed=3)
    sync = simulate(system, client_samples=np.full(k, 300), payload=MB, work_fraction=0.6, rounds=4, seed=3)
    got = as_system_result(schedule)
    assert list(got.rounds.columns) == list(SIM_ROUND_COLUMNS)
    assert list(got.timeline.columns) == list(TIMELINE_COLUMNS)
    for column in ("round", "participants", "selected"):
        assert got.rounds[column].tolist() == sync.rounds[column].tolist(), column
    for column in ("start_s", "end_s", "duration_s", "down_bytes", "up_bytes", "round_bytes", "mean_compute_s",
                   "max_compute_s", "mean_download_s", "mean_upload_s", "mean_wait_s"):
        assert got.rounds[column].to_numpy() == pytest.approx(sync.rounds[column].to_numpy(), rel=1e-9, abs=1e-9), \
            column
    assert [p.tolist() for p in got.participation] == [p.tolist() for p in sync.participation]
    joules = energy_frame(got.timeline, system.energy)
    sync_joules = energy_frame(sync.timeline, system.energy)
    assert round_energy(joules, got.timeline["selected"], k)["round_energy_j"].to_numpy() == pytest.approx(
        round_energy(sync_joules, sync.timeline["selected"], k)["round_energy_j"].to_numpy(), rel=1e-9)


def test_heterogeneous_clients_every_update_counted_once():
    system = SystemConfig.model_validate({
        "clients": {"downlink": {"dist": "lognormal", "median": "10 Mbps", "sigma": 0.8}, "uplink": "4 Mbps",
                    "speed": {"dist": "lognormal", "median": 1.0, "sigma": 0.7}},
    })
    schedule = simulate_async(system, AsyncConfig(concurrency=8, buffer_size=3), client_samples=np.full(20, 400),
                              payload=MB, work_fraction=1.0, steps=12, seed=1)
    got = as_system_result(schedule)
    updates = schedule.updates
    assert got.rounds["round_bytes"].sum() == pytest.approx((updates["down_bytes"] + updates["up_bytes"]).sum())
    assert len(got.timeline) == len(updates)
    assert got.rounds["participants"].tolist() == [3] * 12
    assert (got.rounds["duration_s"] > 0).all()
    assert got.rounds["end_s"].tolist() == schedule.steps["time_s"].tolist()
    used = updates[updates["step"] >= 1]
    for j, clients in enumerate(got.participation, start=1):
        assert clients.tolist() == sorted(used.loc[used["step"] == j, "client_id"].tolist())
    # a used update's wait: from its arrival to its step, never negative
    assert (got.rounds["mean_wait_s"] >= 0).all()
    assert set(got.timeline.loc[~got.timeline["kept"], "drop_reason"]) <= {"dropout", "deadline", "offline",
                                                                            "stale", "unused", "end"}
