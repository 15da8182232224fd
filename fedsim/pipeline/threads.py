"""How many worker processes and torch threads a scenario's stages get.

A FedAvg round of the paper's setup is many small per-client GEMMs
(`fedsim.learn.batched`); on the 2-core development machine the second torch
thread buys only 1.36x (docs/performance.md), so two methods on one thread each
may beat one method after another on two. Which is faster depends on the
machine (cores, caches, SMT, the BLAS), so ``parallel: {workers: auto}`` does
not guess: `measure` times a short paper-like round (17 clients, one
trainer block, 400 samples each, 5 local epochs, batch 60: the shapes of
Konečný et al./HP-FL's LeNet-300-100 FedAvg round) as

* ``serial``: 1 process x every core's threads, and
* ``parallel``: every core a process x 1 thread, all at once,

in rounds per second over the whole machine, once per machine: the answer is
cached in ``$FEDSIM_CACHE/machine/`` under a hash of the CPU model, the core
count and the torch version. `choose` turns it and the scenario's
``parallel`` section into a `Schedule`, which goes to provenance.json.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from fedsim import store

log = logging.getLogger(__name__)

#: Clients of the measured round: one CPU trainer block (`default_block_clients`).
PROBE_CLIENTS = 17
#: Rounds timed per configuration (after one warm-up round).
PROBE_ROUNDS = 3
#: Work (cost-model seconds) below which ``workers: auto`` stays sequential:
#: starting a worker process (spawn + import torch) costs seconds.
MIN_PARALLEL_WORK_S = 60.0


@dataclass(frozen=True)
class Schedule:
    """Workers x threads of a run and why (written to provenance.json).

    Attributes:
        workers: worker processes (1: the sequential schedule, in this process).
        threads: torch threads per worker (None: leave torch's setting).
        reason: how the numbers were chosen.
        measurement: the `measure` result behind an ``auto`` choice, if any.
    """

    workers: int
    threads: int | None
    reason: str
    measurement: dict[str, Any] | None = field(default=None)

    def describe(self) -> dict[str, Any]:
        """A JSON-able dict for provenance.json."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block (None: unchanged)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s ``model name``, else `platform.processor`)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(cpus: int) -> dict[str, Any]:
    """What the measurement depends on: CPU model, core count, torch version."""
    import torch

    return {"cpu": cpu_name(), "cpus": cpus, "torch": torch.__version__}


def _probe_rounds(threads: int, rounds: int, barrier: Any = None) -> tuple[float, float]:
    """(start, end) wall clock (``time.time``, s) of ``rounds`` probe rounds on
    ``threads`` torch threads, after one warm-up round; waits at ``barrier``
    first, so that parallel probes start together."""
    import numpy as np
    import torch

    from fedsim.learn.federated import ClientData, _BatchedMLP, round_schedule
    from fedsim.learn.masks import Mask
    from fedsim.learn.model import LENET_SIZES, init_params, layer_shapes
    from fedsim.learn.spec import FLConfig

    torch.set_num_threads(threads)
    gen = np.random.default_rng(0)
    samples = 400
    n = PROBE_CLIENTS * samples
    inputs = torch.from_numpy(gen.random((n, LENET_SIZES[0]), dtype=np.float32))
    labels = torch.from_numpy(gen.integers(0, LENET_SIZES[-1], n))
    parts = tuple(np.arange(k * samples, (k + 1) * samples) for k in range(PROBE_CLIENTS))
    clients = ClientData(inputs, labels, parts)
    cfg = FLConfig()
    params = init_params(LENET_SIZES, "glorot_uniform", torch.Generator().manual_seed(0))
    model = _BatchedMLP(clients, Mask.dense(layer_shapes(LENET_SIZES)), cfg, torch.device("cpu"), None)
    schedule = round_schedule(clients, np.arange(PROBE_CLIENTS), cfg, seed=0, round_num=1)
    model.train_round(params, schedule)  # warm-up: allocations, thread pool
    if barrier is not None:
        barrier.wait()
    start = time.time()
    for _ in range(rounds):
        model.train_round(params, schedule)
    return start, time.time()


def _probe_worker(threads: int, rounds: int, barrier: Any, out: Any) -> None:
    out.put(_probe_rounds(threads, rounds, barrier))


def measure(cpus: int, rounds: int = PROBE_ROUNDS) -> dict[str, Any]:
    """Rounds per second of the probe round over the whole machine: ``serial``
    (1 process x ``cpus`` threads) and ``parallel`` (``cpus`` processes x 1
    thread, started together at a barrier after a warm-up round), each in
    fresh spawned processes, interleaved and best of two, and their ratio
    ``parallel_over_serial``. Takes seconds (process start-up included) to a
    minute on a loaded machine; cached by `measured`."""
    context = multiprocessing.get_context("spawn")

    def run(processes: int, threads: int) -> float:
        out = context.Queue()
        barrier = context.Barrier(processes)  # every process warmed up before any is timed
        procs = [context.Process(target=_probe_worker, args=(threads, rounds, barrier, out))
                 for _ in range(processes)]
        for proc in procs:
            proc.start()
        spans = [out.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join()
        wall = max(e for _, e in spans) - min(s for s, _ in spans)
        return processes * rounds / wall

    serial = parallel = 0.0
    for _ in range(2):  # interleaved, best of two: the machine may be shared
        serial = max(serial, run(1, cpus))
        parallel = max(parallel, run(cpus, 1)) if cpus > 1 else serial
    return {"serial_rounds_per_s": round(serial, 4), "parallel_rounds_per_s": round(parallel, 4),
            "parallel_over_serial": round(parallel / serial, 3), "probe_clients": PROBE_CLIENTS,
            "probe_rounds": rounds}


def measured(cpus: int | None = None) -> dict[str, Any]:
    """`measure` for this machine, from ``$FEDSIM_CACHE/machine/`` when it was
    measured before (same CPU model, core count and torch version)."""
    cpus = cpus or os.cpu_count() or 1
    key = machine_key(cpus)
    path = store.cache_dir() / "machine" / f"threads-{store.stable_hash(key)}.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("machine") == key:
            return cached
    except (OSError, ValueError):
        pass
    log.info("measuring 1 process x %d threads against %d processes x 1 thread (once per machine)",
             cpus, cpus)
    result = {"machine": key, **measure(cpus),
              "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(path, json.dumps(result, indent=2, sort_keys=True))
    return result


def parallel_makespan_s(task_s: Sequence[float], workers: int, parallel_over_serial: float) -> float:
    """Estimated wall seconds of tasks of ``task_s`` serial seconds each (their
    cost on 1 process x every core) on ``workers`` processes of 1 thread,
    started in order on the first free worker (the `Scheduler`'s order), when
    the machine does ``parallel_over_serial`` times the serial rate with every
    worker busy, so each worker ``parallel_over_serial / workers`` of it. A
    worker left alone at the end is counted at that busy speed too (the tail
    that measured schedules pay: docs/performance.md)."""
    loads = [0.0] * workers
    for cost in task_s:
        loads[loads.index(min(loads))] += cost
    return max(loads) / (parallel_over_serial / workers)


def choose(workers: int | str, threads: int | str, tasks: int, work_s: float,
           cpus: int | None = None, task_s: Sequence[float] | None = None) -> Schedule:
    """The schedule of a run of ``tasks`` tasks that could run at once (its
    pre-training and methods with work to do) and ``work_s`` estimated seconds
    of work (cost model).

    ``workers``/``threads``: the scenario's ``parallel`` values (``auto`` or a
    number). ``workers: auto`` is sequential for fewer than 2 tasks or under
    `MIN_PARALLEL_WORK_S`, else it takes the faster of the two measured
    configurations (`measured`): with ``task_s`` (each task's serial seconds,
    the cost model's) the parallel schedule must finish sooner by
    `parallel_makespan_s` than the tasks one after another (``sum(task_s)``),
    which a measured gain too small to pay for the idle worker at the end fails
    (the mobile demo on the 2-core development machine: 1.06x measured, 7 %
    slower in parallel); without it, any gain over 1.0x. ``threads: auto`` is
    the cores // workers (with one worker: torch's own setting, as before this
    option existed).
    """
    cpus = cpus or os.cpu_count() or 1
    measurement = None
    if workers == "auto":
        if threads != "auto":
            n, reason = max(1, cpus // int(threads)), f"workers auto: {cpus} cores // {threads} threads"
        elif tasks < 2 or cpus < 2:
            n, reason = 1, f"workers auto: {tasks} task(s) to compute, {cpus} core(s)"
        elif work_s < MIN_PARALLEL_WORK_S:
            n, reason = 1, (f"workers auto: {work_s:.0f} s of estimated work, under "
                            f"{MIN_PARALLEL_WORK_S:.0f} s (a worker takes seconds to start)")
        else:
            measurement = measured(cpus)
            gain = measurement["parallel_over_serial"]
            reason = (f"workers auto: {cpus} processes x 1 thread made {gain:.2f}x the rounds/s of "
                      f"1 process x {cpus} threads on this machine")
            if task_s:
                width = max(1, min(cpus, len(task_s)))
                parallel_s, serial_s = parallel_makespan_s(task_s, width, gain), float(sum(task_s))
                faster = parallel_s < serial_s
                reason += (f"; estimated {parallel_s:.0f} s on {width} workers against {serial_s:.0f} s "
                           f"one after another")
            else:
                faster = gain > 1.0
            n = cpus if faster else 1
        n = max(1, min(n, tasks))
    else:
        n, reason = int(workers), f"workers {workers} (scenario or --workers)"
    t = (None if n == 1 else max(1, cpus // n)) if threads == "auto" else int(threads)
    return Schedule(n, t, reason, measurement)


__all__ = ["MIN_PARALLEL_WORK_S", "PROBE_CLIENTS", "Schedule", "choose", "cpu_name", "machine_key",
           "measure", "measured", "parallel_makespan_s", "torch_threads"]
