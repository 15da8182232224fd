"""FedProx's proximal term (Li et al., MLSys 2020) in all three trainers: hand
computations of two local steps, the batched trainers against the per-client
reference loop with unequal clients and a mask, and the μ = 0 path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedsim.learn.federated import ClientData, client_batches, epoch_permutations, train
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, Params, encoder, init_dae, layer_shapes
from fedsim.learn.reference import LeNet, train_reference
from fedsim.learn.spec import FLConfig
from fedsim.learn.zoo import spec_from_module

SEED = 5
SIZES = (70, 37, 5, 0)  # unequal: partial batches, a client that runs out early, an empty one


@pytest.fixture(scope="module")
def clients(make_clients) -> ClientData:
    return make_clients(SIZES, learnable=True)


@pytest.fixture(scope="module")
def one_client(make_clients) -> ClientData:
    return make_clients((16,), learnable=True)


@pytest.fixture(scope="module")
def test_set(clients: ClientData) -> tuple[torch.Tensor, torch.Tensor]:
    return clients.inputs[:40].clone(), clients.labels[:40].clone()


@pytest.fixture(scope="module")
def theta0() -> Params:
    return encoder(init_dae("glorot_uniform", 3))


def _final(run, *args, **kwargs) -> Params:
    out: dict[str, Params] = {}
    run(*args, on_round=lambda r, p, _: out.__setitem__("last", p), **kwargs)
    return out["last"]


def _batches(data: ClientData, cfg: FLConfig) -> list[np.ndarray]:
    """Client 0's mini-batches of round 1 (rows of the pool), in order."""
    rows = data.client_indices[0]
    perms = epoch_permutations(SEED, 0, 1, rows.size, cfg.local_epochs)
    return [rows[b] for b in client_batches(perms, cfg.batch_size)]


# -- by hand: two local steps of one client ---------------------------------------------


