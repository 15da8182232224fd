"""A round's aggregation through the method's hooks: a client-update
transform, then the server's aggregation.

Where ``fl.compression``, ``fl.server`` or a plugin's code hooks
(``fl.hooks``, `fedsim.learn.plugins`) are set, `fedsim.learn.federated`
trains a round's participants as always (the LeNet-300-100 kernel or the
generic ``vmap`` trainer: both return the K trained models stacked) and this
module runs the round's `RoundHooks` on them, one client at a time:

1. ``Δ_k = θ_k - θ``, read straight from the stacked tensors into one
   ``[N]`` vector (the stack is neither flattened nor copied whole);
2. the transform hook ``(Δ_k, s_k, k) -> (C(Δ_k), s_k')``: exactly what
   client k uploads, and its new per-client state (top-k's error memory);
   the built-ins are `fedsim.learn.compression.builtin_transform` (qsgd,
   top-k) of ``fl.compression``, a plugin brings its own;
3. the aggregate hook ``(θ, [C(Δ_k)], [p_k], server state) -> (θ', state')``
   with FedAvg's weights ``p_k = n_k / Σ n``: the built-in
   `fedsim.learn.server_opt.ServerAggregate` (``Σ_k p_k C(Δ_k)``, then the
   server step of ``fl.server``) or a plugin's; then the mask (pruned weights
   stay exactly 0).

The built-in aggregate is *linear* (it reads the updates only through
``Σ_k p_k C(Δ_k)``): that sum is formed as the clients are transformed, so a
client's update, its transform's temporaries and the running sum stay in
cache (4 N bytes each: 1.07 MB for LeNet-300-100) and no ``[K, N]`` array
exists. A plugin's aggregate gets all K transformed updates as one ``[K, N]``
array (memory: 4 K N bytes).

Everything that carries over from round to round besides the model (the
transform's per-client state, the server's state) is a `MethodState`,
replaced (never changed in place) once a round is complete, and saved with
every checkpoint so a resumed run is bit-identical to an uninterrupted one.
A plugin's hook that raises, or returns something malformed, is a
`fedsim.learn.plugins.MethodHookError` naming the method and its module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fedsim.learn.compression import builtin_transform, sent_positions, unflatten
from fedsim.learn.masks import Mask
from fedsim.learn.model import Params
from fedsim.learn.plugins import MethodHookError
from fedsim.learn.schedule import ClientData, round_schedule
from fedsim.learn.server_opt import ServerAggregate
from fedsim.learn.spec import FLConfig

__all__ = ["MethodState", "RoundHooks", "round_hooks", "train_participants_hooked"]

_MEMORY = "ef_"
_SERVER = "server_"


@dataclass(frozen=True)
class MethodState:
    """The method's state after a round: ``memory`` (client id -> the
    transform's state of that client: top-k's error memory, ``[N]`` float32,
    or a plugin's tensor) and ``server`` (the aggregate's state by name: the
    server optimiser's moments, ``[N]``). Empty at round 0 and without these
    methods."""

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
        """Inverse of `to_numpy` (dtypes kept: a plugin's state comes back
        exactly); other arrays (the model's) are ignored."""
        memory = {int(name[len(_MEMORY):]): torch.from_numpy(np.array(arrays[name]))
                  for name in arrays if name.startswith(_MEMORY)}
        server = {name[len(_SERVER):]: torch.from_numpy(np.array(arrays[name]))
                  for name in arrays if name.startswith(_SERVER)}
        return cls(memory, server)

    def to(self, device: torch.device | str) -> MethodState:
        return MethodState({k: v.to(device) for k, v in self.memory.items()},
                           {k: v.to(device) for k, v in self.server.items()})


Transform = Callable[..., Any]
Aggregate = Callable[..., Any]


@dataclass(frozen=True)
class RoundHooks:
    """The hooks one round runs (module docstring).

    Attributes:
        transform: ``(delta [N], state, client_id) -> (sent [N], new state)``,
            or None (the update is sent exactly).
        aggregate: ``(θ [N], deltas [K, N], weights [K], server state) ->
            (θ' [N], new server state)``.
        linear: ``aggregate`` reads the deltas only through ``weights @
            deltas``; it is then given that sum as one row of weight 1.
        owner: ``method 'kind' (module 'm')`` when a plugin's code runs (a
            failing hook raises a `MethodHookError` naming it); None for built-ins.
        transform_kwargs: ``seed`` and ``round_num`` for a plugin's transform
            that declares them.
    """

    transform: Transform | None
    aggregate: Aggregate
    linear: bool
    owner: str | None = None
    transform_kwargs: dict[str, int] = field(default_factory=dict)


def round_hooks(cfg: FLConfig, allowed: Tensor, *, seed: int, round_num: int) -> RoundHooks:
    """The hooks of round ``round_num`` of a method trained with ``cfg`` (its
    `fedsim.learn.methods.effective_fl`): the plugin ``cfg.hooks``'s own
    transform and aggregate where it has them, else the built-ins of
    ``cfg.compression`` and ``cfg.server``."""
    transform = (None if cfg.compression is None
                 else builtin_transform(cfg.compression, allowed, seed=seed, round_num=round_num))
    aggregate: Aggregate = ServerAggregate(cfg.server)
    if cfg.hooks is None:
        return RoundHooks(transform, aggregate, linear=True)
    from fedsim.learn import methods  # the registry imports the plugins, which import this lazily

    entry = methods.get(cfg.hooks)
    kwargs = {}
    if entry.transform is not None:
        transform = entry.transform
        kwargs = {name: value for name, value in (("seed", int(seed)), ("round_num", int(round_num)))
                  if _accepts(entry.transform, name)}
    if entry.aggregate is not None:
        aggregate = entry.aggregate
    return RoundHooks(transform, aggregate, linear=entry.aggregate is None,
                      owner=f"method {entry.name!r} (module {entry.module!r})", transform_kwargs=kwargs)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """True when ``fn`` takes a keyword ``name`` (or ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _transform(hooks: RoundHooks, delta: Tensor, state: Tensor | None, client_id: int
               ) -> tuple[Tensor, Tensor | None]:
    """``hooks.transform`` of one client; a plugin's result is checked.

    Raises:
        MethodHookError: a plugin's transform raised, or returned no
            ``(Tensor [N], Tensor or None)``."""
    assert hooks.transform is not None
    if hooks.owner is None:
        return hooks.transform(delta, state, client_id)
    what = f"{hooks.owner}: transform hook"
    try:  # the state is a copy: the checkpoint of the round before holds the original
        out = hooks.transform(delta, None if state is None else state.clone(), client_id,
                              **hooks.transform_kwargs)
    except Exception as exc:  # a plugin runs arbitrary code; KeyboardInterrupt passes
        raise MethodHookError(f"{what} raised {type(exc).__name__}: {exc} (client {client_id})") from exc
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor)
            and out[0].shape == delta.shape and (out[1] is None or isinstance(out[1], Tensor))):
        got = (f"a {type(out).__name__}" if not isinstance(out, tuple) else
               "(" + ", ".join(f"{type(v).__name__}{list(v.shape) if isinstance(v, Tensor) else ''}"
                               for v in out) + ")")
        raise MethodHookError(f"{what} returned {got}, not (sent: Tensor{list(delta.shape)}, "
                              f"state: Tensor or None) (client {client_id})")
    return out[0].to(device=delta.device, dtype=delta.dtype), out[1]


def _aggregate(hooks: RoundHooks, theta: Tensor, deltas: Tensor, weights: Tensor,
               state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """``hooks.aggregate``; a plugin's result is checked.

    Raises:
        MethodHookError: a plugin's aggregate raised, or returned no
            ``(Tensor [N], dict[str, Tensor])``."""
    if hooks.owner is None or hooks.linear:
        return hooks.aggregate(theta, deltas, weights, state)
    what = f"{hooks.owner}: aggregate hook"
    try:
        out = hooks.aggregate(theta.clone(), deltas, weights, {k: v.clone() for k, v in state.items()})
    except Exception as exc:  # a plugin runs arbitrary code; KeyboardInterrupt passes
        raise MethodHookError(f"{what} raised {type(exc).__name__}: {exc}") from exc
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor)
            and out[0].shape == theta.shape and isinstance(out[1], dict)
            and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in out[1].items())):
        raise MethodHookError(f"{what} returned a {type(out).__name__} that is not (params: "
                              f"Tensor{list(theta.shape)}, state: dict[str, Tensor])")
    return out[0].to(device=theta.device, dtype=theta.dtype), dict(out[1])


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """torch on one intra-op thread while the clients are transformed (CPU).

    A client's passes are short (about 0.1 ms over 1 MB each): split over
    threads they gain little, and each hand-off waits for a thread the OS
    may have descheduled. Measured under load (2 vCPUs, load average 8):
    qsgd of one LeNet-300-100 update 61 ms of CPU with 2 threads, 5 ms with
    one. The count is restored afterwards; training keeps its threads."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _client_delta(stacked: list[Tensor], row: int, theta: list[Tensor], like: Tensor) -> Tensor:
    """``θ_row - θ`` as one new vector ``[N]`` (flatten order), read from the
    stacked tensors (``[K, n_t]`` views) without copying the stack."""
    delta = torch.empty_like(like)
    offset = 0
    for part, base in zip(stacked, theta, strict=True):
        torch.sub(part[row], base, out=delta[offset : offset + base.numel()])
        offset += base.numel()
    return delta


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
    """One round through the method's hooks (module docstring).

    ``model``: a trainer with ``train_round(params, schedule) -> stacked
    Params`` (`fedsim.learn.batched._BatchedMLP`, `fedsim.learn.generic.
    GenericTrainer`), run on chunks of at most ``stack_clients`` clients.
    Returns ``(new global model, samples [K], local steps [K], new state)``;
    the model and state are unchanged when nobody holds a sample.

    Raises:
        MethodHookError: a plugin's hook failed (module docstring).
    """
    samples = clients.sizes[ids] if ids.size else np.zeros(0, dtype=np.int64)
    total = int(samples.sum())
    theta_parts = [t.reshape(-1) for t in params.tensors()]
    theta = torch.cat(theta_parts)
    hooks = round_hooks(cfg, sent_positions(mask, theta.device), seed=seed, round_num=round_num)
    memory = dict(state.memory)
    update = torch.zeros_like(theta) if hooks.linear else None
    rows: list[Tensor] = []
    row_weights: list[Tensor] = []
    steps = []
    for lo in range(0, max(ids.size, 1), stack_clients):
        chunk = ids[lo : lo + stack_clients]
        schedule = round_schedule(clients, chunk, cfg, seed=seed, round_num=round_num)
        steps.append(schedule.local_steps)
        if total == 0 or schedule.samples.sum() == 0:
            continue
        stacked = model.train_round(params, schedule)  # type: ignore[attr-defined]
        parts = [t.reshape(t.shape[0], -1) for t in stacked.tensors()]
        weights = torch.from_numpy(np.ascontiguousarray(schedule.samples / total)).to(
            device=theta.device, dtype=torch.float32)
        with _one_thread(theta.device):
            for row, client in enumerate(int(c) for c in schedule.client_ids):
                delta = _client_delta(parts, row, theta_parts, theta)
                if hooks.transform is not None:
                    delta, kept = _transform(hooks, delta, memory.get(client), client)
                    if kept is None:
                        memory.pop(client, None)
                    else:
                        memory[client] = kept
                if update is not None:
                    update.add_(delta, alpha=float(weights[row]))
                else:
                    rows.append(delta)
        row_weights.append(weights)
    local_steps = np.concatenate(steps) if steps else np.zeros(0, dtype=np.int64)
    if not row_weights:
        return params, samples, local_steps, state
    if update is not None:
        deltas, weights = update.unsqueeze(0), torch.ones(1, device=theta.device)
    else:
        deltas, weights = torch.stack(rows), torch.cat(row_weights)
    new_theta, server = _aggregate(hooks, theta, deltas, weights, dict(state.server))
    new_params = mask.apply(unflatten(new_theta, params))
    return new_params, samples, local_steps, MethodState(memory, server)
