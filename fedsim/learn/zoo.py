"""Classifiers as ``torch.nn.Module``: the built-ins, factories, and their layout as `Params`.

A scenario's ``model:`` section (`fedsim.learn.spec.ModelConfig`) names a
built-in (``lenet-300-100``, ``lenet-5``), an entry point of the group
``fedsim.models``, or a factory ``"package.module:function"``; `resolve`
turns it into a `ModelSpec` when a run starts (never at validation, which must
not import torch), checking on the way that the factory imports, is callable,
returns an ``nn.Module`` without buffers, that takes the data's samples and
whose output has one logit per class (one dummy forward pass of 2 samples).
A sample's shape as the model takes it is ``model.input_shape``, by default
the data's own (`default_input_shape`: ``[1, 28, 28]`` for MNIST); the
factory's module is looked for in the scenario's folder first
(`fedsim.learn.locate`).

The rest of fedsim (masks, FedAvg, checkpoints, payload counts) works on
`Params`: one ``[fan_in, fan_out]`` weight and one ``[fan_out]`` bias per
layer. A module is mapped onto that by its `Layout`: every submodule's
``weight`` of shape ``[out, *rest]`` becomes a layer with fan_out = ``out`` and
fan_in = ``prod(rest)`` (``weight.reshape(out, -1).T``: for ``nn.Linear``
exactly the Keras layout of `fedsim.learn.model`; a convolution
``[out, in, kh, kw]`` becomes ``[in·kh·kw, out]``, a norm layer's ``[n]`` weight
``[1, n]``), paired with the submodule's ``bias``. A weight without a bias gets
a zero bias that is never trained (it is counted in payloads as biases are;
say so when it matters). Parameters named otherwise, and buffers (BatchNorm's
running statistics), are refused: the batched trainer has no state besides
the parameters.

LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document
recognition"; the common modern variant): conv 6@5x5 (padding 2) - ReLU -
max-pool 2 - conv 16@5x5 - ReLU - max-pool 2 - fc 120 - ReLU - fc 84 - ReLU -
fc 10; 61,706 parameters (`fedsim.learn.counts.lenet5_num_params`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import torch
from torch import Tensor, nn

from fedsim import seeding
from fedsim.errors import InputError
from fedsim.learn.counts import (
    BUILTIN_FLOPS_PER_SAMPLE,
    LENET_SIZES,
    REFERENCE_ARCH,
    compute_scale,
    training_flops_per_sample,
)
from fedsim.learn.locate import import_target
from fedsim.learn.model import Params
from fedsim.learn.spec import MODEL_ENTRY_POINTS, ModelConfig

#: The shape one sample is given to a model in, unless ``model.input_shape`` says otherwise.
DEFAULT_INPUT_SHAPE: tuple[int, ...] = (1, 28, 28)
#: Classes of the built-in datasets (MNIST, Fashion-MNIST).
NUM_CLASSES = LENET_SIZES[-1]


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 images (see the module docstring); takes ``[N, 1, 28, 28]``."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


def _lenet_300_100() -> nn.Module:
    from fedsim.learn.reference import LeNet

    return LeNet()


#: Built-in factories by ``arch``.
BUILTINS: dict[str, Callable[[], nn.Module]] = {"lenet-300-100": _lenet_300_100, "lenet-5": LeNet5}


# -- the layout: module parameters <-> Params ----------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One layer of a module's `Params` view: its weight's name and shape, its
    bias's name (None: a zero bias that is never trained)."""

    weight: str
    shape: tuple[int, ...]
    bias: str | None

    @property
    def fan_out(self) -> int:
        return self.shape[0]

    @property
    def fan_in(self) -> int:
        return math.prod(self.shape[1:])


