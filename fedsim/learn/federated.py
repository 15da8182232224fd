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

How (the fast path; the seam between "what a client computes" and "how clients
map onto hardware", as in fedjax's ``for_each_client``):

* the participants' models are stacked (``[K, fan_in, fan_out]``) and the
  3-layer MLP's forward and backward pass are written by hand with
  ``torch.bmm``/``baddbmm`` over the client dimension, without autograd: no
  graph, no gradient for the first layer's input, weight updates fused into
  the weight-gradient GEMM (``W.baddbmm_(Xᵀ, dH, alpha=-lr)``);
* the first layer's bias is folded into its weight matrix (inputs carry a
  constant 1 column), which fuses the bias add and the bias gradient into the
  GEMMs;
* each step gathers its [k, b, 785] input batch with one ``index_select`` from
  the whole labelled pool, using index arrays built once per round; the batch
  width b is the step's largest real batch (so aligned partial batches cost
  what they hold); padding rows carry weight 0 and add exact zeros;
* on the CPU the participants run in blocks of about 17 clients
  (`default_block_clients`), each block batched over its client dimension
  from its first step to its last: a block's layer-1 weights (16 MiB) then stay
  in the last-level cache from a step's forward pass to its update, which
  makes the layer-1 GEMMs 20-30 % faster than streaming all K clients' 94 MB
  from memory three times per step. A GPU runs all participants as one block;
* memory is bounded by `STACK_BYTES` (1 GiB: 1006 trained models), not by the
  participants: a round with more participants than that is trained and
  averaged chunk by chunk (`train_participants`), each chunk's weighted sum
  added to the round's average; with fewer (every shipped scenario) the round
  is one chunk and the average is computed exactly as before;
* all large buffers are preallocated and reused across steps and rounds.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fedsim import seeding
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
from fedsim.learn.spec import FLConfig
from fedsim.learn.trace import RoundRecord, TrainingTrace, TrainState
from fedsim.progress import Progress

Participation = Callable[[int], np.ndarray] | Sequence[np.ndarray] | None
OnRound = Callable[[int, Params, RoundRecord], None]
Stop = Callable[[RoundRecord], bool]


@dataclass(frozen=True)
class ClientData:
    """The labelled pool and who holds what, built once per run.

    Attributes:
        inputs: float32 ``[N, 784]`` in [0, 1].
        labels: int64 ``[N]`` in 0..9.
        client_indices: one int64 array per client: rows of ``inputs`` it holds.
    """

    inputs: Tensor
    labels: Tensor
    client_indices: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        n = int(self.inputs.shape[0])
        if self.inputs.dim() != 2 or self.inputs.shape[1] != LENET_SIZES[0]:
            raise ValueError(f"inputs of shape {tuple(self.inputs.shape)}: expected [N, 784]")
        if self.inputs.dtype != torch.float32:
            raise ValueError(f"inputs of dtype {self.inputs.dtype}: expected float32")
        if self.labels.shape != (n,) or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels of shape {tuple(self.labels.shape)} and dtype {self.labels.dtype}: "
                f"expected int64 [{n}]"
            )
        indices = []
        for k, idx in enumerate(self.client_indices):
            arr = np.asarray(idx)
            if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise ValueError(f"client {k}: indices must be a 1-D integer array, got {arr.dtype} {arr.shape}")
            arr = arr.astype(np.int64)
            outside = arr[(arr < 0) | (arr >= n)]
            if outside.size:
                raise ValueError(f"client {k}: index {int(outside[0])} outside 0..{n - 1}")
            arr.setflags(write=False)
            indices.append(arr)
        if not indices:
            raise ValueError("no clients")
        object.__setattr__(self, "client_indices", tuple(indices))

    @classmethod
    def from_arrays(
        cls,
        images: Tensor | np.ndarray,
        labels: Tensor | np.ndarray,
        partition: Sequence[np.ndarray],
    ) -> ClientData:
        """Build from raw arrays: ``images`` uint8 ``[N, 28, 28]`` (divided by 255) or
        float ``[N, 784]``; ``labels`` integer ``[N]``; ``partition`` one index array
        per client (e.g. what a `fedsim.data` partitioner returns)."""
        return cls(
            as_inputs(images),
            as_labels(labels),
            tuple(np.asarray(p) for p in partition),
        )

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    @property
    def sizes(self) -> np.ndarray:
        """Samples per client."""
        return np.array([idx.size for idx in self.client_indices], dtype=np.int64)


