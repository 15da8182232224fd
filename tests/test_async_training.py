"""Asynchronous (FedBuff) training replaying a step plan: equal to synchronous
FedAvg when the plan is synchronous, a stale step by hand, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsim.learn.asynchronous import (
    REPEAT_STRIDE,
    AsyncState,
    AsyncUpdate,
    fedbuff_weight,
    train_async,
)
from fedsim.learn.federated import ClientData, round_schedule, train
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, Params, encoder, init_dae, layer_shapes
from fedsim.learn.spec import CompressionConfig, FLConfig

SIZES = (70, 60, 35, 165)
CFG = FLConfig(batch_size=16, local_epochs=2)


@pytest.fixture(scope="module")
def clients(make_clients) -> ClientData:
    return make_clients(SIZES)


@pytest.fixture(scope="module")
def theta0() -> Params:
    return encoder(init_dae("glorot_uniform", 3))


@pytest.fixture(scope="module")
def mask() -> Mask:
    gen = torch.Generator().manual_seed(4)
    return Mask(tuple(torch.rand(s, generator=gen) < 0.3 for s in layer_shapes(LENET_SIZES)))


def _equal(a: Params, b: Params) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors(), strict=True))


def _train_one(clients, theta, client, cfg, seed, round_num, mask) -> Params:
    """One client's trained model from ``theta`` with round ``round_num``'s shuffles."""
    from fedsim.learn.batched import _BatchedMLP

    schedule = round_schedule(clients, np.array([client]), cfg, seed=seed, round_num=round_num)
    stacked = _BatchedMLP(clients, mask, cfg, torch.device("cpu"), None).train_round(mask.apply(theta), schedule)
    return Params(tuple(w[0] for w in stacked.weights), tuple(b[0] for b in stacked.biases))


def test_a_synchronous_plan_is_fedavg_exactly(clients, test_set, theta0, mask):
    ids = list(range(len(SIZES)))
    plan = [[AsyncUpdate(k, t) for k in ids] for t in range(3)]  # step t+1: everyone from version t
    seen_sync: dict[int, Params] = {}
    sync = train(theta0, mask, clients, test_set, CFG, seed=5, rounds=3,
                 on_round=lambda r, p, rec: seen_sync.__setitem__(r, p))
    seen_async: dict[int, Params] = {}
    asyn = train_async(theta0, mask, clients, test_set, CFG, plan, seed=5,
                       on_step=lambda t, s, rec: seen_async.__setitem__(t, s.params))
    assert asyn.rounds["accuracy"].tolist() == sync.rounds["accuracy"].tolist()
    assert asyn.rounds["loss"].tolist() == sync.rounds["loss"].tolist()
    assert asyn.client_rounds.equals(sync.client_rounds)
    for t in (1, 2, 3):
        assert _equal(seen_async[t], seen_sync[t])


def test_a_stale_step_by_hand(clients, test_set, theta0, mask):
    """Step 1: client 0 from θ0 (fresh). Step 2: client 1 from θ0 (staleness 1)
    and client 2 from θ1 (fresh), server lr 0.5:
    θ2 = θ1 + 0.5 (p1 w1 (θ'1 - θ0) + p2 (θ'2 - θ1)), p = n / (n1 + n2)."""
    w = fedbuff_weight(1)
    assert w == pytest.approx(1 / math.sqrt(2))
    plan = [[AsyncUpdate(0, 0)], [AsyncUpdate(1, 0, w), AsyncUpdate(2, 1)]]
    seen: dict[int, Params] = {}
    train_async(theta0, mask, clients, test_set, CFG, plan, seed=7, server_lr=0.5,
                on_step=lambda t, s, rec: seen.__setitem__(t, s.params))
    t0 = mask.apply(theta0)
    theta1 = _train_one(clients, theta0, 0, CFG, 7, 1, mask)  # one fresh update, η 0.5: not plain FedAvg
    theta1 = mask.apply(Params(*[tuple(a + 0.5 * (b - a) for a, b in zip(x, y, strict=True))
                                 for x, y in ((t0.weights, theta1.weights), (t0.biases, theta1.biases))]))
    assert torch.allclose(seen[1].weights[0], theta1.weights[0], atol=1e-6)
    c1 = _train_one(clients, theta0, 1, CFG, 7, 1, mask)  # from version 0: round number 1
    c2 = _train_one(clients, seen[1], 2, CFG, 7, 2, mask)  # from version 1: round number 2
    n1, n2 = SIZES[1], SIZES[2]
    p1, p2 = n1 / (n1 + n2), n2 / (n1 + n2)
    moved = [s + 0.5 * (p1 * w * (a - b0) + p2 * (c - s))
             for s, a, b0, c in zip(seen[1].tensors(), c1.tensors(), t0.tensors(), c2.tensors(), strict=True)]
    expected = mask.apply(Params(tuple(moved[0::2]), tuple(moved[1::2])))
    for got, want in zip(seen[2].tensors(), expected.tensors(), strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def test_resume_equals_the_uninterrupted_run(clients, test_set, theta0, mask):
    plan = [[AsyncUpdate(0, 0), AsyncUpdate(1, 0)],
            [AsyncUpdate(2, 0, fedbuff_weight(1)), AsyncUpdate(0, 1)],
            [AsyncUpdate(3, 0, fedbuff_weight(2)), AsyncUpdate(1, 2)],
            [AsyncUpdate(2, 2, fedbuff_weight(1)), AsyncUpdate(0, 3)]]
    states: dict[int, AsyncState] = {}
    full = train_async(theta0, mask, clients, test_set, CFG, plan, seed=3,
                       on_step=lambda t, s, rec: states.__setitem__(t, s))
    saved = AsyncState.from_numpy(2, states[2].to_numpy())  # through a checkpoint's arrays
    assert sorted(saved.versions) == [0, 2]  # version 0 is still needed by step 3, version 1 is not
    resumed_states: dict[int, AsyncState] = {}
    rest = train_async(theta0, mask, clients, test_set, CFG, plan, seed=3, start=saved,
                       on_step=lambda t, s, rec: resumed_states.__setitem__(t, s))
    assert rest.rounds["round_num"].tolist() == [3, 4]
    assert rest.rounds["accuracy"].tolist() == full.rounds["accuracy"].tolist()[2:]
    assert _equal(resumed_states[4].params, states[4].params)


def test_a_repeated_update_draws_new_shuffles(clients, test_set, theta0, mask):
    """Client 0 twice from version 0 before the first step: two different updates."""
    plan = [[AsyncUpdate(0, 0), AsyncUpdate(0, 0)]]
    seen: dict[int, Params] = {}
    train_async(theta0, mask, clients, test_set, CFG, plan, seed=2,
                on_step=lambda t, s, rec: seen.__setitem__(t, s.params))
    a = _train_one(clients, theta0, 0, CFG, 2, 1, mask)
    b = _train_one(clients, theta0, 0, CFG, 2, 1 + REPEAT_STRIDE, mask)
    assert not torch.equal(a.weights[0], b.weights[0])
    mean = [(x + y) / 2 for x, y in zip(a.tensors(), b.tensors(), strict=True)]
    for got, want in zip(seen[1].tensors(), mean, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("plan, match", [
    ([[]], "aggregates no update"),
    ([[AsyncUpdate(9, 0)]], "client 9"),
    ([[AsyncUpdate(0, 1)]], "version 1"),
    ([[AsyncUpdate(0, 0, float("nan"))]], "staleness weight"),
])
def test_malformed_plans_are_refused(clients, test_set, theta0, mask, plan, match):
    with pytest.raises(ValueError, match=match):
        train_async(theta0, mask, clients, test_set, CFG, plan, seed=0)


def test_compression_is_refused(clients, test_set, theta0, mask):
    cfg = FLConfig(batch_size=16, local_epochs=1, compression=CompressionConfig(kind="qsgd", bits=8))
    with pytest.raises(ValueError, match="compression"):
        train_async(theta0, mask, clients, test_set, cfg, [[AsyncUpdate(0, 0)]], seed=0)
