"""The pre-training and system stages: load from the cache, or compute and
save; plus what every stage shares (the device to compute on, reading an
entry that may not decode). The training stage is in `fedsim.pipeline.training`.

Each stage is idempotent: when its entry (`fedsim.pipeline.keys`) is in the
cache it is read, not recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim import cost, store
from fedsim.config import Scenario
from fedsim.learn.masks import Mask
from fedsim.learn.model import resolve_device
from fedsim.learn.pretrain import Ticket, initial_dae, pretrain
from fedsim.learn.spec import MethodConfig
from fedsim.pipeline.data import Data
from fedsim.pipeline.keys import pretrain_key, system_key
from fedsim.pipeline.policy import DEFAULT_POLICY, RunPolicy
from fedsim.progress import Progress
from fedsim.store.artifacts import SYSTEM_FILES, TICKET
from fedsim.system import payload as system_payload
from fedsim.system.sim import SystemResult, load_result, save_result, simulate

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- shared


def not_cached(what: str) -> Exception:
    """The `InputError` of a ``--cached-only`` run that lacks ``what``."""
    from fedsim.errors import InputError

    return InputError(f"{what} is not in the cache, and --cached-only computes nothing")


def compute_device(device: torch.device, what: str) -> torch.device:
    """``device`` once ``what`` (a stage missing from the cache) must run on it.

    Raises:
        InputError: ``device`` is CUDA and this machine has none.
    """
    from fedsim.errors import InputError

    try:
        return resolve_device(str(device))
    except ValueError as exc:
        raise InputError(f"{what} is not in the cache and must be computed on {device.type}: {exc}. "
                         "Run it where that device is, or choose another with --device "
                         "(a different device is a different cache entry).") from None


def read_entry(entry: store.CacheEntry, what: str, read: Callable[[], Any]) -> Any | None:
    """``read()`` of a sealed cache entry, or None when its content cannot be
    decoded although its checksums match (written so by a bug, or by another
    version): then the entry is removed, with a warning naming it, so that the
    stage is recomputed once instead of failing on every run.

    Any exception but an interrupt counts as undecodable: decoding arbitrary
    bytes can raise anything (``zipfile.BadZipFile``, ``pickle.UnpicklingError``,
    ``EOFError``, pyarrow's errors, a ``KeyError`` for a missing array...)."""
    try:
        return read()
    except Exception as exc:  # see the docstring
        log.warning("%s cache entry %s cannot be decoded (%s: %s); removing it and recomputing",
                    what, entry.path, type(exc).__name__, exc)
        entry.clear()
        return None


# --------------------------------------------------------------------------- pre-training


def cached_ticket(entry: store.CacheEntry, policy: RunPolicy) -> Ticket | None:
    """The ticket in ``entry``, or None (none, damaged, or ``policy.force``:
    then the entry is removed)."""
    if policy.force:
        entry.clear()
        return None
    if entry.valid():
        return read_entry(entry, "pre-training", lambda: Ticket.load(entry.path / TICKET))
    if entry.manifest() is not None:
        log.warning("pre-training cache entry %s is corrupt; recomputing", entry.path)
    return None


def save_ticket(entry: store.CacheEntry, ticket: Ticket) -> None:
    """Replace ``entry``'s ticket with ``ticket`` (unsealed while it is written)."""
    entry.unseal()
    ticket.save(entry.file(TICKET))
    entry.seal([TICKET], {"iterations": ticket.iterations})


def pretrain_stage(scenario: Scenario, data: Data, iterations: int, device: torch.device, *,
                   policy: RunPolicy = DEFAULT_POLICY, bar: Progress | None = None,
                   model: Any = None) -> Ticket:
    """The ticket with at least ``iterations`` levels, from the cache when it
    holds one; a shorter cached ticket is extended, not recomputed. Every
    finished iteration is saved, so an interrupted pre-training resumes.
    ``bar``: the run's progress, told of every epoch (``pretrain`` units of
    `cost.pretrain_epoch_s`; cached levels are skipped). ``model``: the
    resolved classifier (`fedsim.learn.zoo.ModelSpec`) of a model with a
    convolutional DAE (lenet-5), whose θ0 gives the DAE's encoder and the
    head (`fedsim.learn.pretrain.initial_dae`); None for LeNet-300-100, or
    resolved here (`fedsim.pipeline.runner.resolve_model`) for lenet-5.

    Raises:
        InputError: ``policy.cached_only`` and the cache lacks the levels; or
            the device is missing on this machine.
    """
    epoch_s = cost.pretrain_epoch_s(scenario)
    epochs = scenario.pretrain.epochs
    entry = store.CacheEntry("pretrain", pretrain_key(scenario))
    start = cached_ticket(entry, policy)
    if start is not None and start.iterations >= iterations:
        log.info("pre-training: cached ticket with %d levels (%s)", start.iterations, entry.path)
        if bar is not None:
            bar.skip("pretrain", iterations * epochs * epoch_s,
                     f"pre-training: {start.iterations} IMP levels cached")
        return start
    if policy.cached_only:
        raise not_cached(f"pre-training to IMP level {iterations}"
                         + (f" (the cache holds {start.iterations} levels)" if start else ""))
    device = compute_device(device, f"pre-training to IMP level {iterations}")
    arch = scenario.model.autoencoder or "lenet-300-100"
    if model is None and arch != "lenet-300-100":
        from fedsim.pipeline.runner import resolve_model  # runner imports this module

        model = resolve_model(scenario)
    theta0, head = initial_dae(arch, scenario.seed, init=scenario.model.init,
                               classifier_theta0=None if model is None else model.initial_params())

    def save(ticket: Ticket) -> None:
        save_ticket(entry, ticket)

    if iterations == 0:
        ticket = pretrain(theta0, data.unlabeled, scenario.pretrain, seed=scenario.seed,
                          iterations=0, device=device, arch=arch, head=head)
    else:
        log.info("pre-training: %d IMP iterations x %d epochs on %d unlabeled images%s",
                 iterations, epochs, len(data.unlabeled),
                 f" (resuming after {start.iterations})" if start else "")

        def on_epoch(level: int, epoch: int, mse: float) -> None:
            if bar is not None:
                bar.advance("pretrain", epoch_s, f"pre-training IMP level {level}/{iterations}, "
                                                 f"epoch {epoch}/{epochs}")

        if bar is not None:
            done = start.iterations if start else 0
            bar.skip("pretrain", done * epochs * epoch_s,
                     f"pre-training IMP level {done + 1}/{iterations}, epoch 0/{epochs}")
        ticket = pretrain(theta0, data.unlabeled, scenario.pretrain, seed=scenario.seed,
                          iterations=iterations, start=start, device=device,
                          on_iteration=save, on_epoch=on_epoch, arch=arch, head=head)
    save(ticket)
    return ticket


# --------------------------------------------------------------------------- system


def method_counts(mask: Mask) -> tuple[list[int], list[int], int]:
    """(weights per layer, surviving weights per layer, biases) of a mask."""
    counts = mask.layer_counts()
    weights = [int(c.weights) for c in counts]
    surviving = [int(c.surviving_weights) for c in counts]
    biases = int(sum(c.biases for c in counts))
    return weights, surviving, biases


def payload_and_work(scenario: Scenario, mask: Mask, method: MethodConfig | None = None
                     ) -> tuple[system_payload.Payload, float]:
    """The bytes of a round's messages and the work fraction (compute relative
    to the dense model) of a method with ``mask``; a compressed upload weighs
    what ``method``'s compression sends (`fedsim.learn.methods.effective_fl`,
    as its training; None: ``fl.compression``), or what a plugin's
    ``upload_bits`` / ``download_bits`` hook says (`encoding_bits`).

    Raises:
        MethodHookError: a plugin's encoding hook failed."""
    from fedsim.learn.methods import effective_fl

    weights, surviving, biases = method_counts(mask)
    fl = scenario.fl if method is None else effective_fl(scenario.fl, method)
    bits = {} if fl.hooks is None else encoding_bits(fl.hooks, sum(surviving) + biases)
    payload = system_payload.payload_bytes(weights, surviving, biases, scenario.system.payload,
                                           fl.compression, **bits)  # a compressed upload's bits
    if scenario.system.compute.work == "flops":  # a conv weight acts at every output position
        from fedsim.learn.counts import weight_reuse

        reuse = weight_reuse(scenario.model.autoencoder, len(weights))  # all 1 but for lenet-5
        weights = [w * r for w, r in zip(weights, reuse, strict=True)]
        surviving = [s * r for s, r in zip(surviving, reuse, strict=True)]
        biases = sum(c.biases * r for c, r in zip(mask.layer_counts(), reuse, strict=True))
    work = system_payload.work_fraction(scenario.system.compute, weights, surviving, biases)
    return payload, work


def encoding_bits(kind: str, sent_params: int) -> dict[str, int]:
    """The ``upload_bits`` / ``download_bits`` of plugin ``kind``'s encoding
    hooks for ``sent_params`` values (those it defines).

    Raises:
        MethodHookError: a hook raised or returned no integer >= 0 (names the
            method and module)."""
    from fedsim.learn.methods import get
    from fedsim.learn.plugins import MethodHookError

    entry, out = get(kind), {}
    for name in ("upload_bits", "download_bits"):
        hook = getattr(entry, name)
        if hook is None:
            continue
        what = f"method {kind!r} (module {entry.module!r}): {name} hook"
        try:
            bits = hook(int(sent_params))
        except Exception as exc:  # a plugin runs arbitrary code; KeyboardInterrupt passes
            raise MethodHookError(f"{what} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits < 0:
            raise MethodHookError(f"{what} returned {bits!r}, not an integer >= 0 of bits")
        out[name] = int(bits)
    return out


def system_stage(scenario: Scenario, mask: Mask, client_samples: np.ndarray,
                 base_dir: Path | None, *, policy: RunPolicy = DEFAULT_POLICY,
                 compute_scale: float = 1.0, method: MethodConfig | None = None,
                 ) -> tuple[SystemResult, system_payload.Payload, float]:
    """Simulate the rounds of one method (its payload and work fraction), or
    read the simulation from the cache; (result, payload, work fraction).
    ``compute_scale``: the model's training FLOPs per sample relative to
    LeNet-300-100's, the workload ``t_comp_full`` is given for
    (`fedsim.learn.zoo.ModelSpec.compute_scale`; 1 for LeNet-300-100); it
    multiplies the simulated compute times (the key holds the model section
    instead: `fedsim.pipeline.keys.system_facts`). ``method``: whose
    compression weighs the upload (`payload_and_work`)."""
    payload, work = payload_and_work(scenario, mask, method)
    entry = store.CacheEntry("system", system_key(scenario, payload, work, client_samples, base_dir, method))
    if not policy.force and entry.valid():
        cached = read_entry(entry, "system", lambda: load_result(entry.path))
        if cached is not None:
            return cached, payload, work
    result = simulate(scenario.system, client_samples=client_samples, payload=payload,
                      work_fraction=work * compute_scale, rounds=scenario.rounds.max, seed=scenario.seed,
                      local_epochs=scenario.fl.local_epochs, base_dir=base_dir)
    with entry.staged() as staging:
        save_result(result, staging.path)
        staging.seal(list(SYSTEM_FILES.values()))
    return result, payload, work
