"""Run a scenario: every stage in order (`compute`), the tables (`join`), and
the outputs and report (`run`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedsim import cost, metrics
from fedsim.config import Scenario
from fedsim.learn import methods as learn_methods
from fedsim.learn.masks import Mask
from fedsim.learn.spec import MethodConfig
from fedsim.learn.trace import TrainingTrace
from fedsim.learn.zoo import ModelSpec
from fedsim.pipeline.asynchronous import async_system_stage, async_train_entry, step_plan
from fedsim.pipeline.data import DataCache, prepare_data
from fedsim.pipeline.keys import device_type, method_error, needed_iterations, pretrain_key
from fedsim.pipeline.policy import RunPolicy
from fedsim.pipeline.stages import pretrain_stage, system_stage
from fedsim.pipeline.training import train_entry, train_stage
from fedsim.progress import Progress
from fedsim.system import payload as system_payload
from fedsim.system.asynchronous import AsyncSchedule
from fedsim.system.sim import SystemResult

log = logging.getLogger(__name__)


@dataclass
class MethodResult:
    """One method's stages: its start, system simulation and training trace
    (``schedule``: an asynchronous method's FedBuff schedule, of which
    ``system`` is the conversion to rounds = server steps; None otherwise)."""

    label: str
    method: MethodConfig
    mask: Mask
    system: SystemResult
    trace: TrainingTrace
    payload: system_payload.Payload
    work_fraction: float
    schedule: AsyncSchedule | None = None


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
    #: how the stages shared the machine (`fedsim.pipeline.parallel`), for provenance.json
    schedule: dict[str, Any] = field(default_factory=dict)


class Timer:
    """Wall time of each stage (seconds), for the provenance file and the log."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def all_clients(participation: list[np.ndarray], n_clients: int) -> bool:
    """True when every one of ``n_clients`` clients was aggregated in every round."""
    return all(len(p) == n_clients for p in participation)


def resolve_model(scenario: Scenario, base_dir: Path | None = None) -> ModelSpec | None:
    """The scenario's classifier (`fedsim.learn.zoo.resolve`: imports and checks
    a factory, from ``base_dir``, the scenario's folder, first), or None for
    LeNet-300-100, which the hand-written kernel trains from the pre-training
    ticket's θ0.

    Raises:
        InputError: a factory that cannot be imported or built, or whose model
            does not fit the data (naming ``model.factory`` and the module; the
            data too when the model cannot take its samples).
    """
    if scenario.model.is_reference:
        return None
    from fedsim.data.resolve import data_sample
    from fedsim.learn.zoo import resolve

    sample_shape, num_classes, data = data_sample(scenario.data)  # a user npz's (resolved first)
    return resolve(scenario.model, scenario.seed, num_classes=num_classes, sample_shape=sample_shape,
                   data=data, base_dir=base_dir)


def model_start(model: ModelSpec) -> learn_methods.Start:
    """The start of the dense method on ``model``: its θ0 and an all-ones mask."""
    return learn_methods.Start(model.initial_params(), Mask.dense(model.layout.shapes))


def run_work(scenario: Scenario, iterations: int) -> dict[str, float]:
    """The whole work of a run, for its progress display: ``pretrain`` (the
    ``iterations`` IMP levels' epochs) and ``train`` (every method's
    ``rounds.max`` rounds), in estimated seconds of the cost model
    (`fedsim.cost`). Pruned methods' rounds weigh what dense ones do: training
    is dense. An asynchronous method's rounds are server steps of
    ``buffer_size`` updates each (`cost.round_s` with the method)."""
    return {"pretrain": iterations * scenario.pretrain.epochs * cost.pretrain_epoch_s(scenario),
            "train": scenario.rounds.max * sum(cost.round_s(scenario, m) for m in scenario.methods.values())}


def _policy(policy: RunPolicy | None, force: bool, progress: bool, cached_only: bool,
            continue_from: str | None) -> RunPolicy:
    """``policy``, or one made of the keyword flags (the older interface)."""
    flags = RunPolicy(force=force, cached_only=cached_only, continue_from=continue_from,
                      progress=progress)
    if policy is None:
        return flags
    if flags != RunPolicy():
        raise ValueError("give either policy or the flags force, progress, cached_only, continue_from")
    return policy


def source_device(scenario: Scenario, policy: RunPolicy) -> torch.device | None:
    """The device whose cached runs are continued (``policy.continue_from``), or None.

    Raises:
        InputError: it is the scenario's own device.
    """
    if policy.continue_from is None:
        return None
    device = device_type(scenario)
    if policy.continue_from == device:
        from fedsim.errors import InputError

        raise InputError(f"--continue-from {policy.continue_from}: the scenario runs on {device} "
                         "already; continue from the other device (cpu or cuda)")
    return torch.device(policy.continue_from)


