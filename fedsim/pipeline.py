"""Run a scenario: the stages in order, each cached, then the report.

::

    Scenario ──> data (dataset, split, partition)
       ├─> pre-training: Ticket (Θ0, trained encoder, masks per level)   [cache: pretrain/]
       ├─> per method: initial weights + mask (fedsim.learn.methods)
       │     ├─> system: SystemResult (SimPy)                            [cache: system/]
       │     └─> training: TrainingTrace (uses the system's participation) [cache: train/]
       ├─> metrics: rounds.csv / metrics.csv (fedsim.metrics)
       └─> report: figures, report.pdf, summary.md (fedsim.report)

Each stage's cache key hashes only the config it reads (``config.section_key``
leaves defaults out), so changing a bandwidth re-runs only the simulation and
the report, while changing a learning rate re-trains. Training checkpoints
every ``rounds.checkpoint_every`` rounds into its cache entry; an interrupted
run resumes from the last checkpoint and, since every random stream is keyed by
(seed, client, round), yields exactly the trace an uninterrupted run would.

Only this module and `fedsim.store` touch the disk.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedsim import __version__, config, cost, metrics, seeding, store
from fedsim.config import Scenario
from fedsim.data import as_float, load, make_partition, split_unlabeled
from fedsim.learn import methods as learn_methods
from fedsim.learn.federated import ClientData, train
from fedsim.learn.masks import Mask
from fedsim.learn.model import device_name, init_dae, resolve_device
from fedsim.learn.pretrain import Ticket, pretrain
from fedsim.learn.spec import MethodConfig
from fedsim.learn.trace import RoundRecord, TrainingTrace, TrainState
from fedsim.progress import Progress
from fedsim.system import payload as system_payload
from fedsim.system.sim import SystemResult, load_result, save_result, simulate

log = logging.getLogger(__name__)

#: Output files of a scenario run, relative to its output directory.
OUTPUTS = {
    "metrics": "metrics.csv",
    "metrics_parquet": "metrics.parquet",
    "rounds": "rounds.csv",
    "rounds_parquet": "rounds.parquet",
    "timeline": "timeline.parquet",
    "resolved": "scenario.resolved.yaml",
    "provenance": "provenance.json",
}

#: The paper's published values (Tables I and II), shown beside fedsim's when
#: ``report.reference: paper``. Keyed by method kind (and P_R for hp-fl).
PAPER_REFERENCE = {
    ("original", None): {"nra": 134, "cca_bytes": 29.2e9, "cta_s": 22.5 * 60,
                         "final_accuracy": 0.976, "comm_bytes_per_round": 213e6,
                         "compute_s_per_round": 10.0},
    ("pretrained", None): {"nra": 126, "cca_bytes": 29.0e9, "cta_s": 22.3 * 60,
                           "final_accuracy": 0.972, "comm_bytes_per_round": 213e6,
                           "compute_s_per_round": 10.0},
    ("hp-fl", 0.107): {"nra": 824, "cca_bytes": 18.8e9, "cta_s": 14.7 * 60,
                       "final_accuracy": 0.963, "comm_bytes_per_round": 22.8e6,
                       "compute_s_per_round": 1.1},
    ("random-pruning", 0.107): {"nra": 1388, "cca_bytes": 31.7e9, "cta_s": 24.8 * 60,
                                "final_accuracy": 0.957, "comm_bytes_per_round": 22.8e6,
                                "compute_s_per_round": 1.1},
    ("hp-fl", 0.41): {"nra": 267, "cca_bytes": 23.4e9, "cta_s": 18.2 * 60,
                      "final_accuracy": 0.973, "comm_bytes_per_round": 87.3e6,
                      "compute_s_per_round": 4.1},
    ("hp-fl", 0.21): {"nra": 513, "cca_bytes": 23.0e9, "cta_s": 18.0 * 60,
                      "final_accuracy": 0.967, "comm_bytes_per_round": 44.7e6,
                      "compute_s_per_round": 2.1},
    ("hp-fl", 1.0): {"nra": 134, "cca_bytes": 29.2e9, "cta_s": 22.3 * 60,
                     "final_accuracy": 0.976, "comm_bytes_per_round": 213e6,
                     "compute_s_per_round": 10.0},
}


# --------------------------------------------------------------------------- results


@dataclass
class MethodResult:
    """One method's stages: its start, system simulation and training trace."""

    label: str
    method: MethodConfig
    mask: Mask
    system: SystemResult
    trace: TrainingTrace
    payload: system_payload.Payload
    work_fraction: float


