"""Samples of any shape through the trainers, and model factories found beside the scenario.

A synthetic user npz of ``[N, 3, 16, 16]`` uint8 images (10 classes: class c
is a bright band in channel c mod 3, rows c..c+2, over dark noise) and a tiny
CNN factory in a module written next to the scenario (no ``PYTHONPATH``):

* ``fedsim scenario`` runs 2 rounds end to end with an external partition
  and with a shards partition (exit 0, one metrics.csv row per target);
* the batched trainer (client-stacked engine and ``vmap``) and the per-client
  reference loop agree within 1e-5 for 2 rounds; data held as flat rows or
  in its own shape trains bit-identically;
* a model whose input does not fit the data exits 2 naming ``model`` and
  ``data.npz`` (a forward pass that fails, an ``input_shape`` of the wrong size);
* a factory module that is nowhere says where it was looked for, and the
  scenario's folder is off ``sys.path`` again after the import.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedsim.cli import main
from fedsim.learn.federated import ClientData, round_schedule, train
from fedsim.learn.generic import GenericTrainer
from fedsim.learn.masks import Mask
from fedsim.learn.model import as_inputs, evaluate
from fedsim.learn.reference import train_reference
from fedsim.learn.spec import FLConfig, ModelConfig
from fedsim.learn.zoo import DEFAULT_INPUT_SHAPE, default_input_shape, resolve

SHAPE = (3, 16, 16)
#: The factory module's name: unique to this file, so no other test's import of it is reused.
MODULE = "any_shape_tiny_cnn"
FACTORY_CODE = '''"""A tiny CNN for 3x16x16 images (written by tests/test_any_shape.py)."""
from torch import nn


def cnn(channels=3, classes=10, width=4):
    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(width * 8 * 8, classes))
'''
CFG = FLConfig(batch_size=16, local_epochs=2, lr=0.05)


def band_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images ``[n, 3, 16, 16]`` and labels 0..9 (module docstring)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 60, size=(n, *SHAPE)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, c % 3, c: c + 3, :] = 255
    return x, y.astype(np.int64)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scenario folder holding ``d.npz`` (400 train, 100 test images) and the
    factory module; a private cache; the module forgotten before and after."""
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    x_train, y_train = band_images(400, 1)
    x_test, y_test = band_images(100, 2)
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (tmp_path / f"{MODULE}.py").write_text(FACTORY_CODE)
    sys.modules.pop(MODULE, None)
    yield tmp_path
    sys.modules.pop(MODULE, None)


def scenario(folder: Path, partition: str, model: str = f'{{factory: "{MODULE}:cnn"}}') -> Path:
    path = folder / "shapes.yaml"
    path.write_text(f"""name: any-shape
seed: 0
model: {model}
data: {{npz: d.npz, unlabeled: 0, partition: {partition}}}
fl: {{local_epochs: 2, batch_size: 20}}
methods:
  original: {{}}
system:
  clients: {{downlink: "20 Mbps", uplink: "5 Mbps", rtt: "50 ms"}}
targets: [0.3, 0.99]
rounds: {{max: 2, checkpoint_every: 1}}
device: cpu
report: {{formats: []}}
""")
    return path


# -- end to end through the CLI -------------------------------------------------------------


#: The tiny CNN's parameters, by hand: conv 3->4 of 3x3 (108 + 4 biases), fc 4x8x8 -> 10 (2560 + 10).
CNN_PARAMS = 3 * 4 * 9 + 4 + 4 * 8 * 8 * 10 + 10


@pytest.mark.parametrize("partition", ["{scheme: external, file: clients.csv}",
                                       "{scheme: shards, num_clients: 4, shard_size: 50, shards_per_client: 2}"])
