"""The generic batched trainer (any nn.Module) and the model zoo: equality with
the hand-written LeNet-300-100 kernel and with the per-client reference loop,
masks, LeNet-5's counts, and bad factories."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedsim.errors import InputError
from fedsim.learn import counts
from fedsim.learn.federated import ClientData, round_flops, train
from fedsim.learn.masks import Mask
from fedsim.learn.model import Params, encoder, init_dae
from fedsim.learn.reference import LeNet, train_reference
from fedsim.learn.spec import FLConfig, ModelConfig
from fedsim.learn.zoo import Layout, LeNet5, count_macs, resolve, spec_from_module

# Unequal clients (partial batches, one client smaller than a batch, one empty).
SIZES = (70, 37, 5, 0)
CFG = FLConfig(batch_size=16, local_epochs=2)


@pytest.fixture(scope="module")
def clients(make_clients) -> ClientData:
    return make_clients(SIZES, learnable=True)


@pytest.fixture(scope="module")
def test_set(clients: ClientData) -> tuple[torch.Tensor, torch.Tensor]:
    return clients.inputs[:60].clone(), clients.labels[:60].clone()


def tiny_cnn() -> nn.Module:
    """A small CNN (conv 4@3x3 stride 2 - ReLU - fc 10), bias-less last layer."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10, bias=False))


def test_generic_path_equals_the_hand_written_kernel(clients: ClientData, test_set: tuple) -> None:
    theta0 = encoder(init_dae("glorot_uniform", 3))
    spec = spec_from_module(LeNet(), (784,), name="lenet as a module")  # not `reference`: generic path
    assert spec.layout.shapes == theta0.shapes  # nn.Linear maps onto the Keras layout exactly
    want: dict[int, Params] = {}
    got: dict[int, Params] = {}
    kernel = train(theta0, Mask.dense_like(theta0), clients, test_set, CFG, seed=5, rounds=2,
                   on_round=lambda r, p, _: want.__setitem__(r, p))
    generic = train(theta0, Mask.dense_like(theta0), clients, test_set, CFG, seed=5, rounds=2, model=spec,
                    on_round=lambda r, p, _: got.__setitem__(r, p))
    for r in (1, 2):
        assert got[r].max_abs_diff(want[r]) < 1e-5
        assert got[r].max_abs_diff(theta0) > 1e-2  # it trained
    np.testing.assert_allclose(generic.accuracy, kernel.accuracy, atol=1e-6)
    assert generic.meta["model"] == "lenet as a module"


def test_batched_cnn_matches_the_reference_loop(clients: ClientData, test_set: tuple) -> None:
    spec = resolve(ModelConfig(arch="lenet-5"), seed=0)
    theta0 = spec.initial_params()
    mask = Mask.dense_like(theta0)
    cfg = FLConfig(batch_size=16, local_epochs=2, lr=0.05)
    finals: dict[str, Params] = {}
    batched = train(theta0, mask, clients, test_set, cfg, seed=1, rounds=3, model=spec, block_clients=2,
                    on_round=lambda r, p, _: finals.__setitem__("batched", p))
    reference = train_reference(theta0, mask, clients, test_set, cfg, seed=1, rounds=3, model=spec,
                                on_round=lambda r, p, _: finals.__setitem__("reference", p))
    np.testing.assert_allclose(batched.accuracy, reference.accuracy, atol=1e-6)
    np.testing.assert_allclose(batched.rounds["loss"], reference.rounds["loss"], rtol=1e-4)
    assert finals["batched"].max_abs_diff(finals["reference"]) < 1e-4
    assert batched.accuracy[-1] > 0.2  # it learns the tiles (chance: 0.1)
    np.testing.assert_array_equal(batched.client_rounds["local_steps"], reference.client_rounds["local_steps"])


def test_pruned_weights_stay_zero_on_the_generic_path(clients: ClientData, test_set: tuple) -> None:
    spec = spec_from_module(tiny_cnn(), (1, 28, 28), name="tiny")
    theta0 = spec.initial_params()
    gen = torch.Generator().manual_seed(2)
    mask = Mask(tuple(torch.rand(s, generator=gen) < 0.5 for s in spec.layout.shapes))
    seen = []
    train(theta0, mask, clients, test_set, CFG, seed=0, rounds=2, model=spec,
          on_round=lambda r, p, _: seen.append(p))
    for params in seen:
        for w, m in zip(params.weights, mask.layers, strict=True):
            assert torch.all(w[~m] == 0)
            assert torch.count_nonzero(w[m]) == int(m.sum())  # survivors trained, not zeroed
    # the bias-less layer's Params bias is a zero placeholder that is never trained
    assert torch.all(seen[-1].biases[-1] == 0)


