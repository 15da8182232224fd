"""``fedsim bench``: the performance figures, measured in this process.

Each part returns a flat dict of figures; ratios are measured against a
reference in the same run (the machine is shared and noisy), so targets are
stated as ratios wherever possible. The parts:

* ``learn``: one batched FedAvg round of the paper setup vs its FLOP floor and
  vs the plain per-client reference loop (`fedsim.bench.learn`); FedBuff
  replay vs synchronous rounds in client updates per second
  (`fedsim.bench.async_training`);
* ``pretrain``: one DAE epoch vs its FLOP floor (`fedsim.bench.learn`);
* ``system``: discrete-event client-rounds per second with a contended server
  link, and scaling with clients per round (`fedsim.bench.system`); client
  updates per second of the asynchronous schedule (`fedsim.bench.asynchronous`);
* ``sweep``: a 100-cell link-speed study with cached traces (`fedsim.bench.sweep`).
* ``workload``: the generic trainer vs the LeNet-300-100 kernel and the
  per-client loop, LeNet-5 batched vs its loop and its FLOP floor, and the
  overhead of qsgd / top-k on a round (`fedsim.bench.workload`; issue 14).
* ``schedule``: a small scenario's rounds per second on the sequential and the
  parallel schedule, interleaved (`fedsim.bench.schedule`).

The benchmarks live in one package above the code they measure (the sweep part
runs a whole study), so learn/, system/ and study/ hold no benchmark code and
nothing they import pulls a benchmark in.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from fedsim.errors import InputError


def _learn(progress: bool) -> dict[str, Any]:
    from fedsim.bench import async_training, learn

    return {**learn.bench_round(progress=progress), **async_training.bench_async_training(progress=progress)}


def _pretrain(progress: bool) -> dict[str, Any]:
    from fedsim.bench import learn

    return learn.bench_pretrain(progress=progress)


def _system(progress: bool) -> dict[str, Any]:
    from fedsim.bench import asynchronous, system

    return {**system.bench_des(progress=progress), **asynchronous.bench_async(progress=progress)}


def _workload(progress: bool) -> dict[str, Any]:
    from fedsim.bench import workload

    return workload.bench_workload(progress=progress)


def _sweep(progress: bool) -> dict[str, Any]:
    from fedsim.bench import sweep

    return sweep.bench_sweep(progress=progress)


def _schedule(progress: bool) -> dict[str, Any]:
    from fedsim.bench import schedule

    return schedule.bench_schedule(progress=progress)


PARTS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "learn": _learn,
    "pretrain": _pretrain,
    "system": _system,
    "sweep": _sweep,
    "workload": _workload,
    "schedule": _schedule,
}


def run(only: Sequence[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the benchmark parts (all by default) and return one flat dict.

    Raises:
        InputError: an unknown part name in ``only``.
    """
    import torch  # here, not at import: `fedsim.bench.system` needs no torch

    names = list(only) if only else list(PARTS)
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        raise InputError(f"--only: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    figures: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for name in names:
        start = time.perf_counter()
        figures.update(PARTS[name](progress))
        figures[f"{name}_bench_s"] = round(time.perf_counter() - start, 2)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures
