"""The FL methods compared in the paper (Sec. IV-A3), as a registry.

A method turns the pre-training `Ticket` into the classifier's starting point:
initial weights and a mask. All of them share θ0, the encoder part of the
DAE's Θ0:

* ``original``: θ0, dense ("original FL without pre-training and pruning");
* ``pretrained``: the DAE encoder after the first training step, dense ("FL
  with pre-training");
* ``hp-fl``: the IMP mask m of a level on θ0, i.e. m ⊙ θ0, the *initial*
  weights (paper, Sec. III-B: "we use the subnetwork f(x, m ⊙ θ0)");
* ``random-pruning``: a uniformly random mask with the same per-layer counts as
  that level, drawn from ``seeding.rng(seed, "random-mask", level)``, on θ0.

Pruning kinds name their level by ``level`` or by ``remaining_rate`` (matched
to a level within 0.005). Adding a method: decorate a function
``(ticket, method_cfg, seed) -> Start`` with ``@register(name)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from fedsim import seeding

# The registry (names, which kinds prune, required_iterations) is read when a
# scenario is validated, which must not import torch (docs/performance.md):
# the modules that need tensors are imported inside the method functions.
if TYPE_CHECKING:
    from fedsim.learn.masks import Mask
    from fedsim.learn.model import Params
    from fedsim.learn.pretrain import Ticket
    from fedsim.learn.spec import MethodConfig, PretrainConfig


class Start(NamedTuple):
    """Where a FL run starts: the global model of round 0 and its mask."""

    params: Params
    mask: Mask


MethodFn = Callable[["Ticket", "MethodConfig", int], Start]


@dataclass(frozen=True)
class Method:
    """A registered method: its function, whether it prunes (takes a level), and
    how many pre-training iterations a dense method needs."""

    name: str
    fn: MethodFn
    pruned: bool
    iterations: int = 0


_REGISTRY: dict[str, Method] = {}


def register(name: str, *, pruned: bool = False, iterations: int = 0) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register ``fn`` as method ``name``.

    Args:
        pruned: the method takes a pruning level (``level`` / ``remaining_rate``).
        iterations: pre-training iterations a dense method needs (a pruning
            method needs its level's).

    Raises:
        ValueError: ``name`` is taken.
    """

    def decorate(fn: MethodFn) -> MethodFn:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        _REGISTRY[name] = Method(name, fn, pruned, iterations)
        return fn

    return decorate


def names() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def pruned_names() -> list[str]:
    """Names of the methods that take a pruning level."""
    return sorted(n for n, m in _REGISTRY.items() if m.pruned)