def test_layout_round_trips_and_counts_lenet5() -> None:
    module = LeNet5()
    layout = Layout.of(module)
    assert layout.shapes == ((25, 6), (150, 16), (400, 120), (120, 84), (84, 10))
    named = {k: v.detach() for k, v in module.named_parameters()}
    back = layout.to_named(layout.to_params(named))
    assert all(torch.equal(back[k], named[k]) for k in named)
    assert sum(p.numel() for p in module.parameters()) == counts.lenet5_num_params() == 61_706
    assert count_macs(module, (1, 28, 28)) == list(counts.lenet5_layer_macs())
    assert counts.LENET5_FLOPS_PER_SAMPLE == 4 * 416_520 + 2 * (416_520 - 117_600) == 2_263_920
    # LeNet-300-100 is the reference: scale exactly 1, and round_flops agrees with counts
    assert counts.compute_scale(counts.LENET_FLOPS_PER_SAMPLE) == 1.0
    assert round_flops([400], 5) == 400 * 5 * counts.LENET_FLOPS_PER_SAMPLE
    assert counts.compute_scale(counts.LENET5_FLOPS_PER_SAMPLE) == pytest.approx(2.00916, abs=1e-5)
    assert resolve(ModelConfig(arch="lenet-5"), seed=0).compute_scale == pytest.approx(2.00916, abs=1e-5)


def test_resolve_is_seeded_and_leaves_the_global_generator_alone() -> None:
    before = torch.random.get_rng_state()
    a = resolve(ModelConfig(arch="lenet-5"), seed=0).initial_params()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a.equal(resolve(ModelConfig(arch="lenet-5"), seed=0).initial_params())
    assert not a.equal(resolve(ModelConfig(arch="lenet-5"), seed=1).initial_params())


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module ``my_models`` on sys.path with good and bad factories."""
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        from torch import nn
        NOT_CALLABLE = 3
        def mlp(hidden=32):
            return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        def seven_classes():
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))
        def with_batchnorm():
            return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(1352, 10))
        def not_a_module():
            return "model"
    """))
    (tmp_path / "broken_models.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models"
    for name in ("my_models", "broken_models"):
        sys.modules.pop(name, None)


def test_a_factory_model_trains(factories: str, clients: ClientData, test_set: tuple) -> None:
    spec = resolve(ModelConfig(factory="my_models:mlp", kwargs={"hidden": 8}), seed=0)
    assert spec.layout.shapes == ((784, 8), (8, 10))
    assert spec.flops_per_sample == counts.training_flops_per_sample([784 * 8, 80])
    trace = train(spec.initial_params(), Mask.dense(spec.layout.shapes), clients, test_set, CFG,
                  seed=0, rounds=1, model=spec)
    assert trace.num_rounds == 1


def test_an_input_shape_that_does_not_fit_the_data_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"model.input_shape: \[1, 32, 32\] holds 1024 values; the dataset's samples hold 784"):
        resolve(ModelConfig(arch="lenet-5", input_shape=(1, 32, 32)), seed=0)