@dataclass
class ScenarioResult:
    """Everything a report is made of."""

    scenario: Scenario
    rounds: pd.DataFrame
    metrics: pd.DataFrame
    timeline: pd.DataFrame
    methods: dict[str, MethodResult]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    cache_keys: dict[str, str] = field(default_factory=dict)
    out_dir: Path | None = None


class _Timer:
    """Wall time of each stage, for the provenance file and the log."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Data:
    """The scenario's data: the unlabeled pool, the clients and the test set."""

    unlabeled: np.ndarray  # uint8 [N_u, 28, 28]
    clients: ClientData
    test_x: torch.Tensor
    test_y: torch.Tensor
    client_samples: np.ndarray


_DATA_MEMO: dict[str, Data] = {}


def prepare_data(scenario: Scenario) -> Data:
    """Load the dataset, split off the server's unlabeled pool and partition
    the labeled pool over the clients (streams "split" and "partition").

    Memoised per process by the data key: a study's worker runs many cells on
    the same data, and loading MNIST costs about half a second each time."""
    key = store.stable_hash(data_key(scenario))
    if key not in _DATA_MEMO:
        _DATA_MEMO.clear()  # keep one dataset in memory, not one per key
        _DATA_MEMO[key] = _prepare_data(scenario)
    return _DATA_MEMO[key]


def _prepare_data(scenario: Scenario) -> Data:
    dataset = load(scenario.data.dataset)
    n_train = len(dataset.train_labels)
    splits = split_unlabeled(n_train, scenario.data.unlabeled, seeding.rng(scenario.seed, "split"))
    labeled_y = dataset.train_labels[splits.labeled_idx]
    parts = make_partition(scenario.data.partition, labeled_y, seeding.rng(scenario.seed, "partition"))
    clients = ClientData.from_arrays(dataset.train_images[splits.labeled_idx], labeled_y, parts)
    test_x = torch.from_numpy(as_float(dataset.test_images))
    test_y = torch.as_tensor(np.array(dataset.test_labels), dtype=torch.int64)
    samples = np.array([len(p) for p in parts], dtype=np.int64)
    return Data(dataset.train_images[splits.unlabeled_idx], clients, test_x, test_y, samples)


# --------------------------------------------------------------------------- keys


def data_key(scenario: Scenario) -> dict[str, Any]:
    return {"data": config.section_key(scenario.data), "seed": scenario.seed}


def pretrain_key(scenario: Scenario) -> str:
    """Key of the pre-training ticket: data, model, pre-training settings
    (the number of iterations excluded: a ticket grows level by level)."""
    settings = config.section_key(scenario.pretrain)
    settings.pop("iterations", None)
    return store.stable_hash({"stage": "pretrain", **data_key(scenario),
                              "model": config.section_key(scenario.model), "pretrain": settings})


def needed_iterations(scenario: Scenario, method: MethodConfig) -> int:
    try:
        return learn_methods.required_iterations(method, scenario.pretrain)
    except ValueError as exc:
        raise _method_error(scenario, method, exc) from None


def _method_error(scenario: Scenario, method: MethodConfig, exc: Exception) -> Exception:
    from fedsim.errors import InputError

    label = next((k for k, v in scenario.methods.items() if v == method), method.kind)
    return InputError(f"methods.{label}: {exc}")


def method_key(scenario: Scenario, method: MethodConfig) -> dict[str, Any]:
    """What determines a method's start (weights + mask)."""
    entry = learn_methods.get(method.kind)
    key: dict[str, Any] = {"kind": method.kind, "model": config.section_key(scenario.model),
                           "seed": scenario.seed}
    if entry.pruned or entry.iterations:
        key["pretrain"] = pretrain_key(scenario)
    if entry.pruned:
        if scenario.pretrain.scope == "layerwise":
            key["level"] = needed_iterations(scenario, method)
        else:
            key["method"] = config.section_key(method)
    return key


SYSTEM_MODEL_VERSION = 2


def system_key(scenario: Scenario, payload: system_payload.Payload, work_fraction: float,
               client_samples: np.ndarray, base_dir: Path | None) -> str:
    """The system stage's cache key: the system section, the trace file's
    bytes, the payload, the work (work fraction, samples per client and
    ``fl.local_epochs``), the rounds and the seed."""
    trace_sha = None
    if scenario.system.clients.trace:
        trace_path = Path(scenario.system.clients.trace)
        if not trace_path.is_absolute() and base_dir is not None:
            trace_path = base_dir / trace_path
        trace_sha = store.sha256_file(trace_path) if trace_path.exists() else str(trace_path)
    key: dict[str, Any] = {
        "stage": "system",
        # Bumped when the simulator's timing model changes, so entries simulated
        # under an older model are recomputed (2: an upload enters the server
        # link rtt/2 after it leaves the client).
        "model": SYSTEM_MODEL_VERSION,
        "system": config.section_key(scenario.system),
        "trace_sha256": trace_sha,
        "payload": payload.__dict__,
        "work_fraction": repr(float(work_fraction)),
        "client_samples": store.stable_hash(client_samples.tolist()),
        "rounds": scenario.rounds.max,
        "seed": scenario.seed,
    }
    # compute time scales with the epochs; the reference's 5 is left out, as
    # section_key leaves defaults out, so entries written before epochs counted stay valid
    if scenario.fl.local_epochs != system_payload.REFERENCE_EPOCHS:
        key["local_epochs"] = scenario.fl.local_epochs
    return store.stable_hash(key)


