"""What each stage depends on: its cache key, and the study planner's group.

This is the only code that says what a stage reads. A key hashes
(`fedsim.store.stable_hash`) the config sections a stage reads, with
``config.section_key`` leaving defaults out, so adding a setting with a default
keeps earlier entries valid; changing a bandwidth re-runs only the simulation,
changing a learning rate re-trains.

============  ================================================================
stage         key (what it depends on)
============  ================================================================
data          ``data`` section (a data file's SHA-256 for its path), ``seed`` (`data_key`;
              a memo key, not a cache entry)
pretrain      data key, ``model``, ``pretrain`` without ``iterations`` (`pretrain_key`)
method start  kind, ``model``, ``seed``; + the pretrain key where the kind uses the
              ticket; + the level (layer-wise) or the method section (global)
              where it prunes (`method_key`)
system        `system_facts` (model version, ``system``, the trace file's bytes, the session file's,
              ``rounds.max``, ``seed``, ``fl.local_epochs`` when not 5, ``model``
              when not LeNet-300-100: compute scales with its FLOPs, the method's
              compression (`learn_methods.effective_fl`) when set: it sets the
              upload's bytes) + the
              payload and work fraction (from the mask) + the samples per client
              (`system_key`)
train         data key, the method's effective ``fl`` (``fl`` itself for a
              method without compression/server/proximal_mu of its own), the
              method key (+ a plugin's ``version``), the participation (``"all"``
              or a hash of who was aggregated in each round), the device type
              (+ the device a continued run began on) (`train_key`)
============  ================================================================

A study plans before anything is computed, so it groups cells with
config-level keys built from the same pieces: `system_group` swaps the
mask-derived payload and work for `counts_key` and the samples for the data
key; `train_group` is `train_key` itself when every client is aggregated in
every round, and otherwise swaps the simulated participation for the config
that decides it (`participation_facts`). Equal groups give equal keys; the
converse holds up to those swaps (tests/test_keys.py states and checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsim import config, store
from fedsim.config import Scenario
from fedsim.learn import methods as learn_methods
from fedsim.learn.spec import MethodConfig
from fedsim.system import payload as system_payload

if TYPE_CHECKING:  # torch is imported where a key needs it: the keys module stays light
    import torch

#: The simulator's timing model, part of every system key: bumped when the
#: model changes, so entries simulated under an older one are recomputed
#: (2: an upload enters the server link rtt/2 after it leaves the client).
SYSTEM_MODEL_VERSION = 2
#: The event engine of time-varying links and cells (`fedsim.system.fastnet`),
#: in the system key of scenarios that take it (``dynamics`` or ``cells``)
#: only: bumped when its results change (2: a completion booked before a
#: reallocation that books none no longer ends a flow at the stale time).
FLUID_ENGINE_VERSION = 2


# --------------------------------------------------------------------------- data, pre-training, start


def data_key(scenario: Scenario) -> dict[str, Any]:
    """What determines the data (dataset, unlabeled split, partition, hence
    the samples per client): the ``data`` section, with the SHA-256 of a user
    npz and of a partition file in place of their paths
    (`fedsim.data.resolve.keyed_section`), and the seed."""
    from fedsim.data.resolve import keyed_section

    return {"data": keyed_section(scenario.data), "seed": scenario.seed}


def pretrain_key(scenario: Scenario) -> str:
    """Key of the pre-training ticket: data, model, pre-training settings
    (the number of iterations excluded: a ticket grows level by level)."""
    settings = config.section_key(scenario.pretrain)
    settings.pop("iterations", None)
    return store.stable_hash({"stage": "pretrain", **data_key(scenario),
                              "model": config.section_key(scenario.model), "pretrain": settings})


def method_error(scenario: Scenario, method: MethodConfig, exc: Exception) -> Exception:
    """An `InputError` naming ``methods.<label>`` for ``exc`` about ``method``."""
    from fedsim.errors import InputError

    label = next((k for k, v in scenario.methods.items() if v == method), method.kind)
    return InputError(f"methods.{label}: {exc}")


def needed_iterations(scenario: Scenario, method: MethodConfig) -> int:
    """IMP levels ``method`` needs from the ticket (0 for ``original``).

    Raises:
        InputError: the method needs more levels than ``pretrain.iterations``.
    """
    try:
        return learn_methods.required_iterations(method, scenario.pretrain, scenario.model.autoencoder)
    except ValueError as exc:
        raise method_error(scenario, method, exc) from None


def method_key(scenario: Scenario, method: MethodConfig) -> dict[str, Any]:
    """What determines a method's start (weights + mask)."""
    entry = learn_methods.get(method.kind)
    key: dict[str, Any] = {"kind": method.kind, "model": config.section_key(scenario.model),
                           "seed": scenario.seed}
    if entry.version is not None:  # a plugin's version: its code is not hashed
        key["version"] = entry.version
    if entry.pruned or entry.iterations:
        key["pretrain"] = pretrain_key(scenario)
    if entry.pruned:
        if scenario.pretrain.scope == "layerwise":
            key["level"] = needed_iterations(scenario, method)
        else:  # the start only: the training settings are in the train key's fl
            section = config.section_key(method)
            key["method"] = {k: v for k, v in section.items() if k not in learn_methods.TRAINING_FIELDS}
    return key


