"""What one message weighs and what one round of local training costs.

Both are computed from plain per-layer counts (weights per layer, surviving
weights per layer, biases), never from weight values, so the system stage needs
nothing from the learning core but those integers.

Bytes (the HP-FL paper, Sec. III-B: "the clients download, update, and upload
only the parameter, whose corresponding elements of the mask is 1"):

* values: every surviving weight and every bias at ``value_bits`` bits,
  ``ceil(value_bits * (sum(surviving) + biases) / 8)`` bytes. Biases are never
  pruned, so the sent parameter count is ``sum(surviving) + biases``, not
  ``P_R * |θ|``; for a dense model they coincide (266,610 for LeNet-300-100).
* mask (sparse methods only; a dense model, ``surviving == weights``, has none):
  ``bitmask`` = 1 bit per weight of the full model, ``ceil(sum(weights) / 8)``
  bytes; ``indices`` = each surviving weight's flat index within its layer as a
  fixed-width unsigned integer of ``ceil(log2(layer size))`` bits (at least 1),
  ``ceil(sum_l surviving_l * ceil(log2(weights_l)) / 8)`` bytes. The minimal
  fixed width rather than 32 bits, because it is what an implementation that
  knows the layer shapes would send.
* ``mask_every_round: false``: the server sends the mask once, added to each
  client's download of round 1 (``first_round_extra_bytes``); uploads never
  carry it (the server knows it). ``true``: every message, in both directions,
  carries its mask (a self-describing sparse format).
* ``overhead``: bytes added to every message.
* a compressed upload (``fl.compression``, `fedsim.learn.compression`): the
  upload's values part is what the transform sends,
  ``ceil(CompressionConfig.upload_bits(sent) / 8)`` bytes with ``sent =
  sum(surviving) + biases``: qsgd ``bits x sent + 32`` (the float32 norm),
  topk ``k x (32 + ceil(log2 sent))`` (float32 values and their indices among
  the sent parameters), k = ceil(fraction x sent); the mask (when it travels
  every round) and the overhead are added as to any message. ``value_bits``
  then counts the download only.
* a method plugin's encoding (``upload_bits`` / ``download_bits`` hooks,
  `fedsim.learn.plugins`): the values part of an upload (download) is
  ``ceil(bits(sent) / 8)`` bytes; mask and overhead are added as above.

Compute (paper, Sec. IV-A: t_comp = 10 s for the full model, 10 P_R s for a
subnetwork): the work fraction is P_R (``remaining_rate``) or the FLOP share
(``flops``, see ``flops_fraction``). ``t_comp_full`` is the time of the
paper's reference work, ``REFERENCE_EPOCHS`` (5) local epochs over
``reference_samples`` (400) samples; a client's work is counted in sample
passes (``local_epochs x samples``, see ``work_units``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedsim.system.spec import ComputeSpec, PayloadSpec

if TYPE_CHECKING:
    from fedsim.learn.spec import CompressionConfig

__all__ = [
    "REFERENCE_EPOCHS",
    "Payload",
    "flops_fraction",
    "payload_bytes",
    "remaining_rate",
    "work_fraction",
    "work_units",
]

#: Local epochs of the reference work that ``compute.t_comp_full`` times (the
#: HP-FL paper, Sec. IV-A: 5 epochs over a client's 400 samples).
REFERENCE_EPOCHS = 5


@dataclass(frozen=True)
class Payload:
    """Bytes per message, per client (all ints).

    Attributes:
        down_bytes: one client's download (server -> client) in every round.
        up_bytes: one client's upload (client -> server) in every round.
        first_round_extra_bytes: added to each client's download in round 1 only
            (the one-time mask transfer; 0 when the mask travels every round or
            not at all).
        value_bytes: the values part of a message.
        mask_bytes: one encoded mask (0 for dense models or encoding ``none``).
        overhead_bytes: the per-message overhead.
        sent_params: parameters whose values travel (surviving weights + biases).
        total_params: all parameters of the dense model (weights + biases).
    """

    down_bytes: int
    up_bytes: int
    first_round_extra_bytes: int = 0
    value_bytes: int = 0
    mask_bytes: int = 0
    overhead_bytes: int = 0
    sent_params: int = 0
    total_params: int = 0

    def __post_init__(self) -> None:
        for name in ("down_bytes", "up_bytes", "first_round_extra_bytes"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"Payload.{name} must be >= 0, got {value!r}")

    def down_bytes_in_round(self, round_num: int) -> int:
        """One client's download in round ``round_num`` (1-based)."""
        return self.down_bytes + (self.first_round_extra_bytes if round_num == 1 else 0)

    def up_bytes_in_round(self, round_num: int) -> int:
        """One client's upload in round ``round_num`` (1-based)."""
        return self.up_bytes


