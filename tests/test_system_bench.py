"""The system benchmark runs, and its naive reference model keeps FIFO order."""

import math

import numpy as np

from fedsim.system import Payload, SystemConfig
from fedsim.system.bench import bench_des, naive_fifo_rounds
from fedsim.system.profiles import ClientProfiles


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


def test_bench_des_quick():
    figures = bench_des(scale=0.01)
    assert set(figures) == {
        "des_client_rounds_per_s", "des_client_rounds_per_cpu_s", "des_naive_client_rounds_per_s", "des_speedup_vs_naive",
        "des_scaling_1000_us_per_client_round", "des_scaling_10000_us_per_client_round",
        "des_scaling_100000_us_per_client_round", "des_scaling_spread",
    }
    assert all(value > 0 for value in figures.values())