def participation_key(participation: list[np.ndarray] | None) -> str:
    if participation is None:
        return "all"
    return store.stable_hash([p.tolist() for p in participation])


def train_key(scenario: Scenario, method: MethodConfig, participation: list[np.ndarray] | None,
              device: torch.device, continued_from: torch.device | None = None) -> str:
    """The training's cache key. ``continued_from``: the entry holds a run
    begun on that device's entry and continued on ``device``, a different
    run from one trained on ``device`` throughout."""
    key = {
        "stage": "train", **data_key(scenario),
        "fl": config.section_key(scenario.fl),
        "start": method_key(scenario, method),
        "participation": participation_key(participation),
        "device": device.type,
    }
    if continued_from is not None:
        key["continued_from"] = continued_from.type
    return store.stable_hash(key)


# --------------------------------------------------------------------------- stages


def device_type(scenario: Scenario) -> str:
    """``"cpu"`` or ``"cuda"``: ``auto`` resolved on this machine, an explicit
    ``cuda`` kept even where CUDA is missing. Stages are keyed on this type, so
    a GPU run's cached stages can be read, and its report rendered, on a
    machine without a GPU; only computing a missing stage needs the device
    (`compute_device`)."""
    if scenario.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return scenario.device


def _not_cached(what: str) -> Exception:
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


def pretrain_stage(scenario: Scenario, data: Data, iterations: int, device: torch.device, *,
                   force: bool = False, bar: Progress | None = None, cached_only: bool = False) -> Ticket:
    """The ticket with at least ``iterations`` levels, from the cache when it
    holds one; a shorter cached ticket is extended, not recomputed. Every
    finished iteration is saved, so an interrupted pre-training resumes.
    ``bar``: the run's progress, told of every epoch (``pretrain`` units of
    `cost.pretrain_epoch_s`; cached levels are skipped)."""
    epoch_s = cost.pretrain_epoch_s(scenario)
    entry = store.CacheEntry("pretrain", pretrain_key(scenario))
    theta0 = init_dae(scenario.model.init, scenario.seed)
    start = None
    if not force and entry.valid():
        cached = read_entry(entry, "pre-training", lambda: Ticket.load(entry.path / "ticket.npz"))
        if cached is not None:
            if cached.iterations >= iterations:
                log.info("pre-training: cached ticket with %d levels (%s)", cached.iterations, entry.path)
                if bar is not None:
                    bar.skip("pretrain", iterations * scenario.pretrain.epochs * epoch_s,
                             f"pre-training: {cached.iterations} IMP levels cached")
                return cached
            start = cached
    elif entry.manifest() is not None and not force:
        log.warning("pre-training cache entry %s is corrupt; recomputing", entry.path)
    if force:
        entry.clear()
    if cached_only:
        raise _not_cached(f"pre-training to IMP level {iterations}"
                          + (f" (the cache holds {start.iterations} levels)" if start else ""))
    device = compute_device(device, f"pre-training to IMP level {iterations}")

    def save(ticket: Ticket) -> None:
        entry.unseal()
        ticket.save(entry.file("ticket.npz"))
        entry.seal(["ticket.npz"], {"iterations": ticket.iterations})

    if iterations == 0:
        ticket = pretrain(theta0, data.unlabeled, scenario.pretrain, seed=scenario.seed,
                          iterations=0, device=device)
    else:
        log.info("pre-training: %d IMP iterations x %d epochs on %d unlabeled images%s",
                 iterations, scenario.pretrain.epochs, len(data.unlabeled),
                 f" (resuming after {start.iterations})" if start else "")

        def on_epoch(level: int, epoch: int, mse: float) -> None:
            if bar is not None:
                bar.advance("pretrain", epoch_s, f"pre-training IMP level {level}/{iterations}, "
                                                 f"epoch {epoch}/{scenario.pretrain.epochs}")

        if bar is not None:
            done = start.iterations if start else 0
            bar.skip("pretrain", done * scenario.pretrain.epochs * epoch_s,
                     f"pre-training IMP level {done + 1}/{iterations}, epoch 0/{scenario.pretrain.epochs}")
        ticket = pretrain(theta0, data.unlabeled, scenario.pretrain, seed=scenario.seed,
                          iterations=iterations, start=start, device=device,
                          on_iteration=save, on_epoch=on_epoch)
    save(ticket)
    return ticket