def counts_key(scenario: Scenario, label: str) -> Any:
    """What determines the mask counts of method ``label`` (weights and
    surviving weights per layer, biases), hence, with the ``system`` section,
    its payload and work fraction: dense, or the pruning level (layer-wise:
    the counts of a level are known in advance and equal for hp-fl and random
    pruning), or the ticket and rate (global)."""
    method = scenario.methods[label]
    if not learn_methods.get(method.kind).pruned:
        return "dense"
    if scenario.pretrain.scope == "layerwise":
        level = needed_iterations(scenario, method)
        if level == 0:
            return "dense"  # level 0 keeps every weight: a dense payload
        return ["level", level, config.section_key(scenario.pretrain).get("prune_fraction")]
    if _level_zero(method):
        return "dense"
    return ["global", pretrain_key(scenario), method.remaining_rate, method.level]


def _level_zero(method: MethodConfig) -> bool:
    """True when a pruning method is known, before any training, to take level
    0 (no weight pruned) of a globally pruned ticket: ``level: 0``, or a rate
    that `Ticket.level_for_rate` matches to level 0 (checked first, P_R 1)."""
    from fedsim.learn.counts import RATE_TOLERANCE

    if method.level is not None:
        return method.level == 0
    return method.remaining_rate is not None and abs(1.0 - method.remaining_rate) < RATE_TOLERANCE


# --------------------------------------------------------------------------- system


def device_type(scenario: Scenario) -> str:
    """``"cpu"`` or ``"cuda"``: ``auto`` resolved on this machine, an explicit
    ``cuda`` kept even where CUDA is missing. Stages are keyed on this type, so
    a GPU run's cached stages can be read, and its report rendered, on a
    machine without a GPU; only computing a missing stage needs the device
    (`fedsim.pipeline.stages.compute_device`)."""
    if scenario.device == "auto":
        import torch  # only torch knows whether CUDA is usable here

        return "cuda" if torch.cuda.is_available() else "cpu"
    return scenario.device


def trace_sha256(scenario: Scenario, base_dir: Path | None) -> str | None:
    """The SHA-256 of the client trace file (``system.clients.trace``, relative
    to ``base_dir``, the scenario file's folder), its path where it does not
    exist, or None without one. The file's bytes, not its name, key the
    simulation: editing the trace re-simulates."""
    trace = scenario.system.clients.trace
    if not trace:
        return None
    trace_path = Path(trace)
    if not trace_path.is_absolute() and base_dir is not None:
        trace_path = base_dir / trace_path
    return store.sha256_file(trace_path) if trace_path.exists() else str(trace_path)


def _simulated_system(scenario: Scenario) -> dict[str, Any]:
    """``section_key`` of the ``system`` section without ``energy``: energy is
    computed from the cached timeline after the simulation, which never reads
    it, so a new power model re-simulates nothing."""
    section = config.section_key(scenario.system)
    section.pop("energy", None)
    return section


def sessions_sha256(scenario: Scenario, base_dir: Path | None) -> str | None:
    """The SHA-256 of the session CSV (``system.clients.sessions`` naming a
    file), its path where it does not exist, or None (no sessions, or the
    diurnal generator, whose settings are in the ``system`` section)."""
    sessions = scenario.system.clients.sessions
    if not isinstance(sessions, str):
        return None
    path = Path(sessions)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return store.sha256_file(path) if path.exists() else str(path)


