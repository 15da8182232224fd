"""FedBuff replay's mixed-version batches (`fedsim.learn.asynchronous`):
which updates train together and when, that an update's result does not
depend on its batch beyond float rounding, exact resume across a batch that
spans the checkpoint, and the progress cost of an asynchronous method's steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim import config, cost, pipeline
from fedsim.learn.asynchronous import (
    AsyncState,
    AsyncUpdate,
    TrainBatch,
    fedbuff_weight,
    merge_schedules,
    train_async,
    train_updates,
    training_batches,
)
from fedsim.learn.batched import _BatchedMLP
from fedsim.learn.federated import ClientData, round_schedule
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, Params, encoder, init_dae, layer_shapes
from fedsim.learn.spec import FLConfig

SIZES = (70, 60, 35, 165, 60)
CFG = FLConfig(batch_size=16, local_epochs=2)


@pytest.fixture(scope="module")
def clients(make_clients) -> ClientData:
    return make_clients(SIZES)


@pytest.fixture(scope="module")
def mask() -> Mask:
    gen = torch.Generator().manual_seed(4)
    return Mask(tuple(torch.rand(s, generator=gen) < 0.3 for s in layer_shapes(LENET_SIZES)))


@pytest.fixture(scope="module")
def versions(mask: Mask) -> dict[int, Params]:
    """Three different masked global models, as versions 0, 1, 2."""
    return {v: mask.apply(encoder(init_dae("glorot_uniform", 10 + v))) for v in range(3)}


#: a 4-client scenario: synchronous FedAvg and FedBuff (C 3, M 2), 5 rounds / steps
TINY_ASYNC = {
    "name": "tiny_async", "seed": 0,
    "data": {"dataset": "mnist", "unlabeled": 1000,
             "partition": {"scheme": "shards", "num_clients": 4, "shard_size": 10, "shards_per_client": 10}},
    "pretrain": {"epochs": 1, "iterations": 1},
    "fl": {"local_epochs": 1},
    "methods": {"original": {}, "fedbuff": {"kind": "original", "asynchronous": {"concurrency": 3, "buffer_size": 2}}},
    "system": {"clients": {"downlink": "20 Mbps", "uplink": "5 Mbps", "rtt": "50 ms",
                           "speed": {"dist": "lognormal", "median": 1.0, "sigma": 0.8}},
               "server": {"downlink": "50 Mbps", "uplink": "50 Mbps"}},
    "targets": [0.99],
    "rounds": {"max": 5},
    "device": "cpu",
}


def _u(client: int, version: int, staleness: int = 0) -> AsyncUpdate:
    return AsyncUpdate(client, version, fedbuff_weight(staleness))


# -- which updates train together --------------------------------------------------


def test_batches_by_hand() -> None:
    """Step 1 needs (0, v0): all of version 0 trains. Step 2's updates are
    trained. Step 3 needs (1, v2): versions 1 and 2 train together, the update
    of version 1 used only at step 4 with them."""
    plan = [[_u(0, 0), _u(1, 0)],
            [_u(2, 0, 1), _u(3, 0, 1)],
            [_u(1, 2), _u(0, 1, 1)],
            [_u(4, 1, 2), _u(2, 2, 1)]]
    assert training_batches(plan) == [
        TrainBatch(1, ((1, 0), (1, 1), (2, 0), (2, 1))),
        TrainBatch(3, ((3, 1), (4, 0), (3, 0), (4, 1))),
    ]
    assert [b.last_use for b in training_batches(plan)] == [2, 4]


def test_a_synchronous_plan_trains_each_round_as_one_batch() -> None:
    """M = C = K: step t's cohort, all from version t - 1, is one batch."""
    plan = [[_u(k, t) for k in range(4)] for t in range(3)]
    assert training_batches(plan) == [TrainBatch(t + 1, tuple((t + 1, k) for k in range(4))) for t in range(3)]


@st.composite
def _plans(draw: st.DrawFn) -> list[list[AsyncUpdate]]:
    steps = draw(st.integers(1, 12))
    return [[AsyncUpdate(draw(st.integers(0, 4)), draw(st.integers(0, t - 1)))
             for _ in range(draw(st.integers(1, 4)))] for t in range(1, steps + 1)]