def test_a_cnn_on_3x16x16_images_runs_end_to_end(folder: Path, partition: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "clients.csv").write_text("client_id,index\n" + "".join(
        f"{k},{i}\n" for k in range(4) for i in range(k, 400, 4)))
    path = scenario(folder, partition)
    assert main(["validate", str(path)]) == 0
    out = folder / "out"
    # no PYTHONPATH: the factory's module is found in the scenario's folder
    assert str(folder) not in sys.path
    assert main(["scenario", str(path), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    assert str(folder) not in sys.path  # the folder was on the path only while importing
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2] and rounds["participants"].tolist() == [4, 4]
    assert rounds["accuracy"].iloc[-1] > 0.3  # 10 classes: chance is 0.1
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["target_accuracy"].tolist() == [0.3, 0.99]
    assert metrics["params"].tolist() == [CNN_PARAMS] * 2
    # 4 clients, each downloading and uploading every float32 parameter
    assert metrics["comm_bytes_per_round"].tolist() == [4 * 2 * 4 * CNN_PARAMS] * 2


def test_a_model_whose_input_does_not_fit_the_data_exits_2_naming_both(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    partition = "{scheme: iid, num_clients: 2}"
    out = folder / "out"
    # a 1-channel CNN on 3-channel images: its forward pass fails at the run's start
    one_channel = scenario(folder, partition, f'{{factory: "{MODULE}:cnn", kwargs: {{channels: 1}}}}')
    assert main(["scenario", str(one_channel), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"model.factory '{MODULE}:cnn' and data.npz '{folder / 'd.npz'}' do not fit" in err
    assert "input [2, 3, 16, 16] (the data's 3x16x16 samples)" in err and "1 channels" in err
    # the built-in LeNet-5 takes [1, 28, 28]
    lenet5 = scenario(folder, partition, "{arch: lenet-5}")
    assert main(["scenario", str(lenet5), "--out", str(out), "--quiet"]) == 2
    assert "model.arch 'lenet-5' and data.npz" in capsys.readouterr().err
    # an input_shape of the wrong size is refused without torch, by validate too
    wrong = scenario(folder, partition, f'{{factory: "{MODULE}:cnn", input_shape: [3, 8, 8]}}')
    assert main(["validate", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert f"model '{MODULE}:cnn' and data.npz" in err
    assert "model.input_shape [3, 8, 8] holds 192 values; the data's samples 3x16x16 hold 768" in err
    # LeNet-300-100 takes 784 values only
    lenet = scenario(folder, partition, "{arch: lenet-300-100}")
    assert main(["validate", str(lenet)]) == 2
    assert "samples of 3x16x16 = 768 values" in capsys.readouterr().err
    assert not out.exists()


def test_a_factory_module_found_nowhere_says_where_it_looked(folder: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario(folder, "{scheme: iid, num_clients: 2}", '{factory: "not_beside_it_xyz:cnn"}')
    assert main(["scenario", str(path), "--out", str(folder / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.factory: cannot import module 'not_beside_it_xyz'" in err
    assert f"looked in the scenario's folder {folder}, then the Python path" in err


# -- the trainers on shaped samples ---------------------------------------------------------


def shaped_clients(sizes: tuple[int, ...] = (37, 16, 5, 30)) -> tuple[ClientData, tuple]:
    """Clients holding ``[N, 3, 16, 16]`` samples (partial batches, a client
    smaller than a batch) and a test set of 50 images."""
    n = sum(sizes)
    x, y = band_images(n, 3)
    bounds = np.cumsum((0, *sizes))
    clients = ClientData.from_arrays(x, y, [np.arange(bounds[i], bounds[i + 1]) for i in range(len(sizes))])
    test_x, test_y = band_images(50, 4)
    return clients, (test_x, test_y)


def test_client_data_keeps_the_sample_shape() -> None:
    clients, _ = shaped_clients()
    assert clients.inputs.shape == (88, *SHAPE) and clients.inputs.dtype == torch.float32
    assert clients.sample_shape == SHAPE and clients.sample_size == 768
    assert float(clients.inputs.max()) == 1.0  # uint8 / 255
    flat = ClientData.from_arrays(np.zeros((4, 28, 28), np.uint8), np.zeros(4), [np.arange(4)])
    assert flat.sample_shape == (784,)  # LeNet-300-100's rows, as before
    with pytest.raises(ValueError, match=r"expected \[N, \*sample_shape\]"):
        ClientData(torch.zeros(4), torch.zeros(4, dtype=torch.int64), (np.arange(4),))


def test_default_input_shape_follows_the_data() -> None:
    assert default_input_shape((28, 28)) == default_input_shape((784,)) == DEFAULT_INPUT_SHAPE == (1, 28, 28)
    assert default_input_shape((1, 28, 28)) == (1, 28, 28)
    assert default_input_shape(SHAPE) == SHAPE
    assert default_input_shape((10, 12)) == (1, 10, 12)  # one channel
    assert default_input_shape((20,)) == (20,)  # tabular rows


def test_batched_and_reference_trainers_agree_on_shaped_samples(folder: Path) -> None:
    spec = resolve(ModelConfig(factory=f"{MODULE}:cnn"), seed=0, sample_shape=SHAPE, base_dir=folder)
    assert spec.input_shape == SHAPE
    clients, test = shaped_clients()
    theta = spec.initial_params()
    mask = Mask.dense(spec.layout.shapes)
    got: dict[str, list] = {"batched": [], "reference": []}
    batched = train(theta, mask, clients, test, CFG, seed=0, rounds=2, model=spec,
                    on_round=lambda r, p, rec: got["batched"].append(p))
    reference = train_reference(theta, mask, clients, test, CFG, seed=0, rounds=2, model=spec,
                                on_round=lambda r, p, rec: got["reference"].append(p))
    assert len(got["batched"]) == len(got["reference"]) == 2
    for a, b in zip(got["batched"], got["reference"], strict=True):
        assert a.max_abs_diff(b) < 1e-5
    assert a.max_abs_diff(theta) > 1e-3  # it trained
    assert np.allclose(batched.accuracy, reference.accuracy, atol=1e-5)
    assert np.allclose(batched.rounds["loss"], reference.rounds["loss"], atol=1e-5)
    # evaluate takes the shaped test set through the model's forward
    accuracy, loss = evaluate(got["batched"][-1], as_inputs(test[0]), torch.as_tensor(test[1]),
                              forward=spec.forward)
    assert accuracy == pytest.approx(batched.accuracy[-1]) and loss == pytest.approx(batched.rounds["loss"].iloc[-1], abs=1e-5)


def test_both_engines_and_both_layouts_give_the_same_round(folder: Path) -> None:
    """``vmap`` and the client-stacked engine agree within float32 rounding;
    the same samples held flat (``[N, 768]``, as the data stage holds them)
    or shaped train bit-identically."""
    spec = resolve(ModelConfig(factory=f"{MODULE}:cnn"), seed=0, sample_shape=SHAPE, base_dir=folder)
    shaped, _ = shaped_clients()
    flat = ClientData(shaped.inputs.reshape(len(shaped.labels), -1).clone(), shaped.labels, shaped.client_indices)
    assert flat.sample_shape == (768,)
    theta = spec.initial_params()
    mask = Mask.dense(spec.layout.shapes)
    schedule = round_schedule(shaped, np.arange(shaped.num_clients), CFG, seed=1, round_num=1)
    cpu = torch.device("cpu")
    out = {(engine, layout): GenericTrainer(spec, data, mask, CFG, cpu, engine=engine).train_round(theta, schedule)
           for engine in ("vmap", "stacked") for layout, data in (("shaped", shaped), ("flat", flat))}
    for engine in ("vmap", "stacked"):
        assert out[engine, "shaped"].max_abs_diff(out[engine, "flat"]) == 0.0
    assert out["vmap", "shaped"].max_abs_diff(out["stacked", "shaped"]) < 1e-5
    with pytest.raises(ValueError, match=r"samples of shape \[3, 8, 8\] \(192 values\)"):
        small = ClientData(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.int64), (np.arange(4),))
        GenericTrainer(spec, small, mask, CFG, cpu)
