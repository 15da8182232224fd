"""Method plugins: a method written outside fedsim, named in a scenario.

A scenario names a plugin as a method ``kind``:

* ``kind: "package.module:object"`` (``object`` may be dotted): the module is
  looked for **in the scenario file's folder first, then on the Python path**
  (``PYTHONPATH``, installed packages; `fedsim.learn.locate`, which finds
  model factories the same way); or
* ``kind: NAME`` registered by an installed package under the entry-point group
  ``fedsim.methods`` (``[project.entry-points."fedsim.methods"] NAME =
  "package.module:object"``), as ``fedsim.models`` does for models.

Validating a scenario checks only the syntax (or that the entry point exists:
package metadata, nothing imported), so ``fedsim validate`` imports no torch.
The module is imported when a run starts (`check_methods`, called by
`fedsim.pipeline.runner.compute` before any stage).

The hook contract (``object`` may be a module, a class, an instance or a
`fedsim.learn.methods.Method`; attributes are read once, at import):

``start(source, cfg, seed) -> Start`` (required)
    The run's starting point: `fedsim.learn.methods.Start` ``(params, mask)``,
    the global model of round 0 (`fedsim.learn.model.Params`) and its
    `fedsim.learn.masks.Mask` (all ones for a dense method; pruned weights are
    zeroed and stay 0 in every client and in the average, and the payload is
    counted from the mask). ``source`` is the pre-training
    `fedsim.learn.pretrain.Ticket` for LeNet-300-100 (``theta0_encoder``,
    ``pretrained``, ``encoder_mask(level)``) and, for any other model, that
    model's own start, a ``Start`` of its initial parameters and a dense
    mask. ``cfg`` is the method's `fedsim.learn.spec.MethodConfig`, ``seed``
    the scenario seed (draw randomness from ``fedsim.seeding.rng(seed, ...)``).
``pruned`` (bool, default False)
    The method takes a pruning level of the ticket (``level`` or
    ``remaining_rate`` in the scenario, resolved by
    `fedsim.learn.methods.level_of`), as ``hp-fl`` does.
``iterations`` (int >= 0, default 0)
    Pre-training (IMP) iterations a dense method needs from the ticket.
``compression``, ``server``, ``proximal_mu`` (default None)
    The method's own training settings (a dict or a
    `fedsim.learn.spec.CompressionConfig` / ``ServerConfig``; a float >= 0),
    used where the scenario's ``methods.<label>`` does not set them; over the
    scenario's ``fl.*`` (`fedsim.learn.methods.effective_fl`).
``version`` (str or int, optional)
    Joins the method's cache key: bump it when any hook changes, since
    fedsim does not hash the plugin's code.

Code hooks (optional; any of them routes the method's training through
`fedsim.learn.aggregation`, ``fl.hooks``). Vectors are float32 over the
model's N parameters in `fedsim.learn.compression.flatten` order (weights
then bias of layer 0, then of layer 1, ...); pruned weights are 0 in every
update and are zeroed again after the aggregate:

``transform(delta, state, client_id) -> (sent, new_state)``
    The client-update transform (compression): ``delta`` ``[N]`` is client
    ``client_id``'s update ``θ_k - θ``, ``state`` its own state from the last
    round it took part in (a tensor, or None the first time), ``sent`` ``[N]``
    what it uploads (the server aggregates exactly that), ``new_state`` its
    state for next time (a tensor of any shape and dtype, e.g. error-feedback
    memory, or None to keep none). States are saved in every checkpoint
    (`fedsim.learn.aggregation.MethodState`), so a resumed run is
    bit-identical. A hook that also declares keyword parameters ``seed``
    and/or ``round_num`` gets the scenario seed and the 1-based round: draw
    randomness from ``fedsim.seeding.torch_seed(seed, ..., client_id,
    round_num)`` so that a resumed run draws the same. The built-ins (qsgd,
    top-k: `fedsim.learn.compression.builtin_transform`) are such hooks.
    Excludes ``compression`` (scenario or plugin).
``aggregate(params, deltas, weights, server_state) -> (new_params, new_server_state)``
    Replaces FedAvg's weighted mean and the server step: ``params`` ``[N]``
    the round's global model, ``deltas`` ``[K, N]`` the K participants'
    ``sent`` updates, ``weights`` ``[K]`` FedAvg's ``n_k / Σ n``,
    ``server_state`` a dict of tensors (``{}`` in round 1), checkpointed
    like the transform's. Returns the new global model ``[N]`` (the mask is
    re-applied to it) and the new state. The built-in is
    `fedsim.learn.server_opt.ServerAggregate` (FedAvg, FedAvgM, FedAdam).
    Excludes ``server`` (scenario or plugin).
``upload_bits(sent_params) -> int`` and ``download_bits(sent_params) -> int``
    The payload encoding: the bits of the values part of one upload
    (download) for a model whose update carries ``sent_params`` values
    (surviving weights + biases); the mask (where it travels) and
    ``system.payload.overhead`` are added as to any message
    (`fedsim.system.payload.payload_bytes`). Without them a message weighs
    what ``system.payload`` says. ``upload_bits`` excludes ``compression``.

Hooks must not change their arguments in place (a copy of ``state`` and of
``server_state`` is passed; the others are the round's own tensors). A
method with code hooks cannot be ``asynchronous``.

Errors: a module that cannot be imported, a missing object, an object
without a callable ``start`` or with a bad attribute is an `InputError`
naming ``methods.<label>.kind`` and the module (exit 2, before any stage);
a code hook that is not callable, or that clashes with a setting
(``compression``, ``server``, ``asynchronous``), is an `InputError` too.
A ``start`` that raises, or returns something other than a ``Start`` whose
mask fits its params, and a code hook that raises or returns something
malformed, is a `MethodHookError` naming the method and module (exit 1;
stages already cached, checkpoints included, are kept).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.errors import InputError
from fedsim.learn.locate import import_target
from fedsim.learn.spec import FACTORY_SYNTAX, CompressionConfig, ServerConfig

if TYPE_CHECKING:
    from fedsim.config import Scenario
    from fedsim.learn.methods import Method

#: Entry-point group of method plugins (``kind: NAME``).
METHOD_ENTRY_POINTS = "fedsim.methods"

#: The optional code hooks a plugin may define (module docstring).
CODE_HOOKS = ("transform", "aggregate", "upload_bits", "download_bits")

#: Plugins imported in this process, by kind.
_LOADED: dict[str, Method] = {}


class MethodHookError(RuntimeError):
    """A plugin's hook failed at run time (exit 1): a bug in the plugin, not bad input."""