@settings(max_examples=200, deadline=None)
@given(plan=_plans())
def test_every_update_trains_once_after_its_version_and_by_its_step(plan: list[list[AsyncUpdate]]) -> None:
    batches = training_batches(plan)
    members = [m for b in batches for m in b.members]
    assert sorted(members) == sorted((t, i) for t, step in enumerate(plan, start=1) for i in range(len(step)))
    steps = [b.step for b in batches]
    assert steps == sorted(set(steps))  # at most one batch before a step, in step order
    for b in batches:
        for t, i in b.members:
            assert plan[t - 1][i].start_version < b.step <= t
    # as few as possible: each batch is forced by an update that started at or
    # after the previous batch (no one batch could have trained both)
    for prev, b in zip([TrainBatch(0, ()), *batches], batches, strict=False):
        assert any(plan[b.step - 1][i].start_version >= prev.step for i in range(len(plan[b.step - 1])))
    # and no fewer than one batch per step trained by a fresh update alone
    assert len(batches) <= len({u.start_version for step in plan for u in step})


# -- results do not depend on the batch --------------------------------------------


def test_merged_schedules_keep_each_participants_rows(clients: ClientData) -> None:
    a = round_schedule(clients, np.array([0, 3]), CFG, seed=1, round_num=1)
    b = round_schedule(clients, np.array([2]), CFG, seed=1, round_num=7)
    merged = merge_schedules([a, b])
    assert merged.client_ids.tolist() == [0, 3, 2]
    assert merged.local_steps.tolist() == [*a.local_steps, *b.local_steps]
    for part, rows in ((a, slice(0, 2)), (b, slice(2, 3))):
        for t in range(part.num_steps):
            got = merged.indices[merged.offsets[t]:merged.offsets[t + 1]].reshape(3, -1)[rows]
            weight = merged.weights[merged.offsets[t]:merged.offsets[t + 1]].reshape(3, -1)[rows]
            want = part.indices[part.offsets[t]:part.offsets[t + 1]].reshape(part.client_ids.size, -1)
            width = want.shape[1]
            assert np.array_equal(got[:, :width], want)
            assert np.array_equal(weight[:, :width],
                                  part.weights[part.offsets[t]:part.offsets[t + 1]].reshape(-1, width))
            assert not weight[:, width:].any()  # padding weighs 0
    assert merge_schedules([a]) is a


def _max_diff(a: Params, b: Params) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.tensors(), b.tensors(), strict=True))


@pytest.mark.parametrize("mu", [0.0, 0.1])
def test_an_update_trains_the_same_in_a_mixed_batch_as_alone(clients, versions, mask, mu) -> None:
    """Five updates from three versions (one client twice from version 0, a
    repeat) in one batch against each alone: within 1e-6 (float32 rounding:
    other batch shapes, other padding, maybe another GEMM summation order).
    FedProx pulls each towards its own version."""
    cfg = FLConfig(batch_size=16, local_epochs=2, proximal_mu=mu)
    trainer = _BatchedMLP(clients, mask, cfg, torch.device("cpu"))
    updates = [(3, 2, 0), (0, 0, 0), (2, 1, 0), (0, 0, 1), (4, 1, 0)]
    mixed = train_updates(trainer, versions, updates, clients, cfg, seed=3)
    for update, got in zip(updates, mixed, strict=True):
        alone = train_updates(trainer, versions, [update], clients, cfg, seed=3)[0]
        assert _max_diff(got, alone) < 1e-6, update
        assert _max_diff(got, versions[update[1]]) > 1e-3  # it did train from its version
    assert not torch.equal(mixed[1].weights[0], mixed[3].weights[0])  # a repeat draws other shuffles


def test_the_generic_trainer_takes_one_start_per_participant(clients, versions, mask) -> None:
    """The vmap trainer: a mixed batch equals each update alone (FedProx on)."""
    from fedsim.learn.generic import GenericTrainer
    from fedsim.learn.reference import LeNet
    from fedsim.learn.zoo import spec_from_module

    cfg = FLConfig(batch_size=16, local_epochs=1, proximal_mu=0.1)
    trainer = GenericTrainer(spec_from_module(LeNet(), (784,)), clients, mask, cfg, torch.device("cpu"))
    updates = [(3, 2, 0), (0, 0, 0), (2, 1, 0)]
    mixed = train_updates(trainer, versions, updates, clients, cfg, seed=5)
    for update, got in zip(updates, mixed, strict=True):
        alone = train_updates(trainer, versions, [update], clients, cfg, seed=5)[0]
        assert _max_diff(got, alone) < 1e-5, update
        assert _max_diff(got, versions[update[1]]) > 1e-3


# -- exact resume ------------------------------------------------------------------


def _spanning_plan() -> list[list[AsyncUpdate]]:
    """The batch before step 3 (forced by the fresh (1, v2)) trains (0, v1),
    used at step 3, and (4, v2), used at step 5: after step 3 the state must
    keep version 1 for it, though no update still to use starts from it."""
    return [[_u(0, 0), _u(1, 0)],
            [_u(3, 0, 1)],
            [_u(1, 2), _u(0, 1, 1)],
            [_u(3, 3)],
            [_u(4, 2, 2), _u(0, 4)]]