def _check_counts(weight_counts: Sequence[int], surviving_counts: Sequence[int], bias_count: int) -> None:
    if len(weight_counts) != len(surviving_counts):
        raise ValueError(
            f"weight_counts has {len(weight_counts)} layers but surviving_counts has "
            f"{len(surviving_counts)}"
        )
    if not weight_counts:
        raise ValueError("weight_counts is empty: a model needs at least one layer")
    for layer, (total, kept) in enumerate(zip(weight_counts, surviving_counts, strict=True)):
        if int(total) != total or int(kept) != kept or not 0 <= kept <= total or total < 1:
            raise ValueError(
                f"layer {layer}: need integers 0 <= surviving ({kept!r}) <= weights ({total!r}), "
                "weights >= 1"
            )
    if int(bias_count) != bias_count or bias_count < 0:
        raise ValueError(f"bias_count must be an integer >= 0, got {bias_count!r}")


def _index_bits(layer_weights: int) -> int:
    """ceil(log2(n)) for n >= 1, at least 1: the fixed width of an index into n slots."""
    return max(1, (int(layer_weights) - 1).bit_length())


def payload_bytes(
    weight_counts: Sequence[int],
    surviving_counts: Sequence[int],
    bias_count: int,
    cfg: PayloadSpec,
    compression: CompressionConfig | None = None,
    *,
    upload_bits: int | None = None,
    download_bits: int | None = None,
) -> Payload:
    """Bytes of one client's download and upload (see the module docstring).

    Args:
        weight_counts: weights per layer of the dense model (LeNet-300-100:
            [235200, 30000, 1000]).
        surviving_counts: weights per layer kept by the method's mask (equal to
            ``weight_counts`` for a dense method).
        bias_count: all biases of the model (never pruned; LeNet: 410).
        cfg: the scenario's ``system.payload`` section.
        compression: the scenario's ``fl.compression`` (None: the upload
            weighs what the download does).
        upload_bits, download_bits: a method plugin's encoding
            (`fedsim.learn.plugins`): the bits of the values part of one
            upload / download, replacing ``value_bits`` x sent values (not
            combined with ``compression``).

    Raises:
        ValueError: mismatched layer counts, surviving > weights, negatives.

    Example: dense LeNet at 32 bits sends 266,610 x 4 = 1,066,440 bytes each way.
    """
    _check_counts(weight_counts, surviving_counts, bias_count)
    total_weights = sum(int(n) for n in weight_counts)
    kept_weights = sum(int(n) for n in surviving_counts)
    sent_params = kept_weights + int(bias_count)
    value_bytes = math.ceil(cfg.value_bits * sent_params / 8)
    dense = all(int(a) == int(b) for a, b in zip(weight_counts, surviving_counts, strict=True))
    if dense or cfg.mask_encoding == "none":
        mask_bytes = 0
    elif cfg.mask_encoding == "bitmask":
        mask_bytes = math.ceil(total_weights / 8)
    else:  # indices
        bits = sum(int(k) * _index_bits(n) for n, k in zip(weight_counts, surviving_counts, strict=True))
        mask_bytes = math.ceil(bits / 8)
    every_message = value_bytes + cfg.overhead + (mask_bytes if cfg.mask_every_round else 0)
    for name, bits in (("upload_bits", upload_bits), ("download_bits", download_bits)):
        if bits is not None and (isinstance(bits, bool) or int(bits) != bits or bits < 0):
            raise ValueError(f"{name} must be an integer >= 0, got {bits!r}")
    if compression is not None:
        upload_bits = compression.upload_bits(sent_params)
    up_bytes = every_message + (0 if upload_bits is None else math.ceil(int(upload_bits) / 8) - value_bytes)
    down_bytes = every_message + (0 if download_bits is None else math.ceil(int(download_bits) / 8) - value_bytes)
    return Payload(
        down_bytes=down_bytes,
        up_bytes=up_bytes,
        first_round_extra_bytes=0 if cfg.mask_every_round else mask_bytes,
        value_bytes=value_bytes,
        mask_bytes=mask_bytes,
        overhead_bytes=cfg.overhead,
        sent_params=sent_params,
        total_params=total_weights + int(bias_count),
    )


