"""Device speed from a trace (`fedsim.system.devices`): compute seconds from
seconds per sample or FLOP/s, hand-computed; bad rows; the cache key; exit 2."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from fedsim import config
from fedsim.errors import InputError
from fedsim.learn.counts import LENET5_FLOPS_PER_SAMPLE, LENET_FLOPS_PER_SAMPLE
from fedsim.pipeline import keys
from fedsim.system.devices import read_device_trace
from fedsim.system.payload import Payload
from fedsim.system.sim import simulate
from fedsim.system.spec import SystemConfig

TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"
PAYLOAD = Payload(down_bytes=1000, up_bytes=1000)


def _simulate(tmp_path: Path, csv_text: str, samples, *, work: float, epochs: int, extra=None):
    (tmp_path / "dev.csv").write_text(csv_text)
    system = SystemConfig.model_validate({"clients": {"device_trace": "dev.csv"}, **(extra or {})})
    return simulate(system, client_samples=np.array(samples), payload=PAYLOAD, work_fraction=work,
                    rounds=2, seed=0, local_epochs=epochs, base_dir=tmp_path)


def test_seconds_per_sample_times_samples_epochs_and_work(tmp_path):
    # compute_s = samples x epochs x s_per_sample x work: 100*2*0.01*0.5 = 1.0,
    # 200*2*0.002*0.5 = 0.4, 50*2*0.1*0.5 = 5.0 (rows in any order)
    result = _simulate(tmp_path, "client_id,s_per_sample\n2,0.1\n0,0.01\n1,0.002\n", [100, 200, 50],
                       work=0.5, epochs=2)
    for round_num in (1, 2):
        rows = result.timeline[result.timeline["round"] == round_num]
        np.testing.assert_allclose(rows["compute_s"], [1.0, 0.4, 5.0], rtol=1e-12)
    # links and rtt are ideal, aggregation 0 s: a round lasts as long as the slowest device
    np.testing.assert_allclose(result.rounds["duration_s"], [5.0, 5.0], rtol=1e-12)
    # speed against the reference device: 10 s / (5 x 400) = 5 ms per sample
    np.testing.assert_allclose(result.profiles.speed, [0.5, 2.5, 0.05])
    np.testing.assert_allclose(result.profiles.s_per_sample, [0.01, 0.002, 0.1])


def test_milliseconds_per_sample_equal_seconds(tmp_path):
    ms = _simulate(tmp_path, "client_id,ms_per_sample\n0,10\n1,2\n", [100, 200], work=1.0, epochs=1)
    np.testing.assert_allclose(ms.timeline["compute_s"].to_numpy()[:2], [1.0, 0.4], rtol=1e-12)


def test_flops_per_second_use_the_models_flops_per_sample(tmp_path):
    # LeNet-5 trains 2,263,920 FLOPs per sample; the pipeline hands the simulator
    # work_fraction = work x F_model / F_LeNet-300-100. At 1 GFLOP/s and 3 epochs:
    # 100 x 3 x 2,263,920 x 0.25 / 1e9 = 0.169794 s; at 0.5 GFLOP/s over 40 samples
    # 40 x 3 x 2,263,920 x 0.25 / 5e8 = 0.1358352 s
    work = 0.25 * LENET5_FLOPS_PER_SAMPLE / LENET_FLOPS_PER_SAMPLE
    result = _simulate(tmp_path, "client_id,flops_per_s\n0,1e9\n1,5e8\n", [100, 40], work=work, epochs=3)
    np.testing.assert_allclose(result.timeline["compute_s"].to_numpy()[:2], [0.169794, 0.1358352], rtol=1e-12)


def test_without_a_device_trace_compute_is_unchanged(tmp_path):
    # t_comp_full 10 s x work 0.5 x (2 x 400) / (5 x 400) / speed 1 = 2 s
    plain = simulate(SystemConfig(), client_samples=np.array([400]), payload=PAYLOAD, work_fraction=0.5,
                     rounds=1, seed=0, local_epochs=2)
    assert plain.timeline["compute_s"].tolist() == [2.0]
    assert plain.profiles.s_per_sample is None and "s_per_sample" not in plain.profiles.to_frame()


def test_the_profiles_round_trip_with_seconds_per_sample(tmp_path):
    from fedsim.system.sim import load_result, save_result

    result = _simulate(tmp_path, "client_id,s_per_sample\n0,0.01\n1,0.02\n", [10, 10], work=1.0, epochs=1)
    save_result(result, tmp_path / "out")
    back = load_result(tmp_path / "out")
    np.testing.assert_array_equal(back.profiles.s_per_sample, [0.01, 0.02])


@pytest.mark.parametrize(("text", "needle"), [
    ("client_id,s_per_sample\n0,0.01\n1,nan\n", "line 3, column s_per_sample: 'nan' must be a finite number > 0"),
    ("client_id,s_per_sample\n0,-2\n1,0.1\n", "line 2, column s_per_sample: '-2' must be a finite number > 0"),
    ("client_id,flops_per_s\n0,fast\n1,1e9\n", "line 2, column flops_per_s: 'fast' must be a finite number > 0"),
    ("client_id,s_per_sample\n0,0.01\n\n7,0.1\n", "line 4, column client_id: '7' is not a client id in 0..1"),
    ("client_id,s_per_sample\n0,0.01\n0,0.1\n", "line 3, column client_id: client 0 repeats line 2"),
    ("client_id,s_per_sample\n0,0.01\n", "no row for client_id 1"),
    ("client_id,s_per_sample\n0,0.01,3\n", "line 2: 3 cells, expected 2"),
    ("client_id,speed\n0,1\n", "line 1: unknown column 'speed'"),
    ("client_id,s_per_sample,flops_per_s\n0,1,1\n", "line 1: 2 speed columns"),
    ("s_per_sample\n0.1\n", "line 1: no client_id column"),
    ("", "the file is empty"),
])
def test_bad_rows_name_the_file_line_column_and_value(tmp_path, text, needle):
    (tmp_path / "dev.csv").write_text(text)
    with pytest.raises(InputError) as info:
        read_device_trace(tmp_path / "dev.csv", 2)
    assert f"system.clients.device_trace '{tmp_path / 'dev.csv'}'" in str(info.value)
    assert needle in str(info.value)


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"nope\.csv'.*cannot read the file"):
        read_device_trace(tmp_path / "nope.csv", 2)


def test_a_device_trace_replaces_speed_and_excludes_the_profile_trace():
    with pytest.raises(ValidationError, match="remove speed"):
        SystemConfig.model_validate({"clients": {"device_trace": "d.csv", "speed": 2.0}})
    with pytest.raises(ValidationError, match="both give every client's speed"):
        SystemConfig.model_validate({"clients": {"device_trace": "d.csv", "trace": "p.csv"}})
    with pytest.raises(ValidationError, match="empty path"):
        SystemConfig.model_validate({"clients": {"device_trace": " "}})


def test_the_trace_bytes_join_the_system_key(tmp_path):
    plain = config.load(TINY)
    with_trace = config.load(TINY, ["system.clients.device_trace=dev.csv"])
    samples = np.full(4, 100, dtype=np.int64)

    def key(scenario):
        return keys.system_key(scenario, PAYLOAD, 1.0, samples, tmp_path)

    assert "device_trace_sha256" not in keys.system_facts(plain, tmp_path)
    (tmp_path / "dev.csv").write_text("client_id,s_per_sample\n0,0.01\n1,0.01\n2,0.01\n3,0.01\n")
    first = key(with_trace)
    assert first != key(plain)
    (tmp_path / "dev.csv").write_text("client_id,s_per_sample\n0,0.02\n1,0.01\n2,0.01\n3,0.01\n")
    assert key(with_trace) != first


def test_a_bad_device_trace_exits_2_before_any_stage(tmp_path, monkeypatch, capsys):
    from fedsim.cli import main

    def no_stage(*_args, **_kwargs):
        raise AssertionError("a stage ran")

    monkeypatch.setattr(importlib.import_module("fedsim.pipeline.runner"), "prepare_data", no_stage)
    (tmp_path / "dev.csv").write_text("client_id,s_per_sample\n0,0.01\n1,0.01\n2,-1\n3,0.01\n")
    tiny = TINY.read_text().replace('    rtt: "50 ms"\n', '    rtt: "50 ms"\n    device_trace: dev.csv\n')
    (tmp_path / "s.yaml").write_text(tiny)
    assert main(["scenario", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "dev.csv' line 4, column s_per_sample: '-1' must be a finite number > 0" in err