def test_resume_across_a_spanning_batch_is_exact(clients, test_set, versions, mask) -> None:
    plan = _spanning_plan()
    assert TrainBatch(3, ((3, 1), (3, 0), (5, 0))) in training_batches(plan)
    states: dict[int, AsyncState] = {}
    full = train_async(versions[0], mask, clients, test_set, CFG, plan, seed=4, server_lr=0.8,
                       on_step=lambda t, s, rec: states.__setitem__(t, s))
    saved = AsyncState.from_numpy(3, states[3].to_numpy())
    assert sorted(saved.versions) == [1, 2, 3]
    seen: dict[int, AsyncState] = {}
    rest = train_async(versions[0], mask, clients, test_set, CFG, plan, seed=4, server_lr=0.8, start=saved,
                       on_step=lambda t, s, rec: seen.__setitem__(t, s))
    assert rest.rounds["accuracy"].tolist() == full.rounds["accuracy"].tolist()[3:]
    assert all(torch.equal(a, b) for a, b in zip(seen[5].params.tensors(), states[5].params.tensors(), strict=True))


def test_a_state_without_the_spanning_batchs_versions_still_resumes(clients, test_set, versions, mask) -> None:
    """A checkpoint written before mixed batches holds only the versions of
    the updates still to use (here 2 and 3, not 1): those train alone, equal
    to the uninterrupted run up to float rounding."""
    plan = _spanning_plan()
    states: dict[int, AsyncState] = {}
    train_async(versions[0], mask, clients, test_set, CFG, plan, seed=4, server_lr=0.8,
                on_step=lambda t, s, rec: states.__setitem__(t, s))
    old = AsyncState(3, {v: p for v, p in states[3].versions.items() if v != 1})
    seen: dict[int, AsyncState] = {}
    train_async(versions[0], mask, clients, test_set, CFG, plan, seed=4, server_lr=0.8, start=old,
                on_step=lambda t, s, rec: seen.__setitem__(t, s))
    assert _max_diff(seen[5].params, states[5].params) < 1e-5


# -- the progress display's cost of a server step ----------------------------------


def test_an_async_methods_rounds_cost_its_buffers_updates(tmp_path: Path) -> None:
    """A FedBuff step trains M of the N clients' updates and evaluates once:
    ``run_work`` counts each method's ``rounds.max`` rounds at its own cost."""
    text = Path("scenarios/mobile_async.yaml").read_text()
    path = tmp_path / "mobile_async.yaml"
    path.write_text(text)
    scenario = config.load(path)
    sync_s = cost.round_s(scenario)
    step_s = cost.round_s(scenario, scenario.methods["fedbuff"])
    evaluation = 10_000 * cost.COST_MODEL["eval_s_per_test_image"]
    assert step_s - evaluation == pytest.approx((sync_s - evaluation) * 10 / 100)  # M = 10 of N = 100
    assert cost.round_s(scenario, scenario.methods["original"]) == sync_s
    work = pipeline.run_work(scenario, 0)
    assert work["train"] == pytest.approx(scenario.rounds.max * (2 * sync_s + 2 * step_s))
    assert work["train"] < 0.6 * len(scenario.methods) * scenario.rounds.max * sync_s  # the old count


def test_the_progress_of_an_async_run_adds_up_to_its_work(tmp_path: Path, cache_root: Path) -> None:
    """Every training unit the run reports (computed or skipped) sums to
    ``run_work``'s, an asynchronous method's steps at their own cost."""
    import yaml

    from fedsim.progress import Progress

    path = tmp_path / "tiny_async.yaml"
    path.write_text(yaml.safe_dump(TINY_ASYNC, sort_keys=False))
    scenario = config.load(path)
    from fedsim.pipeline.keys import needed_iterations

    work = pipeline.run_work(scenario, max(needed_iterations(scenario, m) for m in scenario.methods.values()))
    events: list[tuple[str, float]] = []

    class Recording(Progress):
        def _event(self, kind, units, *, computed, status):
            events.append((kind, units))
            super()._event(kind, units, computed=computed, status=status)

    bar = Recording("scenario", work, enabled=False)
    pipeline.compute(scenario, base_dir=tmp_path, bar=bar, workers=1)
    step_s = cost.round_s(scenario, scenario.methods["fedbuff"])
    assert step_s < cost.round_s(scenario)
    steps = [u for k, u in events if k == "train" and u == pytest.approx(step_s)]
    assert len(steps) == scenario.rounds.max  # one event per server step, at a step's cost
    assert sum(u for k, u in events if k == "train") == pytest.approx(work["train"])
    assert bar.fraction == pytest.approx(1.0)
