"""The system model's compute time follows the training it models (epochs x
samples, against t_comp_full's reference of 5 epochs x reference_samples), and
an upload holds the server's ingress only once its bytes have reached it
(rtt/2 after the client starts sending). Hand-computed numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsim import config, pipeline
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, layer_shapes
from fedsim.system import Payload, SystemConfig, simulate
from fedsim.system.payload import work_units

SCENARIOS = Path(__file__).parent.parent / "scenarios"


# --------------------------------------------------------------------------- compute time


def test_work_units_count_sample_passes_against_5_epochs_of_reference_samples():
    # 5 epochs x 400 samples is the reference (1); 2 epochs x 100 samples = 200 / 2000
    np.testing.assert_array_equal(work_units([400, 100, 0], 5, 400), [1.0, 0.25, 0.0])
    np.testing.assert_array_equal(work_units([400, 100], 2, 400), [0.4, 0.1])
    np.testing.assert_array_equal(work_units([300], 10, 200), [3.0])  # 3000 / 1000
    for bad in ({"local_epochs": 0}, {"reference_samples": 0}, {"local_epochs": 1.5}):
        args = {"local_epochs": 5, "reference_samples": 400, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            work_units([1], **args)


def infinite_system(**compute):
    return SystemConfig.model_validate({"compute": {"t_comp_full": "10 s", **compute}})


@pytest.mark.parametrize(("epochs", "expected"), [(5, [10.0, 5.0]), (10, [20.0, 10.0]), (1, [2.0, 1.0])])
def test_compute_seconds_scale_with_local_epochs(epochs, expected):
    # t_comp_full 10 s times 5 epochs of 400 samples: 400 and 200 samples for `epochs`
    # epochs take 10 s x epochs x samples / 2000; on infinite links a round is its compute
    result = simulate(infinite_system(), client_samples=np.array([400, 200]),
                      payload=Payload(down_bytes=1000, up_bytes=1000), work_fraction=1.0,
                      rounds=1, seed=0, local_epochs=epochs)
    assert result.timeline["compute_s"].tolist() == expected
    assert result.rounds["duration_s"].iloc[0] == expected[0]


def test_the_work_fraction_and_reference_samples_still_apply():
    # 10 s x 0.5 x (2 epochs x 300 samples) / (5 x 200) / speed 1 = 3 s
    result = simulate(infinite_system(reference_samples=200), client_samples=np.array([300]),
                      payload=Payload(down_bytes=1, up_bytes=1), work_fraction=0.5,
                      rounds=1, seed=0, local_epochs=2)
    assert result.timeline["compute_s"].iloc[0] == 3.0


def tiny_scenario(tiny_path: Path, *overrides: str):
    return config.load(tiny_path, overrides)


def test_the_system_stage_is_keyed_on_local_epochs(tiny_path: Path, cache_root: Path):
    mask = Mask.dense(layer_shapes(LENET_SIZES))
    samples = np.full(4, 100)
    results, keys = {}, {}
    for epochs in (5, 10):
        scenario = tiny_scenario(tiny_path, f"fl.local_epochs={epochs}")
        system, payload, work = pipeline.system_stage(scenario, mask, samples, tiny_path.parent)
        results[epochs] = system
        keys[epochs] = pipeline.system_key(scenario, payload, work, samples, tiny_path.parent)
    assert keys[5] != keys[10]
    np.testing.assert_allclose(results[10].timeline["compute_s"], 2 * results[5].timeline["compute_s"])
    # the tiny scenario's clients hold 100 samples: 10 s x 100 / 400 at 5 epochs
    assert results[5].rounds["mean_compute_s"].iloc[0] == pytest.approx(2.5)


@pytest.mark.parametrize("name", ["mobile.yaml", "paper.yaml", "quickstart.yaml"])
def test_shipped_scenarios_compute_exactly_what_they_did(name):
    """The shipped scenarios train 5 local epochs, the reference: their compute
    time is bit for bit the former ``t_comp_full x samples / reference_samples``."""
    scenario = config.load(SCENARIOS / name)
    assert scenario.fl.local_epochs == 5
    samples = np.arange(0, 2001, dtype=float)
    ref = scenario.system.compute.reference_samples
    units = work_units(samples, scenario.fl.local_epochs, ref)
    np.testing.assert_array_equal(scenario.system.compute.t_comp_full * units,
                                  scenario.system.compute.t_comp_full * (samples / ref))


# --------------------------------------------------------------------------- upload latency

# Client 0: rtt 2 s, speed 12; client 1: rtt 0, speed 4. t_comp_full 12 s on 400 samples.
TRACE = """client_id,downlink,uplink,rtt,speed,availability
0,inf,inf,2 s,12,1
1,inf,inf,0 s,4,1
"""


def rtt_example(tmp_path: Path, **rounds) -> object:
    (tmp_path / "profiles.csv").write_text(TRACE)
    system = SystemConfig.model_validate({
        "clients": {"trace": "profiles.csv"},
        "server": {"uplink": "8 Mbps", "aggregation": "0 s"},
        "rounds": rounds,
        "compute": {"t_comp_full": "12 s"},
    })
    return simulate(system, client_samples=np.array([400, 400]),
                    payload=Payload(down_bytes=1_000_000, up_bytes=1_000_000),  # 8 Mbit
                    work_fraction=1.0, rounds=1, seed=0, base_dir=tmp_path)


def test_an_upload_reaches_the_ingress_half_an_rtt_after_it_leaves_the_client(tmp_path):
    # client 0 holds the model at 1 s (rtt/2), computes 12/12 = 1 s to 2 s and sends;
    # its bytes reach the 8 Mbps ingress at 2 + 1 = 3 s. Client 1 holds it at 0, computes
    # 12/4 = 3 s, and its bytes reach the ingress at 3 s too. The two share 8 Mbps: 4 Mbps
    # each, 8 Mbit in 2 s, both at the server at 5 s (the ingress is the last hop).
    # (With the half-RTT after the ingress, client 0 would have crossed it alone in
    # 2..3 s and arrived at 4 s, client 1 alone in 3..4 s: a 4 s round.)
    result = rtt_example(tmp_path)
    rows = result.timeline.set_index("client_id")
    assert rows["download_end_s"].tolist() == [1.0, 0.0]
    assert rows["compute_end_s"].tolist() == [2.0, 3.0]
    assert rows["upload_start_s"].tolist() == [2.0, 3.0]
    assert rows["upload_end_s"].tolist() == [5.0, 5.0]
    assert rows["up_bytes"].tolist() == [1e6, 1e6]
    first = result.rounds.iloc[0]
    assert first["duration_s"] == 5.0
    assert first["mean_upload_s"] == pytest.approx((3.0 + 2.0) / 2)


def test_a_deadline_cuts_an_upload_at_what_crossed_the_ingress(tmp_path):
    # deadline 4 s: from 3 s each flow has crossed 1 s x 4 Mbps = 4 Mbit = 500,000 B
    result = rtt_example(tmp_path, deadline="4 s")
    rows = result.timeline.set_index("client_id")
    assert rows["up_bytes"].tolist() == [500_000.0, 500_000.0]
    assert rows["drop_reason"].tolist() == ["deadline", "deadline"]
    # deadline 2.5 s: client 0 has been sending for 0.5 s, but nothing has reached the
    # ingress yet (it arrives at 3 s): the server carried 0 bytes of it
    result = rtt_example(tmp_path, deadline="2.5 s")
    rows = result.timeline.set_index("client_id")
    assert rows.loc[0, "upload_start_s"] == 2.0 and rows.loc[0, "upload_end_s"] == 2.5
    assert rows["up_bytes"].tolist() == [0.0, 0.0]
    assert rows.loc[1, "compute_s"] == 2.5
    assert result.rounds["up_bytes"].iloc[0] == 0.0
