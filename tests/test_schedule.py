"""The study scheduler on hand-made plans: no stage is computed by two tasks at
once, a task waits for the pre-training and training it needs, a failed task
hands its stages to the next one, workers are never exceeded, and torch threads
follow the number of running tasks. The planner's estimate is checked against
a schedule worked out by hand."""

from __future__ import annotations

import math
import os
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from fedsim import config
from fedsim.cost import COST_MODEL
from fedsim.progress import Progress
from fedsim.study.executors import TaskOutcome
from fedsim.study.planner import TaskPlan, _simulate_schedule
from fedsim.study.runner import _execute
from fedsim.study.schedule import Scheduler, default_workers, threads_for, threads_when_busy
from fedsim.study.spec import Cell

TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"

LEVELS, ROUNDS = 3, 10
P = ("pretrain", "p")
P2 = ("pretrain", "p2")


@pytest.fixture(scope="module")
def scenario() -> config.Scenario:
    return config.load(TINY)


def task(scenario: config.Scenario, index: int, pretrain: tuple[str, str], train: str,
         costs: tuple[float, float, float] = (100.0, 40.0, 2.0)) -> TaskPlan:
    """A task of cell ``index``: ``pretrain``, training ``train``, its own simulation."""
    label = next(iter(scenario.methods))
    cell = Cell(f"c{index:03d}", index, {}, {}, {}, 0, scenario)
    stages = [pretrain, ("train", train), ("system", f"s{index}")]
    demands = dict(zip(stages, (LEVELS, ROUNDS, 0), strict=True))
    return TaskPlan(cell, label, demands, dict(zip(stages, costs, strict=True)), set(stages[:2]))


def ids(tasks: list[TaskPlan | None]) -> list[str | None]:
    return [t.cell.id if t is not None else None for t in tasks]


# --------------------------------------------------------------------------- the scheduler


def test_a_task_waits_for_the_pretraining_it_needs(scenario: config.Scenario) -> None:
    a, b, c = (task(scenario, 0, P, "t1"), task(scenario, 1, P, "t2"), task(scenario, 2, P, "t1"))
    scheduler = Scheduler([a, b, c], {})
    assert ids([scheduler.next_ready()]) == ["c000"]  # ties in cell order
    assert scheduler.claims["c000/" + a.label] == set(a.demands)
    assert scheduler.ready() == [] and scheduler.next_ready() is None  # both need a's pre-training
    scheduler.finish(a, ok=True)
    # the pre-training and t1 are done: b trains t2, c only simulates (b has more work)
    assert scheduler.todo(b) == {("train", "t2"), ("system", "s1")}
    assert scheduler.todo(c) == {("system", "s2")}
    assert ids([scheduler.next_ready(), scheduler.next_ready(), scheduler.next_ready()]) == [
        "c001", "c002", None]


def test_a_task_waits_for_the_training_it_shares(scenario: config.Scenario) -> None:
    a, b, c = (task(scenario, 0, P, "t1"), task(scenario, 1, P, "t2"), task(scenario, 2, P, "t1"))
    scheduler = Scheduler([a, b, c], {P: LEVELS})  # the ticket is cached
    assert ids([scheduler.next_ready(), scheduler.next_ready(), scheduler.next_ready()]) == [
        "c000", "c001", None]  # c trains t1 as a does: it waits
    scheduler.finish(b, ok=True)
    assert scheduler.next_ready() is None
    scheduler.finish(a, ok=True)
    assert ids([scheduler.next_ready()]) == ["c002"]
    assert scheduler.claims[c.id] == {("system", "s2")}


def test_cached_stages_count_only_with_the_demand_met(scenario: config.Scenario) -> None:
    a = task(scenario, 0, P, "t1")
    assert P in Scheduler([a], {P: LEVELS - 1}).todo(a)  # a ticket with too few levels grows
    assert P not in Scheduler([a], {P: LEVELS}).todo(a)
    assert ("train", "t1") in Scheduler([a], {("train", "t1"): ROUNDS - 1}).todo(a)
    assert Scheduler([a], {P: -1}).done == {}  # -1: nothing cached


def test_most_work_first(scenario: config.Scenario) -> None:
    cheap = task(scenario, 0, P, "t1", costs=(1.0, 1.0, 1.0))
    dear = task(scenario, 1, P2, "t2", costs=(1.0, 50.0, 1.0))
    scheduler = Scheduler([cheap, dear], {})
    assert ids(scheduler.ready()) == ["c001", "c000"]
    # a stage that is done costs nothing any more: the order turns
    scheduler = Scheduler([cheap, dear], {("train", "t2"): ROUNDS})
    assert ids(scheduler.ready()) == ["c000", "c001"]


def test_a_failed_task_hands_its_stages_on(scenario: config.Scenario) -> None:
    a, b = task(scenario, 0, P, "t1"), task(scenario, 1, P, "t2")
    scheduler = Scheduler([a, b], {})
    assert scheduler.next_ready() is a
    scheduler.finish(a, ok=False)
    assert scheduler.claimed == {} and P not in scheduler.done
    assert scheduler.next_ready() is b
    assert P in scheduler.claims[b.id]  # b computes the pre-training now


# --------------------------------------------------------------------------- execution


