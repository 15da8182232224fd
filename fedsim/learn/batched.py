"""The batched trainer's kernels: every participant's local SGD of a round at once.

`_BatchedMLP` runs one round's `fedsim.learn.schedule.RoundSchedule` for K
clients of LeNet-300-100 and returns their K trained models stacked; the
round driver (`fedsim.learn.federated`) averages them. How (the seam between
"what a client computes" and "how clients map onto hardware", as in fedjax's
``for_each_client``):

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
* a `Mask` fixes pruned weights at exactly 0: the update of a pruned weight is
  masked out after every step;
* FedProx (``fl.proximal_mu`` = μ > 0; Li et al., MLSys 2020): every step's
  gradient gains μ (w - w_global), applied as ``w.lerp_(w_global, lr μ)``
  to the weights before their update (after the input gradient that reads
  them); μ = 0 runs none of it;
* all large buffers are preallocated and reused across steps and rounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, Params, layer_shapes
from fedsim.learn.schedule import ClientData, RoundSchedule
from fedsim.learn.spec import FLConfig

#: Bytes of stacked client weights that one block may hold on the CPU: a block's
#: layer-1 weights (942 KB per client) then stay in the last-level cache between
#: the forward pass and the update of a step.
CPU_BLOCK_BYTES = 16 * 2**20


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
        if clients.sample_size != d_in:
            raise ValueError(f"LeNet-300-100 takes samples of {d_in} values; the clients' are "
                             f"{list(clients.sample_shape)}")
        self.inputs = torch.ones(n, d_in + 1, dtype=torch.float32, device=device)
        self.inputs[:, :d_in] = clients.inputs.to(device).reshape(n, d_in)
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
        models stacked (views into this object's buffers, valid until the next call).
        ``params``: the model every participant starts from, or one per
        participant stacked (``[K, ...]``, the asynchronous trainer's mixed
        versions; FedProx then pulls each towards its own)."""
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
        # FedProx's anchor: the round's global model, layer 1's bias as row d0 (as in w1)
        self.anchor = None if not self.cfg.proximal_mu else (
            torch.cat([params.weights[0], params.biases[0].unsqueeze(-2)], dim=-2).to(dev),
            *(t.to(dev) for t in (params.weights[1], params.biases[1], params.weights[2], params.biases[2])))
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
        anchor, prox = self.anchor, lr * float(self.cfg.proximal_mu)  # FedProx: w -= lr μ (w - w_global)
        if anchor is not None and anchor[0].dim() == 3:  # one anchor per participant
            anchor = tuple(a[first:last] for a in anchor)
        steps = schedule.local_steps[first:last]
        active = torch.from_numpy(steps).to(self.device) if anchor is not None else None
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
            if anchor is not None:  # a client whose data ran out takes no step, hence no pull
                c = prox if t < steps.min() else (active > t).to(torch.float32).mul_(prox).view(k, 1, 1)
                w3.lerp_(anchor[3], c)
                b3.lerp_(anchor[4], c if isinstance(c, float) else c.view(k, 1))
            w3.baddbmm_(h2.transpose(1, 2), gz.transpose(1, 2), alpha=-lr)
            b3.sub_(gz.sum(dim=2), alpha=lr)
            torch.ops.aten.threshold_backward.grad_input(g2, h2, 0, grad_input=g2)
            g1 = torch.bmm(g2, w2.transpose(1, 2), out=self.g1[: kb * d1].view(k, width, d1))
            if anchor is not None:
                w2.lerp_(anchor[1], c)
                b2.lerp_(anchor[2], c if isinstance(c, float) else c.view(k, 1))
                w1.lerp_(anchor[0], c)
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