# -- the shuffles: one definition shared with the reference trainer -----------------------


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """``ceil(num_samples / batch_size)``: mini-batches in one epoch (last one partial)."""
    return -(-num_samples // batch_size)


def epoch_permutations(seed: int, client_id: int, round_num: int, num_samples: int, epochs: int) -> np.ndarray:
    """Client ``client_id``'s sample order in round ``round_num``: ``[epochs, num_samples]``
    local positions, one ``permutation`` per epoch drawn in order from
    ``seeding.rng(seed, "client", client_id, "round", round_num)``."""
    gen = seeding.rng(seed, "client", int(client_id), "round", int(round_num))
    out = np.empty((epochs, num_samples), dtype=np.int64)
    for e in range(epochs):
        out[e] = gen.permutation(num_samples)
    return out


def client_batches(perms: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """The mini-batches (local positions) a client runs, in order, given its
    `epoch_permutations`: each epoch cut into chunks of ``batch_size``."""
    return [perm[i : i + batch_size] for perm in perms for i in range(0, perm.size, batch_size)]


def participants(participation: Participation, round_num: int, num_clients: int) -> np.ndarray:
    """The sorted client ids taking part in round ``round_num``.

    Args:
        participation: None (all clients), a callable ``round_num -> ids``, or a
            sequence whose item ``round_num - 1`` holds the ids.

    Raises:
        ValueError: ids that are not integers, out of range or repeated, or a
            sequence too short for ``round_num``.
    """
    if participation is None:
        return np.arange(num_clients, dtype=np.int64)
    if callable(participation):
        ids = participation(round_num)
    else:
        if round_num - 1 >= len(participation):
            raise ValueError(
                f"participation lists {len(participation)} rounds, round {round_num} was requested"
            )
        ids = participation[round_num - 1]
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"round {round_num}: participants must be a 1-D integer array, got {arr!r}")
    if arr.min() < 0 or arr.max() >= num_clients:
        raise ValueError(f"round {round_num}: client ids must be in 0..{num_clients - 1}, got {arr.tolist()}")
    unique = np.unique(arr)
    if unique.size != arr.size:
        raise ValueError(f"round {round_num}: repeated client ids in {arr.tolist()}")
    return unique.astype(np.int64)


@dataclass(frozen=True)
class RoundSchedule:
    """Every mini-batch of every participant of one round, as padded arrays.

    Steps are laid out per client back to back across epochs: client k runs
    steps 0..local_steps[k]-1 and sits idle (zero-weight padding) afterwards.

    Attributes:
        client_ids, samples, local_steps: ``[K]`` per participant.
        widths: ``[T]`` batch width of step t = the largest real batch at t.
        offsets: ``[T + 1]``; step t's entries are ``[offsets[t], offsets[t+1])`` of
            the flat arrays, laid out ``[K, widths[t]]``.
        indices: flat int64 rows of the labelled pool (0 for padding).
        labels: flat int64 labels of those rows.
        weights: flat float32 ``1 / batch size`` for real rows, 0 for padding.
    """

    client_ids: np.ndarray
    samples: np.ndarray
    local_steps: np.ndarray
    widths: np.ndarray
    offsets: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    weights: np.ndarray

    @property
    def num_steps(self) -> int:
        return int(self.widths.size)


def round_schedule(
    clients: ClientData, client_ids: np.ndarray, cfg: FLConfig, *, seed: int, round_num: int
) -> RoundSchedule:
    """Lay out round ``round_num``'s mini-batches for the participants ``client_ids``."""
    ids = np.asarray(client_ids, dtype=np.int64)
    batch, epochs = cfg.batch_size, cfg.local_epochs
    samples = np.array([clients.client_indices[k].size for k in ids], dtype=np.int64)
    spe = np.array([steps_per_epoch(int(n), batch) for n in samples], dtype=np.int64)
    local_steps = spe * epochs
    num_steps = int(local_steps.max()) if ids.size else 0
    k_count = ids.size
    rows = np.zeros((num_steps, k_count, batch), dtype=np.int64)
    counts = np.zeros((num_steps, k_count), dtype=np.int64)
    for j, k in enumerate(ids):
        n = int(samples[j])
        if n == 0:
            continue
        perms = epoch_permutations(seed, int(k), round_num, n, epochs)
        pos = np.arange(n)
        step = (np.arange(epochs)[:, None] * spe[j] + pos[None, :] // batch).ravel()
        slot = np.broadcast_to(pos % batch, (epochs, n)).ravel()
        rows[step, j, slot] = clients.client_indices[k][perms.ravel()]
        counts[:, j] = np.bincount(step, minlength=num_steps)
    widths = counts.max(axis=1) if k_count else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(widths * k_count)]).astype(np.int64)
    flat_rows, flat_weights = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for t, width in enumerate(widths):
        count = counts[t][:, None]
        flat_rows.append(rows[t, :, :width].ravel())
        real = np.arange(width)[None, :] < count
        flat_weights.append(np.where(real, 1.0 / np.maximum(count, 1), 0.0).astype(np.float32).ravel())
    indices = np.concatenate(flat_rows)
    return RoundSchedule(
        client_ids=ids,
        samples=samples,
        local_steps=local_steps,
        widths=widths.astype(np.int64),
        offsets=offsets,
        indices=indices,
        labels=clients.labels.numpy()[indices].astype(np.int64),
        weights=np.concatenate(flat_weights),
    )


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


