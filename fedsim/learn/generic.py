"""The generic batched trainer: any ``nn.Module``, every participant of a round at once.

`GenericTrainer` has the interface of the hand-written LeNet-300-100 kernel
(`fedsim.learn.batched._BatchedMLP`): ``train_round(params, schedule)`` runs
one round's `fedsim.learn.schedule.RoundSchedule` for its K participants and
returns their K trained models stacked as `Params`. How:

* the participants' parameters are stacked per module parameter
  (``[K, *shape]``), all starting from the global model;
* one client's loss on its step-t batch is ``Σ_i w_i · CE(f(x_i; θ_k), y_i)``
  with the schedule's row weights (``1 / batch size`` for real rows, 0 for
  padding), i.e. the mean cross-entropy over the real rows, as the kernel's
  ``(softmax - onehot) · w``; its gradient is ``torch.func.grad`` of that, run
  for all clients at once by ``torch.func.vmap`` over the stacked parameters
  and the ``[K, width, *input_shape]`` batch (``functional_call`` puts a
  client's parameters into the template module). On the CPU a model with
  ``nn.Conv2d`` layers takes the same gradients from the client-stacked engine
  instead (`fedsim.learn.conv_batched`: one autograd pass, convolutions as one
  grouped convolution over the clients in channels-last memory), because
  ``vmap``'s grouped convolution in NCHW is slower than a per-client loop
  there (`choose_engine`);
* SGD: ``θ_k ← θ_k - lr · g_k``, then pruned weights are set to exactly 0
  (``θ_k ← θ_k ⊙ m``), as the kernel does after every step; a client with no
  step left at t has only zero-weight padding rows, hence a zero gradient, and
  keeps its weights;
* FedProx (``fl.proximal_mu`` = μ > 0; Li et al., MLSys 2020): the gradient
  gains μ (θ_k - θ), applied as ``θ_k.lerp_(θ, lr μ)`` before the SGD step
  (the gradient itself is taken at the old θ_k); μ = 0 runs none of it;
* clients run in blocks of ``block_clients``: on the CPU `CPU_CONV_BLOCK`
  (8) clients for a model with convolutions on the stacked engine, one on
  ``vmap`` (see `default_generic_block`), else as many as hold
  `CPU_BLOCK_BYTES` (16 MiB) of parameters (15 clients of LeNet-300-100), which keeps a block's weights in the last-level cache between the
  forward pass and the update (measured 15 % faster than one block of 100
  LeNet-300-100 clients); on a GPU all of them. Memory for activations grows
  with the block, not with K.

Refs: torch.func (``functional_call``, ``vmap``, ``grad``), after JAX's
``vmap(grad(loss))`` idiom for per-example / per-client gradients; fedjax's
``for_each_client`` seam between a client's computation and the hardware.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsim.learn.batched import CPU_BLOCK_BYTES
from fedsim.learn.conv_batched import StackedGrads, stacked_grads
from fedsim.learn.masks import Mask
from fedsim.learn.model import Params
from fedsim.learn.schedule import ClientData, RoundSchedule
from fedsim.learn.spec import FLConfig
from fedsim.learn.zoo import ModelSpec

#: Clients per block of the client-stacked engine on the CPU for a model with
#: convolutions: its activations, not its parameters, fill the cache (LeNet-5,
#: 16 clients x 400 x 5 epochs, one thread, best of 3 interleaved, under load:
#: blocks of 2 / 4 / 8 / 16 took 3.97 / 3.52 / 2.89 / 3.42 s of CPU).
CPU_CONV_BLOCK = 8


def default_generic_block(device: torch.device, spec: ModelSpec, engine: str = "vmap") -> int:
    """Clients per block: all on a GPU; on the CPU, for a model with
    convolutions, `CPU_CONV_BLOCK` with the client-stacked engine and one with
    ``vmap`` (which turns K clients' convolutions into one grouped convolution
    in NCHW, which oneDNN runs 1.5-2.3x slower than K single ones); else as
    many as fit in `CPU_BLOCK_BYTES` of float32 parameters."""
    if device.type != "cpu":
        return 1 << 30
    if any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) for m in spec.module.modules()):
        return CPU_CONV_BLOCK if engine == "stacked" else 1
    num_params = sum(p.numel() for p in spec.module.parameters())
    return max(1, CPU_BLOCK_BYTES // (4 * num_params))


def choose_engine(device: torch.device, spec: ModelSpec) -> str:
    """``"stacked"`` (`fedsim.learn.conv_batched.StackedGrads`) on the CPU for a
    module with ``nn.Conv2d`` layers that it can run (LeNet-5: 5x faster than
    ``vmap`` with one client per block), else ``"vmap"``: any module; an MLP
    (LeNet-300-100 as a module, 15 clients, one thread: 0.95 vs 0.96 s of CPU,
    the same); the GPU (not measured with the stacked engine)."""
    convolutional = any(isinstance(m, nn.Conv2d) for m in spec.module.modules())
    if device.type == "cpu" and convolutional and stacked_grads(spec.module) is not None:
        return "stacked"
    return "vmap"


class GenericTrainer:
    """Stacked client copies of any module and its batched local SGD.

    Args:
        spec: the model (template module, input shape, layout).
        clients: the labelled pool (``[N, *sample_shape]``: flat rows or the
            data's own shape, viewed as ``[N, *input_shape]``) and the partition.
        mask: per-layer masks in the layout's ``[fan_in, fan_out]`` shapes.
        cfg: local SGD settings.
        device: where to train.
        block_clients: clients per vmap call (default: `default_generic_block`).
        engine: how per-client gradients are taken: ``"vmap"``
            (``vmap(grad(loss))``, any module) or ``"stacked"`` (one autograd
            pass over a client-stacked forward, `fedsim.learn.conv_batched`);
            default `choose_engine`. Both give the same gradients up to float32
            rounding.

    Raises:
        ValueError: mask shapes that are not the model's, samples that do
            not hold ``prod(input_shape)`` values, ``block_clients`` < 1, an
            unknown ``engine``.
        conv_batched.Unsupported: ``engine="stacked"`` for a module it cannot run.
    """

    def __init__(self, spec: ModelSpec, clients: ClientData, mask: Mask, cfg: FLConfig,
                 device: torch.device, block_clients: int | None = None, engine: str | None = None) -> None:
        if mask.shapes != spec.layout.shapes:
            raise ValueError(f"mask of layer shapes {mask.shapes} for model {spec.name} of {spec.layout.shapes}")
        n, d = int(clients.inputs.shape[0]), clients.sample_size
        if d != torch.Size(spec.input_shape).numel():
            raise ValueError(f"samples of shape {list(clients.sample_shape)} ({d} values) for model "
                             f"{spec.name} taking {list(spec.input_shape)}")
        if block_clients is not None and block_clients < 1:
            raise ValueError(f"block_clients {block_clients} must be >= 1")
        self.spec = spec
        self.cfg = cfg
        self.device = device
        self.engine = engine or choose_engine(device, spec)
        if self.engine not in ("vmap", "stacked"):
            raise ValueError(f"engine {self.engine!r}: choose vmap or stacked")
        self.block_clients = block_clients or default_generic_block(device, spec, self.engine)
        self.inputs = clients.inputs.to(device).reshape(n, *spec.input_shape)
        self.masks = {k: m.to(device) for k, m in spec.layout.mask_tensors(mask.layers).items()}
        self.module = spec.module  # only its structure is used: parameters come from `functional_call`

        def loss(named: dict[str, Tensor], x: Tensor, y: Tensor, w: Tensor) -> Tensor:
            z = torch.func.functional_call(self.module, named, (x,))
            return (F.cross_entropy(z, y, reduction="none") * w).sum()

        self._grads = StackedGrads(self.module) if self.engine == "stacked" else torch.vmap(torch.func.grad(loss))

    def train_round(self, params: Params, schedule: RoundSchedule) -> Params:
        """Every participant's local SGD of one round; their K models stacked.
        ``params``: the model every participant starts from, or one per
        participant stacked (``[K, ...]``: FedProx pulls each towards its own)."""
        k_count = int(schedule.client_ids.size)
        named = self.spec.layout.to_named(params.to(self.device))
        self._anchor = named if self.cfg.proximal_mu else None  # FedProx: the round's global model(s)
        self._own_anchors = params.weights[0].dim() == 3
        stacked = {name: t.clone() if self._own_anchors else t.unsqueeze(0).repeat(k_count, *([1] * t.dim()))
                   for name, t in named.items()}
        rows = torch.from_numpy(schedule.indices).to(self.device)
        labels = torch.from_numpy(schedule.labels).to(self.device)
        weights = torch.from_numpy(schedule.weights).to(self.device)
        for first in range(0, k_count, self.block_clients):
            last = min(first + self.block_clients, k_count)
            block = {name: t[first:last] for name, t in stacked.items()}  # views: updated in place
            self._train_block(block, first, last, schedule, rows, labels, weights)
        return self.spec.layout.to_params(stacked, (k_count,))

    @torch.no_grad()
    def _train_block(self, block: dict[str, Tensor], first: int, last: int, schedule: RoundSchedule,
                     rows: Tensor, labels: Tensor, weights: Tensor) -> None:
        """All local steps of clients ``first..last-1``, batched over them."""
        lr = float(self.cfg.lr)
        k = last - first
        num_steps = int(schedule.local_steps[first:last].max())
        offsets = schedule.offsets.tolist()
        for t, width in enumerate(schedule.widths[:num_steps].tolist()):
            lo, hi = offsets[t] + first * width, offsets[t] + last * width  # flat layout [K, width]
            x = self.inputs[rows[lo:hi]].view(k, width, *self.spec.input_shape)
            with torch.enable_grad():
                grads = self._grads(block, x, labels[lo:hi].view(k, width), weights[lo:hi].view(k, width))
            prox = None if self._anchor is None else self._prox_weight(schedule.local_steps[first:last], t, lr)
            for name, p in block.items():
                if prox is not None:  # + μ (θ_k - θ): θ_k -= lr μ (θ_k - θ)
                    p.lerp_(self._anchor[name][first:last] if self._own_anchors else self._anchor[name], prox if isinstance(prox, float) else prox.view(k, *[1] * (p.dim() - 1)))
                p.sub_(grads[name], alpha=lr)
                m = self.masks.get(name)
                if m is not None:
                    p.mul_(m)

    def _prox_weight(self, steps: np.ndarray, t: int, lr: float) -> float | Tensor:
        """FedProx's lerp weight lr μ at step ``t``: a float when every client
        of the block takes the step, else ``[k]`` with 0 for the clients whose
        data ran out (they take no step, hence no pull towards θ)."""
        prox = lr * float(self.cfg.proximal_mu)
        if t < int(steps.min()):
            return prox
        return torch.from_numpy((steps > t).astype(np.float32) * np.float32(prox)).to(self.device)
