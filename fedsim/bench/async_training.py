"""Training throughput of FedBuff replay vs synchronous rounds (``fedsim bench`` part "learn").

Issue 16's target: asynchronous training (`fedsim.learn.asynchronous.train_async`)
within 1.5x of synchronous batched training (`fedsim.learn.federated.train`)
in client updates per second, on the same model. Both run the paper's setup
with random data of its shapes (`fedsim.bench.learn.random_clients`: LeNet-
300-100, 100 clients x 400 samples, 5 local epochs, batch 60) and evaluate
the global model on 10,000 test rows after every round / server step, as the
pipeline does:

* ``sync_train_updates_per_s``: synchronous FedAvg, 100 clients per round,
  timed from the end of round 1 to the end of round 1 + ``sync_rounds`` (the
  first round is a warm-up);
* ``async_train_updates_per_s``: the replay of a FedBuff plan with
  concurrency 100 and buffer 10 (`simulate_async` on the benchmark's
  heterogeneous links and devices, `fedsim.bench.system.bench_system`), timed
  between the ends of server steps ``warm`` and ``warm + window`` (steady
  state: the 100 updates started at time 0, all from version 0, are trained
  in one batch before it). Between those ends the trainer trains exactly the
  updates of its mixed-version batches (`fedsim.learn.asynchronous.
  training_batches`) that train before steps ``warm + 1 .. warm + window``,
  so that count over the elapsed time is the rate;
* ``async_over_sync_train``: sync rate / async rate (target <= 1.5).

Reference and candidate are interleaved ``repeats`` times and the best of
each is kept (the machine is shared; ratios, not absolute times, are the
figures to compare across machines).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fedsim.bench.learn import random_clients
from fedsim.bench.system import bench_system
from fedsim.learn.federated import train
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, init_params, layer_shapes
from fedsim.learn.spec import FLConfig
from fedsim.system.async_spec import AsyncConfig
from fedsim.system.asynchronous import simulate_async
from fedsim.system.payload import Payload

__all__ = ["bench_async_training", "fedbuff_plan"]

_LENET_BYTES = 266_610 * 4
_TEST_ROWS = 10_000


def fedbuff_plan(clients: int, concurrency: int, buffer_size: int, steps: int, seed: int = 0) -> list[list[Any]]:
    """A FedBuff step plan (`fedsim.learn.asynchronous.AsyncUpdate` lists) of
    ``steps`` server steps on the benchmark's heterogeneous system."""
    from fedsim.learn.asynchronous import AsyncUpdate

    schedule = simulate_async(bench_system(clients, "inf", "inf"),
                              AsyncConfig(concurrency=concurrency, buffer_size=buffer_size),
                              client_samples=np.full(clients, 400),
                              payload=Payload(down_bytes=_LENET_BYTES, up_bytes=_LENET_BYTES),
                              work_fraction=1.0, steps=steps, seed=seed)
    return [[AsyncUpdate(int(c), int(v), float(w)) for c, v, w in step] for step in schedule.step_plan()]


def _test_set() -> tuple[torch.Tensor, torch.Tensor]:
    gen = np.random.default_rng(1)
    return (torch.from_numpy(gen.random((_TEST_ROWS, LENET_SIZES[0]), dtype=np.float32)),
            torch.from_numpy(gen.integers(0, LENET_SIZES[-1], _TEST_ROWS)))


def bench_async_training(*, clients: int = 100, concurrency: int = 100, buffer_size: int = 10,
                         sync_rounds: int = 2, warm: int = 12, window: int = 20, repeats: int = 2,
                         local_epochs: int = 5, progress: bool = False) -> dict[str, Any]:
    """The figures of the module docstring. Smaller arguments make a quick
    check (tests); the defaults train about 3 synchronous rounds' worth of
    updates per repeat and method.

    Raises:
        ValueError: a window that leaves no update to time.
    """
    from fedsim.learn.asynchronous import train_async, training_batches

    cfg = FLConfig(local_epochs=local_epochs)
    data = random_clients(clients, 400)
    test = _test_set()
    init = init_params(LENET_SIZES, "glorot_uniform", torch.Generator().manual_seed(0))
    mask = Mask.dense(layer_shapes(LENET_SIZES))
    plan = fedbuff_plan(clients, concurrency, buffer_size, warm + window + concurrency // buffer_size)
    timed = sum(len(b.members) for b in training_batches(plan) if warm < b.step <= warm + window)
    if timed == 0:
        raise ValueError(f"no batch of the plan trains before steps {warm + 1}..{warm + window}")

    def sync_rate() -> float:
        marks: dict[int, float] = {}
        train(init, mask, data, test, cfg, seed=0, rounds=1 + sync_rounds,
              on_round=lambda r, _p, _rec: marks.__setitem__(r, time.perf_counter()))
        return clients * sync_rounds / (marks[1 + sync_rounds] - marks[1])

    def async_rate() -> float:
        marks: dict[int, float] = {}
        train_async(init, mask, data, test, cfg, plan, seed=0,
                    on_step=lambda t, _s, _rec: marks.__setitem__(t, time.perf_counter()),
                    stop=lambda rec: rec.round_num >= warm + window)
        return timed / (marks[warm + window] - marks[warm])

    sync_best, async_best = 0.0, 0.0
    for i in range(repeats):
        sync_best = max(sync_best, sync_rate())
        async_best = max(async_best, async_rate())
        if progress:
            print(f"learn bench: training throughput, repeat {i + 1}/{repeats}: sync {sync_best:.1f}, "
                  f"FedBuff {async_best:.1f} updates/s (best so far)")
    return {
        "sync_train_updates_per_s": round(sync_best, 2),
        "async_train_updates_per_s": round(async_best, 2),
        "async_over_sync_train": round(sync_best / async_best, 3),
        "async_train_concurrency": concurrency,
        "async_train_buffer_size": buffer_size,
        "async_train_timed_updates": timed,
    }
