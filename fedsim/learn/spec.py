"""Config sections of the learning stages; every default is the paper's.

Paper, Sec. IV-A2: LeNet-300-100; local SGD lr 0.1, batch 60, 5 epochs;
DAE with Gaussian noise N(0.5, 0.25) clipped to [0, 1], Adam lr 1e-3, batch
100, 100 epochs per training step, MSE; pruning rate 20 % per iteration.
The number of IMP iterations (10 gives P_R = 0.8^10 = 0.107) and the reading of
0.25 as a variance are ours (see DESIGN.md).

Sections are strict and frozen (`fedsim.schema.Section`); range errors quote
the bad value.
"""

from __future__ import annotations

import math
import re
from importlib.metadata import entry_points
from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from fedsim.learn.counts import AUTOENCODER_ARCHS, BUILTIN_ARCHS, REFERENCE_ARCH
from fedsim.schema import Section
from fedsim.system.async_spec import AsyncConfig

PositiveInt = Annotated[int, Field(strict=True, ge=1)]


class ModelConfig(Section):
    """The classifier: a built-in architecture, an entry point, or a factory.

    Attributes:
        arch: a built-in (``lenet-300-100``: 784-300-100-10, 266,610 parameters,
            trained by the hand-written kernel; ``lenet-5``: the LeNet-5 CNN,
            61,706 parameters) or a name registered under the entry-point group
            ``fedsim.models`` (a factory, as below).
        factory: ``"package.module:function"`` returning a ``torch.nn.Module``
            (called with ``kwargs``); replaces ``arch``. Only its syntax is
            checked here: the module is imported, and its output size checked,
            when a run starts (`fedsim.learn.zoo.resolve`), so that validating
            a scenario imports no torch.
        kwargs: keyword arguments of the factory (of an entry point too).
        input_shape: the shape one sample is given to the model in (default:
            the data's sample shape, a 2-D ``[H, W]`` as ``[1, H, W]``, and
            ``[1, 28, 28]`` for 784-value samples such as MNIST's,
            `fedsim.learn.zoo.default_input_shape`; LeNet-300-100 takes the
            flat 784 pixels).
        init: ``glorot_uniform`` (Keras's default, the paper's likely one) or
            ``pytorch_default`` (Kaiming-uniform a=√5, uniform biases), for
            ``lenet-300-100``; other models keep their module's own
            initialisation, drawn under a seed of (seed, "init").
    """

    arch: str = "lenet-300-100"
    init: Literal["glorot_uniform", "pytorch_default"] = "glorot_uniform"
    factory: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    input_shape: tuple[PositiveInt, ...] | None = None

    @model_validator(mode="after")
    def _check_model(self) -> Self:
        if self.factory is not None:
            if "arch" in self.model_fields_set:
                raise ValueError(f"model: give arch ({self.arch!r}) or factory ({self.factory!r}), not both")
            if not FACTORY_SYNTAX.fullmatch(self.factory):
                raise ValueError(f"model.factory: {self.factory!r} is not \"package.module:function\"")
        elif self.arch not in BUILTIN_ARCHS and self.arch not in entry_point_names():
            raise ValueError(f"model.arch: unknown architecture {self.arch!r}; choose one of: "
                             f"{', '.join([*BUILTIN_ARCHS, *entry_point_names()])} "
                             "(or give model.factory: \"package.module:function\")")
        elif self.arch in BUILTIN_ARCHS and self.kwargs:
            raise ValueError(f"model.kwargs: the built-in {self.arch!r} takes no arguments "
                             f"(got {sorted(self.kwargs)})")
        if self.is_reference and self.input_shape not in (None, (784,)):
            raise ValueError(f"model.input_shape: lenet-300-100 takes [784], got {list(self.input_shape)}")
        return self

    @property
    def name(self) -> str:
        """The model's name in messages: the arch, or the factory."""
        return self.factory if self.factory is not None else self.arch

    @property
    def is_reference(self) -> bool:
        """True for LeNet-300-100, the hand-written kernel's model (with the
        paper's MLP DAE; which models have a DAE at all: `autoencoder`)."""
        return self.factory is None and self.arch == REFERENCE_ARCH

    @property
    def autoencoder(self) -> str | None:
        """The built-in whose denoising autoencoder pre-trains and prunes this
        model (`fedsim.learn.counts.AUTOENCODER_ARCHS`: lenet-300-100's MLP DAE,
        lenet-5's convolutional one), or None (factories, entry points)."""
        return self.arch if self.factory is None and self.arch in AUTOENCODER_ARCHS else None

    def check_method(self, kind: str, needs_autoencoder: bool) -> None:
        """Refuse a method that needs the model's autoencoder (pre-training,
        pruning: HP-FL's DAE has the classifier's body as its encoder) on a
        model that has none (`autoencoder` is None: a factory or entry point).

        Raises:
            ValueError: naming the method and the model.
        """
        if needs_autoencoder and self.autoencoder is None:
            raise ValueError(f"method {kind!r} needs an autoencoder whose encoder is the classifier's "
                             f"body (pre-training and pruning), which model {self.name!r} does not have "
                             f"(only {', '.join(AUTOENCODER_ARCHS)} have one); use method 'original'")


