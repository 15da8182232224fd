"""A scenario's stages as a small dependency graph on worker processes.

`fedsim.pipeline.compute` trains a scenario's methods one after another. Once
the pre-training they need is cached the methods are independent (original FL
needs none), so ``parallel.workers > 1`` runs them at once on the study's
machinery instead of a scheduler of its own:

* tasks: ``pretrain`` (the IMP levels the methods need) and one per method
  (its simulation and training: ``pipeline.compute`` of the scenario
  restricted to that method, as a study's task is); a pruned method starts
  ``after`` the pre-training is done (`fedsim.study.schedule.Scheduler`), a
  method that needs no IMP level starts at once, from the level-0 ticket (θ0)
  this process writes first;
* executor: `fedsim.study.executors.LocalPool`, N spawned processes with T
  torch threads each (`fedsim.pipeline.threads.Schedule`);
* progress: each worker sends its progress events through a queue; this
  process feeds them to the run's one `Progress` line, whose rate is then the
  whole machine's and whose ETA stays honest;
* results: the workers only fill the cache; `compute` then reads every stage
  from it exactly as a sequential run does, so the tables are byte-identical
  to a sequential run's with the same torch threads per process;
* Ctrl-C / SIGTERM: the workers ignore SIGINT; this process sends each one
  SIGTERM once, which a running task turns into the KeyboardInterrupt that
  checkpoints its last finished round (`train_stage`), waits for them and
  re-raises (exit 130); a rerun resumes from the checkpoints;
* a failing task: the others are stopped the same way and its error is raised
  with the method's label, `InputError` (exit 2) kept as such;
* a worker that dies (killed, out of memory): its task runs again alone with
  the same threads (`LocalPool`), resuming from its checkpoint.

``--force`` keeps the sequential schedule: forcing a method's stages inside a
worker would also clear the shared pre-training ticket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue as queue_module
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedsim import cost
from fedsim.config import Scenario, select_methods
from fedsim.errors import InputError
from fedsim.pipeline import keys
from fedsim.pipeline.policy import RunPolicy
from fedsim.pipeline.threads import MIN_PARALLEL_WORK_S, Schedule, choose
from fedsim.progress import Progress, running_status
from fedsim.study.executors import LocalPool, TaskOutcome, _worker_name
from fedsim.study.schedule import Scheduler, StageKey

log = logging.getLogger(__name__)

#: The id of the pre-training task (method labels are the others').
PRETRAIN = "pretrain"
#: Seconds to wait for interrupted workers to checkpoint and return.
STOP_WAIT_S = 120.0


@dataclass
class StageTask:
    """One task of the graph, in the shape the `Scheduler` reads."""

    id: str
    index: int
    demands: dict[StageKey, int]
    costs_s: dict[StageKey, float]
    after: dict[StageKey, int] = field(default_factory=dict)

    @property
    def order(self) -> tuple[int, int]:
        return 0, self.index


@dataclass(frozen=True)
class StageJob:
    """What a worker needs for one task (picklable)."""

    task_id: str
    scenario: Scenario
    base_dir: str | None
    threads: int | None
    policy: RunPolicy
    iterations: int = 0
    before_task: Callable[[str], None] | None = None


def plan_tasks(scenario: Scenario, base_dir: Path | None, reference_model: bool
               ) -> tuple[list[StageTask], dict[StageKey, int]]:
    """The tasks with work to do and what the cache holds (stage -> levels or
    rounds, -1: nothing), probed like a study's (`fedsim.study.planner.CacheProbe`)."""
    from fedsim.study.planner import CacheProbe

    base = Path(base_dir) if base_dir is not None else Path(".")
    probe = CacheProbe(base)
    rounds = scenario.rounds.max
    pre: StageKey = ("pretrain", keys.pretrain_key(scenario))
    done: dict[StageKey, int] = {pre: probe.pretrain_levels(pre[1]) if reference_model else -1}
    tasks: list[StageTask] = []
    levels = 0
    for index, (label, method) in enumerate(scenario.methods.items(), start=1):
        needed = keys.needed_iterations(scenario, method) if reference_model else 0
        levels = max(levels, needed)
        train: StageKey = ("train", keys.train_group(scenario, label, base))
        sim: StageKey = ("system", keys.system_group(scenario, label, base))
        exact = train[1] if keys.everyone_every_round(scenario) else None
        if reference_model and done[pre] >= needed:
            is_cached, derived = probe.system(scenario, label)
            done[sim] = 0 if is_cached else -1
            exact = exact or derived
        done[train] = probe.train_rounds(exact, scenario) if exact else -1
        tasks.append(StageTask(label, index, {train: rounds, sim: 0},
                               {train: rounds * cost.round_s(scenario, method),
                                sim: cost.simulation_s(scenario)},
                               {pre: needed} if reference_model else {}))
    if reference_model and done[pre] < levels:
        tasks.insert(0, StageTask(PRETRAIN, 0, {pre: levels}, {
            pre: (levels - max(done[pre], 0)) * scenario.pretrain.epochs
            * cost.pretrain_epoch_s(scenario)}))
    todo = [t for t in tasks if any(done.get(k, -1) < d for k, d in t.demands.items())]
    return todo, done


