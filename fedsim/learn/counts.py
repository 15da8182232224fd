"""Sizes of the model and of its pruning levels, from shapes alone (no torch).

Layer widths, ``(fan_in, fan_out)`` shapes, parameter counts and the survivor
counts of layer-wise magnitude pruning are plain integer arithmetic: layer-wise
pruning removes a fixed share of every layer's survivors per step whatever the
weight values are, so every level's counts (hence P_R) are known before any
training. Validating a scenario needs exactly these facts (which level a
``remaining_rate`` names, the payload of the fastest possible round), so they
live here, where importing them costs no torch (``fedsim validate``:
docs/performance.md). `fedsim.learn.model`, `fedsim.learn.masks` and
`fedsim.learn.pretrain` re-export them under their historical names.

Paper (Itahara et al.), Sec. IV-A2: LeNet-300-100 (784-300-100-10, 266,610
parameters); pruning rate 20 % per iteration, so level k keeps about 0.8^k.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedsim.learn.spec import PretrainConfig

#: Layer widths of LeNet-300-100 (input first).
LENET_SIZES: tuple[int, ...] = (784, 300, 100, 10)
#: Layer widths of the DAE: the LeNet encoder, then the mirrored decoder.
DAE_SIZES: tuple[int, ...] = (784, 300, 100, 10, 100, 300, 784)
#: Number of dense layers of the encoder (= the classifier).
ENCODER_LAYERS = len(LENET_SIZES) - 1
#: Parameters of LeNet-300-100 (paper: 266,610).
LENET_NUM_PARAMS = sum(i * o + o for i, o in itertools.pairwise(LENET_SIZES))
#: A ``remaining_rate`` names the level whose P_R is within this distance.
RATE_TOLERANCE = 0.005


def layer_shapes(sizes: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``(fan_in, fan_out)`` of each dense layer of an MLP with widths ``sizes``."""
    return tuple(itertools.pairwise(sizes))


def prune_count(surviving: int, fraction: float) -> int:
    """How many of ``surviving`` weights one pruning step removes:
    ``round(fraction * surviving)``, halves rounded up (so 20 % of 1000, 800,
    640, 512 survivors removes 200, 160, 128, 102)."""
    return math.floor(fraction * surviving + 0.5)


def level_counts(shapes: Sequence[tuple[int, int]], fraction: float, level: int) -> tuple[int, ...]:
    """Per-layer survivor counts after ``level`` layer-wise pruning steps.

    Layer-wise magnitude pruning removes `prune_count` weights of every layer per
    step whatever the weight values are, so the counts (hence P_R) of every level
    are known before any training.
    """
    counts = [i * o for i, o in shapes]
    for _ in range(level):
        counts = [c - prune_count(c, fraction) for c in counts]
    return tuple(counts)


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


def iter_expected_levels(cfg: PretrainConfig) -> Iterator[tuple[int, float]]:
    """``(level, classifier P_R)`` of levels 0, 1, 2, ... (endless) under
    layer-wise pruning (see `iter_level_counts`).

    Raises:
        ValueError: ``cfg.scope`` is ``global`` (see `expected_levels`).
    """
    counts = iter_level_counts(cfg)
    total = sum(i * o for i, o in layer_shapes(DAE_SIZES)[:ENCODER_LAYERS])
    return ((k, sum(level) / total) for k, level in enumerate(counts))


def expected_levels(cfg: PretrainConfig, levels: int | None = None) -> list[tuple[int, float]]:
    """``(level, classifier P_R)`` of levels 0..``levels`` (default:
    ``cfg.iterations``) under layer-wise pruning, known before any training
    (the counts do not depend on weight values).

    Raises:
        ValueError: ``cfg.scope`` is ``global`` (there the split between layers,
            hence the classifier's P_R, depends on the trained weights).
    """
    top = cfg.iterations if levels is None else levels
    return list(itertools.islice(iter_expected_levels(cfg), top + 1))
