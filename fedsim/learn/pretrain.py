"""HP-FL pre-training (paper, Protocol 2): a lottery ticket found with a DAE.

On the server's unlabeled pool:

1. Initialisation step: Θ0 = (θ0, θ'0) of the DAE (`fedsim.learn.model.init_dae`),
   mask M all ones.
2. Training step: train M ⊙ Θ0 as a denoising autoencoder: input
   clip(x + ε, 0, 1) with ε ~ N(noise_mean, noise_std²) drawn fresh every
   epoch, target x, mean squared error, Adam (lr 1e-3, PyTorch's betas
   (0.9, 0.999) and eps 1e-8; a fresh optimizer state every training step),
   batch 100, 100 epochs. Pruned weights stay exactly 0: their gradient is
   masked before the Adam step and the weights are masked after it.
3. Pruning step: remove 20 % of the surviving weights with the smallest
   magnitude, in every layer of encoder and decoder (`masks.prune_magnitude`).
4. Resetting step: the survivors go back to their Θ0 values.

Steps 2-4 run ``iterations`` times; the mask after iteration k is level k
(P_R ≈ 0.8^k: 0.41 at k=4, 0.21 at k=7, 0.107 at k=10). The encoder weights
after the first training step are the "FL with pre-training" baseline.

Randomness: iteration i, epoch e draws its shuffle from
``seeding.rng(seed, "pretrain", i, e, "shuffle")`` and its noise, in 8 row
blocks b, from ``seeding.torch_generator(seed, "pretrain", i, e, "noise", b)``
(`noisy_inputs`). Iteration i
depends only on Θ0 and the mask of level i-1, so a `Ticket` of k levels can be
extended to more levels later (``start=``) with the same result as one long run.

The DAE's forward and backward passes are written by hand (``addmm`` on one
flat parameter buffer, no autograd), and Adam is PyTorch's fused kernel on that
buffer: one call per step.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fedsim import seeding
from fedsim.learn.masks import Mask, level_counts, prune_count, prune_magnitude
from fedsim.learn.model import (
    DAE_SIZES,
    ENCODER_LAYERS,
    Device,
    Params,
    as_inputs,
    device_name,
    layer_shapes,
    resolve_device,
)
from fedsim.learn.spec import PretrainConfig
from fedsim.progress import Progress
from fedsim.store import atomic_write

#: Two P_R values closer than this are the same pruning level.
RATE_TOLERANCE = 0.005
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
#: The noise of an epoch is drawn in this many row blocks, one stream each.
NOISE_BLOCKS = 8


@dataclass(frozen=True)
class Ticket:
    """The pre-training artifact.

    Attributes:
        theta0: Θ0, the DAE's initial parameters (6 layers; the first 3 are the
            classifier's θ0, shared by every method).
        masks: DAE masks per level: ``masks[0]`` dense, ``masks[k]`` after k
            iterations of training and pruning.
        pretrained: the encoder (3 layers) after the first training step; None
            when no iteration ran.
        recon_loss: ``[iterations, epochs]`` mean reconstruction MSE per epoch.
        meta: JSON-able facts (config, seed, device).
    """

    theta0: Params
    masks: tuple[Mask, ...]
    pretrained: Params | None = None
    recon_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.theta0.shapes != layer_shapes(DAE_SIZES):
            raise ValueError(f"Θ0 has layer shapes {self.theta0.shapes}, not the DAE's")
        if not self.masks:
            raise ValueError("a ticket holds at least the level-0 mask")
        for k, m in enumerate(self.masks):
            m.check(self.theta0)
            if k and not m.is_subset_of(self.masks[k - 1]):
                raise ValueError(f"mask of level {k} keeps weights that level {k - 1} pruned")

    @property
    def iterations(self) -> int:
        """Iterations run = the highest level available."""
        return len(self.masks) - 1

    @property
    def theta0_encoder(self) -> Params:
        """θ0: the classifier's initial weights (a copy)."""
        return self.theta0.layers(0, ENCODER_LAYERS).clone()

    def encoder_mask(self, level: int) -> Mask:
        """The classifier's mask m of ``level`` (0 = dense).

        Raises:
            ValueError: a level this ticket does not hold.
        """
        if not 0 <= level <= self.iterations:
            raise ValueError(f"pruning level {level} not available: this ticket holds levels 0..{self.iterations}")
        return self.masks[level].layers_slice(0, ENCODER_LAYERS)

    def levels(self) -> list[tuple[int, float]]:
        """``(level, P_R of the classifier)`` for every level held."""
        return [(k, self.encoder_mask(k).remaining_rate) for k in range(len(self.masks))]

    def level_for_rate(self, remaining_rate: float) -> int:
        """The level whose P_R is within `RATE_TOLERANCE` of ``remaining_rate``.

        Raises:
            ValueError: no level matches; the message lists the available ones.
        """
        for level, rate in self.levels():
            if abs(rate - remaining_rate) < RATE_TOLERANCE:
                return level
        listed = ", ".join(f"{rate:.4f} (level {k})" for k, rate in self.levels())
        raise ValueError(f"no pruning level has remaining_rate {remaining_rate!r}; available: {listed}")

    def save(self, path: str | os.PathLike) -> None:
        """Write the ticket to ``path`` (compressed ``.npz``) atomically."""
        arrays: dict[str, np.ndarray] = {}
        arrays.update(self.theta0.to_numpy("theta0/"))
        if self.pretrained is not None:
            arrays.update(self.pretrained.to_numpy("pretrained/"))
        for k, m in enumerate(self.masks):
            arrays.update(m.to_numpy(f"mask{k}/"))
        arrays["recon_loss"] = np.asarray(self.recon_loss, dtype=np.float64)
        arrays["meta"] = np.array(json.dumps({**self.meta, "levels": len(self.masks)}, sort_keys=True, default=str))
        with atomic_write(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Ticket:
        """Read a ticket written by `save`.

        Raises:
            ValueError: the file is not a ticket.
        """
        with np.load(path, allow_pickle=False) as data:
            try:
                meta = json.loads(str(data["meta"]))
                levels = int(meta.pop("levels"))
                theta0 = Params.from_numpy(data, "theta0/")
                pretrained = Params.from_numpy(data, "pretrained/") if "pretrained/w0" in data else None
                masks = tuple(Mask.from_numpy(data, f"mask{k}/") for k in range(levels))
                recon = np.array(data["recon_loss"])
            except KeyError as err:
                raise ValueError(f"{path}: not a pre-training ticket (missing {err})") from err
        return cls(theta0, masks, pretrained, recon, meta)


def expected_levels(cfg: PretrainConfig, levels: int | None = None) -> list[tuple[int, float]]:
    """``(level, classifier P_R)`` of levels 0..``levels`` under layer-wise pruning,
    known before any training (the counts do not depend on weight values).

    Raises:
        ValueError: ``cfg.scope`` is ``global`` (there the split between layers,
            hence the classifier's P_R, depends on the trained weights).
    """
    top = cfg.iterations if levels is None else levels
    return list(itertools.islice(iter_expected_levels(cfg), top + 1))


def iter_expected_levels(cfg: PretrainConfig) -> Iterator[tuple[int, float]]:
    """``(level, classifier P_R)`` of levels 0, 1, 2, ... (endless) under
    layer-wise pruning (see `iter_level_counts`).

    Raises:
        ValueError: ``cfg.scope`` is ``global`` (see `expected_levels`).
    """
    counts = iter_level_counts(cfg)
    total = sum(i * o for i, o in layer_shapes(DAE_SIZES)[:ENCODER_LAYERS])
    return ((k, sum(level) / total) for k, level in enumerate(counts))


def iter_level_counts(cfg: PretrainConfig) -> Iterator[tuple[int, ...]]:
    """The classifier's per-layer surviving weights at levels 0, 1, 2, ...
    (endless) under layer-wise pruning, one pruning step per level: the first n
    levels cost O(n), where ``level_counts`` of each level would cost O(n^2).

    Raises:
        ValueError: ``cfg.scope`` is ``global`` (see `expected_levels`).
    """
    if cfg.scope != "layerwise":
        raise ValueError("levels are known in advance only for layerwise pruning")
    shapes = layer_shapes(DAE_SIZES)[:ENCODER_LAYERS]

    def levels() -> Iterator[tuple[int, ...]]:
        counts = level_counts(shapes, cfg.prune_fraction, 0)
        while True:
            yield counts
            counts = tuple(c - prune_count(c, cfg.prune_fraction) for c in counts)

    return levels()


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
    device = data.device
    num, dim = int(data.shape[0]), int(data.shape[1])
    if num == 0:
        raise ValueError("the unlabeled pool is empty")
    model = _FlatDAE(theta0.to(device), mask, cfg.batch_size, device)
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
    return model.params(), np.array(losses, dtype=np.float64)


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
    model: _FlatDAE,
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


def pretrain(
    theta0: Params,
    unlabeled: Tensor | np.ndarray,
    cfg: PretrainConfig,
    *,
    seed: int,
    iterations: int | None = None,
    start: Ticket | None = None,
    device: Device = "cpu",
    on_iteration: Callable[[Ticket], None] | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
    progress: bool = False,
) -> Ticket:
    """Run Protocol 2 up to ``iterations`` levels (train, prune, reset).

    Args:
        theta0: Θ0 of the DAE (`fedsim.learn.model.init_dae`).
        unlabeled: the server's pool, uint8 ``[N, 28, 28]`` or float ``[N, 784]``.
        cfg: pre-training settings.
        seed: scenario seed (shuffle and noise streams).
        iterations: levels wanted (default ``cfg.iterations``); 0 gives a ticket
            with Θ0 and the dense mask only, which is all ``original`` needs.
        start: a ticket from an earlier, shorter run with the same Θ0, data,
            config and seed, to extend.
        device: ``auto | cpu | cuda``.
        on_iteration: called with the ticket so far after every iteration (to
            cache levels as they come out).
        on_epoch: called as ``on_epoch(iteration, epoch, mse)`` after every
            DAE epoch (a pipeline's progress display counts epochs with it).
        progress: show a progress line of this pre-training's epochs, with an
            ETA (`fedsim.progress.Progress`, on stderr).

    Returns:
        The ticket with levels 0..iterations.

    Raises:
        ValueError: ``start`` has another Θ0 or more levels than asked for.
    """
    dev = resolve_device(device)
    wanted = cfg.iterations if iterations is None else int(iterations)
    if wanted < 0:
        raise ValueError(f"iterations {wanted} must be >= 0")
    meta = {"config": cfg.model_dump(), "seed": int(seed), "device": str(dev), "device_name": device_name(dev), "torch": torch.__version__}
    if start is None:
        ticket = Ticket(theta0.clone(), (Mask.dense_like(theta0),), None, np.zeros((0, cfg.epochs)), meta)
    else:
        if not start.theta0.equal(theta0):
            raise ValueError("the ticket to extend was made from another Θ0")
        if start.iterations > wanted:
            raise ValueError(f"the ticket to extend already has {start.iterations} > {wanted} levels")
        ticket = replace(start, meta=meta)
    if ticket.iterations == wanted:
        return ticket
    data = as_inputs(unlabeled).to(dev)
    first = ticket.iterations + 1
    bar = Progress("pre-training", {"epochs": (wanted - ticket.iterations) * cfg.epochs}, enabled=progress)
    try:
        for iteration in range(first, wanted + 1):
            mask = ticket.masks[-1]

            def epoch_done(epoch: int, mse: float, iteration: int = iteration) -> None:
                bar.advance("epochs", 1, f"IMP level {iteration}/{wanted}, epoch {epoch}/{cfg.epochs}, "
                                         f"mse {mse:.5f}")
                if on_epoch is not None:
                    on_epoch(iteration, epoch, mse)

            trained, losses = train_dae(
                ticket.theta0, mask, data, cfg, seed=seed, iteration=iteration, on_epoch=epoch_done
            )
            trained = trained.to("cpu")
            pruned = prune_magnitude(trained.weights, mask, cfg.prune_fraction, cfg.scope)
            recon = np.concatenate([ticket.recon_loss.reshape(-1, losses.size), losses[None, :]])
            pretrained = ticket.pretrained
            if iteration == 1:
                pretrained = trained.layers(0, ENCODER_LAYERS).clone()
            ticket = Ticket(ticket.theta0, (*ticket.masks, pruned), pretrained, recon, meta)
            if on_iteration is not None:
                on_iteration(ticket)
    finally:
        bar.close()
    return ticket
