"""Running a study: plan it, hand its tasks to an executor, write its outputs.

A cell runs as one task per method (``c003/hp-fl``), so the trainings of one
cell can run in parallel; the `Scheduler` starts a task only when none of the
stages it would compute is being computed by a running task. In effect: one
task per pre-training first, then one task per training, then every other
task, whose traces come from the cache and which only simulate. A failed task
(an exception, a killed worker) is reported and does not stop the others;
running the study again computes only what is missing, since every finished
stage is in the cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim import config
from fedsim.cost import COST_MODEL
from fedsim.errors import InputError
from fedsim.progress import Progress
from fedsim.study import outputs
from fedsim.study.executors import (
    BeforeTask,
    InProcess,
    LocalPool,
    RayCluster,
    Task,
    TaskOutcome,
    import_ray,
)
from fedsim.study.planner import StudyPlan, TaskPlan, plan
from fedsim.study.schedule import Scheduler, threads_for
from fedsim.study.spec import Study

# the logger of fedsim.study before it became a package: log filters keep working
log = logging.getLogger("fedsim.study")


@dataclass
class StudyResult:
    """A finished study: the sweep frame, every task's outcome, failures."""

    study: Study
    plan: StudyPlan
    sweep: pd.DataFrame
    outcomes: dict[str, TaskOutcome]
    out_dir: Path
    seconds: dict[str, float]
    written: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[TaskOutcome]:
        """The outcomes of the tasks that failed, in cell and method order."""
        return [o for o in self.outcomes.values() if not o.ok]


def sweep_progress(the_plan: StudyPlan, enabled: bool = True, **options: Any) -> Progress:
    """The progress display of a study: its tasks weighted by the planner's
    estimated seconds (`StudyPlan.task_estimates_s`), not counted, since a task
    that pre-trains and trains costs thousands of times one that only reads the
    cache. ``options`` go to `Progress` (stream, clock, ...)."""
    total = sum(the_plan.task_estimates_s.get(t.id, COST_MODEL["task_s"]) for t in the_plan.tasks)
    return Progress("study", {"tasks": total}, enabled=enabled, **options)


def _execute(the_plan: StudyPlan, backend: Any, bar: Progress) -> dict[str, TaskOutcome]:
    """Run the plan's tasks on ``backend`` (an executor of
    `fedsim.study.executors`); ``bar`` advances by each finished (or failed)
    task's estimated seconds."""
    scheduler = Scheduler(the_plan.tasks, the_plan.cached)
    outcomes: dict[str, TaskOutcome] = {}
    failed = 0
    total = len(the_plan.tasks)

    def status() -> str:
        text = f"{len(outcomes)}/{total} tasks done, {backend.running()} running ({backend.name})"
        return text + (f", {failed} failed" if failed else "")

    with bar:
        while scheduler.pending or backend.running():
            batch = []
            while backend.slots() > len(batch) and (task := scheduler.next_ready()) is not None:
                batch.append(task)
            threads = threads_for(backend.running() + len(batch), the_plan.workers)
            for task in batch:
                backend.submit(task, threads)
            if batch:
                bar.status(status())
            if not backend.running():
                break  # nothing runs, so nothing is claimed and every task was ready
            for task, outcome in backend.wait_any():
                scheduler.finish(task, outcome.ok)
                outcomes[task.id] = outcome
                if outcome.ok:
                    stages = ", ".join(f"{k} {v:.1f} s" for k, v in outcome.stage_seconds.items()
                                       if v >= 0.05)
                    line = (f"{task.id} ({task.cell.describe()}): {outcome.seconds:.1f} s"
                            f" [{stages}]")
                    if bar.enabled:
                        bar.write(line)  # above the progress line
                    else:
                        log.info("%s", line)
                else:
                    failed += 1
                    log.warning("%s (%s) failed: %s", task.id, task.cell.describe(), outcome.error)
                bar.advance("tasks", the_plan.task_estimates_s.get(task.id, COST_MODEL["task_s"]),
                            status())
    return outcomes