def entry_point_names() -> list[str]:
    """Names under ``fedsim.methods`` (package metadata; nothing imported)."""
    return sorted(ep.name for ep in entry_points(group=METHOD_ENTRY_POINTS))


def is_plugin_syntax(kind: str) -> bool:
    """True when ``kind`` reads ``package.module:object``."""
    return FACTORY_SYNTAX.fullmatch(kind) is not None


def target_of(kind: str) -> str:
    """``package.module:object`` of a plugin kind (an entry point's value).

    Raises:
        ValueError: neither the syntax nor an entry point's name.
    """
    if is_plugin_syntax(kind):
        return kind
    for ep in entry_points(group=METHOD_ENTRY_POINTS):
        if ep.name == kind:
            return ep.value
    raise ValueError(f"no method {kind!r} under entry points {METHOD_ENTRY_POINTS!r}")


def load(kind: str, base_dir: Path | None = None) -> Method:
    """The plugin ``kind`` as a `fedsim.learn.methods.Method` (imported once per
    process; later calls return the first import).

    Raises:
        ValueError: the module cannot be imported (its error quoted), the
            object is missing, has no callable ``start`` or a bad attribute;
            each message names the module.
    """
    if kind in _LOADED:
        return _LOADED[kind]
    target = target_of(kind)
    module_name = target.partition(":")[0]
    obj = import_target(target, base_dir)  # the scenario's folder first (fedsim.learn.locate)
    method = as_method(kind, obj, module_name)
    _LOADED[kind] = method
    return method