@dataclass(frozen=True)
class Layout:
    """How a module's named parameters map onto `Params` layers (see the module docstring)."""

    slots: tuple[Slot, ...]

    @classmethod
    def of(cls, module: nn.Module, where: str = "model") -> Layout:
        """The layout of ``module``.

        Raises:
            InputError: buffers, a parameter other than ``weight``/``bias``, a
                bias without a weight or of another size than the weight's fan_out.
        """
        buffers = [name for name, _ in module.named_buffers()]
        if buffers:
            raise InputError(f"{where}: the model has buffers ({', '.join(buffers[:3])}; e.g. "
                             "BatchNorm's running statistics), which the batched trainer does not "
                             "support; use GroupNorm/LayerNorm or no normalisation")
        slots = []
        for prefix, sub in module.named_modules():
            own = dict(sub.named_parameters(recurse=False))
            dot = f"{prefix}." if prefix else ""
            other = sorted(set(own) - {"weight", "bias"})
            if other:
                raise InputError(f"{where}: parameter {dot}{other[0]} is neither a 'weight' nor a "
                                 "'bias'; fedsim maps a model onto (weight, bias) layers")
            if "weight" not in own:
                if "bias" in own:
                    raise InputError(f"{where}: {dot}bias has no weight beside it")
                continue
            shape = tuple(own["weight"].shape)
            bias = own.get("bias")
            if bias is not None and tuple(bias.shape) != shape[:1]:
                raise InputError(f"{where}: {dot}bias of shape {tuple(bias.shape)} does not match "
                                 f"{dot}weight {shape}")
            slots.append(Slot(f"{dot}weight", shape, f"{dot}bias" if bias is not None else None))
        if not slots:
            raise InputError(f"{where}: the model has no parameters")
        return cls(tuple(slots))

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """``(fan_in, fan_out)`` of every layer (the shapes of its `Params` and `Mask`)."""
        return tuple((s.fan_in, s.fan_out) for s in self.slots)

    def to_params(self, named: dict[str, Tensor], lead: tuple[int, ...] = ()) -> Params:
        """`Params` of named module tensors with leading dims ``lead`` (``(K,)``
        for stacked clients); weights become ``[*lead, fan_in, fan_out]`` copies."""
        weights, biases = [], []
        for s in self.slots:
            w = named[s.weight]
            weights.append(w.reshape(*lead, s.fan_out, s.fan_in).transpose(-1, -2).contiguous())
            biases.append(named[s.bias].clone() if s.bias is not None
                          else torch.zeros(*lead, s.fan_out, dtype=w.dtype, device=w.device))
        return Params(tuple(weights), tuple(biases))

    def to_named(self, params: Params) -> dict[str, Tensor]:
        """Inverse of `to_params` (new tensors; untrained zero biases dropped).

        Raises:
            ValueError: ``params`` has other layer shapes.
        """
        if params.shapes != self.shapes:
            raise ValueError(f"parameters of layer shapes {params.shapes} for a model of {self.shapes}")
        out: dict[str, Tensor] = {}
        for s, w, b in zip(self.slots, params.weights, params.biases, strict=True):
            lead = tuple(w.shape[:-2])
            out[s.weight] = w.transpose(-1, -2).reshape(*lead, *s.shape).contiguous()
            if s.bias is not None:
                out[s.bias] = b.clone()
        return out

    def mask_tensors(self, layers: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Per-layer ``[fan_in, fan_out]`` masks as float tensors shaped like the
        module's weights, for the layers that prune anything."""
        return {s.weight: m.t().reshape(s.shape).to(torch.float32)
                for s, m in zip(self.slots, layers, strict=True) if not bool(m.all())}


# -- a resolved model ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A classifier ready to train: its name, a template module holding θ0 (on
    the CPU), the input shape of one sample, its layout and FLOPs.

    Attributes:
        name: the arch or the factory, for messages.
        module: the module; `functional_call` runs it with other parameters.
        input_shape: shape of one sample as the module takes it.
        layout: module parameters <-> `Params`.
        flops_per_sample: training FLOPs of one sample
            (`fedsim.learn.counts.training_flops_per_sample`).
        reference: True for LeNet-300-100, which the hand-written kernel trains.
    """

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    layout: Layout
    flops_per_sample: int
    reference: bool = False

    @property
    def compute_scale(self) -> float:
        """Compute time relative to LeNet-300-100 (`fedsim.learn.counts.compute_scale`)."""
        return compute_scale(self.flops_per_sample)

    def initial_params(self) -> Params:
        """θ0: the template's parameters as `Params` (a copy)."""
        return self.layout.to_params({k: v.detach() for k, v in self.module.named_parameters()})

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """Logits of the model with ``params`` on ``x [N, ...]``: any layout of
        ``prod(input_shape)`` values per sample (flat rows, the data's sample
        shape), viewed as ``[N, *input_shape]``."""
        named = self.layout.to_named(params)
        return torch.func.functional_call(self.module, named, (x.reshape(-1, *self.input_shape),))


