"""``fedsim bench``: the performance figures, measured in this process.

Each part returns a flat dict of figures; ratios are measured against a
reference in the same run (the machine is shared and noisy), so targets are
stated as ratios wherever possible. The parts:

* ``learn``: one batched FedAvg round of the paper setup vs its FLOP floor and
  vs the plain per-client reference loop (fedsim.learn.bench);
* ``pretrain``: one DAE epoch vs its FLOP floor (fedsim.learn.bench);
* ``system``: discrete-event client-rounds per second with a contended server
  link, and scaling with clients per round (fedsim.system.bench);
* ``sweep``: a 100-cell link-speed study with cached traces (fedsim.study).
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fedsim.errors import InputError


def _learn(progress: bool) -> dict[str, Any]:
    from fedsim.learn import bench

    return bench.bench_round(progress=progress)


def _pretrain(progress: bool) -> dict[str, Any]:
    from fedsim.learn import bench

    return bench.bench_pretrain(progress=progress)


def _system(progress: bool) -> dict[str, Any]:
    from fedsim.system import bench

    return bench.bench_des(progress=progress)


def _sweep(progress: bool) -> dict[str, Any]:
    from fedsim import study

    return study.bench_sweep(progress=progress)


PARTS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "learn": _learn,
    "pretrain": _pretrain,
    "system": _system,
    "sweep": _sweep,
}


def run(only: Sequence[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the benchmark parts (all by default) and return one flat dict."""
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
