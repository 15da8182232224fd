"""Buffered asynchronous FL (FedBuff) training that replays a schedule.

Client timing does not depend on the model's values, so the system stage
decides the whole asynchronous schedule first (`fedsim.system.asynchronous`)
and training replays it. What training needs of the schedule is a *step
plan*: for every server step t = 1..T, the updates its buffer aggregates,
each an `AsyncUpdate` (client, the server version it started from, its
staleness weight). This module trains them for real:

* version v is the global model after v server steps (v = 0: the start);
* an update of client k that started from version v trains from θ_v with the
  scenario's local schedule (``fl.lr``, batch size, epochs, last partial
  batch), exactly as a synchronous round's participant does. Its shuffles come
  from ``seeding.rng(seed, "client", k, "round", v + 1)``, the stream
  synchronous round v + 1 uses; the j-th further update of k from the same
  version (k finished and was selected again before the next step) uses round
  number ``v + 1 + j * REPEAT_STRIDE`` (j in the high 32 bits);
* updates train in *mixed-version batches* (`training_batches`): before server
  step t, if one of its updates is not trained yet, every untrained update
  whose start version exists trains, in one ``train_round`` of the
  LeNet-300-100 kernel or the generic ``vmap`` trainer, each row from its own
  version's weights (the trainers take one start model per participant). The
  trained updates wait as deltas Δ_i = θ_i - θ_{v_i} for their step. On
  mobile_async's schedule (C = 100, M = 10) this makes 51 batches of 59
  updates on average instead of 293 of 10 when only the updates of one version
  train together; the bench's replay ran 1.26x faster (docs/performance.md);
* server step t: ``θ_t = mask(θ_{t-1} + η Σ_i p_i w_i Δ_i)`` over the step's
  buffer, with p_i = n_i / Σ n (FedAvg's sample weights over the buffer), w_i
  the staleness weight (FedBuff: 1/sqrt(1 + s_i)) and η the server learning
  rate: Nguyen et al., "Federated Learning with Buffered Asynchronous
  Aggregation", AISTATS 2022, Algorithm 1, with sample weights in place of
  its 1/K mean (the same for equal client sizes). A step whose updates are all
  fresh (started from θ_{t-1}) with weight 1 and η = 1 is FedAvg of the
  trained models, and is computed as `fedsim.learn.federated.fedavg` itself:
  with buffer = concurrency = K and identical clients every batch is one
  round's cohort and the trace equals the synchronous trainer's exactly
  (tests/test_async_training.py).

An update's result does not depend on the batch it trains in beyond float32
rounding: its rows are its own, but a batch's step widths are the widest of
its members' (padding rows weigh 0) and the batched GEMMs may sum in another
order for other shapes. Measured on the CPU: clients of equal size mostly
bit-identical, at most 4.5e-8 apart (40-row vs 10-row batches); within 1e-6
with padding (tests/test_async_batching.py checks 1e-6).

Compression and server optimisers (``fl.compression``, ``fl.server``) are not
combined with asynchronous aggregation here (`train_async` refuses them).

Resume: the state after step t (`AsyncState`) holds every version that a batch
trained later, or a batch with an update used after t, starts from; such a
batch trained before the resume is trained again whole (the same rows, the
same floats), so a resumed run equals an uninterrupted one bit for bit. A
state written before mixed batches (it holds only the versions of the updates
still to use) resumes too, training those updates alone: equal up to float
rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import Tensor

from fedsim.learn.federated import fedavg, make_trainer, trace_meta
from fedsim.learn.masks import Mask
from fedsim.learn.model import (
    Device,
    Params,
    as_inputs,
    as_labels,
    evaluate,
    resolve_device,
)
from fedsim.learn.schedule import ClientData, RoundSchedule, round_schedule, steps_per_epoch
from fedsim.learn.spec import FLConfig
from fedsim.learn.trace import RoundRecord, TrainingTrace
from fedsim.progress import Progress

if TYPE_CHECKING:
    from fedsim.learn.zoo import ModelSpec

__all__ = ["BATCHING", "REPEAT_STRIDE", "STATE_PREFIX", "AsyncState", "AsyncUpdate", "TrainBatch", "fedbuff_weight",
           "merge_schedules", "train_async", "train_updates", "training_batches"]

#: How updates are batched for training (`training_batches`), part of an
#: asynchronous method's training key (`fedsim.pipeline.asynchronous`): an
#: update's float rounding depends on its batch ("by-version" before).
BATCHING = "mixed-versions"

#: Name prefix of the arrays of an `AsyncState` in a checkpoint (``async_v<version>_<i>``).
STATE_PREFIX = "async_v"

#: The round-number offset of a client's repeated update from one version
#: (its shuffles' stream): j-th repeat -> ``v + 1 + j * REPEAT_STRIDE``.
REPEAT_STRIDE = 1 << 32


def fedbuff_weight(staleness: int) -> float:
    """FedBuff's staleness weight 1 / sqrt(1 + s) (Nguyen et al. 2022, Sec. 5)."""
    if staleness < 0:
        raise ValueError(f"staleness {staleness} must be >= 0")
    return 1.0 / math.sqrt(1.0 + staleness)