#: ``package.module:function`` (dotted Python names on both sides).
FACTORY_SYNTAX = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
#: Entry-point group of model factories (``arch: NAME``).
MODEL_ENTRY_POINTS = "fedsim.models"


def entry_point_names() -> list[str]:
    """Names registered under the ``fedsim.models`` entry-point group (reading
    the installed packages' metadata; nothing is imported)."""
    return sorted(ep.name for ep in entry_points(group=MODEL_ENTRY_POINTS))


class PretrainConfig(Section):
    """HP-FL pre-training (paper, Protocol 2): DAE training and iterative pruning.

    Attributes:
        noise_mean: mean of the Gaussian input noise (added, then clipped to [0, 1]).
        noise_var: its spread, read according to ``noise_scale``.
        noise_scale: ``variance`` (default: std = sqrt(noise_var) = 0.5) or ``std``
            (std = noise_var = 0.25).
        lr: Adam learning rate.
        batch_size: DAE mini-batch size.
        epochs: epochs per training step (every IMP iteration).
        iterations: IMP iterations (train, prune, reset); level k has P_R ≈ 0.8^k.
        prune_fraction: share of the surviving weights pruned per iteration.
        scope: ``layerwise`` (every layer loses ``prune_fraction`` of its own
            survivors) or ``global`` (one magnitude ranking over all layers).
    """

    noise_mean: float = 0.5
    noise_var: Annotated[float, Field(ge=0.0)] = 0.25
    noise_scale: Literal["variance", "std"] = "variance"
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    batch_size: PositiveInt = 100
    epochs: PositiveInt = 100
    iterations: Annotated[int, Field(strict=True, ge=0)] = 10
    prune_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    scope: Literal["layerwise", "global"] = "layerwise"

    @property
    def noise_std(self) -> float:
        """Standard deviation of the input noise."""
        return self.noise_var**0.5 if self.noise_scale == "variance" else self.noise_var


