"""Performance rows of the open workload (issue 14): any model, compression.

Each row times a candidate and its reference in one run, interleaved (A, B, A,
B, ...) and keeps the best of ``repeats`` for each, so that a machine shared
with other jobs disturbs both alike; the claims are the ratios. Data are random
inputs of MNIST's shape (`fedsim.bench.learn.random_clients`); one round is
every client's local training (5 epochs, batch 60), without aggregation or
evaluation unless a row says otherwise. Every row states its sizes and its
target and whether it is met.

* `bench_generic_mlp`: LeNet-300-100 as a plain ``nn.Module`` through the
  generic trainer (`fedsim.learn.generic.GenericTrainer`) against the
  hand-written kernel (`fedsim.learn.batched._BatchedMLP`; target: at most 2x)
  and against the per-client reference loop (`fedsim.learn.reference`;
  target: at least 2x faster).
* `bench_lenet5`: LeNet-5 batched (the generic trainer's default engine)
  against its per-client loop (target: at least 2x faster), and against its
  FLOP floor: ``LENET5_FLOPS_PER_SAMPLE`` (`fedsim.learn.counts`, 2,263,920
  per sample) x samples x epochs over the FLOP rate of one large matmul
  measured in the same run (reported, no target).
* `bench_compression`: one full round (training and aggregation,
  `fedsim.learn.aggregation.train_participants_hooked`) with qsgd 8 bit and
  with top-k 0.1 and error feedback, against plain FedAvg
  (`fedsim.learn.federated.train_participants`); target: at most 20 % more.
  Also reported: the hooked round with no transform (``hooked_overhead``,
  the cost of the hook path itself).

The per-client loops run on ``loop_clients`` clients and are scaled linearly
to the round's clients (a loop's time is a sum over clients of the same size);
the rows say so (``*_loop_clients``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedsim.bench.learn import matmul_flops_per_s, random_clients
from fedsim.learn.aggregation import MethodState, train_participants_hooked
from fedsim.learn.batched import _BatchedMLP
from fedsim.learn.counts import LENET5_FLOPS_PER_SAMPLE
from fedsim.learn.federated import train_participants
from fedsim.learn.generic import GenericTrainer
from fedsim.learn.masks import Mask
from fedsim.learn.reference import LeNet, local_sgd
from fedsim.learn.schedule import ClientData, round_schedule
from fedsim.learn.spec import CompressionConfig, FLConfig, ModelConfig
from fedsim.learn.zoo import ModelSpec, resolve, spec_from_module

__all__ = ["bench_compression", "bench_generic_mlp", "bench_lenet5", "bench_workload", "interleaved"]

#: Targets of issue 14 ("Performance"): name -> (limit, "max" or "min").
TARGETS: dict[str, tuple[float, str]] = {
    "generic_over_kernel": (2.0, "max"),
    "mlp_loop_over_generic": (2.0, "min"),
    "lenet5_loop_over_batched": (2.0, "min"),
    "qsgd_overhead": (0.20, "max"),
    "topk_overhead": (0.20, "max"),
}


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Best ``(wall-clock s, process CPU s)`` of each of ``runs`` over ``repeats``
    interleaved repeats, after one warm-up call of each (allocations, kernel
    selection). CPU time (all threads of the process) is the steadier figure
    on a machine shared with other jobs; the ratios (verdicts) use it."""
    for run in runs.values():
        run()
    best = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            run()
            wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
            best[name] = (min(best[name][0], wall_s), min(best[name][1], cpu_s))
    return best


def _split(best: dict[str, tuple[float, float]], **scale: float) -> tuple[dict[str, float], dict[str, float]]:
    """``best`` as two dicts (wall, CPU), entries named in ``scale`` multiplied
    (a loop timed on some clients, scaled to all)."""
    wall = {name: w * scale.get(name, 1.0) for name, (w, _) in best.items()}
    cpu = {name: c * scale.get(name, 1.0) for name, (_, c) in best.items()}
    return wall, cpu


def _verdict(out: dict[str, Any], name: str) -> None:
    """Add ``<name>_target`` and ``<name>_met`` for the ratio ``out[name]``."""
    limit, kind = TARGETS[name]
    out[f"{name}_target"] = f"<= {limit:g}" if kind == "max" else f">= {limit:g}"
    out[f"{name}_met"] = bool(out[name] <= limit if kind == "max" else out[name] >= limit)


