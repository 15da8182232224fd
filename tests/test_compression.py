"""Compressed client updates (qsgd, top-k with error feedback) and server
optimisers (FedAvgM, FedAdam): hand-computed cases, the training they change,
the bytes they send, and exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim import config, pipeline, store
from fedsim.cli import main
from fedsim.learn.aggregation import MethodState
from fedsim.learn.batched import _BatchedMLP
from fedsim.learn.compression import flatten, qsgd, qsgd_noise, topk, transform, unflatten
from fedsim.learn.federated import ClientData, round_schedule, train
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, Params, encoder, init_dae, layer_shapes
from fedsim.learn.server_opt import server_step
from fedsim.learn.spec import CompressionConfig, FLConfig, ModelConfig, ServerConfig
from fedsim.learn.trace import RoundRecord, TrainingTrace, TrainState
from fedsim.pipeline import keys, training
from fedsim.system.payload import payload_bytes
from fedsim.system.spec import PayloadSpec

SIZES = (70, 30)  # two clients: FedAvg weights 0.7 and 0.3
QSGD8 = {"kind": "qsgd", "bits": 8}
TOPK = {"kind": "topk", "fraction": 0.01}


@pytest.fixture(scope="module")
def clients(make_clients) -> ClientData:
    return make_clients(SIZES)


@pytest.fixture(scope="module")
def test_set(make_test_set) -> tuple[torch.Tensor, torch.Tensor]:
    return make_test_set(20)


@pytest.fixture(scope="module")
def theta0() -> Params:
    return encoder(init_dae("glorot_uniform", 3))


@pytest.fixture(scope="module")
def sparse_mask() -> Mask:
    gen = torch.Generator().manual_seed(4)
    return Mask(tuple(torch.rand(s, generator=gen) < 0.3 for s in layer_shapes(LENET_SIZES)))


def _rounds(theta0: Params, mask: Mask, clients: ClientData, test_set, cfg: FLConfig, rounds: int,
            start: TrainState | None = None) -> tuple[dict[int, Params], dict[int, MethodState]]:
    models: dict[int, Params] = {}
    states: dict[int, MethodState] = {}
    train(theta0, mask, clients, test_set, cfg, seed=5, rounds=rounds, start=start,
          on_round=lambda r, p, rec: models.__setitem__(r, p),
          on_state=lambda r, s: states.__setitem__(r, s))
    return models, states


# -- the transforms, by hand --------------------------------------------------------------


def test_qsgd_hand_computed() -> None:
    """bits 3 -> s = 3 levels; max |Δ| = 1: u = [1.5, 0.75, 0, 3]; with draws
    [0.4, 0.9, 0, 0.5] the levels are [2, 0, 0, 3] -> [2/3, 0, 0, 1]."""
    deltas = torch.tensor([[0.5, -0.25, 0.0, 1.0]])
    noise = torch.tensor([[0.4, 0.9, 0.0, 0.5]])
    assert CompressionConfig(kind="qsgd", bits=3).levels == 3
    out = qsgd(deltas, 3, "max", noise)
    assert out[0].tolist() == pytest.approx([2 / 3, 0.0, 0.0, 1.0])
    # l2: ||Δ|| = sqrt(1.3125); u_0 = 3 * 0.5 / 1.1456 = 1.309 -> 2 with draw 0.2 (< 0.309)
    l2 = qsgd(deltas, 3, "l2", torch.tensor([[0.2, 0.9, 0.0, 0.99]]))
    norm = math.sqrt(1.3125)
    assert l2[0].tolist() == pytest.approx([2 * norm / 3, 0.0, 0.0, 2 * norm / 3])


def test_qsgd_is_unbiased_and_keeps_zeros() -> None:
    deltas = torch.tensor([[0.3, -0.7, 0.0, 0.05, 1.0]]).repeat(20_000, 1)
    noise = torch.rand(deltas.shape, generator=torch.Generator().manual_seed(0))
    out = qsgd(deltas, 1, "max", noise)  # 2 bits: levels {0, 1}, the hardest case
    assert out[:, 2].eq(0).all()
    assert set(out[:, 1].unique().tolist()) == {-1.0, 0.0}
    assert out.mean(0).tolist() == pytest.approx(deltas[0].tolist(), abs=0.015)


def test_topk_with_error_feedback_hand_computed() -> None:
    """Round 1: a = Δ, k = 2 of the 3 allowed positions sent, the rest kept;
    round 2: a = Δ2 + memory, the memory's 0.4 now wins a slot."""
    cfg = CompressionConfig(kind="topk", fraction=0.6)  # k = ceil(0.6 * 3) = 2
    allowed = torch.tensor([True, True, True, False])
    d1 = torch.tensor([[1.0, -0.4, 2.0, 0.0]])
    sent, memory = transform(cfg, d1, np.array([7]), allowed, {}, seed=0, round_num=1)
    assert sent.tolist() == [[1.0, 0.0, 2.0, 0.0]]
    assert memory[7].tolist() == pytest.approx([0.0, -0.4, 0.0, 0.0])
    d2 = torch.tensor([[0.1, -0.3, 0.2, 0.0]])
    sent, memory = transform(cfg, d2, np.array([7]), allowed, memory, seed=0, round_num=2)
    assert sent[0].tolist() == pytest.approx([0.0, -0.7, 0.2, 0.0])
    assert memory[7].tolist() == pytest.approx([0.1, 0.0, 0.0, 0.0])
    # a pruned position is never sent, even when it is the largest
    sent, _ = topk(torch.tensor([[0.0, 0.0, 0.5, 9.0]]), 1, allowed)
    assert sent.tolist() == [[0.0, 0.0, 0.5, 0.0]]


