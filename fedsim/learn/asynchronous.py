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
* the updates that start from one version train batched together, in one
  ``train_round`` of the LeNet-300-100 kernel or the generic ``vmap`` trainer,
  as soon as that version exists, and wait as deltas Δ_i = θ_i - θ_v for their
  step;
* server step t: ``θ_t = mask(θ_{t-1} + η Σ_i p_i w_i Δ_i)`` over the step's
  buffer, with p_i = n_i / Σ n (FedAvg's sample weights over the buffer), w_i
  the staleness weight (FedBuff: 1/sqrt(1 + s_i)) and η the server learning
  rate: Nguyen et al., "Federated Learning with Buffered Asynchronous
  Aggregation", AISTATS 2022, Algorithm 1, with sample weights in place of
  its 1/K mean (the same for equal client sizes). A step whose updates are all
  fresh (started from θ_{t-1}) with weight 1 and η = 1 is FedAvg of the
  trained models, and is computed as `fedsim.learn.federated.fedavg` itself:
  with buffer = concurrency = K and identical clients the trace equals the
  synchronous trainer's exactly (tests/test_async_training.py).

Compression and server optimisers (``fl.compression``, ``fl.server``) are not
combined with asynchronous aggregation here (`train_async` refuses them).

Resume: the state after step t (`AsyncState`) holds every version a later
step's update starts from; the updates in flight are trained again from them
(deterministically), so a resumed run equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
from fedsim.learn.schedule import ClientData, round_schedule, steps_per_epoch
from fedsim.learn.spec import FLConfig
from fedsim.learn.trace import RoundRecord, TrainingTrace
from fedsim.progress import Progress

if TYPE_CHECKING:
    from fedsim.learn.zoo import ModelSpec

__all__ = ["REPEAT_STRIDE", "STATE_PREFIX", "AsyncState", "AsyncUpdate", "fedbuff_weight", "train_async"]

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
    # the last step that uses each version: a version is dropped after it
    last_use: dict[int, int] = {}
    for t, step in enumerate(plan, start=1):
        for u in step:
            last_use[u.start_version] = t
    # (step, position) of every update, grouped by the version it starts from;
    # a resumed run trains a version's whole group again (the updates used
    # before the resume too, then dropped): the same batches, the same floats
    by_version: dict[int, list[tuple[int, int]]] = {}
    for t, step in enumerate(plan, start=1):
        for i, u in enumerate(step):
            by_version.setdefault(u.start_version, []).append((t, i))
    deltas: dict[tuple[int, int], Params] = {}

    def train_from(version: int) -> None:
        """Train every pending update that starts from ``version``, batched
        per repeat index (one `round_schedule` each)."""
        groups: dict[int, list[tuple[int, int]]] = {}
        for t, i in by_version.pop(version, []):
            groups.setdefault(draws[t - 1][i], []).append((t, i))
        base = versions[version]
        for j, members in sorted(groups.items()):
            order = sorted(members, key=lambda ti: plan[ti[0] - 1][ti[1]].client)
            ids = np.array([plan[t - 1][i].client for t, i in order], dtype=np.int64)
            schedule = round_schedule(clients, ids, cfg, seed=seed, round_num=version + 1 + j * REPEAT_STRIDE)
            stacked = trainer.train_round(base, schedule)
            for k, (t, i) in enumerate(order):
                if t <= state.step:
                    continue  # used before a resume
                # a copy: the kernel may reuse its output buffers in the next train_round
                trained = Params(tuple(w[k].clone() for w in stacked.weights),
                                 tuple(b[k].clone() for b in stacked.biases))
                deltas[(t, i)] = trained if _fresh_fedavg(plan[t - 1], t, server_lr) else Params(
                    tuple(a - b for a, b in zip(trained.weights, base.weights, strict=True)),
                    tuple(a - b for a, b in zip(trained.biases, base.biases, strict=True)))

    for version in sorted(v for v in versions
                          if any(t > state.step for t, _ in by_version.get(v, ()))):
        train_from(version)
    meta = {**trace_meta(seed, dev, state.step, model), "aggregation": "fedbuff", "server_lr": float(server_lr)}
    records: list[RoundRecord] = []
    bar = Progress("FedBuff", {"steps": max(len(plan) - state.step, 0)}, enabled=progress)
    current = versions[state.step]
    try:
        for t in range(state.step + 1, len(plan) + 1):
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
            for v in [v for v in versions if v < t and last_use.get(v, 0) <= t]:
                del versions[v]
            if t in by_version:
                train_from(t)
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