def _loop(spec: ModelSpec | None, clients: ClientData, params_named: dict[str, torch.Tensor],
          cfg: FLConfig, num_clients: int) -> Callable[[], None]:
    """The reference per-client loop over the first ``num_clients`` clients
    (autograd, ``torch.optim.SGD``; `fedsim.learn.reference.local_sgd`)."""
    net = LeNet() if spec is None else copy.deepcopy(spec.module)
    by_name = dict(net.named_parameters())
    shape = None if spec is None else spec.input_shape

    def run() -> None:
        for k in range(num_clients):
            with torch.no_grad():
                for name, t in params_named.items():
                    by_name[name].copy_(t)
            local_sgd(net, [], clients, k, cfg, seed=0, round_num=1, input_shape=shape)

    return run


def bench_generic_mlp(num_clients: int = 100, samples_per_client: int = 400, cfg: FLConfig | None = None, *,
                      repeats: int = 3, loop_clients: int = 10) -> dict[str, Any]:
    """Generic trainer vs the hand-written kernel vs the per-client loop on
    LeNet-300-100 (the paper round by default), CPU. See the module docstring."""
    cfg = cfg or FLConfig()
    dev = torch.device("cpu")
    clients = random_clients(num_clients, samples_per_client)
    spec = spec_from_module(LeNet(), (784,), name="lenet-300-100 as a module")  # not `reference`
    theta = spec.initial_params()
    mask = Mask.dense_like(theta)
    schedule = round_schedule(clients, np.arange(num_clients), cfg, seed=0, round_num=1)
    generic = GenericTrainer(spec, clients, mask, cfg, dev)
    kernel = _BatchedMLP(clients, mask, cfg, dev)
    loop_clients = min(loop_clients, num_clients)
    best = interleaved({
        "kernel": lambda: kernel.train_round(theta, schedule),
        "generic": lambda: generic.train_round(theta, schedule),
        "loop": _loop(None, clients, spec.layout.to_named(theta), cfg, loop_clients),
    }, repeats)
    wall, cpu = _split(best, loop=num_clients / loop_clients)
    out: dict[str, Any] = {
        "mlp_clients": num_clients, "mlp_samples_per_client": samples_per_client,
        "mlp_epochs": cfg.local_epochs, "mlp_loop_clients": loop_clients, "mlp_repeats": repeats,
        "generic_engine": generic.engine, "generic_block_clients": min(generic.block_clients, num_clients),
        "kernel_round_s": wall["kernel"], "generic_round_s": wall["generic"], "mlp_loop_round_s": wall["loop"],
        "kernel_round_cpu_s": cpu["kernel"], "generic_round_cpu_s": cpu["generic"],
        "mlp_loop_round_cpu_s": cpu["loop"],
        "generic_over_kernel": cpu["generic"] / cpu["kernel"],
        "mlp_loop_over_generic": cpu["loop"] / cpu["generic"],
        "generic_over_kernel_wall": wall["generic"] / wall["kernel"],
        "mlp_loop_over_generic_wall": wall["loop"] / wall["generic"],
    }
    _verdict(out, "generic_over_kernel")
    _verdict(out, "mlp_loop_over_generic")
    return out


def bench_lenet5(num_clients: int = 100, samples_per_client: int = 400, cfg: FLConfig | None = None, *,
                 repeats: int = 2, loop_clients: int = 10, matmul_size: int = 4096) -> dict[str, Any]:
    """LeNet-5 batched vs its per-client loop and vs its FLOP floor, CPU
    (100 clients x 400 samples x 5 epochs by default). See the module docstring."""
    cfg = cfg or FLConfig()
    dev = torch.device("cpu")
    clients = random_clients(num_clients, samples_per_client)
    spec = resolve(ModelConfig(arch="lenet-5"), seed=0)
    theta = spec.initial_params()
    schedule = round_schedule(clients, np.arange(num_clients), cfg, seed=0, round_num=1)
    batched = GenericTrainer(spec, clients, Mask.dense_like(theta), cfg, dev)
    loop_clients = min(loop_clients, num_clients)
    best = interleaved({
        "batched": lambda: batched.train_round(theta, schedule),
        "loop": _loop(spec, clients, spec.layout.to_named(theta), cfg, loop_clients),
    }, repeats)
    rate = matmul_flops_per_s(matmul_size)
    flops = float(LENET5_FLOPS_PER_SAMPLE) * float(schedule.samples.sum()) * cfg.local_epochs
    wall, cpu = _split(best, loop=num_clients / loop_clients)
    out: dict[str, Any] = {
        "lenet5_clients": num_clients, "lenet5_samples_per_client": samples_per_client,
        "lenet5_epochs": cfg.local_epochs, "lenet5_loop_clients": loop_clients, "lenet5_repeats": repeats,
        "lenet5_engine": batched.engine, "lenet5_block_clients": min(batched.block_clients, num_clients),
        "lenet5_round_s": wall["batched"], "lenet5_loop_round_s": wall["loop"],
        "lenet5_round_cpu_s": cpu["batched"], "lenet5_loop_round_cpu_s": cpu["loop"],
        "lenet5_loop_over_batched": cpu["loop"] / cpu["batched"],
        "lenet5_loop_over_batched_wall": wall["loop"] / wall["batched"],
        "lenet5_round_gflop": flops / 1e9, "lenet5_matmul_gflops": rate / 1e9,
        "lenet5_floor_s": flops / rate, "lenet5_over_floor": wall["batched"] * rate / flops,
    }
    _verdict(out, "lenet5_loop_over_batched")
    return out