def test_flatten_roundtrip(theta0: Params) -> None:
    flat = flatten(theta0)
    assert flat.shape == (theta0.num_params,)
    assert unflatten(flat, theta0).equal(theta0)


# -- the bytes ----------------------------------------------------------------------------


def test_upload_bytes_are_the_transforms_bits_hand_computed() -> None:
    """Dense LeNet-300-100 sends n = 266,610 values. qsgd 8 bits: 8n + 32 bits
    = 266,614 bytes. topk 1 %: k = ceil(2666.1) = 2667 values of 32 bits and
    indices of ceil(log2 n) = 19 bits: 2667 x 51 = 136,017 bits -> 17,003 bytes.
    The download stays the 32-bit model (1,066,440 bytes)."""
    weights = [235200, 30000, 1000]
    spec = PayloadSpec()
    qsgd8 = payload_bytes(weights, weights, 410, spec, CompressionConfig(**QSGD8))
    assert (qsgd8.down_bytes, qsgd8.up_bytes) == (1_066_440, 266_614)
    top = payload_bytes(weights, weights, 410, spec, CompressionConfig(**TOPK))
    assert CompressionConfig(**TOPK).kept_values(266_610) == 2667
    assert (top.down_bytes, top.up_bytes) == (1_066_440, 17_003)
    # a pruned model: only surviving weights + biases are candidates (and the mask, sent
    # every round, and the overhead are added as to any message)
    surviving = [1000, 500, 100]
    spec = PayloadSpec(mask_every_round=True, overhead=100)
    sparse = payload_bytes(weights, surviving, 410, spec, CompressionConfig(**QSGD8))
    n = 1000 + 500 + 100 + 410
    assert sparse.up_bytes == math.ceil((8 * n + 32) / 8) + sparse.mask_bytes + 100
    assert payload_bytes(weights, weights, 410, PayloadSpec()).up_bytes == 1_066_440  # unchanged


# -- training uses exactly the transformed update ------------------------------------------