def bandwidth_trace_sha256(scenario: Scenario, base_dir: Path | None) -> str | None:
    """The SHA-256 of the bandwidth time-series CSV (``system.clients.dynamics``
    with ``model: trace``), its path where it does not exist, or None."""
    dynamics = scenario.system.clients.dynamics
    if dynamics is None or dynamics.trace is None:
        return None
    path = Path(dynamics.trace)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return store.sha256_file(path) if path.exists() else str(path)


def device_trace_sha256(scenario: Scenario, base_dir: Path | None) -> str | None:
    """The SHA-256 of the device speed CSV (``system.clients.device_trace``),
    its path where it does not exist, or None."""
    trace = scenario.system.clients.device_trace
    if trace is None:
        return None
    path = Path(trace)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return store.sha256_file(path) if path.exists() else str(path)


def system_facts(scenario: Scenario, base_dir: Path | None,
                 method: MethodConfig | None = None) -> dict[str, Any]:
    """The config-level part of the system key: everything the simulation reads
    but the mask (payload, work) and the samples per client. Shared by
    `system_key`, `system_group` and `participation_facts`, so that a field
    added here reaches all three. ``method``: whose compression
    (`learn_methods.effective_fl`) weighs the upload (None: ``fl.compression``)."""
    facts: dict[str, Any] = {
        "stage": "system",
        "model": SYSTEM_MODEL_VERSION,
        "system": _simulated_system(scenario),
        "trace_sha256": trace_sha256(scenario, base_dir),
        "rounds": scenario.rounds.max,
        "seed": scenario.seed,
    }
    if scenario.system.cells or scenario.system.clients.dynamics is not None:
        facts["fluid_engine"] = FLUID_ENGINE_VERSION
    # sessions decide availability; only present with a session file, so older keys stay
    sessions = sessions_sha256(scenario, base_dir)
    if sessions is not None:
        facts["sessions_sha256"] = sessions
    # a bandwidth time series (system.clients.dynamics.trace): its bytes key the simulation
    bandwidth = bandwidth_trace_sha256(scenario, base_dir)
    if bandwidth is not None:
        facts["bandwidth_trace_sha256"] = bandwidth
    # a device trace (system.clients.device_trace) decides compute times: its bytes key them
    device = device_trace_sha256(scenario, base_dir)
    if device is not None:
        facts["device_trace_sha256"] = device
    # compute time scales with the epochs; the reference's 5 is left out, as
    # section_key leaves defaults out, so entries written before epochs counted stay valid
    if scenario.fl.local_epochs != system_payload.REFERENCE_EPOCHS:
        facts["local_epochs"] = scenario.fl.local_epochs
    # compute time scales with the model's FLOPs per sample (`fedsim.learn.zoo.ModelSpec.
    # compute_scale`), a function of the model section; LeNet-300-100 (scale 1) is left out
    if not scenario.model.is_reference:
        facts["compute_model"] = config.section_key(scenario.model)
    # a compressed upload (the method's, else fl.compression) weighs what the transform
    # sends; absent without one, so keys of uncompressed scenarios stay
    fl = scenario.fl if method is None else learn_methods.effective_fl(scenario.fl, method)
    if fl.compression is not None:
        facts["compression"] = config.section_key(fl.compression)
    if fl.hooks is not None:  # a plugin's upload_bits/download_bits: keyed by its kind and version
        facts["hooks"] = {"kind": fl.hooks, "version": learn_methods.get(fl.hooks).version}
    return facts


def system_key(scenario: Scenario, payload: system_payload.Payload, work_fraction: float,
               client_samples: np.ndarray, base_dir: Path | None, method: MethodConfig | None = None) -> str:
    """The system stage's cache key: `system_facts` (with ``method``'s
    compression), the payload, the work fraction and the samples per client."""
    return store.stable_hash({
        **system_facts(scenario, base_dir, method),
        "payload": payload.__dict__,
        "work_fraction": repr(float(work_fraction)),
        "client_samples": store.stable_hash(client_samples.tolist()),
    })


