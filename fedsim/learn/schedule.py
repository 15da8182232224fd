"""Who trains on what, and in which order: the clients' data and a round's mini-batches.

* `ClientData`: the labelled pool and each client's rows of it, built once per run;
* `participants`: the client ids taking part in a round (``Participation``);
* the shuffles (`epoch_permutations`, `client_batches`, `steps_per_epoch`): one
  definition shared by the batched trainer (`fedsim.learn.federated`) and the
  reference trainer (`fedsim.learn.reference`);
* `RoundSchedule` / `round_schedule`: every mini-batch of every participant of
  one round laid out as padded flat arrays, the input of the batched kernels
  (`fedsim.learn.batched`).

Client k's shuffles in round r come from ``seeding.rng(seed, "client", k,
"round", r)``: one ``permutation(n_k)`` per epoch, drawn in epoch order; an
epoch is ``ceil(n_k / batch_size)`` steps, the last batch possibly partial.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fedsim import seeding
from fedsim.learn.model import as_inputs, as_labels
from fedsim.learn.spec import FLConfig

Participation = Callable[[int], np.ndarray] | Sequence[np.ndarray] | None


@dataclass(frozen=True)
class ClientData:
    """The labelled pool and who holds what, built once per run.

    Attributes:
        inputs: float32 ``[N, *sample_shape]``, pixels in [0, 1]: the flat
            rows ``[N, 784]`` for LeNet-300-100 and its hand-written kernel (and
            the data stage's rows of any dataset); any sample shape for other
            models, which view each sample as their ``input_shape``
            (`fedsim.learn.generic`, `fedsim.learn.reference`).
        labels: int64 ``[N]`` in 0..C-1.
        client_indices: one int64 array per client: rows of ``inputs`` it holds.
    """

    inputs: Tensor
    labels: Tensor
    client_indices: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        n = int(self.inputs.shape[0])
        if self.inputs.dim() < 2 or self.sample_size == 0:
            raise ValueError(f"inputs of shape {tuple(self.inputs.shape)}: expected [N, *sample_shape] "
                             "(e.g. [N, 784] or [N, 3, 32, 32])")
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
        """Build from raw arrays: ``images`` ``[N, *sample_shape]``, uint8 (divided
        by 255) or float (as they are), 784-value samples (``[N, 28, 28]``) as
        flat rows ``[N, 784]`` and any other shape kept (`fedsim.learn.model.as_inputs`);
        ``labels`` integer ``[N]``; ``partition`` one index array per client
        (e.g. what a `fedsim.data` partitioner returns)."""
        return cls(
            as_inputs(images),
            as_labels(labels),
            tuple(np.asarray(p) for p in partition),
        )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample as held (``(784,)`` for MNIST's rows)."""
        return tuple(self.inputs.shape[1:])

    @property
    def sample_size(self) -> int:
        """Values per sample (the product of `sample_shape`)."""
        return math.prod(self.sample_shape)

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


__all__ = [
    "ClientData",
    "Participation",
    "RoundSchedule",
    "client_batches",
    "epoch_permutations",
    "participants",
    "round_schedule",
    "steps_per_epoch",
]
