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


def iter_level_counts(cfg: PretrainConfig, arch: str = "lenet-300-100") -> Iterator[tuple[int, ...]]:
    """The classifier's per-layer surviving weights at levels 0, 1, 2, ...
    (endless) under layer-wise pruning, one pruning step per level: the first n
    levels cost O(n), where ``level_counts`` of each level would cost O(n^2).

    ``arch``: a model with an autoencoder (`AUTOENCODER_ARCHS`). Its encoder
    layers lose `prune_count` of their survivors per level, a convolution
    exactly as a dense layer (its mask is the ``[in·kh·kw, out]`` matrix of
    `fedsim.learn.zoo.Layout`); the head (`head_shapes`) stays dense.

    Raises:
        ValueError: ``cfg.scope`` is ``global`` (see `expected_levels`); an
            ``arch`` without an autoencoder.
    """
    if cfg.scope != "layerwise":
        raise ValueError("levels are known in advance only for layerwise pruning")
    shapes = encoder_shapes(arch)
    head = tuple(i * o for i, o in head_shapes(arch))

    def levels() -> Iterator[tuple[int, ...]]:
        counts = level_counts(shapes, cfg.prune_fraction, 0)
        while True:
            yield (*counts, *head)
            counts = tuple(c - prune_count(c, cfg.prune_fraction) for c in counts)

    return levels()


def iter_expected_levels(cfg: PretrainConfig, arch: str = "lenet-300-100") -> Iterator[tuple[int, float]]:
    """``(level, classifier P_R)`` of levels 0, 1, 2, ... (endless) under
    layer-wise pruning (see `iter_level_counts`); P_R counts every weight of
    the classifier, its dense head included.

    Raises:
        ValueError: ``cfg.scope`` is ``global`` (see `expected_levels`); an
            ``arch`` without an autoencoder.
    """
    counts = iter_level_counts(cfg, arch)
    total = sum(i * o for i, o in classifier_shapes(arch))
    return ((k, sum(level) / total) for k, level in enumerate(counts))


def expected_levels(cfg: PretrainConfig, levels: int | None = None,
                    arch: str = "lenet-300-100") -> list[tuple[int, float]]:
    """``(level, classifier P_R)`` of levels 0..``levels`` (default:
    ``cfg.iterations``) under layer-wise pruning, known before any training
    (the counts do not depend on weight values).

    Raises:
        ValueError: ``cfg.scope`` is ``global`` (there the split between layers,
            hence the classifier's P_R, depends on the trained weights).
    """
    top = cfg.iterations if levels is None else levels
    return list(itertools.islice(iter_expected_levels(cfg, arch), top + 1))


# -- models and their training FLOPs per sample ------------------------------------------

#: The built-in classifiers (`fedsim.learn.zoo`): ``lenet-300-100`` (the paper's,
#: trained by the hand-written kernel) and ``lenet-5`` (trained the generic way).
BUILTIN_ARCHS: tuple[str, ...] = ("lenet-300-100", "lenet-5")
#: The architecture ``t_comp_full`` is measured for: compute scales are relative to it.
REFERENCE_ARCH = "lenet-300-100"

#: LeNet-5's convolutions on a 1x28x28 image: ``(in_channels, out_channels,
#: kernel, padding, input side)``; each is followed by ReLU and 2x2 max pooling.
LENET5_CONVS: tuple[tuple[int, int, int, int, int], ...] = ((1, 6, 5, 2, 28), (6, 16, 5, 0, 14))
#: Its dense layers' widths: 16x5x5 features -> 120 -> 84 -> 10 classes.
LENET5_DENSE: tuple[int, ...] = (16 * 5 * 5, 120, 84, 10)


def lenet5_layer_macs() -> tuple[int, ...]:
    """Multiply-accumulates of one forward pass of one sample, per weighted layer
    of LeNet-5 (conv1, conv2, fc1, fc2, fc3): a convolution costs
    ``out_side² · out_channels · in_channels · kernel²`` (out_side = side + 2·pad
    - kernel + 1), a dense layer ``fan_in · fan_out``. Pooling, ReLU and biases
    are not counted (as in `training_flops_per_sample`).
    117,600 + 240,000 + 48,000 + 10,080 + 840 = 416,520."""
    convs = []
    for c_in, c_out, kernel, pad, side in LENET5_CONVS:
        out_side = side + 2 * pad - kernel + 1
        convs.append(out_side * out_side * c_out * c_in * kernel * kernel)
    return (*convs, *(i * o for i, o in layer_shapes(LENET5_DENSE)))


def lenet5_num_params() -> int:
    """Parameters of LeNet-5 (weights and biases): 156 + 2,416 + 48,120 + 10,164
    + 850 = 61,706."""
    convs = sum(c_out * c_in * k * k + c_out for c_in, c_out, k, _, _ in LENET5_CONVS)
    return convs + sum(i * o + o for i, o in layer_shapes(LENET5_DENSE))


def training_flops_per_sample(layer_macs: Sequence[int]) -> int:
    """FLOPs of one SGD pass (forward and backward) of one sample through a
    network whose weighted layers take ``layer_macs`` multiply-accumulates in
    the forward pass, first layer first:

        F = 2·Σ_l M_l  (forward)  +  2·Σ_l M_l  (weight gradients)
            + 2·Σ_{l>1} M_l  (input gradients; the first layer needs none)

    i.e. the usual "backward ≈ 2x forward" count (Kaplan et al. 2020, Sec. 2.1;
    Hoffmann et al. 2022, App. F) made exact for the skipped first-layer input
    gradient. Biases, activations and pooling are not counted. The definition
    of `fedsim.learn.federated.round_flops`: LeNet-300-100 gives 1,126,800,
    LeNet-5 2,263,920.
    """
    macs = [int(m) for m in layer_macs]
    return 4 * sum(macs) + 2 * sum(macs[1:])


