"""Batched FedAvg: every participating client of a round trains at once.

One round of FedAvg (McMahan et al. 2017; paper Protocol 1, FL process):
every participant starts from the global model, runs ``local_epochs`` epochs
of plain SGD (``lr``, no momentum, no weight decay) on cross-entropy over its
own data in mini-batches of ``batch_size``, and the server averages the
resulting models weighted by the clients' sample counts.

Semantics (identical to `fedsim.learn.reference`, which runs one client after
another with an ``nn.Module``; the tests hold the two within 1e-4):

* client k's shuffles in round r come from ``seeding.rng(seed, "client", k,
  "round", r)``: one ``permutation(n_k)`` per epoch, drawn in epoch order;
* an epoch is ``ceil(n_k / batch_size)`` steps, the last batch possibly partial
  (400 samples = 6 x 60 + 40); a batch's loss is the mean over its real samples;
* a client that has run out of steps (fewer samples than others) keeps its
  weights; FedAvg weights are the participants' sample counts;
* a `Mask` fixes pruned weights at exactly 0: the update of a pruned weight is
  masked out after every step, and the average of zeros stays zero.

Where the parts live:

* `fedsim.learn.schedule`: `ClientData`, who takes part (`participants`), the
  shuffles and a round's mini-batch layout (`round_schedule`);
* `fedsim.learn.batched`: the kernels that train a round's participants at
  once, as stacked tensors (`_BatchedMLP`, `default_block_clients`);
* this module: the FedAvg aggregation (`fedavg`), the round driver (`train`:
  participation, evaluation, the trace, checkpoint and stop callbacks,
  progress) and the chunking of a round's clients (`train_participants`).

Memory is bounded by `STACK_BYTES` (1 GiB: 1006 trained models), not by the
participants: a round with more participants than that is trained and
averaged chunk by chunk (`train_participants`), each chunk's weighted sum
added to the round's average; with fewer (every shipped scenario) the round
is one chunk and the average is computed exactly as before.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from fedsim.learn.batched import (  # noqa: F401  (re-exported: the kernels' names)
    CPU_BLOCK_BYTES,
    _BatchedMLP,
    default_block_clients,
)
from fedsim.learn.masks import Mask
from fedsim.learn.model import (
    LENET_SIZES,
    Device,
    Params,
    as_inputs,
    as_labels,
    device_name,
    evaluate,
    layer_shapes,
    resolve_device,
)
from fedsim.learn.schedule import (  # the schedule's names are re-exported (__all__)
    ClientData,
    Participation,
    RoundSchedule,
    client_batches,
    epoch_permutations,
    participants,
    round_schedule,
    steps_per_epoch,
)
from fedsim.learn.spec import FLConfig
from fedsim.learn.trace import RoundRecord, TrainingTrace, TrainState
from fedsim.progress import Progress

if TYPE_CHECKING:
    from fedsim.learn.aggregation import MethodState
    from fedsim.learn.generic import GenericTrainer
    from fedsim.learn.zoo import ModelSpec

OnRound = Callable[[int, Params, RoundRecord], None]
OnState = Callable[[int, "MethodState"], None]
Stop = Callable[[RoundRecord], bool]


# -- aggregation ------------------------------------------------------------------------


def fedavg(stacked: Params, weights: Sequence[float] | np.ndarray | Tensor) -> Params:
    """FedAvg aggregation: ``Σ_k p_k θ_k`` with ``p_k = weights_k / Σ weights``.

    A pure function (McMahan et al. 2017, Algorithm 1; paper Protocol 1,
    Aggregation step). Weights that are exactly zero in every client stay
    exactly zero.

    Args:
        stacked: K client models stacked along a leading dimension
            (``[K, fan_in, fan_out]`` weights, ``[K, fan_out]`` biases).
        weights: ``[K]`` non-negative aggregation weights (sample counts).

    Returns:
        The averaged model (new tensors, on the device of ``stacked``).

    Raises:
        ValueError: a weight count that does not match K, a negative or
            non-finite weight, or weights summing to 0.
    """
    w = np.asarray(weights.cpu() if isinstance(weights, Tensor) else weights, dtype=np.float64)
    k_count = int(stacked.weights[0].shape[0]) if stacked.weights[0].dim() == 3 else -1
    if w.ndim != 1 or w.size != k_count:
        raise ValueError(f"{w.size} aggregation weights for {k_count} stacked models")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise ValueError(f"aggregation weights must be finite and >= 0, got {w.tolist()}")
    total = w.sum()
    if total <= 0:
        raise ValueError("aggregation weights sum to 0")
    return _weighted_sum(stacked, w / total)


def _weighted_sum(stacked: Params, p: np.ndarray) -> Params:
    """``Σ_k p_k θ_k`` over the stacked models, ``p`` float64 ``[K]`` (cast to float32)."""
    p_t = torch.from_numpy(np.ascontiguousarray(p)).to(device=stacked.device, dtype=torch.float32)
    avg = [torch.tensordot(p_t, t, dims=1) for t in stacked.tensors()]
    return Params(tuple(avg[0::2]), tuple(avg[1::2]))


# -- memory: how many trained models a round holds at once -------------------------------


#: Bytes of trained client models (weights and biases, float32) the trainer holds
#: at once: a round's participants are trained and averaged in chunks of
#: `default_stack_clients` so memory does not grow with them (50,000 stacked
#: models would take 53 GB).
STACK_BYTES = 1 << 30


def default_stack_clients(num_params: int | None = None) -> int:
    """Clients whose trained models are held at once: `STACK_BYTES` over one
    model's float32 parameters (LeNet-300-100's 1,066,440 bytes, the default:
    1006 clients)."""
    if num_params is None:
        num_params = sum((fan_in + 1) * fan_out for fan_in, fan_out in layer_shapes(LENET_SIZES))
    return max(1, STACK_BYTES // (4 * num_params))


# -- the training loop ------------------------------------------------------------------


def train_participants(
    model: _BatchedMLP | GenericTrainer,
    params: Params,
    clients: ClientData,
    ids: np.ndarray,
    cfg: FLConfig,
    *,
    seed: int,
    round_num: int,
    stack_clients: int,
) -> tuple[Params, np.ndarray, np.ndarray]:
    """One round: the participants ``ids`` train from ``params`` and FedAvg
    averages them, in chunks of at most ``stack_clients`` clients so that no
    more trained models than that are held at once.

    Returns ``(the new global model, samples [K], local steps [K])``; the
    model is ``params`` itself when nobody holds a sample. With K <=
    ``stack_clients`` this is `fedavg` of the whole stack; with more, each
    chunk's share ``Σ_{k in chunk} (n_k / n) θ_k`` is added up, which differs
    from one stack only by float32 rounding (the order of the sum)."""
    samples = clients.sizes[ids] if ids.size else np.zeros(0, dtype=np.int64)
    total = int(samples.sum())
    chunks = [ids[lo : lo + stack_clients] for lo in range(0, ids.size, stack_clients)] or [ids]
    average: Params | None = None
    steps = []
    for chunk in chunks:
        schedule = round_schedule(clients, chunk, cfg, seed=seed, round_num=round_num)
        steps.append(schedule.local_steps)
        if total == 0 or schedule.samples.sum() == 0:
            continue
        stacked = model.train_round(params, schedule)  # every chunk starts from the round's model
        if len(chunks) == 1:
            return fedavg(stacked, schedule.samples), samples, schedule.local_steps
        share = _weighted_sum(stacked, schedule.samples / total)
        average = share if average is None else Params(
            tuple(a + b for a, b in zip(average.weights, share.weights, strict=True)),
            tuple(a + b for a, b in zip(average.biases, share.biases, strict=True)),
        )
    return (params if average is None else average), samples, np.concatenate(steps)


def trace_meta(seed: int, device: torch.device, start_round: int, model: ModelSpec | None) -> dict:
    """What a trace records of where and how it was trained: seed, device,
    torch and its threads (they change float rounding), machine, the round it
    started after, and the model where it is not LeNet-300-100."""
    meta = {"seed": int(seed), "device": str(device), "device_name": device_name(device),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "start_round": int(start_round)}
    if model is not None and not model.reference:
        meta["model"] = model.name
    return meta


def make_trainer(model: ModelSpec | None, clients: ClientData, mask: Mask, cfg: FLConfig,
                 device: torch.device, block_clients: int | None = None) -> _BatchedMLP | GenericTrainer:
    """The batched trainer of ``model``: the hand-written LeNet-300-100 kernel
    (None or the reference model) or the generic ``vmap`` trainer; both have
    ``train_round(params, schedule) -> stacked trained models``."""
    if model is not None and not model.reference:
        from fedsim.learn.generic import GenericTrainer

        return GenericTrainer(model, clients, mask, cfg, device, block_clients)
    return _BatchedMLP(clients, mask, cfg, device, block_clients)


def train(
    init: Params,
    mask: Mask,
    clients: ClientData,
    test: tuple[Tensor, Tensor],
    cfg: FLConfig,
    *,
    seed: int,
    rounds: int,
    participation: Participation = None,
    device: Device = "cpu",
    start: TrainState | None = None,
    on_round: OnRound | None = None,
    stop: Stop | None = None,
    progress: bool = False,
    block_clients: int | None = None,
    stack_clients: int | None = None,
    model: ModelSpec | None = None,
    on_state: OnState | None = None,
) -> TrainingTrace:
    """Run FedAvg rounds ``start.round_num + 1 .. rounds`` of LeNet-300-100 or
    of any ``model``.

    Args:
        init: the global model at round 0 (ignored when ``start`` is given);
            pruned weights are zeroed (``mask.apply``) before training.
        mask: fixes pruned weights at 0 in every client and in the average.
        clients: the labelled pool and the partition.
        test: ``(inputs [M, *sample_shape] float32 or uint8 images, labels
            [M])``: ``[M, 784]`` or 28x28 images for LeNet-300-100, any shape
            ``model`` takes otherwise (`fedsim.learn.model.as_inputs`).
        cfg: local SGD settings (lr, batch size, epochs, eval batch size).
        seed: scenario seed; shuffles come from ``(seed, "client", k, "round", r)``.
        rounds: the last round number to run (not a count: a run resumed after
            round 40 with ``rounds=100`` runs 41..100).
        participation: who takes part in each round (see `participants`);
            None = every client in every round.
        device: ``auto | cpu | cuda``. On the CPU repeated runs, and resumed
            runs, are bit-identical (same machine, thread count and block size).
        start: resume from this state (the global model after round
            ``start.round_num``).
        on_round: called after every round as ``on_round(round_num, params,
            record)`` with the new global model (e.g. to checkpoint).
        stop: called after every round with its record; True ends the run
            (e.g. once the accuracy targets are reached).
        progress: show a progress line of these rounds with an ETA
            (`fedsim.progress.Progress`, on stderr).
        block_clients: clients trained together per block (for speed: the
            result changes only by the BLAS's float rounding, ~1e-8). Default:
            `default_block_clients` (17 on the CPU, all on a GPU).
        stack_clients: the most trained client models held at once (memory:
            about 1.07 MB each); a round with more participants is trained
            and averaged in chunks (`train_participants`; the result changes
            only by float rounding). Default: `default_stack_clients` (1006
            for LeNet-300-100).
        model: the classifier (`fedsim.learn.zoo.resolve`); None or
            LeNet-300-100 = the hand-written kernel (`_BatchedMLP`), any other
            model the generic trainer (`fedsim.learn.generic.GenericTrainer`:
            ``vmap`` of ``grad`` over the stacked clients, same semantics).
        on_state: with ``cfg.compression`` or ``cfg.server`` set, called after
            every round, before ``on_round``, as ``on_state(round_num, state)``
            with the `fedsim.learn.aggregation.MethodState` after it (error
            memory, server moments: what a checkpoint must keep besides the
            model). Such a round is `fedsim.learn.aggregation.
            train_participants_hooked`, on either trainer.

    Returns:
        The trace of the rounds run.

    Raises:
        ValueError: mismatched shapes, bad participation lists, a bad device,
            ``block_clients`` or ``stack_clients`` < 1.
    """
    dev = resolve_device(device)
    mask.check(init)
    state = start if start is not None else TrainState(0, init)
    mask.check(state.params)
    params = mask.apply(state.params.to(dev))
    test_x = as_inputs(test[0]).to(dev)
    test_y = as_labels(test[1]).to(dev)
    if block_clients is not None and block_clients < 1:
        raise ValueError(f"block_clients {block_clients} must be >= 1")
    if stack_clients is not None and stack_clients < 1:
        raise ValueError(f"stack_clients {stack_clients} must be >= 1")
    generic = model is not None and not model.reference
    forward = model.forward if generic else None
    stack = stack_clients if stack_clients is not None else default_stack_clients(
        params.num_params if generic else None)
    trainer = make_trainer(model, clients, mask, cfg, dev, block_clients)
    meta = trace_meta(seed, dev, state.round_num, model)
    hooked = not cfg.plain_fedavg
    if hooked:  # the client-update transform and server step (learn/aggregation.py)
        from fedsim.learn.aggregation import MethodState, train_participants_hooked

        method_state = (state.method_state or MethodState()).to(dev)
    records: list[RoundRecord] = []
    first = state.round_num + 1
    bar = Progress("FedAvg", {"rounds": max(rounds - state.round_num, 0)}, enabled=progress)
    try:
        for round_num in range(first, rounds + 1):
            ids = participants(participation, round_num, clients.num_clients)
            if hooked:
                params, samples, local_steps, method_state = train_participants_hooked(
                    trainer, params, clients, ids, cfg, mask, method_state,
                    seed=seed, round_num=round_num, stack_clients=stack)
            else:
                params, samples, local_steps = train_participants(
                    trainer, params, clients, ids, cfg, seed=seed, round_num=round_num, stack_clients=stack
                )
            accuracy, loss = evaluate(params, test_x, test_y, cfg.eval_batch_size, forward)
            record = RoundRecord(
                round_num=round_num,
                accuracy=accuracy,
                loss=loss,
                participants=int(ids.size),
                client_ids=ids,
                samples=samples,
                local_steps=local_steps,
            )
            records.append(record)
            bar.advance("rounds", 1, f"round {round_num}/{rounds}, accuracy {accuracy:.4f}")
            if hooked and on_state is not None:
                on_state(round_num, method_state)
            if on_round is not None:
                on_round(round_num, params, record)
            if stop is not None and stop(record):
                break
    finally:
        bar.close()
    return TrainingTrace.from_records(records, meta)


def round_flops(samples: Sequence[int] | np.ndarray, epochs: int) -> float:
    """Dense FLOPs of one round's local training of LeNet-300-100: per sample and
    epoch, the forward pass (2·Σ in·out), the weight gradients (the same) and the
    input gradients of every layer but the first (2·Σ_{l>1} in·out); biases and
    element-wise work are not counted. 100 clients x 400 samples x 5 epochs:
    about 225 GFLOP."""
    shapes = layer_shapes(LENET_SIZES)
    macs = sum(i * o for i, o in shapes)
    per_sample = 2 * macs + 2 * macs + 2 * sum(i * o for i, o in shapes[1:])
    return float(per_sample) * float(np.sum(samples)) * epochs


__all__ = [
    "ClientData",
    "RoundSchedule",
    "client_batches",
    "epoch_permutations",
    "fedavg",
    "make_trainer",
    "participants",
    "round_flops",
    "round_schedule",
    "steps_per_epoch",
    "train",
    "train_participants",
]
