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
``(ticket, method_cfg, seed) -> Start`` with ``@register(name)``, or, outside
fedsim, write a plugin (``kind: "package.module:object"`` or an entry point
of ``fedsim.methods``; the hook contract is in `fedsim.learn.plugins`).

A method also says how it trains: its effective ``compression``, ``server``
and ``proximal_mu`` (FedProx) are the method section's, else the plugin's
defaults, else the scenario's ``fl.*`` (`effective_fl`, the one lookup that
training, the cache keys and the system stage's byte count all use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from fedsim import seeding
from fedsim.learn import plugins

# The registry (names, which kinds prune, required_iterations) is read when a
# scenario is validated, which must not import torch (docs/performance.md):
# the modules that need tensors are imported inside the method functions.
if TYPE_CHECKING:
    from fedsim.learn.masks import Mask
    from fedsim.learn.model import Params
    from fedsim.learn.pretrain import Ticket
    from fedsim.learn.spec import (
        CompressionConfig,
        FLConfig,
        MethodConfig,
        PretrainConfig,
        ServerConfig,
    )


class Start(NamedTuple):
    """Where a FL run starts: the global model of round 0 and its mask."""

    params: Params
    mask: Mask


MethodFn = Callable[["Ticket", "MethodConfig", int], Start]


@dataclass(frozen=True)
class Method:
    """A registered method or a loaded plugin: its start function, whether it
    prunes (takes a level), how many pre-training iterations a dense method
    needs, its default training settings (None: the scenario's), and for a
    plugin its module (messages), ``version`` (cache key) and optional code
    hooks ``transform``, ``aggregate``, ``upload_bits``, ``download_bits``
    (contract: `fedsim.learn.plugins`; run by `fedsim.learn.aggregation` and
    `fedsim.pipeline.stages.payload_and_work`)."""

    name: str
    fn: MethodFn
    pruned: bool
    iterations: int = 0
    compression: CompressionConfig | None = None
    server: ServerConfig | None = None
    proximal_mu: float | None = None
    module: str | None = None
    version: str | int | None = None
    transform: Callable[..., Any] | None = None
    aggregate: Callable[..., Any] | None = None
    upload_bits: Callable[[int], int] | None = None
    download_bits: Callable[[int], int] | None = None

    @property
    def has_hooks(self) -> bool:
        """True when the plugin brings code for training or bytes (not only a start)."""
        return any(h is not None for h in (self.transform, self.aggregate, self.upload_bits,
                                           self.download_bits))

    def start(self, source: Any, cfg: MethodConfig, seed: int) -> Start:
        """The start hook (`fedsim.learn.plugins`): so a `Method` is a plugin too."""
        return self.fn(source, cfg, seed)


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


def is_plugin(kind: str) -> bool:
    """True when ``kind`` names a plugin, not a registered method:
    ``"package.module:object"`` or a ``fedsim.methods`` entry point (nothing
    is imported)."""
    return kind not in _REGISTRY and (plugins.is_plugin_syntax(kind) or kind in plugins.entry_point_names())


def get(name: str) -> Method:
    """The method registered as ``name``, or the plugin it names (imported on
    first use from the Python path; `fedsim.learn.plugins.check_methods`
    imports a run's plugins first, from the scenario's folder too).

    Raises:
        ValueError: unknown name (the message lists the choices), or a plugin
            that cannot be loaded (naming its module).
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if is_plugin(name):
        return plugins.load(name)
    raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(names())}, or a plugin "
                     f"\"package.module:object\" or entry point of {plugins.METHOD_ENTRY_POINTS!r}")


#: The training settings a method may set for itself (`effective_fl`).
TRAINING_FIELDS = ("compression", "server", "proximal_mu")


def effective_fl(fl: FLConfig, method: MethodConfig) -> FLConfig:
    """The ``fl`` section ``method`` trains with: each of `TRAINING_FIELDS`
    from the method's section, else its plugin's default, else ``fl``'s own.

    The one lookup of these settings: training (`fedsim.pipeline.training`),
    the train and system keys (`fedsim.pipeline.keys`) and the bytes the system
    stage counts (`fedsim.pipeline.stages.payload_and_work`) all call it, so
    the bytes a report counts are those of the update the training used. A
    method that sets none of them gets ``fl`` itself (its keys are unchanged).
    A plugin with code hooks (`Method.has_hooks`) also sets ``fl.hooks`` to
    its kind, which routes training through its hooks
    (`fedsim.learn.aggregation`).

    Raises:
        ValueError: ``method.kind`` is a plugin that cannot be loaded.
    """
    entry = get(method.kind)
    changes = {}
    for name in TRAINING_FIELDS:
        value = getattr(method, name)
        if value is None:
            value = getattr(entry, name)
        if value is not None and value != getattr(fl, name):
            changes[name] = value
    if entry.has_hooks:
        changes["hooks"] = method.kind
    return fl.model_copy(update=changes) if changes else fl


def build(method: MethodConfig, source: Any, *, seed: int) -> Start:
    """The starting weights and mask of ``method``; ``source`` is the
    pre-training ticket (LeNet-300-100) or, for a plugin on another model,
    that model's own `Start` (`fedsim.learn.plugins`).

    Raises:
        ValueError: an unknown method, or a level/rate the ticket does not hold
            (the message lists the available levels).
        MethodHookError: a plugin's start hook raised or returned something
            other than a `Start` whose mask fits its parameters (names the
            method and module).
    """
    entry = get(method.kind)
    if entry.module is None:
        return entry.fn(source, method, seed)
    what = f"method {method.kind!r} (module {entry.module!r}): start hook"
    try:
        start = entry.fn(source, method, seed)
    except Exception as exc:  # a plugin runs arbitrary code; KeyboardInterrupt passes
        raise plugins.MethodHookError(f"{what} raised {type(exc).__name__}: {exc}") from exc
    from fedsim.learn.masks import Mask
    from fedsim.learn.model import Params

    if not (isinstance(start, tuple) and len(start) == 2
            and isinstance(start[0], Params) and isinstance(start[1], Mask)):
        raise plugins.MethodHookError(f"{what} returned a {type(start).__name__}, not a "
                                      "Start(params: Params, mask: Mask)")
    try:
        start[1].check(start[0])
    except ValueError as exc:
        raise plugins.MethodHookError(f"{what}: its mask does not fit its params ({exc})") from None
    return Start(*start)


def level_of(method: MethodConfig, ticket: Ticket) -> int:
    """The pruning level a pruning ``method`` asks for, resolved on ``ticket``."""
    if method.level is not None:
        ticket.encoder_mask(method.level)  # raises when the ticket lacks it
        return method.level
    if method.remaining_rate is None:
        raise ValueError(f"method {method.kind!r} needs a remaining_rate or a level")
    return ticket.level_for_rate(method.remaining_rate)


def required_iterations(method: MethodConfig, pretrain: PretrainConfig, arch: str | None = None) -> int:
    """How many IMP iterations a run of ``method`` needs (0 for ``original``).
    ``arch``: the model with the autoencoder (`fedsim.learn.spec.ModelConfig.autoencoder`;
    None: LeNet-300-100), whose layer shapes give the P_R of each level.

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
    for level, rate in iter_expected_levels(pretrain, arch or "lenet-300-100"):
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
