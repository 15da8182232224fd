"""The client-stacked engine of the generic trainer (`fedsim.learn.conv_batched`):
the same trained models as ``vmap(grad)`` within float32 rounding (LeNet-5, a
strided bias-less CNN, a residual CNN on the grouped layout, masks, FedProx),
the allow-list that sends other modules to ``vmap``, and the engine choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedsim.learn.conv_batched import StackedGrads, Unsupported, stacked_grads
from fedsim.learn.federated import ClientData, round_schedule
from fedsim.learn.generic import GenericTrainer, choose_engine, default_generic_block
from fedsim.learn.masks import Mask
from fedsim.learn.reference import LeNet
from fedsim.learn.spec import FLConfig, ModelConfig
from fedsim.learn.zoo import resolve, spec_from_module

# Unequal clients: partial last batches, one client smaller than a batch, one empty.
SIZES = (50, 37, 5, 0, 23)
CFG = FLConfig(batch_size=16, local_epochs=2, lr=0.05)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clients() -> ClientData:
    gen = np.random.default_rng(0)
    n = sum(SIZES)
    bounds = np.cumsum((0, *SIZES))
    images = gen.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = gen.integers(0, 10, n)
    return ClientData.from_arrays(images, labels, [np.arange(bounds[i], bounds[i + 1]) for i in range(len(SIZES))])


class Residual(nn.Module):
    """conv - relu - (conv + skip) - avg-pool - fc: an add of two grouped activations."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.fc = nn.Linear(3 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = nn.functional.avg_pool2d(self.b(h) + h, 2)
        return self.fc(torch.flatten(h, 1))


def strided_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 10, bias=False))


def _both(spec, clients: ClientData, mask: Mask, cfg: FLConfig, block: int):
    theta = spec.initial_params()
    schedule = round_schedule(clients, np.arange(clients.num_clients), cfg, seed=3, round_num=2)
    out = {}
    for engine in ("vmap", "stacked"):
        trainer = GenericTrainer(spec, clients, mask, cfg, CPU, block_clients=block, engine=engine)
        assert trainer.engine == engine
        out[engine] = trainer.train_round(theta, schedule)
    return theta, out["vmap"], out["stacked"]


@pytest.mark.parametrize("block", [1, 2, 5])
def test_lenet5_round_equals_the_vmap_path(clients: ClientData, block: int) -> None:
    spec = resolve(ModelConfig(arch="lenet-5"), seed=0)
    theta, want, got = _both(spec, clients, Mask.dense_like(spec.initial_params()), CFG, block)
    assert got.max_abs_diff(want) < 1e-5
    moved = [float((w - w0).abs().max()) for w, w0 in zip(got.weights, theta.weights, strict=True)]
    assert min(moved) > 1e-4  # every layer trained
    # the empty client (index 3) keeps the global model exactly
    for w, w0 in zip(got.weights, theta.weights, strict=True):
        assert torch.equal(w[3], w0)


@pytest.mark.parametrize("factory", [strided_cnn, Residual])
def test_other_cnns_equal_the_vmap_path(clients: ClientData, factory) -> None:
    torch.manual_seed(0)
    spec = spec_from_module(factory(), (1, 28, 28), name=factory.__name__)
    _, want, got = _both(spec, clients, Mask.dense_like(spec.initial_params()), CFG, 2)
    assert got.max_abs_diff(want) < 1e-5


def test_masks_and_fedprox_on_the_stacked_engine(clients: ClientData) -> None:
    spec = resolve(ModelConfig(arch="lenet-5"), seed=1)
    gen = torch.Generator().manual_seed(2)
    mask = Mask(tuple(torch.rand(s, generator=gen) < 0.4 for s in spec.layout.shapes))
    cfg = CFG.model_copy(update={"proximal_mu": 0.5})
    _, want, got = _both(spec, clients, mask, cfg, 3)
    assert got.max_abs_diff(want) < 1e-5
    for w, m in zip(got.weights, mask.layers, strict=True):
        assert torch.all(w[:, ~m] == 0)
        assert torch.count_nonzero(w[0][m]) == int(m.sum())


def test_gradients_equal_vmap_grad_on_one_step() -> None:
    spec = resolve(ModelConfig(arch="lenet-5"), seed=0)
    named = spec.layout.to_named(spec.initial_params())
    k, b = 3, 7
    gen = torch.Generator().manual_seed(0)
    block = {n: t.unsqueeze(0).repeat(k, *[1] * t.dim()) + 0.01 * torch.randn(k, *t.shape, generator=gen)
             for n, t in named.items()}
    x = torch.rand(k, b, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (k, b), generator=gen)
    w = torch.full((k, b), 1.0 / b)
    w[2, 4:] = 0.0  # padding rows
    trainer = GenericTrainer(spec, ClientData(torch.zeros(1, 784), torch.zeros(1, dtype=torch.int64),
                                              (np.arange(1),)), Mask.dense_like(spec.initial_params()),
                             CFG, CPU, engine="vmap")
    want = trainer._grads(block, x, y, w)
    got = StackedGrads(spec.module)(block, x, y, w)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)
        assert got[name].shape == block[name].shape


class Mixes(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 26 * 26, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.how == "batch-mean":
            h = h - h.mean(0)  # mixes samples: not per-sample
        elif self.how == "flatten0":
            return self.fc(torch.flatten(h, 0).view(x.shape[0], -1))
        elif self.how == "cat":
            h = torch.cat([h[:, :1], h[:, 1:]], 1)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("how", ["batch-mean", "flatten0", "cat"])
def test_modules_outside_the_allow_list_keep_vmap(how: str) -> None:
    module = Mixes(how)
    assert stacked_grads(module) is None
    with pytest.raises(Unsupported):
        StackedGrads(module)
    spec = spec_from_module(module, (1, 28, 28))
    assert choose_engine(CPU, spec) == "vmap"
    assert default_generic_block(CPU, spec, "vmap") == 1


def test_engine_choice() -> None:
    lenet5 = resolve(ModelConfig(arch="lenet-5"), seed=0)
    assert choose_engine(CPU, lenet5) == "stacked"
    assert choose_engine(torch.device("cuda"), lenet5) == "vmap"  # the GPU keeps vmap (not measured)
    mlp = spec_from_module(LeNet(), (784,))
    assert choose_engine(CPU, mlp) == "vmap"
    assert default_generic_block(CPU, lenet5, "stacked") == 8
    with pytest.raises(ValueError, match="engine"):
        GenericTrainer(lenet5, ClientData(torch.zeros(1, 784), torch.zeros(1, dtype=torch.int64), (np.arange(1),)),
                       Mask.dense_like(lenet5.initial_params()), CFG, CPU, engine="jit")