class CompressionConfig(Section):
    """A client-update transform (`fedsim.learn.compression`): what a client
    uploads is the compressed update, the server aggregates exactly that, and
    the system stage counts exactly its bits (`upload_bits`).

    Attributes:
        kind: ``qsgd`` (stochastic uniform quantisation, Alistarh et al. 2017)
            or ``topk`` (top-k sparsification with error feedback, Stich et
            al. 2018).
        bits: qsgd only, 2..16: bits per value (1 sign bit + ``bits - 1``
            bits of level, s = 2^(bits-1) - 1 levels).
        norm: qsgd only: the scale the levels divide, ``max`` (max |v_i|,
            QSGD's experiments' choice; the default) or ``l2`` (||v||_2, the
            paper's analysis).
        fraction: topk only, in (0, 1]: the share k/n of the n sent
            parameters (surviving weights + biases) uploaded, k = ceil(fraction n).
    """

    kind: Literal["qsgd", "topk"]
    bits: Annotated[int, Field(strict=True, ge=2, le=16)] | None = None
    norm: Literal["max", "l2"] = "max"
    fraction: Annotated[float, Field(gt=0.0, le=1.0)] | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        needed, foreign = ("bits", "fraction") if self.kind == "qsgd" else ("fraction", "bits")
        if getattr(self, needed) is None:
            raise ValueError(f"compression kind {self.kind!r} needs {needed}")
        if getattr(self, foreign) is not None:
            raise ValueError(f"compression kind {self.kind!r} takes no {foreign} "
                             f"(got {getattr(self, foreign)!r})")
        if self.kind == "topk" and "norm" in self.model_fields_set:
            raise ValueError(f"compression kind 'topk' takes no norm (got {self.norm!r})")
        return self

    @property
    def levels(self) -> int:
        """qsgd's s = 2^(bits-1) - 1 magnitude levels (127 at 8 bits)."""
        assert self.bits is not None
        return (1 << (self.bits - 1)) - 1

    def kept_values(self, sent_params: int) -> int:
        """Values one upload carries: all ``sent_params`` (qsgd), or
        k = ceil(fraction x sent_params), at least 1 (topk)."""
        if self.kind == "qsgd":
            return int(sent_params)
        assert self.fraction is not None
        return max(1, min(int(sent_params), math.ceil(self.fraction * int(sent_params) - 1e-9)))

    def upload_bits(self, sent_params: int) -> int:
        """Bits of one compressed update of ``sent_params`` values (the mask
        and the per-message overhead excluded):

        * qsgd: ``bits`` per value + one float32 norm, ``bits n + 32``;
        * topk: k float32 values + k indices of ceil(log2 n) bits each (the
          position among the n sent parameters, which the server can map
          since it knows the mask), ``k (32 + ceil(log2 n))``.
        """
        n = int(sent_params)
        if self.kind == "qsgd":
            assert self.bits is not None
            return self.bits * n + 32
        return self.kept_values(n) * (32 + max(1, (n - 1).bit_length()))


class ServerConfig(Section):
    """The server's step on the averaged update Δ = Σ_k p_k Δ_k (Reddi et al.
    2021, "Adaptive Federated Optimization", Algorithm 2; FedAvgM: Hsu et al.
    2019). See `fedsim.learn.server_opt`.

    Attributes:
        optimizer: ``fedavg`` (θ + lr Δ), ``fedavgm`` (server momentum) or
            ``fedadam``.
        lr: the server learning rate η.
        momentum: fedavgm's β: v = β v + Δ, θ = θ + η v.
        beta1, beta2, tau: fedadam's β1, β2 and adaptivity τ:
            m = β1 m + (1-β1) Δ, v = β2 v + (1-β2) Δ², θ = θ + η m / (√v + τ).
    """

    optimizer: Literal["fedavg", "fedavgm", "fedadam"] = "fedavg"
    lr: Annotated[float, Field(gt=0.0)] = 1.0
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.99
    tau: Annotated[float, Field(gt=0.0)] = 1e-3