def test_two_steps_of_a_linear_model_by_hand(one_client: ClientData, test_set: tuple) -> None:
    """Softmax regression z = x W + b (generic trainer): with the closed-form
    gradient of the mean cross-entropy, g_W = xᵀ (softmax(z) - onehot) / b,
    step 1 is w1 = w0 - lr g(w0) (w0 is the global model: no pull yet) and
    step 2 is w2 = w1 - lr (g(w1) + μ (w1 - w0))."""
    cfg = FLConfig(lr=0.05, batch_size=8, local_epochs=1, proximal_mu=2.0)
    module = nn.Linear(784, 10)
    spec = spec_from_module(module, (784,), name="softmax regression")
    gen = torch.Generator().manual_seed(0)
    w0 = Params((torch.randn(784, 10, generator=gen) * 0.01,), (torch.randn(10, generator=gen) * 0.01,))
    got = _final(train, w0, Mask.dense_like(w0), one_client, test_set, cfg, seed=SEED, rounds=1, model=spec)

    def grad(w: torch.Tensor, b: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = one_client.inputs[torch.from_numpy(rows)]
        onehot = F.one_hot(one_client.labels[torch.from_numpy(rows)], 10).float()
        d = (torch.softmax(x @ w + b, dim=1) - onehot) / len(rows)
        return x.T @ d, d.sum(0)

    (first, second) = _batches(one_client, cfg)
    w, b = w0.weights[0].clone(), w0.biases[0].clone()
    gw, gb = grad(w, b, first)
    w1, b1 = w - cfg.lr * gw, b - cfg.lr * gb
    gw, gb = grad(w1, b1, second)
    mu = cfg.proximal_mu
    w2 = w1 - cfg.lr * (gw + mu * (w1 - w0.weights[0]))
    b2 = b1 - cfg.lr * (gb + mu * (b1 - w0.biases[0]))
    assert float((w1 - w0.weights[0]).abs().max()) > 1e-4  # the pull is not zero at step 2
    torch.testing.assert_close(got.weights[0], w2, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got.biases[0], b2, atol=2e-6, rtol=1e-5)


def _lenet_two_steps_by_hand(data: ClientData, theta: Params, cfg: FLConfig) -> Params:
    """Two SGD steps of LeNet-300-100 with the gradient from autograd and the
    update written out: w <- w - lr (g + μ (w - θ))."""
    net = LeNet().load(theta)
    start = [p.detach().clone() for p in net.parameters()]
    for rows in _batches(data, cfg):
        index = torch.from_numpy(rows)
        net.zero_grad()
        F.cross_entropy(net(data.inputs[index]), data.labels[index]).backward()
        with torch.no_grad():
            for p, p0 in zip(net.parameters(), start, strict=True):
                p -= cfg.lr * (p.grad + cfg.proximal_mu * (p - p0))
    return net.params()


def test_two_steps_of_lenet_by_hand_in_the_kernel_and_the_reference(one_client: ClientData, test_set: tuple,
                                                                     theta0: Params) -> None:
    cfg = FLConfig(lr=0.1, batch_size=8, local_epochs=1, proximal_mu=3.0)
    want = _lenet_two_steps_by_hand(one_client, theta0, cfg)
    dense = Mask.dense_like(theta0)
    kernel = _final(train, theta0, dense, one_client, test_set, cfg, seed=SEED, rounds=1)
    reference = _final(train_reference, theta0, dense, one_client, test_set, cfg, seed=SEED, rounds=1)
    no_prox = _final(train, theta0, dense, one_client, test_set, FLConfig(lr=0.1, batch_size=8, local_epochs=1),
                     seed=SEED, rounds=1)
    assert kernel.max_abs_diff(want) < 2e-6
    assert reference.max_abs_diff(want) < 2e-6
    assert no_prox.max_abs_diff(want) > 1e-5  # the term is visible at this μ


# -- batched trainers against the per-client loop -----------------------------------------


@pytest.fixture(scope="module")
def sparse_mask() -> Mask:
    gen = torch.Generator().manual_seed(4)
    return Mask(tuple(torch.rand(s, generator=gen) < 0.5 for s in layer_shapes(LENET_SIZES)))


def test_kernel_matches_the_reference_with_mu_and_a_mask(clients: ClientData, test_set: tuple, theta0: Params,
                                                         sparse_mask: Mask) -> None:
    """Unequal clients: the kernel must not pull a client whose data ran out
    (it takes no step), as the reference loop does not."""
    cfg = FLConfig(lr=0.1, batch_size=16, local_epochs=2, proximal_mu=0.5)
    kernel = _final(train, theta0, sparse_mask, clients, test_set, cfg, seed=SEED, rounds=2)
    reference = _final(train_reference, theta0, sparse_mask, clients, test_set, cfg, seed=SEED, rounds=2)
    plain = _final(train, theta0, sparse_mask, clients, test_set, FLConfig(lr=0.1, batch_size=16, local_epochs=2),
                   seed=SEED, rounds=2)
    assert kernel.max_abs_diff(reference) < 1e-4
    assert kernel.max_abs_diff(plain) > 1e-3  # μ changed the training
    assert kernel.equal(sparse_mask.apply(kernel))  # pruned weights stay exactly 0


def test_generic_trainer_matches_the_reference_with_mu(clients: ClientData, test_set: tuple, theta0: Params) -> None:
    cfg = FLConfig(lr=0.1, batch_size=16, local_epochs=2, proximal_mu=0.5)
    spec = spec_from_module(LeNet(), (784,), name="lenet as a module")  # the generic path
    dense = Mask.dense_like(theta0)
    generic = _final(train, theta0, dense, clients, test_set, cfg, seed=SEED, rounds=2, model=spec,
                     block_clients=2)  # blocks in which one client runs out before the other
    reference = _final(train_reference, theta0, dense, clients, test_set, cfg, seed=SEED, rounds=2, model=spec)
    assert generic.max_abs_diff(reference) < 1e-4


def test_a_larger_mu_keeps_the_round_closer_to_the_global_model(clients: ClientData, test_set: tuple,
                                                                 theta0: Params) -> None:
    """The proximal term's purpose: local models drift less from θ."""
    dense = Mask.dense_like(theta0)
    drift = []
    for mu in (0.0, 1.0, 10.0):
        cfg = FLConfig(lr=0.05, batch_size=16, local_epochs=2, proximal_mu=mu)
        drift.append(_final(train, theta0, dense, clients, test_set, cfg, seed=SEED, rounds=1).max_abs_diff(theta0))
    assert drift[0] > drift[1] > drift[2] > 0


def test_mu_zero_is_todays_fedavg(clients: ClientData, test_set: tuple, theta0: Params) -> None:
    """proximal_mu: 0 (explicit) is the default path, bit for bit, and keys as the default."""
    from fedsim import config

    dense = Mask.dense_like(theta0)
    base = FLConfig(batch_size=16, local_epochs=1)
    zero = FLConfig(batch_size=16, local_epochs=1, proximal_mu=0.0)
    assert config.section_key(zero) == config.section_key(base)
    a = _final(train, theta0, dense, clients, test_set, base, seed=SEED, rounds=1)
    b = _final(train, theta0, dense, clients, test_set, zero, seed=SEED, rounds=1)
    assert a.equal(b)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_a_bad_mu_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="proximal_mu"):
        FLConfig(proximal_mu=bad)