class FakeBackend:
    """An executor that finishes tasks in the order they were submitted and
    records what ran at once and with how many threads."""

    name = "fake"

    def __init__(self, workers: int, scheduler_view: dict[str, Any], fail: set[str] = frozenset()) -> None:
        self.workers = workers
        self.view = scheduler_view  # task id -> stages it computes, filled by submit
        self.fail = fail
        self.queue: deque[TaskPlan] = deque()
        self.threads: list[tuple[str, int]] = []
        self.most_at_once = 0
        self.computed: dict[tuple[str, str], list[str]] = {}
        self.done: dict[tuple[str, str], int] = {}

    def slots(self) -> int:
        return self.workers - len(self.queue)

    def running(self) -> int:
        return len(self.queue)

    def submit(self, task: TaskPlan, threads: int) -> None:
        todo = {k for k, d in task.demands.items() if self.done.get(k, -1) < d}
        busy = {k for t in self.queue for k in self.view[t.id]}
        assert not todo & busy, f"{task.id} computes {todo & busy} beside a running task"
        self.view[task.id] = todo
        for key in todo:
            self.computed.setdefault(key, []).append(task.id)
        self.queue.append(task)
        self.threads.append((task.id, threads))
        self.most_at_once = max(self.most_at_once, len(self.queue))

    def wait_any(self) -> list[tuple[TaskPlan, TaskOutcome]]:
        task = self.queue.popleft()
        if task.id in self.fail:
            return [(task, TaskOutcome(task.id, None, 0.0, "fake", error="RuntimeError: injected"))]
        for key, demand in task.demands.items():
            self.done[key] = max(self.done.get(key, -1), demand)
        return [(task, TaskOutcome(task.id, None, 0.0, "fake"))]


class FakePlan:
    def __init__(self, tasks: list[TaskPlan], workers: int) -> None:
        self.tasks, self.cached, self.workers, self.task_estimates_s = tasks, {}, workers, {}


def grid(scenario: config.Scenario) -> list[TaskPlan]:
    """12 cells: two pre-trainings, four trainings (3 cells each)."""
    return [task(scenario, i, P if i < 6 else P2, f"t{i // 3}") for i in range(12)]


def run_fake(tasks: list[TaskPlan], workers: int, fail: set[str] = frozenset()) -> FakeBackend:
    backend = FakeBackend(workers, {}, fail)
    outcomes = _execute(FakePlan(tasks, workers), backend,
                        Progress("study", {"tasks": 1.0}, enabled=False))
    assert list(outcomes) != [] and set(outcomes) == {t.id for t in tasks}
    return backend


def test_execution_never_computes_a_stage_twice(scenario: config.Scenario,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    backend = run_fake(grid(scenario), workers=3)
    assert backend.most_at_once == 3  # the workers are used ...
    assert all(len(ran) == 1 for ran in backend.computed.values())  # ... and no stage twice
    assert len(backend.computed) == 2 + 4 + 12
    # the two pre-trainings start first, each alone among its cells, with half
    # the cores; then c000's training t0 is done: c003 trains t1 (most work
    # first) and c001 only simulates, with 8 // 3 running = 2 threads
    started = [(task_id.split("/")[0], threads) for task_id, threads in backend.threads]
    assert started[:4] == [("c000", 4), ("c006", 4), ("c003", 2), ("c001", 2)]


def test_execution_retries_a_failed_stage_elsewhere(scenario: config.Scenario) -> None:
    tasks = grid(scenario)
    backend = run_fake(tasks, workers=2, fail={tasks[0].id})
    # the pre-training of c000 failed; the next cell of the same ticket computed it
    assert backend.computed[P] == [tasks[0].id, tasks[1].id]
    assert all(len(ran) == 1 for key, ran in backend.computed.items() if key != P
               and key != ("train", "t0"))


def test_threads_follow_the_running_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert threads_for(1, 4) == 8  # a lone pre-training gets every core
    assert threads_for(2, 4) == 4
    assert threads_for(4, 4) == 2
    assert threads_for(3, 16) == 2  # more workers than cores: never fewer than cores // running
    assert threads_for(16, 16) == 1
    assert threads_when_busy(4) == 2 and threads_when_busy(16) == 1
    assert default_workers(3) == 3 and default_workers(100) == 8 and default_workers(0) == 1


# --------------------------------------------------------------------------- the estimate


def test_estimate_follows_the_schedule(scenario: config.Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """4 cores, 2 workers, no per-task overhead. c000 pre-trains and trains t1
    alone (4 threads): 2 + (100 + 40) / sqrt(4) = 72 s. Then c001 trains t2
    (2 threads: 2 + 40 / sqrt(2) s) beside c002, which only simulates (2 s)."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setitem(COST_MODEL, "task_s", 0.0)
    tasks = [task(scenario, 0, P, "t1"), task(scenario, 1, P, "t2"), task(scenario, 2, P, "t1")]
    makespan_s, roles, durations = _simulate_schedule(tasks, {}, workers=2)
    assert [roles[t.id] for t in tasks] == ["pre-train", "train", "simulate"]
    assert [durations[t.id] for t in tasks] == pytest.approx([72.0, 2 + 40 / math.sqrt(2), 2.0])
    assert makespan_s == pytest.approx(72.0 + 2 + 40 / math.sqrt(2))
    # everything cached: every task only reads the cache
    cached = {k: d for t in tasks for k, d in t.demands.items()}
    makespan_s, roles, _ = _simulate_schedule(tasks, cached, workers=2)
    assert set(roles.values()) == {"cached"} and makespan_s == 0.0
