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

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from fedsim.schema import Section

PositiveInt = Annotated[int, Field(strict=True, ge=1)]


class ModelConfig(Section):
    """The classifier: architecture and initialisation.

    Attributes:
        arch: only ``lenet-300-100`` (784-300-100-10, 266,610 parameters).
        init: ``glorot_uniform`` (Keras's default, the paper's likely one) or
            ``pytorch_default`` (Kaiming-uniform a=√5, uniform biases).
    """

    arch: Literal["lenet-300-100"] = "lenet-300-100"
    init: Literal["glorot_uniform", "pytorch_default"] = "glorot_uniform"


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


class FLConfig(Section):
    """Local training of every client in a FedAvg round (paper, Sec. IV-A2).

    Attributes:
        lr: SGD learning rate (no momentum, no weight decay).
        batch_size: mini-batch size; the last batch of an epoch may be partial.
        local_epochs: passes over the client's data per round.
        eval_batch_size: test rows per forward pass (memory/speed only).
    """

    lr: Annotated[float, Field(gt=0.0)] = 0.1
    batch_size: PositiveInt = 60
    local_epochs: PositiveInt = 5
    eval_batch_size: PositiveInt = 10_000


class MethodConfig(Section):
    """Which initial weights and mask a FL run starts from.

    Attributes:
        kind: a registered method (`fedsim.learn.methods`): ``original``,
            ``pretrained``, ``hp-fl``, ``random-pruning``, ``hp-fl-pretrained``.
        remaining_rate: P_R of the IMP level to use, in (0, 1] (pruning kinds only).
        level: the IMP level (0 = dense) to use (pruning kinds only).

    A pruning kind needs exactly one of ``remaining_rate`` and ``level``; the
    other kinds accept neither.
    """

    kind: str = "original"
    remaining_rate: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    level: Annotated[int, Field(strict=True, ge=0)] | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        from fedsim.learn import methods  # the registry imports this module

        method = methods.get(self.kind)
        chosen = [name for name in ("remaining_rate", "level") if getattr(self, name) is not None]
        if method.pruned:
            if len(chosen) != 1:
                raise ValueError(
                    f"method {self.kind!r} needs exactly one of remaining_rate, level"
                    + (f" (got both: {self.remaining_rate!r}, {self.level!r})" if chosen else "")
                )
        elif chosen:
            raise ValueError(
                f"method {self.kind!r} is dense: {chosen[0]}={getattr(self, chosen[0])!r} "
                f"applies only to {', '.join(methods.pruned_names())}"
            )
        return self