def remaining_rate(weight_counts: Sequence[int], surviving_counts: Sequence[int]) -> float:
    """P_R = surviving weights / all weights (biases excluded; paper Sec. III-B)."""
    _check_counts(weight_counts, surviving_counts, 0)
    return sum(int(n) for n in surviving_counts) / sum(int(n) for n in weight_counts)


def flops_fraction(
    weight_counts: Sequence[int], surviving_counts: Sequence[int], bias_count: int
) -> float:
    """Share of a dense training step's FLOPs that the sparse model needs.

    Per sample and fully connected layer l with w_l weights: forward 2 w_l
    (a multiply and an add per weight), backward 2 w_l for the weight gradient
    and 2 w_l for the input gradient, except in the first layer, whose input
    (the image) needs no gradient: the usual 6N of a training step (Kaplan et
    al. 2020, "Scaling laws for neural language models", Sec. 2.1) made exact
    for an MLP. Biases cost 2 each (the add and its gradient). Pruned weights
    cost nothing (a sparse kernel skips them):

        fraction = (sum_l c_l s_l + 2 B) / (sum_l c_l w_l + 2 B),
        c_0 = 4, c_l = 6 for l >= 1,

    with s_l the surviving weights and B the biases. Activations and the
    optimiser step are left out (they are linear in the same counts or smaller).

    Raises:
        ValueError: as ``payload_bytes``.
    """
    _check_counts(weight_counts, surviving_counts, bias_count)
    cost = [4 if layer == 0 else 6 for layer in range(len(weight_counts))]
    sparse = sum(c * int(s) for c, s in zip(cost, surviving_counts, strict=True)) + 2 * int(bias_count)
    dense = sum(c * int(w) for c, w in zip(cost, weight_counts, strict=True)) + 2 * int(bias_count)
    return sparse / dense


def work_fraction(
    cfg: ComputeSpec,
    weight_counts: Sequence[int],
    surviving_counts: Sequence[int],
    bias_count: int,
) -> float:
    """The ``work_fraction`` argument of ``simulate`` for a method's mask:
    P_R when ``cfg.work == "remaining_rate"`` (the paper), ``flops_fraction``
    for ``flops``, and 1 for ``dense`` (a device that trains the masked model
    with dense kernels, so pruning saves it no time)."""
    if cfg.work == "remaining_rate":
        return remaining_rate(weight_counts, surviving_counts)
    if cfg.work == "dense":
        return 1.0
    return flops_fraction(weight_counts, surviving_counts, bias_count)


def work_units(samples: Sequence[int] | np.ndarray, local_epochs: int, reference_samples: int) -> np.ndarray:
    """Each client's local training work in units of the reference work that
    ``t_comp_full`` times: ``local_epochs * samples / (REFERENCE_EPOCHS *
    reference_samples)`` (so 5 epochs over 400 samples is 1).

    What is counted: sample passes, one forward and backward pass of one
    sample, each sample once per epoch. The batch schedule does not change
    that count: an epoch is ``ceil(samples / batch_size)`` steps whose last
    batch is partial and costs what it holds, so batch size only changes the
    number of steps; a step's fixed overhead (and a device's lower efficiency
    on small batches) is not modelled.

    Raises:
        ValueError: ``local_epochs`` or ``reference_samples`` < 1, or a
            negative sample count.
    """
    counts = np.asarray(samples, dtype=float)
    if int(local_epochs) != local_epochs or local_epochs < 1:
        raise ValueError(f"local_epochs must be an integer >= 1, got {local_epochs!r}")
    if int(reference_samples) != reference_samples or reference_samples < 1:
        raise ValueError(f"reference_samples must be an integer >= 1, got {reference_samples!r}")
    if (counts < 0).any():
        raise ValueError("sample counts must be >= 0")
    return counts * float(local_epochs) / float(REFERENCE_EPOCHS * reference_samples)
