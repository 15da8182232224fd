"""Planning a study: its tasks, the stages they share, what the cache holds,
and an estimated time (``fedsim sweep --plan``).

Each cell is a scenario; each of its stages has a cache key
(`fedsim.pipeline.keys`): the pre-training ticket, a training trace per method
and a system simulation per method. The planner groups the cells' stages with
the pipeline's own group functions (``keys.train_group``,
``keys.system_group``): cells that differ only in system settings share their
traces whenever participation does not depend on the system (every client in
every round), so a link-speed x pruning-rate grid needs one pre-training, one
training per method and rate, and one simulation per cell and method. The plan
counts them, checks the cache (``store.CacheEntry.valid()``) and estimates the
time with the cost model `fedsim.cost.COST_MODEL` by running the `Scheduler`
on estimated durations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedsim import cost, store
from fedsim.config import Scenario
from fedsim.cost import COST_MODEL
from fedsim.pipeline import keys
from fedsim.pipeline.data import client_samples
from fedsim.pipeline.stages import payload_and_work
from fedsim.store import artifacts
from fedsim.study.schedule import (
    Scheduler,
    StageKey,
    default_workers,
    threads_for,
    threads_when_busy,
)
from fedsim.study.spec import Cell, Study


@dataclass
class TaskPlan:
    """One method of one cell: the stages it touches, (stage, key) -> demand
    (pre-training iterations, training rounds, 0 for a simulation), and the
    estimated seconds of computing each (1 thread; 0 when cached).

    ``torch_keys``: the stages whose time shrinks with more torch threads."""

    cell: Cell
    label: str
    demands: dict[StageKey, int]
    costs_s: dict[StageKey, float]
    torch_keys: set[StageKey] = field(default_factory=set)

    @property
    def id(self) -> str:
        """``c003/hp-fl``."""
        return f"{self.cell.id}/{self.label}"

    @property
    def order(self) -> tuple[int, int]:
        """(cell index, method index): the order of the study's outputs."""
        return self.cell.index, list(self.cell.scenario.methods).index(self.label)