#: Training FLOPs per sample of LeNet-300-100 (the reference workload of ``t_comp_full``).
LENET_FLOPS_PER_SAMPLE = training_flops_per_sample([i * o for i, o in layer_shapes(LENET_SIZES)])
#: Training FLOPs per sample of LeNet-5.
LENET5_FLOPS_PER_SAMPLE = training_flops_per_sample(lenet5_layer_macs())
#: Training FLOPs per sample of every built-in architecture.
BUILTIN_FLOPS_PER_SAMPLE: dict[str, int] = {
    "lenet-300-100": LENET_FLOPS_PER_SAMPLE,
    "lenet-5": LENET5_FLOPS_PER_SAMPLE,
}


def compute_scale(flops_per_sample: float) -> float:
    """A model's compute time relative to the reference workload of
    ``t_comp_full`` (LeNet-300-100): its training FLOPs per sample over
    LeNet-300-100's, exactly 1.0 for LeNet-300-100 itself (so its system keys
    and times do not change). LeNet-5: 2,263,920 / 1,126,800 = 2.009.

    Raises:
        ValueError: ``flops_per_sample`` is not positive.
    """
    if not flops_per_sample > 0:
        raise ValueError(f"FLOPs per sample {flops_per_sample!r} must be > 0")
    if flops_per_sample == LENET_FLOPS_PER_SAMPLE:
        return 1.0
    return float(flops_per_sample) / float(LENET_FLOPS_PER_SAMPLE)


# -- the models with an autoencoder (HP-FL's pre-training and pruning) --------------------

#: LeNet-5's layers as `Params` shapes ``(fan_in, fan_out)``: a convolution's
#: ``[out, in, kh, kw]`` weight is the ``[in·kh·kw, out]`` matrix
#: (`fedsim.learn.zoo.Layout`): conv1 (25, 6), conv2 (150, 16), fc1 (400, 120),
#: fc2 (120, 84), fc3 (84, 10).
LENET5_SHAPES: tuple[tuple[int, int], ...] = (
    *((c_in * k * k, c_out) for c_in, c_out, k, _, _ in LENET5_CONVS), *layer_shapes(LENET5_DENSE))
#: The convolutional DAE's decoder (`fedsim.learn.conv_dae`): fc 84->120,
#: fc 120->400 (= 16x5x5), transposed conv 16->6 (6x6, stride 2: 5x5 -> 14x14),
#: transposed conv 6->1 (6x6, stride 2, padding 2: 14x14 -> 28x28); a
#: transposed convolution's ``[in, out, kh, kw]`` weight is the ``[in·kh·kw, out]``
#: matrix.
CONV_DAE_DECODER_SHAPES: tuple[tuple[int, int], ...] = ((84, 120), (120, 400), (16 * 6 * 6, 6), (6 * 6 * 6, 1))
#: Encoder layers (= the classifier's body) of each model with an autoencoder:
#: all of LeNet-300-100 (the paper's DAE, code 10), LeNet-5's conv1, conv2,
#: fc1, fc2 (code 84; fc3 is the dense head).
_ENCODERS: dict[str, int] = {"lenet-300-100": ENCODER_LAYERS, "lenet-5": 4}
#: The built-in models that have a denoising autoencoder, hence pre-training and pruning.
AUTOENCODER_ARCHS: tuple[str, ...] = tuple(_ENCODERS)


def classifier_shapes(arch: str) -> tuple[tuple[int, int], ...]:
    """``(fan_in, fan_out)`` of every layer of built-in classifier ``arch``.

    Raises:
        ValueError: ``arch`` has no autoencoder (`AUTOENCODER_ARCHS`).
    """
    if arch not in _ENCODERS:
        raise ValueError(f"model {arch!r} has no autoencoder (only {', '.join(AUTOENCODER_ARCHS)})")
    return layer_shapes(LENET_SIZES) if arch == "lenet-300-100" else LENET5_SHAPES


def encoder_shapes(arch: str) -> tuple[tuple[int, int], ...]:
    """The layers of ``arch`` that its DAE's encoder holds (pruned by IMP)."""
    return classifier_shapes(arch)[: _ENCODERS[arch]]


def head_shapes(arch: str) -> tuple[tuple[int, int], ...]:
    """The layers of ``arch`` after the encoder: θ0, never pruned (none for LeNet-300-100)."""
    return classifier_shapes(arch)[_ENCODERS[arch]:]


def dae_shapes(arch: str) -> tuple[tuple[int, int], ...]:
    """Every layer of ``arch``'s DAE, encoder first (the shapes of a `Ticket`'s Θ0)."""
    if arch == "lenet-300-100":
        return layer_shapes(DAE_SIZES)
    return (*encoder_shapes(arch), *CONV_DAE_DECODER_SHAPES)


def weight_reuse(arch: str | None, num_layers: int) -> tuple[int, ...]:
    """Per layer, the output positions at which each weight acts for one sample
    (its forward MACs / its weights): a convolution's weight at every output
    pixel (LeNet-5: conv1 28x28 = 784, conv2 10x10 = 100), a dense layer's once.
    A FLOP count of a sparse step weighs each layer's surviving weights by it
    (`fedsim.system.payload.flops_fraction` counts each weight once, exact for an
    MLP). 1 for every layer of models other than LeNet-5 (a factory's layers are
    not known here)."""
    if arch == "lenet-5":
        return tuple(m // (i * o) for m, (i, o) in zip(lenet5_layer_macs(), LENET5_SHAPES, strict=True))
    return (1,) * num_layers