@pytest.mark.parametrize(("factory", "message"), [
    ("no_such_module_xyz:f", "model.factory: cannot import module 'no_such_module_xyz'"),
    ("broken_models:f", "model.factory: cannot import module 'broken_models' of 'broken_models:f' (RuntimeError: boom)"),
    ("my_models:missing", "model.factory: module 'my_models' has no attribute 'missing'"),
    ("my_models:NOT_CALLABLE", "'my_models:NOT_CALLABLE' in module 'my_models' is not callable"),
    ("my_models:seven_classes", "output [2, 7] for 2 samples; the dataset has 10 classes"),
    ("my_models:with_batchnorm", "has buffers (1.running_mean"),
    ("my_models:not_a_module", "returned a str, not a torch.nn.Module"),
])
def test_bad_factories_are_input_errors(factories: str, factory: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        resolve(ModelConfig(factory=factory), seed=0)
    assert message in str(info.value)
    assert "model.factory" in str(info.value)


# -- through the CLI and the pipeline ------------------------------------------------------

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def tiny_cnn_scenario(tmp_path: Path, model: str, methods: str = "original: {}") -> Path:
    """A 2-client, 1-round scenario of ``model`` (a YAML flow mapping)."""
    path = tmp_path / "cnn_tiny.yaml"
    path.write_text(textwrap.dedent(f"""
        name: cnn-tiny
        seed: 0
        model: {model}
        data:
          dataset: mnist
          unlabeled: 0
          partition: {{scheme: shards, num_clients: 2, shard_size: 20, shards_per_client: 2}}
        fl: {{local_epochs: 1}}
        methods:
          {methods}
        system:
          clients: {{downlink: "20 Mbps", uplink: "5 Mbps", rtt: "50 ms"}}
        targets: [0.5]
        rounds: {{max: 1}}
        device: cpu
        report: {{formats: [png]}}
    """))
    return path


def test_bad_factory_exits_2_before_any_stage(factories: str, tmp_path: Path, cache_root: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from fedsim.cli import main

    pipeline_run = importlib.import_module("fedsim.pipeline.runner")  # the package's `run` is a function

    def no_stage(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stage ran")

    monkeypatch.setattr(pipeline_run, "prepare_data", no_stage)
    path = tiny_cnn_scenario(tmp_path, '{factory: "my_models:seven_classes"}')
    assert main(["validate", str(path)]) == 0  # validation imports nothing
    assert main(["scenario", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.factory 'my_models:seven_classes'" in err and "expected [2, 10]" in err
    path = tiny_cnn_scenario(tmp_path, '{factory: "nowhere_abc.models:net"}')
    assert main(["scenario", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "model.factory: cannot import module 'nowhere_abc.models'" in capsys.readouterr().err


def test_a_pruned_method_on_a_factory_model_is_a_validation_error(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from fedsim.cli import main

    # lenet-5 has a convolutional DAE (tests/test_conv_dae.py); a factory model has none
    path = tiny_cnn_scenario(tmp_path, '{factory: "my_models:tiny"}', "random-pruning: {level: 1}")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "methods.random-pruning: method 'random-pruning' needs an autoencoder" in err
    assert "model 'my_models:tiny' does not have" in err


def test_cnn_scenario_runs_end_to_end_with_scaled_compute(tmp_path: Path, cache_root: Path) -> None:
    from fedsim.config import load as load_scenario
    from fedsim.pipeline.keys import system_facts
    from fedsim.pipeline.runner import compute

    scenario = load_scenario(tiny_cnn_scenario(tmp_path, "{arch: lenet-5}"))
    result = compute(scenario)
    method = result.methods["original"]
    assert method.payload.sent_params == counts.lenet5_num_params()
    assert result.rounds["accuracy"].between(0, 1).all()
    # same scenario on LeNet-300-100: compute time per sample scales by the FLOPs ratio
    mlp = scenario.model_copy(update={"model": ModelConfig()})
    reference = compute(mlp)
    ratio = result.rounds["round_compute_s"].iloc[0] / reference.rounds["round_compute_s"].iloc[0]
    assert ratio == pytest.approx(counts.LENET5_FLOPS_PER_SAMPLE / counts.LENET_FLOPS_PER_SAMPLE, rel=1e-9)
    assert "compute_model" in system_facts(scenario, None)
    assert "compute_model" not in system_facts(mlp, None)  # LeNet-300-100's keys are unchanged


def test_cnn_scenario_validates() -> None:
    from fedsim.config import load as load_scenario

    scenario = load_scenario(SCENARIOS / "cnn.yaml")
    assert scenario.model.arch == "lenet-5" and list(scenario.methods) == ["original", "hp-fl"]


def test_an_entry_point_name_is_an_arch(factories: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from fedsim.learn import spec as learn_spec
    from fedsim.learn import zoo

    registered = [EntryPoint(name="tiny-mlp", value="my_models:mlp", group="fedsim.models")]

    def fake_entry_points(group: str) -> list[EntryPoint]:
        return registered if group == "fedsim.models" else []

    monkeypatch.setattr(learn_spec, "entry_points", fake_entry_points)
    monkeypatch.setattr(zoo, "entry_points", fake_entry_points)
    cfg = ModelConfig(arch="tiny-mlp", kwargs={"hidden": 4})
    assert not cfg.is_reference
    assert resolve(cfg, seed=0).layout.shapes == ((784, 4), (4, 10))
    with pytest.raises(ValueError, match="unknown architecture 'nope'; choose one of: lenet-300-100, lenet-5, tiny-mlp"):
        ModelConfig(arch="nope")