def method_counts(mask: Mask) -> tuple[list[int], list[int], int]:
    """(weights per layer, surviving weights per layer, biases) of a mask."""
    counts = mask.layer_counts()
    weights = [int(c.weights) for c in counts]
    surviving = [int(c.surviving_weights) for c in counts]
    biases = int(sum(c.biases for c in counts))
    return weights, surviving, biases


def system_stage(scenario: Scenario, mask: Mask, client_samples: np.ndarray,
                 base_dir: Path | None, *, force: bool = False, progress: bool = False,
                 ) -> tuple[SystemResult, system_payload.Payload, float]:
    """Simulate the rounds of one method (its payload and work fraction)."""
    weights, surviving, biases = method_counts(mask)
    payload = system_payload.payload_bytes(weights, surviving, biases, scenario.system.payload)
    work = system_payload.work_fraction(scenario.system.compute, weights, surviving, biases)
    entry = store.CacheEntry("system", system_key(scenario, payload, work, client_samples, base_dir))
    files = ["timeline.parquet", "rounds.parquet", "profiles.parquet"]
    if not force and entry.valid():
        cached = read_entry(entry, "system", lambda: load_result(entry.path))
        if cached is not None:
            return cached, payload, work
    result = simulate(scenario.system, client_samples=client_samples, payload=payload,
                      work_fraction=work, rounds=scenario.rounds.max, seed=scenario.seed,
                      local_epochs=scenario.fl.local_epochs, base_dir=base_dir, progress=progress)
    # Written into a private directory and renamed into place, so that two
    # processes simulating the same key never see each other's partial files.
    import shutil
    import tempfile

    entry.path.parent.mkdir(parents=True, exist_ok=True)
    staging = store.CacheEntry("system", entry.key)
    staging.path = Path(tempfile.mkdtemp(prefix=f".{entry.key}.", dir=entry.path.parent))
    save_result(result, staging.path)
    staging.seal(files)
    if entry.valid():  # another process finished first: keep its (identical) entry
        shutil.rmtree(staging.path, ignore_errors=True)
    else:
        shutil.rmtree(entry.path, ignore_errors=True)
        try:
            os.replace(staging.path, entry.path)
        except OSError:  # lost a race to another writer; its entry is as good
            shutil.rmtree(staging.path, ignore_errors=True)
    return result, payload, work


def _head(trace: TrainingTrace, rounds: int) -> TrainingTrace:
    """The first ``rounds`` rounds of a trace."""
    keep = trace.rounds["round_num"] <= rounds
    keep_clients = trace.client_rounds["round_num"] <= rounds
    return TrainingTrace(trace.rounds[keep].reset_index(drop=True),
                         trace.client_rounds[keep_clients].reset_index(drop=True), trace.meta)


def _targets_reached(accuracy: np.ndarray, targets: Sequence[float]) -> bool:
    return bool(len(accuracy)) and all(float(np.nanmax(accuracy)) >= t for t in targets)


def _load_checkpoint(entry: store.CacheEntry) -> tuple[TrainingTrace, TrainState] | None:
    """The trace and parameters of a training entry's last checkpoint; None
    (with a warning where the entry is damaged) when there is none."""
    if not entry.valid():
        if entry.manifest() is not None:
            log.warning("training cache entry %s is corrupt; recomputing", entry.path)
            entry.clear()
        return None
    files = sorted((entry.manifest() or {}).get("files", {}))

    def read() -> tuple[TrainingTrace, TrainState]:
        from fedsim.learn.model import Params

        trace = TrainingTrace.load(entry.path / next(f for f in files if f.startswith("trace")))
        with np.load(entry.path / next(f for f in files if f.startswith("params"))) as arrays:
            params = Params.from_numpy(arrays)
        return trace, TrainState(trace.num_rounds, params)

    return read_entry(entry, "training", read)


def train_entry(scenario: Scenario, method: MethodConfig, participation: list[np.ndarray] | None,
                device: torch.device, continue_from: torch.device | None = None
                ) -> tuple[store.CacheEntry, store.CacheEntry | None]:
    """The cache entry a training reads and writes, and the entry it
    continues from: with ``continue_from`` (another device) and a cached run
    there, the run is continued from that run's last checkpoint into an entry
    of its own (`train_key`'s ``continued_from``); otherwise, (entry, None)."""
    if continue_from is not None and continue_from.type != device.type:
        source = store.CacheEntry("train", train_key(scenario, method, participation, continue_from))
        if source.valid():
            return (store.CacheEntry("train", train_key(scenario, method, participation, device,
                                                        continued_from=continue_from)), source)
    return store.CacheEntry("train", train_key(scenario, method, participation, device)), None