class FLConfig(Section):
    """Local training of every client in a FedAvg round (paper, Sec. IV-A2).

    Attributes:
        lr: SGD learning rate (no momentum, no weight decay).
        batch_size: mini-batch size; the last batch of an epoch may be partial.
        local_epochs: passes over the client's data per round.
        eval_batch_size: test rows per forward pass (memory/speed only).
        compression: the client-update transform (None: the update is sent
            exactly, today's FedAvg); changes training and upload bytes.
        server: the server optimiser (None: FedAvg, θ = Σ_k p_k θ_k).
        proximal_mu: FedProx's μ >= 0 (Li et al., "Federated Optimization in
            Heterogeneous Networks", MLSys 2020): every local step minimises
            the loss + μ/2 ||w - w_global||², i.e. the gradient gains
            μ (w - w_global); 0 (the default) is FedAvg, with no extra work.

        hooks: not a scenario setting: the kind of the method plugin whose
            code hooks (transform, aggregate, upload/download bits;
            `fedsim.learn.plugins`) this training and its bytes run, set by
            `fedsim.learn.methods.effective_fl` (a scenario that sets it is
            refused).

    A method may override ``compression``, ``server`` and ``proximal_mu`` for
    itself (`MethodConfig`; `fedsim.learn.methods.effective_fl`).
    """

    lr: Annotated[float, Field(gt=0.0)] = 0.1
    batch_size: PositiveInt = 60
    local_epochs: PositiveInt = 5
    eval_batch_size: PositiveInt = 10_000
    compression: CompressionConfig | None = None
    server: ServerConfig | None = None
    proximal_mu: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    hooks: str | None = None

    @model_validator(mode="after")
    def _no_hooks(self) -> Self:
        # effective_fl sets it with model_copy, which does not validate; only a scenario lands here
        if self.hooks is not None:
            raise ValueError(f"hooks={self.hooks!r} is set by a method plugin's code hooks, not in a "
                             "scenario; name the plugin as methods.<label>.kind")
        return self

    @property
    def plain_fedavg(self) -> bool:
        """True when the round is today's FedAvg: no compression, no server
        step, no plugin code hooks."""
        return self.compression is None and self.hooks is None and (self.server is None or (
            self.server.optimizer == "fedavg" and self.server.lr == 1.0))


class MethodConfig(Section):
    """Which initial weights and mask a FL run starts from, and the training
    settings that differ from the scenario's for this method.

    Attributes:
        kind: a registered method (`fedsim.learn.methods`): ``original``,
            ``pretrained``, ``hp-fl``, ``random-pruning``, ``hp-fl-pretrained``;
            or a plugin (`fedsim.learn.plugins`): ``"package.module:object"``
            or a name under the entry-point group ``fedsim.methods``. A
            plugin's syntax is checked here; it is imported when a run starts.
        remaining_rate: P_R of the IMP level to use, in (0, 1] (pruning kinds only).
        level: the IMP level (0 = dense) to use (pruning kinds only).
        compression, server, proximal_mu: this method's ``fl.compression``,
            ``fl.server`` and ``fl.proximal_mu`` (None: the plugin's default,
            else the scenario's); see `fedsim.learn.methods.effective_fl`.

    A pruning kind needs exactly one of ``remaining_rate`` and ``level``; the
    other kinds accept neither (a plugin's are checked when it is imported).
    """

    kind: str = "original"
    remaining_rate: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    level: Annotated[int, Field(strict=True, ge=0)] | None = None
    compression: CompressionConfig | None = None
    server: ServerConfig | None = None
    proximal_mu: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    asynchronous: AsyncConfig | None = None  # FedBuff instead of synchronous rounds (fedsim.system.async_spec)

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        from fedsim.learn import methods  # the registry imports this module

        if methods.is_plugin(self.kind):
            return self  # checked against the plugin's hooks when it is imported
        method = methods.get(self.kind)
        check_level_choice(self, method.pruned, methods.pruned_names())
        return self


def check_level_choice(method: MethodConfig, pruned: bool, pruned_kinds: list[str]) -> None:
    """A pruning kind needs exactly one of ``remaining_rate`` and ``level``, a
    dense one neither.

    Raises:
        ValueError: quoting the values given.
    """
    chosen = [name for name in ("remaining_rate", "level") if getattr(method, name) is not None]
    if pruned:
        if len(chosen) != 1:
            raise ValueError(
                f"method {method.kind!r} needs exactly one of remaining_rate, level"
                + (f" (got both: {method.remaining_rate!r}, {method.level!r})" if chosen else "")
            )
    elif chosen:
        raise ValueError(
            f"method {method.kind!r} is dense: {chosen[0]}={getattr(method, chosen[0])!r} "
            f"applies only to {', '.join(pruned_kinds)}"
        )
