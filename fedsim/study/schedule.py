"""Which task of a study runs next, and with how many torch threads.

A study runs as tasks (one method of one cell, `fedsim.study.planner.TaskPlan`),
each touching stages: a pre-training, a training and a system simulation,
named by ``(stage, key)`` with a *demand* (pre-training levels, training rounds,
0 for a simulation). Tasks of different cells share stages (one pre-training for
a whole study, one training for every link speed), and no stage may be computed
by two workers at once: the second would redo the work, or both would write the
same cache entry. The `Scheduler` hands out tasks accordingly; the planner runs
it on estimated durations (the study's time estimate) and the executors on
real ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the plan builds tasks; the scheduler only reads them
    from fedsim.study.planner import TaskPlan

StageKey = tuple[str, str]  # (stage, key): ("train", "3fa2...")


class Scheduler:
    """Hands out tasks so that no stage is computed by two workers at once.

    A stage is *done* once a finished task computed it (or the cache holds it)
    with at least the demand asked for (pre-training levels, training rounds);
    a pending task is *ready* when none of its stages that are not done is
    claimed by a running task. Among ready tasks the one with the most work
    left goes first (pre-training, then training, then simulation only), ties
    in cell order. A failed task releases its claims, so another task that
    needs the stage computes it (resuming from the checkpoints the failed one
    left).

    A task may also name stages that other tasks compute and that must be
    done before it starts (``after``: stage -> demand; a scenario's pruned
    methods wait for its pre-training task this way, `fedsim.pipeline.parallel`).
    A study's tasks have none: each computes every stage it needs.

    Args:
        tasks: the tasks to run (``id``, ``order``, ``demands``, ``costs_s``,
            optionally ``after``).
        done: stage -> the demand the cache already holds (-1: nothing).
    """

    def __init__(self, tasks: Sequence[TaskPlan], done: Mapping[StageKey, int]) -> None:
        self.pending: list[TaskPlan] = list(tasks)
        self.done: dict[StageKey, int] = {k: v for k, v in done.items() if v >= 0}
        self.claimed: dict[StageKey, str] = {}
        self.claims: dict[str, set[StageKey]] = {}

    def todo(self, task: TaskPlan) -> set[StageKey]:
        """The stages ``task`` would compute now."""
        return {k for k, d in task.demands.items() if self.done.get(k, -1) < d}

    def waits(self, task: TaskPlan) -> bool:
        """True while a stage ``task`` must start after is not done."""
        after: Mapping[StageKey, int] = getattr(task, "after", None) or {}
        return any(self.done.get(k, -1) < d for k, d in after.items())

    def ready(self) -> list[TaskPlan]:
        """The pending tasks that could start now, most work first."""
        ready = []
        for task in self.pending:
            todo = self.todo(task)
            if not any(k in self.claimed for k in todo) and not self.waits(task):
                # the tiny term breaks ties between cached-only tasks by their stages to do
                ready.append((-sum(task.costs_s.get(k, 0.0) for k in todo) - 1e-9 * len(todo),
                              task.order, task))
        return [t for *_, t in sorted(ready, key=lambda r: r[:2])]

    def next_ready(self) -> TaskPlan | None:
        """The next task to start (its stages claimed), or None if none is ready."""
        for task in self.ready():
            todo = self.todo(task)
            if any(k in self.claimed for k in todo):
                continue
            self.pending.remove(task)
            for key in todo:
                self.claimed[key] = task.id
            self.claims[task.id] = todo
            return task
        return None

    def finish(self, task: TaskPlan, ok: bool) -> None:
        """``task`` ended; on success its stages are done."""
        for key in self.claims.pop(task.id, set()):
            self.claimed.pop(key, None)
        if ok:
            for key, demand in task.demands.items():
                self.done[key] = max(self.done.get(key, -1), demand)


def default_workers(tasks: int) -> int:
    """min(CPU count, tasks), at least 1."""
    return max(1, min(os.cpu_count() or 1, tasks))


def threads_for(running: int, workers: int) -> int:
    """Torch threads of a task that starts while ``running`` tasks (itself
    included) run: the cores // workers, or more while fewer tasks can run
    (a lone pre-training gets every core)."""
    cpus = os.cpu_count() or 1
    return max(1, cpus // workers, cpus // max(1, running))


def threads_when_busy(workers: int) -> int:
    """Torch threads per task when every one of ``workers`` is busy."""
    return max(1, (os.cpu_count() or 1) // workers)
