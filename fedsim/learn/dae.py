"""Protocol 2's Training step: one DAE trained on the unlabeled pool, fast.

`train_dae` trains ``mask ⊙ theta0`` as a denoising autoencoder (input
clip(x + ε, 0, 1) with ε ~ N(noise_mean, noise_std²) drawn fresh every epoch,
target x, mean squared error, Adam with PyTorch's betas (0.9, 0.999) and eps
1e-8, a fresh optimizer state per call); pruned weights stay exactly 0: their
gradient is masked before the Adam step and the weights are masked after it.
The iterative magnitude pruning around it and the `Ticket` it produces are
`fedsim.learn.pretrain`.

Randomness: iteration i, epoch e draws its shuffle from
``seeding.rng(seed, "pretrain", i, e, "shuffle")`` and its noise, in
`NOISE_BLOCKS` row blocks b, from ``seeding.torch_generator(seed, "pretrain",
i, e, "noise", b)`` (`noisy_inputs`).

The DAE's forward and backward passes are written by hand (``addmm`` on one
flat parameter buffer, no autograd), and Adam is PyTorch's fused kernel on that
buffer: one call per step (`_FlatDAE`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from fedsim import seeding
from fedsim.learn.masks import Mask
from fedsim.learn.model import DAE_SIZES, ENCODER_LAYERS, Params, layer_shapes
from fedsim.learn.spec import PretrainConfig

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
#: The noise of an epoch is drawn in this many row blocks, one stream each.
NOISE_BLOCKS = 8


def dae_epoch_flops(num_samples: int) -> float:
    """Dense FLOPs of one DAE epoch: per sample the forward pass (2·Σ in·out), the
    weight gradients (the same) and the input gradients of every layer but the
    first; biases and element-wise work not counted (about 54.5 GFLOP for 20,000
    samples)."""
    shapes = layer_shapes(DAE_SIZES)
    macs = sum(i * o for i, o in shapes)
    return float(2 * macs + 2 * macs + 2 * sum(i * o for i, o in shapes[1:])) * num_samples


class _FlatDAE:
    """The DAE's parameters, gradients and Adam state as flat buffers with
    per-layer views, and its hand-written forward/backward pass."""

    def __init__(self, theta0: Params, mask: Mask, batch_size: int, device: torch.device) -> None:
        self.shapes = theta0.shapes
        sizes = [n for i, o in self.shapes for n in (i * o, o)]
        total = sum(sizes)
        self.flat = torch.empty(total, dtype=torch.float32, device=device)
        self.grad = torch.zeros(total, dtype=torch.float32, device=device)
        self.exp_avg = torch.zeros(total, dtype=torch.float32, device=device)
        self.exp_avg_sq = torch.zeros(total, dtype=torch.float32, device=device)
        self.step = torch.zeros((), dtype=torch.float32, device=device)
        self.w, self.b, self.gw, self.gb = [], [], [], []
        flat_mask = torch.ones(total, dtype=torch.float32, device=device)
        start = 0
        masked = mask.apply(theta0)
        for (i, o), w0, b0, m in zip(self.shapes, masked.weights, masked.biases, mask.layers, strict=True):
            for store, grads, src, n, shape in (
                (self.w, self.gw, w0, i * o, (i, o)),
                (self.b, self.gb, b0, o, (o,)),
            ):
                view = self.flat[start : start + n].view(shape)
                view.copy_(src)
                store.append(view)
                grads.append(self.grad[start : start + n].view(shape))
                if len(shape) == 2:
                    flat_mask[start : start + n] = m.to(device=device, dtype=torch.float32).flatten()
                start += n
        # None when nothing is pruned: skip both masking passes.
        self.mask = None if all(mask.is_dense()) else flat_mask
        widths = DAE_SIZES
        self.acts = [torch.empty(batch_size, n, device=device) for n in widths[1:]]
        self.grads = [torch.empty(batch_size, n, device=device) for n in widths[1:]]

    def params(self) -> Params:
        return Params(tuple(w.clone() for w in self.w), tuple(b.clone() for b in self.b))

    def step_batch(self, x_noisy: Tensor, x_clean: Tensor, lr: float) -> Tensor:
        """One Adam step on a batch; returns the batch's summed squared error."""
        n = int(x_noisy.shape[0])
        acts = [a[:n] for a in self.acts]
        grads = [g[:n] for g in self.grads]
        last = len(self.w) - 1
        h = x_noisy
        for layer, (w, b) in enumerate(zip(self.w, self.b, strict=True)):
            h = torch.addmm(b, h, w, out=acts[layer])
            if layer == last:
                h.sigmoid_()
            elif layer != ENCODER_LAYERS - 1:  # the code layer is linear
                h.relu_()
        z = acts[last]
        diff = torch.sub(z, x_clean, out=grads[last])
        sq_error = torch.dot(diff.view(-1), diff.view(-1))
        # d mean((z - x)²) / d pre-activation = 2 (z - x) z (1 - z) / (n · 784)
        g = torch.ops.aten.sigmoid_backward.grad_input(diff, z, grad_input=diff)
        g.mul_(2.0 / diff.numel())
        for layer in range(last, -1, -1):
            inp = x_noisy if layer == 0 else acts[layer - 1]
            if layer > 0:
                g_in = torch.mm(g, self.w[layer].t(), out=grads[layer - 1])
            torch.mm(inp.t(), g, out=self.gw[layer])
            torch.sum(g, dim=0, out=self.gb[layer])
            if layer > 0:
                if layer - 1 != ENCODER_LAYERS - 1:
                    torch.ops.aten.threshold_backward.grad_input(g_in, acts[layer - 1], 0, grad_input=g_in)
                g = g_in
        if self.mask is not None:
            self.grad.mul_(self.mask)
        self.step.add_(1)
        torch._fused_adam_(
            [self.flat],
            [self.grad],
            [self.exp_avg],
            [self.exp_avg_sq],
            [],
            [self.step],
            lr=lr,
            beta1=ADAM_BETAS[0],
            beta2=ADAM_BETAS[1],
            weight_decay=0.0,
            eps=ADAM_EPS,
            amsgrad=False,
            maximize=False,
        )
        if self.mask is not None:
            self.flat.mul_(self.mask)
        return sq_error


