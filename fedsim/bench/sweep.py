"""The study benchmark (``fedsim bench`` part "sweep"): a 100-cell link-speed
study of the paper setup whose training trace is cached, run through the real
code path (`fedsim.study.runner`, local executor).

The cached trace is a SYNTHETIC STAND-IN (`synthetic_trace`): training the
paper setup for 3000 rounds takes hours, and its accuracy values do not change
what a study costs. It is written into a temporary FEDSIM_CACHE under the real
training key before the clock starts.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fedsim import pipeline, store, study
from fedsim.config import Scenario
from fedsim.pipeline import keys
from fedsim.store import artifacts


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _bench_files(directory: Path, cells: int, rounds: int) -> Path:
    """The benchmark's base scenario (the paper setup: 100 clients x 400
    samples, ``rounds`` rounds, FL without pre-training, a mobile network with
    a contended server link) and its link-speed study; returns the study path."""
    base = {
        "name": "bench-paper",
        "description": "paper setup (100 clients x 400 samples) on a mobile network",
        "seed": 0,
        "data": {"dataset": "mnist", "unlabeled": 20000,
                 "partition": {"scheme": "shards", "num_clients": 100, "shard_size": 200,
                               "shards_per_client": 2}},
        "pretrain": {"iterations": 0},
        "methods": {"original": {}},
        "system": {
            "clients": {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.5},
                        "uplink": "5 Mbps", "rtt": "50 ms",
                        "speed": {"dist": "uniform", "low": 0.5, "high": 2.0}},
            "server": {"downlink": "1 Gbps", "uplink": "1 Gbps", "aggregation": "0.5 s"},
        },
        "targets": [0.95],
        "rounds": {"max": rounds},
        "device": "cpu",
        "report": {"formats": ["png"]},
    }
    spec = {"study": {
        "name": "bench-link-speed",
        "description": f"{cells} client uplink speeds, paper setup, cached trace",
        "base": "base.yaml",
        "axes": {"system.clients.uplink": {"geometric": {"start": "0.5 Mbps", "stop": "50 Mbps",
                                                         "num": cells}}},
    }}
    store.write_text(directory / "base.yaml", yaml.safe_dump(base, sort_keys=False))
    store.write_text(directory / "study.yaml", yaml.safe_dump(spec, sort_keys=False))
    return directory / "study.yaml"


def synthetic_trace(rounds: int, clients: int, samples: int, batch_size: int, local_epochs: int,
                    ) -> Any:
    """A STAND-IN training trace for the benchmark: accuracy 0.976 - 0.876 exp(-r / 40)
    (reaches 95 % at round 141, near the paper's NRA@95 of 134 for FL), every
    client in every round. Its values do not change what a study costs."""
    from fedsim.learn.trace import TrainingTrace

    r = np.arange(1, rounds + 1, dtype=np.int64)
    accuracy = 0.976 - 0.876 * np.exp(-r / 40.0)
    round_frame = pd.DataFrame({"round_num": r, "accuracy": accuracy,
                                "loss": -np.log(np.clip(accuracy, 1e-6, 1.0)),
                                "participants": np.full(rounds, clients, dtype=np.int64)})
    steps = math.ceil(samples / batch_size) * local_epochs
    client_frame = pd.DataFrame({
        "round_num": np.repeat(r, clients),
        "client_id": np.tile(np.arange(clients, dtype=np.int64), rounds),
        "samples": np.full(rounds * clients, samples, dtype=np.int64),
        "local_steps": np.full(rounds * clients, steps, dtype=np.int64),
    })
    return TrainingTrace(round_frame, client_frame, {"synthetic": "stand-in accuracy curve"})


def _inject_trace(scenario: Scenario) -> None:
    """Put the pre-training ticket (0 iterations: Θ0 only, real) and a synthetic
    ``rounds.max``-round trace of every method into the cache under their real keys."""
    import torch

    device = torch.device(keys.device_type(scenario))
    data = pipeline.prepare_data(scenario)
    ticket = pipeline.pretrain_stage(scenario, data, 0, device)
    samples = int(data.client_samples[0])
    for label, method in scenario.methods.items():
        key = keys.train_key(scenario, method, None, device)
        entry = store.CacheEntry("train", key)
        trace = synthetic_trace(scenario.rounds.max, len(data.client_samples), samples,
                                scenario.fl.batch_size, scenario.fl.local_epochs)
        names = artifacts.checkpoint_files(scenario.rounds.max)
        trace.save(entry.file(names[0]))
        with store.atomic_write(entry.file(names[1])) as handle:
            np.savez(handle, **ticket.theta0_encoder.to_numpy())
        entry.seal(names, {"rounds": scenario.rounds.max, "label": label, "synthetic": True})


def bench_sweep(progress: bool = False, *, cells: int = 100, rounds: int = 3000,
                workers: int | None = None) -> dict[str, Any]:
    """Time a ``cells``-cell link-speed study of the paper setup (100 clients x
    400 samples, ``rounds`` rounds, one method) whose training trace is cached:
    plan + every cell's simulation, join and metrics + sweep.csv and report,
    through ``study.run`` (local executor).

    Returns: ``sweep_<cells>_cells_s`` (wall seconds), ``sweep_cells_per_s``,
    the plan, cells and outputs seconds, workers, the per-cell mean of the
    stage seconds, and ``sweep_trace: "synthetic stand-in"``.

    Raises:
        RuntimeError: a task of the study failed.
    """
    quiet = logging.getLogger("fedsim")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # no line per task in the benchmark's output
    try:
        with tempfile.TemporaryDirectory(prefix="fedsim-bench-sweep-") as tmp, \
                _environ(FEDSIM_CACHE=str(Path(tmp) / "cache")):
            directory = Path(tmp)
            spec = study.load(_bench_files(directory, cells, rounds))
            setup = time.perf_counter()
            _inject_trace(spec.cells[0].scenario)
            setup_s = time.perf_counter() - setup
            start = time.perf_counter()
            result = study.run(spec, out_dir=directory / "out", workers=workers, progress=progress)
            total_s = time.perf_counter() - start
    finally:
        quiet.setLevel(level)
    if result.failed:
        raise RuntimeError(f"bench sweep: {len(result.failed)} tasks failed: "
                           f"{result.failed[0].error}")
    outcomes = list(result.outcomes.values())
    stage_means: dict[str, float] = {}
    for outcome in outcomes:
        for stage, seconds in outcome.stage_seconds.items():
            stage_means[stage] = stage_means.get(stage, 0.0) + seconds / len(outcomes)
    return {
        f"sweep_{cells}_cells_s": round(total_s, 2),
        "sweep_cells_per_s": round(cells / total_s, 3),
        "sweep_plan_s": round(result.seconds["plan_s"], 2),
        "sweep_tasks_s": round(result.seconds["tasks_s"], 2),
        "sweep_outputs_s": round(result.seconds["outputs_s"], 2),
        "sweep_workers": result.plan.workers,
        "sweep_cell_mean_s": round(float(np.mean([o.seconds for o in outcomes])), 2),
        **{f"sweep_cell_{k}_s": round(v, 3) for k, v in stage_means.items()},
        "sweep_client_rounds_per_cell": rounds * 100,
        "sweep_setup_s": round(setup_s, 2),
        "sweep_trace": "synthetic stand-in (accuracy curve; cost-neutral)",
    }