def get(name: str) -> Method:
    """The method registered as ``name``.

    Raises:
        ValueError: unknown name; the message lists the choices.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(names())}") from None


def build(method: MethodConfig, ticket: Ticket, *, seed: int) -> Start:
    """The starting weights and mask of ``method``.

    Raises:
        ValueError: an unknown method, or a level/rate the ticket does not hold
            (the message lists the available levels).
    """
    return get(method.kind).fn(ticket, method, seed)


def level_of(method: MethodConfig, ticket: Ticket) -> int:
    """The pruning level a pruning ``method`` asks for, resolved on ``ticket``."""
    if method.level is not None:
        ticket.encoder_mask(method.level)  # raises when the ticket lacks it
        return method.level
    if method.remaining_rate is None:
        raise ValueError(f"method {method.kind!r} needs a remaining_rate or a level")
    return ticket.level_for_rate(method.remaining_rate)


def required_iterations(method: MethodConfig, pretrain: PretrainConfig) -> int:
    """How many IMP iterations a run of ``method`` needs (0 for ``original``).

    With layer-wise pruning the P_R of every level is known in advance, so a
    ``remaining_rate`` maps to its level without training; with global pruning
    it is not, and the answer is ``pretrain.iterations`` (all of them). The
    levels are walked one pruning step at a time and only until the rate is
    passed or stops changing, so the cost does not grow with
    ``pretrain.iterations``.

    Raises:
        ValueError: a ``level``, or a dense method's needs, beyond
            ``pretrain.iterations``; a remaining rate no level up to
            ``pretrain.iterations`` matches (the message lists them).
    """
    from fedsim.learn.counts import RATE_TOLERANCE, iter_expected_levels

    entry = get(method.kind)
    if not entry.pruned:
        if entry.iterations > pretrain.iterations:
            raise ValueError(f"method {method.kind!r} needs pretrain.iterations >= "
                             f"{entry.iterations} (got {pretrain.iterations})")
        return entry.iterations
    if method.level is not None:
        if method.level > pretrain.iterations:
            raise ValueError(f"level {method.level} is beyond pretrain.iterations "
                             f"{pretrain.iterations}; raise pretrain.iterations or lower the level")
        return method.level
    if pretrain.scope != "layerwise":
        return pretrain.iterations
    target = float(method.remaining_rate)
    seen: list[tuple[int, float]] = []
    for level, rate in iter_expected_levels(pretrain):
        if abs(rate - target) < RATE_TOLERANCE:
            return level
        stuck = bool(seen) and rate == seen[-1][1]
        seen.append((level, rate))
        if level == pretrain.iterations or rate < target - RATE_TOLERANCE or stuck:
            break  # rates only fall: no later level matches
    listed = [f"{rate:.4f} (level {k})" for k, rate in seen]
    if len(listed) > 12:
        listed = [*listed[:6], "...", *listed[-6:]]
    raise ValueError(f"no pruning level up to pretrain.iterations {pretrain.iterations} has "
                     f"remaining_rate {method.remaining_rate!r}; available: {', '.join(listed)}")


@register("original")
def original(ticket: Ticket, method: MethodConfig, seed: int) -> Start:
    """θ0, dense."""
    from fedsim.learn.masks import Mask

    theta0 = ticket.theta0_encoder
    return Start(theta0, Mask.dense_like(theta0))


@register("pretrained", iterations=1)
def pretrained(ticket: Ticket, method: MethodConfig, seed: int) -> Start:
    """The DAE encoder after the first training step, dense."""
    from fedsim.learn.masks import Mask

    if ticket.pretrained is None:
        raise ValueError("method 'pretrained' needs a ticket with at least 1 pre-training iteration")
    params = ticket.pretrained.clone()
    return Start(params, Mask.dense_like(params))


@register("hp-fl", pruned=True)
def hp_fl(ticket: Ticket, method: MethodConfig, seed: int) -> Start:
    """m ⊙ θ0 with the IMP mask m of the chosen level."""
    mask = ticket.encoder_mask(level_of(method, ticket))
    return Start(mask.apply(ticket.theta0_encoder), mask)


@register("hp-fl-pretrained", pruned=True)
def hp_fl_pretrained(ticket: Ticket, method: MethodConfig, seed: int) -> Start:
    """m ⊙ θ_pre: the IMP mask of the chosen level on the encoder after the
    first DAE training step (instead of HP-FL's reset to θ0). An alternative
    reading of the paper's Protocol 2, for `reports/paper/`."""
    if ticket.pretrained is None:
        raise ValueError("method 'hp-fl-pretrained' needs a ticket with at least 1 pre-training iteration")
    mask = ticket.encoder_mask(level_of(method, ticket))
    return Start(mask.apply(ticket.pretrained), mask)


@register("random-pruning", pruned=True)
def random_pruning(ticket: Ticket, method: MethodConfig, seed: int) -> Start:
    """A random mask with the chosen level's per-layer counts, on θ0."""
    from fedsim.learn.masks import random_like

    level = level_of(method, ticket)
    mask = random_like(ticket.encoder_mask(level), seeding.rng(seed, "random-mask", level))
    return Start(mask.apply(ticket.theta0_encoder), mask)