def spec_from_module(module: nn.Module, input_shape: tuple[int, ...], *, name: str = "model",
                     reference: bool = False) -> ModelSpec:
    """A `ModelSpec` of an existing module (its parameters are θ0); FLOPs are
    counted with one forward pass (`count_macs`).

    Raises:
        InputError: see `Layout.of`.
    """
    layout = Layout.of(module, name)
    flops = training_flops_per_sample(count_macs(module, input_shape))
    return ModelSpec(name, module, tuple(input_shape), layout, flops, reference)


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    """Forward multiply-accumulates of one sample per ``nn.Linear`` / ``nn.Conv*``
    layer, in call order, measured with forward hooks on one zero sample: a
    dense layer costs ``in · out``, a convolution ``output elements · in/groups ·
    kernel size``. Other layers (norms, attention products) are not counted."""
    macs: list[int] = []

    def hook(layer: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(layer, nn.Linear):
            macs.append(layer.in_features * layer.out_features * (output.numel() // output.shape[-1]))
        else:
            kernel = math.prod(layer.weight.shape[1:])  # in/groups x kernel
            macs.append(output.numel() * kernel)

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return macs


def _load_factory(cfg: ModelConfig, base_dir: Path | None = None) -> tuple[Callable[..., nn.Module], str]:
    """The callable ``cfg`` names and the key path to blame when it fails. A
    factory's module is looked for in ``base_dir`` (the scenario's folder)
    first, then on the Python path, as a method plugin's is
    (`fedsim.learn.locate.import_target`)."""
    if cfg.factory is None and cfg.arch in BUILTINS:
        return BUILTINS[cfg.arch], f"model.arch {cfg.arch!r}"
    if cfg.factory is not None:
        where, target = "model.factory", cfg.factory
    else:
        eps = [ep for ep in entry_points(group=MODEL_ENTRY_POINTS) if ep.name == cfg.arch]
        if not eps:
            raise InputError(f"model.arch: no model {cfg.arch!r} under entry points {MODEL_ENTRY_POINTS!r}")
        where, target = f"model.arch ({MODEL_ENTRY_POINTS} entry point {cfg.arch!r})", eps[0].value
    module_name = target.partition(":")[0]
    try:
        obj = import_target(target, base_dir)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    if not callable(obj):
        raise InputError(f"{where}: {target!r} in module {module_name!r} is not callable "
                         f"(a {type(obj).__name__})")
    return obj, f"{where} {target!r}"  # type: ignore[return-value]


def default_input_shape(sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a model takes one sample of ``sample_shape`` in, unless
    ``model.input_shape`` says otherwise: `DEFAULT_INPUT_SHAPE` ``[1, 28, 28]``
    for samples of 784 values (MNIST-like, as before any other shape was
    taken); a 2-D sample ``(H, W)`` as one channel ``[1, H, W]`` (what
    ``nn.Conv2d`` takes); any other shape as it is (``[3, 32, 32]``, ``[20]``)."""
    shape = tuple(int(d) for d in sample_shape)
    if math.prod(shape) == LENET_SIZES[0]:
        return DEFAULT_INPUT_SHAPE
    return (1, *shape) if len(shape) == 2 else shape


def resolve(cfg: ModelConfig, seed: int, num_classes: int = NUM_CLASSES,
            sample_size: int = LENET_SIZES[0], *, sample_shape: tuple[int, ...] | None = None,
            data: str | None = None, base_dir: Path | None = None) -> ModelSpec:
    """Build the model ``cfg`` names, with θ0 drawn under the seed of
    ``(seed, "init", "module")``, and check it against the data.

    The module is built inside ``torch.random.fork_rng`` seeded from that key:
    its constructor draws from torch's global generator as usual, and the
    caller's generator state is restored afterwards.

    Args:
        cfg: the scenario's ``model`` section.
        seed: the scenario seed.
        num_classes: classes of the dataset (the model's output size).
        sample_size: values per sample in the dataset (784 for 28x28 images);
            ignored when ``sample_shape`` is given.
        sample_shape: shape of one sample in the dataset (``(28, 28)``,
            ``(3, 32, 32)``); the model's input shape defaults from it
            (`default_input_shape`).
        data: the data in messages (``"data.npz '/path/d.npz'"``); default
            "the dataset".
        base_dir: the scenario's folder, where a factory's module is looked
            for first (`fedsim.learn.locate`).

    Raises:
        InputError: ``model.input_shape`` does not hold ``sample_size``
            values; the factory cannot be imported, is not callable, raises,
            returns no ``nn.Module``, has buffers or unnamed parameters, its
            forward pass on ``[2, *input_shape]`` zeros fails (naming the model
            and the data) or is not ``[2, num_classes]``; each message names the
            key (``model.factory``) and the module.
    """
    if sample_shape is not None:
        sample_size = math.prod(sample_shape)
    shape_text = "x".join(map(str, sample_shape or (sample_size,)))
    reference = cfg.is_reference
    input_shape = ((LENET_SIZES[0],) if reference
                   else tuple(cfg.input_shape or default_input_shape(sample_shape or (sample_size,))))
    if math.prod(input_shape) != sample_size:
        held = (f"the dataset's samples hold {sample_size}" if data is None
                else f"the samples of {data} hold {sample_size} ({shape_text})")
        raise InputError(f"model.input_shape: {list(input_shape)} holds {math.prod(input_shape)} values; {held}")
    factory, where = _load_factory(cfg, base_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.torch_seed(seed, "init", "module"))  # scoped to this block
        try:
            module = factory(**cfg.kwargs)
        except Exception as exc:  # user code
            raise InputError(f"{where}: building the model failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(module, nn.Module):
        raise InputError(f"{where}: returned a {type(module).__name__}, not a torch.nn.Module")
    module = module.float()
    layout = Layout.of(module, where)
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *input_shape))
    except Exception as exc:  # user code
        raise InputError(f"{where} and {data or 'the dataset'} do not fit: a forward pass on input "
                         f"[2, {', '.join(map(str, input_shape))}] (the data's {shape_text} samples) failed "
                         f"({type(exc).__name__}: {exc}); fix the model or set model.input_shape") from None
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, num_classes):
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise InputError(f"{where}: output {shape} for 2 samples; the dataset has {num_classes} "
                         f"classes, so expected [2, {num_classes}]")
    name = cfg.name
    if cfg.factory is None and cfg.arch in BUILTIN_FLOPS_PER_SAMPLE:
        flops = BUILTIN_FLOPS_PER_SAMPLE[cfg.arch]
    else:
        flops = training_flops_per_sample(count_macs(module, input_shape))
    return ModelSpec(name, module, input_shape, layout, flops, reference=reference and name == REFERENCE_ARCH)
