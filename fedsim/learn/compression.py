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

Memory: top-k's error feedback holds one float32 vector per client that has
taken part (LeNet-300-100: 1.07 MB each).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from fedsim import seeding
from fedsim.learn.masks import Mask
from fedsim.learn.model import Params
from fedsim.learn.spec import CompressionConfig

__all__ = ["flatten", "qsgd", "qsgd_noise", "sent_positions", "topk", "transform", "unflatten"]


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
    rows = []
    for client in client_ids:
        gen = torch.Generator(device=device)
        gen.manual_seed(seeding.torch_seed(seed, "qsgd", "client", int(client), "round", int(round_num)))
        rows.append(torch.rand(n, generator=gen, device=device))
    return torch.stack(rows) if rows else torch.zeros(0, n, device=device)


def qsgd(deltas: Tensor, levels: int, norm: str, noise: Tensor) -> Tensor:
    """Stochastic uniform quantisation of each row of ``deltas`` ``[K, N]`` to
    ``levels`` magnitude levels (see the module docstring); ``noise``: ``[K, N]``
    uniform draws. Returns the dequantised rows (what the server reads)."""
    if norm == "max":
        scale = deltas.abs().amax(dim=1, keepdim=True)
    else:
        scale = torch.linalg.vector_norm(deltas, dim=1, keepdim=True)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    u = deltas.abs() / safe * levels
    low = torch.floor(u)
    level = low + (noise < u - low).to(deltas.dtype)
    return torch.sign(deltas) * level * (scale / levels)


def topk(accumulated: Tensor, k: int, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """The k entries of largest magnitude of each row of ``accumulated``
    ``[K, N]`` among the ``allowed`` ``[N]`` positions, and the residual.

    Returns:
        ``(sent, residual)``: ``sent`` holds those k values per row and zeros
        elsewhere; ``residual = accumulated - sent`` (the new error memory).
    """
    score = accumulated.abs().masked_fill(~allowed, -1.0)
    idx = torch.topk(score, k, dim=1).indices
    sent = torch.zeros_like(accumulated).scatter_(1, idx, accumulated.gather(1, idx))
    return sent, accumulated - sent


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
    """
    if cfg.kind == "qsgd":
        noise = qsgd_noise(seed, client_ids, round_num, deltas.shape[1], deltas.device)
        return qsgd(deltas, cfg.levels, cfg.norm, noise), {}
    k = cfg.kept_values(int(allowed.sum()))
    zeros = torch.zeros(deltas.shape[1], dtype=deltas.dtype, device=deltas.device)
    before = torch.stack([memory.get(int(c), zeros).to(deltas.device) for c in client_ids])
    sent, residual = topk(deltas + before, k, allowed)
    return sent, {int(c): residual[i] for i, c in enumerate(client_ids)}