def train_stage(scenario: Scenario, label: str, start_params: Any, mask: Mask, data: Data,
                participation: list[np.ndarray] | None, device: torch.device,
                entry: store.CacheEntry, source: store.CacheEntry | None = None, *,
                force: bool = False, bar: Progress | None = None, cached_only: bool = False) -> TrainingTrace:
    """FedAvg for ``rounds.max`` rounds (or until every target is reached when
    ``rounds.stop_when_reached``) on ``device``, resuming from the checkpoint
    in ``entry`` or, where it has none, continuing the run in ``source`` (on
    another device; `train_entry` gives both). The trace's
    `TrainingTrace.segments` say which device computed which rounds.
    ``bar``: the run's progress, told of every round (``train`` units of
    `cost.round_s`); cached rounds, and rounds not run because the targets
    were reached, are skipped."""
    wanted = scenario.rounds.max
    round_s = cost.round_s(scenario)
    targets = scenario.targets
    if force:
        entry.clear()
    loaded = _load_checkpoint(entry)
    if loaded is None and source is not None:
        loaded = _load_checkpoint(source)
        if loaded is not None:
            log.info("%s: continuing the run in %s after its round %d, on %s", label,
                     source.path, loaded[0].num_rounds, device.type)
    trace, state = loaded if loaded is not None else (None, None)

    done = trace.num_rounds if trace is not None else 0
    if trace is not None and (done >= wanted or (
            scenario.rounds.stop_when_reached and _targets_reached(trace.accuracy, targets))):
        log.info("%s: %d cached rounds (%s)", label, done, entry.path)
        if bar is not None:
            bar.skip("train", wanted * round_s, f"training {label}: {done} rounds cached")
        return _head(trace, wanted)

    def checkpoint(round_num: int, params: Any, records: list[RoundRecord]) -> None:
        part = TrainingTrace.from_records(records, meta)
        full = part if trace is None else trace.concat(part)
        old = set((entry.manifest() or {}).get("files", {}))
        names = [f"trace.r{round_num:06d}.npz", f"params.r{round_num:06d}.npz"]
        full.save(entry.file(names[0]))
        with store.atomic_write(entry.file(names[1])) as handle:
            np.savez(handle, **params.to("cpu").to_numpy())
        entry.seal(names, {"rounds": round_num, "label": label})
        for name in old - set(names):
            (entry.path / name).unlink(missing_ok=True)

    records: list[RoundRecord] = []
    meta = {"label": label, "method": config.section_key(scenario.methods[label])}  # + where it ran, below
    every = scenario.rounds.checkpoint_every
    last_params: list[Any] = [None]  # (round, params) of the last finished round

    def on_round(round_num: int, params: Any, record: RoundRecord) -> None:
        last_params[0] = (round_num, params)
        records.append(record)
        if round_num % every == 0 or round_num == wanted:
            checkpoint(round_num, params, records)
        if bar is not None:
            bar.advance("train", round_s, f"training {label} round {round_num}/{wanted}")

    def stop(record: RoundRecord) -> bool:
        if not scenario.rounds.stop_when_reached:
            return False
        accuracy = np.array([r.accuracy for r in records])
        previous = trace.accuracy if trace is not None else np.zeros(0)
        return _targets_reached(np.concatenate([previous, accuracy]), targets)

    if cached_only:
        if trace is None:
            raise _not_cached(f"training of {label}")
        log.info("%s: %d of %d rounds in the cache; reporting those (--cached-only)", label, done, wanted)
        if bar is not None:
            bar.skip("train", wanted * round_s, f"training {label}: {done} rounds cached")
        return trace
    if done:
        log.info("%s: resuming after round %d of %d", label, done, wanted)
    device = compute_device(device, f"training of {label} (rounds {done + 1}..{wanted})")
    meta.update(device=str(device), device_name=device_name(device))
    if bar is not None:  # the rounds before ``done`` are cached; the clock of computed work starts now
        bar.skip("train", done * round_s, f"training {label} round {done}/{wanted}")
    try:
        new = train(start_params, mask, data.clients, (data.test_x, data.test_y), scenario.fl,
                    seed=scenario.seed, rounds=wanted, participation=participation, device=device,
                    start=state, on_round=on_round, stop=stop)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (cli.main): keep every finished round
        # on_round sets last_params before it appends the record: they agree
        # unless the interrupt fell between the two
        if last_params[0] is not None and records and records[-1].round_num == last_params[0][0] \
                and records[-1].round_num % every != 0:
            checkpoint(records[-1].round_num, last_params[0][1], records)
            log.warning("%s: interrupted; checkpoint written at round %d", label, records[-1].round_num)
        raise
    if records and records[-1].round_num % every != 0 and records[-1].round_num != wanted:
        checkpoint(records[-1].round_num, last_params[0][1], records)
    if bar is not None:  # stopped early (targets reached): the rest is not needed
        bar.skip("train", (wanted - (records[-1].round_num if records else done)) * round_s)
    return new if trace is None else trace.concat(new)