def _hand_round(theta0: Params, mask: Mask, clients: ClientData, cfg: FLConfig, kind: str) -> Params:
    """Round 1 by hand: the two clients' trained models (the kernel), their
    updates, quantised (numpy) or sparsified, averaged with weights 0.7, 0.3."""
    ids = np.array([0, 1])
    stacked = _BatchedMLP(clients, mask, cfg, torch.device("cpu"), None).train_round(
        theta0, round_schedule(clients, ids, cfg, seed=5, round_num=1))
    theta = flatten(theta0).numpy().astype(np.float64)
    deltas = flatten(stacked).numpy().astype(np.float64) - theta
    allowed = np.concatenate([np.concatenate([m.reshape(-1).numpy(), np.ones(m.shape[1], bool)])
                              for m in mask.layers])
    sent = []
    for k in range(2):
        d = deltas[k]
        if kind == "qsgd":
            noise = qsgd_noise(5, np.array([k]), 1, d.size, torch.device("cpu"))[0].numpy()
            scale = np.abs(d).max()
            u = np.abs(d) / scale * 127
            level = np.floor(u) + (noise < u - np.floor(u))
            sent.append(np.sign(d) * level * scale / 127)
        else:
            kept = np.argsort(-np.where(allowed, np.abs(d), -1.0), kind="stable")[:math.ceil(0.01 * allowed.sum())]
            s = np.zeros_like(d)
            s[kept] = d[kept]
            sent.append(s)
    new = theta + 0.7 * sent[0] + 0.3 * sent[1]
    return unflatten(torch.from_numpy(new.astype(np.float32)), theta0)


