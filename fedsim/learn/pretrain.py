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

Models with an autoencoder (`fedsim.learn.counts.AUTOENCODER_ARCHS`): LeNet-300-100
(the paper's MLP DAE, encoder = the whole classifier) and LeNet-5 (the
convolutional DAE of `fedsim.learn.conv_dae`, encoder = conv1, conv2, fc1, fc2;
its head fc3 stays at θ0 and dense). Both run the same Protocol 2 with the same
settings; the masks cover every weight of encoder and decoder, biases unpruned.
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
    REFERENCE_ARCH,
    dae_shapes,
    encoder_shapes,
    expected_levels,
    head_shapes,
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
    Device,
    Init,
    Params,
    as_inputs,
    device_name,
    init_dae,
    resolve_device,
)
from fedsim.learn.spec import PretrainConfig
from fedsim.progress import Progress
from fedsim.store import atomic_write


@dataclass(frozen=True)
class Ticket:
    """The pre-training artifact.

    Attributes:
        theta0: Θ0, the DAE's initial parameters (`fedsim.learn.counts.dae_shapes`;
            LeNet-300-100: 6 layers, the first 3 the classifier's θ0; LeNet-5:
            8, the first 4 its θ0's conv1, conv2, fc1, fc2). The encoder part
            and the head are shared by every method.
        masks: DAE masks per level: ``masks[0]`` dense, ``masks[k]`` after k
            iterations of training and pruning.
        pretrained: the classifier after the first training step (its encoder
            trained, its head θ0); None when no iteration ran.
        recon_loss: ``[iterations, epochs]`` mean reconstruction MSE per epoch.
        meta: JSON-able facts (config, seed, device).
        arch: the classifier (`fedsim.learn.counts.AUTOENCODER_ARCHS`).
        head: θ0 of the classifier's layers after the encoder (LeNet-5's fc3),
            never pruned; None when the encoder is the whole classifier.
    """

    theta0: Params
    masks: tuple[Mask, ...]
    pretrained: Params | None = None
    recon_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    meta: dict[str, Any] = field(default_factory=dict)
    arch: str = REFERENCE_ARCH
    head: Params | None = None

    def __post_init__(self) -> None:
        if self.theta0.shapes != dae_shapes(self.arch):
            raise ValueError(f"Θ0 has layer shapes {self.theta0.shapes}, not the {self.arch} DAE's")
        head = self.head.shapes if self.head is not None else ()
        if head != head_shapes(self.arch):
            raise ValueError(f"head of layer shapes {head} for {self.arch}, whose head is {head_shapes(self.arch)}")
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
    def encoder_layers(self) -> int:
        """Layers of the DAE's encoder (= the classifier's body)."""
        return len(encoder_shapes(self.arch))

    @property
    def theta0_encoder(self) -> Params:
        """θ0: the classifier's initial weights, encoder and head (a copy)."""
        return self.classifier(self.theta0.layers(0, self.encoder_layers))

    def classifier(self, encoder: Params) -> Params:
        """The classifier of encoder parameters ``encoder`` and this ticket's head θ0 (a copy)."""
        if self.head is None:
            return encoder.clone()
        return Params((*encoder.weights, *self.head.weights), (*encoder.biases, *self.head.biases)).clone()

    def encoder_mask(self, level: int) -> Mask:
        """The classifier's mask m of ``level`` (0 = dense): the encoder's part
        of the DAE mask, then the head's layers all kept.

        Raises:
            ValueError: a level this ticket does not hold.
        """
        if not 0 <= level <= self.iterations:
            raise ValueError(f"pruning level {level} not available: this ticket holds levels 0..{self.iterations}")
        encoder = self.masks[level].layers_slice(0, self.encoder_layers)
        if self.head is None:
            return encoder
        return Mask((*encoder.layers, *Mask.dense_like(self.head).layers))

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
        if self.head is not None:
            arrays.update(self.head.to_numpy("head/"))
        if self.arch != REFERENCE_ARCH:  # absent for LeNet-300-100: its files stay as they were
            arrays["arch"] = np.array(self.arch)
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
                arch = str(data["arch"]) if "arch" in data else REFERENCE_ARCH
                head = Params.from_numpy(data, "head/") if "head/w0" in data else None
            except KeyError as err:
                raise ValueError(f"{path}: not a pre-training ticket (missing {err})") from err
        return cls(theta0, masks, pretrained, recon, meta, arch, head)