def train_dae(
    theta0: Params,
    mask: Mask,
    data: Tensor,
    cfg: PretrainConfig,
    *,
    seed: int,
    iteration: int,
    epochs: int | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[Params, np.ndarray]:
    """Protocol 2's Training step: train ``mask ⊙ theta0`` as a denoising autoencoder.

    Args:
        theta0: DAE parameters to start from (reset values).
        mask: DAE mask; pruned weights are held at exactly 0.
        data: clean unlabeled inputs, float32 ``[N, 784]`` in [0, 1], on the
            device to train on.
        cfg: noise, Adam lr, batch size, epochs.
        seed, iteration: key the shuffle and noise streams.
        epochs: override ``cfg.epochs`` (benchmarks).
        on_epoch: called as ``on_epoch(epoch, mse)`` after every epoch.

    Returns:
        The trained DAE parameters and the mean reconstruction MSE of every epoch.
    """
    mask.check(theta0)
    if int(data.shape[0]) == 0:
        raise ValueError("the unlabeled pool is empty")
    model = _FlatDAE(theta0.to(data.device), mask, cfg.batch_size, data.device)
    losses = fit_dae(model, data, cfg, seed=seed, iteration=iteration, epochs=epochs, on_epoch=on_epoch)
    return model.params(), losses


class StepModel(Protocol):
    """A DAE that `fit_dae` trains: one optimiser step per batch."""

    def step_batch(self, x_noisy: Tensor, x_clean: Tensor, lr: float) -> Tensor:
        """One step on a batch; returns the batch's summed squared error (a 0-d tensor)."""
        ...


def fit_dae(
    model: StepModel,
    data: Tensor,
    cfg: PretrainConfig,
    *,
    seed: int,
    iteration: int,
    epochs: int | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> np.ndarray:
    """The epochs of one Training step, whatever the DAE (the MLP's `_FlatDAE`,
    the conv DAE of `fedsim.learn.conv_dae`): every epoch draws its noise
    (`noisy_inputs`) and shuffle, then steps ``model`` on batches of
    ``cfg.batch_size`` rows (the last one partial). Returns the mean
    reconstruction MSE of every epoch.

    Raises:
        ValueError: the unlabeled pool is empty.
    """
    device = data.device
    num, dim = int(data.shape[0]), int(data.shape[1])
    if num == 0:
        raise ValueError("the unlabeled pool is empty")
    noisy = torch.empty_like(data)
    xb = torch.empty(cfg.batch_size, dim, device=device)
    tb = torch.empty(cfg.batch_size, dim, device=device)
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(threads) if device.type == "cpu" and threads > 1 else None
    losses = []
    try:
        for epoch in range(1, (cfg.epochs if epochs is None else epochs) + 1):
            losses.append(_epoch(model, data, noisy, xb, tb, cfg, seed, iteration, epoch, pool))
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
    finally:
        if pool is not None:
            pool.shutdown()
    return np.array(losses, dtype=np.float64)


def noisy_inputs(
    data: Tensor,
    cfg: PretrainConfig,
    *,
    seed: int,
    iteration: int,
    epoch: int,
    out: Tensor | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> Tensor:
    """The corrupted inputs of one epoch: clip(x + ε, 0, 1), ε ~ N(noise_mean, noise_std²).

    The rows are cut into `NOISE_BLOCKS` fixed blocks, block b drawing from
    ``seeding.torch_generator(seed, "pretrain", iteration, epoch, "noise", b)``:
    the blocks can be drawn in parallel (``pool``; a CPU generator is serial)
    and the result does not depend on how many threads drew them.
    """
    out = torch.empty_like(data) if out is None else out
    blocks = out.chunk(NOISE_BLOCKS)

    def draw(b: int) -> None:
        gen = seeding.torch_generator(seed, "pretrain", iteration, epoch, "noise", b, device=data.device)
        blocks[b].normal_(cfg.noise_mean, cfg.noise_std, generator=gen)

    if pool is None:
        for b in range(len(blocks)):
            draw(b)
    else:
        list(pool.map(draw, range(len(blocks))))
    return out.add_(data).clamp_(0.0, 1.0)


def _epoch(
    model: StepModel,
    data: Tensor,
    noisy: Tensor,
    xb: Tensor,
    tb: Tensor,
    cfg: PretrainConfig,
    seed: int,
    iteration: int,
    epoch: int,
    pool: ThreadPoolExecutor | None,
) -> float:
    """One epoch of DAE training; returns its mean reconstruction MSE."""
    device = data.device
    num, dim = int(data.shape[0]), int(data.shape[1])
    noisy_inputs(data, cfg, seed=seed, iteration=iteration, epoch=epoch, out=noisy, pool=pool)
    order = seeding.rng(seed, "pretrain", iteration, epoch, "shuffle").permutation(num)
    order_t = torch.from_numpy(order).to(device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for lo in range(0, num, cfg.batch_size):
        idx = order_t[lo : lo + cfg.batch_size]
        n = int(idx.shape[0])
        x_noisy = torch.index_select(noisy, 0, idx, out=xb[:n])
        x_clean = torch.index_select(data, 0, idx, out=tb[:n])
        total += model.step_batch(x_noisy, x_clean, cfg.lr)
    return float(total) / (num * dim)


__all__ = ["ADAM_BETAS", "ADAM_EPS", "NOISE_BLOCKS", "dae_epoch_flops", "fit_dae", "noisy_inputs", "train_dae"]