def compute(scenario: Scenario, *, base_dir: Path | None = None, force: bool = False,
            progress: bool = False, timer: Timer | None = None,
            cached_only: bool = False, continue_from: str | None = None,
            policy: RunPolicy | None = None, data_cache: DataCache | None = None,
            workers: int | None = None, bar: Progress | None = None) -> ScenarioResult:
    """Run (or fetch from the cache) every stage of ``scenario``; no report.

    ``policy`` says how the cache is treated (`RunPolicy`); the keyword flags
    ``force``, ``progress``, ``cached_only`` and ``continue_from`` are the
    same, for callers that predate it (give one or the other). In short:
    ``cached_only`` trains nothing and reports what the cache holds;
    ``continue_from`` (``"cpu"`` or ``"cuda"``) continues each method's cached
    run on that device on this scenario's device (see `train_entry`). Give it
    again to report such a run (with ``cached_only``). ``data_cache``: where
    the data is memoised (default: the process's `SHARED_DATA`).
    ``workers``: worker processes (default: the scenario's
    ``parallel.workers``); with more than one, the pre-training and the
    methods run as a dependency graph on them first (`fedsim.pipeline.parallel`)
    and the stages below then read the cache. ``bar``: a progress display to
    report to instead of a new one (a parallel worker's).

    Raises:
        ValueError: ``force`` with ``cached_only``; both a policy and flags.
        InputError: ``continue_from`` is the scenario's own device; a stage
            missing under ``cached_only``; a device missing on this machine.
    """
    policy = _policy(policy, force, progress, cached_only, continue_from)
    timer = timer or Timer()
    from fedsim.data.resolve import resolve_data_files  # a bad npz or partition file stops here

    scenario = resolve_data_files(scenario, base_dir)
    device = torch.device(device_type(scenario))
    continued = source_device(scenario, policy)
    model = resolve_model(scenario, base_dir)  # a bad factory stops here, before any stage
    from fedsim.learn.plugins import MethodHookError, check_methods

    check_methods(scenario, base_dir)  # and a method plugin that cannot be imported
    from fedsim.system.availability import check_sessions

    check_sessions(scenario.system.clients.sessions, scenario.data.partition.num_clients, base_dir)
    from fedsim.system.cells import check_links  # a bad bandwidth trace stops here too

    check_links(scenario.system, scenario.data.partition.num_clients, base_dir)
    from fedsim.system.devices import check_device_trace  # and a bad device trace

    check_device_trace(scenario.system.clients.device_trace, scenario.data.partition.num_clients, base_dir)
    with timer.stage("data"):
        data = prepare_data(scenario, data_cache)
    log.info("data: %s, %d clients (%d-%d samples), %d unlabeled, %d test",
             scenario.data.source_name, data.clients.num_clients, data.client_samples.min(),
             data.client_samples.max(), len(data.unlabeled), len(data.test_y))

    iterations = max(needed_iterations(scenario, m) for m in scenario.methods.values())
    from fedsim.pipeline.parallel import run_parallel
    from fedsim.pipeline.threads import torch_threads

    with timer.stage("parallel"):  # ~0 s on the sequential schedule
        parallel = run_parallel(scenario, base_dir, policy, reference_model=model is None or iterations > 0,
                                workers=workers, work=run_work(scenario, iterations),
                                level0=lambda: pretrain_stage(scenario, data, 0, device, policy=policy, model=model))
    if parallel["workers"] > 1:  # every stage is cached now; below reads it
        policy = replace(policy, progress=False)
    else:
        timer.seconds.pop("parallel", None)
    # one line over the whole run: every pre-training epoch and every method's rounds
    with (bar or Progress("scenario", run_work(scenario, iterations), enabled=policy.progress,
                          upper_bound=scenario.rounds.stop_when_reached)) as bar, \
            torch_threads(parallel.get("threads") if parallel["workers"] == 1 else None):
        with timer.stage("pretrain"):
            # LeNet-300-100 always starts from the ticket's θ0; lenet-5 (conv DAE) only when a
            # method pre-trains or prunes; other models have no DAE: dense methods only (validated)
            ticket = (pretrain_stage(scenario, data, iterations, device, policy=policy, bar=bar, model=model)
                      if model is None or iterations > 0 else None)

        results: dict[str, MethodResult] = {}
        keys: dict[str, str] = {"pretrain": pretrain_key(scenario)}
        for label, method in scenario.methods.items():
            try:
                plugin = learn_methods.is_plugin(method.kind)
                if model is not None and (ticket is None or plugin):  # a plugin there gets the model's Start
                    own = model_start(model)
                    start = learn_methods.build(method, own, seed=scenario.seed) if plugin else own
                else:  # from the ticket: LeNet-300-100, and lenet-5 when a method pre-trains
                    start = learn_methods.build(method, ticket, seed=scenario.seed)
            except ValueError as exc:
                raise method_error(scenario, method, exc) from None
            except MethodHookError as exc:  # exit 1: a plugin's bug, the cached stages kept
                raise MethodHookError(f"methods.{label}: {exc}") from exc.__cause__
            compute_scale = 1.0 if model is None else model.compute_scale
            plan, fedbuff = None, None
            with timer.stage("system"):
                if method.asynchronous is not None:  # FedBuff: the schedule, its rounds = server steps
                    fedbuff, system, payload, work = async_system_stage(
                        scenario, start.mask, data.client_samples, base_dir, method, policy=policy,
                        compute_scale=compute_scale)
                    plan = step_plan(fedbuff)
                else:
                    system, payload, work = system_stage(
                        scenario, start.mask, data.client_samples, base_dir, policy=policy,
                        compute_scale=compute_scale, method=method)
            participation = (None if all_clients(system.participation, data.clients.num_clients)
                             else system.participation)
            if plan is not None:
                entry, source = async_train_entry(scenario, method, plan, device), None
            else:
                entry, source = train_entry(scenario, method, participation, device, continued)
            keys[f"train/{label}"] = entry.key
            with timer.stage("train"):
                try:
                    trace = train_stage(scenario, label, start.params, start.mask, data, participation,
                                        device, entry, source, policy=policy, bar=bar, model=model, plan=plan)
                except MethodHookError as exc:  # a plugin's transform/aggregate: exit 1, checkpoints kept
                    raise MethodHookError(f"methods.{label}: {exc}") from exc.__cause__
            last = trace.rounds.iloc[-1] if trace.num_rounds else None
            log.info("%s: P_R %.4f, %d rounds, final accuracy %s, %.1f MB per round", label,
                     start.mask.remaining_rate, trace.num_rounds,
                     "n/a" if last is None else f"{last['accuracy']:.4f}",
                     float(system.rounds["round_bytes"].iloc[0]) / 1e6)
            results[label] = MethodResult(label, method, start.mask, system, trace, payload, work, fedbuff)

    with timer.stage("metrics"):
        rounds, table, timeline = join(scenario, results)
    from fedsim.report.scenario.tables import empty_rounds, empty_rounds_text

    empty = empty_rounds(rounds)
    if empty:
        log.warning("%s No update reached the server in those rounds (no client available, or "
                    "every selected one dropped out or missed the deadline); the model did not "
                    "change in them.", empty_rounds_text(empty, rounds))
    return ScenarioResult(scenario, rounds, table, timeline, results, timer.seconds, keys,
                          schedule=parallel)


