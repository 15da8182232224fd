"""Batched FedAvg: aggregation, schedules, equality with the reference trainer,
masks, determinism, resume, participation, traces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.learn.federated import (
    ClientData,
    client_batches,
    epoch_permutations,
    fedavg,
    participants,
    round_flops,
    round_schedule,
    steps_per_epoch,
    train,
)
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, Params, encoder, init_dae, init_params, layer_shapes
from fedsim.learn.reference import train_reference
from fedsim.learn.spec import FLConfig
from fedsim.learn.trace import TrainingTrace, TrainState

# Unequal clients (70, 60, 5, 165, 0 samples), batch 16: partial batches everywhere,
# a client smaller than one batch and one without data.
SIZES = (70, 60, 5, 165, 0)
CFG = FLConfig(batch_size=16, local_epochs=2)


@pytest.fixture(scope="module")
def clients(make_clients) -> ClientData:
    return make_clients(SIZES)


@pytest.fixture(scope="module")
def theta0() -> Params:
    return encoder(init_dae("glorot_uniform", 3))


@pytest.fixture(scope="module")
def sparse_mask() -> Mask:
    gen = torch.Generator().manual_seed(4)
    return Mask(tuple(torch.rand(s, generator=gen) < 0.3 for s in layer_shapes(LENET_SIZES)))


def _last_params(**kwargs) -> tuple[TrainingTrace, dict[int, Params]]:
    seen: dict[int, Params] = {}
    runner = kwargs.pop("runner", train)
    trace = runner(on_round=lambda r, p, rec: seen.__setitem__(r, p), **kwargs)
    return trace, seen


# -- FedAvg ----------------------------------------------------------------------------


def test_fedavg_weights_by_sample_counts_hand_computed():
    stacked = Params(
        (torch.tensor([[[1.0, 0.0]], [[5.0, 0.0]]]),),  # K=2, one 1x2 layer
        (torch.tensor([[2.0, 0.0], [-2.0, 4.0]]),),
    )
    out = fedavg(stacked, [100, 300])  # p = 0.25, 0.75
    assert torch.equal(out.weights[0], torch.tensor([[4.0, 0.0]]))
    assert torch.equal(out.biases[0], torch.tensor([-1.0, 3.0]))
    # equal weights: the plain mean
    assert torch.equal(fedavg(stacked, np.array([7, 7])).weights[0], torch.tensor([[3.0, 0.0]]))
    # a zero weight drops that client
    assert torch.equal(fedavg(stacked, torch.tensor([0, 2])).weights[0], torch.tensor([[5.0, 0.0]]))


def test_fedavg_rejects_bad_weights():
    stacked = Params((torch.zeros(2, 1, 1),), (torch.zeros(2, 1),))  # K=2 models of one 1x1 layer
    with pytest.raises(ValueError, match="3 aggregation weights for 2"):
        fedavg(stacked, [1, 1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        fedavg(stacked, [1, -1])
    with pytest.raises(ValueError, match="sum to 0"):
        fedavg(stacked, [0, 0])


# -- schedules ---------------------------------------------------------------------------


def test_epoch_permutations_are_keyed_by_client_and_round():
    a = epoch_permutations(9, 2, 5, 40, 3)
    assert a.shape == (3, 40)
    assert all(sorted(row) == list(range(40)) for row in a)
    assert not np.array_equal(a[0], a[1])  # a fresh shuffle every epoch
    assert np.array_equal(a, epoch_permutations(9, 2, 5, 40, 3))
    assert not np.array_equal(a, epoch_permutations(9, 3, 5, 40, 3))
    assert not np.array_equal(a, epoch_permutations(9, 2, 6, 40, 3))


def test_paper_batches_are_six_full_and_one_of_forty():
    perms = epoch_permutations(0, 0, 1, 400, 5)
    batches = client_batches(perms, 60)
    assert steps_per_epoch(400, 60) == 7 and len(batches) == 35
    assert [b.size for b in batches[:7]] == [60] * 6 + [40]


def test_round_schedule_covers_every_sample_once_per_epoch(clients):
    ids = np.arange(len(SIZES))
    sched = round_schedule(clients, ids, CFG, seed=1, round_num=2)
    assert sched.local_steps.tolist() == [2 * steps_per_epoch(n, 16) for n in SIZES]
    assert sched.num_steps == max(sched.local_steps)
    per_client = {k: [] for k in ids}
    for t, width in enumerate(sched.widths):
        rows = sched.indices[sched.offsets[t] : sched.offsets[t + 1]].reshape(len(ids), width)
        weights = sched.weights[sched.offsets[t] : sched.offsets[t + 1]].reshape(len(ids), width)
        for j in ids:
            real = weights[j] > 0
            assert np.allclose(weights[j][real], 1.0 / real.sum()) if real.any() else True
            per_client[j].append(rows[j][real])
    for j, n in enumerate(SIZES):
        seen = np.concatenate(per_client[j]) if n else np.zeros(0, int)
        assert np.array_equal(np.sort(seen), np.sort(np.tile(clients.client_indices[j], 2)))
        # the same batches, in the same order, as the reference's loop
        ref = client_batches(epoch_permutations(1, j, 2, n, 2), 16)
        got = [b for b in per_client[j] if b.size]
        assert len(got) == len(ref)
        assert all(np.array_equal(g, clients.client_indices[j][r]) for g, r in zip(got, ref, strict=True))


def test_round_flops_of_the_paper_round():
    assert round_flops(np.full(100, 400), 5) == pytest.approx(225.4e9, rel=1e-3)


# -- batched == reference ------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_batched_matches_reference(clients, test_set, theta0, sparse_mask, masked):
    mask = sparse_mask if masked else Mask.dense_like(theta0)
    participation = [np.arange(5), np.array([3, 0, 2]), np.array([1, 4])]
    common = dict(init=theta0, mask=mask, clients=clients, test=test_set, cfg=CFG, seed=11, rounds=3,
                  participation=participation)
    fast, fast_params = _last_params(**common)
    ref, ref_params = _last_params(runner=train_reference, **common)
    for r in (1, 2, 3):
        assert fast_params[r].max_abs_diff(ref_params[r]) < 1e-4
    assert fast.client_rounds.equals(ref.client_rounds)
    assert fast.rounds["participants"].tolist() == [5, 3, 2]
    assert np.allclose(fast.rounds["loss"], ref.rounds["loss"], atol=1e-4)


def test_pruned_weights_stay_exactly_zero(clients, test_set, theta0, sparse_mask):
    dense_start = theta0  # nonzero everywhere: train() must zero the pruned entries itself
    _, seen = _last_params(init=dense_start, mask=sparse_mask, clients=clients, test=test_set, cfg=CFG,
                           seed=2, rounds=2)
    for params in seen.values():
        for w, m in zip(params.weights, sparse_mask.layers, strict=True):
            assert torch.count_nonzero(w[~m]) == 0
            assert torch.count_nonzero(w[m]) == int(m.sum())  # survivors are trained, not zeroed
        assert all(torch.count_nonzero(b) > 0 for b in params.biases)  # biases are not pruned


def test_stacked_client_models_keep_zeros_before_averaging(clients, sparse_mask, theta0):
    from fedsim.learn.federated import _BatchedMLP

    model = _BatchedMLP(clients, sparse_mask, CFG, torch.device("cpu"))
    sched = round_schedule(clients, np.arange(len(SIZES)), CFG, seed=0, round_num=1)
    stacked = model.train_round(sparse_mask.apply(theta0), sched)
    for w, m in zip(stacked.weights, sparse_mask.layers, strict=True):
        assert torch.count_nonzero(w[:, ~m]) == 0
    # the client without data and the one with 5 samples: untouched vs trained
    start = sparse_mask.apply(theta0)
    assert torch.equal(stacked.weights[0][4], start.weights[0])
    assert not torch.equal(stacked.weights[0][2], start.weights[0])


# -- determinism and resume ----------------------------------------------------------------


def test_repeat_runs_are_bit_identical(clients, test_set, theta0, sparse_mask):
    common = dict(init=theta0, mask=sparse_mask, clients=clients, test=test_set, cfg=CFG, seed=5, rounds=2)
    a, pa = _last_params(**common)
    b, pb = _last_params(**common)
    assert a.equals(b)
    assert pa[2].equal(pb[2])
    _, pc = _last_params(**{**common, "seed": 6})
    assert not pc[2].equal(pa[2])


def test_resumed_run_equals_uninterrupted_run(clients, test_set, theta0):
    mask = Mask.dense_like(theta0)
    participation = lambda r: np.arange(len(SIZES))[r % 2 :: 2]  # noqa: E731 - alternating halves
    common = dict(mask=mask, clients=clients, test=test_set, cfg=CFG, seed=8, participation=participation)
    full, full_params = _last_params(init=theta0, rounds=4, **common)
    first, first_params = _last_params(init=theta0, rounds=2, **common)
    second, second_params = _last_params(init=theta0, rounds=4, start=TrainState(2, first_params[2]), **common)
    assert second.rounds["round_num"].tolist() == [3, 4]
    assert first.concat(second).equals(full)
    assert second_params[4].equal(full_params[4])


def test_block_size_changes_only_rounding(clients, test_set, theta0, sparse_mask):
    common = dict(init=theta0, mask=sparse_mask, clients=clients, test=test_set, cfg=CFG, seed=3, rounds=2)
    one, p_one = _last_params(block_clients=5, **common)
    two, p_two = _last_params(block_clients=2, **common)
    solo, p_solo = _last_params(block_clients=1, **common)
    _, p_again = _last_params(block_clients=2, **common)
    assert p_again[2].equal(p_two[2])  # a fixed block size is bit-reproducible
    # the same arithmetic, up to the BLAS's float rounding for other batch counts
    assert p_one[2].max_abs_diff(p_two[2]) < 1e-6 and p_one[2].max_abs_diff(p_solo[2]) < 1e-6
    assert one.client_rounds.equals(two.client_rounds)
    assert np.allclose(one.rounds["loss"], solo.rounds["loss"], atol=1e-6)
    with pytest.raises(ValueError, match="block_clients 0"):
        train(theta0, sparse_mask, clients, test_set, CFG, seed=0, rounds=1, block_clients=0)


def test_stop_predicate_ends_the_run(clients, test_set, theta0):
    calls = []
    trace = train(theta0, Mask.dense_like(theta0), clients, test_set, CFG, seed=0, rounds=5,
                  stop=lambda rec: calls.append(rec.round_num) or rec.round_num == 2)
    assert trace.num_rounds == 2 and calls == [1, 2]


def test_nothing_to_do_after_the_last_round(clients, test_set, theta0):
    trace = train(theta0, Mask.dense_like(theta0), clients, test_set, CFG, seed=0, rounds=3,
                  start=TrainState(3, theta0))
    assert trace.num_rounds == 0


# -- participation ---------------------------------------------------------------------------


def test_participants_rules():
    assert participants(None, 1, 3).tolist() == [0, 1, 2]
    assert participants([np.array([2, 0])], 1, 3).tolist() == [0, 2]  # sorted
    assert participants(lambda r: [r], 2, 3).tolist() == [2]
    assert participants([np.array([], dtype=int)], 1, 3).size == 0
    with pytest.raises(ValueError, match="repeated"):
        participants([np.array([1, 1])], 1, 3)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        participants([np.array([3])], 1, 3)
    with pytest.raises(ValueError, match="lists 1 rounds, round 2"):
        participants([np.array([0])], 2, 3)
    with pytest.raises(ValueError, match="integer"):
        participants([np.array([0.5])], 1, 3)


def test_empty_round_keeps_the_model(clients, test_set, theta0):
    _, seen = _last_params(init=theta0, mask=Mask.dense_like(theta0), clients=clients, test=test_set,
                           cfg=CFG, seed=0, rounds=2, participation=[np.array([0, 1]), np.array([], int)])
    assert seen[2].equal(seen[1])


def test_client_data_validation():
    with pytest.raises(ValueError, match=r"index 5 outside 0\.\.3"):
        ClientData(torch.zeros(4, 784), torch.zeros(4, dtype=torch.int64), (np.array([0, 5]),))
    with pytest.raises(ValueError, match="expected \\[N, \\*sample_shape\\]"):
        ClientData(torch.zeros(4), torch.zeros(4, dtype=torch.int64), (np.array([0]),))
    # any sample shape is held (models other than LeNet-300-100); the kernel takes 784 values only
    ten = ClientData(torch.zeros(4, 10), torch.zeros(4, dtype=torch.int64), (np.array([0]),))
    with pytest.raises(ValueError, match=r"LeNet-300-100 takes samples of 784 values; the clients' are \[10\]"):
        train(init_params(LENET_SIZES, "glorot_uniform", torch.Generator().manual_seed(0)),
              Mask.dense(layer_shapes(LENET_SIZES)), ten, (torch.zeros(1, 784), torch.zeros(1)), CFG,
              seed=0, rounds=1)


# -- traces -------------------------------------------------------------------------------------


def test_trace_save_load_roundtrip(tmp_path, clients, test_set, theta0):
    trace = train(theta0, Mask.dense_like(theta0), clients, test_set, CFG, seed=0, rounds=2,
                  participation=[np.array([0, 3]), np.array([1, 2, 3])])
    path = tmp_path / "trace.npz"
    trace.save(path)
    back = TrainingTrace.load(path)
    assert back.equals(trace)
    assert back.meta["seed"] == 0
    assert back.client_rounds["client_id"].tolist() == [0, 3, 1, 2, 3]
    assert back.client_rounds["samples"].tolist() == [70, 165, 60, 5, 165]
    assert back.client_rounds["local_steps"].tolist() == [10, 22, 8, 2, 22]
    assert [p.name for p in tmp_path.iterdir()] == ["trace.npz"]  # no temporary left behind


def _rounds(first: int, last: int, device_name: str) -> TrainingTrace:
    from fedsim.learn.trace import RoundRecord

    records = [RoundRecord(r, 0.5, 1.0, 1, np.array([0]), np.array([10]), np.array([1]))
               for r in range(first, last + 1)]
    return TrainingTrace.from_records(records, {"device": device_name.lower(), "device_name": device_name})


def test_trace_segments_say_which_device_ran_which_rounds(tmp_path):
    gpu, cpu, more_cpu = _rounds(1, 4, "GPU"), _rounds(5, 6, "CPU"), _rounds(7, 9, "CPU")
    assert gpu.segments() == [{"first": 1, "last": 4, "device": "gpu", "device_name": "GPU"}]
    assert gpu.computed_on() == "GPU"
    assert "segments" not in gpu.concat(_rounds(5, 5, "GPU")).meta  # one device: one segment
    both = gpu.concat(cpu).concat(more_cpu)  # adjacent CPU parts merge
    assert [(s["first"], s["last"], s["device_name"]) for s in both.segments()] == [(1, 4, "GPU"), (5, 9, "CPU")]
    assert both.computed_on() == "GPU (rounds 1-4), CPU (rounds 5-9)"
    path = tmp_path / "trace.npz"
    both.save(path)
    assert TrainingTrace.load(path).segments() == both.segments()
    head = TrainingTrace(both.rounds.iloc[:3], both.client_rounds.iloc[:3], both.meta)  # a head: clipped
    assert head.computed_on() == "GPU"
