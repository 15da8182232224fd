"""Performance figures of the learning core, as plain dicts (``fedsim bench --json``).

Every figure is measured in this process on the paper's setup with random data
of the right shapes (100 clients x 400 samples, 5 local epochs, batch 60; a DAE
epoch over 20,000 samples, batch 100). The machine may be shared, so each
timed run is paired with a measurement of the FLOP rate this process reaches on
one large float32 matmul, taken right before it, and the figures are medians.

* ``round_s``: one batched FedAvg round; ``floor_round_s``: its dense FLOPs
  (`federated.round_flops`, about 225 GFLOP) / the matmul FLOP rate;
  ``round_over_floor``: the median of the paired ratios (``..._best``: the
  smallest, the least disturbed pair on a shared machine).
* ``sequential_round_s``: the same round with the reference per-client loop.
* ``pretrain_epoch_s`` / ``floor_pretrain_epoch_s``: one DAE epoch likewise.
* ``peak_rss_mb``: peak resident memory of the process so far.
* ``cuda_round_s``: one batched round on the GPU (None without CUDA).

`bench_round` (FedAvg) and `bench_pretrain` (DAE) are the two parts that
``fedsim bench`` calls; the ``bench_*`` functions below them measure one thing
each and take sizes, so tests can run them small.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedsim.learn.federated import ClientData, _BatchedMLP, round_flops, round_schedule
from fedsim.learn.masks import Mask
from fedsim.learn.model import (
    DAE_SIZES,
    LENET_SIZES,
    init_dae,
    init_params,
    layer_shapes,
    resolve_device,
)
from fedsim.learn.pretrain import dae_epoch_flops, train_dae
from fedsim.learn.reference import LeNet, local_train, reference_masks
from fedsim.learn.spec import FLConfig, PretrainConfig
from fedsim.pipeline.threads import cpu_name  # the one reader of the CPU's model name

PAPER_CLIENTS = 100
PAPER_SAMPLES_PER_CLIENT = 400
PAPER_UNLABELED = 20_000


def matmul_flops_per_s(size: int = 4096, repeats: int = 2, device: str | torch.device = "cpu") -> float:
    """FLOP/s of one ``size x size`` float32 matmul (best of ``repeats`` after a warm-up)."""
    dev = torch.device(device)
    a = torch.randn(size, size, device=dev)
    b = torch.randn(size, size, device=dev)
    out = torch.empty(size, size, device=dev)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(dev)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_clients(
    num_clients: int = PAPER_CLIENTS, samples_per_client: int = PAPER_SAMPLES_PER_CLIENT, seed: int = 0
) -> ClientData:
    """Random inputs in [0, 1] and labels in 0..9, ``samples_per_client`` rows each."""
    gen = np.random.default_rng(seed)
    n = num_clients * samples_per_client
    inputs = torch.from_numpy(gen.random((n, LENET_SIZES[0]), dtype=np.float32))
    labels = torch.from_numpy(gen.integers(0, LENET_SIZES[-1], n))
    parts = tuple(np.arange(k * samples_per_client, (k + 1) * samples_per_client) for k in range(num_clients))
    return ClientData(inputs, labels, parts)


def _paired(
    run: Callable[[], None], flops: float, repeats: int, device: torch.device, matmul_size: int
) -> dict[str, float]:
    """Time ``run`` ``repeats`` times, each right after a matmul FLOP-rate probe."""
    run()  # warm-up: allocations, thread pools, kernel selection
    times, floors = [], []
    for _ in range(repeats):
        rate = matmul_flops_per_s(matmul_size, device=device)
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
        floors.append(flops / rate)
    ratios = [t / f for t, f in zip(times, floors, strict=True)]
    return {
        "time_s": statistics.median(times),
        "floor_s": statistics.median(floors),
        "ratio": statistics.median(ratios),
        "best_ratio": min(ratios),
        "matmul_gflops": flops / statistics.median(floors) / 1e9,
    }


def bench_batched_round(
    num_clients: int = PAPER_CLIENTS,
    samples_per_client: int = PAPER_SAMPLES_PER_CLIENT,
    cfg: FLConfig | None = None,
    *,
    repeats: int = 3,
    device: str = "cpu",
    sparse: bool = False,
    matmul_size: int = 4096,
    block_clients: int | None = None,
) -> dict[str, Any]:
    """Median time of one batched FedAvg round (local training of every client,
    without aggregation and evaluation) against its FLOP floor.

    Args:
        sparse: use a random mask of density 0.107 (the masking passes are
            extra work) instead of a dense model.
        matmul_size: side of the square matmul that measures the FLOP rate.
        block_clients: clients per block (default: the trainer's default).
    """
    cfg = cfg or FLConfig()
    dev = resolve_device(device)
    clients = random_clients(num_clients, samples_per_client)
    params = init_params(LENET_SIZES, "glorot_uniform", torch.Generator().manual_seed(0)).to(dev)
    mask = Mask.dense(layer_shapes(LENET_SIZES))
    if sparse:
        gen = torch.Generator().manual_seed(1)
        mask = Mask(tuple(torch.rand(s, generator=gen) < 0.107 for s in mask.shapes))
    model = _BatchedMLP(clients, mask, cfg, dev, block_clients)
    ids = np.arange(num_clients)
    schedule = round_schedule(clients, ids, cfg, seed=0, round_num=1)
    flops = round_flops(schedule.samples, cfg.local_epochs)
    out = _paired(lambda: model.train_round(params, schedule), flops, repeats, dev, matmul_size)
    key = "cuda_round" if dev.type == "cuda" else ("sparse_round" if sparse else "round")
    return {
        f"{key}_s": out["time_s"],
        f"floor_{key}_s": out["floor_s"],
        f"{key}_over_floor": out["ratio"],
        f"{key}_over_floor_best": out["best_ratio"],
        "round_gflop": flops / 1e9,
        f"{key}_matmul_gflops": out["matmul_gflops"],
        "round_clients": num_clients,
        f"{key}_block_clients": min(model.block_clients, num_clients),
        "round_samples_per_client": samples_per_client,
    }


def bench_sequential_round(
    num_clients: int = PAPER_CLIENTS,
    samples_per_client: int = PAPER_SAMPLES_PER_CLIENT,
    cfg: FLConfig | None = None,
    *,
    repeats: int = 1,
    matmul_size: int = 4096,
) -> dict[str, Any]:
    """Time of the same round with the reference trainer: one ``nn.Module``,
    one client after another, autograd and ``torch.optim.SGD`` (CPU)."""
    cfg = cfg or FLConfig()
    clients = random_clients(num_clients, samples_per_client)
    params = init_params(LENET_SIZES, "glorot_uniform", torch.Generator().manual_seed(0))
    masks = reference_masks(Mask.dense(layer_shapes(LENET_SIZES)))
    model = LeNet()

    def run() -> None:
        for k in range(num_clients):
            model.load(params)
            local_train(model, clients, k, masks, cfg, seed=0, round_num=1)

    flops = round_flops(clients.sizes, cfg.local_epochs)
    out = _paired(run, flops, repeats, torch.device("cpu"), matmul_size)
    return {"sequential_round_s": out["time_s"], "sequential_over_floor": out["ratio"],
            "sequential_matmul_gflops": out["matmul_gflops"]}


def bench_pretrain_epoch(
    num_samples: int = PAPER_UNLABELED,
    cfg: PretrainConfig | None = None,
    *,
    repeats: int = 3,
    device: str = "cpu",
    matmul_size: int = 4096,
) -> dict[str, Any]:
    """Median time of one dense DAE epoch (noise, shuffle, 200 Adam steps) against
    its FLOP floor (`pretrain.dae_epoch_flops`, about 54.5 GFLOP)."""
    cfg = cfg or PretrainConfig()
    dev = resolve_device(device)
    gen = np.random.default_rng(0)
    data = torch.from_numpy(gen.random((num_samples, DAE_SIZES[0]), dtype=np.float32)).to(dev)
    theta0 = init_dae("glorot_uniform", 0)
    mask = Mask.dense_like(theta0)
    flops = dae_epoch_flops(num_samples)

    def run() -> None:
        train_dae(theta0, mask, data, cfg, seed=0, iteration=1, epochs=1)

    out = _paired(run, flops, repeats, dev, matmul_size)
    return {
        "pretrain_epoch_s": out["time_s"],
        "floor_pretrain_epoch_s": out["floor_s"],
        "pretrain_epoch_over_floor": out["ratio"],
        "pretrain_epoch_over_floor_best": out["best_ratio"],
        "pretrain_epoch_gflop": flops / 1e9,
    }


def bench_cuda_round(repeats: int = 5) -> dict[str, Any]:
    """`bench_batched_round` on the GPU; ``{"cuda_round_s": None, ...}`` without CUDA."""
    if not torch.cuda.is_available():
        return {"cuda_round_s": None, "cuda_skipped": "no CUDA device"}
    out = bench_batched_round(repeats=repeats, device="cuda")
    out["cuda_device"] = torch.cuda.get_device_name()
    return out


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"bench: {text}", file=sys.stderr, flush=True)


def bench_round(*, progress: bool = False, quick: bool = False, repeats: int = 3) -> dict[str, Any]:
    """The FedAvg figures: batched round vs its FLOP floor, the same with a sparse
    mask, the reference per-client loop, the GPU round when there is one.

    Args:
        progress: say on stderr what is being measured.
        quick: one repeat, and the sequential loop on 10 clients scaled to 100.
        repeats: timed repeats of each batched measurement (median reported).
    """
    repeats = 1 if quick else repeats
    _say(progress, "batched FedAvg round (100 clients x 400 samples, 5 epochs)")
    out: dict[str, Any] = {"device_cpu": cpu_name(), "threads": torch.get_num_threads()}
    out.update(bench_batched_round(repeats=repeats))
    _say(progress, "batched round with a P_R = 0.107 mask")
    sparse = bench_batched_round(repeats=repeats, sparse=True)
    out.update({k: v for k, v in sparse.items() if k.startswith(("sparse_", "floor_sparse"))})
    _say(progress, "reference per-client loop")
    if quick:
        seq = bench_sequential_round(num_clients=10)
        out["sequential_round_s"] = seq["sequential_round_s"] * PAPER_CLIENTS / 10
        out["sequential_over_floor"] = seq["sequential_over_floor"]
    else:
        out.update(bench_sequential_round())
    out["sequential_over_batched"] = out["sequential_round_s"] / out["round_s"]
    _say(progress, "CUDA round")
    out.update(bench_cuda_round())
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def bench_pretrain(*, progress: bool = False, quick: bool = False, repeats: int = 3) -> dict[str, Any]:
    """The pre-training figures: one DAE epoch (20,000 samples) vs its FLOP floor."""
    _say(progress, "DAE epoch (20,000 samples, batch 100)")
    out = bench_pretrain_epoch(repeats=1 if quick else repeats)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def run_all(*, quick: bool = False, progress: bool = False) -> dict[str, Any]:
    """`bench_round` and `bench_pretrain` together, as one dict."""
    out = bench_round(quick=quick, progress=progress)
    out.update(bench_pretrain(quick=quick, progress=progress))
    out["torch"] = torch.__version__
    return out


__all__ = [
    "bench_batched_round",
    "bench_cuda_round",
    "bench_pretrain",
    "bench_pretrain_epoch",
    "bench_round",
    "bench_sequential_round",
    "matmul_flops_per_s",
    "peak_rss_mb",
    "random_clients",
    "run_all",
]