# -- the batched local training ---------------------------------------------------------


#: Bytes of stacked client weights that one block may hold on the CPU: a block's
#: layer-1 weights (942 KB per client) then stay in the last-level cache between
#: the forward pass and the update of a step.
CPU_BLOCK_BYTES = 16 * 2**20


#: Bytes of trained client models (weights and biases, float32) the trainer holds
#: at once: a round's participants are trained and averaged in chunks of
#: `default_stack_clients` so memory does not grow with them (50,000 stacked
#: models would take 53 GB).
STACK_BYTES = 1 << 30


def default_stack_clients() -> int:
    """Clients whose trained models are held at once: `STACK_BYTES` over one
    LeNet-300-100's 1,066,440 bytes (1006 clients)."""
    per_client = 4 * sum((fan_in + 1) * fan_out for fan_in, fan_out in layer_shapes(LENET_SIZES))
    return max(1, STACK_BYTES // per_client)


def default_block_clients(device: torch.device) -> int:
    """Clients per block: all of them on a GPU; on the CPU as many as fit in
    `CPU_BLOCK_BYTES` of layer-1 weights (16 MiB: 17 clients)."""
    if device.type != "cpu":
        return 1 << 30
    per_client = (LENET_SIZES[0] + 1) * LENET_SIZES[1] * 4
    return max(1, CPU_BLOCK_BYTES // per_client)


class _BatchedMLP:
    """Stacked client models of a 3-layer MLP and the buffers to train them.

    Owns: the labelled pool on the device with a constant-1 column appended
    (``[N, 785]``; folds layer 1's bias into its weight matrix), the stacked
    weights of the largest K seen, and activation/gradient buffers for one
    block of ``block_clients`` clients.
    """

    def __init__(
        self,
        clients: ClientData,
        mask: Mask,
        cfg: FLConfig,
        device: torch.device,
        block_clients: int | None = None,
    ) -> None:
        if mask.shapes != layer_shapes(LENET_SIZES):
            raise ValueError(f"the batched trainer runs LeNet-300-100; mask shapes {mask.shapes}")
        self.device = device
        self.cfg = cfg
        n = int(clients.inputs.shape[0])
        d_in = LENET_SIZES[0]
        self.inputs = torch.ones(n, d_in + 1, dtype=torch.float32, device=device)
        self.inputs[:, :d_in] = clients.inputs.to(device)
        dense = mask.is_dense()
        # None = dense layer: skip the mask multiply entirely.
        self.masks: list[Tensor | None] = [
            None if d else m.to(device=device, dtype=torch.float32) for m, d in zip(mask.layers, dense, strict=True)
        ]
        self.capacity = 0
        self.block_clients = block_clients if block_clients is not None else default_block_clients(device)

    def _allocate(self, k_count: int) -> None:
        """Stacked weights for ``k_count`` clients, activations for one block."""
        if k_count <= self.capacity:
            return
        dev, b = self.device, self.cfg.batch_size
        d0, d1, d2, d3 = LENET_SIZES
        block = min(k_count, self.block_clients)
        empty = lambda *shape: torch.empty(*shape, dtype=torch.float32, device=dev)  # noqa: E731
        self.w1 = empty(k_count, d0 + 1, d1)  # row d0 is layer 1's bias
        self.w2, self.b2 = empty(k_count, d1, d2), empty(k_count, d2)
        self.w3, self.b3 = empty(k_count, d2, d3), empty(k_count, d3)
        self.x = empty(block * b * (d0 + 1))
        self.h1, self.g1 = empty(block * b * d1), empty(block * b * d1)
        self.h2, self.g2 = empty(block * b * d2), empty(block * b * d2)
        self.z = empty(block * b * d3)
        self.capacity = k_count

    def train_round(self, params: Params, schedule: RoundSchedule) -> Params:
        """Run every participant's local SGD of one round; returns the K trained
        models stacked (views into this object's buffers, valid until the next call)."""
        k_count = int(schedule.client_ids.size)
        self._allocate(k_count)
        dev = self.device
        d0, d1, d2, d3 = LENET_SIZES
        w1, w2, b2, w3, b3 = self.w1[:k_count], self.w2[:k_count], self.b2[:k_count], self.w3[:k_count], self.b3[:k_count]
        w1[:, :d0].copy_(params.weights[0].expand(k_count, d0, d1))
        w1[:, d0].copy_(params.biases[0].expand(k_count, d1))
        w2.copy_(params.weights[1].expand(k_count, d1, d2))
        b2.copy_(params.biases[1].expand(k_count, d2))
        w3.copy_(params.weights[2].expand(k_count, d2, d3))
        b3.copy_(params.biases[2].expand(k_count, d3))
        arrays = (
            torch.from_numpy(schedule.indices).to(dev),
            torch.from_numpy(schedule.labels).to(dev),
            torch.from_numpy(schedule.weights).to(dev),
        )
        for first in range(0, k_count, self.block_clients):
            last = min(first + self.block_clients, k_count)
            self._train_block(first, last, schedule, *arrays)
        return Params((w1[:, :d0], w2, w3), (w1[:, d0], b2, b3))

    def _train_block(
        self, first: int, last: int, schedule: RoundSchedule, rows: Tensor, labels: Tensor, weights: Tensor
    ) -> None:
        """All local steps of clients ``first..last-1``, batched over them."""
        lr = float(self.cfg.lr)
        d0, d1, d2, d3 = LENET_SIZES
        k = last - first
        w1, w2, b2, w3, b3 = self.w1[first:last], self.w2[first:last], self.b2[first:last], self.w3[first:last], self.b3[first:last]
        m1, m2, m3 = self.masks
        w1_weights = w1[:, :d0]
        b2_row, b3_col = b2.unsqueeze(1), b3.unsqueeze(2)
        num_steps = int(schedule.local_steps[first:last].max())
        offsets = schedule.offsets.tolist()
        for t, width in enumerate(schedule.widths[:num_steps].tolist()):
            # this block's rows of step t: the flat layout is [K, width]
            lo, hi, kb = offsets[t] + first * width, offsets[t] + last * width, k * width
            x = torch.index_select(self.inputs, 0, rows[lo:hi], out=self.x[: kb * (d0 + 1)].view(kb, d0 + 1))
            x = x.view(k, width, d0 + 1)
            w = weights[lo:hi].view(k, 1, width)
            # forward: [k, b, 785] @ [k, 785, 300] -> relu -> [k, b, 100] -> relu -> logitsᵀ [k, 10, b]
            h1 = torch.bmm(x, w1, out=self.h1[: kb * d1].view(k, width, d1)).relu_()
            h2 = torch.baddbmm(b2_row, h1, w2, out=self.h2[: kb * d2].view(k, width, d2)).relu_()
            # The logits are computed transposed: softmax over a strided class axis of
            # length 10 is several times faster than over a contiguous one.
            zt = torch.baddbmm(b3_col, w3.transpose(1, 2), h2.transpose(1, 2), out=self.z[: kb * d3].view(k, d3, width))
            # d(mean CE)/dz = (softmax - onehot) / batch size; padding rows have weight 0.
            gz = torch.softmax(zt, dim=1).mul_(w)
            gz.scatter_add_(1, labels[lo:hi].view(k, 1, width), w.neg())
            # backward; each layer's input gradient uses the weights before their update
            g2 = torch.bmm(gz.transpose(1, 2), w3.transpose(1, 2), out=self.g2[: kb * d2].view(k, width, d2))
            w3.baddbmm_(h2.transpose(1, 2), gz.transpose(1, 2), alpha=-lr)
            b3.sub_(gz.sum(dim=2), alpha=lr)
            torch.ops.aten.threshold_backward.grad_input(g2, h2, 0, grad_input=g2)
            g1 = torch.bmm(g2, w2.transpose(1, 2), out=self.g1[: kb * d1].view(k, width, d1))
            w2.baddbmm_(h1.transpose(1, 2), g2, alpha=-lr)
            b2.sub_(g2.sum(dim=1), alpha=lr)
            torch.ops.aten.threshold_backward.grad_input(g1, h1, 0, grad_input=g1)
            w1.baddbmm_(x.transpose(1, 2), g1, alpha=-lr)  # weights and bias row together
            if m1 is not None:
                w1_weights.mul_(m1)
            if m2 is not None:
                w2.mul_(m2)
            if m3 is not None:
                w3.mul_(m3)


# -- the training loop ------------------------------------------------------------------


def train_participants(
    model: _BatchedMLP,
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
) -> TrainingTrace:
    """Run FedAvg rounds ``start.round_num + 1 .. rounds`` of LeNet-300-100.

    Args:
        init: the global model at round 0 (ignored when ``start`` is given);
            pruned weights are zeroed (``mask.apply``) before training.
        mask: fixes pruned weights at 0 in every client and in the average.
        clients: the labelled pool and the partition.
        test: ``(inputs [M, 784] float32 or uint8 images, labels [M])``.
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
            only by float rounding). Default: `default_stack_clients` (1006).

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
    stack = stack_clients if stack_clients is not None else default_stack_clients()
    model = _BatchedMLP(clients, mask, cfg, dev, block_clients)
    meta = {
        "seed": int(seed),
        "device": str(dev),
        "device_name": device_name(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "start_round": state.round_num,
    }
    records: list[RoundRecord] = []
    first = state.round_num + 1
    bar = Progress("FedAvg", {"rounds": max(rounds - state.round_num, 0)}, enabled=progress)
    try:
        for round_num in range(first, rounds + 1):
            ids = participants(participation, round_num, clients.num_clients)
            params, samples, local_steps = train_participants(
                model, params, clients, ids, cfg, seed=seed, round_num=round_num, stack_clients=stack
            )
            accuracy, loss = evaluate(params, test_x, test_y, cfg.eval_batch_size)
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
    "participants",
    "round_flops",
    "round_schedule",
    "steps_per_epoch",
    "train",
    "train_participants",
]