# --------------------------------------------------------------------------- the run


def _all_clients(participation: list[np.ndarray], n_clients: int) -> bool:
    return all(len(p) == n_clients for p in participation)


def run_work(scenario: Scenario, iterations: int) -> dict[str, float]:
    """The whole work of a run, for its progress display: ``pretrain`` (the
    ``iterations`` IMP levels' epochs) and ``train`` (every method's
    ``rounds.max`` rounds), in estimated seconds of the cost model
    (`fedsim.cost`). Pruned methods' rounds weigh what dense ones do: training
    is dense."""
    return {"pretrain": iterations * scenario.pretrain.epochs * cost.pretrain_epoch_s(scenario),
            "train": len(scenario.methods) * scenario.rounds.max * cost.round_s(scenario)}


def compute(scenario: Scenario, *, base_dir: Path | None = None, force: bool = False,
            progress: bool = False, timer: _Timer | None = None,
            cached_only: bool = False, continue_from: str | None = None) -> ScenarioResult:
    """Run (or fetch from the cache) every stage of ``scenario``; no report.

    ``cached_only``: train nothing; each method's trace is what the cache
    holds, up to ``rounds.max`` (the ``rounds_run`` column says where it
    ends). For reports of interrupted runs, or of a GPU's runs on a machine
    without one. The system simulations are still computed (they are cheap).

    ``continue_from`` (``"cpu"`` or ``"cuda"``): continue each method's cached
    run on that device, where there is one, on this scenario's device (e.g. a
    GPU run cut short by its time slot, finished on a CPU); see
    `train_entry`. Give it again to report such a run (with
    ``cached_only``)."""
    if cached_only and force:
        raise ValueError("cached_only and force exclude each other")
    timer = timer or _Timer()
    device = torch.device(device_type(scenario))
    source_device = torch.device(continue_from) if continue_from is not None else None
    if source_device is not None and source_device.type == device.type:
        from fedsim.errors import InputError

        raise InputError(f"--continue-from {continue_from}: the scenario runs on {device.type} "
                         "already; continue from the other device (cpu or cuda)")
    with timer.stage("data"):
        data = prepare_data(scenario)
    log.info("data: %s, %d clients (%d-%d samples), %d unlabeled, %d test",
             scenario.data.dataset, data.clients.num_clients, data.client_samples.min(),
             data.client_samples.max(), len(data.unlabeled), len(data.test_y))

    iterations = max(needed_iterations(scenario, m) for m in scenario.methods.values())
    # one line over the whole run: every pre-training epoch and every method's rounds
    with Progress("scenario", run_work(scenario, iterations), enabled=progress) as bar:
        with timer.stage("pretrain"):
            ticket = pretrain_stage(scenario, data, iterations, device, force=force, bar=bar,
                                    cached_only=cached_only)

        results: dict[str, MethodResult] = {}
        keys: dict[str, str] = {"pretrain": pretrain_key(scenario)}
        for label, method in scenario.methods.items():
            try:
                start = learn_methods.build(method, ticket, seed=scenario.seed)
            except ValueError as exc:
                raise _method_error(scenario, method, exc) from None
            with timer.stage("system"):
                system, payload, work = system_stage(scenario, start.mask, data.client_samples,
                                                     base_dir, force=force)
            participation = (None if _all_clients(system.participation, data.clients.num_clients)
                             else system.participation)
            entry, source = train_entry(scenario, method, participation, device, source_device)
            keys[f"train/{label}"] = entry.key
            with timer.stage("train"):
                trace = train_stage(scenario, label, start.params, start.mask, data, participation,
                                    device, entry, source, force=force, bar=bar,
                                    cached_only=cached_only)
            last = trace.rounds.iloc[-1] if trace.num_rounds else None
            log.info("%s: P_R %.4f, %d rounds, final accuracy %s, %.1f MB per round", label,
                     start.mask.remaining_rate, trace.num_rounds,
                     "n/a" if last is None else f"{last['accuracy']:.4f}",
                     float(system.rounds["round_bytes"].iloc[0]) / 1e6)
            results[label] = MethodResult(label, method, start.mask, system, trace, payload, work)

    with timer.stage("metrics"):
        rounds, table, timeline = join(scenario, results)
    from fedsim.report.tables import empty_rounds, empty_rounds_text

    empty = empty_rounds(rounds)
    if empty:
        log.warning("%s No update reached the server in those rounds (no client available, or "
                    "every selected one dropped out or missed the deadline); the model did not "
                    "change in them.", empty_rounds_text(empty, rounds))
    return ScenarioResult(scenario, rounds, table, timeline, results, timer.seconds, keys)