def as_method(kind: str, obj: Any, module_name: str) -> Method:
    """``obj``'s hooks (module docstring) as a `Method` named ``kind``.

    Raises:
        ValueError: no callable ``start``, or a bad ``pruned``, ``iterations``,
            ``compression``, ``server``, ``proximal_mu`` or ``version``, or
            a code hook (`CODE_HOOKS`) that is not callable.
    """
    from fedsim.learn.methods import Method

    start = getattr(obj, "start", None)
    if not callable(start):
        raise ValueError(f"{kind!r} in module {module_name!r} has no callable start(source, cfg, seed) "
                         f"hook (a {type(obj).__name__}; see fedsim.learn.plugins)")
    pruned = getattr(obj, "pruned", False)
    iterations = getattr(obj, "iterations", 0)
    if not isinstance(pruned, bool):
        raise ValueError(f"{kind!r} in module {module_name!r}: pruned={pruned!r} is not a bool")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise ValueError(f"{kind!r} in module {module_name!r}: iterations={iterations!r} is not an int >= 0")
    mu = getattr(obj, "proximal_mu", None)
    if mu is not None and (isinstance(mu, bool) or not isinstance(mu, int | float) or not 0 <= mu < float("inf")):
        raise ValueError(f"{kind!r} in module {module_name!r}: proximal_mu={mu!r} is not a number >= 0")
    version = getattr(obj, "version", None)
    if version is not None and (isinstance(version, bool) or not isinstance(version, str | int)):
        raise ValueError(f"{kind!r} in module {module_name!r}: version={version!r} is not a str or int")
    settings = {}
    for name, cls in (("compression", CompressionConfig), ("server", ServerConfig)):
        value = getattr(obj, name, None)
        try:
            settings[name] = value if value is None or isinstance(value, cls) else cls.model_validate(value)
        except Exception as exc:  # pydantic's ValidationError, or a TypeError for a non-mapping
            raise ValueError(f"{kind!r} in module {module_name!r}: {name}={value!r} is not a "
                             f"{cls.__name__} ({str(exc).splitlines()[0]})") from None
    hooks = {}
    for name in CODE_HOOKS:
        hook = getattr(obj, name, None)
        if hook is not None and not callable(hook):
            raise ValueError(f"{kind!r} in module {module_name!r}: {name}={hook!r} is not callable "
                             "(see fedsim.learn.plugins)")
        hooks[name] = hook
    fn = start if not isinstance(obj, Method) else obj.fn
    return Method(kind, fn, pruned, iterations, compression=settings["compression"],
                  server=settings["server"], proximal_mu=None if mu is None else float(mu),
                  module=module_name, version=version, **hooks)


def check_methods(scenario: Scenario, base_dir: Path | None) -> None:
    """Import every plugin of ``scenario`` and check it against its method
    sections: what validation left for the run's start (module docstring).

    Raises:
        InputError: naming ``methods.<label>.kind`` (and the module) for an
            import or hook problem, ``methods.<label>`` for a level choice, a
            pre-training need or a model the plugin does not fit.
    """
    from fedsim.learn import methods
    from fedsim.learn.spec import check_level_choice

    for label, method in scenario.methods.items():
        if not methods.is_plugin(method.kind):
            continue
        try:
            entry = load(method.kind, base_dir)
        except ValueError as exc:
            raise InputError(f"methods.{label}.kind: {exc}") from None
        try:
            check_level_choice(method, entry.pruned, methods.pruned_names())
            needed = methods.required_iterations(method, scenario.pretrain, scenario.model.autoencoder)
            scenario.model.check_method(method.kind, needed > 0 or entry.pruned)
        except ValueError as exc:
            raise InputError(f"methods.{label}: {exc} (plugin module {entry.module!r})") from None
        clash = _hook_clash(entry, methods.effective_fl(scenario.fl, method), method)
        if clash:
            raise InputError(f"methods.{label}: {clash} (plugin module {entry.module!r})")
        if needed > 0 and scenario.data.unlabeled == 0:
            raise InputError(f"methods.{label}: method {method.kind!r} pre-trains on the unlabeled "
                             "pool, but data.unlabeled is 0")


def _hook_clash(entry: Method, fl: Any, method: Any) -> str | None:
    """Why ``entry``'s code hooks do not combine with its effective settings ``fl``, or None."""
    if (entry.transform is not None or entry.upload_bits is not None) and fl.compression is not None:
        hook = "transform" if entry.transform is not None else "upload_bits"
        return (f"method {method.kind!r} has its own {hook} hook and cannot also take "
                f"compression {fl.compression.kind!r} (from the method, the plugin or fl.compression)")
    if entry.aggregate is not None and fl.server is not None:
        return (f"method {method.kind!r} has its own aggregate hook and cannot also take a server "
                f"optimiser {fl.server.optimizer!r} (from the method, the plugin or fl.server)")
    if entry.has_hooks and method.asynchronous is not None:
        return f"method {method.kind!r} has code hooks, which asynchronous aggregation does not run"
    return None


def forget() -> None:
    """Drop the imported plugins (tests; the modules stay in ``sys.modules``)."""
    _LOADED.clear()