def join(scenario: Scenario, results: dict[str, MethodResult]
         ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """rounds.csv, metrics.csv and the timeline of all methods.

    Energy (``system.energy``) is computed here from each cached timeline
    (`fedsim.system.energy`), so it enters no cache key: rounds.csv gets
    ``ENERGY_ROUNDS_COLUMNS`` last, metrics.csv ``eta_j``, the timeline the
    per-client joules (``CLIENT_ENERGY_COLUMNS``) after its own columns."""
    from fedsim.system import energy as system_energy

    frames, timelines, info = [], [], {}
    for label, result in results.items():
        n = result.trace.num_rounds
        sys_rounds = result.system.rounds.iloc[:n].reset_index(drop=True)
        trace = result.trace.rounds
        timeline = result.system.timeline
        timeline = timeline[timeline["round"] <= n].reset_index(drop=True)
        joules = system_energy.energy_frame(timeline, scenario.system.energy)
        per_round = system_energy.round_energy(joules, timeline["selected"], n)
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
            "round_energy_j": per_round["round_energy_j"].to_numpy(),
            "mean_client_energy_j": per_round["mean_client_energy_j"].to_numpy(),
        }))
        timeline = pd.concat([timeline, joules.drop(columns=["round", "client_id"])], axis=1)
        timelines.append(timeline.assign(method=label)[["method", *timeline.columns]])
        info[label] = {"remaining_rate": result.mask.remaining_rate,
                       "params": result.payload.sent_params}
    rounds = metrics.rounds_table(pd.concat(frames, ignore_index=True))
    table = metrics.metrics_table(rounds, scenario.targets, info)
    return rounds, table, pd.concat(timelines, ignore_index=True)


def run(scenario: Scenario, *, out_dir: Path | None = None, base_dir: Path | None = None,
        force: bool = False, progress: bool = False,
        command: Sequence[str] | None = None, cached_only: bool = False,
        continue_from: str | None = None, policy: RunPolicy | None = None) -> ScenarioResult:
    """Run a scenario end to end and write its report into ``out_dir``
    (default ``reports/<name>/``). ``policy`` or the flags: see `compute`."""
    from fedsim.pipeline.outputs import write_outputs

    policy = _policy(policy, force, progress, cached_only, continue_from)
    out_dir = Path(out_dir) if out_dir is not None else Path("reports") / scenario.name
    timer = Timer()
    result = compute(scenario, base_dir=base_dir, timer=timer, policy=policy)
    write_outputs(result, out_dir, command, policy.progress)
    result.out_dir = out_dir
    total = sum(timer.seconds.values())
    log.info("done in %.1f s (%s)", total,
             ", ".join(f"{k} {v:.1f} s" for k, v in timer.seconds.items()))
    return result
