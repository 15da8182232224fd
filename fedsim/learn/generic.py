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
  client's parameters into the template module);
* SGD: ``θ_k ← θ_k - lr · g_k``, then pruned weights are set to exactly 0
  (``θ_k ← θ_k ⊙ m``), as the kernel does after every step; a client with no
  step left at t has only zero-weight padding rows, hence a zero gradient, and
  keeps its weights;
* clients run in blocks of ``block_clients``: on the CPU one client for a
  model with convolutions (see `default_generic_block`), else as many as hold
  `CPU_BLOCK_BYTES` (16 MiB) of parameters (15 clients of LeNet-300-100, 67 of
  LeNet-5), which keeps a block's weights in the last-level cache between the
  forward pass and the update (measured 15 % faster than one block of 100
  LeNet-300-100 clients); on a GPU all of them. Memory for activations grows
  with the block, not with K.

Refs: torch.func (``functional_call``, ``vmap``, ``grad``), after JAX's
``vmap(grad(loss))`` idiom for per-example / per-client gradients; fedjax's
``for_each_client`` seam between a client's computation and the hardware.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsim.learn.batched import CPU_BLOCK_BYTES
from fedsim.learn.masks import Mask
from fedsim.learn.model import Params
from fedsim.learn.schedule import ClientData, RoundSchedule
from fedsim.learn.spec import FLConfig
from fedsim.learn.zoo import ModelSpec


def default_generic_block(device: torch.device, spec: ModelSpec) -> int:
    """Clients per block: all on a GPU; on the CPU one for a model with
    convolutions (``vmap`` turns K clients' convolutions into one grouped
    convolution, which oneDNN runs 1.5-2.3x slower than K single ones: LeNet-5,
    8 clients x 400 x 5 epochs on 2 cores, 3.2-4.7 s batched vs 2.0 s one at
    a time), else as many as fit in `CPU_BLOCK_BYTES` of float32 parameters."""
    if device.type != "cpu":
        return 1 << 30
    if any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) for m in spec.module.modules()):
        return 1
    num_params = sum(p.numel() for p in spec.module.parameters())
    return max(1, CPU_BLOCK_BYTES // (4 * num_params))


class GenericTrainer:
    """Stacked client copies of any module and its batched local SGD.

    Args:
        spec: the model (template module, input shape, layout).
        clients: the labelled pool (flat ``[N, d]`` rows, reshaped to
            ``input_shape``) and the partition.
        mask: per-layer masks in the layout's ``[fan_in, fan_out]`` shapes.
        cfg: local SGD settings.
        device: where to train.
        block_clients: clients per vmap call (default: `default_generic_block`).

    Raises:
        ValueError: mask shapes that are not the model's, inputs whose row
            size is not ``prod(input_shape)``, ``block_clients`` < 1.
    """

    def __init__(self, spec: ModelSpec, clients: ClientData, mask: Mask, cfg: FLConfig,
                 device: torch.device, block_clients: int | None = None) -> None:
        if mask.shapes != spec.layout.shapes:
            raise ValueError(f"mask of layer shapes {mask.shapes} for model {spec.name} of {spec.layout.shapes}")
        n, d = int(clients.inputs.shape[0]), int(clients.inputs.shape[1])
        if d != torch.Size(spec.input_shape).numel():
            raise ValueError(f"input rows of {d} values for model {spec.name} taking {list(spec.input_shape)}")
        if block_clients is not None and block_clients < 1:
            raise ValueError(f"block_clients {block_clients} must be >= 1")
        self.spec = spec
        self.cfg = cfg
        self.device = device
        self.block_clients = block_clients or default_generic_block(device, spec)
        self.inputs = clients.inputs.to(device).reshape(n, *spec.input_shape)
        self.masks = {k: m.to(device) for k, m in spec.layout.mask_tensors(mask.layers).items()}
        self.module = spec.module  # only its structure is used: parameters come from `functional_call`

        def loss(named: dict[str, Tensor], x: Tensor, y: Tensor, w: Tensor) -> Tensor:
            z = torch.func.functional_call(self.module, named, (x,))
            return (F.cross_entropy(z, y, reduction="none") * w).sum()

        self._grads = torch.vmap(torch.func.grad(loss))

    def train_round(self, params: Params, schedule: RoundSchedule) -> Params:
        """Every participant's local SGD of one round; their K models stacked."""
        k_count = int(schedule.client_ids.size)
        named = self.spec.layout.to_named(params.to(self.device))
        stacked = {name: t.unsqueeze(0).repeat(k_count, *([1] * t.dim())) for name, t in named.items()}
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
            for name, p in block.items():
                p.sub_(grads[name], alpha=lr)
                m = self.masks.get(name)
                if m is not None:
                    p.mul_(m)
