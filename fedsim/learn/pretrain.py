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

The DAE training itself (the Training step, its noise and its hand-written
passes) is `fedsim.learn.dae`, whose names are re-exported here; this module
holds the `Ticket` and the loop of train, prune and reset (`pretrain`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

# the level arithmetic needs no torch (validation uses it); re-exported here
from fedsim.learn.counts import (  # noqa: F401
    RATE_TOLERANCE,
    expected_levels,
    iter_expected_levels,
    iter_level_counts,
)
from fedsim.learn.dae import (  # noqa: F401  (re-exported: the DAE training's names)
    ADAM_BETAS,
    ADAM_EPS,
    NOISE_BLOCKS,
    dae_epoch_flops,
    noisy_inputs,
    train_dae,
)
from fedsim.learn.masks import Mask, prune_magnitude
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
