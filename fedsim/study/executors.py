"""Where a study's tasks run: in this process, a pool of local processes, or Ray.

A task (`Task`: one method of one cell) is ``pipeline.compute`` of the cell
restricted to that method; `run_task` returns its metrics frame as a
`TaskOutcome` (small: timelines stay in the cache), or the error, never raising,
so every executor reports a failed task alike. An executor has one interface,
used by ``fedsim.study.runner._execute``: ``slots()`` (tasks it can take now),
``running()``, ``submit(task, threads)``, ``wait_any()`` (the outcomes of the
tasks that ended) and ``close(wait)``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim import pipeline, store
from fedsim.config import Scenario
from fedsim.errors import InputError
from fedsim.pipeline import keys
from fedsim.study.planner import TaskPlan

# the logger of fedsim.study before it became a package: log filters keep working
log = logging.getLogger("fedsim.study")

#: Called with the task id in the worker before a task runs (a test seam).
BeforeTask = Callable[[str], None]


@dataclass(frozen=True)
class Task:
    """What a worker needs to compute one method of one cell."""

    task_id: str
    scenario: Scenario
    base_dir: str
    threads: int | None = None
    before_task: BeforeTask | None = None
    cached_only: bool = False


@dataclass
class TaskOutcome:
    """A task's result: its metrics frame (or the error), where and how long."""

    task_id: str
    metrics: pd.DataFrame | None
    seconds: float
    worker: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    cache_keys: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    error: str | None = None
    traceback: str | None = None
    #: the task stopped on Ctrl-C / SIGTERM (after checkpointing), not on an error
    interrupted: bool = False
    #: the error was bad input (`InputError`: exit status 2 where it ends a run)
    input_error: bool = False
    #: peak resident memory of the worker process so far (MiB), where measured
    peak_rss_mb: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


#: Builds the picklable `Task` of a planned task, with its torch threads.
MakeTask = Callable[[TaskPlan, int | None], Task]
#: What a worker runs on a task built by `MakeTask` (default `run_task`).
RunTask = Callable[[Any], TaskOutcome]


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(task: Task) -> TaskOutcome:
    """Compute one task (``pipeline.compute`` of a cell restricted to one
    method) and return its metrics frame; an exception becomes an outcome with
    ``error`` set (never raised, so that every executor reports it alike)."""
    start = time.perf_counter()
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    try:
        if task.before_task is not None:
            task.before_task(task.task_id)
        # workers=1: a study's task is one worker already (its threads set above)
        result = pipeline.compute(task.scenario, base_dir=Path(task.base_dir), cached_only=task.cached_only,
                                  workers=1)
    except Exception as exc:  # reported per task; the study goes on
        return TaskOutcome(task.task_id, None, time.perf_counter() - start, _worker_name(),
                           threads=task.threads, error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc())
    return TaskOutcome(task.task_id, result.metrics, time.perf_counter() - start, _worker_name(),
                       dict(result.stage_seconds), dict(result.cache_keys), task.threads)


def _init_worker() -> None:
    """Pool worker start: quiet logs (the parent reports every task)."""
    logging.getLogger("fedsim").setLevel(logging.WARNING)


class InProcess:
    """workers=1: every task in this process (simplest to debug)."""

    name = "in-process"

    def __init__(self, make_task: MakeTask) -> None:
        self.make_task = make_task
        self.done: deque[tuple[TaskPlan, TaskOutcome]] = deque()

    def slots(self) -> int:
        return 0 if self.done else 1

    def running(self) -> int:
        return len(self.done)

    def submit(self, task: TaskPlan, threads: int) -> None:
        self.done.append((task, run_task(self.make_task(task, None))))

    def wait_any(self) -> list[tuple[TaskPlan, TaskOutcome]]:
        return [self.done.popleft()]

    def close(self, wait: bool = True) -> None:
        pass