def run(study: Study, *, out_dir: str | Path | None = None, executor: str = "local",
        address: str | None = None, workers: int | None = None, progress: bool = False,
        command: Sequence[str] | None = None, before_task: BeforeTask | None = None,
        cached_only: bool = False) -> StudyResult:
    """Plan and run ``study`` (one task per cell and method), then write its
    outputs into ``out_dir`` (default ``reports/<study name>/``).

    Args:
        executor: ``local`` (default; ``workers=1`` runs in this process, more
            in a pool of spawned processes, each task with CPU count // workers
            torch threads, more while fewer tasks can run) or ``ray`` (Ray
            tasks on the cluster at ``address``, e.g. ``auto`` or
            ``HOST:6379``; without it a local Ray runtime).
        workers: tasks in parallel (default min(CPU count, tasks); for Ray
            min(cluster CPUs, tasks)).
        command: the command line, recorded in study.resolved.yaml.
        cached_only: train nothing (`pipeline.compute`'s ``cached_only``):
            each task reports its method up to the last cached round, and a
            task whose pre-training or training is not cached fails, naming
            it. For a study's report from a cache trained elsewhere.
        before_task: called with the task id (``c003/hp-fl``) in the worker
            before the task runs: a seam for tests and debugging (a hook that
            raises or exits simulates a failing task or a dying worker). Must
            be picklable (a module-level function).

    Returns:
        A `StudyResult`; ``failed`` lists the tasks that failed (their finished
        stages are cached, so running the study again resumes).

    Raises:
        InputError: an unknown executor, bad ``workers``, or ``ray`` without the
            optional extra.
    """
    if executor not in ("local", "ray"):
        raise InputError(f"--executor: unknown executor {executor!r}; choose local or ray")
    if workers is not None and workers < 1:
        raise InputError(f"--workers: {workers} must be >= 1")
    if address and executor != "ray":
        raise InputError("--address applies only to --executor ray")
    out = Path(out_dir) if out_dir is not None else Path("reports") / study.name
    timings: dict[str, float] = {}
    start = time.perf_counter()
    base_dir = str(study.base_dir)

    def make_task(task: TaskPlan, threads: int | None) -> Task:
        scenario = config.select_methods(task.cell.scenario, [task.label])
        return Task(task.id, scenario, base_dir, threads, before_task, cached_only)

    if executor == "ray":
        import_ray()
    the_plan = plan(study, workers=workers, executor=executor)
    timings["plan_s"] = time.perf_counter() - start
    log.info("%s", the_plan.describe())

    backend: Any
    if executor == "ray":
        backend = RayCluster(address, workers, len(the_plan.tasks), make_task)
        the_plan.workers = backend.workers
    elif the_plan.workers == 1:
        backend = InProcess(make_task)
    else:
        backend = LocalPool(the_plan.workers, make_task)
    started = time.perf_counter()
    try:
        outcomes = _execute(the_plan, backend, sweep_progress(the_plan, progress))
    except BaseException:
        backend.close(wait=False)  # Ctrl-C: finished stages are cached, do not wait
        raise
    backend.close()
    timings["tasks_s"] = time.perf_counter() - started
    ordered = {t.id: outcomes[t.id] for t in the_plan.tasks if t.id in outcomes}

    started = time.perf_counter()
    result = StudyResult(study, the_plan, outputs.sweep_frame(study, ordered), ordered, out, timings)
    timings["total_s"] = time.perf_counter() - start  # provisional, for the resolved study
    result.written = outputs.write_outputs(result, command=command, executor=backend.name)
    timings["outputs_s"] = time.perf_counter() - started
    timings["total_s"] = time.perf_counter() - start
    log.info("study %s: %d tasks in %.1f s (%d failed) -> %s", study.name, len(the_plan.tasks),
             timings["total_s"], len(result.failed), out)
    return result