def join(scenario: Scenario, results: dict[str, MethodResult]
         ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """rounds.csv, metrics.csv and the timeline of all methods."""
    frames, timelines, info = [], [], {}
    for label, result in results.items():
        n = result.trace.num_rounds
        sys_rounds = result.system.rounds.iloc[:n].reset_index(drop=True)
        trace = result.trace.rounds
        frames.append(pd.DataFrame({
            "method": label,
            "round": trace["round_num"].to_numpy(),
            "accuracy": trace["accuracy"].to_numpy(),
            "loss": trace["loss"].to_numpy(),
            "participants": trace["participants"].to_numpy(),
            "round_bytes": sys_rounds["round_bytes"].to_numpy(dtype=float),
            "round_compute_s": sys_rounds["mean_compute_s"].to_numpy(dtype=float),
            "round_wallclock_s": sys_rounds["duration_s"].to_numpy(dtype=float),
            "mean_download_s": sys_rounds["mean_download_s"].to_numpy(dtype=float),
            "mean_compute_s": sys_rounds["mean_compute_s"].to_numpy(dtype=float),
            "mean_upload_s": sys_rounds["mean_upload_s"].to_numpy(dtype=float),
            "mean_wait_s": sys_rounds["mean_wait_s"].to_numpy(dtype=float),
            "max_compute_s": sys_rounds["max_compute_s"].to_numpy(dtype=float),
        }))
        timeline = result.system.timeline
        timeline = timeline[timeline["round"] <= n]
        timelines.append(timeline.assign(method=label)[["method", *timeline.columns]])
        info[label] = {"remaining_rate": result.mask.remaining_rate,
                       "params": result.payload.sent_params}
    rounds = metrics.rounds_table(pd.concat(frames, ignore_index=True))
    table = metrics.metrics_table(rounds, scenario.targets, info)
    return rounds, table, pd.concat(timelines, ignore_index=True)


def git_commit() -> str | None:
    """The git commit of the fedsim source tree, when it is a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _ran_on(computed_on: dict[str, str]) -> str:
    """The summary's "training ran on": one device, or each method's."""
    devices = set(computed_on.values())
    if len(devices) == 1:
        return devices.pop()
    return "; ".join(f"{label}: {where}" for label, where in computed_on.items())


def provenance(result: ScenarioResult, command: Sequence[str] | None) -> dict[str, Any]:
    """Where a result came from: versions, device, command, stage times."""
    import simpy

    device = torch.device(device_type(result.scenario))
    here = (device_name(device) if device.type == "cpu" or torch.cuda.is_available()
            else "cuda (none on this machine: every stage came from the cache)")
    computed_on = {label: r.trace.computed_on() for label, r in result.methods.items()}
    return {
        "fedsim": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "simpy": simpy.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "device": here,
        "training_computed_on": computed_on,
        "command": " ".join(command) if command else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stage_seconds": {k: round(v, 2) for k, v in result.stage_seconds.items()},
        "cache_keys": result.cache_keys,
    }


def reference_for(scenario: Scenario) -> dict[str, dict[str, float]] | None:
    """The paper's values for the methods that Table I/II report."""
    if scenario.report.reference != "paper":
        return None
    out = {}
    for label, method in scenario.methods.items():
        rate = None if method.remaining_rate is None else round(method.remaining_rate, 3)
        values = PAPER_REFERENCE.get((method.kind, rate))
        if values is not None:
            out[label] = {**values, "target_accuracy": 0.95}
    return out


#: Name prefix of a report's staging directory in the output directory:
#: ``.partial-<pid>-<random>``.
STAGING_PREFIX = ".partial-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    return True


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove the staging directories that interrupted reports left in
    ``out_dir`` (``.partial-*``) and return them. A directory whose name holds
    the id of a running process other than this one is left alone: that
    process may be writing its report now. Names without a running process's
    id (fedsim 0.1.0 wrote ``.partial-<random>``) are stale."""
    import shutil

    removed = []
    for path in sorted(Path(out_dir).glob(f"{STAGING_PREFIX}*")):
        pid_text = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        pid = int(pid_text) if pid_text.isdigit() else None
        if not path.is_dir() or (pid is not None and pid != os.getpid() and _process_alive(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log.info("removed %d staging director%s left by an interrupted report in %s",
                 len(removed), "y" if len(removed) == 1 else "ies", out_dir)
    return removed


def write_outputs(result: ScenarioResult, out_dir: Path, command: Sequence[str] | None = None,
                  progress: bool = False) -> dict[str, Path]:
    """Write the tables, the resolved scenario, the provenance and the report.
    Every file is written atomically; earlier results are replaced only file by
    file once the new ones exist."""
    import json
    import shutil
    import tempfile

    from fedsim.report import write_report

    scenario = result.scenario
    final_dir = Path(out_dir)
    final_dir.mkdir(parents=True, exist_ok=True)
    # Everything is written into a hidden staging directory first and moved into
    # place only once complete: a crash while writing leaves earlier results intact.
    remove_stale_staging(final_dir)
    out_dir = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=final_dir))
    written: dict[str, Path] = {}

    def csv(frame: pd.DataFrame, name: str) -> None:
        store.write_text(out_dir / name, frame.to_csv(index=False))
        written[name] = out_dir / name

    def parquet(frame: pd.DataFrame, name: str) -> None:
        with store.atomic_write(out_dir / name) as handle:
            frame.to_parquet(handle, index=False)
        written[name] = out_dir / name

    csv(result.metrics, OUTPUTS["metrics"])
    parquet(result.metrics, OUTPUTS["metrics_parquet"])
    csv(result.rounds, OUTPUTS["rounds"])
    parquet(result.rounds, OUTPUTS["rounds_parquet"])
    parquet(result.timeline, OUTPUTS["timeline"])
    store.write_text(out_dir / OUTPUTS["resolved"], config.resolved_yaml(scenario))
    written[OUTPUTS["resolved"]] = out_dir / OUTPUTS["resolved"]
    prov = provenance(result, command)
    meta = {
        "name": scenario.name,
        "description": scenario.description,
        "targets": scenario.targets,
        "methods": list(scenario.methods),
        "deadline_s": scenario.system.rounds.deadline,
        "reference": reference_for(scenario),
        "provenance": {**{k: str(v) for k, v in prov.items()
                          if k in ("fedsim", "git_commit", "device", "command", "created")},
                       "training ran on": _ran_on(prov["training_computed_on"])},
    }
    start = time.perf_counter()
    written.update({name: out_dir / name for name in write_report(
        out_dir, result.rounds, result.metrics, result.timeline, meta,
        formats=scenario.report.formats, gantt_rounds=scenario.report.gantt_rounds)})
    prov["stage_seconds"]["report"] = round(time.perf_counter() - start, 2)
    store.write_text(out_dir / OUTPUTS["provenance"], json.dumps(prov, indent=2, sort_keys=True))
    written[OUTPUTS["provenance"]] = out_dir / OUTPUTS["provenance"]
    moved = {}
    for name in written:
        target = final_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out_dir / name, target)
        moved[name] = target
    shutil.rmtree(out_dir, ignore_errors=True)
    return moved


def run(scenario: Scenario, *, out_dir: Path | None = None, base_dir: Path | None = None,
        force: bool = False, progress: bool = False,
        command: Sequence[str] | None = None, cached_only: bool = False,
        continue_from: str | None = None) -> ScenarioResult:
    """Run a scenario end to end and write its report into ``out_dir``
    (default ``reports/<name>/``). ``cached_only``, ``continue_from``: see
    `compute`."""
    out_dir = Path(out_dir) if out_dir is not None else Path("reports") / scenario.name
    timer = _Timer()
    result = compute(scenario, base_dir=base_dir, force=force, progress=progress, timer=timer,
                     cached_only=cached_only, continue_from=continue_from)
    write_outputs(result, out_dir, command, progress)
    result.out_dir = out_dir
    total = sum(timer.seconds.values())
    log.info("done in %.1f s (%s)", total,
             ", ".join(f"{k} {v:.1f} s" for k, v in timer.seconds.items()))
    return result


def summary_line(result: ScenarioResult) -> str:
    """One line per method and target for the terminal."""
    lines = []
    for row in result.metrics.itertuples():
        nra = "not reached" if pd.isna(row.nra) else f"NRA {int(row.nra)}"
        tta = "" if (isinstance(row.tta_s, float) and math.isnan(row.tta_s)) else \
            f", TTA {row.tta_s / 60:.1f} min"
        lines.append(f"{row.method} @ {row.target_accuracy:g}: {nra}{tta}")
    return "\n".join(lines)


ProgressFn = Callable[[str], None]