def initial_dae(arch: str, seed: int, *, init: Init = "glorot_uniform",
                classifier_theta0: Params | None = None) -> tuple[Params, Params | None]:
    """Θ0 of ``arch``'s DAE and the θ0 of the classifier's head (None without one).

    LeNet-300-100: `fedsim.learn.model.init_dae` (``init``). LeNet-5:
    ``classifier_theta0`` (the module's θ0, `fedsim.learn.zoo.ModelSpec.initial_params`)
    gives the encoder and the head, `fedsim.learn.conv_dae.init_conv_dae` the decoder.

    Raises:
        ValueError: an ``arch`` without an autoencoder; LeNet-5 without ``classifier_theta0``.
    """
    if arch == REFERENCE_ARCH:
        return init_dae(init, seed), None
    dae_shapes(arch)  # raises for a model without an autoencoder
    if classifier_theta0 is None:
        raise ValueError(f"the {arch} DAE's Θ0 needs the classifier's θ0")
    from fedsim.learn.conv_dae import init_conv_dae

    encoder = len(encoder_shapes(arch))
    return init_conv_dae(classifier_theta0, seed), classifier_theta0.layers(encoder).clone()


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
    arch: str = REFERENCE_ARCH,
    head: Params | None = None,
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
        arch, head: the classifier and its head's θ0 (`initial_dae`): LeNet-300-100
            trains the MLP DAE (`fedsim.learn.dae`), LeNet-5 the conv DAE
            (`fedsim.learn.conv_dae`).

    Returns:
        The ticket with levels 0..iterations.

    Raises:
        ValueError: ``start`` has another Θ0 or model, or more levels than
            asked for; Θ0 or the head are not ``arch``'s.
    """
    dev = resolve_device(device)
    wanted = cfg.iterations if iterations is None else int(iterations)
    if wanted < 0:
        raise ValueError(f"iterations {wanted} must be >= 0")
    meta = {"config": cfg.model_dump(), "seed": int(seed), "device": str(dev), "device_name": device_name(dev), "torch": torch.__version__}
    if start is None:
        ticket = Ticket(theta0.clone(), (Mask.dense_like(theta0),), None, np.zeros((0, cfg.epochs)), meta,
                        arch, None if head is None else head.clone())
    else:
        if start.arch != arch:
            raise ValueError(f"the ticket to extend is of model {start.arch}, not {arch}")
        if not start.theta0.equal(theta0):
            raise ValueError("the ticket to extend was made from another Θ0")
        if start.iterations > wanted:
            raise ValueError(f"the ticket to extend already has {start.iterations} > {wanted} levels")
        ticket = replace(start, meta=meta)
    if ticket.iterations == wanted:
        return ticket
    data = as_inputs(unlabeled).to(dev)
    if arch == REFERENCE_ARCH:
        train = train_dae
    else:
        from fedsim.learn.conv_dae import train_conv_dae as train
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

            trained, losses = train(
                ticket.theta0, mask, data, cfg, seed=seed, iteration=iteration, on_epoch=epoch_done
            )
            trained = trained.to("cpu")
            pruned = prune_magnitude(trained.weights, mask, cfg.prune_fraction, cfg.scope)
            recon = np.concatenate([ticket.recon_loss.reshape(-1, losses.size), losses[None, :]])
            pretrained = ticket.pretrained
            if iteration == 1:
                pretrained = ticket.classifier(trained.layers(0, ticket.encoder_layers))
            ticket = replace(ticket, masks=(*ticket.masks, pruned), pretrained=pretrained,
                             recon_loss=recon, meta=meta)
            if on_iteration is not None:
                on_iteration(ticket)
    finally:
        bar.close()
    return ticket
