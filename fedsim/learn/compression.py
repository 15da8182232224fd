"""Client-update transforms: what a client uploads instead of its exact update.

A client's update is ``Δ_k = θ_k - θ`` (its model after local training minus
the round's global model), flattened to one vector of the model's N
parameters (weights then bias of layer 0, then of layer 1, ...). The server
aggregates the transformed updates, and the system stage counts the bits of
exactly what is computed here (`fedsim.learn.spec.CompressionConfig.upload_bits`),
so training and traffic agree.

* ``qsgd`` (Alistarh et al., "QSGD: Communication-Efficient SGD via Gradient
  Quantization and Encoding", NeurIPS 2017): with the client's scale
  ``c = max_i |Δ_i|`` (``norm: max``) or ``||Δ||_2`` (``norm: l2``) and
  ``s = 2^(bits-1) - 1`` levels, each value is sent as a sign bit and a level
  ``l_i`` in ``0..s``: with ``u_i = s |Δ_i| / c``, ``l_i = floor(u_i) + 1``
  with probability ``u_i - floor(u_i)``, else ``floor(u_i)``. The server
  reads ``Q(Δ)_i = sign(Δ_i) l_i c / s``; ``E[Q(Δ)] = Δ`` (unbiased). One
  uniform draw per parameter from a torch generator seeded by
  ``seeding.torch_seed(seed, "qsgd", "client", k, "round", r)``: a resumed run
  draws the same. A zero (a pruned weight) stays exactly zero.
* ``topk`` with error feedback (Stich, Cordonnier and Jaggi, "Sparsified SGD
  with Memory", NeurIPS 2018; Karimireddy et al. 2019): ``a = Δ_k + e_k``,
  the k entries of largest ``|a|`` among the sent parameters (the mask's
  surviving weights and every bias) are sent as float32 values with their
  indices, and the rest is kept for later, ``e_k <- a - sent``. The memory
  ``e_k`` of every client that took part is part of the training state
  (`fedsim.learn.aggregation.MethodState`, saved in checkpoints).

Both are transform hooks (`fedsim.learn.plugins`): `builtin_transform` gives
`QSGDTransform` or `TopKTransform` for a round, called client by client
``(delta, state, client_id) -> (sent, new_state)`` by
`fedsim.learn.aggregation`, exactly as a plugin's own transform. Top-k's
selection is `topk_indices`: ``torch.topk``'s set, found among the candidates
above a threshold estimated from a sample (a fifth of the time).

Memory: top-k's error feedback holds one float32 vector per client that has
taken part (LeNet-300-100: 1.07 MB each).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from fedsim import seeding
from fedsim.learn.masks import Mask
from fedsim.learn.model import Params
from fedsim.learn.spec import CompressionConfig

__all__ = [
    "QSGDTransform",
    "TopKTransform",
    "builtin_transform",
    "flatten",
    "qsgd",
    "qsgd_noise",
    "sent_positions",
    "topk",
    "topk_indices",
    "transform",
    "unflatten",
]

#: `topk_indices`: vectors shorter than this go to ``torch.topk`` directly.
TOPK_MIN_SIZE = 4096
#: `topk_indices`: the threshold's sample holds every this-many-th value.
TOPK_SAMPLE_STRIDE = 16
#: `topk_indices`: how far below the k-th value's expected sample rank the
#: threshold sits, in binomial standard deviations (fewer than k candidates
#: at 4 sigma: about 3e-5 of the rows, which then take the full ``torch.topk``).
TOPK_MARGIN_SIGMAS = 4.0


def flatten(params: Params) -> Tensor:
    """One model as a vector ``[N]``, or K stacked models as ``[K, N]``
    (weight then bias of each layer, row-major)."""
    lead = params.weights[0].dim() - 2  # 0 for one model, 1 for a stack
    parts = [t.reshape(*t.shape[:lead], -1) for t in params.tensors()]
    return torch.cat(parts, dim=-1)


def unflatten(flat: Tensor, like: Params) -> Params:
    """Inverse of `flatten` for one model shaped like ``like`` (one model)."""
    tensors, offset = [], 0
    for t in like.tensors():
        tensors.append(flat[offset : offset + t.numel()].reshape(t.shape))
        offset += t.numel()
    if offset != flat.shape[-1]:
        raise ValueError(f"vector of {flat.shape[-1]} values for a model of {offset} parameters")
    return Params(tuple(tensors[0::2]), tuple(tensors[1::2]))


def sent_positions(mask: Mask, device: torch.device | str = "cpu") -> Tensor:
    """``[N]`` bool: the parameters an update carries (surviving weights, all
    biases), in `flatten` order."""
    parts = []
    for layer in mask.layers:
        parts.append(layer.reshape(-1).to(device=device, dtype=torch.bool))
        parts.append(torch.ones(layer.shape[-1], dtype=torch.bool, device=device))
    return torch.cat(parts)


def qsgd_noise(seed: int, client_ids: np.ndarray, round_num: int, n: int, device: torch.device) -> Tensor:
    """``[K, n]`` uniform [0, 1) draws, row k from the stream (seed, "qsgd",
    "client", id_k, "round", round_num) on ``device``."""
    out = torch.empty(len(client_ids), n, device=device)  # rows drawn in place: no stacking copy
    for row, client in zip(out, client_ids, strict=True):
        gen = torch.Generator(device=device)
        gen.manual_seed(seeding.torch_seed(seed, "qsgd", "client", int(client), "round", int(round_num)))
        torch.rand(n, generator=gen, device=device, out=row)
    return out


def qsgd(deltas: Tensor, levels: int, norm: str, noise: Tensor) -> Tensor:
    """Stochastic uniform quantisation of each row of ``deltas`` ``[K, N]`` to
    ``levels`` magnitude levels (see the module docstring); ``noise``: ``[K, N]``
    uniform draws. Returns the dequantised rows (what the server reads)."""
    # In place on two [K, N] buffers (|Δ| -> u -> u - floor(u); floor(u) ->
    # level -> result): the same operations in the same order as
    # sign(Δ) · (floor(u) + [noise < u - floor(u)]) · (c / s), u = |Δ| / c · s,
    # hence the same bits, at a third of the memory traffic.
    magnitude = deltas.abs()
    if norm == "max":
        scale = magnitude.amax(dim=1, keepdim=True)
    else:
        scale = torch.linalg.vector_norm(deltas, dim=1, keepdim=True)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    u = magnitude.div_(safe).mul_(levels)
    level = torch.floor(u)
    level += torch.lt(noise, u.sub_(level))
    return level.copysign_(deltas).mul_(scale / levels)  # level >= 0: copysign is sign(Δ) · level


def topk_indices(score: Tensor, k: int) -> Tensor:
    """Indices ``[k]`` of the k largest entries of the vector ``score``
    ``[n]``: the same set as ``torch.topk(score, k).indices`` (in another order).

    ``torch.topk`` selects over all n values (on the CPU a ``nth_element``
    over (value, index) pairs: 6 ms for 266,610 values, a quarter of a
    100-client round under top-k). Here a threshold ``t`` is read from a
    strided sample of every ``TOPK_SAMPLE_STRIDE``-th value, set low enough
    (the sample's expected rank of the k-th value plus ``TOPK_MARGIN_SIGMAS``
    binomial standard deviations) that almost surely at least k values are
    ``>= t``; ``torch.topk`` then runs over those candidates only (about
    1.1 k). The result is exactly ``torch.topk``'s set, because it is computed
    by ``torch.topk`` whenever the set is ambiguous or the shortcut fails:
    with fewer than k candidates, a NaN (which ``torch.topk`` ranks first),
    or ties at the k-th value (``torch.topk`` then picks some of the equal
    values, in an order only the full array determines), the full
    ``torch.topk`` is used. Without ties at the boundary the top-k set is
    unique, so both agree. Short vectors and k > n / 4 go to ``torch.topk``.
    """
    n = score.numel()
    if n < TOPK_MIN_SIZE or 4 * k > n or k < 1 or score.device.type != "cpu":
        return torch.topk(score, k, sorted=False).indices
    # NumPy, one thread: these passes over 1 MB are too short to gain from
    # torch's intra-op threads, whose hand-offs cost more than the work on a
    # busy machine (measured: `abs` of 266,610 values 0.2-8 ms with 2 threads)
    values = score.detach().numpy()
    sample = values[::TOPK_SAMPLE_STRIDE]
    m = sample.size
    expected = k * m / n  # rank of the k-th largest value within the sample
    rank = min(m, math.ceil(expected + TOPK_MARGIN_SIGMAS * math.sqrt(expected) + 16))
    threshold = np.partition(sample, m - rank)[m - rank]  # the rank-th largest of the sample
    below = values < threshold
    candidates = np.flatnonzero(np.logical_not(below, out=below))  # NaN (never below) included
    chosen = values[candidates]
    if candidates.size < k or np.isnan(threshold) or np.isnan(chosen).any():
        return torch.topk(score, k, sorted=False).indices
    top = np.argpartition(chosen, candidates.size - k)[candidates.size - k:]
    if np.count_nonzero(chosen >= chosen[top].min()) != k:  # ties at the k-th value
        return torch.topk(score, k, sorted=False).indices
    return torch.from_numpy(candidates[top])


def topk(accumulated: Tensor, k: int, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """The k entries of largest magnitude of each row of ``accumulated``
    ``[K, N]`` among the ``allowed`` ``[N]`` positions, and the residual.

    Returns:
        ``(sent, residual)``: ``sent`` holds those k values per row and zeros
        elsewhere; ``residual = accumulated - sent`` (the new error memory).
    """
    sent, residual, blocked = torch.zeros_like(accumulated), accumulated.clone(), ~allowed
    for row in range(accumulated.shape[0]):
        sent[row], residual[row] = _topk_row(accumulated[row].clone(), k, blocked)
    return sent, residual


def _topk_row(accumulated: Tensor, k: int, blocked: Tensor) -> tuple[Tensor, Tensor]:
    """`topk` of one row ``[N]`` (``blocked``: ``~allowed``); ``accumulated``
    becomes the residual (in place)."""
    score = accumulated.abs().masked_fill_(blocked, -1.0)
    idx = topk_indices(score, k)
    sent = torch.zeros_like(accumulated)
    sent[idx] = accumulated[idx]
    accumulated[idx] = 0.0  # a - a = +0: the same values as accumulated - sent
    return sent, accumulated


class QSGDTransform:
    """qsgd as a transform hook (`fedsim.learn.plugins`) of one round:
    ``(delta [N], state, client_id) -> (Q(delta), None)``, drawing client
    ``client_id``'s noise of round ``round_num`` (module docstring); no state."""

    def __init__(self, cfg: CompressionConfig, *, seed: int, round_num: int) -> None:
        self.cfg, self.seed, self.round_num = cfg, int(seed), int(round_num)

    def __call__(self, delta: Tensor, state: Tensor | None, client_id: int) -> tuple[Tensor, None]:
        row = delta.unsqueeze(0)
        noise = qsgd_noise(self.seed, np.array([client_id]), self.round_num, row.shape[1], row.device)
        return qsgd(row, self.cfg.levels, self.cfg.norm, noise)[0], None


