"""The networks of the paper as plain tensors: LeNet-300-100 and its DAE.

A model here is a `Params`: one weight matrix and one bias vector per dense
layer. Weights are stored ``[fan_in, fan_out]`` and a layer computes
``x @ W + b`` (Keras's layout, the transpose of ``nn.Linear.weight``), so that
the batched trainer can stack clients as ``[K, fan_in, fan_out]`` and call
``torch.bmm`` without transposes.

* LeNet-300-100 (paper, Sec. IV-A2): 784-300-100-10, ReLU, ReLU, softmax
  (the softmax lives in the loss): 266,610 parameters.
* The DAE (paper, Sec. III-B and IV-A2): encoder = the LeNet with a linear last
  layer, decoder 10-100-300-784 with ReLU, ReLU, sigmoid. Its first three layers
  are exactly the classifier's, so the classifier's θ0 is the encoder part of
  the DAE's Θ0 and all methods share it.

Initialisation (the paper does not state it; see DESIGN.md):

* ``glorot_uniform`` (default, Keras's Dense): W ~ U(±sqrt(6 / (fan_in + fan_out))),
  b = 0.
* ``pytorch_default`` (``nn.Linear.reset_parameters``): Kaiming-uniform with
  a = sqrt(5), i.e. W ~ U(±1/sqrt(fan_in)), and b ~ U(±1/sqrt(fan_in)).

Both draw from ``fedsim.seeding.torch_generator(seed, "init")``, layer by layer,
weight then bias, so Θ0 is a function of the seed alone.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from fedsim import seeding

# The sizes are plain arithmetic, defined without torch so that validating a
# scenario does not import it; re-exported here under their historical names.
from fedsim.learn.counts import (  # noqa: F401
    DAE_SIZES,
    ENCODER_LAYERS,
    LENET_NUM_PARAMS,
    LENET_SIZES,
    layer_shapes,
)

Init = Literal["glorot_uniform", "pytorch_default"]
INITS: tuple[str, ...] = ("glorot_uniform", "pytorch_default")
Device = str | torch.device


def resolve_device(device: Device = "auto") -> torch.device:
    """Map ``"auto" | "cpu" | "cuda" | "cuda:N"`` to a ``torch.device``.

    ``auto`` picks CUDA when it is available, the CPU otherwise.

    Raises:
        ValueError: an unknown device name, or ``cuda`` on a machine without CUDA.
    """
    name = str(device) if isinstance(device, torch.device) else str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        return torch.device(name)
    raise ValueError(f"device {device!r}: expected one of auto, cpu, cuda")


def device_name(device: torch.device) -> str:
    """What ran the computation, for provenance: the GPU's name, or the CPU
    architecture and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class Params:
    """Weights and biases of a stack of dense layers.

    ``weights[i]`` is ``[..., fan_in, fan_out]`` and ``biases[i]`` is
    ``[..., fan_out]``, float32. The leading ``...`` is empty for one model and
    ``[K]`` for K stacked client models (the input of `fedavg`).
    """

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(self.weights))
        object.__setattr__(self, "biases", tuple(self.biases))
        if len(self.weights) != len(self.biases):
            raise ValueError(
                f"{len(self.weights)} weight matrices but {len(self.biases)} bias vectors"
            )
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.dim() < 2 or b.shape != w.shape[:-2] + w.shape[-1:]:
                raise ValueError(
                    f"layer {i}: weight shape {tuple(w.shape)} and bias shape "
                    f"{tuple(b.shape)} do not match ([..., in, out] and [..., out])"
                )

    @property
    def num_layers(self) -> int:
        return len(self.weights)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """``(fan_in, fan_out)`` of every layer."""
        return tuple((int(w.shape[-2]), int(w.shape[-1])) for w in self.weights)

    @property
    def num_params(self) -> int:
        """Parameter count of one model (weights and biases)."""
        return sum(i * o + o for i, o in self.shapes)

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def tensors(self) -> Iterator[Tensor]:
        """Weight and bias of layer 0, then of layer 1, ..."""
        for w, b in zip(self.weights, self.biases, strict=True):
            yield w
            yield b

    def layers(self, start: int, stop: int | None = None) -> Params:
        """The sub-stack of layers ``start:stop`` (views, no copy)."""
        return Params(self.weights[start:stop], self.biases[start:stop])

    def to(self, device: Device) -> Params:
        return Params(
            tuple(w.to(device) for w in self.weights), tuple(b.to(device) for b in self.biases)
        )

    def clone(self) -> Params:
        """A deep copy with contiguous tensors."""
        return Params(
            tuple(w.detach().clone().contiguous() for w in self.weights),
            tuple(b.detach().clone().contiguous() for b in self.biases),
        )

    def equal(self, other: Params) -> bool:
        """Bit-for-bit equality (shapes and values)."""
        return self.shapes == other.shapes and all(
            a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
            for a, b in zip(self.tensors(), other.tensors(), strict=True)
        )

    def max_abs_diff(self, other: Params) -> float:
        """Largest absolute difference of any parameter."""
        return max(
            float((a.cpu().double() - b.cpu().double()).abs().max())
            for a, b in zip(self.tensors(), other.tensors(), strict=True)
        )

    def to_numpy(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Arrays named ``{prefix}w{i}`` / ``{prefix}b{i}`` (for ``np.savez``)."""
        out: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"{prefix}w{i}"] = w.detach().cpu().numpy()
            out[f"{prefix}b{i}"] = b.detach().cpu().numpy()
        return out

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile, prefix: str = "") -> Params:
        """Inverse of `to_numpy`."""
        weights, biases = [], []
        i = 0
        while f"{prefix}w{i}" in arrays:
            weights.append(torch.from_numpy(np.array(arrays[f"{prefix}w{i}"], dtype=np.float32)))
            biases.append(torch.from_numpy(np.array(arrays[f"{prefix}b{i}"], dtype=np.float32)))
            i += 1
        if not weights:
            raise ValueError(f"no arrays named {prefix}w0, {prefix}b0, ... found")
        return cls(tuple(weights), tuple(biases))


def init_params(
    sizes: Sequence[int], init: Init, generator: torch.Generator
) -> Params:
    """Random initial parameters of an MLP with widths ``sizes``.

    Args:
        sizes: layer widths, input first (e.g. `LENET_SIZES`).
        init: ``glorot_uniform`` or ``pytorch_default`` (see the module docstring).
        generator: the CPU torch generator to draw from, layer by layer, weight
            then bias.

    Raises:
        ValueError: an unknown ``init``.
    """
    if init not in INITS:
        raise ValueError(f"init {init!r}: expected one of {', '.join(INITS)}")
    weights, biases = [], []
    for fan_in, fan_out in layer_shapes(sizes):
        w = torch.empty(fan_in, fan_out, dtype=torch.float32)
        b = torch.empty(fan_out, dtype=torch.float32)
        if init == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w.uniform_(-limit, limit, generator=generator)
            b.zero_()
        else:
            # kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in)
            limit = 1.0 / math.sqrt(fan_in)
            w.uniform_(-limit, limit, generator=generator)
            b.uniform_(-limit, limit, generator=generator)
        weights.append(w)
        biases.append(b)
    return Params(tuple(weights), tuple(biases))


def init_dae(init: Init, seed: int) -> Params:
    """Θ0 of the DAE (6 layers), drawn from ``torch_generator(seed, "init")``.

    The first `ENCODER_LAYERS` layers are the classifier's θ0 (see `encoder`).
    """
    return init_params(DAE_SIZES, init, seeding.torch_generator(seed, "init"))


def encoder(dae: Params) -> Params:
    """The encoder (= LeNet-300-100) part of DAE parameters, as a copy."""
    if dae.shapes[:ENCODER_LAYERS] != layer_shapes(LENET_SIZES):
        raise ValueError(f"not DAE parameters: layer shapes {dae.shapes}")
    return dae.layers(0, ENCODER_LAYERS).clone()


def as_inputs(images: Tensor | np.ndarray) -> Tensor:
    """Samples as float32 ``[N, *sample_shape]`` in [0, 1] (always a new tensor).

    ``uint8`` pixels are divided by 255; floating inputs are taken as already
    scaled. Samples of 784 values (``[N, 28, 28]``, ``[N, 1, 28, 28]``) become
    the flat rows ``[N, 784]`` that LeNet-300-100 and its kernel take, as
    always; any other sample shape (``[N, 3, 32, 32]``, ``[N, 20]``) is kept,
    for the models that view it as their ``input_shape``
    (`fedsim.learn.zoo.ModelSpec.forward`).

    Raises:
        ValueError: fewer than 2 dimensions, or an empty sample shape.
    """
    shape = tuple(images.shape)
    if len(shape) < 2 or math.prod(shape[1:]) == 0:
        raise ValueError(f"samples of shape {shape}: expected [N, *sample_shape] (e.g. [N, 28, 28] or "
                         "[N, 3, 32, 32])")
    target = (shape[0], LENET_SIZES[0]) if math.prod(shape[1:]) == LENET_SIZES[0] else shape
    if isinstance(images, np.ndarray):  # convert in numpy: read-only arrays stay untouched
        flat = images.reshape(target)
        if flat.dtype == np.uint8:
            return torch.from_numpy(flat.astype(np.float32) / np.float32(255.0))
        return torch.from_numpy(np.array(flat, dtype=np.float32))
    x = images.reshape(target)
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32, copy=True).contiguous()


def as_labels(labels: Tensor | np.ndarray) -> Tensor:
    """Class labels as an int64 tensor ``[N]`` (always a new tensor)."""
    if isinstance(labels, np.ndarray):
        return torch.from_numpy(np.array(labels, dtype=np.int64).reshape(-1))
    return labels.to(torch.int64, copy=True).reshape(-1)


def logits(params: Params, x: Tensor) -> Tensor:
    """Classifier output (pre-softmax) of LeNet-style ``params`` on ``x [N, in]``:
    ReLU after every layer but the last."""
    h = x
    last = params.num_layers - 1
    for i, (w, b) in enumerate(zip(params.weights, params.biases, strict=True)):
        h = torch.addmm(b, h, w)
        if i < last:
            h = h.relu_()
    return h


@torch.no_grad()
def evaluate(
    params: Params, inputs: Tensor, labels: Tensor, batch_size: int = 10_000,
    forward: Callable[[Params, Tensor], Tensor] | None = None,
) -> tuple[float, float]:
    """Test accuracy and mean cross-entropy loss (nats) of a classifier.

    Args:
        params: a single (unstacked) classifier.
        inputs: float32 ``[N, *sample_shape]`` on the device of ``params``
            (``[N, 784]`` for the MLP `logits`; any shape ``forward`` takes).
        labels: int64 ``[N]``.
        batch_size: rows per forward pass (memory only; results do not depend on it
            beyond float rounding of the loss sum, accumulated in float64).
        forward: ``forward(params, x) -> logits`` of the model; default: the
            MLP `logits` (``fedsim.learn.zoo.ModelSpec.forward`` for any other).

    Returns:
        ``(accuracy in [0, 1], loss)``.
    """
    n = int(inputs.shape[0])
    if n == 0:
        raise ValueError("cannot evaluate on an empty test set")
    correct = 0
    loss_sum = 0.0
    for start in range(0, n, batch_size):
        x = inputs[start : start + batch_size]
        y = labels[start : start + batch_size]
        z = (forward or logits)(params, x)
        correct += int((z.argmax(dim=1) == y).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(z, y, reduction="sum").double())
    return correct / n, loss_sum / n
