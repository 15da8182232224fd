"""Pruning masks: which weights of a network survive.

A `Mask` holds one boolean tensor per dense layer, shaped like that layer's
weight matrix ``[fan_in, fan_out]``; ``True`` = the weight survives. Biases are
never pruned (paper, Sec. III-B: P_R counts weights), so a sparse model sends
its surviving weights plus all of its biases.

The pure functions here are the pruning rules of the paper's Protocol 2:

* `prune_magnitude`: remove ``fraction`` of the surviving weights with the
  smallest magnitude, per layer (``layerwise``, the default) or with one
  threshold over all layers (``global``);
* `random_like`: a random mask with exactly the per-layer survivor counts of
  another one (the "FL with random pruning" baseline, paper Sec. IV-A3).

Both are deterministic: ties in magnitude are broken by position (the stable
sort keeps the earlier entry), random masks draw from a generator argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

# plain arithmetic, defined without torch (validation uses it); re-exported here
from fedsim.learn.counts import level_counts, prune_count  # noqa: F401
from fedsim.learn.model import Params

Scope = Literal["layerwise", "global"]
SCOPES: tuple[str, ...] = ("layerwise", "global")


@dataclass(frozen=True)
class LayerCount:
    """Sizes of one dense layer under a mask (what payloads and FLOPs scale with).

    Attributes:
        fan_in, fan_out: the weight matrix is ``[fan_in, fan_out]``.
        weights: all weights of the layer (``fan_in * fan_out``).
        surviving_weights: weights the mask keeps.
        biases: bias entries (``fan_out``; never pruned).
    """

    fan_in: int
    fan_out: int
    weights: int
    surviving_weights: int
    biases: int

    @property
    def density(self) -> float:
        return self.surviving_weights / self.weights

    @property
    def params_sent(self) -> int:
        """Surviving weights plus all biases of this layer."""
        return self.surviving_weights + self.biases


@dataclass(frozen=True)
class Mask:
    """Per-layer 0/1 masks of the weight matrices of a network.

    Args:
        layers: one tensor per layer, ``[fan_in, fan_out]``; bool, or any
            numeric dtype holding only 0 and 1 (converted to bool).

    Raises:
        ValueError: a tensor that is not 2-D or holds values other than 0 and 1.
    """

    layers: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        checked = []
        for i, m in enumerate(self.layers):
            m = torch.as_tensor(m)
            if m.dim() != 2:
                raise ValueError(f"mask layer {i}: shape {tuple(m.shape)} is not [fan_in, fan_out]")
            if m.dtype != torch.bool:
                if not bool(((m == 0) | (m == 1)).all()):
                    bad = m[(m != 0) & (m != 1)].flatten()[0].item()
                    raise ValueError(f"mask layer {i}: value {bad!r} is not 0 or 1")
                m = m != 0
            checked.append(m.contiguous())
        if not checked:
            raise ValueError("a mask needs at least one layer")
        object.__setattr__(self, "layers", tuple(checked))

    # -- construction ---------------------------------------------------------------

    @classmethod
    def dense(cls, shapes: Sequence[tuple[int, int]]) -> Mask:
        """The all-ones mask for layers of ``shapes`` (``(fan_in, fan_out)`` each)."""
        return cls(tuple(torch.ones(i, o, dtype=torch.bool) for i, o in shapes))

    @classmethod
    def dense_like(cls, params: Params) -> Mask:
        """The all-ones mask for ``params``."""
        return cls.dense(params.shapes)

    # -- sizes ------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(m.shape[0]), int(m.shape[1])) for m in self.layers)

    def layer_counts(self) -> tuple[LayerCount, ...]:
        """Total and surviving weights and bias count of every layer."""
        return tuple(
            LayerCount(
                fan_in=i,
                fan_out=o,
                weights=i * o,
                surviving_weights=int(m.sum()),
                biases=o,
            )
            for (i, o), m in zip(self.shapes, self.layers, strict=True)
        )

    @property
    def surviving_weights(self) -> int:
        return sum(c.surviving_weights for c in self.layer_counts())

    @property
    def total_weights(self) -> int:
        return sum(c.weights for c in self.layer_counts())

    @property
    def remaining_rate(self) -> float:
        """P_R = surviving weights / all weights (paper, Sec. III-B; biases excluded)."""
        return self.surviving_weights / self.total_weights

    @property
    def density(self) -> float:
        """Overall density; the same number as `remaining_rate`."""
        return self.remaining_rate

    def densities(self) -> tuple[float, ...]:
        """Density of every layer."""
        return tuple(c.density for c in self.layer_counts())

    @property
    def params_sent(self) -> int:
        """Exact parameter count a client sends: surviving weights + all biases."""
        return sum(c.params_sent for c in self.layer_counts())

    def is_dense(self) -> tuple[bool, ...]:
        """Per layer: does the mask keep every weight?"""
        return tuple(bool(m.all()) for m in self.layers)

    # -- relations and application ------------------------------------------------------

    def check(self, params: Params) -> None:
        """Raise ValueError unless the mask's shapes are those of ``params``' weights."""
        if self.shapes != params.shapes:
            raise ValueError(f"mask shapes {self.shapes} do not match parameter shapes {params.shapes}")

    def is_subset_of(self, other: Mask) -> bool:
        """True when every weight this mask keeps is kept by ``other`` too."""
        return self.shapes == other.shapes and all(
            not bool((a & ~b).any()) for a, b in zip(self.layers, other.layers, strict=True)
        )

    def apply(self, params: Params) -> Params:
        """``m ⊙ θ``: a copy of ``params`` with the pruned weights set to exactly 0.

        Biases are kept. Works on stacked parameters too (the mask broadcasts
        over leading dimensions).
        """
        self.check(params)
        weights = tuple(
            w * m.to(device=w.device, dtype=w.dtype) for w, m in zip(params.weights, self.layers, strict=True)
        )
        return Params(weights, tuple(b.clone() for b in params.biases))

    def layers_slice(self, start: int, stop: int | None = None) -> Mask:
        """The masks of layers ``start:stop`` (e.g. the encoder part of a DAE mask)."""
        return Mask(self.layers[start:stop])

    def to_numpy(self, prefix: str = "m") -> dict[str, np.ndarray]:
        """Arrays named ``{prefix}{i}`` (bool), for ``np.savez``."""
        return {f"{prefix}{i}": m.cpu().numpy() for i, m in enumerate(self.layers)}

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile, prefix: str = "m") -> Mask:
        """Inverse of `to_numpy`."""
        layers = []
        i = 0
        while f"{prefix}{i}" in arrays:
            layers.append(torch.from_numpy(np.array(arrays[f"{prefix}{i}"], dtype=bool)))
            i += 1
        if not layers:
            raise ValueError(f"no arrays named {prefix}0, {prefix}1, ... found")
        return cls(tuple(layers))

    def equal(self, other: Mask) -> bool:
        return self.shapes == other.shapes and all(
            torch.equal(a.cpu(), b.cpu()) for a, b in zip(self.layers, other.layers, strict=True)
        )


def _smallest(scores: Tensor, count: int) -> Tensor:
    """Flat positions of the ``count`` smallest ``scores`` (ties: lowest position)."""
    order = torch.sort(scores, stable=True).indices
    return order[:count]


def prune_magnitude(
    weights: Sequence[Tensor], mask: Mask, fraction: float, scope: Scope = "layerwise"
) -> Mask:
    """Remove ``fraction`` of the surviving weights with the smallest |w|.

    Paper, Protocol 2, Pruning step: "prune p% of the smallest magnitude of
    survived parameters M ⊙ Θ".

    Args:
        weights: the trained weight matrices, one per layer of ``mask``.
        mask: the current mask; the result is a subset of it.
        fraction: share of the survivors to remove, in [0, 1).
        scope: ``layerwise``: every layer loses `prune_count` of its own
            survivors; ``global``: `prune_count` of all survivors, chosen with
            one magnitude ranking over all layers.

    Returns:
        The new mask. Ties in magnitude fall on the earlier position.

    Raises:
        ValueError: shapes that do not match, a fraction outside [0, 1), an
            unknown scope.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"prune fraction {fraction!r} must be in [0, 1)")
    if scope not in SCOPES:
        raise ValueError(f"pruning scope {scope!r}: expected one of {', '.join(SCOPES)}")
    shapes = tuple((int(w.shape[0]), int(w.shape[1])) for w in weights)
    if shapes != mask.shapes:
        raise ValueError(f"weight shapes {shapes} do not match mask shapes {mask.shapes}")
    # Pruned weights get +inf so they are never chosen again.
    scores = [
        torch.where(m, w.detach().abs().float().cpu(), torch.tensor(float("inf")))
        for w, m in zip(weights, (m.cpu() for m in mask.layers), strict=True)
    ]
    new = [m.cpu().clone() for m in mask.layers]
    if scope == "layerwise":
        for s, m in zip(scores, new, strict=True):
            drop = _smallest(s.flatten(), prune_count(int(m.sum()), fraction))
            m.view(-1)[drop] = False
    else:
        flat = torch.cat([s.flatten() for s in scores])
        drop = _smallest(flat, prune_count(sum(int(m.sum()) for m in new), fraction))
        offsets = np.cumsum([0] + [m.numel() for m in new])
        for i, m in enumerate(new):
            local = drop[(drop >= offsets[i]) & (drop < offsets[i + 1])] - int(offsets[i])
            m.view(-1)[local] = False
    return Mask(tuple(new))


def random_like(mask: Mask, rng: np.random.Generator) -> Mask:
    """A uniformly random mask with exactly ``mask``'s survivor count in every layer.

    Args:
        mask: gives the shapes and per-layer counts.
        rng: the stream to draw from (fedsim uses ``rng(seed, "random-mask", level)``);
            layers are drawn in order.
    """
    layers = []
    for count, (fan_in, fan_out) in zip(
        (c.surviving_weights for c in mask.layer_counts()), mask.shapes, strict=True
    ):
        keep = np.zeros(fan_in * fan_out, dtype=bool)
        keep[rng.permutation(fan_in * fan_out)[:count]] = True
        layers.append(torch.from_numpy(keep.reshape(fan_in, fan_out)))
    return Mask(tuple(layers))