class CacheProbe:
    """What the cache already holds, with the exact keys where they can be
    computed cheaply: the ticket's levels, the traces' rounds, and (when the
    ticket is cached, so masks are known) the system entries."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._tickets: dict[str, Any] = {}
        self._samples: dict[str, np.ndarray] = {}

    def pretrain_levels(self, key: str) -> int:
        """Levels of the cached ticket of ``key`` (-1: none)."""
        entry = store.CacheEntry("pretrain", key)
        if not entry.valid():
            return -1
        return int(((entry.manifest() or {}).get("info") or {}).get("iterations", -1))

    def train_rounds(self, key: str, scenario: Scenario) -> int:
        """Rounds of the cached trace of ``key`` (-1: none); a trace that reached
        every target under ``stop_when_reached`` counts as complete."""
        entry = store.CacheEntry("train", key)
        if not entry.valid():
            return -1
        rounds = int(((entry.manifest() or {}).get("info") or {}).get("rounds", 0))
        if rounds < scenario.rounds.max and scenario.rounds.stop_when_reached:
            from fedsim.learn.trace import TrainingTrace

            files = sorted((entry.manifest() or {}).get("files", {}))
            try:
                trace = TrainingTrace.load(entry.path / next(
                    f for f in files if f.startswith(artifacts.TRACE_PREFIX)))
            except (OSError, ValueError, StopIteration):
                return -1
            accuracy = trace.accuracy
            if len(accuracy) and all(np.nanmax(accuracy) >= t for t in scenario.targets):
                return scenario.rounds.max
        return rounds

    def _ticket(self, scenario: Scenario) -> Any:
        from fedsim.learn.pretrain import Ticket

        key = keys.pretrain_key(scenario)
        if key not in self._tickets:
            entry = store.CacheEntry("pretrain", key)
            try:
                self._tickets[key] = Ticket.load(entry.path / artifacts.TICKET) if entry.valid() else None
            except (OSError, ValueError, KeyError):
                self._tickets[key] = None
        return self._tickets[key]

    def _client_samples(self, scenario: Scenario) -> np.ndarray:
        """Samples per client, as the pipeline partitions the data; once per
        data key (the cells of a study share their data)."""
        key = store.stable_hash(keys.data_key(scenario))
        if key not in self._samples:
            self._samples[key] = client_samples(scenario)
        return self._samples[key]

    def system(self, scenario: Scenario, label: str) -> tuple[bool, str | None]:
        """(the simulation is cached, the exact training key when it could be
        derived from the cached simulation's participation)."""
        import torch

        from fedsim.learn import methods as learn_methods
        from fedsim.system.sim import load_result

        ticket = self._ticket(scenario)
        method = scenario.methods[label]
        if ticket is None or ticket.iterations < keys.needed_iterations(scenario, method):
            return False, None
        try:
            start = learn_methods.build(method, ticket, seed=scenario.seed)
        except (ValueError, RuntimeError):  # RuntimeError: a plugin's start hook failed
            return False, None
        payload, work = payload_and_work(scenario, start.mask, method)
        samples = self._client_samples(scenario)
        if method.asynchronous is not None:
            return self._async_system(scenario, method, payload, work, samples)
        entry = store.CacheEntry("system", keys.system_key(scenario, payload, work, samples,
                                                           self.base_dir, method))
        if not entry.valid():
            return False, None
        if keys.everyone_every_round(scenario):
            return True, None
        try:
            participation = load_result(entry.path).participation
        except (OSError, ValueError, KeyError):
            return True, None
        everyone = all(len(p) == len(samples) for p in participation)
        key = keys.train_key(scenario, method, None if everyone else participation,
                             torch.device(keys.device_type(scenario)))
        return True, key

    def _async_system(self, scenario: Scenario, method: Any, payload: Any, work: float,
                      samples: np.ndarray) -> tuple[bool, str | None]:
        """`system` for a FedBuff method (`fedsim.pipeline.asynchronous`): its
        schedule's entry, and the training key of the step plan it holds."""
        import torch

        from fedsim.pipeline import asynchronous as fedbuff

        entry = store.CacheEntry("system", fedbuff.async_system_key(scenario, payload, work, samples,
                                                                    self.base_dir, method))
        if not entry.valid():
            return False, None
        try:
            plan = fedbuff.step_plan(fedbuff.load_schedule(entry.path, method))
        except (OSError, ValueError, KeyError):
            return True, None
        device = torch.device(keys.device_type(scenario))
        return True, fedbuff.async_train_entry(scenario, method, plan, device).key


def _plan_task(cell: Cell, label: str, probe: CacheProbe,
               cached: dict[StageKey, int]) -> TaskPlan:
    """The stages of one method of a cell with their demands and costs;
    ``cached`` collects what the cache holds (stage key -> levels or rounds)."""
    scenario = cell.scenario
    method = scenario.methods[label]
    rounds = scenario.rounds.max

    pre: StageKey = ("pretrain", keys.pretrain_key(scenario))
    sim: StageKey = ("system", keys.system_group(scenario, label, probe.base_dir))
    train: StageKey = ("train", keys.train_group(scenario, label, probe.base_dir))
    iterations = keys.needed_iterations(scenario, method)
    if pre not in cached:
        cached[pre] = probe.pretrain_levels(pre[1])
    if sim not in cached:
        is_cached, exact = probe.system(scenario, label)
        cached[sim] = 0 if is_cached else -1
        if exact is not None and train not in cached:
            cached[train] = probe.train_rounds(exact, scenario)
    if train not in cached:
        exact_key = train[1] if keys.everyone_every_round(scenario) else None
        cached[train] = probe.train_rounds(exact_key, scenario) if exact_key else -1

    step_s = cost.round_s(scenario)
    if method.asynchronous is not None:  # a FedBuff step trains M updates, not a round's K
        step_s *= min(1.0, method.asynchronous.buffer_size / scenario.data.partition.num_clients)
    costs = {
        pre: (max(0, iterations - max(cached[pre], 0)) * scenario.pretrain.epochs
              * cost.pretrain_epoch_s(scenario)),
        train: max(0, rounds - max(cached[train], 0)) * step_s,
        sim: 0.0 if cached[sim] >= 0 else cost.simulation_s(scenario),
    }
    return TaskPlan(cell, label, {pre: iterations, train: rounds, sim: 0}, costs, {pre, train})


@dataclass
class StudyPlan:
    """What a study needs: distinct stages, what the cache holds, the tasks'
    roles and an estimated time."""

    study: Study
    tasks: list[TaskPlan]
    cached: dict[StageKey, int]
    workers: int
    roles: dict[str, str]
    estimate_s: float
    executor: str = "local"
    #: task id -> its estimated seconds in the planned schedule (the weight of
    #: the task in the sweep's progress: tasks differ hugely in cost)
    task_estimates_s: dict[str, float] = field(default_factory=dict)

    @property
    def threads(self) -> int:
        """Torch threads per task when every worker is busy."""
        return threads_when_busy(self.workers)

    def _count(self, stage: str) -> tuple[int, int]:
        need: dict[StageKey, int] = {}
        for task in self.tasks:
            for key, demand in task.demands.items():
                if key[0] == stage:
                    need[key] = max(need.get(key, -1), demand)
        cached = sum(1 for k, d in need.items() if self.cached.get(k, -1) >= d)
        return len(need), cached

    @property
    def stage_counts(self) -> dict[str, tuple[int, int]]:
        """stage -> (distinct stages, of which cached)."""
        return {stage: self._count(stage) for stage in ("pretrain", "train", "system")}

    def describe(self) -> str:
        """The plan as text (``fedsim sweep --plan``)."""
        study = self.study
        spec = study.spec
        sizes = " x ".join(f"{len(axis.values)} {a}" for a, axis in study.axes.items())
        seeds = len(spec.seeds) if spec.seeds else 1
        methods = len(self.tasks) // max(1, len(study.cells))
        lines = [f"study {study.name} ({study.path}): {len(study.cells)} cells = {sizes} "
                 f"({spec.mode}) x {seeds} seed{'s' if seeds != 1 else ''}; "
                 f"{len(self.tasks)} tasks (cell x method, {methods} methods)",
                 f"base scenario: {study.base_path}"]
        if spec.set:
            lines.append("set: " + ", ".join(f"{k}={v}" for k, v in spec.set.items()))
        names = {"pretrain": "pre-trainings", "train": "trainings", "system": "simulations"}
        lines.append("distinct stages:")
        for stage, (total, cached) in self.stage_counts.items():
            lines.append(f"  {names[stage]:<14} {total:>5}   ({cached} cached, {total - cached} to run)")
        roles = {role: sum(1 for r in self.roles.values() if r == role)
                 for role in ("pre-train", "train", "simulate", "cached")}
        lines.append(f"tasks: {roles['pre-train']} pre-train, {roles['train']} train, "
                     f"{roles['simulate']} only simulate (traces from the cache), "
                     f"{roles['cached']} only read the cache")
        lines.append(f"execution: {self.executor}, {self.workers} worker"
                     f"{'s' if self.workers != 1 else ''}; no stage is computed by two at once")
        lines.append(f"estimated time: {_format_duration(self.estimate_s)} (cost model "
                     "fedsim.study.COST_MODEL, calibrated on a 2-core development CPU)")
        return "\n".join(lines)


def _format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _role(todo: set[StageKey]) -> str:
    stages = {k[0] for k in todo}
    for stage, role in (("pretrain", "pre-train"), ("train", "train"), ("system", "simulate")):
        if stage in stages:
            return role
    return "cached"


def _simulate_schedule(tasks: Sequence[TaskPlan], cached: Mapping[StageKey, int], workers: int,
                       ) -> tuple[float, dict[str, str], dict[str, float]]:
    """Run the scheduler on estimated durations: (makespan s, task -> role,
    task -> estimated seconds). A task's torch stages take their 1-thread
    cost over sqrt(threads), the cost model's assumption for torch threads."""
    scheduler = Scheduler(tasks, cached)
    roles: dict[str, str] = {}
    durations: dict[str, float] = {}
    clock = 0.0
    running: list[tuple[float, int, TaskPlan]] = []
    counter = itertools.count()
    while scheduler.pending or running:
        batch = []
        while len(running) + len(batch) < workers and (task := scheduler.next_ready()) is not None:
            batch.append(task)
        threads = threads_for(len(running) + len(batch), workers)
        for task in batch:
            todo = scheduler.claims[task.id]
            torch_s = sum(task.costs_s[k] for k in todo if k in task.torch_keys)
            other_s = sum(task.costs_s[k] for k in todo if k not in task.torch_keys)
            roles[task.id] = _role(todo)
            duration = COST_MODEL["task_s"] + other_s + torch_s / math.sqrt(threads)
            durations[task.id] = duration
            running.append((clock + duration, next(counter), task))
        if not running:
            break
        running.sort(key=lambda r: r[:2])
        clock, _, task = running.pop(0)
        scheduler.finish(task, ok=True)
    return clock, roles, durations


def plan(study: Study, *, workers: int | None = None, executor: str = "local") -> StudyPlan:
    """Plan ``study``: its distinct pre-trainings, trainings and simulations,
    which the cache holds, the tasks' roles and an estimated time for
    ``workers`` workers (default: min(CPU count, tasks)). Reads the cache and
    runs nothing heavy (a cached ticket and the dataset's labels may be loaded
    to derive the exact simulation keys)."""
    from fedsim.learn.plugins import check_methods

    for cell in study.cells:  # method plugins: imported from the study's folder, checked (exit 2)
        check_methods(cell.scenario, study.base_dir)
    probe = CacheProbe(study.base_dir)
    cached: dict[StageKey, int] = {}
    tasks = [_plan_task(cell, label, probe, cached)
             for cell in study.cells for label in cell.scenario.methods]
    workers = workers or default_workers(len(tasks))
    makespan_s, roles, durations = _simulate_schedule(tasks, cached, workers)
    estimate_s = makespan_s + COST_MODEL["report_s"] + (COST_MODEL["startup_s"] if workers > 1 else 0)
    return StudyPlan(study, tasks, cached, workers, roles, estimate_s, executor, durations)