def system_group(scenario: Scenario, label: str, base_dir: Path) -> str:
    """The config-level key of method ``label``'s system simulation: equal
    groups give the same `system_key` (the mask counts, with the system
    section, fix the payload and work; the data key fixes the samples)."""
    group = {
        **system_facts(scenario, base_dir, scenario.methods[label]), "stage": "system-group",
        "counts": counts_key(scenario, label), "client_samples": data_key(scenario),
    }
    asynchronous = scenario.methods[label].asynchronous
    if asynchronous is not None:  # a FedBuff schedule (`fedsim.pipeline.asynchronous`); sync keys unchanged
        group["asynchronous"] = config.section_key(asynchronous)
    return store.stable_hash(group)


# --------------------------------------------------------------------------- training


def participation_key(participation: list[np.ndarray] | None) -> str:
    """``"all"`` (every client in every round), or a hash of the client ids
    aggregated in each round."""
    if participation is None:
        return "all"
    return store.stable_hash([p.tolist() for p in participation])


def train_facts(scenario: Scenario, method: MethodConfig, device: torch.device) -> dict[str, Any]:
    """Every part of the training key but the participation: data, the ``fl``
    the method trains with (`learn_methods.effective_fl`: equal to ``fl`` for
    a method without settings of its own), the method's start and the device type."""
    fl = learn_methods.effective_fl(scenario.fl, method)
    return {"stage": "train", **data_key(scenario), "fl": config.section_key(fl),
            "start": method_key(scenario, method), "device": device.type}


def train_key(scenario: Scenario, method: MethodConfig, participation: list[np.ndarray] | None,
              device: torch.device, continued_from: torch.device | None = None) -> str:
    """The training's cache key. ``continued_from``: the entry holds a run
    begun on that device's entry and continued on ``device``, a different
    run from one trained on ``device`` throughout."""
    key = {**train_facts(scenario, method, device), "participation": participation_key(participation)}
    if continued_from is not None:
        key["continued_from"] = continued_from.type
    return store.stable_hash(key)


def everyone_every_round(scenario: Scenario) -> bool:
    """True when the config guarantees that every client is aggregated in
    every round (then training uses participation "all" and its cache key
    does not depend on the system at all)."""
    from fedsim.system.spec import Constant

    system = scenario.system
    rounds = system.rounds
    clients = scenario.data.partition.num_clients
    availability = system.clients.availability
    return (not system.timing_decides_participation() and rounds.dropout == 0
            and rounds.kept_count(clients) == clients and system.clients.trace is None
            and isinstance(availability, Constant) and availability.value >= 1.0)


def participation_facts(scenario: Scenario, base_dir: Path | None,
                        method: MethodConfig | None = None) -> dict[str, Any]:
    """The config that decides who is aggregated in each round, beside the
    data (samples, seed) and the method's start (payload, work) that
    `train_facts` holds: all of `system_facts` when timing decides (a deadline
    or over-commit), else the round policy, availability, trace and rounds."""
    system = scenario.system
    if system.timing_decides_participation():
        return {"system": system_facts(scenario, base_dir, method)}
    return {"rounds": config.section_key(system.rounds),
            "availability": config.to_plain(system.clients.availability),
            "trace": trace_sha256(scenario, base_dir), "rounds_max": scenario.rounds.max}


def train_group(scenario: Scenario, label: str, base_dir: Path) -> str:
    """The config-level key of method ``label``'s training: equal groups share
    one trace.

    When the config guarantees that every client takes part in every round,
    this is the pipeline's own `train_key` (participation "all"). Otherwise
    participation comes from the system simulation, and the group has
    `participation_facts` in its place: conservative (equal groups always
    mean equal traces; two cells whose different configs happen to aggregate
    the same clients get two groups).
    """
    import torch

    method = scenario.methods[label]
    device = torch.device(device_type(scenario))
    if method.asynchronous is not None:  # the replayed plan comes from the whole FedBuff schedule
        return store.stable_hash({**train_facts(scenario, method, device), "stage": "train-group-async",
                                  "asynchronous": config.section_key(method.asynchronous),
                                  "system": system_facts(scenario, base_dir, method)})
    if everyone_every_round(scenario):
        return train_key(scenario, method, None, device)
    return store.stable_hash({**train_facts(scenario, method, device), "stage": "train-group",
                              "participation": participation_facts(scenario, base_dir, method)})