def bench_compression(num_clients: int = 100, samples_per_client: int = 400, cfg: FLConfig | None = None, *,
                      repeats: int = 3) -> dict[str, Any]:
    """One full LeNet-300-100 round (kernel training + aggregation) with qsgd
    8 bit and with top-k 0.1 (error feedback, every client's memory already
    held, as from round 2 on) vs plain FedAvg, CPU."""
    cfg = cfg or FLConfig()
    dev = torch.device("cpu")
    clients = random_clients(num_clients, samples_per_client)
    theta = spec_from_module(LeNet(), (784,)).initial_params()
    mask = Mask.dense_like(theta)
    ids = np.arange(num_clients)
    kernel = _BatchedMLP(clients, mask, cfg, dev)
    stack = num_clients  # one chunk, as the paper round

    def plain() -> None:
        train_participants(kernel, theta, clients, ids, cfg, seed=0, round_num=1, stack_clients=stack)

    def hooked(method: FLConfig, state: MethodState) -> Callable[[], None]:
        return lambda: train_participants_hooked(kernel, theta, clients, ids, method, mask, state, seed=0,
                                                 round_num=2, stack_clients=stack)

    qsgd = cfg.model_copy(update={"compression": CompressionConfig(kind="qsgd", bits=8)})
    topk = cfg.model_copy(update={"compression": CompressionConfig(kind="topk", fraction=0.1)})
    n = theta.num_params
    gen = torch.Generator().manual_seed(0)
    memory = MethodState({int(k): 1e-3 * torch.randn(n, generator=gen) for k in ids})
    best = interleaved({"plain": plain, "hooked": hooked(cfg, MethodState()), "qsgd": hooked(qsgd, MethodState()),
                        "topk": hooked(topk, memory)}, repeats)
    wall, cpu = _split(best)
    out: dict[str, Any] = {
        "compression_clients": num_clients, "compression_samples_per_client": samples_per_client,
        "compression_repeats": repeats,
        "fedavg_round_s": wall["plain"], "qsgd_round_s": wall["qsgd"], "topk_round_s": wall["topk"],
        "fedavg_round_cpu_s": cpu["plain"], "qsgd_round_cpu_s": cpu["qsgd"], "topk_round_cpu_s": cpu["topk"],
        "hooked_round_s": wall["hooked"], "hooked_round_cpu_s": cpu["hooked"],
        "hooked_overhead": cpu["hooked"] / cpu["plain"] - 1.0,
        "qsgd_overhead": cpu["qsgd"] / cpu["plain"] - 1.0,
        "topk_overhead": cpu["topk"] / cpu["plain"] - 1.0,
        "qsgd_overhead_wall": wall["qsgd"] / wall["plain"] - 1.0,
        "topk_overhead_wall": wall["topk"] / wall["plain"] - 1.0,
    }
    _verdict(out, "qsgd_overhead")
    _verdict(out, "topk_overhead")
    return out


def bench_workload(*, progress: bool = False, quick: bool = False) -> dict[str, Any]:
    """The three rows at their default sizes (``quick``: 20 clients, one repeat)."""
    from fedsim.bench.learn import _say

    size = {"num_clients": 20, "repeats": 1} if quick else {}
    _say(progress, "generic trainer vs kernel vs per-client loop, LeNet-300-100")
    out = bench_generic_mlp(**size)
    _say(progress, "LeNet-5 batched vs per-client loop and FLOP floor")
    out.update(bench_lenet5(**size))
    _say(progress, "qsgd 8 bit and top-k 0.1 vs plain FedAvg round")
    out.update(bench_compression(**size))
    return out
