"""A round's aggregation with a client-update transform and a server optimiser.

Where ``fl.compression`` or ``fl.server`` is set, `fedsim.learn.federated`
trains a round's participants as always (the LeNet-300-100 kernel or the
generic ``vmap`` trainer: both return the K trained models stacked) and this
module forms the updates and aggregates them:

1. ``Δ_k = θ_k - θ`` for every participant (chunk by chunk, as
   `fedsim.learn.federated.train_participants`);
2. the transform (`fedsim.learn.compression.transform`): ``Δ_k -> C(Δ_k)``,
   exactly what the client uploads;
3. ``Δ = Σ_k p_k C(Δ_k)``, ``p_k = n_k / Σ n`` (FedAvg's weights);
4. the server step (`fedsim.learn.server_opt.server_step`), then the mask
   (pruned weights stay exactly 0).

Everything that carries over from round to round besides the model (top-k's
error memory per client, the server's moments) is a `MethodState`, replaced
(never changed in place) once a round is complete, and saved with every
checkpoint so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from fedsim.learn.compression import flatten, sent_positions, transform, unflatten
from fedsim.learn.masks import Mask
from fedsim.learn.model import Params
from fedsim.learn.schedule import ClientData, round_schedule
from fedsim.learn.server_opt import server_step
from fedsim.learn.spec import FLConfig

__all__ = ["MethodState", "train_participants_hooked"]

_MEMORY = "ef_"
_SERVER = "server_"


@dataclass(frozen=True)
class MethodState:
    """The method's state after a round: ``memory`` (client id -> top-k's
    error memory, ``[N]`` float32) and ``server`` (the server optimiser's
    moments by name, ``[N]``). Empty at round 0 and without these methods."""

    memory: dict[int, Tensor] = field(default_factory=dict)
    server: dict[str, Tensor] = field(default_factory=dict)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Arrays named ``ef_<client>`` and ``server_<name>`` (for ``np.savez``
        next to the checkpoint's model)."""
        out = {f"{_MEMORY}{k}": v.detach().cpu().numpy() for k, v in self.memory.items()}
        out.update({f"{_SERVER}{k}": v.detach().cpu().numpy() for k, v in self.server.items()})
        return out

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile) -> MethodState:
        """Inverse of `to_numpy`; other arrays (the model's) are ignored."""
        memory = {int(name[len(_MEMORY):]): torch.from_numpy(np.array(arrays[name], dtype=np.float32))
                  for name in arrays if name.startswith(_MEMORY)}
        server = {name[len(_SERVER):]: torch.from_numpy(np.array(arrays[name], dtype=np.float32))
                  for name in arrays if name.startswith(_SERVER)}
        return cls(memory, server)

    def to(self, device: torch.device | str) -> MethodState:
        return MethodState({k: v.to(device) for k, v in self.memory.items()},
                           {k: v.to(device) for k, v in self.server.items()})


def train_participants_hooked(
    model: object,
    params: Params,
    clients: ClientData,
    ids: np.ndarray,
    cfg: FLConfig,
    mask: Mask,
    state: MethodState,
    *,
    seed: int,
    round_num: int,
    stack_clients: int,
) -> tuple[Params, np.ndarray, np.ndarray, MethodState]:
    """One round with ``cfg.compression`` and ``cfg.server`` (module docstring).

    ``model``: a trainer with ``train_round(params, schedule) -> stacked
    Params`` (`fedsim.learn.batched._BatchedMLP`, `fedsim.learn.generic.
    GenericTrainer`). Returns ``(new global model, samples [K], local steps
    [K], new state)``; the model and state are unchanged when nobody holds a
    sample."""
    samples = clients.sizes[ids] if ids.size else np.zeros(0, dtype=np.int64)
    total = int(samples.sum())
    theta = flatten(params)
    allowed = sent_positions(mask, theta.device)
    update: Tensor | None = None
    memory = dict(state.memory)
    steps = []
    for lo in range(0, max(ids.size, 1), stack_clients):
        chunk = ids[lo : lo + stack_clients]
        schedule = round_schedule(clients, chunk, cfg, seed=seed, round_num=round_num)
        steps.append(schedule.local_steps)
        if total == 0 or schedule.samples.sum() == 0:
            continue
        deltas = flatten(model.train_round(params, schedule)) - theta  # type: ignore[attr-defined]
        if cfg.compression is not None:
            deltas, kept = transform(cfg.compression, deltas, schedule.client_ids, allowed, memory,
                                     seed=seed, round_num=round_num)
            memory.update(kept)
        p = torch.from_numpy(np.ascontiguousarray(schedule.samples / total)).to(
            device=deltas.device, dtype=torch.float32)
        share = p @ deltas
        update = share if update is None else update + share
    local_steps = np.concatenate(steps) if steps else np.zeros(0, dtype=np.int64)
    if update is None:
        return params, samples, local_steps, state
    if cfg.server is None:
        new_theta, server = theta + update, {}
    else:
        new_theta, server = server_step(cfg.server, theta, update, state.server)
    new_params = mask.apply(unflatten(new_theta, params))
    return new_params, samples, local_steps, MethodState(memory, server)