class TopKTransform:
    """top-k with error feedback as a transform hook: ``(delta [N], memory
    [N] or None, client_id) -> (sent, new memory)`` over the ``allowed``
    positions (`sent_positions`); the old memory is not changed."""

    def __init__(self, cfg: CompressionConfig, allowed: Tensor) -> None:
        self.blocked = ~allowed
        self.k = cfg.kept_values(int(allowed.sum()))

    def __call__(self, delta: Tensor, state: Tensor | None, client_id: int) -> tuple[Tensor, Tensor]:
        accumulated = delta + state.to(delta.device) if state is not None else delta.clone()
        return _topk_row(accumulated, self.k, self.blocked)


def builtin_transform(cfg: CompressionConfig, allowed: Tensor, *, seed: int,
                      round_num: int) -> QSGDTransform | TopKTransform:
    """``fl.compression`` as the transform hook of round ``round_num``."""
    if cfg.kind == "qsgd":
        return QSGDTransform(cfg, seed=seed, round_num=round_num)
    return TopKTransform(cfg, allowed)


def transform(
    cfg: CompressionConfig,
    deltas: Tensor,
    client_ids: np.ndarray,
    allowed: Tensor,
    memory: Mapping[int, Tensor],
    *,
    seed: int,
    round_num: int,
) -> tuple[Tensor, dict[int, Tensor]]:
    """Apply the scenario's compression to the participants' updates.

    Args:
        cfg: ``fl.compression``.
        deltas: ``[K, N]`` exact updates ``θ_k - θ``.
        client_ids: ``[K]`` the clients' ids (random streams, memory).
        allowed: ``[N]`` the sent positions (`sent_positions`).
        memory: top-k's error memory per client id (absent: zeros).
        seed, round_num: the scenario seed and round (qsgd's streams).

    Returns:
        ``(sent [K, N], new memory of these clients)`` (empty for qsgd).

    The rows go one at a time through the round's transform hook
    (`builtin_transform`), as `fedsim.learn.aggregation` runs them.
    """
    hook = builtin_transform(cfg, allowed, seed=seed, round_num=round_num)
    out, kept = torch.empty_like(deltas), {}
    for i, client in enumerate(client_ids):
        out[i], state = hook(deltas[i], memory.get(int(client)), int(client))
        if state is not None:
            kept[int(client)] = state
    return out, kept