class LocalPool:
    """A pool of spawned worker processes. When a worker dies the pool breaks
    and fails every running task; unless one task ran alone, those tasks run
    again one at a time (a fresh pool after each death), so only the task that
    kills its worker is reported failed.

    Args:
        workers: processes in the pool.
        make_task: the picklable job of a planned task.
        run: what a worker runs on that job (default `run_task`; a scenario's
            stage tasks: `fedsim.pipeline.parallel`). Must be module-level.
        initializer, initargs: run once in each new worker process (default:
            quiet logs); ``initargs`` may hold a queue, inherited at spawn.
        isolate_threads: torch threads of a task run again alone after a
            worker died (default: every core; a scenario keeps its threads so
            that the rerun's floats equal the planned ones).
    """

    name = "local"

    def __init__(self, workers: int, make_task: MakeTask, *, run: RunTask = run_task,
                 initializer: Callable[..., None] = _init_worker, initargs: tuple[Any, ...] = (),
                 isolate_threads: int | None = None) -> None:
        self.workers = workers
        self.make_task = make_task
        self.run = run
        self.initializer = initializer
        self.initargs = initargs
        self.isolate_threads = isolate_threads
        self.context = multiprocessing.get_context("spawn")
        self.pool = self._new_pool(workers)
        self.futures: dict[cf.Future[TaskOutcome], TaskPlan] = {}
        self.isolate: deque[tuple[TaskPlan, int]] = deque()
        self.threads: dict[str, int] = {}

    def _new_pool(self, workers: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=self.context,
                                      initializer=self.initializer, initargs=self.initargs)

    def pids(self) -> list[int]:
        """The process ids of the pool's live workers (to signal them)."""
        processes = getattr(self.pool, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.is_alive() and p.pid is not None]

    def slots(self) -> int:
        return 0 if self.isolate else self.workers - len(self.futures)

    def running(self) -> int:
        return len(self.futures) + len(self.isolate)

    def submit(self, task: TaskPlan, threads: int) -> None:
        self.threads[task.id] = threads
        self.futures[self.pool.submit(self.run, self.make_task(task, threads))] = task

    def wait_any(self, timeout: float | None = None) -> list[tuple[TaskPlan, TaskOutcome]]:
        """The outcomes of the tasks that ended; with ``timeout`` (seconds)
        possibly none, so that the caller can do other work meanwhile."""
        if self.isolate:
            return [self._run_alone(*self.isolate.popleft())]
        done, _ = cf.wait(list(self.futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        results, broken = [], []
        for future in done:
            task = self.futures.pop(future)
            exc = future.exception()
            if isinstance(exc, cf.process.BrokenProcessPool):
                broken.append(task)
            elif exc is not None:
                results.append((task, TaskOutcome(task.id, None, 0.0, "local worker",
                                                  error=f"{type(exc).__name__}: {exc}")))
            else:
                results.append((task, future.result()))
        if broken:
            # the whole pool is gone: every running task fails with it
            alone = len(broken) == 1 and not self.futures and not results
            for future, task in list(self.futures.items()):
                try:
                    results.append((task, future.result()))
                except Exception:  # BrokenProcessPool, or a pickling error
                    broken.append(task)
            self.futures.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = self._new_pool(self.workers)
            if alone:  # it ran by itself: it is the one
                return [(broken[0], self._died(broken[0], 0.0, None))]
            log.warning("a worker process died; running %d task(s) again one at a time to find "
                        "the one that kills it: %s", len(broken), ", ".join(t.id for t in broken))
            cpus = self.isolate_threads or os.cpu_count() or 1
            self.isolate.extend((t, cpus) for t in sorted(broken, key=lambda t: t.order))
            if not results:
                results.append(self._run_alone(*self.isolate.popleft()))
        return results

    def _run_alone(self, task: TaskPlan, threads: int) -> tuple[TaskPlan, TaskOutcome]:
        start = time.perf_counter()
        try:
            return task, self.pool.submit(self.run, self.make_task(task, threads)).result()
        except cf.process.BrokenProcessPool:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = self._new_pool(self.workers)
            return task, self._died(task, time.perf_counter() - start, threads)

    @staticmethod
    def _died(task: TaskPlan, seconds: float, threads: int | None) -> TaskOutcome:
        return TaskOutcome(
            task.id, None, seconds, "local worker", threads=threads,
            error="worker process died (killed, out of memory or a crash in native code); "
                  "run the study again to retry this task")

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


RAY_MISSING = "the ray executor needs the optional extra: pip install 'fedsim-cost[ray]'"


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        InputError: Ray is not installed (`RAY_MISSING`)."""
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    return ray


def _shared_env() -> dict[str, str]:
    """FEDSIM_CACHE / FEDSIM_DATA as absolute paths for the Ray workers (on a
    cluster both must be shared storage mounted at the same path everywhere)."""
    return {"FEDSIM_CACHE": str(store.cache_dir().resolve()),
            "FEDSIM_DATA": str(store.data_dir().resolve())}


class RayCluster:
    """Each task a Ray task with ``num_cpus`` = its torch threads and
    ``num_gpus=1`` where its device is CUDA. Without ``address`` a local Ray
    runtime is started (and shut down by ``close``)."""

    name = "ray"

    def __init__(self, address: str | None, workers: int | None, tasks: int,
                 make_task: MakeTask) -> None:
        ray = import_ray()
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"runtime_env": {"env_vars": _shared_env()},
                                      "log_to_driver": False, "logging_level": logging.WARNING}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
            self.started = True
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)))
        self.workers = workers or max(1, min(self.cpus, tasks))
        self.make_task = make_task
        self.remote = ray.remote(run_task)
        self.refs: dict[Any, TaskPlan] = {}

    def slots(self) -> int:
        return self.workers - len(self.refs)

    def running(self) -> int:
        return len(self.refs)

    def submit(self, task: TaskPlan, threads: int) -> None:
        # Ray reserves num_cpus per task, so a task's threads are fixed by the cluster
        threads = max(1, self.cpus // self.workers)
        gpus = 1 if keys.device_type(task.cell.scenario) == "cuda" else 0
        ref = self.remote.options(num_cpus=threads, num_gpus=gpus, max_retries=1,
                                  name=f"fedsim-{task.id}").remote(self.make_task(task, threads))
        self.refs[ref] = task

    def wait_any(self) -> list[tuple[TaskPlan, TaskOutcome]]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        results = []
        for ref in ready:
            task = self.refs.pop(ref)
            try:
                results.append((task, self.ray.get(ref)))
            except self.ray.exceptions.RayError as exc:
                text = str(exc).strip()
                first = text.splitlines()[0] if text else ""
                results.append((task, TaskOutcome(task.id, None, 0.0, "ray worker",
                                                  error=f"{type(exc).__name__}: {first}")))
        return results

    def close(self, wait: bool = True) -> None:
        if self.started:
            self.ray.shutdown()