@pytest.mark.parametrize("compression", [QSGD8, TOPK], ids=["qsgd", "topk"])
def test_one_round_is_fedavg_of_the_compressed_updates(clients, test_set, theta0, sparse_mask,
                                                       compression) -> None:
    cfg = FLConfig(batch_size=16, local_epochs=1, compression=compression)
    models, _ = _rounds(theta0, sparse_mask, clients, test_set, cfg, 1)
    hand = _hand_round(sparse_mask.apply(theta0), sparse_mask, clients, cfg, compression["kind"])
    for got, want in zip(models[1].tensors(), hand.tensors(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    for got, m in zip(models[1].weights, sparse_mask.layers, strict=True):
        assert got[~m].eq(0).all()  # pruned weights stay exactly 0
    plain, _ = _rounds(theta0, sparse_mask, clients, test_set, FLConfig(batch_size=16, local_epochs=1), 1)
    assert not plain[1].equal(models[1])  # the compression changed the training


def test_the_generic_trainer_applies_the_transform_too(clients, test_set) -> None:
    """LeNet-5 (the vmap trainer): with qsgd, the new model is θ + Σ p_k Q(Δ_k),
    whose every update value is a multiple of its client's scale / 127."""
    from fedsim.learn.zoo import resolve

    spec = resolve(ModelConfig(arch="lenet-5"), seed=0)
    init = spec.initial_params()
    mask = Mask.dense_like(init)
    cfg = FLConfig(batch_size=16, local_epochs=1, compression=QSGD8)
    seen: dict[int, Params] = {}
    one = ClientData(clients.inputs, clients.labels, (clients.client_indices[0],))  # one client: Δ = Q(Δ_0)
    train(init, mask, one, test_set, cfg, seed=5, rounds=1, model=spec,
          on_round=lambda r, p, rec: seen.__setitem__(r, p))
    step = (flatten(seen[1]) - flatten(init)).double()
    scale = step.abs().max()
    levels = step / scale * 127
    assert torch.allclose(levels, levels.round(), atol=1e-2)  # on the grid: quantised
    assert levels.abs().max().item() == pytest.approx(127, abs=1e-3)


# -- server optimisers --------------------------------------------------------------------


def test_fedadam_one_step_hand_computed() -> None:
    """Δ = [0.2, -0.1], lr 0.1, β1 0.9, β2 0.99, τ 0.01, zero moments:
    m = 0.1 Δ = [0.02, -0.01]; v = 0.01 Δ² = [4e-4, 1e-4]; √v = [0.02, 0.01];
    θ += 0.1 m / (√v + τ) = [0.1 x 0.02 / 0.03, 0.1 x -0.01 / 0.02] = [+0.0666.., -0.05]."""
    cfg = ServerConfig(optimizer="fedadam", lr=0.1, beta1=0.9, beta2=0.99, tau=0.01)
    theta, update = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([0.2, -0.1], dtype=torch.float64)
    new, state = server_step(cfg, theta, update, {})
    assert new.tolist() == pytest.approx([1 + 0.1 * 0.02 / 0.03, 1 - 0.05])
    assert state["m"].tolist() == pytest.approx([0.02, -0.01])
    assert state["v"].tolist() == pytest.approx([4e-4, 1e-4])
    # a second step uses the moments: m = 0.9 m + 0.1 Δ, v = 0.99 v + 0.01 Δ²
    new2, state2 = server_step(cfg, new, update, state)
    m2, v2 = 0.9 * 0.02 + 0.02, 0.99 * 4e-4 + 4e-4
    assert state2["m"][0].item() == pytest.approx(m2)
    assert new2[0].item() == pytest.approx(new[0].item() + 0.1 * m2 / (math.sqrt(v2) + 0.01))


def test_fedavgm_hand_computed() -> None:
    """β 0.5, η 2: v1 = Δ1 = 1, θ = 0 + 2 = 2; v2 = 0.5 + 3 = 3.5, θ = 2 + 7 = 9."""
    cfg = ServerConfig(optimizer="fedavgm", lr=2.0, momentum=0.5)
    theta, state = server_step(cfg, torch.tensor([0.0]), torch.tensor([1.0]), {})
    theta, state = server_step(cfg, theta, torch.tensor([3.0]), state)
    assert (theta.item(), state["v"].item()) == (9.0, 3.5)
    assert server_step(ServerConfig(lr=0.5), torch.tensor([1.0]), torch.tensor([2.0]), {})[0].item() == 2.0


def test_server_step_in_training_is_the_hand_step(clients, test_set, theta0) -> None:
    """Without compression, fedadam's round 1 is θ + η m / (√v + τ) with
    m = (1-β1) Δ, v = (1-β2) Δ², Δ the FedAvg average minus θ."""
    mask = Mask.dense_like(theta0)
    server = ServerConfig(optimizer="fedadam", lr=0.01)
    plain, _ = _rounds(theta0, mask, clients, test_set, FLConfig(batch_size=16, local_epochs=1), 1)
    adam, states = _rounds(theta0, mask, clients, test_set,
                           FLConfig(batch_size=16, local_epochs=1, server=server), 1)
    delta = flatten(plain[1]).double() - flatten(theta0).double()
    m, v = 0.1 * delta, 0.01 * delta * delta
    want = flatten(theta0).double() + 0.01 * m / (v.sqrt() + 1e-3)
    torch.testing.assert_close(flatten(adam[1]).double(), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(states[1].server["m"].double(), m, rtol=0, atol=1e-6)


# -- state: resume and checkpoints --------------------------------------------------------


def test_resumed_run_is_bit_identical_with_error_feedback_and_fedadam(clients, test_set, theta0,
                                                                      sparse_mask) -> None:
    cfg = FLConfig(batch_size=16, local_epochs=1, compression=TOPK,
                   server={"optimizer": "fedadam", "lr": 0.01})
    whole, states = _rounds(theta0, sparse_mask, clients, test_set, cfg, 3)
    assert set(states[2].memory) == {0, 1} and set(states[2].server) == {"m", "v"}
    # through the checkpoint's arrays, as a resumed stage reads them
    saved = {**whole[2].to_numpy(), **states[2].to_numpy()}
    start = TrainState(2, Params.from_numpy(saved), MethodState.from_numpy(saved))
    resumed, _ = _rounds(theta0, sparse_mask, clients, test_set, cfg, 3, start=start)
    assert resumed[3].equal(whole[3])
    # without the state (memory and moments lost) the run differs: the state matters
    lost, _ = _rounds(theta0, sparse_mask, clients, test_set, cfg, 3, start=TrainState(2, whole[2]))
    assert not lost[3].equal(whole[3])


def test_checkpoint_keeps_the_method_state(tmp_path: Path, monkeypatch, theta0) -> None:
    """The checkpointer saves the state of the round it checkpoints, also when
    interrupted between a round's state and its record (the previous one)."""
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    entry = store.CacheEntry("train", "with-state")
    saver = training.Checkpointer(entry, None, {"label": "x"}, every=10, last_round=5)
    one = np.array([0])

    def record(r: int) -> RoundRecord:
        return RoundRecord(r, 0.5, 1.0, 1, one, np.array([10]), np.array([1]))

    states = {r: MethodState({3: torch.full((4,), float(r))}, {"m": torch.full((4,), -float(r))})
              for r in (1, 2)}
    saver.on_state(1, states[1])
    saver.on_round(1, theta0, record(1))
    saver.on_state(2, states[2])  # interrupted before round 2's on_round
    assert saver.interrupted()
    trace, state = training.load_checkpoint(entry)
    assert trace.num_rounds == 1 and state.params.equal(theta0)
    assert state.method_state.memory[3].tolist() == [1.0] * 4
    assert state.method_state.server["m"].tolist() == [-1.0] * 4
    assert isinstance(trace, TrainingTrace)


# -- config, keys, bytes of a real run ------------------------------------------------------


@pytest.mark.parametrize(("override", "message"), [
    ("fl.compression={kind: qsgd}", "fl.compression: compression kind 'qsgd' needs bits"),
    ("fl.compression={kind: qsgd, bits: 1}", "fl.compression.bits"),
    ("fl.compression={kind: topk, fraction: 0.1, bits: 8}", "takes no bits (got 8)"),
    ("fl.compression={kind: zip, bits: 8}", "fl.compression.kind"),
    ("fl.server={optimizer: fedadam, beta2: 1.5}", "fl.server.beta2"),
])
def test_bad_settings_exit_2_naming_the_key(tiny_path: Path, capsys, override: str, message: str) -> None:
    assert main(["validate", str(tiny_path), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "tiny.yaml" in err


def test_compression_enters_the_training_and_system_keys_only_when_set(tiny_path: Path) -> None:
    cpu = torch.device("cpu")
    plain = config.load(tiny_path)
    qsgd8 = config.load(tiny_path, ("fl.compression={kind: qsgd, bits: 8}",))
    adam = config.load(tiny_path, ("fl.server={optimizer: fedadam}",))
    method = plain.methods["original"]
    assert "compression" not in keys.system_facts(plain, tiny_path.parent)
    assert "compression" not in config.section_key(plain.fl) and "server" not in config.section_key(plain.fl)
    assert keys.system_facts(qsgd8, tiny_path.parent)["compression"] == {"kind": "qsgd", "bits": 8}
    assert keys.train_key(qsgd8, method, None, cpu) != keys.train_key(plain, method, None, cpu)
    assert keys.train_key(adam, method, None, cpu) != keys.train_key(plain, method, None, cpu)
    assert keys.system_facts(adam, tiny_path.parent) == keys.system_facts(plain, tiny_path.parent)  # bytes alike
    assert keys.system_group(qsgd8, "original", tiny_path.parent) != keys.system_group(
        plain, "original", tiny_path.parent)


def test_a_quantised_run_reports_the_bytes_its_training_sent(tiny_path: Path, cache_root: Path) -> None:
    """The tiny scenario, dense, 8-bit qsgd, 2 rounds: each of the 4 clients
    downloads the 32-bit model (266,610 x 4 bytes) and uploads 8 x 266,610 + 32
    bits = 266,614 bytes; the report's round_bytes is 4 x (1,066,440 + 266,614)
    and its trace differs from the uncompressed run's."""
    overrides = ("methods={original: {}}", "rounds.max=2")
    compressed = pipeline.compute(config.load(tiny_path, (*overrides, "fl.compression={kind: qsgd, bits: 8}")),
                                  base_dir=tiny_path.parent)
    rounds = compressed.rounds
    assert rounds["round_bytes"].tolist() == [4 * (1_066_440 + 266_614)] * 2
    assert compressed.methods["original"].payload.up_bytes == 266_614
    plain = pipeline.compute(config.load(tiny_path, overrides), base_dir=tiny_path.parent)
    assert plain.rounds["round_bytes"].tolist() == [4 * 2 * 1_066_440] * 2
    assert compressed.rounds["accuracy"].tolist() != plain.rounds["accuracy"].tolist()
    assert compressed.rounds["accuracy"].iloc[-1] > 0.3  # still learns (chance 0.1)
