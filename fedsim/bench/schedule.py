"""Scenario throughput on the sequential and the parallel schedule (``fedsim
bench --only schedule``).

A small scenario (MNIST, 3 methods: original, FL from the pre-trained DAE and
HP-FL; 20 non-IID clients; a few rounds) is trained from its cached
pre-training on both schedules, interleaved (sequential, parallel, sequential,
...) in a private temporary cache, so that both meet the same machine load:

* ``sequential``: ``workers: 1``, torch's own threads (today's schedule);
* ``parallel``: one worker per core (at most one per method), 1 thread each.

Throughput is rounds per second over all methods, each repeat timing
`fedsim.pipeline.compute` from a cache holding only the ticket (so the
parallel figure includes starting its worker processes); the best repeat of
each counts. ``schedule_parallel_over_sequential`` is their ratio; the
issue's target for the mobile demo is 1.4x on the 2-core development machine.
``schedule_parallel_peak_rss_mb`` sums the peak resident memory of the parallel
run's workers and the parent (docs/performance.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

#: The benchmark scenario (a dict: no file to find); rounds and clients are
#: set by `bench_schedule`.
SCENARIO: dict[str, Any] = {
    "name": "bench-schedule",
    "seed": 0,
    "data": {"dataset": "mnist", "unlabeled": 2000,
             "partition": {"scheme": "shards", "num_clients": 20, "shard_size": 50,
                           "shards_per_client": 4}},
    "pretrain": {"epochs": 1, "iterations": 2},
    "fl": {"local_epochs": 5},
    "methods": {"original": {}, "pretrained": {}, "hp-fl": {"remaining_rate": 0.64}},
    "rounds": {"max": 6, "checkpoint_every": 50},
    "device": "cpu",
    "report": {"formats": ["png"]},
}


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"[bench] {text}", flush=True)


def bench_schedule(*, progress: bool = False, rounds: int = 15, clients: int = 20,
                   repeats: int = 2) -> dict[str, Any]:
    """Rounds per second of the benchmark scenario on both schedules.

    Args:
        rounds: rounds per method; clients: clients of the scenario.
        repeats: timed runs of each schedule (interleaved; the best counts).

    Returns:
        ``schedule_sequential_rounds_per_s``, ``schedule_parallel_rounds_per_s``,
        ``schedule_parallel_over_sequential``, ``schedule_workers``,
        ``schedule_threads``, ``schedule_methods``, ``schedule_rounds``,
        ``schedule_parallel_peak_rss_mb`` (workers summed + parent).
    """
    from fedsim import config, pipeline

    cpus = os.cpu_count() or 1
    raw = {**SCENARIO, "rounds": {**SCENARIO["rounds"], "max": rounds},
           "data": {**SCENARIO["data"], "partition": {**SCENARIO["data"]["partition"],
                                                       "num_clients": clients}}}
    methods = len(raw["methods"])
    workers = max(2, min(cpus, methods))
    sequential = config.from_dict({**raw, "parallel": {"workers": 1}})
    parallel = config.from_dict({**raw, "parallel": {"workers": workers, "threads": max(1, cpus // workers)}})
    before = os.environ.get("FEDSIM_CACHE")
    root = Path(tempfile.mkdtemp(prefix="fedsim-bench-schedule-"))
    os.environ["FEDSIM_CACHE"] = str(root)  # spawned workers inherit it
    times: dict[str, list[float]] = {"sequential": [], "parallel": []}
    memory = None
    try:
        _say(progress, "schedule: pre-training once (shared by both schedules)")
        pipeline.compute(config.select_methods(sequential, ["hp-fl"]), policy=pipeline.RunPolicy())
        for repeat in range(repeats):
            for name, scenario in (("sequential", sequential), ("parallel", parallel)):
                for stage in ("train", "system"):  # keep only the ticket
                    shutil.rmtree(root / stage, ignore_errors=True)
                start = time.perf_counter()
                result = pipeline.compute(scenario)
                times[name].append(time.perf_counter() - start)
                if name == "parallel":
                    memory = result.schedule.get("peak_rss_mb")
                _say(progress, f"schedule: {name} run {repeat + 1}/{repeats}: "
                               f"{methods * rounds / times[name][-1]:.2f} rounds/s")
    finally:
        if before is None:
            os.environ.pop("FEDSIM_CACHE", None)
        else:
            os.environ["FEDSIM_CACHE"] = before
        shutil.rmtree(root, ignore_errors=True)
    seq = methods * rounds / min(times["sequential"])
    par = methods * rounds / min(times["parallel"])
    return {
        "schedule_sequential_rounds_per_s": round(seq, 3),
        "schedule_parallel_rounds_per_s": round(par, 3),
        "schedule_parallel_over_sequential": round(par / seq, 3),
        "schedule_workers": workers,
        "schedule_threads": max(1, cpus // workers),
        "schedule_methods": methods,
        "schedule_rounds": rounds,
        "schedule_clients": clients,
        "schedule_parallel_peak_rss_mb": (round(memory["workers_sum"] + memory["parent"], 1)
                                          if memory else None),
    }


__all__ = ["SCENARIO", "bench_schedule"]