@dataclass(frozen=True)
class AsyncUpdate:
    """One client update a server step aggregates.

    Attributes:
        client: the client id.
        start_version: the server version (steps taken) it downloaded and trained from.
        weight: its staleness weight w (1 for a fresh update).
    """

    client: int
    start_version: int
    weight: float = 1.0


@dataclass(frozen=True)
class AsyncState:
    """The state after server step ``step``: the versions that the updates of
    later steps start from (``versions``, version -> model; always including
    ``step`` itself, the current model)."""

    step: int
    versions: dict[int, Params] = field(default_factory=dict)

    @property
    def params(self) -> Params:
        """The current global model θ_step."""
        return self.versions[self.step]

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Arrays ``async_v<version>_<i>`` (the i-th tensor of that version)."""
        return {f"{STATE_PREFIX}{v}_{i}": t.detach().cpu().numpy()
                for v, p in self.versions.items() for i, t in enumerate(p.tensors())}

    @classmethod
    def from_numpy(cls, step: int, arrays: dict[str, np.ndarray]) -> AsyncState:
        """Inverse of `to_numpy`; other arrays are ignored."""
        found: dict[int, dict[int, Tensor]] = {}
        for name in arrays:
            if name.startswith(STATE_PREFIX):
                version, index = name[len(STATE_PREFIX):].split("_")
                found.setdefault(int(version), {})[int(index)] = torch.from_numpy(np.array(arrays[name]))
        versions = {}
        for v, tensors in found.items():
            flat = [tensors[i] for i in range(len(tensors))]
            versions[v] = Params(tuple(flat[0::2]), tuple(flat[1::2]))
        if step not in versions:
            raise ValueError(f"an asynchronous state after step {step} without version {step}")
        return cls(step, versions)


class Trainer(Protocol):
    """A batched trainer (`fedsim.learn.federated.make_trainer`): one start
    model for all participants, or one per participant stacked ``[K, ...]``."""

    def train_round(self, params: Params, schedule: RoundSchedule) -> Params: ...


OnStep = Callable[[int, AsyncState, RoundRecord], None]
Stop = Callable[[RoundRecord], bool]


def _check_plan(plan: Sequence[Sequence[AsyncUpdate]], num_clients: int) -> None:
    for t, step in enumerate(plan, start=1):
        if not step:
            raise ValueError(f"server step {t} aggregates no update")
        for u in step:
            if not 0 <= u.client < num_clients:
                raise ValueError(f"server step {t}: client {u.client} is not in 0..{num_clients - 1}")
            if not 0 <= u.start_version < t:
                raise ValueError(f"server step {t}: an update of client {u.client} starts from "
                                 f"version {u.start_version}, not in 0..{t - 1}")
            if not (math.isfinite(u.weight) and u.weight >= 0):
                raise ValueError(f"server step {t}: staleness weight {u.weight!r} must be finite and >= 0")


def _draws(plan: Sequence[Sequence[AsyncUpdate]]) -> list[list[int]]:
    """Per step and update, j: how many earlier updates of the same client
    started from the same version (the repeat index of its shuffles)."""
    seen: dict[tuple[int, int], int] = {}
    out = []
    for step in plan:
        row = []
        for u in step:
            key = (u.client, u.start_version)
            row.append(seen.get(key, 0))
            seen[key] = row[-1] + 1
        out.append(row)
    return out


@dataclass(frozen=True)
class TrainBatch:
    """Updates trained together in one batched call, before server step
    ``step`` aggregates: ``members`` are their (step, position) in the plan;
    each started from a version < ``step``."""

    step: int
    members: tuple[tuple[int, int], ...]

    @property
    def last_use(self) -> int:
        """The last server step that aggregates one of its updates."""
        return max(t for t, _ in self.members)


def training_batches(plan: Sequence[Sequence[AsyncUpdate]]) -> list[TrainBatch]:
    """Mixed-version batches, as late and as few as possible: before server
    step t, if one of its updates is not trained yet, every untrained update
    whose start version exists (< t) trains, in one batch. (Greedy by
    deadline: the fewest batches that train each update between its start
    version and its step.)"""
    by_version: dict[int, list[tuple[int, int]]] = {}
    for t, step in enumerate(plan, start=1):
        for i, u in enumerate(step):
            by_version.setdefault(u.start_version, []).append((t, i))
    batches, pending, trained = [], [], set()
    for t, step in enumerate(plan, start=1):
        pending.extend(by_version.get(t - 1, ()))
        if any((t, i) not in trained for i in range(len(step))):
            batches.append(TrainBatch(t, tuple(pending)))
            trained.update(pending)
            pending = []
    return batches


def merge_schedules(parts: Sequence[RoundSchedule]) -> RoundSchedule:
    """One schedule whose participants are those of ``parts`` in order: step
    t's width is the largest of the parts' (narrower parts padded with
    weight-0 rows of pool row 0)."""
    if len(parts) == 1:
        return parts[0]
    num_steps = max(p.num_steps for p in parts)
    widths = np.zeros(num_steps, dtype=np.int64)
    for p in parts:
        widths[:p.num_steps] = np.maximum(widths[:p.num_steps], p.widths)
    k_total = sum(int(p.client_ids.size) for p in parts)
    offsets = np.concatenate([[0], np.cumsum(widths * k_total)]).astype(np.int64)
    indices = np.zeros(int(offsets[-1]), dtype=np.int64)
    labels = np.zeros_like(indices)
    weights = np.zeros(int(offsets[-1]), dtype=np.float32)
    pad_label = next((int(p.labels[0]) for p in parts if p.labels.size), 0)
    labels[:] = pad_label
    row = 0
    for p in parts:
        k = int(p.client_ids.size)
        for t in range(p.num_steps):
            w = int(p.widths[t])
            src = slice(int(p.offsets[t]), int(p.offsets[t + 1]))
            for dst_arr, src_arr in ((indices, p.indices), (labels, p.labels), (weights, p.weights)):
                dst = dst_arr[offsets[t]:offsets[t + 1]].reshape(k_total, int(widths[t]))
                dst[row:row + k, :w] = src_arr[src].reshape(k, w)
        row += k
    return RoundSchedule(
        client_ids=np.concatenate([p.client_ids for p in parts]),
        samples=np.concatenate([p.samples for p in parts]),
        local_steps=np.concatenate([p.local_steps for p in parts]),
        widths=widths, offsets=offsets, indices=indices, labels=labels, weights=weights)


def train_updates(trainer: Trainer, versions: Mapping[int, Params], updates: Sequence[tuple[int, int, int]],
                  clients: ClientData, cfg: FLConfig, *, seed: int) -> list[Params]:
    """Train ``updates`` in one batched ``train_round``; returns each one's
    trained model, in the order of ``updates``.

    Args:
        trainer: the batched trainer (`fedsim.learn.federated.make_trainer`).
        versions: server version -> global model (on the trainer's device).
        updates: ``(client, start_version, j)``: the client trains from
            ``versions[start_version]`` with the shuffles of round number
            ``start_version + 1 + j * REPEAT_STRIDE`` (j: its repeat index).

    The batch's rows are sorted by (version, j, client); one version's rows
    are a synchronous round's cohort. Raises KeyError for a missing version.
    """
    order = sorted(range(len(updates)), key=lambda r: (updates[r][1], updates[r][2], updates[r][0]))
    groups: dict[tuple[int, int], list[int]] = {}
    for r in order:
        groups.setdefault((updates[r][1], updates[r][2]), []).append(updates[r][0])
    parts = [round_schedule(clients, np.array(ids, dtype=np.int64), cfg, seed=seed,
                            round_num=v + 1 + j * REPEAT_STRIDE) for (v, j), ids in groups.items()]
    starts = [versions[updates[r][1]] for r in order]
    if len({v for v, _ in groups}) == 1:  # one version: a synchronous round's call
        base = starts[0]
    else:  # one start model per row
        base = Params(tuple(torch.stack(ws) for ws in zip(*(p.weights for p in starts), strict=True)),
                      tuple(torch.stack(bs) for bs in zip(*(p.biases for p in starts), strict=True)))
    stacked = trainer.train_round(base, merge_schedules(parts))
    out: list[Params | None] = [None] * len(updates)
    for row, r in enumerate(order):  # copies: the kernel reuses its output buffers in the next call
        out[r] = Params(tuple(w[row].clone() for w in stacked.weights), tuple(b[row].clone() for b in stacked.biases))
    return out  # type: ignore[return-value]


def train_async(
    init: Params,
    mask: Mask,
    clients: ClientData,
    test: tuple[Tensor, Tensor],
    cfg: FLConfig,
    plan: Sequence[Sequence[AsyncUpdate]],
    *,
    seed: int,
    server_lr: float = 1.0,
    device: Device = "cpu",
    start: AsyncState | None = None,
    on_step: OnStep | None = None,
    stop: Stop | None = None,
    progress: bool = False,
    block_clients: int | None = None,
    model: ModelSpec | None = None,
) -> TrainingTrace:
    """Replay the step plan ``plan`` (step t's updates at ``plan[t - 1]``)
    with real training, from ``start`` (or step 0 with ``init``) to its end.

    Args:
        init: the model at version 0 (pruned weights are zeroed).
        mask: fixes pruned weights at 0 in every update and every version.
        clients, test, cfg, seed, device, block_clients, model: as
            `fedsim.learn.federated.train`.
        plan: the schedule's updates per server step (`AsyncUpdate`).
        server_lr: η of the server step (> 0).
        start: resume after ``start.step``.
        on_step: called after every step as ``on_step(step, state, record)``
            (e.g. to checkpoint ``state``).
        stop: called with every step's record; True ends the run.
        progress: a progress line with an ETA.

    Batches: `training_batches`; each trains with `train_updates`.

    Returns:
        The trace, one row per server step (``round_num`` = the step); a
        step's participants are its updates (a client may appear twice).

    Raises:
        ValueError: a malformed plan, compression or a server optimiser in
            ``cfg``, a non-positive ``server_lr``.
    """
    if not cfg.plain_fedavg:
        raise ValueError("asynchronous aggregation does not combine with fl.compression or fl.server")
    if not (math.isfinite(server_lr) and server_lr > 0):
        raise ValueError(f"server_lr {server_lr!r} must be > 0")
    _check_plan(plan, clients.num_clients)
    dev = resolve_device(device)
    mask.check(init)
    state = start if start is not None else AsyncState(0, {0: init})
    versions = {v: mask.apply(p.to(dev)) for v, p in state.versions.items()}
    test_x, test_y = as_inputs(test[0]).to(dev), as_labels(test[1]).to(dev)
    trainer = make_trainer(model, clients, mask, cfg, dev, block_clients)
    forward = model.forward if model is not None and not model.reference else None
    draws = _draws(plan)
    batches = training_batches(plan)
    keep: dict[int, int] = {}  # version -> the last step after which a batch may need it
    for b in batches:
        for t, i in b.members:
            v = plan[t - 1][i].start_version
            keep[v] = max(keep.get(v, 0), b.last_use)
    deltas: dict[tuple[int, int], Params] = {}

    def train_batch(batch: TrainBatch) -> None:
        members = batch.members
        if not all(plan[t - 1][i].start_version in versions for t, i in members):
            members = tuple(m for m in members if m[0] > state.step)  # a state written before mixed batches
        updates = [(plan[t - 1][i].client, plan[t - 1][i].start_version, draws[t - 1][i]) for t, i in members]
        for (t, i), (_, v, _), trained in zip(members, updates, train_updates(
                trainer, versions, updates, clients, cfg, seed=seed), strict=True):
            if t <= state.step:
                continue  # used before a resume
            own = versions[v]
            deltas[(t, i)] = trained if _fresh_fedavg(plan[t - 1], t, server_lr) else Params(
                tuple(a - b for a, b in zip(trained.weights, own.weights, strict=True)),
                tuple(a - b for a, b in zip(trained.biases, own.biases, strict=True)))

    by_step = {b.step: b for b in batches}
    for b in batches:
        if b.step <= state.step < b.last_use:
            train_batch(b)
    meta = {**trace_meta(seed, dev, state.step, model), "aggregation": "fedbuff", "server_lr": float(server_lr)}
    records: list[RoundRecord] = []
    bar = Progress("FedBuff", {"steps": max(len(plan) - state.step, 0)}, enabled=progress)
    current = versions[state.step]
    try:
        for t in range(state.step + 1, len(plan) + 1):
            if t in by_step:
                train_batch(by_step[t])
            step = plan[t - 1]
            samples = np.array([int(clients.sizes[u.client]) for u in step], dtype=np.int64)
            got = [deltas.pop((t, i)) for i in range(len(step))]
            stacked = Params(tuple(torch.stack(ws) for ws in zip(*(g.weights for g in got), strict=True)),
                             tuple(torch.stack(bs) for bs in zip(*(g.biases for g in got), strict=True)))
            if _fresh_fedavg(step, t, server_lr):
                current = fedavg(stacked, samples)
            elif samples.sum() > 0:  # θ_t = θ_{t-1} + η Σ p_i w_i Δ_i
                p = samples / samples.sum() * np.array([u.weight for u in step]) * server_lr
                p_t = torch.from_numpy(p).to(device=dev, dtype=torch.float32)
                moved = [c + torch.tensordot(p_t, d, dims=1)
                         for c, d in zip(current.tensors(), stacked.tensors(), strict=True)]
                current = mask.apply(Params(tuple(moved[0::2]), tuple(moved[1::2])))
            versions[t] = current
            for v in [v for v in versions if v < t and keep.get(v, 0) <= t]:
                del versions[v]
            accuracy, loss = evaluate(current, test_x, test_y, cfg.eval_batch_size, forward)
            order = np.argsort([u.client for u in step], kind="stable")
            local_steps = np.array([cfg.local_epochs * steps_per_epoch(int(n), cfg.batch_size) for n in samples],
                                   dtype=np.int64)
            record = RoundRecord(round_num=t, accuracy=accuracy, loss=loss, participants=len(step),
                                 client_ids=np.array([step[i].client for i in order], dtype=np.int64),
                                 samples=samples[order], local_steps=local_steps[order])
            records.append(record)
            bar.advance("steps", 1, f"server step {t}/{len(plan)}, accuracy {accuracy:.4f}")
            if on_step is not None:
                on_step(t, AsyncState(t, dict(versions)), record)
            if stop is not None and stop(record):
                break
    finally:
        bar.close()
    return TrainingTrace.from_records(records, meta)


def _fresh_fedavg(step: Sequence[AsyncUpdate], t: int, server_lr: float) -> bool:
    """True when step ``t`` is exactly FedAvg: every update started from
    θ_{t-1} with weight 1, and η = 1 (then θ_t = Σ p_i θ_i)."""
    return server_lr == 1.0 and all(u.start_version == t - 1 and u.weight == 1.0 for u in step)