# ------------------------------------------------------------------ the worker side

_EVENTS: Any = None  # the queue of progress events (set in each worker by `_init_stage_worker`)
_STATE = {"running": False, "stop": False}


def _on_sigterm(signum: int, frame: Any) -> None:
    """The first SIGTERM stops the running task (KeyboardInterrupt: it
    checkpoints); later ones are ignored, so that none cuts a checkpoint."""
    if _STATE["stop"]:
        return
    _STATE["stop"] = True
    if _STATE["running"]:
        raise KeyboardInterrupt


def _init_stage_worker(events: Any) -> None:
    """Worker start: quiet logs, progress to ``events``, SIGINT ignored (the
    parent decides), SIGTERM stops the task."""
    global _EVENTS
    _EVENTS = events
    logging.getLogger("fedsim").setLevel(logging.WARNING)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)


class QueueBar:
    """A `Progress` stand-in in a worker: sends each event to the parent."""

    enabled = False

    def __init__(self, task_id: str, events: Any) -> None:
        self.task_id = task_id
        self.events = events

    def _send(self, *event: Any) -> None:
        if self.events is not None:
            self.events.put((self.task_id, *event))

    def skip(self, kind: str, units: float, status: str | None = None) -> None:
        self._send("skip", kind, units, status)

    def advance(self, kind: str, units: float, status: str | None = None) -> None:
        self._send("advance", kind, units, status)

    def status(self, text: str) -> None:
        self._send("status", None, 0.0, text)

    def write(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> QueueBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def run_stage_task(job: StageJob) -> TaskOutcome:
    """Compute one task in a worker (never raises): the pre-training to
    ``job.iterations`` levels, or `pipeline.compute` of one method."""
    start = time.perf_counter()
    _STATE["running"] = True
    try:
        if _STATE["stop"]:
            raise KeyboardInterrupt
        import torch

        if job.threads:
            torch.set_num_threads(job.threads)
        if job.before_task is not None:
            job.before_task(job.task_id)
        bar: Any = QueueBar(job.task_id, _EVENTS)
        base = Path(job.base_dir) if job.base_dir is not None else None
        if job.task_id == PRETRAIN:
            from fedsim.data.resolve import resolve_data_files
            from fedsim.pipeline.data import prepare_data
            from fedsim.pipeline.runner import resolve_model
            from fedsim.pipeline.stages import pretrain_stage

            scenario = resolve_data_files(job.scenario, base)
            data = prepare_data(scenario)
            pretrain_stage(scenario, data, job.iterations, torch.device(keys.device_type(scenario)),
                           policy=job.policy, bar=bar, model=resolve_model(scenario))
            stages, cache_keys = {"pretrain": time.perf_counter() - start}, {}
        else:
            from fedsim.pipeline.runner import compute

            result = compute(select_methods(job.scenario, [job.task_id]), base_dir=base,
                             policy=job.policy, workers=1, bar=bar)
            stages, cache_keys = dict(result.stage_seconds), dict(result.cache_keys)
        threads = torch.get_num_threads()
    except KeyboardInterrupt:
        return TaskOutcome(job.task_id, None, time.perf_counter() - start, _worker_name(),
                           threads=job.threads, error="interrupted", interrupted=True)
    except Exception as exc:  # reported by the parent with the method's label
        return TaskOutcome(job.task_id, None, time.perf_counter() - start, _worker_name(),
                           threads=job.threads, error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc(), input_error=isinstance(exc, InputError))
    finally:
        _STATE["running"] = False
    return TaskOutcome(job.task_id, None, time.perf_counter() - start, _worker_name(), stages,
                       cache_keys, threads, peak_rss_mb=peak_rss_mb())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux: ru_maxrss is KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ the parent side


def _drain(events: Any, bar: Progress, statuses: dict[str, str]) -> None:
    """Feed the workers' progress events to ``bar`` (one line, all methods).
    Pre-training events count only from the pre-training task: a method's
    worker reads the cached ticket and would count its levels again."""
    while True:
        try:
            task_id, what, kind, units, status = events.get_nowait()
        except (queue_module.Empty, OSError, EOFError):
            return
        if kind == "pretrain" and task_id != PRETRAIN:
            continue
        if status:
            statuses[task_id] = status
        text = running_status(statuses)
        if what == "advance":
            bar.advance(kind, units, text)
        elif what == "skip":
            bar.skip(kind, units, text)
        else:
            bar.status(text)


def _stop(backend: LocalPool, running: int) -> list[tuple[Any, TaskOutcome]]:
    """SIGTERM every worker once (a running task checkpoints and returns) and
    collect the outcomes of the ``running`` tasks, for up to `STOP_WAIT_S`."""
    backend.isolate.clear()  # no task is run again alone while stopping
    for pid in backend.pids():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    outcomes: list[tuple[Any, TaskOutcome]] = []
    deadline = time.monotonic() + STOP_WAIT_S
    while backend.futures and time.monotonic() < deadline:
        outcomes += backend.wait_any(timeout=1.0)
    return outcomes


def _failure(task_id: str, outcome: TaskOutcome) -> Exception:
    """The exception a failed task ends the run with, naming its method."""
    what = "pre-training" if task_id == PRETRAIN else f"method {task_id!r}"
    text = f"{what}: {outcome.error}"
    if outcome.input_error:
        return InputError(text.replace("InputError: ", "", 1))
    return RuntimeError(text + (f"\n{outcome.traceback}" if outcome.traceback and
                                log.isEnabledFor(logging.DEBUG) else ""))


def execute(tasks: list[StageTask], done: dict[StageKey, int], schedule: Schedule,
            make_job: Callable[[StageTask, int | None], StageJob], bar: Progress
            ) -> dict[str, TaskOutcome]:
    """Run ``tasks`` on a `LocalPool` of ``schedule.workers`` processes.

    Raises:
        KeyboardInterrupt: Ctrl-C / SIGTERM here, or a worker interrupted
            (after every running task checkpointed).
        InputError, RuntimeError: a task failed (the others stopped).
    """
    import multiprocessing

    events = multiprocessing.get_context("spawn").Queue()
    threads = schedule.threads
    backend = LocalPool(min(schedule.workers, len(tasks)), make_job,  # type: ignore[arg-type]
                        run=run_stage_task, initializer=_init_stage_worker, initargs=(events,),
                        isolate_threads=threads)
    scheduler = Scheduler(tasks, done)  # type: ignore[arg-type]
    outcomes: dict[str, TaskOutcome] = {}
    statuses: dict[str, str] = {}
    failure: BaseException | None = None
    try:
        while scheduler.pending or backend.running():
            while backend.slots() > 0 and (task := scheduler.next_ready()) is not None:
                backend.submit(task, threads or 1)  # type: ignore[arg-type]
                statuses[task.id] = f"{task.id} starting"
                bar.status(running_status(statuses))
            if not backend.running():
                break
            for task, outcome in backend.wait_any(timeout=0.5):
                _drain(events, bar, statuses)
                scheduler.finish(task, outcome.ok)
                outcomes[task.id] = outcome
                statuses.pop(task.id, None)
                if outcome.interrupted:
                    raise KeyboardInterrupt
                if not outcome.ok:
                    failure = _failure(task.id, outcome)
                    raise failure
                line = (f"{task.id}: {outcome.seconds:.1f} s in a worker "
                        f"({outcome.threads or 'default'} torch threads)")
                if bar.enabled:
                    bar.write(line)
                else:
                    log.info("%s", line)
            _drain(events, bar, statuses)
    except BaseException:
        for task, outcome in _stop(backend, backend.running()):
            outcomes[task.id] = outcome
            if not outcome.ok and not outcome.interrupted:
                log.warning("%s", _failure(task.id, outcome))
        backend.close(wait=False)
        raise
    backend.close()
    _drain(events, bar, statuses)
    return outcomes


def run_parallel(scenario: Scenario, base_dir: Path | None, policy: RunPolicy, *,
                 reference_model: bool, workers: int | str | None = None,
                 work: dict[str, float] | None = None, level0: Callable[[], Any] | None = None,
                 before_task: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fill the cache with every stage of ``scenario`` on the parallel
    schedule when the schedule has more than one worker; return the schedule
    for provenance.json (``workers``, ``threads``, ``reason``, the thread
    measurement, each task's seconds and torch threads).

    Args:
        reference_model: the methods start from a pre-training ticket
            (LeNet-300-100; a model with a DAE when a method pre-trains).
        workers: ``--workers`` (default: the scenario's ``parallel.workers``).
        work: the run's work for its one progress line (`run.run_work`);
            shown when ``policy.progress``.
        level0: writes the level-0 ticket (θ0) when no ticket is cached, so
            that the methods that need no IMP level start at once.
        before_task: called with the task id in the worker before it runs (a
            test seam, module-level).

    Raises:
        as `execute`.
    """
    spec = scenario.parallel
    if policy.force or policy.cached_only:
        why = "--force" if policy.force else "--cached-only"
        return {"workers": 1, "reason": f"{why}: the sequential schedule",
                **({"threads": spec.threads} if spec.threads != "auto" else {})}
    wanted = workers if workers is not None else spec.workers
    whole_s = sum((work or {}).values())
    if wanted == 1 or (wanted == "auto" and whole_s < MIN_PARALLEL_WORK_S):
        # sequential whatever the cache holds: no need to probe it
        return choose(wanted, spec.threads, len(scenario.methods) + 1, whole_s).describe()
    tasks, done = plan_tasks(scenario, base_dir, reference_model)
    work_s = sum(sum(t.costs_s.values()) for t in tasks)
    schedule = choose(wanted, spec.threads, len(tasks), work_s,
                      task_s=[sum(t.costs_s.values()) for t in tasks])
    described = schedule.describe()
    if schedule.workers <= 1 or not tasks:
        return described
    pre: StageKey = ("pretrain", keys.pretrain_key(scenario))
    if reference_model and done.get(pre, -1) < 0 and level0 is not None:
        level0()  # θ0: the methods that need no IMP level start from it at once
        done[pre] = 0
        tasks = [t for t in tasks if any(done.get(k, -1) < d for k, d in t.demands.items())]
        if not tasks:
            return described
    base = str(base_dir) if base_dir is not None else None
    worker_policy = replace(policy, progress=False)

    def make_job(task: StageTask, threads: int | None) -> StageJob:
        iterations = task.demands.get(pre, 0) if task.id == PRETRAIN else 0
        return StageJob(task.id, scenario, base, threads, worker_policy, iterations, before_task)

    log.info("parallel schedule: %d workers x %s torch threads (%s); %d tasks: %s",
             schedule.workers, schedule.threads, schedule.reason, len(tasks),
             ", ".join(t.id for t in tasks))
    work = work or {}
    with Progress("scenario", work, enabled=policy.progress and bool(work),
                  upper_bound=scenario.rounds.stop_when_reached) as bar:
        # what no task computes is done already: cached pre-training, cached methods
        ids = {t.id for t in tasks}
        if PRETRAIN not in ids and "pretrain" in work:
            bar.skip("pretrain", work["pretrain"])
        cached = [label for label in scenario.methods if label not in ids]
        if cached and "train" in work:
            bar.skip("train", scenario.rounds.max * sum(cost.round_s(scenario, scenario.methods[label])
                                                         for label in cached),
                     f"{len(cached)} method(s) cached")
        outcomes = execute(tasks, done, schedule, make_job, bar)
    described["tasks"] = {task_id: {"seconds": round(o.seconds, 2), "torch_threads": o.threads,
                                    "worker": o.worker}
                          for task_id, o in outcomes.items()}
    # memory: each worker's peak (its last task's report) summed, plus this process
    workers_peak: dict[str, float] = {}
    for o in outcomes.values():
        if o.peak_rss_mb is not None:
            workers_peak[o.worker] = max(workers_peak.get(o.worker, 0.0), o.peak_rss_mb)
    described["peak_rss_mb"] = {"parent": round(peak_rss_mb(), 1),
                                "workers_sum": round(sum(workers_peak.values()), 1),
                                "workers": len(workers_peak)}
    return described


__all__ = ["PRETRAIN", "QueueBar", "StageJob", "StageTask", "execute", "plan_tasks",
           "run_parallel", "run_stage_task"]
